/**
 * The shared tail of the front-ends without a protocol reply of their own (tcp-forward,
 * transparent): dial the target, then relay until both sides are done.
 */
import type { Socket } from 'node:net';
import type { ConnectionContext } from '../core/context.js';
import { formatTarget, type TargetAddress } from '../core/errors.js';
import type { FrontendDeps } from './types.js';

/** Options of the front-ends built on tunnelTo (tcp-forward, transparent). */
export interface TunnelFrontendOptions {
  /** Relay idle timeout (relay.idleTimeoutMs). */
  idleTimeoutMs: number;
}

export async function tunnelTo(socket: Socket, ctx: ConnectionContext, target: TargetAddress, deps: FrontendDeps, idleTimeoutMs: number): Promise<void> {
  ctx.target = target;
  // 1. dial — give up if the client leaves while we are still connecting
  const ac = new AbortController();
  const onEarlyClose = () => ac.abort();
  socket.once('close', onEarlyClose);
  socket.on('error', onEarlyClose);
  let upstream: Socket;
  try {
    upstream = await deps.dial(target, ctx, { signal: ac.signal });
  } catch (err) {
    ctx.end = { by: 'proxy', error: err as Error };
    ctx.log.warn('upstream dial failed', { target: formatTarget(target), err });
    // No protocol reply exists here: a reset tells the client at once.
    socket.resetAndDestroy();
    return;
  } finally {
    socket.off('close', onEarlyClose);
    socket.off('error', onEarlyClose);
  }
  // 2. relay until both sides are done. Returned rather than awaited, so this frame (and its
  //    references to both sockets) ends now: the native relay destroys the sockets at the
  //    handover, and nothing should keep them alive for the rest of the connection.
  return deps.relay(socket, upstream, ctx, { idleTimeoutMs }).then(() => undefined);
}
