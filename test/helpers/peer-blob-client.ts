#!/usr/bin/env node
/**
 * Blob client: uploads N deterministic bytes, downloads M, checks both, prints one JSON line.
 *
 *   node peer-blob-client.js --host H --port P [--upload-bytes 5M] [--download-bytes 0]
 *        [--local-address A] [--seed S] [--download-seed S] [--timeout-ms 30000] [--mptcp]
 *
 * Success (exit 0): {"event":"done","uploadBytes","uploadSha256","downloadBytes","downloadSha256",
 *   "downloadIntact","elapsedMs","connectMs","mbit","localAddress","localPort","remoteAddress",...}
 * where elapsedMs runs from the start of connect until the server's FIN (after the upload was
 * sent and the download received) and mbit = (upload + download) × 8 / elapsed.
 * Failure (exit 1): {"event":"error","code":..,"message":..,"elapsedMs":..}.
 */
import { createHash } from 'node:crypto';
import * as net from 'node:net';
import { parseArgs } from 'node:util';
import {
  DEFAULT_DOWNLOAD_SEED,
  DEFAULT_UPLOAD_SEED,
  blobChunks,
  blobSha256,
  encodeBlobHeader,
  parseByteCount,
  parseSeed,
} from './peer-blob-content.js';

/** Where to connect; `mptcp` asks for an IPPROTO_MPTCP socket (src/mptcp addon). */
export interface BlobConnectOptions {
  host: string;
  port: number;
  localAddress?: string;
  mptcp: boolean;
}

/**
 * The one place a connection is created. Plain TCP uses node:net; `mptcp` uses the addon's
 * `connectMptcp` (src/mptcp), loaded only then, so plain runs never touch the native module.
 * Both return a net.Socket that emits 'connect'/'error' the same way.
 */
export async function openBlobConnection(opts: BlobConnectOptions): Promise<net.Socket> {
  if (!opts.mptcp) return net.connect({ host: opts.host, port: opts.port, localAddress: opts.localAddress, allowHalfOpen: true });
  const { connectMptcp } = await import('../../src/mptcp/index.js');
  // No allowHalfOpen needed: the server sends its FIN only after ours (see peer-blob-content.ts).
  return connectMptcp({ host: opts.host, port: opts.port, localAddress: opts.localAddress, mptcp: true });
}

function emit(event: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify(event)}\n`);
}

async function run(): Promise<number> {
  const { values } = parseArgs({
    options: {
      host: { type: 'string' },
      port: { type: 'string' },
      'upload-bytes': { type: 'string', default: '0' },
      'download-bytes': { type: 'string', default: '0' },
      'local-address': { type: 'string' },
      seed: { type: 'string' },
      'download-seed': { type: 'string' },
      'timeout-ms': { type: 'string', default: '30000' },
      mptcp: { type: 'boolean', default: false },
    },
    strict: true,
  });
  if (values.host === undefined || values.port === undefined) throw new RangeError('--host and --port are required');
  const uploadBytes = parseByteCount(values['upload-bytes']);
  const wantDownload = parseByteCount(values['download-bytes']);
  const seed = values.seed === undefined ? DEFAULT_UPLOAD_SEED : parseSeed(values.seed);
  const downloadSeed = values['download-seed'] === undefined ? DEFAULT_DOWNLOAD_SEED : parseSeed(values['download-seed']);
  const timeoutMs = Number(values['timeout-ms']);
  const started = performance.now();

  const socket = await openBlobConnection({ host: values.host, port: Number(values.port), localAddress: values['local-address'], mptcp: values.mptcp });
  return new Promise<number>((resolve) => {
    let connectMs = -1;
    // Read at connect: after both FINs the handle is gone and these read as undefined.
    let endpoints: Record<string, unknown> = {};
    let uploadSent = false;
    let downloadEnded = false;
    let done = false;
    let received = 0;
    const uploadHash = createHash('sha256');
    const downloadHash = createHash('sha256');

    const finish = (exitCode: number, event: Record<string, unknown>): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      emit({ ...event, elapsedMs: Math.round(performance.now() - started) });
      socket.destroy();
      resolve(exitCode);
    };
    const timer = setTimeout(() => {
      finish(1, { event: 'error', code: 'ETIMEDOUT', message: `no completion within ${timeoutMs} ms (connected: ${connectMs >= 0}, received ${received} bytes)` });
    }, timeoutMs);
    const maybeDone = (): void => {
      if (!uploadSent || !downloadEnded) return;
      const elapsed = performance.now() - started;
      const downloadSha256 = downloadHash.digest('hex');
      finish(0, {
        event: 'done',
        uploadBytes,
        uploadSha256: uploadHash.digest('hex'),
        downloadBytes: received,
        downloadSha256,
        downloadIntact: received === wantDownload && downloadSha256 === blobSha256(downloadSeed, wantDownload),
        connectMs,
        mbit: Number((((uploadBytes + received) * 8) / (elapsed / 1000) / 1e6).toFixed(3)),
        ...endpoints,
      });
    };

    socket.on('error', (err: NodeJS.ErrnoException) => finish(1, { event: 'error', code: err.code, message: err.message }));
    socket.on('data', (chunk: Buffer) => {
      received += chunk.length;
      downloadHash.update(chunk);
    });
    socket.on('end', () => {
      downloadEnded = true;
      maybeDone();
    });
    socket.on('connect', () => {
      connectMs = Math.round(performance.now() - started);
      endpoints = { localAddress: socket.localAddress, localPort: socket.localPort, remoteAddress: socket.remoteAddress, remotePort: socket.remotePort };
      void (async () => {
        socket.write(encodeBlobHeader(wantDownload));
        for (const chunk of blobChunks(seed, uploadBytes)) {
          uploadHash.update(chunk);
          if (!socket.write(chunk)) await new Promise<void>((r) => { socket.once('drain', r); socket.once('close', r); });
          if (done) return;
        }
        // Half-close: the server learns the upload is complete and still sends its download.
        socket.end(() => {
          uploadSent = true;
          maybeDone();
        });
      })();
    });
  });
}

run().then(
  (code) => process.exit(code),
  (err: unknown) => {
    const e = err as NodeJS.ErrnoException;
    emit({ event: 'error', code: e.code ?? 'EINVAL', message: e instanceof Error ? e.message : String(err) });
    process.exit(1);
  },
);
