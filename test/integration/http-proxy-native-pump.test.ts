/**
 * The HTTP front-end with large bodies, for both engines: with 'native' the bodies go through
 * the native body pump (FrontendDeps.pump), with 'js' through the JS loops, and everything a
 * client or origin can see — bytes, keep-alive, pipelining, pool reuse, truncation on
 * failure — and the byte accounting must be the same. MPTCP_PROXY_RELAY=native|js runs one.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import type http from 'node:http';
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { createAccessPolicy } from '../../src/access/policy.js';
import { createConnectionContext, type ConnectionContext } from '../../src/core/context.js';
import { ErrorCode } from '../../src/core/errors.js';
import { createLogger } from '../../src/core/logger.js';
import { createHttpFrontend } from '../../src/frontends/http/index.js';
import type { Frontend } from '../../src/frontends/types.js';
import { canPumpNative, relayBothWays, selectBodyPump, selectRelay, type BodyPump, type PumpResult } from '../../src/relay/index.js';
import { createDialer } from '../../src/upstream/dialer.js';
import { readBody, startOrigin, startTcpOrigin, testAccessConfig, testHttpListenerConfig } from '../helpers/http-proxy-harness.js';

const MB = 1024 * 1024;
const HOST = '127.0.0.1';

type Engine = 'native' | 'js';
const fromEnv = process.env.MPTCP_PROXY_RELAY;
const engines: Engine[] = fromEnv === 'native' || fromEnv === 'js' ? [fromEnv] : ['native', 'js'];

interface PumpingProxy {
  port: number;
  contexts: ConnectionContext[];
  logs: Array<Record<string, unknown>>;
  /** Every pump run (native engine only), with its options' length and its result. */
  pumps: Array<{ length: number | 'eof'; result?: PumpResult }>;
  settled(): Promise<void>;
  close(): Promise<void>;
}

/** The real HTTP front-end, dialer and access policy behind a loopback listener, with the
 *  relay and body pump of `engine` (as src/main.ts wires them). */
async function startProxy(engine: Engine, opts: { idleTimeoutMs?: number } = {}): Promise<PumpingProxy> {
  const cfg = testHttpListenerConfig({ name: 'http-pump-test', listen: { host: HOST, port: 0 } });
  const logs: Array<Record<string, unknown>> = [];
  const log = createLogger({ level: 'debug', format: 'json', sink: { write: (l) => logs.push(JSON.parse(l) as Record<string, unknown>) } });
  const access = await createAccessPolicy(testAccessConfig());
  const dial = createDialer({ mptcp: 'off', connectTimeoutMs: 2000, dnsTimeoutMs: 2000, happyEyeballsDelayMs: 250 }, access, log);
  const pumps: PumpingProxy['pumps'] = [];
  const real = selectBodyPump(engine);
  const pump: BodyPump | undefined =
    real &&
    (async (from, to, o) => {
      const entry: PumpingProxy['pumps'][number] = { length: o.length };
      pumps.push(entry);
      entry.result = await real(from, to, o);
      return entry.result;
    });
  const relay = engine === 'native' ? selectRelay('native') : relayBothWays;
  const frontend: Frontend = createHttpFrontend(cfg, { dial, relay, access, log, ...(pump ? { pump } : {}) }, { idleTimeoutMs: opts.idleTimeoutMs ?? 0 });
  const contexts: ConnectionContext[] = [];
  const handles: Promise<void>[] = [];
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    const ctx = createConnectionContext({
      listener: cfg.name,
      frontend: 'http',
      downstream: { remote: { address: HOST, port: socket.remotePort ?? 0 }, local: { address: HOST, port: socket.localPort ?? 0 }, mptcp: false },
      log,
    });
    contexts.push(ctx);
    handles.push(frontend.handle(socket, ctx));
  });
  server.listen(0, HOST);
  await once(server, 'listening');
  return {
    port: (server.address() as net.AddressInfo).port,
    contexts,
    logs,
    pumps,
    settled: async () => {
      await Promise.all(handles);
    },
    close: async () => {
      server.close();
      frontend.close?.();
      for (const s of sockets) s.destroy();
      await Promise.all(handles);
    },
  };
}

interface RawResponse {
  status: number;
  headers: Map<string, string>;
  head: string;
  body: Buffer;
}

/** A raw client connection that reads responses one at a time (Content-Length or close). */
class RawClient {
  readonly socket: net.Socket;
  /** Bytes written to the proxy. */
  sent = 0;
  #buf: Buffer = Buffer.alloc(0);
  #closed = false;
  #wake: (() => void) | null = null;

  private constructor(socket: net.Socket) {
    this.socket = socket;
    socket.on('data', (d: Buffer) => {
      this.#buf = this.#buf.length === 0 ? d : Buffer.concat([this.#buf, d]);
      this.#notify();
    });
    socket.on('error', () => {});
    socket.on('close', () => {
      this.#closed = true;
      this.#notify();
    });
  }

  static async connect(port: number): Promise<RawClient> {
    const socket = net.connect(port, HOST);
    await once(socket, 'connect');
    return new RawClient(socket);
  }

  get closed(): boolean {
    return this.#closed;
  }

  write(data: string | Buffer): void {
    const b = typeof data === 'string' ? Buffer.from(data, 'latin1') : data;
    this.sent += b.length;
    this.socket.write(b);
  }

  #notify(): void {
    const w = this.#wake;
    this.#wake = null;
    w?.();
  }

  async #more(): Promise<boolean> {
    if (this.#closed) return false;
    await new Promise<void>((resolve) => {
      this.#wake = resolve;
    });
    return true;
  }

  /** The next response; a body without Content-Length runs to the close. With `partial`, a
   *  close before the end returns what arrived instead of failing. */
  async readResponse(partial = false): Promise<RawResponse> {
    let end: number;
    while ((end = this.#buf.indexOf('\r\n\r\n')) < 0) {
      if (!(await this.#more())) throw new Error(`closed before a response head: ${JSON.stringify(this.#buf.toString('latin1'))}`);
    }
    const head = this.#buf.subarray(0, end).toString('latin1');
    this.#buf = this.#buf.subarray(end + 4);
    const [statusLine, ...lines] = head.split('\r\n');
    const headers = new Map(lines.map((l) => [l.slice(0, l.indexOf(':')).toLowerCase(), l.slice(l.indexOf(':') + 1).trim()]));
    const status = Number(statusLine!.split(' ')[1]);
    const length = headers.has('content-length') ? Number(headers.get('content-length')) : undefined;
    for (;;) {
      if (length !== undefined && this.#buf.length >= length) break;
      if (!(await this.#more())) {
        if (length === undefined || partial) break;
        throw new Error(`closed after ${this.#buf.length} of ${length} body bytes`);
      }
    }
    const n = length === undefined ? this.#buf.length : Math.min(length, this.#buf.length);
    const body = this.#buf.subarray(0, n);
    this.#buf = this.#buf.subarray(n);
    return { status, headers, head, body };
  }

  /** Resolves once the proxy closed the connection. */
  async waitClosed(): Promise<void> {
    while (await this.#more()) {
      /* keep collecting */
    }
  }
}

function sha256(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

/** An origin serving fixed random bodies by path (`/blob/<bytes>`), /echo (length + sha of
 *  the request body), and counting what it writes per connection for the accounting checks. */
async function blobOrigin() {
  const blobs = new Map<number, Buffer>();
  const blob = (n: number): Buffer => {
    let b = blobs.get(n);
    if (b === undefined) blobs.set(n, (b = randomBytes(n)));
    return b;
  };
  const sockets = new Set<net.Socket>();
  const origin = await startOrigin((req: http.IncomingMessage, res: http.ServerResponse) => {
    sockets.add(req.socket);
    const url = req.url ?? '/';
    if (url.startsWith('/echo')) {
      void readBody(req).then((body) => res.end(`len=${body.length} sha=${sha256(body)}`));
      return;
    }
    if (url === '/stream-back') {
      // The response streams while the request body is still arriving: both bodies are in
      // flight at once, in opposite directions on the same two connections.
      res.setHeader('Content-Length', req.headers['content-length'] ?? '0');
      req.pipe(res);
      return;
    }
    const m = /^\/blob\/(\d+)$/.exec(url);
    if (m) {
      const b = blob(Number(m[1]));
      res.setHeader('Content-Length', String(b.length));
      res.end(b);
      return;
    }
    res.setHeader('Content-Length', String(`hello ${url}`.length));
    res.end(`hello ${url}`);
  });
  return {
    origin,
    blob,
    /** Bytes the origin wrote on all its connections (what the proxy read from upstream). */
    written: () => [...sockets].reduce((n, s) => n + s.bytesWritten, 0),
  };
}

function get(port: number, path: string, extra = ''): string {
  return `GET http://${HOST}:${port}${path} HTTP/1.1\r\nHost: x\r\n${extra}\r\n`;
}

for (const engine of engines) {
  const skip = engine === 'native' && !canPumpNative() ? 'native addon not built with pumpStart' : false;
  describe(`HTTP bodies, relay engine ${engine}`, { skip }, () => {
    test('keep-alive: four large responses on one client connection arrive intact over one pooled upstream connection, counted exactly', async (t) => {
      const o = await blobOrigin();
      const proxy = await startProxy(engine);
      t.after(async () => {
        await proxy.close();
        await o.origin.close();
      });
      const client = await RawClient.connect(proxy.port);
      t.after(() => client.socket.destroy());
      for (const size of [MB, 3 * MB + 1, 200 * 1024, 5 * MB]) {
        client.write(get(o.origin.port, `/blob/${size}`));
        const res = await client.readResponse();
        assert.equal(res.status, 200);
        assert.equal(res.body.length, size);
        assert.equal(sha256(res.body), sha256(o.blob(size)));
      }
      // A small body after the large ones still goes through JS, on the same connections.
      client.write(get(o.origin.port, '/small'));
      assert.equal((await client.readResponse()).body.toString(), 'hello /small');
      client.socket.end();
      await proxy.settled();
      assert.equal(o.origin.connections, 1, 'one upstream connection served all five');
      const ctx = proxy.contexts[0]!;
      assert.equal(ctx.bytes.fromUpstream, o.written(), 'every upstream byte counted once');
      assert.equal(ctx.bytes.fromDownstream, client.sent);
      if (engine === 'native') {
        assert.deepEqual(
          proxy.pumps.map((p) => p.result?.endedBy),
          ['done', 'done', 'done', 'done'],
        );
      } else assert.equal(proxy.pumps.length, 0);

      // The pooled upstream connection serves a second client connection.
      const second = await RawClient.connect(proxy.port);
      t.after(() => second.socket.destroy());
      second.write(get(o.origin.port, `/blob/${2 * MB}`, 'Connection: close\r\n'));
      const res = await second.readResponse();
      assert.equal(sha256(res.body), sha256(o.blob(2 * MB)));
      await second.waitClosed();
      assert.equal(o.origin.connections, 1, 'taken from the pool');
    });

    test('pipelining: three requests in one write, two large responses and a small one, in order and intact', async (t) => {
      const o = await blobOrigin();
      const proxy = await startProxy(engine);
      t.after(async () => {
        await proxy.close();
        await o.origin.close();
      });
      const client = await RawClient.connect(proxy.port);
      t.after(() => client.socket.destroy());
      client.write(get(o.origin.port, `/blob/${2 * MB}`) + get(o.origin.port, '/tiny') + get(o.origin.port, `/blob/${MB + 7}`));
      const a = await client.readResponse();
      const b = await client.readResponse();
      const c = await client.readResponse();
      assert.equal(sha256(a.body), sha256(o.blob(2 * MB)));
      assert.equal(b.body.toString(), 'hello /tiny');
      assert.equal(sha256(c.body), sha256(o.blob(MB + 7)));
      client.socket.end();
      await proxy.settled();
      assert.equal(proxy.contexts[0]!.bytes.fromUpstream, o.written());
      assert.equal(proxy.contexts[0]!.bytes.fromDownstream, client.sent);
    });

    test('a 4 MiB request body with the next request pipelined behind it: the body arrives intact and the next request is served', async (t) => {
      const o = await blobOrigin();
      const proxy = await startProxy(engine);
      t.after(async () => {
        await proxy.close();
        await o.origin.close();
      });
      const client = await RawClient.connect(proxy.port);
      t.after(() => client.socket.destroy());
      const body = randomBytes(4 * MB);
      client.write(`POST http://${HOST}:${o.origin.port}/echo HTTP/1.1\r\nHost: x\r\nContent-Length: ${body.length}\r\n\r\n`);
      client.write(Buffer.concat([body, Buffer.from(get(o.origin.port, '/after-post'))]));
      const echoed = await client.readResponse();
      assert.equal(echoed.body.toString(), `len=${body.length} sha=${sha256(body)}`);
      const next = await client.readResponse();
      assert.equal(next.body.toString(), 'hello /after-post');
      client.socket.end();
      await proxy.settled();
      assert.equal(proxy.contexts[0]!.bytes.fromDownstream, client.sent, 'the body and the next request counted once');
      if (engine === 'native') assert.ok(proxy.pumps.some((p) => typeof p.length === 'number' && p.result?.endedBy === 'done'));
    });

    test('an origin that streams an 8 MiB request body straight back: both bodies in flight at once, intact, and the connection serves the next request', async (t) => {
      const o = await blobOrigin();
      const proxy = await startProxy(engine);
      t.after(async () => {
        await proxy.close();
        await o.origin.close();
      });
      const client = await RawClient.connect(proxy.port);
      t.after(() => client.socket.destroy());
      const body = randomBytes(8 * MB);
      client.write(`POST http://${HOST}:${o.origin.port}/stream-back HTTP/1.1\r\nHost: x\r\nContent-Length: ${body.length}\r\n\r\n`);
      client.write(body);
      const res = await client.readResponse();
      assert.equal(res.body.length, body.length);
      assert.equal(sha256(res.body), sha256(body));
      client.write(get(o.origin.port, '/after'));
      assert.equal((await client.readResponse()).body.toString(), 'hello /after');
      client.socket.end();
      await proxy.settled();
      assert.equal(proxy.contexts[0]!.bytes.fromDownstream, client.sent);
      assert.equal(proxy.contexts[0]!.bytes.fromUpstream, o.written());
      if (engine === 'native') assert.equal(proxy.pumps.filter((p) => p.result?.endedBy === 'done').length, 2, 'one pump each way');
    });

    test('a client that dies mid-request-body makes the proxy close the upstream request', async (t) => {
      let aborted!: (complete: boolean) => void;
      const upstreamClosed = new Promise<boolean>((resolve) => {
        aborted = resolve;
      });
      const origin = await startOrigin((req) => {
        req.on('data', () => {});
        req.on('close', () => aborted(req.complete));
      });
      const proxy = await startProxy(engine);
      t.after(async () => {
        await proxy.close();
        await origin.close();
      });
      const client = await RawClient.connect(proxy.port);
      client.write(`POST http://${HOST}:${origin.port}/upload HTTP/1.1\r\nHost: x\r\nContent-Length: ${4 * MB}\r\n\r\n`);
      client.write(randomBytes(MB));
      await sleep(100);
      client.socket.destroy();
      assert.equal(await upstreamClosed, false, 'the origin saw an incomplete body');
      await proxy.settled();
      assert.equal(proxy.contexts[0]!.bytes.fromDownstream, client.sent);
      if (engine === 'native') assert.ok(['eof', 'error'].includes(proxy.pumps[0]?.result?.endedBy ?? ''), JSON.stringify(proxy.pumps));
    });

    test('an HTTP/1.0 close-delimited 3 MiB response reaches the client completely, and the client connection is closed after it', async (t) => {
      const payload = randomBytes(3 * MB);
      const legacy = await startTcpOrigin((s) => {
        s.once('data', () => {
          s.write('HTTP/1.0 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n');
          s.end(payload);
        });
      });
      const proxy = await startProxy(engine);
      t.after(async () => {
        await proxy.close();
        legacy.close();
      });
      const client = await RawClient.connect(proxy.port);
      t.after(() => client.socket.destroy());
      client.write(get(legacy.port, '/'));
      const res = await client.readResponse();
      assert.equal(res.status, 200);
      assert.match(res.head, /\r\nConnection: close(\r\n|$)/);
      assert.equal(res.body.length, payload.length);
      assert.equal(sha256(res.body), sha256(payload));
      assert.ok(client.closed);
      if (engine === 'native') assert.deepEqual(proxy.pumps.map((p) => [p.length, p.result?.endedBy]), [['eof', 'done']]);
    });

    test('an origin that dies mid-body: the client gets the head and the bytes that came, then a close, no 502', async (t) => {
      const sent = randomBytes(MB);
      const legacy = await startTcpOrigin((s) => {
        s.once('data', () => {
          s.write(`HTTP/1.1 200 OK\r\nContent-Length: ${4 * MB}\r\n\r\n`);
          s.write(sent, () => setTimeout(() => s.destroy(), 50));
        });
      });
      const proxy = await startProxy(engine);
      t.after(async () => {
        await proxy.close();
        legacy.close();
      });
      const client = await RawClient.connect(proxy.port);
      t.after(() => client.socket.destroy());
      client.write(get(legacy.port, '/'));
      const res = await client.readResponse(true);
      assert.equal(res.status, 200);
      assert.equal(sha256(res.body), sha256(sent), 'exactly the bytes the origin sent');
      assert.ok(client.closed);
      await proxy.settled();
      const aborted = proxy.logs.find((l) => l.msg === 'http exchange aborted after response started');
      assert.equal(aborted?.code, ErrorCode.UPSTREAM_RESET);
      assert.equal(proxy.contexts[0]!.access.status, 200);
      if (engine === 'native') assert.deepEqual(proxy.pumps.map((p) => p.result?.endedBy), ['eof']);
    });

    test('an origin that stalls mid-body is cut after the idle timeout: truncated response, then close', async (t) => {
      const legacy = await startTcpOrigin((s) => {
        s.once('data', () => {
          s.write(`HTTP/1.1 200 OK\r\nContent-Length: ${4 * MB}\r\n\r\n`);
          s.write(Buffer.alloc(300 * 1024, 0x62));
        });
        s.on('error', () => {});
      });
      const proxy = await startProxy(engine, { idleTimeoutMs: 300 });
      t.after(async () => {
        await proxy.close();
        legacy.close();
      });
      const client = await RawClient.connect(proxy.port);
      t.after(() => client.socket.destroy());
      const started = performance.now();
      client.write(get(legacy.port, '/'));
      const res = await client.readResponse(true);
      assert.equal(res.body.length, 300 * 1024);
      assert.ok(performance.now() - started >= 290, 'not before the idle timeout');
      await proxy.settled();
      const aborted = proxy.logs.find((l) => l.msg === 'http exchange aborted after response started');
      assert.equal(aborted?.code, ErrorCode.IDLE_TIMEOUT);
      if (engine === 'native') assert.deepEqual(proxy.pumps.map((p) => p.result?.endedBy), ['idle']);
    });

    test('a client that goes away mid-response makes the proxy close the upstream connection', async (t) => {
      let upstreamClosed!: () => void;
      const closed = new Promise<void>((resolve) => {
        upstreamClosed = resolve;
      });
      const legacy = await startTcpOrigin((s) => {
        s.on('error', () => {});
        s.on('close', () => upstreamClosed());
        s.once('data', () => {
          s.write(`HTTP/1.1 200 OK\r\nContent-Length: ${256 * MB}\r\n\r\n`);
          const chunk = Buffer.alloc(MB, 0x63);
          const more = (): void => {
            while (!s.destroyed && s.write(chunk));
          };
          s.on('drain', more);
          more();
        });
      });
      const proxy = await startProxy(engine);
      t.after(async () => {
        await proxy.close();
        legacy.close();
      });
      const client = await RawClient.connect(proxy.port);
      client.write(get(legacy.port, '/'));
      await once(client.socket, 'data');
      await sleep(50);
      client.socket.destroy();
      await closed;
      await proxy.settled();
      if (engine === 'native') {
        // Whichever comes first: the engine's write fails, or JS sees the close and aborts it.
        const r = proxy.pumps[0]?.result;
        assert.ok(r?.endedBy === 'aborted' || (r?.endedBy === 'error' && r.side === 'to'), JSON.stringify(r));
      }
    });
  });
}
