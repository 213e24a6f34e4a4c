/*
 * api.h - API v1 of semid-server on the wire (proto/api.md is the contract):
 * decoding and validating an encode request, encoding its response, error
 * bodies, and the one function that maps an error kind to an HTTP status and
 * a code string.  Nothing here knows about sockets or threads.
 *
 * Error body: {"error": {"code": "invalid_argument", "message": "..."}}.
 * Messages name the field at fault by its path (inputs[3].embedding[7]) and,
 * for a wrong length, both lengths.
 *
 * Thread-safety: all functions are reentrant; a request belongs to one
 * thread at a time.
 */
#ifndef SRV_API_H
#define SRV_API_H

#include <stddef.h>
#include <stdint.h>

#include "budget.h"
#include "buf.h"
#include "encode.h"
#include "model.h"

enum srv_err {
	SRV_ERR_INVALID_ARGUMENT, /* 400 invalid_argument */
	SRV_ERR_FORBIDDEN,	  /* 403 permission_denied */
	SRV_ERR_NOT_FOUND,	  /* 404 not_found */
	SRV_ERR_METHOD,		  /* 405 method_not_allowed */
	SRV_ERR_TOO_LARGE,	  /* 413 payload_too_large */
	SRV_ERR_MEDIA_TYPE,	  /* 415 unsupported_media_type */
	SRV_ERR_LEVELS_MISMATCH,  /* 409 levels_mismatch: the served model and the
				   * registry's IDs have other level counts */
	SRV_ERR_RELOAD_FAILED,	  /* 422 reload_failed */
	SRV_ERR_INTERNAL,	  /* 500 internal */
	SRV_ERR_UNIMPLEMENTED,	  /* 501 unimplemented: a feature this server was
				   * started without (--registry none); no retry
				   * mends it, so no Retry-After */
	SRV_ERR_UNAVAILABLE,	  /* 503 unavailable */
	SRV_ERR_COUNT
};

/* The message of every 503 a drain gives: requests and connections that
 * arrive while the server stops, and admin reloads still waiting. */
#define SRV_MSG_SHUTTING_DOWN "the server is shutting down; retry later"

/* The one mapping: error kind -> HTTP status and "code" string. */
int srv_err_status(enum srv_err kind, const char **code);

struct srv_api_error {
	enum srv_err kind;
	char msg[512];
};

/* Render the error body for @kind and @msg (a malloc'ed string, or NULL),
 * and set *@status (unless NULL) to its HTTP status (srv_err_status). */
char *srv_api_error_body(enum srv_err kind, const char *msg, size_t *len, int *status);

/* 1 when a Content-Type header value means JSON ("application/json",
 * any case, optional parameters such as "; charset=utf-8"). */
int srv_api_content_type_ok(const char *value);

/*
 * Standard base64 (RFC 4648 section 4, '=' padding optional) of @n chars into
 * @out (capacity @cap).  Returns the decoded length, or -1 with *@bad = the
 * offending character position (or @n when the length is impossible) or
 * -2 when it would exceed @cap.
 */
long srv_base64_decode(const char *s, size_t n, uint8_t *out, size_t cap, size_t *bad);
/*
 * Its two paths, for tests/server/check_api.c: srv_base64_decode takes the
 * AVX2 one when the CPU has AVX2 (32 characters per step; the portable loop
 * finishes the rest), the portable one otherwise.  srv__base64_decode_avx2
 * is the portable path too where srv__api_have_avx2() is 0.
 */
long srv__base64_decode_scalar(const char *s, size_t n, uint8_t *out, size_t cap, size_t *bad);
long srv__base64_decode_avx2(const char *s, size_t n, uint8_t *out, size_t cap, size_t *bad);
/* 1 when the CPU has AVX2 (srv_base64_decode and the fast scanner's check
 * that a base64 row is finite use it then). */
int srv__api_have_avx2(void);

/* The allocator jansson's request parsing uses (malloc; tests make it fail). */
extern void *(*srv__json_malloc)(size_t);
/* Tests: 1 makes srv_base64_decode and the fast scanner take their portable
 * paths (process-wide; 0 restores the dispatch). */
void srv__api_force_portable(int on);

/* A decoded, validated encode request. */
struct srv_encode_req {
	enum sid_tower_kind tower;
	size_t B;      /* inputs */
	int D;	       /* floats per input (the tower's input width) */
	float *x;      /* (B, D) row-major */
	int top_k;     /* 1..SID_TOPK_MAX */
	int quantized; /* return_quantized */
	enum sid_sid_format format;
	char *ids;	  /* id JSON texts, concatenated */
	size_t *id_off;	  /* (B) offset into ids */
	uint32_t *id_len; /* (B) 0: no id given */
	/* assign requests only: */
	int reassign;  /* "reassign": true */
	char **id_str; /* (B) each id as plain text (an integer id as its decimal
			* digits); one allocation with the strings after the pointers */
	/* what it holds of body_memory_bytes, given back by srv_encode_req_release */
	struct srv_hold *hold; /* its request's, or NULL: not counted */
	size_t charged;	       /* of hold */
};

/*
 * Parse @body and validate it against a tower of input width @D.  On success
 * fills @req (release with srv_encode_req_release) and returns 0; otherwise
 * returns -1 with @e set (400, or 413 for more than @max_inputs inputs).
 *
 * @hold (NULL: nothing is counted) is charged as memory is taken: the
 * decoded form (the floats, the id texts and their offsets) when each part
 * is allocated, kept in req->charged until srv_encode_req_release, and
 * while jansson parses the body, a bound on its tree
 * (srv__json_tree_bytes), given back when the tree is.  A charge that
 * srv_hold_take refuses ends the decode: -1 with a 503 (SRV_MSG_BUDGET).
 */
int srv_encode_req_decode(const char *body, size_t len, enum sid_tower_kind tower, int D,
			  int max_inputs, struct srv_hold *hold, struct srv_encode_req *req,
			  struct srv_api_error *e);
void srv_encode_req_release(struct srv_encode_req *req);

/* Charge @n more bytes that @req will hold until it is released (an
 * assign's codes and registry call) to its hold: 0, or -1 with @e a 503
 * (SRV_MSG_BUDGET) and nothing charged. */
int srv_encode_req_charge(struct srv_encode_req *req, size_t n, struct srv_api_error *e);

/*
 * The same for POST /v1/{items,users}:assign: the encode request's inputs,
 * each with a required id that is a valid registry id (1..256 bytes of
 * UTF-8 without control characters), plus an optional "reassign" boolean;
 * top_k, return_quantized and format are refused.  Fills req->id_str.
 */
int srv_assign_req_decode(const char *body, size_t len, enum sid_tower_kind tower, int D,
			  int max_inputs, struct srv_hold *hold, struct srv_encode_req *req,
			  struct srv_api_error *e);

/*
 * POST /v1/{items,users}:delete: {"ids": [id, ...]}, 1..@max_inputs ids,
 * each a string or an integer (its decimal text) that is a valid registry
 * id.  Fills req->B and req->id_str (release with srv_encode_req_release);
 * @hold is charged as srv_encode_req_decode charges it.  A body with more
 * JSON values than such a request has is refused before jansson parses it.
 */
int srv_delete_req_decode(const char *body, size_t len, enum sid_tower_kind tower, int max_inputs,
			  struct srv_hold *hold, struct srv_encode_req *req,
			  struct srv_api_error *e);

/*
 * The reference decoder (jansson, every error message).  srv_encode_req_decode
 * first tries a fast scanner that accepts only valid requests in a strict
 * subset of JSON and otherwise falls back to this; they must agree bit for
 * bit (tests/server/check_api.c).  Some errors are made without it: when the
 * scanner finds the body valid but for some embeddings (another width; for
 * base64 also bad base64 or a value not finite), the first such input's
 * error is made by the functions this decoder uses for it, since it would
 * report that one first.  Exposed for the tests.
 */
int srv__encode_req_decode_jansson(const char *body, size_t len, enum sid_tower_kind tower, int D,
				   int max_inputs, struct srv_encode_req *req,
				   struct srv_api_error *e);
/* The fast scanner alone: 1 when it decoded @body (@req must start zeroed
 * with top_k 1), 0 when it gave up (nothing left allocated). */
int srv__encode_req_decode_fast(const char *body, size_t len, int D, int max_inputs,
				struct srv_encode_req *req);
/* 1 when the fast scanner finds @body (an encode request) valid but for one
 * or more embeddings: srv_encode_req_decode then makes the error without
 * jansson. */
int srv__encode_req_bad_row_noted(const char *body, size_t len, int D, int max_inputs);
/* The '[', '{' and ',' of @body outside strings: a bound on the values
 * jansson would build, checked before it is given a body.  *@inputs (unless
 * NULL): the elements of the top-level object's array under @key ("inputs",
 * "ids"), as jansson would count them in a well-formed body.  *@members
 * (unless NULL): the ':' outside strings, the object members jansson would
 * build. */
size_t srv__json_separators(const char *body, size_t len, const char *key, size_t *inputs,
			    size_t *members);
/* The most separators a request of at most @max_inputs inputs of @D numbers
 * has: a body with more is refused before jansson sees it. */
size_t srv__json_separators_max(int D, int max_inputs);
/* The most object members a body of at most @max_inputs inputs is given to
 * jansson with (a request has 2 a input, and 4 more at most; the bound
 * leaves room for a few unknown fields per input, which jansson names). */
size_t srv__json_members_max(int max_inputs);
/* What jansson may allocate at most, at its peak, to parse @body: the
 * bound srv_encode_req_decode charges while it does.  Its terms are the
 * values, objects, arrays, members and strings a one-pass scan counts, and
 * the string bytes (tests/server/check_api.c holds it to jansson's own
 * allocations). */
size_t srv__json_tree_bytes(const char *body, size_t len);

/* The encoder's output for one request's rows (slices of a batch). */
struct srv_encode_res {
	int L, E;
	const int32_t *codes;	  /* (B, L) */
	const float *dist;	  /* (B) */
	const float *quant;	  /* (B, E) or NULL */
	int n_alt;		  /* top_k - 1 */
	const int32_t *alt_codes; /* (B, n_alt, L) */
	const float *alt_dist;	  /* (B, n_alt) */
	const int *alt_count;	  /* (B) */
};

/* Append the 200 body for @req with results @res, served by @version. */
void srv_encode_res_write(struct srv_buf *out, const char *version,
			  const struct srv_encode_req *req, const struct srv_encode_res *res);

#endif
