import { useState, type FormEvent } from "react";
import { ipc, toIpcError, type AppStatus, type IpcError } from "../ipc";
import { ErrorBox, Field } from "./common";

const LOOPBACK = /^(localhost|127(?:\.\d{1,3}){3}|\[::1\])$/i;

/** Client-side check mirroring the Rust side: https, or http only to a loopback address. */
export function checkServiceUrl(v: string): string | null {
  let u: URL;
  try {
    u = new URL(v);
  } catch {
    return "Not a valid URL (e.g. https://keymesh.example.org).";
  }
  if (u.protocol === "https:") return null;
  if (u.protocol === "http:") {
    return LOOPBACK.test(u.hostname) ? null : "Use https (http is allowed only for localhost).";
  }
  return "Use an https:// URL.";
}

export function Setup(props: { status: AppStatus | null; onDone: (s: AppStatus) => void; onCancel?: () => void }) {
  const { status } = props;
  const [server, setServer] = useState(status?.server_url ?? "");
  const [vault, setVault] = useState(status?.vault_url ?? "");
  const [relay, setRelay] = useState(status?.relay_url ?? "");
  const [errors, setErrors] = useState<Record<string, string>>({});
  const [error, setError] = useState<IpcError | null>(null);
  const [busy, setBusy] = useState(false);

  async function submit(e: FormEvent) {
    e.preventDefault();
    const errs: Record<string, string> = {};
    const s = server.trim();
    const v = vault.trim();
    const r = relay.trim();
    if (!s) errs.server = "The management server URL is required.";
    else {
      const m = checkServiceUrl(s);
      if (m) errs.server = m;
    }
    if (v) {
      const m = checkServiceUrl(v);
      if (m) errs.vault = m;
    }
    if (r) {
      const m = checkServiceUrl(r);
      if (m) errs.relay = m;
    }
    setErrors(errs);
    setError(null);
    if (Object.keys(errs).length) return;
    setBusy(true);
    try {
      const args: { server_url: string; vault_url?: string; relay_url?: string } = { server_url: s };
      if (v) args.vault_url = v;
      if (r) args.relay_url = r;
      props.onDone(await ipc.configure(args));
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
        <h2 className="gate-subtitle">Connect to your management server</h2>
        <Field label="Management server URL" htmlFor="server-url">
          <input
            id="server-url"
            data-testid="server-url"
            type="url"
            required
            autoFocus
            placeholder="https://keymesh.example.org"
            value={server}
            aria-invalid={!!errors.server}
            onChange={(e) => setServer(e.target.value)}
          />
          {errors.server ? <div className="field-error">{errors.server}</div> : null}
        </Field>
        <Field label="Vault URL (optional)" hint="For the health screen only." htmlFor="vault-url">
          <input
            id="vault-url"
            data-testid="vault-url"
            type="url"
            placeholder="https://vault.example.org"
            value={vault}
            aria-invalid={!!errors.vault}
            onChange={(e) => setVault(e.target.value)}
          />
          {errors.vault ? <div className="field-error">{errors.vault}</div> : null}
        </Field>
        <Field label="Relay URL (optional)" hint="For the health screen only." htmlFor="relay-url">
          <input
            id="relay-url"
            data-testid="relay-url"
            type="url"
            placeholder="https://relay.example.org"
            value={relay}
            aria-invalid={!!errors.relay}
            onChange={(e) => setRelay(e.target.value)}
          />
          {errors.relay ? <div className="field-error">{errors.relay}</div> : null}
        </Field>
        <p className="note">
          TLS certificates are always verified against the system trust store; there is no option to
          skip verification. Plain http is accepted only for a server on this machine (localhost).
        </p>
        <ErrorBox error={error} testId="setup-error" />
        <div className="form-actions">
          {props.onCancel ? (
            <button type="button" className="btn" onClick={props.onCancel}>
              Cancel
            </button>
          ) : null}
          <button type="submit" className="btn btn-primary" data-testid="save-settings" disabled={busy}>
            {busy ? "Saving…" : "Save"}
          </button>
        </div>
      </form>
    </div>
  );
}
