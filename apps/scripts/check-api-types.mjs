// Every API type the apps use comes from the generated client:
// 1. shared/src/generated/api.ts is what openapi-typescript makes of the
//    checked-in api/openapi.json (the Rust contract test keeps that equal
//    to what the server serves): fix with `npm run generate`;
// 2. no app calls `fetch` itself or declares its own request or response
//    shapes: calls go through `api` (openapi-fetch, typed by paths) and
//    shapes are `Schemas["…"]`. The player SDK has its own generated types.
// 3. every message key a screen uses exists in both catalogues.
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";

const root = path.resolve(import.meta.dirname, "..");
const problems = [];

const dir = mkdtempSync(path.join(tmpdir(), "lectern-apps-generated-"));
try {
  const fresh = path.join(dir, "api.ts");
  execFileSync(path.join(root, "node_modules/.bin/openapi-typescript"), ["../api/openapi.json", "-o", fresh], { cwd: root, stdio: "pipe" });
  if (readFileSync(fresh, "utf8") !== readFileSync(path.join(root, "shared/src/generated/api.ts"), "utf8")) {
    problems.push("shared/src/generated/api.ts is stale: run `npm run generate` in apps/ and commit it");
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}

function files(dir) {
  return readdirSync(dir).flatMap((name) => {
    const full = path.join(dir, name);
    if (["node_modules", "dist", "generated"].includes(name)) return [];
    return statSync(full).isDirectory() ? files(full) : /\.(ts|vue)$/.test(name) ? [full] : [];
  });
}
const sources = ["learner/src", "admin/src", "shared/src"].flatMap((d) => files(path.join(root, d)));
const zh = readFileSync(path.join(root, "shared/src/i18n/zh-CN.ts"), "utf8");
for (const file of sources) {
  const text = readFileSync(file, "utf8");
  const rel = path.relative(root, file);
  if (!rel.startsWith("shared/src/api.ts") && /\bfetch\s*\(/.test(text)) problems.push(`${rel}: calls fetch directly; use \`api\` from @lectern/shared (typed by the OpenAPI document)`);
  // A hand-written shape of an API object: an interface or type alias whose fields end in _id/_at/_s, as the API's do.
  for (const m of text.matchAll(/(?:interface|type)\s+(\w+)\s*(?:=\s*)?\{([^}]*)\}/g)) {
    if (/\b\w+_(id|at|s)\??\s*:/.test(m[2]) && !/Schemas\[/.test(m[2]) && !/\/\/ view model/.test(m[0])) {
      problems.push(`${rel}: type ${m[1]} looks like an API shape; use Schemas["…"] from the generated client`);
    }
  }
  for (const m of text.matchAll(/\bt\(\s*["']([a-zA-Z0-9_.]+)["']/g)) {
    const key = m[1];
    const leaf = key.split(".").pop();
    if (!new RegExp(`\\b"?${leaf}"?\\s*:`).test(zh)) problems.push(`${rel}: message ${key} is not in the catalogues`);
  }
}

if (problems.length) {
  console.error(problems.join("\n"));
  process.exit(1);
}
console.log(`apps: generated API types current; ${sources.length} sources use only the typed client and catalogue keys`);
