/* SPDX-License-Identifier: MIT
 *
 * HTTP message heads for the engine-served exchanges (http-head.c).
 */
#ifndef MPX_HTTP_HEAD_H
#define MPX_HTTP_HEAD_H

#include <stdbool.h>
#include <stddef.h>

/* Buffer sizes (NUL included): the longest Via pseudonym the engine writes itself (relayStart's
 * responseVia, an acceptor's httpVia), and the longest authority (host:port) it compares a
 * request's with (the keep-alive loop, serve_at_accept). */
#define MPX_HTTP_VIA_MAX 128
#define MPX_HTTP_AUTHORITY_MAX 300
#include <stdint.h>

/* How a response's body is delimited: framing.ts's BodyFraming kinds. */
enum mpx_body_kind { MPX_BODY_NONE = 0, MPX_BODY_LENGTH = 1, MPX_BODY_CHUNKED = 2, MPX_BODY_CLOSE = 3 };

struct mpx_response_info {
	int status;
	int body;            /* enum mpx_body_kind: framing.ts responseBodyFraming(res, head_request ? 'HEAD' : 'GET') */
	uint64_t length;     /* MPX_BODY_LENGTH: the body's length */
	bool upstream_keeps; /* index.ts upstreamAllowsPersistence(res) */
	bool client_closed;  /* the rewritten head says Connection: close */
};

/* The response head at the start of `in` (its first `len` bytes, body bytes after it allowed)
 * rewritten for the client into `out` (at most `cap` bytes), as rewrite.ts's
 * buildDownstreamResponseHead does with `via` as the pseudonym, close: C, http10KeepAlive and
 * dechunk false, where C = !client_keeps or a body delimited by the upstream's close; `info`
 * says what the head holds. 0 when the head is not one it handles (or `out` is too small): JS's
 * then, and `info` is left as it was. */
size_t mpx_http_rewrite_response_ex(const char *in, size_t len, const char *via, bool client_keeps, bool head_request, char *out, size_t cap,
				    struct mpx_response_info *info);

/* The same for a GET whose client is closed after the response, declining any response with
 * Transfer-Encoding (an engine exchange relays such a body raw until the upstream closes, which
 * JS decides on); *status gets the status code. */
size_t mpx_http_rewrite_response(const char *in, size_t len, const char *via, char *out, size_t cap, int *status);

struct mpx_request_info {
	size_t head_len;               /* bytes of the head in `in`, through its CRLF CRLF */
	bool client_keeps;             /* parser.ts clientWantsPersistence(head) */
	size_t method_len;             /* the method is in[0 .. method_len) */
	size_t target_off, target_len; /* the request-target as the client sent it (for the access log) */
};

/* The request head at the start of `in` (bytes after it allowed, not part of it) rewritten for
 * an upstream connection already open to `authority`, into `out` (at most `cap` bytes): what
 * rewrite.ts's buildUpstreamRequestHead gives with close: false, when the head is a bodiless
 * `GET http://<authority>... HTTP/1.1` within JS's limits (max_head_bytes, max_fields) that JS
 * would accept; `info` says where its parts are. 0 for anything else, a head not yet whole
 * included (JS's then; `info` left as it was). */
size_t mpx_http_rewrite_request(const char *in, size_t len, const char *authority, const char *via, size_t max_head_bytes, size_t max_fields,
				char *out, size_t cap, struct mpx_request_info *info);

/* Where the head in `in` ends (after its CRLF CRLF), or 0 when it is not whole. */
size_t mpx_http_head_end(const char *in, size_t len);

#endif
