import { describe, expect, it } from "vitest";
import { render, screen, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { App } from "../App";
import type { Directory } from "../ipc";
import { callsOf, on, status } from "./fake";

const DIR: Directory = {
  users: [
    { id: "u-bob", email: "bob@example.org", role: "member", created_at_ms: 0, disabled_at_ms: null },
    { id: "u-carol", email: "carol@example.org", role: "admin", created_at_ms: 0, disabled_at_ms: null },
  ],
  groups: [
    { id: "g-prod", node_ceiling: "secrets:read", created_at_ms: 0 },
    { id: "g-dev", node_ceiling: "secrets:read", created_at_ms: 0 },
  ],
  nodes: [
    { id: "n-web1", group_id: "g-prod", user_id: "u-bob", ceiling: "secrets:read", enrolled_at_ms: 0, disabled_at_ms: null },
    { id: "n-ci", group_id: "g-dev", user_id: "u-carol", ceiling: "secrets:read", enrolled_at_ms: 0, disabled_at_ms: null },
  ],
};

async function openIncident() {
  on("status", () => status());
  on("approvals_list", () => []);
  on("directory", () => DIR);
  const user = userEvent.setup();
  render(<App />);
  await user.click(await screen.findByTestId("nav-incident"));
  await screen.findByTestId("result-user-u-bob");
  return user;
}

describe("incident response", () => {
  it("search filters users by email, nodes by group/user and groups by id", async () => {
    const user = await openIncident();
    await user.type(screen.getByTestId("directory-search"), "bob");
    expect(screen.getByTestId("result-user-u-bob")).toBeInTheDocument();
    expect(screen.queryByTestId("result-user-u-carol")).not.toBeInTheDocument();
    expect(screen.getByTestId("result-node-n-web1")).toBeInTheDocument(); // user u-bob
    expect(screen.queryByTestId("result-node-n-ci")).not.toBeInTheDocument();
    expect(screen.queryByTestId("result-group-g-prod")).not.toBeInTheDocument();

    await user.clear(screen.getByTestId("directory-search"));
    await user.type(screen.getByTestId("directory-search"), "g-prod");
    expect(screen.getByTestId("result-group-g-prod")).toBeInTheDocument();
    expect(screen.getByTestId("result-node-n-web1")).toBeInTheDocument();
    expect(screen.queryByTestId("result-group-g-dev")).not.toBeInTheDocument();
    expect(screen.queryByTestId("result-user-u-bob")).not.toBeInTheDocument();
  });

  it("revoke needs a confirmation with a reason; the result shows epoch, feed seq and propagation", async () => {
    on("revoke_tokens", () => ({ scope: "user", subject: "u-bob", feed_seq: 812, epoch: 7, propagated_ms: 143 }));
    const user = await openIncident();
    await user.click(within(screen.getByTestId("result-user-u-bob")).getByTestId("revoke-tokens"));
    expect(callsOf("revoke_tokens")).toHaveLength(0);
    const panel = screen.getByTestId("confirm-panel");
    expect(panel).toHaveTextContent("Revoke all tokens of user bob@example.org");
    expect(panel).toHaveTextContent("Every token of every node of this user (1 node)");
    await user.click(screen.getByTestId("confirm-action"));
    expect(screen.getByText("A reason is required.")).toBeInTheDocument();
    expect(callsOf("revoke_tokens")).toHaveLength(0);

    await user.type(screen.getByTestId("confirm-reason"), "Laptop stolen");
    await user.click(screen.getByTestId("confirm-action"));
    expect(callsOf("revoke_tokens")).toEqual([{ scope: "user", id: "u-bob", reason: "Laptop stolen" }]);
    expect(await screen.findByTestId("action-result")).toHaveTextContent(
      "Revoked: epoch 7, feed seq 812, propagated in 143 ms",
    );
  });

  it("says when propagation was not confirmed", async () => {
    on("revoke_tokens", () => ({ scope: "node", subject: "n-web1", feed_seq: 9, epoch: 3, propagated_ms: null }));
    const user = await openIncident();
    await user.click(within(screen.getByTestId("result-node-n-web1")).getByTestId("revoke-tokens"));
    await user.type(screen.getByTestId("confirm-reason"), "Compromised");
    await user.click(screen.getByTestId("confirm-action"));
    expect(callsOf("revoke_tokens")).toEqual([{ scope: "node", id: "n-web1", reason: "Compromised" }]);
    expect(await screen.findByTestId("action-result")).toHaveTextContent(
      "Revoked: epoch 3, feed seq 9, not confirmed within 5 s",
    );
  });

  it("cancel closes the panel without calling anything", async () => {
    const user = await openIncident();
    await user.click(within(screen.getByTestId("result-group-g-prod")).getByTestId("lock-vault"));
    expect(screen.getByTestId("confirm-panel")).toHaveTextContent("Lock the vault of group g-prod");
    await user.click(screen.getByTestId("cancel-action"));
    expect(screen.queryByTestId("confirm-panel")).not.toBeInTheDocument();
    expect(callsOf("lock_vault")).toHaveLength(0);
  });

  it("disable user, disable node and lock vault call their commands", async () => {
    on("disable_user", () => ({}));
    on("disable_node", () => ({}));
    on("lock_vault", () => ({ locked: true, was_unlocked: true }));
    const user = await openIncident();
    await user.click(within(screen.getByTestId("result-user-u-carol")).getByTestId("disable-user"));
    await user.type(screen.getByTestId("confirm-reason"), "r1");
    await user.click(screen.getByTestId("confirm-action"));
    expect(callsOf("disable_user")).toEqual([{ id: "u-carol", reason: "r1" }]);
    expect(await screen.findByTestId("action-result")).toHaveTextContent("User carol@example.org disabled.");

    await user.click(within(screen.getByTestId("result-node-n-ci")).getByTestId("disable-node"));
    await user.type(screen.getByTestId("confirm-reason"), "r2");
    await user.click(screen.getByTestId("confirm-action"));
    expect(callsOf("disable_node")).toEqual([{ id: "n-ci", reason: "r2" }]);

    await user.click(within(screen.getByTestId("result-group-g-dev")).getByTestId("lock-vault"));
    await user.type(screen.getByTestId("confirm-reason"), "r3");
    await user.click(screen.getByTestId("confirm-action"));
    expect(callsOf("lock_vault")).toEqual([{ group: "g-dev", reason: "r3" }]);
    expect(await screen.findByTestId("action-result")).toHaveTextContent("Vault of group g-dev locked.");
  });

  it("shows a refused action in the panel", async () => {
    on("revoke_tokens", () => {
      throw { code: "forbidden", message: "tokens:revoke required" };
    });
    const user = await openIncident();
    await user.click(within(screen.getByTestId("result-group-g-prod")).getByTestId("revoke-tokens"));
    await user.type(screen.getByTestId("confirm-reason"), "x");
    await user.click(screen.getByTestId("confirm-action"));
    expect(await screen.findByTestId("action-error")).toHaveTextContent("Your role does not allow this action.");
  });
});
