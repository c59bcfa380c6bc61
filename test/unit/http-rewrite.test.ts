import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AccessDeniedError, DownstreamError, ErrorCode, ProxyError, UpstreamError } from '../../src/core/errors.js';
import { parseRequestHead, parseResponseHead } from '../../src/frontends/http/parser.js';
import {
  appendVia,
  buildDownstreamResponseHead,
  buildInterimResponseHead,
  buildUpstreamRequestHead,
  removeHopByHop,
} from '../../src/frontends/http/rewrite.js';
import { buildErrorReply, httpStatusFor } from '../../src/frontends/http/status.js';

function req(s: string) {
  return parseRequestHead(Buffer.from(s, 'latin1'));
}
function res(s: string) {
  return parseResponseHead(Buffer.from(s, 'latin1'));
}

test('upstream request: origin-form line with our version, Host from the URI first, hop-by-hop removed, Via appended', () => {
  const head = req(
    'GET http://example.com:8080/p?q HTTP/1.0\r\n' +
      'Host: wrong.example\r\n' +
      'Connection: keep-alive, X-Secret\r\n' +
      'Keep-Alive: timeout=5\r\n' +
      'Proxy-Connection: keep-alive\r\n' +
      'Proxy-Authorization: Basic dTpw\r\n' +
      'TE: trailers\r\n' +
      'Trailer: X-T\r\n' +
      'Upgrade: websocket\r\n' +
      'X-Secret: 1\r\n' +
      'Accept: */*\r\n\r\n',
  );
  const out = buildUpstreamRequestHead(head, { path: '/p?q', authority: 'example.com:8080', via: 'mptcp-proxy' }).toString('latin1');
  assert.equal(out, 'GET /p?q HTTP/1.1\r\nHost: example.com:8080\r\nAccept: */*\r\nVia: 1.0 mptcp-proxy\r\n\r\n');
});

test('upstream request keeps Transfer-Encoding and Content-Length: bodies are forwarded unchanged', () => {
  const head = req('POST http://h/ HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n');
  const out = buildUpstreamRequestHead(head, { path: '/', authority: 'h', via: 'p' }).toString('latin1');
  assert.match(out, /\r\nTransfer-Encoding: chunked\r\n/);
  const cl = req('POST http://h/ HTTP/1.1\r\nContent-Length: 3\r\n\r\n');
  assert.match(buildUpstreamRequestHead(cl, { path: '/', authority: 'h', via: 'p' }).toString('latin1'), /\r\nContent-Length: 3\r\n/);
});

test('Via is appended to the last existing Via line, or added', () => {
  const headers = req('GET http://h/ HTTP/1.1\r\nVia: 1.1 a\r\nX: 1\r\nvia: 1.0 b\r\n\r\n').headers;
  const out = appendVia(headers, '1.1', 'me');
  assert.deepEqual(out.map((h) => `${h.name}: ${h.value}`), ['Via: 1.1 a', 'X: 1', 'via: 1.0 b, 1.1 me']);
  assert.deepEqual(appendVia([], '1.1', 'me').map((h) => h.value), ['1.1 me']);
});

test('removeHopByHop drops fields listed in Connection, case-insensitively, across lines', () => {
  const h = req('GET http://h/ HTTP/1.1\r\nConnection: X-A\r\nconnection: x-b, close\r\nX-A: 1\r\nX-B: 2\r\nX-C: 3\r\n\r\n').headers;
  assert.deepEqual(removeHopByHop(h).map((x) => x.name), ['X-C']);
});

test('downstream response: status line in our version, hop-by-hop removed, Via from the upstream version, our Connection decision', () => {
  const r = res('HTTP/1.0 200 OK\r\nConnection: keep-alive, X-Hop\r\nKeep-Alive: timeout=5\r\nX-Hop: 1\r\nContent-Length: 2\r\nProxy-Authenticate: Basic\r\n\r\n');
  assert.equal(
    buildDownstreamResponseHead(r, { via: 'p', close: true, http10KeepAlive: false, dechunk: false }).toString('latin1'),
    'HTTP/1.1 200 OK\r\nContent-Length: 2\r\nVia: 1.0 p\r\nConnection: close\r\n\r\n',
  );
  assert.equal(
    buildDownstreamResponseHead(r, { via: 'p', close: false, http10KeepAlive: true, dechunk: false }).toString('latin1'),
    'HTTP/1.1 200 OK\r\nContent-Length: 2\r\nVia: 1.0 p\r\nConnection: keep-alive\r\n\r\n',
  );
  assert.equal(
    buildDownstreamResponseHead(r, { via: 'p', close: false, http10KeepAlive: false, dechunk: false }).toString('latin1'),
    'HTTP/1.1 200 OK\r\nContent-Length: 2\r\nVia: 1.0 p\r\n\r\n',
  );
});

test('downstream response drops Content-Length when Transfer-Encoding is present, and TE when dechunking', () => {
  const r = res('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\n\r\n');
  assert.equal(
    buildDownstreamResponseHead(r, { via: 'p', close: false, http10KeepAlive: false, dechunk: false }).toString('latin1'),
    'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nVia: 1.1 p\r\n\r\n',
  );
  assert.equal(
    buildDownstreamResponseHead(r, { via: 'p', close: true, http10KeepAlive: false, dechunk: true }).toString('latin1'),
    'HTTP/1.1 200 OK\r\nVia: 1.1 p\r\nConnection: close\r\n\r\n',
  );
});

test('interim responses keep their status and get Via', () => {
  assert.equal(buildInterimResponseHead(res('HTTP/1.1 100 Continue\r\n\r\n'), 'p').toString('latin1'), 'HTTP/1.1 100 Continue\r\nVia: 1.1 p\r\n\r\n');
});

test('one table maps errors to statuses: 400/431/408/505/407/403/502/504/500', () => {
  const t = { host: 'h', port: 1 };
  const cases: Array<[unknown, number]> = [
    [new DownstreamError(ErrorCode.BAD_REQUEST, 'x'), 400],
    [new DownstreamError(ErrorCode.HEADERS_TOO_LARGE, 'x'), 431],
    [new DownstreamError(ErrorCode.HANDSHAKE_TIMEOUT, 'x'), 408],
    [new DownstreamError(ErrorCode.NOT_SUPPORTED, 'x'), 505],
    [new AccessDeniedError(ErrorCode.AUTH_REQUIRED, 'proxy-auth', 'x'), 407],
    [new AccessDeniedError(ErrorCode.AUTH_FAILED, 'proxy-auth', 'x'), 407],
    [new AccessDeniedError(ErrorCode.ACCESS_DENIED, 'destination-network', 'x'), 403],
    [new UpstreamError(ErrorCode.UPSTREAM_REFUSED, t, 'x'), 502],
    [new UpstreamError(ErrorCode.UPSTREAM_UNREACHABLE, t, 'x'), 502],
    [new UpstreamError(ErrorCode.DNS_NOT_FOUND, t, 'x'), 502],
    [new UpstreamError(ErrorCode.UPSTREAM_RESET, t, 'x'), 502],
    [new UpstreamError(ErrorCode.UPSTREAM_PROTOCOL, t, 'x'), 502],
    [new UpstreamError(ErrorCode.CONNECT_TIMEOUT, t, 'x'), 504],
    [new UpstreamError(ErrorCode.DNS_TIMEOUT, t, 'x'), 504],
    [new UpstreamError(ErrorCode.SYSCALL, t, 'x'), 502],
    [new ProxyError(ErrorCode.INTERNAL, 'internal', 'x'), 500],
    [new Error('untyped'), 502],
  ];
  for (const [err, status] of cases) assert.equal(httpStatusFor(err), status, String(err));
});

test('error replies are short text/plain with Connection: close; HEAD replies have no body', () => {
  const r = buildErrorReply(407, 'need auth', { extraHeaders: ['Proxy-Authenticate: Basic realm="mptcp-proxy"'] }).toString();
  assert.match(r, /^HTTP\/1\.1 407 Proxy Authentication Required\r\n/);
  assert.match(r, /\r\nContent-Type: text\/plain; charset=utf-8\r\n/);
  assert.match(r, /\r\nConnection: close\r\n/);
  assert.match(r, /\r\nProxy-Authenticate: Basic realm="mptcp-proxy"\r\n\r\n407 Proxy Authentication Required: need auth\n$/);
  const body = '407 Proxy Authentication Required: need auth\n';
  assert.match(r, new RegExp(`Content-Length: ${Buffer.byteLength(body)}\\r\\n`));
  assert.ok(buildErrorReply(502, 'x', { head: true }).toString().endsWith('\r\n\r\n'));
});
