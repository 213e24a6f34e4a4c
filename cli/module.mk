# cli/module.mk - extra make targets for bin/semid (included by the top-level Makefile).
#
#   make bench-cli   end-to-end `semid encode` time and peak RSS on a TIGER-sized tower,
#                    against a numpy baseline in the same run.  BENCH_CLI_ROWS rows
#                    (default 1000000, a ~3 GB temp input under $TMPDIR).

BENCH_CLI_ROWS ?= 1000000

.PHONY: bench-cli
bench-cli: $(BIN)/semid
	SEMID_BIN=$(BIN) $(PYTHON) cli/bench_encode.py $(BENCH_CLI_ROWS)

bench: bench-cli
