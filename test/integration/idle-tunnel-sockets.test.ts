/**
 * An idle tunnel carried by the native relay holds no JavaScript socket: once the engine has the
 * fds, the front-end's session (its net.Socket, reader and request) must be garbage. Two
 * regressions of this kind were found by the bench's heap make-up (docs/design.md, "idle
 * tunnels"): a session awaiting the relay inside itself, and a closure sharing the SOCKS
 * handler's context. Here: the proxy-side client sockets of idle SOCKS5 and HTTP CONNECT
 * tunnels, seen through Node's `net.server.socket` channel, must be collected after a full GC
 * while the tunnels still carry bytes. (RawSocksClient is only a raw socket with reads by
 * length; the HTTP test speaks HTTP through it.)
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import * as diagnosticsChannel from 'node:diagnostics_channel';
import { once } from 'node:events';
import net from 'node:net';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { startProxy } from '../../src/main.js';
import { validateConfig } from '../../src/config/schema.js';
import { silentLogger } from '../../src/core/logger.js';
import { loadNativeRelayEngine } from '../../src/relay/index.js';
import { ATYP, RawSocksClient, greeting, request } from '../helpers/socks5-client.js';

const HOST = '127.0.0.1';
const TUNNELS = 20;
const noEngine = loadNativeRelayEngine() === undefined ? 'the addon has no native relay engine' : false;

type Opener = (c: RawSocksClient, echoPort: number) => Promise<void>;

const socks5: Opener = async (c, echoPort) => {
  c.send(greeting([0]));
  assert.deepEqual([...(await c.read(2))], [5, 0]);
  c.send(request({ atyp: ATYP.IPV4, host: HOST, port: echoPort }));
  assert.equal((await c.readReply()).rep, 0);
};

const httpConnect: Opener = async (c, echoPort) => {
  c.send(`CONNECT ${HOST}:${echoPort} HTTP/1.1\r\nHost: ${HOST}:${echoPort}\r\n\r\n`);
  const reply = 'HTTP/1.1 200 Connection established\r\n\r\n';
  assert.equal((await c.read(reply.length)).toString(), reply);
};

/**
 * Opens TUNNELS idle tunnels through a `type` listener, checks that the proxy-side client
 * sockets are collected, and that the tunnels still carry bytes.
 */
async function assertIdleTunnelsHoldNoSocket(t: TestContext, type: 'socks5' | 'http', open: Opener): Promise<void> {
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;

  const echo = net.createServer((s) => {
    s.on('error', () => {});
    s.pipe(s);
  });
  echo.listen(0, HOST);
  await once(echo, 'listening');
  t.after(() => echo.close());
  const echoPort = (echo.address() as net.AddressInfo).port;

  const proxy = await startProxy(
    validateConfig({ log: { level: 'error' }, relay: { engine: 'native' }, listeners: [{ name: `idle-${type}`, type, listen: `${HOST}:0` }] }),
    silentLogger,
  );
  t.after(() => proxy.destroy());
  const proxyPort = proxy.listeners[0]!.address()!.port;

  // The sockets the proxy's listener accepts (the echo server's are on another port).
  const accepted: WeakRef<net.Socket>[] = [];
  const onSocket = (m: unknown): void => {
    const { socket } = m as { socket: net.Socket };
    if (socket.localPort === proxyPort) accepted.push(new WeakRef(socket));
  };
  diagnosticsChannel.subscribe('net.server.socket', onSocket);
  t.after(() => diagnosticsChannel.unsubscribe('net.server.socket', onSocket));

  const clients: RawSocksClient[] = [];
  t.after(() => clients.forEach((c) => c.destroy()));
  for (let i = 0; i < TUNNELS; i++) {
    const c = await RawSocksClient.connect(proxyPort);
    clients.push(c);
    await open(c, echoPort);
    c.send('x');
    assert.equal((await c.read(1)).toString(), 'x');
  }
  assert.equal(accepted.length, TUNNELS, 'every tunnel came through the listener, accepted by Node');

  // WeakRefs hold their target until the end of the current job: GC between turns.
  for (let i = 0; i < 6 && accepted.some((r) => r.deref() !== undefined); i++) {
    await new Promise((r) => setTimeout(r, 20));
    gc();
  }
  const held = accepted.filter((r) => r.deref() !== undefined).length;
  assert.equal(held, 0, `${held} of ${TUNNELS} idle tunnels still hold their client net.Socket`);

  for (const [i, c] of clients.entries()) {
    c.send(`y${i}`);
    assert.equal((await c.read(`y${i}`.length)).toString(), `y${i}`, 'the tunnel still carries bytes both ways');
  }
}

test('idle SOCKS5 tunnels in the native relay: the proxy holds none of their client net.Sockets, and they still carry bytes', { skip: noEngine }, async (t) => {
  await assertIdleTunnelsHoldNoSocket(t, 'socks5', socks5);
});

test('idle HTTP CONNECT tunnels in the native relay (Node accepting): the session lets go of the client net.Socket', { skip: noEngine }, async (t) => {
  // An engine-accepted HTTP client is handed over as an fd, which net.server.socket does not
  // show; with the engine's acceptor off, Node accepts it and the same session serves it.
  const before = process.env.MPTCP_PROXY_ENGINE_ACCEPT;
  process.env.MPTCP_PROXY_ENGINE_ACCEPT = 'off';
  t.after(() => {
    if (before === undefined) delete process.env.MPTCP_PROXY_ENGINE_ACCEPT;
    else process.env.MPTCP_PROXY_ENGINE_ACCEPT = before;
  });
  await assertIdleTunnelsHoldNoSocket(t, 'http', httpConnect);
});
