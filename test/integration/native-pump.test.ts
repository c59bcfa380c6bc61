/**
 * The native body pump (src/relay/native-pump.ts, native/src/relay.c pumpStart) on loopback
 * with real sockets: origin → [from | pump | to] → sink. Every case checks that the sockets
 * stay JS's afterwards: Node reads the bytes after the body, and can write to `to`.
 */
import { strict as assert } from 'node:assert';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { readdirSync } from 'node:fs';
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, test } from 'node:test';
import { socketFd } from '../../src/mptcp/index.js';
import {
  canPumpNative,
  loadNativePumpEngine,
  pumpNative,
  resumeHandleReading,
  stopHandleReading,
  type NativePumpSummary,
} from '../../src/relay/native-pump.js';

const MB = 1024 * 1024;
const HOST = '127.0.0.1';
const skip = canPumpNative() ? false : 'native addon not built with pumpStart';

interface Pair {
  /** The proxy's two sockets: it reads `from` and writes `to`. */
  from: net.Socket;
  to: net.Socket;
  /** The peers: `origin` writes into `from`, `sink` reads what reaches `to`. */
  origin: net.Socket;
  sink: net.Socket;
  close(): void;
}

async function connectedPair(): Promise<[net.Socket, net.Socket]> {
  const server = net.createServer({ allowHalfOpen: true });
  server.listen(0, HOST);
  await once(server, 'listening');
  const accepted = once(server, 'connection');
  const client = net.connect({ host: HOST, port: (server.address() as net.AddressInfo).port, allowHalfOpen: true });
  await once(client, 'connect');
  const [peer] = (await accepted) as [net.Socket];
  server.close();
  return [client, peer];
}

async function pair(): Promise<Pair> {
  const [from, origin] = await connectedPair();
  const [to, sink] = await connectedPair();
  for (const s of [from, to, origin, sink]) s.on('error', () => {});
  return {
    from,
    to,
    origin,
    sink,
    close() {
      for (const s of [from, to, origin, sink]) s.destroy();
    },
  };
}

/** Collects what `s` receives; `take()` returns it so far. */
function collector(s: net.Socket): { take(): Buffer; ended: Promise<void> } {
  const parts: Buffer[] = [];
  s.on('data', (c: Buffer) => parts.push(c));
  const ended = new Promise<void>((resolve) => s.once('end', resolve).once('close', resolve));
  return {
    take: () => Buffer.concat(parts),
    ended,
  };
}

async function waitFor(predicate: () => boolean, timeoutMs = 5000): Promise<void> {
  const until = performance.now() + timeoutMs;
  while (!predicate()) {
    if (performance.now() > until) throw new Error('timed out');
    await sleep(5);
  }
}

async function writeAll(s: net.Socket, data: Buffer): Promise<void> {
  for (let off = 0; off < data.length; off += MB) {
    if (!s.write(data.subarray(off, off + MB))) await once(s, 'drain');
  }
}

/** Reads from a socket through Node (a 'data' listener) until `n` bytes arrived. */
async function readThroughNode(s: net.Socket, n: number): Promise<Buffer> {
  const parts: Buffer[] = [];
  let got = 0;
  await new Promise<void>((resolve, reject) => {
    const onData = (c: Buffer): void => {
      parts.push(c);
      got += c.length;
      if (got >= n) {
        s.off('data', onData);
        s.pause();
        resolve();
      }
    };
    s.on('data', onData);
    s.once('close', () => reject(new Error(`closed after ${got} of ${n} bytes`)));
    s.resume();
  });
  return Buffer.concat(parts);
}

function sha256(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

function openFds(): number {
  return readdirSync('/proc/self/fd').length;
}

describe('handle read stop/restart (the pump handover on Node internals)', () => {
  test('stopping and restarting the libuv handle 200 times during a 16 MiB stream loses and repeats no byte', async (t) => {
    const p = await pair();
    t.after(() => p.close());
    const data = randomBytes(16 * MB);
    const writing = writeAll(p.origin, data).then(() => p.origin.end());
    const parts: Buffer[] = [];
    let ended = false;
    p.from.once('end', () => {
      ended = true;
    });
    let rounds = 0;
    for (; !ended; rounds++) {
      // Node's own reading for a while ('data' events), then a handover-shaped stop.
      const onData = (c: Buffer): void => {
        parts.push(c);
      };
      p.from.on('data', onData);
      p.from.resume();
      await sleep(rounds < 200 ? 0 : 20);
      p.from.off('data', onData);
      parts.push(...stopHandleReading(p.from));
      await sleep(0); // libuv polls in between: a read here would be a lost or stray chunk
      resumeHandleReading(p.from);
    }
    await writing;
    assert.ok(rounds >= 10, `only ${rounds} stops during the stream`);
    const got = Buffer.concat(parts);
    assert.equal(got.length, data.length);
    assert.equal(sha256(got), sha256(data));
  });

  test('after stopHandleReading nothing is read until resumeHandleReading, even with bytes waiting', async (t) => {
    const p = await pair();
    t.after(() => p.close());
    p.origin.write('first');
    const first = await readThroughNode(p.from, 5);
    assert.equal(first.toString(), 'first');
    assert.deepEqual(stopHandleReading(p.from), []);
    p.origin.write('second');
    await sleep(100);
    assert.equal(p.from.readableLength, 0, 'Node buffered nothing while the handle was stopped');
    resumeHandleReading(p.from);
    const second = await readThroughNode(p.from, 6);
    assert.equal(second.toString(), 'second');
  });
});

describe('native body pump', { skip }, () => {
  test('moves exactly N bytes, and the bytes after them stay for Node to read', async (t) => {
    const p = await pair();
    t.after(() => p.close());
    const body = randomBytes(8 * MB + 12345);
    const atSink = collector(p.sink);
    // Some of the body arrives before the handover: Node buffers it (paused socket).
    p.origin.write(body.subarray(0, 100_000));
    await waitFor(() => p.from.readableLength > 0);
    const writing = writeAll(p.origin, body.subarray(100_000)).then(() => p.origin.write('NEXT'));
    const result = await pumpNative(p.from, p.to, { length: body.length });
    assert.equal(result.endedBy, 'done');
    assert.equal(result.moved, body.length);
    await writing;
    await waitFor(() => atSink.take().length >= body.length);
    assert.equal(sha256(atSink.take()), sha256(body));
    // Node reads the next message from `from`, and JS writes to `to` again.
    const next = await readThroughNode(p.from, 4);
    assert.equal(next.toString(), 'NEXT');
    p.to.write('AFTER');
    await waitFor(() => atSink.take().length === body.length + 5);
    assert.equal(atSink.take().subarray(body.length).toString(), 'AFTER');
  });

  test('the engine closes its dups: no fd is left behind by 20 pumps', async (t) => {
    const p = await pair();
    t.after(() => p.close());
    collector(p.sink);
    p.origin.write('warm');
    await pumpNative(p.from, p.to, { length: 4 }); // starts the engine (its epoll fd and eventfd live on)
    const before = openFds();
    for (let i = 0; i < 20; i++) {
      p.origin.write(randomBytes(1000));
      const r = await pumpNative(p.from, p.to, { length: 1000 });
      assert.equal(r.endedBy, 'done');
    }
    assert.equal(openFds(), before);
  });

  test('a head goes first, and a body already in Node\'s buffer with the next message behind it is split there', async (t) => {
    const p = await pair();
    t.after(() => p.close());
    const atSink = collector(p.sink);
    p.origin.write('0123456789NEXT');
    await waitFor(() => p.from.readableLength === 14);
    const result = await pumpNative(p.from, p.to, { length: 10, head: Buffer.from('HEAD|') });
    assert.equal(result.endedBy, 'done');
    assert.equal(result.moved, 10, 'taken from Node\'s buffer, counted as moved');
    await waitFor(() => atSink.take().length >= 15);
    assert.equal(atSink.take().toString(), 'HEAD|0123456789');
    const next = await readThroughNode(p.from, 4);
    assert.equal(next.toString(), 'NEXT');
  });

  test('until EOF: everything up to the origin\'s FIN, and `to` is neither shut down nor closed', async (t) => {
    const p = await pair();
    t.after(() => p.close());
    const body = randomBytes(3 * MB);
    const atSink = collector(p.sink);
    let sinkEnded = false;
    p.sink.once('end', () => {
      sinkEnded = true;
    });
    const writing = writeAll(p.origin, body).then(() => p.origin.end());
    const result = await pumpNative(p.from, p.to, { length: 'eof' });
    await writing;
    assert.equal(result.endedBy, 'done');
    assert.equal(result.moved, body.length);
    await waitFor(() => atSink.take().length >= body.length);
    assert.equal(sha256(atSink.take()), sha256(body));
    p.to.write('still open');
    await waitFor(() => atSink.take().length === body.length + 10);
    assert.equal(sinkEnded, false);
    // Node sees the origin's EOF itself once it reads again (the engine never consumed it for
    // Node: a socket's EOF is read again by every later read).
    await waitFor(() => p.from.readableEnded);
  });

  test('EOF before N bytes ends with endedBy eof and the count that did arrive', async (t) => {
    const p = await pair();
    t.after(() => p.close());
    collector(p.sink);
    const writing = writeAll(p.origin, randomBytes(MB)).then(() => p.origin.end());
    const result = await pumpNative(p.from, p.to, { length: 2 * MB });
    await writing;
    assert.equal(result.endedBy, 'eof');
    assert.equal(result.moved, MB);
    assert.equal(result.error, undefined);
  });

  test('a silent origin ends the pump with endedBy idle after idleTimeoutMs', async (t) => {
    const p = await pair();
    t.after(() => p.close());
    p.origin.write('a few bytes');
    const started = performance.now();
    const result = await pumpNative(p.from, p.to, { length: MB, idleTimeoutMs: 200 });
    assert.equal(result.endedBy, 'idle');
    assert.equal(result.moved, 11);
    assert.ok(performance.now() - started >= 190, 'not before the timeout');
  });

  test('the signal aborts a pump, and Node reads what the engine left in the kernel', async (t) => {
    const p = await pair();
    t.after(() => p.close());
    const atSink = collector(p.sink);
    const abort = new AbortController();
    p.origin.write('part one|');
    const pumping = pumpNative(p.from, p.to, { length: MB, signal: abort.signal });
    await waitFor(() => atSink.take().length === 9);
    abort.abort();
    const result = await pumping;
    assert.equal(result.endedBy, 'aborted');
    assert.equal(result.moved, 9);
    p.origin.write('part two');
    const rest = await readThroughNode(p.from, 8);
    assert.equal(rest.toString(), 'part two');
  });

  test('destroying `to` in JS aborts the pump', async (t) => {
    const p = await pair();
    t.after(() => p.close());
    const pumping = pumpNative(p.from, p.to, { length: MB });
    await sleep(50);
    p.to.destroy();
    const result = await pumping;
    assert.equal(result.endedBy, 'aborted');
  });

  test('a sink that resets makes the pump fail on side "to" with a Node-shaped error', async (t) => {
    const p = await pair();
    t.after(() => p.close());
    // Not awaited: once the origin is destroyed below, its pending 'drain' never comes.
    void writeAll(p.origin, randomBytes(64 * MB)).catch(() => {});
    // Node must not read `to` here: its read would see the reset too, and its 'close' aborts the
    // pump ('aborted': a race the engine's write lost once under the full suite).
    stopHandleReading(p.to);
    const pumping = pumpNative(p.from, p.to, { length: 64 * MB });
    await once(p.sink, 'data');
    p.sink.resetAndDestroy();
    const result = await pumping;
    assert.equal(result.endedBy, 'error');
    assert.equal(result.side, 'to');
    assert.ok(['ECONNRESET', 'EPIPE'].includes(result.error?.code ?? ''), `code ${result.error?.code}`);
    assert.equal(result.error?.syscall, 'write');
  });

  test('an origin that resets makes the pump fail on side "from"', async (t) => {
    const p = await pair();
    t.after(() => p.close());
    collector(p.sink);
    p.origin.write(randomBytes(1000));
    const pumping = pumpNative(p.from, p.to, { length: MB });
    await sleep(50);
    p.origin.resetAndDestroy();
    const result = await pumping;
    assert.equal(result.endedBy, 'error');
    assert.equal(result.side, 'from');
    assert.equal(result.error?.code, 'ECONNRESET');
  });

  test('relayStats and relayAbort take a pump id; the summary has the pump shape', async (t) => {
    const p = await pair();
    t.after(() => p.close());
    const engine = loadNativePumpEngine()!;
    const body = randomBytes(2 * MB);
    void writeAll(p.origin, body).catch(() => {});
    stopHandleReading(p.from);
    const fdFrom = engine.dup(socketFd(p.from));
    const fdTo = engine.dup(socketFd(p.to));
    // The sink reads nothing: the pump stalls on a full send buffer with a part moved.
    let id = 0;
    const done = new Promise<NativePumpSummary>((resolve) => {
      id = engine.pumpStart(fdFrom, fdTo, Buffer.from('head'), 4 * MB, 0, resolve);
    });
    await waitFor(() => (engine.relayStats(id)?.fromDownstream ?? 0) > 0);
    await sleep(50); // let it fill the sink's receive and our send buffers
    const stats = engine.relayStats(id)!;
    // For a pump, fromDownstream is what it read from `from` and fromUpstream what reached `to`
    // (head included): it never reads `to`. Stalled, the sink's buffers hold what was written.
    assert.ok(stats.fromDownstream > 0 && stats.fromDownstream <= body.length);
    assert.ok(stats.fromUpstream > 4 && stats.fromUpstream <= stats.fromDownstream + 4, `written ${stats.fromUpstream} of read ${stats.fromDownstream} + head`);
    assert.equal(engine.relayAbort(id), true);
    const summary = await done;
    assert.deepEqual(Object.keys(summary).sort(), ['durationMs', 'endedBy', 'id', 'moved']);
    assert.equal(summary.id, id);
    assert.equal(summary.endedBy, 'aborted');
    assert.ok(summary.moved >= stats.fromDownstream, 'the head is not counted');
    assert.equal(engine.relayStats(id), null);
    assert.equal(engine.relayAbort(id), false);
    resumeHandleReading(p.from);
  });

  test('pumpStart refuses a length that is not -1 or a whole number of bytes, leaving the fds to the caller', () => {
    const engine = loadNativePumpEngine()!;
    for (const bad of [-2, 1.5, Number.NaN, 2 ** 54]) {
      assert.throws(() => engine.pumpStart(0, 1, null, bad, 0, () => {}), { code: 'ERR_OUT_OF_RANGE' });
    }
  });

  test('length 0 with a head writes the head only', async (t) => {
    const p = await pair();
    t.after(() => p.close());
    const atSink = collector(p.sink);
    p.origin.write('NEXT');
    await waitFor(() => p.from.readableLength === 4);
    const result = await pumpNative(p.from, p.to, { length: 0, head: Buffer.from('only the head') });
    assert.equal(result.endedBy, 'done');
    assert.equal(result.moved, 0);
    await waitFor(() => atSink.take().length === 13);
    assert.equal((await readThroughNode(p.from, 4)).toString(), 'NEXT');
  });

  test('a backpressured sink holds the pump back without losing bytes (16 MiB through a paused reader)', async (t) => {
    const p = await pair();
    t.after(() => p.close());
    const body = randomBytes(16 * MB);
    const writing = writeAll(p.origin, body).then(() => p.origin.write('NEXT'));
    const pumping = pumpNative(p.from, p.to, { length: body.length });
    // The sink reads nothing for a while: the engine must wait for EPOLLOUT, not spin.
    const cpuBefore = process.cpuUsage();
    await sleep(300);
    const cpu = process.cpuUsage(cpuBefore);
    const parts: Buffer[] = [];
    p.sink.on('data', (c: Buffer) => parts.push(c));
    const result = await pumping;
    await writing;
    assert.equal(result.endedBy, 'done');
    await waitFor(() => parts.reduce((n, c) => n + c.length, 0) >= body.length);
    assert.equal(sha256(Buffer.concat(parts)), sha256(body));
    assert.equal((await readThroughNode(p.from, 4)).toString(), 'NEXT');
    // The engine thread counts in process.cpuUsage(); a spinning ET loop would burn ~300 ms.
    assert.ok(cpu.user + cpu.system < 150_000, `cpu while stalled: ${(cpu.user + cpu.system) / 1000} ms`);
  });
});
