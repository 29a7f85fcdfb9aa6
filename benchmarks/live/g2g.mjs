// Glass-to-glass latency in headless Chromium with hls.js (both from
// player-sdk's node_modules). Every published frame carries the wall clock
// at which it was made, as a barcode (see run.py: BITS blocks of BLOCK px,
// the value's row and its complement's row under it). On each frame the
// video presents (requestVideoFrameCallback), the frame is drawn to a
// 1280×720 canvas (lower rungs are scaled up), the barcode read back, and
// the latency is the frame's display time minus its clock. A frame whose
// two rows do not complement each other (a compression artefact, a
// transition) is counted as unreadable, never guessed.
//
// Usage: node g2g.mjs <master URL> <hls.js config JSON> <warm-up s> <measure s>
// Prints one JSON line: { samples: [ms…], unreadable, level, hls.js's latency
// and target, stalls (\`waiting\` while measuring), dropped frames }.
import { createRequire } from "node:module";
import path from "node:path";

const sdk = process.env.SDK_DIR;
const require = createRequire(path.join(sdk, "package.json"));
const { chromium } = require("playwright-core");
const hls = path.join(sdk, "node_modules/hls.js/dist/hls.min.js");
const [url, configJson, warmup, measure] = process.argv.slice(2);
const layout = JSON.parse(process.env.BARCODE);

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_PATH ?? "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--autoplay-policy=no-user-gesture-required"],
});
try {
  const page = await browser.newPage();
  await page.setContent("<video id=v muted autoplay playsinline width=1280 height=720></video>");
  await page.addScriptTag({ path: hls });
  await page.evaluate(([url, config, layout]) => {
    const video = document.getElementById("v");
    const canvas = document.createElement("canvas");
    canvas.width = 1280;
    canvas.height = 720;
    const ctx = canvas.getContext("2d", { willReadFrequently: true });
    window.fatal = null;
    window.samples = [];
    window.unreadable = 0;
    window.measuring = false;
    window.stalls = 0;
    video.addEventListener("waiting", () => { if (window.measuring) window.stalls++; });
    const read = () => {
      ctx.drawImage(video, 0, 0, 1280, 720);
      const { bits, block, x0, y0 } = layout;
      const row = ctx.getImageData(0, y0, 1280, 2 * block).data;
      const lumaAt = (x, y) => {
        const i = (y * 1280 + x) * 4;
        return 0.299 * row[i] + 0.587 * row[i + 1] + 0.114 * row[i + 2];
      };
      let value = 0;
      for (let b = 0; b < bits; b++) {
        const x = x0 + b * block + (block >> 1);
        const one = lumaAt(x, block >> 1) > 128;
        const inverse = lumaAt(x, block + (block >> 1)) > 128;
        if (one === inverse) return null;
        value = value * 2 + (one ? 1 : 0);
      }
      return value;
    };
    const onFrame = (now, meta) => {
      if (window.measuring) {
        const stamp = read();
        const shown = performance.timeOrigin + (meta.expectedDisplayTime ?? now);
        if (stamp === null) window.unreadable++;
        else window.samples.push(shown - stamp);
      }
      video.requestVideoFrameCallback(onFrame);
    };
    video.requestVideoFrameCallback(onFrame);
    const player = new Hls(config);
    window.player = player;
    player.on(Hls.Events.ERROR, (_, data) => { if (data.fatal) window.fatal = `${data.type}: ${data.details}`; });
    player.loadSource(url);
    player.attachMedia(video);
    video.play().catch(() => {});
  }, [url, JSON.parse(configJson), layout]);
  await page.waitForFunction(() => window.fatal || document.getElementById("v").currentTime > 0.5, null, { timeout: 90_000 });
  await page.waitForTimeout(Number(warmup) * 1000);
  await page.evaluate(() => { window.measuring = true; });
  await page.waitForTimeout(Number(measure) * 1000);
  const result = await page.evaluate(() => ({
    fatal: window.fatal,
    samples: window.samples,
    unreadable: window.unreadable,
    level: window.player.currentLevel,
    // hls.js's own view: how far behind the playlist's live edge it plays,
    // and where it aims to.
    hlsLatency: window.player.latency,
    targetLatency: window.player.targetLatency,
    height: document.getElementById("v").videoHeight,
    stalls: window.stalls,
    dropped: document.getElementById("v").getVideoPlaybackQuality?.().droppedVideoFrames ?? null,
  }));
  console.log(JSON.stringify(result));
  if (result.fatal) process.exitCode = 1;
} finally {
  await browser.close();
}
