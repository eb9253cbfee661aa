import assert from 'node:assert/strict';
import { test } from 'node:test';
import { brokerUrls, wsUrl } from '../src/live.js';

const page = (href) => new URL(href);

test('the advertised broker URL is used as it is when the page is on the same footing', () => {
  assert.equal(wsUrl('ws://127.0.0.1:8883/mqtt', page('http://127.0.0.1:8000/')), 'ws://127.0.0.1:8883/mqtt');
  assert.equal(wsUrl('wss://chat.example/mqtt', page('https://chat.example/')), 'wss://chat.example/mqtt');
});

test('a loopback broker address becomes the host the page was loaded from', () => {
  assert.equal(wsUrl('ws://localhost:8883/mqtt', page('http://192.168.1.5:8000/')), 'ws://192.168.1.5:8883/mqtt');
  assert.equal(wsUrl('ws://[::1]:8883/mqtt', page('http://chat.lan/')), 'ws://chat.lan:8883/mqtt');
});

test('an https page upgrades ws to wss', () => {
  assert.equal(wsUrl('ws://chat.example/mqtt', page('https://chat.example/')), 'wss://chat.example/mqtt');
});

test('an address that cannot be parsed falls back to /mqtt on the page host', () => {
  assert.equal(wsUrl('ws://[bad', page('https://chat.example:8443/')), 'wss://chat.example:8443/mqtt');
  assert.equal(wsUrl('ws://[bad', page('http://chat.example/')), 'ws://chat.example/mqtt');
});

test('the listed broker nodes become their reachable WebSocket URLs, in order', () => {
  const here = page('http://192.168.1.5:8000/');
  const listed = [
    { host: '127.0.0.1', port: 1883, ws_url: 'ws://127.0.0.1:8883/mqtt' },
    { host: '127.0.0.1', port: 1884, ws_url: 'ws://127.0.0.1:8884/mqtt' },
    { host: 'x', port: 1 },
  ];
  assert.deepEqual(brokerUrls(listed, here), ['ws://192.168.1.5:8883/mqtt', 'ws://192.168.1.5:8884/mqtt']);
  assert.deepEqual(brokerUrls([], here), []);
});
