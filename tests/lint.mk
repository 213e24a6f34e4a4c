# tests/lint.mk - static analysis (included by the top-level Makefile).
#
#   make lint    clang-format's check that every C file of the repository (tests and
#                bench too) is formatted as .clang-format says, then cppcheck, gcc
#                -fanalyzer and clang-tidy over the library and the three programs
#                (core/ cli/ server/ trainer/; not tests/, tests/fuzz/ or bench/), with
#                the committed configuration: .clang-tidy (the checks; a false
#                positive is silenced at its line, with its reason, by a
#                NOLINTNEXTLINE(check) that tests/lint/tidy_gate.py holds to
#                clang-tidy's findings on a copy of the sources with the NOLINTs
#                defused, since clang-tidy 14 cannot say which went unused),
#                tests/lint/cppcheck.supp (each false positive cppcheck reports,
#                with its reason, matched on the text of its line, by
#                tests/lint/cppcheck_gate.py), tests/lint/gcc_analyzer.supp (the
#                same for gcc's analyser, tests/lint/gcc_analyzer_gate.py) and
#                tests/lint/analyzer_model.h (force-included for clang-tidy and
#                gcc: what sid_error_set returns).  Any finding not suppressed
#                fails it, and so does a suppression or a NOLINT that no longer
#                matches a finding.
#
# The compilation database ($(LINT_O)/compile_commands.json) is written from the
# build's own flags (FINAL_CFLAGS, less -MMD -MP -Werror), so nothing records a
# build to get it.  cppcheck reads it too but not its -include: it reports the
# same here with the model or without.  cppcheck and clang-tidy are Debian
# packages installed (as root) by the deps rule when missing, as fuzz-deps
# does for clang; LINT_JOBS files are analysed at once (default: the cores).

LINT_O ?= $(O)/lint
LINT_DEB_PACKAGES := cppcheck clang-tidy clang-format
# every C file `make format` formats
FORMAT_SRC = $(wildcard core/*.[ch] cli/*.[ch] server/*.[ch] trainer/*.[ch] tests/*/*.[ch] \
	bench/*.[ch])
LINT_SRC := $(sort $(CORE_SRC) $(CLI_SRC) $(SERVER_SRC) $(TRAINER_SRC))
LINT_MODEL := tests/lint/analyzer_model.h
LINT_CFLAGS = $(filter-out -MMD -MP -Werror,$(FINAL_CFLAGS))
LINT_JOBS ?= $(NPROC)

.PHONY: lint lint-deps lint-db
lint-deps:
	@$(MAKE) --no-print-directory deps PKG_LIST="$(LINT_DEB_PACKAGES)"

# One entry per file; core/err.c defines the functions the model's macros
# rewrite, so it is analysed without the model.
lint-db: | pkgs
	@mkdir -p $(LINT_O)
	@{ echo '['; sep=' '; for f in $(LINT_SRC); do \
		model="-include $(LINT_MODEL)"; [ "$$f" = core/err.c ] && model=; \
		printf '%s{"directory": "%s", "file": "%s",\n  "command": "%s %s %s -c %s"}\n' \
			"$$sep" "$(CURDIR)" "$$f" "$(CC)" "$(LINT_CFLAGS)" "$$model" "$$f"; \
		sep=','; \
	done; echo ']'; } > $(LINT_O)/compile_commands.json

CPPCHECK_FLAGS := --enable=warning,performance,portability --inconclusive --quiet
# gcc 12's analyser (about 45 s of CPU here, against clang-tidy's 90) with two of its
# warnings left out, every one of their findings a false positive (when it was
# added: 20 findings in all, none real):
#   -Wanalyzer-malloc-leak           14: memory stored through a computed index
#                                    (s->codes, w[i].x, out->meta[i].key) or a
#                                    container's field taken for leaked; leaks are
#                                    clang-analyzer's unix.Malloc's, and LeakSanitizer's
#                                    in make test-sanitize
#   -Wanalyzer-shift-count-overflow  1: a shift of an 8-lane vector taken for a shift
#                                    of a 3-bit type (trainer/nn.c)
# The other five are in tests/lint/gcc_analyzer.supp.
GCC_ANALYZER_FLAGS := -Wno-analyzer-malloc-leak -Wno-analyzer-shift-count-overflow
lint: lint-deps lint-db
	@echo "semid: lint: clang-format"
	@clang-format --dry-run --Werror $(FORMAT_SRC) || \
		{ echo "semid: lint: the files above are not formatted as .clang-format says; make format formats them" >&2; exit 1; }
	@echo "semid: lint: cppcheck"
	@$(PYTHON) tests/lint/cppcheck_gate.py tests/lint/cppcheck.supp -- cppcheck \
		--project=$(LINT_O)/compile_commands.json --relative-paths=$(CURDIR) \
		$(CPPCHECK_FLAGS) -j$(LINT_JOBS)
	@echo "semid: lint: gcc -fanalyzer"
	@$(PYTHON) tests/lint/gcc_analyzer_gate.py -j$(LINT_JOBS) $(LINT_O)/compile_commands.json \
		tests/lint/gcc_analyzer.supp $(GCC_ANALYZER_FLAGS)
	@echo "semid: lint: clang-tidy"
	@$(PYTHON) tests/lint/tidy_gate.py -j$(LINT_JOBS) $(LINT_O)/compile_commands.json \
		$(LINT_O)/tidy-tree -- clang-tidy --quiet
	@echo "semid: lint: clean"
