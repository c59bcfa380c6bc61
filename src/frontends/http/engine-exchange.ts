/**
 * HTTP exchanges served in the native engine, with no Node socket on either side
 * (docs/design.md, "Exchanges served in the engine").
 *
 * The engine's acceptor hands over a client of an HTTP listener with its request head (peeked,
 * still in the socket) and the upstream connect that head's request line named. When the
 * request is one the proxy forwards unchanged but for the heads, JS only rewrites those heads
 * and the engine moves everything else:
 *
 *   1. here: parse and check the request head; rewrite it for the upstream — with
 *      `Connection: close` unless the keep-alive loop (below) may follow, so that the response
 *      ends where the upstream's stream does;
 *   2. engine: drop the client's head from its socket, send ours once the connect completes,
 *      gather the response head; a plain one it rewrites itself (native/src/http-head.c, the
 *      same bytes as rewrite.ts), any other it gives back;
 *   3. here (respond): rewrite that response head (our status-line version, hop-by-hop fields
 *      out, Via, our Connection decision; 1xx heads forwarded), or reply 502/504 in its place,
 *      also when the upstream failed before its head was whole;
 *   4. engine: relay the body to its end — the upstream's EOF, or for a kept client its length
 *      or chunk framing.
 *
 * (A plain GET does not even come here: the acceptor serves it from accept with the same relay,
 * its heads rewritten in C — HandoffPlan.serve, respondAtAccept for the heads it declines.)
 *
 * Which requests: absolute-form http:// to the IP literal the engine connects to, HTTP/1.1,
 * no body, and the first on its connection. Anything else — a body, CONNECT, HTTP/1.0 (a
 * chunked response would need decoding), a malformed head (which gets its error reply) — goes
 * to the HttpProxySession on a Node socket.
 *
 * A keep-alive client (no `Connection: close`) is held while its exchange runs (the engine
 * reads nothing past its head: a next request waits in its socket), and when its response can
 * be delimited (a length, no body, chunked) it gets a keep-alive head and stays open. Then:
 * - the keep-alive loop, for a GET: the upstream was asked to stay open too, and while both do,
 *   the engine reads the client's next request itself; a plain GET to the same authority
 *   (http-head.c decides, with rewrite.ts's bytes) goes out on the same upstream connection and
 *   its response comes back as the first one's did — no JS on the way, each exchange reported
 *   afterwards (ExchangeAccount: one request line each);
 * - otherwise (another request, an upstream that closed or answered `Connection: close`), the
 *   engine gives the client back to its acceptor (HandedOverClient.giveBack), which waits for
 *   the next request and hands it over again, to a session — or closes it when the client
 *   closes first (a one-request client such as a one-URL curl run: no Node socket at all).
 * A response that cannot be delimited closes the client, as for `Connection: close`.
 *
 * Why: a short request through a Node socket costs about 300 µs of main-thread CPU (accept,
 * stream machinery, end and destroy), and a kept-alive one about 100 µs each way; here JS parses
 * one head (two for an unusual response) and writes the log lines.
 */
import type { HttpListenerConfig } from '../../config/types.js';
import type { ConnectionContext } from '../../core/context.js';
import { publishRequestDone } from '../../core/channels.js';
import { ErrorCode, ProxyError, UpstreamError, formatTarget } from '../../core/errors.js';
import type { TargetAddress } from '../../core/errors.js';
import { HeadThen } from '../../relay/native-relay.js';
import type { ConnectingRelay, EngineExchangeEnd, EngineExchangeLoop, EngineExchangeReport, HeadDecision, UpstreamFailure } from '../../relay/native-relay.js';
import type { EarlyConnect, PendingConnect } from '../../upstream/types.js';
import type { EngineExchange, HandedOverClient } from '../types.js';
import { requestBodyFraming, responseBodyFraming } from './framing.js';
import { HeadDecoder, RESPONSE_HEAD_LIMITS, clientWantsPersistence, headerValues, parseRequestHead, parseRequestTarget, parseResponseHead } from './parser.js';
import type { RequestHead } from './parser.js';
import { buildDownstreamResponseHead, buildInterimResponseHead, buildUpstreamRequestHead } from './rewrite.js';
import { replyToError } from './status.js';

/** What the engine needs to serve it (FrontendDeps.relayConnecting). */
type ExchangeEngine = Pick<ConnectingRelay, 'startExchange' | 'abort'>;

interface Eligible {
  head: RequestHead;
  /** The client wants its connection kept (no `Connection: close`). */
  keepAlive: boolean;
  /** The keep-alive loop: the request line's authority, when the upstream is asked to stay
   *  open and the client's later GETs to it are the engine's too (see the header). */
  loopAuthority: string | undefined;
  target: TargetAddress;
  upstreamHead: Buffer;
  /** Bytes of the client's stream the engine drops: its head as peeked. */
  skip: number;
}

/**
 * The exchange, when the handed-over client's request can be served in the engine (see the
 * header); undefined otherwise, with nothing touched: the caller serves it on a Node socket.
 * `via`: nativeVia(cfg.via), worked out once per listener.
 */
export function planEngineExchange(h: HandedOverClient, cfg: HttpListenerConfig, engine: ExchangeEngine | undefined, idleTimeoutMs: number, via: string | undefined): EngineExchange | undefined {
  const early = h.early;
  if (engine === undefined || early?.takePending === undefined || h.head === undefined || h.kept) return undefined;
  const req = eligible(h.head, cfg, early.target, via !== undefined);
  if (req === undefined) return undefined;
  return { run: (ctx) => serve(h, early, req, cfg, via, engine, idleTimeoutMs, ctx), abort: (ctx) => void engine.abort(ctx) };
}

function eligible(bytes: Buffer, cfg: HttpListenerConfig, connecting: TargetAddress, engineWritesVia: boolean): Eligible | undefined {
  try {
    const pushed = new HeadDecoder({ maxBytes: cfg.maxHeaderBytes, maxCount: cfg.maxHeaderCount }).push(bytes);
    // Bytes after the head would be a body or a pipelined request: the session's to read.
    if (!pushed.done || pushed.rest.length > 0) return undefined;
    const head = parseRequestHead(pushed.head);
    if (head.version !== '1.1') return undefined;
    const target = parseRequestTarget(head.method, head.target);
    if (target.form !== 'absolute' || formatTarget(target.target) !== formatTarget(connecting)) return undefined;
    // More than one Host is a 400, and a body needs the session's framing: its way, both.
    if (headerValues(head.headers, 'host').length > 1 || requestBodyFraming(head).kind !== 'none') return undefined;
    const keepAlive = clientWantsPersistence(head);
    // The loop rewrites heads in C: a GET (the requests it takes), with a Via it can write.
    const loop = keepAlive && head.method === 'GET' && engineWritesVia;
    const upstreamHead = buildUpstreamRequestHead(head, { path: target.path, authority: target.authority, via: cfg.via, close: !loop });
    return { head, keepAlive, loopAuthority: loop ? target.authority : undefined, target: target.target, upstreamHead, skip: bytes.length };
  } catch {
    return undefined; // malformed: the session parses it again and replies with the error
  }
}

function serve(h: HandedOverClient, early: EarlyConnect, req: Eligible, cfg: HttpListenerConfig, via: string | undefined, engine: ExchangeEngine, idleTimeoutMs: number, ctx: ConnectionContext): Promise<boolean> {
  const startedAt = performance.now();
  ctx.target = req.target;
  ctx.access.requests = 1;
  ctx.access.method = req.head.method;
  ctx.access.url = req.head.target;
  const pending = early.takePending!(ctx);
  if (pending === undefined) throw new Error('the early connect of a planned engine exchange was already used');
  if (ctx.log.isEnabled('debug')) ctx.log.debug('http exchange served in the engine', { method: req.head.method, target: formatTarget(req.target) });
  const onResponseHead = (bytes: Buffer | null, complete: boolean, failure: UpstreamFailure | undefined): HeadDecision =>
    respond(bytes, complete, failure, { ...req, upstreamStays: req.loopAuthority !== undefined }, cfg, pending, ctx, idleTimeoutMs);
  // A kept client goes back to the acceptor before the summary (EngineExchangeOptions.onKept).
  let givenBack = false;
  const onKept = req.keepAlive ? (fd: number): void => void (givenBack = h.giveBack(fd)) : undefined;
  // One request line per exchange: the loop's as the engine reports them, the last at the end.
  const requests = new ExchangeAccount(ctx, req.head, startedAt);
  const loop: EngineExchangeLoop | undefined =
    req.loopAuthority === undefined
      ? undefined
      : {
          authority: req.loopAuthority,
          maxHeadBytes: cfg.maxHeaderBytes,
          maxFields: cfg.maxHeaderCount,
          idleMs: cfg.keepAliveTimeoutMs,
          onExchange: (e) => requests.reported(e),
        };
  let end: EngineExchangeEnd | undefined;
  let started;
  try {
    started = engine.startExchange(
      h.fd,
      {
        fd: pending.fd,
        timeoutMs: pending.timeoutMs,
        plainTcp: pending.plainTcp,
        onConnected: (c) => pending.connected(c.connectMs, c.mptcp),
        // The client got its 502/504 from respond(), which also published the dial's error.
        onFailed: () => {},
      },
      req.upstreamHead,
      {
        skipDown: req.skip,
        responseVia: via,
        onResponseHead,
        onEnd: (e) => void (end = e),
        ...(req.head.method === 'HEAD' ? { headRequest: true } : {}),
        ...(onKept ? { onKept } : {}),
        ...(loop ? { loop } : {}),
      },
      ctx,
      { idleTimeoutMs },
    );
  } catch (err) {
    // The engine refused (stopped under us): it closed both fds; the client sees a close.
    ctx.log.error('the native engine refused an HTTP exchange', { err });
    return Promise.resolve(false);
  }
  return started.then(() => {
    requests.ended(end);
    return givenBack;
  });
}

/**
 * The request lines of an engine relay's exchanges: each one the keep-alive loop moved past
 * (reported by the engine with its own bytes and duration), then the one the relay ended with,
 * if any, from what is left of the connection's totals. ctx.access follows the latest request,
 * so that a session taking the client over goes on from there.
 */
export class ExchangeAccount {
  #published = 0;
  #fromDownstream = 0;
  #fromUpstream = 0;
  #lastEnd: number;

  /** `first`: the relay's first request as JS parsed it (undefined: the engine reports its
   *  method and target with it, as for the loop's). */
  constructor(
    private readonly ctx: ConnectionContext,
    private readonly first: Pick<RequestHead, 'method' | 'target'> | undefined,
    startedAt: number,
  ) {
    this.#lastEnd = startedAt;
  }

  reported(e: EngineExchangeReport): void {
    this.#fromDownstream += e.fromDownstream;
    this.#fromUpstream += e.fromUpstream;
    this.#lastEnd = performance.now();
    if (e.status !== undefined) this.ctx.access.status = e.status;
    this.#publish(e.method, e.target, e.durationMs, e.fromDownstream, e.fromUpstream);
  }

  /** The relay's end: `end` undefined is an engine that reports no loop (one exchange, open). */
  ended(end: EngineExchangeEnd | undefined): void {
    if (end !== undefined && !end.open) return;
    const ctx = this.ctx;
    this.#publish(end?.method, end?.target, performance.now() - this.#lastEnd, ctx.bytes.fromDownstream - this.#fromDownstream, ctx.bytes.fromUpstream - this.#fromUpstream);
  }

  #publish(method: string | undefined, target: string | undefined, durationMs: number, fromDownstream: number, fromUpstream: number): void {
    const ctx = this.ctx;
    this.#published += 1;
    ctx.access.requests = this.#published;
    ctx.access.method = method ?? this.first?.method;
    ctx.access.url = target ?? this.first?.target;
    publishRequestDone({
      ctx,
      clientSubflows: ctx.downstreamSubflows,
      method: ctx.access.method,
      url: ctx.access.url,
      status: typeof ctx.access.status === 'number' ? ctx.access.status : undefined,
      durationMs,
      fromDownstream,
      fromUpstream,
    });
  }
}

/**
 * The engine's onResponseHead: the client's bytes for what came from the upstream — interim
 * (1xx) heads and the final head rewritten, with the body bytes that came along — or an error
 * reply in the response's place, as HttpProxySession would send.
 */
function respond(
  bytes: Buffer | null,
  complete: boolean,
  failure: UpstreamFailure | undefined,
  req: Pick<Eligible, 'head' | 'keepAlive' | 'target'> & { upstreamStays?: boolean },
  cfg: HttpListenerConfig,
  pending: PendingConnect | undefined,
  ctx: ConnectionContext,
  idleTimeoutMs: number,
): HeadDecision {
  const interim: Buffer[] = [];
  // ctx.target is req.target (serve), so the log line names it as the session's does.
  const fail = (err: ProxyError): HeadDecision => ({ out: Buffer.concat([...interim, replyToError(err, ctx, req.head.method)]), then: HeadThen.End });
  if (failure !== undefined) {
    if (failure.syscall === 'connect' && pending !== undefined) {
      const cause = Object.assign(new Error(`connect ${failure.code}`), { code: failure.code, syscall: 'connect' });
      return fail(pending.failed(cause, failure.code === 'ETIMEDOUT'));
    }
    if (failure.code === 'ETIMEDOUT') {
      // The relay's idle timeout, as the session's read of the response head would time out.
      return fail(new UpstreamError(ErrorCode.IDLE_TIMEOUT, req.target, `no bytes from the upstream for ${idleTimeoutMs} ms while reading the response head`));
    }
    return fail(new UpstreamError(ErrorCode.UPSTREAM_RESET, req.target, `upstream ${failure.code} before a complete response head`));
  }
  let rest = bytes ?? Buffer.alloc(0);
  for (;;) {
    let pushed;
    try {
      pushed = new HeadDecoder(RESPONSE_HEAD_LIMITS).push(rest);
    } catch (err) {
      return fail(new UpstreamError(ErrorCode.UPSTREAM_PROTOCOL, req.target, 'malformed response head', { cause: err }));
    }
    if (!pushed.done) {
      // After an interim head, the next one may still be on its way: gather on from what came
      // of it (leading blank lines dropped, so the engine does not take them for a head's end).
      if (interim.length > 0 && complete) return { out: Buffer.concat(interim), then: HeadThen.Again, carry: dropLeadingNewlines(rest) };
      if (complete) return fail(new UpstreamError(ErrorCode.UPSTREAM_PROTOCOL, req.target, 'malformed response head'));
      return fail(
        rest.length >= RESPONSE_HEAD_LIMITS.maxBytes
          ? new UpstreamError(ErrorCode.UPSTREAM_PROTOCOL, req.target, `response head larger than ${RESPONSE_HEAD_LIMITS.maxBytes / 1024} KiB`)
          : new UpstreamError(ErrorCode.UPSTREAM_RESET, req.target, 'upstream closed before a complete response head'),
      );
    }
    let res;
    try {
      res = parseResponseHead(pushed.head);
    } catch (err) {
      return fail(new UpstreamError(ErrorCode.UPSTREAM_PROTOCOL, req.target, 'malformed response head', { cause: err }));
    }
    if (res.status === 101) return fail(new UpstreamError(ErrorCode.UPSTREAM_PROTOCOL, req.target, '101 Switching Protocols without an Upgrade request'));
    if (res.status < 200) {
      // RFC 9110 §15.2: forwarded (the client is HTTP/1.1 here).
      interim.push(buildInterimResponseHead(res, cfg.via));
      rest = pushed.rest;
      if (rest.length === 0) return { out: Buffer.concat(interim), then: HeadThen.Again, carry: null };
      continue;
    }
    let framing;
    try {
      framing = responseBodyFraming(res, req.head.method);
    } catch (err) {
      // RFC 9112 §6.3: an invalid Content-Length in a response a proxy received is a 502.
      return fail(new UpstreamError(ErrorCode.UPSTREAM_PROTOCOL, req.target, 'invalid response framing', { cause: err }));
    }
    ctx.access.status = res.status;
    // A keep-alive client stays open when it can tell where the body ends: its length, or none.
    const bodyLength = framing.kind === 'length' ? framing.length : framing.kind === 'none' ? 0 : undefined;
    if (req.keepAlive && bodyLength !== undefined) {
      // Bytes past the body in what came with the head are neither the client's nor a clean
      // upstream's: the client gets the body, then a FIN (the engine drops later ones itself).
      const keep = pushed.rest.length <= bodyLength;
      const head = buildDownstreamResponseHead(res, { via: cfg.via, close: !keep, http10KeepAlive: false, dechunk: false });
      const out = Buffer.concat([...interim, head, keep ? pushed.rest : pushed.rest.subarray(0, bodyLength)]);
      return keep ? { out, then: HeadThen.Keep, keepBody: bodyLength - pushed.rest.length } : { out, then: HeadThen.End };
    }
    const head = buildDownstreamResponseHead(res, { via: cfg.via, close: true, http10KeepAlive: false, dechunk: false });
    // The client is closed after this body, and its upstream was asked to stay (the keep-alive
    // loop, or a closing client with the engine's pool on): the upstream will not end the body
    // by closing, so the engine finds its end by the framing (a chunked one here: a length or no
    // body went the Keep way above for a keep-alive client), then closes the client. A
    // close-delimited body ends with the upstream's close as ever.
    if (req.upstreamStays === true && framing.kind !== 'close') {
      const keepBody = framing.kind === 'chunked' ? -1 : (bodyLength ?? 0);
      return { out: Buffer.concat([...interim, head]), then: HeadThen.Framed, carry: pushed.rest, keepBody };
    }
    return { out: Buffer.concat([...interim, head, pushed.rest]), then: HeadThen.Relay };
  }
}

/**
 * HandoffServe.respond: the reply for a response head the engine declined in an exchange it
 * serves from accept (no JS saw its request: `request` is the head it read, a plain GET).
 */
export function respondAtAccept(
  ctx: ConnectionContext,
  request: Buffer,
  bytes: Buffer | null,
  complete: boolean,
  failure: UpstreamFailure | undefined,
  cfg: HttpListenerConfig,
  idleTimeoutMs: number,
  upstreamIdleMs: number,
): HeadDecision {
  const pushed = new HeadDecoder({ maxBytes: cfg.maxHeaderBytes, maxCount: cfg.maxHeaderCount }).push(request);
  if (!pushed.done) throw new Error('the engine sent a request head that is not whole');
  const head = parseRequestHead(pushed.head);
  const target = parseRequestTarget(head.method, head.target);
  const keepAlive = clientWantsPersistence(head);
  // The acceptor asks the upstream to stay for a keep-alive client (the loop), and for a closing
  // one too when its pool is on (native/src/acceptor.c, serve_at_accept: frame_up).
  return respond(bytes, complete, failure, { head, keepAlive, target: target.target, upstreamStays: keepAlive || upstreamIdleMs > 0 }, cfg, undefined, ctx, idleTimeoutMs);
}

/** The Via pseudonym for the engine's own response-head rewrite: printable ASCII that fits its
 *  buffer, so that its bytes are rewrite.ts's latin1 ones; otherwise none (JS rewrites every
 *  head). */
export function nativeVia(via: string): string | undefined {
  return via.length > 0 && via.length <= 100 && /^[\x21-\x7e]+$/.test(via) ? via : undefined;
}

function dropLeadingNewlines(b: Buffer): Buffer {
  let i = 0;
  while (i < b.length && (b[i] === 0x0d || b[i] === 0x0a)) i += 1;
  return b.subarray(i);
}
