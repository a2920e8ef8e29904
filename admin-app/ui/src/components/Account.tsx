import { useState } from "react";
import { ipc, toIpcError, type AppStatus, type IpcError, type Session } from "../ipc";
import { countdown, formatTime } from "../format";
import { ErrorBox, useNow } from "./common";

export function Account(props: {
  status: AppStatus;
  session: Session;
  onStatus: (s: AppStatus) => void;
  onSignInAgain: () => void;
  onReconfigure: () => void;
}) {
  const { session, status } = props;
  const now = useNow(1000);
  const [error, setError] = useState<IpcError | null>(null);
  const [busy, setBusy] = useState(false);
  const reauth = session.reauth_until_ms;
  const reauthOk = reauth !== null && reauth > now;

  async function createKey() {
    setBusy(true);
    setError(null);
    try {
      props.onStatus(await ipc.shareKeyCreate());
    } catch (e) {
      setError(toIpcError(e));
    } finally {
      setBusy(false);
    }
  }

  return (
    <div className="stack narrow">
      <section className="card section">
        <h2 className="section-title">Signed in</h2>
        <dl className="kv">
          <dt>Email</dt>
          <dd data-testid="account-email">{session.user.email}</dd>
          <dt>User id</dt>
          <dd className="mono">{session.user.id}</dd>
          <dt>Role</dt>
          <dd>
            <span className="role-badge">{session.user.role}</span>
          </dd>
          {session.emergency ? (
            <>
              <dt>Emergency grant</dt>
              <dd>
                <span className="badge badge-pending">{session.emergency.role}</span>{" "}
                <span className="mono small">{session.emergency.grant}</span>
              </dd>
            </>
          ) : null}
          <dt>Recent sign-in</dt>
          <dd data-testid="reauth-window">
            {reauth === null
              ? "not available — sensitive actions need a new sign-in"
              : reauthOk
                ? `valid until ${formatTime(reauth)} (${countdown(reauth, now)} left)`
                : `expired at ${formatTime(reauth)} — sign in again before sensitive actions`}
            {!reauthOk ? (
              <>
                {" "}
                <button type="button" className="btn btn-small" onClick={props.onSignInAgain}>
                  Sign in again
                </button>
              </>
            ) : null}
          </dd>
          <dt>Allowed actions</dt>
          <dd>
            <ul className="chips" data-testid="account-actions">
              {session.actions.map((a) => (
                <li key={a} className="chip mono">
                  {a}
                </li>
              ))}
            </ul>
          </dd>
        </dl>
      </section>

      <section className="card section">
        <h2 className="section-title">Unlock share key</h2>
        <p className="note">
          Vault unlock ceremonies send each holder an encrypted share. The private half of your share key is generated
          on this device and never leaves it; only the public half is registered with the server.
        </p>
        <dl className="kv">
          <dt>Share key</dt>
          <dd data-testid="share-key-state">
            {status.share_key.present ? (
              <span className="badge badge-executed">present</span>
            ) : (
              <span className="badge badge-expired">not created</span>
            )}
          </dd>
          {status.share_key.public_key ? (
            <>
              <dt>Public key (X25519)</dt>
              <dd className="mono small break" data-testid="share-public-key">
                {status.share_key.public_key}
              </dd>
            </>
          ) : null}
        </dl>
        {!status.share_key.present ? (
          <div className="form-actions">
            <button type="button" className="btn btn-primary" data-testid="share-key-create" disabled={busy} onClick={() => void createKey()}>
              {busy ? "Creating…" : "Create share key"}
            </button>
          </div>
        ) : null}
        <ErrorBox error={error} testId="share-key-error" onSignInAgain={props.onSignInAgain} />
      </section>

      <section className="card section">
        <h2 className="section-title">Connection</h2>
        <dl className="kv">
          <dt>Management</dt>
          <dd className="mono small">{status.server_url ?? "—"}</dd>
          <dt>Vault</dt>
          <dd className="mono small">{status.vault_url ?? "not set"}</dd>
          <dt>Relay</dt>
          <dd className="mono small">{status.relay_url ?? "not set"}</dd>
          <dt>Local store</dt>
          <dd>{status.store.kind === "keyring" ? "system keyring" : "encrypted file"}</dd>
        </dl>
        <div className="form-actions">
          <button type="button" className="btn" data-testid="change-settings" onClick={props.onReconfigure}>
            Change server settings
          </button>
        </div>
      </section>
    </div>
  );
}
