/**
 * The bench's result files: a second run on the same day gets the next free letter instead of
 * overwriting the first run's (committed) results.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freeStamp } from '../../bench/report.js';

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
