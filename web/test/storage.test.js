import assert from 'node:assert/strict';
import { test } from 'node:test';
import { SavedSession } from '../src/storage.js';
import { MemoryStorage } from './memory-storage.js';

const tokens = { user_id: '1', device_id: 'd1', refresh_token: 'r1', access_token: 'never saved' };

test('new tokens keep the saved username; forgetting keeps only the username', () => {
  const storage = new MemoryStorage();
  const saved = new SavedSession(storage);
  saved.saveUsername('Alice');
  saved.saveTokens(tokens);
  assert.deepEqual(saved.get(), { username: 'Alice', user_id: '1', device_id: 'd1', refresh_token: 'r1' });
  saved.saveTokens({ ...tokens, refresh_token: 'r2' });
  assert.equal(saved.get().refresh_token, 'r2');
  saved.forget();
  assert.deepEqual(saved.get(), { username: 'Alice' });
});

test('forgetting a session without a username leaves nothing', () => {
  const storage = new MemoryStorage();
  const saved = new SavedSession(storage);
  saved.saveTokens(tokens);
  saved.forget();
  assert.equal(saved.get(), null);
  assert.equal(storage.getItem('hubbub.session'), null);
});

test('a username finds its device again, whatever its case', () => {
  const saved = new SavedSession(new MemoryStorage());
  assert.equal(saved.deviceFor('alice'), null);
  saved.rememberDevice('Alice', 'd1');
  saved.rememberDevice('bob', 'd2');
  assert.equal(saved.deviceFor('ALICE'), 'd1');
  assert.equal(saved.deviceFor('Bob'), 'd2');
});

test('a corrupt entry reads as nothing, and no storage at all still works', () => {
  const storage = new MemoryStorage();
  storage.setItem('hubbub.session', '{oops');
  assert.equal(new SavedSession(storage).get(), null);
  const memoryless = new SavedSession(null);
  memoryless.saveTokens(tokens);
  memoryless.rememberDevice('alice', 'd1');
  assert.equal(memoryless.get(), null);
  assert.equal(memoryless.deviceFor('alice'), null);
});

test('a full storage is not an error', () => {
  const storage = new MemoryStorage();
  storage.setItem = () => {
    throw new Error('QuotaExceededError');
  };
  const saved = new SavedSession(storage);
  saved.saveTokens(tokens);
  assert.equal(saved.get(), null);
});
