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
}


export function createConnectionContext(opts: NewContextOptions): ConnectionContext {
  const id = nextConnectionId();
  return {
    id,
    listener: opts.listener,
    frontend: opts.frontend,
    downstream: opts.downstream,
    startedAt: performance.now(),
    log: opts.log.child({ conn: id }),
    bytes: { fromDownstream: 0, fromUpstream: 0 },
    // A signal of its own when none is given (tests, tools): one shared never-aborted signal
    // collected the abort listeners of every relay started on such contexts.
    signal: opts.signal ?? new AbortController().signal,
    access: {},
  };
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
