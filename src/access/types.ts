/**
 * Access control contract. The listener asks `admitClient` at accept, the dialer asks
 * `checkDestination` for every resolved address before connecting, and front-ends
 * ask `verifyCredentials` when their protocol carries a user name and password.
 */
import type { TargetAddress } from '../core/errors.js';
import type { Cidr } from './cidr.js';
import type { PortRange } from './ports.js';

export interface AccessDecision {
  allowed: boolean;
  /** The rule that decided, for logs: 'client-network', 'destination-network', 'destination-port', 'self'. */
  rule: string;
  reason?: string;
}

/** checkDestination's rules, in its order: networks denied, allowed (empty = any), ports
 *  denied, allowed (empty = any), then the self-loop guard over the proxy's own hosts and ports. */
export interface DestinationRules {
  deny: readonly Cidr[];
  allow: readonly Cidr[];
  denyPorts: readonly PortRange[];
  allowPorts: readonly PortRange[];
  /** Read when asked: listeners bind later than the policy is built. */
  selfPorts(): number[];
  selfHosts(): string[];
}

export interface AccessPolicy {
  /** Is this client address allowed to use the proxy at all? */
  admitClient(clientAddress: string): AccessDecision;
  /** May the proxy connect to `address` (an IP literal, after DNS) for `target`? */
  checkDestination(target: TargetAddress, address: string): AccessDecision;
  /** The client-network rules admitClient applies (access.allowClients), for an engine that
   *  admits clients outside JS (the native acceptor); absent = only admitClient can decide. */
  readonly clientRules?: readonly Cidr[];
  /** What checkDestination applies, for an engine that checks per-connection destinations
   *  itself (a transparent listener's acceptor); absent = only checkDestination can decide. */
  readonly destinationRules?: DestinationRules;
  /** True when the front-ends must ask for credentials. */
  readonly authRequired: boolean;
  /** Checks a user name and password against the credentials file; constant-time. */
  verifyCredentials(user: string, password: string): Promise<boolean>;
}
