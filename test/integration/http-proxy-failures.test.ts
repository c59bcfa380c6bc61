/**
 * The HTTP front-end when one side dies or misbehaves mid-message: the other side is closed
 * cleanly, nothing leaks, and the proxy keeps serving.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { collectUntilClose, curl, rawExchange, readUntil, startHttpProxy, startOrigin, startTcpOrigin } from '../helpers/http-proxy-harness.js';
import { fullListener } from '../helpers/full-listener.js';
import { ErrorCode } from '../../src/core/errors.js';

test('the origin handler sees exactly the forwarded head: origin-form, Host, Via, no hop-by-hop fields', async (t) => {
  t.plan(6);
  const origin = await startOrigin((req, res) => {
    t.assert.equal(req.url, '/planned?x=1');
    t.assert.equal(req.headers.via, '1.1 mptcp-proxy-test');
    t.assert.equal(req.headers['x-hop'], undefined, 'a field named in Connection is removed');
    t.assert.equal(req.headers['keep-alive'], undefined);
    t.assert.equal(req.headers['x-end-to-end'], 'kept');
    res.end('ok');
  });
  const proxy = await startHttpProxy();
  t.after(async () => {
    await proxy.close();
    await origin.close();
  });
  const raw = await rawExchange(
    proxy.port,
    `GET http://127.0.0.1:${origin.port}/planned?x=1 HTTP/1.1\r\nHost: elsewhere\r\nConnection: close, X-Hop\r\nKeep-Alive: 5\r\nX-Hop: 1\r\nX-End-To-End: kept\r\n\r\n`,
  );
  t.assert.match(raw, /\r\n\r\nok$/);
});

test('a client that dies mid-request-body makes the proxy close the upstream request', async (t) => {
  t.plan(2);
  let aborted!: () => void;
  const upstreamClosed = new Promise<void>((resolve) => {
    aborted = resolve;
  });
  const origin = await startOrigin((req) => {
    req.on('data', () => {});
    req.on('close', () => {
      t.assert.equal(req.complete, false, 'the origin saw an incomplete body');
      aborted();
    });
  });
  const proxy = await startHttpProxy();
  t.after(async () => {
    await proxy.close();
    await origin.close();
  });
  const socket = net.connect(proxy.port, '127.0.0.1');
  await once(socket, 'connect');
  socket.write(`POST http://127.0.0.1:${origin.port}/upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n${'a'.repeat(1000)}`);
  await sleep(100);
  socket.destroy();
  await upstreamClosed;
  await proxy.settled();
  t.assert.equal(proxy.contexts[0]!.bytes.fromDownstream > 1000, true);
});

test('a client that goes away while the origin is slow makes the proxy close the upstream connection', async (t) => {
  t.plan(1);
  let closed!: () => void;
  const upstreamClosed = new Promise<void>((resolve) => {
    closed = resolve;
  });
  const origin = await startOrigin((req) => {
    req.socket.on('close', () => {
      t.assert.equal(true, true, 'upstream socket closed before any response');
      closed();
    });
  });
  const proxy = await startHttpProxy();
  t.after(async () => {
    await proxy.close();
    await origin.close();
  });
  const socket = net.connect(proxy.port, '127.0.0.1');
  await once(socket, 'connect');
  socket.write(`GET http://127.0.0.1:${origin.port}/slow HTTP/1.1\r\nHost: x\r\n\r\n`);
  await sleep(100);
  socket.destroy();
  await upstreamClosed;
  await proxy.settled();
});

test('an origin that dies mid-body makes the proxy close the client connection (no 502 after the head)', async (t) => {
  const origin = await startOrigin((req, res) => {
    res.setHeader('Content-Length', '1000');
    res.write('x'.repeat(10));
    setTimeout(() => req.socket.destroy(), 50);
  });
  const proxy = await startHttpProxy();
  t.after(async () => {
    await proxy.close();
    await origin.close();
  });
  const raw = await rawExchange(proxy.port, `GET http://127.0.0.1:${origin.port}/ HTTP/1.1\r\nHost: x\r\n\r\n`);
  assert.match(raw, /^HTTP\/1\.1 200 OK\r\n/);
  assert.ok(raw.endsWith('\r\n\r\n' + 'x'.repeat(10)), 'truncated body, then close');
  assert.doesNotMatch(raw, /502/);
});

test('an upstream keep-alive connection the origin closed while idle is replaced by a new dial', async (t) => {
  const origin = await startOrigin((req, res) => res.end(`hi ${req.url}`));
  const proxy = await startHttpProxy();
  t.after(async () => {
    await proxy.close();
    await origin.close();
  });
  const socket = net.connect(proxy.port, '127.0.0.1');
  await once(socket, 'connect');
  t.after(() => socket.destroy());
  socket.write(`GET http://127.0.0.1:${origin.port}/1 HTTP/1.1\r\nHost: x\r\n\r\n`);
  await readUntil(socket, (s) => s.endsWith('hi /1'));
  // Close the origin's side of the idle upstream connection, as its keepAliveTimeout would.
  await sleep(20);
  origin.server.closeIdleConnections();
  await sleep(50);
  socket.write(`GET http://127.0.0.1:${origin.port}/2 HTTP/1.1\r\nHost: x\r\n\r\n`);
  const second = await readUntil(socket, (s) => s.endsWith('hi /2'));
  assert.match(second, /^HTTP\/1\.1 200 OK\r\n/);
  assert.equal(origin.connections, 2);
});

test('a malformed response from the origin becomes a 502', async (t) => {
  const bogus = await startTcpOrigin((s) => {
    s.once('data', () => s.end('HTTP/1.1 2OO OK\r\n\r\n'));
  });
  const port = bogus.port;
  const proxy = await startHttpProxy();
  t.after(async () => {
    await proxy.close();
    bogus.close();
  });
  const raw = await rawExchange(proxy.port, `GET http://127.0.0.1:${port}/ HTTP/1.1\r\nHost: x\r\n\r\n`);
  assert.match(raw, /^HTTP\/1\.1 502 Bad Gateway\r\n/);
});

test('a response with conflicting Content-Length becomes a 502 (RFC 9112 §6.3)', async (t) => {
  const bogus = await startTcpOrigin((s) => {
    s.once('data', () => s.end('HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc'));
  });
  const port = bogus.port;
  const proxy = await startHttpProxy();
  t.after(async () => {
    await proxy.close();
    bogus.close();
  });
  const r = await curl(proxy.port, ['-i', `http://127.0.0.1:${port}/`]);
  assert.match(r.stdout, /^HTTP\/1\.1 502 /);
});

test('a close-delimited response is forwarded and the client connection is closed after it', async (t) => {
  const legacy = await startTcpOrigin((s) => {
    s.once('data', () => s.end('HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil close'));
  });
  const port = legacy.port;
  const proxy = await startHttpProxy();
  t.after(async () => {
    await proxy.close();
    legacy.close();
  });
  const socket = net.connect(proxy.port, '127.0.0.1');
  await once(socket, 'connect');
  socket.write(`GET http://127.0.0.1:${port}/ HTTP/1.1\r\nHost: x\r\n\r\n`);
  const raw = await collectUntilClose(socket, 3000);
  assert.match(raw, /^HTTP\/1\.1 200 OK\r\n[\s\S]*Connection: close\r\n\r\nuntil close$/);
});


test('a malformed chunked request body is a 400 when no response has started', async (t) => {
  const origin = await startOrigin((req, res) => {
    req.on('data', () => {});
    req.on('end', () => res.end('unexpected'));
  });
  const proxy = await startHttpProxy();
  t.after(async () => {
    await proxy.close();
    await origin.close();
  });
  const raw = await rawExchange(
    proxy.port,
    `POST http://127.0.0.1:${origin.port}/ HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nZZ\r\n`,
  );
  assert.match(raw, /^HTTP\/1\.1 400 Bad Request\r\n/);
});

test('an origin that accepts the request but never answers gets a 504 after the idle timeout, and the proxy serves the next request', async (t) => {
  const stalled = await startTcpOrigin((socket) => socket.resume());
  const stalledPort = stalled.port;
  const origin = await startOrigin((_req, res) => res.end('fine'));
  const proxy = await startHttpProxy({ idleTimeoutMs: 300 });
  t.after(async () => {
    await proxy.close();
    await origin.close();
    stalled.close();
  });
  const started = performance.now();
  const raw = await rawExchange(proxy.port, `GET http://127.0.0.1:${stalledPort}/ HTTP/1.1\r\nHost: x\r\n\r\n`);
  assert.match(raw, /^HTTP\/1\.1 504 /);
  assert.ok(performance.now() - started >= 290, 'waited for the idle timeout');
  const ok = await curl(proxy.port, [`http://127.0.0.1:${origin.port}/`]);
  assert.equal(ok.stdout, 'fine');
});

test('each HTTP exchange is published on the request channel with its own status and byte counts', async (t) => {
  const { subscribe, unsubscribe } = await import('node:diagnostics_channel');
  const seen: Array<{ status?: number; url?: string; fromUpstream: number }> = [];
  const onRequest = (m: unknown) => seen.push(m as { status?: number; url?: string; fromUpstream: number });
  subscribe('mptcp-proxy:request:done', onRequest);
  const origin = await startOrigin((req, res) => res.end(req.url === '/a' ? 'aaaa' : 'bb'));
  const proxy = await startHttpProxy();
  t.after(async () => {
    unsubscribe('mptcp-proxy:request:done', onRequest);
    await proxy.close();
    await origin.close();
  });
  await curl(proxy.port, [`http://127.0.0.1:${origin.port}/a`, `http://127.0.0.1:${origin.port}/b`]);
  const mine = seen.filter((m) => m.url?.includes(`:${origin.port}/`));
  assert.deepEqual(mine.map((m) => [m.url?.slice(-2), m.status]), [['/a', 200], ['/b', 200]]);
  assert.ok(mine[0]!.fromUpstream > 4 && mine[1]!.fromUpstream > 2, 'each exchange counts its own response bytes');
  assert.ok(mine[0]!.fromUpstream - mine[1]!.fromUpstream === 2, 'the bodies differ by two bytes, and so do the counts');
});

test('an origin whose handshake never completes: 504 at connectTimeoutMs, logged as CONNECT_TIMEOUT (the head was queued on the connecting socket)', async (t) => {
  const hole = await fullListener();
  const proxy = await startHttpProxy();
  t.after(async () => {
    hole.close();
    await proxy.close();
  });
  const started = performance.now();
  const reply = await rawExchange(proxy.port, `GET http://127.0.0.1:${hole.port}/ HTTP/1.1\r\nHost: x\r\n\r\n`, 10_000);
  const took = performance.now() - started;
  assert.match(reply, /^HTTP\/1\.1 504 Gateway Timeout\r\n/);
  // The harness dials with connectTimeoutMs 2000.
  assert.ok(took >= 1900 && took < 6000, `answered after ${took.toFixed(0)} ms`);
  const line = proxy.logs.map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => l.status === 504);
  assert.equal(line?.code, ErrorCode.CONNECT_TIMEOUT);
});
