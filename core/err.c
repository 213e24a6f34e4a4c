/* err.c - the error record; see err.h. */
#include "err.h"

#include <stdio.h>
#include <string.h>

void sid_error_clear(struct sid_error *err)
{
	if (!err)
		return;
	err->code = SID_OK;
	err->index = -1;
	err->msg[0] = '\0';
}

/* The longest k <= @n such that @s[0, k) does not end inside a UTF-8
 * sequence: where a message cut at @n bytes should end. */
static size_t utf8_fit(const char *s, size_t n)
{
	const unsigned char *u = (const unsigned char *)s;
	size_t i = n, need;

	while (i > 0 && n - i < 3 && (u[i - 1] & 0xc0) == 0x80)
		i--;
	if (i == 0 || u[i - 1] < 0xc0)
		return n; /* no lead byte before the end: nothing to cut short */
	need = u[i - 1] >= 0xf0 ? 4 : u[i - 1] >= 0xe0 ? 3 : 2;
	return n - (i - 1) < need ? i - 1 : n;
}

static int error_vset(struct sid_error *err, int code, const char *fmt, va_list ap)
{
	if (!err)
		return code;
	err->code = code;
	if (vsnprintf(err->msg, sizeof(err->msg), fmt, ap) >= (int)sizeof(err->msg))
		err->msg[utf8_fit(err->msg, sizeof(err->msg) - 1)] = '\0';
	if (!err->msg[0])
		snprintf(err->msg, sizeof(err->msg), "%s", sid_strerror(code));
	return code;
}

int sid_error_set(struct sid_error *err, int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	code = error_vset(err, code, fmt, ap);
	va_end(ap);
	return code;
}

int sid_error_set_at(struct sid_error *err, int code, long index, const char *fmt, ...)
{
	va_list ap;
	if (err)
		err->index = index;
	va_start(ap, fmt);
	code = error_vset(err, code, fmt, ap);
	va_end(ap);
	return code;
}

/* Cut @s (NUL-terminated) to at most @max bytes by putting "..." in place
 * of its middle, on UTF-8 character boundaries: a path keeps its start and
 * its file name. */
static void elide_middle(char *s, size_t max)
{
	size_t len = strlen(s), a, b;
	const char *tail;

	if (len <= max || max < 5)
		return;
	a = sid_utf8_prefix(s, (max - 3) / 2);
	tail = s + len - (max - 3 - a);
	while (((unsigned char)*tail & 0xc0) == 0x80) /* a continuation byte */
		tail++;
	b = strlen(tail);
	/* the memmove below brings the tail's NUL */
	/* NOLINTNEXTLINE(bugprone-not-null-terminated-result) */
	memcpy(s + a, "...", 3);
	memmove(s + a + 3, tail, b + 1);
}

int sid_error_append(struct sid_error *err, const char *fmt, ...)
{
	char old[SID_ERROR_MSG_MAX], more[SID_ERROR_MSG_MAX];
	va_list ap;

	if (!err)
		return SID_EINVAL;
	va_start(ap, fmt);
	vsnprintf(more, sizeof(more), fmt, ap);
	va_end(ap);
	memcpy(old, err->msg, sizeof(old));
	return sid_error_set(err, err->code, "%s%s", old, more);
}

int sid_error_prefix(struct sid_error *err, const char *fmt, ...)
{
	char head[SID_ERROR_MSG_MAX], old[SID_ERROR_MSG_MAX];
	size_t n, m, keep, cap = sizeof(err->msg) - 1;
	va_list ap;

	if (!err)
		return SID_EINVAL;
	va_start(ap, fmt);
	if (vsnprintf(head, sizeof(head), fmt, ap) >= (int)sizeof(head))
		head[utf8_fit(head, sizeof(head) - 1)] = '\0'; /* as error_vset */
	va_end(ap);
	memcpy(old, err->msg, sizeof(old));
	/* A long head (a path of a few hundred bytes) gives up its middle
	 * rather than push out the message it prefixes, the reason, which
	 * keeps up to half the room. */
	keep = strlen(old) < cap / 2 ? strlen(old) : cap / 2;
	elide_middle(head, cap - 2 - keep);
	/* Joined by hand: truncating a long message is fine, and snprintf
	 * would make gcc's -Wformat-truncation fail the -Werror build. */
	n = sid_utf8_prefix(head, cap - 2);
	memcpy(err->msg, head, n);
	memcpy(err->msg + n, ": ", 2);
	n += 2;
	m = sid_utf8_prefix(old, cap - n);
	memcpy(err->msg + n, old, m);
	err->msg[n + m] = '\0';
	return err->code;
}

/* Whether @msg starts with "@path:" as sid_error_prefix wrote it: whole,
 * or a long one with its middle given up for "..." (elide_middle). */
static int names_path(const char *msg, const char *path)
{
	size_t n = strlen(path), a;
	const char *dots = strstr(msg, "..."), *tail, *c;

	if (strncmp(msg, path, n) == 0 && msg[n] == ':')
		return 1;
	if (!dots || (a = (size_t)(dots - msg)) >= n || strncmp(msg, path, a) != 0)
		return 0;
	tail = dots + 3;
	for (c = strchr(tail, ':'); c; c = strchr(c + 1, ':')) {
		size_t t = (size_t)(c - tail);
		if (a + t < n && memcmp(tail, path + n - t, t) == 0)
			return 1;
	}
	return 0;
}

int sid_error_name_file(struct sid_error *err, const char *path)
{
	if (!err)
		return SID_EINVAL;
	if (!names_path(err->msg, path))
		sid_error_prefix(err, "%s", path);
	return err->code;
}

/* Edit distance of @name (@len bytes, '-' read as '_') and @key; 3 stands
 * for "3 or more". */
static int key_distance(const char *name, size_t len, const char *key)
{
	size_t kl = strlen(key);
	int row[64], diag, up;

	if (len > kl + 2 || kl > len + 2 || kl >= sizeof(row) / sizeof(row[0]))
		return 3;
	for (size_t j = 0; j <= kl; j++)
		row[j] = (int)j;
	for (size_t i = 1; i <= len; i++) {
		char ch = name[i - 1] == '-' ? '_' : name[i - 1];
		diag = row[0];
		row[0] = (int)i;
		for (size_t j = 1; j <= kl; j++) {
			int best = diag + (ch != key[j - 1]);
			up = row[j];
			if (up + 1 < best)
				best = up + 1;
			if (row[j - 1] + 1 < best)
				best = row[j - 1] + 1;
			diag = up;
			row[j] = best;
		}
	}
	return row[kl] < 3 ? row[kl] : 3;
}

/* Whether @name (@len bytes, '-' read as '_') begins @key. */
static int key_prefix(const char *name, size_t len, const char *key)
{
	if (strlen(key) <= len)
		return 0;
	for (size_t i = 0; i < len; i++)
		if ((name[i] == '-' ? '_' : name[i]) != key[i])
			return 0;
	return 1;
}

void sid_nearest_init(struct sid_nearest *n, const char *name, size_t len)
{
	memset(n, 0, sizeof(*n));
	n->name = name;
	n->len = len;
	n->best_d = len > 4 ? 3 : 2; /* nearer than this, or no hint */
}

void sid_nearest_add(struct sid_nearest *n, const char *key)
{
	int d = key_distance(n->name, n->len, key);

	if (d < n->best_d) {
		n->best_d = d;
		n->best = key;
		n->ties = 0;
	} else if (d == n->best_d && n->best) {
		n->ties++;
	}
	if (n->len >= 4 && key_prefix(n->name, n->len, key)) {
		n->prefix = key;
		n->n_prefix++;
	}
}

const char *sid_nearest_hint(const struct sid_nearest *n, int as_flag, char *buf, size_t len)
{
	const char *key = n->best	     ? (n->ties ? NULL : n->best)
			  : n->n_prefix == 1 ? n->prefix
					     : NULL;

	if (!key || !len)
		return "";
	if (as_flag) {
		snprintf(buf, len, " (did you mean --%s?)", key);
		for (char *p = buf; *p; p++)
			if (*p == '_')
				*p = '-';
	} else {
		snprintf(buf, len, " (did you mean \"%s\"?)", key);
	}
	return buf;
}

const char *sid_switch_valued(const char *arg, const char *const *names)
{
	for (; *names; names++) {
		size_t n = strlen(*names);
		if (!strncmp(arg, *names, n) && arg[n] == '=')
			return *names;
	}
	return NULL;
}

const char *sid_json_error_hint(const char *text)
{
	/* jansson 2.14's wording (src/load.c); another one gives no hint */
	static const struct {
		const char *text, *hint;
	} hints[] = {
	    {"string or '}' expected near '}'", " (JSON allows no comma after the last member)"},
	    {"unexpected token near ']'", " (JSON allows no comma after the last element)"},
	    {"'}' expected near '\"", " (a comma missing before this member?)"},
	    {"string or '}' expected near", " (a key is a string in double quotes)"},
	};
	size_t n = text ? strlen(text) : 0;

	/* a "// ..." or "# ..." comment, wherever it stands: its '/' or '#'
	 * is the token jansson stops at */
	if (n >= 8 && (!strcmp(text + n - 8, "near '/'") || !strcmp(text + n - 8, "near '#'")))
		return " (JSON has no comments)";
	for (size_t i = 0; text && i < sizeof(hints) / sizeof(hints[0]); i++)
		if (!strncmp(text, hints[i].text, strlen(hints[i].text)))
			return hints[i].hint;
	return "";
}

const char *sid_strerror(int code)
{
	switch (code) {
	case SID_OK:
		return "ok";
	case SID_EINVAL:
		return "invalid argument";
	case SID_EFORMAT:
		return "bad format";
	case SID_ENOMEM:
		return "out of memory";
	case SID_EIO:
		return "i/o error";
	case SID_ENOTFOUND:
		return "not found";
	case SID_EUNAVAIL:
		return "unavailable";
	case SID_EDATA:
		return "damaged record";
	}
	return "unknown error";
}

size_t sid_utf8_len(const unsigned char *s, size_t n)
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

const char *sid_byte_shown(unsigned char c, char buf[SID_BYTE_SHOWN_MAX])
{
	if (c >= 0x20 && c < 0x7f)
		snprintf(buf, SID_BYTE_SHOWN_MAX, "'%c'", c);
	else
		snprintf(buf, SID_BYTE_SHOWN_MAX, "byte 0x%02x", c);
	return buf;
}

size_t sid_utf8_prefix(const char *s, size_t max)
{
	/* not strnlen: gcc 12 at -O2 takes s[strnlen(s, max)] for the NUL
	 * even when the string goes on past @max */
	const char *end = memchr(s, '\0', max);

	if (end)
		return (size_t)(end - s);
	return s[max] ? utf8_fit(s, max) : max;
}

int sid__name_shown(const char *s)
{
	return (int)sid_utf8_prefix(s, SID_NAME_SHOWN);
}

void sid_error_print(FILE *f, const char *prog, const char *msg)
{
	const unsigned char *s = (const unsigned char *)msg;

	fputs(prog, f);
	fputs(": ", f);
	for (; *s; s++) {
		if ((*s < 0x20 && *s != '\t') || *s == 0x7f)
			fprintf(f, "\\x%02x", *s);
		else if (s[0] == 0xc2 && s[1] >= 0x80 && s[1] <= 0x9f)
			fprintf(f, "\\u%04x", *++s);
		else
			putc(*s, f);
	}
	putc('\n', f);
}
