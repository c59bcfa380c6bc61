/**
 * A three-host Multipath TCP testbed in network namespaces, shaped like the paper's:
 *
 * ```
 *   cli ──wired 10.N.1.0/24 (HTB both ends)── prx ──lan 10.N.3.0/24── srv
 *       ──wless 10.N.2.0/24 (HTB both ends)──
 * ```
 *
 * `cli` is the MPTCP client (an in-kernel PM `subflow` endpoint on its wless address makes it
 * open a second subflow; source routing sends that subflow out of wless), `prx` is where the proxy
 * runs (IP forwarding on, so plain routed cli→srv traffic also works, which the transparent-proxy
 * tests rely on), `srv` is a legacy TCP server.
 *
 * Addresses are the same in every testbed (10.71.x.y by default): namespaces are fully isolated
 * and the testbed never links them to the host namespace, so two testbeds (in one process or
 * two) with identical addresses cannot see each other's packets. Only the namespace *names* must
 * differ, which the per-run prefix guarantees.
 *
 * Lifecycle (ARCHITECTURE.md "a lifecycle for everything that holds resources"): createTestbed()
 * starts it; close() is graceful and idempotent; destroy() skips the grace period. A process-wide
 * exit/signal handler tears down testbeds that were never closed. If setup fails halfway,
 * everything created so far is removed and the error names the failing command and its stderr.
 */
import { generatePrefix, namespaceName, validatePrefix, HOST_ROLES, parseNetnsList, type HostName } from './naming.js';
import { registerTeardown, unregisterTeardown, type SyncTeardown } from './process-cleanup.js';
import { runCommand, runCommandSync, TestbedCommandError, type CommandResult, type RunCommandOptions } from './run-command.js';
import { TestbedProcess, type SpawnOptions } from './spawned-process.js';
import { parseSsTcp, type SsTcpSocket } from './ss-parse.js';

export type { HostName } from './naming.js';

/** The three links. `wired` and `wless` join cli and prx; `lan` joins prx and srv. */
export type PathName = 'wired' | 'wless' | 'lan';
export const PATH_NAMES: readonly PathName[] = ['wired', 'wless', 'lan'];

/** Setup phases, in order; `failAtStep` makes one fail on purpose (tests of partial teardown). */
export type SetupStep = 'namespaces' | 'sysctls' | 'links' | 'addresses' | 'routes' | 'mptcp' | 'shaping';
export const SETUP_STEPS: readonly SetupStep[] = ['namespaces', 'sysctls', 'links', 'addresses', 'routes', 'mptcp', 'shaping'];

/** Options for {@link createTestbed}. Rates are Mbit/s; undefined = unshaped. */
export interface TestbedOptions {
  /** Rate of the cli–prx wired path, both directions. Default: unshaped. */
  wiredMbit?: number;
  /** Rate of the cli–prx wless path, both directions. Default: unshaped. */
  wlessMbit?: number;
  /** Rate of the prx–srv lan link. Default: unshaped. */
  lanMbit?: number;
  /** Namespace name prefix, `[a-z][a-z0-9_]{0,19}-`. Default: a fresh `mpx<pid36><rand>-`. */
  prefix?: string;
  /** Second octet of every address (10.N.x.y), 1–254. Default 71. */
  subnetOctet?: number;
  /** Timeout of each setup command in ms. Default 10 000. */
  commandTimeoutMs?: number;
  /** Testing aid: run a failing command at the start of this step (to prove partial teardown). */
  failAtStep?: SetupStep;
}

/** A host: its namespace. */
export interface HostBase {
  readonly name: HostName;
  /** Network namespace name, usable as `ip netns exec <ns> ...`. */
  readonly ns: string;
}
export interface ClientHost extends HostBase {
  readonly name: 'cli';
  readonly wired: string;
  readonly wless: string;
}
export interface ProxyHost extends HostBase {
  readonly name: 'prx';
  readonly wired: string;
  readonly wless: string;
  readonly lan: string;
}
export interface ServerHost extends HostBase {
  readonly name: 'srv';
  readonly lan: string;
}
export interface TestbedHosts {
  readonly cli: ClientHost;
  readonly prx: ProxyHost;
  readonly srv: ServerHost;
}

/** Options for {@link Testbed.exec}. */
export interface ExecOptions extends RunCommandOptions {}

interface PathSpec {
  /** The two ends: [host, device]. Devices carry the path's name on both sides. */
  ends: readonly [HostName, HostName];
  /** Third octet of the /24. */
  octet: number;
}

const PATHS: Record<PathName, PathSpec> = {
  wired: { ends: ['cli', 'prx'], octet: 1 },
  wless: { ends: ['cli', 'prx'], octet: 2 },
  lan: { ends: ['prx', 'srv'], octet: 3 },
};

/** Policy-routing tables on cli: one per path, chosen by source address (RFC 8684 §3.2 needs a
 * subflow's packets to leave by the interface of its source address). */
const CLI_TABLES = { wired: 101, wless: 102 } as const;

const DEFAULT_SUBNET_OCTET = 71;

/**
 * Create and bring up a testbed. Resolves once every namespace, link, address, route, MPTCP
 * endpoint and shaper is in place. On failure nothing is left behind.
 */
export async function createTestbed(opts: TestbedOptions = {}): Promise<Testbed> {
  const testbed = new Testbed(opts);
  await testbed.start();
  return testbed;
}

export class Testbed {
  readonly prefix: string;
  readonly hosts: TestbedHosts;
  /** Current rate of each path in Mbit/s (undefined = unshaped). */
  readonly rates: Record<PathName, number | undefined>;
  readonly #subnet: number;
  readonly #cmdTimeoutMs: number;
  readonly #failAtStep: SetupStep | undefined;
  /** Namespaces this testbed created (only those: a name that already existed is not ours). */
  readonly #created = new Set<string>();
  readonly #processes = new Set<TestbedProcess>();
  /** Paths whose both ends carry our HTB root qdisc. */
  readonly #shaped = new Set<PathName>();
  /** Every pid ever spawned, for the "are they gone" check after close. */
  readonly #allPids: number[] = [];
  #state: 'new' | 'starting' | 'up' | 'closing' | 'closed' = 'new';
  #closing: Promise<void> | undefined;
  readonly #syncTeardown: SyncTeardown;

  /** Prefer {@link createTestbed}; the constructor only validates options. */
  constructor(opts: TestbedOptions = {}) {
    this.prefix = opts.prefix ?? generatePrefix();
    validatePrefix(this.prefix);
    const subnet = opts.subnetOctet ?? DEFAULT_SUBNET_OCTET;
    if (!Number.isInteger(subnet) || subnet < 1 || subnet > 254) {
      throw new RangeError(`invalid subnetOctet ${subnet}: use an integer 1–254`);
    }
    for (const [key, v] of [['wiredMbit', opts.wiredMbit], ['wlessMbit', opts.wlessMbit], ['lanMbit', opts.lanMbit]] as const) {
      if (v !== undefined) checkRate(v, key);
    }
    this.#subnet = subnet;
    this.#cmdTimeoutMs = opts.commandTimeoutMs ?? 10_000;
    this.#failAtStep = opts.failAtStep;
    this.rates = { wired: opts.wiredMbit, wless: opts.wlessMbit, lan: opts.lanMbit };
    const ns = (h: HostName): string => namespaceName(this.prefix, h);
    this.hosts = {
      cli: { name: 'cli', ns: ns('cli'), wired: this.address('wired', 'cli'), wless: this.address('wless', 'cli') },
      prx: { name: 'prx', ns: ns('prx'), wired: this.address('wired', 'prx'), wless: this.address('wless', 'prx'), lan: this.address('lan', 'prx') },
      srv: { name: 'srv', ns: ns('srv'), lan: this.address('lan', 'srv') },
    };
    this.#syncTeardown = () => this.#teardownSync();
  }

  /** Namespace names of the three hosts. */
  get namespaces(): readonly string[] {
    return HOST_ROLES.map((h) => this.hosts[h].ns);
  }

  /** Whether the testbed is up (between a successful start and close). */
  get isUp(): boolean {
    return this.#state === 'up';
  }

  /** Address of `host` on `path` (the first end gets .2 on wired/wless — the client — else .1). */
  address(path: PathName, host: HostName): string {
    const spec = PATHS[path];
    const index = spec.ends.indexOf(host);
    if (index < 0) throw new RangeError(`host ${host} is not on path ${path}`);
    // cli is .2 and prx .1 on the client paths (prx is the gateway); on lan prx is .1, srv .2.
    const last = path === 'lan' ? index + 1 : 2 - index;
    return `10.${this.#subnet}.${spec.octet}.${last}`;
  }

  /** The /24 of a path, e.g. `10.71.3.0/24`. */
  subnet(path: PathName): string {
    return `10.${this.#subnet}.${PATHS[path].octet}.0/24`;
  }

  /** Bring the topology up. Called by createTestbed(); rejects (after cleaning up) on failure. */
  async start(): Promise<void> {
    if (this.#state !== 'new') throw new Error(`testbed ${this.prefix}: start() called twice`);
    this.#state = 'starting';
    registerTeardown(this.#syncTeardown);
    try {
      for (const step of SETUP_STEPS) {
        if (this.#failAtStep === step) {
          // A real command that fails, so the error path is the same as for a genuine failure.
          await this.#ip(['-n', this.hosts.cli.ns, 'link', 'set', 'dev', `nonexistent-${step}`, 'up']);
        }
        await this.#setup[step]();
      }
      this.#state = 'up';
    } catch (err) {
      this.#state = 'closing';
      await this.#teardown(0).catch(() => undefined);
      this.#state = 'closed';
      this.#closing = Promise.resolve();
      unregisterTeardown(this.#syncTeardown);
      if (err instanceof Error) err.message = `testbed ${this.prefix} setup failed: ${err.message}`;
      throw err;
    }
  }

  readonly #setup: Record<SetupStep, () => Promise<void>> = {
    namespaces: async () => {
      for (const ns of this.namespaces) {
        await this.#ip(['netns', 'add', ns]);
        this.#created.add(ns);
      }
      await Promise.all(this.namespaces.map((ns) => this.#ip(['-n', ns, 'link', 'set', 'dev', 'lo', 'up'])));
    },
    sysctls: async () => {
      // rp_filter=0: a subflow's packets may arrive on the "other" interface of a host with a
      // single route; `default` covers the veths created after this step.
      const common = ['net.mptcp.enabled=1', 'net.ipv4.conf.all.rp_filter=0', 'net.ipv4.conf.default.rp_filter=0'];
      await Promise.all(
        HOST_ROLES.map((h) => this.exec(h, ['sysctl', '-qw', ...common, ...(h === 'prx' ? ['net.ipv4.ip_forward=1'] : [])])),
      );
    },
    links: async () => {
      for (const path of PATH_NAMES) {
        const [a, b] = PATHS[path].ends;
        // `name` is needed: `ip link add wired ...` would parse a short name such as "a" as "address".
        await this.#ip(['link', 'add', 'name', path, 'netns', this.hosts[a].ns, 'type', 'veth', 'peer', 'name', path, 'netns', this.hosts[b].ns]);
      }
    },
    addresses: async () => {
      for (const path of PATH_NAMES) {
        for (const host of PATHS[path].ends) {
          await this.#ip(['-n', this.hosts[host].ns, 'addr', 'add', `${this.address(path, host)}/24`, 'dev', path]);
          await this.#ip(['-n', this.hosts[host].ns, 'link', 'set', 'dev', path, 'up']);
        }
      }
    },
    routes: async () => {
      await this.#addRoutes('wired');
      await this.#addRoutes('wless');
      await this.#addRoutes('lan');
      const cli = this.hosts.cli.ns;
      for (const path of ['wired', 'wless'] as const) {
        await this.#ip(['-n', cli, 'rule', 'add', 'from', this.address(path, 'cli'), 'table', String(CLI_TABLES[path]), 'pref', String(1000 + CLI_TABLES[path])]);
      }
    },
    mptcp: async () => {
      for (const h of HOST_ROLES) {
        await this.#ip(['-n', this.hosts[h].ns, 'mptcp', 'limits', 'set', 'subflows', '4', 'add_addr_accepted', '4']);
      }
      // The in-kernel path manager on cli opens an extra subflow from this address for every
      // MPTCP connection (`subflow` flag, see ip-mptcp(8)).
      await this.#ip(['-n', this.hosts.cli.ns, 'mptcp', 'endpoint', 'add', this.hosts.cli.wless, 'dev', 'wless', 'subflow']);
    },
    shaping: async () => {
      for (const path of PATH_NAMES) {
        const rate = this.rates[path];
        if (rate !== undefined) await this.#applyRate(path, rate);
      }
    },
  };

  /** Routes that depend on a path's device. Re-run after the link comes back up, because the
   * kernel deletes routes through a device when it goes down and never restores them. */
  async #addRoutes(path: PathName): Promise<void> {
    const { cli, srv } = this.hosts;
    if (path === 'wired' || path === 'wless') {
      const gw = this.address(path, 'prx');
      // main table: the default path is wired (reaches srv's lan via prx, which forwards).
      if (path === 'wired') await this.#ip(['-n', cli.ns, 'route', 'replace', 'default', 'via', gw, 'dev', path]);
      await this.#ip(['-n', cli.ns, 'route', 'replace', 'default', 'via', gw, 'dev', path, 'table', String(CLI_TABLES[path])]);
    } else {
      // srv answers both client subnets (and anything else) via prx.
      await this.#ip(['-n', srv.ns, 'route', 'replace', 'default', 'via', this.address('lan', 'prx'), 'dev', 'lan']);
    }
  }

  async #applyRate(path: PathName, mbit: number | undefined): Promise<void> {
    await this.#applyRateOnEnds(path, mbit);
    if (mbit === undefined) this.#shaped.delete(path);
    else this.#shaped.add(path);
  }

  async #applyRateOnEnds(path: PathName, mbit: number | undefined): Promise<void> {
    for (const host of PATHS[path].ends) {
      const tc = ['tc', '-n', this.hosts[host].ns];
      if (mbit === undefined) {
        // No root qdisc yet is fine ("Cannot delete qdisc with handle of zero").
        await runCommand([...tc, 'qdisc', 'del', 'dev', path, 'root'], { allowFailure: true, timeoutMs: this.#cmdTimeoutMs });
        continue;
      }
      const rate = `${Math.max(1, Math.round(mbit * 1000))}kbit`;
      // A root qdisc shapes egress only, hence both ends. r2q 100 keeps HTB's quantum sane at
      // these rates (no "quantum is big" warnings). Only the class changes once the qdisc exists:
      // `qdisc replace` on an existing HTB root is a change, which HTB refuses for r2q.
      if (!this.#shaped.has(path)) {
        await runCommand([...tc, 'qdisc', 'replace', 'dev', path, 'root', 'handle', '1:', 'htb', 'default', '10', 'r2q', '100'], { timeoutMs: this.#cmdTimeoutMs });
      }
      await runCommand([...tc, 'class', 'replace', 'dev', path, 'parent', '1:', 'classid', '1:10', 'htb', 'rate', rate, 'ceil', rate], { timeoutMs: this.#cmdTimeoutMs });
    }
  }

  #ip(args: readonly string[]): Promise<CommandResult> {
    return runCommand(['ip', ...args], { timeoutMs: this.#cmdTimeoutMs });
  }

  #assertUsable(what: string): void {
    if (this.#state !== 'up' && this.#state !== 'starting') {
      throw new Error(`testbed ${this.prefix}: ${what} called while ${this.#state}`);
    }
  }

  /**
   * Run a command inside a host's namespace (`ip netns exec NS argv...`) and collect its output.
   * Rejects with TestbedCommandError on a non-zero exit unless `allowFailure`; always on timeout
   * (default 10 s).
   */
  exec(host: HostName, argv: readonly string[], opts: ExecOptions = {}): Promise<CommandResult> {
    this.#assertUsable('exec()');
    return runCommand(['ip', 'netns', 'exec', this.hosts[host].ns, ...argv], { timeoutMs: this.#cmdTimeoutMs, ...opts });
  }

  /**
   * Start a long-running program inside a host's namespace. The process is tracked: close()
   * stops it (SIGTERM to its process group, SIGKILL after a grace period).
   */
  spawn(host: HostName, argv: readonly string[], opts: SpawnOptions = {}): TestbedProcess {
    this.#assertUsable('spawn()');
    const proc = new TestbedProcess(['ip', 'netns', 'exec', this.hosts[host].ns, ...argv], opts);
    if (proc.pid > 0) this.#allPids.push(proc.pid);
    this.#processes.add(proc);
    void proc.exited.then(() => this.#processes.delete(proc));
    return proc;
  }

  /** Every pid this testbed has spawned (alive or not). */
  spawnedPids(): readonly number[] {
    return [...this.#allPids];
  }

  /** Change a path's rate on both ends; undefined removes the shaper. */
  async setRate(path: PathName, mbit: number | undefined): Promise<void> {
    this.#assertUsable('setRate()');
    if (mbit !== undefined) checkRate(mbit, `${path} rate`);
    await this.#applyRate(path, mbit);
    this.rates[path] = mbit;
  }

  /** Take a path's link down or up on both ends; bringing it up restores its routes. */
  async setLinkUp(path: PathName, up: boolean): Promise<void> {
    this.#assertUsable('setLinkUp()');
    for (const host of PATHS[path].ends) {
      await this.#ip(['-n', this.hosts[host].ns, 'link', 'set', 'dev', path, up ? 'up' : 'down']);
    }
    if (up) await this.#addRoutes(path);
  }

  /**
   * TCP sockets in a host's namespace as `ss -tniaM`-style records (MPTCP subflows are TCP sockets
   * whose info shows `tcp-ulp-mptcp`). Listening sockets are included; filter by `state`.
   */
  async tcpSockets(host: HostName): Promise<SsTcpSocket[]> {
    const { stdout } = await this.exec(host, ['ss', '-tniaH']);
    return parseSsTcp(stdout);
  }

  /**
   * Established MPTCP subflows in a host's namespace, optionally only those with the given local
   * or peer port (e.g. the proxy's listening port).
   */
  async subflowCount(host: HostName, filter: { port?: number } = {}): Promise<number> {
    const sockets = await this.tcpSockets(host);
    return sockets.filter(
      (s) => s.state === 'ESTAB' && s.mptcpSubflow && (filter.port === undefined || s.localPort === filter.port || s.peerPort === filter.port),
    ).length;
  }

  /**
   * Stop using this testbed without tearing it down: it is no longer deleted at process exit.
   * Only for the CLI's `up`, which hands the namespaces to a human.
   */
  detach(): void {
    unregisterTeardown(this.#syncTeardown);
    this.#state = 'closed';
    this.#closing = Promise.resolve();
  }

  /** Graceful teardown: stop spawned processes (1 s grace), kill what is left in the namespaces,
   * delete the namespaces. Idempotent; safe after a failed start. */
  close(): Promise<void> {
    return this.#shutdown(1_000);
  }

  /** Like close() but without the grace period (SIGKILL at once). `err` is only for symmetry with
   * other lifecycles; teardown does not depend on it. */
  destroy(_err?: Error): Promise<void> {
    return this.#shutdown(0);
  }

  #shutdown(graceMs: number): Promise<void> {
    if (this.#closing) return this.#closing;
    if (this.#state === 'new') {
      this.#state = 'closed';
      this.#closing = Promise.resolve();
      return this.#closing;
    }
    this.#state = 'closing';
    this.#closing = this.#teardown(graceMs).finally(() => {
      this.#state = 'closed';
      unregisterTeardown(this.#syncTeardown);
    });
    return this.#closing;
  }

  async #teardown(graceMs: number): Promise<void> {
    // 1. Our own processes, by process group (reaches their children too).
    await Promise.all([...this.#processes].map((p) => p.stop(graceMs)));
    const errors: string[] = [];
    for (const ns of [...this.#created]) {
      // 2. Anything else still running in the namespace (e.g. started by a test via exec + &).
      await killNamespacePids(ns);
      // 3. The namespace; its veths and qdiscs go with it.
      const del = await runCommand(['ip', 'netns', 'del', ns], { allowFailure: true, timeoutMs: this.#cmdTimeoutMs });
      if (del.code === 0 || !(await namespaceExists(ns))) this.#created.delete(ns);
      else errors.push(`ip netns del ${ns}: ${del.stderr.trim()}`);
    }
    if (errors.length > 0) throw new Error(`testbed ${this.prefix}: teardown incomplete: ${errors.join('; ')}`);
  }

  /** Synchronous teardown for the process 'exit' handler (no event loop left there). */
  #teardownSync(): void {
    for (const p of this.#processes) {
      try {
        process.kill(-p.pid, 'SIGKILL');
      } catch {
        // ESRCH: already gone. Nothing else can be done during exit.
      }
    }
    for (const ns of this.#created) killNamespacePidsSync(ns);
    for (const ns of this.#created) runCommandSync(['ip', 'netns', 'del', ns]);
    this.#created.clear();
  }
}

function checkRate(mbit: number, what: string): void {
  if (!Number.isFinite(mbit) || mbit <= 0) throw new RangeError(`invalid ${what} ${mbit}: use a positive number of Mbit/s`);
}

/** Pids of processes in a namespace (`ip netns pids`); empty if the namespace is gone. */
export async function namespacePids(ns: string): Promise<number[]> {
  const r = await runCommand(['ip', 'netns', 'pids', ns], { allowFailure: true });
  return r.code === 0 ? parsePids(r.stdout) : [];
}

function parsePids(stdout: string): number[] {
  return stdout.split(/\s+/).filter(Boolean).map(Number).filter((n) => Number.isInteger(n) && n > 0 && n !== process.pid);
}

/** SIGKILL every process in a namespace and wait (≤ 2 s) until `ip netns pids` is empty. */
export async function killNamespacePids(ns: string): Promise<void> {
  const deadline = Date.now() + 2_000;
  for (;;) {
    const pids = await namespacePids(ns);
    if (pids.length === 0 || Date.now() > deadline) return;
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // ESRCH: exited between listing and killing.
      }
    }
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Synchronous {@link killNamespacePids} (single pass), for exit handlers and the CLI. */
export function killNamespacePidsSync(ns: string): void {
  const r = runCommandSync(['ip', 'netns', 'pids', ns]);
  if (r.code !== 0) return;
  for (const pid of parsePids(r.stdout)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // ESRCH: exited already.
    }
  }
}

/** Names from `ip netns list`. */
export async function listNamespaces(): Promise<string[]> {
  const r = await runCommand(['ip', 'netns', 'list']);
  return parseNetnsList(r.stdout);
}

async function namespaceExists(ns: string): Promise<boolean> {
  return (await listNamespaces()).includes(ns);
}

export { TestbedCommandError };
