# tests/eval.mk - the short real-data evaluation CI runs (make eval-smoke).
# It reads ../shared/data/lastfm-2k, which exists beside the checkout in CI
# but not for a user who cloned the repository, so it is not part of make
# test; the full evaluation is make eval (trainer/module.mk).
.PHONY: eval-smoke
eval-smoke: $(BIN)/semid-train
	$(PYTHON) tests/run.py tests/eval/smoke_lastfm.py
