/**
 * The HTTP front-end end to end on loopback: real curl and raw sockets as clients, real Node
 * http/https servers as origins, the real dialer, relay and access policy in between.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import https from 'node:https';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { ErrorCode, UpstreamError } from '../../src/core/errors.js';
import {
  basicAuthPolicy,
  closedPort,
  collectUntilClose,
  curl,
  logLinesWithStatus,
  rawExchange,
  readBody,
  readUntil,
  startHttpProxy,
  startOrigin,
} from '../helpers/http-proxy-harness.js';
import type { HttpProxyHarness, OriginServer } from '../helpers/http-proxy-harness.js';

/** A default origin: /echo echoes the body's length and sha256; /chunked streams chunks;
 *  /204, /304 and /head-info have no body; /big sends 5 MiB. */
async function defaultOrigin(): Promise<OriginServer> {
  return startOrigin((req, res) => {
    const url = req.url ?? '/';
    if (url.startsWith('/echo')) {
      void readBody(req).then((body) => {
        res.setHeader('Content-Type', 'text/plain');
        res.end(`len=${body.length} sha=${createHash('sha256').update(body).digest('hex')} te=${req.headers['transfer-encoding'] ?? '-'}`);
      });
      return;
    }
    if (url === '/chunked') {
      res.setHeader('Content-Type', 'text/plain');
      res.write('first-');
      setTimeout(() => {
        res.write('second-');
        res.end('third');
      }, 20);
      return;
    }
    if (url === '/204') {
      res.statusCode = 204;
      res.end();
      return;
    }
    if (url === '/304') {
      res.statusCode = 304;
      res.setHeader('ETag', '"v1"');
      res.end();
      return;
    }
    if (url === '/big') {
      res.setHeader('Content-Length', String(5 * 1024 * 1024));
      res.end(Buffer.alloc(5 * 1024 * 1024, 0x61));
      return;
    }
    if (url === '/drop') {
      req.socket.destroy();
      return;
    }
    res.setHeader('Content-Type', 'text/plain');
    res.setHeader('Content-Length', String(`hello ${url}`.length));
    res.end(req.method === 'HEAD' ? undefined : `hello ${url}`);
  });
}

async function setup(t: { after(fn: () => Promise<void> | void): void }, opts: Parameters<typeof startHttpProxy>[0] = {}) {
  const origin = await defaultOrigin();
  const proxy = await startHttpProxy(opts);
  t.after(async () => {
    await proxy.close();
    await origin.close();
  });
  return { origin, proxy, base: `http://127.0.0.1:${origin.port}` };
}

/** After an error, the same proxy must still serve the next client normally. */
async function assertStillServes(proxy: HttpProxyHarness, base: string): Promise<void> {
  const r = await curl(proxy.port, [`${base}/after-error`]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, 'hello /after-error');
}

test('GET through the proxy reaches the origin in origin-form with Host, Via and no proxy headers', async (t) => {
  const { origin, proxy, base } = await setup(t);
  const r = await curl(proxy.port, ['-H', 'Proxy-Connection: keep-alive', `${base}/a/b?c=d`]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, 'hello /a/b?c=d');
  const seen = origin.requests[0]!;
  assert.equal(seen.url, '/a/b?c=d');
  assert.equal(seen.headers.host, `127.0.0.1:${origin.port}`);
  assert.equal(seen.headers.via, '1.1 mptcp-proxy-test');
  assert.equal(seen.headers['proxy-connection'], undefined);
  await proxy.settled();
  const ctx = proxy.contexts[0]!;
  assert.equal(ctx.access.method, 'GET');
  assert.equal(ctx.access.status, 200);
  assert.deepEqual(ctx.target, { host: '127.0.0.1', port: origin.port });
  assert.ok(ctx.bytes.fromDownstream > 0 && ctx.bytes.fromUpstream > 0);
});

test('POST with Content-Length forwards the body byte for byte (1 MiB)', async (t) => {
  const { proxy, base } = await setup(t);
  const body = Buffer.alloc(1024 * 1024, 0x5a);
  const sha = createHash('sha256').update(body).digest('hex');
  const r = await curl(proxy.port, ['--data-binary', '@-', '-H', 'Content-Type: application/octet-stream', `${base}/echo`], body);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, `len=${body.length} sha=${sha} te=-`);
});

test('POST chunked is forwarded with its chunk framing unchanged', async (t) => {
  const { proxy, base } = await setup(t);
  const body = Buffer.from('x'.repeat(100_000));
  const sha = createHash('sha256').update(body).digest('hex');
  const r = await curl(proxy.port, ['-H', 'Transfer-Encoding: chunked', '--data-binary', '@-', `${base}/echo`], body);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, `len=${body.length} sha=${sha} te=chunked`);
});

test('a chunked response reaches the client still chunked, and complete', async (t) => {
  const { proxy, base } = await setup(t);
  const r = await curl(proxy.port, [`${base}/chunked`]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, 'first-second-third');
  const raw = await rawExchange(proxy.port, `GET ${base}/chunked HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
  assert.match(raw, /^HTTP\/1\.1 200 OK\r\n/);
  assert.match(raw, /\r\nTransfer-Encoding: chunked\r\n/i);
  assert.match(raw, /\r\nConnection: close\r\n/);
  assert.ok(raw.endsWith('\r\n0\r\n\r\n'), JSON.stringify(raw.slice(-20)));
});

test('an HTTP/1.0 client gets a chunked response decoded and delimited by close', async (t) => {
  const { proxy, base } = await setup(t);
  const raw = await rawExchange(proxy.port, `GET ${base}/chunked HTTP/1.0\r\n\r\n`);
  const [head, body] = raw.split('\r\n\r\n');
  assert.doesNotMatch(head!, /Transfer-Encoding/i);
  assert.match(head!, /\r\nVia: 1\.1 mptcp-proxy-test\r\n/);
  assert.equal(body, 'first-second-third');
});

test('keep-alive: two URLs in one curl run share one client connection and one upstream connection', async (t) => {
  const { origin, proxy, base } = await setup(t);
  const r = await curl(proxy.port, ['--write-out', '|%{num_connects}\n', `${base}/one`, `${base}/two`]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, 'hello /one|1\nhello /two|0\n');
  assert.equal(origin.connections, 1, 'the upstream connection was reused');
  assert.equal(proxy.contexts.length, 1, 'one client connection');
  await proxy.settled();
  assert.equal(proxy.contexts[0]!.access.requests, 2);
});

test('keep-alive to a different origin closes the old upstream connection and dials the new one', async (t) => {
  const { origin, proxy, base } = await setup(t);
  const other = await defaultOrigin();
  t.after(() => other.close());
  const r = await curl(proxy.port, ['--write-out', '|%{num_connects}\n', `${base}/one`, `http://127.0.0.1:${other.port}/two`]);
  assert.equal(r.stdout, 'hello /one|1\nhello /two|0\n');
  assert.equal(origin.connections, 1);
  assert.equal(other.connections, 1);
});

test('pipelining: three requests in one write get three responses in order', async (t) => {
  const { proxy, base } = await setup(t);
  const reqs =
    `GET ${base}/p1 HTTP/1.1\r\nHost: x\r\n\r\n` +
    `POST ${base}/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc` +
    `GET ${base}/p3 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`;
  const raw = await rawExchange(proxy.port, reqs);
  const statuses = raw.match(/HTTP\/1\.1 \d{3}/g);
  assert.deepEqual(statuses, ['HTTP/1.1 200', 'HTTP/1.1 200', 'HTTP/1.1 200']);
  const p1 = raw.indexOf('hello /p1');
  const echo = raw.indexOf(`len=3 sha=${createHash('sha256').update('abc').digest('hex')}`);
  const p3 = raw.indexOf('hello /p3');
  assert.ok(p1 > 0 && echo > p1 && p3 > echo, raw);
});

test('HEAD, 204 and 304 responses have no body, so the next pipelined response is intact', async (t) => {
  const { proxy, base } = await setup(t);
  const reqs =
    `HEAD ${base}/head-info HTTP/1.1\r\nHost: x\r\n\r\n` +
    `GET ${base}/204 HTTP/1.1\r\nHost: x\r\n\r\n` +
    `GET ${base}/304 HTTP/1.1\r\nHost: x\r\nIf-None-Match: "v1"\r\n\r\n` +
    `GET ${base}/last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`;
  const raw = await rawExchange(proxy.port, reqs);
  const parts = raw.split(/(?=HTTP\/1\.1 \d{3} )/);
  assert.equal(parts.length, 4, raw);
  assert.match(parts[0]!, /^HTTP\/1\.1 200 OK\r\n[\s\S]*Content-Length: 16\r\n[\s\S]*\r\n\r\n$/);
  assert.match(parts[1]!, /^HTTP\/1\.1 204 No Content\r\n[\s\S]*\r\n\r\n$/);
  assert.match(parts[2]!, /^HTTP\/1\.1 304 Not Modified\r\n[\s\S]*\r\n\r\n$/);
  assert.match(parts[3]!, /\r\n\r\nhello \/last$/);
  const head = await curl(proxy.port, ['-I', `${base}/head-info`]);
  assert.equal(head.code, 0, head.stderr);
  assert.match(head.stdout, /^HTTP\/1\.1 200 OK/);
});

test('a 5 MiB response is forwarded completely (backpressure towards a slow reader)', async (t) => {
  const { proxy, base } = await setup(t);
  const socket = net.connect(proxy.port, '127.0.0.1');
  await once(socket, 'connect');
  socket.write(`GET ${base}/big HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
  socket.pause();
  await sleep(200); // let the proxy hit a full socket buffer
  socket.resume();
  const raw = await collectUntilClose(socket, 10_000);
  const body = raw.slice(raw.indexOf('\r\n\r\n') + 4);
  assert.equal(body.length, 5 * 1024 * 1024);
});

test('Expect: 100-continue gets the interim response forwarded, then the final one', async (t) => {
  const { proxy, base } = await setup(t);
  const socket = net.connect(proxy.port, '127.0.0.1');
  await once(socket, 'connect');
  t.after(() => socket.destroy());
  socket.write(`POST ${base}/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n`);
  const interim = await readUntil(socket, (s) => s.includes('\r\n\r\n'));
  assert.match(interim, /^HTTP\/1\.1 100 Continue\r\n/);
  socket.write('hello');
  const final = await readUntil(socket, (s) => s.includes('len=5'));
  assert.match(final, /HTTP\/1\.1 200 OK/);
});

function opensslAvailable(): boolean {
  try {
    execFileSync('openssl', ['version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

test('CONNECT to a local TLS server: curl gets the https page through the tunnel', { skip: !opensslAvailable() && 'openssl not installed' }, async (t) => {
  const { proxy } = await setup(t);
  const dir = mkdtempSync(join(tmpdir(), 'mptcp-proxy-tls-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  execFileSync('openssl', [
    'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=127.0.0.1',
    '-addext', 'subjectAltName=IP:127.0.0.1',
    '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem'),
  ], { stdio: 'ignore' });
  const tlsServer = https.createServer({ key: readFileSync(join(dir, 'key.pem')), cert: readFileSync(join(dir, 'cert.pem')) }, (_req, res) => {
    res.end('secret over tls');
  });
  tlsServer.listen(0, '127.0.0.1');
  await once(tlsServer, 'listening');
  t.after(() => {
    tlsServer.closeAllConnections();
    tlsServer.close();
  });
  const port = (tlsServer.address() as AddressInfo).port;
  const r = await curl(proxy.port, ['--cacert', join(dir, 'cert.pem'), `https://127.0.0.1:${port}/`]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, 'secret over tls');
  await proxy.settled();
  assert.equal(proxy.contexts[0]!.access.method, 'CONNECT');
  assert.equal(proxy.contexts[0]!.access.status, 200);
});

test('CONNECT to a TCP echo server relays both ways, including bytes sent with the CONNECT head', async (t) => {
  const { proxy } = await setup(t);
  const echo = net.createServer((s) => s.pipe(s));
  echo.listen(0, '127.0.0.1');
  await once(echo, 'listening');
  t.after(() => echo.close());
  const port = (echo.address() as AddressInfo).port;
  const socket = net.connect(proxy.port, '127.0.0.1');
  await once(socket, 'connect');
  t.after(() => socket.destroy());
  socket.write(`CONNECT 127.0.0.1:${port} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n\r\nearly-bytes|`);
  const got = await readUntil(socket, (s) => s.includes('early-bytes|'));
  assert.ok(got.startsWith('HTTP/1.1 200 Connection established\r\n\r\n'), got);
  socket.write('later-bytes');
  await readUntil(socket, (s) => s.includes('later-bytes'));
  socket.end();
  await proxy.settled();
  const ctx = proxy.contexts[0]!;
  assert.equal(ctx.bytes.fromUpstream, 'early-bytes|later-bytes'.length);
  const connectHead = `CONNECT 127.0.0.1:${port} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n\r\n`;
  assert.equal(ctx.bytes.fromDownstream, connectHead.length + 'early-bytes|later-bytes'.length, 'head bytes counted once');
});

test('400 for a malformed request line, logged with its code; the proxy then serves the next client', async (t) => {
  const { proxy, base } = await setup(t);
  const raw = await rawExchange(proxy.port, 'GET  /x HTTP/1.1\r\n\r\n');
  assert.match(raw, /^HTTP\/1\.1 400 Bad Request\r\n/);
  assert.match(raw, /\r\nConnection: close\r\n/);
  assert.match(raw, /\r\nContent-Type: text\/plain; charset=utf-8\r\n/);
  await assertStillServes(proxy, base);
  assert.equal(logLinesWithStatus(proxy.logs, 400)[0]?.code, ErrorCode.BAD_REQUEST);
});

test('400 for origin-form says this is a proxy; 400 for https:// says use CONNECT; 400 for OPTIONS *', async (t) => {
  const { proxy, base } = await setup(t);
  assert.match(await rawExchange(proxy.port, 'GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n'), /^HTTP\/1\.1 400 [\s\S]*forward proxy/);
  assert.match(await rawExchange(proxy.port, 'GET https://example.com/ HTTP/1.1\r\nHost: x\r\n\r\n'), /^HTTP\/1\.1 400 [\s\S]*CONNECT/);
  assert.match(await rawExchange(proxy.port, 'OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n'), /^HTTP\/1\.1 400 /);
  assert.match(await rawExchange(proxy.port, `POST ${base}/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\nabc`), /^HTTP\/1\.1 400 /);
  assert.match(await rawExchange(proxy.port, `GET ${base}/ HTTP/2.0\r\nHost: x\r\n\r\n`), /^HTTP\/1\.1 505 /);
  await assertStillServes(proxy, base);
});

test('431 for a head larger than maxHeaderBytes and for too many header lines', async (t) => {
  const { proxy, base } = await setup(t, { cfg: { maxHeaderBytes: 2048, maxHeaderCount: 5 } });
  const big = await rawExchange(proxy.port, `GET ${base}/ HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(4000)}\r\n\r\n`);
  assert.match(big, /^HTTP\/1\.1 431 Request Header Fields Too Large\r\n/);
  const many = await rawExchange(proxy.port, `GET ${base}/ HTTP/1.1\r\n${'X: y\r\n'.repeat(6)}\r\n`);
  assert.match(many, /^HTTP\/1\.1 431 /);
  await assertStillServes(proxy, base);
});

test('408 when the request head is not complete within handshakeTimeoutMs (slowloris)', async (t) => {
  const { proxy, base } = await setup(t, { cfg: { handshakeTimeoutMs: 300 } });
  const socket = net.connect(proxy.port, '127.0.0.1');
  await once(socket, 'connect');
  const started = Date.now();
  socket.write(`GET ${base}/ HTTP/1.1\r\n`);
  const drip = setInterval(() => socket.write('X: y\r\n'), 50);
  const raw = await collectUntilClose(socket, 5000);
  clearInterval(drip);
  assert.match(raw, /^HTTP\/1\.1 408 Request Timeout\r\n/);
  assert.ok(Date.now() - started >= 250, 'not before the deadline');
  await assertStillServes(proxy, base);
});

test('407 with Proxy-Authenticate when credentials are missing or wrong; right ones pass and are not forwarded', async (t) => {
  const { origin, proxy, base } = await setup(t, { access: basicAuthPolicy('alice', 's3cret') });
  const none = await curl(proxy.port, ['-i', `${base}/x`]);
  assert.match(none.stdout, /^HTTP\/1\.1 407 Proxy Authentication Required\r\n/);
  assert.match(none.stdout, /\r\nProxy-Authenticate: Basic realm="mptcp-proxy"\r\n/);
  const wrong = await curl(proxy.port, ['-i', '--proxy-user', 'alice:nope', `${base}/x`]);
  assert.match(wrong.stdout, /^HTTP\/1\.1 407 /);
  const right = await curl(proxy.port, ['--proxy-user', 'alice:s3cret', `${base}/x`]);
  assert.equal(right.stdout, 'hello /x');
  assert.equal(origin.requests.length, 1);
  assert.equal(origin.requests[0]!.headers['proxy-authorization'], undefined);
  const connectNoAuth = await rawExchange(proxy.port, `CONNECT 127.0.0.1:${origin.port} HTTP/1.1\r\n\r\n`);
  assert.match(connectNoAuth, /^HTTP\/1\.1 407 /);
  await proxy.settled();
  assert.ok(proxy.contexts.some((c) => c.access.user === 'alice'));
});

test('403 when the access policy denies the destination (checked inside the dialer)', async (t) => {
  const origin = await defaultOrigin();
  t.after(() => origin.close());
  const proxy = await startHttpProxy({ accessConfig: { denyPorts: [String(origin.port)] } });
  t.after(() => proxy.close());
  const r = await curl(proxy.port, ['-i', `http://127.0.0.1:${origin.port}/x`]);
  assert.match(r.stdout, /^HTTP\/1\.1 403 Forbidden\r\n/);
  const c = await rawExchange(proxy.port, `CONNECT 127.0.0.1:${origin.port} HTTP/1.1\r\n\r\n`);
  assert.match(c, /^HTTP\/1\.1 403 /);
  assert.equal(origin.connections, 0);
  const line = logLinesWithStatus(proxy.logs, 403)[0];
  assert.equal(line?.target, `127.0.0.1:${origin.port}`);
});

test('502 when the upstream refuses the connection; the proxy then serves the next client', async (t) => {
  const { proxy, base } = await setup(t);
  const port = await closedPort();
  const r = await curl(proxy.port, ['-i', `http://127.0.0.1:${port}/`]);
  assert.match(r.stdout, /^HTTP\/1\.1 502 Bad Gateway\r\n/);
  const c = await rawExchange(proxy.port, `CONNECT 127.0.0.1:${port} HTTP/1.1\r\n\r\n`);
  assert.match(c, /^HTTP\/1\.1 502 /);
  assert.equal(logLinesWithStatus(proxy.logs, 502)[0]?.code, ErrorCode.UPSTREAM_REFUSED);
  await assertStillServes(proxy, base);
});

test('502 when the upstream drops the connection before any response byte', async (t) => {
  const { proxy, base } = await setup(t);
  const r = await curl(proxy.port, ['-i', `${base}/drop`]);
  assert.match(r.stdout, /^HTTP\/1\.1 502 /);
  await assertStillServes(proxy, base);
});

test('504 when the dial times out (injected dialer that never connects in time)', async (t) => {
  const { proxy, base } = await setup(t, {
    dial: (real) => async (target, ctx, opts) => {
      if (target.port !== 9) return real(target, ctx, opts);
      await sleep(100);
      throw new UpstreamError(ErrorCode.CONNECT_TIMEOUT, target, 'connect took longer than 100 ms');
    },
  });
  const r = await curl(proxy.port, ['-i', 'http://127.0.0.1:9/']);
  assert.match(r.stdout, /^HTTP\/1\.1 504 Gateway Timeout\r\n/);
  const c = await rawExchange(proxy.port, 'CONNECT 127.0.0.1:9 HTTP/1.1\r\n\r\n');
  assert.match(c, /^HTTP\/1\.1 504 /);
  const line = logLinesWithStatus(proxy.logs, 504)[0];
  assert.equal(line?.code, ErrorCode.CONNECT_TIMEOUT);
  assert.equal(line?.target, '127.0.0.1:9');
  await assertStillServes(proxy, base);
});

test('an idle keep-alive client is closed quietly after keepAliveTimeoutMs', async (t) => {
  const { proxy, base } = await setup(t, { cfg: { keepAliveTimeoutMs: 200 } });
  const socket = net.connect(proxy.port, '127.0.0.1');
  await once(socket, 'connect');
  socket.write(`GET ${base}/k HTTP/1.1\r\nHost: x\r\n\r\n`);
  const raw = await collectUntilClose(socket, 3000);
  assert.match(raw, /^HTTP\/1\.1 200 OK\r\n/);
  assert.ok(raw.endsWith('hello /k'), 'no error reply after the idle close');
});
