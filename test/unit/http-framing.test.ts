import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ErrorCode } from '../../src/core/errors.js';
import { ChunkedDecoder, parseContentLength, requestBodyFraming, responseBodyFraming } from '../../src/frontends/http/framing.js';
import { HttpParseError, parseRequestHead, parseResponseHead } from '../../src/frontends/http/parser.js';

function req(s: string) {
  return parseRequestHead(Buffer.from(s, 'latin1'));
}
function res(s: string) {
  return parseResponseHead(Buffer.from(s, 'latin1'));
}
function badRequestCode(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof HttpParseError);
    return err.code;
  }
  assert.fail('expected a parse error');
}

test('request framing: Content-Length, chunked, none; identical repeated lengths are one', () => {
  assert.deepEqual(requestBodyFraming(req('POST http://x/ HTTP/1.1\r\nContent-Length: 5\r\n\r\n')), { kind: 'length', length: 5 });
  assert.deepEqual(requestBodyFraming(req('POST http://x/ HTTP/1.1\r\nContent-Length: 5, 5\r\nContent-Length: 5\r\n\r\n')), { kind: 'length', length: 5 });
  assert.deepEqual(requestBodyFraming(req('POST http://x/ HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n')), { kind: 'chunked' });
  assert.deepEqual(requestBodyFraming(req('POST http://x/ HTTP/1.1\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n')), { kind: 'chunked' });
  assert.deepEqual(requestBodyFraming(req('GET http://x/ HTTP/1.1\r\n\r\n')), { kind: 'none' });
  assert.deepEqual(requestBodyFraming(req('POST http://x/ HTTP/1.1\r\nContent-Length: 0\r\n\r\n')), { kind: 'none' });
});

test('request framing rejects smuggling shapes with 400: CL+TE, conflicting or non-numeric CL, non-final chunked, chunked twice, TE in HTTP/1.0', () => {
  const bad = [
    'POST http://x/ HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n',
    'POST http://x/ HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n',
    'POST http://x/ HTTP/1.1\r\nContent-Length: 5, 6\r\n\r\n',
    'POST http://x/ HTTP/1.1\r\nContent-Length: -1\r\n\r\n',
    'POST http://x/ HTTP/1.1\r\nContent-Length: 0x10\r\n\r\n',
    'POST http://x/ HTTP/1.1\r\nContent-Length: 1e3\r\n\r\n',
    'POST http://x/ HTTP/1.1\r\nContent-Length: \r\n\r\n',
    'POST http://x/ HTTP/1.1\r\nContent-Length: 99999999999999999\r\n\r\n',
    'POST http://x/ HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n',
    'POST http://x/ HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n',
    'POST http://x/ HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n',
    'POST http://x/ HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n',
  ];
  for (const s of bad) assert.equal(badRequestCode(() => requestBodyFraming(req(s))), ErrorCode.BAD_REQUEST, JSON.stringify(s));
  assert.equal(parseContentLength([]), undefined);
});

test('response framing follows RFC 9112 §6.3: HEAD, 1xx, 204, 304 have no body', () => {
  const withLength = res('HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n');
  assert.deepEqual(responseBodyFraming(withLength, 'HEAD'), { kind: 'none' });
  assert.deepEqual(responseBodyFraming(withLength, 'GET'), { kind: 'length', length: 10 });
  assert.deepEqual(responseBodyFraming(res('HTTP/1.1 100 Continue\r\n\r\n'), 'POST'), { kind: 'none' });
  assert.deepEqual(responseBodyFraming(res('HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n'), 'GET'), { kind: 'none' });
  assert.deepEqual(responseBodyFraming(res('HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n'), 'GET'), { kind: 'none' });
});

test('response framing: chunked wins over Content-Length, non-chunked TE and no length read until close', () => {
  assert.deepEqual(responseBodyFraming(res('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n'), 'GET'), { kind: 'chunked' });
  assert.deepEqual(responseBodyFraming(res('HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n'), 'GET'), { kind: 'close' });
  assert.deepEqual(responseBodyFraming(res('HTTP/1.1 200 OK\r\n\r\n'), 'GET'), { kind: 'close' });
  assert.deepEqual(responseBodyFraming(res('HTTP/1.0 200 OK\r\n\r\n'), 'GET'), { kind: 'close' });
  assert.deepEqual(responseBodyFraming(res('HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n'), 'GET'), { kind: 'none' });
  assert.throws(() => responseBodyFraming(res('HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\n'), 'GET'), HttpParseError);
  assert.throws(() => responseBodyFraming(res('HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n'), 'GET'), HttpParseError);
});

/** Feeds `input` to a fresh decoder in pieces; returns the bytes consumed and the data. */
function runChunked(input: string, step: number): { consumed: number; done: boolean; data: string } {
  const buf = Buffer.from(input, 'latin1');
  const d = new ChunkedDecoder();
  let consumed = 0;
  let data = '';
  for (let i = 0; i < buf.length && !d.done; i += step) {
    const piece = buf.subarray(i, Math.min(i + step, buf.length));
    const used = d.push(piece, (s, e) => {
      data += piece.subarray(s, e).toString('latin1');
    });
    consumed += used;
    if (used < piece.length) break;
  }
  return { consumed, done: d.done, data };
}

const CHUNKED = '5\r\nhello\r\n1;ext=1;flag\r\n \r\nA ; name="quoted; value"\r\n0123456789\r\n0\r\nX-Trailer: t\r\nY: u\r\n\r\n';

test('chunked decoder tracks framing incl. extensions and trailers at every split size', () => {
  for (let step = 1; step <= CHUNKED.length; step += 1) {
    const r = runChunked(CHUNKED + 'NEXT', step);
    assert.equal(r.done, true, `step ${step}`);
    assert.equal(r.consumed, CHUNKED.length, `step ${step}: stops exactly at the end of the body`);
    assert.equal(r.data, 'hello 0123456789', `step ${step}`);
  }
});

test('chunked decoder handles a body with no chunks and no trailers, and uppercase hex sizes', () => {
  assert.deepEqual(runChunked('0\r\n\r\nGET', 1), { consumed: 5, done: true, data: '' });
  assert.equal(runChunked('F\r\n' + 'x'.repeat(15) + '\r\n0\r\n\r\n', 3).data, 'x'.repeat(15));
  assert.equal(runChunked('00000\r\n\r\n', 2).done, true);
});

test('chunked decoder is not done while the body is incomplete', () => {
  const d = new ChunkedDecoder();
  assert.equal(d.push(Buffer.from('5\r\nhel')), 6);
  assert.equal(d.done, false);
  assert.equal(d.push(Buffer.from('lo\r\n0\r\n')), 7);
  assert.equal(d.done, false, 'needs the final CRLF');
  assert.equal(d.push(Buffer.from('\r\n')), 2);
  assert.equal(d.done, true);
});

test('chunked decoder rejects bad framing: bare LF, missing size, bad hex, missing CRLF after data, huge size, long extension', () => {
  const bad = [
    '5\nhello\r\n0\r\n\r\n',
    '\r\nhello\r\n',
    'g\r\n',
    '5\r\nhelloX\r\n',
    '5\r\nhello\r0\r\n\r\n',
    'fffffffffffffff\r\n',
    '5 \r\nhello\r\n',
    '5 x\r\n',
    '5;\x00\r\n',
    '0\r\nX: y\n\r\n',
    '0\r\n\n',
    '1;' + 'a'.repeat(5000) + '\r\n',
  ];
  for (const s of bad) {
    assert.throws(() => new ChunkedDecoder().push(Buffer.from(s, 'latin1')), HttpParseError, JSON.stringify(s.slice(0, 30)));
  }
});

test('chunked decoder rejects an oversized trailer section', () => {
  const d = new ChunkedDecoder({ maxExtensionBytes: 10, maxTrailerBytes: 20 });
  assert.throws(() => d.push(Buffer.from('0\r\nX-Long: ' + 'a'.repeat(30) + '\r\n\r\n')), HttpParseError);
});
