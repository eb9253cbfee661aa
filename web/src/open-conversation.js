// Which conversation is open, and the message elements shown for it: `s{seq}` for a committed
// message (kept in seq order), `c{cmid}` for a pending or failed send (after them).

export class OpenConversation {
  constructor(cid) {
    this.cid = cid;
    /** @type {number[]} the seqs shown, ascending */
    this.seqs = [];
    /** @type {Map<string, HTMLElement>} */
    this.elements = new Map();
  }

  /** Remember `element` under `key`; returns it. */
  bind(key, element) {
    this.elements.set(key, element);
    return element;
  }

  has(key) {
    return this.elements.has(key);
  }

  element(key) {
    return this.elements.get(key);
  }

  unbind(key) {
    this.elements.delete(key);
  }

  /** Where a message with `seq` goes among those shown (the index of the first higher seq). */
  slotFor(seq) {
    let low = 0;
    let high = this.seqs.length;
    while (low < high) {
      const middle = (low + high) >> 1;
      if (this.seqs[middle] < seq) low = middle + 1;
      else high = middle;
    }
    return low;
  }

  /** `seq` is now shown at `slot` (from slotFor). */
  place(seq, slot) {
    this.seqs.splice(slot, 0, seq);
  }
}

/** @type {OpenConversation|null} */
let open = null;

/** Open `cid` with nothing shown yet, or close (null). */
export function setOpen(cid) {
  open = cid === null ? null : new OpenConversation(cid);
  return open;
}

export const openView = () => open;

export const openCid = () => open?.cid ?? null;

/** The reader can see `cid`: it is open and the page is visible. */
export const isReading = (cid) => openCid() === cid && document.visibilityState === 'visible';
