/**
 * The netns testbed itself: topology, shaping, link control, MPTCP subflows, and that every
 * namespace and process it made is gone afterwards — whether it was closed, failed halfway, or its
 * process died. Skipped with a reason when not root / no MPTCP (like mptcpd's pm_lib.sh, exit 77).
 *
 * Traffic only ever goes between the namespaces created here.
 */
import { strict as assert } from 'node:assert';
import { spawn, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { createInterface } from 'node:readline';
import {
  createTestbed,
  listNamespaces,
  registeredTeardownCount,
  runCommand,
  SETUP_STEPS,
  type Testbed,
} from '../../testbed/index.js';
import { blobSha256, DEFAULT_DOWNLOAD_SEED, DEFAULT_UPLOAD_SEED } from '../helpers/peer-blob-content.js';
import { runBlobClient, startBlobServer, type BlobServer } from '../helpers/peer-programs.js';
import { testbedSkipReason } from '../helpers/netns-skip.js';

const skip = testbedSkipReason();

/** Why the MPTCP addon (src/mptcp) cannot be used here, or undefined. */
async function addonSkipReason(): Promise<string | undefined> {
  try {
    const { loadNative } = await import('../../src/mptcp/index.js');
    loadNative();
    return undefined;
  } catch (err) {
    return `MPTCP addon unavailable: ${err instanceof Error ? err.message : String(err)}`;
  }
}
const addonSkip = skip ?? (await addonSkipReason());
const MB = 1024 * 1024;

/** Alive = exists and is not a zombie. Orphans of a dead test child are reparented to PID 1,
 * which may never reap them (a container init), so a killed process can linger as a zombie. */
function isAlive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Field 3 (state) follows the parenthesised command name, which may contain spaces.
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

async function namespacesWithPrefix(prefix: string): Promise<string[]> {
  return (await listNamespaces()).filter((ns) => ns.startsWith(prefix));
}

function hasPython3(): boolean {
  return spawnSync('python3', ['-c', 'import socket; socket.IPPROTO_MPTCP if hasattr(socket, "IPPROTO_MPTCP") else 262'], { timeout: 5_000 }).status === 0;
}

describe('testbed with two 20 Mbit/s paths between cli and prx', { skip }, () => {
  let tb: Testbed;
  let server: BlobServer;

  before(async () => {
    tb = await createTestbed({ wiredMbit: 20, wlessMbit: 20 });
    server = await startBlobServer(tb, 'srv', { address: tb.hosts.srv.lan });
  });
  after(async () => {
    await tb?.close();
  });

  for (const path of ['wired', 'wless'] as const) {
    test(`a 5 MB upload from cli's ${path} address reaches srv through prx intact and takes at least 1.6 s at 20 Mbit/s`, async (t) => {
      const res = await runBlobClient(tb, 'cli', {
        host: tb.hosts.srv.lan,
        port: server.port,
        uploadBytes: 5 * MB,
        downloadBytes: 256 * 1024,
        localAddress: tb.hosts.cli[path],
      });
      assert.equal(res.event, 'done', JSON.stringify(res));
      if (res.event !== 'done') return;
      const conn = await server.nextConn();
      // Routed, not proxied: srv sees the client's own source address for this path.
      assert.equal(conn.remoteAddress, tb.hosts.cli[path]);
      assert.equal(conn.uploadBytes, 5 * MB);
      assert.equal(conn.uploadSha256, blobSha256(DEFAULT_UPLOAD_SEED, 5 * MB));
      assert.equal(conn.uploadSha256, res.uploadSha256);
      assert.equal(res.downloadSha256, blobSha256(DEFAULT_DOWNLOAD_SEED, 256 * 1024));
      assert.ok(res.downloadIntact);
      // 5 MiB × 8 / 20 Mbit/s ≈ 2.1 s; unshaped veths would take ~50 ms. No upper bound asserted.
      assert.ok(res.elapsedMs >= 1_600, `5 MB in ${res.elapsedMs} ms is faster than 20 Mbit/s shaping allows`);
      t.diagnostic(`${path}: ${res.elapsedMs} ms, ${res.mbit} Mbit/s (upload + download)`);
    });
  }

  test('setRate(wless, 5) slows a 1 MB upload over wless to at least 1.3 s, and setRate back restores 20 Mbit/s', async (t) => {
    await tb.setRate('wless', 5);
    try {
      const res = await runBlobClient(tb, 'cli', { host: tb.hosts.srv.lan, port: server.port, uploadBytes: MB, localAddress: tb.hosts.cli.wless });
      assert.equal(res.event, 'done', JSON.stringify(res));
      await server.nextConn();
      // 1 MiB × 8 / 5 Mbit/s ≈ 1.68 s.
      assert.ok(res.elapsedMs >= 1_300, `1 MB at 5 Mbit/s took only ${res.elapsedMs} ms`);
      t.diagnostic(`wless at 5 Mbit/s: ${res.elapsedMs} ms, ${res.mbit} Mbit/s`);
      const { stdout } = await tb.exec('prx', ['tc', 'class', 'show', 'dev', 'wless']);
      assert.match(stdout, /rate 5Mbit/);
    } finally {
      await tb.setRate('wless', 20);
    }
    assert.equal(tb.rates.wless, 20);
  });

  test('setLinkUp(wired, false) makes a connection over wired fail while wless still works; up again restores wired', async () => {
    await tb.setLinkUp('wired', false);
    try {
      const cut = await runBlobClient(tb, 'cli', { host: tb.hosts.srv.lan, port: server.port, uploadBytes: 1024, localAddress: tb.hosts.cli.wired, timeoutMs: 3_000 });
      assert.equal(cut.event, 'error', `expected the wired connection to fail, got ${JSON.stringify(cut)}`);
      const alive = await runBlobClient(tb, 'cli', { host: tb.hosts.srv.lan, port: server.port, uploadBytes: 64 * 1024, localAddress: tb.hosts.cli.wless, timeoutMs: 5_000 });
      assert.equal(alive.event, 'done', JSON.stringify(alive));
      assert.equal((await server.nextConn()).remoteAddress, tb.hosts.cli.wless);
    } finally {
      await tb.setLinkUp('wired', true);
    }
    const back = await runBlobClient(tb, 'cli', { host: tb.hosts.srv.lan, port: server.port, uploadBytes: 64 * 1024, localAddress: tb.hosts.cli.wired, timeoutMs: 5_000 });
    assert.equal(back.event, 'done', JSON.stringify(back));
    assert.equal((await server.nextConn()).remoteAddress, tb.hosts.cli.wired);
  });

  test('an MPTCP connection from cli to prx opens a second subflow from the wless address', { skip: hasPython3() ? undefined : 'needs python3 for an IPPROTO_MPTCP socket' }, async () => {
    // python3 stands in for the MPTCP addon (being written in src/mptcp/): IPPROTO_MPTCP = 262.
    const listener = tb.spawn('prx', ['python3', '-c', [
      'import socket, sys',
      's = socket.socket(socket.AF_INET, socket.SOCK_STREAM, 262)',
      's.bind((sys.argv[1], 0)); s.listen(4)',
      'print("listening", s.getsockname()[1], flush=True)',
      'c, _ = s.accept()',
      'while c.recv(65536): pass',
    ].join('\n'), tb.hosts.prx.wired]);
    const { match } = await listener.waitForLine(/^listening (\d+)$/);
    const port = Number(match[1]);
    const client = tb.spawn('cli', ['python3', '-c', [
      'import socket, sys, time',
      's = socket.socket(socket.AF_INET, socket.SOCK_STREAM, 262)',
      's.connect((sys.argv[1], int(sys.argv[2])))',
      's.sendall(b"x" * 100000)',
      'print("connected", flush=True)',
      'time.sleep(10)',
    ].join('\n'), tb.hosts.prx.wired, String(port)]);
    await client.waitForLine(/^connected$/);
    let subflows = 0;
    const deadline = Date.now() + 5_000;
    while (Date.now() < deadline && (subflows = await tb.subflowCount('cli', { port })) < 2) await new Promise((r) => setTimeout(r, 100));
    assert.equal(subflows, 2, 'expected the initial subflow plus one from the subflow endpoint');
    const sockets = (await tb.tcpSockets('cli')).filter((s) => s.state === 'ESTAB' && s.peerPort === port);
    assert.deepEqual(sockets.map((s) => s.localAddress).sort(), [tb.hosts.cli.wired, tb.hosts.cli.wless].sort());
    assert.equal(new Set(sockets.map((s) => s.mptcpToken)).size, 1, 'both subflows belong to one MPTCP connection');
    await client.stop();
    await listener.stop();
  });

  test('an MPTCP blob upload from cli to prx uses both paths: 2 subflows and more than one 20 Mbit/s path carries', { skip: addonSkip }, async (t) => {
    const mptcpServer = await startBlobServer(tb, 'prx', { mptcp: true, address: tb.hosts.prx.wired });
    const size = 8 * MB;
    const transfer = runBlobClient(tb, 'cli', { host: tb.hosts.prx.wired, port: mptcpServer.port, uploadBytes: size, mptcp: true, timeoutMs: 15_000 });
    let subflows = 0;
    const deadline = Date.now() + 3_000;
    while (Date.now() < deadline && (subflows = await tb.subflowCount('cli', { port: mptcpServer.port })) < 2) await new Promise((r) => setTimeout(r, 100));
    const res = await transfer;
    assert.equal(res.event, 'done', JSON.stringify(res));
    if (res.event !== 'done') return;
    assert.equal(subflows, 2);
    const conn = await mptcpServer.nextConn();
    assert.equal(conn.uploadSha256, blobSha256(DEFAULT_UPLOAD_SEED, size));
    // One path alone tops out at 20 Mbit/s; measured ≈ 34–35 Mbit/s over both.
    assert.ok(res.mbit > 24, `MPTCP over two 20 Mbit/s paths carried only ${res.mbit} Mbit/s`);
    t.diagnostic(`MPTCP over wired+wless: ${res.elapsedMs} ms, ${res.mbit} Mbit/s`);
    await mptcpServer.proc.stop();
  });

  test('close() deletes all three namespaces and leaves none of its spawned processes running', async () => {
    const sleeper = tb.spawn('srv', ['sleep', '60']);
    const pids = tb.spawnedPids();
    assert.ok(pids.includes(sleeper.pid));
    await tb.close();
    await tb.close(); // idempotent
    assert.deepEqual(await namespacesWithPrefix(tb.prefix), []);
    assert.deepEqual(pids.filter(isAlive), []);
    assert.equal(tb.isUp, false);
    assert.throws(() => tb.spawn('cli', ['true']), /called while closed/);
  });
});

describe('testbed setup failures and teardown guarantees', { skip }, () => {
  for (const step of SETUP_STEPS.filter((s) => s !== 'namespaces')) {
    test(`a setup that fails at the ${step} step leaves no namespaces behind and names the failing command`, async () => {
      const before = registeredTeardownCount();
      let prefix = '';
      await assert.rejects(
        createTestbed({ wiredMbit: 10, failAtStep: step }).then((tb) => tb.close()),
        (err: Error & { stderr?: string }) => {
          prefix = /testbed (\S+) setup failed/.exec(err.message)?.[1] ?? '';
          assert.match(err.message, new RegExp(`ip -n \\S+cli link set dev nonexistent-${step} up`));
          assert.match(err.stderr ?? '', /Cannot find device/);
          return true;
        },
      );
      assert.ok(prefix.length > 0);
      assert.deepEqual(await namespacesWithPrefix(prefix), []);
      assert.equal(registeredTeardownCount(), before);
    });
  }

  test('an invalid prefix is rejected before any namespace is created', async () => {
    // Compare only names this test could have made: other testbeds may come and go meanwhile.
    const teardowns = registeredTeardownCount();
    await assert.rejects(createTestbed({ prefix: 'Bad Prefix!' }), /invalid testbed prefix "Bad Prefix!"/);
    await assert.rejects(createTestbed({ prefix: 'nodash' }), /invalid testbed prefix/);
    const names = await listNamespaces();
    assert.deepEqual(names.filter((ns) => ns.startsWith('Bad Prefix!') || ns.startsWith('nodash')), []);
    assert.equal(registeredTeardownCount(), teardowns);
  });

  test('a setup that collides with an existing namespace fails without deleting that namespace', async (t) => {
    const prefix = `mpxclash${process.pid.toString(36)}-`;
    await runCommand(['ip', 'netns', 'add', `${prefix}prx`]);
    t.after(() => runCommand(['ip', 'netns', 'del', `${prefix}prx`], { allowFailure: true }));
    await assert.rejects(createTestbed({ prefix }), /ip netns add \S+prx.*File exists/);
    // Its own cli namespace (created before the clash) is gone; the foreign prx one is untouched.
    assert.deepEqual(await namespacesWithPrefix(prefix), [`${prefix}prx`]);
  });

  test('two testbeds up at once use identical addresses without seeing each other', async (t) => {
    const [a, b] = await Promise.all([createTestbed(), createTestbed()]);
    t.after(() => Promise.all([a.close(), b.close()]));
    assert.notEqual(a.prefix, b.prefix);
    assert.equal(a.hosts.srv.lan, b.hosts.srv.lan);
    const [sa, sb] = await Promise.all([startBlobServer(a, 'srv', { port: 7001 }), startBlobServer(b, 'srv', { port: 7001 })]);
    const [ra, rb] = await Promise.all([
      runBlobClient(a, 'cli', { host: a.hosts.srv.lan, port: 7001, uploadBytes: 100_000, timeoutMs: 5_000 }),
      runBlobClient(b, 'cli', { host: b.hosts.srv.lan, port: 7001, uploadBytes: 200_000, timeoutMs: 5_000 }),
    ]);
    assert.equal(ra.event, 'done');
    assert.equal(rb.event, 'done');
    // Each server saw exactly its own client's upload.
    assert.equal((await sa.nextConn()).uploadBytes, 100_000);
    assert.equal((await sb.nextConn()).uploadBytes, 200_000);
    assert.equal(sa.proc.lines.filter((l) => l.includes('"conn"')).length, 1);
    assert.equal(sb.proc.lines.filter((l) => l.includes('"conn"')).length, 1);
  });

  for (const ending of ['uncaught exception', 'SIGTERM'] as const) {
    test(`a process that ends by ${ending} without close() still deletes its testbed and kills what it spawned`, async () => {
      const lib = new URL('../../testbed/index.js', import.meta.url).href;
      const script = [
        `import { createTestbed } from ${JSON.stringify(lib)};`,
        'const tb = await createTestbed();',
        "const p = tb.spawn('srv', ['sleep', '60']);",
        'console.log(JSON.stringify({ prefix: tb.prefix, pid: p.pid }));',
        ending === 'SIGTERM' ? 'setInterval(() => {}, 1000);' : "setTimeout(() => { throw new Error('deliberate crash'); }, 50);",
      ].join('\n');
      const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'pipe'] });
      const exited = new Promise<number | null>((resolve) => child.on('close', resolve));
      const killer = setTimeout(() => child.kill('SIGKILL'), 20_000);
      try {
        const first = await new Promise<string>((resolve, reject) => {
          createInterface({ input: child.stdout }).once('line', resolve);
          child.once('close', () => reject(new Error('child exited before creating its testbed')));
        });
        const { prefix, pid } = JSON.parse(first) as { prefix: string; pid: number };
        assert.equal((await namespacesWithPrefix(prefix)).length, 3);
        if (ending === 'SIGTERM') child.kill('SIGTERM');
        const code = await exited;
        assert.equal(code, ending === 'SIGTERM' ? 128 + 15 : 1);
        assert.deepEqual(await namespacesWithPrefix(prefix), []);
        assert.equal(isAlive(pid), false);
      } finally {
        clearTimeout(killer);
      }
    });
  }
});
