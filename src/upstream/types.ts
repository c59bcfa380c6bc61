/**
 * The dialer's contract, shared by every front-end. One implementation
 * (createDialer in dialer.ts) owns DNS, happy eyeballs, timeouts, MPTCP-or-TCP,
 * source binding and the destination access check; tests may inject their own.
 */
import type { Socket } from 'node:net';
import type { ConnectionContext } from '../core/context.js';
import type { TargetAddress } from '../core/errors.js';

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
export type Dial = (target: TargetAddress, ctx: ConnectionContext, opts?: DialOptions) => Promise<Socket>;
