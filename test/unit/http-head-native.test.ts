/**
 * The engine's own head rewrites (native/src/http-head.c) against rewrite.ts's: on every head of
 * a corpus, and on random mutations of them, the C rewrite either declines (null: JS does it, with
 * its full checks) or produces byte for byte what the TS code does — and it does handle the plain
 * heads real origins and clients send.
 *
 * - httpRewriteResponse: buildDownstreamResponseHead for a client closed after the response;
 * - httpRewriteResponseEx: the same for a client kept or closed, after a GET or a HEAD, with the
 *   body's framing (responseBodyFraming) and the upstream's persistence beside it;
 * - httpRewriteRequest: a request head the engine forwards on a kept upstream connection,
 *   against HeadDecoder → parseRequestHead → parseRequestTarget → buildUpstreamRequestHead; every
 *   head JS rejects the engine must decline.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loadNative } from '../../src/mptcp/index.js';
import {
  parseResponseHead,
  parseRequestHead,
  parseRequestTarget,
  clientWantsPersistence,
  hasConnectionOption,
  headerValues,
  HeadDecoder,
  RESPONSE_HEAD_LIMITS,
} from '../../src/frontends/http/parser.js';
import type { RequestHead, RequestTarget, ResponseHead } from '../../src/frontends/http/parser.js';
import { responseBodyFraming } from '../../src/frontends/http/framing.js';
import { buildDownstreamResponseHead, buildUpstreamRequestHead } from '../../src/frontends/http/rewrite.js';
import { mutator } from '../helpers/mutator.js';

type Rewrite = (head: Buffer, via: string) => Buffer | null;

function nativeRewrite(): Rewrite | undefined {
  try {
    const addon = loadNative() as unknown as { httpRewriteResponse?: Rewrite };
    return addon.httpRewriteResponse;
  } catch {
    return undefined;
  }
}

const rewrite = nativeRewrite();
const skip = rewrite === undefined ? 'the addon has no httpRewriteResponse' : false;

/** What the JS side sends the client for `head` (GET), or null when it would answer 502. */
function jsRewrite(head: Buffer, via: string): Buffer | null {
  try {
    const pushed = new HeadDecoder(RESPONSE_HEAD_LIMITS).push(head);
    if (!pushed.done) return null;
    const res = parseResponseHead(pushed.head);
    if (res.status < 200) return null;
    responseBodyFraming(res, 'GET');
    return buildDownstreamResponseHead(res, { via, close: true, http10KeepAlive: false, dechunk: false });
  } catch {
    return null;
  }
}

const plain: string[] = [
  'HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Wed, 02 Dec 2026 17:33:47 GMT\r\nContent-Type: application/octet-stream\r\nContent-Length: 1024\r\nLast-Modified: Wed, 02 Dec 2026 13:09:35 GMT\r\nConnection: keep-alive\r\nETag: "6b10188f-400"\r\nAccept-Ranges: bytes\r\n\r\n',
  'HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n',
  'HTTP/1.0 200 OK\r\nContent-Length: 3\r\nKeep-Alive: timeout=5\r\nConnection: keep-alive\r\n\r\n',
  'HTTP/1.1 204 \r\n\r\n',
  'HTTP/1.1 200\r\nContent-Length: 2\r\n\r\n',
  'HTTP/1.1 302 Found\r\nLocation: http://x/\r\nVia: 1.1 upstream-cache\r\nContent-Length: 0\r\n\r\n',
  'HTTP/1.1 200 OK\r\nVia: 1.0 a\r\nX: 1\r\nvia: 1.1 b\r\nY: 2\r\n\r\n',
  'HTTP/1.1 200 OK\r\nVia:\r\n\r\n',
  'HTTP/1.1 200 OK\r\nConnection: close, X-Secret ,, x-other\r\nX-Secret: s\r\nX-Other: o\r\nX-Kept: k\r\n\r\n',
  'HTTP/1.1 200 OK\r\nProxy-Authenticate: Basic\r\nTE: trailers\r\nTrailer: X\r\nUpgrade: h2c\r\nKeep-Alive: 1\r\nProxy-Connection: keep-alive\r\nSet-Cookie: a=b; Path=/\r\n\r\n',
  'HTTP/1.1 500 Internal Server Error\r\nX-Spaces:   padded value \t\r\nContent-Length:  12 \r\n\r\n',
  'HTTP/1.1 200 OK\r\nX-Latin: caf\xe9\r\n\r\n',
  'HTTP/1.2 200 OK\r\nContent-Length: 0\r\n\r\n',
  'HTTP/1.1 200 Ok with\ttab\r\n\r\n',
];

const declined: string[] = [
  'HTTP/1.1 100 Continue\r\n\r\n',
  'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n',
  'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n',
  'HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n',
  'HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n',
  'HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n',
  'HTTP/1.1 200 OK\r\nX: a\r\n folded\r\n\r\n',
  'HTTP/1.1 200 OK\r\nBad Name: v\r\n\r\n',
  'HTTP/1.1 200 OK\r\nX: bare\nLF\r\n\r\n',
  'HTTP/1.1 200 OK\r\nX: ctl\x01\r\n\r\n',
  'HTTP/2.0 200 OK\r\n\r\n',
  'HTTP/1.1 20 OK\r\n\r\n',
  'HTTP/1.1 200OK\r\n\r\n',
  'HTTP/1.1 600 Odd\r\n\r\n',
  'garbage\r\n\r\n',
  'HTTP/1.1 200 OK\r\nNo-Colon\r\n\r\n',
  'HTTP/1.1 200 OK\r\n: empty-name\r\n\r\n',
];

test('the engine rewrites plain response heads exactly as rewrite.ts does', { skip }, () => {
  for (const text of plain) {
    const head = Buffer.from(text, 'latin1');
    for (const via of ['mptcp-proxy', 'edge-1']) {
      const c = rewrite!(head, via);
      assert.notEqual(c, null, `handled natively: ${JSON.stringify(text)}`);
      assert.equal(c!.toString('latin1'), jsRewrite(head, via)?.toString('latin1'), JSON.stringify(text));
    }
  }
});

test('the engine declines the others (JS rewrites them or answers 502), and never differs from JS', { skip }, () => {
  for (const text of declined) {
    const head = Buffer.from(text, 'latin1');
    assert.equal(rewrite!(head, 'mptcp-proxy'), null, `declined: ${JSON.stringify(text)}`);
  }
  // Body bytes after the head are not part of it, and a head without its end is not whole.
  const withBody = Buffer.from('HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nbody', 'latin1');
  assert.equal(rewrite!(withBody, 'v')?.toString('latin1'), 'HTTP/1.1 200 OK\r\nContent-Length: 4\r\nVia: 1.1 v\r\nConnection: close\r\n\r\n');
  assert.equal(rewrite!(Buffer.from('HTTP/1.1 200 OK\r\nContent-Length: 4\r\n', 'latin1'), 'v'), null);
});

test('random mutations of plain heads: the engine matches JS or declines', { skip }, () => {
  const { rand, mutate } = mutator(12345, ['\r', '\n', ' ', '\t', ':', ',', '\x00', '\x7f', '\xe9', 'a', 'Z', '0', '9', 'Via', 'Connection', 'close']);
  let handled = 0;
  for (let i = 0; i < 3000; i++) {
    const text = mutate(plain[rand(plain.length)]!);
    const head = Buffer.from(text, 'latin1');
    const c = rewrite!(head, 'mptcp-proxy');
    if (c === null) continue;
    handled += 1;
    assert.equal(c.toString('latin1'), jsRewrite(head, 'mptcp-proxy')?.toString('latin1'), JSON.stringify(text));
  }
  assert.ok(handled > 200, `enough mutated heads were handled natively to compare (${handled})`);
});

// ---- the generalised response rewrite (mpx_http_rewrite_response_ex) ---------------------------

interface ResponseEx {
  out: Buffer;
  status: number;
  body: number;
  length: number;
  upstreamKeeps: boolean;
  clientClosed: boolean;
}
interface RequestRewrite {
  out: Buffer;
  headLen: number;
  clientKeeps: boolean;
  method: string;
  target: string;
}
interface HeadAddon {
  httpRewriteResponseEx?: (head: Buffer, via: string, clientKeeps: boolean, headRequest: boolean) => ResponseEx | null;
  httpRewriteRequest?: (head: Buffer, authority: string, via: string, maxHeadBytes: number, maxFields: number) => RequestRewrite | null;
}

function headAddon(): HeadAddon {
  try {
    return loadNative() as unknown as HeadAddon;
  } catch {
    return {};
  }
}
const { httpRewriteResponseEx: rewriteEx, httpRewriteRequest: rewriteRequest } = headAddon();
const skipEx = rewriteEx === undefined ? 'the addon has no httpRewriteResponseEx' : false;
const skipRequest = rewriteRequest === undefined ? 'the addon has no httpRewriteRequest' : false;

const BODY_KIND = { none: 0, length: 1, chunked: 2, close: 3 } as const;

/** index.ts's upstreamAllowsPersistence (private to the session there), restated. */
function upstreamAllowsPersistence(res: ResponseHead): boolean {
  if (res.version === '1.1') return !hasConnectionOption(res.headers, 'close');
  return hasConnectionOption(res.headers, 'keep-alive');
}

/** What JS makes of a response head for a client that keeps (or not) its connection, or null
 *  when it would answer 502 or relay an interim response. */
function jsResponseEx(head: Buffer, via: string, clientKeeps: boolean, headRequest: boolean): ResponseEx | null {
  try {
    const pushed = new HeadDecoder(RESPONSE_HEAD_LIMITS).push(head);
    if (!pushed.done) return null;
    const res = parseResponseHead(pushed.head);
    if (res.status < 200) return null;
    const framing = responseBodyFraming(res, headRequest ? 'HEAD' : 'GET');
    const close = !clientKeeps || framing.kind === 'close';
    const out = buildDownstreamResponseHead(res, { via, close, http10KeepAlive: false, dechunk: false });
    return {
      out,
      status: res.status,
      body: BODY_KIND[framing.kind],
      length: framing.kind === 'length' ? framing.length : 0,
      upstreamKeeps: upstreamAllowsPersistence(res),
      clientClosed: close,
    };
  } catch {
    return null;
  }
}

function sameResponse(c: ResponseEx, js: ResponseEx | null, what: string): void {
  assert.notEqual(js, null, `JS handles it too: ${what}`);
  assert.equal(c.out.toString('latin1'), js!.out.toString('latin1'), what);
  assert.deepEqual({ ...c, out: undefined }, { ...js!, out: undefined }, what);
}

const plainEx: string[] = [
  ...plain,
  'HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Wed, 02 Dec 2026 17:33:47 GMT\r\nContent-Type: text/html\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n',
  'HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n',
  'HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nContent-Length: 10\r\n\r\n',
  'HTTP/1.1 200 OK\r\nTransfer-Encoding: CHUNKED\r\nContent-Length: 10\r\n\r\n',
  'HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n',
  'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n',
  'HTTP/1.1 200 OK\r\nTransfer-Encoding:\r\n\r\n',
  'HTTP/1.1 200 OK\r\nConnection: Transfer-Encoding\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n',
  'HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 7\r\n\r\n',
  'HTTP/1.1 200 OK\r\nConnection: x-a, close\xa0\r\nContent-Length: 7\r\n\r\n',
  'HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 7\r\n\r\n',
  'HTTP/1.0 200 OK\r\n\r\n',
  'HTTP/1.1 304 Not Modified\r\nETag: "x"\r\n\r\n',
  'HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n',
  'HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n',
  'HTTP/1.1 200 OK\r\nContent-Length: 999999999999999\r\n\r\n',
  'HTTP/1.1 200 OK\r\nContent-Length: 0012\r\n\r\n',
  'HTTP/1.1 503 Service Unavailable\r\nRetry-After: 5\r\nContent-Length: 3\r\nVia: 1.1 a, 1.1 b\r\n\r\n',
];

const declinedEx: string[] = [
  'HTTP/1.1 100 Continue\r\n\r\n',
  'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n',
  'HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n',
  'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n',
  'HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n',
  'HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n',
  'HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n',
  'HTTP/1.1 200 OK\r\nContent-Length: 1234567890123456\r\n\r\n',
  'HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n',
  'HTTP/1.1 200 OK\r\nContent-Length:\r\n\r\n',
  'HTTP/1.1 200 OK\r\nX: a\r\n folded\r\n\r\n',
  'HTTP/1.1 200 OK\r\nX: bare\rCR\r\n\r\n',
  'HTTP/1.1 200 OK\r\nX: bare\nLF\r\n\r\n',
  '\r\nHTTP/1.1 200 OK\r\n\r\n',
  'HTTP/1.1 600 Odd\r\n\r\n',
];

test('the generalised response rewrite handles plain heads as rewrite.ts does, kept or closed clients, GET or HEAD', { skip: skipEx }, () => {
  for (const text of plainEx) {
    const head = Buffer.from(text, 'latin1');
    for (const clientKeeps of [false, true]) {
      for (const headRequest of [false, true]) {
        const what = `${JSON.stringify(text)} keeps=${clientKeeps} head=${headRequest}`;
        const c = rewriteEx!(head, 'mptcp-proxy', clientKeeps, headRequest);
        assert.notEqual(c, null, `handled natively: ${what}`);
        sameResponse(c!, jsResponseEx(head, 'mptcp-proxy', clientKeeps, headRequest), what);
      }
    }
  }
  // What the engine needs to follow the body, spelled out for the common cases.
  const chunked = rewriteEx!(Buffer.from(plainEx[plain.length]!, 'latin1'), 'p', true, false)!;
  assert.equal(chunked.body, BODY_KIND.chunked);
  assert.equal(chunked.clientClosed, false);
  assert.equal(chunked.upstreamKeeps, true);
  assert.ok(!chunked.out.toString('latin1').includes('Connection'));
  const sized = rewriteEx!(Buffer.from('HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\nbody', 'latin1'), 'p', true, false)!;
  assert.deepEqual({ ...sized, out: sized.out.toString('latin1') }, {
    out: 'HTTP/1.1 200 OK\r\nContent-Length: 12\r\nVia: 1.1 p\r\n\r\n',
    status: 200,
    body: BODY_KIND.length,
    length: 12,
    upstreamKeeps: true,
    clientClosed: false,
  });
  const untilClose = rewriteEx!(Buffer.from('HTTP/1.1 200 OK\r\n\r\n', 'latin1'), 'p', true, false)!;
  assert.equal(untilClose.body, BODY_KIND.close);
  assert.equal(untilClose.clientClosed, true);
});

test('the generalised response rewrite declines what JS refuses or what it does not follow', { skip: skipEx }, () => {
  for (const text of declinedEx) {
    for (const clientKeeps of [false, true]) {
      assert.equal(rewriteEx!(Buffer.from(text, 'latin1'), 'mptcp-proxy', clientKeeps, false), null, `declined: ${JSON.stringify(text)}`);
    }
  }
  assert.equal(rewriteEx!(Buffer.from('HTTP/1.1 200 OK\r\nContent-Length: 4\r\n', 'latin1'), 'v', true, false), null);
});

test('random mutations of response heads: the generalised rewrite matches JS or declines', { skip: skipEx }, () => {
  const alphabet = ['\r', '\n', ' ', '\t', ':', ',', '\x00', '\x7f', '\xe9', '\xa0', 'a', 'Z', '0', '9', 'Via', 'Connection', 'close', 'keep-alive', 'chunked', 'Transfer-Encoding', 'Content-Length', 'HTTP/1.0'];
  const { rand, mutate } = mutator(777, alphabet);
  let handled = 0;
  for (let i = 0; i < 5000; i++) {
    const text = mutate(plainEx[rand(plainEx.length)]!);
    const head = Buffer.from(text, 'latin1');
    const clientKeeps = rand(2) === 0;
    const headRequest = rand(4) === 0;
    const c = rewriteEx!(head, 'mptcp-proxy', clientKeeps, headRequest);
    if (c === null) continue;
    handled += 1;
    sameResponse(c, jsResponseEx(head, 'mptcp-proxy', clientKeeps, headRequest), `${JSON.stringify(text)} keeps=${clientKeeps} head=${headRequest}`);
  }
  assert.ok(handled > 500, `enough mutated heads were handled natively to compare (${handled})`);
});

// ---- request heads (mpx_http_rewrite_request) --------------------------------------------------

const LIMITS = { maxBytes: 64 * 1024, maxCount: 100 };

type JsRequest = { rejected: true } | { rejected: false; eligible: false } | { rejected: false; eligible: true; result: RequestRewrite };

/** JS's reading of a request head the engine would forward on a connection open to `authority`:
 *  rejected (the session answers 4xx), not eligible (the session serves it), or the head it sends
 *  upstream. The eligibility rules are the engine's: a bodiless HTTP/1.1 GET in absolute form to
 *  that authority, one Host at most, no Expect. */
function jsRequest(bytes: Buffer, authority: string, via: string, limits = LIMITS): JsRequest {
  let head: RequestHead;
  let target: RequestTarget;
  let headLen: number;
  try {
    const pushed = new HeadDecoder(limits).push(bytes);
    if (!pushed.done) return { rejected: false, eligible: false };
    headLen = bytes.length - pushed.rest.length;
    head = parseRequestHead(pushed.head);
    target = parseRequestTarget(head.method, head.target);
  } catch {
    return { rejected: true };
  }
  const raw = bytes.toString('latin1', 0, bytes.indexOf('\r\n'));
  if (head.method !== 'GET' || !raw.endsWith(' HTTP/1.1') || target.form !== 'absolute' || target.authority !== authority) return { rejected: false, eligible: false };
  if (headerValues(head.headers, 'host').length > 1) return { rejected: false, eligible: false };
  for (const name of ['content-length', 'transfer-encoding', 'expect']) if (headerValues(head.headers, name).length > 0) return { rejected: false, eligible: false };
  const out = buildUpstreamRequestHead(head, { path: target.path, authority: target.authority, via, close: false });
  return { rejected: false, eligible: true, result: { out, headLen, clientKeeps: clientWantsPersistence(head), method: head.method, target: head.target } };
}

function sameRequest(c: RequestRewrite, js: JsRequest, what: string): void {
  assert.ok(!js.rejected && js.eligible, `JS forwards it too: ${what}`);
  assert.equal(c.out.toString('latin1'), js.result.out.toString('latin1'), what);
  assert.deepEqual({ ...c, out: undefined }, { ...js.result, out: undefined }, what);
}

/** [head, authority] pairs the engine must handle. */
const plainRequests: Array<[string, string]> = [
  ['GET http://10.0.0.2:8080/a?b HTTP/1.1\r\nHost: 10.0.0.2:8080\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\nProxy-Connection: Keep-Alive\r\n\r\n', '10.0.0.2:8080'],
  [
    'GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0\r\nAccept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8\r\nAccept-Language: en-US,en;q=0.5\r\nAccept-Encoding: gzip, deflate\r\nConnection: keep-alive\r\nUpgrade-Insecure-Requests: 1\r\n\r\n',
    'example.com',
  ],
  [
    'GET http://www.example.org/static/app.js?v=3 HTTP/1.1\r\nHost: www.example.org\r\nProxy-Connection: keep-alive\r\nUser-Agent: Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/119.0.0.0 Safari/537.36\r\nAccept: */*\r\nReferer: http://www.example.org/\r\nAccept-Encoding: gzip, deflate\r\nAccept-Language: en-GB,en;q=0.9\r\nCookie: a=1; b=2\r\nIf-None-Match: "abc"\r\n\r\n',
    'www.example.org',
  ],
  ['GET http://example.com HTTP/1.1\r\nHost: example.com\r\n\r\n', 'example.com'],
  ['GET http://example.com?x=1&y=%20 HTTP/1.1\r\nHost: example.com\r\n\r\n', 'example.com'],
  ['GET HTTP://Example.com:80/p HTTP/1.1\r\nhost: example.com\r\n\r\n', 'Example.com:80'],
  ['GET http://h:81/ HTTP/1.1\r\n\r\n', 'h:81'],
  ['GET http://h:81/ HTTP/1.1\r\nHost: elsewhere\r\nConnection: close\r\n\r\n', 'h:81'],
  ['GET http://h/ HTTP/1.1\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nx-end: 2\r\nConnection: ,,x-other ,\r\nX-Other: 3\r\n\r\n', 'h'],
  ['GET http://h/ HTTP/1.1\r\nVia: 1.0 fred, 1.1 p.example.net\r\nX: y\r\nvia: 1.1 second\r\n\r\n', 'h'],
  ['GET http://h/ HTTP/1.1\r\nVia:\r\n\r\n', 'h'],
  ['GET http://h/ HTTP/1.1\r\nX-Name: caf\xe9 \xa0\xff\r\nX-Empty:\r\nX-Pad: \t padded \t\r\n\r\n', 'h'],
  ['GET http://h/ HTTP/1.1\r\nProxy-Authorization: Basic dTpw\r\nTE: trailers\r\nUpgrade: websocket\r\nKeep-Alive: 300\r\nTrailer: X\r\nAccept: */*\r\n\r\n', 'h'],
  ['GET http://[::1]:8080/v6 HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n', '[::1]:8080'],
  ['GET http://h/ HTTP/1.1\r\nConnection: close\xa0\r\n\r\n', 'h'],
  ['GET http://h/ HTTP/1.1\r\nProxy-Connection: Close\r\n\r\n', 'h'],
  ['GET http://h/ HTTP/1.1\r\nConnection: Host, Via\r\nHost: h\r\nVia: 1.1 x\r\n\r\n', 'h'],
  ['GET http://h:/ HTTP/1.1\r\nHost: h\r\n\r\n', 'h:'],
  ["GET http://a-b.c_d~e!$&'()*+,;=%41:65535/x/../y;p?q=/?#' HTTP/1.1\r\n\r\n".replace('#', ''), "a-b.c_d~e!$&'()*+,;=%41:65535"],
];

/** [head, authority] pairs the engine must decline. */
const declinedRequests: Array<[string, string]> = [
  ['POST http://h/ HTTP/1.1\r\nContent-Length: 0\r\n\r\n', 'h'],
  ['HEAD http://h/ HTTP/1.1\r\n\r\n', 'h'],
  ['get http://h/ HTTP/1.1\r\n\r\n', 'h'],
  ['GET http://h/ HTTP/1.0\r\n\r\n', 'h'],
  ['GET http://h/ HTTP/1.2\r\n\r\n', 'h'],
  ['GET http://h/ HTTP/2.0\r\n\r\n', 'h'],
  ['GET http://h/ HTTP/1.1\r\n\r\n', 'h:80'],
  ['GET http://h:80/ HTTP/1.1\r\n\r\n', 'h'],
  ['GET http://H/ HTTP/1.1\r\n\r\n', 'h'],
  ['GET / HTTP/1.1\r\nHost: h\r\n\r\n', 'h'],
  ['GET https://h/ HTTP/1.1\r\n\r\n', 'h'],
  ['GET ftp://h/ HTTP/1.1\r\n\r\n', 'h'],
  ['GET http://h/#frag HTTP/1.1\r\n\r\n', 'h'],
  ['GET http://u@h/ HTTP/1.1\r\n\r\n', 'u@h'],
  ['GET http:/// HTTP/1.1\r\n\r\n', ''],
  ['GET http://h:0/ HTTP/1.1\r\n\r\n', 'h:0'],
  ['GET http://h:65536/ HTTP/1.1\r\n\r\n', 'h:65536'],
  ['GET http://h:123456/ HTTP/1.1\r\n\r\n', 'h:123456'],
  ['GET http://[::1/ HTTP/1.1\r\n\r\n', '[::1'],
  ['GET http://[]/ HTTP/1.1\r\n\r\n', '[]'],
  ['GET http://[::1]x/ HTTP/1.1\r\n\r\n', '[::1]x'],
  ['GET http://h%ZZ[/ HTTP/1.1\r\n\r\n', 'h%ZZ['],
  ['GET http://:80/ HTTP/1.1\r\n\r\n', ':80'],
  ['GET http://h/\xe9 HTTP/1.1\r\n\r\n', 'h'],
  ['GET http://h/ HTTP/1.1\r\nContent-Length: 0\r\n\r\n', 'h'],
  ['GET http://h/ HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n', 'h'],
  ['GET http://h/ HTTP/1.1\r\nExpect: 100-continue\r\n\r\n', 'h'],
  ['GET http://h/ HTTP/1.1\r\nHost: h\r\nHost: h\r\n\r\n', 'h'],
  ['GET http://h/ HTTP/1.1\r\nX: a\r\n folded\r\n\r\n', 'h'],
  ['GET http://h/ HTTP/1.1\r\nX: bare\nLF\r\n\r\n', 'h'],
  ['GET http://h/ HTTP/1.1\nX: y\r\n\r\n', 'h'],
  ['GET http://h/ HTTP/1.1\r\nX: y\n\r\n', 'h'],
  ['GET http://h/ HTTP/1.1\r\nX: bare\rCR\r\n\r\n', 'h'],
  ['GET http://h/ HTTP/1.1\r\nBad Name: v\r\n\r\n', 'h'],
  ['GET http://h/ HTTP/1.1\r\nX : v\r\n\r\n', 'h'],
  ['GET http://h/ HTTP/1.1\r\n: v\r\n\r\n', 'h'],
  ['GET http://h/ HTTP/1.1\r\nNo-Colon\r\n\r\n', 'h'],
  ['GET http://h/ HTTP/1.1\r\nX: ctl\x01\r\n\r\n', 'h'],
  ['GET http://h/ HTTP/1.1\r\nX: del\x7f\r\n\r\n', 'h'],
  ['GET  http://h/ HTTP/1.1\r\n\r\n', 'h'],
  ['GET http://h/  HTTP/1.1\r\n\r\n', 'h'],
  ['GET http://h/ HTTP/1.1 \r\n\r\n', 'h'],
  ['\r\nGET http://h/ HTTP/1.1\r\n\r\n', 'h'],
  ['GET http://h/ HTTP/1.1\r\nConnection: a,b,c,d,e,f,g,h,i,j,k,l,m,n,o,p,q\r\n\r\n', 'h'],
  ['GET http://h/ HTTP/1.1\r\nHost: h\r\n', 'h'],
  ['GET http://h/ HTTP/1.1\r\n' + 'X: y\r\n'.repeat(101) + '\r\n', 'h'],
];

test('the engine rewrites plain request heads exactly as rewrite.ts does', { skip: skipRequest }, () => {
  for (const [text, authority] of plainRequests) {
    for (const trailing of ['', 'GET http://h/next HTTP/1.1\r\n\r\n', 'x']) {
      const bytes = Buffer.from(text + trailing, 'latin1');
      for (const via of ['mptcp-proxy', 'edge-1']) {
        const what = `${JSON.stringify(text + trailing)} to ${authority}`;
        const c = rewriteRequest!(bytes, authority, via, LIMITS.maxBytes, LIMITS.maxCount);
        assert.notEqual(c, null, `handled natively: ${what}`);
        sameRequest(c!, jsRequest(bytes, authority, via), what);
        assert.equal(c!.headLen, text.length);
      }
    }
  }
  const curl = rewriteRequest!(Buffer.from(plainRequests[0]![0], 'latin1'), '10.0.0.2:8080', 'p', 65536, 100)!;
  assert.equal(
    curl.out.toString('latin1'),
    'GET /a?b HTTP/1.1\r\nHost: 10.0.0.2:8080\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\nVia: 1.1 p\r\n\r\n',
  );
  assert.equal(curl.clientKeeps, true);
  assert.equal(curl.target, 'http://10.0.0.2:8080/a?b');
  assert.equal(rewriteRequest!(Buffer.from(plainRequests[7]![0], 'latin1'), 'h:81', 'p', 65536, 100)!.clientKeeps, false);
});

test('the engine declines the other request heads, and never takes one JS rejects', { skip: skipRequest }, () => {
  for (const [text, authority] of declinedRequests) {
    const bytes = Buffer.from(text, 'latin1');
    assert.equal(rewriteRequest!(bytes, authority, 'mptcp-proxy', LIMITS.maxBytes, LIMITS.maxCount), null, `declined: ${JSON.stringify(text)} to ${authority}`);
  }
});

test("the request rewrite holds to HeadDecoder's limits on bytes and field count", { skip: skipRequest }, () => {
  const text = plainRequests[1]![0];
  const bytes = Buffer.from(text + 'GET http://example.com/more HTTP/1.1\r\n\r\n', 'latin1');
  const fields = text.split('\r\n').length - 3;
  for (const [maxBytes, maxCount] of [
    [text.length, fields],
    [text.length - 1, fields],
    [text.length, fields - 1],
    [text.length + 1, fields + 1],
    [1024, 8],
  ] as Array<[number, number]>) {
    const c = rewriteRequest!(bytes, 'example.com', 'v', maxBytes, maxCount);
    const js = jsRequest(bytes, 'example.com', 'v', { maxBytes, maxCount });
    const fits = text.length <= maxBytes && fields <= maxCount;
    assert.equal(js.rejected, !fits, `JS at ${maxBytes}/${maxCount}`);
    if (fits) sameRequest(c!, js, `${maxBytes}/${maxCount}`);
    else assert.equal(c, null, `declined at ${maxBytes}/${maxCount}`);
  }
});

test('random mutations of request heads: the engine matches JS or declines, and declines all JS rejects', { skip: skipRequest }, (t) => {
  const alphabet = ['\r', '\n', ' ', '\t', ':', ',', '\x00', '\x7f', '\xe9', '\xa0', 'a', 'Z', '0', '/', '?', '#', '@', '[', ']', '%', 'Host: h', 'Connection', 'close', 'Via', 'Content-Length', 'Transfer-Encoding', 'Expect', 'HTTP/1.0', 'http://', '\r\n'];
  const { rand, mutate } = mutator(4242, alphabet);
  let handled = 0;
  let rejected = 0;
  let missed = 0; // JS would forward it, the engine declined: allowed, but worth knowing
  for (let i = 0; i < 8000; i++) {
    const [original, authority] = plainRequests[rand(plainRequests.length)]!;
    const text = mutate(original);
    const bytes = Buffer.from(text, 'latin1');
    // Mostly the defaults; sometimes limits near the head's own size and field count.
    const tight = rand(4) === 0;
    const limits = tight ? { maxBytes: Math.max(1, original.length - 3 + rand(6)), maxCount: Math.max(0, original.split('\r\n').length - 4 + rand(3)) } : LIMITS;
    const c = rewriteRequest!(bytes, authority, 'mptcp-proxy', limits.maxBytes, limits.maxCount);
    const js = jsRequest(bytes, authority, 'mptcp-proxy', limits);
    const what = `${JSON.stringify(text)} to ${authority} within ${limits.maxBytes}/${limits.maxCount}`;
    if (js.rejected) {
      rejected += 1;
      assert.equal(c, null, `JS rejects it, so the engine must decline: ${what}`);
    }
    if (c === null) {
      if (!js.rejected && js.eligible) missed += 1;
      continue;
    }
    handled += 1;
    sameRequest(c, js, what);
  }
  t.diagnostic(`${handled} handled natively, ${rejected} rejected by JS, ${missed} forwardable by JS but declined`);
  assert.ok(handled > 300, `enough mutated heads were handled natively to compare (${handled})`);
  assert.ok(rejected > 1000, `enough mutated heads were rejected by JS (${rejected})`);
});
