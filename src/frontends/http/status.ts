/**
 * The one table from errors to HTTP replies for this front-end, and the short text/plain
 * replies the proxy writes itself. Every error the HTTP front-end can answer goes through
 * `httpStatusFor`; nothing matches on messages.
 */
import type { ConnectionContext } from '../../core/context.js';
import { AccessDeniedError, ErrorCode, ProxyError, UpstreamError, formatTarget } from '../../core/errors.js';

export const REASON: Readonly<Record<number, string>> = {
  200: 'OK',
  400: 'Bad Request',
  403: 'Forbidden',
  407: 'Proxy Authentication Required',
  408: 'Request Timeout',
  431: 'Request Header Fields Too Large',
  500: 'Internal Server Error',
  502: 'Bad Gateway',
  504: 'Gateway Timeout',
  505: 'HTTP Version Not Supported',
};

/** ErrorCode → status. Codes not listed fall back by side: upstream 502, internal 500. */
const STATUS_BY_CODE: Partial<Record<ErrorCode, number>> = {
  [ErrorCode.BAD_REQUEST]: 400,
  [ErrorCode.HEADERS_TOO_LARGE]: 431,
  [ErrorCode.HANDSHAKE_TIMEOUT]: 408,
  [ErrorCode.NOT_SUPPORTED]: 505,
  [ErrorCode.AUTH_REQUIRED]: 407,
  [ErrorCode.AUTH_FAILED]: 407,
  [ErrorCode.ACCESS_DENIED]: 403,
  [ErrorCode.LIMIT_REACHED]: 403,
  [ErrorCode.UPSTREAM_REFUSED]: 502,
  [ErrorCode.UPSTREAM_UNREACHABLE]: 502,
  [ErrorCode.DNS_NOT_FOUND]: 502,
  [ErrorCode.UPSTREAM_RESET]: 502,
  [ErrorCode.UPSTREAM_PROTOCOL]: 502,
  [ErrorCode.CONNECT_TIMEOUT]: 504,
  [ErrorCode.DNS_TIMEOUT]: 504,
  [ErrorCode.IDLE_TIMEOUT]: 504,
  [ErrorCode.MPTCP_UNAVAILABLE]: 502,
};

export function httpStatusFor(err: unknown): number {
  if (err instanceof AccessDeniedError) {
    return err.code === ErrorCode.AUTH_REQUIRED || err.code === ErrorCode.AUTH_FAILED ? 407 : 403;
  }
  if (err instanceof ProxyError) {
    const mapped = STATUS_BY_CODE[err.code];
    if (mapped !== undefined) return mapped;
    if (err instanceof UpstreamError || err.side === 'upstream') return 502;
    if (err.side === 'internal') return 500;
    return 400;
  }
  // A dialer that rejects with something untyped still failed to reach the upstream.
  return 502;
}

export interface ErrorReplyOptions {
  /** Omit the body (reply to HEAD). */
  head?: boolean;
  /** Extra header lines, e.g. Proxy-Authenticate. */
  extraHeaders?: readonly string[];
}

/** A short self-generated reply; always `Connection: close` (the request body, if any, is unread). */
export function buildErrorReply(status: number, message: string, opts: ErrorReplyOptions = {}): Buffer {
  const reason = REASON[status] ?? 'Error';
  const body = Buffer.from(`${status} ${reason}: ${message}\n`, 'utf8');
  let head = `HTTP/1.1 ${status} ${reason}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: ${body.length}\r\nConnection: close\r\n`;
  for (const line of opts.extraHeaders ?? []) head += line + '\r\n';
  head += '\r\n';
  const h = Buffer.from(head, 'latin1');
  return opts.head ? h : Buffer.concat([h, body]);
}

export const PROXY_AUTHENTICATE = 'Proxy-Authenticate: Basic realm="mptcp-proxy"';
export const CONNECT_ESTABLISHED = Buffer.from('HTTP/1.1 200 Connection established\r\n\r\n', 'latin1');

/**
 * The one reply to an error a request met, as the session and the engine-served exchanges
 * (engine-exchange.ts) both write it: its status goes to the access fields, the error to the
 * log (a warning from 500 on, else info) with the connection's target; internal details stay in
 * the log, and the client gets the typed message or a generic one.
 */
export function replyToError(err: unknown, ctx: ConnectionContext, method: string | undefined): Buffer {
  const status = httpStatusFor(err);
  const code = err instanceof ProxyError ? err.code : ErrorCode.INTERNAL;
  ctx.access.status = status;
  const fields = { status, code, target: ctx.target ? formatTarget(ctx.target) : undefined, method, err };
  if (status >= 500) ctx.log.warn('http request failed', fields);
  else ctx.log.info('http request rejected', fields);
  const message =
    err instanceof ProxyError && err.side !== 'internal' ? err.message : status === 500 ? 'internal proxy error' : 'upstream connection failed';
  return buildErrorReply(status, message, { head: method === 'HEAD', extraHeaders: status === 407 ? [PROXY_AUTHENTICATE] : [] });
}
