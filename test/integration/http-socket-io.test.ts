/**
 * SocketReader.takeQueued and writeAll's two-buffer form, on real loopback sockets: what the
 * HTTP front-end uses to send a small body in the same write as its head.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, connect, type Socket } from 'node:net';
import { once } from 'node:events';
import { SocketReader, writeAll } from '../../src/frontends/http/socket-io.js';

async function socketPair(): Promise<{ a: Socket; b: Socket; close: () => void }> {
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as { port: number }).port;
  const accepted = once(server, 'connection');
  const a = connect(port, '127.0.0.1');
  await once(a, 'connect');
  const [b] = (await accepted) as [Socket];
  return {
    a,
    b,
    close: () => {
      a.destroy();
      b.destroy();
      server.close();
    },
  };
}

async function waitQueued(reader: SocketReader, n: number): Promise<void> {
  const deadline = Date.now() + 5_000;
  while (reader.queuedBytes < n) {
    if (Date.now() > deadline) throw new Error(`only ${reader.queuedBytes} of ${n} bytes queued`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

test('takeQueued returns exactly n queued bytes, leaves the rest queued, and takes nothing when short', async () => {
  const { a, b, close } = await socketPair();
  try {
    let counted = 0;
    const reader = new SocketReader(b, (n) => (counted += n));
    assert.equal(reader.takeQueued(1), undefined, 'nothing queued yet');
    a.write('hello world NEXT');
    await waitQueued(reader, 16);
    assert.equal(reader.takeQueued(17), undefined, 'short: nothing taken');
    assert.equal(reader.queuedBytes, 16);
    const body = reader.takeQueued(11);
    assert.equal(body?.toString(), 'hello world');
    assert.equal(reader.queuedBytes, 5);
    const rest = await reader.read(1_000);
    assert.equal(Buffer.isBuffer(rest) ? rest.toString() : rest, ' NEXT');
    // The queue ran empty: the reader reads on (it resumed the socket).
    a.write('more');
    const more = await reader.read(1_000);
    assert.equal(Buffer.isBuffer(more) ? more.toString() : more, 'more');
    assert.equal(counted, 20, 'every byte counted once, at arrival');
  } finally {
    close();
  }
});

test('writeAll(head, body) delivers both, in order, as one stream', async () => {
  const { a, b, close } = await socketPair();
  try {
    const got: Buffer[] = [];
    b.on('data', (c: Buffer) => got.push(c));
    const head = Buffer.from('HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\n');
    await writeAll(a, head, Buffer.from('body'));
    a.end();
    await once(b, 'end');
    assert.equal(Buffer.concat(got).toString(), `${head.toString()}body`);
    assert.equal(a.writableCorked, 0, 'uncorked again');
  } finally {
    close();
  }
});
