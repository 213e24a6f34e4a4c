/*
 * smoke.h - the C benchmarks' smoke mode (`make bench-smoke`,
 * tests/bench/test_bench_smoke.py): with SEMID_BENCH_SMOKE set (and not "0")
 * each runs every case at a tiny size and says so on its first line, so
 * that a change that breaks a benchmark shows in `make test`, and nobody
 * copies a smoke run's figures.
 */
#ifndef SEMID_BENCH_SMOKE_H
#define SEMID_BENCH_SMOKE_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Whether this is a smoke run; the first call prints the banner. */
static inline int bench_smoke(void)
{
	static int known = -1;
	if (known < 0) {
		const char *v = getenv("SEMID_BENCH_SMOKE");
		known = v && *v && strcmp(v, "0") != 0;
		if (known)
			printf("# SMOKE RUN (SEMID_BENCH_SMOKE): tiny sizes, to check that the "
			       "benchmark runs; its figures mean nothing, do not copy them\n");
	}
	return known;
}

#endif
