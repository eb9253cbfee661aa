// The open conversation's history from the REST API: the newest page, older pages as the reader
// scrolls up, the gaps live delivery left, and my read marker.
import { api } from './backend.js';
import { scheduleList } from './conversation-list.js';
import { conversations } from './conversations.js';
import { byId } from './dom.js';
import { showError } from './errors.js';
import { renderHistoryStatus, renderMessage, scrollToBottom, setHistoryStatus } from './message-view.js';
import { isReading, openCid } from './open-conversation.js';

const PAGE = 50; // history page size
const GAP_PAGE = 200;

let loadingOlder = false;
const filling = new Set();
let reading = false;

/** Merge a page into the timeline, showing what is new. */
function merge(timeline, messages) {
  for (const message of messages) if (timeline.add(message)) renderMessage(message);
}

/** The first time a conversation is opened: its newest page. */
export async function loadLatest(cid) {
  const timeline = conversations.timeline(cid);
  setHistoryStatus('Loading messages…');
  try {
    const page = await api.get(`/v1/conversations/${cid}/messages?limit=${PAGE}`);
    merge(timeline, page.messages);
    timeline.newestPageMerged(page.has_more, page.messages.length);
    if (openCid() === cid) scrollToBottom();
    if (timeline.gap()) await fillGap(cid);
    if (isReading(cid)) markRead();
  } catch (error) {
    showError('conv-error', error);
  } finally {
    renderHistoryStatus();
  }
  fillViewport();
}

/** The page before the oldest message shown (the reader scrolled to the top). */
export async function loadOlder() {
  const cid = openCid();
  const timeline = cid ? conversations.timeline(cid) : undefined;
  if (!timeline?.loaded || !timeline.hasMoreBefore || loadingOlder) return;
  loadingOlder = true;
  setHistoryStatus('Loading earlier messages…');
  const box = byId('messages');
  try {
    const page = await api.get(`/v1/conversations/${cid}/messages?before=${timeline.oldest}&limit=${PAGE}`);
    if (openCid() !== cid) return;
    const height = box.scrollHeight;
    const top = box.scrollTop;
    merge(timeline, page.messages);
    timeline.olderPageMerged(page.has_more, page.messages.length);
    box.scrollTop = top + (box.scrollHeight - height); // keep what the reader was looking at in place
  } catch (error) {
    showError('conv-error', error);
  } finally {
    loadingOlder = false;
    renderHistoryStatus();
  }
  fillViewport();
}

/** Load older pages until the message list can scroll (so scrolling up can ask for more). */
export function fillViewport() {
  const box = byId('messages');
  const cid = openCid();
  const timeline = cid ? conversations.timeline(cid) : undefined;
  if (timeline?.hasMoreBefore && box.scrollHeight <= box.clientHeight + 40) loadOlder();
}

/** Fetch what is missing between the messages held (seqs are dense: a hole is a loss). */
export async function fillGap(cid) {
  const timeline = conversations.timeline(cid);
  if (!timeline?.loaded || filling.has(cid)) return;
  filling.add(cid);
  try {
    let gap = timeline.gap();
    while (gap) {
      const page = await api.get(`/v1/conversations/${cid}/messages?after=${gap.after}&limit=${GAP_PAGE}`);
      merge(timeline, page.messages);
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

/** Move my read marker to the newest message of the open conversation (while it is shown). */
export async function markRead() {
  const cid = openCid();
  const timeline = cid ? conversations.timeline(cid) : undefined;
  if (!conversations.has(cid) || !timeline?.loaded || !isReading(cid)) return;
  if (conversations.clearUnread(cid)) scheduleList();
  if (reading) return; // the running call looks again when it is done
  reading = true;
  try {
    while (conversations.has(cid) && timeline.newest > conversations.readUpTo(cid) && isReading(cid)) {
      const seq = timeline.newest;
      await api.post(`/v1/conversations/${cid}/read`, { seq });
      conversations.setReadUpTo(cid, seq);
    }
  } catch {
    // offline: the next message or catch-up tries again
  } finally {
    reading = false;
  }
}
