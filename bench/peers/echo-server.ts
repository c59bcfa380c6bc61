#!/usr/bin/env node
/**
 * Echo server for the short-connection and idle-connection loads: echoes every byte back and
 * closes when the client closes. `--mptcp` listens on an MPTCP socket via the addon (TCP clients
 * still work). Prints `listening <port>`.
 */
import * as net from 'node:net';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: { host: { type: 'string', default: '0.0.0.0' }, port: { type: 'string', default: '0' }, mptcp: { type: 'boolean', default: false } },
});
const server = net.createServer({ allowHalfOpen: false }, (s) => {
  s.on('data', (chunk: Buffer) => {
    s.write(chunk);
  });
  s.on('error', () => s.destroy());
});
server.on('error', (err) => {
  process.stderr.write(`echo-server: ${err.message}\n`);
  process.exit(2);
});
const print = (): void => {
  process.stdout.write(`listening ${(server.address() as net.AddressInfo).port}\n`);
};
if (values.mptcp) {
  const { listenMptcp } = await import('../../src/mptcp/index.js');
  await listenMptcp(server, { host: values.host, port: Number(values.port), mode: 'on', backlog: 4096 });
  print();
} else {
  server.listen({ host: values.host, port: Number(values.port), backlog: 4096 }, print);
}
process.on('SIGTERM', () => process.exit(0));
