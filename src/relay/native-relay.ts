/**
 * The native relay: the same contract as relayBothWays (./types.ts), with the bytes moved by
 * the addon's epoll engine (native/src/relay.c) in 1 MiB reads and writes instead of through
 * Node streams. Used for connections that need no inspection once the front-end is done.
 *
 * Handover, per connection:
 *   1. flush: wait until every write a front-end queued on either socket has reached the
 *      kernel (a SOCKS reply, an HTTP 200) — after the handover nobody could finish them;
 *   2. take the bytes Node already read but nobody consumed (socket.read() until null, paused)
 *      and send them first, behind the front-end's own heads;
 *   3. dup() both fds, hand the dups to the engine, then destroy the JS sockets. Destroying a
 *      net.Socket closes its fd and nothing more: net.Socket#_destroy → TCPWrap close →
 *      uv_close → uv__stream_close → uv__close(fd); no shutdown(), no SO_LINGER, so no FIN or
 *      RST — close(2) of one fd leaves a socket with another open fd untouched (close(2):
 *      "the underlying open file description is freed" only with its last descriptor).
 *   4. the engine's summary sets ctx.bytes and ctx.end and resolves the promise.
 *
 * What the JS side loses by handing over, and how it is made up for: the listener samples the
 * client's MPTCP subflows on the downstream's 'end'/'finish' events, which a destroyed socket
 * never emits. So for an MPTCP downstream the subflows are sampled once at the handover (through
 * the JS socket, before it is destroyed), and the engine samples them again itself at the
 * client's EOF, at the shutdown of the client's sending half, or at the relay's end, whichever
 * comes first (relayStart's sampleDownstream), and reports that in its summary. No extra fd is
 * kept for it: 2 fds per relayed connection.
 *
 * Connecting upstreams (connectingRelay, used by tunnelTo for IP targets): the front-end
 * issues the upstream's connect(2) itself on a raw fd (the dialer's connectNow) and hands it to
 * the engine together with the just-accepted client, in the accept path, before any event loop
 * turn. The engine completes the connect (relayStart's connectTimeoutMs), reports it once
 * (onConnected → ctx.upstream, upstream:connected) and relays the bytes the client sent
 * meanwhile, so no JS runs between the upstream's SYN-ACK and the first byte going up.
 */
import type { Socket } from 'node:net';
import { recordSubflowSample, type ConnectionContext } from '../core/context.js';
import { ErrorCode } from '../core/errors.js';
import { loadNative, sampleSubflowsOfFd, socketFd, type MptcpNative, type SubflowSample } from '../mptcp/index.js';
import { relayBothWays } from './relay.js';
import type { Relay, RelayOptions, RelaySummary } from './types.js';
import { shareConnectionCounter } from '../core/ids.js';

/** What the engine reports when a relay ends (native/src/relay.c, ev_done_args; decodeRelaySummary). */
export interface NativeRelaySummary {
  id: number;
  fromDownstream: number;
  fromUpstream: number;
  endedBy: RelaySummary['endedBy'];
  durationMs: number;
  /** Set when a system call failed: negative like Node's (`-104`), with its name and call. */
  errno?: number;
  code?: string;
  syscall?: string;
  /** Why the proxy ended it: 'idle', 'aborted' (relayAbort) or 'engine-stopped'; or
   *  'connect-timeout' (with connectFailed, endedBy 'upstream', code ETIMEDOUT). */
  reason?: 'idle' | 'aborted' | 'engine-stopped' | 'connect-timeout' | 'denied';
  /** reason 'denied' (an acceptor's destination check): the rule, as AccessDecision.rule. */
  deniedBy?: string;
  /** A connecting upstream (connectTimeoutMs) failed its connect: syscall 'connect', the
   *  errno (ECONNREFUSED...) or ETIMEDOUT; the client was reset. */
  connectFailed?: true;
  /** The client's subflows as the engine sampled them (sampleDownstream, and still MPTCP then). */
  downstreamSubflows?: SubflowSample;
  /** The status of the response head the engine rewrote itself (options.responseVia). */
  httpStatus?: number;
  /** options.holdClient and HeadThen.Keep: fdDown, left open for the caller (see onKept). */
  keptFd?: number;
  /** An exchange relay (options.onResponseHead): its exchanges, as EngineExchangeEnd says. */
  exchanges?: EngineExchangeEnd;
}

/** One exchange of an engine relay, reported when the keep-alive loop moved past it
 *  (options.onExchange): its own bytes and duration. */
export interface EngineExchangeReport {
  /** A request the loop read (undefined for the relay's first: the caller has its own). */
  method?: string;
  target?: string;
  /** The response's status when the engine rewrote its head. */
  status?: number;
  fromDownstream: number;
  fromUpstream: number;
  durationMs: number;
}

/** How an exchange relay's exchanges stood at its end. */
export interface EngineExchangeEnd {
  /** Exchanges reported before (EngineExchangeReport). */
  reported: number;
  /** One more was under way or done but not reported (the relay ended with it). */
  open: boolean;
  /** That one's request, when the loop read it. */
  method?: string;
  target?: string;
}

/** The engine's one report that a connecting upstream finished its handshake. */
export interface NativeConnected {
  id: number;
  /** relayStart → handshake done, on the engine's clock. */
  connectMs: number;
  /** The upstream runs MPTCP (false for plain TCP and for an MPTCP socket that fell back). */
  mptcp: boolean;
}

export interface NativeRelayCounters {
  fromDownstream: number;
  fromUpstream: number;
}

/** What relayHeadDone does after writing its bytes to the client (native/src/engine.h). */
export const enum HeadThen {
  /** Relay the rest of the upstream's bytes as they come. */
  Relay = 0,
  /** Gather another head, starting with `carry` (after a 1xx interim response). */
  Again = 1,
  /** Nothing more from the upstream: the client gets a FIN after the bytes. */
  End = 2,
  /** Relay HeadDecision.keepBody more bytes, then keep the client open (a holdClient exchange:
   *  EngineExchangeOptions.onKept gets it once the upstream has closed). */
  Keep = 3,
  /** A closing client's response whose upstream was asked to stay (an exchange served from
   *  accept with the engine's upstream pool on): relay a body of HeadDecision.keepBody bytes
   *  (-1: chunked, its end found by the chunk framing) that starts with `carry`, then close the
   *  client. */
  Framed = 4,
}

/** relayStart's options (native/src/relay.c, "response-head hook"). */
export interface NativeRelayStartOptions {
  /** Bytes of fdDown's stream to drop before relaying it: a request head JS peeked and sends
   *  rewritten as headToUp. */
  skipDown?: number;
  /** The fds are the only ones open on their sockets, and non-blocking (an acceptor handed them
   *  over and Node never wrapped them): close() alone ends them. */
  soleOwner?: boolean;
  /** fdUp is an IPPROTO_TCP socket. */
  upPlainTcp?: boolean;
  /** With onResponseHead: the Via pseudonym with which the engine rewrites a plain response
   *  head itself (native/src/http-head.c, as rewrite.ts's buildDownstreamResponseHead for a
   *  client closed after it); onResponseHead gets only the others. The summary's httpStatus
   *  then says the status. */
  responseVia?: string;
  /** With responseVia: the request is a HEAD (its response has no body, whatever it says). */
  headRequest?: boolean;
  /** With holdClient and responseVia: the keep-alive loop (native/src/relay.c) — the upstream
   *  connection goes to this authority and was asked to stay open; later plain GETs to it are
   *  served on it in the engine, each reported to onExchange. */
  loopAuthority?: string;
  /** The loop's limits for a request head (the listener's maxHeaderBytes and maxHeaderCount). */
  loopMaxHeadBytes?: number;
  loopMaxFields?: number;
  /** How long the client may take to send its next request (keepAliveTimeoutMs). */
  loopIdleMs?: number;
  /** onExchange(method, target, status (0: not rewritten by the engine), fromDownstream, fromUpstream, durationMs). */
  onExchange?: (method: string | undefined, target: string | undefined, status: number, fromDownstream: number, fromUpstream: number, durationMs: number) => void;
  /** With onResponseHead: read nothing from fdDown past skipDown while the exchange runs (a
   *  keep-alive client's next request stays in its socket), and keep it open after a response
   *  answered with HeadThen.Keep (the summary's keptFd); otherwise it is drained and closed. */
  holdClient?: boolean;
  /**
   * The upstream's first bytes, up to a whole head (`complete`; false when the upstream ended
   * or 256 KiB came without a blank line); or null, with the errno code and the syscall, when
   * the upstream failed first (its connect, or a read) — then the client is neither reset nor
   * closed: JS replies. Nothing more moves from the upstream until relayHeadDone.
   */
  onResponseHead?: (bytes: Buffer | null, complete: boolean, code: string | undefined, syscall: string | undefined) => void;
}

/** ConnectingRelay.startExchange's hook: what the client gets for what the engine gathered. */
export interface HeadDecision {
  out: Buffer | null;
  then: HeadThen;
  /** then Again: the bytes already read of the next head; then Framed: the body's first bytes. */
  carry?: Buffer | null;
  /** then Keep: the response body's bytes still to come after `out` (its length minus those in
   *  `out`); then Framed: the body's length from `carry` on, or -1 for a chunked one. */
  keepBody?: number;
}

/** An upstream failure before its response head was whole (NativeRelayStartOptions.onResponseHead). */
export interface UpstreamFailure {
  code: string;
  /** 'connect' (then the summary says connectFailed) or 'read'. */
  syscall: string;
}

export type ResponseHeadHook = (bytes: Buffer | null, complete: boolean, failure: UpstreamFailure | undefined) => HeadDecision;

/** ConnectingRelay.startExchange's HTTP side (NativeRelayStartOptions). */
export interface EngineExchangeOptions {
  /** The client's request head as peeked: dropped from its stream. */
  skipDown: number;
  /** The Via pseudonym: plain response heads are rewritten by the engine (undefined: by JS). */
  responseVia: string | undefined;
  /** The others, and upstream failures before a whole head, come here. */
  onResponseHead: ResponseHeadHook;
  /** A keep-alive client: held during the exchange (NativeRelayStartOptions.holdClient), and
   *  given to onKept after a response answered with HeadThen.Keep (before the summary). */
  onKept?: (fd: number) => void;
  /** The request is a HEAD (NativeRelayStartOptions.headRequest). */
  headRequest?: boolean;
  /** The keep-alive loop (NativeRelayStartOptions.loopAuthority), with onKept. */
  loop?: EngineExchangeLoop;
  /** How the exchanges stood at the end, before the summary resolves. */
  onEnd?: (end: EngineExchangeEnd) => void;
}

/** EngineExchangeOptions.loop. */
export interface EngineExchangeLoop {
  authority: string;
  maxHeadBytes: number;
  maxFields: number;
  idleMs: number;
  onExchange: (report: EngineExchangeReport) => void;
}

/** The addon's relay functions (present when the addon was built with native/src/relay.c). */
export interface NativeRelayEngine {
  /** Takes ownership of both fds on success (closes them when the relay ends); on a throw the caller keeps them. */
  relayStart(
    fdDown: number,
    fdUp: number,
    headToUp: Buffer | null,
    headToDown: Buffer | null,
    idleTimeoutMs: number,
    onDone: (summary: NativeRelaySummary) => void,
    /** Sample fdDown's MPTCP subflows before closing it (summary.downstreamSubflows). */
    sampleDownstream?: boolean,
    /** > 0: fdUp's connect(2) is in progress; the engine completes it within this time. */
    connectTimeoutMs?: number,
    /** Called once, on the JS thread, when that connect succeeded (before onDone). */
    onConnected?: ((connected: NativeConnected) => void) | null,
    options?: NativeRelayStartOptions,
  ): number;
  /** The answer to options.onResponseHead: `out` goes to the client in place of the bytes JS
   *  was given, then the relay goes on as `then` says. False when the relay has ended. */
  relayHeadDone(id: number, out: Buffer | null, then: HeadThen, carry: Buffer | null, keepBody: number): boolean;
  /** Live counters, read without locking the relay (relaxed atomics); null once it ended. */
  relayStats(id: number): NativeRelayCounters | null;
  /** Ends the relay with endedBy 'proxy', reason 'aborted'; false if it is unknown or over. */
  relayAbort(id: number): boolean;
  /** Engine threads (default 1), applied the next time the engine starts. */
  relaySetThreads(threads: number): void;
  /** The queue caps for bulk flows (native/src/queue-cap.c): floorBytes 0 turns the buffer cap
   *  off, notsentBytes 0 the not-yet-sent one. Absent from an addon built before it (then the
   *  engine has no cap). */
  relaySetQueueCap?(floorBytes: number, rateMbit: number, notsentBytes: number): void;
  /** Ends every live relay (reason 'engine-stopped') and joins the engine threads. */
  relayEngineStop(): void;
}

/** The addon's relayStart: its onDone gets the summary as positional arguments. */
type RawRelayStart = (
  fdDown: number,
  fdUp: number,
  headToUp: Buffer | null,
  headToDown: Buffer | null,
  idleTimeoutMs: number,
  onDone: (...a: unknown[]) => void,
  ...rest: unknown[]
) => number;

type AddonWithRelay = MptcpNative & Partial<Omit<NativeRelayEngine, 'relayStart'>> & { relayStart?: RawRelayStart };

/** loadNativeRelayEngine's answer, made once: null when there is no engine. */
let engineApi: (MptcpNative & NativeRelayEngine) | null | undefined;

/** The engine, or undefined when the addon is missing or was built without it. Its relayStart
 *  hands onDone the summary object, decoded from the addon's positional arguments. */
export function loadNativeRelayEngine(): (MptcpNative & NativeRelayEngine) | undefined {
  if (engineApi !== undefined) return engineApi ?? undefined;
  let addon: AddonWithRelay;
  try {
    addon = loadNative() as AddonWithRelay;
  } catch {
    // NativeAddonUnavailableError: the caller falls back to the JS relay and says so. Not
    // remembered: nothing is cached for a failed load.
    return undefined;
  }
  if (typeof addon.relayStart !== 'function') {
    engineApi = null;
    return undefined;
  }
  const raw = addon.relayStart.bind(addon);
  // The engine numbers its engine-only connections from the same counter (src/core/ids.ts).
  const counter = (addon as { connectionCounter?: () => BigUint64Array }).connectionCounter;
  if (typeof counter === 'function') shareConnectionCounter(counter());
  engineApi = {
    ...(addon as unknown as MptcpNative & NativeRelayEngine),
    relayStart: (fdDown, fdUp, headToUp, headToDown, idleTimeoutMs, onDone, ...rest) =>
      raw(fdDown, fdUp, headToUp, headToDown, idleTimeoutMs, (...a: unknown[]) => onDone(decodeRelaySummary(a)), ...rest),
  };
  return engineApi;
}

const ENDED_BY: readonly NativeRelaySummary['endedBy'][] = ['downstream', 'upstream', 'proxy'];

/**
 * A relay's end from the addon's positional arguments (native/src/relay.c, ev_done_args):
 * id, fromDownstream, fromUpstream, endedBy (0 downstream, 1 upstream, 2 proxy), durationMs,
 * errno, code, syscall (undefined without an error), reason, deniedBy, connectFailed, the HTTP
 * status of a response head the engine rewrote (0: none), subflow count (-1: no sample),
 * subflow paths (one string, '\n' between paths), the kept client fd (-1: none), the exchanges
 * reported, whether one is open, and its method and target when the keep-alive loop read it.
 * `kind` 'done' comes first, for an acceptor's event.
 */
export function decodeRelaySummary(a: readonly unknown[]): NativeRelaySummary & { kind: 'done' } {
  const e: NativeRelaySummary & { kind: 'done' } = {
    kind: 'done',
    id: a[0] as number,
    fromDownstream: a[1] as number,
    fromUpstream: a[2] as number,
    endedBy: ENDED_BY[a[3] as number]!,
    durationMs: a[4] as number,
  };
  if (a[5] !== undefined) {
    e.errno = a[5] as number;
    e.code = a[6] as string;
    e.syscall = a[7] as string;
  }
  if (a[8] !== undefined) e.reason = a[8] as NonNullable<NativeRelaySummary['reason']>;
  if (a[9] !== undefined) e.deniedBy = a[9] as string;
  if (a[10] === true) e.connectFailed = true;
  if ((a[11] as number) > 0) e.httpStatus = a[11] as number;
  if ((a[12] as number) >= 0) e.downstreamSubflows = { count: a[12] as number, paths: a[13] === '' ? [] : (a[13] as string).split('\n') };
  if ((a[14] as number) >= 0) e.keptFd = a[14] as number;
  if (a[15] !== undefined) {
    const end: EngineExchangeEnd = { reported: a[15] as number, open: a[16] === true };
    if (a[17] !== undefined) {
      end.method = a[17] as string;
      end.target = a[18] as string;
    }
    e.exchanges = end;
  }
  return e;
}

/** Relay ids by connection, so live views can ask for counters (nativeRelayCounters). */
const liveRelays = new WeakMap<ConnectionContext, number>();

/** Ends the engine relay carrying ctx's connection (reason 'aborted'); false when there is none. */
function abortLive(engine: NativeRelayEngine, ctx: ConnectionContext): boolean {
  const id = liveRelays.get(ctx);
  return id !== undefined && engine.relayAbort(id);
}

/** Bytes moved so far for a connection the native relay is carrying; undefined otherwise. */
export function nativeRelayCounters(ctx: ConnectionContext): NativeRelayCounters | undefined {
  const id = liveRelays.get(ctx);
  const engine = id === undefined ? undefined : loadNativeRelayEngine();
  return engine?.relayStats(id!) ?? undefined;
}

export const nativeRelay: Relay = async (downstream, upstream, ctx, opts = {}) => {
  const engine = loadNativeRelayEngine();
  if (engine === undefined) return relayBothWays(downstream, upstream, ctx, opts);
  // 0. forward what is already here, from this thread, now: the first bytes of a connection
  //    (a request that arrived while we dialed, a front-end's head) would otherwise wait for
  //    the engine thread to wake up and take the fds over, which on the bench's 2-core VM cost
  //    ≈0.1-0.2 ms per connection (measured: upstream SYN-ACK → first request byte out).
  //    Counted as the engine counts its heads: as read from that side.
  ctx.bytes.fromDownstream += sendNow(upstream, joinHead(opts.downstreamHead, drainReadable(downstream)));
  ctx.bytes.fromUpstream += sendNow(downstream, joinHead(opts.upstreamHead, drainReadable(upstream)));
  opts = { ...opts, downstreamHead: undefined, upstreamHead: undefined };
  // 1. flush what front-ends queued (and step 0); a socket that died meanwhile is the JS
  //    relay's case (it reports which side ended and closes the other).
  const flushed = await Promise.all([flushWrites(downstream), flushWrites(upstream)]);
  if (!flushed[0] || !flushed[1] || !hasFd(downstream) || !hasFd(upstream)) return relayBothWays(downstream, upstream, ctx, opts);
  // 2.–3. synchronous from here to relayStart: no libuv read can run in between, so every
  //    byte is either in the heads or still in the kernel, where the dups will read it.
  const fromDown = drainReadable(downstream);
  const fromUp = drainReadable(upstream);
  const fds: number[] = [];
  try {
    fds.push(engine.dup(socketFd(downstream)));
    fds.push(engine.dup(socketFd(upstream)));
  } catch (err) {
    for (const fd of fds) engine.close(fd);
    ctx.log.warn('native relay handover failed; using the JS relay', { conn: ctx.id, err });
    return fallBack(downstream, upstream, ctx, opts, fromDown, fromUp);
  }
  const [fdDown, fdUp] = fds as [number, number];
  const sampleDownstream = ctx.downstream.mptcp;
  // Sample now too, through the JS socket while it exists: at the client's EOF a TLS close
  // may already have torn subflows down (the engine's later sample is kept only if fuller).
  if (sampleDownstream) sampleSubflows(socketFd(downstream), ctx);
  const headToUp = joinHead(opts.downstreamHead, fromDown);
  const headToDown = joinHead(opts.upstreamHead, fromUp);
  let started: Promise<RelaySummary>;
  try {
    started = startInEngine(engine, fdDown, fdUp, headToUp, headToDown, ctx, opts, sampleDownstream, undefined, undefined);
  } catch (err) {
    for (const fd of fds) engine.close(fd);
    ctx.log.warn('native relay refused the connection; using the JS relay', { conn: ctx.id, err });
    return fallBack(downstream, upstream, ctx, opts, fromDown, fromUp);
  }
  downstream.destroy();
  upstream.destroy();
  // Returned, not awaited: this frame's references to the destroyed sockets end here.
  return started;
};

/**
 * Starts the relay in the engine. Its closures see only the context and options, never the
 * net.Sockets, so those can be collected while the engine carries the connection (idle memory).
 * Throws, with the fds still the caller's, when the engine refuses.
 */
function startInEngine(
  engine: NativeRelayEngine & Pick<MptcpNative, 'close'>,
  fdDown: number,
  fdUp: number,
  headToUp: Buffer | null,
  headToDown: Buffer | null,
  ctx: ConnectionContext,
  opts: RelayOptions,
  sampleDownstream: boolean,
  connect: EngineConnect | undefined,
  exchange: EngineExchangeOptions | undefined,
): Promise<RelaySummary> {
  let resolveSummary!: (s: RelaySummary) => void;
  const summary = new Promise<RelaySummary>((resolve) => {
    resolveSummary = resolve;
  });
  // The proxy cutting the connection (listener destroy) aborts it inside the engine. Not for an
  // exchange: its ctx.signal is shared by the listener's exchanges (an AbortController each was
  // a measurable part of one), which ConnectingRelay.abort cuts one by one instead.
  const watch = exchange === undefined;
  const onAbort = (): void => void abortLive(engine, ctx);
  const onDone = (s: NativeRelaySummary): void => {
    if (watch) ctx.signal.removeEventListener('abort', onAbort);
    if (s.exchanges !== undefined) exchange?.onEnd?.(s.exchanges);
    if (s.keptFd !== undefined) {
      // The client's next request is its owner's; with none to take it, the client is closed.
      if (exchange?.onKept !== undefined) exchange.onKept(s.keptFd);
      else engine.close(s.keptFd);
    }
    liveRelays.delete(ctx);
    const summary = accountSummary(s, ctx, opts);
    // After accountSummary: the connect's owner says how the connection ended (ctx.end).
    if (s.connectFailed && connect !== undefined) connect.onFailed(summary.error as NodeJS.ErrnoException, s.reason === 'connect-timeout');
    resolveSummary(summary);
  };
  let options: NativeRelayStartOptions | undefined;
  if (exchange !== undefined) {
    const hook = exchange.onResponseHead;
    const onHead = (bytes: Buffer | null, complete: boolean, code: string | undefined, syscall: string | undefined): void => {
      let d: HeadDecision;
      try {
        d = hook(bytes, complete, code === undefined ? undefined : { code, syscall: syscall ?? 'read' });
      } catch (err) {
        // A bug of ours, not the peer's: the relay must not wait for an answer forever.
        ctx.log.error('response head hook failed; the exchange is cut', { err });
        engine.relayAbort(id);
        return;
      }
      engine.relayHeadDone(id, d.out, d.then, d.carry ?? null, d.keepBody ?? -1);
    };
    options = {
      skipDown: exchange.skipDown,
      onResponseHead: onHead,
      ...(exchange.responseVia !== undefined ? { responseVia: exchange.responseVia } : {}),
      ...(exchange.onKept !== undefined ? { holdClient: true } : {}),
      ...(exchange.headRequest === true ? { headRequest: true } : {}),
      ...(exchange.loop !== undefined ? loopOptions(exchange.loop) : {}),
      // The acceptor's fds, never wrapped by Node (ConnectingRelay.startExchange).
      soleOwner: true,
      upPlainTcp: connect?.plainTcp === true,
    };
  }
  // connectTimeoutMs 0: fdUp is connected already.
  const id = engine.relayStart(fdDown, fdUp, headToUp, headToDown, opts.idleTimeoutMs ?? 0, onDone, sampleDownstream, connect?.timeoutMs ?? 0, connect?.onConnected ?? null, options);
  liveRelays.set(ctx, id);
  if (ctx.signal.aborted) onAbort();
  else if (watch) ctx.signal.addEventListener('abort', onAbort, { once: true });
  return summary;
}

/** relayStart's options for the keep-alive loop. */
function loopOptions(loop: EngineExchangeLoop): NativeRelayStartOptions {
  return {
    loopAuthority: loop.authority,
    loopMaxHeadBytes: loop.maxHeadBytes,
    loopMaxFields: loop.maxFields,
    loopIdleMs: loop.idleMs,
    onExchange: (method, target, status, fromDownstream, fromUpstream, durationMs) => {
      const report: EngineExchangeReport = { fromDownstream, fromUpstream, durationMs };
      if (method !== undefined) report.method = method;
      if (target !== undefined) report.target = target;
      if (status > 0) report.status = status;
      loop.onExchange(report);
    },
  };
}

/** An upstream socket whose connect(2) is in progress, for the engine to complete. */
export interface EngineConnect {
  /** The socket (non-blocking, connect issued). connectingRelay.start takes it over, unless it throws. */
  fd: number;
  /** The connect's deadline (upstream.connectTimeoutMs); > 0. */
  timeoutMs: number;
  /** The socket is IPPROTO_TCP: the engine need not ask whether it runs MPTCP. */
  plainTcp?: boolean;
  /** The handshake completed (on the JS thread, once, before any summary). */
  onConnected(connected: NativeConnected): void;
  /** The connect failed (errno, syscall 'connect') or timed out (ETIMEDOUT, timedOut true); the
   *  client has been reset, and ctx.end holds the engine's account — set the dial's own here. */
  onFailed(error: NodeJS.ErrnoException, timedOut: boolean): void;
}

/** A relay that starts before its upstream is connected (FrontendDeps.relayConnecting). */
export interface ConnectingRelay {
  /** Whether `downstream` can be handed to the engine now: it has an fd and nothing queued to write. */
  accepts(downstream: Socket): boolean;
  /**
   * Hands the client and the connecting upstream to the engine, synchronously: the bytes Node
   * already read from the client (after opts.downstreamHead) go up first once connected, and
   * the client's net.Socket is destroyed (no FIN: see step 3 above). Resolves with the summary
   * as `Relay` does. Throws when the engine refuses, with the client untouched and up.fd still
   * the caller's.
   */
  start(downstream: Socket, up: EngineConnect, ctx: ConnectionContext, opts?: RelayOptions): Promise<RelaySummary>;
  /**
   * One HTTP exchange served in the engine (src/frontends/http/engine-exchange.ts): `fdDown` is
   * a client the engine's acceptor handed over, its request head peeked and still in the socket
   * (`skipDown` bytes, dropped); `requestHead` (rewritten) goes to the connecting upstream, and
   * `onResponseHead` turns the response head into what the client gets. Takes both fds over,
   * also when it throws (the engine refused: both are closed then). No sockets in Node at all.
   */
  startExchange(fdDown: number, up: EngineConnect, requestHead: Buffer, exchange: EngineExchangeOptions, ctx: ConnectionContext, opts?: RelayOptions): Promise<RelaySummary>;
  /** Ends the engine relay carrying ctx's connection (reason 'aborted'): startExchange does not
   *  watch ctx.signal. False when there is none. */
  abort(ctx: ConnectionContext): boolean;
}

export const connectingRelay: ConnectingRelay = {
  accepts: (downstream) => !downstream.destroyed && downstream.writableLength === 0 && hasFd(downstream),
  start(downstream, up, ctx, opts = {}) {
    const engine = loadNativeRelayEngine();
    if (engine === undefined) throw new Error('the native relay engine is unavailable');
    const fromDown = drainReadable(downstream);
    let fdDown: number | undefined;
    let started: Promise<RelaySummary>;
    try {
      fdDown = engine.dup(socketFd(downstream));
      // No subflow sample here, unlike the handover: at accept the client has its first
      // subflow only, and the engine samples at its EOF or the relay's end anyway.
      started = startInEngine(engine, fdDown, up.fd, joinHead(opts.downstreamHead, fromDown), opts.upstreamHead ?? null, ctx, opts, ctx.downstream.mptcp, up, undefined);
    } catch (err) {
      if (fdDown !== undefined) engine.close(fdDown);
      for (let i = fromDown.length - 1; i >= 0; i--) downstream.unshift(fromDown[i]!);
      throw err;
    }
    downstream.destroy();
    return started;
  },
  abort(ctx) {
    const engine = loadNativeRelayEngine();
    return engine !== undefined && abortLive(engine, ctx);
  },
  startExchange(fdDown, up, requestHead, exchange, ctx, opts = {}) {
    const engine = loadNativeRelayEngine();
    if (engine === undefined) throw new Error('the native relay engine is unavailable');
    try {
      return startInEngine(engine, fdDown, up.fd, requestHead, null, ctx, opts, ctx.downstream.mptcp, up, exchange);
    } catch (err) {
      engine.close(fdDown);
      engine.close(up.fd);
      throw err;
    }
  },
};

/** Resolves true once every queued write reached the kernel, false if the socket died first.
 *  (Shared with the body pump, ./native-pump.ts.) */
export function flushWrites(socket: Socket): Promise<boolean> {
  if (socket.destroyed) return Promise.resolve(false);
  if (socket.writableLength === 0 || socket.writableEnded) return Promise.resolve(socket.writableLength === 0);
  return new Promise((resolve) => {
    // Writes complete in order, so the callback of an empty write fires after all earlier ones.
    socket.write(Buffer.alloc(0), (err) => resolve(!err && !socket.destroyed));
  });
}

export function hasFd(socket: Socket): boolean {
  try {
    socketFd(socket);
    return true;
  } catch {
    return false; // ERR_SOCKET_CLOSED: e.g. a socket that is not a kernel socket (tests, TLS)
  }
}

/** Writes `buf` (Node tries the write synchronously: on an idle socket the bytes are in the
 *  kernel before this returns; otherwise flushWrites waits for them). Returns its length. */
function sendNow(socket: Socket, buf: Buffer | null): number {
  if (buf === null || socket.destroyed || !socket.writable) return 0;
  socket.write(buf);
  return buf.length;
}

/** Bytes Node read from the kernel that no consumer took yet. */
function drainReadable(socket: Socket): Buffer[] {
  socket.pause();
  const chunks: Buffer[] = [];
  for (let c: Buffer | null = socket.read() as Buffer | null; c !== null; c = socket.read() as Buffer | null) chunks.push(c);
  return chunks;
}

/** A head followed by chunks, as one buffer; null when there is nothing. (Shared with the body pump.) */
export function joinHead(head: Buffer | undefined, chunks: Buffer[]): Buffer | null {
  const parts = head && head.length > 0 ? [head, ...chunks] : chunks;
  if (parts.length === 0) return null;
  return parts.length === 1 ? parts[0]! : Buffer.concat(parts);
}

/** The bytes taken out of the sockets go back in front, and the JS relay carries on. */
function fallBack(down: Socket, up: Socket, ctx: ConnectionContext, opts: RelayOptions, fromDown: Buffer[], fromUp: Buffer[]): Promise<RelaySummary> {
  for (let i = fromDown.length - 1; i >= 0; i--) down.unshift(fromDown[i]!);
  for (let i = fromUp.length - 1; i >= 0; i--) up.unshift(fromUp[i]!);
  return relayBothWays(down, up, ctx, opts);
}

/** An engine summary into ctx (the subflow sample, the status of a response head the engine
 *  rewrote, bytes, end) and the Relay contract's summary. (Shared with the
 *  engine's acceptor, src/listeners/engine-acceptor.ts.) */
export function accountSummary(s: NativeRelaySummary, ctx: ConnectionContext, opts: RelayOptions): RelaySummary {
  if (s.downstreamSubflows !== undefined) recordSubflowSample(ctx, s.downstreamSubflows);
  if (s.httpStatus !== undefined) ctx.access.status = s.httpStatus;
  ctx.bytes.fromDownstream += s.fromDownstream;
  ctx.bytes.fromUpstream += s.fromUpstream;
  const error = summaryError(s, opts);
  // Built by assignment: a conditional spread costs V8 an object allocated and copied, and this
  // runs once per connection.
  const summary: RelaySummary = { fromDownstream: ctx.bytes.fromDownstream, fromUpstream: ctx.bytes.fromUpstream, endedBy: s.endedBy, durationMs: s.durationMs };
  if (error) {
    ctx.end = { by: s.endedBy, error };
    summary.error = error;
  } else {
    ctx.end = { by: s.endedBy };
  }
  return summary;
}

/** The same errors the JS relay would report: Node-shaped system errors, or the idle timeout. */
function summaryError(s: NativeRelaySummary, opts: RelayOptions): Error | undefined {
  if (s.code !== undefined) {
    const syscall = s.syscall ?? 'relay';
    return Object.assign(new Error(`${syscall} ${s.code}`), { code: s.code, errno: s.errno, syscall });
  }
  if (s.reason === 'idle') return Object.assign(new Error(`relay idle for ${opts.idleTimeoutMs} ms`), { code: ErrorCode.IDLE_TIMEOUT });
  if (s.reason !== undefined) return Object.assign(new Error(`relay ${s.reason}`), { code: ErrorCode.RELAY_ABORTED });
  return undefined;
}

/** Samples the client's subflows at the handover (any fd of the socket reads the same connection). */
function sampleSubflows(fd: number, ctx: ConnectionContext): void {
  try {
    recordSubflowSample(ctx, sampleSubflowsOfFd(fd));
  } catch (err) {
    ctx.log.debug('MPTCP_INFO unavailable at close', { conn: ctx.id, err });
  }
}
