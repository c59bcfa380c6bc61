/**
 * `upstream.mptcp` end to end: the proxy in prx dials a server in srv on an MPTCP socket when
 * told to (`auto`), so a server that speaks MPTCP gets an MPTCP upstream and one that does not
 * gets plain TCP (the kernel falls back in the handshake, RFC 8684 §3.1); `off` always dials TCP.
 * Evidence from both ends: the proxy's access line (upstreamMptcp) and the server namespace's
 * MPTCP MIB counter of MP_CAPABLE SYNs received.
 *
 * The client side is a two-path MPTCP blob client in cli in every case, so these are also whole
 * MPTCP → proxy → MPTCP chains.
 */
import { strict as assert } from 'node:assert';
import { after, before, describe, test } from 'node:test';
import { createTestbed, type Testbed } from '../../testbed/index.js';
import { blobSha256, DEFAULT_UPLOAD_SEED } from '../helpers/peer-blob-content.js';
import { runBlobClient, startBlobServer, type BlobServer } from '../helpers/peer-programs.js';
import { startProxyProcess, type ProxyProcess } from '../helpers/proxy-process.js';
import { startConfiguredProxy, TESTBED_ACCESS } from '../helpers/netns-proxy-config.js';
import { mptcpMib } from '../helpers/netns-mib.js';
import { testbedSkipReason } from '../helpers/netns-skip.js';

const MB = 1024 * 1024;

describe('upstream.mptcp: auto gives MPTCP servers an MPTCP upstream, TCP servers TCP; off gives TCP', { skip: testbedSkipReason() }, () => {
  let tb: Testbed;
  let mptcpServer: BlobServer;
  let tcpServer: BlobServer;

  before(async () => {
    // Shaped so each transfer lasts long enough for the client's MP_JOIN to land before it ends:
    // on unshaped veth 4-8 MiB can finish in milliseconds, before the path manager runs.
    tb = await createTestbed({ wiredMbit: 100, wlessMbit: 100 });
    [mptcpServer, tcpServer] = await Promise.all([
      startBlobServer(tb, 'srv', { address: tb.hosts.srv.lan, mptcp: true }),
      startBlobServer(tb, 'srv', { address: tb.hosts.srv.lan }),
    ]);
  });
  after(async () => {
    await tb?.close();
  });

  /** 4 MiB each way from cli through `proxy` on `port` to `server`; returns the access line and MP_CAPABLE SYNs srv received. */
  async function transfer(proxy: ProxyProcess, port: number, server: BlobServer) {
    const before = await mptcpMib(tb, 'srv');
    const res = await runBlobClient(tb, 'cli', { host: tb.hosts.prx.wired, port, uploadBytes: 4 * MB, downloadBytes: 4 * MB, mptcp: true });
    assert.equal(res.event, 'done', JSON.stringify(res));
    if (res.event === 'done') assert.ok(res.downloadIntact, 'download intact');
    const conn = await server.nextConn();
    assert.equal(conn.uploadSha256, blobSha256(DEFAULT_UPLOAD_SEED, 4 * MB), 'upload intact');
    const line = await proxy.nextAccess();
    const afterMib = await mptcpMib(tb, 'srv');
    assert.equal(line.clientMptcp, true);
    assert.equal(line.clientSubflows, 2);
    return { line, mpCapableSynsAtServer: (afterMib.MPCapableSYNRX ?? 0) - (before.MPCapableSYNRX ?? 0) };
  }

  test('forward --upstream-mptcp auto to an MPTCP server: the upstream is MPTCP end to end', async () => {
    const port = 9100;
    const proxy = await startProxyProcess(tb, 'prx', ['forward', '--listen', `0.0.0.0:${port}`, '--to', `${tb.hosts.srv.lan}:${mptcpServer.port}`, '--upstream-mptcp', 'auto']);
    const { line, mpCapableSynsAtServer } = await transfer(proxy, port, mptcpServer);
    assert.equal(line.upstreamMptcp, true, `access line: ${JSON.stringify(line)}`);
    assert.equal(mpCapableSynsAtServer, 1, 'the server received one MP_CAPABLE SYN');
  });

  test('start with upstream.mptcp auto to a plain TCP server: falls back to TCP and still works', async () => {
    const port = 9101;
    const proxy = await startConfiguredProxy(tb, 'prx', {
      listeners: [{ name: 'fwd', type: 'tcp-forward', listen: `0.0.0.0:${port}`, to: `${tb.hosts.srv.lan}:${tcpServer.port}` }],
      upstream: { mptcp: 'auto' },
      access: TESTBED_ACCESS,
    });
    try {
      const { line, mpCapableSynsAtServer } = await transfer(proxy, port, tcpServer);
      assert.equal(line.upstreamMptcp, false, `access line: ${JSON.stringify(line)}`);
      // The proxy did send MP_CAPABLE; the plain listener ignored the option (no MIB count there).
      assert.equal(mpCapableSynsAtServer, 0);
    } finally {
      proxy.cleanup();
    }
  });

  test('forward with the default upstream mptcp (off) to the MPTCP server: the upstream is TCP', async () => {
    const port = 9102;
    const proxy = await startProxyProcess(tb, 'prx', ['forward', '--listen', `0.0.0.0:${port}`, '--to', `${tb.hosts.srv.lan}:${mptcpServer.port}`]);
    const { line, mpCapableSynsAtServer } = await transfer(proxy, port, mptcpServer);
    assert.equal(line.upstreamMptcp, false, `access line: ${JSON.stringify(line)}`);
    assert.equal(mpCapableSynsAtServer, 0, 'no MP_CAPABLE SYN reached the MPTCP server');
  });

  test('start with upstream.mptcp off to the MPTCP server: the upstream is TCP', async () => {
    const port = 9103;
    const proxy = await startConfiguredProxy(tb, 'prx', {
      listeners: [{ name: 'fwd', type: 'tcp-forward', listen: `0.0.0.0:${port}`, to: `${tb.hosts.srv.lan}:${mptcpServer.port}` }],
      upstream: { mptcp: 'off' },
      access: TESTBED_ACCESS,
    });
    try {
      const { line, mpCapableSynsAtServer } = await transfer(proxy, port, mptcpServer);
      assert.equal(line.upstreamMptcp, false);
      assert.equal(mpCapableSynsAtServer, 0);
    } finally {
      proxy.cleanup();
    }
  });
});
