/* SPDX-License-Identifier: MIT
 *
 * Why the engine caps the socket buffers of a bulk flow: when the relay or the client is slower
 * than the origin, the bytes wait inside the proxy, in the upstream socket's receive queue and
 * the client socket's send queue, and Linux's buffer autotuning lets both grow to megabytes
 * (measured on the testbed, unshaped veth, 512 MiB through the forward: upstream Recv-Q up to
 * 12.9 MB with rcvbuf autotuned to 13.7 MB, the client MPTCP socket's send queue up to 6.4 MB).
 * That queue is the proxy's bulk conversion delay — 10–30 ms at 6 Gbit/s — and buys nothing
 * once it holds more than the path needs, because the origin refills a smaller buffer within
 * a round trip. So when a direction shows a bulk flow (a read filled a whole relay buffer),
 * its source's receive buffer and its destination's send buffer are set to rate × RTT, with a
 * floor that covers the engine's own wake-ups; the queue then waits at the origin instead.
 *
 * The RTT is the larger of tcpi_min_rtt and the smoothed tcpi_rtt of that socket (TCP_INFO,
 * which an MPTCP socket answers too), and the rate 10 Gbit/s by default: every path slower
 * than that keeps its full rate. Paths longer than a few milliseconds need more than
 * net.core.rmem_max/wmem_max lets SO_RCVBUF/SO_SNDBUF ask for (4 MiB ≈ 3.3 ms at 10 Gbit/s
 * here), and are left to autotuning: the cap acts on LAN-like paths, where the queue is
 * pure delay.
 *
 * SO_RCVBUF, not TCP_WINDOW_CLAMP: the clamp bounds the window *beyond* the bytes received,
 * so unread bytes still pile up to the buffer's size (and autotuning rewrites the clamp when
 * it grows the buffer). MPTCP sockets apply SO_RCVBUF/SO_SNDBUF to the connection and every
 * subflow (mptcp_setsockopt_sol_socket).
 */
#include "queue-cap.h"

#include <linux/tcp.h> /* struct tcp_info with tcpi_min_rtt */
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#define SOL_TCP_LEVEL 6 /* IPPROTO_TCP; linux/tcp.h and netinet/in.h cannot both be included */

struct mpx_queue_cap g_queue_cap = { .floor_bytes = 1u << 20, .rate_mbit = 10000 };

/* A sysctl's value, read once per process (0 = unknown: then any size counts as grantable). */
static uint64_t sysctl_once(_Atomic int64_t *cached, const char *path)
{
	int64_t v = atomic_load_explicit(cached, memory_order_relaxed);
	if (v >= 0)
		return (uint64_t)v;
	v = 0;
	FILE *f = fopen(path, "r");
	if (f != NULL) {
		long long n;
		if (fscanf(f, "%lld", &n) == 1 && n > 0)
			v = n;
		fclose(f);
	}
	atomic_store_explicit(cached, v, memory_order_relaxed);
	return (uint64_t)v;
}

static uint64_t buffer_max(int optname)
{
	static _Atomic int64_t rmem = -1, wmem = -1;
	return optname == SO_RCVBUF ? sysctl_once(&rmem, "/proc/sys/net/core/rmem_max")
				    : sysctl_once(&wmem, "/proc/sys/net/core/wmem_max");
}

uint32_t mpx_queue_cap(int fd, int optname)
{
	if (g_queue_cap.floor_bytes == 0)
		return 0;
	struct tcp_info ti;
	socklen_t len = sizeof(ti);
	memset(&ti, 0, sizeof(ti));
	if (getsockopt(fd, SOL_TCP_LEVEL, TCP_INFO, &ti, &len) != 0 ||
	    len < offsetof(struct tcp_info, tcpi_min_rtt) + sizeof(ti.tcpi_min_rtt))
		return 0;
	uint64_t rtt_us = ti.tcpi_min_rtt > ti.tcpi_rtt ? ti.tcpi_min_rtt : ti.tcpi_rtt;
	if (rtt_us == 0)
		return 0;
	uint64_t cap = rtt_us * g_queue_cap.rate_mbit / 8; /* µs × Mbit/s / 8 = bytes */
	if (cap < g_queue_cap.floor_bytes)
		cap = g_queue_cap.floor_bytes;
	uint64_t max = buffer_max(optname);
	if ((max != 0 && cap > max) || cap > INT32_MAX / 2)
		return 0;
	int v = (int)cap;
	return setsockopt(fd, SOL_SOCKET, optname, &v, sizeof(v)) == 0 ? (uint32_t)cap : 0;
}
