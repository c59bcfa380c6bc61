/**
 * The embedded default configuration: what `npm start` runs with no config file.
 * An HTTP proxy on 3128 and a SOCKS5 proxy on 1080, MPTCP towards clients, MPTCP-if-possible
 * towards servers, open to loopback and private networks only.
 */
/** Clients allowed by default: loopback, RFC 1918 private, RFC 6598 CGNAT, RFC 4193 unique-local. */
export const DEFAULT_ALLOWED_CLIENTS: readonly string[] = [
  '127.0.0.0/8', '::1/128', '10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16', '100.64.0.0/10', 'fc00::/7',
];

/**
 * Never dialed by default: link-local (where cloud metadata services live, 169.254.169.254),
 * unspecified (connecting to 0.0.0.0 reaches this host on Linux), multicast, limited broadcast,
 * and fd00:ec2::254, AWS's IPv6 metadata address (inside fc00::/7, which stays allowed as a whole).
 * The proxy's own listeners are denied separately (rule "self").
 */
export const DEFAULT_DENIED_DESTINATIONS: readonly string[] = [
  '169.254.0.0/16', 'fe80::/10', '0.0.0.0/8', '::/128', '224.0.0.0/4', 'ff00::/8', '255.255.255.255/32', 'fd00:ec2::254/128',
];

/** The raw (pre-validation) default document, in the same shape a YAML file has. */
export const defaultConfigDocument = {
  log: { level: 'info', format: 'text', access: true },
  listeners: [
    { name: 'http', type: 'http', listen: '[::]:3128' },
    { name: 'socks5', type: 'socks5', listen: '[::]:1080' },
  ],
  upstream: { mptcp: 'auto' },
  relay: {},
  access: {},
} as const;

export const listenerDefaults = {
  mptcp: 'auto',
  backlog: 511,
  reusePort: false,
  handshakeTimeoutMs: 10_000,
} as const;

export const httpDefaults = {
  maxHeaderBytes: 64 * 1024,
  maxHeaderCount: 100,
  keepAliveTimeoutMs: 60_000,
  upstreamIdleTimeoutMs: 30_000,
  via: 'mptcp-proxy',
} as const;

export const upstreamDefaults = {
  mptcp: 'auto',
  connectTimeoutMs: 10_000,
  dnsTimeoutMs: 5_000,
  happyEyeballsDelayMs: 250,
} as const;

export const relayDefaults = {
  idleTimeoutMs: 600_000,
  engine: 'native',
  threads: 1,
  capBuffers: true,
  capBuffersMinBytes: 1_048_576,
  capBuffersRateMbit: 10_000,
  capBuffersNotsentBytes: 1_048_576,
} as const;

export const accessDefaults = {
  maxConnectionsPerClient: 1024,
} as const;
