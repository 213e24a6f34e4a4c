/*
 * err.h - error codes and the error record every core call can fill.
 *
 * Library calls return 0 on success or a negative SID_E* code, and, when the
 * caller passes a non-NULL struct sid_error, leave a one-line human message in
 * it that names the thing at fault (a tensor, a JSON field, a byte offset, a
 * file line, an input row).  The record is caller-owned storage; nothing in it
 * needs releasing.  Thread-safe: each thread uses its own record.
 */
#ifndef SID_ERR_H
#define SID_ERR_H

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>

enum sid_errcode {
	SID_OK = 0,
	SID_EINVAL = -1,    /* bad argument or bad input data (request, rows) */
	SID_EFORMAT = -2,   /* a file is malformed (model, .npy, tsv) */
	SID_ENOMEM = -3,    /* allocation failed or a size overflowed */
	SID_EIO = -4,	    /* an operating-system call failed (errno in message) */
	SID_ENOTFOUND = -5, /* a named thing (file, tower, tensor, key) is absent */
	SID_EUNAVAIL = -6,  /* a store cannot be reached or is locked: retry later */
	SID_EDATA = -7	    /* one stored record cannot be read (damaged); the
			       store itself works: that record's calls only */
};

#define SID_ERROR_MSG_MAX 512

struct sid_error {
	int code;		     /* last SID_E* code, SID_OK when clean */
	long index;		     /* input row / line at fault, or -1 */
	char msg[SID_ERROR_MSG_MAX]; /* NUL-terminated, never empty on error */
};

/* Reset to "no error" (code 0, index -1, empty message).  NULL is a no-op. */
void sid_error_clear(struct sid_error *err);

/*
 * Record an error and return @code, so callers can write
 *   return sid_error_set(err, SID_EFORMAT, "tensor %s: ...", name);
 * @err may be NULL (then only @code is returned).  The index is left alone.
 */
int sid_error_set(struct sid_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* As sid_error_set, also recording @index (an input row or file line). */
int sid_error_set_at(struct sid_error *err, int code, long index, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/*
 * Put "@fmt...: " in front of the existing message (to add context such as a
 * file name as the error travels up).  Returns err->code (or SID_EINVAL when
 * @err is NULL).
 */
int sid_error_prefix(struct sid_error *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/*
 * Put "@fmt..." after the existing message (what the failure left behind,
 * what to do next), code and index kept.  Returns err->code (or SID_EINVAL
 * when @err is NULL).
 */
int sid_error_append(struct sid_error *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/*
 * @one or @many as @n counts one thing or not, for a message's noun (or
 * verb) to agree with its count: "%zu %s", n, sid_plural(n, "batch",
 * "batches").  A message about a count that can be 1 said "1 batches".
 */
static inline const char *sid_plural(long long n, const char *one, const char *many)
{
	return n == 1 ? one : many;
}

/*
 * Make the message start with "@path: " unless it does already (core calls
 * that open a file name it themselves).  Returns err->code (or SID_EINVAL
 * when @err is NULL).
 */
int sid_error_name_file(struct sid_error *err, const char *path);

/*
 * Write "@prog: @msg\n" to @f with the message's control characters shown
 * as escapes: C0 but tab, and DEL, as \xNN; C1 (UTF-8's U+0080..U+009F) as
 * \u00NN.  Messages quote ids, sids and file names as they came, and an
 * escape sequence in one (ESC ] 0 ; ... BEL) rewrote the terminal of
 * whoever read the error.
 */
void sid_error_print(FILE *f, const char *prog, const char *msg);

/*
 * "Did you mean": for a name that is none of a program's keys or flags, the
 * one key nearest to it.  sid_nearest_init with the name (@len bytes, '-'
 * read as '_'), sid_nearest_add with every key, then sid_nearest_hint for
 *   " (did you mean --KEY?)"     (@as_flag: the key as a flag, '_' as '-')
 *   " (did you mean \"KEY\"?)"   (a file's key)
 * naming the one key at the smallest edit distance, 1 or 2 (1 for names of
 * 4 bytes or fewer), or else the one key the name begins (4 bytes or more:
 * a unit left off, --registry-timeout); "" when no one key is that close.
 * The name and the keys are borrowed: they must outlive the record.  Plain
 * data, no globals.
 */
struct sid_nearest {
	const char *name;
	size_t len;
	const char *best; /* at distance best_d; ties: others as near */
	int best_d, ties;
	const char *prefix; /* a key the name begins, and how many do */
	int n_prefix;
};
void sid_nearest_init(struct sid_nearest *n, const char *name, size_t len);
void sid_nearest_add(struct sid_nearest *n, const char *key);
/* Written to @buf (@len bytes) and returned; "" (not @buf) for no hint. */
const char *sid_nearest_hint(const struct sid_nearest *n, int as_flag, char *buf, size_t len);

/* The one of @names (NULL-terminated: "--help", "--resume") that @arg gives
 * a value ("--resume=1"), for the message "NAME takes no value" (a switch's
 * nearest-name hint said "did you mean --resume?"); NULL when none. */
const char *sid_switch_valued(const char *arg, const char *const *names);

/*
 * What a hand-edited JSON file most often got wrong, for jansson's error
 * @text (json_error_t.text): " (JSON allows no comma after the last member)"
 * and the like for a trailing comma, a missing comma or a key without
 * double quotes, whose own messages point past the mistake ("string or '}'
 * expected near '}'" on the line after a trailing comma), and " (JSON has
 * no comments)" for a '/' or '#' where a token goes; "" otherwise.
 * A constant string.
 */
const char *sid_json_error_hint(const char *text);

/* A short constant name for a code: "invalid argument", "bad format", ... */
const char *sid_strerror(int code);

/*
 * The length of the well-formed UTF-8 sequence at @s (1 to 4 bytes, with
 * @n >= 1 bytes readable there), or 0 when the bytes there are not one (a
 * NUL ends a sequence too): a stray continuation byte, an overlong form, a
 * surrogate, a code point beyond U+10FFFF, or a sequence cut short by @n.  For checking names and
 * for quoting a client's bytes in messages and logs.
 */
size_t sid_utf8_len(const unsigned char *s, size_t n);

/* One byte of a client's text for a message that points at it: "'*'"
 * when it is printable ASCII (a space too), else "byte 0xc3".  Written to
 * @buf and returned. */
#define SID_BYTE_SHOWN_MAX 12
const char *sid_byte_shown(unsigned char c, char buf[SID_BYTE_SHOWN_MAX]);

/* How many bytes of @s to quote when at most @max may be: all of it if it
 * is that short, else @max or fewer, never ending inside a character. */
size_t sid_utf8_prefix(const char *s, size_t max);

/*
 * A name from a file (a tensor's, a metadata key) in a message: the
 * arguments of "%.*s%s", at most SID_NAME_SHOWN bytes of @s (cut between
 * characters) then "..." when that is not all of it.  Such names have any
 * length and a message holds SID_ERROR_MSG_MAX bytes: a long one must not
 * push out the reason.  @s is evaluated more than once.
 */
#define SID_NAME_SHOWN	 120
#define SID_NAME_FMT	 "%.*s%s"
#define SID_NAME_ARGS(s) sid__name_shown(s), (s), ((s)[sid__name_shown(s)] ? "..." : "")
int sid__name_shown(const char *s);

#endif
