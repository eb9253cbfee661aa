// Which broker node the page connects to next, and how long it waits first (as client/route.py).
//
// Login and refresh answer every live broker node, least loaded first, and the access token is
// valid on each of them. So a page whose node goes away needs nothing new from the server to
// move: it tries the next node of its list. Only once every listed node has failed since its last
// connection does it ask `GET /v1/brokers` (a read from the registry, no durable write) for a fresh
// list. Waits are "full jitter" exponential backoff (a uniform draw below a doubling cap): the
// devices of a dead node arrive at the survivors spread out rather than all in the same instant.

const MAX_DOUBLINGS = 16; // the cap is reached long before; bounds the power

/**
 * What to do after a connection failed or ended: wait `delayMs`, then connect to `url`.
 * `askRegistry`: every listed node has failed since the last connection; ask for a fresh list
 * first (`BrokerRoute.replace`) and connect to its first node instead.
 * @typedef {{delayMs: number, url: string, askRegistry: boolean}} Step
 */

/** The broker nodes (WebSocket URLs) the page may use, in order, and its backoff. */
export class BrokerRoute {
  /**
   * @param {string[]} urls the nodes' WebSocket URLs, the one to try first first
   * @param {{firstDelayMs?: number, maxDelayMs?: number, random?: () => number}} [options]
   */
  constructor(urls, { firstDelayMs = 500, maxDelayMs = 5000, random = Math.random } = {}) {
    this.firstDelayMs = firstDelayMs;
    this.maxDelayMs = maxDelayMs;
    this._random = random;
    /** @type {string[]} */
    this._urls = [];
    this._index = 0;
    this._moves = 0; // moves since the last connection (or the last fresh list)
    this._failures = 0; // failures since the last connection: the backoff's exponent
    this.replace(urls);
  }

  /** The listed nodes, in the order they are tried. */
  get urls() {
    return [...this._urls];
  }

  /** The node to connect to now. */
  get current() {
    return this._urls[this._index];
  }

  /**
   * A fresh list (duplicates and blanks dropped): its first node is next. The backoff goes on growing.
   * @param {string[]} urls
   */
  replace(urls) {
    const unique = [...new Set(urls.filter((url) => typeof url === 'string' && url))];
    if (!unique.length) throw new Error('a broker route needs at least one URL');
    this._urls = unique;
    this._index = 0;
    this._moves = 0;
  }

  /** The current node took the page: the next failure starts the backoff afresh. */
  connected() {
    this._moves = 0;
    this._failures = 0;
  }

  /**
   * The current node could not be reached or dropped the connection: the next step.
   * @returns {Step}
   */
  failed() {
    this._index = (this._index + 1) % this._urls.length;
    this._moves += 1;
    const askRegistry = this._moves >= this._urls.length;
    if (askRegistry) this._moves = 0;
    const ceiling = Math.min(this.maxDelayMs, this.firstDelayMs * 2 ** Math.min(this._failures, MAX_DOUBLINGS));
    this._failures += 1;
    return { delayMs: this._random() * ceiling, url: this.current, askRegistry };
  }
}
