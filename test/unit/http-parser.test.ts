import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ErrorCode } from '../../src/core/errors.js';
import {
  clientWantsPersistence,
  peekRequestTarget,
  HeadDecoder,
  HttpParseError,
  parseAuthority,
  parseRequestHead,
  parseRequestTarget,
  parseResponseHead,
} from '../../src/frontends/http/parser.js';
import type { HeadPush } from '../../src/frontends/http/parser.js';

const limits = { maxBytes: 1024, maxCount: 10 };

function b(s: string): Buffer {
  return Buffer.from(s, 'latin1');
}

/** Feeds `input` in pieces of `step` bytes; returns every head found and the final rest. */
function decodeAll(input: Buffer, step: number, lim = limits): { heads: string[]; rest: string } {
  const d = new HeadDecoder(lim);
  const heads: string[] = [];
  let rest = '';
  let pending = input;
  while (pending.length > 0) {
    const piece = pending.subarray(0, step);
    pending = pending.subarray(step);
    let r: HeadPush = d.push(piece);
    while (r.done) {
      heads.push(r.head.toString('latin1'));
      // The rest may hold the next head (pipelining): feed it back like the front-end does.
      if (r.rest.length === 0) break;
      const again = r.rest;
      r = d.push(again);
      if (!r.done) {
        rest = '';
        break;
      }
    }
  }
  return { heads, rest };
}

function code(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof HttpParseError, `expected HttpParseError, got ${String(err)}`);
    return err.code;
  }
  assert.fail('expected a parse error');
}

const GET = 'GET http://example.com/a HTTP/1.1\r\nHost: example.com\r\n\r\n';

test('head decoder finds a whole head in one chunk without copying, rest is the body', () => {
  const input = b(GET + 'BODY');
  const d = new HeadDecoder(limits);
  const r = d.push(input);
  assert.ok(r.done);
  assert.equal(r.head.toString('latin1'), GET);
  assert.equal(r.rest.toString('latin1'), 'BODY');
  assert.equal(r.head.buffer, input.buffer, 'head is a view of the chunk');
});

test('head decoder finds the head when fed one byte at a time and at every split point', () => {
  for (let step = 1; step <= GET.length; step += 1) {
    const { heads } = decodeAll(b(GET), step);
    assert.deepEqual(heads, [GET], `step ${step}`);
  }
  for (let split = 1; split < GET.length; split += 1) {
    const d = new HeadDecoder(limits);
    assert.equal(d.push(b(GET.slice(0, split))).done, false);
    const r = d.push(b(GET.slice(split) + 'X'));
    assert.ok(r.done, `split ${split}`);
    assert.equal(r.head.toString('latin1'), GET);
    assert.equal(r.rest.toString('latin1'), 'X');
  }
});

test('head decoder returns pipelined heads one at a time, in order', () => {
  const three = GET + GET.replace('/a', '/b') + GET.replace('/a', '/c');
  for (const step of [1, 7, three.length]) {
    const { heads } = decodeAll(b(three), step);
    assert.equal(heads.length, 3, `step ${step}`);
    assert.match(heads[2]!, /\/c HTTP/);
  }
});

test('head decoder skips empty lines before the request line (RFC 9112 §2.2)', () => {
  const d = new HeadDecoder(limits);
  assert.equal(d.push(b('\r\n\r\n')).done, false);
  assert.equal(d.started, false);
  const r = d.push(b(GET));
  assert.ok(r.done);
  assert.equal(r.head.toString('latin1'), GET);
});

test('head decoder throws 431 codes for too many bytes and too many header lines', () => {
  const big = 'GET http://x/ HTTP/1.1\r\nX: ' + 'a'.repeat(2000) + '\r\n\r\n';
  assert.equal(code(() => new HeadDecoder(limits).push(b(big))), ErrorCode.HEADERS_TOO_LARGE);
  // Fed slowly, it fails as soon as the limit is passed, before the end arrives.
  const d = new HeadDecoder(limits);
  assert.equal(code(() => { for (let i = 0; i < 1100; i += 100) d.push(b(big.slice(i, i + 100))); }), ErrorCode.HEADERS_TOO_LARGE);
  const many = 'GET http://x/ HTTP/1.1\r\n' + 'X: y\r\n'.repeat(11) + '\r\n';
  assert.equal(code(() => new HeadDecoder(limits).push(b(many))), ErrorCode.HEADERS_TOO_LARGE);
  const exactly = 'GET http://x/ HTTP/1.1\r\n' + 'X: y\r\n'.repeat(10) + '\r\n';
  assert.ok(new HeadDecoder(limits).push(b(exactly)).done, '10 header lines are allowed');
  // A head of exactly maxBytes is accepted.
  const pad = 1024 - 'GET http://x/ HTTP/1.1\r\nX: \r\n\r\n'.length;
  const fits = 'GET http://x/ HTTP/1.1\r\nX: ' + 'a'.repeat(pad) + '\r\n\r\n';
  assert.equal(fits.length, 1024);
  assert.ok(new HeadDecoder(limits).push(b(fits)).done);
});

test('head decoder ends a head at a bare-LF empty line so the parser can reject it (no wait for CRLFCRLF)', () => {
  const r = new HeadDecoder(limits).push(b('GET http://x/ HTTP/1.1\nHost: x\n\n'));
  assert.ok(r.done);
  assert.equal(code(() => parseRequestHead(r.head)), ErrorCode.BAD_REQUEST);
});

test('request line forms parse: absolute-form, authority-form, HTTP/1.0, HTTP/1.2 as 1.1', () => {
  const h = parseRequestHead(b('POST http://example.com:8080/p?q=1 HTTP/1.1\r\nHost: example.com\r\nX-A:  v  \r\n\r\n'));
  assert.equal(h.method, 'POST');
  assert.equal(h.target, 'http://example.com:8080/p?q=1');
  assert.equal(h.version, '1.1');
  assert.deepEqual(h.headers.map((x) => [x.name, x.value]), [['Host', 'example.com'], ['X-A', 'v']]);
  assert.equal(parseRequestHead(b('CONNECT example.com:443 HTTP/1.1\r\n\r\n')).target, 'example.com:443');
  assert.equal(parseRequestHead(b('GET http://x/ HTTP/1.0\r\n\r\n')).version, '1.0');
  assert.equal(parseRequestHead(b('GET http://x/ HTTP/1.2\r\n\r\n')).version, '1.1');
});

test('malformed request lines and header lines are 400; other major versions are 505', () => {
  const bad400 = [
    'GET  http://x/ HTTP/1.1\r\n\r\n', // two spaces
    'GET http://x/\r\n\r\n', // HTTP/0.9 style
    'GET http://x/ HTTP/1.1 extra\r\n\r\n',
    'G@T http://x/ HTTP/1.1\r\n\r\n',
    'GET http://x/ HTTX/1.1\r\n\r\n',
    'GET http://x/ HTTP/11\r\n\r\n',
    'GET http://x/\x7f HTTP/1.1\r\n\r\n',
    'GET http://x/ HTTP/1.1\r\nHost : x\r\n\r\n', // space before colon
    'GET http://x/ HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n', // obs-fold
    'GET http://x/ HTTP/1.1\r\nNoColon\r\n\r\n',
    'GET http://x/ HTTP/1.1\r\n: empty-name\r\n\r\n',
    'GET http://x/ HTTP/1.1\r\nX: a\x00b\r\n\r\n', // NUL
    'GET http://x/ HTTP/1.1\r\nX: a\rb\r\n\r\n', // bare CR
    'GET http://x/ HTTP/1.1\r\nX: a\nY: b\r\n\r\n', // bare LF
  ];
  for (const s of bad400) assert.equal(code(() => parseRequestHead(b(s))), ErrorCode.BAD_REQUEST, JSON.stringify(s));
  assert.equal(code(() => parseRequestHead(b('GET http://x/ HTTP/2.0\r\n\r\n'))), ErrorCode.NOT_SUPPORTED);
  assert.equal(code(() => parseRequestHead(b('GET http://x/ HTTP/3.0\r\n\r\n'))), ErrorCode.NOT_SUPPORTED);
});

test('header values keep obs-text bytes exactly (latin1 round trip)', () => {
  const h = parseRequestHead(Buffer.concat([b('GET http://x/ HTTP/1.1\r\nX: caf'), Buffer.from([0xe9]), b('\r\n\r\n')]));
  assert.deepEqual(Buffer.from(h.headers[0]!.value, 'latin1'), Buffer.from([0x63, 0x61, 0x66, 0xe9]));
});

test('request targets: absolute-form http, authority-form for CONNECT, everything else 400', () => {
  const abs = parseRequestTarget('GET', 'http://Example.com/x?y');
  assert.deepEqual(abs, { form: 'absolute', target: { host: 'Example.com', port: 80 }, authority: 'Example.com', path: '/x?y', url: 'http://Example.com/x?y' });
  const q = parseRequestTarget('GET', 'http://h:81?q');
  assert.equal(q.form === 'absolute' && q.path, '/?q');
  assert.deepEqual(q.target, { host: 'h', port: 81 });
  const bare = parseRequestTarget('GET', 'HTTP://h');
  assert.equal(bare.form === 'absolute' && bare.path, '/');
  const v6 = parseRequestTarget('GET', 'http://[::1]:8080/');
  assert.deepEqual(v6.target, { host: '::1', port: 8080 });
  assert.deepEqual(parseRequestTarget('CONNECT', 'example.com:443').target, { host: 'example.com', port: 443 });
  assert.deepEqual(parseRequestTarget('CONNECT', '[2001:db8::1]:443').target, { host: '2001:db8::1', port: 443 });

  const badTargets: Array<[string, string]> = [
    ['GET', '/origin-form'],
    ['GET', 'https://example.com/'],
    ['GET', 'ftp://example.com/'],
    ['OPTIONS', '*'],
    ['GET', 'http://user:pw@example.com/'],
    ['GET', 'http:///nohost'],
    ['GET', 'http://h:0/'],
    ['GET', 'http://h:99999/'],
    ['GET', 'http://h:8a/'],
    ['GET', 'http://h/#frag'],
    ['GET', 'http://[::1/'],
    ['CONNECT', 'example.com'],
    ['CONNECT', 'http://example.com:443/'],
    ['CONNECT', '/x'],
  ];
  for (const [m, t] of badTargets) assert.equal(code(() => parseRequestTarget(m, t)), ErrorCode.BAD_REQUEST, `${m} ${t}`);
});

test('origin-form and https absolute-form errors say what to do instead', () => {
  assert.throws(() => parseRequestTarget('GET', '/'), /proxy/);
  assert.throws(() => parseRequestTarget('GET', 'https://x/'), /CONNECT/);
});

test('parseAuthority applies the default port only when one is given', () => {
  assert.deepEqual(parseAuthority('h', 80), { host: 'h', port: 80 });
  assert.deepEqual(parseAuthority('h:', 80), { host: 'h', port: 80 });
  assert.throws(() => parseAuthority('h', undefined), HttpParseError);
});

test('status lines parse, with or without a reason phrase; malformed ones throw', () => {
  const r = parseResponseHead(b('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n'));
  assert.deepEqual([r.version, r.status, r.reason], ['1.1', 200, 'OK']);
  assert.equal(parseResponseHead(b('HTTP/1.0 404 \r\n\r\n')).reason, '');
  assert.equal(parseResponseHead(b('HTTP/1.1 204\r\n\r\n')).status, 204);
  assert.equal(parseResponseHead(b('HTTP/1.1 500 Internal Server Error\r\n\r\n')).reason, 'Internal Server Error');
  for (const s of ['HTTP/1.1 2000 OK\r\n\r\n', 'HTTP/1.1  200 OK\r\n\r\n', 'HTTX/1.1 200 OK\r\n\r\n', 'HTTP/1.1 OK\r\n\r\n']) {
    assert.throws(() => parseResponseHead(b(s)), HttpParseError, JSON.stringify(s));
  }
});

test('peekRequestTarget: the target of a complete absolute-form request line, as parseRequestTarget gives it', () => {
  const peek = (s: string) => peekRequestTarget(Buffer.from(s, 'latin1'));
  assert.deepEqual(peek('GET http://10.1.2.3:8080/x?y HTTP/1.1\r\nHost: a\r\n'), { host: '10.1.2.3', port: 8080 });
  assert.deepEqual(peek('POST http://[::1]/ HTTP/1.1\r\n'), { host: '::1', port: 80 });
  assert.deepEqual(peek('GET http://example.com/ HTTP/1.1\r\n'), { host: 'example.com', port: 80 });
  // Not (yet) an answer: incomplete line, CONNECT, other forms, malformed lines.
  for (const bad of [
    '',
    'GET http://10.1.2.3/ HTTP/1.1',
    '\r\nGET http://10.1.2.3/ HTTP/1.1\r\n',
    'CONNECT 10.1.2.3:443 HTTP/1.1\r\n',
    'GET / HTTP/1.1\r\n',
    'GET https://10.1.2.3/ HTTP/1.1\r\n',
    'GET  http://10.1.2.3/ HTTP/1.1\r\n',
    'G(T http://10.1.2.3/ HTTP/1.1\r\n',
    'GET http://10.1.2.3:99999/ HTTP/1.1\r\n',
    'GET http://u@10.1.2.3/ HTTP/1.1\r\n',
  ]) {
    assert.equal(peek(bad), undefined, JSON.stringify(bad));
  }
});

test('field names met before are still matched exactly; values are still checked after clean heads', () => {
  for (let i = 0; i < 3; i += 1) {
    const h = parseRequestHead(b('GET http://x/ HTTP/1.1\r\nX-Seen: \t a b \t\r\nx-seen: c\r\n\r\n'));
    assert.deepEqual(h.headers.map((x) => [x.name, x.lname, x.value]), [['X-Seen', 'x-seen', 'a b'], ['x-seen', 'x-seen', 'c']]);
  }
  // A name that differs from a known one by a byte the token rule forbids is still 400.
  assert.equal(code(() => parseRequestHead(b('GET http://x/ HTTP/1.1\r\nX-Seen : a\r\n\r\n'))), ErrorCode.BAD_REQUEST);
  // A CTL in a value of an otherwise known field, and one in the request line with a clean field.
  assert.equal(code(() => parseRequestHead(b('GET http://x/ HTTP/1.1\r\nX-Seen: a\x01b\r\n\r\n'))), ErrorCode.BAD_REQUEST);
  assert.equal(code(() => parseRequestHead(b('GET http://x/\x01 HTTP/1.1\r\nX-Seen: ab\r\n\r\n'))), ErrorCode.BAD_REQUEST);
  // An empty value and a value of whitespace only are empty strings.
  assert.deepEqual(parseRequestHead(b('GET http://x/ HTTP/1.1\r\nA:\r\nB: \t \r\n\r\n')).headers.map((x) => x.value), ['', '']);
  assert.equal(parseResponseHead(b('HTTP/1.1 200 OK\r\nX-Seen: a\tb\r\n\r\n')).headers[0]!.value, 'a\tb');
});

test('clientWantsPersistence: Connection and Proxy-Connection are lists of options; HTTP/1.0 persists only when asked', () => {
  const head = (version: string, ...fields: string[]) => parseRequestHead(Buffer.from(`GET http://a/ HTTP/${version}\r\n${fields.map((f) => f + '\r\n').join('')}\r\n`, 'latin1'));
  assert.equal(clientWantsPersistence(head('1.1')), true);
  assert.equal(clientWantsPersistence(head('1.1', 'Connection: close')), false);
  assert.equal(clientWantsPersistence(head('1.1', 'Connection: Keep-Alive, CLOSE')), false);
  assert.equal(clientWantsPersistence(head('1.1', 'Proxy-Connection: close')), false);
  assert.equal(clientWantsPersistence(head('1.1', 'Proxy-Connection: keep-alive, close')), false, 'a list, as Connection');
  assert.equal(clientWantsPersistence(head('1.1', 'Proxy-Connection: keep-alive')), true);
  assert.equal(clientWantsPersistence(head('1.0')), false);
  assert.equal(clientWantsPersistence(head('1.0', 'Connection: keep-alive')), true);
  assert.equal(clientWantsPersistence(head('1.0', 'Proxy-Connection: Keep-Alive')), true);
});
