/*
 * mlp.c - deterministic panel GEMM with fused bias + activation; see mlp.h
 * for the layout and the fixed evaluation order every path follows.
 *
 * Three implementations of the same arithmetic, picked at run time: AVX-512
 * micro-kernels (a row-vectorised one, and an output-vectorised one for a
 * few rows), an AVX2+FMA micro-kernel, and portable C.  All compute each
 * element as the chain acc = fmaf(w[k], x[k], acc) in k order, so they agree
 * to the bit; fmaf in the portable build is the correctly rounded libm
 * function (slow without hardware FMA, but exact).
 *
 * Floating-point contraction: GCC's default -ffp-contract=fast may fuse a
 * separate multiply and add (intrinsics included) into one FMA, differently
 * in different functions.  Everything here that must agree across paths is
 * written so that no product that could be fused is inexact: chains use
 * explicit fma, and the only separate products feeding an add are x 2 or
 * x 2^n (exact), so fusing them cannot change a bit.  Keep it that way.
 */
#include "mlp.h"

#include <math.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define SID_HAVE_X86 1
#endif

#define SMALL_ROWS 4 /* up to this many rows, the output-vectorised kernel */

static int force_mode;

void sid__gemm_force(int mode)
{
	__atomic_store_n(&force_mode, mode, __ATOMIC_RELAXED);
}

/*
 * exp and erf for silu and gelu, written so that the scalar code below and
 * the AVX-512 code further down perform the same IEEE operations in the same
 * order (every multiply-add an explicit fma, no product ever added outside
 * one), so both give the same bits; both are within ~1 ulp of the true
 * function.  exp: Cephes-style range reduction and polynomial, argument
 * clamped to [-87, 88] (results stay normal).  erf: N. Juffa's float erf
 * (two branches split at |x| = 0.927734375, max error ~1 ulp).
 */
#define EXP_LO	  (-87.0f)
#define EXP_HI	  88.0f
#define LOG2E	  1.44269504088896341f
#define LN2_HI	  0.693359375f
#define LN2_LO	  (-2.12194440e-4f)
#define ERF_SPLIT 0.927734375f
/* polynomial coefficients, highest power first, shared by the three versions */
#define EXP_P0	   1.9875691500e-4f
#define EXP_P1	   1.3981999507e-3f
#define EXP_P2	   8.3334519073e-3f
#define EXP_P3	   4.1665795894e-2f
#define EXP_P4	   1.6666665459e-1f
#define EXP_P5	   5.0000001201e-1f
#define ERF_BIG0   (-1.72853470e-5f)
#define ERF_BIG1   3.83197126e-4f
#define ERF_BIG2   (-3.88396438e-3f)
#define ERF_BIG3   2.42546219e-2f
#define ERF_BIG4   (-1.06777877e-1f)
#define ERF_BIG5   (-6.34846687e-1f)
#define ERF_BIG6   (-1.28717512e-1f)
#define ERF_SMALL0 (-5.96761703e-4f)
#define ERF_SMALL1 4.99119423e-3f
#define ERF_SMALL2 (-2.67681349e-2f)
#define ERF_SMALL3 1.12819925e-1f
#define ERF_SMALL4 (-3.76125336e-1f)
#define ERF_SMALL5 1.28379166e-1f
#define TANH_P0	   (-5.70498872745e-3f)
#define TANH_P1	   2.06390887954e-2f
#define TANH_P2	   (-5.37397155531e-2f)
#define TANH_P3	   1.33314422036e-1f
#define TANH_P4	   (-3.33332819422e-1f)

static float exp_s(float x)
{
	x = fminf(fmaxf(x, EXP_LO), EXP_HI);
	float n = rintf(x * LOG2E);
	float r = fmaf(n, -LN2_HI, x);
	r = fmaf(n, -LN2_LO, r);
	float p = EXP_P0;
	p = fmaf(p, r, EXP_P1);
	p = fmaf(p, r, EXP_P2);
	p = fmaf(p, r, EXP_P3);
	p = fmaf(p, r, EXP_P4);
	p = fmaf(p, r, EXP_P5);
	float r2 = r * r;
	p = fmaf(p, r2, r);
	p = p + 1.0f;
	int32_t bits = ((int32_t)n + 127) << 23;
	float scale;
	memcpy(&scale, &bits, sizeof(scale));
	return p * scale;
}

static float erf_s(float a)
{
	float t = fabsf(a), s = a * a, r;

	if (t > ERF_SPLIT) {
		float u;
		r = fmaf(ERF_BIG0, t, ERF_BIG1);
		u = fmaf(ERF_BIG2, t, ERF_BIG3);
		r = fmaf(r, s, u);
		r = fmaf(r, t, ERF_BIG4);
		r = fmaf(r, t, ERF_BIG5);
		r = fmaf(r, t, ERF_BIG6);
		r = fmaf(r, t, -t);
		r = 1.0f - exp_s(r);
		return copysignf(r, a);
	}
	r = ERF_SMALL0;
	r = fmaf(r, s, ERF_SMALL1);
	r = fmaf(r, s, ERF_SMALL2);
	r = fmaf(r, s, ERF_SMALL3);
	r = fmaf(r, s, ERF_SMALL4);
	r = fmaf(r, s, ERF_SMALL5);
	return fmaf(r, a, a);
}

/* tanh: Cephes-style odd polynomial below 0.625, 1 - 2 / (exp(2|x|) + 1)
 * above (max error ~2 ulp). */
#define TANH_SPLIT 0.625f

static float tanh_s(float x)
{
	float a = fabsf(x);

	if (!(a >= TANH_SPLIT)) { /* a NaN too: it stays one (not the big branch's 1) */
		float z = x * x, p = TANH_P0;
		p = fmaf(p, z, TANH_P1);
		p = fmaf(p, z, TANH_P2);
		p = fmaf(p, z, TANH_P3);
		p = fmaf(p, z, TANH_P4);
		float zx = z * x;
		return fmaf(p, zx, x);
	}
	float e = exp_s(2.0f * a);
	return copysignf(1.0f - 2.0f / (e + 1.0f), x);
}

/*
 * A pre-activation that is not finite comes only from an overflow (inputs
 * and weights are finite): a NaN from inf - inf, or +-inf itself.  Every
 * activation but the identity turns both into a NaN, which
 * sid_encode_overflow finds downstream: relu made -inf a 0 and tanh made
 * +-inf a +-1, and the row came out with sound-looking but wrong codes (a
 * layer of [-3e38, -3e38, 3e38, 3.4e38] summed to -inf on the way to 4e37).
 * Subtracting v - v does it: +0 for a finite v, which leaves every y as it
 * was to the bit (-0 - +0 is -0, where adding gave +0), and NaN otherwise;
 * the same in the three paths.
 */
static inline float poison_s(float y, float v)
{
	return y - (v - v);
}

/* relu: v > 0 ? v : 0, to the bit, in the three paths; a NaN or an inf
 * becomes a NaN (torch keeps a NaN too). */
static inline float relu_s(float v)
{
	return poison_s(v > 0.0f ? v : 0.0f, v);
}

__attribute__((noinline)) float sid__act_apply(enum sid_act act, float v)
{
	switch (act) {
	case SID_ACT_RELU:
		return relu_s(v);
	case SID_ACT_SILU: /* below -88, where exp_s clamps, -0 (torch: a subnormal at most) */
		return poison_s(v < -EXP_HI ? v * 0.0f : v * (1.0f / (1.0f + exp_s(-v))), v);
	case SID_ACT_GELU:
		return poison_s((0.5f * v) * (1.0f + erf_s(v * (float)M_SQRT1_2)), v);
	case SID_ACT_TANH:
		return poison_s(tanh_s(v), v);
	case SID_ACT_IDENTITY:
		break;
	}
	return v;
}

size_t sid__gemm_pack_size(int n, int k)
{
	size_t blocks = ((size_t)n + SID__NR - 1) / SID__NR;
	return blocks * SID__NR * (size_t)k;
}

void sid__gemm_pack(const float *w, int n, int k, float *wp)
{
	int blocks = (n + SID__NR - 1) / SID__NR;

	for (int jb = 0; jb < blocks; jb++) {
		float *dst = wp + (size_t)jb * SID__NR * k;
		const float *src[SID__NR];
		int nr = n - jb * SID__NR < SID__NR ? n - jb * SID__NR : SID__NR;
		for (int jj = 0; jj < nr; jj++)
			src[jj] = w + (size_t)(jb * SID__NR + jj) * k;
		for (int kk = 0; kk < k; kk++) {
			float *d = dst + (size_t)kk * SID__NR;
			for (int jj = 0; jj < nr; jj++)
				d[jj] = src[jj][kk];
			for (int jj = nr; jj < SID__NR; jj++)
				d[jj] = 0.0f;
		}
	}
}

/* Apply a non-trivial activation to an (nr features, 16 lanes) tile stored
 * with feature stride 16 (relu and identity are done in registers). */
static void act_tile(enum sid_act act, float *y, int nr)
{
	for (int i = 0; i < nr * SID__LANES; i++)
		y[i] = sid__act_apply(act, y[i]);
}

/* ---- portable C ---------------------------------------------------------- */

/*
 * One panel, features j0 .. j0+nr-1 (nr <= 4).  The weights come either from
 * a packed block (wp != NULL: (k, NR), columns jo..) or from rows of w.
 */
static void generic_tile(const float *w, const float *wp, int jo, const float *b, enum sid_act act,
			 int k, int j0, int nr, const float *x, float *y)
{
	float acc[4][SID__LANES];
	const float *wr[4];

	memset(acc, 0, sizeof(acc));
	for (int jj = 0; jj < 4; jj++)
		wr[jj] = w + (size_t)(j0 + (jj < nr ? jj : 0)) * k;
	for (int kk = 0; kk < k; kk++) {
		const float *xv = x + (size_t)kk * SID__LANES;
		for (int jj = 0; jj < 4; jj++) {
			float wv = wp ? wp[(size_t)kk * SID__NR + jo + jj] : wr[jj][kk];
			for (int l = 0; l < SID__LANES; l++)
				acc[jj][l] = fmaf(wv, xv[l], acc[jj][l]);
		}
	}
	for (int jj = 0; jj < nr; jj++) {
		float bv = b ? b[j0 + jj] : 0.0f;
		float *yo = y + (size_t)(j0 + jj) * SID__LANES;
		for (int l = 0; l < SID__LANES; l++) {
			float v = acc[jj][l] + bv;
			yo[l] = act == SID_ACT_RELU ? relu_s(v) : v;
		}
		if (act != SID_ACT_RELU && act != SID_ACT_IDENTITY)
			act_tile(act, yo, 1);
	}
}

static void gemm_generic(const float *w, const float *wp, const float *b, enum sid_act act, int n,
			 int k, const float *x, size_t P, float *y)
{
	for (int j0 = 0; j0 < n; j0 += 4) {
		int nr = n - j0 < 4 ? n - j0 : 4;
		const float *blk = wp ? wp + (size_t)(j0 / SID__NR) * SID__NR * k : NULL;
		for (size_t p = 0; p < P; p++)
			generic_tile(w, blk, j0 % SID__NR, b, act, k, j0, nr,
				     x + p * (size_t)k * SID__LANES,
				     y + p * (size_t)n * SID__LANES);
	}
}

/* ---- AVX-512 ------------------------------------------------------------- */

#ifdef SID_HAVE_X86
#define AVX512 __attribute__((target("avx512f")))

/* The AVX-512 mirrors of exp_s, erf_s and sid__act_apply (see above). */
static inline __attribute__((always_inline)) AVX512 __m512 exp_v(__m512 x)
{
	x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(EXP_LO)), _mm512_set1_ps(EXP_HI));
	__m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(LOG2E)),
					_MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
	__m512 r = _mm512_fmadd_ps(n, _mm512_set1_ps(-LN2_HI), x);
	r = _mm512_fmadd_ps(n, _mm512_set1_ps(-LN2_LO), r);
	__m512 p = _mm512_set1_ps(EXP_P0);
	p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(EXP_P1));
	p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(EXP_P2));
	p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(EXP_P3));
	p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(EXP_P4));
	p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(EXP_P5));
	__m512 r2 = _mm512_mul_ps(r, r);
	p = _mm512_fmadd_ps(p, r2, r);
	p = _mm512_add_ps(p, _mm512_set1_ps(1.0f));
	__m512i bits =
	    _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
	return _mm512_mul_ps(p, _mm512_castsi512_ps(bits));
}

static inline __attribute__((always_inline)) AVX512 __m512 erf_v(__m512 a)
{
	const __m512i sign = _mm512_set1_epi32((int)0x80000000u);
	__m512 t = _mm512_castsi512_ps(_mm512_andnot_si512(sign, _mm512_castps_si512(a)));
	__m512 s = _mm512_mul_ps(a, a);
	/* |a| > split */
	__m512 r = _mm512_fmadd_ps(_mm512_set1_ps(ERF_BIG0), t, _mm512_set1_ps(ERF_BIG1));
	__m512 u = _mm512_fmadd_ps(_mm512_set1_ps(ERF_BIG2), t, _mm512_set1_ps(ERF_BIG3));
	r = _mm512_fmadd_ps(r, s, u);
	r = _mm512_fmadd_ps(r, t, _mm512_set1_ps(ERF_BIG4));
	r = _mm512_fmadd_ps(r, t, _mm512_set1_ps(ERF_BIG5));
	r = _mm512_fmadd_ps(r, t, _mm512_set1_ps(ERF_BIG6));
	r = _mm512_fmadd_ps(r, t, _mm512_sub_ps(_mm512_setzero_ps(), t));
	r = _mm512_sub_ps(_mm512_set1_ps(1.0f), exp_v(r));
	r = _mm512_castsi512_ps(_mm512_or_si512(_mm512_andnot_si512(sign, _mm512_castps_si512(r)),
						_mm512_and_si512(sign, _mm512_castps_si512(a))));
	/* |a| <= split */
	__m512 q = _mm512_set1_ps(ERF_SMALL0);
	q = _mm512_fmadd_ps(q, s, _mm512_set1_ps(ERF_SMALL1));
	q = _mm512_fmadd_ps(q, s, _mm512_set1_ps(ERF_SMALL2));
	q = _mm512_fmadd_ps(q, s, _mm512_set1_ps(ERF_SMALL3));
	q = _mm512_fmadd_ps(q, s, _mm512_set1_ps(ERF_SMALL4));
	q = _mm512_fmadd_ps(q, s, _mm512_set1_ps(ERF_SMALL5));
	q = _mm512_fmadd_ps(q, a, a);
	__mmask16 big = _mm512_cmp_ps_mask(t, _mm512_set1_ps(ERF_SPLIT), _CMP_GT_OQ);
	return _mm512_mask_mov_ps(q, big, r);
}

static inline __attribute__((always_inline)) AVX512 __m512 tanh_v(__m512 x)
{
	const __m512i sign = _mm512_set1_epi32((int)0x80000000u);
	const __m512 one = _mm512_set1_ps(1.0f), two = _mm512_set1_ps(2.0f);
	__m512 a = _mm512_castsi512_ps(_mm512_andnot_si512(sign, _mm512_castps_si512(x)));
	__m512 z = _mm512_mul_ps(x, x), p = _mm512_set1_ps(TANH_P0);
	p = _mm512_fmadd_ps(p, z, _mm512_set1_ps(TANH_P1));
	p = _mm512_fmadd_ps(p, z, _mm512_set1_ps(TANH_P2));
	p = _mm512_fmadd_ps(p, z, _mm512_set1_ps(TANH_P3));
	p = _mm512_fmadd_ps(p, z, _mm512_set1_ps(TANH_P4));
	__m512 small = _mm512_fmadd_ps(p, _mm512_mul_ps(z, x), x);
	__m512 e = exp_v(_mm512_mul_ps(two, a));
	__m512 big = _mm512_sub_ps(one, _mm512_div_ps(two, _mm512_add_ps(e, one)));
	big =
	    _mm512_castsi512_ps(_mm512_or_si512(_mm512_andnot_si512(sign, _mm512_castps_si512(big)),
						_mm512_and_si512(sign, _mm512_castps_si512(x))));
	__mmask16 lt = _mm512_cmp_ps_mask(a, _mm512_set1_ps(TANH_SPLIT), _CMP_NGE_UQ);
	return _mm512_mask_mov_ps(big, lt, small);
}

/* Every activation in registers, as sid__act_apply does it.  Returns 1 when
 * it handled @act (0 would send it through the scalar function after the
 * store). */
static inline __attribute__((always_inline)) AVX512 int act_v(enum sid_act act, __m512 *v)
{
	const __m512 one = _mm512_set1_ps(1.0f);
	const __m512 poison = _mm512_sub_ps(*v, *v); /* poison_s */
	switch (act) {
	case SID_ACT_IDENTITY:
		return 1;
	case SID_ACT_RELU: /* relu_s (max_ps gives the 0 for a NaN; poison its NaN) */
		*v = _mm512_sub_ps(_mm512_max_ps(*v, _mm512_setzero_ps()), poison);
		return 1;
	case SID_ACT_SILU: {
		__m512 e = exp_v(_mm512_sub_ps(_mm512_setzero_ps(), *v));
		__mmask16 tiny = _mm512_cmp_ps_mask(*v, _mm512_set1_ps(-EXP_HI), _CMP_LT_OQ);
		*v =
		    _mm512_mask_mov_ps(_mm512_mul_ps(*v, _mm512_div_ps(one, _mm512_add_ps(one, e))),
				       tiny, _mm512_mul_ps(*v, _mm512_setzero_ps()));
		*v = _mm512_sub_ps(*v, poison);
		return 1;
	}
	case SID_ACT_GELU: {
		__m512 h = _mm512_mul_ps(_mm512_set1_ps(0.5f), *v);
		__m512 e = erf_v(_mm512_mul_ps(*v, _mm512_set1_ps((float)M_SQRT1_2)));
		*v = _mm512_sub_ps(_mm512_mul_ps(h, _mm512_add_ps(one, e)), poison);
		return 1;
	}
	case SID_ACT_TANH:
		*v = _mm512_sub_ps(tanh_v(*v), poison);
		return 1;
	}
	return 0;
}

/*
 * MV (1 or 2; 2 x NR accumulators fill the 32 zmm registers) panels (x, x + xs) times NR features
 * j0.. (only nr stored).  Weights from the packed block @wp ((k, NR)) or, when wp is NULL, from
 * rows of w (rows past n-1 clamped to j0: computed and discarded).
 */
static inline __attribute__((always_inline)) AVX512 void
mk512(const int MV, const float *w, const float *wp, const float *b, enum sid_act act, int n, int k,
      int j0, int nr, const float *x, size_t xs, float *y, size_t ys)
{
	__m512 acc[SID__NR][2];
	const float *wr[SID__NR];

#pragma GCC unroll 16
	for (int jj = 0; jj < SID__NR; jj++) {
#pragma GCC unroll 2
		for (int v = 0; v < MV; v++)
			acc[jj][v] = _mm512_setzero_ps();
		wr[jj] = w + (size_t)(j0 + (jj < nr ? jj : 0)) * k;
	}
	if (wp) {
		for (int kk = 0; kk < k; kk++) {
			__m512 xv[2];
			const float *wk = wp + (size_t)kk * SID__NR;
#pragma GCC unroll 2
			for (int v = 0; v < MV; v++)
				xv[v] = _mm512_loadu_ps(x + v * xs + (size_t)kk * SID__LANES);
#pragma GCC unroll 16
			for (int jj = 0; jj < SID__NR; jj++) {
				__m512 wv = _mm512_set1_ps(wk[jj]);
#pragma GCC unroll 2
				for (int v = 0; v < MV; v++)
					acc[jj][v] = _mm512_fmadd_ps(wv, xv[v], acc[jj][v]);
			}
		}
	} else {
		for (int kk = 0; kk < k; kk++) {
			__m512 xv[2];
#pragma GCC unroll 2
			for (int v = 0; v < MV; v++)
				xv[v] = _mm512_loadu_ps(x + v * xs + (size_t)kk * SID__LANES);
#pragma GCC unroll 16
			for (int jj = 0; jj < SID__NR; jj++) {
				__m512 wv = _mm512_set1_ps(wr[jj][kk]);
#pragma GCC unroll 2
				for (int v = 0; v < MV; v++)
					acc[jj][v] = _mm512_fmadd_ps(wv, xv[v], acc[jj][v]);
			}
		}
	}
	(void)n;
#pragma GCC unroll 16
	for (int jj = 0; jj < SID__NR; jj++) {
		if (jj >= nr)
			break;
		__m512 bv = _mm512_set1_ps(b ? b[j0 + jj] : 0.0f);
#pragma GCC unroll 2
		for (int v = 0; v < MV; v++) {
			__m512 r = _mm512_add_ps(acc[jj][v], bv);
			int done = act_v(act, &r);
			float *yo = y + v * ys + (size_t)(j0 + jj) * SID__LANES;
			_mm512_storeu_ps(yo, r);
			if (!done)
				act_tile(act, yo, 1);
		}
	}
}

#define MK_INST(MV)                                                                                \
	static AVX512 void mk512_##MV(const float *w, const float *wp, const float *b,             \
				      enum sid_act act, int n, int k, int j0, int nr,              \
				      const float *x, size_t xs, float *y, size_t ys)              \
	{                                                                                          \
		mk512(MV, w, wp, b, act, n, k, j0, nr, x, xs, y, ys);                              \
	}
MK_INST(1)
MK_INST(2)

/* In-register transpose of a 16x16 block: r[c] lane j <- r[j] lane c. */
static inline __attribute__((always_inline)) AVX512 void transpose16(__m512 r[16])
{
	__m512 t[16];

#pragma GCC unroll 8
	for (int i = 0; i < 8; i++) {
		t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
		t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
	}
#pragma GCC unroll 4
	for (int i = 0; i < 4; i++) {
		__m512d a = _mm512_castps_pd(t[4 * i]), b = _mm512_castps_pd(t[4 * i + 1]);
		__m512d c = _mm512_castps_pd(t[4 * i + 2]), d = _mm512_castps_pd(t[4 * i + 3]);
		r[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
		r[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
		r[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
		r[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
	}
#pragma GCC unroll 4
	for (int i = 0; i < 4; i++) {
		t[i] = _mm512_shuffle_f32x4(r[i], r[4 + i], 0x88);
		t[4 + i] = _mm512_shuffle_f32x4(r[i], r[4 + i], 0xDD);
		t[8 + i] = _mm512_shuffle_f32x4(r[8 + i], r[12 + i], 0x88);
		t[12 + i] = _mm512_shuffle_f32x4(r[8 + i], r[12 + i], 0xDD);
	}
#pragma GCC unroll 4
	for (int i = 0; i < 4; i++) {
		r[i] = _mm512_shuffle_f32x4(t[i], t[8 + i], 0x88);
		r[8 + i] = _mm512_shuffle_f32x4(t[i], t[8 + i], 0xDD);
		r[4 + i] = _mm512_shuffle_f32x4(t[4 + i], t[12 + i], 0x88);
		r[12 + i] = _mm512_shuffle_f32x4(t[4 + i], t[12 + i], 0xDD);
	}
}

/* acc[i] += w-block column c times x[k0 + c] of row i, for c < kc. */
static inline __attribute__((always_inline)) AVX512 void
small_block(const int ROWS, __m512 acc[], __m512 r[16], const float *x, int k0, int kc)
{
	transpose16(r);
#pragma GCC unroll 16
	for (int c = 0; c < 16; c++) {
		if (c >= kc)
			break;
		const float *xk = x + (size_t)(k0 + c) * SID__LANES;
#pragma GCC unroll 4
		for (int i = 0; i < ROWS; i++)
			acc[i] = _mm512_fmadd_ps(r[c], _mm512_set1_ps(xk[i]), acc[i]);
	}
}

/*
 * A few rows (ROWS <= SMALL_ROWS, all in panel 0): vectorise across 16
 * outputs instead of across rows, transposing 16x16 blocks of w in
 * registers, so no lane is wasted on padding.  Same chain per element
 * (fma in k order from +0, then + b, then act); padding lanes of y are zeroed.
 */
static inline __attribute__((always_inline)) AVX512 void
small_avx512(const int ROWS, const float *w, const float *b, enum sid_act act, int n, int k,
	     const float *x, float *y)
{
	const __m512 zero = _mm512_setzero_ps();

	for (int j0 = 0; j0 < n; j0 += 16) {
		const int nj = n - j0 < 16 ? n - j0 : 16;
		const float *w0 = w + (size_t)j0 * k;
		size_t off[16];
		__m512 acc[SMALL_ROWS], r[16];
		int k0 = 0;

#pragma GCC unroll 16
		for (int jj = 0; jj < 16; jj++)
			off[jj] = (size_t)(jj < nj ? jj : 0) * k;
#pragma GCC unroll 4
		for (int i = 0; i < ROWS; i++)
			acc[i] = zero;
		for (; k0 + 16 <= k; k0 += 16) {
#pragma GCC unroll 16
			for (int jj = 0; jj < 16; jj++)
				r[jj] = _mm512_loadu_ps(w0 + off[jj] + k0);
			small_block(ROWS, acc, r, x, k0, 16);
		}
		if (k0 < k) {
			const int kc = k - k0;
			const __mmask16 m = (__mmask16)((1u << kc) - 1u);
#pragma GCC unroll 16
			for (int jj = 0; jj < 16; jj++)
				r[jj] = _mm512_maskz_loadu_ps(m, w0 + off[jj] + k0);
			small_block(ROWS, acc, r, x, k0, kc);
		}
		const __mmask16 mj = (__mmask16)(nj == 16 ? 0xffffu : (1u << nj) - 1u);
		const __m512 bv = b ? _mm512_maskz_loadu_ps(mj, b + j0) : zero;
		float out[16];
#pragma GCC unroll 4
		for (int i = 0; i < ROWS; i++) {
			__m512 v = _mm512_add_ps(acc[i], bv);
			int done = act_v(act, &v);
			_mm512_storeu_ps(out, v);
			for (int jj = 0; jj < nj; jj++) {
				float o = out[jj];
				if (!done)
					o = sid__act_apply(act, o);
				y[(size_t)(j0 + jj) * SID__LANES + i] = o;
			}
		}
	}
	for (int j = 0; j < n; j++)
		for (int i = ROWS; i < SID__LANES; i++)
			y[(size_t)j * SID__LANES + i] = 0.0f;
}

#define SMALL_INST(R)                                                                              \
	static AVX512 void small_avx512_##R(const float *w, const float *b, enum sid_act act,      \
					    int n, int k, const float *x, float *y)                \
	{                                                                                          \
		small_avx512(R, w, b, act, n, k, x, y);                                            \
	}
SMALL_INST(1)
SMALL_INST(2)
SMALL_INST(3)
SMALL_INST(4)

static AVX512 void gemm_avx512(const float *w, const float *wp, const float *b, enum sid_act act,
			       int n, int k, const float *x, size_t rows, float *y)
{
	const size_t P = sid__panels(rows);
	switch (rows) {
	case 1:
		small_avx512_1(w, b, act, n, k, x, y);
		return;
	case 2:
		small_avx512_2(w, b, act, n, k, x, y);
		return;
	case 3:
		small_avx512_3(w, b, act, n, k, x, y);
		return;
	case 4:
		small_avx512_4(w, b, act, n, k, x, y);
		return;
	}
	const size_t xs = (size_t)k * SID__LANES, ys = (size_t)n * SID__LANES;
	for (int j0 = 0; j0 < n; j0 += SID__NR) {
		int nr = n - j0 < SID__NR ? n - j0 : SID__NR;
		const float *blk = wp ? wp + (size_t)(j0 / SID__NR) * SID__NR * k : NULL;
		size_t p = 0;
		for (; p + 2 <= P; p += 2)
			mk512_2(w, blk, b, act, n, k, j0, nr, x + p * xs, xs, y + p * ys, ys);
		if (p < P)
			mk512_1(w, blk, b, act, n, k, j0, nr, x + p * xs, xs, y + p * ys, ys);
	}
}
#endif

#ifdef SID_HAVE_X86
/* Full panels of 16 rows x 16 features through an in-register transpose. */
static AVX512 void rows_to_panels_avx512(const float *x, size_t ld, size_t rows, int F,
					 const float *scale, float *p)
{
	const size_t P = sid__panels(rows);

	for (size_t pi = 0; pi < P; pi++) {
		const size_t i0 = pi * SID__LANES;
		const int nr = rows - i0 < SID__LANES ? (int)(rows - i0) : SID__LANES;
		float *dst = p + pi * (size_t)F * SID__LANES;
		const __m512 sv = _mm512_maskz_loadu_ps((__mmask16)((1u << nr) - 1u), scale + i0);
		int f0 = 0;
		for (; f0 + 16 <= F; f0 += 16) {
			__m512 r[16];
#pragma GCC unroll 16
			for (int l = 0; l < 16; l++)
				r[l] = l < nr ? _mm512_loadu_ps(x + (i0 + l) * ld + f0)
					      : _mm512_setzero_ps();
			transpose16(r);
#pragma GCC unroll 16
			for (int c = 0; c < 16; c++)
				_mm512_storeu_ps(dst + (size_t)(f0 + c) * SID__LANES,
						 _mm512_mul_ps(r[c], sv));
		}
		for (; f0 < F; f0++)
			for (int l = 0; l < SID__LANES; l++)
				dst[(size_t)f0 * SID__LANES + l] =
				    l < nr ? x[(i0 + l) * ld + f0] * scale[i0 + l] : 0.0f;
	}
}
#endif

static void rows_to_panels_generic(const float *x, size_t ld, size_t rows, int F,
				   const float *scale, float *p)
{
	const size_t P = sid__panels(rows);

	for (size_t pi = 0; pi < P; pi++) {
		const size_t i0 = pi * SID__LANES;
		float *dst = p + pi * (size_t)F * SID__LANES;
		for (int f = 0; f < F; f++)
			for (int l = 0; l < SID__LANES; l++)
				dst[(size_t)f * SID__LANES + l] =
				    i0 + l < rows ? x[(i0 + l) * ld + f] * scale[i0 + l] : 0.0f;
	}
}

/* ---- AVX2 + FMA ---------------------------------------------------------- */

#ifdef SID_HAVE_X86
#define AVX2	__attribute__((target("avx2,fma")))
#define NR_AVX2 6 /* 6 features x 2 ymm (one panel) = 12 accumulators of 16 registers */

/* The AVX2 mirrors of exp_s, erf_s, tanh_s (same operations as the scalar
 * and AVX-512 versions, so the same bits). */
static inline __attribute__((always_inline)) AVX2 __m256 exp_v8(__m256 x)
{
	x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(EXP_LO)), _mm256_set1_ps(EXP_HI));
	__m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(LOG2E)),
				   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
	__m256 r = _mm256_fmadd_ps(n, _mm256_set1_ps(-LN2_HI), x);
	r = _mm256_fmadd_ps(n, _mm256_set1_ps(-LN2_LO), r);
	__m256 p = _mm256_set1_ps(EXP_P0);
	p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXP_P1));
	p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXP_P2));
	p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXP_P3));
	p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXP_P4));
	p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXP_P5));
	p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r);
	p = _mm256_add_ps(p, _mm256_set1_ps(1.0f));
	__m256i bits =
	    _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
	return _mm256_mul_ps(p, _mm256_castsi256_ps(bits));
}

/* copysign(r, a) */
static inline __attribute__((always_inline)) AVX2 __m256 copysign_v8(__m256 r, __m256 a)
{
	const __m256 sign = _mm256_set1_ps(-0.0f);
	return _mm256_or_ps(_mm256_andnot_ps(sign, r), _mm256_and_ps(sign, a));
}

static inline __attribute__((always_inline)) AVX2 __m256 erf_v8(__m256 a)
{
	__m256 t = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), a), s = _mm256_mul_ps(a, a);
	__m256 r = _mm256_fmadd_ps(_mm256_set1_ps(ERF_BIG0), t, _mm256_set1_ps(ERF_BIG1));
	__m256 u = _mm256_fmadd_ps(_mm256_set1_ps(ERF_BIG2), t, _mm256_set1_ps(ERF_BIG3));
	r = _mm256_fmadd_ps(r, s, u);
	r = _mm256_fmadd_ps(r, t, _mm256_set1_ps(ERF_BIG4));
	r = _mm256_fmadd_ps(r, t, _mm256_set1_ps(ERF_BIG5));
	r = _mm256_fmadd_ps(r, t, _mm256_set1_ps(ERF_BIG6));
	r = _mm256_fmadd_ps(r, t, _mm256_sub_ps(_mm256_setzero_ps(), t));
	r = copysign_v8(_mm256_sub_ps(_mm256_set1_ps(1.0f), exp_v8(r)), a);
	__m256 q = _mm256_set1_ps(ERF_SMALL0);
	q = _mm256_fmadd_ps(q, s, _mm256_set1_ps(ERF_SMALL1));
	q = _mm256_fmadd_ps(q, s, _mm256_set1_ps(ERF_SMALL2));
	q = _mm256_fmadd_ps(q, s, _mm256_set1_ps(ERF_SMALL3));
	q = _mm256_fmadd_ps(q, s, _mm256_set1_ps(ERF_SMALL4));
	q = _mm256_fmadd_ps(q, s, _mm256_set1_ps(ERF_SMALL5));
	q = _mm256_fmadd_ps(q, a, a);
	return _mm256_blendv_ps(q, r, _mm256_cmp_ps(t, _mm256_set1_ps(ERF_SPLIT), _CMP_GT_OQ));
}

static inline __attribute__((always_inline)) AVX2 __m256 tanh_v8(__m256 x)
{
	const __m256 one = _mm256_set1_ps(1.0f), two = _mm256_set1_ps(2.0f);
	__m256 a = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), x);
	__m256 z = _mm256_mul_ps(x, x), p = _mm256_set1_ps(TANH_P0);
	p = _mm256_fmadd_ps(p, z, _mm256_set1_ps(TANH_P1));
	p = _mm256_fmadd_ps(p, z, _mm256_set1_ps(TANH_P2));
	p = _mm256_fmadd_ps(p, z, _mm256_set1_ps(TANH_P3));
	p = _mm256_fmadd_ps(p, z, _mm256_set1_ps(TANH_P4));
	__m256 small = _mm256_fmadd_ps(p, _mm256_mul_ps(z, x), x);
	__m256 e = exp_v8(_mm256_mul_ps(two, a));
	__m256 big = copysign_v8(_mm256_sub_ps(one, _mm256_div_ps(two, _mm256_add_ps(e, one))), x);
	return _mm256_blendv_ps(big, small,
				_mm256_cmp_ps(a, _mm256_set1_ps(TANH_SPLIT), _CMP_NGE_UQ));
}

static inline __attribute__((always_inline)) AVX2 __m256 act_v8(enum sid_act act, __m256 v)
{
	const __m256 one = _mm256_set1_ps(1.0f);
	const __m256 poison = _mm256_sub_ps(v, v); /* poison_s */
	switch (act) {
	case SID_ACT_RELU: /* relu_s (max_ps gives the 0 for a NaN; poison its NaN) */
		return _mm256_sub_ps(_mm256_max_ps(v, _mm256_setzero_ps()), poison);
	case SID_ACT_SILU: {
		__m256 e = exp_v8(_mm256_sub_ps(_mm256_setzero_ps(), v));
		__m256 y =
		    _mm256_blendv_ps(_mm256_mul_ps(v, _mm256_div_ps(one, _mm256_add_ps(one, e))),
				     _mm256_mul_ps(v, _mm256_setzero_ps()),
				     _mm256_cmp_ps(v, _mm256_set1_ps(-EXP_HI), _CMP_LT_OQ));
		return _mm256_sub_ps(y, poison);
	}
	case SID_ACT_GELU: {
		__m256 e = erf_v8(_mm256_mul_ps(v, _mm256_set1_ps((float)M_SQRT1_2)));
		__m256 y =
		    _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(0.5f), v), _mm256_add_ps(one, e));
		return _mm256_sub_ps(y, poison);
	}
	case SID_ACT_TANH:
		return _mm256_sub_ps(tanh_v8(v), poison);
	case SID_ACT_IDENTITY:
		break;
	}
	return v;
}

/*
 * One panel (16 rows as two ymm) times NR_AVX2 features j0.. (nr stored).
 * Weights from a packed block (row stride SID__NR, column offset @jo) when
 * PACKED, else from rows of w (rows past n-1 clamped to j0).
 */
static inline __attribute__((always_inline)) AVX2 void
mk256(const int PACKED, const float *w, const float *wp, int jo, const float *b, enum sid_act act,
      int k, int j0, int nr, const float *x, float *y)
{
	__m256 acc[NR_AVX2][2];
	const float *wr[NR_AVX2];

#pragma GCC unroll 8
	for (int jj = 0; jj < NR_AVX2; jj++) {
		acc[jj][0] = acc[jj][1] = _mm256_setzero_ps();
		wr[jj] = w + (size_t)(j0 + (jj < nr ? jj : 0)) * k;
	}
	for (int kk = 0; kk < k; kk++) {
		const __m256 x0 = _mm256_loadu_ps(x + (size_t)kk * SID__LANES);
		const __m256 x1 = _mm256_loadu_ps(x + (size_t)kk * SID__LANES + 8);
		const float *wk = PACKED ? wp + (size_t)kk * SID__NR + jo : NULL;
#pragma GCC unroll 8
		for (int jj = 0; jj < NR_AVX2; jj++) {
			__m256 wv = _mm256_broadcast_ss(PACKED ? wk + jj : wr[jj] + kk);
			acc[jj][0] = _mm256_fmadd_ps(wv, x0, acc[jj][0]);
			acc[jj][1] = _mm256_fmadd_ps(wv, x1, acc[jj][1]);
		}
	}
#pragma GCC unroll 8
	for (int jj = 0; jj < NR_AVX2; jj++) {
		if (jj >= nr)
			break;
		__m256 bv = _mm256_set1_ps(b ? b[j0 + jj] : 0.0f);
		float *yo = y + (size_t)(j0 + jj) * SID__LANES;
		__m256 r0 = _mm256_add_ps(acc[jj][0], bv), r1 = _mm256_add_ps(acc[jj][1], bv);
		_mm256_storeu_ps(yo, act_v8(act, r0));
		_mm256_storeu_ps(yo + 8, act_v8(act, r1));
	}
}

static AVX2 void mk256_packed(const float *w, const float *wp, int jo, const float *b,
			      enum sid_act act, int k, int j0, int nr, const float *x, float *y)
{
	mk256(1, w, wp, jo, b, act, k, j0, nr, x, y);
}

static AVX2 void mk256_rows(const float *w, const float *b, enum sid_act act, int k, int j0, int nr,
			    const float *x, float *y)
{
	mk256(0, w, NULL, 0, b, act, k, j0, nr, x, y);
}

static AVX2 void gemm_avx2(const float *w, const float *wp, const float *b, enum sid_act act, int n,
			   int k, const float *x, size_t P, float *y)
{
	for (int j0 = 0; j0 < n; j0 += NR_AVX2) {
		int nr = n - j0 < NR_AVX2 ? n - j0 : NR_AVX2;
		const float *blk = wp ? wp + (size_t)(j0 / SID__NR) * SID__NR * k : NULL;
		for (size_t p = 0; p < P; p++) {
			const float *xp = x + p * (size_t)k * SID__LANES;
			float *yp = y + p * (size_t)n * SID__LANES;
			if (blk)
				mk256_packed(w, blk, j0 % SID__NR, b, act, k, j0, nr, xp, yp);
			else
				mk256_rows(w, b, act, k, j0, nr, xp, yp);
		}
	}
}
#endif

/* ---- dispatch ------------------------------------------------------------ */

enum kernel { K_GENERIC, K_AVX2, K_AVX512 };

static enum kernel kernel_pick(void)
{
	int mode = __atomic_load_n(&force_mode, __ATOMIC_RELAXED);
	if (mode == 1)
		return K_GENERIC;
#ifdef SID_HAVE_X86
	if (mode == 2)
		return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") ? K_AVX2
										       : K_GENERIC;
	if (__builtin_cpu_supports("avx512f"))
		return K_AVX512;
	if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
		return K_AVX2;
#endif
	return K_GENERIC;
}

const char *sid__gemm_kernel_name(void)
{
	switch (kernel_pick()) {
	case K_AVX512:
		return "avx512";
	case K_AVX2:
		return "avx2";
	case K_GENERIC:
		break;
	}
	return "generic";
}

void sid__gemm_panels(const float *w, const float *wp, const float *b, enum sid_act act, int n,
		      int k, const float *x, size_t rows, float *y)
{
	const size_t P = sid__panels(rows);

	switch (kernel_pick()) {
#ifdef SID_HAVE_X86
	case K_AVX512:
		gemm_avx512(w, wp, b, act, n, k, x, rows, y);
		return;
	case K_AVX2:
		gemm_avx2(w, wp, b, act, n, k, x, P, y);
		return;
#endif
	default:
		gemm_generic(w, wp, b, act, n, k, x, P, y);
		return;
	}
}

void sid__rows_to_panels(const float *x, size_t ld, size_t rows, int F, const float *scale,
			 float *p)
{
#ifdef SID_HAVE_X86
	if (kernel_pick() == K_AVX512) {
		rows_to_panels_avx512(x, ld, rows, F, scale, p);
		return;
	}
#endif
	rows_to_panels_generic(x, ld, rows, F, scale, p);
}

#ifdef SID_HAVE_X86
/* Rows whose maximum exponent field is 0xff hold Inf or NaN. */
static AVX512 int row_nonfinite_avx512(const float *x, int D)
{
	const __m512i em = _mm512_set1_epi32(0x7f800000);
	__mmask16 bad = 0;
	int f = 0;
	for (; f + 16 <= D; f += 16) {
		__m512i v = _mm512_and_si512(_mm512_loadu_si512((const void *)(x + f)), em);
		bad |= _mm512_cmpeq_epi32_mask(v, em);
	}
	if (f < D) {
		__mmask16 m = (__mmask16)((1u << (D - f)) - 1u);
		__m512i v = _mm512_and_si512(_mm512_maskz_loadu_epi32(m, x + f), em);
		bad |= _mm512_cmpeq_epi32_mask(v, em);
	}
	return bad != 0;
}
#endif

long sid__first_nonfinite(const float *x, size_t rows, int D, int *col)
{
	for (size_t i = 0; i < rows; i++) {
		const float *row = x + i * (size_t)D;
		int bad = 0;
#ifdef SID_HAVE_X86
		if (kernel_pick() == K_AVX512)
			bad = row_nonfinite_avx512(row, D);
		else
#endif
			for (int f = 0; f < D; f++)
				bad |= !isfinite(row[f]);
		if (!bad)
			continue;
		for (int f = 0; f < D; f++)
			if (!isfinite(row[f])) {
				*col = f;
				return (long)i;
			}
	}
	return -1;
}
