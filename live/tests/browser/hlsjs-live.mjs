// Plays a live master playlist in headless Chromium with hls.js (both from
// player-sdk's node_modules) in low-latency mode, as player-sdk does, and
// checks that currentTime advances while the stream is live and that
// hls.js played LL-HLS: it loaded parts (EXT-X-PART), not only whole
// segments, and filled the viewer's token into every part URI of the
// shared playlists (EXT-X-DEFINE QUERYPARAM). Usage: node hlsjs-live.mjs
// <master URL>; prints the two currentTime readings, the parts loaded and
// hls.js's latency as JSON; exits non-zero if playback fails.
import assert from "node:assert/strict";
import { createRequire } from "node:module";
import path from "node:path";

const sdk = process.env.SDK_DIR;
const require = createRequire(path.join(sdk, "package.json"));
const { chromium } = require("playwright-core");
const hls = path.join(sdk, "node_modules/hls.js/dist/hls.min.js");
const url = process.argv[2];

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_PATH ?? "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--autoplay-policy=no-user-gesture-required"],
});
try {
  const page = await browser.newPage();
  // Live media playlists are the same for every viewer, their URIs
  // carrying `token={$token}`: hls.js must fill in the token of the URL it
  // loaded the playlist by (EXT-X-DEFINE QUERYPARAM) on every part.
  const token = new URL(url).searchParams.get("token");
  const requested = [];
  page.on("request", (request) => requested.push(request.url()));
  await page.setContent("<video id=v muted autoplay playsinline></video>");
  await page.addScriptTag({ path: hls });
  await page.evaluate((url) => {
    const video = document.getElementById("v");
    window.fatal = null;
    window.parts = 0;
    const player = new Hls({ liveSyncDurationCount: 2, lowLatencyMode: true });
    window.player = player;
    player.on(Hls.Events.ERROR, (_, data) => { if (data.fatal) window.fatal = `${data.type}: ${data.details}`; });
    player.on(Hls.Events.FRAG_LOADED, (_, data) => { if (data.part) window.parts++; });
    player.loadSource(url);
    player.attachMedia(video);
    video.play().catch(() => {});
  }, url);
  await page.waitForFunction(() => window.fatal || document.getElementById("v").currentTime > 0.5, null, { timeout: 60_000 });
  const fatal = await page.evaluate(() => window.fatal);
  assert.equal(fatal, null, `hls.js failed: ${fatal}`);
  const first = await page.evaluate(() => document.getElementById("v").currentTime);
  await page.waitForTimeout(3000);
  const second = await page.evaluate(() => document.getElementById("v").currentTime);
  const { parts, latency } = await page.evaluate(() => ({ parts: window.parts, latency: window.player.latency }));
  console.log(JSON.stringify({ first, second, parts, latency }));
  assert.ok(second > first + 1, `currentTime did not advance: ${first} → ${second}`);
  assert.ok(parts > 0, "hls.js loaded no LL-HLS part");
  const partRequests = requested.filter((u) => new URL(u).pathname.includes("-part_"));
  assert.ok(partRequests.length > 0, "no part was requested");
  for (const u of requested) {
    assert.ok(!u.includes("%7B%24") && !u.includes("{$"), `an unsubstituted variable: ${u}`);
  }
  for (const u of partRequests) {
    assert.equal(new URL(u).searchParams.get("token"), token, `a part without the viewer's token: ${u}`);
  }
} finally {
  await browser.close();
}
