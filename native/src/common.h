/* SPDX-License-Identifier: MIT
 *
 * Shared helpers for the addon: the NAPI_CALL status check, Node-shaped system errors,
 * argument readers and small object builders. No policy lives here.
 */
#ifndef MPX_COMMON_H
#define MPX_COMMON_H

#include <stdbool.h>
#include <stdint.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <node_api.h>

/* Check a napi_status; on failure make sure a JS exception is pending and return NULL
 * from the calling napi_callback (which N-API turns into that exception). */
#define NAPI_CALL(env, call)                                  \
	do {                                                      \
		napi_status mpx_status_ = (call);                     \
		if (mpx_status_ != napi_ok) {                         \
			mpx_throw_napi_failure((env), mpx_status_, #call); \
			return NULL;                                      \
		}                                                     \
	} while (0)

/* Same check for helpers that return bool (false = exception pending). */
#define NAPI_CALL_BOOL(env, call)                             \
	do {                                                      \
		napi_status mpx_status_ = (call);                     \
		if (mpx_status_ != napi_ok) {                         \
			mpx_throw_napi_failure((env), mpx_status_, #call); \
			return false;                                     \
		}                                                     \
	} while (0)

void mpx_throw_napi_failure(napi_env env, napi_status status, const char *what);

/* Throw an Error shaped like Node's own system errors:
 *   message "<syscall> <CODE>: <strerror>", code "<CODE>", errno -<err> (Node/libuv
 *   use negative errno values), syscall "<syscall>".
 * Always returns NULL so callbacks can `return mpx_throw_errno(...)`. */
napi_value mpx_throw_errno(napi_env env, int err, const char *syscall);

/* Argument readers: throw a TypeError naming the argument and return false on mismatch. */
bool mpx_get_args(napi_env env, napi_callback_info info, size_t want, napi_value *argv);
bool mpx_arg_int32(napi_env env, napi_value v, const char *name, int32_t *out);
bool mpx_arg_bool(napi_env env, napi_value v, const char *name, bool *out);
/* A Buffer's bytes, not copied (valid while `v` is); a TypeError with `message` otherwise. */
bool mpx_arg_buffer(napi_env env, napi_value v, const char *message, const uint8_t **data, size_t *len);
/* Copies a string argument into buf (NUL-terminated); TypeError if it does not fit. */
bool mpx_arg_string(napi_env env, napi_value v, const char *name, char *buf, size_t bufsize);

/* Object builders. */
bool mpx_set_u32(napi_env env, napi_value obj, const char *key, uint32_t v);
bool mpx_set_i32(napi_env env, napi_value obj, const char *key, int32_t v);
/* 64-bit counters become doubles: exact up to 2^53, which no byte counter reaches. */
bool mpx_set_u64(napi_env env, napi_value obj, const char *key, uint64_t v);
/* Sequence numbers are full 64-bit values compared for equality: BigInt, never doubles. */
bool mpx_set_u64_bigint(napi_env env, napi_value obj, const char *key, uint64_t v);
bool mpx_set_string(napi_env env, napi_value obj, const char *key, const char *v);
bool mpx_set_value(napi_env env, napi_value obj, const char *key, napi_value v);

/* inet_ntop(AF_INET) without glibc's sprintf: the engine formats several IPv4 addresses per
 * connection (vfprintf was ≈1 % of the engine thread under short connections, perf). out holds
 * INET_ADDRSTRLEN (16); returns the text's length. */
size_t mpx_ipv4_text(const struct in_addr *a, char *out);
/* A sockaddr as "a.b.c.d:port", "[x::y]:port" (an IPv4-mapped IPv6 address as the IPv4 it is),
 * or "?" for any other family, in buf (size ≥ 56: the longest IPv6 form fits); its length. */
size_t mpx_endpoint_text(const struct sockaddr *sa, char *buf, size_t size);

/* An IPv4/IPv6 sockaddr's address text and port: 4 or 6, 0 for another family (text and
 * port untouched), -1 if inet_ntop failed (errno says why). */
int mpx_sockaddr_text(const struct sockaddr *sa, char text[INET6_ADDRSTRLEN], uint16_t *port);
/* { family: 4|6, address, port } from a sockaddr_in/in6; null for any other family
 * (e.g. AF_UNSPEC when the kernel left the slot empty). */
bool mpx_sockaddr_to_object(napi_env env, const struct sockaddr *sa, napi_value *out);

#endif
