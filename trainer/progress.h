/*
 * progress.h - progress of the trainer's long steps (an epoch, the
 * evaluation) on stderr: on a terminal a bar redrawn in place, else a log
 * line every `progress_every` seconds, for a trainer run by cron or a job
 * (README: a silent hour looked like a hang).  This file keeps the time and
 * draws the bar; the caller writes the lines, in its own words, when one is
 * due.  One record per step; not thread-safe (stderr is shared).
 */
#ifndef TR_PROGRESS_H
#define TR_PROGRESS_H

struct tr_progress {
	int bar;       /* progress on and stderr a terminal: the bar */
	int lines;     /* progress on and no terminal: the lines */
	double every;  /* seconds between lines (0: whenever asked) */
	double t0;     /* tr_now() at the start */
	double t_line; /* at the last line (or the start) */
};

/* Monotonic seconds. */
double tr_now(void);

/* Start now: @on (the `progress` setting), @tty (stderr is a terminal),
 * @every (`progress_every`). */
void tr_progress_start(struct tr_progress *p, int on, int tty, double every);

/* Seconds since the start. */
double tr_progress_elapsed(const struct tr_progress *p);

/* With the bar on, draw "\r@label [####......]  40%   12.3s" for @done of
 * @total units (the percent rounded down); otherwise nothing. */
void tr_progress_bar(const struct tr_progress *p, const char *label, double done, double total);

/* With the lines on, whether @every seconds have passed since the start or
 * the last line: 1 (counting the next from now, as the caller writes this
 * one) or 0. */
int tr_progress_line_due(struct tr_progress *p);

/* With the bar on, erase its line, before a line of text or at the end. */
void tr_progress_clear(const struct tr_progress *p);

#endif
