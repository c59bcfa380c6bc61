/* SPDX-License-Identifier: MIT
 *
 * JS entry points to the engine's HTTP head rewrites and chunked scanner (http-head-js.c), for
 * the tests that hold them to the TS code.
 */
#ifndef MPX_HTTP_HEAD_JS_H
#define MPX_HTTP_HEAD_JS_H

#include <node_api.h>

/* httpRewriteResponse(head, via) → Buffer | null (mpx_http_rewrite_response: a client closed
 * after the response). */
napi_value mpx_js_http_rewrite_response(napi_env env, napi_callback_info info);
/* httpRewriteResponseEx(head, via, clientKeeps, headRequest) → { out, status, body, length,
 * upstreamKeeps, clientClosed } | null (mpx_http_rewrite_response_ex). */
napi_value mpx_js_http_rewrite_response_ex(napi_env env, napi_callback_info info);
/* httpRewriteRequest(head, authority, via, maxHeadBytes, maxFields) → { out, headLen,
 * clientKeeps, method, target } | null (mpx_http_rewrite_request). */
napi_value mpx_js_http_rewrite_request(napi_env env, napi_callback_info info);
/* httpChunkedScan(pieces) → { consumed, ended, error } (mpx_chunked_scan over the pieces in order). */
napi_value mpx_js_http_chunked_scan(napi_env env, napi_callback_info info);

#endif
