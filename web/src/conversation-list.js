// The sidebar's conversation list (newest activity first) and the unread count in the title.
// Redrawn at most once per frame, whatever changed.
import { conversations, peerOf, titleOf } from './conversations.js';
import { byId, clip, h, parseTime, shortTime } from './dom.js';
import { openCid } from './open-conversation.js';
import { people } from './people.js';
import { presenceDot } from './presence-view.js';
import { typing, typingText } from './typing.js';

let listQueued = false;

/** Redraw the list before the next frame. */
export function scheduleList() {
  if (listQueued) return;
  listQueued = true;
  requestAnimationFrame(() => {
    listQueued = false;
    renderList();
  });
}

function renderList() {
  if (!people.me) return;
  const list = byId('conversations');
  const focused = document.activeElement?.closest?.('#conversations a')?.dataset.cid;
  const ordered = conversations.ordered();
  list.replaceChildren(...ordered.map(conversationItem));
  byId('no-conversations').hidden = ordered.length > 0;
  if (focused) list.querySelector(`a[data-cid="${focused}"]`)?.focus();
  const unread = conversations.unreadTotal();
  document.title = unread ? `(${unread}) Hubbub` : 'Hubbub';
}

function conversationItem(conv) {
  const meId = people.me.id;
  const peer = peerOf(conv, meId);
  const typingNames = typing.who(conv.id).map((userId) => people.nameOf(userId));
  const last = conv.last_message;
  let preview = '';
  if (typingNames.length) preview = typingText(typingNames);
  else if (last) {
    const who = last.sender_id === meId ? 'You: ' : conv.type === 'group' ? `${people.nameOf(last.sender_id)}: ` : '';
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
        'aria-current': openCid() === conv.id ? 'page' : null,
      },
      peer ? presenceDot(peer.user_id) : h('span', { class: 'dot group', 'aria-hidden': 'true', text: '#' }),
      h('span', { class: 'name', text: titleOf(conv, meId) }),
      when ? h('time', { datetime: when.toISOString(), text: shortTime(when) }) : h('span'),
      h('span', { class: `preview${typingNames.length ? ' typing-preview' : ''}`, text: preview }),
      unread
        ? h('span', { class: 'unread', 'aria-label': `${unread} unread`, text: unread > 99 ? '99+' : String(unread) })
        : null,
    ),
  );
}
