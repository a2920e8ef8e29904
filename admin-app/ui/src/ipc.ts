// The only module that talks to the Rust side. Types are copied from admin-app/IPC.md;
// argument keys are snake_case exactly as written there. The web view holds no token and
// talks to no server: every call goes through `invoke`, every push through `listen`.
import { invoke } from "@tauri-apps/api/core";
import { listen, type UnlistenFn } from "@tauri-apps/api/event";

// ---- Types (IPC.md) ----

export type StoreKind = "keyring" | "file";

export interface AppStatus {
  configured: boolean;
  server_url: string | null;
  vault_url: string | null;
  relay_url: string | null;
  store: { kind: StoreKind; locked: boolean; initialized: boolean };
  session: Session | null;
  share_key: { present: boolean; public_key: string | null };
}

export interface Session {
  user: { id: string; email: string; role: string };
  actions: string[];
  reauth_until_ms: number | null;
  emergency: { grant: string; role: string } | null;
}

export interface LoginStarted {
  match_code: string;
  expires_in_secs: number;
}

export type LoginPoll = { status: "pending" } | { status: "complete"; session: Session };

export interface Decision {
  reviewer: string;
  reviewer_email: string | null;
  decision: "approve" | "deny";
  reason: string;
  decided_at_ms: number;
}

export type ApprovalStatus = "pending" | "approved" | "denied" | "executed" | "expired";

export interface Approval {
  id: string;
  operation: string;
  params: Record<string, unknown>;
  reason: string;
  requester: string;
  requester_email: string | null;
  status: ApprovalStatus;
  approvals_needed: number;
  denials_needed: number;
  approvals: number;
  denials: number;
  decisions: Decision[];
  created_at_ms: number;
  expires_at_ms: number;
  decided_at_ms: number | null;
  executed_at_ms: number | null;
  own: boolean;
  can_decide: boolean;
  can_execute: boolean;
  ceremony: string | null;
  share_submitted: boolean;
}

export interface User {
  id: string;
  email: string;
  role: string;
  created_at_ms: number;
  disabled_at_ms: number | null;
}
export interface Group {
  id: string;
  node_ceiling: string;
  created_at_ms: number;
}
export interface Node {
  id: string;
  group_id: string;
  user_id: string;
  ceiling: string;
  enrolled_at_ms: number;
  disabled_at_ms: number | null;
}
export interface Directory {
  users: User[];
  groups: Group[];
  nodes: Node[];
}

export type RevokeScope = "user" | "node" | "group";

export interface RevokeResult {
  scope: RevokeScope;
  subject: string;
  feed_seq: number;
  epoch: number;
  propagated_ms: number | null;
}

export interface AuditRecord {
  seq: number;
  at_ms: number;
  actor: string;
  action: string;
  target: string;
  outcome: "success" | "failure" | (string & {});
  details: unknown;
  hash: string;
  prev_hash: string;
}
export interface AuditPage {
  records: AuditRecord[];
  next_after_seq: number | null;
}
export interface AuditFilters {
  actor?: string;
  action?: string;
  target?: string;
  outcome?: string;
  since_ms?: number;
  until_ms?: number;
}
export interface VerifyReport {
  checked: number;
  first_broken: number | null;
  reason: string | null;
  checkpoints?: unknown;
}

export interface ServiceHealth {
  name: "management" | "vault" | "relay";
  url: string | null;
  ready: boolean | null;
  status: number | null;
  latency_ms: number | null;
  checks: Record<string, unknown>;
  error: string | null;
}
export interface RelayStats {
  connections: number;
  mailbox_depth: number;
  accepted_total: number;
  delivered_total: number;
  refused_total: number;
  revocation_view_age_seconds: number | null;
  accepted_per_sec: number | null;
  delivered_per_sec: number | null;
  refused_per_sec: number | null;
}
export interface Health {
  services: ServiceHealth[];
  relay: RelayStats | null;
  relay_error: string | null;
  sampled_at_ms: number;
}

export interface ExecuteResult {
  approval: Approval;
  result: unknown;
}
export interface ShareSubmitResult {
  accepted: boolean;
  threshold: number;
  unlocked: boolean;
}
export interface LockVaultResult {
  locked: boolean;
  was_unlocked: boolean;
}
export interface AuditExportResult {
  path: string;
  records: number;
}

export type ApprovalsEvent =
  | {
      type: "approval.created" | "approval.vote" | "approval.decided" | "approval.executed";
      approval: Approval;
    }
  | { type: "lagged" };

export type StreamState = "connected" | "reconnecting" | "stopped";
export interface StreamEvent {
  state: StreamState;
  detail?: string;
}
export interface SessionEvent {
  state: "ended";
}

// ---- Errors ----

/** A failed command rejects with `{code, message}`. */
export interface IpcError {
  code: string;
  message: string;
}

export function toIpcError(e: unknown): IpcError {
  if (e && typeof e === "object" && "code" in e) {
    const o = e as { code: unknown; message?: unknown };
    return {
      code: String(o.code),
      message: typeof o.message === "string" ? o.message : "",
    };
  }
  if (e instanceof Error) return { code: "internal", message: e.message };
  if (typeof e === "string") return { code: "internal", message: e };
  return { code: "internal", message: "Unexpected error" };
}

export function isIpcError(e: unknown): e is IpcError {
  return !!e && typeof e === "object" && "code" in e && "message" in e;
}

async function call<T>(cmd: string, args?: Record<string, unknown>): Promise<T> {
  try {
    return await invoke<T>(cmd, args);
  } catch (e) {
    throw toIpcError(e);
  }
}

// ---- Commands ----

export const ipc = {
  status: () => call<AppStatus>("status"),
  configure: (a: { server_url: string; vault_url?: string; relay_url?: string }) =>
    call<AppStatus>("configure", a),
  unlockStore: (passphrase: string) => call<AppStatus>("unlock_store", { passphrase }),
  loginStart: (email: string) => call<LoginStarted>("login_start", { email }),
  loginCode: (code: string) => call<Session>("login_code", { code }),
  loginPoll: () => call<LoginPoll>("login_poll"),
  logout: () => call<null>("logout"),

  approvalsList: () => call<Approval[]>("approvals_list"),
  approvalDecide: (id: string, decision: "approve" | "deny", reason: string) =>
    call<Approval>("approval_decide", { id, decision, reason }),
  approvalCreate: (operation: string, params: Record<string, unknown>, reason: string) =>
    call<Approval>("approval_create", { operation, params, reason }),
  approvalExecute: (id: string) => call<ExecuteResult>("approval_execute", { id }),
  shareKeyCreate: () => call<AppStatus>("share_key_create"),
  shareSubmit: (approval_id: string) => call<ShareSubmitResult>("share_submit", { approval_id }),

  directory: () => call<Directory>("directory"),
  revokeTokens: (scope: RevokeScope, id: string, reason: string) =>
    call<RevokeResult>("revoke_tokens", { scope, id, reason }),
  disableNode: (id: string, reason: string) => call<unknown>("disable_node", { id, reason }),
  disableUser: (id: string, reason: string) => call<unknown>("disable_user", { id, reason }),
  lockVault: (group: string, reason: string) =>
    call<LockVaultResult>("lock_vault", { group, reason }),

  auditSearch: (filters: AuditFilters, after_seq?: number, limit?: number) => {
    const args: Record<string, unknown> = { filters };
    if (after_seq !== undefined) args.after_seq = after_seq;
    if (limit !== undefined) args.limit = limit;
    return call<AuditPage>("audit_search", args);
  },
  auditVerify: () => call<VerifyReport>("audit_verify"),
  auditExport: (approval_id: string) => call<AuditExportResult>("audit_export", { approval_id }),

  health: () => call<Health>("health"),
};

export type Ipc = typeof ipc;

// ---- Events ----

export function onApprovals(cb: (e: ApprovalsEvent) => void): Promise<UnlistenFn> {
  return listen<ApprovalsEvent>("approvals", (ev) => cb(ev.payload));
}
export function onStream(cb: (e: StreamEvent) => void): Promise<UnlistenFn> {
  return listen<StreamEvent>("stream", (ev) => cb(ev.payload));
}
export function onSession(cb: (e: SessionEvent) => void): Promise<UnlistenFn> {
  return listen<SessionEvent>("session", (ev) => cb(ev.payload));
}

/** Subscribe from a React effect; returns a cleanup that also handles a late subscription. */
export function subscribe(p: Promise<UnlistenFn>): () => void {
  let done = false;
  let un: UnlistenFn | null = null;
  p.then(
    (u) => {
      if (done) u();
      else un = u;
    },
    () => {
      /* outside Tauri (tests without a mock, plain browser): no events */
    },
  );
  return () => {
    done = true;
    if (un) un();
  };
}
