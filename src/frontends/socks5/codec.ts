/**
 * SOCKS5 wire format (RFC 1928) and username/password sub-negotiation (RFC 1929):
 * pure, incremental parsers and reply encoders.
 *
 * Each parser looks at everything buffered so far and answers `incomplete` (wait for more
 * bytes), `done` with the bytes consumed, or `invalid` with the reply code to send. They never
 * throw and never read past the message, so bytes split anywhere, or several messages in one
 * packet, parse the same way.
 */
import { formatIpBytes, ipToBytes, parseCanonicalIp } from '../../access/cidr.js';

export const SOCKS_VERSION = 0x05;
/** RFC 1929 §2: "The VER field contains the current version of the subnegotiation, which is X'01'". */
export const AUTH_VERSION = 0x01;

/** RFC 1928 §3 METHOD values. */
export const AuthMethod = {
  NO_AUTH: 0x00,
  GSSAPI: 0x01,
  USERNAME_PASSWORD: 0x02,
  NO_ACCEPTABLE: 0xff,
} as const;
export type AuthMethod = (typeof AuthMethod)[keyof typeof AuthMethod];

/** RFC 1928 §4 CMD values. */
export const Command = {
  CONNECT: 0x01,
  BIND: 0x02,
  UDP_ASSOCIATE: 0x03,
} as const;

/** RFC 1928 §5 ATYP values. */
export const AddressType = {
  IPV4: 0x01,
  DOMAIN: 0x03,
  IPV6: 0x04,
} as const;

/** RFC 1928 §6 REP values. */
export const Reply = {
  SUCCEEDED: 0x00,
  GENERAL_FAILURE: 0x01,
  NOT_ALLOWED: 0x02,
  NETWORK_UNREACHABLE: 0x03,
  HOST_UNREACHABLE: 0x04,
  CONNECTION_REFUSED: 0x05,
  TTL_EXPIRED: 0x06,
  COMMAND_NOT_SUPPORTED: 0x07,
  ADDRESS_TYPE_NOT_SUPPORTED: 0x08,
} as const;
export type ReplyCode = (typeof Reply)[keyof typeof Reply];

const replyNames: Record<ReplyCode, string> = {
  0x00: 'succeeded',
  0x01: 'general-failure',
  0x02: 'not-allowed',
  0x03: 'network-unreachable',
  0x04: 'host-unreachable',
  0x05: 'connection-refused',
  0x06: 'ttl-expired',
  0x07: 'command-not-supported',
  0x08: 'address-type-not-supported',
};

export function replyName(code: ReplyCode): string {
  return replyNames[code];
}

export function commandName(cmd: number): string {
  switch (cmd) {
    case Command.CONNECT: return 'connect';
    case Command.BIND: return 'bind';
    case Command.UDP_ASSOCIATE: return 'udp-associate';
    default: return `unknown-0x${cmd.toString(16).padStart(2, '0')}`;
  }
}

export type ParseResult<T> =
  | { status: 'incomplete' }
  | { status: 'done'; value: T; consumed: number }
  | { status: 'invalid'; reason: string; reply: ReplyCode };

const INCOMPLETE = { status: 'incomplete' } as const;

function invalid(reason: string, reply: ReplyCode = Reply.GENERAL_FAILURE): ParseResult<never> {
  return { status: 'invalid', reason, reply };
}

// ---------------------------------------------------------------------------------------
// Method negotiation, RFC 1928 §3:  VER | NMETHODS | METHODS (1 to 255 bytes)

export interface Greeting {
  methods: number[];
}

export function parseGreeting(buf: Buffer): ParseResult<Greeting> {
  if (buf.length < 1) return INCOMPLETE;
  if (buf[0] !== SOCKS_VERSION) return invalid(`version ${buf[0]} in the greeting, expected 5`);
  if (buf.length < 2) return INCOMPLETE;
  const n = buf[1]!;
  if (buf.length < 2 + n) return INCOMPLETE;
  // NMETHODS = 0 is out of spec ("1 to 255"); it parses as "no method acceptable".
  return { status: 'done', value: { methods: [...buf.subarray(2, 2 + n)] }, consumed: 2 + n };
}

/** VER | METHOD. */
export function encodeMethodSelection(method: AuthMethod): Buffer {
  return Buffer.from([SOCKS_VERSION, method]);
}

// ---------------------------------------------------------------------------------------
// Username/password, RFC 1929 §2:  VER | ULEN | UNAME | PLEN | PASSWD

export interface UserPass {
  user: string;
  password: string;
}

export function parseUserPass(buf: Buffer): ParseResult<UserPass> {
  if (buf.length < 1) return INCOMPLETE;
  if (buf[0] !== AUTH_VERSION) return invalid(`sub-negotiation version ${buf[0]}, expected 1`);
  if (buf.length < 2) return INCOMPLETE;
  const ulen = buf[1]!;
  if (buf.length < 2 + ulen + 1) return INCOMPLETE;
  const plen = buf[2 + ulen]!;
  const end = 2 + ulen + 1 + plen;
  if (buf.length < end) return INCOMPLETE;
  return {
    status: 'done',
    value: {
      user: buf.toString('utf8', 2, 2 + ulen),
      password: buf.toString('utf8', 3 + ulen, end),
    },
    consumed: end,
  };
}

/** RFC 1929 §2: "A STATUS field of X'00' indicates success. If the server returns a `failure'
 *  (STATUS value other than X'00') status, it MUST close the connection." */
export function encodeAuthStatus(ok: boolean): Buffer {
  return Buffer.from([AUTH_VERSION, ok ? 0x00 : 0x01]);
}

// ---------------------------------------------------------------------------------------
// Request, RFC 1928 §4:  VER | CMD | RSV (X'00') | ATYP | DST.ADDR | DST.PORT

export interface Socks5Request {
  command: number;
  addressType: number;
  /** IP literal (IPv6 in RFC 5952 form) or the domain name as sent. */
  host: string;
  port: number;
}

/** Printable ASCII without spaces: what a DNS name (or IDNA A-label) can hold; anything else
 *  is refused rather than passed to the resolver or into logs. */
const DOMAIN_CHARS = /^[\x21-\x7e]+$/;

export function parseRequest(buf: Buffer): ParseResult<Socks5Request> {
  if (buf.length < 1) return INCOMPLETE;
  if (buf[0] !== SOCKS_VERSION) return invalid(`version ${buf[0]} in the request, expected 5`);
  if (buf.length < 4) return INCOMPLETE;
  const command = buf[1]!;
  if (buf[2] !== 0x00) return invalid(`reserved byte is 0x${buf[2]!.toString(16)}, must be 0`);
  const atyp = buf[3]!;
  let host: string;
  let addrEnd: number;
  switch (atyp) {
    case AddressType.IPV4:
      addrEnd = 4 + 4;
      if (buf.length < addrEnd + 2) return INCOMPLETE;
      host = formatIpBytes(buf.subarray(4, addrEnd));
      break;
    case AddressType.IPV6:
      addrEnd = 4 + 16;
      if (buf.length < addrEnd + 2) return INCOMPLETE;
      host = formatIpBytes(buf.subarray(4, addrEnd));
      break;
    case AddressType.DOMAIN: {
      if (buf.length < 5) return INCOMPLETE;
      const len = buf[4]!;
      if (len === 0) return invalid('empty domain name');
      addrEnd = 5 + len;
      if (buf.length < addrEnd + 2) return INCOMPLETE;
      host = buf.toString('latin1', 5, addrEnd);
      if (!DOMAIN_CHARS.test(host)) return invalid('domain name has spaces, control or non-ASCII bytes');
      // "[::1]" is how some clients write an IPv6 literal; the dialer wants it bare.
      if (host.startsWith('[') && host.endsWith(']')) host = host.slice(1, -1);
      break;
    }
    default:
      return invalid(`address type 0x${atyp.toString(16)}`, Reply.ADDRESS_TYPE_NOT_SUPPORTED);
  }
  const port = buf.readUInt16BE(addrEnd);
  return { status: 'done', value: { command, addressType: atyp, host, port }, consumed: addrEnd + 2 };
}

/**
 * VER | REP | RSV | ATYP | BND.ADDR | BND.PORT. The bound address is sent as IPv4 or IPv6
 * by its family (an IPv4-mapped IPv6 address as IPv4); anything that is not an IP literal,
 * or none, as 0.0.0.0:0, which is what failure replies carry.
 */
export function encodeReply(rep: ReplyCode, bound?: { address?: string | undefined; port?: number | undefined }): Buffer {
  const ip = bound?.address === undefined ? undefined : parseCanonicalIp(bound.address);
  const addr = ip === undefined ? Buffer.alloc(4) : ipToBytes(ip);
  const out = Buffer.alloc(4 + addr.length + 2);
  out[0] = SOCKS_VERSION;
  out[1] = rep;
  out[2] = 0x00;
  out[3] = addr.length === 4 ? AddressType.IPV4 : AddressType.IPV6;
  addr.copy(out, 4);
  out.writeUInt16BE(ip === undefined ? 0 : (bound?.port ?? 0) & 0xffff, 4 + addr.length);
  return out;
}
