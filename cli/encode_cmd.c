/*
 * encode_cmd.c - `semid encode`: stream a 2-D .npy of embeddings through a
 * model tower and write the semantic IDs, on all cores, in input order.
 *
 * Shape of the pipeline (bounded memory whatever the input size):
 *
 *   input .npy (memory map) --batch b--> worker k: read rows as float32,
 *       sid_encode with its own workspace --> slot b % S --> main thread:
 *       emits slots strictly in batch order (npy writer or TSV), frees the
 *       slot, drops the consumed input pages, draws the progress bar.
 *
 * Workers take the next batch index from a shared counter, but only while
 * its slot is free (batch b may start once batch b - S has been written), so
 * at most S = 2T batches of codes are held at once.  With one job (T = 1)
 * no worker is started: the main thread encodes each batch into one slot
 * before it writes it, so that -j 1 costs no thread (RLIMIT_NPROC,
 * pids.max).  Each row's codes depend only on that row (encode.h), so the
 * output is the same for any --threads and --batch; the first failing
 * batch in input order decides the error.
 * A .npy or TSV file output is published atomically (cli_output_open: an
 * unnamed temp file renamed into place only when complete), so a failure, a
 * signal, even SIGKILL, leaves the old file or none and no temp file.
 */
#include "cli.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "cpus.h"
#include "fsutil.h"
#include "model.h"
#include "npy.h"

/* ---- options ------------------------------------------------------------ */

static int parse_count(const char *opt, const char *s, unsigned long lo, unsigned long hi,
		       unsigned long *out, struct sid_error *err)
{
	char *end;
	unsigned long v;

	errno = 0;
	if (!s || !*s || *s == '-' || *s == '+')
		goto bad;
	v = strtoul(s, &end, 10);
	if (errno || *end || v < lo || v > hi)
		goto bad;
	*out = v;
	return 0;
bad:
	return sid_error_set(err, SID_EINVAL, "%s wants an integer from %lu to %lu, got '%s'", opt,
			     lo, hi, s ? s : "");
}

enum opt_id {
	OPT_MODEL,
	OPT_TOWER,
	OPT_INPUT,
	OPT_OUTPUT,
	OPT_BATCH,
	OPT_THREADS,
	OPT_TOPK,
	OPT_FORMAT
};

static const struct {
	const char *lng, *shrt;
	enum opt_id id;
} valued_opts[] = {
    {"--model", "-m", OPT_MODEL}, {"--tower", "-t", OPT_TOWER},
    {"--input", "-i", OPT_INPUT}, {"--output", "-o", OPT_OUTPUT},
    {"--batch", "-b", OPT_BATCH}, {"--threads", "-j", OPT_THREADS},
    {"--top-k", "-k", OPT_TOPK},  {"--format", "-f", OPT_FORMAT},
};

/* Set the option @id from @val. */
static int set_opt(struct cli_encode_opts *o, enum opt_id id, const char *name, const char *val,
		   struct sid_error *err)
{
	unsigned long v;

	switch (id) {
	case OPT_MODEL:
		o->model = val;
		return 0;
	case OPT_TOWER:
		o->tower = val;
		return 0;
	case OPT_INPUT:
		o->input = val;
		return 0;
	case OPT_OUTPUT:
		o->output = val;
		return 0;
	case OPT_BATCH:
		if (parse_count(name, val, 1, CLI_BATCH_MAX, &v, err) < 0)
			return SID_EINVAL;
		o->batch = v;
		return 0;
	case OPT_THREADS:
		if (parse_count(name, val, 0, CLI_THREADS_MAX, &v, err) < 0)
			return SID_EINVAL;
		o->threads = (int)v;
		return 0;
	case OPT_TOPK:
		if (parse_count(name, val, 1, SID_TOPK_MAX, &v, err) < 0)
			return SID_EINVAL;
		o->top_k = (int)v;
		return 0;
	case OPT_FORMAT:
		o->format_given = 1;
		if (strcmp(val, "dash") == 0)
			o->format = SID_FORMAT_DASH;
		else if (strcmp(val, "tokens") == 0)
			o->format = SID_FORMAT_TOKENS;
		else
			return sid_error_set(err, SID_EINVAL,
					     "%s must be 'dash' or 'tokens', got '%s'", name, val);
		return 0;
	}
	return SID_EINVAL;
}

/* @s ends with @suffix, in any case: "IDS.NPY" is a .npy too. */
static int ends_with(const char *s, const char *suffix)
{
	size_t a = strlen(s), b = strlen(suffix);
	return a >= b && strcasecmp(s + a - b, suffix) == 0;
}

int cli_encode_parse(int argc, char **argv, struct cli_encode_opts *o, struct sid_error *err)
{
	int i;

	memset(o, 0, sizeof(*o));
	o->tower = "item";
	o->batch = CLI_BATCH_DEFAULT;
	o->threads = 0;
	o->top_k = 1;
	o->format = SID_FORMAT_DASH;
	o->progress = CLI_PROGRESS_AUTO;
	for (i = 0; i < argc; i++) {
		const char *a = argv[i], *val = NULL, *eq;
		size_t nlen, j;
		enum opt_id id;

		if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0)
			return 1;
		if (strcmp(a, "--progress") == 0) {
			o->progress = CLI_PROGRESS_ALWAYS;
			continue;
		}
		if (strcmp(a, "--no-progress") == 0) {
			o->progress = CLI_PROGRESS_NEVER;
			continue;
		}
		if (a[0] != '-' || strcmp(a, "-") == 0)
			return sid_error_set(err, SID_EINVAL, "unexpected argument '%s'", a);
		/* "--opt=value", "--opt value", "-o value" or "-ovalue" (-j4, as
		 * getopt and the registry commands take it) */
		eq = strncmp(a, "--", 2) == 0 ? strchr(a, '=') : NULL;
		nlen = eq ? (size_t)(eq - a) : strlen(a);
		for (j = 0; j < sizeof(valued_opts) / sizeof(valued_opts[0]); j++) {
			if ((strlen(valued_opts[j].lng) == nlen &&
			     strncmp(a, valued_opts[j].lng, nlen) == 0) ||
			    (!eq && strncmp(a, valued_opts[j].shrt, 2) == 0 && a[1] != '-'))
				break;
		}
		if (j == sizeof(valued_opts) / sizeof(valued_opts[0])) {
			static const char *const flags[] = {"--progress", "--no-progress",
							    "--help"};
			for (j = 0; eq && j < sizeof(flags) / sizeof(flags[0]); j++)
				if (strlen(flags[j]) == nlen && !strncmp(a, flags[j], nlen))
					return sid_error_set(err, SID_EINVAL,
							     "%s takes no value, got '%s'",
							     flags[j], a);
			return sid_error_set(err, SID_EINVAL, "unknown option '%.*s'", (int)nlen,
					     a);
		}
		id = valued_opts[j].id;
		if (eq) {
			val = eq + 1;
		} else if (a[1] != '-' && a[2]) {
			val = a + 2;
		} else {
			if (i + 1 >= argc)
				return sid_error_set(err, SID_EINVAL, "%s needs a value", a);
			val = argv[++i];
			/* "-o -m m.st": the value was forgotten, not a file named "-m"
			 * (write ./-m or --output=-m for that) */
			if (val[0] == '-' && val[1] &&
			    (id == OPT_MODEL || id == OPT_INPUT || id == OPT_OUTPUT))
				return sid_error_set(err, SID_EINVAL,
						     "%s needs a value, got the option '%s'", a,
						     val);
		}
		if (set_opt(o, id, valued_opts[j].lng, val, err) < 0)
			return SID_EINVAL;
	}
	if (!o->model)
		return sid_error_set(err, SID_EINVAL, "--model is required");
	if (!*o->model)
		return sid_error_set(err, SID_EINVAL, "--model is empty");
	if (!o->input)
		return sid_error_set(err, SID_EINVAL, "--input is required");
	if (!*o->input)
		return sid_error_set(err, SID_EINVAL, "--input is empty");
	if (strcmp(o->input, "-") == 0) /* not "-: No such file or directory" */
		return sid_error_set(err, SID_EINVAL,
				     "--input cannot be stdin: the .npy is memory-mapped, give a "
				     "file");
	if (!o->output)
		return sid_error_set(err, SID_EINVAL,
				     "--output is required ('-' for TSV on stdout)");
	if (!*o->output)
		return sid_error_set(err, SID_EINVAL, "--output is empty");
	if (sid_tower_parse(o->tower) < 0)
		return sid_error_set(err, SID_EINVAL, "--tower must be 'item' or 'user', got '%s'",
				     o->tower);
	if (o->format_given && strcmp(o->output, "-") != 0 && ends_with(o->output, ".npy"))
		return sid_error_set(err, SID_EINVAL,
				     "--format applies to TSV output; %s is a .npy of integer "
				     "codes, which has no sid text",
				     o->output);
	return 0;
}

/* ---- the pipeline ------------------------------------------------------- */

enum slot_state { SLOT_FREE, SLOT_BUSY, SLOT_DONE };

struct slot {
	enum slot_state state;
	size_t batch;
	int rc;
	struct sid_error err;
	int32_t *codes;	    /* (B, L) */
	float *dist;	    /* (B): only to find rows the encoder overflowed on */
	int32_t *alt_codes; /* (B, n_alt, L) */
	float *alt_dist;    /* (B, n_alt) */
	int *alt_count;	    /* (B) */
};

struct pipeline {
	pthread_mutex_t mu;
	pthread_cond_t cv_free; /* a slot was freed, or stop */
	pthread_cond_t cv_done; /* a batch was finished */
	size_t next_batch;	/* next batch a worker may take */
	size_t emitted;		/* batches written so far */
	int stop;

	const struct sid_npy *in;
	const struct sid_tower *t;
	size_t B, n_batches, n_slots;
	int n_alt;
	struct slot *slots;
};

struct worker {
	struct pipeline *p;
	pthread_t tid;
	int started;
	float *x; /* (B, D) */
	struct sid_workspace *ws;
};

/* Batch @b into slot @s with @w's buffers: its codes, or in s->err the
 * failure naming the row.  Touches nothing shared (any thread). */
static int batch_encode(const struct pipeline *p, struct worker *w, struct slot *s, size_t b)
{
	struct sid_encode_out out;
	size_t row0 = b * p->B, n = p->in->rows - row0 < p->B ? p->in->rows - row0 : p->B;
	int rc;

	sid_error_clear(&s->err);
	rc = sid_npy_read_f32(p->in, row0, n, w->x, &s->err);
	if (rc)
		return rc;
	memset(&out, 0, sizeof(out));
	out.codes = s->codes;
	out.dist = s->dist;
	out.n_alt = p->n_alt;
	out.alt_codes = s->alt_codes;
	out.alt_dist = s->alt_dist;
	out.alt_count = s->alt_count;
	rc = sid_encode(p->t, w->x, n, &out, w->ws, &s->err);
	if (rc == 0) {
		long bad = sid_encode_overflow(s->dist, s->alt_dist, s->alt_count, p->n_alt, n);
		if (bad >= 0)
			rc = sid_error_set_at(&s->err, SID_EINVAL, bad,
					      "values too large for the model: its encoder "
					      "overflows float32 on them");
	}
	if (rc < 0) {
		if (s->err.index >= 0)
			sid_error_prefix(&s->err, "row %zu (row %ld of the batch from %zu)",
					 row0 + (size_t)s->err.index, s->err.index, row0);
		else
			sid_error_prefix(&s->err, "rows %zu..%zu", row0, row0 + n - 1);
	}
	return rc;
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct pipeline *p = w->p;

	pthread_mutex_lock(&p->mu);
	for (;;) {
		struct slot *s;
		size_t b;
		int rc;

		while (!p->stop && p->next_batch < p->n_batches &&
		       p->next_batch >= p->emitted + p->n_slots)
			pthread_cond_wait(&p->cv_free, &p->mu);
		if (p->stop || p->next_batch >= p->n_batches)
			break;
		b = p->next_batch++;
		s = &p->slots[b % p->n_slots];
		s->state = SLOT_BUSY;
		s->batch = b;
		pthread_mutex_unlock(&p->mu);

		rc = batch_encode(p, w, s, b);

		pthread_mutex_lock(&p->mu);
		s->rc = rc;
		s->state = SLOT_DONE;
		pthread_cond_broadcast(&p->cv_done);
	}
	pthread_mutex_unlock(&p->mu);
	return NULL;
}

struct sink {
	struct cli_output out;
	struct sid_npy_writer *npy; /* .npy output, else TSV on out.fp */
	int L, top_k, n_alt;
	enum sid_sid_format format;
	int32_t *wide; /* (B, top_k * L) for .npy with alternatives */
};

static int sink_emit(struct sink *k, const struct slot *s, size_t row0, size_t n,
		     struct sid_error *err)
{
	size_t r;
	int a, L = k->L;

	if (k->npy) {
		const int32_t *rows = s->codes;
		if (k->top_k > 1) {
			size_t w = (size_t)k->top_k * (size_t)L;
			for (r = 0; r < n; r++) {
				int32_t *dst = k->wide + r * w;
				memcpy(dst, s->codes + r * (size_t)L, (size_t)L * sizeof(int32_t));
				for (a = 0; a < k->n_alt; a++) {
					int32_t *d = dst + (size_t)(a + 1) * (size_t)L;
					if (a < s->alt_count[r])
						memcpy(d,
						       s->alt_codes +
							   (r * (size_t)k->n_alt + (size_t)a) *
							       (size_t)L,
						       (size_t)L * sizeof(int32_t));
					else
						memset(d, 0xff, (size_t)L * sizeof(int32_t));
				}
			}
			rows = k->wide;
		}
		return sid_npy_writer_rows(k->npy, rows, n, err);
	}
	for (r = 0; r < n; r++) {
		char sid[512];
		sid_codes_format(s->codes + r * (size_t)L, L, k->format, sid, sizeof(sid));
		fprintf(k->out.fp, "%zu\t%s", row0 + r, sid);
		for (a = 0; a < k->n_alt && a < s->alt_count[r]; a++) {
			sid_codes_format(s->alt_codes +
					     (r * (size_t)k->n_alt + (size_t)a) * (size_t)L,
					 L, k->format, sid, sizeof(sid));
			fprintf(k->out.fp, "\t%s", sid);
		}
		fputc('\n', k->out.fp);
	}
	if (ferror(k->out.fp))
		return sid_error_set(err, SID_EIO, "%s: write: %s", cli_output_name(&k->out),
				     strerror(errno));
	return 0;
}

static void slots_free(struct slot *slots, size_t n)
{
	size_t i;

	if (!slots)
		return;
	for (i = 0; i < n; i++) {
		free(slots[i].codes);
		free(slots[i].dist);
		free(slots[i].alt_codes);
		free(slots[i].alt_dist);
		free(slots[i].alt_count);
	}
	free(slots);
}

static int input_status(int rc)
{
	return rc == SID_ENOMEM ? CLI_EXIT_IO : CLI_EXIT_INPUT;
}

/* Auto mode draws the bar only on a terminal, and not over TSV rows that are
 * going to the same terminal. */
static int progress_wanted(const struct cli_encode_opts *o, const struct sink *k)
{
	if (o->progress != CLI_PROGRESS_AUTO)
		return o->progress == CLI_PROGRESS_ALWAYS;
	if (!isatty(STDERR_FILENO))
		return 0;
	return !(k->out.kind != CLI_OUT_FILE && !k->npy && isatty(k->out.fd));
}

/* Stops the workers (if any started) and waits for them. */
static void pipeline_join(struct pipeline *p, struct worker *w, int T)
{
	int i;

	pthread_mutex_lock(&p->mu);
	p->stop = 1;
	pthread_cond_broadcast(&p->cv_free);
	pthread_mutex_unlock(&p->mu);
	for (i = 0; i < T; i++)
		if (w[i].started)
			pthread_join(w[i].tid, NULL);
}

/* The per-slot and per-worker buffers; -1 when an allocation fails (the
 * caller frees what was allocated either way). */
static int buffers_alloc(struct pipeline *p, struct worker *w, int T, struct sink *k, int top_k,
			 size_t D)
{
	size_t B = p->B, L = (size_t)p->t->L, n_alt = (size_t)p->n_alt, i;

	for (i = 0; i < p->n_slots; i++) {
		struct slot *s = &p->slots[i];
		s->codes = malloc(B * L * sizeof(int32_t));
		s->dist = malloc(B * sizeof(float));
		s->alt_count = calloc(B, sizeof(int));
		if (!s->codes || !s->dist || !s->alt_count)
			return -1;
		if (n_alt > 0) {
			s->alt_codes = malloc(B * n_alt * L * sizeof(int32_t));
			s->alt_dist = malloc(B * n_alt * sizeof(float));
			if (!s->alt_codes || !s->alt_dist)
				return -1;
		}
	}
	if (k->npy && top_k > 1) {
		k->wide = malloc(B * (size_t)top_k * L * sizeof(int32_t));
		if (!k->wide)
			return -1;
	}
	for (i = 0; i < (size_t)T; i++) {
		w[i].p = p;
		w[i].x = malloc(B * D * sizeof(float));
		w[i].ws = sid_workspace_new();
		if (!w[i].x || !w[i].ws)
			return -1;
	}
	return 0;
}

/*
 * Run the batches through T workers and emit them in order into @k.
 * Returns an exit status; @err says why on failure.
 */
static int run_pipeline(const struct cli_encode_opts *o, const struct sid_npy *in,
			const struct sid_tower *t, struct sink *k, struct sid_error *err)
{
	struct pipeline p;
	struct worker *w = NULL;
	struct cli_progress bar;
	/* no batch larger than the input: --batch 1048576 on a small file must
	 * not allocate a million rows per worker (the output is the same) */
	size_t B = o->batch < in->rows ? o->batch : in->rows ? in->rows : 1, b, i, released = 0;
	int T = o->threads > 0 ? o->threads : cli_encode_default_threads(), status = CLI_EXIT_IO,
	    n_alt = o->top_k - 1, mu_ok = 0;

	memset(&p, 0, sizeof(p));
	p.in = in;
	p.t = t;
	p.B = B;
	p.n_alt = n_alt;
	p.n_batches = in->rows / B + (in->rows % B != 0);
	if ((size_t)T > p.n_batches)
		T = p.n_batches ? (int)p.n_batches : 1;
	p.n_slots = T > 1 ? 2 * (size_t)T : 1;

	if (pthread_mutex_init(&p.mu, NULL) || pthread_cond_init(&p.cv_free, NULL) ||
	    pthread_cond_init(&p.cv_done, NULL)) {
		sid_error_set(err, SID_EIO, "cannot create pthread objects");
		return CLI_EXIT_IO;
	}
	mu_ok = 1;
	p.slots = calloc(p.n_slots, sizeof(*p.slots));
	w = calloc((size_t)T, sizeof(*w));
	if (!p.slots || !w || buffers_alloc(&p, w, T, k, o->top_k, in->cols) < 0) {
		sid_error_set(err, SID_ENOMEM,
			      "out of memory for batches of %zu rows (try a smaller --batch)", B);
		goto fail;
	}

	/* one job: the batches are encoded here, between their writes, and no
	 * thread is started (one fewer under RLIMIT_NPROC or pids.max) */
	for (i = 0; T > 1 && i < (size_t)T; i++) {
		int e = pthread_create(&w[i].tid, NULL, worker_main, &w[i]);
		if (e) {
			sid_error_set(err, SID_EIO,
				      "cannot start worker thread %zu of %d: %s (fewer --threads? "
				      "-j 1 starts none)",
				      i, T, strerror(e));
			goto fail;
		}
		w[i].started = 1;
	}

	cli_progress_begin(&bar, progress_wanted(o, k), in->rows, stderr);
	for (b = 0; b < p.n_batches; b++) {
		struct slot *s = &p.slots[b % p.n_slots];
		size_t row0 = b * B, n = in->rows - row0 < B ? in->rows - row0 : B;
		int rc;

		if (T == 1) {
			s->batch = b;
			s->rc = batch_encode(&p, &w[0], s, b);
		} else {
			pthread_mutex_lock(&p.mu);
			while (!(s->state == SLOT_DONE && s->batch == b))
				pthread_cond_wait(&p.cv_done, &p.mu);
			pthread_mutex_unlock(&p.mu);
		}
		if (s->rc < 0) {
			*err = s->err;
			sid_error_prefix(err, "%s", o->input);
			status = s->rc == SID_EINVAL ? CLI_EXIT_INPUT : CLI_EXIT_IO;
			cli_progress_end(&bar, row0);
			goto fail;
		}
		rc = sink_emit(k, s, row0, n, err);
		pthread_mutex_lock(&p.mu);
		s->state = SLOT_FREE;
		p.emitted = b + 1;
		pthread_cond_broadcast(&p.cv_free);
		pthread_mutex_unlock(&p.mu);
		if (rc < 0) {
			cli_progress_end(&bar, row0);
			goto fail;
		}
		/* drop consumed input pages every 16 MiB or so */
		if ((row0 + n - released) * in->cols * sizeof(float) >= (16u << 20)) {
			sid_npy_release_rows(in, released, row0 + n);
			released = row0 + n;
		}
		cli_progress_update(&bar, row0 + n);
	}
	cli_progress_end(&bar, in->rows);
	status = CLI_EXIT_OK;
fail: /* success comes through here too */
	if (w) {
		pipeline_join(&p, w, T);
		for (i = 0; i < (size_t)T; i++) {
			free(w[i].x);
			sid_workspace_free(w[i].ws);
		}
		free(w);
	}
	slots_free(p.slots, p.n_slots);
	free(k->wide);
	k->wide = NULL;
	if (mu_ok) {
		pthread_cond_destroy(&p.cv_done);
		pthread_cond_destroy(&p.cv_free);
		pthread_mutex_destroy(&p.mu);
	}
	return status;
}

static int open_sink(struct sink *k, const struct cli_encode_opts *o, FILE *tsv_out, size_t rows,
		     int L, struct sid_error *err)
{
	const char *inputs[] = {o->input, o->model, NULL};
	int rc;

	k->L = L;
	k->top_k = o->top_k;
	k->n_alt = o->top_k - 1;
	k->format = o->format;
	if ((rc = cli_output_open(&k->out, o->output, tsv_out, inputs, err)) < 0)
		return rc;
	if (k->out.kind != CLI_OUT_STDOUT && ends_with(o->output, ".npy")) {
		rc = sid_npy_writer_fdopen(k->out.fd, o->output, SID_NPY_I32, rows,
					   (size_t)o->top_k * (size_t)L, &k->npy, err);
		if (rc < 0) {
			cli_output_abort(&k->out);
			return sid_error_prefix(err, "%s: cannot create the output", o->output);
		}
	}
	return 0;
}

/* Finish the output: the .npy row count is checked, then the file published. */
static int close_sink(struct sink *k, struct sid_error *err)
{
	int rc = sid_npy_writer_close(k->npy, err); /* NULL: TSV, nothing to do */

	k->npy = NULL;
	if (rc < 0) {
		cli_output_abort(&k->out);
		return rc;
	}
	return cli_output_commit(&k->out, err);
}

/* Drop an unfinished output. */
static void abort_sink(struct sink *k)
{
	sid_npy_writer_abort(k->npy);
	k->npy = NULL;
	cli_output_abort(&k->out);
}

int cli_encode_default_threads(void)
{
	int n = sid_cpus_usable(NULL);
	return n > CLI_THREADS_MAX ? CLI_THREADS_MAX : n;
}

int cli_encode_run(const struct cli_encode_opts *o, FILE *tsv_out, struct sid_error *err)
{
	struct sid_model *m = NULL;
	struct sid_npy in;
	const struct sid_tower *t;
	struct sink k;
	int kind, rc, status = CLI_EXIT_INPUT, sink_open = 0;

	memset(&in, 0, sizeof(in));
	memset(&k, 0, sizeof(k));
	sid_error_clear(err);
	kind = sid_tower_parse(o->tower);
	if (kind < 0) {
		sid_error_set(err, SID_EINVAL, "--tower must be 'item' or 'user', got '%s'",
			      o->tower);
		return CLI_EXIT_INPUT;
	}
	if ((rc = sid_model_load(o->model, &m, err)) < 0 || (rc = sid_model_smoke(m, err)) < 0) {
		sid_model_unref(m);
		sid_error_name_file(err, o->model);
		return input_status(rc);
	}
	t = sid_model_tower(m, kind);
	if (!t || !t->present) {
		char avail[64] = "";
		int i;
		for (i = 0; i < SID_TOWER_COUNT; i++) {
			const struct sid_tower *u = sid_model_tower(m, i);
			if (u && u->present)
				snprintf(avail + strlen(avail), sizeof(avail) - strlen(avail),
					 "%s%s", avail[0] ? ", " : "", sid_tower_name(i));
		}
		sid_error_set(err, SID_ENOTFOUND, "%s: the model has no tower '%s' (it has: %s)",
			      o->model, o->tower, avail[0] ? avail : "none");
		goto fail;
	}
	if ((rc = sid_npy_open(o->input, &in, err)) < 0) {
		struct stat st;
		/* -i <(zcat x.npy.gz), -i /dev/stdin: what to do, as for -i - */
		if (stat(o->input, &st) == 0 &&
		    (S_ISFIFO(st.st_mode) || S_ISCHR(st.st_mode) || S_ISSOCK(st.st_mode)))
			sid_error_set(err, SID_EINVAL,
				      "%s: not a regular file: the .npy is memory-mapped, so a "
				      "pipe or stdin cannot be read; write it to a file first",
				      o->input);
		sid_error_name_file(err, o->input);
		status = input_status(rc);
		goto fail;
	}
	cli_output_mapped_input(o->input);
	if (sid_npy_check_float(&in, o->input, err))
		goto fail;
	if (in.cols != (size_t)t->D) {
		sid_error_set(err, SID_EFORMAT, "%s: has %zu columns, tower '%s' expects %d",
			      o->input, in.cols, sid_tower_name(kind), t->D);
		goto fail;
	}

	if ((rc = open_sink(&k, o, tsv_out, in.rows, t->L, err)) < 0) {
		status = rc == SID_EINVAL ? CLI_EXIT_INPUT : CLI_EXIT_IO;
		goto fail;
	}
	sink_open = 1;
	status = run_pipeline(o, &in, t, &k, err);
	if (status == CLI_EXIT_OK) {
		sink_open = 0;
		if (close_sink(&k, err) < 0)
			status = CLI_EXIT_IO;
	}
fail: /* success comes through here too */
	if (sink_open)
		abort_sink(&k);
	cli_output_mapped_input(NULL);
	sid_npy_close(&in);
	sid_model_unref(m);
	return status;
}
