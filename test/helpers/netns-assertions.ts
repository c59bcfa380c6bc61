/**
 * Assertions the netns front-end tests share: what the proxy's access line must say about an
 * MPTCP client, and the full check of a tunnel made by our Node addon client.
 */
import { strict as assert } from 'node:assert';
import type { Testbed } from '../../testbed/index.js';
import { blobSha256, DEFAULT_UPLOAD_SEED } from './peer-blob-content.js';
import type { BlobServer } from './peer-programs.js';
import type { AccessLine } from './proxy-process.js';
import { runProxyClient } from './netns-programs.js';

export function assertMptcpTwoSubflows(line: AccessLine, what: string): void {
  assert.equal(line.clientMptcp, true, `${what}: the proxy saw an MPTCP client: ${JSON.stringify(line)}`);
  assert.equal(line.clientSubflows, 2, `${what}: the proxy saw two subflows: ${JSON.stringify(line)}`);
}

/**
 * Our Node client (an MPTCP socket from the addon) in cli tunnels `bytes` each way through the
 * proxy at `proxyAddress` (`via` SOCKS5 or CONNECT) to `blob`; asserts both directions intact,
 * the client socket MPTCP and the proxy's line MPTCP with two subflows. Returns that line.
 */
export async function assertNodeClientTunnel(
  tb: Testbed,
  opts: { proxyAddress: string; via: 'socks5' | 'connect'; blob: BlobServer; bytes: number; nextAccess: () => Promise<AccessLine> },
): Promise<AccessLine> {
  const res = await runProxyClient(tb, 'cli', {
    proxy: opts.proxyAddress,
    via: opts.via,
    to: `${tb.hosts.srv.lan}:${opts.blob.port}`,
    uploadBytes: opts.bytes,
    downloadBytes: opts.bytes,
  });
  assert.equal(res.event, 'done', JSON.stringify(res));
  if (res.event !== 'done') throw new Error('unreachable');
  assert.equal(res.mptcp, true, 'the client socket is MPTCP');
  assert.ok(res.downloadIntact, 'download intact');
  const conn = await opts.blob.nextConn();
  assert.equal(conn.uploadSha256, blobSha256(DEFAULT_UPLOAD_SEED, opts.bytes), 'upload intact at the server');
  const line = await opts.nextAccess();
  assertMptcpTwoSubflows(line, `Node ${opts.via}`);
  return line;
}
