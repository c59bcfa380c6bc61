/**
 * The bench installs its own peers from Debian when they are missing (apt-get install -y
 * --no-install-recommends) and says clearly which ones it could not get; scenarios then skip
 * the variants that need them, with that reason in the results.
 */
import { spawnSync } from 'node:child_process';

/** Program → Debian package that provides it. */
export const PEER_PACKAGES: Record<string, string> = {
  haproxy: 'haproxy',
  squid: 'squid',
  nginx: 'nginx',
  mptcpize: 'mptcpize',
  tcpdump: 'tcpdump',
  curl: 'curl',
  cc: 'gcc', // builds the C relay peer (bench/peers/c-relay.c)
};

export function hasProgram(name: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${name}`], { stdio: 'ignore' }).status === 0;
}

export interface PeerAvailability {
  available: Set<string>;
  /** Program → why it is unavailable. */
  missing: Map<string, string>;
  commands: string[];
}

/** Ensure the given programs exist, installing their packages once if needed. */
export function ensurePeers(programs: readonly string[], log: (line: string) => void): PeerAvailability {
  const result: PeerAvailability = { available: new Set(), missing: new Map(), commands: [] };
  const absent = programs.filter((p) => !hasProgram(p));
  if (absent.length > 0) {
    const packages = [...new Set(absent.map((p) => PEER_PACKAGES[p] ?? p))];
    if (process.getuid?.() !== 0) {
      for (const p of absent) result.missing.set(p, `not installed and not root (apt-get install ${PEER_PACKAGES[p] ?? p})`);
    } else {
      const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
      const cmd = ['apt-get', 'install', '-y', '--no-install-recommends', ...packages];
      log(`installing peers: ${cmd.join(' ')}`);
      result.commands.push(cmd.join(' '));
      let r = spawnSync(cmd[0] as string, cmd.slice(1), { env, encoding: 'utf8', timeout: 300_000 });
      if (r.status !== 0) {
        // Stale package lists are the usual cause; update once and retry.
        result.commands.push('apt-get update');
        spawnSync('apt-get', ['update'], { env, encoding: 'utf8', timeout: 300_000 });
        r = spawnSync(cmd[0] as string, cmd.slice(1), { env, encoding: 'utf8', timeout: 300_000 });
      }
      if (r.status !== 0) log(`apt-get failed (${r.status}): ${(r.stderr ?? '').trim().split('\n').slice(-3).join(' | ')}`);
    }
  }
  for (const p of programs) {
    if (hasProgram(p)) result.available.add(p);
    else if (!result.missing.has(p)) result.missing.set(p, `${p} missing and apt-get install ${PEER_PACKAGES[p] ?? p} failed`);
  }
  for (const [p, why] of result.missing) log(`CANNOT run peer ${p}: ${why}`);
  return result;
}
