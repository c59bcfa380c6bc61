/* SPDX-License-Identifier: MIT
 *
 * The response-head rewrite of the HTTP proxy's engine-served exchanges, in C, for the plain
 * heads that make up nearly all responses: it saves the exchange a round trip through the JS
 * thread (src/frontends/http/engine-exchange.ts; relay.c, "response-head hook").
 *
 * It produces exactly what src/frontends/http/rewrite.ts's buildDownstreamResponseHead does for
 * a client that is closed after the response (close: true): our version on the status line,
 * hop-by-hop fields and those the Connection field names removed, Via appended to the last Via
 * line (or added), `Connection: close` last. It declines — and JS does the whole thing, with its
 * full checks and its 502s — for anything that is not squarely simple: an interim (1xx) or
 * unusual status, Transfer-Encoding, a Content-Length that is not one plain number, a bare LF,
 * a character a field may not hold, obs-fold, more than MAX_FIELDS fields. A test compares the
 * two on a corpus of heads (test/unit/http-head-native.test.ts).
 */
#include "http-head.h"

#include <stdbool.h>
#include <string.h>
#include <strings.h>
#include <sys/types.h>

#define MAX_FIELDS 100
#define MAX_CONNECTION_NAMES 16

struct field {
	const char *name, *value;
	size_t name_len, value_len;
	bool drop;
};

/* RFC 9110 §5.6.2 tchar. */
static bool is_tchar(unsigned char c)
{
	if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
		return true;
	return c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* A field value's bytes (RFC 9110 §5.5: VCHAR, obs-text, SP, HTAB), as parser.ts's FIELD_VALUE. */
static bool is_value_char(unsigned char c)
{
	return c == '\t' || (c >= 0x20 && c != 0x7f);
}

static bool name_is(const struct field *f, const char *lname)
{
	return f->name_len == strlen(lname) && strncasecmp(f->name, lname, f->name_len) == 0;
}

/* parser.ts's HOP_BY_HOP (rewrite.ts). */
static bool hop_by_hop(const struct field *f)
{
	static const char *const names[] = { "connection",	    "keep-alive",	  "proxy-connection", "te",
					     "trailer",		    "upgrade",		  "proxy-authorization",
					     "proxy-authenticate", "proxy-authentication-info" };
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (name_is(f, names[i]))
			return true;
	return false;
}

static bool put(char *out, size_t cap, size_t *n, const char *s, size_t len)
{
	if (*n + len > cap)
		return false;
	memcpy(out + *n, s, len);
	*n += len;
	return true;
}

/* OWS off both ends. */
static void trim(const char **s, size_t *len)
{
	while (*len > 0 && (**s == ' ' || **s == '\t')) {
		(*s)++;
		(*len)--;
	}
	while (*len > 0 && ((*s)[*len - 1] == ' ' || (*s)[*len - 1] == '\t'))
		(*len)--;
}

/* The next element of the comma-separated list in [*p, end), trimmed (parser.ts's headerList;
 * an empty one has length 0); false once the list is done. */
static bool next_list_element(const char **p, const char *end, const char **el, size_t *len)
{
	if (*p >= end)
		return false;
	const char *comma = memchr(*p, ',', (size_t)(end - *p));
	const char *stop = comma != NULL ? comma : end;
	*el = *p;
	*len = (size_t)(stop - *p);
	trim(el, len);
	*p = comma != NULL ? comma + 1 : end;
	return true;
}

size_t mpx_http_rewrite_response(const char *in, size_t len, const char *via, char *out, size_t cap, int *status)
{
	const char *end = memmem(in, len, "\r\n\r\n", 4);
	if (end == NULL)
		return 0;
	size_t head_len = (size_t)(end - in) + 2; /* through the last field's CRLF */
	/* Status line: HTTP/1.d SP 3DIGIT [SP reason], as parseResponseHead's pattern. */
	const char *eol = memmem(in, head_len, "\r\n", 2);
	size_t sl = (size_t)(eol - in);
	if (sl < 12 || memcmp(in, "HTTP/1.", 7) != 0 || in[7] < '0' || in[7] > '9' || in[8] != ' ')
		return 0;
	if (in[9] < '2' || in[9] > '5' || in[10] < '0' || in[10] > '9' || in[11] < '0' || in[11] > '9')
		return 0; /* 1xx (interim, 101) and anything outside 200–599: JS's */
	const char *reason = in + 12;
	size_t reason_len = 0;
	if (sl > 12) {
		if (in[12] != ' ')
			return 0;
		reason = in + 13;
		reason_len = sl - 13;
		for (size_t i = 0; i < reason_len; i++)
			if (!is_value_char((unsigned char)reason[i]))
				return 0;
	}
	const char *version = in[7] == '0' ? "1.0" : "1.1";
	*status = (in[9] - '0') * 100 + (in[10] - '0') * 10 + (in[11] - '0');

	/* Fields. */
	struct field f[MAX_FIELDS];
	size_t nf = 0;
	const char *p = eol + 2, *stop = in + head_len;
	while (p < stop) {
		const char *le = memmem(p, (size_t)(stop - p), "\r\n", 2);
		if (le == NULL || nf == MAX_FIELDS)
			return 0;
		const char *colon = memchr(p, ':', (size_t)(le - p));
		if (colon == NULL || colon == p)
			return 0; /* also obs-fold: a line starting with SP or HTAB has no token before ':' */
		for (const char *c = p; c < colon; c++)
			if (!is_tchar((unsigned char)*c))
				return 0;
		const char *v = colon + 1;
		size_t vl = (size_t)(le - v);
		for (size_t i = 0; i < vl; i++)
			if (!is_value_char((unsigned char)v[i]))
				return 0;
		trim(&v, &vl);
		f[nf] = (struct field){ .name = p, .name_len = (size_t)(colon - p), .value = v, .value_len = vl };
		nf++;
		p = le + 2;
	}

	/* Framing: no Transfer-Encoding (JS's), at most one Content-Length, plain digits. */
	bool seen_length = false;
	const char *listed[MAX_CONNECTION_NAMES];
	size_t listed_len[MAX_CONNECTION_NAMES], nlisted = 0;
	for (size_t i = 0; i < nf; i++) {
		if (name_is(&f[i], "transfer-encoding"))
			return 0;
		if (name_is(&f[i], "content-length")) {
			if (seen_length || f[i].value_len == 0 || f[i].value_len > 15)
				return 0;
			for (size_t k = 0; k < f[i].value_len; k++)
				if (f[i].value[k] < '0' || f[i].value[k] > '9')
					return 0;
			seen_length = true;
		}
		if (name_is(&f[i], "connection")) {
			/* Its options name more fields to drop (empty ones skipped). */
			const char *o = f[i].value, *t;
			size_t tl;
			while (next_list_element(&o, f[i].value + f[i].value_len, &t, &tl)) {
				if (tl == 0)
					continue;
				if (nlisted == MAX_CONNECTION_NAMES)
					return 0;
				listed[nlisted] = t;
				listed_len[nlisted++] = tl;
			}
		}
	}
	ssize_t last_via = -1;
	for (size_t i = 0; i < nf; i++) {
		f[i].drop = hop_by_hop(&f[i]);
		for (size_t k = 0; k < nlisted && !f[i].drop; k++)
			f[i].drop = f[i].name_len == listed_len[k] && strncasecmp(f[i].name, listed[k], listed_len[k]) == 0;
		if (!f[i].drop && name_is(&f[i], "via"))
			last_via = (ssize_t)i;
	}

	size_t n = 0;
	size_t via_len = strlen(via);
	bool ok = put(out, cap, &n, "HTTP/1.1 ", 9) && put(out, cap, &n, in + 9, 3) && put(out, cap, &n, " ", 1) &&
		  put(out, cap, &n, reason, reason_len) && put(out, cap, &n, "\r\n", 2);
	for (size_t i = 0; i < nf && ok; i++) {
		if (f[i].drop)
			continue;
		ok = put(out, cap, &n, f[i].name, f[i].name_len) && put(out, cap, &n, ": ", 2) && put(out, cap, &n, f[i].value, f[i].value_len);
		if (ok && (ssize_t)i == last_via) /* appendVia: on the last Via line */
			ok = (f[i].value_len == 0 || put(out, cap, &n, ", ", 2)) && put(out, cap, &n, version, 3) && put(out, cap, &n, " ", 1) &&
			     put(out, cap, &n, via, via_len);
		ok = ok && put(out, cap, &n, "\r\n", 2);
	}
	if (ok && last_via < 0)
		ok = put(out, cap, &n, "Via: ", 5) && put(out, cap, &n, version, 3) && put(out, cap, &n, " ", 1) && put(out, cap, &n, via, via_len) &&
		     put(out, cap, &n, "\r\n", 2);
	ok = ok && put(out, cap, &n, "Connection: close\r\n\r\n", 21);
	return ok ? n : 0;
}

size_t mpx_http_head_end(const char *in, size_t len)
{
	const char *end = memmem(in, len, "\r\n\r\n", 4);
	return end == NULL ? 0 : (size_t)(end - in) + 4;
}
