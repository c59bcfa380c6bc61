/**
 * The tcp-forward front-end through the real listener, dialer and relay, built as src/main.ts
 * builds them, for both relay engines. With the native engine and an IP target the upstream's
 * connect(2) is issued in the accept path and completed by the engine (Dial.connectNow +
 * FrontendDeps.relayConnecting); with the JS engine, or a name, the async dial runs. Either way
 * the same facts reach ctx, the channels and the access log, and failures end the same way.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as diagnosticsChannel from 'node:diagnostics_channel';
import { lookup } from 'node:dns/promises';
import net from 'node:net';
import { once } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import { validateConfig } from '../../src/config/schema.js';
import type { TcpForwardListenerConfig } from '../../src/config/types.js';
import { createAccessPolicy } from '../../src/access/policy.js';
import { createConnectionLimiter } from '../../src/access/connection-limiter.js';
import { startAccessLog } from '../../src/core/access-log.js';
import { ChannelName, type DialErrorMessage, type UpstreamConnectedMessage } from '../../src/core/channels.js';
import { AccessDeniedError, ErrorCode, UpstreamError } from '../../src/core/errors.js';
import { createLogger } from '../../src/core/logger.js';
import { createTcpForwardFrontend } from '../../src/frontends/tcp-forward/index.js';
import type { FrontendDeps } from '../../src/frontends/types.js';
import { ProxyListener } from '../../src/listeners/listener.js';
import { selectBodyPump, selectConnectingRelay, selectRelay, type RelayEngine } from '../../src/relay/index.js';
import { createDialer } from '../../src/upstream/dialer.js';
import { fullListener } from '../helpers/full-listener.js';

const HOST = '127.0.0.1';

interface Forwarder {
  port: number;
  lines: Array<Record<string, unknown>>;
  /** Connects the dialer started with connectNow (the engine's way). */
  connectNowCalls: number;
  connected: UpstreamConnectedMessage[];
  dialErrors: DialErrorMessage[];
  close(): Promise<void>;
}

async function forwarder(engine: RelayEngine, to: string, extra: Record<string, unknown> = {}): Promise<Forwarder> {
  const config = validateConfig({
    listeners: [{ type: 'tcp-forward', listen: `${HOST}:0`, to }],
    relay: { engine },
    access: { denyDestinations: [] },
    ...extra,
  });
  const lines: Array<Record<string, unknown>> = [];
  const log = createLogger({ level: 'info', format: 'json', sink: { write: (l) => lines.push(JSON.parse(l) as Record<string, unknown>) } });
  const access = await createAccessPolicy(config.access);
  const dial = createDialer(config.upstream, access, log);
  const f: Forwarder = { port: 0, lines, connectNowCalls: 0, connected: [], dialErrors: [], close: async () => {} };
  const connectNow = dial.connectNow;
  if (connectNow !== undefined) {
    dial.connectNow = (target, ctx) => {
      const pending = connectNow(target, ctx);
      if (pending !== undefined) f.connectNowCalls++;
      return pending;
    };
  }
  // As src/main.ts composes them.
  const deps: FrontendDeps = {
    dial,
    relay: selectRelay(config.relay.engine),
    pump: selectBodyPump(config.relay.engine),
    relayConnecting: selectConnectingRelay(config.relay.engine),
    access,
    log,
  };
  const lc = config.listeners[0] as TcpForwardListenerConfig;
  const listener = new ProxyListener(lc, {
    frontend: createTcpForwardFrontend(lc, deps, { idleTimeoutMs: config.relay.idleTimeoutMs }),
    access,
    limiter: createConnectionLimiter(config.access.maxConnectionsPerClient),
    log,
  });
  const stopAccessLog = startAccessLog(log);
  const onConnected = (m: unknown) => f.connected.push(m as UpstreamConnectedMessage);
  const onDialError = (m: unknown) => f.dialErrors.push(m as DialErrorMessage);
  diagnosticsChannel.subscribe(ChannelName.upstreamConnected, onConnected);
  diagnosticsChannel.subscribe(ChannelName.dialError, onDialError);
  await listener.start();
  f.port = listener.address()!.port;
  f.close = async () => {
    await listener.destroy();
    stopAccessLog();
    diagnosticsChannel.unsubscribe(ChannelName.upstreamConnected, onConnected);
    diagnosticsChannel.unsubscribe(ChannelName.dialError, onDialError);
  };
  return f;
}

async function echoServer(): Promise<{ server: net.Server; port: number; peers: number[] }> {
  const peers: number[] = [];
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    peers.push(s.remotePort ?? 0);
    s.pipe(s);
  });
  server.listen(0, HOST);
  await once(server, 'listening');
  return { server, port: (server.address() as net.AddressInfo).port, peers };
}

/** Writes `text` at once (before the proxy can have connected upstream), ends, and collects the echo. */
function echoThrough(port: number, text: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const c = net.connect({ port, host: HOST, allowHalfOpen: true });
    let got = '';
    c.on('data', (d: Buffer) => (got += d.toString()));
    c.on('end', () => {
      c.end();
      resolve(got);
    });
    c.on('error', reject);
    c.end(text);
  });
}

/** The error code a client ends with when the proxy gives up on it ('' for a clean close). */
function clientOutcome(port: number): Promise<string> {
  return new Promise((resolve) => {
    const c = net.connect({ port, host: HOST });
    let code = '';
    c.on('error', (err: NodeJS.ErrnoException) => (code = err.code ?? 'error'));
    c.on('close', () => resolve(code));
    c.write('hello?');
    c.resume();
  });
}

async function accessLine(f: Forwarder): Promise<Record<string, unknown>> {
  for (let i = 0; i < 100 && !f.lines.some((l) => l.msg === 'access'); i++) await sleep(10);
  const line = f.lines.find((l) => l.msg === 'access');
  assert.ok(line, 'an access line');
  return line;
}

for (const engine of ['native', 'js'] as const) {
  const inEngine = engine === 'native' && selectConnectingRelay('native') !== undefined;
  const way = inEngine ? 'dialed in the engine' : 'dialed through JS';

  test(`${engine} engine (${way}): bytes sent at once are echoed; ctx.upstream, upstream:connected and the access line are filled`, async (t) => {
    const echo = await echoServer();
    t.after(() => echo.server.close());
    const f = await forwarder(engine, `${HOST}:${echo.port}`);
    t.after(() => f.close());
    const text = 'early bytes, written before the upstream can have answered';
    assert.equal(await echoThrough(f.port, text), text);
    const line = await accessLine(f);
    assert.equal(f.connectNowCalls, inEngine ? 1 : 0);
    assert.equal(f.connected.length, 1, 'upstream:connected once');
    const { ctx, connectMs } = f.connected[0]!;
    assert.ok(connectMs > 0 && connectMs < 5000, `connectMs ${connectMs}`);
    assert.deepEqual(ctx.upstream?.remote, { address: HOST, port: echo.port });
    assert.equal(ctx.upstream?.local.address, HOST);
    assert.equal(ctx.upstream?.local.port, echo.peers[0], 'the source port the server saw');
    assert.equal(ctx.upstream?.mptcp, false, 'a TCP server: plain TCP on the wire (fallen back if the socket was MPTCP)');
    assert.equal(f.dialErrors.length, 0);
    assert.equal(line.target, `${HOST}:${echo.port}`);
    assert.equal(line.upstream, `${HOST}:${echo.port}`);
    assert.equal(line.upstreamMptcp, false);
    assert.equal(line.bytesUp, text.length);
    assert.equal(line.bytesDown, text.length);
    assert.equal(line.endedBy, 'downstream');
    assert.equal(line.error, undefined);
  });

  test(`${engine} engine (${way}): a refused upstream resets the client, publishes dial:error and logs the failed dial`, async (t) => {
    const closed = await echoServer();
    closed.server.close();
    const f = await forwarder(engine, `${HOST}:${closed.port}`);
    t.after(() => f.close());
    assert.equal(await clientOutcome(f.port), 'ECONNRESET');
    const line = await accessLine(f);
    assert.equal(f.dialErrors.length, 1);
    const err = f.dialErrors[0]!.error;
    assert.ok(err instanceof UpstreamError);
    assert.equal(err.code, ErrorCode.UPSTREAM_REFUSED);
    assert.equal(err.errno, 'ECONNREFUSED');
    assert.equal(f.connected.length, 0);
    assert.ok(f.lines.some((l) => l.msg === 'upstream dial failed' && l.level === 'warn'));
    assert.equal(line.endedBy, 'proxy');
    assert.equal(line.error, ErrorCode.UPSTREAM_REFUSED);
    assert.equal(line.upstream, undefined);
  });

  test(`${engine} engine (${way}): a denied destination resets the client with an AccessDeniedError, nothing dialed`, async (t) => {
    const echo = await echoServer();
    t.after(() => echo.server.close());
    const f = await forwarder(engine, `${HOST}:${echo.port}`, { access: { denyDestinations: ['127.0.0.0/8'] } });
    t.after(() => f.close());
    assert.equal(await clientOutcome(f.port), 'ECONNRESET');
    const line = await accessLine(f);
    assert.equal(f.dialErrors.length, 1);
    assert.ok(f.dialErrors[0]!.error instanceof AccessDeniedError);
    assert.equal(echo.peers.length, 0, 'nothing reached the server');
    assert.ok(f.lines.some((l) => l.msg === 'upstream dial failed'));
    assert.equal(line.endedBy, 'proxy');
    assert.equal(line.error, ErrorCode.ACCESS_DENIED);
  });

  test(`${engine} engine (${way}): no answer within upstream.connectTimeoutMs is MPX_ERR_CONNECT_TIMEOUT and a reset`, async (t) => {
    const hole = await fullListener(HOST);
    t.after(() => hole.close());
    const f = await forwarder(engine, `${HOST}:${hole.port}`, { upstream: { connectTimeoutMs: 300 } });
    t.after(() => f.close());
    const started = performance.now();
    assert.equal(await clientOutcome(f.port), 'ECONNRESET');
    const took = performance.now() - started;
    // The upper bound only tells the 300 ms deadline from the 10 s default; a loaded machine is slow.
    assert.ok(took >= 280 && took < 5_000, `gave up after ${took.toFixed(0)} ms`);
    await accessLine(f);
    assert.equal(f.dialErrors.length, 1);
    const err = f.dialErrors[0]!.error;
    assert.equal(err.code, ErrorCode.CONNECT_TIMEOUT);
    assert.match(err.message, /connect took longer than 300 ms/);
  });
}

test('a target given as a name keeps the async dial (DNS, happy eyeballs) with the native engine', async (t) => {
  const resolved = await lookup('localhost', { family: 4 }).catch(() => undefined);
  if (resolved?.address !== HOST) {
    t.skip('localhost does not resolve to 127.0.0.1 here');
    return;
  }
  const echo = await echoServer();
  t.after(() => echo.server.close());
  const f = await forwarder('native', `localhost:${echo.port}`);
  t.after(() => f.close());
  assert.equal(await echoThrough(f.port, 'by name'), 'by name');
  await accessLine(f);
  assert.equal(f.connectNowCalls, 0, 'no connect(2) in the accept path for a name');
  assert.equal(f.connected.length, 1);
  assert.equal(f.connected[0]!.ctx.upstream?.remote.port, echo.port);
});
