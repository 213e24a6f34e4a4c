/* tests/lint/analyzer_model.h - what `make lint` tells clang-tidy's analyser
 * that it cannot see itself (force-included into every file it checks but
 * core/err.c, whose definitions the macros below would rewrite; cppcheck,
 * which does not read the -include, reports the same here without it).
 *
 * sid_error_set and sid_error_set_at return their code argument (err.c), a
 * negative SID_E* at every call site.  Analysing one file at a time, the
 * analyser takes the call for an unknown int, so after
 * `return sid_error_set(err, SID_EINVAL, ...);` in a callee it also walks the
 * caller's path where that was 0 (success) and reports a use of whatever the
 * failed step left unset.  Spelling the return out as a comma expression gives
 * it the value; the call stays, so its format checking does too. */
#ifndef SID_ANALYZER_MODEL_H
#define SID_ANALYZER_MODEL_H
#include "err.h"
#define sid_error_set(err, code, ...) (sid_error_set((err), (code), __VA_ARGS__), (code))
#define sid_error_set_at(err, code, idx, ...)                                                      \
	(sid_error_set_at((err), (code), (idx), __VA_ARGS__), (code))
#endif
