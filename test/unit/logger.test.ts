import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createBatchedSink, createLogger } from '../../src/core/logger.js';

test('the batched sink writes the lines of one event-loop turn in one write, in order', async () => {
  const writes: string[] = [];
  const sink = createBatchedSink({ write: (chunk: string) => writes.push(chunk) });
  const log = createLogger({ format: 'json', sink });
  log.info('one', { n: 1 });
  log.info('two', { n: 2 });
  assert.equal(writes.length, 0, 'nothing written synchronously');
  await new Promise((r) => setImmediate(r));
  assert.equal(writes.length, 1);
  const lines = writes[0]!.trimEnd().split('\n').map((l) => JSON.parse(l) as { msg: string; n: number });
  assert.deepEqual(lines.map((l) => [l.msg, l.n]), [['one', 1], ['two', 2]]);
  log.warn('three');
  await new Promise((r) => setImmediate(r));
  assert.equal(writes.length, 2);
  assert.match(writes[1]!, /"msg":"three"/);
});

test('log lines carry bound fields, serialize errors with code and cause, and respect the level', () => {
  const lines: string[] = [];
  const log = createLogger({ level: 'info', format: 'json', sink: { write: (l) => lines.push(l) } }).child({ conn: 'c1' });
  log.debug('hidden');
  const cause = Object.assign(new Error('inner'), { code: 'ECONNRESET' });
  log.warn('failed', { err: new Error('outer', { cause }), big: 12n });
  assert.equal(lines.length, 1);
  const line = JSON.parse(lines[0]!) as { conn: string; err: { message: string; cause: { code: string } }; big: string };
  assert.equal(line.conn, 'c1');
  assert.equal(line.err.message, 'outer');
  assert.equal(line.err.cause.code, 'ECONNRESET');
  assert.equal(line.big, '12');
});
