import { useState, type FormEvent } from "react";
import { ipc, toIpcError, type IpcError, type Session } from "../ipc";
import { countdown } from "../format";
import { ErrorBox, Field, usePolling, useNow } from "./common";

export const LOGIN_POLL_MS = 2000;

/** "abcd efgh", "ABCD-EFGH", "abcdefgh" -> "ABCD-EFGH"; null when it is not 8 characters. */
export function normalizeCode(raw: string): string | null {
  const s = raw.toUpperCase().replace(/[\s-]/g, "");
  if (!/^[A-Z0-9]{8}$/.test(s)) return null;
  return `${s.slice(0, 4)}-${s.slice(4)}`;
}

export function Login(props: { initialEmail?: string; notice?: string | null; onSignedIn: (s: Session) => void }) {
  const [email, setEmail] = useState(props.initialEmail ?? "");
  const [started, setStarted] = useState<{ match: string; expiresAt: number } | null>(null);
  const [code, setCode] = useState("");
  const [problem, setProblem] = useState<string | null>(null);
  const [error, setError] = useState<IpcError | null>(null);
  const [busy, setBusy] = useState(false);
  const [polling, setPolling] = useState(false);
  const now = useNow(1000);
  const expired = !!started && now >= started.expiresAt;

  usePolling(
    async () => {
      try {
        const r = await ipc.loginPoll();
        if (r.status === "complete") {
          setPolling(false);
          props.onSignedIn(r.session);
        }
      } catch (e) {
        const err = toIpcError(e);
        setError(err);
        // A network hiccup is retried; anything else (expired, refused) stops the wait.
        if (err.code !== "unreachable") setPolling(false);
      }
    },
    LOGIN_POLL_MS,
    polling && !expired,
    false,
  );

  async function start(e: FormEvent) {
    e.preventDefault();
    const v = email.trim();
    if (!/^[^\s@]+@[^\s@]+$/.test(v)) {
      setProblem("Enter your email address.");
      return;
    }
    setProblem(null);
    setError(null);
    setBusy(true);
    try {
      const r = await ipc.loginStart(v);
      setStarted({ match: r.match_code, expiresAt: Date.now() + r.expires_in_secs * 1000 });
      setCode("");
      setPolling(true);
    } catch (err) {
      setError(toIpcError(err));
    } finally {
      setBusy(false);
    }
  }

  async function submitCode(e: FormEvent) {
    e.preventDefault();
    const c = normalizeCode(code);
    if (!c) {
      setProblem("The code from the mail has 8 characters, like ABCD-EFGH.");
      return;
    }
    setProblem(null);
    setError(null);
    setBusy(true);
    try {
      const s = await ipc.loginCode(c);
      setPolling(false);
      props.onSignedIn(s);
    } catch (err) {
      setError(toIpcError(err));
    } finally {
      setBusy(false);
    }
  }

  function restart() {
    setStarted(null);
    setPolling(false);
    setError(null);
    setProblem(null);
    setCode("");
  }

  return (
    <div className="gate">
      <div className="gate-card">
        <h1 className="gate-title">Keymesh Admin</h1>
        <h2 className="gate-subtitle">Sign in</h2>
        {props.notice ? <div className="alert alert-info">{props.notice}</div> : null}
        {!started ? (
          <form onSubmit={start} noValidate>
            <Field label="Email" htmlFor="login-email">
              <input
                id="login-email"
                data-testid="login-email"
                type="email"
                autoComplete="username"
                autoFocus
                value={email}
                onChange={(e) => setEmail(e.target.value)}
              />
            </Field>
            <p className="note">A sign-in mail with a link and a code will be sent to this address.</p>
            {problem ? <div className="field-error" role="alert">{problem}</div> : null}
            <ErrorBox error={error} testId="login-error" />
            <div className="form-actions">
              <button type="submit" className="btn btn-primary" data-testid="login-start" disabled={busy}>
                {busy ? "Sending…" : "Send sign-in mail"}
              </button>
            </div>
          </form>
        ) : (
          <form onSubmit={submitCode} noValidate>
            <p className="note">
              A mail was sent to <strong>{email.trim()}</strong>. Its confirm page shows the same code
              as below; <strong>approve only if they match</strong>.
            </p>
            <div className="match-code" aria-label="Match code">
              <span className="match-code-label">Match code</span>
              <span className="match-code-value" data-testid="match-code">
                {started.match}
              </span>
              <span className="match-code-expiry">
                {expired ? "expired" : `expires in ${countdown(started.expiresAt, now)}`}
              </span>
            </div>
            <Field label="Code from the mail" htmlFor="login-code-input" hint="8 characters, XXXX-XXXX.">
              <input
                id="login-code-input"
                data-testid="login-code-input"
                className="mono code-input"
                autoComplete="one-time-code"
                spellCheck={false}
                maxLength={9}
                placeholder="XXXX-XXXX"
                value={code}
                onChange={(e) => setCode(e.target.value.toUpperCase())}
              />
            </Field>
            <p className="note muted" data-testid="login-waiting">
              {expired
                ? "This sign-in attempt has expired."
                : polling
                  ? "…or confirm the link in your browser; this window continues by itself."
                  : "Waiting stopped."}
            </p>
            {problem ? <div className="field-error" role="alert">{problem}</div> : null}
            <ErrorBox error={error} testId="login-error" />
            <div className="form-actions">
              <button type="button" className="btn" onClick={restart}>
                Start over
              </button>
              <button
                type="submit"
                className="btn btn-primary"
                data-testid="login-code-submit"
                disabled={busy || expired}
              >
                {busy ? "Checking…" : "Sign in"}
              </button>
            </div>
          </form>
        )}
      </div>
    </div>
  );
}
