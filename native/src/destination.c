/* SPDX-License-Identifier: MIT
 *
 * The engine's destination check (destination.h). isSelf needs this host's addresses; like the
 * JS policy (os.networkInterfaces() per check) it reads them at each check that needs them
 * — only when the port is one of the proxy's own — so an address added at run time counts.
 */
#include "destination.h"
#include "common.h"

#include <errno.h>
#include <ifaddrs.h>
#include <stdio.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

static bool is_zero(const struct mpx_client_key *k)
{
	for (int i = 0; i < (k->family == 4 ? 4 : 16); i++)
		if (k->bytes[i] != 0)
			return false;
	return true;
}

static bool is_loopback(const struct mpx_client_key *k)
{
	if (k->family == 4)
		return k->bytes[0] == 127;
	static const uint8_t one[16] = { [15] = 1 };
	return memcmp(k->bytes, one, 16) == 0;
}

static bool same_ip(const struct mpx_client_key *a, const struct mpx_client_key *b)
{
	return a->family == b->family && memcmp(a->bytes, b->bytes, a->family == 4 ? 4 : 16) == 0;
}

/* access/policy.ts isLocalAddress: unspecified, loopback, or on one of this host's interfaces. */
static bool is_local(const struct mpx_client_key *ip)
{
	if (is_zero(ip) || is_loopback(ip))
		return true;
	struct ifaddrs *list = NULL;
	if (getifaddrs(&list) != 0)
		return true; /* cannot tell: deny rather than risk a loop, as the JS policy does */
	bool found = false;
	for (struct ifaddrs *i = list; i != NULL && !found; i = i->ifa_next) {
		struct mpx_client_key k;
		if (i->ifa_addr != NULL && mpx_client_key_from_sockaddr(i->ifa_addr, &k) && same_ip(&k, ip))
			found = true;
	}
	freeifaddrs(list);
	return found;
}

static bool port_in(const struct mpx_port_range *r, size_t n, uint16_t port)
{
	for (size_t i = 0; i < n; i++)
		if (port >= r[i].from && port <= r[i].to)
			return true;
	return false;
}

/* access/policy.ts isSelf. */
static bool is_self(const struct mpx_dest_policy *p, const struct mpx_client_key *ip, uint16_t port)
{
	bool ours = false;
	for (size_t i = 0; i < p->nself_ports && !ours; i++)
		ours = p->self_ports[i] == port;
	if (!ours)
		return false;
	for (size_t i = 0; i < p->nself_hosts; i++) {
		const struct mpx_self_host *h = &p->self_hosts[i];
		if (h->any_local || is_zero(&h->ip)) {
			if (is_local(ip))
				return true;
		} else if (same_ip(&h->ip, ip) || (is_zero(ip) && is_loopback(&h->ip))) {
			return true;
		}
	}
	return false;
}

const char *mpx_dest_check(const struct mpx_dest_policy *p, const struct mpx_client_key *ip, uint16_t port)
{
	if (mpx_cidr_match(p->deny, p->ndeny, ip) >= 0)
		return "destination-network";
	if (p->nallow > 0 && mpx_cidr_match(p->allow, p->nallow, ip) < 0)
		return "destination-network";
	if (port_in(p->deny_ports, p->ndeny_ports, port))
		return "destination-port";
	if (p->nallow_ports > 0 && !port_in(p->allow_ports, p->nallow_ports, port))
		return "destination-port";
	if (is_self(p, ip, port))
		return "self";
	return NULL;
}

/* A Buffer property of obj; false with a TypeError if it is missing or not one. */
static bool buffer_prop(napi_env env, napi_value obj, const char *key, const uint8_t **data, size_t *len)
{
	napi_value v;
	char msg[96];
	NAPI_CALL_BOOL(env, napi_get_named_property(env, obj, key, &v));
	snprintf(msg, sizeof(msg), "options.destinations.%s must be a Buffer", key);
	return mpx_arg_buffer(env, v, msg, data, len);
}

static bool bad_layout(napi_env env, const char *key)
{
	char msg[96];
	snprintf(msg, sizeof(msg), "options.destinations.%s has a malformed layout", key);
	napi_throw_type_error(env, "ERR_INVALID_ARG_VALUE", msg);
	return false;
}

/* obj[key]: a Buffer of `size`-byte records; its bytes and how many records. */
static bool records_prop(napi_env env, napi_value obj, const char *key, size_t size, const uint8_t **d, size_t *n)
{
	size_t len;
	if (!buffer_prop(env, obj, key, d, &len))
		return false;
	if (len % size != 0)
		return bad_layout(env, key);
	*n = len / size;
	return true;
}

/* n zeroed items of `size` bytes (NULL for none); false with the error thrown. */
static bool alloc_records(napi_env env, size_t n, size_t size, void **out)
{
	*out = n > 0 ? calloc(n, size) : NULL;
	if (n > 0 && *out == NULL) {
		mpx_throw_errno(env, ENOMEM, "malloc");
		return false;
	}
	return true;
}

static uint16_t u16le(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

/* Port ranges: 4 bytes each, from and to as little-endian u16. */
static bool ranges_prop(napi_env env, napi_value obj, const char *key, struct mpx_port_range **out, size_t *n)
{
	const uint8_t *d;
	if (!records_prop(env, obj, key, 4, &d, n) || !alloc_records(env, *n, sizeof(**out), (void **)out))
		return false;
	for (size_t i = 0; i < *n; i++) {
		(*out)[i].from = u16le(d + i * 4);
		(*out)[i].to = u16le(d + i * 4 + 2);
	}
	return true;
}

static bool cidrs_prop(napi_env env, napi_value obj, const char *key, struct mpx_cidr **out, size_t *n)
{
	const uint8_t *d;
	size_t len;
	if (!buffer_prop(env, obj, key, &d, &len))
		return false;
	return mpx_cidr_unpack(d, len, out, n) || bad_layout(env, key);
}

bool mpx_dest_policy_from_js(napi_env env, napi_value obj, struct mpx_dest_policy *p)
{
	memset(p, 0, sizeof(*p));
	const uint8_t *d;
	if (!cidrs_prop(env, obj, "deny", &p->deny, &p->ndeny) || !cidrs_prop(env, obj, "allow", &p->allow, &p->nallow) ||
	    !ranges_prop(env, obj, "denyPorts", &p->deny_ports, &p->ndeny_ports) ||
	    !ranges_prop(env, obj, "allowPorts", &p->allow_ports, &p->nallow_ports))
		goto fail;
	/* selfPorts: little-endian u16 each */
	if (!records_prop(env, obj, "selfPorts", 2, &d, &p->nself_ports) ||
	    !alloc_records(env, p->nself_ports, sizeof(uint16_t), (void **)&p->self_ports))
		goto fail;
	for (size_t i = 0; i < p->nself_ports; i++)
		p->self_ports[i] = u16le(d + i * 2);
	/* selfHosts: 17 bytes each: family (0 = any local address), 16 address bytes */
	if (!records_prop(env, obj, "selfHosts", 17, &d, &p->nself_hosts) ||
	    !alloc_records(env, p->nself_hosts, sizeof(*p->self_hosts), (void **)&p->self_hosts))
		goto fail;
	for (size_t i = 0; i < p->nself_hosts; i++) {
		const uint8_t *e = d + i * 17;
		if (e[0] != 0 && e[0] != 4 && e[0] != 6) {
			bad_layout(env, "selfHosts");
			goto fail;
		}
		p->self_hosts[i].any_local = e[0] == 0;
		p->self_hosts[i].ip.family = e[0] == 0 ? 4 : e[0];
		memcpy(p->self_hosts[i].ip.bytes, e + 1, 16);
	}
	return true;
fail:
	mpx_dest_policy_free(p);
	return false;
}

void mpx_dest_policy_free(struct mpx_dest_policy *p)
{
	free(p->deny);
	free(p->allow);
	free(p->deny_ports);
	free(p->allow_ports);
	free(p->self_ports);
	free(p->self_hosts);
	memset(p, 0, sizeof(*p));
}
