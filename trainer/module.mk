# trainer/module.mk - extra make rules for bin/semid-train (included by the top-level Makefile).
#
#   make eval         real-data evaluation on ../shared/data/lastfm-2k: modes das, rqvae and
#                     two-stage x 3 seeds at 3 x 64 codes, das and two-stage again with the
#                     tuned setting (3x64-tuned), rqvae and das with a 1024-512 encoder
#                     (3x64-wide), and one larger setting; the table goes to
#                     bench/out/RESULTS-train.md (trainer/eval_table.py).
#   make bench-train  time per epoch and sgemm share (perf) on lastfm, and the synthetic
#                     1M items / 1M users / 20M clicks scale run (20 timed steps of the first
#                     epoch, the epoch extrapolated); figures into
#                     bench/out/RESULTS-bench-train.md (not make eval's RESULTS-train.md,
#                     which `make bench` after `make eval` used to overwrite).
#   EVAL_SEEDS, EVAL_EPOCHS, EVAL_JOBS (runs at a time), EVAL_DIR (work dir; an interrupted
#   `make eval` continues where it stopped).

# The trainer's tests include its headers by name.
$(O)/tests/trainer/%.o: FINAL_CFLAGS += -Itrainer

LASTFM ?= ../shared/data/lastfm-2k
EVAL_DIR ?= /tmp/semid-eval
EVAL_SEEDS ?= 1 2 3
EVAL_EPOCHS ?= 20
EVAL_JOBS ?= 1

.PHONY: eval-train bench-train
eval: eval-train
eval-train: $(BIN)/semid-train
	@mkdir -p $(BENCH_OUT)
	$(PYTHON) trainer/eval_table.py --bin $(BIN) --data $(LASTFM) --work $(EVAL_DIR) \
		--seeds "$(EVAL_SEEDS)" --epochs $(EVAL_EPOCHS) --jobs $(EVAL_JOBS) --out $(BENCH_OUT)/RESULTS-train.md

bench-train: $(BIN)/semid-train
	@mkdir -p $(BENCH_OUT)
	$(PYTHON) trainer/bench_train.py --bin $(BIN) --data $(LASTFM) --work $(EVAL_DIR)/bench \
		--out $(BENCH_OUT)/RESULTS-bench-train.md

bench: bench-train
