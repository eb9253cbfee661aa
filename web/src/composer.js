// The composer of the open conversation: send (checked against the platform's length limit),
// typing notices (at most one per TYPING_EVERY_MS), an unsent draft kept per conversation.
import { ApiError } from './api.js';
import { byId, codePoints } from './dom.js';
import { showError } from './errors.js';
import { publish } from './live.js';
import { renderPending, scrollToBottom } from './message-view.js';
import { openCid } from './open-conversation.js';
import { currentOutbox, publishEntry } from './sending.js';

export const MAX_CHARS = 100_000; // the platform's limit, in code points
const TYPING_EVERY_MS = 3_000;

/** @type {Map<string, string>} unsent composer text per conversation */
const drafts = new Map();
let lastTypingSent = 0;

/** The composer text is the draft of `cid` (as it is left). */
export function saveDraft(cid) {
  const input = byId('composer-input');
  if (cid && input.value) drafts.set(cid, input.value);
  else if (cid) drafts.delete(cid);
}

/** The composer shows the draft of `cid` (empty if none). */
export function restoreDraft(cid) {
  byId('composer-input').value = drafts.get(cid) ?? '';
  autoGrow();
}

export function clearDrafts() {
  drafts.clear();
}

/** Send the composer's text to the open conversation: pending at once, through the outbox. */
export function send() {
  const input = byId('composer-input');
  const cid = openCid();
  const text = input.value;
  if (!cid || !text.trim()) return;
  const length = codePoints(text);
  if (length > MAX_CHARS) {
    showError('conv-error', new ApiError(400, 'too_long', `A message has at most ${MAX_CHARS.toLocaleString()} characters; this one has ${length.toLocaleString()}.`));
    return;
  }
  byId('conv-error').textContent = '';
  const entry = currentOutbox().add(cid, text);
  renderPending(entry);
  publishEntry(entry);
  input.value = '';
  drafts.delete(cid);
  lastTypingSent = 0;
  autoGrow();
  scrollToBottom();
}

/** The reader typed: tell the conversation (QoS 0, dropped when offline). */
export function noteTyping() {
  const cid = openCid();
  if (!cid || !byId('composer-input').value.trim()) return;
  const now = Date.now();
  if (now - lastTypingSent < TYPING_EVERY_MS) return;
  if (publish(`conv/${cid}/typing`, {}, 0)) lastTypingSent = now;
}

/** The textarea grows with its text, up to 200px. */
export function autoGrow() {
  const input = byId('composer-input');
  input.style.height = 'auto';
  input.style.height = `${Math.min(input.scrollHeight, 200)}px`;
}
