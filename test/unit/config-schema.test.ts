import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { validateConfig, parseHostPort } from '../../src/config/schema.js';
import { defaultConfig, parseConfigText } from '../../src/config/load.js';
import { ConfigError } from '../../src/core/errors.js';

const fixture = (name: string) => {
  const path = new URL(`../../../test/fixtures/config/${name}`, import.meta.url);
  return { text: readFileSync(path, 'utf8'), source: name };
};

/** Asserts that `fn` throws a ConfigError for `key` whose message contains `words`. */
function assertConfigError(fn: () => unknown, key: string, words: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof ConfigError, `expected ConfigError, got ${String(err)}`);
    assert.equal(err.key, key);
    assert.match(err.message, words);
    assert.match(err.message, /Fix: /);
    return true;
  });
}

test('the embedded default config validates to an HTTP proxy on 3128 and SOCKS5 on 1080, both MPTCP-auto', () => {
  const c = defaultConfig();
  assert.deepEqual(c.listeners.map((l) => [l.type, l.listen.host, l.listen.port, l.mptcp]), [
    ['http', '::', 3128, 'auto'],
    ['socks5', '::', 1080, 'auto'],
  ]);
  assert.equal(c.upstream.mptcp, 'auto');
  assert.ok(c.access.allowClients.includes('192.168.0.0/16'));
  assert.ok(c.access.denyDestinations.includes('169.254.0.0/16'));
});

test('a config with every front-end type keeps its values and fills the rest with defaults', () => {
  const { text, source } = fixture('good-all-frontends.yaml');
  const c = parseConfigText(text, source);
  assert.equal(c.log.format, 'json');
  const [web, socks, fwd, tp] = c.listeners;
  assert.equal(web?.type, 'http');
  assert.ok(web?.type === 'http' && web.maxHeaderBytes === 32768 && web.via === 'edge-1' && web.maxHeaderCount === 100);
  assert.deepEqual(socks?.listen, { host: '::1', port: 1080 });
  assert.equal(socks?.mptcp, 'on');
  assert.ok(fwd?.type === 'tcp-forward', 'third listener is tcp-forward');
  assert.deepEqual(fwd.to, { host: 'example.com', port: 80 });
  assert.deepEqual(fwd.listen, { host: '::', port: 9000 });
  assert.ok(tp?.type === 'transparent' && tp.mode === 'tproxy');
  assert.equal(c.upstream.connectTimeoutMs, 3000);
  assert.equal(c.upstream.dnsTimeoutMs, 5000);
  assert.equal(c.relay.idleTimeoutMs, 0);
  assert.deepEqual(c.access.denyPorts, ['25', '6000-6063']);
});

test('a misspelt key is an error that names it and suggests the right one', () => {
  const { text, source } = fixture('bad-unknown-key.yaml');
  assertConfigError(() => parseConfigText(text, source), 'upstream.mptpc', /did you mean "mptcp"/);
});

test('an IPv6 listen address without brackets is an error naming listeners[0].listen', () => {
  const { text, source } = fixture('bad-listen.yaml');
  assertConfigError(() => parseConfigText(text, source), 'listeners[0].listen', /must be in brackets/);
});

test('a YAML syntax error names the file, line and column', () => {
  const { text, source } = fixture('bad-yaml.yaml');
  assert.throws(() => parseConfigText(text, source), (err: unknown) => {
    assert.ok(err instanceof ConfigError);
    assert.match(err.key, /^bad-yaml\.yaml:\d+:\d+$/);
    assert.match(err.message, /YAML syntax error/);
    return true;
  });
});

test('a tcp-forward listener without "to" is an error saying how to add it', () => {
  const { text, source } = fixture('bad-forward-no-to.yaml');
  assertConfigError(() => parseConfigText(text, source), 'listeners[0].to', /is required/);
});

test('wrong value types and ranges name the key', () => {
  const base = { listeners: [{ type: 'http', listen: ':3128' }] };
  assertConfigError(() => validateConfig({ ...base, upstream: { connectTimeoutMs: 'soon' } }), 'upstream.connectTimeoutMs', /whole number/);
  assertConfigError(() => validateConfig({ ...base, upstream: { mptcp: 'maybe' } }), 'upstream.mptcp', /one of on, auto, off/);
  assertConfigError(() => validateConfig({ ...base, access: { allowClients: ['10.0.0.0/33'] } }), 'access.allowClients[0]', /prefix length "\/33" is not a number from 0 to 32/);
  assertConfigError(() => validateConfig({ ...base, access: { denyPorts: ['9-1'] } }), 'access.denyPorts[0]', /port range/);
  assertConfigError(() => validateConfig({ listeners: [] }), 'listeners', /non-empty list/);
  assertConfigError(() => validateConfig({ listeners: [{ listen: ':1' }] }), 'listeners[0].type', /is required/);
  assertConfigError(
    () => validateConfig({ listeners: [{ type: 'http', listen: ':1' }, { type: 'socks5', listen: ':1' }] }),
    'listeners[1].listen',
    /used by another listener/,
  );
  assertConfigError(() => validateConfig({ ...base, log: 'loud' }), 'log', /expected a mapping/);
});

test('YAML booleans for mptcp (on/off written unquoted by some tools) are accepted', () => {
  const c = validateConfig({ listeners: [{ type: 'socks5', listen: ':1080', mptcp: true }], upstream: { mptcp: false } });
  assert.equal(c.listeners[0]?.mptcp, 'on');
  assert.equal(c.upstream.mptcp, 'off');
});

test('host:port parsing covers IPv4, bracketed IPv6, bare ports and names', () => {
  assert.deepEqual(parseHostPort('127.0.0.1:80', 'k'), { host: '127.0.0.1', port: 80 });
  assert.deepEqual(parseHostPort('[2001:db8::1]:443', 'k'), { host: '2001:db8::1', port: 443 });
  assert.deepEqual(parseHostPort('8080', 'k'), { host: '::', port: 8080 });
  assert.deepEqual(parseHostPort(':0', 'k', { allowPortZero: true }), { host: '::', port: 0 });
  assert.deepEqual(parseHostPort('example.com:80', 'k', { requireHost: true }), { host: 'example.com', port: 80 });
  assert.throws(() => parseHostPort(':80', 'k', { requireHost: true }), ConfigError);
  assert.throws(() => parseHostPort('host:99999', 'k'), ConfigError);
  assert.throws(() => parseHostPort('bad_host!:80', 'k'), ConfigError);
  assert.throws(() => parseHostPort('[not-v6]:80', 'k'), ConfigError);
});

const L = [{ type: 'http', listen: '127.0.0.1:3128' }];
test('relay.capBuffers*: defaults on (1 MiB floor, 10 Gbit/s, 1 MiB not sent), and out-of-range values name their key', () => {
  const c = validateConfig({ listeners: L });
  assert.deepEqual(
    [c.relay.capBuffers, c.relay.capBuffersMinBytes, c.relay.capBuffersRateMbit, c.relay.capBuffersNotsentBytes],
    [true, 1_048_576, 10_000, 1_048_576],
  );
  const off = validateConfig({
    listeners: L,
    relay: { capBuffers: false, capBuffersMinBytes: 262_144, capBuffersRateMbit: 25_000, capBuffersNotsentBytes: 0 },
  });
  assert.deepEqual(
    [off.relay.capBuffers, off.relay.capBuffersMinBytes, off.relay.capBuffersRateMbit, off.relay.capBuffersNotsentBytes],
    [false, 262_144, 25_000, 0],
  );
  assertConfigError(() => validateConfig({ listeners: L, relay: { capBuffersNotsentBytes: -1 } }), 'relay.capBuffersNotsentBytes', /0/);
  assertConfigError(() => validateConfig({ listeners: L, relay: { capBuffersMinBytes: 4096 } }), 'relay.capBuffersMinBytes', /65536/);
  assertConfigError(() => validateConfig({ listeners: L, relay: { capBuffersRateMbit: 0 } }), 'relay.capBuffersRateMbit', /1/);
  assertConfigError(() => validateConfig({ listeners: L, relay: { capBuffers: 'yes' } }), 'relay.capBuffers', /true or false|boolean/);
});
