/* SPDX-License-Identifier: MIT
 *
 * The native relay engine. JS hands over two connected, non-inspected sockets (as dup()ed
 * fds) and gets back one close summary; in between, an epoll thread moves the bytes.
 *
 * Why native: measured on this project's testbed (docs: ARCHITECTURE.md, "The relay"), the
 * size of each read()/write() is what limits an MPTCP relay; Node's streams move 64 KiB at a
 * time and small writes leave the second subflow idle. Here every read and write is up to
 * 1 MiB, with no allocation per chunk.
 *
 * Design:
 * - Threads: one by default (relaySetThreads(n) for more), started on the first relayStart.
 *   Each relay belongs to one thread (round robin) for its whole life, so a relay's state is
 *   only ever touched by that thread; the JS thread talks to it through a command queue and
 *   an eventfd, and reads byte counters through relaxed atomics (relayStats is a live view,
 *   not an accounting record).
 * - Edge-triggered epoll (EPOLLET), each fd registered once for EPOLLIN|EPOLLOUT|EPOLLRDHUP.
 *   Backpressure is then a state, not a syscall: a direction with bytes still to write does
 *   not read its source (that is "EPOLLIN off"), and the destination's EPOLLOUT edge — which
 *   the kernel raises when send-buffer space frees after a short write (sk_stream_write_space,
 *   mptcp_write_space) — resumes it. Level-triggered mode would need an epoll_ctl(MOD) on
 *   every stall and resume, and would wake us for EPOLLOUT on every idle writable socket. The
 *   price of ET is that a handler must run until EAGAIN (epoll(7): "waiting for an event only
 *   after read(2) or write(2) return EAGAIN"); a direction that is still busy after a few
 *   buffers goes on a ready list instead, so one fast connection cannot starve the others.
 * - Buffers: a direction takes a 1 MiB buffer from its thread's pool only to read, and gives
 *   it back as soon as everything read has been written, or when the read finds nothing
 *   (EAGAIN). An idle connection therefore holds no buffer; a stalled one holds one per
 *   stalled direction. The pool keeps a few free buffers per thread and frees the rest.
 * - Half-close: EOF read on one side becomes shutdown(other, SHUT_WR) once that direction's
 *   pending bytes are written (RFC 9293 §3.6: each side closes its own sending half).
 * - Subflow sample (relayStart's sampleDownstream, for an MPTCP client): the engine reads the
 *   downstream's subflow summary itself at the first of its EOF, the shutdown of its sending
 *   half, or the relay's end (error, idle, abort) — before any fd is closed, while the
 *   subflows are still up — and reports it in the close summary. JS therefore needs no extra
 *   dup of the client's socket to sample it late (2 fds per relay, not 3).
 * - An error (RST, EPIPE) on either side closes both; both directions finished, an idle
 *   timeout or relayAbort() also closes both. Then a summary goes to JS through a
 *   napi_threadsafe_function, which is unref'd whenever no relay is live so the engine never
 *   keeps the process alive on its own.
 * - Pumps (pumpStart): a relay with one direction and a byte limit, for a message body whose
 *   length JS knows (an HTTP Content-Length body) or that runs to EOF. It moves bytes from
 *   fd[SIDE_DOWN] ("from") to fd[SIDE_UP] ("to") only, and JS keeps both sockets: it may
 *   read "to" and write "from" meanwhile (the other HTTP direction), so a pump registers
 *   "from" for EPOLLIN only and "to" for EPOLLOUT only, never reads "to", never shuts
 *   either down, and never reads a byte of "from" beyond its limit — every read is capped
 *   at the bytes still due, so the next message stays in the kernel for Node to read.
 *   Reaching the limit ends the pump at once (EPOLL_CTL_DEL, close of the dups) even if
 *   "from" is still readable: nothing is left waiting for an edge. EOF is 'done' for an
 *   until-EOF pump and 'eof' (an early end) for a limited one. It shares everything else
 *   with relays: threads, buffer pool, ready list, idle sweep, relayAbort, relayStats, stop.
 * - Connecting upstreams (relayStart's connectTimeoutMs > 0): JS issues a non-blocking
 *   connect(2) on fdUp and hands it over at once, with the client, so that no JS runs
 *   between the upstream's SYN-ACK and the first relayed byte. The relay then starts in a
 *   "connecting" state in which it moves nothing at all: bytes from the client (and the
 *   head) wait in the client's socket and the head buffer, and fdUp is never written — a
 *   send() on a SYN_SENT socket is not something to rely on returning EAGAIN (TCP would
 *   wait in sk_stream_wait_connect if it blocked; MPTCP has its own rules). fdUp is
 *   registered for EPOLLOUT like any relay fd, so the end of the handshake is an edge:
 *   tcp_poll reports nothing for SYN_SENT and EPOLLOUT once established, EPOLLERR|EPOLLHUP
 *   after a reset (connect(2): "select(2) ... for writing ... then getsockopt SO_ERROR").
 *   That first edge is the connect's completion: SO_ERROR says how it went. Success posts
 *   one 'connected' message to JS (onConnected) and pumps both directions, which reads
 *   whatever the client sent meanwhile (its EPOLLIN edges were spent while connecting, so
 *   the pump must run now, until EAGAIN). Failure, or the deadline (checked by the idle
 *   sweep), ends the relay with endedBy 'upstream', syscall 'connect', connectFailed, and
 *   resets the client (SO_LINGER {1, 0} before the close), as socket.resetAndDestroy() does
 *   for a failed JS dial: a forwarded client with no protocol reply learns at once. Any
 *   other end while connecting (abort, engine stop, the client's own reset) resets it too.
 */
#include "relay.h"
#include "engine.h"
#include "engine-only.h"
#include "common.h"
#include "mptcp-info.h"
#include "mptcp-uapi.h"
#include "queue-cap.h"
#include "http-head.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static struct relay *g_hash[HASH_BUCKETS];

/* Engine state (engine.h). */
struct engine_state g_engine = { .want_threads = 1, .next_acceptor_id = 1 };
_Atomic uint64_t g_next_id = 1;
_Atomic unsigned g_next_accept_thread;

/* ---- id → relay table (for relayStats / relayAbort from the JS thread) ---- */

void eng_hash_insert(struct relay *r)
{
	pthread_mutex_lock(&g_lock);
	struct relay **b = &g_hash[r->id % HASH_BUCKETS];
	r->hnext = *b;
	*b = r;
	pthread_mutex_unlock(&g_lock);
}

static void hash_remove(struct relay *r)
{
	pthread_mutex_lock(&g_lock);
	for (struct relay **p = &g_hash[r->id % HASH_BUCKETS]; *p != NULL; p = &(*p)->hnext) {
		if (*p == r) {
			*p = r->hnext;
			break;
		}
	}
	pthread_mutex_unlock(&g_lock);
}

/* Caller holds g_lock. */
static struct relay *hash_find(uint64_t id)
{
	for (struct relay *r = g_hash[id % HASH_BUCKETS]; r != NULL; r = r->hnext)
		if (r->id == id)
			return r;
	return NULL;
}

/* ---- buffer pool (per thread, so no lock) ---- */

static char *pool_get(struct engine_thread *t)
{
	if (t->pool_len > 0)
		return t->pool[--t->pool_len];
	return malloc(RELAY_BUF_SIZE);
}

static void pool_put(struct engine_thread *t, char *buf)
{
	if (buf == NULL)
		return;
	if (t->pool_len < POOL_KEEP)
		t->pool[t->pool_len++] = buf;
	else
		free(buf);
}

static void direction_release(struct engine_thread *t, struct direction *d)
{
	if (d->pooled)
		pool_put(t, d->buf);
	else
		free(d->buf);
	d->buf = NULL;
	d->off = d->len = 0;
}

/* The response-head hook's gathering buffer back to the pool, with what it held. */
static void head_buf_release(struct engine_thread *t, struct relay *r)
{
	pool_put(t, r->head_buf);
	r->head_buf = NULL;
	r->head_len = 0;
}

/* ---- messages to JS ---- */

void eng_msg_free(struct msg *m)
{
	if (m->kind == MSG_HANDOFF) {
		/* Not delivered (the engine went down with the env, or JS could not be called): the
		 * connection is nobody's, so it is closed; its client slot goes with it. */
		if (m->fd_down >= 0) {
			close(m->fd_down);
			struct mpx_client_key key;
			if (mpx_client_key_from_sockaddr((const struct sockaddr *)&m->peer, &key))
				mpx_client_release(&key);
		}
		if (m->fd_up >= 0)
			close(m->fd_up);
	}
	if (m->kind == MSG_DONE && m->kept)
		close(m->kept_fd); /* not delivered: nobody would ever close it */
	free(m->subflows);
	free(m->data);
	free(m->req);
	free(m);
}

static void msg_free_chain(struct msg *m)
{
	while (m != NULL) {
		struct msg *next = m->next;
		eng_msg_free(m);
		m = next;
	}
}

/*
 * Messages for JS are queued and sent in batches: each napi_call_threadsafe_function costs an
 * eventfd write here and a wake-up of the main thread there (a context switch, which on this
 * kind of VM was about a fifth of the main thread's time under a short-connection load), and a
 * short connection has three messages (accepted, connected, done). Reports — those three and
 * 'denied' — may wait REPORT_DELAY_MS for others to share the wake-up: JS only records them
 * (logs, accounting), and the connection is not waiting for it. Anything a client or a JS
 * caller waits on — a hand-over, a pump's end (the next request on a kept-alive connection),
 * an acceptor's stop or error — sends the queue at the end of this loop turn, as does
 * REPORT_BATCH_MAX queued messages.
 */
#define REPORT_DELAY_MS 5
#define REPORT_BATCH_MAX 64
/* An outbox of nothing but access lines (engine-only.c) waits longer: each send wakes the main
 * thread, and at a few thousand short connections a second one wake per 5 ms was still most of
 * what the main thread did for them (/proc, per thread). JS writes each batch at once
 * (LogSink.writeBatch), so a line waits at most this long, instead of the batched sink's 10 ms. */
#define LINES_DELAY_MS 20

static bool msg_is_urgent(const struct msg *m)
{
	switch (m->kind) {
	case MSG_ACCEPTED:
	case MSG_CONNECTED:
	case MSG_DENIED:
		return false;
	case MSG_DONE:
		/* A pump's end, or a kept client's hand-back: its next request may be waiting. */
		return m->pump || m->kept;
	case MSG_EXCHANGE: /* a report, like 'done' (the loop is already on to the next request) */
		return false;
	case MSG_LINES: /* access lines and a count (engine-only.c): reports, nothing waits on them */
		return false;
	default:
		return true;
	}
}

void eng_post(struct engine_thread *t, struct msg *m)
{
	if (!t->report) {
		eng_msg_free(m); /* engine torn down with the env: nobody is left to tell */
		return;
	}
	m->next = NULL;
	if (t->out_tail != NULL) {
		t->out_tail->next = m;
		t->out_lines_only = t->out_lines_only && m->kind == MSG_LINES;
	} else {
		t->out_head = m;
		t->out_since_ms = t->now_ms;
		t->out_lines_only = m->kind == MSG_LINES;
	}
	t->out_tail = m;
	t->out_count++;
	if (msg_is_urgent(m))
		t->out_urgent = true;
}

void eng_flush(struct engine_thread *t)
{
	struct msg *m = t->out_head;
	if (m == NULL)
		return;
	t->out_head = t->out_tail = NULL;
	t->out_count = 0;
	t->out_urgent = false;
	eo_outbox_sent(t);
	if (!t->report || napi_call_threadsafe_function(t->js->tsfn, m, napi_tsfn_nonblocking) != napi_ok)
		msg_free_chain(m);
}

/* ms until the queue must be sent: 0 now, -1 nothing queued. */
static int64_t flush_in_ms(const struct engine_thread *t)
{
	if (t->out_head == NULL)
		return -1;
	if (t->out_urgent || t->out_count >= REPORT_BATCH_MAX)
		return 0;
	int64_t left = t->out_since_ms + (t->out_lines_only ? LINES_DELAY_MS : REPORT_DELAY_MS) - t->now_ms;
	return left < 0 ? 0 : left;
}

/* The downstream's subflows, once, while its fd is open (see "Subflow sample" above). A
 * socket that is not, or no longer, MPTCP, or a failed read, leaves no sample: accounting
 * then keeps what JS sampled at the handover. */
static void sample_downstream(struct relay *r)
{
	if (!r->sample_down || r->sampled)
		return;
	r->sampled = true;
	struct mpx_subflow_summary *s = malloc(sizeof(*s));
	if (s == NULL)
		return;
	int err = 0;
	const char *syscall = NULL;
	if (mpx_subflow_summary(r->fd[SIDE_DOWN], true, s, &err, &syscall) != MPX_SUMMARY_OK) {
		free(s);
		return;
	}
	r->subflows = s;
}

/* The open loop request's "method\0target\0" for a message (malloc'd, *len its size), NULL
 * when it is the first request or there is none; the relay's copies are freed either way. */
static char *exchange_names(struct relay *r, size_t *len)
{
	char *out = NULL;
	*len = 0;
	if (r->ex_method != NULL && r->ex_target != NULL) {
		size_t ml = strlen(r->ex_method) + 1, tl = strlen(r->ex_target) + 1;
		out = malloc(ml + tl);
		if (out != NULL) {
			memcpy(out, r->ex_method, ml);
			memcpy(out + ml, r->ex_target, tl);
			*len = ml + tl;
		}
	}
	free(r->ex_method);
	free(r->ex_target);
	r->ex_method = r->ex_target = NULL;
	return out;
}

/* A held client's socket may hold bytes we never read (a request left there until its response
 * started, or the next one): read and dropped before our close, so that the client sees a FIN,
 * not the RST close() sends for unread data. Bounded: a client that keeps sending gets the RST. */
static void drain_held(struct relay *r)
{
	char scratch[4096];
	for (int i = 0; i < 16; i++)
		if (recv(r->fd[SIDE_DOWN], scratch, sizeof(scratch), MSG_DONTWAIT) <= 0)
			return;
}

static bool has_output(const struct direction *x);

/* An upstream known to be idle and clean (park_up, set where relay.c knows it) that is still
 * so as the relay ends: no error, no hang-up or byte seen since, no request in flight on it. */
static bool upstream_parkable(const struct relay *r)
{
	return r->park_up && r->park_ms > 0 && r->acc != NULL && !r->acc->closed && !r->connecting && !r->up_dead && r->err == 0 && r->reason == NULL && !r->hup[SIDE_UP] &&
	       !r->dir[SIDE_UP].eof && !has_output(&r->dir[SIDE_UP]) && r->head_state == HEAD_NONE && r->loop_pending_skip == 0;
}

static void finish(struct engine_thread *t, struct relay *r)
{
	if (r->finished)
		return;
	r->finished = true;
	/* The upstream goes to the pool (upstream-park.c) rather than closed, when it can. */
	bool parked = upstream_parkable(r) && park_put(t, r->acc, &r->up_target, &r->up_local, r->fd[SIDE_UP], r->up_mptcp, r->park_ms, r->registered);
	if (r->hold_down && !r->kept && !r->connecting)
		drain_held(r);
	/* Error, idle, abort or engine stop before either half-close: sample before closing. */
	sample_downstream(r);
	eo_before_close(t, r);
	if (r->connecting) {
		/* The upstream never answered: reset the client rather than FIN it, as the JS dial's
		 * failure path does (socket.resetAndDestroy(): SO_LINGER {1, 0}, then close — tcp_close
		 * sends an RST for a zero linger, tcp(7)). It is a socket option, so it holds even if
		 * the JS socket's fd is closed after ours. A failure here leaves a FIN instead. */
		struct linger lg = { .l_onoff = 1, .l_linger = 0 };
		setsockopt(r->fd[SIDE_DOWN], SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	}
	for (int s = 0; s < 2; s++) {
		/* EPOLL_CTL_DEL before close: another fd of the same socket may still be open (a JS
		 * socket not yet destroyed), and an epoll registration lives as long as the open file
		 * description, not the fd (epoll(7), "Will closing a file descriptor cause it to be
		 * removed?"). A kept client leaves the set and stays open: MSG_DONE gives it to JS. */
		bool keep = s == SIDE_DOWN && r->kept;
		bool pooled = s == SIDE_UP && parked; /* its registration is the pool's now */
		if (r->registered && !pooled && (!r->sole || keep)) /* else close() removes them: no other fd is open */
			epoll_ctl(t->epfd, EPOLL_CTL_DEL, r->fd[s], NULL);
		if (!keep && !pooled)
			close(r->fd[s]);
		direction_release(t, &r->dir[s]);
	}
	head_buf_release(t, r);
	free(r->head_carry);
	r->head_carry = NULL;
	free(r->resp_via);
	r->resp_via = NULL;
	free(r->loop_authority);
	r->loop_authority = NULL;
	free(r->req_head);
	r->req_head = NULL;
	hash_remove(r);
	/* A kept client takes its slot along: JS gives both back to the acceptor (acceptorAdopt). */
	if (r->counted && !r->kept) {
		mpx_client_release(&r->client);
		r->counted = false;
	}
	if (r->prev)
		r->prev->next = r->next;
	else if (t->relays == r)
		t->relays = r->next;
	if (r->next)
		r->next->prev = r->prev;
	r->next = t->graveyard;
	r->prev = NULL;
	t->graveyard = r;

	if (r->quiet && eo_end(t, r))
		return; /* an engine-only connection: its line, not a 'done' */
	struct msg *m = calloc(1, sizeof(*m));
	if (m == NULL) {
		free(r->subflows);
		r->subflows = NULL;
		size_t ignored;
		free(exchange_names(r, &ignored));
		if (r->kept)
			close(r->fd[SIDE_DOWN]);
		return; /* out of memory: the JS promise stays pending, but no fd or buffer leaks */
	}
	m->kind = MSG_DONE;
	m->kept = r->kept;
	m->quiet_ends = r->quiet ? 1 : 0; /* eo_end ran out of memory: JS counts it off here */
	m->kept_fd = r->kept ? r->fd[SIDE_DOWN] : -1;
	m->acc = r->acc;
	m->on_done = r->on_done;
	m->on_connected = r->on_connected; /* never called (not connected): deleted with the message */
	r->on_connected = NULL;
	m->on_head = r->on_head; /* deleted with the message: no head message can follow this one */
	r->on_head = NULL;
	m->http_status = r->http_status;
	m->on_exchange = r->on_exchange; /* deleted with the message, after any MSG_EXCHANGE before it */
	r->on_exchange = NULL;
	m->ex_open = r->ex_open;
	m->exchanges = r->exchanges;
	m->data = exchange_names(r, &m->data_len);
	m->connect_failed = r->connect_failed;
	m->subflows = r->subflows;
	r->subflows = NULL;
	m->id = r->id;
	m->from_down = atomic_load_explicit(&r->dir[SIDE_DOWN].bytes, memory_order_relaxed);
	m->from_up = atomic_load_explicit(&r->dir[SIDE_UP].bytes, memory_order_relaxed);
	m->ended_by = r->ended_by == SIDE_NONE ? SIDE_PROXY : r->ended_by;
	m->err = r->err;
	m->syscall = r->syscall;
	m->reason = r->reason;
	m->denied_by = r->denied_by;
	m->duration_ms = now_ms_precise() - (double)r->started_ms;
	if (r->pump) {
		m->pump = true;
		/* The proxy's reason first (an abort may race a write error), then an error, then
		 * how the pump ended by itself. */
		m->pump_ended_by = r->reason != NULL ? r->reason
				   : r->err != 0	? "error"
				   : r->pump_end == PUMP_EOF ? "eof"
							 : "done";
	}
	eng_post(t, m);
}

static void first_end(struct relay *r, int side)
{
	if (r->ended_by == SIDE_NONE)
		r->ended_by = side;
}

void eng_fail(struct engine_thread *t, struct relay *r, int side, int err, const char *syscall)
{
	first_end(r, side);
	if (r->err == 0) {
		r->err = err;
		r->syscall = syscall;
	}
	finish(t, r);
}

static void mark_ready(struct engine_thread *t, struct relay *r)
{
	if (r->on_ready)
		return;
	r->on_ready = true;
	r->ready_next = t->ready;
	t->ready = r;
}

/* ---- response-head hook (relayStart's options.onResponseHead) ----
 *
 * The HTTP proxy serves some exchanges without taking the sockets into Node at all: JS sends
 * the rewritten request head with relayStart (headToUp, skipDown dropping the client's own), and
 * the response head comes back to JS here. The engine gathers the upstream's bytes until they
 * hold a head (or the upstream ends, or HEAD_MAX came without one), posts them to JS
 * (MSG_HEAD, urgent) and moves nothing more from the upstream until JS answers with
 * relayHeadDone: the bytes to write to the client in their place (the rewritten head and the
 * body bytes that came with it), then raw relaying, another head (after a 1xx), or the end of
 * the upstream side. A plain head it rewrites itself when the relay has responseVia
 * (http-head.c, head_whole); what is plain, and where a head ends, is http-head.c's to say. */

/* The keep-alive loop's steps (below). */
static void loop_wait_next(struct engine_thread *t, struct relay *r);
static void loop_give_back(struct engine_thread *t, struct relay *r);
static void loop_consume_request(struct engine_thread *t, struct relay *r);

/* A request still in the client's socket (the loop's, or one served from accept: their heads
 * leave it at the response's first byte) whose upstream ended or failed before answering — one
 * closing its idle connection as the request went out: the client goes back to JS, which sends
 * the request on a new connection. False when the response had begun. */
static bool loop_unanswered(struct engine_thread *t, struct relay *r)
{
	if (r->loop_pending_skip == 0)
		return false;
	loop_give_back(t, r);
	return true;
}

/* A read of n bytes where want were asked for emptied the source's queue (struct direction,
 * drained): short, not a bulk flow's, and no hang-up pending that only reading on would see. */
static bool read_drained(const struct relay *r, int d, size_t n, size_t want)
{
	return n < want && n < DRAINED_MAX && !r->hup[d];
}

/* Posts what was gathered (or, after the upstream failed, nothing: err and syscall say how)
 * and waits for relayHeadDone. */
static void head_post(struct engine_thread *t, struct relay *r, bool complete, int err, const char *syscall)
{
	struct msg *m = calloc(1, sizeof(*m));
	char *data = r->head_len > 0 ? malloc(r->head_len) : NULL;
	if (m == NULL || (r->head_len > 0 && data == NULL)) {
		free(m);
		free(data);
		eng_fail(t, r, SIDE_PROXY, ENOMEM, "malloc");
		return;
	}
	if (data != NULL)
		memcpy(data, r->head_buf, r->head_len);
	m->kind = MSG_HEAD;
	m->id = r->id;
	m->on_head = r->on_head;
	m->acc = r->acc; /* an acceptor's exchange: to its callback, with the request head */
	if (r->acc != NULL && r->req_head != NULL && (m->req = malloc(r->req_head_len)) != NULL) {
		memcpy(m->req, r->req_head, r->req_head_len);
		m->req_len = r->req_head_len;
	}
	m->complete = complete;
	m->data = data;
	m->data_len = r->head_len;
	m->err = err;
	m->syscall = syscall;
	head_buf_release(t, r);
	r->head_state = HEAD_WAITING;
	eng_post(t, m);
}

static bool head_upstream_failed(struct engine_thread *t, struct relay *r, int err, const char *syscall, const char *reason);

static bool holding(const struct relay *r);
static size_t keep_body_bytes(struct relay *r, const char *p, size_t len);

/* The body's end is found by its framing from here: `length` bytes, or the chunk framing. */
static void start_framing(struct relay *r, bool keep_client, bool chunked, uint64_t length)
{
	r->keep_client = keep_client;
	r->framed = true;
	r->chunk_active = chunked;
	r->keep_remaining = chunked ? 0 : length;
	if (chunked)
		mpx_chunked_init(&r->chunk);
}

/* A kept client's response, as the head the engine rewrote frames it: how its end is found
 * (keep_remaining for a length or no body, the chunk framing for a chunked one), and whether the
 * upstream stays usable afterwards: for the loop's next request, or (frame_up) for the pool. */
static void keep_framing(struct relay *r, const struct mpx_response_info *info, bool keep_client)
{
	start_framing(r, keep_client, info->body == MPX_BODY_CHUNKED, info->body == MPX_BODY_LENGTH ? info->length : 0);
	r->up_keeps = (r->loop_authority != NULL || r->frame_up) && info->upstream_keeps;
}

/* A whole head gathered: rewritten here when it is a plain one and the relay has responseVia
 * (then the rewritten head and the body bytes that came with it are the direction's output and
 * the head is dealt with: true), else posted to JS (false). A held client whose response can be
 * delimited (a length, no body, chunked) gets a keep-alive head and is kept (keep_framing);
 * otherwise the head says Connection: close. */
static bool head_whole(struct engine_thread *t, struct relay *r)
{
	size_t hl = r->resp_via != NULL ? mpx_http_head_end(r->head_buf, r->head_len) : 0;
	if (hl > 0) {
		size_t cap = hl + strlen(r->resp_via) + 64; /* dropping fields only shrinks it */
		size_t rest = r->head_len - hl;
		char *out = malloc(cap + rest);
		struct mpx_response_info info = { 0 };
		bool keeps = holding(r) && r->client_keeps;
		size_t n = out != NULL ? mpx_http_rewrite_response_ex(r->head_buf, r->head_len, r->resp_via, keeps, r->head_request, out, cap, &info) : 0;
		if (n > 0) {
			struct direction *x = &r->dir[SIDE_UP];
			if (keeps && !info.client_closed) {
				keep_framing(r, &info, true);
				rest = keep_body_bytes(r, r->head_buf + hl, rest);
			} else if (r->frame_up && holding(r) && info.body != MPX_BODY_CLOSE) {
				/* A closing client whose upstream was asked to stay: the body's end is
				 * found by its framing (struct relay, frame_up). */
				keep_framing(r, &info, false);
				rest = keep_body_bytes(r, r->head_buf + hl, rest);
			}
			memcpy(out + n, r->head_buf + hl, rest);
			x->buf = out;
			x->off = 0;
			x->len = n + rest;
			x->pooled = false;
			r->http_status = info.status;
			r->head_state = HEAD_NONE;
			head_buf_release(t, r);
			return true;
		}
		free(out);
	}
	head_post(t, r, true, 0, NULL);
	return false;
}

/* Reads the upstream into the head buffer until a head is whole, the upstream ends, HEAD_MAX
 * is reached (then it is rewritten here or posted to JS), or nothing more is there (then it
 * waits for the next edge). True when the engine rewrote it: the direction has output. */
static bool head_gather(struct engine_thread *t, struct relay *r)
{
	struct direction *x = &r->dir[SIDE_UP];
	if (r->head_state != HEAD_GATHERING)
		return false;
	if (r->head_buf == NULL) {
		r->head_buf = pool_get(t);
		if (r->head_buf == NULL) {
			eng_fail(t, r, SIDE_PROXY, ENOMEM, "malloc");
			return false;
		}
		r->head_len = 0;
		if (r->head_carry != NULL) {
			memcpy(r->head_buf, r->head_carry, r->head_carry_len); /* ≤ HEAD_MAX: relayHeadDone */
			r->head_len = r->head_carry_len;
			free(r->head_carry);
			r->head_carry = NULL;
			r->head_carry_len = 0;
			if (mpx_head_has_end(r->head_buf, r->head_len, 0))
				return head_whole(t, r);
			if (r->head_len == HEAD_MAX) {
				head_post(t, r, false, 0, NULL);
				return false;
			}
		}
	}
	for (;;) {
		if (x->eof) {
			if (!loop_unanswered(t, r))
				head_post(t, r, false, 0, NULL);
			return false;
		}
		size_t before = r->head_len;
		ssize_t n = recv(r->fd[SIDE_UP], r->head_buf + before, HEAD_MAX - before, 0);
		if (n > 0) {
			r->head_len += (size_t)n;
			atomic_fetch_add_explicit(&x->bytes, (uint64_t)n, memory_order_relaxed);
			r->last_activity_ms = t->now_ms;
			if (r->loop_pending_skip > 0) {
				loop_consume_request(t, r);
				if (r->finished)
					return false;
			}
			if (mpx_head_has_end(r->head_buf, r->head_len, before)) {
				/* As pump's reads: a short one emptied the queue, so once the response is
				 * written the direction waits for the next edge instead of reading EAGAIN. */
				x->drained = read_drained(r, SIDE_UP, (size_t)n, HEAD_MAX - before);
				return head_whole(t, r);
			}
			if (r->head_len == HEAD_MAX) {
				head_post(t, r, false, 0, NULL);
				return false;
			}
			continue;
		}
		if (n == 0) {
			x->eof = true;
			first_end(r, SIDE_UP);
			continue; /* posts what there is */
		}
		int err = errno;
		if (err == EINTR)
			continue;
		if (err == EAGAIN || err == EWOULDBLOCK) {
			if (r->head_len == 0) /* an idle relay holds no buffer */
				head_buf_release(t, r);
			return false;
		}
		if (!head_upstream_failed(t, r, err, "read", NULL))
			eng_fail(t, r, SIDE_UP, err, "read");
		return false;
	}
}

static void pump(struct engine_thread *t, struct relay *r, int d);

/* Bytes read (or a head) not yet all written. */
static bool has_output(const struct direction *x)
{
	return x->off < x->len;
}

/* How long an upstream that was asked to close may stay open once a kept client's body is
 * out (keep_client_now). */
#define KEEP_UPSTREAM_CLOSE_MS 100
/* CMD_HEAD's keep_body for HEAD_THEN_FRAMED with keepBody -1: a chunked body. */
#define FRAMED_CHUNKED UINT64_MAX

static bool keep_done(const struct relay *r);

/* Called when the upstream has nothing more to read for now: once a kept client has its whole
 * response, written, and the upstream has not closed yet, it has KEEP_UPSTREAM_CLOSE_MS to do
 * so (keep_close_due), and the thread sweeps soon enough to see that (sweep_idle,
 * keep_client_now). Not from the moment the body is read: a slow client can take far longer
 * than that to take the rest of it, and its relay must not end before. */
static void framed_close_client(struct engine_thread *t, struct relay *r);

static void keep_await_upstream_eof(struct engine_thread *t, struct relay *r)
{
	if (r->framed && !r->keep_client) {
		/* A closing client's framed body (frame_up): once it is all out, the client's end. */
		if (holding(r) && r->keep_remaining == 0 && !r->chunk_active && !has_output(&r->dir[SIDE_UP]))
			framed_close_client(t, r);
		return;
	}
	if (r->keep_close_due != 0)
		return;
	if (!keep_done(r)) {
		/* A kept client's body is out but the upstream sent bytes past it (keep_spoiled), or
		 * broke its chunk framing: the client is done with, and the upstream, unclean, may well
		 * stay open (the loop asked it to) — waiting for its EOF held the client until the idle
		 * timeout. The relay ends: the client gets its FIN after a whole response (what it had
		 * pipelined is dropped: drain_held), and the upstream is closed. */
		if (holding(r) && r->keep_client && r->keep_spoiled && r->keep_remaining == 0 && !r->chunk_active && !has_output(&r->dir[SIDE_UP])) {
			first_end(r, SIDE_UP);
			finish(t, r);
		}
		return;
	}
	if (r->up_keeps) {
		loop_wait_next(t, r); /* the upstream stays: the client's next request may use it */
		return;
	}
	r->keep_close_due = t->now_ms + KEEP_UPSTREAM_CLOSE_MS;
	if (t->min_idle == 0 || t->min_idle > KEEP_UPSTREAM_CLOSE_MS)
		t->min_idle = KEEP_UPSTREAM_CLOSE_MS;
	if (t->next_sweep > r->keep_close_due)
		t->next_sweep = r->keep_close_due;
}

/* The upstream's connect failed (or timed out), or it failed before its response head was
 * whole, under a response-head hook: rather than reset or just close the client, JS is asked
 * for the reply in the response's place (a 502 or 504), as for an exchange that failed in JS.
 * The upstream fd is left alone from here; the client's bytes are read and dropped, so that
 * our close after the reply sends a FIN. False when there is no hook or its head is dealt with. */
static bool head_upstream_failed(struct engine_thread *t, struct relay *r, int err, const char *syscall, const char *reason)
{
	if (r->head_state != HEAD_GATHERING) /* only an exchange gathers heads */
		return false;
	if (loop_unanswered(t, r))
		return true;
	bool connecting = r->connecting;
	r->connecting = false;
	if (connecting)
		r->connect_failed = true;
	r->up_dead = true;
	first_end(r, SIDE_UP);
	if (r->err == 0) {
		r->err = err;
		r->syscall = syscall;
	}
	if (reason != NULL && r->reason == NULL)
		r->reason = reason;
	r->dir[SIDE_UP].eof = true;
	direction_release(t, &r->dir[SIDE_DOWN]); /* the request head: it has nowhere to go */
	if (r->registered)
		epoll_ctl(t->epfd, EPOLL_CTL_DEL, r->fd[SIDE_UP], NULL);
	r->head_len = 0; /* what came of a head before a failure is dropped (head_post releases it) */
	head_post(t, r, false, err, syscall);
	if (!r->finished)
		pump(t, r, SIDE_DOWN);
	return true;
}

/* A CMD_HEAD and the buffers it still owns. */
static void head_cmd_free(struct cmd *c)
{
	free(c->out);
	free(c->carry);
	free(c);
}

/* relayHeadDone's command, on the relay's thread. */
static void head_done(struct engine_thread *t, struct cmd *c)
{
	pthread_mutex_lock(&g_lock);
	struct relay *r = hash_find(c->id);
	pthread_mutex_unlock(&g_lock);
	/* Only this thread frees its relays, so r stays valid after the unlock. */
	if (r == NULL || r->thread != t || !r->added || r->finished || r->head_state != HEAD_WAITING)
		return; /* ended meanwhile (an error, the idle timeout, an abort): head_cmd_free frees c's buffers */
	struct direction *x = &r->dir[SIDE_UP];
	direction_release(t, x);
	x->buf = c->out;
	x->len = c->out_len;
	x->off = 0;
	x->pooled = false;
	c->out = NULL;
	if (c->then == HEAD_THEN_AGAIN) {
		r->head_state = HEAD_GATHERING;
		r->head_carry = c->carry;
		r->head_carry_len = c->carry_len;
		c->carry = NULL;
	} else {
		r->head_state = HEAD_NONE;
		if (c->then == HEAD_THEN_END)
			x->eof = true; /* nothing more from the upstream reaches the client */
		if (c->then == HEAD_THEN_KEEP && r->hold_down) {
			r->keep_client = true;
			r->framed = true;
			r->keep_remaining = c->keep_body;
		}
		if (c->then == HEAD_THEN_FRAMED && holding(r)) {
			/* The carry is the body's start: through the framing, then after the head. Not
			 * parked afterwards (up_keeps false): JS read this head, not us. */
			start_framing(r, false, c->keep_body == FRAMED_CHUNKED, c->keep_body);
			r->up_keeps = false;
			size_t k = c->carry_len > 0 ? keep_body_bytes(r, c->carry, c->carry_len) : 0;
			char *both = k > 0 ? realloc(x->buf, x->len + k) : x->buf;
			if (both == NULL) {
				eng_fail(t, r, SIDE_PROXY, ENOMEM, "malloc");
				return;
			}
			memcpy(both + x->len, c->carry, k);
			x->buf = both;
			x->len += k;
		}
	}
	x->drained = false; /* the upstream's edges were spent while JS had the head */
	r->last_activity_ms = t->now_ms;
	pump(t, r, SIDE_UP);
}

/* A holdClient relay still holding its client (struct relay): not once the upstream failed
 * (up_dead) or ended otherwise than with a kept client (drop_down), whose bytes are drained. */
static bool holding(const struct relay *r)
{
	return r->hold_down && !r->drop_down && !r->up_dead;
}

/* The client of a holdClient relay has had exactly its response (HEAD_THEN_KEEP, the body's
 * length and no byte past it) and can be kept. */
static bool keep_done(const struct relay *r)
{
	return holding(r) && r->keep_client && r->keep_remaining == 0 && !r->chunk_active && !r->keep_spoiled && !has_output(&r->dir[SIDE_UP]);
}

/* Of `len` bytes from the upstream for a kept client, how many are the rest of its body: up to
 * its length, or to the end of its chunk framing. Bytes past it are neither the client's nor a
 * clean upstream's (keep_spoiled: the client is closed after its body), as is a chunk framing
 * error (nothing more reaches the client). */
static size_t keep_body_bytes(struct relay *r, const char *p, size_t len)
{
	if (r->chunk_active) {
		bool ended = false;
		size_t k = mpx_chunked_scan(&r->chunk, p, len, &ended);
		if (k == (size_t)-1) {
			r->chunk_active = false;
			r->keep_spoiled = true;
			return 0;
		}
		if (ended) {
			r->chunk_active = false;
			if (k < len)
				r->keep_spoiled = true;
		}
		return k;
	}
	if (len > r->keep_remaining) {
		len = (size_t)r->keep_remaining;
		r->keep_spoiled = true;
	}
	r->keep_remaining -= len;
	return len;
}

/* Ends a relay whose client is kept: the upstream is closed, the client handed back to JS.
 * Normally at the upstream's EOF (it was asked to close: it is the one that waits in
 * TIME_WAIT, as for any exchange served in the engine); one that stays open once the client
 * has its whole response is closed by us KEEP_UPSTREAM_CLOSE_MS later (keep_await_upstream_eof,
 * sweep_idle), so that the client's next request does not wait on it. */
static void keep_client_now(struct engine_thread *t, struct relay *r)
{
	r->kept = true;
	first_end(r, SIDE_UP);
	finish(t, r);
}

/* A closing client's response is wholly out, its end found by the framing (frame_up): the
 * relay ends here. The client gets its FIN and is closed at once, as HAProxy closes a client
 * that asked to close: it may send nothing more (RFC 9112 §9.6), so waiting for its own FIN
 * bought nothing but a wake-up; whatever it did send is read first (finish: drain_held), so the
 * close is a FIN, not an RST. The upstream, asked to stay, is idle: parked if the response said
 * it keeps the connection and sent nothing past its body. */
static void framed_close_client(struct engine_thread *t, struct relay *r)
{
	r->park_up = r->up_keeps && !r->keep_spoiled;
	first_end(r, SIDE_UP); /* as for the upstream's own close: the response ended it */
	sample_downstream(r);
	if (shutdown(r->fd[SIDE_DOWN], SHUT_WR) < 0 && errno != ENOTCONN) {
		eng_fail(t, r, SIDE_DOWN, errno, "shutdown");
		return;
	}
	finish(t, r);
}

/* ---- keep-alive loop (options.loopAuthority) ----
 *
 * A keep-alive client's exchanges served one after another on one upstream connection, with
 * no JS in between (JS hears of each one afterwards, MSG_EXCHANGE): once a response leaves both
 * the client (keep_done) and the upstream (up_keeps) open, the relay waits for the client's next
 * request (loop_wait). A whole head that http-head.c rewrites (a plain GET to the same authority
 * that keeps the connection) is sent upstream and the response handled as the first one was;
 * anything else — and an upstream that closes or speaks while idle — hands the client back to
 * JS as a kept one (loop_give_back), its request unread, for a session on a Node socket. */

/* The exchange just done, to JS (options.onExchange), with its own bytes and duration. */
static void exchange_report(struct engine_thread *t, struct relay *r)
{
	if (!r->ex_open)
		return;
	r->ex_open = false;
	r->exchanges++;
	uint64_t down = atomic_load_explicit(&r->dir[SIDE_DOWN].bytes, memory_order_relaxed);
	uint64_t up = atomic_load_explicit(&r->dir[SIDE_UP].bytes, memory_order_relaxed);
	struct msg *m = r->on_exchange != NULL || r->acc != NULL ? calloc(1, sizeof(*m)) : NULL;
	if (m != NULL) {
		m->kind = MSG_EXCHANGE;
		m->id = r->id;
		m->acc = r->acc;
		m->on_exchange = r->on_exchange;
		m->http_status = r->http_status;
		m->from_down = down - r->ex_down0;
		m->from_up = up - r->ex_up0;
		m->duration_ms = now_ms_precise() - r->ex_started_ms;
		m->data = exchange_names(r, &m->data_len);
		eng_post(t, m);
	} else {
		size_t ignored;
		free(exchange_names(r, &ignored));
	}
	r->ex_down0 = down;
	r->ex_up0 = up;
	r->http_status = 0;
}

/* The client goes back to JS as a kept one, whatever it has sent since still in its socket;
 * the upstream is closed. */
static void loop_give_back(struct engine_thread *t, struct relay *r)
{
	if (r->loop_pending_skip > 0) { /* its request was not served here: it is JS's now */
		r->ex_open = false;
		size_t ignored;
		free(exchange_names(r, &ignored));
	}
	r->loop_wait = false;
	r->loop_pending_skip = 0;
	keep_client_now(t, r);
}

static void loop_next_request(struct engine_thread *t, struct relay *r);

/* A response is wholly out and both connections stay: report it, wait for the next request. */
static void loop_wait_next(struct engine_thread *t, struct relay *r)
{
	exchange_report(t, r);
	r->loop_wait = true;
	r->keep_client = false;
	r->framed = false;
	r->keep_remaining = 0;
	r->up_keeps = false;
	r->keep_close_due = 0;
	r->last_activity_ms = t->now_ms;
	r->dir[SIDE_DOWN].drained = false; /* the request may be in already: its edge came while held */
	loop_next_request(t, r);
}

/* loop_wait: a look (MSG_PEEK) at what the client has sent; a whole head is taken on or handed
 * back, a partial one waits for more (its next edge), the client's EOF ends the relay. */
static void loop_next_request(struct engine_thread *t, struct relay *r)
{
	struct direction *x = &r->dir[SIDE_DOWN];
	if (x->drained)
		return;
	char *buf = pool_get(t);
	if (buf == NULL) {
		eng_fail(t, r, SIDE_PROXY, ENOMEM, "malloc");
		return;
	}
	size_t want = r->loop_max_head + 1 < RELAY_BUF_SIZE ? r->loop_max_head + 1 : RELAY_BUF_SIZE;
	ssize_t n;
	do
		n = recv(r->fd[SIDE_DOWN], buf, want, MSG_PEEK);
	while (n < 0 && errno == EINTR);
	if (n <= 0) {
		int err = errno;
		pool_put(t, buf);
		if (n == 0) { /* the client closed between requests: the usual end of a kept-alive connection */
			r->loop_wait = false;
			r->park_up = true; /* the upstream is idle between two requests: reusable */
			first_end(r, SIDE_DOWN);
			finish(t, r);
		} else if (err == EAGAIN || err == EWOULDBLOCK) {
			x->drained = true;
		} else {
			eng_fail(t, r, SIDE_DOWN, err, "read");
		}
		return;
	}
	r->last_activity_ms = t->now_ms;
	if (!mpx_head_has_end(buf, (size_t)n, 0)) {
		pool_put(t, buf);
		if ((size_t)n >= want) {
			r->park_up = true; /* nothing of it went upstream */
			loop_give_back(t, r); /* too long a head for us: JS replies 431 */
		}
		else
			x->drained = true; /* the rest of the head raises the next edge */
		return;
	}
	size_t cap = (size_t)n + strlen(r->loop_authority) + strlen(r->resp_via) + 64;
	char *out = malloc(cap);
	struct mpx_request_info info = { 0 };
	size_t len = out != NULL ? mpx_http_rewrite_request(buf, (size_t)n, r->loop_authority, r->resp_via, r->loop_max_head, r->loop_max_fields, out, cap, &info) : 0;
	if (len == 0 || !info.client_keeps) {
		/* Not one for the loop (another method or host, a body, Connection: close...): a
		 * session serves it, and the idle upstream may serve another exchange here. */
		free(out);
		pool_put(t, buf);
		r->park_up = true;
		loop_give_back(t, r);
		return;
	}
	r->ex_method = strndup(buf, info.method_len);
	r->ex_target = strndup(buf + info.target_off, info.target_len);
	if (r->acc != NULL) { /* an acceptor's exchange keeps the head for JS (struct relay, req_head) */
		free(r->req_head);
		r->req_head_len = 0;
		if ((r->req_head = malloc(info.head_len)) != NULL) {
			memcpy(r->req_head, buf, info.head_len);
			r->req_head_len = info.head_len;
		}
	}
	pool_put(t, buf);
	r->loop_wait = false;
	r->ex_open = true;
	r->ex_started_ms = now_ms_precise();
	r->loop_pending_skip = info.head_len;
	r->keep_spoiled = false;
	r->head_state = HEAD_GATHERING;
	direction_release(t, x);
	x->buf = out;
	x->off = 0;
	x->len = len;
	x->pooled = false;
	pump(t, r, SIDE_DOWN); /* the head goes upstream now */
}

/* The response's first byte is in: the request head it answers leaves the client's socket. */
static void loop_consume_request(struct engine_thread *t, struct relay *r)
{
	r->skip_down = r->loop_pending_skip;
	r->loop_pending_skip = 0;
	r->dir[SIDE_DOWN].drained = false;
	pump(t, r, SIDE_DOWN);
}

/* Moves bytes for one direction (reading side `d`, writing side 1-d) until the source has
 * nothing (EAGAIN), the destination is full (short write / EAGAIN), EOF, or BURST buffers. */
static void pump(struct engine_thread *t, struct relay *r, int d)
{
	/* A pump's destination is read by JS, never by us (its events only mean "writable"). */
	if (r->pump && d != SIDE_DOWN)
		return;
	/* Nothing moves before the upstream's handshake is done; connect_done() pumps both ways. */
	if (r->connecting)
		return;
	if (r->loop_wait) {
		if (d == SIDE_DOWN)
			loop_next_request(t, r);
		return; /* the upstream's events while idle: on_event */
	}
	struct direction *x = &r->dir[d];
	int src = r->fd[d], dst = r->fd[1 - d];
	for (int i = 0; i < BURST && !r->finished;) {
		if (x->off < x->len) {
			size_t want_out = x->len - x->off;
			/* A pump never reads "to", so its second counter counts what reached "to" (head
			 * included): relayStats' fromUpstream for a pump id. JS asks it whether a body is
			 * wholly written before the completion report arrives (an origin answers as soon
			 * as it has the last byte). Counted *before* the send and corrected after: counted
			 * after, a thread pre-empted between send() and the count (the woken origin can
			 * take its core) let JS see the origin's answer with the body still "unwritten",
			 * and close a keep-alive client (seen once in ~10 full test runs). Over-counting
			 * for an instant only makes JS wait for the pump's report, which is always right. */
			if (r->pump)
				atomic_fetch_add_explicit(&r->dir[SIDE_UP].bytes, (uint64_t)want_out, memory_order_relaxed);
			ssize_t n = send(dst, x->buf + x->off, want_out, MSG_NOSIGNAL);
			if (r->pump && (n < 0 || (size_t)n < want_out))
				atomic_fetch_sub_explicit(&r->dir[SIDE_UP].bytes, (uint64_t)(want_out - (n < 0 ? 0 : (size_t)n)), memory_order_relaxed);
			if (n < 0) {
				if (errno == EINTR)
					continue;
				if (errno == EAGAIN || errno == EWOULDBLOCK)
					return; /* backpressure: dst's EPOLLOUT edge resumes us */
				eng_fail(t, r, 1 - d, errno, "write");
				return;
			}
			x->off += (size_t)n;
			r->last_activity_ms = t->now_ms;
			if (x->off < x->len)
				return; /* short write: the send buffer is full, same as EAGAIN */
			continue;
		}
		direction_release(t, x);
		if (d == SIDE_UP && r->head_state != HEAD_NONE) {
			/* A response head is rewritten first, here or by JS (see above). */
			if (!head_gather(t, r))
				return;
			continue;
		}
		if (x->drained && !x->eof) {
			if (d == SIDE_UP)
				keep_await_upstream_eof(t, r);
			return; /* see struct direction: until the source's next EPOLLIN edge */
		}
		if (r->pump && (x->eof || (!r->until_eof && r->remaining == 0))) {
			/* Everything read is written. Ending here, not at the next edge, is what keeps
			 * ET correct when "from" still holds the next message's bytes: the fds leave
			 * the epoll set now, so no edge is owed to anyone. */
			r->pump_end = x->eof && !r->until_eof ? PUMP_EOF : PUMP_DONE;
			finish(t, r);
			return;
		}
		if (x->eof) {
			if (!x->shut && d == SIDE_UP && holding(r)) {
				/* The response is over (struct relay, hold_down): the client is kept when it
				 * got exactly its body; otherwise it is closed, its bytes drained first. */
				if (keep_done(r)) {
					keep_client_now(t, r);
					return;
				}
				r->drop_down = true;
				r->dir[SIDE_DOWN].drained = false; /* its edges were spent while it was held */
			}
			if (!x->shut) {
				x->shut = true;
				/* Upstream EOF reaches the client: its subflows may start closing now. */
				if (1 - d == SIDE_DOWN)
					sample_downstream(r);
				/* Both ways at their end, and the relay holds the only fds (r->sole): finish's
				 * close() sends this FIN (nothing is left unread on either socket, so it is not
				 * an RST). Another relay's socket may have a JS fd open too, which would keep
				 * close() from sending anything: those shut down first. */
				if (r->dir[1 - d].shut && r->sole) {
					finish(t, r);
					return;
				}
				/* Its connect failed (never touched), or it has ended and the client's bytes
				 * are drained (drop_down): no FIN to pass on. */
				if ((r->up_dead || r->drop_down) && 1 - d == SIDE_UP) {
					if (r->dir[1 - d].shut)
						finish(t, r);
					return;
				}
				/* ENOTCONN: the peer is already gone; the other direction will say how. */
				if (shutdown(dst, SHUT_WR) < 0 && errno != ENOTCONN) {
					eng_fail(t, r, 1 - d, errno, "shutdown");
					return;
				}
				if (r->dir[1 - d].shut)
					finish(t, r);
				else if (r->drop_down && d == SIDE_UP)
					pump(t, r, SIDE_DOWN); /* the drain starts: read the client to its EOF */
			}
			return;
		}
		if (d == SIDE_DOWN && holding(r) && r->skip_down == 0)
			return; /* held: the client's next request waits in its socket */
		x->buf = pool_get(t);
		x->pooled = true;
		if (x->buf == NULL) {
			eng_fail(t, r, SIDE_PROXY, ENOMEM, "malloc");
			return;
		}
		size_t want = RELAY_BUF_SIZE;
		/* Never past a pump's limit: the bytes after it belong to the next message. */
		if (r->pump && !r->until_eof && r->remaining < want)
			want = (size_t)r->remaining;
		/* Held: only the request head JS already sent on, never a byte of the next request. */
		if (d == SIDE_DOWN && holding(r) && r->skip_down < want)
			want = (size_t)r->skip_down;
		ssize_t n = recv(src, x->buf, want, 0);
		if (n > 0) {
			x->off = 0;
			x->len = (size_t)n;
			if (d == SIDE_DOWN && r->skip_down > 0) { /* the request head JS already sent on */
				size_t k = r->skip_down < (uint64_t)n ? (size_t)r->skip_down : (size_t)n;
				x->off = k;
				r->skip_down -= k;
			}
			if (d == SIDE_DOWN && (r->up_dead || r->drop_down))
				x->off = x->len; /* read and dropped: see head_upstream_failed, struct relay */
			if (d == SIDE_UP && r->framed) /* its body and no more (struct relay) */
				x->len = x->off + keep_body_bytes(r, x->buf + x->off, x->len - x->off);
			/* Only for small reads (an exchange): under a bulk flow more bytes arrive while
			 * this buffer is written, and reading on at once (measured: 8 parallel downloads
			 * through the forward, 7.8 → 10.8 Gbit/s in one A/B) beats waiting for their edge. */
			x->drained = read_drained(r, d, (size_t)n, want);
			if (r->pump && !r->until_eof)
				r->remaining -= (uint64_t)n;
			/* A whole buffer's worth was queued: a bulk flow, whose queues are our delay. */
			if ((size_t)n == RELAY_BUF_SIZE && !x->queues_capped) {
				x->queues_capped = true;
				mpx_queue_cap(src, SO_RCVBUF);
				mpx_queue_cap(dst, SO_SNDBUF);
				mpx_notsent_cap(dst);
			}
			atomic_fetch_add_explicit(&x->bytes, (uint64_t)n, memory_order_relaxed);
			r->last_activity_ms = t->now_ms;
			i++;
			continue;
		}
		if (n == 0) {
			x->eof = true;
			first_end(r, d);
			if (d == SIDE_DOWN && !r->pump)
				sample_downstream(r); /* the client's DATA_FIN: sample before passing it on */
			continue; /* releases the buffer and passes the FIN on */
		}
		int err = errno;
		direction_release(t, x); /* nothing to read: an idle direction holds no buffer */
		if (err == EINTR)
			continue;
		if (err == EAGAIN || err == EWOULDBLOCK) {
			if (d == SIDE_UP)
				keep_await_upstream_eof(t, r);
			return;
		}
		eng_fail(t, r, d, err, "read");
		return;
	}
	if (!r->finished)
		mark_ready(t, r);
}


/* TCP_IS_MPTCP is 0 on a fallen-back MPTCP socket (the msk passes the getsockopt to its TCP
 * subflow), so this says what the wire carries, like the JS dialer's isMptcpSocket(). Kernels
 * before 5.16 do not know it: MPTCP_INFO then. */
static bool upstream_is_mptcp(const struct relay *r, int fd)
{
	if (r->up_plain_tcp)
		return false;
	int val = 0;
	socklen_t vl = sizeof(val);
	if (getsockopt(fd, SOL_TCP_LEVEL, TCP_IS_MPTCP, &val, &vl) == 0)
		return val != 0;
	if (errno != ENOPROTOOPT)
		return false;
	struct mpx_subflow_summary sum;
	int e = 0;
	const char *sc = NULL;
	return mpx_subflow_summary(fd, false, &sum, &e, &sc) == MPX_SUMMARY_OK;
}

/* fd[SIDE_UP]'s first EPOLLOUT/EPOLLERR/EPOLLHUP edge since its connect(2): did it work? */
static void connect_done(struct engine_thread *t, struct relay *r, uint32_t ev)
{
	int fd = r->fd[SIDE_UP];
	int err = 0;
	socklen_t len = sizeof(err);
	/* Writable with no error or hang-up is a finished handshake (tcp_poll reports EPOLLOUT
	 * only once established); anything else, SO_ERROR says. */
	if ((ev & (EPOLLOUT | EPOLLHUP | EPOLLERR)) != EPOLLOUT && getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
		err = errno;
	if (err == 0 && (ev & (EPOLLOUT | EPOLLHUP | EPOLLERR)) != EPOLLOUT) {
		/* No error recorded, yet not a plain "writable": a closed socket also polls EPOLLOUT
		 * with EPOLLHUP (tcp_poll). Connected means it has a peer; getpeername says ENOTCONN
		 * in SYN_SENT and CLOSE (inet_getname). */
		struct sockaddr_storage ss;
		socklen_t sl = sizeof(ss);
		if (getpeername(fd, (struct sockaddr *)&ss, &sl) != 0) {
			if (errno != ENOTCONN)
				err = errno;
			else if (ev & (EPOLLHUP | EPOLLERR))
				err = ECONNABORTED; /* closed without saying why */
			else
				return; /* still in its handshake: the next edge tells */
		}
	}
	if (err != 0) {
		if (head_upstream_failed(t, r, err, "connect", NULL))
			return;
		r->connect_failed = true;
		eng_fail(t, r, SIDE_UP, err, "connect");
		return;
	}
	r->connecting = false;
	r->last_activity_ms = t->now_ms;
	if (r->quiet) {
		r->up_mptcp = upstream_is_mptcp(r, fd); /* for its access line; JS hears nothing now */
	} else if (r->on_connected != NULL || r->acc != NULL) {
		struct msg *m = calloc(1, sizeof(*m));
		if (m != NULL) {
			m->kind = MSG_CONNECTED;
			m->acc = r->acc;
			m->on_connected = r->on_connected;
			r->on_connected = NULL;
			m->id = r->id;
			m->connect_ms = now_ms_precise() - r->started_precise_ms;
			m->up_mptcp = upstream_is_mptcp(r, fd);
			r->up_mptcp = m->up_mptcp; /* for the pool, if it is parked */
			eng_post(t, m);
		}
	}
	/* The client's bytes (and the head) waited for this; its EPOLLIN edges are spent. */
	pump(t, r, SIDE_DOWN);
	/* The upstream's side only if it has something: bytes or a hang-up that came with this
	 * edge (ep_send_events polls the current mask), or a head for the client. Anything the
	 * server sends later raises its own edge. Reading it blindly cost a recv() that said
	 * EAGAIN for nearly every connection. */
	if (!r->finished && ((ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) || has_output(&r->dir[SIDE_UP])))
		pump(t, r, SIDE_UP);
}

static void on_event(struct engine_thread *t, struct relay *r, int side, uint32_t ev)
{
	if (r->finished)
		return;
	if (r->connecting) {
		if (side == SIDE_UP) {
			if (ev & (EPOLLOUT | EPOLLERR | EPOLLHUP))
				connect_done(t, r, ev);
			return;
		}
		/* The client may reset meanwhile; anything else it does waits for the connect. Its
		 * hang-up is remembered, as on_event does below: this edge is spent, so the pump after
		 * the connect must read on to the EOF rather than stop at a short read and wait for
		 * an edge that will not come. */
		if (ev & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))
			r->hup[SIDE_DOWN] = true;
		if (ev & EPOLLERR) {
			int err = 0;
			socklen_t len = sizeof(err);
			if (getsockopt(r->fd[SIDE_DOWN], SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err != 0)
				eng_fail(t, r, SIDE_DOWN, err, "read");
		}
		return;
	}
	if (r->loop_wait && side == SIDE_UP && (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))) {
		/* An idle upstream that closes, resets or speaks out of turn is done for the loop. Not
		 * one whose edge is stale: a response in two segments raises two, and the first read
		 * may have taken both (the look says EAGAIN then). */
		char c;
		if ((ev & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) || recv(r->fd[SIDE_UP], &c, 1, MSG_PEEK | MSG_DONTWAIT) >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK))
			loop_give_back(t, r);
		return;
	}
	if (ev & EPOLLERR) {
		/* A reset sets sk_err and raises EPOLLERR|EPOLLHUP (tcp_reset → tcp_done); reading
		 * SO_ERROR catches it even when neither direction would touch this fd right now. */
		int err = 0;
		socklen_t len = sizeof(err);
		if (getsockopt(r->fd[side], SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err != 0) {
			if (side == SIDE_UP && head_upstream_failed(t, r, err, "read", NULL))
				return;
			/* A pump only ever writes its destination: name the call that would have failed. */
			eng_fail(t, r, side, err, r->pump && side == SIDE_UP ? "write" : "read");
			return;
		}
	}
	if (ev & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))
		r->hup[side] = true;
	if (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
		r->dir[side].drained = false; /* a new edge: there is something to read */
		pump(t, r, side);
	}
	if (ev & (EPOLLOUT | EPOLLHUP | EPOLLERR))
		pump(t, r, 1 - side);
}

static void end_by_proxy(struct engine_thread *t, struct relay *r, const char *reason);

void eng_add_relay(struct engine_thread *t, struct relay *r)
{
	r->next = t->relays;
	if (t->relays)
		t->relays->prev = r;
	t->relays = r;
	r->added = true;
	if (r->abort_pending || (r->quiet && atomic_load(&r->acc->aborted))) {
		end_by_proxy(t, r, "aborted");
		return;
	}
	for (int s = 0; s < 2; s++) {
		/* A pump waits for "from" to be readable and "to" to be writable, nothing else
		 * (EPOLLERR and EPOLLHUP are always reported): bytes the client pipelines on "to"
		 * are JS's and must not wake us. */
		uint32_t want = !r->pump ? EPOLLIN | EPOLLOUT | EPOLLRDHUP : s == SIDE_DOWN ? EPOLLIN | EPOLLRDHUP : EPOLLOUT;
		struct epoll_event ev = { .events = want | EPOLLET, .data.u64 = (uint64_t)(uintptr_t)r | (uint64_t)s };
		if (epoll_ctl(t->epfd, r->on_epoll[s] ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, r->fd[s], &ev) < 0) {
			int err = errno;
			if (s == 1)
				epoll_ctl(t->epfd, EPOLL_CTL_DEL, r->fd[0], NULL);
			eng_fail(t, r, SIDE_PROXY, err, "epoll_ctl");
			return;
		}
	}
	r->registered = true;
	r->last_activity_ms = t->now_ms;
	if (r->connecting && (t->connect_due == 0 || r->connect_deadline_ms < t->connect_due))
		t->connect_due = r->connect_deadline_ms;
	/* Heads go out first, and bytes may already wait in either socket. */
	pump(t, r, SIDE_DOWN);
	pump(t, r, SIDE_UP);
}

static void end_by_proxy(struct engine_thread *t, struct relay *r, const char *reason)
{
	first_end(r, SIDE_PROXY);
	if (r->reason == NULL)
		r->reason = reason;
	finish(t, r);
}


static void run_commands(struct engine_thread *t)
{
	uint64_t n;
	while (read(t->evfd, &n, sizeof(n)) > 0) {
	}
	pthread_mutex_lock(&t->cmd_lock);
	struct cmd *c = t->cmd_head;
	t->cmd_head = t->cmd_tail = NULL;
	pthread_mutex_unlock(&t->cmd_lock);
	while (c != NULL) {
		struct cmd *next = c->next;
		if (c->kind == CMD_ADD) {
			eng_add_relay(t, c->relay);
		} else if (c->kind == CMD_ABORT) {
			pthread_mutex_lock(&g_lock);
			struct relay *r = hash_find(c->id);
			pthread_mutex_unlock(&g_lock);
			/* Only this thread frees its relays, so r stays valid after the unlock. */
			if (r != NULL && r->thread == t) {
				if (r->added)
					end_by_proxy(t, r, "aborted");
				else
					r->abort_pending = true; /* its CMD_ADD is still on the way */
			}
		} else if (c->kind == CMD_ACC_ABORT) {
			/* acceptorAbortAll: its engine-only connections on this thread (engine-only.c). */
			for (struct relay *r = t->relays, *rn; r != NULL; r = rn) {
				rn = r->next; /* finish() moves r to the graveyard */
				if (r->quiet && r->acc->id == c->id && !r->finished)
					end_by_proxy(t, r, "aborted");
			}
		} else if (c->kind == CMD_ACC_ADD) {
			acceptor_add(t, c->acceptor);
		} else if (c->kind == CMD_ACC_STOP) {
			acceptor_close(t, c->acceptor);
		} else if (c->kind == CMD_ACC_ADOPT) {
			acceptor_adopt(t, c->acceptor, c);
		} else if (c->kind == CMD_HEAD) {
			head_done(t, c);
			head_cmd_free(c); /* what head_done did not take */
			c = next;
			continue;
		} else {
			t->stop = true;
		}
		free(c);
		c = next;
	}
}

/* Idle timeouts, and connect deadlines (exact: t->connect_due wakes the thread for them). */
static void sweep_idle(struct engine_thread *t, int64_t *min_idle)
{
	int64_t m = 0, due = 0;
	for (struct relay *r = t->relays, *next; r != NULL; r = next) {
		next = r->next;
		if (r->connecting) {
			/* Not idle while connecting: the connect has its own deadline. */
			if (t->now_ms >= r->connect_deadline_ms) {
				if (head_upstream_failed(t, r, ETIMEDOUT, "connect", "connect-timeout"))
					continue;
				r->connect_failed = true;
				r->reason = "connect-timeout";
				eng_fail(t, r, SIDE_UP, ETIMEDOUT, "connect");
			} else if (due == 0 || r->connect_deadline_ms < due) {
				due = r->connect_deadline_ms;
			}
			continue;
		}
		if (r->keep_close_due > 0 && keep_done(r)) {
			/* A kept client's upstream that did not close after the body: keep_client_now. */
			if (t->now_ms >= r->keep_close_due) {
				keep_client_now(t, r);
				continue;
			}
			if (m == 0 || KEEP_UPSTREAM_CLOSE_MS < m)
				m = KEEP_UPSTREAM_CLOSE_MS;
		}
		int64_t idle = r->loop_wait && r->loop_idle_ms > 0 ? r->loop_idle_ms : r->idle_ms;
		if (idle <= 0)
			continue;
		if (t->now_ms - r->last_activity_ms < idle) {
			if (m == 0 || idle < m)
				m = idle;
		} else if (r->loop_wait) {
			/* keepAliveTimeoutMs with no next request: closed quietly, as a session or the
			 * acceptor closes an idle kept-alive client (no error, ended by the proxy). */
			r->loop_wait = false;
			r->park_up = true;
			first_end(r, SIDE_PROXY);
			finish(t, r);
		} else if (!head_upstream_failed(t, r, ETIMEDOUT, "read", "idle")) {
			/* Waiting for a response head, JS answers in its place (a 504, head_upstream_failed),
			 * as the session does when an upstream says nothing for the idle timeout. */
			end_by_proxy(t, r, "idle");
		}
	}
	*min_idle = m;
	t->connect_due = due;
}

static void bury(struct engine_thread *t)
{
	while (t->graveyard != NULL) {
		struct relay *r = t->graveyard;
		t->graveyard = r->next;
		free(r);
	}
}

/* epoll_wait's timeout (ms; -1: none), shortened to `left` when that comes first; a deadline
 * already past is 0. */
static int sooner(int timeout, int64_t left)
{
	if (left < 0)
		left = 0;
	return timeout < 0 || left < timeout ? (int)left : timeout;
}

/* Kept clients wait on this thread's acceptors, or entries of theirs wait to be freed. */
static bool has_kept(const struct engine_thread *t)
{
	return t->kept_count > 0 || t->kept_graveyard != NULL;
}

static void *thread_main(void *arg)
{
	struct engine_thread *t = arg;
	struct epoll_event events[EPOLL_BATCH];
	int64_t *min_idle = &t->min_idle, *next_sweep = &t->next_sweep;
	t->now_ms = now_ms();
	while (!t->stop) {
		int timeout = -1;
		if (t->ready != NULL)
			timeout = 0;
		else if (t->relays != NULL) {
			/* Sweep often enough for the shortest idle timeout (a quarter of it), at most 1/s. */
			timeout = 1000;
			if (*min_idle > 0 && *min_idle / 4 < timeout)
				timeout = *min_idle / 4 < 5 ? 5 : (int)(*min_idle / 4);
			if (t->connect_due > 0)
				timeout = sooner(timeout, t->connect_due - now_ms());
		}
		if (timeout != 0) {
			if (t->accept_resume_ms > 0)
				timeout = sooner(timeout, t->accept_resume_ms - now_ms());
			if (t->pending != NULL)
				timeout = sooner(timeout, pending_due(t) - now_ms());
			if (has_kept(t))
				timeout = sooner(timeout, kept_due(t) - now_ms());
			if (t->out_head != NULL)
				timeout = sooner(timeout, flush_in_ms(t));
			if (park_due(t) > 0)
				timeout = sooner(timeout, park_due(t) - now_ms());
		}
		int n = epoll_wait(t->epfd, events, EPOLL_BATCH, timeout);
		t->now_ms = now_ms();
		if (n < 0 && errno != EINTR)
			break; /* EBADF/EINVAL: our own bug; the relays are ended below */
		for (int i = 0; i < n; i++) {
			if (events[i].data.u64 == 0) {
				run_commands(t);
				continue;
			}
			uintptr_t tag = (uintptr_t)events[i].data.u64;
			if ((tag & 7) == PARK_TAG)
				park_event(t, (struct parked_upstream *)(tag & ~(uintptr_t)7));
			else if ((tag & 3) == PEND_TAG)
				pending_event(t, (struct pending_client *)(tag & ~(uintptr_t)3));
			else if (tag & ACC_TAG)
				acceptor_run(t, (struct acceptor *)(tag & ~(uintptr_t)3));
			else
				on_event(t, (struct relay *)(tag & ~(uintptr_t)3), (int)(tag & 1), events[i].events);
		}
		struct relay *ready = t->ready;
		t->ready = NULL;
		while (ready != NULL) {
			struct relay *r = ready;
			ready = r->ready_next;
			r->on_ready = false;
			if (!r->finished) {
				pump(t, r, SIDE_DOWN);
				if (!r->finished)
					pump(t, r, SIDE_UP);
			}
		}
		if (t->relays != NULL && (t->now_ms >= *next_sweep || *min_idle == 0 || (t->connect_due > 0 && t->now_ms >= t->connect_due))) {
			sweep_idle(t, min_idle);
			*next_sweep = t->now_ms + (*min_idle > 0 && *min_idle / 4 < 1000 ? *min_idle / 4 : 1000);
		}
		if (t->accept_resume_ms > 0 && t->now_ms >= t->accept_resume_ms)
			acceptors_resume(t);
		if (t->pending != NULL)
			pending_sweep(t);
		if (has_kept(t))
			kept_sweep(t);
		if (park_due(t) > 0 && t->now_ms >= park_due(t))
			park_sweep(t);
		if (flush_in_ms(t) == 0)
			eng_flush(t);
		bury(t);
		bury_acceptors(t);
		park_bury(t);
	}
	/* Stopping: commands that raced the stop still hand us relays; end them all. */
	run_commands(t);
	while (t->acceptors != NULL)
		acceptor_close(t, t->acceptors);
	pending_free_all(t);
	kept_sweep(t); /* the acceptors closed their kept clients: their entries are freed here */
	while (t->relays != NULL)
		end_by_proxy(t, t->relays, "engine-stopped");
	park_close(t, NULL); /* after the relays: none of them parks into a freed pool */
	eng_flush(t);
	bury(t);
	bury_acceptors(t);
	return NULL;
}

bool eng_push_cmd(struct engine_thread *t, struct cmd *c)
{
	c->next = NULL;
	pthread_mutex_lock(&t->cmd_lock);
	if (t->cmd_tail)
		t->cmd_tail->next = c;
	else
		t->cmd_head = c;
	t->cmd_tail = c;
	pthread_mutex_unlock(&t->cmd_lock);
	uint64_t one = 1;
	/* EAGAIN only if the counter would overflow: the thread is already due to wake. */
	return write(t->evfd, &one, sizeof(one)) == sizeof(one) || errno == EAGAIN;
}

/* ---- JS side ---- */

void eng_delete_ref(napi_env env, napi_ref ref)
{
	if (ref != NULL)
		napi_delete_reference(env, ref); /* nothing useful to do if this fails */
}

bool eng_set_double(napi_env env, napi_value obj, const char *key, double v)
{
	napi_value js;
	NAPI_CALL_BOOL(env, napi_create_double(env, v, &js));
	return mpx_set_value(env, obj, key, js);
}

const char *eng_errno_code(int err, char namebuf[32])
{
	const char *code = strerrorname_np(err);
	if (code == NULL) {
		snprintf(namebuf, 32, "E%d", err);
		code = namebuf;
	}
	return code;
}

static bool eng_set_errno_fields(napi_env env, napi_value o, const struct msg *m)
{
	char namebuf[32];
	const char *code = eng_errno_code(m->err, namebuf);
	return mpx_set_i32(env, o, "errno", -m->err) && mpx_set_string(env, o, "code", code) &&
	       mpx_set_string(env, o, "syscall", m->syscall ? m->syscall : "relay");
}

/* { id, moved, endedBy: 'done'|'eof'|'error'|'idle'|'aborted'|'engine-stopped', durationMs,
 *   [errno, code, syscall, side: 'from'|'to'] } — moved counts bytes read from "from", the
 * head excluded; side is absent when the proxy itself failed (ENOMEM, epoll_ctl). */
static napi_value pump_summary_object(napi_env env, const struct msg *m)
{
	napi_value o;
	NAPI_CALL(env, napi_create_object(env, &o));
	if (!eng_set_double(env, o, "id", (double)m->id) || !mpx_set_u64(env, o, "moved", m->from_down) ||
	    !mpx_set_string(env, o, "endedBy", m->pump_ended_by) || !eng_set_double(env, o, "durationMs", m->duration_ms))
		return NULL;
	if (m->err != 0) {
		if (!eng_set_errno_fields(env, o, m))
			return NULL;
		if (m->ended_by != SIDE_PROXY && !mpx_set_string(env, o, "side", m->ended_by == SIDE_DOWN ? "from" : "to"))
			return NULL;
	}
	return o;
}

/* ---- positional arguments for JS callbacks (engine.h, struct ev_args) ---- */

void ev_push(struct ev_args *a, napi_status st)
{
	if (st == napi_ok && a->n < EV_ARGS_MAX)
		a->n++;
	else
		a->ok = false;
}

void ev_number(napi_env env, struct ev_args *a, double d)
{
	if (a->ok)
		ev_push(a, napi_create_double(env, d, &a->v[a->n]));
}

void ev_bool(napi_env env, struct ev_args *a, bool b)
{
	if (a->ok)
		ev_push(a, napi_get_boolean(env, b, &a->v[a->n]));
}

/* A string, or undefined for NULL. */
void ev_string(napi_env env, struct ev_args *a, const char *s)
{
	if (!a->ok)
		return;
	if (s == NULL)
		ev_push(a, napi_get_undefined(env, &a->v[a->n]));
	else
		ev_push(a, napi_create_string_utf8(env, s, NAPI_AUTO_LENGTH, &a->v[a->n]));
}

/* Two arguments: the address text (null when not IPv4/IPv6) and the port. */
void ev_address(napi_env env, struct ev_args *a, const struct sockaddr_storage *ss)
{
	char text[INET6_ADDRSTRLEN];
	uint16_t port = 0;
	bool known = mpx_sockaddr_text((const struct sockaddr *)ss, text, &port) > 0;
	if (!a->ok)
		return;
	if (known)
		ev_string(env, a, text);
	else
		ev_push(a, napi_get_null(env, &a->v[a->n]));
	ev_number(env, a, port);
}

/* errno (negative, as Node's), code, syscall. */
void ev_errno(napi_env env, struct ev_args *a, int err, const char *syscall)
{
	char namebuf[32];
	ev_number(env, a, -err);
	ev_string(env, a, eng_errno_code(err, namebuf));
	ev_string(env, a, syscall != NULL ? syscall : "relay");
}

/* A relay's end: id, fromDownstream, fromUpstream, endedBy (0 downstream, 1 upstream, 2 proxy),
 * durationMs, then errno, code, syscall (undefined ×3 without an error), reason, deniedBy,
 * connectFailed, the HTTP status of a head the engine rewrote (0: none), the subflow count
 * (-1: no sample) and paths. */
/* Two arguments: the method and target of a loop request (undefined ×2 for the first). */
static void exchange_args(napi_env env, struct ev_args *a, const struct msg *m)
{
	const char *method = m->data != NULL ? m->data : NULL;
	const char *target = method != NULL ? method + strlen(method) + 1 : NULL;
	ev_string(env, a, method);
	ev_string(env, a, target);
}

void eng_exchange_args(napi_env env, struct ev_args *a, const struct msg *m)
{
	exchange_args(env, a, m);
	ev_number(env, a, m->http_status);
	ev_number(env, a, (double)m->from_down);
	ev_number(env, a, (double)m->from_up);
	ev_number(env, a, m->duration_ms);
}

void ev_done_args(napi_env env, struct ev_args *a, const struct msg *m)
{
	ev_number(env, a, (double)m->id);
	ev_number(env, a, (double)m->from_down);
	ev_number(env, a, (double)m->from_up);
	ev_number(env, a, m->ended_by);
	ev_number(env, a, m->duration_ms);
	if (m->err != 0) {
		ev_errno(env, a, m->err, m->syscall);
	} else {
		ev_string(env, a, NULL);
		ev_string(env, a, NULL);
		ev_string(env, a, NULL);
	}
	ev_string(env, a, m->reason);
	ev_string(env, a, m->denied_by);
	ev_bool(env, a, m->connect_failed);
	ev_number(env, a, m->http_status);
	ev_number(env, a, m->subflows != NULL ? (double)m->subflows->count : -1);
	if (!a->ok)
		return;
	if (m->subflows == NULL) {
		ev_push(a, napi_get_undefined(env, &a->v[a->n]));
	} else {
		/* The paths as one string, '\n' between them (JS splits it): an array filled with
		 * napi_set_element cost more than the rest of the event (perf, short connections). */
		char joined[MPX_SUMMARY_MAX_PATHS * MPX_PATH_LEN];
		size_t len = 0;
		for (uint32_t i = 0; i < m->subflows->npaths; i++) {
			size_t n = strlen(m->subflows->paths[i]);
			if (i > 0)
				joined[len++] = '\n';
			memcpy(joined + len, m->subflows->paths[i], n);
			len += n;
		}
		ev_push(a, napi_create_string_latin1(env, joined, len, &a->v[a->n]));
	}
	ev_number(env, a, m->kept ? m->kept_fd : -1);
	ev_number(env, a, m->exchanges);
	ev_bool(env, a, m->ex_open);
	exchange_args(env, a, m);
}

void eng_call_ref_args(napi_env env, napi_ref ref, size_t argc, const napi_value *argv)
{
	napi_value fn, undefined, ignored;
	if (napi_get_reference_value(env, ref, &fn) != napi_ok || fn == NULL)
		return;
	if (napi_get_undefined(env, &undefined) != napi_ok)
		return;
	/* A throwing callback leaves its exception pending; Node reports it as uncaught. */
	napi_call_function(env, undefined, fn, argc, argv, &ignored);
}

void eng_call_ref(napi_env env, napi_ref ref, napi_value arg)
{
	eng_call_ref_args(env, ref, arg == NULL ? 0 : 1, &arg);
}


static void deliver(napi_env env, struct js_side *js, struct msg *m);

/* One batch of messages (flush), in the order the thread posted them. */
static void call_js(napi_env env, napi_value js_cb, void *context, void *data)
{
	(void)js_cb;
	struct js_side *js = context;
	struct msg *m = data;
	if (env == NULL) { /* the tsfn is being torn down with its env */
		msg_free_chain(m);
		return;
	}
	while (m != NULL) {
		struct msg *next = m->next;
		deliver(env, js, m);
		/* A callback that threw must not cost the rest of the batch their delivery: its
		 * exception goes where an uncaught one from a single call would (uncaughtException). */
		bool pending = false;
		napi_value exc;
		if (napi_is_exception_pending(env, &pending) == napi_ok && pending && napi_get_and_clear_last_exception(env, &exc) == napi_ok)
			napi_fatal_exception(env, exc);
		m = next;
	}
}

static void deliver(napi_env env, struct js_side *js, struct msg *m)
{
	if (m->acc != NULL) {
		acceptor_event(env, js, m);
		return;
	}
	if (m->kind == MSG_CONNECTED) {
		/* { id, connectMs, mptcp }; the relay stays live (its summary comes later). */
		napi_value o;
		if (napi_create_object(env, &o) == napi_ok && eng_set_double(env, o, "id", (double)m->id) &&
		    eng_set_double(env, o, "connectMs", m->connect_ms)) {
			napi_value b;
			if (napi_get_boolean(env, m->up_mptcp, &b) == napi_ok && mpx_set_value(env, o, "mptcp", b))
				eng_call_ref(env, m->on_connected, o);
		}
		eng_delete_ref(env, m->on_connected);
		eng_msg_free(m);
		return;
	}
	if (m->kind == MSG_HEAD) {
		/* onResponseHead(bytes | null, complete, errorCode | undefined, syscall | undefined) */
		napi_value argv[4];
		char namebuf[32];
		bool failed = m->err != 0;
		bool ok = (m->data != NULL ? napi_create_buffer_copy(env, m->data_len, m->data, NULL, &argv[0]) : napi_get_null(env, &argv[0])) == napi_ok &&
			  napi_get_boolean(env, m->complete, &argv[1]) == napi_ok &&
			  (failed ? napi_create_string_utf8(env, eng_errno_code(m->err, namebuf), NAPI_AUTO_LENGTH, &argv[2]) : napi_get_undefined(env, &argv[2])) == napi_ok &&
			  (failed ? napi_create_string_utf8(env, m->syscall != NULL ? m->syscall : "read", NAPI_AUTO_LENGTH, &argv[3]) : napi_get_undefined(env, &argv[3])) == napi_ok;
		if (ok)
			eng_call_ref_args(env, m->on_head, 4, argv);
		eng_msg_free(m);
		return;
	}
	if (m->kind == MSG_EXCHANGE) {
		/* onExchange(method | undefined, target | undefined, status, fromDownstream, fromUpstream, durationMs) */
		struct ev_args a = { .ok = true };
		eng_exchange_args(env, &a, m);
		if (a.ok)
			eng_call_ref_args(env, m->on_exchange, a.n, a.v);
		eng_msg_free(m);
		return;
	}
	if (m->pump) {
		napi_value summary = pump_summary_object(env, m);
		if (summary != NULL)
			eng_call_ref(env, m->on_done, summary);
	} else {
		/* As an acceptor's 'done' (ev_done_args), decoded by decodeRelaySummary in JS. */
		struct ev_args a = { .ok = true };
		ev_done_args(env, &a, m);
		if (a.ok) {
			m->kept = false; /* a kept client fd is JS's now */
			eng_call_ref_args(env, m->on_done, a.n, a.v);
		}
	}
	eng_delete_ref(env, m->on_done);
	eng_delete_ref(env, m->on_connected);
	eng_delete_ref(env, m->on_head);
	eng_delete_ref(env, m->on_exchange);
	eng_msg_free(m);
	if (js->live > 0 && --js->live == 0 && !js->released)
		napi_unref_threadsafe_function(env, js->tsfn);
}

static void tsfn_finalize(napi_env env, void *data, void *hint)
{
	(void)env;
	(void)hint;
	free(data);
}

static void stop_threads(bool report)
{
	for (int i = 0; i < g_engine.nthreads; i++) {
		struct engine_thread *t = &g_engine.threads[i];
		t->report = report;
		struct cmd *c = calloc(1, sizeof(*c));
		if (c != NULL) {
			c->kind = CMD_STOP;
			eng_push_cmd(t, c);
		} else {
			t->stop = true; /* racy but only reached when out of memory; epoll_wait wakes within 1 s */
		}
	}
	for (int i = 0; i < g_engine.nthreads; i++) {
		struct engine_thread *t = &g_engine.threads[i];
		pthread_join(t->tid, NULL);
		close(t->epfd);
		close(t->evfd);
		while (t->pool_len > 0)
			free(t->pool[--t->pool_len]);
		pthread_mutex_destroy(&t->cmd_lock);
	}
	g_engine.nthreads = 0;
	g_engine.running = false;
	g_engine.acceptors = NULL; /* the threads closed and freed them */
}

static void env_cleanup(void *arg)
{
	(void)arg;
	if (g_engine.running)
		stop_threads(false);
	g_engine.env = NULL;
	g_engine.cleanup_hook = false;
	/* The tsfn and its js_side are finalized by the env itself. */
	g_engine.js = NULL;
}

static void throw_errno_msg(napi_env env, int err, const char *syscall)
{
	mpx_throw_errno(env, err, syscall);
}

bool eng_start_engine(napi_env env)
{
	if (g_engine.running)
		return true;
	struct js_side *js = calloc(1, sizeof(*js));
	if (js == NULL) {
		throw_errno_msg(env, ENOMEM, "malloc");
		return false;
	}
	napi_value name;
	NAPI_CALL_BOOL(env, napi_create_string_utf8(env, "mptcp-proxy native relay", NAPI_AUTO_LENGTH, &name));
	napi_status st = napi_create_threadsafe_function(env, NULL, NULL, name, 0, 1, NULL, tsfn_finalize, js, call_js, &js->tsfn);
	if (st != napi_ok) {
		free(js);
		mpx_throw_napi_failure(env, st, "napi_create_threadsafe_function");
		return false;
	}
	/* Idle until the first relay: never hold the event loop open by ourselves. */
	NAPI_CALL_BOOL(env, napi_unref_threadsafe_function(env, js->tsfn));
	if (!g_engine.cleanup_hook) {
		NAPI_CALL_BOOL(env, napi_add_env_cleanup_hook(env, env_cleanup, NULL));
		g_engine.cleanup_hook = true;
	}
	g_engine.env = env;
	g_engine.js = js;

	/* Engine threads take no signals: they belong to Node's main thread. */
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	int want = g_engine.want_threads;
	int err = 0;
	const char *what = NULL;
	for (g_engine.nthreads = 0; g_engine.nthreads < want; g_engine.nthreads++) {
		struct engine_thread *t = &g_engine.threads[g_engine.nthreads];
		memset(t, 0, sizeof(*t));
		t->js = js;
		t->report = true;
		t->epfd = epoll_create1(EPOLL_CLOEXEC);
		if (t->epfd < 0) {
			err = errno, what = "epoll_create1";
			break;
		}
		t->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
		if (t->evfd < 0) {
			err = errno, what = "eventfd";
			close(t->epfd);
			break;
		}
		struct epoll_event ev = { .events = EPOLLIN, .data.u64 = 0 };
		if (epoll_ctl(t->epfd, EPOLL_CTL_ADD, t->evfd, &ev) < 0) {
			err = errno, what = "epoll_ctl";
			close(t->epfd);
			close(t->evfd);
			break;
		}
		pthread_mutex_init(&t->cmd_lock, NULL);
		int rc = pthread_create(&t->tid, NULL, thread_main, t);
		if (rc != 0) {
			err = rc, what = "pthread_create";
			pthread_mutex_destroy(&t->cmd_lock);
			close(t->epfd);
			close(t->evfd);
			break;
		}
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	g_engine.running = true;
	if (err != 0) {
		stop_threads(true);
		js->released = true;
		napi_release_threadsafe_function(js->tsfn, napi_tsfn_release);
		g_engine.js = NULL;
		throw_errno_msg(env, err, what);
		return false;
	}
	return true;
}

static bool arg_head(napi_env env, napi_value v, const char *name, char **out, size_t *len)
{
	napi_valuetype t;
	*out = NULL;
	*len = 0;
	NAPI_CALL_BOOL(env, napi_typeof(env, v, &t));
	if (t == napi_null || t == napi_undefined)
		return true;
	char msg[120];
	snprintf(msg, sizeof(msg), "The \"%s\" argument must be a Buffer or null", name);
	const uint8_t *data = NULL;
	size_t n = 0;
	if (!mpx_arg_buffer(env, v, msg, &data, &n))
		return false;
	if (n == 0)
		return true;
	*out = malloc(n);
	if (*out == NULL) {
		throw_errno_msg(env, ENOMEM, "malloc");
		return false;
	}
	memcpy(*out, data, n);
	*len = n;
	return true;
}

bool eng_arg_function(napi_env env, napi_value v, const char *name, bool optional, napi_value *out)
{
	napi_valuetype t;
	NAPI_CALL_BOOL(env, napi_typeof(env, v, &t));
	if (optional && (t == napi_undefined || t == napi_null)) {
		*out = NULL;
		return true;
	}
	if (t != napi_function) {
		char msg[120];
		snprintf(msg, sizeof(msg), "The \"%s\" argument must be of type function", name);
		napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", msg);
		return false;
	}
	*out = v;
	return true;
}

bool eng_set_nonblocking(napi_env env, int fd)
{
	int flags = fcntl(fd, F_GETFL);
	/* dups of libuv's fds and the dialer's sockets are non-blocking already: one syscall then */
	if (flags < 0 || ((flags & O_NONBLOCK) == 0 && fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0)) {
		throw_errno_msg(env, errno, "fcntl(O_NONBLOCK)");
		return false;
	}
	return true;
}

static void free_relay_args(napi_env env, struct relay *r)
{
	for (int s = 0; s < 2; s++)
		free(r->dir[s].buf);
	eng_delete_ref(env, r->on_done);
	eng_delete_ref(env, r->on_connected);
	eng_delete_ref(env, r->on_head);
	eng_delete_ref(env, r->on_exchange);
	free(r->resp_via);
	free(r->loop_authority);
	free(r);
}

static napi_value submit(napi_env env, struct relay *r, napi_value on_done);

bool eng_arg_number(napi_env env, napi_value v, const char *name, double *out)
{
	napi_valuetype t;
	NAPI_CALL_BOOL(env, napi_typeof(env, v, &t));
	if (t != napi_number) {
		char msg[120];
		snprintf(msg, sizeof(msg), "The \"%s\" argument must be of type number", name);
		napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", msg);
		return false;
	}
	NAPI_CALL_BOOL(env, napi_get_value_double(env, v, out));
	return true;
}

/* The part relayStart and pumpStart share: the engine's one-env rule, the two fds (argv[0],
 * argv[1], named a and b in errors) made non-blocking, and a new relay on them. NULL with a JS
 * exception pending on failure; the fds stay the caller's. */
static struct relay *new_relay(napi_env env, napi_value *argv, const char *a, const char *b, double idle, bool nonblocking)
{
	if (g_engine.env != NULL && g_engine.env != env) {
		napi_throw_error(env, "ERR_MPTCP_NATIVE_RELAY_ENV", "the native relay engine serves one Node environment per process (the main thread)");
		return NULL;
	}
	int32_t fd_a, fd_b;
	if (!mpx_arg_int32(env, argv[0], a, &fd_a) || !mpx_arg_int32(env, argv[1], b, &fd_b))
		return NULL;
	if (fd_a < 0 || fd_b < 0 || fd_a == fd_b) {
		char msg[120];
		snprintf(msg, sizeof(msg), "%s and %s must be two different open file descriptors", a, b);
		napi_throw_range_error(env, "ERR_OUT_OF_RANGE", msg);
		return NULL;
	}
	if (!nonblocking && (!eng_set_nonblocking(env, fd_a) || !eng_set_nonblocking(env, fd_b)))
		return NULL;
	struct relay *r = calloc(1, sizeof(*r));
	if (r == NULL) {
		mpx_throw_errno(env, ENOMEM, "malloc");
		return NULL;
	}
	r->fd[SIDE_DOWN] = fd_a;
	r->fd[SIDE_UP] = fd_b;
	r->ended_by = SIDE_NONE;
	r->idle_ms = idle > 0 ? (int64_t)idle : 0;
	r->started_ms = now_ms();
	r->started_precise_ms = now_ms_precise();
	return r;
}

/* 2^53: the largest length a JS number carries exactly. */
#define MAX_SAFE_LENGTH 9007199254740992.0


/* relayStart's options (undefined: none): { skipDown?: bytes, onResponseHead?: function,
 * responseVia?: string, soleOwner?: the fds are the only ones on their sockets and non-blocking
 * already (handed over by an acceptor, never wrapped by Node), upPlainTcp?: fdUp is an
 * IPPROTO_TCP socket }. */
struct relay_opts {
	double skip_down;
	napi_value on_head, on_exchange;
	bool sole, up_plain_tcp, hold, head_request;
	char via[MPX_HTTP_VIA_MAX]; /* responseVia, "" if none */
	char loop_authority[MPX_HTTP_AUTHORITY_MAX]; /* "" if none */
	double loop_max_head, loop_max_fields, loop_idle_ms;
};

static bool opt_flag(napi_env env, napi_value opts, const char *key, bool *out)
{
	napi_value v;
	napi_valuetype t;
	NAPI_CALL_BOOL(env, napi_get_named_property(env, opts, key, &v));
	NAPI_CALL_BOOL(env, napi_typeof(env, v, &t));
	return t == napi_undefined || mpx_arg_bool(env, v, key, out);
}

static bool relay_options(napi_env env, napi_value opts, struct relay_opts *o)
{
	napi_valuetype t;
	NAPI_CALL_BOOL(env, napi_typeof(env, opts, &t));
	if (t == napi_undefined || t == napi_null)
		return true;
	if (t != napi_object) {
		napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "The \"options\" argument must be an object");
		return false;
	}
	napi_value v;
	NAPI_CALL_BOOL(env, napi_get_named_property(env, opts, "skipDown", &v));
	NAPI_CALL_BOOL(env, napi_typeof(env, v, &t));
	if (t != napi_undefined) {
		if (!eng_arg_number(env, v, "options.skipDown", &o->skip_down))
			return false;
		if (!(o->skip_down >= 0 && o->skip_down <= MAX_SAFE_LENGTH && o->skip_down == (double)(uint64_t)o->skip_down)) {
			napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "options.skipDown must be an integer from 0 to 2^53");
			return false;
		}
	}
	NAPI_CALL_BOOL(env, napi_get_named_property(env, opts, "onResponseHead", &v));
	if (!eng_arg_function(env, v, "options.onResponseHead", true, &o->on_head) || !opt_flag(env, opts, "soleOwner", &o->sole) ||
	    !opt_flag(env, opts, "upPlainTcp", &o->up_plain_tcp) || !opt_flag(env, opts, "holdClient", &o->hold))
		return false;
	if (!opt_flag(env, opts, "headRequest", &o->head_request))
		return false;
	NAPI_CALL_BOOL(env, napi_get_named_property(env, opts, "responseVia", &v));
	NAPI_CALL_BOOL(env, napi_typeof(env, v, &t));
	if (t != napi_undefined && !mpx_arg_string(env, v, "options.responseVia", o->via, sizeof(o->via)))
		return false;
	/* The keep-alive loop: loopAuthority, with its limits and onExchange. */
	NAPI_CALL_BOOL(env, napi_get_named_property(env, opts, "loopAuthority", &v));
	NAPI_CALL_BOOL(env, napi_typeof(env, v, &t));
	if (t == napi_undefined)
		return true;
	if (!mpx_arg_string(env, v, "options.loopAuthority", o->loop_authority, sizeof(o->loop_authority)))
		return false;
	static const char *const keys[] = { "loopMaxHeadBytes", "loopMaxFields", "loopIdleMs" };
	double *vals[] = { &o->loop_max_head, &o->loop_max_fields, &o->loop_idle_ms };
	for (size_t i = 0; i < 3; i++) {
		NAPI_CALL_BOOL(env, napi_get_named_property(env, opts, keys[i], &v));
		if (!eng_arg_number(env, v, keys[i], vals[i]))
			return false;
		if (!(*vals[i] >= 1 && *vals[i] <= 2147483647.0)) {
			char msg[120];
			snprintf(msg, sizeof(msg), "options.%s must be from 1 to 2^31-1", keys[i]);
			napi_throw_range_error(env, "ERR_OUT_OF_RANGE", msg);
			return false;
		}
	}
	NAPI_CALL_BOOL(env, napi_get_named_property(env, opts, "onExchange", &v));
	return eng_arg_function(env, v, "options.onExchange", false, &o->on_exchange);
}

/* On success the engine owns both fds and closes them; on a throw the caller still does.
 * connectTimeoutMs > 0: fdUp's connect(2) is in progress (see "Connecting upstreams"); the
 * engine completes it within that time, then calls onConnected({ id, connectMs, mptcp }). */
napi_value mpx_js_relay_start(napi_env env, napi_callback_info info)
{
	napi_value argv[10];
	size_t argc = 10;
	NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
	if (argc < 6) {
		napi_throw_type_error(env, "ERR_MISSING_ARGS", "relayStart(fdDown, fdUp, headToUp, headToDown, idleTimeoutMs, onDone[, sampleDownstream[, connectTimeoutMs[, onConnected[, options]]]])");
		return NULL;
	}
	double idle, connect_timeout = 0;
	napi_value on_done, on_connected = NULL;
	bool sample_down = false;
	napi_valuetype t;
	if (!eng_arg_number(env, argv[4], "idleTimeoutMs", &idle) || !eng_arg_function(env, argv[5], "onDone", false, &on_done))
		return NULL;
	/* napi_get_cb_info fills missing arguments with undefined, so argv[6..8] are always set. */
	NAPI_CALL(env, napi_typeof(env, argv[6], &t));
	if (t != napi_undefined && t != napi_null && !mpx_arg_bool(env, argv[6], "sampleDownstream", &sample_down))
		return NULL;
	NAPI_CALL(env, napi_typeof(env, argv[7], &t));
	if (t != napi_undefined && t != napi_null && !eng_arg_number(env, argv[7], "connectTimeoutMs", &connect_timeout))
		return NULL;
	if (!(connect_timeout >= 0 && connect_timeout <= 2147483647.0)) { /* also NaN */
		napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "connectTimeoutMs must be from 0 to 2^31-1 (0: fdUp is connected)");
		return NULL;
	}
	if (!eng_arg_function(env, argv[8], "onConnected", true, &on_connected))
		return NULL;
	struct relay_opts o = { 0 };
	if (!relay_options(env, argv[9], &o))
		return NULL;
	struct relay *r = new_relay(env, argv, "fdDown", "fdUp", idle, o.sole);
	if (r == NULL)
		return NULL;
	r->sample_down = sample_down;
	r->skip_down = (uint64_t)o.skip_down;
	r->sole = o.sole;
	r->up_plain_tcp = o.up_plain_tcp;
	r->hold_down = o.hold && o.on_head != NULL; /* only an exchange can keep its client */
	r->client_keeps = r->hold_down;
	r->head_request = o.head_request;
	r->ex_open = o.on_head != NULL;
	if (o.via[0] != '\0' && o.on_head != NULL && (r->resp_via = strdup(o.via)) == NULL) {
		free_relay_args(env, r);
		return mpx_throw_errno(env, ENOMEM, "malloc");
	}
	/* The loop needs a held client and the engine's own head rewrites. */
	if (o.loop_authority[0] != '\0' && r->hold_down && r->resp_via != NULL) {
		r->loop_max_head = (size_t)o.loop_max_head;
		r->loop_max_fields = (size_t)o.loop_max_fields;
		r->loop_idle_ms = (int64_t)o.loop_idle_ms;
		napi_status st = napi_create_reference(env, o.on_exchange, 1, &r->on_exchange);
		if (st != napi_ok) {
			free_relay_args(env, r);
			mpx_throw_napi_failure(env, st, "napi_create_reference");
			return NULL;
		}
		if ((r->loop_authority = strdup(o.loop_authority)) == NULL) {
			free_relay_args(env, r);
			return mpx_throw_errno(env, ENOMEM, "malloc");
		}
	}
	if (o.on_head != NULL) {
		napi_status st = napi_create_reference(env, o.on_head, 1, &r->on_head);
		if (st != napi_ok) {
			free_relay_args(env, r);
			mpx_throw_napi_failure(env, st, "napi_create_reference");
			return NULL;
		}
		r->head_state = HEAD_GATHERING;
	}
	if (connect_timeout > 0) {
		r->connecting = true;
		r->connect_deadline_ms = r->started_ms + (int64_t)connect_timeout;
		if (on_connected != NULL) {
			napi_status st = napi_create_reference(env, on_connected, 1, &r->on_connected);
			if (st != napi_ok) {
				free_relay_args(env, r);
				mpx_throw_napi_failure(env, st, "napi_create_reference");
				return NULL;
			}
		}
	}
	/* A head is written before anything read from the socket it precedes, and counted as
	 * read from that side (the JS relay counts it the same way). */
	if (!arg_head(env, argv[2], "headToUp", &r->dir[SIDE_DOWN].buf, &r->dir[SIDE_DOWN].len) ||
	    !arg_head(env, argv[3], "headToDown", &r->dir[SIDE_UP].buf, &r->dir[SIDE_UP].len)) {
		free_relay_args(env, r);
		return NULL;
	}
	for (int s = 0; s < 2; s++)
		atomic_init(&r->dir[s].bytes, r->dir[s].len);
	return submit(env, r, on_done);
}

/* Hands a filled-in relay (or pump) to an engine thread and returns its id; on a throw, r
 * and its head are freed and the fds are still the caller's. */
static napi_value submit(napi_env env, struct relay *r, napi_value on_done)
{
	napi_status st = napi_create_reference(env, on_done, 1, &r->on_done);
	if (st != napi_ok) {
		free_relay_args(env, r);
		mpx_throw_napi_failure(env, st, "napi_create_reference");
		return NULL;
	}
	napi_value id;
	struct cmd *c = calloc(1, sizeof(*c));
	uint64_t rid = atomic_fetch_add(&g_next_id, 1); /* acceptors' threads take ids too */
	if (c == NULL || napi_create_double(env, (double)rid, &id) != napi_ok || !eng_start_engine(env)) {
		free(c);
		free_relay_args(env, r);
		bool pending = false;
		if (napi_is_exception_pending(env, &pending) == napi_ok && !pending)
			mpx_throw_errno(env, ENOMEM, "malloc");
		return NULL;
	}
	if (g_engine.js->live++ == 0) {
		st = napi_ref_threadsafe_function(env, g_engine.js->tsfn);
		if (st != napi_ok) {
			g_engine.js->live--;
			free(c);
			free_relay_args(env, r);
			mpx_throw_napi_failure(env, st, "napi_ref_threadsafe_function");
			return NULL;
		}
	}
	r->id = rid;
	r->thread = &g_engine.threads[g_engine.next_thread++ % (unsigned)g_engine.nthreads];
	eng_hash_insert(r);
	c->kind = CMD_ADD;
	c->relay = r;
	/* From here the thread owns r; a failed wake-up only delays it to the next event. */
	eng_push_cmd(r->thread, c);
	return id;
}


/* pumpStart(fdFrom, fdTo, head, length, idleTimeoutMs, onDone) → id. length = bytes still
 * to read from fdFrom after head (head is written to fdTo first), or -1 for "until EOF".
 * On success the engine owns both fds (dups; it closes them, never shuts them down); on a
 * throw the caller still does. */
napi_value mpx_js_pump_start(napi_env env, napi_callback_info info)
{
	napi_value argv[6];
	size_t argc = 6;
	NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
	if (argc < 6) {
		napi_throw_type_error(env, "ERR_MISSING_ARGS", "pumpStart(fdFrom, fdTo, head, length, idleTimeoutMs, onDone)");
		return NULL;
	}
	double length, idle;
	napi_value on_done;
	if (!eng_arg_number(env, argv[3], "length", &length))
		return NULL;
	if (!(length == -1 || (length >= 0 && length <= MAX_SAFE_LENGTH && length == (double)(uint64_t)length))) {
		napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "length must be -1 (until EOF) or an integer from 0 to 2^53");
		return NULL;
	}
	if (!eng_arg_number(env, argv[4], "idleTimeoutMs", &idle) || !eng_arg_function(env, argv[5], "onDone", false, &on_done))
		return NULL;
	struct relay *r = new_relay(env, argv, "fdFrom", "fdTo", idle, false);
	if (r == NULL)
		return NULL;
	r->pump = true;
	r->until_eof = length < 0;
	r->remaining = length < 0 ? 0 : (uint64_t)length;
	/* The head is not counted: `moved` is what the engine read from fdFrom. */
	if (!arg_head(env, argv[2], "head", &r->dir[SIDE_DOWN].buf, &r->dir[SIDE_DOWN].len)) {
		free_relay_args(env, r);
		return NULL;
	}
	for (int s = 0; s < 2; s++)
		atomic_init(&r->dir[s].bytes, 0);
	return submit(env, r, on_done);
}

bool eng_arg_id(napi_env env, napi_value v, uint64_t *out)
{
	napi_valuetype t;
	double d;
	NAPI_CALL_BOOL(env, napi_typeof(env, v, &t));
	if (t != napi_number) {
		napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "The \"id\" argument must be of type number");
		return false;
	}
	NAPI_CALL_BOOL(env, napi_get_value_double(env, v, &d));
	*out = d > 0 ? (uint64_t)d : 0;
	return true;
}

napi_value mpx_js_relay_stats(napi_env env, napi_callback_info info)
{
	napi_value argv[1];
	uint64_t id;
	if (!mpx_get_args(env, info, 1, argv) || !eng_arg_id(env, argv[0], &id))
		return NULL;
	uint64_t down = 0, up = 0;
	pthread_mutex_lock(&g_lock);
	struct relay *r = hash_find(id);
	if (r != NULL) {
		down = atomic_load_explicit(&r->dir[SIDE_DOWN].bytes, memory_order_relaxed);
		up = atomic_load_explicit(&r->dir[SIDE_UP].bytes, memory_order_relaxed);
	}
	pthread_mutex_unlock(&g_lock);
	napi_value out;
	if (r == NULL) {
		NAPI_CALL(env, napi_get_null(env, &out));
		return out;
	}
	NAPI_CALL(env, napi_create_object(env, &out));
	if (!mpx_set_u64(env, out, "fromDownstream", down) || !mpx_set_u64(env, out, "fromUpstream", up))
		return NULL;
	return out;
}

napi_value mpx_js_relay_abort(napi_env env, napi_callback_info info)
{
	napi_value argv[1];
	uint64_t id;
	if (!mpx_get_args(env, info, 1, argv) || !eng_arg_id(env, argv[0], &id))
		return NULL;
	pthread_mutex_lock(&g_lock);
	struct relay *r = hash_find(id);
	struct engine_thread *t = r != NULL ? r->thread : NULL;
	pthread_mutex_unlock(&g_lock);
	bool queued = false;
	if (t != NULL) {
		struct cmd *c = calloc(1, sizeof(*c));
		if (c == NULL)
			return mpx_throw_errno(env, ENOMEM, "malloc");
		c->kind = CMD_ABORT;
		c->id = id;
		queued = eng_push_cmd(t, c);
	}
	napi_value out;
	NAPI_CALL(env, napi_get_boolean(env, queued, &out));
	return out;
}

/* relayHeadDone(id, out, then, carry, keepBody) → boolean: JS's answer to onResponseHead (see
 * "response-head hook"). out (Buffer or null) is written to the client in place of the bytes JS
 * was given; then: 0 relay the rest as it comes, 1 gather another head starting with carry
 * (after a 1xx), 2 nothing more from the upstream (the client gets a FIN after out), 3 relay
 * keepBody more bytes and keep the client (a holdClient relay: struct relay; otherwise as 0),
 * 4 relay a body of keepBody bytes (-1: chunked) starting with carry, then close the client (an
 * acceptor's exchange whose closing client's upstream was asked to stay: frame_up; otherwise
 * as 0). keepBody is ignored (pass -1) for 0–2. False when the relay has ended meanwhile (its
 * summary says how). */
napi_value mpx_js_relay_head_done(napi_env env, napi_callback_info info)
{
	napi_value argv[5];
	uint64_t id;
	double then, keep_body = -1;
	if (!mpx_get_args(env, info, 5, argv) || !eng_arg_id(env, argv[0], &id) || !eng_arg_number(env, argv[2], "then", &then) ||
	    !eng_arg_number(env, argv[4], "keepBody", &keep_body))
		return NULL;
	if (!(then == HEAD_THEN_RAW || then == HEAD_THEN_AGAIN || then == HEAD_THEN_END || then == HEAD_THEN_KEEP || then == HEAD_THEN_FRAMED)) {
		napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "then must be 0 (relay), 1 (another head), 2 (end), 3 (keep the client) or 4 (a framed body)");
		return NULL;
	}
	if ((then == HEAD_THEN_KEEP || (then == HEAD_THEN_FRAMED && keep_body != -1)) &&
	    !(keep_body >= 0 && keep_body <= MAX_SAFE_LENGTH && keep_body == (double)(uint64_t)keep_body)) {
		napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "keepBody must be an integer from 0 to 2^53 with then 3, or -1 with then 4");
		return NULL;
	}
	struct cmd *c = calloc(1, sizeof(*c));
	if (c == NULL)
		return mpx_throw_errno(env, ENOMEM, "malloc");
	c->kind = CMD_HEAD;
	c->id = id;
	c->then = (int)then;
	c->keep_body = then == HEAD_THEN_KEEP ? (uint64_t)keep_body : then == HEAD_THEN_FRAMED ? (keep_body < 0 ? FRAMED_CHUNKED : (uint64_t)keep_body) : 0;
	if (!arg_head(env, argv[1], "out", &c->out, &c->out_len) || !arg_head(env, argv[3], "carry", &c->carry, &c->carry_len)) {
		head_cmd_free(c);
		return NULL;
	}
	if (c->carry_len > HEAD_MAX) {
		head_cmd_free(c);
		napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "carry must be at most 256 KiB");
		return NULL;
	}
	pthread_mutex_lock(&g_lock);
	struct relay *r = hash_find(id);
	struct engine_thread *t = r != NULL ? r->thread : NULL;
	pthread_mutex_unlock(&g_lock);
	bool queued = t != NULL && eng_push_cmd(t, c);
	if (!queued)
		head_cmd_free(c);
	napi_value out;
	NAPI_CALL(env, napi_get_boolean(env, queued, &out));
	return out;
}

napi_value mpx_js_relay_set_threads(napi_env env, napi_callback_info info)
{
	napi_value argv[1];
	int32_t n;
	if (!mpx_get_args(env, info, 1, argv) || !mpx_arg_int32(env, argv[0], "threads", &n))
		return NULL;
	if (n < 1 || n > MAX_THREADS) {
		char msg[96];
		snprintf(msg, sizeof(msg), "threads must be between 1 and %d, got %d", MAX_THREADS, n);
		napi_throw_range_error(env, "ERR_OUT_OF_RANGE", msg);
		return NULL;
	}
	g_engine.want_threads = n;
	return NULL;
}

/* relaySetQueueCap(floorBytes, rateMbit, notsentBytes): queue-cap.c's parameters; floorBytes 0
 * turns the buffer cap off, notsentBytes 0 the TCP_NOTSENT_LOWAT one. */
napi_value mpx_js_relay_set_queue_cap(napi_env env, napi_callback_info info)
{
	napi_value argv[3];
	int32_t floor_bytes, rate, notsent;
	if (!mpx_get_args(env, info, 3, argv) || !mpx_arg_int32(env, argv[0], "floorBytes", &floor_bytes) ||
	    !mpx_arg_int32(env, argv[1], "rateMbit", &rate) || !mpx_arg_int32(env, argv[2], "notsentBytes", &notsent))
		return NULL;
	if (floor_bytes < 0 || rate < 0 || notsent < 0) {
		napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "floorBytes, rateMbit and notsentBytes must be >= 0");
		return NULL;
	}
	atomic_store_explicit(&g_queue_cap.floor_bytes, (uint32_t)floor_bytes, memory_order_relaxed);
	atomic_store_explicit(&g_queue_cap.rate_mbit, (uint32_t)rate, memory_order_relaxed);
	atomic_store_explicit(&g_queue_cap.notsent_bytes, (uint32_t)notsent, memory_order_relaxed);
	return NULL;
}

napi_value mpx_js_relay_engine_stop(napi_env env, napi_callback_info info)
{
	(void)info;
	if (g_engine.running && g_engine.env == env) {
		stop_threads(true);
		/* Summaries the threads queued while stopping are still delivered: a released tsfn
		 * drains its queue before it is finalized. */
		g_engine.js->released = true;
		NAPI_CALL(env, napi_release_threadsafe_function(g_engine.js->tsfn, napi_tsfn_release));
		g_engine.js = NULL;
	}
	return NULL;
}
