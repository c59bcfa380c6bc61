/**
 * Process-wide safety net for testbeds: whatever a test does (throws, is interrupted with Ctrl-C,
 * is killed with SIGTERM by the test runner), the namespaces and processes it created go away.
 *
 * - 'exit' runs every registered synchronous teardown (spawnSync: `ip netns pids` + kill +
 *   `ip netns del`). Node emits 'exit' also when the process dies of an uncaught exception or an
 *   unhandled rejection, so that case needs no extra handler (verified on Node 20).
 * - SIGINT/SIGTERM/SIGHUP: installing a listener removes Node's default "exit on signal", so the
 *   handler tears down and then exits with 128 + signal number itself, unless someone else also
 *   listens for that signal (then the decision to exit is theirs).
 *
 * Handlers are installed when the first testbed registers and removed when the last one leaves, so
 * a process that never creates a testbed keeps Node's default signal behaviour.
 */
import { constants } from 'node:os';

/** A synchronous teardown; must not throw and must be safe to run twice. */
export type SyncTeardown = () => void;

const teardowns = new Set<SyncTeardown>();
const SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;
let installed = false;

function runAll(): void {
  for (const teardown of [...teardowns]) {
    teardowns.delete(teardown);
    try {
      teardown();
    } catch (err) {
      // Teardown must go on for the other testbeds; say what went wrong.
      process.stderr.write(`testbed: teardown on exit failed: ${String(err)}\n`);
    }
  }
}

function onExit(): void {
  runAll();
}

function onSignal(signal: NodeJS.Signals): void {
  runAll();
  uninstall();
  if (process.listenerCount(signal) === 0) process.exit(128 + (constants.signals[signal] ?? 0));
}

function install(): void {
  if (installed) return;
  installed = true;
  process.on('exit', onExit);
  for (const s of SIGNALS) process.on(s, onSignal);
}

function uninstall(): void {
  if (!installed) return;
  installed = false;
  process.off('exit', onExit);
  for (const s of SIGNALS) process.off(s, onSignal);
}

/** Register a teardown to run if the process ends before it is unregistered. */
export function registerTeardown(teardown: SyncTeardown): void {
  teardowns.add(teardown);
  install();
}

/** Forget a teardown (after a normal close(), or when the CLI hands a testbed to a human). */
export function unregisterTeardown(teardown: SyncTeardown): void {
  teardowns.delete(teardown);
  if (teardowns.size === 0) uninstall();
}

/** How many testbeds are currently protected (for tests). */
export function registeredTeardownCount(): number {
  return teardowns.size;
}
