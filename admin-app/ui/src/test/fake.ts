// A fake Rust side for tests: `invoke` answers from per-command handlers, `listen` records
// callbacks that `emit` calls. Installed for every test file by setup.ts (vi.mock).
import { vi } from "vitest";
import { act } from "@testing-library/react";
import type { AppStatus, Approval, Session } from "../ipc";

type Handler = (args: Record<string, unknown>) => unknown;
type Listener = (e: { event: string; id: number; payload: unknown }) => void;

const handlers = new Map<string, Handler>();
const listeners = new Map<string, Set<Listener>>();

export const invoke = vi.fn(async (cmd: string, args?: Record<string, unknown>) => {
  const h = handlers.get(cmd);
  if (!h) throw { code: "unmocked", message: `no handler for ${cmd}` };
  return h(args ?? {});
});

export const listen = vi.fn(async (event: string, cb: Listener) => {
  let set = listeners.get(event);
  if (!set) listeners.set(event, (set = new Set()));
  set.add(cb);
  return () => {
    set.delete(cb);
  };
});

/** Answer `cmd` with `h(args)` (a value, a promise, or a throw for a rejection). */
export function on(cmd: string, h: Handler): void {
  handlers.set(cmd, h);
}

/** Reject `cmd` with an IPC error. */
export function fail(cmd: string, code: string, message = ""): void {
  handlers.set(cmd, () => {
    throw { code, message };
  });
}

export function emit(event: string, payload: unknown): void {
  act(() => {
    for (const cb of listeners.get(event) ?? []) cb({ event, id: 0, payload });
  });
}

export function listenerCount(event: string): number {
  return listeners.get(event)?.size ?? 0;
}

/** The calls made for one command, as their argument objects. */
export function callsOf(cmd: string): Record<string, unknown>[] {
  return invoke.mock.calls.filter((c) => c[0] === cmd).map((c) => (c[1] ?? {}) as Record<string, unknown>);
}

export function resetFake(): void {
  handlers.clear();
  listeners.clear();
  invoke.mockClear();
  listen.mockClear();
}

// ---- Fixtures ----

export const NOW = Date.UTC(2025, 0, 15, 12, 0, 0);

export function session(over: Partial<Session> = {}): Session {
  return {
    user: { id: "u-alice", email: "alice@example.org", role: "admin" },
    actions: ["approvals:decide", "tokens:revoke", "audit:read", "audit:export"],
    reauth_until_ms: NOW + 10 * 60_000,
    emergency: null,
    ...over,
  };
}

export function status(over: Partial<AppStatus> = {}): AppStatus {
  return {
    configured: true,
    server_url: "https://mgmt.example.org",
    vault_url: null,
    relay_url: null,
    store: { kind: "keyring", locked: false, initialized: true },
    session: session(),
    share_key: { present: false, public_key: null },
    ...over,
  };
}

export function approval(over: Partial<Approval> = {}): Approval {
  return {
    id: "ap1",
    operation: "user.delete",
    params: { user_id: "u-mallory" },
    reason: "Left the company",
    requester: "user:u-bob",
    requester_email: "bob@example.org",
    status: "pending",
    approvals_needed: 2,
    denials_needed: 1,
    approvals: 1,
    denials: 0,
    decisions: [
      {
        reviewer: "user:u-carol",
        reviewer_email: "carol@example.org",
        decision: "approve",
        reason: "Confirmed with HR",
        decided_at_ms: NOW - 60_000,
      },
    ],
    created_at_ms: NOW - 120_000,
    expires_at_ms: NOW + 5 * 60_000 + 30_000,
    decided_at_ms: null,
    executed_at_ms: null,
    own: false,
    can_decide: true,
    can_execute: false,
    ceremony: null,
    share_submitted: false,
    ...over,
  };
}
