// What the reader does to conversations through the REST API: list them, fetch one, start a
// direct chat or a group, add a member, leave. Every ConversationOut goes through
// storeConversation, which also learns the members' names and watches their presence.
import { ApiError } from './api.js';
import { api } from './backend.js';
import { renderHeader } from './conversation-header.js';
import { scheduleList } from './conversation-list.js';
import { conversations } from './conversations.js';
import { markRead } from './history.js';
import { watchPresence } from './live.js';
import { isReading, openCid } from './open-conversation.js';
import { people } from './people.js';

const fetching = new Set();

/** Merge a ConversationOut (`full`: it carries last_message and unread_count). */
export function storeConversation(conversation, full = false) {
  const merged = conversations.upsert(conversation, full);
  for (const member of conversation.members ?? []) people.remember(member.user_id, member);
  watchPresence();
  return merged;
}

/** The whole list, replacing what was known. */
export async function loadConversations() {
  const { conversations: listed } = await api.get('/v1/conversations');
  const seen = new Set();
  for (const conversation of listed) {
    seen.add(conversation.id);
    storeConversation(conversation, true);
  }
  conversations.keepOnly(seen);
  const cid = openCid();
  if (cid && isReading(cid)) markRead();
  scheduleList();
}

/** One conversation not known yet (a deep link, or created elsewhere), or whose counts went stale. */
export async function fetchConversation(cid) {
  if (fetching.has(cid)) return;
  fetching.add(cid);
  try {
    storeConversation(await api.get(`/v1/conversations/${encodeURIComponent(cid)}`), true);
    if (openCid() === cid) renderHeader();
    scheduleList();
  } catch {
    // gone or unreachable: the next catch-up lists it again if it is still mine
  } finally {
    fetching.delete(cid);
  }
}

/** The user with this username (an "@" before it is fine). */
export async function findUser(username) {
  const wanted = username.trim().replace(/^@/, '');
  if (!wanted) throw new ApiError(400, 'invalid', 'Type a username.');
  const found = await api.get(`/v1/users?username=${encodeURIComponent(wanted)}`);
  if (!found.length) throw new ApiError(404, 'unknown_user', `There is no user named “${wanted}”.`);
  return found[0];
}

export async function startDirect(username) {
  const user = await findUser(username);
  if (people.isMe(user.id)) throw new ApiError(400, 'self_conversation', 'That is you.');
  await startDirectWith(user.id);
}

/** Open the direct conversation with this user (the platform creates it the first time). */
export async function startDirectWith(userId) {
  const conversation = await api.post('/v1/conversations', { type: 'direct', user_id: userId });
  storeConversation(conversation, true);
  scheduleList();
  location.hash = `#/c/${conversation.id}`;
}

/** A new group; `usernames` separated by commas, semicolons or spaces. */
export async function createGroup(title, usernames) {
  const names = [...new Set(usernames.split(/[\s,;]+/).filter(Boolean))];
  const users = await Promise.all(names.map(findUser));
  const memberIds = users.map((user) => user.id).filter((id) => !people.isMe(id));
  const conversation = await api.post('/v1/conversations', { type: 'group', title, member_ids: memberIds });
  storeConversation(conversation, true);
  scheduleList();
  location.hash = `#/c/${conversation.id}`;
}

export async function addMember(username) {
  const cid = openCid();
  const user = await findUser(username);
  const conversation = await api.post(`/v1/conversations/${cid}/members`, { user_id: user.id });
  storeConversation(conversation);
  renderHeader();
}

export async function leaveGroup() {
  const cid = openCid();
  if (!cid || !window.confirm('Leave this group?')) return;
  await api.call('DELETE', `/v1/conversations/${cid}/members/${people.me.id}`);
  conversations.remove(cid);
  location.hash = '';
  scheduleList();
}
