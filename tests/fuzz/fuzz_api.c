/*
 * fuzz_api.c - libFuzzer harness for semid-server's request decoder
 * (server/api.h: srv_encode_req_decode, the fast scanner, the jansson
 * reference decoder, base64) and the response writer that echoes ids.
 *
 * The input is a request body for a tower of input width D = 4 with at most
 * 8 inputs.  Checked on every input:
 * - a rejection is 400 or 413 with a message, and its error body is JSON;
 * - an accepted request has 1..8 rows of finite floats, top_k 1..16, and the
 *   200 body written for it (ids echoed, made-up codes) is valid JSON;
 * - differential: whenever the fast scanner accepts, the jansson decoder
 *   accepts too and gives the same rows bit for bit, options and ids
 *   (api.h promises they agree), and the scanner with its portable string
 *   scan and finite check (srv__api_force_portable) accepts the same bodies
 *   and gives the same rows;
 * - base64 of the raw input decodes within its capacity, and the AVX2 and
 *   portable decoders agree on it (result, bad position, bytes);
 * - the input's first 4 bytes as a float32, written by srv_buf_float, are a
 *   JSON number that strtof reads back to the same bits;
 * - the body as a delete request (srv_delete_req_decode): accepted, 1..8
 *   valid registry ids; refused, a 400 or 413 with a message; either way
 *   every memory charge given back.
 * Built and run by tests/fuzz.mk (make fuzz, make fuzz-smoke).
 */
#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "registry.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define WIDTH	   4
#define MAX_INPUTS 8
#define L	   3

static void fail(const char *what, const uint8_t *data, size_t size)
{
	fprintf(stderr, "fuzz_api: %s\nbody: %.*s\n", what, (int)(size > 2000 ? 2000 : size),
		(const char *)data);
	abort();
}

static void check_json(const char *text, size_t len, const char *what, const uint8_t *data,
		       size_t size)
{
	json_error_t jerr;
	json_t *j = json_loadb(text, len, 0, &jerr);
	if (!j) {
		fprintf(stderr, "fuzz_api: %s: %s\n%.*s\n", what, jerr.text, (int)len, text);
		fail("output is not valid JSON", data, size);
	}
	json_decref(j);
}

static void check_accepted(const struct srv_encode_req *q, const uint8_t *data, size_t size)
{
	int32_t codes[MAX_INPUTS * L], alt[MAX_INPUTS * 15 * L], cnt[MAX_INPUTS];
	float dist[MAX_INPUTS], quant[MAX_INPUTS * 2], alt_dist[MAX_INPUTS * 15];
	struct srv_encode_res res = {L, 2, codes, dist, quant, 0, alt, alt_dist, cnt};
	struct srv_buf out = SRV_BUF_INIT;

	if (q->B < 1 || q->B > MAX_INPUTS || q->D != WIDTH || q->top_k < 1 ||
	    q->top_k > SID_TOPK_MAX ||
	    (q->format != SID_FORMAT_DASH && q->format != SID_FORMAT_TOKENS))
		fail("accepted request out of bounds", data, size);
	for (size_t i = 0; i < q->B * WIDTH; i++)
		if (!isfinite(q->x[i]))
			fail("accepted a non-finite value", data, size);
	res.n_alt = q->top_k - 1;
	for (size_t i = 0; i < q->B; i++) {
		dist[i] = 0.25f * (float)i;
		quant[2 * i] = quant[2 * i + 1] = -1.5f;
		cnt[i] = res.n_alt;
		for (int l = 0; l < L; l++)
			codes[i * L + (size_t)l] = (int32_t)(i * 7 + (size_t)l);
	}
	for (size_t k = 0; k < MAX_INPUTS * 15; k++) {
		alt_dist[k] = 1.0f + (float)k;
		for (int l = 0; l < L; l++)
			alt[k * L + (size_t)l] = (int32_t)k;
	}
	srv_encode_res_write(&out, "v\"1", q, &res);
	if (out.oom)
		fail("out of memory", data, size);
	check_json(out.p, out.len, "response", data, size);
	srv_buf_release(&out);
}

static void check_same(const struct srv_encode_req *a, const struct srv_encode_req *b,
		       const uint8_t *data, size_t size)
{
	if (a->B != b->B || a->top_k != b->top_k || a->quantized != b->quantized ||
	    a->format != b->format)
		fail("fast and jansson decoders disagree on B or options", data, size);
	if (memcmp(a->x, b->x, a->B * WIDTH * sizeof(float)) != 0)
		fail("fast and jansson decoders disagree on the floats", data, size);
	for (size_t r = 0; r < a->B; r++) {
		if (a->id_len[r] != b->id_len[r] ||
		    (a->id_len[r] &&
		     memcmp(a->ids + a->id_off[r], b->ids + b->id_off[r], a->id_len[r]) != 0))
			fail("fast and jansson decoders disagree on an id", data, size);
	}
}

static void check_delete(const char *body, size_t size, const uint8_t *data)
{
	struct srv_budget budget = {0, SIZE_MAX};
	struct srv_hold hold = {&budget, 0};
	struct srv_encode_req q;
	struct srv_api_error e;

	memset(&e, 0, sizeof(e));
	if (srv_delete_req_decode(body, size, SID_TOWER_ITEM, MAX_INPUTS, &hold, &q, &e) == 0) {
		if (q.B < 1 || q.B > MAX_INPUTS || hold.n != q.charged)
			fail("delete: accepted request out of bounds", data, size);
		for (size_t i = 0; i < q.B; i++)
			if (sid_reg_id_check(q.id_str[i], NULL))
				fail("delete: accepted an invalid id", data, size);
		srv_encode_req_release(&q);
	} else if ((e.kind != SRV_ERR_INVALID_ARGUMENT && e.kind != SRV_ERR_TOO_LARGE) ||
		   !e.msg[0]) {
		fail("delete: refused with another status or no message", data, size);
	}
	if (budget.held || hold.n)
		fail("delete: a memory charge outlived the request", data, size);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *body = (const char *)data;
	struct srv_encode_req q, a, b;
	struct srv_api_error e;
	uint8_t b64[256];
	size_t bad = 0;
	long n;
	/* body_memory_bytes without a bound: every charge is taken, and must
	 * be given back */
	struct srv_budget budget = {0, SIZE_MAX};
	struct srv_hold hold = {&budget, 0};

	memset(&e, 0, sizeof(e));
	if (srv_encode_req_decode(body, size, SID_TOWER_ITEM, WIDTH, MAX_INPUTS, &hold, &q, &e) ==
	    0) {
		check_accepted(&q, data, size);
		srv_encode_req_release(&q);
		if (budget.held || hold.n)
			fail("a decoded request's memory charge outlived its release", data, size);
	} else {
		if (budget.held || hold.n)
			fail("a refused request left memory charged", data, size);
		size_t blen;
		char *eb;
		if (!e.msg[0] ||
		    (e.kind != SRV_ERR_INVALID_ARGUMENT && e.kind != SRV_ERR_TOO_LARGE))
			fail("rejected without a message or with a status other than 400/413", data,
			     size);
		eb = srv_api_error_body(e.kind, e.msg, &blen, NULL);
		if (!eb)
			fail("out of memory", data, size);
		check_json(eb, blen, "error body", data, size);
		free(eb);
		srv_encode_req_release(&q);
		/* Every error is the jansson path's, even when the fast scanner
		 * made it (an embedding of another width), but for a body over
		 * the separator or member bound, which jansson is never given. */
		size_t members;
		if (srv__json_separators(body, size, "inputs", NULL, &members) <=
			srv__json_separators_max(WIDTH, MAX_INPUTS) &&
		    members <= srv__json_members_max(MAX_INPUTS)) {
			struct srv_api_error je;
			memset(&je, 0, sizeof(je));
			if (srv__encode_req_decode_jansson(body, size, SID_TOWER_ITEM, WIDTH,
							   MAX_INPUTS, &b, &je) == 0) {
				srv_encode_req_release(&b);
				fail("rejected a body the jansson decoder accepts", data, size);
			}
			if (je.kind != e.kind || strcmp(je.msg, e.msg) != 0) {
				fprintf(stderr, "fuzz_api: decode: %s\nfuzz_api: jansson: %s\n",
					e.msg, je.msg);
				fail("the error differs from the jansson decoder's", data, size);
			}
		}
	}

	/* Differential: the fast scanner alone, against the reference. */
	memset(&a, 0, sizeof(a));
	a.top_k = 1;
	if (srv__encode_req_decode_fast(body, size, WIDTH, MAX_INPUTS, &a)) {
		if (srv__encode_req_decode_jansson(body, size, SID_TOWER_ITEM, WIDTH, MAX_INPUTS,
						   &b, &e) != 0) {
			fprintf(stderr, "fuzz_api: jansson: %s\n", e.msg);
			fail("fast scanner accepted a body the jansson decoder rejects", data,
			     size);
		}
		check_same(&a, &b, data, size);
		srv_encode_req_release(&b);
	} else if (a.x || a.ids || a.id_off || a.id_len) {
		fail("fast scanner gave up but left memory allocated", data, size);
	}
	memset(&b, 0, sizeof(b));
	b.top_k = 1;
	srv__api_force_portable(1);
	n = srv__encode_req_decode_fast(body, size, WIDTH, MAX_INPUTS, &b);
	srv__api_force_portable(0);
	if ((n != 0) != (a.x != NULL))
		fail("fast scanner: AVX2 and portable paths disagree on accepting", data, size);
	if (n)
		check_same(&a, &b, data, size);
	srv_encode_req_release(&b);
	srv_encode_req_release(&a);

	n = srv_base64_decode(body, size, b64, sizeof(b64), &bad);
	if (n > (long)sizeof(b64) || n < -2 || (n == -1 && bad > size))
		fail("base64 decode result out of range", data, size);
	{
		uint8_t b64s[256];
		size_t bad_s = 0;
		long ns = srv__base64_decode_scalar(body, size, b64s, sizeof(b64s), &bad_s);
		if (ns != n || (n == -1 && bad_s != bad) ||
		    (n > 0 && memcmp(b64, b64s, (size_t)n) != 0))
			fail("AVX2 and portable base64 decoders disagree", data, size);
	}

	check_delete(body, size, data);

	if (size >= 4) {
		struct srv_buf fb = SRV_BUF_INIT;
		uint32_t u, w;
		float f, g;
		memcpy(&u, data, 4);
		memcpy(&f, &u, 4);
		srv_buf_append(&fb, "[", 1);
		srv_buf_float(&fb, f);
		srv_buf_append(&fb, "]", 1);
		if (fb.oom)
			fail("out of memory", data, size);
		check_json(fb.p, fb.len, "float", data, size);
		g = strtof(fb.p + 1, NULL);
		memcpy(&w, &g, 4);
		if (isfinite(f) && w != u)
			fail("srv_buf_float text does not read back", data, size);
		srv_buf_release(&fb);
	}
	return 0;
}
