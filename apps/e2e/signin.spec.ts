// The other ways in, in Chromium, against real services: the organisation
// "Sign-in Hospital" was given its sign-in policy, its OpenID provider (the
// real `oidc-provider`, asking for credentials) and its directory (a real
// slapd) through the API by its super admin after a step-up, as an
// administrator would, when the suite started (signin-services.ts), so the
// screens spec shows its sign-in screens too.
//
// - OIDC refused (a forged state): back on the sign-in page with the
//   catalogue's message.
// - OIDC: from a page of the learner app, "sign in with the provider" goes
//   through the provider's login form and lands back on that page signed
//   in; signing out at Lectern ends the provider's session too, so the next
//   "sign in with the provider" asks for credentials again (and, as a
//   control, signing out of Lectern alone does not).
// - SMS: a code requested on the sign-in screen is read from the
//   development outbox; a wrong code shows the catalogue's message; the
//   right one signs in (a learner made just in time).
// - LDAP: a wrong directory password shows the catalogue's message; a
//   doctor signs in to the learner app, an editor to the console.
// - WeChat: in WeChat's browser the learner app goes to the official
//   account's authorisation by itself (Lectern's redirect to WeChat is
//   read, not followed: no request leaves the machine); in a
//   mini-program's web-view it shows the forms.
import { expect, test, type Page } from "@playwright/test";

import { accessible, DESKTOP, MOBILE, server, shoot, zh } from "./helpers";
import { codeSentTo, outboxMark } from "./outbox";
import { allowWeChat } from "./signin-services";

const PHONE = "13800138000";
const PHONE_E164 = "+8613800138000";

/** The browser's user agent without WeChat: the forms, not WeChat's authorisation. */
const PHONE_BROWSER = { ...MOBILE, userAgent: "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1" };

function providerButton(page: Page) {
  const { oidc } = server().ways;
  return page.getByRole("button", { name: zh.signIn.withProvider.replace("{provider}", new URL(oidc.issuer).host) });
}

/** The provider's own login form (its page, not Lectern's). */
async function atProviderLogin(page: Page): Promise<void> {
  const { oidc } = server().ways;
  await page.waitForURL((u) => u.origin === oidc.issuer && u.pathname.startsWith("/interaction/"));
  await expect(page.locator('input[name="password"]')).toBeVisible();
}

async function providerSignIn(page: Page, account: string): Promise<void> {
  await atProviderLogin(page);
  await page.locator('input[name="login"]').fill(account);
  await page.locator('input[name="password"]').fill(server().ways.oidc.password);
  await page.getByRole("button", { name: "Sign in at the provider" }).click();
}

/** Who the page's session cookie belongs to, asked from the page (a Lectern page). */
async function me(page: Page): Promise<{ status: number; role?: string }> {
  return page.evaluate(async () => {
    const answer = await fetch("/api/v1/me", { headers: { accept: "application/json" } });
    return { status: answer.status, role: answer.ok ? ((await answer.json()) as { role?: string }).role : undefined };
  });
}

test("OIDC: the provider signs a learner in on the page they came from; signing out ends the provider's session", async ({ browser }) => {
  const s = server();
  const context = await browser.newContext(PHONE_BROWSER);
  const page = await context.newPage();
  // The organisation's link; the device remembers the organisation.
  await page.goto(`${s.url}/app/signin?org=${s.ways.orgId}`);
  await expect(providerButton(page)).toBeVisible();
  // A page that needs a session sends to sign-in, which goes to the provider and comes back there.
  await page.goto(`${s.url}/app/disciplines`);
  await page.waitForURL((u) => u.pathname === "/app/signin" && u.searchParams.get("next") === "/disciplines");
  await providerButton(page).click();
  await providerSignIn(page, "dr.wang");
  await page.waitForURL(`${s.url}/app/disciplines`);
  await expect(page.locator("h1").first()).toBeVisible();
  expect(await me(page)).toEqual({ status: 200, role: "learner" });

  // Signing out at Lectern: the page goes to the provider's end-session
  // URL, which ends its session and sends the browser back to the app.
  await page.goto(`${s.url}/app/me/security`);
  await page.getByText(zh.common.signOut, { exact: true }).click();
  await page.waitForURL((u) => u.pathname.startsWith("/app/signin"));
  expect((await me(page)).status).toBe(401);
  // The provider asks for credentials again: its session is gone.
  await providerButton(page).click();
  await providerSignIn(page, "dr.wang");
  await page.waitForURL((u) => u.origin === s.url && u.pathname.startsWith("/app"));
  expect(await me(page)).toEqual({ status: 200, role: "learner" });
  await context.close();
});

test("OIDC refused: a forged state brings the browser back to the sign-in page with the catalogue's message, not a JSON body", async ({ browser }) => {
  const s = server();
  const context = await browser.newContext(PHONE_BROWSER);
  const page = await context.newPage();
  // What a browser sent back by the provider with a stale or forged state sees.
  await page.goto(`${s.url}/api/v1/auth/oidc/${s.ways.orgId}/callback?code=forged&state=forged`);
  await page.waitForURL((u) => u.pathname === "/app/signin");
  await expect(page.getByRole("alert")).toHaveText(zh.errors.sign_in_rejected);
  // The code is shown once, then gone from the address.
  await expect.poll(() => new URL(page.url()).searchParams.has("error")).toBe(false);
  expect((await me(page)).status).toBe(401);
  await accessible(page, "learner sign-in after a refused callback");
  await context.close();
});

test("OIDC control: signing out of Lectern alone leaves the provider's session, which signs in again without asking", async ({ browser }) => {
  const s = server();
  const context = await browser.newContext(DESKTOP);
  const page = await context.newPage();
  await page.goto(`${s.url}/app/signin?org=${s.ways.orgId}`);
  await providerButton(page).click();
  await providerSignIn(page, "dr.zhou");
  await page.waitForURL(`${s.url}/app/`);
  // Lectern's plain sign-out, which does not tell the provider.
  const status = await page.evaluate(async () => (await fetch("/api/v1/auth/logout", { method: "POST" })).status);
  expect(status).toBeLessThan(300);
  expect((await me(page)).status).toBe(401);
  const logins: string[] = [];
  page.on("request", (r) => {
    if (r.method() === "POST" && /\/interaction\/[^/]+\/login$/.test(new URL(r.url()).pathname)) logins.push(r.url());
  });
  await page.goto(`${s.url}/app/signin`);
  await providerButton(page).click();
  // Straight back, signed in: the provider's session answered for the person.
  await page.waitForURL(`${s.url}/app/`);
  expect(await me(page)).toEqual({ status: 200, role: "learner" });
  expect(logins, "the provider asked for no credentials").toEqual([]);
  await context.close();
});

test("SMS: a code from the outbox signs in; a wrong one shows the catalogue's message", async ({ browser }) => {
  const s = server();
  const context = await browser.newContext(PHONE_BROWSER);
  const page = await context.newPage();
  await page.goto(`${s.url}/app/signin?org=${s.ways.orgId}`);
  await page.getByRole("tab", { name: zh.signIn.sms }).click();
  await page.locator('input[name="phone"]').fill(PHONE);
  const mark = outboxMark(s);
  await page.getByRole("button", { name: zh.signIn.sendCode }).click();
  // The same answer whether or not the number has an account; then the countdown.
  await expect(page.locator('p[role="status"]')).toContainText(zh.signIn.codeSent.split("，")[0]!);
  await expect(page.getByRole("button", { name: /秒后可重新发送/ })).toBeDisabled();
  const code = await codeSentTo(s, PHONE_E164, mark);
  await shoot(page, "learner-signin-sms");
  await accessible(page, "learner sign-in, SMS code sent");
  const wrong = code === "000000" ? "111111" : "000000";
  await page.locator('input[name="code"]').fill(wrong);
  await page.getByRole("button", { name: zh.common.signIn, exact: true }).click();
  await expect(page.getByRole("alert")).toHaveText(zh.errors.invalid_code);
  await page.locator('input[name="code"]').fill(code);
  await page.getByRole("button", { name: zh.common.signIn, exact: true }).click();
  await page.waitForURL(`${s.url}/app/`);
  expect(await me(page)).toEqual({ status: 200, role: "learner" });
  await context.close();
});

test("LDAP: the directory's people sign in, a doctor to the learner app and an editor to the console", async ({ browser }) => {
  const s = server();
  test.skip(!s.ways.ldap, "slapd is not installed (infra/dev/setup test)");
  const context = await browser.newContext(PHONE_BROWSER);
  const page = await context.newPage();
  await page.goto(`${s.url}/app/signin?org=${s.ways.orgId}`);
  await page.getByRole("tab", { name: zh.signIn.ldap }).click();
  await page.locator('input[name="login"]').fill("zhang.wei");
  await page.locator('input[name="directory-password"]').fill("not-the-password");
  await page.getByRole("button", { name: zh.common.signIn, exact: true }).click();
  await expect(page.getByRole("alert")).toHaveText(zh.signIn.directoryRejected);
  await page.locator('input[name="directory-password"]').fill("doctor-pass-1");
  await page.getByRole("button", { name: zh.common.signIn, exact: true }).click();
  await page.waitForURL(`${s.url}/app/`);
  expect(await me(page)).toEqual({ status: 200, role: "learner" });
  await context.close();

  const console = await browser.newContext(DESKTOP);
  const admin = await console.newPage();
  await admin.goto(`${s.url}/admin/signin?org=${s.ways.orgId}`);
  await admin.getByRole("tab", { name: zh.signIn.ldap }).click();
  await admin.locator('input[name="login"]').fill("li.na");
  await admin.locator('input[name="directory-password"]').fill("editor-pass-2");
  await shoot(admin, "admin-signin-ldap");
  await accessible(admin, "console sign-in, directory");
  await admin.getByRole("button", { name: zh.common.signIn, exact: true }).click();
  await admin.waitForURL((u) => u.pathname.startsWith("/admin") && !u.pathname.endsWith("/signin"));
  expect(await me(admin)).toEqual({ status: 200, role: "content_admin" });
  await console.close();
});

test("WeChat: inside WeChat the learner app goes to the official account's authorisation by itself, not in a mini-program", async ({ browser }) => {
  const s = server();
  const OFFICIAL = "wx00000000000000e2";
  await allowWeChat(s, OFFICIAL);
  const context = await browser.newContext(MOBILE);
  // WeChat's authorisation page cannot be reached from a test, nor should
  // it be: the request to Lectern's authorize route is made by the test
  // without following its redirect, the redirect's target is checked, and
  // the page is answered here.
  const authorize = `/api/v1/auth/wechat/${OFFICIAL}/authorize`;
  const asked: Array<{ status: number; location: string; returnTo: string | null }> = [];
  await context.route((u) => u.pathname === authorize, async (route) => {
    const answer = await route.fetch({ maxRedirects: 0 });
    asked.push({ status: answer.status(), location: answer.headers()["location"] ?? "", returnTo: new URL(route.request().url()).searchParams.get("return_to") });
    await route.fulfill({ status: 200, contentType: "text/html", body: "<!DOCTYPE html><title>WeChat</title>" });
  });
  const page = await context.newPage();
  await page.goto(`${s.url}/app/signin?org=${s.ways.orgId}&next=/search`);
  await expect.poll(() => asked.length).toBe(1);
  expect(asked[0]!.status).toBe(303);
  expect(asked[0]!.returnTo).toBe("/app/search");
  const wechat = new URL(asked[0]!.location);
  expect(wechat.origin + wechat.pathname).toBe("https://open.weixin.qq.com/connect/oauth2/authorize");
  expect(wechat.searchParams.get("appid")).toBe(OFFICIAL);
  expect(wechat.searchParams.get("scope")).toBe("snsapi_base");
  expect(wechat.searchParams.get("redirect_uri")).toBe(`${s.url}/api/v1/auth/wechat/${OFFICIAL}/callback`);
  await context.close();

  // A mini-program's web-view signs in with wx.login in the mini-program: the forms stay.
  const mini = await browser.newContext({ ...MOBILE, userAgent: `${MOBILE.userAgent} miniProgram` });
  const left: string[] = [];
  await mini.route((u) => u.pathname === authorize, (route) => {
    left.push(route.request().url());
    return route.abort();
  });
  const web = await mini.newPage();
  await web.goto(`${s.url}/app/signin?org=${s.ways.orgId}`);
  await expect(web.getByRole("tab", { name: zh.signIn.sms })).toBeVisible();
  await expect(providerButton(web)).toBeVisible();
  expect(left).toEqual([]);
  await mini.close();
});
