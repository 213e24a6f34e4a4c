/*
 * buf.h - a growable text buffer (git's strbuf idea) for response bodies and
 * the metrics page.  An allocation failure sets @oom and drops later appends,
 * so callers check once at the end instead of after every append.  The
 * appends are inline (a response is a few hundred of them); growing is not.
 * Thread-safety: a buffer belongs to one thread at a time.
 */
#ifndef SRV_BUF_H
#define SRV_BUF_H

#include <stddef.h>
#include <string.h>

struct srv_buf {
	char *p; /* NUL-terminated when len > 0 and !oom */
	size_t len, cap;
	int oom;
};

#define SRV_BUF_INIT                                                                               \
	{                                                                                          \
		NULL, 0, 0, 0                                                                      \
	}

void srv__buf_append_grow(struct srv_buf *b, const char *s, size_t n);

/* Append @n bytes (inline: most appends fit the room already there). */
static inline void srv_buf_append(struct srv_buf *b, const char *s, size_t n)
{
	if (n < b->cap - b->len && !b->oom) { /* cap > len whenever p is set */
		memcpy(b->p + b->len, s, n);
		b->len += n;
		b->p[b->len] = '\0';
		return;
	}
	srv__buf_append_grow(b, s, n);
}

/* Make room for @n more bytes (and the NUL) now; an allocation failure sets @oom. */
void srv_buf_reserve(struct srv_buf *b, size_t n);

/* Append a NUL-terminated string (a literal's length is known at compile time). */
static inline void srv_buf_puts(struct srv_buf *b, const char *s)
{
	srv_buf_append(b, s, strlen(s));
}
void srv_buf_printf(struct srv_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Append @s as a JSON string literal (quotes and escapes; UTF-8 passed through). */
void srv_buf_json_str(struct srv_buf *b, const char *s, size_t n);
/*
 * Append a float as the shortest decimal that strtof reads back to the same
 * float32; of several with as few digits, the closest to the float, and of
 * two as close (3.66015625 between 3.6601562 and 3.6601563), the one with
 * an even last digit, as printf rounds.  The text is in printf's %.Ng
 * layout for N = its digit count, as this function always wrote: "0.1",
 * "-2.5", "1e-05", "1.5474251e+26", "0", "-0": a valid JSON number.  Callers pass
 * finite floats only; a NaN or an infinity is written as `null`.
 * Allocation-free apart from the buffer; no locale.
 */
void srv_buf_float(struct srv_buf *b, float v);
/* Append a decimal integer, as printf's %lld writes it. */
void srv_buf_int(struct srv_buf *b, long long v);
/* Hand the string to the caller (NULL on oom; "" for an empty buffer). */
char *srv_buf_detach(struct srv_buf *b, size_t *len);
void srv_buf_release(struct srv_buf *b);

#endif
