/**
 * The fixed TCP forward front-end: every accepted connection is relayed to one
 * configured upstream. No handshake of its own, so it is the pure MPTCP→TCP converter.
 *
 *   client ──MPTCP──▶ [listener → tcp-forward] ──TCP/MPTCP──▶ cfg.to
 */
import type { Socket } from 'node:net';
import type { TcpForwardListenerConfig } from '../../config/types.js';
import type { ConnectionContext } from '../../core/context.js';
import { formatTarget } from '../../core/errors.js';
import type { Frontend, FrontendDeps } from '../types.js';

export interface TcpForwardOptions {
  /** Relay idle timeout (relay.idleTimeoutMs). */
  idleTimeoutMs: number;
}

export function createTcpForwardFrontend(cfg: TcpForwardListenerConfig, deps: FrontendDeps, opts: TcpForwardOptions): Frontend {
  return {
    kind: 'tcp-forward',
    async handle(socket: Socket, ctx: ConnectionContext): Promise<void> {
      ctx.target = cfg.to;
      // 1. dial — give up if the client leaves while we are still connecting
      const ac = new AbortController();
      const onEarlyClose = () => ac.abort();
      socket.once('close', onEarlyClose);
      socket.on('error', onEarlyClose);
      let upstream: Socket;
      try {
        upstream = await deps.dial(cfg.to, ctx, { signal: ac.signal });
      } catch (err) {
        ctx.end = { by: 'proxy', error: err as Error };
        ctx.log.warn('upstream dial failed', { target: formatTarget(cfg.to), err });
        // Nothing to reply in a protocol without replies: a reset tells the client at once.
        socket.resetAndDestroy();
        return;
      } finally {
        socket.off('close', onEarlyClose);
        socket.off('error', onEarlyClose);
      }
      // 2. relay until both sides are done
      await deps.relay(socket, upstream, ctx, { idleTimeoutMs: opts.idleTimeoutMs });
    },
  };
}
