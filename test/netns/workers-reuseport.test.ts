/**
 * `forward --workers 2`: two proxy processes share the listening port with SO_REUSEPORT. An
 * MPTCP connection's extra subflow (MP_JOIN) carries the connection's token, and the kernel
 * finds the connection by token, not by listener — so it must reach whichever worker accepted
 * the first subflow. Eight two-path clients at once prove it: every transfer intact, every
 * access line with two subflows, and lines from both workers (more short connections if the
 * kernel's hash sent all eight to one).
 */
import { strict as assert } from 'node:assert';
import { after, before, describe, test } from 'node:test';
import { createTestbed, type Testbed } from '../../testbed/index.js';
import { blobSha256, DEFAULT_DOWNLOAD_SEED, DEFAULT_UPLOAD_SEED } from '../helpers/peer-blob-content.js';
import { runBlobClient, startBlobServer, type BlobServer } from '../helpers/peer-programs.js';
import { startProxyProcess, type AccessLine, type ProxyProcess } from '../helpers/proxy-process.js';
import { testbedSkipReason } from '../helpers/netns-skip.js';

const skip = testbedSkipReason();
const MB = 1024 * 1024;
const PROXY_PORT = 9000;
const CLIENTS = 8;
/** Extra short connections when the first CLIENTS all reached one worker (see the test). */
const EXTRA = 24;

describe('forward --workers 2 shares one MPTCP port between two processes', { skip }, () => {
  let tb: Testbed;
  let server: BlobServer;
  let proxy: ProxyProcess;

  /** A fresh testbed, origin and two-worker forward (again for the retry below). */
  const setUp = async (): Promise<void> => {
    tb = await createTestbed({ wiredMbit: 50, wlessMbit: 50 });
    server = await startBlobServer(tb, 'srv', { address: tb.hosts.srv.lan });
    proxy = await startProxyProcess(
      tb,
      'prx',
      ['forward', '--workers', '2', '--listen', `0.0.0.0:${PROXY_PORT}`, '--to', `${tb.hosts.srv.lan}:${server.port}`],
      { listeners: 2 },
    );
  };
  before(setUp);
  after(async () => {
    await tb?.close();
  });

  /** Every host's TCP sockets and MPTCP connections with their queues, and the MPTCP counters. */
  const stateDump = async (): Promise<string> => {
    const parts = await Promise.all(
      (['cli', 'prx', 'srv'] as const).map(async (h) => {
        const tcp = (await tb.exec(h, ['ss', '-tmiH'])).stdout.slice(0, 12_000);
        const msk = (await tb.exec(h, ['ss', '-MmiH'], { allowFailure: true })).stdout.slice(0, 6_000);
        const mib = (await tb.exec(h, ['nstat', '-as'], { allowFailure: true })).stdout.split('\n').filter((l) => l.startsWith('MPTcpExt')).join('\n');
        return `--- ss -tmi in ${h}\n${tcp}\n--- ss -Mmi in ${h}\n${msk}\n--- nonzero MPTcpExt counters in ${h}\n${mib}`;
      }),
    );
    return parts.join('\n');
  };

  /** Unread bytes in the client host's sockets to the proxy: bytes the proxy delivered and the
   *  client's kernel acknowledged, but did not hand to the client program. */
  const clientUnread = async (): Promise<number> => {
    const out = (await tb.exec('cli', ['ss', '-tnH', 'state', 'established', `dport = :${PROXY_PORT}`])).stdout;
    return out.split('\n').reduce((sum, l) => sum + (Number(l.trim().split(/\s+/)[0]) || 0), 0);
  };

  test(`${CLIENTS} parallel MPTCP clients: intact, two subflows each, served by both workers`, async (t) => {
    const size = 4 * MB;
    const round = () =>
      Promise.all(
        Array.from({ length: CLIENTS }, () =>
          runBlobClient(tb, 'cli', { host: tb.hosts.prx.wired, port: PROXY_PORT, uploadBytes: size, downloadBytes: size, extraArgs: ['--mptcp'], timeoutMs: 90_000 }),
        ),
      );
    let results = await round();
    if (results.some((r) => r.event !== 'done')) {
      // Seen in CI (sessions 12 and 14, the suite running two files at once): a download stopped
      // part-way with every socket open. Session 14's dump: the proxy had sent, and had acked,
      // everything the client's windows allowed; the client's own kernel held 5.2 MB unread in
      // one subflow's receive queue (Recv-Q = its buffer) while the program had 0.8 MB, and the
      // subflows had carried 6.6 MB for a 4 MiB download (MPTCP reinjections). The bytes
      // stopped between the client's subflows and its MPTCP socket, below the program. That
      // stall, and only that one, is retried once on a fresh testbed, loudly; any other
      // failure, or a second stall, fails the test.
      const stalled = JSON.stringify(results.filter((r) => r.event !== 'done'));
      const unread = await clientUnread();
      const dump = await stateDump();
      if (unread === 0) assert.fail(`a transfer did not complete, and the client host holds no unread bytes: ${stalled}\n${dump}`);
      t.diagnostic(`RETRY: a transfer stalled with ${unread} bytes unread in the client host's sockets (the client's receive path): ${stalled}`);
      for (const line of dump.split('\n')) t.diagnostic(line);
      await tb.close();
      await setUp();
      results = await round();
      if (results.some((r) => r.event !== 'done')) {
        assert.fail(`a transfer did not complete, twice: ${JSON.stringify(results.filter((r) => r.event !== 'done'))}\n${await stateDump()}`);
      }
    }
    for (const res of results) {
      assert.equal(res.event, 'done', JSON.stringify(res));
      if (res.event !== 'done') continue;
      assert.equal(res.downloadBytes, size);
      assert.equal(res.downloadSha256, blobSha256(DEFAULT_DOWNLOAD_SEED, size));
    }
    for (let i = 0; i < CLIENTS; i++) {
      const conn = await server.nextConn();
      assert.equal(conn.uploadSha256, blobSha256(DEFAULT_UPLOAD_SEED, size));
    }
    const lines: AccessLine[] = [];
    for (let i = 0; i < CLIENTS; i++) lines.push(await proxy.nextAccess());
    for (const line of lines) {
      assert.equal(line.clientMptcp, true, JSON.stringify(line));
      assert.equal(line.clientSubflows, 2, `both subflows reached the worker that owns the connection: ${JSON.stringify(line)}`);
      assert.equal(line.bytesDown, size);
    }
    const pids = new Set(lines.map((l) => l.pid));
    assert.ok(!pids.has(undefined), 'worker lines carry their pid');
    // The kernel picks a listener by a hash of each SYN's addresses and ports, so eight clients
    // all land on one worker now and then (seen in about one run in four). Then more short
    // connections, one at a time, until the other worker shows up: at most EXTRA of them.
    for (let i = 0; i < EXTRA && pids.size < 2; i++) {
      const res = await runBlobClient(tb, 'cli', { host: tb.hosts.prx.wired, port: PROXY_PORT, uploadBytes: 1024, downloadBytes: 1024, extraArgs: ['--mptcp'], timeoutMs: 30_000 });
      assert.equal(res.event, 'done', JSON.stringify(res));
      await server.nextConn();
      pids.add((await proxy.nextAccess()).pid);
    }
    assert.equal(pids.size, 2, `connections spread over both workers: ${[...pids].join(', ')}`);
  });
});
