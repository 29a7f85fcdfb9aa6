// Pure bookkeeping of what the learner actually watched, kept apart from the
// DOM so it can be unit-tested in node. All times are media seconds
// (`video.currentTime`): at 2x, five wall seconds cover ten media seconds,
// and the server merges media intervals into completion.

/** A half-open stretch of media time the learner played, `from < to`. */
export interface Interval {
  from: number;
  to: number;
}

/**
 * The tolerance beyond the expected advance before an observation counts as
 * a jump rather than playback: timeupdate fires every ~250 ms, and a stalled
 * main thread can delay it, so be generous.
 */
const JUMP_SLACK_S = 1.5;

/**
 * Accumulates the interval played since the last heartbeat. Playback is one
 * contiguous stretch between beats; a seek (or any jump) closes the stretch
 * so it can be reported before a new one starts, because one heartbeat
 * carries one interval and must never claim the skipped part as watched.
 */
export class IntervalTracker {
  private from: number | null = null;
  private to = 0;
  private closed: Interval[] = [];

  /**
   * Playback was observed at media time `t`, `wallElapsedS` wall seconds
   * after the previous observation, at `rate`.
   */
  observe(t: number, wallElapsedS: number, rate: number): void {
    if (!Number.isFinite(t) || t < 0) return;
    if (this.from === null) {
      this.from = t;
      this.to = t;
      return;
    }
    const expected = Math.max(0, wallElapsedS) * Math.max(rate, 0);
    if (t < this.to - 0.05 || t > this.to + expected + JUMP_SLACK_S) {
      this.cut();
      this.from = t;
      this.to = t;
      return;
    }
    this.to = Math.max(this.to, t);
  }

  /** Playback stopped being contiguous (seeking, pause, ended, source change). */
  cut(): void {
    if (this.from !== null && this.to > this.from) {
      this.closed.push({ from: this.from, to: this.to });
    }
    this.from = null;
  }

  /**
   * Everything played since the last call, oldest first; the open stretch
   * keeps going from where this one ended, so consecutive beats neither
   * overlap nor leave gaps.
   */
  take(): Interval[] {
    const out = this.closed;
    this.closed = [];
    if (this.from !== null && this.to > this.from) {
      out.push({ from: this.from, to: this.to });
      this.from = this.to;
    }
    return out;
  }

  /** Whether a beat would carry any played time. */
  get pending(): boolean {
    return this.closed.length > 0 || (this.from !== null && this.to > this.from);
  }
}

export const MIN_SPEED = 0.5;
export const MAX_SPEED = 2;

/** Clamps to the player's range and to quarter steps' precision. */
export function clampSpeed(speed: number): number {
  if (!Number.isFinite(speed)) return 1;
  const clamped = Math.min(MAX_SPEED, Math.max(MIN_SPEED, speed));
  return Math.round(clamped * 100) / 100;
}

/** What a device remembers about the speed the learner chose. */
export interface RememberedSpeed {
  speed: number;
  /** The server's preferred speed when this device last agreed with it. */
  server: number;
}

/**
 * The speed to start at. A new device takes the server's preferred speed.
 * A device that remembers a choice keeps it unless the server's preference
 * changed since (the learner picked another speed elsewhere): the latest
 * choice wins, on whichever device it was made.
 */
export function chooseSpeed(server: number | undefined, local: RememberedSpeed | null): number {
  const fromServer = server === undefined ? undefined : clampSpeed(server);
  if (local === null) return fromServer ?? 1;
  if (fromServer === undefined || fromServer === clampSpeed(local.server)) {
    return clampSpeed(local.speed);
  }
  return fromServer;
}

/**
 * Where to start: the resume point, unless it is (nearly) the end, where a
 * learner who finished expects to start again.
 */
export function startPosition(resume: number, duration: number | null): number {
  if (!Number.isFinite(resume) || resume <= 0) return 0;
  if (duration !== null && Number.isFinite(duration) && duration > 0 && resume >= duration - 3) return 0;
  return resume;
}
