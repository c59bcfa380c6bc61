/**
 * Test harness for the HTTP front-end: the real front-end, the real dialer, the real relay and
 * the real access policy behind a plain loopback listener on port 0; origin servers; a curl
 * runner; and raw-socket helpers for the malformed cases.
 *
 * The relay engine is the one the proxy would run with (relay.engine's default, native,
 * overridden by MPTCP_PROXY_RELAY=native|js as src/cli/main.ts applies it), and the relay and
 * body pump are chosen from it by the same functions as src/main.ts (selectRelay,
 * selectBodyPump): so with the default every HTTP suite also runs large bodies through the
 * native pump, and MPTCP_PROXY_RELAY=js runs them through the JS loops. `engine` forces one.
 */
import { execFile } from 'node:child_process';
import { once } from 'node:events';
import http from 'node:http';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { createAccessPolicy } from '../../src/access/policy.js';
import type { AccessPolicy } from '../../src/access/types.js';
import type { AccessConfig, HttpListenerConfig } from '../../src/config/types.js';
import { createConnectionContext } from '../../src/core/context.js';
import type { ConnectionContext } from '../../src/core/context.js';
import { createLogger } from '../../src/core/logger.js';
import type { Logger } from '../../src/core/logger.js';
import { createHttpFrontend } from '../../src/frontends/http/index.js';
import type { Frontend } from '../../src/frontends/types.js';
import { relayDefaults } from '../../src/config/defaults.js';
import { selectBodyPump, selectRelay, type RelayEngine } from '../../src/relay/index.js';
import { createDialer } from '../../src/upstream/dialer.js';
import type { Dial, EarlyConnect } from '../../src/upstream/types.js';
import { peekReceived } from '../../src/mptcp/index.js';
import { setTimeout as sleep } from 'node:timers/promises';

export interface HttpProxyHarness {
  port: number;
  url: string;
  /** Every connection's context, in accept order. */
  contexts: ConnectionContext[];
  /** Log lines (JSON), for asserting that errors were logged with code and target. */
  logs: string[];
  /** Resolves when every handle() promise so far has resolved. */
  settled(): Promise<void>;
  /** The front-end (its close() empties the idle upstream pool). */
  frontend: Frontend;
  /** The relay engine the front-end was built for. */
  engine: RelayEngine;
  /** What preconnect returned, per connection in accept order (undefined: no early connect). */
  early: Array<EarlyConnect | undefined>;
  /** True when the front-end has the native body pump (engine native and the addon has it). */
  pumped: boolean;
  close(): Promise<void>;
}

export interface HttpProxyOptions {
  cfg?: Partial<HttpListenerConfig>;
  access?: AccessPolicy;
  accessConfig?: Partial<AccessConfig>;
  /** Wraps or replaces the real dialer. */
  dial?: (real: Dial) => Dial;
  /** relay.idleTimeoutMs for the front-end (upstream silence → 504); default none. */
  idleTimeoutMs?: number;
  /** Forces a relay engine; default testRelayEngine() (what the proxy itself would run). */
  engine?: RelayEngine;
  /**
   * Frontend.preconnect is called as the listener calls it, at accept, where the request line
   * may or may not have arrived yet. 'after-request-line': each accept first waits (≤ 2 s) until
   * the client's request line is in the socket, so that preconnect sees it every time.
   */
  preconnect?: 'at-accept' | 'after-request-line';
}

/**
 * The relay engine the proxy would run with in this environment: MPTCP_PROXY_RELAY when set
 * (src/cli/main.ts applyEnvironment puts it over relay.engine in any config), else
 * relay.engine's default. Anything else than native|js is a mistake in the test run, as the
 * config schema would reject it.
 */
export function testRelayEngine(): RelayEngine {
  const env = process.env.MPTCP_PROXY_RELAY;
  if (env === undefined || env === '') return relayDefaults.engine;
  if (env === 'native' || env === 'js') return env;
  throw new Error(`MPTCP_PROXY_RELAY must be native or js, got ${JSON.stringify(env)}`);
}

export function testAccessConfig(over: Partial<AccessConfig> = {}): AccessConfig {
  return {
    allowClients: ['127.0.0.0/8', '::1/128'],
    denyDestinations: [],
    allowDestinations: [],
    denyPorts: [],
    allowPorts: [],
    maxConnectionsPerClient: 0,
    ...over,
  };
}

/** An AccessPolicy that allows every destination and checks one user name and password. */
export function basicAuthPolicy(user: string, password: string): AccessPolicy {
  return {
    authRequired: true,
    admitClient: () => ({ allowed: true, rule: 'test' }),
    checkDestination: () => ({ allowed: true, rule: 'test' }),
    verifyCredentials: async (u, p) => u === user && p === password,
  };
}

/** The HTTP listener config the loopback tests use, with overrides. */
export function testHttpListenerConfig(over: Partial<HttpListenerConfig> = {}): HttpListenerConfig {
  return {
    name: 'http-test',
    type: 'http',
    listen: { host: '127.0.0.1', port: 0 },
    mptcp: 'off',
    backlog: 128,
    reusePort: false,
    handshakeTimeoutMs: 5000,
    maxHeaderBytes: 8192,
    maxHeaderCount: 50,
    keepAliveTimeoutMs: 5000,
    upstreamIdleTimeoutMs: 30_000,
    via: 'mptcp-proxy-test',
    ...over,
  };
}

export async function startHttpProxy(opts: HttpProxyOptions = {}): Promise<HttpProxyHarness> {
  const cfg = testHttpListenerConfig(opts.cfg);
  const logs: string[] = [];
  const log: Logger = createLogger({ level: 'debug', format: 'json', sink: { write: (l) => logs.push(l) } });
  const access = opts.access ?? (await createAccessPolicy(testAccessConfig(opts.accessConfig)));
  const realDial = createDialer({ mptcp: 'off', connectTimeoutMs: 2000, dnsTimeoutMs: 2000, happyEyeballsDelayMs: 250 }, access, log);
  const dial = opts.dial ? opts.dial(realDial) : realDial;
  // As src/main.ts wires them for relay.engine (threads left at the engine's default).
  const engine = opts.engine ?? testRelayEngine();
  const relay = selectRelay(engine, { log });
  const pump = selectBodyPump(engine);
  const frontend = createHttpFrontend(cfg, { dial, relay, pump, access, log }, { idleTimeoutMs: opts.idleTimeoutMs ?? 0 });
  const contexts: ConnectionContext[] = [];
  const sockets = new Set<net.Socket>();
  const handles: Promise<void>[] = [];
  const early: Array<EarlyConnect | undefined> = [];
  // Waiting for the request line must not let Node read it first (the listener calls preconnect
  // before its first turn ends, when Node has not read yet): so Node reads nothing until the
  // front-end resumes the socket.
  const server = net.createServer({ pauseOnConnect: opts.preconnect === 'after-request-line' }, async (socket) => {
    if (opts.preconnect === 'after-request-line') await requestLineArrived(socket);
    early.push(frontend.preconnect?.(socket));
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    const ctx = createConnectionContext({
      listener: cfg.name,
      frontend: 'http',
      downstream: {
        remote: { address: socket.remoteAddress ?? '', port: socket.remotePort ?? 0 },
        local: { address: socket.localAddress ?? '', port: socket.localPort ?? 0 },
        mptcp: false,
      },
      log,
    });
    contexts.push(ctx);
    handles.push(frontend.handle(socket, ctx, early[early.length - 1]));
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as AddressInfo).port;
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    contexts,
    logs,
    settled: async () => {
      await Promise.all(handles);
    },
    frontend,
    engine,
    early,
    pumped: pump !== undefined,
    close: async () => {
      server.close();
      frontend.close?.();
      for (const s of sockets) s.destroy();
      await Promise.all(handles);
    },
  };
}

export interface OriginServer {
  port: number;
  server: http.Server;
  /** TCP connections accepted so far. */
  connections: number;
  /** Request heads seen (method, url, headers), in order. */
  requests: Array<{ method: string; url: string; headers: http.IncomingHttpHeaders; rawHeaders: string[] }>;
  close(): Promise<void>;
}

/** A real Node http server on 127.0.0.1:0; `handler` answers each request. */
export async function startOrigin(handler: http.RequestListener): Promise<OriginServer> {
  const server = http.createServer((req, res) => {
    origin.requests.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, rawHeaders: req.rawHeaders });
    handler(req, res);
  });
  server.keepAliveTimeout = 10_000;
  const origin: OriginServer = {
    port: 0,
    server,
    connections: 0,
    requests: [],
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
  server.on('connection', () => {
    origin.connections += 1;
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  origin.port = (server.address() as AddressInfo).port;
  return origin;
}

export async function readBody(req: http.IncomingMessage): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const part of req) parts.push(part as Buffer);
  return Buffer.concat(parts);
}

export interface CurlResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs curl through the proxy. The environment is cleared of *_proxy variables. */
export function curl(proxyPort: number, args: string[], input?: string | Buffer): Promise<CurlResult> {
  return new Promise((resolve) => {
    const child = execFile(
      'curl',
      ['-sS', '--max-time', '15', '-x', `http://127.0.0.1:${proxyPort}`, ...args],
      { env: { PATH: process.env.PATH ?? '/usr/bin:/bin' }, maxBuffer: 64 * 1024 * 1024, encoding: 'latin1' },
      (err, stdout, stderr) => {
        const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1) : 0;
        resolve({ code, stdout, stderr });
      },
    );
    if (input !== undefined) child.stdin?.end(input);
    else child.stdin?.end();
  });
}

/**
 * Opens a raw connection, writes `data`, and collects everything until the proxy closes
 * (or `timeoutMs` passes, then the socket is destroyed). Returns the bytes as latin1.
 */
export async function rawExchange(port: number, data: string | Buffer, timeoutMs = 5000): Promise<string> {
  const socket = net.connect(port, '127.0.0.1');
  await once(socket, 'connect');
  socket.write(data);
  return collectUntilClose(socket, timeoutMs);
}

export function collectUntilClose(socket: net.Socket, timeoutMs = 5000): Promise<string> {
  return new Promise((resolve) => {
    const parts: Buffer[] = [];
    const timer = setTimeout(() => socket.destroy(), timeoutMs);
    socket.on('data', (d: Buffer) => parts.push(d));
    socket.on('error', () => {});
    socket.on('close', () => {
      clearTimeout(timer);
      resolve(Buffer.concat(parts).toString('latin1'));
    });
  });
}

/** Reads from a raw socket until `predicate(text so far)` holds. */
export function readUntil(socket: net.Socket, predicate: (text: string) => boolean, timeoutMs = 5000): Promise<string> {
  return new Promise((resolve, reject) => {
    let text = '';
    const timer = setTimeout(() => {
      cleanup();
      reject(new Error(`timed out waiting; got ${JSON.stringify(text)}`));
    }, timeoutMs);
    const onData = (d: Buffer): void => {
      text += d.toString('latin1');
      if (predicate(text)) {
        cleanup();
        resolve(text);
      }
    };
    const onClose = (): void => {
      cleanup();
      if (predicate(text)) resolve(text);
      else reject(new Error(`closed; got ${JSON.stringify(text)}`));
    };
    const cleanup = (): void => {
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('close', onClose);
    };
    socket.on('data', onData);
    socket.on('close', onClose);
  });
}

/** A port on 127.0.0.1 that nothing listens on (bound, then closed). */
export async function closedPort(): Promise<number> {
  const s = net.createServer();
  s.listen(0, '127.0.0.1');
  await once(s, 'listening');
  const port = (s.address() as AddressInfo).port;
  await new Promise<void>((resolve) => s.close(() => resolve()));
  return port;
}

/** Parsed log lines at or above a level that carry a given status. */
export function logLinesWithStatus(logs: string[], status: number): Array<Record<string, unknown>> {
  return logs.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l.status === status && l.code !== undefined);
}

/** Waits (≤ 2 s) until a CRLF-ended first line is among the bytes the socket has received. */
async function requestLineArrived(socket: net.Socket): Promise<void> {
  const buf = Buffer.alloc(2048);
  const deadline = Date.now() + 2000;
  while (Date.now() < deadline && peekReceived(socket, buf).indexOf('\r\n') < 0) await sleep(2);
}

/** A raw TCP origin on 127.0.0.1 whose behaviour per connection is `onConnection` (for
 *  malformed, stalled or close-delimited upstream replies that an http.Server cannot send). */
export async function startTcpOrigin(onConnection: (socket: net.Socket) => void): Promise<{ port: number; close: () => void }> {
  const server = net.createServer(onConnection);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { port: (server.address() as net.AddressInfo).port, close: () => server.close() };
}
