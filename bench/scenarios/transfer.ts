/**
 * Scenario 1 (relay throughput over unshaped veth, CPU-bound) and scenario 2 (aggregation over
 * two shaped paths): downloads from srv to an MPTCP client in cli, through each proxy in prx,
 * every byte checked by SHA-256.
 *
 * L4 variants (ours-forward, haproxy mode tcp, pipe, c-relay, direct) use the blob client (`--mptcp`,
 * our addon) and blob server (plain TCP; `--mptcp` for direct). HTTP variants (ours-http, squid)
 * use `mptcpize run curl -x` against nginx serving the same bytes from a file.
 */
import type { TestbedProcess } from '../../testbed/index.js';
import { runBlobClient, startBlobServer, BLOB_CLIENT_PATH } from '../../test/helpers/peer-programs.js';
import { cpuDelta, groupCpu, machineBusyShare, machineCpu, machineStealShare, stealNote } from '../lib/proc.js';
import { repeatRoundRobin, summarize, type Summary } from '../lib/stats.js';
import { blobFileName, ensureBlobFile, expectedSha256, BLOB_ROOT } from '../lib/blob-files.js';
import { oursLabel, type BenchContext } from '../lib/context.js';
import {
  commandLog, startCRelay, startHaproxy, startMptcpFileServer, startNginx, startOursConfig, startOursForward, startPipeRelay, startSquid, type Started,
} from '../variants.js';
import { hasProgram } from '../peers/install.js';

const MiB = 1024 * 1024;

/** One way of reaching the server: how to run one download of `bytes` split over `parallel`. */
interface TransferTarget {
  variant: string;
  /** blob: blob client/server; curl: `mptcpize run curl` from nginx, `-x` when `viaProxy`. */
  kind: 'blob' | 'curl';
  viaProxy?: boolean;
  /** Where the client connects (the proxy, or the server for direct). */
  host: string;
  port: number;
  /** The proxy's process (undefined for direct). */
  proxy?: Started;
}

export interface TransferRun {
  mbit: number;
  bytes: number;
  wallMs: number;
  proxyCpuSeconds?: number;
  /** Share of the machine's cores busy during the run (client, proxy, server and kernel
   *  together): near 1, the run is bounded by the machine, not by the variant alone. */
  machineBusy?: number;
  /** Share of the machine's time the host stole during the run (machineStealShare). */
  steal?: number;
  /** Every transfer's length matched (and its SHA-256, when `sha256Checked`). */
  bytesChecked: boolean;
  /** The bodies were hashed in this run (false: length only, see TransferRow.hashCheck). */
  sha256Checked: boolean;
  transfers: number;
}

export interface TransferRow {
  scenario: 'throughput' | 'aggregation';
  variant: string;
  parallel: number;
  bytesPerRun: number;
  mbit?: Summary;
  cpuSecondsPerGB?: Summary;
  machineBusy?: Summary;
  steal?: Summary;
  /** aggregation only: share of the sum of the path rates. */
  shareOfPathSum?: Summary;
  runs: TransferRun[];
  /** Throughput runs count bytes only (hashing in the client pipeline capped it at ~4 Gbit/s):
   * one extra, untimed transfer of the same per-stream size checks the SHA-256. */
  hashCheck?: { bytes: number; ok: boolean };
  error?: string;
}

interface Origins {
  blob: { port: number };
  blobMptcp: { port: number };
  nginx: { port: number } | undefined;
  /** The direct runs' MPTCP origin: bench/peers/mptcp-file-server.py (1 MiB send()s on an
   * MPTCP socket), or nginx under mptcpize when python3 is missing. */
  nginxMptcp: { port: number } | undefined;
  procs: TestbedProcess[];
}

async function startOrigins(ctx: BenchContext): Promise<Origins> {
  const { tb } = ctx;
  const blob = await startBlobServer(tb, 'srv', { address: tb.hosts.srv.lan });
  const blobMptcp = await startBlobServer(tb, 'srv', { address: tb.hosts.srv.lan, mptcp: true });
  commandLog.push(`[srv] node dist/test/helpers/peer-blob-server.js --host ${tb.hosts.srv.lan} --port 0   (and again with --mptcp)`);
  const procs = [blob.proc, blobMptcp.proc];
  let nginx: Origins['nginx'];
  let nginxMptcp: Origins['nginxMptcp'];
  if (ctx.peers.available.has('nginx')) {
    const n = await startNginx(tb, ctx.dir, 'origin', tb.hosts.srv.lan, 8080, BLOB_ROOT, false);
    nginx = { port: n.port };
    procs.push(n.proc);
    if (hasProgram('python3')) {
      const m = await startMptcpFileServer(tb, tb.hosts.srv.lan, 8081, BLOB_ROOT);
      nginxMptcp = { port: m.port };
      procs.push(m.proc);
    } else if (ctx.peers.available.has('mptcpize')) {
      const m = await startNginx(tb, ctx.dir, 'origin-mptcp', tb.hosts.srv.lan, 8081, BLOB_ROOT, true);
      nginxMptcp = { port: m.port };
      procs.push(m.proc);
    }
  }
  return { blob: { port: blob.port }, blobMptcp: { port: blobMptcp.port }, nginx, nginxMptcp, procs };
}

/** Start the proxies a scenario compares; a peer that fails to start is reported, not fatal. */
async function startTargets(ctx: BenchContext, origins: Origins, wantAll: readonly string[]): Promise<{ targets: TransferTarget[]; errors: Map<string, string> }> {
  const { tb } = ctx;
  const srv = tb.hosts.srv.lan;
  const prx = tb.hosts.prx.wired;
  const want = wantAll.filter((v) => !ctx.opts.variants || ctx.opts.variants.includes(v));
  const targets: TransferTarget[] = [];
  const errors = new Map<string, string>();
  let port = 9100;
  // The blob server makes its content in JS (≈1.6 Gbit/s here), which would cap every variant;
  // nginx sends a file with sendfile(). L4 variants forward to nginx when it is there.
  const useNginx = origins.nginx !== undefined && ctx.peers.available.has('curl') && ctx.peers.available.has('mptcpize');
  const l4To = useNginx ? `${srv}:${origins.nginx!.port}` : `${srv}:${origins.blob.port}`;
  const l4Kind: TransferTarget['kind'] = useNginx ? 'curl' : 'blob';
  const attempt = async (variant: string, needs: string[], fn: () => Promise<TransferTarget>): Promise<void> => {
    const missing = needs.filter((p) => !ctx.peers.available.has(p));
    if (missing.length > 0) {
      errors.set(variant, `skipped: ${missing.map((m) => `${m} (${ctx.peers.missing.get(m) ?? 'missing'})`).join(', ')}`);
      return;
    }
    try {
      targets.push(await fn());
    } catch (err) {
      errors.set(variant, `failed to start: ${(err as Error).message}`);
    }
  };
  for (const engine of ctx.opts.engines) {
    if (want.includes('ours-forward')) {
      const p = port++;
      await attempt(oursLabel('ours-forward', engine), [], async () => {
        const s = await startOursForward(tb, p, l4To, engine);
        return { variant: oursLabel('ours-forward', engine), kind: l4Kind, host: prx, port: p, proxy: s };
      });
    }
    if (want.includes('ours-http')) {
      const p = port++;
      await attempt(oursLabel('ours-http', engine), ['nginx', 'mptcpize', 'curl'], async () => {
        const s = await startOursConfig(tb, ctx.dir, `ours-http-${engine}`, p, ctx.allowNet, engine);
        return { variant: oursLabel('ours-http', engine), kind: 'curl', viaProxy: true, host: prx, port: p, proxy: s };
      });
    }
  }
  if (want.includes('haproxy')) {
    const p = port++;
    await attempt('haproxy', ['haproxy', 'mptcpize'], async () => {
      const s = await startHaproxy(tb, ctx.dir, [{ name: 'blob', port: p, mode: 'tcp', to: l4To }]);
      return { variant: 'haproxy', kind: l4Kind, host: prx, port: p, proxy: s };
    });
  }
  if (want.includes('squid')) {
    const p = port++;
    await attempt('squid', ['squid', 'mptcpize', 'nginx', 'curl'], async () => {
      const s = await startSquid(tb, ctx.dir, p, ctx.allowNet);
      return { variant: 'squid', kind: 'curl', viaProxy: true, host: prx, port: p, proxy: s };
    });
  }
  if (want.includes('pipe')) {
    const p = port++;
    await attempt('pipe', ['mptcpize'], async () => {
      const s = await startPipeRelay(tb, p, l4To);
      return { variant: 'pipe', kind: l4Kind, host: prx, port: p, proxy: s };
    });
  }
  if (want.includes('c-relay')) {
    const p = port++;
    await attempt('c-relay', ['cc'], async () => {
      const s = await startCRelay(tb, ctx.dir, p, l4To);
      return { variant: 'c-relay', kind: l4Kind, host: prx, port: p, proxy: s };
    });
  }
  if (want.includes('direct')) {
    targets.push(
      useNginx && origins.nginxMptcp
        ? { variant: 'direct', kind: 'curl', host: srv, port: origins.nginxMptcp.port }
        : { variant: 'direct', kind: 'blob', host: srv, port: origins.blobMptcp.port },
    );
  }
  return { targets, errors };
}

/** One repetition: `parallel` concurrent downloads of bytes/parallel each. */
async function runOnce(ctx: BenchContext, origins: Origins, t: TransferTarget, bytes: number, parallel: number, timeoutMs: number, hash = true): Promise<TransferRun> {
  const { tb } = ctx;
  const each = Math.floor(bytes / parallel);
  const cpuBefore = t.proxy ? await groupCpu(tb.hosts.prx.ns, t.proxy.proc.pid) : undefined;
  const machineBefore = machineCpu();
  const started = performance.now();
  let ok = true;
  let elapsed: number[] = [];
  if (t.kind === 'blob') {
    const results = await Promise.all(
      Array.from({ length: parallel }, () =>
        runBlobClient(tb, 'cli', { host: t.host, port: t.port, downloadBytes: each, extraArgs: ['--mptcp'], timeoutMs }),
      ),
    );
    for (const r of results) {
      if (r.event !== 'done' || !r.downloadIntact || r.downloadSha256 !== expectedSha256(each)) {
        ok = false;
        throw new Error(`${t.variant}: transfer failed or corrupt: ${JSON.stringify(r)}`);
      }
    }
    elapsed = results.map((r) => (r.event === 'done' ? r.elapsedMs : Infinity));
  } else {
    const cmd = curlCommand(ctx, origins, t, each, timeoutMs, hash);
    const results = await Promise.all(Array.from({ length: parallel }, () => tb.exec('cli', ['sh', '-c', cmd], { timeoutMs: timeoutMs + 5_000, allowFailure: true })));
    for (const r of results) {
      const [size, total] = r.stderr.trim().split(/\s+/).slice(-2).map(Number);
      const sha = hash ? r.stdout.trim().split(/\s+/)[0] : expectedSha256(each);
      if (size !== each || sha !== expectedSha256(each)) {
        ok = false;
        throw new Error(`${t.variant}: curl download failed or corrupt (size ${size}, sha ${sha}): ${r.stderr.slice(-400)}`);
      }
      elapsed.push((total as number) * 1000);
    }
  }
  const wallMs = performance.now() - started;
  const machineAfter = machineCpu();
  const cpuAfter = t.proxy ? await groupCpu(tb.hosts.prx.ns, t.proxy.proc.pid) : undefined;
  // Transfers start together; the longest one spans the run (client-measured, without the
  // clients' start-up time, which the bench's wall clock would include).
  const spanMs = Math.max(...elapsed);
  const total = each * parallel;
  return {
    mbit: (total * 8) / (spanMs / 1000) / 1e6,
    bytes: total,
    wallMs: Math.round(wallMs),
    proxyCpuSeconds: cpuBefore && cpuAfter ? cpuDelta(cpuBefore, cpuAfter) : undefined,
    machineBusy: machineBusyShare(machineBefore, machineAfter),
    steal: machineStealShare(machineBefore, machineAfter),
    bytesChecked: ok,
    sha256Checked: hash || t.kind === 'blob',
    transfers: parallel,
  };
}

async function measure(ctx: BenchContext, origins: Origins, targets: TransferTarget[], scenario: TransferRow['scenario'], bytes: number, parallels: number[], pathSumMbit?: number): Promise<TransferRow[]> {
  const rows: TransferRow[] = [];
  for (const parallel of parallels) {
    // Bounded: at least 60 s, or the time at 100 Mbit/s (shaped) / 200 Mbit/s (unshaped).
    const timeoutMs = Math.max(60_000, Math.ceil(((bytes * 8) / ((pathSumMbit ?? 200) * 0.5e6)) * 1000));
    // Unshaped, the client's `| openssl dgst` pipeline caps a transfer at ≈4 Gbit/s here (curl
    // alone to /dev/null: ≈12 Gbit/s), so timed throughput runs check the length only and one
    // untimed transfer per row of the same per-stream size checks the SHA-256.
    const hashTimed = (t: TransferTarget): boolean => scenario !== 'throughput' || t.kind === 'blob';
    const entries = targets.map((t) => ({ t, row: { scenario, variant: t.variant, parallel, bytesPerRun: bytes, runs: [] } as TransferRow }));
    const failed = (e: (typeof entries)[number], err: unknown): void => {
      e.row.error = (err as Error).message;
      ctx.log(`  ${scenario} ${e.t.variant} ×${parallel}: ERROR ${e.row.error}`);
    };
    for (const e of entries) {
      if (hashTimed(e.t)) continue;
      try {
        const each = Math.floor(bytes / parallel);
        const hc = await runOnce(ctx, origins, e.t, each, 1, timeoutMs, true);
        e.row.hashCheck = { bytes: each, ok: hc.bytesChecked };
        ctx.log(`  ${scenario} ${e.t.variant}: sha256 check of one ${each}-byte transfer ok`);
      } catch (err) {
        failed(e, err);
      }
    }
    const checked = entries.filter((e) => e.row.error === undefined);
    await repeatRoundRobin(ctx.opts.reps, checked, async (e, rep) => {
      const run = await runOnce(ctx, origins, e.t, bytes, parallel, timeoutMs, hashTimed(e.t));
      e.row.runs.push(run);
      ctx.log(`  ${scenario} ${e.t.variant} ×${parallel} rep ${rep + 1}: ${run.mbit.toFixed(0)} Mbit/s${run.proxyCpuSeconds !== undefined ? `, proxy CPU ${run.proxyCpuSeconds.toFixed(2)} s` : ''}, ${run.sha256Checked ? 'sha256' : 'length'} checked${stealNote(run.steal)}`);
    }, failed);
    for (const { t, row } of entries) {
      row.mbit = summarize(row.runs.map((r) => r.mbit));
      row.machineBusy = summarize(row.runs.map((r) => r.machineBusy ?? NaN));
      row.steal = summarize(row.runs.map((r) => r.steal ?? NaN));
      if (t.proxy) row.cpuSecondsPerGB = summarize(row.runs.map((r) => (r.proxyCpuSeconds ?? NaN) / (r.bytes / 1e9)));
      if (pathSumMbit) row.shareOfPathSum = summarize(row.runs.map((r) => r.mbit / pathSumMbit));
      rows.push(row);
    }
  }
  return rows;
}

/**
 * curl through an HTTP proxy (`-x`), or straight at the L4 proxy / the origin; the body's
 * SHA-256 by `openssl dgst` (coreutils sha256sum manages ≈1.3 Gbit/s here and would cap the run).
 */
function curlCommand(ctx: BenchContext, origins: Origins, t: TransferTarget, bytes: number, timeoutMs: number, hash = true): string {
  const name = bytes < 0 ? 'blob-N' : blobFileName(bytes);
  const url = t.viaProxy ? `http://${ctx.tb.hosts.srv.lan}:${origins.nginx?.port ?? 8080}/${name}` : `http://${t.host}:${t.port}/${name}`;
  const proxy = t.viaProxy ? ` -x http://${t.host}:${t.port}` : '';
  const sink = hash ? ` ${url} | openssl dgst -sha256 -r` : ` -o /dev/null ${url}`;
  return `mptcpize run curl -sS --fail --max-time ${Math.ceil(timeoutMs / 1000)}${proxy} -w '%{stderr}%{size_download} %{time_total}\\n'${sink}`;
}

function logClientCommands(ctx: BenchContext, origins: Origins, targets: TransferTarget[]): void {
  for (const t of targets) {
    commandLog.push(
      t.kind === 'blob'
        ? `[cli] node ${BLOB_CLIENT_PATH} --host ${t.host} --port ${t.port} --download-bytes N --mptcp   (${t.variant})`
        : `[cli] ${curlCommand(ctx, origins, t, -1, 60_000)}   (${t.variant}; throughput's timed runs: -o /dev/null, length checked)`,
    );
  }
}

async function stopTargets(targets: TransferTarget[], origins: Origins): Promise<void> {
  await Promise.all(targets.map((t) => t.proxy?.proc.stop(1_000)));
  await Promise.all(origins.procs.map((p) => p.stop(1_000)));
}

export const THROUGHPUT_VARIANTS = ['ours-forward', 'ours-http', 'haproxy', 'squid', 'pipe', 'c-relay', 'direct'];

export async function runThroughput(ctx: BenchContext): Promise<{ rows: TransferRow[]; skipped: Record<string, string> }> {
  const bytes = ctx.opts.quick ? 32 * MiB : 1024 * MiB;
  const parallels = [1, 8];
  for (const p of parallels) await ensureBlobFile(Math.floor(bytes / p));
  for (const p of parallels) expectedSha256(Math.floor(bytes / p));
  const origins = await startOrigins(ctx);
  const { targets, errors } = await startTargets(ctx, origins, THROUGHPUT_VARIANTS);
  logClientCommands(ctx, origins, targets);
  try {
    const rows = await measure(ctx, origins, targets, 'throughput', bytes, parallels);
    return { rows, skipped: Object.fromEntries(errors) };
  } finally {
    await stopTargets(targets, origins);
  }
}

export async function runAggregation(ctx: BenchContext): Promise<{ rows: TransferRow[]; skipped: Record<string, string>; wiredMbit: number; wlessMbit: number }> {
  const wiredMbit = 40;
  const wlessMbit = 20;
  const bytes = ctx.opts.quick ? 8 * MiB : 30 * MiB;
  await ensureBlobFile(bytes);
  expectedSha256(bytes);
  await ctx.tb.setRate('wired', wiredMbit);
  await ctx.tb.setRate('wless', wlessMbit);
  commandLog.push(`[cli,prx] tc qdisc replace dev wired|wless root handle 1: htb default 10 r2q 100; tc class replace ... rate 40mbit (wired) / 20mbit (wless) ceil = rate`);
  const origins = await startOrigins(ctx);
  const { targets, errors } = await startTargets(ctx, origins, ['ours-forward', 'ours-http', 'haproxy', 'squid', 'direct']);
  logClientCommands(ctx, origins, targets);
  try {
    const rows = await measure(ctx, origins, targets, 'aggregation', bytes, [1], wiredMbit + wlessMbit);
    return { rows, skipped: Object.fromEntries(errors), wiredMbit, wlessMbit };
  } finally {
    await stopTargets(targets, origins);
    await ctx.tb.setRate('wired', undefined);
    await ctx.tb.setRate('wless', undefined);
  }
}
