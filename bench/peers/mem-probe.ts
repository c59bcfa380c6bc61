/**
 * A probe preloaded into our proxy by the idle-memory scenario, without touching src/:
 *   NODE_OPTIONS="--import=file:///…/dist/bench/peers/mem-probe.js" MPTCP_BENCH_MEM_OUT=/tmp/x
 On each SIGUSR2 it reads <MPTCP_BENCH_MEM_OUT>.cmd: 'plain' (default) records
 * process.memoryUsage() as it is; 'gc' records it, runs two full garbage collections, and records
 * it again; 'snap' does the same and also writes <MPTCP_BENCH_MEM_OUT>.<k>.heapsnapshot. The
 * report goes to <MPTCP_BENCH_MEM_OUT>.<k>.json (k = 1, 2, …), renamed into place last, so its
 * presence means everything is written.
 * The proxy itself does not use SIGUSR2.
 */
import { closeSync, ftruncateSync, openSync, readSync, renameSync, writeSync } from 'node:fs';
import * as v8 from 'node:v8';
import * as vm from 'node:vm';

const out = process.env.MPTCP_BENCH_MEM_OUT;
if (out) {
  // The probe must not leak into processes the proxy spawns (none for forward/http; --workers
  // would fork copies, each with its own probe writing the same files — the bench uses 1 process).
  v8.setFlagsFromString('--expose-gc');
  const gc = vm.runInNewContext('gc') as () => void;
  // Every descriptor the probe needs is opened now: with ~10 000 relayed connections the proxy
  // sits at its RLIMIT_NOFILE and a later open() fails with EMFILE. rename() needs none.
  const cmdFd = openSync(`${out}.cmd`, 'a+');
  const slots = Array.from({ length: 8 }, (_, i) => openSync(`${out}.${i + 1}.tmp`, 'w'));
  const cmdBuf = Buffer.alloc(64);
  let k = 0;
  process.on('SIGUSR2', () => {
    k++;
    const n = readSync(cmdFd, cmdBuf, 0, cmdBuf.length, 0);
    const cmd = cmdBuf.subarray(0, n).toString('utf8').trim() || 'plain';
    const before = process.memoryUsage();
    let after: NodeJS.MemoryUsage | undefined;
    if (cmd === 'gc' || cmd === 'snap') {
      gc();
      gc();
      if (cmd === 'snap') v8.writeHeapSnapshot(`${out}.${k}.heapsnapshot`);
      after = process.memoryUsage();
    }
    const hs = v8.getHeapStatistics();
    const report = { pid: process.pid, k, cmd, before, afterGc: after, mallocedMemory: hs.malloced_memory };
    const fd = slots[k - 1];
    if (fd === undefined) return;
    ftruncateSync(fd, 0);
    writeSync(fd, `${JSON.stringify(report)}\n`, 0);
    closeSync(fd);
    renameSync(`${out}.${k}.tmp`, `${out}.${k}.json`);
  });
}
