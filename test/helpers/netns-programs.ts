/**
 * Starting the front-end tests' peer programs in testbed namespaces: the HTTP and HTTPS origins,
 * a self-signed certificate for the latter, and the Node client that tunnels through the proxy
 * (netns-proxy-client.ts). Like peer-programs.ts, they run as compiled siblings of this file.
 */
import { execFileSync } from 'node:child_process';
import { accessSync, constants as fsConstants, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { HostName, Testbed, TestbedProcess } from '../../testbed/index.js';

const HTTP_ORIGIN_PATH = fileURLToPath(new URL('./peer-http-server.js', import.meta.url));
const HTTPS_ORIGIN_PATH = fileURLToPath(new URL('./peer-http-server.js', import.meta.url));
const PROXY_CLIENT_PATH = fileURLToPath(new URL('./netns-proxy-client.js', import.meta.url));

/** Why a test cannot run for lack of a host tool (mptcpize is Debian's mptcpize package, which .ci/run installs), or undefined. */
export function missingToolReason(tools: readonly string[]): string | undefined {
  const dirs = (process.env.PATH ?? '').split(':').filter(Boolean);
  const onPath = (tool: string): boolean => dirs.some((d) => {
    try {
      accessSync(join(d, tool), fsConstants.X_OK);
      return true;
    } catch {
      return false; // not in this directory
    }
  });
  const missing = tools.filter((t) => !onPath(t));
  return missing.length > 0 ? `not installed: ${missing.join(', ')} (.ci/run installs the mptcpize and nftables packages)` : undefined;
}

export interface Origin {
  proc: TestbedProcess;
  port: number;
}

/** peer-http-server.ts in `host` on `address`: GET /blob/N, POST /sha256. */
export async function startHttpOrigin(tb: Testbed, host: HostName, address: string): Promise<Origin> {
  const proc = tb.spawn(host, [process.execPath, HTTP_ORIGIN_PATH, '--host', address, '--port', '0']);
  return { proc, port: Number((await proc.waitForLine(/^listening (\d+)$/, { timeoutMs: 10_000 })).match[1]) };
}

/** A self-signed certificate for an IP address (subjectAltName IP:…), so curl can verify it with --cacert. */
export interface TestCertificate {
  dir: string;
  certPath: string;
  keyPath: string;
  cleanup(): void;
}

export function makeSelfSignedCert(ip: string): TestCertificate {
  const dir = mkdtempSync(join(tmpdir(), 'mpx-netns-tls-'));
  const certPath = join(dir, 'cert.pem');
  const keyPath = join(dir, 'key.pem');
  execFileSync('openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', keyPath, '-out', certPath, '-days', '1', '-subj', `/CN=${ip}`, '-addext', `subjectAltName=IP:${ip}`,
  ], { stdio: 'pipe' });
  return { dir, certPath, keyPath, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** peer-http-server.ts over TLS in `host` on `address` with the given certificate. */
export async function startHttpsOrigin(tb: Testbed, host: HostName, address: string, cert: TestCertificate): Promise<Origin> {
  const proc = tb.spawn(host, [process.execPath, HTTPS_ORIGIN_PATH, '--host', address, '--port', '0', '--cert', cert.certPath, '--key', cert.keyPath]);
  return { proc, port: Number((await proc.waitForLine(/^listening (\d+)$/, { timeoutMs: 10_000 })).match[1]) };
}

export type ProxyClientResult =
  | {
      event: 'done';
      uploadBytes: number;
      uploadSha256: string;
      downloadBytes: number;
      downloadSha256: string;
      downloadIntact: boolean;
      mptcp: boolean;
      localAddress: string;
      localPort: number;
    }
  | { event: 'refused'; via: 'socks5' | 'connect'; rep?: number; status?: number; method?: number }
  | { event: 'error'; code: string; message: string };

export interface ProxyClientOptions {
  proxy: string;
  via: 'socks5' | 'connect';
  to: string;
  uploadBytes?: number;
  downloadBytes?: number;
  mptcp?: boolean;
  timeoutMs?: number;
}

/** Runs netns-proxy-client.ts (our addon's MPTCP socket, SOCKS5 or CONNECT, then the blob protocol) to completion. */
export async function runProxyClient(tb: Testbed, host: HostName, opts: ProxyClientOptions): Promise<ProxyClientResult> {
  const timeoutMs = opts.timeoutMs ?? 30_000;
  const proc = tb.spawn(host, [
    process.execPath, PROXY_CLIENT_PATH, '--proxy', opts.proxy, '--via', opts.via, '--to', opts.to,
    '--upload-bytes', String(opts.uploadBytes ?? 0), '--download-bytes', String(opts.downloadBytes ?? 0),
    '--timeout-ms', String(timeoutMs), ...(opts.mptcp === false ? ['--no-mptcp'] : []),
  ]);
  const result = await proc.waitForJson<ProxyClientResult>((v) => ['done', 'refused', 'error'].includes(String(v.event)), { timeoutMs: timeoutMs + 5_000 });
  await proc.waitForExit(5_000);
  return result;
}
