import { afterEach, describe, expect, it, vi } from "vitest";
import { act, render, screen, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { App } from "../App";
import type { AuditRecord, Health } from "../ipc";
import { callsOf, on, status } from "./fake";

function rec(seq: number, over: Partial<AuditRecord> = {}): AuditRecord {
  return {
    seq,
    at_ms: 1_736_942_400_000 + seq * 1000,
    actor: "user:u-alice",
    action: "approval.decide",
    target: "approval:ap1",
    outcome: "success",
    details: { decision: "approve", n: seq },
    hash: `h${seq}`,
    prev_hash: `h${seq - 1}`,
    ...over,
  };
}

async function open(nav: string) {
  on("status", () => status({ vault_url: null, relay_url: "https://relay.example.org" }));
  on("approvals_list", () => []);
  on("directory", () => ({ users: [], groups: [], nodes: [] }));
  const user = userEvent.setup({ advanceTimers: (ms) => (vi.isFakeTimers() ? vi.advanceTimersByTime(ms) : undefined) });
  render(<App />);
  await user.click(await screen.findByTestId(nav));
  return user;
}

const rows = () => screen.queryAllByTestId("audit-row").map((r) => r.getAttribute("data-seq"));

describe("audit", () => {
  afterEach(() => vi.useRealTimers());

  it("searches with the filters, expands details and loads more", async () => {
    on("audit_search", (a) =>
      a.after_seq === undefined ? { records: [rec(1), rec(2, { outcome: "failure" })], next_after_seq: 2 } : { records: [rec(3)], next_after_seq: null },
    );
    const user = await open("nav-audit");
    await user.type(screen.getByTestId("filter-actor"), "user:u-alice");
    await user.selectOptions(screen.getByTestId("filter-outcome"), "failure");
    await user.click(screen.getByTestId("audit-search"));
    expect(callsOf("audit_search")[0]).toEqual({ filters: { actor: "user:u-alice", outcome: "failure" }, limit: 100 });
    expect(rows()).toEqual(["1", "2"]);
    const row2 = screen.getAllByTestId("audit-row")[1];
    expect(within(row2).getByText("failure")).toBeInTheDocument();
    await user.click(within(row2).getByTestId("audit-details-toggle"));
    expect(screen.getByTestId("audit-details")).toHaveTextContent('"decision": "approve"');

    await user.click(screen.getByTestId("load-more"));
    expect(callsOf("audit_search")[1]).toEqual({ filters: { actor: "user:u-alice", outcome: "failure" }, after_seq: 2, limit: 100 });
    expect(rows()).toEqual(["1", "2", "3"]);
    expect(screen.queryByTestId("load-more")).not.toBeInTheDocument();
  });

  it("live tail polls after the last seq every 2 s and appends", async () => {
    vi.useFakeTimers({ shouldAdvanceTime: true });
    let next = 3;
    on("audit_search", (a) => {
      if (a.after_seq === undefined) return { records: [rec(1), rec(2)], next_after_seq: null };
      const after = a.after_seq as number;
      return after < next ? { records: [rec(next)], next_after_seq: null } : { records: [], next_after_seq: null };
    });
    const user = await open("nav-audit");
    await user.click(screen.getByTestId("audit-search"));
    expect(rows()).toEqual(["1", "2"]);
    await user.click(screen.getByTestId("live-tail"));
    await act(() => vi.advanceTimersByTimeAsync(10));
    expect(callsOf("audit_search")[1]).toMatchObject({ after_seq: 2 });
    expect(rows()).toEqual(["1", "2", "3"]);
    next = 4;
    await act(() => vi.advanceTimersByTimeAsync(2000));
    expect(callsOf("audit_search")[2]).toMatchObject({ after_seq: 3 });
    expect(rows()).toEqual(["1", "2", "3", "4"]);
    await user.click(screen.getByTestId("live-tail"));
    const n = callsOf("audit_search").length;
    await act(() => vi.advanceTimersByTimeAsync(6000));
    expect(callsOf("audit_search")).toHaveLength(n);
  });

  it("verify shows an intact chain in green and a broken one in red", async () => {
    on("audit_verify", () => ({ checked: 1234, first_broken: null, reason: null }));
    const user = await open("nav-audit");
    await user.click(screen.getByTestId("verify-chain"));
    const ok = await screen.findByTestId("verify-result");
    expect(ok).toHaveTextContent("Chain intact: 1234 records checked");
    expect(ok).toHaveClass("alert-success");

    on("audit_verify", () => ({ checked: 57, first_broken: 57, reason: "hash mismatch" }));
    await user.click(screen.getByTestId("verify-chain"));
    const bad = await screen.findByTestId("verify-result");
    expect(bad).toHaveTextContent("Broken at record 57: hash mismatch");
    expect(bad).toHaveClass("alert-error");
  });

  it("requests an export of the current filters through approval_create", async () => {
    on("approval_create", (a) => ({ id: "ex1", operation: a.operation, params: a.params, status: "pending" }));
    const user = await open("nav-audit");
    await user.type(screen.getByTestId("filter-action"), "token.revoke");
    await user.type(screen.getByTestId("export-reason"), "Quarterly review");
    await user.click(screen.getByTestId("request-export"));
    expect(callsOf("approval_create")).toEqual([
      { operation: "audit.export", params: { filters: { action: "token.revoke" } }, reason: "Quarterly review" },
    ]);
    expect(screen.getByTestId("export-request-result")).toBeInTheDocument();
  });
});

describe("health", () => {
  afterEach(() => vi.useRealTimers());

  const sample = (over: Partial<Health> = {}): Health => ({
    services: [
      { name: "management", url: "https://mgmt.example.org", ready: true, status: 200, latency_ms: 12, checks: { db: "ok" }, error: null },
      { name: "vault", url: null, ready: null, status: null, latency_ms: null, checks: {}, error: null },
      { name: "relay", url: "https://relay.example.org", ready: false, status: 503, latency_ms: 40, checks: {}, error: "revocation feed stale" },
    ],
    relay: {
      connections: 17,
      mailbox_depth: 3,
      accepted_total: 1000,
      delivered_total: 990,
      refused_total: 10,
      revocation_view_age_seconds: 2,
      accepted_per_sec: 12.5,
      delivered_per_sec: 12,
      refused_per_sec: 0.25,
    },
    relay_error: null,
    sampled_at_ms: Date.now(),
    ...over,
  });

  it("renders ready / not configured / not ready, latency and relay rates; refreshes every 5 s", async () => {
    vi.useFakeTimers({ shouldAdvanceTime: true });
    on("health", () => sample());
    await open("nav-health");
    const mgmt = await screen.findByTestId("service-management");
    expect(within(mgmt).getByTestId("service-state")).toHaveTextContent("ready");
    expect(within(mgmt).getByTestId("service-latency")).toHaveTextContent("12 ms");
    expect(within(mgmt).getByText("db")).toBeInTheDocument();
    expect(within(screen.getByTestId("service-vault")).getByTestId("service-state")).toHaveTextContent("not configured");
    const relay = screen.getByTestId("service-relay");
    expect(within(relay).getByTestId("service-state")).toHaveTextContent("not ready");
    expect(relay).toHaveTextContent("revocation feed stale");
    expect(screen.getByTestId("relay-connections")).toHaveTextContent("17");
    expect(screen.getByTestId("mailbox-depth")).toHaveTextContent("3");
    expect(screen.getByTestId("relay-rates")).toHaveTextContent("12.5 / 12.0 / 0.3");

    expect(callsOf("health")).toHaveLength(1);
    on("health", () => sample({ relay: { ...sample().relay!, connections: 18 } }));
    await act(() => vi.advanceTimersByTimeAsync(5000));
    expect(callsOf("health")).toHaveLength(2);
    expect(screen.getByTestId("relay-connections")).toHaveTextContent("18");
  });

  it("rates are blank on the first sample", async () => {
    const s = sample();
    on("health", () => ({ ...s, relay: { ...s.relay!, accepted_per_sec: null, delivered_per_sec: null, refused_per_sec: null } }));
    await open("nav-health");
    expect(await screen.findByTestId("relay-rates")).toHaveTextContent("— / — / —");
  });
});
