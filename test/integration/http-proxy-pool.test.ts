/**
 * The HTTP front-end's per-listener idle upstream pool, on loopback: separate client
 * connections (one curl run each, one request each, `Connection: close`) to the same origin
 * share one upstream connection; the pool's limits on reuse (bodies, closed or chatty idle
 * connections, idle timeout) and per-session accounting.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import type net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { curl, readBody, startHttpProxy, startOrigin, startTcpOrigin } from '../helpers/http-proxy-harness.js';
import type { HttpProxyHarness, HttpProxyOptions, OriginServer } from '../helpers/http-proxy-harness.js';

interface Setup {
  origin: OriginServer;
  proxy: HttpProxyHarness;
  base: string;
  /** Upstream connections the origin has seen close. */
  closed: () => number;
}

async function setup(t: { after: (fn: () => Promise<void> | void) => void }, opts: HttpProxyOptions = {}): Promise<Setup> {
  const origin = await startOrigin((req, res) => {
    if ((req.url ?? '').startsWith('/echo')) {
      void readBody(req).then((body) => res.end(`len=${body.length} sha=${createHash('sha256').update(body).digest('hex')}`));
      return;
    }
    res.end(`hello ${req.url}`);
  });
  let closed = 0;
  origin.server.on('connection', (s: net.Socket) => s.on('close', () => (closed += 1)));
  const proxy = await startHttpProxy(opts);
  t.after(async () => {
    await proxy.close();
    await origin.close();
  });
  return { origin, proxy, base: `http://127.0.0.1:${origin.port}`, closed: () => closed };
}

/** One client connection, one request, then the client closes; waits for the session to end. */
async function once(s: Setup, path: string, args: string[] = []): Promise<string> {
  const r = await curl(s.proxy.port, ['-H', 'Connection: close', ...args, `${s.base}${path}`]);
  assert.equal(r.code, 0, r.stderr);
  await s.proxy.settled();
  return r.stdout;
}

test('two client connections in a row to one origin share one upstream connection', async (t) => {
  const s = await setup(t);
  assert.equal(await once(s, '/a'), 'hello /a');
  assert.equal(await once(s, '/b'), 'hello /b');
  assert.equal(s.proxy.contexts.length, 2, 'two client connections');
  assert.equal(s.origin.connections, 1, 'one upstream connection');
  assert.equal(s.origin.requests.length, 2);
});

test('upstreamIdleTimeoutMs 0 disables the pool', async (t) => {
  const s = await setup(t, { cfg: { upstreamIdleTimeoutMs: 0 } });
  assert.equal(await once(s, '/a'), 'hello /a');
  assert.equal(await once(s, '/b'), 'hello /b');
  assert.equal(s.origin.connections, 2);
});

test('an idle pooled connection the origin closes is dropped; the next request dials a new one', async (t) => {
  const s = await setup(t);
  assert.equal(await once(s, '/a'), 'hello /a');
  s.origin.server.closeIdleConnections();
  await sleep(50);
  assert.equal(s.closed(), 1);
  assert.equal(await once(s, '/b'), 'hello /b');
  assert.equal(s.origin.connections, 2);
});

test('a pooled connection the origin drops as the request arrives: the request is retried on a fresh dial', async (t) => {
  let connections = 0;
  const origin = await startTcpOrigin((sock) => {
    connections += 1;
    let requests = 0;
    sock.on('error', () => {});
    sock.on('data', () => {
      requests += 1;
      // The second request on a connection finds it "closed at the same moment".
      if (requests > 1) sock.destroy();
      else sock.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok');
    });
  });
  const proxy = await startHttpProxy();
  t.after(async () => {
    await proxy.close();
    origin.close();
  });
  for (const path of ['/a', '/b']) {
    const r = await curl(proxy.port, ['-H', 'Connection: close', `http://127.0.0.1:${origin.port}${path}`]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, 'ok');
    await proxy.settled();
  }
  assert.equal(connections, 2);
});

test('an idle pooled connection that sends bytes is destroyed, not reused', async (t) => {
  let connections = 0;
  let closed = 0;
  const origin = await startTcpOrigin((sock) => {
    connections += 1;
    sock.on('error', () => {});
    sock.on('close', () => (closed += 1));
    sock.once('data', () => {
      sock.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok');
      setTimeout(() => sock.write('unsolicited'), 30);
    });
  });
  const proxy = await startHttpProxy();
  t.after(async () => {
    await proxy.close();
    origin.close();
  });
  const url = `http://127.0.0.1:${origin.port}/`;
  assert.equal((await curl(proxy.port, ['-H', 'Connection: close', url])).stdout, 'ok');
  await proxy.settled();
  await sleep(100);
  assert.equal(closed, 1, 'the proxy closed the chatty idle connection');
  assert.equal((await curl(proxy.port, ['-H', 'Connection: close', url])).stdout, 'ok');
  assert.equal(connections, 2);
});

test('a POST after pooled GETs dials a new connection and its body arrives intact', async (t) => {
  const s = await setup(t);
  assert.equal(await once(s, '/a'), 'hello /a');
  assert.equal(await once(s, '/b'), 'hello /b');
  assert.equal(s.origin.connections, 1);
  const body = Buffer.alloc(200_000, 'p');
  const r = await curl(s.proxy.port, ['-H', 'Connection: close', '--data-binary', '@-', `${s.base}/echo`], body);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, `len=${body.length} sha=${createHash('sha256').update(body).digest('hex')}`);
  assert.equal(s.origin.connections, 2, 'the POST did not take the pooled connection');
  await s.proxy.settled();
  // Both connections are now parked; a GET takes one of them.
  assert.equal(await once(s, '/c'), 'hello /c');
  assert.equal(s.origin.connections, 2);
});

test('the idle timeout closes a pooled connection', async (t) => {
  const s = await setup(t, { cfg: { upstreamIdleTimeoutMs: 150 } });
  assert.equal(await once(s, '/a'), 'hello /a');
  assert.equal(s.closed(), 0);
  await sleep(400);
  assert.equal(s.closed(), 1, 'the origin saw the pooled connection close');
  assert.equal(await once(s, '/b'), 'hello /b');
  assert.equal(s.origin.connections, 2);
});

test('a session that reuses a pooled connection gets its own bytes, upstream facts and access fields', async (t) => {
  const s = await setup(t);
  assert.equal(await once(s, '/first'), 'hello /first');
  const [c0] = s.proxy.contexts;
  const first = { ...c0!.bytes };
  assert.ok(first.fromUpstream > 'hello /first'.length);
  assert.equal(await once(s, '/second-longer-path'), 'hello /second-longer-path');
  assert.equal(s.origin.connections, 1);
  const c1 = s.proxy.contexts[1]!;
  assert.deepEqual({ ...c0!.bytes }, first, 'the first session counted nothing more');
  // Same response head shape (both Content-Lengths have two digits), body longer by the path.
  assert.equal(c1.bytes.fromUpstream, first.fromUpstream + '/second-longer-path'.length - '/first'.length);
  assert.ok(c1.bytes.fromDownstream > 0);
  assert.equal(c1.upstream?.remote.port, s.origin.port);
  assert.deepEqual(c1.upstream, c0!.upstream, 'same upstream socket facts');
  assert.equal(c1.access.status, 200);
  assert.equal(c1.access.url, `${s.base}/second-longer-path`);
  assert.equal(c1.access.requests, 1);
});
