/**
 * Pull-style reading and backpressured writing on a net.Socket, for the HTTP front-end's
 * sequential message handling.
 *
 * SocketReader keeps at most one unconsumed chunk: when a chunk is queued the socket is
 * paused, and it resumes only when the queue has been read empty. That is the read side of
 * backpressure, and it is also what makes pipelining safe: bytes of the next request wait
 * (in the queue or the kernel) until the current response has been forwarded. While the
 * queue is empty the socket stays flowing, so an idle peer's FIN or RST is noticed at once.
 *
 * For one large body the reader can lend its socket's read side to the native body pump
 * (suspend() … resume(), src/relay/native-pump.ts): the pump reads the body, and the reader
 * picks up the bytes after it.
 */
import type { Socket } from 'node:net';

export const READ_TIMEOUT: unique symbol = Symbol('read-timeout');
export type ReadResult = Buffer | null | typeof READ_TIMEOUT;

export class SocketReader {
  readonly socket: Socket;
  #count: (n: number) => void;
  #queue: Buffer[] = [];
  #ended = false;
  #error: Error | null = null;
  #wake: (() => void) | null = null;
  #discarding = false;
  #detached = false;
  #suspended = false;

  /** `count` is called with the size of every chunk read from the socket. */
  constructor(socket: Socket, count: (n: number) => void) {
    this.socket = socket;
    this.#count = count;
    socket.on('data', this.#onData);
    socket.on('end', this.#onEnd);
    socket.on('error', this.#onError);
    socket.on('close', this.#onEnd);
    if (socket.destroyed) this.#ended = true;
    socket.resume();
  }

  /** Points the byte counter elsewhere: a pooled upstream connection counts its bytes to
   *  the session that uses it now, not the one that dialed it. */
  rebind(count: (n: number) => void): void {
    this.#count = count;
  }

  /** EOF or error seen and nothing left to read. */
  get finished(): boolean {
    return this.#queue.length === 0 && (this.#ended || this.#error !== null);
  }

  /** Bytes read from the socket and not consumed yet. */
  get queuedBytes(): number {
    let n = 0;
    for (const c of this.#queue) n += c.length;
    return n;
  }

  /** Live and in use by nobody else (no EOF, no error, not detached, discarding or already
   *  suspended): its read side can be lent to a pump. */
  get canSuspend(): boolean {
    return !this.#ended && this.#error === null && !this.#detached && !this.#discarding && !this.#suspended && !this.socket.destroyed;
  }

  /** Nothing queued, no EOF, no error: an idle connection that can carry the next message. */
  get idleUsable(): boolean {
    return this.#queue.length === 0 && !this.#ended && this.#error === null && !this.socket.destroyed;
  }

  readonly #onData = (chunk: Buffer): void => {
    this.#count(chunk.length);
    if (this.#discarding) return;
    this.#queue.push(chunk);
    this.socket.pause();
    this.#notify();
  };

  readonly #onEnd = (): void => {
    this.#ended = true;
    this.#notify();
  };

  readonly #onError = (err: Error): void => {
    this.#error ??= err;
    this.#notify();
  };

  #notify(): void {
    const wake = this.#wake;
    if (wake) {
      this.#wake = null;
      wake();
    }
  }

  /**
   * The next chunk; null at EOF (or once the socket closed); READ_TIMEOUT when `timeoutMs`
   * passes with nothing to read. Rejects with the socket's error. One reader at a time.
   */
  async read(timeoutMs?: number): Promise<ReadResult> {
    for (;;) {
      const chunk = this.#queue.shift();
      if (chunk !== undefined) {
        if (this.#queue.length === 0 && !this.#ended && !this.#detached) this.socket.resume();
        return chunk;
      }
      if (this.#error) throw this.#error;
      if (this.#ended) return null;
      if (timeoutMs !== undefined && timeoutMs <= 0) return READ_TIMEOUT;
      const timedOut = await new Promise<boolean>((resolve) => {
        let timer: NodeJS.Timeout | undefined;
        this.#wake = () => {
          if (timer) clearTimeout(timer);
          resolve(false);
        };
        if (timeoutMs !== undefined) {
          timer = setTimeout(() => {
            this.#wake = null;
            resolve(true);
          }, timeoutMs);
        }
      });
      if (timedOut) return READ_TIMEOUT;
    }
  }

  /**
   * The next `n` bytes, only if they are all queued already (else undefined and nothing is
   * taken): lets a small body that arrived with its head go out in the same write. Bytes past
   * `n` stay queued.
   */
  takeQueued(n: number): Buffer | undefined {
    if (this.queuedBytes < n) return undefined;
    const parts: Buffer[] = [];
    let need = n;
    while (need > 0) {
      const chunk = this.#queue.shift()!;
      if (chunk.length > need) {
        parts.push(chunk.subarray(0, need));
        this.#queue.unshift(chunk.subarray(need));
        need = 0;
      } else {
        parts.push(chunk);
        need -= chunk.length;
      }
    }
    if (this.#queue.length === 0 && !this.#ended && !this.#detached && !this.#suspended) this.socket.resume();
    return parts.length === 1 ? parts[0]! : Buffer.concat(parts, n);
  }

  /** Puts back bytes that belong to the next message (read too far). */
  unread(buf: Buffer): void {
    if (buf.length === 0) return;
    this.#queue.unshift(buf);
    this.socket.pause();
  }

  /** Drops everything from now on (lingering close: keep reading so our reply is not lost
   *  to an RST caused by unread data). */
  discard(): void {
    this.#discarding = true;
    this.#queue = [];
    // A suspended socket's read side is the pump's until resume(), which flows it then.
    if (!this.#detached && !this.#suspended) this.socket.resume();
  }

  /**
   * Lends the socket's read side to a pump for one body: pauses the socket, stops taking its
   * 'data' (the pump drains what Node buffered itself, and read() would emit it as 'data')
   * and returns the queued bytes, already counted, for the pump to write first. 'end',
   * 'error' and 'close' are still watched. Only when canSuspend; no read() until resume().
   */
  suspend(): Buffer {
    this.#suspended = true;
    this.socket.pause();
    this.socket.off('data', this.#onData);
    const queued = this.#queue.length === 1 ? this.#queue[0]! : Buffer.concat(this.#queue);
    this.#queue = [];
    return queued;
  }

  /** Takes the read side back after suspend(): what Node reads from now on (the next
   *  message, or bytes the pump put back) is queued and counted as before. */
  resume(): void {
    if (!this.#suspended) return;
    this.#suspended = false;
    if (this.#detached) return;
    this.socket.on('data', this.#onData);
    if (this.#discarding || (this.#queue.length === 0 && !this.#ended)) this.socket.resume();
  }

  /**
   * Stops reading for good and hands the socket over: pauses it, removes our listeners and
   * returns the bytes read but not consumed. The new owner resumes the socket.
   */
  detach(): Buffer {
    this.#detached = true;
    this.socket.pause();
    this.socket.off('data', this.#onData);
    this.socket.off('end', this.#onEnd);
    this.socket.off('error', this.#onError);
    this.socket.off('close', this.#onEnd);
    const rest = this.#queue.length === 1 ? this.#queue[0]! : Buffer.concat(this.#queue);
    this.#queue = [];
    return rest ?? Buffer.alloc(0);
  }
}

/** The peer went away before a write could complete. */
export class SocketClosedError extends Error {
  override name = 'SocketClosedError';
  readonly code = 'ERR_SOCKET_CLOSED';
}

const resolved = Promise.resolve();

/**
 * Writes (`buf`, then `then` if given, in one system call) and resolves when the socket can
 * take more ('drain'): the write side of
 * backpressure. Rejects if the socket closes or errors first.
 */
export function writeAll(socket: Socket, buf: Buffer, then?: Buffer): Promise<void> {
  if (socket.destroyed || !socket.writable) return Promise.reject(new SocketClosedError('socket is closed'));
  let more: boolean;
  if (then === undefined) {
    more = socket.write(buf);
  } else {
    // Two buffers, one writev(2): corked and uncorked in the same tick, so no await can ever
    // wait for a 'drain' while corked.
    socket.cork();
    socket.write(buf);
    more = socket.write(then);
    socket.uncork();
  }
  if (more) return resolved;
  return new Promise<void>((resolve, reject) => {
    const cleanup = (): void => {
      socket.off('drain', onDrain);
      socket.off('close', onClose);
      socket.off('error', onError);
    };
    const onDrain = (): void => {
      cleanup();
      resolve();
    };
    const onClose = (): void => {
      cleanup();
      reject(new SocketClosedError('socket closed while writing'));
    };
    const onError = (err: Error): void => {
      cleanup();
      reject(err);
    };
    socket.on('drain', onDrain);
    socket.on('close', onClose);
    socket.on('error', onError);
  });
}
