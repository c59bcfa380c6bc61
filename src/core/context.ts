/**
 * The per-connection context, created by a listener at accept and passed to every
 * phase (handshake → decide → dial → relay → account). Fields are added by type here,
 * never by monkey-patching the socket.
 */
import type { Logger } from './logger.js';
import type { TargetAddress } from './errors.js';
import { nextConnectionId } from './ids.js';

export type FrontendKind = 'http' | 'socks5' | 'tcp-forward' | 'transparent';

export interface Endpoint {
  address: string;
  port: number;
}

/** Facts about one side's socket, read once when it is established. */
export interface SocketFacts {
  remote: Endpoint;
  local: Endpoint;
  /** True when the kernel says this connection runs MPTCP (not fallen back to TCP). */
  mptcp: boolean;
}

/** Byte counters, updated by the relay (and by front-ends for bytes they consume themselves). */
export interface ByteCounters {
  /** Bytes read from the client. */
  fromDownstream: number;
  /** Bytes read from the server. */
  fromUpstream: number;
}

export interface ConnectionContext {
  readonly id: string;
  readonly listener: string;
  readonly frontend: FrontendKind;
  readonly downstream: SocketFacts;
  /** performance.now() at accept, for durations; the wall-clock time of accept is
   *  performance.timeOrigin + startedAt (no Date made per connection for it). */
  readonly startedAt: number;
  readonly log: Logger;
  readonly bytes: ByteCounters;
  /** Aborted when the proxy cuts the connection (listener destroy): whoever owns the
   *  sockets at that moment (front-end, dialer, relay) closes them. */
  readonly signal: AbortSignal;
  /** Where the client asked to go; set by the front-end once known. */
  target?: TargetAddress;
  /** The upstream socket's facts; set by the dialer's caller once connected. */
  upstream?: SocketFacts;
  /** Number of MPTCP subflows seen on the downstream connection (sampled at close). */
  downstreamSubflows?: number;
  /** The client's subflows as "local→remote" address pairs, sampled with downstreamSubflows. */
  downstreamPaths?: string[];
  /** How the connection ended, set by the relay (or by a front-end that ends it before relaying). */
  end?: { by: 'downstream' | 'upstream' | 'proxy'; error?: Error };
  /** Front-end specific access-log fields (method, status, user...). */
  readonly access: Record<string, string | number | boolean | undefined>;
}

export interface NewContextOptions {
  listener: string;
  frontend: FrontendKind;
  downstream: SocketFacts;
  log: Logger;
  /** Defaults to a fresh signal nobody aborts. */
  signal?: AbortSignal;
  /** performance.now() at accept, when the context is made later than that (an engine-only
   *  connection that became JS's at its end: src/listeners/engine-acceptor.ts). Default: now. */
  startedAt?: number;
}


/**
 * A connection's context. The child logger (the connection id bound) is made the first time
 * `log` is read: every connection has a context, most never log a line of their own, and the
 * child's object merge was ≈6 % of the main thread under short forwarded connections (perf).
 */
class Context implements ConnectionContext {
  readonly id: string;
  readonly listener: string;
  readonly frontend: FrontendKind;
  readonly downstream: SocketFacts;
  readonly startedAt: number;
  readonly bytes: ByteCounters;
  readonly signal: AbortSignal;
  readonly access: Record<string, string | number | boolean | undefined>;
  // `declare`: no own property until set, as on the object literal this class replaced.
  declare target?: TargetAddress;
  declare upstream?: SocketFacts;
  declare downstreamSubflows?: number;
  declare downstreamPaths?: string[];
  declare end?: { by: 'downstream' | 'upstream' | 'proxy'; error?: Error };
  readonly #parentLog: Logger;
  #log: Logger | undefined;

  constructor(opts: NewContextOptions) {
    this.id = nextConnectionId();
    this.listener = opts.listener;
    this.frontend = opts.frontend;
    this.downstream = opts.downstream;
    this.startedAt = opts.startedAt ?? performance.now();
    this.bytes = { fromDownstream: 0, fromUpstream: 0 };
    // A signal of its own when none is given (tests, tools): one shared never-aborted signal
    // collected the abort listeners of every relay started on such contexts.
    this.signal = opts.signal ?? new AbortController().signal;
    this.access = {};
    this.#parentLog = opts.log;
  }

  get log(): Logger {
    return (this.#log ??= this.#parentLog.child({ conn: this.id }));
  }
}

export function createConnectionContext(opts: NewContextOptions): ConnectionContext {
  return new Context(opts);
}

export function formatEndpoint(e: Endpoint): string {
  return e.address.includes(':') ? `[${e.address}]:${e.port}` : `${e.address}:${e.port}`;
}

/** IPv4 clients of a dual-stack socket show up as ::ffff:a.b.c.d; logs, ACLs and dials want a.b.c.d. */
export function unmapAddress(address: string): string {
  return address.startsWith('::ffff:') && address.includes('.') ? address.slice(7) : address;
}

/**
 * Records a subflow sample, keeping the fullest one seen: samples taken while the connection
 * closes find subflows already gone, and must not overwrite what was seen while it was up.
 */
export function recordSubflowSample(ctx: ConnectionContext, sample: { count: number; paths: string[] } | undefined): void {
  if (sample === undefined || sample.count < (ctx.downstreamSubflows ?? 0)) return;
  ctx.downstreamSubflows = sample.count;
  if (sample.paths.length >= (ctx.downstreamPaths?.length ?? 0)) ctx.downstreamPaths = sample.paths;
}
