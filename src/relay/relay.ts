/**
 * The JS relay: moves bytes both ways between the client (downstream) and the server
 * (upstream) until both directions are finished, then resolves with a summary.
 *
 * Semantics (the contract in ./types.ts):
 * - backpressure: a side is paused while the other's write buffer is full, resumed on 'drain';
 * - half-close: EOF from one side becomes end() on the other once its queued bytes are written
 *   (both sockets must be created with allowHalfOpen: true, which the listener and dialer do);
 * - errors: an error or reset on either side destroys both;
 * - idle: no bytes either way for idleTimeoutMs closes both (one timer on the downstream socket is
 *   enough — every byte read on one side is written on the other, and Node refreshes a socket's
 *   timer on both reads and writes).
 */
import type { Socket } from 'node:net';
import type { ConnectionContext } from '../core/context.js';
import { ErrorCode } from '../core/errors.js';
import type { Relay, RelayOptions, RelaySummary } from './types.js';

type Side = 'downstream' | 'upstream';

export const relayBothWays: Relay = (downstream, upstream, ctx, opts = {}) =>
  new Promise<RelaySummary>((resolve) => {
    new RelaySession(downstream, upstream, ctx, opts, resolve).start();
  });

class RelaySession {
  #endedBy: RelaySummary['endedBy'] | undefined;
  #error: Error | undefined;
  #closed = 0;
  #finished = false;
  #removeAbortListener: () => void = () => {};
  readonly #startedAt = performance.now();

  constructor(
    private readonly down: Socket,
    private readonly up: Socket,
    private readonly ctx: ConnectionContext,
    private readonly opts: RelayOptions,
    private readonly done: (s: RelaySummary) => void,
  ) {}

  start(): void {
    const { down, up, opts } = this;
    if (opts.downstreamHead && opts.downstreamHead.length > 0) {
      this.ctx.bytes.fromDownstream += opts.downstreamHead.length;
      up.write(opts.downstreamHead);
    }
    if (opts.upstreamHead && opts.upstreamHead.length > 0) {
      this.ctx.bytes.fromUpstream += opts.upstreamHead.length;
      down.write(opts.upstreamHead);
    }
    this.#pump(down, up, 'downstream');
    this.#pump(up, down, 'upstream');
    for (const [sock, side] of [[down, 'downstream'], [up, 'upstream']] as const) {
      sock.on('error', (err) => this.#fail(side, err));
      sock.once('close', () => this.#onClose(side));
      // A socket whose 'close' was already emitted before the handover never emits it again.
      if (sock.closed) queueMicrotask(() => this.#onClose(side));
    }
    if (opts.idleTimeoutMs && opts.idleTimeoutMs > 0) {
      const idleMs = opts.idleTimeoutMs;
      down.setTimeout(idleMs, () => this.#cut(ErrorCode.IDLE_TIMEOUT, `relay idle for ${idleMs} ms`));
    }
    // The proxy cutting the connection (listener destroy) ends the relay like an idle timeout.
    const onAbort = () => this.#cut(ErrorCode.RELAY_ABORTED, 'connection cut by the proxy');
    if (this.ctx.signal.aborted) queueMicrotask(onAbort);
    else {
      this.ctx.signal.addEventListener('abort', onAbort, { once: true });
      this.#removeAbortListener = () => this.ctx.signal.removeEventListener('abort', onAbort);
    }
    // Resume sockets a front-end may have paused while handshaking.
    down.resume();
    up.resume();
  }

  /** One direction: from `src` (which is `side`) to `dst`. */
  #pump(src: Socket, dst: Socket, side: Side): void {
    const counters = this.ctx.bytes;
    src.on('data', (chunk: Buffer) => {
      if (side === 'downstream') counters.fromDownstream += chunk.length;
      else counters.fromUpstream += chunk.length;
      if (!dst.write(chunk)) src.pause();
    });
    dst.on('drain', () => src.resume());
    src.once('end', () => {
      this.#first(side);
      // Half-close: pass the FIN on after the queued bytes (RFC 9293 §3.6 semantics kept end to end).
      if (!dst.destroyed) dst.end();
    });
  }

  #first(side: RelaySummary['endedBy']): void {
    this.#endedBy ??= side;
  }

  /** The proxy ends the relay (idle timeout, shutdown): both sockets go, the proxy ended it. */
  #cut(code: ErrorCode, message: string): void {
    this.#first('proxy');
    this.#error ??= Object.assign(new Error(message), { code });
    this.down.destroy();
    this.up.destroy();
  }

  #fail(side: Side, err: Error): void {
    this.#first(side);
    this.#error ??= err;
    this.down.destroy();
    this.up.destroy();
  }

  #onClose(side: Side): void {
    this.#first(side);
    this.#closed += 1;
    // A side that closed after a clean EOF has already passed its FIN on; the other side
    // then closes by itself once its own EOF arrives. A side that closed without EOF
    // (destroyed, reset) can take no more bytes, so the other side is closed too.
    const gone = side === 'downstream' ? this.down : this.up;
    const other = side === 'downstream' ? this.up : this.down;
    if (!other.destroyed && !gone.readableEnded) other.destroy();
    if (this.#closed >= 2 && !this.#finished) {
      this.#finished = true;
      this.#removeAbortListener();
      this.ctx.end = { by: this.#endedBy ?? 'proxy', ...(this.#error ? { error: this.#error } : {}) };
      this.done({
        fromDownstream: this.ctx.bytes.fromDownstream,
        fromUpstream: this.ctx.bytes.fromUpstream,
        endedBy: this.#endedBy ?? 'proxy',
        durationMs: performance.now() - this.#startedAt,
        ...(this.#error ? { error: this.#error } : {}),
      });
    }
  }
}
