import assert from 'node:assert/strict';
import { test } from 'node:test';
import { TYPING_SHOWN_MS, Typing, typingText } from '../src/typing.js';

test('a typing notice shows for TYPING_SHOWN_MS, renewed by the next one', () => {
  let now = 1_000;
  const typing = new Typing(() => now);
  typing.note('7', 'bob');
  assert.deepEqual(typing.who('7'), ['bob']);
  assert.deepEqual(typing.who('8'), []);
  now += TYPING_SHOWN_MS - 1;
  typing.note('7', 'carol');
  assert.deepEqual(typing.who('7'), ['bob', 'carol']);
  now += 1;
  assert.deepEqual(typing.who('7'), ['carol']);
  now += TYPING_SHOWN_MS;
  assert.deepEqual(typing.who('7'), []);
});

test('a message from the typist ends the notice', () => {
  const typing = new Typing(() => 0);
  typing.note('7', 'bob');
  assert.equal(typing.stop('7', 'bob'), true);
  assert.equal(typing.stop('7', 'bob'), false);
  assert.equal(typing.stop('8', 'bob'), false);
  assert.deepEqual(typing.who('7'), []);
  typing.note('7', 'carol');
  typing.reset();
  assert.deepEqual(typing.who('7'), []);
});

test('the typing line names one or two, and counts no further', () => {
  assert.equal(typingText([]), '');
  assert.equal(typingText(['Bob']), 'Bob is typing…');
  assert.equal(typingText(['Bob', 'Carol']), 'Bob and Carol are typing…');
  assert.equal(typingText(['Bob', 'Carol', 'Dan']), 'Several people are typing…');
});
