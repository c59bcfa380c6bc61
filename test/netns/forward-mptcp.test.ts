/**
 * The foundation's acceptance test: a multihomed MPTCP client in `cli` (two 20 Mbit/s paths)
 * reaches a plain-TCP server in `srv` through the tcp-forward front-end running in `prx`.
 * Real kernel MPTCP, real HTB shaping, the real CLI; the proxy's own access log is the
 * evidence of what it saw.
 */
import { strict as assert } from 'node:assert';
import { after, before, describe, test } from 'node:test';
import { createTestbed, type Testbed } from '../../testbed/index.js';
import { blobSha256, DEFAULT_DOWNLOAD_SEED, DEFAULT_UPLOAD_SEED } from '../helpers/peer-blob-content.js';
import { runBlobClient, startBlobServer, type BlobServer } from '../helpers/peer-programs.js';
import { startProxyProcess, type ProxyProcess } from '../helpers/proxy-process.js';
import { testbedSkipReason } from '../helpers/netns-skip.js';
import { fileURLToPath } from 'node:url';

const skip = testbedSkipReason();
const MB = 1024 * 1024;
const PROXY_PORT = 9000;

// Both relay engines carry the same acceptance test (the fast path on and off).
for (const engine of ['native', 'js'] as const)
describe(`tcp-forward (${engine} relay) converts a two-path MPTCP client to one TCP connection`, { skip }, () => {
  let tb: Testbed;
  let server: BlobServer;
  let proxy: ProxyProcess;
  let httpPort: number;

  before(async () => {
    tb = await createTestbed({ wiredMbit: 20, wlessMbit: 20 });
    server = await startBlobServer(tb, 'srv', { address: tb.hosts.srv.lan });
    proxy = await startProxyProcess(tb, 'prx', ['forward', '--listen', `0.0.0.0:${PROXY_PORT}`, '--to', `${tb.hosts.srv.lan}:${server.port}`], {
      env: { MPTCP_PROXY_RELAY: engine },
    });
  });
  after(async () => {
    await tb?.close();
  });

  let mptcpMbit = 0;

  test('32 MiB each way through the proxy arrive intact, over two subflows the proxy sees', async () => {
    const res = await runBlobClient(tb, 'cli', {
      host: tb.hosts.prx.wired,
      port: PROXY_PORT,
      uploadBytes: 32 * MB,
      downloadBytes: 32 * MB,
      extraArgs: ['--mptcp'],
      timeoutMs: 60_000,
    });
    assert.equal(res.event, 'done', JSON.stringify(res));
    if (res.event !== 'done') return;
    const conn = await server.nextConn();
    assert.equal(conn.uploadBytes, 32 * MB);
    assert.equal(conn.uploadSha256, blobSha256(DEFAULT_UPLOAD_SEED, 32 * MB));
    assert.equal(res.downloadBytes, 32 * MB);
    assert.equal(res.downloadSha256, blobSha256(DEFAULT_DOWNLOAD_SEED, 32 * MB));
    assert.ok(res.downloadIntact);
    // The server saw a plain TCP connection from the proxy's lan address.
    assert.equal(conn.remoteAddress.replace(/^::ffff:/, ''), tb.hosts.prx.lan);

    const line = await proxy.nextAccess();
    assert.equal(line.clientMptcp, true, 'the proxy saw an MPTCP client');
    assert.equal(line.clientSubflows, 2, `the proxy saw two subflows: ${JSON.stringify(line.clientPaths)}`);
    const paths = line.clientPaths ?? [];
    assert.ok(paths.some((p) => p.includes(`-> ${tb.hosts.cli.wired}:`)), `a subflow from the wired address: ${paths.join(', ')}`);
    assert.ok(paths.some((p) => p.includes(`-> ${tb.hosts.cli.wless}:`)), `a subflow from the wless address: ${paths.join(', ')}`);
    assert.equal(line.upstreamMptcp, false, 'the upstream is plain TCP');
    assert.equal(line.bytesUp, 8 + 32 * MB, 'header + upload counted');
    assert.equal(line.bytesDown, 32 * MB);
    // Full-duplex transfer: each direction's rate, as the client measured it.
    mptcpMbit = (32 * MB * 8) / 1e6 / (res.elapsedMs / 1000);
  });

  test('a plain TCP client through the same listener works and its rate is bounded by one path', async (t) => {
    const res = await runBlobClient(tb, 'cli', {
      host: tb.hosts.prx.wired,
      port: PROXY_PORT,
      uploadBytes: 12 * MB,
      downloadBytes: 12 * MB,
      localAddress: tb.hosts.cli.wired,
      timeoutMs: 60_000,
    });
    assert.equal(res.event, 'done', JSON.stringify(res));
    if (res.event !== 'done') return;
    const conn = await server.nextConn();
    assert.equal(conn.uploadSha256, blobSha256(DEFAULT_UPLOAD_SEED, 12 * MB));
    assert.ok(res.downloadIntact);
    const line = await proxy.nextAccess();
    assert.equal(line.clientMptcp, false, 'kernel fell back to TCP for a TCP client');
    const tcpMbit = (12 * MB * 8) / 1e6 / (res.elapsedMs / 1000);
    const ratio = mptcpMbit / tcpMbit;
    t.diagnostic(`aggregation: MPTCP via proxy ${mptcpMbit.toFixed(1)} Mbit/s, one path ${tcpMbit.toFixed(1)} Mbit/s, ratio ${ratio.toFixed(2)}`);
    assert.ok(ratio > 1.3, `two 20 Mbit/s paths must carry more than 1.3x one path: ${mptcpMbit.toFixed(1)} vs ${tcpMbit.toFixed(1)} Mbit/s`);
  });

  test('mptcpize run curl, a client nobody here wrote, downloads through the forwarder over MPTCP', async (t) => {
    const mptcpize = await tb.exec('cli', ['sh', '-c', 'command -v mptcpize'], { allowFailure: true });
    if (mptcpize.code !== 0) {
      t.skip('mptcpize not installed (Debian package mptcpize; .ci/run installs it)');
      return;
    }
    // A second forwarder in front of an HTTP origin.
    const httpPath = fileURLToPath(new URL('../helpers/peer-http-server.js', import.meta.url));
    const origin = tb.spawn('srv', [process.execPath, httpPath, '--host', tb.hosts.srv.lan, '--port', '0']);
    httpPort = Number((await origin.waitForLine(/^listening (\d+)$/, { timeoutMs: 10_000 })).match[1]);
    const fwd = await startProxyProcess(tb, 'prx', ['forward', '--listen', `0.0.0.0:${PROXY_PORT + 1}`, '--to', `${tb.hosts.srv.lan}:${httpPort}`], {
      env: { MPTCP_PROXY_RELAY: engine },
    });
    const size = 4 * MB;
    const r = await tb.exec('cli', ['sh', '-c', `mptcpize run curl -sS --max-time 30 http://${tb.hosts.prx.wired}:${PROXY_PORT + 1}/blob/${size} | sha256sum`], { timeoutMs: 40_000 });
    assert.equal(r.stdout.split(' ')[0], blobSha256(DEFAULT_DOWNLOAD_SEED, size));
    const line = await fwd.nextAccess();
    assert.equal(line.clientMptcp, true, 'curl ran over MPTCP');
    assert.equal(line.clientSubflows, 2);
    assert.equal(line.bytesDown > size, true);
  });
});
