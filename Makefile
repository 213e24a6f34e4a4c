# semid - one non-recursive Makefile for the library, the three programs,
# the tests and the benchmarks.
#
#   make            build bin/semid, bin/semid-server, bin/semid-train
#   make run        install missing Debian packages, build, train a demo model, serve it
#   make test       install missing packages, build, run every test CI runs
#   make bench      benchmarks (figures go to bench/RESULTS.md by hand; BENCH_OUT=bench/out)
#   make bench-smoke  each benchmark at a tiny size, its report checked (make test too)
#   make eval       real-data evaluation on ../shared/data (not needed by users)
#   make help       every target a user runs, and the variables
#   make install    programs, libsemid.a with its headers and semid.pc, and the
#                   contracts (proto/*.md, openapi.json) under PREFIX (/usr/local), staged in DESTDIR
#
# User CFLAGS/LDFLAGS are honoured but cannot drop the flags the build needs
# (redis's FINAL_CFLAGS idea).  WERROR=1 turns warnings into errors (CI);
# SANITIZE=address,undefined builds everything with those sanitizers.

SHELL := /bin/bash
.DEFAULT_GOAL := all
.SUFFIXES:

CC ?= cc
CFLAGS ?= -O2 -g
LDFLAGS ?=
PYTHON := /usr/bin/python3
NPROC := $(shell nproc 2>/dev/null || echo 1)
# libpq: its headers only (PKGS_HEADERS); core/registry_pg.c loads it
# (dlopen) when a PostgreSQL store is named.  Tests that call it link it.
PKGS := openblas jansson libmicrohttpd libuv sqlite3
PKGS_HEADERS := libpq
PKGS_TEST := check libpq

# What a fresh Debian 12 needs to build and run (DEB_PACKAGES), and what the
# tests need on top (DEB_PACKAGES_TEST: Check, numpy for reference
# computations, a PostgreSQL server for the registry tests, YAML for the
# deploy/ checks).  `make deps` / `make deps-test` install the missing ones
# (as root, after `apt-get update`); run/test call them.  Installed means
# dpkg's status "<want> ok installed": "install", or "hold" for a package
# held at its version (apt-mark hold).  deps-test then provides promtool
# (rule `promtool` below) without installing its package.
DEB_PACKAGES := build-essential pkg-config libopenblas-dev libjansson-dev libmicrohttpd-dev \
	libuv1-dev libsqlite3-dev libpq-dev check libsubunit-dev python3 python3-numpy curl
DEB_PACKAGES_TEST := $(DEB_PACKAGES) postgresql wrk python3-yaml

WARN := -Wall -Wextra -Wshadow -Wno-unused-parameter -Wstrict-prototypes -Wmissing-prototypes
FINAL_CFLAGS = $(CFLAGS) -std=gnu11 -pthread -D_GNU_SOURCE $(WARN) -MMD -MP -Icore \
	$(shell pkg-config --cflags $(PKGS) $(PKGS_HEADERS))
FINAL_LDFLAGS = $(LDFLAGS) -pthread
LIBS = $(shell pkg-config --libs $(PKGS)) -lm
# OpenBLAS does the trainer's matrix products only (the encoder is a kernel
# of its own, core/encode.c): semid and semid-server do not load it, nor the
# thread it starts at load, which under a memory limit hung them at exit.
LIBS_NO_BLAS = $(shell pkg-config --libs $(filter-out openblas,$(PKGS))) -lm
CHECK_CFLAGS = $(shell pkg-config --cflags $(PKGS_TEST))
CHECK_LIBS = $(shell pkg-config --libs $(PKGS_TEST))
ifeq ($(WERROR),1)
FINAL_CFLAGS += -Werror
endif
ifneq ($(SANITIZE),)
FINAL_CFLAGS += -fsanitize=$(SANITIZE) -fno-omit-frame-pointer -fno-sanitize-recover=all
FINAL_LDFLAGS += -fsanitize=$(SANITIZE)
# gcc links UBSan's runtime as a shared library whose 6 MB of zeroed globals
# LeakSanitizer reads through at every exit (20-34 ms of page faults a
# process here, on thousands of test processes); linked into the program it
# costs nothing.  clang (the fuzz build) has no such flag and needs none.
# (Probed once here: FINAL_LDFLAGS is expanded again at every link.)
ifneq ($(findstring undefined,$(SANITIZE)),)
UBSAN_STATIC := $(shell echo 'int main(void){return 0;}' | $(CC) -x c - -fsanitize=undefined \
	-static-libubsan -o /dev/null 2>/dev/null && echo -static-libubsan)
FINAL_LDFLAGS += $(UBSAN_STATIC)
endif
endif

# Output directories; helpers working side by side use their own (make O=/tmp/x BIN=/tmp/x/bin).
O ?= build
BIN ?= bin
# Where the benchmarks write their reports (not committed; make bench-smoke's
# test names a temporary directory).
BENCH_OUT ?= bench/out
export SEMID_BIN := $(abspath $(BIN))
export SEMID_O := $(abspath $(O))
export SEMID_SANITIZE := $(SANITIZE)
# Where `make deps-test` unpacks promtool and tests/deploy looks for it
# (exported, so the sanitizer build's sub-make reuses the same copy).
SEMID_PROMTOOL ?= $(abspath $(O))/tools/promtool
export SEMID_PROMTOOL
obj = $(patsubst %.c,$(O)/%.o,$(1))

CORE_SRC := $(wildcard core/*.c)
CLI_SRC := $(wildcard cli/*.c)
SERVER_SRC := $(wildcard server/*.c)
TRAINER_SRC := $(wildcard trainer/*.c)

LIBSEMID := $(O)/libsemid.a
SERVER_LIBOBJ := $(call obj,$(filter-out server/main.c,$(SERVER_SRC)))
TRAINER_LIBOBJ := $(call obj,$(filter-out trainer/main.c,$(TRAINER_SRC)))

PROGRAMS := $(BIN)/semid
ifneq ($(filter server/main.c,$(SERVER_SRC)),)
PROGRAMS += $(BIN)/semid-server
endif
ifneq ($(filter trainer/main.c,$(TRAINER_SRC)),)
PROGRAMS += $(BIN)/semid-train
endif

# Check unit tests: tests/<dir>/check_<name>.c -> $(O)/tests/<dir>/check_<name>,
# linked with that directory's objects (minus main.c) and the core library.
CHECK_SRC := $(wildcard tests/core/check_*.c tests/server/check_*.c tests/trainer/check_*.c \
	tests/cli/check_*.c)
CHECK_BINS := $(patsubst %.c,$(O)/%,$(CHECK_SRC))
# kept after linking (pattern-rule objects are intermediate, and make would
# delete them and compile every suite again on the next build)
.SECONDARY: $(addsuffix .o,$(CHECK_BINS))
CLI_LIBOBJ := $(call obj,$(filter-out cli/main.c,$(CLI_SRC)))

.PHONY: all deps deps-test promtool run test test-build check-bins bench eval clean format install uninstall \
	help
# core/mlp.c compiles slowest by far (its always-inline AVX kernels: 5 s at -O2 here, 12-45 s
# under the sanitizers), so -j builds start it first rather than eighth of the library, while
# the other cores compile the rest.  MLP_CFLAGS: flags for it alone (the fuzz build's).
MLP_OBJ := $(call obj,core/mlp.c)
$(MLP_OBJ): FINAL_CFLAGS += $(MLP_CFLAGS)
all: $(MLP_OBJ) $(PROGRAMS)

# Before the first compile: a compiler, pkg-config and every library's .pc
# file, or one message naming the Debian packages that are missing (without
# it a fresh machine's `make` printed a screen of pkg-config complaints and
# then a missing header).  Each is asked once per make.
PKG_DEB := openblas=libopenblas-dev jansson=libjansson-dev libmicrohttpd=libmicrohttpd-dev \
	libuv=libuv1-dev sqlite3=libsqlite3-dev libpq=libpq-dev check=check
define check_pkgs
	@missing=; \
	command -v $(firstword $(CC)) >/dev/null || missing="$$missing build-essential"; \
	if command -v pkg-config >/dev/null; then \
		for pd in $(foreach p,$(1),$(or $(filter $(p)=%,$(PKG_DEB)),$(p)=$(p))); do \
			pkg-config --exists "$${pd%%=*}" || missing="$$missing $${pd#*=}"; \
		done; \
	else missing="$$missing pkg-config"; fi; \
	if [ -n "$$missing" ]; then \
		echo "semid: cannot build: Debian packages missing:$$missing;" \
			"\`make deps\` (as root) installs them, as \`make run\` and \`make test\` do" >&2; \
		exit 2; \
	fi
endef
.PHONY: pkgs pkgs-test
pkgs:
	$(call check_pkgs,$(PKGS) $(PKGS_HEADERS))
pkgs-test:
	$(call check_pkgs,$(PKGS) $(PKGS_HEADERS) $(PKGS_TEST))

$(O)/%.o: %.c | pkgs
	@mkdir -p $(dir $@)
	$(CC) $(FINAL_CFLAGS) -c -o $@ $<

$(O)/tests/%.o: tests/%.c | pkgs-test
	@mkdir -p $(dir $@)
	$(CC) $(FINAL_CFLAGS) $(CHECK_CFLAGS) -Itests -c -o $@ $<

$(LIBSEMID): $(call obj,$(CORE_SRC))
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(BIN)/semid: $(call obj,$(CLI_SRC)) $(LIBSEMID)
	@mkdir -p $(BIN)
	$(CC) $(FINAL_LDFLAGS) -o $@ $^ $(LIBS_NO_BLAS)

$(BIN)/semid-server: $(O)/server/main.o $(SERVER_LIBOBJ) $(LIBSEMID)
	@mkdir -p $(BIN)
	$(CC) $(FINAL_LDFLAGS) -o $@ $^ $(LIBS_NO_BLAS)

$(BIN)/semid-train: $(O)/trainer/main.o $(TRAINER_LIBOBJ) $(LIBSEMID)
	@mkdir -p $(BIN)
	$(CC) $(FINAL_LDFLAGS) -o $@ $^ $(LIBS)

$(O)/tests/core/check_%: $(O)/tests/core/check_%.o $(LIBSEMID)
	$(CC) $(FINAL_LDFLAGS) -o $@ $^ $(LIBS) $(CHECK_LIBS)
$(O)/tests/cli/check_%: $(O)/tests/cli/check_%.o $(CLI_LIBOBJ) $(LIBSEMID)
	$(CC) $(FINAL_LDFLAGS) -o $@ $^ $(LIBS) $(CHECK_LIBS)
$(O)/tests/server/check_%: $(O)/tests/server/check_%.o $(SERVER_LIBOBJ) $(LIBSEMID)
	$(CC) $(FINAL_LDFLAGS) -o $@ $^ $(LIBS) $(CHECK_LIBS)
$(O)/tests/trainer/check_%: $(O)/tests/trainer/check_%.o $(TRAINER_LIBOBJ) $(LIBSEMID)
	$(CC) $(FINAL_LDFLAGS) -o $@ $^ $(LIBS) $(CHECK_LIBS)

check-bins: $(MLP_OBJ) $(CHECK_BINS)

# make install [PREFIX=/usr/local] [DESTDIR=staging]: the library is the static
# libsemid.a with its headers in include/semid/ and a pkg-config file, so a
# program links it with `cc app.c $$(pkg-config --cflags --libs semid)`.
PREFIX ?= /usr/local
VERSION := $(shell sed -n 's/^\#define SID_VERSION[[:space:]]*"\([^"]*\)".*/\1/p' core/model.h)
# The documents keep the repository's layout under share/doc/semid, so that
# their links to one another resolve there too (api.md's ../config/README.md,
# which `semid-server --help` names for the keys), with the example config
# and the deploy files deploy/README.md explains (its docker-smoke.sh too,
# executable, as the README runs it there).
DOC_FILES := README.md $(wildcard config/* proto/*.md) proto/openapi.json deploy/README.md \
	deploy/docker-smoke.sh $(wildcard deploy/*/*)
INSTALL_DIRS := bin lib/pkgconfig include/semid share/doc/semid \
	$(addprefix share/doc/semid/,$(sort $(filter-out ./,$(dir $(DOC_FILES)))))
install: all $(LIBSEMID)
	install -d $(addprefix $(DESTDIR)$(PREFIX)/,$(INSTALL_DIRS))
	install -m 755 $(PROGRAMS) $(DESTDIR)$(PREFIX)/bin/
	install -m 644 $(LIBSEMID) $(DESTDIR)$(PREFIX)/lib/
	install -m 644 $(wildcard core/*.h) $(DESTDIR)$(PREFIX)/include/semid/
	for f in $(DOC_FILES); do \
		case $$f in *.sh) m=755;; *) m=644;; esac; \
		install -m $$m $$f $(DESTDIR)$(PREFIX)/share/doc/semid/$$f || exit 1; \
	done
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@VERSION@|$(VERSION)|' core/semid.pc.in \
		> $(DESTDIR)$(PREFIX)/lib/pkgconfig/semid.pc
uninstall:
	rm -f $(addprefix $(DESTDIR)$(PREFIX)/bin/,$(notdir $(PROGRAMS))) \
		$(DESTDIR)$(PREFIX)/lib/libsemid.a $(DESTDIR)$(PREFIX)/lib/pkgconfig/semid.pc
	rm -rf $(DESTDIR)$(PREFIX)/include/semid $(DESTDIR)$(PREFIX)/share/doc/semid

# apt waits up to 10 minutes for a lock another apt holds: a fresh cloud
# machine runs unattended-upgrades at first boot, and `make run` there
# failed at once with "Could not get lock /var/lib/dpkg/lock-frontend".
APT_WAIT := -o DPkg::Lock::Timeout=600
deps deps-test: PKG_LIST = $(if $(filter deps-test,$@),$(DEB_PACKAGES_TEST),$(DEB_PACKAGES))
deps deps-test:
	@missing=""; for p in $(PKG_LIST); do \
		dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q ' ok installed$$' \
			|| missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" != 0 ]; then \
			echo "semid: missing Debian packages:$$missing (run as root, or apt-get install them)" >&2; \
			exit 1; \
		fi; \
		echo "semid: installing missing Debian packages:$$missing"; \
		apt-get $(APT_WAIT) update -qq && DEBIAN_FRONTEND=noninteractive \
			apt-get $(APT_WAIT) install -y -qq --no-install-recommends $$missing; \
	fi
	$(if $(filter deps-test,$@),@$(MAKE) --no-print-directory promtool PROMTOOL_AUTO=1)

# promtool, for tests/deploy's alert rule unit tests.  Debian ships it only in
# the prometheus package, which also installs and starts the Prometheus
# daemon, so that package is never installed: `apt-get download prometheus`
# (any user; as root, `apt-get update` and a second try if the first fails)
# fetches its .deb into a temporary directory beside $(SEMID_PROMTOOL),
# `dpkg-deb --fsys-tarfile | tar` unpacks only ./usr/bin/promtool from it,
# and that file, once it runs, is moved to $(SEMID_PROMTOOL)
# ($(O)/tools/promtool unless set); the .deb is deleted.  Nothing is done
# when a promtool is on PATH or already unpacked there.  When the download
# fails (no network, no package lists) it says so, leaves
# $(SEMID_PROMTOOL).failed and exits 0: tests/deploy then skips its promtool
# checks, and later `make test` runs do not try again (half a minute offline)
# until `make promtool` is run by hand.
promtool:
	@p='$(SEMID_PROMTOOL)'; \
	if command -v promtool >/dev/null || [ -x "$$p" ]; then exit 0; fi; \
	if [ -n "$(PROMTOOL_AUTO)" ] && [ -e "$$p.failed" ]; then \
		echo "semid: no promtool: an earlier download failed ($$p.failed);" \
			"\`make promtool\` tries again" >&2; \
		exit 0; \
	fi; \
	mkdir -p "$$(dirname "$$p")" && tmp=$$(mktemp -d "$$p.XXXXXX") || exit 0; \
	trap 'rm -rf "$$tmp"' EXIT; \
	get() { (cd "$$tmp" && apt-get download -qq prometheus) >"$$tmp/log" 2>&1; }; \
	if ! get && [ "$$(id -u)" = 0 ]; then apt-get update -qq >"$$tmp/log" 2>&1 && get; fi; \
	deb=$$(ls "$$tmp"/prometheus_*.deb 2>/dev/null); \
	if [ -z "$$deb" ]; then \
		echo "semid: no promtool: could not download Debian's prometheus package" \
			"($$(grep -v '^W:' "$$tmp/log" | tail -n 1)); tests/deploy skips its promtool checks" >&2; \
		touch "$$p.failed"; \
		exit 0; \
	fi; \
	if dpkg-deb --fsys-tarfile "$$deb" | tar -x -C "$$tmp" ./usr/bin/promtool \
		&& "$$tmp/usr/bin/promtool" --version >/dev/null 2>&1 \
		&& mv "$$tmp/usr/bin/promtool" "$$p"; then \
		rm -f "$$p.failed"; \
		echo "semid: unpacked promtool from $${deb##*/} into $$p (package not installed)"; \
	else \
		echo "semid: no promtool: could not unpack it from $${deb##*/}" >&2; \
	fi

# Every test CI runs: Check unit tests, then the python-driven integration
# tests (tests/**/test_*.py, Debian's python3 + numpy), summed by tests/run.py,
# SEMID_TEST_JOBS suites at a time (one more than the cores: most suites spend
# their time waiting on the timeouts they test, fsync or a server, so on 2 cores
# three at a time took 107 s plain and 209 s sanitized against 146 s and 266 s
# for two, and four no less than three), the longest of the last run
# (SEMID_TEST_TIMES) first, and beside them suites that run had idle
# (tests/run.py).  A suite with no local time of this build takes the one in
# SEMID_TEST_SEED, so that a fresh clone (CI's) schedules as a second run
# does; `make test-seed` after `make test` and `make test-sanitize` refreshes it.
# TEST_SKIP: patterns of suites left out (test-sanitize's SANITIZE_SKIP).
SEMID_TEST_JOBS ?= $(shell echo $$(($(NPROC) + 1)))
SEMID_TEST_TIMES ?= $(O)/test-times.json
SEMID_TEST_SEED ?= tests/suite-times.json
test:
	@$(MAKE) --no-print-directory deps-test
	@$(MAKE) --no-print-directory -j$(NPROC) test-build
	@SEMID_TEST_JOBS=$(SEMID_TEST_JOBS) SEMID_TEST_TIMES=$(SEMID_TEST_TIMES) \
		SEMID_TEST_SEED=$(SEMID_TEST_SEED) $(PYTHON) tests/run.py $(CHECK_BINS) \
		$(filter-out $(TEST_SKIP),$(sort $(wildcard tests/*/test_*.py)))

.PHONY: test-seed
test-seed:
	$(PYTHON) tests/run.py --merge-times $(SEMID_TEST_TIMES) $(SEMID_TEST_SEED)

test-build: all check-bins

# The demo: synthetic data the project generates (clustered content
# embeddings, clicks from a latent preference model with popularity skew), a
# short DAS training run, then the server on it.  DEMO_EPOCHS / LISTEN adjust.
DEMO ?= demo
DEMO_EPOCHS ?= 6
LISTEN ?= 127.0.0.1:8080
DEMO_DATA := $(DEMO)/data
run:
	@$(MAKE) --no-print-directory deps
	@$(MAKE) --no-print-directory -j$(NPROC) all
	@$(MAKE) --no-print-directory demo-model
	@echo "semid: serving $(DEMO)/model.safetensors on http://$(LISTEN) (Ctrl-C stops; try the README's curl)"
	exec $(BIN)/semid-server --model $(DEMO)/model.safetensors --listen $(LISTEN)

.PHONY: demo-model
demo-model: $(DEMO)/model.safetensors

# semid-train, built first when it is missing (`make demo-model` on a fresh
# clone ran a bin/semid-train that was not there); one built is used as it
# is (not a prerequisite: every rebuild of it would train the model again).
DEMO_TRAINER := $(if $(wildcard $(BIN)/semid-train),,$(BIN)/semid-train)

$(DEMO_DATA)/train.tsv: | $(DEMO_TRAINER)
	@mkdir -p $(DEMO_DATA)
	$(BIN)/semid-train gen --out $(DEMO_DATA) --items 2000 --users 1500 --interactions 40000 \
		--dim 64 --seed 7

# The epochs the demo model was trained with, so that another DEMO_EPOCHS
# trains it again (a file that changes only when the value does).
$(DEMO)/.epochs: FORCE
	@mkdir -p $(DEMO)
	@echo $(DEMO_EPOCHS) | cmp -s - $@ || echo $(DEMO_EPOCHS) > $@

.PHONY: FORCE
FORCE:

# semid-train and its gen rename their files into place whole, so a Ctrl-C
# never leaves half of one: make must not delete them when a signal stops
# the recipe once they changed (it deleted the model just published, and
# with it the one replaced).
.PRECIOUS: $(DEMO)/model.safetensors $(DEMO_DATA)/train.tsv

# The evaluation goes to eval.json.new, renamed over eval.json once the model
# is published: `> eval.json` emptied the evaluation of the model still
# served when a retraining (another DEMO_EPOCHS) was stopped or failed.
$(DEMO)/model.safetensors: $(DEMO_DATA)/train.tsv $(DEMO)/.epochs | $(DEMO_TRAINER)
	$(BIN)/semid-train --items $(DEMO_DATA)/items.npy --users $(DEMO_DATA)/users.npy \
		--train $(DEMO_DATA)/train.tsv --test $(DEMO_DATA)/test.tsv \
		--test-cold $(DEMO_DATA)/cold_test.tsv --cold-items $(DEMO_DATA)/cold_items.txt \
		--epochs $(DEMO_EPOCHS) --out $@ > $(DEMO)/eval.json.new \
		|| { s=$$?; rm -f $(DEMO)/eval.json.new; exit $$s; }
	@mv -f $(DEMO)/eval.json.new $(DEMO)/eval.json
	@echo "semid: trained $@ (evaluation in $(DEMO)/eval.json)"

# Per-directory fragments (bench/*.mk, server/module.mk, ...) add targets.
-include $(wildcard */*.mk)

# make bench-smoke: every benchmark of `make bench`, and soak, through its own make
# target at a tiny size (SEMID_BENCH_SMOKE=1, which each program and script honours),
# each report checked for its rows and columns, never for its figures
# (tests/bench/test_bench_smoke.py, which `make test` runs too; so test-build builds
# the C benchmarks, BENCH_PROGS, unless TEST_SKIP leaves that suite out).
.PHONY: bench-smoke
bench-smoke: all $(BENCH_PROGS)
	$(PYTHON) tests/bench/test_bench_smoke.py
test-build: $(if $(filter-out $(TEST_SKIP),tests/bench/test_bench_smoke.py),$(BENCH_PROGS))

clean:
	rm -rf $(O) $(BIN)

# `make help`: the targets a user or an operator runs (tests/meta/test_make_help.py
# holds it to the targets the Makefiles define).
define HELP_TEXT
semid: make TARGET [VAR=value ...]

Use:
  all (default)   build bin/semid, bin/semid-server, bin/semid-train
  run             install missing Debian packages, build, train a demo model, serve it
                  (LISTEN=127.0.0.1:8080, DEMO_EPOCHS=6)
  demo-model      only train the demo model (demo/model.safetensors)
  install, uninstall
                  programs, libsemid.a, headers, semid.pc and proto/ under PREFIX=/usr/local
                  (DESTDIR= stages), or remove them
  deps            install the Debian packages the build needs (as root)
  clean           remove the build output ($$O and $$BIN)
Test:
  test            install missing packages, build, run every test CI runs
  deps-test       install the packages the tests need
  promtool        fetch promtool (for the alert and dashboard checks) once more
  test-build      build the programs and the Check suites without running them
  test-sanitize   the suite under ASan+UBSan (not tests/meta, deploy, bench)
  test-valgrind   the server's integration tests under memcheck
  test-tsan       the server's, CLI's and core's suites under ThreadSanitizer
  test-seed       after test and test-sanitize: refresh tests/suite-times.json
  fuzz-build, fuzz-smoke, fuzz
                  the libFuzzer harnesses: build, a short run (CI), a long run
  eval-smoke      a short real-data evaluation (needs ../shared/data; CI)
  lint            every C file formatted as .clang-format says, then cppcheck,
                  gcc -fanalyzer and clang-tidy over core/ cli/ server/ trainer/
                  (CI); any finding not suppressed fails (.clang-tidy, tests/lint/)
  format          clang-format every C file
Measure:
  bench           every benchmark below (figures go to bench/RESULTS.md by hand)
  bench-encode bench-hotpath bench-cli bench-http bench-assign bench-delete
  bench-backup bench-reassign bench-burst bench-registry bench-train
  bench-smoke     every benchmark above and soak at a tiny size, its report checked
                  (never its figures; `make test` runs it too)
  eval            the real-data evaluation on ../shared/data/lastfm-2k
  soak            mixed encode and assign load with model swaps (SOAK_SECS=600)

Variables: O=build BIN=bin (output directories), BENCH_OUT=bench/out (the benchmarks'
reports), WERROR=1, SANITIZE=address,undefined, CFLAGS, LDFLAGS.  README.md says more.
endef
export HELP_TEXT
help:
	@echo "$$HELP_TEXT"

format:
	clang-format -i $(FORMAT_SRC)

-include $(shell find $(O) -name '*.d' 2>/dev/null)
