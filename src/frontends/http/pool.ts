/**
 * Idle upstream connections of one HTTP listener, shared by all its client sessions (like
 * HAProxy's `http-reuse safe` or Squid's server_persistent_connections): a session that is
 * done with a reusable upstream connection parks it here, keyed by host:port, and the next
 * session going to the same host:port takes it instead of dialing.
 *
 * Access: an entry is keyed by the target the dialer checked when it was dialed. Every
 * session of a listener is checked against the same destination policy, so a connection
 * another session of this listener was allowed to open is one this session would be allowed
 * to open too; taking it skips no check. (Client admission and auth happen per session
 * before any dial or take.)
 *
 * A parked socket keeps its SocketReader's listeners (so it stays flowing and its FIN, RST
 * or error is seen at once) plus ours: an idle upstream has nothing to say, so any byte is a
 * protocol error and the connection is destroyed; 'end'/'error'/'close' remove the entry.
 * The idle timer is unref'd so a parked connection never keeps the process alive.
 */
import type { Socket } from 'node:net';
import type { SocketFacts } from '../../core/context.js';
import type { TargetAddress } from '../../core/errors.js';
import type { SocketReader } from './socket-io.js';

/** What a session hands over and takes back: the connection and the facts the dialer
 *  recorded for it (ctx.upstream for the session that takes it). */
export interface PoolableUpstream {
  key: string;
  target: TargetAddress;
  socket: Socket;
  reader: SocketReader;
  /** Exchanges completed on this connection (by any session). */
  served: number;
  /** True between exchanges when the last one ended cleanly and left it reusable. */
  idle: boolean;
  /** The dialer's socket facts (ctx.upstream), for a session that takes it from the pool. */
  facts: SocketFacts | undefined;
}

interface Parked {
  up: PoolableUpstream;
  timer: NodeJS.Timeout | undefined;
  onActivity: () => void;
}

export interface UpstreamPoolOptions {
  /** How long a connection may sit idle; 0 disables the pool. */
  idleTimeoutMs: number;
  maxIdlePerKey?: number;
  maxIdleTotal?: number;
}

const noCount = (): void => {};

export class UpstreamPool {
  readonly #idleTimeoutMs: number;
  readonly #maxPerKey: number;
  readonly #maxTotal: number;
  /** Per key, oldest first (take pops the most recently parked). */
  readonly #byKey = new Map<string, Parked[]>();
  #total = 0;
  #closed = false;

  constructor(opts: UpstreamPoolOptions) {
    this.#idleTimeoutMs = opts.idleTimeoutMs;
    this.#maxPerKey = opts.maxIdlePerKey ?? 16;
    this.#maxTotal = opts.maxIdleTotal ?? 256;
  }

  get enabled(): boolean {
    return this.#idleTimeoutMs > 0 && !this.#closed;
  }

  /** Idle connections parked now (all keys). */
  get size(): number {
    return this.#total;
  }

  /**
   * Parks an idle connection, or destroys it when the pool is off, closed or full, or the
   * connection is not idle and healthy. The caller gives up the connection either way.
   */
  put(up: PoolableUpstream): void {
    if (!this.enabled || !up.idle || !up.reader.idleUsable || this.#total >= this.#maxTotal) {
      up.socket.destroy();
      return;
    }
    up.reader.rebind(noCount);
    let list = this.#byKey.get(up.key);
    if (list === undefined) {
      list = [];
      this.#byKey.set(up.key, list);
    }
    if (list.length >= this.#maxPerKey) {
      // The oldest is the likeliest to be closed by its server soon: it makes room.
      const oldest = list[0]!;
      this.#remove(oldest);
      oldest.up.socket.destroy();
    }
    const entry: Parked = {
      up,
      timer: undefined,
      onActivity: () => {
        // Bytes, EOF, error or close while idle: the connection is not reusable.
        this.#remove(entry);
        up.socket.destroy();
      },
    };
    up.socket.on('data', entry.onActivity);
    up.socket.on('end', entry.onActivity);
    up.socket.on('error', entry.onActivity);
    up.socket.on('close', entry.onActivity);
    entry.timer = setTimeout(entry.onActivity, this.#idleTimeoutMs);
    entry.timer.unref();
    list.push(entry);
    this.#total += 1;
  }

  /** Whether a connection to `key` is parked (healthy or not: take() finds out). */
  has(key: string): boolean {
    return (this.#byKey.get(key)?.length ?? 0) > 0;
  }

  /** The most recently parked healthy connection to `key`, now owned by the caller. */
  take(key: string): PoolableUpstream | undefined {
    const list = this.#byKey.get(key);
    while (list !== undefined && list.length > 0) {
      const entry = list[list.length - 1]!;
      this.#remove(entry);
      if (entry.up.reader.idleUsable) return entry.up;
      entry.up.socket.destroy();
    }
    return undefined;
  }

  /** Destroys every parked connection; later puts destroy what they are given. */
  close(): void {
    this.#closed = true;
    for (const list of [...this.#byKey.values()]) {
      for (const entry of [...list]) {
        this.#remove(entry);
        entry.up.socket.destroy();
      }
    }
  }

  #remove(entry: Parked): void {
    const list = this.#byKey.get(entry.up.key);
    const i = list ? list.indexOf(entry) : -1;
    if (list === undefined || i < 0) return;
    list.splice(i, 1);
    if (list.length === 0) this.#byKey.delete(entry.up.key);
    this.#total -= 1;
    clearTimeout(entry.timer);
    const s = entry.up.socket;
    s.off('data', entry.onActivity);
    s.off('end', entry.onActivity);
    s.off('error', entry.onActivity);
    s.off('close', entry.onActivity);
  }
}
