#!/usr/bin/env node
/**
 * Opens N idle connections through a proxy and holds them: each connects (MPTCP via our addon),
 * for --mode connect first sends `CONNECT <target>` and waits for the 200 (--mode socks5: a SOCKS5
 * greeting with no auth, then CONNECT to the IPv4 target, and waits for its success reply), then sends one byte and
 * waits for its echo (so the upstream leg exists too), then stays idle. At most --parallel
 * handshakes at a time; bounded by --timeout-ms. Prints
 *   {"event":"ready","open":N,"failed":F,"firstError":...,"elapsedMs":...}
 * and holds the connections until SIGTERM or --hold-ms.
 */
import * as net from 'node:net';
import { parseArgs } from 'node:util';
import { connectMptcp } from '../../src/mptcp/index.js';

const { values } = parseArgs({
  options: {
    host: { type: 'string' },
    port: { type: 'string' },
    count: { type: 'string', default: '1000' },
    mode: { type: 'string', default: 'forward' },
    target: { type: 'string' },
    parallel: { type: 'string', default: '64' },
    'timeout-ms': { type: 'string', default: '60000' },
    'hold-ms': { type: 'string', default: '120000' },
  },
  strict: true,
});
const host = values.host as string;
const port = Number(values.port);
const count = Number(values.count);
const parallel = Number(values.parallel);
const open: net.Socket[] = [];
let failed = 0;
let firstError: string | undefined;
const started = performance.now();
const deadline = started + Number(values['timeout-ms']);

/** --mode socks5: the CONNECT request for --target (an IPv4 host:port). */
const socksConnect = ((): Buffer => {
  if (values.mode !== 'socks5') return Buffer.alloc(0);
  const m = /^(\d+)\.(\d+)\.(\d+)\.(\d+):(\d+)$/.exec(values.target ?? '');
  if (m === null) throw new Error(`--mode socks5 needs --target a.b.c.d:port, not ${values.target}`);
  const port = Number(m[5]);
  return Buffer.from([5, 1, 0, 1, Number(m[1]), Number(m[2]), Number(m[3]), Number(m[4]), port >> 8, port & 0xff]);
})();

function one(): Promise<void> {
  return new Promise((resolve) => {
    const s = connectMptcp({ host, port, mptcp: true });
    let buf = Buffer.alloc(0);
    let phase: 'connect' | 'greeting' | 'socks-reply' | 'echo' = values.mode === 'connect' ? 'connect' : values.mode === 'socks5' ? 'greeting' : 'echo';
    const fail = (why: string): void => {
      failed++;
      firstError ??= why;
      s.destroy();
      resolve();
    };
    const timer = setTimeout(() => fail('handshake timeout'), Math.max(1, deadline - performance.now()));
    s.on('error', (e: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      fail(`${e.code}: ${e.message}`);
    });
    s.on('connect', () => {
      if (phase === 'connect') s.write(`CONNECT ${values.target} HTTP/1.1\r\nHost: ${values.target}\r\n\r\n`);
      else if (phase === 'greeting') s.write(Buffer.from([5, 1, 0])); // SOCKS5, one method: no auth
      else s.write('x');
    });
    s.on('data', (c: Buffer) => {
      buf = Buffer.concat([buf, c]);
      if (phase === 'greeting') {
        if (buf.length < 2) return;
        if (buf[0] !== 5 || buf[1] !== 0) {
          clearTimeout(timer);
          fail(`SOCKS5 method refused: ${buf.subarray(0, 2).toString('hex')}`);
          return;
        }
        buf = buf.subarray(2);
        phase = 'socks-reply';
        s.write(socksConnect);
        return;
      }
      if (phase === 'socks-reply') {
        // VER REP RSV ATYP(1: IPv4) BND.ADDR(4) BND.PORT(2): 10 bytes.
        if (buf.length < 10) return;
        if (buf[1] !== 0) {
          clearTimeout(timer);
          fail(`SOCKS5 CONNECT refused: reply ${buf[1]}`);
          return;
        }
        buf = buf.subarray(10);
        phase = 'echo';
        s.write('x');
        return;
      }
      if (phase === 'connect') {
        const end = buf.indexOf('\r\n\r\n');
        if (end < 0) return;
        if (!/^HTTP\/1\.[01] 200/.test(buf.subarray(0, end).toString('latin1'))) {
          clearTimeout(timer);
          fail(`CONNECT refused: ${buf.subarray(0, 40).toString('latin1')}`);
          return;
        }
        buf = buf.subarray(end + 4);
        phase = 'echo';
        s.write('x');
        return;
      }
      if (buf.length >= 1) {
        clearTimeout(timer);
        if (buf.toString('latin1') !== 'x') {
          fail('echo mismatch');
          return;
        }
        s.removeAllListeners('data');
        s.on('error', () => undefined);
        open.push(s);
        resolve();
      }
    });
  });
}

let next = 0;
async function worker(): Promise<void> {
  while (next < count && performance.now() < deadline) {
    next++;
    await one();
  }
}
await Promise.all(Array.from({ length: parallel }, () => worker()));
process.stdout.write(`${JSON.stringify({ event: 'ready', open: open.length, failed, firstError, elapsedMs: Math.round(performance.now() - started) })}\n`);
const hold = setTimeout(() => process.exit(0), Number(values['hold-ms']));
process.on('SIGTERM', () => {
  clearTimeout(hold);
  for (const s of open) s.destroy();
  process.exit(0);
});
