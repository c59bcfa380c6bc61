/**
 * A raw SOCKS5 client for integration tests: builds messages byte by byte (so tests can
 * send deliberately wrong ones) and reads exact reply lengths with a deadline.
 */
import { connect, type Socket } from 'node:net';

export const ATYP = { IPV4: 1, DOMAIN: 3, IPV6: 4 } as const;
export const CMD = { CONNECT: 1, BIND: 2, UDP_ASSOCIATE: 3 } as const;

export function greeting(methods: number[]): Buffer {
  return Buffer.from([5, methods.length, ...methods]);
}

export function userPass(user: string, password: string): Buffer {
  const u = Buffer.from(user);
  const p = Buffer.from(password);
  return Buffer.concat([Buffer.from([1, u.length]), u, Buffer.from([p.length]), p]);
}

/** A request; host is an IPv4/IPv6 literal for ATYP 1/4 or a name for ATYP 3. */
export function request(opts: { cmd?: number; atyp: number; host: string; port: number; version?: number; rsv?: number }): Buffer {
  let addr: Buffer;
  if (opts.atyp === ATYP.IPV4) addr = Buffer.from(opts.host.split('.').map(Number));
  else if (opts.atyp === ATYP.IPV6) addr = ipv6Bytes(opts.host);
  else {
    const name = Buffer.from(opts.host);
    addr = Buffer.concat([Buffer.from([name.length]), name]);
  }
  const port = Buffer.alloc(2);
  port.writeUInt16BE(opts.port);
  return Buffer.concat([Buffer.from([opts.version ?? 5, opts.cmd ?? CMD.CONNECT, opts.rsv ?? 0, opts.atyp]), addr, port]);
}

function ipv6Bytes(text: string): Buffer {
  const [head = '', tail = ''] = text.split('::');
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const groups = text.includes('::') ? [...h, ...new Array<string>(8 - h.length - t.length).fill('0'), ...t] : h;
  const out = Buffer.alloc(16);
  groups.forEach((g, i) => out.writeUInt16BE(parseInt(g, 16), i * 2));
  return out;
}

export interface ParsedReply {
  version: number;
  rep: number;
  atyp: number;
  address: string;
  port: number;
}

export class RawSocksClient {
  readonly socket: Socket;
  #buffer = Buffer.alloc(0);
  #ended = false;
  #closed: Promise<void>;
  #wake: (() => void) | undefined;

  private constructor(socket: Socket) {
    this.socket = socket;
    socket.on('data', (chunk: Buffer) => {
      this.#buffer = Buffer.concat([this.#buffer, chunk]);
      this.#wake?.();
    });
    socket.on('error', () => {});
    this.#closed = new Promise((resolve) => socket.once('close', () => {
      this.#ended = true;
      this.#wake?.();
      resolve();
    }));
    socket.once('end', () => {
      this.#ended = true;
      this.#wake?.();
    });
  }

  static connect(port: number, host = '127.0.0.1'): Promise<RawSocksClient> {
    return new Promise((resolve, reject) => {
      const s = connect({ port, host, allowHalfOpen: true });
      s.once('connect', () => resolve(new RawSocksClient(s)));
      s.once('error', reject);
    });
  }

  send(bytes: Buffer | string): void {
    this.socket.write(bytes);
  }

  /** Exactly n bytes, or rejects if the server closes first or nothing comes within timeoutMs. */
  async read(n: number, timeoutMs = 3000): Promise<Buffer> {
    const deadline = Date.now() + timeoutMs;
    while (this.#buffer.length < n) {
      if (this.#ended) throw new Error(`server closed after ${this.#buffer.length} of ${n} bytes`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for ${n} bytes (have ${this.#buffer.length})`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.#wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.#wake = undefined;
    }
    const out = this.#buffer.subarray(0, n);
    this.#buffer = this.#buffer.subarray(n);
    return out;
  }

  /** Everything until the server closes. */
  async readToEnd(timeoutMs = 3000): Promise<Buffer> {
    await this.waitClosed(timeoutMs);
    const out = this.#buffer;
    this.#buffer = Buffer.alloc(0);
    return out;
  }

  /** A SOCKS5 request reply (10 or 22 bytes, or longer for a domain BND.ADDR). */
  async readReply(timeoutMs = 3000): Promise<ParsedReply> {
    const head = await this.read(4, timeoutMs);
    const atyp = head[3]!;
    let address: string;
    if (atyp === ATYP.IPV4) address = [...(await this.read(4, timeoutMs))].join('.');
    else if (atyp === ATYP.IPV6) {
      const b = await this.read(16, timeoutMs);
      address = Array.from({ length: 8 }, (_, i) => b.readUInt16BE(i * 2).toString(16)).join(':');
    } else {
      const len = (await this.read(1, timeoutMs))[0]!;
      address = (await this.read(len, timeoutMs)).toString();
    }
    const port = (await this.read(2, timeoutMs)).readUInt16BE(0);
    return { version: head[0]!, rep: head[1]!, atyp, address, port };
  }

  /** Resolves when the server has closed its side (EOF, reset or close); rejects after timeoutMs. */
  async waitClosed(timeoutMs = 3000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!this.#ended) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error('server did not close the connection in time');
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.min(left, 50));
        this.#wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.#wake = undefined;
    }
  }

  /** Sends FIN and waits for the socket to close completely. */
  async end(): Promise<void> {
    this.socket.end();
    await this.#closed;
  }

  destroy(): void {
    this.socket.destroy();
  }
}
