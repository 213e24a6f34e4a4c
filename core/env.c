/* env.c - numbers from the environment, read strictly; see env.h. */
#include "env.h"

#include <string.h>

int sid_whole_parse(const char *s, long lo, long hi, long *v)
{
	long n = 0;
	size_t i;

	if (!s || !s[0])
		return -1;
	for (i = 0; s[i]; i++) {
		int d = s[i] - '0';
		if (d < 0 || d > 9 || n > (hi - d) / 10) /* not a digit, or on past @hi */
			return -1;
		n = n * 10 + d;
	}
	if (n < lo || n > hi)
		return -1;
	*v = n;
	return 0;
}

long sid_env_test_ms(const char *value)
{
	long ms;
	return sid_whole_parse(value, 0, 600000, &ms) ? 0 : ms;
}

const char *sid_env_shown(const char *value, char buf[SID_ENV_SHOWN_MAX])
{
	size_t n = 0, i;

	buf[n++] = '"';
	for (i = 0; value && value[i] && i < 40; i++) {
		unsigned char c = (unsigned char)value[i];
		buf[n++] = c < 0x20 || c > 0x7e || c == '"' || c == '\\' ? '?' : (char)c;
	}
	buf[n++] = '"';
	buf[n] = '\0';
	if (value && value[i])
		strcpy(buf + n, "...");
	return buf;
}
