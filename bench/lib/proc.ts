/**
 * Reading a proxy's cost from /proc: CPU (utime + stime, /proc/PID/stat fields 14 and 15, in
 * clock ticks) and resident memory (VmRSS in /proc/PID/status). The proxy's processes are all
 * processes in its namespace (`ip netns pids`), which covers forks and helpers (squid's kids).
 */
import { readFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { namespacePids } from '../../testbed/index.js';

let clockTicks: number | undefined;
function ticksPerSecond(): number {
  if (clockTicks === undefined) {
    try {
      clockTicks = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
    } catch {
      clockTicks = 100; // Linux's USER_HZ on every mainstream architecture
    }
  }
  return clockTicks;
}

/** Machine-wide CPU time from /proc/stat (all cores; namespaces share it), in clock ticks. */
export interface MachineCpu {
  /** Time the cores ran anything of this machine's (user, system, interrupts). */
  busy: number;
  /** Time this VM's cores were runnable but the host ran someone else ("steal"): the machine is
   *  shared, and a figure taken while the host steals is slower for reasons that are not ours. */
  steal: number;
  total: number;
}

export function machineCpu(): MachineCpu {
  return parseMachineCpu(readFileSync('/proc/stat', 'utf8').split('\n', 1)[0]!);
}

/** /proc/stat's first line, "cpu  user nice system idle iowait irq softirq steal guest
 *  guest_nice" (older kernels stop before steal); guest time is already inside user/nice, so
 *  it is not added again. */
export function parseMachineCpu(line: string): MachineCpu {
  const fields = line.trim().split(/\s+/).slice(1, 9).map(Number);
  const idle = fields[3]! + fields[4]!;
  const steal = fields[7] ?? 0;
  const total = fields.reduce((a, b) => a + b, 0);
  return { busy: total - idle - steal, steal, total };
}

/** Share of all cores' time spent busy between two readings (0–1). */
export function machineBusyShare(before: MachineCpu, after: MachineCpu): number {
  const total = after.total - before.total;
  return total > 0 ? (after.busy - before.busy) / total : NaN;
}

/** Share of all cores' time the host stole between two readings (0–1). */
export function machineStealShare(before: MachineCpu, after: MachineCpu): number {
  const total = after.total - before.total;
  return total > 0 ? (after.steal - before.steal) / total : NaN;
}

/** From this share of stolen time on, a figure is marked as taken on a contended host. Seen on
 *  this machine (2026-12-03): ≈1 % steal while quiet; 35 % in a busy moment, when a loopback
 *  connection-rate run through our forward fell from ≈2 100 to ≈1 000 connections/s. */
export const STEAL_NOTABLE = 0.05;

/** ", host steal N%" for a progress line when the steal was notable; "" otherwise. */
export function stealNote(steal: number | undefined): string {
  return steal !== undefined && steal >= STEAL_NOTABLE ? `, host steal ${(steal * 100).toFixed(0)}%` : '';
}

/** Runs `fn` and tells how much of the machine's time the host stole meanwhile (0–1). */
export async function withSteal<T>(fn: () => Promise<T>): Promise<{ value: T; steal: number }> {
  const before = machineCpu();
  const value = await fn();
  return { value, steal: machineStealShare(before, machineCpu()) };
}

/** CPU seconds (user + system) a process has used so far; 0 if it is gone. */
export function cpuSecondsOf(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // comm (field 2) may contain spaces and parentheses: split after the last ')'.
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // rest[0] is field 3 (state); utime is field 14 → rest[11], stime field 15 → rest[12].
    return (Number(rest[11]) + Number(rest[12])) / ticksPerSecond();
  } catch {
    return 0;
  }
}

/** Resident set size in bytes; 0 if the process is gone. */
export function rssBytesOf(pid: number): number {
  try {
    const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

/** Per-pid CPU seconds of every process in a namespace, excluding `exclude`. */
export async function namespaceCpu(ns: string, exclude: readonly number[] = []): Promise<Map<number, number>> {
  const out = new Map<number, number>();
  for (const pid of await namespacePids(ns)) if (!exclude.includes(pid)) out.set(pid, cpuSecondsOf(pid));
  return out;
}

/** CPU seconds used between two snapshots (processes that appeared in between count from 0). */
export function cpuDelta(before: Map<number, number>, after: Map<number, number>): number {
  let total = 0;
  for (const [pid, t] of after) total += t - (before.get(pid) ?? 0);
  return total;
}

/** Sum of RSS of the given pids. */
export function rssOfPids(pids: readonly number[]): number {
  return pids.reduce((sum, pid) => sum + rssBytesOf(pid), 0);
}

/** Process group of a pid (field 5 of /proc/PID/stat); undefined if gone. */
export function pgrpOf(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[2]);
  } catch {
    return undefined;
  }
}

/** Pids in `ns` belonging to the process group `pgid` (a tracked spawn and everything it forked). */
export async function groupPids(ns: string, pgid: number): Promise<number[]> {
  return (await namespacePids(ns)).filter((pid) => pid === pgid || pgrpOf(pid) === pgid);
}

/** CPU seconds of a process group in a namespace, per pid. */
export async function groupCpu(ns: string, pgid: number): Promise<Map<number, number>> {
  const out = new Map<number, number>();
  for (const pid of await groupPids(ns, pgid)) out.set(pid, cpuSecondsOf(pid));
  return out;
}
