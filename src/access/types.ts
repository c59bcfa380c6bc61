/**
 * Access control contract. The listener asks `admitClient` at accept, the dialer asks
 * `checkDestination` for every resolved address before connecting, and front-ends
 * ask `verifyCredentials` when their protocol carries a user name and password.
 */
import type { TargetAddress } from '../core/errors.js';
import type { Cidr } from './cidr.js';

export interface AccessDecision {
  allowed: boolean;
  /** The rule that decided, for logs: 'client-network', 'destination-network', 'destination-port', 'self'. */
  rule: string;
  reason?: string;
}

export interface AccessPolicy {
  /** Is this client address allowed to use the proxy at all? */
  admitClient(clientAddress: string): AccessDecision;
  /** May the proxy connect to `address` (an IP literal, after DNS) for `target`? */
  checkDestination(target: TargetAddress, address: string): AccessDecision;
  /** The client-network rules admitClient applies (access.allowClients), for an engine that
   *  admits clients outside JS (the native acceptor); absent = only admitClient can decide. */
  readonly clientRules?: readonly Cidr[];
  /** True when the front-ends must ask for credentials. */
  readonly authRequired: boolean;
  /** Checks a user name and password against the credentials file; constant-time. */
  verifyCredentials(user: string, password: string): Promise<boolean>;
}
