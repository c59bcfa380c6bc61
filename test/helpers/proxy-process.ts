/**
 * Runs the real mptcp-proxy CLI (dist/src/cli/main.js) inside a testbed namespace, with JSON
 * logs, and reads its access-log lines — the proxy's own account of each connection.
 */
import { fileURLToPath } from 'node:url';
import type { HostName, Testbed, TestbedProcess } from '../../testbed/index.js';

export const PROXY_CLI_PATH = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));

/** One access-log line (fields from src/core/access-log.ts). */
export interface AccessLine {
  msg: 'access';
  conn: string;
  listener: string;
  frontend: string;
  client: string;
  clientMptcp: boolean;
  clientSubflows?: number;
  clientPaths?: string[];
  target?: string;
  upstream?: string;
  upstreamMptcp?: boolean;
  bytesUp: number;
  bytesDown: number;
  durationMs: number;
  endedBy: string;
  error?: string;
  [k: string]: unknown;
}

export interface ProxyProcess {
  proc: TestbedProcess;
  /** Waits for the next access line (after those already returned). */
  nextAccess(timeoutMs?: number): Promise<AccessLine>;
}

/** Starts the proxy with `args` (e.g. ['forward', '--listen', ...]) and waits until every listener is up. */
export async function startProxyProcess(
  tb: Testbed,
  host: HostName,
  args: readonly string[],
  opts: { listeners?: number; /** merged over this process's environment */ env?: NodeJS.ProcessEnv } = {},
): Promise<ProxyProcess> {
  const proc = tb.spawn(host, [process.execPath, PROXY_CLI_PATH, ...args, '--log-format', 'json'], opts.env ? { env: opts.env } : {});
  let from = 0;
  for (let i = 0; i < (opts.listeners ?? 1); i++) {
    const found = await proc.waitForLine(/"msg":"listening"/, { timeoutMs: 10_000, from });
    from = found.index + 1;
  }
  let seen = from;
  return {
    proc,
    async nextAccess(timeoutMs = 30_000) {
      const found = await proc.waitForLine(/"msg":"access"/, { timeoutMs, from: seen });
      seen = found.index + 1;
      return JSON.parse(found.line) as AccessLine;
    },
  };
}
