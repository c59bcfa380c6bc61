/**
 * The upstream dialer against real loopback sockets: errno mapping, the connect deadline,
 * happy eyeballs, the destination check after resolution, MPTCP modes and source binding.
 * Name resolution is injected (this machine has no DNS to ask); everything else is real.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { once } from 'node:events';
import * as diagnosticsChannel from 'node:diagnostics_channel';
import { createDialer, type LookupAll } from '../../src/upstream/dialer.js';
import { createAccessPolicy } from '../../src/access/policy.js';
import { createConnectionContext, type ConnectionContext } from '../../src/core/context.js';
import { AccessDeniedError, ErrorCode, UpstreamError } from '../../src/core/errors.js';
import { silentLogger } from '../../src/core/logger.js';
import { ChannelName, type DialErrorMessage, type UpstreamConnectedMessage } from '../../src/core/channels.js';
import type { UpstreamConfig } from '../../src/config/types.js';
import { fullListener } from '../helpers/full-listener.js';
import { listenMptcp, mptcpSupport } from '../../src/mptcp/index.js';

const baseCfg: UpstreamConfig = { mptcp: 'off', connectTimeoutMs: 2000, dnsTimeoutMs: 500, happyEyeballsDelayMs: 100 };

function ctx(): ConnectionContext {
  return createConnectionContext({
    listener: 'test',
    frontend: 'tcp-forward',
    downstream: { remote: { address: '127.0.0.1', port: 1 }, local: { address: '127.0.0.1', port: 2 }, mptcp: false },
    log: silentLogger,
  });
}

async function openAccess(deny: string[] = []) {
  return createAccessPolicy({
    allowClients: ['0.0.0.0/0', '::/0'],
    denyDestinations: deny,
    allowDestinations: [],
    denyPorts: [],
    allowPorts: [],
    maxConnectionsPerClient: 0,
  });
}

async function plainServer(host = '127.0.0.1'): Promise<{ server: net.Server; port: number; peers: string[] }> {
  const peers: string[] = [];
  const server = net.createServer((s) => {
    peers.push(s.remoteAddress ?? '');
    s.end();
  });
  server.listen(0, host);
  await once(server, 'listening');
  return { server, port: (server.address() as net.AddressInfo).port, peers };
}

async function expectUpstreamError(p: Promise<unknown>, code: string): Promise<UpstreamError> {
  const err = await p.then(
    () => assert.fail('dial should fail'),
    (e: unknown) => e,
  );
  assert.ok(err instanceof UpstreamError, `expected UpstreamError, got ${String(err)}`);
  assert.equal(err.code, code);
  return err;
}

test('a refused connection is MPX_ERR_UPSTREAM_REFUSED with errno ECONNREFUSED', async () => {
  const { server, port } = await plainServer();
  server.close();
  const dial = createDialer(baseCfg, await openAccess(), silentLogger);
  const err = await expectUpstreamError(dial({ host: '127.0.0.1', port }, ctx()), ErrorCode.UPSTREAM_REFUSED);
  assert.equal(err.errno, 'ECONNREFUSED');
});

test('a connect that gets no answer fails with MPX_ERR_CONNECT_TIMEOUT at connectTimeoutMs', async (t) => {
  const hole = await fullListener();
  t.after(hole.close);
  const dial = createDialer({ ...baseCfg, connectTimeoutMs: 400 }, await openAccess(), silentLogger);
  const started = performance.now();
  await expectUpstreamError(dial({ host: '127.0.0.1', port: hole.port }, ctx()), ErrorCode.CONNECT_TIMEOUT);
  const took = performance.now() - started;
  assert.ok(took >= 380 && took < 2000, `timed out after ${took.toFixed(0)} ms`);
});

test('happy eyeballs: a refused first address falls through to the next one at once', async (t) => {
  const { server, port, peers } = await plainServer('127.0.0.1');
  t.after(() => server.close());
  const lookup: LookupAll = async () => [{ address: '::1', family: 6 }, { address: '127.0.0.1', family: 4 }];
  const dial = createDialer({ ...baseCfg, happyEyeballsDelayMs: 5000 }, await openAccess(), silentLogger, { lookup });
  const c = ctx();
  const started = performance.now();
  const s = await dial({ host: 'dual.test', port }, c);
  s.destroy();
  assert.ok(performance.now() - started < 1000, 'did not wait for the stagger delay after a refusal');
  assert.equal(c.upstream?.remote.address, '127.0.0.1');
  void peers;
});

test('happy eyeballs: a silent first address gets a second attempt after happyEyeballsDelayMs, which wins', async (t) => {
  const hole = await fullListener();
  t.after(hole.close);
  const lookup: LookupAll = async () => [{ address: '127.0.0.1', family: 4 }, { address: '127.0.0.2', family: 4 }];
  const dialHole = createDialer({ ...baseCfg, happyEyeballsDelayMs: 150 }, await openAccess(), silentLogger, {
    lookup,
  });
  // Attempt 1 goes to the blackholed 127.0.0.1:hole.port; attempt 2 to 127.0.0.2 on the same port number.
  const alt = net.createServer((s) => s.end());
  alt.listen(hole.port, '127.0.0.2');
  await once(alt, 'listening');
  t.after(() => alt.close());
  const c = ctx();
  const started = performance.now();
  const s = await dialHole({ host: 'slow-first.test', port: hole.port }, c);
  s.destroy();
  const took = performance.now() - started;
  assert.equal(c.upstream?.remote.address, '127.0.0.2');
  assert.ok(took >= 140 && took < 1500, `second attempt won after ${took.toFixed(0)} ms`);
});

test('a name whose every address is denied is an AccessDeniedError naming the rule, and nothing is dialed', async (t) => {
  const { server, port, peers } = await plainServer();
  t.after(() => server.close());
  const lookup: LookupAll = async () => [{ address: '127.0.0.1', family: 4 }];
  const dial = createDialer(baseCfg, await openAccess(['127.0.0.0/8']), silentLogger, { lookup });
  await assert.rejects(dial({ host: 'sneaky.test', port }, ctx()), (err: unknown) => {
    assert.ok(err instanceof AccessDeniedError);
    assert.equal(err.rule, 'destination-network');
    return true;
  });
  await new Promise((r) => setTimeout(r, 50));
  assert.equal(peers.length, 0);
});

test('name lookup errors map to DNS codes: not found, and a lookup slower than dnsTimeoutMs', async () => {
  const notFound: LookupAll = async () => {
    throw Object.assign(new Error('getaddrinfo ENOTFOUND nope.test'), { code: 'ENOTFOUND' });
  };
  const never: LookupAll = () => new Promise(() => {});
  const access = await openAccess();
  await expectUpstreamError(createDialer(baseCfg, access, silentLogger, { lookup: notFound })({ host: 'nope.test', port: 80 }, ctx()), ErrorCode.DNS_NOT_FOUND);
  await expectUpstreamError(createDialer(baseCfg, access, silentLogger, { lookup: never })({ host: 'slow.test', port: 80 }, ctx()), ErrorCode.DNS_TIMEOUT);
});

test('an aborted dial rejects promptly and leaves no connection behind', async (t) => {
  const hole = await fullListener();
  t.after(hole.close);
  const dial = createDialer({ ...baseCfg, connectTimeoutMs: 10_000 }, await openAccess(), silentLogger);
  const ac = new AbortController();
  setTimeout(() => ac.abort(), 100);
  const started = performance.now();
  await expectUpstreamError(dial({ host: '127.0.0.1', port: hole.port }, ctx(), { signal: ac.signal }), ErrorCode.CONNECT_TIMEOUT);
  assert.ok(performance.now() - started < 1000);
});

test('bindAddress sets the source address the server sees', async (t) => {
  const { server, port, peers } = await plainServer('127.0.0.1');
  t.after(() => server.close());
  const dial = createDialer({ ...baseCfg, bindAddress: '127.0.0.3' }, await openAccess(), silentLogger);
  const s = await dial({ host: '127.0.0.1', port }, ctx());
  await once(s, 'end');
  s.destroy();
  assert.deepEqual(peers, ['127.0.0.3']);
});

const noMptcp = mptcpSupport().available ? undefined : `MPTCP unavailable: ${mptcpSupport().reason}`;

test('upstream.mptcp auto gives an MPTCP upstream to an MPTCP server and plain TCP to a TCP server', { skip: noMptcp }, async (t) => {
  const mptcpServer = net.createServer((s) => s.end());
  await listenMptcp(mptcpServer, { host: '127.0.0.1', port: 0, mode: 'on' });
  const tcp = await plainServer();
  t.after(() => {
    mptcpServer.close();
    tcp.server.close();
  });
  const access = await openAccess();
  for (const [mode, server, expected] of [
    ['auto', mptcpServer, true],
    ['on', mptcpServer, true],
    ['off', mptcpServer, false],
    ['auto', tcp.server, false],
  ] as const) {
    const dial = createDialer({ ...baseCfg, mptcp: mode }, access, silentLogger);
    const c = ctx();
    const s = await dial({ host: '127.0.0.1', port: (server.address() as net.AddressInfo).port }, c);
    s.destroy();
    assert.equal(c.upstream?.mptcp, expected, `mode ${mode} to ${server === mptcpServer ? 'MPTCP' : 'TCP'} server`);
  }
});

test('bindInterface binds the upstream socket to a device: lo works, a missing device is a clear unreachable error', async (t) => {
  const { server, port } = await plainServer('127.0.0.1');
  t.after(() => server.close());
  const access = await openAccess();
  const s = await createDialer({ ...baseCfg, bindInterface: 'lo' }, access, silentLogger)({ host: '127.0.0.1', port }, ctx());
  s.destroy();
  const err = await expectUpstreamError(
    createDialer({ ...baseCfg, bindInterface: 'mpxnosuch0' }, access, silentLogger)({ host: '127.0.0.1', port }, ctx()),
    ErrorCode.UPSTREAM_UNREACHABLE,
  );
  assert.equal(err.errno, 'ENODEV');
});

// ---- Dial.sendFirst: connect(2) now, the first bytes queued on the connecting socket ----------


/** Messages published on `name` for `c` while `fn` runs. */
async function published<T>(name: string, c: ConnectionContext, fn: () => Promise<unknown>): Promise<T[]> {
  const seen: T[] = [];
  const on = (m: unknown) => {
    if ((m as { ctx: ConnectionContext }).ctx === c) seen.push(m as T);
  };
  diagnosticsChannel.subscribe(name, on);
  try {
    await fn();
  } finally {
    diagnosticsChannel.unsubscribe(name, on);
  }
  return seen;
}

for (const [mode, serverMptcp] of [['off', false], ['auto', false], ['auto', true]] as const) {
  const what = `upstream.mptcp ${mode}, ${serverMptcp ? 'MPTCP' : 'TCP'} server`;
  test(`sendFirst (${what}): resolves once the bytes are written, with the facts and upstream:connected; the server reads them`, { skip: mode === 'auto' && noMptcp }, async (t) => {
    const got: Buffer[] = [];
    const server = net.createServer((s) => s.on('data', (d) => got.push(d)).on('error', () => {}));
    if (serverMptcp) await listenMptcp(server, { host: '127.0.0.1', port: 0, mode: 'on' });
    else {
      server.listen(0, '127.0.0.1');
      await once(server, 'listening');
    }
    t.after(() => server.close());
    const port = (server.address() as net.AddressInfo).port;
    const dial = createDialer({ ...baseCfg, mptcp: mode }, await openAccess(), silentLogger);
    const c = ctx();
    let socket: net.Socket | undefined;
    const connected = await published<UpstreamConnectedMessage>(ChannelName.upstreamConnected, c, async () => {
      const sending = dial.sendFirst?.({ host: '127.0.0.1', port }, c, Buffer.from('GET / HTTP/1.1\r\n\r\n'));
      assert.ok(sending !== undefined, 'an IP literal goes this way');
      socket = await sending;
    });
    t.after(() => socket?.destroy());
    assert.equal(connected.length, 1);
    assert.deepEqual(c.upstream?.remote, { address: '127.0.0.1', port });
    assert.equal(c.upstream?.local.port, socket!.localPort);
    assert.equal(c.upstream?.mptcp, serverMptcp, 'the facts say what the wire carries');
    const deadline = performance.now() + 2000;
    while (Buffer.concat(got).toString() !== 'GET / HTTP/1.1\r\n\r\n' && performance.now() < deadline) await new Promise((r) => setTimeout(r, 5));
    assert.equal(Buffer.concat(got).toString(), 'GET / HTTP/1.1\r\n\r\n');
  });
}

test('sendFirst: a head queued while the handshake waits leaves when it completes, and the dial resolves then', async (t) => {
  const hole = await fullListener();
  t.after(hole.close);
  const dial = createDialer({ ...baseCfg, connectTimeoutMs: 10_000 }, await openAccess(), silentLogger);
  const c = ctx();
  let resolvedAt: number | undefined;
  const sending = dial.sendFirst!({ host: '127.0.0.1', port: hole.port }, c, Buffer.from('HEAD'))!;
  void sending.then(() => (resolvedAt = performance.now()), () => {});
  await new Promise((r) => setTimeout(r, 200));
  assert.equal(resolvedAt, undefined, 'still in the handshake: the dial has not resolved');
  const facts = () => c.upstream; // read through a function: TS would narrow the field to undefined for good
  assert.equal(facts(), undefined, 'no facts before the handshake');
  // Drain the queue: Node accepts the fillers, and the SYN's retransmission gets in.
  const server = net.createServer();
  t.after(() => server.close());
  const received = new Promise<string>((resolve) => {
    server.on('connection', (s) => {
      s.on('error', () => {});
      s.on('data', (d: Buffer) => d.toString() === 'HEAD' && resolve(d.toString()));
    });
  });
  const adoptedAt = performance.now();
  hole.adopt(server);
  const socket = await sending;
  t.after(() => socket.destroy());
  assert.ok(resolvedAt! >= adoptedAt, 'resolved only once the handshake completed');
  assert.equal(await received, 'HEAD');
  assert.equal(facts()?.local.port, socket.localPort);
});

test('sendFirst: a refused handshake is the dial\'s UPSTREAM_REFUSED, published as dial:error', async () => {
  const { server, port } = await plainServer();
  server.close();
  const dial = createDialer(baseCfg, await openAccess(), silentLogger);
  const c = ctx();
  const errors = await published<DialErrorMessage>(ChannelName.dialError, c, async () => {
    const err = await expectUpstreamError(dial.sendFirst!({ host: '127.0.0.1', port }, c, Buffer.from('x'))!, ErrorCode.UPSTREAM_REFUSED);
    assert.equal(err.errno, 'ECONNREFUSED');
  });
  assert.equal(errors.length, 1);
  assert.equal((errors[0]!.error as UpstreamError).code, ErrorCode.UPSTREAM_REFUSED);
});

test('sendFirst: no answer is CONNECT_TIMEOUT at connectTimeoutMs; an abort ends it at once', async (t) => {
  const hole = await fullListener();
  t.after(hole.close);
  const dial = createDialer({ ...baseCfg, connectTimeoutMs: 400 }, await openAccess(), silentLogger);
  let started = performance.now();
  await expectUpstreamError(dial.sendFirst!({ host: '127.0.0.1', port: hole.port }, ctx(), Buffer.from('x'))!, ErrorCode.CONNECT_TIMEOUT);
  const took = performance.now() - started;
  assert.ok(took >= 380 && took < 2000, `timed out after ${took.toFixed(0)} ms`);

  const slow = createDialer({ ...baseCfg, connectTimeoutMs: 10_000 }, await openAccess(), silentLogger);
  const ac = new AbortController();
  setTimeout(() => ac.abort(), 100);
  started = performance.now();
  const err = await expectUpstreamError(slow.sendFirst!({ host: '127.0.0.1', port: hole.port }, ctx(), Buffer.from('x'), { signal: ac.signal })!, ErrorCode.CONNECT_TIMEOUT);
  assert.match(err.message, /client went away/);
  assert.ok(performance.now() - started < 1000);
});

test('sendFirst: a denied destination rejects with AccessDeniedError and dials nothing; a name is not its job', async () => {
  const { server, port, peers } = await plainServer();
  const dial = createDialer(baseCfg, await openAccess(['127.0.0.0/8']), silentLogger);
  await assert.rejects(dial.sendFirst!({ host: '127.0.0.1', port }, ctx(), Buffer.from('x'))!, (e: unknown) => e instanceof AccessDeniedError);
  assert.equal(dial.sendFirst!({ host: 'localhost', port }, ctx(), Buffer.from('x')), undefined);
  await new Promise((r) => setTimeout(r, 50));
  assert.deepEqual(peers, []);
  server.close();
});
