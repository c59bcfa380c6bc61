/* SPDX-License-Identifier: MIT
 *
 * The head rewrites of the HTTP proxy's engine-served exchanges, in C, for the plain heads that
 * make up nearly all messages: they save the exchange a round trip through the JS thread
 * (src/frontends/http/engine-exchange.ts; relay.c, "response-head hook"), and let the engine
 * serve a keep-alive client's later GETs on a kept upstream connection by itself.
 *
 * Each produces exactly what src/frontends/http/rewrite.ts does for the same head — responses as
 * buildDownstreamResponseHead (our version on the status line, hop-by-hop fields and those the
 * Connection field names removed, Via appended to the last Via line or added, `Connection:
 * close` when the client is closed after it), requests as buildUpstreamRequestHead (origin-form
 * path, Host first, the same removals, Via) — or declines, and JS does the whole thing with its
 * full checks and its error replies. Declining is always safe; differing never is. So they
 * decline anything that is not squarely simple or that JS's parser (parser.ts) would refuse: an
 * interim (1xx) or unusual status, framing that is odd (several Content-Lengths, one that is not
 * a plain number, Transfer-Encoding in HTTP/1.0 or naming chunked twice), a bare CR or LF, a
 * character a name or value may not hold, obs-fold, more than MAX_FIELDS fields; for requests
 * anything but a bodiless HTTP/1.1 GET in absolute form to the given authority. Tests compare
 * them with the TS code on corpora of heads and on random mutations of them
 * (test/unit/http-head-native.test.ts).
 */
#include "http-head.h"

#include <stdbool.h>
#include <string.h>
#include <sys/types.h>

/* Field lines handled; a head with more is JS's (its limits are 1000 for responses and
 * maxHeaderCount, 100 by default, for requests). It bounds the stack the field table takes. */
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

static bool is_digit(char c)
{
	return c >= '0' && c <= '9';
}

/* Case-insensitive equality as JS's toLowerCase() sees it for the ASCII names and options compared
 * here: ASCII letters only, whatever the C locale says (strncasecmp would follow it). */
static bool same_ci(const char *a, const char *b, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		unsigned char x = (unsigned char)a[i], y = (unsigned char)b[i];
		if (x >= 'A' && x <= 'Z')
			x += 'a' - 'A';
		if (y >= 'A' && y <= 'Z')
			y += 'a' - 'A';
		if (x != y)
			return false;
	}
	return true;
}

static bool equals_ci(const char *s, size_t len, const char *lname)
{
	return len == strlen(lname) && same_ci(s, lname, len);
}

static bool name_is(const struct field *f, const char *lname)
{
	return equals_ci(f->name, f->name_len, lname);
}

/* rewrite.ts's HOP_BY_HOP. */
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

/* OWS off both ends: parser.ts's trimOws, which makes a field's value. */
static void trim(const char **s, size_t *len)
{
	while (*len > 0 && (**s == ' ' || **s == '\t')) {
		(*s)++;
		(*len)--;
	}
	while (*len > 0 && ((*s)[*len - 1] == ' ' || (*s)[*len - 1] == '\t'))
		(*len)--;
}

/* What JS's String.prototype.trim takes off a list element (headerList, parseContentLength) of a
 * latin1 value: besides SP and HTAB also NBSP (0xa0) — and CR, LF, VT, FF, which no valid value
 * holds. Trimming only OWS would keep "close\xa0" an option JS does not see. */
static bool js_space(unsigned char c)
{
	return c == ' ' || c == '\t' || c == 0xa0 || (c >= 0x0a && c <= 0x0d);
}

static void trim_js(const char **s, size_t *len)
{
	while (*len > 0 && js_space((unsigned char)**s)) {
		(*s)++;
		(*len)--;
	}
	while (*len > 0 && js_space((unsigned char)(*s)[*len - 1]))
		(*len)--;
}

/* The next element of the comma-separated list in [*p, end), trimmed (parser.ts's headerList;
 * an empty one has length 0, and headerList skips it); false once the list is done. */
static bool next_list_element(const char **p, const char *end, const char **el, size_t *len)
{
	if (*p >= end)
		return false;
	const char *comma = memchr(*p, ',', (size_t)(end - *p));
	const char *stop = comma != NULL ? comma : end;
	*el = *p;
	*len = (size_t)(stop - *p);
	trim_js(el, len);
	*p = comma != NULL ? comma + 1 : end;
	return true;
}

/* Whether the lname fields' lists name `option` (hasConnectionOption for Connection; the same
 * for Proxy-Connection, as clientWantsPersistence reads it). */
static bool lists_option(const struct field *f, size_t nf, const char *lname, const char *option)
{
	for (size_t i = 0; i < nf; i++) {
		if (!name_is(&f[i], lname))
			continue;
		const char *o = f[i].value, *t;
		size_t tl;
		while (next_list_element(&o, f[i].value + f[i].value_len, &t, &tl))
			if (equals_ci(t, tl, option))
				return true;
	}
	return false;
}

/* The field lines in [p, stop) (each ending with its CRLF) into f[]: names tokens, values of
 * value characters, OWS-trimmed. False for a line parseHeaderLines refuses — no colon, an empty
 * name, obs-fold (a line starting with SP or HTAB has no token before ':'), any CR or LF but the
 * line's end — or more than MAX_FIELDS lines. */
static bool parse_fields(const char *p, const char *stop, struct field *f, size_t *nf)
{
	*nf = 0;
	while (p < stop) {
		const char *le = memmem(p, (size_t)(stop - p), "\r\n", 2);
		if (le == NULL || *nf == MAX_FIELDS)
			return false;
		const char *colon = memchr(p, ':', (size_t)(le - p));
		if (colon == NULL || colon == p)
			return false;
		for (const char *c = p; c < colon; c++)
			if (!is_tchar((unsigned char)*c))
				return false;
		const char *v = colon + 1;
		size_t vl = (size_t)(le - v);
		for (size_t i = 0; i < vl; i++)
			if (!is_value_char((unsigned char)v[i]))
				return false;
		trim(&v, &vl);
		f[*nf] = (struct field){ .name = p, .name_len = (size_t)(colon - p), .value = v, .value_len = vl };
		(*nf)++;
		p = le + 2;
	}
	return true;
}

/* removeHopByHop's choice (hop-by-hop fields and those the Connection fields name), plus Host
 * fields for a request (buildUpstreamRequestHead puts its own first); *last_via gets the kept
 * Via field appendVia extends, or -1. False (decline) when Connection names too many. */
static bool mark_dropped(struct field *f, size_t nf, bool drop_host, ssize_t *last_via)
{
	const char *listed[MAX_CONNECTION_NAMES];
	size_t listed_len[MAX_CONNECTION_NAMES], nlisted = 0;
	for (size_t i = 0; i < nf; i++) {
		if (!name_is(&f[i], "connection"))
			continue;
		const char *o = f[i].value, *t;
		size_t tl;
		while (next_list_element(&o, f[i].value + f[i].value_len, &t, &tl)) {
			if (tl == 0)
				continue;
			if (nlisted == MAX_CONNECTION_NAMES)
				return false;
			listed[nlisted] = t;
			listed_len[nlisted++] = tl;
		}
	}
	*last_via = -1;
	for (size_t i = 0; i < nf; i++) {
		f[i].drop = hop_by_hop(&f[i]) || (drop_host && name_is(&f[i], "host"));
		for (size_t k = 0; k < nlisted && !f[i].drop; k++)
			f[i].drop = f[i].name_len == listed_len[k] && same_ci(f[i].name, listed[k], listed_len[k]);
		if (!f[i].drop && name_is(&f[i], "via"))
			*last_via = (ssize_t)i;
	}
	return true;
}

/* The kept fields, `name: value` each, with our hop appended to the last Via (or a Via line
 * added after them): appendVia with `version` as the received protocol. */
static bool put_fields(char *out, size_t cap, size_t *n, const struct field *f, size_t nf, ssize_t last_via, const char *version, const char *via)
{
	size_t via_len = strlen(via);
	bool ok = true;
	for (size_t i = 0; i < nf && ok; i++) {
		if (f[i].drop)
			continue;
		ok = put(out, cap, n, f[i].name, f[i].name_len) && put(out, cap, n, ": ", 2) && put(out, cap, n, f[i].value, f[i].value_len);
		if (ok && (ssize_t)i == last_via)
			ok = (f[i].value_len == 0 || put(out, cap, n, ", ", 2)) && put(out, cap, n, version, 3) && put(out, cap, n, " ", 1) &&
			     put(out, cap, n, via, via_len);
		ok = ok && put(out, cap, n, "\r\n", 2);
	}
	if (ok && last_via < 0)
		ok = put(out, cap, n, "Via: ", 5) && put(out, cap, n, version, 3) && put(out, cap, n, " ", 1) && put(out, cap, n, via, via_len) &&
		     put(out, cap, n, "\r\n", 2);
	return ok;
}

/* A Content-Length value parseContentLength takes as one plain number (1 to 15 digits, JS-trimmed);
 * a list ("5, 5"), even of equal numbers, is declined rather than followed. */
static bool plain_length(const char *v, size_t vl, uint64_t *length)
{
	trim_js(&v, &vl);
	if (vl == 0 || vl > 15)
		return false;
	uint64_t x = 0;
	for (size_t k = 0; k < vl; k++) {
		if (!is_digit(v[k]))
			return false;
		x = x * 10 + (uint64_t)(v[k] - '0');
	}
	*length = x;
	return true;
}

/* The response rewrite; allow_te false declines any Transfer-Encoding (mpx_http_rewrite_response). */
static size_t rewrite_response(const char *in, size_t len, const char *via, bool client_keeps, bool head_request, bool allow_te, char *out,
			       size_t cap, struct mpx_response_info *info)
{
	const char *end = memmem(in, len, "\r\n\r\n", 4);
	if (end == NULL)
		return 0;
	size_t head_len = (size_t)(end - in) + 2; /* through the last field's CRLF */
	/* Status line: HTTP/1.d SP 3DIGIT [SP reason], as parseResponseHead's pattern (leading empty
	 * lines, which HeadDecoder skips, are declined here). */
	const char *eol = memmem(in, head_len, "\r\n", 2);
	size_t sl = (size_t)(eol - in);
	if (sl < 12 || memcmp(in, "HTTP/1.", 7) != 0 || !is_digit(in[7]) || in[8] != ' ')
		return 0;
	if (in[9] < '2' || in[9] > '5' || !is_digit(in[10]) || !is_digit(in[11]))
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
	bool http10 = in[7] == '0';
	const char *version = http10 ? "1.0" : "1.1";
	int status = (in[9] - '0') * 100 + (in[10] - '0') * 10 + (in[11] - '0');

	struct field f[MAX_FIELDS];
	size_t nf;
	if (!parse_fields(eol + 2, in + head_len, f, &nf))
		return 0;

	/* Framing (responseBodyFraming). Transfer-Encoding: its codings over all its lines, as
	 * headerList gives them; chunked last and once is chunked, no chunked is until-close, chunked
	 * twice throws in JS, and so does any TE in HTTP/1.0 (declined here even where JS's HEAD, 204
	 * and 304 return before looking). Content-Length: one plain number, else declined, also where
	 * JS would not look at it. */
	size_t te_fields = 0, chunked = 0, cl_fields = 0;
	bool last_chunked = false;
	uint64_t length = 0;
	for (size_t i = 0; i < nf; i++) {
		if (name_is(&f[i], "transfer-encoding")) {
			if (!allow_te || http10)
				return 0;
			te_fields++;
			const char *o = f[i].value, *t;
			size_t tl;
			while (next_list_element(&o, f[i].value + f[i].value_len, &t, &tl)) {
				if (tl == 0)
					continue;
				last_chunked = equals_ci(t, tl, "chunked");
				chunked += last_chunked;
			}
		} else if (name_is(&f[i], "content-length")) {
			if (cl_fields++ > 0 || !plain_length(f[i].value, f[i].value_len, &length))
				return 0;
		}
	}
	if (chunked > 1)
		return 0;
	int body;
	if (head_request || status == 204 || status == 304)
		body = MPX_BODY_NONE;
	else if (te_fields > 0)
		body = chunked == 1 && last_chunked ? MPX_BODY_CHUNKED : MPX_BODY_CLOSE;
	else if (cl_fields > 0)
		body = length == 0 ? MPX_BODY_NONE : MPX_BODY_LENGTH;
	else
		body = MPX_BODY_CLOSE;
	bool close = !client_keeps || body == MPX_BODY_CLOSE;

	ssize_t last_via;
	if (!mark_dropped(f, nf, false, &last_via))
		return 0;
	/* A Transfer-Encoding that is forwarded takes the Content-Length fields out (RFC 9112 §6.3;
	 * buildDownstreamResponseHead looks at the fields left after removeHopByHop). */
	bool te_kept = false;
	for (size_t i = 0; i < nf; i++)
		te_kept = te_kept || (!f[i].drop && name_is(&f[i], "transfer-encoding"));
	for (size_t i = 0; i < nf && te_kept; i++)
		if (name_is(&f[i], "content-length"))
			f[i].drop = true;

	size_t n = 0;
	bool ok = put(out, cap, &n, "HTTP/1.1 ", 9) && put(out, cap, &n, in + 9, 3) && put(out, cap, &n, " ", 1) &&
		  put(out, cap, &n, reason, reason_len) && put(out, cap, &n, "\r\n", 2) && put_fields(out, cap, &n, f, nf, last_via, version, via);
	if (ok && close)
		ok = put(out, cap, &n, "Connection: close\r\n", 19);
	ok = ok && put(out, cap, &n, "\r\n", 2);
	if (!ok)
		return 0;
	*info = (struct mpx_response_info){
		.status = status,
		.body = body,
		.length = body == MPX_BODY_LENGTH ? length : 0,
		/* upstreamAllowsPersistence: HTTP/1.1 unless it says close, HTTP/1.0 when it says keep-alive. */
		.upstream_keeps = http10 ? lists_option(f, nf, "connection", "keep-alive") : !lists_option(f, nf, "connection", "close"),
		.client_closed = close,
	};
	return n;
}

size_t mpx_http_rewrite_response_ex(const char *in, size_t len, const char *via, bool client_keeps, bool head_request, char *out, size_t cap,
				    struct mpx_response_info *info)
{
	return rewrite_response(in, len, via, client_keeps, head_request, true, out, cap, info);
}

size_t mpx_http_rewrite_response(const char *in, size_t len, const char *via, char *out, size_t cap, int *status)
{
	struct mpx_response_info info;
	size_t n = rewrite_response(in, len, via, false, false, false, out, cap, &info);
	if (n > 0)
		*status = info.status;
	return n;
}

/* parseAuthority(authority, 80) does not throw: "[v6]" or a reg-name (REG_NAME), then an optional
 * ":port" of 1 to 5 digits within 1–65535 (empty: the default port). */
static bool authority_valid(const char *a, size_t n)
{
	const char *port;
	size_t port_len;
	if (n > 0 && a[0] == '[') {
		const char *close = memchr(a, ']', n);
		if (close == NULL || close == a + 1)
			return false;
		for (const char *c = a + 1; c < close; c++)
			if (!(is_digit(*c) || (*c >= 'a' && *c <= 'f') || (*c >= 'A' && *c <= 'F') || *c == ':' || *c == '.'))
				return false;
		const char *after = close + 1;
		size_t after_len = n - (size_t)(after - a);
		if (after_len > 0 && *after != ':')
			return false;
		port = after_len > 0 ? after + 1 : after;
		port_len = after_len > 0 ? after_len - 1 : 0;
	} else {
		const char *colon = memrchr(a, ':', n);
		size_t host_len = colon != NULL ? (size_t)(colon - a) : n;
		if (host_len == 0)
			return false;
		for (size_t i = 0; i < host_len; i++) {
			unsigned char c = (unsigned char)a[i];
			if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || is_digit((char)c) || (c != 0 && strchr("-._~!$&'()*+,;=%", c) != NULL)))
				return false;
		}
		port = colon != NULL ? colon + 1 : a + n;
		port_len = colon != NULL ? n - host_len - 1 : 0;
	}
	if (port_len == 0)
		return true;
	if (port_len > 5)
		return false;
	unsigned p = 0;
	for (size_t i = 0; i < port_len; i++) {
		if (!is_digit(port[i]))
			return false;
		p = p * 10 + (unsigned)(port[i] - '0');
	}
	return p >= 1 && p <= 65535;
}

size_t mpx_http_rewrite_request(const char *in, size_t len, const char *authority, const char *via, size_t max_head_bytes, size_t max_fields,
				char *out, size_t cap, struct mpx_request_info *info)
{
	/* Where HeadDecoder ends the head: the first empty line. With every line ending in CRLF and
	 * no CR or LF inside one (all checked below, or declined) that is the first CRLF CRLF. */
	const char *end = memmem(in, len, "\r\n\r\n", 4);
	if (end == NULL)
		return 0;
	size_t head_len = (size_t)(end - in) + 4;
	if (head_len > max_head_bytes)
		return 0; /* JS: 431 */
	/* Request line: exactly `GET SP target SP HTTP/1.1` (parseRequestHead splits it on SP into
	 * three; other methods, and other versions JS takes, are JS's). */
	const char *eol = memmem(in, head_len, "\r\n", 2);
	if ((size_t)(eol - in) < 4 || memcmp(in, "GET ", 4) != 0)
		return 0;
	const char *target = in + 4;
	const char *sp = memchr(target, ' ', (size_t)(eol - target));
	if (sp == NULL || eol - sp != 9 || memcmp(sp + 1, "HTTP/1.1", 8) != 0)
		return 0;
	size_t target_len = (size_t)(sp - target);
	/* TARGET (visible ASCII), and parseRequestTarget: absolute-form `http://` (any case), no
	 * fragment, an authority without userinfo that parseAuthority takes — and ours exactly. */
	for (size_t i = 0; i < target_len; i++) {
		unsigned char c = (unsigned char)target[i];
		if (c < 0x21 || c > 0x7e || c == '#')
			return 0;
	}
	if (target_len < 7 || !same_ci(target, "http://", 7))
		return 0;
	const char *rest = target + 7;
	size_t rest_len = target_len - 7, auth_len = 0;
	while (auth_len < rest_len && rest[auth_len] != '/' && rest[auth_len] != '?')
		auth_len++;
	if (auth_len == 0 || auth_len != strlen(authority) || memcmp(rest, authority, auth_len) != 0 || memchr(rest, '@', auth_len) != NULL ||
	    !authority_valid(rest, auth_len))
		return 0;
	const char *path = rest + auth_len;
	size_t path_len = rest_len - auth_len;

	struct field f[MAX_FIELDS];
	size_t nf;
	if (!parse_fields(eol + 2, end + 2, f, &nf) || nf > max_fields)
		return 0; /* JS: 400, or 431 past maxHeaderCount */
	/* No body (Content-Length or Transfer-Encoding at all: the session's framing), one Host at
	 * most (more is a 400), no Expect (100-continue is the session's). */
	size_t hosts = 0;
	for (size_t i = 0; i < nf; i++) {
		if (name_is(&f[i], "content-length") || name_is(&f[i], "transfer-encoding") || name_is(&f[i], "expect"))
			return 0;
		hosts += name_is(&f[i], "host");
	}
	if (hosts > 1)
		return 0;

	ssize_t last_via;
	if (!mark_dropped(f, nf, true, &last_via))
		return 0;
	/* The path as parseRequestTarget makes it: '' is '/', '?q' is '/?q'. */
	size_t n = 0;
	bool ok = put(out, cap, &n, "GET ", 4) && (path_len > 0 && path[0] == '/' ? true : put(out, cap, &n, "/", 1)) &&
		  put(out, cap, &n, path, path_len) && put(out, cap, &n, " HTTP/1.1\r\nHost: ", 17) && put(out, cap, &n, authority, auth_len) &&
		  put(out, cap, &n, "\r\n", 2) && put_fields(out, cap, &n, f, nf, last_via, "1.1", via) && put(out, cap, &n, "\r\n", 2);
	if (!ok)
		return 0;
	*info = (struct mpx_request_info){
		.head_len = head_len,
		/* clientWantsPersistence for HTTP/1.1: unless Connection or Proxy-Connection says close. */
		.client_keeps = !lists_option(f, nf, "connection", "close") && !lists_option(f, nf, "proxy-connection", "close"),
		.method_len = 3,
		.target_off = 4,
		.target_len = target_len,
	};
	return n;
}

size_t mpx_http_head_end(const char *in, size_t len)
{
	const char *end = memmem(in, len, "\r\n\r\n", 4);
	return end == NULL ? 0 : (size_t)(end - in) + 4;
}
