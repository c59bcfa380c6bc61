/**
 * One table from system/DNS error codes to the proxy's upstream error codes.
 * Front-ends then map those codes to their protocol's replies (HTTP status, SOCKS REP).
 */
import { ErrorCode, UpstreamError, isSystemError, type TargetAddress } from '../core/errors.js';

const errnoToCode: Readonly<Record<string, ErrorCode>> = {
  ECONNREFUSED: ErrorCode.UPSTREAM_REFUSED,
  ENETUNREACH: ErrorCode.UPSTREAM_UNREACHABLE,
  EHOSTUNREACH: ErrorCode.UPSTREAM_UNREACHABLE,
  EHOSTDOWN: ErrorCode.UPSTREAM_UNREACHABLE,
  ENETDOWN: ErrorCode.UPSTREAM_UNREACHABLE,
  EADDRNOTAVAIL: ErrorCode.UPSTREAM_UNREACHABLE,
  EACCES: ErrorCode.UPSTREAM_UNREACHABLE,
  EPERM: ErrorCode.UPSTREAM_UNREACHABLE,
  ECONNRESET: ErrorCode.UPSTREAM_RESET,
  EPIPE: ErrorCode.UPSTREAM_RESET,
  ECONNABORTED: ErrorCode.UPSTREAM_RESET,
  ETIMEDOUT: ErrorCode.CONNECT_TIMEOUT,
  // getaddrinfo: name does not exist / has no address of the wanted family.
  ENOTFOUND: ErrorCode.DNS_NOT_FOUND,
  EAI_NONAME: ErrorCode.DNS_NOT_FOUND,
  ENODATA: ErrorCode.DNS_NOT_FOUND,
  EAI_NODATA: ErrorCode.DNS_NOT_FOUND,
  // Temporary resolver failure: the resolver did not answer in time.
  EAI_AGAIN: ErrorCode.DNS_TIMEOUT,
};

const describe: Readonly<Partial<Record<ErrorCode, string>>> = {
  [ErrorCode.UPSTREAM_REFUSED]: 'upstream refused the connection',
  [ErrorCode.UPSTREAM_UNREACHABLE]: 'upstream unreachable',
  [ErrorCode.UPSTREAM_RESET]: 'upstream reset the connection',
  [ErrorCode.CONNECT_TIMEOUT]: 'upstream connect timed out',
  [ErrorCode.DNS_NOT_FOUND]: 'upstream name not found',
  [ErrorCode.DNS_TIMEOUT]: 'upstream name lookup timed out',
};

/** Wraps any error from DNS or connect into an UpstreamError with the right code. */
export function toUpstreamError(err: unknown, target: TargetAddress): UpstreamError {
  if (err instanceof UpstreamError) return err;
  const errno = isSystemError(err) ? err.code : undefined;
  const code = (errno && errnoToCode[errno]) || ErrorCode.UPSTREAM_UNREACHABLE;
  const what = describe[code] ?? 'upstream connection failed';
  return new UpstreamError(code, target, errno ? `${what}: ${errno}` : what, { cause: err, ...(errno ? { errno } : {}) });
}
