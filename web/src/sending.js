// The signed-in user's outbox, and publishing its entries: at once, after every (re)connect,
// and again when no ack came within RESEND_AFTER_MS.
import { isConnected, publish } from './live.js';
import { Outbox } from './outbox.js';

export const RESEND_AFTER_MS = 10_000;

/** @type {Outbox|null} */
let outbox = null;

/** Signed in: the user's outbox, as saved in `storage`. */
export function openOutbox(storage, userId) {
  outbox = new Outbox(storage, `hubbub.outbox.${userId}`);
  return outbox;
}

/** Signed out (what was saved stays saved). */
export function closeOutbox() {
  outbox = null;
}

export const currentOutbox = () => outbox;

export function publishEntry(entry) {
  if (publish(`conv/${entry.conversation_id}/send`, { cmid: entry.cmid, text: entry.text }, 1)) {
    outbox?.markSent(entry.cmid);
  }
}

/** After a (re)connect: everything unacknowledged goes again, with the same cmids. */
export function resendAll() {
  for (const entry of outbox?.all() ?? []) publishEntry(entry);
}

/** On a timer: what waited RESEND_AFTER_MS for its ack goes again. */
export function resendStale() {
  if (!isConnected()) return;
  for (const entry of outbox?.stale(Date.now(), RESEND_AFTER_MS) ?? []) publishEntry(entry);
}
