/* json.c - JSON with the shortest reals that read back; see json.h. */
#include "json.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *sid_json_real_str(double v, char buf[SID_JSON_REAL_MAX])
{
	char e[SID_JSON_REAL_MAX], digits[20] = "", *p = buf;
	int n = 0, x;

	if (!isfinite(v)) { /* no JSON number: jansson holds none */
		snprintf(buf, SID_JSON_REAL_MAX, "%g", v);
		return buf;
	}
	/* the fewest significant digits that read back (17 always do) */
	for (int prec = 0; prec < 17; prec++) {
		snprintf(e, sizeof(e), "%.*e", prec, v);
		if (strtod(e, NULL) == v)
			break;
	}
	/* "-d.ddde-XX": its digits and exponent */
	for (const char *c = e; *c != 'e'; c++)
		if (*c >= '0' && *c <= '9')
			digits[n++] = *c;
	x = (int)strtol(strchr(e, 'e') + 1, NULL, 10);
	if (e[0] == '-')
		*p++ = '-';
	if (x < -4 || x >= 16) { /* 1e-5, 2.5e300: as jansson writes them */
		*p++ = digits[0];
		if (n > 1)
			p += sprintf(p, ".%.*s", n - 1, digits + 1);
		sprintf(p, "e%d", x);
	} else if (x < 0) { /* 0.0001, 0.30000000000000004 */
		p += sprintf(p, "0.");
		for (int i = 0; i < -x - 1; i++)
			*p++ = '0';
		sprintf(p, "%.*s", n, digits);
	} else { /* 100.0, 1764574271.25: a '.' always, or it reads as an integer */
		for (int i = 0; i <= x; i++)
			*p++ = i < n ? digits[i] : '0';
		sprintf(p, ".%.*s", n > x + 1 ? n - x - 1 : 1, n > x + 1 ? digits + x + 1 : "0");
	}
	return buf;
}

/* A JSON text (a key or a scalar) that jansson writes, into @f. */
static int json_put_text(FILE *f, const json_t *j)
{
	char *s = json_dumps(j, JSON_ENCODE_ANY);

	if (!s)
		return -1;
	fputs(s, f);
	free(s);
	return 0;
}

/* @j into @f at nesting @depth, as json_dumps with JSON_INDENT(2) writes it
 * but for its reals (sid_json_real_str).  -1 when out of memory. */
static int json_put(FILE *f, const json_t *j, int depth)
{
	char real[SID_JSON_REAL_MAX];
	int obj = json_is_object(j), rc;
	size_t n = obj ? json_object_size(j) : json_array_size(j);
	void *it = obj ? json_object_iter((json_t *)j) : NULL;
	json_t *v, *k;

	if (json_is_real(j)) {
		fputs(sid_json_real_str(json_real_value(j), real), f);
		return 0;
	}
	if (!obj && !json_is_array(j))
		return json_put_text(f, j);
	if (!n) {
		fputs(obj ? "{}" : "[]", f);
		return 0;
	}
	fputc(obj ? '{' : '[', f);
	for (size_t i = 0; i < n; i++) {
		fprintf(f, "%s\n%*s", i ? "," : "", 2 * (depth + 1), "");
		if (obj) { /* a key may hold a NUL: by its length */
			k = json_stringn_nocheck(json_object_iter_key(it),
						 json_object_iter_key_len(it));
			rc = k ? json_put_text(f, k) : -1;
			json_decref(k);
			if (rc)
				return -1;
			fputs(": ", f);
			v = json_object_iter_value(it);
			it = json_object_iter_next((json_t *)j, it);
		} else {
			v = json_array_get(j, i);
		}
		if (json_put(f, v, depth + 1))
			return -1;
	}
	fprintf(f, "\n%*s%c", 2 * depth, "", obj ? '}' : ']');
	return 0;
}

char *sid_json_dumps(const json_t *j)
{
	char *out = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&out, &len);
	int rc;

	if (!f)
		return NULL;
	rc = json_put(f, j, 0);
	if (ferror(f))
		rc = -1;
	if (fclose(f) || rc) {
		free(out);
		return NULL;
	}
	return out;
}

json_t *sid_json_path(const char *path)
{
	json_t *j = json_string(path);
	char *copy;

	if (j || !(copy = strdup(path)))
		return j;
	for (char *c = copy; *c; c++)
		if ((unsigned char)*c > 0x7f)
			*c = '?';
	j = json_string(copy);
	free(copy);
	return j;
}
