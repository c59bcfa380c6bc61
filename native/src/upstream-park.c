/* SPDX-License-Identifier: MIT
 *
 * The engine's upstream pool: idle upstream connections of HTTP exchanges served from accept
 * (acceptor.c, serve_at_accept), parked on their thread once a response left them reusable, and
 * taken by the next exchange of the same listener to the same target instead of a new dial —
 * what the HTTP front-end's JS pool (src/frontends/http/pool.ts) does for its sessions, with
 * the same limits and the listener's upstreamIdleTimeoutMs. docs/design.md, "The engine's
 * upstream pool".
 *
 * Why: an exchange served from accept otherwise pays a whole upstream connection — socket,
 * connect, handshake, FIN exchange and close, here and at the origin — for one request.
 *
 * Safety, as in the JS pool: an entry is parked only when its response is wholly out, the
 * upstream was asked to keep the connection and said it would, and nothing has been read from
 * it since (relay.c sets park_up only there). While parked it sits on the thread's epoll
 * (level-triggered EPOLLIN|EPOLLRDHUP): a FIN, a reset or a stray byte closes it at once. An
 * upstream that closes as a request goes out on it anyway (the race every connection pool
 * has) fails before answering, and relay.c's loop_unanswered gives the client back to JS with
 * its request still unread in its socket, for a session to send it on a new connection.
 *
 * Only the thread that owns an entry touches it: an acceptor's exchanges run on its thread.
 */
#include "engine.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <unistd.h>

/* The JS pool's defaults (UpstreamPool: maxIdlePerKey, maxIdleTotal), per thread here. */
#define PARK_PER_KEY 16
#define PARK_TOTAL 256
#define PARK_BUCKETS 64

struct parked_upstream {
	int fd;
	const struct acc_js *owner; /* compared, never dereferenced: the key's listener */
	struct sockaddr_storage target, local;
	bool mptcp;
	int64_t due_ms;
	unsigned bucket;
	struct parked_upstream *bnext, *bprev; /* its bucket's, most recently parked first */
	struct parked_upstream *next, *prev; /* the thread's, most recently parked first */
};

struct upstream_park {
	struct parked_upstream *buckets[PARK_BUCKETS];
	struct parked_upstream *head;
	unsigned count;
	int64_t next_due; /* the earliest due_ms, 0 when empty */
	/* Entries taken, closed or expired during this batch: an event for one may still be further
	 * down the batch (its fd -1 then says it is gone), so they are freed after it (park_bury). */
	struct parked_upstream *graveyard;
};

static bool same_target(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
	if (a->ss_family != b->ss_family)
		return false;
	if (a->ss_family == AF_INET) {
		const struct sockaddr_in *x = (const struct sockaddr_in *)a, *y = (const struct sockaddr_in *)b;
		return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
	}
	const struct sockaddr_in6 *x = (const struct sockaddr_in6 *)a, *y = (const struct sockaddr_in6 *)b;
	return x->sin6_port == y->sin6_port && memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr)) == 0 && x->sin6_scope_id == y->sin6_scope_id;
}

static unsigned bucket_of(const struct acc_js *owner, const struct sockaddr_storage *to)
{
	uint64_t h = (uint64_t)(uintptr_t)owner * 0x9E3779B97F4A7C15ull;
	if (to->ss_family == AF_INET) {
		const struct sockaddr_in *s = (const struct sockaddr_in *)to;
		h ^= ((uint64_t)s->sin_addr.s_addr << 16) ^ s->sin_port;
	} else {
		const struct sockaddr_in6 *s = (const struct sockaddr_in6 *)to;
		uint64_t w[2];
		memcpy(w, &s->sin6_addr, sizeof(w));
		h ^= w[0] ^ (w[1] * 31) ^ s->sin6_port;
	}
	h *= 0xBF58476D1CE4E5B9ull;
	return (unsigned)(h >> 58) % PARK_BUCKETS;
}

/* Takes e out of the pool into the graveyard (its fd is the caller's to close or keep). */
static void unlink_entry(struct upstream_park *p, struct parked_upstream *e)
{
	if (e->bprev != NULL)
		e->bprev->bnext = e->bnext;
	else
		p->buckets[e->bucket] = e->bnext;
	if (e->bnext != NULL)
		e->bnext->bprev = e->bprev;
	if (e->prev != NULL)
		e->prev->next = e->next;
	else
		p->head = e->next;
	if (e->next != NULL)
		e->next->prev = e->prev;
	p->count--;
	e->fd = -1;
	e->next = p->graveyard;
	p->graveyard = e;
}

/* Unlinks and closes an entry (which also takes its fd off the epoll set: the fd is the
 * engine's alone). */
static void drop(struct upstream_park *p, struct parked_upstream *e)
{
	int fd = e->fd;
	unlink_entry(p, e);
	close(fd);
}

bool park_put(struct engine_thread *t, const struct acc_js *owner, const struct sockaddr_storage *to, const struct sockaddr_storage *local, int fd, bool mptcp,
	      int64_t idle_ms, bool registered)
{
	if (t->park == NULL && (t->park = calloc(1, sizeof(*t->park))) == NULL)
		return false;
	struct upstream_park *p = t->park;
	if (p->count >= PARK_TOTAL || idle_ms <= 0)
		return false;
	unsigned b = bucket_of(owner, to);
	unsigned same = 0;
	for (struct parked_upstream *e = p->buckets[b]; e != NULL; e = e->bnext)
		if (e->owner == owner && same_target(&e->target, to) && ++same >= PARK_PER_KEY)
			return false;
	struct parked_upstream *e = calloc(1, sizeof(*e));
	if (e == NULL)
		return false;
	struct epoll_event ev = { .events = EPOLLIN | EPOLLRDHUP, .data.u64 = (uint64_t)((uintptr_t)e | PARK_TAG) };
	if (epoll_ctl(t->epfd, registered ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, fd, &ev) != 0) {
		free(e);
		return false;
	}
	e->local = *local;
	e->fd = fd;
	e->owner = owner;
	e->target = *to;
	e->mptcp = mptcp;
	e->due_ms = t->now_ms + idle_ms;
	e->bucket = b;
	e->bnext = p->buckets[b];
	if (e->bnext != NULL)
		e->bnext->bprev = e;
	p->buckets[b] = e;
	e->next = p->head;
	if (e->next != NULL)
		e->next->prev = e;
	p->head = e;
	p->count++;
	if (p->next_due == 0 || e->due_ms < p->next_due)
		p->next_due = e->due_ms;
	return true;
}

static struct parked_upstream *find(const struct upstream_park *p, const struct acc_js *owner, const struct sockaddr_storage *to)
{
	if (p == NULL || p->count == 0)
		return NULL;
	for (struct parked_upstream *e = p->buckets[bucket_of(owner, to)]; e != NULL; e = e->bnext)
		if (e->owner == owner && same_target(&e->target, to))
			return e;
	return NULL;
}

bool park_take(struct engine_thread *t, const struct acc_js *owner, const struct sockaddr_storage *to, struct park_take *out)
{
	struct parked_upstream *e = find(t->park, owner, to);
	if (e == NULL)
		return false;
	/* Left on the epoll set: the relay that takes it re-tags it (EPOLL_CTL_MOD, struct relay
	 * on_epoll); an event already fetched under this entry's tag finds it gone (fd -1). */
	out->fd = e->fd;
	out->local = e->local;
	out->mptcp = e->mptcp;
	unlink_entry(t->park, e);
	return true;
}

void park_event(struct engine_thread *t, struct parked_upstream *e)
{
	if (e->fd >= 0) /* else taken or closed earlier in this batch */
		drop(t->park, e);
}

void park_bury(struct engine_thread *t)
{
	struct upstream_park *p = t->park;
	while (p != NULL && p->graveyard != NULL) {
		struct parked_upstream *e = p->graveyard;
		p->graveyard = e->next;
		free(e);
	}
}

int64_t park_due(const struct engine_thread *t)
{
	return t->park != NULL && t->park->count > 0 ? t->park->next_due : 0;
}

void park_sweep(struct engine_thread *t)
{
	struct upstream_park *p = t->park;
	if (p == NULL)
		return;
	int64_t next = 0;
	for (struct parked_upstream *e = p->head, *n; e != NULL; e = n) {
		n = e->next;
		if (e->due_ms <= t->now_ms)
			drop(p, e);
		else if (next == 0 || e->due_ms < next)
			next = e->due_ms;
	}
	p->next_due = next;
}

void park_close(struct engine_thread *t, const struct acc_js *owner)
{
	struct upstream_park *p = t->park;
	if (p == NULL)
		return;
	for (struct parked_upstream *e = p->head, *n; e != NULL; e = n) {
		n = e->next;
		if (owner == NULL || e->owner == owner)
			drop(p, e);
	}
	if (owner == NULL) { /* the thread stops: after its last batch */
		park_bury(t);
		free(p);
		t->park = NULL;
	}
}
