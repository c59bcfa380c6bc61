import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ConfigError } from '../../src/core/errors.js';
import { compileCidrList, formatIp, formatIpBytes, parseCanonicalIp, parseCidr, parseIp } from '../../src/access/cidr.js';
import { compilePortList, parsePortRange } from '../../src/access/ports.js';

test('parseIp reads IPv4 and IPv6 literals, including "::" forms, an IPv4 tail and a zone id', () => {
  assert.deepEqual(parseIp('10.1.2.3'), { family: 4, value: 0x0a010203n });
  assert.deepEqual(parseIp('::'), { family: 6, value: 0n });
  assert.deepEqual(parseIp('::1'), { family: 6, value: 1n });
  assert.deepEqual(parseIp('2001:db8::1'), { family: 6, value: (0x20010db8n << 96n) | 1n });
  assert.deepEqual(parseIp('fe80::1%eth0'), { family: 6, value: (0xfe80n << 112n) | 1n });
  assert.deepEqual(parseIp('::ffff:10.1.2.3'), { family: 6, value: (0xffffn << 32n) | 0x0a010203n });
  assert.deepEqual(parseIp('1:2:3:4:5:6:7:8'), parseIp('1:2:3:4:5:6:7:8'));
});

test('parseIp rejects malformed literals and host names', () => {
  for (const bad of ['', 'localhost', '1.2.3', '1.2.3.4.5', '256.1.1.1', '01.2.3.4', '1.2.3.-1', ':::', '1::2::3', '1:2:3:4:5:6:7:8:9',
    '1:2:3:4:5:6:7::8', '12345::', 'g::1', '1.2.3.4::', '::1.2.3', ' 1.2.3.4']) {
    assert.equal(parseIp(bad), undefined, `"${bad}" must not parse`);
  }
});

test('an IPv4-mapped IPv6 address folds to the IPv4 address it carries', () => {
  assert.deepEqual(parseCanonicalIp('::ffff:10.1.2.3'), { family: 4, value: 0x0a010203n });
  assert.deepEqual(parseCanonicalIp('::FFFF:a01:203'), { family: 4, value: 0x0a010203n });
  // ::1 and the IPv4-compatible form are not mapped addresses.
  assert.equal(parseCanonicalIp('::1')?.family, 6);
  assert.equal(parseCanonicalIp('::10.1.2.3')?.family, 6);
});

test('formatIpBytes writes RFC 5952 text: lowercase, longest zero run compressed, single zero group kept', () => {
  const v6 = (s: string) => formatIp(parseIp(s)!);
  assert.equal(v6('2001:0DB8:0000:0000:0000:0000:0000:0001'), '2001:db8::1');
  assert.equal(v6('::'), '::');
  assert.equal(v6('::1'), '::1');
  assert.equal(v6('1::'), '1::');
  assert.equal(v6('2001:db8:0:1:1:1:1:1'), '2001:db8:0:1:1:1:1:1');
  assert.equal(v6('2001:0:0:1:0:0:0:1'), '2001:0:0:1::1');
  assert.equal(v6('2001:db8:0:0:1:0:0:1'), '2001:db8::1:0:0:1');
  assert.equal(formatIpBytes(Buffer.from([192, 0, 2, 1])), '192.0.2.1');
  assert.throws(() => formatIpBytes(Buffer.alloc(5)), RangeError);
});

test('parseCidr accepts networks, single addresses and the edge prefixes /0, /32, /128', () => {
  assert.deepEqual({ ...parseCidr('10.0.0.0/8'), source: '' }, { family: 4, network: 0x0a000000n, prefix: 8, mask: 0xff000000n, source: '' });
  assert.equal(parseCidr('192.0.2.7').prefix, 32);
  assert.equal(parseCidr('::1').prefix, 128);
  assert.equal(parseCidr('0.0.0.0/0').mask, 0n);
  assert.equal(parseCidr('::/0').mask, 0n);
  assert.equal(parseCidr('192.0.2.7/32').network, 0xc0000207n);
  assert.equal(parseCidr('2001:db8::1/128').network, (0x20010db8n << 96n) | 1n);
  // Host bits are cleared, as iptables does.
  assert.equal(parseCidr('10.1.2.3/8').network, 0x0a000000n);
  // A mapped block becomes the IPv4 block.
  const mapped = parseCidr('::ffff:10.0.0.0/104');
  assert.equal(mapped.family, 4);
  assert.equal(mapped.prefix, 8);
});

test('parseCidr throws ConfigError naming the key and the fix for every kind of bad CIDR', () => {
  const bad = ['', 'ten.0.0.0/8', '10.0.0.0/33', '::/129', '10.0.0.0/', '10.0.0.0/-1', '10.0.0.0/8/8', '10.0.0.0/a', 'fe80::1%eth0/64', '300.0.0.0/8', 'example.com/24'];
  for (const text of bad) {
    assert.throws(
      () => parseCidr(text, 'access.allowClients[2]'),
      (err: unknown) => {
        assert.ok(err instanceof ConfigError, `"${text}" must throw ConfigError`);
        assert.equal(err.key, 'access.allowClients[2]');
        assert.match(err.message, /access\.allowClients\[2\]/);
        assert.ok(err.fix.length > 0);
        return true;
      },
    );
  }
});

test('compileCidrList names the index of the bad entry', () => {
  assert.throws(() => compileCidrList(['127.0.0.0/8', '::1/128', '10.0.0.0/99'], 'access.allowClients'), (err: unknown) => {
    assert.ok(err instanceof ConfigError);
    assert.equal(err.key, 'access.allowClients[2]');
    assert.match(err.message, /10\.0\.0\.0\/99/);
    return true;
  });
});

test('CIDR lists match IPv4, IPv6 and IPv4-mapped clients; non-IP text never matches', () => {
  const list = compileCidrList(['10.0.0.0/8', 'fe80::/10', '192.0.2.1'], 'k');
  assert.equal(list.match('10.255.0.1')?.source, '10.0.0.0/8');
  assert.equal(list.match('::ffff:10.1.2.3')?.source, '10.0.0.0/8');
  assert.equal(list.match('11.0.0.1'), undefined);
  assert.equal(list.match('febf:ffff::1')?.source, 'fe80::/10');
  assert.equal(list.match('fec0::1'), undefined);
  assert.equal(list.match('192.0.2.1')?.source, '192.0.2.1');
  assert.equal(list.match('192.0.2.2'), undefined);
  assert.equal(list.match('not-an-ip'), undefined);
  assert.equal(list.match(''), undefined);
  // An IPv4 rule never matches a (non-mapped) IPv6 address with the same low bits.
  assert.equal(list.match('::a01:203'), undefined);
});

test('/0 matches every address of its family only', () => {
  const v4 = compileCidrList(['0.0.0.0/0'], 'k');
  const v6 = compileCidrList(['::/0'], 'k');
  assert.ok(v4.match('255.255.255.255'));
  assert.ok(v4.match('::ffff:1.2.3.4'), 'a mapped client is an IPv4 client');
  assert.equal(v4.match('2001:db8::1'), undefined);
  assert.ok(v6.match('2001:db8::1'));
  assert.equal(v6.match('1.2.3.4'), undefined);
});

test('port rules accept single ports and inclusive ranges, and reject everything else with the key', () => {
  const ports = compilePortList(['25', 8000, '6000-6100'], 'access.denyPorts');
  assert.equal(ports.match(25)?.source, '25');
  assert.equal(ports.match(8000)?.source, '8000');
  assert.equal(ports.match(6000)?.source, '6000-6100');
  assert.equal(ports.match(6100)?.source, '6000-6100');
  assert.equal(ports.match(6101), undefined);
  assert.deepEqual(parsePortRange('1-65535'), { from: 1, to: 65535, source: '1-65535' });
  for (const bad of ['0', '65536', 'http', '10-', '-10', '20-10', '1.5', '']) {
    assert.throws(() => compilePortList(['80', bad], 'access.allowPorts'), (err: unknown) => {
      assert.ok(err instanceof ConfigError, `"${bad}" must throw ConfigError`);
      assert.equal(err.key, 'access.allowPorts[1]');
      return true;
    });
  }
});
