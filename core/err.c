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

static int error_vset(struct sid_error *err, int code, const char *fmt, va_list ap)
{
	if (!err)
		return code;
	err->code = code;
	vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
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

int sid_error_prefix(struct sid_error *err, const char *fmt, ...)
{
	char head[SID_ERROR_MSG_MAX], old[SID_ERROR_MSG_MAX];
	size_t n, m, cap = sizeof(err->msg) - 1;
	va_list ap;

	if (!err)
		return SID_EINVAL;
	va_start(ap, fmt);
	vsnprintf(head, sizeof(head), fmt, ap);
	va_end(ap);
	memcpy(old, err->msg, sizeof(old));
	/* Joined by hand: truncating a long message is fine, and snprintf
	 * would make gcc's -Wformat-truncation fail the -Werror build. */
	n = strnlen(head, cap - 2);
	memcpy(err->msg, head, n);
	memcpy(err->msg + n, ": ", 2);
	n += 2;
	m = strnlen(old, cap - n);
	memcpy(err->msg + n, old, m);
	err->msg[n + m] = '\0';
	return err->code;
}

int sid_error_name_file(struct sid_error *err, const char *path)
{
	size_t n = strlen(path);

	if (!err)
		return SID_EINVAL;
	if (strncmp(err->msg, path, n) != 0 || err->msg[n] != ':')
		sid_error_prefix(err, "%s", path);
	return err->code;
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
	}
	return "unknown error";
}
