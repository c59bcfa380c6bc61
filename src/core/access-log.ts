/**
 * The access log: one line per proxied connection, written when it closes.
 * It subscribes to the conn:close channel, so the data path never calls it.
 */
import * as diagnosticsChannel from 'node:diagnostics_channel';
import { ChannelName, type ConnCloseMessage, type RequestDoneMessage } from './channels.js';
import { formatEndpoint } from './context.js';
import { formatTarget } from './errors.js';
import type { Logger } from './logger.js';

/** Fields of one access-log line; exported so tests and docs agree on the names. */
export function accessLogFields(msg: ConnCloseMessage): Record<string, unknown> {
  const { ctx } = msg;
  const err = msg.error as (Error & { code?: string }) | undefined;
  return {
    conn: ctx.id,
    listener: ctx.listener,
    frontend: ctx.frontend,
    client: formatEndpoint(ctx.downstream.remote),
    clientMptcp: ctx.downstream.mptcp,
    ...(ctx.downstreamSubflows !== undefined ? { clientSubflows: ctx.downstreamSubflows } : {}),
    ...(ctx.downstreamPaths ? { clientPaths: ctx.downstreamPaths } : {}),
    ...(ctx.target ? { target: formatTarget(ctx.target) } : {}),
    ...(ctx.upstream ? { upstream: formatEndpoint(ctx.upstream.remote), upstreamMptcp: ctx.upstream.mptcp } : {}),
    ...ctx.access,
    bytesUp: ctx.bytes.fromDownstream,
    bytesDown: ctx.bytes.fromUpstream,
    durationMs: Math.round(msg.durationMs * 10) / 10,
    endedBy: msg.endedBy,
    ...(err ? { error: err.code ?? err.message } : {}),
  };
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
