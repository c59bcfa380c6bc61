/**
 * The transparent front-end: clients think they talk to the server; nftables/iptables
 * on this host steer their connections to our listener, and we recover where they
 * were going.
 *
 * - `tproxy` (recommended): the TPROXY target delivers the connection unchanged to a
 *   listener with IP_TRANSPARENT, so the accepted socket's *local* address is the
 *   original destination. Works for MPTCP clients, including their MP_JOIN subflows —
 *   if the listener's port is the intercepted port: the kernel refuses an MP_JOIN that
 *   reaches a listener on a port other than the connection's, unless that port was
 *   announced with ADD_ADDR (net/mptcp/subflow.c subflow_check_req, MIB
 *   MismatchPortSynRx). The client then keeps working on its first subflow only, so we
 *   warn (once per listener) naming the port to listen on; docs/transparent.md.
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
import { unmapAddress, type ConnectionContext } from '../../core/context.js';
import { originalDestination } from '../../mptcp/index.js';
import type { Frontend, FrontendDeps } from '../types.js';
import { tunnelTo, type TunnelFrontendOptions } from '../tunnel.js';

/** Where the client was going; unmaps dual-stack IPv4 so the dialer sees a plain IPv4 target. */
function recoverDestination(socket: Socket, mode: TransparentListenerConfig['mode']): TargetAddress {
  const d = originalDestination(socket, mode);
  return { host: unmapAddress(d.address), port: d.port };
}

export function createTransparentFrontend(cfg: TransparentListenerConfig, deps: FrontendDeps, opts: TunnelFrontendOptions): Frontend {
  let warnedPortMismatch = false;
  // The accepted socket's local port is the intercepted one, so compare with the configured
  // listen port (0 = chosen at bind: unknown here, no warning).
  const warnPortMismatch = (ctx: ConnectionContext, target: TargetAddress): void => {
    if (cfg.mode !== 'tproxy' || !ctx.downstream.mptcp || warnedPortMismatch || cfg.listen.port === 0 || target.port === cfg.listen.port) return;
    warnedPortMismatch = true;
    ctx.log.warn('transparent: MPTCP client intercepted to a listener on another port', {
      listenerPort: cfg.listen.port,
      destinationPort: target.port,
      hint: `the kernel refuses the client's extra subflows (MP_JOIN) on a listener whose port differs from the connection's; add a transparent listener on port ${target.port} and a rule "tproxy to :${target.port}"`,
    });
  };
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
      warnPortMismatch(ctx, target);
      // 2. dial (the access policy's "self" rule stops a connection aimed at us from looping) and relay
      await tunnelTo(socket, ctx, target, deps, opts.idleTimeoutMs);
    },
    engineAccept() {
      // TPROXY only: the original destination is the accepted socket's local address, which the
      // engine reads itself (REDIRECT needs SO_ORIGINAL_DST, which MPTCP sockets do not answer).
      if (cfg.mode !== 'tproxy' || deps.relayConnecting === undefined || deps.dial.planInEngineAnyTarget === undefined) return undefined;
      const dial = deps.dial.planInEngineAnyTarget();
      return dial === undefined ? undefined : { dial, idleTimeoutMs: opts.idleTimeoutMs, onAccepted: (ctx) => warnPortMismatch(ctx, ctx.target!) };
    },
  };
}
