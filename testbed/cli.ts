#!/usr/bin/env node
/**
 * `npm run testbed -- <command>`: a hands-on testbed for humans.
 *
 *   up [--wired N] [--wless N] [--lan N] [--prefix P]   create a topology and LEAVE IT UP
 *   down --prefix P                                      delete that topology's namespaces
 *   list                                                 show testbed namespaces that exist
 *
 * `up` is the one place where teardown at exit is skipped on purpose (Testbed.detach()), so the
 * namespaces outlive this process; `down` removes them. Errors are one line on stderr, exit 2.
 */
import { parseArgs } from 'node:util';
import { createTestbed, killNamespacePids, listNamespaces } from './testbed.js';
import { NAMESPACE_PATTERN, HOST_ROLES, validatePrefix } from './naming.js';
import { runCommand } from './run-command.js';
import { testbedSkipReason } from './skip-reason.js';

const USAGE = `usage: testbed up [--wired MBIT] [--wless MBIT] [--lan MBIT] [--prefix P]
       testbed down --prefix P
       testbed list`;

class UsageError extends Error {}

function parseMbit(value: string | undefined, flag: string): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0) throw new UsageError(`--${flag} ${JSON.stringify(value)}: expected a positive number of Mbit/s`);
  return n;
}

function requirePrereqs(): void {
  const reason = testbedSkipReason();
  if (reason) throw new UsageError(`cannot build a testbed here: ${reason}`);
}

async function up(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: { wired: { type: 'string' }, wless: { type: 'string' }, lan: { type: 'string' }, prefix: { type: 'string' } },
    strict: true,
    allowPositionals: false,
  });
  const opts = {
    wiredMbit: parseMbit(values.wired, 'wired'),
    wlessMbit: parseMbit(values.wless, 'wless'),
    lanMbit: parseMbit(values.lan, 'lan'),
    prefix: values.prefix,
  };
  if (opts.prefix !== undefined) validatePrefix(opts.prefix);
  requirePrereqs();
  const tb = await createTestbed(opts);
  tb.detach(); // hand it to the human: nothing is torn down when this process exits
  const { cli, prx, srv } = tb.hosts;
  const rate = (r: number | undefined): string => (r === undefined ? 'unshaped' : `${r} Mbit/s`);
  process.stdout.write(`testbed ${tb.prefix} is up (left running; remove it with: npm run testbed -- down --prefix ${tb.prefix})

  host  namespace             addresses
  cli   ${cli.ns.padEnd(20)}  wired ${cli.wired}  wless ${cli.wless}
  prx   ${prx.ns.padEnd(20)}  wired ${prx.wired}  wless ${prx.wless}  lan ${prx.lan}   (ip_forward=1)
  srv   ${srv.ns.padEnd(20)}  lan ${srv.lan}

  paths: wired ${rate(tb.rates.wired)}, wless ${rate(tb.rates.wless)}, lan ${rate(tb.rates.lan)} (HTB on both ends)
  MPTCP: limits subflows 4 add_addr_accepted 4 on all hosts; cli endpoint ${cli.wless} dev wless subflow

examples:
  ip netns exec ${srv.ns} python3 -m http.server 8080 --bind ${srv.lan}
  ip netns exec ${cli.ns} curl http://${srv.lan}:8080/            # routed through prx
  ip netns exec ${cli.ns} mptcpize run curl http://${prx.wired}:PORT/   # MPTCP to a proxy on prx
  ip netns exec ${cli.ns} ss -tniM                                     # subflows
  ip netns exec ${cli.ns} tc -s class show dev wired                   # shaping counters
  ip -n ${cli.ns} link set dev wired down                              # cut the wired path
`);
}

async function down(args: string[]): Promise<void> {
  const { values } = parseArgs({ args, options: { prefix: { type: 'string' } }, strict: true, allowPositionals: false });
  if (values.prefix === undefined) throw new UsageError('down needs --prefix P (see `testbed list`)');
  const prefix = values.prefix;
  validatePrefix(prefix);
  requirePrereqs();
  // Only names that are exactly <prefix><role> and fit the testbed pattern: never anything else.
  const victims = (await listNamespaces()).filter((ns) => {
    const m = ns.match(NAMESPACE_PATTERN);
    return m !== null && m[1] === prefix;
  });
  if (victims.length === 0) {
    process.stdout.write(`no testbed namespaces with prefix ${prefix}\n`);
    return;
  }
  for (const ns of victims) {
    await killNamespacePids(ns);
    await runCommand(['ip', 'netns', 'del', ns]);
    process.stdout.write(`deleted ${ns}\n`);
  }
}

async function list(args: string[]): Promise<void> {
  parseArgs({ args, options: {}, strict: true, allowPositionals: false });
  const groups = new Map<string, string[]>();
  for (const ns of await listNamespaces()) {
    const m = ns.match(NAMESPACE_PATTERN);
    if (!m) continue;
    const roles = groups.get(m[1] as string) ?? [];
    roles.push(m[2] as string);
    groups.set(m[1] as string, roles);
  }
  if (groups.size === 0) {
    process.stdout.write('no testbed namespaces\n');
    return;
  }
  for (const [prefix, roles] of groups) {
    const complete = HOST_ROLES.every((r) => roles.includes(r));
    process.stdout.write(`${prefix}  ${HOST_ROLES.filter((r) => roles.includes(r)).map((r) => prefix + r).join(' ')}${complete ? '' : '  (incomplete)'}\n`);
    for (const role of HOST_ROLES) {
      if (!roles.includes(role)) continue;
      const r = await runCommand(['ip', '-n', prefix + role, '-br', '-4', 'addr', 'show'], { allowFailure: true });
      const addrs = r.stdout.split('\n').map((l) => l.trim().split(/\s+/)).filter((f) => f.length >= 3 && f[0] !== 'lo').map((f) => `${(f[0] as string).replace(/@.*/, '')} ${f[2]}`);
      process.stdout.write(`  ${role}  ${addrs.join('  ') || '(no addresses)'}\n`);
    }
  }
}

async function main(argv: string[]): Promise<void> {
  const [command, ...rest] = argv;
  switch (command) {
    case 'up':
      return up(rest);
    case 'down':
      return down(rest);
    case 'list':
      return list(rest);
    case undefined:
    case '-h':
    case '--help':
      process.stdout.write(`${USAGE}\n`);
      return;
    default:
      throw new UsageError(`unknown command ${JSON.stringify(command)}\n${USAGE}`);
  }
}

main(process.argv.slice(2)).then(
  () => process.exit(0),
  (err: unknown) => {
    const message = err instanceof Error ? err.message : String(err);
    process.stderr.write(`testbed: ${message.split('\n').join('\n  ')}\n`);
    process.exit(2);
  },
);
