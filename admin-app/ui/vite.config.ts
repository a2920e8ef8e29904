/// <reference types="vitest/config" />
import { defineConfig } from "vite";

// The app runs inside the Tauri web view under a strict CSP (script-src 'self',
// style-src 'self'): everything is bundled into files, nothing inline, nothing remote.
export default defineConfig({
  base: "./",
  clearScreen: false,
  oxc: {
    jsx: { runtime: "automatic", importSource: "react" },
  },
  server: {
    port: 1420,
    strictPort: true,
  },
  build: {
    outDir: "dist",
    emptyOutDir: true,
    target: "es2022",
    sourcemap: false,
    // Never inline assets as data: URLs for scripts/styles; images may be data: (CSP img-src).
    assetsInlineLimit: 0,
    cssCodeSplit: false,
  },
  test: {
    environment: "jsdom",
    setupFiles: ["./src/test/setup.ts"],
    include: ["src/**/*.test.{ts,tsx}"],
    // A hang still fails, but a busy 2-core machine (a cargo build beside the tests) can take
    // more than vitest's default 5 s for a test that types into several fields: seen failing.
    testTimeout: 30_000,
  },
});
