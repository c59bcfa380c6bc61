/* SPDX-License-Identifier: MIT
 *
 * Client admission for connections the engine accepts itself (relay.c's acceptors): the
 * client-network allow list and the per-client connection counts. The counts are one table
 * per process, shared with JS (clientAcquire/clientRelease), so a client's connections are
 * counted once whichever listener, JS or engine, accepted them: access.maxConnectionsPerClient
 * means the same for both. Given meaning by src/access/ (policy.ts, connection-limiter.ts).
 */
#ifndef MPX_ADMISSION_H
#define MPX_ADMISSION_H

#include <node_api.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

/* A client address as access/cidr.ts's canonicalIp sees it: IPv4-mapped IPv6 folded to
 * IPv4. family 4 uses bytes[0..3], the rest zero. */
struct mpx_client_key {
	uint8_t family; /* 4 or 6 */
	uint8_t bytes[16];
};

/* One access.allowClients rule, folded the same way (parseCidr). */
struct mpx_cidr {
	uint8_t family, prefix;
	uint8_t bytes[16];
};

/* false for an address family other than AF_INET/AF_INET6. */
bool mpx_client_key_from_sockaddr(const struct sockaddr *sa, struct mpx_client_key *out);
/* The first rule containing the key (families must match, as cidrContains), or -1. */
int mpx_cidr_match(const struct mpx_cidr *rules, size_t n, const struct mpx_client_key *key);
/* Decodes JS's packed rule list: 18 bytes each (family, prefix, 16 address bytes). */
bool mpx_cidr_unpack(const uint8_t *data, size_t len, struct mpx_cidr **out, size_t *n);

/* Counts one more connection for the client unless it has max already (max 0: no limit). */
bool mpx_client_acquire(const struct mpx_client_key *key, uint32_t max);
/* A JS IP literal (a zone id ignored) → key; false with a TypeError pending if it is not one. */
bool mpx_arg_client(napi_env env, napi_value v, struct mpx_client_key *key);
void mpx_client_release(const struct mpx_client_key *key);

/* clientAcquire(address, max) → boolean; clientRelease(address); clientCount(address) →
 * number; clientTracked() → number. Addresses are IP literals (mapped IPv4 folded). */
napi_value mpx_js_client_acquire(napi_env env, napi_callback_info info);
napi_value mpx_js_client_release(napi_env env, napi_callback_info info);
napi_value mpx_js_client_count(napi_env env, napi_callback_info info);
napi_value mpx_js_client_tracked(napi_env env, napi_callback_info info);

#endif
