/**
 * Accepting in the native engine (native/src/acceptor.c, acceptorStart): for a listener whose
 * front-end needs no handshake — tcp-forward to an IP literal, or transparent TPROXY, whose
 * target is where each client was going — the engine thread itself accepts the client, admits
 * it (access.allowClients and the per-client limit, in C), checks a per-connection target
 * against the destination rules (in C), issues the upstream's connect(2) and relays: no JS
 * between the client's handshake and the upstream SYN, nor between the upstream's SYN-ACK and
 * the first byte.
 *
 * Measured before (docs/design.md, "Accepting in the engine"): with Node accepting, ACK in →
 * upstream SYN out was ≈0.155 ms in a quiet testbed whatever the dial path, almost all of it
 * Node's accept path (the main thread's wake-up, TCPWrap, net.Socket, the 'connection' emit).
 *
 * JS still does everything that is not on the packets' way, from the engine's events: the
 * connection context, conn:open / conn:close, upstream:connected / dial:error, the access log
 * and the accounting, exactly as a JS-accepted connection gets them.
 *
 * For an HTTP listener (plan.handoff) the engine accepts and admits, waits for the client's
 * request line, may start the upstream connect it names, and hands the client over ('handoff'):
 * the listener serves it as a JS-accepted one, with that connect as its EarlyConnect. With
 * plan.handoff.serve, a plain first GET is not handed over: the engine serves it from accept
 * (native/src/acceptor.c, serve_at_accept) and JS hears it as a forwarded connection, plus one
 * 'exchange' per request (its request line) and 'head' for a response head the engine declines.
 */
import { unmapAddress, createConnectionContext, type ConnectionContext, type Endpoint, type FrontendKind } from '../core/context.js';
import { publishConnEnded, publishConnOpen } from '../core/channels.js';
import { dialFailed } from '../frontends/tunnel.js';
import { formatTarget, type TargetAddress } from '../core/errors.js';
import type { Logger } from '../core/logger.js';
import { ipToBytes, parseCanonicalIp, type Cidr } from '../access/cidr.js';
import type { PortRange } from '../access/ports.js';
import type { DestinationRules } from '../access/types.js';
import type { EngineAcceptPlan, ExchangeRequests } from '../frontends/types.js';
import type { EarlyConnect } from '../upstream/types.js';
import { accountSummary, decodeRelaySummary, loadNativeRelayEngine, type EngineExchangeReport, type HeadThen, type NativeRelaySummary, type UpstreamFailure } from '../relay/native-relay.js';
import type { NativeAddress } from '../mptcp/native.js';
import type { EngineAccessLine, EngineAccessLog } from '../core/access-log.js';

/** What acceptorStart reports (native/src/relay.h). */
export type AcceptorEvent =
  | { kind: 'accepted'; id: number; remote: Endpoint; local: Endpoint; upstreamLocal: Endpoint; mptcp: boolean; target?: TargetAddress; agoMs?: number }
  | { kind: 'connected'; id: number; connectMs: number; mptcp: boolean; reused: boolean }
  | ({ kind: 'done' } & NativeRelaySummary)
  | { kind: 'denied'; remote: NativeAddress | null; reason: 'client-network' | 'client-limit' }
  | { kind: 'error'; errno: number; code: string; syscall: string }
  | { kind: 'stopped'; live: number }
  | { kind: 'lines'; text: string | undefined; ended: number; live: number }
  | { kind: 'handoff'; fd: number; upstreamFd: number; remote: NativeAddress | null; local: NativeAddress | null; upstreamLocal?: NativeAddress | null; target?: NativeAddress | null; mptcp: boolean; head?: Buffer; keptId: number }
  | { kind: 'kept-end'; keptId: number; reason?: 'idle' | 'stopped' }
  | { kind: 'head'; id: number; bytes: Buffer | null; complete: boolean; failure?: UpstreamFailure; request: Buffer | null }
  | { kind: 'exchange'; id: number; report: EngineExchangeReport };

/** Packed DestinationRules (packDestinationRules), for per-connection targets. */
export interface PackedDestinations {
  deny: Buffer;
  allow: Buffer;
  denyPorts: Buffer;
  allowPorts: Buffer;
  selfPorts: Buffer;
  selfHosts: Buffer;
}

export interface AcceptorOptions {
  /** Hand each client to JS ('handoff') once its first bytes are in, instead of relaying. */
  handoff?: boolean;
  /** handoff: connect early from an http:// request line to an IP literal (destinations check it). */
  early?: boolean;
  /** handoff: how long a kept client given back (acceptorAdopt) may wait for its next request
   *  before it is closed (the listener's keepAliveTimeoutMs; default 60 000). */
  keptWaitMs?: number;
  /** handoff: how long to wait for a client's first bytes. */
  handoffWaitMs?: number;
  /** handoff: serve a plain first request in the engine from accept (HandoffPlan.serve), with
   *  this Via pseudonym and these request-head limits. */
  httpVia?: string;
  httpMaxHeadBytes?: number;
  httpMaxFields?: number;
  /** httpVia: the engine's upstream pool's idle timeout (HandoffServe.upstreamIdleMs; 0: off). */
  httpUpstreamIdleMs?: number;
  /** A fixed target; or `destinations` for each connection's own (transparent). */
  upstreamAddress?: string;
  upstreamPort?: number;
  destinations?: PackedDestinations;
  upstreamMptcp: boolean;
  bindAddress?: string;
  connectTimeoutMs: number;
  idleTimeoutMs: number;
  sampleDownstream: boolean;
  /** Packed rules (packClientRules); null admits every client. */
  allowClients: Buffer | null;
  maxPerClient: number;
  /** A fixed target's connections are the engine's alone (native/src/engine-only.c): JS hears
   *  of them in 'lines' batches, or, for one whose connect fails, at its end. */
  engineOnly?: boolean;
  /** engineOnly: their access lines' template (none: no line is written). */
  accessLine?: EngineAccessLine;
}

/** The addon's acceptor and per-client table functions. */
export interface NativeAcceptorApi {
  acceptorStart(listenFd: number, options: AcceptorOptions, onEvent: (e: AcceptorEvent) => void): number;
  acceptorStop(id: number): boolean;
  /** A kept client back to the acceptor (native/src/acceptor.c): the fd and the client's slot
   *  are the engine's on true; false (unknown or stopping) leaves both to the caller. */
  acceptorAdopt(id: number, fd: number, clientAddress: string, keptId: number): boolean;
  relayAbort(id: number): boolean;
  /** Ends every engine-only connection of the acceptor, also after its stop (engine-only.c). */
  acceptorAbortAll(id: number): boolean;
  /** Its engine-only connections accepted and not yet reported ('lines'). */
  acceptorEngineOnlyLive(id: number): number;
  /** The answer to a 'head' event (NativeRelayEngine.relayHeadDone). */
  relayHeadDone(id: number, out: Buffer | null, then: HeadThen, carry: Buffer | null, keepBody: number): boolean;
  dup(fd: number): number;
  close(fd: number): void;
  clientAcquire(address: string, max: number): boolean;
  clientRelease(address: string): void;
  clientCount(address: string): number;
  clientTracked(): number;
}

/** The addon's acceptorStart: events come as positional arguments (decodeAcceptorEvent). */
type RawAcceptorStart = (listenFd: number, options: AcceptorOptions, onEvent: (kind: number, ...args: unknown[]) => void) => number;

/** The addon's acceptor functions, or undefined when the addon lacks them (or MPTCP_PROXY_ENGINE_ACCEPT=off). */
export function loadNativeAcceptor(): NativeAcceptorApi | undefined {
  if (process.env.MPTCP_PROXY_ENGINE_ACCEPT === 'off') return undefined;
  const engine = loadNativeRelayEngine() as (ReturnType<typeof loadNativeRelayEngine> & Partial<Omit<NativeAcceptorApi, 'acceptorStart'>> & { acceptorStart?: RawAcceptorStart }) | undefined;
  if (typeof engine?.acceptorStart !== 'function' || typeof engine.clientAcquire !== 'function') return undefined;
  const rawStart = engine.acceptorStart.bind(engine);
  return {
    ...(engine as unknown as NativeAcceptorApi),
    acceptorStart: (listenFd, options, onEvent) => rawStart(listenFd, options, (kind, ...args) => onEvent(decodeAcceptorEvent(kind, args))),
  };
}

/** An endpoint from an address's text and port, IPv4-mapped addresses unmapped; no address
 *  (another family) gives address '' and port 0. 'accepted' comes once per connection: its
 *  endpoints are made here directly, not as NativeAddress objects converted afterwards. */
function endpointFrom(address: unknown, port: unknown): Endpoint {
  return typeof address === 'string' ? { address: unmapAddress(address), port: port as number } : { address: '', port: 0 };
}

/** A native address from its text (null: not IPv4/IPv6) and port. */
function nativeAddress(address: unknown, port: unknown): NativeAddress | null {
  return typeof address === 'string' ? { family: address.includes(':') ? 6 : 4, address, port: port as number } : null;
}

/**
 * An acceptor's event from the addon's positional arguments (native/src/acceptor.c,
 * acceptor_event: V8 builds these objects from literals far faster than C can set their
 * properties one by one). kind is enum msg_kind's number; the layouts, after it:
 *   0 done       a relay's end, as decodeRelaySummary (src/relay/native-relay.ts) reads it
 *   1 connected  id, connectMs, mptcp, reused (a parked upstream an exchange took: no connect)
 *   2 accepted   id, remote (address, port), local (address, port), upstreamLocal (address,
 *                port), mptcp, target (address or null, port: an exchange served from accept),
 *                agoMs (an engine-only connection whose connect failed: since its accept)
 *   3 denied     remote (address, port), reason
 *   4 error      errno, code, syscall
 *   5 stopped    engine-only connections still live
 *   6 handoff    fd, upstreamFd, remote, local (address, port each), mptcp, target (address or
 *                null, port), upstreamLocal (address or null, port), head (the peeked bytes or
 *                null), keptId (0: a new client)
 *   7 head       id, bytes (or null), complete, code, syscall (undefined ×2 without a failure),
 *                request head (an exchange served from accept: a response head the engine
 *                declined, answered with relayHeadDone)
 *   8 kept-end   keptId, reason (undefined: the client closed or reset; 'idle', 'stopped')
 *   9 exchange   id, method, target (undefined ×2: the first request of a relay JS started),
 *                status (0: not rewritten by the engine), fromDownstream, fromUpstream, durationMs
 *  10 lines      access lines (a string, or undefined), engine-only connections ended, still live
 */
export function decodeAcceptorEvent(kind: number, a: readonly unknown[]): AcceptorEvent {
  switch (kind) {
    case 0:
      return decodeRelaySummary(a);
    case 1:
      return { kind: 'connected', id: a[0] as number, connectMs: a[1] as number, mptcp: a[2] as boolean, reused: a[3] === true };
    case 2: {
      const e: Extract<AcceptorEvent, { kind: 'accepted' }> = { kind: 'accepted', id: a[0] as number, remote: endpointFrom(a[1], a[2]), local: endpointFrom(a[3], a[4]), upstreamLocal: endpointFrom(a[5], a[6]), mptcp: a[7] as boolean };
      if (typeof a[8] === 'string') e.target = { host: unmapAddress(a[8]), port: a[9] as number };
      if (a[10] !== undefined) e.agoMs = a[10] as number;
      return e;
    }
    case 3:
      return { kind: 'denied', remote: nativeAddress(a[0], a[1]), reason: a[2] as 'client-network' | 'client-limit' };
    case 4:
      return { kind: 'error', errno: a[0] as number, code: a[1] as string, syscall: a[2] as string };
    case 5:
      return { kind: 'stopped', live: a[0] as number };
    case 6: {
      const e: Extract<AcceptorEvent, { kind: 'handoff' }> = {
        kind: 'handoff',
        fd: a[0] as number,
        upstreamFd: a[1] as number,
        remote: nativeAddress(a[2], a[3]),
        local: nativeAddress(a[4], a[5]),
        mptcp: a[6] as boolean,
        keptId: a[12] as number,
      };
      const target = nativeAddress(a[7], a[8]);
      if (target !== null) e.target = target;
      const upstreamLocal = nativeAddress(a[9], a[10]);
      if (upstreamLocal !== null) e.upstreamLocal = upstreamLocal;
      if (a[11] !== null && a[11] !== undefined) e.head = a[11] as Buffer;
      return e;
    }
    case 7: {
      const e: Extract<AcceptorEvent, { kind: 'head' }> = { kind: 'head', id: a[0] as number, bytes: a[1] as Buffer | null, complete: a[2] as boolean, request: a[5] as Buffer | null };
      if (a[3] !== undefined) e.failure = { code: a[3] as string, syscall: a[4] as string };
      return e;
    }
    case 8:
      return a[1] === undefined ? { kind: 'kept-end', keptId: a[0] as number } : { kind: 'kept-end', keptId: a[0] as number, reason: a[1] as 'idle' | 'stopped' };
    case 9: {
      const report: EngineExchangeReport = { fromDownstream: a[4] as number, fromUpstream: a[5] as number, durationMs: a[6] as number };
      if (a[1] !== undefined) report.method = a[1] as string;
      if (a[2] !== undefined) report.target = a[2] as string;
      if ((a[3] as number) > 0) report.status = a[3] as number;
      return { kind: 'exchange', id: a[0] as number, report };
    }
    case 10:
      return { kind: 'lines', text: a[0] as string | undefined, ended: a[1] as number, live: a[2] as number };
    default:
      throw new Error(`the engine sent an acceptor event of unknown kind ${kind}`);
  }
}

/** checkDestination's rules for the engine (native/src/destination.c): CIDRs as
 *  packClientRules, port ranges 4 bytes each (from, to: u16 LE), self ports 2 bytes each, self
 *  hosts 17 bytes each (family, 0 = any address of this host — a name, "" or unspecified —
 *  then 16 address bytes). */
export function packDestinationRules(rules: DestinationRules): PackedDestinations {
  const ranges = (list: readonly PortRange[]): Buffer => {
    const out = Buffer.alloc(list.length * 4);
    list.forEach((r, i) => {
      out.writeUInt16LE(r.from, i * 4);
      out.writeUInt16LE(r.to, i * 4 + 2);
    });
    return out;
  };
  const ports = rules.selfPorts();
  const selfPorts = Buffer.alloc(ports.length * 2);
  ports.forEach((p, i) => selfPorts.writeUInt16LE(p, i * 2));
  const hosts = rules.selfHosts();
  const selfHosts = Buffer.alloc(hosts.length * 17);
  hosts.forEach((h, i) => {
    const ip = h === '' ? undefined : parseCanonicalIp(h);
    if (ip === undefined) return; // family 0: any local address, as isSelf treats names
    selfHosts[i * 17] = ip.family;
    ipToBytes(ip).copy(selfHosts, i * 17 + 1);
  });
  return { deny: packClientRules(rules.deny), allow: packClientRules(rules.allow), denyPorts: ranges(rules.denyPorts), allowPorts: ranges(rules.allowPorts), selfPorts, selfHosts };
}

/** access.allowClients for the engine: 18 bytes a rule (family, prefix, 16 address bytes). */
export function packClientRules(rules: readonly Cidr[]): Buffer {
  const out = Buffer.alloc(rules.length * 18);
  rules.forEach((r, i) => {
    out[i * 18] = r.family;
    out[i * 18 + 1] = r.prefix;
    ipToBytes({ family: r.family, value: r.network }).copy(out, i * 18 + 2);
  });
  return out;
}

/** What a listener tells its EngineAcceptor. */
export interface EngineAcceptorSettings {
  listener: string;
  frontend: FrontendKind;
  plan: EngineAcceptPlan;
  /** The listening socket is MPTCP: sample clients' subflows. */
  mptcp: boolean;
  clientRules: readonly Cidr[] | undefined;
  /** Needed when plan.target is undefined (per-connection targets). */
  destinationRules?: DestinationRules;
  maxPerClient: number;
  log: Logger;
  /** plan.handoff: takes each handed-over client (its fd and slot are the callee's). */
  onHandoff?(client: HandedOver): void;
  /** plan.handoff: a client given back (HandedOver.giveBack) closed, reset or idled out before
   *  its next request, or the acceptor stopped ('stopped'); its slot is released. */
  onKeptEnd?(keptId: number, reason: 'idle' | 'stopped' | undefined): void;
  /** plan.handoff.serve: an exchange served from accept kept its client open; the connection
   *  (ctx) goes on, and the caller says under which id (as HandedOver.giveBack's keptId). */
  onKept?(ctx: ConnectionContext): number;
  /** Nothing watches connections one by one but the access log, if on (src/main.ts): a
   *  fixed-target forward's connections may be the engine's alone, with `lines` writing their
   *  access lines (undefined: the access log is off). */
  engineOnly?: EngineOnly;
}

/** EngineAcceptorSettings.engineOnly. */
export interface EngineOnly {
  lines: EngineAccessLog | undefined;
}

/** A client the engine accepted, admitted and handed over (plan.handoff). */
export interface HandedOver {
  fd: number;
  remote: Endpoint;
  local: Endpoint;
  mptcp: boolean;
  /** The upstream connect the engine began from the client's request line, if it did. */
  early: EarlyConnect | undefined;
  /** Where that request line says the request goes, when the engine could tell (an
   *  absolute-form http:// request to an IP literal): the front-end's preconnect need not peek. */
  requestTarget: TargetAddress | undefined;
  /** The client's first bytes as the engine peeked at them (still in the socket): its whole
   *  request head when it came within the hand-over's wait and 8 KiB. */
  head: Buffer | undefined;
  /** A keep-alive client given back after an exchange the engine served (giveBack's keptId),
   *  now with its next request: no early connect, so that a session may reuse an upstream. 0:
   *  a new client. */
  keptId: number;
  /**
   * Gives the client back to the engine once an exchange served there kept it open: it waits
   * there for its next request and is handed over again with `keptId` (from 1, the caller's
   * to choose), or is closed when it closes, resets or idles out first (onKeptEnd). True: the
   * fd and the client's slot are the engine's; false (the listener is stopping): the fd is
   * closed, the slot still the caller's.
   */
  giveBack(fd: number, keptId: number): boolean;
}

function endpointOf(a: NativeAddress | null): Endpoint {
  return endpointFrom(a?.address, a?.port);
}

/**
 * One listening socket accepted on by the engine. start() hands it a dup of the listening fd;
 * stop() closes it; the connections it started are followed to their end either way.
 */
export class EngineAcceptor {
  readonly #api: NativeAcceptorApi;
  readonly #s: EngineAcceptorSettings;
  /** Accepted and not yet done, by relay id; with the upstream's local address (known at
   *  accept, recorded in ctx.upstream at 'connected'). */
  readonly #live = new Map<number, { ctx: ConnectionContext; upstreamLocal: Endpoint; requests?: ExchangeRequests }>();
  /** One signal for all of this acceptor's connections: aborted by abortAll (nothing listens
   *  on it per connection, so one shared signal costs nothing per connection). */
  readonly #cut = new AbortController();
  #id: number | undefined;
  /** The engine's id for this acceptor, kept after stop() (acceptorAbortAll). */
  #engineId: number | undefined;
  /** Engine-only connections not yet reported, as the engine last said ('stopped', 'lines'):
   *  what drained() waits for (exact once stopped: no more are accepted). */
  #engineOnlyLive = 0;
  #engineOnly = false;
  #stopped: Promise<void> | undefined;
  #onStopped: (() => void) | undefined;
  #onDrained: (() => void) | undefined;

  constructor(api: NativeAcceptorApi, settings: EngineAcceptorSettings) {
    this.#api = api;
    this.#s = settings;
  }

  /** Connections accepted and not yet reported done (engine-only ones: asked of the engine). */
  get connections(): number {
    const engineOnly = this.#engineOnly && this.#engineId !== undefined ? this.#api.acceptorEngineOnlyLive(this.#engineId) : 0;
    return this.#live.size + engineOnly;
  }

  /** True when this acceptor's successful connections are the engine's alone. */
  get engineOnly(): boolean {
    return this.#engineOnly;
  }

  /** Starts accepting on `listenFd` (the engine takes it over on success; throws otherwise). */
  start(listenFd: number): void {
    const { plan, mptcp, clientRules, destinationRules, maxPerClient } = this.#s;
    const where = plan.handoff
      ? {
          handoff: true,
          early: true,
          handoffWaitMs: plan.handoff.waitMs,
          keptWaitMs: plan.handoff.keptWaitMs,
          ...(plan.handoff.serve ? { httpVia: plan.handoff.serve.via, httpMaxHeadBytes: plan.handoff.serve.maxHeadBytes, httpMaxFields: plan.handoff.serve.maxFields, httpUpstreamIdleMs: plan.handoff.serve.upstreamIdleMs } : {}),
          ...(destinationRules !== undefined ? { destinations: packDestinationRules(destinationRules) } : {}),
        }
      : plan.dial.address !== undefined && plan.dial.port !== undefined
        ? { upstreamAddress: plan.dial.address, upstreamPort: plan.dial.port }
        : destinationRules !== undefined
          ? { destinations: packDestinationRules(destinationRules) }
          : undefined;
    if (where === undefined) throw new Error('an engine acceptor needs a fixed target or the destination rules');
    if (plan.handoff && this.#s.onHandoff === undefined) throw new Error('a handoff acceptor needs onHandoff');
    // Engine-only: a fixed target (its line's target is known here), nothing to hear at accept.
    const only = this.#s.engineOnly;
    const target = plan.target;
    const engineOnly = only !== undefined && typeof this.#api.acceptorAbortAll === 'function' && !plan.handoff && plan.onAccepted === undefined && target !== undefined && 'upstreamAddress' in where;
    const accessLine = engineOnly ? only.lines?.line(this.#s.listener, this.#s.frontend, target) ?? undefined : undefined;
    this.#stopped = new Promise((resolve) => (this.#onStopped = resolve));
    this.#id = this.#api.acceptorStart(
      listenFd,
      {
        ...where,
        upstreamMptcp: plan.dial.mptcp,
        ...(plan.dial.bindAddress ? { bindAddress: plan.dial.bindAddress } : {}),
        connectTimeoutMs: plan.dial.connectTimeoutMs,
        idleTimeoutMs: plan.idleTimeoutMs,
        sampleDownstream: mptcp,
        allowClients: clientRules === undefined ? null : packClientRules(clientRules),
        maxPerClient,
        ...(engineOnly ? { engineOnly, ...(accessLine ? { accessLine } : {}) } : {}),
      },
      (e) => this.#onEvent(e),
    );
    this.#engineId = this.#id;
    this.#engineOnly = engineOnly;
  }

  /** Stops accepting; resolves once the engine closed the socket (no 'accepted' after). */
  stop(): Promise<void> {
    if (this.#id !== undefined && this.#stopped !== undefined) {
      this.#api.acceptorStop(this.#id);
      this.#id = undefined;
    }
    return this.#stopped ?? Promise.resolve();
  }

  /** Resolves when every connection accepted so far has ended. */
  drained(): Promise<void> {
    if (this.#live.size === 0 && this.#engineOnlyLive === 0) return Promise.resolve();
    return new Promise((resolve) => {
      const previous = this.#onDrained;
      this.#onDrained = () => {
        previous?.();
        resolve();
      };
    });
  }

  /** Cuts every live connection (endedBy 'proxy', reason 'aborted'). */
  abortAll(err?: Error): void {
    this.#cut.abort(err);
    for (const id of this.#live.keys()) this.#api.relayAbort(id);
    if (this.#engineOnly && this.#engineId !== undefined) this.#api.acceptorAbortAll(this.#engineId);
  }

  #onEvent(e: AcceptorEvent): void {
    switch (e.kind) {
      case 'accepted':
        return this.#accepted(e);
      case 'connected': {
        const live = this.#live.get(e.id);
        if (live === undefined) return;
        if (e.reused) this.#s.plan.dial.reused(live.ctx, e.mptcp, live.upstreamLocal);
        else this.#s.plan.dial.connected(live.ctx, e.connectMs, e.mptcp, live.upstreamLocal);
        return;
      }
      case 'done':
        return this.#done(e);
      case 'denied': {
        const client = endpointOf(e.remote).address;
        if (e.reason === 'client-network') this.#s.log.warn('client denied', { listener: this.#s.listener, client, rule: 'client-network' });
        else this.#s.log.warn('client over its connection limit', { listener: this.#s.listener, client });
        return;
      }
      case 'error':
        this.#s.log.error('out of file descriptors or memory; the listener rests 100 ms', { listener: this.#s.listener, code: e.code, syscall: e.syscall });
        return;
      case 'stopped':
        this.#engineOnlyLive = e.live;
        this.#onStopped?.();
        return;
      case 'lines':
        if (e.text !== undefined) this.#s.engineOnly?.lines?.write(e.text);
        this.#engineOnlyLive = e.live;
        this.#drainedCheck();
        return;
      case 'handoff':
        return this.#handoff(e);
      case 'kept-end':
        return this.#s.onKeptEnd?.(e.keptId, e.reason);
      case 'exchange':
        this.#live.get(e.id)?.requests?.reported(e.report);
        return;
      case 'head':
        return this.#head(e);
    }
  }

  #handoff(e: Extract<AcceptorEvent, { kind: 'handoff' }>): void {
    const handoff = this.#s.plan.handoff;
    let early: EarlyConnect | undefined;
    const requestTarget = e.target ? { host: unmapAddress(e.target.address), port: e.target.port } : undefined;
    if (e.upstreamFd >= 0) {
      early = requestTarget && handoff?.adoptEarly(e.upstreamFd, requestTarget, endpointOf(e.upstreamLocal ?? null));
      if (early === undefined) this.#api.close(e.upstreamFd);
      else if (this.#s.log.isEnabled('debug')) this.#s.log.debug('upstream connect begun by the engine', { listener: this.#s.listener, target: formatTarget(early.target) });
    }
    const remote = endpointOf(e.remote);
    const giveBack = (fd: number, keptId: number): boolean => {
      if (this.#id !== undefined && this.#api.acceptorAdopt(this.#id, fd, remote.address, keptId)) return true;
      this.#api.close(fd);
      return false;
    };
    this.#s.onHandoff!({ fd: e.fd, remote, local: endpointOf(e.local), mptcp: e.mptcp, early, requestTarget, head: e.head, keptId: e.keptId, giveBack });
  }

  #accepted(e: Extract<AcceptorEvent, { kind: 'accepted' }>): void {
    const ctx = createConnectionContext({
      listener: this.#s.listener,
      frontend: this.#s.frontend,
      downstream: { remote: e.remote, local: e.local, mptcp: e.mptcp },
      log: this.#s.log,
      signal: this.#cut.signal,
      // An engine-only connection whose connect failed, heard of at its end: since its accept.
      ...(e.agoMs !== undefined ? { startedAt: performance.now() - e.agoMs } : {}),
    });
    if (e.target !== undefined) {
      // An HTTP exchange served from accept: its request's target; one request line each.
      ctx.target = e.target;
      this.#live.set(e.id, { ctx, upstreamLocal: e.upstreamLocal, requests: this.#s.plan.handoff?.serve?.requests(ctx) });
      if (ctx.log.isEnabled('debug')) ctx.log.debug('http exchange served in the engine', { target: formatTarget(ctx.target), from: 'accept' });
    } else {
      ctx.target = this.#s.plan.target ?? { host: ctx.downstream.local.address, port: ctx.downstream.local.port };
      this.#live.set(e.id, { ctx, upstreamLocal: e.upstreamLocal });
    }
    publishConnOpen({ ctx });
    this.#s.plan.onAccepted?.(ctx);
    // Accepted by the engine before abortAll, announced after it: cut it as abortAll would.
    if (this.#cut.signal.aborted) this.#api.relayAbort(e.id);
  }

  /** A response head the engine declined in an exchange served from accept: JS's reply. */
  #head(e: Extract<AcceptorEvent, { kind: 'head' }>): void {
    const ctx = this.#live.get(e.id)?.ctx;
    const serve = this.#s.plan.handoff?.serve;
    if (ctx === undefined || serve === undefined || e.request === null) {
      this.#api.relayAbort(e.id);
      return;
    }
    try {
      const d = serve.respond(ctx, e.request, e.bytes, e.complete, e.failure);
      this.#api.relayHeadDone(e.id, d.out, d.then, d.carry ?? null, d.keepBody ?? -1);
    } catch (err) {
      // A bug of ours, not the peer's: the relay must not wait for an answer forever.
      ctx.log.error('response head hook failed; the exchange is cut', { err });
      this.#api.relayAbort(e.id);
    }
  }

  #done(s: Extract<AcceptorEvent, { kind: 'done' }>): void {
    const live = this.#live.get(s.id);
    if (live === undefined) return;
    const ctx = live.ctx;
    this.#live.delete(s.id);
    const summary = accountSummary(s, ctx, { idleTimeoutMs: this.#s.plan.idleTimeoutMs });
    live.requests?.ended(s.exchanges);
    if (s.keptFd !== undefined && this.#keep(ctx, s.keptFd)) {
      this.#drainedCheck();
      return; // the connection goes on: its next request is handed over with it
    }
    if (s.connectFailed) {
      // As tunnelTo's failed dial: the proxy ended it, and says so once.
      const dial = this.#s.plan.dial;
      const error = s.reason === 'denied' ? dial.denied(ctx, s.deniedBy ?? 'destination') : dial.failed(ctx, summary.error, s.reason === 'connect-timeout');
      if (s.reason === 'denied' && 'rule' in error && error.rule !== s.deniedBy) {
        // Both sides apply the same rules in the same order; a difference is a bug to report.
        ctx.log.warn('the engine and the access policy disagree on a destination', { target: formatTarget(ctx.target!), engineRule: s.deniedBy, policyRule: error.rule });
      }
      dialFailed(ctx, ctx.target!, error);
    }
    publishConnEnded(ctx);
    this.#drainedCheck();
  }

  /** An exchange served from accept kept its client (a keep-alive one whose next request is
   *  not the engine's, or whose upstream failed before answering): back to the acceptor with
   *  its slot, to be handed over with its next request. False: closed (the slot released). */
  #keep(ctx: ConnectionContext, fd: number): boolean {
    const keptId = this.#s.onKept?.(ctx);
    const address = ctx.downstream.remote.address;
    if (keptId !== undefined && this.#id !== undefined && this.#api.acceptorAdopt(this.#id, fd, address, keptId)) return true;
    this.#api.close(fd);
    this.#api.clientRelease(address);
    if (keptId !== undefined) {
      this.#s.onKeptEnd?.(keptId, 'stopped'); // its access line
      return true;
    }
    return false;
  }

  #drainedCheck(): void {
    if (this.#live.size === 0 && this.#engineOnlyLive === 0) {
      const drained = this.#onDrained;
      this.#onDrained = undefined;
      drained?.();
    }
  }
}
