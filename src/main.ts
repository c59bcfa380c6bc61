/**
 * The composition root: config → shared dependencies (access policy, dialer, relay) →
 * one front-end and one listener per configured listener → start / close.
 *
 * Everything that holds resources is started here and closed here, in reverse order.
 */
import type { Config, ListenerConfig } from './config/types.js';
import type { Logger } from './core/logger.js';
import { startAccessLog } from './core/access-log.js';
import { createAccessPolicy } from './access/policy.js';
import { createConnectionLimiter, createSharedConnectionLimiter } from './access/connection-limiter.js';
import { loadNativeAcceptor } from './listeners/engine-acceptor.js';
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
    listeners.push(new ProxyListener(lc, { frontend: createFrontend(lc, deps, config), access, limiter, log, ...(acceptor ? { acceptor } : {}) }));
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
