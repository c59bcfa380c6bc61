/* SPDX-License-Identifier: MIT
 *
 * Following a chunked message body (RFC 9112 §7.1) without decoding it (chunked.c).
 */
#ifndef MPX_CHUNKED_H
#define MPX_CHUNKED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Where a scanner is in the body: framing.ts's ChunkedDecoder fields, one for one. */
struct mpx_chunked {
	int state;
	uint64_t remaining;
	unsigned size_digits;
	size_t ext_bytes;
	bool ext_started;
	size_t trailer_bytes;
};

/* A scanner at the start of a body. */
void mpx_chunked_init(struct mpx_chunked *s);
/* Follows a chunked body (framing.ts ChunkedDecoder with its default limits, same states and
 * same errors) over `len` more bytes: returns how many of them belong to the body (== len while it
 * goes on, ≤ len once it ended: *ended is set then, and false otherwise) or (size_t)-1 on bad
 * framing (the scanner is then spent). A scanner that has ended takes no more bytes (0). */
size_t mpx_chunked_scan(struct mpx_chunked *s, const char *buf, size_t len, bool *ended);

#endif
