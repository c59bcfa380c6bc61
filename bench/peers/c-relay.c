/*
 * c-relay: the least a user-space L4 relay does, as a peer for the bench (issue 9). Where the
 * bare Node pipe() relay is the floor, this is the ceiling of a relay on this machine: what the
 * kernel's copies and wake-ups cost with nothing else around them. An MPTCP listener (no
 * mptcpize needed), a non-blocking plain-TCP upstream connect(2) per client, one epoll thread,
 * one 1 MiB buffer per direction while it holds bytes (our engine's size), read(2)/write(2) only,
 * half-closes passed on. No logging, no accounting, no access checks, no buffer caps: the
 * kernel autotunes every socket buffer.
 *
 *   c-relay LISTEN_PORT UPSTREAM_IPV4 UPSTREAM_PORT
 *
 * Built by the bench with `cc -O2` (bench/variants.ts, buildCRelay). Prints `listening PORT`
 * once bound.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#ifndef IPPROTO_MPTCP
#define IPPROTO_MPTCP 262
#endif
#define BUF_SIZE (1 << 20)

struct conn;
/* One direction: bytes read from `from`, not yet written to `to`. */
struct dir {
	int from, to;
	char *buf;
	size_t off, len;
	int eof, shut;
};
/* What an epoll event points at: one side (0 client, 1 upstream) of a connection. */
struct end {
	struct conn *c;
	int side;
};
struct conn {
	int fd[2];
	struct dir d[2]; /* d[s] moves bytes from fd[s] to fd[1 - s] */
	struct end e[2];
	unsigned ev[2]; /* the events each fd is registered for */
};

static int ep;
static struct end gone; /* stands in for a connection freed earlier in the same epoll batch */

/* Register fd[side] for what it can do next: read when its direction's buffer is empty, write
 * when the other direction has bytes for it. */
static void arm(struct conn *c, int side)
{
	unsigned ev = 0;
	if (!c->d[side].eof && c->d[side].len == 0)
		ev |= EPOLLIN;
	if (c->d[1 - side].len > 0)
		ev |= EPOLLOUT;
	if (ev != c->ev[side]) {
		/* Nothing wanted: edge-triggered, so that a hang-up (which epoll always reports) wakes
		 * the loop once, not on every turn while the other side drains. */
		struct epoll_event e = { .events = ev != 0 ? ev : EPOLLET, .data.ptr = &c->e[side] };
		epoll_ctl(ep, EPOLL_CTL_MOD, c->fd[side], &e);
		c->ev[side] = ev;
	}
}

static void conn_free(struct conn *c)
{
	close(c->fd[0]);
	close(c->fd[1]);
	free(c->d[0].buf);
	free(c->d[1].buf);
	free(c);
}

/* Move what can move in one direction: read a buffer's worth, write it, until either side would
 * block. A drained buffer is freed, so an idle connection holds none. -1 on an error. */
static int pump(struct dir *d)
{
	for (;;) {
		if (d->len == 0 && !d->eof) {
			if (d->buf == NULL && (d->buf = malloc(BUF_SIZE)) == NULL)
				return -1;
			ssize_t n = read(d->from, d->buf, BUF_SIZE);
			if (n > 0) {
				d->off = 0;
				d->len = (size_t)n;
			} else if (n == 0) {
				d->eof = 1;
			} else if (errno == EAGAIN || errno == EINTR) {
				break;
			} else {
				return -1;
			}
		}
		if (d->len == 0)
			break;
		ssize_t n = send(d->to, d->buf + d->off, d->len, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR)
				break;
			return -1;
		}
		d->off += (size_t)n;
		d->len -= (size_t)n;
		if (d->len == 0) {
			free(d->buf);
			d->buf = NULL;
		}
	}
	if (d->eof && d->len == 0 && !d->shut) {
		if (shutdown(d->to, SHUT_WR) < 0 && errno != ENOTCONN)
			return -1;
		d->shut = 1;
	}
	return 0;
}

static void accept_all(int l, const struct sockaddr_in *up)
{
	int one = 1;
	for (;;) {
		int cfd = accept4(l, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (cfd < 0)
			return; /* EAGAIN, or an error the next wake-up meets again */
		int u = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_TCP);
		struct conn *c = u < 0 ? NULL : calloc(1, sizeof(*c));
		if (c == NULL || (connect(u, (const struct sockaddr *)up, sizeof(*up)) < 0 && errno != EINPROGRESS)) {
			close(cfd);
			if (u >= 0)
				close(u);
			free(c);
			continue;
		}
		setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		setsockopt(u, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		c->fd[0] = cfd;
		c->fd[1] = u;
		c->d[0].from = c->d[1].to = cfd;
		c->d[1].from = c->d[0].to = u;
		for (int s = 0; s < 2; s++) {
			c->e[s] = (struct end){ c, s };
			/* the upstream's EPOLLOUT says its connect(2) finished (or failed: EPOLLERR) */
			c->ev[s] = EPOLLIN | (s == 1 ? EPOLLOUT : 0);
			struct epoll_event e = { .events = c->ev[s], .data.ptr = &c->e[s] };
			epoll_ctl(ep, EPOLL_CTL_ADD, c->fd[s], &e);
		}
	}
}

int main(int argc, char **argv)
{
	struct sockaddr_in up = { .sin_family = AF_INET };
	if (argc != 4 || inet_pton(AF_INET, argv[2], &up.sin_addr) != 1) {
		fprintf(stderr, "usage: c-relay LISTEN_PORT UPSTREAM_IPV4 UPSTREAM_PORT\n");
		return 2;
	}
	up.sin_port = htons((unsigned short)atoi(argv[3]));
	signal(SIGPIPE, SIG_IGN);
	struct sockaddr_in at = { .sin_family = AF_INET, .sin_port = htons((unsigned short)atoi(argv[1])) };
	int one = 1;
	int l = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_MPTCP);
	if (l < 0 || setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    bind(l, (const struct sockaddr *)&at, sizeof(at)) < 0 || listen(l, 4096) < 0) {
		perror("c-relay: MPTCP listener");
		return 1;
	}
	ep = epoll_create1(EPOLL_CLOEXEC);
	struct epoll_event le = { .events = EPOLLIN, .data.ptr = NULL };
	if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, l, &le) < 0) {
		perror("c-relay: epoll");
		return 1;
	}
	printf("listening %s\n", argv[1]);
	fflush(stdout);
	struct epoll_event evs[256];
	for (;;) {
		int n = epoll_wait(ep, evs, 256, -1);
		if (n < 0 && errno != EINTR) {
			perror("c-relay: epoll_wait");
			return 1;
		}
		for (int i = 0; i < n; i++) {
			struct end *e = evs[i].data.ptr;
			if (e == NULL) {
				accept_all(l, &up);
				continue;
			}
			struct conn *c = e->c;
			if (c == NULL)
				continue;
			if (pump(&c->d[0]) < 0 || pump(&c->d[1]) < 0 || (c->d[0].shut && c->d[1].shut)) {
				for (int j = i + 1; j < n; j++) {
					struct end *o = evs[j].data.ptr;
					if (o != NULL && o->c == c)
						evs[j].data.ptr = &gone;
				}
				conn_free(c);
				continue;
			}
			arm(c, 0);
			arm(c, 1);
		}
	}
}
