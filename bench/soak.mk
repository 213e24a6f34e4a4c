# bench/soak.mk - the soak benchmark (included by the top-level Makefile).
#
#   make soak        semid-server under mixed encode (JSON and base64, 1 and 64 items)
#                    and assign (new and known ids) traffic from 4 keep-alive clients,
#                    with the model file atomically replaced every 3 s (every fourth
#                    file a bad one); per 10-second window: requests, errors, p50/p99,
#                    server VmRSS.  Writes bench/out/RESULTS-soak.md with a verdict
#                    (errors == 0, VmRSS growth after the second minute < 10%) and
#                    exits non-zero when it fails.
#   SOAK_SECS        seconds to run (default 600; 60 for a quick check; at least 10,
#                    one window).  With SEMID_BENCH_SMOKE=1 (make bench-smoke) it runs
#                    three 1-second windows whatever SOAK_SECS says.

SOAK_SECS ?= 600

.PHONY: soak
soak: $(BIN)/semid-server
	@mkdir -p $(BENCH_OUT)
	SEMID_BIN=$(BIN) $(PYTHON) bench/soak.py --secs $(SOAK_SECS) --out $(BENCH_OUT)/RESULTS-soak.md
