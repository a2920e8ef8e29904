import { useCallback, useEffect, useMemo, useState, type ReactNode } from "react";
import { ipc, toIpcError, type Directory, type IpcError, type RevokeResult } from "../ipc";
import { formatTime } from "../format";
import { checkReason, REASON_MAX } from "./ApprovalCard";
import { ErrorBox } from "./common";

type ActionKind = "revoke-user" | "disable-user" | "revoke-node" | "disable-node" | "revoke-group" | "lock-vault";

type Scope = "user" | "node" | "group";

const SCOPE_OF: Record<ActionKind, Scope> = {
  "revoke-user": "user",
  "disable-user": "user",
  "revoke-node": "node",
  "disable-node": "node",
  "revoke-group": "group",
  "lock-vault": "group",
};

interface Pending {
  kind: ActionKind;
  id: string;
  label: string; // who, for humans
}

const RESULT_LIMIT = 100;

export function revokeText(r: RevokeResult): string {
  const prop = r.propagated_ms === null ? "not confirmed within 5 s" : `propagated in ${r.propagated_ms} ms`;
  return `Revoked: epoch ${r.epoch}, feed seq ${r.feed_seq}, ${prop}`;
}

function describe(p: Pending, dir: Directory | null): { title: string; text: string; button: string } {
  switch (p.kind) {
    case "revoke-user": {
      const n = dir?.nodes.filter((x) => x.user_id === p.id).length;
      return {
        title: `Revoke all tokens of user ${p.label}`,
        text: `Every token of every node of this user${n !== undefined ? ` (${n} node${n === 1 ? "" : "s"})` : ""} is revoked now: the vault and the relays refuse them as soon as the revocation propagates. The user can still sign in.`,
        button: "Revoke tokens",
      };
    }
    case "disable-user":
      return {
        title: `Disable user ${p.label}`,
        text: "The user can no longer sign in, every session of theirs ends now, and an emergency grant of theirs ends. Their nodes keep their tokens: revoke or disable those too.",
        button: "Disable user",
      };
    case "revoke-node":
      return {
        title: `Revoke tokens of node ${p.label}`,
        text: "Every token this node holds is revoked now; the vault and the relays refuse them as soon as the revocation propagates. The node is not disabled.",
        button: "Revoke tokens",
      };
    case "disable-node":
      return {
        title: `Disable node ${p.label}`,
        text: "Management refuses this node from now on, the vault mints, refreshes and delegates nothing for it, and every token it holds is revoked.",
        button: "Disable node",
      };
    case "revoke-group": {
      const n = dir?.nodes.filter((x) => x.group_id === p.id).length;
      return {
        title: `Revoke all tokens of group ${p.label}`,
        text: `Every token of every node in this group${n !== undefined ? ` (${n} node${n === 1 ? "" : "s"})` : ""} is revoked now; the vault and the relays refuse them as soon as the revocation propagates.`,
        button: "Revoke tokens",
      };
    }
    case "lock-vault":
      return {
        title: `Lock the vault of group ${p.label}`,
        text: "The vault wipes this group's data key now. Its secrets stay unreadable until an approved unlock ceremony completes with enough unlock shares.",
        button: "Lock vault",
      };
  }
}

function includes(hay: string, q: string): boolean {
  return hay.toLowerCase().includes(q);
}

export function filterDirectory(dir: Directory, query: string): Directory {
  const q = query.trim().toLowerCase();
  if (!q) return dir;
  return {
    users: dir.users.filter((u) => includes(u.email, q) || includes(u.id, q)),
    nodes: dir.nodes.filter((n) => includes(n.id, q) || includes(n.group_id, q) || includes(n.user_id, q)),
    groups: dir.groups.filter((g) => includes(g.id, q)),
  };
}

export function Incident(props: { onSignInAgain: () => void }) {
  const [dir, setDir] = useState<Directory | null>(null);
  const [loadError, setLoadError] = useState<IpcError | null>(null);
  const [query, setQuery] = useState("");
  const [pending, setPending] = useState<Pending | null>(null);
  const [reason, setReason] = useState("");
  const [problem, setProblem] = useState<string | null>(null);
  const [error, setError] = useState<IpcError | null>(null);
  const [busy, setBusy] = useState(false);
  const [result, setResult] = useState<{ scope: Scope; id: string; text: string; ok: boolean } | null>(null);

  const load = useCallback(async () => {
    try {
      setDir(await ipc.directory());
      setLoadError(null);
    } catch (e) {
      setLoadError(toIpcError(e));
    }
  }, []);

  useEffect(() => {
    void load();
  }, [load]);

  const filtered = useMemo(() => (dir ? filterDirectory(dir, query) : null), [dir, query]);
  const emailOf = useMemo(() => {
    const m = new Map<string, string>();
    for (const u of dir?.users ?? []) m.set(u.id, u.email);
    return m;
  }, [dir]);

  function open(kind: ActionKind, id: string, label: string) {
    setPending({ kind, id, label });
    setReason("");
    setProblem(null);
    setError(null);
    setResult(null);
  }

  async function confirm() {
    if (!pending) return;
    const p = checkReason(reason);
    if (p) {
      setProblem(p);
      return;
    }
    setProblem(null);
    setError(null);
    setBusy(true);
    const r = reason.trim();
    const scope = SCOPE_OF[pending.kind];
    const id = pending.id;
    try {
      let text: string;
      switch (pending.kind) {
        case "revoke-user":
          text = revokeText(await ipc.revokeTokens("user", pending.id, r));
          break;
        case "revoke-node":
          text = revokeText(await ipc.revokeTokens("node", pending.id, r));
          break;
        case "revoke-group":
          text = revokeText(await ipc.revokeTokens("group", pending.id, r));
          break;
        case "disable-user":
          await ipc.disableUser(pending.id, r);
          text = `User ${pending.label} disabled.`;
          break;
        case "disable-node":
          await ipc.disableNode(pending.id, r);
          text = `Node ${pending.label} disabled; its tokens are revoked.`;
          break;
        case "lock-vault": {
          const lr = await ipc.lockVault(pending.id, r);
          text = lr.locked
            ? `Vault of group ${pending.label} locked${lr.was_unlocked ? "." : " (it was already locked)."}`
            : `The vault of group ${pending.label} reports it is not locked.`;
          setResult({ scope, id, text, ok: lr.locked });
          setPending(null);
          return;
        }
      }
      setResult({ scope, id, text, ok: true });
      setPending(null);
      if (pending.kind === "disable-user" || pending.kind === "disable-node") void load();
    } catch (e) {
      setError(toIpcError(e));
    } finally {
      setBusy(false);
    }
  }

  function rowExtra(kind: Scope, id: string, cols: number): ReactNode {
    const showConfirm = !!pending && SCOPE_OF[pending.kind] === kind && pending.id === id;
    const showResult = !!result && result.scope === kind && result.id === id;
    if (!showConfirm && !showResult) return null;
    const d = pending ? describe(pending, dir) : null;
    return (
      <tr className="row-extra">
        <td colSpan={cols}>
          {showConfirm && pending && d ? (
            <div className="confirm confirm-danger" data-testid="confirm-panel">
              <div className="confirm-title">{d.title}</div>
              <p className="confirm-text">{d.text}</p>
              <label className="field-label" htmlFor="confirm-reason">
                Reason (required, recorded in the audit log)
              </label>
              <input
                id="confirm-reason"
                data-testid="confirm-reason"
                autoFocus
                maxLength={REASON_MAX + 50}
                value={reason}
                onChange={(e) => setReason(e.target.value)}
              />
              <div className="confirm-foot">
                {problem ? (
                  <span className="field-error" role="alert">
                    {problem}
                  </span>
                ) : null}
                <span className="spacer" />
                <button type="button" className="btn" data-testid="cancel-action" onClick={() => setPending(null)}>
                  Cancel
                </button>
                <button
                  type="button"
                  className="btn btn-deny"
                  data-testid="confirm-action"
                  disabled={busy}
                  onClick={() => void confirm()}
                >
                  {busy ? "Working…" : d.button}
                </button>
              </div>
              <ErrorBox error={error} testId="action-error" onSignInAgain={props.onSignInAgain} />
            </div>
          ) : null}
          {showResult && result && !showConfirm ? (
            <div className={`alert ${result.ok ? "alert-success" : "alert-error"}`} data-testid="action-result">
              {result.text}
            </div>
          ) : null}
        </td>
      </tr>
    );
  }

  const users = filtered?.users ?? [];
  const nodes = filtered?.nodes ?? [];
  const groups = filtered?.groups ?? [];

  return (
    <div className="stack">
      <div className="toolbar">
        <input
          className="search"
          type="search"
          data-testid="directory-search"
          placeholder="Search users (email, id), nodes (id, group, user) and groups (id)"
          aria-label="Search the directory"
          autoFocus
          value={query}
          onChange={(e) => setQuery(e.target.value)}
        />
        <button type="button" className="btn btn-small" onClick={() => void load()}>
          Reload directory
        </button>
      </div>
      <ErrorBox error={loadError} testId="directory-error" onSignInAgain={props.onSignInAgain} />
      {!dir && !loadError ? <p className="empty">Loading directory…</p> : null}
      {filtered ? (
        <>
          <ResultSection title="Users" count={users.length}>
            <table className="table">
              <thead>
                <tr>
                  <th>Email</th>
                  <th>Id</th>
                  <th>Role</th>
                  <th>State</th>
                  <th className="actions-col">Actions</th>
                </tr>
              </thead>
              <tbody>
                {users.slice(0, RESULT_LIMIT).map((u) => (
                  <FragmentRows key={u.id}>
                    <tr data-testid={`result-user-${u.id}`}>
                      <td>{u.email}</td>
                      <td className="mono">{u.id}</td>
                      <td>{u.role}</td>
                      <td>
                        {u.disabled_at_ms ? (
                          <span className="badge badge-denied" title={formatTime(u.disabled_at_ms)}>disabled</span>
                        ) : (
                          <span className="badge badge-neutral">active</span>
                        )}
                      </td>
                      <td className="actions-col">
                        <button type="button" className="btn btn-small" data-testid="revoke-tokens" onClick={() => open("revoke-user", u.id, u.email)}>
                          Revoke all tokens
                        </button>
                        <button
                          type="button"
                          className="btn btn-small btn-deny-outline"
                          data-testid="disable-user"
                          disabled={!!u.disabled_at_ms}
                          onClick={() => open("disable-user", u.id, u.email)}
                        >
                          Disable user
                        </button>
                      </td>
                    </tr>
                    {rowExtra("user", u.id, 5)}
                  </FragmentRows>
                ))}
              </tbody>
            </table>
            {users.length > RESULT_LIMIT ? <More n={users.length - RESULT_LIMIT} /> : null}
          </ResultSection>
          <ResultSection title="Nodes" count={nodes.length}>
            <table className="table">
              <thead>
                <tr>
                  <th>Node</th>
                  <th>Group</th>
                  <th>Owner</th>
                  <th>Ceiling</th>
                  <th>State</th>
                  <th className="actions-col">Actions</th>
                </tr>
              </thead>
              <tbody>
                {nodes.slice(0, RESULT_LIMIT).map((n) => (
                  <FragmentRows key={n.id}>
                    <tr data-testid={`result-node-${n.id}`}>
                      <td className="mono">{n.id}</td>
                      <td className="mono">{n.group_id}</td>
                      <td>{emailOf.get(n.user_id) ?? <span className="mono">{n.user_id}</span>}</td>
                      <td className="mono small">{n.ceiling}</td>
                      <td>
                        {n.disabled_at_ms ? (
                          <span className="badge badge-denied" title={formatTime(n.disabled_at_ms)}>disabled</span>
                        ) : (
                          <span className="badge badge-neutral">active</span>
                        )}
                      </td>
                      <td className="actions-col">
                        <button type="button" className="btn btn-small" data-testid="revoke-tokens" onClick={() => open("revoke-node", n.id, n.id)}>
                          Revoke tokens
                        </button>
                        <button
                          type="button"
                          className="btn btn-small btn-deny-outline"
                          data-testid="disable-node"
                          disabled={!!n.disabled_at_ms}
                          onClick={() => open("disable-node", n.id, n.id)}
                        >
                          Disable node
                        </button>
                      </td>
                    </tr>
                    {rowExtra("node", n.id, 6)}
                  </FragmentRows>
                ))}
              </tbody>
            </table>
            {nodes.length > RESULT_LIMIT ? <More n={nodes.length - RESULT_LIMIT} /> : null}
          </ResultSection>
          <ResultSection title="Groups" count={groups.length}>
            <table className="table">
              <thead>
                <tr>
                  <th>Group</th>
                  <th>Node ceiling</th>
                  <th>Created</th>
                  <th className="actions-col">Actions</th>
                </tr>
              </thead>
              <tbody>
                {groups.slice(0, RESULT_LIMIT).map((g) => (
                  <FragmentRows key={g.id}>
                    <tr data-testid={`result-group-${g.id}`}>
                      <td className="mono">{g.id}</td>
                      <td className="mono small">{g.node_ceiling}</td>
                      <td className="mono">{formatTime(g.created_at_ms)}</td>
                      <td className="actions-col">
                        <button type="button" className="btn btn-small" data-testid="revoke-tokens" onClick={() => open("revoke-group", g.id, g.id)}>
                          Revoke all tokens
                        </button>
                        <button type="button" className="btn btn-small btn-deny-outline" data-testid="lock-vault" onClick={() => open("lock-vault", g.id, g.id)}>
                          Lock vault
                        </button>
                      </td>
                    </tr>
                    {rowExtra("group", g.id, 4)}
                  </FragmentRows>
                ))}
              </tbody>
            </table>
            {groups.length > RESULT_LIMIT ? <More n={groups.length - RESULT_LIMIT} /> : null}
          </ResultSection>
        </>
      ) : null}
    </div>
  );
}

function FragmentRows(props: { children: ReactNode }) {
  return <>{props.children}</>;
}

function More(props: { n: number }) {
  return <p className="muted small">{props.n} more — refine the search.</p>;
}

function ResultSection(props: { title: string; count: number; children: ReactNode }) {
  return (
    <section className="card section">
      <h2 className="section-title">
        {props.title} <span className="muted">({props.count})</span>
      </h2>
      {props.count === 0 ? <p className="empty small">No matches.</p> : props.children}
    </section>
  );
}
