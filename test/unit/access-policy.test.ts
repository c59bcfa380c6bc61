import { test } from 'node:test';
import assert from 'node:assert/strict';
import { networkInterfaces } from 'node:os';
import { fileURLToPath } from 'node:url';
import type { AccessConfig } from '../../src/config/types.js';
import { ConfigError } from '../../src/core/errors.js';
import { DEFAULT_ALLOWED_CLIENTS, DEFAULT_DENIED_DESTINATIONS, createAccessPolicy } from '../../src/access/policy.js';

const fixture = (name: string) => fileURLToPath(new URL(`../../../test/fixtures/${name}`, import.meta.url));

function config(over: Partial<AccessConfig> = {}): AccessConfig {
  return {
    allowClients: [...DEFAULT_ALLOWED_CLIENTS],
    denyDestinations: [...DEFAULT_DENIED_DESTINATIONS],
    allowDestinations: [],
    denyPorts: [],
    allowPorts: [],
    maxConnectionsPerClient: 0,
    ...over,
  };
}
const to = (host: string, port: number) => ({ host, port });

test('default client rules admit loopback, private, ULA and CGNAT clients, including mapped IPv4', async () => {
  const policy = await createAccessPolicy(config());
  for (const addr of ['127.0.0.1', '127.8.9.10', '::1', '10.1.2.3', '172.16.0.1', '172.31.255.255', '192.168.1.1', 'fd12::1', '100.64.0.1', '::ffff:10.1.2.3', '::ffff:127.0.0.1']) {
    const d = policy.admitClient(addr);
    assert.equal(d.allowed, true, addr);
    assert.equal(d.rule, 'client-network');
  }
});

test('default client rules deny public addresses with the client-network rule', async () => {
  const policy = await createAccessPolicy(config());
  for (const addr of ['8.8.8.8', '172.32.0.1', '2001:db8::1', '::ffff:8.8.8.8', '100.128.0.1', 'garbage', '']) {
    const d = policy.admitClient(addr);
    assert.equal(d.allowed, false, addr);
    assert.equal(d.rule, 'client-network');
    assert.ok(d.reason);
  }
});

test('an empty allowClients list admits nobody; 0.0.0.0/0 + ::/0 admits everybody', async () => {
  assert.equal((await createAccessPolicy(config({ allowClients: [] }))).admitClient('127.0.0.1').allowed, false);
  const open = await createAccessPolicy(config({ allowClients: ['0.0.0.0/0', '::/0'] }));
  assert.equal(open.admitClient('8.8.8.8').allowed, true);
  assert.equal(open.admitClient('2001:db8::1').allowed, true);
});

test('a bad CIDR in any list is a ConfigError naming the list and index', async () => {
  const cases: [Partial<AccessConfig>, string][] = [
    [{ allowClients: ['127.0.0.0/8', '::1/128', '10.0.0.0/40'] }, 'access.allowClients[2]'],
    [{ denyDestinations: ['nope'] }, 'access.denyDestinations[0]'],
    [{ allowDestinations: ['10.0.0.0/8', '1.2.3.4/'] }, 'access.allowDestinations[1]'],
    [{ denyPorts: ['99999'] }, 'access.denyPorts[0]'],
    [{ allowPorts: ['80', 'x'] }, 'access.allowPorts[1]'],
  ];
  for (const [over, key] of cases) {
    await assert.rejects(createAccessPolicy(config(over)), (err: unknown) => {
      assert.ok(err instanceof ConfigError);
      assert.equal(err.key, key);
      return true;
    });
  }
});

test('default destination rules deny metadata, link-local, unspecified, multicast and broadcast', async () => {
  const policy = await createAccessPolicy(config());
  for (const addr of ['169.254.169.254', 'fe80::1', '0.0.0.0', '::', '224.0.0.1', '239.1.2.3', 'ff02::1', '255.255.255.255', '::ffff:169.254.169.254', 'fd00:ec2::254']) {
    const d = policy.checkDestination(to('example.com', 80), addr);
    assert.equal(d.allowed, false, addr);
    assert.equal(d.rule, 'destination-network');
    assert.match(d.reason ?? '', /denyDestinations/);
  }
  for (const addr of ['93.184.216.34', '2001:db8::1', '10.0.0.1', '127.0.0.1']) {
    assert.equal(policy.checkDestination(to('example.com', 80), addr).allowed, true, addr);
  }
});

test('allowDestinations, when set, is the only set of networks allowed', async () => {
  const policy = await createAccessPolicy(config({ allowDestinations: ['192.0.2.0/24', '2001:db8::/32'] }));
  assert.equal(policy.checkDestination(to('a', 80), '192.0.2.9').allowed, true);
  assert.equal(policy.checkDestination(to('a', 80), '2001:db8:1::1').allowed, true);
  const d = policy.checkDestination(to('a', 80), '198.51.100.1');
  assert.equal(d.allowed, false);
  assert.equal(d.rule, 'destination-network');
  assert.match(d.reason ?? '', /allowDestinations/);
  // denyDestinations wins over allowDestinations.
  const both = await createAccessPolicy(config({ allowDestinations: ['0.0.0.0/0'], denyDestinations: ['192.0.2.0/24'] }));
  assert.equal(both.checkDestination(to('a', 80), '192.0.2.1').allowed, false);
});

test('denyPorts and allowPorts decide by the target port with the destination-port rule', async () => {
  const deny = await createAccessPolicy(config({ denyPorts: ['25', '6000-6100'] }));
  assert.equal(deny.checkDestination(to('a', 25), '192.0.2.1').rule, 'destination-port');
  assert.equal(deny.checkDestination(to('a', 6050), '192.0.2.1').allowed, false);
  assert.equal(deny.checkDestination(to('a', 443), '192.0.2.1').allowed, true);
  const allow = await createAccessPolicy(config({ allowPorts: ['80', '443'] }));
  assert.equal(allow.checkDestination(to('a', 443), '192.0.2.1').allowed, true);
  const d = allow.checkDestination(to('a', 22), '192.0.2.1');
  assert.equal(d.allowed, false);
  assert.equal(d.rule, 'destination-port');
});

test('a destination that is not an IP literal is denied', async () => {
  const policy = await createAccessPolicy(config({ denyDestinations: [] }));
  assert.equal(policy.checkDestination(to('example.com', 80), 'example.com').allowed, false);
});

test('the self rule denies our own listener on a specific address, and only on its ports', async () => {
  const policy = await createAccessPolicy(config(), { selfAddresses: () => ['127.0.0.1'], selfPorts: () => [1080, 3128] });
  const d = policy.checkDestination(to('localhost', 1080), '127.0.0.1');
  assert.equal(d.allowed, false);
  assert.equal(d.rule, 'self');
  assert.equal(policy.checkDestination(to('x', 3128), '::ffff:127.0.0.1').rule, 'self');
  assert.equal(policy.checkDestination(to('x', 8080), '127.0.0.1').allowed, true, 'another port is not us');
  assert.equal(policy.checkDestination(to('x', 1080), '127.0.0.2').allowed, true, 'another address is not us');
});

test('the self rule with an unspecified listen address covers loopback and every local interface address', async () => {
  const policy = await createAccessPolicy(config({ denyDestinations: [] }), { selfAddresses: () => ['::'], selfPorts: () => [1080] });
  const local = Object.values(networkInterfaces()).flatMap((l) => l ?? []).map((i) => i.address);
  for (const addr of ['127.0.0.1', '127.0.0.53', '::1', '0.0.0.0', '::', ...local]) {
    assert.equal(policy.checkDestination(to('x', 1080), addr).rule, 'self', addr);
  }
  assert.equal(policy.checkDestination(to('x', 1080), '192.0.2.1').allowed, true, 'a remote host on the same port is fine');
});

test('the self rule reads the callbacks at each check (listeners bound after start-up count)', async () => {
  const ports: number[] = [];
  const policy = await createAccessPolicy(config(), { selfAddresses: () => ['0.0.0.0'], selfPorts: () => ports });
  assert.equal(policy.checkDestination(to('x', 40000), '127.0.0.1').allowed, true);
  ports.push(40000);
  assert.equal(policy.checkDestination(to('x', 40000), '127.0.0.1').rule, 'self');
});

test('without a credentials file no authentication is required and every login fails', async () => {
  const policy = await createAccessPolicy(config());
  assert.equal(policy.authRequired, false);
  assert.equal(await policy.verifyCredentials('alice', 'wonderland'), false);
});

test('with a credentials file authentication is required and passwords are checked', async () => {
  const policy = await createAccessPolicy(config({ credentialsFile: fixture('credentials-good.txt') }));
  assert.equal(policy.authRequired, true);
  assert.equal(policy.userCount, 2);
  assert.equal(await policy.verifyCredentials('alice', 'wonderland'), true);
  assert.equal(await policy.verifyCredentials('alice', 'wrong'), false);
  assert.equal(await policy.verifyCredentials('nobody', 'wonderland'), false);
});

test('a bad credentials file stops policy creation', async () => {
  await assert.rejects(createAccessPolicy(config({ credentialsFile: fixture('credentials-bad.txt') })), ConfigError);
});

test('decisions are remembered per address: the same frozen answer again, and still right past the memo size', async () => {
  const policy = await createAccessPolicy(config({ denyDestinations: ['10.9.0.0/16'], allowClients: ['10.0.0.0/8'] }));
  const first = policy.checkDestination(to('10.9.1.1', 80), '10.9.1.1');
  assert.equal(first.allowed, false);
  assert.equal(policy.checkDestination(to('10.9.1.1', 443), '10.9.1.1'), first, 'remembered');
  assert.ok(Object.isFrozen(first), 'shared, so frozen');
  assert.throws(() => {
    (first as { allowed: boolean }).allowed = true;
  }, TypeError);
  // The port rules and the self check still run per call: the memo covers the address only.
  const ports = await createAccessPolicy(config({ denyPorts: ['25'] }));
  assert.equal(ports.checkDestination(to('10.1.1.1', 80), '10.1.1.1').allowed, true);
  assert.equal(ports.checkDestination(to('10.1.1.1', 25), '10.1.1.1').rule, 'destination-port');
  // More distinct addresses than the memo holds (4096): every answer stays right.
  for (let i = 0; i < 5000; i++) {
    const addr = `10.${(i >> 8) % 2 === 0 ? 9 : 8}.${(i >> 8) & 255}.${i & 255}`;
    assert.equal(policy.checkDestination(to(addr, 80), addr).allowed, !addr.startsWith('10.9.'), addr);
    assert.equal(policy.admitClient(addr).allowed, true, addr);
  }
  assert.equal(policy.admitClient('192.0.2.1').allowed, false);
});
