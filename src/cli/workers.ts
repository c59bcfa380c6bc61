/**
 * `--workers N`: N copies of this process, each binding every listener with SO_REUSEPORT, so
 * the kernel spreads new connections over them (socket(7) SO_REUSEPORT). Child processes,
 * not node:cluster: a cluster worker's listen() goes through the primary, which cannot share
 * the MPTCP fd the addon creates. An MPTCP connection's extra subflows (MP_JOIN) find their
 * connection by token, not by listener, so whichever worker accepted the first subflow gets
 * them all (net/mptcp/subflow.c, subflow_token_join_request). The parent forwards
 * SIGINT/SIGTERM and exits when every worker has; it restarts none.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createLogger } from '../core/logger.js';
import type { Config } from '../config/types.js';

/** Set in each worker's environment (to its index); a worker binds with reusePort and spawns none. */
export const WORKER_ENV = 'MPTCP_PROXY_WORKER';

export function runWorkers(n: number, argv: readonly string[], config: Config): Promise<number> {
  const log = createLogger({ level: config.log.level, format: config.log.format, fields: { pid: process.pid } });
  const script = process.argv[1]!;
  const children: ChildProcess[] = [];
  let worst = 0;
  return new Promise((resolve) => {
    let running = n;
    for (let i = 0; i < n; i++) {
      const child = spawn(process.execPath, [...process.execArgv, script, ...argv], {
        stdio: 'inherit',
        env: { ...process.env, [WORKER_ENV]: String(i) },
      });
      children.push(child);
      child.on('exit', (code, signal) => {
        if (code !== 0) worst = 1;
        log.info('worker exited', { worker: i, workerPid: child.pid, code, signal });
        if (--running === 0) resolve(worst);
      });
    }
    log.info('workers started', { workers: n, pids: children.map((c) => c.pid) });
    for (const sig of ['SIGINT', 'SIGTERM'] as const) {
      process.on(sig, () => {
        for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill(sig);
      });
    }
  });
}
