/* SPDX-License-Identifier: MIT
 *
 * The engine's acceptors (acceptorStart, relay.h): a listening socket the engine thread accepts
 * on itself, for listeners whose every connection is dialed and relayed without JS — tcp-forward
 * to an IP and transparent TPROXY. Per client, on the engine thread: accept4, the client check
 * and count (admission.c), the destination check for per-connection targets (destination.c),
 * connect(2) on a socket prepared before the accept, then a relay in its connecting state
 * (relay.c, "Connecting upstreams"); JS hears accepted / connected / done / denied / error /
 * stopped. docs/design.md, "Accepting in the engine", has the why and the measurements.
 *
 * Handoff acceptors (HTTP listeners): accept4 and admission as above, then the client waits on
 * the thread's epoll for its first bytes (at most handoff_wait_ms); a peek at them may start the
 * upstream connect its request line names (an IP literal the destination rules allow), and the
 * client — with that connecting upstream, if any — is handed to JS ('handoff'), which serves
 * it as a JS-accepted one. docs/design.md, "The upstream connect starts at accept".
 *
 * Kept clients (acceptorAdopt): a keep-alive client whose exchange the engine served comes
 * back here to wait for its next request; its first byte hands it over again ('handoff' with
 * JS's kept id), its end, a reset or keepAliveTimeoutMs closes it here ('kept-end').
 * docs/design.md, "Exchanges served in the engine".
 */
#include "relay.h"
#include "engine.h"
#include "engine-only.h"
#include "common.h"
#include "mptcp-uapi.h"
#include "socket-ops.h"
#include "http-head.h" /* mpx_head_has_end */

#include <errno.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <unistd.h>

/* ---- acceptors: accept, admit and dial on the engine thread ---- */

static struct msg *acc_msg(struct acceptor *a, enum msg_kind kind)
{
	struct msg *m = calloc(1, sizeof(*m));
	if (m != NULL) {
		m->kind = kind;
		m->acc = a->js;
	}
	return m;
}

static void post_denied(struct engine_thread *t, struct acceptor *a, const struct sockaddr_storage *peer, const char *reason)
{
	struct msg *m = acc_msg(a, MSG_DENIED);
	if (m == NULL)
		return;
	m->peer = *peer;
	m->deny_reason = reason;
	eng_post(t, m);
}

/* An 'error' event: a system call failed for the acceptor itself, not for one client. */
static void post_error(struct engine_thread *t, struct acceptor *a, int err, const char *syscall)
{
	struct msg *m = acc_msg(a, MSG_ACCEPT_ERROR);
	if (m == NULL)
		return;
	m->err = err;
	m->syscall = syscall;
	eng_post(t, m);
}

static void acceptor_watch(struct engine_thread *t, struct acceptor *a, uint32_t events)
{
	struct epoll_event ev = { .events = events, .data.u64 = (uint64_t)((uintptr_t)a | ACC_TAG) };
	epoll_ctl(t->epfd, EPOLL_CTL_MOD, a->fd, &ev);
}

/* accept(2) ran out of fds or memory: the pending connection stays queued and the listening
 * socket stays readable, so a level-triggered registration would spin. Rest a little instead
 * (and tell JS once per rest); the queued clients wait in the backlog meanwhile. */
static void acceptor_pause(struct engine_thread *t, struct acceptor *a, int err, const char *syscall)
{
	acceptor_watch(t, a, 0);
	a->paused_until = t->now_ms + ACCEPT_PAUSE_MS;
	if (t->accept_resume_ms == 0 || a->paused_until < t->accept_resume_ms)
		t->accept_resume_ms = a->paused_until;
	post_error(t, a, err, syscall);
}

void acceptors_resume(struct engine_thread *t)
{
	int64_t next = 0;
	for (struct acceptor *a = t->acceptors; a != NULL; a = a->next) {
		if (a->paused_until == 0)
			continue;
		if (t->now_ms >= a->paused_until) {
			a->paused_until = 0;
			acceptor_watch(t, a, EPOLLIN);
		} else if (next == 0 || a->paused_until < next) {
			next = a->paused_until;
		}
	}
	t->accept_resume_ms = next;
}

static bool out_of_resources(int err)
{
	return err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM;
}

/* socket, options, bind for `family` into a->spare, or the failure into a->prep_err. */
static void make_spare(struct acceptor *a, int family)
{
	a->spare_family = family;
	int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, a->up_mptcp ? IPPROTO_MPTCP : IPPROTO_TCP);
	if (fd < 0) {
		a->prep_err = errno, a->prep_syscall = "socket";
		return;
	}
	int one = 1;
	setsockopt(fd, SOL_TCP_LEVEL, TCP_NODELAY, &one, sizeof(one)); /* as the JS dialer: best effort */
	if (a->bind_len > 0 && bind(fd, (struct sockaddr *)&a->bind_to, a->bind_len) != 0) {
		a->prep_err = errno, a->prep_syscall = "bind";
		close(fd);
		return;
	}
	a->spare = fd;
}

/* The next upstream socket — socket, options, bind — made before its client is accepted: a
 * process out of fds then leaves the client waiting in the backlog (the acceptor rests)
 * instead of accepting it only to reset it for want of a second fd. false: rest now. */
static bool acceptor_prepare(struct engine_thread *t, struct acceptor *a)
{
	/* A handoff acceptor that never connects early dials nothing: no socket to keep ready. */
	if (a->spare >= 0 || a->prep_err != 0 || (a->handoff && !a->early))
		return true;
	make_spare(a, a->up.ss_family);
	if (a->spare < 0 && out_of_resources(a->prep_err)) {
		int err = a->prep_err;
		a->prep_err = 0;
		acceptor_pause(t, a, err, a->prep_syscall);
		return false;
	}
	return true;
}

/* Takes the prepared socket (a new one if the target's family differs: a transparent
 * listener's IPv6 client) and issues connect(2); 0 or the errno, with the failing call. */
static int acceptor_dial(struct acceptor *a, const struct sockaddr_storage *to, socklen_t to_len, int *fd_out, const char **syscall)
{
	if (a->spare >= 0 && a->spare_family != to->ss_family) {
		close(a->spare);
		a->spare = -1;
	}
	if (a->spare < 0 && (a->prep_err == 0 || a->spare_family != to->ss_family)) {
		a->prep_err = 0;
		make_spare(a, to->ss_family);
	}
	int fd = a->spare, err = a->prep_err;
	*syscall = a->prep_syscall;
	a->spare = -1;
	a->prep_err = 0;
	*fd_out = fd;
	if (err != 0)
		return err;
	if (connect(fd, (const struct sockaddr *)to, to_len) != 0 && errno != EINPROGRESS) {
		*syscall = "connect";
		return errno;
	}
	return 0;
}

/* A transparent connection's target: the accepted socket's local address (TPROXY keeps the
 * original destination there), IPv4-mapped folded to IPv4 as the JS front-end's unmapAddress
 * does. NULL if the destination check allows it, else the rule that denied it. */
static const char *transparent_target(const struct acceptor *a, const struct sockaddr_storage *local, struct sockaddr_storage *to, socklen_t *to_len)
{
	struct mpx_client_key ip;
	if (!mpx_client_key_from_sockaddr((const struct sockaddr *)local, &ip))
		return "destination-network";
	uint16_t port = local->ss_family == AF_INET ? ntohs(((const struct sockaddr_in *)local)->sin_port)
						   : ntohs(((const struct sockaddr_in6 *)local)->sin6_port);
	memset(to, 0, sizeof(*to));
	if (ip.family == 4) {
		struct sockaddr_in *sin = (struct sockaddr_in *)to;
		sin->sin_family = AF_INET;
		sin->sin_port = htons(port);
		memcpy(&sin->sin_addr, ip.bytes, 4);
		*to_len = sizeof(*sin);
	} else {
		*(struct sockaddr_in6 *)to = *(const struct sockaddr_in6 *)local; /* scope id too */
		*to_len = sizeof(struct sockaddr_in6);
	}
	return mpx_dest_check(&a->dest, &ip, port);
}

/* Whether an accepted client runs MPTCP (not fallen back), asked only on an MPTCP listener
 * (a->sample_down): what JS records, and whether its subflows are sampled. */
static bool client_is_mptcp(const struct acceptor *a, int fd)
{
	if (!a->sample_down)
		return false;
	int val = 0;
	socklen_t vl = sizeof(val);
	return getsockopt(fd, SOL_TCP_LEVEL, TCP_IS_MPTCP, &val, &vl) == 0 && val != 0;
}

/* ---- handoff acceptors (HTTP): the client goes to JS, its upstream connect may go first ---- */

/* Where an absolute-form `http://` request line in `buf` goes, if it names an IP literal (the
 * JS side's peekRequestTarget, for literals only: names need DNS, which is JS's). A hint only:
 * JS reads and checks the request in full, and closes the connection unused if it disagrees. */
static bool request_line_target(const char *buf, size_t n, struct sockaddr_storage *to, socklen_t *to_len, struct mpx_client_key *ip, uint16_t *port)
{
	const char *eol = memmem(buf, n, "\r\n", 2);
	if (eol == NULL)
		return false;
	const char *sp1 = memchr(buf, ' ', (size_t)(eol - buf));
	if (sp1 == NULL || sp1 == buf || (sp1 - buf == 7 && memcmp(buf, "CONNECT", 7) == 0))
		return false;
	const char *t = sp1 + 1;
	const char *sp2 = memchr(t, ' ', (size_t)(eol - t));
	if (sp2 == NULL || (size_t)(sp2 - t) < 8 || strncasecmp(t, "http://", 7) != 0)
		return false;
	const char *h = t + 7, *end = sp2;
	for (const char *c = h; c < sp2; c++) {
		if (*c == '/' || *c == '?' || *c == '#') {
			end = c;
			break;
		}
		if (*c == '@')
			return false;
	}
	char host[64];
	const char *host_end = end, *colon = NULL;
	if (h < end && *h == '[') {
		const char *close_b = memchr(h, ']', (size_t)(end - h));
		if (close_b == NULL)
			return false;
		if (close_b + 1 < end) {
			if (close_b[1] != ':')
				return false;
			colon = close_b + 1;
		}
		h += 1;
		host_end = close_b;
	} else {
		colon = memrchr(h, ':', (size_t)(end - h));
		if (colon != NULL)
			host_end = colon;
	}
	size_t hl = (size_t)(host_end - h);
	if (hl == 0 || hl >= sizeof(host))
		return false;
	memcpy(host, h, hl);
	host[hl] = '\0';
	unsigned long p = 80;
	if (colon != NULL && colon + 1 < end) {
		p = 0;
		for (const char *c = colon + 1; c < end; c++) {
			if (*c < '0' || *c > '9' || c - colon > 5)
				return false;
			p = p * 10 + (unsigned long)(*c - '0');
		}
		if (p < 1 || p > 65535)
			return false;
	}
	if (!mpx_sockaddr_from_literal(host, (uint16_t)p, to, to_len))
		return false;
	*port = (uint16_t)p;
	return mpx_client_key_from_sockaddr((const struct sockaddr *)to, ip);
}

/* How much of a client's first bytes the engine peeks at: a request head up to this size goes
 * to JS with the hand-over, which may then serve the exchange without reading it again. */
#define HANDOFF_PEEK 8192

/* Issues the upstream connect `buf` (the client's first bytes, peeked, its request line in)
 * allows, once per client: an absolute-form http:// request to an IP literal the destination
 * rules allow (with early_close_only, one whose whole head asks to close). The target is noted
 * whether or not it is dialed here: JS's own preconnect then needs no second peek at the same
 * bytes. */
/* Where a request line goes (request_line_target) and whether the destination rules allow it. */
struct line_target {
	bool has; /* an absolute-form http:// line to an IP literal */
	bool allowed; /* has, and the destination rules allow it */
	struct sockaddr_storage to;
	socklen_t to_len;
};

static struct line_target line_target_of(const struct acceptor *a, const char *buf, size_t n)
{
	struct line_target lt = { .to_len = 0 };
	struct mpx_client_key ip;
	uint16_t port = 0;
	lt.has = n > 0 && request_line_target(buf, n, &lt.to, &lt.to_len, &ip, &port);
	lt.allowed = lt.has && (!a->has_dest || mpx_dest_check(&a->dest, &ip, port) == NULL);
	return lt;
}

/* The early connect to where the request line goes, once per client (p->dialed). */
static void handoff_dial_to(struct acceptor *a, struct pending_client *p, const struct line_target *lt)
{
	p->dialed = true;
	p->has_target = lt->has;
	if (lt->has)
		p->target = lt->to;
	if (a->early && lt->allowed) {
		const char *syscall = NULL;
		if (acceptor_dial(a, &p->target, lt->to_len, &p->up, &syscall) != 0) {
			if (p->up >= 0)
				close(p->up);
			p->up = -1; /* the request's own dial will meet the failure and report it */
		}
	}
}

static void handoff_dial(struct acceptor *a, struct pending_client *p, const char *buf, size_t n)
{
	if (p->dialed)
		return;
	struct line_target lt = line_target_of(a, buf, n);
	handoff_dial_to(a, p, &lt);
}

/* JS's kept connection `kept_id` is over (MSG_KEPT_END): its access line can be written. */
static void kept_end_post(struct engine_thread *t, struct acceptor *a, uint64_t kept_id, const char *reason)
{
	struct msg *m = acc_msg(a, MSG_KEPT_END);
	if (m == NULL)
		return; /* out of memory: that connection's access line is lost, nothing else */
	m->kept_id = kept_id;
	m->reason = reason;
	eng_post(t, m);
}

/* Hands a waiting client to JS ('handoff') with its first `n` bytes (peeked: still in its
 * socket) and the early connect, issued now if it was not yet. The client's fd and slot are
 * JS's from the message on. */
static void handoff_finish(struct engine_thread *t, struct pending_client *p, const char *buf, size_t n)
{
	struct acceptor *a = p->acc;
	if (n > 0)
		handoff_dial(a, p, buf, n);
	struct msg *m = acc_msg(a, MSG_HANDOFF);
	char *data = n > 0 ? malloc(n) : NULL;
	if (m == NULL || (n > 0 && data == NULL)) {
		free(m);
		free(data);
		close(p->fd);
		if (p->up >= 0)
			close(p->up);
		mpx_client_release(&p->key);
		p->fd = p->up = -1;
		if (p->kept_id != 0)
			kept_end_post(t, a, p->kept_id, NULL);
		return;
	}
	if (data != NULL)
		memcpy(data, buf, n);
	m->data = data;
	m->data_len = n;
	m->fd_down = p->fd;
	m->fd_up = p->up;
	m->peer = p->peer;
	m->local = p->local;
	m->down_mptcp = p->down_mptcp;
	m->kept_id = p->kept_id;
	m->has_target = p->has_target;
	if (p->has_target)
		m->up_target = p->target;
	if (p->up >= 0) {
		socklen_t len = sizeof(m->up_local);
		getsockname(p->up, (struct sockaddr *)&m->up_local, &len);
	}
	p->fd = p->up = -1;
	eng_post(t, m);
}

/* A kept client's entry off its acceptor's list (and out of the epoll set), into the thread's
 * kept_graveyard: freed after this batch (an event for it may still be further down). */
static void kept_unlink(struct engine_thread *t, struct pending_client *p)
{
	struct acceptor *a = p->acc;
	if (p->registered)
		epoll_ctl(t->epfd, EPOLL_CTL_DEL, p->fd, NULL);
	p->registered = false;
	if (p->prev != NULL)
		p->prev->next = p->next;
	else
		a->kept_head = p->next;
	if (p->next != NULL)
		p->next->prev = p->prev;
	else
		a->kept_tail = p->prev;
	p->prev = NULL;
	p->next = t->kept_graveyard;
	t->kept_graveyard = p;
	t->kept_count--;
}

/* A kept client that closed (or reset) between two requests — the usual end of a keep-alive
 * connection — or one idle for the listener's keepAliveTimeoutMs (the session closes those
 * quietly too, RFC 9112 §9.5): closed with no word to JS, its exchanges already accounted. */
static void kept_close(struct engine_thread *t, struct pending_client *p, const char *reason)
{
	kept_unlink(t, p);
	close(p->fd);
	mpx_client_release(&p->key);
	p->fd = -1;
	kept_end_post(t, p->acc, p->kept_id, reason);
}

void kept_sweep(struct engine_thread *t)
{
	for (struct acceptor *a = t->acceptors; a != NULL; a = a->next)
		while (a->kept_head != NULL && t->now_ms >= a->kept_head->deadline_ms)
			kept_close(t, a->kept_head, "idle");
	while (t->kept_graveyard != NULL) {
		struct pending_client *p = t->kept_graveyard;
		t->kept_graveyard = p->next;
		free(p);
	}
}

int64_t kept_due(const struct engine_thread *t)
{
	int64_t due = INT64_MAX;
	if (t->kept_graveyard != NULL)
		return t->now_ms;
	for (const struct acceptor *a = t->acceptors; a != NULL; a = a->next)
		if (a->kept_head != NULL && a->kept_head->deadline_ms < due)
			due = a->kept_head->deadline_ms;
	return due;
}

/* Peeks at a waiting client: true when it has been handed over (its request head is in, the
 * peek buffer is full without its end, or the socket has nothing more to give), false to wait.
 * The upstream connect starts as soon as the request line is in, not the whole head. */
/* A relay on an admitted client `fd` and its upstream `up` (-1 when the connect failed at once),
 * whose connect(2) is in progress: as every acceptor's relay starts — its fds the engine's alone,
 * the client's slot counted in it, its events to the acceptor's callback. */
static void relay_init(struct engine_thread *t, struct acceptor *a, struct relay *r, int fd, int up, const struct mpx_client_key *key)
{
	r->fd[SIDE_DOWN] = fd;
	r->fd[SIDE_UP] = up;
	r->ended_by = SIDE_NONE;
	r->idle_ms = a->idle_ms;
	r->started_ms = t->now_ms;
	r->started_precise_ms = now_ms_precise();
	r->connecting = true;
	r->connect_deadline_ms = r->started_ms + a->connect_timeout_ms;
	r->acc = a->js;
	r->sole = true;
	r->up_plain_tcp = !a->up_mptcp;
	r->client = *key;
	r->counted = true;
	r->id = atomic_fetch_add(&g_next_id, 1);
	for (int s = 0; s < 2; s++)
		atomic_init(&r->dir[s].bytes, 0);
}

/* 'accepted' for relay r: the client's addresses, and the upstream socket's local one (read after
 * its connect(2), so that the SYN leaves first). */
static void accepted_fill(struct msg *m, const struct relay *r, const struct sockaddr_storage *peer, const struct sockaddr_storage *local, bool down_mptcp, const struct sockaddr_storage *up_local)
{
	m->id = r->id;
	m->peer = *peer;
	m->local = *local;
	if (up_local != NULL) {
		m->up_local = *up_local; /* a parked connection's, known */
	} else if (r->fd[SIDE_UP] >= 0) {
		socklen_t len = sizeof(m->up_local);
		getsockname(r->fd[SIDE_UP], (struct sockaddr *)&m->up_local, &len);
	}
	m->down_mptcp = down_mptcp;
}

/* The authority of an absolute-form http:// request line (between "http://" and the path),
 * NUL-terminated in out; false when there is none or it does not fit. http-head.c checks the
 * rest (and that it is the authority parseRequestTarget would take). */
static bool request_authority(const char *buf, size_t n, char *out, size_t cap)
{
	const char *eol = memmem(buf, n, "\r\n", 2);
	const char *sp = eol != NULL ? memchr(buf, ' ', (size_t)(eol - buf)) : NULL;
	if (sp == NULL || eol - sp < 8 || strncasecmp(sp + 1, "http://", 7) != 0)
		return false;
	const char *h = sp + 8, *e = h;
	while (e < eol && *e != '/' && *e != '?' && *e != ' ')
		e++;
	size_t len = (size_t)(e - h);
	if (len == 0 || len >= cap)
		return false;
	memcpy(out, h, len);
	out[len] = '\0';
	return true;
}

/* serve_at_accept declines a request it took a parked upstream for: the connection goes back
 * to the pool (or is closed), and the client is handed over with no early connect. */
static void unreuse(struct engine_thread *t, struct pending_client *p, const struct park_take *got)
{
	if (!park_put(t, p->acc->js, &p->target, &got->local, p->up, got->mptcp, p->acc->http_park_ms, true /* still on the set: park_take */))
		close(p->up);
	p->up = -1;
}

/*
 * A client's first request served here, from accept to its end, with no hand-over: when its
 * whole head is in, the early connect was issued (the destination rules allowed it), and the
 * C rewrite takes it (a plain GET to that authority: http-head.c). The relay is an exchange as
 * engine-exchange.ts starts one (held client, the engine's response-head rewrite, the
 * keep-alive loop for a client that keeps its connection), and its request stays in the
 * client's socket until the response's first byte: an upstream that fails before answering
 * hands the client back (MSG_DONE's kept fd) for a session to serve it, with its own dial and
 * error reply. JS hears 'accepted' (with the target), 'exchange' per exchange, 'done', and
 * 'head' for a response head the engine declines. False: not one for this (nothing done but
 * the early connect), the client is handed over as usual.
 */
static bool serve_at_accept(struct engine_thread *t, struct pending_client *p, const char *buf, size_t n)
{
	struct acceptor *a = p->acc;
	char authority[MPX_HTTP_AUTHORITY_MAX];
	/* An idle upstream to the request line's target, parked by an exchange before
	 * (upstream-park.c), takes the dial's place; else the early connect, as before. */
	struct park_take got = { .fd = -1 };
	bool reused = false;
	if (!p->dialed) {
		struct line_target lt = line_target_of(a, buf, n);
		reused = lt.allowed && a->http_park_ms > 0 && park_take(t, a->js, &lt.to, &got);
		if (reused) {
			p->dialed = p->has_target = true;
			p->target = lt.to;
			p->up = got.fd;
		} else {
			handoff_dial_to(a, p, &lt);
		}
	}
	if (p->up < 0 || !request_authority(buf, n, authority, sizeof(authority))) {
		if (reused)
			unreuse(t, p, &got);
		return false;
	}
	/* + "Connection: close\r\n" for a client that closes (rewrite.ts's close: true) */
	size_t cap = n + strlen(authority) + strlen(a->http_via) + 64 + 19;
	char *out = malloc(cap);
	struct mpx_request_info info = { 0 };
	size_t len = out != NULL ? mpx_http_rewrite_request(buf, n, authority, a->http_via, a->http_max_head, a->http_max_fields, out, cap, &info) : 0;
	struct relay *r = len > 0 ? calloc(1, sizeof(*r)) : NULL;
	struct msg *m = r != NULL ? acc_msg(a, MSG_ACCEPTED) : NULL;
	if (m != NULL) {
		r->req_head = malloc(info.head_len);
		r->resp_via = strdup(a->http_via);
		r->ex_method = strndup(buf, info.method_len);
		r->ex_target = strndup(buf + info.target_off, info.target_len);
		if (info.client_keeps)
			r->loop_authority = strdup(authority);
	}
	if (m == NULL || r->req_head == NULL || r->resp_via == NULL || r->ex_method == NULL || r->ex_target == NULL ||
	    (info.client_keeps && r->loop_authority == NULL)) {
		if (r != NULL) {
			free(r->req_head), free(r->resp_via), free(r->ex_method), free(r->ex_target), free(r->loop_authority);
			free(r);
		}
		free(m), free(out);
		if (reused)
			unreuse(t, p, &got);
		return false; /* out of memory, or not one the engine takes: JS's */
	}
	/* A client that closes: with the pool on, the upstream is asked to stay all the same (its
	 * response is framed, relay.c frame_up); else Connection: close, last, as
	 * buildUpstreamRequestHead puts it. */
	bool frame_up = !info.client_keeps && a->http_park_ms > 0;
	if (!info.client_keeps && !frame_up) {
		memcpy(out + len - 2, "Connection: close\r\n\r\n", 21);
		len += 19;
	}
	memcpy(r->req_head, buf, info.head_len);
	r->req_head_len = info.head_len;
	relay_init(t, a, r, p->fd, p->up, &p->key); /* its connect was issued at the request line */
	r->park_ms = a->http_park_ms;
	r->up_target = p->target;
	r->frame_up = frame_up;
	if (reused) {
		r->connecting = false; /* connected long ago: the request goes out at once */
		r->up_mptcp = got.mptcp;
		r->on_epoll[SIDE_UP] = true; /* park_take left it on the set */
	}
	r->on_epoll[SIDE_DOWN] = p->registered; /* it waited there for its head */
	p->registered = false;
	r->sample_down = p->down_mptcp;
	r->hold_down = true;
	r->client_keeps = info.client_keeps;
	r->head_state = HEAD_GATHERING;
	r->loop_max_head = a->http_max_head;
	r->loop_max_fields = a->http_max_fields;
	r->loop_idle_ms = a->kept_wait_ms;
	r->loop_pending_skip = info.head_len;
	r->ex_open = true;
	r->ex_started_ms = r->started_precise_ms;
	r->dir[SIDE_DOWN].buf = out;
	r->dir[SIDE_DOWN].len = len;
	accepted_fill(m, r, &p->peer, &p->local, p->down_mptcp, reused ? &got.local : NULL);
	r->up_local = m->up_local; /* for the pool (park_put) */
	m->has_target = true;
	m->up_target = p->target;
	p->fd = p->up = -1; /* the relay's */
	atomic_fetch_add(&a->js->refs, 1); /* until the relay's 'done' is delivered */
	eng_post(t, m);
	if (reused) {
		/* 'connected' at once, saying it is a parked connection (no connect was made). */
		struct msg *c = acc_msg(a, MSG_CONNECTED);
		if (c != NULL) {
			c->id = r->id;
			c->up_mptcp = got.mptcp;
			c->up_reused = true;
			eng_post(t, c);
		}
	}
	r->thread = t;
	eng_hash_insert(r);
	eng_add_relay(t, r);
	return true;
}

static bool handoff_try(struct engine_thread *t, struct pending_client *p)
{
	char buf[HANDOFF_PEEK];
	ssize_t n;
	do
		n = recv(p->fd, buf, sizeof(buf), MSG_PEEK | MSG_DONTWAIT);
	while (n < 0 && errno == EINTR);
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
		return false;
	if (p->kept_id != 0) {
		/* Its next request, or its end: the first byte is enough, since a session serves
		 * the rest of a kept client's requests (planEngineExchange). */
		if (n > 0) {
			kept_unlink(t, p);
			handoff_finish(t, p, buf, (size_t)n);
		} else {
			kept_close(t, p, NULL);
		}
		return true;
	}
	if (n > 0 && (size_t)n < sizeof(buf) && !mpx_head_has_end(buf, (size_t)n, 0)) {
		/* The request line is in: connect now, while the rest comes (not when only a whole
		 * head can say whether to). */
		if (memmem(buf, (size_t)n, "\r\n", 2) != NULL)
			handoff_dial(p->acc, p, buf, (size_t)n);
		return false;
	}
	/* Served here, the fd stays on the epoll set (its relay takes the registration over). */
	if (n > 0 && p->acc->http_serve && mpx_head_has_end(buf, (size_t)n, 0) && serve_at_accept(t, p, buf, (size_t)n))
		return true;
	if (p->registered) {
		/* Before the fd changes hands: once JS has it, it may close it and reuse the number. */
		epoll_ctl(t->epfd, EPOLL_CTL_DEL, p->fd, NULL);
		p->registered = false;
	}
	handoff_finish(t, p, buf, n > 0 ? (size_t)n : 0);
	return true;
}

/* An admitted client of a handoff acceptor (or a kept one given back: no early connect): handed
 * over at once if its request head is already in, else it waits (on the thread's epoll, at most
 * handoff_wait_ms). */
static void handoff_begin(struct engine_thread *t, struct acceptor *a, int fd, const struct sockaddr_storage *peer, const struct mpx_client_key *key, uint64_t kept_id)
{
	bool kept = kept_id != 0;
	struct pending_client *p = calloc(1, sizeof(*p));
	if (p == NULL) {
		close(fd);
		mpx_client_release(key);
		return;
	}
	p->fd = fd;
	p->up = -1;
	p->acc = a;
	p->kept_id = kept_id;
	p->dialed = kept; /* a kept client's next request goes to a session, with its pool */
	p->peer = *peer;
	p->key = *key;
	socklen_t len = sizeof(p->local);
	getsockname(fd, (struct sockaddr *)&p->local, &len);
	p->down_mptcp = client_is_mptcp(a, fd);
	if (kept) {
		/* On its acceptor's list first: from there on kept_unlink (in handoff_try, or below)
		 * takes it off and frees it after the batch. */
		p->deadline_ms = t->now_ms + a->kept_wait_ms;
		p->prev = a->kept_tail;
		if (a->kept_tail != NULL)
			a->kept_tail->next = p;
		else
			a->kept_head = p;
		a->kept_tail = p;
		t->kept_count++;
	} else {
		p->deadline_ms = t->now_ms + a->handoff_wait_ms;
	}
	if (handoff_try(t, p)) {
		if (!kept)
			free(p);
		return;
	}
	struct epoll_event ev = { .events = EPOLLIN | EPOLLRDHUP, .data.u64 = (uint64_t)((uintptr_t)p | PEND_TAG) };
	if (epoll_ctl(t->epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
		/* cannot wait: JS gets it as it is */
		if (kept)
			kept_unlink(t, p);
		handoff_finish(t, p, NULL, 0);
		if (!kept)
			free(p);
		return;
	}
	p->registered = true;
	if (!kept) {
		p->next = t->pending;
		t->pending = p;
	}
}

void acceptor_adopt(struct engine_thread *t, struct acceptor *a, const struct cmd *c)
{
	struct sockaddr_storage peer;
	socklen_t len = sizeof(peer);
	/* The client is already gone (or, never seen so far, the acceptor closed meanwhile). */
	if (a->fd < 0 || getpeername(c->fd, (struct sockaddr *)&peer, &len) != 0) {
		close(c->fd);
		mpx_client_release(&c->key);
		kept_end_post(t, a, c->kept_id, NULL);
		return;
	}
	handoff_begin(t, a, c->fd, &peer, &c->key, c->kept_id);
}

/* Hands a waiting client over now, as it is, and leaves its entry for pending_sweep to free
 * (an event for it may still be further down this batch). */
static void pending_release(struct engine_thread *t, struct pending_client *p)
{
	if (p->fd < 0)
		return;
	if (p->registered)
		epoll_ctl(t->epfd, EPOLL_CTL_DEL, p->fd, NULL);
	p->registered = false;
	handoff_finish(t, p, NULL, 0);
}

void pending_event(struct engine_thread *t, struct pending_client *p)
{
	if (p->fd >= 0)
		handoff_try(t, p); /* handed over: pending_sweep frees the entry after this batch */
}

/* Frees every entry; called at thread exit, once the acceptors have handed theirs over. */
void pending_free_all(struct engine_thread *t)
{
	while (t->pending != NULL) {
		struct pending_client *p = t->pending;
		t->pending = p->next;
		pending_release(t, p);
		free(p);
	}
}

void pending_sweep(struct engine_thread *t)
{
	struct pending_client **pp = &t->pending;
	while (*pp != NULL) {
		struct pending_client *p = *pp;
		if (p->fd >= 0 && t->now_ms >= p->deadline_ms)
			pending_release(t, p);
		if (p->fd < 0) {
			*pp = p->next;
			free(p);
		} else {
			pp = &p->next;
		}
	}
}

int64_t pending_due(const struct engine_thread *t)
{
	int64_t due = INT64_MAX;
	for (const struct pending_client *p = t->pending; p != NULL; p = p->next)
		if (p->fd < 0)
			return t->now_ms; /* a handed-over entry to free */
		else if (p->deadline_ms < due)
			due = p->deadline_ms;
	return due;
}

/* One accepted client: admission, the upstream's connect(2), then the facts for JS and the
 * relay (in its connecting state: see "Connecting upstreams"). The facts are read after
 * connect(2), so the upstream SYN leaves first. */
static void accept_dispatch(struct engine_thread *t, struct relay *r, int err, const char *denied, const char *syscall, bool told);

static void accept_one(struct engine_thread *t, struct acceptor *a, int fd, const struct sockaddr_storage *peer)
{
	struct mpx_client_key key;
	if (!mpx_client_key_from_sockaddr((const struct sockaddr *)peer, &key)) {
		close(fd);
		return;
	}
	if (!a->allow_all && mpx_cidr_match(a->allow, a->nallow, &key) < 0) {
		close(fd);
		post_denied(t, a, peer, "client-network");
		return;
	}
	if (!mpx_client_acquire(&key, a->max_per_client)) {
		close(fd);
		post_denied(t, a, peer, "client-limit");
		return;
	}
	if (a->handoff) {
		handoff_begin(t, a, fd, peer, &key, 0);
		return;
	}
	struct relay *r = calloc(1, sizeof(*r));
	if (r == NULL) {
		mpx_client_release(&key);
		close(fd);
		return;
	}
	/* Where to: the fixed target, or (transparent) where the client was going, if allowed. */
	struct sockaddr_storage local, to = a->up;
	socklen_t local_len = sizeof(local), to_len = a->up_len;
	const char *denied = NULL;
	if (a->transparent) {
		getsockname(fd, (struct sockaddr *)&local, &local_len);
		denied = transparent_target(a, &local, &to, &to_len);
	}
	int up = -1;
	const char *syscall = NULL;
	int err = denied != NULL ? EACCES : acceptor_dial(a, &to, to_len, &up, &syscall);
	if (denied != NULL)
		syscall = "connect";
	/* TCP_NODELAY: inherited from the listening socket (set in acceptorStart), TCP and MPTCP. */
	relay_init(t, a, r, fd, up, &key);
	bool quiet = a->js->engine_only && !a->transparent;
	if (quiet) {
		/* Engine-only (engine-only.c): no 'accepted', so no getsockname for it either. */
		eo_accepted(r, peer, client_is_mptcp(a, fd));
		r->sample_down = r->down_mptcp;
		atomic_fetch_add(&a->js->refs, 1); /* until its line (or 'done') is delivered */
		accept_dispatch(t, r, err, denied, syscall, false);
		return;
	}
	/* A fixed target's client address is only for 'accepted': asked once the SYN is out. */
	if (!a->transparent)
		getsockname(fd, (struct sockaddr *)&local, &local_len);

	struct msg *m = acc_msg(a, MSG_ACCEPTED);
	if (m == NULL) {
		/* Out of memory: nobody could be told, so the client is reset and nothing is kept. */
		struct linger lg = { .l_onoff = 1, .l_linger = 0 };
		setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
		close(fd);
		if (up >= 0)
			close(up);
		mpx_client_release(&key);
		free(r);
		return;
	}
	accepted_fill(m, r, peer, &local, client_is_mptcp(a, fd), NULL);
	r->sample_down = m->down_mptcp;
	atomic_fetch_add(&a->js->refs, 1); /* until the relay's 'done' is delivered */
	eng_post(t, m);
	accept_dispatch(t, r, err, denied, syscall, true);
}

/* An accepted relay onto a thread: this one or (several threads) the next in turn; or, when
 * its connect failed at once (err), to its end. told: JS has been sent its 'accepted', which
 * must reach JS before anything another thread says about r. */
static void accept_dispatch(struct engine_thread *t, struct relay *r, int err, const char *denied, const char *syscall, bool told)
{
	/* Spread the relays over the threads as relayStart does; the owner is set before the
	 * relay is visible to relayAbort (hash_insert). */
	struct engine_thread *rt = t;
	struct cmd *c = NULL;
	if (err == 0 && g_engine.nthreads > 1) {
		rt = &g_engine.threads[atomic_fetch_add_explicit(&g_next_accept_thread, 1, memory_order_relaxed) % (unsigned)g_engine.nthreads];
		if (rt != t && (c = calloc(1, sizeof(*c))) == NULL)
			rt = t;
	}
	r->thread = rt;
	eng_hash_insert(r);
	if (err != 0) {
		r->added = true;
		r->connect_failed = true;
		/* A denied destination: JS asks its own policy for the rule and the message. */
		if (denied != NULL)
			r->reason = "denied", r->denied_by = denied;
		eng_fail(t, r, SIDE_UP, err, syscall);
		return;
	}
	if (c == NULL) {
		eng_add_relay(t, r);
		return;
	}
	c->kind = CMD_ADD;
	c->relay = r;
	if (told)
		eng_flush(t); /* 'accepted' must reach JS before anything the other thread says about r */
	eng_push_cmd(rt, c);
}

void acceptor_run(struct engine_thread *t, struct acceptor *a)
{
	for (int i = 0; i < ACCEPT_BURST && a->fd >= 0 && !atomic_load(&a->stopping); i++) {
		if (!acceptor_prepare(t, a))
			return; /* resting: the clients wait in the backlog */
		struct sockaddr_storage peer;
		socklen_t len = sizeof(peer);
		int fd = accept4(a->fd, (struct sockaddr *)&peer, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return;
			/* A client that reset while queued, a firewall's veto: the next one is fine. */
			if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO || errno == EPERM)
				continue;
			acceptor_pause(t, a, errno, "accept4");
			return;
		}
		accept_one(t, a, fd, &peer);
	}
	/* More may be queued: the registration is level-triggered, so the next wait says so. */
}

void acceptor_add(struct engine_thread *t, struct acceptor *a)
{
	a->next = t->acceptors;
	t->acceptors = a;
	struct epoll_event ev = { .events = EPOLLIN, .data.u64 = (uint64_t)((uintptr_t)a | ACC_TAG) };
	if (epoll_ctl(t->epfd, EPOLL_CTL_ADD, a->fd, &ev) != 0) {
		post_error(t, a, errno, "epoll_ctl");
		acceptor_watch(t, a, 0); /* harmless if not registered */
		a->paused_until = INT64_MAX; /* never resumes; acceptorStop still closes it */
	}
}

/* Stops accepting: the socket is closed (clients still in its backlog are reset by the
 * kernel), JS hears 'stopped'. Relays it started carry on. */
void acceptor_close(struct engine_thread *t, struct acceptor *a)
{
	if (a->fd < 0)
		return;
	epoll_ctl(t->epfd, EPOLL_CTL_DEL, a->fd, NULL);
	close(a->fd);
	a->fd = -1;
	/* Clients accepted but still waiting for their first bytes are JS's to serve, as a closed
	 * net.Server's accepted connections carry on: handed over now, before 'stopped'. */
	for (struct pending_client *p = t->pending; p != NULL; p = p->next)
		if (p->acc == a)
			pending_release(t, p);
	/* Kept clients between two requests are idle keep-alive connections: closed, as a
	 * closing Node server closes its idle ones. */
	while (a->kept_head != NULL)
		kept_close(t, a->kept_head, "stopped");
	/* Its idle upstreams too; relays of its still running close theirs when they end. */
	a->js->closed = true;
	park_close(t, a->js);
	if (a->spare >= 0)
		close(a->spare);
	a->spare = -1;
	for (struct acceptor **p = &t->acceptors; *p != NULL; p = &(*p)->next) {
		if (*p == a) {
			*p = a->next;
			break;
		}
	}
	struct msg *m = acc_msg(a, MSG_STOPPED);
	if (m != NULL)
		eng_post(t, m);
	/* Freed after this batch: an event for it may still be further down the batch. */
	a->next = t->acc_graveyard;
	t->acc_graveyard = a;
}

void bury_acceptors(struct engine_thread *t)
{
	while (t->acc_graveyard != NULL) {
		struct acceptor *a = t->acc_graveyard;
		t->acc_graveyard = a->next;
		free(a->allow);
		mpx_dest_policy_free(&a->dest);
		free(a);
	}
}


/* ---- acceptors: the JS side ---- */

/* The last message about an acceptor (its 'stopped', a relay's 'done', or the lines of its
 * engine-only connections, n at once) frees its callback and lets the event loop go, like a
 * closed net.Server whose connections have all ended. */
static void acc_unref(napi_env env, struct js_side *js, struct acc_js *acc, int n)
{
	if (n == 0 || atomic_fetch_sub(&acc->refs, n) != n)
		return;
	eng_delete_ref(env, acc->on_event);
	eo_unregister(acc);
	eo_free(acc);
	free(acc);
	if (js->live > 0 && --js->live == 0 && !js->released)
		napi_unref_threadsafe_function(env, js->tsfn);
}

/*
 * An acceptor's events reach JS as positional arguments, kind first (enum msg_kind's number),
 * and decodeAcceptorEvent (src/listeners/engine-acceptor.ts) builds the event objects there,
 * from literals. Setting their properties one by one from C was about a fifth of the main
 * thread's time under a short-connection load (V8's per-property map transitions; caching the
 * key strings changed nothing). The layouts, one per kind, are listed there; keep both in step.
 */
void acceptor_event(napi_env env, struct js_side *js, struct msg *m)
{
	struct ev_args a = { .n = 0, .ok = true };
	/* Engine-only connections this message reports (its lines; or, in 'accepted' and 'done',
	 * one that became JS's): not counted as live from here (engine-only.c, quiet_live). */
	if (m->quiet_ends > 0)
		atomic_fetch_sub(&m->acc->quiet_live, m->quiet_ends);
	ev_number(env, &a, m->kind);
	switch (m->kind) {
	case MSG_DONE:
		ev_done_args(env, &a, m);
		break;
	case MSG_CONNECTED:
		ev_number(env, &a, (double)m->id);
		ev_number(env, &a, m->connect_ms);
		ev_bool(env, &a, m->up_mptcp);
		ev_bool(env, &a, m->up_reused);
		break;
	case MSG_ACCEPTED: {
		ev_number(env, &a, (double)m->id);
		ev_address(env, &a, &m->peer);
		ev_address(env, &a, &m->local);
		ev_address(env, &a, &m->up_local);
		ev_bool(env, &a, m->down_mptcp);
		struct sockaddr_storage none = { .ss_family = AF_UNSPEC };
		ev_address(env, &a, m->has_target ? &m->up_target : &none); /* an exchange's target */
		if (m->quiet_ends > 0) /* an engine-only connection whose connect failed: since accept */
			ev_number(env, &a, m->ago_ms);
		break;
	}
	case MSG_LINES:
		/* Access lines (a string, or undefined: none are written), how many engine-only
		 * connections ended, and how many are still live (engine-only.c). */
		if (a.ok)
			ev_push(&a, m->data_len > 0 ? napi_create_string_utf8(env, m->data, m->data_len, &a.v[a.n]) : napi_get_undefined(env, &a.v[a.n]));
		ev_number(env, &a, m->quiet_ends);
		ev_number(env, &a, (double)atomic_load(&m->acc->quiet_live));
		break;
	case MSG_STOPPED:
		ev_number(env, &a, (double)atomic_load(&m->acc->quiet_live)); /* engine-only ones still live */
		break;
	case MSG_HEAD: {
		/* id, bytes | null, complete, code, syscall (undefined ×2 without a failure), request head */
		char namebuf[32];
		ev_number(env, &a, (double)m->id);
		if (a.ok)
			ev_push(&a, m->data != NULL ? napi_create_buffer_copy(env, m->data_len, m->data, NULL, &a.v[a.n]) : napi_get_null(env, &a.v[a.n]));
		ev_bool(env, &a, m->complete);
		ev_string(env, &a, m->err != 0 ? eng_errno_code(m->err, namebuf) : NULL);
		ev_string(env, &a, m->err != 0 ? (m->syscall != NULL ? m->syscall : "read") : NULL);
		if (a.ok)
			ev_push(&a, m->req != NULL ? napi_create_buffer_copy(env, m->req_len, m->req, NULL, &a.v[a.n]) : napi_get_null(env, &a.v[a.n]));
		break;
	}
	case MSG_EXCHANGE:
		/* id, then as onExchange: method, target, status, fromDownstream, fromUpstream, durationMs */
		ev_number(env, &a, (double)m->id);
		eng_exchange_args(env, &a, m);
		break;
	case MSG_DENIED:
		ev_address(env, &a, &m->peer);
		ev_string(env, &a, m->deny_reason);
		break;
	case MSG_ACCEPT_ERROR:
		ev_errno(env, &a, m->err, m->syscall);
		break;
	case MSG_HANDOFF: {
		ev_number(env, &a, m->fd_down);
		ev_number(env, &a, m->fd_up);
		ev_address(env, &a, &m->peer);
		ev_address(env, &a, &m->local);
		ev_bool(env, &a, m->down_mptcp);
		struct sockaddr_storage none = { .ss_family = AF_UNSPEC };
		ev_address(env, &a, m->has_target ? &m->up_target : &none);
		ev_address(env, &a, m->fd_up >= 0 ? &m->up_local : &none);
		if (a.ok) /* the peeked bytes, or null */
			ev_push(&a, m->data != NULL ? napi_create_buffer_copy(env, m->data_len, m->data, NULL, &a.v[a.n]) : napi_get_null(env, &a.v[a.n]));
		ev_number(env, &a, (double)m->kept_id);
		break;
	case MSG_KEPT_END:
		ev_number(env, &a, (double)m->kept_id);
		ev_string(env, &a, m->reason);
		break;
	}
	default:
		break;
	}
	if (a.ok && m->kind == MSG_HANDOFF)
		m->fd_down = m->fd_up = -1; /* JS's now, whatever its callback does with them */
	if (a.ok && m->kind == MSG_DONE)
		m->kept = false; /* a kept client fd (an exchange's) is JS's now */
	if (a.ok)
		eng_call_ref_args(env, m->acc->on_event, a.n, a.v);
	if (m->kind == MSG_DONE || m->kind == MSG_STOPPED)
		acc_unref(env, js, m->acc, 1);
	else if (m->kind == MSG_LINES)
		acc_unref(env, js, m->acc, (int)m->quiet_ends); /* one ref per connection it reports */
	eng_msg_free(m);
}

static bool opt_value(napi_env env, napi_value opts, const char *key, napi_value *out, napi_valuetype *type)
{
	NAPI_CALL_BOOL(env, napi_get_named_property(env, opts, key, out));
	NAPI_CALL_BOOL(env, napi_typeof(env, *out, type));
	return true;
}

/* A number option from min to max (whole milliseconds, counts). */
static bool opt_number(napi_env env, napi_value opts, const char *key, double min, double max, double *out)
{
	napi_value v;
	napi_valuetype t;
	if (!opt_value(env, opts, key, &v, &t) || !eng_arg_number(env, v, key, out))
		return false;
	if (!(*out >= min && *out <= max)) {
		char msg[120];
		snprintf(msg, sizeof(msg), "options.%s must be from %.0f to %.0f", key, min, max);
		napi_throw_range_error(env, "ERR_OUT_OF_RANGE", msg);
		return false;
	}
	return true;
}

static bool opt_bool(napi_env env, napi_value opts, const char *key, bool *out)
{
	napi_value v;
	napi_valuetype t;
	return opt_value(env, opts, key, &v, &t) && mpx_arg_bool(env, v, key, out);
}

/* The acceptor's settings from acceptorStart's options object (relay.h). */
static bool acceptor_options(napi_env env, napi_value opts, struct acceptor *a)
{
	napi_value v;
	napi_valuetype t;
	double port, timeout, idle, max;
	if (!opt_value(env, opts, "handoff", &v, &t))
		return false;
	if (t != napi_undefined && !mpx_arg_bool(env, v, "handoff", &a->handoff))
		return false;
	if (!opt_value(env, opts, "destinations", &v, &t))
		return false;
	if (a->handoff) {
		/* HTTP: no fixed target; destinations, if given, check the early connects. */
		double wait, kept_wait = 60000; /* keptWaitMs's default: keepAliveTimeoutMs's */
		napi_value kv; /* not v and t: they hold "destinations" */
		napi_valuetype kt;
		if (!opt_bool(env, opts, "early", &a->early) || !opt_number(env, opts, "handoffWaitMs", 0, 60000, &wait) ||
		    !opt_value(env, opts, "keptWaitMs", &kv, &kt) || (kt != napi_undefined && !opt_number(env, opts, "keptWaitMs", 0, 2147483647.0, &kept_wait)))
			return false;
		a->handoff_wait_ms = (int64_t)wait;
		a->kept_wait_ms = (int64_t)kept_wait;
		/* httpVia: serve plain first requests here (serve_at_accept), with the head limits. */
		if (!opt_value(env, opts, "httpVia", &kv, &kt))
			return false;
		if (kt != napi_undefined) {
			double max_head, max_fields;
			if (!mpx_arg_string(env, kv, "options.httpVia", a->http_via, sizeof(a->http_via)) ||
			    !opt_number(env, opts, "httpMaxHeadBytes", 1, 1048575, &max_head) || !opt_number(env, opts, "httpMaxFields", 1, 100000, &max_fields))
				return false;
			a->http_serve = a->http_via[0] != '\0';
			a->http_max_head = (uint32_t)max_head;
			a->http_max_fields = (uint32_t)max_fields;
			double park_ms = 0;
			if (!opt_value(env, opts, "httpUpstreamIdleMs", &kv, &kt) ||
			    (kt != napi_undefined && !opt_number(env, opts, "httpUpstreamIdleMs", 0, 3600000, &park_ms)))
				return false;
			a->http_park_ms = (int64_t)park_ms;
		}
		a->has_dest = t == napi_object;
		if (a->has_dest && !mpx_dest_policy_from_js(env, v, &a->dest))
			return false;
		a->up.ss_family = AF_INET;
	} else if ((a->transparent = t == napi_object)) {
		/* Per-connection targets: the spare sockets are IPv4 (most clients); an IPv6 one gets
		 * its own at connect time. */
		if (!mpx_dest_policy_from_js(env, v, &a->dest))
			return false;
		a->up.ss_family = AF_INET;
	} else if (!opt_number(env, opts, "upstreamPort", 1, 65535, &port) || !opt_value(env, opts, "upstreamAddress", &v, &t) ||
		   !mpx_parse_address(env, v, (int32_t)port, &a->up, &a->up_len)) {
		return false;
	}
	if (!opt_value(env, opts, "bindAddress", &v, &t))
		return false;
	if (t != napi_undefined && t != napi_null && !mpx_parse_address(env, v, 0, &a->bind_to, &a->bind_len))
		return false;
	if (!opt_bool(env, opts, "upstreamMptcp", &a->up_mptcp) || !opt_bool(env, opts, "sampleDownstream", &a->sample_down) ||
	    !opt_number(env, opts, "connectTimeoutMs", 1, 2147483647.0, &timeout) ||
	    !opt_number(env, opts, "idleTimeoutMs", 0, 2147483647.0, &idle) ||
	    !opt_number(env, opts, "maxPerClient", 0, 4294967295.0, &max))
		return false;
	a->connect_timeout_ms = (int64_t)timeout;
	a->idle_ms = (int64_t)idle;
	a->max_per_client = (uint32_t)max;
	if (!opt_value(env, opts, "allowClients", &v, &t))
		return false;
	a->allow_all = t == napi_null || t == napi_undefined;
	if (!a->allow_all) {
		const uint8_t *data = NULL;
		size_t len = 0;
		static const char what[] = "options.allowClients must be null or a Buffer of 18-byte rules (family, prefix, 16 address bytes)";
		if (!mpx_arg_buffer(env, v, what, &data, &len))
			return false;
		if (!mpx_cidr_unpack(data, len, &a->allow, &a->nallow)) {
			napi_throw_type_error(env, "ERR_INVALID_ARG_VALUE", what);
			return false;
		}
	}
	return true;
}

/* acceptorStart(listenFd, options, onEvent) → id. See relay.h. On success the engine owns
 * listenFd (closes it at acceptorStop or engine stop); on a throw the caller still does. */
napi_value mpx_js_acceptor_start(napi_env env, napi_callback_info info)
{
	napi_value argv[3], on_event, id;
	int32_t fd;
	if (g_engine.env != NULL && g_engine.env != env) {
		napi_throw_error(env, "ERR_MPTCP_NATIVE_RELAY_ENV", "the native relay engine serves one Node environment per process (the main thread)");
		return NULL;
	}
	if (!mpx_get_args(env, info, 3, argv) || !mpx_arg_int32(env, argv[0], "listenFd", &fd) ||
	    !eng_arg_function(env, argv[2], "onEvent", false, &on_event))
		return NULL;
	napi_valuetype t;
	NAPI_CALL(env, napi_typeof(env, argv[1], &t));
	if (t != napi_object) {
		napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "The \"options\" argument must be of type object");
		return NULL;
	}
	if (fd < 0) {
		napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "listenFd must be an open file descriptor");
		return NULL;
	}
	struct acceptor *a = calloc(1, sizeof(*a));
	struct acc_js *js = calloc(1, sizeof(*js));
	struct cmd *c = calloc(1, sizeof(*c));
	if (a == NULL || js == NULL || c == NULL) {
		free(a), free(js), free(c);
		return mpx_throw_errno(env, ENOMEM, "malloc");
	}
	napi_status st = napi_ok;
	/* Accepted sockets inherit TCP_NODELAY (as Node's noDelay listener sets per socket):
	 * one setsockopt here instead of one per connection. Best effort, like the dialer's. */
	int one = 1;
	setsockopt(fd, SOL_TCP_LEVEL, TCP_NODELAY, &one, sizeof(one));
	if (!acceptor_options(env, argv[1], a) || !eo_options(env, argv[1], js) || !eng_set_nonblocking(env, fd))
		goto fail;
	if ((st = napi_create_reference(env, on_event, 1, &js->on_event)) != napi_ok) {
		mpx_throw_napi_failure(env, st, "napi_create_reference");
		goto fail;
	}
	if (!eng_start_engine(env))
		goto fail;
	if (g_engine.js->live++ == 0 && (st = napi_ref_threadsafe_function(env, g_engine.js->tsfn)) != napi_ok) {
		g_engine.js->live--;
		mpx_throw_napi_failure(env, st, "napi_ref_threadsafe_function");
		goto fail;
	}
	atomic_init(&js->refs, 1);
	a->fd = fd;
	a->spare = -1;
	a->js = js;
	a->id = g_engine.next_acceptor_id++;
	js->id = a->id;
	eo_register(js);
	a->thread = &g_engine.threads[g_engine.next_thread++ % (unsigned)g_engine.nthreads];
	a->gnext = g_engine.acceptors;
	g_engine.acceptors = a;
	NAPI_CALL(env, napi_create_double(env, (double)a->id, &id));
	c->kind = CMD_ACC_ADD;
	c->acceptor = a;
	eng_push_cmd(a->thread, c);
	return id;
fail: /* a JS exception is pending; the fd is still the caller's */
	eng_delete_ref(env, js->on_event);
	eo_free(js);
	mpx_dest_policy_free(&a->dest);
	free(a->allow), free(a), free(js), free(c);
	return NULL;
}

/* acceptorAdopt(id, fd, clientAddress, keptId) → boolean: gives the acceptor back a client
 * whose exchange the engine served with the client kept open (relayStart's holdClient): it
 * waits for its next request there, and is handed over ('handoff' with keptId) when its first
 * bytes come, or closed when it closes, resets or idles out first ('kept-end' with keptId).
 * The fd and the client's slot (clientAddress's) are the engine's on true; false (the acceptor
 * is unknown or stopping) leaves both to the caller. keptId: JS's id for it, from 1. */
napi_value mpx_js_acceptor_adopt(napi_env env, napi_callback_info info)
{
	napi_value argv[4], out;
	uint64_t id, kept_id;
	int32_t fd;
	struct mpx_client_key key;
	if (!mpx_get_args(env, info, 4, argv) || !eng_arg_id(env, argv[0], &id) || !mpx_arg_int32(env, argv[1], "fd", &fd) ||
	    !mpx_arg_client(env, argv[2], &key) || !eng_arg_id(env, argv[3], &kept_id))
		return NULL;
	if (kept_id == 0) {
		napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "keptId must be at least 1");
		return NULL;
	}
	struct acceptor *a = g_engine.acceptors;
	while (a != NULL && a->id != id)
		a = a->gnext;
	bool queued = false;
	if (a != NULL && fd >= 0 && !atomic_load(&a->stopping)) {
		struct cmd *c = calloc(1, sizeof(*c));
		if (c == NULL)
			return mpx_throw_errno(env, ENOMEM, "malloc");
		c->kind = CMD_ACC_ADOPT;
		c->acceptor = a;
		c->fd = fd;
		c->key = key;
		c->kept_id = kept_id;
		/* Commands run in order: an acceptorStop after this one finds the client waiting,
		 * and hands it over with the others (acceptor_close). Queued even when the wake-up
		 * write fails (eng_push_cmd), so the fd is the engine's either way. */
		eng_push_cmd(a->thread, c);
		queued = true;
	}
	NAPI_CALL(env, napi_get_boolean(env, queued, &out));
	return out;
}

/* acceptorStop(id) → boolean: stops accepting ('stopped' follows); false if unknown. */
napi_value mpx_js_acceptor_stop(napi_env env, napi_callback_info info)
{
	napi_value argv[1], out;
	uint64_t id;
	if (!mpx_get_args(env, info, 1, argv) || !eng_arg_id(env, argv[0], &id))
		return NULL;
	struct acceptor **p = &g_engine.acceptors;
	while (*p != NULL && (*p)->id != id)
		p = &(*p)->gnext;
	struct acceptor *a = *p;
	bool queued = false;
	if (a != NULL) {
		struct cmd *c = calloc(1, sizeof(*c));
		if (c == NULL)
			return mpx_throw_errno(env, ENOMEM, "malloc");
		/* Stop listening now, from this thread, as Node's server.close() does (its close(2) of
		 * the last fd): clients still in the backlog are reset and new ones refused at once,
		 * not only when the engine thread gets to CMD_ACC_STOP. shutdown(2) of a listening
		 * socket does that (tcp_disconnect → inet_csk_listen_stop) and leaves the fd, and its
		 * epoll registration, to the thread. */
		atomic_store(&a->stopping, true);
		shutdown(a->fd, SHUT_RDWR);
		*p = a->gnext; /* from here the thread may free it */
		c->kind = CMD_ACC_STOP;
		c->acceptor = a;
		queued = eng_push_cmd(a->thread, c);
	}
	NAPI_CALL(env, napi_get_boolean(env, queued, &out));
	return out;
}
