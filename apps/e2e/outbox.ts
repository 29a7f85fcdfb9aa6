// Reads one-time codes back from Lectern's development outbox (the `outbox`
// table `lectern demo` sends e-mail and SMS to), as the Rust tests do with
// `last_message`: recipient and body are sealed with the field key
// (AES-256-GCM; `key-id length ‖ key id ‖ 12-byte nonce ‖ ciphertext ‖ tag`,
// the column name, a colon and the row's id bytes as associated data; see
// secrets/src/fields.rs), so the suite opens them with the key it gave the
// server.
import { createDecipheriv } from "node:crypto";

import { psql } from "./server";

/** Where the outbox is and the key its rows are sealed with (server.json has both). */
export interface OutboxAccess {
  dbUrl: string;
  fieldKey: string;
}

function open(field: string, rowId: string, sealedHex: string, key: Buffer): string {
  const sealed = Buffer.from(sealedHex, "hex");
  const idLength = sealed[0]!;
  const nonce = sealed.subarray(1 + idLength, 13 + idLength);
  const body = sealed.subarray(13 + idLength);
  const decipher = createDecipheriv("aes-256-gcm", key, nonce);
  decipher.setAAD(Buffer.concat([Buffer.from(`${field}:`), Buffer.from(rowId.replace(/-/g, ""), "hex")]));
  decipher.setAuthTag(body.subarray(body.length - 16));
  return Buffer.concat([decipher.update(body.subarray(0, body.length - 16)), decipher.final()]).toString("utf8");
}

/** The newest message to `recipient` (an e-mail address or an E.164 number). */
function newest(s: OutboxAccess, recipient: string): { id: number; body: string } | null {
  const key = Buffer.from(s.fieldKey, "base64");
  const rows = psql(s.dbUrl, "SELECT id, message_id, encode(recipient_ct, 'hex'), encode(body_ct, 'hex') FROM outbox ORDER BY id DESC LIMIT 50");
  for (const line of rows.split("\n").filter(Boolean)) {
    const [id, messageId, recipientHex, bodyHex] = line.split("|");
    if (open("outbox.recipient", messageId!, recipientHex!, key).trim().toLowerCase() === recipient.toLowerCase()) {
      return { id: Number(id), body: open("outbox.body", messageId!, bodyHex!, key) };
    }
  }
  return null;
}

/** The id of the newest outbox row now, so a later code is told from an earlier one. */
export function outboxMark(s: OutboxAccess): number {
  return Number(psql(s.dbUrl, "SELECT coalesce(max(id), 0) FROM outbox") || 0);
}

/** Waits for a message to `recipient` after `mark` (the dispatcher sends within seconds) and returns its six-digit code. */
export async function codeSentTo(s: OutboxAccess, recipient: string, mark: number): Promise<string> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    const message = newest(s, recipient);
    const code = message && message.id > mark ? /\b(\d{6})\b/.exec(message.body)?.[1] : undefined;
    if (code) return code;
    if (Date.now() > deadline) throw new Error(`no code was sent to ${recipient} within 30 s`);
    await new Promise((r) => setTimeout(r, 250));
  }
}
