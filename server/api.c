/*
 * api.c - API v1 request decoding and response encoding (see api.h and
 * proto/api.md).  Requests are parsed with jansson and validated completely
 * before a job is formed, so a bad request is answered on its own and can
 * never fail the batch it would have joined.  Responses are written by hand
 * into a srv_buf: they are flat and this is on every request's path.
 * Base64 decoding and the fast scanner's finite check of a base64 row have
 * AVX2 paths, picked at run time (__builtin_cpu_supports, as core/mlp.c);
 * other CPUs run the portable code, which check_api compares them with.
 */
#include "api.h"

#include <errno.h>
#include <float.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define SRV_HAVE_X86 1
#endif

#include "registry.h"

int srv_err_status(enum srv_err kind, const char **code)
{
	static const struct {
		int status;
		const char *code;
	} map[SRV_ERR_COUNT] = {
	    [SRV_ERR_INVALID_ARGUMENT] = {400, "invalid_argument"},
	    [SRV_ERR_FORBIDDEN] = {403, "permission_denied"},
	    [SRV_ERR_NOT_FOUND] = {404, "not_found"},
	    [SRV_ERR_METHOD] = {405, "method_not_allowed"},
	    [SRV_ERR_TOO_LARGE] = {413, "payload_too_large"},
	    [SRV_ERR_MEDIA_TYPE] = {415, "unsupported_media_type"},
	    [SRV_ERR_LEVELS_MISMATCH] = {409, "levels_mismatch"},
	    [SRV_ERR_RELOAD_FAILED] = {422, "reload_failed"},
	    [SRV_ERR_INTERNAL] = {500, "internal"},
	    [SRV_ERR_UNIMPLEMENTED] = {501, "unimplemented"},
	    [SRV_ERR_UNAVAILABLE] = {503, "unavailable"},
	};
	if ((unsigned)kind >= SRV_ERR_COUNT)
		kind = SRV_ERR_INTERNAL;
	if (code)
		*code = map[kind].code;
	return map[kind].status;
}

char *srv_api_error_body(enum srv_err kind, const char *msg, size_t *len, int *status)
{
	struct srv_buf b = SRV_BUF_INIT;
	const char *code;
	int st = srv_err_status(kind, &code);

	if (status)
		*status = st;
	srv_buf_printf(&b, "{\"error\": {\"code\": \"%s\", \"message\": ", code);
	srv_buf_json_str(&b, msg, strlen(msg));
	srv_buf_puts(&b, "}}\n");
	return srv_buf_detach(&b, len);
}

int srv_api_content_type_ok(const char *v)
{
	static const char want[] = "application/json";
	if (!v)
		return 0;
	while (*v == ' ' || *v == '\t')
		v++;
	if (strncasecmp(v, want, sizeof(want) - 1) != 0)
		return 0;
	v += sizeof(want) - 1;
	while (*v == ' ' || *v == '\t')
		v++;
	return *v == '\0' || *v == ';';
}

/* Decoding table: 6-bit values, 0x80 for bytes outside the alphabet; filled
 * once (pthread_once: two MHD threads decoding their first base64 row at once
 * both wrote it while a third could read it, a data race ThreadSanitizer
 * reported even though the bytes were the same). */
static uint8_t b64_tab[256];
static pthread_once_t b64_once = PTHREAD_ONCE_INIT;

static void b64_fill(void)
{
	static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

	memset(b64_tab, 0x80, sizeof(b64_tab));
	for (int k = 0; k < 64; k++)
		b64_tab[(unsigned char)a[k]] = (uint8_t)k;
}

static const uint8_t *b64_table(void)
{
	pthread_once(&b64_once, b64_fill);
	return b64_tab;
}

/*
 * AVX2: 32 characters per step.  Each byte's high and low nibbles index two
 * small tables (vpshufb) whose AND is non-zero exactly for a byte outside
 * the alphabet; a third, indexed by the high nibble (moved down by one for
 * '/', which shares 0x2_ with '+'), gives what to add to turn the character
 * into its 6-bit value.  Two multiply-adds pack four values into 24 bits per
 * dword and a shuffle lines up 24 bytes, stored exactly (no write past them).
 */
#ifdef SRV_HAVE_X86
#define AVX2 __attribute__((target("avx2")))

static inline __attribute__((always_inline)) AVX2 __m256i b64_classify(__m256i c, __m256i *val)
{
	/* Which nibble pairs are invalid: bit 0 for a high nibble 0, 1 or 8..f
	 * (nothing valid), bit 1 for 2 ('+' 0x2b and '/' 0x2f only), bit 2 for
	 * 3 (digits 0x30..0x39), bit 3 for 4 and 6 (0x41.., 0x61..), bit 4 for
	 * 5 and 7 (..0x5a, ..0x7a). */
	const __m256i lut_hi = _mm256_setr_epi8(1, 1, 2, 4, 8, 16, 8, 16, 1, 1, 1, 1, 1, 1, 1, 1, 1,
						1, 2, 4, 8, 16, 8, 16, 1, 1, 1, 1, 1, 1, 1, 1);
	const __m256i lut_lo = _mm256_setr_epi8(
	    1 | 2 | 8, 1 | 2, 1 | 2, 1 | 2, 1 | 2, 1 | 2, 1 | 2, 1 | 2, 1 | 2, 1 | 2, 1 | 2 | 4,
	    1 | 4 | 16, 1 | 2 | 4 | 16, 1 | 2 | 4 | 16, 1 | 2 | 4 | 16, 1 | 4 | 16, 1 | 2 | 8,
	    1 | 2, 1 | 2, 1 | 2, 1 | 2, 1 | 2, 1 | 2, 1 | 2, 1 | 2, 1 | 2, 1 | 2 | 4, 1 | 4 | 16,
	    1 | 2 | 4 | 16, 1 | 2 | 4 | 16, 1 | 2 | 4 | 16, 1 | 4 | 16);
	/* Added to the character, by high nibble: index 1 is '/' (63 - 0x2f),
	 * 2 is '+' (62 - 0x2b), 3 digits (52 - 0x30), 4 and 5 upper case
	 * (-0x41), 6 and 7 lower case (26 - 0x61). */
	const __m256i lut_add =
	    _mm256_setr_epi8(0, 16, 19, 4, -65, -65, -71, -71, 0, 0, 0, 0, 0, 0, 0, 0, 0, 16, 19, 4,
			     -65, -65, -71, -71, 0, 0, 0, 0, 0, 0, 0, 0);
	const __m256i nib = _mm256_set1_epi8(0x0f);
	__m256i hi = _mm256_and_si256(_mm256_srli_epi32(c, 4), nib);
	__m256i lo = _mm256_and_si256(c, nib);
	__m256i bad =
	    _mm256_and_si256(_mm256_shuffle_epi8(lut_lo, lo), _mm256_shuffle_epi8(lut_hi, hi));
	__m256i slash = _mm256_cmpeq_epi8(c, _mm256_set1_epi8('/'));
	*val = _mm256_add_epi8(c, _mm256_shuffle_epi8(lut_add, _mm256_add_epi8(hi, slash)));
	return bad;
}

/* Decode the first @full characters, 32 at a time, into @out; returns how
 * many were done (a multiple of 32) and sets bit 7 of *@any on a character
 * outside the alphabet. */
static AVX2 size_t b64_decode_avx2(const unsigned char *u, size_t full, uint8_t *out, uint8_t *any)
{
	const __m256i pair = _mm256_set1_epi32(0x01400140); /* a << 6 | b */
	const __m256i quad = _mm256_set1_epi32(0x00011000); /* ab << 12 | cd */
	const __m256i order =
	    _mm256_setr_epi8(2, 1, 0, 6, 5, 4, 10, 9, 8, 14, 13, 12, -1, -1, -1, -1, 2, 1, 0, 6, 5,
			     4, 10, 9, 8, 14, 13, 12, -1, -1, -1, -1);
	const __m256i pack = _mm256_setr_epi32(0, 1, 2, 4, 5, 6, 3, 7);
	__m256i bad = _mm256_setzero_si256();
	size_t i;

	for (i = 0; i + 32 <= full; i += 32) {
		__m256i v, c = _mm256_loadu_si256((const __m256i *)(u + i));
		bad = _mm256_or_si256(bad, b64_classify(c, &v));
		v = _mm256_maddubs_epi16(v, pair);
		v = _mm256_madd_epi16(v, quad);
		v = _mm256_shuffle_epi8(v, order);
		v = _mm256_permutevar8x32_epi32(v, pack);
		_mm_storeu_si128((__m128i *)(out + i / 4 * 3), _mm256_castsi256_si128(v));
		_mm_storel_epi64((__m128i *)(out + i / 4 * 3 + 16), _mm256_extracti128_si256(v, 1));
	}
	if (!_mm256_testz_si256(bad, bad))
		*any |= 0x80;
	return i;
}

/* The same validation without output (for an input too long to decode). */
static AVX2 size_t b64_check_avx2(const unsigned char *u, size_t n, uint8_t *any)
{
	__m256i bad = _mm256_setzero_si256(), v;
	size_t i;

	for (i = 0; i + 32 <= n; i += 32)
		bad = _mm256_or_si256(
		    bad, b64_classify(_mm256_loadu_si256((const __m256i *)(u + i)), &v));
	if (!_mm256_testz_si256(bad, bad))
		*any |= 0x80;
	return i;
}
#endif

int srv__api_have_avx2(void)
{
#ifdef SRV_HAVE_X86
	return __builtin_cpu_supports("avx2");
#else
	return 0;
#endif
}

static int force_portable;

void srv__api_force_portable(int on)
{
	__atomic_store_n(&force_portable, on, __ATOMIC_RELAXED);
}

/* The AVX2 paths: when the CPU has it and no test said otherwise. */
static int use_avx2(void)
{
	return !__atomic_load_n(&force_portable, __ATOMIC_RELAXED) && srv__api_have_avx2();
}

/* The decoder; @simd: use the AVX2 loops (the CPU must have AVX2). */
static long b64_decode(const char *s, size_t n, uint8_t *out, size_t cap, size_t *bad, int simd)
{
	const uint8_t *tab = b64_table();
	const unsigned char *u = (const unsigned char *)s;
	size_t i = 0, pad = 0, o = 0, olen, full;
	uint8_t any = 0;

	/* Trailing padding: at most two '=', and only where the length needs it. */
	while (n > 0 && s[n - 1] == '=' && pad < 2) {
		n--;
		pad++;
	}
	if ((pad && (n + pad) % 4 != 0) || n % 4 == 1) {
		/* a byte outside the alphabet first (one slipped in is what
		 * usually breaks the length), else the length itself */
		while (i < n && !(tab[u[i]] & 0x80))
			i++;
		*bad = i;
		return -1;
	}
	olen = n / 4 * 3 + (n % 4 ? n % 4 - 1 : 0);
	if (olen > cap) {
#ifdef SRV_HAVE_X86
		if (simd)
			i = b64_check_avx2(u, n, &any);
#endif
		for (; i < n; i++)
			any |= tab[u[i]];
		if (!(any & 0x80))
			return -2;
	} else {
		/* Decode optimistically; a character outside the alphabet sets
		 * bit 7 of @any and is located afterwards. */
		full = n / 4 * 4;
#ifdef SRV_HAVE_X86
		if (simd) {
			i = b64_decode_avx2(u, full, out, &any);
			o = i / 4 * 3;
		}
#endif
		for (; i < full; i += 4) {
			uint8_t a = tab[u[i]], b = tab[u[i + 1]], c = tab[u[i + 2]],
				d = tab[u[i + 3]];
			uint32_t v = (uint32_t)a << 18 | (uint32_t)b << 12 | (uint32_t)c << 6 | d;
			any |= a | b | c | d;
			out[o] = (uint8_t)(v >> 16);
			out[o + 1] = (uint8_t)(v >> 8);
			out[o + 2] = (uint8_t)v;
			o += 3;
		}
		for (i = full; i < n; i++)
			any |= tab[u[i]];
	}
	if (any & 0x80) {
		for (i = 0; !(tab[u[i]] & 0x80); i++)
			;
		*bad = i;
		return -1;
	}
	full = n / 4 * 4;
	if (n % 4) {
		uint32_t v = (uint32_t)tab[u[full]] << 18 | (uint32_t)tab[u[full + 1]] << 12;
		if (n % 4 == 3)
			v |= (uint32_t)tab[u[full + 2]] << 6;
		out[o++] = (uint8_t)(v >> 16);
		if (n % 4 == 3)
			out[o++] = (uint8_t)(v >> 8);
		/* Leftover bits must be zero (canonical encoding). */
		if (v & (n % 4 == 3 ? 0xffu : 0xffffu)) {
			*bad = n - 1;
			return -1;
		}
	}
	return (long)o;
}

long srv_base64_decode(const char *s, size_t n, uint8_t *out, size_t cap, size_t *bad)
{
	return b64_decode(s, n, out, cap, bad, use_avx2());
}

long srv__base64_decode_scalar(const char *s, size_t n, uint8_t *out, size_t cap, size_t *bad)
{
	return b64_decode(s, n, out, cap, bad, 0);
}

long srv__base64_decode_avx2(const char *s, size_t n, uint8_t *out, size_t cap, size_t *bad)
{
	return b64_decode(s, n, out, cap, bad, srv__api_have_avx2());
}

static int fail(struct srv_api_error *e, enum srv_err kind, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail(struct srv_api_error *e, enum srv_err kind, const char *fmt, ...)
{
	va_list ap;
	e->kind = kind;
	va_start(ap, fmt);
	vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
	va_end(ap);
	return -1;
}

/* An empty request on @tower (@D wide) whose memory @hold counts. */
static void req_init(struct srv_encode_req *req, enum sid_tower_kind tower, int D,
		     struct srv_hold *hold)
{
	memset(req, 0, sizeof(*req));
	req->tower = tower;
	req->D = D;
	req->top_k = 1;
	req->format = SID_FORMAT_DASH;
	req->hold = hold;
}

/* Charge @n more bytes of @req to its hold: 0, or -1 with @e a 503. */
static int req_take(struct srv_encode_req *req, size_t n, struct srv_api_error *e)
{
	if (srv_hold_take(req->hold, n))
		return fail(e, SRV_ERR_UNAVAILABLE, SRV_MSG_BUDGET, "the decoded request",
			    req->charged + n, req->hold->b->max);
	req->charged += n;
	return 0;
}

static void req_give(struct srv_encode_req *req, size_t n)
{
	srv_hold_give(req->hold, n);
	req->charged -= n;
}

int srv_encode_req_charge(struct srv_encode_req *req, size_t n, struct srv_api_error *e)
{
	return req_take(req, n, e);
}

static const char *json_kind(const json_t *v)
{
	switch (json_typeof(v)) {
	case JSON_OBJECT:
		return "an object";
	case JSON_ARRAY:
		return "an array";
	case JSON_STRING:
		return "a string";
	case JSON_INTEGER:
	case JSON_REAL:
		return "a number";
	case JSON_TRUE:
	case JSON_FALSE:
		return "a boolean";
	case JSON_NULL:
		return "null";
	}
	return "?";
}

/* An id's kind where "a string or an integer" is wanted: 1.5 or 1e3 "not a
 * number" read as nonsense, an integer being one. */
static const char *id_kind(const json_t *v)
{
	return json_is_real(v) ? "a number with a fraction or an exponent" : json_kind(v);
}

/* The error of an embedding array of @n values where the tower takes @D. */
static int width_fail(struct srv_api_error *e, size_t i, size_t n, const char *tname, int D)
{
	return fail(e, SRV_ERR_INVALID_ARGUMENT,
		    "inputs[%zu].embedding has %zu values; the %s tower expects %d", i, n, tname,
		    D);
}

static int decode_embedding(const json_t *arr, size_t i, const char *tname, int D, float *row,
			    struct srv_api_error *e)
{
	size_t n = json_array_size(arr), j;

	if (n != (size_t)D)
		return width_fail(e, i, n, tname, D);
	for (j = 0; j < n; j++) {
		const json_t *v = json_array_get(arr, j);
		double d;
		if (json_is_real(v))
			d = json_real_value(v);
		else if (json_is_integer(v))
			d = (double)json_integer_value(v);
		else
			return fail(e, SRV_ERR_INVALID_ARGUMENT,
				    "inputs[%zu].embedding[%zu] is %s, not a number", i, j,
				    json_kind(v));
		row[j] = (float)d;
		if (!isfinite(row[j]))
			return fail(e, SRV_ERR_INVALID_ARGUMENT,
				    "inputs[%zu].embedding[%zu] = %.9g is not finite as float32", i,
				    j, d);
	}
	return 0;
}

/* The base64 text @s of @n bytes (a JSON string's value) into @row. */
static int decode_b64(const char *s, size_t n, size_t i, const char *tname, int D, float *row,
		      struct srv_api_error *e)
{
	size_t bad = 0, want = (size_t)D * 4;
	char shown[SID_BYTE_SHOWN_MAX];
	uint8_t *bytes;
	long got;

	/* Decode into the row itself (D*4 bytes); one spare float catches "too long". */
	bytes = malloc(want + 4);
	if (!bytes)
		return fail(e, SRV_ERR_UNAVAILABLE, "out of memory decoding inputs[%zu]", i);
	got = srv_base64_decode(s, n, bytes, want + 4, &bad);
	if (got == -1) {
		free(bytes);
		if (bad >= n)
			return fail(e, SRV_ERR_INVALID_ARGUMENT,
				    "inputs[%zu].embedding_b64 is not valid base64 (length %zu)", i,
				    n);
		/* counted from 1, as lines and columns are, and shown */
		return fail(e, SRV_ERR_INVALID_ARGUMENT,
			    "inputs[%zu].embedding_b64 is not valid base64 (character %zu, %s)", i,
			    bad + 1, sid_byte_shown((unsigned char)s[bad], shown));
	}
	if (got != (long)want) {
		size_t m = n, real;
		while (m > 0 && s[m - 1] == '=' && n - m < 2)
			m--;
		real = got < 0 ? m / 4 * 3 + (m % 4 ? m % 4 - 1 : 0) : (size_t)got;
		free(bytes);
		return fail(e, SRV_ERR_INVALID_ARGUMENT,
			    "inputs[%zu].embedding_b64 decodes to %zu bytes; the %s tower expects "
			    "%d float32 values (%zu bytes)",
			    i, real, tname, D, want);
	}
	for (int j = 0; j < D; j++) {
		const uint8_t *p = bytes + 4 * j;
		uint32_t u = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
			     (uint32_t)p[3] << 24;
		memcpy(&row[j], &u, 4);
		if (!isfinite(row[j])) {
			free(bytes);
			return fail(
			    e, SRV_ERR_INVALID_ARGUMENT,
			    "inputs[%zu].embedding_b64 holds a non-finite float32 at index %d", i,
			    j);
		}
	}
	free(bytes);
	return 0;
}

/*
 * jansson's allocations go through json_malloc, which notes a failure for
 * the thread: jansson itself tells an allocation that failed by no error
 * (line -1) or by a syntax error where a string's buffer could not grow.
 */
void *(*srv__json_malloc)(size_t) = malloc;
static __thread int json_alloc_failed;
static pthread_once_t json_alloc_once = PTHREAD_ONCE_INIT;

static void *json_malloc(size_t n)
{
	void *p = srv__json_malloc(n);
	if (!p)
		json_alloc_failed = 1;
	return p;
}

static void json_alloc_install(void)
{
	json_set_alloc_funcs(json_malloc, free);
}

/* @body as a JSON object (jansson), or NULL with @e a 400 naming what is
 * wrong and where (a 503 when memory ran out).  A UTF-8 byte order mark
 * before it is passed over (RFC 8259 8.1 lets a parser ignore one): Windows
 * tools write UTF-8 files with one (PowerShell 5.1's Out-File -Encoding
 * utf8, Notepad before 2019), and a body sent from such a file was a 400
 * "'[' or '{' expected near" an invisible character. */
static json_t *parse_object(const char *body, size_t len, struct srv_api_error *e)
{
	json_error_t jerr;
	json_t *root;

	if (len >= 3 && !memcmp(body, "\xef\xbb\xbf", 3)) {
		body += 3;
		len -= 3;
	}
	pthread_once(&json_alloc_once, json_alloc_install);
	json_alloc_failed = 0;
	root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);

	if (!root && !strncmp(jerr.text, "too big ", 8)) { /* "too big [negative ]integer" */
		/* valid JSON, past jansson's json_int_t: an unsigned 64-bit id
		 * hash is the usual one, and a string carries it */
		fail(e, SRV_ERR_INVALID_ARGUMENT,
		     "an integer beyond a signed 64-bit one at line %d, column %d (%s): integers "
		     "are "
		     "-2^63 to 2^63 - 1; send a larger id as a string, a larger number "
		     "with an exponent",
		     jerr.line, jerr.column, jerr.text);
		return NULL;
	}
	if (!root && strstr(jerr.text, "JSON_ALLOW_NUL")) { /* jansson names its flag */
		fail(e, SRV_ERR_INVALID_ARGUMENT,
		     "a string ending at line %d, column %d holds \\u0000 (NUL), which no "
		     "id or field may hold",
		     jerr.line, jerr.column);
		return NULL;
	}
	if (!root && strstr(jerr.text, "real number overflow")) {
		/* valid JSON (1e400), past a double: no embedding value can be */
		fail(e, SRV_ERR_INVALID_ARGUMENT,
		     "a number beyond the range of a double at line %d, column %d (%s): an "
		     "embedding value must be finite as float32",
		     jerr.line, jerr.column, jerr.text);
		return NULL;
	}
	if (!root && json_alloc_failed) {
		/* the body may be fine: it was answered 400 "malformed JSON at
		 * line -1" (or a syntax error where a string's allocation
		 * failed), which no client retries */
		fail(e, SRV_ERR_UNAVAILABLE, "out of memory parsing the body; retry later");
		return NULL;
	}
	if (!root) {
		fail(e, SRV_ERR_INVALID_ARGUMENT, "malformed JSON at line %d, column %d: %s",
		     jerr.line, jerr.column, jerr.text);
		return NULL;
	}
	if (!json_is_object(root)) {
		fail(e, SRV_ERR_INVALID_ARGUMENT, "the body must be a JSON object, not %s",
		     json_kind(root));
		json_decref(root);
		return NULL;
	}
	return root;
}

/* @assign: the assign request's fields (inputs with a required id,
 * reassign) instead of encode's (top_k, return_quantized, format).  @tree:
 * what to charge to @hold while jansson's tree is held (0: nothing). */
static int decode_jansson(const char *body, size_t len, enum sid_tower_kind tower, int D,
			  int max_inputs, int assign, struct srv_hold *hold, size_t tree,
			  struct srv_encode_req *req, struct srv_api_error *e)
{
	const char *tname = sid_tower_name(tower), *key;
	struct srv_buf ids = SRV_BUF_INIT;
	json_t *root = NULL, *inputs = NULL, *v;
	size_t B, i;
	int rc = -1;

	req_init(req, tower, D, hold);
	if (req_take(req, tree, e))
		return -1;
	if (!(root = parse_object(body, len, e)))
		goto fail;
	json_object_foreach(root, key, v)
	{
		if (!strcmp(key, "inputs")) {
			inputs = v;
		} else if (assign && !strcmp(key, "reassign")) {
			if (!json_is_boolean(v)) {
				fail(e, SRV_ERR_INVALID_ARGUMENT, "reassign must be true or false");
				goto fail;
			}
			req->reassign = json_is_true(v);
		} else if (assign) {
			fail(e, SRV_ERR_INVALID_ARGUMENT,
			     "unknown field \"%.100s\" (expected inputs, reassign)", key);
			goto fail;
		} else if (!strcmp(key, "top_k")) {
			json_int_t k = json_integer_value(v);
			if (!json_is_integer(v) || k < 1 || k > SID_TOPK_MAX) {
				fail(e, SRV_ERR_INVALID_ARGUMENT,
				     "top_k must be an integer from 1 to %d", SID_TOPK_MAX);
				goto fail;
			}
			req->top_k = (int)k;
		} else if (!strcmp(key, "return_quantized")) {
			if (!json_is_boolean(v)) {
				fail(e, SRV_ERR_INVALID_ARGUMENT,
				     "return_quantized must be true or false");
				goto fail;
			}
			req->quantized = json_is_true(v);
		} else if (!strcmp(key, "format")) {
			const char *f = json_string_value(v);
			if (f && !strcmp(f, "dash")) {
				req->format = SID_FORMAT_DASH;
			} else if (f && !strcmp(f, "tokens")) {
				req->format = SID_FORMAT_TOKENS;
			} else {
				fail(e, SRV_ERR_INVALID_ARGUMENT,
				     "format must be \"dash\" or \"tokens\"");
				goto fail;
			}
		} else {
			fail(e, SRV_ERR_INVALID_ARGUMENT,
			     "unknown field \"%.100s\" (expected inputs, top_k, return_quantized, "
			     "format)",
			     key);
			goto fail;
		}
	}
	if (!inputs) {
		fail(e, SRV_ERR_INVALID_ARGUMENT, "missing field \"inputs\"");
		goto fail;
	}
	if (!json_is_array(inputs)) {
		fail(e, SRV_ERR_INVALID_ARGUMENT, "inputs must be an array, not %s",
		     json_kind(inputs));
		goto fail;
	}
	B = json_array_size(inputs);
	if (B == 0) {
		fail(e, SRV_ERR_INVALID_ARGUMENT, "inputs is empty");
		goto fail;
	}
	if (B > (size_t)max_inputs) {
		fail(e, SRV_ERR_TOO_LARGE, "%zu inputs; at most %d are allowed per request", B,
		     max_inputs);
		goto fail;
	}
	if (D <= 0 || B > ((size_t)-1 / sizeof(float)) / (size_t)D) {
		fail(e, SRV_ERR_TOO_LARGE, "%zu inputs of %d floats is too large", B, D);
		goto fail;
	}
	req->B = B;
	if (req_take(req, B * ((size_t)D * sizeof(float) + sizeof(size_t) + sizeof(uint32_t)), e))
		goto fail;
	req->x = malloc(B * (size_t)D * sizeof(float));
	req->id_off = calloc(B, sizeof(*req->id_off));
	req->id_len = calloc(B, sizeof(*req->id_len));
	if (!req->x || !req->id_off || !req->id_len) {
		fail(e, SRV_ERR_UNAVAILABLE, "out of memory for %zu inputs", B);
		goto fail;
	}
	json_array_foreach(inputs, i, v)
	{
		json_t *emb = NULL, *b64 = NULL, *id = NULL, *f;
		float *row = req->x + i * (size_t)D;

		if (!json_is_object(v)) {
			fail(e, SRV_ERR_INVALID_ARGUMENT, "inputs[%zu] must be an object, not %s",
			     i, json_kind(v));
			goto fail;
		}
		json_object_foreach(v, key, f)
		{
			if (!strcmp(key, "embedding"))
				emb = f;
			else if (!strcmp(key, "embedding_b64"))
				b64 = f;
			else if (!strcmp(key, "id"))
				id = f;
			else {
				fail(e, SRV_ERR_INVALID_ARGUMENT,
				     "inputs[%zu]: unknown field \"%.100s\" (expected id, "
				     "embedding, embedding_b64)",
				     i, key);
				goto fail;
			}
		}
		if (emb && b64) {
			fail(e, SRV_ERR_INVALID_ARGUMENT,
			     "inputs[%zu] has both embedding and embedding_b64; give one", i);
			goto fail;
		}
		if (!emb && !b64) {
			fail(e, SRV_ERR_INVALID_ARGUMENT,
			     "inputs[%zu] has neither embedding nor embedding_b64", i);
			goto fail;
		}
		if (assign && !id) {
			fail(e, SRV_ERR_INVALID_ARGUMENT,
			     "inputs[%zu] has no id (assign needs one per input)", i);
			goto fail;
		}
		if (emb && !json_is_array(emb)) {
			fail(e, SRV_ERR_INVALID_ARGUMENT,
			     "inputs[%zu].embedding must be an array of numbers, not %s", i,
			     json_kind(emb));
			goto fail;
		}
		if (b64 && !json_is_string(b64)) {
			fail(e, SRV_ERR_INVALID_ARGUMENT,
			     "inputs[%zu].embedding_b64 must be a string, not %s", i,
			     json_kind(b64));
			goto fail;
		}
		if (emb ? decode_embedding(emb, i, tname, D, row, e)
			: decode_b64(json_string_value(b64), json_string_length(b64), i, tname, D,
				     row, e))
			goto fail;
		if (id) {
			size_t before = ids.len;
			if (json_is_string(id)) {
				srv_buf_json_str(&ids, json_string_value(id),
						 json_string_length(id));
			} else if (json_is_integer(id)) {
				srv_buf_printf(&ids, "%" JSON_INTEGER_FORMAT,
					       json_integer_value(id));
			} else {
				fail(e, SRV_ERR_INVALID_ARGUMENT,
				     "inputs[%zu].id must be a string or an integer, not %s", i,
				     id_kind(id));
				goto fail;
			}
			req->id_off[i] = before;
			req->id_len[i] = (uint32_t)(ids.len - before);
		}
	}
	if (ids.oom) {
		fail(e, SRV_ERR_UNAVAILABLE, "out of memory for ids");
		goto fail;
	}
	if (req_take(req, ids.cap, e))
		goto fail;
	req->ids = ids.p;
	ids.p = NULL;
	rc = 0;
fail:
	srv_buf_release(&ids);
	json_decref(root);
	if (rc)
		srv_encode_req_release(req);
	else
		req_give(req, tree);
	return rc;
}

/*
 * The fast path.  jansson builds a json_t per number (a malloc each) and
 * reads its input through a character stream: about 1 us per embedding
 * value, which made JSON requests several times slower than base64.  This
 * scanner accepts only a strict subset of JSON - exactly the well-formed,
 * valid requests with ASCII strings free of escapes - and converts numbers
 * the way jansson does (strtod, or strtoll for integers, then to float), so
 * it produces the same request bit for bit.  On anything else, including
 * every kind of error, it gives up and the jansson path above decodes the
 * body again and produces the error message: there is one definition of
 * what is wrong and what it is called.  One exception: an embedding that
 * path would refuse on its own (another width; for base64 also bad base64 or
 * a value not finite) is noted and the scan goes on.  If the rest is valid,
 * that path's first error would be the first such input's, and decode_any
 * makes it with that path's own functions (width_fail, decode_b64).
 */
struct scan {
	const char *p, *end;
	size_t row; /* the input being scanned */
	/* The first input whose embedding the jansson path refuses on its own
	 * (another width; base64 text that is not D finite floats), noted
	 * while the rest of the body is still scanned (see decode_any): its
	 * index, and its value count or its base64 text. */
	int bad_set;
	size_t bad_row, bad_n;
	const char *bad_b64;
};

static inline __attribute__((always_inline)) void note_row(struct scan *s, size_t n,
							   const char *b64)
{
	if (s->bad_set)
		return;
	s->bad_set = 1;
	s->bad_row = s->row;
	s->bad_n = n;
	s->bad_b64 = b64;
}

static void scan_ws(struct scan *s)
{
	while (s->p < s->end && (*s->p == ' ' || *s->p == '\n' || *s->p == '\r' || *s->p == '\t'))
		s->p++;
}

static int scan_char(struct scan *s, char c)
{
	scan_ws(s);
	if (s->p < s->end && *s->p == c) {
		s->p++;
		return 1;
	}
	return 0;
}

/* A string of printable ASCII without escapes; @str, @n are its contents. */
static int scan_string(struct scan *s, const char **str, size_t *n)
{
	const char *q;
	unsigned char bad = 0;

	scan_ws(s);
	if (s->p >= s->end || *s->p != '"')
		return 0;
	q = memchr(s->p + 1, '"', (size_t)(s->end - s->p - 1));
	if (!q)
		return 0;
	/* Eight bytes at a time (SWAR): any control byte, byte >= 0x7f or
	 * backslash sends the body to jansson. */
	{
		const unsigned char *c = (const unsigned char *)s->p + 1;
		const unsigned char *e = (const unsigned char *)q;
		const uint64_t ones = 0x0101010101010101ull, high = 0x8080808080808080ull;
		uint64_t acc = 0;
		for (; e - c >= 8; c += 8) {
			uint64_t w, bs, del;
			memcpy(&w, c, 8);
			bs = w ^ (ones * '\\');
			del = w ^ (ones * 0x7f);
			acc |= w | ((w - ones * 0x20) & ~w) | ((bs - ones) & ~bs) |
			       ((del - ones) & ~del);
		}
		bad = (acc & high) != 0;
		for (; c < e; c++)
			bad |= (unsigned char)((*c < 0x20) | (*c >= 0x7f) | (*c == '\\'));
	}
	if (bad)
		return 0;
	*str = s->p + 1;
	*n = (size_t)(q - s->p - 1);
	s->p = q + 1;
	return 1;
}

/*
 * The value of a number token as jansson gives it (strtoll or strtod), or 0
 * when jansson would refuse it (overflow).  The token is a valid JSON number
 * followed by at least one more byte of the body, so strtod stops at its end.
 */
static int scan_value(const char *tok, size_t n, int integer, double *out, long long *iout)
{
	char *end;
	errno = 0;
	if (integer) {
		*iout = strtoll(tok, &end, 10);
		*out = (double)*iout;
	} else {
		*out = strtod(tok, &end);
	}
	return !errno && end == tok + n;
}

/*
 * How many of the eight bytes of @v (little-endian: the first byte lowest)
 * are ASCII digits before the first that is not: 0..8.  A byte is a digit
 * when its high nibble is 3 and adding 6 to it does not carry out of the
 * nibble.  Adding 6 can carry into the next byte only out of a byte of 0xFA
 * or more, which is not a digit, so every byte up to the first non-digit is
 * classed right, and nothing after it matters.
 */
static inline int digits_in8(uint64_t v)
{
	uint64_t t = (v & 0xF0F0F0F0F0F0F0F0ull) |
		     (((v + 0x0606060606060606ull) & 0xF0F0F0F0F0F0F0F0ull) >> 4);
	uint64_t x = t ^ 0x3333333333333333ull; /* zero bytes: digits */
	return x ? __builtin_ctzll(x) >> 3 : 8;
}

/* The value of eight digit values 0..9 (not ASCII), the first in the lowest
 * byte of @v, as one decimal number. */
static inline uint64_t eight_digit_values(uint64_t v)
{
	v = v * 10 + (v >> 8); /* byte 2k: the two-digit number of digits 2k, 2k+1 */
	v = ((v & 0x000000FF000000FFull) * (100 + (1000000ull << 32)) +
	     ((v >> 16) & 0x000000FF000000FFull) * (1 + (10000ull << 32))) >>
	    32;
	return (uint32_t)v;
}

/*
 * The digits at @q (before @e), appended to *@mp: at most 19 significant
 * digits, counted in *@ndp, which becomes 20 when there are more (the value
 * is then wrong and the caller gives up).  Leading zeros of the number
 * (*@mp still 0) are skipped.  Returns the first non-digit.
 *
 * Eight bytes at a time while eight can be read: the digits among them are
 * counted (digits_in8) and converted together, a short run shifted up so
 * that the bytes below it read as leading zeros, instead of a loop per digit
 * for the rest of a run (x1.08-1.13 on nine-digit numbers; bench/RESULTS.md,
 * "Digit runs eight bytes at a time").
 */
static inline __attribute__((always_inline)) const char *scan_digits(const char *q, const char *e,
								     uint64_t *mp, int *ndp)
{
	static const uint64_t p10[9] = {1,	10,	 100,	   1000,     10000,
					100000, 1000000, 10000000, 100000000};
	uint64_t v, m = *mp; /* locals, kept in registers (the pointers may alias) */
	int nd = *ndp, k;

	while (e - q >= 8) {
		memcpy(&v, q, 8);
		k = digits_in8(v);
		if (!k)
			break;
		/* the digit values; a borrow out of the first non-digit byte only
		 * reaches the bytes after it, which the shift drops */
		v = (v - 0x3030303030303030ull) << (8 * (8 - k));
		if (!m) {
			/* significant digits: the run less its leading zeros, which
			 * are the lowest bytes of v that are zero above the shift */
			nd = v ? 8 - (__builtin_ctzll(v) >> 3) : 0;
			m = eight_digit_values(v);
		} else if (nd + k <= 19) {
			m = m * p10[k] + eight_digit_values(v);
			nd += k;
		} else {
			break; /* the digit loop below counts past 19 */
		}
		q += k;
		if (k < 8) {
			*mp = m;
			*ndp = nd;
			return q;
		}
	}
	for (; q < e && (unsigned)(*q - '0') < 10; q++) {
		if (!m && *q == '0')
			continue;
		if (nd >= 19) {
			nd = 20;
			continue;
		}
		m = m * 10 + (uint64_t)(*q - '0');
		nd++;
	}
	*mp = m;
	*ndp = nd;
	return q;
}

/*
 * A JSON number as jansson gives it, as a float, in one pass: 1 with *@out
 * set; 0 when there is no valid number token here; -1 when the token is
 * valid but this conversion is unsure, and strtod or strtoll (scan_value)
 * must decide: *@tok, *@n, *@integer describe the token in every case but 0.
 *
 * Up to 19 significant digits go into a uint64 m, and d = m * 10^e10 for
 * |e10| <= 22 (powers of ten exact in double).  With m < 2^53 that d is
 * the correctly rounded double (Clinger's fast path), i.e. exactly
 * strtod's, so (float)d is exactly jansson's value.  Otherwise d is within
 * 2 ulps of the exact value, and (float)d is still jansson's value unless d
 * lies within 4 ulps of a midpoint between two floats (where double rounding
 * could differ): the 29 bits of d below float precision then read close to
 * 1000...0.  Integers are strtoll's value (so "-0" is +0), and integers of
 * 2^53 or more, subnormal and overflowing results go to the slow path.
 */
/* (always inlined: a call per number, with its register spills, was 6-8% of
 * a 64 x 384 JSON request's decode; bench/RESULTS.md) */
static inline __attribute__((always_inline)) int
scan_float(struct scan *s, float *out, const char **tok, size_t *n, int *integer)
{
	static const double p10[23] = {1e0,  1e1,  1e2,	 1e3,  1e4,  1e5,  1e6,	 1e7,
				       1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
				       1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};
	const char *q, *e = s->end;
	uint64_t m = 0, bits, low;
	int neg = 0, nd = 0;
	long e10 = 0;
	double d;
	float f;

	scan_ws(s);
	q = s->p;
	*integer = 1;
	if (q < e && *q == '-') {
		neg = 1;
		q++;
	}
	if (q >= e || (unsigned)(*q - '0') >= 10)
		return 0;
	if (*q == '0') {
		/* "01" is not JSON (jansson says so) */
		if (++q < e && (unsigned)(*q - '0') < 10)
			return 0;
	} else {
		q = scan_digits(q, e, &m, &nd);
	}
	if (q < e && *q == '.') {
		const char *f0 = ++q;
		*integer = 0;
		q = scan_digits(q, e, &m, &nd);
		if (q == f0)
			return 0;
		e10 = -(long)(q - f0);
	}
	if (q < e && (*q == 'e' || *q == 'E')) {
		long es = 1, ev = 0;
		*integer = 0;
		if (++q < e && (*q == '+' || *q == '-'))
			es = *q++ == '-' ? -1 : 1;
		if (q >= e || (unsigned)(*q - '0') >= 10)
			return 0;
		for (; q < e && (unsigned)(*q - '0') < 10; q++)
			if (ev < 100000)
				ev = ev * 10 + (*q - '0');
		e10 += es * ev;
	}
	if (q >= e)
		return 0; /* a body cannot end in a number; and strtod needs a stop */
	*tok = s->p;
	*n = (size_t)(q - s->p);
	s->p = q;
	if (nd > 19)
		return -1;
	if (*integer) {
		if (m >= (1ull << 53))
			return -1; /* strtoll decides, overflow included */
		f = (float)(double)m;
		*out = neg && m ? -f : f;
		return 1;
	}
	if (!m) {
		*out = neg ? -0.0f : 0.0f;
		return 1;
	}
	if (e10 < -22 || e10 > 22)
		return -1;
	d = (double)m;
	d = e10 < 0 ? d / p10[-e10] : d * p10[e10];
	f = (float)d;
	if (!(f >= FLT_MIN) || isinf(f))
		return -1;
	if (m >= (1ull << 53)) {
		memcpy(&bits, &d, sizeof(bits));
		low = bits & ((1ull << 29) - 1);
		if (low + 4 >= (1ull << 28) && low <= (1ull << 28) + 4)
			return -1;
	}
	*out = neg ? -f : f;
	return 1;
}

/* A JSON number token (scan_float's grammar, its value unused); *@integer
 * says it has no fraction or exponent. */
static int scan_number(struct scan *s, const char **tok, size_t *n, int *integer)
{
	float unused;
	return scan_float(s, &unused, tok, n, integer) != 0;
}

static int scan_literal(struct scan *s, const char *lit)
{
	size_t n = strlen(lit);
	scan_ws(s);
	if ((size_t)(s->end - s->p) < n || memcmp(s->p, lit, n) != 0)
		return 0;
	s->p += n;
	return 1;
}

static int key_is(const char *k, size_t n, const char *want)
{
	return n == strlen(want) && memcmp(k, want, n) == 0;
}

/* The values of a row past its first @j (its width), from @p: each checked
 * as scan_row checks one, none kept.  Out of line, and given no pointer to
 * the scanner, so that the row loop stays as it was. */
struct row_rest {
	const char *p; /* after the row's ']'; NULL: not a row scan_row takes */
	int n;	       /* the row's values */
};

static __attribute__((noinline)) struct row_rest scan_row_rest(const char *p, const char *end,
							       int j)
{
	struct scan t = {p, end, 0, 0, 0, 0, NULL};
	struct row_rest out = {NULL, 0};
	const char *tok;
	size_t n;
	int integer, r;
	float f;
	double d;
	long long ll;

	do {
		if (!(r = scan_float(&t, &f, &tok, &n, &integer)))
			return out;
		if (r < 0) {
			if (!scan_value(tok, n, integer, &d, &ll))
				return out;
			f = (float)d;
		}
		if (!isfinite(f))
			return out;
		j++;
	} while (scan_char(&t, ','));
	if (scan_char(&t, ']')) {
		out.p = t.p;
		out.n = j;
	}
	return out;
}

static int scan_row(struct scan *s, int D, float *row)
{
	const char *tok;
	size_t n;
	int integer, j = 0;
	double d;
	long long ll;

	if (!scan_char(s, '['))
		return 0;
	if (scan_char(s, ']')) {
		if (D != 0)
			note_row(s, 0, NULL);
		return 1;
	}
	do {
		int r;
		if (j >= D) {
			struct row_rest rest = scan_row_rest(s->p, s->end, j);
			if (!rest.p)
				return 0;
			s->p = rest.p;
			note_row(s, (size_t)rest.n, NULL);
			return 1;
		}
		if (!(r = scan_float(s, &row[j], &tok, &n, &integer)))
			return 0;
		if (r < 0) {
			if (!scan_value(tok, n, integer, &d, &ll))
				return 0;
			row[j] = (float)d;
		}
		if (!isfinite(row[j]))
			return 0;
		j++;
	} while (scan_char(s, ','));
	if (j == D)
		return scan_char(s, ']');
	if (!scan_char(s, ']'))
		return 0;
	note_row(s, (size_t)j, NULL);
	return 1;
}

#ifdef SRV_HAVE_X86
/* 1 when the @D floats at @row are all finite, eight at a time. */
static AVX2 int row_finite_avx2(const float *row, int D)
{
	const __m256i expo = _mm256_set1_epi32(0x7f800000);
	__m256i acc = _mm256_setzero_si256();
	int j = 0;

	for (; j + 8 <= D; j += 8) {
		__m256i u = _mm256_and_si256(_mm256_loadu_si256((const __m256i *)(row + j)), expo);
		acc = _mm256_or_si256(acc, _mm256_cmpeq_epi32(u, expo));
	}
	if (!_mm256_testz_si256(acc, acc))
		return 0;
	for (; j < D; j++)
		if (!isfinite(row[j]))
			return 0;
	return 1;
}
#endif

/* Turn @D little-endian float32s, decoded in place, into floats; 0 when
 * one is not finite. */
static int b64_row_finite(float *row, int D)
{
#ifdef SRV_HAVE_X86
	if (use_avx2()) /* x86 is little-endian: the bytes are the floats */
		return row_finite_avx2(row, D);
#endif
	for (int j = 0; j < D; j++) {
		const uint8_t *p = (const uint8_t *)(row + j);
		uint32_t u = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
			     (uint32_t)p[3] << 24;
		memcpy(&row[j], &u, 4);
		if (!isfinite(row[j]))
			return 0;
	}
	return 1;
}

/*
 * A base64 string of exactly @D float32s, decoded into @row.  Instead of
 * scanning for the closing quote (scan_string), look for it where the
 * string must end: @D floats have one base64 length unpadded and one
 * padded.  The decoder refuses a quote, backslash, control or non-ASCII
 * byte before it, so this accepts exactly what scan_string followed by a
 * decode of the right length accepts, in one pass over the characters.
 */
static int scan_b64_row(struct scan *s, int D, float *row)
{
	size_t olen = (size_t)D * 4, bad, left;
	size_t n = olen / 3 * 4 + (olen % 3 ? olen % 3 + 1 : 0), npad = (olen + 2) / 3 * 4;
	const char *q;

	scan_ws(s);
	if (s->p >= s->end || *s->p != '"')
		return 0;
	q = s->p + 1;
	left = (size_t)(s->end - q);
	if (!(left > n && q[n] == '"')) {
		if (npad == n || !(left > npad && q[npad] == '"'))
			goto other;
		n = npad;
	}
	if (srv_base64_decode(q, n, (uint8_t *)row, olen, &bad) != (long)olen)
		goto other;
	s->p = q + n + 1;
	if (!b64_row_finite(row, D))
		note_row(s, n, q);
	return 1;
other:
	/* another width, not base64, or not a plain string: noted when it is a
	 * plain string (decode_b64 will name what is wrong), the rest scanned */
	{
		const char *str;
		size_t len;
		if (!scan_string(s, &str, &len))
			return 0;
		note_row(s, len, str);
		return 1;
	}
}

static int scan_input(struct scan *s, int D, float *row, struct srv_buf *ids, size_t *id_off,
		      uint32_t *id_len)
{
	int have_emb = 0, have_b64 = 0, have_id = 0;
	const char *k, *str;
	size_t kn, n;

	if (!scan_char(s, '{'))
		return 0;
	if (scan_char(s, '}'))
		return 0;
	do {
		if (!scan_string(s, &k, &kn) || !scan_char(s, ':'))
			return 0;
		if (key_is(k, kn, "embedding") && !have_emb && !have_b64) {
			have_emb = 1;
			if (!scan_row(s, D, row))
				return 0;
		} else if (key_is(k, kn, "embedding_b64") && !have_emb && !have_b64) {
			have_b64 = 1;
			if (!scan_b64_row(s, D, row))
				return 0;
		} else if (key_is(k, kn, "id") && !have_id) {
			int integer;
			double d;
			long long ll;
			have_id = 1;
			*id_off = ids->len;
			if (scan_string(s, &str, &n)) {
				srv_buf_json_str(ids, str, n);
			} else if (scan_number(s, &str, &n, &integer) && integer &&
				   scan_value(str, n, 1, &d, &ll)) {
				srv_buf_printf(ids, "%lld", ll);
			} else {
				return 0;
			}
			*id_len = (uint32_t)(ids->len - *id_off);
		} else {
			return 0;
		}
	} while (scan_char(s, ','));
	return (have_emb || have_b64) && scan_char(s, '}');
}

/* 1: @req holds the request.  0: give it to jansson.  2: a request the
 * jansson path would accept but for some inputs' embeddings (struct scan's
 * note); @bad holds the scan, with its note on the first of them.  -1: its
 * memory was refused (req_take), @e says so.  Nothing is left allocated or
 * charged but on 1. */
static int decode_fast(const char *body, size_t len, int D, int max_inputs, int assign,
		       struct srv_encode_req *req, struct scan *bad, struct srv_api_error *e)
{
	struct scan s = {body, body + len, 0, 0, 0, 0, NULL};
	struct srv_buf ids = SRV_BUF_INIT;
	int have_inputs = 0, have_topk = 0, have_q = 0, have_fmt = 0, have_re = 0;
	size_t cap = 0, B = 0, row = (size_t)D * sizeof(float) + sizeof(size_t) + sizeof(uint32_t);
	const char *k, *str;
	size_t kn, n;
	int r = 0;

	if (D <= 0 || !scan_char(&s, '{'))
		return 0;
	do {
		if (!scan_string(&s, &k, &kn) || !scan_char(&s, ':'))
			goto bail;
		if (key_is(k, kn, "inputs") && !have_inputs) {
			have_inputs = 1;
			if (!scan_char(&s, '[') || scan_char(&s, ']'))
				goto bail;
			do {
				if (B == cap) {
					size_t nc = cap ? 2 * cap : 16;
					float *x;
					size_t *off;
					uint32_t *il;
					if (nc > (size_t)max_inputs)
						nc = (size_t)max_inputs;
					if (B >= nc || nc > ((size_t)-1 / 4) / (size_t)D)
						goto bail; /* too many: jansson path says 413 */
					if (req_take(req, (nc - cap) * row, e)) {
						r = -1;
						goto bail;
					}
					x = realloc(req->x, nc * (size_t)D * sizeof(float));
					if (x)
						req->x = x;
					off = realloc(req->id_off, nc * sizeof(*off));
					if (off)
						req->id_off = off;
					il = realloc(req->id_len, nc * sizeof(*il));
					if (il)
						req->id_len = il;
					if (!x || !off || !il)
						goto bail;
					cap = nc;
				}
				req->id_off[B] = 0;
				req->id_len[B] = 0;
				s.row = B;
				if (!scan_input(&s, D, req->x + B * (size_t)D, &ids,
						&req->id_off[B], &req->id_len[B]) ||
				    (assign && !req->id_len[B]))
					goto bail;
				B++;
			} while (scan_char(&s, ','));
			if (!scan_char(&s, ']'))
				goto bail;
		} else if (assign) {
			if (!key_is(k, kn, "reassign") || have_re)
				goto bail;
			have_re = 1;
			if (scan_literal(&s, "true"))
				req->reassign = 1;
			else if (!scan_literal(&s, "false"))
				goto bail;
		} else if (key_is(k, kn, "top_k") && !have_topk) {
			int integer;
			double d;
			long long ll;
			have_topk = 1;
			if (!scan_number(&s, &str, &n, &integer) || !integer ||
			    !scan_value(str, n, 1, &d, &ll) || ll < 1 || ll > SID_TOPK_MAX)
				goto bail;
			req->top_k = (int)ll;
		} else if (key_is(k, kn, "return_quantized") && !have_q) {
			have_q = 1;
			if (scan_literal(&s, "true"))
				req->quantized = 1;
			else if (!scan_literal(&s, "false"))
				goto bail;
		} else if (key_is(k, kn, "format") && !have_fmt) {
			have_fmt = 1;
			if (!scan_string(&s, &str, &n))
				goto bail;
			if (key_is(str, n, "dash"))
				req->format = SID_FORMAT_DASH;
			else if (key_is(str, n, "tokens"))
				req->format = SID_FORMAT_TOKENS;
			else
				goto bail;
		} else {
			goto bail;
		}
	} while (scan_char(&s, ','));
	if (!scan_char(&s, '}') || !have_inputs || ids.oom)
		goto bail;
	scan_ws(&s);
	if (s.p != s.end)
		goto bail;
	if (s.bad_set) {
		if (bad)
			*bad = s;
		srv_buf_release(&ids);
		srv_encode_req_release(req);
		return 2;
	}
	if (req_take(req, ids.cap, e)) {
		r = -1;
		goto bail;
	}
	req->B = B;
	req->ids = ids.p;
	return 1;
bail:
	srv_buf_release(&ids);
	srv_encode_req_release(req);
	return r;
}

int srv__encode_req_decode_jansson(const char *body, size_t len, enum sid_tower_kind tower, int D,
				   int max_inputs, struct srv_encode_req *req,
				   struct srv_api_error *e)
{
	return decode_jansson(body, len, tower, D, max_inputs, 0, NULL, 0, req, e);
}

int srv__encode_req_decode_fast(const char *body, size_t len, int D, int max_inputs,
				struct srv_encode_req *req)
{
	struct srv_api_error e;
	return decode_fast(body, len, D, max_inputs, 0, req, NULL, &e) == 1;
}

int srv__encode_req_bad_row_noted(const char *body, size_t len, int D, int max_inputs)
{
	struct srv_encode_req req;
	int r;

	struct srv_api_error e;

	memset(&req, 0, sizeof(req));
	req.top_k = 1;
	r = decode_fast(body, len, D, max_inputs, 0, &req, NULL, &e);
	srv_encode_req_release(&req);
	return r == 2;
}

/* Past the closing quote of the JSON string whose text begins at @p (after
 * its opening quote): the first quote after an even run of backslashes
 * (memchr: a base64 row is thousands of bytes).  NULL when it never ends. */
static const char *string_end(const char *p, const char *end)
{
	for (;;) {
		const char *q = memchr(p, '"', (size_t)(end - p));
		size_t bs = 0;
		if (!q)
			return NULL;
		while (q - bs > p && q[-1 - (ptrdiff_t)bs] == '\\')
			bs++;
		p = q + 1;
		if (bs % 2 == 0)
			return p;
	}
}

/* 1 when the JSON string body @s (@n bytes, between its quotes) reads
 * @want once its escapes are decoded, as jansson decodes a key. */
static int key_reads(const char *s, size_t n, const char *want)
{
	size_t i = 0, k = 0, w = strlen(want);

	if (n == w)
		return !memcmp(s, want, w);
	while (i < n && k < w) {
		unsigned c = (unsigned char)s[i++];
		if (c == '\\') {
			unsigned v = 0;
			if (i >= n || s[i] != 'u' || n - i < 5)
				return 0; /* the other escapes make no letter */
			for (int d = 1; d <= 4; d++) {
				int x = (unsigned char)s[i + d];
				x = x >= '0' && x <= '9'   ? x - '0'
				    : x >= 'a' && x <= 'f' ? x - 'a' + 10
				    : x >= 'A' && x <= 'F' ? x - 'A' + 10
							   : -1;
				if (x < 0)
					return 0;
				v = v * 16 + (unsigned)x;
			}
			i += 5;
			c = v;
		}
		if (c != (unsigned char)want[k++])
			return 0;
	}
	return i == n && k == w;
}

/*
 * The '[', '{' and ',' of @body outside strings, in one pass: a bound on the
 * JSON values jansson would build (each bracket or comma begins one).  It
 * allocates a json_t and a slot per value, 40 bytes or more for a value of
 * two bytes ("0,"), so it is given only bodies a request within the limits
 * could be, not a few MB of "[]," that would take gigabytes to decode.
 *
 * In the same pass, *@inputs (when not NULL): the elements of the array
 * that is the value of the key @key ("inputs" or "ids") of the top-level
 * object (of the longest such array if the key comes more than once), which
 * is what jansson would count for a well-formed body.  Only a character that can
 * begin a JSON value begins an element, and what lies inside an element
 * (an embedding's numbers, arrays nested in it) never counts.
 */
size_t srv__json_separators(const char *body, size_t len, const char *key, size_t *inputs,
			    size_t *members)
{
	const char *p = body, *end = body + len;
	size_t n = 0, depth = 0, count = 0, most = 0, colons = 0;
	/* the top level is an object; at depth 1: a key may come next; the
	 * last key was @key; its ':' came, so the next value is its value */
	int root_obj = 0, key_next = 0, key_match = 0, value_match = 0;
	/* inside @key's array; an element may begin next */
	int in = 0, elem_next = 0;

	while (p < end) {
		char c = *p++;
		if (c == ' ' || c == '\n' || c == '\r' || c == '\t')
			continue;
		if (in && elem_next && depth == 2) {
			elem_next = 0;
			if (c == '{' || c == '[' || c == '"' || c == '-' ||
			    (c >= '0' && c <= '9') || c == 't' || c == 'f' || c == 'n')
				count++;
		}
		if (depth == 1 && value_match) {
			value_match = 0;
			if (c == '[') {
				in = 1;
				elem_next = 1;
				count = 0;
			}
		}
		if (c == '"') {
			const char *str = p;
			if (!(p = string_end(p, end)))
				goto out;
			if (depth == 1 && key_next) {
				key_next = 0;
				key_match = key_reads(str, (size_t)(p - 1 - str), key);
			}
		} else if (c == '[' || c == '{') {
			n++;
			if (++depth == 1)
				root_obj = key_next = c == '{';
		} else if (c == ',') {
			n++;
			if (depth == 1)
				key_next = root_obj;
			else if (depth == 2 && in)
				elem_next = 1;
		} else if (c == ']' || c == '}') {
			if (depth == 2 && in) {
				in = 0;
				if (count > most)
					most = count;
			}
			if (depth)
				depth--;
		} else if (c == ':') {
			colons++;
			if (depth == 1 && key_match) {
				key_match = 0;
				value_match = 1;
			}
		}
	}
out:
	if (in && count > most)
		most = count;
	if (inputs)
		*inputs = most;
	if (members)
		*members = colons;
	return n;
}

/* The fast scanner, and jansson when it gives up (@assign: see decode_jansson). */
size_t srv__json_separators_max(int D, int max_inputs)
{
	/* a request has '{', '[' and 3 ',' at the top, and per input '{', '[',
	 * a ',' before it, 2 between its fields and D - 1 between numbers */
	return (size_t)max_inputs * ((size_t)(D > 0 ? D : 0) + 4) + 64;
}

/*
 * An object member costs jansson far more than an array element (a hash
 * table entry, its key and its value: about 150 bytes for '"k1": 0,'), so
 * members are bounded apart from the separators: a body of a million
 * unknown keys, within the separator bound of a 256-wide tower, took
 * 160 MB to decode (a valid request of that size: 11 MB).
 */
size_t srv__json_members_max(int max_inputs)
{
	return (size_t)max_inputs * 8 + 64;
}

/*
 * What jansson 2.14 allocates, at most, for each thing it parses (glibc
 * malloc's chunks, header included, measured; tests/server/check_api.c
 * checks the sum against its allocations for bodies made of each, and it
 * is 1.4 to 1.9 times them for those): a value after a comma
 * (a number: 32 bytes, and its slot in an array's table, which doubles: 24
 * while it grows); an object (the object and its first hash buckets: 224)
 * and an array (the array and its first table: 128, and its first element)
 * with the value or slot they begin; a member (its pair, 64 bytes and the
 * key, buckets that double, and its value); a string (a json_t and a
 * separate allocation of its text: 72 for "x"), plus the text itself once
 * and the lexer's buffer, which doubles up to twice the longest token.
 */
#define TREE_VALUE  64
#define TREE_OBJECT 256
#define TREE_ARRAY  192
#define TREE_MEMBER 192
#define TREE_STRING 80
#define TREE_FIXED  4096

size_t srv__json_tree_bytes(const char *body, size_t len)
{
	const char *p = body, *end = body + len, *run = NULL;
	size_t values = 1, objects = 0, arrays = 0, members = 0, strings = 0, longest = 0;

	while (p < end) {
		char c = *p++;
		if (c == '"') {
			const char *str = p - 1;
			p = string_end(p, end);
			if (!p)
				p = end;
			strings++;
			if ((size_t)(p - str) > longest)
				longest = (size_t)(p - str);
			run = NULL;
			continue;
		}
		if (c == ',' || c == '{' || c == '[' || c == ':' || c == ']' || c == '}' ||
		    c == ' ' || c == '\n' || c == '\r' || c == '\t') {
			values += c == ',';
			objects += c == '{';
			arrays += c == '[';
			members += c == ':';
			run = NULL;
			continue;
		}
		if (!run) /* a number or a literal: the lexer keeps its text too */
			run = p - 1;
		if ((size_t)(p - run) > longest)
			longest = (size_t)(p - run);
	}
	return TREE_FIXED + values * TREE_VALUE + objects * TREE_OBJECT + arrays * TREE_ARRAY +
	       members * TREE_MEMBER + strings * TREE_STRING + len + 2 * longest;
}

static int decode_any(const char *body, size_t len, enum sid_tower_kind tower, int D,
		      int max_inputs, int assign, struct srv_hold *hold, struct srv_encode_req *req,
		      struct srv_api_error *e)
{
	size_t seps, inputs, members, most = srv__json_separators_max(D, max_inputs);
	size_t most_members = srv__json_members_max(max_inputs);
	struct scan w;
	int r;

	req_init(req, tower, D, hold);
	r = decode_fast(body, len, D, max_inputs, assign, req, &w, e);
	if (r == 1)
		return 0;
	if (r == -1)
		return -1;
	if (r == 2) {
		/* Valid but for the embeddings of some inputs: the jansson
		 * path's first error is the first such input's, made here by
		 * the functions it uses, without building every value of the
		 * body.  A client with the wrong embedding model (or one that
		 * sends NaNs), at full rate, costs about what good requests
		 * cost, not tens of times more; and an embedding far longer
		 * than the tower's is told its length, as any other. */
		const char *tname = sid_tower_name(tower);
		if (!w.bad_b64) {
			r = width_fail(e, w.bad_row, w.bad_n, tname, D);
		} else {
			float *row = malloc((size_t)D * sizeof(float));
			if (row)
				r = decode_b64(w.bad_b64, w.bad_n, w.bad_row, tname, D, row, e);
			free(row);
		}
		if (r == -1)
			return -1; /* decode_fast left nothing allocated */
	}
	/* A body with more values than any request of at most max_inputs
	 * inputs has is not given to jansson (a flood of tiny values would
	 * take gigabytes): too many inputs is then 413 with the count
	 * jansson would give, and otherwise (an embedding far too long,
	 * arrays nested in one, junk beside the inputs, with another fault
	 * that sent it here) it is invalid whatever jansson would name
	 * first.  Any other body's error is jansson's, too many inputs
	 * included. */
	seps = srv__json_separators(body, len, "inputs", &inputs, &members);
	if ((seps > most || members > most_members) && inputs > (size_t)max_inputs)
		return fail(e, SRV_ERR_TOO_LARGE, "%zu inputs; at most %d are allowed per request",
			    inputs, max_inputs);
	if (seps > most)
		return fail(e, SRV_ERR_INVALID_ARGUMENT,
			    "the body has %zu JSON brackets and commas; a request of at most %d "
			    "inputs of %d numbers has no more than %zu",
			    seps, max_inputs, D, most);
	if (members > most_members)
		return fail(e, SRV_ERR_INVALID_ARGUMENT,
			    "the body has %zu JSON object members (\"key\": value); a request of "
			    "at most %d inputs has no more than %zu",
			    members, max_inputs, most_members);
	return decode_jansson(body, len, tower, D, max_inputs, assign, hold,
			      hold ? srv__json_tree_bytes(body, len) : 0, req, e);
}

/*
 * The ids of an assign request as plain NUL-terminated strings (the ids
 * buffer holds their JSON text): a string's value, an integer's decimal
 * text.  Each must be a valid registry id (sid_reg_id_check).
 */
static int ids_finish(struct srv_encode_req *req, struct srv_api_error *e)
{
	size_t total = 0, o;
	char *p;

	for (size_t i = 0; i < req->B; i++)
		total += req->id_len[i] + 1;
	if (req_take(req, req->B * sizeof(char *) + total, e))
		return -1;
	req->id_str = malloc(req->B * sizeof(char *) + total);
	if (!req->id_str)
		return fail(e, SRV_ERR_UNAVAILABLE, "out of memory for ids");
	p = (char *)(req->id_str + req->B);
	for (size_t i = 0; i < req->B; i++) {
		const char *t = req->ids + req->id_off[i];
		size_t n = req->id_len[i];
		struct sid_error err;

		req->id_str[i] = p;
		if (t[0] == '"' && !memchr(t, '\\', n)) {
			memcpy(p, t + 1, n - 2);
			p[n - 2] = '\0';
		} else if (t[0] == '"') {
			json_t *v = json_loadb(t, n, JSON_DECODE_ANY, NULL);
			const char *sv = json_string_value(v);
			if (!sv || strlen(sv) != json_string_length(v)) {
				json_decref(v);
				return fail(e, SRV_ERR_INVALID_ARGUMENT,
					    "inputs[%zu].id holds a NUL character", i);
			}
			o = json_string_length(v);
			memcpy(p, sv, o + 1); /* the unescaped text is never longer */
			json_decref(v);
		} else {
			memcpy(p, t, n);
			p[n] = '\0';
		}
		if (sid_reg_id_check_unnamed(p, &err))
			return fail(e, SRV_ERR_INVALID_ARGUMENT, "inputs[%zu].id: %s", i, err.msg);
		p += strlen(p) + 1;
	}
	return 0;
}

int srv_assign_req_decode(const char *body, size_t len, enum sid_tower_kind tower, int D,
			  int max_inputs, struct srv_hold *hold, struct srv_encode_req *req,
			  struct srv_api_error *e)
{
	if (decode_any(body, len, tower, D, max_inputs, 1, hold, req, e))
		return -1;
	if (ids_finish(req, e)) {
		srv_encode_req_release(req);
		return -1;
	}
	return 0;
}

int srv_delete_req_decode(const char *body, size_t len, enum sid_tower_kind tower, int max_inputs,
			  struct srv_hold *hold, struct srv_encode_req *req,
			  struct srv_api_error *e)
{
	/* a request has '{', '[' and a ',' an id; 64 to spare, as for encode */
	size_t most = (size_t)max_inputs + 64, seps, n_ids, members, tree = 0, B, i, total = 0;
	json_t *root = NULL, *ids = NULL, *v;
	const char *key;
	char *p;

	req_init(req, tower, 0, hold);
	/* not given to jansson: far more values than ids allowed (413 when
	 * the list of ids is too long, as jansson would find, else 400) or a
	 * flood of object members */
	seps = srv__json_separators(body, len, "ids", &n_ids, &members);
	if (seps > most && n_ids > (size_t)max_inputs)
		return fail(e, SRV_ERR_TOO_LARGE, "%zu ids; at most %d are allowed per request",
			    n_ids, max_inputs);
	if (seps > most)
		return fail(e, SRV_ERR_INVALID_ARGUMENT,
			    "the body has %zu JSON brackets and commas; a request of at most %d "
			    "ids has no more than %zu",
			    seps, max_inputs, most);
	if (members > 64)
		return fail(e, SRV_ERR_INVALID_ARGUMENT,
			    "the body has %zu JSON object members; a request has one (\"ids\")",
			    members);
	if (hold && req_take(req, tree = srv__json_tree_bytes(body, len), e))
		return -1;
	if (!(root = parse_object(body, len, e)))
		goto fail;
	json_object_foreach(root, key, v)
	{
		if (strcmp(key, "ids")) {
			fail(e, SRV_ERR_INVALID_ARGUMENT, "unknown field \"%.100s\" (expected ids)",
			     key);
			goto fail;
		}
		ids = v;
	}
	if (!ids) {
		fail(e, SRV_ERR_INVALID_ARGUMENT, "missing field \"ids\"");
		goto fail;
	}
	if (!json_is_array(ids)) {
		fail(e, SRV_ERR_INVALID_ARGUMENT, "ids must be an array, not %s", json_kind(ids));
		goto fail;
	}
	if (!(B = json_array_size(ids))) {
		fail(e, SRV_ERR_INVALID_ARGUMENT, "ids is empty");
		goto fail;
	}
	if (B > (size_t)max_inputs) {
		fail(e, SRV_ERR_TOO_LARGE, "%zu ids; at most %d are allowed per request", B,
		     max_inputs);
		goto fail;
	}
	json_array_foreach(ids, i, v)
	{
		if (json_is_string(v))
			total += json_string_length(v) + 1;
		else if (json_is_integer(v))
			total += 21; /* "-9223372036854775808" */
		else {
			fail(e, SRV_ERR_INVALID_ARGUMENT,
			     "ids[%zu] must be a string or an integer, not %s", i, id_kind(v));
			goto fail;
		}
	}
	if (req_take(req, B * sizeof(char *) + total, e))
		goto fail;
	if (!(req->id_str = malloc(B * sizeof(char *) + total))) {
		fail(e, SRV_ERR_UNAVAILABLE, "out of memory for ids");
		goto fail;
	}
	req->B = B;
	p = (char *)(req->id_str + B);
	json_array_foreach(ids, i, v)
	{
		struct sid_error err;

		req->id_str[i] = p;
		if (json_is_string(v))
			memcpy(p, json_string_value(v), json_string_length(v) + 1);
		else
			sprintf(p, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
		if (sid_reg_id_check_unnamed(p, &err)) {
			fail(e, SRV_ERR_INVALID_ARGUMENT, "ids[%zu]: %s", i, err.msg);
			goto fail;
		}
		p += strlen(p) + 1;
	}
	json_decref(root);
	req_give(req, tree);
	return 0;
fail:
	json_decref(root);
	srv_encode_req_release(req);
	return -1;
}

int srv_encode_req_decode(const char *body, size_t len, enum sid_tower_kind tower, int D,
			  int max_inputs, struct srv_hold *hold, struct srv_encode_req *req,
			  struct srv_api_error *e)
{
	return decode_any(body, len, tower, D, max_inputs, 0, hold, req, e);
}

void srv_encode_req_release(struct srv_encode_req *req)
{
	free(req->x);
	free(req->ids);
	free(req->id_off);
	free(req->id_len);
	free(req->id_str);
	srv_hold_give(req->hold, req->charged);
	req->charged = 0;
	req->id_str = NULL;
	req->x = NULL;
	req->ids = NULL;
	req->id_off = NULL;
	req->id_len = NULL;
	req->B = 0;
}

/* "[12, 7, 200]" */
static void write_codes(struct srv_buf *out, const int32_t *c, int L)
{
	srv_buf_append(out, "[", 1);
	for (int l = 0; l < L; l++) {
		if (l)
			srv_buf_append(out, ", ", 2);
		srv_buf_int(out, c[l]);
	}
	srv_buf_append(out, "]", 1);
}

/* The sid as a JSON string (nothing in it needs escaping). */
static void write_sid(struct srv_buf *out, const int32_t *c, int L, enum sid_sid_format fmt)
{
	char sid[SID_MAX_LEVELS * 16];
	int n = sid_codes_format(c, L, fmt, sid, sizeof(sid));

	srv_buf_append(out, "\"", 1);
	srv_buf_append(out, sid, n > 0 ? (size_t)n : 0);
	srv_buf_append(out, "\"", 1);
}

void srv_encode_res_write(struct srv_buf *out, const char *version,
			  const struct srv_encode_req *req, const struct srv_encode_res *res)
{
	int L = res->L;

	srv_buf_puts(out, "{\"model_version\": ");
	srv_buf_json_str(out, version ? version : "", version ? strlen(version) : 0);
	srv_buf_puts(out, ", \"results\": [");
	for (size_t i = 0; i < req->B; i++) {
		const int32_t *c = res->codes + i * (size_t)L;

		srv_buf_puts(out, i ? ", {" : "{");
		if (req->id_len && req->id_len[i]) {
			srv_buf_puts(out, "\"id\": ");
			srv_buf_append(out, req->ids + req->id_off[i], req->id_len[i]);
			srv_buf_puts(out, ", ");
		}
		srv_buf_puts(out, "\"codes\": ");
		write_codes(out, c, L);
		srv_buf_puts(out, ", \"sid\": ");
		write_sid(out, c, L, req->format);
		srv_buf_puts(out, ", \"distance\": ");
		srv_buf_float(out, res->dist[i]);
		if (req->top_k > 1) {
			int cnt = res->alt_count ? res->alt_count[i] : 0;
			srv_buf_puts(out, ", \"alternatives\": [");
			for (int a = 0; a < cnt && a < res->n_alt; a++) {
				size_t k = i * (size_t)res->n_alt + (size_t)a;
				srv_buf_puts(out, a ? ", {\"codes\": " : "{\"codes\": ");
				write_codes(out, res->alt_codes + k * (size_t)L, L);
				srv_buf_puts(out, ", \"distance\": ");
				srv_buf_float(out, res->alt_dist[k]);
				srv_buf_puts(out, "}");
			}
			srv_buf_puts(out, "]");
		}
		if (req->quantized && res->quant) {
			const float *q = res->quant + i * (size_t)res->E;
			srv_buf_puts(out, ", \"quantized\": [");
			for (int j = 0; j < res->E; j++) {
				if (j)
					srv_buf_append(out, ", ", 2);
				srv_buf_float(out, q[j]);
			}
			srv_buf_puts(out, "]");
		}
		srv_buf_puts(out, "}");
	}
	srv_buf_puts(out, "]}\n");
}
