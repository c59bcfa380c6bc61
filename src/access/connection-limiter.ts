/**
 * Concurrent connections per client address. The listener calls tryAcquire at accept
 * and release exactly once when the connection closes.
 *
 * Addresses are counted after folding IPv4-mapped IPv6 (`::ffff:10.1.2.3` and
 * `10.1.2.3` are the same client). An entry is deleted when its count reaches zero,
 * so the map holds only clients with open connections.
 */
import { formatIp, parseCanonicalIp } from './cidr.js';

export interface ConnectionLimiter {
  /** The configured limit; 0 = unlimited. */
  readonly maxPerClient: number;
  /** Counts one more connection for `address`; false (and nothing counted) if it is at the limit. */
  tryAcquire(address: string): boolean;
  /** Uncounts one connection; a release without a matching acquire is ignored. */
  release(address: string): void;
  /** Open connections counted for `address`. */
  count(address: string): number;
  /** Client addresses currently tracked (for tests and metrics). */
  readonly trackedClients: number;
}

function limiterKey(address: string): string {
  const ip = parseCanonicalIp(address);
  return ip === undefined ? address : formatIp(ip);
}

function checkMaxPerClient(maxPerClient: number): void {
  if (!Number.isInteger(maxPerClient) || maxPerClient < 0) {
    throw new RangeError(`maxPerClient must be a non-negative integer, got ${maxPerClient}`);
  }
}

export function createConnectionLimiter(maxPerClient: number): ConnectionLimiter {
  checkMaxPerClient(maxPerClient);
  const counts = new Map<string, number>();
  return {
    maxPerClient,
    tryAcquire(address) {
      const key = limiterKey(address);
      const n = counts.get(key) ?? 0;
      if (maxPerClient > 0 && n >= maxPerClient) return false;
      counts.set(key, n + 1);
      return true;
    },
    release(address) {
      const key = limiterKey(address);
      const n = counts.get(key);
      if (n === undefined) return;
      if (n <= 1) counts.delete(key);
      else counts.set(key, n - 1);
    },
    count(address) {
      return counts.get(limiterKey(address)) ?? 0;
    },
    get trackedClients() {
      return counts.size;
    },
  };
}

/** A per-client count table kept outside JS (the addon's clientAcquire & co., native/src/admission.c). */
export interface ClientCountTable {
  clientAcquire(address: string, max: number): boolean;
  clientRelease(address: string): void;
  clientCount(address: string): number;
  clientTracked(): number;
}

/**
 * The same limiter over a table the native engine shares: its acceptor counts the clients it
 * accepts in that table too, so a client's connections count once against maxPerClient
 * whichever listener (JS or engine) accepted them. Addresses that are not IP literals (none
 * come from a TCP listener) are never limited, as they could not be counted.
 */
export function createSharedConnectionLimiter(maxPerClient: number, table: ClientCountTable): ConnectionLimiter {
  checkMaxPerClient(maxPerClient);
  // The table rejects (TypeError) what is not an IP literal: cheaper than parsing it here first.
  const orElse = <T>(f: () => T, fallback: T): T => {
    try {
      return f();
    } catch {
      return fallback;
    }
  };
  return {
    maxPerClient,
    tryAcquire: (address) => orElse(() => table.clientAcquire(address, maxPerClient), true),
    release: (address) => orElse(() => table.clientRelease(address), undefined),
    count: (address) => orElse(() => table.clientCount(address), 0),
    get trackedClients() {
      return table.clientTracked();
    },
  };
}
