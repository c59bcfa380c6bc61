/**
 * The SOCKS5 front-end end to end: real curl and raw sockets against the real listener,
 * access policy, dialer and relay on 127.0.0.1, with a local HTTP origin.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createServer } from 'node:net';
import { fileURLToPath } from 'node:url';
import { ErrorCode, UpstreamError } from '../../src/core/errors.js';
import { startHttpOrigin, startSocks5Proxy, type HttpOrigin, type Socks5TestProxy, type Socks5TestProxyOptions } from '../helpers/socks5-harness.js';
import { ATYP, CMD, RawSocksClient, greeting, request, userPass } from '../helpers/socks5-client.js';

const credentialsFile = fileURLToPath(new URL('../../../test/fixtures/credentials-good.txt', import.meta.url));

function curl(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    // A clean environment: no ALL_PROXY/NO_PROXY from the machine running the tests.
    execFile('curl', ['-sS', '--max-time', '10', ...args], { env: { PATH: process.env.PATH ?? '/usr/bin:/bin' } }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

async function setup(t: TestContext, opts: Socks5TestProxyOptions = {}): Promise<{ proxy: Socks5TestProxy; origin: HttpOrigin }> {
  const origin = await startHttpOrigin();
  t.after(() => origin.close());
  const proxy = await startSocks5Proxy(opts);
  t.after(() => proxy.close());
  return { proxy, origin };
}

async function client(t: TestContext, proxy: Socks5TestProxy): Promise<RawSocksClient> {
  const c = await RawSocksClient.connect(proxy.port);
  t.after(() => c.destroy());
  return c;
}

/** A full no-auth CONNECT + HTTP GET through the proxy: proves it still serves new clients. */
async function assertStillServes(t: TestContext, proxy: Socks5TestProxy, origin: HttpOrigin, auth?: [string, string]): Promise<void> {
  const c = await client(t, proxy);
  c.send(greeting([auth ? 2 : 0]));
  assert.deepEqual([...(await c.read(2))], [5, auth ? 2 : 0]);
  if (auth) {
    c.send(userPass(...auth));
    assert.deepEqual([...(await c.read(2))], [1, 0]);
  }
  c.send(request({ atyp: ATYP.IPV4, host: '127.0.0.1', port: origin.port }));
  assert.equal((await c.readReply()).rep, 0);
  c.send('GET /next HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
  assert.match((await c.readToEnd()).toString(), /hello from origin \/next/);
}

test('curl --socks5-hostname fetches through the proxy (domain ATYP, proxy-side DNS)', async (t) => {
  const { proxy, origin } = await setup(t);
  const r = await curl(['--socks5-hostname', `127.0.0.1:${proxy.port}`, `http://localhost:${origin.port}/via-hostname`]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, 'hello from origin /via-hostname');
  await assertStillServes(t, proxy, origin);
});

test('curl --socks5 fetches through the proxy (IPv4 ATYP, client-side DNS)', async (t) => {
  const { proxy, origin } = await setup(t);
  const r = await curl(['--socks5', `127.0.0.1:${proxy.port}`, `http://127.0.0.1:${origin.port}/via-ip`]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, 'hello from origin /via-ip');
});

test('with a credentials file, curl logs in with socks5h://user:pass@ and with --proxy-user', async (t) => {
  const { proxy, origin } = await setup(t, { access: { credentialsFile } });
  const a = await curl(['--proxy', `socks5h://alice:wonderland@127.0.0.1:${proxy.port}`, `http://localhost:${origin.port}/a`]);
  assert.equal(a.code, 0, a.stderr);
  assert.equal(a.stdout, 'hello from origin /a');
  const b = await curl(['--socks5', `127.0.0.1:${proxy.port}`, '--proxy-user', 'bob:p@ss word:with:colons ü', `http://127.0.0.1:${origin.port}/b`]);
  assert.equal(b.code, 0, b.stderr);
  assert.equal(b.stdout, 'hello from origin /b');
  const wrong = await curl(['--proxy', `socks5h://alice:nope@127.0.0.1:${proxy.port}`, `http://localhost:${origin.port}/c`]);
  assert.notEqual(wrong.code, 0, 'a wrong password must not get through');
  assert.equal(wrong.stdout, '');
  const none = await curl(['--socks5-hostname', `127.0.0.1:${proxy.port}`, `http://localhost:${origin.port}/d`]);
  assert.notEqual(none.code, 0, 'no credentials must not get through');
  await assertStillServes(t, proxy, origin, ['alice', 'wonderland']);
});

test('raw IPv4 CONNECT: reply 0x00 with BND = the upstream socket local address/port, then bytes flow', async (t) => {
  const { proxy, origin } = await setup(t);
  const c = await client(t, proxy);
  c.send(greeting([0]));
  assert.deepEqual([...(await c.read(2))], [5, 0]);
  c.send(request({ atyp: ATYP.IPV4, host: '127.0.0.1', port: origin.port }));
  const reply = await c.readReply();
  assert.deepEqual({ version: reply.version, rep: reply.rep, atyp: reply.atyp, address: reply.address }, { version: 5, rep: 0, atyp: ATYP.IPV4, address: '127.0.0.1' });
  c.send('GET /v4 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
  assert.match((await c.readToEnd()).toString(), /hello from origin \/v4/);
  assert.deepEqual(origin.peerPorts, [reply.port], 'BND.PORT is the port the origin saw us connect from');
});

test('raw IPv6 CONNECT to ::1 replies with an IPv6 BND.ADDR', async (t) => {
  const { proxy, origin } = await setup(t);
  const c = await client(t, proxy);
  c.send(greeting([0]));
  await c.read(2);
  c.send(request({ atyp: ATYP.IPV6, host: '::1', port: origin.port }));
  const reply = await c.readReply();
  assert.equal(reply.rep, 0);
  assert.equal(reply.atyp, ATYP.IPV6);
  assert.equal(reply.address, '0:0:0:0:0:0:0:1');
  c.send('GET /v6 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
  assert.match((await c.readToEnd()).toString(), /hello from origin \/v6/);
});

test('raw domain CONNECT resolves on the proxy; greeting, request and data in one packet all arrive (head bytes)', async (t) => {
  const { proxy, origin } = await setup(t);
  const c = await client(t, proxy);
  c.send(Buffer.concat([
    greeting([0]),
    request({ atyp: ATYP.DOMAIN, host: 'localhost', port: origin.port }),
    Buffer.from('GET /pipelined HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'),
  ]));
  assert.deepEqual([...(await c.read(2))], [5, 0]);
  assert.equal((await c.readReply()).rep, 0);
  assert.match((await c.readToEnd()).toString(), /hello from origin \/pipelined/);
});

test('a handshake sent one byte at a time still succeeds', async (t) => {
  const { proxy, origin } = await setup(t);
  const c = await client(t, proxy);
  c.socket.setNoDelay(true);
  const bytes = Buffer.concat([greeting([0]), request({ atyp: ATYP.DOMAIN, host: 'localhost', port: origin.port })]);
  for (const b of bytes) {
    c.send(Buffer.from([b]));
    await new Promise((r) => setTimeout(r, 2));
  }
  assert.deepEqual([...(await c.read(2))], [5, 0]);
  assert.equal((await c.readReply()).rep, 0);
});

for (const [name, cmd] of [['BIND', CMD.BIND], ['UDP ASSOCIATE', CMD.UDP_ASSOCIATE]] as const) {
  test(`${name} is answered with 0x07 command not supported and the connection is closed`, async (t) => {
    const { proxy, origin } = await setup(t);
    const c = await client(t, proxy);
    c.send(greeting([0]));
    await c.read(2);
    c.send(request({ cmd, atyp: ATYP.IPV4, host: '127.0.0.1', port: origin.port }));
    assert.equal((await c.readReply()).rep, 0x07);
    await c.waitClosed();
    const line = proxy.logs.find((l) => l.msg === 'socks5 request refused');
    assert.equal(line?.command, cmd === CMD.BIND ? 'bind' : 'udp-associate');
    await assertStillServes(t, proxy, origin);
  });
}

test('an unknown address type is answered with 0x08 and the connection is closed', async (t) => {
  const { proxy, origin } = await setup(t);
  const c = await client(t, proxy);
  c.send(greeting([0]));
  await c.read(2);
  c.send(Buffer.from([5, 1, 0, 0x07, 1, 2, 3, 4, 0, 80]));
  assert.equal((await c.readReply()).rep, 0x08);
  await c.waitClosed();
  await assertStillServes(t, proxy, origin);
});

test('a wrong request version or a non-zero reserved byte is answered with 0x01 and closed', async (t) => {
  const { proxy, origin } = await setup(t);
  for (const bad of [{ version: 4 }, { rsv: 1 }]) {
    const c = await client(t, proxy);
    c.send(greeting([0]));
    await c.read(2);
    c.send(request({ atyp: ATYP.IPV4, host: '127.0.0.1', port: origin.port, ...bad }));
    assert.equal((await c.readReply()).rep, 0x01, JSON.stringify(bad));
    await c.waitClosed();
  }
  await assertStillServes(t, proxy, origin);
});

test('a wrong password or unknown user gets RFC 1929 status 0x01 and the connection is closed', async (t) => {
  const { proxy, origin } = await setup(t, { access: { credentialsFile } });
  for (const [user, pass] of [['alice', 'Wonderland'], ['mallory', 'wonderland']] as const) {
    const c = await client(t, proxy);
    c.send(greeting([0, 2]));
    assert.deepEqual([...(await c.read(2))], [5, 2], 'username/password is selected');
    c.send(userPass(user, pass));
    assert.deepEqual([...(await c.read(2))], [1, 1]);
    await c.waitClosed();
  }
  const refused = proxy.logs.filter((l) => l.msg === 'socks5 request refused');
  assert.deepEqual(refused.map((l) => l.user), ['alice', 'mallory']);
  assert.ok(!JSON.stringify(proxy.logs).includes('Wonderland'), 'passwords are never logged');
  await assertStillServes(t, proxy, origin, ['alice', 'wonderland']);
});

test('no acceptable method gets 0xFF: no-auth proxy offered only 0x02, auth proxy offered only 0x00', async (t) => {
  const open = await setup(t);
  const c1 = await client(t, open.proxy);
  c1.send(greeting([2]));
  assert.deepEqual([...(await c1.read(2))], [5, 0xff]);
  await c1.waitClosed();
  await assertStillServes(t, open.proxy, open.origin);

  const locked = await setup(t, { access: { credentialsFile } });
  const c2 = await client(t, locked.proxy);
  c2.send(greeting([0, 1]));
  assert.deepEqual([...(await c2.read(2))], [5, 0xff]);
  await c2.waitClosed();
  await assertStillServes(t, locked.proxy, locked.origin, ['alice', 'wonderland']);
});

test('a non-SOCKS5 greeting (HTTP) gets 0xFF and is closed', async (t) => {
  const { proxy, origin } = await setup(t);
  const c = await client(t, proxy);
  c.send('GET / HTTP/1.1\r\n\r\n');
  assert.deepEqual([...(await c.read(2))], [5, 0xff]);
  await c.waitClosed();
  await assertStillServes(t, proxy, origin);
});

test('a refused port gets 0x05 connection refused', async (t) => {
  const { proxy, origin } = await setup(t);
  const free = createServer();
  await new Promise<void>((r) => free.listen(0, '127.0.0.1', () => r()));
  const port = (free.address() as { port: number }).port;
  await new Promise<void>((r) => free.close(() => r()));
  const c = await client(t, proxy);
  c.send(greeting([0]));
  await c.read(2);
  c.send(request({ atyp: ATYP.IPV4, host: '127.0.0.1', port }));
  assert.equal((await c.readReply()).rep, 0x05);
  await c.waitClosed();
  await assertStillServes(t, proxy, origin);
});

test('a denied destination gets 0x02 (metadata address, and the proxy itself by the self rule)', async (t) => {
  const { proxy, origin } = await setup(t);
  const c = await client(t, proxy);
  c.send(greeting([0]));
  await c.read(2);
  c.send(request({ atyp: ATYP.IPV4, host: '169.254.169.254', port: 80 }));
  assert.equal((await c.readReply()).rep, 0x02);
  await c.waitClosed();

  const self = await client(t, proxy);
  self.send(greeting([0]));
  await self.read(2);
  self.send(request({ atyp: ATYP.IPV4, host: '127.0.0.1', port: proxy.port }));
  assert.equal((await self.readReply()).rep, 0x02);
  await self.waitClosed();
  const rules = proxy.logs.filter((l) => l.msg === 'socks5 request refused').map((l) => (l.err as { code?: string }).code);
  assert.deepEqual(rules, [ErrorCode.ACCESS_DENIED, ErrorCode.ACCESS_DENIED]);
  await assertStillServes(t, proxy, origin);
});

test('a connect timeout from the dialer gets 0x06 TTL expired', async (t) => {
  const { proxy, origin } = await setup(t, {
    dial: (real) => async (target, ctx, opts) => {
      if (target.port === 9) throw new UpstreamError(ErrorCode.CONNECT_TIMEOUT, target, 'upstream connect timed out');
      return real(target, ctx, opts);
    },
  });
  const c = await client(t, proxy);
  c.send(greeting([0]));
  await c.read(2);
  c.send(request({ atyp: ATYP.DOMAIN, host: 'slow.example', port: 9 }));
  assert.equal((await c.readReply()).rep, 0x06);
  await c.waitClosed();
  await assertStillServes(t, proxy, origin);
});

test('an unfinished handshake is closed after handshakeTimeoutMs and logged', async (t) => {
  const { proxy, origin } = await setup(t, { handshakeTimeoutMs: 300 });
  const c = await client(t, proxy);
  const started = Date.now();
  c.send(Buffer.from([5, 2, 0])); // one method byte short
  await c.waitClosed(3000);
  const took = Date.now() - started;
  assert.ok(took >= 250 && took < 2000, `closed after ${took} ms`);
  assert.ok(proxy.logs.some((l) => l.msg === 'socks5 handshake timed out, closing' && l.level === 'info'));
  await assertStillServes(t, proxy, origin);
});

test('a client leaving mid-handshake is a debug line, not an error', async (t) => {
  const { proxy, origin } = await setup(t);
  const c = await client(t, proxy);
  c.send(Buffer.from([5, 1]));
  await new Promise((r) => setTimeout(r, 50));
  await c.end();
  await assertStillServes(t, proxy, origin);
  const eof = proxy.logs.find((l) => l.msg === 'socks5 client closed during the handshake');
  assert.equal(eof?.level, 'debug');
  assert.ok(!proxy.logs.some((l) => l.level === 'error' || l.level === 'warn'), JSON.stringify(proxy.logs.filter((l) => l.level !== 'debug')));
});
