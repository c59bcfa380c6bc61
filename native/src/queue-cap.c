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
 * here), or more than autotuning would give them anyway (tcp_rmem/tcp_wmem's maximum), and
 * are left to autotuning: the cap acts on LAN-like paths, where the queue is pure delay.
 *
 * SO_RCVBUF, not TCP_WINDOW_CLAMP: the clamp bounds the window *beyond* the bytes received,
 * so unread bytes still pile up to the buffer's size (and autotuning rewrites the clamp when
 * it grows the buffer).
 *
 * Never an MPTCP connection (one that did not fall back to TCP): its buffers must cover its
 * slowest subflow — data in flight there holds the connection-level window, and the receiver
 * reorders across paths — and the RTT one sample sees (TCP_INFO answers for the first
 * subflow, early in the transfer) says nothing about a second path whose queue builds later.
 * Measured: capping the client MPTCP socket's send buffer too cost aggregation over the two
 * shaped testbed paths (40 + 20 Mbit/s) 5–8 % (bench --only aggregation, 3 reps each way).
 * So the cap is for plain TCP sockets and fallen-back ones: the upstream of a TCP origin,
 * and a single-path client.
 *
 * An MPTCP client socket's own queue is bounded another way: TCP_NOTSENT_LOWAT (which an MPTCP
 * socket honours on this kernel) on the destination of a bulk flow. It bounds only the bytes
 * written but not yet sent on any subflow — the connection-level queue that the scheduler has
 * not handed to a path — and leaves alone the bytes in flight, which are what a slow subflow
 * needs covered. A write stops once that queue passes the mark, and EPOLLOUT fires once it is
 * below half of it (tcp_poll's wake rule), so the mark also sets the size of the engine's
 * writes: 1 MiB (the default, the relay buffer's size) keeps them large. Measured (bench
 * --reps 2 --only throughput,conversion-delay, native, two runs per value alternated, values
 * set with MPTCP_PROXY_CAP_NOTSENT): bulk data-in → data-out p50, forward / HTTP, off 2.9, 3.0
 * / 10.3, 16.2 ms; 256 KiB 5.0, 3.6 / 4.9, 4.2; 1 MiB 3.9, 4.5 / 4.3, 4.2 (HAProxy 18–51 ms in
 * the same runs). Eight parallel downloads, forward / HTTP: off 5931, 7659 / 6531, 8826 Mbit/s;
 * 256 KiB 5352, 4839 / 5393, 5148 (CPU 1.36–1.46 s/GB against 0.9–1.1: twice as many wake-ups
 * and writes); 1 MiB 7595, 7656 / 7298, 7422. One download: within the runs' noise for all three.
 *
 * The floor (capBuffersMinBytes, 1 MiB) is the trade between the two targets it touches. A 2 MiB
 * floor (set with MPTCP_PROXY_CAP_MIN; bench --reps 3 --only throughput,conversion-delay, three
 * runs per value alternated; one run had 19 % steal, the others under 7 %) took the forward's
 * CPU per GB from 1.07–1.16 to 0.95–1.01 s/GB, and left one download's rate within the noise
 * (÷ direct 0.66–0.79 against 0.63–0.94). It doubled the bulk delay: forward / HTTP p50 4.2–4.9 /
 * 3.1–4.8 ms against 8.1–11.0 / 9.8–11.8 ms, 0.14–0.35× HAProxy's (its target is 0.25×).
 */
#include "queue-cap.h"
#include "mptcp-uapi.h" /* IPPROTO_MPTCP, TCP_IS_MPTCP */

#include <linux/tcp.h> /* struct tcp_info with tcpi_min_rtt */
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#define SOL_TCP_LEVEL 6 /* IPPROTO_TCP; linux/tcp.h and netinet/in.h cannot both be included */

struct mpx_queue_cap g_queue_cap = { .floor_bytes = 1u << 20, .rate_mbit = 10000, .notsent_bytes = 1u << 20 };

/* A sysctl's value (its `field`th number: tcp_rmem and tcp_wmem hold three), read once per
 * process; 0 = unknown, and then the rule that uses it does not apply. */
static uint64_t sysctl_once(_Atomic int64_t *cached, const char *path, int field)
{
	int64_t v = atomic_load_explicit(cached, memory_order_relaxed);
	if (v >= 0)
		return (uint64_t)v;
	v = 0;
	FILE *f = fopen(path, "r");
	if (f != NULL) {
		long long n = 0;
		int i = 0;
		while (i <= field && fscanf(f, "%lld", &n) == 1)
			i++;
		if (i == field + 1 && n > 0)
			v = n;
		fclose(f);
	}
	atomic_store_explicit(cached, v, memory_order_relaxed);
	return (uint64_t)v;
}

/* The most SO_RCVBUF/SO_SNDBUF may ask for without CAP_NET_ADMIN (net.core.rmem_max/wmem_max). */
static uint64_t buffer_max(int optname)
{
	static _Atomic int64_t rmem = -1, wmem = -1;
	return optname == SO_RCVBUF ? sysctl_once(&rmem, "/proc/sys/net/core/rmem_max", 0)
				    : sysctl_once(&wmem, "/proc/sys/net/core/wmem_max", 0);
}

/* The most autotuning grows one socket's buffer to (net.ipv4.tcp_rmem/tcp_wmem, third field). */
static uint64_t autotune_ceiling(int optname)
{
	static _Atomic int64_t rmem = -1, wmem = -1;
	return optname == SO_RCVBUF ? sysctl_once(&rmem, "/proc/sys/net/ipv4/tcp_rmem", 2)
				    : sysctl_once(&wmem, "/proc/sys/net/ipv4/tcp_wmem", 2);
}

/* An MPTCP connection that did not fall back (TCP_IS_MPTCP): left alone, see the header. A
 * kernel without TCP_IS_MPTCP (before 5.16) has no fallback to tell apart: an IPPROTO_MPTCP
 * socket then counts as MPTCP. */
static bool is_multipath(int fd)
{
	int v = 0;
	socklen_t len = sizeof(v);
	if (getsockopt(fd, SOL_TCP_LEVEL, TCP_IS_MPTCP, &v, &len) == 0)
		return v != 0;
	len = sizeof(v);
	return getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &v, &len) == 0 && v == IPPROTO_MPTCP;
}

uint32_t mpx_queue_cap(int fd, int optname)
{
	uint64_t floor_bytes = atomic_load_explicit(&g_queue_cap.floor_bytes, memory_order_relaxed);
	uint64_t rate_mbit = atomic_load_explicit(&g_queue_cap.rate_mbit, memory_order_relaxed);
	if (floor_bytes == 0 || is_multipath(fd))
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
	uint64_t cap = rtt_us * rate_mbit / 8; /* µs × Mbit/s / 8 = bytes */
	if (cap < floor_bytes)
		cap = floor_bytes;
	/* Left alone when the cap could not be granted (SO_*BUF would silently clip it to the
	 * sysctl's maximum: a lower cap than the path needs), or when the kernel doubles it
	 * (socket(7)) to no less than autotuning's own ceiling: then it would cap nothing, and
	 * on a host with large rmem_max it would only pin more memory than autotuning uses. */
	uint64_t max = buffer_max(optname), ceiling = autotune_ceiling(optname);
	if ((max != 0 && cap > max) || (ceiling != 0 && 2 * cap >= ceiling) || cap > INT32_MAX / 2)
		return 0;
	int v = (int)cap;
	return setsockopt(fd, SOL_SOCKET, optname, &v, sizeof(v)) == 0 ? (uint32_t)cap : 0;
}

uint32_t mpx_notsent_cap(int fd)
{
	int v = (int)atomic_load_explicit(&g_queue_cap.notsent_bytes, memory_order_relaxed);
	if (v <= 0)
		return 0;
	return setsockopt(fd, SOL_TCP_LEVEL, TCP_NOTSENT_LOWAT, &v, sizeof(v)) == 0 ? (uint32_t)v : 0;
}
