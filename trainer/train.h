/*
 * train.h - the training loop of `semid-train`: load the data, build the DAS
 * model (das.h), initialise codebooks, run the epochs (two phases for
 * two-stage), checkpoint after every epoch, evaluate, and publish the model
 * file atomically with its "semid" metadata.
 *
 * Checkpoint: "<out>.ckpt", a safetensors file published atomically after
 * every epoch, holding das_checkpoint_add's tensors (parameters, Adam m and v,
 * step counters, RNG state, config) plus "train.epoch" (I64: epochs done)
 * and the run configuration as metadata "train_config", and the data it was
 * trained on as metadata "train_data" (sizes and a fingerprint of every
 * training interaction and the cold list).  Batches are a pure
 * function of (seed, epoch, batch index) (data.h), so with @resume the loop
 * restores the checkpoint and continues at the next epoch, and the result is
 * bit for bit the uninterrupted run's (same thread count).  A checkpoint
 * whose model configuration or train_data differs from this run's is refused
 * (SID_EINVAL, exit 2) and left as it is, naming the first differing key.
 * A checkpoint that cannot be written (a full disk, EIO) fails the run and
 * leaves the file it was to replace as it was; the error then says what
 * "<out>.ckpt" holds, as the file system has it: this run's last epoch
 * (which --resume continues from), an earlier run's checkpoint, none, or
 * (only the sync of its directory failed, after the rename) the new one.
 *
 * Before loading anything heavy it refuses (SID_EINVAL) an --out in a
 * missing directory, an --out or OUT.ckpt that exists but is not a regular
 * file, and an --out, OUT.ckpt or OUT.lock that is one of the input files;
 * then it takes --out's lock (lock.h) for the rest of the run: held by
 * another run, SID_EUNAVAIL.
 *
 * Published model metadata "semid": {"format_version": 1, "model_version",
 * "towers": {"item"/"user": {"activation", "input_norm"}}, "created_at",
 * "config" (das_config_json), "run" (data paths...), "data" (sizes),
 * "epochs_done", "seconds_per_epoch", "final_losses", "eval" (eval.h JSON,
 * when a test set is given)}.
 *
 * Progress goes to stderr: one line per epoch (losses, time), plus a bar
 * while an epoch runs when stderr is a terminal and cfg->progress is set.
 *
 * Not thread-safe; one training per process.
 */
#ifndef TR_TRAIN_H
#define TR_TRAIN_H

#include "config.h"
#include "err.h"

/* Run the training described by @cfg.  Returns 0, or a negative SID_E* code
 * with @err naming the file / key at fault (input problems are SID_EFORMAT or
 * SID_EINVAL).
 *
 * SIGINT, SIGTERM and SIGHUP stop it cleanly while it runs: the step under
 * way and any file being written are finished, nothing more is published,
 * and it returns a positive signal number after saying on stderr which
 * epoch the checkpoint holds.  A second such signal ends the process at
 * once (the default action). */
int tr_train_run(const struct tr_config *cfg, int resume, struct sid_error *err);

/* "<out>.ckpt" for @out, into @buf (@len bytes); -1 when it does not fit. */
int tr_ckpt_path(const char *out, char *buf, size_t len);

#endif
