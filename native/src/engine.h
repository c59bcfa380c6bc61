/* SPDX-License-Identifier: MIT
 *
 * The relay engine's insides, shared by its two halves: relay.c (threads, relays and pumps,
 * messages to JS, the N-API entry points relayStart & co.) and acceptor.c (listening sockets
 * the engine accepts on itself: acceptorStart/acceptorStop). Not an API: relay.h is the
 * addon's surface, and these names are hidden from the shared object.
 */
#ifndef MPX_ENGINE_H
#define MPX_ENGINE_H

#include "admission.h"
#include "chunked.h"
#include "destination.h"
#include "http-head.h"

#include <node_api.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <time.h>

/* Internal linkage across the addon's files, never exported (no interposition by a host
 * binary's symbol of the same name). */
#define MPX_HIDDEN __attribute__((visibility("hidden")))

#define RELAY_BUF_SIZE (1u << 20)
/* Free buffers each thread keeps for reuse; more are returned to the allocator. */
#define POOL_KEEP 16
/* Buffers one direction may move per wake-up before yielding to other relays. */
#define BURST 4
/* A short read below this many bytes counts as draining the socket (struct direction, drained). */
#define DRAINED_MAX (64u << 10)
#define MAX_THREADS 64
#define HASH_BUCKETS 4096
#define EPOLL_BATCH 128
#define SOL_TCP_LEVEL IPPROTO_TCP
/* Connections an acceptor takes per wake-up before letting its thread's relays run. */
#define ACCEPT_BURST 16
/* How long an acceptor rests after accept(2) ran out of fds or memory (EMFILE...). */
#define ACCEPT_PAUSE_MS 100

enum side { SIDE_DOWN = 0, SIDE_UP = 1, SIDE_PROXY = 2, SIDE_NONE = -1 };

struct direction {
	char *buf; /* NULL when nothing is pending */
	size_t off, len;
	bool pooled; /* false for a head copy, which is free()d rather than pooled */
	bool eof; /* read returned 0 */
	bool shut; /* shutdown(dst, SHUT_WR) done */
	/* The last read was short and no EOF or error was signalled on the source: its receive
	 * queue was empty then, and any byte or FIN arriving since raises a new edge. So once
	 * the buffer is written, the direction waits for that edge instead of reading again
	 * only to see EAGAIN. It holds until that edge (on_event clears it): every ACK that frees
	 * send space raises an EPOLLOUT edge that pumps this direction too, and when the first of
	 * them cleared it, the next ones each cost a recv() that said EAGAIN — about three per
	 * short connection. A bulk flow's reads are not short, so its pumps read on as before. */
	bool drained;
	/* The source's receive buffer and the destination's send buffer were capped (queue-cap.c):
	 * done once, at the first read that filled a whole buffer (a bulk flow). */
	bool queues_capped;
	_Atomic uint64_t bytes; /* read from the source (and, eventually, written) */
};

struct engine_thread;
struct acc_js;
struct upstream_park;
struct pending_client;

struct relay {
	uint64_t id;
	int fd[2]; /* SIDE_DOWN, SIDE_UP */
	/* dir[SIDE_DOWN] reads the downstream and writes the upstream; dir[SIDE_UP] the reverse. */
	struct direction dir[2];
	struct engine_thread *thread;
	int64_t idle_ms, last_activity_ms, started_ms;
	int ended_by; /* enum side, SIDE_NONE until known */
	int err; /* errno of the error that ended it, 0 if none */
	const char *syscall;
	const char *reason; /* "idle", "aborted", "engine-stopped" or NULL */
	const char *denied_by; /* reason "denied": the destination rule (destination.c) */
	napi_ref on_done;
	bool registered, finished, on_ready;
	/* An acceptor's relay is handed to another thread with CMD_ADD, and JS may abort it (it
	 * knows the id from 'accepted') before that command runs: the abort then waits here. */
	bool added, abort_pending;
	bool sample_down, sampled; /* sampleDownstream asked for; taken (once) */
	bool hup[2]; /* an EPOLLRDHUP, EPOLLHUP or EPOLLERR was seen on fd[side]: read to the end */
	bool pump; /* a one-way pump (pumpStart): fd[SIDE_DOWN] → fd[SIDE_UP] only */
	bool connecting; /* fd[SIDE_UP]'s connect(2) is still in progress: move nothing yet */
	bool connect_failed; /* ended by a failed or timed-out connect */
	bool up_plain_tcp; /* fd[SIDE_UP] was made IPPROTO_TCP by us: never MPTCP, no need to ask */
	int64_t connect_deadline_ms; /* connecting: when the connect times out */
	double started_precise_ms; /* for connectMs */
	napi_ref on_connected; /* JS's onConnected until the 'connected' message takes it */
	bool until_eof; /* pump: no limit, EOF ends it */
	uint64_t remaining; /* pump with a limit: bytes still to read from fd[SIDE_DOWN] */
	int pump_end; /* enum pump_end: how a pump ended by itself */
	struct mpx_subflow_summary *subflows; /* the sample, NULL if none (not MPTCP by then) */
	struct acc_js *acc; /* started by an acceptor: its events go to the acceptor's callback */
	/* An engine-only connection (engine-only.c): JS hears of it only through its access line
	 * and the count, unless its connect fails. conn_no: its connection number (the shared
	 * counter); peer, down_mptcp: what 'accepted' would have said. */
	bool quiet, down_mptcp;
	uint64_t conn_no;
	struct sockaddr_storage peer;
	struct mpx_client_key client; /* counted: the client's slot in admission.c's table */
	bool counted;
	/* The relay's fds are the only ones open on their sockets (an acceptor's relay; one JS
	 * started on fds it never wrapped, options.soleOwner): close() alone sends the last FIN
	 * and removes them from the epoll set, with no shutdown() or EPOLL_CTL_DEL first. */
	bool sole;
	/* Response-head hook (relayStart's options.onResponseHead, the HTTP proxy's engine-served
	 * exchanges): the upstream's first bytes are gathered up to a whole head (head_buf) and
	 * given to JS, which answers with the bytes to send the client instead (relayHeadDone). */
	napi_ref on_head;
	int head_state; /* enum head_state */
	char *head_buf; /* a pooled buffer while gathering; NULL otherwise */
	size_t head_len;
	char *head_carry; /* bytes after an interim (1xx) head, the next head's start */
	size_t head_carry_len;
	/* Bytes of the client's stream to drop before relaying it (its request head, which JS
	 * had from a peek and sends upstream rewritten). */
	uint64_t skip_down;
	/* options.responseVia: the Via pseudonym with which the engine rewrites a plain response
	 * head itself (http-head.c), without asking JS; NULL: JS rewrites every head. */
	char *resp_via;
	int http_status; /* the status of the head the engine rewrote, 0 if none */
	/* The upstream's connect failed under a response-head hook: fd[SIDE_UP] is never touched
	 * again, and what the client sends is read and dropped, so that the reply JS writes in
	 * its place ends with a FIN, not an RST for unread bytes. */
	bool up_dead;
	/* A keep-alive client's exchange (options.holdClient): nothing is read from the client
	 * beyond its request head (skip_down) while the exchange runs, so that its next request
	 * stays in its socket. When JS answers the response head with HEAD_THEN_KEEP, the client
	 * stays open after the response: keep_remaining more bytes (the rest of the body) reach it,
	 * anything past them is dropped (keep_spoiled), and at the upstream's EOF the relay ends
	 * with fd[SIDE_DOWN] handed back to JS (kept: MSG_DONE's kept_fd) instead of closed. Any
	 * other end of the response (a close-delimited or chunked body, an error reply, a body cut
	 * short) closes the client as usual: the hold gives way to drop_down, which reads the
	 * client's bytes and drops them until its EOF, so that our close is a FIN. */
	bool hold_down, drop_down, keep_client, keep_spoiled, kept;
	uint64_t keep_remaining;
	int64_t keep_close_due; /* the upstream's EOF is awaited until then (keep_await_upstream_eof), 0: not yet */
	/* options.headRequest: the (first) request is a HEAD, whose response has no body. */
	bool head_request;
	/* The client wants its connection kept (no Connection: close): a held client (hold_down)
	 * gets a keep-alive response head only then. A JS-started exchange holds only such a
	 * client; an acceptor's holds every one until its response starts (loop_pending_skip). */
	bool client_keeps;
	/* A kept client's response body is chunked (the engine rewrote its head): the chunk
	 * framing is followed (chunked.c) to find where it ends, as keep_remaining does for a
	 * length. */
	bool chunk_active;
	struct mpx_chunked chunk;
	/* Keep-alive loop (options.loopAuthority; relay.c, "keep-alive loop"): the upstream was
	 * asked to stay open too, and when a response leaves it reusable (up_keeps: also set for a
	 * frame_up exchange, whose upstream goes to the pool), the client's
	 * next request is read here (loop_wait) and, when it is a plain GET to the same authority,
	 * rewritten in C (http-head.c) and sent on the same upstream. Anything else hands the
	 * client back to JS as a kept one, its request still unread in its socket. */
	char *loop_authority; /* NULL: no loop */
	size_t loop_max_head, loop_max_fields;
	int64_t loop_idle_ms; /* how long the client may take to start its next request */
	bool up_keeps, loop_wait;
	/* A loop request's head, left in the client's socket until the response's first byte
	 * (then skipped): an upstream that closed meanwhile hands the client back with its
	 * request intact, for JS to send on a new connection. */
	uint64_t loop_pending_skip;
	/* Exchanges: the current one is not yet reported (ex_open); each one the loop moves past
	 * is reported to JS (MSG_EXCHANGE, options.onExchange), `exchanges` counts them. A loop
	 * request's method and target are ex_method/ex_target (NULL for the first: JS has them). */
	bool ex_open;
	uint32_t exchanges;
	char *ex_method, *ex_target;
	double ex_started_ms;
	uint64_t ex_down0, ex_up0;
	napi_ref on_exchange;
	/* An exchange an acceptor started itself (serve_at_accept): the request head it read, for
	 * JS's reply when the response head is one the engine declines (MSG_HEAD's req). */
	char *req_head;
	size_t req_head_len;
	/* An exchange served from accept with the acceptor's upstream pool on (upstream-park.c):
	 * park_ms is the pool's idle timeout (0: off), up_target where fd[SIDE_UP] goes (the pool's
	 * key, with acc). park_up is set where the upstream is known to be idle and clean — a whole
	 * response out, asked to keep the connection, nothing read since — and finish() then parks
	 * it instead of closing it. up_mptcp: what connect_done (or the pool) said of it. */
	int64_t park_ms;
	struct sockaddr_storage up_target, up_local; /* up_local: as 'accepted' said it */
	bool park_up, up_mptcp;
	/* A client that closes (Connection: close) of an exchange served from accept with the pool
	 * on: the upstream was asked to keep its connection all the same (frame_up), so the
	 * response's end is found by its framing (framed: keep_remaining or the chunk framing, as
	 * for a kept client, without keeping the client); there the relay ends: the client gets its
	 * FIN and the upstream is parked if the response said it keeps the connection (up_keeps). */
	bool frame_up, framed;
	/* fd[side] is on the thread's epoll set already (a client that waited there for its head, a
	 * parked upstream): eng_add_relay re-tags it (EPOLL_CTL_MOD) instead of adding it. */
	bool on_epoll[2];
	struct relay *ready_next;
	struct relay *next, *prev; /* the thread's list */
	struct relay *hnext; /* hash chain (g_lock) */
};

enum pump_end { PUMP_RUNNING = 0, PUMP_DONE, PUMP_EOF };

/* HEAD_NONE: no hook, or its head is dealt with (bytes flow as in any relay). */
enum head_state { HEAD_NONE = 0, HEAD_GATHERING, HEAD_WAITING };
/* relayHeadDone's "then": after the reply is written, relay the rest as it comes (RAW), gather
 * another head starting with the carry (AGAIN, after a 1xx), end the upstream side (END: a
 * reply in place of the response, e.g. a 502; the client gets a FIN after it), relay the
 * keepBody bytes still due and keep the client open (KEEP: a holdClient relay, see struct
 * relay), or (FRAMED: a closing client whose upstream was asked to stay, struct relay
 * frame_up) relay a body whose end its framing gives — keepBody bytes from the carry on, or
 * the chunk framing for keepBody -1 — and close the client after it. */
enum head_then { HEAD_THEN_RAW = 0, HEAD_THEN_AGAIN, HEAD_THEN_END, HEAD_THEN_KEEP, HEAD_THEN_FRAMED };
/* The most a response head may be; more without its end is JS's to refuse (a 502). */
#define HEAD_MAX (256u << 10) /* RESPONSE_HEAD_LIMITS.maxBytes in parser.ts */

enum cmd_kind { CMD_ADD, CMD_ABORT, CMD_STOP, CMD_ACC_ADD, CMD_ACC_STOP, CMD_HEAD, CMD_ACC_ADOPT, CMD_ACC_ABORT };

struct acceptor;

struct cmd {
	enum cmd_kind kind;
	struct relay *relay; /* CMD_ADD */
	struct acceptor *acceptor; /* CMD_ACC_ADD, CMD_ACC_STOP, CMD_ACC_ADOPT */
	int fd; /* CMD_ACC_ADOPT: the kept client, its slot's key and JS's id for it (kept_id) */
	struct mpx_client_key key;
	uint64_t kept_id;
	uint64_t keep_body; /* CMD_HEAD with HEAD_THEN_KEEP: the body bytes still to come after out */
	uint64_t id; /* CMD_ABORT, CMD_HEAD; CMD_ACC_ABORT: the acceptor's */
	/* CMD_HEAD: what to write to the client (malloc'd, may be NULL), then what (enum head_then),
	 * and for HEAD_THEN_AGAIN the bytes already read of the next head (malloc'd or NULL). */
	char *out, *carry;
	size_t out_len, carry_len;
	int then;
	struct cmd *next;
};

/* Shared by the tsfn's call_js and the JS-thread entry points; owned by one tsfn. */
struct js_side {
	napi_threadsafe_function tsfn;
	uint64_t live; /* relays started and not yet reported (JS thread only) */
	bool released;
};

struct engine_thread {
	pthread_t tid;
	int epfd, evfd;
	pthread_mutex_t cmd_lock;
	struct cmd *cmd_head, *cmd_tail;
	struct relay *relays; /* owned by the thread */
	struct relay *ready; /* relays with more to do after this batch */
	struct relay *graveyard; /* finished during this batch; freed after it */
	char *pool[POOL_KEEP];
	int pool_len;
	int64_t now_ms;
	int64_t min_idle, next_sweep; /* shortest idle timeout (0: none); when to sweep next */
	int64_t connect_due; /* earliest connect deadline of a connecting relay, 0 if none */
	struct acceptor *acceptors; /* listening sockets this thread accepts on */
	struct acceptor *acc_graveyard; /* closed during this batch; freed after it */
	struct msg *out_head, *out_tail; /* messages for JS, sent in batches (relay.c, flush_in_ms) */
	int64_t out_since_ms; /* when the oldest queued message was posted */
	unsigned out_count; /* messages queued */
	bool out_urgent; /* one of them is awaited by JS (eng_post) */
	bool out_lines_only; /* all of them are MSG_LINES (relay.c, LINES_DELAY_MS) */
	int64_t accept_resume_ms; /* an acceptor paused after EMFILE & co. resumes then; 0: none */
	bool stop, report;
	struct js_side *js;
	struct pending_client *pending; /* handoff acceptors' clients waiting for their first bytes */
	size_t kept_count; /* kept clients waiting on this thread's acceptors (struct acceptor) */
	struct pending_client *kept_graveyard; /* kept entries done with during this batch */
	struct upstream_park *park; /* idle upstream connections (upstream-park.c); NULL until used */
	/* MSG_LINES messages in the outbox that still take lines (engine-only.c), one per acceptor
	 * at most, linked by lines_next; emptied when the outbox is sent. */
	struct msg *lines_open;
};

enum msg_kind { MSG_DONE = 0, MSG_CONNECTED, MSG_ACCEPTED, MSG_DENIED, MSG_ACCEPT_ERROR, MSG_STOPPED, MSG_HANDOFF, MSG_HEAD, MSG_KEPT_END, MSG_EXCHANGE, MSG_LINES };

struct msg {
	enum msg_kind kind;
	napi_ref on_done;
	napi_ref on_connected; /* MSG_CONNECTED: the callback; MSG_DONE: one never called, to delete */
	struct mpx_subflow_summary *subflows; /* owned by the message */
	uint64_t id, from_down, from_up;
	int ended_by, err;
	const char *syscall, *reason, *denied_by;
	double duration_ms;
	bool pump;
	const char *pump_ended_by; /* pump: 'done', 'eof', 'error' or the proxy's reason */
	bool connect_failed;
	double connect_ms; /* MSG_CONNECTED: relayStart → handshake done, engine clock */
	bool up_mptcp; /* MSG_CONNECTED: fdUp runs MPTCP (not plain TCP, not fallen back) */
	bool up_reused; /* MSG_CONNECTED of an acceptor's exchange: a parked connection, not a connect */
	struct acc_js *acc; /* an acceptor's event (or one of its relays'): goes to its callback */
	struct sockaddr_storage peer, local, up_local; /* MSG_ACCEPTED (peer also MSG_DENIED) */
	bool down_mptcp; /* MSG_ACCEPTED: the client runs MPTCP */
	const char *deny_reason; /* MSG_DENIED: 'client-network' or 'client-limit' */
	/* MSG_HANDOFF: the client's fd and the early upstream's (-1: none), JS's once delivered
	 * (set to -1 then); an undelivered message closes them. up_target (has_target): where the
	 * request line says the request goes, an IP literal; fd_up, if any, connects there. */
	int fd_down, fd_up;
	bool has_target;
	struct sockaddr_storage up_target;
	/* MSG_HANDOFF: the client's first bytes, peeked (still in its socket). MSG_HEAD: the bytes
	 * gathered from the upstream (complete: they hold a whole head), or none when the upstream
	 * failed first (err, syscall). Owned by the message. */
	char *data;
	size_t data_len;
	bool complete;
	napi_ref on_head; /* MSG_HEAD: the relay's hook (not owned); MSG_DONE: owned, to delete */
	int http_status; /* MSG_DONE: the relay's http_status */
	/* MSG_DONE: the client fd a keep-alive exchange kept open (struct relay, kept), JS's once
	 * delivered (kept cleared then); an undelivered message closes it. MSG_HANDOFF: kept_id not
	 * 0 when the client is one such, given back (acceptorAdopt) and now sending its next
	 * request. MSG_KEPT_END: such a client closed, reset or idled out (reason "idle") before its
	 * next request, or its acceptor stopped (reason "stopped"), kept_id saying which. */
	bool kept;
	int kept_fd;
	uint64_t kept_id;
	/* MSG_EXCHANGE (an exchange the keep-alive loop moved past; from_down, from_up,
	 * duration_ms and http_status are its own) and MSG_DONE (the one still open, if ex_open):
	 * data holds "method\0target\0" for a request the loop read, NULL for the first. MSG_DONE
	 * also says how many exchanges were reported. on_exchange: the relay's callback (deleted
	 * with MSG_DONE). */
	napi_ref on_exchange;
	bool ex_open;
	uint32_t exchanges;
	/* MSG_ACCEPTED of an exchange the acceptor serves itself: its request's target
	 * (has_target, up_target). MSG_HEAD of one: the request head the response answers. */
	char *req;
	size_t req_len;
	/* MSG_LINES (engine-only.c): how many engine-only connections ended (data: their access
	 * lines, if written), and the thread's lines_open list. MSG_ACCEPTED of an engine-only
	 * connection whose connect failed, sent at its end: how long ago it was accepted. */
	uint32_t quiet_ends;
	size_t data_cap;
	struct msg *lines_next;
	double ago_ms;
	struct msg *next; /* the thread's outbox, then one batch delivered to JS */
};

/* An acceptor's JS callback, shared by the messages of the acceptor and of every relay it
 * started: freed (on the JS thread) when the last of them has been delivered. */
struct acc_js {
	napi_ref on_event;
	_Atomic int refs; /* the acceptor until 'stopped', plus each relay until its 'done' */
	/* Its acceptor is closed (acceptor_close, on the acceptor's thread): relays it started that
	 * end later close their upstreams rather than park them. */
	bool closed;
	/* Engine-only connections (engine-only.c; acceptorStart's options.engineOnly): the
	 * acceptor's id, the access line's template (NULL: no line), those accepted and not yet
	 * reported to JS (quiet_live), and acceptorAbortAll's mark for those still to start. */
	uint64_t id;
	bool engine_only;
	struct mpx_access_line *line;
	_Atomic uint64_t quiet_live;
	_Atomic bool aborted;
	struct acc_js *gnext; /* engine-only.c's list (JS thread) */
};

/* A listening socket the engine accepts on itself (acceptorStart): admission, the upstream's
 * connect(2) and the relay all happen on the engine thread, with no JS in between. */
struct acceptor {
	uint64_t id;
	int fd;
	struct engine_thread *thread;
	struct sockaddr_storage up, bind_to;
	socklen_t up_len, bind_len; /* bind_len 0: no source address */
	bool up_mptcp, sample_down, allow_all;
	/* Transparent (TPROXY): each connection goes where the client was going, the accepted
	 * socket's local address, if dest allows it; up only gives the spare socket's family. */
	bool transparent;
	struct mpx_dest_policy dest;
	int64_t connect_timeout_ms, idle_ms;
	struct mpx_cidr *allow;
	size_t nallow;
	uint32_t max_per_client;
	int64_t paused_until; /* 0 unless resting after EMFILE & co. */
	_Atomic bool stopping; /* acceptorStop has shut the socket down: accept nothing more */
	/* The next connection's upstream socket, made before its accept4 (acceptor_prepare), or -1;
	 * with prep_err/prep_syscall when making it failed for a reason each client must hear. */
	int spare;
	int spare_family;
	int prep_err;
	const char *prep_syscall;
	/* Handoff (HTTP): each admitted client is handed to JS once its first bytes are in (or
	 * after handoff_wait_ms), with an upstream connect already issued (early) when they hold an
	 * absolute-form http:// request line to an IP literal that `dest` allows. */
	bool handoff, early, has_dest;
	int64_t handoff_wait_ms;
	/* Kept clients given back after an exchange served in the engine (acceptorAdopt), waiting
	 * for their next request at most kept_wait_ms (the listener's keepAliveTimeoutMs), in the
	 * order they came back: all wait as long, so the head is the first due. One is unlinked as
	 * soon as it is handed over or closed (into the thread's kept_graveyard). */
	int64_t kept_wait_ms;
	struct pending_client *kept_head, *kept_tail;
	/* Handoff (HTTP) with options.httpVia: a client whose whole first request head is one the
	 * engine's C rewrite takes (http-head.c: a plain GET to the early connect's target) is not
	 * handed over but served here, from accept to its end (serve_at_accept): JS hears of it as
	 * of a forwarded connection ('accepted', 'exchange', 'done'), and 'head' for a response
	 * head the engine declines. */
	bool http_serve;
	char http_via[MPX_HTTP_VIA_MAX];
	uint32_t http_max_head, http_max_fields;
	/* options.httpUpstreamIdleMs: the upstream pool's idle timeout for exchanges served here
	 * (upstream-park.c); 0: every exchange dials and its upstream is closed after it. */
	int64_t http_park_ms;
	struct acc_js *js;
	struct acceptor *next; /* the thread's list */
	struct acceptor *gnext; /* g_engine.acceptors (JS thread) */
};

/* Epoll tags: a relay's fd is tagged with the relay's address | side (0 or 1), the eventfd
 * with 0, and an acceptor's listening fd with its address | ACC_TAG (allocations are at
 * least 8-byte aligned, so the low bits are free). */
#define ACC_TAG ((uintptr_t)2)
/* A handoff acceptor's client waiting for its first bytes: its address | PEND_TAG (both low bits
 * set: test for it before ACC_TAG). */
#define PEND_TAG ((uintptr_t)3)
/* An idle upstream connection parked in the thread's pool (upstream-park.c): its entry's
 * address | PARK_TAG. The low three bits of every tagged address are free (malloc aligns to 8
 * at least), and relays, acceptors and pending clients use only the two lowest. */
#define PARK_TAG ((uintptr_t)4)

struct pending_client {
	int fd;
	struct acceptor *acc;
	struct sockaddr_storage peer, local;
	struct mpx_client_key key;
	bool down_mptcp, registered;
	int64_t deadline_ms;
	/* The early connect, issued once the request line is in (dialed), while the rest of the
	 * head may still be on its way: its fd (-1: none) and where the line said to go. */
	bool dialed, has_target;
	/* Not 0: a kept-alive client given back after an exchange served in the engine
	 * (acceptorAdopt), with JS's id for it (from 1): no early connect (its next request goes to
	 * a session, which may reuse an upstream), and its EOF or reset is closed here
	 * (MSG_KEPT_END tells JS). */
	uint64_t kept_id;
	int up;
	struct sockaddr_storage target;
	struct pending_client *next, *prev; /* prev: a kept one's acceptor list only */
};

/* Engine state; touched only on the JS thread. */
struct engine_state {
	bool running;
	napi_env env;
	bool cleanup_hook;
	int want_threads, nthreads;
	unsigned next_thread;
	struct engine_thread threads[MAX_THREADS];
	struct js_side *js;
	struct acceptor *acceptors; /* running ones, for acceptorStop; freed by their threads */
	uint64_t next_acceptor_id;
};
extern MPX_HIDDEN struct engine_state g_engine;
/* Relay ids: taken by the JS thread (relayStart, pumpStart) and by acceptors' threads. */
extern MPX_HIDDEN _Atomic uint64_t g_next_id;
/* Round robin of acceptors' relays over the threads. */
extern MPX_HIDDEN _Atomic unsigned g_next_accept_thread;

/* A blank line ends an HTTP head (CRLF CRLF; a bare LF LF too, which a lenient parser accepts),
 * searched from a little before `from` (where the bytes new since the last look begin). */
static inline bool mpx_head_has_end(const char *buf, size_t len, size_t from)
{
	size_t start = from > 3 ? from - 3 : 0;
	if (start >= len)
		return false;
	return memmem(buf + start, len - start, "\r\n\r\n", 4) != NULL || memmem(buf + start, len - start, "\n\n", 2) != NULL;
}

static inline int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static inline double now_ms_precise(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

/* relay.c: engine side */
MPX_HIDDEN void eng_hash_insert(struct relay *r);
MPX_HIDDEN void eng_msg_free(struct msg *m);
MPX_HIDDEN void eng_post(struct engine_thread *t, struct msg *m);
MPX_HIDDEN void eng_flush(struct engine_thread *t);
MPX_HIDDEN void eng_fail(struct engine_thread *t, struct relay *r, int side, int err, const char *syscall);
MPX_HIDDEN void eng_add_relay(struct engine_thread *t, struct relay *r);
MPX_HIDDEN bool eng_push_cmd(struct engine_thread *t, struct cmd *c);

/* relay.c: JS side */
MPX_HIDDEN void eng_delete_ref(napi_env env, napi_ref ref);
MPX_HIDDEN bool eng_set_double(napi_env env, napi_value obj, const char *key, double v);
/* ENOENT & co. for an errno ("E<n>" in namebuf for one glibc has no name for). */
MPX_HIDDEN const char *eng_errno_code(int err, char namebuf[32]);
/* Positional arguments for a JS callback (an acceptor's events, a relay's end): V8 builds the
 * objects from literals in JS far faster than C can set their properties one by one. */
#define EV_ARGS_MAX 24
struct ev_args {
	napi_value v[EV_ARGS_MAX];
	size_t n;
	bool ok;
};
MPX_HIDDEN void ev_push(struct ev_args *a, napi_status st);
MPX_HIDDEN void ev_number(napi_env env, struct ev_args *a, double d);
MPX_HIDDEN void ev_bool(napi_env env, struct ev_args *a, bool b);
/* A string, or undefined for NULL. */
MPX_HIDDEN void ev_string(napi_env env, struct ev_args *a, const char *s);
/* Two arguments: the address text (null when not IPv4/IPv6) and the port. */
MPX_HIDDEN void ev_address(napi_env env, struct ev_args *a, const struct sockaddr_storage *ss);
/* errno (negative, as Node's), code, syscall. */
MPX_HIDDEN void ev_errno(napi_env env, struct ev_args *a, int err, const char *syscall);
/* A relay's end (not a pump's): id, fromDownstream, fromUpstream, endedBy (0 downstream,
 * 1 upstream, 2 proxy), durationMs, errno, code, syscall (undefined ×3 without an error),
 * reason, deniedBy, connectFailed, the HTTP status of a response head the engine rewrote (0:
 * none), the subflow count (-1: no sample) and paths, the kept client fd (-1: none), the
 * exchanges reported (MSG_EXCHANGE), whether one is still open and, when it is a loop request,
 * its method and target (undefined ×2 otherwise). Decoded
 * by decodeRelaySummary (src/relay/native-relay.ts); keep both in step. */
MPX_HIDDEN void ev_done_args(napi_env env, struct ev_args *a, const struct msg *m);
/* An exchange's report (MSG_EXCHANGE): method, target (undefined ×2 for a relay's first request
 * when JS started it), status (0: the engine did not rewrite its head), fromDownstream,
 * fromUpstream, durationMs. */
MPX_HIDDEN void eng_exchange_args(napi_env env, struct ev_args *a, const struct msg *m);
MPX_HIDDEN void eng_call_ref(napi_env env, napi_ref ref, napi_value arg);
/* The same with any number of arguments (an acceptor's positional events). */
MPX_HIDDEN void eng_call_ref_args(napi_env env, napi_ref ref, size_t argc, const napi_value *argv);
MPX_HIDDEN bool eng_start_engine(napi_env env);
MPX_HIDDEN bool eng_arg_function(napi_env env, napi_value v, const char *name, bool optional, napi_value *out);
MPX_HIDDEN bool eng_set_nonblocking(napi_env env, int fd);
MPX_HIDDEN bool eng_arg_number(napi_env env, napi_value v, const char *name, double *out);
MPX_HIDDEN bool eng_arg_id(napi_env env, napi_value v, uint64_t *out);

/* acceptor.c */
MPX_HIDDEN void acceptors_resume(struct engine_thread *t);
MPX_HIDDEN void acceptor_run(struct engine_thread *t, struct acceptor *a);
MPX_HIDDEN void acceptor_add(struct engine_thread *t, struct acceptor *a);
MPX_HIDDEN void acceptor_close(struct engine_thread *t, struct acceptor *a);
MPX_HIDDEN void bury_acceptors(struct engine_thread *t);
MPX_HIDDEN void acceptor_event(napi_env env, struct js_side *js, struct msg *m);
/* Handoff acceptors' waiting clients: an epoll event for one, the deadlines, the next one due. */
MPX_HIDDEN void pending_event(struct engine_thread *t, struct pending_client *p);
/* CMD_ACC_ADOPT on the acceptor's thread: a kept client waits for its next request (acceptor.c). */
MPX_HIDDEN void acceptor_adopt(struct engine_thread *t, struct acceptor *a, const struct cmd *c);
MPX_HIDDEN void pending_sweep(struct engine_thread *t);
MPX_HIDDEN int64_t pending_due(const struct engine_thread *t);
MPX_HIDDEN void pending_free_all(struct engine_thread *t);
/* Kept clients (struct acceptor): the idle ones closed and the done ones freed; the next due. */
MPX_HIDDEN void kept_sweep(struct engine_thread *t);
MPX_HIDDEN int64_t kept_due(const struct engine_thread *t);

/* upstream-park.c: idle upstream connections of exchanges served from accept, per thread,
 * keyed by the acceptor (its acc_js) and the target. */
struct parked_upstream; /* one entry; its address | PARK_TAG is its epoll tag */
/* What a taken connection brings: its fd, local address and whether it runs MPTCP. */
struct park_take {
	int fd;
	struct sockaddr_storage local;
	bool mptcp;
};
/* Parks an idle, clean upstream connection (relay.c decides it is one: struct relay,
 * park_up) to `to`, from `local`, for idle_ms; registered: fd is on the thread's epoll already
 * (under its relay's tag). True: the fd is the pool's now, the caller must not close it; false (a limit, memory,
 * epoll): it is still the caller's. */
MPX_HIDDEN bool park_put(struct engine_thread *t, const struct acc_js *owner, const struct sockaddr_storage *to, const struct sockaddr_storage *local, int fd, bool mptcp,
			 int64_t idle_ms, bool registered);
/* The most recently parked connection to `to` of `owner`'s, taken out of the pool (still on the
 * thread's epoll set under the pool's tag: the caller re-tags it); false when there is none. */
MPX_HIDDEN bool park_take(struct engine_thread *t, const struct acc_js *owner, const struct sockaddr_storage *to, struct park_take *out);
/* An epoll event on a parked connection: the upstream closed, reset or spoke out of turn (or,
 * taken or closed earlier in this batch, nothing). */
MPX_HIDDEN void park_event(struct engine_thread *t, struct parked_upstream *e);
/* Frees the entries let go during the batch (after it: events may still name them). */
MPX_HIDDEN void park_bury(struct engine_thread *t);
/* Closes the connections idle past their timeout (and works out the next due time). */
MPX_HIDDEN void park_sweep(struct engine_thread *t);
MPX_HIDDEN int64_t park_due(const struct engine_thread *t);
/* Closes `owner`'s connections (its acceptor closed), or every one (NULL: the thread stops). */
MPX_HIDDEN void park_close(struct engine_thread *t, const struct acc_js *owner);

#endif
