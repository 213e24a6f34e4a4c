# bench/hotpath.mk - the server's per-request work outside the encoder
# (included by the top-level Makefile).
#
#   make bench-hotpath   request decoding (base64 and JSON rows), response writing,
#                        srv_buf_float and srv_base64_decode, a request's log line to a
#                        file and to a pipe, in a few seconds; figures
#                        go to bench/RESULTS.md by hand (it says how to compare
#                        with an older tree).  BENCH_HOTPATH_SECS: seconds per figure.

BENCH_HOTPATH := $(O)/bench/bench_hotpath
BENCH_HOTPATH_SECS ?= 0.2

$(BENCH_HOTPATH): $(O)/bench/bench_hotpath.o $(SERVER_LIBOBJ) $(LIBSEMID)
	$(CC) $(FINAL_LDFLAGS) -o $@ $^ $(LIBS)

.PHONY: bench-hotpath
bench-hotpath: $(BENCH_HOTPATH)
	$(BENCH_HOTPATH) $(BENCH_HOTPATH_SECS)

BENCH_PROGS += $(BENCH_HOTPATH)
bench: bench-hotpath
