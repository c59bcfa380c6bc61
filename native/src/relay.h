/* SPDX-License-Identifier: MIT
 *
 * The native relay engine: epoll threads that move bytes between pairs of connected
 * sockets (downstream ↔ upstream) with 1 MiB reads and writes, and report a close summary
 * to JS; also one-way, length-limited pumps (an HTTP body) on the same threads. Given meaning by src/relay/native-relay.ts.
 */
#ifndef MPX_RELAY_H
#define MPX_RELAY_H

#include <node_api.h>

/* relayStart(fdDown, fdUp, headToUp, headToDown, idleTimeoutMs, onDone[, sampleDownstream
 *            [, connectTimeoutMs[, onConnected[, options]]]]) → id
 * sampleDownstream: the engine samples fdDown's MPTCP subflows at the first of the client's
 * EOF, the shutdown of its sending half, or the relay's end, and reports them in the summary
 * as downstreamSubflows: { count, paths }.
 * connectTimeoutMs > 0: fdUp's non-blocking connect(2) is still in progress. The engine
 * moves nothing until it completes; then onConnected({ id, connectMs, mptcp }) is called
 * once on the JS thread and the relay runs. A failed connect, or none within the time,
 * ends the relay with endedBy 'upstream', syscall 'connect', connectFailed: true (and
 * reason 'connect-timeout', code ETIMEDOUT for the deadline), and the client is reset.
 * options.skipDown: bytes of fdDown's stream to drop before relaying it (a request head JS
 * peeked and sends rewritten as headToUp). options.onResponseHead(bytes, complete, code,
 * syscall): the upstream's first bytes, up to a whole head, go to JS, which answers with
 * relayHeadDone; an upstream that fails first (its connect, a read, the idle timeout) asks it
 * for a reply too (bytes null, the errno code and syscall), instead of the client being reset
 * or closed (relay.c, "response-head hook"). options.responseVia: plain heads are rewritten by
 * the engine itself (http-head.c); options.soleOwner, upPlainTcp: see relay_options;
 * options.holdClient: a keep-alive client's exchange, which may keep it (struct relay, in
 * engine.h; the summary's kept fd). */
napi_value mpx_js_relay_start(napi_env env, napi_callback_info info);
/* pumpStart(fdFrom, fdTo, head, length, idleTimeoutMs, onDone) → id: a one-way pump that
 * writes head to fdTo, then moves exactly `length` bytes (-1: until EOF) from fdFrom to
 * fdTo and ends, reading nothing beyond them; summary { id, moved, endedBy: 'done' | 'eof' |
 * 'error' | 'idle' | 'aborted' | 'engine-stopped', durationMs, errno?, code?, syscall?,
 * side?: 'from' | 'to' }. relayStats (fromDownstream = moved so far) and relayAbort take its id. */
napi_value mpx_js_pump_start(napi_env env, napi_callback_info info);
/* acceptorStart(listenFd, options, onEvent) → id: the engine accepts on listenFd itself (a
 * listening socket; the engine owns it on success), and for each client: checks
 * options.allowClients (null: everyone; else a Buffer of 18-byte rules: family 4|6, prefix,
 * 16 address bytes, IPv4 in the first 4), counts it in the per-client table (clientAcquire,
 * options.maxPerClient, 0 = no limit), opens a socket to options.upstreamAddress:upstreamPort
 * (IPPROTO_MPTCP if upstreamMptcp, bound to bindAddress if given), issues connect(2) and
 * relays as relayStart with connectTimeoutMs and idleTimeoutMs (sampleDownstream: the
 * listening socket is MPTCP). With options.destinations (a transparent TPROXY listener) instead
 * of upstreamAddress/upstreamPort, each connection goes to the accepted socket's local address
 * (where the client was going; IPv4-mapped folded) if native/src/destination.c allows it; a
 * denied one is reset and its summary says reason 'denied', deniedBy: the rule.
 * onEvent gets, on the JS thread, in order per connection:
 *   { kind: 'accepted', id, remote, local, upstreamLocal, mptcp }  (addresses: {family, address, port})
 *   { kind: 'connected', id, connectMs, mptcp }   (the upstream's handshake is done)
 *   { kind: 'done', ...the relay summary }         (as relayStart's onDone)
 * and for the acceptor: { kind: 'denied', remote, reason: 'client-network' | 'client-limit' }
 * (the client was closed), { kind: 'error', errno, code, syscall } (accept4 ran out of fds or
 * memory, or socket() for an upstream ran out of fds: it rests 100 ms), { kind: 'stopped' } (after acceptorStop or engine stop; no
 * 'accepted' follows). relayStats and relayAbort take the connections' ids. */
napi_value mpx_js_acceptor_start(napi_env env, napi_callback_info info);
/* acceptorStop(id) → boolean: closes the listening socket; its relays carry on. */
napi_value mpx_js_acceptor_stop(napi_env env, napi_callback_info info);
/* acceptorAdopt(id, fd, clientAddress, keptId) → boolean: a kept client back to its acceptor (acceptor.c). */
napi_value mpx_js_acceptor_adopt(napi_env env, napi_callback_info info);
/* relayStats(id) → { fromDownstream, fromUpstream } | null. For a pump: bytes read from fdFrom,
 * and bytes written to fdTo (head included; each write counted as it is issued, so JS can
 * never see fewer than the peer may already have). */
napi_value mpx_js_relay_stats(napi_env env, napi_callback_info info);
/* relayAbort(id) → boolean (false when the id is unknown or already finished) */
napi_value mpx_js_relay_abort(napi_env env, napi_callback_info info);
/* relayHeadDone(id, out, then, carry, keepBody) → boolean: the answer to relayStart's
 * options.onResponseHead (relay.c, "response-head hook"). */
napi_value mpx_js_relay_head_done(napi_env env, napi_callback_info info);
/* relaySetThreads(n): engine thread count, applied when the engine next starts. */
napi_value mpx_js_relay_set_threads(napi_env env, napi_callback_info info);
/* relaySetQueueCap(floorBytes, rateMbit, notsentBytes): the queue caps for bulk flows (queue-cap.c). */
napi_value mpx_js_relay_set_queue_cap(napi_env env, napi_callback_info info);
/* relayEngineStop(): ends every live relay (endedBy 'proxy') and joins the threads. */
napi_value mpx_js_relay_engine_stop(napi_env env, napi_callback_info info);

#endif
