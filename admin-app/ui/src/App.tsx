import { useCallback, useEffect, useState } from "react";
import {
  ipc,
  onSession,
  onStream,
  subscribe,
  toIpcError,
  type AppStatus,
  type IpcError,
  type Session,
  type StreamEvent,
} from "./ipc";
import { Setup } from "./components/Setup";
import { Unlock } from "./components/Unlock";
import { Login } from "./components/Login";
import { Shell } from "./components/Shell";
import { ErrorBox, Spinner } from "./components/common";

export function App() {
  const [status, setStatus] = useState<AppStatus | null>(null);
  const [loadError, setLoadError] = useState<IpcError | null>(null);
  const [stream, setStream] = useState<StreamEvent | null>(null);
  const [notice, setNotice] = useState<string | null>(null);
  const [lastEmail, setLastEmail] = useState<string>("");
  const [reconfigure, setReconfigure] = useState(false);

  const load = useCallback(async () => {
    setLoadError(null);
    try {
      setStatus(await ipc.status());
    } catch (e) {
      setLoadError(toIpcError(e));
    }
  }, []);

  useEffect(() => {
    void load();
  }, [load]);

  useEffect(() => subscribe(onStream((e) => setStream(e))), []);
  useEffect(
    () =>
      subscribe(
        onSession((e) => {
          if (e.state === "ended") {
            setNotice("The server ended your session. Sign in again.");
            setStatus((s) => (s ? { ...s, session: null } : s));
          }
        }),
      ),
    [],
  );

  const signedOut = useCallback((why: string | null) => {
    setNotice(why);
    setStatus((s) => {
      if (s?.session) setLastEmail(s.session.user.email);
      return s ? { ...s, session: null } : s;
    });
  }, []);

  const signOut = useCallback(
    async (why: string | null) => {
      try {
        await ipc.logout();
      } catch {
        /* signed out locally either way */
      }
      signedOut(why);
    },
    [signedOut],
  );

  if (!status) {
    return (
      <div className="gate">
        <div className="gate-card">
          <h1 className="gate-title">Keymesh Admin</h1>
          {loadError ? (
            <>
              <ErrorBox error={loadError} testId="status-error" />
              <div className="form-actions">
                <button type="button" className="btn btn-primary" onClick={() => void load()}>
                  Retry
                </button>
              </div>
            </>
          ) : (
            <p className="note">
              <Spinner /> Loading…
            </p>
          )}
        </div>
      </div>
    );
  }

  if (!status.configured || reconfigure) {
    return (
      <Setup
        status={status}
        onCancel={status.configured ? () => setReconfigure(false) : undefined}
        onDone={(s) => {
          setReconfigure(false);
          setStatus(s);
        }}
      />
    );
  }

  if (status.store.kind === "file" && status.store.locked) {
    return <Unlock status={status} onDone={setStatus} />;
  }

  if (!status.session) {
    return (
      <Login
        initialEmail={lastEmail}
        notice={notice}
        onSignedIn={(session: Session) => {
          setNotice(null);
          setStatus((s) => (s ? { ...s, session } : s));
          // Refresh the rest (share key etc.) in the background.
          void ipc.status().then(
            (s) => setStatus((cur) => (s.session ? s : cur ? { ...s, session } : s)),
            () => undefined,
          );
        }}
      />
    );
  }

  return (
    <Shell
      status={status}
      session={status.session}
      stream={stream}
      onStatus={setStatus}
      onSignOut={() => void signOut(null)}
      onSignInAgain={() => void signOut("Sign in again to continue; the action needs a recent sign-in.")}
      onReconfigure={() => setReconfigure(true)}
    />
  );
}
