// The H5 app inside a WeChat mini-program's `web-view` (issues #19 and
// #23). WeChat's mini-program runtime CANNOT run here — it exists only in
// the WeChat app and WeChat DevTools — so the mini-program's own JS
// (apps/miniprogram, unchanged) runs under Node in miniprogram-runtime.ts,
// whose `wx.request` is real HTTP to this run's real Lectern and whose
// `wx.login` gets a code from the WeChat stand-in (wechat-standin.ts: the
// jscode2session exchange Lectern makes is answered as WeChat documents
// it). The URL the page would give its `<web-view>` is then opened in
// Chromium as a mini-program's web-view presents itself (its user agent,
// `window.__wxjs_environment = "miniprogram"`, 375×812).
import { createHmac } from "node:crypto";
import { existsSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import path from "node:path";

import { expect, test, type Browser, type BrowserContext } from "@playwright/test";

import { server, zh } from "./helpers";
import { MiniProgram, miniprogramDir } from "./miniprogram-runtime";
import { appsDir, psql } from "./server";

/** A mini-program's web-view on an iPhone: WeChat's UA plus `miniProgram/<appid>`. */
const MINI_PROGRAM_UA =
  "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 MicroMessenger/8.0.47(0x18002f2c) NetType/WIFI Language/zh_CN miniProgram/wx1ec7e4000000e2e0";
/** What a web-view refuses, or what would leave it: the WeChat official account's authorisation. */
const OAUTH = /open\.weixin\.qq\.com|\/api\/v1\/auth\/wechat\/[^/]+\/authorize/;

/** TOTP (RFC 6238, SHA-1, 6 digits, 30 s) of a base32 secret at `at` ms. */
function totp(secret: string, at: number): string {
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
  const bits = [...secret.replace(/=+$/, "").toUpperCase()].map((c) => alphabet.indexOf(c).toString(2).padStart(5, "0")).join("");
  const key = Buffer.from(bits.match(/.{8}/g)!.map((b) => parseInt(b, 2)));
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(Math.floor(at / 30_000)));
  const mac = createHmac("sha1", key).update(counter).digest();
  const offset = mac[mac.length - 1]! & 0xf;
  return ((mac.readUInt32BE(offset) & 0x7fffffff) % 1_000_000).toString().padStart(6, "0");
}

async function call(method: string, url: string, token?: string, body?: unknown): Promise<{ status: number; body: Record<string, unknown> }> {
  const headers: Record<string, string> = { accept: "application/json" };
  if (token) headers.authorization = `Bearer ${token}`;
  if (body !== undefined) headers["content-type"] = "application/json";
  const r = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await r.text();
  return { status: r.status, body: text ? (JSON.parse(text) as Record<string, unknown>) : {} };
}

async function webView(browser: Browser): Promise<{ context: BrowserContext; requests: string[] }> {
  const context = await browser.newContext({
    viewport: { width: 375, height: 812 },
    userAgent: MINI_PROGRAM_UA,
    isMobile: true,
    hasTouch: true,
    deviceScaleFactor: 2,
    locale: "zh-CN",
  });
  await context.addInitScript(() => {
    const w = window as unknown as Record<string, unknown>;
    // What WeChat's web-view sets before the page's scripts run.
    w.__wxjs_environment = "miniprogram";
    // What a web-view blocks: recorded, so the test sees any use.
    const blocked: string[] = [];
    w.__blocked = blocked;
    for (const name of ["open", "alert", "confirm", "prompt", "print"]) {
      w[name] = () => {
        blocked.push(name);
        return null;
      };
    }
    const click = HTMLAnchorElement.prototype.click;
    HTMLAnchorElement.prototype.click = function (this: HTMLAnchorElement) {
      if (this.hasAttribute("download")) blocked.push("a[download]");
      return click.call(this);
    };
  });
  const requests: string[] = [];
  context.on("request", (r) => requests.push(r.url()));
  return { context, requests };
}

let org = "";
let previousPolicy = "";

test.describe("the mini-program's web-view", () => {
  test.beforeAll(async () => {
    const s = server();
    org = psql(s.dbUrl, "SELECT id FROM organisations WHERE name = 'Lectern Demo'");
    // WeChat sign-in allowed, first sign-in makes a learner (restored after).
    previousPolicy = psql(s.dbUrl, `SELECT methods::text || '|' || new_accounts FROM sign_in_policies WHERE org_id = '${org}'`);
    psql(
      s.dbUrl,
      `INSERT INTO sign_in_policies (org_id, methods, new_accounts) VALUES ('${org}', '{wechat}', 'just_in_time')
       ON CONFLICT (org_id) DO UPDATE SET methods = ARRAY(SELECT DISTINCT unnest(sign_in_policies.methods || '{wechat}'::text[])), new_accounts = 'just_in_time'`,
    );
    // The organisation registers its mini-program, as a super admin does:
    // a critical operation, so an authenticator and a step-up first. Once
    // per server: a retry's new worker finds the authenticator enrolled.
    const registered = path.join(appsDir, "test-results", "wechat-app-registered");
    if (existsSync(registered) && readFileSync(registered, "utf8") === s.url) return;
    const admin = s.signInAdmin;
    const login = await call("POST", `${s.url}/api/v1/auth/login`, undefined, admin);
    expect(login.status, JSON.stringify(login.body)).toBe(200);
    const token = login.body.token as string;
    const enrol = await call("POST", `${s.url}/api/v1/me/totp`, token, { password: admin.password });
    expect(enrol.status, JSON.stringify(enrol.body)).toBe(200);
    const secret = enrol.body.secret as string;
    const now = Date.now();
    expect((await call("POST", `${s.url}/api/v1/me/totp/confirm`, token, { code: totp(secret, now) })).status).toBeLessThan(300);
    // The next time step (each step's code works once; one step of drift is allowed).
    const stepUp = await call("POST", `${s.url}/api/v1/auth/step-up`, token, { totp: totp(secret, now + 30_000) });
    expect(stepUp.status, JSON.stringify(stepUp.body)).toBe(200);
    const app = await call("PUT", `${s.url}/api/v1/organisations/${org}/wechat-apps/${s.wechat.appid}`, token, { kind: "mini_program", secret: s.wechat.secret });
    expect(app.status, JSON.stringify(app.body)).toBe(200);
    writeFileSync(registered, s.url);
  });

  test.afterAll(() => {
    const s = server();
    if (!org) return;
    if (!previousPolicy) {
      psql(s.dbUrl, `DELETE FROM sign_in_policies WHERE org_id = '${org}'`);
    } else {
      const [methods, accounts] = previousPolicy.split("|");
      psql(s.dbUrl, `UPDATE sign_in_policies SET methods = '${methods}', new_accounts = '${accounts}' WHERE org_id = '${org}'`);
    }
  });

  test("wx.login signs the mini-program in, its web-view opens the H5 signed in once, and a replay does not", async ({ browser }) => {
    const s = server();
    const mp = new MiniProgram({
      config: { apiBase: s.url, h5Url: `${s.url}/app/`, orgId: org },
      appid: s.wechat.appid,
      wechat: s.wechat.url,
      who: "doctor-li",
    });
    mp.launch();
    const index = await mp.until((p) => p.route === "pages/index/index" && !!p.data.url);
    const url = String(index.data.url);
    // The code rides in the fragment, which no server or proxy log sees.
    expect(url).toMatch(new RegExp(`^${s.url}/app/#handoff=lh_[A-Za-z0-9_-]{40,}&org=${org}$`));
    const code = /handoff=([^&]+)/.exec(url)![1]!;
    expect(mp.calls).toEqual(expect.arrayContaining(["wx.login", "POST /api/v1/auth/wechat/mini-program", "POST /api/v1/auth/handoff"]));
    // …and the page's template hands exactly that URL to its web-view.
    expect(readFileSync(path.join(miniprogramDir, "pages/index/index.wxml"), "utf8")).toMatch(/<web-view[^>]*\bsrc="\{\{url\}\}"/);
    const miniUser = (mp.globalData.user as { id: string; org_id: string; role: string } | null)!;
    expect(miniUser).toMatchObject({ org_id: org, role: "learner" });

    const { context, requests } = await webView(browser);
    const page = await context.newPage();
    await page.goto(url);
    await expect(page.getByRole("tablist", { name: zh.learner.tabs.label })).toBeVisible();
    // Signed in as the mini-program's person, on the home screen, the
    // code gone from the address (and from history).
    expect(new URL(page.url()).pathname).toBe("/app/");
    expect(page.url()).not.toContain("handoff");
    expect(await page.evaluate(() => location.hash)).toBe("");
    const me = await page.evaluate(() => fetch("/api/v1/me").then((r) => r.json() as Promise<{ id: string; kind: string }>));
    expect(me).toMatchObject({ kind: "user", id: miniUser.id });
    // The session is the HttpOnly cookie: nothing a script can read.
    expect(await page.evaluate(() => document.cookie)).not.toContain("ls_");

    // Around the screens: nothing a web-view blocks, no OAuth redirect.
    for (const screen of ["/app/search", "/app/disciplines", "/app/me", "/app/"]) {
      await page.goto(`${s.url}${screen}`);
      await expect(page.getByRole("tablist", { name: zh.learner.tabs.label })).toBeVisible();
      expect(await page.locator("a[download], a[target=_blank]").count(), screen).toBe(0);
    }
    expect(await page.evaluate(() => (window as unknown as { __blocked: string[] }).__blocked)).toEqual([]);
    expect(requests.filter((r) => OAUTH.test(r))).toEqual([]);
    await context.close();

    // The same URL again (a shared link, a replay): not signed in, told why.
    const replay = await webView(browser);
    const again = await replay.context.newPage();
    await again.goto(url);
    await again.waitForURL((u) => u.pathname === "/app/signin");
    await expect(again.getByText(zh.errors.handoff_used)).toBeVisible();
    expect(again.url()).not.toContain("handoff=");
    const status = await again.evaluate(() => fetch("/api/v1/me").then((r) => r.status));
    expect(status).toBe(401);
    expect(replay.requests.filter((r) => OAUTH.test(r))).toEqual([]);
    await replay.context.close();

    // The code reached no log.
    expect(readFileSync(path.join(appsDir, "test-results", "lectern-demo.log"), "utf8")).not.toContain(code);
  });

  test("a failure shows the mini-program's error page, in Chinese and English", async () => {
    const s = server();
    // An app id the organisation never registered.
    const mp = new MiniProgram({ config: { apiBase: s.url, h5Url: `${s.url}/app/` }, appid: "wx00000000000000ff", wechat: s.wechat.url, who: "doctor-wang" });
    mp.launch();
    const error = await mp.until((p) => p.route === "pages/error/error");
    const messages = mp.require("pages/error/messages.js") as Record<string, [string, string]>;
    expect(error.data).toEqual({ code: "provider_not_configured", zh: messages.provider_not_configured![0], en: messages.provider_not_configured![1] });
    // Trying again starts over with a fresh wx.login.
    (error.retry as () => void).call(error);
    await mp.until((p) => p.route === "pages/error/error" && mp.calls.filter((c) => c === "wx.login").length === 2);
  });

  test("the H5's sources use nothing a web-view blocks outside a mini-program check", () => {
    // What a web-view refuses: new windows, native dialogs, downloads.
    const blocked = /window\.(open|alert|confirm|prompt|print)\b|(^|[^\w.])(alert|prompt)\(|\.download\s*=|\sdownload(=|\s|>)|target="_blank"/;
    const offenders: string[] = [];
    const walk = (dir: string) => {
      for (const name of readdirSync(dir)) {
        const full = path.join(dir, name);
        if (statSync(full).isDirectory()) {
          if (name !== "generated" && name !== "i18n") walk(full);
          continue;
        }
        if (!/\.(ts|vue)$/.test(name) || name === "handoff.ts") continue;
        const text = readFileSync(full, "utf8");
        // A file that uses one must also branch on inMiniProgram().
        if (text.includes("inMiniProgram()")) continue;
        text.split("\n").forEach((line, i) => {
          if (!line.trim().startsWith("//") && blocked.test(line)) offenders.push(`${path.relative(appsDir, full)}:${i + 1}: ${line.trim()}`);
        });
      }
    };
    walk(path.join(appsDir, "learner/src"));
    walk(path.join(appsDir, "shared/src"));
    expect(offenders).toEqual([]);
  });
});
