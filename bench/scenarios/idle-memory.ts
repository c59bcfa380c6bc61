/**
 * Scenario 4: memory per idle open connection. N MPTCP connections through the proxy to an
 * echo server (each proven open end to end by a 1-byte echo), then (RSS after − RSS before) / N
 * of the proxy's processes. Our forward and our HTTP CONNECT, and HAProxy (mode tcp) beside
 * them. N is bounded by RLIMIT_NOFILE: the proxy needs two descriptors per connection.
 */
import { fileURLToPath, pathToFileURL } from 'node:url';
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { groupPids, rssOfPids } from '../lib/proc.js';
import { heapBuckets, heapDiffPer } from '../lib/heap-snapshot.js';
import { oursLabel, type BenchContext } from '../lib/context.js';
import { MEM_PROBE, startEcho, startHaproxy, startOursConfig, spawnLogged, type Started } from '../variants.js';

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
  /** Our proxy only, from the preloaded probe (bench/peers/mem-probe.ts): per connection. */
  breakdown?: MemoryBreakdown;
  error?: string;
}

/**
 * Where the RSS growth per connection goes (bytes per connection). From process.memoryUsage()
 * read inside the proxy at the baseline and with the N connections open (no GC forced, like the
 * RSS figure), and after a forced full GC with the N open vs after they all closed (live objects).
 */
export interface MemoryBreakdown {
  rss: number;
  /** RSS growth read right after a forced full GC with the N connections still open. */
  rssAfterGc: number;
  /** V8 heap committed (heapTotal) growth, no forced GC; committed pages need not all be resident. */
  v8HeapCommitted: number;
  /** Live JS objects after a full GC (heapUsed, N open − all closed). */
  v8HeapLive: number;
  /** Buffers/ArrayBuffers and other memory V8 accounts as external. */
  external: number;
  /** Descriptors the proxy still held after every client closed, over its baseline. */
  fdsLeftAfterClose: number;
  /** Top kinds of live JS objects per connection, from heap snapshots (N open − all closed). */
  heapTop?: { key: string; bytesPer: number; countPer: number }[];
  /** heapUsed after all closed − at baseline (a leak would show here), bytes in total. */
  heapUsedAfterCloseMinusBaseline: number;
  note?: string;
}

interface ProbeReport { before: NodeJS.MemoryUsage; afterGc?: NodeJS.MemoryUsage; cmd: string }

/** Signal the probe in `pid`, wait for its report number `k`. */
async function probe(out: string, pid: number, k: number, cmd: 'plain' | 'gc' | 'snap'): Promise<ProbeReport> {
  writeFileSync(`${out}.cmd`, cmd);
  process.kill(pid, 'SIGUSR2');
  const deadline = Date.now() + 120_000;
  const file = `${out}.${k}.json`;
  while (!existsSync(file)) {
    if (Date.now() > deadline) throw new Error(`memory probe gave no report ${k} in 120 s`);
    await new Promise((r) => setTimeout(r, 100));
  }
  return JSON.parse(readFileSync(file, 'utf8')) as ProbeReport;
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
    const cases: { variant: string; start: (env?: NodeJS.ProcessEnv) => Promise<Started>; port: number; mode: 'forward' | 'connect' | 'socks5' }[] = [];
    let port = 9300;
    for (const engine of ctx.opts.engines) {
      const ph = port++;
      const pf = port++;
      // One process per case, so each RSS figure is that front-end's alone.
      if (want('ours-forward')) cases.push({ variant: oursLabel('ours-forward', engine), port: pf, mode: 'forward', start: (env) => startOursConfig(tb, ctx.dir, `idle-fwd-${engine}`, ph, ctx.allowNet, engine, { forwardPort: pf, forwardTo: `${srv}:7100`, env }) });
      const ph2 = port++;
      if (want('ours-http')) cases.push({ variant: `${oursLabel('ours-http', engine)} CONNECT`, port: ph2, mode: 'connect', start: (env) => startOursConfig(tb, ctx.dir, `idle-http-${engine}`, ph2, ctx.allowNet, engine, { env }) });
      const ph3 = port++;
      const ps = port++;
      if (want('ours-socks5')) cases.push({ variant: oursLabel('ours-socks5', engine), port: ps, mode: 'socks5', start: (env) => startOursConfig(tb, ctx.dir, `idle-socks-${engine}`, ph3, ctx.allowNet, engine, { socksPort: ps, env }) });
    }
    const pha = port++;
    if (want('haproxy') && ctx.peers.available.has('haproxy') && ctx.peers.available.has('mptcpize')) {
      cases.push({ variant: 'haproxy', port: pha, mode: 'forward', start: () => startHaproxy(tb, ctx.dir, [{ name: 'idle', port: pha, mode: 'tcp', to: `${srv}:7100` }]) });
    }
    for (const c of cases) {
      const row: IdleRow = { variant: c.variant, requested: n, open: 0, failed: 0, rssBeforeBytes: 0, rssAfterBytes: 0 };
      let proxy: Started | undefined;
      const ours = c.variant.startsWith('ours-');
      const probeOut = join(ctx.dir, `mem-${c.variant.replace(/[^a-z0-9-]/gi, '_')}`);
      try {
        proxy = await c.start(ours ? { NODE_OPTIONS: `--import=${pathToFileURL(MEM_PROBE).href}`, MPTCP_BENCH_MEM_OUT: probeOut } : undefined);
        procs.push(proxy);
        await new Promise((r) => setTimeout(r, 500)); // let start-up allocation settle
        const pids = await groupPids(tb.hosts.prx.ns, proxy.proc.pid);
        const base = ours ? await probe(probeOut, proxy.proc.pid, 1, 'plain') : undefined;
        let fdsBase = 0;
        try {
          fdsBase = readdirSync(`/proc/${proxy.proc.pid}/fd`).length;
        } catch {
          // gone: the load below fails and says so
        }
        row.rssBeforeBytes = rssOfPids(pids);
        const load = spawnLogged(tb, 'cli', [process.execPath, IDLE_CONNS, '--host', prx, '--port', String(c.port), '--count', String(n), '--mode', c.mode, '--target', `${srv}:7100`, '--timeout-ms', '90000']);
        const r = await load.waitForJson<{ event: string; open: number; failed: number; firstError?: string }>((v) => v.event === 'ready', { timeoutMs: 100_000 });
        await new Promise((res) => setTimeout(res, 1_000));
        row.rssAfterBytes = rssOfPids(await groupPids(tb.hosts.prx.ns, proxy.proc.pid));
        row.open = r.open;
        row.failed = r.failed;
        row.firstError = r.firstError;
        if (r.open > 0) row.bytesPerConnection = (row.rssAfterBytes - row.rssBeforeBytes) / r.open;
        if (ours && base && r.open > 0) {
          const pid = proxy.proc.pid;
          const fdCount = (): number => {
            try {
              return readdirSync(`/proc/${pid}/fd`).length;
            } catch {
              return 0;
            }
          };
          const atN = await probe(probeOut, pid, 2, 'plain');
          const gcN = await probe(probeOut, pid, 3, 'gc');
          const rssAfterGc = rssOfPids([pid]);
          // Heap snapshots only where they stay small enough to parse (a 10 000-connection one
          // approaches V8's string limit): the per-connection make-up does not depend on N.
          const snap = r.open <= 2_500;
          if (snap) await probe(probeOut, pid, 4, 'snap');
          await load.stop(2_000);
          // All closed when the proxy's descriptors are back to the baseline's (±4).
          const t0 = Date.now();
          while (fdCount() > fdsBase + 4 && Date.now() - t0 < 20_000) await new Promise((res) => setTimeout(res, 250));
          await new Promise((res) => setTimeout(res, 500));
          const gc0 = await probe(probeOut, pid, snap ? 5 : 4, snap ? 'snap' : 'gc');
          const per = (x: number): number => x / r.open;
          const dRss = row.rssAfterBytes - row.rssBeforeBytes;
          row.breakdown = {
            rss: per(dRss),
            rssAfterGc: per(rssAfterGc - row.rssBeforeBytes),
            v8HeapCommitted: per(atN.before.heapTotal - base.before.heapTotal),
            v8HeapLive: per(gcN.afterGc!.heapUsed - gc0.afterGc!.heapUsed),
            external: per(atN.before.external - base.before.external),
            heapUsedAfterCloseMinusBaseline: gc0.afterGc!.heapUsed - base.before.heapUsed,
            fdsLeftAfterClose: fdCount() - fdsBase,
          };
          if (snap) {
            const fa = `${probeOut}.4.heapsnapshot`;
            const fb = `${probeOut}.5.heapsnapshot`;
            row.breakdown.heapTop = heapDiffPer(heapBuckets(fb), heapBuckets(fa), r.open);
            row.breakdown.note = `heap snapshots ${(statSync(fa).size / 2 ** 20).toFixed(0)} MiB with ${r.open} open`;
            rmSync(fa, { force: true });
            rmSync(fb, { force: true });
          } else row.breakdown.note = `no heap snapshot at ${r.open} connections (run --only idle-memory --quick for the per-object make-up at 1000)`;
          const b = row.breakdown;
          ctx.log(`  idle-memory ${c.variant}: per connection RSS ${(b.rss / 1024).toFixed(1)} KiB (${(b.rssAfterGc / 1024).toFixed(1)} after a full GC), V8 heap committed ${(b.v8HeapCommitted / 1024).toFixed(1)}, external ${(b.external / 1024).toFixed(1)}; live JS ${(b.v8HeapLive / 1024).toFixed(1)} KiB${b.heapTop ? `: ${b.heapTop.slice(0, 6).map((x) => `${x.key} ${x.bytesPer.toFixed(0)} B×${x.countPer.toFixed(1)}`).join(', ')}` : ''}`);
        }
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
  const md = ['## 4. Memory per idle open connection', '', `${note}; MPTCP clients in cli (2 subflows each), each connection proven open end to end with a 1-byte echo, then (RSS after − RSS before) / open. For our proxy, a probe preloaded with NODE_OPTIONS (bench/peers/mem-probe.ts; src/ unchanged) reads process.memoryUsage() inside it, : "RSS after GC" is the growth read right after a forced full GC with the connections still open (so garbage is not counted); "V8 heap committed" is heapTotal growth without a forced GC (committed pages need not all be resident, so it can exceed RSS); "live JS" is heapUsed after a full GC with the connections open minus after they all closed (their descriptors back to the baseline), with its make-up from two heap snapshots. RSS after GC − live JS is memory outside live JS objects: V8 heap slack (semi-spaces, fragmentation) plus malloc (libuv handles, the addon). Kernel socket memory is not in RSS.`, ''];
  md.push('| variant | open | failed | RSS before MiB | RSS after MiB | KiB per connection |', '|---|---|---|---|---|---|');
  for (const r of rows) {
    md.push(`| ${r.variant} | ${r.open} | ${r.failed}${r.firstError ? ` (${r.firstError})` : ''} | ${(r.rssBeforeBytes / 2 ** 20).toFixed(1)} | ${(r.rssAfterBytes / 2 ** 20).toFixed(1)} | ${r.bytesPerConnection === undefined ? '–' : (r.bytesPerConnection / 1024).toFixed(1)}${r.error ? ` ERROR ${r.error.slice(0, 100)}` : ''} |`);
  }
  const withB = rows.filter((r) => r.breakdown);
  if (withB.length) {
    const k = (x: number): string => (x / 1024).toFixed(1);
    md.push('', 'Per connection, KiB (our proxy, from inside it):', '', '| variant | RSS | RSS after GC | V8 heap committed | external | live JS objects after GC | heapUsed after close − baseline, MiB | fds left after close |', '|---|---|---|---|---|---|---|---|');
    for (const r of withB) {
      const b = r.breakdown!;
      md.push(`| ${r.variant} | ${k(b.rss)} | ${k(b.rssAfterGc)} | ${k(b.v8HeapCommitted)} | ${k(b.external)} | ${k(b.v8HeapLive)} | ${(b.heapUsedAfterCloseMinusBaseline / 2 ** 20).toFixed(1)} | ${b.fdsLeftAfterClose} |`);
    }
    for (const r of withB.filter((x) => x.breakdown!.heapTop)) {
      md.push('', `Live JS objects per connection, ${r.variant} (${r.breakdown!.note}): ${r.breakdown!.heapTop!.slice(0, 10).map((x) => `${x.key} ${x.bytesPer.toFixed(0)} B (${x.countPer.toFixed(1)})`).join('; ')}`);
    }
  }
  return { rows, note, markdown: md };
}
