// The admin console, served by `lectern serve` under /admin/ (see
// api/src/apps.rs). Element Plus components are imported where they are used
// (unplugin-vue-components), every screen but the first is its own chunk,
// and file names carry a content hash so they can be cached forever.
import { ElementPlusResolver } from "unplugin-vue-components/resolvers";
import vue from "@vitejs/plugin-vue";
import Components from "unplugin-vue-components/vite";
import { defineConfig } from "vite";

export default defineConfig({
  base: "/admin/",
  plugins: [vue(), Components({ resolvers: [ElementPlusResolver({ importStyle: "css" })], dts: false })],
  build: {
    target: "es2020",
    // No inline modulepreload polyfill script: the CSP allows none.
    modulePreload: { polyfill: false },
    assetsInlineLimit: 0,
    sourcemap: false,
    // For scripts/bundle-size.mjs: what the page loads before its first screen.
    manifest: true,
    reportCompressedSize: true,
    // The player chunk carries hls.js (~500 kB raw); it loads only with a lesson.
    chunkSizeWarningLimit: 600,
  },
  server: { proxy: { "/api": "http://127.0.0.1:8080", "/media": "http://127.0.0.1:8080" } },
});
