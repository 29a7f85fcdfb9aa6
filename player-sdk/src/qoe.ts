// Quality-of-experience bookkeeping: what the learner waited for. Pure (the
// clock is passed in) so the state machine is unit-tested without a browser.

// The shapes `POST /api/v1/qoe` accepts (one report carries up to
// MAX_QOE_EVENTS of them).
export type QoeEvent =
  | { kind: "startup"; startup_ms: number }
  | { kind: "rebuffer"; rebuffer_count: 1; rebuffer_ms: number }
  | { kind: "bitrate_switch"; from_bitrate: number | null; to_bitrate: number }
  | { kind: "fatal_error"; error_code: string };

export const MAX_QOE_EVENTS = 50;
/** The API refuses startup times beyond ten minutes as implausible. */
const MAX_STARTUP_MS = 600_000;

/** An error code the API accepts: 1-100 of letters, digits and `_-.:`. */
export function errorCode(code: string): string {
  const clean = code.replace(/[^A-Za-z0-9_.:-]/g, "_").slice(0, 100);
  return clean.length > 0 ? clean : "unknown";
}

/**
 * Turns media element moments into QoE events. Startup is measured from the
 * learner's intent to play (the first `play`) to the first frame moving
 * (`playing`); a rebuffer is a `waiting` after playback started that was not
 * caused by a seek, lasting until playback resumes.
 */
export class QoeTracker {
  private playRequestedAt: number | null = null;
  private started = false;
  private seeking = false;
  private stalledAt: number | null = null;
  private queue: QoeEvent[] = [];
  rebufferCount = 0;
  rebufferMs = 0;
  startupMs: number | null = null;

  play(now: number): void {
    if (!this.started && this.playRequestedAt === null) this.playRequestedAt = now;
  }

  playing(now: number): void {
    if (!this.started) {
      this.started = true;
      if (this.playRequestedAt !== null) {
        this.startupMs = Math.min(MAX_STARTUP_MS, Math.max(0, Math.round(now - this.playRequestedAt)));
        this.queue.push({ kind: "startup", startup_ms: this.startupMs });
      }
    }
    this.endStall(now);
  }

  waiting(now: number): void {
    if (!this.started || this.seeking || this.stalledAt !== null) return;
    this.stalledAt = now;
  }

  seekStart(now: number): void {
    // A stall the learner ends by seeking away is the seek's wait, not a rebuffer.
    this.stalledAt = null;
    this.seeking = true;
    void now;
  }

  seekEnd(): void {
    this.seeking = false;
  }

  /** Paused or ended: a pending stall ends without counting its tail. */
  paused(now: number): void {
    this.endStall(now);
  }

  switched(fromBitrate: number | null, toBitrate: number): void {
    if (fromBitrate === toBitrate) return;
    this.queue.push({ kind: "bitrate_switch", from_bitrate: fromBitrate, to_bitrate: Math.round(toBitrate) });
  }

  /** Playback gave up; recovered hiccups are not the learner's experience. */
  fatal(code: string): void {
    this.queue.push({ kind: "fatal_error", error_code: errorCode(code) });
  }

  /** Events not yet reported, oldest first. */
  drain(): QoeEvent[] {
    const out = this.queue;
    this.queue = [];
    return out;
  }

  /** Puts events back after a failed report, ahead of newer ones. */
  requeue(events: QoeEvent[]): void {
    this.queue = events.concat(this.queue).slice(-200);
  }

  private endStall(now: number): void {
    if (this.stalledAt === null) return;
    const duration = Math.max(0, Math.round(now - this.stalledAt));
    this.stalledAt = null;
    this.rebufferCount += 1;
    this.rebufferMs += duration;
    this.queue.push({ kind: "rebuffer", rebuffer_count: 1, rebuffer_ms: duration });
  }
}
