#!/usr/bin/env node
/**
 * Short-connection load generator: N concurrent workers, each opening a fresh connection per
 * request (MPTCP through our addon's connectMptcp, or plain TCP), bounded by a duration and a
 * request count, whichever comes first. Every exchange is verified:
 *   --mode http: sends `GET <target> HTTP/1.1` with `Connection: close`, reads to EOF, needs a
 *                200 status and exactly --expect-body bytes of body;
 *   --mode http-one: one request per connection without `Connection: close` (as a one-URL curl
 *                run sends it), the response read by its Content-Length, then the client closes;
 *   --mode echo: sends --echo-bytes bytes, reads the same bytes back, closes;
 *   --mode http-keepalive: like http, but each worker keeps one connection and sends its requests
 *                on it one after another (no `Connection: close`), each response read by its
 *                Content-Length: exchanges on a live connection, where only processing counts.
 * Prints one JSON line: {"event":"done","ok","errors","firstError","elapsedMs","rate","p50Ms","p90Ms"}.
 */
import * as net from 'node:net';
import { parseArgs } from 'node:util';
import { connectMptcp } from '../../src/mptcp/index.js';

const { values } = parseArgs({
  options: {
    host: { type: 'string' },
    port: { type: 'string' },
    mode: { type: 'string', default: 'http' },
    target: { type: 'string', default: '/' },
    'host-header': { type: 'string', default: 'origin' },
    'expect-body': { type: 'string', default: '0' },
    'echo-bytes': { type: 'string', default: '100' },
    concurrency: { type: 'string', default: '16' },
    'duration-ms': { type: 'string', default: '5000' },
    'max-requests': { type: 'string', default: '5000' },
    'timeout-ms': { type: 'string', default: '5000' },
    mptcp: { type: 'boolean', default: false },
  },
  strict: true,
});
if (!values.host || !values.port) {
  process.stderr.write('conn-load: --host and --port are required\n');
  process.exit(2);
}
const host = values.host;
const port = Number(values.port);
const mode = values.mode === 'echo' ? 'echo' : values.mode === 'http-keepalive' ? 'http-keepalive' : values.mode === 'http-one' ? 'http-one' : 'http';
const expectBody = Number(values['expect-body']);
const echoPayload = Buffer.alloc(Number(values['echo-bytes']), 0x61);
const request = Buffer.from(`GET ${values.target} HTTP/1.1\r\nHost: ${values['host-header']}\r\nUser-Agent: mptcp-bench\r\nConnection: close\r\n\r\n`);
const concurrency = Number(values.concurrency);
const durationMs = Number(values['duration-ms']);
const maxRequests = Number(values['max-requests']);
const timeoutMs = Number(values['timeout-ms']);

const keepAliveRequest = Buffer.from(`GET ${values.target} HTTP/1.1\r\nHost: ${values['host-header']}\r\nUser-Agent: mptcp-bench\r\n\r\n`);

function open(): net.Socket {
  return values.mptcp ? connectMptcp({ host, port, mptcp: true }) : net.connect({ host, port });
}

/** One verified exchange; resolves with an error message or undefined. */
function exchange(): Promise<string | undefined> {
  return new Promise((resolve) => {
    const s = open();
    const chunks: Buffer[] = [];
    let got = 0;
    let settled = false;
    const done = (err: string | undefined): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      s.destroy();
      resolve(err);
    };
    const timer = setTimeout(() => done(`timeout after ${timeoutMs} ms (${got} bytes)`), timeoutMs);
    s.on('error', (e: NodeJS.ErrnoException) => done(`${e.code ?? 'error'}: ${e.message}`));
    s.on('connect', () => s.write(mode === 'http' ? request : mode === 'http-one' ? keepAliveRequest : echoPayload));
    s.on('data', (c: Buffer) => {
      chunks.push(c);
      got += c.length;
      if (mode === 'http-one') {
        const all = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
        const headerEnd = all.indexOf('\r\n\r\n');
        if (headerEnd < 0) return;
        const head = all.subarray(0, headerEnd).toString('latin1');
        const length = Number(/\r\ncontent-length:\s*(\d+)/i.exec(head)?.[1] ?? NaN);
        if (!Number.isFinite(length)) return done('response without Content-Length');
        if (all.length < headerEnd + 4 + length) return;
        const status = /^HTTP\/1\.[01] (\d{3})/.exec(head)?.[1];
        if (status !== '200') return done(`status ${status ?? 'unparsable'}`);
        if (length !== expectBody) return done(`body ${length} bytes, expected ${expectBody}`);
        settled = true;
        clearTimeout(timer);
        // The client closes first, as curl does after its one URL on a kept-alive connection.
        s.end(() => resolve(undefined));
        return;
      }
      if (mode === 'echo' && got >= echoPayload.length) {
        const all = Buffer.concat(chunks);
        if (!all.subarray(0, echoPayload.length).equals(echoPayload) || got !== echoPayload.length) done(`echo mismatch (${got} bytes)`);
        else {
          settled = true;
          clearTimeout(timer);
          // Our side closes first, as a client that got its answer does.
          s.end(() => resolve(undefined));
          s.once('close', () => undefined);
        }
      }
    });
    s.on('end', () => {
      if (mode === 'http-one') return done(`closed by the proxy after ${got} bytes`);
      if (mode === 'echo') {
        done(got === echoPayload.length ? undefined : `closed after ${got} echo bytes`);
        return;
      }
      const all = Buffer.concat(chunks);
      const headerEnd = all.indexOf('\r\n\r\n');
      if (headerEnd < 0) return done(`no response head (${got} bytes)`);
      const status = /^HTTP\/1\.[01] (\d{3})/.exec(all.subarray(0, Math.min(headerEnd, 64)).toString('latin1'))?.[1];
      if (status !== '200') return done(`status ${status ?? 'unparsable'}`);
      const body = all.length - headerEnd - 4;
      done(body === expectBody ? undefined : `body ${body} bytes, expected ${expectBody}`);
    });
  });
}

/**
 * One worker's keep-alive connection: `next()` sends a request and resolves with an error message
 * or undefined once the whole response (head + Content-Length body) is in.
 */
function keepAliveConnection(): { next: () => Promise<string | undefined>; close: () => void } {
  const s = open();
  let buf: Buffer = Buffer.alloc(0);
  let pending: ((err: string | undefined) => void) | undefined;
  let failure: string | undefined;
  const settle = (err: string | undefined): void => {
    const p = pending;
    pending = undefined;
    p?.(err);
  };
  const connected = new Promise<void>((resolve) => s.once('connect', () => resolve()));
  s.on('error', (e: NodeJS.ErrnoException) => {
    failure = `${e.code ?? 'error'}: ${e.message}`;
    settle(failure);
  });
  s.on('end', () => {
    failure ??= 'connection closed by the proxy';
    settle(failure);
  });
  s.on('data', (c: Buffer) => {
    buf = buf.length === 0 ? c : Buffer.concat([buf, c]);
    const headerEnd = buf.indexOf('\r\n\r\n');
    if (headerEnd < 0 || pending === undefined) return;
    const head = buf.subarray(0, headerEnd).toString('latin1');
    const length = Number(/\r\ncontent-length:\s*(\d+)/i.exec(head)?.[1] ?? NaN);
    if (!Number.isFinite(length)) return settle('response without Content-Length');
    if (buf.length < headerEnd + 4 + length) return;
    buf = buf.subarray(headerEnd + 4 + length);
    const status = /^HTTP\/1\.[01] (\d{3})/.exec(head)?.[1];
    settle(status !== '200' ? `status ${status ?? 'unparsable'}` : length !== expectBody ? `body ${length} bytes, expected ${expectBody}` : undefined);
  });
  return {
    next: async () => {
      if (failure !== undefined) return failure;
      await connected;
      return new Promise((resolve) => {
        const timer = setTimeout(() => settle(`timeout after ${timeoutMs} ms`), timeoutMs);
        pending = (err) => {
          clearTimeout(timer);
          resolve(err);
        };
        s.write(keepAliveRequest);
      });
    },
    close: () => s.destroy(),
  };
}

const started = performance.now();
const deadline = started + durationMs;
let launched = 0;
let ok = 0;
let errors = 0;
let firstError: string | undefined;
const latencies: number[] = [];

async function worker(): Promise<void> {
  const conn = mode === 'http-keepalive' ? keepAliveConnection() : undefined;
  while (launched < maxRequests && performance.now() < deadline) {
    launched++;
    const t0 = performance.now();
    const err = conn !== undefined ? await conn.next() : await exchange();
    if (err === undefined) {
      ok++;
      latencies.push(performance.now() - t0);
    } else {
      errors++;
      firstError ??= err;
    }
  }
  conn?.close();
}

await Promise.all(Array.from({ length: concurrency }, () => worker()));
const elapsedMs = performance.now() - started;
latencies.sort((a, b) => a - b);
const pct = (p: number): number | undefined => latencies[Math.min(latencies.length - 1, Math.floor((p / 100) * latencies.length))];
process.stdout.write(
  `${JSON.stringify({ event: 'done', mode, ok, errors, firstError, elapsedMs: Math.round(elapsedMs), rate: ok / (elapsedMs / 1000), p50Ms: pct(50), p90Ms: pct(90) })}\n`,
);
process.exit(0);
