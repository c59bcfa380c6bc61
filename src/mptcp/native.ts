/**
 * Loads the C addon (native/, target `mptcp_native`) and types its surface.
 *
 * The addon only makes system calls and returns the kernel's values raw (snake_case
 * names as in the uapi structs, without their prefixes); every interpretation lives in
 * the sibling modules. It is loaded lazily, on first use, so that importing src/mptcp
 * never fails on a machine where the addon was not built: mptcpSupport() then reports
 * MPTCP as unavailable with the command that fixes it, and 'auto' listeners fall back.
 */
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ErrorCode, ProxyError } from '../core/errors.js';

/** An address as the addon returns it (inet_ntop text; IPv4-mapped IPv6 kept as is). */
export interface NativeAddress {
  family: 4 | 6;
  address: string;
  port: number;
}

/**
 * struct mptcp_info (include/uapi/linux/mptcp.h), the fields the kernel copied.
 * The struct only grows; `size` is the byte count the kernel returned, and fields
 * after the Linux 6.1 layout are absent when an older kernel answered.
 */
export interface RawMptcpInfo {
  subflows: number;
  add_addr_signal: number;
  add_addr_accepted: number;
  subflows_max: number;
  add_addr_signal_max: number;
  add_addr_accepted_max: number;
  flags: number;
  token: number;
  write_seq: bigint;
  snd_una: bigint;
  rcv_nxt: bigint;
  local_addr_used: number;
  local_addr_max: number;
  csum_enabled: number;
  retransmits?: number;
  bytes_retrans?: number;
  bytes_sent?: number;
  bytes_received?: number;
  bytes_acked?: number;
  subflows_total?: number;
  endp_add_addr_max?: number;
  last_data_sent?: number;
  last_data_recv?: number;
  last_ack_recv?: number;
  size: number;
}

/** struct tcp_info (include/uapi/linux/tcp.h) without the tcpi_ prefix; a field is
 *  absent when the kernel's copy did not reach it. Times in µs unless named last_*. */
export interface RawTcpInfo {
  state?: number;
  ca_state?: number;
  retransmits?: number;
  probes?: number;
  backoff?: number;
  options?: number;
  rto?: number;
  ato?: number;
  snd_mss?: number;
  rcv_mss?: number;
  unacked?: number;
  sacked?: number;
  lost?: number;
  retrans?: number;
  last_data_sent?: number;
  last_data_recv?: number;
  last_ack_recv?: number;
  pmtu?: number;
  rcv_ssthresh?: number;
  rtt?: number;
  rttvar?: number;
  snd_ssthresh?: number;
  snd_cwnd?: number;
  advmss?: number;
  reordering?: number;
  rcv_rtt?: number;
  rcv_space?: number;
  total_retrans?: number;
  pacing_rate?: number;
  max_pacing_rate?: number;
  bytes_acked?: number;
  bytes_received?: number;
  segs_out?: number;
  segs_in?: number;
  notsent_bytes?: number;
  min_rtt?: number;
  data_segs_in?: number;
  data_segs_out?: number;
  delivery_rate?: number;
  busy_time?: number;
  rwnd_limited?: number;
  sndbuf_limited?: number;
  delivered?: number;
  delivered_ce?: number;
  bytes_sent?: number;
  bytes_retrans?: number;
  dsack_dups?: number;
  reord_seen?: number;
  rcv_ooopack?: number;
  snd_wnd?: number;
}

/** One subflow: MPTCP_FULL_INFO gives `id`; the 5.16 MPTCP_TCPINFO/SUBFLOW_ADDRS pair does not. */
export interface RawSubflow {
  id?: number;
  local: NativeAddress | null;
  remote: NativeAddress | null;
  tcp: RawTcpInfo;
}

export interface NativeConstants {
  SOL_SOCKET: number;
  SO_REUSEADDR: number;
  SO_REUSEPORT: number;
  SO_BINDTODEVICE: number;
  SO_KEEPALIVE: number;
  IPPROTO_IP: number;
  IPPROTO_IPV6: number;
  IPPROTO_TCP: number;
  IPPROTO_MPTCP: number;
  SOL_MPTCP: number;
  IPV6_V6ONLY: number;
  IP_TRANSPARENT: number;
  IP_FREEBIND: number;
  IPV6_TRANSPARENT: number;
  TCP_NODELAY: number;
  MPTCP_INFO_FLAG_FALLBACK: number;
  MPTCP_INFO_FLAG_REMOTE_KEY_RECEIVED: number;
}

/**
 * The addon's exports. Every function throws, on a failed syscall, an Error shaped like
 * Node's own: `code` ('EBADF'), `errno` (negative, as Node/libuv report it: -9),
 * `syscall` ('getsockopt(MPTCP_INFO)'), message 'getsockopt(MPTCP_INFO) EBADF: Bad file descriptor'.
 */
export interface MptcpNative {
  /** socket(AF_INET|AF_INET6, SOCK_STREAM|SOCK_NONBLOCK|SOCK_CLOEXEC, IPPROTO_MPTCP or 0). */
  socket(family: 4 | 6, mptcp: boolean): number;
  setIntOption(fd: number, level: number, name: number, value: number): void;
  /** setsockopt with a string value, e.g. SO_BINDTODEVICE. */
  setStringOption(fd: number, level: number, name: number, value: string): void;
  /** address must be an IPv4 or IPv6 literal. */
  bind(fd: number, address: string, port: number): void;
  /**
   * Non-blocking connect(2) on a socket from socket(); address must be an IP literal.
   * true: connected at once; false: in progress (EINPROGRESS) — the socket turns writable when
   * the handshake ends, with the outcome in SO_ERROR. Other failures throw (syscall 'connect').
   */
  connect(fd: number, address: string, port: number): boolean;
  listen(fd: number, backlog: number): void;
  close(fd: number): void;
  dup(fd: number): number;
  /**
   * recv(MSG_PEEK | MSG_DONTWAIT) into `buffer`: the bytes already received, left in the socket
   * for Node to read; 0 when none yet (or at EOF). Optional: an addon built before it lacks it.
   */
  peek?(fd: number, buffer: Buffer): number;
  localAddress(fd: number): NativeAddress | null;
  remoteAddress(fd: number): NativeAddress | null;
  /** SO_ORIGINAL_DST (family 4) / IP6T_SO_ORIGINAL_DST (family 6). */
  originalDestination(fd: number, family: 4 | 6): NativeAddress | null;
  /** getsockopt(SOL_TCP, TCP_IS_MPTCP): false for plain TCP and for fallen-back MPTCP. */
  isMptcp(fd: number): boolean;
  /** null when the kernel answers EOPNOTSUPP/ENOPROTOOPT: plain TCP or fallen back. */
  mptcpInfo(fd: number): RawMptcpInfo | null;
  /** MPTCP_FULL_INFO, else MPTCP_TCPINFO + MPTCP_SUBFLOW_ADDRS; null when not MPTCP. */
  subflows(fd: number): RawSubflow[] | null;
  /**
   * The accounting view, built in C: subflows counting the initial one (subflows_total, else
   * mptcpi_subflows + 1) and one "local → remote" string per live subflow (remote port ≠ 0),
   * formatted as subflowAddresses() does. MPTCP_INFO + MPTCP_SUBFLOW_ADDRS; null when not
   * MPTCP (plain TCP, fallen back, or MPTCP_INFO_FLAG_FALLBACK set).
   */
  subflowSummary(fd: number): { count: number; paths: string[] } | null;
  /** MPTCP_INFO only: subflows counting the initial one; null when not MPTCP. */
  subflowCount(fd: number): number | null;
  readonly constants: NativeConstants;
}

const ADDON_RELATIVE_PATH = join('native', 'build', 'Release', 'mptcp_native.node');
const PACKAGE_NAME = 'mptcp-proxy';

/**
 * The package root: the nearest ancestor of this file whose package.json is ours.
 * Walking up (instead of a fixed '../..') works from src/mptcp (ts-node/tsx) and from
 * dist/src/mptcp (compiled) alike.
 */
export function findPackageRoot(startDir: string = dirname(fileURLToPath(import.meta.url))): string | undefined {
  let dir = startDir;
  for (;;) {
    const manifest = join(dir, 'package.json');
    if (existsSync(manifest)) {
      try {
        const pkg = JSON.parse(readFileSync(manifest, 'utf8')) as { name?: unknown };
        if (pkg.name === PACKAGE_NAME) return dir;
      } catch (err) {
        // A broken package.json on the way up is not ours; keep walking.
        if (!(err instanceof SyntaxError)) throw err;
      }
    }
    const parent = dirname(dir);
    if (parent === dir) return undefined;
    dir = parent;
  }
}

/** The addon could not be loaded: not built, or built for another Node ABI. */
export class NativeAddonUnavailableError extends ProxyError {
  override name = 'NativeAddonUnavailableError';
  constructor(message: string, options: { cause?: unknown } = {}) {
    super(ErrorCode.INTERNAL, 'internal', message, options);
  }
}

let cached: MptcpNative | undefined;
let cachedFailure: NativeAddonUnavailableError | undefined;

/** The loaded addon; throws NativeAddonUnavailableError (cached) if it cannot be loaded. */
export function loadNative(): MptcpNative {
  if (cached) return cached;
  if (cachedFailure) throw cachedFailure;
  const root = findPackageRoot();
  const fix = 'run `npm install` (or `npx node-gyp rebuild -C native`) in the mptcp-proxy directory';
  if (root === undefined) {
    cachedFailure = new NativeAddonUnavailableError(`cannot find the ${PACKAGE_NAME} package root to load the MPTCP addon; ${fix}`);
    throw cachedFailure;
  }
  const file = join(root, ADDON_RELATIVE_PATH);
  if (!existsSync(file)) {
    cachedFailure = new NativeAddonUnavailableError(`MPTCP native addon not built (${file} is missing): ${fix}`);
    throw cachedFailure;
  }
  try {
    const require = createRequire(import.meta.url);
    cached = require(file) as MptcpNative;
    return cached;
  } catch (err) {
    cachedFailure = new NativeAddonUnavailableError(`cannot load the MPTCP native addon ${file}: ${fix}`, { cause: err });
    throw cachedFailure;
  }
}
