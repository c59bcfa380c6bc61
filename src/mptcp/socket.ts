/**
 * MPTCP listeners and client sockets as ordinary `net.Server` / `net.Socket` objects.
 *
 * Node cannot create an IPPROTO_MPTCP socket, but it adopts any stream-socket fd: the
 * addon creates and binds the fd, and Node takes it over (`server.listen({ fd })`,
 * `new net.Socket({ fd })`). After the hand-over Node owns the fd and closes it; before
 * it, every failure path here closes it.
 */
import * as net from 'node:net';
import type { ListenerMptcpMode } from '../config/types.js';
import { ErrorCode, MptcpUnavailableError, ProxyError, isSystemError } from '../core/errors.js';
import { NativeAddonUnavailableError, loadNative, type MptcpNative } from './native.js';
import { mptcpSupport } from './support.js';

export interface SocketAddress {
  address: string;
  port: number;
}

/**
 * socket(IPPROTO_MPTCP) errnos that mean "this host cannot do MPTCP" (see support.ts);
 * mode 'auto' answers them with plain TCP. EINVAL is what some sandboxes (gVisor) and
 * very old kernels return for an unknown protocol number.
 */
const MPTCP_UNAVAILABLE_CODES = new Set(['EPROTONOSUPPORT', 'ENOPROTOOPT', 'EINVAL', 'ESOCKTNOSUPPORT', 'EPERM', 'EACCES']);

function isMptcpUnavailable(err: unknown): boolean {
  return err instanceof NativeAddonUnavailableError || (isSystemError(err) && MPTCP_UNAVAILABLE_CODES.has(err.code));
}

function unavailableError(cause: unknown): MptcpUnavailableError {
  const support = mptcpSupport();
  const why = support.reason ?? (cause instanceof Error ? cause.message : String(cause));
  return new MptcpUnavailableError(`MPTCP is not available: ${why}`, { cause });
}

function familyOf(host: string): 4 | 6 {
  const family = net.isIP(host);
  if (family === 0) {
    throw Object.assign(new TypeError(`MPTCP sockets need an IP literal, got "${host}"`), { code: 'ERR_INVALID_IP_ADDRESS' });
  }
  return family === 6 ? 6 : 4;
}

/** The fd behind a socket's libuv handle; throws when there is none (not yet connected, destroyed). */
export function socketFd(socket: net.Socket): number {
  // `_handle.fd` is not in @types/node but is how Node itself exposes the fd (net.js).
  const handle = (socket as net.Socket & { _handle?: { fd?: number } | null })._handle;
  const fd = handle?.fd;
  if (typeof fd !== 'number' || fd < 0) {
    throw Object.assign(new Error('socket has no file descriptor (not yet open, or already destroyed)'), { code: 'ERR_SOCKET_CLOSED' });
  }
  return fd;
}

/**
 * The bytes a socket has received and Node has not read yet, copied into `buffer` without
 * consuming them (recv MSG_PEEK): Node still reads them as usual. Empty when none have arrived,
 * and when the addon cannot peek (absent, or built before peek). Never throws: a socket error
 * is Node's to report when it reads.
 */
export function peekReceived(socket: net.Socket, buffer: Buffer): Buffer {
  try {
    const native = loadNative();
    if (native.peek === undefined) return buffer.subarray(0, 0);
    return buffer.subarray(0, native.peek(socketFd(socket), buffer));
  } catch {
    return buffer.subarray(0, 0);
  }
}

/** Run `setup` on a new fd; close the fd if it throws, so no path leaks it. */
function withNewFd(native: MptcpNative, fd: number, setup: (fd: number) => void): number {
  try {
    setup(fd);
    return fd;
  } catch (err) {
    native.close(fd);
    throw err;
  }
}

export interface ListenMptcpOptions {
  host: string;
  port: number;
  backlog?: number;
  /** SO_REUSEPORT: several processes share the port (the kernel spreads connections). */
  reusePort?: boolean;
  /** IP_TRANSPARENT (and IPV6_TRANSPARENT): accept connections that nftables/iptables TPROXY
   *  delivers with a foreign destination address. Needs CAP_NET_ADMIN. */
  transparent?: boolean;
  mode: ListenerMptcpMode;
}

export interface ListenMptcpResult {
  /** True when the listening socket is MPTCP (plain-TCP clients still work: per-connection fallback). */
  mptcp: boolean;
  address: SocketAddress;
  /** TCP_NODELAY is set on the listening socket, so accepted sockets have it already (TCP and
   *  MPTCP copy it into the accepted socket): no setsockopt per connection is needed. */
  noDelayInherited: boolean;
}

function waitListening(server: net.Server, start: () => void): Promise<SocketAddress> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error): void => {
      server.off('listening', onListening);
      reject(err);
    };
    const onListening = (): void => {
      server.off('error', onError);
      const a = server.address();
      if (a === null || typeof a === 'string') {
        reject(new Error(`listener has no TCP address (${String(a)})`));
        return;
      }
      resolve({ address: a.address, port: a.port });
    };
    server.once('error', onError);
    server.once('listening', onListening);
    start();
  });
}

/** Plain TCP. `reusePort` is honoured by Node ≥ 22.12 and ignored by Node 20's listen(). */
function listenPlain(server: net.Server, opts: ListenMptcpOptions): Promise<SocketAddress> {
  return waitListening(server, () =>
    server.listen({ host: opts.host, port: opts.port, backlog: opts.backlog ?? 511, exclusive: !opts.reusePort, reusePort: opts.reusePort ?? false } as net.ListenOptions),
  );
}

/** Configure, bind and listen a new MPTCP fd. Throws with the fd closed. */
function setUpListenFd(native: MptcpNative, fd: number, opts: ListenMptcpOptions, family: 4 | 6): number {
  const c = native.constants;
  return withNewFd(native, fd, () => {
    if (family === 6) {
      // '::' must also accept IPv4 clients (as Node's own listen does); the default
      // depends on net.ipv6.bindv6only, so say it explicitly. MPTCP passes IPV6_V6ONLY
      // on to its subflows (net/mptcp/sockopt.c mptcp_setsockopt_v6).
      native.setIntOption(fd, c.IPPROTO_IPV6, c.IPV6_V6ONLY, 0);
    }
    native.setIntOption(fd, c.SOL_SOCKET, c.SO_REUSEADDR, 1);
    if (opts.reusePort) native.setIntOption(fd, c.SOL_SOCKET, c.SO_REUSEPORT, 1);
    if (opts.transparent) {
      // Both levels on a dual-stack socket: TPROXY may deliver IPv4 and IPv6 connections.
      // MPTCP accepts these options on the listener (net/mptcp/sockopt.c).
      native.setIntOption(fd, c.IPPROTO_IP, c.IP_TRANSPARENT, 1);
      if (family === 6) native.setIntOption(fd, c.IPPROTO_IPV6, c.IPV6_TRANSPARENT, 1);
    }
    // Inherited by every accepted socket: saves Node's setNoDelay (a setsockopt) per connection.
    native.setIntOption(fd, c.IPPROTO_TCP, c.TCP_NODELAY, 1);
    try {
      native.bind(fd, opts.host, opts.port);
      native.listen(fd, opts.backlog ?? 511);
    } catch (err) {
      // Node's own listen errors name the address; the addon's syscall errors do not.
      throw Object.assign(err as Error, { address: opts.host, port: opts.port });
    }
  });
}

/**
 * Start `server` listening on an MPTCP socket (mode 'on'/'auto') or a plain one ('off').
 *
 * 'auto' listens on plain TCP when this host cannot create MPTCP sockets and reports
 * mptcp:false; 'on' rejects with MptcpUnavailableError naming what to enable. Bind and
 * listen failures reject with Node-shaped errors (code 'EADDRINUSE', errno, syscall 'bind',
 * address, port).
 * Port 0 works: the result carries the port the kernel chose.
 *
 * Known limit: a `node:cluster` worker cannot listen on an fd (the primary would
 * receive the fd number of another process); run separate processes with reusePort.
 */
export async function listenMptcp(server: net.Server, opts: ListenMptcpOptions): Promise<ListenMptcpResult> {
  // Socket options Node's listen() cannot set (IP_TRANSPARENT; SO_REUSEPORT before Node 22.12)
  // need our own fd even for plain TCP; without them and without the addon, Node's listen does.
  const needsOwnFd = opts.transparent === true || opts.reusePort === true;
  if (opts.mode === 'off' && !needsOwnFd) return { mptcp: false, address: await listenPlain(server, opts), noDelayInherited: false };

  const family = familyOf(opts.host);
  let native: MptcpNative;
  try {
    native = loadNative();
  } catch (err) {
    if (opts.mode === 'on') throw unavailableError(err);
    if (needsOwnFd) throw err;
    return { mptcp: false, address: await listenPlain(server, opts), noDelayInherited: false };
  }
  let fd: number | undefined;
  if (opts.mode !== 'off') {
    try {
      fd = native.socket(family, true);
    } catch (err) {
      if (!isMptcpUnavailable(err)) throw err;
      if (opts.mode === 'on') throw unavailableError(err);
      // 'auto': plain TCP below.
    }
  }
  const mptcp = fd !== undefined;
  fd ??= native.socket(family, false);
  // Failures from here (EADDRINUSE, EACCES...) are the ones plain TCP would hit too: no fallback.
  setUpListenFd(native, fd, opts, family);
  // From here Node owns the fd: on a listen error it closes its handle (net.js setupListenHandle).
  const ownFd = fd;
  // The backlog goes as listen()'s second argument: for `{ fd }` Node ignores options.backlog and
  // listens again with 511 (net.js passes only backlogFromArgs), which undid native.listen's.
  const address = await waitListening(server, () => server.listen({ fd: ownFd }, opts.backlog ?? 511));
  return { mptcp, address, noDelayInherited: true };
}

export interface ConnectMptcpOptions {
  /** IP literal; resolve names first (the dialer does). */
  host: string;
  port: number;
  /** Source address (IP literal) to bind before connecting. */
  localAddress?: string;
  /** SO_BINDTODEVICE: leave through this interface (needs CAP_NET_RAW). */
  bindInterface?: string;
  /** true: IPPROTO_MPTCP (the kernel falls back to TCP in the handshake if the server lacks MPTCP). */
  mptcp: boolean;
}

/**
 * Open a client connection on an MPTCP (or plain TCP) socket. Returns a `net.Socket`
 * that emits 'connect' / 'error' (ECONNREFUSED, ETIMEDOUT...) exactly like `net.connect`.
 *
 * Throws synchronously when the local socket cannot be set up: MPTCP unavailable
 * (code EPROTONOSUPPORT / ENOPROTOOPT, syscall 'socket(IPPROTO_MPTCP)'), a bad local
 * address or interface (bind / setsockopt(SO_BINDTODEVICE)). The fd is closed then.
 *
 * How the connect works (verified on Node 20): `new net.Socket({ fd })` wraps the fd in
 * a TCPWrap (uv_tcp_open), and `.connect()` reuses that handle — libuv's uv_tcp_connect
 * sees the fd already exists and just calls connect(2) on it, non-blocking, reporting
 * completion through the usual 'connect'/'error'. The constructor starts reading the
 * still-unconnected socket, which is harmless: for an IP literal Node issues connect(2)
 * from process.nextTick, before the event loop ever polls the fd.
 */
export function connectMptcp(opts: ConnectMptcpOptions): net.Socket {
  const family = familyOf(opts.host);
  const native = loadNative();
  const c = native.constants;
  const fd = withNewFd(native, native.socket(family, opts.mptcp), (fd) => {
    if (opts.bindInterface !== undefined) native.setStringOption(fd, c.SOL_SOCKET, c.SO_BINDTODEVICE, opts.bindInterface);
    if (opts.localAddress !== undefined) native.bind(fd, opts.localAddress, 0);
  });
  let socket: net.Socket;
  try {
    socket = new net.Socket({ fd, readable: true, writable: true });
  } catch (err) {
    native.close(fd);
    throw err;
  }
  return socket.connect({ host: opts.host, port: opts.port });
}

/** How intercepted traffic reached the listener (config: transparent listener `mode`). */
export type InterceptMode = 'redirect' | 'tproxy';

/**
 * Where a transparently intercepted client wanted to go.
 *
 * 'tproxy': TPROXY rewrites nothing, so the accepted socket's local address *is* the
 * original destination (the listener needs IP_TRANSPARENT); no syscall beyond getsockname.
 *
 * 'redirect' (REDIRECT/DNAT): netfilter rewrote the destination and conntrack keeps the
 * original, read with SO_ORIGINAL_DST (IPv4) / IP6T_SO_ORIGINAL_DST (IPv6). ENOENT means
 * conntrack has no NAT entry: the client addressed us directly, and our own address is
 * returned (the caller's access policy must refuse connecting to itself).
 *
 * Verified on Linux 6.18: on an MPTCP socket that has not fallen back, the kernel does
 * not forward SOL_IP/SOL_IPV6 getsockopts to the subflow (net/mptcp/sockopt.c
 * mptcp_getsockopt_v4 knows only IP_TOS and a few others) and answers EOPNOTSUPP, so
 * REDIRECT cannot serve MPTCP clients; that becomes a ProxyError NOT_SUPPORTED telling
 * the user to use TPROXY. Fallen-back (plain TCP) clients work with REDIRECT.
 */
export function originalDestination(socket: net.Socket, mode: InterceptMode = 'redirect'): SocketAddress {
  const native = loadNative();
  const fd = socketFd(socket);
  const local = native.localAddress(fd);
  if (local === null) throw Object.assign(new Error('socket has no local address'), { code: 'ERR_SOCKET_CLOSED' });
  if (mode === 'tproxy') return { address: local.address, port: local.port };
  // An IPv4 client on a dual-stack listener is an IPv4 conntrack entry.
  const v4 = local.family === 4 || local.address.startsWith('::ffff:');
  try {
    const dst = native.originalDestination(fd, v4 ? 4 : 6);
    if (dst !== null) return { address: dst.address, port: dst.port };
  } catch (err) {
    if (isSystemError(err) && err.code === 'EOPNOTSUPP') {
      throw new ProxyError(
        ErrorCode.NOT_SUPPORTED,
        'internal',
        'cannot read the original destination of an MPTCP connection redirected by REDIRECT/DNAT (the kernel does not pass SO_ORIGINAL_DST to MPTCP subflows): use transparent mode "tproxy"',
        { cause: err },
      );
    }
    if (!(isSystemError(err) && err.code === 'ENOENT')) throw err;
  }
  return { address: local.address, port: local.port };
}
