/**
 * Destination port rules: "80" or an inclusive range "8000-8100".
 * Parsed once at config load; matched per dial.
 */
import { ConfigError } from '../core/errors.js';

export interface PortRange {
  from: number;
  to: number;
  source: string;
}

export interface PortList {
  readonly size: number;
  readonly ranges: readonly PortRange[];
  /** The first range containing `port`, or undefined. */
  match(port: number): PortRange | undefined;
}

function parsePortNumber(text: string): number | undefined {
  if (!/^[0-9]{1,5}$/.test(text)) return undefined;
  const n = Number(text);
  return n >= 1 && n <= 65535 ? n : undefined;
}

/** Parses "443" or "8000-8100"; numbers from YAML are accepted too. Throws ConfigError naming `key`. */
export function parsePortRange(entry: string | number, key = 'port'): PortRange {
  const text = String(entry).trim();
  const fix = 'write a port from 1 to 65535 ("443") or an inclusive range ("8000-8100")';
  const dash = text.indexOf('-');
  const fromText = dash === -1 ? text : text.slice(0, dash).trim();
  const toText = dash === -1 ? text : text.slice(dash + 1).trim();
  const from = parsePortNumber(fromText);
  const to = parsePortNumber(toText);
  if (from === undefined || to === undefined) throw new ConfigError(key, `"${text}" is not a port or port range`, fix);
  if (from > to) throw new ConfigError(key, `"${text}" is a range whose start is above its end`, `write it as "${to}-${from}"`);
  return { from, to, source: text };
}

export function compilePortList(list: readonly (string | number)[], key: string): PortList {
  if (!Array.isArray(list)) throw new ConfigError(key, 'is not a list', `write ${key} as a YAML list of ports, e.g. ["25", "6000-6100"]`);
  const ranges = list.map((entry, i) => parsePortRange(entry, `${key}[${i}]`));
  return {
    size: ranges.length,
    ranges,
    match(port) {
      return ranges.find((r) => port >= r.from && port <= r.to);
    },
  };
}
