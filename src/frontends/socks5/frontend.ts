/**
 * The SOCKS5 front-end (RFC 1928, with RFC 1929 username/password): CONNECT only.
 *
 *   client ──greeting──▶ proxy ──method──▶ client ──user/pass──▶ proxy ──status──▶
 *   client ──CONNECT host:port──▶ proxy ──dial──▶ server; proxy ──REP──▶ client; relay
 *
 * `handle` runs the numbered phases below, each a small function. A phase that refuses
 * writes its protocol reply, starts a graceful close and throws Socks5Refusal; `handle`
 * turns every outcome into one log line and resolves when the client socket is closed.
 *
 * The handshake (phases 1-3) must finish within cfg.handshakeTimeoutMs; the dial has its
 * own deadlines (upstream.connectTimeoutMs, dnsTimeoutMs).
 */
import type { Socket } from 'node:net';
import type { Socks5ListenerConfig } from '../../config/types.js';
import type { ConnectionContext } from '../../core/context.js';
import { AccessDeniedError, DownstreamError, ErrorCode, ProxyError, formatTarget } from '../../core/errors.js';
import type { LogLevel } from '../../core/logger.js';
import type { AccessPolicy } from '../../access/types.js';
import type { Frontend, FrontendDeps, RelayStarted } from '../types.js';
import type { RelaySummary } from '../../relay/types.js';
import {
  AuthMethod,
  Command,
  Reply,
  commandName,
  encodeAuthStatus,
  encodeMethodSelection,
  encodeReply,
  parseGreeting,
  parseRequest,
  parseUserPass,
  replyName,
  type ReplyCode,
  type Socks5Request,
} from './codec.js';
import { socks5ReplyForDialError } from './dial-error-replies.js';
import { HandshakeEofError, HandshakeReader } from './handshake-reader.js';

/**
 * How long we wait for the client to close after a failure reply before destroying the
 * socket. RFC 1928 §6: the server "MUST terminate the TCP connection shortly after sending
 * the reply. This must be no more than 10 seconds after detecting the condition".
 * Closing gracefully (FIN, then drain what the client still sends) rather than at once
 * keeps the kernel from answering unread bytes with a RST that could discard the reply.
 */
const FAILURE_LINGER_MS = 2000;

/** A phase refused the client: the reply is written and the socket is closing. */
class Socks5Refusal extends Error {
  override name = 'Socks5Refusal';
  constructor(
    message: string,
    readonly level: LogLevel,
    readonly error: ProxyError,
    readonly endedBy: 'downstream' | 'upstream' | 'proxy',
  ) {
    super(message);
  }
}

export interface Socks5FrontendOptions {
  /** relay.idleTimeoutMs, passed to the relay; 0 or absent = never. */
  idleTimeoutMs?: number;
}

export function createSocks5Frontend(cfg: Socks5ListenerConfig, deps: FrontendDeps, opts: Socks5FrontendOptions = {}): Frontend {
  return {
    kind: 'socks5',
    // Once the relay carries the connection the handler returns, and only the relay's end is
    // awaited: an idle tunnel holds no handler frame, socket or reader (as HTTP CONNECT).
    handle: (socket, ctx) => handleSocks5Client(socket, ctx, cfg, deps, opts).then((relayed) => relayed?.ended),
  };
}

async function handleSocks5Client(socket: Socket, ctx: ConnectionContext, cfg: Socks5ListenerConfig, deps: FrontendDeps, opts: Socks5FrontendOptions): Promise<RelayStarted | undefined> {
  const closed = waitForClose(socket);
  // Present for the handler's whole life, so an 'error' between phases (when no phase is
  // listening) cannot become an uncaught exception.
  socket.on('error', (err) => ctx.log.debug('downstream socket error', { err }));
  const reader = new HandshakeReader(socket);
  const deadline = setTimeout(() => {
    // Fail the pending (or next) read, and close now even if a phase is busy elsewhere
    // (e.g. checking a password): a slow client gets no more of our time.
    reader.fail(new DownstreamError(ErrorCode.HANDSHAKE_TIMEOUT, `SOCKS5 handshake not finished within ${cfg.handshakeTimeoutMs} ms`));
    socket.destroy();
  }, cfg.handshakeTimeoutMs);

  try {
    // 1. method negotiation
    const method = await negotiateMethod(socket, reader, deps.access, ctx);
    // 2. sub-negotiation
    if (method === AuthMethod.USERNAME_PASSWORD) await authenticateUser(socket, reader, deps.access, ctx);
    // 3. request
    const request = await readConnectRequest(socket, reader, ctx);
    clearTimeout(deadline);
    ctx.bytes.fromDownstream += reader.consumedBytes;
    // 4. dial
    const upstream = await dialUpstream(socket, reader, request, ctx, deps);
    if (upstream === undefined) return undefined; // the client left while we dialed
    // 5. reply
    sendSuccessReply(socket, upstream, ctx);
    // 6. relay
    const downstreamHead = reader.detach();
    ctx.log.debug('socks5 CONNECT', { target: formatTarget(request), user: ctx.access.user });
    return followRelay(deps.relay(socket, upstream, ctx, { downstreamHead, ...(opts.idleTimeoutMs ? { idleTimeoutMs: opts.idleTimeoutMs } : {}) }), ctx);
  } catch (err) {
    recordFailure(err, socket, reader, ctx);
    return undefined;
  } finally {
    clearTimeout(deadline);
    await closed;
  }
}

/**
 * The relay's end, seen by closures made here, outside handleSocks5Client: V8 keeps one context
 * per function for everything its closures capture, so closures made in the handler would hold
 * its socket and reader (captured by the handshake timer) for the tunnel's whole life — the heap
 * showed one net.Socket per idle tunnel, retained through the relay's summary promise.
 */
function followRelay(summary: Promise<RelaySummary>, ctx: ConnectionContext): RelayStarted {
  const ended = summary.then(
    (s) => {
      ctx.access.endedBy = s.endedBy;
    },
    (err: unknown) => {
      ctx.end ??= { by: 'proxy', error: err instanceof Error ? err : new Error(String(err)) };
      ctx.log.error('relay failed', { err });
    },
  );
  return { ended };
}

// 1. method negotiation ---------------------------------------------------------------

async function negotiateMethod(socket: Socket, reader: HandshakeReader, access: AccessPolicy, ctx: ConnectionContext): Promise<AuthMethod> {
  const greeting = await reader.read(parseGreeting);
  if (greeting.status === 'invalid') {
    // Not a SOCKS5 client (SOCKS4, HTTP...): "no acceptable methods" is the one answer RFC 1928 has.
    throw refuse(socket, reader, encodeMethodSelection(AuthMethod.NO_ACCEPTABLE), 'warn', badRequest(greeting.reason), 'proxy');
  }
  // RFC 1928 §3: the server selects one of the offered methods, or X'FF' if none is acceptable.
  const wanted = access.authRequired ? AuthMethod.USERNAME_PASSWORD : AuthMethod.NO_AUTH;
  if (!greeting.value.methods.includes(wanted)) {
    ctx.access.authMethod = 'none-acceptable';
    const offered = greeting.value.methods.map((m) => `0x${m.toString(16).padStart(2, '0')}`).join(',');
    const error = access.authRequired
      ? new AccessDeniedError(ErrorCode.AUTH_REQUIRED, 'auth-method', `client offered methods [${offered}] without username/password (0x02), which this listener requires`)
      : new AccessDeniedError(ErrorCode.NOT_SUPPORTED, 'auth-method', `client offered methods [${offered}] without "no authentication" (0x00), the only one this listener accepts`);
    throw refuse(socket, reader, encodeMethodSelection(AuthMethod.NO_ACCEPTABLE), 'info', error, 'proxy');
  }
  ctx.access.authMethod = wanted === AuthMethod.USERNAME_PASSWORD ? 'username-password' : 'none';
  socket.write(encodeMethodSelection(wanted));
  return wanted;
}

// 2. sub-negotiation (RFC 1929) ----------------------------------------------------------

async function authenticateUser(socket: Socket, reader: HandshakeReader, access: AccessPolicy, ctx: ConnectionContext): Promise<void> {
  const parsed = await reader.read(parseUserPass);
  if (parsed.status === 'invalid') {
    throw refuse(socket, reader, encodeAuthStatus(false), 'warn', badRequest(parsed.reason), 'proxy');
  }
  const { user, password } = parsed.value;
  ctx.access.user = user;
  if (!(await access.verifyCredentials(user, password))) {
    ctx.access.auth = 'failed';
    throw refuse(socket, reader, encodeAuthStatus(false), 'info', new AccessDeniedError(ErrorCode.AUTH_FAILED, 'credentials', `wrong user name or password for "${user}"`), 'proxy');
  }
  ctx.access.auth = 'ok';
  socket.write(encodeAuthStatus(true));
}

// 3. request ----------------------------------------------------------------------------

async function readConnectRequest(socket: Socket, reader: HandshakeReader, ctx: ConnectionContext): Promise<Socks5Request> {
  const parsed = await reader.read(parseRequest);
  if (parsed.status === 'invalid') {
    ctx.access.reply = parsed.reply;
    throw refuse(socket, reader, encodeReply(parsed.reply), 'warn', badRequest(parsed.reason), 'proxy');
  }
  const request = parsed.value;
  ctx.target = { host: request.host, port: request.port };
  ctx.access.command = commandName(request.command);
  if (request.command !== Command.CONNECT) {
    // BIND and UDP ASSOCIATE are not implemented (RFC 1928 §6 REP X'07').
    ctx.access.reply = Reply.COMMAND_NOT_SUPPORTED;
    const error = new DownstreamError(ErrorCode.NOT_SUPPORTED, `SOCKS5 command ${commandName(request.command)} is not supported; only CONNECT is`);
    throw refuse(socket, reader, encodeReply(Reply.COMMAND_NOT_SUPPORTED), 'info', error, 'proxy');
  }
  return request;
}

// 4. dial -------------------------------------------------------------------------------

async function dialUpstream(socket: Socket, reader: HandshakeReader, request: Socks5Request, ctx: ConnectionContext, deps: FrontendDeps): Promise<Socket | undefined> {
  const abort = new AbortController();
  const onClientGone = () => abort.abort();
  socket.once('close', onClientGone);
  try {
    const upstream = await deps.dial({ host: request.host, port: request.port }, ctx, { signal: abort.signal });
    if (socket.destroyed) {
      upstream.destroy();
      ctx.end ??= { by: 'downstream' };
      ctx.log.debug('socks5 client left during the dial', { target: formatTarget(request) });
      return undefined;
    }
    return upstream;
  } catch (err) {
    if (socket.destroyed) {
      ctx.end ??= { by: 'downstream' };
      ctx.log.debug('socks5 client left during the dial', { target: formatTarget(request) });
      return undefined;
    }
    const rep = socks5ReplyForDialError(err);
    ctx.access.reply = rep;
    const error = err instanceof ProxyError ? err : new ProxyError(ErrorCode.INTERNAL, 'internal', 'dial failed', { cause: err });
    if (err instanceof AccessDeniedError) ctx.access.rule = err.rule;
    const endedBy = err instanceof AccessDeniedError ? 'proxy' : 'upstream';
    throw refuse(socket, reader, encodeReply(rep), error.code === ErrorCode.INTERNAL ? 'error' : 'info', error, endedBy);
  } finally {
    socket.off('close', onClientGone);
  }
}

// 5. reply ------------------------------------------------------------------------------

/** RFC 1928 §6: BND.ADDR/BND.PORT on success are the address and port the server assigned
 *  to connect to the target: our upstream socket's local end. */
function sendSuccessReply(socket: Socket, upstream: Socket, ctx: ConnectionContext): void {
  ctx.access.reply = Reply.SUCCEEDED;
  socket.write(encodeReply(Reply.SUCCEEDED, { address: upstream.localAddress, port: upstream.localPort }));
}

// failures ------------------------------------------------------------------------------

function badRequest(reason: string): DownstreamError {
  return new DownstreamError(ErrorCode.BAD_REQUEST, `bad SOCKS5 message: ${reason}`);
}

/** Writes a failure reply, closes gracefully (see FAILURE_LINGER_MS), returns the error to throw. */
function refuse(socket: Socket, reader: HandshakeReader, reply: Buffer, level: LogLevel, error: ProxyError, endedBy: Socks5Refusal['endedBy']): Socks5Refusal {
  reader.detach();
  if (!socket.destroyed) {
    socket.end(reply);
    // Drain (and drop) whatever the client still sends, so its FIN is seen and the socket
    // closes on its own; destroy it if the client does not close in time.
    socket.resume();
    const linger = setTimeout(() => socket.destroy(), FAILURE_LINGER_MS);
    socket.once('close', () => clearTimeout(linger));
  }
  return new Socks5Refusal(error.message, level, error, endedBy);
}

/** One log line and the context's end state for every way the handshake can fail. */
function recordFailure(err: unknown, socket: Socket, reader: HandshakeReader, ctx: ConnectionContext): void {
  const target = ctx.target ? formatTarget(ctx.target) : undefined;
  const fields = { target, user: ctx.access.user, command: ctx.access.command };
  if (err instanceof Socks5Refusal) {
    ctx.access.error = err.error.code;
    if (typeof ctx.access.reply === 'number') ctx.access.replyName = replyName(ctx.access.reply as ReplyCode);
    ctx.end ??= { by: err.endedBy, error: err.error };
    ctx.log[err.level === 'silent' ? 'debug' : err.level]('socks5 request refused', { ...fields, reply: ctx.access.reply, err: err.error });
    return;
  }
  reader.detach();
  socket.destroy();
  if (err instanceof HandshakeEofError) {
    // A client that connects and leaves (port scanners, health checks) is not an error.
    ctx.end ??= { by: 'downstream' };
    ctx.log.debug('socks5 client closed during the handshake', { ...fields, reason: err.message });
  } else if (err instanceof DownstreamError && err.code === ErrorCode.HANDSHAKE_TIMEOUT) {
    ctx.access.error = err.code;
    ctx.end ??= { by: 'proxy', error: err };
    ctx.log.info('socks5 handshake timed out, closing', { ...fields, err });
  } else if (err instanceof Error && 'code' in err && typeof err.code === 'string' && !(err instanceof ProxyError)) {
    // ECONNRESET, EPIPE... from the client socket during the handshake.
    ctx.end ??= { by: 'downstream', error: err };
    ctx.log.debug('socks5 client socket failed during the handshake', { ...fields, err });
  } else {
    ctx.end ??= { by: 'proxy', error: err instanceof Error ? err : new Error(String(err)) };
    ctx.log.error('socks5 handler failed', { ...fields, err });
  }
}

function waitForClose(socket: Socket): Promise<void> {
  if (socket.closed) return Promise.resolve();
  return new Promise((resolve) => socket.once('close', () => resolve()));
}
