/**
 * Scenario 4: memory per idle open connection. N MPTCP connections through the proxy to an
 * echo server (each proven open end to end by a 1-byte echo), then (RSS after − RSS before) / N
 * of the proxy's processes. Our forward and our HTTP CONNECT, and HAProxy (mode tcp) beside
 * them. N is bounded by RLIMIT_NOFILE: the proxy needs two descriptors per connection.
 */
import { fileURLToPath } from 'node:url';
import { execFileSync } from 'node:child_process';
import { groupPids, rssOfPids } from '../lib/proc.js';
import { oursLabel, type BenchContext } from '../lib/context.js';
import { startEcho, startHaproxy, startOursConfig, spawnLogged, type Started } from '../variants.js';

export const IDLE_CONNS = fileURLToPath(new URL('../load/idle-conns.js', import.meta.url));

export interface IdleRow {
  variant: string;
  requested: number;
  open: number;
  failed: number;
  firstError?: string;
  rssBeforeBytes: number;
  rssAfterBytes: number;
  bytesPerConnection?: number;
  error?: string;
}

function hardNofile(): number {
  try {
    const out = execFileSync('sh', ['-c', 'ulimit -Hn'], { encoding: 'utf8' }).trim();
    return out === 'unlimited' ? 1_048_576 : Number(out);
  } catch {
    return 1024;
  }
}

export async function runIdleMemory(ctx: BenchContext): Promise<{ rows: IdleRow[]; note: string; markdown: string[] }> {
  const { tb } = ctx;
  const srv = tb.hosts.srv.lan;
  const prx = tb.hosts.prx.wired;
  const wanted = ctx.opts.quick ? 1_000 : 10_000;
  // Two fds per relayed connection in the proxy, plus listeners, logs, libuv: keep 200 spare.
  const limit = hardNofile();
  const n = Math.min(wanted, Math.floor((limit - 200) / 2));
  const note = n < wanted ? `${n} connections instead of ${wanted}: RLIMIT_NOFILE hard limit here is ${limit} and cannot be raised (the proxy needs 2 fds per connection)` : `${n} connections`;
  ctx.log(`  idle-memory: ${note}`);
  const want = (v: string): boolean => !ctx.opts.variants || ctx.opts.variants.includes(v);
  const rows: IdleRow[] = [];
  const echo = await startEcho(tb, srv, 7100, false);
  const procs: Started[] = [echo];
  try {
    const cases: { variant: string; start: () => Promise<Started>; port: number; mode: 'forward' | 'connect' }[] = [];
    let port = 9300;
    for (const engine of ctx.opts.engines) {
      const ph = port++;
      const pf = port++;
      // One process per case, so each RSS figure is that front-end's alone.
      if (want('ours-forward')) cases.push({ variant: oursLabel('ours-forward', engine), port: pf, mode: 'forward', start: () => startOursConfig(tb, ctx.dir, `idle-fwd-${engine}`, ph, ctx.allowNet, engine, { forwardPort: pf, forwardTo: `${srv}:7100` }) });
      const ph2 = port++;
      if (want('ours-http')) cases.push({ variant: `${oursLabel('ours-http', engine)} CONNECT`, port: ph2, mode: 'connect', start: () => startOursConfig(tb, ctx.dir, `idle-http-${engine}`, ph2, ctx.allowNet, engine) });
    }
    const pha = port++;
    if (want('haproxy') && ctx.peers.available.has('haproxy') && ctx.peers.available.has('mptcpize')) {
      cases.push({ variant: 'haproxy', port: pha, mode: 'forward', start: () => startHaproxy(tb, ctx.dir, [{ name: 'idle', port: pha, mode: 'tcp', to: `${srv}:7100` }]) });
    }
    for (const c of cases) {
      const row: IdleRow = { variant: c.variant, requested: n, open: 0, failed: 0, rssBeforeBytes: 0, rssAfterBytes: 0 };
      let proxy: Started | undefined;
      try {
        proxy = await c.start();
        procs.push(proxy);
        await new Promise((r) => setTimeout(r, 500)); // let start-up allocation settle
        const pids = await groupPids(tb.hosts.prx.ns, proxy.proc.pid);
        row.rssBeforeBytes = rssOfPids(pids);
        const load = spawnLogged(tb, 'cli', [process.execPath, IDLE_CONNS, '--host', prx, '--port', String(c.port), '--count', String(n), '--mode', c.mode, '--target', `${srv}:7100`, '--timeout-ms', '90000']);
        const r = await load.waitForJson<{ event: string; open: number; failed: number; firstError?: string }>((v) => v.event === 'ready', { timeoutMs: 100_000 });
        await new Promise((res) => setTimeout(res, 1_000));
        row.rssAfterBytes = rssOfPids(await groupPids(tb.hosts.prx.ns, proxy.proc.pid));
        row.open = r.open;
        row.failed = r.failed;
        row.firstError = r.firstError;
        if (r.open > 0) row.bytesPerConnection = (row.rssAfterBytes - row.rssBeforeBytes) / r.open;
        await load.stop(2_000);
        ctx.log(`  idle-memory ${c.variant}: ${r.open} open (${r.failed} failed${r.firstError ? `: ${r.firstError}` : ''}), RSS ${(row.rssBeforeBytes / 2 ** 20).toFixed(1)} → ${(row.rssAfterBytes / 2 ** 20).toFixed(1)} MiB, ${((row.bytesPerConnection ?? NaN) / 1024).toFixed(1)} KiB/conn`);
      } catch (err) {
        row.error = (err as Error).message;
        ctx.log(`  idle-memory ${c.variant}: ERROR ${row.error}`);
      } finally {
        await proxy?.proc.stop(1_000);
      }
      rows.push(row);
    }
  } finally {
    await Promise.all(procs.map((p) => p.proc.stop(1_000)));
  }
  const md = ['## 4. Memory per idle open connection', '', `${note}; MPTCP clients in cli (2 subflows each), each connection proven open end to end with a 1-byte echo, then (RSS after − RSS before) / open. RSS only: the proxy exposes no heap figure to an outside process.`, ''];
  md.push('| variant | open | failed | RSS before MiB | RSS after MiB | KiB per connection |', '|---|---|---|---|---|---|');
  for (const r of rows) {
    md.push(`| ${r.variant} | ${r.open} | ${r.failed}${r.firstError ? ` (${r.firstError})` : ''} | ${(r.rssBeforeBytes / 2 ** 20).toFixed(1)} | ${(r.rssAfterBytes / 2 ** 20).toFixed(1)} | ${r.bytesPerConnection === undefined ? '–' : (r.bytesPerConnection / 1024).toFixed(1)}${r.error ? ` ERROR ${r.error.slice(0, 100)}` : ''} |`);
  }
  return { rows, note, markdown: md };
}
