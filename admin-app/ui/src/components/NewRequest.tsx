import { useEffect, useState, type FormEvent } from "react";
import { ipc, toIpcError, type Approval, type AuditFilters, type Directory, type IpcError } from "../ipc";
import { operationLabel } from "../format";
import { checkReason, REASON_MAX } from "./ApprovalCard";
import { ErrorBox, Field } from "./common";

export const REQUEST_OPERATIONS = [
  "vault.unlock",
  "user.delete",
  "emergency.access",
  "group.approvals.disable",
  "audit.export",
] as const;
export type RequestOperation = (typeof REQUEST_OPERATIONS)[number];

export const ROLES = ["admin", "responder", "auditor", "member"];
export const OUTCOMES = ["success", "failure", "denied"];

/** Drop empty filter fields. */
export function cleanFilters(f: AuditFilters): AuditFilters {
  const out: AuditFilters = {};
  for (const [k, v] of Object.entries(f) as [keyof AuditFilters, unknown][]) {
    if (v === undefined || v === null || v === "") continue;
    (out as Record<string, unknown>)[k] = typeof v === "string" ? v.trim() : v;
  }
  return out;
}

export function NewRequest(props: { onCreated: (a: Approval) => void; onSignInAgain: () => void }) {
  const [operation, setOperation] = useState<RequestOperation>("vault.unlock");
  const [group, setGroup] = useState("");
  const [user, setUser] = useState("");
  const [role, setRole] = useState("");
  const [minutes, setMinutes] = useState("60");
  const [hours, setHours] = useState("1");
  const [filters, setFilters] = useState({ actor: "", action: "", target: "", outcome: "" });
  const [reason, setReason] = useState("");
  const [problem, setProblem] = useState<string | null>(null);
  const [error, setError] = useState<IpcError | null>(null);
  const [created, setCreated] = useState<Approval | null>(null);
  const [busy, setBusy] = useState(false);
  const [dir, setDir] = useState<Directory | null>(null);

  useEffect(() => {
    let live = true;
    ipc.directory().then(
      (d) => live && setDir(d),
      () => undefined, // suggestions only; the role may not read the directory
    );
    return () => {
      live = false;
    };
  }, []);

  function build(): { params: Record<string, unknown> } | string {
    switch (operation) {
      case "vault.unlock":
        return group.trim() ? { params: { group: group.trim() } } : "Choose the group whose vault to unlock.";
      case "user.delete":
        return user.trim() ? { params: { user_id: user.trim() } } : "Enter the id of the user to delete.";
      case "emergency.access": {
        if (!role) return "Choose the role to grant.";
        const m = Number(minutes);
        if (!Number.isInteger(m) || m < 1) return "The duration must be a whole number of minutes (at least 1).";
        const p: Record<string, unknown> = { role, duration_secs: m * 60 };
        if (user.trim()) p.user_id = user.trim();
        return { params: p };
      }
      case "group.approvals.disable": {
        if (!group.trim()) return "Choose the group.";
        const h = Number(hours);
        if (!Number.isInteger(h) || h < 1) return "The duration must be a whole number of hours (at least 1).";
        return { params: { group: group.trim(), duration_secs: h * 3600 } };
      }
      case "audit.export":
        return { params: { filters: cleanFilters(filters) } };
    }
    return "Unknown operation.";
  }

  async function submit(e: FormEvent) {
    e.preventDefault();
    setCreated(null);
    setError(null);
    const b = build();
    if (typeof b === "string") {
      setProblem(b);
      return;
    }
    const rp = checkReason(reason);
    if (rp) {
      setProblem(rp);
      return;
    }
    setProblem(null);
    setBusy(true);
    try {
      const a = await ipc.approvalCreate(operation, b.params, reason.trim());
      setCreated(a);
      setReason("");
      props.onCreated(a);
    } catch (err) {
      setError(toIpcError(err));
    } finally {
      setBusy(false);
    }
  }

  const needsGroup = operation === "vault.unlock" || operation === "group.approvals.disable";
  const needsUser = operation === "user.delete" || operation === "emergency.access";

  return (
    <form className="card panel" data-testid="new-request" onSubmit={submit} noValidate>
      <h2 className="panel-title">New request</h2>
      <p className="note small">Sensitive operations need approval by other admins before they can be executed.</p>
      <Field label="Operation" htmlFor="request-operation">
        <select
          id="request-operation"
          data-testid="request-operation"
          value={operation}
          onChange={(e) => {
            setOperation(e.target.value as RequestOperation);
            setProblem(null);
            setCreated(null);
          }}
        >
          {REQUEST_OPERATIONS.map((op) => (
            <option key={op} value={op}>
              {operationLabel(op)}
            </option>
          ))}
        </select>
      </Field>
      {needsGroup ? (
        <Field label="Group" htmlFor="request-group">
          <input
            id="request-group"
            data-testid="request-group"
            list="request-groups"
            autoComplete="off"
            value={group}
            onChange={(e) => setGroup(e.target.value)}
          />
          <datalist id="request-groups">
            {(dir?.groups ?? []).map((g) => (
              <option key={g.id} value={g.id} />
            ))}
          </datalist>
        </Field>
      ) : null}
      {needsUser ? (
        <Field
          label={operation === "emergency.access" ? "User id (optional, default: you)" : "User id"}
          htmlFor="request-user"
        >
          <input
            id="request-user"
            data-testid="request-user"
            list="request-users"
            autoComplete="off"
            value={user}
            onChange={(e) => setUser(e.target.value)}
          />
          <datalist id="request-users">
            {(dir?.users ?? []).map((u) => (
              <option key={u.id} value={u.id}>
                {u.email}
              </option>
            ))}
          </datalist>
        </Field>
      ) : null}
      {operation === "emergency.access" ? (
        <div className="field-row">
          <Field label="Role" htmlFor="request-role">
            <select id="request-role" data-testid="request-role" value={role} onChange={(e) => setRole(e.target.value)}>
              <option value="">Choose…</option>
              {ROLES.map((r) => (
                <option key={r} value={r}>
                  {r}
                </option>
              ))}
            </select>
          </Field>
          <Field label="Duration (minutes)" htmlFor="request-duration">
            <input
              id="request-duration"
              data-testid="request-duration"
              type="number"
              min={1}
              step={1}
              value={minutes}
              onChange={(e) => setMinutes(e.target.value)}
            />
          </Field>
        </div>
      ) : null}
      {operation === "group.approvals.disable" ? (
        <Field label="Duration (hours)" htmlFor="request-duration">
          <input
            id="request-duration"
            data-testid="request-duration"
            type="number"
            min={1}
            step={1}
            value={hours}
            onChange={(e) => setHours(e.target.value)}
          />
        </Field>
      ) : null}
      {operation === "audit.export" ? (
        <fieldset className="fieldset">
          <legend>Records to export (empty = all)</legend>
          {(["actor", "action", "target"] as const).map((k) => (
            <Field key={k} label={k[0].toUpperCase() + k.slice(1)} htmlFor={`request-filter-${k}`}>
              <input
                id={`request-filter-${k}`}
                data-testid={`request-filter-${k}`}
                value={filters[k]}
                onChange={(e) => setFilters({ ...filters, [k]: e.target.value })}
              />
            </Field>
          ))}
          <Field label="Outcome" htmlFor="request-filter-outcome">
            <select
              id="request-filter-outcome"
              data-testid="request-filter-outcome"
              value={filters.outcome}
              onChange={(e) => setFilters({ ...filters, outcome: e.target.value })}
            >
              <option value="">any</option>
              {OUTCOMES.map((o) => (
                <option key={o} value={o}>
                  {o}
                </option>
              ))}
            </select>
          </Field>
        </fieldset>
      ) : null}
      <Field label="Reason" htmlFor="request-reason" hint={`Shown to the reviewers; 1–${REASON_MAX} characters.`}>
        <textarea
          id="request-reason"
          data-testid="request-reason"
          rows={3}
          value={reason}
          onChange={(e) => setReason(e.target.value)}
        />
      </Field>
      {problem ? (
        <div className="field-error" role="alert" data-testid="request-problem">
          {problem}
        </div>
      ) : null}
      <ErrorBox error={error} testId="request-error" onSignInAgain={props.onSignInAgain} />
      {created ? (
        <div className="alert alert-success" data-testid="request-result">
          Request created ({created.status}); it needs {created.approvals_needed} approval
          {created.approvals_needed === 1 ? "" : "s"}.
        </div>
      ) : null}
      <div className="form-actions">
        <button type="submit" className="btn btn-primary" data-testid="request-submit" disabled={busy}>
          {busy ? "Submitting…" : "Submit request"}
        </button>
      </div>
    </form>
  );
}
