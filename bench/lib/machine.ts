/** A description of the machine and the peers' versions, for the results file. */
import { readFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import * as os from 'node:os';

export interface MachineInfo {
  kernel: string;
  cpuModel: string;
  cores: number;
  memoryGiB: number;
  node: string;
  congestionControl: string;
  peers: Record<string, string>;
}

function firstLine(cmd: string, args: string[]): string {
  try {
    const out = execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 5_000 });
    return out.split('\n').find((l) => l.trim() !== '')?.trim() ?? 'unknown';
  } catch (err) {
    // nginx -v prints to stderr.
    const e = err as { stderr?: string };
    return e.stderr?.split('\n')[0]?.trim() || 'not installed';
  }
}

function stderrLine(cmd: string, args: string[]): string {
  try {
    const r = execFileSync('sh', ['-c', `${cmd} ${args.join(' ')} 2>&1`], { encoding: 'utf8', timeout: 5_000 });
    return r.split('\n')[0]?.trim() ?? 'unknown';
  } catch {
    return 'not installed';
  }
}

export function describeMachine(): MachineInfo {
  const cpuinfo = readFileSync('/proc/cpuinfo', 'utf8');
  const model = /^model name\s*:\s*(.*)$/m.exec(cpuinfo)?.[1] ?? os.cpus()[0]?.model ?? 'unknown';
  let cc = 'unknown';
  try {
    cc = readFileSync('/proc/sys/net/ipv4/tcp_congestion_control', 'utf8').trim();
  } catch {
    // not readable: leave unknown
  }
  return {
    kernel: `${os.type()} ${os.release()}`,
    cpuModel: model.trim(),
    cores: os.cpus().length,
    memoryGiB: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
    node: process.version,
    congestionControl: cc,
    peers: {
      haproxy: firstLine('haproxy', ['-v']),
      squid: firstLine('squid', ['-v']),
      nginx: stderrLine('nginx', ['-v']),
      mptcpize: firstLine('dpkg-query', ['-W', '-f', '${Package} ${Version}', 'mptcpd']),
      curl: firstLine('curl', ['--version']),
      tcpdump: stderrLine('tcpdump', ['--version']),
    },
  };
}
