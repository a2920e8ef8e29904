import { afterEach, describe, expect, it, vi } from "vitest";
import { act, render, screen } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { App } from "../App";
import { normalizeCode } from "../components/Login";
import { callsOf, on, session, status } from "./fake";

function signedOut() {
  on("status", () => status({ session: null }));
  on("approvals_list", () => []);
  on("directory", () => ({ users: [], groups: [], nodes: [] }));
  on("login_start", () => ({ match_code: "417 902", expires_in_secs: 600 }));
  on("login_poll", () => ({ status: "pending" }));
}

describe("login", () => {
  afterEach(() => vi.useRealTimers());

  it("normalizes the mail code", () => {
    expect(normalizeCode("abcd-efgh")).toBe("ABCD-EFGH");
    expect(normalizeCode("abcd efgh")).toBe("ABCD-EFGH");
    expect(normalizeCode("ABCDEFGH")).toBe("ABCD-EFGH");
    expect(normalizeCode("ABC-DEFG")).toBeNull();
  });

  it("start shows the match code; the code from the mail signs in via login_code", async () => {
    signedOut();
    on("login_code", () => session());
    const user = userEvent.setup();
    render(<App />);
    await user.type(await screen.findByTestId("login-email"), "alice@example.org");
    await user.click(screen.getByTestId("login-start"));
    expect(callsOf("login_start")).toEqual([{ email: "alice@example.org" }]);
    expect(await screen.findByTestId("match-code")).toHaveTextContent("417 902");
    expect(screen.getByText(/approve only if they match/)).toBeInTheDocument();
    expect(screen.getByText(/confirm the link in your browser/)).toBeInTheDocument();

    await user.type(screen.getByTestId("login-code-input"), "abcd-efgh");
    await user.click(screen.getByTestId("login-code-submit"));
    expect(callsOf("login_code")).toEqual([{ code: "ABCD-EFGH" }]);
    // Signed in: the shell, on Approvals.
    expect(await screen.findByTestId("signed-in-user")).toHaveTextContent("alice@example.org");
    expect(screen.getByTestId("approvals-list")).toBeInTheDocument();
  });

  it("shows a wrong code clearly", async () => {
    signedOut();
    on("login_code", () => {
      throw { code: "login_code_invalid", message: "wrong code" };
    });
    const user = userEvent.setup();
    render(<App />);
    await user.type(await screen.findByTestId("login-email"), "alice@example.org");
    await user.click(screen.getByTestId("login-start"));
    await user.type(await screen.findByTestId("login-code-input"), "ABCD-EFGH");
    await user.click(screen.getByTestId("login-code-submit"));
    const err = await screen.findByTestId("login-error");
    expect(err).toHaveTextContent("The code is wrong or has expired");
    expect(err).toHaveTextContent("login_code_invalid");
  });

  it("polls login_poll every 2 s and continues to Approvals when complete", async () => {
    vi.useFakeTimers({ shouldAdvanceTime: true });
    signedOut();
    let polls = 0;
    on("login_poll", () => (++polls >= 2 ? { status: "complete", session: session() } : { status: "pending" }));
    const user = userEvent.setup({ advanceTimers: vi.advanceTimersByTime });
    render(<App />);
    await user.type(await screen.findByTestId("login-email"), "alice@example.org");
    await user.click(screen.getByTestId("login-start"));
    await screen.findByTestId("match-code");
    expect(polls).toBe(0);
    await act(() => vi.advanceTimersByTimeAsync(2000));
    expect(polls).toBe(1);
    expect(screen.queryByTestId("signed-in-user")).not.toBeInTheDocument();
    await act(() => vi.advanceTimersByTimeAsync(2000));
    expect(polls).toBe(2);
    expect(await screen.findByTestId("signed-in-user")).toBeInTheDocument();
    expect(screen.getByTestId("approvals-list")).toBeInTheDocument();
    // Polling stopped.
    await act(() => vi.advanceTimersByTimeAsync(6000));
    expect(polls).toBe(2);
  });

  it("a login_start error is shown", async () => {
    signedOut();
    on("login_start", () => {
      throw { code: "unreachable", message: "certificate verify failed" };
    });
    const user = userEvent.setup();
    render(<App />);
    await user.type(await screen.findByTestId("login-email"), "alice@example.org");
    await user.click(screen.getByTestId("login-start"));
    expect(await screen.findByTestId("login-error")).toHaveTextContent("certificate verify failed");
  });
});
