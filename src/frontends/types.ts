/**
 * The shape every front-end has (http, socks5, tcp-forward, transparent): a factory
 * that takes the shared dependencies and its own config, returning an object whose
 * `handle` owns one accepted client socket from handshake to close.
 *
 * The socket arrives with nothing reading it: bytes the client sends early wait in its
 * buffer until the front-end attaches a 'data' listener or reads (the relay does so itself).
 *
 * `handle` never throws: protocol errors become protocol replies (HTTP status, SOCKS REP)
 * and a log line; it resolves when the connection is fully closed.
 */
import type { Socket } from 'node:net';
import type { ConnectionContext, Endpoint, FrontendKind } from '../core/context.js';
import type { Logger } from '../core/logger.js';
import type { Dial, EarlyConnect, EngineDialPlan } from '../upstream/types.js';
import type { TargetAddress } from '../core/errors.js';
import type { Relay } from '../relay/types.js';
import type { BodyPump } from '../relay/native-pump.js';
import type { ConnectingRelay, EngineExchangeEnd, EngineExchangeReport, HeadDecision, UpstreamFailure } from '../relay/native-relay.js';
import type { AccessPolicy } from '../access/types.js';

export interface FrontendDeps {
  dial: Dial;
  relay: Relay;
  /** Moves one large HTTP body natively between sockets JS keeps (relay.engine native,
   *  selectBodyPump); absent = bodies move through JS. */
  pump?: BodyPump;
  /** The native engine, taking connections whose upstream connect(2) it completes itself
   *  (tunnelTo with dial.connectNow; selectConnectingRelay); absent = dial, then relay. */
  relayConnecting?: ConnectingRelay;
  access: AccessPolicy;
  log: Logger;
}

/**
 * A connection a front-end has handed to the relay: `ended` settles (never rejects) when the
 * relay is done. A front-end's handler returns it wrapped in this object, so that the handler's
 * async frames end at the hand-over instead of awaiting the relay — they would otherwise hold
 * the session, its destroyed net.Socket and reader for the tunnel's whole life — and handle()
 * resolves with `ended` (HTTP CONNECT, SOCKS5).
 */
export interface RelayStarted {
  ended: Promise<void>;
}

export interface Frontend {
  readonly kind: FrontendKind;
  /** `early`: what preconnect returned for this socket, now the front-end's to use or cancel. */
  handle(socket: Socket, ctx: ConnectionContext, early?: EarlyConnect): Promise<void>;
  /**
   * Called by the listener for an admitted client before anything else is done for it: a
   * front-end that can tell the upstream from bytes already received (the HTTP proxy, from a
   * peek at the request line) may start its connect here, in the accept's own turn.
   * `known`: where the request goes, already read from those bytes (by the engine, for a
   * client it handed over): no peek then.
   */
  preconnect?(socket: Socket, known?: TargetAddress): EarlyConnect | undefined;
  /**
   * For a client the engine's acceptor handed over (a handoff plan): the exchange to run
   * without a Node socket at all, when its request allows (the HTTP proxy: see
   * src/frontends/http/engine-exchange.ts). Undefined: the listener makes a socket and calls
   * preconnect and handle as for any client.
   */
  engineExchange?(client: HandedOverClient): EngineExchange | undefined;
  /** Releases what the front-end holds across connections (the HTTP upstream pool). */
  close?(): void;
  /**
   * For a front-end with no handshake whose connections go to one fixed target (tcp-forward)
   * or to where each client was going (transparent TPROXY): the plan for the native engine to
   * accept, admit, dial and relay its connections itself (src/listeners/engine-acceptor.ts).
   * Undefined = the listener accepts in JS and calls handle.
   */
  engineAccept?(): EngineAcceptPlan | undefined;
}

/** A client the engine's acceptor handed over, as a front-end sees it (src/listeners/engine-acceptor.ts, HandedOver). */
export interface HandedOverClient {
  fd: number;
  /** Its first bytes, peeked. */
  head: Buffer | undefined;
  /** The upstream connect the engine issued from its request line. */
  early: EarlyConnect | undefined;
  /** Given back by an earlier exchange served in the engine (HandedOver.kept). */
  kept: boolean;
  /** HandedOver.giveBack: the client back to the engine after an exchange that kept it open. */
  giveBack(fd: number): boolean;
}

/** Frontend.engineExchange's yes: run it with the connection's context. */
export interface EngineExchange {
  /** Resolves when the exchange is over and accounted (never rejects): true when the client
   *  went back to the engine with its slot (HandedOverClient.giveBack), false when it is
   *  closed. ctx.signal is not watched (it may be shared by many exchanges): abort() cuts this one. */
  run(ctx: ConnectionContext): Promise<boolean>;
  /** Cuts the exchange run with ctx (the listener's destroy). */
  abort(ctx: ConnectionContext): void;
}

/** Frontend.engineAccept's answer. */
export interface EngineAcceptPlan {
  /** The fixed target (tcp-forward); undefined: each connection's own (transparent, TPROXY:
   *  the accepted socket's local address), checked by the engine against destinationRules. */
  target?: TargetAddress;
  /** Called with each connection's context once it is known (ctx.target set). */
  onAccepted?(ctx: ConnectionContext): void;
  /** The dialer's plan for that target (Dial.planInEngine). */
  dial: EngineDialPlan;
  /** relay.idleTimeoutMs. */
  idleTimeoutMs: number;
  /**
   * A front-end that speaks to its client first (HTTP): the engine accepts and admits, waits
   * for the client's first bytes, may issue the upstream connect they name, then hands the
   * client to JS (the listener calls handle) instead of relaying it. `target` is then unused.
   */
  handoff?: HandoffPlan;
}

/** EngineAcceptPlan.handoff: the engine connects early, from an absolute-form http:// request
 *  line to an IP literal the destination rules allow (a hand-over without it would cost more than
 *  Node's own accept: src/frontends/http/index.ts, engineAcceptPlan). */
export interface HandoffPlan {
  /** How long the engine waits for a client's first bytes before handing it over as it is. */
  waitMs: number;
  /** The engine's early connect, as the front-end's (Dial.adoptEarly). */
  adoptEarly(fd: number, target: TargetAddress, local: Endpoint): EarlyConnect | undefined;
  /** How long a client kept open by an exchange served in the engine waits there for its next
   *  request before it is closed as idle (HTTP: the listener's keepAliveTimeoutMs). */
  keptWaitMs: number;
  /** The engine serves a plain first request itself, from accept to its end, with no
   *  hand-over (native/src/acceptor.c, serve_at_accept); the rest are handed over. */
  serve?: HandoffServe;
}

/** HandoffPlan.serve: what the engine needs to serve an HTTP exchange from accept. */
export interface HandoffServe {
  /** The Via pseudonym both heads get (printable ASCII the engine writes byte for byte). */
  via: string;
  /** The listener's request-head limits (maxHeaderBytes, maxHeaderCount). */
  maxHeadBytes: number;
  maxFields: number;
  /** The engine's own upstream pool (native/src/upstream-park.c): how long an upstream these
   *  exchanges leave idle and reusable waits for the next one to its target (the listener's
   *  upstreamIdleTimeoutMs, as the JS pool's); 0: each exchange dials and closes its own. */
  upstreamIdleMs: number;
  /** The client's bytes for a response head the engine declines (or an upstream that failed
   *  within one), as for an exchange JS started (engine-exchange.ts). */
  respond(ctx: ConnectionContext, request: Buffer, bytes: Buffer | null, complete: boolean, failure: UpstreamFailure | undefined): HeadDecision;
  /** The request lines of one such connection: each exchange the engine reports, then the one
   *  it ended with. */
  requests(ctx: ConnectionContext): ExchangeRequests;
}

/** HandoffServe.requests. */
export interface ExchangeRequests {
  reported(report: EngineExchangeReport): void;
  ended(end: EngineExchangeEnd | undefined): void;
}
