# bench/module.mk - the encoder benchmark (included by the top-level Makefile).
#
#   make bench-encode   encoder items/s and GFLOP/s beside OpenBLAS sgemm on the same
#                       shapes (TIGER and DAS towers, batch 1/16/256/4096, 1 thread and
#                       all cores), batch-1 latency.  About a minute.  When the CPU has
#                       AVX-512 it runs a second time with OPENBLAS_CORETYPE=SkylakeX,
#                       because OpenBLAS 0.3.21 does not recognise recent Xeons and
#                       falls back to its SSE3 "Prescott" kernels (a weak baseline).
#   BENCH_ENCODE_SECS   seconds per timed run (default 0.2; each figure is best of 3).

BENCH_ENCODE := $(O)/bench/bench_encode
BENCH_ENCODE_SECS ?= 0.2

$(BENCH_ENCODE): $(O)/bench/bench_encode.o $(LIBSEMID)
	$(CC) $(FINAL_LDFLAGS) -o $@ $^ $(LIBS)

.PHONY: bench-encode
bench-encode: $(BENCH_ENCODE)
	$(BENCH_ENCODE) $(BENCH_ENCODE_SECS)
	@if grep -qw avx512f /proc/cpuinfo; then \
		echo "# again with OPENBLAS_CORETYPE=SkylakeX (the AVX-512 sgemm baseline)"; \
		OPENBLAS_CORETYPE=SkylakeX $(BENCH_ENCODE) $(BENCH_ENCODE_SECS); \
	fi

BENCH_PROGS += $(BENCH_ENCODE)
bench: bench-encode
