/*
 * fuzz_model.c - libFuzzer harness for the model loader (sid_model_load_buffer).
 *
 * The input is a whole model file.  A file the loader accepts must be usable:
 * its JSON summary is built, every tower it holds encodes two rows with
 * alternatives, giving codes inside each level's codebook, and the smoke
 * encode (sid_model_smoke) passes or says why.  A rejected file
 * must leave a message naming what is wrong.  Anything else (a crash, a
 * sanitizer report, an accepted model that breaks the encoder) is a finding.
 * Built and run by tests/fuzz.mk (make fuzz, make fuzz-smoke).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "encode.h"
#include "model.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define ROWS  2
#define N_ALT 3

static void fail(const char *what)
{
	fprintf(stderr, "fuzz_model: %s\n", what);
	abort();
}

static void encode_tower(const struct sid_tower *t, struct sid_workspace *ws)
{
	size_t D = (size_t)t->D, E = (size_t)t->E, L = (size_t)t->L;
	float *x = malloc(ROWS * D * sizeof(float));
	int32_t *codes = malloc(ROWS * L * sizeof(int32_t));
	int32_t *alt = malloc(ROWS * N_ALT * L * sizeof(int32_t));
	float *dist = malloc(ROWS * sizeof(float)), *quant = malloc(ROWS * E * sizeof(float));
	float *latent = malloc(ROWS * E * sizeof(float));
	float *alt_dist = malloc(ROWS * N_ALT * sizeof(float));
	int alt_count[ROWS];
	struct sid_encode_out out = {codes, dist, quant, latent, N_ALT, alt, alt_dist, alt_count};
	struct sid_error err;
	char sid[16 * 24];

	if (!x || !codes || !alt || !dist || !quant || !latent || !alt_dist)
		fail("out of memory");
	for (size_t i = 0; i < ROWS * D; i++)
		x[i] = (float)((int)(i * 7 % 13) - 6) / 4.0f;
	sid_error_clear(&err);
	if (sid_encode(t, x, ROWS, &out, ws, &err) == 0) {
		for (size_t r = 0; r < ROWS; r++) {
			for (size_t l = 0; l < L; l++)
				if (codes[r * L + l] < 0 || codes[r * L + l] >= t->K[l])
					fail("greedy code outside its codebook");
			if (alt_count[r] < 0 || alt_count[r] > N_ALT)
				fail("alternative count out of range");
			for (int a = 0; a < alt_count[r]; a++)
				for (size_t l = 0; l < L; l++) {
					int32_t c = alt[(r * N_ALT + (size_t)a) * L + l];
					if (c < 0 || c >= t->K[l])
						fail("alternative code outside its codebook");
				}
			sid_codes_format(codes + r * L, (int)L, SID_FORMAT_TOKENS, sid,
					 sizeof(sid));
			sid_codes_format(codes + r * L, (int)L, SID_FORMAT_DASH, sid, sizeof(sid));
		}
	} else if (!err.msg[0]) {
		fail("encode failed without a message");
	}
	free(x);
	free(codes);
	free(alt);
	free(dist);
	free(quant);
	free(latent);
	free(alt_dist);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct sid_model *m = NULL;
	struct sid_error err;
	struct sid_workspace *ws;
	char *json;

	sid_error_clear(&err);
	if (sid_model_load_buffer(data, size, &m, &err) < 0) {
		if (m || !err.msg[0])
			fail("rejected without a message, or with a model");
		return 0;
	}
	json = sid_model_describe_json(m);
	if (!json)
		fail("describe_json failed");
	free(json);
	ws = sid_workspace_new();
	if (!ws)
		fail("out of memory");
	for (int k = 0; k < SID_TOWER_COUNT; k++) {
		const struct sid_tower *t = sid_model_tower(m, (enum sid_tower_kind)k);
		if (t)
			encode_tower(t, ws);
	}
	sid_workspace_free(ws);
	/* what the server, inspect and eval run on an accepted model */
	sid_error_clear(&err);
	if (sid_model_smoke(m, &err) < 0 && !err.msg[0])
		fail("smoke encode failed without a message");
	sid_model_unref(sid_model_ref(m));
	sid_model_unref(m);
	return 0;
}
