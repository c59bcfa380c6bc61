/**
 * Parsing `ss -tniaH` (iproute2) output into records, defensively: lines that do not look like a
 * socket line are skipped, never thrown on, because ss's info format varies between versions.
 *
 * A socket is two lines: `STATE RECV-Q SEND-Q LOCAL:PORT PEER:PORT [process]`, then an indented
 * info line (`cubic wscale:7,7 rto:204 ... tcp-ulp-mptcp flags:Jec token:... `). An MPTCP subflow
 * is a TCP socket whose info line names the `mptcp` ULP (net/mptcp/diag.c prints it).
 */

/** One TCP socket from `ss -tni`. */
export interface SsTcpSocket {
  state: string;
  localAddress: string;
  localPort: number;
  peerAddress: string;
  peerPort: number;
  /** True when the info line shows `tcp-ulp-mptcp`: this TCP socket is an MPTCP subflow. */
  mptcpSubflow: boolean;
  /** MPTCP connection token from the ULP info (`token:.../<token>`), when shown. */
  mptcpToken: string | undefined;
  /** Bytes acked / received as ss reports them, when shown. */
  bytesAcked: number | undefined;
  bytesReceived: number | undefined;
  /** The raw info line (trimmed). */
  info: string;
}

/** Split `addr:port` (`10.0.0.1:80`, `[::1]:80`, `10.0.0.1%wired:80`, `*:*`). */
export function splitEndpoint(endpoint: string): { address: string; port: number } {
  const i = endpoint.lastIndexOf(':');
  if (i < 0) return { address: endpoint, port: 0 };
  let address = endpoint.slice(0, i);
  const portText = endpoint.slice(i + 1);
  if (address.startsWith('[') && address.endsWith(']')) address = address.slice(1, -1);
  address = address.replace(/%[^%]*$/, '');
  const port = /^\d+$/.test(portText) ? Number(portText) : 0;
  return { address, port };
}

const STATE_LINE = /^([A-Z][A-Z0-9-]*)\s+(\d+)\s+(\d+)\s+(\S+)\s+(\S+)/;

export function parseSsTcp(stdout: string): SsTcpSocket[] {
  const sockets: SsTcpSocket[] = [];
  let current: SsTcpSocket | undefined;
  for (const raw of stdout.split('\n')) {
    if (raw.trim() === '') continue;
    const m = /^\s/.test(raw) ? null : raw.match(STATE_LINE);
    if (m) {
      const local = splitEndpoint(m[4] as string);
      const peer = splitEndpoint(m[5] as string);
      current = {
        state: m[1] as string,
        localAddress: local.address,
        localPort: local.port,
        peerAddress: peer.address,
        peerPort: peer.port,
        mptcpSubflow: false,
        mptcpToken: undefined,
        bytesAcked: undefined,
        bytesReceived: undefined,
        info: '',
      };
      sockets.push(current);
      continue;
    }
    if (current && /^\s/.test(raw)) {
      const info = raw.trim();
      current.info = current.info ? `${current.info} ${info}` : info;
      current.mptcpSubflow ||= /\btcp-ulp-mptcp\b/.test(info);
      // `token:<sf local>(id:N)/<connection token>(id:M)` (net/mptcp/diag.c); the part after the
      // slash is the MPTCP connection's token, shared by all its subflows.
      const token = info.match(/\btoken:([0-9a-f]+)(?:\(id:\d+\))?(?:\/([0-9a-f]+))?/);
      if (token) current.mptcpToken ??= token[2] ?? token[1];
      const acked = info.match(/\bbytes_acked:(\d+)/)?.[1];
      const received = info.match(/\bbytes_received:(\d+)/)?.[1];
      if (acked !== undefined) current.bytesAcked = Number(acked);
      if (received !== undefined) current.bytesReceived = Number(received);
    }
  }
  return sockets;
}
