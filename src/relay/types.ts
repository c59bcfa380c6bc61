/**
 * The relay's contract. Once handed both sockets, the relay owns them: nothing else
 * reads or writes them, and it resolves with a summary when both are closed. This
 * narrow interface is what lets a native loop replace the JS one.
 */
import type { Socket } from 'node:net';
import type { ConnectionContext } from '../core/context.js';

export interface RelayOptions {
  /** Bytes already read from the downstream (client) that belong to the upstream, e.g.
   *  what followed a CONNECT request in the same packet. Written upstream first. */
  downstreamHead?: Buffer;
  /** Bytes to write to the downstream before relaying (rarely needed). */
  upstreamHead?: Buffer;
  /** Close both sides after this long with no bytes in either direction; 0 = never. */
  idleTimeoutMs?: number;
}

export interface RelaySummary {
  /** Bytes read from the client and written to the server. */
  fromDownstream: number;
  /** Bytes read from the server and written to the client. */
  fromUpstream: number;
  /** Which side ended first: its EOF, error, or our idle timeout ('proxy'). */
  endedBy: 'downstream' | 'upstream' | 'proxy';
  /** The error that ended the relay, if it was not a clean close. */
  error?: Error;
  durationMs: number;
}

export type Relay = (downstream: Socket, upstream: Socket, ctx: ConnectionContext, opts?: RelayOptions) => Promise<RelaySummary>;
