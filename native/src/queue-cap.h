/* SPDX-License-Identifier: MIT */
#ifndef MPX_QUEUE_CAP_H
#define MPX_QUEUE_CAP_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

/* The engine's cap on the socket buffers a bulk flow fills (queue-cap.c). floor_bytes 0 turns
 * it off. Set before the first relay (relaySetQueueCap). */
struct mpx_queue_cap {
	/* Atomic: set from the JS thread (relaySetQueueCap), read by the engine threads. */
	_Atomic uint32_t floor_bytes; /* never cap below this */
	_Atomic uint32_t rate_mbit; /* a capped buffer still carries this rate at the path's RTT */
	_Atomic uint32_t notsent_bytes; /* TCP_NOTSENT_LOWAT of a bulk destination; 0 = left alone */
};

extern struct mpx_queue_cap g_queue_cap;

/* Caps fd's receive (SO_RCVBUF) or send (SO_SNDBUF) buffer at max(floor, rate × the path's
 * RTT), which also ends the kernel's autotuning of that buffer. Returns the size asked for, or
 * 0 when the socket is left alone: the cap is off, its RTT is unknown, or the path needs more
 * than SO_RCVBUF/SO_SNDBUF may grant (net.core.rmem_max / wmem_max) or than autotuning would
 * give it anyway (net.ipv4.tcp_rmem / tcp_wmem maximum). */
uint32_t mpx_queue_cap(int fd, int optname);

/* Sets TCP_NOTSENT_LOWAT on a bulk flow's destination socket, MPTCP ones included: the bytes
 * written to it but not yet sent on any path stay near notsent_bytes. Returns the value set, or
 * 0 when it is off or the kernel refused it (an older kernel whose MPTCP lacks the option). */
uint32_t mpx_notsent_cap(int fd);

#endif
