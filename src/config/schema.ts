/**
 * Validation of a raw configuration document (parsed YAML, or the embedded default, or
 * CLI flags turned into the same shape) into a typed Config with defaults filled in.
 *
 * Every problem is a ConfigError whose message names the full key path
 * (`listeners[1].listen`) and says how to fix it. Unknown keys are errors too, with a
 * "did you mean" hint, because a misspelt key silently ignored is a config that lies.
 */
import { isIP } from 'node:net';
import { ConfigError, type TargetAddress } from '../core/errors.js';
import { LogLevels } from '../core/logger.js';
// The access module's own CIDR parser: the schema and the policy accept exactly the same networks.
import { parseCidr } from '../access/cidr.js';
import type { FrontendKind } from '../core/context.js';
import type {
  AccessConfig, Config, ListenAddress, ListenerConfig, LogConfig, RelayConfig, UpstreamConfig,
} from './types.js';
import {
  DEFAULT_ALLOWED_CLIENTS, DEFAULT_DENIED_DESTINATIONS, accessDefaults, httpDefaults, listenerDefaults,
  relayDefaults, upstreamDefaults,
} from './defaults.js';

type Raw = Record<string, unknown>;

const FRONTEND_KINDS: readonly FrontendKind[] = ['http', 'socks5', 'tcp-forward', 'transparent'];

/** Reads one mapping, remembering which keys were used so leftovers can be reported. */
class Section {
  readonly #used = new Set<string>();
  constructor(readonly path: string, readonly raw: Raw) {}

  static of(path: string, value: unknown): Section {
    if (value === undefined || value === null) return new Section(path, {});
    if (typeof value !== 'object' || Array.isArray(value)) {
      throw new ConfigError(path, `expected a mapping, got ${describe(value)}`, `write "${path}:" followed by indented "key: value" lines`);
    }
    return new Section(path, value as Raw);
  }

  key(name: string): string {
    return this.path ? `${this.path}.${name}` : name;
  }

  get(name: string): unknown {
    this.#used.add(name);
    return this.raw[name];
  }

  /** Throws for keys nobody read. */
  finish(): void {
    for (const k of Object.keys(this.raw)) {
      if (this.#used.has(k)) continue;
      const hint = closest(k, [...this.#used]);
      throw new ConfigError(this.key(k), 'unknown key', hint ? `did you mean "${hint}"?` : `remove it; known keys here: ${[...this.#used].join(', ')}`);
    }
  }

  int(name: string, def: number, min: number, max: number): number {
    const v = this.get(name);
    if (v === undefined) return def;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
      throw new ConfigError(this.key(name), `expected a whole number from ${min} to ${max}, got ${describe(v)}`, `set it to a number in that range, e.g. ${def}`);
    }
    return v;
  }

  bool(name: string, def: boolean): boolean {
    const v = this.get(name);
    if (v === undefined) return def;
    if (typeof v !== 'boolean') throw new ConfigError(this.key(name), `expected true or false, got ${describe(v)}`, `write ${def}`);
    return v;
  }

  str(name: string, def?: string): string | undefined {
    const v = this.get(name);
    if (v === undefined) return def;
    if (typeof v !== 'string' || v.length === 0) throw new ConfigError(this.key(name), `expected a non-empty string, got ${describe(v)}`, 'quote the value');
    return v;
  }

  requiredStr(name: string, example: string): string {
    const v = this.str(name);
    if (v === undefined) throw new ConfigError(this.key(name), 'is required', `add ${name}: ${example}`);
    return v;
  }

  oneOf<T extends string>(name: string, def: T, values: readonly T[]): T {
    const v = this.get(name);
    if (v === undefined) return def;
    // YAML 1.1 habits: `mptcp: on` may arrive as a boolean from some writers.
    const s = v === true ? 'on' : v === false ? 'off' : v;
    if (typeof s !== 'string' || !values.includes(s as T)) {
      throw new ConfigError(this.key(name), `expected one of ${values.join(', ')}, got ${describe(v)}`, `set it to one of: ${values.join(', ')}`);
    }
    return s as T;
  }

  strList(name: string, def: readonly string[], check?: (s: string, key: string) => void): string[] {
    const v = this.get(name);
    if (v === undefined) return [...def];
    if (!Array.isArray(v)) throw new ConfigError(this.key(name), `expected a list, got ${describe(v)}`, `write it as [${def.slice(0, 2).map((d) => `"${d}"`).join(', ')}]`);
    return v.map((item, i) => {
      const key = `${this.key(name)}[${i}]`;
      const s = typeof item === 'number' ? String(item) : item;
      if (typeof s !== 'string' || s.length === 0) throw new ConfigError(key, `expected a string, got ${describe(item)}`, 'quote the value');
      check?.(s, key);
      return s;
    });
  }
}

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'a mapping';
  if (typeof v === 'string') return JSON.stringify(v);
  return String(v);
}

/** Smallest edit distance ≤ 2, for "did you mean". */
function closest(word: string, candidates: string[]): string | undefined {
  let best: string | undefined;
  let bestD = 3;
  for (const c of candidates) {
    const d = editDistance(word.toLowerCase(), c.toLowerCase());
    if (d < bestD) { bestD = d; best = c; }
  }
  return best;
}

function editDistance(a: string, b: string): number {
  const dp = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let prev = dp[0]!;
    dp[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const tmp = dp[j]!;
      dp[j] = Math.min(dp[j]! + 1, dp[j - 1]! + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = tmp;
    }
  }
  return dp[b.length]!;
}

/**
 * Parses "host:port", "[v6]:port", ":port" or "port". An empty host means all addresses ("::").
 */
export function parseHostPort(text: string, key: string, opts: { defaultHost?: string; allowPortZero?: boolean; requireHost?: boolean; requireIp?: boolean } = {}): ListenAddress {
  const fix = opts.requireHost ? 'write it as host:port, e.g. "example.com:80" or "[2001:db8::1]:443"' : 'write it as host:port, e.g. "[::]:3128", "127.0.0.1:3128" or ":3128"';
  let host: string;
  let portText: string;
  const m6 = /^\[([^\]]+)\](?::(\d+))?$/.exec(text);
  if (m6) {
    host = m6[1]!;
    portText = m6[2] ?? '';
    if (isIP(host) !== 6) throw new ConfigError(key, `"${host}" in brackets is not an IPv6 address`, fix);
  } else if (/^\d+$/.test(text)) {
    host = '';
    portText = text;
  } else {
    const i = text.lastIndexOf(':');
    if (i < 0) throw new ConfigError(key, `"${text}" has no port`, fix);
    host = text.slice(0, i);
    portText = text.slice(i + 1);
    if (host.includes(':')) throw new ConfigError(key, `IPv6 address "${host}" must be in brackets`, fix);
  }
  if (!/^\d+$/.test(portText)) throw new ConfigError(key, `"${text}" has no valid port`, fix);
  const port = Number(portText);
  if (port > 65535 || (port === 0 && !opts.allowPortZero)) throw new ConfigError(key, `port ${port} is out of range`, 'use a port from 1 to 65535');
  if (host === '') {
    if (opts.requireHost) throw new ConfigError(key, `"${text}" has no host`, fix);
    host = opts.defaultHost ?? '::';
  }
  if (opts.requireIp && !isIP(host)) {
    throw new ConfigError(key, `"${host}" is not an IP address (listeners bind addresses, not names)`, 'use an address such as "[::]:3128" (all), "0.0.0.0:3128" or "127.0.0.1:3128"');
  }
  if (!isIP(host) && !/^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$/.test(host)) {
    throw new ConfigError(key, `"${host}" is neither an IP address nor a host name`, fix);
  }
  return { host, port };
}

function checkPortRange(s: string, key: string): void {
  const m = /^(\d+)(?:-(\d+))?$/.exec(s);
  const lo = m ? Number(m[1]) : NaN;
  const hi = m?.[2] !== undefined ? Number(m[2]) : lo;
  if (!m || lo < 1 || hi > 65535 || lo > hi) throw new ConfigError(key, `"${s}" is not a port or port range`, 'write a port like "443" or a range like "8000-8999"');
}

function readLog(sec: Section): LogConfig {
  const out: LogConfig = {
    level: sec.oneOf('level', 'info', LogLevels),
    format: sec.oneOf('format', 'text', ['json', 'text'] as const),
    access: sec.bool('access', true),
  };
  sec.finish();
  return out;
}

function readListener(sec: Section, index: number): ListenerConfig {
  const type = sec.oneOf('type', 'http', FRONTEND_KINDS);
  if (sec.raw.type === undefined) throw new ConfigError(sec.key('type'), 'is required', `add type: one of ${FRONTEND_KINDS.join(', ')}`);
  const base = {
    name: sec.str('name', `${type}-${index}`)!,
    listen: parseHostPort(sec.requiredStr('listen', '"[::]:3128"'), sec.key('listen'), { allowPortZero: true, requireIp: true }),
    mptcp: sec.oneOf('mptcp', listenerDefaults.mptcp, ['on', 'auto', 'off'] as const),
    backlog: sec.int('backlog', listenerDefaults.backlog, 1, 65535),
    reusePort: sec.bool('reusePort', listenerDefaults.reusePort),
    handshakeTimeoutMs: sec.int('handshakeTimeoutMs', listenerDefaults.handshakeTimeoutMs, 100, 600_000),
  };
  let out: ListenerConfig;
  switch (type) {
    case 'http':
      out = {
        ...base, type,
        maxHeaderBytes: sec.int('maxHeaderBytes', httpDefaults.maxHeaderBytes, 1024, 1024 * 1024),
        maxHeaderCount: sec.int('maxHeaderCount', httpDefaults.maxHeaderCount, 8, 10_000),
        keepAliveTimeoutMs: sec.int('keepAliveTimeoutMs', httpDefaults.keepAliveTimeoutMs, 100, 3_600_000),
        upstreamIdleTimeoutMs: sec.int('upstreamIdleTimeoutMs', httpDefaults.upstreamIdleTimeoutMs, 0, 3_600_000),
        via: sec.str('via', httpDefaults.via)!,
      };
      break;
    case 'socks5':
      out = { ...base, type };
      break;
    case 'tcp-forward': {
      const to: TargetAddress = parseHostPort(sec.requiredStr('to', '"example.com:80"'), sec.key('to'), { requireHost: true });
      out = { ...base, type, to };
      break;
    }
    case 'transparent':
      out = { ...base, type, mode: sec.oneOf('mode', 'redirect', ['redirect', 'tproxy'] as const) };
      break;
  }
  sec.finish();
  return out;
}

function readListeners(path: string, value: unknown): ListenerConfig[] {
  if (!Array.isArray(value) || value.length === 0) {
    throw new ConfigError(path, value === undefined ? 'is required' : `expected a non-empty list, got ${describe(value)}`, 'add at least one listener, e.g. "- { type: http, listen: \\"[::]:3128\\" }"');
  }
  const listeners = value.map((v, i) => readListener(Section.of(`${path}[${i}]`, v), i));
  const names = new Set<string>();
  const binds = new Set<string>();
  listeners.forEach((l, i) => {
    if (names.has(l.name)) throw new ConfigError(`${path}[${i}].name`, `"${l.name}" is used by another listener`, 'give each listener a unique name');
    names.add(l.name);
    const bind = `${l.listen.host}|${l.listen.port}`;
    if (l.listen.port !== 0 && binds.has(bind)) throw new ConfigError(`${path}[${i}].listen`, `${l.listen.host}:${l.listen.port} is used by another listener`, 'give each listener its own port');
    binds.add(bind);
  });
  return listeners;
}

function readUpstream(sec: Section): UpstreamConfig {
  const bindAddress = sec.str('bindAddress');
  if (bindAddress !== undefined && !isIP(bindAddress)) throw new ConfigError(sec.key('bindAddress'), `"${bindAddress}" is not an IP address`, 'use one of this host\'s addresses, or remove the key');
  const bindInterface = sec.str('bindInterface');
  const out: UpstreamConfig = {
    mptcp: sec.oneOf('mptcp', upstreamDefaults.mptcp, ['on', 'auto', 'off'] as const),
    connectTimeoutMs: sec.int('connectTimeoutMs', upstreamDefaults.connectTimeoutMs, 10, 600_000),
    dnsTimeoutMs: sec.int('dnsTimeoutMs', upstreamDefaults.dnsTimeoutMs, 10, 600_000),
    happyEyeballsDelayMs: sec.int('happyEyeballsDelayMs', upstreamDefaults.happyEyeballsDelayMs, 10, 10_000),
    ...(bindAddress ? { bindAddress } : {}),
    ...(bindInterface ? { bindInterface } : {}),
  };
  sec.finish();
  return out;
}

function readRelay(sec: Section): RelayConfig {
  const out: RelayConfig = {
    idleTimeoutMs: sec.int('idleTimeoutMs', relayDefaults.idleTimeoutMs, 0, 86_400_000),
    engine: sec.oneOf('engine', relayDefaults.engine, ['native', 'js'] as const),
    threads: sec.int('threads', relayDefaults.threads, 1, 64),
    capBuffers: sec.bool('capBuffers', relayDefaults.capBuffers),
    // Below 64 KiB a capped buffer would throttle even a LAN path; 1 GiB is beyond any rmem_max.
    capBuffersMinBytes: sec.int('capBuffersMinBytes', relayDefaults.capBuffersMinBytes, 65_536, 1_073_741_824),
    capBuffersRateMbit: sec.int('capBuffersRateMbit', relayDefaults.capBuffersRateMbit, 1, 1_000_000),
    // 0 = off; past 1 GiB nothing is ever held back.
    capBuffersNotsentBytes: sec.int('capBuffersNotsentBytes', relayDefaults.capBuffersNotsentBytes, 0, 1_073_741_824),
  };
  sec.finish();
  return out;
}

function readAccess(sec: Section): AccessConfig {
  const credentialsFile = sec.str('credentialsFile');
  const out: AccessConfig = {
    allowClients: sec.strList('allowClients', DEFAULT_ALLOWED_CLIENTS, parseCidr),
    denyDestinations: sec.strList('denyDestinations', DEFAULT_DENIED_DESTINATIONS, parseCidr),
    allowDestinations: sec.strList('allowDestinations', [], parseCidr),
    denyPorts: sec.strList('denyPorts', [], checkPortRange),
    allowPorts: sec.strList('allowPorts', [], checkPortRange),
    maxConnectionsPerClient: sec.int('maxConnectionsPerClient', accessDefaults.maxConnectionsPerClient, 0, 1_000_000),
    ...(credentialsFile ? { credentialsFile } : {}),
  };
  sec.finish();
  return out;
}

/** Validates a whole raw document. */
export function validateConfig(raw: unknown): Config {
  const root = Section.of('', raw);
  const config: Config = {
    log: readLog(Section.of('log', root.get('log'))),
    listeners: readListeners('listeners', root.get('listeners')),
    upstream: readUpstream(Section.of('upstream', root.get('upstream'))),
    relay: readRelay(Section.of('relay', root.get('relay'))),
    access: readAccess(Section.of('access', root.get('access'))),
  };
  root.finish();
  return config;
}
