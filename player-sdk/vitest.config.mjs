// Unit tests of player.ts in a DOM (jsdom): the player's own decisions,
// with hls.js replaced by a stand-in that records what it is told and
// emits what a test says, and fetch answered by a stand-in of the API.
import { defineConfig } from "vitest/config";

export default defineConfig({
  test: { environment: "jsdom", include: ["test/unit/**/*.test.ts"] },
});
