/**
 * The engine's acceptor when the process runs out of file descriptors (accept4: EMFILE): it must
 * not spin on the still-readable listening socket, it must say so in the log, and it must serve
 * the clients that waited in the backlog once descriptors are free again.
 *
 * The real CLI (`forward`) runs under a low RLIMIT_NOFILE (prlimit, util-linux), forwarding to an
 * echo server in this process; loopback only.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { readdirSync, readFileSync } from 'node:fs';
import net from 'node:net';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { loadNativeAcceptor } from '../../src/listeners/engine-acceptor.js';

const CLI = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));
const HOST = '127.0.0.1';
const hasPrlimit = spawnSync('prlimit', ['--version'], { stdio: 'ignore' }).status === 0;
const skip =
  process.env.MPTCP_PROXY_RELAY === 'js'
    ? 'MPTCP_PROXY_RELAY=js: the engine does not accept'
    : loadNativeAcceptor() === undefined
      ? 'the addon has no engine acceptor'
      : !hasPrlimit
        ? 'prlimit (util-linux) is not installed'
        : false;

/** CPU ticks (user + system) the process has used so far. */
function cpuTicks(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return Number(fields[11]) + Number(fields[12]);
}

/** A client that sends one byte and reports whether it came back within `ms`; null when the
 *  proxy reset it (accept4 got the fd, but socket() for its upstream did not). */
async function probe(port: number, ms: number): Promise<{ socket: net.Socket; echoed: Promise<boolean> } | null> {
  const socket = net.connect({ host: HOST, port });
  const failed = new Promise<null>((resolve) => socket.once('error', () => resolve(null)));
  if ((await Promise.race([once(socket, 'connect').then(() => socket), failed])) === null) return null;
  socket.write('x');
  const echoed = new Promise<boolean>((resolve) => {
    const timer = setTimeout(() => resolve(false), ms);
    socket.once('data', () => {
      clearTimeout(timer);
      resolve(true);
    });
  });
  return { socket, echoed };
}

test('out of fds, the engine acceptor rests instead of spinning, logs it, and serves the waiting clients once fds are free', { skip, timeout: 30_000 }, async (t) => {
  const echo = net.createServer((s) => s.pipe(s));
  echo.listen(0, HOST);
  await once(echo, 'listening');
  t.after(() => echo.close());
  const echoPort = (echo.address() as net.AddressInfo).port;

  // Measure what the CLI needs at rest, then give it room for a few connections only (2 fds each).
  const start = (limit: number | undefined): ChildProcess => {
    const args = [CLI, 'forward', '--listen', `${HOST}:0`, '--to', `${HOST}:${echoPort}`, '--log-format', 'json'];
    return limit === undefined
      ? spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'inherit'] })
      : spawn('prlimit', [`--nofile=${limit}:${limit}`, process.execPath, ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
  };
  const lines: Array<Record<string, unknown>> = [];
  const listening = (child: ChildProcess): Promise<number> =>
    new Promise((resolve, reject) => {
      createInterface({ input: child.stdout! }).on('line', (line) => {
        const rec = JSON.parse(line) as Record<string, unknown>;
        lines.push(rec);
        if (rec.msg === 'listening') resolve(rec.port as number);
      });
      child.once('exit', (code) => reject(new Error(`the proxy exited (${code}) before listening`)));
    });

  const probeChild = start(undefined);
  await listening(probeChild);
  const baseFds = readdirSync(`/proc/${probeChild.pid}/fd`).length;
  probeChild.kill('SIGTERM');
  await once(probeChild, 'exit');
  lines.length = 0;

  // Start-up opens more files at once than the proxy keeps (module loading): leave room for that;
  // the connections then use up the rest, 2 fds each.
  const limit = baseFds + 40;
  const child = start(limit);
  t.after(() => {
    if (child.exitCode === null) child.kill('SIGKILL');
  });
  const port = await listening(child);
  assert.equal(lines.find((l) => l.msg === 'listening')?.acceptedBy, 'native engine');
  // prlimit execs node: the child's pid is the proxy's.
  const pid = child.pid!;

  // 1. open clients until one is not served (its accept hit EMFILE: it waits in the backlog)
  const served: net.Socket[] = [];
  const waiting: Array<{ socket: net.Socket; echoed: Promise<boolean> }> = [];
  t.after(() => {
    for (const s of served) s.destroy();
    for (const w of waiting) w.socket.destroy();
  });
  let resets = 0;
  for (let i = 0; i < 60 && waiting.length < 3; i++) {
    const p = await probe(port, 400);
    if (p === null) resets++;
    else if (await p.echoed) served.push(p.socket);
    else waiting.push({ socket: p.socket, echoed: new Promise((resolve) => p.socket.once('data', () => resolve(true))) });
  }
  // At most one client is lost to the limit (accepted, then no fd for its upstream): after that
  // the acceptor rests, and the next clients wait instead of being accepted and reset.
  assert.ok(resets <= 1, `${resets} clients were reset`);
  assert.ok(served.length >= 1, `some clients were served before the limit (limit ${limit}, ${baseFds} fds at rest)`);
  assert.equal(waiting.length, 3, `clients past the limit wait (served ${served.length})`);

  // 2. it said why, and it does not spin while the clients wait
  const restMsg = 'out of file descriptors or memory; the listener rests 100 ms';
  for (let i = 0; i < 50 && !lines.some((l) => l.msg === restMsg); i++) await sleep(20);
  const failed = lines.find((l) => l.msg === restMsg);
  assert.ok(failed, 'the acceptor logged the failure');
  assert.equal(failed.code, 'EMFILE');
  const before = cpuTicks(pid);
  await sleep(1000);
  const ticks = cpuTicks(pid) - before;
  assert.ok(ticks < 30, `the proxy used ${ticks * 10} ms of CPU in 1 s while clients waited (no busy loop)`);

  // 3. free the served connections: the waiting clients get their echo
  for (const s of served) s.destroy();
  const results = await Promise.race([Promise.all(waiting.map((w) => w.echoed)), sleep(5000).then(() => 'timeout' as const)]);
  assert.notEqual(results, 'timeout', 'the waiting clients were served once fds were free');

  child.kill('SIGTERM');
  await once(child, 'exit');
});
