#!/usr/bin/env node
/**
 * `npm run bench`: the side-by-side benchmark of issue 9, part 1. Builds a testbed (cli, prx,
 * srv namespaces), runs each scenario against our proxy and its peers, checks every transferred
 * byte, and writes docs/bench/results-<date>.{md,json} and docs/bench/latest.md.
 *
 *   node dist/bench/run.js [--quick] [--reps N] [--only throughput,aggregation,...]
 *                          [--engines default|native,js] [--out DIR] [--no-write-latest]
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import * as os from 'node:os';
import { parseArgs } from 'node:util';
import { createTestbed, testbedSkipReason } from '../testbed/index.js';
import { ensurePeers } from './peers/install.js';
import { describeMachine } from './lib/machine.js';
import { machineCpu, machineStealShare } from './lib/proc.js';
import type { BenchContext, BenchOptions } from './lib/context.js';
import { commandLog } from './variants.js';
import { runAggregation, runThroughput } from './scenarios/transfer.js';
import { runConnRate } from './scenarios/conn-rate.js';
import { runIdleMemory } from './scenarios/idle-memory.js';
import { runConversionDelay } from './scenarios/conversion-delay.js';
import { evaluateTargets, writeResults, type BenchResults } from './report.js';

/** A mistake on the command line: reported as one line, exit 2. */
class BenchUsageError extends Error {}

export const SCENARIOS = ['throughput', 'aggregation', 'conn-rate', 'idle-memory', 'conversion-delay'] as const;
export type ScenarioName = (typeof SCENARIOS)[number];

function parseOptions(argv: string[]): BenchOptions & { out: string; writeLatest: boolean } {
  const { values } = parseArgs({
    args: argv,
    options: {
      quick: { type: 'boolean', default: false },
      reps: { type: 'string' },
      only: { type: 'string' },
      variants: { type: 'string' },
      engines: { type: 'string', default: 'default' },
      out: { type: 'string', default: 'docs/bench' },
      'no-write-latest': { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(`usage: node dist/bench/run.js [--quick] [--reps N] [--only ${SCENARIOS.join(',')}] [--variants ours-forward,haproxy,...] [--engines default|native,js] [--out DIR]\n`);
    process.exit(0);
  }
  const only = values.only?.split(',').map((s) => s.trim()).filter(Boolean);
  for (const s of only ?? []) {
    if (!(SCENARIOS as readonly string[]).includes(s)) throw new BenchUsageError(`unknown scenario "${s}" (one of ${SCENARIOS.join(', ')})`);
  }
  const quick = values.quick ?? false;
  const reps = values.reps === undefined ? (quick ? 1 : 3) : Number(values.reps);
  if (!Number.isInteger(reps) || reps < 1 || reps > 20) throw new BenchUsageError('--reps must be 1–20');
  return {
    quick,
    reps,
    only,
    variants: values.variants?.split(',').map((s) => s.trim()).filter(Boolean),
    engines: (values.engines ?? 'default').split(',').map((s) => s.trim()).filter(Boolean),
    out: values.out ?? 'docs/bench',
    writeLatest: !values['no-write-latest'],
  };
}

async function main(): Promise<number> {
  const opts = parseOptions(process.argv.slice(2));
  const log = (line: string): void => {
    process.stdout.write(`${line}\n`);
  };
  const skip = testbedSkipReason();
  if (skip) {
    log(`bench: cannot run: ${skip}`);
    return 2;
  }
  const startedAt = new Date();
  const machineAtStart = machineCpu();
  const wanted = (s: ScenarioName): boolean => !opts.only || opts.only.includes(s);
  const programs = ['mptcpize', 'curl', 'nginx', 'haproxy', 'squid', 'cc', ...(wanted('conversion-delay') ? ['tcpdump'] : [])];
  const peers = ensurePeers(programs, log);
  const machine = describeMachine();
  log(`bench: ${opts.quick ? 'quick' : 'full'} run, ${opts.reps} repetition(s), engines ${opts.engines.join(',')}; ${machine.kernel}, ${machine.cpuModel} × ${machine.cores}, Node ${machine.node}`);
  const dir = mkdtempSync(join(os.tmpdir(), 'mptcp-bench-'));
  const tb = await createTestbed({});
  // Short-connection loads open tens of thousands of connections: widen the ephemeral range (kept
  // above the bench's listener ports 7000–9500, or outgoing connections squat them) and
  // let TIME_WAIT ports be reused for new outgoing connections, and cap TIME_WAIT sockets: after
  // ≈25 000 short connections the ephemeral ports of cli and prx were so full of them that every
  // later variant's connect() crawled (HAProxy's echo rate fell from ≈1 300/s when run first to
  // ≈300/s after ours; ours too when run later). All three are per-namespace sysctls.
  const sysctls = ['net.ipv4.ip_local_port_range=20000 65000', 'net.ipv4.tcp_tw_reuse=1', 'net.ipv4.tcp_max_tw_buckets=4096'];
  for (const h of ['cli', 'prx', 'srv'] as const) {
    await tb.exec(h, ['sysctl', '-qw', ...(h === 'srv' ? sysctls.slice(2) : sysctls)]);
  }
  commandLog.push(`testbed: createTestbed({}) → namespaces ${tb.namespaces.join(' ')} (see docs/bench/README or testbed/testbed.ts); sysctl ${sysctls.join(' ')} in cli and prx, the last in srv`);
  const ctx: BenchContext = { tb, dir, opts, peers, allowNet: '10.0.0.0/8', log };
  const results: BenchResults = {
    date: startedAt.toISOString(),
    quick: opts.quick,
    reps: opts.reps,
    engines: opts.engines,
    machine,
    peers: { available: [...peers.available], missing: Object.fromEntries(peers.missing) },
    scenarios: {},
    errors: {},
    targets: [],
    commands: commandLog,
    durationSeconds: 0,
  };
  const runScenario = async (name: ScenarioName, fn: () => Promise<void>): Promise<void> => {
    if (!wanted(name)) return;
    log(`== ${name}`);
    const t0 = performance.now();
    try {
      await fn();
    } catch (err) {
      results.errors[name] = (err as Error).message;
      log(`== ${name}: FAILED: ${(err as Error).message}`);
    }
    log(`== ${name}: ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  };
  try {
    await runScenario('throughput', async () => { results.scenarios.throughput = await runThroughput(ctx); });
    await runScenario('aggregation', async () => { results.scenarios.aggregation = await runAggregation(ctx); });
    await runScenario('conn-rate', async () => { results.scenarios.connRate = await runConnRate(ctx); });
    await runScenario('idle-memory', async () => { results.scenarios.idleMemory = await runIdleMemory(ctx); });
    await runScenario('conversion-delay', async () => { results.scenarios.conversionDelay = await runConversionDelay(ctx); });
  } finally {
    await tb.close();
    rmSync(dir, { recursive: true, force: true });
  }
  results.durationSeconds = Math.round((Date.now() - startedAt.getTime()) / 1000);
  results.hostSteal = machineStealShare(machineAtStart, machineCpu());
  results.targets = evaluateTargets(results);
  const files = writeResults(results, opts.out, opts.writeLatest);
  log(`bench: wrote ${files.join(', ')}`);
  return Object.keys(results.errors).length > 0 ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    // A usage mistake is one line and exit 2; anything else keeps its stack (a bench bug to report).
    const usage = err instanceof BenchUsageError || (err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS');
    process.stderr.write(`bench: ${usage ? (err as Error).message : err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
    process.exit(usage ? 2 : 1);
  },
);
