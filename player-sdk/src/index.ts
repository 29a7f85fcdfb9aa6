// Lectern's player SDK. `createPlayer(element, { apiBase, lessonId, auth })`
// plays one lesson in a <video> (or in a new one inside a container).

import { LecternPlayer, type PlayerOptions } from "./player.js";

export { LecternPlayer, AUTO, CAPTIONS_OFF } from "./player.js";
export type { Caption, PlayerError, PlayerEvents, PlayerOptions, Quality } from "./player.js";
export { LecternApiError } from "./api.js";
export type { Auth, Heartbeat, PlaybackSession } from "./api.js";
export type { QoeEvent } from "./qoe.js";

export function createPlayer(element: HTMLElement, options: PlayerOptions): LecternPlayer {
  return new LecternPlayer(element, options);
}
