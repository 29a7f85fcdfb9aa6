// The one way both apps talk to Lectern: an openapi-fetch client typed by
// `generated/api.ts`, which openapi-typescript makes from the checked-in
// api/openapi.json (`npm run generate`; `scripts/check-api-types.mjs` fails
// when it is stale). Every request and response shape the apps use is a
// type of that file: a server change breaks the build, not a screen.

import createClient, { type Middleware } from "openapi-fetch";

import type { components, paths } from "./generated/api";

export type { components, paths };
/** Every schema of the API, by its OpenAPI name. */
export type Schemas = components["schemas"];
export type ErrorCode = Schemas["ErrorCode"];

/** A failed call: the status and the stable code of `{"error":{"code","message"}}`. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: ErrorCode | `http_${number}`,
    message: string,
  ) {
    super(message);
    this.name = "ApiError";
  }
}

type Listener = (error: ApiError) => void;
const unauthorisedListeners = new Set<Listener>();

/** Called when the API answers 401 (the session ended): the apps go to sign-in. */
export function onUnauthorised(listener: Listener): () => void {
  unauthorisedListeners.add(listener);
  return () => unauthorisedListeners.delete(listener);
}

const SIGN_IN_PATHS = ["/api/v1/auth/login", "/api/v1/auth/sms/sign-in", "/api/v1/auth/ldap/sign-in"];

const watchUnauthorised: Middleware = {
  onResponse({ response, request }) {
    // Signing in itself answers 401 for a wrong password or a refused
    // sign-in: not a lost session.
    if (response.status === 401 && !SIGN_IN_PATHS.some((p) => request.url.includes(p))) {
      const error = new ApiError(401, "unauthenticated", "signed out");
      for (const listener of unauthorisedListeners) listener(error);
    }
    return undefined;
  },
};

/**
 * The client. Same origin as the page (`lectern serve` serves the apps),
 * the HttpOnly session cookie authenticates: no token in script reach.
 */
export const api = createClient<paths>({
  baseUrl: typeof location === "undefined" ? "http://localhost" : location.origin,
  credentials: "same-origin",
  headers: { accept: "application/json" },
});
api.use(watchUnauthorised);

interface Answer<T> {
  data?: T;
  error?: unknown;
  response: Response;
}

/**
 * The data of a call, or an [`ApiError`] thrown with the server's code.
 * `await ok(api.GET("/api/v1/me"))`.
 */
export async function ok<T>(call: Promise<Answer<T>>): Promise<T> {
  const { data, error, response } = await call;
  if (response.ok) return data as T;
  throw toApiError(response, error);
}

export function toApiError(response: Response, error: unknown): ApiError {
  const body = error as Partial<Schemas["ErrorBody"]> | undefined;
  if (body && typeof body === "object" && body.error?.code) {
    return new ApiError(response.status, body.error.code, body.error.message ?? body.error.code);
  }
  return new ApiError(response.status, `http_${response.status}`, `HTTP ${response.status}`);
}
