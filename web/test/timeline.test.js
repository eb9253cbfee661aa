import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Outbox } from '../src/outbox.js';
import { Timeline } from '../src/timeline.js';

const message = (seq, extra = {}) => ({ conversation_id: '7', seq, sender_id: '1', cmid: `c${seq}`, text: `m${seq}`, ...extra });

test('a timeline merges by seq, once each, in order', () => {
  const timeline = new Timeline();
  for (const seq of [3, 1, 2, 3]) timeline.add(message(seq));
  assert.deepEqual(timeline.ordered().map((m) => m.seq), [1, 2, 3]);
  assert.equal(timeline.add(message(2)), false);
  assert.equal(timeline.hasMoreBefore, false);
  assert.equal(timeline.gap(), null);
});

test('a timeline tells a gap from silence', () => {
  const timeline = new Timeline();
  for (const seq of [41, 42, 44]) timeline.add(message(seq));
  assert.deepEqual(timeline.gap(), { after: 42, upTo: 44 });
  timeline.add(message(43));
  assert.equal(timeline.gap(), null);
  timeline.add(message(40)); // an older page
  assert.equal(timeline.held, 44);
  assert.equal(timeline.oldest, 40);
});

test('a timeline finds a message by its sender and cmid', () => {
  const timeline = new Timeline();
  timeline.add(message(5, { cmid: 'abc' }));
  assert.equal(timeline.findByCmid('1', 'abc').seq, 5);
  assert.equal(timeline.findByCmid('2', 'abc'), undefined);
});

class MemoryStorage {
  constructor() {
    this.items = new Map();
  }
  getItem(key) {
    return this.items.get(key) ?? null;
  }
  setItem(key, value) {
    this.items.set(key, String(value));
  }
  removeItem(key) {
    this.items.delete(key);
  }
}

test('the outbox survives a reload and keeps each cmid', () => {
  const storage = new MemoryStorage();
  const outbox = new Outbox(storage, 'k');
  const first = outbox.add('7', 'hello 👋');
  const second = outbox.add('7', 'again');
  assert.match(first.cmid, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  assert.notEqual(first.cmid, second.cmid);
  const reloaded = new Outbox(storage, 'k');
  assert.deepEqual(reloaded.all().map((entry) => [entry.cmid, entry.text]), [[first.cmid, 'hello 👋'], [second.cmid, 'again']]);
  reloaded.settle(first.cmid);
  reloaded.settle(second.cmid);
  assert.equal(storage.getItem('k'), null);
  assert.equal(new Outbox(storage, 'k').size, 0);
});

test('a corrupt saved outbox starts empty', () => {
  const storage = new MemoryStorage();
  storage.setItem('k', '{not json');
  assert.equal(new Outbox(storage, 'k').size, 0);
});
