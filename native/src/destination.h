/* SPDX-License-Identifier: MIT
 *
 * The destination check for connections the engine dials to a per-connection target (a
 * transparent listener's acceptor: the target is the accepted socket's local address, as TPROXY
 * delivers it). The same rules, in the same order, as src/access/policy.ts checkDestination:
 * denied networks, allowed networks, denied ports, allowed ports, then the self-loop guard.
 */
#ifndef MPX_DESTINATION_H
#define MPX_DESTINATION_H

#include "admission.h"

#include <node_api.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct mpx_port_range {
	uint16_t from, to;
};

/* One of the proxy's own listen hosts: any address of this host (a name, "" or an unspecified
 * address) or one IP (with whether it is loopback). */
struct mpx_self_host {
	bool any_local;
	struct mpx_client_key ip;
};

struct mpx_dest_policy {
	struct mpx_cidr *deny, *allow;
	size_t ndeny, nallow;
	struct mpx_port_range *deny_ports, *allow_ports;
	size_t ndeny_ports, nallow_ports;
	uint16_t *self_ports;
	size_t nself_ports;
	struct mpx_self_host *self_hosts;
	size_t nself_hosts;
};

/* NULL if allowed; else the rule that denied: 'destination-network', 'destination-port', 'self'. */
const char *mpx_dest_check(const struct mpx_dest_policy *p, const struct mpx_client_key *ip, uint16_t port);
/* Reads { deny, allow, denyPorts, allowPorts, selfPorts, selfHosts } (packed Buffers, see
 * src/listeners/engine-acceptor.ts packDestinationRules); TypeError naming the key otherwise. */
bool mpx_dest_policy_from_js(napi_env env, napi_value obj, struct mpx_dest_policy *out);
void mpx_dest_policy_free(struct mpx_dest_policy *p);

#endif
