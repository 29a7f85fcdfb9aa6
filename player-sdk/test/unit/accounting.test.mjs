// Unit tests of the pure parts: interval accounting, speed choice, QoE.
// They import what `npm run build` compiled into dist/test/.
import assert from "node:assert/strict";
import { test } from "node:test";

import { chooseSpeed, clampSpeed, IntervalTracker, startPosition } from "../../dist/test/accounting.mjs";
import { errorCode, QoeTracker } from "../../dist/test/qoe.mjs";

test("contiguous playback is one interval, handed over without overlap", () => {
  const t = new IntervalTracker();
  t.observe(10, 0, 1);
  t.observe(10.25, 0.25, 1);
  t.observe(12, 1.75, 1);
  assert.deepEqual(t.take(), [{ from: 10, to: 12 }]);
  t.observe(14, 2, 1);
  assert.deepEqual(t.take(), [{ from: 12, to: 14 }], "the next beat starts where the last ended");
  assert.deepEqual(t.take(), [], "nothing played since");
});

test("at 2x the interval is media time: 4 wall seconds cover 8 media seconds", () => {
  const t = new IntervalTracker();
  t.observe(0, 0, 2);
  for (let wall = 0.25; wall <= 4; wall += 0.25) t.observe(wall * 2, 0.25, 2);
  assert.deepEqual(t.take(), [{ from: 0, to: 8 }]);
});

test("at 2x a large step that 1x would call a jump is still playback", () => {
  const t = new IntervalTracker();
  t.observe(0, 0, 2);
  t.observe(3, 1, 2); // 1 s of wall time at 2x: 2 s expected, within slack
  assert.deepEqual(t.take(), [{ from: 0, to: 3 }]);
});

test("a seek closes the stretch: the skipped part is never claimed", () => {
  const t = new IntervalTracker();
  t.observe(0, 0, 1);
  t.observe(3, 3, 1);
  t.cut(); // seeking
  t.observe(60, 0, 1);
  t.observe(62, 2, 1);
  assert.deepEqual(t.take(), [
    { from: 0, to: 3 },
    { from: 60, to: 62 },
  ]);
});

test("an unannounced jump (forward or backward) is detected as a seek", () => {
  const t = new IntervalTracker();
  t.observe(0, 0, 1);
  t.observe(1, 1, 1);
  t.observe(30, 0.25, 1); // forward far beyond 0.25 s of playback
  t.observe(31, 1, 1);
  t.observe(5, 0.25, 1); // backward
  t.observe(6, 1, 1);
  assert.deepEqual(t.take(), [
    { from: 0, to: 1 },
    { from: 30, to: 31 },
    { from: 5, to: 6 },
  ]);
});

test("pause then resume at the same point keeps beats adjacent; empty stretches vanish", () => {
  const t = new IntervalTracker();
  t.observe(5, 0, 1);
  t.cut(); // paused at once: nothing played
  assert.equal(t.pending, false);
  t.observe(5, 0, 1);
  t.observe(7, 2, 1);
  t.cut();
  assert.equal(t.pending, true);
  assert.deepEqual(t.take(), [{ from: 5, to: 7 }]);
});

test("invalid observations are ignored", () => {
  const t = new IntervalTracker();
  t.observe(Number.NaN, 0, 1);
  t.observe(-1, 0, 1);
  assert.deepEqual(t.take(), []);
});

test("speed is clamped to 0.5x-2x", () => {
  assert.equal(clampSpeed(3), 2);
  assert.equal(clampSpeed(0.1), 0.5);
  assert.equal(clampSpeed(1.25), 1.25);
  assert.equal(clampSpeed(Number.NaN), 1);
});

test("the server's speed wins on a new device; the latest choice wins elsewhere", () => {
  assert.equal(chooseSpeed(1.5, null), 1.5, "new device");
  assert.equal(chooseSpeed(undefined, null), 1);
  assert.equal(chooseSpeed(1, { speed: 2, server: 1 }), 2, "chosen here; the server never heard otherwise");
  assert.equal(chooseSpeed(1.25, { speed: 2, server: 1 }), 1.25, "changed on another device since");
  assert.equal(chooseSpeed(4, null), 2, "clamped");
});

test("start at the resume point unless it is the end", () => {
  assert.equal(startPosition(42, 100), 42);
  assert.equal(startPosition(98.5, 100), 0);
  assert.equal(startPosition(0, 100), 0);
  assert.equal(startPosition(-3, 100), 0);
  assert.equal(startPosition(42, Number.NaN), 42);
});

test("QoE: startup from the play intent to the first frame", () => {
  const q = new QoeTracker();
  q.play(1000);
  q.play(1100); // a second click does not restart the clock
  q.playing(1450);
  assert.deepEqual(q.drain(), [{ kind: "startup", startup_ms: 450 }]);
  q.playing(5000);
  assert.deepEqual(q.drain(), [], "startup is reported once");
});

test("QoE: a stall counts as a rebuffer; a seek's wait does not", () => {
  const q = new QoeTracker();
  q.play(0);
  q.playing(100);
  q.drain();
  q.waiting(1000);
  q.playing(1800);
  q.seekStart(2000);
  q.waiting(2001);
  q.seekEnd();
  q.playing(2600);
  assert.equal(q.rebufferCount, 1);
  assert.equal(q.rebufferMs, 800);
  assert.deepEqual(q.drain(), [{ kind: "rebuffer", rebuffer_count: 1, rebuffer_ms: 800 }]);
});

test("QoE: waiting before the first frame is startup, not a rebuffer", () => {
  const q = new QoeTracker();
  q.play(0);
  q.waiting(10);
  q.playing(300);
  assert.equal(q.rebufferCount, 0);
});

test("QoE: switches and fatal errors are queued in order and survive a failed report", () => {
  const q = new QoeTracker();
  q.switched(null, 3_000_000);
  q.switched(3_000_000, 3_000_000); // not a switch
  q.switched(3_000_000, 400_000);
  q.fatal("player_manifest load/error!");
  const events = q.drain();
  assert.deepEqual(events[2], { kind: "fatal_error", error_code: "player_manifest_load_error_" });
  q.requeue(events);
  q.fatal("later");
  assert.deepEqual(
    q.drain().map((e) => e.kind),
    ["bitrate_switch", "bitrate_switch", "fatal_error", "fatal_error"],
  );
});

test("QoE: error codes fit what the API accepts", () => {
  assert.equal(errorCode(""), "unknown");
  assert.equal(errorCode("x".repeat(300)).length, 100);
  assert.equal(errorCode("media_error_3"), "media_error_3");
});
