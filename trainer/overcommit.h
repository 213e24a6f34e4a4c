/*
 * overcommit.h - OpenBLAS's work buffers under strict commit accounting
 * (vm.overcommit_memory=2).
 *
 * OpenBLAS 0.3.21 retries for ever a work buffer (128 MiB) it cannot map
 * (blas.h).  Under vm.overcommit_memory=2 the kernel refuses a writable
 * private mapping once the machine's committed memory (Committed_AS in
 * /proc/meminfo) would pass CommitLimit, whatever this process's limits:
 * a trainer started with less room than its threads' buffers spun, deaf to
 * SIGTERM, as under ulimit -v before blas.c handled that.  The room left is
 * the machine's, shared with every other process, and read at one moment:
 * what this file decides from it is a best effort, which a quarter kept
 * aside for the program's own data makes likelier to hold.
 *
 * Handled here: the threads the trainer asks OpenBLAS for (its --threads,
 * or the count sid_blas_default_threads chose), fewer when their buffers
 * and stacks do not fit, and the calling thread's buffer, mapped before the
 * data or refused with a message when it does not fit.  The threads
 * OpenBLAS would start when it is loaded, before main(), are deferred by
 * sid_blas_no_threads_at_load (blas.h), which also reads the setting
 * (sid_commit_read).
 *
 * Not thread-safe: call from main() and the start of a job.
 */
#ifndef TR_OVERCOMMIT_H
#define TR_OVERCOMMIT_H

#include <stddef.h>

#include "blas.h"
#include "err.h"

/*
 * The OpenBLAS threads (the calling one included) that fit in what @oc
 * leaves to commit, of @want asked: @started already run (their buffers
 * and stacks committed), @caller_mapped says whether the calling thread's
 * @buffer is; each further thread commits @per (its buffer and stack).  A
 * quarter of the room is kept for the program's own data.  @want when @oc
 * is not strict; 0 when not even the calling thread's buffer fits.
 */
int tr_overcommit_threads(const struct sid_commit *oc, int want, int started, int caller_mapped,
			  unsigned long long buffer, unsigned long long per);

/* In main(), instead of sid_blas_default_threads(NULL, 0): that, keeping
 * the threads OpenBLAS started at load and the count chosen. */
void tr_overcommit_default_threads(void);

/*
 * sid_blas_ready (blas.h) for @n threads (0: the count chosen), under
 * strict commit accounting with no more threads than fit
 * (tr_overcommit_threads; @note then says why fewer) and the calling
 * thread's buffer mapped now; SID_ENOMEM, @err naming the setting and the
 * room left, when that buffer does not fit (OpenBLAS would wait for it for
 * ever).  The proc file system read is /proc, or the directory the
 * environment variable SEMID_TEST_PROC names (tests).
 */
int tr_overcommit_ready(int n, char *note, size_t size, struct sid_error *err);

#endif
