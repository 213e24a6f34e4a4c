/* buf.c - growable text buffer; see buf.h. */
#include "buf.h"
#include "err.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Room for @extra more bytes and the NUL: doubling, or exactly that much
 * when @exact (a size known up front). */
static int grow(struct srv_buf *b, size_t extra, int exact)
{
	size_t need, cap;
	char *p;

	if (b->oom)
		return -1;
	if (extra > (size_t)-1 / 2 - b->len)
		goto oom;
	need = b->len + extra + 1;
	if (need <= b->cap)
		return 0;
	cap = exact ? need : b->cap ? b->cap : 256;
	while (cap < need)
		cap *= 2;
	p = realloc(b->p, cap);
	if (!p)
		goto oom;
	b->p = p;
	b->cap = cap;
	return 0;
oom:
	b->oom = 1;
	return -1;
}

void srv_buf_reserve(struct srv_buf *b, size_t n)
{
	(void)grow(b, n, 1);
}

void srv__buf_append_grow(struct srv_buf *b, const char *s, size_t n)
{
	if (grow(b, n, 0))
		return;
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
}

void srv_buf_printf(struct srv_buf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0 || grow(b, (size_t)n, 0))
		return;
	va_start(ap, fmt);
	vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
}

void srv_buf_json_str(struct srv_buf *b, const char *s, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	size_t i, run = 0;

	srv_buf_append(b, "\"", 1);
	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		char esc[6] = {'\\', 'u', '0', '0', 0, 0};
		if (c >= 0x80) { /* valid UTF-8 passes, anything else becomes U+FFFD */
			size_t u = sid_utf8_len((const unsigned char *)s + i, n - i);
			if (u) {
				i += u - 1;
				continue;
			}
			srv_buf_append(b, s + run, i - run);
			srv_buf_append(b, "\\ufffd", 6);
			run = i + 1;
			continue;
		}
		if (c >= 0x20 && c != '"' && c != '\\')
			continue;
		srv_buf_append(b, s + run, i - run);
		run = i + 1;
		if (c == '"' || c == '\\') {
			esc[1] = (char)c;
			srv_buf_append(b, esc, 2);
		} else if (c == '\n') {
			srv_buf_append(b, "\\n", 2);
		} else {
			esc[4] = hex[c >> 4];
			esc[5] = hex[c & 15];
			srv_buf_append(b, esc, 6);
		}
	}
	srv_buf_append(b, s + run, n - run);
	srv_buf_append(b, "\"", 1);
}

/*
 * Shortest round-trip float32 -> decimal.
 *
 * A float v = m2 * 2^e2 reads back from any decimal inside its rounding
 * interval (halfway to each neighbour; the ends included when m2 is even,
 * as strtof rounds ties to even).  Everything is scaled by 4 so the
 * interval ends are integers too: v = mv * 2^e2, ends mm * 2^e2 and
 * mp * 2^e2.  The three are then scaled by a power of ten 10^-e10 chosen so
 * that v lands in [mv, 10 mv): the interval is then at least 3 units wide,
 * so it holds integers, and the shortest decimal in it is the integer range
 * [lo, hi]'s member with the most trailing zeros.  The scaling is exact
 * (192-bit products with 5^k, or a 128-bit division by 5^q), so there is no
 * error analysis to trust: floor and the position of the dropped fraction
 * (zero, below, at or above one half) are known exactly.
 */

/* 5^k, k = 0..55 (the largest that fits in 128 bits), filled once. */
typedef unsigned __int128 u128;
static u128 pow5_tab[56];
static pthread_once_t pow5_once = PTHREAD_ONCE_INIT;

static void pow5_fill(void)
{
	pow5_tab[0] = 1;
	for (int k = 1; k < 56; k++)
		pow5_tab[k] = pow5_tab[k - 1] * 5;
}

static const u128 *pow5_table(void)
{
	pthread_once(&pow5_once, pow5_fill);
	return pow5_tab;
}

enum frac { FRAC_ZERO, FRAC_BELOW_HALF, FRAC_HALF, FRAC_ABOVE_HALF };

/* floor(x * 5^k / 2^s) for x < 2^27, 5^k < 2^128, s <= 127, and where the
 * dropped fraction lies; the quotient must fit in 32 bits. */
static inline __attribute__((always_inline)) uint32_t mul_pow5_shr(uint32_t x, u128 p5, int s,
								   enum frac *f)
{
	u128 lo = (u128)x * (uint64_t)p5, hi = (u128)x * (uint64_t)(p5 >> 64);
	u128 mid = (lo >> 64) + (uint64_t)hi;
	uint64_t x0 = (uint64_t)lo, x1 = (uint64_t)mid;
	uint64_t x2 = (uint64_t)(hi >> 64) + (uint64_t)(mid >> 64);
	u128 top; /* the product >> 64 */
	uint64_t q, half, rest;

	top = (u128)x2 << 64 | x1;
	if (s == 0) {
		*f = FRAC_ZERO;
		return (uint32_t)x0;
	}
	if (s < 64) {
		/* the quotient fits in 32 bits: x2 = 0, x1 < 2^(s - 32) */
		q = x0 >> s | x1 << (64 - s);
		half = x0 >> (s - 1) & 1;
		rest = x0 & ((1ull << (s - 1)) - 1);
	} else if (s == 64) {
		q = x1;
		half = x0 >> 63;
		rest = x0 & ((1ull << 63) - 1);
	} else {
		int t = s - 64; /* 1..63 */
		q = (uint64_t)(top >> t);
		half = (uint64_t)(top >> (t - 1)) & 1;
		rest = x0 | ((uint64_t)top & ((1ull << (t - 1)) - 1));
	}
	*f = half ? (rest ? FRAC_ABOVE_HALF : FRAC_HALF) : (rest ? FRAC_BELOW_HALF : FRAC_ZERO);
	return (uint32_t)q;
}

/* floor(x * 2^sh / 5^q) for x < 2^27, sh + 27 <= 128, and where the dropped
 * fraction lies; the quotient must fit in 32 bits. */
static uint32_t shl_div_pow5(uint32_t x, int sh, u128 p5, enum frac *f)
{
	u128 n = (u128)x << sh, q = n / p5, r = n - q * p5;
	*f = r == 0	   ? FRAC_ZERO
	     : r < p5 - r  ? FRAC_BELOW_HALF
	     : r == p5 - r ? FRAC_HALF
			   : FRAC_ABOVE_HALF;
	return (uint32_t)q;
}

/* The shortest decimal digits * 10^exp10 that reads back as the positive
 * finite float with these bits; of several, the closest to it (ties to an
 * even last digit).  @digits has no trailing zeros. */
static void float_shortest(uint32_t bits, uint32_t *digits, int *exp10)
{
	const u128 *p5 = pow5_table();
	uint32_t frac = bits & 0x7fffff, bexp = bits >> 23 & 0xff;
	uint32_t m2 = bexp ? frac | 1u << 23 : frac;
	int e2 = (bexp ? (int)bexp : 1) - 127 - 23 - 2, e10, j = 0;
	int even = !(m2 & 1);
	/* the interval below a power of two is half as wide (not for the
	 * smallest normal: its lower neighbour is a subnormal, as far apart) */
	uint32_t mv = 4 * m2, mp = mv + 2, mm = mv - 1 - (frac != 0 || bexp <= 1);
	uint32_t vm, vr, vp, lo, hi, d, last = 0;
	enum frac fm, fr, fp;
	int below_nonzero = 0, up;

	if (e2 < 0) {
		/* k = ceil(-e2 log10 2): 1 <= 10^k 2^e2 < 10 (never an integer) */
		int k = (int)((uint32_t)-e2 * 78913u >> 18) + 1, s = -e2 - k;
		vm = mul_pow5_shr(mm, p5[k], s, &fm);
		vr = mul_pow5_shr(mv, p5[k], s, &fr);
		vp = mul_pow5_shr(mp, p5[k], s, &fp);
		e10 = -k;
	} else {
		/* q = floor(e2 log10 2): 1 <= 2^e2 / 10^q < 10 */
		int q = (int)((uint32_t)e2 * 78913u >> 18);
		vm = shl_div_pow5(mm, e2 - q, p5[q], &fm);
		vr = shl_div_pow5(mv, e2 - q, p5[q], &fr);
		vp = shl_div_pow5(mp, e2 - q, p5[q], &fp);
		e10 = q;
	}
	/* The integers that read back: [lo, hi]. */
	lo = vm + !(fm == FRAC_ZERO && even);
	hi = vp - (fp == FRAC_ZERO && !even);
	/* Drop digits while the interval still holds a multiple of 10^(j+1);
	 * d is v's digits above 10^j, @last the highest dropped digit. */
	d = vr;
	while (j < 9 && hi / 10 >= (lo + 9) / 10) {
		below_nonzero |= last != 0;
		last = d % 10;
		d /= 10;
		lo = (lo + 9) / 10;
		hi /= 10;
		j++;
	}
	/* Round v to the nearest multiple of 10^j (ties to even), then into
	 * [lo, hi]: the nearest candidate that reads back. */
	if (j == 0) {
		up = fr == FRAC_ABOVE_HALF || (fr == FRAC_HALF && (d & 1));
	} else {
		int rest = below_nonzero || fr != FRAC_ZERO;
		up = last > 5 || (last == 5 && (rest || (d & 1)));
	}
	d += (uint32_t)up;
	if (d < lo)
		d = lo;
	if (d > hi)
		d = hi;
	*digits = d;
	*exp10 = e10 + j;
}

/* "00", "01", .. "99": decimal digits two at a time. */
static const char pairs[] = "00010203040506070809101112131415161718192021222324"
			    "25262728293031323334353637383940414243444546474849"
			    "50515253545556575859606162636465666768697071727374"
			    "75767778798081828384858687888990919293949596979899";

/* @d (< 10^10) as ten digits, zero-padded, into @dig; returns how many
 * are significant.  Three independent halves of two digits per lookup:
 * short dependency chains, no data-dependent branch. */
static int digits10(uint32_t d, char dig[10])
{
	uint32_t a = d / 100000000, b = d % 100000000, c = b / 10000, e = b % 10000;

	memcpy(dig, pairs + 2 * a, 2);
	memcpy(dig + 2, pairs + 2 * (c / 100), 2);
	memcpy(dig + 4, pairs + 2 * (c % 100), 2);
	memcpy(dig + 6, pairs + 2 * (e / 100), 2);
	memcpy(dig + 8, pairs + 2 * (e % 100), 2);
	return 1 + (d >= 10) + (d >= 100) + (d >= 1000) + (d >= 10000) + (d >= 100000) +
	       (d >= 1000000) + (d >= 10000000) + (d >= 100000000) + (d >= 1000000000);
}

void srv_buf_float(struct srv_buf *b, float v)
{
	uint32_t bits, d;
	char all[10], *dig, *o;
	int n, e10, x;

	memcpy(&bits, &v, sizeof(bits));
	if ((bits & 0x7f800000) == 0x7f800000) { /* callers never pass one; stay JSON */
		srv_buf_append(b, "null", 4);
		return;
	}
	if (grow(b, 24, 0)) /* "-1.2345678e-45": at most 15 */
		return;
	o = b->p + b->len;
	if (bits >> 31)
		*o++ = '-';
	if (!(bits & 0x7fffffff)) {
		*o++ = '0';
		goto done;
	}
	float_shortest(bits & 0x7fffffff, &d, &e10);
	n = digits10(d, all);
	dig = all + 10 - n;
	x = e10 + n - 1; /* v = d.ddd * 10^x */
	/* printf's %.Ng layout for N = n digits (what this function always wrote) */
	if (x < -4 || x >= n) {
		*o++ = dig[0];
		if (n > 1) {
			*o++ = '.';
			memcpy(o, dig + 1, (size_t)n - 1);
			o += n - 1;
		}
		*o++ = 'e';
		*o++ = x < 0 ? '-' : '+';
		x = x < 0 ? -x : x;
		*o++ = (char)('0' + x / 10);
		*o++ = (char)('0' + x % 10);
	} else if (x < 0) {
		memcpy(o, "0.0000", 6);
		o += 1 - x;
		memcpy(o, dig, (size_t)n);
		o += n;
	} else {
		memcpy(o, dig, (size_t)x + 1);
		o += x + 1;
		if (n > x + 1) {
			*o++ = '.';
			memcpy(o, dig + x + 1, (size_t)(n - x - 1));
			o += n - x - 1;
		}
	}
done:
	*o = '\0';
	b->len = (size_t)(o - b->p);
}

void srv_buf_int(struct srv_buf *b, long long v)
{
	unsigned long long u = v < 0 ? 0 - (unsigned long long)v : (unsigned long long)v;
	char tmp[20], *o;
	int n = 0;

	if (grow(b, 21, 0))
		return;
	o = b->p + b->len;
	if (v < 0)
		*o++ = '-';
	if (u < 10000) { /* codes, counts: most calls */
		memcpy(tmp, pairs + 2 * (u / 100), 2);
		memcpy(tmp + 2, pairs + 2 * (u % 100), 2);
		n = 1 + (u >= 10) + (u >= 100) + (u >= 1000);
		memcpy(o, tmp + 4 - n, (size_t)n);
		o += n;
	} else if (u <= UINT32_MAX) {
		n = digits10((uint32_t)u, tmp);
		memcpy(o, tmp + 10 - n, (size_t)n);
		o += n;
	} else {
		do
			tmp[n++] = (char)('0' + u % 10); /* reversed */
		while (u /= 10);
		while (n)
			*o++ = tmp[--n];
	}
	*o = '\0';
	b->len = (size_t)(o - b->p);
}

char *srv_buf_detach(struct srv_buf *b, size_t *len)
{
	char *p;
	if (b->oom) {
		srv_buf_release(b);
		return NULL;
	}
	if (!b->p && grow(b, 0, 0))
		return NULL;
	if (b->len == 0)
		/* grow answered 0, so cap >= len + 1 > 0 and p is allocated */
		/* NOLINTNEXTLINE(clang-analyzer-core.NullDereference) */
		b->p[0] = '\0';
	p = b->p;
	if (len)
		*len = b->len;
	b->p = NULL;
	b->len = b->cap = 0;
	return p;
}

void srv_buf_release(struct srv_buf *b)
{
	free(b->p);
	b->p = NULL;
	b->len = b->cap = 0;
	b->oom = 0;
}
