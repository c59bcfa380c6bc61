/**
 * The engine's own response-head rewrite (native/src/http-head.c) against rewrite.ts's: on every
 * head of a corpus, the C rewrite either declines (null: JS rewrites it, with its full checks) or
 * produces byte for byte what buildDownstreamResponseHead does for a client closed after the
 * response — and it does handle the plain heads real origins send.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loadNative } from '../../src/mptcp/index.js';
import { parseResponseHead, HeadDecoder, RESPONSE_HEAD_LIMITS } from '../../src/frontends/http/parser.js';
import { responseBodyFraming } from '../../src/frontends/http/framing.js';
import { buildDownstreamResponseHead } from '../../src/frontends/http/rewrite.js';

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
  // A deterministic generator: bytes flipped, inserted and removed at random places.
  let seed = 12345;
  const rand = (n: number): number => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed % n;
  };
  const alphabet = ['\r', '\n', ' ', '\t', ':', ',', '\x00', '\x7f', '\xe9', 'a', 'Z', '0', '9', 'Via', 'Connection', 'close'];
  let handled = 0;
  for (let i = 0; i < 3000; i++) {
    let text = plain[rand(plain.length)]!;
    const edits = 1 + rand(3);
    for (let e = 0; e < edits; e++) {
      const at = rand(text.length);
      const op = rand(3);
      const piece = alphabet[rand(alphabet.length)]!;
      text = op === 0 ? text.slice(0, at) + piece + text.slice(at) : op === 1 ? text.slice(0, at) + text.slice(at + 1) : text.slice(0, at) + piece + text.slice(at + 1);
    }
    const head = Buffer.from(text, 'latin1');
    const c = rewrite!(head, 'mptcp-proxy');
    if (c === null) continue;
    handled += 1;
    assert.equal(c.toString('latin1'), jsRewrite(head, 'mptcp-proxy')?.toString('latin1'), JSON.stringify(text));
  }
  assert.ok(handled > 200, `enough mutated heads were handled natively to compare (${handled})`);
});
