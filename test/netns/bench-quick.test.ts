/**
 * Smoke test of the benchmark (issue 9): `node dist/bench/run.js --quick` on its cheapest
 * scenario runs end to end on the testbed, checks every transferred byte, and writes a JSON file
 * of the expected shape. It proves bytes, not speed: no figure is compared with a target here.
 */
import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import * as os from 'node:os';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import { testbedSkipReason } from '../helpers/netns-skip.js';

const skip = testbedSkipReason();
const RUN = fileURLToPath(new URL('../../bench/run.js', import.meta.url));

interface Row { scenario: string; variant: string; parallel: number; bytesPerRun: number; runs: { bytesChecked: boolean; bytes: number; mbit: number }[]; error?: string; mbit?: { median: number } }

test('bench --quick: throughput through our forward and HTTP proxy, the C relay and direct, every transfer\'s bytes checked, JSON shaped as documented', { skip, timeout: 150_000 }, () => {
  const out = mkdtempSync(join(os.tmpdir(), 'bench-quick-test-'));
  try {
    // HAProxy is included when it is installed or installable; the bench installs its peers.
    const r = spawnSync(process.execPath, [RUN, '--quick', '--only', 'throughput', '--variants', 'ours-forward,ours-http,haproxy,c-relay,direct', '--out', out, '--no-write-latest'], {
      encoding: 'utf8',
      timeout: 140_000,
    });
    assert.equal(r.status, 0, `bench failed (${r.status}):\n${r.stdout.slice(-3000)}\n${r.stderr.slice(-2000)}`);
    const jsonFile = readdirSync(out).find((f) => f.endsWith('.json'));
    assert.ok(jsonFile, `a results JSON in ${out}: ${readdirSync(out).join(', ')}`);
    assert.ok(readdirSync(out).some((f) => f.endsWith('.md')), 'a markdown table beside it');
    const results = JSON.parse(readFileSync(join(out, jsonFile), 'utf8')) as {
      quick: boolean; machine: { kernel: string; cpuModel: string; cores: number; node: string; peers: Record<string, string> };
      scenarios: { throughput?: { rows: Row[]; skipped: Record<string, string> } }; targets: unknown[]; commands: string[]; errors: Record<string, string>;
    };
    assert.equal(results.quick, true);
    assert.deepEqual(results.errors, {});
    assert.ok(results.machine.kernel && results.machine.cpuModel && results.machine.cores > 0 && results.machine.node.startsWith('v'));
    assert.ok(results.commands.length > 0, 'the commands run are recorded');
    assert.ok(Array.isArray(results.targets));
    const rows = results.scenarios.throughput?.rows ?? [];
    const variants = new Set(rows.map((x) => x.variant));
    for (const v of ['ours-forward', 'ours-http', 'direct']) assert.ok(variants.has(v), `a row for ${v}: ${[...variants].join(', ')}`);
    const skipped = results.scenarios.throughput?.skipped ?? {};
    assert.ok(variants.has('haproxy') || 'haproxy' in skipped, 'haproxy measured or its absence explained');
    // The C relay needs a C compiler, which the bench installs (gcc) like its other peers.
    assert.ok(variants.has('c-relay') || 'c-relay' in skipped, 'the C relay measured or its absence explained');
    for (const row of rows) {
      assert.equal(row.error, undefined, `${row.variant} ×${row.parallel}: ${row.error}`);
      assert.ok(row.runs.length >= 1, `${row.variant} ×${row.parallel} ran`);
      for (const run of row.runs) {
        assert.equal(run.bytesChecked, true, `${row.variant} ×${row.parallel}: bytes checked`);
        assert.ok(run.bytes > 0 && run.bytes <= row.bytesPerRun);
        assert.ok(run.mbit > 0);
      }
      assert.ok(row.mbit && row.mbit.median > 0);
    }
    assert.deepEqual([...new Set(rows.map((x) => x.parallel))].sort(), [1, 8]);
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});
