// The address says what is shown: `#/c/{id}` one conversation, anything else the list.
import { fetchConversation } from './conversation-actions.js';
import { renderHeader } from './conversation-header.js';
import { scheduleList } from './conversation-list.js';
import { conversations } from './conversations.js';
import { restoreDraft, saveDraft } from './composer.js';
import { byId } from './dom.js';
import { fillViewport, loadLatest, markRead } from './history.js';
import {
  renderFailed,
  renderHistoryStatus,
  renderMessage,
  renderPending,
  renderTyping,
  scrollToBottom,
} from './message-view.js';
import { openCid, setOpen } from './open-conversation.js';
import { people } from './people.js';
import { currentOutbox } from './sending.js';

export function route() {
  if (!people.me) return;
  const match = /^#\/c\/([0-9]+)$/.exec(location.hash);
  if (match) openConversation(match[1]);
  else closeConversation();
}

function closeConversation() {
  saveDraft(openCid());
  setOpen(null);
  byId('conv').hidden = true;
  byId('placeholder').hidden = false;
  byId('chat').dataset.view = 'list';
  byId('message-list').replaceChildren();
  scheduleList();
}

function openConversation(cid) {
  if (openCid() === cid) return;
  if (!conversations.has(cid)) {
    // Not (yet) known: a deep link, or a conversation created elsewhere.
    fetchConversation(cid).then(() => {
      if (conversations.has(cid) && location.hash === `#/c/${cid}`) openConversation(cid);
    });
    return;
  }
  saveDraft(openCid());
  setOpen(cid);
  byId('placeholder').hidden = true;
  byId('conv').hidden = false;
  byId('chat').dataset.view = 'conversation';
  byId('conv-error').textContent = '';
  byId('group-tools').open = false;
  byId('message-list').replaceChildren();
  const timeline = conversations.ensureTimeline(cid);
  for (const message of timeline.ordered()) renderMessage(message);
  const outbox = currentOutbox();
  for (const entry of outbox.forConversation(cid)) renderPending(entry);
  for (const failed of outbox.failedIn(cid)) renderFailed(failed);
  renderHeader();
  renderTyping();
  renderHistoryStatus();
  restoreDraft(cid);
  scrollToBottom();
  scheduleList();
  if (window.matchMedia('(pointer: fine)').matches) byId('composer-input').focus();
  if (!timeline.loaded) loadLatest(cid);
  else {
    markRead();
    fillViewport();
  }
}
