/**
 * The engine's chunked-body scanner (native/src/chunked.c) against framing.ts's ChunkedDecoder:
 * fed the same bytes in the same pieces, both take the same number of bytes as the body, end it
 * at the same byte, and refuse the same bodies — on hand-picked bodies, on random valid ones split
 * at random points, and on random mutations of those.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loadNative } from '../../src/mptcp/index.js';
import { ChunkedDecoder } from '../../src/frontends/http/framing.js';
import { mutator } from '../helpers/mutator.js';

interface Scan {
  consumed: number;
  ended: boolean;
  error: boolean;
}
type ChunkedScan = (pieces: Buffer[]) => Scan;

function nativeScan(): ChunkedScan | undefined {
  try {
    return (loadNative() as unknown as { httpChunkedScan?: ChunkedScan }).httpChunkedScan;
  } catch {
    return undefined;
  }
}

const scan = nativeScan();
const skip = scan === undefined ? 'the addon has no httpChunkedScan' : false;

/** ChunkedDecoder over the pieces as a reader feeds it: piece after piece until the body ends or
 *  the decoder throws; consumed counts the bytes of the pieces taken before a throw. */
function jsScan(pieces: Buffer[]): Scan {
  const d = new ChunkedDecoder();
  let consumed = 0;
  try {
    for (const p of pieces) {
      consumed += d.push(p);
      if (d.done) break;
    }
    return { consumed, ended: d.done, error: false };
  } catch {
    return { consumed, ended: false, error: true };
  }
}

const b = (s: string): Buffer => Buffer.from(s, 'latin1');

test('hand-picked chunked bodies: the engine scans them as ChunkedDecoder does', { skip }, () => {
  const cases: Array<[string, Scan]> = [
    ['0\r\n\r\n', { consumed: 5, ended: true, error: false }],
    ['5\r\nhello\r\n0\r\n\r\nNEXT', { consumed: 15, ended: true, error: false }],
    ['A;name=value;x\r\n0123456789\r\n000\r\nX-Trailer: 1\r\nY: 2\r\n\r\n', { consumed: 55, ended: true, error: false }],
    ['5 ;ext\r\nhello\r\n0\t;e\r\n\r\n', { consumed: 23, ended: true, error: false }],
    ['5\r\nhel', { consumed: 6, ended: false, error: false }],
    ['fffffffffffff\r\n', { consumed: 15, ended: false, error: false }],
    ['ffffffffffffff\r\n', { consumed: 0, ended: false, error: true }],
    ['\r\n', { consumed: 0, ended: false, error: true }],
    ['5 \r\nhello\r\n', { consumed: 0, ended: false, error: true }],
    ['5 x\r\n', { consumed: 0, ended: false, error: true }],
    ['5\nhello\r\n', { consumed: 0, ended: false, error: true }],
    ['5\r\nhelloX\r\n', { consumed: 0, ended: false, error: true }],
    ['5\r\nhello\rX', { consumed: 0, ended: false, error: true }],
    ['0\r\nX: \x01\r\n\r\n', { consumed: 0, ended: false, error: true }],
    ['0\r\nX: y\n\r\n', { consumed: 0, ended: false, error: true }],
    ['0\r\n\rX', { consumed: 0, ended: false, error: true }],
    ['g\r\n', { consumed: 0, ended: false, error: true }],
    ['-1\r\n', { consumed: 0, ended: false, error: true }],
    ['1;\x7f\r\n', { consumed: 0, ended: false, error: true }],
  ];
  for (const [text, want] of cases) {
    assert.deepEqual(jsScan([b(text)]), want, `JS: ${JSON.stringify(text)}`);
    assert.deepEqual(scan!([b(text)]), want, `C: ${JSON.stringify(text)}`);
  }
});

test("the default limits: extension and trailer sizes, at and past ChunkedDecoder's", { skip }, () => {
  for (const ext of [4095, 4096, 4097]) {
    const body = b(`1;${'x'.repeat(ext - 1)}\r\nZ\r\n0\r\n\r\n`); // the ';' is not counted, its ext bytes are
    assert.deepEqual(scan!([body]), jsScan([body]), `extension of ${ext}`);
  }
  for (const extra of [-1, 0, 1]) {
    const line = 'X: ' + 'y'.repeat(16384 - 3 + extra);
    const body = b(`0\r\n${line}\r\n\r\n`);
    const js = jsScan([body]);
    assert.equal(js.error, extra > 0);
    assert.deepEqual(scan!([body]), js, `trailer of ${line.length}`);
  }
  const twoLines = b(`0\r\n${'a'.repeat(9000)}\r\n${'b'.repeat(9000)}\r\n\r\n`);
  assert.deepEqual(scan!([twoLines]), jsScan([twoLines]));
  assert.equal(jsScan([twoLines]).error, true, 'the trailer limit counts all lines together');
});

/** A deterministic generator. */

/** A valid chunked body with random chunk sizes (hex in either case, leading zeros sometimes),
 *  extensions, data bytes (CR and LF among them), trailers, and sometimes bytes after it. */
function validBody(rand: (n: number) => number): string {
  const hex = (n: number): string => {
    const h = '0'.repeat(rand(4) === 0 ? rand(3) : 0) + n.toString(16);
    return rand(2) === 0 ? h : h.toUpperCase();
  };
  const exts = ['', '', '', ';a', ';a=b', ' ;x="y z"', '\t;q;r=1', '  ;'];
  let s = '';
  const chunks = rand(5);
  for (let c = 0; c < chunks; c++) {
    const size = 1 + (rand(3) === 0 ? rand(2000) : rand(40));
    let data = '';
    for (let i = 0; i < size; i++) data += String.fromCharCode(rand(5) === 0 ? [13, 10, 0, 48][rand(4)]! : rand(256));
    s += `${hex(size)}${exts[rand(exts.length)]!}\r\n${data}\r\n`;
  }
  s += `${rand(3) === 0 ? '000' : '0'}${exts[rand(exts.length)]!}\r\n`;
  const trailers = rand(3);
  for (let t = 0; t < trailers; t++) s += ['X-Checksum: abc', 'Expires: never\t', 'T:'][rand(3)] + '\r\n';
  s += '\r\n';
  if (rand(2) === 0) s += 'HTTP/1.1 200 OK\r\n';
  return s;
}

/** The bytes split at 0 to 5 random points (empty pieces included). */
function split(bytes: Buffer, rand: (n: number) => number): Buffer[] {
  const cuts = Array.from({ length: rand(6) }, () => rand(bytes.length + 1)).sort((x, y) => x - y);
  const pieces: Buffer[] = [];
  let at = 0;
  for (const c of cuts) {
    pieces.push(bytes.subarray(at, c));
    at = c;
  }
  pieces.push(bytes.subarray(at));
  return pieces;
}

test('random valid bodies split at random points: same bytes taken, same end', { skip }, () => {
  const { rand } = mutator(99, []);
  for (let i = 0; i < 3000; i++) {
    const text = validBody(rand);
    const pieces = split(b(text), rand);
    const js = jsScan(pieces);
    assert.equal(js.error, false, `a valid body: ${JSON.stringify(text)}`);
    assert.equal(js.ended, true);
    assert.deepEqual(scan!(pieces), js, JSON.stringify(text));
    // Cut short anywhere: all of it taken, not ended yet (or ended, if the cut is after the end).
    const cut = b(text).subarray(0, rand(text.length + 1));
    const short = split(cut, rand);
    assert.deepEqual(scan!(short), jsScan(short), `cut to ${cut.length}: ${JSON.stringify(text)}`);
  }
});

test('random mutations of chunked bodies: the engine and ChunkedDecoder agree on every one', { skip }, (t) => {
  const { rand, mutate } = mutator(2024, ['\r', '\n', '\r\n', ' ', '\t', ';', '=', '"', '0', '1', '9', 'a', 'F', 'g', 'x', ':', '\x00', '\x01', '\x7f', '\xe9', '\xff', '0\r\n\r\n', 'fffffffffffff', 'ffffffffffffff']);
  let errors = 0;
  let ended = 0;
  for (let i = 0; i < 4000; i++) {
    const text = mutate(validBody(rand));
    const pieces = split(b(text), rand);
    const js = jsScan(pieces);
    errors += js.error ? 1 : 0;
    ended += js.ended ? 1 : 0;
    assert.deepEqual(scan!(pieces), js, JSON.stringify(text));
  }
  t.diagnostic(`${errors} refused, ${ended} ended, ${4000 - errors - ended} still going`);
  assert.ok(errors > 500 && ended > 500, `both kinds of outcome were compared (${errors} refused, ${ended} ended)`);
});

test('a scanner that has ended takes nothing more, and the pieces after it are not read', { skip }, () => {
  const pieces = [b('3\r\nabc\r\n0\r\n\r\n'), b('more')];
  assert.deepEqual(scan!(pieces), { consumed: 13, ended: true, error: false });
  assert.deepEqual(jsScan(pieces), { consumed: 13, ended: true, error: false });
  assert.deepEqual(scan!([]), { consumed: 0, ended: false, error: false });
});
