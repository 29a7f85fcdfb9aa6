// player.ts: what the player does when the media origin refuses its token
// (a new playback session, boundedly, then a fatal error), with other
// fatal errors, and how captions are switched and remembered. hls.js is a stand-in here (the real one is exercised by
// the browser end-to-end test); the API is a stand-in answering fetch.
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";

vi.mock("hls.js", () => {
  type Handler = (event: string, data: unknown) => void;
  class FakeHls {
    static instances: FakeHls[] = [];
    static isSupported = () => true;
    config: Record<string, unknown>;
    levels: unknown[] = [];
    autoLevelEnabled = true;
    private level = -1;
    get currentLevel() {
      return this.level;
    }
    set currentLevel(index: number) {
      this.level = index;
      this.autoLevelEnabled = index === -1;
    }
    /** What automatic selection chose (no manual choice). */
    abrChose(index: number) {
      this.level = index;
    }
    subtitleTracks: Array<{ name: string; lang?: string; default: boolean }> = [];
    subtitleTrack = -1;
    subtitleDisplay = true;
    loaded: string[] = [];
    startLoads = 0;
    stopLoads = 0;
    recoveries = 0;
    destroyed = false;
    private handlers = new Map<string, Handler[]>();
    constructor(config: Record<string, unknown>) {
      this.config = { ...config };
      FakeHls.instances.push(this);
    }
    on(event: string, handler: Handler) {
      this.handlers.set(event, [...(this.handlers.get(event) ?? []), handler]);
    }
    emit(event: string, data: unknown) {
      for (const handler of this.handlers.get(event) ?? []) handler(event, data);
    }
    loadSource(url: string) {
      this.loaded.push(url);
    }
    attachMedia() {}
    startLoad() {
      this.startLoads += 1;
    }
    stopLoad() {
      this.stopLoads += 1;
    }
    recoverMediaError() {
      this.recoveries += 1;
    }
    destroy() {
      this.destroyed = true;
    }
  }
  return {
    default: FakeHls,
    Events: {
      MANIFEST_PARSED: "hlsManifestParsed",
      LEVEL_SWITCHED: "hlsLevelSwitched",
      ERROR: "hlsError",
      FRAG_LOADED: "hlsFragLoaded",
      SUBTITLE_TRACKS_UPDATED: "hlsSubtitleTracksUpdated",
      SUBTITLE_TRACK_SWITCH: "hlsSubtitleTrackSwitch",
    },
    ErrorTypes: { NETWORK_ERROR: "networkError", MEDIA_ERROR: "mediaError", OTHER_ERROR: "otherError" },
  };
});

import Hls from "hls.js";

import { LecternPlayer, MAX_NETWORK_RETRIES, MAX_TOKEN_REFRESHES, type PlayerError } from "../../src/player";

interface FakeHlsInstance {
  config: Record<string, unknown>;
  loaded: string[];
  startLoads: number;
  stopLoads: number;
  recoveries: number;
  destroyed: boolean;
  subtitleTracks: Array<{ name: string; lang?: string; default: boolean }>;
  subtitleTrack: number;
  subtitleDisplay: boolean;
  levels: unknown[];
  abrChose(index: number): void;
  emit(event: string, data: unknown): void;
}
const instances = (Hls as unknown as { instances: FakeHlsInstance[] }).instances;

/** The API: playback sessions numbered 1, 2, …; refusals on demand; every request recorded. */
class FakeApi {
  sessions = 0;
  refuseWith: { status: number; code: string } | null = null;
  requests: Array<{ url: string; body: unknown }> = [];
  fetch = async (input: RequestInfo | URL, init?: RequestInit): Promise<Response> => {
    const url = String(input);
    this.requests.push({ url, body: init?.body ? JSON.parse(String(init.body)) : null });
    const json = (status: number, body: unknown) => new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json" } });
    if (url.endsWith("/api/v1/lessons/L1/playback")) {
      if (this.refuseWith) return json(this.refuseWith.status, { error: { code: this.refuseWith.code, message: "no" } });
      this.sessions += 1;
      return json(200, {
        lesson_id: "L1",
        course_id: "C1",
        asset_id: "A1",
        playback_id: `P${this.sessions}`,
        master_url: `/media/a1/master.m3u8?token=T${this.sessions}`,
        resume_position_s: 0,
        duration_s: 60,
        speed: 1,
        completion: 0,
        completed: false,
      });
    }
    return new Response(null, { status: 204 });
  };
  qoeKinds(): string[] {
    return this.requests
      .filter((r) => r.url.endsWith("/api/v1/qoe"))
      .flatMap((r) => (r.body as { events: Array<{ kind: string }> }).events.map((e) => e.kind));
  }
}

const REFUSED = { type: "networkError", fatal: true, details: "fragLoadError", response: { code: 403, text: "Forbidden" } };

let api: FakeApi;
let video: HTMLVideoElement;
let errors: PlayerError[];

async function startPlayer(storage: Storage | null = null): Promise<{ player: LecternPlayer; hls: FakeHlsInstance }> {
  const player = new LecternPlayer(video, { lessonId: "L1", apiBase: "http://lectern.test", storage, heartbeatMs: 60_000 });
  player.on("error", (e) => errors.push(e));
  await vi.waitFor(() => expect(instances).toHaveLength(1));
  video.dispatchEvent(new Event("loadedmetadata"));
  await player.ready;
  return { player, hls: instances[0]! };
}

beforeEach(() => {
  instances.length = 0;
  api = new FakeApi();
  vi.stubGlobal("fetch", api.fetch);
  video = document.createElement("video");
  document.body.append(video);
  errors = [];
});

afterEach(() => {
  vi.unstubAllGlobals();
  video.remove();
});

describe("a refused token", () => {
  it("gets a new playback session and continues from the same position", async () => {
    const { player, hls } = await startPlayer();
    expect(hls.loaded).toEqual(["http://lectern.test/media/a1/master.m3u8?token=T1"]);
    Object.defineProperty(video, "currentTime", { value: 42.5, writable: true });

    hls.emit("hlsError", REFUSED);
    await vi.waitFor(() => expect(hls.loaded).toHaveLength(2));
    expect(hls.loaded[1]).toBe("http://lectern.test/media/a1/master.m3u8?token=T2");
    expect(hls.config.startPosition).toBe(42.5);
    expect(hls.stopLoads).toBe(1);
    expect(hls.startLoads, "the refused URL is not retried").toBe(0);
    expect(player.session?.playback_id, "heartbeats go to the new session").toBe("P2");
    expect(errors).toEqual([]);
    player.destroy();
  });

  it("is refreshed a bounded number of times in a row, then playback fails for good", async () => {
    const { player, hls } = await startPlayer();
    for (let i = 1; i <= MAX_TOKEN_REFRESHES; i++) {
      hls.emit("hlsError", REFUSED);
      // Done once the new master URL is loaded.
      await vi.waitFor(() => expect(hls.loaded).toHaveLength(1 + i));
    }
    expect(errors).toEqual([]);
    hls.emit("hlsError", REFUSED);
    await vi.waitFor(() => expect(errors).toHaveLength(1));
    expect(errors[0]).toMatchObject({ code: "playback_token_refused", fatal: true });
    expect(api.sessions, "no session beyond the bound").toBe(1 + MAX_TOKEN_REFRESHES);
    expect(hls.destroyed).toBe(true);
    await vi.waitFor(() => expect(api.qoeKinds()).toContain("fatal_error"));
    player.destroy();
  });

  it("counts only refusals in a row: a loaded fragment resets the bound", async () => {
    const { player, hls } = await startPlayer();
    for (let round = 0; round < 2; round++) {
      for (let i = 0; i < MAX_TOKEN_REFRESHES; i++) {
        const before = hls.loaded.length;
        hls.emit("hlsError", REFUSED);
        await vi.waitFor(() => expect(hls.loaded).toHaveLength(before + 1));
      }
      hls.emit("hlsFragLoaded", {});
    }
    expect(api.sessions).toBe(1 + 2 * MAX_TOKEN_REFRESHES);
    expect(errors).toEqual([]);
    player.destroy();
  });

  it("is fatal at once when the API refuses the new session (signed out)", async () => {
    const { player, hls } = await startPlayer();
    api.refuseWith = { status: 401, code: "unauthenticated" };
    hls.emit("hlsError", { ...REFUSED, response: { code: 401, text: "Unauthorized" } });
    await vi.waitFor(() => expect(errors).toHaveLength(1));
    expect(errors[0]).toMatchObject({ code: "unauthenticated", fatal: true });
    expect(hls.destroyed).toBe(true);
    player.destroy();
  });
});

describe("other fatal errors", () => {
  it("reload a bounded number of times after network errors, then fail", async () => {
    const { player, hls } = await startPlayer();
    const lost = { type: "networkError", fatal: true, details: "fragLoadTimeOut" };
    for (let i = 0; i < MAX_NETWORK_RETRIES; i++) hls.emit("hlsError", lost);
    expect(hls.startLoads).toBe(MAX_NETWORK_RETRIES);
    expect(errors).toEqual([]);
    hls.emit("hlsError", lost);
    expect(errors).toEqual([expect.objectContaining({ code: "player_fragLoadTimeOut", fatal: true })]);
    expect(api.sessions, "a lost connection is not a token problem").toBe(1);
    player.destroy();
  });

  it("ignore non-fatal errors that are not refusals", async () => {
    const { player, hls } = await startPlayer();
    hls.emit("hlsError", { type: "networkError", fatal: false, details: "fragLoadError", response: { code: 500 } });
    expect(hls.startLoads + hls.stopLoads).toBe(0);
    expect(api.sessions).toBe(1);
    expect(errors).toEqual([]);
    player.destroy();
  });
});

/** A Storage of one map, as localStorage behaves. */
function memoryStorage(): Storage {
  const map = new Map<string, string>();
  return {
    get length() {
      return map.size;
    },
    clear: () => map.clear(),
    getItem: (k) => map.get(k) ?? null,
    key: (i) => [...map.keys()][i] ?? null,
    removeItem: (k) => void map.delete(k),
    setItem: (k, v) => void map.set(k, v),
  };
}

const TRACKS = [
  { name: "中文", lang: "zh-CN", default: true },
  { name: "English", lang: "en", default: false },
];

describe("captions", () => {
  it("lists the master's tracks, switches them off and on, and remembers the choice", async () => {
    const storage = memoryStorage();
    const { player, hls } = await startPlayer(storage);
    const seen: unknown[] = [];
    player.on("captions", (list) => seen.push(list));
    hls.subtitleTracks = TRACKS;
    hls.subtitleTrack = 0;
    hls.emit("hlsSubtitleTracksUpdated", {});
    expect(seen).toEqual([
      [
        { index: 0, language: "zh-CN", label: "中文", default: true },
        { index: 1, language: "en", label: "English", default: false },
      ],
    ]);
    expect(player.caption, "the default track shows as the playlist says").toBe(0);

    const changes: unknown[] = [];
    player.on("captionchange", (c) => changes.push(c));
    player.setCaption(-1);
    expect(hls.subtitleDisplay).toBe(false);
    expect(player.caption).toBe(-1);
    player.setCaption(1);
    expect([hls.subtitleDisplay, hls.subtitleTrack]).toEqual([true, 1]);
    expect(changes).toEqual([
      { index: -1, language: null },
      { index: 1, language: "en" },
    ]);
    player.setCaption(5);
    expect(errors.map((e) => e.code)).toEqual(["invalid_caption"]);
    player.destroy();

    // The next lesson (same device) starts with English, not the partner's default.
    instances.length = 0;
    errors = [];
    const next = await startPlayer(storage);
    next.hls.subtitleTracks = [
      { name: "中文", lang: "zh-CN", default: true },
      { name: "English (US)", lang: "en-US", default: false },
    ];
    next.hls.subtitleTrack = 0;
    next.hls.emit("hlsSubtitleTracksUpdated", {});
    expect([next.hls.subtitleDisplay, next.hls.subtitleTrack]).toEqual([true, 1]);
    next.player.setCaption(-1);
    next.player.destroy();

    // Off stays off.
    instances.length = 0;
    const third = await startPlayer(storage);
    third.hls.subtitleTracks = TRACKS;
    third.hls.subtitleTrack = 0;
    third.hls.emit("hlsSubtitleTracksUpdated", {});
    expect(third.hls.subtitleDisplay).toBe(false);
    expect(third.player.caption).toBe(-1);
    third.player.destroy();
  });
});

describe("quality", () => {
  it("choosing the rung automatic selection already plays still turns automatic off", async () => {
    const { player, hls } = await startPlayer();
    hls.levels = [{ height: 360, width: 640, bitrate: 900_000 }, { height: 720, width: 1280, bitrate: 2_500_000 }];
    hls.abrChose(0);
    const changes: unknown[] = [];
    player.on("qualitychange", (q) => changes.push(q));
    player.setQuality(0);
    expect(changes).toEqual([{ auto: false, index: 0, height: 360, bitrate: 900_000 }]);
    expect(player.quality).toBe(0);
    player.destroy();
  });
});
