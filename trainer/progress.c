/* progress.c - the trainer's progress bar and line timing; see progress.h. */
#include "progress.h"

#include <stdio.h>
#include <time.h>

#define BAR_WIDTH 30

double tr_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

void tr_progress_start(struct tr_progress *p, int on, int tty, double every)
{
	p->bar = on && tty;
	p->lines = on && !tty;
	p->every = every;
	p->t0 = p->t_line = tr_now();
}

double tr_progress_elapsed(const struct tr_progress *p)
{
	return tr_now() - p->t0;
}

void tr_progress_bar(const struct tr_progress *p, const char *label, double done, double total)
{
	double frac = total > 0 ? done / total : 1;
	int fill, pct;
	char bar[BAR_WIDTH + 1];

	if (!p->bar)
		return;
	frac = frac < 0 ? 0 : frac > 1 ? 1 : frac;
	/* from done and total, not frac: 29 of 100 is 29%, where 0.29 * 100
	 * rounds down to 28 */
	fill = frac < 1 ? (int)(done * BAR_WIDTH / total) : BAR_WIDTH;
	pct = frac < 1 ? (int)(done * 100 / total) : 100;
	for (int k = 0; k < BAR_WIDTH; k++)
		bar[k] = k < fill ? '#' : '.';
	bar[BAR_WIDTH] = 0;
	fprintf(stderr, "\r%s [%s] %3d%% %6.1fs", label, bar, pct, tr_progress_elapsed(p));
	fflush(stderr);
}

int tr_progress_line_due(struct tr_progress *p)
{
	double now;

	if (!p->lines)
		return 0;
	now = tr_now();
	if (now - p->t_line < p->every)
		return 0;
	p->t_line = now;
	return 1;
}

void tr_progress_clear(const struct tr_progress *p)
{
	if (p->bar)
		fprintf(stderr, "\r\033[K");
}
