/* SPDX-License-Identifier: MIT
 *
 * Engine-only connections. A tcp-forward listener's connection, accepted, dialed and relayed
 * by the engine (acceptor.c), used to reach JS three times — 'accepted', 'connected', 'done' —
 * for JS to make its context, publish conn:open and conn:close, and write its access line.
 * Where nothing in the process listens for those but the access log (src/main.ts decides, at
 * start), that JavaScript was the whole gap between our forward's connection rate and a bare
 * C relay's (docs/design.md, "Engine-only connections"): 40–64 µs of CPU per connection.
 *
 * So, for an acceptor started with options.engineOnly, a connection that succeeds is the
 * engine's alone: it draws its connection number from the counter JS draws from too
 * (g_conn_counter), and at its end its access line — made here from JS's template, character
 * for character the line accessLogJson makes (a test compares them) — joins the acceptor's one
 * MSG_LINES in the thread's outbox. JS writes each batch of lines with one call, and counts the
 * connections still live from it (drain at shutdown). One whose connect fails is JS's after
 * all: its 'accepted' is sent at its end, then its 'done', so the dial's warning and error come
 * from the same code as for any other connection.
 */
#include "engine-only.h"
#include "common.h"
#include "mptcp-info.h"
#include "relay.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

_Atomic uint64_t g_conn_counter;

/* JS-thread list of acceptors' JS sides, for acceptorAbortAll after the acceptor stopped. */
static struct acc_js *g_acc_list;

void eo_register(struct acc_js *js)
{
	js->gnext = g_acc_list;
	g_acc_list = js;
}

void eo_unregister(struct acc_js *js)
{
	for (struct acc_js **p = &g_acc_list; *p != NULL; p = &(*p)->gnext) {
		if (*p == js) {
			*p = js->gnext;
			return;
		}
	}
}

/* A string property as a malloc'd copy (UTF-8), or false with an exception pending. */
static bool opt_text(napi_env env, napi_value obj, const char *key, char **out, size_t *len)
{
	napi_value v;
	napi_valuetype t;
	NAPI_CALL_BOOL(env, napi_get_named_property(env, obj, key, &v));
	NAPI_CALL_BOOL(env, napi_typeof(env, v, &t));
	if (t != napi_string) {
		char msg[96];
		snprintf(msg, sizeof(msg), "options.accessLine.%s must be a string", key);
		napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", msg);
		return false;
	}
	NAPI_CALL_BOOL(env, napi_get_value_string_utf8(env, v, NULL, 0, len));
	*out = malloc(*len + 1);
	if (*out == NULL) {
		mpx_throw_errno(env, ENOMEM, "malloc");
		return false;
	}
	NAPI_CALL_BOOL(env, napi_get_value_string_utf8(env, v, *out, *len + 1, len));
	return true;
}

/* An error code for the line: written as is, so only [A-Z0-9_] (ErrorCode's values). */
static bool opt_code(napi_env env, napi_value obj, const char *key, char out[32])
{
	napi_value v;
	NAPI_CALL_BOOL(env, napi_get_named_property(env, obj, key, &v));
	if (!mpx_arg_string(env, v, key, out, 32))
		return false;
	for (const char *c = out; *c != '\0'; c++) {
		if (!((*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') || *c == '_')) {
			napi_throw_type_error(env, "ERR_INVALID_ARG_VALUE", "options.accessLine's error codes are [A-Z0-9_]+");
			return false;
		}
	}
	return true;
}

bool eo_options(napi_env env, napi_value opts, struct acc_js *js)
{
	napi_value v;
	napi_valuetype t;
	NAPI_CALL_BOOL(env, napi_get_named_property(env, opts, "engineOnly", &v));
	NAPI_CALL_BOOL(env, napi_typeof(env, v, &t));
	if (t == napi_undefined)
		return true;
	if (!mpx_arg_bool(env, v, "options.engineOnly", &js->engine_only))
		return false;
	NAPI_CALL_BOOL(env, napi_get_named_property(env, opts, "accessLine", &v));
	NAPI_CALL_BOOL(env, napi_typeof(env, v, &t));
	if (!js->engine_only || t == napi_undefined || t == napi_null)
		return true;
	struct mpx_access_line *l = calloc(1, sizeof(*l));
	if (l == NULL) {
		mpx_throw_errno(env, ENOMEM, "malloc");
		return false;
	}
	js->line = l; /* freed by eo_free, also when the rest fails */
	return opt_text(env, v, "connHead", &l->conn_head, &l->conn_head_len) && opt_text(env, v, "clientHead", &l->client_head, &l->client_head_len) &&
	       opt_text(env, v, "upstreamHead", &l->upstream_head, &l->upstream_head_len) && opt_code(env, v, "idleCode", l->idle_code) &&
	       opt_code(env, v, "abortedCode", l->aborted_code);
}

void eo_free(struct acc_js *js)
{
	struct mpx_access_line *l = js->line;
	if (l == NULL)
		return;
	free(l->conn_head);
	free(l->client_head);
	free(l->upstream_head);
	free(l);
	js->line = NULL;
}

void eo_accepted(struct relay *r, const struct sockaddr_storage *peer, bool down_mptcp)
{
	r->quiet = true;
	r->peer = *peer;
	r->down_mptcp = down_mptcp;
	r->conn_no = atomic_fetch_add_explicit(&g_conn_counter, 1, memory_order_relaxed) + 1;
	atomic_fetch_add_explicit(&r->acc->quiet_live, 1, memory_order_relaxed);
}

void eo_before_close(struct engine_thread *t, struct relay *r)
{
	if (!r->quiet || !r->connect_failed)
		return;
	struct msg *m = calloc(1, sizeof(*m));
	if (m == NULL)
		return; /* eo_end writes its line instead */
	r->quiet = false;
	m->kind = MSG_ACCEPTED;
	m->acc = r->acc;
	m->id = r->id;
	m->peer = r->peer;
	socklen_t len = sizeof(m->local);
	getsockname(r->fd[SIDE_DOWN], (struct sockaddr *)&m->local, &len);
	if (r->fd[SIDE_UP] >= 0) {
		len = sizeof(m->up_local);
		getsockname(r->fd[SIDE_UP], (struct sockaddr *)&m->up_local, &len);
	}
	m->down_mptcp = r->down_mptcp;
	m->ago_ms = now_ms_precise() - r->started_precise_ms;
	m->quiet_ends = 1; /* no longer counted as engine-only, once JS has it */
	eng_post(t, m);
}

/* ---- the line ---- */

static char *put(char *p, const char *s, size_t n)
{
	memcpy(p, s, n);
	return p + n;
}

#define PUT_LIT(p, lit) put((p), (lit), sizeof(lit) - 1)

static char *put_u64(char *p, uint64_t v)
{
	char tmp[24];
	int n = 0;
	do {
		tmp[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v != 0);
	while (n > 0)
		*p++ = tmp[--n];
	return p;
}

static char *put_base36(char *p, uint64_t v)
{
	static const char digits[] = "0123456789abcdefghijklmnopqrstuvwxyz";
	char tmp[16];
	int n = 0;
	do {
		tmp[n++] = digits[v % 36];
		v /= 36;
	} while (v != 0);
	while (n > 0)
		*p++ = tmp[--n];
	return p;
}

/* Date#toISOString of now: "YYYY-MM-DDTHH:MM:SS.mmmZ" (24 characters). */
static char *put_iso_now(char *p)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	struct tm tm;
	gmtime_r(&ts.tv_sec, &tm);
	int n = snprintf(p, 32, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
			 tm.tm_sec, ts.tv_nsec / 1000000);
	return p + (n > 0 ? n : 0);
}

/* JS's jsonNumber(Math.round(ms * 10) / 10): tenths, without a trailing ".0". */
static char *put_tenths(char *p, double ms)
{
	uint64_t tenths = ms > 0 ? (uint64_t)(ms * 10 + 0.5) : 0;
	p = put_u64(p, tenths / 10);
	if (tenths % 10 != 0) {
		*p++ = '.';
		*p++ = (char)('0' + tenths % 10);
	}
	return p;
}

static const char *const ENDED_BY[] = { "downstream", "upstream", "proxy" };

/* The most the variable parts of a line take, beyond the template's. */
#define LINE_VARIABLE_MAX (512 + MPX_SUMMARY_MAX_PATHS * (MPX_PATH_LEN + 3))

/*
 * accessLogJson's line for a tcp-forward connection the engine carried (src/core/access-log.ts),
 * with the logger's head (time, level, msg, bound fields) in front:
 *   {"time":"ISO" conn_head N36 client_head CLIENT","clientMptcp":B
 *   [,"clientSubflows":N,"clientPaths":["P",...]] upstream_head B ,"bytesUp":N,"bytesDown":N,
 *   "durationMs":D,"endedBy":"E"[,"error":"CODE"]}\n
 * Addresses and paths need no JSON escape (digits, dots, colons, brackets, " -> "). `out` has
 * room for the template's parts plus LINE_VARIABLE_MAX.
 */
static size_t eo_line(const struct mpx_access_line *l, const struct relay *r, char *out)
{
	char *p = out;
	p = PUT_LIT(p, "{\"time\":\"");
	p = put_iso_now(p);
	p = put(p, l->conn_head, l->conn_head_len);
	p = put_base36(p, r->conn_no);
	p = put(p, l->client_head, l->client_head_len);
	p += mpx_endpoint_text((const struct sockaddr *)&r->peer, p, MPX_PATH_LEN);
	p = r->down_mptcp ? PUT_LIT(p, "\",\"clientMptcp\":true") : PUT_LIT(p, "\",\"clientMptcp\":false");
	const struct mpx_subflow_summary *s = r->subflows;
	if (s != NULL) {
		p = PUT_LIT(p, ",\"clientSubflows\":");
		p = put_u64(p, s->count);
		p = PUT_LIT(p, ",\"clientPaths\":[");
		for (uint32_t i = 0; i < s->npaths; i++) {
			if (i > 0)
				*p++ = ',';
			*p++ = '"';
			p = put(p, s->paths[i], strnlen(s->paths[i], MPX_PATH_LEN));
			*p++ = '"';
		}
		*p++ = ']';
	}
	p = put(p, l->upstream_head, l->upstream_head_len);
	p = r->up_mptcp ? PUT_LIT(p, "true") : PUT_LIT(p, "false");
	p = PUT_LIT(p, ",\"bytesUp\":");
	p = put_u64(p, atomic_load_explicit(&r->dir[SIDE_DOWN].bytes, memory_order_relaxed));
	p = PUT_LIT(p, ",\"bytesDown\":");
	p = put_u64(p, atomic_load_explicit(&r->dir[SIDE_UP].bytes, memory_order_relaxed));
	p = PUT_LIT(p, ",\"durationMs\":");
	p = put_tenths(p, now_ms_precise() - r->started_precise_ms);
	p = PUT_LIT(p, ",\"endedBy\":\"");
	int by = r->ended_by == SIDE_NONE ? SIDE_PROXY : r->ended_by;
	const char *ended = ENDED_BY[by >= 0 && by <= 2 ? by : 2];
	p = put(p, ended, strlen(ended));
	*p++ = '"';
	/* summaryError's order (src/relay/native-relay.ts): a system error's code, then the idle
	 * timeout, then any other reason of the proxy's (aborted, engine stopped). */
	const char *code = NULL;
	char namebuf[32];
	if (r->err != 0)
		code = eng_errno_code(r->err, namebuf);
	else if (r->reason != NULL)
		code = strcmp(r->reason, "idle") == 0 ? l->idle_code : l->aborted_code;
	if (code != NULL) {
		p = PUT_LIT(p, ",\"error\":\"");
		p = put(p, code, strlen(code));
		*p++ = '"';
	}
	p = PUT_LIT(p, "}\n");
	return (size_t)(p - out);
}

/* The acceptor's MSG_LINES still open in this thread's outbox, or a new one posted there. */
static struct msg *lines_msg(struct engine_thread *t, struct acc_js *acc)
{
	for (struct msg *m = t->lines_open; m != NULL; m = m->lines_next)
		if (m->acc == acc)
			return m;
	if (!t->report)
		return NULL; /* nobody left to tell: eng_post would free it at once */
	struct msg *m = calloc(1, sizeof(*m));
	if (m == NULL)
		return NULL;
	m->kind = MSG_LINES;
	m->acc = acc;
	eng_post(t, m);
	m->lines_next = t->lines_open;
	t->lines_open = m;
	return m;
}

/* Lines a MSG_LINES gathers before it is sent at once rather than after REPORT_DELAY_MS. */
#define LINES_FLUSH_BYTES (64u << 10)

bool eo_end(struct engine_thread *t, struct relay *r)
{
	if (!t->report) {
		free(r->subflows);
		r->subflows = NULL;
		return true; /* as eng_post: the env is gone, nobody is left to tell */
	}
	struct msg *m = lines_msg(t, r->acc);
	if (m == NULL)
		return false;
	const struct mpx_access_line *l = r->acc->line;
	if (l != NULL) {
		size_t need = m->data_len + l->conn_head_len + l->client_head_len + l->upstream_head_len + 32 + LINE_VARIABLE_MAX;
		if (need > m->data_cap) {
			size_t cap = m->data_cap < 4096 ? 4096 : m->data_cap;
			while (cap < need)
				cap *= 2;
			char *grown = realloc(m->data, cap);
			if (grown == NULL)
				return false;
			m->data = grown;
			m->data_cap = cap;
		}
		m->data_len += eo_line(l, r, m->data + m->data_len);
	}
	m->quiet_ends++;
	free(r->subflows);
	r->subflows = NULL;
	if (m->data_len >= LINES_FLUSH_BYTES)
		t->out_urgent = true; /* enough for one write: sent at the end of this loop turn */
	return true;
}

/* ---- JS side ---- */

/* The JS side of the acceptor whose id is the call's one argument, or NULL (with *ok false
 * when the argument was bad: an exception is pending). */
static struct acc_js *acc_js_arg(napi_env env, napi_callback_info info, uint64_t *id, bool *ok)
{
	napi_value argv[1];
	*ok = mpx_get_args(env, info, 1, argv) && eng_arg_id(env, argv[0], id);
	struct acc_js *js = *ok ? g_acc_list : NULL;
	while (js != NULL && js->id != *id)
		js = js->gnext;
	return js;
}

napi_value mpx_js_acceptor_abort_all(napi_env env, napi_callback_info info)
{
	napi_value out;
	uint64_t id;
	bool ok;
	struct acc_js *js = acc_js_arg(env, info, &id, &ok);
	if (!ok)
		return NULL;
	bool found = js != NULL && js->engine_only && g_engine.running;
	if (found) {
		/* Relays accepted but not yet on their thread's list see the mark there
		 * (eng_add_relay); those on a list are ended by each thread's CMD_ACC_ABORT. */
		atomic_store(&js->aborted, true);
		for (int i = 0; i < g_engine.nthreads; i++) {
			struct cmd *c = calloc(1, sizeof(*c));
			if (c == NULL)
				return mpx_throw_errno(env, ENOMEM, "malloc");
			c->kind = CMD_ACC_ABORT;
			c->id = id;
			eng_push_cmd(&g_engine.threads[i], c);
		}
	}
	NAPI_CALL(env, napi_get_boolean(env, found, &out));
	return out;
}

napi_value mpx_js_acceptor_engine_only_live(napi_env env, napi_callback_info info)
{
	napi_value out;
	uint64_t id;
	bool ok;
	struct acc_js *js = acc_js_arg(env, info, &id, &ok);
	if (!ok)
		return NULL;
	NAPI_CALL(env, napi_create_double(env, js != NULL ? (double)atomic_load(&js->quiet_live) : 0, &out));
	return out;
}

napi_value mpx_js_connection_counter(napi_env env, napi_callback_info info)
{
	(void)info;
	napi_value ab, out;
	NAPI_CALL(env, napi_create_external_arraybuffer(env, (void *)&g_conn_counter, sizeof(g_conn_counter), NULL, NULL, &ab));
	NAPI_CALL(env, napi_create_typedarray(env, napi_biguint64_array, 1, ab, 0, &out));
	return out;
}
