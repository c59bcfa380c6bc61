/**
 * The SOCKS5 front-end with real clients in the testbed: `mptcpize run curl --socks5-hostname`
 * (the proxy resolves the name) and `--socks5` (the client sends an IPv4 address) from cli over
 * two paths, a Node client on our own addon speaking RFC 1928 byte by byte with a 2 MiB blob each
 * way, and a refused destination answered with reply 0x05 while the proxy keeps serving. The
 * proxy's access log confirms each client connection was MPTCP with two subflows.
 *
 * The name: `ip netns exec` bind-mounts /etc/netns/<ns>/hosts over /etc/hosts (ip-netns(8)), so a
 * hosts file there gives the proxy's namespace — and only it — a name for the origin in srv.
 */
import { strict as assert } from 'node:assert';
import { existsSync, mkdirSync, rmdirSync, rmSync, writeFileSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { createTestbed, type Testbed } from '../../testbed/index.js';
import { blobSha256, DEFAULT_DOWNLOAD_SEED } from '../helpers/peer-blob-content.js';
import { startBlobServer, type BlobServer } from '../helpers/peer-programs.js';
import { startConfiguredProxy, TESTBED_ACCESS, type ConfiguredProxy } from '../helpers/netns-proxy-config.js';
import { missingToolReason, runProxyClient, startHttpOrigin, type Origin } from '../helpers/netns-programs.js';
import { testbedSkipReason } from '../helpers/netns-skip.js';
import { assertMptcpTwoSubflows, assertNodeClientTunnel } from '../helpers/netns-assertions.js';

const MB = 1024 * 1024;
const SOCKS_PORT = 1080;
const CLOSED_PORT = 9;
const ORIGIN_NAME = 'origin.mpx.test';
/** RFC 1928 §6 REP values. */
const REP_SUCCEEDED = 0x00;
const REP_CONNECTION_REFUSED = 0x05;

describe('SOCKS5 front-end serves real MPTCP clients across the testbed', { skip: testbedSkipReason() ?? missingToolReason(['mptcpize', 'curl']) }, () => {
  let tb: Testbed;
  let proxy: ConfiguredProxy;
  let origin: Origin;
  let blob: BlobServer;
  let hostsDir: string | undefined;
  let createdNetnsDir = false;

  const inCli = async (line: string): Promise<string> => (await tb.exec('cli', ['bash', '-o', 'pipefail', '-c', line], { timeoutMs: 40_000 })).stdout;

  before(async () => {
    tb = await createTestbed({ wiredMbit: 20, wlessMbit: 20 });
    // A hosts file only the proxy's namespace sees (before the proxy starts: it is bind-mounted at exec).
    createdNetnsDir = !existsSync('/etc/netns');
    hostsDir = `/etc/netns/${tb.hosts.prx.ns}`;
    mkdirSync(hostsDir, { recursive: true });
    writeFileSync(`${hostsDir}/hosts`, `127.0.0.1 localhost\n${tb.hosts.srv.lan} ${ORIGIN_NAME}\n`);
    [origin, blob] = await Promise.all([startHttpOrigin(tb, 'srv', tb.hosts.srv.lan), startBlobServer(tb, 'srv', { address: tb.hosts.srv.lan })]);
    proxy = await startConfiguredProxy(tb, 'prx', {
      listeners: [{ name: 'socks5', type: 'socks5', listen: `0.0.0.0:${SOCKS_PORT}` }],
      access: TESTBED_ACCESS,
    });
  });
  after(async () => {
    await tb?.close();
    proxy?.cleanup();
    if (hostsDir) rmSync(hostsDir, { recursive: true, force: true });
    if (createdNetnsDir) {
      try {
        rmdirSync('/etc/netns');
      } catch (err) {
        // Another testbed's hosts file may live there now; it removes its own.
        if (!['ENOTEMPTY', 'ENOENT'].includes((err as NodeJS.ErrnoException).code ?? '')) throw err;
      }
    }
  });

  test('--socks5-hostname: the proxy resolves the name and 2 MiB arrive intact over two subflows', async () => {
    const url = `http://${ORIGIN_NAME}:${origin.port}/blob/${2 * MB}`;
    const out = await inCli(`mptcpize run curl -sS --fail --max-time 30 --socks5-hostname ${tb.hosts.prx.wired}:${SOCKS_PORT} ${url} | sha256sum`);
    assert.equal(out.split(' ')[0], blobSha256(DEFAULT_DOWNLOAD_SEED, 2 * MB));
    const line = await proxy.nextAccess();
    assertMptcpTwoSubflows(line, '--socks5-hostname');
    assert.equal(line.target, `${ORIGIN_NAME}:${origin.port}`, 'the request carried the name (ATYP 3)');
    assert.equal(line.upstream, `${tb.hosts.srv.lan}:${origin.port}`, 'the proxy resolved it');
    assert.equal(line.reply, REP_SUCCEEDED);
  });

  test('--socks5: curl sends the IPv4 address and 2 MiB arrive intact over two subflows', async () => {
    const url = `http://${tb.hosts.srv.lan}:${origin.port}/blob/${2 * MB}`;
    const out = await inCli(`mptcpize run curl -sS --fail --max-time 30 --socks5 ${tb.hosts.prx.wired}:${SOCKS_PORT} ${url} | sha256sum`);
    assert.equal(out.split(' ')[0], blobSha256(DEFAULT_DOWNLOAD_SEED, 2 * MB));
    const line = await proxy.nextAccess();
    assertMptcpTwoSubflows(line, '--socks5');
    assert.equal(line.target, `${tb.hosts.srv.lan}:${origin.port}`);
  });

  test('a Node client on our addon (MPTCP socket) speaks SOCKS5 and moves 2 MiB each way intact', async () => {
    const line = await assertNodeClientTunnel(tb, {
      proxyAddress: `${tb.hosts.prx.wired}:${SOCKS_PORT}`, via: 'socks5', blob, bytes: 2 * MB, nextAccess: () => proxy.nextAccess(),
    });
    assert.ok(line.bytesUp >= 2 * MB + 8, `bytesUp ${line.bytesUp}`);
    assert.ok(line.bytesDown >= 2 * MB, `bytesDown ${line.bytesDown}`);
  });

  test('a closed destination port is reply 0x05 (connection refused), and the next client is served', async () => {
    const res = await runProxyClient(tb, 'cli', { proxy: `${tb.hosts.prx.wired}:${SOCKS_PORT}`, via: 'socks5', to: `${tb.hosts.srv.lan}:${CLOSED_PORT}` });
    assert.deepEqual(res, { event: 'refused', via: 'socks5', rep: REP_CONNECTION_REFUSED });
    const bad = await proxy.nextAccess();
    assert.equal(bad.reply, REP_CONNECTION_REFUSED);
    assert.equal(bad.clientMptcp, true);

    const url = `http://${tb.hosts.srv.lan}:${origin.port}/blob/${MB}`;
    const out = await inCli(`mptcpize run curl -sS --fail --max-time 30 --socks5-hostname ${tb.hosts.prx.wired}:${SOCKS_PORT} ${url} | sha256sum`);
    assert.equal(out.split(' ')[0], blobSha256(DEFAULT_DOWNLOAD_SEED, MB));
    assertMptcpTwoSubflows(await proxy.nextAccess(), 'after the refusal');
  });
});
