// What the specs share: the server's address and accounts, signing in,
// the WeChat webview's user agent, screenshots for the user guide, and the
// axe-core check (no serious or critical violation).
import { mkdirSync, readFileSync, writeFileSync, existsSync } from "node:fs";
import path from "node:path";

import AxeBuilder from "@axe-core/playwright";
import { expect, type Page } from "@playwright/test";

import zh from "../shared/src/i18n/zh-CN";
import { appsDir, stateFile, type Server } from "./server";

export { zh };

export function server(): Server {
  return JSON.parse(readFileSync(stateFile, "utf8")) as Server;
}

/** What the acceptance flows made, for the screens spec. */
const madeFile = path.join(appsDir, "test-results", "made.json");
export interface Made {
  courseId: string;
  courseTitle: string;
  lessonId: string;
  lessonTitle: string;
}
export function remember(made: Made): void {
  writeFileSync(madeFile, JSON.stringify(made));
}
export function made(): Made | null {
  return existsSync(madeFile) ? (JSON.parse(readFileSync(madeFile, "utf8")) as Made) : null;
}

/** WeChat's in-app browser on an iPhone (its webview adds MicroMessenger). */
export const WECHAT_UA =
  "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 MicroMessenger/8.0.47(0x18002f2c) NetType/WIFI Language/zh_CN";

export const MOBILE = { viewport: { width: 375, height: 812 }, userAgent: WECHAT_UA, isMobile: true, hasTouch: true, deviceScaleFactor: 2 };
export const DESKTOP = { viewport: { width: 1440, height: 900 } };

/** Screenshots the user guide (用户手册) illustrates itself with. */
export const screenshots = path.join(appsDir, "screenshots");

export async function signIn(page: Page, app: "app" | "admin", who: { email: string; password: string }): Promise<void> {
  const { url } = server();
  await page.goto(`${url}/${app}/signin`);
  await page.locator('input[name="email"]').fill(who.email);
  await page.locator('input[name="password"]').fill(who.password);
  await page.locator('button[type="submit"]').click();
  await page.waitForURL((u) => !u.pathname.endsWith("/signin"));
}

/** Fails on any serious or critical axe-core violation of the page as it is now. */
export async function accessible(page: Page, name: string): Promise<void> {
  const results = await new AxeBuilder({ page }).withTags(["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]).analyze();
  const bad = results.violations.filter((v) => v.impact === "serious" || v.impact === "critical");
  const summary = bad.map((v) => `${v.id} (${v.impact}): ${v.help}\n    ${v.nodes.slice(0, 3).map((n) => n.target.join(" ")).join("\n    ")}`);
  expect.soft(summary, `axe-core on ${name}`).toEqual([]);
}

export async function shoot(page: Page, name: string): Promise<void> {
  mkdirSync(screenshots, { recursive: true });
  const width = page.viewportSize()?.width ?? 0;
  await page.screenshot({ path: path.join(screenshots, `${name}-${width}.png`), fullPage: true });
}
