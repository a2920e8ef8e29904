import { describe, expect, it } from "vitest";
import { render, screen } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { App } from "../App";
import { callsOf, on, status } from "./fake";

const unconfigured = status({ configured: false, server_url: null, session: null });

describe("first run", () => {
  it("requires the management URL and validates the scheme before calling configure", async () => {
    on("status", () => unconfigured);
    const user = userEvent.setup();
    render(<App />);
    await screen.findByTestId("server-url");
    expect(screen.getByText(/TLS certificates are always verified/)).toBeInTheDocument();

    await user.click(screen.getByTestId("save-settings"));
    expect(screen.getByText("The management server URL is required.")).toBeInTheDocument();

    await user.type(screen.getByTestId("server-url"), "http://mgmt.example.org");
    await user.click(screen.getByTestId("save-settings"));
    expect(screen.getByText(/http is allowed only for localhost/)).toBeInTheDocument();

    await user.clear(screen.getByTestId("server-url"));
    await user.type(screen.getByTestId("server-url"), "https://mgmt.example.org");
    await user.type(screen.getByTestId("relay-url"), "not a url");
    await user.click(screen.getByTestId("save-settings"));
    expect(screen.getByText(/Not a valid URL/)).toBeInTheDocument();
    expect(callsOf("configure")).toHaveLength(0);
  });

  it("calls configure with snake_case keys, omits empty optional URLs, then shows sign-in", async () => {
    on("status", () => unconfigured);
    on("configure", (a) => status({ server_url: a.server_url as string, session: null }));
    const user = userEvent.setup();
    render(<App />);
    await user.type(await screen.findByTestId("server-url"), "https://mgmt.example.org");
    await user.type(screen.getByTestId("relay-url"), "http://127.0.0.1:8443");
    await user.click(screen.getByTestId("save-settings"));
    expect(callsOf("configure")).toEqual([
      { server_url: "https://mgmt.example.org", relay_url: "http://127.0.0.1:8443" },
    ]);
    expect(await screen.findByTestId("login-email")).toBeInTheDocument();
  });

  it("shows the server's error when configure fails", async () => {
    on("status", () => unconfigured);
    on("configure", () => {
      throw { code: "invalid_input", message: "server_url must be https" };
    });
    const user = userEvent.setup();
    render(<App />);
    await user.type(await screen.findByTestId("server-url"), "https://x.example.org");
    await user.click(screen.getByTestId("save-settings"));
    expect(await screen.findByTestId("setup-error")).toHaveTextContent("server_url must be https");
  });
});

describe("local store", () => {
  const locked = (initialized: boolean) =>
    status({ session: null, store: { kind: "file", locked: true, initialized } });

  it("creating the store asks twice, needs 12 characters and a match before unlock_store", async () => {
    on("status", () => locked(false));
    on("unlock_store", () => status({ session: null, store: { kind: "file", locked: false, initialized: true } }));
    const user = userEvent.setup();
    render(<App />);
    await screen.findByTestId("store-passphrase-confirm");
    expect(screen.getByText(/Create the local encrypted store/)).toBeInTheDocument();

    await user.type(screen.getByTestId("store-passphrase"), "short");
    await user.type(screen.getByTestId("store-passphrase-confirm"), "short");
    await user.click(screen.getByTestId("unlock-store"));
    expect(screen.getByTestId("unlock-problem")).toHaveTextContent("at least 12");

    await user.clear(screen.getByTestId("store-passphrase"));
    await user.type(screen.getByTestId("store-passphrase"), "correct horse battery");
    await user.clear(screen.getByTestId("store-passphrase-confirm"));
    await user.type(screen.getByTestId("store-passphrase-confirm"), "correct horse batterY");
    await user.click(screen.getByTestId("unlock-store"));
    expect(screen.getByTestId("unlock-problem")).toHaveTextContent("do not match");
    expect(callsOf("unlock_store")).toHaveLength(0);

    await user.clear(screen.getByTestId("store-passphrase-confirm"));
    await user.type(screen.getByTestId("store-passphrase-confirm"), "correct horse battery");
    await user.click(screen.getByTestId("unlock-store"));
    expect(callsOf("unlock_store")).toEqual([{ passphrase: "correct horse battery" }]);
    expect(await screen.findByTestId("login-email")).toBeInTheDocument();
  });

  it("an existing store asks once and shows a wrong passphrase", async () => {
    on("status", () => locked(true));
    on("unlock_store", () => {
      throw { code: "store_passphrase_wrong", message: "" };
    });
    const user = userEvent.setup();
    render(<App />);
    await user.type(await screen.findByTestId("store-passphrase"), "whatever it is");
    expect(screen.queryByTestId("store-passphrase-confirm")).not.toBeInTheDocument();
    await user.click(screen.getByTestId("unlock-store"));
    expect(await screen.findByTestId("unlock-error")).toHaveTextContent("Wrong passphrase");
  });
});
