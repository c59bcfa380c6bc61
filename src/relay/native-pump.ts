/**
 * The native body pump: one message body (exactly N bytes, or until EOF) moved from one
 * socket to another by the relay engine's epoll thread (native/src/relay.c, pumpStart) in
 * 1 MiB reads and writes, after which JS carries on with the same net.Sockets — keep-alive,
 * pipelining and the upstream pool keep working. Unlike nativeRelay, nothing is handed over
 * for good: the engine works on dup()s of the fds and closes only those, and it never reads
 * a byte of `from` beyond the body, so the next message is still in the kernel for Node.
 *
 * Handover, per pump (all of it undone when the pump ends):
 *   1. flush: wait until every write JS queued on `to` reached the kernel (the response head);
 *   2. stop Node reading `from` for real. `socket.pause()` is not enough: it only stops
 *      'data' events, libuv keeps reading into the stream's buffer up to the readable
 *      highWaterMark (one 64 KiB read in practice). So, as net.js does when a push() finds
 *      the buffer full (stream_base_commons.js onStreamRead), we stop the handle itself
 *      (`_handle.reading = false; _handle.readStop()`) — after taking what Node had already
 *      buffered (socket.read() until null), which becomes part of the body;
 *   3. dup() both fds and start the pump: synchronous from step 2, so no libuv read can run
 *      in between and every byte is either taken or still in the kernel;
 *   4. when the engine reports, restart the handle (`_handle.reading = true; readStart()`,
 *      net.js tryReadStart). Restarting it ourselves is required, not a shortcut: the drain
 *      in step 2 makes Readable call _read(), which sets `_readableState.reading` and starts
 *      the handle; once we stop the handle nothing push()es, so `reading` stays true and
 *      Readable never calls _read() again — read(0) and resume() would not restart it.
 * (Verified on Node 20 by experiment and by test/integration/native-pump.test.ts, which
 * checks that bytes after the body are read by Node afterwards, none lost or repeated.)
 *
 * While a pump runs, JS must not write to `to` nor read `from`; the other two directions stay
 * JS's (the HTTP front-end may write a request body upstream, or read the client's next
 * request). If either socket closes (JS destroyed it, or the listener cut the connection) or
 * `signal` aborts, the pump is aborted in the engine.
 */
import type { Socket } from 'node:net';
import { socketFd, type MptcpNative } from '../mptcp/index.js';
import { flushWrites, hasFd, joinHead, loadNativeRelayEngine, type NativeRelayEngine } from './native-relay.js';

/** How a pump ended: 'done' (all N bytes, or EOF for an until-EOF pump), 'eof' (EOF before N
 *  bytes), 'error' (a system call failed on `side`), or the proxy's reason. */
export type PumpEndedBy = 'done' | 'eof' | 'error' | 'idle' | 'aborted' | 'engine-stopped';

/** What the engine reports when a pump ends (native/src/relay.c, pump_summary_object). */
export interface NativePumpSummary {
  id: number;
  /** Bytes read from `from` (the head excluded). */
  moved: number;
  endedBy: PumpEndedBy;
  durationMs: number;
  errno?: number;
  code?: string;
  syscall?: string;
  /** Which socket failed, when endedBy is 'error' (absent when the proxy itself failed). */
  side?: 'from' | 'to';
}

/** The addon's pump entry point; relayAbort and relayStats take a pump's id as well. */
export interface NativePumpEngine extends Pick<NativeRelayEngine, 'relayAbort' | 'relayStats'>, Pick<MptcpNative, 'close' | 'dup'> {
  /** Takes ownership of both fds on success (closes them when the pump ends); on a throw the caller keeps them. */
  pumpStart(
    fdFrom: number,
    fdTo: number,
    head: Buffer | null,
    /** Bytes still to read from fdFrom after head; -1 = until EOF. */
    length: number,
    idleTimeoutMs: number,
    onDone: (summary: NativePumpSummary) => void,
  ): number;
}

export interface PumpOptions {
  /** Bytes of the body still to come from `from`, counting what Node has buffered but not
   *  the head; or 'eof' for a body that ends when `from` does. */
  length: number | 'eof';
  /** Bytes to write to `to` first, already taken from `from` by the caller. */
  head?: Buffer;
  /** End the pump after this long without a byte moved; 0/absent = never. */
  idleTimeoutMs?: number;
  signal?: AbortSignal;
  /** Called once the engine has the pump, with a way to ask how far it got. */
  onStarted?: (progress: PumpProgress) => void;
}

/** A running pump, seen from JS. */
export interface PumpProgress {
  /** True once every byte of a Content-Length body (and the head) has been written to `to`,
   *  or the pump has ended: its result is then due without waiting on either peer. Always
   *  false for an until-EOF pump that is still running. */
  allWritten(): boolean;
}

export interface PumpResult {
  /** Body bytes taken from `from` by the pump: what Node had buffered plus what the engine
   *  read. Not the head (the caller already counted it). */
  moved: number;
  endedBy: PumpEndedBy;
  /** For 'error': which socket failed (absent when the proxy itself failed). */
  side?: 'from' | 'to';
  /** For 'error': a Node-shaped system error (`code`, `errno`, `syscall`). */
  error?: NodeJS.ErrnoException;
  durationMs: number;
}

/** The signature the HTTP front-end depends on (FrontendDeps.pump). */
export type BodyPump = (from: Socket, to: Socket, opts: PumpOptions) => Promise<PumpResult>;

/** The pump could not be started (no fd to dup, the engine refused); nothing was moved and
 *  both sockets are as they were, Node's buffered bytes back in place: use the JS path. */
export class PumpHandoverError extends Error {
  override name = 'PumpHandoverError';
}

type AddonWithPump = MptcpNative & NativeRelayEngine & Partial<Pick<NativePumpEngine, 'pumpStart'>>;

/** The engine with its pump, or undefined when the addon is missing or predates pumpStart. */
export function loadNativePumpEngine(): NativePumpEngine | undefined {
  const engine = loadNativeRelayEngine() as AddonWithPump | undefined;
  return typeof engine?.pumpStart === 'function' ? (engine as NativePumpEngine) : undefined;
}

/** True when bodies can be pumped natively (the addon is built with pumpStart). */
export function canPumpNative(): boolean {
  return loadNativePumpEngine() !== undefined;
}

/** The stream handle net.Socket reads through (TCPWrap: LibuvStreamWrap). Not in @types/node. */
interface StreamHandle {
  reading?: boolean;
  readStart(): number;
  readStop(): number;
}

function handleOf(socket: Socket): StreamHandle | null {
  return (socket as Socket & { _handle?: StreamHandle | null })._handle ?? null;
}

/** True once Node has seen EOF on the socket (the null chunk was pushed). */
function readEnded(socket: Socket): boolean {
  return (socket as Socket & { _readableState?: { ended?: boolean } })._readableState?.ended === true;
}

/**
 * Step 2 of the handover: pauses `socket`, takes everything Node has buffered, then stops the
 * libuv handle so nothing more is read until resumeHandleReading(). Synchronous: call it in
 * the same turn as the dup()s. The socket must have no 'data' listener (read() emits 'data').
 */
export function stopHandleReading(socket: Socket): Buffer[] {
  socket.pause();
  const chunks: Buffer[] = [];
  for (let c = socket.read() as Buffer | null; c !== null; c = socket.read() as Buffer | null) chunks.push(c);
  const handle = handleOf(socket);
  if (handle !== null && handle.reading === true) {
    handle.reading = false;
    // A non-zero status means the handle is closing; the socket's own destroy reports it.
    handle.readStop();
  }
  return chunks;
}

/** Step 4: lets libuv read the socket again (net.js tryReadStart). Leaves the stream paused;
 *  Node then reads up to its highWaterMark, as for any paused socket. */
export function resumeHandleReading(socket: Socket): void {
  if (socket.destroyed || readEnded(socket)) return;
  const handle = handleOf(socket);
  if (handle === null || handle.reading === true) return;
  handle.reading = true;
  const status = handle.readStart();
  if (status !== 0) {
    handle.reading = false;
    socket.destroy(Object.assign(new Error(`read ${status}`), { errno: status, syscall: 'read' }));
  }
}

function socketGone(side: 'from' | 'to'): PumpResult {
  const error: NodeJS.ErrnoException = Object.assign(new Error('socket is closed'), { code: 'ERR_SOCKET_CLOSED' });
  return { moved: 0, endedBy: 'error', side, error, durationMs: 0 };
}

/**
 * Moves the body from `from` to `to` in the native engine; resolves with how it ended (never
 * rejects for a socket's failure: that is endedBy 'error'). Throws PumpHandoverError when
 * the pump could not be started, with nothing moved.
 */
export const pumpNative: BodyPump = async (from, to, opts) => {
  const engine = loadNativePumpEngine();
  if (engine === undefined) throw new PumpHandoverError('the native engine has no pump (addon not built with pumpStart)');
  if (from.listenerCount('data') > 0) throw new PumpHandoverError('`from` still has a data listener: its reader must be suspended first');
  if (opts.signal?.aborted) return { moved: 0, endedBy: 'aborted', durationMs: 0 };
  // 1. flush `to`.
  if (!(await flushWrites(to)) || !hasFd(to)) return socketGone('to');
  if (from.destroyed || !hasFd(from)) return socketGone('from');
  if (opts.signal?.aborted) return { moved: 0, endedBy: 'aborted', durationMs: 0 };
  // 2.–3. synchronous from here to pumpStart.
  const buffered = stopHandleReading(from);
  let taken = buffered;
  let length = opts.length === 'eof' ? -1 : opts.length;
  if (length >= 0) {
    // Node may have read past the body (the next pipelined message): that part goes back.
    taken = [];
    let room = length;
    for (let i = 0; i < buffered.length; i++) {
      const c = buffered[i]!;
      if (c.length <= room) {
        taken.push(c);
        room -= c.length;
        continue;
      }
      if (room > 0) taken.push(c.subarray(0, room));
      const surplus = [c.subarray(room), ...buffered.slice(i + 1)];
      for (let j = surplus.length - 1; j >= 0; j--) from.unshift(surplus[j]!);
      room = 0;
      break;
    }
    length = room;
  }
  const fromBuffer = taken.reduce((n, c) => n + c.length, 0);
  const head = joinHead(opts.head, taken);
  const fds: number[] = [];
  let id: number;
  let resolveDone!: (s: NativePumpSummary) => void;
  const done = new Promise<NativePumpSummary>((resolve) => {
    resolveDone = resolve;
  });
  try {
    fds.push(engine.dup(socketFd(from)));
    fds.push(engine.dup(socketFd(to)));
    id = engine.pumpStart(fds[0]!, fds[1]!, head, length, opts.idleTimeoutMs ?? 0, resolveDone);
  } catch (err) {
    for (const fd of fds) engine.close(fd);
    for (let j = taken.length - 1; j >= 0; j--) from.unshift(taken[j]!);
    resumeHandleReading(from);
    throw new PumpHandoverError('the native pump could not start', { cause: err });
  }
  if (opts.onStarted) {
    const total = (head?.length ?? 0) + length;
    const pumpId = id;
    opts.onStarted({
      // The engine counts a pump's bytes written to `to` in relayStats' fromUpstream; null:
      // the pump has ended and its report is on its way.
      allWritten: () => {
        const stats = engine.relayStats(pumpId);
        return stats === null || (length >= 0 && stats.fromUpstream >= total);
      },
    });
  }
  // Either socket closing (destroyed by JS, or by the listener cutting the connection) makes
  // the pump pointless; so does the caller's signal.
  const abort = (): void => {
    engine.relayAbort(id);
  };
  from.once('close', abort);
  to.once('close', abort);
  opts.signal?.addEventListener('abort', abort, { once: true });
  let s: NativePumpSummary;
  try {
    s = await done;
  } finally {
    from.off('close', abort);
    to.off('close', abort);
    opts.signal?.removeEventListener('abort', abort);
    // 4. Node reads `from` again (the engine has closed its dups by now).
    resumeHandleReading(from);
  }
  return {
    moved: fromBuffer + s.moved,
    endedBy: s.endedBy,
    ...(s.side !== undefined ? { side: s.side } : {}),
    ...(s.code !== undefined ? { error: systemError(s) } : {}),
    durationMs: s.durationMs,
  };
};

/** The same shape as Node's own system errors ('write EPIPE', code, errno, syscall). */
function systemError(s: NativePumpSummary): NodeJS.ErrnoException {
  const syscall = s.syscall ?? 'pump';
  return Object.assign(new Error(`${syscall} ${s.code}`), { code: s.code, errno: s.errno, syscall });
}
