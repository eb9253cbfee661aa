// The device's live link: the one Connection of the signed-in session, its status line, and
// which users' presence it watches. Events go to the handlers given to connect() (inbox.js).
import { api } from './backend.js';
import { Connection } from './connection.js';
import { conversations } from './conversations.js';
import { byId } from './dom.js';
import { people } from './people.js';
import { BrokerRoute } from './route.js';

/** @type {Connection|null} */
let conn = null;

/**
 * Connect with the current tokens.
 * @param {{onConnect: () => void, onEvent: (event: any) => void, onPresence: (userId: string, body: any) => void}} handlers
 */
export function connect({ onConnect, onEvent, onPresence }) {
  const tokens = api.tokens;
  let refusals = 0;
  const connection = new Connection({
    route: new BrokerRoute(brokerUrls([tokens.mqtt, ...(tokens.brokers ?? [])])),
    liveBrokers,
    clientId: tokens.device_id,
    userId: people.me.id,
    password: () => api.tokens?.access_token ?? '',
    onStatus: renderConnection,
    onConnect() {
      refusals = 0;
      onConnect();
    },
    onEvent,
    onPresence,
    onRefused() {
      // Most likely an expired access token: refresh, then try again.
      renderConnection('connecting');
      refusals += 1;
      const delay = Math.min(30_000, 250 * 2 ** refusals);
      api
        .refresh()
        .catch(() => undefined)
        .finally(() => setTimeout(() => connection.nudge(), delay));
    },
  });
  conn = connection;
  watchPresence();
  connection.start();
}

export function disconnect() {
  conn?.stop();
  conn = null;
}

export const isConnected = () => Boolean(conn?.connected);

/** Publish if connected; false when not (the outbox resends after the reconnect). */
export function publish(topic, body, qos) {
  return conn?.publish(topic, body, qos) ?? false;
}

/** Watch the presence of everyone whose dot shows (friends and conversation members). */
export function watchPresence() {
  conn?.watchPresence(people.watched(conversations.all()));
}

/**
 * The WebSocket URLs of the broker nodes the API named (`{host, port, ws_url}`), in their order.
 * @param {{ws_url?: string}[]} endpoints
 */
export function brokerUrls(endpoints, here = location) {
  return endpoints.filter((endpoint) => endpoint?.ws_url).map((endpoint) => wsUrl(endpoint.ws_url, here));
}

/** `GET /v1/brokers`: the live nodes' URLs, asked once every listed node has failed. */
async function liveBrokers() {
  const answer = await api.get('/v1/brokers');
  return brokerUrls(answer?.brokers ?? []);
}

/** The broker endpoint the API advertised, reachable from where this page was loaded (`here`). */
export function wsUrl(advertised, here = location) {
  const loopback = (host) => host === 'localhost' || host.startsWith('127.') || host === '[::1]';
  try {
    const url = new URL(advertised, here.href);
    if (loopback(url.hostname) && !loopback(here.hostname)) url.hostname = here.hostname;
    if (here.protocol === 'https:' && url.protocol === 'ws:') url.protocol = 'wss:';
    return url.toString();
  } catch {
    return `${here.protocol === 'https:' ? 'wss' : 'ws'}://${here.host}/mqtt`;
  }
}

function renderConnection(status) {
  const element = byId('connection');
  element.dataset.state = status;
  element.textContent = { online: 'Online', connecting: 'Connecting…', offline: 'Offline' }[status];
}
