/**
 * The relay contract (src/relay/types.ts), run against both engines on loopback with real
 * sockets: client → [downstream | relay | upstream] → server.
 */
import { strict as assert } from 'node:assert';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { readdirSync } from 'node:fs';
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, test } from 'node:test';
import { createConnectionContext, type ConnectionContext } from '../../src/core/context.js';
import { createLogger } from '../../src/core/logger.js';
import { loadNativeRelayEngine, nativeRelayCounters, selectRelay, type Relay, type RelayOptions, type RelaySummary } from '../../src/relay/index.js';
import type { NativeRelaySummary } from '../../src/relay/native-relay.js';
import { connectMptcp, listenMptcp, mptcpSupport, socketFd } from '../../src/mptcp/index.js';

const MB = 1024 * 1024;
const HOST = '127.0.0.1';
const silent = createLogger({ level: 'silent' });

interface Relayed {
  client: net.Socket;
  server: net.Socket;
  ctx: ConnectionContext;
  done: Promise<RelaySummary>;
  close(): void;
}

async function listen(): Promise<net.Server> {
  const s = net.createServer({ allowHalfOpen: true });
  s.listen(0, HOST);
  await once(s, 'listening');
  return s;
}

function portOf(s: net.Server): number {
  return (s.address() as net.AddressInfo).port;
}

/** Client and server connected through `relay`; `beforeRelay` runs once both proxy sockets exist. */
async function relayed(relay: Relay, opts: RelayOptions = {}, beforeRelay?: (client: net.Socket) => Promise<void>): Promise<Relayed> {
  const upServer = await listen();
  const proxyServer = await listen();
  const serverP = once(upServer, 'connection');
  const downP = once(proxyServer, 'connection');
  const client = net.connect({ host: HOST, port: portOf(proxyServer), allowHalfOpen: true });
  const [down] = (await downP) as [net.Socket];
  const up = net.connect({ host: HOST, port: portOf(upServer), allowHalfOpen: true });
  await once(up, 'connect');
  const [server] = (await serverP) as [net.Socket];
  if (beforeRelay) await beforeRelay(client);
  const ctx = createConnectionContext({
    listener: 'test',
    frontend: 'tcp-forward',
    downstream: { remote: { address: HOST, port: client.localPort ?? 0 }, local: { address: HOST, port: portOf(proxyServer) }, mptcp: false },
    log: silent,
  });
  const done = relay(down, up, ctx, opts);
  return {
    client,
    server,
    ctx,
    done,
    close() {
      client.destroy();
      server.destroy();
      upServer.close();
      proxyServer.close();
    },
  };
}

/** Everything a socket receives until EOF or close, with its sha256. */
function collect(s: net.Socket): Promise<{ bytes: number; sha256: string; data: Buffer[] }> {
  const h = createHash('sha256');
  const data: Buffer[] = [];
  let bytes = 0;
  s.on('data', (c: Buffer) => {
    bytes += c.length;
    h.update(c);
    if (data.length < 64) data.push(c);
  });
  return new Promise((resolve) => {
    const finish = () => resolve({ bytes, sha256: h.digest('hex'), data });
    s.once('end', finish);
    s.once('close', () => {
      if (!s.readableEnded) finish();
    });
    s.on('error', () => {});
  });
}

async function writeAll(s: net.Socket, data: Buffer, chunk = MB): Promise<void> {
  for (let off = 0; off < data.length; off += chunk) {
    if (!s.write(data.subarray(off, off + chunk))) await once(s, 'drain');
  }
}

function sha256(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

function openFds(): number {
  return readdirSync('/proc/self/fd').length;
}

for (const engine of ['js', 'native'] as const) {
  describe(`relay engine: ${engine}`, () => {
    const relay = selectRelay(engine);

    test('8 MiB each way arrive intact and the summary counts them', async (t) => {
      const r = await relayed(relay);
      t.after(() => r.close());
      const up = randomBytes(8 * MB);
      const down = randomBytes(8 * MB);
      const atServer = collect(r.server);
      const atClient = collect(r.client);
      await Promise.all([writeAll(r.client, up).then(() => r.client.end()), writeAll(r.server, down).then(() => r.server.end())]);
      const [s, c] = await Promise.all([atServer, atClient]);
      assert.equal(s.bytes, 8 * MB);
      assert.equal(s.sha256, sha256(up));
      assert.equal(c.bytes, 8 * MB);
      assert.equal(c.sha256, sha256(down));
      const summary = await r.done;
      assert.equal(summary.fromDownstream, 8 * MB);
      assert.equal(summary.fromUpstream, 8 * MB);
      assert.equal(summary.error, undefined);
      assert.deepEqual(r.ctx.bytes, { fromDownstream: 8 * MB, fromUpstream: 8 * MB });
    });

    test('half-close: the server still sends 1 MiB after the client ended its side', async (t) => {
      const r = await relayed(relay);
      t.after(() => r.close());
      const reply = randomBytes(MB);
      const atClient = collect(r.client);
      r.server.on('data', () => {});
      r.server.once('end', () => {
        // The client's FIN arrived: answer after it, then close our side.
        r.server.end(reply);
      });
      r.client.end(Buffer.from('request'));
      const c = await atClient;
      assert.equal(c.bytes, MB);
      assert.equal(c.sha256, sha256(reply));
      const summary = await r.done;
      assert.equal(summary.endedBy, 'downstream');
      assert.equal(summary.fromDownstream, 7);
      assert.equal(summary.fromUpstream, MB);
    });

    test('downstreamHead, then bytes the proxy already read, then the rest arrive in order', async (t) => {
      const r = await relayed(relay, { downstreamHead: Buffer.from('HEAD|') }, async (client) => {
        // Written before the handover: Node reads these into the downstream socket's buffer.
        client.write('early|');
        await sleep(50);
      });
      t.after(() => r.close());
      const atServer = collect(r.server);
      r.server.end();
      r.client.end('late');
      const s = await atServer;
      assert.equal(Buffer.concat(s.data).toString(), 'HEAD|early|late');
      const summary = await r.done;
      assert.equal(summary.fromDownstream, 'HEAD|early|late'.length);
    });

    test('an upstream reset destroys the downstream and is reported', async (t) => {
      const r = await relayed(relay);
      t.after(() => r.close());
      // The relay destroys (closes) the downstream: the client sees its FIN, or a reset.
      const clientClosed = new Promise<void>((resolve) => {
        r.client.once('end', resolve).once('close', resolve);
      });
      r.client.on('error', () => {});
      r.client.write('hello');
      await once(r.server, 'data');
      r.server.resetAndDestroy();
      await clientClosed;
      const summary = await r.done;
      assert.equal(summary.endedBy, 'upstream');
      assert.ok(summary.error, 'the reset is the error that ended it');
      assert.equal((summary.error as NodeJS.ErrnoException).code, 'ECONNRESET');
    });

    test('idle timeout closes both sides with endedBy proxy', async (t) => {
      const r = await relayed(relay, { idleTimeoutMs: 200 });
      t.after(() => r.close());
      r.client.on('error', () => {});
      r.server.on('error', () => {});
      const started = performance.now();
      const ended = (s: net.Socket) => new Promise<void>((resolve) => s.once('end', resolve).once('close', resolve).resume());
      await Promise.all([ended(r.client), ended(r.server)]);
      const summary = await r.done;
      assert.equal(summary.endedBy, 'proxy');
      assert.equal((summary.error as NodeJS.ErrnoException | undefined)?.code, 'MPX_ERR_IDLE_TIMEOUT');
      assert.ok(performance.now() - started >= 190, 'not before the timeout');
    });

    test('backpressure: a paused client holds the server back; the relay buffers a bounded amount', async (t) => {
      const r = await relayed(relay);
      t.after(() => r.close());
      const total = 64 * MB;
      const block = randomBytes(MB);
      let accepted = 0;
      const writer = (async () => {
        for (let i = 0; i < total / MB; i++) {
          if (!r.server.write(block)) await once(r.server, 'drain');
          accepted += MB;
        }
        r.server.end();
      })();
      r.client.pause();
      const rss0 = process.memoryUsage().rss;
      await sleep(1500);
      const stalledAt = accepted;
      const counters0 = nativeRelayCounters(r.ctx)?.fromUpstream;
      await sleep(300);
      // Kernel buffers on both loopback connections (tcp_wmem/tcp_rmem maxima) plus one relay
      // buffer: some MiB, far from the 64 MiB a relay without backpressure would swallow.
      assert.ok(stalledAt < 40 * MB, `the server got ${stalledAt / MB} MiB out while the client read nothing`);
      assert.equal(accepted, stalledAt, 'no progress while the client is paused');
      if (engine === 'native') {
        assert.ok(counters0 !== undefined && counters0 > 0, 'the native engine carries this connection');
        assert.equal(nativeRelayCounters(r.ctx)?.fromUpstream, counters0, 'relayStats stops advancing');
      }
      assert.ok(process.memoryUsage().rss - rss0 < 48 * MB, 'RSS did not grow with the backlog');
      const atClient = collect(r.client);
      r.client.end();
      r.client.resume();
      const c = await atClient;
      await writer;
      assert.equal(c.bytes, total);
      assert.equal((await r.done).fromUpstream, total);
    });

    test('no fd is left open after 100 short relays', async () => {
      const once1 = async () => {
        const r = await relayed(relay);
        r.server.on('data', (c: Buffer) => r.server.write(c));
        r.server.once('end', () => r.server.end());
        const atClient = collect(r.client);
        r.client.end('ping');
        assert.equal(Buffer.concat((await atClient).data).toString(), 'ping');
        await r.done;
        r.close();
        await sleep(1);
      };
      await once1(); // starts the native engine (its epoll fd and eventfd live on)
      await sleep(50);
      const before = openFds();
      for (let i = 0; i < 100; i++) await once1();
      await sleep(100);
      assert.ok(openFds() <= before, `fds before ${before}, after ${openFds()}`);
    });
  });
}

/** An MPTCP client → MPTCP proxy socket pair, plus a plain TCP proxy → server pair. */
interface MptcpPairs {
  client: net.Socket;
  down: net.Socket;
  up: net.Socket;
  server: net.Socket;
}

async function mptcpServers(): Promise<{ proxy: net.Server; upServer: net.Server; close(): void }> {
  const proxy = net.createServer({ allowHalfOpen: true });
  const r = await listenMptcp(proxy, { host: HOST, port: 0, mode: 'on' });
  assert.equal(r.mptcp, true);
  const upServer = await listen();
  return {
    proxy,
    upServer,
    close() {
      proxy.close();
      upServer.close();
    },
  };
}

async function mptcpPairs(proxy: net.Server, upServer: net.Server): Promise<MptcpPairs> {
  const downP = once(proxy, 'connection');
  const client = connectMptcp({ host: HOST, port: portOf(proxy), mptcp: true });
  await once(client, 'connect');
  const [down] = (await downP) as [net.Socket];
  const serverP = once(upServer, 'connection');
  const up = net.connect({ host: HOST, port: portOf(upServer), allowHalfOpen: true });
  await once(up, 'connect');
  const [server] = (await serverP) as [net.Socket];
  return { client, down, up, server };
}

function mptcpContext(p: MptcpPairs): ConnectionContext {
  return createConnectionContext({
    listener: 'test',
    frontend: 'tcp-forward',
    downstream: { remote: { address: HOST, port: p.client.localPort ?? 0 }, local: { address: HOST, port: p.down.localPort ?? 0 }, mptcp: true },
    log: silent,
  });
}

describe('native relay: MPTCP downstream', () => {
  const skip = !mptcpSupport().available || loadNativeRelayEngine() === undefined;
  const relay = selectRelay('native');

  test('the engine samples the client subflows itself and reports them in the summary', { skip }, async (t) => {
    const engine = loadNativeRelayEngine()!;
    const servers = await mptcpServers();
    t.after(() => servers.close());
    const p = await mptcpPairs(servers.proxy, servers.upServer);
    t.after(() => [p.client, p.down, p.up, p.server].forEach((s) => s.destroy()));
    const expected = `${HOST}:${p.down.localPort} -> ${HOST}:${p.client.localPort}`;
    for (const sample of [true, false]) {
      const q = sample ? p : await mptcpPairs(servers.proxy, servers.upServer);
      if (!sample) t.after(() => [q.client, q.down, q.up, q.server].forEach((s) => s.destroy()));
      const fdDown = engine.dup(socketFd(q.down));
      const fdUp = engine.dup(socketFd(q.up));
      const done = new Promise<NativeRelaySummary>((resolve) => engine.relayStart(fdDown, fdUp, null, null, 0, resolve, sample));
      q.down.destroy();
      q.up.destroy();
      q.server.on('data', (c: Buffer) => q.server.write(c));
      q.server.once('end', () => q.server.end());
      const atClient = collect(q.client);
      q.client.end('ping');
      assert.equal(Buffer.concat((await atClient).data).toString(), 'ping');
      const s = await done;
      if (sample) assert.deepEqual(s.downstreamSubflows, { count: 1, paths: [expected] });
      else assert.equal(s.downstreamSubflows, undefined, 'no sample unless asked');
    }
  });

  test('after the relay ends, ctx holds one subflow and its path', { skip }, async (t) => {
    const servers = await mptcpServers();
    t.after(() => servers.close());
    const p = await mptcpPairs(servers.proxy, servers.upServer);
    t.after(() => [p.client, p.server].forEach((s) => s.destroy()));
    const ctx = mptcpContext(p);
    const expected = `${HOST}:${portOf(servers.proxy)} -> ${HOST}:${p.client.localPort}`;
    const done = relay(p.down, p.up, ctx);
    p.server.on('data', (c: Buffer) => p.server.write(c));
    p.server.once('end', () => p.server.end());
    const atClient = collect(p.client);
    p.client.end('ping');
    assert.equal(Buffer.concat((await atClient).data).toString(), 'ping');
    const summary = await done;
    assert.equal(summary.endedBy, 'downstream');
    assert.equal(ctx.downstreamSubflows, 1);
    assert.deepEqual(ctx.downstreamPaths, [expected]);
  });

  test('a live relay holds 2 fds (the two dups), not 3', { skip }, async (t) => {
    const servers = await mptcpServers();
    t.after(() => servers.close());
    const N = 20;
    // Start the engine first (its epoll fd and eventfd live on).
    {
      const p = await mptcpPairs(servers.proxy, servers.upServer);
      const done = relay(p.down, p.up, mptcpContext(p));
      p.client.destroy();
      p.server.destroy();
      await done;
    }
    await sleep(50);
    const before = openFds();
    const live: Array<{ p: MptcpPairs; ctx: ConnectionContext; done: Promise<RelaySummary> }> = [];
    for (let i = 0; i < N; i++) {
      const p = await mptcpPairs(servers.proxy, servers.upServer);
      const ctx = mptcpContext(p);
      live.push({ p, ctx, done: relay(p.down, p.up, ctx) });
    }
    for (const { ctx } of live) while (nativeRelayCounters(ctx) === undefined) await sleep(5);
    await sleep(50);
    const during = openFds();
    // Each connection: the test's client and server sockets, plus what the proxy side holds.
    const proxySide = (during - before - 2 * N) / N;
    for (const { p } of live) {
      p.client.destroy();
      p.server.destroy();
    }
    await Promise.all(live.map((l) => l.done));
    await sleep(100);
    assert.equal(proxySide, 2, `fds per live relay on the proxy side: ${proxySide} (before ${before}, during ${during}, N ${N})`);
    assert.ok(openFds() <= before, `fds before ${before}, after ${openFds()}`);
  });
});
