// The open conversation's messages as elements: committed ones in seq order, then pending and
// failed sends; the history status line above them and the typing line below.
import { scheduleList } from './conversation-list.js';
import { conversations } from './conversations.js';
import { byId, h, parseTime, shortTime } from './dom.js';
import { openCid, openView } from './open-conversation.js';
import { people } from './people.js';
import { currentOutbox } from './sending.js';
import { typing, typingText } from './typing.js';

const STATUS_MARKS = { pending: '🕓', sent: '✓', failed: '⚠ Not sent' };

/** Keep `element` under `key` while its conversation is open. */
function bind(key, element) {
  openView()?.bind(key, element);
  return element;
}

function messageElement(message, status) {
  const mine = people.isMe(message.sender_id);
  const conv = conversations.get(message.conversation_id);
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
        : h('span', { class: conv?.type === 'group' ? 'sender' : 'visually-hidden', text: people.nameOf(message.sender_id) }),
      h('p', { class: 'text', text: message.text }),
      h(
        'span',
        { class: 'meta' },
        created
          ? h('time', { datetime: created.toISOString(), title: created.toLocaleString(), text: shortTime(created) })
          : null,
        mine ? h('span', { class: 'status', 'aria-label': label, title: label, text: STATUS_MARKS[status] ?? '' }) : null,
        status === 'failed'
          ? h('button', { type: 'button', class: 'link', text: 'Dismiss', onclick: () => dismiss(message.cmid) })
          : null,
      ),
    ),
  );
}

function dismiss(cmid) {
  currentOutbox()?.dismiss(cmid);
  const view = openView();
  view?.element(`c${cmid}`)?.remove();
  view?.unbind(`c${cmid}`);
}

/** Put a committed message of the open conversation in its place by seq. */
export function renderMessage(message) {
  const view = openView();
  if (!view || view.cid !== message.conversation_id) return;
  const key = `s${message.seq}`;
  if (view.has(key)) return;
  const box = byId('messages');
  const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 120;
  const pending = view.element(`c${message.cmid}`);
  const mine = people.isMe(message.sender_id);
  if (pending && mine) {
    pending.remove();
    view.unbind(`c${message.cmid}`);
  }
  const element = bind(key, messageElement(message, 'sent'));
  const slot = view.slotFor(message.seq);
  const list = byId('message-list');
  const next =
    slot < view.seqs.length
      ? view.element(`s${view.seqs[slot]}`)
      : list.querySelector('li[data-state="pending"], li[data-state="failed"]');
  list.insertBefore(element, next ?? null);
  view.place(message.seq, slot);
  if (view.seqs.length === 1) renderHistoryStatus(); // "No messages yet" no more
  if (slot === view.seqs.length - 1 && (atBottom || (mine && pending))) scrollToBottom();
}

/** A send of the open conversation waiting for its ack (unless its message is shown already). */
export function renderPending(entry) {
  const view = openView();
  if (!view || view.cid !== entry.conversation_id || view.has(`c${entry.cmid}`)) return;
  if (conversations.timeline(entry.conversation_id)?.findByCmid(people.me.id, entry.cmid)) return;
  const message = { ...entry, sender_id: people.me.id, created_at: new Date(entry.created_at).toISOString() };
  byId('message-list').append(bind(`c${entry.cmid}`, messageElement(message, 'pending')));
}

/** A send refused for good, at the end of the list (when the conversation is opened). */
export function renderFailed(failed) {
  byId('message-list').append(bind(`c${failed.cmid}`, messageElement(failed, 'failed')));
}

/** A shown pending send was refused for good: it shows as failed in its place. */
export function showRefused(failed) {
  const key = `c${failed.cmid}`;
  const element = openView()?.element(key);
  if (element) element.replaceWith(bind(key, messageElement(failed, 'failed')));
}

export function scrollToBottom() {
  const box = byId('messages');
  box.scrollTop = box.scrollHeight;
}

export function setHistoryStatus(text) {
  byId('history-status').textContent = text;
  byId('messages').setAttribute('aria-busy', text ? 'true' : 'false');
}

/** Once the newest page is loaded: whether older history exists or this is the beginning. */
export function renderHistoryStatus() {
  const cid = openCid();
  const timeline = cid ? conversations.timeline(cid) : undefined;
  if (!timeline?.loaded) return;
  setHistoryStatus('');
  if (!timeline.hasMoreBefore) {
    byId('history-status').textContent = timeline.newest ? 'The beginning of the conversation' : 'No messages yet. Say hello!';
  }
}

/** The typing line of the open conversation (and the list's typing previews). */
export function renderTyping() {
  const cid = openCid();
  const names = cid ? typing.who(cid).map((userId) => people.nameOf(userId)) : [];
  byId('typing').textContent = typingText(names);
  scheduleList();
}
