// Every screen of both apps at 375 px (a phone, WeChat's webview) and at
// 1440 px (a desktop): a full-page screenshot for the user guide
// (apps/screenshots/<screen>-<width>.png) and axe-core with no serious or
// critical violation. Runs after the acceptance flows, so there is a
// published course with lessons and history to show.
import { expect, test, type Browser } from "@playwright/test";

import { accessible, DESKTOP, made, MOBILE, server, shoot, signIn } from "./helpers";

interface Screen {
  name: string;
  path: string;
  who: "anonymous" | "learner" | "superAdmin";
}

/** A sign-in screen for the organisation with every way in (none when the server predates it). */
function signInWays(name: string, path: string): Screen[] {
  const org = server().ways?.orgId;
  return org ? [{ name, path: `${path}?org=${org}`, who: "anonymous" }] : [];
}

function screens(): Screen[] {
  const m = made();
  const course = m ? [
    { name: "learner-course", path: `/app/courses/${m.courseId}`, who: "learner" as const },
    { name: "learner-lesson", path: `/app/courses/${m.courseId}/lessons/${m.lessonId}`, who: "learner" as const },
    { name: "admin-course", path: `/admin/courses/${m.courseId}`, who: "superAdmin" as const },
  ] : [];
  return [
    { name: "learner-signin", path: "/app/signin", who: "anonymous" },
    // With an organisation that allows SMS, its directory and its OpenID provider (signin.spec.ts configures it).
    ...signInWays("learner-signin-ways", "/app/signin"),
    { name: "learner-invitation", path: "/app/invitation?token=example", who: "anonymous" },
    { name: "learner-signup", path: "/app/signup?org=00000000-0000-0000-0000-000000000000", who: "anonymous" },
    { name: "learner-signup-confirm", path: "/app/signup/confirm?token=example", who: "anonymous" },
    { name: "learner-home", path: "/app/", who: "learner" },
    { name: "learner-disciplines", path: "/app/disciplines", who: "learner" },
    { name: "learner-search", path: "/app/search?q=%E5%BF%83%E7%94%B5%E5%9B%BE", who: "learner" },
    { name: "learner-me", path: "/app/me", who: "learner" },
    { name: "learner-security", path: "/app/me/security", who: "learner" },
    { name: "learner-inbox", path: "/app/me/inbox", who: "learner" },
    { name: "learner-not-found", path: "/app/no-such-page", who: "anonymous" },
    { name: "admin-signin", path: "/admin/signin", who: "anonymous" },
    ...signInWays("admin-signin-ways", "/admin/signin"),
    { name: "admin-dashboard", path: "/admin/", who: "superAdmin" },
    { name: "admin-reports", path: "/admin/reports", who: "superAdmin" },
    { name: "admin-moderation", path: "/admin/moderation", who: "superAdmin" },
    { name: "admin-credits", path: "/admin/credits", who: "superAdmin" },
    { name: "admin-invitations", path: "/admin/invitations", who: "superAdmin" },
    { name: "admin-assets", path: "/admin/assets", who: "superAdmin" },
    { name: "admin-courses", path: "/admin/courses", who: "superAdmin" },
    { name: "admin-disciplines", path: "/admin/disciplines", who: "superAdmin" },
    { name: "admin-experts", path: "/admin/experts", who: "superAdmin" },
    { name: "admin-users", path: "/admin/users", who: "superAdmin" },
    { name: "admin-webhooks", path: "/admin/webhooks", who: "superAdmin" },
    { name: "admin-audit", path: "/admin/audit", who: "superAdmin" },
    { name: "admin-settings", path: "/admin/settings", who: "superAdmin" },
    { name: "admin-not-found", path: "/admin/no-such-page", who: "superAdmin" },
    ...course,
  ];
}

async function contextFor(browser: Browser, mobile: boolean, who: Screen["who"]) {
  const context = await browser.newContext(mobile ? MOBILE : DESKTOP);
  if (who !== "anonymous") {
    const page = await context.newPage();
    const s = server();
    await signIn(page, who === "learner" ? "app" : "admin", who === "learner" ? s.learner : s.superAdmin);
    await page.close();
  }
  return context;
}

for (const mobile of [true, false]) {
  test(`every screen at ${mobile ? 375 : 1440} px: screenshot and axe`, async ({ browser }) => {
    const { url } = server();
    const contexts = new Map<Screen["who"], Awaited<ReturnType<typeof contextFor>>>();
    for (const screen of screens()) {
      if (!contexts.has(screen.who)) contexts.set(screen.who, await contextFor(browser, mobile, screen.who));
      const page = await contexts.get(screen.who)!.newPage();
      const errors: string[] = [];
      page.on("pageerror", (e) => errors.push(e.message));
      page.on("console", (m) => {
        // A CSP refusal is a bug of ours: the policy is part of the product.
        if (m.type() === "error" && /Content Security Policy/i.test(m.text())) errors.push(m.text());
      });
      const response = await page.goto(url + screen.path);
      // Soft: one screen's failure does not hide the others'.
      expect.soft(response?.status(), screen.path).toBe(200);
      expect.soft(response?.headers()["content-security-policy"]).toContain("script-src 'self'");
      await page.waitForLoadState("networkidle");
      await expect.soft(page.locator("h1").first(), `${screen.path} has a heading`).toBeAttached();
      // Let transitions (toasts, drawers) settle before the picture.
      await page.waitForTimeout(300);
      await shoot(page, screen.name);
      await accessible(page, `${screen.name} at ${mobile ? 375 : 1440} px`);
      expect.soft(errors, `${screen.path}: page errors`).toEqual([]);
      await page.close();
    }
    for (const context of contexts.values()) await context.close();
  });
}
