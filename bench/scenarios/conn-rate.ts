/**
 * Scenario 3: connection rate. Short HTTP requests with `Connection: close` (1 KiB body from
 * nginx), and the same from keep-alive clients that make one request per connection and close
 * it (http-one, as a one-URL curl run), through our HTTP proxy, HAProxy (mode http), Squid, and
 * direct to the origin; short TCP-forward connections (send 100 bytes, read the echo, close)
 * through our forward, HAProxy (mode tcp), the pipe() relay, the minimal C relay
 * (bench/peers/c-relay.c), and direct to the echo server. The load generator is
 * bench/load/conn-load.ts in cli, MPTCP through our addon; each run is bounded in time and count.
 */
import { fileURLToPath } from 'node:url';
import { cpuDelta, groupCpu, machineCpu, machineStealShare, stealNote } from '../lib/proc.js';
import { fmtShares, fmtSummary, repeatRoundRobin, summarize, type Summary } from '../lib/stats.js';
import { ensureBlobFile, blobFileName, BLOB_ROOT } from '../lib/blob-files.js';
import { oursLabel, type BenchContext } from '../lib/context.js';
import {
  commandLog, startCRelay, startEcho, startHaproxy, startNginx, startOursConfig, startOursForward, startPipeRelay, startSquid, spawnLogged, type Started, waitListening,
} from '../variants.js';

export const CONN_LOAD = fileURLToPath(new URL('../load/conn-load.js', import.meta.url));
const BODY = 1024;

type Load = 'http' | 'http-one' | 'echo';

interface LoadTarget {
  load: Load;
  variant: string;
  args: string[];
  /** The proxy in between (none for direct): its CPU per connection is measured. */
  proxy?: Started;
}

export interface ConnRateRow {
  load: Load;
  variant: string;
  rate?: Summary;
  p50Ms?: Summary;
  /** The proxy's CPU (user + system, all its processes) per connection, µs. On a shared
   * 2-core machine the rate depends on what everything else costs too; this is the proxy's part. */
  proxyCpuUsPerConn?: Summary;
  /** Share of the machine's time the host stole during each run (machineStealShare). */
  steal?: Summary;
  ok: number;
  errors: number;
  firstError?: string;
  error?: string;
}

interface LoadResult { ok: number; errors: number; firstError?: string; rate: number; p50Ms?: number; elapsedMs: number }
interface MeasuredRun extends LoadResult { proxyCpuUsPerConn?: number; steal: number }

export async function runConnRate(ctx: BenchContext): Promise<{ rows: ConnRateRow[]; bounds: { durationMs: number; maxRequests: number; concurrency: number }; skipped: Record<string, string>; markdown: string[] }> {
  const { tb } = ctx;
  const srv = tb.hosts.srv.lan;
  const prx = tb.hosts.prx.wired;
  const durationMs = ctx.opts.quick ? 2_000 : 5_000;
  const maxRequests = ctx.opts.quick ? 1_000 : 5_000;
  const concurrency = 16;
  await ensureBlobFile(BODY);
  const procs: Started[] = [];
  const skipped: Record<string, string> = {};
  const targets: LoadTarget[] = [];
  const want = (v: string): boolean => !ctx.opts.variants || ctx.opts.variants.includes(v) || ctx.opts.variants.includes(v.replace(/\[.*\]$/, ''));
  const have = (...p: string[]): boolean => p.every((x) => ctx.peers.available.has(x));
  const tryStart = async (variant: string, needs: string[], fn: () => Promise<void>): Promise<void> => {
    if (!want(variant)) return;
    if (!have(...needs)) {
      skipped[variant] = `skipped: needs ${needs.filter((n) => !have(n)).join(', ')}`;
      return;
    }
    try {
      await fn();
    } catch (err) {
      skipped[variant] = `failed to start: ${(err as Error).message}`;
    }
  };
  const httpPath = `/${blobFileName(BODY)}`;
  try {
    const echoMptcp = await startEcho(tb, srv, 7001, true);
    procs.push(echoMptcp);
    // One TCP echo server per variant: thousands of short connections from prx to one server
    // port leave their 4-tuples in TIME_WAIT on prx, and the next variant's connect()s to that
    // port then crawl (seen as HAProxy ≈86/s after our variants, ≈1 500/s when run first).
    let nextEchoPort = 7010;
    const newEcho = async (): Promise<string> => {
      const p = nextEchoPort++;
      procs.push(await startEcho(tb, srv, p, false));
      return `${srv}:${p}`;
    };
    const nginxOk = have('nginx');
    if (nginxOk) procs.push(await startNginx(tb, ctx.dir, 'rate', srv, 8080, BLOB_ROOT, false));
    const httpArgs = (port: number, host: string, target: string): string[] => ['--mode', 'http', '--host', host, '--port', String(port), '--target', target, '--host-header', `${srv}:8080`, '--expect-body', String(BODY)];
    const echoArgs = (port: number, host: string): string[] => ['--mode', 'echo', '--host', host, '--port', String(port), '--echo-bytes', '100'];
    let port = 9200;
    for (const engine of ctx.opts.engines) {
      const p1 = port++;
      await tryStart(oursLabel('ours-http', engine), ['nginx'], async () => {
        const proxy = await startOursConfig(tb, ctx.dir, `rate-http-${engine}`, p1, ctx.allowNet, engine);
        procs.push(proxy);
        targets.push({ load: 'http', variant: oursLabel('ours-http', engine), args: httpArgs(p1, prx, `http://${srv}:8080${httpPath}`), proxy });
      });
      const p2 = port++;
      await tryStart(oursLabel('ours-forward', engine), [], async () => {
        const proxy = await startOursForward(tb, p2, await newEcho(), engine);
        procs.push(proxy);
        targets.push({ load: 'echo', variant: oursLabel('ours-forward', engine), args: echoArgs(p2, prx), proxy });
      });
      // The same forward with every connection reported to JS (MPTCP_PROXY_ENGINE_ONLY=off), as
      // when something watches connections one by one: what engine-only connections
      // (native/src/engine-only.c) save, measured side by side.
      const pj = port++;
      await tryStart(oursLabel('ours-forward-js', engine), [], async () => {
        const proxy = await startOursForward(tb, pj, await newEcho(), engine, { MPTCP_PROXY_ENGINE_ONLY: 'off' });
        procs.push(proxy);
        targets.push({ load: 'echo', variant: oursLabel('ours-forward-js', engine), args: echoArgs(pj, prx), proxy });
      });
      // The same forward without its access line per connection. HAProxy runs here with no
      // logging: this row is the like-for-like one, and the difference is what our access log
      // costs. Targets stay on ours-forward, with the log on (report.ts, isOurs).
      const p3 = port++;
      const p3http = port++;
      await tryStart(oursLabel('ours-forward-nolog', engine), [], async () => {
        const proxy = await startOursConfig(tb, ctx.dir, `rate-fwd-nolog-${engine}`, p3http, ctx.allowNet, engine, { forwardPort: p3, forwardTo: await newEcho(), accessLog: false });
        procs.push(proxy);
        await waitListening(tb, 'prx', p3, proxy.proc, 'ours-forward-nolog');
        targets.push({ load: 'echo', variant: oursLabel('ours-forward-nolog', engine), args: echoArgs(p3, prx), proxy });
      });
    }
    const ph = port++;
    const pt = port++;
    const phr = port++;
    await tryStart('haproxy', ['haproxy', 'mptcpize', 'nginx'], async () => {
      const proxy = await startHaproxy(tb, ctx.dir, [
        { name: 'web', port: ph, mode: 'http', to: `${srv}:8080` },
        { name: 'echo', port: pt, mode: 'tcp', to: await newEcho() },
        { name: 'webreuse', port: phr, mode: 'http', to: `${srv}:8080`, reuseAlways: true },
      ]);
      procs.push(proxy);
      targets.push({ load: 'http', variant: 'haproxy', args: httpArgs(ph, prx, httpPath), proxy });
      targets.push({ load: 'echo', variant: 'haproxy', args: echoArgs(pt, prx), proxy });
      // HAProxy reusing server connections across clients as our pool does (its default,
      // `safe`, dials for a client's first request): the like-for-like figure beside the default.
      if (want('haproxy-reuse')) targets.push({ load: 'http', variant: 'haproxy-reuse', args: httpArgs(phr, prx, httpPath), proxy });
    });
    const ps = port++;
    await tryStart('squid', ['squid', 'mptcpize', 'nginx'], async () => {
      const proxy = await startSquid(tb, ctx.dir, ps, ctx.allowNet);
      procs.push(proxy);
      targets.push({ load: 'http', variant: 'squid', args: httpArgs(ps, prx, `http://${srv}:8080${httpPath}`), proxy });
    });
    const pp = port++;
    await tryStart('pipe', ['mptcpize'], async () => {
      const proxy = await startPipeRelay(tb, pp, await newEcho());
      procs.push(proxy);
      targets.push({ load: 'echo', variant: 'pipe', args: echoArgs(pp, prx), proxy });
    });
    const pc = port++;
    await tryStart('c-relay', ['cc'], async () => {
      const proxy = await startCRelay(tb, ctx.dir, pc, await newEcho());
      procs.push(proxy);
      targets.push({ load: 'echo', variant: 'c-relay', args: echoArgs(pc, prx), proxy });
    });
    if (want('direct')) {
      if (nginxOk && have('mptcpize')) {
        procs.push(await startNginx(tb, ctx.dir, 'rate-mptcp', srv, 8081, BLOB_ROOT, true));
        targets.push({ load: 'http', variant: 'direct', args: httpArgs(8081, srv, httpPath) });
      }
      targets.push({ load: 'echo', variant: 'direct', args: echoArgs(7001, srv) });
    }

    const rows: ConnRateRow[] = [];
    const bounds = ['--concurrency', String(concurrency), '--duration-ms', String(durationMs), '--max-requests', String(maxRequests), '--mptcp'];
    const warmMs = Math.min(2_000, durationMs);
    const warmBounds = ['--concurrency', String(concurrency), '--duration-ms', String(warmMs), '--max-requests', String(Math.min(2_000, maxRequests)), '--mptcp'];
    // Every HTTP target also as http-one: the same GET without `Connection: close`, the client
    // closing once the response is in.
    for (const t of targets.filter((x) => x.load === 'http')) {
      targets.push({ ...t, load: 'http-one', args: t.args.map((a) => (a === 'http' ? 'http-one' : a)) });
    }
    for (const load of ['http', 'http-one', 'echo'] as const) {
      const entries = targets.filter((x) => x.load === load).map((t) => ({ t, row: { load, variant: t.variant, ok: 0, errors: 0 } as ConnRateRow, runs: [] as MeasuredRun[] }));
      // One unmeasured warm-up run per variant, the same for all: the figures are of a proxy in
      // steady state (a Node proxy compiles its hot path during the first few thousand
      // exchanges; a C proxy's first connections warm its caches and pools).
      for (const e of entries) {
        try {
          const warm = spawnLogged(tb, 'cli', [process.execPath, CONN_LOAD, ...e.t.args, ...warmBounds]);
          commandLog.pop();
          await warm.waitForJson<{ event: string }>((v) => v.event === 'done', { timeoutMs: warmMs + 30_000 });
          await warm.waitForExit(5_000);
        } catch (err) {
          e.row.error = (err as Error).message;
        }
      }
      const warmed = entries.filter((e) => e.row.error === undefined);
      await repeatRoundRobin(ctx.opts.reps, warmed, async (e, rep) => {
        const cpuOf = async (): Promise<Map<number, number> | undefined> => (e.t.proxy ? groupCpu(tb.hosts.prx.ns, e.t.proxy.proc.pid) : undefined);
        const cpuBefore = await cpuOf();
        const machineBefore = machineCpu();
        const proc = spawnLogged(tb, 'cli', [process.execPath, CONN_LOAD, ...e.t.args, ...bounds]);
        if (rep > 0) commandLog.pop();
        const r = await proc.waitForJson<LoadResult & { event: string }>((v) => v.event === 'done', { timeoutMs: durationMs + 30_000 });
        // Read the proxy's CPU as the load ends (before the client's exit), so its closing work is
        // in and nothing after is.
        const cpuAfter = await cpuOf();
        const steal = machineStealShare(machineBefore, machineCpu());
        await proc.waitForExit(5_000);
        const proxyCpuUsPerConn = cpuBefore && cpuAfter && r.ok > 0 ? (cpuDelta(cpuBefore, cpuAfter) / r.ok) * 1e6 : undefined;
        e.runs.push({ ...r, proxyCpuUsPerConn, steal });
        e.row.ok += r.ok;
        e.row.errors += r.errors;
        e.row.firstError ??= r.firstError;
        ctx.log(`  conn-rate ${load} ${e.t.variant} rep ${rep + 1}: ${r.rate.toFixed(0)}/s${proxyCpuUsPerConn !== undefined ? `, proxy CPU ${proxyCpuUsPerConn.toFixed(0)} µs/conn` : ''} (${r.ok} ok, ${r.errors} errors${r.firstError ? `: ${r.firstError}` : ''})${stealNote(steal)}`);
      }, (e, err) => {
        e.row.error = (err as Error).message;
      });
      for (const e of entries) {
        e.row.rate = summarize(e.runs.map((r) => r.rate));
        e.row.p50Ms = summarize(e.runs.map((r) => r.p50Ms ?? NaN));
        if (e.t.proxy) e.row.proxyCpuUsPerConn = summarize(e.runs.map((r) => r.proxyCpuUsPerConn ?? NaN));
        e.row.steal = summarize(e.runs.map((r) => r.steal));
        rows.push(e.row);
      }
    }
    const md: string[] = ['## 3. Connection rate', ''];
    md.push(`Each run: ${concurrency} concurrent MPTCP clients (our addon), a new connection per exchange, bounded to ${durationMs / 1000} s or ${maxRequests} exchanges, after one unmeasured warm-up run per variant (${warmMs / 1000} s or ${Math.min(2_000, maxRequests)} exchanges); repetitions go round the variants, so each round measures them side by side, and each round starts one variant further on (no variant always runs first). http = GET of a ${BODY}-byte file from nginx with \`Connection: close\` (200 and body length checked); http-one = the same GET without it, as a keep-alive client making one request (a one-URL curl run): the client reads the response by its Content-Length and closes. Our HTTP proxy keeps idle upstream connections for the next client (its default, upstreamIdleTimeoutMs 30 s), HAProxy by default (\`http-reuse safe\`) dials for each client's first request: haproxy-reuse is HAProxy with \`http-reuse always\`, reusing as ours does (÷ HAProxy stays against the default). echo = 100 bytes sent and the same 100 bytes read back, then close. Our proxy runs as deployed, with an access line per connection (log.access, JSON, to a file); HAProxy here logs nothing (Squid writes its access.log): ours-forward-nolog is our forward with log.access off, the like-for-like row (targets stay on the rows with the log on). Our forward's connections are the engine's alone (native/src/engine-only.c: the engine writes their access lines, JS writes them in batches); ours-forward-js is the same forward with every connection reported to JS (MPTCP_PROXY_ENGINE_ONLY=off), as when something in the process watches connections one by one. c-relay = bench/peers/c-relay.c, the least a user-space relay does per connection (accept4, socket, connect, one epoll thread; no logging or accounting). Host steal = the share of the machine's time the host ran someone else during the runs (/proc/stat), median (max): a run with steal is slower for reasons that are not the variant's.`, '');
    md.push('| load | variant | connections/s median (min–max) | ÷ HAProxy | ÷ direct | latency p50 ms | proxy CPU µs/conn | CPU ÷ HAProxy | host steal | ok | errors |', '|---|---|---|---|---|---|---|---|---|---|---|');
    for (const row of rows) {
      const ref = (v: string): number | undefined => rows.find((x) => x.load === row.load && x.variant === v)?.rate?.median;
      const ratio = (r: number | undefined): string => (r && row.rate ? (row.rate.median / r).toFixed(2) : '–');
      const haproxyCpu = rows.find((x) => x.load === row.load && x.variant === 'haproxy')?.proxyCpuUsPerConn?.median;
      const cpuRatio = haproxyCpu && row.proxyCpuUsPerConn ? (row.proxyCpuUsPerConn.median / haproxyCpu).toFixed(2) : '–';
      md.push(`| ${row.load} | ${row.variant} | ${fmtSummary(row.rate, 0)} | ${ratio(ref('haproxy'))} | ${ratio(ref('direct'))} | ${fmtSummary(row.p50Ms, 2)} | ${row.proxyCpuUsPerConn ? fmtSummary(row.proxyCpuUsPerConn, 0) : '–'} | ${cpuRatio} | ${fmtShares(row.steal)} | ${row.ok} | ${row.errors}${row.firstError ? ` (${row.firstError})` : ''}${row.error ? ` ERROR ${row.error.slice(0, 100)}` : ''} |`);
    }
    for (const [k, v] of Object.entries(skipped)) md.push(`- ${k}: ${v}`);
    return { rows, bounds: { durationMs, maxRequests, concurrency }, skipped, markdown: md };
  } finally {
    await Promise.all(procs.map((p) => p.proc.stop(1_000)));
  }
}
