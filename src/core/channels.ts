/**
 * Named diagnostics channels. The data path publishes; the access log, metrics,
 * registry and dashboard subscribe — so the hot path imports none of them
 * (the pattern of undici's lib/core/diagnostics.js).
 *
 * Publishing to a channel without subscribers costs one property check.
 *
 * Subscribe before the proxy starts. When nothing but the access log listens to conn:open,
 * conn:close and upstream:connected at start (src/main.ts, engineOnlyConnections), a
 * tcp-forward listener's connections are the native engine's alone (native/src/engine-only.c):
 * they publish nothing — the engine writes their access lines — except one whose connect
 * fails, which JS reports as any other. A subscriber that comes later sees the rest only.
 */
import * as diagnosticsChannel from 'node:diagnostics_channel';
import type { ConnectionContext } from './context.js';
import type { ProxyError } from './errors.js';

export const ChannelName = {
  connOpen: 'mptcp-proxy:conn:open',
  connClose: 'mptcp-proxy:conn:close',
  dialError: 'mptcp-proxy:dial:error',
  upstreamConnected: 'mptcp-proxy:upstream:connected',
  requestDone: 'mptcp-proxy:request:done',
} as const;

export interface ConnOpenMessage {
  ctx: ConnectionContext;
}

/** Why a connection ended, from the relay's or the front-end's point of view. */
export interface ConnCloseMessage {
  ctx: ConnectionContext;
  durationMs: number;
  /** Which side finished first ('downstream' = the client closed or errored first). */
  endedBy: 'downstream' | 'upstream' | 'proxy';
  error?: ProxyError | Error;
}

export interface DialErrorMessage {
  ctx: ConnectionContext;
  error: ProxyError;
}

export interface UpstreamConnectedMessage {
  ctx: ConnectionContext;
  connectMs: number;
}

/** One HTTP request/response exchange finished (the HTTP front-end's per-request account). */
export interface RequestDoneMessage {
  ctx: ConnectionContext;
  /** The client's MPTCP subflows when the exchange ended (undefined for plain TCP). */
  clientSubflows: number | undefined;
  method: string | undefined;
  url: string | undefined;
  status: number | undefined;
  durationMs: number;
  /** Bytes of this exchange read from the client (head + body) and from the server. */
  fromDownstream: number;
  fromUpstream: number;
}

export const channels = {
  connOpen: diagnosticsChannel.channel(ChannelName.connOpen),
  connClose: diagnosticsChannel.channel(ChannelName.connClose),
  dialError: diagnosticsChannel.channel(ChannelName.dialError),
  upstreamConnected: diagnosticsChannel.channel(ChannelName.upstreamConnected),
  requestDone: diagnosticsChannel.channel(ChannelName.requestDone),
};

export function publishConnOpen(msg: ConnOpenMessage): void {
  if (channels.connOpen.hasSubscribers) channels.connOpen.publish(msg);
}
export function publishConnClose(msg: ConnCloseMessage): void {
  if (channels.connClose.hasSubscribers) channels.connClose.publish(msg);
}
/** conn:close for a connection whose account is complete: its duration and ctx.end. */
export function publishConnEnded(ctx: ConnectionContext): void {
  if (!channels.connClose.hasSubscribers) return;
  // Built by assignment (a conditional spread allocates and copies an object in V8).
  const msg: ConnCloseMessage = { ctx, durationMs: performance.now() - ctx.startedAt, endedBy: ctx.end?.by ?? 'downstream' };
  if (ctx.end?.error) msg.error = ctx.end.error;
  channels.connClose.publish(msg);
}
export function publishDialError(msg: DialErrorMessage): void {
  if (channels.dialError.hasSubscribers) channels.dialError.publish(msg);
}
export function publishUpstreamConnected(msg: UpstreamConnectedMessage): void {
  if (channels.upstreamConnected.hasSubscribers) channels.upstreamConnected.publish(msg);
}
export function publishRequestDone(msg: RequestDoneMessage): void {
  if (channels.requestDone.hasSubscribers) channels.requestDone.publish(msg);
}
