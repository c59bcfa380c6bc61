/**
 * Starting each side of the comparison inside the testbed: our proxy (forward / HTTP, per relay
 * engine), HAProxy, Squid, the bare pipe() relay, the minimal C relay, and the origins (blob
 * server, nginx, echo).
 * Each is a tracked testbed process in its own process group, so its CPU is the sum over that
 * group's processes in the namespace, and the testbed kills it at the end.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { HostName, Testbed, TestbedProcess } from '../testbed/index.js';
import { parseHostPort } from '../src/config/schema.js';
import { writeHaproxyConfig, writeNginxConfig, writeOursHttpConfig, writeSquidConfig, type HaproxyFrontend } from './peers/configs.js';

export const PROXY_CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
export const PIPE_RELAY = fileURLToPath(new URL('./peers/pipe-relay.js', import.meta.url));
export const MEM_PROBE = fileURLToPath(new URL('./peers/mem-probe.js', import.meta.url));
export const ECHO_SERVER = fileURLToPath(new URL('./peers/echo-server.js', import.meta.url));
/** The C relay's source, read from the source tree (tsc does not copy it into dist/). */
export const C_RELAY_SOURCE = fileURLToPath(new URL('../../bench/peers/c-relay.c', import.meta.url));

/** A started program: where it listens and how to find its processes. */
export interface Started {
  label: string;
  host: HostName;
  proc: TestbedProcess;
  port: number;
  /** The command line as run (inside `ip netns exec NS`). */
  command: string;
}

/** Every command the bench ran, in order, for the report. */
export const commandLog: string[] = [];

/** Spawn with RLIMIT_NOFILE raised to its hard limit (`ulimit -n 65536` is refused when the hard
 * limit is lower, e.g. 20 000 in a container): `sh -c 'ulimit -n HARD; exec "$@"'` keeps the pid. */
export function spawnLogged(tb: Testbed, host: HostName, argv: readonly string[], env?: NodeJS.ProcessEnv, stdoutFile?: string): TestbedProcess {
  // stdoutFile: the program's stdout goes to a file, as a deployed proxy's log does, instead of
  // a pipe that this process must drain (a Node proxy's stdout writes to a pipe are
  // synchronous, so a busy bench process would stall the proxy it measures).
  const redirect = stdoutFile === undefined ? '' : ' >"$MPX_BENCH_STDOUT"';
  const wrapped = ['sh', '-c', `ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"; exec "$@"${redirect}`, 'sh', ...argv];
  const envText = env ? `${Object.entries(env).map(([k, v]) => `${k}=${v}`).join(' ')} ` : '';
  commandLog.push(`[${host}] ${envText}${argv.join(' ')}${stdoutFile === undefined ? '' : ` > ${stdoutFile}`}`);
  if (stdoutFile !== undefined) env = { ...env, MPX_BENCH_STDOUT: stdoutFile };
  return tb.spawn(host, wrapped, env ? { env } : {});
}

/** Wait until something listens on `port` in `host` (ss), or the process dies, or 15 s pass. */
export async function waitListening(tb: Testbed, host: HostName, port: number, proc: TestbedProcess, what: string): Promise<void> {
  const deadline = Date.now() + 15_000;
  for (;;) {
    if (proc.exit) throw new Error(`${what} exited (${JSON.stringify(proc.exit)}) before listening on ${port}: ${proc.stderr.slice(-800)}`);
    const r = await tb.exec(host, ['ss', '-ltnH', `sport = :${port}`], { allowFailure: true });
    if (r.stdout.trim() !== '') return;
    if (Date.now() > deadline) throw new Error(`${what} not listening on ${port} after 15 s: ${proc.stderr.slice(-800)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function started(tb: Testbed, label: string, host: HostName, port: number, argv: readonly string[], env?: NodeJS.ProcessEnv, stdoutFile?: string): Promise<Started> {
  const proc = spawnLogged(tb, host, argv, env, stdoutFile);
  await waitListening(tb, host, port, proc, label);
  return { label, host, proc, port, command: argv.join(' ') };
}

/** Where a forward's log goes: its access lines, one per connection, as in a deployment. */
function oursLogFile(name: string): string {
  mkdirSync(OURS_LOG_DIR, { recursive: true });
  return join(OURS_LOG_DIR, `${name}-${process.pid}.log`);
}
const OURS_LOG_DIR = join(tmpdir(), 'mptcp-proxy-bench-logs');

/** The relay engine env for our proxy ('default' = whatever the build picks, no env). */
export function engineEnv(engine: string): NodeJS.ProcessEnv | undefined {
  return engine === 'default' ? undefined : { MPTCP_PROXY_RELAY: engine };
}

/** Our forward, as deployed (JSON access log to a file); `env` adds to the engine's env (e.g.
 *  MPTCP_PROXY_ENGINE_ONLY=off for the JS-accounted A/B row). */
export function startOursForward(tb: Testbed, port: number, to: string, engine: string, env?: NodeJS.ProcessEnv): Promise<Started> {
  const merged = env === undefined ? engineEnv(engine) : { ...engineEnv(engine), ...env };
  return started(tb, 'ours-forward', 'prx', port, [process.execPath, PROXY_CLI, 'forward', '--listen', `0.0.0.0:${port}`, '--to', to, '--log-format', 'json'], merged, oursLogFile(`forward-${port}`));
}

export function startOursConfig(tb: Testbed, dir: string, name: string, port: number, allowNet: string, engine: string, extra: { forwardPort?: number; forwardTo?: string; upstreamPool?: boolean; socksPort?: number; accessLog?: boolean; env?: NodeJS.ProcessEnv } = {}): Promise<Started> {
  const file = writeOursHttpConfig(dir, name, port, allowNet, extra);
  const env = extra.env || engineEnv(engine) ? { ...engineEnv(engine), ...extra.env } : undefined;
  return started(tb, 'ours-http', 'prx', port, [process.execPath, PROXY_CLI, 'start', '--config', file], env, join(dir, `${name}.log`));
}

/** Compile bench/peers/c-relay.c into `dir` (once per run: the binary is cached by path) and
 *  return the binary's path; throws with the compiler's message when it fails. */
export function buildCRelay(dir: string): string {
  const bin = join(dir, 'c-relay');
  if (!builtCRelays.has(bin)) {
    try {
      execFileSync('cc', ['-O2', '-Wall', '-o', bin, C_RELAY_SOURCE], { stdio: ['ignore', 'pipe', 'pipe'], timeout: 60_000 });
    } catch (err) {
      const stderr = (err as { stderr?: Buffer }).stderr?.toString().trim() ?? '';
      throw new Error(`cc ${C_RELAY_SOURCE} failed: ${stderr.slice(-500) || (err as Error).message}`);
    }
    commandLog.push(`[bench] cc -O2 -Wall -o ${bin} ${C_RELAY_SOURCE}`);
    builtCRelays.add(bin);
  }
  return bin;
}
const builtCRelays = new Set<string>();

/** The minimal C relay (bench/peers/c-relay.c) on `port`, to `to` (an IPv4 host:port). */
export function startCRelay(tb: Testbed, dir: string, port: number, to: string): Promise<Started> {
  const up = parseHostPort(to, 'c-relay upstream', { requireHost: true });
  return started(tb, 'c-relay', 'prx', port, [buildCRelay(dir), String(port), up.host, String(up.port)]);
}

export async function startHaproxy(tb: Testbed, dir: string, frontends: readonly HaproxyFrontend[]): Promise<Started> {
  const file = writeHaproxyConfig(dir, frontends);
  const s = await started(tb, 'haproxy', 'prx', frontends[0]!.port, ['mptcpize', 'run', 'haproxy', '-f', file, '-db']);
  for (const f of frontends.slice(1)) await waitListening(tb, 'prx', f.port, s.proc, 'haproxy');
  return s;
}

export function startSquid(tb: Testbed, dir: string, port: number, allowNet: string): Promise<Started> {
  const file = writeSquidConfig(dir, port, allowNet);
  return started(tb, 'squid', 'prx', port, ['mptcpize', 'run', 'squid', '-N', '-f', file]);
}

export function startPipeRelay(tb: Testbed, port: number, to: string): Promise<Started> {
  return started(tb, 'pipe', 'prx', port, ['mptcpize', 'run', process.execPath, PIPE_RELAY, '--listen', String(port), '--to', to]);
}

export function startNginx(tb: Testbed, dir: string, name: string, address: string, port: number, root: string, mptcp: boolean): Promise<Started> {
  // sendfile() on an MPTCP socket crawls (≈250 Mbit/s here): the MPTCP origin reads and writes.
  const file = writeNginxConfig(dir, name, `${address}:${port}`, root, { sendfile: !mptcp });
  return started(tb, `nginx-${name}`, 'srv', port, [...(mptcp ? ['mptcpize', 'run'] : []), 'nginx', '-c', file, '-e', `${dir}/nginx-${name}/error.log`]);
}

export const MPTCP_FILE_SERVER = fileURLToPath(new URL('../../bench/peers/mptcp-file-server.py', import.meta.url));

/** The direct runs' MPTCP origin (bench/peers/mptcp-file-server.py, run from the source tree). */
export function startMptcpFileServer(tb: Testbed, address: string, port: number, root: string): Promise<Started> {
  return started(tb, 'mptcp-file-server', 'srv', port, ['python3', MPTCP_FILE_SERVER, '--host', address, '--port', String(port), '--root', root]);
}

export function startEcho(tb: Testbed, address: string, port: number, mptcp: boolean): Promise<Started> {
  return started(tb, mptcp ? 'echo-mptcp' : 'echo', 'srv', port, [process.execPath, ECHO_SERVER, '--host', address, '--port', String(port), ...(mptcp ? ['--mptcp'] : [])]);
}
