/**
 * What a forwarding proxy changes in a message head (RFC 9110 §7.6): hop-by-hop fields are
 * removed, Via is appended, the request line is rewritten to origin-form with our own
 * HTTP version, and Host is made to match the target URI. Pure; unit-tested.
 */
import { headerList } from './parser.js';
import type { HttpHeader, HttpVersion, RequestHead, ResponseHead } from './parser.js';

/**
 * Fields that describe one connection, never forwarded (RFC 9110 §7.6.1 lists Connection,
 * Proxy-Connection, Keep-Alive, TE, Transfer-Encoding, Upgrade). Transfer-Encoding is kept:
 * bodies are forwarded unchanged, chunk framing included, so the next hop needs it.
 * Upgrade is dropped: this proxy does not switch protocols on forwarded requests (WebSocket
 * clients use CONNECT through it). Proxy-Authorization is consumed here (our credentials);
 * Proxy-Authenticate/-Authentication-Info in a response are about the next hop, which is us.
 */
const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'te',
  'trailer',
  'upgrade',
  'proxy-authorization',
  'proxy-authenticate',
  'proxy-authentication-info',
]);

/** Removes hop-by-hop fields and every field named in Connection (RFC 9110 §7.6.1). */
export function removeHopByHop(headers: readonly HttpHeader[]): HttpHeader[] {
  const listed = new Set(headerList(headers, 'connection').map((v) => v.toLowerCase()));
  return headers.filter((h) => !HOP_BY_HOP.has(h.lname) && !listed.has(h.lname));
}

/** Appends our hop to Via (RFC 9110 §7.6.3): `received-protocol pseudonym`, the protocol
 *  being the version of the message as we received it. Added to the last Via line, so
 *  earlier hops keep their order. */
export function appendVia(headers: HttpHeader[], received: HttpVersion, pseudonym: string): HttpHeader[] {
  const hop = `${received} ${pseudonym}`;
  for (let i = headers.length - 1; i >= 0; i -= 1) {
    const h = headers[i]!;
    if (h.lname === 'via') {
      headers[i] = { name: h.name, lname: 'via', value: h.value.length > 0 ? `${h.value}, ${hop}` : hop };
      return headers;
    }
  }
  headers.push({ name: 'Via', lname: 'via', value: hop });
  return headers;
}

function serialize(startLine: string, headers: readonly HttpHeader[]): Buffer {
  let s = startLine + '\r\n';
  for (const h of headers) s += `${h.name}: ${h.value}\r\n`;
  s += '\r\n';
  return Buffer.from(s, 'latin1');
}

export interface UpstreamRequestOptions {
  /** Origin-form path (and query) to send. */
  path: string;
  /** The target URI's authority, as Host (RFC 9112 §3.2.2: a proxy replaces Host with it). */
  authority: string;
  via: string;
  /** Ask the upstream to close after its response (`Connection: close`): the response then
   *  ends where the upstream's stream does (an exchange served in the engine). */
  close?: boolean;
}

/**
 * The request head sent upstream: `METHOD path HTTP/1.1` (an intermediary sends its own
 * version, RFC 9110 §6.2), Host first, hop-by-hop fields removed, Via appended. We ask the
 * upstream for a persistent connection (HTTP/1.1 default) unless opts.close; the client's own
 * Connection options only affect the downstream connection.
 */
export function buildUpstreamRequestHead(req: RequestHead, opts: UpstreamRequestOptions): Buffer {
  const kept = removeHopByHop(req.headers).filter((h) => h.lname !== 'host');
  const headers: HttpHeader[] = [{ name: 'Host', lname: 'host', value: opts.authority }, ...kept];
  appendVia(headers, req.version, opts.via);
  if (opts.close) headers.push({ name: 'Connection', lname: 'connection', value: 'close' });
  return serialize(`${req.method} ${opts.path} HTTP/1.1`, headers);
}

export interface DownstreamResponseOptions {
  via: string;
  /** We close the client connection after this response. */
  close: boolean;
  /** The client spoke HTTP/1.0 and asked for keep-alive, which we grant. */
  http10KeepAlive: boolean;
  /** The chunked body is decoded for an HTTP/1.0 client: drop Transfer-Encoding. */
  dechunk: boolean;
}

/**
 * The response head sent to the client: our version on the status line, hop-by-hop fields
 * removed, Via appended, and our own Connection decision. When both Transfer-Encoding and
 * Content-Length arrived, Content-Length is removed (RFC 9112 §6.3: TE overrides, and a
 * sender MUST remove the received Content-Length before forwarding).
 */
export function buildDownstreamResponseHead(res: ResponseHead, opts: DownstreamResponseOptions): Buffer {
  let headers = removeHopByHop(res.headers);
  const hasTe = headers.some((h) => h.lname === 'transfer-encoding');
  if (hasTe) headers = headers.filter((h) => h.lname !== 'content-length');
  if (opts.dechunk) headers = headers.filter((h) => h.lname !== 'transfer-encoding');
  appendVia(headers, res.version, opts.via);
  if (opts.close) headers.push({ name: 'Connection', lname: 'connection', value: 'close' });
  else if (opts.http10KeepAlive) headers.push({ name: 'Connection', lname: 'connection', value: 'keep-alive' });
  return serialize(`HTTP/1.1 ${res.status} ${res.reason}`, headers);
}

/** An interim (1xx) response forwarded as-is apart from hop-by-hop fields and Via. */
export function buildInterimResponseHead(res: ResponseHead, via: string): Buffer {
  const headers = appendVia(removeHopByHop(res.headers), res.version, via);
  return serialize(`HTTP/1.1 ${res.status} ${res.reason}`, headers);
}
