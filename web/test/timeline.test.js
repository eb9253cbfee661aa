import assert from 'node:assert/strict';
import { test } from 'node:test';
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

test('a history page says whether older history exists', () => {
  const timeline = new Timeline();
  for (const seq of [51, 52]) timeline.add(message(seq));
  timeline.newestPageMerged(true, 2);
  assert.equal(timeline.loaded, true);
  assert.equal(timeline.hasMoreBefore, true);
  timeline.olderPageMerged(false, 50);
  assert.equal(timeline.hasMoreBefore, false);
  const empty = new Timeline();
  empty.newestPageMerged(true, 0); // an empty page ends the history, whatever has_more says
  assert.equal(empty.hasMoreBefore, false);
  const first = new Timeline();
  first.add(message(1));
  first.olderPageMerged(true, 1); // seq 1 is the beginning
  assert.equal(first.hasMoreBefore, false);
});
