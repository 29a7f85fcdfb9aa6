// Issue #19's two flows, in the apps only (no API call from the test):
// 1. a content admin uploads a real clip by drag and drop, the upload is
//    cut by a reload and resumes, the asset gets ready, and a course with
//    two chapters is created, submitted, approved and published;
// 2. a learner on a 375×812 WeChat webview finds the lesson by a Chinese
//    search, plays it, switches to 1.5×, reloads, resumes within 5 s at
//    1.5×, and rates the course.
import { readFileSync } from "node:fs";
import path from "node:path";

import { expect, test, type Page } from "@playwright/test";

import { DESKTOP, MOBILE, remember, server, signIn, zh } from "./helpers";

test.describe.configure({ mode: "serial" });

const COURSE = "心电图基础入门";
const CHAPTERS = ["第一章 心电图原理", "第二章 心律失常"];
const LESSONS = ["心电图的导联与波形", "房颤的心电图识别"];
const FILE = { name: "心电图讲座.mp4", lastModified: 1_700_000_000_000 };

/** Drops the clip on the drop zone, as a person dragging it from their desktop would. */
async function dropClip(page: Page, bytes: string) {
  const transfer = await page.evaluateHandle(
    ({ bytes, name, lastModified }) => {
      const raw = Uint8Array.from(atob(bytes), (c) => c.charCodeAt(0));
      const data = new DataTransfer();
      data.items.add(new File([raw], name, { type: "video/mp4", lastModified }));
      return data;
    },
    { bytes, ...FILE },
  );
  const zone = page.getByTestId("dropzone");
  await zone.dispatchEvent("dragover", { dataTransfer: transfer });
  await zone.dispatchEvent("drop", { dataTransfer: transfer });
}

test("a content admin uploads, builds, submits, approves and publishes a course in the console", async ({ browser }) => {
  const s = server();
  const context = await browser.newContext(DESKTOP);
  const page = await context.newPage();
  await signIn(page, "admin", s.admin);
  await page.getByRole("menuitem", { name: zh.admin.assets.title }).click();
  await expect(page.getByRole("heading", { name: zh.admin.assets.title })).toBeVisible();

  // Slow the upload down so a reload can cut it (1 MB/s up).
  const cdp = await context.newCDPSession(page);
  await cdp.send("Network.enable");
  await cdp.send("Network.emulateNetworkConditions", { offline: false, latency: 20, downloadThroughput: -1, uploadThroughput: 1_000_000 });
  const patches: number[] = [];
  page.on("request", (r) => {
    if (r.method() === "PATCH" && r.url().includes("/api/v1/uploads/")) patches.push(Number(r.headers()["upload-offset"]));
  });

  const bytes = readFileSync(s.clip).toString("base64");
  await dropClip(page, bytes);
  const upload = page.locator("li[data-upload-state]");
  await expect(upload).toHaveAttribute("data-upload-state", "uploading");
  await expect.poll(async () => Number(await upload.getAttribute("data-percent")), { timeout: 60_000 }).toBeGreaterThanOrEqual(30);
  const before = Number(await upload.getAttribute("data-percent"));

  // The reload cuts the upload; the console remembers it and says so.
  await page.reload();
  await cdp.send("Network.emulateNetworkConditions", { offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: -1 }).catch(() => undefined);
  await expect(page.getByText(zh.admin.assets.interrupted.replace("{name}", FILE.name))).toBeVisible();
  patches.length = 0;
  await dropClip(page, bytes);
  await expect(page.locator("li[data-upload-state]")).toHaveAttribute("data-upload-state", "done", { timeout: 120_000 });
  expect(patches.length, "the upload continued with PATCH requests").toBeGreaterThan(0);
  const resumedAt = patches[0]!;
  const size = Buffer.from(bytes, "base64").length;
  console.log(`upload: cut at ${before}% (reload), resumed at byte ${resumedAt} of ${size}`);
  expect(resumedAt, "the upload resumed where the server had it, not from the start").toBeGreaterThan(0);

  // The asset is transcoded; the list follows its progress until ready.
  const row = page.locator("tr", { has: page.getByText(FILE.name.replace(/\.mp4$/, ""), { exact: true }) });
  await expect(row.locator("[data-status]")).toHaveAttribute("data-status", "ready", { timeout: 12 * 60_000 });

  // A course with two chapters, a lesson in each playing the clip.
  await page.getByRole("menuitem", { name: zh.admin.courses.title }).click();
  await page.getByRole("button", { name: zh.admin.courses.new }).click();
  await page.getByLabel(zh.admin.course.name).fill(COURSE);
  await page.getByRole("dialog").getByRole("button", { name: zh.common.create }).click();
  await expect(page.getByRole("heading", { name: COURSE })).toBeVisible();
  const courseId = page.url().split("/").pop()!;
  for (const [i, chapter] of CHAPTERS.entries()) {
    await page.locator("#new-chapter").fill(chapter);
    await page.getByRole("button", { name: zh.admin.course.addChapter }).click();
    const block = page.locator(".chapter", { has: page.getByRole("heading", { name: chapter }) });
    await expect(block).toBeVisible();
    await block.getByLabel(zh.admin.course.lessonName).fill(LESSONS[i]!);
    await block.getByLabel(zh.admin.course.video).click();
    await page.locator(".el-select-dropdown:visible .el-select-dropdown__item", { hasText: FILE.name.replace(/\.mp4$/, "") }).first().click();
    await block.getByRole("button", { name: zh.admin.course.addLesson }).click();
    await expect(block.getByText(LESSONS[i]!)).toBeVisible();
  }

  // Review: submit, then approve and publish.
  await page.getByRole("button", { name: zh.admin.course.submit }).click();
  await expect(page.locator("[data-state]").first()).toHaveAttribute("data-state", "in_review");
  await page.getByRole("button", { name: zh.admin.course.approve }).click();
  await expect(page.locator("[data-state]").first()).toHaveAttribute("data-state", "published");

  const lessonId = await page.evaluate(async (id) => {
    // Read back through the page's own session, for the learner's flow.
    const course = await (await fetch(`/api/v1/courses/${id}`)).json();
    return course.chapters[0].lessons[0].id as string;
  }, courseId);
  remember({ courseId, courseTitle: COURSE, lessonId, lessonTitle: LESSONS[0]! });
  await context.close();
});

test("a learner in a WeChat webview finds the lesson in Chinese, plays, speeds up, resumes, rates", async ({ browser }) => {
  const s = server();
  const context = await browser.newContext(MOBILE);
  const page = await context.newPage();
  await signIn(page, "app", s.learner);
  await page.getByRole("tab", { name: zh.learner.tabs.search }).click();
  const box = page.getByRole("searchbox").or(page.locator('input[name="q"]')).first();
  await box.fill("心电图");
  await box.press("Enter");
  const hit = page.locator(`[data-lesson-id]`, { hasText: LESSONS[0]! });
  await expect(hit).toBeVisible();
  await expect(hit.locator("mark").first()).toContainText("心电");
  await hit.click();

  const video = page.locator("video");
  const playing = async (min: number) =>
    page.waitForFunction((min) => {
      const v = document.querySelector("video");
      return !!v && !v.paused && v.readyState >= 3 && v.currentTime > min;
    }, min, { timeout: 60_000 });
  await playing(0.5);
  await page.getByRole("button", { name: zh.learner.lesson.times.replace("{speed}", "1.5") }).click();
  await expect.poll(() => video.evaluate((v: HTMLVideoElement) => v.playbackRate)).toBe(1.5);
  await expect(page.getByRole("button", { name: "1.5×" })).toHaveAttribute("aria-pressed", "true");
  // Past one periodic heartbeat (every 5 s) at 1.5×.
  await page.waitForTimeout(7000);
  const left = await video.evaluate((v: HTMLVideoElement) => v.currentTime);

  await page.reload();
  await playing(0);
  const back = await video.evaluate((v: HTMLVideoElement) => ({ time: v.currentTime, rate: v.playbackRate }));
  console.log(`resume: left at ${left.toFixed(1)} s, back at ${back.time.toFixed(1)} s at ${back.rate}×`);
  expect(Math.abs(back.time - left), "resumes within 5 s of where the learner left").toBeLessThanOrEqual(5);
  expect(back.rate).toBe(1.5);
  await expect(page.getByRole("button", { name: "1.5×" })).toHaveAttribute("aria-pressed", "true");

  // Rate the course: four stars.
  await page.getByRole("button", { name: zh.common.back }).first().click();
  await expect(page.getByRole("heading", { name: COURSE })).toBeVisible();
  await page.getByRole("radio").nth(3).click();
  await expect(page.getByText(zh.learner.course.average.replace("{average}", "4.0").replace("{count}", "1"))).toBeVisible();
  await context.close();
});
