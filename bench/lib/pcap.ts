/**
 * A small pcap reader for what tcpdump writes on `-i any` (LINUX_SLL 113 or LINUX_SLL2 276) or
 * Ethernet (1): IPv4 TCP packets with their time, addresses, ports, flags, sequence number,
 * payload length (from the IP header, so a short snaplen still gives it) and the MPTCP options
 * that matter here (RFC 8684 §3.1 MP_CAPABLE / §3.2 MP_JOIN on SYNs, §3.3 DSS mappings).
 */
import { readFileSync } from 'node:fs';

export interface TcpPacket {
  t: number; // seconds
  src: string;
  dst: string;
  sport: number;
  dport: number;
  flags: number;
  seq: number;
  payload: number;
  /** MPTCP subtype on this packet, if an MPTCP option is present (0 capable, 1 join, 2 dss). */
  mptcp?: number[];
  /** DSS mapping: data sequence number and subflow-relative sequence number. */
  dss?: { dsn: bigint; ssn: number; len: number };
}

export const SYN = 0x02;
export const ACK = 0x10;

export function readPcap(file: string): TcpPacket[] {
  const b = readFileSync(file);
  if (b.length < 24) return [];
  const magic = b.readUInt32LE(0);
  const le = magic === 0xa1b2c3d4 || magic === 0xa1b23c4d;
  const nano = magic === 0xa1b23c4d || magic === 0x4d3cb2a1;
  const u32 = (o: number): number => (le ? b.readUInt32LE(o) : b.readUInt32BE(o));
  const linktype = u32(20);
  const out: TcpPacket[] = [];
  let off = 24;
  while (off + 16 <= b.length) {
    const t = u32(off) + u32(off + 4) / (nano ? 1e9 : 1e6);
    const incl = u32(off + 8);
    const start = off + 16;
    off = start + incl;
    if (off > b.length) break;
    let ip: number;
    let proto: number;
    if (linktype === 113) {
      proto = b.readUInt16BE(start + 14);
      ip = start + 16;
    } else if (linktype === 276) {
      proto = b.readUInt16BE(start);
      ip = start + 20;
    } else if (linktype === 1) {
      proto = b.readUInt16BE(start + 12);
      ip = start + 14;
    } else throw new Error(`pcap link type ${linktype} not supported`);
    if (proto !== 0x0800 || ip + 20 > off) continue;
    if (b[ip + 9] !== 6) continue;
    const ihl = ((b[ip] as number) & 0x0f) * 4;
    const totalLen = b.readUInt16BE(ip + 2);
    const tcp = ip + ihl;
    if (tcp + 20 > off) continue;
    const doff = ((b[tcp + 12] as number) >> 4) * 4;
    const pkt: TcpPacket = {
      t,
      src: `${b[ip + 12]}.${b[ip + 13]}.${b[ip + 14]}.${b[ip + 15]}`,
      dst: `${b[ip + 16]}.${b[ip + 17]}.${b[ip + 18]}.${b[ip + 19]}`,
      sport: b.readUInt16BE(tcp),
      dport: b.readUInt16BE(tcp + 2),
      seq: b.readUInt32BE(tcp + 4),
      flags: b[tcp + 13] as number,
      payload: totalLen - ihl - doff,
    };
    // Options (as far as captured).
    let o = tcp + 20;
    const end = Math.min(tcp + doff, off);
    while (o < end) {
      const kind = b[o] as number;
      if (kind === 0) break;
      if (kind === 1) {
        o++;
        continue;
      }
      const len = b[o + 1] as number;
      if (len < 2 || o + len > end) break;
      if (kind === 30 && len >= 3) {
        const subtype = (b[o + 2] as number) >> 4;
        (pkt.mptcp ??= []).push(subtype);
        if (subtype === 2 && len >= 4) {
          const fl = b[o + 3] as number;
          let p = o + 4;
          if (fl & 0x01) p += fl & 0x02 ? 8 : 4; // data ACK
          if (fl & 0x04) {
            const dsn = fl & 0x08 ? b.readBigUInt64BE(p) : BigInt(b.readUInt32BE(p));
            p += fl & 0x08 ? 8 : 4;
            if (p + 6 <= o + len) pkt.dss = { dsn, ssn: b.readUInt32BE(p), len: b.readUInt16BE(p + 4) };
          }
        }
      }
      o += len;
    }
    out.push(pkt);
  }
  return out;
}
