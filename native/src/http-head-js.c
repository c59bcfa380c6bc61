/* SPDX-License-Identifier: MIT
 *
 * JS entry points to http-head.c's rewrites and chunked.c's scanner on their own, outside any
 * relay: the engine calls the C functions directly, these exist so that tests can feed them the
 * same heads and bodies as the TS code (test/unit/http-head-native.test.ts,
 * test/unit/http-chunked-native.test.ts).
 */
#include "http-head-js.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "chunked.h"
#include "common.h"
#include "http-head.h"


static bool set_bool(napi_env env, napi_value obj, const char *key, bool v)
{
	napi_value b;
	NAPI_CALL_BOOL(env, napi_get_boolean(env, v, &b));
	return mpx_set_value(env, obj, key, b);
}

/* A Buffer of out[0..n) set as obj.out; false with an exception pending otherwise. */
static bool set_buffer(napi_env env, napi_value obj, const char *out, size_t n)
{
	napi_value b;
	NAPI_CALL_BOOL(env, napi_create_buffer_copy(env, n, out, NULL, &b));
	return mpx_set_value(env, obj, "out", b);
}

static bool set_latin1(napi_env env, napi_value obj, const char *key, const char *s, size_t len)
{
	napi_value v;
	NAPI_CALL_BOOL(env, napi_create_string_latin1(env, s, len, &v));
	return mpx_set_value(env, obj, key, v);
}

/* A wrapper's answer: obj (null when the rewrite declined), or NULL with an exception pending
 * when building it failed; `buf` (the rewrite's output) is freed either way. */
static napi_value answer(napi_env env, bool ok, napi_value obj, char *buf, const char *what)
{
	free(buf);
	if (!ok) {
		mpx_throw_napi_failure(env, napi_generic_failure, what);
		return NULL;
	}
	return obj;
}

/* The response wrappers' first two arguments: the head (a Buffer) and the Via pseudonym. */
static bool head_and_via(napi_env env, napi_value *argv, const uint8_t **data, size_t *len, char via[MPX_HTTP_VIA_MAX])
{
	return mpx_arg_buffer(env, argv[0], "The \"head\" argument must be a Buffer", data, len) && mpx_arg_string(env, argv[1], "via", via, MPX_HTTP_VIA_MAX);
}

napi_value mpx_js_http_rewrite_response(napi_env env, napi_callback_info info)
{
	napi_value argv[2], out;
	const uint8_t *data = NULL;
	size_t len = 0;
	char via[MPX_HTTP_VIA_MAX];
	if (!mpx_get_args(env, info, 2, argv) || !head_and_via(env, argv, &data, &len, via))
		return NULL;
	size_t cap = len + strlen(via) + 64;
	char *buf = malloc(cap);
	if (buf == NULL)
		return mpx_throw_errno(env, ENOMEM, "malloc");
	int status = 0;
	size_t n = mpx_http_rewrite_response((const char *)data, len, via, buf, cap, &status);
	bool ok = (n > 0 ? napi_create_buffer_copy(env, n, buf, NULL, &out) : napi_get_null(env, &out)) == napi_ok;
	return answer(env, ok, out, buf, "httpRewriteResponse");
}

napi_value mpx_js_http_rewrite_response_ex(napi_env env, napi_callback_info info)
{
	napi_value argv[4], obj;
	const uint8_t *data = NULL;
	size_t len = 0;
	char via[MPX_HTTP_VIA_MAX];
	bool client_keeps, head_request;
	if (!mpx_get_args(env, info, 4, argv) || !head_and_via(env, argv, &data, &len, via) || !mpx_arg_bool(env, argv[2], "clientKeeps", &client_keeps) ||
	    !mpx_arg_bool(env, argv[3], "headRequest", &head_request))
		return NULL;
	size_t cap = len + strlen(via) + 64; /* dropping fields only shrinks it */
	char *buf = malloc(cap);
	if (buf == NULL)
		return mpx_throw_errno(env, ENOMEM, "malloc");
	struct mpx_response_info ri;
	size_t n = mpx_http_rewrite_response_ex((const char *)data, len, via, client_keeps, head_request, buf, cap, &ri);
	bool ok;
	if (n == 0) {
		ok = napi_get_null(env, &obj) == napi_ok;
	} else {
		ok = napi_create_object(env, &obj) == napi_ok && set_buffer(env, obj, buf, n) && mpx_set_i32(env, obj, "status", ri.status) &&
		     mpx_set_i32(env, obj, "body", ri.body) && mpx_set_u64(env, obj, "length", ri.length) &&
		     set_bool(env, obj, "upstreamKeeps", ri.upstream_keeps) && set_bool(env, obj, "clientClosed", ri.client_closed);
	}
	return answer(env, ok, obj, buf, "httpRewriteResponseEx");
}

napi_value mpx_js_http_rewrite_request(napi_env env, napi_callback_info info)
{
	napi_value argv[5], obj;
	const uint8_t *data = NULL;
	size_t len = 0;
	char authority[MPX_HTTP_AUTHORITY_MAX], via[MPX_HTTP_VIA_MAX];
	int32_t max_head_bytes, max_fields;
	if (!mpx_get_args(env, info, 5, argv) || !mpx_arg_buffer(env, argv[0], "The \"head\" argument must be a Buffer", &data, &len) ||
	    !mpx_arg_string(env, argv[1], "authority", authority, sizeof(authority)) || !mpx_arg_string(env, argv[2], "via", via, sizeof(via)) ||
	    !mpx_arg_int32(env, argv[3], "maxHeadBytes", &max_head_bytes) || !mpx_arg_int32(env, argv[4], "maxFields", &max_fields))
		return NULL;
	if (max_head_bytes < 0 || max_fields < 0) {
		napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "maxHeadBytes and maxFields must not be negative");
		return NULL;
	}
	/* The Host line and a Via hop are the only additions. */
	size_t cap = len + strlen(authority) + strlen(via) + 64;
	char *buf = malloc(cap);
	if (buf == NULL)
		return mpx_throw_errno(env, ENOMEM, "malloc");
	struct mpx_request_info ri;
	size_t n = mpx_http_rewrite_request((const char *)data, len, authority, via, (size_t)max_head_bytes, (size_t)max_fields, buf, cap, &ri);
	bool ok;
	if (n == 0) {
		ok = napi_get_null(env, &obj) == napi_ok;
	} else {
		ok = napi_create_object(env, &obj) == napi_ok && set_buffer(env, obj, buf, n) && mpx_set_u64(env, obj, "headLen", ri.head_len) &&
		     set_bool(env, obj, "clientKeeps", ri.client_keeps) && set_latin1(env, obj, "method", (const char *)data, ri.method_len) &&
		     set_latin1(env, obj, "target", (const char *)data + ri.target_off, ri.target_len);
	}
	return answer(env, ok, obj, buf, "httpRewriteRequest");
}

napi_value mpx_js_http_chunked_scan(napi_env env, napi_callback_info info)
{
	napi_value argv[1], obj;
	bool is_array;
	uint32_t count;
	if (!mpx_get_args(env, info, 1, argv))
		return NULL;
	NAPI_CALL(env, napi_is_array(env, argv[0], &is_array));
	if (!is_array) {
		napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "The \"pieces\" argument must be an array of Buffers");
		return NULL;
	}
	NAPI_CALL(env, napi_get_array_length(env, argv[0], &count));
	struct mpx_chunked s;
	mpx_chunked_init(&s);
	uint64_t consumed = 0;
	bool ended = false, error = false;
	/* Like a reader of the body: piece after piece until it ends or fails; consumed counts the
	 * bytes of the pieces taken before a failure. */
	for (uint32_t i = 0; i < count && !ended && !error; i++) {
		napi_value piece;
		const uint8_t *data = NULL;
		size_t len = 0;
		NAPI_CALL(env, napi_get_element(env, argv[0], i, &piece));
		if (!mpx_arg_buffer(env, piece, "The \"pieces\" argument must be an array of Buffers", &data, &len))
			return NULL;
		size_t n = mpx_chunked_scan(&s, (const char *)data, len, &ended);
		if (n == (size_t)-1)
			error = true;
		else
			consumed += n;
	}
	NAPI_CALL(env, napi_create_object(env, &obj));
	if (!mpx_set_u64(env, obj, "consumed", consumed) || !set_bool(env, obj, "ended", ended) || !set_bool(env, obj, "error", error))
		return NULL;
	return obj;
}
