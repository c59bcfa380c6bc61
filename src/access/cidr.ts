/**
 * IP addresses and CIDR blocks for IPv4 and IPv6, as plain numbers (bigint), so that
 * access rules can be matched without DNS, sockets or Node's BlockList.
 *
 * Runs at config load (parsing rules) and per connection (matching one address).
 *
 * IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`, RFC 4291 §2.5.5.2) are folded to IPv4
 * on both sides: a dual-stack listener on `::` reports IPv4 clients that way, and a rule
 * written as `10.0.0.0/8` must still match them.
 */
import { ConfigError } from '../core/errors.js';

export type IpFamily = 4 | 6;

export interface IpAddress {
  family: IpFamily;
  /** The address as a 32-bit (IPv4) or 128-bit (IPv6) unsigned number. */
  value: bigint;
}

export interface Cidr {
  family: IpFamily;
  /** Network address with host bits cleared. */
  network: bigint;
  prefix: number;
  mask: bigint;
  /** The text it was parsed from, for logs and decisions. */
  source: string;
}

const BITS: Record<IpFamily, number> = { 4: 32, 6: 128 };
const MAPPED_PREFIX = 0xffffn; // ::ffff:0:0/96, upper 96 bits = 0...0ffff

function maskFor(family: IpFamily, prefix: number): bigint {
  const bits = BITS[family];
  if (prefix === 0) return 0n;
  return ((1n << BigInt(prefix)) - 1n) << BigInt(bits - prefix);
}

function parseIPv4(text: string): bigint | undefined {
  const parts = text.split('.');
  if (parts.length !== 4) return undefined;
  let value = 0n;
  for (const part of parts) {
    // Leading zeros are rejected: inet_aton() would read "010" as octal 8, and a rule
    // that means something different to different readers is a security bug.
    if (!/^(0|[1-9][0-9]{0,2})$/.test(part)) return undefined;
    const n = Number(part);
    if (n > 255) return undefined;
    value = (value << 8n) | BigInt(n);
  }
  return value;
}

function parseIPv6Groups(text: string, allowIPv4Tail: boolean): number[] | undefined {
  if (text === '') return [];
  const parts = text.split(':');
  const groups: number[] = [];
  for (let i = 0; i < parts.length; i++) {
    const part = parts[i]!;
    if (allowIPv4Tail && i === parts.length - 1 && part.includes('.')) {
      const v4 = parseIPv4(part);
      if (v4 === undefined) return undefined;
      groups.push(Number(v4 >> 16n), Number(v4 & 0xffffn));
      continue;
    }
    if (!/^[0-9a-fA-F]{1,4}$/.test(part)) return undefined;
    groups.push(parseInt(part, 16));
  }
  return groups;
}

function parseIPv6(text: string): bigint | undefined {
  const halves = text.split('::');
  if (halves.length > 2) return undefined;
  let groups: number[];
  if (halves.length === 1) {
    const all = parseIPv6Groups(halves[0]!, true);
    if (all === undefined || all.length !== 8) return undefined;
    groups = all;
  } else {
    const head = parseIPv6Groups(halves[0]!, false);
    const tail = parseIPv6Groups(halves[1]!, true);
    if (head === undefined || tail === undefined) return undefined;
    // "::" stands for one or more zero groups (RFC 4291 §2.2).
    const missing = 8 - head.length - tail.length;
    if (missing < 1) return undefined;
    groups = [...head, ...new Array<number>(missing).fill(0), ...tail];
  }
  let value = 0n;
  for (const g of groups) value = (value << 16n) | BigInt(g);
  return value;
}

/**
 * Parses an IPv4 or IPv6 literal. A zone id (`fe80::1%eth0`) is ignored, since rules
 * cannot name zones. Returns undefined for anything else (host names included).
 * Does not fold mapped addresses; see canonicalIp.
 */
export function parseIp(text: string): IpAddress | undefined {
  if (text.includes(':')) {
    const zone = text.indexOf('%');
    const bare = zone === -1 ? text : text.slice(0, zone);
    const value = parseIPv6(bare);
    return value === undefined ? undefined : { family: 6, value };
  }
  const value = parseIPv4(text);
  return value === undefined ? undefined : { family: 4, value };
}

/** Folds an IPv4-mapped IPv6 address (`::ffff:10.1.2.3`) to the IPv4 address it carries. */
export function canonicalIp(ip: IpAddress): IpAddress {
  if (ip.family === 6 && ip.value >> 32n === MAPPED_PREFIX) return { family: 4, value: ip.value & 0xffffffffn };
  return ip;
}

/** parseIp + canonicalIp: what every matcher should use on a peer address. */
export function parseCanonicalIp(text: string): IpAddress | undefined {
  const ip = parseIp(text);
  return ip === undefined ? undefined : canonicalIp(ip);
}

export function ipEquals(a: IpAddress, b: IpAddress): boolean {
  return a.family === b.family && a.value === b.value;
}

/** The address in network byte order: 4 or 16 bytes. */
export function ipToBytes(ip: IpAddress): Buffer {
  const len = ip.family === 4 ? 4 : 16;
  const out = Buffer.alloc(len);
  let v = ip.value;
  for (let i = len - 1; i >= 0; i--) {
    out[i] = Number(v & 0xffn);
    v >>= 8n;
  }
  return out;
}

/** Formats 4 or 16 network-order bytes; IPv6 in RFC 5952 canonical text (`2001:db8::1`). */
export function formatIpBytes(bytes: Uint8Array): string {
  if (bytes.length === 4) return `${bytes[0]}.${bytes[1]}.${bytes[2]}.${bytes[3]}`;
  if (bytes.length !== 16) throw new RangeError(`an IP address has 4 or 16 bytes, not ${bytes.length}`);
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push((bytes[i]! << 8) | bytes[i + 1]!);
  // RFC 5952 §4.2: compress the longest run of two or more zero groups, the first one on a tie.
  let bestStart = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) { i++; continue; }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) { bestStart = i; bestLen = j - i; }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestStart === -1) return hex.join(':');
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLen).join(':')}`;
}

export function formatIp(ip: IpAddress): string {
  return formatIpBytes(ipToBytes(ip));
}

/**
 * Parses "10.0.0.0/8", "fe80::/10" or a single address ("192.0.2.1" = /32, "::1" = /128).
 * Host bits below the prefix are cleared, as iptables and nftables do ("10.1.2.3/8" = 10.0.0.0/8).
 * A mapped block (`::ffff:10.0.0.0/104`) becomes its IPv4 equivalent (`10.0.0.0/8`).
 *
 * Throws ConfigError naming `key` (e.g. `access.allowClients[2]`) and the fix.
 */
export function parseCidr(text: string, key = 'cidr'): Cidr {
  const fix = 'write an IPv4 or IPv6 network like "10.0.0.0/8", "fd00::/8" or a single address like "192.0.2.1"';
  if (typeof text !== 'string' || text.trim() === '') throw new ConfigError(key, `"${String(text)}" is empty, not a CIDR`, fix);
  const trimmed = text.trim();
  const slash = trimmed.indexOf('/');
  const addrText = slash === -1 ? trimmed : trimmed.slice(0, slash);
  if (addrText.includes('%')) throw new ConfigError(key, `"${text}" has a zone id`, 'drop the "%zone" part; rules match addresses on any interface');
  const ip = parseIp(addrText);
  if (ip === undefined) throw new ConfigError(key, `"${text}": "${addrText}" is not an IPv4 or IPv6 address`, fix);
  const bits = BITS[ip.family];
  let prefix = bits;
  if (slash !== -1) {
    const prefixText = trimmed.slice(slash + 1);
    if (!/^[0-9]{1,3}$/.test(prefixText) || Number(prefixText) > bits) {
      throw new ConfigError(key, `"${text}": prefix length "/${prefixText}" is not a number from 0 to ${bits}`, fix);
    }
    prefix = Number(prefixText);
  }
  let family = ip.family;
  let value = ip.value;
  if (family === 6 && prefix >= 96 && value >> 32n === MAPPED_PREFIX) {
    family = 4;
    value &= 0xffffffffn;
    prefix -= 96;
  }
  const mask = maskFor(family, prefix);
  return { family, network: value & mask, prefix, mask, source: trimmed };
}

export function cidrContains(cidr: Cidr, ip: IpAddress): boolean {
  return cidr.family === ip.family && (ip.value & cidr.mask) === cidr.network;
}

/** A compiled list of CIDR rules; `match` returns the first rule containing the address. */
export interface CidrList {
  readonly size: number;
  readonly rules: readonly Cidr[];
  /** The first rule containing `address` (folded if mapped), or undefined; undefined for non-IP text. */
  match(address: string | IpAddress): Cidr | undefined;
}

/** Parses every entry; a bad one throws ConfigError naming `${key}[i]`. */
export function compileCidrList(list: readonly string[], key: string): CidrList {
  if (!Array.isArray(list)) throw new ConfigError(key, 'is not a list', `write ${key} as a YAML list of CIDRs, e.g. ["10.0.0.0/8"]`);
  const rules = list.map((text, i) => parseCidr(text, `${key}[${i}]`));
  return {
    size: rules.length,
    rules,
    match(address) {
      const ip = typeof address === 'string' ? parseCanonicalIp(address) : canonicalIp(address);
      if (ip === undefined) return undefined;
      return rules.find((r) => cidrContains(r, ip));
    },
  };
}
