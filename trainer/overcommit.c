/*
 * overcommit.c - OpenBLAS's thread count and the calling thread's work
 * buffer under vm.overcommit_memory=2 (overcommit.h), on top of blas.h's
 * handling of rlimits.
 */
#include "overcommit.h"

#include <cblas.h>
#include <stdio.h>

#include "blas.h"

static int loaded;	  /* threads OpenBLAS started at load, the calling one included */
static int chosen;	  /* sid_blas_default_threads's count */
static int buffer_mapped; /* the calling thread's work buffer, by sid_blas_map_caller_buffer */

/* What @oc leaves to commit, in bytes. */
static unsigned long long room_of(const struct sid_commit *oc)
{
	return oc->limit > oc->committed ? oc->limit - oc->committed : 0;
}

int tr_overcommit_threads(const struct sid_commit *oc, int want, int started, int caller_mapped,
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

int tr_overcommit_ready(int n, char *note, size_t size, struct sid_error *err)
{
	int want = n > 0 ? n : chosen > 0 ? chosen : openblas_get_num_threads(), fit, rc;
	unsigned long long per, room;
	struct sid_commit oc;

	if (sid_commit_read(NULL, &oc) < 0 || !oc.strict)
		return sid_blas_ready(n, note, size, err);
	per = sid_blas_thread_bytes();
	room = room_of(&oc);
	fit = tr_overcommit_threads(&oc, want, loaded, buffer_mapped, SID_BLAS_BUFFER, per);
	if (fit == 0)
		return sid_error_set(
		    err, SID_ENOMEM,
		    "strict memory accounting (vm.overcommit_memory=2) leaves %llu MiB to commit "
		    "on this machine (CommitLimit %llu MiB, Committed_AS %llu MiB): no room for "
		    "OpenBLAS's %llu MiB work buffer (OpenBLAS would wait for it for ever): let "
		    "other programs end, or raise vm.overcommit_ratio (or overcommit_kbytes)",
		    room >> 20, oc.limit >> 20, oc.committed >> 20,
		    (unsigned long long)SID_BLAS_BUFFER >> 20);
	rc = sid_blas_ready(fit, note, size, err);
	if (rc < 0)
		return rc;
	/* now, not at the training's first product: after the data, which
	 * may have taken the room by then (a failed allocation is the data's
	 * to report) */
	if (!buffer_mapped && sid_blas_map_caller_buffer() == 0)
		buffer_mapped = 1;
	if (fit < want && note && size && !note[0])
		snprintf(note, size,
			 "%d asked: strict memory accounting (vm.overcommit_memory=2) leaves %llu "
			 "MiB to commit on this machine, room for no more, each %llu MiB of "
			 "OpenBLAS buffer and stack, with a quarter of it kept for the data",
			 want, room >> 20, per >> 20);
	return rc;
}
