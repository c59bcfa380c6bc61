/* SPDX-License-Identifier: MIT
 *
 * The chunked-body scanner for bodies the engine passes through unchanged: where a chunked
 * body ends (so a kept-alive connection's next message starts after it) and whether its framing
 * is sound. It is src/frontends/http/framing.ts's ChunkedDecoder with defaultChunkedLimits,
 * state for state and error for error, so that the engine and JS agree on every body: a body JS
 * would refuse the engine refuses too, and both end it at the same byte. Chunk data is skipped in
 * one step; only the framing bytes are looked at. A test feeds both the same bodies, split at
 * random, and mutated (test/unit/http-chunked-native.test.ts).
 */
#include "chunked.h"

/* framing.ts's ChunkState, in its order. */
enum {
	CH_SIZE,
	CH_EXT,
	CH_SIZE_LF,
	CH_DATA,
	CH_DATA_CR,
	CH_DATA_LF,
	CH_TRAILER_START,
	CH_TRAILER,
	CH_TRAILER_LF,
	CH_FINAL_LF,
	CH_DONE,
	CH_FAILED, /* ours: after an error (JS's decoder is not used again after it throws) */
};

/* defaultChunkedLimits. */
#define MAX_EXTENSION_BYTES 4096
#define MAX_TRAILER_BYTES 16384
/* 13 hex digits keep the size within 2^53, as JS's Number needs; the same limit here. */
#define MAX_SIZE_DIGITS 13

void mpx_chunked_init(struct mpx_chunked *s)
{
	*s = (struct mpx_chunked){ .state = CH_SIZE };
}

static int hex_value(unsigned char b)
{
	if (b >= '0' && b <= '9')
		return b - '0';
	if (b >= 'A' && b <= 'F')
		return b - 'A' + 10;
	if (b >= 'a' && b <= 'f')
		return b - 'a' + 10;
	return -1;
}

/* A byte no extension or trailer line may hold: LF, a CTL other than HTAB, DEL (CR is the
 * caller's, it ends the line). */
static bool line_forbidden(unsigned char b)
{
	return b == '\n' || (b < 0x20 && b != '\t') || b == 0x7f;
}

size_t mpx_chunked_scan(struct mpx_chunked *s, const char *buf, size_t len, bool *ended)
{
	const unsigned char *p = (const unsigned char *)buf;
	size_t i = 0;
	*ended = false;
	if (s->state == CH_FAILED)
		return (size_t)-1;
	while (i < len) {
		unsigned char b = p[i];
		switch (s->state) {
		case CH_SIZE: {
			int h = hex_value(b);
			if (h >= 0) {
				if (++s->size_digits > MAX_SIZE_DIGITS)
					goto fail;
				s->remaining = s->remaining * 16 + (uint64_t)h;
			} else if (s->size_digits == 0) {
				goto fail; /* missing chunk size */
			} else if (b == '\r') {
				s->state = CH_SIZE_LF;
			} else if (b == ';' || b == ' ' || b == '\t') {
				/* chunk-ext = *( BWS ";" BWS ext-name [ BWS "=" BWS ext-val ] ): its first byte
				 * is not counted against the limit, as in JS. */
				s->state = CH_EXT;
				s->ext_bytes = 0;
				s->ext_started = b == ';';
			} else {
				goto fail;
			}
			i++;
			break;
		}
		case CH_EXT:
			if (b == '\r') {
				if (!s->ext_started)
					goto fail; /* whitespace after the size without an extension */
				s->state = CH_SIZE_LF;
			} else if (line_forbidden(b)) {
				goto fail;
			} else {
				if (!s->ext_started) {
					if (b == ';')
						s->ext_started = true;
					else if (b != ' ' && b != '\t')
						goto fail;
				}
				if (++s->ext_bytes > MAX_EXTENSION_BYTES)
					goto fail;
			}
			i++;
			break;
		case CH_SIZE_LF:
			if (b != '\n')
				goto fail;
			i++;
			s->size_digits = 0;
			s->state = s->remaining == 0 ? CH_TRAILER_START : CH_DATA;
			break;
		case CH_DATA: {
			uint64_t take = len - i < s->remaining ? len - i : s->remaining;
			i += (size_t)take;
			s->remaining -= take;
			if (s->remaining == 0)
				s->state = CH_DATA_CR;
			break;
		}
		case CH_DATA_CR:
			if (b != '\r')
				goto fail;
			s->state = CH_DATA_LF;
			i++;
			break;
		case CH_DATA_LF:
			if (b != '\n')
				goto fail;
			s->state = CH_SIZE;
			i++;
			break;
		case CH_TRAILER_START:
		case CH_TRAILER:
			/* The empty line ending the body (at a line's start), a trailer line's CR, or one of
			 * its bytes. */
			if (b == '\r') {
				s->state = s->state == CH_TRAILER_START ? CH_FINAL_LF : CH_TRAILER_LF;
			} else {
				if (line_forbidden(b) || ++s->trailer_bytes > MAX_TRAILER_BYTES)
					goto fail;
				s->state = CH_TRAILER;
			}
			i++;
			break;
		case CH_TRAILER_LF:
			if (b != '\n')
				goto fail;
			s->state = CH_TRAILER_START;
			i++;
			break;
		case CH_FINAL_LF:
			if (b != '\n')
				goto fail;
			s->state = CH_DONE;
			*ended = true;
			return i + 1;
		default: /* CH_DONE */
			*ended = true;
			return i;
		}
	}
	*ended = s->state == CH_DONE;
	return i;
fail:
	s->state = CH_FAILED;
	return (size_t)-1;
}
