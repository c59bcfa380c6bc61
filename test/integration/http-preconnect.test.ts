/**
 * The HTTP front-end's early upstream connect (Frontend.preconnect, Dial.connectEarly): with the
 * request line already received at accept, the connect to an IP-literal origin starts before the
 * request is parsed, and the request is sent on that connection once it has been read and
 * checked in full. Real sockets on loopback, the real dialer and access policy; the harness waits
 * for the request line before calling preconnect, so the early path is taken every time.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type net from 'node:net';
import { connect as netConnect } from 'node:net';
import { once } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import { basicAuthPolicy, closedPort, collectUntilClose, rawExchange, startHttpProxy, startTcpOrigin } from '../helpers/http-proxy-harness.js';
import type { HttpProxyHarness } from '../helpers/http-proxy-harness.js';
import { loadNative } from '../../src/mptcp/index.js';

const skip = typeof (loadNative() as { peek?: unknown }).peek === 'function' ? false : 'the addon has no peek (rebuild native/)';

/** An origin that records, per connection, the bytes it received, and answers each request head
 *  with a 2-byte body and Connection: close. */
async function recordingOrigin(): Promise<{ port: number; received: string[]; closed: number; close: () => void }> {
  const received: string[] = [];
  const state = { closed: 0 };
  const origin = await startTcpOrigin((socket: net.Socket) => {
    const i = received.push('') - 1;
    socket.on('data', (d) => {
      received[i] += d.toString('latin1');
      if (received[i]!.includes('\r\n\r\n')) socket.end('HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok');
    });
    socket.on('error', () => {});
    socket.on('close', () => (state.closed += 1));
  });
  return {
    port: origin.port,
    received,
    get closed() {
      return state.closed;
    },
    close: origin.close,
  };
}

async function proxy(t: { after: (fn: () => Promise<void>) => void }, opts: Parameters<typeof startHttpProxy>[0] = {}): Promise<HttpProxyHarness> {
  const p = await startHttpProxy({ preconnect: 'after-request-line', ...opts });
  t.after(() => p.close());
  return p;
}

test('a request whose line arrived by accept is sent on the connect begun then: one upstream connection, the request intact', { skip }, async (t) => {
  const origin = await recordingOrigin();
  t.after(origin.close);
  const p = await proxy(t);
  const reply = await rawExchange(p.port, `GET http://127.0.0.1:${origin.port}/a?b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
  assert.match(reply, /^HTTP\/1\.1 200 /);
  assert.ok(reply.endsWith('ok'));
  assert.deepEqual(p.early[0]?.target, { host: '127.0.0.1', port: origin.port });
  assert.equal(origin.received.length, 1, 'one upstream connection: the early one, no second dial');
  assert.match(origin.received[0]!, new RegExp(`^GET /a\\?b HTTP/1\\.1\\r\\nHost: 127\\.0\\.0\\.1:${origin.port}\\r\\n`));
  await p.settled();
  assert.deepEqual(p.contexts[0]!.upstream?.remote, { address: '127.0.0.1', port: origin.port });
});

test('a request found malformed after its line gets its 400, and the early connection is closed with nothing sent', { skip }, async (t) => {
  const origin = await recordingOrigin();
  t.after(origin.close);
  const p = await proxy(t);
  const reply = await rawExchange(p.port, `GET http://127.0.0.1:${origin.port}/ HTTP/1.1\r\nBad Header\r\n\r\n`);
  assert.match(reply, /^HTTP\/1\.1 400 /);
  assert.ok(p.early[0] !== undefined);
  await p.settled();
  for (let i = 0; i < 100 && origin.closed < 1; i += 1) await sleep(10);
  assert.equal(origin.received.length, 1);
  assert.equal(origin.received[0], '', 'no byte reached the origin');
  assert.equal(origin.closed, 1);
});

test('no early connect to a denied destination: the request gets its 403 and the origin sees nothing', { skip }, async (t) => {
  const origin = await recordingOrigin();
  t.after(origin.close);
  const p = await proxy(t, { accessConfig: { denyPorts: [String(origin.port)] } });
  const reply = await rawExchange(p.port, `GET http://127.0.0.1:${origin.port}/ HTTP/1.1\r\nConnection: close\r\n\r\n`);
  assert.match(reply, /^HTTP\/1\.1 403 /);
  assert.equal(p.early[0], undefined);
  await sleep(50);
  assert.equal(origin.received.length, 0);
});

test('no early connect before credentials are checked, for CONNECT, or for a name', { skip }, async (t) => {
  const origin = await recordingOrigin();
  t.after(origin.close);
  const auth = await proxy(t, { access: basicAuthPolicy('u', 'p') });
  assert.match(await rawExchange(auth.port, `GET http://127.0.0.1:${origin.port}/ HTTP/1.1\r\nConnection: close\r\n\r\n`), /^HTTP\/1\.1 407 /);
  assert.equal(auth.early[0], undefined);
  const p = await proxy(t);
  await rawExchange(p.port, `CONNECT 127.0.0.1:${origin.port} HTTP/1.1\r\n\r\n`, 300).catch(() => '');
  await rawExchange(p.port, `GET http://localhost:${origin.port}/ HTTP/1.1\r\nConnection: close\r\n\r\n`);
  assert.deepEqual(p.early, [undefined, undefined]);
});

test('an early connect that is refused gets the request its 502, logged as UPSTREAM_REFUSED', { skip }, async (t) => {
  const port = await closedPort();
  const p = await proxy(t);
  const reply = await rawExchange(p.port, `GET http://127.0.0.1:${port}/ HTTP/1.1\r\nConnection: close\r\n\r\n`);
  assert.match(reply, /^HTTP\/1\.1 502 /);
  assert.ok(p.early[0] !== undefined);
  await p.settled();
  assert.ok(p.logs.some((l) => l.includes('UPSTREAM_REFUSED')), 'the refusal is logged with its code');
});

test('a request whose head is completed more than a second after its line gets a fresh dial; the stale early connection is closed unused', { skip }, async (t) => {
  const origin = await recordingOrigin();
  t.after(origin.close);
  const p = await proxy(t);
  const client = netConnect(p.port, '127.0.0.1');
  await once(client, 'connect');
  client.write(`GET http://127.0.0.1:${origin.port}/slow HTTP/1.1\r\n`);
  for (let i = 0; i < 200 && p.early.length === 0; i += 1) await sleep(5);
  assert.ok(p.early[0] !== undefined, 'the early connect was made from the request line');
  await sleep(1200);
  client.write('Host: x\r\nConnection: close\r\n\r\n');
  const reply = await collectUntilClose(client);
  assert.match(reply, /^HTTP\/1\.1 200 /);
  for (let i = 0; i < 100 && origin.closed < 2; i += 1) await sleep(10);
  assert.equal(origin.received.length, 2, 'the early connection and a fresh one');
  assert.equal(origin.received[0], '', 'nothing was sent on the stale one');
  assert.match(origin.received[1]!, /^GET \/slow HTTP\/1\.1\r\n/);
});
