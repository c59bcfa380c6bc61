/* SPDX-License-Identifier: MIT */
#ifndef MPX_MPTCP_INFO_H
#define MPX_MPTCP_INFO_H

#include <node_api.h>
#include <stdbool.h>
#include <stdint.h>

/* Subflows the narrow summary reads addresses for: the in-kernel path manager allows at
 * most 8 extra subflows (MPTCP_PM_ADDR_MAX), so 16 holds every connection it makes. A
 * connection with more still gets its full count, and the first 16 paths. */
#define MPX_SUMMARY_MAX_PATHS 16
/* "[v6]:port → [v6]:port": 2 × (45 + 2 + 6) + 5 bytes for " → " and NUL, rounded up. */
#define MPX_PATH_LEN 128

/* A connection's subflows at one moment: count (including the initial subflow) and one
 * "local → remote" string per live subflow, formatted as src/mptcp/info.ts
 * subflowAddresses() formats them. Pure C (no N-API): the relay engine threads use it. */
struct mpx_subflow_summary {
	uint32_t count;
	uint32_t npaths;
	char paths[MPX_SUMMARY_MAX_PATHS][MPX_PATH_LEN];
};

enum mpx_summary_result { MPX_SUMMARY_OK = 0, MPX_SUMMARY_NOT_MPTCP = 1, MPX_SUMMARY_ERROR = -1 };

/* MPTCP_INFO (count, fallback flag) then, when want_paths, MPTCP_SUBFLOW_ADDRS. On
 * MPX_SUMMARY_ERROR *err and *syscall say what failed; NOT_MPTCP = plain TCP or fell back. */
enum mpx_summary_result mpx_subflow_summary(int fd, bool want_paths, struct mpx_subflow_summary *out, int *err,
					    const char **syscall);

napi_value mpx_js_is_mptcp(napi_env env, napi_callback_info info);
napi_value mpx_js_mptcp_info(napi_env env, napi_callback_info info);
napi_value mpx_js_subflows(napi_env env, napi_callback_info info);
/* subflowSummary(fd): { count, paths } | null — no tcp_info, no per-field objects. */
napi_value mpx_js_subflow_summary(napi_env env, napi_callback_info info);
/* subflowCount(fd): number | null — MPTCP_INFO only. */
napi_value mpx_js_subflow_count(napi_env env, napi_callback_info info);
/* Builds { count, paths } from a summary (used by relay.c for its close summary). */
bool mpx_summary_to_object(napi_env env, const struct mpx_subflow_summary *s, napi_value *out);

#endif
