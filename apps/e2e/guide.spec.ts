// The user guide's pictures (docs/guide/{zh-CN,en}.md): the screens a
// learner, an expert and a content admin work with, filled with what the
// earlier specs made (a comment, a review, a moderated comment), the
// learner app at 375 px in a WeChat webview and the console at 1440 px,
// in Chinese and in English. Written to apps/screenshots/guide/ (each run
// anew); `LECTERN_GUIDE_IMG=../docs/guide/img npm run test:e2e -- guide`
// refreshes the committed copies. Runs after community.spec.ts.
import { mkdirSync } from "node:fs";
import path from "node:path";

import { expect, test, type Browser, type Page } from "@playwright/test";

import { appsDir } from "./server";
import { DESKTOP, MOBILE, server, signIn, zh } from "./helpers";

test.describe.configure({ mode: "serial" });

const out = path.resolve(appsDir, process.env.LECTERN_GUIDE_IMG ?? "screenshots/guide");
const DEMO_LESSON = "Welcome lecture";

async function shot(page: Page, name: string, fullPage = true) {
  mkdirSync(out, { recursive: true });
  await page.waitForLoadState("networkidle");
  // Toasts and transitions settle before the picture.
  await page.waitForTimeout(600);
  await page.screenshot({ path: path.join(out, `${name}.png`), fullPage });
}

async function as(browser: Browser, locale: "zh-CN" | "en", mobile: boolean, who: "learner" | "admin"): Promise<Page> {
  const context = await browser.newContext({ ...(mobile ? MOBILE : DESKTOP), locale });
  // The apps remember the language on the device.
  await context.addInitScript((l) => localStorage.setItem("lectern.locale", l), locale);
  const page = await context.newPage();
  const s = server();
  await signIn(page, who === "learner" ? "app" : "admin", who === "learner" ? s.learner : s.admin);
  return page;
}

for (const locale of ["zh-CN", "en"] as const) {
  test(`learner screens for the guide (${locale})`, async ({ browser }) => {
    const page = await as(browser, locale, true, "learner");
    await shot(page, `${locale}-learner-home`);
    await page.locator("[data-lesson-id]", { hasText: DEMO_LESSON }).first().click();
    await page.waitForFunction(() => {
      const v = document.querySelector("video");
      return !!v && v.readyState >= 2;
    });
    await page.locator("video").evaluate((v: HTMLVideoElement) => v.pause());
    await shot(page, `${locale}-learner-lesson-comments`);
    await page.getByRole("tab").nth(1).click();
    if (locale === "zh-CN") {
      await page.locator('textarea[name="question"]').fill("心电图导联放置有什么要点？");
      await page.locator('form:has(textarea[name="question"]) button[type="submit"]').click();
      await expect(page.locator("[data-question-id]").first()).toBeVisible();
    }
    await shot(page, `${locale}-learner-lesson-questions`);
    await page.locator("button.nav-back").first().click();
    await expect(page.locator("[data-review-id]").first()).toBeVisible();
    await shot(page, `${locale}-learner-course`);
    await page.goto(`${server().url}/app/me`);
    await shot(page, `${locale}-learner-me`);
    await page.goto(`${server().url}/app/me/inbox`);
    await shot(page, `${locale}-learner-inbox`);
    await page.context().close();
  });

  test(`console screens for the guide (${locale})`, async ({ browser }) => {
    const page = await as(browser, locale, false, "admin");
    await expect(page.getByTestId("daily-chart")).toHaveAttribute("data-drawn", "true");
    await shot(page, `${locale}-admin-dashboard`);
    await page.goto(`${server().url}/admin/reports`);
    await page.locator(".el-table__row").first().click();
    await expect(page.locator("figure[data-drawn='true']").or(page.locator(".el-descriptions")).first()).toBeVisible();
    await shot(page, `${locale}-admin-reports`);
    await page.goto(`${server().url}/admin/moderation`);
    await shot(page, `${locale}-admin-moderation`);
    await page.getByRole("tab").nth(1).click();
    await shot(page, `${locale}-admin-words`);
    await page.getByRole("tab").nth(2).click();
    await shot(page, `${locale}-admin-moderation-settings`);
    await page.goto(`${server().url}/admin/credits`);
    await shot(page, `${locale}-admin-credits`);
    await page.goto(`${server().url}/admin/invitations`);
    await shot(page, `${locale}-admin-invitations`);
    await page.goto(`${server().url}/admin/courses`);
    await shot(page, `${locale}-admin-courses`);
    await page.goto(`${server().url}/admin/assets`);
    await shot(page, `${locale}-admin-assets`);
    await page.context().close();
  });
}

test("a comment waiting in the queue, for the guide", async ({ browser }) => {
  const learner = await as(browser, "zh-CN", true, "learner");
  await learner.locator("[data-lesson-id]", { hasText: DEMO_LESSON }).first().click();
  await learner.getByLabel(zh.learner.comments.new).fill("课后可以加微信交流吗？");
  await learner.getByRole("button", { name: zh.learner.comments.post }).click();
  await expect(learner.locator("[data-comment-id] [data-state]").first()).toBeVisible();
  await learner.context().close();
  const admin = await as(browser, "zh-CN", false, "admin");
  await admin.goto(`${server().url}/admin/moderation`);
  await expect(admin.locator("tr", { hasText: "加微信" }).first()).toBeVisible();
  await shot(admin, "zh-CN-admin-moderation");
  await admin.context().close();
});
