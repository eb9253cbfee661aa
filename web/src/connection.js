// The one MQTT connection of this device (MQTT.js over WebSocket), moving across broker nodes.
//
// MQTT.js's own reconnect retries the one URL it was given, which is no use once that node is
// dead. So its loop is off (`reconnectPeriod: 0`): when a connection ends or an attempt fails,
// the `BrokerRoute` names the next node and the wait before it, `transformWsUrl` points the next
// attempt there, and a route whose every node failed asks `liveBrokers` (`GET /v1/brokers`) for a
// fresh list first. A CONNECT refused for its token is the caller's (`onRefused`, then `nudge`):
// it is retried on the same node.
import mqtt from 'mqtt';

const decoder = new TextDecoder();

/**
 * Topics: `user/{uid}/inbox` (events), `presence/{uid}` (retained), publishes to
 * `conv/{cid}/send` and `conv/{cid}/typing`.
 */
export class Connection {
  /**
   * @param {{
   *   route: import('./route.js').BrokerRoute,
   *   liveBrokers: () => Promise<string[]|null>,
   *   clientId: string, userId: string, password: () => string,
   *   onStatus: (state: 'online'|'connecting'|'offline') => void,
   *   onConnect: () => void,
   *   onEvent: (event: any) => void,
   *   onPresence: (userId: string, presence: any) => void,
   *   onRefused: (code: number) => void,
   * }} options
   */
  constructor(options) {
    this.options = options;
    this.presenceTopics = new Set();
    this.client = null;
    this.refused = false; // a refused CONNACK waits for nudge(), on the same node
    this._retryTimer = 0;
    this._onOffline = () => this._networkDown();
  }

  start() {
    const { route, clientId, userId, password } = this.options;
    this.options.onStatus('connecting');
    const client = mqtt.connect(route.current, {
      clientId,
      username: userId,
      password: password(),
      protocolVersion: 4,
      clean: true,
      keepalive: 30,
      reconnectPeriod: 0, // the route decides where and when the next attempt goes
      transformWsUrl: () => route.current,
      connectTimeout: 10_000,
      resubscribe: false, // subscriptions are made afresh on every connect
      queueQoSZero: false, // a typing notice is worthless later
    });
    this.client = client;
    client.on('connect', () => {
      route.connected();
      this.options.onStatus('online');
      // Catch-up starts once the inbox subscription holds, so nothing falls between the two.
      client.subscribe(`user/${userId}/inbox`, { qos: 1 }, (error) => {
        if (!error) this.options.onConnect();
      });
      this._subscribePresence([...this.presenceTopics]);
    });
    client.on('reconnect', () => {
      // Every attempt carries the freshest access token.
      client.options.password = password();
      this.options.onStatus(navigator.onLine === false ? 'offline' : 'connecting');
    });
    client.on('close', () => {
      this.options.onStatus(navigator.onLine === false ? 'offline' : 'connecting');
      if (!this.refused) this._moveOn(client);
    });
    client.on('error', (error) => {
      const code = /** @type {any} */ (error).code;
      // CONNACK refusals (4 bad credentials, 5 not authorized...): renewed by the caller first.
      if (typeof code === 'number' && code > 0 && code < 128) {
        this.refused = true;
        this.options.onRefused(code);
      }
    });
    client.on('message', (topic, payload) => {
      let body;
      try {
        body = JSON.parse(decoder.decode(payload));
      } catch {
        return;
      }
      if (topic.startsWith('presence/')) this.options.onPresence(topic.slice('presence/'.length), body);
      else if (body && typeof body === 'object') this.options.onEvent(body);
    });
    window.addEventListener('offline', this._onOffline);
  }

  get connected() {
    return Boolean(this.client?.connected);
  }

  /** Watch these users' presence (retained: the current state arrives at once). */
  watchPresence(userIds) {
    const fresh = [];
    for (const userId of userIds) {
      const topic = `presence/${userId}`;
      if (this.presenceTopics.has(topic)) continue;
      this.presenceTopics.add(topic);
      fresh.push(topic);
    }
    if (fresh.length && this.connected) this._subscribePresence(fresh);
  }

  /** QoS 1 publish if connected; false when offline (the outbox resends after the reconnect). */
  publish(topic, body, qos = 1) {
    if (!this.connected) return false;
    this.client.publish(topic, JSON.stringify(body), { qos });
    return true;
  }

  /** Connect again, to the same node, after a refused CONNACK (the caller has renewed the token). */
  nudge() {
    const client = this.client;
    if (!client || client.connected || client.disconnecting || !this.refused) return;
    this.refused = false;
    client.options.password = this.options.password();
    client.reconnect();
  }

  stop() {
    window.removeEventListener('offline', this._onOffline);
    clearTimeout(this._retryTimer);
    this.client?.end(true);
    this.client = null;
  }

  /** The connection ended or an attempt failed: the route's next node, after its wait. */
  _moveOn(client) {
    if (this.client !== client || client.disconnecting || this._retryTimer) return;
    const { route, liveBrokers } = this.options;
    const step = route.failed();
    this._retryTimer = window.setTimeout(async () => {
      if (step.askRegistry) {
        try {
          const urls = await liveBrokers();
          if (urls?.length) route.replace(urls);
        } catch {
          // unanswered (the API is unreachable too?): the list held is walked again
        }
      }
      this._retryTimer = 0;
      if (this.client !== client || client.connected || this.refused) return;
      client.reconnect(); // its 'reconnect' event sets the freshest access token
    }, step.delayMs);
  }

  _networkDown() {
    // The socket is dead even if the browser has not noticed yet: drop it so the
    // reconnect loop starts now instead of after the keepalive timeout.
    this.options.onStatus('offline');
    const stream = /** @type {any} */ (this.client)?.stream;
    stream?.destroy?.();
  }

  _subscribePresence(topics) {
    if (!topics.length) return;
    this.client.subscribe(topics, { qos: 1 }, (error, subscriptions, suback) => {
      if (!error) return;
      // Refused (not a member or friend yet?): forget it, so a later watchPresence asks again.
      const granted = suback?.granted ?? [];
      topics.forEach((topic, index) => {
        if (granted[index] === undefined || granted[index] & 0x80) this.presenceTopics.delete(topic);
      });
    });
  }
}
