# bench/registry.mk - the ID registry benchmark (included by the top-level Makefile).
#
#   make bench-registry      encode vs encode+assign (SQLite), store-level assigns/s for
#                            1- and 64-item batches on SQLite and on PostgreSQL (a
#                            throwaway cluster on loopback, as root; skipped otherwise),
#                            then a fill of BENCH_REGISTRY_ITEMS items into SQLite with
#                            its file size and lookup latencies.  About a minute with the
#                            defaults; figures go to bench/RESULTS.md by hand.
#   BENCH_REGISTRY_SECS      seconds per timed case (default 2)
#   BENCH_REGISTRY_ITEMS     items for the size/lookup fill (default 1000000; the
#                            RESULTS figures use 10000000, about 4 minutes)

BENCH_REGISTRY := $(O)/bench/bench_registry
BENCH_REGISTRY_SECS ?= 2
BENCH_REGISTRY_ITEMS ?= 1000000
PG_BIN := /usr/lib/postgresql/15/bin

$(O)/bench/bench_registry.o: FINAL_CFLAGS += -Itests
$(BENCH_REGISTRY): $(O)/bench/bench_registry.o $(LIBSEMID)
	$(CC) $(FINAL_LDFLAGS) -o $@ $^ $(LIBS)

.PHONY: bench-registry
# PostgreSQL's tools run as postgres from the temp dir: from a checkout that user cannot
# enter (/root/semid) they warned "could not change directory" into the report.
bench-registry: $(BENCH_REGISTRY)
	@set -e; d=$$(mktemp -d /tmp/bench-registry.XXXXXX); chmod 755 $$d; \
	trap 'if [ -f $$d/pg/postmaster.pid ]; then (cd $$d && runuser -u postgres -- $(PG_BIN)/pg_ctl -D $$d/pg -m fast -w stop >/dev/null); fi; rm -rf $$d' EXIT; \
	$(BENCH_REGISTRY) encode $$d/encode.db $(BENCH_REGISTRY_SECS); \
	$(BENCH_REGISTRY) assign $$d/assign.db $(BENCH_REGISTRY_SECS); \
	if [ "$$(id -u)" = 0 ] && [ -x $(PG_BIN)/initdb ] && id postgres >/dev/null 2>&1; then \
		port=$$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'); \
		chown postgres $$d; \
		(cd $$d && runuser -u postgres -- $(PG_BIN)/initdb -D $$d/pg -A trust -U postgres \
			-E UTF8 >/dev/null); \
		(cd $$d && runuser -u postgres -- $(PG_BIN)/pg_ctl -D $$d/pg -l $$d/pg.log -w \
			-o "-p $$port -k $$d -c listen_addresses=127.0.0.1" start >/dev/null); \
		$(BENCH_REGISTRY) assign "host=127.0.0.1 port=$$port dbname=postgres user=postgres" $(BENCH_REGISTRY_SECS); \
	else echo "# PostgreSQL skipped (needs root and $(PG_BIN))"; fi; \
	$(BENCH_REGISTRY) fill $$d/fill.db $(BENCH_REGISTRY_ITEMS)

BENCH_PROGS += $(BENCH_REGISTRY)
bench: bench-registry
