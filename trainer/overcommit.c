/*
 * overcommit.c - OpenBLAS's thread count and the calling thread's work
 * buffer under vm.overcommit_memory=2 (overcommit.h), on top of blas.h's
 * handling of rlimits.
 */
#include "overcommit.h"

#include <cblas.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "blas.h"

/* OpenBLAS 0.3.21's work buffer (BUFFER_SIZE on x86-64 and arm64), as
 * core/blas.c counts it. */
#define BLAS_BUFFER ((unsigned long long)128 << 20)

static int loaded;	  /* threads OpenBLAS started at load, the calling one included */
static int chosen;	  /* sid_blas_default_threads's count */
static int buffer_mapped; /* the calling thread's work buffer, by map_caller_buffer */

int tr_overcommit_read(const char *proc, struct tr_overcommit *oc)
{
	char path[PATH_MAX], line[256];
	unsigned long long kb, *dst;
	int mode = -1, got = 0;
	FILE *f;

	memset(oc, 0, sizeof(*oc));
	if (snprintf(path, sizeof(path), "%s/sys/vm/overcommit_memory", proc) >= (int)sizeof(path))
		return -1;
	if (!(f = fopen(path, "re")))
		return -1;
	if (fscanf(f, "%d", &mode) != 1)
		mode = -1;
	fclose(f);
	if (mode < 0 || mode > 2)
		return -1;
	if (mode != 2) /* heuristic (0) or always (1): a mapping is not refused so */
		return 0;
	if (snprintf(path, sizeof(path), "%s/meminfo", proc) >= (int)sizeof(path))
		return -1;
	if (!(f = fopen(path, "re")))
		return -1;
	while (fgets(line, sizeof(line), f)) {
		dst = !strncmp(line, "CommitLimit:", 12)    ? &oc->limit
		      : !strncmp(line, "Committed_AS:", 13) ? &oc->committed
							    : NULL;
		if (!dst || sscanf(strchr(line, ':') + 1, " %llu kB", &kb) != 1 ||
		    kb > ULLONG_MAX >> 10)
			continue;
		*dst = kb << 10;
		got |= dst == &oc->limit ? 1 : 2;
	}
	fclose(f);
	if (got != 3) {
		memset(oc, 0, sizeof(*oc));
		return -1;
	}
	oc->strict = 1;
	return 0;
}

/* What @oc leaves to commit, in bytes. */
static unsigned long long room_of(const struct tr_overcommit *oc)
{
	return oc->limit > oc->committed ? oc->limit - oc->committed : 0;
}

int tr_overcommit_threads(const struct tr_overcommit *oc, int want, int started, int caller_mapped,
			  unsigned long long buffer, unsigned long long per)
{
	unsigned long long room = room_of(oc), spare, more;

	if (!oc->strict || per == 0)
		return want;
	if (!caller_mapped && buffer > room)
		return 0;
	spare = room - (caller_mapped ? 0 : buffer);
	/* a quarter kept for the program's own data, as blas.c keeps of a limit */
	spare = spare > room / 4 ? spare - room / 4 : 0;
	if (started < 1)
		started = 1;
	if (want > started) {
		more = spare / per;
		if (more < (unsigned long long)(want - started))
			want = started + (int)more;
	}
	return want < 1 ? 1 : want;
}

void tr_overcommit_default_threads(void)
{
	/* before: sid_blas_default_threads may lower the count, not the
	 * threads started (one, when sid_blas_no_threads_at_load deferred them) */
	loaded = openblas_get_num_threads();
	chosen = sid_blas_default_threads(NULL, 0);
}

/* The stack a new thread maps (and, under strict accounting, commits). */
static unsigned long long thread_stack(void)
{
	pthread_attr_t attr;
	size_t stack = (size_t)8 << 20;

	if (pthread_attr_init(&attr) == 0) {
		pthread_attr_getstacksize(&attr, &stack);
		pthread_attr_destroy(&attr);
	}
	return stack;
}

/* Have OpenBLAS map the calling thread's work buffer now, not at the first
 * product of the training (after the data, which may have taken the room
 * by then): a level-3 product (its small-matrix kernels map nothing). */
static void map_caller_buffer(void)
{
	enum { N = 160 };
	float *m = calloc((size_t)3 * N * N, sizeof(float));

	if (!m)
		return; /* the data's allocations will say so */
	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, N, N, 1.0f, m, N, m + N * N, N,
		    0.0f, m + 2 * N * N, N);
	free(m);
	buffer_mapped = 1;
}

int tr_overcommit_ready(int n, char *note, size_t size, struct sid_error *err)
{
	const char *proc = getenv("SEMID_TEST_PROC");
	int want = n > 0 ? n : chosen > 0 ? chosen : openblas_get_num_threads(), fit, rc;
	unsigned long long per, room;
	struct tr_overcommit oc;

	if (tr_overcommit_read(proc && *proc ? proc : "/proc", &oc) < 0 || !oc.strict)
		return sid_blas_ready(n, note, size, err);
	per = BLAS_BUFFER + thread_stack() + (unsigned long long)sysconf(_SC_PAGESIZE);
	room = room_of(&oc);
	fit = tr_overcommit_threads(&oc, want, loaded, buffer_mapped, BLAS_BUFFER, per);
	if (fit == 0)
		return sid_error_set(
		    err, SID_ENOMEM,
		    "strict memory accounting (vm.overcommit_memory=2) leaves %llu MiB to commit "
		    "on this machine (CommitLimit %llu MiB, Committed_AS %llu MiB): no room for "
		    "OpenBLAS's %llu MiB work buffer (OpenBLAS would wait for it for ever): let "
		    "other programs end, or raise vm.overcommit_ratio (or overcommit_kbytes)",
		    room >> 20, oc.limit >> 20, oc.committed >> 20, BLAS_BUFFER >> 20);
	rc = sid_blas_ready(fit, note, size, err);
	if (rc < 0)
		return rc;
	if (!buffer_mapped)
		map_caller_buffer();
	if (fit < want && note && size && !note[0])
		snprintf(note, size,
			 "%d asked: strict memory accounting (vm.overcommit_memory=2) leaves %llu "
			 "MiB to commit on this machine, room for no more, each %llu MiB of "
			 "OpenBLAS buffer and stack, with a quarter of it kept for the data",
			 want, room >> 20, per >> 20);
	return rc;
}
