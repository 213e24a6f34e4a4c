# trainer/module.mk - extra make rules for bin/semid-train (included by the top-level Makefile).
#
#   make eval         real-data evaluation on ../shared/data/lastfm-2k: modes das, rqvae and
#                     two-stage x 3 seeds at 3 x 64 codes, and one larger setting; the table
#                     goes to bench/RESULTS-train.md (trainer/eval_table.py).
#   make bench-train  time per epoch and sgemm share on lastfm, and the synthetic
#                     1M items / 1M users / 20M clicks scale run (EVAL_SCALE_FRACTION of one
#                     epoch); figures printed for bench/RESULTS-train.md.

# The trainer's tests include its headers by name.
$(O)/tests/trainer/%.o: FINAL_CFLAGS += -Itrainer

LASTFM ?= ../shared/data/lastfm-2k
EVAL_DIR ?= /tmp/semid-eval
EVAL_SEEDS ?= 1 2 3
EVAL_EPOCHS ?= 25

.PHONY: eval-train bench-train
eval: eval-train
eval-train: $(BIN)/semid-train
	$(PYTHON) trainer/eval_table.py --bin $(BIN) --data $(LASTFM) --work $(EVAL_DIR) \
		--seeds "$(EVAL_SEEDS)" --epochs $(EVAL_EPOCHS) --out bench/RESULTS-train.md

bench-train: $(BIN)/semid-train
	$(PYTHON) trainer/bench_train.py --bin $(BIN) --data $(LASTFM) --work $(EVAL_DIR)/bench

bench: bench-train
