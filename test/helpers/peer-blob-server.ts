#!/usr/bin/env node
/**
 * Blob server: a plain-TCP peer for testbed tests (see peer-blob-content.ts for the protocol).
 *
 *   node peer-blob-server.js [--host 0.0.0.0] [--port 0] [--download-bytes N] [--seed S] [--mptcp]
 *
 * `--mptcp` listens on an IPPROTO_MPTCP socket through the src/mptcp addon (plain-TCP clients
 * still work: the kernel falls back per connection).
 *
 * Prints `listening <port>` once bound, then per connection (after the client's FIN and the whole
 * download, when the server sends its own FIN) one JSON line:
 *   {"event":"conn","uploadBytes":..,"uploadSha256":..,"downloadBytes":..,"downloadSha256":..,
 *    "remoteAddress":..,"remotePort":..,"localAddress":..,"localPort":..,"elapsedMs":..}
 * or {"event":"error",...} if a connection fails. `--download-bytes` overrides the client's
 * header. Runs until killed (SIGTERM closes the listener and exits).
 */
import { createHash } from 'node:crypto';
import * as net from 'node:net';
import { parseArgs } from 'node:util';
import { BLOB_HEADER_BYTES, DEFAULT_DOWNLOAD_SEED, blobChunks, decodeBlobHeader, parseByteCount, parseSeed } from './peer-blob-content.js';

/** A connection that sends nothing for this long is dropped (every wait is bounded). */
const IDLE_TIMEOUT_MS = 30_000;

function emit(event: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify(event)}\n`);
}

async function writeAll(socket: net.Socket, seed: number, length: number, hash: ReturnType<typeof createHash>): Promise<void> {
  for (const chunk of blobChunks(seed, length)) {
    if (socket.destroyed) throw new Error('socket destroyed during download');
    hash.update(chunk);
    if (!socket.write(chunk)) {
      await new Promise<void>((resolve, reject) => {
        const onDrain = (): void => { socket.off('close', onClose); resolve(); };
        const onClose = (): void => { socket.off('drain', onDrain); reject(new Error('socket closed during download')); };
        socket.once('drain', onDrain);
        socket.once('close', onClose);
      });
    }
  }
}

function handle(socket: net.Socket, seed: number, forcedDownload: number | undefined): void {
  const started = Date.now();
  const uploadHash = createHash('sha256');
  const downloadHash = createHash('sha256');
  let header = Buffer.alloc(0);
  let uploadBytes = 0;
  let downloadBytes = -1;
  let uploadDone = false;
  let downloadDone = false;
  let reported = false;
  const ids = { remoteAddress: socket.remoteAddress, remotePort: socket.remotePort, localAddress: socket.localAddress, localPort: socket.localPort };

  // Our FIN goes out only once the download is written AND the client's FIN has arrived, so the
  // client's elapsed time (connect → our FIN) covers its whole upload, not just its send buffer.
  const maybeEnd = (): void => {
    if (reported || !uploadDone || !downloadDone) return;
    socket.end(report);
  };
  const report = (): void => {
    if (reported) return;
    reported = true;
    emit({
      event: 'conn',
      uploadBytes,
      uploadSha256: uploadHash.digest('hex'),
      downloadBytes,
      downloadSha256: downloadHash.digest('hex'),
      ...ids,
      elapsedMs: Date.now() - started,
    });
  };
  const fail = (err: Error): void => {
    if (reported) return;
    reported = true;
    emit({ event: 'error', message: err.message, code: (err as NodeJS.ErrnoException).code, uploadBytes, ...ids });
    socket.destroy();
  };

  socket.setTimeout(IDLE_TIMEOUT_MS, () => fail(new Error(`idle for ${IDLE_TIMEOUT_MS} ms`)));
  socket.on('error', fail);
  socket.on('data', (chunk: Buffer) => {
    if (downloadBytes < 0) {
      header = Buffer.concat([header, chunk]);
      if (header.length < BLOB_HEADER_BYTES) return;
      const requested = decodeBlobHeader(header);
      downloadBytes = forcedDownload ?? requested;
      chunk = header.subarray(BLOB_HEADER_BYTES);
      // Stream the download concurrently with the upload.
      writeAll(socket, seed, downloadBytes, downloadHash).then(() => {
        downloadDone = true;
        maybeEnd();
      }, fail);
    }
    uploadBytes += chunk.length;
    uploadHash.update(chunk);
  });
  socket.on('end', () => {
    if (downloadBytes < 0) {
      fail(new Error(`client closed after ${header.length} header bytes (need ${BLOB_HEADER_BYTES})`));
      return;
    }
    // The client's FIN: its upload is complete; we write nothing beyond the download.
    uploadDone = true;
    maybeEnd();
  });
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      host: { type: 'string', default: '0.0.0.0' },
      port: { type: 'string', default: '0' },
      'download-bytes': { type: 'string' },
      seed: { type: 'string' },
      mptcp: { type: 'boolean', default: false },
    },
    strict: true,
  });
  const seed = values.seed === undefined ? DEFAULT_DOWNLOAD_SEED : parseSeed(values.seed);
  const forced = values['download-bytes'] === undefined ? undefined : parseByteCount(values['download-bytes']);
  const server = net.createServer({ allowHalfOpen: true }, (socket) => handle(socket, seed, forced));
  server.on('error', (err) => {
    process.stderr.write(`peer-blob-server: ${err.message}\n`);
    process.exit(2);
  });
  const printPort = (): void => {
    const addr = server.address() as net.AddressInfo;
    process.stdout.write(`listening ${addr.port}\n`);
  };
  if (values.mptcp) {
    const { listenMptcp } = await import('../../src/mptcp/index.js');
    await listenMptcp(server, { host: values.host, port: Number(values.port), mode: 'on' });
    printPort();
  } else {
    server.listen({ host: values.host, port: Number(values.port) }, printPort);
  }
  process.on('SIGTERM', () => {
    server.close();
    process.exit(0);
  });
}

main().catch((err: unknown) => {
  process.stderr.write(`peer-blob-server: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(2);
});
