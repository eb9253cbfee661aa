import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ApiError } from '../src/api.js';
import { friendly } from '../src/errors.js';

test('known error codes read as sentences, others as the platform worded them', () => {
  assert.equal(friendly(new ApiError(401, 'bad_credentials', 'x')), 'Wrong username or password.');
  assert.equal(friendly(new ApiError(409, 'username_taken', 'x')), 'That username is taken.');
  assert.equal(friendly(new ApiError(0, 'network', 'x')), 'Cannot reach Hubbub. Check your connection.');
  assert.equal(friendly(new ApiError(429, 'rate_limited', 'x')), 'Too many attempts. Try again in a minute.');
  assert.equal(friendly(new ApiError(404, 'unknown_user', 'There is no user named “zed”.')), 'There is no user named “zed”.');
});
