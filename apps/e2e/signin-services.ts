// The other ways in, for signin.spec.ts: an organisation of its own (so the
// demo organisation's screens stay as they are), a super admin in it, the
// real OpenID provider (`infra/dev/oidc/provider.mjs`, the certified
// `oidc-provider` package, installed by the idempotent
// `infra/dev/oidc/setup`) on a free port, asking for credentials like a
// real provider (OIDC_LOGIN_FORM=1), and a real OpenLDAP server
// (`infra/dev/ldap/slapd-test`, the Rust tests' fixture directory) on
// another; `configureSignInWays` then sets them up for the organisation
// through the API, as its super admin would.
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";

import { codeSentTo, outboxMark, type OutboxAccess } from "./outbox";

export interface SignInServices {
  orgId: string;
  superAdmin: { email: string; password: string };
  /** The provider's issuer; its login form takes any account with `password`. */
  oidc: { issuer: string; clientId: string; clientSecret: string; password: string };
  /** `null` when slapd is not installed (the LDAP spec then checks the API's refusal only). */
  ldap: { url: string } | null;
}

const STARTUP_MS = 60_000;

function waitForLine(child: ChildProcess, pattern: RegExp, what: string): Promise<string> {
  return new Promise((resolve, reject) => {
    let buffer = "";
    const timer = setTimeout(() => reject(new Error(`${what} did not start within ${STARTUP_MS / 1000} s: ${buffer}`)), STARTUP_MS);
    const onData = (chunk: Buffer) => {
      buffer += chunk.toString();
      const m = pattern.exec(buffer);
      if (m) {
        clearTimeout(timer);
        resolve(m[1] ?? m[0]);
      }
    };
    child.stdout?.on("data", onData);
    child.stderr?.on("data", onData);
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`${what} exited (${code}) before it was ready: ${buffer}`));
    });
  });
}

async function waitForPort(port: number, what: string): Promise<void> {
  const deadline = Date.now() + STARTUP_MS;
  for (;;) {
    const open = await new Promise<boolean>((resolve) => {
      const socket = connect(port, "127.0.0.1");
      socket.once("connect", () => {
        socket.destroy();
        resolve(true);
      });
      socket.once("error", () => resolve(false));
    });
    if (open) return;
    if (Date.now() > deadline) throw new Error(`${what} is not listening on ${port}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

function stopper(child: ChildProcess): () => Promise<void> {
  return () =>
    new Promise<void>((resolve) => {
      if (child.exitCode !== null || child.signalCode !== null) return resolve();
      child.once("exit", () => resolve());
      child.kill("SIGTERM");
      setTimeout(() => child.kill("SIGKILL"), 10_000).unref();
    });
}

/** Starts the provider and the directory; their stops go into `cleanups`. */
export async function startSignInServices(opts: {
  root: string;
  bin: string;
  env: NodeJS.ProcessEnv;
  url: string;
  freePort: () => Promise<number>;
  cleanups: Array<() => unknown>;
}): Promise<SignInServices> {
  const { root, bin, env, url, freePort, cleanups } = opts;
  const orgId = execFileSync(bin, ["admin", "create-org", "Sign-in Hospital"], { cwd: root, env, stdio: ["ignore", "pipe", "inherit"] })
    .toString()
    .trim()
    .split("\n")
    .pop()!
    .trim();
  const superAdmin = { email: "sso-admin@hospital.lectern.test", password: `Sso-${randomBytes(9).toString("base64url")}` };
  execFileSync(bin, ["admin", "create-user", "--org", "Sign-in Hospital", "--email", superAdmin.email, "--role", "super_admin"], {
    cwd: root,
    env,
    input: superAdmin.password + "\n",
    stdio: ["pipe", "ignore", "inherit"],
  });

  execFileSync(path.join(root, "infra/dev/oidc/setup"), { cwd: root, stdio: ["ignore", "ignore", "inherit"] });
  const oidcPort = await freePort();
  const oidc = { issuer: `http://127.0.0.1:${oidcPort}`, clientId: "lectern-e2e", clientSecret: randomBytes(16).toString("hex"), password: "provider-pass" };
  const provider = spawn("node", [path.join(root, "infra/dev/oidc/provider.mjs")], {
    cwd: path.join(root, "infra/dev/oidc"),
    env: {
      ...process.env,
      OIDC_PORT: String(oidcPort),
      OIDC_CLIENT_ID: oidc.clientId,
      OIDC_CLIENT_SECRET: oidc.clientSecret,
      OIDC_REDIRECT_URIS: `${url}/api/v1/auth/oidc/${orgId}/callback`,
      OIDC_POST_LOGOUT_REDIRECT_URIS: `${url}/app/`,
      OIDC_LOGIN_FORM: "1",
      OIDC_PASSWORD: oidc.password,
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  cleanups.push(stopper(provider));
  await waitForLine(provider, /oidc-provider listening on (\S+)/, "the OpenID provider");

  let ldap: SignInServices["ldap"] = null;
  if (existsSync("/usr/sbin/slapd")) {
    const dir = mkdtempSync(path.join(tmpdir(), "lectern-e2e-slapd-"));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const ldapPort = await freePort();
    const slapd = spawn(path.join(root, "infra/dev/ldap/slapd-test"), [dir, String(ldapPort)], { cwd: root, stdio: ["ignore", "pipe", "pipe"] });
    cleanups.push(stopper(slapd));
    await waitForPort(ldapPort, "slapd");
    ldap = { url: `ldap://127.0.0.1:${ldapPort}` };
  }
  return { orgId, superAdmin, oidc, ldap };
}

async function call(url: string, method: string, path: string, token: string | null, body?: unknown): Promise<unknown> {
  const response = await fetch(url + path, {
    method,
    headers: { accept: "application/json", "content-type": "application/json", ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  if (!response.ok) throw new Error(`${method} ${path}: ${response.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

/**
 * What the organisation's super admin does in the API: signs in, steps up
 * with the code the outbox holds, allows SMS, OIDC and LDAP with accounts
 * made just in time, and names the provider and the directory.
 */
type Suite = { url: string; ways: SignInServices } & OutboxAccess;

/**
 * The organisation's super admin: `put` makes one critical change, each
 * after its own step-up (a step-up is good for one such change) with the
 * code the outbox holds.
 */
async function superAdmin(server: Suite): Promise<{ put: (path: string, body: unknown) => Promise<unknown> }> {
  const { url, ways } = server;
  const { token } = (await call(url, "POST", "/api/v1/auth/login", null, ways.superAdmin)) as { token: string };
  return {
    async put(path, body) {
      const mark = outboxMark(server);
      await call(url, "POST", "/api/v1/auth/step-up/code", token);
      const code = await codeSentTo(server, ways.superAdmin.email, mark);
      await call(url, "POST", "/api/v1/auth/step-up", token, { code });
      return call(url, "PUT", path, token, body);
    },
  };
}

/**
 * What the organisation's super admin does in the API: allows SMS, OIDC
 * and LDAP with accounts made just in time, and names the provider and
 * the directory.
 */
export async function configureSignInWays(server: Suite): Promise<void> {
  const { url, ways } = server;
  const admin = await superAdmin(server);
  const org = ways.orgId;
  await admin.put(`/api/v1/organisations/${org}/sign-in-policy`, { methods: ["sms", "oidc", "ldap"], new_accounts: "just_in_time" });
  await admin.put(`/api/v1/organisations/${org}/oidc`, {
    issuer: ways.oidc.issuer,
    client_id: ways.oidc.clientId,
    client_secret: ways.oidc.clientSecret,
  });
  if (ways.ldap) {
    await admin.put(`/api/v1/organisations/${org}/ldap`, {
      url: ways.ldap.url,
      bind_dn: "uid=lectern,ou=people,dc=hospital,dc=example",
      bind_password: "service-pass",
      user_base: "ou=people,dc=hospital,dc=example",
      group_base: "ou=groups,dc=hospital,dc=example",
      group_roles: { doctors: "learner", editors: "content_admin" },
    });
  }
  const policy = (await call(url, "GET", `/api/v1/organisations/${org}/sign-in-policy`, null)) as { oidc_issuer: string | null };
  if (policy.oidc_issuer !== ways.oidc.issuer) throw new Error(`the sign-in policy names ${policy.oidc_issuer}, not the provider`);
}

/**
 * Registers an official account for the organisation and allows WeChat
 * besides the other ways (the WeChat spec only: the screens spec shows the
 * sign-in screen in WeChat's user agent, which would then leave for WeChat).
 */
export async function allowWeChat(server: Suite, appid: string): Promise<void> {
  const org = server.ways.orgId;
  const admin = await superAdmin(server);
  await admin.put(`/api/v1/organisations/${org}/wechat-apps/${appid}`, { kind: "official_account", secret: "e2e-secret-never-used", open_platform: null });
  await admin.put(`/api/v1/organisations/${org}/sign-in-policy`, { methods: ["sms", "oidc", "ldap", "wechat"], new_accounts: "just_in_time" });
}
