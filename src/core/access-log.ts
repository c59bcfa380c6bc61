/**
 * The access log: one line per proxied connection, written when it closes.
 * It subscribes to the conn:close channel, so the data path never calls it.
 */
import * as diagnosticsChannel from 'node:diagnostics_channel';
import { ChannelName, type ConnCloseMessage, type RequestDoneMessage } from './channels.js';
import { formatEndpoint, type FrontendKind } from './context.js';
import { ErrorCode, formatTarget, type TargetAddress } from './errors.js';
import { connectionIdPrefix } from './ids.js';
import type { Logger } from './logger.js';

/**
 * Fields of one access-log line; exported so tests and docs agree on the names. Built by
 * assignment, in the order the line shows them: conditional spreads (`...(x ? {…} : {})`) made
 * V8 allocate and copy a small object each, once per connection.
 */
export function accessLogFields(msg: ConnCloseMessage): Record<string, unknown> {
  const { ctx } = msg;
  const err = msg.error as (Error & { code?: string }) | undefined;
  const out: Record<string, unknown> = {
    conn: ctx.id,
    listener: ctx.listener,
    frontend: ctx.frontend,
    client: formatEndpoint(ctx.downstream.remote),
    clientMptcp: ctx.downstream.mptcp,
  };
  if (ctx.downstreamSubflows !== undefined) out.clientSubflows = ctx.downstreamSubflows;
  if (ctx.downstreamPaths) out.clientPaths = ctx.downstreamPaths;
  if (ctx.target) out.target = formatTarget(ctx.target);
  if (ctx.upstream) {
    out.upstream = formatEndpoint(ctx.upstream.remote);
    out.upstreamMptcp = ctx.upstream.mptcp;
  }
  for (const key in ctx.access) out[key] = ctx.access[key];
  out.bytesUp = ctx.bytes.fromDownstream;
  out.bytesDown = ctx.bytes.fromUpstream;
  out.durationMs = Math.round(msg.durationMs * 10) / 10;
  out.endedBy = msg.endedBy;
  if (err) out.error = err.code ?? err.message;
  return out;
}

/** Fields of one per-request line (HTTP front-end): which connection, what, how it went. Built by
 *  assignment, as accessLogFields. */
export function requestLogFields(msg: RequestDoneMessage): Record<string, unknown> {
  const { ctx } = msg;
  const out: Record<string, unknown> = {
    conn: ctx.id,
    listener: ctx.listener,
    client: formatEndpoint(ctx.downstream.remote),
    clientMptcp: ctx.downstream.mptcp,
  };
  if (msg.clientSubflows !== undefined) out.clientSubflows = msg.clientSubflows;
  out.method = msg.method;
  out.url = msg.url;
  out.status = msg.status;
  if (ctx.upstream) {
    out.upstream = formatEndpoint(ctx.upstream.remote);
    out.upstreamMptcp = ctx.upstream.mptcp;
  }
  out.bytesUp = msg.fromDownstream;
  out.bytesDown = msg.fromUpstream;
  out.durationMs = Math.round(msg.durationMs * 10) / 10;
  return out;
}

/*
 * The same lines as JSON members (Logger.jsonMembersWriter): accessLogJson(m) is
 * JSON.stringify(accessLogFields(m)).slice(1, -1), character for character (unit-tested), made
 * by joining strings. The fields object and JSON.stringify's walk over it were half of an
 * access line's cost (≈3 of ≈6 µs in a loop, more on a busy main thread; Node 20).
 */

/** Keys accessLogFields sets itself: a ctx.access key among them takes another place or value
 *  in the object, which the joined form does not reproduce (accessLogJson declines). */
const ACCESS_FIXED_KEYS: ReadonlySet<string> = new Set(['conn', 'listener', 'frontend', 'client', 'clientMptcp', 'clientSubflows', 'clientPaths', 'target', 'upstream', 'upstreamMptcp', 'bytesUp', 'bytesDown', 'durationMs', 'endedBy', 'error']);
const REQUEST_KEYS: ReadonlySet<string> = new Set(['conn', 'listener', 'client', 'clientMptcp', 'clientSubflows', 'method', 'url', 'status', 'upstream', 'upstreamMptcp', 'bytesUp', 'bytesDown', 'durationMs']);

/** Characters JSON.stringify escapes in a string (a surrogate only when lone: those go to it). */
const NEEDS_ESCAPE = /["\\\u0000-\u001f\ud800-\udfff]/;

/** A string as JSON.stringify writes it: addresses, ids and names need no escape. */
function jsonString(s: string): string {
  return NEEDS_ESCAPE.test(s) ? JSON.stringify(s) : `"${s}"`;
}

/** A finite number as JSON.stringify writes it; NaN and ±Infinity are null there. */
function jsonNumber(n: number): string {
  return Number.isFinite(n) ? String(n) : 'null';
}

/** `,"key":value` as JSON.stringify writes a member, or '' for undefined (which it skips). */
function jsonMember(key: string, v: unknown): string {
  switch (typeof v) {
    case 'undefined':
      return '';
    case 'string':
      return `,${jsonString(key)}:${jsonString(v)}`;
    case 'boolean':
      return `,${jsonString(key)}:${v}`;
    case 'number':
      return `,${jsonString(key)}:${jsonNumber(v)}`;
    default:
      return `,${jsonString(key)}:${JSON.stringify(v)}`;
  }
}

/** formatEndpoint / formatTarget of (host, port) as a JSON string. The host is tested, not the
 *  joined text: a host from the kernel is a flat string, the joined one a cons string that the
 *  test would flatten first (String::WriteToFlat was the line's largest cost under perf). */
function jsonEndpoint(host: string, port: number): string {
  const v6 = host.includes(':');
  if (NEEDS_ESCAPE.test(host)) return JSON.stringify(v6 ? `[${host}]:${port}` : `${host}:${port}`);
  return v6 ? `"[${host}]:${port}"` : `"${host}:${port}"`;
}

/** accessLogFields(msg) as JSON members (see above), or undefined where the object form
 *  differs from joining: a ctx.access key that accessLogFields sets itself or that is in `taken`
 *  (the logger's own keys), or an array-index key (an object lists those first). ctx.id
 *  (core/ids.ts), ctx.frontend and msg.endedBy are plain words: written without a test; the
 *  MPTCP flags as `=== true`, so that a flag that is not a boolean still makes valid JSON. */
export function accessLogJson(msg: ConnCloseMessage, taken?: ReadonlySet<string>): string | undefined {
  const { ctx } = msg;
  let access = '';
  for (const key in ctx.access) {
    const c = key.charCodeAt(0);
    if (ACCESS_FIXED_KEYS.has(key) || taken?.has(key) === true || (c >= 48 && c <= 57)) return undefined;
    access += jsonMember(key, ctx.access[key]);
  }
  const client = ctx.downstream.remote;
  let out = `"conn":"${ctx.id}","listener":${jsonString(ctx.listener)},"frontend":"${ctx.frontend}","client":${jsonEndpoint(client.address, client.port)},"clientMptcp":${ctx.downstream.mptcp === true}`;
  if (ctx.downstreamSubflows !== undefined) out += `,"clientSubflows":${jsonNumber(ctx.downstreamSubflows)}`;
  const paths = ctx.downstreamPaths;
  if (paths) {
    out += ',"clientPaths":[';
    for (let i = 0; i < paths.length; i++) out += i === 0 ? jsonString(paths[i]!) : `,${jsonString(paths[i]!)}`;
    out += ']';
  }
  if (ctx.target) out += `,"target":${jsonEndpoint(ctx.target.host, ctx.target.port)}`;
  const up = ctx.upstream;
  if (up) out += `,"upstream":${jsonEndpoint(up.remote.address, up.remote.port)},"upstreamMptcp":${up.mptcp === true}`;
  out += `${access},"bytesUp":${jsonNumber(ctx.bytes.fromDownstream)},"bytesDown":${jsonNumber(ctx.bytes.fromUpstream)},"durationMs":${jsonNumber(Math.round(msg.durationMs * 10) / 10)},"endedBy":"${msg.endedBy}"`;
  const err = msg.error as (Error & { code?: string }) | undefined;
  if (err) out += jsonMember('error', err.code ?? err.message);
  return out;
}

/** requestLogFields(msg) as JSON members (its keys are all fixed: never declined). */
export function requestLogJson(msg: RequestDoneMessage): string {
  const { ctx } = msg;
  const client = ctx.downstream.remote;
  let out = `"conn":"${ctx.id}","listener":${jsonString(ctx.listener)},"client":${jsonEndpoint(client.address, client.port)},"clientMptcp":${ctx.downstream.mptcp === true}`;
  if (msg.clientSubflows !== undefined) out += `,"clientSubflows":${jsonNumber(msg.clientSubflows)}`;
  out += jsonMember('method', msg.method) + jsonMember('url', msg.url) + jsonMember('status', msg.status);
  const up = ctx.upstream;
  if (up) out += `,"upstream":${jsonEndpoint(up.remote.address, up.remote.port)},"upstreamMptcp":${up.mptcp === true}`;
  out += `,"bytesUp":${jsonNumber(msg.fromDownstream)},"bytesDown":${jsonNumber(msg.fromUpstream)},"durationMs":${jsonNumber(Math.round(msg.durationMs * 10) / 10)}`;
  return out;
}

/** True when a logger's own keys (JsonMembersWriter.taken) include one of a line's fixed keys. */
function overlaps(taken: ReadonlySet<string>, keys: ReadonlySet<string>): boolean {
  for (const key of taken) if (keys.has(key)) return true;
  return false;
}

/**
 * Starts writing access lines to `log`: "access" when a connection closes, and "request"
 * for each HTTP exchange. Returns the unsubscribe function.
 */
export function startAccessLog(log: Logger): () => void {
  // The joined form where the logger takes it (JSON, no clashing bound keys); the fields
  // object otherwise, and for a line the joined form declines.
  const access = log.jsonMembersWriter('info', 'access');
  const request = log.jsonMembersWriter('info', 'request');
  const accessWriter = access !== undefined && !overlaps(access.taken, ACCESS_FIXED_KEYS) ? access : undefined;
  const requestWriter = request !== undefined && !overlaps(request.taken, REQUEST_KEYS) ? request : undefined;
  const onClose = (message: unknown): void => {
    const msg = message as ConnCloseMessage;
    const members = accessWriter === undefined ? undefined : accessLogJson(msg, accessWriter.taken);
    if (members === undefined) log.info('access', accessLogFields(msg));
    else accessWriter!.write(members);
  };
  const onRequest = (message: unknown): void => {
    const msg = message as RequestDoneMessage;
    if (requestWriter === undefined) log.info('request', requestLogFields(msg));
    else requestWriter.write(requestLogJson(msg));
  };
  diagnosticsChannel.subscribe(ChannelName.connClose, onClose);
  diagnosticsChannel.subscribe(ChannelName.requestDone, onRequest);
  return () => {
    diagnosticsChannel.unsubscribe(ChannelName.connClose, onClose);
    diagnosticsChannel.unsubscribe(ChannelName.requestDone, onRequest);
  };
}

/**
 * What the engine needs to write the access line of a connection it carries alone (an
 * engine-only connection: native/src/engine-only.c, eo_line), in the pieces that are the same
 * for every connection of one listener. The engine joins them with the time, the connection
 * number, the client's address, the subflow sample, the upstream's MPTCP flag, the byte counts,
 * the duration, how it ended and its error code, into the line accessLogJson makes for the same
 * connection (a tcp-forward to `target`: ctx.upstream's remote is the target, ctx.access is
 * empty), with the logger's head in front. test/integration/engine-only.test.ts compares the
 * two lines, field for field.
 */
export interface EngineAccessLine {
  /** Up to the connection number: `","level":…,"msg":"access"…,"conn":"<prefix>`. */
  connHead: string;
  /** From after the number to the client's address: `","listener":…,"frontend":…,"client":"`. */
  clientHead: string;
  /** From after the client's subflows to the upstream's MPTCP flag. */
  upstreamHead: string;
  /** summaryError's codes (src/relay/native-relay.ts) for the idle timeout and the proxy's aborts. */
  idleCode: string;
  abortedCode: string;
}

/** The access log as the engine writes it for engine-only connections (engineAccessLog). */
export interface EngineAccessLog {
  /** One listener's line template; null when the log is below info (no line is written). */
  line(listener: string, frontend: FrontendKind, target: TargetAddress): EngineAccessLine | null;
  /** Lines the engine made, to the log's sink. */
  write(text: string): void;
}

/**
 * The access log for the engine to write, or undefined where it cannot make startAccessLog's
 * lines: a text log, or bound fields that the joined JSON form declines (startAccessLog then
 * builds each line from fields, which only JS does).
 */
export function engineAccessLog(log: Logger): EngineAccessLog | undefined {
  const writer = log.jsonMembersWriter('info', 'access');
  if (writer === undefined || overlaps(writer.taken, ACCESS_FIXED_KEYS)) return undefined;
  const head = writer.head;
  return {
    line(listener, frontend, target) {
      if (head === undefined) return null;
      const to = jsonEndpoint(target.host, target.port);
      return {
        connHead: `${head},"conn":"${connectionIdPrefix}`,
        clientHead: `","listener":${jsonString(listener)},"frontend":${jsonString(frontend)},"client":"`,
        upstreamHead: `,"target":${to},"upstream":${to},"upstreamMptcp":`,
        idleCode: ErrorCode.IDLE_TIMEOUT,
        abortedCode: ErrorCode.RELAY_ABORTED,
      };
    },
    write: (text) => writer.writeLines(text),
  };
}
