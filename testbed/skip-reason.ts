/**
 * Why the testbed cannot run here, or undefined if it can — the TypeScript counterpart of mptcpd's
 * `pm_check_prereqs` (tests/pm_lib.sh), which exits 77 ("skipped") with a reason. Tests pass the
 * result to `test(name, { skip: testbedSkipReason() }, fn)`.
 *
 * Checks, in order: root; `ip` and `tc` present; the kernel has MPTCP (/proc/sys/net/mptcp);
 * `ip netns add` actually works (containers may forbid it even for root). The answer is cached
 * for the life of the process.
 */
import { existsSync } from 'node:fs';
import { runCommandSync } from './run-command.js';

let cached: { reason: string | undefined } | undefined;

export function testbedSkipReason(): string | undefined {
  cached ??= { reason: findSkipReason() };
  return cached.reason;
}

function findSkipReason(): string | undefined {
  if (process.platform !== 'linux') return `needs Linux network namespaces (this is ${process.platform})`;
  if (typeof process.getuid === 'function' && process.getuid() !== 0) {
    return 'needs root for network namespaces: run as root or skip';
  }
  for (const [tool, args] of [['ip', ['-V']], ['tc', ['-V']], ['ss', ['-V']]] as const) {
    const r = runCommandSync([tool, ...args]);
    if (r.code !== 0) return `needs iproute2's \`${tool}\` (${r.stderr.trim() || `exit ${r.code}`})`;
  }
  if (!existsSync('/proc/sys/net/mptcp/enabled')) return 'kernel has no Multipath TCP (no /proc/sys/net/mptcp): needs CONFIG_MPTCP';
  // A probe name that cannot match a testbed's <prefix>(cli|prx|srv) pattern.
  const probe = `mpxprobe${process.pid}`;
  const add = runCommandSync(['ip', 'netns', 'add', probe]);
  if (add.code !== 0) return `\`ip netns add\` is not permitted here: ${add.stderr.trim() || `exit ${add.code}`}`;
  const mptcp = runCommandSync(['ip', 'netns', 'exec', probe, 'sysctl', '-qw', 'net.mptcp.enabled=1']);
  runCommandSync(['ip', 'netns', 'del', probe]);
  if (mptcp.code !== 0) return `cannot enable MPTCP in a namespace: ${mptcp.stderr.trim() || `exit ${mptcp.code}`}`;
  return undefined;
}
