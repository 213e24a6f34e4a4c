/* check_api.c - server/api.c: error mapping, base64, request decoding and
 * validation messages, response encoding. */
#include <check.h>
#include <jansson.h>
#include <malloc.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check_main.h"
#include "../../server/api.h"

START_TEST(test_error_mapping)
{
	static const struct {
		enum srv_err kind;
		int status;
		const char *code;
	} want[] = {
	    {SRV_ERR_INVALID_ARGUMENT, 400, "invalid_argument"},
	    {SRV_ERR_FORBIDDEN, 403, "permission_denied"},
	    {SRV_ERR_NOT_FOUND, 404, "not_found"},
	    {SRV_ERR_METHOD, 405, "method_not_allowed"},
	    {SRV_ERR_TOO_LARGE, 413, "payload_too_large"},
	    {SRV_ERR_MEDIA_TYPE, 415, "unsupported_media_type"},
	    {SRV_ERR_LEVELS_MISMATCH, 409, "levels_mismatch"},
	    {SRV_ERR_RELOAD_FAILED, 422, "reload_failed"},
	    {SRV_ERR_INTERNAL, 500, "internal"},
	    {SRV_ERR_UNIMPLEMENTED, 501, "unimplemented"},
	    {SRV_ERR_UNAVAILABLE, 503, "unavailable"},
	};
	const char *code;
	ck_assert_int_eq(sizeof(want) / sizeof(want[0]), SRV_ERR_COUNT);
	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
		ck_assert_int_eq(srv_err_status(want[i].kind, &code), want[i].status);
		ck_assert_str_eq(code, want[i].code);
	}
}
END_TEST

START_TEST(test_error_body)
{
	size_t len;
	int status = 0;
	char *body = srv_api_error_body(SRV_ERR_INVALID_ARGUMENT, "bad \"x\"\n\x01", &len, &status);
	json_t *v = json_loadb(body, len, 0, NULL);
	ck_assert_ptr_nonnull(v);
	ck_assert_int_eq(status, 400);
	free(srv_api_error_body(SRV_ERR_UNAVAILABLE, "m", &len, &status));
	ck_assert_int_eq(status, 503);
	ck_assert_str_eq(json_string_value(json_object_get(json_object_get(v, "error"), "code")),
			 "invalid_argument");
	ck_assert_str_eq(json_string_value(json_object_get(json_object_get(v, "error"), "message")),
			 "bad \"x\"\n\x01");
	json_decref(v);
	free(body);
}
END_TEST

static long b64(const char *s, uint8_t *out, size_t *bad)
{
	return srv_base64_decode(s, strlen(s), out, 64, bad);
}

START_TEST(test_base64)
{
	/* RFC 4648 section 10 vectors, padded and unpadded. */
	static const char *enc[] = {"", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
	static const char *dec[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
	uint8_t out[64];
	size_t bad = 0;

	for (int i = 0; i < 7; i++) {
		char unpadded[16];
		long n = b64(enc[i], out, &bad);
		ck_assert_int_eq(n, (long)strlen(dec[i]));
		ck_assert(memcmp(out, dec[i], (size_t)n) == 0);
		snprintf(unpadded, sizeof(unpadded), "%s", enc[i]);
		unpadded[strcspn(unpadded, "=")] = '\0';
		ck_assert_int_eq(b64(unpadded, out, &bad), (long)strlen(dec[i]));
	}
	ck_assert_int_eq(b64("Zm9v!mFy", out, &bad), -1);
	ck_assert_int_eq((int)bad, 4);
	ck_assert_int_eq(b64("Zm9vY", out, &bad), -1); /* 5 chars: impossible length */
	ck_assert_int_eq(b64("Zg=", out, &bad), -1);   /* padding that does not fill a quad */
	ck_assert_int_eq(b64("Zh==", out, &bad), -1);  /* non-zero leftover bits */
	ck_assert_int_eq((int)bad, 1);		       /* the character that holds them */
	/* three characters: 16 bits and 2 left over, which must be zero too */
	ck_assert_int_eq(b64("AAE", out, &bad), 2);
	ck_assert(out[0] == 0 && out[1] == 1);
	ck_assert_int_eq(b64("AAF", out, &bad), -1);
	ck_assert_int_eq((int)bad, 2);
	ck_assert_int_eq(b64("Zm9vAAH=", out, &bad), -1);
	ck_assert_int_eq((int)bad, 6);
	ck_assert_int_eq(b64("Zm9v Zm9v", out, &bad), -1);
	ck_assert_int_eq(srv_base64_decode("Zm9vYmFy", 8, out, 5, &bad), -2);
}
END_TEST

/* ---- the decoder's AVX2 and portable paths agree ---------------------- */

static const char b64_alpha[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* An independent encoder: RFC 4648 with or without the '=' padding. */
static size_t b64_enc(const uint8_t *p, size_t n, char *out, int padded)
{
	size_t o = 0;
	for (size_t i = 0; i < n; i += 3) {
		uint32_t v = (uint32_t)p[i] << 16 | (i + 1 < n ? (uint32_t)p[i + 1] << 8 : 0) |
			     (i + 2 < n ? p[i + 2] : 0);
		out[o++] = b64_alpha[v >> 18];
		out[o++] = b64_alpha[v >> 12 & 63];
		if (i + 1 < n)
			out[o++] = b64_alpha[v >> 6 & 63];
		else if (padded)
			out[o++] = '=';
		if (i + 2 < n)
			out[o++] = b64_alpha[v & 63];
		else if (padded)
			out[o++] = '=';
	}
	out[o] = '\0';
	return o;
}

static uint64_t b64_rng = 0x853c49e6748fea9bull;

static uint8_t rand_byte(void)
{
	b64_rng ^= b64_rng << 13;
	b64_rng ^= b64_rng >> 7;
	b64_rng ^= b64_rng << 17;
	return (uint8_t)(b64_rng >> 32);
}

/* Decode @s with the portable path, the AVX2 path and the dispatching
 * entry: the same result, the same bad position, the same bytes, and
 * nothing written at or past @cap.  The portable path's result is
 * returned, its bytes in @out (at least @cap). */
static long b64_paths(const char *s, size_t n, uint8_t *out, size_t cap, size_t *bad)
{
	enum { GUARD = 64 };
	uint8_t *o[3];
	size_t bd[3];
	long r[3];

	for (int k = 0; k < 3; k++) {
		o[k] = malloc(cap + GUARD);
		if (!o[k]) /* not ck_assert: each one writes to Check's pipe */
			ck_abort_msg("out of memory");
		memset(o[k], 0xa5, cap + GUARD);
		bd[k] = (size_t)-1;
	}
	r[0] = srv__base64_decode_scalar(s, n, o[0], cap, &bd[0]);
	r[1] = srv__base64_decode_avx2(s, n, o[1], cap, &bd[1]);
	r[2] = srv_base64_decode(s, n, o[2], cap, &bd[2]);
	/* plain ifs: a Check assertion per call would cost a write to its pipe */
	for (int k = 1; k < 3; k++) {
		if (r[k] != r[0])
			ck_abort_msg("length %zu cap %zu: path %d says %ld, portable %ld", n, cap,
				     k, r[k], r[0]);
		if (r[0] == -1 && bd[k] != bd[0])
			ck_abort_msg("length %zu: bad %zu vs %zu", n, bd[k], bd[0]);
		if (r[0] >= 0 && memcmp(o[k], o[0], (size_t)r[0]) != 0)
			ck_abort_msg("length %zu: path %d decodes other bytes", n, k);
	}
	for (int k = 0; k < 3; k++) {
		for (size_t j = cap; j < cap + GUARD; j++)
			if (o[k][j] != 0xa5)
				ck_abort_msg("path %d wrote byte %zu of cap %zu", k, j, cap);
	}
	memcpy(out, o[0], cap);
	*bad = bd[0];
	for (int k = 0; k < 3; k++)
		free(o[k]);
	return r[0];
}

/* Random bytes of every length 0..300 and some long ones, padded and not:
 * the bytes come back, exactly, with room to spare or none; one byte less
 * of room is -2. */
START_TEST(test_base64_paths_valid)
{
	static const size_t longer[] = {1536, 4095, 4096, 65537};
	uint8_t *raw = malloc(70000), *dec = malloc(70000);
	char *enc = malloc(100000);
	size_t bad;

	ck_assert(raw && dec && enc);
	if (!srv__api_have_avx2())
		fprintf(stderr, "check_api: no AVX2 here, only the portable path is tested\n");
	for (size_t t = 0; t < 301 + sizeof(longer) / sizeof(longer[0]); t++) {
		size_t len = t < 301 ? t : longer[t - 301];
		for (size_t i = 0; i < len; i++)
			raw[i] = rand_byte();
		for (int padded = 0; padded < 2; padded++) {
			size_t n = b64_enc(raw, len, enc, padded);
			ck_assert_int_eq(b64_paths(enc, n, dec, len, &bad), (long)len);
			ck_assert(memcmp(dec, raw, len) == 0);
			ck_assert_int_eq(b64_paths(enc, n, dec, len + 7, &bad), (long)len);
			ck_assert(memcmp(dec, raw, len) == 0);
			if (len)
				ck_assert_int_eq(b64_paths(enc, n, dec, len - 1, &bad), -2);
		}
	}
	free(raw);
	free(dec);
	free(enc);
}
END_TEST

/* The first byte of @s up to @p outside the alphabet ('=' too: padding
 * only counts at the very end, and @p is not). */
static size_t first_bad(const char *s, size_t p)
{
	size_t i = 0;
	while (i < p && s[i] && strchr(b64_alpha, s[i]))
		i++;
	return i;
}

/* Every byte outside the alphabet at every position of a few lengths (on
 * both sides of the 32-character steps), with room to decode and without:
 * the position is reported (and the first of two); '=' in the middle and
 * the canonical-trailing-bits rule agree between the paths. */
START_TEST(test_base64_paths_invalid)
{
	static const size_t lens[] = {23, 24, 25, 26, 47, 48, 50, 73, 100};
	char enc[200], mod[200];
	uint8_t raw[128], dec[160];
	size_t bad, want;

	for (size_t t = 0; t < sizeof(lens) / sizeof(lens[0]); t++) {
		size_t len = lens[t];
		for (size_t i = 0; i < len; i++)
			raw[i] = rand_byte();
		for (int padded = 0; padded < 2; padded++) {
			size_t n = b64_enc(raw, len, enc, padded);
			for (size_t p = 0; p < n; p++) {
				for (int c = 0; c < 256; c++) {
					if (c && strchr(b64_alpha, c))
						continue;
					memcpy(mod, enc, n);
					mod[p] = (char)c;
					want = first_bad(mod, p);
					for (size_t cap = 0; cap <= len; cap += len) {
						long r = b64_paths(mod, n, dec, cap, &bad);
						if (c == '=')
							continue; /* may read as padding */
						if (r != -1 || bad != want)
							ck_abort_msg(
							    "%.*s: %ld at %zu, want -1 at %zu",
							    (int)n, mod, r, bad, want);
					}
					/* a second bad byte further on: still the first */
					if (c != '=' && p + 1 < n) {
						size_t q = p + 1 + rand_byte() % (n - p - 1);
						mod[q] = '!';
						if (b64_paths(mod, n, dec, len, &bad) != -1 ||
						    bad != want)
							ck_abort_msg("%.*s: not -1 at %zu", (int)n,
								     mod, want);
					}
				}
				/* every alphabet character here: a different valid
				 * input, or (at the end) non-canonical trailing bits */
				for (int k = 0; k < 64; k++) {
					if (enc[p] == '=')
						break;
					memcpy(mod, enc, n);
					mod[p] = b64_alpha[k];
					b64_paths(mod, n, dec, len, &bad);
				}
			}
			/* a byte inserted (so the length or padding is wrong
			 * too): the first bad byte is named, not the padding */
			for (size_t p = 0; p <= n; p++) {
				memcpy(mod, enc, p);
				mod[p] = ' ';
				memcpy(mod + p + 1, enc + p, n - p);
				want = first_bad(mod, p); /* p, or a '=' now before it */
				if (b64_paths(mod, n + 1, dec, len + 2, &bad) != -1 || bad != want)
					ck_abort_msg("%.*s: bad %zu, want %zu", (int)n + 1, mod,
						     bad, want);
			}
			/* padding: 0..3 more '=' and one character fewer */
			for (int extra = 0; extra < 4; extra++) {
				memcpy(mod, enc, n);
				memset(mod + n, '=', (size_t)extra);
				b64_paths(mod, n + (size_t)extra, dec, len + 2, &bad);
				b64_paths(mod + 1, n + (size_t)extra - 1, dec, len + 2, &bad);
			}
		}
	}
}
END_TEST

/* ---- the decoding table's first use, from several threads ------------ */

enum { FIRST_USE_THREADS = 8, FIRST_USE_PROCS = 24 };

static pthread_barrier_t first_use_bar;

static void *first_use_thread(void *arg)
{
	uint8_t out[8];
	size_t bad;

	(void)arg;
	pthread_barrier_wait(&first_use_bar);
	return (void *)(intptr_t)(srv_base64_decode("Zm9vYmFy", 8, out, sizeof(out), &bad) == 6 &&
				  memcmp(out, "foobar", 6) == 0);
}

/* FIRST_USE_THREADS threads decoding at once in a fresh process (one that
 * has not decoded yet): 0 when every one of them got "foobar". */
static int first_use_child(void)
{
	pthread_t t[FIRST_USE_THREADS];
	int ok = 1;

	pthread_barrier_init(&first_use_bar, NULL, FIRST_USE_THREADS);
	for (int i = 0; i < FIRST_USE_THREADS; i++)
		if (pthread_create(&t[i], NULL, first_use_thread, NULL) != 0)
			return 2;
	for (int i = 0; i < FIRST_USE_THREADS; i++) {
		void *r;
		pthread_join(t[i], &r);
		ok &= r != NULL;
	}
	return ok ? 0 : 1;
}

/*
 * The table is filled on first use, and the HTTP threads (http_threads > 1)
 * may each decode their first base64 row at once.  Every thread must get
 * the right bytes and, under ThreadSanitizer (make test-tsan), no race may
 * be reported: two threads that both found the table empty used to write it
 * while others read it, which TSan reported in about one process in five
 * here, so this starts FIRST_USE_PROCS fresh processes; a report makes one
 * exit with TSan's exitcode.  (Under CK_FORK=no the table is filled by then
 * and this only checks the bytes.)
 */
START_TEST(test_base64_first_use_threads)
{
	for (int k = 0; k < FIRST_USE_PROCS; k++) {
		pid_t pid = fork();
		int st;

		ck_assert_int_ge(pid, 0);
		if (pid == 0)
			_exit(first_use_child());
		ck_assert_int_eq(waitpid(pid, &st, 0), pid);
		ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0,
			      "process %d of %d: status 0x%x (a sanitizer report exits non-zero)",
			      k + 1, FIRST_USE_PROCS, st);
	}
}
END_TEST

START_TEST(test_content_type)
{
	ck_assert(srv_api_content_type_ok("application/json"));
	ck_assert(srv_api_content_type_ok("Application/JSON; charset=utf-8"));
	ck_assert(srv_api_content_type_ok("application/json ;charset=UTF-8"));
	ck_assert(!srv_api_content_type_ok("application/jsonx"));
	ck_assert(!srv_api_content_type_ok("text/plain"));
	ck_assert(!srv_api_content_type_ok("application/x-www-form-urlencoded"));
	ck_assert(!srv_api_content_type_ok(NULL));
}
END_TEST

static int decode(const char *body, int D, int max_inputs, struct srv_encode_req *req,
		  struct srv_api_error *e)
{
	return srv_encode_req_decode(body, strlen(body), SID_TOWER_ITEM, D, max_inputs, NULL, req,
				     e);
}

START_TEST(test_decode_ok)
{
	struct srv_encode_req req;
	struct srv_api_error e;
	/* 1.5, -2, 0.25 as little-endian float32, base64. */
	static const uint8_t raw[] = {0, 0, 0xc0, 0x3f, 0, 0, 0, 0xc0, 0, 0, 0x80, 0x3e};
	const char *b = "{\"inputs\": [{\"id\": \"sku-1\", \"embedding\": [1.5, -2, 0.25]},"
			" {\"embedding_b64\": \"AADAPwAAAMAAAIA+\"}, {\"id\": 42, \"embedding\": "
			"[1e-3, 3, 1e30]}], \"top_k\": 3, \"return_quantized\": true, "
			"\"format\": \"tokens\"}";
	float x1[3];

	memcpy(x1, raw, sizeof(raw));
	ck_assert_msg(decode(b, 3, 10, &req, &e) == 0, "%s", e.msg);
	ck_assert_int_eq(req.B, 3);
	ck_assert_int_eq(req.top_k, 3);
	ck_assert_int_eq(req.quantized, 1);
	ck_assert_int_eq(req.format, SID_FORMAT_TOKENS);
	ck_assert(req.x[0] == 1.5f && req.x[1] == -2.0f && req.x[2] == 0.25f);
	ck_assert(memcmp(req.x + 3, x1, sizeof(x1)) == 0);
	ck_assert(memcmp(req.x, req.x + 3, sizeof(x1)) == 0); /* JSON == base64 */
	ck_assert(req.x[6] == 1e-3f && req.x[7] == 3.0f && req.x[8] == 1e30f);
	ck_assert_int_eq(req.id_len[0], 7);
	ck_assert(memcmp(req.ids + req.id_off[0], "\"sku-1\"", 7) == 0);
	ck_assert_int_eq(req.id_len[1], 0);
	ck_assert_int_eq(req.id_len[2], 2);
	ck_assert(memcmp(req.ids + req.id_off[2], "42", 2) == 0);
	srv_encode_req_release(&req);

	ck_assert(decode("{\"inputs\": [{\"embedding\": [1]}]}", 1, 1, &req, &e) == 0);
	ck_assert_int_eq(req.top_k, 1);
	ck_assert_int_eq(req.quantized, 0);
	ck_assert_int_eq(req.format, SID_FORMAT_DASH);
	srv_encode_req_release(&req);
}
END_TEST

/* An escape in the first id sends the body to jansson: every later input
 * still echoes its own id, not the first one's. */
START_TEST(test_decode_ids_jansson)
{
	struct srv_encode_req req;
	struct srv_api_error e;
	const char *b = "{\"inputs\": [{\"id\": \"a\\\"b\", \"embedding\": [1]}, {\"embedding\": "
			"[2]}, {\"id\": \"sku-2\", \"embedding\": [3]}, {\"id\": 42, "
			"\"embedding\": [4]}]}";
	static const char *want[] = {"\"a\\\"b\"", "", "\"sku-2\"", "42"};

	ck_assert_msg(decode(b, 1, 10, &req, &e) == 0, "%s", e.msg);
	ck_assert_int_eq(req.B, 4);
	for (size_t i = 0; i < 4; i++) {
		ck_assert_int_eq(req.id_len[i], strlen(want[i]));
		ck_assert_msg(!memcmp(req.ids + req.id_off[i], want[i], strlen(want[i])),
			      "inputs[%zu]: id %.*s, want %s", i, (int)req.id_len[i],
			      req.ids + req.id_off[i], want[i]);
		ck_assert(req.x[i] == (float)(i + 1));
	}
	srv_encode_req_release(&req);
}
END_TEST

/* jansson's allocations failing (a memory limit) left its error empty,
 * line -1: answered 400 "malformed JSON at line -1, column -1: ", which no
 * client retries.  A 503 now; the same body decodes once memory is back. */
static long allocs_left;

static void *failing_malloc(size_t n)
{
	return __atomic_sub_fetch(&allocs_left, 1, __ATOMIC_RELAXED) < 0 ? NULL : malloc(n);
}

START_TEST(test_decode_out_of_memory_is_503)
{
	/* an escape in an id: jansson's path, not the fast scanner's */
	static const char body[] = "{\"inputs\": [{\"id\": \"a\\\"b\", \"embedding\": [1, 2, 3]}, "
				   "{\"id\": 7, \"embedding\": [4, 5, 6]}], \"top_k\": 2}";
	struct srv_encode_req req;
	struct srv_api_error e;
	int failed = 0;

	for (long k = 0; k < 64; k++) {
		allocs_left = k;
		srv__json_malloc = failing_malloc;
		int rc = decode(body, 3, 16, &req, &e);
		srv__json_malloc = malloc;
		if (rc == 0) {
			srv_encode_req_release(&req);
			break;
		}
		failed++;
		ck_assert_msg(e.kind == SRV_ERR_UNAVAILABLE, "allocation %ld: %d %s", k,
			      (int)e.kind, e.msg);
		ck_assert_str_eq(e.msg, "out of memory parsing the body; retry later");
	}
	ck_assert_int_gt(failed, 0); /* some allocation failed on the way */
	ck_assert_int_eq(decode(body, 3, 16, &req, &e), 0);
	srv_encode_req_release(&req);
}
END_TEST

START_TEST(test_decode_errors)
{
	static const struct {
		const char *body;
		enum srv_err kind;
		const char *msg; /* exact */
	} cases[] = {
	    {"{\"inputs\": [", SRV_ERR_INVALID_ARGUMENT, NULL},
	    {"[1, 2]", SRV_ERR_INVALID_ARGUMENT, "the body must be a JSON object, not an array"},
	    {"{}", SRV_ERR_INVALID_ARGUMENT, "missing field \"inputs\""},
	    {"{\"inputs\": []}", SRV_ERR_INVALID_ARGUMENT, "inputs is empty"},
	    {"{\"inputs\": {}}", SRV_ERR_INVALID_ARGUMENT,
	     "inputs must be an array, not an object"},
	    {"{\"inputs\": [{\"embedding\": [1, 2, 3]}, {\"embedding\": [1, 2]}]}",
	     SRV_ERR_INVALID_ARGUMENT,
	     "inputs[1].embedding has 2 values; the item tower expects 3"},
	    {"{\"inputs\": [{\"embedding\": [1, \"2\", 3]}]}", SRV_ERR_INVALID_ARGUMENT,
	     "inputs[0].embedding[1] is a string, not a number"},
	    {"{\"inputs\": [{\"embedding\": [1, 2, null]}]}", SRV_ERR_INVALID_ARGUMENT,
	     "inputs[0].embedding[2] is null, not a number"},
	    {"{\"inputs\": [{\"embedding\": [1, 1e39, 3]}]}", SRV_ERR_INVALID_ARGUMENT,
	     "inputs[0].embedding[1] = 1e+39 is not finite as float32"},
	    /* just above FLT_MAX: %g showed 3.40282e+38, a value below it */
	    {"{\"inputs\": [{\"embedding\": [1, 3.4028236e38, 3]}]}", SRV_ERR_INVALID_ARGUMENT,
	     "inputs[0].embedding[1] = 3.4028236e+38 is not finite as float32"},
	    {"{\"inputs\": [{\"embedding_b64\": \"AADAPwAAAMAAAIA\"}]}", SRV_ERR_INVALID_ARGUMENT,
	     "inputs[0].embedding_b64 decodes to 11 bytes; the item tower expects 3 float32 "
	     "values (12 bytes)"},
	    {"{\"inputs\": [{\"embedding_b64\": \"AADAPwAAAMAAAIA+AAAAAA==\"}]}",
	     SRV_ERR_INVALID_ARGUMENT,
	     "inputs[0].embedding_b64 decodes to 16 bytes; the item tower expects 3 float32 "
	     "values (12 bytes)"},
	    {"{\"inputs\": [{\"embedding_b64\": \"AADAPwAA*MAAAIA+\"}]}", SRV_ERR_INVALID_ARGUMENT,
	     "inputs[0].embedding_b64 is not valid base64 (character 9, '*')"},
	    {"{\"inputs\": [{\"embedding_b64\": "
	     "\"AADAPwAAAMAAAIA+AAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==\"}]}",
	     SRV_ERR_INVALID_ARGUMENT,
	     "inputs[0].embedding_b64 decodes to 34 bytes; the item tower expects 3 float32 "
	     "values (12 bytes)"},
	    /* NaN as float32 bits 0x7fc00000 */
	    {"{\"inputs\": [{\"embedding_b64\": \"AADAfwAAAMAAAIA+\"}]}", SRV_ERR_INVALID_ARGUMENT,
	     "inputs[0].embedding_b64 holds a non-finite float32 at index 0"},
	    {"{\"inputs\": [{\"embedding\": [1, 2, 3], \"embedding_b64\": \"AADAPwAAAMAAAIA+\"}]}",
	     SRV_ERR_INVALID_ARGUMENT, "inputs[0] has both embedding and embedding_b64; give one"},
	    {"{\"inputs\": [{\"id\": \"a\"}]}", SRV_ERR_INVALID_ARGUMENT,
	     "inputs[0] has neither embedding nor embedding_b64"},
	    {"{\"inputs\": [{\"embedding\": [1, 2, 3], \"id\": {}}]}", SRV_ERR_INVALID_ARGUMENT,
	     "inputs[0].id must be a string or an integer, not an object"},
	    /* "not a number" read as nonsense beside "an integer" */
	    {"{\"inputs\": [{\"embedding\": [1, 2, 3], \"id\": 1.5}]}", SRV_ERR_INVALID_ARGUMENT,
	     "inputs[0].id must be a string or an integer, not a number with a fraction or an "
	     "exponent"},
	    {"{\"inputs\": [{\"embedding\": [1, 2, 3], \"id\": 1e3}]}", SRV_ERR_INVALID_ARGUMENT,
	     "inputs[0].id must be a string or an integer, not a number with a fraction or an "
	     "exponent"},
	    {"{\"inputs\": [{\"embedding\": [1, 2, 3], \"ID\": 1}]}", SRV_ERR_INVALID_ARGUMENT,
	     "inputs[0]: unknown field \"ID\" (expected id, embedding, embedding_b64)"},
	    {"{\"inputs\": [7]}", SRV_ERR_INVALID_ARGUMENT,
	     "inputs[0] must be an object, not a number"},
	    {"{\"inputs\": [{\"embedding\": \"1,2,3\"}]}", SRV_ERR_INVALID_ARGUMENT,
	     "inputs[0].embedding must be an array of numbers, not a string"},
	    {"{\"inputs\": [{\"embedding\": [1, 2, 3]}], \"top_k\": 0}", SRV_ERR_INVALID_ARGUMENT,
	     "top_k must be an integer from 1 to 16"},
	    {"{\"inputs\": [{\"embedding\": [1, 2, 3]}], \"top_k\": 17}", SRV_ERR_INVALID_ARGUMENT,
	     "top_k must be an integer from 1 to 16"},
	    {"{\"inputs\": [{\"embedding\": [1, 2, 3]}], \"top_k\": \"2\"}",
	     SRV_ERR_INVALID_ARGUMENT, "top_k must be an integer from 1 to 16"},
	    {"{\"inputs\": [{\"embedding\": [1, 2, 3]}], \"format\": \"csv\"}",
	     SRV_ERR_INVALID_ARGUMENT, "format must be \"dash\" or \"tokens\""},
	    {"{\"inputs\": [{\"embedding\": [1, 2, 3]}], \"return_quantized\": 1}",
	     SRV_ERR_INVALID_ARGUMENT, "return_quantized must be true or false"},
	    {"{\"inputs\": [{\"embedding\": [1, 2, 3]}], \"topk\": 2}", SRV_ERR_INVALID_ARGUMENT,
	     "unknown field \"topk\" (expected inputs, top_k, return_quantized, format)"},
	    {"{\"inputs\": [{\"embedding\": [1, 2, 3]}, {\"embedding\": [1, 2, 3]}, "
	     "{\"embedding\": [1, 2, 3]}]}",
	     SRV_ERR_TOO_LARGE, "3 inputs; at most 2 are allowed per request"},
	    {"{\"inputs\": [], \"inputs\": []}", SRV_ERR_INVALID_ARGUMENT, NULL},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct srv_encode_req req;
		struct srv_api_error e;
		memset(&e, 0, sizeof(e));
		ck_assert_msg(decode(cases[i].body, 3, 2, &req, &e) == -1, "case %zu accepted", i);
		ck_assert_msg(e.kind == cases[i].kind, "case %zu: kind %d", i, (int)e.kind);
		if (cases[i].msg)
			ck_assert_str_eq(e.msg, cases[i].msg);
		else
			ck_assert_msg(strncmp(e.msg, "malformed JSON at line 1", 24) == 0, "%s",
				      e.msg);
		ck_assert_ptr_null(req.x);
	}
}
END_TEST

/*
 * A body valid but for some embeddings (another width; for base64 also bad
 * base64 or a value not finite) is answered by the fast scanner with the
 * jansson path's own error (its first: the first such input); any other
 * fault anywhere in the body leaves the error to jansson.  Either way the
 * error is the jansson decoder's, word for word.
 */
START_TEST(test_row_error_without_jansson)
{
	static const struct {
		const char *body;
		int fast;	 /* made without jansson */
		const char *msg; /* exact; NULL: only equal to jansson's */
	} cases[] = {
	    {"{\"inputs\": [{\"embedding\": [1, 2, 3]}, {\"embedding\": [1, 2]}, "
	     "{\"embedding\": [4, 5, 6]}]}",
	     1, "inputs[1].embedding has 2 values; the item tower expects 3"},
	    {"{\"inputs\": [{\"embedding\": [1, 2, 3, 4, 3e38, -0]}], \"top_k\": 2}", 1,
	     "inputs[0].embedding has 6 values; the item tower expects 3"},
	    {"{\"inputs\": [{\"id\": \"a\", \"embedding\": []}]}", 1,
	     "inputs[0].embedding has 0 values; the item tower expects 3"},
	    {"{\"inputs\": [{\"embedding\": [1, 2, 3]}, {\"embedding\": [1, 2, 3, 4]}, "
	     "{\"embedding\": [1]}]}",
	     1, "inputs[1].embedding has 4 values; the item tower expects 3"},
	    {"{\"inputs\": [{\"embedding\": [1, 2, 3]}, {\"embedding\": [1, 2, 3]}, "
	     "{\"embedding_b64\": \"AADAPwAAAMA=\", \"id\": 7}]}",
	     1,
	     "inputs[2].embedding_b64 decodes to 8 bytes; the item tower expects 3 float32 values "
	     "(12 bytes)"},
	    {"{\"inputs\": [{\"embedding_b64\": \"AADAPwAA*MAAAIA+AAAA\"}]}", 1,
	     "inputs[0].embedding_b64 is not valid base64 (character 9, '*')"},
	    {"{\"inputs\": [{\"embedding_b64\": \"AADAPwAAAMAAAIA+AAAAAA==\"}]}", 1,
	     "inputs[0].embedding_b64 decodes to 16 bytes; the item tower expects 3 float32 "
	     "values (12 bytes)"},
	    /* base64 of the right length that is not three finite floats */
	    {"{\"inputs\": [{\"embedding_b64\": \"AADAPwAAAMAAAIA+\"}, {\"embedding_b64\": "
	     "\"AADAPwAAwH8AAIA+\", \"id\": \"x\"}, {\"embedding_b64\": \"AADAPwAAAMAAAIB/\"}]}",
	     1, "inputs[1].embedding_b64 holds a non-finite float32 at index 1"},
	    {"{\"inputs\": [{\"embedding_b64\": \"AADAPwAA*MAAAIA+\"}]}", 1,
	     "inputs[0].embedding_b64 is not valid base64 (character 9, '*')"},
	    {"{\"inputs\": [{\"embedding_b64\": \"AADAPwAAAMAAAIB/\"}], \"format\": \"dash\"}", 1,
	     "inputs[0].embedding_b64 holds a non-finite float32 at index 2"},
	    /* a JSON value not finite as float32: still the jansson path's */
	    {"{\"inputs\": [{\"embedding\": [1, 1e39, 3]}]}", 0,
	     "inputs[0].embedding[1] = 1e+39 is not finite as float32"},
	    /* another fault after the first: jansson, which may name it first */
	    {"{\"inputs\": [{\"embedding_b64\": \"AADAPwAAwH8AAIA+\"}], \"top_k\": true}", 0,
	     "top_k must be an integer from 1 to 16"},
	    {"{\"inputs\": [{\"embedding\": [1, 2]}, {\"embedding\": [1, 2, 3]}", 0, NULL},
	    {"{\"inputs\": [{\"embedding\": [1, 2]}], \"colour\": 1}", 0,
	     "unknown field \"colour\" (expected inputs, top_k, return_quantized, format)"},
	    {"{\"inputs\": [{\"embedding\": [1, 2]}], \"top_k\": 0}", 0,
	     "top_k must be an integer from 1 to 16"},
	    {"{\"inputs\": [{\"embedding\": [1, 2]}, {\"embedding\": [1, 2, 3], \"id\": 1, "
	     "\"id\": 2}]}",
	     0, NULL},
	    {"{\"inputs\": [{\"embedding\": [1, 2]}, {\"embedding\": [1, 2, 3], "
	     "\"embedding_b64\": \"AADAPwAAAMAAAIA+\"}]}",
	     0, "inputs[0].embedding has 2 values; the item tower expects 3"},
	    {"{\"inputs\": [{\"embedding\": [1, 2], \"id\": [1]}]}", 0,
	     "inputs[0].embedding has 2 values; the item tower expects 3"},
	    {"{\"inputs\": [{\"embedding\": [1, 2, 1e400]}]}", 0, NULL},
	    {"{\"inputs\": [{\"embedding\": [1, 2, \"x\", 4]}]}", 0,
	     "inputs[0].embedding has 4 values; the item tower expects 3"},
	    {"{\"inputs\": [{\"embedding\": [1, 2]}, {\"embedding\": [1, 2]}, {\"embedding\": [1, "
	     "2]}]}",
	     0, "3 inputs; at most 2 are allowed per request"},
	};

	for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
		const char *body = cases[c].body;
		int max_inputs = cases[c].msg && strstr(cases[c].msg, "at most 2") ? 2 : 8;
		struct srv_encode_req q, j;
		struct srv_api_error e, je;

		memset(&e, 0, sizeof(e));
		memset(&je, 0, sizeof(je));
		ck_assert_msg(srv__encode_req_bad_row_noted(body, strlen(body), 3, max_inputs) ==
				  cases[c].fast,
			      "case %zu: made without jansson: expected %d", c, cases[c].fast);
		ck_assert_int_eq(decode(body, 3, max_inputs, &q, &e), -1);
		ck_assert_int_eq(srv__encode_req_decode_jansson(body, strlen(body), SID_TOWER_ITEM,
								3, max_inputs, &j, &je),
				 -1);
		ck_assert_msg(e.kind == je.kind && strcmp(e.msg, je.msg) == 0,
			      "case %zu: \"%s\" against jansson's \"%s\"", c, e.msg, je.msg);
		if (cases[c].msg)
			ck_assert_str_eq(e.msg, cases[c].msg);
		ck_assert_ptr_null(q.x);
		ck_assert_ptr_null(q.ids);
	}
}
END_TEST

/* The separator count before jansson, against the plain byte loop it
 * replaced: strings skipped with their escapes, on random bodies made of the
 * bytes that matter ('"', '\\', '[', '{', ',', and others), every length. */
static size_t separators_ref(const char *body, size_t len)
{
	size_t n = 0;
	for (size_t i = 0; i < len; i++) {
		char c = body[i];
		if (c == '"') {
			for (i++; i < len && body[i] != '"'; i++)
				if (body[i] == '\\')
					i++;
		} else if (c == '[' || c == '{' || c == ',') {
			n++;
		}
	}
	return n;
}

START_TEST(test_json_separators)
{
	static const char alphabet[] = "\"\\\\\\[{,a]}:\"";
	static const char *const fixed[] = {
	    "",
	    "\"",
	    "\\",
	    "[",
	    "\"[\"",
	    "\"\\\"[\"[",
	    "\"\\\\\"[",
	    "\"a\\\\\\\"[\",{",
	    "{\"inputs\": [{\"embedding\": [1, 2]}]}",
	    "\"abc\\",
	    "[\"\\\\\\\\\",",
	    "\"\"\"\"{",
	};
	uint64_t st = 0x9e3779b97f4a7c15ull;
	char body[64];

	for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++)
		ck_assert_uint_eq(
		    srv__json_separators(fixed[i], strlen(fixed[i]), "inputs", NULL, NULL),
		    separators_ref(fixed[i], strlen(fixed[i])));
	for (int t = 0; t < 200000; t++) {
		size_t len = (size_t)(t % (int)sizeof(body));
		for (size_t k = 0; k < len; k++) {
			st ^= st << 13;
			st ^= st >> 7;
			st ^= st << 17;
			body[k] = alphabet[st % (sizeof(alphabet) - 1)];
		}
		ck_assert_msg(srv__json_separators(body, len, "inputs", NULL, NULL) ==
				  separators_ref(body, len),
			      "%zu separators against %zu in \"%.*s\"",
			      srv__json_separators(body, len, "inputs", NULL, NULL),
			      separators_ref(body, len), (int)len, body);
	}
}
END_TEST

/* A random JSON value, @depth deep; its strings hold what the counts must
 * skip (brackets, commas, quotes, backslashes, "inputs"). */
static uint64_t rnd_st = 0x2545f4914f6cdd1dull;
static unsigned rnd(unsigned n)
{
	rnd_st ^= rnd_st << 13;
	rnd_st ^= rnd_st >> 7;
	rnd_st ^= rnd_st << 17;
	return (unsigned)(rnd_st % n);
}

static json_t *rnd_value(int depth)
{
	static const char *const strs[] = {
	    "inputs",	"[",   "{\"inputs\": [1, 2]}", ",", "\\", "\"", "a,b", "", "\\\"[",
	    "inputs\"", "a: b"};
	static const char *const keys[] = {"inputs", "embedding", "id", "x", "in\"puts"};
	json_t *v;

	switch (rnd(depth >= 4 ? 3 : 6)) {
	case 0:
		return json_integer((json_int_t)rnd(1000) - 500);
	case 1:
		return json_string(strs[rnd(sizeof(strs) / sizeof(strs[0]))]);
	case 2:
		return rnd(2) ? json_true() : json_null();
	case 3:
		v = json_array();
		for (unsigned i = rnd(5); i > 0; i--)
			json_array_append_new(v, rnd_value(depth + 1));
		return v;
	default:
		v = json_object();
		for (unsigned i = rnd(4); i > 0; i--)
			json_object_set_new(v, keys[rnd(sizeof(keys) / sizeof(keys[0]))],
					    rnd_value(depth + 1));
		return v;
	}
}

/* The object members in @v and everything in it, as jansson built them. */
static size_t members_of(json_t *v)
{
	size_t n = 0, i;
	const char *k;
	json_t *e;

	if (json_is_object(v)) {
		json_object_foreach(v, k, e) n += 1 + members_of(e);
	} else if (json_is_array(v)) {
		json_array_foreach(v, i, e) n += members_of(e);
	}
	return n;
}

/*
 * The inputs counted before jansson, against jansson's own count of the
 * top-level "inputs" array, on random well-formed bodies: other keys and
 * values beside it, arrays and objects (some with a key "inputs") nested in
 * its elements, strings full of brackets, commas, colons and escaped
 * quotes.  And the object members counted with them, against jansson's.
 */
START_TEST(test_json_inputs)
{
	static const struct {
		const char *body;
		size_t inputs;
	} fixed[] = {
	    {"{\"inputs\": []}", 0},
	    {"{\"inputs\": [[[1, 2], [3]], {\"inputs\": [1, 2, 3]}]}", 2},
	    {"{\"inputs\": [1, 2], \"inputs\": [1, 2, 3]}", 3}, /* jansson: duplicate key */
	    {"{\"a\": {\"inputs\": [1, 2, 3]}}", 0},
	    {"{\"a\": \"inputs\", \"b\": [1, 2]}", 0},
	    {"[\"inputs\", [1, 2]]", 0},
	    {"{\"inputs\": 5, \"b\": [1, 2]}", 0},
	    {"{\"inputs\": [,, ,]}", 0},
	    {"{\"inputs\": [1 2 3]}", 1},
	    {"{\"inputs\": [{\"embedding\": [[1], [2], [3]]}, \"a,b\"", 2}, /* cut short */
	    {"{\"inputs\": [{\"id\": \"[\\\"]\"", 1},
	    /* the key with escapes, as jansson decodes it (review) */
	    {"{\"\\u0069nputs\": [1, 2, 3]}", 3},
	    {"{\"in\\u0070ut\\u0073\": [1, 2]}", 2},
	    {"{\"\\u0049nputs\": [1, 2]}", 0},
	    {"{\"\\u0069nput\": [1, 2]}", 0},
	    {"{\"\\u0069nputsx\": [1, 2]}", 0},
	    {"{\"\\u006\": [1, 2]}", 0},
	    {"{\"\\ninputs\": [1, 2]}", 0},
	};
	int flags[] = {0, JSON_COMPACT, JSON_INDENT(2)};

	for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++) {
		size_t n = 99;
		srv__json_separators(fixed[i].body, strlen(fixed[i].body), "inputs", &n, NULL);
		ck_assert_msg(n == fixed[i].inputs, "%zu inputs in %s", n, fixed[i].body);
	}
	for (int t = 0; t < 3000; t++) {
		json_t *root = json_object(), *in = NULL;
		char *text;
		size_t n = 99, want = 0, members = 99;

		for (unsigned k = rnd(3); k > 0; k--)
			json_object_set_new(root, rnd(2) ? "x" : "top_k", rnd_value(1));
		if (rnd(5)) {
			in = rnd(6) ? json_array() : rnd_value(1);
			for (unsigned k = json_is_array(in) ? rnd(12) : 0; k > 0; k--)
				json_array_append_new(in, rnd_value(2));
			json_object_set_new(root, "inputs", in);
			want = json_is_array(in) ? json_array_size(in) : 0;
		}
		for (unsigned k = rnd(3); k > 0; k--)
			json_object_set_new(root, rnd(2) ? "format" : "inputs2", rnd_value(1));
		text = json_dumps(root, flags[rnd(3)] | JSON_PRESERVE_ORDER);
		ck_assert_ptr_nonnull(text);
		ck_assert_uint_eq(srv__json_separators(text, strlen(text), "inputs", &n, &members),
				  separators_ref(text, strlen(text)));
		ck_assert_msg(n == want, "%zu inputs, jansson %zu, in %s", n, want, text);
		ck_assert_msg(members == members_of(root), "%zu members, jansson %zu, in %s",
			      members, members_of(root), text);
		free(text);
		json_decref(root);
	}
}
END_TEST

/* @n inputs of @w numbers (1, 2, ...) and @tail before the closing brace. */
static char *inputs_body(size_t n, size_t w, const char *tail, size_t *len)
{
	char *b = malloc(n * (w * 8 + 32) + strlen(tail) + 32);
	size_t o = 0;

	ck_assert_ptr_nonnull(b);
	o += (size_t)sprintf(b, "{\"inputs\": [");
	for (size_t i = 0; i < n; i++) {
		o += (size_t)sprintf(b + o, "%s{\"embedding\": [", i ? ", " : "");
		for (size_t j = 0; j < w; j++)
			o += (size_t)sprintf(b + o, "%s%zu", j ? ", " : "", j % 1000);
		o += (size_t)sprintf(b + o, "]}");
	}
	o += (size_t)sprintf(b + o, "]%s}", tail);
	*len = o;
	return b;
}

/*
 * max_inputs counts inputs, not the numbers in them: under max_inputs 4,
 * one input of 1024 numbers decodes for a tower of width 1024 (also on the
 * jansson path) and is told its length by one of width 3 (400); five are
 * 413 with their count.  The bracket count made the 400 and the count a 413
 * about "JSON brackets and commas".
 */
START_TEST(test_long_input_small_max_inputs)
{
	struct srv_encode_req req;
	struct srv_api_error e;
	size_t len;
	char *body = inputs_body(1, 1024, "", &len);

	ck_assert_int_eq(srv_encode_req_decode(body, len, SID_TOWER_ITEM, 1024, 4, NULL, &req, &e),
			 0);
	ck_assert_int_eq((int)req.B, 1);
	ck_assert_float_eq(req.x[1023], 23.0f);
	srv_encode_req_release(&req);
	ck_assert_int_eq(srv_encode_req_decode(body, len, SID_TOWER_ITEM, 3, 4, NULL, &req, &e),
			 -1);
	ck_assert_int_eq(e.kind, SRV_ERR_INVALID_ARGUMENT);
	ck_assert_str_eq(e.msg, "inputs[0].embedding has 1024 values; the item tower expects 3");
	free(body);
	/* a value with an escape: the jansson path */
	body = inputs_body(1, 1024, ", \"top_k\": 1, \"format\": \"d\\u0061sh\"", &len);
	ck_assert_int_eq(srv_encode_req_decode(body, len, SID_TOWER_ITEM, 1024, 4, NULL, &req, &e),
			 0);
	ck_assert_int_eq((int)req.B, 1);
	srv_encode_req_release(&req);
	free(body);
	body = inputs_body(5, 1024, "", &len);
	ck_assert_int_eq(srv_encode_req_decode(body, len, SID_TOWER_ITEM, 1024, 4, NULL, &req, &e),
			 -1);
	ck_assert_int_eq(e.kind, SRV_ERR_TOO_LARGE);
	ck_assert_str_eq(e.msg, "5 inputs; at most 4 are allowed per request");
	ck_assert_ptr_null(req.x);
	free(body);
	/* Within the separator bound the error is jansson's: nine inputs in a
	 * body cut short are malformed JSON (400), as the jansson decoder
	 * says, not 413 (fuzz_api found the two paths disagreeing). */
	body = inputs_body(9, 4, "", &len);
	len -= 3;
	ck_assert_int_eq(srv_encode_req_decode(body, len, SID_TOWER_ITEM, 4, 8, NULL, &req, &e),
			 -1);
	{
		struct srv_api_error je;
		struct srv_encode_req jreq;
		ck_assert_int_eq(
		    srv__encode_req_decode_jansson(body, len, SID_TOWER_ITEM, 4, 8, &jreq, &je),
		    -1);
		ck_assert_int_eq(e.kind, SRV_ERR_INVALID_ARGUMENT);
		ck_assert_int_eq(je.kind, e.kind);
		ck_assert_str_eq(e.msg, je.msg);
		ck_assert_msg(!strncmp(e.msg, "malformed JSON", 14), "%s", e.msg);
	}
	free(body);
}
END_TEST

/* max_inputs inputs decode and one more is 413, for every max_inputs at or
 * beside a size the fast scanner grows its arrays to (16, 32, ...): it
 * capped them at max_inputs, and a cap one higher took max_inputs + 1. */
START_TEST(test_max_inputs_exactly)
{
	static const int maxes[] = {1, 2, 15, 16, 17, 31, 32, 33, 64};

	for (size_t i = 0; i < sizeof(maxes) / sizeof(maxes[0]); i++) {
		const int max = maxes[i];
		struct srv_encode_req req;
		struct srv_api_error e;
		char want[80];
		size_t len;
		char *body = inputs_body((size_t)max, 2, "", &len);

		ck_assert_int_eq(
		    srv_encode_req_decode(body, len, SID_TOWER_ITEM, 2, max, NULL, &req, &e), 0);
		ck_assert_int_eq((int)req.B, max);
		srv_encode_req_release(&req);
		free(body);
		body = inputs_body((size_t)max + 1, 2, "", &len);
		ck_assert_int_eq(
		    srv_encode_req_decode(body, len, SID_TOWER_ITEM, 2, max, NULL, &req, &e), -1);
		ck_assert_int_eq(e.kind, SRV_ERR_TOO_LARGE);
		snprintf(want, sizeof(want), "%d inputs; at most %d are allowed per request",
			 max + 1, max);
		ck_assert_str_eq(e.msg, want);
		free(body);
	}
}
END_TEST

/*
 * Before jansson builds a json_t per value (a few MB of "[]," took
 * gigabytes): a body of more inputs than max_inputs is 413 with their
 * count; one of fewer but with more brackets and commas than a request
 * within the limits has (an embedding far too long, or arrays nested in
 * it, with a fault that keeps the fast scanner from it) is 400.  Brackets
 * in strings do not count, and a body within the bound still decodes on
 * the jansson path.
 */
/* @head, @n times @item, then @tail, into @out; returns the length. */
static size_t repeated(char *out, const char *head, const char *item, size_t n, const char *tail)
{
	size_t len = (size_t)sprintf(out, "%s", head);
	for (size_t i = 0; i < n; i++)
		len += (size_t)sprintf(out + len, "%s", item);
	return len + (size_t)sprintf(out + len, "%s", tail);
}

START_TEST(test_decode_value_flood)
{
	static const char ok[] =
	    "{\"inputs\": [{\"id\": \"\u00e9\", \"embedding\": [1, 2, 3]},\n"
	    " {\"id\": \"caf\u00e9\", \"embedding\": [4, 5, 6]}], \"top_k\": 2}";
	struct srv_encode_req req;
	struct srv_api_error e;
	size_t n = 100000, len = 0;
	char *body = malloc(4 * n + 64);

	ck_assert_ptr_nonnull(body);
	len = repeated(body, "{\"inputs\": [", "[],", n, "[]]}");
	memset(&e, 0, sizeof(e));
	ck_assert_int_eq(srv_encode_req_decode(body, len, SID_TOWER_ITEM, 3, 2, NULL, &req, &e),
			 -1);
	ck_assert_int_eq(e.kind, SRV_ERR_TOO_LARGE);
	ck_assert_str_eq(e.msg, "100001 inputs; at most 2 are allowed per request");
	ck_assert_ptr_null(req.x);
	/* one input: a long embedding and an unknown field */
	len = repeated(body, "{\"inputs\": [{\"embedding\": [", "0,", n, "0]}], \"x\": 1}");
	ck_assert_int_eq(srv_encode_req_decode(body, len, SID_TOWER_ITEM, 3, 2, NULL, &req, &e),
			 -1);
	ck_assert_int_eq(e.kind, SRV_ERR_INVALID_ARGUMENT);
	ck_assert_str_eq(e.msg, "the body has 100005 JSON brackets and commas; a request of at "
				"most 2 inputs of 3 numbers has no more than 78");
	ck_assert_ptr_null(req.x);
	/* one input: arrays nested in its embedding */
	len = repeated(body, "{\"inputs\": [{\"embedding\": [", "[0],", n, "[0]]}]}");
	ck_assert_int_eq(srv_encode_req_decode(body, len, SID_TOWER_ITEM, 3, 2, NULL, &req, &e),
			 -1);
	ck_assert_int_eq(e.kind, SRV_ERR_INVALID_ARGUMENT);
	ck_assert_str_eq(e.msg, "the body has 200005 JSON brackets and commas; a request of at "
				"most 2 inputs of 3 numbers has no more than 78");
	/* the same count in strings is no count at all */
	len = (size_t)sprintf(body, "{\"inputs\": [{\"id\": \"");
	for (size_t i = 0; i < n; i++)
		body[len++] = i % 2 ? ',' : '[';
	len += (size_t)sprintf(body + len, "\\\"\", \"embedding\": [1, 2, 3]}]}");
	ck_assert_int_eq(srv_encode_req_decode(body, len, SID_TOWER_ITEM, 3, 2, NULL, &req, &e), 0);
	srv_encode_req_release(&req);
	free(body);
	ck_assert_int_eq(
	    srv_encode_req_decode(ok, strlen(ok), SID_TOWER_ITEM, 3, 2, NULL, &req, &e), 0);
	ck_assert_int_eq((int)req.B, 2);
	srv_encode_req_release(&req);
}
END_TEST

/* The fast scanner takes valid requests and agrees with jansson bit for bit. */
/* The fast scanner with its AVX2 string scan and finite check, and with the
 * portable ones: bodies with ids of 0..80 characters (both sides of the
 * 32-byte steps) and base64 rows of D = 13 floats (eight at a time, then
 * the rest) decode to the same request, which is the one written; a byte
 * that sends a string to jansson, anywhere in the id or the base64, or a
 * non-finite value anywhere in the row, makes both give up. */
#define FP_D 13
static int fast_both(const char *body, size_t len, struct srv_encode_req *out)
{
	struct srv_encode_req q[2];
	int ok[2];

	for (int k = 0; k < 2; k++) {
		memset(&q[k], 0, sizeof(q[k]));
		q[k].top_k = 1;
		srv__api_force_portable(k);
		ok[k] = srv__encode_req_decode_fast(body, len, FP_D, 8, &q[k]);
	}
	srv__api_force_portable(0);
	if (ok[0] != ok[1])
		ck_abort_msg("AVX2 scanner says %d, portable %d: %.*s", ok[0], ok[1], (int)len,
			     body);
	if (ok[0]) {
		if (q[0].B != q[1].B || memcmp(q[0].x, q[1].x, q[0].B * FP_D * sizeof(float)) ||
		    q[0].id_len[0] != q[1].id_len[0] ||
		    memcmp(q[0].ids, q[1].ids, q[0].id_len[0]) != 0)
			ck_abort_msg("the scanners decode differently: %.*s", (int)len, body);
	}
	srv_encode_req_release(&q[1]);
	*out = q[0];
	return ok[0];
}

static size_t fp_body(char *body, const char *id, const float *row)
{
	char enc[FP_D * 8];
	b64_enc((const uint8_t *)row, FP_D * 4, enc, 1);
	return (size_t)sprintf(body, "{\"inputs\": [{\"id\": \"%s\", \"embedding_b64\": \"%s\"}]}",
			       id, enc);
}

START_TEST(test_fast_scanner_paths)
{
	static const unsigned char stop[] = {0x01, 0x1f, 0x7f, 0x80, 0xc3, 0xff, '\\', '"'};
	float row[FP_D];
	char id[96], body[512];
	struct srv_encode_req q;
	size_t len;

	for (int j = 0; j < FP_D; j++)
		row[j] = (float)j * 0.25f - 1.5f;
	for (int n = 0; n <= 80; n++) {
		char want[100];
		for (int k = 0; k < n; k++)
			id[k] = (char)(' ' + (k * 7 + n) % 95); /* printable ASCII */
		id[n] = '\0';
		for (int k = 0; k < n; k++) /* no escapes in the body */
			if (id[k] == '"' || id[k] == '\\')
				id[k] = 'x';
		len = fp_body(body, id, row);
		if (!fast_both(body, len, &q))
			ck_abort_msg("not decoded: %s", body);
		snprintf(want, sizeof(want), "\"%s\"", id);
		if (q.B != 1 || memcmp(q.x, row, sizeof(row)) != 0 || q.id_len[0] != strlen(want) ||
		    memcmp(q.ids, want, q.id_len[0]) != 0)
			ck_abort_msg("decoded wrong: %s", body);
		srv_encode_req_release(&q);
		/* one stop byte at every position of the id and of the base64 */
		for (size_t p = 0; p < len; p++) {
			size_t at_id = (size_t)(strstr(body, "\"id\": \"") - body) + 7;
			size_t at_b64 = (size_t)(strstr(body, "_b64\": \"") - body) + 8;
			int in_id = p >= at_id && p < at_id + (size_t)n;
			int in_b64 = p >= at_b64 && p < at_b64 + (FP_D * 4 + 2) / 3 * 4;
			if (!in_id && !in_b64)
				continue;
			for (size_t c = 0; c < sizeof(stop); c++) {
				char mod[512];
				memcpy(mod, body, len);
				mod[p] = (char)stop[c];
				if (fast_both(mod, len, &q))
					ck_abort_msg("byte %#x at %zu decoded: %.*s", stop[c], p,
						     (int)len, mod);
			}
		}
	}
	/* a non-finite value anywhere in the row; the largest finite one passes */
	for (int j = 0; j < FP_D; j++) {
		static const uint32_t bits[] = {0x7f800000, 0xff800000, 0x7fc00000, 0xff800001,
						0x7f7fffff};
		for (size_t b = 0; b < sizeof(bits) / sizeof(bits[0]); b++) {
			float r[FP_D];
			int ok;
			memcpy(r, row, sizeof(r));
			memcpy(&r[j], &bits[b], 4);
			len = fp_body(body, "x", r);
			ok = fast_both(body, len, &q);
			if (ok != (bits[b] == 0x7f7fffff))
				ck_abort_msg("value %#x at %d: decoded %d", bits[b], j, ok);
			if (ok && memcmp(q.x, r, sizeof(r)) != 0)
				ck_abort_msg("value %#x at %d: decoded wrong", bits[b], j);
			if (ok)
				srv_encode_req_release(&q);
		}
	}
}
END_TEST

/* @body cut to @cut bytes in a buffer of exactly that size (ASan sees a
 * read past it): when the fast scanner accepts, jansson accepts the same
 * row; with @strict (no escapes, not cut) jansson accepting means the
 * scanner does too. */
static void fast_vs_jansson(const char *body, size_t cut, int D, int strict)
{
	struct srv_encode_req a, b;
	struct srv_api_error e;
	char *exact = malloc(cut ? cut : 1);
	int fa, jb;

	if (!exact)
		ck_abort_msg("out of memory");
	memcpy(exact, body, cut);
	memset(&a, 0, sizeof(a));
	a.top_k = 1;
	fa = srv__encode_req_decode_fast(exact, cut, D, 8, &a);
	jb = srv__encode_req_decode_jansson(exact, cut, SID_TOWER_ITEM, D, 8, &b, &e) == 0;
	if ((fa && (!jb || memcmp(a.x, b.x, (size_t)D * 4) != 0)) || (!fa && jb && strict))
		ck_abort_msg("D %d, %.*s: fast %d, jansson %d", D, (int)cut, exact, fa, jb);
	if (fa)
		srv_encode_req_release(&a);
	if (jb)
		srv_encode_req_release(&b);
	free(exact);
}

/* Number spellings at the edges of the one-pass conversion (eight-digit
 * blocks, 19 significant digits, |e10| <= 22, 2^53, float midpoints, signed
 * zeros, subnormals, overflow, bad grammar, exponents of three digits and
 * more): the scanner accepts exactly
 * when jansson does and gives the same bits, "-0" as +0 included. */
START_TEST(test_fast_number_edges)
{
	static const char *tok[] = {"0",
				    "-0",
				    "0.0",
				    "-0.0",
				    "0e5",
				    "-0.0e-3",
				    "1",
				    "-1",
				    "7",
				    "12345678",
				    "123456789",
				    "1234567890123456789",
				    "9007199254740992",
				    "9007199254740993",
				    "-9223372036854775808",
				    "9223372036854775807",
				    "9223372036854775808",
				    "99999999999999999999",
				    "0.1",
				    "0.10000000149011612",
				    "0.100000001490116119384765625",
				    "0.34119999408721924",
				    "-0.0312345678",
				    "0.00000000001234",
				    "0.0000000000000000000000123",
				    "0.000000012345678901234567",
				    "12345678.87654321",
				    "1234567812345678.5",
				    "123456789012345678.9",
				    "1.2345678901234567890e5",
				    "1.000000059604644775",
				    "1.000000059604644776",
				    "1.0000000596046447753906250001",
				    "16777217",
				    "16777217.0",
				    "3.4028235e38",
				    "3.4028236e38",
				    "3.5e38",
				    "1.17549435e-38",
				    "1.4e-45",
				    "1e-50",
				    "1e22",
				    "1e23",
				    "1E+2",
				    "1e-2",
				    "1e-22",
				    "1e-23",
				    "123e-20",
				    "4.5e+0015",
				    "00.5",
				    "01",
				    "-",
				    "1.",
				    "1e",
				    "1e+",
				    ".5",
				    "--1",
				    "1.2.3",
				    "0x10",
				    "+1",
				    "1e99999999999",
				    "1e-100",
				    "7e-0100",
				    "2.5e-123",
				    "1e100",
				    "1e+0105"};
	char body[256];

	for (size_t i = 0; i < sizeof(tok) / sizeof(tok[0]); i++) {
		snprintf(body, sizeof(body), "{\"inputs\": [{\"embedding\": [%s, 0.5]}]}", tok[i]);
		fast_vs_jansson(body, strlen(body), 2, 1);
	}
	{ /* and the signs of zero, spelled out */
		struct srv_encode_req a;
		const char *b = "{\"inputs\": [{\"embedding\": [-0, -0.0]}]}";
		memset(&a, 0, sizeof(a));
		a.top_k = 1;
		ck_assert_int_eq(srv__encode_req_decode_fast(b, strlen(b), 2, 8, &a), 1);
		ck_assert(!signbit(a.x[0]) && signbit(a.x[1]));
		srv_encode_req_release(&a);
	}
}
END_TEST

/* The digits of a number are read eight bytes at a time, a short run
 * shifted into place, and one at a time within eight bytes of the body's
 * end: every integer-part length 0..21 and fraction length 0..24 (none,
 * too), after 0..9 leading zeros, with and without an exponent, first in
 * its row (the body goes on) and last (four bytes of body left), each
 * digit drawn with zeros common: the scanner gives jansson's bits. */
START_TEST(test_fast_number_lengths)
{
	static const char *expo[] = {"", "e-5", "E+3"};
	static const int zeros[] = {0, 1, 3, 8, 9};
	unsigned long long s = 0x2545f4914f6cdd1dull;
	char num[96], body[160];
	int checked = 0;

	for (int il = 0; il <= 21; il++)
		for (int fl = -1; fl <= 24; fl++)
			for (int zi = 0; zi < 5; zi++)
				for (int x = 0; x < 3; x++) {
					int n = 0, z = zeros[zi];
					if (s & 1)
						num[n++] = '-';
					if (!il) {
						num[n++] = '0';
					} else {
						for (int k = 0; k < il; k++) {
							s ^= s << 13, s ^= s >> 7, s ^= s << 17;
							/* no leading zero: "01" is no number */
							num[n++] =
							    (char)(k ? (s % 10 < 3
									    ? '0'
									    : '0' + (int)(s % 10))
								     : '1' + (int)(s % 9));
						}
					}
					if (fl >= 0) {
						num[n++] = '.';
						for (int k = 0; k < fl; k++) {
							s ^= s << 13, s ^= s >> 7, s ^= s << 17;
							num[n++] =
							    (char)(k < z || s % 10 < 3
								       ? '0'
								       : '0' + (int)(s % 10));
						}
						if (!fl)
							num[n++] = '5'; /* "1." is no number */
					}
					n += snprintf(num + n, sizeof(num) - (size_t)n, "%s",
						      expo[x]);
					snprintf(body, sizeof(body),
						 "{\"inputs\": [{\"embedding\": [%s, 0.5]}]}", num);
					fast_vs_jansson(body, strlen(body), 2, 1);
					snprintf(body, sizeof(body),
						 "{\"inputs\": [{\"embedding\": [0.5, %s]}]}", num);
					fast_vs_jansson(body, strlen(body), 2, 1);
					checked += 2;
				}
	ck_assert_int_eq(checked, 22 * 26 * 5 * 3 * 2);
}
END_TEST

/* The fast scanner reads a base64 row by looking for its closing quote
 * where the row's one or two possible lengths end.  For D = 13 (70 or 72
 * characters) and D = 12 (64 only): base64 strings of every length 0..90,
 * unpadded, padded, with one '=' or three, whole and cut short: the
 * scanner accepts exactly when jansson does, with the same row.  With an
 * escaped quote or an escaped '/' at every position (of strings of 62..74
 * characters) it may leave the body to jansson (which decodes "\/") but
 * never accepts what jansson refuses. */
START_TEST(test_fast_b64_lengths)
{
	uint8_t raw[80];
	char enc[200], mod[200], body[400];

	for (size_t i = 0; i < sizeof(raw); i++)
		raw[i] = (uint8_t)(i * 37 % 61); /* finite floats */
	for (int D = 12; D <= 13; D++) {
		for (int variant = 0; variant < 6; variant++) {
			for (size_t len = 0; len <= 90; len++) {
				b64_enc(raw, sizeof(raw), enc, 0);
				enc[len] = '\0';
				if (variant == 1) /* padded */
					strcat(enc, len % 4 == 2 ? "==" : len % 4 == 3 ? "=" : "");
				else if (variant == 2)
					strcat(enc, "=");
				else if (variant == 3)
					strcat(enc, "===");
				/* escapes: at the lengths that matter */
				if (variant >= 4 && !(len >= 62 && len <= 74))
					continue;
				for (size_t p = 0; p <= (variant >= 4 ? len : 0); p++) {
					size_t ml = strlen(enc), bl;
					memcpy(mod, enc, ml + 1);
					if (variant >= 4) { /* \" or \/ at p */
						memmove(mod + p + 2, mod + p, ml - p + 1);
						mod[p] = '\\';
						mod[p + 1] = variant == 4 ? '"' : '/';
					}
					bl = (size_t)snprintf(
					    body, sizeof(body),
					    "{\"inputs\": [{\"embedding_b64\": \"%s\"}]}", mod);
					fast_vs_jansson(body, bl, D, variant < 4);
					for (size_t cut = 0; cut < bl && variant < 4;
					     cut += cut + 80 < bl ? 7 : 1)
						fast_vs_jansson(body, cut, D, 1);
				}
			}
		}
	}
}
END_TEST

START_TEST(test_fast_path_agrees)
{
	static const char *ok[] = {
	    "{\"inputs\": [{\"embedding\": [1, -0, 0.5, 1e-3]}]}",
	    " {\"inputs\":[{\"id\":\"a b\",\"embedding\":[0.10000000149011612,"
	    "-2.5E+2,3e0,-123456789012345678]}],\"top_k\":2,\"format\":\"tokens\","
	    "\"return_quantized\":false}\n",
	    "{\"top_k\": 16, \"inputs\": [{\"embedding_b64\": \"AACAPwAAgD4AAEC/AAAAAA==\", "
	    "\"id\": -7}, {\"embedding\": [3.4028234e38, -1.17549435e-38, 1.4e-45, "
	    "0.333333333333333314829616256247390992939472198486328125]}], \"return_quantized\": "
	    "true}",
	    "{\"inputs\":[{\"embedding\":[1,2,3,4]},{\"embedding\":[5,6,7,8]},"
	    "{\"embedding\":[9,10,11,12],\"id\":\"x\"}],\"format\":\"dash\"}",
	};
	/* Valid requests the scanner leaves to jansson, and invalid ones. */
	static const char *bail[] = {
	    "{\"inputs\": [{\"id\": \"caf\u00e9\", \"embedding\": [1, 2, 3, 4]}]}",
	    "{\"inputs\": [{\"id\": \"\xc3\xa9\", \"embedding\": [1, 2, 3, 4]}]}",
	    "{\"inputs\": [{\"embedding\": [1, 2, 3, 4]}], \"top_k\": 1.0}",
	    "{\"inputs\": [{\"id\": \"abcdefgh\tijklmnopq\", \"embedding\": [1, 2, 3, 4]}]}",
	    "{\"inputs\": [{\"id\": \"abcdefghijklmn\x7fopq\", \"embedding\": [1, 2, 3, 4]}]}",
	    "{\"inputs\": [{\"id\": \"abcdefghijklmnopq\\\\\", \"embedding\": [1, 2, 3, 4]}]}",
	    "{\"inputs\": [{\"embedding\": [1, 2, 3, 4],}]}",
	    "{\"inputs\": [{\"embedding\": [1, 2, 3, 04]}]}",
	    "{\"inputs\": [{\"embedding\": [1, 2, 3, 4.]}]}",
	    "{\"inputs\": [{\"embedding\": [1, 2, 3, 0x4]}]}",
	    "{\"inputs\": [{\"embedding\": [1, 2, 3, 1e39]}]}",
	    "{\"inputs\": [{\"embedding\": [1, 2, 3, 4]}], \"inputs\": []}",
	    "{\"inputs\": [{\"embedding\": [1, 2, 3, 4], \"id\": 1, \"id\": 2}]}",
	    "{\"inputs\": [{\"embedding\": [1, 2, 3, 4]}]} x",
	    "{\"inputs\": [{\"embedding\": [1, 2, 3, 4, 5]}]}",
	    "{\"inputs\": [{\"embedding\": [1, 2, 3, 4]}, {\"embedding\": [1, 2, 3, 4]}, "
	    "{\"embedding\": [1, 2, 3, 4]}, {\"embedding\": [1, 2, 3, 4]}, "
	    "{\"embedding\": [1, 2, 3, 4]}]}",
	    "{\"inputs\": [{\"embedding\": [1, 2, 3, 99999999999999999999]}]}",
	    "{\"inputs\": [{\"embedding\": [1, 2, 3, 4]}], \"topk\": 2}",
	    "{\"inputs\": [{\"embedding\": [1, 2, 3, 4]}]",
	};
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		struct srv_encode_req a, b;
		struct srv_api_error e;
		memset(&a, 0, sizeof(a));
		a.top_k = 1;
		ck_assert_msg(srv__encode_req_decode_fast(ok[i], strlen(ok[i]), 4, 4, &a) == 1,
			      "fast path refused ok[%zu]", i);
		ck_assert_msg(srv__encode_req_decode_jansson(ok[i], strlen(ok[i]), SID_TOWER_ITEM,
							     4, 4, &b, &e) == 0,
			      "%s", e.msg);
		ck_assert_int_eq(a.B, b.B);
		ck_assert(memcmp(a.x, b.x, a.B * 4 * sizeof(float)) == 0);
		ck_assert_int_eq(a.top_k, b.top_k);
		ck_assert_int_eq(a.quantized, b.quantized);
		ck_assert_int_eq(a.format, b.format);
		for (size_t r = 0; r < a.B; r++) {
			ck_assert_int_eq(a.id_len[r], b.id_len[r]);
			if (a.id_len[r])
				ck_assert(memcmp(a.ids + a.id_off[r], b.ids + b.id_off[r],
						 a.id_len[r]) == 0);
		}
		srv_encode_req_release(&a);
		srv_encode_req_release(&b);
	}
	for (size_t i = 0; i < sizeof(bail) / sizeof(bail[0]); i++) {
		struct srv_encode_req a;
		memset(&a, 0, sizeof(a));
		ck_assert_msg(srv__encode_req_decode_fast(bail[i], strlen(bail[i]), 4, 4, &a) == 0,
			      "fast path took bail[%zu]", i);
		ck_assert_ptr_null(a.x);
	}
}
END_TEST

/* Numbers in many spellings: the fast float conversion must give exactly
 * (float)strtod, as the jansson path does. */
START_TEST(test_fast_numbers)
{
	static const char *fmts[] = {"%.17g", "%.9g",  "%.8g", "%.3e",
				     "%.12f", "%.20e", "%.1f", "%g"};
	unsigned long long s = 0x9e3779b97f4a7c15ull;
	char body[4096];
	int rounds = 0;

	for (int r = 0; r < 3000; r++) {
		struct srv_encode_req a, b;
		struct srv_api_error e;
		size_t off = 0;
		double v[4];
		for (int j = 0; j < 4; j++) {
			s ^= s << 13, s ^= s >> 7, s ^= s << 17;
			/* magnitudes from 1e-12 to 1e12, both signs, some exact ties */
			v[j] = ((double)(s >> 11) / 9007199254740992.0 - 0.5) *
			       pow(10.0, (double)((int)(s % 25) - 12));
			if (s % 7 == 0)
				v[j] = (double)(float)v[j]; /* a float written in full */
			if (s % 11 == 0)		    /* a midpoint between two floats */
				v[j] = ((double)(float)v[j] +
					(double)nextafterf((float)v[j], INFINITY)) /
				       2;
		}
		off += (size_t)snprintf(body + off, sizeof(body) - off,
					"{\"inputs\": [{\"embedding\": [");
		for (int j = 0; j < 4; j++) {
			off += (size_t)snprintf(body + off, sizeof(body) - off, fmts[(r + j) % 8],
						v[j]);
			off +=
			    (size_t)snprintf(body + off, sizeof(body) - off, j < 3 ? ", " : "]}]}");
		}
		memset(&a, 0, sizeof(a));
		a.top_k = 1;
		if (!srv__encode_req_decode_fast(body, strlen(body), 4, 4, &a))
			continue; /* e.g. 1e-12 * tiny: left to jansson, fine */
		ck_assert_msg(srv__encode_req_decode_jansson(body, strlen(body), SID_TOWER_ITEM, 4,
							     4, &b, &e) == 0,
			      "%s: %s", body, e.msg);
		ck_assert_msg(memcmp(a.x, b.x, 4 * sizeof(float)) == 0,
			      "%s: %a %a %a %a vs %a %a %a %a", body, a.x[0], a.x[1], a.x[2],
			      a.x[3], b.x[0], b.x[1], b.x[2], b.x[3]);
		rounds++;
		srv_encode_req_release(&a);
		srv_encode_req_release(&b);
	}
	ck_assert_int_gt(rounds, 2000); /* the fast path really ran */
}
END_TEST

/* Assign requests: ids as plain text whichever decoder ran (the fast
 * scanner takes plain ASCII, jansson the escapes), reassign, refusals. */
START_TEST(test_assign_decode)
{
	static const char fast[] = "{\"inputs\": [{\"id\": \"sku-1\", \"embedding\": [1, 2]}, "
				   "{\"id\": 42, \"embedding\": [0.5, -1]}], \"reassign\": true}";
	static const char slow[] = "{\"reassign\": false, \"inputs\": [{\"id\": \"a\\\"b\\u00e9\", "
				   "\"embedding\": [1, 2]}]}";
	static const struct {
		const char *body, *msg;
	} bad[] = {
	    {"{\"inputs\": [{\"embedding\": [1, 2]}]}", "inputs[0] has no id"},
	    {"{\"inputs\": [{\"id\": \"\", \"embedding\": [1, 2]}]}", "inputs[0].id"},
	    {"{\"inputs\": [{\"id\": \"a\\u0000b\", \"embedding\": [1, 2]}]}", "NUL"},
	    {"{\"inputs\": [{\"id\": \"x\", \"embedding\": [1, 2]}], \"top_k\": 1}",
	     "unknown field \"top_k\""},
	    {"{\"inputs\": [{\"id\": \"x\", \"embedding\": [1, 2]}], \"reassign\": 1}",
	     "reassign must be true or false"},
	};
	struct srv_encode_req req;
	struct srv_api_error e;

	ck_assert_int_eq(
	    srv_assign_req_decode(fast, strlen(fast), SID_TOWER_ITEM, 2, 8, NULL, &req, &e), 0);
	ck_assert_int_eq(req.B, 2);
	ck_assert_int_eq(req.reassign, 1);
	ck_assert_str_eq(req.id_str[0], "sku-1");
	ck_assert_str_eq(req.id_str[1], "42");
	ck_assert(req.x[2] == 0.5f && req.x[3] == -1.0f);
	srv_encode_req_release(&req);
	ck_assert_int_eq(
	    srv_assign_req_decode(slow, strlen(slow), SID_TOWER_ITEM, 2, 8, NULL, &req, &e), 0);
	ck_assert_int_eq(req.reassign, 0);
	ck_assert_str_eq(req.id_str[0], "a\"b\xc3\xa9");
	srv_encode_req_release(&req);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		ck_assert_int_eq(srv_assign_req_decode(bad[i].body, strlen(bad[i].body),
						       SID_TOWER_ITEM, 2, 8, NULL, &req, &e),
				 -1);
		ck_assert_int_eq(e.kind, SRV_ERR_INVALID_ARGUMENT);
		ck_assert_msg(strstr(e.msg, bad[i].msg), "%s: %s", bad[i].body, e.msg);
	}
	/* encode still refuses reassign */
	ck_assert_int_eq(
	    srv_encode_req_decode(fast, strlen(fast), SID_TOWER_ITEM, 2, 8, NULL, &req, &e), -1);
	ck_assert_ptr_nonnull(strstr(e.msg, "unknown field \"reassign\""));
}
END_TEST

START_TEST(test_response)
{
	struct srv_encode_req req;
	struct srv_api_error e;
	struct srv_buf out = SRV_BUF_INIT;
	const char *b =
	    "{\"inputs\": [{\"id\": \"a\\\"b\", \"embedding\": [0, 0]}, {\"embedding\": "
	    "[1, 1]}], \"top_k\": 3, \"return_quantized\": true}";
	int32_t codes[] = {12, 7, 200, 1, 2, 3};
	float dist[] = {0.0123f, 2.5f};
	float quant[] = {0.5f, -1.25f, 1e-7f, 3};
	int32_t alt[] = {12, 7, 201, 9, 9, 9, 1, 2, 4, 0, 0, 0};
	float alt_dist[] = {0.02f, 0.5f, 2.75f, 0};
	int alt_count[] = {2, 1};
	struct srv_encode_res res = {3, 2, codes, dist, quant, 2, alt, alt_dist, alt_count};
	json_t *v, *r0, *r1;
	json_error_t jerr;

	ck_assert(decode(b, 2, 8, &req, &e) == 0);
	srv_encode_res_write(&out, "v\"1", &req, &res);
	v = json_loadb(out.p, out.len, 0, &jerr);
	ck_assert_msg(v != NULL, "%s: %s", jerr.text, out.p);
	ck_assert_str_eq(json_string_value(json_object_get(v, "model_version")), "v\"1");
	r0 = json_array_get(json_object_get(v, "results"), 0);
	r1 = json_array_get(json_object_get(v, "results"), 1);
	ck_assert_str_eq(json_string_value(json_object_get(r0, "id")), "a\"b");
	ck_assert_ptr_null(json_object_get(r1, "id"));
	ck_assert_str_eq(json_string_value(json_object_get(r0, "sid")), "12-7-200");
	ck_assert_str_eq(json_string_value(json_object_get(r1, "sid")), "1-2-3");
	ck_assert_int_eq(json_integer_value(json_array_get(json_object_get(r0, "codes"), 2)), 200);
	ck_assert((float)json_real_value(json_object_get(r0, "distance")) == 0.0123f);
	ck_assert((float)json_number_value(json_object_get(r1, "distance")) == 2.5f);
	ck_assert_int_eq(json_array_size(json_object_get(r0, "alternatives")), 2);
	ck_assert_int_eq(json_array_size(json_object_get(r1, "alternatives")), 1);
	ck_assert_int_eq(
	    json_integer_value(json_array_get(
		json_object_get(json_array_get(json_object_get(r1, "alternatives"), 0), "codes"),
		2)),
	    4);
	ck_assert((float)json_number_value(json_array_get(json_object_get(r0, "quantized"), 1)) ==
		  -1.25f);
	ck_assert((float)json_number_value(json_array_get(json_object_get(r1, "quantized"), 0)) ==
		  1e-7f);
	json_decref(v);
	srv_buf_release(&out);
	srv_encode_req_release(&req);

	/* tokens format; no alternatives or quantized keys unless asked. */
	ck_assert(decode("{\"inputs\": [{\"embedding\": [0, 0]}], \"format\": \"tokens\"}", 2, 8,
			 &req, &e) == 0);
	srv_encode_res_write(&out, "v", &req, &res);
	ck_assert_ptr_nonnull(strstr(out.p, "\"sid\": \"<a_12><b_7><c_200>\""));
	ck_assert_ptr_null(strstr(out.p, "alternatives"));
	ck_assert_ptr_null(strstr(out.p, "quantized"));
	srv_buf_release(&out);
	srv_encode_req_release(&req);
}
END_TEST

/* The codes array and the sid in the response agree with the integers
 * (the sid written here with snprintf), for every level count, both formats,
 * codes of every length. */
START_TEST(test_response_codes_sid)
{
	static const int32_t pick[] = {
	    0,	 1,    9,     10,	 99,	     100, 255,
	    256, 1023, 65535, 123456789, 2147483647, -1,  -2147483647 - 1};
	struct srv_encode_req req;
	struct srv_api_error e;
	int32_t codes[SID_MAX_LEVELS * 2];
	float dist[2] = {0.5f, 0.25f};
	struct srv_encode_res res = {0, 0, codes, dist, NULL, 0, NULL, NULL, NULL};
	uint64_t rng = 88172645463325252ull;

	for (int fmt = 0; fmt < 2; fmt++) {
		ck_assert(decode(fmt ? "{\"inputs\": [{\"embedding\": [0]}, {\"embedding\": [1]}], "
				       "\"format\": \"tokens\"}"
				     : "{\"inputs\": [{\"embedding\": [0]}, {\"embedding\": [1]}]}",
				 1, 8, &req, &e) == 0);
		for (int L = 1; L <= SID_MAX_LEVELS; L++) {
			for (int trial = 0; trial < 20; trial++) {
				struct srv_buf out = SRV_BUF_INIT;
				json_error_t jerr;
				json_t *v;
				for (int k = 0; k < 2 * L; k++) {
					rng ^= rng << 13;
					rng ^= rng >> 7;
					rng ^= rng << 17;
					codes[k] = pick[rng % (sizeof(pick) / sizeof(pick[0]))];
				}
				res.L = L;
				srv_encode_res_write(&out, "v", &req, &res);
				v = json_loadb(out.p, out.len, 0, &jerr);
				ck_assert_msg(v != NULL, "%s: %s", jerr.text, out.p);
				for (int i = 0; i < 2; i++) {
					json_t *r = json_array_get(json_object_get(v, "results"),
								   (size_t)i);
					json_t *c = json_object_get(r, "codes");
					char want[SID_MAX_LEVELS * 20];
					size_t n = 0;
					for (int l = 0; l < L; l++) {
						int cl = (int)codes[i * L + l];
						if (fmt)
							n += (size_t)snprintf(
							    want + n, sizeof(want) - n, "<%c_%d>",
							    'a' + l, cl);
						else
							n += (size_t)snprintf(want + n,
									      sizeof(want) - n,
									      l ? "-%d" : "%d", cl);
					}
					ck_assert_str_eq(
					    json_string_value(json_object_get(r, "sid")), want);
					ck_assert_int_eq(json_array_size(c), L);
					for (int l = 0; l < L; l++)
						ck_assert_int_eq(json_integer_value(
								     json_array_get(c, (size_t)l)),
								 codes[i * L + l]);
				}
				json_decref(v);
				srv_buf_release(&out);
			}
		}
		srv_encode_req_release(&req);
	}
}
END_TEST

START_TEST(test_float_roundtrip)
{
	static const float v[] = {0.1f, 1.0f / 3, 1e-38f, 3.4028235e38f, -0.0f, 123456.789f};
	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		struct srv_buf b = SRV_BUF_INIT;
		srv_buf_float(&b, v[i]);
		ck_assert_msg(strtof(b.p, NULL) == v[i], "%s", b.p);
		srv_buf_release(&b);
	}
}
END_TEST

/* JSON strings carry UTF-8 through and never emit invalid UTF-8: a stray,
 * truncated, overlong or surrogate sequence becomes U+FFFD (fuzz_api found an
 * error body quoting half a character of the request). */
START_TEST(test_json_str_utf8)
{
	static const struct {
		const char *in, *out;
	} cases[] = {
	    {"caf\xc3\xa9 \xe2\x98\x83 \xf0\x9f\x98\x80",
	     "\"caf\xc3\xa9 \xe2\x98\x83 \xf0\x9f\x98\x80\""},
	    {"a\xd3", "\"a\\ufffd\""},				      /* truncated 2-byte */
	    {"\xd3\"", "\"\\ufffd\\\"\""},			      /* lead byte then ASCII */
	    {"\x80x", "\"\\ufffdx\""},				      /* stray continuation */
	    {"\xc0\xaf", "\"\\ufffd\\ufffd\""},			      /* overlong '/' */
	    {"\xed\xa0\x80", "\"\\ufffd\\ufffd\\ufffd\""},	      /* UTF-16 surrogate */
	    {"\xf4\x90\x80\x80", "\"\\ufffd\\ufffd\\ufffd\\ufffd\""}, /* above U+10FFFF */
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct srv_buf b = SRV_BUF_INIT;
		srv_buf_json_str(&b, cases[i].in, strlen(cases[i].in));
		ck_assert_str_eq(b.p, cases[i].out);
		srv_buf_release(&b);
	}
}
END_TEST

/* The error for a body jansson quotes mid-character is still a JSON body. */
START_TEST(test_error_body_quotes_half_a_char)
{
	static const char body[] = "{\"inputs\": [\"\\\xd3\xb4\"]}";
	struct srv_encode_req q;
	struct srv_api_error e;
	json_error_t je;
	size_t len;
	char *eb;
	json_t *j;

	ck_assert_int_eq(
	    srv_encode_req_decode(body, sizeof(body) - 1, SID_TOWER_ITEM, 4, 8, NULL, &q, &e), -1);
	eb = srv_api_error_body(e.kind, e.msg, &len, NULL);
	ck_assert_ptr_nonnull(eb);
	j = json_loadb(eb, len, 0, &je);
	ck_assert_msg(j != NULL, "%s: %s", je.text, eb);
	json_decref(j);
	free(eb);
}
END_TEST

/* "01" at the very end of a body is refused without reading past the body
 * (the fast scanner handed "0" to strtoll, which read on; ASan sees it). */
START_TEST(test_leading_zero_at_end)
{
	static const char text[] = "{\"inputs\": [{\"embedding\": [01";
	size_t n = sizeof(text) - 1;
	char *body = malloc(n); /* exactly the body, no NUL after it */
	struct srv_encode_req q;
	struct srv_api_error e;

	ck_assert_ptr_nonnull(body);
	memcpy(body, text, n);
	ck_assert_int_eq(srv_encode_req_decode(body, n, SID_TOWER_ITEM, 4, 8, NULL, &q, &e), -1);
	ck_assert_int_eq(e.kind, SRV_ERR_INVALID_ARGUMENT);
	free(body);
}
END_TEST

/* ---- what a decode holds of body_memory_bytes ---- */

/* jansson's allocations as the heap holds them (glibc malloc: the usable
 * size and an 8-byte chunk header): the live bytes and their peak. */
static size_t tree_live, tree_peak;

static void *tree_malloc(size_t n)
{
	void *p = malloc(n);
	if (p && (tree_live += malloc_usable_size(p) + 8) > tree_peak)
		tree_peak = tree_live;
	return p;
}

static void tree_free(void *p)
{
	if (p)
		tree_live -= malloc_usable_size(p) + 8;
	free(p);
}

/* A body of @n copies of @item between @head and @tail. */
static char *repeat_body(const char *head, const char *item, size_t n, const char *tail,
			 size_t *len)
{
	struct srv_buf b = SRV_BUF_INIT;

	srv_buf_puts(&b, head);
	for (size_t i = 0; i < n; i++) {
		if (i)
			srv_buf_puts(&b, ",");
		srv_buf_puts(&b, item);
	}
	srv_buf_puts(&b, tail);
	ck_assert(!b.oom);
	return srv_buf_detach(&b, len);
}

/* srv__json_tree_bytes is at least what jansson allocates at its peak for
 * bodies made of each thing it builds (the charge of a body given to
 * jansson must not be short of it), and for a request of numbers it is
 * within 2.5 times of it (not a charge that refuses for nothing). */
START_TEST(test_json_tree_bound)
{
	static const struct {
		const char *head, *item, *tail;
		size_t n;
	} shapes[] = {
	    {"{\"inputs\": [", "{\"id\": \"x\", \"embedding\": [0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0]}",
	     "]}", 4096},
	    {"[", "0", "]", 100000},
	    {"[", "1.5e300", "]", 50000},
	    {"[", "[]", "]", 50000},
	    {"[", "{}", "]", 50000},
	    {"[", "{\"a\": 1}", "]", 50000},
	    {"[", "\"\"", "]", 50000},
	    {"[", "\"x\"", "]", 50000},
	    {"[", "\"\\u00e9\\u00e9\"", "]", 50000},
	    {"[", "[[[0]]]", "]", 20000},
	    {"{", "\"k\": {\"k\": [\"\"]}", "}", 1},
	    {"[\"", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
	     "\"]", 1},
	    {"[", "true", "]", 50000},
	};
	char key[32];
	size_t len, bound;
	char *body;
	json_t *v;

	json_set_alloc_funcs(tree_malloc, tree_free);
	for (size_t i = 0; i < sizeof(shapes) / sizeof(shapes[0]); i++) {
		body =
		    repeat_body(shapes[i].head, shapes[i].item, shapes[i].n, shapes[i].tail, &len);
		tree_live = tree_peak = 0;
		v = json_loadb(body, len, JSON_REJECT_DUPLICATES, NULL);
		ck_assert_msg(v != NULL, "shape %zu", i);
		json_decref(v);
		bound = srv__json_tree_bytes(body, len);
		ck_assert_msg(tree_peak <= bound, "shape %zu (%s): jansson's peak %zu > %zu", i,
			      shapes[i].item, tree_peak, bound);
		if (i == 0) /* 1.9 times, measured */
			ck_assert_msg(bound < 5 * tree_peak / 2, "a request: %zu for a peak of %zu",
				      bound, tree_peak);
		free(body);
	}
	/* a flat object of many members (each key is another) */
	{
		struct srv_buf b = SRV_BUF_INIT;
		srv_buf_puts(&b, "{");
		for (int k = 0; k < 30000; k++) {
			snprintf(key, sizeof(key), "%s\"k%d\": 0", k ? ", " : "", k);
			srv_buf_puts(&b, key);
		}
		srv_buf_puts(&b, "}");
		body = srv_buf_detach(&b, &len);
		tree_live = tree_peak = 0;
		v = json_loadb(body, len, JSON_REJECT_DUPLICATES, NULL);
		ck_assert_ptr_nonnull(v);
		json_decref(v);
		ck_assert_uint_le(tree_peak, srv__json_tree_bytes(body, len));
		free(body);
	}
	json_set_alloc_funcs(malloc, free);
}
END_TEST

/* A decode charges its hold for the decoded form as long as the request
 * lives, and for jansson's tree only while it parses; a charge the budget
 * refuses ends it with a 503, leaving nothing charged, unless the request
 * holds all that is held. */
START_TEST(test_decode_charges)
{
	static const char tail[] = "]}";
	struct srv_budget budget = {0, 1 << 20};
	struct srv_hold other = {&budget, 0}, hold = {&budget, 0};
	struct srv_encode_req req;
	struct srv_api_error e;
	const char *item = "{\"id\": \"x\", \"embedding\": [0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0]}";
	const char *esc = "{\"id\": \"\\u0078\", \"embedding\": [0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0]}";
	size_t len, elen, floats = 1000 * 16 * sizeof(float);
	char *body = repeat_body("{\"inputs\": [", item, 1000, tail, &len);
	char *ebody = repeat_body("{\"inputs\": [", esc, 1000, tail, &elen);

	for (int path = 0; path < 2; path++) { /* the fast scanner, then jansson */
		const char *b = path ? ebody : body;
		size_t n = path ? elen : len;

		ck_assert_int_eq(
		    srv_assign_req_decode(b, n, SID_TOWER_ITEM, 16, 4096, &hold, &req, &e), 0);
		ck_assert_uint_eq(req.B, 1000);
		ck_assert_uint_ge(req.charged, floats);
		ck_assert_uint_lt(req.charged, 2 * floats);
		ck_assert_uint_eq(hold.n, req.charged);
		ck_assert_uint_eq(budget.held, req.charged); /* no tree left charged */
		ck_assert_int_eq(srv_encode_req_charge(&req, 1000, &e), 0);
		ck_assert_uint_eq(budget.held, hold.n);
		srv_encode_req_release(&req);
		ck_assert_uint_eq(hold.n, 0);
		ck_assert_uint_eq(budget.held, 0);

		/* with most of the budget held by another request: refused */
		ck_assert_int_eq(srv_hold_take(&other, budget.max - floats / 2), 0);
		ck_assert_int_eq(
		    srv_assign_req_decode(b, n, SID_TOWER_ITEM, 16, 4096, &hold, &req, &e), -1);
		ck_assert_int_eq(e.kind, SRV_ERR_UNAVAILABLE);
		ck_assert_msg(strstr(e.msg, "the decoded request (") == e.msg &&
				  strstr(e.msg, " bytes) would take the request bodies, decoded "
						"requests and answers held past body_memory_bytes "
						"(1048576); retry later"),
			      "%s", e.msg);
		ck_assert_uint_eq(hold.n, 0);
		ck_assert_uint_eq(budget.held, other.n);
		/* alone, a request past the bound still decodes */
		srv_hold_give(&other, other.n);
		budget.max = 64;
		ck_assert_int_eq(
		    srv_assign_req_decode(b, n, SID_TOWER_ITEM, 16, 4096, &hold, &req, &e), 0);
		ck_assert_int_eq(srv_hold_take(&other, 1), -1);
		srv_encode_req_release(&req);
		ck_assert_uint_eq(budget.held, 0);
		budget.max = 1 << 20;
	}
	free(body);
	free(ebody);
}
END_TEST

/* A delete's ids: strings as sent, integers as their decimal text, charged
 * to the hold while the request lives (jansson's tree only while it
 * parses), refused with a 503 and nothing charged when the budget is held
 * by others; a body with far more values than max_inputs ids is a 413
 * before jansson sees it. */
START_TEST(test_delete_decode)
{
	struct srv_budget budget = {0, 1 << 20};
	struct srv_hold other = {&budget, 0}, hold = {&budget, 0};
	struct srv_encode_req req;
	struct srv_api_error e;
	size_t len, ids;
	int i;
	char *body = repeat_body("{\"ids\": [17, ", "\"item-x\"", 999, "]}", &len);

	ck_assert_int_eq(srv_delete_req_decode(body, len, SID_TOWER_USER, 1000, &hold, &req, &e),
			 0);
	ck_assert_uint_eq(req.B, 1000);
	ck_assert_int_eq(req.tower, SID_TOWER_USER);
	ck_assert_str_eq(req.id_str[0], "17");
	ck_assert_str_eq(req.id_str[999], "item-x");
	ids = 1000 * sizeof(char *) + 21 + 999 * 7; /* an integer: room for 20 digits */
	ck_assert_uint_eq(req.charged, ids);
	ck_assert_uint_eq(budget.held, ids); /* the tree given back */
	srv_encode_req_release(&req);
	ck_assert_uint_eq(budget.held, 0);

	ck_assert_int_eq(srv_hold_take(&other, budget.max - 1000), 0);
	ck_assert_int_eq(srv_delete_req_decode(body, len, SID_TOWER_ITEM, 1000, &hold, &req, &e),
			 -1);
	ck_assert_int_eq(e.kind, SRV_ERR_UNAVAILABLE);
	ck_assert_uint_eq(budget.held, other.n);
	srv_hold_give(&other, other.n);

	ck_assert_int_eq(srv_delete_req_decode(body, len, SID_TOWER_ITEM, 999, NULL, &req, &e), -1);
	ck_assert_int_eq(e.kind, SRV_ERR_TOO_LARGE);
	ck_assert_str_eq(e.msg, "1000 ids; at most 999 are allowed per request");
	/* far too many ids for the parser: still 413, counted without it */
	ck_assert_int_eq(srv_delete_req_decode(body, len, SID_TOWER_ITEM, 10, NULL, &req, &e), -1);
	ck_assert_int_eq(e.kind, SRV_ERR_TOO_LARGE);
	ck_assert_str_eq(e.msg, "1000 ids; at most 10 are allowed per request");
	free(body);

	/* a few ids and a flood of brackets and commas elsewhere: not a list
	 * too long, so 400, named by its brackets */
	body = malloc(4096);
	ck_assert_ptr_nonnull(body);
	len = (size_t)sprintf(body, "{\"ids\": [\"a\"], \"x\": [");
	for (i = 0; i < 100; i++)
		len += (size_t)sprintf(body + len, "%s0", i ? "," : "");
	len += (size_t)sprintf(body + len, "]}");
	ck_assert_int_eq(srv_delete_req_decode(body, len, SID_TOWER_ITEM, 10, NULL, &req, &e), -1);
	ck_assert_int_eq(e.kind, SRV_ERR_INVALID_ARGUMENT);
	ck_assert_str_eq(e.msg, "the body has 103 JSON brackets and commas; a request of at "
				"most 10 ids has no more than 74");
	/* ids nested deep inside the list count as one */
	len = (size_t)sprintf(body, "{\"ids\": [");
	for (i = 0; i < 100; i++)
		body[len++] = '[';
	for (i = 0; i < 100; i++)
		body[len++] = ']';
	len += (size_t)sprintf(body + len, "]}");
	ck_assert_int_eq(srv_delete_req_decode(body, len, SID_TOWER_ITEM, 10, NULL, &req, &e), -1);
	ck_assert_int_eq(e.kind, SRV_ERR_INVALID_ARGUMENT);
	ck_assert_str_eq(e.msg, "the body has 102 JSON brackets and commas; a request of at "
				"most 10 ids has no more than 74");
	free(body);
}
END_TEST

static void add_tests(TCase *tc)
{
	tcase_add_test(tc, test_delete_decode);
	tcase_add_test(tc, test_error_mapping);
	tcase_add_test(tc, test_error_body);
	tcase_add_test(tc, test_base64);
	tcase_add_test(tc, test_base64_paths_valid);
	tcase_add_test(tc, test_base64_paths_invalid);
	tcase_add_test(tc, test_base64_first_use_threads);
	tcase_add_test(tc, test_content_type);
	tcase_add_test(tc, test_decode_ok);
	tcase_add_test(tc, test_decode_ids_jansson);
	tcase_add_test(tc, test_decode_errors);
	tcase_add_test(tc, test_decode_out_of_memory_is_503);
	tcase_add_test(tc, test_decode_value_flood);
	tcase_add_test(tc, test_long_input_small_max_inputs);
	tcase_add_test(tc, test_max_inputs_exactly);
	tcase_add_test(tc, test_json_inputs);
	tcase_add_test(tc, test_row_error_without_jansson);
	tcase_add_test(tc, test_json_separators);
	tcase_add_test(tc, test_fast_path_agrees);
	tcase_add_test(tc, test_fast_scanner_paths);
	tcase_add_test(tc, test_fast_b64_lengths);
	tcase_add_test(tc, test_fast_numbers);
	tcase_add_test(tc, test_fast_number_edges);
	tcase_add_test(tc, test_fast_number_lengths);
	tcase_add_test(tc, test_assign_decode);
	tcase_add_test(tc, test_response);
	tcase_add_test(tc, test_response_codes_sid);
	tcase_add_test(tc, test_float_roundtrip);
	tcase_add_test(tc, test_json_str_utf8);
	tcase_add_test(tc, test_error_body_quotes_half_a_char);
	tcase_add_test(tc, test_leading_zero_at_end);
	tcase_add_test(tc, test_json_tree_bound);
	tcase_add_test(tc, test_decode_charges);
}

int main(void)
{
	return srv_check_run("api", add_tests);
}
