// The few Lectern API calls the player makes. Two ways to authenticate:
// the `lectern_session` cookie a web page already has (the default), or a
// bearer token for mini-program and H5 webviews that cannot share cookies.

import type { components } from "./generated/api.js";
import type { QoeEvent } from "./qoe.js";

export type Auth = "cookie" | { bearer: string };

// The request and response shapes come from the API's OpenAPI document
// (`npm run generate`), so a change on the server fails this build instead
// of a player in the field.
type Schemas = components["schemas"];

/** `POST /api/v1/lessons/{id}/playback`: what the player starts from. */
export type PlaybackSession = Schemas["PlaybackSession"];

/** `POST /api/v1/progress`: where the player is, and what it played since its last beat. */
export type Heartbeat = Schemas["Heartbeat"];

/** `POST /api/v1/qoe`: what the player saw. */
export type QoeReport = Schemas["QoeReport"];

/** An API failure with the stable code of `{"error":{"code","message"}}`. */
export class LecternApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = "LecternApiError";
  }
}

export class Api {
  private readonly base: string;

  constructor(
    apiBase: string,
    private readonly auth: Auth,
  ) {
    this.base = apiBase.replace(/\/+$/, "");
  }

  /** An absolute URL for a path of the API (or a URL the API returned). */
  resolve(pathOrUrl: string): string {
    const origin = typeof location === "undefined" ? "http://localhost/" : location.href;
    return new URL(pathOrUrl, new URL(this.base + "/", origin)).toString();
  }

  async playback(lessonId: string): Promise<PlaybackSession> {
    const response = await fetch(this.resolve(`api/v1/lessons/${encodeURIComponent(lessonId)}/playback`), {
      ...this.init("POST"),
      body: "{}",
    });
    if (!response.ok) throw await apiError(response);
    const session = (await response.json()) as PlaybackSession;
    if (typeof session.master_url !== "string") {
      throw new LecternApiError(response.status, "invalid_playback_session", "the playback session has no master_url");
    }
    session.master_url = this.resolve(session.master_url);
    return session;
  }

  async heartbeat(beat: Heartbeat): Promise<void> {
    await this.post("api/v1/progress", beat);
  }

  /** QoE events of a playback; `playbackId` (when known) correlates them. */
  async qoe(lessonId: string, playbackId: string | undefined, events: QoeEvent[]): Promise<void> {
    const report: QoeReport = { lesson_id: lessonId, session_id: playbackId, events };
    await this.post("api/v1/qoe", report);
  }

  /**
   * A request that must outlive the page (pagehide). `sendBeacon` sends the
   * cookie but cannot set Authorization, and cross-origin it cannot send
   * JSON without a preflight, so bearer auth and other origins use a
   * keepalive fetch instead.
   */
  sendOnExit(path: string, body: unknown): void {
    const url = this.resolve(path);
    const json = JSON.stringify(body);
    const sameOrigin = typeof location !== "undefined" && new URL(url).origin === location.origin;
    if (this.auth === "cookie" && sameOrigin && typeof navigator !== "undefined" && navigator.sendBeacon) {
      if (navigator.sendBeacon(url, new Blob([json], { type: "application/json" }))) return;
    }
    void fetch(url, { ...this.init("POST"), body: json, keepalive: true }).catch(() => undefined);
  }

  private async post(path: string, body: unknown): Promise<void> {
    const response = await fetch(this.resolve(path), { ...this.init("POST"), body: JSON.stringify(body) });
    if (!response.ok) throw await apiError(response);
  }

  private init(method: string): RequestInit {
    const headers: Record<string, string> = { "content-type": "application/json", accept: "application/json" };
    if (this.auth !== "cookie") headers.authorization = `Bearer ${this.auth.bearer}`;
    // Cookies go to another origin only when the page asked for cookie auth.
    return { method, headers, credentials: this.auth === "cookie" ? "include" : "omit" };
  }
}

async function apiError(response: Response): Promise<LecternApiError> {
  try {
    const body = (await response.json()) as { error?: { code?: string; message?: string } };
    if (body.error?.code) {
      return new LecternApiError(response.status, body.error.code, body.error.message ?? body.error.code);
    }
  } catch {
    // Not our JSON (a proxy's error page): fall through to the status.
  }
  return new LecternApiError(response.status, "http_" + response.status, `the API answered ${response.status}`);
}
