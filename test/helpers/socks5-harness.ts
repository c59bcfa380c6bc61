/**
 * A SOCKS5 proxy for integration tests, built from the real parts: the access policy,
 * the listener, the dialer and the relay, on 127.0.0.1 port 0. Tests may inject a Dial
 * (e.g. one that times out) in place of the real dialer.
 *
 * Also a small HTTP origin server that says which port each request came from, so a test
 * can check that the SOCKS5 reply's BND.PORT is the upstream socket's local port.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { AccessConfig, Socks5ListenerConfig, UpstreamConfig } from '../../src/config/types.js';
import { createLogger, type Logger } from '../../src/core/logger.js';
import { createAccessPolicy, DEFAULT_ALLOWED_CLIENTS, DEFAULT_DENIED_DESTINATIONS } from '../../src/access/policy.js';
import { createConnectionLimiter } from '../../src/access/connection-limiter.js';
import { createSocks5Frontend } from '../../src/frontends/socks5/index.js';
import { ProxyListener } from '../../src/listeners/listener.js';
import { createDialer } from '../../src/upstream/dialer.js';
import { relayBothWays } from '../../src/relay/relay.js';
import type { Dial } from '../../src/upstream/types.js';

export interface LogRecord {
  level: string;
  msg: string;
  [field: string]: unknown;
}

export interface Socks5TestProxy {
  host: string;
  port: number;
  /** Every log line the proxy wrote, parsed. */
  logs: LogRecord[];
  close(): Promise<void>;
}

export interface Socks5TestProxyOptions {
  access?: Partial<AccessConfig>;
  upstream?: Partial<UpstreamConfig>;
  handshakeTimeoutMs?: number;
  /** Replaces the real dialer (built with the same policy) for this proxy. */
  dial?: (real: Dial) => Dial;
}

export async function startSocks5Proxy(opts: Socks5TestProxyOptions = {}): Promise<Socks5TestProxy> {
  const logs: LogRecord[] = [];
  const log: Logger = createLogger({
    level: 'debug',
    format: 'json',
    sink: { write: (line) => logs.push(JSON.parse(line) as LogRecord) },
  });
  const cfg: Socks5ListenerConfig = {
    name: 'socks5-test',
    type: 'socks5',
    listen: { host: '127.0.0.1', port: 0 },
    mptcp: 'auto',
    backlog: 64,
    reusePort: false,
    handshakeTimeoutMs: opts.handshakeTimeoutMs ?? 5000,
  };
  let listener: ProxyListener | undefined;
  const access = await createAccessPolicy(
    {
      allowClients: [...DEFAULT_ALLOWED_CLIENTS],
      denyDestinations: [...DEFAULT_DENIED_DESTINATIONS],
      allowDestinations: [],
      denyPorts: [],
      allowPorts: [],
      maxConnectionsPerClient: 0,
      ...opts.access,
    },
    {
      selfAddresses: () => (listener ? [listener.config.listen.host] : []),
      selfPorts: () => (listener?.address() ? [listener.address()!.port] : []),
    },
  );
  const upstream: UpstreamConfig = { mptcp: 'auto', connectTimeoutMs: 5000, dnsTimeoutMs: 5000, happyEyeballsDelayMs: 250, ...opts.upstream };
  const realDial = createDialer(upstream, access, log);
  const dial = opts.dial ? opts.dial(realDial) : realDial;
  const frontend = createSocks5Frontend(cfg, { dial, relay: relayBothWays, access, log }, { idleTimeoutMs: 30_000 });
  listener = new ProxyListener(cfg, { frontend, access, limiter: createConnectionLimiter(0), log });
  await listener.start();
  const bound = listener.address()!;
  return {
    host: '127.0.0.1',
    port: bound.port,
    logs,
    close: () => listener!.destroy(),
  };
}

export interface HttpOrigin {
  port: number;
  /** Remote ports of the connections that reached the origin. */
  peerPorts: number[];
  close(): Promise<void>;
}

/** Answers every request with "hello from origin <path>"; listens on :: (dual stack) when it can. */
export async function startHttpOrigin(): Promise<HttpOrigin> {
  const peerPorts: number[] = [];
  const server: Server = createServer((req, res) => {
    peerPorts.push(req.socket.remotePort ?? 0);
    res.setHeader('content-type', 'text/plain');
    res.end(`hello from origin ${req.url ?? ''}`);
  });
  server.keepAliveTimeout = 100;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host: '::', port: 0, ipv6Only: false }, () => resolve());
  }).catch(
    () =>
      new Promise<void>((resolve) => {
        server.listen({ host: '127.0.0.1', port: 0 }, () => resolve());
      }),
  );
  return {
    port: (server.address() as AddressInfo).port,
    peerPorts,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
