/**
 * A small structured logger: one JSON object per line (or a compact text line),
 * level-filtered, with bound fields for children (e.g. the connection id).
 *
 * Why our own: the hot path logs once per connection at most, and a dependency-free
 * logger keeps `core/` importing nothing but Node's own modules.
 */

import { fstatSync, writeSync } from 'node:fs';

export const LogLevels = ['debug', 'info', 'warn', 'error', 'silent'] as const;
export type LogLevel = (typeof LogLevels)[number];
export type LogFormat = 'json' | 'text';
export type LogFields = Record<string, unknown>;

const rank: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40, silent: 100 };

export interface LogSink {
  write(line: string): void;
  /** Many lines already gathered (the engine's access lines, batched there): written now
   *  rather than held for more. Default: write. */
  writeBatch?(lines: string): void;
}

export interface Logger {
  readonly level: LogLevel;
  debug(msg: string, fields?: LogFields): void;
  info(msg: string, fields?: LogFields): void;
  warn(msg: string, fields?: LogFields): void;
  error(msg: string, fields?: LogFields): void;
  isEnabled(level: LogLevel): boolean;
  child(fields: LogFields): Logger;
  /**
   * A writer for one line written thousands of times a second (the access log), taking its
   * fields already serialized; undefined when this logger writes text, or its bound fields need
   * the merged path (an Error, a bigint, a key of the head): the caller logs with fields then.
   */
  jsonMembersWriter(level: LogLevel, msg: string): JsonMembersWriter | undefined;
}

/** Logger.jsonMembersWriter's writer. */
export interface JsonMembersWriter {
  /** Keys the line already has: time, level, msg and the bound fields with a value. Members
   *  must not repeat one (a caller whose fields might logs that line with fields instead). */
  readonly taken: ReadonlySet<string>;
  /** Writes {time, level, msg, ...bound, ...members}: `members` is JSON object members without
   *  the braces (`"a":1,"b":"x"`, or ''), as JSON.stringify(fields).slice(1, -1) would give —
   *  so the line is the one info(msg, fields) writes, without the fields object or the
   *  serializer's walk over it (half of an access line's cost, Node 20). */
  write(members: string): void;
  /** What follows the time in each line: `","level":…,"msg":…` and the bound fields, for a
   *  writer that makes whole lines itself (the engine: src/core/access-log.ts,
   *  engineAccessLog). Undefined when the level is off: nothing is written. */
  readonly head: string | undefined;
  /** Whole lines made with `head`, to the sink as they are. */
  writeLines(text: string): void;
}

export interface LoggerOptions {
  level?: LogLevel;
  format?: LogFormat;
  sink?: LogSink;
  fields?: LogFields;
}

function serializeError(err: Error): LogFields {
  const out: LogFields = { name: err.name, message: err.message };
  const e = err as Error & { code?: unknown; errno?: unknown; syscall?: unknown; side?: unknown };
  if (e.code !== undefined) out.code = e.code;
  if (e.errno !== undefined) out.errno = e.errno;
  if (e.syscall !== undefined) out.syscall = e.syscall;
  if (e.side !== undefined) out.side = e.side;
  if (err.cause instanceof Error) out.cause = serializeError(err.cause);
  return out;
}

function replacer(_key: string, value: unknown): unknown {
  if (value instanceof Error) return serializeError(value);
  if (typeof value === 'bigint') return value.toString();
  return value;
}

/** True when a value may hold an Error or a bigint (anything but primitives and arrays of them). */
function needsReplacer(record: LogFields): boolean {
  for (const key in record) {
    const v = record[key];
    if (typeof v === 'bigint') return true;
    if (typeof v === 'object' && v !== null) {
      if (!Array.isArray(v)) return true;
      for (const x of v as unknown[]) if ((typeof x === 'object' && x !== null) || typeof x === 'bigint') return true;
    }
  }
  return false;
}

function formatText(level: LogLevel, msg: string, fields: LogFields): string {
  const parts = [new Date().toISOString(), level.toUpperCase().padEnd(5), msg];
  for (const [k, v] of Object.entries(fields)) {
    if (v === undefined) continue;
    const s = typeof v === 'string' ? v : JSON.stringify(v, replacer);
    parts.push(`${k}=${s}`);
  }
  return parts.join(' ') + '\n';
}

/** "000" to "999": a line's milliseconds. */
const MILLIS = Array.from({ length: 1000 }, (_, i) => String(i).padStart(3, '0'));

/** The ISO time of the current millisecond, as Date#toISOString writes it. Date#toISOString was
 *  ≈1.2 µs of a ≈5 µs access line (Node 20), and at a few thousand lines a second most lines
 *  fall in a millisecond of their own: so the text up to the seconds is made once a second, and
 *  each line adds its milliseconds (cpu-prof under short connections: 1.5 → ≈0.1 µs a line).
 *  Years 0–9999 (toISOString's own plain form). */
let isoMs = -1;
let isoText = '';
let isoSecond = -1;
let isoPrefix = '';
function isoNow(): string {
  const now = Date.now();
  if (now !== isoMs) {
    isoMs = now;
    const second = Math.floor(now / 1000);
    if (second !== isoSecond) {
      isoSecond = second;
      isoPrefix = new Date(second * 1000).toISOString().slice(0, 20); // "YYYY-MM-DDTHH:MM:SS."
    }
    isoText = `${isoPrefix}${MILLIS[now - second * 1000]!}Z`;
  }
  return isoText;
}

/** True when `fields` names a key the line already has (time, level, msg or a bound field;
 *  `bound` is empty when no bound field has a value: an undefined one shows nowhere). */
function collides(fields: LogFields, bound: LogFields | undefined): boolean {
  if ('time' in fields || 'level' in fields || 'msg' in fields) return true;
  if (bound !== undefined) for (const key in fields) if (key in bound) return true;
  return false;
}

/** Bound fields as JSON members for #jsonLine's fast path ('' for none), or undefined when they
 *  need the slow one: an Error or bigint to replace, or a key of the line's head. */
function boundMembers(bound: LogFields): string | undefined {
  if (needsReplacer(bound) || 'time' in bound || 'level' in bound || 'msg' in bound) return undefined;
  const inner = JSON.stringify(bound).slice(1, -1); // '' when every value is undefined
  return inner === '' ? '' : `,${inner}`;
}

class LineLogger implements Logger {
  readonly level: LogLevel;
  readonly #format: LogFormat;
  readonly #sink: LogSink;
  readonly #fields: LogFields;
  /** The bound fields as JSON members (`,"conn":"c1"`), serialized at the first line and kept for
   *  the next ones (a connection's child logger is made for every connection and most never
   *  log); undefined when they need the slow path (boundMembers); null until the first line. */
  #boundJson: string | undefined | null = null;

  constructor(opts: Required<LoggerOptions>) {
    this.level = opts.level;
    this.#format = opts.format;
    this.#sink = opts.sink;
    this.#fields = opts.fields;
  }

  isEnabled(level: LogLevel): boolean {
    return rank[level] >= rank[this.level];
  }

  #log(level: LogLevel, msg: string, fields?: LogFields): void {
    if (!this.isEnabled(level)) return;
    if (this.#format === 'json') this.#sink.write(this.#jsonLine(level, msg, fields));
    else this.#sink.write(formatText(level, msg, fields ? Object.assign({}, this.#fields, fields) : this.#fields));
  }

  /**
   * One JSON line: {time, level, msg, ...bound, ...fields}. The fast path joins strings: the
   * fixed head, the bound fields serialized at child(), and JSON.stringify(fields) without its
   * opening brace — no merged object (Object.assign of an access line's ≈20 keys was ≈1 µs of
   * it) and V8's fast serializer (a replacer turns it off: only Errors and bigints need one). A
   * field that repeats a key of the line takes the merged object, where the last value wins in
   * the first one's place, as before.
   */
  #jsonLine(level: LogLevel, msg: string, fields: LogFields | undefined): string {
    const head = `{"time":"${isoNow()}","level":"${level}","msg":${JSON.stringify(msg)}`;
    if (this.#boundJson === null) this.#boundJson = boundMembers(this.#fields);
    const bound = this.#boundJson;
    if (bound !== undefined && (fields === undefined || (!needsReplacer(fields) && !collides(fields, bound === '' ? undefined : this.#fields)))) {
      if (fields === undefined) return `${head}${bound}}\n`;
      const body = JSON.stringify(fields);
      return body.length === 2 ? `${head}${bound}}\n` : `${head}${bound},${body.slice(1)}\n`;
    }
    // Object.assign rather than `{ time, level, msg, ...bound, ...fields }`: the same keys in
    // the same order, but V8 builds the spread form of an access line (about 20 keys) in
    // ≈20 µs and this in ≈2 µs (measured on Node 20).
    const record = Object.assign({ time: isoNow(), level, msg }, this.#fields, fields);
    return JSON.stringify(record, needsReplacer(record) ? replacer : undefined) + '\n';
  }

  jsonMembersWriter(level: LogLevel, msg: string): JsonMembersWriter | undefined {
    if (this.#format !== 'json') return undefined;
    if (this.#boundJson === null) this.#boundJson = boundMembers(this.#fields);
    const bound = this.#boundJson;
    if (bound === undefined) return undefined;
    const taken = new Set(['time', 'level', 'msg']);
    for (const key in this.#fields) if (this.#fields[key] !== undefined) taken.add(key);
    if (!this.isEnabled(level)) return { taken, write() {}, head: undefined, writeLines() {} };
    const sink = this.#sink;
    const rest = `","level":"${level}","msg":${JSON.stringify(msg)}${bound}`;
    return {
      taken,
      write: (members) => sink.write(`{"time":"${isoNow()}${rest}${members === '' ? '' : ','}${members}}\n`),
      head: rest,
      writeLines: sink.writeBatch !== undefined ? (text) => sink.writeBatch!(text) : (text) => sink.write(text),
    };
  }

  debug(msg: string, fields?: LogFields): void { this.#log('debug', msg, fields); }
  info(msg: string, fields?: LogFields): void { this.#log('info', msg, fields); }
  warn(msg: string, fields?: LogFields): void { this.#log('warn', msg, fields); }
  error(msg: string, fields?: LogFields): void { this.#log('error', msg, fields); }

  child(fields: LogFields): Logger {
    return new LineLogger({ level: this.level, format: this.#format, sink: this.#sink, fields: Object.assign({}, this.#fields, fields) });
  }
}

export function createLogger(opts: LoggerOptions = {}): Logger {
  return new LineLogger({
    level: opts.level ?? 'info',
    format: opts.format ?? 'json',
    sink: opts.sink ?? process.stdout,
    fields: opts.fields ?? {},
  });
}

/** A logger that drops everything, for tests and library use. */
export const silentLogger: Logger = createLogger({ level: 'silent', sink: { write() {} } });

/**
 * How the batched sink writes to stdout. Redirected to a file (`> proxy.log`, as services and
 * the bench run it), Node's process.stdout is a SyncWriteStream: a Writable whose every write
 * goes through the stream machinery and Buffer.from before the same write(2). Writing the text
 * with fs.writeSync(1) makes that write(2) directly (the stream part and the encoding were ≈9 %
 * of the main thread's time under short connections; perf, Node 20). A pipe or a terminal keeps
 * process.stdout (a pipe is non-blocking: a direct write could fail with EAGAIN), and so does
 * a file write that fails, so that the error surfaces as it did.
 */
function stdoutWriter(): (text: string) => void {
  let isFile = false;
  try {
    isFile = fstatSync(1).isFile();
  } catch {
    // no stdout to look at: process.stdout decides
  }
  if (!isFile) return (text) => void process.stdout.write(text);
  return (text) => {
    try {
      writeSync(1, text);
    } catch {
      process.stdout.write(text);
    }
  };
}

/** createBatchedSink's knobs. */
export interface BatchedSinkOptions {
  /** How long a line may wait for others before the write (ms). 0: until the end of this
   *  event-loop turn only (setImmediate). */
  flushMs?: number;
  /** Pending characters that force a write at once, whatever the time. */
  maxPending?: number;
}

/**
 * A sink that gathers lines into one write: those of `flushMs` (default 10 ms), or fewer when
 * `maxPending` characters are waiting. Under many short connections the access log writes one
 * or two lines per connection; a write(2) per event-loop turn was still ≈5 % of the HTTP
 * proxy's CPU at ≈3 000 connections/s (profile: fs.writeSync under the sink's flush), one per
 * 10 ms is ≈100 writes/s whatever the rate (nginx's `access_log ... buffer= flush=` makes the
 * same trade). Lines keep their order; pending lines are written when the process exits, and
 * the timer never keeps the process alive by itself.
 */
export function createBatchedSink(out: { write(chunk: string): unknown } = process.stdout, opts: BatchedSinkOptions = {}): LogSink {
  const write = out === process.stdout ? stdoutWriter() : (text: string) => void out.write(text);
  const flushMs = opts.flushMs ?? 10;
  const maxPending = opts.maxPending ?? 64 * 1024;
  let pending: string[] = [];
  let pendingChars = 0;
  let timer: NodeJS.Timeout | NodeJS.Immediate | undefined;
  const flush = (): void => {
    if (timer !== undefined) {
      if (flushMs > 0) clearTimeout(timer as NodeJS.Timeout);
      else clearImmediate(timer as NodeJS.Immediate);
      timer = undefined;
    }
    if (pending.length === 0) return;
    const text = pending.join('');
    pending = [];
    pendingChars = 0;
    write(text);
  };
  process.once('exit', flush);
  return {
    write(line: string): void {
      pending.push(line);
      pendingChars += line.length;
      if (pendingChars >= maxPending) flush();
      else if (timer === undefined) timer = flushMs > 0 ? setTimeout(flush, flushMs).unref() : setImmediate(flush);
    },
    // A batch waited for its peers already (the engine's LINES_DELAY_MS): out with what is
    // pending, in order, and no timer to wake the main thread again for it.
    writeBatch(lines: string): void {
      pending.push(lines);
      flush();
    },
  };
}
