// Who is typing where: a typing notice shows for TYPING_SHOWN_MS, or until that person's message.

export const TYPING_SHOWN_MS = 6_000;

export class Typing {
  /** @param {() => number} now the clock (milliseconds) */
  constructor(now = Date.now) {
    this.now = now;
    /** @type {Map<string, Map<string, number>>} conversation → user → shown until (ms) */
    this.until = new Map();
  }

  reset() {
    this.until.clear();
  }

  /** A typing notice from `userId` in `cid`. */
  note(cid, userId) {
    if (!this.until.has(cid)) this.until.set(cid, new Map());
    this.until.get(cid).set(userId, this.now() + TYPING_SHOWN_MS);
  }

  /** `userId` sent a message in `cid`: no longer typing. True if they were shown typing. */
  stop(cid, userId) {
    return Boolean(this.until.get(cid)?.delete(userId));
  }

  /** The ids of those typing in `cid` now (expired notices are dropped). */
  who(cid) {
    const now = this.now();
    const who = this.until.get(cid);
    if (!who) return [];
    for (const [userId, until] of who) if (until <= now) who.delete(userId);
    return [...who.keys()];
  }
}

/** The typing line for these names. */
export function typingText(names) {
  if (!names.length) return '';
  if (names.length === 1) return `${names[0]} is typing…`;
  if (names.length === 2) return `${names[0]} and ${names[1]} are typing…`;
  return 'Several people are typing…';
}

export const typing = new Typing();
