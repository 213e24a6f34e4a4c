/*
 * env.h - numbers from the environment, read strictly.
 *
 * atoi took "8x" for 8, "-1" and "" for what they are not, and
 * "99999999999" for whatever its overflow made of it, without a word.  A
 * value here is decimal digits and nothing else (no sign, space, hex or
 * unit), within the bounds the caller gives; the caller decides what a
 * value that is not one means (ignored with a warning, or refused), and
 * says so naming the variable and the value.  Callers read the variable
 * themselves, getenv("NAME") with its name written out (tests/meta's
 * test_doc_contracts finds every variable read so, and checks that a
 * document names it); an empty value is usually taken as unset, as libuv
 * and OpenBLAS take it.  Pure functions, thread-safe.
 */
#ifndef SID_ENV_H
#define SID_ENV_H

#include <stddef.h>

/* @s (may be NULL) as a whole number in [@lo, @hi] into *@v: 0, or -1 when
 * it is NULL, empty, not only decimal digits, or out of bounds (*@v then
 * untouched). */
int sid_whole_parse(const char *s, long lo, long hi, long *v);

/* A test hook's milliseconds, the value of its environment variable (may
 * be NULL; tests set it to hold a window open): a whole number up to 10
 * minutes, else 0, for none; nothing to say, as no one else sets it. */
long sid_env_test_ms(const char *value);

/* @value (may be NULL) quoted for a message: at most 40 bytes of it in
 * double quotes, a byte that is not printable ASCII, a '"' or a '\' as
 * '?', "..." after the quote when it was longer.  Into @buf, returned. */
#define SID_ENV_SHOWN_MAX 48
const char *sid_env_shown(const char *value, char buf[SID_ENV_SHOWN_MAX]);

#endif
