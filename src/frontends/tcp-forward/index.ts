/**
 * The fixed TCP forward front-end: every accepted connection is relayed to one
 * configured upstream. No handshake of its own, so it is the pure MPTCP→TCP converter.
 *
 *   client ──MPTCP──▶ [listener → tcp-forward] ──TCP/MPTCP──▶ cfg.to
 */
import type { TcpForwardListenerConfig } from '../../config/types.js';
import type { Frontend, FrontendDeps } from '../types.js';
import { tunnelTo, type TunnelFrontendOptions } from '../tunnel.js';

export function createTcpForwardFrontend(cfg: TcpForwardListenerConfig, deps: FrontendDeps, opts: TunnelFrontendOptions): Frontend {
  return {
    kind: 'tcp-forward',
    handle: (socket, ctx) => tunnelTo(socket, ctx, cfg.to, deps, opts.idleTimeoutMs),
    engineAccept() {
      // Only with the native engine dialing itself (relayConnecting), for an IP literal.
      if (deps.relayConnecting === undefined || deps.dial.planInEngine === undefined) return undefined;
      try {
        const dial = deps.dial.planInEngine(cfg.to);
        return dial === undefined ? undefined : { target: cfg.to, dial, idleTimeoutMs: opts.idleTimeoutMs };
      } catch {
        // A denied destination: JS accepts, and denies each connection with its log line.
        return undefined;
      }
    },
  };
}
