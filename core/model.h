/*
 * model.h - a loaded semid model: one or two encoder towers (item, user),
 * each an MLP followed by L residual codebooks.  See proto/model-format.md for
 * the file profile (a safetensors file with a "semid" metadata entry).
 *
 * A struct sid_model is immutable once loaded and reference-counted: the
 * loader returns it with one reference; every thread that keeps using it takes
 * its own with sid_model_ref and drops it with sid_model_unref.  Any number of
 * threads may encode with one model at once (encode.h).  Replacing a model
 * (hot swap) means loading a new one aside and swapping a pointer; the old one
 * is freed when its last user lets go.
 *
 * All tensors live in one 64-byte-aligned block owned by the model.
 */
#ifndef SID_MODEL_H
#define SID_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

#define SID_MAX_LAYERS	   16
#define SID_MAX_LEVELS	   16
#define SID_MAX_DIM	   65536   /* any input, hidden or latent width */
#define SID_MAX_CODEBOOK   1048576 /* codewords in one level */
#define SID_FORMAT_VERSION 1
#define SID_VERSION	   "0.1.0" /* of semid: the library and its three programs */
/* bytes in a model_version, which has no control characters (the registry
 * stores it with every ID; logs and TSV exports carry it) */
#define SID_MODEL_VERSION_MAX 255
#define SID_MODEL_FILE_MAX    ((size_t)64 << 30) /* bytes in a model file */
/* bytes in a model file's JSON header: semid writes a few KiB (about 7 for
 * a 3-level model with its training metadata), and parsing one costs about
 * 18 times its size in memory, so safetensors' own 100 MiB cap would let a
 * file copied over the model take ~1.8 GB of a serving process's memory */
#define SID_MODEL_HEADER_MAX ((uint64_t)4 << 20)

enum sid_tower_kind { SID_TOWER_ITEM, SID_TOWER_USER, SID_TOWER_COUNT };

enum sid_act { SID_ACT_IDENTITY, SID_ACT_RELU, SID_ACT_SILU, SID_ACT_GELU, SID_ACT_TANH };

enum sid_norm { SID_NORM_NONE, SID_NORM_L2 };

struct sid_layer {
	int in, out;
	const float *w; /* (out, in) row-major, as torch nn.Linear */
	const float *b; /* (out); zeros when the file has no bias */
};

struct sid_tower {
	int present;	  /* 0: the model has no such tower */
	enum sid_act act; /* after every layer but the last */
	enum sid_norm input_norm;
	int D;	   /* input width = layer[0].in */
	int E;	   /* latent width = layer[n_layers-1].out */
	int H_max; /* widest layer output (scratch sizing) */
	int n_layers;
	struct sid_layer layer[SID_MAX_LAYERS];
	int L;				       /* codebook levels */
	int K[SID_MAX_LEVELS];		       /* codewords per level */
	const float *codebook[SID_MAX_LEVELS]; /* (K[l], E) */
	const float *cnorm[SID_MAX_LEVELS];    /* (K[l]) squared norms ||C_l[k]||^2 */
};

struct sid_model {
	int refs;	  /* atomic; use sid_model_ref/unref */
	char *version;	  /* "model_version" from metadata */
	char *semid_meta; /* the "semid" metadata JSON string, verbatim */
	char *path;	  /* the file loaded, or NULL for a buffer */
	char sha256[65];  /* of the whole file */
	uint64_t file_size;
	double loaded_at; /* unix seconds */
	struct sid_tower tower[SID_TOWER_COUNT];
	void *block; /* the aligned tensor storage */
};

/*
 * Load and validate a model file.  On success *out holds one reference.
 * On failure *out is NULL, SID_EFORMAT (or SID_ENOTFOUND when there is no
 * such file, SID_EIO / SID_ENOMEM, SID_EINVAL for a NULL argument) is
 * returned, and @err names the tensor or field at fault, after the path.
 * Never aborts on bad input.
 */
int sid_model_load(const char *path, struct sid_model **out, struct sid_error *err);

/* As sid_model_load, and on success hands back the file's bytes the model
 * was built from in *@bytes (malloc'ed, the caller frees) and *@nbytes, for
 * a caller that reads more of the file (the trainer's eval, its decoders)
 * and must read the same file the model came from, not the one a publish
 * renamed over it since. */
int sid_model_load_bytes(const char *path, struct sid_model **out, uint8_t **bytes, size_t *nbytes,
			 struct sid_error *err);

/* 0 when @v can be a model_version: at most SID_MODEL_VERSION_MAX bytes, no
 * control character, valid UTF-8 (JSON carries it); else SID_EINVAL saying
 * which.  The loader, the trainer and the registry all hold to it. */
int sid_model_version_check(const char *v, struct sid_error *err);

/* As sid_model_load, from a buffer (for tests and fuzzing); path is NULL. */
int sid_model_load_buffer(const void *buf, size_t len, struct sid_model **out,
			  struct sid_error *err);

/* Reference counting; both are thread-safe.  unref(NULL) is a no-op. */
struct sid_model *sid_model_ref(struct sid_model *m);
void sid_model_unref(struct sid_model *m);

/* The tower, or NULL when the model lacks it. */
const struct sid_tower *sid_model_tower(const struct sid_model *m, enum sid_tower_kind kind);

/* "item" / "user", and the reverse (-1 when unknown). */
const char *sid_tower_name(enum sid_tower_kind kind);
int sid_tower_parse(const char *name);

/* Names of activations and norms as in the file ("relu", "l2", ...); parse
 * returns -1 for an unknown name. */
const char *sid_act_name(enum sid_act act);
int sid_act_parse(const char *name);
const char *sid_norm_name(enum sid_norm norm);
int sid_norm_parse(const char *name);

/*
 * Write a JSON summary of @m (version, sha256, towers with dims, layer
 * shapes, levels, codebook sizes, activation, input norm, and the metadata)
 * as a malloc'ed NUL-terminated string laid out as json.h's sid_json_dumps
 * (shortest reals); NULL on allocation failure.  Shared by `semid inspect`
 * and the server's GET /v1/model.
 */
char *sid_model_describe_json(const struct sid_model *m);

#endif
