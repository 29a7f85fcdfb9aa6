// The learner H5 app, served by `lectern serve` under /app/ (see
// api/src/apps.rs). Vant components are imported where they are used
// (unplugin-vue-components), every screen but the first is its own chunk,
// and file names carry a content hash so they can be cached forever.
import { VantResolver } from "@vant/auto-import-resolver";
import vue from "@vitejs/plugin-vue";
import Components from "unplugin-vue-components/vite";
import { defineConfig, type Plugin } from "vite";

/**
 * Vant's icon font names a copy on a public CDN after its inlined woff2;
 * a browser may fetch it, which the CSP refuses (and a learner's webview
 * should not call a third party). Keep the inlined font only.
 */
function noRemoteFonts(): Plugin {
  return {
    name: "lectern-no-remote-fonts",
    transform(code, id) {
      if (!/\.css($|\?)/.test(id) || !code.includes("at.alicdn.com")) return null;
      return { code: code.replace(/,\s*url\(["']?(?:https?:)?\/\/at\.alicdn\.com[^)]*\)\s*format\(["']?\w+["']?\)/g, ""), map: null };
    },
  };
}

export default defineConfig({
  base: "/app/",
  plugins: [vue(), Components({ resolvers: [VantResolver()], dts: false }), noRemoteFonts()],
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
