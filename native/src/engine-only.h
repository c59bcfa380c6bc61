/* SPDX-License-Identifier: MIT
 *
 * Engine-only connections (engine-only.c): an acceptor's connections that JS does not hear of
 * one by one. The engine writes their access lines itself and JS gets them in batches, with a
 * count, so a short connection costs the main thread no JavaScript at all.
 */
#ifndef MPX_ENGINE_ONLY_H
#define MPX_ENGINE_ONLY_H

#include "engine.h"

/* The parts of an access line that are the same for every connection of one acceptor, made
 * by JS (src/core/access-log.ts, engineAccessLine) so that the line is the one JS would write
 * (accessLogJson): see eo_line for where each goes. */
struct mpx_access_line {
	char *conn_head, *client_head, *upstream_head;
	size_t conn_head_len, client_head_len, upstream_head_len;
	char idle_code[32], aborted_code[32];
};

/* The connection numbers JS and the engine both draw from (src/core/ids.ts): one sequence, so
 * ids never collide whoever made them. */
extern MPX_HIDDEN _Atomic uint64_t g_conn_counter;

/* acceptorStart's options.engineOnly and options.accessLine, into js; false with a JS
 * exception pending. */
MPX_HIDDEN bool eo_options(napi_env env, napi_value opts, struct acc_js *js);
MPX_HIDDEN void eo_free(struct acc_js *js);
/* An engine-only relay was accepted (engine thread): numbered and counted. */
MPX_HIDDEN void eo_accepted(struct relay *r, const struct sockaddr_storage *peer, bool down_mptcp);
/* finish(), while r's fds are still open: an engine-only relay whose connect failed becomes
 * JS's (its 'accepted' is sent now, then its 'done' as any relay's), for the dial's warning
 * and error. */
MPX_HIDDEN void eo_before_close(struct engine_thread *t, struct relay *r);
/* finish(), in place of MSG_DONE: r's access line (if any) joins the acceptor's MSG_LINES in
 * the outbox. False when out of memory (MSG_DONE then goes, and JS counts it there). */
MPX_HIDDEN bool eo_end(struct engine_thread *t, struct relay *r);
/* The outbox was sent: its MSG_LINES take no more lines. */
static inline void eo_outbox_sent(struct engine_thread *t)
{
	t->lines_open = NULL;
}
/* acceptorAbortAll(id) → boolean: ends every engine-only connection of the acceptor (reason
 * 'aborted'), also those accepted and not yet started; false when the id is unknown. */
MPX_HIDDEN napi_value mpx_js_acceptor_abort_all(napi_env env, napi_callback_info info);
/* acceptorEngineOnlyLive(id) → number: its engine-only connections accepted and not yet
 * reported to JS (0 for an unknown id: all reported, its JS side gone). */
MPX_HIDDEN napi_value mpx_js_acceptor_engine_only_live(napi_env env, napi_callback_info info);
/* connectionCounter() → BigUint64Array(1) over g_conn_counter (use Atomics.add). */
MPX_HIDDEN napi_value mpx_js_connection_counter(napi_env env, napi_callback_info info);
/* The list of acceptors' JS sides that acceptorAbortAll and acceptorEngineOnlyLive look an id
 * up in, on the JS thread: joined at acceptorStart, left when the last message about the
 * acceptor frees its JS side (acc_unref), so it also finds an acceptor stopped meanwhile. */
MPX_HIDDEN void eo_register(struct acc_js *js);
MPX_HIDDEN void eo_unregister(struct acc_js *js);

#endif
