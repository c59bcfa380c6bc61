/**
 * Results: the JSON document, the markdown tables, and the issue's targets checked against the
 * figures of this run (each miss says by how much).
 */
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { MachineInfo } from './lib/machine.js';
import { fmt, fmtShare, fmtShares, fmtSummary, type Summary } from './lib/stats.js';
import { STEAL_NOTABLE } from './lib/proc.js';
import type { TransferRow } from './scenarios/transfer.js';

export interface TargetCheck {
  target: string;
  variant: string;
  measured: string;
  required: string;
  met: boolean;
  /** How far off, when missed (e.g. "0.31× of the required 0.8×: short by 61%"). */
  miss?: string;
  /** The most the host stole (0–1) in the runs behind the figures compared (ours and the
   *  reference's), when known. */
  steal?: number;
}

export interface BenchResults {
  date: string;
  quick: boolean;
  reps: number;
  engines: string[];
  machine: MachineInfo;
  peers: { available: string[]; missing: Record<string, string> };
  scenarios: {
    throughput?: { rows: TransferRow[]; skipped: Record<string, string> };
    aggregation?: { rows: TransferRow[]; skipped: Record<string, string>; wiredMbit: number; wlessMbit: number };
    connRate?: any; // eslint-disable-line @typescript-eslint/no-explicit-any
    idleMemory?: any; // eslint-disable-line @typescript-eslint/no-explicit-any
    conversionDelay?: any; // eslint-disable-line @typescript-eslint/no-explicit-any
  };
  errors: Record<string, string>;
  targets: TargetCheck[];
  commands: string[];
  durationSeconds: number;
  /** Share of the machine's time the host stole over the whole run (machineStealShare). */
  hostSteal?: number;
}

const med = (s: Summary | undefined): number | undefined => s?.median;

/** A miss as a percentage: one decimal under 1 % ("short by 0.5%", not "short by 0%"). */
function missPercent(share: number): string {
  return `${(share * 100).toFixed(share < 0.01 ? 1 : 0)}%`;
}

/** The factor a miss needs: three decimals under 1.01× ("1.005×", not "1.00×"). */
function missFactor(f: number): string {
  return `${f.toFixed(f < 1.01 ? 3 : 2)}×`;
}

function ratioCheck(target: string, variant: string, value: number | undefined, reference: number | undefined, factor: number, refName: string, higherIsBetter = true): TargetCheck | undefined {
  if (value === undefined || reference === undefined || reference === 0) return undefined;
  const ratio = value / reference;
  const met = higherIsBetter ? ratio >= factor : ratio <= factor;
  const check: TargetCheck = { target, variant, measured: `${ratio.toFixed(2)}× ${refName}`, required: `${higherIsBetter ? '≥' : '≤'} ${factor}× ${refName}`, met };
  if (!met) {
    check.miss = higherIsBetter
      ? `short by ${missPercent((factor - ratio) / factor)} (needs ${missFactor(factor / ratio)} more)`
      : `over by ${missPercent((ratio - factor) / factor)} (needs ${missFactor(ratio / factor)} less)`;
  }
  return check;
}

function absoluteCheck(target: string, variant: string, value: number | undefined, limit: number, unit: string, higherIsBetter: boolean): TargetCheck | undefined {
  if (value === undefined) return undefined;
  const met = higherIsBetter ? value >= limit : value <= limit;
  const check: TargetCheck = { target, variant, measured: `${fmt(value, 3)} ${unit}`, required: `${higherIsBetter ? '≥' : '≤'} ${limit} ${unit}`, met };
  if (!met) check.miss = `${higherIsBetter ? 'short' : 'over'} by ${fmt(Math.abs(value - limit), 3)} ${unit} (${(higherIsBetter ? limit / value : value / limit).toFixed(2)}×)`;
  return check;
}

/** `check` with the most the host stole in the runs behind it (NaN and undefined skipped). */
function stolen(check: TargetCheck | undefined, ...steals: (number | undefined)[]): TargetCheck | undefined {
  const known = steals.filter((x): x is number => x !== undefined && Number.isFinite(x));
  if (check !== undefined && known.length > 0) check.steal = Math.max(...known);
  return check;
}

/** Our proxy as deployed: the comparison rows — -nolog (access log off) and -js (every
 *  connection reported to JS, engine-only off) — are not held to the targets. */
function isOurs(variant: string): boolean {
  return variant.startsWith('ours-') && !variant.includes('-nolog') && !variant.includes('-js');
}

export function evaluateTargets(r: BenchResults): TargetCheck[] {
  const out: (TargetCheck | undefined)[] = [];
  const tp = r.scenarios.throughput?.rows ?? [];
  for (const parallel of [...new Set(tp.map((x) => x.parallel))]) {
    const rows = tp.filter((x) => x.parallel === parallel && x.mbit);
    const get = (v: string): TransferRow | undefined => rows.find((x) => x.variant === v);
    const direct = med(get('direct')?.mbit);
    const peers = ['haproxy', 'squid'].map((v) => med(get(v)?.mbit)).filter((x): x is number => x !== undefined);
    const bestPeer = peers.length ? Math.max(...peers) : undefined;
    const pipe = med(get('pipe')?.mbit);
    const haCpu = med(get('haproxy')?.cpuSecondsPerGB);
    const steal = (...names: string[]): number[] => names.map((n) => get(n)?.steal?.max ?? NaN);
    for (const row of rows.filter((x) => isOurs(x.variant))) {
      const v = `${row.variant} ×${parallel}`;
      const m = med(row.mbit);
      out.push(stolen(ratioCheck('throughput ≥ 0.8× direct MPTCP', v, m, direct, 0.8, 'direct'), ...steal(row.variant, 'direct')));
      out.push(stolen(ratioCheck('throughput ≥ 2× best of HAProxy/Squid', v, m, bestPeer, 2, 'best peer'), ...steal(row.variant, 'haproxy', 'squid')));
      out.push(stolen(ratioCheck('throughput never below pipe()', v, m, pipe, 1, 'pipe'), ...steal(row.variant, 'pipe')));
      out.push(stolen(ratioCheck('CPU per GB ≤ HAProxy', v, med(row.cpuSecondsPerGB), haCpu, 1, 'HAProxy CPU/GB', false), ...steal(row.variant, 'haproxy')));
    }
  }
  const ag = r.scenarios.aggregation?.rows ?? [];
  const agDirect = ag.find((x) => x.variant === 'direct');
  for (const row of ag.filter((x) => isOurs(x.variant))) {
    out.push(stolen(ratioCheck('aggregation ≥ direct MPTCP', row.variant, med(row.mbit), med(agDirect?.mbit), 1, 'direct'), row.steal?.max, agDirect?.steal?.max));
  }
  const cr = r.scenarios.connRate as { rows?: { load: string; variant: string; rate?: Summary; steal?: Summary }[] } | undefined;
  for (const load of ['http', 'http-one', 'echo']) {
    const rows = cr?.rows?.filter((x) => x.load === load) ?? [];
    const haRow = rows.find((x) => x.variant === 'haproxy');
    for (const row of rows.filter((x) => isOurs(x.variant))) {
      out.push(stolen(ratioCheck(`connection rate (${load}) ≥ 1.0× HAProxy`, row.variant, med(row.rate), med(haRow?.rate), 1, 'HAProxy'), row.steal?.max, haRow?.steal?.max));
    }
  }
  const im = r.scenarios.idleMemory as { rows?: { variant: string; bytesPerConnection?: number }[] } | undefined;
  for (const row of im?.rows?.filter((x) => isOurs(x.variant)) ?? []) {
    out.push(absoluteCheck('≤ 16 KiB RSS per idle connection', row.variant, row.bytesPerConnection === undefined ? undefined : row.bytesPerConnection / 1024, 16, 'KiB', false));
  }
  const cd = r.scenarios.conversionDelay as { rows?: { variant: string; kind: string; p50Ms?: number; steal?: number }[] } | undefined;
  const cdRows = cd?.rows ?? [];
  for (const row of cdRows.filter((x) => isOurs(x.variant))) {
    if (row.kind === 'syn' || row.kind === 'request-to-syn') out.push(stolen(absoluteCheck('SYN conversion p50 ≤ 0.1 ms', `${row.variant} (${row.kind})`, row.p50Ms, 0.1, 'ms', false), row.steal));
    // On a live connection (keep-alive rows), where processing dominates; the per-connection rows
    // of an HTTP proxy also hold the upstream's handshake, and stay in the table as they are.
    if (row.kind.startsWith('small-') && row.kind.endsWith('(keep-alive)')) out.push(stolen(absoluteCheck('small-exchange data conversion p50 ≤ 0.1 ms', `${row.variant} (${row.kind})`, row.p50Ms, 0.1, 'ms', false), row.steal));
    if (row.kind === 'bulk-down') {
      const ha = cdRows.find((x) => x.variant === 'haproxy' && x.kind === 'bulk-down');
      out.push(stolen(ratioCheck('bulk data conversion p50 ≤ 0.25× HAProxy', row.variant, row.p50Ms, ha?.p50Ms, 0.25, 'HAProxy', false), row.steal, ha?.steal));
    }
  }
  return out.filter((x): x is TargetCheck => x !== undefined);
}

function ratioText(value: number | undefined, ref: number | undefined): string {
  if (value === undefined || ref === undefined || ref === 0) return '–';
  return `${(value / ref).toFixed(2)}`;
}

function transferTable(rows: TransferRow[], aggregation: boolean): string[] {
  const lines: string[] = [];
  const peerNames = ['direct', 'haproxy', 'squid', 'pipe', 'c-relay'];
  lines.push(
    aggregation
      ? '| variant | Mbit/s median (min–max) | share of path sum | ÷ direct | ÷ HAProxy | ÷ Squid | bytes checked |'
      : '| variant | parallel | Mbit/s median (min–max) | proxy CPU s/GB | machine CPU busy | host steal | ÷ direct | ÷ HAProxy | ÷ Squid | ÷ pipe | ÷ C relay | bytes checked |',
  );
  lines.push(aggregation ? '|---|---|---|---|---|---|---|' : '|---|---|---|---|---|---|---|---|---|---|---|---|');
  for (const row of rows) {
    const ref = (v: string): number | undefined => med(rows.find((x) => x.variant === v && x.parallel === row.parallel)?.mbit);
    const m = med(row.mbit);
    const ratios = (aggregation ? peerNames.slice(0, 3) : peerNames).map((p) => ratioText(m, ref(p)));
    const checked = row.error
      ? `ERROR: ${row.error.slice(0, 120)}`
      : row.runs[0]?.sha256Checked === false
        ? `${row.runs.length}×${row.runs[0]?.transfers ?? 0} length ok; sha256 ok on 1×${((row.hashCheck?.bytes ?? 0) / 2 ** 20).toFixed(0)} MiB`
        : `${row.runs.length}×${row.runs[0]?.transfers ?? 0} sha256 ok`;
    if (aggregation) {
      lines.push(`| ${row.variant} | ${fmtSummary(row.mbit, 1)} | ${fmtShare(row.shareOfPathSum?.median)} | ${ratios.join(' | ')} | ${checked} |`);
    } else {
      lines.push(`| ${row.variant} | ${row.parallel} | ${fmtSummary(row.mbit, 0)} | ${fmtSummary(row.cpuSecondsPerGB, 2)} | ${fmtShare(row.machineBusy?.median)} | ${fmtShares(row.steal)} | ${ratios.join(' | ')} | ${checked} |`);
    }
  }
  return lines;
}

export function renderMarkdown(r: BenchResults): string {
  const m = r.machine;
  const L: string[] = [];
  L.push(`# mptcp-proxy benchmark — ${r.date.slice(0, 10)}${r.quick ? ' (quick)' : ''}`, '');
  L.push(`Run ${r.date}, ${r.reps} repetition(s) per figure (median and min–max; throughput and connection rate take them round the variants, side by side, each round starting one variant further on), ${r.durationSeconds} s in all; our relay engine(s): ${r.engines.join(', ')}.`, '');
  L.push('## Machine', '');
  L.push(`- kernel: ${m.kernel}; congestion control: ${m.congestionControl}`);
  L.push(`- CPU: ${m.cpuModel}, ${m.cores} cores (shared by client, proxy and server namespaces); memory ${m.memoryGiB} GiB`);
  L.push(`- Node ${m.node}`);
  for (const [k, v] of Object.entries(m.peers)) L.push(`- ${k}: ${v}`);
  if (r.hostSteal !== undefined && Number.isFinite(r.hostSteal)) L.push(`- host CPU steal over the whole run: ${(r.hostSteal * 100).toFixed(1)}% (/proc/stat: time this VM's cores were ready to run while the host ran something else; each table gives it per measurement, and a target checked on runs with ${(STEAL_NOTABLE * 100).toFixed(0)}% or more says so)`);
  if (Object.keys(r.peers.missing).length) L.push(`- peers NOT available: ${Object.entries(r.peers.missing).map(([k, v]) => `${k} (${v})`).join('; ')}`);
  L.push('');
  const tp = r.scenarios.throughput;
  if (tp) {
    L.push('## 1. Relay throughput, unshaped veth (CPU-bound)', '');
    L.push('MPTCP client in cli → proxy in prx → TCP server in srv; one download of the size below per run, or 8 parallel downloads of size/8. Mbit/s = bytes × 8 / the longest transfer (client-measured). CPU = utime+stime of the proxy\'s processes. Ratios are of medians. Timed runs write the body to /dev/null and check its length (hashing in the client pipeline capped every variant at ≈4 Gbit/s on this 2-core machine; curl to /dev/null reaches ≈12 Gbit/s direct); each row also has one untimed transfer of the same per-stream size checked by SHA-256. direct = MPTCP end to end from bench/peers/mptcp-file-server.py (1 MiB read()+send() on an MPTCP socket; nginx under mptcpize was the limit before). c-relay = bench/peers/c-relay.c, the least a user-space relay does (one epoll thread, 1 MiB read()/write(), no logging, accounting or buffer caps): what a relay can reach on this machine, where pipe() is the floor.', '');
    L.push(`Size per run: ${((tp.rows[0]?.bytesPerRun ?? 0) / 2 ** 20).toFixed(0)} MiB.`, '');
    L.push(...transferTable(tp.rows, false), '');
    for (const [k, v] of Object.entries(tp.skipped)) L.push(`- ${k}: ${v}`);
    L.push('');
  }
  const ag = r.scenarios.aggregation;
  if (ag) {
    L.push(`## 2. Aggregation over two shaped paths (wired ${ag.wiredMbit} + wless ${ag.wlessMbit} Mbit/s)`, '');
    L.push(`One download of ${((ag.rows[0]?.bytesPerRun ?? 0) / 2 ** 20).toFixed(0)} MiB per run.`, '');
    L.push(...transferTable(ag.rows, true), '');
    for (const [k, v] of Object.entries(ag.skipped)) L.push(`- ${k}: ${v}`);
    L.push('');
  }
  if (r.scenarios.connRate?.markdown) L.push(...(r.scenarios.connRate.markdown as string[]), '');
  if (r.scenarios.idleMemory?.markdown) L.push(...(r.scenarios.idleMemory.markdown as string[]), '');
  if (r.scenarios.conversionDelay?.markdown) L.push(...(r.scenarios.conversionDelay.markdown as string[]), '');
  if (Object.keys(r.errors).length) {
    L.push('## Scenarios that failed', '');
    for (const [k, v] of Object.entries(r.errors)) L.push(`- ${k}: ${v}`);
    L.push('');
  }
  L.push('## Targets (issue 9)', '');
  if (r.targets.length === 0) L.push('No target could be evaluated (scenarios missing).');
  else {
    L.push('| target | variant | measured | required | met | missed by | host steal |', '|---|---|---|---|---|---|---|');
    for (const t of r.targets) {
      const steal = `${fmtShare(t.steal)}${t.steal !== undefined && t.steal >= STEAL_NOTABLE ? ' (contended)' : ''}`;
      L.push(`| ${t.target} | ${t.variant} | ${t.measured} | ${t.required} | ${t.met ? 'yes' : '**no**'} | ${t.miss ?? ''} | ${steal} |`);
    }
  }
  L.push('', '## Commands run', '', '```');
  L.push(...r.commands);
  L.push('```', '');
  return `${L.join('\n')}\n`;
}

/** The first of results-<date>, results-<date>b, c... with no file in outDir yet: a second run on
 *  the same day must not overwrite the first's committed results. */
export function freeStamp(outDir: string, day: string): string {
  for (let i = 0; i < 26; i++) {
    const stamp = i === 0 ? day : day + String.fromCharCode(0x61 + i);
    if (!existsSync(join(outDir, `results-${stamp}.json`)) && !existsSync(join(outDir, `results-${stamp}.md`))) return stamp;
  }
  return `${day}-${Date.now()}`;
}

/** Write results-<date>.json/.md (a letter after the date when that day has results already;
 *  and latest.md); returns the paths. */
export function writeResults(r: BenchResults, outDir: string, writeLatest: boolean): string[] {
  mkdirSync(outDir, { recursive: true });
  const stamp = freeStamp(outDir, r.date.slice(0, 10) + (r.quick ? '-quick' : ''));
  const md = renderMarkdown(r);
  const files = [join(outDir, `results-${stamp}.json`), join(outDir, `results-${stamp}.md`)];
  writeFileSync(files[0] as string, `${JSON.stringify(r, null, 2)}\n`);
  writeFileSync(files[1] as string, md);
  if (writeLatest) {
    files.push(join(outDir, 'latest.md'));
    writeFileSync(files[2] as string, md);
  }
  process.stdout.write(`\n${md}`);
  return files;
}
