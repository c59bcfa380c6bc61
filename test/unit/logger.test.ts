import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createBatchedSink, createLogger } from '../../src/core/logger.js';

test('the batched sink with flushMs 0 writes the lines of one event-loop turn in one write, in order', async () => {
  const writes: string[] = [];
  const sink = createBatchedSink({ write: (chunk: string) => writes.push(chunk) }, { flushMs: 0 });
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

test('the batched sink gathers the lines of several turns for flushMs, and writes at once past maxPending', async () => {
  const writes: string[] = [];
  const sink = createBatchedSink({ write: (chunk: string) => writes.push(chunk) }, { flushMs: 40, maxPending: 100 });
  sink.write('a\n');
  await new Promise((r) => setImmediate(r));
  sink.write('b\n');
  await new Promise((r) => setImmediate(r));
  assert.equal(writes.length, 0, 'still gathering after two turns');
  await new Promise((r) => setTimeout(r, 80));
  assert.deepEqual(writes, ['a\nb\n'], 'one write after flushMs');
  sink.write('x'.repeat(60));
  assert.equal(writes.length, 1);
  sink.write('y'.repeat(60));
  assert.equal(writes.length, 2, 'written synchronously once 100 characters wait');
  assert.equal(writes[1], 'x'.repeat(60) + 'y'.repeat(60));
  await new Promise((r) => setTimeout(r, 80));
  assert.equal(writes.length, 2, 'nothing left pending, no empty write');
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

test('JSON lines: the joined fast path and the merged slow path give the same objects, keys in order', () => {
  const lines: string[] = [];
  const root = createLogger({ level: 'debug', format: 'json', sink: { write: (l) => lines.push(l) } });
  const parse = (): Record<string, unknown> => JSON.parse(lines.at(-1)!) as Record<string, unknown>;
  root.info('plain');
  assert.deepEqual(Object.keys(parse()), ['time', 'level', 'msg']);
  root.info('empty fields', {});
  assert.deepEqual(Object.keys(parse()), ['time', 'level', 'msg']);
  root.info('with "quotes"\n', { a: 1, skipped: undefined, s: 'x"y', list: ['p -> q'] });
  assert.deepEqual(parse(), { time: parse().time, level: 'info', msg: 'with "quotes"\n', a: 1, s: 'x"y', list: ['p -> q'] });
  const child = root.child({ conn: 'c1', none: undefined }).child({ listener: 'l' });
  child.warn('bound', { n: 2 });
  assert.deepEqual(Object.keys(parse()), ['time', 'level', 'msg', 'conn', 'listener', 'n']);
  child.warn('bound only');
  assert.deepEqual(Object.keys(parse()), ['time', 'level', 'msg', 'conn', 'listener']);
  // A field repeating a key of the line: the last value, in the first one's place (Object.assign).
  child.error('override', { conn: 'c2', msg: 'field msg', z: true });
  assert.deepEqual(parse(), { time: parse().time, level: 'error', msg: 'field msg', conn: 'c2', listener: 'l', z: true });
  assert.deepEqual(Object.keys(parse()), ['time', 'level', 'msg', 'conn', 'listener', 'z']);
  // Bound fields that need the replacer, or name a head key, take the slow path for every line.
  const odd = root.child({ err: new Error('bound'), level: 'bound level' });
  odd.info('odd', { k: 1n });
  assert.deepEqual(parse(), { time: parse().time, level: 'bound level', msg: 'odd', err: { name: 'Error', message: 'bound' }, k: '1' });
  for (const l of lines) assert.ok(l.endsWith('}\n') && !l.slice(0, -1).includes('\n'), `one line each: ${l}`);
  assert.match(String(parse().time), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
});

test('a line\'s time is Date#toISOString of its millisecond, across second, minute and day boundaries', (t) => {
  t.mock.timers.enable({ apis: ['Date'], now: Date.parse('2026-12-31T23:59:59.997Z') });
  const lines: string[] = [];
  const log = createLogger({ format: 'json', sink: { write: (l: string) => lines.push(l) } });
  const times: string[] = [];
  for (const step of [0, 0, 1, 1, 1, 4, 995, 1, 59_000, 3_600_000 + 7]) {
    t.mock.timers.tick(step);
    log.info('tick');
    times.push(new Date(Date.now()).toISOString());
  }
  assert.deepEqual(
    lines.map((l) => (JSON.parse(l) as { time: string }).time),
    times,
  );
  assert.equal(times[4], '2027-01-01T00:00:00.000Z', 'the boundary is crossed');
  assert.equal(times[5], '2027-01-01T00:00:00.004Z');
});
