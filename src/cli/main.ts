#!/usr/bin/env node
/**
 * The mptcp-proxy command. Thin: parses argv, loads config, calls main/doctor, and turns
 * every expected failure into one readable line and an exit code (2 = bad usage or config,
 * 1 = runtime failure). Never a stack trace as the user interface.
 */
import { parseArgs } from 'node:util';
import { readFileSync } from 'node:fs';
import { formatEndpoint } from '../core/context.js';
import { ConfigError, ProxyError } from '../core/errors.js';
import { createBatchedSink, createLogger } from '../core/logger.js';
import { defaultConfigDocumentCopy, parseConfigText, readConfigDocument } from '../config/load.js';
import { validateConfig } from '../config/schema.js';
import type { Config } from '../config/types.js';
import { startProxy, type RunningProxy } from '../main.js';
import { runDoctor } from './doctor.js';
import { runPasswd } from './passwd.js';
import { runWorkers, WORKER_ENV } from './workers.js';

const USAGE = `mptcp-proxy — Multipath TCP proxy and transport converter

Usage:
  mptcp-proxy start [--config FILE] [--workers N]
                                             run the proxy (embedded default: HTTP :3128, SOCKS5 :1080)
  mptcp-proxy forward --listen ADDR --to HOST:PORT [--mptcp on|auto|off] [--upstream-mptcp on|auto|off] [--workers N]
                                             run a fixed TCP forwarder (MPTCP clients → TCP server)
  mptcp-proxy check-config FILE              validate a configuration file and print the result
  mptcp-proxy print-default-config           print the embedded default configuration (YAML)
  mptcp-proxy doctor                         check the kernel and this host for what MPTCP needs
  mptcp-proxy passwd USER                    read a password on stdin, print a credentials line
Options:
  --log-level debug|info|warn|error          override log.level
  --log-format text|json                     override log.format
  --workers N                                N processes share each listening port (SO_REUSEPORT);
                                             a worker that dies is not restarted
Environment:
  MPTCP_PROXY_RELAY=native|js                override relay.engine (e.g. to run the tests with either)
  MPTCP_PROXY_ENGINE_ONLY=off                report every connection to JS, even where the engine
                                             could carry it alone and write its access line itself
  -h, --help, --version
`;

class UsageError extends Error {
  override name = 'UsageError';
}

function packageVersion(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

type Flags = Record<string, string | boolean | undefined>;

function applyLogFlags(doc: Record<string, unknown>, flags: Flags): void {
  const log = (doc.log ?? {}) as Record<string, unknown>;
  if (typeof flags['log-level'] === 'string') log.level = flags['log-level'];
  if (typeof flags['log-format'] === 'string') log.format = flags['log-format'];
  doc.log = log;
}

/** The one place MPTCP_PROXY_RELAY is read: it overrides relay.engine in any document. */
function applyEnvironment(doc: Record<string, unknown>): void {
  const engine = process.env.MPTCP_PROXY_RELAY;
  if (engine !== undefined && engine !== '') doc.relay = { ...((doc.relay ?? {}) as Record<string, unknown>), engine };
  // A worker (see runWorkers) shares every listening port with its siblings.
  if (process.env[WORKER_ENV] !== undefined && Array.isArray(doc.listeners)) {
    doc.listeners = (doc.listeners as Record<string, unknown>[]).map((l) => ({ ...l, reusePort: true }));
  }
}

async function configForStart(flags: Flags): Promise<Config> {
  const doc = typeof flags.config === 'string' ? await readConfigDocument(flags.config) : defaultConfigDocumentCopy();
  applyLogFlags(doc, flags);
  applyEnvironment(doc);
  return validateConfig(doc);
}

function configForForward(flags: Flags): Config {
  if (typeof flags.listen !== 'string') throw new UsageError('forward needs --listen ADDR (e.g. --listen [::]:9000)');
  if (typeof flags.to !== 'string') throw new UsageError('forward needs --to HOST:PORT (e.g. --to 10.0.0.5:80)');
  const doc: Record<string, unknown> = {
    listeners: [{ name: 'forward', type: 'tcp-forward', listen: flags.listen, to: flags.to, ...(flags.mptcp ? { mptcp: flags.mptcp } : {}) }],
    upstream: { mptcp: flags['upstream-mptcp'] ?? 'off' },
    // A fixed forwarder goes where its operator points it, private ranges included.
    access: { allowClients: ['0.0.0.0/0', '::/0'], denyDestinations: [] },
  };
  applyLogFlags(doc, flags);
  applyEnvironment(doc);
  return validateConfig(doc);
}

async function run(proxyConfig: Config): Promise<void> {
  const worker = process.env[WORKER_ENV];
  // Workers tag every line (access lines included) so their logs can be told apart.
  const fields = worker === undefined ? {} : { worker: Number(worker), pid: process.pid };
  const log = createLogger({ level: proxyConfig.log.level, format: proxyConfig.log.format, fields, sink: createBatchedSink() });
  const proxy: RunningProxy = await startProxy(proxyConfig, log);
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) {
      log.warn('second signal: cutting live connections', { signal });
      void proxy.destroy().then(() => process.exit(0));
      return;
    }
    stopping = true;
    log.info('stopping: no new connections; waiting up to 10 s for live ones', { signal });
    const hard = setTimeout(() => void proxy.destroy().then(() => process.exit(0)), 10_000);
    hard.unref();
    void proxy.close().then(() => process.exit(0));
  };
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
}

function workerCount(flags: Flags): number | undefined {
  if (flags.workers === undefined || process.env[WORKER_ENV] !== undefined) return undefined;
  const n = Number(flags.workers);
  if (!Number.isInteger(n) || n < 1 || n > 256) throw new UsageError(`--workers must be an integer from 1 to 256, got "${String(flags.workers)}"`);
  return n;
}

export async function main(argv: string[]): Promise<number> {
  const { values: flags, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    strict: true,
    options: {
      config: { type: 'string', short: 'c' },
      listen: { type: 'string' },
      to: { type: 'string' },
      mptcp: { type: 'string' },
      'upstream-mptcp': { type: 'string' },
      file: { type: 'string' },
      'log-level': { type: 'string' },
      'log-format': { type: 'string' },
      workers: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
      version: { type: 'boolean' },
    },
  });
  if (flags.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  if (flags.version) {
    process.stdout.write(`${packageVersion()}\n`);
    return 0;
  }
  const [command = 'start', ...rest] = positionals;
  switch (command) {
    case 'start':
    case 'forward': {
      const config = command === 'start' ? await configForStart(flags) : configForForward(flags);
      const workers = workerCount(flags);
      if (workers !== undefined) return runWorkers(workers, argv, config);
      await run(config);
      return -1; // keep running
    }
    case 'check-config': {
      const file = rest[0];
      if (!file) throw new UsageError('check-config needs a FILE');
      const cfg = parseConfigText(readFileSync(file, 'utf8'), file);
      process.stdout.write(`${file}: OK — ${cfg.listeners.length} listener(s): ${cfg.listeners.map((l) => `${l.name} (${l.type})`).join(', ')}\n`);
      return 0;
    }
    case 'print-default-config': {
      const { stringify } = await import('yaml');
      process.stdout.write(stringify(defaultConfigDocumentCopy()));
      return 0;
    }
    case 'doctor':
      return runDoctor(process.stdout);
    case 'passwd': {
      const user = rest[0];
      if (!user) throw new UsageError('passwd needs a USER');
      return runPasswd(user, process.stdin, process.stdout);
    }
    default:
      throw new UsageError(`unknown command "${command}"`);
  }
}

function reportFatal(err: unknown): number {
  if (err instanceof ConfigError) {
    process.stderr.write(`mptcp-proxy: ${err.message}\n`);
    return 2;
  }
  if (err instanceof UsageError || (err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
    process.stderr.write(`mptcp-proxy: ${(err as Error).message}\n\n${USAGE}`);
    return 2;
  }
  if (err instanceof ProxyError) {
    process.stderr.write(`mptcp-proxy: ${err.message}\n`);
    return 1;
  }
  const e = err as Error & { code?: string; syscall?: string; address?: string; port?: number };
  if (e.code === 'EADDRINUSE' || e.code === 'EACCES' || e.code === 'EADDRNOTAVAIL') {
    process.stderr.write(`mptcp-proxy: cannot listen on ${e.address === undefined ? '?' : formatEndpoint({ address: e.address, port: e.port ?? 0 })} (${e.code}): ${e.code === 'EADDRINUSE' ? 'another program uses this port; pick another with a config file (listeners[].listen)' : 'check the address and your permissions'}\n`);
    return 1;
  }
  process.stderr.write(`mptcp-proxy: unexpected error: ${e.message ?? String(err)}${e.code ? ` (${e.code})` : ''}\nRe-run with --log-level debug and report it.\n`);
  if (process.env.MPTCP_PROXY_DEBUG) process.stderr.write(`${e.stack}\n`);
  return 1;
}

main(process.argv.slice(2)).then(
  (code) => {
    if (code >= 0) process.exitCode = code;
  },
  (err) => {
    process.exitCode = reportFatal(err);
  },
);
