/**
 * Starts the real CLI (`mptcp-proxy start --config FILE`) inside a testbed namespace with a
 * configuration written by the test. The file is JSON, which is YAML too, so the proxy's YAML
 * loader reads exactly what the test built. The temp directory goes with {@link ConfiguredProxy.cleanup}.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { HostName, Testbed } from '../../testbed/index.js';
import { startProxyProcess, type AccessLine, type ProxyProcess } from './proxy-process.js';

export interface ConfiguredProxy extends ProxyProcess {
  /** Path of the generated config file. */
  configPath: string;
  /** Waits for a log line whose `msg` is `msg` (JSON log), counting from line `from` (default 0). */
  waitForLog(msg: string, opts?: { timeoutMs?: number; from?: number }): Promise<Record<string, unknown> & { index: number }>;
  /** Access lines received so far (all of them, including those already returned by nextAccess). */
  accessLines(): AccessLine[];
  /** Removes the temp directory (the process itself is stopped by the testbed's close()). */
  cleanup(): void;
}

/** Access rules for a proxy that serves the testbed: every 10/8 client, private destinations allowed. */
export const TESTBED_ACCESS = { allowClients: ['10.0.0.0/8'] } as const;

/** Writes `config` to a temp file and runs `start --config` in `host`; resolves once every listener is up. */
export async function startConfiguredProxy(tb: Testbed, host: HostName, config: { listeners: unknown[] } & Record<string, unknown>): Promise<ConfiguredProxy> {
  const dir = mkdtempSync(join(tmpdir(), 'mpx-netns-proxy-'));
  const configPath = join(dir, 'proxy.yaml');
  writeFileSync(configPath, `${JSON.stringify({ log: { level: 'info', format: 'json', access: true }, ...config }, null, 2)}\n`);
  let proxy: ProxyProcess;
  try {
    proxy = await startProxyProcess(tb, host, ['start', '--config', configPath], { listeners: config.listeners.length });
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  const escape = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  return {
    ...proxy,
    configPath,
    async waitForLog(msg, opts = {}) {
      const found = await proxy.proc.waitForLine(new RegExp(`"msg":"${escape(msg)}"`), { timeoutMs: opts.timeoutMs ?? 10_000, from: opts.from ?? 0 });
      return { ...(JSON.parse(found.line) as Record<string, unknown>), index: found.index };
    },
    accessLines() {
      return proxy.proc.lines.filter((l) => l.includes('"msg":"access"')).map((l) => JSON.parse(l) as AccessLine);
    },
    cleanup() {
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
