/* SPDX-License-Identifier: MIT
 *
 * MPTCP socket-option ABI, restated from the kernel's include/uapi/linux/mptcp.h
 * (current mainline). The system header here is from Linux 6.1: it has no MPTCP_FULL_INFO
 * and an older, shorter struct mptcp_info, so we do not include it at all.
 *
 * Every structure below is extensible: the kernel copies min(user size, kernel size)
 * bytes and reports the size it used, so a newer kernel may fill less or more than we
 * ask and an older one fills only the fields it knows. Readers must check the returned
 * length before trusting a field (see mpx_has_field()).
 */
#ifndef MPX_MPTCP_UAPI_H
#define MPX_MPTCP_UAPI_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <netinet/in.h>

#ifndef SOL_MPTCP
#define SOL_MPTCP 284
#endif
#ifndef IPPROTO_MPTCP
#define IPPROTO_MPTCP 262
#endif
/* include/uapi/linux/tcp.h: getsockopt(SOL_TCP) → 1 on an MPTCP socket that has not
 * fallen back. A fallen-back MPTCP socket passes every getsockopt to its one TCP subflow
 * (net/mptcp/sockopt.c mptcp_getsockopt → __mptcp_tcp_fallback → tcp_getsockopt), and
 * plain TCP answers 0, so 0 means "plain TCP now", whatever socket() was asked for. */
#ifndef TCP_IS_MPTCP
#define TCP_IS_MPTCP 43
#endif

#define MPX_MPTCP_INFO 1
#define MPX_MPTCP_TCPINFO 2
#define MPX_MPTCP_SUBFLOW_ADDRS 3
#define MPX_MPTCP_FULL_INFO 4

#define MPX_MPTCP_INFO_FLAG_FALLBACK (1U << 0)
#define MPX_MPTCP_INFO_FLAG_REMOTE_KEY_RECEIVED (1U << 1)

/* Netfilter: linux/netfilter_ipv4.h SO_ORIGINAL_DST and linux/netfilter_ipv6/ip6_tables.h
 * IP6T_SO_ORIGINAL_DST, both 80; not included to keep the kernel headers out. */
#define MPX_SO_ORIGINAL_DST 80
#define MPX_IP6T_SO_ORIGINAL_DST 80

#ifndef IP_TRANSPARENT
#define IP_TRANSPARENT 19
#endif
#ifndef IPV6_TRANSPARENT
#define IPV6_TRANSPARENT 75
#endif

/* struct mptcp_info as in current mainline (uapi comments keep the old field names as
 * #define aliases; the layout never changes, it only grows). */
struct mpx_mptcp_info {
	uint8_t subflows;
	uint8_t add_addr_signal;
	uint8_t add_addr_accepted;
	uint8_t subflows_max;
	uint8_t add_addr_signal_max;
	uint8_t add_addr_accepted_max;
	/* 16-bit hole that can no longer be filled */
	uint32_t flags;
	uint32_t token;
	uint64_t write_seq;
	uint64_t snd_una;
	uint64_t rcv_nxt;
	uint8_t local_addr_used;
	uint8_t local_addr_max;
	uint8_t csum_enabled;
	/* 8-bit hole that can no longer be filled */
	/* Everything below was appended after Linux 6.1; present only if the
	 * returned optlen covers it. */
	uint32_t retransmits;
	uint64_t bytes_retrans;
	uint64_t bytes_sent;
	uint64_t bytes_received;
	uint64_t bytes_acked;
	uint8_t subflows_total;
	uint8_t endp_add_addr_max;  /* was reserved[0] in earlier headers */
	uint8_t reserved[2];
	uint32_t last_data_sent;    /* ms ago */
	uint32_t last_data_recv;    /* ms ago */
	uint32_t last_ack_recv;     /* ms ago */
};

/* Header of MPTCP_TCPINFO / MPTCP_SUBFLOW_ADDRS (Linux 5.16+): userspace sets
 * size_subflow_data and size_user, zeroes the rest; the kernel writes back
 * num_subflows (real count, even if the buffer held fewer), size_kernel, and
 * size_user = min(size_user, size_kernel), then that many bytes per element. */
struct mpx_subflow_data {
	uint32_t size_subflow_data;
	uint32_t num_subflows;
	uint32_t size_kernel;
	uint32_t size_user;
} __attribute__((aligned(8)));

struct mpx_subflow_addrs {
	union {
		sa_family_t sa_family;
		struct sockaddr sa_local;
		struct sockaddr_in sin_local;
		struct sockaddr_in6 sin6_local;
		struct sockaddr_storage ss_local;
	};
	union {
		struct sockaddr sa_remote;
		struct sockaddr_in sin_remote;
		struct sockaddr_in6 sin6_remote;
		struct sockaddr_storage ss_remote;
	};
};

/* MPTCP_FULL_INFO (Linux 6.5+): one call returns mptcp_info plus, per subflow, its id,
 * addresses and tcp_info, into two user arrays of size_arrays_user elements. */
struct mpx_subflow_info {
	uint32_t id;
	struct mpx_subflow_addrs addrs;
};

struct mpx_full_info {
	uint32_t size_tcpinfo_kernel; /* must be 0, set by kernel */
	uint32_t size_tcpinfo_user;
	uint32_t size_sfinfo_kernel;  /* must be 0, set by kernel */
	uint32_t size_sfinfo_user;
	uint32_t num_subflows;        /* must be 0, set by kernel (real subflow count) */
	uint32_t size_arrays_user;    /* elements in each user array */
	uint64_t subflow_info __attribute__((aligned(8)));
	uint64_t tcp_info __attribute__((aligned(8)));
	struct mpx_mptcp_info mptcp_info;
};

/* The kernel copies the header, then min(len - header, sizeof(mptcp_info)) bytes of
 * mptcp_info (sockopt.c MIN_FULL_INFO_OPTLEN_SIZE == offsetof(mptcp_full_info, mptcp_info)). */
#define MPX_FULL_INFO_HEADER_SIZE offsetof(struct mpx_full_info, mptcp_info)

/* True when a struct copied with `len` bytes contains all of `field`. */
#define mpx_has_field(type, field, len) \
	((size_t)(len) >= offsetof(type, field) + sizeof(((type *)0)->field))

#endif
