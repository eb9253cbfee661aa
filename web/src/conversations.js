// The signed-in user's conversations (ConversationOut as the API sends it, plus `countedTo`:
// the highest seq already counted as unread) and one Timeline of messages per conversation.
import { compareIds } from './dom.js';
import { Timeline } from './timeline.js';

export class Conversations {
  constructor() {
    /** @type {Map<string, any>} conversation id → ConversationOut (+ countedTo) */
    this.byId = new Map();
    /** @type {Map<string, Timeline>} */
    this.timelines = new Map();
  }

  reset() {
    this.byId.clear();
    this.timelines.clear();
  }

  get(cid) {
    return this.byId.get(cid);
  }

  has(cid) {
    return this.byId.has(cid);
  }

  all() {
    return this.byId.values();
  }

  /**
   * Merge a ConversationOut; `full` when it carries last_message and unread_count (a list or a
   * fetch), not when it is the bare conversation of a `conversation` event or a member change.
   */
  upsert(conversation, full = false) {
    const known = this.byId.get(conversation.id);
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
    this.byId.set(conversation.id, merged);
    return merged;
  }

  /** A fresh full list arrived: drop the conversations it no longer has. */
  keepOnly(ids) {
    for (const cid of [...this.byId.keys()]) if (!ids.has(cid)) this.byId.delete(cid);
  }

  /** Left, or removed from it: forget the conversation and its messages. */
  remove(cid) {
    this.byId.delete(cid);
    this.timelines.delete(cid);
  }

  /** @returns {Timeline|undefined} */
  timeline(cid) {
    return this.timelines.get(cid);
  }

  /** The conversation's timeline, created empty (not loaded) the first time it is opened. */
  ensureTimeline(cid) {
    if (!this.timelines.has(cid)) this.timelines.set(cid, new Timeline());
    return this.timelines.get(cid);
  }

  /**
   * A committed message: it becomes the last message if it is the newest, and a live one from
   * someone else counts once as unread unless the conversation is being read.
   * False when the conversation is not known (yet).
   */
  noteMessage(message, { mine, live, reading }) {
    const conv = this.byId.get(message.conversation_id);
    if (!conv) return false;
    if (!conv.last_message || message.seq > conv.last_message.seq) conv.last_message = message;
    if (live && !mine && message.seq > (conv.countedTo ?? 0)) {
      conv.countedTo = message.seq;
      if (!reading) conv.unread_count = (conv.unread_count ?? 0) + 1;
    }
    return true;
  }

  /**
   * I read up to `seq` on another of my devices. True: nothing is unread any more; false: the
   * unread count is unknown now (fetch the conversation again); null: not a known conversation.
   */
  noteMyReceipt(cid, seq) {
    const conv = this.byId.get(cid);
    if (!conv) return null;
    conv.last_read_seq = Math.max(conv.last_read_seq ?? 0, seq);
    if (conv.last_message && seq < conv.last_message.seq) return false;
    conv.unread_count = 0;
    return true;
  }

  /** Shown to the reader: no unread count. True if there was one. */
  clearUnread(cid) {
    const conv = this.byId.get(cid);
    if (!conv?.unread_count) return false;
    conv.unread_count = 0;
    return true;
  }

  /** My read marker in `cid` (0: none). */
  readUpTo(cid) {
    return this.byId.get(cid)?.last_read_seq ?? 0;
  }

  /** The platform took my read marker at `seq`. */
  setReadUpTo(cid, seq) {
    const conv = this.byId.get(cid);
    if (conv) conv.last_read_seq = Math.max(conv.last_read_seq ?? 0, seq);
  }

  /** Newest activity first (ids grow with time; a conversation without messages by its own id). */
  ordered() {
    return [...this.byId.values()].sort((a, b) =>
      compareIds(b.last_message?.message_id ?? b.id, a.last_message?.message_id ?? a.id),
    );
  }

  unreadTotal() {
    let total = 0;
    for (const conv of this.byId.values()) total += conv.unread_count ?? 0;
    return total;
  }
}

/** The other member of a direct conversation (undefined for a group, or a chat with oneself). */
export const peerOf = (conv, meId) =>
  conv.type === 'direct' ? (conv.members ?? []).find((member) => member.user_id !== meId) : undefined;

/** A conversation's name as the list and header show it. */
export function titleOf(conv, meId) {
  if (conv.type === 'group') return conv.title || 'Group';
  const peer = peerOf(conv, meId);
  return peer ? peer.display_name || peer.username : 'Just you';
}

export const conversations = new Conversations();
