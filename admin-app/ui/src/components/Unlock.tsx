import { useState, type FormEvent } from "react";
import { ipc, toIpcError, type AppStatus, type IpcError } from "../ipc";
import { ErrorBox, Field } from "./common";

export const MIN_PASSPHRASE = 12;

export function Unlock(props: { status: AppStatus; onDone: (s: AppStatus) => void }) {
  const creating = !props.status.store.initialized;
  const [pass, setPass] = useState("");
  const [confirm, setConfirm] = useState("");
  const [problem, setProblem] = useState<string | null>(null);
  const [error, setError] = useState<IpcError | null>(null);
  const [busy, setBusy] = useState(false);

  async function submit(e: FormEvent) {
    e.preventDefault();
    setError(null);
    if (creating) {
      if (pass.length < MIN_PASSPHRASE) {
        setProblem(`The passphrase must have at least ${MIN_PASSPHRASE} characters.`);
        return;
      }
      if (pass !== confirm) {
        setProblem("The two passphrases do not match.");
        return;
      }
    } else if (!pass) {
      setProblem("Enter the passphrase.");
      return;
    }
    setProblem(null);
    setBusy(true);
    try {
      props.onDone(await ipc.unlockStore(pass));
    } catch (err) {
      setError(toIpcError(err));
    } finally {
      setBusy(false);
    }
  }

  return (
    <div className="gate">
      <form className="gate-card" onSubmit={submit} noValidate>
        <h1 className="gate-title">Keymesh Admin</h1>
        <h2 className="gate-subtitle">{creating ? "Create the local encrypted store" : "Unlock the local store"}</h2>
        <p className="note">
          {creating
            ? "No system keyring is available, so the session and your share key are kept in an encrypted file on this machine. Choose a passphrase (at least 12 characters). It cannot be recovered."
            : "The session and your share key are kept in an encrypted file on this machine. Enter its passphrase."}
        </p>
        <Field label="Passphrase" htmlFor="store-passphrase">
          <input
            id="store-passphrase"
            data-testid="store-passphrase"
            type="password"
            autoComplete={creating ? "new-password" : "current-password"}
            autoFocus
            value={pass}
            onChange={(e) => setPass(e.target.value)}
          />
        </Field>
        {creating ? (
          <Field label="Repeat passphrase" htmlFor="store-passphrase-confirm">
            <input
              id="store-passphrase-confirm"
              data-testid="store-passphrase-confirm"
              type="password"
              autoComplete="new-password"
              value={confirm}
              onChange={(e) => setConfirm(e.target.value)}
            />
          </Field>
        ) : null}
        {problem ? (
          <div className="field-error" role="alert" data-testid="unlock-problem">
            {problem}
          </div>
        ) : null}
        <ErrorBox error={error} testId="unlock-error" />
        <div className="form-actions">
          <button type="submit" className="btn btn-primary" data-testid="unlock-store" disabled={busy}>
            {busy ? "Working…" : creating ? "Create store" : "Unlock"}
          </button>
        </div>
      </form>
    </div>
  );
}
