/* SPDX-License-Identifier: MIT */
#ifndef MPX_MPTCP_INFO_H
#define MPX_MPTCP_INFO_H

#include <node_api.h>

napi_value mpx_js_is_mptcp(napi_env env, napi_callback_info info);
napi_value mpx_js_mptcp_info(napi_env env, napi_callback_info info);
napi_value mpx_js_subflows(napi_env env, napi_callback_info info);

#endif
