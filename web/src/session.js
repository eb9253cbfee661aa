// Signing in and out: back into the saved session, password login, sign-up, log-out, the session
// ending, and one window per browser holding the device's connection.
import { ApiError } from './api.js';
import { api } from './backend.js';
import { loadConversations } from './conversation-actions.js';
import { clearDrafts } from './composer.js';
import { conversations } from './conversations.js';
import { byId } from './dom.js';
import { showError } from './errors.js';
import { loadFriends } from './friends.js';
import { onConnected, onEvent, onPresence } from './inbox.js';
import { connect, disconnect } from './live.js';
import { setOpen } from './open-conversation.js';
import { people } from './people.js';
import { route } from './router.js';
import { closeOutbox, currentOutbox, openOutbox, RESEND_AFTER_MS, resendStale } from './sending.js';
import { saved, storage } from './storage.js';
import { typing } from './typing.js';

const RESUME_RETRY_MS = 3000;

/** @type {number[]} */
let timers = [];

api.hooks.onAuthLost = () => {
  teardown();
  saved.forget();
  showAuth('Your session has ended. Please log in again.');
};

/** Back into the saved session (same device, same history) without asking for the password. */
export async function resume() {
  const session = saved.get();
  if (!session?.refresh_token) {
    showAuth('');
    return;
  }
  try {
    await api.refresh(session.refresh_token);
  } catch (error) {
    if (error instanceof ApiError && error.status === 0) {
      showAuth('Cannot reach Hubbub. Retrying…');
      setTimeout(() => {
        if (!people.me) resume().catch(() => undefined);
      }, RESUME_RETRY_MS);
      return;
    }
    saved.forget();
    showAuth('');
    byId('login-username').value = session.username ?? '';
    return;
  }
  await start();
}

/** Signed in: load what the user has, connect, show the conversation the address names. */
async function start() {
  const me = await api.get('/v1/users/me');
  people.signIn(me);
  saved.rememberDevice(me.username, api.tokens.device_id);
  saved.saveUsername(me.username);
  openOutbox(storage, me.id);
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
  connect({ onConnect: onConnected, onEvent, onPresence });
  timers.push(window.setInterval(resendStale, RESEND_AFTER_MS / 2));
  route();
}

/** Stop everything live and forget the signed-in user's state (not the device). */
function teardown() {
  disconnect();
  api.stop();
  for (const timer of timers) clearInterval(timer);
  timers = [];
  people.reset();
  closeOutbox();
  conversations.reset();
  typing.reset();
  clearDrafts();
  byId('friends').hidden = true;
  setOpen(null);
  byId('conversations').replaceChildren();
  byId('message-list').replaceChildren();
  byId('chat').hidden = true;
  if (location.hash) history.replaceState(null, '', location.pathname);
}

export function showAuth(message) {
  byId('chat').hidden = true;
  byId('auth').hidden = false;
  byId('auth-status').textContent = message;
  document.title = 'Hubbub';
}

/** Password login; this browser's earlier device for that username is reused. */
export async function logIn(username, password) {
  await api.login(username, password, saved.deviceFor(username));
  saved.saveUsername(username);
  await start();
}

export async function signUp(username, password, displayName) {
  const body = { username, password, ...(displayName ? { display_name: displayName } : {}) };
  await api.call('POST', '/v1/users', body, { auth: false });
  await logIn(username, password);
}

export async function logOut() {
  const unsent = currentOutbox()?.size ?? 0;
  if (unsent && !window.confirm(`${unsent} message(s) have not been sent yet. Log out anyway?`)) return;
  try {
    await api.call('POST', '/v1/auth/logout', undefined, { retry: false });
  } catch {
    // the refresh token is forgotten here either way
  }
  currentOutbox()?.clear();
  teardown();
  saved.forget();
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
    if (message.data?.type === 'active' && message.data.tab !== tabId && people.me) {
      teardown();
      byId('takeover').hidden = false;
    }
  };
}
