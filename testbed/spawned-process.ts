/**
 * A process started inside a testbed namespace, tracked so the testbed can kill it at close().
 * It runs in its own process group (spawn `detached`), so killing `-pid` also takes down anything
 * it forked. Stdout is split into lines and kept, so a test can wait for "listening 40123" or for
 * the JSON line a peer program prints when a transfer ends.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { formatArgv } from './run-command.js';

/** How a tracked process ended. */
export interface ProcessExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** A line found by {@link TestbedProcess.waitForLine}. */
export interface LineMatch {
  line: string;
  match: RegExpMatchArray;
  /** Index in {@link TestbedProcess.lines}; pass `from: index + 1` to wait for the next one. */
  index: number;
}

/** Options for {@link TestbedProcess.waitForLine}. */
export interface WaitForLineOptions {
  /** Give up after this many ms (default 10 000). */
  timeoutMs?: number;
  /** First stdout line index to look at (default 0: lines already received count too). */
  from?: number;
}

/** Options for spawning a tracked process. */
export interface SpawnOptions {
  /** Extra environment variables (merged over process.env). */
  env?: NodeJS.ProcessEnv;
  /** Working directory. */
  cwd?: string;
  /** Keep stdin as a pipe (default: stdin is /dev/null). */
  stdin?: boolean;
}

const MAX_STDERR = 64 * 1024;

export class TestbedProcess {
  /** The underlying child (`ip netns exec` execs the program, so this is its pid). */
  readonly child: ChildProcess;
  readonly pid: number;
  /** Human-readable command line, for error messages. */
  readonly command: string;
  /** Every complete stdout line received so far. */
  readonly lines: string[] = [];
  /** Stderr received so far (capped at 64 KiB). */
  stderr = '';
  /** Resolves once the process has exited (never rejects). */
  readonly exited: Promise<ProcessExit>;
  #exit: ProcessExit | undefined;
  #partial = '';
  #lineListeners = new Set<() => void>();

  constructor(argv: readonly string[], opts: SpawnOptions = {}) {
    const [file, ...args] = argv;
    if (file === undefined) throw new TypeError('spawn: empty argv');
    this.command = formatArgv(argv);
    this.child = spawn(file, args, {
      // Own process group: close() kills the group, reaching grandchildren too.
      detached: true,
      stdio: [opts.stdin ? 'pipe' : 'ignore', 'pipe', 'pipe'],
      env: opts.env ? { ...process.env, ...opts.env } : process.env,
      cwd: opts.cwd,
    });
    if (this.child.pid === undefined) {
      // spawn() reports ENOENT asynchronously; 'ip' missing is caught by testbedSkipReason first.
      this.pid = -1;
    } else {
      this.pid = this.child.pid;
    }
    this.exited = new Promise<ProcessExit>((resolve) => {
      this.child.on('error', (err) => {
        this.stderr += `spawn error: ${err.message}\n`;
        this.#exit ??= { code: null, signal: null };
        resolve(this.#exit);
        this.#notify();
      });
      this.child.on('close', (code, signal) => {
        this.#exit = { code, signal };
        resolve(this.#exit);
        this.#notify();
      });
    });
    this.child.stdout?.setEncoding('utf8').on('data', (chunk: string) => this.#onStdout(chunk));
    this.child.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
      if (this.stderr.length < MAX_STDERR) this.stderr += chunk;
    });
  }

  /** Exit status once exited, else undefined. */
  get exit(): ProcessExit | undefined {
    return this.#exit;
  }

  #onStdout(chunk: string): void {
    const parts = (this.#partial + chunk).split('\n');
    this.#partial = parts.pop() ?? '';
    if (parts.length === 0) return;
    for (const p of parts) this.lines.push(p.replace(/\r$/, ''));
    this.#notify();
  }

  #notify(): void {
    for (const listener of [...this.#lineListeners]) listener();
  }

  /**
   * Wait until a stdout line matches `pattern`. Rejects after `timeoutMs`, or as soon as the
   * process exits without printing it; both errors quote the command and its stderr.
   */
  waitForLine(pattern: RegExp, opts: WaitForLineOptions = {}): Promise<LineMatch> {
    const timeoutMs = opts.timeoutMs ?? 10_000;
    let next = opts.from ?? 0;
    return new Promise<LineMatch>((resolve, reject) => {
      const check = (): boolean => {
        for (; next < this.lines.length; next++) {
          const line = this.lines[next] as string;
          const match = line.match(pattern);
          if (match) {
            finish();
            resolve({ line, match, index: next });
            return true;
          }
        }
        if (this.#exit) {
          finish();
          reject(new Error(`${this.command} exited (${this.#describeExit()}) before printing a line matching ${pattern}; stderr: ${this.stderr.trim() || '(empty)'}`));
          return true;
        }
        return false;
      };
      const timer = setTimeout(() => {
        finish();
        reject(new Error(`timed out after ${timeoutMs} ms waiting for ${this.command} to print a line matching ${pattern}; stderr: ${this.stderr.trim() || '(empty)'}`));
      }, timeoutMs);
      const listener = (): void => void check();
      const finish = (): void => {
        clearTimeout(timer);
        this.#lineListeners.delete(listener);
      };
      this.#lineListeners.add(listener);
      check();
    });
  }

  /** Wait for the next stdout line that is a JSON object satisfying `predicate`; returns it parsed. */
  async waitForJson<T = Record<string, unknown>>(
    predicate: (value: Record<string, unknown>) => boolean,
    opts: WaitForLineOptions = {},
  ): Promise<T> {
    let from = opts.from ?? 0;
    const deadline = Date.now() + (opts.timeoutMs ?? 10_000);
    for (;;) {
      const found = await this.waitForLine(/^\s*\{/, { from, timeoutMs: Math.max(1, deadline - Date.now()) });
      from = found.index + 1;
      let value: unknown;
      try {
        value = JSON.parse(found.line);
      } catch {
        continue; // a line that only looks like JSON; keep waiting for a real one
      }
      if (value !== null && typeof value === 'object' && predicate(value as Record<string, unknown>)) return value as T;
    }
  }

  /** Wait for exit, with a timeout (rejects if still running after `timeoutMs`). */
  async waitForExit(timeoutMs = 10_000): Promise<ProcessExit> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${timeoutMs} ms waiting for ${this.command} to exit`)), timeoutMs);
    });
    try {
      return await Promise.race([this.exited, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Signal the whole process group (no-op once exited). */
  kill(signal: NodeJS.Signals = 'SIGTERM'): void {
    if (this.#exit || this.pid <= 0) return;
    try {
      process.kill(-this.pid, signal);
    } catch (err) {
      // ESRCH: the group is already gone; anything else (EPERM) is worth knowing about.
      if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
    }
  }

  /** SIGTERM, then SIGKILL after `graceMs` if it is still alive; resolves once it has exited. */
  async stop(graceMs = 1_000): Promise<ProcessExit> {
    if (this.#exit) return this.#exit;
    this.kill('SIGTERM');
    let timer: NodeJS.Timeout | undefined;
    const escalated = new Promise<void>((resolve) => {
      timer = setTimeout(() => {
        this.kill('SIGKILL');
        resolve();
      }, graceMs);
    });
    await Promise.race([this.exited, escalated]);
    clearTimeout(timer);
    return this.waitForExit(5_000);
  }

  #describeExit(): string {
    const e = this.#exit;
    if (!e) return 'running';
    return e.signal ? `signal ${e.signal}` : `code ${e.code}`;
  }
}
