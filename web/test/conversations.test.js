import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Conversations, peerOf, titleOf } from '../src/conversations.js';

const ME = '1';
const member = (userId, username, displayName = '') => ({ user_id: userId, username, display_name: displayName });
const direct = (id, extra = {}) => ({ id, type: 'direct', members: [member(ME, 'me'), member('2', 'bob', 'Bob')], ...extra });
const message = (cid, seq, extra = {}) => ({ conversation_id: cid, seq, message_id: String(1000 + seq), sender_id: '2', text: `m${seq}`, ...extra });

test('a full ConversationOut replaces the counts but never an older last message', () => {
  const store = new Conversations();
  store.upsert(direct('10', { last_message: message('10', 5), unread_count: 2, last_read_seq: 3 }), true);
  assert.equal(store.get('10').countedTo, 5);
  store.noteMessage(message('10', 6), { mine: false, live: true, reading: false });
  const merged = store.upsert(direct('10', { last_message: message('10', 5), unread_count: 2, last_read_seq: 4 }), true);
  assert.equal(merged.last_message.seq, 6); // the live one is newer than the listed one
  assert.equal(merged.countedTo, 6);
  assert.equal(merged.unread_count, 2); // the server's count wins
  assert.equal(merged.last_read_seq, 4);
});

test('a bare conversation (an event, a member change) keeps what the page counted', () => {
  const store = new Conversations();
  store.upsert(direct('10', { last_message: message('10', 5), unread_count: 2, last_read_seq: 3 }), true);
  const merged = store.upsert({ id: '10', type: 'direct', title: null, members: [member(ME, 'me')] });
  assert.equal(merged.last_message.seq, 5);
  assert.equal(merged.unread_count, 2);
  assert.equal(merged.last_read_seq, 3);
  assert.equal(merged.members.length, 1);
  const fresh = store.upsert({ id: '11', type: 'group', title: 'G', members: [] });
  assert.deepEqual([fresh.last_message, fresh.unread_count, fresh.last_read_seq], [null, 0, 0]);
});

test('a live message from someone else counts once as unread, unless it is being read', () => {
  const store = new Conversations();
  store.upsert(direct('10'), true);
  assert.equal(store.noteMessage(message('10', 1), { mine: false, live: true, reading: false }), true);
  store.noteMessage(message('10', 1), { mine: false, live: true, reading: false }); // a duplicate delivery
  store.noteMessage(message('10', 2, { sender_id: ME }), { mine: true, live: true, reading: false });
  store.noteMessage(message('10', 3), { mine: false, live: false, reading: false }); // from sync
  store.noteMessage(message('10', 4), { mine: false, live: true, reading: true });
  const conv = store.get('10');
  assert.equal(conv.unread_count, 1);
  assert.equal(conv.countedTo, 4);
  assert.equal(conv.last_message.seq, 4);
  store.noteMessage(message('10', 2), { mine: false, live: false, reading: false }); // older: not the last
  assert.equal(store.get('10').last_message.seq, 4);
});

test('a message of an unknown conversation is not noted', () => {
  const store = new Conversations();
  assert.equal(store.noteMessage(message('99', 1), { mine: false, live: true, reading: false }), false);
  assert.equal(store.has('99'), false);
});

test('my receipt from another device clears the count, or asks for a refetch when behind', () => {
  const store = new Conversations();
  store.upsert(direct('10', { last_message: message('10', 8), unread_count: 3, last_read_seq: 5 }), true);
  assert.equal(store.noteMyReceipt('10', 6), false); // seq 7 and 8 may still be unread
  assert.equal(store.readUpTo('10'), 6);
  assert.equal(store.get('10').unread_count, 3);
  assert.equal(store.noteMyReceipt('10', 4), false); // an old receipt never moves the marker back
  assert.equal(store.readUpTo('10'), 6);
  assert.equal(store.noteMyReceipt('10', 8), true);
  assert.equal(store.get('10').unread_count, 0);
  assert.equal(store.noteMyReceipt('99', 1), null);
});

test('reading clears the count once and moves the marker forward only', () => {
  const store = new Conversations();
  store.upsert(direct('10', { unread_count: 2 }), true);
  assert.equal(store.clearUnread('10'), true);
  assert.equal(store.clearUnread('10'), false);
  assert.equal(store.clearUnread('99'), false);
  store.setReadUpTo('10', 7);
  store.setReadUpTo('10', 3);
  store.setReadUpTo('99', 3);
  assert.equal(store.readUpTo('10'), 7);
  assert.equal(store.readUpTo('99'), 0);
});

test('the list is newest activity first, 64-bit ids compared as decimals', () => {
  const store = new Conversations();
  store.upsert(direct('10', { last_message: message('10', 1, { message_id: '9007199254740993' }), unread_count: 1 }), true);
  store.upsert(direct('11', { last_message: message('11', 1, { message_id: '9007199254740995' }), unread_count: 2 }), true);
  store.upsert(direct('12345678901234567890'), true); // no message yet: its own (newer) id counts
  store.upsert(direct('13', { last_message: message('13', 1, { message_id: '12' }) }), true);
  assert.deepEqual(store.ordered().map((conv) => conv.id), ['12345678901234567890', '11', '10', '13']);
  assert.equal(store.unreadTotal(), 3);
});

test('a fresh list drops the others; leaving drops the timeline too', () => {
  const store = new Conversations();
  for (const id of ['10', '11', '12']) store.upsert(direct(id), true);
  const timeline = store.ensureTimeline('10');
  assert.equal(store.ensureTimeline('10'), timeline);
  store.keepOnly(new Set(['10', '11']));
  assert.deepEqual([...store.all()].map((conv) => conv.id), ['10', '11']);
  store.remove('10');
  assert.equal(store.has('10'), false);
  assert.equal(store.timeline('10'), undefined);
  store.reset();
  assert.equal(store.has('11'), false);
});

test('a direct conversation is named after the peer, a group after its title', () => {
  const bob = direct('10');
  assert.equal(peerOf(bob, ME).user_id, '2');
  assert.equal(titleOf(bob, ME), 'Bob');
  assert.equal(titleOf({ ...bob, members: [member(ME, 'me'), member('3', 'carol')] }, ME), 'carol');
  assert.equal(titleOf({ id: '11', type: 'direct', members: [member(ME, 'me')] }, ME), 'Just you');
  const group = { id: '12', type: 'group', title: 'Weekend', members: [member(ME, 'me'), member('2', 'bob')] };
  assert.equal(peerOf(group, ME), undefined);
  assert.equal(titleOf(group, ME), 'Weekend');
  assert.equal(titleOf({ ...group, title: '' }, ME), 'Group');
});
