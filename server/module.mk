# server/module.mk - extra make targets for bin/semid-server (included by the top-level Makefile).
#
#   make bench-http   semid-server under wrk on loopback: req/s, items/s, p50/p99 for 1- and
#                     64-item requests, JSON and base64, concurrency 1/16/64, 384-d and
#                     1024-d models, beside the in-process encode throughput of the same
#                     model, plus a hot swap under load.  Writes bench/out/RESULTS-server.md.
#                     BENCH_HTTP_SECS seconds per run (default 3; about 2 minutes in all).
#   make bench-assign POST /v1/items:assign under wrk (new ids, known ids) against plain
#                     encode of the same requests in the same run, 1- and 64-item requests,
#                     on SQLite and on a throwaway PostgreSQL cluster (root only; skipped
#                     otherwise).  Writes bench/out/RESULTS-assign.md (about 1 minute).
#   make bench-backup `semid registry backup` while the server assigns (no cap and
#                     --max-rate caps) and alone against cp + sync.  Writes
#                     bench/out/RESULTS-backup.md (about 2 minutes).
#   make bench-reassign `semid registry reassign` of 200 000 ids after a retrain against
#                     assigning them new, in the same run.  Writes
#                     bench/out/RESULTS-reassign.md (about a minute).
#   make bench-delete deleting 2000 ids one DELETE each against POST /v1/items:delete of 64
#                     and 1000 ids a request, the three taking turns on one SQLite store.
#                     Writes bench/out/RESULTS-delete.md (about 15 seconds).
#   make bench-burst  the server's resident memory after a burst of 31 MB requests, with
#                     memory_trim_s 1 and 0 (never).  Writes bench/out/RESULTS-burst.md
#                     (about a minute).

BENCH_HTTP_SECS ?= 3

.PHONY: bench-http bench-assign bench-backup bench-reassign bench-burst bench-delete
bench-http: $(BIN)/semid-server
	@mkdir -p $(BENCH_OUT)
	SEMID_BIN=$(BIN) $(PYTHON) tests/server/bench_http.py --secs $(BENCH_HTTP_SECS) \
		--out $(BENCH_OUT)/RESULTS-server.md

bench-assign: $(BIN)/semid-server
	@mkdir -p $(BENCH_OUT)
	SEMID_BIN=$(BIN) $(PYTHON) tests/server/bench_assign.py --secs $(BENCH_HTTP_SECS) \
		--out $(BENCH_OUT)/RESULTS-assign.md

bench-delete: $(BIN)/semid-server
	@mkdir -p $(BENCH_OUT)
	SEMID_BIN=$(BIN) $(PYTHON) tests/server/bench_delete.py --out $(BENCH_OUT)/RESULTS-delete.md

bench-backup: $(BIN)/semid-server $(BIN)/semid
	@mkdir -p $(BENCH_OUT)
	SEMID_BIN=$(BIN) $(PYTHON) tests/server/bench_backup.py --out $(BENCH_OUT)/RESULTS-backup.md

bench-reassign: $(BIN)/semid
	@mkdir -p $(BENCH_OUT)
	SEMID_BIN=$(BIN) $(PYTHON) tests/server/bench_reassign.py --out $(BENCH_OUT)/RESULTS-reassign.md

bench-burst: $(BIN)/semid-server
	@mkdir -p $(BENCH_OUT)
	SEMID_BIN=$(BIN) $(PYTHON) tests/server/bench_burst.py --out $(BENCH_OUT)/RESULTS-burst.md

bench: bench-http bench-assign bench-backup bench-reassign bench-burst bench-delete
