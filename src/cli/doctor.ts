/**
 * `mptcp-proxy doctor`: checks, in plain words, what this host needs for the proxy to
 * give clients multipath, and says what to enable where something is missing.
 * Exit 0 when nothing required is missing, 1 otherwise.
 */
import { readFileSync } from 'node:fs';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { release } from 'node:os';
import type { Writable } from 'node:stream';
import { Server, type Socket } from 'node:net';
import { connectMptcp, listenMptcp, mptcpSupport, readMptcpInfo, readSubflows } from '../mptcp/index.js';

const execFileP = promisify(execFile);

export type CheckStatus = 'ok' | 'warn' | 'fail';
export interface CheckResult {
  name: string;
  status: CheckStatus;
  detail: string;
  fix?: string;
}

function readSysctl(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8').trim();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

async function run(cmd: string, args: string[]): Promise<{ ok: boolean; out: string }> {
  try {
    const r = await execFileP(cmd, args, { timeout: 5000 });
    return { ok: true, out: `${r.stdout}${r.stderr}`.trim() };
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { stderr?: string };
    return { ok: false, out: e.code === 'ENOENT' ? 'not installed' : (e.stderr ?? e.message).trim() };
  }
}

function checkKernel(): CheckResult {
  const enabled = readSysctl('/proc/sys/net/mptcp/enabled');
  if (enabled === undefined) {
    return { name: 'kernel MPTCP', status: 'fail', detail: `kernel ${release()} has no MPTCP (no /proc/sys/net/mptcp)`, fix: 'use a Linux ≥ 5.19 kernel built with CONFIG_MPTCP=y and CONFIG_MPTCP_IPV6=y' };
  }
  if (enabled !== '1') {
    return { name: 'kernel MPTCP', status: 'fail', detail: 'net.mptcp.enabled is 0', fix: 'sysctl -w net.mptcp.enabled=1 (and persist it in /etc/sysctl.d/)' };
  }
  return { name: 'kernel MPTCP', status: 'ok', detail: `kernel ${release()}, net.mptcp.enabled=1` };
}

function checkSocket(): CheckResult {
  const s = mptcpSupport();
  return s.available
    ? { name: 'MPTCP sockets', status: 'ok', detail: 'socket(IPPROTO_MPTCP) works in this process' }
    : { name: 'MPTCP sockets', status: 'fail', detail: s.reason ?? 'cannot create MPTCP sockets', fix: 'enable MPTCP (see above); in containers, check seccomp allows IPPROTO_MPTCP (262)' };
}

function checkPathManager(): CheckResult {
  const pm = readSysctl('/proc/sys/net/mptcp/path_manager') ?? (readSysctl('/proc/sys/net/mptcp/pm_type') === '1' ? 'userspace' : 'kernel');
  return pm === 'kernel'
    ? { name: 'path manager', status: 'ok', detail: 'in-kernel path manager' }
    : { name: 'path manager', status: 'warn', detail: `path manager is "${pm}": subflows are created only by a userspace daemon (mptcpd)`, fix: 'run mptcpd, or sysctl -w net.mptcp.path_manager=kernel' };
}

async function checkLimits(): Promise<CheckResult> {
  const r = await run('ip', ['mptcp', 'limits', 'show']);
  if (!r.ok) return { name: 'MPTCP limits', status: 'warn', detail: `cannot read limits: ${r.out}`, fix: 'install iproute2 ≥ 5.8' };
  const subflows = Number(/subflows (\d+)/.exec(r.out)?.[1] ?? 0);
  if (subflows < 1) {
    // The server side (this proxy) must accept MP_JOINs: the kernel refuses them beyond this limit.
    return { name: 'MPTCP limits', status: 'fail', detail: `"${r.out}": clients' extra subflows are refused`, fix: 'ip mptcp limits set subflows 4 add_addr_accepted 4' };
  }
  return { name: 'MPTCP limits', status: 'ok', detail: r.out.replace(/\s+/g, ' ') };
}

async function checkEndpoints(): Promise<CheckResult> {
  const r = await run('ip', ['mptcp', 'endpoint', 'show']);
  if (!r.ok) return { name: 'MPTCP endpoints', status: 'warn', detail: `cannot list endpoints: ${r.out}` };
  const n = r.out ? r.out.split('\n').length : 0;
  return {
    name: 'MPTCP endpoints',
    status: 'ok',
    detail: n ? `${n} endpoint(s): ${r.out.replace(/\n/g, '; ')}` : 'none (fine for a proxy: clients open the subflows; add "signal" endpoints to announce extra proxy addresses)',
  };
}

/** Opens one MPTCP connection over loopback and reads MPTCP_INFO and the subflow list from it. */
async function checkSubflowInfo(): Promise<CheckResult> {
  const name = 'subflow visibility';
  const server = new Server();
  let client: Socket | undefined;
  try {
    const { address } = await listenMptcp(server, { host: '127.0.0.1', port: 0, mode: 'on' });
    const accepted = new Promise<Socket>((resolve) => server.once('connection', resolve));
    client = connectMptcp({ host: '127.0.0.1', port: address.port, mptcp: true });
    await new Promise<void>((resolve, reject) => client!.once('connect', resolve).once('error', reject));
    const peer = await accepted;
    const info = readMptcpInfo(peer);
    const subflows = readSubflows(peer);
    peer.destroy();
    if (!info) return { name, status: 'warn', detail: 'a loopback MPTCP connection fell back to TCP', fix: 'check net.mptcp.enabled and any firewall stripping TCP options on lo' };
    const sf = subflows[0];
    return { name, status: 'ok', detail: `MPTCP_INFO (${info.structSize} bytes) and ${subflows.length} subflow(s) readable${sf ? `, rtt ${sf.rttUs} µs` : ''}` };
  } catch (err) {
    const e = err as Error & { code?: string; syscall?: string };
    return { name, status: 'warn', detail: `${e.syscall ?? 'probe'} failed: ${e.code ?? e.message}`, fix: 'a kernel ≥ 6.5 gives MPTCP_FULL_INFO; older ones give less per-subflow detail' };
  } finally {
    client?.destroy();
    server.close();
  }
}

async function checkTool(name: string, cmd: string, args: string[], why: string, pkg: string): Promise<CheckResult> {
  const r = await run(cmd, args);
  return r.ok
    ? { name, status: 'ok', detail: r.out.split('\n')[0] ?? '' }
    : { name, status: 'warn', detail: `${cmd}: ${r.out} — ${why}`, fix: `apt-get install ${pkg}` };
}

export async function doctorChecks(): Promise<CheckResult[]> {
  const kernel = checkKernel();
  const results = [kernel, checkSocket(), checkPathManager()];
  results.push(await checkLimits(), await checkEndpoints());
  if (kernel.status === 'ok') results.push(await checkSubflowInfo());
  results.push(
    await checkTool('tc', 'tc', ['-V'], 'needed later for steering subflows', 'iproute2'),
    await checkTool('mptcpize', 'mptcpize', ['--help'], 'lets unmodified TCP clients use MPTCP (mptcpize run curl ...)', 'mptcpize'),
  );
  return results;
}

export async function runDoctor(out: Writable): Promise<number> {
  const mark: Record<CheckStatus, string> = { ok: 'ok  ', warn: 'warn', fail: 'FAIL' };
  const results = await doctorChecks();
  for (const r of results) {
    out.write(`[${mark[r.status]}] ${r.name}: ${r.detail}\n`);
    if (r.fix && r.status !== 'ok') out.write(`       fix: ${r.fix}\n`);
  }
  const failed = results.filter((r) => r.status === 'fail').length;
  out.write(failed ? `\n${failed} required check(s) failed.\n` : '\nThis host can run mptcp-proxy with multipath clients.\n');
  return failed ? 1 : 0;
}
