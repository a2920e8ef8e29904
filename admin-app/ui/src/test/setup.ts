import "@testing-library/jest-dom/vitest";
import { afterEach, vi } from "vitest";
import { cleanup } from "@testing-library/react";
import { resetFake } from "./fake";

vi.mock("@tauri-apps/api/core", async () => {
  const f = await import("./fake");
  return { invoke: f.invoke };
});
vi.mock("@tauri-apps/api/event", async () => {
  const f = await import("./fake");
  return { listen: f.listen };
});

afterEach(() => {
  cleanup();
  resetFake();
  vi.useRealTimers();
});
