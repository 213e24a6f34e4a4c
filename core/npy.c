/*
 * npy.c - NumPy .npy reader (memory-mapped, 2-D, row-streaming) and writer;
 * see npy.h.
 *
 * The reader maps the whole file (sid_map_open) and parses the header as
 * hostile input: magic, version 1.0/2.0/3.0, a header length capped at
 * NPY_HEADER_MAX, then the header text, which is a Python dict literal with
 * exactly the keys 'descr', 'fortran_order' and 'shape' in any order.  Only
 * the subset of Python literal syntax numpy itself writes (and a little
 * more: either quote style, any whitespace, a trailing comma) is accepted.
 * Rows are converted to float32 on request, so a reader holds no memory
 * beyond the map and inputs larger than RAM stream through the page cache.
 *
 * The writer emits version 1.0 headers padded with spaces and a final '\n'
 * so that the data starts at a multiple of 64 bytes, as numpy does.
 */
#include "npy.h"

#include <errno.h>
#include <fcntl.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fsutil.h"

#define NPY_MAGIC      "\x93NUMPY"
#define NPY_MAGIC_LEN  6
#define NPY_HEADER_MAX (1u << 20) /* header text cap: real headers are < 200 bytes */
#define NPY_ALIGN      64
#define NPY_MAX_NDIM   32 /* numpy's own limit; we only accept 2, but parse up to this */
#define NPY_DESCR_MAX  32

static size_t dtype_size(enum sid_npy_dtype dt)
{
	return dt == SID_NPY_F64 ? 8 : dt == SID_NPY_F16 ? 2 : 4;
}

static const char *dtype_descr(enum sid_npy_dtype dt)
{
	switch (dt) {
	case SID_NPY_F32:
		return "<f4";
	case SID_NPY_F64:
		return "<f8";
	case SID_NPY_I32:
		return "<i4";
	case SID_NPY_F16:
		return "<f2";
	}
	return "?";
}

/* ---- header parsing ---------------------------------------------------- */

struct hdr_parser {
	const char *s, *end;
	const char *path; /* for messages */
	struct sid_error *err;
};

static void skip_ws(struct hdr_parser *p)
{
	while (p->s < p->end && (*p->s == ' ' || *p->s == '\t' || *p->s == '\n' || *p->s == '\r'))
		p->s++;
}

/* Byte offset of @at in the header text, for messages. */
static int offset_of(const char *at, const char *start)
{
	return (int)(at - start);
}

/* A quoted string without escapes (none of the accepted keys/values need them). */
static int parse_str(struct hdr_parser *p, char *out, size_t cap, const char *what)
{
	char q;
	size_t n = 0;

	if (p->s >= p->end || (*p->s != '\'' && *p->s != '"'))
		return sid_error_set(p->err, SID_EFORMAT, "%s: header: expected a quoted %s",
				     p->path, what);
	q = *p->s++;
	while (p->s < p->end && *p->s != q) {
		if (*p->s == '\\' || *p->s == '\n' || n + 1 >= cap)
			return sid_error_set(p->err, SID_EFORMAT,
					     "%s: header: unsupported or overlong %s", p->path,
					     what);
		out[n++] = *p->s++;
	}
	if (p->s >= p->end)
		return sid_error_set(p->err, SID_EFORMAT, "%s: header: unterminated %s", p->path,
				     what);
	p->s++;
	out[n] = '\0';
	return 0;
}

static int parse_bool(struct hdr_parser *p, int *out)
{
	size_t left = (size_t)(p->end - p->s);

	if (left >= 4 && memcmp(p->s, "True", 4) == 0) {
		p->s += 4;
		*out = 1;
		return 0;
	}
	if (left >= 5 && memcmp(p->s, "False", 5) == 0) {
		p->s += 5;
		*out = 0;
		return 0;
	}
	return sid_error_set(p->err, SID_EFORMAT,
			     "%s: header: 'fortran_order' must be True or False", p->path);
}

/* A tuple of non-negative integers: "()", "(5,)", "(3, 4)", "(3, 4,)". */
static int parse_shape(struct hdr_parser *p, uint64_t *dims, int *ndim)
{
	int n = 0;

	if (p->s >= p->end || *p->s != '(')
		return sid_error_set(p->err, SID_EFORMAT, "%s: header: 'shape' must be a tuple",
				     p->path);
	p->s++;
	for (;;) {
		uint64_t v = 0;
		int digits = 0;

		skip_ws(p);
		if (p->s < p->end && *p->s == ')')
			break;
		while (p->s < p->end && *p->s >= '0' && *p->s <= '9') {
			unsigned d = (unsigned)(*p->s - '0');
			if (v > (UINT64_MAX - d) / 10)
				return sid_error_set(p->err, SID_EFORMAT,
						     "%s: header: shape dimension %d overflows",
						     p->path, n);
			v = v * 10 + d;
			digits++;
			p->s++;
		}
		/* numpy writes plain ints; tolerate the long suffix of Python 2 files */
		if (digits && p->s < p->end && *p->s == 'L')
			p->s++;
		if (!digits)
			return sid_error_set(p->err, SID_EFORMAT,
					     "%s: header: shape dimension %d is not a "
					     "non-negative integer",
					     p->path, n);
		if (n == NPY_MAX_NDIM)
			return sid_error_set(p->err, SID_EFORMAT,
					     "%s: header: shape has more than %d dimensions",
					     p->path, NPY_MAX_NDIM);
		dims[n++] = v;
		skip_ws(p);
		if (p->s < p->end && *p->s == ',') {
			p->s++;
			continue;
		}
		skip_ws(p);
		if (p->s < p->end && *p->s == ')') {
			/* "(5)" is an int in Python, not a tuple */
			if (n == 1)
				return sid_error_set(p->err, SID_EFORMAT,
						     "%s: header: 'shape' (%llu) is not a tuple",
						     p->path, (unsigned long long)dims[0]);
			break;
		}
		return sid_error_set(p->err, SID_EFORMAT, "%s: header: bad 'shape' tuple", p->path);
	}
	p->s++; /* ')' */
	*ndim = n;
	return 0;
}

static void shape_str(const uint64_t *dims, int ndim, char *buf, size_t len)
{
	size_t used = 0;
	int i;

	used += (size_t)snprintf(buf, len, "(");
	for (i = 0; i < ndim && used < len; i++)
		used += (size_t)snprintf(buf + used, len - used, "%s%llu", i ? ", " : "",
					 (unsigned long long)dims[i]);
	if (used < len)
		snprintf(buf + used, len - used, ndim == 1 ? ",)" : ")");
}

static int parse_descr(const char *path, const char *d, enum sid_npy_dtype *dt,
		       struct sid_error *err)
{
	static const struct {
		const char *name;
		enum sid_npy_dtype dt;
	} ok[] = {
	    {"<f4", SID_NPY_F32}, {"<f8", SID_NPY_F64}, {"<f2", SID_NPY_F16}, {"<i4", SID_NPY_I32}};
	size_t i;

	for (i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		if (strcmp(d, ok[i].name) == 0) {
			*dt = ok[i].dt;
			return 0;
		}
	}
	/* Every reader of these files wants embeddings (each refuses '<i4'
	 * itself), so the message says what to save them as, not '<i4'. */
	if (d[0] == '>')
		return sid_error_set(err, SID_EFORMAT,
				     "%s: dtype '%s' is big-endian; embeddings must be "
				     "little-endian float32 ('<f4'), float64 ('<f8') or float16 "
				     "('<f2'): save x.astype('<f4')",
				     path, d);
	return sid_error_set(err, SID_EFORMAT,
			     "%s: unsupported dtype '%s'; embeddings must be float32 ('<f4'), "
			     "float64 ('<f8') or float16 ('<f2'): save x.astype('<f4')",
			     path, d);
}

/*
 * Parse the dict text [s, end) into dtype and a 2-D shape.  The text has
 * already been checked to be printable.
 */
static int parse_header(const char *path, const char *s, const char *end, enum sid_npy_dtype *dt,
			uint64_t *rows, uint64_t *cols, struct sid_error *err)
{
	struct hdr_parser p = {s, end, path, err};
	char key[32], descr[NPY_DESCR_MAX];
	uint64_t dims[NPY_MAX_NDIM];
	int have_descr = 0, have_fortran = 0, have_shape = 0, fortran = 0, ndim = 0, rc;

	skip_ws(&p);
	if (p.s >= p.end || *p.s != '{')
		return sid_error_set(err, SID_EFORMAT, "%s: header is not a dict", path);
	p.s++;
	for (;;) {
		const char *key_at;

		skip_ws(&p);
		if (p.s < p.end && *p.s == '}')
			break;
		key_at = p.s;
		if ((rc = parse_str(&p, key, sizeof(key), "key")) < 0)
			return rc;
		skip_ws(&p);
		if (p.s >= p.end || *p.s != ':')
			return sid_error_set(err, SID_EFORMAT,
					     "%s: header: expected ':' after key '%s'", path, key);
		p.s++;
		skip_ws(&p);
		if (strcmp(key, "descr") == 0) {
			if (have_descr++)
				return sid_error_set(err, SID_EFORMAT,
						     "%s: header: duplicate key 'descr'", path);
			if (p.s < p.end && *p.s == '[')
				return sid_error_set(err, SID_EFORMAT,
						     "%s: structured dtypes are not supported",
						     path);
			if ((rc = parse_str(&p, descr, sizeof(descr), "'descr'")) < 0)
				return rc;
		} else if (strcmp(key, "fortran_order") == 0) {
			if (have_fortran++)
				return sid_error_set(err, SID_EFORMAT,
						     "%s: header: duplicate key 'fortran_order'",
						     path);
			if ((rc = parse_bool(&p, &fortran)) < 0)
				return rc;
		} else if (strcmp(key, "shape") == 0) {
			if (have_shape++)
				return sid_error_set(err, SID_EFORMAT,
						     "%s: header: duplicate key 'shape'", path);
			if ((rc = parse_shape(&p, dims, &ndim)) < 0)
				return rc;
		} else {
			return sid_error_set(
			    err, SID_EFORMAT,
			    "%s: header: unexpected key '%s' at byte offset %d of the header", path,
			    key, offset_of(key_at, s));
		}
		skip_ws(&p);
		if (p.s < p.end && *p.s == ',') {
			p.s++;
			continue;
		}
		if (p.s < p.end && *p.s == '}')
			break;
		return sid_error_set(
		    err, SID_EFORMAT,
		    "%s: header: expected ',' or '}' after '%s' at byte offset %d of the header",
		    path, key, offset_of(p.s, s));
	}
	p.s++; /* '}' */
	skip_ws(&p);
	if (p.s != p.end)
		return sid_error_set(
		    err, SID_EFORMAT,
		    "%s: header: unexpected text after the dict at byte offset %d of the header",
		    path, offset_of(p.s, s));
	if (!have_descr)
		return sid_error_set(err, SID_EFORMAT, "%s: header: missing key 'descr'", path);
	if (!have_fortran)
		return sid_error_set(err, SID_EFORMAT, "%s: header: missing key 'fortran_order'",
				     path);
	if (!have_shape)
		return sid_error_set(err, SID_EFORMAT, "%s: header: missing key 'shape'", path);
	if ((rc = parse_descr(path, descr, dt, err)) < 0)
		return rc;
	if (ndim != 2) {
		char sh[128];
		shape_str(dims, ndim, sh, sizeof(sh));
		return sid_error_set(err, SID_EFORMAT, "%s: expected a 2-D array, got shape %s",
				     path, sh);
	}
	if (fortran)
		return sid_error_set(err, SID_EFORMAT,
				     "%s: array is in Fortran order; save a C-order array "
				     "(numpy.ascontiguousarray)",
				     path);
	*rows = dims[0];
	*cols = dims[1];
	return 0;
}

int sid_npy_open(const char *path, struct sid_npy *out, struct sid_error *err)
{
	struct sid_map m = {0};
	const uint8_t *b;
	enum sid_npy_dtype dt;
	uint64_t hlen, hstart, rows, cols, need, i;
	int major, minor, rc;

	memset(out, 0, sizeof(*out));
	if ((rc = sid_map_open(path, &m, err)) < 0)
		return rc;
	b = m.addr;
	if (m.len < NPY_MAGIC_LEN + 2 || memcmp(b, NPY_MAGIC, NPY_MAGIC_LEN) != 0) {
		const char *kind = sid_file_kind(b, m.len);
		if (kind)
			rc = sid_error_set(err, SID_EFORMAT,
					   "%s: not a .npy file (bad magic): it looks like %s",
					   path, kind);
		else
			rc = sid_error_set(err, SID_EFORMAT, "%s: not a .npy file (bad magic)",
					   path);
		goto fail;
	}
	major = b[6];
	minor = b[7];
	if ((major != 1 && major != 2 && major != 3) || minor != 0) {
		rc = sid_error_set(err, SID_EFORMAT, "%s: unsupported .npy format version %d.%d",
				   path, major, minor);
		goto fail;
	}
	if (major == 1) {
		if (m.len < 10) {
			rc = sid_error_set(err, SID_EFORMAT, "%s: truncated header", path);
			goto fail;
		}
		hlen = (uint64_t)b[8] | (uint64_t)b[9] << 8;
		hstart = 10;
	} else {
		if (m.len < 12) {
			rc = sid_error_set(err, SID_EFORMAT, "%s: truncated header", path);
			goto fail;
		}
		hlen = (uint64_t)b[8] | (uint64_t)b[9] << 8 | (uint64_t)b[10] << 16 |
		       (uint64_t)b[11] << 24;
		hstart = 12;
	}
	if (hlen > NPY_HEADER_MAX) {
		rc = sid_error_set(err, SID_EFORMAT,
				   "%s: header length %llu exceeds the %u-byte limit", path,
				   (unsigned long long)hlen, NPY_HEADER_MAX);
		goto fail;
	}
	if (hstart + hlen > m.len) {
		rc = sid_error_set(err, SID_EFORMAT,
				   "%s: header length %llu runs past the end of the file "
				   "(%zu bytes)",
				   path, (unsigned long long)hlen, m.len);
		goto fail;
	}
	/* Versions 1 and 2 are latin-1, 3 is utf-8; a valid header is pure ASCII. */
	for (i = 0; i < hlen; i++) {
		uint8_t c = b[hstart + i];
		if ((c < 0x20 && c != '\n' && c != '\t' && c != '\r') || c >= 0x7f) {
			rc = sid_error_set(
			    err, SID_EFORMAT,
			    "%s: header has a non-ASCII byte 0x%02x at byte offset %llu", path, c,
			    (unsigned long long)(hstart + i));
			goto fail;
		}
	}
	if ((rc = parse_header(path, (const char *)b + hstart, (const char *)b + hstart + hlen, &dt,
			       &rows, &cols, err)) < 0)
		goto fail;
	if (cols && rows > UINT64_MAX / cols / dtype_size(dt)) {
		rc = sid_error_set(err, SID_EFORMAT, "%s: shape (%llu, %llu) overflows", path,
				   (unsigned long long)rows, (unsigned long long)cols);
		goto fail;
	}
	need = rows * cols * dtype_size(dt);
	if (need > m.len - (hstart + hlen)) {
		rc = sid_error_set(err, SID_EFORMAT,
				   "%s: truncated data: shape (%llu, %llu) of %s needs %llu bytes, "
				   "the file has %llu",
				   path, (unsigned long long)rows, (unsigned long long)cols,
				   dtype_descr(dt), (unsigned long long)need,
				   (unsigned long long)(m.len - (hstart + hlen)));
		goto fail;
	}
	out->dtype = dt;
	out->rows = (size_t)rows;
	out->cols = (size_t)cols;
	out->data = b + hstart + hlen;
	out->map = m.addr;
	out->map_len = m.len;
	return 0;

fail:
	sid_map_close(&m);
	return rc;
}

void sid_npy_close(struct sid_npy *f)
{
	struct sid_map m;

	if (!f || !f->map)
		return;
	m.addr = f->map;
	m.len = f->map_len;
	sid_map_close(&m);
	memset(f, 0, sizeof(*f));
}

static int not_finite(size_t row, size_t col, double v, struct sid_error *err)
{
	const char *what = isnan(v) ? "nan" : v > 0 ? "inf" : "-inf";
	return sid_error_set_at(err, SID_EINVAL, (long)row,
				"row %zu, column %zu is not finite (%s)", row, col, what);
}

int sid_npy_check_float(const struct sid_npy *f, const char *path, struct sid_error *err)
{
	if (f->dtype != SID_NPY_I32)
		return 0;
	return sid_error_set(err, SID_EFORMAT,
			     "%s: has dtype int32 ('<i4'); embeddings must be float32 ('<f4'), "
			     "float64 ('<f8') or float16 ('<f2')",
			     path);
}

/* IEEE 754 binary16 to binary32, exactly (every half is a float). */
static float half_to_float(uint16_t h)
{
	uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu, bits;
	float v;

	if (e == 0x1f) /* inf, nan (payload kept) */
		bits = sign | 0x7f800000u | m << 13;
	else if (e) /* normal: rebias 15 -> 127 */
		bits = sign | (e + 112) << 23 | m << 13;
	else /* zero or subnormal: m x 2^-24 */
		return sign ? -ldexpf((float)m, -24) : ldexpf((float)m, -24);
	memcpy(&v, &bits, sizeof(v));
	return v;
}

int sid_npy_read_f32(const struct sid_npy *f, size_t row0, size_t n, float *dst,
		     struct sid_error *err)
{
	size_t cols = f->cols, total, i;

	if (f->dtype == SID_NPY_I32)
		return sid_error_set(err, SID_EINVAL,
				     "dtype int32 ('<i4') cannot be read as float; expected "
				     "float32 ('<f4'), float64 ('<f8') or float16 ('<f2')");
	if (row0 > f->rows || n > f->rows - row0)
		return sid_error_set(err, SID_EINVAL, "rows [%zu, %zu) are out of range (%zu rows)",
				     row0, row0 + n, f->rows);
	total = n * cols; /* fits: the whole array was checked against the map size */
	if (f->dtype == SID_NPY_F32) {
		memcpy(dst, f->data + row0 * cols * 4, total * 4);
		for (i = 0; i < total; i++) {
			if (!isfinite(dst[i]))
				return not_finite(row0 + i / cols, i % cols, dst[i], err);
		}
		return 0;
	}
	if (f->dtype == SID_NPY_F16) {
		const uint8_t *src = f->data + row0 * cols * 2;
		for (i = 0; i < total; i++) {
			uint16_t h = (uint16_t)(src[2 * i] | src[2 * i + 1] << 8);
			dst[i] = half_to_float(h);
			if (!isfinite(dst[i]))
				return not_finite(row0 + i / cols, i % cols, dst[i], err);
		}
		return 0;
	}
	{
		const uint8_t *src = f->data + row0 * cols * 8;
		for (i = 0; i < total; i++) {
			double v;
			memcpy(&v, src + i * 8, 8);
			if (!isfinite(v))
				return not_finite(row0 + i / cols, i % cols, v, err);
			/* what float32 cannot hold once rounded: 3.4028235e38
			 * (FLT_MAX as numpy prints it) rounds to FLT_MAX, as the
			 * server reads it from JSON; shown with the digits that
			 * tell it from FLT_MAX */
			dst[i] = (float)v;
			if (isinf(dst[i]))
				return sid_error_set_at(
				    err, SID_EINVAL, (long)(row0 + i / cols),
				    "row %zu, column %zu: %.9g is out of float32 "
				    "range",
				    row0 + i / cols, i % cols, v);
		}
	}
	return 0;
}

void sid_npy_release_rows(const struct sid_npy *f, size_t row0, size_t row_end)
{
	size_t from, upto, page;
	long ps = sysconf(_SC_PAGESIZE);

	if (!f || !f->map || ps <= 0 || row_end > f->rows || row0 >= row_end)
		return;
	/* byte offsets into the mapping (page-aligned, as mmap returns it),
	 * rounded down to pages */
	page = (size_t)ps;
	from = (size_t)(f->data - (const uint8_t *)f->map) + row0 * f->cols * dtype_size(f->dtype);
	upto =
	    (size_t)(f->data - (const uint8_t *)f->map) + row_end * f->cols * dtype_size(f->dtype);
	from -= from % page;
	upto -= upto % page;
	if (upto > from)
		madvise((uint8_t *)f->map + from, upto - from, MADV_DONTNEED);
}

/* ---- writer ------------------------------------------------------------- */

struct sid_npy_writer {
	FILE *fp;
	char *path;  /* the file, or for messages only (fd writer) */
	int on_path; /* opened by path: close fsyncs, abort removes the file */
	enum sid_npy_dtype dtype;
	size_t rows, cols, written;
};

/*
 * Build the version 1.0 header: magic, version, u16 length, dict text padded
 * with spaces and ending in '\n' so that the total is a multiple of 64.
 */
static size_t npy_header(char *buf, size_t cap, enum sid_npy_dtype dt, size_t rows, size_t cols)
{
	int n = snprintf(buf + 10, cap - 10,
			 "{'descr': '%s', 'fortran_order': False, "
			 "'shape': (%zu, %zu), }",
			 dtype_descr(dt), rows, cols);
	size_t total = 10 + (size_t)n + 1; /* + '\n' */
	size_t pad = (NPY_ALIGN - total % NPY_ALIGN) % NPY_ALIGN;
	size_t hlen = (size_t)n + pad + 1;

	memcpy(buf, NPY_MAGIC, NPY_MAGIC_LEN);
	buf[6] = 1;
	buf[7] = 0;
	buf[8] = (char)(hlen & 0xff);
	buf[9] = (char)(hlen >> 8);
	memset(buf + 10 + n, ' ', pad);
	buf[10 + n + pad] = '\n';
	return 10 + hlen;
}

/* Open a writer on @path (@fd < 0) or on a copy of @fd, and write the header. */
static int writer_open(const char *path, int fd, enum sid_npy_dtype dtype, size_t rows, size_t cols,
		       struct sid_npy_writer **out, struct sid_error *err)
{
	struct sid_npy_writer *w = NULL;
	char hdr[256];
	size_t hlen;
	int rc, dup_fd = -1;

	*out = NULL;
	if (dtype != SID_NPY_F32 && dtype != SID_NPY_F64 && dtype != SID_NPY_I32)
		return sid_error_set(err, SID_EINVAL, "%s: cannot write dtype %s", path,
				     dtype_descr(dtype));
	if (cols && rows > SIZE_MAX / cols / dtype_size(dtype))
		return sid_error_set(err, SID_ENOMEM, "%s: shape (%zu, %zu) overflows", path, rows,
				     cols);
	w = calloc(1, sizeof(*w));
	if (!w || !(w->path = strdup(path))) {
		rc = sid_error_set(err, SID_ENOMEM, "%s: out of memory", path);
		goto fail;
	}
	w->dtype = dtype;
	w->rows = rows;
	w->cols = cols;
	w->on_path = fd < 0;
	if (fd < 0) {
		w->fp = fopen(path, "wbe");
	} else if ((dup_fd = fcntl(fd, F_DUPFD_CLOEXEC, 0)) >= 0) {
		w->fp = fdopen(dup_fd, "wb");
		if (w->fp)
			dup_fd = -1; /* the stream owns it */
	}
	if (!w->fp) {
		rc = sid_error_set(err, SID_EIO, "%s: %s", path, strerror(errno));
		goto fail;
	}
	hlen = npy_header(hdr, sizeof(hdr), dtype, rows, cols);
	if (fwrite(hdr, 1, hlen, w->fp) != hlen) {
		rc = sid_error_set(err, SID_EIO, "%s: write: %s", path, strerror(errno));
		goto fail;
	}
	*out = w;
	return 0;

fail:
	if (dup_fd >= 0)
		close(dup_fd);
	if (w) {
		if (w->fp)
			fclose(w->fp);
		free(w->path);
		free(w);
	}
	return rc;
}

int sid_npy_writer_open(const char *path, enum sid_npy_dtype dtype, size_t rows, size_t cols,
			struct sid_npy_writer **out, struct sid_error *err)
{
	return writer_open(path, -1, dtype, rows, cols, out, err);
}

int sid_npy_writer_fdopen(int fd, const char *name, enum sid_npy_dtype dtype, size_t rows,
			  size_t cols, struct sid_npy_writer **out, struct sid_error *err)
{
	if (fd < 0) {
		*out = NULL;
		return sid_error_set(err, SID_EINVAL, "%s: no file descriptor", name);
	}
	return writer_open(name, fd, dtype, rows, cols, out, err);
}

int sid_npy_writer_rows(struct sid_npy_writer *w, const void *data, size_t n, struct sid_error *err)
{
	size_t bytes;

	if (n > w->rows - w->written)
		return sid_error_set(err, SID_EINVAL,
				     "%s: %zu rows written, more than the %zu declared", w->path,
				     w->written + n, w->rows);
	bytes = n * w->cols * dtype_size(w->dtype);
	if (bytes && fwrite(data, 1, bytes, w->fp) != bytes)
		return sid_error_set(err, SID_EIO, "%s: write: %s", w->path, strerror(errno));
	w->written += n;
	return 0;
}

int sid_npy_writer_close(struct sid_npy_writer *w, struct sid_error *err)
{
	int rc = 0;

	if (!w)
		return 0;
	if (w->written != w->rows)
		rc = sid_error_set(err, SID_EINVAL, "%s: %zu rows written, %zu declared", w->path,
				   w->written, w->rows);
	if (fflush(w->fp) != 0 && rc == 0)
		rc = sid_error_set(err, SID_EIO, "%s: write: %s", w->path, strerror(errno));
	if (w->on_path && fsync(fileno(w->fp)) != 0 && rc == 0 && errno != EINVAL)
		rc = sid_error_set(err, SID_EIO, "%s: fsync: %s", w->path, strerror(errno));
	if (fclose(w->fp) != 0 && rc == 0)
		rc = sid_error_set(err, SID_EIO, "%s: close: %s", w->path, strerror(errno));
	free(w->path);
	free(w);
	return rc;
}

void sid_npy_writer_abort(struct sid_npy_writer *w)
{
	if (!w)
		return;
	fclose(w->fp);
	if (w->on_path)
		unlink(w->path);
	free(w->path);
	free(w);
}

int sid_npy_write(const char *path, enum sid_npy_dtype dtype, size_t rows, size_t cols,
		  const void *data, struct sid_error *err)
{
	struct sid_npy_writer *w;
	int rc;

	if ((rc = sid_npy_writer_open(path, dtype, rows, cols, &w, err)) < 0)
		return rc;
	rc = sid_npy_writer_rows(w, data, rows, err);
	if (rc < 0) {
		sid_npy_writer_abort(w);
		return rc;
	}
	return sid_npy_writer_close(w, err);
}
