// Signing the app in from a WeChat mini-program's `web-view`, which has
// its own cookie jar: the mini-program mints a single-use hand-off code
// (`POST /api/v1/auth/handoff`) and opens `/app/#handoff=<code>` (with
// `&org=<organisation id>` when it names its organisation). The code is in
// the fragment, which no server, proxy log or Referer ever sees.
//
// This module takes the code out of the address AS IT IS IMPORTED — main.ts
// imports it first — because vue-router's history reads the address when
// router.ts is evaluated and would write it back on its first navigation.
// `redeemHandoff()` then trades it for the ordinary HttpOnly cookie session
// before the app mounts. A refused code (used, expired, forged) leaves the
// page signed out with a toast saying why; nothing here blocks in a
// web-view (no window.open, alert, confirm, prompt or downloads).
import { showFailToast } from "vant";

import { api, loadSession, ok } from "@lectern/shared";
import { errorText } from "@lectern/shared/i18n";

interface Pending {
  code: string;
  orgId: string | null;
}

function take(): Pending | null {
  if (typeof location === "undefined" || !location.hash.includes("handoff=")) return null;
  const params = new URLSearchParams(location.hash.slice(1));
  const code = params.get("handoff");
  const orgId = params.get("org");
  params.delete("handoff");
  params.delete("org");
  const rest = params.toString();
  // Replaced, not pushed: Back must not return to the code either.
  history.replaceState(history.state, "", `${location.pathname}${location.search}${rest ? `#${rest}` : ""}`);
  return code ? { code, orgId } : null;
}

const pending = take();

/** Whether the page runs in a mini-program's `web-view` (not WeChat's browser). */
export function inMiniProgram(): boolean {
  if (typeof window === "undefined") return false;
  const env = (window as { __wxjs_environment?: string }).__wxjs_environment;
  return env === "miniprogram" || /miniProgram/i.test(navigator.userAgent);
}

/** Redeems the code the address carried, if any (once per page load). */
export async function redeemHandoff(): Promise<void> {
  if (!pending) return;
  const { code, orgId } = pending;
  try {
    await ok(api.POST("/api/v1/auth/handoff/redeem", { body: { code, org_id: orgId } }));
    await loadSession(true);
  } catch (error) {
    showFailToast(errorText(error));
  }
}
