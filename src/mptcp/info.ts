/**
 * MPTCP connection and subflow facts, typed and named with their units.
 *
 * Sources: include/uapi/linux/mptcp.h (struct mptcp_info, struct mptcp_subflow_info)
 * and include/uapi/linux/tcp.h (struct tcp_info). The pure mapping functions
 * (toMptcpInfo, toSubflowInfo) are exported for unit tests; the read* functions make
 * one getsockopt each through the addon.
 */
import type { Socket } from 'node:net';
import { isSystemError } from '../core/errors.js';
import { unmapAddress } from '../core/context.js';
import { loadNative, type NativeAddress, type RawMptcpInfo, type RawSubflow } from './native.js';
import { socketFd } from './socket.js';

/** MPTCP_INFO_FLAG_* (uapi mptcp.h). */
const FLAG_FALLBACK = 1 << 0;
const FLAG_REMOTE_KEY_RECEIVED = 1 << 1;

export interface MptcpInfo {
  /**
   * This end's token for the connection (RFC 8684 §3.2: the most significant 32 bits of
   * SHA-256 of the local key). The two ends have different tokens; each names the
   * connection in its own kernel's path-manager events (MPTCP_ATTR_TOKEN).
   */
  token: number;
  /** Subflows beyond the initial one (uapi alias mptcpi_extra_subflows). */
  extraSubflows: number;
  /** All subflows including the initial one; absent on kernels that predate the field. */
  subflowsTotal?: number;
  /** In-kernel PM limit on extra subflows (alias mptcpi_limit_extra_subflows). */
  subflowsMax: number;
  addAddrSignal: number;
  addAddrAccepted: number;
  addAddrSignalMax: number;
  addAddrAcceptedMax: number;
  localAddrUsed: number;
  localAddrMax: number;
  /** Raw MPTCP_INFO_FLAG_* bits. */
  flags: number;
  fallback: boolean;
  remoteKeyReceived: boolean;
  checksumEnabled: boolean;
  /** Data sequence numbers (RFC 8684 §3.3), 64-bit: BigInt. */
  writeSeq: bigint;
  sndUna: bigint;
  rcvNxt: bigint;
  /** Newer-kernel counters (after Linux 6.1); absent when the kernel did not return them. */
  retransmits?: number;
  bytesRetrans?: number;
  bytesSent?: number;
  bytesReceived?: number;
  bytesAcked?: number;
  lastDataSentMs?: number;
  lastDataRecvMs?: number;
  lastAckRecvMs?: number;
  /** Bytes of struct mptcp_info the kernel returned (tells which generation answered). */
  structSize: number;
}

export interface SubflowEndpoint {
  family: 4 | 6;
  address: string;
  port: number;
}

/** include/net/tcp_states.h */
const TCP_STATES = [
  'UNKNOWN', 'ESTABLISHED', 'SYN_SENT', 'SYN_RECV', 'FIN_WAIT1', 'FIN_WAIT2', 'TIME_WAIT',
  'CLOSE', 'CLOSE_WAIT', 'LAST_ACK', 'LISTEN', 'CLOSING', 'NEW_SYN_RECV',
] as const;
/** enum tcp_ca_state (uapi tcp.h) */
const CA_STATES = ['open', 'disorder', 'cwr', 'recovery', 'loss'] as const;

export interface SubflowInfo {
  /** Per-connection subflow id from MPTCP_FULL_INFO (Linux 6.5+); undefined on older kernels. */
  id?: number;
  local: SubflowEndpoint | null;
  remote: SubflowEndpoint | null;
  state: string;
  caState: string;
  retransmits: number;
  rtoUs: number;
  rttUs: number;
  rttVarUs: number;
  minRttUs: number;
  sndCwnd: number;
  sndMss: number;
  rcvMss: number;
  totalRetrans: number;
  /** Bytes per second; tcp_info reports ~2^64 for "unlimited". */
  pacingRateBps: number;
  deliveryRateBps: number;
  bytesSent: number;
  bytesReceived: number;
  bytesAcked: number;
  bytesRetrans: number;
  segsOut: number;
  segsIn: number;
  notsentBytes: number;
  busyTimeUs: number;
  rwndLimitedUs: number;
  sndbufLimitedUs: number;
  lastDataRecvMs: number;
  lastDataSentMs: number;
}

export function toMptcpInfo(raw: RawMptcpInfo): MptcpInfo {
  const info: MptcpInfo = {
    token: raw.token,
    extraSubflows: raw.subflows,
    subflowsMax: raw.subflows_max,
    addAddrSignal: raw.add_addr_signal,
    addAddrAccepted: raw.add_addr_accepted,
    addAddrSignalMax: raw.add_addr_signal_max,
    addAddrAcceptedMax: raw.add_addr_accepted_max,
    localAddrUsed: raw.local_addr_used,
    localAddrMax: raw.local_addr_max,
    flags: raw.flags,
    fallback: (raw.flags & FLAG_FALLBACK) !== 0,
    remoteKeyReceived: (raw.flags & FLAG_REMOTE_KEY_RECEIVED) !== 0,
    checksumEnabled: raw.csum_enabled !== 0,
    writeSeq: raw.write_seq,
    sndUna: raw.snd_una,
    rcvNxt: raw.rcv_nxt,
    structSize: raw.size,
  };
  if (raw.subflows_total !== undefined) info.subflowsTotal = raw.subflows_total;
  if (raw.retransmits !== undefined) info.retransmits = raw.retransmits;
  if (raw.bytes_retrans !== undefined) info.bytesRetrans = raw.bytes_retrans;
  if (raw.bytes_sent !== undefined) info.bytesSent = raw.bytes_sent;
  if (raw.bytes_received !== undefined) info.bytesReceived = raw.bytes_received;
  if (raw.bytes_acked !== undefined) info.bytesAcked = raw.bytes_acked;
  if (raw.last_data_sent !== undefined) info.lastDataSentMs = raw.last_data_sent;
  if (raw.last_data_recv !== undefined) info.lastDataRecvMs = raw.last_data_recv;
  if (raw.last_ack_recv !== undefined) info.lastAckRecvMs = raw.last_ack_recv;
  return info;
}

function toEndpoint(a: NativeAddress | null): SubflowEndpoint | null {
  return a === null ? null : { family: a.family, address: a.address, port: a.port };
}

/** Fields the kernel did not return (older struct tcp_info) read as 0. */
export function toSubflowInfo(raw: RawSubflow): SubflowInfo {
  const t = raw.tcp;
  const sf: SubflowInfo = {
    local: toEndpoint(raw.local),
    remote: toEndpoint(raw.remote),
    state: TCP_STATES[t.state ?? 0] ?? `UNKNOWN(${t.state})`,
    caState: CA_STATES[t.ca_state ?? 0] ?? `unknown(${t.ca_state})`,
    retransmits: t.retransmits ?? 0,
    rtoUs: t.rto ?? 0,
    rttUs: t.rtt ?? 0,
    rttVarUs: t.rttvar ?? 0,
    minRttUs: t.min_rtt ?? 0,
    sndCwnd: t.snd_cwnd ?? 0,
    sndMss: t.snd_mss ?? 0,
    rcvMss: t.rcv_mss ?? 0,
    totalRetrans: t.total_retrans ?? 0,
    pacingRateBps: t.pacing_rate ?? 0,
    deliveryRateBps: t.delivery_rate ?? 0,
    bytesSent: t.bytes_sent ?? 0,
    bytesReceived: t.bytes_received ?? 0,
    bytesAcked: t.bytes_acked ?? 0,
    bytesRetrans: t.bytes_retrans ?? 0,
    segsOut: t.segs_out ?? 0,
    segsIn: t.segs_in ?? 0,
    notsentBytes: t.notsent_bytes ?? 0,
    busyTimeUs: t.busy_time ?? 0,
    rwndLimitedUs: t.rwnd_limited ?? 0,
    sndbufLimitedUs: t.sndbuf_limited ?? 0,
    lastDataRecvMs: t.last_data_recv ?? 0,
    lastDataSentMs: t.last_data_sent ?? 0,
  };
  if (raw.id !== undefined) sf.id = raw.id;
  return sf;
}

function formatEndpoint(e: SubflowEndpoint | null): string {
  if (e === null) return '?';
  // IPv4 subflows of a dual-stack socket come as ::ffff:a.b.c.d; show them as the IPv4 they are.
  const address = unmapAddress(e.address);
  return address.includes(':') ? `[${address}]:${e.port}` : `${address}:${e.port}`;
}

/** "local -> remote", e.g. "10.0.1.1:40000 -> 10.0.0.2:8080", for logs and the dashboard. ASCII
 *  on purpose: one non-ASCII character made every access line a two-byte string, ≈1 µs more to
 *  serialize and encode per connection (Node 20), and awkward to grep on a plain terminal. */
export function subflowAddresses(sf: Pick<SubflowInfo, 'local' | 'remote'>): string {
  return `${formatEndpoint(sf.local)} -> ${formatEndpoint(sf.remote)}`;
}

/**
 * True when the kernel runs this connection as MPTCP right now (TCP_IS_MPTCP, Linux
 * 5.16+). False for plain TCP and for an MPTCP socket that fell back to TCP (the peer
 * did not answer MP_CAPABLE, or a middlebox stripped it). On kernels without
 * TCP_IS_MPTCP (ENOPROTOOPT) the answer comes from MPTCP_INFO instead.
 */
export function isMptcpSocket(socket: Socket): boolean {
  const fd = socketFd(socket);
  const native = loadNative();
  try {
    return native.isMptcp(fd);
  } catch (err) {
    if (isSystemError(err) && err.code === 'ENOPROTOOPT') return native.mptcpInfo(fd) !== null;
    throw err;
  }
}

/**
 * MPTCP-level facts, or null when the connection is not MPTCP: the kernel answers
 * SOL_MPTCP requests on plain TCP and fallen-back sockets with EOPNOTSUPP
 * (net/mptcp/sockopt.c: a fallen-back msk forwards getsockopt to its TCP subflow).
 * A set MPTCP_INFO_FLAG_FALLBACK means the same thing and also gives null.
 */
export function readMptcpInfo(socket: Socket): MptcpInfo | null {
  const raw = loadNative().mptcpInfo(socketFd(socket));
  if (raw === null || (raw.flags & FLAG_FALLBACK) !== 0) return null;
  return toMptcpInfo(raw);
}

/**
 * Subflows of the connection right now, counting the initial one; undefined when the socket
 * is not (or no longer) MPTCP or already closed. One getsockopt: cheap enough per request.
 */
export function readSubflowCount(socket: Socket): number | undefined {
  if (socket.destroyed) return undefined;
  try {
    // mptcpi_subflows counts only the extra subflows (uapi/linux/mptcp.h); the addon adds the
    // initial one, or reads subflows_total (Linux 6.10+). null: not (or no longer) MPTCP.
    return loadNative().subflowCount(socketFd(socket)) ?? undefined;
  } catch (err) {
    // The fd went away between the check and the call: no answer, not a failure.
    if ((err as { code?: string }).code === 'EBADF' || (err as { code?: string }).code === 'ERR_SOCKET_CLOSED') return undefined;
    throw err;
  }
}

/** The connection's subflows (empty for plain TCP or after fallback). */
export function readSubflows(socket: Socket): SubflowInfo[] {
  const raw = loadNative().subflows(socketFd(socket));
  return raw === null ? [] : raw.map(toSubflowInfo);
}

/** What a connection's subflows looked like at one moment. */
export interface SubflowSample {
  /** Subflows counting the initial one; at least the number of live paths. */
  count: number;
  /** Live subflows as "local → remote"; closing ones (zeroed endpoints) are left out. */
  paths: string[];
}

/**
 * Samples an MPTCP connection's subflows through any fd of it. Undefined for a socket that is
 * not (or no longer) MPTCP. One addon call that builds only the count and the path strings
 * (in C, formatted as subflowAddresses() does): this runs for every connection, and the full
 * readSubflows() view costs ~20× more in JS object building than in the getsockopt itself.
 */
export function sampleSubflowsOfFd(fd: number): SubflowSample | undefined {
  return loadNative().subflowSummary(fd) ?? undefined;
}
