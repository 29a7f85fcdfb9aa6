// benchmarks/apps: Largest Contentful Paint of the learner app under
// throttled mobile networks, in Debian's chromium, against `lectern demo`
// (started by the apps' own e2e global setup) and, as the baseline in the
// same run, nginx serving the same built files (API proxied to the demo).
// Run with `benchmarks/apps/run`, not by `make test`.
import { defineConfig } from "@playwright/test";

export default defineConfig({
  testDir: ".",
  testMatch: "*.bench.ts",
  globalSetup: "../e2e/global-setup.ts",
  workers: 1,
  timeout: 20 * 60_000,
  reporter: [["list"]],
  outputDir: "../test-results/bench",
  use: {
    launchOptions: {
      executablePath: process.env.CHROMIUM_PATH ?? "/usr/bin/chromium",
      args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
    },
    locale: "zh-CN",
  },
});
