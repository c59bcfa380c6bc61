/**
 * The proxy's lifecycle with live connections, for both relay engines: close() stops
 * accepting and waits for live connections (even those whose bytes the native engine
 * carries, where no JS socket is left), destroy() cuts them.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { once } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import { startProxy } from '../../src/main.js';
import { validateConfig } from '../../src/config/schema.js';
import { silentLogger } from '../../src/core/logger.js';

async function echoServer(): Promise<{ server: net.Server; port: number }> {
  const server = net.createServer({ allowHalfOpen: true }, (s) => s.pipe(s));
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { server, port: (server.address() as net.AddressInfo).port };
}

async function forwarder(engine: 'native' | 'js', upstreamPort: number) {
  const config = validateConfig({
    log: { level: 'error', access: false },
    listeners: [{ type: 'tcp-forward', listen: '127.0.0.1:0', to: `127.0.0.1:${upstreamPort}` }],
    relay: { engine },
  });
  const proxy = await startProxy(config, silentLogger);
  return { proxy, port: proxy.listeners[0]!.address()!.port };
}

/** A client that has proven the relay works (one echo round trip) and stays connected. */
async function liveClient(port: number): Promise<net.Socket> {
  const c = net.connect(port, '127.0.0.1');
  await once(c, 'connect');
  c.write('ping');
  const [echo] = (await once(c, 'data')) as [Buffer];
  assert.equal(echo.toString(), 'ping');
  return c;
}

for (const engine of ['native', 'js'] as const) {
  test(`${engine} relay: close() waits for a live connection and resolves once it ends`, async (t) => {
    const { server, port: echoPort } = await echoServer();
    t.after(() => server.close());
    const { proxy, port } = await forwarder(engine, echoPort);
    const client = await liveClient(port);
    let closed = false;
    const closing = proxy.close().then(() => {
      closed = true;
    });
    await sleep(200);
    assert.equal(closed, false, 'close() must wait for the live connection');
    assert.equal(proxy.listeners[0]!.connections, 1);
    // New connections are refused once closing.
    const refused = net.connect(port, '127.0.0.1');
    const [err] = (await once(refused, 'error')) as [NodeJS.ErrnoException];
    assert.equal(err.code, 'ECONNREFUSED');
    client.end();
    await once(client, 'close');
    await closing;
    assert.equal(closed, true);
  });

  test(`${engine} relay: destroy() cuts a live connection and resolves`, async (t) => {
    const { server, port: echoPort } = await echoServer();
    t.after(() => server.close());
    const { proxy, port } = await forwarder(engine, echoPort);
    const client = await liveClient(port);
    client.on('error', () => {}); // a reset is an acceptable way to be cut
    const clientClosed = once(client, 'close');
    await proxy.destroy();
    await clientClosed;
    assert.equal(proxy.listeners[0]!.connections, 0);
  });
}
