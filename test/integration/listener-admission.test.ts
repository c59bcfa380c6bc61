/**
 * Admission at accept, through the real listener: client networks and the per-client
 * connection limit. Both close the connection before a byte is read, log a warning, and
 * leave the proxy serving everyone else.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { once } from 'node:events';
import { startProxy } from '../../src/main.js';
import { validateConfig } from '../../src/config/schema.js';
import { createLogger } from '../../src/core/logger.js';

async function echoServer(): Promise<{ server: net.Server; port: number }> {
  const server = net.createServer((s) => s.pipe(s));
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { server, port: (server.address() as net.AddressInfo).port };
}

/** Resolves with the echo of `text`, or with 'closed' if the proxy closes the connection first. */
function tryEcho(port: number, text: string, localAddress = '127.0.0.1'): Promise<string> {
  return new Promise((resolve, reject) => {
    const c = net.connect({ port, host: '127.0.0.1', localAddress });
    let got = '';
    c.on('data', (d) => {
      got += d.toString();
      if (got.length >= text.length) {
        c.destroy();
        resolve(got);
      }
    });
    c.on('close', () => resolve(got.length >= text.length ? got : 'closed'));
    c.on('error', (err: NodeJS.ErrnoException) => (err.code === 'ECONNRESET' ? resolve('closed') : reject(err)));
    c.write(text);
  });
}

/** The proxy's warning may follow the close the client saw: the native engine admits clients
 *  itself and reports to JS afterwards. Waits (boundedly) for a line. */
async function logged(lines: string[], match: (l: string) => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 3000;
  while (!lines.some(match)) {
    if (Date.now() > deadline) assert.fail(`no log line: ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

async function forwarder(upstreamPort: number, access: Record<string, unknown>) {
  const lines: string[] = [];
  const log = createLogger({ level: 'info', format: 'json', sink: { write: (l) => lines.push(l) } });
  const config = validateConfig({
    listeners: [{ type: 'tcp-forward', listen: '127.0.0.1:0', to: `127.0.0.1:${upstreamPort}` }],
    access: { ...access, denyDestinations: [] },
  });
  const proxy = await startProxy(config, log);
  return { proxy, port: proxy.listeners[0]!.address()!.port, lines };
}

test('a client outside access.allowClients is closed at accept with a warning; allowed clients are served', async (t) => {
  const { server, port: echoPort } = await echoServer();
  const { proxy, port, lines } = await forwarder(echoPort, { allowClients: ['127.0.0.1/32'] });
  t.after(async () => {
    await proxy.destroy();
    server.close();
  });
  assert.equal(await tryEcho(port, 'hello', '127.0.0.2'), 'closed');
  await logged(lines, (l) => l.includes('"msg":"client denied"') && l.includes('127.0.0.2'), 'a warning names the client');
  assert.equal(await tryEcho(port, 'hello', '127.0.0.1'), 'hello');
});

test('a client at access.maxConnectionsPerClient gets its next connection closed, and a slot frees when one ends', async (t) => {
  const { server, port: echoPort } = await echoServer();
  const { proxy, port, lines } = await forwarder(echoPort, { maxConnectionsPerClient: 2 });
  t.after(async () => {
    await proxy.destroy();
    server.close();
  });
  const held = [net.connect(port, '127.0.0.1'), net.connect(port, '127.0.0.1')];
  for (const c of held) {
    c.write('x');
    await once(c, 'data');
  }
  assert.equal(await tryEcho(port, 'third'), 'closed');
  await logged(lines, (l) => l.includes('"msg":"client over its connection limit"'), 'the limit warning');
  // Another client address is not affected.
  assert.equal(await tryEcho(port, 'other', '127.0.0.5'), 'other');
  held[0]!.destroy();
  // The slot frees when the proxy has finished that connection (relay summary, access line).
  const deadline = Date.now() + 5000;
  while (proxy.listeners[0]!.connections > 1 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  assert.equal(await tryEcho(port, 'again'), 'again');
  held[1]!.destroy();
});
