import { useRef, useState } from "react";
import type { Approval, Session } from "../ipc";
import type { ApprovalsState } from "../useApprovals";
import { ApprovalCard } from "./ApprovalCard";
import { NewRequest } from "./NewRequest";
import { ErrorBox, useNow } from "./common";

type Tab = "pending" | "all";

/** "Pending" keeps what still needs someone: pending decisions and approved, not yet executed requests. */
export function isOpen(a: Approval): boolean {
  return a.status === "pending" || a.status === "approved";
}

export function Approvals(props: { state: ApprovalsState; session: Session; onSignInAgain: () => void }) {
  const { state } = props;
  const [tab, setTab] = useState<Tab>("pending");
  const now = useNow(1000);
  const all = state.list ?? [];
  const open = all.filter(isOpen);
  // A request that finishes while on screen (decided here or by others) stays visible with its
  // new status until the tab is chosen again or the list is refreshed, instead of vanishing.
  const seen = useRef(new Set<string>());
  for (const a of open) seen.current.add(a.id);
  const shown = tab === "pending" ? all.filter((a) => isOpen(a) || seen.current.has(a.id)) : all;
  const choose = (t: Tab) => {
    seen.current = new Set();
    setTab(t);
  };

  return (
    <div className="split">
      <section className="split-main">
        <div className="toolbar">
          <div className="tabs" role="tablist">
            <button
              type="button"
              role="tab"
              aria-selected={tab === "pending"}
              className={`tab${tab === "pending" ? " tab-active" : ""}`}
              data-testid="tab-pending"
              title="Pending decisions and approved requests not yet executed"
              onClick={() => choose("pending")}
            >
              Pending <span className="tab-count">{open.length}</span>
            </button>
            <button
              type="button"
              role="tab"
              aria-selected={tab === "all"}
              className={`tab${tab === "all" ? " tab-active" : ""}`}
              data-testid="tab-all"
              onClick={() => choose("all")}
            >
              All <span className="tab-count">{all.length}</span>
            </button>
          </div>
          <span className="spacer" />
          <button
            type="button"
            className="btn btn-small"
            data-testid="approvals-refresh"
            disabled={state.loading}
            onClick={() => {
              seen.current = new Set();
              void state.reload();
            }}
          >
            {state.loading ? "Refreshing…" : "Refresh"}
          </button>
        </div>
        <ErrorBox error={state.error} testId="approvals-error" onSignInAgain={props.onSignInAgain} />
        <div className="approvals-list" data-testid="approvals-list">
          {state.list === null && !state.error ? <p className="empty">Loading…</p> : null}
          {state.list !== null && shown.length === 0 ? (
            <p className="empty">{tab === "pending" ? "No open requests." : "No requests."}</p>
          ) : null}
          {shown.map((a) => (
            <ApprovalCard
              key={a.id}
              approval={a}
              now={now}
              session={props.session}
              onUpdate={state.upsert}
              onSignInAgain={props.onSignInAgain}
            />
          ))}
        </div>
      </section>
      <aside className="split-side">
        <NewRequest onCreated={state.upsert} onSignInAgain={props.onSignInAgain} />
      </aside>
    </div>
  );
}
