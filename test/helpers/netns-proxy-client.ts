#!/usr/bin/env node
/**
 * A Node client that reaches a blob server (peer-blob-server.ts) *through* the proxy, on a
 * socket from our own addon (src/mptcp connectMptcp), speaking SOCKS5 (RFC 1928, no auth) or
 * HTTP CONNECT to open the tunnel, then the blob protocol inside it. Prints one JSON line.
 *
 *   node netns-proxy-client.js --proxy HOST:PORT --via socks5|connect --to IP:PORT
 *        [--upload-bytes N] [--download-bytes M] [--no-mptcp] [--timeout-ms 30000]
 *
 * Success (exit 0): {"event":"done","uploadBytes","uploadSha256","downloadBytes","downloadSha256",
 *   "downloadIntact","mptcp":true|false,"localAddress","localPort"}
 * Tunnel refused (exit 1): {"event":"refused","via":"socks5","rep":5} or {"event":"refused","via":"connect","status":502}
 * Other failure (exit 1): {"event":"error","code","message"}
 */
import { createHash } from 'node:crypto';
import type { Socket } from 'node:net';
import { isIPv4 } from 'node:net';
import { parseArgs } from 'node:util';
import { connectMptcp, isMptcpSocket } from '../../src/mptcp/index.js';
import { DEFAULT_DOWNLOAD_SEED, DEFAULT_UPLOAD_SEED, blobChunks, blobSha256, encodeBlobHeader, parseByteCount } from './peer-blob-content.js';

function emit(event: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify(event)}\n`);
}

function splitHostPort(text: string): { host: string; port: number } {
  const i = text.lastIndexOf(':');
  return { host: text.slice(0, i).replace(/^\[|\]$/g, ''), port: Number(text.slice(i + 1)) };
}

/** Reads a socket as a byte queue during the handshake: exact lengths, or up to a delimiter. */
class HandshakeReader {
  #buf = Buffer.alloc(0);
  #wake: (() => void) | undefined;
  #failed: Error | undefined;
  readonly #onData = (c: Buffer): void => {
    this.#buf = Buffer.concat([this.#buf, c]);
    this.#wake?.();
  };
  readonly #onEnd = (): void => {
    this.#failed = Object.assign(new Error('proxy closed the connection during the handshake'), { code: 'ECONNRESET' });
    this.#wake?.();
  };
  constructor(readonly socket: Socket) {
    socket.on('data', this.#onData);
    socket.on('end', this.#onEnd);
  }
  async #until(ready: () => number): Promise<Buffer> {
    for (;;) {
      const n = ready();
      if (n >= 0) {
        const out = this.#buf.subarray(0, n);
        this.#buf = this.#buf.subarray(n);
        return out;
      }
      if (this.#failed) throw this.#failed;
      await new Promise<void>((r) => (this.#wake = r));
    }
  }
  exactly(n: number): Promise<Buffer> {
    return this.#until(() => (this.#buf.length >= n ? n : -1));
  }
  upTo(delim: string): Promise<Buffer> {
    return this.#until(() => {
      const i = this.#buf.indexOf(delim);
      return i < 0 ? -1 : i + delim.length;
    });
  }
  /** Stops reading; returns bytes that arrived after the handshake (already tunnel payload). */
  detach(): Buffer {
    this.socket.off('data', this.#onData);
    this.socket.off('end', this.#onEnd);
    return this.#buf;
  }
}

class TunnelRefused extends Error {
  constructor(readonly detail: Record<string, unknown>) {
    super('tunnel refused');
  }
}

async function socks5Connect(r: HandshakeReader, to: { host: string; port: number }): Promise<void> {
  r.socket.write(Buffer.from([5, 1, 0]));
  const method = await r.exactly(2);
  if (method[0] !== 5 || method[1] !== 0) throw new TunnelRefused({ via: 'socks5', method: method[1] });
  if (!isIPv4(to.host)) throw new RangeError('--to must be an IPv4 literal for socks5');
  const port = Buffer.alloc(2);
  port.writeUInt16BE(to.port);
  r.socket.write(Buffer.concat([Buffer.from([5, 1, 0, 1, ...to.host.split('.').map(Number)]), port]));
  const head = await r.exactly(4);
  // BND.ADDR: IPv4 (4), IPv6 (16) or a name (1 + len), then the port.
  const addrLen = head[3] === 1 ? 4 : head[3] === 4 ? 16 : (await r.exactly(1))[0]!;
  await r.exactly(addrLen + 2);
  if (head[1] !== 0) throw new TunnelRefused({ via: 'socks5', rep: head[1] });
}

async function httpConnect(r: HandshakeReader, to: { host: string; port: number }): Promise<void> {
  const authority = `${to.host}:${to.port}`;
  r.socket.write(`CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n\r\n`);
  const head = (await r.upTo('\r\n\r\n')).toString('latin1');
  const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(head)?.[1] ?? 0);
  if (status !== 200) throw new TunnelRefused({ via: 'connect', status });
}

async function run(): Promise<number> {
  const { values } = parseArgs({
    options: {
      proxy: { type: 'string' },
      via: { type: 'string', default: 'socks5' },
      to: { type: 'string' },
      'upload-bytes': { type: 'string', default: '0' },
      'download-bytes': { type: 'string', default: '0' },
      'no-mptcp': { type: 'boolean', default: false },
      'timeout-ms': { type: 'string', default: '30000' },
    },
    strict: true,
  });
  if (!values.proxy || !values.to) throw new RangeError('--proxy and --to are required');
  const proxy = splitHostPort(values.proxy);
  const to = splitHostPort(values.to);
  const uploadBytes = parseByteCount(values['upload-bytes']);
  const wantDownload = parseByteCount(values['download-bytes']);
  const mptcp = !values['no-mptcp'];

  const socket = connectMptcp({ host: proxy.host, port: proxy.port, mptcp });
  const timer = setTimeout(() => {
    emit({ event: 'error', code: 'ETIMEDOUT', message: `no completion within ${values['timeout-ms']} ms` });
    process.exit(1);
  }, Number(values['timeout-ms']));
  timer.unref();
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  const facts = { mptcp: isMptcpSocket(socket), localAddress: socket.localAddress, localPort: socket.localPort };

  // 1. tunnel handshake
  const reader = new HandshakeReader(socket);
  if (values.via === 'socks5') await socks5Connect(reader, to);
  else if (values.via === 'connect') await httpConnect(reader, to);
  else throw new RangeError(`--via must be socks5 or connect, got ${values.via}`);
  const early = reader.detach();

  // 2. the blob protocol through the tunnel: download concurrently with the upload
  const downloadHash = createHash('sha256');
  const uploadHash = createHash('sha256');
  let received = early.length;
  downloadHash.update(early);
  const downloaded = new Promise<void>((resolve, reject) => {
    socket.on('data', (c: Buffer) => {
      received += c.length;
      downloadHash.update(c);
    });
    socket.once('end', resolve);
    socket.once('error', reject);
  });
  socket.write(encodeBlobHeader(wantDownload));
  for (const chunk of blobChunks(DEFAULT_UPLOAD_SEED, uploadBytes)) {
    uploadHash.update(chunk);
    if (!socket.write(chunk)) await new Promise<void>((r) => socket.once('drain', r));
  }
  socket.end();
  await downloaded;
  const downloadSha256 = downloadHash.digest('hex');
  emit({
    event: 'done',
    uploadBytes,
    uploadSha256: uploadHash.digest('hex'),
    downloadBytes: received,
    downloadSha256,
    downloadIntact: received === wantDownload && downloadSha256 === blobSha256(DEFAULT_DOWNLOAD_SEED, wantDownload),
    ...facts,
  });
  socket.destroy();
  return 0;
}

run().then(
  (code) => process.exit(code),
  (err: unknown) => {
    if (err instanceof TunnelRefused) emit({ event: 'refused', ...err.detail });
    else {
      const e = err as NodeJS.ErrnoException;
      emit({ event: 'error', code: e.code ?? 'EINVAL', message: e instanceof Error ? e.message : String(err) });
    }
    process.exit(1);
  },
);
