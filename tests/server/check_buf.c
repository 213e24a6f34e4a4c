/*
 * check_buf.c - server/buf.c's number formatting: srv_buf_float, the
 * shortest round-trip float32 -> decimal writer on every response's path,
 * srv_buf_int, and the appends they and the response writer use.
 *
 * Two independent expectations for every float tried:
 * - the reference: the printf search srv_buf_float used before (the
 *   shortest %.Ng that strtof reads back), kept here verbatim;
 * - an exact oracle: the output reads back to the same bits; no decimal
 *   with one digit less does (its two candidates around the float, cut
 *   from glibc's exact expansion, both fail); and of the decimals with as
 *   many digits, it is the closest to the float that reads back
 *   (printf's correctly rounded %.Ng, or when that one does not read
 *   back, the neighbour on the other side).
 * The output must equal the reference's, except where the reference is
 * not the shortest (its search stops at the first precision that fails;
 * near a power of two a shorter one can still work): there it must be
 * strictly shorter.  SEMID_FLOAT_STRIDE=N in the environment sweeps every
 * N-th positive float instead (a long offline run: N = 1 is all of them).
 */
#include <check.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check_main.h"
#include "../../server/buf.h"
#include "float_ref.h"

static float from_bits(uint32_t u)
{
	float f;
	memcpy(&f, &u, 4);
	return f;
}

static uint32_t to_bits(float f)
{
	uint32_t u;
	memcpy(&u, &f, 4);
	return u;
}

/* Significant digits of a decimal text ("-1.25e-05", "0.0012", "120"):
 * the digits without leading or trailing zeros into @dig, the exponent of
 * the first one (value = d.ddd * 10^x) into *@x; the count is returned. */
static int sig_digits(const char *s, char *dig, int *x)
{
	int n = 0, point = -1, lead = 0, seen = 0, pos = 0;
	const char *p = s;

	if (*p == '-')
		p++;
	for (; *p && *p != 'e'; p++) {
		if (*p == '.') {
			point = pos;
			continue;
		}
		if (!seen && *p == '0') {
			lead++;
			pos++;
			continue;
		}
		seen = 1;
		dig[n++] = *p;
		pos++;
	}
	while (n > 0 && dig[n - 1] == '0')
		n--;
	dig[n] = '\0';
	if (point < 0)
		point = pos;
	*x = point - lead - 1 + (*p == 'e' ? atoi(p + 1) : 0);
	return n;
}

/* The exact decimal expansion of positive @v: digits into @dig (at most
 * 112 significant ones exist; trailing zeros fill it) and the exponent of
 * the first.  printf gives the expansion correctly rounded: 40 digits are
 * enough to cut at @m digits unless the digits after the cut are all 0 or
 * all 9 (an exact tail, or a carry into it), then 120 are. */
static int expand(float v, int m, char dig[128])
{
	char e[160];
	int prec = 40, x, zeros, nines;

	for (;;) {
		snprintf(e, sizeof(e), "%.*e", prec, (double)v);
		x = atoi(strchr(e, 'e') + 1);
		dig[0] = e[0];
		memcpy(dig + 1, e + 2, (size_t)prec);
		dig[prec + 1] = '\0';
		zeros = nines = 1;
		for (int i = m; i <= prec; i++) {
			zeros &= dig[i] == '0';
			nines &= dig[i] == '9';
		}
		if (prec == 120 || !(zeros || nines))
			return x;
		prec = 120;
	}
}

/* The m-digit decimal just below or at positive @v (@up = 0) or the one
 * just above or at it (@up = 1) as text "d.ddde<x>". */
static void cut(float v, int m, int up, char *out, size_t cap)
{
	char dig[128];
	int x = expand(v, m, dig), carry, exact = 1;

	for (int i = m; dig[i]; i++)
		exact &= dig[i] == '0';
	dig[m] = '\0';
	if (up && !exact) {
		carry = 1;
		for (int i = m - 1; i >= 0 && carry; i--) {
			if (dig[i] == '9') {
				dig[i] = '0';
			} else {
				dig[i]++;
				carry = 0;
			}
		}
		if (carry) { /* 99.9 -> 100 */
			memmove(dig + 1, dig, (size_t)m);
			dig[0] = '1';
			dig[m] = '\0';
			x++;
		}
	}
	snprintf(out, cap, "%c.%se%d", dig[0], dig + 1, x);
}

static long n_shorter; /* floats where the reference is not the shortest */

/* Check srv_buf_float(v) against the oracle and the reference; returns
 * NULL or what is wrong (in @why). */
static const char *check_float(float v, char *why, size_t cap)
{
	struct srv_buf b = SRV_BUF_INIT;
	char ref[32], got[40], dig[40], cand[200], want[200];
	float a = fabsf(v);
	int n, x, rn, rx;

	srv_buf_float(&b, v);
	if (b.oom || b.len >= sizeof(got)) {
		srv_buf_release(&b);
		return "out of memory or too long";
	}
	memcpy(got, b.p, b.len + 1);
	srv_buf_release(&b);
	float_ref_printf(ref, v);

	/* reads back, bit for bit */
	if (to_bits(strtof(got, NULL)) != to_bits(v)) {
		snprintf(why, cap, "%s does not read back as %a", got, (double)v);
		return why;
	}
	if ((got[0] == '-') != (v < 0 || (v == 0 && signbit(v)))) {
		snprintf(why, cap, "%s: wrong sign for %a", got, (double)v);
		return why;
	}
	if (a == 0) {
		if (strcmp(got, ref) != 0)
			goto differ;
		return NULL;
	}
	n = sig_digits(got, dig, &x);
	/* shortest: neither (n-1)-digit neighbour reads back */
	for (int up = 0; n > 1 && up < 2; up++) {
		cut(a, n - 1, up, cand, sizeof(cand));
		if (strtof(cand, NULL) == a) {
			snprintf(why, cap, "%s for %a: %s is shorter and reads back", got,
				 (double)v, cand);
			return why;
		}
	}
	/* closest of the n-digit ones that read back */
	snprintf(want, sizeof(want), "%.*g", n, (double)a);
	if (strtof(want, NULL) != a) {
		char lo[200], hi[200], wd[40], ld[40];
		int wx, lx;
		cut(a, n, 0, lo, sizeof(lo));
		cut(a, n, 1, hi, sizeof(hi));
		sig_digits(want, wd, &wx);
		sig_digits(lo, ld, &lx);
		/* the other neighbour */
		snprintf(want, sizeof(want), "%s", strcmp(wd, ld) == 0 && wx == lx ? hi : lo);
	}
	/* in printf's %.Ng layout */
	snprintf(cand, sizeof(cand), "%s%.*g", v < 0 ? "-" : "", n, strtod(want, NULL));
	if (strcmp(got, cand) != 0) {
		snprintf(why, cap, "%s for %a: the closest %d-digit decimal is %s", got, (double)v,
			 n, cand);
		return why;
	}
	/* the reference: the same text, or longer */
	if (strcmp(got, ref) == 0)
		return NULL;
	rn = sig_digits(ref, cand, &rx);
	if (rn > n) {
		n_shorter++;
		return NULL;
	}
differ:
	snprintf(why, cap, "%a: %s, the reference says %s", (double)v, got, ref);
	return why;
}

#define CHECK_FLOAT(v)                                                                             \
	do {                                                                                       \
		const char *w_ = check_float((v), why, sizeof(why));                               \
		if (w_) /* not ck_assert: that writes to Check's pipe every time */                \
			ck_abort_msg("%s", w_);                                                    \
	} while (0)

START_TEST(test_float_known)
{
	/* Hand-checked texts: printf's %g layout, shortest digits. */
	static const struct {
		float v;
		const char *text;
	} cases[] = {
	    {0.0f, "0"},
	    {-0.0f, "-0"},
	    {1.0f, "1"},
	    {-2.5f, "-2.5"},
	    {0.1f, "0.1"},
	    {1.0f / 3, "0.33333334"},
	    {2.0f / 3, "0.6666667"},
	    {0.0001f, "0.0001"},
	    {0.00001f, "1e-05"},
	    {123456.0f, "123456"},
	    {1234567.0f, "1234567"},
	    {100000.0f, "1e+05"},
	    {16777216.0f, "16777216"},
	    {33554432.0f, "33554432"},
	    {1e10f, "1e+10"},
	    {FLT_MAX, "3.4028235e+38"},
	    {-FLT_MAX, "-3.4028235e+38"},
	    {FLT_MIN, "1.1754944e-38"},
	    {0x1p-149f, "1e-45"},	       /* smallest subnormal: 1.4e-45 */
	    {0x2p-149f, "3e-45"},	       /* 2.8e-45 */
	    {0x3p-149f, "4e-45"},	       /* 4.2e-45 */
	    {0x7fffffp-149f, "1.1754942e-38"}, /* largest subnormal */
	    {0x1p-126f * 0.5f, "5.877472e-39"},
	    {3.0e-39f, "3e-39"},
	    {0.3f, "0.3"},
	    /* Powers of two where the reference needs 9 digits: %.8g rounds
	     * to the narrow side (half as wide below a power of two) and
	     * fails, but the 8-digit neighbour above reads back.  2^87 =
	     * 154742504910672534362390528: 1.5474250e26 is 4.9e18 below, past
	     * the 2^62 = 4.6e18 half-gap; 1.5474251e26 is 5.1e18 above,
	     * inside the 2^63 half-gap. */
	    {0x1p87f, "1.5474251e+26"},
	    /* exact ties between two shortest candidates: the even one */
	    {3.66015625f, "3.6601562"},
	    {0x1p-12f, "0.00024414062"},
	    {0x1p90f, "1.2379401e+27"},
	    {0x1p-96f, "1.2621775e-29"},
	};
	char why[512];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct srv_buf b = SRV_BUF_INIT;
		srv_buf_float(&b, cases[i].v);
		ck_assert_str_eq(b.p, cases[i].text);
		srv_buf_release(&b);
		CHECK_FLOAT(cases[i].v);
	}
}
END_TEST

/* Not JSON numbers: written as null (callers only pass finite floats). */
START_TEST(test_float_nonfinite)
{
	const float v[] = {INFINITY, -INFINITY, NAN, from_bits(0x7fc00001), from_bits(0xff800001)};
	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		struct srv_buf b = SRV_BUF_INIT;
		srv_buf_puts(&b, "[");
		srv_buf_float(&b, v[i]);
		srv_buf_puts(&b, "]");
		ck_assert_str_eq(b.p, "[null]");
		srv_buf_release(&b);
	}
}
END_TEST

/* Appends after text already in the buffer, and across its growth. */
START_TEST(test_float_appends)
{
	struct srv_buf b = SRV_BUF_INIT;
	char want[8192];
	size_t off = 0;

	for (int i = 0; i < 500; i++) {
		float v = (float)i * 0.37f - 20.0f;
		char r[32];
		float_ref_printf(r, v);
		srv_buf_float(&b, v);
		srv_buf_append(&b, ",", 1);
		off += (size_t)snprintf(want + off, sizeof(want) - off, "%s,", r);
		ck_assert_uint_eq(b.len, off);
		ck_assert_uint_eq(strlen(b.p), b.len);
	}
	ck_assert_str_eq(b.p, want);
	srv_buf_release(&b);
}
END_TEST

/* Every 151st float in [1e-3, 1e3) (1.1 M, where distances live), in two
 * halves, the second negated. */
START_TEST(test_float_sweep_decades)
{
	uint32_t lo = to_bits(1e-3f), hi = to_bits(1e3f), mid = lo + (hi - lo) / 2;
	char why[512];

	for (uint32_t u = _i ? mid : lo; u < (_i ? hi : mid); u += 151)
		CHECK_FLOAT(_i ? -from_bits(u) : from_bits(u));
}
END_TEST

/* Around every power of two (the narrow interval below it) and ten, and
 * the ends of every binade, in every exponent. */
START_TEST(test_float_edges)
{
	char why[512];

	for (uint32_t e = 0; e < 255; e++) {
		uint32_t base = e << 23;
		for (uint32_t k = 0; k < 300; k++) {
			CHECK_FLOAT(from_bits(base + k));
			CHECK_FLOAT(from_bits(base + 0x7fffff - k));
		}
	}
	for (int p = -45; p <= 38; p++) {
		char s[16];
		float t;
		snprintf(s, sizeof(s), "1e%d", p);
		t = strtof(s, NULL);
		for (int k = -300; k <= 300; k++) {
			int64_t u = (int64_t)to_bits(t) + k;
			if (u > 0 && u < 0x7f800000)
				CHECK_FLOAT(from_bits((uint32_t)u));
		}
	}
	CHECK_FLOAT(FLT_MAX);
	CHECK_FLOAT(FLT_MIN);
	CHECK_FLOAT(FLT_TRUE_MIN);
	CHECK_FLOAT(-FLT_TRUE_MIN);
}
END_TEST

/* Subnormals: every 97th, plus all of the first and last 5000. */
START_TEST(test_float_subnormals)
{
	char why[512];

	for (uint32_t u = 1; u < 0x800000; u += 97)
		CHECK_FLOAT(from_bits(u));
	for (uint32_t u = 1; u < 5000; u++) {
		CHECK_FLOAT(from_bits(u));
		CHECK_FLOAT(from_bits(0x800000 - u));
	}
}
END_TEST

/* Random bit patterns over the whole range (xorshift, fixed seed). */
START_TEST(test_float_random)
{
	uint64_t s = 0x9e3779b97f4a7c15ull;
	char why[512];

	for (int i = 0; i < 400000; i++) {
		uint32_t u;
		s ^= s << 13;
		s ^= s >> 7;
		s ^= s << 17;
		u = (uint32_t)(s >> 17);
		if ((u & 0x7f800000) == 0x7f800000)
			continue;
		CHECK_FLOAT(from_bits(u));
	}
}
END_TEST

/* SEMID_FLOAT_STRIDE: an offline sweep of every N-th positive float. */
START_TEST(test_float_stride)
{
	const char *env = getenv("SEMID_FLOAT_STRIDE");
	uint32_t stride = env ? (uint32_t)strtoul(env, NULL, 10) : 0;
	char why[512];

	if (!stride)
		CHECK_SKIP("SEMID_FLOAT_STRIDE is not set (an offline sweep)");
	for (uint32_t u = 1; u < 0x7f800000; u += stride)
		CHECK_FLOAT(from_bits(u));
	fprintf(stderr, "check_buf: stride %u done, %ld floats where the reference is longer\n",
		stride, n_shorter);
}
END_TEST

/* srv_buf_int writes what printf's %lld writes. */
START_TEST(test_int)
{
	long long v[200];
	size_t n = 0;
	struct srv_buf b = SRV_BUF_INIT;
	char want[64 * 200];
	size_t off = 0;

	v[n++] = 0;
	v[n++] = LLONG_MAX;
	v[n++] = LLONG_MIN;
	v[n++] = LLONG_MIN + 1;
	v[n++] = INT32_MIN;
	v[n++] = UINT32_MAX; /* the 32-bit path's last value */
	v[n++] = (long long)UINT32_MAX + 1;
	v[n++] = -(long long)UINT32_MAX;
	v[n++] = -(long long)UINT32_MAX - 1;
	for (long long p = 1; p <= LLONG_MAX / 10; p *= 10) { /* 10^k - 1, 10^k, their negatives */
		v[n++] = p - 1;
		v[n++] = p;
		v[n++] = -p;
		v[n++] = 1 - p;
	}
	ck_assert_uint_le(n, 200);
	for (size_t i = 0; i < n; i++) {
		srv_buf_int(&b, v[i]);
		srv_buf_append(&b, " ", 1);
		off += (size_t)snprintf(want + off, sizeof(want) - off, "%lld ", v[i]);
	}
	ck_assert_str_eq(b.p, want);
	ck_assert_uint_eq(b.len, off);
	srv_buf_release(&b);
}
END_TEST

/* srv_buf_append (inline when the bytes fit) and srv_buf_puts: chunks of
 * every size, including exactly the room left and one byte less (the
 * fast path's edge) and one more; the text and its NUL stay right. */
START_TEST(test_append)
{
	struct srv_buf b = SRV_BUF_INIT;
	char *want = malloc(1 << 20), chunk[4096];
	size_t off = 0;

	ck_assert_ptr_nonnull(want);
	for (size_t i = 0; i < sizeof(chunk); i++)
		chunk[i] = (char)('a' + i % 26);
	srv_buf_append(&b, chunk, 0); /* nothing yet: still appends nothing */
	ck_assert_uint_eq(b.len, 0);
	for (int step = 0; step < 600; step++) {
		size_t room = b.cap > b.len ? b.cap - b.len : 0, n;
		switch (step % 4) {
		case 0:
			n = room ? room - 1 : 0; /* fits with its NUL */
			break;
		case 1:
			n = room; /* one byte short of room for the NUL */
			break;
		case 2:
			n = room + 1;
			break;
		default:
			n = (size_t)(step * 37 % 300);
		}
		if (n + 26 > sizeof(chunk) || off + n + 8 > (1 << 20))
			n = (size_t)step % 7;
		srv_buf_append(&b, chunk + step % 26, n);
		memcpy(want + off, chunk + step % 26, n);
		off += n;
		srv_buf_puts(&b, "|");
		want[off++] = '|';
		if (b.oom || b.len != off || b.p[b.len] != '\0' || memcmp(b.p, want, off) != 0)
			ck_abort_msg("step %d: %zu bytes appended, len %zu, want %zu", step, n,
				     b.len, off);
	}
	srv_buf_release(&b);
	free(want);
}
END_TEST

/* srv_buf_reserve: room for exactly that many bytes and the NUL, so that
 * appending them moves nothing; a reserve that fits already is a no-op; an
 * impossible one sets oom and later appends are dropped. */
START_TEST(test_reserve)
{
	struct srv_buf b = SRV_BUF_INIT;
	char chunk[1000];
	const char *p;

	memset(chunk, 'x', sizeof(chunk));
	srv_buf_reserve(&b, 351180);
	ck_assert(!b.oom);
	ck_assert_uint_eq(b.cap, 351181);
	p = b.p;
	for (int i = 0; i < 351; i++)
		srv_buf_append(&b, chunk, sizeof(chunk));
	srv_buf_append(&b, chunk, 180);
	ck_assert_ptr_eq(b.p, p); /* filled to the last byte without a move */
	ck_assert_uint_eq(b.len, 351180);
	ck_assert_int_eq(b.p[b.len], '\0');
	srv_buf_reserve(&b, 0); /* the NUL's byte is there: nothing to do */
	ck_assert_ptr_eq(b.p, p);
	ck_assert_uint_eq(b.cap, 351181);
	srv_buf_append(&b, "y", 1); /* past the reserve: grows as before */
	ck_assert(!b.oom);
	ck_assert_uint_eq(b.len, 351181);
	ck_assert_int_eq(b.p[351180], 'y');
	srv_buf_reserve(&b, (size_t)-1); /* no wrap-around to "fits" */
	ck_assert(b.oom);
	srv_buf_append(&b, "z", 1);
	ck_assert_uint_eq(b.len, 351181);
	srv_buf_release(&b);
}
END_TEST

static void add_tests(TCase *tc)
{
	tcase_add_test(tc, test_float_known);
	tcase_add_test(tc, test_float_nonfinite);
	tcase_add_test(tc, test_float_appends);
	tcase_add_loop_test(tc, test_float_sweep_decades, 0, 2);
	tcase_add_test(tc, test_float_edges);
	tcase_add_test(tc, test_float_subnormals);
	tcase_add_test(tc, test_float_random);
	tcase_add_test(tc, test_float_stride);
	tcase_add_test(tc, test_int);
	tcase_add_test(tc, test_append);
	tcase_add_test(tc, test_reserve);
}

int main(void)
{
	return srv_check_run("buf", add_tests);
}
