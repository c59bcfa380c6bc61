/**
 * The configuration's types. `schema.ts` validates raw YAML/CLI input into these,
 * filling defaults; everything after loading sees only these validated shapes.
 */
import type { FrontendKind } from '../core/context.js';
import type { LogFormat, LogLevel } from '../core/logger.js';
import type { TargetAddress } from '../core/errors.js';
import type { UpstreamMptcpMode } from '../upstream/types.js';

/** Listener side: `on` = MPTCP socket, fail if the kernel lacks MPTCP; `auto` = MPTCP,
 *  plain TCP if the kernel lacks it (with a warning); `off` = plain TCP. Either way plain
 *  TCP clients are served: the kernel falls back per connection. */
export type ListenerMptcpMode = 'on' | 'auto' | 'off';

export interface ListenAddress {
  host: string;
  port: number;
}

export interface ListenerBase {
  /** Unique name, used in logs and metrics. */
  name: string;
  type: FrontendKind;
  listen: ListenAddress;
  mptcp: ListenerMptcpMode;
  backlog: number;
  /** SO_REUSEPORT, so several processes can share the port. */
  reusePort: boolean;
  /** Whole-handshake deadline (request line + headers, SOCKS negotiation): slowloris guard. */
  handshakeTimeoutMs: number;
}

export interface HttpListenerConfig extends ListenerBase {
  type: 'http';
  /** Bytes of request line + headers before 431. */
  maxHeaderBytes: number;
  /** Header lines before 431. */
  maxHeaderCount: number;
  /** How long an idle keep-alive client connection is kept between requests. */
  keepAliveTimeoutMs: number;
  /** How long an idle upstream connection is kept in the listener's pool for reuse by any
   *  client session to the same host:port; 0 disables pooling. */
  upstreamIdleTimeoutMs: number;
  /** Pseudonym put in the Via header (RFC 9110 §7.6.3). */
  via: string;
}

export interface Socks5ListenerConfig extends ListenerBase {
  type: 'socks5';
}

export interface TcpForwardListenerConfig extends ListenerBase {
  type: 'tcp-forward';
  /** Fixed upstream every connection goes to. */
  to: TargetAddress;
}

export interface TransparentListenerConfig extends ListenerBase {
  type: 'transparent';
  /** How traffic reaches us: nftables/iptables REDIRECT (SO_ORIGINAL_DST) or TPROXY (IP_TRANSPARENT). */
  mode: 'redirect' | 'tproxy';
}

export type ListenerConfig = HttpListenerConfig | Socks5ListenerConfig | TcpForwardListenerConfig | TransparentListenerConfig;

export interface UpstreamConfig {
  mptcp: UpstreamMptcpMode;
  connectTimeoutMs: number;
  dnsTimeoutMs: number;
  /** RFC 8305 "Connection Attempt Delay" between address attempts. */
  happyEyeballsDelayMs: number;
  /** Source address for upstream connections; undefined = kernel's choice. */
  bindAddress?: string;
  /** SO_BINDTODEVICE interface name; undefined = none. */
  bindInterface?: string;
}

export interface RelayConfig {
  /** Close a relayed connection after this long without bytes either way; 0 = never. */
  idleTimeoutMs: number;
  /** Who moves the bytes: the addon's epoll engine (1 MiB reads/writes) or Node streams. */
  engine: 'native' | 'js';
  /** Native engine threads per process (each an epoll loop); workers scale across cores. */
  threads: number;
  /**
   * Native engine: once a connection moves bulk data, cap the source socket's receive buffer and
   * the destination's send buffer at max(capBuffersMinBytes, capBuffersRateMbit × the path's RTT)
   * instead of letting the kernel autotune them to megabytes — the queue inside the proxy is its
   * bulk delay (native/src/queue-cap.c). Plain TCP (and fallen-back) sockets only: an MPTCP
   * connection keeps autotuning, since its buffers must cover its slowest subflow. Paths too long
   * for net.core.rmem_max/wmem_max, or for more than autotuning's own maximum, keep autotuning.
   */
  capBuffers: boolean;
  capBuffersMinBytes: number;
  capBuffersRateMbit: number;
  /**
   * With capBuffers: the destination socket of a bulk flow, MPTCP ones too, holds at most about
   * this many bytes not yet sent on any path (TCP_NOTSENT_LOWAT); bytes in flight are not
   * counted, so a slow subflow keeps its window. 0 = off.
   */
  capBuffersNotsentBytes: number;
}

export interface AccessConfig {
  /** CIDRs of clients allowed to use the proxy. */
  allowClients: string[];
  /** CIDRs the proxy will never connect to (checked after DNS). */
  denyDestinations: string[];
  /** If non-empty, only these destination CIDRs are allowed. */
  allowDestinations: string[];
  /** Destination ports denied (numbers or "a-b" ranges). */
  denyPorts: string[];
  /** If non-empty, only these destination ports are allowed. */
  allowPorts: string[];
  /** Concurrent connections per client address; 0 = unlimited. */
  maxConnectionsPerClient: number;
  /** File of `user:scrypt$...` lines; when set, HTTP (Basic) and SOCKS5 (RFC 1929) require auth. */
  credentialsFile?: string;
}

export interface LogConfig {
  level: LogLevel;
  format: LogFormat;
  /** One line per proxied connection/request. */
  access: boolean;
}

export interface Config {
  log: LogConfig;
  listeners: ListenerConfig[];
  upstream: UpstreamConfig;
  relay: RelayConfig;
  access: AccessConfig;
}
