// The Hubbub web chat: REST for accounts and history, one MQTT connection for everything live.
import { Api, ApiError } from './api.js';
import { Connection } from './connection.js';
import { byId, clip, codePoints, compareIds, h, parseTime, shortTime } from './dom.js';
import { Outbox } from './outbox.js';
import { Timeline } from './timeline.js';

const MAX_CHARS = 100_000; // the platform's limit, in code points
const PAGE = 50; // history page size
const RESEND_AFTER_MS = 10_000; // resend an unacknowledged message after this long
const TYPING_EVERY_MS = 3_000; // at most one typing notice per this long
const TYPING_SHOWN_MS = 6_000; // a typing notice shows for this long
const FINAL_ERRORS = new Set(['too_long', 'empty', 'invalid', 'not_member']); // resending cannot help
const SESSION_KEY = 'hubbub.session';
const DEVICES_KEY = 'hubbub.devices';

const storage = (() => {
  try {
    localStorage.setItem('hubbub.probe', '1');
    localStorage.removeItem('hubbub.probe');
    return localStorage;
  } catch {
    return null; // storage disabled: the page still works, without surviving a reload
  }
})();

const readJson = (key) => {
  try {
    return JSON.parse(storage?.getItem(key) ?? 'null');
  } catch {
    return null;
  }
};
const writeJson = (key, value) => {
  try {
    if (value === null) storage?.removeItem(key);
    else storage?.setItem(key, JSON.stringify(value));
  } catch {
    // quota exceeded: nothing to do
  }
};

const state = {
  /** @type {{id: string, username: string, display_name: string}|null} */
  me: null,
  /** @type {Connection|null} */
  conn: null,
  /** @type {Outbox|null} */
  outbox: null,
  /** @type {Map<string, any>} conversation id → ConversationOut (+ countedTo) */
  conversations: new Map(),
  /** @type {Map<string, Timeline>} */
  timelines: new Map(),
  /** @type {Map<string, {username: string, display_name: string}>} */
  users: new Map(),
  /** @type {Map<string, {status: string, last_active_at?: unknown}>} */
  presence: new Map(),
  /** @type {Map<string, Map<string, number>>} conversation → user → until (ms) */
  typing: new Map(),
  /** @type {Map<string, any>} cmid → a message the platform refused for good */
  failed: new Map(),
  /** @type {{friends: any[], incoming: any[], outgoing: any[]}|null} null: no friends API here */
  friends: null,
  /** @type {Map<string, string>} unsent composer text per conversation */
  drafts: new Map(),
  fetching: new Set(),
  openId: /** @type {string|null} */ (null),
  /** @type {{cid: string, seqs: number[], elements: Map<string, HTMLElement>}|null} */
  view: null,
  catchUp: { running: false, again: false },
  loadingOlder: false,
  lastTypingSent: 0,
  timers: /** @type {number[]} */ ([]),
};

const api = new Api({
  onTokens(tokens) {
    const saved = readJson(SESSION_KEY) ?? {};
    writeJson(SESSION_KEY, {
      ...saved,
      user_id: tokens.user_id,
      device_id: tokens.device_id,
      refresh_token: tokens.refresh_token,
    });
  },
  onAuthLost() {
    teardown();
    forgetSession();
    showAuth('Your session has ended. Please log in again.');
  },
});

// ---------------------------------------------------------------- start-up and sessions

async function boot() {
  bindHandlers();
  await resume();
}

/** Back into the saved session (same device, same history) without asking for the password. */
async function resume() {
  const saved = readJson(SESSION_KEY);
  if (!saved?.refresh_token) {
    showAuth('');
    return;
  }
  try {
    await api.refresh(saved.refresh_token);
  } catch (error) {
    if (error instanceof ApiError && error.status === 0) {
      showAuth('Cannot reach Hubbub. Retrying…');
      setTimeout(() => {
        if (!state.me) resume().catch(() => undefined);
      }, 3000);
      return;
    }
    forgetSession();
    showAuth('');
    byId('login-username').value = saved.username ?? '';
    return;
  }
  await start();
}

async function start() {
  const me = await api.get('/v1/users/me');
  state.me = me;
  state.users.set(me.id, me);
  const devices = readJson(DEVICES_KEY) ?? {};
  devices[me.username.toLowerCase()] = api.tokens.device_id;
  writeJson(DEVICES_KEY, devices);
  writeJson(SESSION_KEY, { ...readJson(SESSION_KEY), username: me.username });
  state.outbox = new Outbox(storage, `hubbub.outbox.${me.id}`);
  announceThisTab();

  byId('auth').hidden = true;
  byId('chat').hidden = false;
  byId('me-name').textContent = me.display_name;
  byId('me-name').title = `@${me.username}`;

  try {
    await Promise.all([loadConversations(), loadFriends()]);
  } catch (error) {
    showError('sidebar-error', error);
  }
  connect();
  state.timers.push(window.setInterval(resendStale, RESEND_AFTER_MS / 2));
  route();
}

function forgetSession() {
  const saved = readJson(SESSION_KEY);
  writeJson(SESSION_KEY, saved?.username ? { username: saved.username } : null);
}

/** Stop everything live and forget the signed-in user's state (not the device). */
function teardown() {
  state.conn?.stop();
  state.conn = null;
  api.stop();
  for (const timer of state.timers) clearInterval(timer);
  state.timers = [];
  state.me = null;
  state.outbox = null;
  state.conversations.clear();
  state.timelines.clear();
  state.users.clear();
  state.presence.clear();
  state.typing.clear();
  state.failed.clear();
  state.drafts.clear();
  state.friends = null;
  byId('friends').hidden = true;
  state.openId = null;
  state.view = null;
  byId('conversations').replaceChildren();
  byId('message-list').replaceChildren();
  byId('chat').hidden = true;
  if (location.hash) history.replaceState(null, '', location.pathname);
}

function showAuth(message) {
  byId('chat').hidden = true;
  byId('auth').hidden = false;
  byId('auth-status').textContent = message;
  document.title = 'Hubbub';
}

async function logIn(username, password) {
  const devices = readJson(DEVICES_KEY) ?? {};
  await api.login(username, password, devices[username.toLowerCase()] ?? null);
  writeJson(SESSION_KEY, { ...readJson(SESSION_KEY), username });
  await start();
}

async function logOut() {
  const unsent = state.outbox?.size ?? 0;
  if (unsent && !window.confirm(`${unsent} message(s) have not been sent yet. Log out anyway?`)) return;
  try {
    await api.call('POST', '/v1/auth/logout', undefined, { retry: false });
  } catch {
    // the refresh token is forgotten here either way
  }
  state.outbox?.clear();
  teardown();
  forgetSession();
  showAuth('You have logged out.');
}

// One window per browser holds the device's connection (a second one would take over its
// MQTT session, and both would fight over the rotating refresh token).
const tabId = Math.random().toString(36).slice(2);
const channel = 'BroadcastChannel' in window ? new BroadcastChannel('hubbub') : null;
function announceThisTab() {
  channel?.postMessage({ type: 'active', tab: tabId });
}
if (channel) {
  channel.onmessage = (message) => {
    if (message.data?.type === 'active' && message.data.tab !== tabId && state.me) {
      teardown();
      byId('takeover').hidden = false;
    }
  };
}

// ---------------------------------------------------------------- MQTT

function connect() {
  const tokens = api.tokens;
  const me = state.me;
  let refusals = 0;
  const conn = new Connection({
    url: wsUrl(tokens.mqtt.ws_url),
    clientId: tokens.device_id,
    userId: me.id,
    password: () => api.tokens?.access_token ?? '',
    onStatus: renderConnection,
    onConnect() {
      refusals = 0;
      onConnected();
    },
    onEvent,
    onPresence(userId, body) {
      state.presence.set(userId, body ?? {});
      renderPresence();
    },
    onRefused(code) {
      // Most likely an expired access token: refresh, then try again.
      renderConnection('connecting');
      refusals += 1;
      const delay = Math.min(30_000, 250 * 2 ** refusals);
      api
        .refresh()
        .catch(() => undefined)
        .finally(() => setTimeout(() => conn.nudge(), delay));
    },
  });
  state.conn = conn;
  conn.watchPresence(watchedUsers());
  conn.start();
}

/** The broker endpoint the API advertised, reachable from where this page was loaded. */
function wsUrl(advertised) {
  const loopback = (host) => host === 'localhost' || host.startsWith('127.') || host === '[::1]';
  try {
    const url = new URL(advertised, location.href);
    if (loopback(url.hostname) && !loopback(location.hostname)) url.hostname = location.hostname;
    if (location.protocol === 'https:' && url.protocol === 'ws:') url.protocol = 'wss:';
    return url.toString();
  } catch {
    return `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/mqtt`;
  }
}

function onConnected() {
  for (const entry of state.outbox?.all() ?? []) publishEntry(entry);
  catchUp();
}

function resendStale() {
  if (!state.conn?.connected) return;
  const now = Date.now();
  for (const entry of state.outbox?.all() ?? []) {
    if (now - entry.sent_at >= RESEND_AFTER_MS) publishEntry(entry);
  }
}

function publishEntry(entry) {
  if (state.conn?.publish(`conv/${entry.conversation_id}/send`, { cmid: entry.cmid, text: entry.text }, 1)) {
    entry.sent_at = Date.now();
  }
}

/** After each (re)connect: what was missed, from /v1/sync, then the cursors move past it. */
async function catchUp() {
  if (state.catchUp.running) {
    state.catchUp.again = true;
    return;
  }
  state.catchUp.running = true;
  try {
    do {
      state.catchUp.again = false;
      const sync = await api.get('/v1/sync?limit=100');
      const cursors = {};
      for (const moved of sync.conversations) {
        for (const message of moved.messages) acceptMessage(message, false);
        if (!moved.complete) fillGap(moved.conversation_id);
        cursors[moved.conversation_id] = moved.latest_seq;
      }
      await Promise.all([loadConversations(), loadFriends()]);
      if (Object.keys(cursors).length) await api.post('/v1/sync/cursors', { cursors });
    } while (state.catchUp.again);
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
  } finally {
    state.catchUp.running = false;
  }
}

function onEvent(event) {
  if (!state.me) return;
  switch (event.kind) {
    case 'message':
      acceptMessage(event, true);
      break;
    case 'ack':
      onAck(event);
      break;
    case 'error':
      onSendError(event);
      break;
    case 'conversation':
      onConversationEvent(event);
      break;
    case 'receipt':
      onReceipt(event);
      break;
    case 'typing':
      onTyping(event);
      break;
    case 'friend':
      loadFriends().catch(() => undefined);
      break;
    default:
      break;
  }
}

function acceptMessage(message, live) {
  const cid = message.conversation_id;
  const conv = state.conversations.get(cid);
  const mine = message.sender_id === state.me.id;
  if (mine && message.cmid) state.outbox?.settle(message.cmid);
  if (!conv) {
    fetchConversation(cid);
  } else {
    if (!conv.last_message || message.seq > conv.last_message.seq) conv.last_message = message;
    if (live && !mine && message.seq > (conv.countedTo ?? 0)) {
      conv.countedTo = message.seq;
      if (!isReading(cid)) conv.unread_count = (conv.unread_count ?? 0) + 1;
    }
  }
  const timeline = state.timelines.get(cid);
  if (timeline?.add(message)) renderMessage(message);
  if (timeline?.loaded && timeline.gap()) fillGap(cid);
  stopTyping(cid, message.sender_id);
  if (isReading(cid)) markRead();
  scheduleList();
}

function onAck(event) {
  const entry = state.outbox?.settle(event.cmid);
  if (!entry) return; // answered already (a resend is acknowledged again)
  acceptMessage(
    {
      conversation_id: event.conversation_id,
      message_id: event.message_id,
      seq: event.seq,
      sender_id: state.me.id,
      cmid: event.cmid,
      text: entry.text,
      created_at: event.created_at ?? new Date().toISOString(),
    },
    false,
  );
}

function onSendError(event) {
  const entry = event.cmid ? state.outbox?.get(event.cmid) : undefined;
  if (!entry) return;
  if (!FINAL_ERRORS.has(event.code)) return; // rate_limited and the like: resent later
  state.outbox.settle(event.cmid);
  const failed = { ...entry, code: event.code, message: event.message };
  state.failed.set(event.cmid, failed);
  const element = state.view?.elements.get(`c${event.cmid}`);
  if (element) element.replaceWith(bindElement(`c${event.cmid}`, messageElement(failed, 'failed')));
}

function onConversationEvent(event) {
  const conversation = event.conversation;
  if (!conversation?.id) return;
  if (event.action === 'member_removed' && event.user_id === state.me.id) {
    state.conversations.delete(conversation.id);
    state.timelines.delete(conversation.id);
    if (state.openId === conversation.id) location.hash = '';
    scheduleList();
    return;
  }
  upsertConversation(conversation);
  if (state.openId === conversation.id) renderHeader();
  scheduleList();
}

function onReceipt(event) {
  const conv = state.conversations.get(event.conversation_id);
  if (!conv || event.user_id !== state.me.id) return;
  // Read on another of my devices.
  conv.last_read_seq = Math.max(conv.last_read_seq ?? 0, event.seq);
  if (!conv.last_message || event.seq >= conv.last_message.seq) conv.unread_count = 0;
  else fetchConversation(event.conversation_id);
  scheduleList();
}

function onTyping(event) {
  const { conversation_id: cid, user_id: userId } = event;
  if (!cid || !userId || userId === state.me.id) return;
  if (!state.typing.has(cid)) state.typing.set(cid, new Map());
  state.typing.get(cid).set(userId, Date.now() + TYPING_SHOWN_MS);
  setTimeout(renderTyping, TYPING_SHOWN_MS + 50);
  renderTyping();
}

function stopTyping(cid, userId) {
  if (state.typing.get(cid)?.delete(userId)) renderTyping();
}

function typingIn(cid) {
  const now = Date.now();
  const who = state.typing.get(cid);
  if (!who) return [];
  for (const [userId, until] of who) if (until <= now) who.delete(userId);
  return [...who.keys()].map(nameOf);
}

// ---------------------------------------------------------------- conversations

async function loadConversations() {
  const { conversations } = await api.get('/v1/conversations');
  const seen = new Set();
  for (const conversation of conversations) {
    seen.add(conversation.id);
    upsertConversation(conversation, true);
  }
  for (const cid of [...state.conversations.keys()]) if (!seen.has(cid)) state.conversations.delete(cid);
  if (state.openId && isReading(state.openId)) markRead();
  scheduleList();
}

async function fetchConversation(cid) {
  if (state.fetching.has(cid)) return;
  state.fetching.add(cid);
  try {
    upsertConversation(await api.get(`/v1/conversations/${encodeURIComponent(cid)}`), true);
    if (state.openId === cid) renderHeader();
    scheduleList();
  } catch {
    // gone or unreachable: the next catch-up lists it again if it is still mine
  } finally {
    state.fetching.delete(cid);
  }
}

/** Merge a ConversationOut; `full` when it carries last_message and unread_count. */
function upsertConversation(conversation, full = false) {
  const known = state.conversations.get(conversation.id);
  const merged = { ...known, ...conversation };
  if (full) {
    merged.countedTo = Math.max(known?.countedTo ?? 0, conversation.last_message?.seq ?? 0);
    const newer = known?.last_message && known.last_message.seq > (conversation.last_message?.seq ?? 0);
    if (newer) merged.last_message = known.last_message;
  } else {
    merged.last_message = known?.last_message ?? null;
    merged.unread_count = known?.unread_count ?? 0;
    merged.last_read_seq = known?.last_read_seq ?? 0;
  }
  state.conversations.set(conversation.id, merged);
  for (const member of conversation.members ?? []) {
    state.users.set(member.user_id, { username: member.username, display_name: member.display_name });
  }
  state.conn?.watchPresence(watchedUsers());
  return merged;
}

/** Everyone whose presence dot shows: my friends and the members of my conversations. */
function watchedUsers() {
  const ids = new Set((state.friends?.friends ?? []).map((friend) => friend.id));
  for (const conv of state.conversations.values()) {
    for (const member of conv.members ?? []) if (member.user_id !== state.me?.id) ids.add(member.user_id);
  }
  return ids;
}

const nameOf = (userId) => {
  const user = state.users.get(userId);
  return user?.display_name || user?.username || 'Someone';
};

function titleOf(conv) {
  if (conv.type === 'group') return conv.title || 'Group';
  const peer = peerOf(conv);
  return peer ? peer.display_name || peer.username : 'Just you';
}

const peerOf = (conv) =>
  conv.type === 'direct' ? (conv.members ?? []).find((member) => member.user_id !== state.me.id) : undefined;

async function findUser(username) {
  const wanted = username.trim().replace(/^@/, '');
  if (!wanted) throw new ApiError(400, 'invalid', 'Type a username.');
  const found = await api.get(`/v1/users?username=${encodeURIComponent(wanted)}`);
  if (!found.length) throw new ApiError(404, 'unknown_user', `There is no user named “${wanted}”.`);
  return found[0];
}

async function startDirect(username) {
  const user = await findUser(username);
  if (user.id === state.me.id) throw new ApiError(400, 'self_conversation', 'That is you.');
  await startDirectWith(user.id);
}

async function startDirectWith(userId) {
  const conversation = await api.post('/v1/conversations', { type: 'direct', user_id: userId });
  upsertConversation(conversation, true);
  scheduleList();
  location.hash = `#/c/${conversation.id}`;
}

async function createGroup(title, usernames) {
  const names = [...new Set(usernames.split(/[\s,;]+/).filter(Boolean))];
  const users = await Promise.all(names.map(findUser));
  const memberIds = users.map((user) => user.id).filter((id) => id !== state.me.id);
  const conversation = await api.post('/v1/conversations', { type: 'group', title, member_ids: memberIds });
  upsertConversation(conversation, true);
  scheduleList();
  location.hash = `#/c/${conversation.id}`;
}

async function addMember(username) {
  const cid = state.openId;
  const user = await findUser(username);
  const conversation = await api.post(`/v1/conversations/${cid}/members`, { user_id: user.id });
  upsertConversation(conversation);
  renderHeader();
}

async function leaveGroup() {
  const cid = state.openId;
  if (!cid || !window.confirm('Leave this group?')) return;
  await api.call('DELETE', `/v1/conversations/${cid}/members/${state.me.id}`);
  state.conversations.delete(cid);
  state.timelines.delete(cid);
  location.hash = '';
  scheduleList();
}

// ---------------------------------------------------------------- friends

async function loadFriends() {
  try {
    state.friends = await api.get('/v1/friends');
  } catch (error) {
    if (error instanceof ApiError && error.status === 404) {
      state.friends = null; // a platform without friends
      byId('friends').hidden = true;
      return;
    }
    throw error;
  }
  for (const user of [...state.friends.friends, ...state.friends.incoming, ...state.friends.outgoing]) {
    state.users.set(user.id, { username: user.username, display_name: user.display_name });
  }
  byId('friends').hidden = false;
  state.conn?.watchPresence(watchedUsers());
  renderFriends();
}

async function friendAction(path) {
  try {
    await api.post(path);
    await loadFriends();
  } catch (error) {
    showError('sidebar-error', error);
  }
}

function renderFriends() {
  if (!state.friends) return;
  const { friends, incoming, outgoing } = state.friends;
  const person = (user) => [
    h('span', { class: 'who', text: user.display_name || user.username }),
    h('span', { class: 'handle', text: `@${user.username}` }),
  ];
  byId('friend-requests').replaceChildren(
    ...incoming.map((user) =>
      h(
        'li',
        { dataset: { user: user.id } },
        ...person(user),
        h('button', { type: 'button', text: 'Accept', onclick: () => friendAction(`/v1/friends/requests/${user.id}/accept`) }),
        h('button', { type: 'button', class: 'link', text: 'Decline', onclick: () => friendAction(`/v1/friends/requests/${user.id}/decline`) }),
      ),
    ),
    ...outgoing.map((user) => h('li', { dataset: { user: user.id } }, ...person(user), h('span', { class: 'hint', text: 'asked' }))),
  );
  byId('friend-list').replaceChildren(
    ...friends.map((user) =>
      h(
        'li',
        { dataset: { user: user.id } },
        h(
          'button',
          {
            type: 'button',
            class: 'friend',
            title: `Chat with ${user.display_name || user.username}`,
            onclick: () => startDirectWith(user.id).catch((error) => showError('sidebar-error', error)),
          },
          presenceDot(user.id),
          ...person(user),
        ),
      ),
    ),
  );
  byId('no-friends').hidden = friends.length + incoming.length + outgoing.length > 0;
  const badge = byId('friend-badge');
  badge.textContent = incoming.length ? String(incoming.length) : '';
  badge.setAttribute('aria-label', incoming.length ? `${incoming.length} friend request(s)` : '');
}

async function askFriend(username) {
  const user = await findUser(username);
  if (user.id === state.me.id) throw new ApiError(400, 'self_friend', 'That is you.');
  await api.post('/v1/friends/requests', { user_id: user.id });
  await loadFriends();
}

// ---------------------------------------------------------------- history

const isReading = (cid) => state.openId === cid && document.visibilityState === 'visible';

async function loadLatest(cid) {
  const timeline = state.timelines.get(cid);
  setHistoryStatus('Loading messages…');
  try {
    const page = await api.get(`/v1/conversations/${cid}/messages?limit=${PAGE}`);
    for (const message of page.messages) if (timeline.add(message)) renderMessage(message);
    timeline.hasMoreBefore = page.has_more && timeline.oldest !== 1;
    if (!page.messages.length) timeline.hasMoreBefore = false;
    timeline.loaded = true;
    if (state.openId === cid) scrollToBottom();
    if (timeline.gap()) await fillGap(cid);
    if (isReading(cid)) markRead();
  } catch (error) {
    showError('conv-error', error);
  } finally {
    renderHistoryStatus();
  }
  fillViewport();
}

async function loadOlder() {
  const cid = state.openId;
  const timeline = cid ? state.timelines.get(cid) : undefined;
  if (!timeline?.loaded || !timeline.hasMoreBefore || state.loadingOlder) return;
  state.loadingOlder = true;
  setHistoryStatus('Loading earlier messages…');
  const box = byId('messages');
  try {
    const page = await api.get(`/v1/conversations/${cid}/messages?before=${timeline.oldest}&limit=${PAGE}`);
    if (state.openId !== cid) return;
    const height = box.scrollHeight;
    const top = box.scrollTop;
    for (const message of page.messages) if (timeline.add(message)) renderMessage(message);
    timeline.hasMoreBefore = page.has_more && page.messages.length > 0 && timeline.oldest !== 1;
    box.scrollTop = top + (box.scrollHeight - height); // keep what the reader was looking at in place
  } catch (error) {
    showError('conv-error', error);
  } finally {
    state.loadingOlder = false;
    renderHistoryStatus();
  }
  fillViewport();
}

/** Load older pages until the message list can scroll (so scrolling up can ask for more). */
function fillViewport() {
  const box = byId('messages');
  const timeline = state.openId ? state.timelines.get(state.openId) : undefined;
  if (timeline?.hasMoreBefore && box.scrollHeight <= box.clientHeight + 40) loadOlder();
}

const filling = new Set();
async function fillGap(cid) {
  const timeline = state.timelines.get(cid);
  if (!timeline?.loaded || filling.has(cid)) return;
  filling.add(cid);
  try {
    let gap = timeline.gap();
    while (gap) {
      const page = await api.get(`/v1/conversations/${cid}/messages?after=${gap.after}&limit=200`);
      for (const message of page.messages) if (timeline.add(message)) renderMessage(message);
      if (!page.messages.length) break;
      gap = timeline.gap();
    }
  } catch {
    // the next catch-up tries again
  } finally {
    filling.delete(cid);
  }
  if (isReading(cid)) markRead();
}

let reading = false;
/** Move my read marker to the newest message of the open conversation (while it is shown). */
async function markRead() {
  const cid = state.openId;
  const conv = cid ? state.conversations.get(cid) : undefined;
  const timeline = cid ? state.timelines.get(cid) : undefined;
  if (!conv || !timeline?.loaded || !isReading(cid)) return;
  if (conv.unread_count) {
    conv.unread_count = 0;
    scheduleList();
  }
  if (reading) return; // the running call looks again when it is done
  reading = true;
  try {
    while (timeline.newest > (conv.last_read_seq ?? 0) && isReading(cid)) {
      const seq = timeline.newest;
      await api.post(`/v1/conversations/${cid}/read`, { seq });
      conv.last_read_seq = Math.max(conv.last_read_seq ?? 0, seq);
    }
  } catch {
    // offline: the next message or catch-up tries again
  } finally {
    reading = false;
  }
}

// ---------------------------------------------------------------- sending

function send() {
  const input = byId('composer-input');
  const cid = state.openId;
  const text = input.value;
  if (!cid || !text.trim()) return;
  const length = codePoints(text);
  if (length > MAX_CHARS) {
    showError('conv-error', new ApiError(400, 'too_long', `A message has at most ${MAX_CHARS.toLocaleString()} characters; this one has ${length.toLocaleString()}.`));
    return;
  }
  byId('conv-error').textContent = '';
  const entry = state.outbox.add(cid, text);
  renderPending(entry);
  publishEntry(entry);
  input.value = '';
  state.drafts.delete(cid);
  state.lastTypingSent = 0;
  autoGrow();
  scrollToBottom();
}

function noteTyping() {
  const cid = state.openId;
  if (!cid || !byId('composer-input').value.trim()) return;
  const now = Date.now();
  if (now - state.lastTypingSent < TYPING_EVERY_MS) return;
  if (state.conn?.publish(`conv/${cid}/typing`, {}, 0)) state.lastTypingSent = now;
}

// ---------------------------------------------------------------- rendering

function route() {
  if (!state.me) return;
  const match = /^#\/c\/([0-9]+)$/.exec(location.hash);
  if (match) openConversation(match[1]);
  else closeConversation();
}

function closeConversation() {
  saveDraft();
  state.openId = null;
  state.view = null;
  byId('conv').hidden = true;
  byId('placeholder').hidden = false;
  byId('chat').dataset.view = 'list';
  byId('message-list').replaceChildren();
  scheduleList();
}

function saveDraft() {
  const input = byId('composer-input');
  if (state.openId && input.value) state.drafts.set(state.openId, input.value);
  else if (state.openId) state.drafts.delete(state.openId);
}

function openConversation(cid) {
  if (state.openId === cid) return;
  const conv = state.conversations.get(cid);
  if (!conv) {
    // Not (yet) known: a deep link, or a conversation created elsewhere.
    fetchConversation(cid).then(() => {
      if (state.conversations.has(cid) && location.hash === `#/c/${cid}`) openConversation(cid);
    });
    return;
  }
  saveDraft();
  state.openId = cid;
  state.view = { cid, seqs: [], elements: new Map() };
  byId('placeholder').hidden = true;
  byId('conv').hidden = false;
  byId('chat').dataset.view = 'conversation';
  byId('conv-error').textContent = '';
  byId('group-tools').open = false;
  byId('message-list').replaceChildren();
  if (!state.timelines.has(cid)) state.timelines.set(cid, new Timeline());
  const timeline = state.timelines.get(cid);
  for (const message of timeline.ordered()) renderMessage(message);
  for (const entry of state.outbox.forConversation(cid)) renderPending(entry);
  for (const failed of state.failed.values()) {
    if (failed.conversation_id === cid) {
      byId('message-list').append(bindElement(`c${failed.cmid}`, messageElement(failed, 'failed')));
    }
  }
  renderHeader();
  renderTyping();
  renderHistoryStatus();
  const input = byId('composer-input');
  input.value = state.drafts.get(cid) ?? '';
  autoGrow();
  scrollToBottom();
  scheduleList();
  if (window.matchMedia('(pointer: fine)').matches) input.focus();
  if (!timeline.loaded) loadLatest(cid);
  else {
    markRead();
    fillViewport();
  }
}

function bindElement(key, element) {
  state.view?.elements.set(key, element);
  return element;
}

function messageElement(message, status) {
  const mine = message.sender_id === state.me.id;
  const conv = state.conversations.get(message.conversation_id);
  const created = parseTime(message.created_at);
  const label = {
    pending: 'Sending…',
    sent: 'Sent',
    failed: `Not sent: ${message.message ?? 'refused'}`,
  }[status];
  return h(
    'li',
    {
      class: `msg ${mine ? 'mine' : 'theirs'}`,
      dataset: {
        seq: message.seq ?? '',
        cmid: message.cmid ?? '',
        sender: message.sender_id,
        state: mine ? status : 'received',
      },
    },
    h(
      'div',
      { class: 'bubble' },
      mine
        ? h('span', { class: 'visually-hidden', text: 'You:' })
        : h('span', { class: conv?.type === 'group' ? 'sender' : 'visually-hidden', text: nameOf(message.sender_id) }),
      h('p', { class: 'text', text: message.text }),
      h(
        'span',
        { class: 'meta' },
        created
          ? h('time', { datetime: created.toISOString(), title: created.toLocaleString(), text: shortTime(created) })
          : null,
        mine ? h('span', { class: 'status', 'aria-label': label, title: label, text: statusMark(status) }) : null,
        status === 'failed'
          ? h('button', {
              type: 'button',
              class: 'link',
              text: 'Dismiss',
              onclick: () => {
                state.failed.delete(message.cmid);
                state.view?.elements.get(`c${message.cmid}`)?.remove();
                state.view?.elements.delete(`c${message.cmid}`);
              },
            })
          : null,
      ),
    ),
  );
}

const statusMark = (status) => ({ pending: '🕓', sent: '✓', failed: '⚠ Not sent' })[status] ?? '';

/** Put a committed message of the open conversation in its place by seq. */
function renderMessage(message) {
  const view = state.view;
  if (!view || view.cid !== message.conversation_id) return;
  const key = `s${message.seq}`;
  if (view.elements.has(key)) return;
  const box = byId('messages');
  const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 120;
  const pending = view.elements.get(`c${message.cmid}`);
  const mine = message.sender_id === state.me.id;
  if (pending && mine) {
    pending.remove();
    view.elements.delete(`c${message.cmid}`);
  }
  const element = bindElement(key, messageElement(message, 'sent'));
  let low = 0;
  let high = view.seqs.length;
  while (low < high) {
    const middle = (low + high) >> 1;
    if (view.seqs[middle] < message.seq) low = middle + 1;
    else high = middle;
  }
  const list = byId('message-list');
  const next =
    low < view.seqs.length
      ? view.elements.get(`s${view.seqs[low]}`)
      : list.querySelector('li[data-state="pending"], li[data-state="failed"]');
  list.insertBefore(element, next ?? null);
  view.seqs.splice(low, 0, message.seq);
  if (view.seqs.length === 1) renderHistoryStatus(); // "No messages yet" no more
  if (low === view.seqs.length - 1 && (atBottom || (mine && pending))) scrollToBottom();
}

function renderPending(entry) {
  const view = state.view;
  if (!view || view.cid !== entry.conversation_id || view.elements.has(`c${entry.cmid}`)) return;
  if (state.timelines.get(entry.conversation_id)?.findByCmid(state.me.id, entry.cmid)) return;
  const message = { ...entry, sender_id: state.me.id, created_at: new Date(entry.created_at).toISOString() };
  byId('message-list').append(bindElement(`c${entry.cmid}`, messageElement(message, 'pending')));
}

function scrollToBottom() {
  const box = byId('messages');
  box.scrollTop = box.scrollHeight;
}

function setHistoryStatus(text) {
  byId('history-status').textContent = text;
  byId('messages').setAttribute('aria-busy', text ? 'true' : 'false');
}

function renderHistoryStatus() {
  const timeline = state.openId ? state.timelines.get(state.openId) : undefined;
  if (!timeline?.loaded) return;
  setHistoryStatus('');
  if (!timeline.hasMoreBefore) {
    byId('history-status').textContent = timeline.newest ? 'The beginning of the conversation' : 'No messages yet. Say hello!';
  }
}

function presenceDot(userId) {
  const presence = state.presence.get(userId);
  const status = presence?.status === 'online' ? 'online' : presence?.status === 'offline' ? 'offline' : 'unknown';
  const label = { online: 'online', offline: 'offline', unknown: 'presence unknown' }[status];
  return h('span', { class: 'dot', role: 'img', 'aria-label': label, title: label, dataset: { status, user: userId } });
}

function presenceText(userId) {
  const presence = state.presence.get(userId);
  if (presence?.status === 'online') return 'online';
  if (presence?.status === 'offline') {
    const seen = parseTime(presence.last_active_at);
    return seen ? `last seen ${shortTime(seen)}` : 'offline';
  }
  return '';
}

function renderHeader() {
  const conv = state.openId ? state.conversations.get(state.openId) : undefined;
  if (!conv) return;
  const title = byId('conv-title');
  const peer = peerOf(conv);
  title.replaceChildren(...(peer ? [presenceDot(peer.user_id), ' '] : []), titleOf(conv));
  const tools = byId('group-tools');
  if (conv.type === 'group') {
    const members = conv.members ?? [];
    byId('conv-subtitle').textContent = `${members.length} member${members.length === 1 ? '' : 's'}`;
    tools.hidden = false;
    byId('member-list').replaceChildren(
      ...members.map((member) =>
        h(
          'li',
          { dataset: { user: member.user_id } },
          member.user_id === state.me.id ? h('span', { class: 'dot', dataset: { status: 'self' } }) : presenceDot(member.user_id),
          h('span', { text: member.display_name || member.username }),
          h('span', { class: 'handle', text: `@${member.username}` }),
          member.user_id === state.me.id ? h('span', { class: 'tag', text: 'you' }) : null,
          member.role === 'admin' ? h('span', { class: 'tag', text: 'admin' }) : null,
        ),
      ),
    );
    const admin = members.some((member) => member.user_id === state.me.id && member.role === 'admin');
    byId('member-form').hidden = !admin;
  } else {
    tools.hidden = true;
    byId('conv-subtitle').textContent = peer ? [`@${peer.username}`, presenceText(peer.user_id)].filter(Boolean).join(' · ') : '';
  }
}

function renderPresence() {
  renderHeader();
  renderFriends();
  scheduleList();
}

function renderTyping() {
  const cid = state.openId;
  const names = cid ? typingIn(cid) : [];
  byId('typing').textContent = typingText(names);
  scheduleList();
}

function typingText(names) {
  if (!names.length) return '';
  if (names.length === 1) return `${names[0]} is typing…`;
  if (names.length === 2) return `${names[0]} and ${names[1]} are typing…`;
  return 'Several people are typing…';
}

function renderConnection(status) {
  const element = byId('connection');
  element.dataset.state = status;
  element.textContent = { online: 'Online', connecting: 'Connecting…', offline: 'Offline' }[status];
}

let listQueued = false;
function scheduleList() {
  if (listQueued) return;
  listQueued = true;
  requestAnimationFrame(() => {
    listQueued = false;
    renderList();
  });
}

function renderList() {
  if (!state.me) return;
  const list = byId('conversations');
  const focused = document.activeElement?.closest?.('#conversations a')?.dataset.cid;
  const conversations = [...state.conversations.values()].sort((a, b) =>
    compareIds(b.last_message?.message_id ?? b.id, a.last_message?.message_id ?? a.id),
  );
  list.replaceChildren(...conversations.map(conversationItem));
  byId('no-conversations').hidden = conversations.length > 0;
  if (focused) list.querySelector(`a[data-cid="${focused}"]`)?.focus();
  const unread = conversations.reduce((sum, conv) => sum + (conv.unread_count ?? 0), 0);
  document.title = unread ? `(${unread}) Hubbub` : 'Hubbub';
}

function conversationItem(conv) {
  const peer = peerOf(conv);
  const typing = typingIn(conv.id);
  const last = conv.last_message;
  let preview = '';
  if (typing.length) preview = typingText(typing);
  else if (last) {
    const who = last.sender_id === state.me.id ? 'You: ' : conv.type === 'group' ? `${nameOf(last.sender_id)}: ` : '';
    preview = who + clip(last.text.replace(/\s+/g, ' '), 120);
  }
  const when = parseTime(last?.created_at ?? conv.created_at);
  const unread = conv.unread_count ?? 0;
  return h(
    'li',
    {},
    h(
      'a',
      {
        href: `#/c/${conv.id}`,
        class: `conv-item${unread ? ' has-unread' : ''}`,
        dataset: { cid: conv.id, type: conv.type },
        'aria-current': state.openId === conv.id ? 'page' : null,
      },
      peer ? presenceDot(peer.user_id) : h('span', { class: 'dot group', 'aria-hidden': 'true', text: '#' }),
      h('span', { class: 'name', text: titleOf(conv) }),
      when ? h('time', { datetime: when.toISOString(), text: shortTime(when) }) : h('span'),
      h('span', { class: `preview${typing.length ? ' typing-preview' : ''}`, text: preview }),
      unread
        ? h('span', { class: 'unread', 'aria-label': `${unread} unread`, text: unread > 99 ? '99+' : String(unread) })
        : null,
    ),
  );
}

function showError(id, error) {
  byId(id).textContent = error instanceof ApiError ? friendly(error) : 'Something went wrong.';
  if (!(error instanceof ApiError)) console.error(error);
}

function friendly(error) {
  switch (error.code) {
    case 'bad_credentials':
      return 'Wrong username or password.';
    case 'username_taken':
      return 'That username is taken.';
    case 'network':
      return 'Cannot reach Hubbub. Check your connection.';
    case 'rate_limited':
      return 'Too many attempts. Try again in a minute.';
    default:
      return error.message;
  }
}

function autoGrow() {
  const input = byId('composer-input');
  input.style.height = 'auto';
  input.style.height = `${Math.min(input.scrollHeight, 200)}px`;
}

// ---------------------------------------------------------------- wiring

function onSubmit(formId, errorId, action) {
  const form = byId(formId);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    byId(errorId).textContent = '';
    const button = form.querySelector('button[type="submit"]');
    button.disabled = true;
    try {
      await action(form);
    } catch (error) {
      showError(errorId, error);
    } finally {
      button.disabled = false;
    }
  });
}

function bindHandlers() {
  onSubmit('login-form', 'login-error', async () => {
    const username = byId('login-username').value.trim();
    const password = byId('login-password').value;
    if (!username || !password) throw new ApiError(400, 'invalid', 'Enter your username and password.');
    await logIn(username, password);
    byId('login-password').value = '';
  });
  onSubmit('signup-form', 'signup-error', async (form) => {
    if (!form.checkValidity()) {
      const bad = form.querySelector(':invalid');
      bad?.focus();
      const label = form.querySelector(`label[for="${bad?.id}"]`)?.textContent ?? 'A field';
      throw new ApiError(400, 'invalid', `${label.replace(/\s*\(optional\)/, '')}: ${bad?.validationMessage ?? 'invalid'}`);
    }
    const username = byId('signup-username').value.trim();
    const password = byId('signup-password').value;
    const displayName = byId('signup-display-name').value.trim();
    await api.call('POST', '/v1/users', { username, password, ...(displayName ? { display_name: displayName } : {}) }, { auth: false });
    await logIn(username, password);
    byId('signup-password').value = '';
  });
  onSubmit('direct-form', 'sidebar-error', async () => {
    await startDirect(byId('direct-username').value);
    byId('direct-username').value = '';
    byId('new-direct').open = false;
  });
  onSubmit('group-form', 'sidebar-error', async () => {
    const title = byId('group-title').value.trim();
    if (!title) throw new ApiError(400, 'invalid', 'Give the group a name.');
    await createGroup(title, byId('group-members').value);
    byId('group-title').value = '';
    byId('group-members').value = '';
    byId('new-group').open = false;
  });
  onSubmit('friend-form', 'sidebar-error', async () => {
    await askFriend(byId('friend-username').value);
    byId('friend-username').value = '';
  });
  onSubmit('member-form', 'conv-error', async () => {
    await addMember(byId('member-username').value);
    byId('member-username').value = '';
  });
  onSubmit('composer', 'conv-error', async () => send());
  byId('leave-group').addEventListener('click', () => leaveGroup().catch((error) => showError('conv-error', error)));
  byId('logout').addEventListener('click', () => logOut());
  byId('use-here').addEventListener('click', () => location.reload());

  const input = byId('composer-input');
  input.addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && !event.shiftKey && !event.isComposing && event.keyCode !== 229) {
      event.preventDefault();
      send();
    }
  });
  input.addEventListener('input', () => {
    autoGrow();
    noteTyping();
  });
  byId('messages').addEventListener('scroll', () => {
    if (byId('messages').scrollTop < 200) loadOlder();
  }, { passive: true });
  window.addEventListener('hashchange', route);
  document.addEventListener('visibilitychange', () => {
    if (state.openId && isReading(state.openId)) markRead();
  });
}

boot().catch((error) => {
  console.error(error);
  showAuth('Something went wrong while starting. Reload the page to try again.');
});
