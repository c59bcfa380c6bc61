/**
 * The one table from dial failures to SOCKS5 REP codes (RFC 1928 §6). The front-end
 * writes the reply this picks before it closes the client connection.
 *
 * Timeouts map to 0x06 "TTL expired", as curl and shadowsocks-rust read it: RFC 1928 has
 * no "timed out" code, and clients report 0x06 as a timeout.
 */
import { AccessDeniedError, ErrorCode, ProxyError, UpstreamError } from '../../core/errors.js';
import { Reply, type ReplyCode } from './codec.js';

type ReplyRule = ReplyCode | ((err: ProxyError) => ReplyCode);

const replyByErrorCode: Partial<Record<ErrorCode, ReplyRule>> = {
  [ErrorCode.ACCESS_DENIED]: Reply.NOT_ALLOWED,
  [ErrorCode.LIMIT_REACHED]: Reply.NOT_ALLOWED,
  [ErrorCode.UPSTREAM_REFUSED]: Reply.CONNECTION_REFUSED,
  // ENETUNREACH: no route to the network; EHOSTUNREACH (and anything else): the host.
  [ErrorCode.UPSTREAM_UNREACHABLE]: (err) =>
    err instanceof UpstreamError && err.errno === 'ENETUNREACH' ? Reply.NETWORK_UNREACHABLE : Reply.HOST_UNREACHABLE,
  [ErrorCode.DNS_NOT_FOUND]: Reply.HOST_UNREACHABLE,
  [ErrorCode.CONNECT_TIMEOUT]: Reply.TTL_EXPIRED,
  [ErrorCode.DNS_TIMEOUT]: Reply.TTL_EXPIRED,
};

/** The REP code for an error from Dial; unknown errors are 0x01 general failure. */
export function socks5ReplyForDialError(err: unknown): ReplyCode {
  // A policy denial is "not allowed by ruleset" whatever its code.
  if (err instanceof AccessDeniedError) return Reply.NOT_ALLOWED;
  if (!(err instanceof ProxyError)) return Reply.GENERAL_FAILURE;
  const rule = replyByErrorCode[err.code];
  if (rule === undefined) return Reply.GENERAL_FAILURE;
  return typeof rule === 'function' ? rule(err) : rule;
}
