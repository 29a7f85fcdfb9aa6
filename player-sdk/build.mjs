// Bundles the SDK with hls.js into dist/: an ES module and an IIFE that
// defines `window.LecternPlayer` (for pages without a module bundler), both
// minified with source maps, plus the pure modules the unit tests import.
import { build } from "esbuild";
import { execFileSync } from "node:child_process";
import { rmSync } from "node:fs";

const common = {
  entryPoints: ["src/index.ts"],
  bundle: true,
  minify: true,
  sourcemap: true,
  target: ["es2020"],
  legalComments: "linked",
  logLevel: "warning",
};

rmSync("dist", { recursive: true, force: true });
await Promise.all([
  build({ ...common, format: "esm", outfile: "dist/lectern-player.mjs" }),
  build({ ...common, format: "iife", globalName: "LecternPlayer", outfile: "dist/lectern-player.js" }),
  build({
    entryPoints: ["src/accounting.ts", "src/qoe.ts"],
    outdir: "dist/test",
    format: "esm",
    outExtension: { ".js": ".mjs" },
    logLevel: "warning",
  }),
]);
execFileSync("node_modules/.bin/tsc", ["-p", "tsconfig.json"], { stdio: "inherit" });
console.log("player-sdk: built dist/lectern-player.js (IIFE) and dist/lectern-player.mjs (ES module)");
