/**
 * Starting the blob peer programs inside testbed namespaces, for tests. The programs are the
 * compiled siblings of this file (dist/test/helpers/peer-blob-*.js), run with this Node binary.
 */
import { fileURLToPath } from 'node:url';
import type { HostName, Testbed, TestbedProcess } from '../../testbed/index.js';

export const BLOB_SERVER_PATH = fileURLToPath(new URL('./peer-blob-server.js', import.meta.url));
export const BLOB_CLIENT_PATH = fileURLToPath(new URL('./peer-blob-client.js', import.meta.url));

/** The JSON line the blob server prints per connection. */
export interface BlobServerConn {
  event: 'conn';
  uploadBytes: number;
  uploadSha256: string;
  downloadBytes: number;
  downloadSha256: string;
  remoteAddress: string;
  remotePort: number;
  localAddress: string;
  localPort: number;
  elapsedMs: number;
}

/** The JSON line the blob client prints at the end. */
export type BlobClientResult =
  | {
      event: 'done';
      uploadBytes: number;
      uploadSha256: string;
      downloadBytes: number;
      downloadSha256: string;
      downloadIntact: boolean;
      elapsedMs: number;
      connectMs: number;
      mbit: number;
      localAddress: string;
      localPort: number;
      remoteAddress: string;
      remotePort: number;
    }
  | { event: 'error'; code: string; message: string; elapsedMs: number };

export interface BlobServer {
  proc: TestbedProcess;
  port: number;
  /** Wait for the next connection report (counting from `from`, default: all so far). */
  nextConn(opts?: { timeoutMs?: number; from?: number }): Promise<BlobServerConn>;
}

/** Start a blob server in `host` on `address` (default all), port 0; resolves once listening. */
export async function startBlobServer(
  tb: Testbed,
  host: HostName,
  opts: { address?: string; port?: number; timeoutMs?: number; mptcp?: boolean } = {},
): Promise<BlobServer> {
  const proc = tb.spawn(host, [
    process.execPath, BLOB_SERVER_PATH, '--host', opts.address ?? '0.0.0.0', '--port', String(opts.port ?? 0),
    ...(opts.mptcp ? ['--mptcp'] : []),
  ]);
  const { match } = await proc.waitForLine(/^listening (\d+)$/, { timeoutMs: opts.timeoutMs ?? 10_000 });
  let seen = 0;
  return {
    proc,
    port: Number(match[1]),
    async nextConn(o = {}) {
      const from = o.from ?? seen;
      const found = await proc.waitForLine(/"event":"(conn|error)"/, { from, timeoutMs: o.timeoutMs ?? 30_000 });
      seen = found.index + 1;
      const value = JSON.parse(found.line) as BlobServerConn | { event: 'error'; message: string };
      if (value.event !== 'conn') throw new Error(`blob server reported an error: ${found.line}`);
      return value;
    },
  };
}

/** Options for {@link runBlobClient}. */
export interface BlobClientOptions {
  host: string;
  port: number;
  uploadBytes?: number;
  downloadBytes?: number;
  localAddress?: string;
  timeoutMs?: number;
  /** Use an MPTCP socket (src/mptcp addon). */
  mptcp?: boolean;
  /** Extra CLI arguments. */
  extraArgs?: readonly string[];
}

/** Run the blob client in `host` to completion and return its JSON result (done or error). */
export async function runBlobClient(tb: Testbed, host: HostName, opts: BlobClientOptions): Promise<BlobClientResult> {
  const timeoutMs = opts.timeoutMs ?? 30_000;
  const argv = [
    process.execPath, BLOB_CLIENT_PATH,
    '--host', opts.host, '--port', String(opts.port),
    '--upload-bytes', String(opts.uploadBytes ?? 0), '--download-bytes', String(opts.downloadBytes ?? 0),
    '--timeout-ms', String(timeoutMs),
    ...(opts.localAddress ? ['--local-address', opts.localAddress] : []),
    ...(opts.mptcp ? ['--mptcp'] : []),
    ...(opts.extraArgs ?? []),
  ];
  const proc = tb.spawn(host, argv);
  // The client bounds itself; the extra 5 s covers Node's start-up.
  const result = await proc.waitForJson<BlobClientResult>((v) => v.event === 'done' || v.event === 'error', { timeoutMs: timeoutMs + 5_000 });
  await proc.waitForExit(5_000);
  return result;
}
