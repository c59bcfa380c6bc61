import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createConnectionLimiter } from '../../src/access/connection-limiter.js';

test('the limiter admits up to maxPerClient connections per address and frees a slot on release', () => {
  const limiter = createConnectionLimiter(2);
  assert.equal(limiter.tryAcquire('10.0.0.1'), true);
  assert.equal(limiter.tryAcquire('10.0.0.1'), true);
  assert.equal(limiter.tryAcquire('10.0.0.1'), false, 'third connection is over the limit');
  assert.equal(limiter.tryAcquire('10.0.0.2'), true, 'another client has its own count');
  limiter.release('10.0.0.1');
  assert.equal(limiter.tryAcquire('10.0.0.1'), true);
  assert.equal(limiter.count('10.0.0.1'), 2);
});

test('a refused acquire counts nothing, so it needs no release', () => {
  const limiter = createConnectionLimiter(1);
  assert.equal(limiter.tryAcquire('10.0.0.1'), true);
  assert.equal(limiter.tryAcquire('10.0.0.1'), false);
  limiter.release('10.0.0.1');
  assert.equal(limiter.trackedClients, 0);
});

test('IPv4-mapped and plain IPv4 forms of one client share a count', () => {
  const limiter = createConnectionLimiter(1);
  assert.equal(limiter.tryAcquire('::ffff:192.0.2.1'), true);
  assert.equal(limiter.tryAcquire('192.0.2.1'), false);
  limiter.release('192.0.2.1');
  assert.equal(limiter.trackedClients, 0);
});

test('0 means unlimited, and entries are removed when their count reaches zero (no leak)', () => {
  const limiter = createConnectionLimiter(0);
  for (let i = 0; i < 1000; i++) assert.equal(limiter.tryAcquire(`10.0.${i >> 8}.${i & 255}`), true);
  for (let i = 0; i < 1000; i++) assert.equal(limiter.tryAcquire('10.9.9.9'), true);
  assert.equal(limiter.trackedClients, 1001);
  for (let i = 0; i < 1000; i++) limiter.release(`10.0.${i >> 8}.${i & 255}`);
  for (let i = 0; i < 1000; i++) limiter.release('10.9.9.9');
  assert.equal(limiter.trackedClients, 0);
  assert.equal(limiter.count('10.9.9.9'), 0);
});

test('an unmatched release is ignored and never goes negative', () => {
  const limiter = createConnectionLimiter(1);
  limiter.release('10.0.0.1');
  assert.equal(limiter.trackedClients, 0);
  assert.equal(limiter.tryAcquire('10.0.0.1'), true);
  assert.equal(limiter.tryAcquire('10.0.0.1'), false);
});

test('a negative or fractional limit is rejected', () => {
  assert.throws(() => createConnectionLimiter(-1), RangeError);
  assert.throws(() => createConnectionLimiter(1.5), RangeError);
});
