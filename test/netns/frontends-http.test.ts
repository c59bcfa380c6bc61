/**
 * The HTTP front-end with real clients in the testbed: `mptcpize run curl` in cli (two paths)
 * through our proxy in prx to origins in srv — GET (also one served whole by the engine), POST,
 * keep-alive, chunked upload, CONNECT to
 * a TLS origin — plus a Node client on our own addon tunnelling with CONNECT, and a refused
 * upstream answered 502 while the proxy keeps serving. The proxy's own access log confirms each
 * client connection was MPTCP with two subflows (one line per client connection, written when it
 * closes).
 */
import { strict as assert } from 'node:assert';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { createTestbed, type Testbed } from '../../testbed/index.js';
import { blobSha256, DEFAULT_DOWNLOAD_SEED } from '../helpers/peer-blob-content.js';
import { startBlobServer, type BlobServer } from '../helpers/peer-programs.js';
import { startConfiguredProxy, TESTBED_ACCESS, type ConfiguredProxy } from '../helpers/netns-proxy-config.js';
import {
  makeSelfSignedCert, missingToolReason, startHttpOrigin, startHttpsOrigin, type Origin, type TestCertificate,
} from '../helpers/netns-programs.js';
import { testbedSkipReason } from '../helpers/netns-skip.js';
import { assertMptcpTwoSubflows, assertNodeClientTunnel } from '../helpers/netns-assertions.js';

const MB = 1024 * 1024;
const HTTP_PORT = 3128;
/** Nothing listens there in srv: the kernel answers RST, the dialer ECONNREFUSED. */
const CLOSED_PORT = 9;

function skipReason(): string | undefined {
  return testbedSkipReason() ?? missingToolReason(['mptcpize', 'curl', 'openssl']);
}

describe('HTTP front-end serves real MPTCP clients across the testbed', { skip: skipReason() }, () => {
  let tb: Testbed;
  let proxy: ConfiguredProxy;
  let origin: Origin;
  let tlsOrigin: Origin;
  let blob: BlobServer;
  let cert: TestCertificate;
  let work: string;
  let proxyUrl: string;
  let originUrl: string;

  /** Runs a shell line in cli (bash, pipefail) and returns stdout. */
  const inCli = async (line: string): Promise<string> => (await tb.exec('cli', ['bash', '-o', 'pipefail', '-c', line], { timeoutMs: 40_000 })).stdout;

  before(async () => {
    tb = await createTestbed({ wiredMbit: 20, wlessMbit: 20 });
    work = mkdtempSync(join(tmpdir(), 'mpx-netns-http-'));
    cert = makeSelfSignedCert(tb.hosts.srv.lan);
    [origin, tlsOrigin, blob] = await Promise.all([
      startHttpOrigin(tb, 'srv', tb.hosts.srv.lan),
      startHttpsOrigin(tb, 'srv', tb.hosts.srv.lan, cert),
      startBlobServer(tb, 'srv', { address: tb.hosts.srv.lan }),
    ]);
    proxy = await startConfiguredProxy(tb, 'prx', {
      listeners: [{ name: 'http', type: 'http', listen: `0.0.0.0:${HTTP_PORT}` }],
      access: TESTBED_ACCESS,
      // debug: the engine-served exchange says so in a line of its own
      log: { level: 'debug', format: 'json', access: true },
    });
    proxyUrl = `http://${tb.hosts.prx.wired}:${HTTP_PORT}`;
    originUrl = `http://${tb.hosts.srv.lan}:${origin.port}`;
  });
  after(async () => {
    await tb?.close();
    proxy?.cleanup();
    cert?.cleanup();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  test('GET: mptcpize curl downloads 2 MiB intact through the proxy over two subflows', async () => {
    const out = await inCli(`mptcpize run curl -sS --fail --max-time 30 -x ${proxyUrl} ${originUrl}/blob/${2 * MB} | sha256sum`);
    assert.equal(out.split(' ')[0], blobSha256(DEFAULT_DOWNLOAD_SEED, 2 * MB));
    const line = await proxy.nextAccess();
    assertMptcpTwoSubflows(line, 'GET');
    assert.equal(line.method, 'GET');
    assert.equal(line.status, 200);
    assert.ok(line.bytesDown > 2 * MB, `bytesDown ${line.bytesDown} counts the body`);
  });

  test('GET with Connection: close is served in the engine (no Node socket) when the engine accepts: 2 MiB intact, two subflows seen', async () => {
    const before = proxy.proc.lines.length;
    // Not with the JS relay or MPTCP_PROXY_ENGINE_ACCEPT=off: then the session serves it.
    const inEngine = proxy.proc.lines.some((l) => l.includes('"msg":"listening"') && l.includes('"acceptedBy":"native engine"'));
    const out = await inCli(`mptcpize run curl -sS --fail --max-time 30 -H 'Connection: close' -x ${proxyUrl} ${originUrl}/blob/${2 * MB} | sha256sum`);
    assert.equal(out.split(' ')[0], blobSha256(DEFAULT_DOWNLOAD_SEED, 2 * MB));
    const line = await proxy.nextAccess();
    assertMptcpTwoSubflows(line, 'GET in the engine');
    assert.equal(line.status, 200);
    assert.ok(line.bytesDown > 2 * MB, `bytesDown ${line.bytesDown} counts the body`);
    if (inEngine) await proxy.waitForLog('http exchange served in the engine', { from: before });
    else assert.ok(!proxy.proc.lines.slice(before).some((l) => l.includes('served in the engine')), 'no engine, no engine exchange');
  });

  test('POST: a 1 MiB Content-Length body reaches the origin intact (its SHA-256 comes back)', async () => {
    const file = join(work, 'post.bin');
    const body = randomBytes(MB);
    writeFileSync(file, body);
    const out = await inCli(`mptcpize run curl -sS --fail --max-time 30 -x ${proxyUrl} --data-binary @${file} ${originUrl}/sha256`);
    assert.equal(out.trim(), createHash('sha256').update(body).digest('hex'));
    const line = await proxy.nextAccess();
    assertMptcpTwoSubflows(line, 'POST');
    assert.equal(line.method, 'POST');
    assert.equal(line.status, 200);
    assert.ok(line.bytesUp > MB, `bytesUp ${line.bytesUp} counts the body`);
  });

  test('keep-alive: two requests in one curl run share one MPTCP client connection', async () => {
    const [f1, f2] = [join(work, 'ka1.bin'), join(work, 'ka2.bin')];
    // %{num_connects}: new connections curl opened for each transfer; 0 for the second = reused.
    const out = await inCli(
      `mptcpize run curl -sS --fail --max-time 30 -x ${proxyUrl} -w '%{num_connects}\\n' ${originUrl}/blob/${MB} -o ${f1} ${originUrl}/blob/${MB + 7} -o ${f2}`,
    );
    assert.deepEqual(out.trim().split('\n'), ['1', '0'], 'curl reused its connection to the proxy');
    assert.equal(createHash('sha256').update(readFileSync(f1)).digest('hex'), blobSha256(DEFAULT_DOWNLOAD_SEED, MB));
    assert.equal(createHash('sha256').update(readFileSync(f2)).digest('hex'), blobSha256(DEFAULT_DOWNLOAD_SEED, MB + 7));
    const line = await proxy.nextAccess();
    assertMptcpTwoSubflows(line, 'keep-alive');
    assert.equal(line.requests, 2, 'one access line for the connection, covering both requests');
  });

  test('chunked upload: Transfer-Encoding chunked body arrives intact', async () => {
    const file = join(work, 'chunked.bin');
    const body = randomBytes(MB + 123);
    writeFileSync(file, body);
    const out = await inCli(
      `mptcpize run curl -sS --fail --max-time 30 -x ${proxyUrl} -H 'Transfer-Encoding: chunked' --data-binary @${file} ${originUrl}/sha256`,
    );
    assert.equal(out.trim(), createHash('sha256').update(body).digest('hex'));
    const line = await proxy.nextAccess();
    assertMptcpTwoSubflows(line, 'chunked');
    assert.equal(line.status, 200);
  });

  test('CONNECT: curl -p tunnels TLS to an HTTPS origin with a certificate it verifies', async () => {
    const url = `https://${tb.hosts.srv.lan}:${tlsOrigin.port}/blob/${2 * MB}`;
    const out = await inCli(`mptcpize run curl -sS --fail --max-time 30 -p -x ${proxyUrl} --cacert ${cert.certPath} ${url} | sha256sum`);
    assert.equal(out.split(' ')[0], blobSha256(DEFAULT_DOWNLOAD_SEED, 2 * MB));
    const line = await proxy.nextAccess();
    assert.equal(line.clientMptcp, true, `the proxy saw an MPTCP client: ${JSON.stringify(line)}`);
    assertMptcpTwoSubflows(line, 'CONNECT');
    assert.equal(line.method, 'CONNECT');
    assert.equal(line.status, 200);
    assert.equal(line.target, `${tb.hosts.srv.lan}:${tlsOrigin.port}`);
  });

  test('a Node client on our addon (MPTCP socket) tunnels 2 MiB each way with CONNECT', async () => {
    const line = await assertNodeClientTunnel(tb, {
      proxyAddress: `${tb.hosts.prx.wired}:${HTTP_PORT}`, via: 'connect', blob, bytes: 2 * MB, nextAccess: () => proxy.nextAccess(),
    });
    assert.equal(line.method, 'CONNECT');
  });

  test('an upstream that refuses is a 502 with a text body, and the next request is served', async () => {
    const out = await inCli(`mptcpize run curl -sS --max-time 10 -x ${proxyUrl} -w '\\n%{http_code}' http://${tb.hosts.srv.lan}:${CLOSED_PORT}/`);
    const lines = out.trim().split('\n');
    assert.equal(lines.at(-1), '502', out);
    assert.match(lines[0] ?? '', /^502 Bad Gateway: /);
    const bad = await proxy.nextAccess();
    assert.equal(bad.status, 502);
    assert.equal(bad.clientMptcp, true);

    const ok = await inCli(`mptcpize run curl -sS --fail --max-time 30 -x ${proxyUrl} ${originUrl}/blob/${MB} | sha256sum`);
    assert.equal(ok.split(' ')[0], blobSha256(DEFAULT_DOWNLOAD_SEED, MB));
    const good = await proxy.nextAccess();
    assertMptcpTwoSubflows(good, 'after the 502');
    assert.equal(good.status, 200);
  });
});
