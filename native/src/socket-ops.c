/* SPDX-License-Identifier: MIT
 *
 * Plain socket system calls for fds Node cannot create itself (IPPROTO_MPTCP).
 * Each function does one syscall and throws a Node-shaped error on failure; choosing
 * options, families and fallbacks is the TypeScript layer's job (src/mptcp/).
 */
#include "socket-ops.h"
#include "common.h"
#include "mptcp-uapi.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* Name the option in the `syscall` field ("setsockopt(SO_REUSEPORT)") so a failure
 * says which option the kernel refused. Unknown pairs get numbers. */
static void option_label(char *buf, size_t size, const char *call, int level, int name)
{
	static const struct { int level, name; const char *label; } known[] = {
		{ SOL_SOCKET, SO_REUSEADDR, "SO_REUSEADDR" },
		{ SOL_SOCKET, SO_REUSEPORT, "SO_REUSEPORT" },
		{ SOL_SOCKET, SO_BINDTODEVICE, "SO_BINDTODEVICE" },
		{ SOL_SOCKET, SO_KEEPALIVE, "SO_KEEPALIVE" },
		{ SOL_SOCKET, SO_RCVBUF, "SO_RCVBUF" },
		{ SOL_SOCKET, SO_SNDBUF, "SO_SNDBUF" },
		{ IPPROTO_IPV6, IPV6_V6ONLY, "IPV6_V6ONLY" },
		{ IPPROTO_IP, IP_TRANSPARENT, "IP_TRANSPARENT" },
		{ IPPROTO_IP, IP_FREEBIND, "IP_FREEBIND" },
		{ IPPROTO_IPV6, IPV6_TRANSPARENT, "IPV6_TRANSPARENT" },
		{ IPPROTO_TCP, TCP_NODELAY, "TCP_NODELAY" },
	};
	for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++) {
		if (known[i].level == level && known[i].name == name) {
			snprintf(buf, size, "%s(%s)", call, known[i].label);
			return;
		}
	}
	snprintf(buf, size, "%s(%d, %d)", call, level, name);
}

/* socket(family: 4|6, mptcp: boolean): number
 * Non-blocking and close-on-exec from the start, as libuv expects of fds it adopts. */
napi_value mpx_js_socket(napi_env env, napi_callback_info info)
{
	napi_value argv[2];
	int32_t family;
	bool mptcp;
	if (!mpx_get_args(env, info, 2, argv) || !mpx_arg_int32(env, argv[0], "family", &family) ||
	    !mpx_arg_bool(env, argv[1], "mptcp", &mptcp))
		return NULL;
	if (family != 4 && family != 6) {
		napi_throw_range_error(env, "ERR_INVALID_ARG_VALUE", "family must be 4 or 6");
		return NULL;
	}
	int fd = socket(family == 6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
			mptcp ? IPPROTO_MPTCP : 0);
	if (fd < 0)
		return mpx_throw_errno(env, errno, mptcp ? "socket(IPPROTO_MPTCP)" : "socket");
	napi_value out;
	NAPI_CALL(env, napi_create_int32(env, fd, &out));
	return out;
}

/* setIntOption(fd, level, name, value): undefined */
napi_value mpx_js_set_int_option(napi_env env, napi_callback_info info)
{
	napi_value argv[4];
	int32_t fd, level, name, value;
	if (!mpx_get_args(env, info, 4, argv) || !mpx_arg_int32(env, argv[0], "fd", &fd) ||
	    !mpx_arg_int32(env, argv[1], "level", &level) || !mpx_arg_int32(env, argv[2], "name", &name) ||
	    !mpx_arg_int32(env, argv[3], "value", &value))
		return NULL;
	int v = value;
	if (setsockopt(fd, level, name, &v, sizeof(v)) != 0) {
		char label[64];
		option_label(label, sizeof(label), "setsockopt", level, name);
		return mpx_throw_errno(env, errno, label);
	}
	return NULL;
}

/* setStringOption(fd, level, name, value): undefined — e.g. SO_BINDTODEVICE "eth0".
 * The kernel takes the bytes without a trailing NUL (socket(7)). */
napi_value mpx_js_set_string_option(napi_env env, napi_callback_info info)
{
	napi_value argv[4];
	int32_t fd, level, name;
	char value[IFNAMSIZ * 4];
	if (!mpx_get_args(env, info, 4, argv) || !mpx_arg_int32(env, argv[0], "fd", &fd) ||
	    !mpx_arg_int32(env, argv[1], "level", &level) || !mpx_arg_int32(env, argv[2], "name", &name) ||
	    !mpx_arg_string(env, argv[3], "value", value, sizeof(value)))
		return NULL;
	if (setsockopt(fd, level, name, value, (socklen_t)strlen(value)) != 0) {
		char label[64];
		option_label(label, sizeof(label), "setsockopt", level, name);
		return mpx_throw_errno(env, errno, label);
	}
	return NULL;
}

bool mpx_sockaddr_from_literal(const char *text, uint16_t port, struct sockaddr_storage *ss, socklen_t *len)
{
	memset(ss, 0, sizeof(*ss));
	struct sockaddr_in *sin = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
	if (inet_pton(AF_INET, text, &sin->sin_addr) == 1) {
		sin->sin_family = AF_INET;
		sin->sin_port = htons(port);
		*len = sizeof(*sin);
		return true;
	}
	if (inet_pton(AF_INET6, text, &sin6->sin6_addr) == 1) {
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(port);
		*len = sizeof(*sin6);
		return true;
	}
	return false;
}

/* Parse an IP literal into a sockaddr; EINVAL-style TypeError if it is not one. */
bool mpx_parse_address(napi_env env, napi_value js_addr, int32_t port, struct sockaddr_storage *ss, socklen_t *len)
{
	char text[INET6_ADDRSTRLEN + 1];
	if (!mpx_arg_string(env, js_addr, "address", text, sizeof(text)))
		return false;
	if (port < 0 || port > 65535) {
		napi_throw_range_error(env, "ERR_SOCKET_BAD_PORT", "port must be >= 0 and < 65536");
		return false;
	}
	if (mpx_sockaddr_from_literal(text, (uint16_t)port, ss, len))
		return true;
	napi_throw_type_error(env, "ERR_INVALID_IP_ADDRESS", "address must be an IPv4 or IPv6 literal");
	return false;
}

/* The (fd, address, port) arguments of bind() and connect(). */
static bool fd_address_args(napi_env env, napi_callback_info info, int32_t *fd, struct sockaddr_storage *ss, socklen_t *len)
{
	napi_value argv[3];
	int32_t port;
	return mpx_get_args(env, info, 3, argv) && mpx_arg_int32(env, argv[0], "fd", fd) && mpx_arg_int32(env, argv[2], "port", &port) &&
	       mpx_parse_address(env, argv[1], port, ss, len);
}

/* bind(fd, address, port): undefined. An IPv4 literal on an AF_INET6 socket is the
 * caller's mistake and gets the kernel's answer (EAFNOSUPPORT / EINVAL). */
napi_value mpx_js_bind(napi_env env, napi_callback_info info)
{
	int32_t fd;
	struct sockaddr_storage ss;
	socklen_t len;
	if (!fd_address_args(env, info, &fd, &ss, &len))
		return NULL;
	if (bind(fd, (struct sockaddr *)&ss, len) != 0)
		return mpx_throw_errno(env, errno, "bind");
	return NULL;
}

/* connect(fd, address, port): boolean — connect(2) on a non-blocking socket (from socket()).
 * true: connected at once; false: EINPROGRESS, the handshake goes on and completion is
 * signalled by the socket becoming writable, with the outcome in SO_ERROR (connect(2),
 * EINPROGRESS). EINTR also leaves the connect running (it completes asynchronously, as
 * for EINPROGRESS), so it is false too. Anything else (ENETUNREACH, EADDRNOTAVAIL, ...)
 * is thrown Node-style with syscall 'connect'. */
napi_value mpx_js_connect(napi_env env, napi_callback_info info)
{
	int32_t fd;
	struct sockaddr_storage ss;
	socklen_t len;
	if (!fd_address_args(env, info, &fd, &ss, &len))
		return NULL;
	bool connected = true;
	if (connect(fd, (struct sockaddr *)&ss, len) != 0) {
		if (errno != EINPROGRESS && errno != EINTR)
			return mpx_throw_errno(env, errno, "connect");
		connected = false;
	}
	napi_value out;
	NAPI_CALL(env, napi_get_boolean(env, connected, &out));
	return out;
}

/* listen(fd, backlog): undefined */
napi_value mpx_js_listen(napi_env env, napi_callback_info info)
{
	napi_value argv[2];
	int32_t fd, backlog;
	if (!mpx_get_args(env, info, 2, argv) || !mpx_arg_int32(env, argv[0], "fd", &fd) ||
	    !mpx_arg_int32(env, argv[1], "backlog", &backlog))
		return NULL;
	if (listen(fd, backlog) != 0)
		return mpx_throw_errno(env, errno, "listen");
	return NULL;
}

/* close(fd): undefined. EINTR still closes the fd on Linux, so it is not an error. */
napi_value mpx_js_close(napi_env env, napi_callback_info info)
{
	napi_value argv[1];
	int32_t fd;
	if (!mpx_get_args(env, info, 1, argv) || !mpx_arg_int32(env, argv[0], "fd", &fd))
		return NULL;
	if (close(fd) != 0 && errno != EINTR)
		return mpx_throw_errno(env, errno, "close");
	return NULL;
}

/* peek(fd, buffer): number — the bytes already received, copied into `buffer` and left in the
 * socket (recv with MSG_PEEK | MSG_DONTWAIT): what Node will read next, seen early. 0 when
 * nothing is there yet (EAGAIN) or at EOF; other failures throw with syscall 'recv'. The HTTP
 * front-end looks at a new client's request line this way in the accept turn (docs/design.md,
 * "The upstream connect starts at accept"). */
napi_value mpx_js_peek(napi_env env, napi_callback_info info)
{
	napi_value argv[2];
	int32_t fd;
	const uint8_t *data;
	size_t len;
	if (!mpx_get_args(env, info, 2, argv) || !mpx_arg_int32(env, argv[0], "fd", &fd) ||
	    !mpx_arg_buffer(env, argv[1], "The \"buffer\" argument must be a Buffer", &data, &len))
		return NULL;
	ssize_t n;
	do
		n = recv(fd, (void *)data, len, MSG_PEEK | MSG_DONTWAIT);
	while (n < 0 && errno == EINTR);
	if (n < 0) {
		if (errno != EAGAIN && errno != EWOULDBLOCK)
			return mpx_throw_errno(env, errno, "recv");
		n = 0;
	}
	napi_value out;
	NAPI_CALL(env, napi_create_int32(env, (int32_t)n, &out));
	return out;
}

/* dup(fd): number — close-on-exec like every fd we create. */
napi_value mpx_js_dup(napi_env env, napi_callback_info info)
{
	napi_value argv[1];
	int32_t fd;
	if (!mpx_get_args(env, info, 1, argv) || !mpx_arg_int32(env, argv[0], "fd", &fd))
		return NULL;
	int copy = fcntl(fd, F_DUPFD_CLOEXEC, 0);
	if (copy < 0)
		return mpx_throw_errno(env, errno, "dup");
	napi_value out;
	NAPI_CALL(env, napi_create_int32(env, copy, &out));
	return out;
}

typedef int (*name_fn)(int, struct sockaddr *, socklen_t *);

static napi_value sock_name(napi_env env, napi_callback_info info, name_fn fn, const char *syscall)
{
	napi_value argv[1];
	int32_t fd;
	if (!mpx_get_args(env, info, 1, argv) || !mpx_arg_int32(env, argv[0], "fd", &fd))
		return NULL;
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	memset(&ss, 0, sizeof(ss));
	if (fn(fd, (struct sockaddr *)&ss, &len) != 0)
		return mpx_throw_errno(env, errno, syscall);
	napi_value out;
	if (!mpx_sockaddr_to_object(env, (struct sockaddr *)&ss, &out))
		return NULL;
	return out;
}

/* localAddress(fd): {family, address, port} | null — getsockname(2). With TPROXY the
 * local address of an accepted socket is the client's original destination. */
napi_value mpx_js_local_address(napi_env env, napi_callback_info info)
{
	return sock_name(env, info, getsockname, "getsockname");
}

/* remoteAddress(fd): {family, address, port} | null — getpeername(2). */
napi_value mpx_js_remote_address(napi_env env, napi_callback_info info)
{
	return sock_name(env, info, getpeername, "getpeername");
}

/* originalDestination(fd, family: 4|6): {family, address, port}
 * Netfilter's conntrack lookup for REDIRECT/DNAT'ed connections: SO_ORIGINAL_DST at
 * SOL_IP (linux/netfilter_ipv4.h) or IP6T_SO_ORIGINAL_DST at SOL_IPV6
 * (linux/netfilter_ipv6/ip6_tables.h). ENOENT means no conntrack entry (not redirected). */
napi_value mpx_js_original_destination(napi_env env, napi_callback_info info)
{
	napi_value argv[2];
	int32_t fd, family;
	if (!mpx_get_args(env, info, 2, argv) || !mpx_arg_int32(env, argv[0], "fd", &fd) ||
	    !mpx_arg_int32(env, argv[1], "family", &family))
		return NULL;
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	memset(&ss, 0, sizeof(ss));
	int rc;
	if (family == 6)
		rc = getsockopt(fd, IPPROTO_IPV6, MPX_IP6T_SO_ORIGINAL_DST, &ss, &len);
	else
		rc = getsockopt(fd, IPPROTO_IP, MPX_SO_ORIGINAL_DST, &ss, &len);
	if (rc != 0)
		return mpx_throw_errno(env, errno,
				       family == 6 ? "getsockopt(IP6T_SO_ORIGINAL_DST)" : "getsockopt(SO_ORIGINAL_DST)");
	napi_value out;
	if (!mpx_sockaddr_to_object(env, (struct sockaddr *)&ss, &out))
		return NULL;
	return out;
}

napi_value mpx_socket_constants(napi_env env)
{
	static const struct { const char *name; int value; } table[] = {
		{ "SOL_SOCKET", SOL_SOCKET },
		{ "SO_REUSEADDR", SO_REUSEADDR },
		{ "SO_REUSEPORT", SO_REUSEPORT },
		{ "SO_BINDTODEVICE", SO_BINDTODEVICE },
		{ "SO_KEEPALIVE", SO_KEEPALIVE },
		{ "IPPROTO_IP", IPPROTO_IP },
		{ "IPPROTO_IPV6", IPPROTO_IPV6 },
		{ "IPPROTO_TCP", IPPROTO_TCP },
		{ "IPPROTO_MPTCP", IPPROTO_MPTCP },
		{ "SOL_MPTCP", SOL_MPTCP },
		{ "IPV6_V6ONLY", IPV6_V6ONLY },
		{ "IP_TRANSPARENT", IP_TRANSPARENT },
		{ "IP_FREEBIND", IP_FREEBIND },
		{ "IPV6_TRANSPARENT", IPV6_TRANSPARENT },
		{ "TCP_NODELAY", TCP_NODELAY },
		{ "MPTCP_INFO_FLAG_FALLBACK", (int)MPX_MPTCP_INFO_FLAG_FALLBACK },
		{ "MPTCP_INFO_FLAG_REMOTE_KEY_RECEIVED", (int)MPX_MPTCP_INFO_FLAG_REMOTE_KEY_RECEIVED },
	};
	napi_value obj;
	NAPI_CALL(env, napi_create_object(env, &obj));
	for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
		if (!mpx_set_i32(env, obj, table[i].name, table[i].value))
			return NULL;
	}
	return obj;
}
