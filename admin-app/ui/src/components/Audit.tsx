import { Fragment, useRef, useState, type FormEvent } from "react";
import {
  ipc,
  toIpcError,
  type Approval,
  type AuditFilters,
  type AuditRecord,
  type IpcError,
  type VerifyReport,
} from "../ipc";
import { formatTime, parseLocalDateTime } from "../format";
import { checkReason } from "./ApprovalCard";
import { cleanFilters, OUTCOMES } from "./NewRequest";
import { ErrorBox, Field, usePolling } from "./common";

export const AUDIT_PAGE = 100;
export const TAIL_MS = 2000;

interface Form {
  actor: string;
  action: string;
  target: string;
  outcome: string;
  since: string;
  until: string;
}

const EMPTY: Form = { actor: "", action: "", target: "", outcome: "", since: "", until: "" };

export function toFilters(f: Form): AuditFilters {
  return cleanFilters({
    actor: f.actor,
    action: f.action,
    target: f.target,
    outcome: f.outcome,
    since_ms: parseLocalDateTime(f.since),
    until_ms: parseLocalDateTime(f.until),
  });
}

function appendUnique(list: AuditRecord[], more: AuditRecord[]): AuditRecord[] {
  if (more.length === 0) return list;
  const seen = new Set(list.map((r) => r.seq));
  const add = more.filter((r) => !seen.has(r.seq));
  return add.length ? [...list, ...add] : list;
}

function outcomeClass(o: string): string {
  if (o === "success") return "badge-executed";
  if (o === "failure") return "badge-denied";
  if (o === "denied") return "badge-pending";
  return "badge-neutral";
}

export function Audit(props: { onSignInAgain: () => void; onRequested: (a: Approval) => void }) {
  const [form, setForm] = useState<Form>(EMPTY);
  const [active, setActive] = useState<AuditFilters | null>(null);
  const [records, setRecords] = useState<AuditRecord[] | null>(null);
  const [nextAfter, setNextAfter] = useState<number | null>(null);
  const [error, setError] = useState<IpcError | null>(null);
  const [busy, setBusy] = useState(false);
  const [tail, setTail] = useState(false);
  const [open, setOpen] = useState<Set<number>>(new Set());
  const [verify, setVerify] = useState<VerifyReport | null>(null);
  const [verifyError, setVerifyError] = useState<IpcError | null>(null);
  const [verifying, setVerifying] = useState(false);
  const [exportReason, setExportReason] = useState("");
  const [exportProblem, setExportProblem] = useState<string | null>(null);
  const [exportError, setExportError] = useState<IpcError | null>(null);
  const [exportDone, setExportDone] = useState<Approval | null>(null);
  const lastSeq = useRef<number | null>(null);

  function setRecs(next: AuditRecord[]) {
    lastSeq.current = next.length ? next[next.length - 1].seq : null;
    setRecords(next);
  }

  async function search(e?: FormEvent) {
    e?.preventDefault();
    const filters = toFilters(form);
    setBusy(true);
    setError(null);
    try {
      const page = await ipc.auditSearch(filters, undefined, AUDIT_PAGE);
      setActive(filters);
      setOpen(new Set());
      setRecs(page.records);
      setNextAfter(page.next_after_seq);
    } catch (err) {
      setError(toIpcError(err));
    } finally {
      setBusy(false);
    }
  }

  async function loadMore() {
    if (nextAfter === null || !active) return;
    setBusy(true);
    setError(null);
    try {
      const page = await ipc.auditSearch(active, nextAfter, AUDIT_PAGE);
      setRecs(appendUnique(records ?? [], page.records));
      setNextAfter(page.next_after_seq);
    } catch (err) {
      setError(toIpcError(err));
    } finally {
      setBusy(false);
    }
  }

  usePolling(
    async () => {
      const filters = active ?? toFilters(form);
      if (!active) setActive(filters);
      try {
        const after = lastSeq.current;
        const page = await ipc.auditSearch(filters, after ?? undefined, AUDIT_PAGE);
        setRecords((cur) => {
          const next = appendUnique(cur ?? [], page.records);
          lastSeq.current = next.length ? next[next.length - 1].seq : null;
          return next;
        });
        setError(null);
      } catch (err) {
        setError(toIpcError(err));
      }
    },
    TAIL_MS,
    tail,
    true,
  );

  async function runVerify() {
    setVerifying(true);
    setVerifyError(null);
    setVerify(null);
    try {
      setVerify(await ipc.auditVerify());
    } catch (err) {
      setVerifyError(toIpcError(err));
    } finally {
      setVerifying(false);
    }
  }

  async function requestExport() {
    setExportDone(null);
    setExportError(null);
    const p = checkReason(exportReason);
    if (p) {
      setExportProblem(p);
      return;
    }
    setExportProblem(null);
    try {
      const a = await ipc.approvalCreate("audit.export", { filters: toFilters(form) }, exportReason.trim());
      setExportDone(a);
      setExportReason("");
      props.onRequested(a);
    } catch (err) {
      setExportError(toIpcError(err));
    }
  }

  function toggle(seq: number) {
    setOpen((s) => {
      const n = new Set(s);
      if (n.has(seq)) n.delete(seq);
      else n.add(seq);
      return n;
    });
  }

  const set = (k: keyof Form) => (e: { target: { value: string } }) => setForm({ ...form, [k]: e.target.value });

  return (
    <div className="stack">
      <form className="card filters" onSubmit={search}>
        <div className="filters-grid">
          <Field label="Actor" htmlFor="filter-actor">
            <input id="filter-actor" data-testid="filter-actor" placeholder="user:ID" value={form.actor} onChange={set("actor")} />
          </Field>
          <Field label="Action" htmlFor="filter-action">
            <input id="filter-action" data-testid="filter-action" placeholder="approval.decide" value={form.action} onChange={set("action")} />
          </Field>
          <Field label="Target" htmlFor="filter-target">
            <input id="filter-target" data-testid="filter-target" placeholder="node:ID" value={form.target} onChange={set("target")} />
          </Field>
          <Field label="Outcome" htmlFor="filter-outcome">
            <select id="filter-outcome" data-testid="filter-outcome" value={form.outcome} onChange={set("outcome")}>
              <option value="">any</option>
              {OUTCOMES.map((o) => (
                <option key={o} value={o}>
                  {o}
                </option>
              ))}
            </select>
          </Field>
          <Field label="Since" htmlFor="filter-since">
            <input id="filter-since" data-testid="filter-since" type="datetime-local" value={form.since} onChange={set("since")} />
          </Field>
          <Field label="Until" htmlFor="filter-until">
            <input id="filter-until" data-testid="filter-until" type="datetime-local" value={form.until} onChange={set("until")} />
          </Field>
        </div>
        <div className="toolbar">
          <button type="submit" className="btn btn-primary" data-testid="audit-search" disabled={busy}>
            Search
          </button>
          <label className="toggle">
            <input type="checkbox" data-testid="live-tail" checked={tail} onChange={(e) => setTail(e.target.checked)} />
            <span>Live tail</span>
            {tail ? <span className="muted small">(every 2 s)</span> : null}
          </label>
          <span className="spacer" />
          <button type="button" className="btn" data-testid="verify-chain" disabled={verifying} onClick={() => void runVerify()}>
            {verifying ? "Verifying…" : "Verify chain"}
          </button>
        </div>
        {verify ? (
          verify.first_broken === null ? (
            <div className="alert alert-success" data-testid="verify-result" data-intact="true">
              Chain intact: {verify.checked} records checked
            </div>
          ) : (
            <div className="alert alert-error" data-testid="verify-result" data-intact="false">
              Broken at record {verify.first_broken}: {verify.reason ?? "unknown reason"} ({verify.checked} records checked)
            </div>
          )
        ) : null}
        <ErrorBox error={verifyError} testId="verify-error" onSignInAgain={props.onSignInAgain} />
      </form>

      <ErrorBox error={error} testId="audit-error" onSignInAgain={props.onSignInAgain} />

      <section className="card section">
        <table className="table table-audit" data-testid="audit-table">
          <thead>
            <tr>
              <th className="num">Seq</th>
              <th>Time</th>
              <th>Actor</th>
              <th>Action</th>
              <th>Target</th>
              <th>Outcome</th>
              <th>Details</th>
            </tr>
          </thead>
          <tbody>
            {(records ?? []).map((r) => (
              <Fragment key={r.seq}>
                <tr data-testid="audit-row" data-seq={r.seq}>
                  <td className="num mono">{r.seq}</td>
                  <td className="mono nowrap">{formatTime(r.at_ms)}</td>
                  <td className="mono">{r.actor}</td>
                  <td className="mono">{r.action}</td>
                  <td className="mono">{r.target}</td>
                  <td>
                    <span className={`badge ${outcomeClass(r.outcome)}`}>{r.outcome}</span>
                  </td>
                  <td>
                    <button
                      type="button"
                      className="btn btn-link"
                      aria-expanded={open.has(r.seq)}
                      data-testid="audit-details-toggle"
                      onClick={() => toggle(r.seq)}
                    >
                      {open.has(r.seq) ? "Hide" : "Show"}
                    </button>
                  </td>
                </tr>
                {open.has(r.seq) ? (
                  <tr className="row-extra">
                    <td colSpan={7}>
                      <pre className="pre" data-testid="audit-details">
                        {JSON.stringify(r.details, null, 2)}
                      </pre>
                      <div className="mono small muted">hash {r.hash}</div>
                      <div className="mono small muted">prev {r.prev_hash}</div>
                    </td>
                  </tr>
                ) : null}
              </Fragment>
            ))}
          </tbody>
        </table>
        {records === null ? <p className="empty">Set filters and press Search (oldest matching records first).</p> : null}
        {records !== null && records.length === 0 ? <p className="empty">No matching records.</p> : null}
        {nextAfter !== null ? (
          <div className="toolbar">
            <button type="button" className="btn" data-testid="load-more" disabled={busy} onClick={() => void loadMore()}>
              Load more
            </button>
          </div>
        ) : null}
      </section>

      <section className="card section">
        <h2 className="section-title">Export</h2>
        <p className="note">
          Writing audit records to a file needs an approved <code>audit.export</code> request. Request one for the
          filters above; once other admins approve it, use “Export to file” on its card in Approvals.
        </p>
        <div className="toolbar">
          <input
            className="grow"
            data-testid="export-reason"
            aria-label="Reason for the export"
            placeholder="Reason (required)"
            value={exportReason}
            onChange={(e) => setExportReason(e.target.value)}
          />
          <button type="button" className="btn" data-testid="request-export" onClick={() => void requestExport()}>
            Request export of these filters
          </button>
        </div>
        {exportProblem ? (
          <div className="field-error" role="alert">
            {exportProblem}
          </div>
        ) : null}
        <ErrorBox error={exportError} testId="export-error" onSignInAgain={props.onSignInAgain} />
        {exportDone ? (
          <div className="alert alert-success" data-testid="export-request-result">
            Export request created; it waits for approval on the Approvals screen.
          </div>
        ) : null}
      </section>
    </div>
  );
}
