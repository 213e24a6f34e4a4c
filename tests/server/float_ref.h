/*
 * float_ref.h - the float writer semid-server used before server/buf.c's
 * shortest-digits algorithm: the shortest printf %.Ng (N = 8 down to 1, or 9)
 * that strtof reads back.  Kept as the reference tests/server/check_buf.c
 * compares srv_buf_float with, and as the baseline bench/bench_hotpath.c
 * times it against.
 */
#ifndef SRV_FLOAT_REF_H
#define SRV_FLOAT_REF_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Write the text into @best; returns its length. */
static inline int float_ref_printf(char best[32], float v)
{
	char tmp[32];
	int n, m;

	n = snprintf(best, 32, "%.8g", (double)v);
	if (strtof(best, NULL) != v) {
		n = snprintf(best, 32, "%.9g", (double)v);
	} else {
		for (int prec = 7; prec >= 1; prec--) {
			m = snprintf(tmp, sizeof(tmp), "%.*g", prec, (double)v);
			if (strtof(tmp, NULL) != v)
				break;
			memcpy(best, tmp, (size_t)m + 1);
			n = m;
		}
	}
	return n;
}

#endif
