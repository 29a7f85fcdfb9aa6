// The inbox's unread count for the tab bar's badge: asked when a screen
// opens (at most every 30 s) and set again by the inbox when it marks
// notices read. One small GET; nothing polls in the background.
import { ref } from "vue";

import { api, session } from "@lectern/shared";

export const unread = ref(0);
let askedAt = 0;

export async function refreshUnread(force = false): Promise<void> {
  if (!session.me || (!force && Date.now() - askedAt < 30_000)) return;
  askedAt = Date.now();
  const { data, response } = await api.GET("/api/v1/me/inbox/unread");
  if (response.ok && data) unread.value = data.unread;
}
