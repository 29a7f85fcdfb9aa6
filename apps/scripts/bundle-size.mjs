// After `vite build`: writes a gzip sibling of every script, style and SVG
// (`lectern serve` sends it to browsers that accept gzip; api/src/apps.rs),
// and measures each app's initial JavaScript — the entry chunk and every
// chunk it imports statically, which the page loads before any screen —
// gzipped. Fails above the budget of issue #19: 200 KB per app.
import { readFileSync, readdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import { gzipSync } from "node:zlib";

const BUDGET = 200 * 1024;
const root = path.resolve(import.meta.dirname, "..");
let failed = false;
const report = [];

for (const app of ["learner", "admin"]) {
  const dist = path.join(root, app, "dist");
  const assets = path.join(dist, "assets");
  const gzipped = new Map();
  for (const name of readdirSync(assets)) {
    if (!/\.(js|css|svg)$/.test(name)) continue;
    const packed = gzipSync(readFileSync(path.join(assets, name)), { level: 9 });
    writeFileSync(path.join(assets, `${name}.gz`), packed);
    gzipped.set(`assets/${name}`, packed.length);
  }
  const manifest = JSON.parse(readFileSync(path.join(dist, ".vite/manifest.json"), "utf8"));
  const entry = Object.values(manifest).find((chunk) => chunk.isEntry);
  const seen = new Set();
  const visit = (chunk) => {
    if (!chunk || seen.has(chunk.file)) return;
    seen.add(chunk.file);
    for (const key of chunk.imports ?? []) visit(manifest[key]);
  };
  visit(entry);
  const initial = [...seen].reduce((sum, file) => sum + (gzipped.get(file) ?? 0), 0);
  const css = (entry.css ?? []).reduce((sum, file) => sum + (gzipped.get(file) ?? 0), 0);
  const total = [...gzipped].filter(([f]) => f.endsWith(".js")).reduce((sum, [, n]) => sum + n, 0);
  const kb = (n) => `${(n / 1024).toFixed(1)} KB`;
  report.push(`${app}: initial JS ${kb(initial)} gzipped (${seen.size} files; budget ${kb(BUDGET)}), initial CSS ${kb(css)}, all JS ${kb(total)}`);
  if (initial > BUDGET) failed = true;
}
writeFileSync(path.join(root, "bundle-sizes.txt"), report.join("\n") + "\n");
console.log(report.join("\n"));
if (failed) {
  console.error("bundle-size: an app's initial JavaScript is over budget");
  process.exit(1);
}
