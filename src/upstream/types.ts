/**
 * The dialer's contract, shared by every front-end. One implementation
 * (createDialer in dialer.ts) owns DNS, happy eyeballs, timeouts, MPTCP-or-TCP,
 * source binding and the destination access check; tests may inject their own.
 */
import type { Socket } from 'node:net';
import type { ConnectionContext, Endpoint } from '../core/context.js';
import type { AccessDeniedError, TargetAddress, UpstreamError } from '../core/errors.js';

/** `off`: plain TCP. `auto`: MPTCP socket (the kernel falls back to TCP in the same
 *  handshake when the server lacks MPTCP); TCP if this host cannot create one.
 *  `on`: MPTCP socket or fail. */
export type UpstreamMptcpMode = 'off' | 'auto' | 'on';

export interface DialOptions {
  /** Aborts DNS and connect (e.g. the client went away). */
  signal?: AbortSignal;
}

/**
 * Resolve, check, connect. Resolves with a connected socket whose facts are
 * stored in ctx.upstream; rejects with UpstreamError (refused, unreachable,
 * timeout, DNS) or AccessDeniedError (destination denied after resolution).
 */
export interface Dial {
  (target: TargetAddress, ctx: ConnectionContext, opts?: DialOptions): Promise<Socket>;
  /**
   * The same dial, started synchronously for someone else to finish (the native relay engine):
   * access check, socket, bind, non-blocking connect(2), now. Undefined when this target
   * cannot go that way (a name: DNS and happy eyeballs need the async dial; bindInterface; no
   * addon) — then use the dial itself. Throws, after publishing dial:error, what the dial would
   * reject with for a denied destination or a connect(2) that fails at once.
   */
  connectNow?(target: TargetAddress, ctx: ConnectionContext): PendingConnect | undefined;
  /**
   * The same dial for a caller whose first act is to write `first` (an HTTP request head): for an
   * IP literal, connect(2) is issued synchronously and `first` is queued on the still-connecting
   * socket, so it leaves when the handshake ends with no JS in between. Resolves, like the dial,
   * with the connected socket and its facts in ctx.upstream — once `first` is written; rejects
   * as the dial would (a refused handshake fails that write: a connect error). Undefined where
   * connectNow is (a name, bindInterface, no addon): then dial, and write.
   */
  sendFirst?(target: TargetAddress, ctx: ConnectionContext, first: Buffer, opts?: DialOptions): Promise<Socket> | undefined;
  /**
   * The connect of a sendFirst begun before the caller has its bytes (the HTTP front-end, from a
   * peek at a new client's request line, before the request is parsed): for an IP literal the
   * access check, socket, bind and connect(2) run now, and EarlyConnect.send later writes the
   * bytes as sendFirst does, the connect timeout counting from now. Undefined, quietly (nothing
   * is published), where sendFirst is, and for a denied destination or a connect(2) that fails
   * at once: the request's own dial will meet that and report it.
   */
  connectEarly?(target: TargetAddress): EarlyConnect | undefined;
  /**
   * An early connect the native engine issued (an HTTP listener it accepts on): `fd` is
   * connecting to `target` from `local`, and is now the caller's, as connectEarly's would be.
   * Undefined without the addon (then the caller closes fd).
   */
  adoptEarly?(fd: number, target: TargetAddress, local: Endpoint): EarlyConnect | undefined;
  /**
   * The same dial, for every connection of a listener whose target is fixed, done by someone
   * else entirely (the native engine's acceptor): the access check runs once, here, and the
   * plan says what to connect to and how. Undefined when `target` cannot go that way (as for
   * connectNow); throws AccessDeniedError for a denied destination.
   */
  planInEngine?(target: TargetAddress): EngineDialPlan | undefined;
  /**
   * The same for a listener whose targets differ per connection and are IP literals (a
   * transparent listener: where each client was going), checked by the engine itself against
   * the access policy's destinationRules. Undefined when the engine cannot dial (bindInterface).
   */
  planInEngineAnyTarget?(): EngineDialPlan | undefined;
}

/** How to dial one fixed target natively, and the dialer's bookkeeping around it (Dial.planInEngine). */
export interface EngineDialPlan {
  /** IP literal and port; undefined for per-connection targets (planInEngineAnyTarget). */
  readonly address?: string;
  readonly port?: number;
  /** Open IPPROTO_MPTCP sockets (upstream.mptcp and the kernel). */
  readonly mptcp: boolean;
  /** upstream.bindAddress, if set. */
  readonly bindAddress?: string;
  /** upstream.connectTimeoutMs. */
  readonly connectTimeoutMs: number;
  /** ctx.target's handshake completed: records ctx.upstream and publishes upstream:connected. */
  connected(ctx: ConnectionContext, connectMs: number, mptcp: boolean, local: Endpoint): void;
  /** An idle connection to ctx.target from the engine's pool took the dial's place: records
   *  ctx.upstream only, as a session taking a pooled connection does (nothing was connected). */
  reused(ctx: ConnectionContext, mptcp: boolean, local: Endpoint): void;
  /** ctx.target's dial failed or timed out: publishes dial:error, returns the dial's error. */
  failed(ctx: ConnectionContext, err: unknown, timedOut: boolean): UpstreamError;
  /** The engine's destination check refused ctx.target by `engineRule`: the policy's own
   *  decision, as the dial's error (AccessDeniedError naming the rule), published as dial:error. */
  denied(ctx: ConnectionContext, engineRule: string): AccessDeniedError;
}

/** An upstream connect in progress, not yet claimed by a request (Dial.connectEarly). */
export interface EarlyConnect {
  readonly target: TargetAddress;
  /** performance.now() when connect(2) was issued. */
  readonly startedAt: number;
  /** Dial.sendFirst on this connect: once. */
  send(ctx: ConnectionContext, first: Buffer, opts?: DialOptions): Promise<Socket>;
  /** Closes it unused; a no-op once sent or cancelled. */
  cancel(): void;
  /**
   * The connect itself, for the native engine to complete (an HTTP exchange served in the
   * engine): the fd is the caller's from now, and the timeout what is left of the dial's.
   * Undefined once sent on or cancelled.
   */
  takePending?(ctx: ConnectionContext): PendingConnect | undefined;
}

/** An upstream connect in progress on a raw fd (Dial.connectNow). */
export interface PendingConnect {
  /** Non-blocking socket, connect(2) issued. The caller owns it: hand it on, or close(). */
  readonly fd: number;
  /** upstream.connectTimeoutMs: how long whoever completes the connect may wait. */
  readonly timeoutMs: number;
  /** The socket is IPPROTO_TCP (upstream MPTCP off or unavailable): it never runs MPTCP, so
   *  its completer need not ask the kernel. */
  readonly plainTcp: boolean;
  /** The handshake completed: records ctx.upstream and publishes upstream:connected.
   *  connectMs: from connect(2) to completion as its completer measured it. */
  connected(connectMs: number, mptcp: boolean): void;
  /** The connect failed (a system error from SO_ERROR) or timed out: publishes dial:error and
   *  returns the error the dial would have rejected with. */
  failed(err: unknown, timedOut: boolean): UpstreamError;
  /** Closes the fd (the connect could not be handed on). */
  close(): void;
}
