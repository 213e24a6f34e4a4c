/*
 * progress.c - the one-line progress bar `semid encode` and the long `semid
 * registry` commands draw on stderr when it is a terminal: units done / total
 * (rows, entries, MiB, ids moved), percent, rate and ETA, redrawn in place
 * with '\r' at most ten times a second; and the pace of a rate-capped copy.
 * See cli.h.
 */
#include "cli.h"

#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>

#define BAR_WIDTH 24

double cli_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* "812", "12.3k", "4.56M" */
static void fmt_rate(char *buf, size_t len, double r)
{
	if (r >= 1e6)
		snprintf(buf, len, "%.2fM", r / 1e6);
	else if (r >= 1e4)
		snprintf(buf, len, "%.1fk", r / 1e3);
	else
		snprintf(buf, len, "%.0f", r);
}

/* "0:04", "12:31", "3:02:15" */
static void fmt_duration(char *buf, size_t len, double s)
{
	unsigned long t = s < 0 ? 0 : s > 359999999.0 ? 359999999UL : (unsigned long)(s + 0.5);

	if (t >= 3600)
		snprintf(buf, len, "%lu:%02lu:%02lu", t / 3600, t / 60 % 60, t % 60);
	else
		snprintf(buf, len, "%lu:%02lu", t / 60, t % 60);
}

/* The line in @buf, with a bar @width wide (0: none) and the rate when
 * @rated; its length (snprintf semantics). */
static int format_unit(char *buf, size_t len, size_t done, size_t total, double elapsed,
		       const char *unit, int width, int rated)
{
	char bar[BAR_WIDTH + 4], rate[64], eta[32];
	double frac = total ? (double)done / (double)total : 1.0;
	double r = elapsed > 0 ? (double)done / elapsed : 0.0;
	int fill, i;

	if (frac > 1.0)
		frac = 1.0;
	fill = (int)(frac * width);
	bar[0] = '\0';
	if (width > 0) {
		bar[0] = '[';
		for (i = 0; i < width; i++)
			bar[1 + i] = i < fill ? '#' : '-';
		memcpy(bar + 1 + width, "] ", 3);
	}
	rate[0] = '\0';
	if (rated) {
		char n[32];
		fmt_rate(n, sizeof(n), r);
		snprintf(rate, sizeof(rate), "%s %s/s  ", n, unit);
	}
	if (done >= total)
		fmt_duration(eta, sizeof(eta), elapsed);
	else if (r > 0)
		fmt_duration(eta, sizeof(eta), (double)(total - done) / r);
	else
		snprintf(eta, sizeof(eta), "?");
	return snprintf(buf, len, "%s%5.1f%%  %zu/%zu %s  %s%s %s", bar, frac * 100.0, done, total,
			unit, rate, done >= total ? "in" : "ETA", eta);
}

int cli_progress_format(char *buf, size_t len, size_t done, size_t total, double elapsed)
{
	return format_unit(buf, len, done, total, elapsed, "rows", BAR_WIDTH, 1);
}

/* The columns of the terminal @fp is, or 0 (not one, or it does not say). */
static int term_cols(FILE *fp)
{
	struct winsize ws;

	if (ioctl(fileno(fp), TIOCGWINSZ, &ws) != 0)
		return 0;
	return ws.ws_col;
}

/* The line for @done, fitted to a terminal of @cols columns (0: any): a
 * line as wide as the terminal or wider wraps, and the next redraw's '\r'
 * goes back to its last row only, leaving the rest behind, a line each
 * redraw.  The bar narrows, then goes, then the rate, so the counts and
 * the ETA stay; only then is the line cut. */
static void draw_line(char *line, size_t len, const struct cli_progress *p, size_t done,
		      double elapsed, int cols)
{
	int n = format_unit(line, len, done, p->total, elapsed, p->unit, BAR_WIDTH, 1);

	if (cols <= 0 || n < cols)
		return;
	if (n - (cols - 1) < BAR_WIDTH) /* a narrower bar will do */
		n = format_unit(line, len, done, p->total, elapsed, p->unit,
				BAR_WIDTH - (n - (cols - 1)), 1);
	else
		n = format_unit(line, len, done, p->total, elapsed, p->unit, 0, 1);
	if (n >= cols)
		n = format_unit(line, len, done, p->total, elapsed, p->unit, 0, 0);
	if (n >= cols && (size_t)cols - 1 < len)
		line[cols - 1] = '\0';
}

static void draw(struct cli_progress *p, size_t done, double now)
{
	char line[256];

	draw_line(line, sizeof(line), p, done, now - p->t0, term_cols(p->fp));
	/* "\033[K" clears what a longer previous line left behind */
	fprintf(p->fp, "\r%s\033[K", line);
	fflush(p->fp);
	p->last = now;
}

void cli_progress_begin(struct cli_progress *p, int on, size_t total, FILE *fp)
{
	memset(p, 0, sizeof(*p));
	p->on = on;
	p->total = total;
	p->fp = fp;
	p->unit = "rows";
	p->t0 = cli_now();
	p->last = 0;
}

void cli_progress_update(struct cli_progress *p, size_t done)
{
	double now;

	if (!p->on)
		return;
	now = cli_now();
	if (now - p->last < 0.1)
		return;
	draw(p, done, now);
}

void cli_progress_end(struct cli_progress *p, size_t done)
{
	if (!p->on)
		return;
	draw(p, done, cli_now());
	fputc('\n', p->fp);
	fflush(p->fp);
	p->on = 0;
}

double cli_pace_delay(uint64_t done, double rate, double elapsed)
{
	double due = rate > 0 ? (double)done / rate : 0.0;
	return due > elapsed ? due - elapsed : 0.0;
}
