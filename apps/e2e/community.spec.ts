// The community and analytics screens, in the apps only, on the demo's
// own published course (so this file does not wait for the acceptance
// flow's upload and transcode):
// 1. a learner on a 375 px WeChat webview comments at a moment of the
//    video, and clicking the comment's time seeks the player there; then
//    writes a review of the course;
// 2. a content admin lists a sensitive word; the learner's comment holding
//    it waits for a moderator; the admin rejects it with a reason in the
//    moderation queue, and the learner sees the reason;
// 3. the dashboard draws its chart (ECharts, loaded on demand), and the
//    course report downloads as CSV.
import { readFileSync } from "node:fs";

import { expect, test, type Browser, type Page } from "@playwright/test";

import { DESKTOP, MOBILE, server, signIn, zh } from "./helpers";

test.describe.configure({ mode: "serial" });

const DEMO_COURSE = "Getting started with Lectern";
const DEMO_LESSON = "Welcome lecture";
const WORD = "加微信";

async function learnerOnLesson(browser: Browser): Promise<Page> {
  const context = await browser.newContext(MOBILE);
  const page = await context.newPage();
  await signIn(page, "app", server().learner);
  await page.locator("[data-lesson-id]", { hasText: DEMO_LESSON }).first().click();
  await expect(page.locator("video")).toBeAttached();
  return page;
}

test("a learner comments at a moment of the video, the comment's time seeks, and reviews the course", async ({ browser }) => {
  const page = await learnerOnLesson(browser);
  const video = page.locator("video");
  // Play past 1.5 s, then hold still so the moment is exact.
  await page.waitForFunction(() => {
    const v = document.querySelector("video");
    return !!v && !v.paused && v.currentTime > 1.5;
  }, undefined, { timeout: 60_000 });
  const at = await video.evaluate((v: HTMLVideoElement) => {
    v.pause();
    return v.currentTime;
  });

  const text = `第 ${at.toFixed(1)} 秒的画面很清楚`;
  await page.getByLabel(zh.learner.comments.new).fill(text);
  await page.getByRole("button", { name: zh.learner.comments.post }).click();
  const comment = page.locator("[data-comment-id]", { hasText: text });
  await expect(comment).toBeVisible();
  const time = comment.locator("button.time");
  expect(Math.abs(Number(await time.getAttribute("data-at")) - at), "the comment carries the player's time").toBeLessThanOrEqual(0.2);

  // Elsewhere in the video, the comment's time brings the player back.
  await video.evaluate((v: HTMLVideoElement) => {
    v.pause();
    v.currentTime = 0;
  });
  await time.click();
  await expect
    .poll(() => video.evaluate((v: HTMLVideoElement) => v.currentTime), { message: "the player seeks to the comment's moment" })
    .toBeGreaterThanOrEqual(at - 0.3);
  expect(await video.evaluate((v: HTMLVideoElement) => v.currentTime)).toBeLessThan(at + 2.5);

  // A review: five stars and a few words; the organisation publishes at once.
  await page.getByRole("button", { name: zh.common.back }).first().click();
  await expect(page.getByRole("heading", { name: DEMO_COURSE })).toBeVisible();
  const review = "讲解清晰，适合入门。";
  await page.getByRole("radiogroup", { name: zh.learner.reviews.yourStars }).getByRole("radio").nth(4).click();
  await page.locator('textarea[name="review"]').fill(review);
  await page.getByTestId("submit-review").click();
  await expect(page.locator("[data-review-id]", { hasText: review })).toBeVisible();
  await expect(page.getByText(zh.learner.reviews.yours).first()).toBeVisible();
  await page.context().close();
});

test("a content admin rejects a comment in the moderation queue, with a reason the learner reads", async ({ browser }) => {
  const s = server();
  const admin = await (await browser.newContext(DESKTOP)).newPage();
  await signIn(admin, "admin", s.admin);
  await admin.getByRole("menuitem", { name: zh.admin.moderation.title }).click();
  await admin.getByRole("tab", { name: zh.admin.moderation.words }).click();
  await admin.getByLabel(zh.admin.moderation.newWord).fill(WORD);
  await admin.getByRole("button", { name: zh.common.add }).click();
  await expect(admin.getByRole("cell", { name: WORD, exact: true }).first()).toBeVisible();

  // The learner's comment holds the word: it waits for a moderator.
  const learner = await learnerOnLesson(browser);
  const text = `想交流的${WORD}聊`;
  await learner.getByLabel(zh.learner.comments.new).fill(text);
  await learner.getByRole("button", { name: zh.learner.comments.post }).click();
  const mine = learner.locator("[data-comment-id]", { hasText: text });
  await expect(mine.locator("[data-state]")).toHaveAttribute("data-state", "pending");

  await admin.reload();
  await admin.getByRole("tab", { name: zh.admin.moderation.queue }).click();
  const row = admin.locator("tr", { hasText: text });
  await expect(row).toBeVisible();
  await expect(row.getByText(WORD, { exact: true })).toBeVisible();
  await row.getByRole("button", { name: zh.admin.moderation.reject }).click();
  const reason = "请勿在评论中留联系方式";
  await admin.getByRole("dialog").getByRole("textbox").fill(reason);
  await admin.getByRole("dialog").getByRole("button", { name: zh.admin.moderation.reject }).click();
  await expect(admin.getByText(zh.admin.moderation.decided.rejected)).toBeVisible();
  await expect(row).toHaveCount(0);

  await learner.reload();
  await expect(mine.locator("[data-state]")).toHaveAttribute("data-state", "rejected");
  await expect(mine.getByText(reason)).toBeVisible();
  await learner.context().close();
  await admin.context().close();
});

test("the dashboard draws its chart, and the course report downloads as CSV", async ({ browser }) => {
  const page = await (await browser.newContext(DESKTOP)).newPage();
  await signIn(page, "admin", server().admin);
  await expect(page.getByRole("heading", { name: zh.admin.dashboard.title })).toBeVisible();
  const chart = page.getByTestId("daily-chart");
  await expect(chart).toHaveAttribute("data-drawn", "true");
  await expect(chart.locator("svg path").first()).toBeAttached();

  await page.getByRole("menuitem", { name: zh.admin.reports.title }).click();
  await expect(page.getByRole("cell", { name: DEMO_COURSE })).toBeVisible();
  const [download] = await Promise.all([page.waitForEvent("download"), page.getByTestId("courses-csv").click()]);
  expect(download.suggestedFilename()).toBe("courses.csv");
  const csv = readFileSync((await download.path())!, "utf8");
  expect(csv.split(/\r?\n/)[0]).toMatch(/course/i);
  expect(csv).toContain(DEMO_COURSE);
  await page.context().close();
});
