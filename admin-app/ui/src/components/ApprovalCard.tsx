import { useState } from "react";
import {
  ipc,
  toIpcError,
  type Approval,
  type AuditExportResult,
  type IpcError,
  type Session,
  type ShareSubmitResult,
} from "../ipc";
import { countdown, formatParam, formatTime, operationLabel, paramLabel } from "../format";
import { ErrorBox } from "./common";

export const REASON_MAX = 500;

/** A reason must have 1 to 500 characters (after trimming). Returns a problem or null. */
export function checkReason(r: string): string | null {
  const t = r.trim();
  if (!t) return "A reason is required.";
  if (t.length > REASON_MAX) return `The reason is too long (${t.length} of at most ${REASON_MAX} characters).`;
  return null;
}

export function StatusBadge(props: { status: string }) {
  return (
    <span className={`badge badge-${props.status}`} data-testid="status-badge">
      {props.status}
    </span>
  );
}

function Segments(props: { value: number; max: number; kind: "approve" | "deny" }) {
  const max = Math.max(0, Math.min(props.max, 12));
  const cells = [];
  for (let i = 0; i < max; i++) {
    cells.push(<span key={i} className={`seg${i < props.value ? ` seg-on seg-${props.kind}` : ""}`} />);
  }
  return (
    <span className="segs" aria-hidden="true">
      {cells}
    </span>
  );
}

function executeSummary(a: Approval, result: unknown): string {
  const r = (result && typeof result === "object" ? result : {}) as Record<string, unknown>;
  const ceremony = (typeof r.ceremony === "string" && r.ceremony) || a.ceremony;
  if (a.operation === "vault.unlock" && ceremony) {
    return `Unlock ceremony ${ceremony} opened. Share holders can now submit their unlock shares.`;
  }
  return "Executed.";
}

function votedBy(a: Approval, session: Session): "approve" | "deny" | null {
  const d = a.decisions.find(
    (x) =>
      (x.reviewer_email && x.reviewer_email === session.user.email) ||
      x.reviewer === session.user.id ||
      x.reviewer === `user:${session.user.id}`,
  );
  return d ? d.decision : null;
}

export function ApprovalCard(props: {
  approval: Approval;
  now: number;
  session: Session;
  onUpdate: (a: Approval) => void;
  onSignInAgain: () => void;
}) {
  const { approval: a, now, session } = props;
  const [confirming, setConfirming] = useState<"approve" | "deny" | null>(null);
  const [reason, setReason] = useState("");
  const [problem, setProblem] = useState<string | null>(null);
  const [error, setError] = useState<IpcError | null>(null);
  const [busy, setBusy] = useState(false);
  const [executed, setExecuted] = useState<{ text: string; result: unknown } | null>(null);
  const [share, setShare] = useState<ShareSubmitResult | null>(null);
  const [exported, setExported] = useState<AuditExportResult | null>(null);

  const live = a.status === "pending" || a.status === "approved";
  const remaining = countdown(a.expires_at_ms, now);
  const requester = a.requester_email ?? a.requester;
  const voted = votedBy(a, session);

  async function run<T>(fn: () => Promise<T>, ok: (v: T) => void) {
    setBusy(true);
    setError(null);
    try {
      ok(await fn());
    } catch (e) {
      setError(toIpcError(e));
    } finally {
      setBusy(false);
    }
  }

  function openConfirm(d: "approve" | "deny") {
    setConfirming(d);
    setProblem(null);
    setError(null);
  }

  async function decide() {
    if (!confirming) return;
    const p = checkReason(reason);
    if (p) {
      setProblem(p);
      return;
    }
    setProblem(null);
    const decision = confirming;
    await run(
      () => ipc.approvalDecide(a.id, decision, reason.trim()),
      (updated) => {
        setConfirming(null);
        setReason("");
        props.onUpdate(updated);
      },
    );
  }

  const params = Object.entries(a.params ?? {});

  return (
    <article className={`card approval approval-${a.status}`} data-testid={`approval-${a.id}`} data-status={a.status}>
      <header className="approval-head">
        <div className="approval-title">
          <span className="approval-op">{operationLabel(a.operation)}</span>
          <code className="approval-opcode">{a.operation}</code>
        </div>
        <div className="approval-meta">
          {live ? (
            <span className={`countdown${remaining === "expired" ? " countdown-expired" : ""}`}>
              <span className="muted">{remaining === "expired" ? "" : "expires in "}</span>
              <span data-testid="countdown" className="mono">
                {remaining}
              </span>
            </span>
          ) : null}
          <StatusBadge status={a.status} />
        </div>
      </header>

      <dl className="kv">
        <dt>Requested by</dt>
        <dd>
          <span data-testid="requester">{requester}</span>
          {a.own ? <span className="tag">you</span> : null}
          {a.requester_email ? <span className="muted mono small"> {a.requester}</span> : null}
        </dd>
        <dt>Created</dt>
        <dd className="mono">{formatTime(a.created_at_ms)}</dd>
        {params.map(([k, v]) => (
          <FragmentRow key={k} k={paramLabel(k)} v={formatParam(k, v)} />
        ))}
        <dt>Reason</dt>
        <dd className="reason">{a.reason}</dd>
        <dt className="muted">Request id</dt>
        <dd className="mono small muted">{a.id}</dd>
      </dl>

      <div className="progress" data-testid="progress">
        <span className="progress-item">
          <Segments value={a.approvals} max={a.approvals_needed} kind="approve" />
          <span>
            Approvals <strong>{a.approvals}</strong> of {a.approvals_needed}
          </span>
        </span>
        <span className="progress-item">
          <Segments value={a.denials} max={a.denials_needed} kind="deny" />
          <span>
            Denials <strong>{a.denials}</strong> of {a.denials_needed}
          </span>
        </span>
      </div>

      {a.decisions.length > 0 ? (
        <ul className="decisions" data-testid="decisions">
          {a.decisions.map((d, i) => (
            <li key={`${d.reviewer}-${i}`} className="decision">
              <span className={`badge badge-${d.decision === "approve" ? "approved" : "denied"}`}>
                {d.decision === "approve" ? "approved" : "denied"}
              </span>
              <span className="decision-who">{d.reviewer_email ?? d.reviewer}</span>
              <span className="decision-time mono muted">{formatTime(d.decided_at_ms)}</span>
              <span className="decision-reason">“{d.reason}”</span>
            </li>
          ))}
        </ul>
      ) : null}

      <div className="approval-actions">
        {a.own && a.status === "pending" ? (
          <span className="own-note" data-testid="own-note">
            Your request — another admin must decide.
          </span>
        ) : null}
        {!a.own && a.status === "pending" && !a.can_decide ? (
          <span className="muted">
            {voted ? `You voted to ${voted}.` : "You cannot decide this request."}
          </span>
        ) : null}
        {a.can_decide && !a.own && !confirming ? (
          <>
            <button type="button" className="btn btn-approve" data-testid="approve" disabled={busy} onClick={() => openConfirm("approve")}>
              Approve…
            </button>
            <button type="button" className="btn btn-deny" data-testid="deny" disabled={busy} onClick={() => openConfirm("deny")}>
              Deny…
            </button>
          </>
        ) : null}
        {a.can_execute ? (
          <button
            type="button"
            className="btn btn-primary"
            data-testid="execute"
            disabled={busy}
            onClick={() =>
              void run(
                () => ipc.approvalExecute(a.id),
                (r) => {
                  setExecuted({ text: executeSummary(r.approval, r.result), result: r.result });
                  props.onUpdate(r.approval);
                },
              )
            }
          >
            Execute
          </button>
        ) : null}
        {a.operation === "vault.unlock" && a.ceremony && !a.share_submitted ? (
          <button
            type="button"
            className="btn btn-primary"
            data-testid="submit-share"
            disabled={busy}
            onClick={() =>
              void run(
                () => ipc.shareSubmit(a.id),
                (r) => {
                  setShare(r);
                  if (r.accepted) props.onUpdate({ ...a, share_submitted: true });
                },
              )
            }
          >
            Submit my unlock share
          </button>
        ) : null}
        {a.operation === "vault.unlock" && a.ceremony && a.share_submitted && !share ? (
          <span className="muted">Your unlock share was submitted.</span>
        ) : null}
        {a.operation === "audit.export" && a.own && a.status === "approved" ? (
          <button
            type="button"
            className="btn btn-primary"
            data-testid="export-file"
            disabled={busy}
            onClick={() => void run(() => ipc.auditExport(a.id), setExported)}
          >
            Export to file
          </button>
        ) : null}
      </div>

      {confirming ? (
        <div className={`confirm confirm-${confirming}`} data-testid="decision-confirm">
          <label className="field-label" htmlFor={`reason-${a.id}`}>
            {confirming === "approve"
              ? `Approve “${operationLabel(a.operation)}” requested by ${requester}? Reason (required):`
              : `Deny “${operationLabel(a.operation)}” requested by ${requester}? Reason (required):`}
          </label>
          <textarea
            id={`reason-${a.id}`}
            data-testid="decision-reason"
            rows={2}
            maxLength={REASON_MAX + 50}
            autoFocus
            value={reason}
            onChange={(e) => setReason(e.target.value)}
          />
          <div className="confirm-foot">
            <span className="muted small">
              {reason.trim().length}/{REASON_MAX}
            </span>
            {problem ? (
              <span className="field-error" role="alert">
                {problem}
              </span>
            ) : null}
            <span className="spacer" />
            <button type="button" className="btn" data-testid="cancel-decision" onClick={() => setConfirming(null)}>
              Cancel
            </button>
            <button
              type="button"
              className={`btn ${confirming === "approve" ? "btn-approve" : "btn-deny"}`}
              data-testid="confirm-decision"
              disabled={busy}
              onClick={() => void decide()}
            >
              {confirming === "approve" ? "Confirm approval" : "Confirm denial"}
            </button>
          </div>
        </div>
      ) : null}

      {executed ? (
        <div className="alert alert-success" data-testid="execute-result">
          <span>{executed.text}</span>
          {executed.result !== null && executed.result !== undefined ? (
            <details className="details">
              <summary>Server answer</summary>
              <pre>{JSON.stringify(executed.result, null, 2)}</pre>
            </details>
          ) : null}
        </div>
      ) : null}
      {share ? (
        <div className={`alert ${share.accepted ? "alert-success" : "alert-error"}`} data-testid="share-result">
          Share {share.accepted ? "accepted" : "not accepted"} · threshold {share.threshold} ·{" "}
          {share.unlocked ? "vault unlocked" : "vault still locked (waiting for more shares)"}
        </div>
      ) : null}
      {exported ? (
        <div className="alert alert-success" data-testid="export-result">
          Exported {exported.records} records to <code>{exported.path}</code>
        </div>
      ) : null}
      <ErrorBox error={error} testId="card-error" onSignInAgain={props.onSignInAgain} />
    </article>
  );
}

function FragmentRow(props: { k: string; v: string }) {
  return (
    <>
      <dt>{props.k}</dt>
      <dd className="param">{props.v}</dd>
    </>
  );
}
