/**
 * Message body framing (RFC 9112 §6): how long a body is, and a chunked-coding tracker that
 * follows chunk boundaries while the bytes themselves are forwarded unchanged.
 *
 * Pure: no I/O. The tracker walks only the framing bytes one at a time; chunk data is
 * skipped in one step, so forwarding a large chunked body costs a few comparisons per chunk.
 */
import { ErrorCode } from '../../core/errors.js';
import { HttpParseError, headerList, headerValues } from './parser.js';
import type { RequestHead, ResponseHead } from './parser.js';

const CR_B = 0x0d;
const LF_B = 0x0a;

export type BodyFraming =
  | { kind: 'none' }
  | { kind: 'length'; length: number }
  | { kind: 'chunked' }
  /** Read until the server closes (responses only); the client connection closes after. */
  | { kind: 'close' };

function bad(message: string): HttpParseError {
  return new HttpParseError(ErrorCode.BAD_REQUEST, message);
}

/** Parses all Content-Length lines. Identical repeats ("5, 5") are one value (RFC 9110 §8.6);
 *  anything else is invalid. Returns undefined when absent. */
export function parseContentLength(values: readonly string[]): number | undefined {
  if (values.length === 0) return undefined;
  let length: number | undefined;
  for (const v of values) {
    for (const part of v.split(',')) {
      const t = part.trim();
      if (!/^\d{1,15}$/.test(t)) throw bad(`invalid Content-Length "${v}"`);
      const n = Number(t);
      if (length !== undefined && length !== n) throw bad('conflicting Content-Length values');
      length = n;
    }
  }
  return length;
}

/** True when "chunked" is the final transfer coding, exactly once; throws if it is applied
 *  twice. False when Transfer-Encoding lists other codings only. */
function chunkedIsFinal(codings: readonly string[]): boolean {
  const lower = codings.map((c) => c.toLowerCase());
  const count = lower.filter((c) => c === 'chunked').length;
  // RFC 9112 §7: a sender MUST NOT apply chunked more than once.
  if (count > 1) throw bad('chunked transfer coding applied more than once');
  return count === 1 && lower[lower.length - 1] === 'chunked';
}

/**
 * RFC 9112 §6.3 for requests: Transfer-Encoding together with Content-Length is rejected
 * (a smuggling signature); Transfer-Encoding whose final coding is not chunked is 400;
 * HTTP/1.0 with Transfer-Encoding is faulty framing (§6.1), 400; otherwise Content-Length;
 * otherwise no body.
 */
export function requestBodyFraming(req: RequestHead): BodyFraming {
  const te = headerList(req.headers, 'transfer-encoding');
  const hasTe = headerValues(req.headers, 'transfer-encoding').length > 0;
  const cl = parseContentLength(headerValues(req.headers, 'content-length'));
  if (hasTe) {
    if (cl !== undefined) throw bad('both Transfer-Encoding and Content-Length in request');
    if (req.version === '1.0') throw bad('Transfer-Encoding in an HTTP/1.0 request');
    if (!chunkedIsFinal(te)) throw bad('request Transfer-Encoding does not end with chunked');
    return { kind: 'chunked' };
  }
  if (cl === undefined || cl === 0) return { kind: 'none' };
  return { kind: 'length', length: cl };
}

/**
 * RFC 9112 §6.3 for responses, in the RFC's order: HEAD, 1xx, 204 and 304 have no body;
 * (2xx to CONNECT never reaches here: CONNECT is tunnelled); Transfer-Encoding with chunked
 * final is chunked, with anything else it is read-until-close; then Content-Length; else
 * read-until-close. An invalid Content-Length throws (the proxy MUST answer 502).
 */
export function responseBodyFraming(res: ResponseHead, requestMethod: string): BodyFraming {
  if (requestMethod === 'HEAD') return { kind: 'none' };
  if ((res.status >= 100 && res.status < 200) || res.status === 204 || res.status === 304) return { kind: 'none' };
  const hasTe = headerValues(res.headers, 'transfer-encoding').length > 0;
  if (hasTe) {
    // §6.1: Transfer-Encoding in an HTTP/1.0 message is faulty framing.
    if (res.version === '1.0') throw bad('Transfer-Encoding in an HTTP/1.0 response');
    return chunkedIsFinal(headerList(res.headers, 'transfer-encoding')) ? { kind: 'chunked' } : { kind: 'close' };
  }
  const cl = parseContentLength(headerValues(res.headers, 'content-length'));
  if (cl !== undefined) return cl === 0 ? { kind: 'none' } : { kind: 'length', length: cl };
  return { kind: 'close' };
}

const enum ChunkState {
  Size,
  Ext,
  SizeLf,
  Data,
  DataCr,
  DataLf,
  TrailerStart,
  Trailer,
  TrailerLf,
  FinalLf,
  Done,
}

export interface ChunkedLimits {
  /** Longest chunk-size line extension, bytes. */
  maxExtensionBytes: number;
  /** All trailer field lines together, bytes. */
  maxTrailerBytes: number;
}

const defaultChunkedLimits: ChunkedLimits = { maxExtensionBytes: 4096, maxTrailerBytes: 16384 };

function hexValue(b: number): number {
  if (b >= 0x30 && b <= 0x39) return b - 0x30;
  if (b >= 0x41 && b <= 0x46) return b - 0x41 + 10;
  if (b >= 0x61 && b <= 0x66) return b - 0x61 + 10;
  return -1;
}

/**
 * Follows chunked framing (RFC 9112 §7.1): chunk-size [chunk-ext] CRLF chunk-data CRLF ...
 * last-chunk trailer-section CRLF. Strict about CRLF (a bare LF is an error), permissive
 * about extension syntax beyond its leading ';' (forwarded unchanged anyway).
 *
 * `push` returns how many bytes of the buffer belong to the body; once `done`, whatever
 * follows is the next message. When `onData` is given it receives the chunk-data ranges,
 * for the rare case of decoding for an HTTP/1.0 client.
 */
export class ChunkedDecoder {
  #state = ChunkState.Size;
  #remaining = 0;
  #sizeDigits = 0;
  #extBytes = 0;
  #extStarted = false;
  #trailerBytes = 0;
  readonly #limits: ChunkedLimits;

  constructor(limits: ChunkedLimits = defaultChunkedLimits) {
    this.#limits = limits;
  }

  get done(): boolean {
    return this.#state === ChunkState.Done;
  }

  push(buf: Buffer, onData?: (start: number, end: number) => void): number {
    let i = 0;
    const n = buf.length;
    while (i < n) {
      switch (this.#state) {
        case ChunkState.Size: {
          const b = buf[i]!;
          const h = hexValue(b);
          if (h >= 0) {
            this.#sizeDigits += 1;
            // 13 hex digits keep the size within Number.MAX_SAFE_INTEGER.
            if (this.#sizeDigits > 13) throw bad('chunk size too large');
            this.#remaining = this.#remaining * 16 + h;
            i += 1;
            break;
          }
          if (this.#sizeDigits === 0) throw bad('missing chunk size');
          if (b === CR_B) {
            this.#state = ChunkState.SizeLf;
            i += 1;
            break;
          }
          if (b === 0x3b || b === 0x20 || b === 0x09) {
            // chunk-ext = *( BWS ";" BWS ext-name [ BWS "=" BWS ext-val ] )
            this.#state = ChunkState.Ext;
            this.#extBytes = 0;
            this.#extStarted = b === 0x3b;
            i += 1;
            break;
          }
          throw bad('invalid character in chunk size');
        }
        case ChunkState.Ext: {
          const b = buf[i]!;
          if (b === CR_B) {
            if (!this.#extStarted) throw bad('whitespace after chunk size without an extension');
            this.#state = ChunkState.SizeLf;
          } else if (b === LF_B || (b < 0x20 && b !== 0x09) || b === 0x7f) {
            throw bad('invalid character in chunk extension');
          } else {
            if (!this.#extStarted) {
              if (b === 0x3b) this.#extStarted = true;
              else if (b !== 0x20 && b !== 0x09) throw bad('chunk extension must start with ";"');
            }
            this.#extBytes += 1;
            if (this.#extBytes > this.#limits.maxExtensionBytes) throw bad('chunk extension too long');
          }
          i += 1;
          break;
        }
        case ChunkState.SizeLf: {
          if (buf[i] !== LF_B) throw bad('chunk size line not ended by CRLF');
          i += 1;
          this.#sizeDigits = 0;
          if (this.#remaining === 0) {
            this.#state = ChunkState.TrailerStart;
          } else {
            this.#state = ChunkState.Data;
          }
          break;
        }
        case ChunkState.Data: {
          const take = Math.min(this.#remaining, n - i);
          if (onData) onData(i, i + take);
          i += take;
          this.#remaining -= take;
          if (this.#remaining === 0) this.#state = ChunkState.DataCr;
          break;
        }
        case ChunkState.DataCr: {
          if (buf[i] !== CR_B) throw bad('chunk data not followed by CRLF');
          this.#state = ChunkState.DataLf;
          i += 1;
          break;
        }
        case ChunkState.DataLf: {
          if (buf[i] !== LF_B) throw bad('chunk data not followed by CRLF');
          this.#state = ChunkState.Size;
          i += 1;
          break;
        }
        case ChunkState.TrailerStart: {
          // Either the empty line ending the body, or a trailer field line.
          if (buf[i] === CR_B) {
            this.#state = ChunkState.FinalLf;
          } else {
            this.#state = ChunkState.Trailer;
            this.#checkTrailerByte(buf[i]!);
          }
          i += 1;
          break;
        }
        case ChunkState.Trailer: {
          const b = buf[i]!;
          if (b === CR_B) this.#state = ChunkState.TrailerLf;
          else this.#checkTrailerByte(b);
          i += 1;
          break;
        }
        case ChunkState.TrailerLf: {
          if (buf[i] !== LF_B) throw bad('trailer line not ended by CRLF');
          this.#state = ChunkState.TrailerStart;
          i += 1;
          break;
        }
        case ChunkState.FinalLf: {
          if (buf[i] !== LF_B) throw bad('chunked body not ended by CRLF');
          this.#state = ChunkState.Done;
          return i + 1;
        }
        case ChunkState.Done:
          return i;
      }
    }
    return i;
  }

  #checkTrailerByte(b: number): void {
    if (b === LF_B || (b < 0x20 && b !== 0x09) || b === 0x7f) throw bad('invalid character in trailer field');
    this.#trailerBytes += 1;
    if (this.#trailerBytes > this.#limits.maxTrailerBytes) throw bad('trailer section too large');
  }
}
