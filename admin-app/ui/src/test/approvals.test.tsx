import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { act, render, screen, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { App } from "../App";
import { countdown } from "../format";
import type { Approval } from "../ipc";
import { approval, callsOf, emit, NOW, on, status } from "./fake";

function signedIn(list: Approval[]) {
  on("status", () => status());
  on("approvals_list", () => list);
  on("directory", () => ({ users: [], groups: [{ id: "g-prod", node_ceiling: "", created_at_ms: 0 }], nodes: [] }));
}

async function renderApp() {
  const user = userEvent.setup({ advanceTimers: vi.advanceTimersByTime });
  render(<App />);
  await screen.findByTestId("approvals-list");
  return user;
}

describe("countdown format", () => {
  it("mm:ss under an hour, h m above, expired when past", () => {
    expect(countdown(NOW + 330_000, NOW)).toBe("05:30");
    expect(countdown(NOW + (2 * 3600 + 5 * 60 + 10) * 1000, NOW)).toBe("2h 5m");
    expect(countdown(NOW - 1, NOW)).toBe("expired");
  });
});

describe("approvals", () => {
  beforeEach(() => {
    vi.useFakeTimers({ shouldAdvanceTime: true, now: NOW });
  });
  afterEach(() => vi.useRealTimers());

  it("renders requester, parameters, progress, decisions, status and a live countdown", async () => {
    signedIn([approval({ expires_at_ms: NOW + 330_400 })]);
    await renderApp();
    const card = await screen.findByTestId("approval-ap1");
    expect(card).toHaveAttribute("data-status", "pending");
    const c = within(card);
    expect(c.getByText("Delete user")).toBeInTheDocument();
    expect(c.getByTestId("requester")).toHaveTextContent("bob@example.org");
    expect(c.getByText("u-mallory")).toBeInTheDocument();
    expect(c.getByText("Left the company")).toBeInTheDocument();
    expect(c.getByTestId("progress")).toHaveTextContent("Approvals 1 of 2");
    expect(c.getByTestId("progress")).toHaveTextContent("Denials 0 of 1");
    expect(c.getByTestId("status-badge")).toHaveTextContent("pending");
    expect(c.getByText("carol@example.org")).toBeInTheDocument();
    expect(c.getByText(/Confirmed with HR/)).toBeInTheDocument();
    expect(c.getByTestId("countdown").textContent).toMatch(/^05:(29|30)$/);
    await act(() => vi.advanceTimersByTimeAsync(60_000));
    expect(c.getByTestId("countdown").textContent).toMatch(/^04:(29|30)$/);
    await act(() => vi.advanceTimersByTimeAsync(300_000));
    expect(c.getByTestId("countdown")).toHaveTextContent("expired");
  });

  it("approve needs a reason, then calls approval_decide with snake_case args and updates the card", async () => {
    signedIn([approval()]);
    on("approval_decide", (a) =>
      approval({
        status: "approved",
        approvals: 2,
        can_decide: false,
        decisions: [
          ...approval().decisions,
          {
            reviewer: "user:u-alice",
            reviewer_email: "alice@example.org",
            decision: "approve",
            reason: a.reason as string,
            decided_at_ms: NOW,
          },
        ],
      }),
    );
    const user = await renderApp();
    const c = within(await screen.findByTestId("approval-ap1"));
    await user.click(c.getByTestId("approve"));
    await user.click(c.getByTestId("confirm-decision"));
    expect(c.getByText("A reason is required.")).toBeInTheDocument();
    expect(callsOf("approval_decide")).toHaveLength(0);

    await user.type(c.getByTestId("decision-reason"), "x".repeat(501));
    await user.click(c.getByTestId("confirm-decision"));
    expect(c.getByText(/too long/)).toBeInTheDocument();
    expect(callsOf("approval_decide")).toHaveLength(0);

    await user.clear(c.getByTestId("decision-reason"));
    await user.type(c.getByTestId("decision-reason"), "Verified the ticket");
    await user.click(c.getByTestId("confirm-decision"));
    expect(callsOf("approval_decide")).toEqual([{ id: "ap1", decision: "approve", reason: "Verified the ticket" }]);
    const card = screen.getByTestId("approval-ap1");
    expect(card).toHaveAttribute("data-status", "approved");
    expect(within(card).getByTestId("progress")).toHaveTextContent("Approvals 2 of 2");
    expect(within(card).queryByTestId("approve")).not.toBeInTheDocument();
    expect(within(card).getByText(/Verified the ticket/)).toBeInTheDocument();
  });

  it("deny also asks for a reason", async () => {
    signedIn([approval()]);
    on("approval_decide", () => approval({ status: "denied", denials: 1, can_decide: false }));
    const user = await renderApp();
    const c = within(await screen.findByTestId("approval-ap1"));
    await user.click(c.getByTestId("deny"));
    await user.type(c.getByTestId("decision-reason"), "No ticket");
    await user.click(c.getByTestId("confirm-decision"));
    expect(callsOf("approval_decide")).toEqual([{ id: "ap1", decision: "deny", reason: "No ticket" }]);
    expect(screen.getByTestId("approval-ap1")).toHaveAttribute("data-status", "denied");
  });

  it("an own request shows the note and no approve/deny", async () => {
    signedIn([approval({ own: true, can_decide: false, requester: "user:u-alice", requester_email: "alice@example.org" })]);
    await renderApp();
    const c = within(await screen.findByTestId("approval-ap1"));
    expect(c.getByTestId("own-note")).toHaveTextContent("another admin must decide");
    expect(c.queryByTestId("approve")).not.toBeInTheDocument();
    expect(c.queryByTestId("deny")).not.toBeInTheDocument();
  });

  it("shows server errors on the card, with sign in again for reauthentication_required", async () => {
    signedIn([approval()]);
    on("approval_decide", () => {
      throw { code: "reauthentication_required", message: "sign-in too old" };
    });
    on("logout", () => null);
    const user = await renderApp();
    const c = within(await screen.findByTestId("approval-ap1"));
    await user.click(c.getByTestId("approve"));
    await user.type(c.getByTestId("decision-reason"), "ok");
    await user.click(c.getByTestId("confirm-decision"));
    const err = c.getByTestId("card-error");
    expect(err).toHaveTextContent("Sign in again");
    expect(err).toHaveTextContent("reauthentication_required");
    await user.click(within(err).getByRole("button", { name: "Sign in again" }));
    expect(callsOf("logout")).toHaveLength(1);
    expect(await screen.findByTestId("login-email")).toHaveValue("alice@example.org");
  });

  it("an approvals event inserts a new card at the top and updates existing ones", async () => {
    signedIn([approval()]);
    await renderApp();
    await screen.findByTestId("approval-ap1");
    emit("approvals", {
      type: "approval.created",
      approval: approval({ id: "ap2", operation: "vault.unlock", params: { group: "g-prod" }, created_at_ms: NOW }),
    });
    const cards = screen.getByTestId("approvals-list").querySelectorAll("[data-testid^='approval-']");
    expect(Array.from(cards).map((e) => e.getAttribute("data-testid"))).toEqual(["approval-ap2", "approval-ap1"]);
    expect(within(screen.getByTestId("approval-ap2")).getByText("Unlock vault")).toBeInTheDocument();

    emit("approvals", { type: "approval.vote", approval: approval({ approvals: 2, status: "approved", can_decide: false }) });
    expect(screen.getByTestId("approval-ap1")).toHaveAttribute("data-status", "approved");
  });

  it("a lagged event re-reads the list", async () => {
    let list = [approval()];
    signedIn([]);
    on("approvals_list", () => list);
    await renderApp();
    await screen.findByTestId("approval-ap1");
    expect(callsOf("approvals_list")).toHaveLength(1);
    list = [approval({ id: "ap9", created_at_ms: NOW }), approval()];
    emit("approvals", { type: "lagged" });
    expect(await screen.findByTestId("approval-ap9")).toBeInTheDocument();
    expect(callsOf("approvals_list")).toHaveLength(2);
  });

  it("Pending hides finished requests; All shows them", async () => {
    signedIn([approval(), approval({ id: "old", status: "executed", created_at_ms: NOW - 999_999 })]);
    const user = await renderApp();
    await screen.findByTestId("approval-ap1");
    expect(screen.queryByTestId("approval-old")).not.toBeInTheDocument();
    await user.click(screen.getByTestId("tab-all"));
    const old = screen.getByTestId("approval-old");
    expect(old).toHaveAttribute("data-status", "executed");
    expect(within(old).queryByTestId("countdown")).not.toBeInTheDocument();
  });

  it("executes an approved vault.unlock and submits the unlock share", async () => {
    const approved = approval({
      operation: "vault.unlock",
      params: { group: "g-prod" },
      status: "approved",
      approvals: 2,
      own: true,
      can_decide: false,
      can_execute: true,
    });
    signedIn([approved]);
    on("approval_execute", () => ({
      approval: { ...approved, status: "executed", can_execute: false, ceremony: "cer-1" },
      result: { ceremony: "cer-1" },
    }));
    on("share_submit", () => ({ accepted: true, threshold: 2, unlocked: false }));
    const user = await renderApp();
    await user.click(screen.getByTestId("tab-all"));
    const c = within(screen.getByTestId("approval-ap1"));
    await user.click(c.getByTestId("execute"));
    expect(callsOf("approval_execute")).toEqual([{ id: "ap1" }]);
    expect(c.getByTestId("execute-result")).toHaveTextContent("Unlock ceremony cer-1 opened");
    await user.click(c.getByTestId("submit-share"));
    expect(callsOf("share_submit")).toEqual([{ approval_id: "ap1" }]);
    expect(c.getByTestId("share-result")).toHaveTextContent("Share accepted · threshold 2 · vault still locked");
    expect(c.queryByTestId("submit-share")).not.toBeInTheDocument();
  });

  it("exports an approved own audit.export to a file", async () => {
    signedIn([
      approval({ operation: "audit.export", params: { filters: { actor: "user:u-bob" } }, status: "approved", own: true, can_decide: false }),
    ]);
    on("audit_export", () => ({ path: "/home/alice/Downloads/keymesh-audit.jsonl", records: 42 }));
    const user = await renderApp();
    const c = within(await screen.findByTestId("approval-ap1"));
    expect(c.getByText("actor=user:u-bob")).toBeInTheDocument();
    await user.click(c.getByTestId("export-file"));
    expect(callsOf("audit_export")).toEqual([{ approval_id: "ap1" }]);
    expect(c.getByTestId("export-result")).toHaveTextContent("Exported 42 records to /home/alice/Downloads/keymesh-audit.jsonl");
  });

  it("creates requests with the server's parameter names", async () => {
    signedIn([]);
    on("approval_create", (a) =>
      approval({ id: "new1", operation: a.operation as string, params: a.params as Record<string, unknown>, own: true, can_decide: false, created_at_ms: NOW }),
    );
    const user = await renderApp();
    await user.selectOptions(screen.getByTestId("request-operation"), "emergency.access");
    await user.click(screen.getByTestId("request-submit"));
    expect(screen.getByTestId("request-problem")).toHaveTextContent("Choose the role");
    await user.selectOptions(screen.getByTestId("request-role"), "admin");
    await user.clear(screen.getByTestId("request-duration"));
    await user.type(screen.getByTestId("request-duration"), "30");
    await user.click(screen.getByTestId("request-submit"));
    expect(screen.getByTestId("request-problem")).toHaveTextContent("A reason is required");
    await user.type(screen.getByTestId("request-reason"), "Incident 42");
    await user.click(screen.getByTestId("request-submit"));
    expect(callsOf("approval_create")).toEqual([
      { operation: "emergency.access", params: { role: "admin", duration_secs: 1800 }, reason: "Incident 42" },
    ]);
    expect(screen.getByTestId("request-result")).toBeInTheDocument();
    expect(within(screen.getByTestId("approval-new1")).getByTestId("own-note")).toBeInTheDocument();

    await user.selectOptions(screen.getByTestId("request-operation"), "vault.unlock");
    await user.type(screen.getByTestId("request-group"), "g-prod");
    await user.type(screen.getByTestId("request-reason"), "Restart");
    await user.click(screen.getByTestId("request-submit"));
    expect(callsOf("approval_create")[1]).toEqual({ operation: "vault.unlock", params: { group: "g-prod" }, reason: "Restart" });
  });
});
