import assert from 'node:assert/strict';
import { test } from 'node:test';
import { BrokerRoute } from '../src/route.js';

const A = 'ws://a.example:8883/mqtt';
const B = 'ws://b.example:8883/mqtt';
const C = 'ws://c.example:8883/mqtt';

/** A route whose random draws are `draw` (default: the top of the range, so delays are the caps). */
const route = (urls, draw = () => 1) => new BrokerRoute(urls, { firstDelayMs: 500, maxDelayMs: 5000, random: draw });

test('the first listed node is tried first, then the next one with each failure, wrapping', () => {
  const nodes = route([A, B, C]);
  assert.equal(nodes.current, A);
  assert.equal(nodes.failed().url, B);
  assert.equal(nodes.current, B);
  assert.equal(nodes.failed().url, C);
  assert.equal(nodes.failed().url, A);
  assert.equal(nodes.failed().url, B);
});

test('the registry is asked only once every listed node has failed since the last connection', () => {
  const nodes = route([A, B, C]);
  assert.deepEqual(
    [nodes.failed(), nodes.failed(), nodes.failed(), nodes.failed()].map((step) => step.askRegistry),
    [false, false, true, false],
  );
  const again = route([A, B, C]);
  again.failed();
  again.failed();
  again.connected(); // C took the page: a later failure starts counting afresh
  assert.deepEqual([again.failed(), again.failed(), again.failed()].map((step) => step.askRegistry), [false, false, true]);
});

test('a single node (hubbub up) is retried, and the registry asked, after each failure', () => {
  const nodes = route([A]);
  for (let attempt = 0; attempt < 3; attempt += 1) {
    const step = nodes.failed();
    assert.equal(step.url, A);
    assert.equal(step.askRegistry, true);
  }
});

test('a fresh list replaces the old one and its first node is next; duplicates and blanks go', () => {
  const nodes = route([A, B]);
  nodes.failed();
  nodes.replace([C, '', A, C]);
  assert.deepEqual(nodes.urls, [C, A]);
  assert.equal(nodes.current, C);
  assert.equal(nodes.failed().askRegistry, false); // the fresh list's nodes are counted afresh
  assert.equal(nodes.failed().askRegistry, true);
  assert.throws(() => nodes.replace([]), /at least one/);
  assert.throws(() => new BrokerRoute(['']), /at least one/);
});

test('the wait cap doubles from the first delay up to the ceiling and resets once connected', () => {
  const nodes = route([A, B]);
  const caps = Array.from({ length: 7 }, () => nodes.failed().delayMs);
  assert.deepEqual(caps, [500, 1000, 2000, 4000, 5000, 5000, 5000]);
  nodes.replace([B]); // a fresh list does not reset the backoff
  assert.equal(nodes.failed().delayMs, 5000);
  nodes.connected();
  assert.equal(nodes.failed().delayMs, 500);
});

test('the wait is a uniform draw below the cap (full jitter), never negative, never above it', () => {
  const draws = [0, 0.25, 0.999999];
  const nodes = route([A, B], () => draws.shift());
  assert.equal(nodes.failed().delayMs, 0);
  assert.equal(nodes.failed().delayMs, 250);
  const last = nodes.failed().delayMs;
  assert.ok(last >= 0 && last < 2000);
  const real = new BrokerRoute([A, B]); // Math.random, the default bounds
  for (let attempt = 0; attempt < 50; attempt += 1) {
    const { delayMs } = real.failed();
    assert.ok(delayMs >= 0 && delayMs <= 5000, `${delayMs} ms is out of bounds`);
  }
});
