/*
 * json.h - JSON as semid writes it for people: jansson's layout
 * (JSON_INDENT(2), the objects' order) with each real as the shortest
 * decimal that reads back as the same double.  jansson writes reals with
 * %.17g, so a learning rate of 0.1 read "0.10000000000000001" and a load
 * time "1795887464.0309198".  `semid inspect` and semid-server's JSON
 * answers (GET /v1/model) write through here, so the two print the same
 * reals.  Thread-safe (no state).
 */
#ifndef SID_JSON_H
#define SID_JSON_H

/* The shortest decimal that reads back (strtod) as the finite @v: 0.1 is
 * "0.1", where jansson's %.17g wrote "0.10000000000000001".  Laid out as
 * Python's repr does (an exponent below 1e-4 and from 1e16 on, a '.' in
 * every other, so that it does not read back as an integer), the exponent
 * as jansson writes it ("1e-5", "1e16").  Into @buf, returned. */
#define SID_JSON_REAL_MAX 32
const char *sid_json_real_str(double v, char buf[SID_JSON_REAL_MAX]);

/* @j as json_dumps(JSON_INDENT(2) | JSON_PRESERVE_ORDER) writes it, but
 * each real as sid_json_real_str does: a malloc'ed NUL-terminated string
 * (no newline at the end), or NULL when out of memory. */
struct json_t;
char *sid_json_dumps(const struct json_t *j);

/* A file name as a JSON string: as it is when it is UTF-8, else with each
 * byte above 0x7f as '?' (a name the file system allows and JSON does not,
 * whose key, "path", "model", "train", was left out).  NULL only when out of
 * memory. */
struct json_t *sid_json_path(const char *path);

#endif
