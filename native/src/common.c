/* SPDX-License-Identifier: MIT */
#include "common.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

void mpx_throw_napi_failure(napi_env env, napi_status status, const char *what)
{
	bool pending = false;
	if (napi_is_exception_pending(env, &pending) == napi_ok && pending)
		return;
	const napi_extended_error_info *info = NULL;
	const char *detail = NULL;
	if (napi_get_last_error_info(env, &info) == napi_ok && info != NULL)
		detail = info->error_message;
	char msg[512];
	snprintf(msg, sizeof(msg), "mptcp_native: N-API call failed (status %d%s%s): %s", (int)status,
		 detail ? ", " : "", detail ? detail : "", what);
	napi_throw_error(env, "ERR_MPTCP_NATIVE_NAPI", msg);
}

/* glibc ≥ 2.32 names errnos; anything it does not know becomes "E<number>", never NULL. */
static const char *errno_name(int err, char *buf, size_t bufsize)
{
	const char *name = strerrorname_np(err);
	if (name != NULL)
		return name;
	snprintf(buf, bufsize, "E%d", err);
	return buf;
}

napi_value mpx_throw_errno(napi_env env, int err, const char *syscall)
{
	char namebuf[32];
	const char *code = errno_name(err, namebuf, sizeof(namebuf));
	char msg[256];
	snprintf(msg, sizeof(msg), "%s %s: %s", syscall, code, strerror(err));

	napi_value js_code, js_msg, error, js_errno, js_syscall;
	NAPI_CALL(env, napi_create_string_utf8(env, code, NAPI_AUTO_LENGTH, &js_code));
	NAPI_CALL(env, napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &js_msg));
	NAPI_CALL(env, napi_create_error(env, js_code, js_msg, &error));
	NAPI_CALL(env, napi_create_int32(env, -err, &js_errno));
	NAPI_CALL(env, napi_set_named_property(env, error, "errno", js_errno));
	NAPI_CALL(env, napi_create_string_utf8(env, syscall, NAPI_AUTO_LENGTH, &js_syscall));
	NAPI_CALL(env, napi_set_named_property(env, error, "syscall", js_syscall));
	NAPI_CALL(env, napi_throw(env, error));
	return NULL;
}

static bool throw_type_error(napi_env env, const char *name, const char *expected)
{
	char msg[160];
	snprintf(msg, sizeof(msg), "The \"%s\" argument must be %s", name, expected);
	napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", msg);
	return false;
}

bool mpx_get_args(napi_env env, napi_callback_info info, size_t want, napi_value *argv)
{
	size_t argc = want;
	NAPI_CALL_BOOL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
	if (argc < want) {
		char msg[96];
		snprintf(msg, sizeof(msg), "expected %zu arguments, got %zu", want, argc);
		napi_throw_type_error(env, "ERR_MISSING_ARGS", msg);
		return false;
	}
	return true;
}

bool mpx_arg_int32(napi_env env, napi_value v, const char *name, int32_t *out)
{
	napi_valuetype t;
	NAPI_CALL_BOOL(env, napi_typeof(env, v, &t));
	if (t != napi_number)
		return throw_type_error(env, name, "of type number");
	NAPI_CALL_BOOL(env, napi_get_value_int32(env, v, out));
	return true;
}

bool mpx_arg_bool(napi_env env, napi_value v, const char *name, bool *out)
{
	napi_valuetype t;
	NAPI_CALL_BOOL(env, napi_typeof(env, v, &t));
	if (t != napi_boolean)
		return throw_type_error(env, name, "of type boolean");
	NAPI_CALL_BOOL(env, napi_get_value_bool(env, v, out));
	return true;
}

bool mpx_arg_buffer(napi_env env, napi_value v, const char *message, const uint8_t **data, size_t *len)
{
	bool is_buffer = false;
	NAPI_CALL_BOOL(env, napi_is_buffer(env, v, &is_buffer));
	if (!is_buffer) {
		napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", message);
		return false;
	}
	void *d = NULL;
	NAPI_CALL_BOOL(env, napi_get_buffer_info(env, v, &d, len));
	*data = d;
	return true;
}

bool mpx_arg_string(napi_env env, napi_value v, const char *name, char *buf, size_t bufsize)
{
	napi_valuetype t;
	NAPI_CALL_BOOL(env, napi_typeof(env, v, &t));
	if (t != napi_string)
		return throw_type_error(env, name, "of type string");
	size_t len = 0;
	NAPI_CALL_BOOL(env, napi_get_value_string_utf8(env, v, NULL, 0, &len));
	if (len + 1 > bufsize)
		return throw_type_error(env, name, "a shorter string");
	NAPI_CALL_BOOL(env, napi_get_value_string_utf8(env, v, buf, bufsize, &len));
	return true;
}

bool mpx_set_value(napi_env env, napi_value obj, const char *key, napi_value v)
{
	NAPI_CALL_BOOL(env, napi_set_named_property(env, obj, key, v));
	return true;
}

bool mpx_set_u32(napi_env env, napi_value obj, const char *key, uint32_t v)
{
	napi_value js;
	NAPI_CALL_BOOL(env, napi_create_uint32(env, v, &js));
	return mpx_set_value(env, obj, key, js);
}

bool mpx_set_i32(napi_env env, napi_value obj, const char *key, int32_t v)
{
	napi_value js;
	NAPI_CALL_BOOL(env, napi_create_int32(env, v, &js));
	return mpx_set_value(env, obj, key, js);
}

bool mpx_set_u64(napi_env env, napi_value obj, const char *key, uint64_t v)
{
	napi_value js;
	NAPI_CALL_BOOL(env, napi_create_double(env, (double)v, &js));
	return mpx_set_value(env, obj, key, js);
}

bool mpx_set_u64_bigint(napi_env env, napi_value obj, const char *key, uint64_t v)
{
	napi_value js;
	NAPI_CALL_BOOL(env, napi_create_bigint_uint64(env, v, &js));
	return mpx_set_value(env, obj, key, js);
}

bool mpx_set_string(napi_env env, napi_value obj, const char *key, const char *v)
{
	napi_value js;
	NAPI_CALL_BOOL(env, napi_create_string_utf8(env, v, NAPI_AUTO_LENGTH, &js));
	return mpx_set_value(env, obj, key, js);
}

/* v's decimal digits (0–65535) at p; returns the end. */
static char *put_u16(char *p, unsigned v)
{
	char t[5];
	int n = 0;
	do {
		t[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v != 0);
	while (n > 0)
		*p++ = t[--n];
	return p;
}

size_t mpx_ipv4_text(const struct in_addr *a, char *out)
{
	const uint8_t *b = (const uint8_t *)&a->s_addr; /* network order: the first octet first */
	char *p = out;
	for (int i = 0; i < 4; i++) {
		if (i > 0)
			*p++ = '.';
		p = put_u16(p, b[i]);
	}
	*p = '\0';
	return (size_t)(p - out);
}

size_t mpx_endpoint_text(const struct sockaddr *sa, char *buf, size_t size)
{
	char *p = buf;
	unsigned port;
	if (size < 56) {
		if (size > 0)
			buf[0] = '\0';
		return 0;
	}
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;
		p += mpx_ipv4_text(&sin->sin_addr, p);
		port = ntohs(sin->sin_port);
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)sa;
		port = ntohs(sin6->sin6_port);
		if (IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr)) {
			struct in_addr v4;
			memcpy(&v4, &sin6->sin6_addr.s6_addr[12], 4);
			p += mpx_ipv4_text(&v4, p);
		} else {
			*p++ = '[';
			if (inet_ntop(AF_INET6, &sin6->sin6_addr, p, INET6_ADDRSTRLEN) == NULL) {
				memcpy(buf, "?", 2);
				return 1;
			}
			p += strlen(p);
			*p++ = ']';
		}
	} else {
		memcpy(buf, "?", 2);
		return 1;
	}
	*p++ = ':';
	p = put_u16(p, port);
	*p = '\0';
	return (size_t)(p - buf);
}

int mpx_sockaddr_text(const struct sockaddr *sa, char text[INET6_ADDRSTRLEN], uint16_t *port)
{
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;
		*port = ntohs(sin->sin_port);
		mpx_ipv4_text(&sin->sin_addr, text);
		return 4;
	}
	if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)sa;
		*port = ntohs(sin6->sin6_port);
		return inet_ntop(AF_INET6, &sin6->sin6_addr, text, INET6_ADDRSTRLEN) == NULL ? -1 : 6;
	}
	return 0;
}

bool mpx_sockaddr_to_object(napi_env env, const struct sockaddr *sa, napi_value *out)
{
	char text[INET6_ADDRSTRLEN];
	uint16_t port = 0;
	int32_t family = mpx_sockaddr_text(sa, text, &port);
	if (family < 0) {
		mpx_throw_errno(env, errno, "inet_ntop");
		return false;
	}
	if (family == 0) {
		NAPI_CALL_BOOL(env, napi_get_null(env, out));
		return true;
	}

	NAPI_CALL_BOOL(env, napi_create_object(env, out));
	return mpx_set_i32(env, *out, "family", family) &&
	       mpx_set_string(env, *out, "address", text) &&
	       mpx_set_u32(env, *out, "port", port);
}
