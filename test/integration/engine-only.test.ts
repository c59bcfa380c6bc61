/**
 * Engine-only connections (native/src/engine-only.c, src/main.ts engineOnlyConnections): when
 * nothing watches connections one by one but the access log, a tcp-forward listener's
 * connections are the engine's alone — it writes their access lines, JS writes those in
 * batches. Through the real startProxy, on loopback:
 *   - the engine's line is the line JS writes for the same connection (a second proxy, started
 *     while a conn:open subscriber exists, takes the JS way), key for key and value for value
 *     but for the time, the id, the client's port and the duration; ids from both never collide;
 *   - a failed connect is JS's after all: the same warning and access line as the JS way;
 *   - destroy() cuts live engine-only connections (their lines say so), close() waits for them;
 *   - with the access log off, nothing is written and close() still waits.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import * as diagnosticsChannel from 'node:diagnostics_channel';
import { once } from 'node:events';
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { startProxy, type RunningProxy } from '../../src/main.js';
import { validateConfig } from '../../src/config/schema.js';
import { ChannelName } from '../../src/core/channels.js';
import { ErrorCode } from '../../src/core/errors.js';
import { connectionIdPrefix, nextConnectionId } from '../../src/core/ids.js';
import { createLogger } from '../../src/core/logger.js';
import { loadNativeAcceptor } from '../../src/listeners/engine-acceptor.js';
import { connectMptcp, mptcpSupport } from '../../src/mptcp/index.js';

const HOST = '127.0.0.1';
const acceptor = loadNativeAcceptor();
const noEngine = acceptor === undefined || typeof acceptor.acceptorAbortAll !== 'function' ? 'the addon has no engine-only acceptor (acceptorAbortAll)' : false;

type LogLine = Record<string, unknown> & { level: string; msg: string };

interface Proxy {
  proxy: RunningProxy;
  /** Listener i's bound port. */
  port: number;
  ports: number[];
  /** Every log line, raw (as the sink got it) and parsed. */
  raw: string[];
  lines: LogLine[];
  access(): LogLine[];
}

let seq = 0;

/**
 * startProxy with a tcp-forward listener to each of `to`, logging JSON to a capture; destroyed
 * after. access() is the access lines of its own listeners: every proxy's access log in one
 * process hears every connection's conn:close (a subscriber is process-wide), the engine's
 * lines go to their own proxy's log only.
 */
interface ProxyOptions {
  access?: boolean;
  bound?: Record<string, unknown>;
  listen?: string;
  idleTimeoutMs?: number;
}

async function forwardProxy(t: TestContext, to: string | string[], opts: ProxyOptions = {}): Promise<Proxy> {
  const listeners = (Array.isArray(to) ? to : [to]).map((target) => ({ name: `eo${++seq}`, type: 'tcp-forward', listen: opts.listen ?? `${HOST}:0`, to: target }));
  const names = new Set(listeners.map((l) => l.name));
  const config = validateConfig({
    log: { level: 'info', format: 'json', access: opts.access ?? true },
    listeners,
    ...(opts.idleTimeoutMs !== undefined ? { relay: { idleTimeoutMs: opts.idleTimeoutMs } } : {}),
  });
  const raw: string[] = [];
  const lines: LogLine[] = [];
  const sink = {
    write(text: string) {
      // The engine's lines come several to a write: one entry per line, as a file would have them.
      for (const line of text.split('\n')) {
        if (line === '') continue;
        raw.push(line);
        lines.push(JSON.parse(line) as LogLine);
      }
    },
  };
  const log = createLogger({ level: 'info', format: 'json', sink, ...(opts.bound ? { fields: opts.bound } : {}) });
  const proxy = await startProxy(config, log);
  t.after(() => proxy.destroy());
  const ports = proxy.listeners.map((l) => l.address()!.port);
  return { proxy, port: ports[0]!, ports, raw, lines, access: () => lines.filter((l) => l.msg === 'access' && names.has(l.listener as string)) };
}

/** The same, started while a conn:open subscriber exists: every connection is JS's. */
async function jsProxy(t: TestContext, to: string | string[], opts: ProxyOptions = {}): Promise<Proxy> {
  const watch = () => {};
  diagnosticsChannel.subscribe(ChannelName.connOpen, watch);
  try {
    return await forwardProxy(t, to, opts);
  } finally {
    diagnosticsChannel.unsubscribe(ChannelName.connOpen, watch);
  }
}

async function serve(t: TestContext, onConnection: (s: net.Socket) => void): Promise<number> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => {});
    onConnection(s);
  });
  server.listen(0, HOST);
  await once(server, 'listening');
  t.after(() => {
    for (const s of sockets) s.destroy();
    server.close();
  });
  return (server.address() as net.AddressInfo).port;
}

/** Echoes, FIN after the client's. */
const echo = (s: net.Socket) => s.pipe(s);
/** Says "bye" and closes first (the upstream ends the connection). */
const greeter = (s: net.Socket) => s.end('bye');

async function waitFor(cond: () => boolean, what: string, ms = 5000): Promise<void> {
  const deadline = performance.now() + ms;
  while (!cond()) {
    if (performance.now() > deadline) assert.fail(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(5);
  }
}

/** A client (MPTCP when the kernel has it, for the subflow fields) that sends `send`, reads to
 *  the end and closes; resolves with what it read. serverFirst: it ends only after the
 *  server's FIN (so the upstream ends the connection), else right after sending. */
async function exchange(port: number, send: string, serverFirst = false): Promise<string> {
  const c = mptcpSupport().available ? connectMptcp({ host: HOST, port, mptcp: true }) : net.connect({ host: HOST, port });
  c.on('error', () => {});
  const got: Buffer[] = [];
  c.on('data', (d: Buffer) => got.push(d));
  await once(c, 'connect');
  if (serverFirst) c.write(send);
  else c.end(send);
  await once(c, 'close');
  return Buffer.concat(got).toString();
}

/** A client left open after one echoed 'ping' (its connection is live in the proxy). */
async function openEcho(port: number): Promise<net.Socket> {
  const c = net.connect({ host: HOST, port });
  c.on('error', () => {});
  await once(c, 'connect');
  c.write('ping');
  await once(c, 'data');
  return c;
}

/** Values that differ between two runs of the same connection. */
const VOLATILE = new Set(['time', 'conn', 'client', 'clientPaths', 'durationMs']);

function comparable(line: LogLine): Record<string, unknown> {
  return Object.fromEntries(Object.entries(line).map(([k, v]) => [k, VOLATILE.has(k) ? typeof v : k === 'listener' ? 'L' : v]));
}

test('the engine writes the access line JS writes for the same connection, with ids from one sequence', { skip: noEngine }, async (t) => {
  const echoPort = await serve(t, echo);
  const greeterPort = await serve(t, greeter);
  const targets = [`${HOST}:${echoPort}`, `${HOST}:${greeterPort}`];
  const engine = await forwardProxy(t, targets);
  const js = await jsProxy(t, targets);
  for (const l of engine.proxy.listeners) assert.equal(l.engineOnly, true, 'nothing watches: engine-only');
  for (const l of js.proxy.listeners) assert.equal(l.engineOnly, false, 'a conn:open subscriber at start: JS');
  for (const p of [engine, js]) {
    const listening = p.lines.filter((l) => l.msg === 'listening');
    assert.deepEqual(listening.map((l) => l.engineOnly), p === engine ? [true, true] : [undefined, undefined], 'the listening line says so');
  }
  const jsIds = [nextConnectionId()];
  for (let i = 0; i < 3; i++) {
    for (const p of [engine, js]) {
      assert.equal(await exchange(p.ports[0]!, `hello ${i}`), `hello ${i}`);
      assert.equal(await exchange(p.ports[1]!, 'hi', true), 'bye');
    }
  }
  jsIds.push(nextConnectionId());
  for (const p of [engine, js]) await waitFor(() => p.access().length === 6, 'six access lines');
  for (let i = 0; i < 2; i++) {
    const name = (p: Proxy) => p.proxy.listeners[i]!.config.name;
    const ours = engine.access().filter((l) => l.listener === name(engine));
    const theirs = js.access().filter((l) => l.listener === name(js));
    for (let k = 0; k < 3; k++) {
      // Same keys in the same order, same values but the volatile ones (of the same types).
      assert.deepEqual(Object.keys(ours[k]!), Object.keys(theirs[k]!), `keys of line ${k} (${i === 0 ? 'echo' : 'greeter'})`);
      assert.deepEqual(comparable(ours[k]!), comparable(theirs[k]!));
      assert.equal(ours[k]!.listener, name(engine));
      assert.match(ours[k]!.time as string, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
      assert.ok(Math.abs(Date.parse(ours[k]!.time as string) - Date.now()) < 60_000, 'the time is now, in UTC');
      assert.match(ours[k]!.client as string, /^127\.0\.0\.1:\d+$/);
      { const d = ours[k]!.durationMs; assert.ok(typeof d === 'number' && d >= 0 && d < 5000); }
    }
    assert.equal(ours[0]!.endedBy, i === 0 ? 'downstream' : 'upstream');
    assert.equal(ours[0]!.bytesUp, i === 0 ? 7 : 2);
    assert.equal(ours[0]!.bytesDown, i === 0 ? 7 : 3);
  }
  // One sequence: the engine's ids fall between the two JS draws, and no id repeats.
  const all = [engine, js].flatMap((p) => p.access().map((l) => l.conn as string));
  assert.equal(new Set([...all, ...jsIds]).size, all.length + jsIds.length, 'no id twice');
  const num = (id: string) => {
    assert.ok(id.startsWith(connectionIdPrefix), `${id} has the run's prefix`);
    return parseInt(id.slice(connectionIdPrefix.length), 36);
  };
  for (const l of engine.access()) assert.ok(num(l.conn as string) > num(jsIds[0]!) && num(l.conn as string) < num(jsIds[1]!));
});

test("bound logger fields come out in the engine's lines as JS writes them", { skip: noEngine }, async (t) => {
  const echoPort = await serve(t, echo);
  const p = await forwardProxy(t, `${HOST}:${echoPort}`, { bound: { worker: 3, host: 'a"b' } });
  assert.equal(p.proxy.listeners[0]!.engineOnly, true);
  assert.equal(await exchange(p.port, 'x'), 'x');
  await waitFor(() => p.access().length === 1, 'the access line');
  const [line] = p.access();
  assert.equal(line!.worker, 3);
  assert.equal(line!.host, 'a"b');
  assert.deepEqual(Object.keys(line!).slice(0, 6), ['time', 'level', 'msg', 'worker', 'host', 'conn']);
});

test('a failed connect is reported by JS: the same warning and access line as the JS way', { skip: noEngine }, async (t) => {
  const s = net.createServer().listen(0, HOST);
  await once(s, 'listening');
  const closed = (s.address() as net.AddressInfo).port;
  await new Promise<void>((resolve) => s.close(() => resolve()));
  const engine = await forwardProxy(t, `${HOST}:${closed}`);
  const js = await jsProxy(t, `${HOST}:${closed}`);
  assert.equal(engine.proxy.listeners[0]!.engineOnly, true);
  const before = performance.now();
  for (const p of [engine, js]) {
    const c = net.connect({ host: HOST, port: p.port });
    const err = await new Promise<NodeJS.ErrnoException | undefined>((resolve) => {
      c.once('error', resolve);
      c.once('close', () => resolve(undefined));
    });
    assert.equal(err?.code, 'ECONNRESET', 'the client is reset');
    await waitFor(() => p.access().length === 1, 'the access line');
  }
  const elapsed = performance.now() - before;
  const warn = (p: Proxy) => p.lines.find((l) => l.msg === 'upstream dial failed');
  assert.ok(warn(engine), 'the dial failure is logged');
  assert.deepEqual(Object.keys(warn(engine)!), Object.keys(warn(js)!));
  const [ours] = engine.access();
  const [theirs] = js.access();
  assert.deepEqual(comparable(ours!), comparable(theirs!));
  assert.equal(ours!.error, ErrorCode.UPSTREAM_REFUSED);
  assert.equal(ours!.endedBy, 'proxy');
  assert.ok((ours!.durationMs as number) >= 0 && (ours!.durationMs as number) <= elapsed, 'its duration counts from its accept');
});

test('destroy() cuts live engine-only connections, and their lines say so', { skip: noEngine }, async (t) => {
  const echoPort = await serve(t, echo);
  const p = await forwardProxy(t, `${HOST}:${echoPort}`);
  assert.equal(p.proxy.listeners[0]!.engineOnly, true);
  const clients = await Promise.all([0, 1, 2].map(() => openEcho(p.port)));
  const closed = clients.map((c) => once(c, 'close'));
  await p.proxy.destroy();
  await Promise.all(closed);
  await waitFor(() => p.access().length === 3, 'three access lines');
  for (const line of p.access()) {
    assert.equal(line.error, ErrorCode.RELAY_ABORTED);
    assert.equal(line.endedBy, 'proxy');
    assert.equal(line.bytesUp, 4);
  }
});

test('close() waits for live engine-only connections, and their lines are written by then', { skip: noEngine }, async (t) => {
  const echoPort = await serve(t, echo);
  const p = await forwardProxy(t, `${HOST}:${echoPort}`);
  const c = await openEcho(p.port);
  let closed = false;
  const closing = p.proxy.close().then(() => (closed = true));
  await sleep(300);
  assert.equal(closed, false, 'a live connection holds close()');
  assert.equal(p.proxy.listeners[0]!.connections, 1, 'the listener counts it');
  c.end();
  await closing;
  assert.equal(p.access().length, 1, 'its line was written before close() resolved');
  assert.equal(p.access()[0]!.endedBy, 'downstream');
});

test('with the access log off, engine-only connections write nothing and close() still waits for them', { skip: noEngine }, async (t) => {
  const echoPort = await serve(t, echo);
  const p = await forwardProxy(t, `${HOST}:${echoPort}`, { access: false });
  assert.equal(p.proxy.listeners[0]!.engineOnly, true);
  for (let i = 0; i < 5; i++) assert.equal(await exchange(p.port, `n${i}`), `n${i}`);
  const c = await openEcho(p.port);
  let closed = false;
  const closing = p.proxy.close().then(() => (closed = true));
  await sleep(200);
  assert.equal(closed, false);
  c.end();
  await closing;
  assert.deepEqual(p.access(), []);
});

test('clients of a dual-stack listener (IPv4-mapped, IPv6) and an idle timeout come out as JS writes them', { skip: noEngine }, async (t) => {
  const echoPort = await serve(t, echo);
  const opts = { listen: '[::]:0', idleTimeoutMs: 300 };
  const engine = await forwardProxy(t, `${HOST}:${echoPort}`, opts);
  const js = await jsProxy(t, `${HOST}:${echoPort}`, opts);
  assert.equal(engine.proxy.listeners[0]!.engineOnly, true);
  const v6 = await new Promise<boolean>((resolve) => {
    const s = net.createServer().listen(0, '::1', () => s.close(() => resolve(true)));
    s.on('error', () => resolve(false));
  });
  for (const p of [engine, js]) {
    const plain = await openEcho(p.port); // 127.0.0.1 on a [::] socket: ::ffff:127.0.0.1 to the kernel
    await once(plain, 'close'); // the proxy's idle timeout
    if (v6) {
      const c = net.connect({ host: '::1', port: p.port });
      c.on('error', () => {});
      c.resume(); // read the echo, so that its end (and the close) comes
      c.end('six');
      await once(c, 'close');
    }
    await waitFor(() => p.access().length === (v6 ? 2 : 1), 'the access lines');
  }
  const ours = engine.access();
  const theirs = js.access();
  for (let k = 0; k < ours.length; k++) {
    assert.deepEqual(Object.keys(ours[k]!), Object.keys(theirs[k]!));
    assert.deepEqual(comparable(ours[k]!), comparable(theirs[k]!));
  }
  assert.match(ours[0]!.client as string, /^127\.0\.0\.1:\d+$/, 'an IPv4-mapped client is written as IPv4');
  assert.equal(ours[0]!.error, ErrorCode.IDLE_TIMEOUT);
  assert.equal(ours[0]!.endedBy, 'proxy');
  if (v6) assert.match(ours[1]!.client as string, /^\[::1\]:\d+$/);
});
