/**
 * The shared tail of the front-ends without a protocol reply of their own (tcp-forward,
 * transparent): dial the target, then relay until both sides are done.
 *
 * Two ways through it:
 * - in the engine (FrontendDeps.relayConnecting present, i.e. the native relay engine, and the
 *   dialer's connectNow takes the target: an IP literal, no bindInterface): in the accept path,
 *   synchronously, access check → socket → connect(2) → hand the client and the connecting
 *   upstream to the engine, which completes the connect and starts relaying with no JS in
 *   between. That is most of a forward's SYN → upstream SYN and upstream SYN-ACK → first byte
 *   latency (measured: ≈90 µs of JS before connect(2), and a main-thread wake-up, the dialer's
 *   completion and the relay handover after it).
 * - otherwise the async dial (DNS, happy eyeballs, Node sockets), then deps.relay.
 * Both publish the same channels and leave the same facts in ctx.
 */
import type { Socket } from 'node:net';
import type { ConnectionContext } from '../core/context.js';
import { formatTarget, type TargetAddress } from '../core/errors.js';
import type { PendingConnect } from '../upstream/types.js';
import type { FrontendDeps } from './types.js';

/** Options of the front-ends built on tunnelTo (tcp-forward, transparent). */
export interface TunnelFrontendOptions {
  /** Relay idle timeout (relay.idleTimeoutMs). */
  idleTimeoutMs: number;
}

export async function tunnelTo(socket: Socket, ctx: ConnectionContext, target: TargetAddress, deps: FrontendDeps, idleTimeoutMs: number): Promise<void> {
  ctx.target = target;
  // 1.–2. dial and relay in the engine, when it can take this connection (runs synchronously
  //    up to the hand-over: an async function runs until its first await)
  const inEngine = tunnelInEngine(socket, ctx, target, deps, idleTimeoutMs);
  if (inEngine !== undefined) return inEngine;
  // 1. dial — give up if the client leaves while we are still connecting
  const ac = new AbortController();
  const onEarlyClose = () => ac.abort();
  socket.once('close', onEarlyClose);
  socket.on('error', onEarlyClose);
  let upstream: Socket;
  try {
    upstream = await deps.dial(target, ctx, { signal: ac.signal });
  } catch (err) {
    dialFailed(ctx, target, err);
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

/** The dial's failure as the connection's end, said once in the log. (Shared with the engine's
 *  acceptor, which dials for tcp-forward and transparent listeners itself.) */
export function dialFailed(ctx: ConnectionContext, target: TargetAddress, err: unknown): void {
  ctx.end = { by: 'proxy', error: err as Error };
  ctx.log.warn('upstream dial failed', { target: formatTarget(target), err });
}

/**
 * The engine's way (see the header), or undefined when it does not apply and the async dial
 * must run. A denied destination or a connect(2) failing at once ends here like a failed dial;
 * a connect failing later is reported by the engine (which resets the client itself).
 */
function tunnelInEngine(socket: Socket, ctx: ConnectionContext, target: TargetAddress, deps: FrontendDeps, idleTimeoutMs: number): Promise<void> | undefined {
  const engine = deps.relayConnecting;
  if (engine === undefined || deps.dial.connectNow === undefined || !engine.accepts(socket)) return undefined;
  let pending: PendingConnect | undefined;
  try {
    pending = deps.dial.connectNow(target, ctx);
  } catch (err) {
    dialFailed(ctx, target, err);
    socket.resetAndDestroy();
    return Promise.resolve();
  }
  if (pending === undefined) return undefined;
  const up = pending;
  try {
    // The callbacks see ctx, target and the pending dial, never the sockets (idle memory).
    return engine
      .start(
        socket,
        {
          fd: up.fd,
          timeoutMs: up.timeoutMs,
          onConnected: (c) => up.connected(c.connectMs, c.mptcp),
          onFailed: (err, timedOut) => dialFailed(ctx, target, up.failed(err, timedOut)),
        },
        ctx,
        { idleTimeoutMs },
      )
      .then(() => undefined);
  } catch (err) {
    // The engine refused (it could not start, another thread's environment...): the client is
    // untouched, so the async dial takes over. The abandoned connect may reach the server.
    up.close();
    ctx.log.warn('native relay refused the connection; dialing through JS', { err });
    return undefined;
  }
}
