// One conversation as the page holds it: committed messages merged by seq.
//
// seq is dense per conversation (1, 2, 3, ...), so holding 41 and 43 means 42 is missing,
// not unsent: `gap()` says which range to fetch from history.

export class Timeline {
  constructor() {
    /** @type {Map<number, any>} */
    this.bySeq = new Map();
    this.oldest = 0; // lowest seq held (0: none)
    this.newest = 0; // highest seq held
    this.hasMoreBefore = true; // history older than `oldest` may exist
    this.loaded = false; // the newest page of history has been fetched
    this._held = 0; // every seq from `oldest` up to this one is held
  }

  /** Merge a message (inbox event or history row); false if that seq was already held. */
  add(message) {
    const seq = Number(message.seq);
    if (!Number.isSafeInteger(seq) || seq <= 0 || this.bySeq.has(seq)) return false;
    this.bySeq.set(seq, message);
    if (this.oldest === 0 || seq < this.oldest) {
      this.oldest = seq;
      this._held = 0;
    }
    if (seq > this.newest) this.newest = seq;
    if (seq === 1) this.hasMoreBefore = false;
    return true;
  }

  /** The newest page of history was merged: the timeline is loaded; older pages may follow. */
  newestPageMerged(hasMore, count) {
    this.olderPageMerged(hasMore, count);
    this.loaded = true;
  }

  /** A page of history was merged: more before it only if the page says so and seq 1 is not held. */
  olderPageMerged(hasMore, count) {
    this.hasMoreBefore = Boolean(hasMore) && count > 0 && this.oldest !== 1;
  }

  has(seq) {
    return this.bySeq.has(seq);
  }

  /** The highest seq such that everything from `oldest` to it is held. */
  get held() {
    if (this._held < this.oldest) this._held = this.oldest;
    while (this.bySeq.has(this._held + 1)) this._held += 1;
    return this._held;
  }

  /** `{after, upTo}` when a later message arrived before earlier ones, else null. */
  gap() {
    if (this.newest === 0) return null;
    const held = this.held;
    return held < this.newest ? { after: held, upTo: this.newest } : null;
  }

  /** Every message held, ascending by seq. */
  ordered() {
    return [...this.bySeq.keys()].sort((a, b) => a - b).map((seq) => this.bySeq.get(seq));
  }

  /** The message held with this cmid from this sender, if any. */
  findByCmid(senderId, cmid) {
    for (const message of this.bySeq.values()) {
      if (message.cmid === cmid && message.sender_id === senderId) return message;
    }
    return undefined;
  }
}
