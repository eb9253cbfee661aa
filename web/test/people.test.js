import assert from 'node:assert/strict';
import { test } from 'node:test';
import { People } from '../src/people.js';

const me = { id: '1', username: 'alice', display_name: 'Alice' };
const user = (id, username, displayName = '') => ({ id, username, display_name: displayName });

test('names come from what is known, the display name first', () => {
  const people = new People();
  people.signIn(me);
  people.remember('2', { username: 'bob', display_name: '' });
  people.remember('3', { username: 'carol', display_name: 'Carol' });
  assert.equal(people.nameOf('1'), 'Alice');
  assert.equal(people.nameOf('2'), 'bob');
  assert.equal(people.nameOf('3'), 'Carol');
  assert.equal(people.nameOf('4'), 'Someone');
  assert.ok(people.isMe('1'));
  assert.ok(!people.isMe('2'));
});

test('presence is online, offline or unknown', () => {
  const people = new People();
  people.setPresence('2', { status: 'online' });
  people.setPresence('3', { status: 'offline', last_active_at: '2026-01-02T03:04:05Z' });
  people.setPresence('4', null); // a cleared retained message
  people.setPresence('5', { status: 'away' });
  assert.equal(people.presenceOf('2'), 'online');
  assert.equal(people.presenceOf('3'), 'offline');
  assert.equal(people.lastActiveAt('3'), '2026-01-02T03:04:05Z');
  assert.equal(people.presenceOf('4'), 'unknown');
  assert.equal(people.presenceOf('5'), 'unknown');
  assert.equal(people.presenceOf('6'), 'unknown');
});

test('the friend lists teach names; none means no friends API', () => {
  const people = new People();
  people.setFriends({ friends: [user('2', 'bob', 'Bob')], incoming: [user('3', 'carol')], outgoing: [user('4', 'dan')] });
  assert.deepEqual([people.nameOf('2'), people.nameOf('3'), people.nameOf('4')], ['Bob', 'carol', 'dan']);
  people.setFriends(null);
  assert.equal(people.friends, null);
});

test('watched: friends and the other members of my conversations, never me', () => {
  const people = new People();
  people.signIn(me);
  people.setFriends({ friends: [user('2', 'bob')], incoming: [user('9', 'eve')], outgoing: [] });
  const conversations = [
    { id: '10', members: [{ user_id: '1' }, { user_id: '3' }] },
    { id: '11', members: [{ user_id: '1' }, { user_id: '2' }, { user_id: '4' }] },
    { id: '12' },
  ];
  assert.deepEqual([...people.watched(conversations)].sort(), ['2', '3', '4']);
});

test('reset forgets everyone', () => {
  const people = new People();
  people.signIn(me);
  people.setPresence('2', { status: 'online' });
  people.setFriends({ friends: [], incoming: [], outgoing: [] });
  people.reset();
  assert.equal(people.me, null);
  assert.equal(people.nameOf('1'), 'Someone');
  assert.equal(people.presenceOf('2'), 'unknown');
  assert.equal(people.friends, null);
});
