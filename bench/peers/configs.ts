/**
 * Minimal configurations for the peers, written into the run's temporary directory. Every file
 * the peers write (pid, logs, temp) stays there, so nothing outside it changes.
 */
import { writeFileSync, mkdirSync, chownSync, chmodSync } from 'node:fs';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';

export interface HaproxyFrontend {
  name: string;
  port: number;
  mode: 'tcp' | 'http';
  to: string; // host:port
  /** HTTP: `http-reuse always` (any idle server connection serves any request, a client's
   *  first included) instead of the default `safe` (a client's first request gets its own). */
  reuseAlways?: boolean;
}

/** HAProxy 2.6, one thread (the comparison point), no logging. */
export function writeHaproxyConfig(dir: string, frontends: readonly HaproxyFrontend[]): string {
  const lines = [
    'global',
    '  nbthread 1',
    '  maxconn 9000',
    `  pidfile ${join(dir, 'haproxy.pid')}`,
    'defaults',
    '  timeout connect 5s',
    '  timeout client 120s',
    '  timeout server 120s',
    '  maxconn 9000',
  ];
  for (const f of frontends) {
    lines.push(
      `frontend fe_${f.name}`,
      `  mode ${f.mode}`,
      `  bind 0.0.0.0:${f.port}`,
      `  default_backend be_${f.name}`,
      `backend be_${f.name}`,
      `  mode ${f.mode}`,
      ...(f.reuseAlways ? ['  http-reuse always'] : []),
      `  server s1 ${f.to}`,
    );
  }
  const file = join(dir, 'haproxy.cfg');
  writeFileSync(file, `${lines.join('\n')}\n`);
  return file;
}

/** Squid as a plain forward proxy: no cache (memory or disk), logs in `dir`. */
export function writeSquidConfig(dir: string, port: number, allowNet: string): string {
  const sq = join(dir, 'squid');
  mkdirSync(sq, { recursive: true });
  // Squid drops root privileges to cache_effective_user; Debian's squid runs as `proxy`.
  let user = 'proxy';
  try {
    execFileSync('id', ['proxy'], { stdio: 'ignore' });
    const uid = Number(execFileSync('id', ['-u', 'proxy'], { encoding: 'utf8' }).trim());
    const gid = Number(execFileSync('id', ['-g', 'proxy'], { encoding: 'utf8' }).trim());
    chownSync(sq, uid, gid);
    // The run's mkdtemp directory is 0700: let the unprivileged squid reach its own subdirectory.
    chmodSync(dir, 0o755);
  } catch {
    user = 'nobody';
  }
  const lines = [
    `http_port 0.0.0.0:${port}`,
    `acl benchnets src ${allowNet}`,
    'http_access allow benchnets',
    'http_access deny all',
    'cache deny all',
    'cache_mem 0 MB',
    `cache_effective_user ${user}`,
    `pid_filename ${join(sq, 'squid.pid')}`,
    `access_log stdio:${join(sq, 'access.log')}`,
    `cache_log ${join(sq, 'cache.log')}`,
    'cache_store_log none',
    `coredump_dir ${sq}`,
    'pinger_enable off',
    'max_filedescriptors 20000',
    'shutdown_lifetime 1 seconds',
    'visible_hostname mptcp-bench',
    'dns_v4_first on',
    'client_persistent_connections on',
    'server_persistent_connections off',
  ];
  const file = join(dir, 'squid.conf');
  writeFileSync(file, `${lines.join('\n')}\n`);
  return file;
}

/** nginx: one process (no master, no daemon), static files from `root`, no access log. */
export function writeNginxConfig(dir: string, name: string, listen: string, root: string, opts: { sendfile?: boolean } = {}): string {
  const sendfile = opts.sendfile ?? true;
  const d = join(dir, `nginx-${name}`);
  mkdirSync(join(d, 'tmp'), { recursive: true });
  const conf = `daemon off;
master_process off;
worker_processes 1;
worker_rlimit_nofile 65536;
pid ${join(d, 'nginx.pid')};
error_log ${join(d, 'error.log')} warn;
events { worker_connections 30000; }
http {
  access_log off;
  sendfile ${sendfile ? 'on' : 'off'};
  tcp_nopush ${sendfile ? 'on' : 'off'};
  output_buffers 2 1m;
  keepalive_timeout 60;
  default_type application/octet-stream;
  client_body_temp_path ${join(d, 'tmp')};
  proxy_temp_path ${join(d, 'tmp')};
  fastcgi_temp_path ${join(d, 'tmp')};
  uwsgi_temp_path ${join(d, 'tmp')};
  scgi_temp_path ${join(d, 'tmp')};
  server {
    listen ${listen} backlog=4096;
    root ${root};
    location / { }
  }
}
`;
  const file = join(d, 'nginx.conf');
  writeFileSync(file, conf);
  return file;
}

/** Our HTTP proxy: one http listener, access allowing the testbed, upstream plain TCP. */
export function writeOursHttpConfig(
  dir: string,
  name: string,
  port: number,
  allowNet: string,
  extra: { forwardPort?: number; forwardTo?: string; upstreamPool?: boolean; socksPort?: number; accessLog?: boolean } = {},
): string {
  // upstreamPool false: upstreamIdleTimeoutMs 0, every request dials (the delay scenario's
  // request-to-syn needs an upstream SYN per request).
  const pool = extra.upstreamPool === false ? '\n    upstreamIdleTimeoutMs: 0' : '';
  const listeners = [
    `  - name: http\n    type: http\n    listen: "0.0.0.0:${port}"\n    mptcp: on\n    backlog: 4096${pool}`,
  ];
  if (extra.forwardPort !== undefined && extra.forwardTo !== undefined) {
    listeners.push(`  - name: forward\n    type: tcp-forward\n    listen: "0.0.0.0:${extra.forwardPort}"\n    to: "${extra.forwardTo}"\n    mptcp: on\n    backlog: 4096`);
  }
  if (extra.socksPort !== undefined) {
    listeners.push(`  - name: socks\n    type: socks5\n    listen: "0.0.0.0:${extra.socksPort}"\n    mptcp: on\n    backlog: 4096`);
  }
  // accessLog false: no access line per connection (the conn-rate scenario's like-for-like row
  // beside HAProxy, which runs without logging).
  const yaml = `log:
  level: info
  format: json
  access: ${extra.accessLog === false ? 'false' : 'true'}
listeners:
${listeners.join('\n')}
upstream:
  mptcp: off
access:
  allowClients: ["${allowNet}"]
  denyDestinations: []
  maxConnectionsPerClient: 0
`;
  const file = join(dir, `${name}.yaml`);
  writeFileSync(file, yaml);
  return file;
}
