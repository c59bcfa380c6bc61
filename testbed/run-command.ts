/**
 * Running host commands (`ip`, `tc`, `sysctl`, `ss`) for the testbed, with a timeout and an
 * error that names the command and quotes its stderr, so a failed setup step explains itself.
 *
 * Imports nothing from src/: the testbed is a standalone library (see ARCHITECTURE.md).
 */
import { spawn, spawnSync } from 'node:child_process';

/** Result of a finished command. `code` is the exit status (null if killed by a signal). */
export interface CommandResult {
  stdout: string;
  stderr: string;
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** Options for {@link runCommand}. */
export interface RunCommandOptions {
  /** Kill the command (SIGKILL) after this many ms. Default 10 000. */
  timeoutMs?: number;
  /** Resolve instead of rejecting on a non-zero exit. Default false. */
  allowFailure?: boolean;
  /** Written to the command's stdin, then stdin is closed. */
  input?: string;
  /** Extra environment variables (merged over process.env). */
  env?: NodeJS.ProcessEnv;
}

/**
 * A host command failed (non-zero exit, signal, timeout, or could not be started).
 * `command` is the argv joined for humans; `stderr` is the command's own explanation.
 */
export class TestbedCommandError extends Error {
  readonly code = 'MPX_ERR_TESTBED_COMMAND';
  readonly command: string;
  readonly exitCode: number | null;
  readonly stderr: string;
  readonly stdout: string;
  constructor(argv: readonly string[], result: Partial<CommandResult>, reason: string, options?: { cause?: unknown }) {
    const command = formatArgv(argv);
    const detail = (result.stderr ?? '').trim();
    super(`testbed command failed (${reason}): ${command}${detail ? `: ${detail}` : ''}`, options);
    this.name = 'TestbedCommandError';
    this.command = command;
    this.exitCode = result.code ?? null;
    this.stderr = result.stderr ?? '';
    this.stdout = result.stdout ?? '';
  }
}

/** Quote an argv for an error message or a copy-paste example. */
export function formatArgv(argv: readonly string[]): string {
  return argv.map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`)).join(' ');
}

const DEFAULT_TIMEOUT_MS = 10_000;
const MAX_OUTPUT = 16 * 1024 * 1024;

/**
 * Run `argv[0]` with `argv.slice(1)` (no shell) and collect its output.
 * Rejects with {@link TestbedCommandError} on a non-zero exit unless `allowFailure`, and always
 * on a timeout or a spawn failure (ENOENT), because then there is no exit code to judge.
 */
export function runCommand(argv: readonly string[], opts: RunCommandOptions = {}): Promise<CommandResult> {
  const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  return new Promise((resolve, reject) => {
    const [file, ...args] = argv;
    if (file === undefined) {
      reject(new TypeError('runCommand: empty argv'));
      return;
    }
    const child = spawn(file, args, {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: opts.env ? { ...process.env, ...opts.env } : process.env,
    });
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      if (stdout.length < MAX_OUTPUT) stdout += d;
    });
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      if (stderr.length < MAX_OUTPUT) stderr += d;
    });
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(new TestbedCommandError(argv, { stdout, stderr: stderr || String(err.message) }, 'could not start', { cause: err }));
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const result: CommandResult = { stdout, stderr, code, signal };
      if (timedOut) reject(new TestbedCommandError(argv, result, `timed out after ${timeoutMs} ms`));
      else if (code !== 0 && !opts.allowFailure) {
        reject(new TestbedCommandError(argv, result, code === null ? `killed by ${signal}` : `exit code ${code}`));
      } else resolve(result);
    });
    // A command that does not read stdin may close it early; EPIPE here is not an error.
    child.stdin.on('error', () => undefined);
    child.stdin.end(opts.input ?? '');
  });
}

/**
 * Synchronous variant, only for the process 'exit' handler and the CLI's `down`, where the event
 * loop is gone or not needed. Never throws; returns what happened.
 */
export function runCommandSync(argv: readonly string[], timeoutMs = 5_000): CommandResult {
  const [file, ...args] = argv;
  const r = spawnSync(file ?? 'false', args, { encoding: 'utf8', timeout: timeoutMs, stdio: ['ignore', 'pipe', 'pipe'] });
  return {
    stdout: r.stdout ?? '',
    stderr: r.error ? String(r.error.message) : (r.stderr ?? ''),
    code: r.status,
    signal: r.signal,
  };
}
