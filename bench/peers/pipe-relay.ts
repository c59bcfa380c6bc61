#!/usr/bin/env node
/**
 * The floor: the barest Node relay, `a.pipe(b)` both ways, no accounting, no logging.
 * Run it under `mptcpize run node pipe-relay.js --listen PORT --to HOST:PORT` so its listening
 * socket is MPTCP (LD_PRELOAD turns socket(…, IPPROTO_TCP) into IPPROTO_MPTCP).
 * Prints `listening <port>` once bound.
 */
import * as net from 'node:net';
import { parseArgs } from 'node:util';

const { values } = parseArgs({ options: { listen: { type: 'string' }, host: { type: 'string', default: '0.0.0.0' }, to: { type: 'string' } } });
if (!values.listen || !values.to) {
  process.stderr.write('usage: pipe-relay --listen PORT --to HOST:PORT\n');
  process.exit(2);
}
const sep = values.to.lastIndexOf(':');
const toHost = values.to.slice(0, sep);
const toPort = Number(values.to.slice(sep + 1));

const server = net.createServer({ allowHalfOpen: true }, (down) => {
  const up = net.connect({ host: toHost, port: toPort, allowHalfOpen: true });
  down.pipe(up);
  up.pipe(down);
  const kill = (): void => {
    down.destroy();
    up.destroy();
  };
  down.on('error', kill);
  up.on('error', kill);
  down.on('close', () => up.destroySoon());
  up.on('close', () => down.destroySoon());
});
server.listen({ host: values.host, port: Number(values.listen), backlog: 4096 }, () => {
  process.stdout.write(`listening ${(server.address() as net.AddressInfo).port}\n`);
});
process.on('SIGTERM', () => process.exit(0));
