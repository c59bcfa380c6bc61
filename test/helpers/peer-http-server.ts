/**
 * A small HTTP(S) origin for netns tests, run as its own process inside a namespace:
 *   GET  /blob/<bytes>  → <bytes> of deterministic content (DEFAULT_DOWNLOAD_SEED), Content-Length
 *   POST /sha256        → the SHA-256 (hex) of the request body
 *   GET  /peer          → the remote port of the connection it came on (which connection served it)
 * Prints "listening <port>" once bound. With --cert and --key it serves HTTPS.
 *
 *   node peer-http-server.js [--host 0.0.0.0] [--port 0] [--cert cert.pem --key key.pem]
 */
import { createServer as createHttpServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { blobChunks, DEFAULT_DOWNLOAD_SEED } from './peer-blob-content.js';

const { values } = parseArgs({
  options: {
    host: { type: 'string', default: '0.0.0.0' },
    port: { type: 'string', default: '0' },
    cert: { type: 'string' },
    key: { type: 'string' },
  },
});
if ((values.cert === undefined) !== (values.key === undefined)) {
  process.stderr.write('peer-http-server: --cert and --key go together\n');
  process.exit(2);
}

function handle(req: IncomingMessage, res: ServerResponse): void {
  const blob = /^\/blob\/(\d+)$/.exec(req.url ?? '');
  if (req.method === 'GET' && blob) {
    const length = Number(blob[1]);
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': length });
    const chunks = blobChunks(DEFAULT_DOWNLOAD_SEED, length);
    const pump = (): void => {
      for (let r = chunks.next(); !r.done; r = chunks.next()) {
        if (!res.write(r.value)) {
          res.once('drain', pump);
          return;
        }
      }
      res.end();
    };
    pump();
    return;
  }
  if (req.method === 'GET' && req.url === '/peer') {
    const port = String(req.socket.remotePort ?? 0);
    res.writeHead(200, { 'content-type': 'text/plain', 'content-length': port.length }).end(port);
    return;
  }
  if (req.method === 'POST' && req.url === '/sha256') {
    const hash = createHash('sha256');
    req.on('data', (c: Buffer) => hash.update(c));
    req.on('end', () => res.end(hash.digest('hex')));
    return;
  }
  res.writeHead(404).end('not found\n');
}

const server =
  values.cert && values.key
    ? createHttpsServer({ cert: readFileSync(values.cert), key: readFileSync(values.key) }, handle)
    : createHttpServer(handle);
server.listen(Number(values.port), values.host, () => {
  const a = server.address();
  process.stdout.write(`listening ${typeof a === 'object' && a ? a.port : 0}\n`);
});
process.on('SIGTERM', () => process.exit(0));
