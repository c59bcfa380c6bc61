/**
 * The access log: one line per proxied connection, written when it closes.
 * It subscribes to the conn:close channel, so the data path never calls it.
 */
import * as diagnosticsChannel from 'node:diagnostics_channel';
import { ChannelName, type ConnCloseMessage, type RequestDoneMessage } from './channels.js';
import { formatEndpoint } from './context.js';
import { formatTarget } from './errors.js';
import type { Logger } from './logger.js';

/**
 * Fields of one access-log line; exported so tests and docs agree on the names. Built by
 * assignment, in the order the line shows them: conditional spreads (`...(x ? {…} : {})`) made
 * V8 allocate and copy a small object each, once per connection.
 */
export function accessLogFields(msg: ConnCloseMessage): Record<string, unknown> {
  const { ctx } = msg;
  const err = msg.error as (Error & { code?: string }) | undefined;
  const out: Record<string, unknown> = {
    conn: ctx.id,
    listener: ctx.listener,
    frontend: ctx.frontend,
    client: formatEndpoint(ctx.downstream.remote),
    clientMptcp: ctx.downstream.mptcp,
  };
  if (ctx.downstreamSubflows !== undefined) out.clientSubflows = ctx.downstreamSubflows;
  if (ctx.downstreamPaths) out.clientPaths = ctx.downstreamPaths;
  if (ctx.target) out.target = formatTarget(ctx.target);
  if (ctx.upstream) {
    out.upstream = formatEndpoint(ctx.upstream.remote);
    out.upstreamMptcp = ctx.upstream.mptcp;
  }
  for (const key in ctx.access) out[key] = ctx.access[key];
  out.bytesUp = ctx.bytes.fromDownstream;
  out.bytesDown = ctx.bytes.fromUpstream;
  out.durationMs = Math.round(msg.durationMs * 10) / 10;
  out.endedBy = msg.endedBy;
  if (err) out.error = err.code ?? err.message;
  return out;
}

/** Fields of one per-request line (HTTP front-end): which connection, what, how it went. */
export function requestLogFields(msg: RequestDoneMessage): Record<string, unknown> {
  const { ctx } = msg;
  return {
    conn: ctx.id,
    listener: ctx.listener,
    client: formatEndpoint(ctx.downstream.remote),
    clientMptcp: ctx.downstream.mptcp,
    ...(msg.clientSubflows !== undefined ? { clientSubflows: msg.clientSubflows } : {}),
    method: msg.method,
    url: msg.url,
    status: msg.status,
    ...(ctx.upstream ? { upstream: formatEndpoint(ctx.upstream.remote), upstreamMptcp: ctx.upstream.mptcp } : {}),
    bytesUp: msg.fromDownstream,
    bytesDown: msg.fromUpstream,
    durationMs: Math.round(msg.durationMs * 10) / 10,
  };
}

/**
 * Starts writing access lines to `log`: "access" when a connection closes, and "request"
 * for each HTTP exchange. Returns the unsubscribe function.
 */
export function startAccessLog(log: Logger): () => void {
  const onClose = (message: unknown) => log.info('access', accessLogFields(message as ConnCloseMessage));
  const onRequest = (message: unknown) => log.info('request', requestLogFields(message as RequestDoneMessage));
  diagnosticsChannel.subscribe(ChannelName.connClose, onClose);
  diagnosticsChannel.subscribe(ChannelName.requestDone, onRequest);
  return () => {
    diagnosticsChannel.unsubscribe(ChannelName.connClose, onClose);
    diagnosticsChannel.unsubscribe(ChannelName.requestDone, onRequest);
  };
}
