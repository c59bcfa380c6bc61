import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AccessDeniedError, DownstreamError, ErrorCode, UpstreamError } from '../../src/core/errors.js';
import { socks5ReplyForDialError } from '../../src/frontends/socks5/dial-error-replies.js';
import { Reply } from '../../src/frontends/socks5/codec.js';

const target = { host: 'example.com', port: 80 };
const up = (code: ErrorCode, errno?: string) => new UpstreamError(code, target, 'x', errno ? { errno } : {});

test('each dial failure maps to its SOCKS5 REP code', () => {
  const cases: [unknown, number][] = [
    [new AccessDeniedError(ErrorCode.ACCESS_DENIED, 'destination-network', 'no'), Reply.NOT_ALLOWED],
    [new AccessDeniedError(ErrorCode.LIMIT_REACHED, 'limit', 'no'), Reply.NOT_ALLOWED],
    [up(ErrorCode.UPSTREAM_REFUSED, 'ECONNREFUSED'), Reply.CONNECTION_REFUSED],
    [up(ErrorCode.UPSTREAM_UNREACHABLE, 'ENETUNREACH'), Reply.NETWORK_UNREACHABLE],
    [up(ErrorCode.UPSTREAM_UNREACHABLE, 'EHOSTUNREACH'), Reply.HOST_UNREACHABLE],
    [up(ErrorCode.UPSTREAM_UNREACHABLE), Reply.HOST_UNREACHABLE],
    [up(ErrorCode.DNS_NOT_FOUND, 'ENOTFOUND'), Reply.HOST_UNREACHABLE],
    [up(ErrorCode.CONNECT_TIMEOUT), Reply.TTL_EXPIRED],
    [up(ErrorCode.DNS_TIMEOUT), Reply.TTL_EXPIRED],
    [up(ErrorCode.UPSTREAM_RESET, 'ECONNRESET'), Reply.GENERAL_FAILURE],
    [new DownstreamError(ErrorCode.BAD_REQUEST, 'x'), Reply.GENERAL_FAILURE],
    [new Error('plain'), Reply.GENERAL_FAILURE],
    ['not even an error', Reply.GENERAL_FAILURE],
  ];
  for (const [err, rep] of cases) {
    assert.equal(socks5ReplyForDialError(err), rep, `${(err as Error).message ?? err} (${(err as { code?: string }).code})`);
  }
});
