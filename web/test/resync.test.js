import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ApiError } from '../src/api.js';
import { api } from '../src/backend.js';
import { onEvent } from '../src/inbox.js';
import { people } from '../src/people.js';

// The page's REST client answers here: /v1/sync waits until the test lets it answer (nothing
// moved), every other call is refused as unreachable (the catch-up ends quietly on ApiError).
const syncs = [];
let syncAsked = null;
api.call = (method, path) => {
  if (method === 'GET' && path.startsWith('/v1/sync')) {
    return new Promise((resolve) => {
      syncs.push(() => resolve({ conversations: [] }));
      syncAsked?.();
    });
  }
  return Promise.reject(new ApiError(0, 'unreachable', 'not in this test'));
};
const nextSync = (count) =>
  syncs.length >= count ? Promise.resolve() : new Promise((resolve) => (syncAsked = resolve));

test('a resync event catches up through /v1/sync; a burst of them during it asks for one more', async () => {
  people.signIn({ id: '42', username: 'ann', display_name: 'Ann' });
  onEvent({ kind: 'resync' });
  await nextSync(1);
  for (let i = 0; i < 5; i += 1) onEvent({ kind: 'resync' });
  assert.equal(syncs.length, 1, 'one catch-up at a time');
  syncs[0]();
  await nextSync(2); // the one more after it (exactly one: web/test/coalesce.test.js)
  syncs[1]();
});

test('an event kind the page does not know is ignored', () => {
  onEvent({ kind: 'from_the_future', whatever: 1 });
});
