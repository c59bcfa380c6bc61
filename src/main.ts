/**
 * The composition root: config → shared dependencies (access policy, dialer, relay) →
 * one front-end and one listener per configured listener → start / close.
 *
 * Everything that holds resources is started here and closed here, in reverse order.
 */
import type { Config, ListenerConfig } from './config/types.js';
import type { Logger } from './core/logger.js';
import { engineAccessLog, startAccessLog } from './core/access-log.js';
import { channels } from './core/channels.js';
import { createAccessPolicy } from './access/policy.js';
import { createConnectionLimiter, createSharedConnectionLimiter } from './access/connection-limiter.js';
import { loadNativeAcceptor, type EngineOnly } from './listeners/engine-acceptor.js';
import type { AccessPolicy } from './access/types.js';
import { createDialer } from './upstream/dialer.js';
import { selectBodyPump, selectConnectingRelay, selectRelay } from './relay/index.js';
import type { Frontend, FrontendDeps } from './frontends/types.js';
import { createTcpForwardFrontend } from './frontends/tcp-forward/index.js';
import { createHttpFrontend } from './frontends/http/index.js';
import { createSocks5Frontend } from './frontends/socks5/index.js';
import { createTransparentFrontend } from './frontends/transparent/index.js';
import { ProxyListener } from './listeners/listener.js';

export interface RunningProxy {
  readonly config: Config;
  readonly listeners: readonly ProxyListener[];
  /** Stops accepting, waits for live connections to end. */
  close(): Promise<void>;
  /** Stops accepting and cuts every live connection. */
  destroy(err?: Error): Promise<void>;
}

function createFrontend(cfg: ListenerConfig, deps: FrontendDeps, config: Config): Frontend {
  switch (cfg.type) {
    case 'http':
      return createHttpFrontend(cfg, deps, { idleTimeoutMs: config.relay.idleTimeoutMs });
    case 'socks5':
      return createSocks5Frontend(cfg, deps, { idleTimeoutMs: config.relay.idleTimeoutMs });
    case 'tcp-forward':
      return createTcpForwardFrontend(cfg, deps, { idleTimeoutMs: config.relay.idleTimeoutMs });
    case 'transparent':
      return createTransparentFrontend(cfg, deps, { idleTimeoutMs: config.relay.idleTimeoutMs });
  }
}

/**
 * Whether connections the engine accepts for a fixed target may be the engine's alone
 * (native/src/engine-only.c): only when nothing in the process watches connections one by one
 * (conn:open, conn:close, upstream:connected have no subscribers before the access log's), and
 * the engine can write the access log's lines (JSON) or the log is off. Then a short forwarded
 * connection costs the main thread nothing; JS writes the engine's lines in batches. Decided
 * here, at start: a subscriber that comes later sees only the connections JS handles.
 * MPTCP_PROXY_ENGINE_ONLY=off turns it off (A/B runs, tests of the JS path).
 */
function engineOnlyConnections(config: Config, log: Logger): EngineOnly | undefined {
  if (process.env.MPTCP_PROXY_ENGINE_ONLY === 'off') return undefined;
  if (channels.connOpen.hasSubscribers || channels.connClose.hasSubscribers || channels.upstreamConnected.hasSubscribers) return undefined;
  if (!config.log.access) return { lines: undefined };
  const lines = engineAccessLog(log);
  return lines === undefined ? undefined : { lines };
}

/** Builds everything and binds every listener; on any failure, closes what was started. */
export async function startProxy(config: Config, log: Logger): Promise<RunningProxy> {
  const listeners: ProxyListener[] = [];
  const access: AccessPolicy = await createAccessPolicy(config.access, {
    selfAddresses: () => listeners.map((l) => l.config.listen.host),
    // Port 0 listeners are only known once bound; before that there is nothing to protect.
    // A listener not bound yet counts with its configured port: the engine's acceptor checks
    // its fixed target once, at its listener's start, perhaps before a later listener binds.
    selfPorts: () => listeners.flatMap((l) => l.address()?.port ?? (l.config.listen.port || [])),
  });
  const engineOnly = engineOnlyConnections(config, log);
  const stopAccessLog = config.log.access ? startAccessLog(log) : () => {};
  const deps: FrontendDeps = {
    dial: createDialer(config.upstream, access, log),
    relay: selectRelay(config.relay.engine, {
      log,
      threads: config.relay.threads,
      capBuffers: {
        enabled: config.relay.capBuffers,
        minBytes: config.relay.capBuffersMinBytes,
        rateMbit: config.relay.capBuffersRateMbit,
        notsentBytes: config.relay.capBuffersNotsentBytes,
      },
    }),
    pump: selectBodyPump(config.relay.engine),
    relayConnecting: selectConnectingRelay(config.relay.engine),
    access,
    log,
  };
  // The engine accepts for front-ends that offer it (tcp-forward to an IP) when it also dials
  // (relayConnecting). Its per-client counts live in the addon; JS listeners count there too.
  const acceptor = deps.relayConnecting !== undefined ? loadNativeAcceptor() : undefined;
  const max = config.access.maxConnectionsPerClient;
  const limiter = acceptor !== undefined ? createSharedConnectionLimiter(max, acceptor) : createConnectionLimiter(max);
  for (const lc of config.listeners) {
    listeners.push(new ProxyListener(lc, { frontend: createFrontend(lc, deps, config), access, limiter, log, ...(acceptor ? { acceptor } : {}), ...(engineOnly ? { engineOnly } : {}) }));
  }
  try {
    for (const l of listeners) await l.start();
  } catch (err) {
    await Promise.all(listeners.map((l) => l.destroy()));
    stopAccessLog();
    throw err;
  }
  let closing: Promise<void> | undefined;
  return {
    config,
    listeners,
    close() {
      closing ??= Promise.all(listeners.map((l) => l.close())).then(stopAccessLog);
      return closing;
    },
    async destroy(err?: Error) {
      await Promise.all(listeners.map((l) => l.destroy(err)));
      stopAccessLog();
    },
  };
}
