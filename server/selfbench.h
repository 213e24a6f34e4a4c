/*
 * selfbench.h - in-process encode throughput of a model, the baseline the
 * HTTP benchmark (make bench-http) is compared against: @threads threads,
 * each with its own workspace (as the server's workers), encode batches of @batch random rows
 * through sid_encode for @secs seconds.  `semid-server --bench-encode` runs it and prints one JSON
 * line.  Not used while serving.
 */
#ifndef SRV_SELFBENCH_H
#define SRV_SELFBENCH_H

#include "err.h"

struct srv_selfbench_result {
	double items_per_s;
	double seconds;
	long long rows;
};

int srv_selfbench_run(const char *model_path, const char *tower, int batch, int threads,
		      double secs, struct srv_selfbench_result *out, struct sid_error *err);

#endif
