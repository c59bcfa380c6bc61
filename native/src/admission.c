/* SPDX-License-Identifier: MIT
 *
 * Client admission shared by the engine's acceptors and JS (see admission.h). The count table
 * is a chained hash under one mutex: the engine threads take it once per accepted and per
 * ended connection, the JS thread once per connection a JS listener accepts; an entry exists
 * only while its client has connections, so the table holds live clients only.
 */
#include "admission.h"
#include "common.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define COUNT_BUCKETS 4096

struct count_entry {
	struct mpx_client_key key;
	uint32_t n;
	struct count_entry *next;
};

static pthread_mutex_t g_count_lock = PTHREAD_MUTEX_INITIALIZER;
static struct count_entry *g_counts[COUNT_BUCKETS];
static size_t g_tracked;

static const uint8_t MAPPED_PREFIX[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

bool mpx_client_key_from_sockaddr(const struct sockaddr *sa, struct mpx_client_key *out)
{
	memset(out, 0, sizeof(*out));
	if (sa->sa_family == AF_INET) {
		out->family = 4;
		memcpy(out->bytes, &((const struct sockaddr_in *)sa)->sin_addr, 4);
		return true;
	}
	if (sa->sa_family != AF_INET6)
		return false;
	const uint8_t *a = ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;
	if (memcmp(a, MAPPED_PREFIX, 12) == 0) {
		out->family = 4;
		memcpy(out->bytes, a + 12, 4);
	} else {
		out->family = 6;
		memcpy(out->bytes, a, 16);
	}
	return true;
}

static bool prefix_equal(const uint8_t *a, const uint8_t *b, unsigned bits)
{
	unsigned whole = bits / 8, rest = bits % 8;
	if (memcmp(a, b, whole) != 0)
		return false;
	if (rest == 0)
		return true;
	uint8_t mask = (uint8_t)(0xff << (8 - rest));
	return (a[whole] & mask) == (b[whole] & mask);
}

int mpx_cidr_match(const struct mpx_cidr *rules, size_t n, const struct mpx_client_key *key)
{
	for (size_t i = 0; i < n; i++)
		if (rules[i].family == key->family && prefix_equal(rules[i].bytes, key->bytes, rules[i].prefix))
			return (int)i;
	return -1;
}

bool mpx_cidr_unpack(const uint8_t *data, size_t len, struct mpx_cidr **out, size_t *n)
{
	*out = NULL;
	*n = 0;
	if (len % 18 != 0)
		return false;
	size_t count = len / 18;
	if (count == 0)
		return true;
	struct mpx_cidr *rules = calloc(count, sizeof(*rules));
	if (rules == NULL)
		return false;
	for (size_t i = 0; i < count; i++) {
		const uint8_t *p = data + i * 18;
		if ((p[0] != 4 && p[0] != 6) || p[1] > (p[0] == 4 ? 32 : 128)) {
			free(rules);
			return false;
		}
		rules[i].family = p[0];
		rules[i].prefix = p[1];
		memcpy(rules[i].bytes, p + 2, 16);
	}
	*out = rules;
	*n = count;
	return true;
}

static unsigned bucket_of(const struct mpx_client_key *k)
{
	/* FNV-1a over the family and the address bytes */
	uint32_t h = 2166136261u;
	h = (h ^ k->family) * 16777619u;
	for (int i = 0; i < (k->family == 4 ? 4 : 16); i++)
		h = (h ^ k->bytes[i]) * 16777619u;
	return h % COUNT_BUCKETS;
}

static struct count_entry **find_slot(const struct mpx_client_key *k)
{
	struct count_entry **p = &g_counts[bucket_of(k)];
	while (*p != NULL && memcmp(&(*p)->key, k, sizeof(*k)) != 0)
		p = &(*p)->next;
	return p;
}

bool mpx_client_acquire(const struct mpx_client_key *key, uint32_t max)
{
	bool ok = false;
	pthread_mutex_lock(&g_count_lock);
	struct count_entry **slot = find_slot(key);
	if (*slot != NULL) {
		if (max == 0 || (*slot)->n < max) {
			(*slot)->n++;
			ok = true;
		}
	} else {
		struct count_entry *e = calloc(1, sizeof(*e));
		if (e != NULL) { /* out of memory: refuse rather than count nothing */
			e->key = *key;
			e->n = 1;
			*slot = e;
			g_tracked++;
			ok = true;
		}
	}
	pthread_mutex_unlock(&g_count_lock);
	return ok;
}

void mpx_client_release(const struct mpx_client_key *key)
{
	pthread_mutex_lock(&g_count_lock);
	struct count_entry **slot = find_slot(key);
	struct count_entry *e = *slot;
	if (e != NULL && --e->n == 0) {
		*slot = e->next;
		free(e);
		g_tracked--;
	}
	pthread_mutex_unlock(&g_count_lock);
}

static uint32_t client_count(const struct mpx_client_key *key)
{
	pthread_mutex_lock(&g_count_lock);
	struct count_entry *e = *find_slot(key);
	uint32_t n = e != NULL ? e->n : 0;
	pthread_mutex_unlock(&g_count_lock);
	return n;
}

/* An IP literal (a zone id is ignored, as parseIp does) → key; TypeError if it is not one. */
bool mpx_arg_client(napi_env env, napi_value v, struct mpx_client_key *key)
{
	char buf[INET6_ADDRSTRLEN + 64];
	if (!mpx_arg_string(env, v, "address", buf, sizeof(buf)))
		return false;
	char *zone = strchr(buf, '%');
	if (zone != NULL)
		*zone = '\0';
	struct sockaddr_in6 s6 = { .sin6_family = AF_INET6 };
	struct sockaddr_in s4 = { .sin_family = AF_INET };
	if (inet_pton(AF_INET, buf, &s4.sin_addr) == 1)
		return mpx_client_key_from_sockaddr((struct sockaddr *)&s4, key);
	if (inet_pton(AF_INET6, buf, &s6.sin6_addr) == 1)
		return mpx_client_key_from_sockaddr((struct sockaddr *)&s6, key);
	napi_throw_type_error(env, "ERR_INVALID_ARG_VALUE", "The \"address\" argument must be an IPv4 or IPv6 address");
	return false;
}

napi_value mpx_js_client_acquire(napi_env env, napi_callback_info info)
{
	napi_value argv[2], out;
	struct mpx_client_key key;
	double max;
	if (!mpx_get_args(env, info, 2, argv) || !mpx_arg_client(env, argv[0], &key))
		return NULL;
	NAPI_CALL(env, napi_get_value_double(env, argv[1], &max));
	if (!(max >= 0 && max <= 4294967295.0)) {
		napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "max must be from 0 (no limit) to 2^32-1");
		return NULL;
	}
	NAPI_CALL(env, napi_get_boolean(env, mpx_client_acquire(&key, (uint32_t)max), &out));
	return out;
}

napi_value mpx_js_client_release(napi_env env, napi_callback_info info)
{
	napi_value argv[1];
	struct mpx_client_key key;
	if (!mpx_get_args(env, info, 1, argv) || !mpx_arg_client(env, argv[0], &key))
		return NULL;
	mpx_client_release(&key);
	return NULL;
}

napi_value mpx_js_client_count(napi_env env, napi_callback_info info)
{
	napi_value argv[1], out;
	struct mpx_client_key key;
	if (!mpx_get_args(env, info, 1, argv) || !mpx_arg_client(env, argv[0], &key))
		return NULL;
	NAPI_CALL(env, napi_create_uint32(env, client_count(&key), &out));
	return out;
}

napi_value mpx_js_client_tracked(napi_env env, napi_callback_info info)
{
	(void)info;
	napi_value out;
	pthread_mutex_lock(&g_count_lock);
	size_t n = g_tracked;
	pthread_mutex_unlock(&g_count_lock);
	NAPI_CALL(env, napi_create_double(env, (double)n, &out));
	return out;
}
