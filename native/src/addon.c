/* SPDX-License-Identifier: MIT
 *
 * mptcp_native: the system calls Node's `net` cannot make (IPPROTO_MPTCP sockets and
 * the SOL_MPTCP getsockopts). Loaded and given meaning by src/mptcp/native.ts.
 */
#include <node_api.h>

#include "common.h"
#include "http-head-js.h"
#include "mptcp-info.h"
#include "admission.h"
#include "relay.h"
#include "engine-only.h"
#include "socket-ops.h"

static napi_value init(napi_env env, napi_value exports)
{
	napi_value constants = mpx_socket_constants(env);
	if (constants == NULL)
		return NULL;
	napi_property_descriptor props[] = {
		{ "socket", NULL, mpx_js_socket, NULL, NULL, NULL, napi_enumerable, NULL },
		{ "setIntOption", NULL, mpx_js_set_int_option, NULL, NULL, NULL, napi_enumerable, NULL },
		{ "setStringOption", NULL, mpx_js_set_string_option, NULL, NULL, NULL, napi_enumerable, NULL },
		{ "bind", NULL, mpx_js_bind, NULL, NULL, NULL, napi_enumerable, NULL },
		{ "connect", NULL, mpx_js_connect, NULL, NULL, NULL, napi_enumerable, NULL },
		{ "listen", NULL, mpx_js_listen, NULL, NULL, NULL, napi_enumerable, NULL },
		{ "close", NULL, mpx_js_close, NULL, NULL, NULL, napi_enumerable, NULL },
		{ "dup", NULL, mpx_js_dup, NULL, NULL, NULL, napi_enumerable, NULL },
		{ "peek", NULL, mpx_js_peek, NULL, NULL, NULL, napi_enumerable, NULL },
		{ "localAddress", NULL, mpx_js_local_address, NULL, NULL, NULL, napi_enumerable, NULL },
		{ "remoteAddress", NULL, mpx_js_remote_address, NULL, NULL, NULL, napi_enumerable, NULL },
		{ "originalDestination", NULL, mpx_js_original_destination, NULL, NULL, NULL, napi_enumerable, NULL },
		{ "isMptcp", NULL, mpx_js_is_mptcp, NULL, NULL, NULL, napi_enumerable, NULL },
		{ "mptcpInfo", NULL, mpx_js_mptcp_info, NULL, NULL, NULL, napi_enumerable, NULL },
		{ "subflows", NULL, mpx_js_subflows, NULL, NULL, NULL, napi_enumerable, NULL },
		{ "subflowSummary", NULL, mpx_js_subflow_summary, NULL, NULL, NULL, napi_enumerable, NULL },
		{ "subflowCount", NULL, mpx_js_subflow_count, NULL, NULL, NULL, napi_enumerable, NULL },
		{ "relayStart", NULL, mpx_js_relay_start, NULL, NULL, NULL, napi_enumerable, NULL },
		{ "pumpStart", NULL, mpx_js_pump_start, NULL, NULL, NULL, napi_enumerable, NULL },
		{ "relayStats", NULL, mpx_js_relay_stats, NULL, NULL, NULL, napi_enumerable, NULL },
		{ "relayAbort", NULL, mpx_js_relay_abort, NULL, NULL, NULL, napi_enumerable, NULL },
		{ "relayHeadDone", NULL, mpx_js_relay_head_done, NULL, NULL, NULL, napi_enumerable, NULL },
		{ "httpRewriteResponse", NULL, mpx_js_http_rewrite_response, NULL, NULL, NULL, napi_enumerable, NULL },
		{ "httpRewriteResponseEx", NULL, mpx_js_http_rewrite_response_ex, NULL, NULL, NULL, napi_enumerable, NULL },
		{ "httpRewriteRequest", NULL, mpx_js_http_rewrite_request, NULL, NULL, NULL, napi_enumerable, NULL },
		{ "httpChunkedScan", NULL, mpx_js_http_chunked_scan, NULL, NULL, NULL, napi_enumerable, NULL },
		{ "relaySetThreads", NULL, mpx_js_relay_set_threads, NULL, NULL, NULL, napi_enumerable, NULL },
		{ "relaySetQueueCap", NULL, mpx_js_relay_set_queue_cap, NULL, NULL, NULL, napi_enumerable, NULL },
		{ "relayEngineStop", NULL, mpx_js_relay_engine_stop, NULL, NULL, NULL, napi_enumerable, NULL },
		{ "acceptorStart", NULL, mpx_js_acceptor_start, NULL, NULL, NULL, napi_enumerable, NULL },
		{ "acceptorStop", NULL, mpx_js_acceptor_stop, NULL, NULL, NULL, napi_enumerable, NULL },
		{ "acceptorAdopt", NULL, mpx_js_acceptor_adopt, NULL, NULL, NULL, napi_enumerable, NULL },
		{ "acceptorAbortAll", NULL, mpx_js_acceptor_abort_all, NULL, NULL, NULL, napi_enumerable, NULL },
		{ "acceptorEngineOnlyLive", NULL, mpx_js_acceptor_engine_only_live, NULL, NULL, NULL, napi_enumerable, NULL },
		{ "connectionCounter", NULL, mpx_js_connection_counter, NULL, NULL, NULL, napi_enumerable, NULL },
		{ "clientAcquire", NULL, mpx_js_client_acquire, NULL, NULL, NULL, napi_enumerable, NULL },
		{ "clientRelease", NULL, mpx_js_client_release, NULL, NULL, NULL, napi_enumerable, NULL },
		{ "clientCount", NULL, mpx_js_client_count, NULL, NULL, NULL, napi_enumerable, NULL },
		{ "clientTracked", NULL, mpx_js_client_tracked, NULL, NULL, NULL, napi_enumerable, NULL },
		{ "constants", NULL, NULL, NULL, NULL, constants, napi_enumerable, NULL },
	};
	NAPI_CALL(env, napi_define_properties(env, exports, sizeof(props) / sizeof(props[0]), props));
	return exports;
}

NAPI_MODULE_INIT()
{
	return init(env, exports);
}
