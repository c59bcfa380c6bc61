/**
 * The access and request lines: the joined form (accessLogJson, requestLogJson, written through
 * Logger.jsonMembersWriter) must be, character for character, what the fields object gives
 * through JSON.stringify — over addresses of both families, strings that need escaping, every
 * optional field present and absent, and odd ctx.access values.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as diagnosticsChannel from 'node:diagnostics_channel';
import { accessLogFields, accessLogJson, requestLogFields, requestLogJson, startAccessLog } from '../../src/core/access-log.js';
import { ChannelName, type ConnCloseMessage, type RequestDoneMessage } from '../../src/core/channels.js';
import { createConnectionContext, type ConnectionContext } from '../../src/core/context.js';
import { createLogger, silentLogger, type LogFormat } from '../../src/core/logger.js';
import { ErrorCode, UpstreamError } from '../../src/core/errors.js';

/** A small deterministic generator (the cases must be the same on every run). */
function rng(seed: number): () => number {
  let x = seed;
  return () => {
    x = (x * 1103515245 + 12345) % 2 ** 31;
    return x / 2 ** 31;
  };
}

const STRINGS = ['plain', 'with "quotes"', 'back\\slash', 'tab\tnew\nline\u0001', 'é ü 中文', 'emoji 😀', 'lone \ud800 surrogate', '', '0'];
const ADDRESSES = ['10.71.1.2', '::1', '2001:db8::17', '127.0.0.1'];

function makeContext(r: () => number, i: number): ConnectionContext {
  const pick = <T>(list: readonly T[]): T => list[Math.floor(r() * list.length)]!;
  const ctx = createConnectionContext({
    listener: i % 5 === 0 ? pick(STRINGS) : 'forward',
    frontend: pick(['http', 'socks5', 'tcp-forward', 'transparent'] as const),
    downstream: { remote: { address: pick(ADDRESSES), port: Math.floor(r() * 65536) }, local: { address: pick(ADDRESSES), port: 9201 }, mptcp: r() < 0.5 },
    log: silentLogger,
  });
  if (r() < 0.7) ctx.downstreamSubflows = Math.floor(r() * 4);
  if (r() < 0.6) ctx.downstreamPaths = Array.from({ length: Math.floor(r() * 3) }, () => `${pick(ADDRESSES)}:1 -> ${pick(ADDRESSES)}:2`);
  if (r() < 0.8) ctx.target = { host: r() < 0.3 ? pick(STRINGS) : pick(ADDRESSES), port: Math.floor(r() * 65536) };
  if (r() < 0.7) ctx.upstream = { remote: { address: pick(ADDRESSES), port: 7000 }, local: { address: pick(ADDRESSES), port: 40000 }, mptcp: r() < 0.5 };
  const keys = ['method', 'status', 'user', 'requests', 'auth', 'reply', 'odd "key"', 'ünï'];
  for (let k = Math.floor(r() * 4); k > 0; k--) {
    ctx.access[pick(keys)] = pick<string | number | boolean | undefined>([pick(STRINGS), 200, 0, -0, 1.5, Number.NaN, Number.POSITIVE_INFINITY, true, false, undefined]);
  }
  ctx.bytes.fromDownstream = Math.floor(r() * 1e9);
  ctx.bytes.fromUpstream = Math.floor(r() * 1e12);
  return ctx;
}

function makeClose(r: () => number, ctx: ConnectionContext): ConnCloseMessage {
  const msg: ConnCloseMessage = { ctx, durationMs: r() < 0.1 ? 0.04 : r() * 100000, endedBy: (['downstream', 'upstream', 'proxy'] as const)[Math.floor(r() * 3)]! };
  const e = r();
  if (e < 0.2) msg.error = Object.assign(new Error('reset'), { code: 'ECONNRESET' });
  else if (e < 0.3) msg.error = new Error('no code, "quoted"\n');
  else if (e < 0.4) msg.error = new UpstreamError(ErrorCode.UPSTREAM_REFUSED, { host: '10.0.0.1', port: 80 }, 'refused');
  return msg;
}

test('accessLogJson is JSON.stringify(accessLogFields) without its braces, over 2 000 varied lines', () => {
  const r = rng(7);
  let joined = 0;
  for (let i = 0; i < 2000; i++) {
    const msg = makeClose(r, makeContext(r, i));
    const members = accessLogJson(msg);
    if (members === undefined) continue;
    joined += 1;
    assert.equal(members, JSON.stringify(accessLogFields(msg)).slice(1, -1), `case ${i}`);
  }
  assert.ok(joined > 1500, `most cases take the joined form (${joined})`);
});

test('accessLogJson declines where the object form differs: an access key it sets itself, a logger key, an index key', () => {
  const r = rng(3);
  const ctx = makeContext(r, 1);
  for (const key of Object.keys(ctx.access)) delete ctx.access[key];
  const msg = makeClose(r, ctx);
  assert.notEqual(accessLogJson(msg), undefined);
  for (const key of ['endedBy', 'error', 'target', 'conn']) {
    ctx.access[key] = 'x';
    assert.equal(accessLogJson(msg), undefined, key);
    delete ctx.access[key];
  }
  ctx.access.worker = 1;
  assert.equal(accessLogJson(msg, new Set(['time', 'level', 'msg', 'worker'])), undefined, 'a bound key');
  assert.notEqual(accessLogJson(msg, new Set(['time', 'level', 'msg'])), undefined);
  delete ctx.access.worker;
  ctx.access['7'] = 'index';
  assert.equal(accessLogJson(msg), undefined, 'an array-index key');
});

test('requestLogJson is JSON.stringify(requestLogFields) without its braces', () => {
  const r = rng(11);
  for (let i = 0; i < 500; i++) {
    const ctx = makeContext(r, i);
    const msg: RequestDoneMessage = {
      ctx,
      clientSubflows: r() < 0.5 ? 2 : undefined,
      method: r() < 0.9 ? 'GET' : undefined,
      url: r() < 0.9 ? `http://h/${STRINGS[i % STRINGS.length]}` : undefined,
      status: r() < 0.9 ? 200 : undefined,
      durationMs: r() * 1000,
      fromDownstream: Math.floor(r() * 1e6),
      fromUpstream: Math.floor(r() * 1e6),
    };
    assert.equal(requestLogJson(msg), JSON.stringify(requestLogFields(msg)).slice(1, -1), `case ${i}`);
  }
});

/** The lines startAccessLog writes for the same messages, through a logger of `format`. */
function accessLines(format: LogFormat, bound: Record<string, unknown>, messages: readonly ConnCloseMessage[]): string[] {
  const lines: string[] = [];
  const log = createLogger({ format, fields: bound, sink: { write: (l) => lines.push(l) } });
  const stop = startAccessLog(log);
  try {
    for (const m of messages) diagnosticsChannel.channel(ChannelName.connClose).publish(m);
  } finally {
    stop();
  }
  return lines;
}

test('startAccessLog writes the same lines whether it joins or builds objects (bound fields, clashing keys, text format)', () => {
  const r = rng(5);
  const messages = Array.from({ length: 300 }, (_, i) => makeClose(r, makeContext(r, i)));
  // A message whose access keys clash with the fixed ones, and one clashing with a bound key.
  messages[3]!.ctx.access.endedBy = 'clash';
  messages[4]!.ctx.access.worker = 9;
  const withoutTime = (line: string): unknown => {
    const o = JSON.parse(line) as Record<string, unknown>;
    assert.match(String(o.time), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    return { ...o, time: 'T' };
  };
  for (const bound of [{}, { worker: 2, pid: 123 }, { listener: 'bound listener' }]) {
    const got = accessLines('json', bound, messages);
    assert.equal(got.length, messages.length);
    const want = messages.map((m) => {
      const line: Record<string, unknown> = Object.assign({ time: 'T', level: 'info', msg: 'access' }, bound, accessLogFields(m));
      return JSON.parse(JSON.stringify(line)) as unknown;
    });
    // Same objects, keys in the same order.
    got.forEach((line, i) => {
      assert.deepEqual(withoutTime(line), want[i], `bound ${JSON.stringify(bound)}, case ${i}`);
      assert.deepEqual(Object.keys(withoutTime(line) as object), Object.keys(want[i] as object));
      assert.ok(line.endsWith('}\n') && !line.slice(0, -1).includes('\n'));
    });
  }
  const text = accessLines('text', {}, messages.slice(0, 5));
  assert.equal(text.length, 5);
  assert.match(text[0]!, /INFO +access conn=/);
});

test('jsonMembersWriter: undefined for text or bound fields needing the merged path; silent below the level', () => {
  const lines: string[] = [];
  const sink = { write: (l: string) => lines.push(l) };
  assert.equal(createLogger({ format: 'text', sink }).jsonMembersWriter('info', 'x'), undefined);
  assert.equal(createLogger({ sink, fields: { err: new Error('e') } }).jsonMembersWriter('info', 'x'), undefined);
  assert.equal(createLogger({ sink, fields: { level: 'bound' } }).jsonMembersWriter('info', 'x'), undefined);
  const quiet = createLogger({ level: 'warn', sink }).jsonMembersWriter('info', 'x');
  quiet?.write('"a":1');
  assert.deepEqual(lines, []);
  const w = createLogger({ sink, fields: { pid: 1, gone: undefined } }).child({ conn: 'c' }).jsonMembersWriter('warn', 'say "hi"')!;
  assert.deepEqual([...w.taken], ['time', 'level', 'msg', 'pid', 'conn']);
  w.write('"a":1');
  w.write('');
  assert.deepEqual(lines.map((l) => JSON.parse(l) as unknown), [
    { time: (JSON.parse(lines[0]!) as { time: string }).time, level: 'warn', msg: 'say "hi"', pid: 1, conn: 'c', a: 1 },
    { time: (JSON.parse(lines[1]!) as { time: string }).time, level: 'warn', msg: 'say "hi"', pid: 1, conn: 'c' },
  ]);
});
