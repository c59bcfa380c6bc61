#!/usr/bin/env node
// Runs the compiled test files with Node's built-in runner.
// Node 20's `node --test` takes no globs, so this lists the files itself.
// Usage: node scripts/run-tests.js [unit|integration|netns ...]
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';

const tiers = process.argv.slice(2).length ? process.argv.slice(2) : ['unit', 'integration', 'netns'];
const files = [];
function walk(dir) {
  let names;
  try { names = readdirSync(dir); } catch { return; } // a tier with no tests yet
  for (const name of names.sort()) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) walk(p);
    else if (name.endsWith('.test.js')) files.push(p);
  }
}
for (const tier of tiers) walk(join('dist', 'test', tier));
if (files.length === 0) {
  console.error(`no test files found under dist/test/{${tiers.join(',')}}; run "npm run build" first`);
  process.exit(1);
}
// Two files at a time: every netns test uses its own namespace prefix, and the
// 2-core machine has room for two topologies with rate-shaped (not CPU-bound) links.
const args = ['--test', '--test-concurrency=2', '--test-timeout=180000', ...files];
const r = spawnSync(process.execPath, args, { stdio: 'inherit' });
process.exit(r.status ?? 1);
