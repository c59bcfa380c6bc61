/**
 * HTTP/1.1 message heads (RFC 9112 §2–§5): an incremental head decoder that finds the end of
 * a head across arbitrary byte boundaries, and pure parsers for request and response heads
 * and request targets. No I/O here; everything is unit-tested byte by byte.
 *
 * Strictness is deliberate: a proxy that is more lenient than the server behind it is a
 * request-smuggling vector (RFC 9112 §11.2), so bare CR/LF inside a head, obs-fold, spaces
 * before the colon and invalid characters are all 400.
 */
import { DownstreamError, ErrorCode } from '../../core/errors.js';
import type { TargetAddress } from '../../core/errors.js';

const CR = 0x0d;
const LF = 0x0a;

/** A malformed or oversized message. The front-end turns it into 400/431/505 for requests
 *  and 502 for responses. */
export class HttpParseError extends DownstreamError {
  override name = 'HttpParseError';
}

function bad(message: string): HttpParseError {
  return new HttpParseError(ErrorCode.BAD_REQUEST, message);
}

export interface HeadLimits {
  /** Bytes of start line + header lines + the empty line; more is 431. */
  maxBytes: number;
  /** Header field lines (not counting the start line); more is 431. */
  maxCount: number;
}

export type HeadPush = { done: false } | { done: true; head: Buffer; rest: Buffer };

/**
 * Finds the end of one message head in a byte stream fed in arbitrary pieces.
 *
 * The common case (a whole head in the first chunk) copies nothing: the head and the
 * rest are views of the chunk. Only a head split across chunks is copied, into one
 * buffer bounded by maxBytes. Empty lines before the start line are skipped
 * (RFC 9112 §2.2: "SHOULD ignore at least one empty line (CRLF) received prior to the
 * request-line"), which also absorbs a stray CRLF after a POST body when pipelining.
 */
export class HeadDecoder {
  readonly #limits: HeadLimits;
  #buf: Buffer | null = null;
  #len = 0;
  #scan = 0;
  #lineStart = 0;
  #lines = 0;
  #leading = true;

  constructor(limits: HeadLimits) {
    this.#limits = limits;
  }

  /** True once any byte of a head (other than leading empty lines) has arrived. */
  get started(): boolean {
    return !this.#leading;
  }

  reset(): void {
    this.#buf = null;
    this.#len = 0;
    this.#scan = 0;
    this.#lineStart = 0;
    this.#lines = 0;
    this.#leading = true;
  }

  /** Feeds bytes; throws HttpParseError (431) when the head outgrows the limits. */
  push(chunk: Buffer): HeadPush {
    let c = chunk;
    if (this.#leading) {
      let i = 0;
      while (i < c.length && (c[i] === CR || c[i] === LF)) i += 1;
      if (i === c.length) return { done: false };
      this.#leading = false;
      c = c.subarray(i);
    }
    if (this.#len === 0) {
      // Fast path: scan the chunk in place.
      const end = this.#scanFor(c, c.length);
      if (end >= 0) {
        const head = c.subarray(0, end);
        const rest = c.subarray(end);
        this.reset();
        return { done: true, head, rest };
      }
      this.#tooLargeIfOver(c.length);
      this.#buf = Buffer.allocUnsafe(Math.min(Math.max(c.length * 2, 1024), this.#limits.maxBytes + 1));
      c.copy(this.#buf, 0);
      this.#len = c.length;
      return { done: false };
    }
    // Slow path: append to the partial head, at most up to the limit.
    const before = this.#len;
    const take = Math.min(c.length, this.#limits.maxBytes + 1 - before);
    this.#ensure(before + take);
    c.copy(this.#buf!, before, 0, take);
    this.#len = before + take;
    const end = this.#scanFor(this.#buf!, this.#len);
    if (end >= 0) {
      const head = Buffer.from(this.#buf!.subarray(0, end));
      const rest = c.subarray(end - before);
      this.reset();
      return { done: true, head, rest };
    }
    this.#tooLargeIfOver(this.#len);
    return { done: false };
  }

  #ensure(size: number): void {
    const buf = this.#buf!;
    if (size <= buf.length) return;
    const grown = Buffer.allocUnsafe(Math.min(Math.max(size, buf.length * 2), this.#limits.maxBytes + 1));
    buf.copy(grown, 0, 0, this.#len);
    this.#buf = grown;
  }

  #tooLargeIfOver(len: number): void {
    if (len > this.#limits.maxBytes) {
      throw new HttpParseError(ErrorCode.HEADERS_TOO_LARGE, `request head exceeds ${this.#limits.maxBytes} bytes`);
    }
  }

  /** Returns the offset just past the empty line ending the head, or -1. An empty line is
   *  CRLF or a bare LF (the latter is then rejected as a bare LF by the head parser rather
   *  than waiting for a CRLFCRLF that never comes). */
  #scanFor(buf: Buffer, len: number): number {
    const view = len === buf.length ? buf : buf.subarray(0, len);
    let i = this.#scan;
    for (;;) {
      const lf = view.indexOf(LF, i);
      if (lf < 0) {
        this.#scan = len;
        return -1;
      }
      const lineLen = lf - this.#lineStart;
      if (lineLen === 0 || (lineLen === 1 && view[this.#lineStart] === CR)) {
        const end = lf + 1;
        if (end > this.#limits.maxBytes) {
          throw new HttpParseError(ErrorCode.HEADERS_TOO_LARGE, `request head exceeds ${this.#limits.maxBytes} bytes`);
        }
        return end;
      }
      this.#lines += 1;
      // The first line is the start line; the rest are header field lines.
      if (this.#lines - 1 > this.#limits.maxCount) {
        throw new HttpParseError(ErrorCode.HEADERS_TOO_LARGE, `more than ${this.#limits.maxCount} header fields`);
      }
      this.#lineStart = lf + 1;
      i = lf + 1;
    }
  }
}

export interface HttpHeader {
  /** As received (case preserved, for forwarding). */
  name: string;
  /** Lower-case, for lookups. */
  lname: string;
  /** latin1-decoded bytes, so re-encoding as latin1 reproduces them exactly. */
  value: string;
}

export type HttpVersion = '1.0' | '1.1';

export interface RequestHead {
  method: string;
  target: string;
  version: HttpVersion;
  headers: HttpHeader[];
}

export interface ResponseHead {
  version: HttpVersion;
  status: number;
  reason: string;
  headers: HttpHeader[];
}

// RFC 9110 §5.6.2: token = 1*tchar.
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
// RFC 9110 §5.5: field-value = *field-content; VCHAR, obs-text, SP, HTAB. No CTLs (NUL, CR, LF...).
const FIELD_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;
// request-target has no whitespace or CTLs (RFC 9112 §3.2); obs-text is not allowed in URIs.
const TARGET = /^[\x21-\x7e]+$/;
const VERSION = /^HTTP\/(\d)\.(\d)$/;

export function isToken(s: string): boolean {
  return TOKEN.test(s);
}

/** A byte no head may hold outside its CRLFs: a CTL other than HTAB (RFC 9110 §5.5 for values;
 *  names are tokens, the start line is checked on its own), or a CR or LF not in a CRLF pair. */
const HEAD_FORBIDDEN = /[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]|\r(?!\n)|(?<!\r)\n/;

/** Field names seen in valid heads, with their lower case: a name met before needs neither the
 *  token check nor a toLowerCase() again. Bounded: names beyond it are checked every time. */
const KNOWN_NAMES = new Map<string, string>();
const KNOWN_NAMES_MAX = 512;

/** Splits a head into lines, requiring CRLF endings: a bare CR or bare LF is 400. The second
 *  result says whether the whole head is free of forbidden bytes (HEAD_FORBIDDEN), in which case
 *  field values need no check of their own. */
function splitHeadLines(head: Buffer): { lines: string[]; clean: boolean } {
  const text = head.toString('latin1');
  if (!text.endsWith('\r\n\r\n')) throw bad('head does not end with an empty CRLF line');
  const body = text.slice(0, -4);
  const lines = body.split('\r\n');
  const clean = !HEAD_FORBIDDEN.test(body);
  if (!clean) {
    for (const line of lines) {
      if (line.includes('\r') || line.includes('\n')) throw bad('bare CR or LF in message head');
    }
  }
  return { lines, clean };
}

/** Optional whitespace (SP, HTAB) off both ends, without a regular expression. */
function trimOws(s: string, from: number): string {
  let start = from;
  let end = s.length;
  while (start < end && (s.charCodeAt(start) === 0x20 || s.charCodeAt(start) === 0x09)) start += 1;
  while (end > start && (s.charCodeAt(end - 1) === 0x20 || s.charCodeAt(end - 1) === 0x09)) end -= 1;
  return s.slice(start, end);
}

function parseHeaderLines(lines: string[], clean: boolean): HttpHeader[] {
  const headers: HttpHeader[] = [];
  for (let i = 1; i < lines.length; i += 1) {
    const line = lines[i]!;
    const first = line.charCodeAt(0);
    // RFC 9112 §5.2: obs-fold in a request is rejected with 400.
    if (first === 0x20 || first === 0x09) throw bad('obsolete line folding in header field');
    const colon = line.indexOf(':');
    if (colon <= 0) throw bad('header field line without a name and colon');
    const name = line.slice(0, colon);
    let lname = KNOWN_NAMES.get(name);
    if (lname === undefined) {
      // RFC 9112 §5.1: no whitespace between field name and colon; 400.
      if (!TOKEN.test(name)) throw bad(`invalid header field name "${name}"`);
      lname = name.toLowerCase();
      if (KNOWN_NAMES.size < KNOWN_NAMES_MAX) KNOWN_NAMES.set(name, lname);
    }
    const value = trimOws(line, colon + 1);
    if (!clean && !FIELD_VALUE.test(value)) throw bad(`invalid character in header field "${name}"`);
    headers.push({ name, lname, value });
  }
  return headers;
}

function parseVersion(v: string): HttpVersion {
  const m = VERSION.exec(v);
  if (!m) throw bad(`malformed HTTP version "${v}"`);
  if (m[1] !== '1') throw new HttpParseError(ErrorCode.NOT_SUPPORTED, `HTTP version ${v} not supported`);
  // RFC 9110 §6.2: a higher minor version of HTTP/1 is treated as the highest we support.
  return m[2] === '0' ? '1.0' : '1.1';
}

/** Parses a complete request head (as found by HeadDecoder). Throws HttpParseError. */
export function parseRequestHead(head: Buffer): RequestHead {
  const { lines, clean } = splitHeadLines(head);
  const parts = lines[0]!.split(' ');
  // RFC 9112 §3: method SP request-target SP HTTP-version, exactly one SP each.
  if (parts.length !== 3) throw bad('malformed request line');
  const [method, target, version] = parts as [string, string, string];
  if (!TOKEN.test(method)) throw bad('malformed request method');
  if (!TARGET.test(target)) throw bad('malformed request target');
  const v = parseVersion(version);
  return { method, target, version: v, headers: parseHeaderLines(lines, clean) };
}

/** Parses a complete response head. Throws HttpParseError (the caller makes it a 502). */
export function parseResponseHead(head: Buffer): ResponseHead {
  const { lines, clean } = splitHeadLines(head);
  const line = lines[0]!;
  // RFC 9112 §4: HTTP-version SP status-code SP [reason-phrase]; tolerate a missing last SP.
  const m = /^(HTTP\/\d\.\d) (\d{3})(?: ([\t\x20-\x7e\x80-\xff]*))?$/.exec(line);
  if (!m) throw bad('malformed status line');
  const version = parseVersion(m[1]!);
  return { version, status: Number(m[2]), reason: m[3] ?? '', headers: parseHeaderLines(lines, clean) };
}

export function headerValues(headers: readonly HttpHeader[], lname: string): string[] {
  const out: string[] = [];
  for (const h of headers) if (h.lname === lname) out.push(h.value);
  return out;
}

export function firstHeader(headers: readonly HttpHeader[], lname: string): string | undefined {
  for (const h of headers) if (h.lname === lname) return h.value;
  return undefined;
}

/** Comma-separated list elements of all lines of a header, trimmed, empty ones dropped
 *  (RFC 9110 §5.6.1). */
export function headerList(headers: readonly HttpHeader[], lname: string): string[] {
  const out: string[] = [];
  for (const h of headers) {
    if (h.lname !== lname) continue;
    for (const part of h.value.split(',')) {
      const t = part.trim();
      if (t.length > 0) out.push(t);
    }
  }
  return out;
}

/** Whether a Connection (or Proxy-Connection) header lists the given option. */
export function hasConnectionOption(headers: readonly HttpHeader[], option: string): boolean {
  for (const v of headerList(headers, 'connection')) if (v.toLowerCase() === option) return true;
  return false;
}

/** Whether the client asked to keep its connection after this request (RFC 9112 §9.3). */
export function clientWantsPersistence(head: RequestHead): boolean {
  // Proxy-Connection is the pre-standard spelling some clients still send to proxies; a list
  // of options, like Connection.
  const proxyConn = headerList(head.headers, 'proxy-connection').map((v) => v.toLowerCase());
  if (head.version === '1.1') return !hasConnectionOption(head.headers, 'close') && !proxyConn.includes('close');
  // RFC 9112 §9.3: HTTP/1.0 persists only with an explicit keep-alive.
  return hasConnectionOption(head.headers, 'keep-alive') || proxyConn.includes('keep-alive');
}

/** Response heads come from servers we chose to talk to; allow more than for requests. */
export const RESPONSE_HEAD_LIMITS = { maxBytes: 256 * 1024, maxCount: 1000 };

// ---- request targets (RFC 9112 §3.2) -------------------------------------------------------

export type RequestTarget =
  | { form: 'absolute'; target: TargetAddress; authority: string; path: string; url: string }
  | { form: 'authority'; target: TargetAddress; authority: string };

// reg-name = *( unreserved / pct-encoded / sub-delims ) (RFC 3986 §3.2.2); IPv4 fits too.
const REG_NAME = /^[A-Za-z0-9\-._~!$&'()*+,;=%]+$/;
const IPV6_LITERAL = /^\[([0-9A-Fa-f:.]+)\]$/;

/** Splits "host[:port]" into a TargetAddress; throws 400 on anything else. */
export function parseAuthority(authority: string, defaultPort: number | undefined): TargetAddress {
  let host: string;
  let portText: string | undefined;
  if (authority.startsWith('[')) {
    const close = authority.indexOf(']');
    if (close < 0) throw bad('malformed IPv6 literal in authority');
    const literal = authority.slice(0, close + 1);
    const m = IPV6_LITERAL.exec(literal);
    if (!m) throw bad('malformed IPv6 literal in authority');
    host = m[1]!;
    const after = authority.slice(close + 1);
    if (after.length > 0) {
      if (!after.startsWith(':')) throw bad('malformed authority');
      portText = after.slice(1);
    }
  } else {
    const colon = authority.lastIndexOf(':');
    if (colon >= 0) {
      host = authority.slice(0, colon);
      portText = authority.slice(colon + 1);
    } else {
      host = authority;
    }
    if (!REG_NAME.test(host)) throw bad('malformed host in authority');
  }
  let port: number;
  if (portText === undefined || portText === '') {
    // RFC 3986 allows "host:" meaning the default port.
    if (defaultPort === undefined) throw bad('authority-form target needs a port');
    port = defaultPort;
  } else {
    if (!/^\d{1,5}$/.test(portText)) throw bad('malformed port in authority');
    port = Number(portText);
    if (port < 1 || port > 65535) throw bad('port out of range');
  }
  return { host, port };
}

export const ORIGIN_FORM_MESSAGE =
  'This is a forward proxy: send requests in absolute-form (GET http://host/path HTTP/1.1) or use CONNECT host:port.';
export const HTTPS_ABSOLUTE_MESSAGE = 'https:// URIs are not fetched by this proxy: use CONNECT host:443 (curl does this with -x).';

/**
 * Classifies and parses a request target. CONNECT takes authority-form only; every other
 * method takes absolute-form `http://` only (RFC 9112 §3.2.2: "a client MUST send the target
 * URI in absolute-form" to a proxy). Origin-form, asterisk-form and other schemes are 400.
 */
export function parseRequestTarget(method: string, target: string): RequestTarget {
  if (method === 'CONNECT') {
    if (target.includes('/') || target.includes('@')) throw bad('CONNECT needs an authority-form target (host:port)');
    return { form: 'authority', target: parseAuthority(target, undefined), authority: target };
  }
  if (target === '*') throw bad('asterisk-form (OPTIONS *) is not answered by this proxy');
  if (target.startsWith('/')) throw bad(ORIGIN_FORM_MESSAGE);
  const lower = target.slice(0, 8).toLowerCase();
  if (lower.startsWith('https://')) throw bad(HTTPS_ABSOLUTE_MESSAGE);
  if (!lower.startsWith('http://')) throw bad('only absolute-form http:// targets are accepted');
  if (target.includes('#')) throw bad('fragment in request target');
  const rest = target.slice(7);
  let end = rest.length;
  for (const ch of ['/', '?']) {
    const i = rest.indexOf(ch);
    if (i >= 0 && i < end) end = i;
  }
  const authority = rest.slice(0, end);
  // RFC 9110 §4.2.4: userinfo in an http URI is deprecated; treat it as an error.
  if (authority.includes('@')) throw bad('userinfo in request target is not allowed');
  if (authority.length === 0) throw bad('empty host in request target');
  const parsed = parseAuthority(authority, 80);
  let path = rest.slice(end);
  if (path === '') path = '/';
  else if (path.startsWith('?')) path = '/' + path;
  return { form: 'absolute', target: parsed, authority, path, url: target };
}

/**
 * The target of a request whose request line is already in `bytes` (a peek at what the client
 * sent, not consumed): for an absolute-form `http://` request, the same TargetAddress
 * parseRequestTarget gives; undefined for anything else (CONNECT, another form, a line not yet
 * complete, a malformed one). Only a hint for starting the upstream connect early: the request
 * is still read, parsed and checked in full before anything is sent.
 */
export function peekRequestTarget(bytes: Buffer): TargetAddress | undefined {
  const eol = bytes.indexOf('\r\n');
  if (eol <= 0) return undefined;
  const parts = bytes.toString('latin1', 0, eol).split(' ');
  if (parts.length !== 3 || parts[0] === 'CONNECT' || !TOKEN.test(parts[0]!) || !TARGET.test(parts[1]!)) return undefined;
  try {
    const t = parseRequestTarget(parts[0]!, parts[1]!);
    return t.form === 'absolute' ? t.target : undefined;
  } catch {
    return undefined;
  }
}
