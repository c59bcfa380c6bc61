/**
 * The one upstream dialer every front-end uses: resolve → check access → connect
 * (happy eyeballs, RFC 8305) → record socket facts.
 *
 * MPTCP: in `auto` and `on` modes the socket is an MPTCP socket. Against a server
 * without MPTCP the kernel falls back to plain TCP inside the same handshake
 * (RFC 8684 §3.7), so `auto` costs nothing extra; it only differs from `on` when this
 * host cannot create MPTCP sockets at all, where `auto` quietly uses TCP.
 *
 * connectNow: for an IP literal, the same access check, MPTCP decision and source binding, with
 * connect(2) issued synchronously on a raw fd that the native relay engine completes (see
 * src/relay/native-relay.ts connectingRelay). It skips what costs the async dial its ≈45 µs
 * before connect(2): the AbortController and promise hops, the deadline timer, `new net.Socket`
 * and Node deferring connect(2) to process.nextTick.
 *
 * sendFirst: the same synchronous connect(2) for a caller that writes at once (the HTTP
 * forward's request head): the fd is wrapped for Node still connecting, with the bytes queued
 * on it, so they leave when the handshake ends without waiting for JS to hear 'connect'.
 *
 * connectEarly: the same connect(2), started before the request is parsed (the HTTP front-end,
 * from a peek at a new client's request line), and sent on later as sendFirst does.
 */
import { Socket, isIP } from 'node:net';
import { lookup } from 'node:dns/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import type { ConnectionContext, Endpoint, SocketFacts } from '../core/context.js';
import { AccessDeniedError, ErrorCode, MptcpUnavailableError, UpstreamError, isSystemError, type TargetAddress } from '../core/errors.js';
import type { Logger } from '../core/logger.js';
import { publishDialError, publishUpstreamConnected } from '../core/channels.js';
import type { AccessPolicy } from '../access/types.js';
import type { UpstreamConfig } from '../config/types.js';
import { NativeAddonUnavailableError, connectMptcp, isMptcpSocket, loadNative, mptcpSupport, type MptcpNative } from '../mptcp/index.js';
import { toUpstreamError } from './errno-map.js';
import type { Dial, DialOptions, EarlyConnect, EngineDialPlan, PendingConnect } from './types.js';

interface ResolvedAddress {
  address: string;
  family: 4 | 6;
}

/** getaddrinfo-shaped lookup; injectable so tests can resolve names without a network. */
export type LookupAll = (host: string) => Promise<Array<{ address: string; family: number }>>;

const systemLookup: LookupAll = (host) => lookup(host, { all: true, verbatim: true });

export interface DialerOptions {
  lookup?: LookupAll;
}

export function createDialer(cfg: UpstreamConfig, access: AccessPolicy, log: Logger, options: DialerOptions = {}): Dial {
  const useMptcp = decideMptcp(cfg, log);
  const lookupAll = options.lookup ?? systemLookup;

  const dial: Dial = async function dial(target: TargetAddress, ctx: ConnectionContext, opts: DialOptions = {}): Promise<Socket> {
    const started = performance.now();
    try {
      // 1. resolve (IP literals skip DNS)
      const addresses = await resolve(lookupAll, target, cfg.dnsTimeoutMs, opts.signal);
      // 2. access check on every resolved address: a name must not smuggle a denied IP
      const allowed = filterAllowed(target, addresses, access);
      // 3. connect, racing addresses RFC 8305-style, under one overall deadline
      // The front-end's signal (its client left) or the proxy cutting the connection. Both
      // are watched directly: AbortSignal.any() builds a third signal per dial and registers
      // it with both sources, which showed up at ≈3% of the proxy's CPU in a connection-rate
      // profile.
      const signals = opts.signal ? [opts.signal, ctx.signal] : [ctx.signal];
      const socket = await connectFirst(target, allowed, cfg, useMptcp, signals);
      // 4. facts
      ctx.upstream = socketFacts(socket, useMptcp);
      publishUpstreamConnected({ ctx, connectMs: performance.now() - started });
      return socket;
    } catch (err) {
      const error = err instanceof AccessDeniedError ? err : toUpstreamError(err, target);
      publishDialError({ ctx, error });
      throw error;
    }
  };
  // Names need DNS and happy eyeballs; SO_BINDTODEVICE stays with connectMptcp (one place).
  if (!cfg.bindInterface) {
    dial.connectNow = (target, ctx) => connectNow(target, ctx, cfg, access, useMptcp);
    dial.sendFirst = (target, ctx, first, opts = {}) => sendFirst(target, ctx, first, opts, cfg, access, useMptcp);
    dial.connectEarly = (target) => connectEarly(target, cfg, access, useMptcp);
    dial.adoptEarly = (fd, target, local) => adoptEarly(fd, target, local, cfg, useMptcp);
    dial.planInEngine = (target) => planInEngine(target, cfg, access, useMptcp);
    dial.planInEngineAnyTarget = () => enginePlan(undefined, cfg, access, useMptcp);
  }
  return dial;
}

/** The addon, or undefined without it (then the async dial still works: plain TCP through Node). */
function nativeOrUndefined(): MptcpNative | undefined {
  try {
    return loadNative();
  } catch (err) {
    if (err instanceof NativeAddonUnavailableError) return undefined;
    throw err;
  }
}

/**
 * Steps 2–3 of the dial for one IP literal, synchronously: the access check, socket, options,
 * bind, non-blocking connect(2) — and half of step 4: connect(2) itself picks the source address
 * and port (tcp_v4_connect / inet_hash_connect; an MPTCP socket copies its first subflow's), so
 * getsockname is exact now, and must be read now: once handed over, the fd may be closed (and its
 * number reused) before its connect is reported. On a throw the fd is closed and the error is
 * the dial's, published as dial:error on `ctx` (none: connectEarly, which reports nothing).
 */
function connectSync(native: MptcpNative, target: TargetAddress, family: 4 | 6, ctx: ConnectionContext | undefined, cfg: UpstreamConfig, access: AccessPolicy, useMptcp: boolean): { fd: number; local: Endpoint } {
  let fd: number | undefined;
  try {
    filterAllowed(target, [{ address: target.host, family }], access);
    fd = native.socket(family, useMptcp);
    setNoDelay(native, fd, useMptcp);
    if (cfg.bindAddress) native.bind(fd, cfg.bindAddress, 0);
    native.connect(fd, target.host, target.port);
    return { fd, local: localOf(native, fd) };
  } catch (err) {
    if (fd !== undefined) native.close(fd);
    const error = err instanceof AccessDeniedError ? err : toUpstreamError(err, target);
    if (ctx !== undefined) publishDialError({ ctx, error });
    throw error;
  }
}

/** Dial.connectNow (see the header): undefined for a name or without the addon. */
function connectNow(target: TargetAddress, ctx: ConnectionContext, cfg: UpstreamConfig, access: AccessPolicy, useMptcp: boolean): PendingConnect | undefined {
  const family = isIP(target.host);
  if (family !== 4 && family !== 6) return undefined;
  const native = nativeOrUndefined();
  if (native === undefined) return undefined;
  const started = performance.now();
  const { fd, local } = connectSync(native, target, family, ctx, cfg, access, useMptcp);
  const issued = performance.now();
  return {
    fd,
    timeoutMs: cfg.connectTimeoutMs,
    plainTcp: !useMptcp,
    connected(connectMs, mptcp) {
      // 4. the rest of the facts: MPTCP or not is only known after the handshake (fallback)
      engineConnected(ctx, target, local, useMptcp && mptcp, issued - started + connectMs);
    },
    failed: (err, timedOut) => engineConnectFailed(ctx, target, err, timedOut, cfg),
    close() {
      native.close(fd);
    },
  };
}

/**
 * Dial.sendFirst (see types.ts): undefined for a name or without the addon. The fd is wrapped
 * for Node while its handshake is still on: a write on a socket in SYN-SENT gets EAGAIN, so
 * libuv queues `first` and writes it from its own poll callback when the socket turns writable
 * (the handshake done), with no JS in between; a refused or reset handshake fails that write
 * (ECONNREFUSED...), which is mapped as the connect's failure it is.
 */
function sendFirst(target: TargetAddress, ctx: ConnectionContext, first: Buffer, opts: DialOptions, cfg: UpstreamConfig, access: AccessPolicy, useMptcp: boolean): Promise<Socket> | undefined {
  const family = isIP(target.host);
  if (family !== 4 && family !== 6) return undefined;
  const native = nativeOrUndefined();
  if (native === undefined) return undefined;
  const started = performance.now();
  let c: { fd: number; local: Endpoint };
  try {
    c = connectSync(native, target, family, ctx, cfg, access, useMptcp);
  } catch (err) {
    return Promise.reject(err);
  }
  return sendOnConnecting(native, c.fd, c.local, started, target, ctx, first, opts, cfg, useMptcp);
}

/**
 * Dial.connectEarly (see types.ts): connectSync's steps without a context to report to, so a
 * denied destination or a connect(2) that fails at once is a quiet undefined (the request's own
 * dial, if it comes, meets the same answer and reports it).
 */
function connectEarly(target: TargetAddress, cfg: UpstreamConfig, access: AccessPolicy, useMptcp: boolean): EarlyConnect | undefined {
  const family = isIP(target.host);
  if (family !== 4 && family !== 6) return undefined;
  const native = nativeOrUndefined();
  if (native === undefined) return undefined;
  const started = performance.now();
  try {
    const { fd, local } = connectSync(native, target, family, undefined, cfg, access, useMptcp);
    return earlyConnectOn(native, fd, local, started, target, cfg, useMptcp);
  } catch {
    return undefined;
  }
}

/** Dial.adoptEarly (see types.ts): the engine's early connect, as connectEarly's. */
function adoptEarly(fd: number, target: TargetAddress, local: Endpoint, cfg: UpstreamConfig, useMptcp: boolean): EarlyConnect | undefined {
  const native = nativeOrUndefined();
  if (native === undefined) return undefined;
  return earlyConnectOn(native, fd, local, performance.now(), target, cfg, useMptcp);
}

/** An EarlyConnect over `fd`, whose connect(2) to `target` was issued at `started`. */
function earlyConnectOn(native: MptcpNative, fd: number, local: Endpoint, started: number, target: TargetAddress, cfg: UpstreamConfig, useMptcp: boolean): EarlyConnect {
  let used = false;
  return {
    target,
    startedAt: started,
    send(ctx, first, opts = {}) {
      if (used) return Promise.reject(new Error('an early connect is sent on once'));
      used = true;
      return sendOnConnecting(native, fd, local, started, target, ctx, first, opts, cfg, useMptcp);
    },
    cancel() {
      if (used) return;
      used = true;
      native.close(fd);
    },
    takePending(ctx) {
      if (used) return undefined;
      used = true;
      const elapsed = performance.now() - started;
      return {
        fd,
        timeoutMs: Math.max(1, cfg.connectTimeoutMs - elapsed),
        plainTcp: !useMptcp,
        connected(connectMs, mptcp) {
          // connectMs counts from the hand-over; the connect began `elapsed` before it.
          engineConnected(ctx, target, local, useMptcp && mptcp, elapsed + connectMs);
        },
        failed: (err, timedOut) => engineConnectFailed(ctx, target, err, timedOut, cfg),
        close() {
          native.close(fd);
        },
      };
    },
  };
}

/**
 * The second half of sendFirst and EarlyConnect.send: wraps the fd whose connect(2) was issued at
 * `started` and writes `first` on it (see sendFirst), under what is left of connectTimeoutMs.
 * Resolves once `first` is written, with the facts recorded and upstream:connected published;
 * rejects with the dial's error, published as dial:error.
 */
function sendOnConnecting(native: MptcpNative, fd: number, local: Endpoint, started: number, target: TargetAddress, ctx: ConnectionContext, first: Buffer, opts: DialOptions, cfg: UpstreamConfig, useMptcp: boolean): Promise<Socket> {
  let socket: Socket;
  try {
    socket = new Socket({ fd, readable: true, writable: true, allowHalfOpen: true });
  } catch (err) {
    native.close(fd);
    return Promise.reject(engineConnectFailed(ctx, target, err, false, cfg));
  }
  const signals = opts.signal ? [opts.signal, ctx.signal] : [ctx.signal];
  return new Promise<Socket>((resolvePromise, reject) => {
    let settled = false;
    const finish = (err: unknown, timedOut = false): void => {
      if (settled) return;
      settled = true;
      clearTimeout(deadline);
      for (const signal of signals) signal.removeEventListener('abort', onAbort);
      if (err === undefined || err === null) {
        socket.off('error', finish);
        // 4. the rest of the facts: MPTCP or not is only known after the handshake (fallback)
        engineConnected(ctx, target, local, useMptcp && isMptcpSocket(socket), performance.now() - started);
        resolvePromise(socket);
        return;
      }
      // The write's failure is also emitted as 'error' (after this callback): keep a listener.
      socket.on('error', () => {});
      socket.destroy();
      if (err instanceof UpstreamError) {
        publishDialError({ ctx, error: err }); // the abort: already the dial's error
        reject(err);
      } else {
        reject(engineConnectFailed(ctx, target, err, timedOut, cfg));
      }
    };
    const onAbort = (): void => finish(dialAborted(target));
    const left = Math.max(0, cfg.connectTimeoutMs - (performance.now() - started));
    const deadline = setTimeout(() => finish(new Error('connect timed out'), true), left);
    socket.on('error', finish);
    if (signals.some((signal) => signal.aborted)) return onAbort();
    for (const signal of signals) signal.addEventListener('abort', onAbort, { once: true });
    socket.write(first, (err) => finish(err));
  });
}

/** Dial.planInEngine (see types.ts): undefined for a name; the access check once, now. */
function planInEngine(target: TargetAddress, cfg: UpstreamConfig, access: AccessPolicy, useMptcp: boolean): EngineDialPlan | undefined {
  const family = isIP(target.host);
  if (family !== 4 && family !== 6) return undefined;
  filterAllowed(target, [{ address: target.host, family }], access);
  return enginePlan(target, cfg, access, useMptcp);
}

/** The plan's bookkeeping works on ctx.target: the fixed target, or each connection's own. */
function enginePlan(fixed: TargetAddress | undefined, cfg: UpstreamConfig, access: AccessPolicy, useMptcp: boolean): EngineDialPlan {
  const targetOf = (ctx: ConnectionContext): TargetAddress => ctx.target ?? fixed ?? { host: '', port: 0 };
  return {
    ...(fixed ? { address: fixed.host, port: fixed.port } : {}),
    mptcp: useMptcp,
    ...(cfg.bindAddress ? { bindAddress: cfg.bindAddress } : {}),
    connectTimeoutMs: cfg.connectTimeoutMs,
    connected: (ctx, connectMs, mptcp, local) => engineConnected(ctx, targetOf(ctx), local, useMptcp && mptcp, connectMs),
    reused: (ctx, mptcp, local) => recordEngineUpstream(ctx, targetOf(ctx), local, useMptcp && mptcp),
    failed: (ctx, err, timedOut) => engineConnectFailed(ctx, targetOf(ctx), err, timedOut, cfg),
    denied(ctx, engineRule) {
      const t = targetOf(ctx);
      let error: AccessDeniedError;
      try {
        filterAllowed(t, [{ address: t.host, family: isIP(t.host) === 6 ? 6 : 4 }], access);
        // The policy allows it now (an address that stopped being local since?): the connection
        // was refused either way; say by which rule.
        error = new AccessDeniedError(ErrorCode.ACCESS_DENIED, engineRule, `destination ${t.host}:${t.port} denied by rule ${engineRule} (the engine's check)`);
      } catch (err) {
        error = err as AccessDeniedError;
      }
      publishDialError({ ctx, error });
      return error;
    },
  };
}

/** A dial given up because its signal fired (the client left, or the proxy cut the connection). */
function dialAborted(target: TargetAddress): UpstreamError {
  return new UpstreamError(ErrorCode.CONNECT_TIMEOUT, target, 'dial aborted: the client went away');
}

/** A connect the engine completed: the upstream's facts into ctx, then upstream:connected. */
function engineConnected(ctx: ConnectionContext, target: TargetAddress, local: Endpoint, mptcp: boolean, connectMs: number): void {
  recordEngineUpstream(ctx, target, local, mptcp);
  publishUpstreamConnected({ ctx, connectMs });
}

/** ctx.upstream for an upstream the engine holds to `target` (connected, or taken from its pool). */
function recordEngineUpstream(ctx: ConnectionContext, target: TargetAddress, local: Endpoint, mptcp: boolean): void {
  ctx.upstream = { remote: { address: target.host, port: target.port }, local, mptcp };
}

/** A connect the engine could not complete: the error the async dial would have rejected
 *  with, published as dial:error. */
function engineConnectFailed(ctx: ConnectionContext, target: TargetAddress, err: unknown, timedOut: boolean, cfg: UpstreamConfig): UpstreamError {
  const error = timedOut
    ? new UpstreamError(ErrorCode.CONNECT_TIMEOUT, target, `connect took longer than ${cfg.connectTimeoutMs} ms`, { cause: err })
    : toUpstreamError(err, target);
  publishDialError({ ctx, error });
  return error;
}

/** Whether upstream sockets are MPTCP, decided once at start-up from the mode and the kernel. */
function decideMptcp(cfg: UpstreamConfig, log: Logger): boolean {
  if (cfg.mptcp === 'off') return false;
  const support = mptcpSupport();
  if (support.available) return true;
  if (cfg.mptcp === 'on') {
    throw new MptcpUnavailableError(`upstream.mptcp is "on" but ${support.reason ?? 'MPTCP is unavailable'}; set upstream.mptcp to "auto" to fall back to TCP`);
  }
  log.warn('upstream MPTCP unavailable, dialing plain TCP', { reason: support.reason });
  return false;
}

async function resolve(lookupAll: LookupAll, target: TargetAddress, timeoutMs: number, signal?: AbortSignal): Promise<ResolvedAddress[]> {
  const family = isIP(target.host);
  if (family === 4 || family === 6) return [{ address: target.host, family }];
  const ac = new AbortController();
  const onAbort = () => ac.abort();
  signal?.addEventListener('abort', onAbort, { once: true });
  try {
    // getaddrinfo cannot be cancelled; the race only stops us waiting for it.
    const result = await Promise.race([
      lookupAll(target.host),
      sleep(timeoutMs, undefined, { signal: ac.signal }).then(() => {
        throw new UpstreamError(ErrorCode.DNS_TIMEOUT, target, `name lookup took longer than ${timeoutMs} ms`);
      }),
    ]);
    if (result.length === 0) throw new UpstreamError(ErrorCode.DNS_NOT_FOUND, target, 'name has no addresses');
    return interleaveFamilies(result.map((r) => ({ address: r.address, family: r.family === 6 ? 6 : 4 })));
  } finally {
    ac.abort();
    signal?.removeEventListener('abort', onAbort);
  }
}

/** RFC 8305 §4: alternate address families, starting with the resolver's first choice. */
export function interleaveFamilies(addrs: ResolvedAddress[]): ResolvedAddress[] {
  if (addrs.length < 2) return addrs;
  const firstFamily = addrs[0]!.family;
  const a = addrs.filter((x) => x.family === firstFamily);
  const b = addrs.filter((x) => x.family !== firstFamily);
  const out: ResolvedAddress[] = [];
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    if (a[i]) out.push(a[i]!);
    if (b[i]) out.push(b[i]!);
  }
  return out;
}

function filterAllowed(target: TargetAddress, addrs: ResolvedAddress[], access: AccessPolicy): ResolvedAddress[] {
  let firstDenial: { rule: string; reason?: string } | undefined;
  const allowed = addrs.filter((a) => {
    const d = access.checkDestination(target, a.address);
    if (!d.allowed) firstDenial ??= d;
    return d.allowed;
  });
  if (allowed.length === 0) {
    const d = firstDenial!;
    throw new AccessDeniedError(ErrorCode.ACCESS_DENIED, d.rule, `destination ${target.host}:${target.port} denied by rule ${d.rule}${d.reason ? `: ${d.reason}` : ''}`);
  }
  return allowed;
}

function openSocket(addr: ResolvedAddress, port: number, cfg: UpstreamConfig, mptcp: boolean): Socket {
  if (!mptcp && !cfg.bindInterface) {
    const s = new Socket({ allowHalfOpen: true });
    s.connect({ host: addr.address, port, ...(cfg.bindAddress ? { localAddress: cfg.bindAddress } : {}) });
    return s;
  }
  const s = connectMptcp({
    host: addr.address,
    port,
    mptcp,
    ...(cfg.bindAddress ? { localAddress: cfg.bindAddress } : {}),
    ...(cfg.bindInterface ? { bindInterface: cfg.bindInterface } : {}),
  });
  // The relay passes FINs on one direction at a time; Node must not end our side for us.
  s.allowHalfOpen = true;
  return s;
}

/**
 * Starts an attempt on the first address, then one more every happyEyeballsDelayMs
 * (or as soon as the previous attempt fails); the first to connect wins and the others
 * are destroyed. All of it under cfg.connectTimeoutMs.
 */
function connectFirst(target: TargetAddress, addrs: ResolvedAddress[], cfg: UpstreamConfig, mptcp: boolean, signals: readonly AbortSignal[]): Promise<Socket> {
  return new Promise<Socket>((resolvePromise, reject) => {
    const attempts = new Set<Socket>();
    let next = 0;
    let lastError: unknown;
    let settled = false;
    let stagger: NodeJS.Timeout | undefined;

    const finish = (err: unknown, winner?: Socket) => {
      if (settled) return;
      settled = true;
      clearTimeout(deadline);
      clearTimeout(stagger);
      for (const signal of signals) signal.removeEventListener('abort', onAbort);
      for (const s of attempts) if (s !== winner) s.destroy();
      attempts.clear();
      if (winner) resolvePromise(winner);
      else reject(err);
    };
    const onAbort = () => finish(dialAborted(target));
    const deadline = setTimeout(
      () => finish(new UpstreamError(ErrorCode.CONNECT_TIMEOUT, target, `connect took longer than ${cfg.connectTimeoutMs} ms`)),
      cfg.connectTimeoutMs,
    );

    const startNext = () => {
      clearTimeout(stagger);
      if (settled || next >= addrs.length) return;
      const addr = addrs[next++]!;
      let s: Socket;
      try {
        s = openSocket(addr, target.port, cfg, mptcp);
      } catch (err) {
        lastError = err;
        if (attempts.size === 0 && next >= addrs.length) finish(err);
        else startNext();
        return;
      }
      attempts.add(s);
      s.once('connect', () => {
        s.removeAllListeners('error');
        finish(undefined, s);
      });
      s.once('error', (err) => {
        attempts.delete(s);
        s.destroy();
        lastError = err;
        if (attempts.size === 0 && next >= addrs.length) finish(lastError);
        else startNext();
      });
      if (next < addrs.length) stagger = setTimeout(startNext, cfg.happyEyeballsDelayMs);
    };
    if (signals.some((signal) => signal.aborted)) {
      onAbort();
      return;
    }
    for (const signal of signals) signal.addEventListener('abort', onAbort, { once: true });
    startNext();
  });
}

/** TCP_NODELAY, as socketFacts() sets it on the async dial's sockets (whose setNoDelay ignores
 *  failures). Kernels before 5.19 refuse it on MPTCP sockets: that is not worth a failed dial. */
function setNoDelay(native: MptcpNative, fd: number, mptcp: boolean): void {
  const c = native.constants;
  try {
    native.setIntOption(fd, c.IPPROTO_TCP, c.TCP_NODELAY, 1);
  } catch (err) {
    if (!(mptcp && isSystemError(err) && (err.code === 'ENOPROTOOPT' || err.code === 'EOPNOTSUPP'))) throw err;
  }
}

function localOf(native: MptcpNative, fd: number): Endpoint {
  const a = native.localAddress(fd);
  return a === null ? { address: '', port: 0 } : { address: a.address, port: a.port };
}

function socketFacts(s: Socket, mptcpSocket: boolean): SocketFacts {
  s.setNoDelay(true);
  return {
    remote: { address: s.remoteAddress ?? '', port: s.remotePort ?? 0 },
    local: { address: s.localAddress ?? '', port: s.localPort ?? 0 },
    // A fallen-back MPTCP socket reports false here, so this says what the wire carries.
    mptcp: mptcpSocket ? isMptcpSocket(s) : false,
  };
}
