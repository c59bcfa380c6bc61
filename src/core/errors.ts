/**
 * Typed errors for the whole proxy.
 *
 * Every error that crosses a module boundary is a ProxyError with a stable machine
 * `code` (never match on messages), the `side` that failed (downstream = the client,
 * upstream = the server we dial, internal = us), and the original `cause`.
 * Front-ends map these classes to exactly one protocol reply each (HTTP status, SOCKS REP).
 */

export type ErrorSide = 'downstream' | 'upstream' | 'internal';

export const ErrorCode = {
  UPSTREAM_REFUSED: 'MPX_ERR_UPSTREAM_REFUSED',
  UPSTREAM_UNREACHABLE: 'MPX_ERR_UPSTREAM_UNREACHABLE',
  UPSTREAM_RESET: 'MPX_ERR_UPSTREAM_RESET',
  /** The server answered with bytes that are not valid for its protocol (e.g. a malformed HTTP response). */
  UPSTREAM_PROTOCOL: 'MPX_ERR_UPSTREAM_PROTOCOL',
  DNS_NOT_FOUND: 'MPX_ERR_DNS_NOT_FOUND',
  DNS_TIMEOUT: 'MPX_ERR_DNS_TIMEOUT',
  CONNECT_TIMEOUT: 'MPX_ERR_CONNECT_TIMEOUT',
  IDLE_TIMEOUT: 'MPX_ERR_IDLE_TIMEOUT',
  /** The proxy cut a relayed connection (shutdown, engine stopped). */
  RELAY_ABORTED: 'MPX_ERR_RELAY_ABORTED',
  HANDSHAKE_TIMEOUT: 'MPX_ERR_HANDSHAKE_TIMEOUT',
  BAD_REQUEST: 'MPX_ERR_BAD_REQUEST',
  HEADERS_TOO_LARGE: 'MPX_ERR_HEADERS_TOO_LARGE',
  ACCESS_DENIED: 'MPX_ERR_ACCESS_DENIED',
  AUTH_REQUIRED: 'MPX_ERR_AUTH_REQUIRED',
  AUTH_FAILED: 'MPX_ERR_AUTH_FAILED',
  LIMIT_REACHED: 'MPX_ERR_LIMIT_REACHED',
  NOT_SUPPORTED: 'MPX_ERR_NOT_SUPPORTED',
  MPTCP_UNAVAILABLE: 'MPX_ERR_MPTCP_UNAVAILABLE',
  CONFIG: 'MPX_ERR_CONFIG',
  SYSCALL: 'MPX_ERR_SYSCALL',
  INTERNAL: 'MPX_ERR_INTERNAL',
} as const;
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

export interface ProxyErrorOptions {
  cause?: unknown;
}

export class ProxyError extends Error {
  override name = 'ProxyError';
  readonly code: ErrorCode;
  readonly side: ErrorSide;

  constructor(code: ErrorCode, side: ErrorSide, message: string, options: ProxyErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.side = side;
  }
}

/** Where an upstream dial was going, for error messages and logs. */
export interface TargetAddress {
  host: string;
  port: number;
}

export function formatTarget(t: TargetAddress): string {
  return t.host.includes(':') ? `[${t.host}]:${t.port}` : `${t.host}:${t.port}`;
}

/** The server we dialed failed: refused, unreachable, timed out, unresolvable, reset. */
export class UpstreamError extends ProxyError {
  override name = 'UpstreamError';
  readonly target: TargetAddress;
  /** The errno code behind it (ECONNREFUSED, ENOTFOUND...), when there was one. */
  readonly errno: string | undefined;

  constructor(code: ErrorCode, target: TargetAddress, message: string, options: ProxyErrorOptions & { errno?: string } = {}) {
    super(code, 'upstream', `${message} (${formatTarget(target)})`, options);
    this.target = target;
    this.errno = options.errno;
  }
}

/** The client sent something we cannot accept: malformed, too large, too slow. */
export class DownstreamError extends ProxyError {
  override name = 'DownstreamError';
  constructor(code: ErrorCode, message: string, options: ProxyErrorOptions = {}) {
    super(code, 'downstream', message, options);
  }
}

/** A policy said no: client network, destination, port, authentication, limits. */
export class AccessDeniedError extends ProxyError {
  override name = 'AccessDeniedError';
  /** Which rule denied it, for the access log ("client-not-allowed", "destination-denied"...). */
  readonly rule: string;
  constructor(code: ErrorCode, rule: string, message: string) {
    super(code, 'downstream', message);
    this.rule = rule;
  }
}

/** A configuration value is wrong. The message names the key and how to fix it. */
export class ConfigError extends ProxyError {
  override name = 'ConfigError';
  readonly key: string;
  readonly fix: string;
  constructor(key: string, problem: string, fix: string) {
    super(ErrorCode.CONFIG, 'internal', `config key "${key}": ${problem}. Fix: ${fix}`);
    this.key = key;
    this.fix = fix;
  }
}

/** A system call failed; shaped like Node's own system errors (code, errno, syscall). */
export interface SystemErrorLike extends Error {
  code?: string;
  errno?: number;
  syscall?: string;
}

export function isSystemError(err: unknown): err is SystemErrorLike & { code: string } {
  return err instanceof Error && typeof (err as SystemErrorLike).code === 'string';
}

/** Kernel says MPTCP cannot be used (not compiled in, disabled by sysctl, blocked). */
export class MptcpUnavailableError extends ProxyError {
  override name = 'MptcpUnavailableError';
  constructor(message: string, options: ProxyErrorOptions = {}) {
    super(ErrorCode.MPTCP_UNAVAILABLE, 'internal', message, options);
  }
}
