/**
 * The transparent front-end: clients think they talk to the server; nftables/iptables
 * on this host steer their connections to our listener, and we recover where they
 * were going.
 *
 * - `tproxy` (recommended): the TPROXY target delivers the connection unchanged to a
 *   listener with IP_TRANSPARENT, so the accepted socket's *local* address is the
 *   original destination. Works for MPTCP clients, including their MP_JOIN subflows.
 * - `redirect`: REDIRECT/DNAT rewrites the destination to us; the original is read with
 *   SO_ORIGINAL_DST. The kernel answers that for TCP sockets only: on an MPTCP socket
 *   (net/mptcp/sockopt.c, mptcp_getsockopt_v4) it fails with EOPNOTSUPP, so MPTCP clients
 *   need `tproxy`; originalDestination() turns that into an error saying so, which is logged.
 *
 *   client ──MPTCP──▶ (nft tproxy) ──▶ [listener → transparent] ──TCP──▶ original destination
 */
import type { Socket } from 'node:net';
import type { TransparentListenerConfig } from '../../config/types.js';
import type { TargetAddress } from '../../core/errors.js';
import { unmapAddress } from '../../core/context.js';
import { originalDestination } from '../../mptcp/index.js';
import type { Frontend, FrontendDeps } from '../types.js';
import { tunnelTo } from '../tunnel.js';
import type { TunnelFrontendOptions } from '../tcp-forward/index.js';

/** Where the client was going; unmaps dual-stack IPv4 so the dialer sees a plain IPv4 target. */
function recoverDestination(socket: Socket, mode: TransparentListenerConfig['mode']): TargetAddress {
  const d = originalDestination(socket, mode);
  return { host: unmapAddress(d.address), port: d.port };
}

export function createTransparentFrontend(cfg: TransparentListenerConfig, deps: FrontendDeps, opts: TunnelFrontendOptions): Frontend {
  return {
    kind: 'transparent',
    async handle(socket, ctx) {
      // 1. original destination
      let target: TargetAddress;
      try {
        target = recoverDestination(socket, cfg.mode);
      } catch (err) {
        ctx.end = { by: 'proxy', error: err as Error };
        ctx.log.warn('transparent: no destination', { err });
        socket.resetAndDestroy();
        return;
      }
      // 2. dial (the access policy's "self" rule stops a connection aimed at us from looping) and relay
      await tunnelTo(socket, ctx, target, deps, opts.idleTimeoutMs);
    },
  };
}
