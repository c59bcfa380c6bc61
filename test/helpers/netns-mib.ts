/**
 * MPTCP MIB counters of one testbed namespace (the `MPTcpExt` lines of /proc/net/netstat, which
 * are per network namespace), as independent evidence of what the kernel saw on the wire —
 * e.g. MPCapableSYNRX counts MP_CAPABLE SYNs a listener received (include/net/mptcp MIB,
 * net/mptcp/mib.c names).
 */
import type { HostName, Testbed } from '../../testbed/index.js';

export async function mptcpMib(tb: Testbed, host: HostName): Promise<Record<string, number>> {
  const { stdout } = await tb.exec(host, ['cat', '/proc/net/netstat']);
  const lines = stdout.split('\n').filter((l) => l.startsWith('MPTcpExt:'));
  const [names, values] = lines.map((l) => l.split(/\s+/).slice(1));
  if (!names || !values) throw new Error('no MPTcpExt counters in /proc/net/netstat (kernel without MPTCP?)');
  return Object.fromEntries(names.map((n, i) => [n, Number(values[i])]));
}
