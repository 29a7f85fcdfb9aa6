// Who is signed in, for both apps. The session itself is the HttpOnly
// `lectern_session` cookie the API sets on sign-in; the page only keeps
// `GET /api/v1/me` in a reactive object, and forgets it on sign-out or on
// any 401 (see `onUnauthorised`).

import { reactive } from "vue";

import { api, ok, onUnauthorised, type Schemas } from "./api";

type Me = Schemas["Me"];
/** A signed-in person as `GET /api/v1/me` describes them. */
export type Person = Extract<Me, { kind: "user" }>;
export type Role = Schemas["Role"];

export const session = reactive<{ me: Person | null; checked: boolean }>({ me: null, checked: false });

onUnauthorised(() => {
  session.me = null;
});

/** Asks the API who the cookie belongs to (once, unless `force`). */
export async function loadSession(force = false): Promise<Person | null> {
  if (session.checked && !force) return session.me;
  const { data, response } = await api.GET("/api/v1/me");
  session.checked = true;
  session.me = response.ok && data && data.kind === "user" ? data : null;
  return session.me;
}

export async function signIn(email: string, password: string): Promise<Person | null> {
  await ok(api.POST("/api/v1/auth/login", { body: { email, password } }));
  return loadSession(true);
}

/**
 * Ends this session. One that came from the organisation's OpenID provider
 * is ended there too: the API answers the provider's end-session URL and
 * the page goes there (the provider then sends the browser back to the
 * learner app), so the next "sign in with the provider" asks again.
 * Resolves `true` when the page is leaving for the provider.
 */
export async function signOut(): Promise<boolean> {
  const { data } = await api.POST("/api/v1/auth/oidc/logout");
  session.me = null;
  if (data?.end_session_url) {
    location.assign(data.end_session_url);
    return true;
  }
  return false;
}

/** Whether the signed-in person holds one of `roles`. */
export function hasRole(...roles: Role[]): boolean {
  return !!session.me && roles.includes(session.me.role);
}
