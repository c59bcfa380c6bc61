/**
 * Can this host open MPTCP sockets? Asked once per process (the answer only changes if
 * someone flips the sysctl, and then a restart is the honest fix).
 *
 * The kernel's answers to socket(AF_INET, SOCK_STREAM, IPPROTO_MPTCP):
 *   EPROTONOSUPPORT — no MPTCP in this kernel (CONFIG_MPTCP=n);
 *   ENOPROTOOPT     — MPTCP built in but net.mptcp.enabled=0 in this network namespace
 *                     (net/mptcp/ctrl.c mptcp_is_enabled, checked in mptcp_init_sock);
 *   EPERM/EACCES    — a seccomp or LSM policy refuses the protocol.
 */
import { readFileSync } from 'node:fs';
import { isSystemError } from '../core/errors.js';
import { loadNative } from './native.js';

export interface MptcpSupport {
  available: boolean;
  /** Why not, in words a user can act on; set when available is false. */
  reason?: string;
  /** The MPTCP path manager of this namespace ('kernel' or 'userspace'), when known. */
  pathManager?: string;
}

const SYSCTL_DIR = '/proc/sys/net/mptcp';

function readSysctl(name: string): string | undefined {
  try {
    return readFileSync(`${SYSCTL_DIR}/${name}`, 'utf8').trim();
  } catch (err) {
    if (isSystemError(err) && (err.code === 'ENOENT' || err.code === 'EACCES')) return undefined;
    throw err;
  }
}

/** path_manager (Linux 6.15+) names it; older kernels have pm_type 0 = kernel, 1 = userspace. */
function readPathManager(): string | undefined {
  const named = readSysctl('path_manager');
  if (named) return named;
  const type = readSysctl('pm_type');
  if (type === '0') return 'kernel';
  if (type === '1') return 'userspace';
  return undefined;
}

function probe(): MptcpSupport {
  let native;
  try {
    native = loadNative();
  } catch (err) {
    return { available: false, reason: (err as Error).message };
  }
  const enabled = readSysctl('enabled');
  const pathManager = readPathManager();
  let fd: number;
  try {
    fd = native.socket(4, true);
  } catch (err) {
    const code = isSystemError(err) ? err.code : undefined;
    let reason: string;
    if (code === 'EPROTONOSUPPORT' || (enabled === undefined && code === 'ENOPROTOOPT')) {
      reason = 'kernel has no MPTCP (CONFIG_MPTCP): use Linux 5.6+ built with CONFIG_MPTCP=y';
    } else if (code === 'ENOPROTOOPT' || enabled === '0') {
      reason = 'net.mptcp.enabled=0: run sysctl -w net.mptcp.enabled=1';
    } else if (code === 'EPERM' || code === 'EACCES') {
      reason = `MPTCP sockets are blocked by a security policy (seccomp/LSM): ${(err as Error).message}`;
    } else {
      reason = `cannot create an MPTCP socket: ${(err as Error).message}`;
    }
    return pathManager === undefined ? { available: false, reason } : { available: false, reason, pathManager };
  }
  native.close(fd);
  return pathManager === undefined ? { available: true } : { available: true, pathManager };
}

let cachedSupport: MptcpSupport | undefined;

/** Whether MPTCP sockets can be created here; probed on the first call, then cached. */
export function mptcpSupport(): MptcpSupport {
  cachedSupport ??= probe();
  return cachedSupport;
}
