/* SPDX-License-Identifier: MIT
 *
 * MPTCP introspection: TCP_IS_MPTCP, MPTCP_INFO, MPTCP_FULL_INFO, and the older
 * MPTCP_TCPINFO + MPTCP_SUBFLOW_ADDRS pair. Values are returned raw, under the kernel's
 * field names without their prefix; units and meaning are added in src/mptcp/info.ts.
 *
 * How the kernel says "this is not (or no longer) MPTCP" (net/mptcp/sockopt.c):
 * a fallen-back MPTCP socket hands every getsockopt to its single TCP subflow, and TCP
 * rejects level SOL_MPTCP with EOPNOTSUPP, exactly as a plain TCP socket does. Older
 * kernels answer ENOPROTOOPT for levels they do not know. Both become `null` here.
 */
#include "mptcp-info.h"
#include "common.h"
#include "mptcp-uapi.h"

#include <arpa/inet.h>
#include <errno.h>
#include <linux/tcp.h> /* struct tcp_info (6.1 layout; the kernel truncates newer ones to it) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define SOL_TCP_LEVEL 6 /* IPPROTO_TCP; linux/tcp.h and netinet/in.h cannot both be included */

static bool is_not_mptcp_errno(int err)
{
	return err == EOPNOTSUPP || err == ENOPROTOOPT;
}

static bool get_fd_arg(napi_env env, napi_callback_info info, int32_t *fd)
{
	napi_value argv[1];
	return mpx_get_args(env, info, 1, argv) && mpx_arg_int32(env, argv[0], "fd", fd);
}

/* isMptcp(fd): boolean — getsockopt(SOL_TCP, TCP_IS_MPTCP) (Linux 5.16+). 1 on an MPTCP
 * socket; 0 on plain TCP and on an MPTCP socket that fell back (the request reaches the
 * TCP subflow, which answers 0). Kernels without the option fail with ENOPROTOOPT. */
napi_value mpx_js_is_mptcp(napi_env env, napi_callback_info info)
{
	int32_t fd;
	if (!get_fd_arg(env, info, &fd))
		return NULL;
	int val = 0;
	socklen_t len = sizeof(val);
	if (getsockopt(fd, SOL_TCP_LEVEL, TCP_IS_MPTCP, &val, &len) != 0)
		return mpx_throw_errno(env, errno, "getsockopt(TCP_IS_MPTCP)");
	napi_value out;
	NAPI_CALL(env, napi_get_boolean(env, val != 0, &out));
	return out;
}

/* Set obj[name] = src->field if the kernel's copy (len bytes) covers the field. */
#define SET_FIELD_NAMED(setter, type, src, field, name, len)                         \
	do {                                                                             \
		if (mpx_has_field(type, field, len) && !setter(env, obj, name, (src)->field)) \
			return false;                                                            \
	} while (0)
#define SET_FIELD(setter, type, src, field, len) SET_FIELD_NAMED(setter, type, src, field, #field, len)

/* Every field of struct mptcp_info that the returned length covers. Data sequence
 * numbers (RFC 8684 §3.3) are BigInt; counters are doubles (exact below 2^53). */
static bool mptcp_info_to_object(napi_env env, const struct mpx_mptcp_info *mi, size_t len, napi_value *out)
{
	napi_value obj;
	NAPI_CALL_BOOL(env, napi_create_object(env, &obj));
	SET_FIELD(mpx_set_u32, struct mpx_mptcp_info, mi, subflows, len);
	SET_FIELD(mpx_set_u32, struct mpx_mptcp_info, mi, add_addr_signal, len);
	SET_FIELD(mpx_set_u32, struct mpx_mptcp_info, mi, add_addr_accepted, len);
	SET_FIELD(mpx_set_u32, struct mpx_mptcp_info, mi, subflows_max, len);
	SET_FIELD(mpx_set_u32, struct mpx_mptcp_info, mi, add_addr_signal_max, len);
	SET_FIELD(mpx_set_u32, struct mpx_mptcp_info, mi, add_addr_accepted_max, len);
	SET_FIELD(mpx_set_u32, struct mpx_mptcp_info, mi, flags, len);
	SET_FIELD(mpx_set_u32, struct mpx_mptcp_info, mi, token, len);
	SET_FIELD(mpx_set_u64_bigint, struct mpx_mptcp_info, mi, write_seq, len);
	SET_FIELD(mpx_set_u64_bigint, struct mpx_mptcp_info, mi, snd_una, len);
	SET_FIELD(mpx_set_u64_bigint, struct mpx_mptcp_info, mi, rcv_nxt, len);
	SET_FIELD(mpx_set_u32, struct mpx_mptcp_info, mi, local_addr_used, len);
	SET_FIELD(mpx_set_u32, struct mpx_mptcp_info, mi, local_addr_max, len);
	SET_FIELD(mpx_set_u32, struct mpx_mptcp_info, mi, csum_enabled, len);
	SET_FIELD(mpx_set_u32, struct mpx_mptcp_info, mi, retransmits, len);
	SET_FIELD(mpx_set_u64, struct mpx_mptcp_info, mi, bytes_retrans, len);
	SET_FIELD(mpx_set_u64, struct mpx_mptcp_info, mi, bytes_sent, len);
	SET_FIELD(mpx_set_u64, struct mpx_mptcp_info, mi, bytes_received, len);
	SET_FIELD(mpx_set_u64, struct mpx_mptcp_info, mi, bytes_acked, len);
	SET_FIELD(mpx_set_u32, struct mpx_mptcp_info, mi, subflows_total, len);
	SET_FIELD(mpx_set_u32, struct mpx_mptcp_info, mi, endp_add_addr_max, len);
	SET_FIELD(mpx_set_u32, struct mpx_mptcp_info, mi, last_data_sent, len);
	SET_FIELD(mpx_set_u32, struct mpx_mptcp_info, mi, last_data_recv, len);
	SET_FIELD(mpx_set_u32, struct mpx_mptcp_info, mi, last_ack_recv, len);
	if (!mpx_set_u32(env, obj, "size", (uint32_t)len))
		return false;
	*out = obj;
	return true;
}

/* mptcpInfo(fd): object | null — getsockopt(SOL_MPTCP, MPTCP_INFO). The kernel copies
 * min(optlen, sizeof(struct mptcp_info)) and writes back that length, so `size` (and
 * the fields present) tell which kernel generation answered. */
napi_value mpx_js_mptcp_info(napi_env env, napi_callback_info info)
{
	int32_t fd;
	if (!get_fd_arg(env, info, &fd))
		return NULL;
	struct mpx_mptcp_info mi;
	memset(&mi, 0, sizeof(mi));
	socklen_t len = sizeof(mi);
	if (getsockopt(fd, SOL_MPTCP, MPX_MPTCP_INFO, &mi, &len) != 0) {
		int err = errno;
		if (is_not_mptcp_errno(err)) {
			napi_value null_value;
			NAPI_CALL(env, napi_get_null(env, &null_value));
			return null_value;
		}
		return mpx_throw_errno(env, err, "getsockopt(MPTCP_INFO)");
	}
	napi_value out;
	if (!mptcp_info_to_object(env, &mi, len, &out))
		return NULL;
	return out;
}

/* The tcp_info fields a subflow view needs; `len` is the per-element size the kernel
 * reports (min of ours and its own). Bit-fields (wscale) are skipped: no offsetof. */
static bool tcp_info_to_object(napi_env env, const struct tcp_info *ti, size_t len, napi_value *out)
{
	napi_value obj;
	NAPI_CALL_BOOL(env, napi_create_object(env, &obj));
#define TI32(f) SET_FIELD_NAMED(mpx_set_u32, struct tcp_info, ti, tcpi_##f, #f, len)
#define TI64(f) SET_FIELD_NAMED(mpx_set_u64, struct tcp_info, ti, tcpi_##f, #f, len)
	TI32(state); TI32(ca_state); TI32(retransmits); TI32(probes); TI32(backoff); TI32(options);
	TI32(rto); TI32(ato); TI32(snd_mss); TI32(rcv_mss);
	TI32(unacked); TI32(sacked); TI32(lost); TI32(retrans);
	TI32(last_data_sent); TI32(last_data_recv); TI32(last_ack_recv);
	TI32(pmtu); TI32(rcv_ssthresh); TI32(rtt); TI32(rttvar); TI32(snd_ssthresh); TI32(snd_cwnd);
	TI32(advmss); TI32(reordering); TI32(rcv_rtt); TI32(rcv_space); TI32(total_retrans);
	TI64(pacing_rate); TI64(max_pacing_rate); TI64(bytes_acked); TI64(bytes_received);
	TI32(segs_out); TI32(segs_in); TI32(notsent_bytes); TI32(min_rtt);
	TI32(data_segs_in); TI32(data_segs_out); TI64(delivery_rate);
	TI64(busy_time); TI64(rwnd_limited); TI64(sndbuf_limited);
	TI32(delivered); TI32(delivered_ce); TI64(bytes_sent); TI64(bytes_retrans);
	TI32(dsack_dups); TI32(reord_seen); TI32(rcv_ooopack); TI32(snd_wnd);
#undef TI32
#undef TI64
	*out = obj;
	return true;
}

static bool subflow_to_object(napi_env env, const uint32_t *id, const struct mpx_subflow_addrs *addrs,
			      const struct tcp_info *ti, size_t ti_len, napi_value *out)
{
	napi_value obj, local, remote, tcp;
	NAPI_CALL_BOOL(env, napi_create_object(env, &obj));
	if (id != NULL && !mpx_set_u32(env, obj, "id", *id))
		return false;
	if (addrs != NULL) {
		if (!mpx_sockaddr_to_object(env, &addrs->sa_local, &local) ||
		    !mpx_sockaddr_to_object(env, &addrs->sa_remote, &remote) ||
		    !mpx_set_value(env, obj, "local", local) || !mpx_set_value(env, obj, "remote", remote))
			return false;
	}
	if (ti != NULL) {
		if (!tcp_info_to_object(env, ti, ti_len, &tcp) || !mpx_set_value(env, obj, "tcp", tcp))
			return false;
	}
	*out = obj;
	return true;
}

enum fetch_result { FETCH_OK, FETCH_NOT_MPTCP, FETCH_UNSUPPORTED, FETCH_ERROR };

struct subflow_arrays {
	uint32_t count;          /* elements filled (≤ capacity) */
	uint32_t tcp_size;       /* bytes per tcp_info element, as the kernel used */
	bool have_ids;
	struct mpx_subflow_info *sfinfo;
	struct tcp_info *tcp;
	struct mpx_subflow_addrs *addrs; /* only on the legacy path */
};

/* MPTCP_FULL_INFO (Linux 6.5+). The kernel clamps size_*_user to its own sizes, fills
 * at most size_arrays_user elements and reports the real num_subflows, so when the
 * connection gained subflows between calls we simply ask again with room for them. */
static enum fetch_result fetch_full_info(int fd, struct subflow_arrays *out, int *err)
{
	uint32_t capacity = 8;
	for (int attempt = 0; attempt < 4; attempt++) {
		struct mpx_subflow_info *sf = calloc(capacity, sizeof(*sf));
		struct tcp_info *ti = calloc(capacity, sizeof(*ti));
		if (sf == NULL || ti == NULL) {
			free(sf);
			free(ti);
			*err = ENOMEM;
			return FETCH_ERROR;
		}
		struct mpx_full_info mfi;
		memset(&mfi, 0, sizeof(mfi));
		mfi.size_tcpinfo_user = sizeof(struct tcp_info);
		mfi.size_sfinfo_user = sizeof(struct mpx_subflow_info);
		mfi.size_arrays_user = capacity;
		mfi.subflow_info = (uint64_t)(uintptr_t)sf;
		mfi.tcp_info = (uint64_t)(uintptr_t)ti;
		socklen_t len = sizeof(mfi);
		if (getsockopt(fd, SOL_MPTCP, MPX_MPTCP_FULL_INFO, &mfi, &len) != 0) {
			*err = errno;
			free(sf);
			free(ti);
			/* EOPNOTSUPP here is ambiguous: fallen back, or a kernel without
			 * FULL_INFO. The caller tells them apart with MPTCP_TCPINFO. */
			return is_not_mptcp_errno(*err) ? FETCH_UNSUPPORTED : FETCH_ERROR;
		}
		if (mfi.num_subflows <= capacity) {
			out->count = mfi.num_subflows;
			out->tcp_size = mfi.size_tcpinfo_user;
			out->have_ids = mfi.size_sfinfo_user >= sizeof(uint32_t);
			/* Addresses are only filled when the element reaches past `id`. */
			if (mfi.size_sfinfo_user < sizeof(struct mpx_subflow_info)) {
				free(sf);
				free(ti);
				*err = EPROTO;
				return FETCH_ERROR;
			}
			out->sfinfo = sf;
			out->tcp = ti;
			return FETCH_OK;
		}
		capacity = mfi.num_subflows + 4;
		free(sf);
		free(ti);
	}
	*err = EAGAIN;
	return FETCH_ERROR;
}

/* MPTCP_TCPINFO / MPTCP_SUBFLOW_ADDRS (Linux 5.16+): a struct mptcp_subflow_data header
 * followed in the same buffer by num elements of size_user bytes. `elem` is our element
 * size; on return *count is how many the kernel wrote and *elem_used its element size. */
static int fetch_subflow_data(int fd, int optname, size_t elem, uint32_t capacity, void **data,
			      uint32_t *count, uint32_t *total, uint32_t *elem_used)
{
	size_t header = sizeof(struct mpx_subflow_data);
	size_t size = header + (size_t)capacity * elem;
	char *buf = calloc(1, size);
	if (buf == NULL)
		return ENOMEM;
	struct mpx_subflow_data *sfd = (struct mpx_subflow_data *)buf;
	sfd->size_subflow_data = (uint32_t)header;
	sfd->size_user = (uint32_t)elem;
	socklen_t len = (socklen_t)size;
	if (getsockopt(fd, SOL_MPTCP, optname, buf, &len) != 0) {
		int e = errno;
		free(buf);
		return e;
	}
	*total = sfd->num_subflows;
	*elem_used = sfd->size_user;
	*count = 0;
	if (sfd->size_user > 0 && len > header)
		*count = (uint32_t)((len - header) / sfd->size_user);
	/* Repack densely at our element size (the kernel may use a smaller one). */
	char *dense = calloc(capacity ? capacity : 1, elem);
	if (dense == NULL) {
		free(buf);
		return ENOMEM;
	}
	for (uint32_t i = 0; i < *count && i < capacity; i++)
		memcpy(dense + i * elem, buf + header + (size_t)i * sfd->size_user, sfd->size_user);
	free(buf);
	*data = dense;
	return 0;
}

static enum fetch_result fetch_legacy(int fd, struct subflow_arrays *out, int *err, const char **syscall)
{
	uint32_t capacity = 8;
	for (int attempt = 0; attempt < 4; attempt++) {
		void *ti = NULL, *ad = NULL;
		uint32_t ti_count = 0, ti_total = 0, ti_size = 0, ad_count = 0, ad_total = 0, ad_size = 0;
		*syscall = "getsockopt(MPTCP_TCPINFO)";
		int e = fetch_subflow_data(fd, MPX_MPTCP_TCPINFO, sizeof(struct tcp_info), capacity, &ti, &ti_count,
					   &ti_total, &ti_size);
		if (e != 0) {
			*err = e;
			return is_not_mptcp_errno(e) ? FETCH_NOT_MPTCP : FETCH_ERROR;
		}
		*syscall = "getsockopt(MPTCP_SUBFLOW_ADDRS)";
		e = fetch_subflow_data(fd, MPX_MPTCP_SUBFLOW_ADDRS, sizeof(struct mpx_subflow_addrs), capacity, &ad,
				       &ad_count, &ad_total, &ad_size);
		if (e != 0) {
			free(ti);
			*err = e;
			return is_not_mptcp_errno(e) ? FETCH_NOT_MPTCP : FETCH_ERROR;
		}
		if (ti_total <= capacity && ad_total <= capacity && ti_total == ad_total &&
		    ad_size >= sizeof(struct mpx_subflow_addrs)) {
			/* Two calls, so the two lists can disagree if a subflow came or went
			 * in between; the equal totals above make that unlikely, and pairing
			 * is by position, as the kernel walks the same list both times. */
			out->count = ti_count < ad_count ? ti_count : ad_count;
			out->tcp_size = ti_size;
			out->have_ids = false;
			out->tcp = ti;
			out->addrs = ad;
			return FETCH_OK;
		}
		free(ti);
		free(ad);
		uint32_t most = ti_total > ad_total ? ti_total : ad_total;
		capacity = (most > capacity ? most : capacity) + 4;
	}
	*err = EAGAIN;
	return FETCH_ERROR;
}

/* subflows(fd): Array<{ id?, local, remote, tcp }> | null
 * Tries MPTCP_FULL_INFO, then the 5.16 pair. null = not MPTCP (plain TCP or fallen back). */
napi_value mpx_js_subflows(napi_env env, napi_callback_info info)
{
	int32_t fd;
	if (!get_fd_arg(env, info, &fd))
		return NULL;
	struct subflow_arrays arr;
	memset(&arr, 0, sizeof(arr));
	int err = 0;
	const char *syscall = "getsockopt(MPTCP_FULL_INFO)";
	enum fetch_result r = fetch_full_info(fd, &arr, &err);
	if (r == FETCH_UNSUPPORTED)
		r = fetch_legacy(fd, &arr, &err, &syscall);
	if (r == FETCH_NOT_MPTCP || r == FETCH_UNSUPPORTED) {
		napi_value null_value;
		NAPI_CALL(env, napi_get_null(env, &null_value));
		return null_value;
	}
	if (r == FETCH_ERROR)
		return mpx_throw_errno(env, err, syscall);

	napi_value list = NULL;
	bool ok = napi_create_array_with_length(env, arr.count, &list) == napi_ok;
	for (uint32_t i = 0; ok && i < arr.count; i++) {
		napi_value item;
		const struct mpx_subflow_addrs *addrs = arr.sfinfo ? &arr.sfinfo[i].addrs : &arr.addrs[i];
		const uint32_t *id = arr.have_ids ? &arr.sfinfo[i].id : NULL;
		ok = subflow_to_object(env, id, addrs, &arr.tcp[i], arr.tcp_size, &item) &&
		     napi_set_element(env, list, i, item) == napi_ok;
	}
	free(arr.sfinfo);
	free(arr.tcp);
	free(arr.addrs);
	if (!ok) {
		mpx_throw_napi_failure(env, napi_generic_failure, "building the subflow list");
		return NULL;
	}
	return list;
}

/* ---- the narrow reads: subflow count and "local → remote" strings ----
 *
 * The views above build one JS object per struct field (~50 napi_set_named_property per
 * subflow), which costs far more than the getsockopt. Accounting needs only how many
 * subflows there were and their addresses, so these build the strings in C and hand JS
 * one number, or one object with two properties. */

static bool remote_is_live(const struct sockaddr *sa)
{
	/* TS keeps subflows whose remote is non-null with a non-zero port. */
	if (sa->sa_family == AF_INET)
		return ((const struct sockaddr_in *)sa)->sin_port != 0;
	if (sa->sa_family == AF_INET6)
		return ((const struct sockaddr_in6 *)sa)->sin6_port != 0;
	return false;
}

enum mpx_summary_result mpx_subflow_summary(int fd, bool want_paths, struct mpx_subflow_summary *out, int *err,
					    const char **syscall)
{
	out->count = 0;
	out->npaths = 0;
	struct mpx_mptcp_info mi;
	memset(&mi, 0, sizeof(mi));
	socklen_t len = sizeof(mi);
	if (getsockopt(fd, SOL_MPTCP, MPX_MPTCP_INFO, &mi, &len) != 0) {
		*err = errno;
		*syscall = "getsockopt(MPTCP_INFO)";
		return is_not_mptcp_errno(*err) ? MPX_SUMMARY_NOT_MPTCP : MPX_SUMMARY_ERROR;
	}
	if (mpx_has_field(struct mpx_mptcp_info, flags, len) && (mi.flags & MPX_MPTCP_INFO_FLAG_FALLBACK) != 0)
		return MPX_SUMMARY_NOT_MPTCP;
	/* mptcpi_subflows counts only the extra subflows; subflows_total (6.10+) all of them. */
	out->count = mpx_has_field(struct mpx_mptcp_info, subflows_total, len) ? mi.subflows_total
									      : (uint32_t)mi.subflows + 1;
	if (!want_paths)
		return MPX_SUMMARY_OK;

	/* MPTCP_SUBFLOW_ADDRS (5.16+): the same addresses MPTCP_FULL_INFO reports
	 * (mptcp_get_sub_addrs), without computing a tcp_info per subflow. */
	struct {
		struct mpx_subflow_data hdr;
		struct mpx_subflow_addrs addrs[MPX_SUMMARY_MAX_PATHS];
	} buf;
	memset(&buf.hdr, 0, sizeof(buf.hdr));
	buf.hdr.size_subflow_data = sizeof(buf.hdr);
	buf.hdr.size_user = sizeof(buf.addrs[0]);
	len = sizeof(buf);
	if (getsockopt(fd, SOL_MPTCP, MPX_MPTCP_SUBFLOW_ADDRS, &buf, &len) != 0) {
		*err = errno;
		*syscall = "getsockopt(MPTCP_SUBFLOW_ADDRS)";
		/* Fell back between the two calls: same answer as a fallen-back socket. */
		return is_not_mptcp_errno(*err) ? MPX_SUMMARY_NOT_MPTCP : MPX_SUMMARY_ERROR;
	}
	uint32_t elem = buf.hdr.size_user;
	if (elem < sizeof(struct mpx_subflow_addrs)) {
		/* A kernel whose element stops short of the remote address: count only. */
		return MPX_SUMMARY_OK;
	}
	uint32_t n = len > sizeof(buf.hdr) ? (uint32_t)((len - sizeof(buf.hdr)) / elem) : 0;
	if (n > MPX_SUMMARY_MAX_PATHS)
		n = MPX_SUMMARY_MAX_PATHS;
	const char *base = (const char *)buf.addrs;
	for (uint32_t i = 0; i < n; i++) {
		const struct mpx_subflow_addrs *a = (const struct mpx_subflow_addrs *)(base + (size_t)i * elem);
		if (!remote_is_live(&a->sa_remote))
			continue;
		char *p = out->paths[out->npaths++];
		/* "local -> remote", each as src/mptcp/info.ts formatEndpoint() and subflowAddresses(). */
		size_t used = mpx_endpoint_text(&a->sa_local, p, MPX_PATH_LEN);
		memcpy(p + used, " -> ", 4);
		used += 4;
		mpx_endpoint_text(&a->sa_remote, p + used, MPX_PATH_LEN - used);
	}
	if (out->count < out->npaths)
		out->count = out->npaths;
	return MPX_SUMMARY_OK;
}

bool mpx_summary_to_object(napi_env env, const struct mpx_subflow_summary *s, napi_value *out)
{
	napi_value obj, count, paths;
	NAPI_CALL_BOOL(env, napi_create_object(env, &obj));
	NAPI_CALL_BOOL(env, napi_create_uint32(env, s->count, &count));
	NAPI_CALL_BOOL(env, napi_create_array_with_length(env, s->npaths, &paths));
	for (uint32_t i = 0; i < s->npaths; i++) {
		napi_value str;
		NAPI_CALL_BOOL(env, napi_create_string_utf8(env, s->paths[i], NAPI_AUTO_LENGTH, &str));
		NAPI_CALL_BOOL(env, napi_set_element(env, paths, i, str));
	}
	napi_property_descriptor props[] = {
		{ "count", NULL, NULL, NULL, NULL, count, napi_writable | napi_enumerable | napi_configurable, NULL },
		{ "paths", NULL, NULL, NULL, NULL, paths, napi_writable | napi_enumerable | napi_configurable, NULL },
	};
	NAPI_CALL_BOOL(env, napi_define_properties(env, obj, 2, props));
	*out = obj;
	return true;
}

/*
 * subflowSummary(fd) → {count, paths} and subflowCount(fd) → count share one body: both are
 * null for a socket that is not (or no longer) MPTCP; want_paths says which answer is built.
 */
static napi_value subflow_answer(napi_env env, napi_callback_info info, bool want_paths)
{
	int32_t fd;
	if (!get_fd_arg(env, info, &fd))
		return NULL;
	struct mpx_subflow_summary s;
	int err = 0;
	const char *syscall = "getsockopt(MPTCP_INFO)";
	/* With want_paths false only count is filled; the paths array stays uninitialized. */
	enum mpx_summary_result r = mpx_subflow_summary(fd, want_paths, &s, &err, &syscall);
	napi_value out;
	if (r == MPX_SUMMARY_ERROR)
		return mpx_throw_errno(env, err, syscall);
	if (r == MPX_SUMMARY_NOT_MPTCP) {
		NAPI_CALL(env, napi_get_null(env, &out));
		return out;
	}
	if (!want_paths) {
		NAPI_CALL(env, napi_create_uint32(env, s.count, &out));
		return out;
	}
	if (!mpx_summary_to_object(env, &s, &out))
		return NULL;
	return out;
}

napi_value mpx_js_subflow_summary(napi_env env, napi_callback_info info)
{
	return subflow_answer(env, info, true);
}

napi_value mpx_js_subflow_count(napi_env env, napi_callback_info info)
{
	return subflow_answer(env, info, false);
}
