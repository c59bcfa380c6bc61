/**
 * Reads handshake messages from the client socket with an incremental parser, then hands
 * the socket (and any bytes read past the last message) over to the relay.
 *
 * The socket flows only while a read is waiting, so a client cannot make us buffer more
 * than one message plus one chunk, and nothing is read after the handshake that the
 * relay would not see.
 */
import type { Socket } from 'node:net';
import type { ParseResult } from './codec.js';

/** The client closed (EOF) before sending a whole handshake message. */
export class HandshakeEofError extends Error {
  override name = 'HandshakeEofError';
}

export type Parsed<T> = Exclude<ParseResult<T>, { status: 'incomplete' }>;

interface Waiter {
  parse: (buf: Buffer) => ParseResult<unknown>;
  resolve: (r: Parsed<unknown>) => void;
  reject: (err: Error) => void;
}

const EMPTY = Buffer.alloc(0);

export class HandshakeReader {
  readonly #socket: Socket;
  #buffer: Buffer = EMPTY;
  #waiter: Waiter | undefined;
  #failure: Error | undefined;
  #ended = false;
  #detached = false;

  readonly #onData = (chunk: Buffer) => {
    this.#buffer = this.#buffer.length === 0 ? chunk : Buffer.concat([this.#buffer, chunk]);
    this.#tryParse();
  };
  readonly #onEnd = () => {
    this.#ended = true;
    this.#tryParse();
  };
  readonly #onClose = () => {
    this.#ended = true;
    this.#tryParse();
  };
  readonly #onError = (err: Error) => {
    this.fail(err);
  };

  constructor(socket: Socket) {
    this.#socket = socket;
    socket.pause();
    socket.on('data', this.#onData);
    socket.on('end', this.#onEnd);
    socket.on('close', this.#onClose);
    socket.on('error', this.#onError);
  }

  /** Bytes consumed by parsers so far (for the downstream byte counter). */
  consumedBytes = 0;

  /** Resolves with the first non-incomplete parse of the buffered bytes. Rejects on failure, EOF or error. */
  read<T>(parse: (buf: Buffer) => ParseResult<T>): Promise<Parsed<T>> {
    if (this.#waiter !== undefined) return Promise.reject(new Error('HandshakeReader: one read at a time'));
    return new Promise<Parsed<T>>((resolve, reject) => {
      this.#waiter = { parse, resolve: resolve as (r: Parsed<unknown>) => void, reject };
      this.#tryParse();
      if (this.#waiter !== undefined && !this.#detached) this.#socket.resume();
    });
  }

  /** Ends the handshake with an error: the waiting read (or the next one) rejects with it. */
  fail(err: Error): void {
    this.#failure ??= err;
    this.#tryParse();
  }

  /** Stops reading and returns the bytes buffered after the last parsed message. */
  detach(): Buffer {
    this.#detached = true;
    this.#socket.pause();
    this.#socket.off('data', this.#onData);
    this.#socket.off('end', this.#onEnd);
    this.#socket.off('close', this.#onClose);
    this.#socket.off('error', this.#onError);
    const rest = this.#buffer;
    this.#buffer = EMPTY;
    return rest;
  }

  #tryParse(): void {
    const waiter = this.#waiter;
    if (waiter === undefined) return;
    const settle = (fn: () => void) => {
      this.#waiter = undefined;
      this.#socket.pause();
      fn();
    };
    if (this.#failure !== undefined) {
      const err = this.#failure;
      settle(() => waiter.reject(err));
      return;
    }
    const result = waiter.parse(this.#buffer);
    if (result.status === 'done') {
      this.#buffer = this.#buffer.subarray(result.consumed);
      this.consumedBytes += result.consumed;
      settle(() => waiter.resolve(result));
    } else if (result.status === 'invalid') {
      settle(() => waiter.resolve(result));
    } else if (this.#ended) {
      const partial = this.#buffer.length;
      settle(() => waiter.reject(new HandshakeEofError(`client closed during the handshake (${partial} bytes of a partial message)`)));
    }
  }
}
