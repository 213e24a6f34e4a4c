# tests/fuzz.mk - fuzzing and sanitizer targets (included by the top-level Makefile).
#
#   make fuzz            build the libFuzzer harnesses (tests/fuzz/fuzz_*.c: model loader,
#                        safetensors, .npy, request decoder, trainer readers, server config, registry
#                        sids and import files) with clang and
#                        -fsanitize=fuzzer,address,undefined, then run each for FUZZ_SECS
#                        seconds (default 60) from its seeds (tests/fuzz/corpus/<target>) and
#                        regression inputs (tests/fuzz/regress/<target>).  New inputs it finds
#                        accumulate in $(FUZZ_O)/work/<target>; a crash stops it and leaves
#                        the input as $(FUZZ_O)/crash-<target>-*.  FUZZ_TARGETS picks harnesses,
#                        FUZZ_JOBS how many run at once (default: the core count).
#   make fuzz-smoke      what CI runs: every committed seed and regression input replayed,
#                        then each harness fuzzed for FUZZ_SMOKE_SECS (default 10) from a fresh
#                        work directory.
#   make test-sanitize   `make test` with SANITIZE=address,undefined in its own output dirs
#                        (O=$(O)/asan, BIN=$(O)/asan/bin), so the Check suites and the python
#                        tests (through $SEMID_BIN) run the sanitized library and programs;
#                        the suites of the tooling, deploy/ and bench/ are left out.
#   make test-valgrind   the server's integration tests with semid-server under valgrind
#                        memcheck (--leak-check=full, any error fails), through the test
#                        library's SEMID_SERVER_WRAPPER hook.
#   make test-tsan       ThreadSanitizer over the threaded programs: semid-server and semid
#                        built with SANITIZE=thread in $(O)/tsan, then the Check suites of
#                        core, server and cli and the python tests of the server, the CLI
#                        and core against them (a report fails the test).  semid-train comes
#                        from the normal build: built with TSan it crashes before main, as
#                        TSan instruments the ifunc resolvers of its target_clones kernels.
#                        Check's timeouts are 4 times longer (CK_TIMEOUT_MULTIPLIER), the
#                        python tests' waits 3 times (semid_testlib.SLOW).
#                        Not in CI (time: about 8 minutes on 2 cores).
#
# The harnesses link the same objects as the programs (libsemid.a, the server's and the
# trainer's non-main objects), built by a second make of this tree with CC=clang into
# $(FUZZ_O).  A crash found once becomes a file in tests/fuzz/regress/<target>/.
# tests/fuzz/make_corpus.py regenerates the seeds and dictionaries.

FUZZ_TARGETS ?= model safetensors npy api trainer_data config registry
FUZZ_O ?= $(O)/fuzz
FUZZ_CC ?= clang
FUZZ_SECS ?= 60
FUZZ_SMOKE_SECS ?= 10
FUZZ_DEB_PACKAGES := clang libclang-rt-14-dev
VALGRIND_DEB_PACKAGES := valgrind
FUZZ_JOBS ?= $(NPROC)

FUZZ_BINS = $(patsubst %,$(FUZZ_O)/tests/fuzz/fuzz_%,$(FUZZ_TARGETS))

# Objects of the harnesses see the server's and the trainer's headers.
$(O)/tests/fuzz/%.o: FINAL_CFLAGS += -Iserver -Itrainer

# make test compiles the harnesses too (with the build's compiler, no
# libFuzzer), so that a change of the interfaces they call breaks the
# build there rather than only in CI's fuzz-smoke; the plain build does
# (test-sanitize's would only repeat it).
ifeq ($(SANITIZE),)
test-build: $(patsubst %,$(O)/tests/fuzz/fuzz_%.o,$(FUZZ_TARGETS))
endif

# The harness objects are not intermediates to delete after linking.
.SECONDARY: $(patsubst %,$(O)/tests/fuzz/fuzz_%.o,$(FUZZ_TARGETS))

# Link step, run inside the clang make (O = $(FUZZ_O)).
$(O)/tests/fuzz/fuzz_%: $(O)/tests/fuzz/fuzz_%.o $(SERVER_LIBOBJ) $(TRAINER_LIBOBJ) $(LIBSEMID)
	$(CC) $(FINAL_LDFLAGS) -fsanitize=fuzzer -o $@ $^ $(LIBS)

.PHONY: fuzz fuzz-smoke fuzz-build fuzz-deps fuzz-link test-sanitize test-valgrind valgrind-deps \
	test-tsan
fuzz-link: $(MLP_OBJ) $(patsubst %,$(O)/tests/fuzz/fuzz_%,$(FUZZ_TARGETS))

# Missing Debian packages are installed (as root) by the Makefile's own deps rule.
fuzz-deps:
	@$(MAKE) --no-print-directory deps PKG_LIST="$(FUZZ_DEB_PACKAGES)"
valgrind-deps:
	@$(MAKE) --no-print-directory deps PKG_LIST="$(VALGRIND_DEB_PACKAGES)"

# clang's pointer-overflow check made core/mlp.c's always-inline AVX kernels 30-46 s of a
# 40 s build (13 s without; every other object compiles on the other core meanwhile), so
# it is left out there: ASan still bounds every access the harnesses make through them, and
# make test-sanitize's gcc build, whose check_mlp drives the kernels through every shape
# path, keeps it (2026-12-03, 2 cores).
fuzz-build: fuzz-deps
	@$(MAKE) --no-print-directory -j$(NPROC) O=$(FUZZ_O) BIN=$(FUZZ_O)/bin CC=$(FUZZ_CC) \
		CFLAGS="-O1 -g -fsanitize=fuzzer-no-link" SANITIZE=address,undefined \
		MLP_CFLAGS=-fno-sanitize=pointer-overflow FUZZ_TARGETS="$(FUZZ_TARGETS)" fuzz-link

# $(call fuzz_run,seconds,fresh|keep): every target in FUZZ_TARGETS, FUZZ_JOBS
# at a time (tests/fuzz/run.sh).
define fuzz_run
	@tests/fuzz/run.sh $(1) $(2) $(FUZZ_JOBS) $(FUZZ_O) $(FUZZ_TARGETS)
endef

fuzz: fuzz-build
	$(call fuzz_run,$(FUZZ_SECS),keep)

fuzz-smoke: fuzz-build
	$(call fuzz_run,$(FUZZ_SMOKE_SECS),fresh)

# A sanitizer report exits 86 (leaks 23), never a status a test expects from a program.
# Left out: the suites whose subject is not the library or the programs but the
# project's tooling (tests/meta: the test runner, the Makefile's rules, the docs'
# claims), its deployment files (tests/deploy) and the benchmarks' reports
# (tests/bench: each benchmark at a tiny size); what they run of the programs,
# the other suites run sanitized.  They cost this run about 110 of its 640
# CPU-seconds of tests (2026-12-02, 2 cores), and CI runs them in make test.
SANITIZE_SKIP := tests/meta/% tests/deploy/% tests/bench/%
# -g1: line tables and function names, all a report's stack trace reads (inlined frames
# included); the variables' debug information (-g) made this build 63 s instead of 46 on
# 2 cores (2026-12-03), core/mlp.c's kernels 28 s of it instead of 18.
SANITIZE_CFLAGS ?= -O2 -g1
test-sanitize:
	@ASAN_OPTIONS="exitcode=86:detect_leaks=1:$$ASAN_OPTIONS" \
	UBSAN_OPTIONS="print_stacktrace=1:exitcode=86:$$UBSAN_OPTIONS" \
		$(MAKE) --no-print-directory O=$(O)/asan BIN=$(O)/asan/bin SANITIZE=address,undefined \
		CFLAGS="$(SANITIZE_CFLAGS)" SEMID_TEST_TIMES=$(O)/test-times.json \
		TEST_SKIP="$(SANITIZE_SKIP)" test

# Memcheck over the server's integration tests.  Leaks count as errors (definite and
# indirect; "possible" leaks are libuv/OpenBLAS thread stacks and pools kept for the
# process lifetime).  valgrind's own report ends in the server log the tests read.
VALGRIND ?= valgrind --error-exitcode=99 --leak-check=full --num-callers=40 \
	--errors-for-leak-kinds=definite,indirect --show-leak-kinds=definite,indirect \
	--suppressions=tests/fuzz/valgrind.supp
test-valgrind: valgrind-deps all
	@grep -q SEMID_SERVER_WRAPPER tests/server/semid_testlib.py || { \
		echo "test-valgrind: tests/server/semid_testlib.py has no SEMID_SERVER_WRAPPER hook" >&2; \
		exit 1; }
	SEMID_SERVER_WRAPPER="$(VALGRIND)" $(PYTHON) tests/run.py $(sort $(wildcard tests/server/test_*.py))

TSAN_DIR = $(O)/tsan
# check_encode_cmd is left out: its kill-mid-write case (a child forked from a threaded
# process, killed by a signal raised in its SIGXFSZ handler) fails about one run in three
# under TSan only; `semid encode` itself runs under TSan in tests/cli/test_cli.py.
TSAN_CHECKS = $(patsubst %.c,$(TSAN_DIR)/%,$(filter-out tests/trainer/% \
	tests/cli/check_encode_cmd.c,$(CHECK_SRC)))
test-tsan: all
	@$(MAKE) --no-print-directory O=$(TSAN_DIR) BIN=$(TSAN_DIR)/bin SANITIZE=thread \
		CFLAGS="-O1 -g" -j$(NPROC) all check-bins
	@mkdir -p $(TSAN_DIR)/mix
	@ln -sf $(abspath $(TSAN_DIR)/bin/semid-server $(TSAN_DIR)/bin/semid $(BIN)/semid-train) \
		$(TSAN_DIR)/mix/
	@TSAN_OPTIONS="exitcode=86:halt_on_error=0:second_deadlock_stack=1:$$TSAN_OPTIONS" \
	CK_TIMEOUT_MULTIPLIER=$${CK_TIMEOUT_MULTIPLIER:-4} \
	SEMID_SANITIZE=thread SEMID_BIN=$(abspath $(TSAN_DIR)/mix) SEMID_O=$(abspath $(TSAN_DIR)) \
		$(PYTHON) tests/run.py $(TSAN_CHECKS) $(sort $(wildcard tests/core/test_*.py \
		tests/server/test_*.py tests/cli/test_*.py))
