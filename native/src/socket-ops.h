/* SPDX-License-Identifier: MIT */
#ifndef MPX_SOCKET_OPS_H
#define MPX_SOCKET_OPS_H

#include <node_api.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

/* An IPv4 or IPv6 literal and port → sockaddr; false if `text` is not one. */
bool mpx_sockaddr_from_literal(const char *text, uint16_t port, struct sockaddr_storage *ss, socklen_t *len);
/* An IP literal and port → sockaddr (TypeError / RangeError naming the argument otherwise). */
bool mpx_parse_address(napi_env env, napi_value js_addr, int32_t port, struct sockaddr_storage *ss, socklen_t *len);

napi_value mpx_js_socket(napi_env env, napi_callback_info info);
napi_value mpx_js_set_int_option(napi_env env, napi_callback_info info);
napi_value mpx_js_set_string_option(napi_env env, napi_callback_info info);
napi_value mpx_js_bind(napi_env env, napi_callback_info info);
/* connect(fd, address, port): true if connected at once, false while in progress (EINPROGRESS). */
napi_value mpx_js_connect(napi_env env, napi_callback_info info);
napi_value mpx_js_listen(napi_env env, napi_callback_info info);
napi_value mpx_js_close(napi_env env, napi_callback_info info);
napi_value mpx_js_dup(napi_env env, napi_callback_info info);
/* peek(fd, buffer): bytes received and not yet read, copied without consuming them; 0 if none. */
napi_value mpx_js_peek(napi_env env, napi_callback_info info);
napi_value mpx_js_local_address(napi_env env, napi_callback_info info);
napi_value mpx_js_remote_address(napi_env env, napi_callback_info info);
napi_value mpx_js_original_destination(napi_env env, napi_callback_info info);
/* Fills `exports.constants` with the option numbers the TS layer passes back in. */
napi_value mpx_socket_constants(napi_env env);

#endif
