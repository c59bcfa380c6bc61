/**
 * The MPTCP socket layer against the real kernel, on loopback (one subflow: there is
 * only one path). Skipped, with the reason, when this host cannot create MPTCP sockets.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { readdirSync } from 'node:fs';
import * as net from 'node:net';
import { execFileSync } from 'node:child_process';
import { once } from 'node:events';
import {
  connectMptcp,
  isMptcpSocket,
  listenMptcp,
  loadNative,
  mptcpSupport,
  originalDestination,
  readMptcpInfo,
  readSubflowCount,
  readSubflows,
  sampleSubflowsOfFd,
  socketFd,
  subflowAddresses,
} from '../../src/mptcp/index.js';

const MiB = 1024 * 1024;

function skipUnlessMptcp(t: TestContext): boolean {
  const support = mptcpSupport();
  if (!support.available) {
    t.skip(`MPTCP unavailable: ${support.reason}`);
    return true;
  }
  return false;
}

/** Close a server after destroying its open connections (close() alone waits for them). */
function closeServer(server: net.Server): Promise<void> {
  const open = connections.get(server);
  if (open) for (const socket of open) socket.destroy();
  return new Promise((resolve) => {
    if (!server.listening) return resolve();
    server.close(() => resolve());
  });
}

const connections = new WeakMap<net.Server, Set<net.Socket>>();

/** Remember a server's accepted sockets so teardown can destroy them. */
function trackConnections(server: net.Server): net.Server {
  const open = new Set<net.Socket>();
  connections.set(server, open);
  server.on('connection', (socket: net.Socket) => {
    open.add(socket);
    socket.once('close', () => open.delete(socket));
  });
  return server;
}

/** Collect exactly `n` bytes from a socket, leaving it open (an async iterator's
 *  early `break` would destroy the socket). */
function readBytes(socket: net.Socket, n: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let got = 0;
    const onData = (chunk: Buffer): void => {
      chunks.push(chunk);
      got += chunk.length;
      if (got >= n) {
        done();
        resolve(Buffer.concat(chunks).subarray(0, n));
      }
    };
    const onEnd = (): void => {
      done();
      reject(new Error(`stream ended after ${got} of ${n} bytes`));
    };
    const onError = (err: Error): void => {
      done();
      reject(err);
    };
    const done = (): void => {
      socket.off('data', onData).off('end', onEnd).off('error', onError);
    };
    socket.on('data', onData).on('end', onEnd).on('error', onError);
  });
}

function sha256(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

/** An MPTCP listener whose 'connection' sockets are handed to the test. */
async function mptcpServer(t: TestContext, host = '127.0.0.1'): Promise<{ server: net.Server; port: number; accepted: Promise<net.Socket> }> {
  const server = trackConnections(net.createServer());
  const accepted = once(server, 'connection').then(([s]) => s as net.Socket);
  const result = await listenMptcp(server, { host, port: 0, mode: 'on' });
  assert.equal(result.mptcp, true);
  assert.ok(result.address.port > 0, 'port 0 resolved to a real port');
  t.after(() => closeServer(server));
  return { server, port: result.address.port, accepted };
}

test('MPTCP listener and connectMptcp client exchange 1 MiB each way and both ends are MPTCP with one subflow', async (t) => {
  if (skipUnlessMptcp(t)) return;
  const { port, accepted } = await mptcpServer(t);

  const client = connectMptcp({ host: '127.0.0.1', port, mptcp: true });
  t.after(() => client.destroy());
  await once(client, 'connect');
  const server = await accepted;
  t.after(() => server.destroy());

  const up = randomBytes(MiB);
  const down = randomBytes(MiB);
  const serverGot = readBytes(server, MiB);
  const clientGot = readBytes(client, MiB);
  client.write(up);
  server.write(down);
  assert.equal(sha256(await serverGot), sha256(up), 'server received the client bytes intact');
  assert.equal(sha256(await clientGot), sha256(down), 'client received the server bytes intact');

  assert.equal(isMptcpSocket(client), true);
  assert.equal(isMptcpSocket(server), true);

  const ci = readMptcpInfo(client);
  const si = readMptcpInfo(server);
  assert.ok(ci && si, 'both ends report MPTCP_INFO');
  assert.notEqual(ci.token, 0);
  assert.notEqual(si.token, 0);
  // RFC 8684 §3.2: each end's token is derived from its own key, so they differ.
  assert.notEqual(ci.token, si.token);
  assert.equal(ci.fallback, false);
  assert.equal(ci.remoteKeyReceived, true);
  // Both ends agree on the data sequence space once everything is delivered.
  assert.equal(si.rcvNxt, ci.writeSeq, "server's next expected DSN is the client's write_seq");
  assert.equal(ci.rcvNxt, si.writeSeq, "client's next expected DSN is the server's write_seq");
  if (ci.bytesSent !== undefined) {
    assert.ok(ci.bytesSent >= MiB, 'client MPTCP-level bytes_sent counts the upload');
    assert.ok((si.bytesReceived ?? 0) >= MiB, 'server MPTCP-level bytes_received counts the upload');
  }

  for (const [name, socket] of [['client', client], ['server', server]] as const) {
    const subflows = readSubflows(socket);
    assert.equal(subflows.length, 1, `${name} has exactly one subflow on loopback`);
    const [sf] = subflows;
    assert.ok(sf);
    assert.equal(sf.local?.address, socket.localAddress);
    assert.equal(sf.local?.port, socket.localPort);
    assert.equal(sf.remote?.address, socket.remoteAddress);
    assert.equal(sf.remote?.port, socket.remotePort);
    assert.equal(sf.state, 'ESTABLISHED');
    assert.ok(sf.bytesSent >= MiB, `${name} subflow sent at least 1 MiB (got ${sf.bytesSent})`);
    assert.ok(sf.bytesReceived >= MiB, `${name} subflow received at least 1 MiB (got ${sf.bytesReceived})`);
    assert.ok(sf.rttUs > 0, `${name} subflow has an RTT sample`);
    assert.equal(subflowAddresses(sf), `${socket.localAddress}:${socket.localPort} -> ${socket.remoteAddress}:${socket.remotePort}`);
  }
});

test('a plain net.connect client is served by the MPTCP listener, which reports it as fallen back (not MPTCP, no info)', async (t) => {
  if (skipUnlessMptcp(t)) return;
  const { port, accepted } = await mptcpServer(t);
  const client = net.connect({ host: '127.0.0.1', port });
  t.after(() => client.destroy());
  await once(client, 'connect');
  const server = await accepted;
  t.after(() => server.destroy());

  server.write('ping');
  assert.equal((await readBytes(client, 4)).toString(), 'ping');
  assert.equal(isMptcpSocket(server), false);
  assert.equal(readMptcpInfo(server), null);
  assert.deepEqual(readSubflows(server), []);
});

test('connectMptcp to a plain TCP server falls back to TCP in the handshake and still carries data', async (t) => {
  if (skipUnlessMptcp(t)) return;
  const server = trackConnections(net.createServer((s) => s.pipe(s)));
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.after(() => closeServer(server));
  const { port } = server.address() as net.AddressInfo;

  const client = connectMptcp({ host: '127.0.0.1', port, mptcp: true });
  t.after(() => client.destroy());
  await once(client, 'connect');
  client.write('echo');
  assert.equal((await readBytes(client, 4)).toString(), 'echo');
  assert.equal(isMptcpSocket(client), false);
  assert.equal(readMptcpInfo(client), null);
});

test('connectMptcp to a closed port emits a normal ECONNREFUSED error event', async (t) => {
  if (skipUnlessMptcp(t)) return;
  // Find a port nobody listens on: bind, read the port, close.
  const probe = net.createServer().listen(0, '127.0.0.1');
  await once(probe, 'listening');
  const { port } = probe.address() as net.AddressInfo;
  await closeServer(probe);

  const client = connectMptcp({ host: '127.0.0.1', port, mptcp: true });
  t.after(() => client.destroy());
  const [err] = (await once(client, 'error')) as [NodeJS.ErrnoException];
  assert.equal(err.code, 'ECONNREFUSED');
  assert.equal(err.syscall, 'connect');
});

function openFds(): number {
  return readdirSync('/proc/self/fd').length;
}

test('listenMptcp on a port in use rejects with EADDRINUSE and leaks no file descriptor', async (t) => {
  if (skipUnlessMptcp(t)) return;
  const { port } = await mptcpServer(t);
  const before = openFds();
  const second = net.createServer();
  await assert.rejects(listenMptcp(second, { host: '127.0.0.1', port, mode: 'on' }), (err: NodeJS.ErrnoException) => {
    assert.equal(err.code, 'EADDRINUSE');
    assert.equal(err.syscall, 'bind');
    assert.equal(typeof err.errno, 'number');
    assert.equal((err as NodeJS.ErrnoException & { address?: string }).address, '127.0.0.1');
    assert.equal((err as NodeJS.ErrnoException & { port?: number }).port, port);
    return true;
  });
  assert.equal(second.listening, false);
  assert.equal(openFds(), before, 'the failed MPTCP fd was closed');
});

test('native calls on a bad fd throw Node-shaped errors: code EBADF, numeric errno, syscall', (t) => {
  if (skipUnlessMptcp(t)) return;
  const native = loadNative();
  // Reserve then release an fd number so it is certainly closed.
  const fd = native.socket(4, false);
  native.close(fd);
  const calls: Array<[string, () => unknown]> = [
    ['getsockopt(MPTCP_INFO)', () => native.mptcpInfo(fd)],
    ['getsockopt(TCP_IS_MPTCP)', () => native.isMptcp(fd)],
    ['getsockopt(MPTCP_FULL_INFO)', () => native.subflows(fd)],
    ['getsockopt(MPTCP_INFO)', () => native.subflowSummary(fd)],
    ['getsockopt(MPTCP_INFO)', () => native.subflowCount(fd)],
    ['bind', () => native.bind(fd, '127.0.0.1', 0)],
    ['getsockname', () => native.localAddress(fd)],
  ];
  for (const [syscall, call] of calls) {
    assert.throws(call, (err: NodeJS.ErrnoException) => {
      assert.equal(err.code, 'EBADF');
      assert.equal(err.errno, -9);
      assert.equal(err.syscall, syscall);
      assert.equal(err.message, `${syscall} EBADF: Bad file descriptor`);
      return true;
    });
  }
});

test('listenMptcp on "::" is dual-stack: an IPv4 client connects and is MPTCP', async (t) => {
  if (skipUnlessMptcp(t)) return;
  const { port, accepted } = await mptcpServer(t, '::');
  const client = connectMptcp({ host: '127.0.0.1', port, mptcp: true });
  t.after(() => client.destroy());
  await once(client, 'connect');
  const server = await accepted;
  t.after(() => server.destroy());
  assert.equal(server.remoteAddress, '::ffff:127.0.0.1');
  assert.equal(isMptcpSocket(server), true);
  const [sf] = readSubflows(server);
  assert.equal(sf?.remote?.port, client.localPort);
});

/** What the narrow calls must equal: the full views, filtered and formatted in TS. */
function slowSummary(socket: net.Socket): { count: number; paths: string[] } | null {
  const info = readMptcpInfo(socket);
  if (info === null) return null;
  const paths = readSubflows(socket)
    .filter((sf) => sf.remote !== null && sf.remote.port !== 0)
    .map(subflowAddresses);
  return { count: Math.max(info.subflowsTotal ?? info.extraSubflows + 1, paths.length), paths };
}

for (const [label, listenHost, connectHost, serverRemote] of [
  ['IPv4', '127.0.0.1', '127.0.0.1', (p: number) => `127.0.0.1:${p}`],
  ['IPv6', '::1', '::1', (p: number) => `[::1]:${p}`],
  ['IPv4-mapped (dual-stack listener)', '::', '127.0.0.1', (p: number) => `127.0.0.1:${p}`],
] as const) {
  test(`subflowSummary / subflowCount equal the full MPTCP_INFO + subflow views (${label})`, async (t) => {
    if (skipUnlessMptcp(t)) return;
    const { port, accepted } = await mptcpServer(t, listenHost);
    const client = connectMptcp({ host: connectHost, port, mptcp: true });
    t.after(() => client.destroy());
    await once(client, 'connect');
    const server = await accepted;
    t.after(() => server.destroy());
    server.write('ping');
    assert.equal((await readBytes(client, 4)).toString(), 'ping');
    const native = loadNative();
    for (const socket of [client, server]) {
      const fd = socketFd(socket);
      const slow = slowSummary(socket);
      assert.ok(slow, 'MPTCP on loopback');
      assert.equal(slow.count, 1);
      assert.equal(slow.paths.length, 1);
      assert.deepEqual(native.subflowSummary(fd), slow);
      assert.deepEqual(sampleSubflowsOfFd(fd), slow);
      assert.equal(native.subflowCount(fd), slow.count);
      assert.equal(readSubflowCount(socket), slow.count);
    }
    // The exact text, not just agreement with the TS formatter: IPv6 in brackets, mapped IPv4 bare.
    assert.equal(native.subflowSummary(socketFd(server))?.paths[0]?.split(' -> ')[1], serverRemote(client.localPort ?? 0));
  });
}

test('subflowSummary / subflowCount are null on a fallen-back MPTCP socket and on plain TCP', async (t) => {
  if (skipUnlessMptcp(t)) return;
  const { port, accepted } = await mptcpServer(t);
  const client = net.connect({ host: '127.0.0.1', port });
  t.after(() => client.destroy());
  await once(client, 'connect');
  const server = await accepted;
  t.after(() => server.destroy());
  const native = loadNative();
  for (const socket of [server, client]) {
    const fd = socketFd(socket);
    assert.equal(native.subflowSummary(fd), null);
    assert.equal(native.subflowCount(fd), null);
    assert.equal(sampleSubflowsOfFd(fd), undefined);
    assert.equal(readSubflowCount(socket), undefined);
  }
});

test('listenMptcp mode off listens on plain TCP and reports mptcp false', async (t) => {
  const server = net.createServer();
  const result = await listenMptcp(server, { host: '127.0.0.1', port: 0, mode: 'off' });
  t.after(() => closeServer(server));
  assert.equal(result.mptcp, false);
  assert.equal(result.address.port, (server.address() as net.AddressInfo).port);
});

/** A listening socket's accept-queue limit, from `ss -ltn`'s Send-Q (the backlog the kernel uses). */
function listenBacklog(port: number): number {
  const out = execFileSync('ss', ['-Hltn', `sport = :${port}`], { encoding: 'utf8' }).trim();
  const sendQ = Number(out.split(/\s+/)[2]);
  assert.ok(Number.isInteger(sendQ), `no listening socket on port ${port} in ss output: ${JSON.stringify(out)}`);
  return sendQ;
}

for (const mode of ['on', 'off'] as const) {
  test(`listenMptcp honours the backlog option (mode ${mode}, own fd ${mode === 'on'})`, async (t) => {
    if (mode === 'on' && skipUnlessMptcp(t)) return;
    const server = net.createServer();
    const result = await listenMptcp(server, { host: '127.0.0.1', port: 0, mode, backlog: 1234 });
    t.after(() => closeServer(server));
    // Node's default is 511: a listener that ignores the option shows that instead.
    assert.equal(listenBacklog(result.address.port), 1234);
  });
}

test('originalDestination: without a NAT entry a plain client gets the listener address; MPTCP under REDIRECT is refused with a clear error; tproxy reads the local address', async (t) => {
  if (skipUnlessMptcp(t)) return;
  const { server: listener, port, accepted } = await mptcpServer(t);
  const mptcpClient = connectMptcp({ host: '127.0.0.1', port, mptcp: true });
  t.after(() => mptcpClient.destroy());
  await once(mptcpClient, 'connect');
  const server = await accepted;
  t.after(() => server.destroy());

  assert.deepEqual(originalDestination(server, 'tproxy'), { address: '127.0.0.1', port });
  assert.throws(() => originalDestination(server, 'redirect'), (err: Error & { code?: string }) => {
    assert.equal(err.code, 'MPX_ERR_NOT_SUPPORTED');
    assert.match(err.message, /tproxy/);
    return true;
  });

  // A fallen-back (plain TCP) client with no conntrack NAT entry: ENOENT → our own address.
  const nextConnection = once(listener, 'connection');
  const plainClient = net.connect({ host: '127.0.0.1', port });
  t.after(() => plainClient.destroy());
  const [plainServer] = (await nextConnection) as [net.Socket];
  assert.deepEqual(originalDestination(plainServer), { address: '127.0.0.1', port });
});
