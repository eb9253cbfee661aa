import assert from 'node:assert/strict';
import { test } from 'node:test';
import { oneAtATime } from '../src/coalesce.js';

/** A task whose runs wait until the test lets each one finish; `begun(n)` waits for the n-th run. */
function heldTask() {
  const held = [];
  const waiting = [];
  const task = () =>
    new Promise((resolve) => {
      held.push(resolve);
      for (const [count, wake] of waiting.splice(0)) {
        if (held.length >= count) wake();
        else waiting.push([count, wake]);
      }
    });
  const begun = (count) =>
    held.length >= count ? Promise.resolve() : new Promise((wake) => waiting.push([count, wake]));
  return { held, task, begun };
}

test('asked once, the task runs once', async () => {
  const { held, task } = heldTask();
  const run = oneAtATime(task);
  const done = run();
  assert.equal(held.length, 1);
  held[0]();
  await done;
  assert.equal(held.length, 1);
});

test('asked many times during a run, it runs once more after it, not once per ask', async () => {
  const { held, task, begun } = heldTask();
  const run = oneAtATime(task);
  const first = run();
  const asks = [run(), run(), run(), run()];
  assert.equal(held.length, 1, 'never two runs at once');
  held[0]();
  await begun(2);
  held[1]();
  await Promise.all([first, ...asks]);
  assert.equal(held.length, 2);
});

test('a failed run ends the round, and the next ask runs again', async () => {
  let runs = 0;
  const run = oneAtATime(async () => {
    runs += 1;
    throw new Error('offline');
  });
  await assert.rejects(run(), /offline/);
  await assert.rejects(run(), /offline/);
  assert.equal(runs, 2);
});
