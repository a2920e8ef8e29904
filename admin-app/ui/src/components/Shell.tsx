import { useState } from "react";
import type { AppStatus, Session, StreamEvent } from "../ipc";
import { useApprovals } from "../useApprovals";
import { Approvals } from "./Approvals";
import { Incident } from "./Incident";
import { Audit } from "./Audit";
import { Health } from "./Health";
import { Account } from "./Account";

export type Screen = "approvals" | "incident" | "audit" | "health" | "account";

const NAV: { id: Screen; label: string; testId: string }[] = [
  { id: "approvals", label: "Approvals", testId: "nav-approvals" },
  { id: "incident", label: "Incident response", testId: "nav-incident" },
  { id: "audit", label: "Audit log", testId: "nav-audit" },
  { id: "health", label: "Health", testId: "nav-health" },
  { id: "account", label: "Account", testId: "nav-account" },
];

const STREAM_TEXT: Record<string, string> = {
  connected: "Live",
  reconnecting: "Reconnecting",
  stopped: "Stopped",
};

export function StreamState(props: { stream: StreamEvent | null }) {
  const state = props.stream?.state ?? "unknown";
  const text = STREAM_TEXT[state] ?? "Connecting";
  return (
    <span
      className={`stream stream-${state}`}
      data-testid="stream-state"
      data-state={state}
      title={props.stream?.detail ?? "Live updates from the management server"}
    >
      <span className="stream-dot" aria-hidden="true" />
      <span className="stream-label">Updates:</span> {text}
      {props.stream?.detail && state !== "connected" ? (
        <span className="stream-detail"> — {props.stream.detail}</span>
      ) : null}
    </span>
  );
}

export function Shell(props: {
  status: AppStatus;
  session: Session;
  stream: StreamEvent | null;
  onStatus: (s: AppStatus) => void;
  onSignOut: () => void;
  onSignInAgain: () => void;
  onReconfigure: () => void;
}) {
  const [screen, setScreen] = useState<Screen>("approvals");
  const approvals = useApprovals();
  const { session } = props;
  const toDecide = (approvals.list ?? []).filter((a) => a.status === "pending" && a.can_decide).length;

  return (
    <div className="shell">
      <aside className="sidebar">
        <div className="brand">
          <span className="brand-mark" aria-hidden="true" />
          <span className="brand-name">Keymesh Admin</span>
        </div>
        <nav className="nav" aria-label="Main">
          {NAV.map((n) => (
            <button
              key={n.id}
              type="button"
              className={`nav-item${screen === n.id ? " nav-item-active" : ""}`}
              aria-current={screen === n.id ? "page" : undefined}
              data-testid={n.testId}
              onClick={() => setScreen(n.id)}
            >
              <span>{n.label}</span>
              {n.id === "approvals" && toDecide > 0 ? (
                <span className="nav-count" title="Requests waiting for your decision">
                  {toDecide}
                </span>
              ) : null}
            </button>
          ))}
        </nav>
        <div className="sidebar-foot" title={props.status.server_url ?? ""}>
          <div className="sidebar-foot-label">Server</div>
          <div className="sidebar-foot-value mono">{props.status.server_url ?? "—"}</div>
        </div>
      </aside>
      <div className="main">
        <header className="topbar">
          <h1 className="topbar-title">{NAV.find((n) => n.id === screen)?.label}</h1>
          <div className="topbar-right">
            <StreamState stream={props.stream} />
            <span className="user" data-testid="signed-in-user">
              <span className="user-email">{session.user.email}</span>
              <span className="role-badge">{session.user.role}</span>
              {session.emergency ? (
                <span className="badge badge-pending" title={`Emergency grant ${session.emergency.grant}`}>
                  emergency: {session.emergency.role}
                </span>
              ) : null}
            </span>
            <button type="button" className="btn btn-small" data-testid="sign-out" onClick={props.onSignOut}>
              Sign out
            </button>
          </div>
        </header>
        <main className="content">
          {screen === "approvals" ? (
            <Approvals state={approvals} session={session} onSignInAgain={props.onSignInAgain} />
          ) : screen === "incident" ? (
            <Incident onSignInAgain={props.onSignInAgain} />
          ) : screen === "audit" ? (
            <Audit onSignInAgain={props.onSignInAgain} onRequested={approvals.upsert} />
          ) : screen === "health" ? (
            <Health />
          ) : (
            <Account
              status={props.status}
              session={session}
              onStatus={props.onStatus}
              onSignInAgain={props.onSignInAgain}
              onReconfigure={props.onReconfigure}
            />
          )}
        </main>
      </div>
    </div>
  );
}
