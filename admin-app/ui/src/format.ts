import type { IpcError } from "./ipc";

export const OPERATION_LABELS: Record<string, string> = {
  "token.mint": "Mint node token",
  "vault.unlock": "Unlock vault",
  "audit.export": "Export audit log",
  "user.delete": "Delete user",
  "emergency.access": "Emergency access",
  "group.approvals.disable": "Disable token approvals for group",
};

export function operationLabel(op: string): string {
  return OPERATION_LABELS[op] ?? op;
}

const PARAM_LABELS: Record<string, string> = {
  group: "Group",
  user_id: "User",
  node_id: "Node",
  role: "Role",
  duration_secs: "Duration",
  ttl_secs: "Token lifetime",
  rights: "Rights",
  filters: "Filters",
  covers: "Covers",
};

export function paramLabel(key: string): string {
  return PARAM_LABELS[key] ?? key.replace(/_/g, " ");
}

export function formatDuration(secs: number): string {
  if (!Number.isFinite(secs)) return String(secs);
  const s = Math.max(0, Math.round(secs));
  if (s < 60) return `${s} s`;
  const d = Math.floor(s / 86400);
  const h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  const parts: string[] = [];
  if (d) parts.push(`${d} d`);
  if (h) parts.push(`${h} h`);
  if (m) parts.push(`${m} min`);
  if (!d && !h && s % 60) parts.push(`${s % 60} s`);
  return parts.join(" ");
}

/** A readable value for a request parameter. */
export function formatParam(key: string, value: unknown): string {
  if (value === null || value === undefined) return "—";
  if ((key.endsWith("_secs") || key === "duration") && typeof value === "number") {
    return formatDuration(value);
  }
  if (typeof value === "string") return value;
  if (typeof value === "number" || typeof value === "boolean") return String(value);
  if (Array.isArray(value) && value.every((v) => typeof v === "string")) return value.join(", ");
  if (typeof value === "object") {
    const entries = Object.entries(value as Record<string, unknown>).filter(
      ([, v]) => v !== "" && v !== null && v !== undefined,
    );
    if (entries.length === 0) return "(none)";
    if (entries.every(([, v]) => typeof v !== "object")) {
      return entries.map(([k, v]) => `${k}=${String(v)}`).join(", ");
    }
  }
  return JSON.stringify(value);
}

/** Remaining time until `expiresAt`: "mm:ss" under an hour, "h m" above, "expired" when past. */
export function countdown(expiresAtMs: number, nowMs: number): string {
  const left = Math.floor((expiresAtMs - nowMs) / 1000);
  if (left <= 0) return "expired";
  if (left < 3600) {
    const m = Math.floor(left / 60);
    const s = left % 60;
    return `${String(m).padStart(2, "0")}:${String(s).padStart(2, "0")}`;
  }
  const d = Math.floor(left / 86400);
  const h = Math.floor((left % 86400) / 3600);
  const m = Math.floor((left % 3600) / 60);
  return d > 0 ? `${d}d ${h}h ${m}m` : `${h}h ${m}m`;
}

function pad(n: number): string {
  return String(n).padStart(2, "0");
}

/** Local time, ISO-like, to the second: "2025-01-31 14:05:09". */
export function formatTime(ms: number | null | undefined): string {
  if (ms === null || ms === undefined) return "—";
  const d = new Date(ms);
  if (Number.isNaN(d.getTime())) return "—";
  return (
    `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`
  );
}

/** `datetime-local` value ("YYYY-MM-DDTHH:mm") to Unix ms in local time; undefined if empty. */
export function parseLocalDateTime(v: string): number | undefined {
  if (!v) return undefined;
  const t = new Date(v).getTime();
  return Number.isNaN(t) ? undefined : t;
}

const ERROR_HINTS: Record<string, string> = {
  self_approval: "You cannot decide your own request; another admin must.",
  reauthentication_required: "This action needs a recent sign-in. Sign in again, then retry.",
  forbidden: "Your role does not allow this action.",
  login_code_invalid: "The code is wrong or has expired. Check the mail and try again.",
  not_configured: "No management server is configured.",
  store_locked: "The local store is locked. Unlock it first.",
  store_passphrase_wrong: "Wrong passphrase.",
  not_signed_in: "You are not signed in. Sign in again.",
  invalid_input: "The input was rejected.",
  unreachable: "The server could not be reached.",
  share_key_missing: "You have no share key on this device. Create one on the Account screen.",
  not_a_holder: "You are not an unlock share holder for this vault.",
};

/** Human sentence for an error, followed by the server's own message when it adds something. */
export function errorText(e: IpcError): string {
  const hint = ERROR_HINTS[e.code];
  if (!hint) return e.message || e.code;
  if (!e.message || e.message === hint) return hint;
  return `${hint} (${e.message})`;
}

export function needsSignIn(e: IpcError | null): boolean {
  return !!e && (e.code === "reauthentication_required" || e.code === "not_signed_in");
}

export function formatRate(v: number | null | undefined): string {
  if (v === null || v === undefined) return "—";
  return v >= 100 ? v.toFixed(0) : v.toFixed(1);
}

export function shortHex(s: string | null | undefined, n = 12): string {
  if (!s) return "—";
  return s.length > n * 2 ? `${s.slice(0, n)}…${s.slice(-n)}` : s;
}
