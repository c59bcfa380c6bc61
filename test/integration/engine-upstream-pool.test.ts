/**
 * The engine's upstream pool (native/src/upstream-park.c): an HTTP exchange the engine serves
 * from accept leaves its upstream connection parked when the response left it reusable, and the
 * next exchange to the same target takes it instead of dialing — for a client that closes
 * (Connection: close, whose upstream is then asked to stay and whose response is framed by the
 * engine) and for a keep-alive client that closes after one request. Real sockets on loopback:
 * an origin that counts its connections and requests, the real startProxy.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import * as diagnosticsChannel from 'node:diagnostics_channel';
import { once } from 'node:events';
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { startProxy } from '../../src/main.js';
import { validateConfig } from '../../src/config/schema.js';
import { ChannelName } from '../../src/core/channels.js';
import { createLogger } from '../../src/core/logger.js';
import { loadNativeAcceptor } from '../../src/listeners/engine-acceptor.js';
import { connectMptcp } from '../../src/mptcp/index.js';

const HOST = '127.0.0.1';
const noEngine = loadNativeAcceptor() === undefined ? 'the addon has no engine acceptor (acceptorStart)' : false;

type LogLine = Record<string, unknown> & { msg: string };

interface Proxy {
  port: number;
  lines: LogLine[];
  destroy(): Promise<void>;
}

/** startProxy with one HTTP listener (`extra` merged into it), debug log captured. */
async function startHttpProxy(t: TestContext, extra: Record<string, unknown> = {}): Promise<Proxy> {
  const config = validateConfig({
    log: { level: 'debug', format: 'json', access: true },
    listeners: [{ name: 'pool', type: 'http', listen: `${HOST}:0`, ...extra }],
  });
  const lines: LogLine[] = [];
  const log = createLogger({ level: 'debug', format: 'json', sink: { write: (l) => lines.push(JSON.parse(l) as LogLine) } });
  const proxy = await startProxy(config, log);
  assert.equal(proxy.listeners[0]!.acceptsInEngine, true, 'the engine accepts for the listener');
  let destroyed = false;
  const destroy = async (): Promise<void> => {
    if (destroyed) return;
    destroyed = true;
    await proxy.destroy();
  };
  t.after(destroy);
  return { port: proxy.listeners[0]!.address()!.port, lines, destroy };
}

/** How an origin answers the n-th request (from 0) on one of its connections. */
type Answer = (s: net.Socket, head: string, n: number) => void;

interface Origin {
  port: number;
  /** Connections accepted so far. */
  readonly accepted: number;
  /** Connections still open. */
  readonly open: number;
  /** Every request head, in order. */
  heads: string[];
}

/** An HTTP/1.1 origin on loopback that keeps its connections open unless `answer` ends them. */
async function origin(t: TestContext, answer: Answer): Promise<Origin> {
  const state = { accepted: 0, open: new Set<net.Socket>(), heads: [] as string[] };
  const server = net.createServer((s) => {
    state.accepted += 1;
    state.open.add(s);
    s.on('close', () => state.open.delete(s));
    s.on('error', () => {});
    let buf = '';
    let n = 0;
    s.on('data', (d: Buffer) => {
      buf += d.toString('latin1');
      for (let end = buf.indexOf('\r\n\r\n'); end >= 0; end = buf.indexOf('\r\n\r\n')) {
        const head = buf.slice(0, end + 4);
        buf = buf.slice(end + 4);
        state.heads.push(head);
        answer(s, head, n++);
      }
    });
  });
  server.listen(0, HOST);
  await once(server, 'listening');
  t.after(() => {
    for (const s of state.open) s.destroy();
    server.close();
  });
  return {
    port: (server.address() as net.AddressInfo).port,
    get accepted() {
      return state.accepted;
    },
    get open() {
      return state.open.size;
    },
    heads: state.heads,
  };
}

const ok = (body: string): string => `HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\n\r\n${body}`;

/** Whether `out` holds a whole response by its framing: a Content-Length, a last chunk (and
 *  trailer section), or none for 204 and 304. */
function responseComplete(out: string): boolean {
  const end = out.indexOf('\r\n\r\n');
  if (end < 0) return false;
  const head = out.slice(0, end + 2);
  const body = out.slice(end + 4);
  if (/^HTTP\/1\.1 (204|304) /.test(head)) return true;
  const len = /\r\nContent-Length: (\d+)\r\n/i.exec(head);
  if (len !== null) return body.length >= Number(len[1]);
  return /\r\nTransfer-Encoding: chunked\r\n/i.test(head) && /(^|\r\n)0\r\n([^\r]+\r\n)*\r\n$/.test(body);
}

/** One request on a new client connection; the reply read to the proxy's close (a closing
 *  client) or, for a keep-alive one, to its framing's end, then closed by the client. */
async function fetchRaw(port: number, request: string, keepAlive = false, ms = 3000, mptcp = false): Promise<string> {
  const c = mptcp ? connectMptcp({ host: HOST, port, mptcp: true }) : net.connect(port, HOST);
  c.on('error', () => {});
  await once(c, 'connect');
  c.write(request);
  let out = '';
  const done = new Promise<void>((resolve) => {
    c.on('data', (d: Buffer) => {
      out += d.toString('latin1');
      if (keepAlive && responseComplete(out)) resolve();
    });
    c.on('close', () => resolve());
  });
  const timedOut = await Promise.race([done.then(() => false), sleep(ms).then(() => true)]);
  c.destroy();
  assert.equal(timedOut, false, `the reply ended within ${ms} ms: ${JSON.stringify(out.slice(0, 120))}`);
  return out;
}

const get = (port: number, path: string, close: boolean): string => `GET http://${HOST}:${port}${path} HTTP/1.1\r\nHost: x\r\n${close ? 'Connection: close\r\n' : ''}\r\n`;

async function waitFor(cond: () => boolean, what: string, ms = 3000): Promise<void> {
  const deadline = performance.now() + ms;
  while (!cond()) {
    if (performance.now() > deadline) assert.fail(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(5);
  }
}

const lines = (p: Proxy, msg: string): LogLine[] => p.lines.filter((l) => l.msg === msg);

test('engine upstream pool: closing and keep-alive clients, one after another, share one upstream connection', { skip: noEngine }, async (t) => {
  const o = await origin(t, (s, head) => s.write(ok(`body of ${head.split(' ')[1]}`)));
  const p = await startHttpProxy(t);
  let connects = 0;
  const onConnected = (m: unknown): void => void ((m as { ctx: { listener: string } }).ctx.listener === 'pool' && connects++);
  diagnosticsChannel.subscribe(ChannelName.upstreamConnected, onConnected);
  t.after(() => diagnosticsChannel.unsubscribe(ChannelName.upstreamConnected, onConnected));
  // Plain TCP clients, then MPTCP ones (their socket's shutdown and close are MPTCP's).
  for (let i = 0; i < 4; i++) {
    const close = i % 2 === 0;
    const reply = await fetchRaw(p.port, get(o.port, `/r${i}`, close), !close, 3000, i >= 2);
    assert.match(reply, /^HTTP\/1\.1 200 OK\r\n/);
    assert.ok(reply.endsWith(`body of /r${i}`), `request ${i}'s own body`);
    if (close) assert.match(reply, /\r\nConnection: close\r\n/, 'a closing client is told so');
    // The engine serves its exchange and parks the upstream when the relay ends (after the
    // client's own close): the next client only starts once the last access line is out.
    await waitFor(() => lines(p, 'access').length === i + 1, `access line ${i + 1}`);
  }
  assert.equal(o.accepted, 1, 'one upstream connection for all four');
  assert.equal(connects, 1, 'upstream:connected once: a reused connection is not a connect');
  assert.equal(o.heads.length, 4);
  for (const head of o.heads) assert.doesNotMatch(head, /\r\nConnection: close\r\n/i, 'the upstream is asked to stay');
  const served = lines(p, 'http exchange served in the engine');
  assert.deepEqual(
    served.map((l) => l.from),
    ['accept', 'accept', 'accept', 'accept'],
    'each served from accept, none by a JS session',
  );
  const requests = lines(p, 'request');
  assert.deepEqual(
    requests.map((l) => [l.url, l.status]),
    [0, 1, 2, 3].map((i) => [`http://${HOST}:${o.port}/r${i}`, 200]),
  );
  assert.ok(lines(p, 'access').every((l) => l.upstream === `${HOST}:${o.port}`));
  assert.deepEqual(
    lines(p, 'access').map((l) => l.clientMptcp),
    [false, false, true, true],
  );
});

test('engine upstream pool: a chunked response to a closing client ends at its last chunk, and its upstream is reused', { skip: noEngine }, async (t) => {
  const o = await origin(t, (s) => s.write('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n'));
  const p = await startHttpProxy(t);
  for (let i = 0; i < 2; i++) {
    const reply = await fetchRaw(p.port, get(o.port, '/c', true));
    assert.match(reply, /\r\nTransfer-Encoding: chunked\r\n/);
    assert.ok(reply.endsWith('5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n'), 'the whole chunked body, then our close');
    await waitFor(() => lines(p, 'access').length === i + 1, 'the access line');
  }
  assert.equal(o.accepted, 1);
});

test('engine upstream pool: heads the engine declines are framed by JS for a closing client (length and chunked), the client closed at the body end', { skip: noEngine }, async (t) => {
  // More than 100 fields and `Transfer-Encoding: gzip, chunked` both make the C rewrite decline
  // the head (native/src/http-head.c); the upstream, asked to stay, never closes: only the
  // framing can end these replies.
  const many = Array.from({ length: 120 }, (_, i) => `X-F${i}: v\r\n`).join('');
  const o = await origin(t, (s, head) => {
    if (head.startsWith('GET /fold ')) s.write(`HTTP/1.1 200 OK\r\n${many}Content-Length: 4\r\n\r\nfold`);
    else s.write('HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n');
  });
  const p = await startHttpProxy(t);
  const folded = await fetchRaw(p.port, get(o.port, '/fold', true));
  assert.match(folded, /^HTTP\/1\.1 200 OK\r\n/);
  assert.ok(folded.endsWith('\r\n\r\nfold'), 'the length-framed body, then our close');
  const chunked = await fetchRaw(p.port, get(o.port, '/gz', true));
  assert.match(chunked, /\r\nTransfer-Encoding: gzip, chunked\r\n/);
  assert.ok(chunked.endsWith('3\r\nabc\r\n0\r\n\r\n'), 'the chunked body, then our close');
  await waitFor(() => lines(p, 'access').length === 2, 'two access lines');
  assert.deepEqual(
    lines(p, 'request').map((l) => l.status),
    [200, 200],
  );
});

test('engine upstream pool: an upstream that closes while parked is dropped, and one that closes as a request goes out leaves the request to a new connection', { skip: noEngine }, async (t) => {
  let conn = 0;
  const closeAfter = new Map<net.Socket, number>();
  const o = await origin(t, (s, _head, n) => {
    if (!closeAfter.has(s)) closeAfter.set(s, conn++);
    const id = closeAfter.get(s)!;
    // Connection 0 answers once, then closes when idle 50 ms later; connection 1 answers once,
    // then drops its second request unanswered (the race every pool has); later ones answer.
    if (id === 1 && n === 1) {
      s.destroy();
      return;
    }
    s.write(ok(`c${id}r${n}`));
    if (id === 0) setTimeout(() => s.end(), 50);
  });
  const p = await startHttpProxy(t);
  assert.ok((await fetchRaw(p.port, get(o.port, '/a', true))).endsWith('c0r0'));
  await waitFor(() => lines(p, 'access').length === 1, 'the first access line');
  await sleep(200); // connection 0 closes while parked: the pool drops it
  assert.ok((await fetchRaw(p.port, get(o.port, '/b', true))).endsWith('c1r0'), 'a new connection, not the closed one');
  await waitFor(() => lines(p, 'access').length === 2, 'the second access line');
  // Connection 1 is parked and drops the next request: the client still gets its answer.
  const third = await fetchRaw(p.port, get(o.port, '/c', true));
  assert.match(third, /^HTTP\/1\.1 200 OK\r\n/);
  assert.ok(third.endsWith('c2r0'), 'sent again on a new connection');
  assert.equal(o.accepted, 3);
});

test('engine upstream pool: a parked connection is closed after upstreamIdleTimeoutMs, and every one when the proxy stops', { skip: noEngine }, async (t) => {
  const o = await origin(t, (s) => s.write(ok('x')));
  const p = await startHttpProxy(t, { upstreamIdleTimeoutMs: 300 });
  await fetchRaw(p.port, get(o.port, '/', true));
  await waitFor(() => lines(p, 'access').length === 1, 'the access line');
  assert.equal(o.open, 1, 'parked');
  await waitFor(() => o.open === 0, 'the idle connection closed', 2000);
  await fetchRaw(p.port, get(o.port, '/', false), true);
  await fetchRaw(p.port, get(o.port, '/', true));
  await waitFor(() => lines(p, 'access').length === 3, 'three access lines');
  assert.equal(o.accepted, 2, 'a new connection after the idle close, then reused');
  assert.equal(o.open, 1);
  await p.destroy();
  await waitFor(() => o.open === 0, 'nothing left open once the proxy stops', 2000);
});

test('engine upstream pool off (upstreamIdleTimeoutMs 0): a closing client\'s upstream is asked to close, and each exchange dials', { skip: noEngine }, async (t) => {
  const o = await origin(t, (s) => s.end('HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: close\r\n\r\nz'));
  const p = await startHttpProxy(t, { upstreamIdleTimeoutMs: 0 });
  for (let i = 0; i < 2; i++) assert.ok((await fetchRaw(p.port, get(o.port, '/', true))).endsWith('z'));
  await waitFor(() => lines(p, 'access').length === 2, 'two access lines');
  assert.equal(o.accepted, 2);
  for (const head of o.heads) assert.match(head, /\r\nConnection: close\r\n/);
});

test('engine upstream pool: 300 exchanges from 12 concurrent clients over mixed response framings each get exactly their own response', { skip: noEngine }, async (t) => {
  // The pool's invariant: a connection is reused only when the last response on it ended
  // cleanly, so no byte of one response ever reaches another client. The origin answers each
  // request with a shape picked from its path; every body names its request.
  const shapes = ['length', 'chunked', 'chunked-trailer', 'empty', '204', 'close', 'http10-keep', 'big', 'extra'] as const;
  type Shape = (typeof shapes)[number];
  const bodyOf = (id: string, shape: Shape): string => (shape === 'big' ? `${id}:`.padEnd(200_000, 'b') : shape === 'empty' || shape === '204' ? '' : `${id}:${shape}`);
  const o = await origin(t, (s, head) => {
    const path = head.split(' ')[1]!; // /<id>/<shape>
    const [, id, shape] = path.split('/') as [string, string, Shape];
    const body = bodyOf(id, shape);
    switch (shape) {
      case 'chunked':
        s.write(`HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n${body.length.toString(16)}\r\n${body}\r\n0\r\n\r\n`);
        break;
      case 'chunked-trailer':
        s.write(`HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\n${body.slice(0, 3)}\r\n${(body.length - 3).toString(16)}\r\n${body.slice(3)}\r\n0\r\nX-T: 1\r\n\r\n`);
        break;
      case '204':
        s.write('HTTP/1.1 204 No Content\r\n\r\n');
        break;
      case 'close':
        s.end(`HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
        break;
      case 'http10-keep':
        s.write(`HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
        break;
      case 'extra': // a byte past its body: the connection must not serve anyone after this
        s.write(`HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\n\r\n${body}!`);
        break;
      default:
        s.write(`HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
    }
    if (/\r\nConnection: close\r\n/i.test(head)) s.end(); // as a real origin does
  });
  const p = await startHttpProxy(t);
  let next = 0;
  const failures: string[] = [];
  const worker = async (w: number): Promise<void> => {
    for (let n = next++; n < 300; n = next++) {
      const shape = shapes[(n * 7 + w) % shapes.length]!;
      const close = n % 3 !== 0;
      const id = `c${n}`;
      const raw = await fetchRaw(p.port, get(o.port, `/${id}/${shape}`, close), !close, 5000, n % 4 === 0);
      const end = raw.indexOf('\r\n\r\n');
      const bodyRaw = raw.slice(end + 4);
      const want = bodyOf(id, shape);
      const body = shape.startsWith('chunked') ? bodyRaw.replace(/^3;x=y\r\n(...)\r\n[0-9a-f]+\r\n/, '$1').replace(/^[0-9a-f]+\r\n/, '').replace(/\r\n0\r\n(X-T: 1\r\n)?\r\n$/, '') : bodyRaw;
      if (end < 0 || body !== want) failures.push(`${id} ${shape} ${close ? 'close' : 'keep'}: ${JSON.stringify(raw.slice(0, 160))}`);
    }
  };
  await Promise.all(Array.from({ length: 12 }, (_, w) => worker(w)));
  assert.deepEqual(failures, [], 'every client got exactly its own response');
  await waitFor(() => lines(p, 'access').length === 300, '300 access lines', 5000).catch((err: Error) => {
    const seen = new Set(lines(p, 'access').map((l) => String(l.url)));
    const missing = Array.from({ length: 300 }, (_, n) => n).filter((n) => ![...seen].some((u) => u.includes(`/c${n}/`)));
    const ended = new Set(lines(p, 'access').map((l) => l.conn));
    const open = [...new Set(p.lines.map((l) => l.conn).filter((c) => c !== undefined && !ended.has(c)))];
    const about = p.lines.filter((l) => open.slice(0, 3).includes(l.conn)).map((l) => JSON.stringify(l)).join('\n');
    throw new Error(`${err.message}; ${lines(p, 'access').length} lines; missing ${missing.slice(0, 12).map((n) => `c${n}`).join(' ')}\n${about}`);
  });
  assert.ok(o.accepted < 200, `upstream connections were reused (${o.accepted} for 300 exchanges)`);
});

test('a keep-alive client whose response comes with a byte past its Content-Length gets the body, then our FIN at once, though the upstream stays open', { skip: noEngine }, async (t) => {
  // The upstream is asked to stay (the keep-alive loop) and never closes: before, the relay
  // waited for its EOF, holding the client until the idle timeout.
  const o = await origin(t, (s) => s.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok!'));
  const p = await startHttpProxy(t);
  const started = performance.now();
  const raw = await fetchRaw(p.port, get(o.port, '/', false), false, 2000); // read to our close
  assert.ok(raw.endsWith('\r\n\r\nok'), `the body and nothing past it: ${JSON.stringify(raw)}`);
  assert.ok(performance.now() - started < 1000, 'closed at once');
  await waitFor(() => lines(p, 'access').length === 1, 'the access line');
  assert.equal(lines(p, 'access')[0]!.status, 200);
  await waitFor(() => o.open === 0, 'the unclean upstream closed by us (the origin never closes), not parked');
});

test('a keep-alive client whose chunked response has a head the engine declines gets the body and our close at its last chunk, though the upstream stays open', { skip: noEngine }, async (t) => {
  // A head of more than 100 fields goes to JS, which answers a chunked body for a keep-alive
  // client with a closing head: the keep-alive loop had asked the upstream to stay, so only the
  // chunk framing ends the reply (before, the relay waited for the upstream's close, and a
  // client reading to ours hung).
  const many = Array.from({ length: 120 }, (_, i) => `X-F${i}: v\r\n`).join('');
  const o = await origin(t, (s) => s.write(`HTTP/1.1 200 OK\r\n${many}Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n`));
  const p = await startHttpProxy(t);
  const raw = await fetchRaw(p.port, get(o.port, '/', false), false, 2000); // read to our close
  assert.match(raw, /\r\nConnection: close\r\n/);
  assert.ok(raw.endsWith('\r\n\r\n3\r\nabc\r\n0\r\n\r\n'), `the chunked body, then our close: ${JSON.stringify(raw)}`);
  await waitFor(() => lines(p, 'access').length === 1, 'the access line');
  await waitFor(() => o.open === 0, 'its upstream closed by us (not parked: JS read its head)');
});
