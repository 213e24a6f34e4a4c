/* buf.c - growable text buffer; see buf.h. */
#include "buf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int grow(struct srv_buf *b, size_t extra)
{
	size_t need, cap;
	char *p;

	if (b->oom)
		return -1;
	if (extra > (size_t)-1 / 2 - b->len)
		goto oom;
	need = b->len + extra + 1;
	if (need <= b->cap)
		return 0;
	cap = b->cap ? b->cap : 256;
	while (cap < need)
		cap *= 2;
	p = realloc(b->p, cap);
	if (!p)
		goto oom;
	b->p = p;
	b->cap = cap;
	return 0;
oom:
	b->oom = 1;
	return -1;
}

void srv_buf_append(struct srv_buf *b, const char *s, size_t n)
{
	if (grow(b, n))
		return;
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
}

void srv_buf_puts(struct srv_buf *b, const char *s)
{
	srv_buf_append(b, s, strlen(s));
}

void srv_buf_printf(struct srv_buf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0 || grow(b, (size_t)n))
		return;
	va_start(ap, fmt);
	vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
}

/* Length of the valid UTF-8 sequence at @s (at most @n bytes), 0 if invalid
 * (a stray continuation byte, a truncated or overlong sequence, a surrogate,
 * above U+10FFFF). */
static size_t utf8_len(const unsigned char *s, size_t n)
{
	size_t len, i;
	unsigned cp;

	if (s[0] < 0x80)
		return 1;
	if (s[0] >= 0xc2 && s[0] <= 0xdf)
		len = 2, cp = s[0] & 0x1f;
	else if (s[0] >= 0xe0 && s[0] <= 0xef)
		len = 3, cp = s[0] & 0x0f;
	else if (s[0] >= 0xf0 && s[0] <= 0xf4)
		len = 4, cp = s[0] & 0x07;
	else
		return 0;
	if (len > n)
		return 0;
	for (i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (s[i] & 0x3f);
	}
	if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || cp > 0x10ffff ||
	    (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return len;
}

void srv_buf_json_str(struct srv_buf *b, const char *s, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	size_t i, run = 0;

	srv_buf_append(b, "\"", 1);
	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		char esc[6] = {'\\', 'u', '0', '0', 0, 0};
		if (c >= 0x80) { /* valid UTF-8 passes, anything else becomes U+FFFD */
			size_t u = utf8_len((const unsigned char *)s + i, n - i);
			if (u) {
				i += u - 1;
				continue;
			}
			srv_buf_append(b, s + run, i - run);
			srv_buf_append(b, "\\ufffd", 6);
			run = i + 1;
			continue;
		}
		if (c >= 0x20 && c != '"' && c != '\\')
			continue;
		srv_buf_append(b, s + run, i - run);
		run = i + 1;
		if (c == '"' || c == '\\') {
			esc[1] = (char)c;
			srv_buf_append(b, esc, 2);
		} else if (c == '\n') {
			srv_buf_append(b, "\\n", 2);
		} else {
			esc[4] = hex[c >> 4];
			esc[5] = hex[c & 15];
			srv_buf_append(b, esc, 6);
		}
	}
	srv_buf_append(b, s + run, n - run);
	srv_buf_append(b, "\"", 1);
}

void srv_buf_float(struct srv_buf *b, float v)
{
	char best[32], tmp[32];
	int n, m;

	/* The shortest %.Ng that reads back as the same float: round-tripping
	 * only gets easier with more digits, so step down from 8 (9 always
	 * works) while it still holds. */
	n = snprintf(best, sizeof(best), "%.8g", (double)v);
	if (strtof(best, NULL) != v) {
		n = snprintf(best, sizeof(best), "%.9g", (double)v);
	} else {
		for (int prec = 7; prec >= 1; prec--) {
			m = snprintf(tmp, sizeof(tmp), "%.*g", prec, (double)v);
			if (strtof(tmp, NULL) != v)
				break;
			memcpy(best, tmp, (size_t)m + 1);
			n = m;
		}
	}
	srv_buf_append(b, best, (size_t)n);
}

char *srv_buf_detach(struct srv_buf *b, size_t *len)
{
	char *p;
	if (b->oom) {
		srv_buf_release(b);
		return NULL;
	}
	if (!b->p && grow(b, 0))
		return NULL;
	if (b->len == 0)
		b->p[0] = '\0';
	p = b->p;
	if (len)
		*len = b->len;
	b->p = NULL;
	b->len = b->cap = 0;
	return p;
}

void srv_buf_release(struct srv_buf *b)
{
	free(b->p);
	b->p = NULL;
	b->len = b->cap = 0;
	b->oom = 0;
}
