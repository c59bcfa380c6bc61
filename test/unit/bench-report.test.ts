/**
 * The bench's result files: a second run on the same day gets the next free letter instead of
 * overwriting the first run's (committed) results; host steal (/proc/stat) read, summarised and
 * carried to the targets it may have disturbed; the repetitions' round order.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { evaluateTargets, freeStamp, renderMarkdown, type BenchResults } from '../../bench/report.js';
import { machineBusyShare, machineStealShare, parseMachineCpu } from '../../bench/lib/proc.js';
import { fmtShares, repeatRoundRobin, summarize } from '../../bench/lib/stats.js';

test('freeStamp: the date alone first, then b, c... past the files already there (json or md)', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'mpx-bench-report-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  assert.equal(freeStamp(dir, '2026-12-03'), '2026-12-03');
  writeFileSync(join(dir, 'results-2026-12-03.json'), '{}');
  assert.equal(freeStamp(dir, '2026-12-03'), '2026-12-03b');
  writeFileSync(join(dir, 'results-2026-12-03b.md'), '');
  assert.equal(freeStamp(dir, '2026-12-03'), '2026-12-03c');
  assert.equal(freeStamp(dir, '2026-12-04'), '2026-12-04', 'another day starts over');
});

test('host steal: read from /proc/stat lines, shared over the time between two readings', () => {
  // Two readings taken 5 s apart on this machine (2 cores, USER_HZ 100) while it was loaded.
  const before = parseMachineCpu('cpu  514320 0 412117 4999696 2556 0 133944 138719 0 0');
  const after = parseMachineCpu('cpu  514570 0 412320 5000051 2556 0 134004 139069 0 0');
  assert.equal(before.steal, 138719);
  assert.equal(after.total - before.total, 250 + 203 + 355 + 60 + 350);
  assert.equal(machineStealShare(before, after), 350 / 1218);
  assert.equal(machineBusyShare(before, after), (250 + 203 + 60) / 1218, 'busy counts neither idle nor stolen time');
  // A kernel without the steal column: no steal, nothing undefined.
  const old = parseMachineCpu('cpu  10 0 10 80 0 0 0');
  assert.equal(old.steal, 0);
  assert.equal(old.busy, 20);
  assert.equal(fmtShares(summarize([0.01, 0.35, 0.02])), '2% (max 35%)');
  assert.equal(fmtShares(summarize([0.004])), '0%');
  assert.equal(fmtShares(undefined), '–');
});

test('targets carry the most the host stole in the runs compared, and the report marks contended ones', () => {
  const rates = (variant: string, rate: number, steal: number[]) => ({ load: 'echo', variant, rate: summarize([rate]), steal: summarize(steal) });
  const results: BenchResults = {
    date: '2026-12-03T12:00:00.000Z', quick: true, reps: 1, engines: ['default'],
    machine: { kernel: 'Linux', cpuModel: 'cpu', cores: 2, memoryGiB: 1, node: 'v20', congestionControl: 'bbr', peers: {} },
    peers: { available: [], missing: {} },
    scenarios: {
      connRate: { rows: [rates('ours-forward', 1900, [0.01, 0.02]), rates('ours-forward-nolog', 2100, [0.0]), rates('ours-forward-js', 1500, [0.0]), rates('haproxy', 2000, [0.0, 0.12])] },
      conversionDelay: { rows: [{ variant: 'ours-forward', kind: 'syn', samples: 300, p50Ms: 0.09, steal: 0.004 }] },
    },
    errors: {}, targets: [], commands: [], durationSeconds: 1, hostSteal: 0.031,
  };
  results.targets = evaluateTargets(results);
  // The access-log-off and JS-accounted rows are for comparison: only the deployed configuration
  // is held to targets.
  assert.deepEqual(results.targets.filter((t) => t.target.startsWith('connection rate (echo)')).map((t) => t.variant), ['ours-forward']);
  const rate = results.targets.find((t) => t.target.startsWith('connection rate (echo)'));
  assert.equal(rate?.met, false);
  assert.equal(rate?.steal, 0.12, "HAProxy's run had the most steal of the two");
  const syn = results.targets.find((t) => t.target.startsWith('SYN conversion'));
  assert.equal(syn?.met, true);
  assert.equal(syn?.steal, 0.004);
  const md = renderMarkdown(results);
  assert.match(md, /host CPU steal over the whole run: 3\.1%/);
  assert.match(md, /\| connection rate \(echo\) ≥ 1\.0× HAProxy \| ours-forward \|.*\| \*\*no\*\* \|.*\| 12% \(contended\) \|/);
  assert.match(md, /\| SYN conversion p50 ≤ 0\.1 ms \|.*\| yes \|.*\| 0% \|/);
});

test('a narrow miss says by how much, not "short by 0%"', () => {
  const results: BenchResults = {
    date: '2026-12-03T12:00:00.000Z', quick: true, reps: 1, engines: ['default'],
    machine: { kernel: 'Linux', cpuModel: 'cpu', cores: 2, memoryGiB: 1, node: 'v20', congestionControl: 'bbr', peers: {} },
    peers: { available: [], missing: {} },
    scenarios: { connRate: { rows: [{ load: 'http', variant: 'ours-http', rate: summarize([995]) }, { load: 'http', variant: 'haproxy', rate: summarize([1000]) }] } },
    errors: {}, targets: [], commands: [], durationSeconds: 1,
  };
  const [check] = evaluateTargets(results);
  assert.equal(check?.met, false);
  assert.equal(check?.miss, 'short by 0.5% (needs 1.005× more)');
});

test('the throughput table has a ÷ C relay column; the C relay is a peer, not held to the targets', () => {
  const row = (variant: string, mbit: number) => ({
    scenario: 'throughput' as const, variant, parallel: 1, bytesPerRun: 1 << 30, mbit: summarize([mbit]),
    runs: [{ bytesChecked: true, sha256Checked: true, transfers: 1, bytes: 1 << 30, wallMs: 1000, mbit }],
  });
  const results: BenchResults = {
    date: '2026-12-03T12:00:00.000Z', quick: true, reps: 1, engines: ['default'],
    machine: { kernel: 'Linux', cpuModel: 'cpu', cores: 2, memoryGiB: 1, node: 'v20', congestionControl: 'bbr', peers: {} },
    peers: { available: [], missing: {} },
    scenarios: { throughput: { rows: [row('ours-forward', 6000), row('c-relay', 7500), row('direct', 8000)], skipped: {} } },
    errors: {}, targets: [], commands: [], durationSeconds: 1,
  };
  results.targets = evaluateTargets(results);
  assert.ok(results.targets.length > 0);
  assert.ok(results.targets.every((t) => t.variant.startsWith('ours-forward')), results.targets.map((t) => t.variant).join(', '));
  const md = renderMarkdown(results);
  assert.match(md, /\| ÷ pipe \| ÷ C relay \| bytes checked \|/);
  // ours ÷ c-relay = 6000 / 7500; the C relay ÷ direct = 7500 / 8000
  assert.match(md, /\| ours-forward \| 1 \|.*\| 0\.75 \| – \| – \| – \| 0\.80 \|/);
  assert.match(md, /\| c-relay \| 1 \|.*\| 0\.94 \| – \| – \| – \| 1\.00 \|/);
});

test('repetitions go round the entries, each round starting one further on; an entry that throws is dropped', async () => {
  const order: string[] = [];
  const failures: string[] = [];
  await repeatRoundRobin(
    3,
    ['a', 'b', 'c', 'd'],
    async (e, rep) => {
      order.push(`${e}${rep}`);
      if (e === 'c' && rep === 0) throw new Error('c failed');
    },
    (e, err) => failures.push(`${e}: ${(err as Error).message}`),
  );
  assert.deepEqual(order, ['a0', 'b0', 'c0', 'd0', 'b1', 'd1', 'a1', 'd2', 'a2', 'b2']);
  assert.deepEqual(failures, ['c: c failed']);
});
