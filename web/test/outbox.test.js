import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Outbox } from '../src/outbox.js';
import { MemoryStorage } from './memory-storage.js';

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

test('a send is stale once its last publish is old enough', () => {
  const outbox = new Outbox(null, 'k');
  const first = outbox.add('7', 'one');
  const second = outbox.add('7', 'two');
  outbox.markSent(first.cmid, 1_000);
  outbox.markSent(second.cmid, 5_000);
  assert.deepEqual(outbox.stale(11_000, 10_000).map((entry) => entry.text), ['one']);
  assert.deepEqual(outbox.stale(15_000, 10_000).map((entry) => entry.text), ['one', 'two']);
  outbox.markSent('unknown', 1); // settled meanwhile: nothing to mark
});

test('a final refusal moves a send from the outbox to the failed ones', () => {
  const storage = new MemoryStorage();
  const outbox = new Outbox(storage, 'k');
  const entry = outbox.add('7', 'x'.repeat(10));
  const failed = outbox.refuse(entry.cmid, 'too_long', 'Too long.');
  assert.equal(failed.code, 'too_long');
  assert.equal(failed.message, 'Too long.');
  assert.equal(failed.text, entry.text);
  assert.equal(outbox.size, 0);
  assert.equal(storage.getItem('k'), null); // failed sends are not resent after a reload
  assert.deepEqual(outbox.failedIn('7').map((f) => f.cmid), [entry.cmid]);
  assert.deepEqual(outbox.failedIn('8'), []);
  outbox.dismiss(entry.cmid);
  assert.deepEqual(outbox.failedIn('7'), []);
});

test('a refusal that a resend can cure, or for an unknown cmid, changes nothing', () => {
  const outbox = new Outbox(null, 'k');
  const entry = outbox.add('7', 'hi');
  assert.equal(outbox.refuse(entry.cmid, 'rate_limited', 'Slow down.'), null);
  assert.equal(outbox.refuse(undefined, 'invalid', 'Bad.'), null);
  assert.equal(outbox.refuse('other', 'invalid', 'Bad.'), null);
  assert.equal(outbox.size, 1);
  assert.deepEqual(outbox.failedIn('7'), []);
});

test('clearing the outbox drops the failed sends too', () => {
  const outbox = new Outbox(null, 'k');
  outbox.refuse(outbox.add('7', 'a').cmid, 'not_member', 'Not a member.');
  outbox.add('7', 'b');
  outbox.clear();
  assert.equal(outbox.size, 0);
  assert.deepEqual(outbox.failedIn('7'), []);
});
