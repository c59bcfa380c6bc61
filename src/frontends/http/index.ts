/**
 * The HTTP/1.1 forward-proxy front-end (RFC 9110, RFC 9112): absolute-form `http://`
 * requests are forwarded with raw byte bodies, CONNECT host:port is tunnelled by the shared
 * relay. One HttpProxySession owns one client connection; its requests are handled strictly
 * one after another (pipelined requests wait in the socket until the previous response has
 * been forwarded), each in five phases:
 *
 *   1. read request head   2. decide (target form, framing, auth)   3. dial (or reuse)
 *   4. forward / tunnel    5. account
 *
 * Destination access checks happen in deps.dial (AccessDeniedError → 403). Every error
 * becomes one reply through status.ts's table, written before the connection is closed.
 *
 * Large bodies with a known end (Content-Length ≥ PUMP_MIN_BYTES, or a close-delimited
 * response) go through deps.pump when the native engine is in use: the engine moves them
 * between the same sockets and hands them back (src/relay/native-pump.ts). Counting and
 * errors are the JS loops' own; chunked bodies always stay in JS.
 */
import type { Socket } from 'node:net';
import type { HttpListenerConfig } from '../../config/types.js';
import type { ConnectionContext } from '../../core/context.js';
import { publishRequestDone } from '../../core/channels.js';
import { peekReceived, readSubflowCount } from '../../mptcp/index.js';
import type { EarlyConnect } from '../../upstream/types.js';
import { AccessDeniedError, DownstreamError, ErrorCode, ProxyError, UpstreamError, formatTarget } from '../../core/errors.js';
import type { TargetAddress } from '../../core/errors.js';
import type { EngineAcceptPlan, Frontend, FrontendDeps, HandoffServe, RelayStarted } from '../types.js';
import { ChunkedDecoder, requestBodyFraming, responseBodyFraming } from './framing.js';
import type { BodyFraming } from './framing.js';
import {
  HeadDecoder,
  RESPONSE_HEAD_LIMITS,
  clientWantsPersistence,
  firstHeader,
  hasConnectionOption,
  headerValues,
  parseRequestHead,
  parseRequestTarget,
  parseResponseHead,
  peekRequestTarget,
} from './parser.js';
import type { RequestHead, RequestTarget, ResponseHead } from './parser.js';
import { buildDownstreamResponseHead, buildInterimResponseHead, buildUpstreamRequestHead } from './rewrite.js';
import { CONNECT_ESTABLISHED, httpStatusFor, replyToError } from './status.js';
import { READ_TIMEOUT, SocketReader, writeAll } from './socket-io.js';
import { UpstreamPool } from './pool.js';
import { ExchangeAccount, nativeVia, planEngineExchange, respondAtAccept } from './engine-exchange.js';
import type { PoolableUpstream } from './pool.js';
import { PumpHandoverError } from '../../relay/native-pump.js';
import type { BodyPump, PumpProgress, PumpResult as NativePumpResult } from '../../relay/native-pump.js';

export { httpStatusFor } from './status.js';

/** How long we keep reading (and dropping) after our FIN before destroying the socket. */
const LINGER_MS = 2000;
/** Smallest Content-Length body handed to the native pump: the handover costs a flush, two
 *  dups, an engine round trip and a handle restart, which only pays off for larger bodies. */
const PUMP_MIN_BYTES = 64 * 1024;
/** Largest response body that, when it arrived with its head, is written together with it. */
const COALESCED_BODY_MAX = 16 * 1024;

/** Creates the front-end; `handle` never throws and resolves once the client socket is closed
 *  (or handed to the relay for CONNECT and the relay has finished). */
export interface HttpFrontendOptions {
  /** relay.idleTimeoutMs: how long to wait for upstream bytes (504 before the response
   *  starts, close after) and the CONNECT tunnels' idle timeout; 0 = no limit. */
  idleTimeoutMs?: number;
}

export function createHttpFrontend(cfg: HttpListenerConfig, deps: FrontendDeps, opts: HttpFrontendOptions = {}): Frontend {
  const idleTimeoutMs = opts.idleTimeoutMs ?? 0;
  // One idle upstream pool per listener (see pool.ts, also for why sharing it across this
  // listener's sessions is safe with respect to the destination access check).
  const pool = new UpstreamPool({ idleTimeoutMs: cfg.upstreamIdleTimeoutMs });
  // The Via pseudonym the engine writes itself (undefined: JS rewrites every response head).
  const engineVia = nativeVia(cfg.via);
  return {
    kind: 'http',
    // A CONNECT tunnel's session ends once the relay has both sockets: only the relay's end is
    // awaited from then on, so that an idle tunnel holds no session, socket or reader.
    handle: (socket, ctx, early) => new HttpProxySession(socket, ctx, cfg, deps, idleTimeoutMs, pool, early).run().then((tunnel) => tunnel?.ended),
    preconnect: (socket, known) => preconnect(socket, deps, pool, known),
    close: () => pool.close(),
    engineAccept: () => engineAcceptPlan(cfg, deps, pool, idleTimeoutMs, engineVia),
    engineExchange: (client) => planEngineExchange(client, cfg, deps.relayConnecting, idleTimeoutMs, engineVia),
  };
}

/** How long the engine waits for a new client's request head before handing it over as it is
 *  (the session's own handshake timeout applies from then). */
const HANDOFF_WAIT_MS = 100;

/**
 * Frontend.engineAccept for the HTTP proxy: the engine accepts and admits, waits for the
 * request head, starts the upstream connect its request line names and — for a plain GET whose
 * heads it rewrites in C — serves the exchange itself from there (HandoffPlan.serve: docs/design.md,
 * "Served from accept"); any other client is handed over (docs/design.md, "The upstream connect
 * starts at accept"), and a request the engine can still serve whole goes back to it with no
 * Node socket (engineExchange, ./engine-exchange.ts). Not when credentials
 * are required (nothing starts for a client before it has proved who it is). With the upstream
 * pool on, only when the engine can serve exchanges: a hand-over that ends on a Node socket
 * costs more than Node's own accept — the engine thread's wake-up, the hand-over message and
 * Node's handle-type guess for the fd (measured, pool on, alternated: 300–320 against 320–360
 * µs of proxy CPU per connection).
 */
function engineAcceptPlan(cfg: HttpListenerConfig, deps: FrontendDeps, pool: UpstreamPool, idleTimeoutMs: number, via: string | undefined): EngineAcceptPlan | undefined {
  if (deps.access.authRequired || (pool.enabled && deps.relayConnecting === undefined)) return undefined;
  const dial = deps.dial.planInEngineAnyTarget?.();
  const adopt = deps.dial.adoptEarly;
  if (dial === undefined || adopt === undefined) return undefined;
  // Served from accept when the engine serves exchanges and can write our Via itself; with the
  // engine's own upstream pool when the listener's is on.
  const upstreamIdleMs = pool.enabled ? cfg.upstreamIdleTimeoutMs : 0;
  const serve: HandoffServe | undefined =
    deps.relayConnecting === undefined || via === undefined
      ? undefined
      : {
          via,
          maxHeadBytes: cfg.maxHeaderBytes,
          maxFields: cfg.maxHeaderCount,
          upstreamIdleMs,
          respond: (ctx, request, bytes, complete, failure) => respondAtAccept(ctx, request, bytes, complete, failure, cfg, idleTimeoutMs, upstreamIdleMs),
          requests: (ctx) => new ExchangeAccount(ctx, undefined, ctx.startedAt),
        };
  return {
    dial,
    idleTimeoutMs,
    handoff: { waitMs: HANDOFF_WAIT_MS, adoptEarly: (fd, target, local) => adopt(fd, target, local), keptWaitMs: cfg.keepAliveTimeoutMs, ...(serve ? { serve } : {}) },
  };
}

/** How old an early connect may be when its request is ready to go: a client that took longer
 *  to send the rest of its head gets a fresh dial, rather than a connection its origin may have
 *  closed as idle meanwhile (which would fail the request with a 502). */
const EARLY_CONNECT_MAX_AGE_MS = 1000;

/** One buffer for every peek: the request line is looked at and dropped in the same turn. */
const PEEK_BUFFER = Buffer.alloc(2048);

/**
 * Frontend.preconnect: when the client's request line has already arrived (usually so by the
 * time Node accepts: the client sends it right behind the handshake), the upstream connect for
 * an absolute-form request to an IP literal starts now, before the accept's bookkeeping and the
 * request's parsing — the destination check applied as for any dial. Not when credentials are
 * required (nothing is done for a client before it has proved who it is), nor when the pool
 * has an idle connection there. The session sends on it once the request has been read and
 * checked in full, or closes it unused (docs/design.md, "The upstream connect starts at accept").
 */
function preconnect(socket: Socket, deps: FrontendDeps, pool: UpstreamPool, known: TargetAddress | undefined): EarlyConnect | undefined {
  if (deps.dial.connectEarly === undefined || deps.access.authRequired) return undefined;
  const target = known ?? peekRequestTarget(peekReceived(socket, PEEK_BUFFER));
  if (target === undefined || pool.has(formatTarget(target))) return undefined;
  return deps.dial.connectEarly(target);
}

/** Methods a pooled connection may carry (RFC 9110 §9.2.2 idempotent), and only without a
 *  request body: if the server closed the pooled connection as we wrote, such a request is
 *  retried on a fresh dial with nothing lost (HAProxy's `http-reuse safe`). */
const POOL_METHODS = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE', 'PUT', 'DELETE']);

interface ProxyRequest {
  head: RequestHead;
  target: RequestTarget;
  framing: BodyFraming;
  startedAt: number;
}

/** key is host:port, for keep-alive reuse (by this session, or via the pool by others). */
type UpstreamConnection = PoolableUpstream;

interface ExchangeState {
  /** A final response head has been written to the client: no error reply is possible now. */
  responseStarted: boolean;
  /** Request body bytes have been consumed from the client (a retry is no longer possible). */
  bodyStarted: boolean;
}

interface ResponseOutcome {
  closeClient: boolean;
  keepUpstream: boolean;
}

type PumpResult = { ok: true } | { ok: false; error: unknown };

/** Thrown when the client went away while we were writing to it; nothing to reply to. */
class DownstreamGoneError extends DownstreamError {
  override name = 'DownstreamGoneError';
}

/** The cause for a pump the proxy stopped (a socket closed under it, or the connection cut). */
function pumpStopped(r: NativePumpResult): Error {
  return new Error(`native body pump ${r.endedBy}`);
}

function upstreamAllowsPersistence(res: ResponseHead): boolean {
  if (res.version === '1.1') return !hasConnectionOption(res.headers, 'close');
  return hasConnectionOption(res.headers, 'keep-alive');
}

class HttpProxySession {
  readonly #client: Socket;
  readonly #down: SocketReader;
  readonly #ctx: ConnectionContext;
  readonly #cfg: HttpListenerConfig;
  readonly #deps: FrontendDeps;
  readonly #pool: UpstreamPool;
  #up: UpstreamConnection | null = null;
  /** The upstream connect begun at accept (Frontend.preconnect), until a request claims it. */
  #early: EarlyConnect | undefined;
  readonly #idleTimeoutMs: number | undefined;
  /** deps.pump: the native engine's body pump, or undefined (bodies move through JS). */
  readonly #pump: BodyPump | undefined;
  /** The request-body pump in flight, if any: asked whether the body is wholly written when
   *  the response ends before the pump has reported. */
  #requestPump: PumpProgress | undefined;
  #requests = 0;
  #handedOver = false;
  /** Connection byte counters when the current request began, for per-request byte counts. */
  #bytesAtRequestStart = { fromDownstream: 0, fromUpstream: 0 };

  /** Upstream bytes read count to this session, whoever dialed the connection. */
  readonly #countUpstream = (n: number): void => {
    this.#ctx.bytes.fromUpstream += n;
  };

  constructor(socket: Socket, ctx: ConnectionContext, cfg: HttpListenerConfig, deps: FrontendDeps, idleTimeoutMs: number, pool: UpstreamPool, early?: EarlyConnect) {
    this.#client = socket;
    this.#early = early;
    this.#pool = pool;
    this.#ctx = ctx;
    this.#cfg = cfg;
    this.#deps = deps;
    this.#idleTimeoutMs = idleTimeoutMs > 0 ? idleTimeoutMs : undefined;
    this.#pump = deps.pump;
    // A connection an exchange in the engine served first (it gave the client back): its
    // requests and bytes go on from there.
    if (typeof ctx.access.requests === 'number') this.#requests = ctx.access.requests;
    this.#bytesAtRequestStart = { fromDownstream: ctx.bytes.fromDownstream, fromUpstream: ctx.bytes.fromUpstream };
    this.#down = new SocketReader(socket, (n) => {
      ctx.bytes.fromDownstream += n;
    });
  }

  /** Serves the connection; for a CONNECT, returns once the relay carries it (RelayStarted). */
  async run(): Promise<RelayStarted | undefined> {
    try {
      return await this.#serve();
    } catch (err) {
      // Every phase maps its own errors; reaching here is a bug, not a client problem.
      this.#ctx.log.error('http front-end internal error', { err });
    } finally {
      await this.#closeAll();
    }
  }

  async #serve(): Promise<RelayStarted | undefined> {
    for (;;) {
      // 1. read request head
      const head = await this.#readRequestHead(this.#requests === 0);
      if (head === null) return;
      this.#requests += 1;
      this.#ctx.access.requests = this.#requests;
      this.#ctx.access.method = head.method;
      this.#ctx.access.url = head.target;
      this.#ctx.access.status = undefined;
      const startedAt = performance.now();
      let keepGoing = false;
      try {
        // 2. decide
        const req = await this.#decide(head, startedAt);
        if (req.target.form === 'authority') {
          // 3. dial + 4. tunnel: after this the relay owns both sockets.
          return await this.#tunnel(req);
        }
        // 3. dial (or reuse) + 4. forward
        keepGoing = await this.#forward(req);
      } catch (err) {
        await this.#replyError(err, head);
      }
      // 5. account
      this.#account(head, startedAt);
      if (!keepGoing) return;
    }
  }

  // ---- 1. read request head ---------------------------------------------------------------

  /**
   * Reads one request head. The first head must arrive within handshakeTimeoutMs of accept
   * (slowloris guard, 408); later ones may wait keepAliveTimeoutMs for their first byte (then
   * we close quietly, RFC 9112 §9.5) and get handshakeTimeoutMs from there. Malformed or
   * oversized heads get their reply here. Returns null when the connection should just end.
   */
  async #readRequestHead(first: boolean): Promise<RequestHead | null> {
    const decoder = new HeadDecoder({ maxBytes: this.#cfg.maxHeaderBytes, maxCount: this.#cfg.maxHeaderCount });
    let deadline = first ? this.#ctx.startedAt + this.#cfg.handshakeTimeoutMs : undefined;
    let head: RequestHead | undefined;
    try {
      while (head === undefined) {
        const timeoutMs = deadline === undefined ? this.#cfg.keepAliveTimeoutMs : deadline - performance.now();
        const chunk = await this.#down.read(timeoutMs);
        if (chunk === READ_TIMEOUT) {
          if (deadline === undefined) {
            this.#ctx.log.debug('keep-alive client idle, closing', { idleMs: this.#cfg.keepAliveTimeoutMs });
            return null;
          }
          throw new DownstreamError(ErrorCode.HANDSHAKE_TIMEOUT, `request head not complete within ${this.#cfg.handshakeTimeoutMs} ms`);
        }
        if (chunk === null) {
          // An early EOF is a client's choice, not an error (a debug line only).
          if (decoder.started) this.#ctx.log.debug('client closed during request head');
          return null;
        }
        deadline ??= performance.now() + this.#cfg.handshakeTimeoutMs;
        const pushed = decoder.push(chunk);
        if (pushed.done) {
          this.#down.unread(pushed.rest);
          head = parseRequestHead(pushed.head);
        }
      }
    } catch (err) {
      if (!(err instanceof ProxyError)) {
        this.#ctx.log.debug('client socket error during request head', { err });
        return null;
      }
      this.#ctx.access.status = httpStatusFor(err);
      await this.#replyError(err, undefined);
      this.#account(undefined, performance.now());
      return null;
    }
    return head;
  }

  // ---- 2. decide ----------------------------------------------------------------------------

  async #decide(head: RequestHead, startedAt: number): Promise<ProxyRequest> {
    const target = parseRequestTarget(head.method, head.target);
    this.#ctx.target = target.target;
    // RFC 9112 §3.2: more than one Host line is 400 (the value itself is replaced for
    // absolute-form, as a proxy MUST).
    if (headerValues(head.headers, 'host').length > 1) {
      throw new DownstreamError(ErrorCode.BAD_REQUEST, 'more than one Host header field');
    }
    const framing: BodyFraming = target.form === 'absolute' ? requestBodyFraming(head) : { kind: 'none' };
    // Only when credentials are required: an await of an async function costs a promise and a
    // turn of the microtask queue even when it returns at once (every request pays it otherwise).
    if (this.#deps.access.authRequired) await this.#authorize(head);
    return { head, target, framing, startedAt };
  }

  /** Proxy-Authorization: Basic (RFC 9110 §11.7.2, RFC 7617) when the policy requires it. */
  async #authorize(head: RequestHead): Promise<void> {
    const access = this.#deps.access;
    if (!access.authRequired) return;
    const value = firstHeader(head.headers, 'proxy-authorization');
    if (value === undefined) {
      throw new AccessDeniedError(ErrorCode.AUTH_REQUIRED, 'proxy-auth', 'proxy authentication required');
    }
    const m = /^basic[ ]+([A-Za-z0-9+/]+={0,2})[ ]*$/i.exec(value);
    const decoded = m ? Buffer.from(m[1]!, 'base64').toString('utf8') : '';
    const colon = decoded.indexOf(':');
    if (colon < 0) {
      throw new AccessDeniedError(ErrorCode.AUTH_FAILED, 'proxy-auth', 'malformed or unsupported Proxy-Authorization (Basic expected)');
    }
    const user = decoded.slice(0, colon);
    let ok: boolean;
    try {
      ok = await access.verifyCredentials(user, decoded.slice(colon + 1));
    } catch (err) {
      throw new ProxyError(ErrorCode.INTERNAL, 'internal', 'credential check failed', { cause: err });
    }
    if (!ok) throw new AccessDeniedError(ErrorCode.AUTH_FAILED, 'proxy-auth', 'wrong proxy credentials');
    this.#ctx.access.user = user;
  }

  // ---- 3. dial ------------------------------------------------------------------------------

  /** The kept-alive upstream connection if it goes to the same host:port and is idle and
   *  healthy; else (when `mayPool`) the listener's most recently parked one to host:port;
   *  otherwise a fresh dial. An old connection to another host:port goes to the pool. */
  async #upstreamFor(target: TargetAddress, mayPool: boolean, head?: Buffer): Promise<{ up: UpstreamConnection; headSent: boolean }> {
    const key = formatTarget(target);
    const reusable = this.#currentFor(target);
    if (reusable !== undefined) return reusable;
    if (this.#up !== null) this.#releaseUpstream(this.#up.reader.idleUsable);
    const early = this.#takeEarly(key);
    const pooled = mayPool && early === undefined ? this.#pool.take(key) : undefined;
    if (pooled !== undefined) {
      pooled.reader.rebind(this.#countUpstream);
      if (pooled.facts) this.#ctx.upstream = pooled.facts;
      this.#up = pooled;
      return { up: pooled, headSent: false };
    }
    const dialed = await this.#dial(target, head, early);
    const reader = new SocketReader(dialed.socket, this.#countUpstream);
    this.#up = { key, target, socket: dialed.socket, reader, served: 0, idle: true, facts: this.#ctx.upstream };
    return { up: this.#up, headSent: dialed.headSent };
  }

  /** The kept-alive upstream connection, when it goes to `target` and is idle and healthy. */
  #currentFor(target: TargetAddress): { up: UpstreamConnection; headSent: false } | undefined {
    const current = this.#up;
    if (current === null || !current.reader.idleUsable || current.key !== formatTarget(target)) return undefined;
    return { up: current, headSent: false };
  }

  /** deps.dial — or, with a request `head` to send, deps.dial.sendFirst where it applies, which
   *  writes the head as part of the dial — aborted if the client goes away while we wait (its
   *  reply would be moot). */
  async #dial(target: TargetAddress, head?: Buffer, early?: EarlyConnect): Promise<{ socket: Socket; headSent: boolean }> {
    const abort = new AbortController();
    const onClientClose = (): void => abort.abort();
    this.#client.once('close', onClientClose);
    try {
      const sending =
        head === undefined
          ? undefined
          : (early?.send(this.#ctx, head, { signal: abort.signal }) ?? this.#deps.dial.sendFirst?.(target, this.#ctx, head, { signal: abort.signal }));
      if (sending !== undefined) return { socket: await sending, headSent: true };
      return { socket: await this.#deps.dial(target, this.#ctx, { signal: abort.signal }), headSent: false };
    } catch (err) {
      if (abort.signal.aborted) throw new DownstreamGoneError(ErrorCode.BAD_REQUEST, 'client went away during the dial', { cause: err });
      throw err;
    } finally {
      this.#client.off('close', onClientClose);
    }
  }

  /** The early connect if it goes to `key` and is recent (then it is the caller's); otherwise
   *  it is closed unused: whatever this request does, it will not be sent on. */
  #takeEarly(key: string | undefined): EarlyConnect | undefined {
    const early = this.#early;
    if (early === undefined) return undefined;
    this.#early = undefined;
    if (key !== undefined && formatTarget(early.target) === key && performance.now() - early.startedAt <= EARLY_CONNECT_MAX_AGE_MS) return early;
    early.cancel();
    return undefined;
  }

  /** Gives up the upstream connection: to the listener's pool when `reusable` and its last
   *  exchange ended cleanly with keep-alive allowed (`idle`), else destroyed. */
  #releaseUpstream(reusable = false): void {
    const up = this.#up;
    if (up === null) return;
    this.#up = null;
    if (reusable && up.idle && up.served > 0) this.#pool.put(up);
    else up.socket.destroy();
  }

  // ---- 4. forward / tunnel ------------------------------------------------------------------

  /** CONNECT: dial, reply 200, hand both sockets to the relay; its end is RelayStarted.ended
   *  (undefined: the client went before the reply). */
  async #tunnel(req: ProxyRequest): Promise<RelayStarted | undefined> {
    this.#takeEarly(undefined);
    this.#releaseUpstream(true);
    const { socket: upstream } = await this.#dial(req.target.target);
    let earlyError: Error | undefined;
    const onEarlyError = (err: Error): void => {
      earlyError = err;
    };
    upstream.on('error', onEarlyError);
    try {
      await writeAll(this.#client, CONNECT_ESTABLISHED);
    } catch (err) {
      upstream.off('error', onEarlyError);
      upstream.destroy();
      this.#ctx.log.debug('client gone before CONNECT reply was written', { err });
      return undefined;
    }
    this.#ctx.access.status = 200;
    // Bytes the client sent after the CONNECT head (e.g. a TLS ClientHello) go upstream first.
    // The relay counts them when it writes them, so they are uncounted here.
    const downstreamHead = this.#down.detach();
    this.#ctx.bytes.fromDownstream -= downstreamHead.length;
    this.#handedOver = true;
    upstream.off('error', onEarlyError);
    if (earlyError) this.#ctx.log.debug('upstream error before relay started', { err: earlyError });
    this.#account(req.head, req.startedAt);
    // The relay's end is followed by closures that see only the log and the target: the
    // session (its sockets, reader and request) is garbage once run() returns.
    const log = this.#ctx.log;
    const target = formatTarget(req.target.target);
    const ended = this.#deps.relay(this.#client, upstream, this.#ctx, {
      downstreamHead,
      ...(this.#idleTimeoutMs ? { idleTimeoutMs: this.#idleTimeoutMs } : {}),
    }).then(
      (summary) => log.debug('CONNECT tunnel closed', { target, endedBy: summary.endedBy, fromDownstream: summary.fromDownstream, fromUpstream: summary.fromUpstream }),
      (err: unknown) => log.error('relay failed', { err }),
    );
    return { ended };
  }

  /**
   * Forwards one absolute-form request and its response. Returns whether the client
   * connection stays open for another request. Throws (for an error reply) only while no
   * final response byte has been sent to the client.
   *
   * A request without a body that fails on a reused upstream connection before any response
   * byte is retried once on a fresh connection: the server may have closed its idle side just
   * as we wrote (RFC 9112 §9.3.1 allows retrying idempotent-safe cases like this).
   */
  async #forward(req: ProxyRequest): Promise<boolean> {
    if (req.target.form !== 'absolute') throw new Error('forward needs an absolute-form target');
    const requestHead = buildUpstreamRequestHead(req.head, {
      path: req.target.path,
      authority: req.target.authority,
      via: this.#cfg.via,
    });
    const mayPool = req.framing.kind === 'none' && POOL_METHODS.has(req.head.method);
    for (let attempt = 0; ; attempt += 1) {
      // The retry dials fresh: it must not land on another stale pooled connection.
      // A kept-alive upstream that can take it is found without an await (a promise and a turn
      // of the microtask queue per request on a live connection).
      const { up, headSent } = (attempt === 0 ? this.#currentFor(req.target.target) : undefined) ?? (await this.#upstreamFor(req.target.target, mayPool && attempt === 0, requestHead));
      const state: ExchangeState = { responseStarted: false, bodyStarted: false };
      try {
        return await this.#exchange(req, up, headSent ? undefined : requestHead, state);
      } catch (err) {
        this.#releaseUpstream();
        const retry = attempt === 0 && up.served > 0 && !state.responseStarted && !state.bodyStarted && err instanceof UpstreamError;
        if (retry) {
          this.#ctx.log.debug('reused upstream connection failed before a response, retrying on a new one', { err });
          continue;
        }
        if (state.responseStarted || err instanceof DownstreamGoneError) {
          this.#ctx.log.info('http exchange aborted after response started', {
            target: formatTarget(req.target.target),
            code: err instanceof ProxyError ? err.code : undefined,
            err,
          });
          return false;
        }
        throw err;
      }
    }
  }

  /** `requestHead` undefined: the dial already wrote it (sendFirst). */
  async #exchange(req: ProxyRequest, up: UpstreamConnection, requestHead: Buffer | undefined, state: ExchangeState): Promise<boolean> {
    up.idle = false;
    if (requestHead !== undefined) {
      try {
        await writeAll(up.socket, requestHead);
      } catch (err) {
        throw this.#upstreamFailure(up, err, 'writing the request head');
      }
    }
    // The body goes up while the response comes down: a server may answer before reading the
    // whole body, and `Expect: 100-continue` clients wait for the interim response.
    let pumpResult: PumpResult | undefined;
    const pump = this.#pumpRequestBody(req.framing, up, state).then((r) => {
      pumpResult = r;
      if (!r.ok) up.socket.destroy(); // unblocks the response side
      return r;
    });
    // A client that goes away while the upstream is still thinking must not leave the
    // upstream request running: nothing else would notice until the response arrived.
    const onClientClose = (): void => {
      up.socket.destroy();
    };
    this.#client.once('close', onClientClose);
    let outcome: ResponseOutcome;
    try {
      outcome = await this.#relayResponse(req, up, state);
    } catch (err) {
      if (this.#client.destroyed) throw new DownstreamGoneError(ErrorCode.BAD_REQUEST, 'client went away during the exchange', { cause: err });
      // A bad request body is the client's error: prefer it over the upstream symptom.
      const settled = pumpResult ?? (await Promise.race([pump, Promise.resolve(undefined)]));
      if (settled && !settled.ok && settled.error instanceof ProxyError && settled.error.side === 'downstream') throw settled.error;
      throw err;
    } finally {
      this.#client.off('close', onClientClose);
    }
    up.served += 1;
    // A natively pumped request body may be wholly written while the engine's report of it is
    // still on its way (the origin answers as soon as it has the last byte, and its response
    // can be read first): wait for that report rather than take the body for unfinished.
    if (pumpResult === undefined && this.#requestPump?.allWritten()) await pump;
    // The server answered before the request body was complete: the connection state on both
    // sides is unknown, so neither is reused.
    const bodyDone = pumpResult?.ok === true;
    if (!outcome.keepUpstream || !bodyDone) this.#releaseUpstream();
    else up.idle = true;
    return bodyDone && !outcome.closeClient;
  }

  /** Request body, client → upstream, as raw bytes; stops exactly at the body's end so the
   *  next pipelined request stays in the client reader. Never rejects. */
  async #pumpRequestBody(framing: BodyFraming, up: UpstreamConnection, state: ExchangeState): Promise<PumpResult> {
    try {
      if (framing.kind === 'none' || framing.kind === 'close') return { ok: true };
      if (framing.kind === 'length') {
        let remaining = framing.length;
        if (this.#pumpable(this.#down, remaining)) {
          state.bodyStarted = true;
          const pumped = await this.#pumpRequestBodyNatively(up, remaining);
          if (pumped) return { ok: true };
        }
        while (remaining > 0) {
          let chunk = await this.#readClientBody();
          state.bodyStarted = true;
          if (chunk.length > remaining) {
            this.#down.unread(chunk.subarray(remaining));
            chunk = chunk.subarray(0, remaining);
          }
          remaining -= chunk.length;
          await this.#writeUp(up, chunk);
        }
        return { ok: true };
      }
      const decoder = new ChunkedDecoder();
      while (!decoder.done) {
        const chunk = await this.#readClientBody();
        state.bodyStarted = true;
        const used = decoder.push(chunk);
        if (used < chunk.length) this.#down.unread(chunk.subarray(used));
        await this.#writeUp(up, used < chunk.length ? chunk.subarray(0, used) : chunk);
      }
      return { ok: true };
    } catch (error) {
      return { ok: false, error };
    }
  }

  /** Whether a body of `length` bytes (or to EOF) still to come through `reader` goes to the
   *  native pump: the engine is in use, the reader is live, and more than what it already
   *  queued is still due (a body already read goes out from JS). */
  #pumpable(reader: SocketReader, length: number | 'eof'): boolean {
    if (this.#pump === undefined || !reader.canSuspend) return false;
    if (length === 'eof') return true;
    return length >= PUMP_MIN_BYTES && reader.queuedBytes < length;
  }

  /**
   * Runs deps.pump for one body, `from` → `to`, with `reader` (which reads `from`) suspended
   * around it: its queued bytes go first, bytes the pump took from `from` are counted with
   * `count`, as the reader would have. Returns undefined when the pump could not start (the
   * reader then has its bytes back and the JS loop carries on).
   */
  async #runPump(
    reader: SocketReader,
    to: Socket,
    length: number | 'eof',
    count: (n: number) => void,
    idleTimeoutMs: number,
    onStarted?: (progress: PumpProgress) => void,
  ): Promise<NativePumpResult | undefined> {
    const head = reader.suspend();
    try {
      const result = await this.#pump!(reader.socket, to, {
        length: length === 'eof' ? 'eof' : length - head.length,
        head,
        idleTimeoutMs,
        signal: this.#ctx.signal,
        ...(onStarted ? { onStarted } : {}),
      });
      count(result.moved);
      return result;
    } catch (err) {
      if (!(err instanceof PumpHandoverError)) throw err;
      this.#ctx.log.debug('native body pump could not start; forwarding in JS', { err });
      reader.unread(head);
      return undefined;
    } finally {
      reader.resume();
    }
  }

  /** The request body through the native pump. True when it was all forwarded, false when
   *  the pump could not start (nothing consumed: the JS loop takes over); throws what the JS
   *  loop would have thrown. No idle limit, as in JS: the response side's limit applies. */
  async #pumpRequestBodyNatively(up: UpstreamConnection, length: number): Promise<boolean> {
    const countDown = (n: number): void => {
      this.#ctx.bytes.fromDownstream += n;
    };
    let r: NativePumpResult | undefined;
    try {
      r = await this.#runPump(this.#down, up.socket, length, countDown, 0, (progress) => {
        this.#requestPump = progress;
      });
    } finally {
      this.#requestPump = undefined;
    }
    if (r === undefined) return false;
    switch (r.endedBy) {
      case 'done':
        return true;
      case 'eof':
        throw new DownstreamGoneError(ErrorCode.BAD_REQUEST, 'client closed during the request body');
      case 'error':
        if (r.side === 'from') throw r.error ?? pumpStopped(r); // the client socket's own error, as #down.read() rejects
        throw this.#upstreamFailure(up, r.error, 'writing the request body');
      default:
        // Aborted: one of the sockets was closed under the pump (or the proxy cut the connection).
        if (this.#client.destroyed) throw new DownstreamGoneError(ErrorCode.BAD_REQUEST, 'client closed during the request body');
        throw this.#upstreamFailure(up, pumpStopped(r), 'writing the request body');
    }
  }

  /** A response body through the native pump: true when complete (false never: the pump
   *  reads nothing beyond the body), undefined when it could not start; throws what the JS
   *  loop would have thrown. */
  async #pumpResponseBodyNatively(up: UpstreamConnection, length: number | 'eof'): Promise<boolean | undefined> {
    const doing = length === 'eof' ? 'reading a close-delimited body' : 'reading the response body';
    const r = await this.#runPump(up.reader, this.#client, length, this.#countUpstream, this.#idleTimeoutMs ?? 0);
    if (r === undefined) return undefined;
    switch (r.endedBy) {
      case 'done':
        return true;
      case 'eof':
        throw new UpstreamError(ErrorCode.UPSTREAM_RESET, up.target, 'upstream closed before the end of the response body');
      case 'idle':
        // The engine's idle clock also counts bytes written to the client.
        throw new UpstreamError(ErrorCode.IDLE_TIMEOUT, up.target, `no bytes from the upstream for ${this.#idleTimeoutMs} ms while ${doing}`);
      case 'error':
        if (r.side === 'to') throw new DownstreamGoneError(ErrorCode.BAD_REQUEST, 'client went away during the response', { cause: r.error });
        if (r.side === 'from') throw this.#upstreamFailure(up, r.error, doing);
        throw new ProxyError(ErrorCode.INTERNAL, 'internal', 'native body pump failed', { cause: r.error });
      default:
        if (this.#client.destroyed) throw new DownstreamGoneError(ErrorCode.BAD_REQUEST, 'client went away during the response');
        throw this.#upstreamFailure(up, pumpStopped(r), doing);
    }
  }

  async #readClientBody(): Promise<Buffer> {
    const chunk = await this.#down.read();
    if (chunk === null || chunk === READ_TIMEOUT) {
      throw new DownstreamGoneError(ErrorCode.BAD_REQUEST, 'client closed during the request body');
    }
    return chunk;
  }

  async #writeUp(up: UpstreamConnection, buf: Buffer): Promise<void> {
    try {
      await writeAll(up.socket, buf);
    } catch (err) {
      throw this.#upstreamFailure(up, err, 'writing the request body');
    }
  }

  async #writeDown(buf: Buffer, then?: Buffer): Promise<void> {
    try {
      await writeAll(this.#client, buf, then);
    } catch (err) {
      throw new DownstreamGoneError(ErrorCode.BAD_REQUEST, 'client went away during the response', { cause: err });
    }
  }

  #upstreamFailure(up: UpstreamConnection, err: unknown, doing: string): UpstreamError {
    if (err instanceof UpstreamError) return err;
    const errno = typeof (err as { code?: unknown })?.code === 'string' ? (err as { code: string }).code : undefined;
    return new UpstreamError(ErrorCode.UPSTREAM_RESET, up.target, `upstream connection failed while ${doing}`, { cause: err, errno });
  }

  /** Next bytes from the upstream; null at its EOF. A silent upstream is an IDLE_TIMEOUT
   *  (504 if no response byte was sent yet, otherwise the connection is closed). */
  async #readUpstream(up: UpstreamConnection, doing: string): Promise<Buffer | null> {
    let chunk: Awaited<ReturnType<SocketReader['read']>>;
    try {
      chunk = await up.reader.read(this.#idleTimeoutMs);
    } catch (err) {
      throw this.#upstreamFailure(up, err, doing);
    }
    if (chunk === READ_TIMEOUT) {
      throw new UpstreamError(ErrorCode.IDLE_TIMEOUT, up.target, `no bytes from the upstream for ${this.#idleTimeoutMs} ms while ${doing}`);
    }
    return chunk;
  }

  /** Response, upstream → client: interim 1xx responses, then the final head and its body
   *  framed per RFC 9112 §6.3. */
  async #relayResponse(req: ProxyRequest, up: UpstreamConnection, state: ExchangeState): Promise<ResponseOutcome> {
    let res: ResponseHead;
    for (;;) {
      res = await this.#readResponseHead(up);
      if (res.status >= 200) break;
      if (res.status === 101) {
        throw new UpstreamError(ErrorCode.UPSTREAM_PROTOCOL, up.target, '101 Switching Protocols without an Upgrade request');
      }
      // RFC 9110 §15.2: a proxy forwards 1xx responses, but not to an HTTP/1.0 client.
      if (req.head.version === '1.1') await this.#writeDown(buildInterimResponseHead(res, this.#cfg.via));
    }
    let framing: BodyFraming;
    try {
      framing = responseBodyFraming(res, req.head.method);
    } catch (err) {
      // RFC 9112 §6.3: an invalid Content-Length in a response a proxy received is a 502.
      throw new UpstreamError(ErrorCode.UPSTREAM_PROTOCOL, up.target, 'invalid response framing', { cause: err });
    }
    // An HTTP/1.0 client cannot read chunked coding: decode it, and delimit by closing.
    const dechunk = framing.kind === 'chunked' && req.head.version === '1.0';
    const closeClient = !clientWantsPersistence(req.head) || framing.kind === 'close' || dechunk;
    const head = buildDownstreamResponseHead(res, {
      via: this.#cfg.via,
      close: closeClient,
      http10KeepAlive: !closeClient && req.head.version === '1.0',
      dechunk,
    });
    this.#ctx.access.status = res.status;
    state.responseStarted = true;
    // A small body that came with its head goes out in the same write: one syscall and one
    // segment to the client instead of two (short exchanges are bound by per-request costs).
    const small = framing.kind === 'length' && framing.length > 0 && framing.length <= COALESCED_BODY_MAX ? up.reader.takeQueued(framing.length) : undefined;
    let clean: boolean;
    if (small !== undefined) {
      await this.#writeDown(head, small);
      // Bytes beyond the body: as in the body loop, the upstream is not reused.
      clean = up.reader.queuedBytes === 0;
    } else {
      await this.#writeDown(head);
      clean = await this.#forwardResponseBody(framing, up, dechunk);
    }
    return { closeClient, keepUpstream: clean && framing.kind !== 'close' && upstreamAllowsPersistence(res) };
  }

  async #readResponseHead(up: UpstreamConnection): Promise<ResponseHead> {
    const decoder = new HeadDecoder(RESPONSE_HEAD_LIMITS);
    for (;;) {
      const chunk = await this.#readUpstream(up, 'reading the response head');
      if (chunk === null) throw new UpstreamError(ErrorCode.UPSTREAM_RESET, up.target, 'upstream closed before a complete response head');
      try {
        const pushed = decoder.push(chunk);
        if (pushed.done) {
          up.reader.unread(pushed.rest);
          return parseResponseHead(pushed.head);
        }
      } catch (err) {
        throw new UpstreamError(ErrorCode.UPSTREAM_PROTOCOL, up.target, 'malformed response head', { cause: err });
      }
    }
  }

  /** Forwards the response body as raw bytes. Returns false when the upstream sent bytes
   *  beyond the body (the connection is then not reused). Throws if it ends early. */
  async #forwardResponseBody(framing: BodyFraming, up: UpstreamConnection, dechunk: boolean): Promise<boolean> {
    switch (framing.kind) {
      case 'none':
        return true;
      case 'close': {
        if (this.#pumpable(up.reader, 'eof')) {
          const pumped = await this.#pumpResponseBodyNatively(up, 'eof');
          if (pumped !== undefined) return pumped;
        }
        for (;;) {
          const chunk = await this.#readUpstream(up, 'reading a close-delimited body');
          if (chunk === null) return true;
          await this.#writeDown(chunk);
        }
      }
      case 'length': {
        let remaining = framing.length;
        if (this.#pumpable(up.reader, remaining)) {
          const pumped = await this.#pumpResponseBodyNatively(up, remaining);
          if (pumped !== undefined) return pumped;
        }
        let clean = true;
        while (remaining > 0) {
          let chunk = await this.#readUpstream(up, 'reading the response body');
          if (chunk === null) throw new UpstreamError(ErrorCode.UPSTREAM_RESET, up.target, 'upstream closed before the end of the response body');
          if (chunk.length > remaining) {
            clean = false;
            chunk = chunk.subarray(0, remaining);
          }
          remaining -= chunk.length;
          await this.#writeDown(chunk);
        }
        return clean;
      }
      case 'chunked': {
        const decoder = new ChunkedDecoder();
        let clean = true;
        while (!decoder.done) {
          const chunk = await this.#readUpstream(up, 'reading the chunked response body');
          if (chunk === null) throw new UpstreamError(ErrorCode.UPSTREAM_RESET, up.target, 'upstream closed inside a chunked response body');
          const spans: Array<[number, number]> = [];
          let used: number;
          try {
            used = decoder.push(chunk, dechunk ? (s, e) => spans.push([s, e]) : undefined);
          } catch (err) {
            throw new UpstreamError(ErrorCode.UPSTREAM_PROTOCOL, up.target, 'malformed chunked response body', { cause: err });
          }
          if (used < chunk.length) clean = false;
          if (dechunk) {
            for (const [s, e] of spans) if (e > s) await this.#writeDown(chunk.subarray(s, e));
          } else {
            await this.#writeDown(used < chunk.length ? chunk.subarray(0, used) : chunk);
          }
        }
        return clean;
      }
    }
  }

  // ---- errors -------------------------------------------------------------------------------

  /** Maps an error to its one reply, logs it with code and target, and writes the reply. */
  async #replyError(err: unknown, head: RequestHead | undefined): Promise<void> {
    if (err instanceof DownstreamGoneError) {
      this.#ctx.log.debug('client went away', { err });
      return;
    }
    const reply = replyToError(err, this.#ctx, head?.method);
    try {
      await writeAll(this.#client, reply);
    } catch (writeErr) {
      this.#ctx.log.debug('could not write error reply', { err: writeErr });
    }
  }

  // ---- 5. account ---------------------------------------------------------------------------

  /** Per-request access fields (the listener writes the access line at close) and a debug line. */
  #account(head: RequestHead | undefined, startedAt: number): void {
    const durationMs = performance.now() - startedAt;
    const bytes = this.#ctx.bytes;
    publishRequestDone({
      ctx: this.#ctx,
      clientSubflows: this.#ctx.downstream.mptcp ? readSubflowCount(this.#client) : undefined,
      method: head?.method,
      url: head?.target,
      status: typeof this.#ctx.access.status === 'number' ? this.#ctx.access.status : undefined,
      durationMs,
      fromDownstream: bytes.fromDownstream - this.#bytesAtRequestStart.fromDownstream,
      fromUpstream: bytes.fromUpstream - this.#bytesAtRequestStart.fromUpstream,
    });
    this.#bytesAtRequestStart = { ...bytes };
  }

  // ---- close --------------------------------------------------------------------------------

  /** Closes what we still own: the upstream at once, the client gracefully (FIN, keep reading
   *  and dropping for a moment so unread request bytes do not turn our reply into an RST). */
  async #closeAll(): Promise<void> {
    this.#takeEarly(undefined);
    if (this.#handedOver) return;
    this.#releaseUpstream(true);
    const client = this.#client;
    if (client.destroyed) return;
    this.#down.discard();
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => client.destroy(), LINGER_MS);
      client.once('close', () => {
        clearTimeout(timer);
        resolve();
      });
      client.end();
    });
  }
}
