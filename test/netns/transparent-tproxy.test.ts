/**
 * Transparent mode in the testbed. The client in cli connects straight to the server's address
 * in srv; prx routes that traffic (ip_forward=1), and nftables in prx hands it to our transparent
 * listeners instead of forwarding it:
 *
 *  - TPROXY (mode tproxy): the connection is delivered unchanged to an IP_TRANSPARENT listener,
 *    so the accepted socket's local address is the server's. Works for MPTCP clients, including
 *    the MP_JOIN of their second subflow (from the wless address to the same server address),
 *    which TPROXY delivers to the listener where the kernel joins it to the connection by token —
 *    *provided the listener's port is the intercepted port*: the kernel refuses an MP_JOIN that
 *    arrives on a listener whose port differs from the connection's unless that port was
 *    announced with ADD_ADDR (net/mptcp/subflow.c subflow_check_req, MIB MismatchPortSynRx).
 *    So the service port 8080 goes to a listener on :8080; a rule sending port 8081 to :9040
 *    shows the refusal (one subflow, data still intact).
 *  - REDIRECT (mode redirect, :9041): DNAT to our address; the original is SO_ORIGINAL_DST, which
 *    the kernel answers only for TCP sockets, so MPTCP clients get a logged "use tproxy" error and
 *    plain TCP clients work.
 *
 * The exact rules are the ones docs/transparent.md documents; they live in prx's namespace and
 * are also removed explicitly at the end (after which the same connection is routed, not
 * intercepted).
 */
import { strict as assert } from 'node:assert';
import { after, before, describe, test } from 'node:test';
import { setTimeout as delay } from 'node:timers/promises';
import { createTestbed, type Testbed } from '../../testbed/index.js';
import { blobSha256, DEFAULT_UPLOAD_SEED } from '../helpers/peer-blob-content.js';
import { runBlobClient, startBlobServer, type BlobServer } from '../helpers/peer-programs.js';
import { startConfiguredProxy, TESTBED_ACCESS, type ConfiguredProxy } from '../helpers/netns-proxy-config.js';
import { missingToolReason } from '../helpers/netns-programs.js';
import { mptcpMib } from '../helpers/netns-mib.js';
import { testbedSkipReason } from '../helpers/netns-skip.js';

const MB = 1024 * 1024;
/** Intercepted with TPROXY to a listener on the same port: MPTCP clients keep both subflows. */
const SERVICE_PORT = 8080;
/** Intercepted with TPROXY to a listener on another port: MP_JOINs are refused by the kernel. */
const OTHER_SERVICE_PORT = 8081;
const OTHER_TPROXY_PORT = 9040;
/** Intercepted with REDIRECT. */
const REDIRECTED_SERVICE_PORT = 8082;
const REDIRECT_PORT = 9041;
/** fwmark and routing table of the TPROXY policy route (any unused pair works). */
const MARK = 1;
const TABLE = 100;

/**
 * The ruleset (nftables ≥ 0.9.x syntax, checked with 1.0.6). Only traffic arriving from the
 * clients' links is intercepted (iifname), so the proxy's own upstream connections to the
 * server subnet — and the server's replies to them — are never caught.
 */
function nftRuleset(serverSubnet: string): string {
  return `
table ip mptcp_proxy_tproxy {
  chain prerouting {
    type filter hook prerouting priority mangle; policy accept;
    # packets of connections already owned by a transparent socket: deliver locally
    iifname { "wired", "wless" } meta l4proto tcp socket transparent 1 meta mark set ${MARK} accept
    # new connections (SYNs, MP_JOIN SYNs too) to the service: to the listener on the same port
    iifname { "wired", "wless" } ip daddr ${serverSubnet} tcp dport ${SERVICE_PORT} meta mark set ${MARK} tproxy to :${SERVICE_PORT} accept
    # the counter-example: a listener on a different port (MP_JOINs refused by the kernel)
    iifname { "wired", "wless" } ip daddr ${serverSubnet} tcp dport ${OTHER_SERVICE_PORT} meta mark set ${MARK} tproxy to :${OTHER_TPROXY_PORT} accept
  }
}
table ip mptcp_proxy_redirect {
  chain prerouting {
    type nat hook prerouting priority dstnat; policy accept;
    iifname { "wired", "wless" } ip daddr ${serverSubnet} tcp dport ${REDIRECTED_SERVICE_PORT} redirect to :${REDIRECT_PORT}
  }
}
`;
}

describe('transparent front-end: TPROXY serves two-subflow MPTCP clients, REDIRECT only TCP ones', { skip: testbedSkipReason() ?? missingToolReason(['nft']) }, () => {
  let tb: Testbed;
  let proxy: ConfiguredProxy;
  let tproxied: BlobServer;
  let otherPort: BlobServer;
  let redirected: BlobServer;
  let rulesInstalled = false;

  const prx = (argv: string[]) => tb.exec('prx', argv);

  async function removeRules(): Promise<void> {
    await tb.exec('prx', ['nft', 'delete', 'table', 'ip', 'mptcp_proxy_tproxy'], { allowFailure: true });
    await tb.exec('prx', ['nft', 'delete', 'table', 'ip', 'mptcp_proxy_redirect'], { allowFailure: true });
    await tb.exec('prx', ['ip', 'rule', 'del', 'fwmark', String(MARK), 'lookup', String(TABLE)], { allowFailure: true });
    await tb.exec('prx', ['ip', 'route', 'del', 'local', '0.0.0.0/0', 'dev', 'lo', 'table', String(TABLE)], { allowFailure: true });
    rulesInstalled = false;
  }

  before(async () => {
    // Shaped so each transfer lasts long enough for the client's MP_JOIN to land before it ends:
    // on unshaped veth 4-8 MiB can finish in milliseconds, before the path manager runs.
    tb = await createTestbed({ wiredMbit: 100, wlessMbit: 100 });
    [tproxied, otherPort, redirected] = await Promise.all(
      [SERVICE_PORT, OTHER_SERVICE_PORT, REDIRECTED_SERVICE_PORT].map((port) => startBlobServer(tb, 'srv', { address: tb.hosts.srv.lan, port })),
    );
    proxy = await startConfiguredProxy(tb, 'prx', {
      listeners: [
        { name: 'tproxy', type: 'transparent', listen: `0.0.0.0:${SERVICE_PORT}`, mode: 'tproxy' },
        { name: 'tproxy-other-port', type: 'transparent', listen: `0.0.0.0:${OTHER_TPROXY_PORT}`, mode: 'tproxy' },
        { name: 'redirect', type: 'transparent', listen: `0.0.0.0:${REDIRECT_PORT}`, mode: 'redirect' },
      ],
      access: TESTBED_ACCESS,
    });
    rulesInstalled = true;
    await tb.exec('prx', ['nft', '-f', '-'], { input: nftRuleset(tb.subnet('lan')) });
    // TPROXY only marks; this policy route makes marked packets local, so they reach the socket
    // instead of being forwarded (Documentation/networking/tproxy.rst).
    await prx(['ip', 'rule', 'add', 'fwmark', String(MARK), 'lookup', String(TABLE)]);
    await prx(['ip', 'route', 'add', 'local', '0.0.0.0/0', 'dev', 'lo', 'table', String(TABLE)]);
  });
  after(async () => {
    if (tb?.isUp && rulesInstalled) await removeRules();
    await tb?.close();
    proxy?.cleanup();
  });

  test('with the native engine, the engine accepts for the TPROXY listeners (Node for REDIRECT, which needs SO_ORIGINAL_DST)', () => {
    const listening = proxy.proc.lines.filter((l) => l.includes('"msg":"listening"')).map((l) => JSON.parse(l) as { listener: string; acceptedBy?: string });
    const by = Object.fromEntries(listening.map((l) => [l.listener, l.acceptedBy ?? 'node']));
    const engine = process.env.MPTCP_PROXY_RELAY === 'js' ? 'node' : 'native engine';
    assert.deepEqual(by, { tproxy: engine, 'tproxy-other-port': engine, redirect: 'node' });
  });

  test('TPROXY: an MPTCP client addressing the server gets both subflows intercepted, 8 MiB each way intact', async () => {
    const res = await runBlobClient(tb, 'cli', { host: tb.hosts.srv.lan, port: tproxied.port, uploadBytes: 8 * MB, downloadBytes: 8 * MB, mptcp: true });
    assert.equal(res.event, 'done', JSON.stringify(res));
    if (res.event !== 'done') return;
    assert.ok(res.downloadIntact, 'download intact');
    assert.equal(res.remoteAddress, tb.hosts.srv.lan, 'the client believes it talks to the server');
    const conn = await tproxied.nextConn();
    assert.equal(conn.uploadSha256, blobSha256(DEFAULT_UPLOAD_SEED, 8 * MB), 'upload intact');
    assert.equal(conn.remoteAddress.replace(/^::ffff:/, ''), tb.hosts.prx.lan, 'the server was dialed by the proxy, not reached by routing');

    const line = await proxy.nextAccess();
    assert.equal(line.listener, 'tproxy');
    assert.equal(line.target, `${tb.hosts.srv.lan}:${tproxied.port}`, 'original destination recovered from the local address');
    assert.equal(line.clientMptcp, true);
    assert.equal(line.clientSubflows, 2, `both subflows reached the same MPTCP connection: ${JSON.stringify(line.clientPaths)}`);
    const paths = line.clientPaths ?? [];
    assert.ok(paths.some((p) => p.includes(`-> ${tb.hosts.cli.wired}:`)), `a subflow from the wired address: ${paths.join(', ')}`);
    assert.ok(paths.some((p) => p.includes(`-> ${tb.hosts.cli.wless}:`)), `the MP_JOIN subflow from the wless address: ${paths.join(', ')}`);
    assert.equal(line.bytesUp, 8 + 8 * MB);
    assert.equal(line.bytesDown, 8 * MB);
  });

  test('TPROXY: a plain TCP client is intercepted the same way', async () => {
    const res = await runBlobClient(tb, 'cli', { host: tb.hosts.srv.lan, port: tproxied.port, uploadBytes: 2 * MB, downloadBytes: 2 * MB, localAddress: tb.hosts.cli.wired });
    assert.equal(res.event, 'done', JSON.stringify(res));
    if (res.event === 'done') assert.ok(res.downloadIntact);
    const conn = await tproxied.nextConn();
    assert.equal(conn.uploadSha256, blobSha256(DEFAULT_UPLOAD_SEED, 2 * MB));
    const line = await proxy.nextAccess();
    assert.equal(line.listener, 'tproxy');
    assert.equal(line.clientMptcp, false);
    assert.equal(line.target, `${tb.hosts.srv.lan}:${tproxied.port}`);
  });

  test('TPROXY to a listener on another port: the kernel refuses the MP_JOIN, one subflow carries the data', async () => {
    const from = proxy.proc.lines.length;
    const before = await mptcpMib(tb, 'prx');
    const res = await runBlobClient(tb, 'cli', { host: tb.hosts.srv.lan, port: otherPort.port, uploadBytes: 2 * MB, downloadBytes: 2 * MB, mptcp: true });
    assert.equal(res.event, 'done', JSON.stringify(res));
    if (res.event === 'done') assert.ok(res.downloadIntact);
    const conn = await otherPort.nextConn();
    assert.equal(conn.uploadSha256, blobSha256(DEFAULT_UPLOAD_SEED, 2 * MB));
    const line = await proxy.nextAccess();
    assert.equal(line.listener, 'tproxy-other-port');
    assert.equal(line.clientMptcp, true);
    assert.equal(line.clientSubflows, 1, `the wless MP_JOIN was refused: ${JSON.stringify(line.clientPaths)}`);
    const afterMib = await mptcpMib(tb, 'prx');
    assert.ok((afterMib.MismatchPortSynRx ?? 0) > (before.MismatchPortSynRx ?? 0), 'refused as a port mismatch (MPTCP_MIB_MISMATCHPORTSYNRX)');
    // The front-end says why, once per listener.
    const warn = await proxy.waitForLog('transparent: MPTCP client intercepted to a listener on another port', { from });
    assert.equal(warn.listenerPort, OTHER_TPROXY_PORT);
    assert.equal(warn.destinationPort, OTHER_SERVICE_PORT);
  });

  test('REDIRECT: an MPTCP client is refused with the logged "use tproxy" error (SO_ORIGINAL_DST is TCP-only)', async () => {
    const from = proxy.proc.lines.length;
    const res = await runBlobClient(tb, 'cli', { host: tb.hosts.srv.lan, port: redirected.port, uploadBytes: MB, downloadBytes: MB, mptcp: true, timeoutMs: 10_000 });
    assert.equal(res.event, 'error', `the client is cut off: ${JSON.stringify(res)}`);
    const warn = await proxy.waitForLog('transparent: no destination', { from });
    const err = warn.err as { code?: string; message?: string };
    assert.equal(err.code, 'MPX_ERR_NOT_SUPPORTED');
    assert.match(err.message ?? '', /use transparent mode "tproxy"/);
    const line = await proxy.nextAccess();
    assert.equal(line.listener, 'redirect');
    assert.equal(line.clientMptcp, true);
    assert.equal(line.error, 'MPX_ERR_NOT_SUPPORTED');
    assert.equal(line.upstream, undefined, 'nothing was dialed');
  });

  test('REDIRECT: a plain TCP client works (SO_ORIGINAL_DST from conntrack)', async () => {
    const res = await runBlobClient(tb, 'cli', { host: tb.hosts.srv.lan, port: redirected.port, uploadBytes: 2 * MB, downloadBytes: 2 * MB, localAddress: tb.hosts.cli.wired });
    assert.equal(res.event, 'done', JSON.stringify(res));
    if (res.event === 'done') assert.ok(res.downloadIntact);
    const conn = await redirected.nextConn();
    assert.equal(conn.uploadSha256, blobSha256(DEFAULT_UPLOAD_SEED, 2 * MB));
    assert.equal(conn.remoteAddress.replace(/^::ffff:/, ''), tb.hosts.prx.lan);
    const line = await proxy.nextAccess();
    assert.equal(line.listener, 'redirect');
    assert.equal(line.clientMptcp, false);
    assert.equal(line.target, `${tb.hosts.srv.lan}:${redirected.port}`);
  });

  test('loop guard: a client addressing the transparent listeners themselves is refused, not dialed back in', async () => {
    for (const [listener, port] of [['tproxy', SERVICE_PORT], ['redirect', REDIRECT_PORT]] as const) {
      const res = await runBlobClient(tb, 'cli', { host: tb.hosts.prx.wired, port, uploadBytes: 1024, downloadBytes: 1024, localAddress: tb.hosts.cli.wired, timeoutMs: 10_000 });
      assert.equal(res.event, 'error', `${listener}: the client is cut off: ${JSON.stringify(res)}`);
      const line = await proxy.nextAccess();
      assert.equal(line.listener, listener);
      assert.equal(line.target, `${tb.hosts.prx.wired}:${port}`, `${listener}: the "original destination" is the proxy itself`);
      assert.equal(line.error, 'MPX_ERR_ACCESS_DENIED', `${listener}: ${JSON.stringify(line)}`);
    }
    // Whichever path checked it (the engine's destination check for tproxy, the dialer for
    // redirect), the log names the self-loop rule.
    const denials = proxy.proc.lines.filter((l) => l.includes('"msg":"upstream dial failed"') && l.includes(`"target":"${tb.hosts.prx.wired}:`));
    assert.equal(denials.length, 2, denials.join('\n'));
    for (const d of denials) assert.match(d, /denied by rule self/);
    // No connection from the proxy to itself: nothing else was accepted.
    await delay(300);
    const clients = proxy.accessLines().map((l) => l.client.split(':')[0]);
    assert.ok(!clients.some((c) => [tb.hosts.prx.wired, tb.hosts.prx.wless, tb.hosts.prx.lan, '127.0.0.1'].includes(c ?? '')), `the proxy never connected to itself: ${clients.join(', ')}`);
  });

  test('removing the rules restores plain routing: the server sees the client itself', async () => {
    await removeRules();
    const { stdout } = await prx(['nft', 'list', 'ruleset']);
    assert.doesNotMatch(stdout, /mptcp_proxy_/);
    const rules = await prx(['ip', 'rule', 'show']);
    assert.doesNotMatch(rules.stdout, new RegExp(`lookup ${TABLE}\\b`));
    const res = await runBlobClient(tb, 'cli', { host: tb.hosts.srv.lan, port: tproxied.port, uploadBytes: MB, downloadBytes: MB, mptcp: true });
    assert.equal(res.event, 'done', JSON.stringify(res));
    const conn = await tproxied.nextConn();
    assert.equal(conn.remoteAddress.replace(/^::ffff:/, ''), tb.hosts.cli.wired, 'routed straight through prx');
    const accessCount = proxy.accessLines().length;
    await delay(200);
    assert.equal(proxy.accessLines().length, accessCount, 'the proxy saw nothing');
  });
});
