// Fails when src/generated/api.ts is not what openapi-typescript makes of
// the checked-in api/openapi.json: the SDK's types must be the API's own
// (the Rust contract test keeps api/openapi.json equal to what the router
// serves). Fix with `npm run generate`.
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const dir = mkdtempSync(join(tmpdir(), "lectern-generated-"));
try {
  const fresh = join(dir, "api.ts");
  execFileSync("npx", ["openapi-typescript", "../api/openapi.json", "-o", fresh], { stdio: "pipe" });
  const committed = readFileSync("src/generated/api.ts", "utf8");
  if (readFileSync(fresh, "utf8") !== committed) {
    console.error("src/generated/api.ts is stale: run `npm run generate` in player-sdk/ and commit it");
    process.exit(1);
  }
  console.log("generated API types are current");
} finally {
  rmSync(dir, { recursive: true, force: true });
}
