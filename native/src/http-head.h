/* SPDX-License-Identifier: MIT
 *
 * HTTP response heads for the engine-served exchanges (http-head.c).
 */
#ifndef MPX_HTTP_HEAD_H
#define MPX_HTTP_HEAD_H

#include <stdbool.h>
#include <stddef.h>

/* The response head at the start of `in` (its first `len` bytes, body bytes after it allowed)
 * rewritten for a client closed after it, as rewrite.ts's buildDownstreamResponseHead does with
 * close: true and `via` as the pseudonym, into `out` (at most `cap` bytes); *status gets its
 * status code. 0 when the head is not one it handles (or `out` is too small): JS's then. */
size_t mpx_http_rewrite_response(const char *in, size_t len, const char *via, char *out, size_t cap, int *status);
/* Where the head in `in` ends (after its CRLF CRLF), or 0 when it is not whole. */
size_t mpx_http_head_end(const char *in, size_t len);

#endif
