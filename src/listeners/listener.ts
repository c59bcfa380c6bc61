/**
 * A listener: binds one address (MPTCP, with TCP fallback when configured), accepts,
 * admits the client (network ACL, per-client limit), builds the connection context and
 * hands the socket to its front-end. It publishes conn:open / conn:close; it does not
 * know what the front-end speaks.
 *
 * Lifecycle: start() binds; close() stops accepting and waits for live connections to end;
 * destroy() also destroys them. All idempotent.
 */
import { Server, Socket } from 'node:net';
import type { ListenerConfig } from '../config/types.js';
import { createConnectionContext, recordSubflowSample, unmapAddress, type ConnectionContext, type SocketFacts } from '../core/context.js';
import { publishConnEnded, publishConnOpen } from '../core/channels.js';
import type { Logger } from '../core/logger.js';
import type { AccessPolicy } from '../access/types.js';
import type { EngineExchange, Frontend } from '../frontends/types.js';
import { isMptcpSocket, listenMptcp, sampleSubflowsOfFd, socketFd } from '../mptcp/index.js';
import { EngineAcceptor, type EngineOnly, type HandedOver, type NativeAcceptorApi } from './engine-acceptor.js';
import type { EarlyConnect } from '../upstream/types.js';

/** Per-client concurrent connection counting (implemented in access/). */
export interface ClientLimiter {
  tryAcquire(address: string): boolean;
  release(address: string): void;
}

export interface ListenerDeps {
  frontend: Frontend;
  access: AccessPolicy;
  limiter: ClientLimiter & { readonly maxPerClient?: number };
  log: Logger;
  /** The native engine's acceptor, for front-ends that offer engineAccept(); the limiter must
   *  then count in the same table (createSharedConnectionLimiter over it). */
  acceptor?: NativeAcceptorApi;
  /** The engine may carry a fixed target's connections alone (EngineAcceptorSettings.engineOnly). */
  engineOnly?: EngineOnly;
}

export class ProxyListener {
  readonly config: ListenerConfig;
  readonly #deps: ListenerDeps;
  readonly #server: Server;
  readonly #sockets = new Set<Socket>();
  /** Front-end runs not yet finished: a relay may own a connection whose socket is gone
   *  (the native relay takes the fd over), so these, not sockets, say what is still live. */
  readonly #running = new Set<Promise<void>>();
  /** One controller per live connection, aborted by destroy(). Per connection rather than one
   *  shared signal: adding and removing listeners on an EventTarget walks its list, which with
   *  thousands of connections on one signal costs at every accept and close. */
  readonly #cuts = new Set<AbortController>();
  /** Exchanges the engine serves whole (Frontend.engineExchange), by context: destroy() cuts
   *  each. Their contexts share one signal, aborted by destroy() too: an AbortController per
   *  connection was a measurable share of such a connection's main-thread time. */
  readonly #exchanges = new Map<ConnectionContext, EngineExchange>();
  /** Contexts of clients an engine-served exchange gave back to the engine (HandedOver.giveBack),
   *  by kept id, until their next request comes (#adopt) or they end (#keptEnd). */
  readonly #kept = new Map<number, ConnectionContext>();
  #nextKeptId = 0;
  readonly #exchangeCut = new AbortController();
  /** Set when the engine accepts for this listener (see #acceptInEngine). */
  #engine: EngineAcceptor | undefined;
  #mptcp = false;
  /** destroy() was called: a client the engine hands over from now on is closed, not served. */
  #destroyed = false;
  #state: 'new' | 'starting' | 'listening' | 'closing' | 'closed' = 'new';
  #closed: Promise<void> | undefined;
  #bound: Readonly<{ address: string; port: number }> | undefined;

  constructor(config: ListenerConfig, deps: ListenerDeps) {
    this.config = config;
    this.#deps = deps;
    // allowHalfOpen: a client's FIN must not make Node close our sending side; the relay
    // passes each FIN on separately. Accepted sockets start with no consumer, so bytes the
    // client sends before the front-end reads (e.g. while tcp-forward dials) wait in the
    // socket's buffer rather than being dropped.
    this.#server = new Server({ allowHalfOpen: true, noDelay: true });
    this.#server.on('connection', (s: Socket) => this.#onConnection(s));
    this.#server.on('error', (err) => deps.log.error('listener error', { listener: config.name, err }));
  }

  /** True when the listening socket is MPTCP (clients may still fall back to TCP one by one). */
  get mptcp(): boolean {
    return this.#mptcp;
  }

  get connections(): number {
    return this.#running.size + (this.#engine?.connections ?? 0);
  }

  /** True when the native engine accepts this listener's connections. */
  get acceptsInEngine(): boolean {
    return this.#engine !== undefined;
  }

  /** True when the engine carries this listener's connections alone (native/src/engine-only.c):
   *  JS hears of them only through their access lines. */
  get engineOnly(): boolean {
    return this.#engine?.engineOnly === true;
  }

  /** The bound address, or undefined before start() / after close(). Kept from start(): the
   *  access policy asks for it on every dial (self-connect guard), and Server#address() is a
   *  getsockname(2) each time. */
  address(): { address: string; port: number } | undefined {
    return this.#state === 'listening' ? this.#bound : undefined;
  }

  async start(): Promise<void> {
    if (this.#state !== 'new') return;
    this.#state = 'starting';
    const { listen, mptcp, backlog, reusePort, name, type } = this.config;
    const transparent = this.config.type === 'transparent' && this.config.mode === 'tproxy';
    const r = await listenMptcp(this.#server, { host: listen.host, port: listen.port, backlog, reusePort, transparent, mode: mptcp });
    this.#mptcp = r.mptcp;
    // Node's per-connection setNoDelay (the noDelay option) is a setsockopt each; the
    // listening socket's TCP_NODELAY already reaches every accepted socket.
    if (r.noDelayInherited) (this.#server as unknown as { noDelay: boolean }).noDelay = false;
    this.#bound = Object.freeze({ address: r.address.address, port: r.address.port });
    this.#state = 'listening';
    this.#acceptInEngine();
    this.#deps.log.info('listening', {
      listener: name,
      frontend: type,
      address: r.address.address,
      port: r.address.port,
      mptcp: r.mptcp,
      ...(this.#engine ? { acceptedBy: 'native engine' } : {}),
      ...(this.#engine?.engineOnly ? { engineOnly: true } : {}),
    });
  }

  /**
   * Hands the listening socket to the engine when the front-end offers a plan: the engine gets
   * a dup of the fd, then Node's server closes its own. close(2) of one fd leaves a socket
   * with another open fd listening, so no client is refused in between; one that Node
   * accepted meanwhile is served by #onConnection as usual.
   */
  #acceptInEngine(): void {
    const { acceptor: api, frontend, access, limiter, log, engineOnly } = this.#deps;
    const plan = api === undefined ? undefined : frontend.engineAccept?.();
    const serverFd = (this.#server as unknown as { _handle?: { fd?: number } })._handle?.fd;
    if (api === undefined || plan === undefined || serverFd === undefined || serverFd < 0) return;
    const engine = new EngineAcceptor(api, {
      listener: this.config.name,
      frontend: frontend.kind,
      plan,
      mptcp: this.#mptcp,
      clientRules: access.clientRules,
      ...(access.destinationRules ? { destinationRules: access.destinationRules } : {}),
      maxPerClient: limiter.maxPerClient ?? 0,
      log,
      ...(engineOnly ? { engineOnly } : {}),
      onHandoff: (h) => this.#adopt(h),
      onKeptEnd: (id, reason) => this.#keptEnd(id, reason),
      onKept: (ctx) => {
        // An exchange served from accept kept its client: as HandedOverClient.giveBack does.
        const id = ++this.#nextKeptId;
        this.#kept.set(id, ctx);
        return id;
      },
    });
    let fd: number | undefined;
    try {
      fd = api.dup(serverFd);
      engine.start(fd);
    } catch (err) {
      if (fd !== undefined) api.close(fd);
      log.warn('the native engine cannot accept for this listener; Node accepts', { listener: this.config.name, err });
      return;
    }
    this.#engine = engine;
    this.#server.close();
  }

  /** Stops accepting; resolves when every live connection has ended. */
  close(): Promise<void> {
    this.#closed ??= (async () => {
      this.#state = 'closing';
      if (this.#server.listening) await new Promise<void>((resolve) => this.#server.close(() => resolve()));
      await this.#engine?.stop();
      this.#deps.frontend.close?.();
      // Connections accepted before the close still run to their end.
      while (this.#running.size > 0) await Promise.allSettled([...this.#running]);
      await this.#engine?.drained();
      this.#state = 'closed';
    })();
    return this.#closed;
  }

  /** Stops accepting and cuts every live connection, wherever its bytes are (socket or relay). */
  async destroy(err?: Error): Promise<void> {
    this.#destroyed = true;
    const closing = this.close();
    for (const cut of this.#cuts) cut.abort(err);
    this.#exchangeCut.abort(err);
    for (const [ctx, exchange] of this.#exchanges) exchange.abort(ctx);
    this.#engine?.abortAll(err);
    for (const s of this.#sockets) s.destroy(err);
    await closing;
  }

  #onConnection(socket: Socket): void {
    const { log, access, limiter, frontend } = this.#deps;
    const client = unmapAddress(socket.remoteAddress ?? '');
    // 1. admit: client network, then the per-client limit
    const decision = access.admitClient(client);
    if (!decision.allowed) {
      log.warn('client denied', { listener: this.config.name, client, rule: decision.rule });
      socket.destroy();
      return;
    }
    if (!limiter.tryAcquire(client)) {
      log.warn('client over its connection limit', { listener: this.config.name, client });
      socket.destroy();
      return;
    }
    // The upstream connect, if the front-end can start it from what the client already sent:
    // first, so it is not held up by the bookkeeping below (docs/design.md, "The upstream
    // connect starts at accept").
    const early = frontend.preconnect?.(socket);
    const facts: SocketFacts = {
      remote: { address: client, port: socket.remotePort ?? 0 },
      local: { address: unmapAddress(socket.localAddress ?? ''), port: socket.localPort ?? 0 },
      mptcp: this.#mptcp && isMptcpSocket(socket),
    };
    this.#serve(socket, client, facts, early);
  }

  /**
   * A client the engine accepted, admitted and handed over (a handoff plan: the HTTP proxy),
   * with the upstream connect it began, if any. Without one, the front-end may still start its
   * own: the client's first bytes are in by now, or the engine waited long enough for them.
   */
  #adopt(h: HandedOver): void {
    const { log, frontend } = this.#deps;
    // A client an earlier exchange gave back, now with its next request: the same connection.
    const resumed = h.keptId > 0 ? this.#kept.get(h.keptId) : undefined;
    if (resumed !== undefined) this.#kept.delete(h.keptId);
    // Handed over as the acceptor stopped, after destroy() cut everything live.
    if (this.#destroyed) {
      this.#drop(h);
      if (resumed !== undefined) publishConnEnded(resumed);
      return;
    }
    // No socket at all when the front-end can have the engine serve the whole exchange. One
    // that keeps its client gives it back to the engine under a new id, with this context.
    let ctx: ConnectionContext | undefined;
    const giveBack = (fd: number): boolean => {
      const id = ++this.#nextKeptId;
      this.#kept.set(id, ctx!);
      if (h.giveBack(fd, id)) return true;
      this.#kept.delete(id);
      return false;
    };
    const exchange = frontend.engineExchange?.({ fd: h.fd, head: h.head, early: h.early, kept: h.keptId > 0, giveBack });
    if (exchange !== undefined) {
      ctx = createConnectionContext({ listener: this.config.name, frontend: this.config.type, downstream: { remote: h.remote, local: h.local, mptcp: h.mptcp }, log, signal: this.#exchangeCut.signal });
      this.#exchanges.set(ctx, exchange);
      publishConnOpen({ ctx });
      let run: Promise<boolean>;
      try {
        run = exchange.run(ctx);
      } catch (err) {
        run = Promise.reject(err); // #track logs it and releases the client's slot
      }
      // A client given back to the engine took its slot along (HandedOverClient.giveBack).
      let slotGone = false;
      this.#track(
        run.then((givenBack) => void (slotGone = givenBack)),
        undefined,
        h.remote.address,
        ctx,
        undefined,
        () => slotGone,
      );
      return;
    }
    let socket: Socket;
    try {
      socket = new Socket({ fd: h.fd, readable: true, writable: true, allowHalfOpen: true });
    } catch (err) {
      log.error('cannot take over a connection the engine accepted', { listener: this.config.name, client: h.remote.address, err });
      this.#drop(h);
      if (resumed !== undefined) publishConnEnded(resumed);
      return;
    }
    const early = h.early ?? frontend.preconnect?.(socket, h.requestTarget);
    this.#serve(socket, h.remote.address, { remote: h.remote, local: h.local, mptcp: h.mptcp }, early, resumed);
  }

  /** A client given back to the engine ended before its next request: its connection is over
   *  (the engine released its slot). */
  #keptEnd(id: number, reason: 'idle' | 'stopped' | undefined): void {
    const ctx = this.#kept.get(id);
    if (ctx === undefined) return;
    this.#kept.delete(id);
    ctx.end = { by: reason === undefined ? 'downstream' : 'proxy' };
    publishConnEnded(ctx);
  }

  /** A handed-over client not served: its fd, its early connect and its slot all go. */
  #drop(h: HandedOver): void {
    this.#deps.acceptor?.close(h.fd);
    h.early?.cancel();
    this.#deps.limiter.release(h.remote.address);
  }

  /** 2. the context (or `resumed`'s, for a client an exchange in the engine gave back), then
   *  3. the front-end, for an admitted client (its slot taken). */
  #serve(socket: Socket, client: string, facts: SocketFacts, early: EarlyConnect | undefined, resumed?: ConnectionContext): void {
    const { log, frontend } = this.#deps;
    const cut = new AbortController();
    this.#cuts.add(cut);
    // A resumed context keeps the listener's shared exchange signal, which destroy() aborts too.
    const ctx = resumed ?? createConnectionContext({ listener: this.config.name, frontend: this.config.type, downstream: facts, log, signal: cut.signal });
    if (resumed !== undefined) resumed.end = undefined; // the exchange's end was not the connection's
    this.#sockets.add(socket);
    socket.once('close', () => this.#sockets.delete(socket));
    if (facts.mptcp) {
      // Sample at both half-closes: whichever comes first finds the subflows still up (after
      // both DATA_FINs the kernel may already be closing them, RFC 8684 §3.3.3), and the later
      // one catches a subflow that joined in between (a download that outlives the request);
      // recordSubflowSample keeps the fuller. Each is one cheap addon call (subflowSummary).
      // These fire only while JS owns the socket (the JS relay, front-ends): the native relay
      // destroys it at the handover and samples there and in its engine instead.
      // A half-close within SUBFLOW_RESAMPLE_MS of the other finds what it found: a short
      // connection's two come a fraction of a millisecond apart, and each sample is two
      // getsockopts on the main thread.
      let sampledAt = -Infinity;
      const sample = (): void => {
        const now = performance.now();
        if (now - sampledAt < SUBFLOW_RESAMPLE_MS) return;
        sampledAt = now;
        sampleSubflows(socket, ctx);
      };
      socket.once('finish', sample);
      socket.once('end', sample);
    }
    if (resumed === undefined) publishConnOpen({ ctx });
    // 3. hand over; the front-end resolves when the connection is over
    this.#track(frontend.handle(socket, ctx, early), new WeakRef(socket), client, ctx, cut);
  }

  /**
   * Follows one front-end run to its end: releases the client's slot and publishes conn:close
   * (neither when `slotGone` says an exchange gave the client back to the engine: #keptEnd or
   * the resumed session does, later). It keeps only a weak reference to the socket: once the
   * native relay has taken the fds over and destroyed the net.Socket, nothing here should keep
   * that object (and its stream state) alive for the rest of the connection.
   */
  #track(
    run: Promise<void>,
    socketRef: WeakRef<Socket> | undefined,
    client: string,
    ctx: ConnectionContext,
    cut: AbortController | undefined,
    slotGone?: () => boolean,
  ): void {
    const running: Promise<void> = run
      .catch((err: unknown) => {
        // handle() must not throw; if it does, it is our bug — log it, keep serving.
        this.#deps.log.error('front-end failed', { conn: ctx.id, err });
        socketRef?.deref()?.destroy();
      })
      .finally(() => {
        // Given back with its slot, the connection goes on: its end is published later.
        const givenBack = slotGone?.() === true;
        if (!givenBack) {
          this.#deps.limiter.release(client);
          publishConnEnded(ctx);
        }
        this.#running.delete(running);
        if (cut !== undefined) this.#cuts.delete(cut);
        else this.#exchanges.delete(ctx);
      });
    this.#running.add(running);
  }
}

/** How far apart the two half-closes' subflow samples must be for the second to be taken. */
const SUBFLOW_RESAMPLE_MS = 50;

/** Samples the client's subflows while the fd is still open (see recordSubflowSample). */
function sampleSubflows(socket: Socket, ctx: ConnectionContext): void {
  try {
    if (!socket.destroyed) recordSubflowSample(ctx, sampleSubflowsOfFd(socketFd(socket)));
  } catch (err) {
    ctx.log.debug('MPTCP_INFO unavailable at close', { err });
  }
}
