import assert from 'node:assert/strict';
import { test } from 'node:test';
import { OpenConversation, openCid, openView, setOpen } from '../src/open-conversation.js';

test('messages are placed in seq order whatever order they arrive in', () => {
  const view = new OpenConversation('7');
  for (const seq of [5, 2, 9, 3, 7, 1]) view.place(seq, view.slotFor(seq));
  assert.deepEqual(view.seqs, [1, 2, 3, 5, 7, 9]);
  assert.equal(view.slotFor(4), 3); // before 5
  assert.equal(view.slotFor(10), 6); // at the end (before pending sends)
  assert.equal(view.slotFor(0), 0);
});

test('elements are kept by key until unbound', () => {
  const view = new OpenConversation('7');
  const element = { id: 'li' };
  assert.equal(view.bind('cabc', element), element);
  assert.ok(view.has('cabc'));
  assert.equal(view.element('cabc'), element);
  view.unbind('cabc');
  assert.ok(!view.has('cabc'));
  assert.equal(view.element('cabc'), undefined);
});

test('one conversation is open at a time, each opening starts empty', () => {
  assert.equal(openCid(), null);
  const first = setOpen('7');
  first.place(1, 0);
  assert.equal(openCid(), '7');
  assert.equal(openView(), first);
  const again = setOpen('7');
  assert.notEqual(again, first);
  assert.deepEqual(again.seqs, []);
  setOpen(null);
  assert.equal(openCid(), null);
  assert.equal(openView(), null);
});
