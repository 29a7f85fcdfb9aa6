// The ways in besides email and password, for both apps' sign-in screens:
// which ones the organisation allows (its public sign-in policy), SMS
// codes, the organisation's directory (LDAP), and the two that leave the
// page for another site and come back signed in — the organisation's
// OpenID provider and WeChat's official-account authorisation.
//
// Which organisation: the link an organisation shares carries its id
// (`/app/signin?org=<id>`, like sign-up); it is remembered on the device,
// so signing out (which lands on the sign-in screen without the query)
// still offers the same ways in.

import { computed, getCurrentInstance, onBeforeUnmount, ref, watch, type Ref } from "vue";

import { api, ApiError, ok, type paths, type Schemas } from "./api";
import { errorText, i18n } from "./i18n";
import { loadSession, signIn, type Person } from "./session";

export type SignInPolicy = Schemas["PolicyAnswer"];
export type SignInMethod = Schemas["SignInMethod"];

const ORG_KEY = "lectern.signInOrg";
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** The organisation to sign in to: the link's `org`, else the one remembered. */
export function signInOrganisation(fromLink: unknown): string | null {
  if (typeof fromLink === "string" && UUID.test(fromLink)) {
    try {
      localStorage.setItem(ORG_KEY, fromLink);
    } catch {
      // Storage can be off in private webviews: this visit still knows it.
    }
    return fromLink;
  }
  try {
    const saved = localStorage.getItem(ORG_KEY);
    return saved && UUID.test(saved) ? saved : null;
  } catch {
    return null;
  }
}

/** The organisation's sign-in policy, or null (unknown organisation, or the API unreachable: passwords only). */
export async function loadSignInPolicy(org: string | null): Promise<SignInPolicy | null> {
  if (!org) return null;
  const { data, response } = await api.GET("/api/v1/organisations/{org_id}/sign-in-policy", { params: { path: { org_id: org } } });
  return response.ok && data ? data : null;
}

/** Asks for a sign-in code; the answer is the same whether or not the number has an account. */
export async function requestSmsCode(org: string, phone: string): Promise<Schemas["PhoneCodeSent"]> {
  return ok(api.POST("/api/v1/auth/sms/code", { body: { org_id: org, phone } }));
}

export async function signInWithSms(org: string, phone: string, code: string): Promise<Person | null> {
  await ok(api.POST("/api/v1/auth/sms/sign-in", { body: { org_id: org, phone, code } }));
  return loadSession(true);
}

export async function signInWithDirectory(org: string, login: string, password: string): Promise<Person | null> {
  await ok(api.POST("/api/v1/auth/ldap/sign-in", { body: { org_id: org, login, password } }));
  return loadSession(true);
}

// The two browser flows are top-level navigations, not calls: the paths
// are typed by the generated `paths`, so a renamed route fails the build.
const OIDC_START: keyof paths = "/api/v1/auth/oidc/{org_id}/start";
const WECHAT_AUTHORIZE: keyof paths = "/api/v1/auth/wechat/{appid}/authorize";

/**
 * Where "sign in with the provider" goes: the API starts the flow and the
 * provider sends the browser back to `returnTo` (a path of this site) signed in.
 */
export function oidcStartUrl(org: string, returnTo: string): string {
  const query = new URLSearchParams({ return_to: returnTo });
  return `${OIDC_START.replace("{org_id}", encodeURIComponent(org))}?${query}`;
}

/** The official account's web authorisation (silent `snsapi_base`), back at `returnTo`. */
export function wechatAuthorizeUrl(appid: string, returnTo: string): string {
  const query = new URLSearchParams({ return_to: returnTo });
  return `${WECHAT_AUTHORIZE.replace("{appid}", encodeURIComponent(appid))}?${query}`;
}

/**
 * WeChat's own browser (an official account's page, a chat link), where the
 * official-account authorisation works — not a mini-program's web-view,
 * whose user agent also says `miniProgram` and which signs in with
 * `wx.login` in the mini-program instead.
 */
export function inWeChatBrowser(userAgent: string = typeof navigator === "undefined" ? "" : navigator.userAgent): boolean {
  return /MicroMessenger/i.test(userAgent) && !/miniProgram/i.test(userAgent);
}

/** The provider's name for its button: its issuer's host. */
export function providerName(issuer: string | null | undefined): string {
  if (!issuer) return "";
  try {
    return new URL(issuer).host;
  } catch {
    return issuer;
  }
}

/** A path of this site to come back to: `next` when it is one, else `fallback`. */
export function localReturn(next: unknown, fallback: string): string {
  return typeof next === "string" && next.startsWith("/") && !next.startsWith("//") && !next.startsWith("/\\") ? next : fallback;
}

/** The resend countdown after a code is sent: `seconds` left, `start()` again on resend. */
export function useCountdown(length = 60): { seconds: Ref<number>; start: () => void } {
  const seconds = ref(0);
  let timer: ReturnType<typeof setInterval> | undefined;
  const stop = () => {
    if (timer !== undefined) clearInterval(timer);
    timer = undefined;
  };
  const start = () => {
    stop();
    seconds.value = length;
    timer = setInterval(() => {
      seconds.value -= 1;
      if (seconds.value <= 0) stop();
    }, 1000);
  };
  if (getCurrentInstance()) onBeforeUnmount(stop);
  return { seconds, start };
}

const WECHAT_TRIED = "lectern.wechatTried";

/**
 * Inside WeChat's browser, an organisation with an official account signs
 * in by its authorisation, without a form. Once per tab and minute: coming
 * back to the sign-in screen right after (the authorisation did not end
 * signed in) shows the form instead of going round again.
 */
export function autoWeChat(policy: SignInPolicy | null, returnTo: string): boolean {
  const appid = policy?.wechat_official_account;
  if (!appid || !policy.methods.includes("wechat") || !inWeChatBrowser()) return false;
  try {
    const tried = Number(sessionStorage.getItem(WECHAT_TRIED) ?? 0);
    if (Date.now() - tried < 60_000) return false;
    sessionStorage.setItem(WECHAT_TRIED, String(Date.now()));
  } catch {
    // No storage: go anyway (the flow itself cannot loop without it coming back here).
  }
  location.replace(wechatAuthorizeUrl(appid, returnTo));
  return true;
}

export type SignInWay = "password" | "sms" | "ldap";

/**
 * What both apps' sign-in screens share: the organisation's policy and the
 * ways it allows, the chosen form, the busy flag and the error line, a
 * sign-in attempt that goes on to `next`, and the SMS code request with
 * its note and resend countdown. Each screen keeps its own fields, layout
 * and what happens on arrival (the learner app's WeChat hand-over).
 */
export function useSignInForm(org: string | null, goOn: () => Promise<unknown>) {
  const t = i18n.global.t;
  const policy = ref<SignInPolicy | null>(null);
  const way = ref<SignInWay>("password");
  const error = ref("");
  const busy = ref(false);
  const codeNote = ref("");
  const { seconds, start: startCountdown } = useCountdown();
  const allows = (method: "sms" | "ldap" | "oidc") => !!policy.value?.methods.includes(method);
  const provider = computed(() => (allows("oidc") && policy.value?.oidc_issuer ? providerName(policy.value.oidc_issuer) : ""));
  watch(way, () => (error.value = ""));

  const loadPolicy = async () => (policy.value = await loadSignInPolicy(org));

  // `invalid_credentials` says "email or password" in the catalogue; for
  // the directory it is the username.
  async function attempt(run: () => Promise<unknown>, directory = false): Promise<void> {
    error.value = "";
    busy.value = true;
    try {
      await run();
      await goOn();
    } catch (e) {
      error.value = directory && e instanceof ApiError && e.code === "invalid_credentials" ? t("signIn.directoryRejected") : errorText(e);
    } finally {
      busy.value = false;
    }
  }

  const withPassword = (email: string, password: string) => attempt(() => signIn(email, password));
  function withSms(phone: string, code: string): Promise<void> | void {
    if (!/^[0-9]{6}$/.test(code.trim())) {
      error.value = t("signIn.codeInvalid");
      return;
    }
    return attempt(() => signInWithSms(org!, phone.trim(), code.trim()));
  }
  const withDirectory = (login: string, password: string) => attempt(() => signInWithDirectory(org!, login.trim(), password), true);

  async function sendCode(phone: string): Promise<void> {
    error.value = "";
    if (!PHONE_PATTERN.test(phone.trim())) {
      error.value = t("signIn.phoneInvalid");
      return;
    }
    try {
      const sent = await requestSmsCode(org!, phone.trim());
      const minutes = Math.max(1, Math.round((Date.parse(sent.expires_at) - Date.now()) / 60_000));
      codeNote.value = t("signIn.codeSent", { minutes });
      startCountdown();
    } catch (e) {
      error.value = errorText(e);
    }
  }

  return { policy, way, error, busy, codeNote, seconds, allows, provider, loadPolicy, withPassword, withSms, withDirectory, sendCode };
}

/** What a phone number looks like before it is sent (the API checks it properly). */
export const PHONE_PATTERN = /^\+?[0-9][0-9 -]{6,19}$/;
