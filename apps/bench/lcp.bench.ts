// LCP of the learner app's first screens, cold (no HTTP cache), under the
// network and CPU throttling Lighthouse uses for mobile ("slow 4G": 150 ms
// RTT, 1.6 Mbps down, 750 kbps up, CPU 4× slower) and under a typical
// 4G (40 ms RTT, 9 Mbps down, 1.5 Mbps up, no CPU slowdown), at 375 px
// in WeChat's user agent. Each page is loaded RUNS times per server:
// `lectern serve` (the demo) and nginx serving the same dist files with
// gzip_static (the baseline; /api and /media proxied to the demo), so the
// ratio isolates how Lectern serves the app from what the app itself costs.
// Prints a Markdown table for benchmarks/RESULTS.md.
import { execFileSync, spawn } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { createServer, type AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";

import { test, type Browser, type Page } from "@playwright/test";

import { MOBILE, server } from "../e2e/helpers";
import { appsDir } from "../e2e/server";

const RUNS = Number(process.env.LCP_RUNS ?? 7);

const PROFILES = {
  "slow 4G (Lighthouse mobile)": { latency: 150, down: 1.6e6, up: 750e3, cpu: 4 },
  "4G": { latency: 40, down: 9e6, up: 1.5e6, cpu: 1 },
};

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address() as AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

/** nginx with the learner app's dist at /app/ (SPA fallback), the rest proxied to `origin`. */
async function nginxBaseline(origin: string): Promise<{ url: string; stop: () => void }> {
  const dir = mkdtempSync(path.join(tmpdir(), "lectern-lcp-nginx-"));
  const port = await freePort();
  const dist = path.join(appsDir, "learner", "dist");
  writeFileSync(
    path.join(dir, "nginx.conf"),
    `pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
worker_processes 1;
events {}
http {
  access_log off;
  include /etc/nginx/mime.types;
  client_body_temp_path ${dir}/tmp; proxy_temp_path ${dir}/tmp;
  fastcgi_temp_path ${dir}/tmp; uwsgi_temp_path ${dir}/tmp; scgi_temp_path ${dir}/tmp;
  server {
    listen 127.0.0.1:${port};
    gzip_static on;
    location /app/assets/ { alias ${dist}/assets/; add_header Cache-Control "public, max-age=31536000, immutable"; }
    location /app/ { alias ${dist}/; try_files $uri /app/index.html; add_header Cache-Control "no-cache"; }
    location = /app/index.html { alias ${dist}/index.html; add_header Cache-Control "no-cache"; }
    location / { proxy_pass ${origin}; proxy_set_header Host $host; }
  }
}
`,
  );
  execFileSync("mkdir", ["-p", path.join(dir, "tmp")]);
  const child = spawn("nginx", ["-p", dir, "-c", path.join(dir, "nginx.conf"), "-g", "daemon off;"], { stdio: "ignore" });
  const url = `http://127.0.0.1:${port}`;
  for (let i = 0; i < 100; i++) {
    try {
      await fetch(`${url}/app/`);
      break;
    } catch {
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  return { url, stop: () => child.kill("SIGTERM") };
}

/** One cold load of `url` in `page` under `profile`; its LCP in ms. */
async function lcp(page: Page, url: string, profile: (typeof PROFILES)[keyof typeof PROFILES]): Promise<number> {
  const cdp = await page.context().newCDPSession(page);
  await cdp.send("Network.enable");
  await cdp.send("Network.setCacheDisabled", { cacheDisabled: true });
  await cdp.send("Network.emulateNetworkConditions", {
    offline: false,
    latency: profile.latency,
    downloadThroughput: profile.down / 8,
    uploadThroughput: profile.up / 8,
  });
  await cdp.send("Emulation.setCPUThrottlingRate", { rate: profile.cpu });
  await page.goto(url, { waitUntil: "load" });
  // The last largest-contentful-paint entry once the page has settled.
  const value = await page.evaluate(
    () =>
      new Promise<number>((resolve) => {
        let last = 0;
        new PerformanceObserver((list) => {
          for (const e of list.getEntries()) last = e.startTime;
        }).observe({ type: "largest-contentful-paint", buffered: true });
        setTimeout(() => resolve(last), 3000);
      }),
  );
  await cdp.detach();
  return value;
}

function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(p * (s.length - 1) + 0.5))]!;
}

async function signedInContext(browser: Browser, base: string) {
  const context = await browser.newContext(MOBILE);
  const page = await context.newPage();
  const s = server();
  await page.goto(`${base}/app/signin`);
  await page.locator('input[name="email"]').fill(s.learner.email);
  await page.locator('input[name="password"]').fill(s.learner.password);
  await page.locator('button[type="submit"]').click();
  await page.waitForURL((u) => !u.pathname.endsWith("/signin"));
  await page.close();
  return context;
}

test("LCP of the learner app under throttled mobile networks", async ({ browser }) => {
  const demo = server().url;
  const baseline = await nginxBaseline(demo);
  const rows: string[] = [];
  try {
    for (const [name, profile] of Object.entries(PROFILES)) {
      for (const [screen, pathname, signedIn] of [
        ["sign-in (anonymous)", "/app/signin", false],
        ["home (signed in)", "/app/", true],
      ] as const) {
        const figures: Record<string, number[]> = {};
        for (const [server, base] of [["lectern", demo], ["nginx", baseline.url]] as const) {
          const context = signedIn ? await signedInContext(browser, base) : await browser.newContext(MOBILE);
          figures[server] = [];
          for (let i = 0; i < RUNS; i++) {
            const page = await context.newPage();
            figures[server]!.push(await lcp(page, `${base}${pathname}`, profile));
            await page.close();
          }
          await context.close();
        }
        const [l, n] = [figures.lectern!, figures.nginx!];
        rows.push(
          `| ${name} | ${screen} | ${pct(l, 0.5).toFixed(0)} | ${pct(l, 0.95).toFixed(0)} | ${pct(n, 0.5).toFixed(0)} | ${pct(n, 0.95).toFixed(0)} | ${(pct(n, 0.5) / pct(l, 0.5)).toFixed(2)}× |`,
        );
        console.log(rows.at(-1));
      }
    }
  } finally {
    baseline.stop();
  }
  console.log(
    `\n| network | screen | lectern LCP p50 ms | p95 ms | nginx LCP p50 ms | p95 ms | nginx ÷ lectern |\n| --- | --- | ---: | ---: | ---: | ---: | ---: |\n${rows.join("\n")}\n\n(${RUNS} cold loads each, 375 px, WeChat user agent)`,
  );
});
