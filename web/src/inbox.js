// What arrives on the live link: inbox events (message, ack, error, conversation, receipt,
// typing, friend, resync), presence, and after each (re)connect or resync the catch-up through
// /v1/sync.
import { ApiError } from './api.js';
import { api } from './backend.js';
import { oneAtATime } from './coalesce.js';
import { renderHeader } from './conversation-header.js';
import { scheduleList } from './conversation-list.js';
import { fetchConversation, loadConversations, storeConversation } from './conversation-actions.js';
import { conversations } from './conversations.js';
import { loadFriends, renderFriends } from './friends.js';
import { fillGap, markRead } from './history.js';
import { renderMessage, renderTyping, showRefused } from './message-view.js';
import { isReading, openCid } from './open-conversation.js';
import { people } from './people.js';
import { currentOutbox, resendAll } from './sending.js';
import { TYPING_SHOWN_MS, typing } from './typing.js';

const SYNC_LIMIT = 100;

/** Connected, inbox subscribed: resend what waits for an ack, then catch up. */
export function onConnected() {
  resendAll();
  catchUp();
}

/** What was missed, from /v1/sync, then the cursors move past it (once more if asked meanwhile). */
const catchUp = oneAtATime(async () => {
  try {
    const sync = await api.get(`/v1/sync?limit=${SYNC_LIMIT}`);
    const cursors = {};
    for (const moved of sync.conversations) {
      for (const message of moved.messages) acceptMessage(message, false);
      if (!moved.complete) fillGap(moved.conversation_id);
      cursors[moved.conversation_id] = moved.latest_seq;
    }
    await Promise.all([loadConversations(), loadFriends()]);
    if (Object.keys(cursors).length) await api.post('/v1/sync/cursors', { cursors });
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
  }
});

export function onEvent(event) {
  if (!people.me) return;
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
    case 'resync':
      // The broker node lost events for us (its own link to the cluster dropped): catch up as
      // after a reconnect; a burst of these costs one catch-up more, not one each.
      catchUp();
      break;
    default:
      break;
  }
}

/** A retained presence body: every dot and subtitle showing that user changes. */
export function onPresence(userId, body) {
  people.setPresence(userId, body);
  renderHeader();
  renderFriends();
  scheduleList();
}

/** A committed message (live, or from sync or an ack): list, timeline, unread, read marker. */
function acceptMessage(message, live) {
  const cid = message.conversation_id;
  const mine = people.isMe(message.sender_id);
  if (mine && message.cmid) currentOutbox()?.settle(message.cmid);
  if (!conversations.noteMessage(message, { mine, live, reading: isReading(cid) })) fetchConversation(cid);
  const timeline = conversations.timeline(cid);
  if (timeline?.add(message)) renderMessage(message);
  if (timeline?.loaded && timeline.gap()) fillGap(cid);
  if (typing.stop(cid, message.sender_id)) renderTyping();
  if (isReading(cid)) markRead();
  scheduleList();
}

function onAck(event) {
  const entry = currentOutbox()?.settle(event.cmid);
  if (!entry) return; // answered already (a resend is acknowledged again)
  acceptMessage(
    {
      conversation_id: event.conversation_id,
      message_id: event.message_id,
      seq: event.seq,
      sender_id: people.me.id,
      cmid: event.cmid,
      text: entry.text,
      created_at: event.created_at ?? new Date().toISOString(),
    },
    false,
  );
}

function onSendError(event) {
  const failed = currentOutbox()?.refuse(event.cmid, event.code, event.message);
  if (failed) showRefused(failed);
}

function onConversationEvent(event) {
  const conversation = event.conversation;
  if (!conversation?.id) return;
  if (event.action === 'member_removed' && people.isMe(event.user_id)) {
    conversations.remove(conversation.id);
    if (openCid() === conversation.id) location.hash = '';
    scheduleList();
    return;
  }
  storeConversation(conversation);
  if (openCid() === conversation.id) renderHeader();
  scheduleList();
}

/** My own receipt: read on another of my devices. */
function onReceipt(event) {
  if (!people.isMe(event.user_id)) return;
  const caughtUp = conversations.noteMyReceipt(event.conversation_id, event.seq);
  if (caughtUp === null) return;
  if (!caughtUp) fetchConversation(event.conversation_id);
  scheduleList();
}

function onTyping(event) {
  const { conversation_id: cid, user_id: userId } = event;
  if (!cid || !userId || people.isMe(userId)) return;
  typing.note(cid, userId);
  setTimeout(renderTyping, TYPING_SHOWN_MS + 50);
  renderTyping();
}
