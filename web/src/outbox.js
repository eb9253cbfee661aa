// Messages sent but not yet acknowledged, kept in memory and in localStorage.
//
// Each is resent with the same cmid after every reconnect (and when no ack came for a while)
// until its ack arrives: the server answers a resend of a stored message with the original
// ack and never stores it twice. A message the platform refuses for good (FINAL_ERRORS) leaves
// the outbox and stays shown as failed, in memory only, until dismissed.

/** Refusals that resending cannot help (rate_limited and the like are resent later). */
export const FINAL_ERRORS = new Set(['too_long', 'empty', 'invalid', 'not_member']);

/** A random (version 4) UUID; also where crypto.randomUUID is missing (plain-HTTP pages). */
export function uuid4() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[6] = (bytes[6] & 0x0f) | 0x40;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = [...bytes].map((byte) => byte.toString(16).padStart(2, '0')).join('');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

export class Outbox {
  /**
   * @param {Storage|null} storage where the outbox survives a reload (null: memory only)
   * @param {string} key
   */
  constructor(storage, key) {
    this.storage = storage;
    this.key = key;
    /** @type {Map<string, {conversation_id: string, cmid: string, text: string, created_at: number, sent_at: number}>} */
    this.entries = new Map();
    /** @type {Map<string, any>} cmid → an entry refused for good, with the error's code and message */
    this.failed = new Map();
    try {
      const saved = JSON.parse(storage?.getItem(key) ?? '[]');
      for (const entry of Array.isArray(saved) ? saved : []) {
        if (entry && typeof entry.cmid === 'string' && typeof entry.text === 'string') {
          this.entries.set(entry.cmid, { ...entry, sent_at: 0 });
        }
      }
    } catch {
      // a corrupt entry: start empty
    }
  }

  /** Queue a new message with a fresh cmid. */
  add(conversationId, text) {
    const entry = { conversation_id: conversationId, cmid: uuid4(), text, created_at: Date.now(), sent_at: 0 };
    this.entries.set(entry.cmid, entry);
    this.save();
    return entry;
  }

  get(cmid) {
    return this.entries.get(cmid);
  }

  /** Its ack (or a final error) arrived: forget it. */
  settle(cmid) {
    const entry = this.entries.get(cmid);
    if (entry) {
      this.entries.delete(cmid);
      this.save();
    }
    return entry;
  }

  /** A publish of this entry left now (or at `at`). */
  markSent(cmid, at = Date.now()) {
    const entry = this.entries.get(cmid);
    if (entry) entry.sent_at = at;
  }

  /** Entries whose last publish is at least `afterMs` old at `now`. */
  stale(now, afterMs) {
    return this.all().filter((entry) => now - entry.sent_at >= afterMs);
  }

  /** An error answered this send: a final one moves it to `failed` (returned), others change nothing. */
  refuse(cmid, code, message) {
    const entry = cmid ? this.entries.get(cmid) : undefined;
    if (!entry || !FINAL_ERRORS.has(code)) return null;
    this.settle(cmid);
    const failed = { ...entry, code, message };
    this.failed.set(cmid, failed);
    return failed;
  }

  /** The failed sends of one conversation, oldest first. */
  failedIn(conversationId) {
    return [...this.failed.values()].filter((failed) => failed.conversation_id === conversationId);
  }

  /** The reader dismissed a failed send. */
  dismiss(cmid) {
    this.failed.delete(cmid);
  }

  /** Everything waiting, oldest first. */
  all() {
    return [...this.entries.values()];
  }

  forConversation(conversationId) {
    return this.all().filter((entry) => entry.conversation_id === conversationId);
  }

  get size() {
    return this.entries.size;
  }

  clear() {
    this.entries.clear();
    this.failed.clear();
    this.save();
  }

  save() {
    if (!this.storage) return;
    try {
      if (this.entries.size === 0) this.storage.removeItem(this.key);
      else this.storage.setItem(this.key, JSON.stringify(this.all().map(({ sent_at: _, ...entry }) => entry)));
    } catch {
      // quota exceeded: the outbox still lives in memory
    }
  }
}
