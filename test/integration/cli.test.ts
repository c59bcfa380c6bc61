/**
 * The command line as a user meets it: bad input gets one readable line naming the problem
 * and an exit code, never a stack trace; the helper commands produce what they promise.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import net from 'node:net';
import { fileURLToPath } from 'node:url';
import { createCredentialStore, parseCredentials } from '../../src/access/credentials.js';

const CLI = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));
const fixture = (name: string) => fileURLToPath(new URL(`../../../test/fixtures/config/${name}`, import.meta.url));

function cli(args: string[], input?: string) {
  const r = spawnSync(process.execPath, [CLI, ...args], { input, encoding: 'utf8', timeout: 20_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

function assertNoStackTrace(text: string): void {
  assert.doesNotMatch(text, /\n\s+at .+:\d+:\d+/, `no stack trace in: ${text}`);
}

test('check-config accepts a good file and names the listeners', () => {
  const r = cli(['check-config', fixture('good-all-frontends.yaml')]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /OK — 4 listener\(s\): web \(http\), socks \(socks5\), fwd \(tcp-forward\), tp \(transparent\)/);
});

test('check-config on a bad file exits 2 with one line naming the key and the fix', () => {
  const r = cli(['check-config', fixture('bad-unknown-key.yaml')]);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /config key "upstream\.mptpc": unknown key\. Fix: did you mean "mptcp"\?/);
  assertNoStackTrace(r.stderr);
});

test('start with a config file that does not exist exits 2 saying which file', () => {
  const r = cli(['start', '--config', '/nonexistent/mpx.yaml']);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /cannot read "\/nonexistent\/mpx\.yaml" \(ENOENT\)/);
  assertNoStackTrace(r.stderr);
});

test('forward without --to exits 2 with the usage', () => {
  const r = cli(['forward', '--listen', '127.0.0.1:0']);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /forward needs --to HOST:PORT/);
  assert.match(r.stderr, /Usage:/);
  assertNoStackTrace(r.stderr);
});

test('an unknown option or command exits 2 with the usage', () => {
  for (const args of [['start', '--bogus'], ['frobnicate']]) {
    const r = cli(args);
    assert.equal(r.code, 2, args.join(' '));
    assert.match(r.stderr, /Usage:/);
    assertNoStackTrace(r.stderr);
  }
});

test('a bad --log-level is reported as the config key it overrides', () => {
  const r = cli(['forward', '--listen', '127.0.0.1:0', '--to', '127.0.0.1:9', '--log-level', 'loud']);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /config key "log\.level": expected one of debug, info, warn, error, silent/);
});

test('passwd prints a credentials line the proxy accepts for that password only', async () => {
  const r = cli(['passwd', 'carol'], 'sesame\n');
  assert.equal(r.code, 0, r.stderr);
  const store = createCredentialStore(parseCredentials(r.stdout, 'stdout'));
  assert.equal(await store.verify('carol', 'sesame'), true);
  assert.equal(await store.verify('carol', 'Sesame'), false);
});

test('passwd refuses a user name the file cannot hold', () => {
  const r = cli(['passwd', 'bad:name'], 'x\n');
  assert.equal(r.code, 2);
  assert.match(r.stderr, /user name "bad:name" is not allowed/);
});

test('print-default-config prints YAML that check-config accepts', async () => {
  const r = cli(['print-default-config']);
  assert.equal(r.code, 0);
  const { writeFileSync, mkdtempSync, rmSync } = await import('node:fs');
  const { tmpdir } = await import('node:os');
  const { join } = await import('node:path');
  const dir = mkdtempSync(join(tmpdir(), 'mpx-cli-'));
  try {
    writeFileSync(join(dir, 'default.yaml'), r.stdout);
    const check = cli(['check-config', join(dir, 'default.yaml')]);
    assert.equal(check.code, 0, check.stderr);
    assert.match(check.stdout, /http \(http\), socks5 \(socks5\)/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('doctor reports each check on its own line and exits 0 on this MPTCP host', () => {
  const r = cli(['doctor']);
  assert.match(r.stdout, /^\[(ok  |warn|FAIL)\] kernel MPTCP: /m);
  assert.match(r.stdout, /^\[(ok  |warn|FAIL)\] MPTCP sockets: /m);
  assert.match(r.stdout, /^\[(ok  |warn|FAIL)\] MPTCP limits: /m);
  if (/\[FAIL\]/.test(r.stdout)) assert.equal(r.code, 1);
  else assert.equal(r.code, 0);
});

test('forward on a port another program holds exits 1 naming the address, the port and the fix', async () => {
  const holder = net.createServer().listen(0, '127.0.0.1');
  await new Promise((r) => holder.once('listening', r));
  const port = (holder.address() as net.AddressInfo).port;
  try {
    const r = cli(['forward', '--listen', `127.0.0.1:${port}`, '--to', '127.0.0.1:9']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, new RegExp(`cannot listen on 127\\.0\\.0\\.1:${port} \\(EADDRINUSE\\): another program uses this port`));
    assertNoStackTrace(r.stderr);
  } finally {
    holder.close();
  }
});
