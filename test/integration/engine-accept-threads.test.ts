/**
 * The engine's acceptor with several engine threads (relay.threads): an acceptor's thread hands
 * most of its relays to the others (CMD_ADD), and JS may abort a relay before that command has
 * run (the relay then waits for it: native/src/relay.c, abort_pending). Its own file, so the
 * engine starts here with the thread count under test (it is process-wide).
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import * as diagnosticsChannel from 'node:diagnostics_channel';
import { once } from 'node:events';
import net from 'node:net';
import { startProxy, type RunningProxy } from '../../src/main.js';
import { validateConfig } from '../../src/config/schema.js';
import { ChannelName, type ConnCloseMessage, type ConnOpenMessage } from '../../src/core/channels.js';
import { createLogger, silentLogger } from '../../src/core/logger.js';
import { ErrorCode } from '../../src/core/errors.js';
import { loadNativeAcceptor } from '../../src/listeners/engine-acceptor.js';

const HOST = '127.0.0.1';
const CLIENT = '127.0.0.9';
const acceptor = loadNativeAcceptor();
const skip = acceptor === undefined ? 'the addon has no engine acceptor' : false;

/** Connects from CLIENT, sends `text`, resolves true when it came back (false on a close first). */
function echoOnce(port: number, text: string): Promise<boolean> {
  return new Promise((resolve) => {
    const c = net.connect({ port, host: HOST, localAddress: CLIENT });
    let got = '';
    c.on('data', (d) => {
      got += d.toString();
      if (got.length >= text.length) c.end();
    });
    c.on('error', () => {});
    c.on('close', () => resolve(got === text));
    c.write(text);
  });
}

/** An echo server on HOST (closed after the test); its port. */
async function echoServer(t: TestContext): Promise<number> {
  const echo = net.createServer({ allowHalfOpen: true }, (s) => {
    s.on('error', () => {});
    s.pipe(s);
  });
  echo.listen(0, HOST);
  await once(echo, 'listening');
  t.after(() => echo.close());
  return (echo.address() as net.AddressInfo).port;
}

/** 300 short connections, 20 at a time (15 s at most): how many echoed. */
async function shortConnections(port: number): Promise<number> {
  const deadline = performance.now() + 15_000;
  let ok = 0;
  for (let batch = 0; batch < 15 && performance.now() < deadline; batch++) {
    const results = await Promise.all(Array.from({ length: 20 }, (_, i) => echoOnce(port, `b${batch}c${i}`)));
    ok += results.filter(Boolean).length;
  }
  return ok;
}

/** n clients from CLIENT, connected (the kernel's handshake: the engine may not have accepted them yet). */
async function openClients(port: number, n: number): Promise<net.Socket[]> {
  const live = Array.from({ length: n }, () => {
    const c = net.connect({ port, host: HOST, localAddress: CLIENT });
    c.on('error', () => {});
    return c;
  });
  await Promise.all(live.map((c) => once(c, 'connect')));
  return live;
}

/** destroy(), which must return within 5 s. */
async function destroyPromptly(proxy: RunningProxy): Promise<void> {
  const started = performance.now();
  await proxy.destroy();
  assert.ok(performance.now() - started < 5000, `destroy() took ${Math.round(performance.now() - started)} ms`);
}

test('with 3 engine threads, the acceptor spreads relays, accounts every connection, and destroy() cuts fresh ones', { skip, timeout: 30_000 }, async (t) => {
  const echoPort = await echoServer(t);
  const config = validateConfig({
    listeners: [{ name: 'threads', type: 'tcp-forward', listen: `${HOST}:0`, to: `${HOST}:${echoPort}` }],
    relay: { threads: 3 },
  });
  const opens: ConnOpenMessage[] = [];
  const closes: ConnCloseMessage[] = [];
  const onOpen = (m: unknown): void => void opens.push(m as ConnOpenMessage);
  const onClose = (m: unknown): void => void closes.push(m as ConnCloseMessage);
  diagnosticsChannel.subscribe(ChannelName.connOpen, onOpen);
  diagnosticsChannel.subscribe(ChannelName.connClose, onClose);
  t.after(() => {
    diagnosticsChannel.unsubscribe(ChannelName.connOpen, onOpen);
    diagnosticsChannel.unsubscribe(ChannelName.connClose, onClose);
  });
  const proxy = await startProxy(config, silentLogger);
  let destroyed = false;
  t.after(() => (destroyed ? undefined : proxy.destroy()));
  assert.equal(proxy.listeners[0]!.acceptsInEngine, true);
  const port = proxy.listeners[0]!.address()!.port;

  // 1. 300 short connections, 20 at a time: every one echoes and is accounted once
  assert.equal(await shortConnections(port), 300, 'every short connection echoed');
  for (let i = 0; i < 200 && closes.length < 300; i++) await new Promise((r) => setTimeout(r, 10));
  assert.equal(opens.length, 300);
  assert.equal(closes.length, 300);
  assert.deepEqual(new Set(closes.map((m) => m.ctx.id)), new Set(opens.map((m) => m.ctx.id)), 'each opened connection closed once');
  assert.ok(closes.every((m) => m.endedBy === 'downstream' && m.ctx.bytes.fromDownstream === m.ctx.bytes.fromUpstream));
  assert.equal(acceptor!.clientCount(CLIENT), 0, 'no slot left counted');

  // 2. 40 connections opened at once and the proxy destroyed while the engine is still handing
  //    them to their threads: all end, none is left counted, destroy() returns promptly
  const live = await openClients(port, 40);
  destroyed = true;
  await destroyPromptly(proxy);
  // A relay still connecting its upstream when cut resets its client (as a failed dial does):
  // 'close' comes after an ECONNRESET 'error' then, which events.once would reject on.
  await Promise.all(live.map((c) => (c.destroyed ? undefined : new Promise((resolve) => c.once('close', resolve)))));
  assert.equal(acceptor!.clientCount(CLIENT), 0, 'no slot left counted after destroy');
  assert.equal(opens.length, closes.length, 'every connection JS heard of was accounted');
});

test('with 3 engine threads, engine-only connections: one access line each from whichever thread, ids unique, destroy() cuts fresh ones', { skip, timeout: 30_000 }, async (t) => {
  const echoPort = await echoServer(t);
  const config = validateConfig({
    log: { format: 'json', access: true },
    listeners: [{ name: 'threads-only', type: 'tcp-forward', listen: `${HOST}:0`, to: `${HOST}:${echoPort}` }],
    relay: { threads: 3 },
  });
  const access: Array<Record<string, unknown>> = [];
  const sink = {
    write(text: string) {
      for (const line of text.split('\n')) if (line !== '' && line.includes('"msg":"access"')) access.push(JSON.parse(line) as Record<string, unknown>);
    },
  };
  // Nothing subscribes now (the test before unsubscribed): the engine carries them alone.
  const proxy = await startProxy(config, createLogger({ format: 'json', sink }));
  let destroyed = false;
  t.after(() => (destroyed ? undefined : proxy.destroy()));
  assert.equal(proxy.listeners[0]!.engineOnly, true);
  const port = proxy.listeners[0]!.address()!.port;

  assert.equal(await shortConnections(port), 300, 'every short connection echoed');
  for (let i = 0; i < 300 && access.length < 300; i++) await new Promise((r) => setTimeout(r, 10));
  assert.equal(access.length, 300, 'one line per connection');
  assert.equal(new Set(access.map((l) => l.conn)).size, 300, 'no id twice');
  assert.ok(access.every((l) => l.endedBy === 'downstream' && l.bytesUp === l.bytesDown && l.error === undefined));
  assert.equal(acceptor!.clientCount(CLIENT), 0, 'no slot left counted');

  const live = await openClients(port, 40);
  destroyed = true;
  await destroyPromptly(proxy);
  await Promise.all(live.map((c) => (c.destroyed ? undefined : new Promise((resolve) => c.once('close', resolve)))));
  assert.equal(acceptor!.clientCount(CLIENT), 0, 'no slot left counted after destroy');
  // Clients the engine had not accepted yet were reset by the listener's close (no line, as for
  // the JS way); each one it had accepted has its line, written before destroy() resolved.
  const cut = access.length - 300;
  assert.ok(cut > 0 && cut <= 40, `${cut} lines for the 40 clients`);
  await new Promise((r) => setTimeout(r, 200));
  assert.equal(access.length - 300, cut, 'no line came after destroy() resolved');
  assert.ok(access.slice(300).every((l) => l.error === ErrorCode.RELAY_ABORTED && l.endedBy === 'proxy'));
});
