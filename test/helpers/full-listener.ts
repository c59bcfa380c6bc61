/**
 * A loopback listener that never accepts, with its queue already full (backlog 0, three
 * filler connections): further SYNs to it are dropped (tcp_conn_request), so a connect to it
 * stays in progress until its timeout — or until `adopt` hands the fd to a Node server, which
 * listens again with its own backlog and accepts the fillers and the waiting SYN's retry.
 */
import * as net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { loadNative } from '../../src/mptcp/index.js';

export interface FullListener {
  fd: number;
  port: number;
  /** `server` takes the fd over (close() then leaves it alone). */
  adopt(server: net.Server): void;
  close(): void;
}

export async function fullListener(host = '127.0.0.1'): Promise<FullListener> {
  const native = loadNative();
  const fd = native.socket(4, false);
  native.bind(fd, host, 0);
  native.listen(fd, 0);
  const port = native.localAddress(fd)!.port;
  const fillers: net.Socket[] = [];
  for (let i = 0; i < 3; i++) fillers.push(net.connect(port, host).on('error', () => {}));
  await sleep(100);
  let owned = true;
  return {
    fd,
    port,
    adopt(server) {
      owned = false;
      server.listen({ fd });
    },
    close() {
      for (const s of fillers) s.destroy();
      if (owned) native.close(fd);
      owned = false;
    },
  };
}
