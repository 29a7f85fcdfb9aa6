// The learner player: one HTMLVideoElement, played by hls.js where the
// browser has Media Source Extensions, else by the browser's own HLS
// (Safari, iOS, WeChat's webview). It starts where the learner stopped, at
// the speed they chose, shows the lesson's captions (the master playlist's
// SUBTITLES group) in the language the learner picked last, reports what
// they watched and what they waited for, and tells the host page what
// happens through `on(...)`.

import Hls, { ErrorTypes, Events } from "hls.js";

import { chooseSpeed, clampSpeed, IntervalTracker, startPosition, type RememberedSpeed } from "./accounting.js";
import { Api, LecternApiError, type Auth, type Heartbeat, type PlaybackSession } from "./api.js";
import { MAX_QOE_EVENTS, QoeTracker } from "./qoe.js";

export interface PlayerOptions {
  /** Where the Lectern API is; defaults to this page's origin. */
  apiBase?: string;
  lessonId: string;
  /** The session cookie (default) or a bearer token for webviews. */
  auth?: Auth;
  /** Start playing once loaded (browsers may refuse without a gesture). */
  autoplay?: boolean;
  /** How often a playing player reports progress; default 5000 ms. */
  heartbeatMs?: number;
  /** Where the chosen speed is remembered; default `localStorage`, `null` for nowhere. */
  storage?: Storage | null;
}

/** One entry of the quality menu; index -1 is automatic selection. */
export interface Quality {
  index: number;
  label: string;
  height: number | null;
  width: number | null;
  bitrate: number | null;
}

/** One caption track of the lesson; index -1 means captions off. */
export interface Caption {
  index: number;
  /** BCP-47 (`zh-CN`, `en`). */
  language: string;
  /** What the menu shows (`中文`, `English`). */
  label: string;
  /** The track the partner marked to show by default. */
  default: boolean;
}

export interface PlayerError {
  code: string;
  message: string;
  fatal: boolean;
}

export interface PlayerEvents {
  ready: { duration: number; position: number; speed: number; qualities: Quality[]; engine: "hls.js" | "native" };
  progress: Heartbeat;
  qualitychange: { auto: boolean; index: number; height: number | null; bitrate: number | null };
  qualities: Quality[];
  /** The caption tracks, once the master playlist is read (may be empty). */
  captions: Caption[];
  /** Captions switched (index -1 and language null: off). */
  captionchange: { index: number; language: string | null };
  ratechange: { speed: number };
  error: PlayerError;
}

type Listener<K extends keyof PlayerEvents> = (detail: PlayerEvents[K]) => void;

const SPEED_KEY = "lectern.player.speed";
/** The caption language the learner chose last on this device, or "off". */
const CAPTION_KEY = "lectern.player.captions";
/** The API's answer to a beat whose playback session it no longer knows. */
const SESSION_EXPIRED = "playback_session_expired";
/** At most one new playback session this often, whatever the API answers. */
const RENEW_AFTER_MS = 30_000;
/**
 * New playback sessions in a row after the media origin refused the token
 * (401/403: it expired after hours open, or the sign-in it is bound to
 * changed) before giving up with a fatal error. A fragment that loads
 * resets the count, so a player left open for days still refreshes.
 */
export const MAX_TOKEN_REFRESHES = 3;
/** Reloads after other fatal network errors, and recoveries after fatal media errors, before giving up. */
export const MAX_NETWORK_RETRIES = 3;
export const MAX_MEDIA_RECOVERIES = 2;
export const AUTO: Quality = { index: -1, label: "Auto", height: null, width: null, bitrate: null };
export const CAPTIONS_OFF: Caption = { index: -1, language: "", label: "Off", default: false };

export class LecternPlayer {
  readonly video: HTMLVideoElement;
  /** Settles once the session is loaded and playback can start (or failed). */
  readonly ready: Promise<void>;
  session: PlaybackSession | null = null;
  engine: "hls.js" | "native" | null = null;

  private readonly api: Api;
  private readonly lessonId: string;
  private readonly storage: Storage | null;
  private hls: Hls | null = null;
  private readonly tracker = new IntervalTracker();
  private readonly qoe = new QoeTracker();
  private readonly listeners = new Map<keyof PlayerEvents, Set<(detail: never) => void>>();
  private readonly cleanups: Array<() => void> = [];
  private timer: ReturnType<typeof setInterval> | null = null;
  private lastObservedAt = 0;
  private lastSent: { position: number; speed: number } | null = null;
  private lastBitrate: number | null = null;
  private renewedAt = -Infinity;
  private tokenRefreshes = 0;
  private refreshing = false;
  private networkRetries = 0;
  private mediaRecoveries = 0;
  private sending: Promise<void> = Promise.resolve();
  private destroyed = false;
  /**
   * Whether playback has begun. Until then `currentTime` may still be 0
   * while the engine seeks to the resume point, and a beat would move the
   * learner's resume point back to the start.
   */
  private started = false;

  constructor(element: HTMLElement, private readonly options: PlayerOptions) {
    if (!options.lessonId) throw new TypeError("createPlayer: lessonId is required");
    this.video = element instanceof HTMLVideoElement ? element : element.appendChild(document.createElement("video"));
    this.video.playsInline = true;
    this.api = new Api(options.apiBase ?? "", options.auth ?? "cookie");
    this.lessonId = options.lessonId;
    this.storage = options.storage === undefined ? safeLocalStorage() : options.storage;
    this.listen();
    this.ready = this.start();
  }

  on<K extends keyof PlayerEvents>(event: K, listener: Listener<K>): () => void {
    let set = this.listeners.get(event);
    if (!set) this.listeners.set(event, (set = new Set()));
    set.add(listener as (detail: never) => void);
    return () => this.off(event, listener);
  }

  off<K extends keyof PlayerEvents>(event: K, listener: Listener<K>): void {
    this.listeners.get(event)?.delete(listener as (detail: never) => void);
  }

  play(): Promise<void> {
    return this.video.play();
  }

  pause(): void {
    this.video.pause();
  }

  get speed(): number {
    return this.video.playbackRate;
  }

  /** Sets the speed (clamped to 0.5x–2x) and remembers it on this device. */
  setSpeed(speed: number): void {
    const s = clampSpeed(speed);
    this.video.defaultPlaybackRate = s;
    this.video.playbackRate = s;
  }

  /** The quality menu: automatic first, then each rung from the highest. */
  qualities(): Quality[] {
    if (!this.hls) return [AUTO];
    const rungs = this.hls.levels
      .map((level, index) => ({
        index,
        label: level.height ? `${level.height}p` : `${Math.round(level.bitrate / 1000)} kb/s`,
        height: level.height || null,
        width: level.width || null,
        bitrate: level.bitrate || null,
      }))
      .sort((a, b) => (b.height ?? 0) - (a.height ?? 0) || (b.bitrate ?? 0) - (a.bitrate ?? 0));
    return [AUTO, ...rungs];
  }

  /** The selected menu entry: -1 while automatic. */
  get quality(): number {
    if (!this.hls || this.hls.autoLevelEnabled) return -1;
    return this.hls.currentLevel;
  }

  /**
   * Picks a rung (switching now, dropping what was buffered at the old one)
   * or -1 for automatic selection. Native HLS chooses by itself: only -1.
   */
  setQuality(index: number): void {
    if (!this.hls) {
      if (index !== -1) this.fail("quality_unavailable", "this browser chooses the quality itself", false);
      return;
    }
    if (index !== -1 && !this.hls.levels[index]) {
      this.fail("invalid_quality", `there is no quality ${index}`, false);
      return;
    }
    // Choosing the rung already playing switches nothing, so hls.js says
    // nothing: the page still needs to hear that automatic selection is off.
    const unchanged = index !== -1 && this.hls.currentLevel === index;
    this.hls.currentLevel = index;
    if (index === -1 || unchanged) this.emitQuality();
  }

  /** The caption menu: the lesson's tracks in playlist order (not "off"). */
  captions(): Caption[] {
    if (this.hls) {
      return this.hls.subtitleTracks.map((t, index) => ({
        index,
        language: t.lang ?? "",
        label: t.name || t.lang || `#${index + 1}`,
        default: Boolean(t.default),
      }));
    }
    return this.nativeTextTracks().map((t, index) => ({
      index,
      language: t.language,
      label: t.label || t.language || `#${index + 1}`,
      default: false,
    }));
  }

  /** The caption track shown: -1 while captions are off. */
  get caption(): number {
    if (this.hls) return this.hls.subtitleDisplay ? this.hls.subtitleTrack : -1;
    return this.nativeTextTracks().findIndex((t) => t.mode === "showing");
  }

  /** Shows caption track `index`, or turns captions off with -1; remembered on this device. */
  setCaption(index: number): void {
    const tracks = this.captions();
    if (index !== -1 && !tracks[index]) {
      this.fail("invalid_caption", `there is no caption track ${index}`, false);
      return;
    }
    this.rememberCaption(index === -1 ? "off" : tracks[index].language);
    this.applyCaption(index);
  }

  /** Current media time, in seconds. */
  get position(): number {
    return this.video.currentTime;
  }

  /** Stops playback and reporting; sends what was not reported yet. */
  destroy(): void {
    if (this.destroyed) return;
    this.flushOnExit();
    this.destroyed = true;
    if (this.timer !== null) clearInterval(this.timer);
    for (const cleanup of this.cleanups.splice(0)) cleanup();
    this.hls?.destroy();
    this.hls = null;
    this.listeners.clear();
  }

  private async start(): Promise<void> {
    try {
      const session = await this.api.playback(this.lessonId);
      if (this.destroyed) return;
      this.session = session;
      const remembered = this.remembered();
      const speed = chooseSpeed(session.speed, remembered);
      this.remember({ speed, server: clampSpeed(session.speed) });
      const start = startPosition(session.resume_position_s, session.duration_s);
      const loaded = new Promise<void>((resolve) =>
        this.video.addEventListener("loadedmetadata", () => resolve(), { once: true }),
      );
      this.video.defaultPlaybackRate = speed;
      if (Hls.isSupported()) {
        this.engine = "hls.js";
        this.attachHls(session.master_url, start);
      } else if (this.video.canPlayType("application/vnd.apple.mpegurl")) {
        this.engine = "native";
        this.video.src = session.master_url;
        const tracks = this.video.textTracks;
        const changed = () => {
          this.emit("captions", this.captions());
          this.applyRememberedCaption();
        };
        tracks.addEventListener("addtrack", changed);
        this.cleanups.push(() => tracks.removeEventListener("addtrack", changed));
        loaded.then(() => {
          if (start > 0) this.video.currentTime = start;
        });
      } else {
        throw new LecternApiError(0, "hls_unsupported", "this browser can play neither HLS nor Media Source Extensions");
      }
      await loaded;
      if (this.destroyed) return;
      // Loading a source resets the rate to the default; set both.
      this.video.playbackRate = speed;
      const heartbeatMs = Math.max(1000, this.options.heartbeatMs ?? 5000);
      this.timer = setInterval(() => void this.beat(), heartbeatMs);
      this.emit("ready", {
        // NaN when neither knows, as HTMLMediaElement.duration says "unknown".
        duration: Number.isFinite(this.video.duration) ? this.video.duration : (session.duration_s ?? NaN),
        position: start,
        speed,
        qualities: this.qualities(),
        engine: this.engine,
      });
      if (this.options.autoplay) {
        this.video.play().catch((e: unknown) => this.fail("autoplay_blocked", errorMessage(e), false));
      }
    } catch (e) {
      const error =
        e instanceof LecternApiError ? e : new LecternApiError(0, "playback_unavailable", errorMessage(e));
      this.fail(error.code, error.message, true);
      throw error;
    }
  }

  private attachHls(url: string, start: number): void {
    const hls = new Hls({
      startPosition: start > 0 ? start : -1,
      // Live lessons: after a stall, play up to 1.5× until back at the
      // usual distance from the live edge, instead of staying that much
      // further behind the lecturer for the rest of the class. VOD never
      // has a live edge, so nothing changes there.
      maxLiveSyncPlaybackRate: 1.5,
      // Live lessons are published with LL-HLS parts (EXT-X-PART, blocking
      // playlist reload): play them at PART-HOLD-BACK (1.5 s) behind the
      // edge instead of three segments. A playlist without parts (VOD, a
      // replay) plays exactly as without it. (hls.js's default too; said
      // here because the latency depends on it.)
      lowLatencyMode: true,
    });
    this.hls = hls;
    hls.on(Events.MANIFEST_PARSED, () => this.emit("qualities", this.qualities()));
    hls.on(Events.SUBTITLE_TRACKS_UPDATED, () => {
      this.emit("captions", this.captions());
      this.applyRememberedCaption();
    });
    hls.on(Events.SUBTITLE_TRACK_SWITCH, () => this.emitCaption());
    hls.on(Events.LEVEL_SWITCHED, (_event, data) => {
      const level = hls.levels[data.level];
      if (!level) return;
      this.qoe.switched(this.lastBitrate, level.bitrate);
      this.lastBitrate = level.bitrate;
      this.emitQuality();
    });
    // Progress: the bounds below count failures in a row, not for ever.
    hls.on(Events.FRAG_LOADED, () => {
      this.tokenRefreshes = 0;
      this.networkRetries = 0;
    });
    hls.on(Events.ERROR, (_event, data) => {
      const status = data.response?.code;
      if (data.type === ErrorTypes.NETWORK_ERROR && (status === 401 || status === 403)) {
        // The token in the URLs was refused: retrying the same URL cannot
        // help (hls.js would, for ever), a new playback session can.
        hls.stopLoad();
        void this.refreshSession();
        return;
      }
      if (!data.fatal) return;
      if (data.type === ErrorTypes.NETWORK_ERROR && this.networkRetries < MAX_NETWORK_RETRIES) {
        this.networkRetries += 1;
        hls.startLoad();
      } else if (data.type === ErrorTypes.MEDIA_ERROR && this.mediaRecoveries < MAX_MEDIA_RECOVERIES) {
        this.mediaRecoveries += 1;
        hls.recoverMediaError();
      } else {
        this.fail(`player_${data.details}`, data.error?.message ?? data.details, true);
        hls.destroy();
        if (this.hls === hls) this.hls = null;
      }
    });
    hls.loadSource(url);
    hls.attachMedia(this.video);
  }

  private listen(): void {
    const v = this.video;
    const on = (target: EventTarget, name: string, handler: () => void) => {
      target.addEventListener(name, handler);
      this.cleanups.push(() => target.removeEventListener(name, handler));
    };
    const now = () => performance.now();
    on(v, "play", () => this.qoe.play(now()));
    on(v, "playing", () => {
      this.started = true;
      this.qoe.playing(now());
      this.lastObservedAt = now();
      this.tracker.observe(v.currentTime, 0, v.playbackRate);
    });
    on(v, "timeupdate", () => {
      if (v.paused || v.seeking) return;
      const t = now();
      this.tracker.observe(v.currentTime, (t - this.lastObservedAt) / 1000, v.playbackRate);
      this.lastObservedAt = t;
    });
    on(v, "seeking", () => {
      this.tracker.cut();
      this.qoe.seekStart(now());
    });
    on(v, "seeked", () => this.qoe.seekEnd());
    on(v, "waiting", () => this.qoe.waiting(now()));
    on(v, "pause", () => {
      this.tracker.observe(v.currentTime, (now() - this.lastObservedAt) / 1000, v.playbackRate);
      this.tracker.cut();
      this.qoe.paused(now());
      void this.beat();
    });
    on(v, "ratechange", () => {
      const speed = clampSpeed(v.playbackRate);
      if (speed !== v.playbackRate) {
        v.playbackRate = speed;
        return;
      }
      // `server` stays what the server said at start, so a later change
      // made on another device is recognised (see chooseSpeed).
      this.remember({ speed, server: this.session ? clampSpeed(this.session.speed) : speed });
      this.emit("ratechange", { speed });
      // Tell the server now, so another device (or a reload) starts at it.
      if (this.session) void this.beat(true);
    });
    on(v, "error", () => {
      const error = v.error;
      if (!error) return;
      // Native HLS hides the status; a network error of a playing session
      // is most often the expired token: try a new session, boundedly.
      if (this.engine === "native" && error.code === 2 /* MEDIA_ERR_NETWORK */ && this.session) {
        void this.refreshSession();
        return;
      }
      this.fail(`media_error_${error.code}`, error.message || "the browser could not play the media", true);
    });
    // Native HLS has no fragment event: playing again is the progress that resets the bound.
    on(v, "playing", () => {
      if (this.engine === "native" && !this.refreshing) this.tokenRefreshes = 0;
    });
    if (typeof document !== "undefined") {
      on(document, "visibilitychange", () => {
        if (document.visibilityState === "hidden") this.flushOnExit();
      });
    }
    if (typeof window !== "undefined") on(window, "pagehide", () => this.flushOnExit());
  }

  /** The heartbeats due now, oldest first; none when nothing changed. */
  private dueBeats(force: boolean): Heartbeat[] {
    if (!this.session || !this.started) return [];
    const v = this.video;
    if (!v.paused && !v.seeking) {
      this.tracker.observe(v.currentTime, (performance.now() - this.lastObservedAt) / 1000, v.playbackRate);
      this.lastObservedAt = performance.now();
    }
    const speed = clampSpeed(v.playbackRate);
    const position = v.currentTime;
    const playbackId = this.session.playback_id;
    const beats = this.tracker.take().map((i) => ({
      lesson_id: this.lessonId,
      playback_id: playbackId,
      position_s: round(i.to),
      speed,
      played_from_s: round(i.from),
      played_to_s: round(i.to),
      sent_at: new Date().toISOString(),
    }));
    const last = beats.at(-1);
    if (last) {
      last.position_s = round(position);
    } else if (
      force ||
      !this.lastSent ||
      Math.abs(this.lastSent.position - position) > 0.5 ||
      this.lastSent.speed !== speed
    ) {
      // Nothing played, but the resume point or speed moved (a seek while
      // paused, a speed change): an empty interval carries them.
      const p = round(position);
      beats.push({
        lesson_id: this.lessonId,
        playback_id: playbackId,
        position_s: p,
        speed,
        played_from_s: p,
        played_to_s: p,
        sent_at: new Date().toISOString(),
      });
    }
    const newest = beats.at(-1);
    if (newest) this.lastSent = { position: newest.position_s, speed };
    return beats;
  }

  private beat(force = false): Promise<void> {
    if (this.destroyed) return this.sending;
    const beats = this.dueBeats(force);
    const events = this.qoe.drain();
    // Chained, so beats reach the server in the order they were taken.
    this.sending = this.sending.then(async () => {
      for (const beat of beats) {
        try {
          await this.sendBeat(beat);
          this.emit("progress", beat);
        } catch (e) {
          const error = e instanceof LecternApiError ? e : null;
          this.fail(error?.code ?? "heartbeat_failed", errorMessage(e), false);
        }
      }
      for (let i = 0; i < events.length; i += MAX_QOE_EVENTS) {
        const batch = events.slice(i, i + MAX_QOE_EVENTS);
        try {
          await this.api.qoe(this.lessonId, this.session?.playback_id, batch);
        } catch {
          this.qoe.requeue(events.slice(i));
          break;
        }
      }
    });
    return this.sending;
  }

  /**
   * Sends a beat. A playback session the API no longer knows (it expired
   * after hours open, or the server restarted) is replaced by a new one,
   * without touching playback, and the beat sent again in it.
   */
  private async sendBeat(beat: Heartbeat): Promise<void> {
    try {
      await this.api.heartbeat(beat);
    } catch (e) {
      if (!(e instanceof LecternApiError) || e.code !== SESSION_EXPIRED || !this.session) throw e;
      const now = performance.now();
      if (now - this.renewedAt < RENEW_AFTER_MS) throw e;
      this.renewedAt = now;
      const renewed = await this.api.playback(this.lessonId);
      if (!this.session) throw e;
      this.session.playback_id = renewed.playback_id;
      beat.playback_id = renewed.playback_id;
      await this.api.heartbeat(beat);
    }
  }

  /**
   * Asks for a new playback session (a fresh token in a new master URL) and
   * continues from the same position and speed. After
   * [`MAX_TOKEN_REFRESHES`] in a row without a fragment loading, or when the
   * API refuses the session itself (signed out, no longer allowed), the
   * error is fatal: the host page shows it and QoE records `fatal_error`.
   */
  private async refreshSession(): Promise<void> {
    if (this.refreshing || this.destroyed || !this.session) return;
    if (this.tokenRefreshes >= MAX_TOKEN_REFRESHES) {
      this.giveUp("playback_token_refused", `the media origin refused ${MAX_TOKEN_REFRESHES} fresh playback tokens in a row`);
      return;
    }
    this.tokenRefreshes += 1;
    this.refreshing = true;
    const position = this.video.currentTime;
    const speed = this.video.playbackRate;
    const wasPlaying = !this.video.paused;
    try {
      const renewed = await this.api.playback(this.lessonId);
      if (this.destroyed || !this.session) return;
      this.session.playback_id = renewed.playback_id;
      this.session.master_url = renewed.master_url;
      if (this.hls) {
        this.hls.config.startPosition = position;
        this.hls.loadSource(renewed.master_url);
      } else {
        this.video.src = renewed.master_url;
        this.video.addEventListener(
          "loadedmetadata",
          () => {
            this.video.currentTime = position;
            this.video.playbackRate = speed;
            if (wasPlaying) this.video.play().catch(() => undefined);
          },
          { once: true },
        );
      }
    } catch (e) {
      const error = e instanceof LecternApiError ? e : null;
      this.giveUp(error?.code ?? "playback_unavailable", errorMessage(e));
    } finally {
      this.refreshing = false;
    }
  }

  private giveUp(code: string, message: string): void {
    this.fail(code, message, true);
    this.hls?.destroy();
    this.hls = null;
  }

  /** The page is going away: report with requests that outlive it. */
  private flushOnExit(): void {
    if (this.destroyed || !this.session) return;
    for (const beat of this.dueBeats(false)) this.api.sendOnExit("api/v1/progress", beat);
    const events = this.qoe.drain();
    for (let i = 0; i < events.length; i += MAX_QOE_EVENTS) {
      this.api.sendOnExit("api/v1/qoe", {
        lesson_id: this.lessonId,
        session_id: this.session.playback_id,
        events: events.slice(i, i + MAX_QOE_EVENTS),
      });
    }
  }

  /** Subtitle tracks of native HLS (Safari lists the SUBTITLES group there). */
  private nativeTextTracks(): TextTrack[] {
    return Array.from(this.video.textTracks ?? []).filter((t) => t.kind === "subtitles" || t.kind === "captions");
  }

  private applyCaption(index: number): void {
    if (this.hls) {
      // Turning the display off keeps the track loaded, so switching
      // captions back on shows the current cue at once.
      this.hls.subtitleDisplay = index !== -1;
      if (index !== -1) this.hls.subtitleTrack = index;
      this.emitCaption();
      return;
    }
    this.nativeTextTracks().forEach((t, i) => {
      t.mode = i === index ? "showing" : "disabled";
    });
    this.emitCaption();
  }

  /**
   * The learner's last choice on this device wins over the partner's
   * default: "off" stays off, a language is shown when the lesson has it.
   * Without a choice, the default track plays as the playlist says.
   */
  private applyRememberedCaption(): void {
    const remembered = this.rememberedCaption();
    if (remembered === null) return;
    if (remembered === "off") {
      this.applyCaption(-1);
      return;
    }
    const tracks = this.captions();
    const exact = tracks.find((t) => t.language === remembered);
    const sameLanguage = tracks.find((t) => t.language.split("-")[0] === remembered.split("-")[0]);
    const track = exact ?? sameLanguage;
    if (track) this.applyCaption(track.index);
  }

  private emitCaption(): void {
    const index = this.caption;
    this.emit("captionchange", { index, language: this.captions()[index]?.language ?? null });
  }

  private rememberedCaption(): string | null {
    try {
      return this.storage?.getItem(CAPTION_KEY) ?? null;
    } catch {
      return null;
    }
  }

  private rememberCaption(value: string): void {
    try {
      this.storage?.setItem(CAPTION_KEY, value);
    } catch {
      // Private browsing or a full quota: the choice lasts this page.
    }
  }

  private emitQuality(): void {
    const hls = this.hls;
    if (!hls) return;
    const level = hls.levels[hls.currentLevel];
    this.emit("qualitychange", {
      auto: hls.autoLevelEnabled,
      index: hls.currentLevel,
      height: level?.height || null,
      bitrate: level?.bitrate ?? null,
    });
  }

  private fail(code: string, message: string, fatal: boolean): void {
    if (fatal) this.qoe.fatal(code);
    this.emit("error", { code, message, fatal });
    if (fatal && this.session) void this.beat();
  }

  private emit<K extends keyof PlayerEvents>(event: K, detail: PlayerEvents[K]): void {
    for (const listener of this.listeners.get(event) ?? []) {
      try {
        (listener as Listener<K>)(detail);
      } catch (e) {
        // A host page's bug must not stop playback reporting.
        console.error(`lectern player: a "${event}" listener threw`, e);
      }
    }
  }

  private remembered(): RememberedSpeed | null {
    try {
      const raw = this.storage?.getItem(SPEED_KEY);
      if (!raw) return null;
      const value = JSON.parse(raw) as RememberedSpeed;
      return typeof value.speed === "number" && typeof value.server === "number" ? value : null;
    } catch {
      return null;
    }
  }

  private remember(value: RememberedSpeed): void {
    try {
      this.storage?.setItem(SPEED_KEY, JSON.stringify(value));
    } catch {
      // Private browsing or a full quota: the server still has the speed.
    }
  }
}

function safeLocalStorage(): Storage | null {
  try {
    return typeof localStorage === "undefined" ? null : localStorage;
  } catch {
    return null;
  }
}

function round(t: number): number {
  return Math.round(t * 1000) / 1000;
}

function errorMessage(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
