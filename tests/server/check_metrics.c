/* check_metrics.c - server/metrics.c (histograms, code entropy, Prometheus
 * text), server/proc.c (the process_* metrics: /proc text parsed, and a
 * render over a /proc tree of the test's own) and server/log.c (logfmt
 * quoting). */
#include <check.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "check_main.h"
#include "../../server/log.h"
#include "../../server/metrics.h"
#include "../../server/proc.h"

START_TEST(test_hist_render)
{
	static const double le[] = {0.001, 0.01, 0.1};
	struct srv_hist h;
	struct srv_buf b = SRV_BUF_INIT;

	srv_hist_init(&h, le, 3);
	srv_hist_observe(&h, 0.0005);
	srv_hist_observe(&h, 0.001); /* on the bound: counts in that bucket (le) */
	srv_hist_observe(&h, 0.05);
	srv_hist_observe(&h, 7);
	ck_assert_int_eq(srv_hist_render(&h, "x_seconds", "route=\"/a\"", &b), 0);
	ck_assert_str_eq(b.p, "x_seconds_bucket{route=\"/a\",le=\"0.001\"} 2\n"
			      "x_seconds_bucket{route=\"/a\",le=\"0.01\"} 2\n"
			      "x_seconds_bucket{route=\"/a\",le=\"0.1\"} 3\n"
			      "x_seconds_bucket{route=\"/a\",le=\"+Inf\"} 4\n"
			      "x_seconds_sum{route=\"/a\"} 7.0515\n"
			      "x_seconds_count{route=\"/a\"} 4\n");
	srv_buf_release(&b);
	srv_hist_render(&h, "y", "", &b);
	ck_assert_ptr_nonnull(strstr(b.p, "y_bucket{le=\"+Inf\"} 4\ny_sum 7.0515\ny_count 4\n"));
	srv_buf_release(&b);
}
END_TEST

/* A histogram's _sum is written exactly (the shortest decimal that reads
 * back as it): semid_batch_size_sum, whole rows, was written with 9
 * significant digits, 1.23456789e+09 for 1234567891 rows, and its rate
 * went in steps of 10 rows and more once a server had encoded 10^9. */
START_TEST(test_hist_sum_exact)
{
	static const double le[] = {1, 2};
	struct srv_hist h;
	struct srv_buf b = SRV_BUF_INIT;

	srv_hist_init(&h, le, 2);
	srv_hist_observe(&h, 1234567890);
	srv_hist_observe(&h, 1);
	srv_hist_render(&h, "rows", "", &b);
	ck_assert_msg(strstr(b.p, "rows_sum 1234567891\n"), "%s", b.p);
	srv_buf_release(&b);
	srv_hist_observe(&h, 0.1); /* no binary double: its shortest form */
	srv_hist_render(&h, "rows", "a=\"b\"", &b);
	ck_assert_msg(strstr(b.p, "rows_sum{a=\"b\"} 1234567891.1\n"), "%s", b.p);
	srv_buf_release(&b);
}
END_TEST

START_TEST(test_entropy)
{
	struct srv_entropy e;
	int32_t rows[8 * 2];

	srv_entropy_init(&e, 8);
	ck_assert(srv_entropy_bits(&e, 0) == 0);
	/* Level 0 uniform over 4 codes (2 bits), level 1 constant (0 bits). */
	for (int i = 0; i < 8; i++) {
		rows[2 * i] = i % 4;
		rows[2 * i + 1] = 5;
	}
	srv_entropy_add(&e, rows, 8, 2);
	ck_assert_double_eq_tol(srv_entropy_bits(&e, 0), 2.0, 1e-12);
	ck_assert_double_eq_tol(srv_entropy_bits(&e, 1), 0.0, 1e-12);
	/* Push 6 rows of code 9: window = {9 x6, 2, 3} -> p = 3/4, 1/8, 1/8. */
	for (int i = 0; i < 6; i++)
		rows[2 * i] = 9;
	srv_entropy_add(&e, rows, 6, 2);
	ck_assert_double_eq_tol(srv_entropy_bits(&e, 0),
				-(0.75 * log2(0.75) + 2 * 0.125 * log2(0.125)), 1e-12);
	/* A batch bigger than the window keeps its last 8 rows only. */
	{
		int32_t big[20];
		for (int i = 0; i < 20; i++)
			big[i] = i < 12 ? 100 + i : i % 2; /* last 8: 0,1,0,1,.. */
		srv_entropy_add(&e, big, 20, 1);	   /* L changes: window resets */
		ck_assert_double_eq_tol(srv_entropy_bits(&e, 0), 1.0, 1e-12);
		ck_assert(srv_entropy_bits(&e, 1) == 0); /* no such level now */
	}
	srv_entropy_release(&e);
}
END_TEST

/* The counts kept as rows come and go give what counting the window afresh
 * gives: a ring of 37 rows of 3 levels fed in uneven batches. */
START_TEST(test_entropy_counts_follow_the_window)
{
	enum { W = 37, L = 3, N = 1000 };
	static int32_t all[N * L];
	struct srv_entropy e;
	unsigned seed = 7;
	size_t done = 0;

	for (int i = 0; i < N * L; i++) {
		seed = seed * 1103515245u + 12345u;
		all[i] = (int32_t)((seed >> 16) % (unsigned)(i % L == 0 ? 3 : 40));
	}
	srv_entropy_init(&e, W);
	for (size_t b = 1; done < N; b = b * 3 % 50 + 1) {
		size_t B = done + b > N ? N - done : b;
		size_t first = done + B > W ? done + B - W : 0;
		srv_entropy_add(&e, all + done * L, B, L);
		done += B;
		for (int l = 0; l < L; l++) {
			int count[40] = {0};
			double n = (double)(done - first), h = 0;
			for (size_t r = first; r < done; r++)
				count[all[r * L + l]]++;
			for (int c = 0; c < 40; c++)
				if (count[c])
					h -= count[c] / n * log2(count[c] / n);
			ck_assert_double_eq_tol(srv_entropy_bits(&e, l), h, 1e-12);
		}
	}
	srv_entropy_release(&e);
}
END_TEST

static int count_lines_with(const char *text, const char *needle)
{
	int n = 0;
	for (const char *p = text; (p = strstr(p, needle)); p++)
		n++;
	return n;
}

START_TEST(test_render)
{
	struct srv_metrics m;
	int32_t codes[4 * 3] = {1, 2, 3, 1, 2, 4, 1, 5, 3, 1, 5, 4};
	double waits[2] = {0.0002, 0.0004};
	char *t;

	ck_assert_int_eq(srv_metrics_init(&m, 100), 0);
	srv_metrics_request(&m, SRV_ROUTE_ITEMS_ENCODE, 200, 0.0003);
	srv_metrics_request(&m, SRV_ROUTE_ITEMS_ENCODE, 200, 0.0004);
	srv_metrics_request(&m, SRV_ROUTE_ITEMS_ENCODE, 400, 0.00001);
	srv_metrics_request(&m, SRV_ROUTE_OTHER, 404, 0.00001);
	srv_metrics_batch(&m, SID_TOWER_ITEM, 4, "m1", codes, 4, 3, waits, 2);
	/* a batch that failed before encoding: its jobs waited, no batch size */
	srv_metrics_batch(&m, SID_TOWER_ITEM, 0, "m1", NULL, 0, 3, waits + 1, 1);
	srv_metrics_reload(&m, "m1");
	srv_metrics_reload(&m, NULL);
	srv_metrics_reload(&m, NULL);
	t = srv_metrics_render(&m, NULL);
	ck_assert_ptr_nonnull(t);
	ck_assert_ptr_nonnull(
	    strstr(t, "semid_requests_total{route=\"/v1/items:encode\",code=\"200\"} 2\n"));
	ck_assert_ptr_nonnull(
	    strstr(t, "semid_requests_total{route=\"/v1/items:encode\",code=\"400\"} 1\n"));
	ck_assert_ptr_nonnull(strstr(t, "semid_requests_total{route=\"other\",code=\"404\"} 1\n"));
	ck_assert_ptr_nonnull(strstr(t, "semid_request_duration_seconds_bucket{route=\"/v1/"
					"items:encode\",le=\"0.00025\"} 1\n"));
	ck_assert_ptr_nonnull(
	    strstr(t, "semid_request_duration_seconds_count{route=\"/v1/items:encode\"} 3\n"));
	ck_assert_ptr_nonnull(strstr(t, "semid_batch_size_bucket{le=\"4\"} 1\n"));
	ck_assert_ptr_nonnull(strstr(t, "semid_batch_size_sum 4\n"));
	ck_assert_ptr_nonnull(strstr(t, "semid_batch_size_count 1\n"));
	ck_assert_ptr_nonnull(strstr(t, "semid_queue_wait_seconds_count 3\n"));
	ck_assert_ptr_nonnull(strstr(t, "semid_queue_wait_seconds_bucket{le=\"0.00025\"} 1\n"));
	ck_assert_ptr_nonnull(strstr(t, "semid_encoded_total{tower=\"item\"} 4\n"));
	ck_assert_ptr_nonnull(strstr(t, "semid_encoded_total{tower=\"user\"} 0\n"));
	ck_assert_ptr_nonnull(strstr(t, "semid_model_reloads_total{result=\"success\"} 1\n"));
	ck_assert_ptr_nonnull(strstr(t, "semid_model_reloads_total{result=\"error\"} 2\n"));
	/* level 0 constant, level 1 {2,2,5,5} = 1 bit, level 2 {3,4,3,4} = 1 bit */
	ck_assert_ptr_nonnull(
	    strstr(t, "semid_code_entropy_bits{tower=\"item\",level=\"0\"} 0.000000\n"));
	ck_assert_ptr_nonnull(
	    strstr(t, "semid_code_entropy_bits{tower=\"item\",level=\"1\"} 1.000000\n"));
	ck_assert_ptr_nonnull(
	    strstr(t, "semid_code_entropy_bits{tower=\"item\",level=\"2\"} 1.000000\n"));
	ck_assert_int_eq(count_lines_with(t, "semid_code_entropy_bits{tower=\"user\""), 0);
	ck_assert_ptr_null(strstr(t, "semid_model_info{"));
	ck_assert_ptr_nonnull(strstr(t, "semid_build_info{version=\"" SRV_VERSION "\"} 1\n"));
	/* Every sample line is "name{labels} value" or "name value". */
	for (char *line = strtok(t, "\n"); line; line = strtok(NULL, "\n")) {
		char *sp;
		if (line[0] == '#')
			continue;
		sp = strrchr(line, ' ');
		ck_assert_ptr_nonnull(sp);
		ck_assert_msg(strncmp(line, "semid_", 6) == 0 || strncmp(line, "process_", 8) == 0,
			      "%s", line);
		ck_assert_msg(sp[1] >= '0' && sp[1] <= '9', "%s", line);
	}
	free(t);
	srv_metrics_release(&m);
}
END_TEST

/* The limits are exported beside the gauges they bound, once they are set
 * (a 0 would make every ratio against them infinite). */
START_TEST(test_render_limits)
{
	struct srv_metrics m;
	char *t;

	ck_assert_int_eq(srv_metrics_init(&m, 10), 0);
	t = srv_metrics_render(&m, NULL);
	ck_assert_ptr_null(strstr(t, "semid_queue_rows_limit"));
	ck_assert_ptr_null(strstr(t, "semid_connections_limit"));
	ck_assert_ptr_null(strstr(t, "semid_request_body_limit_bytes"));
	free(t);
	srv_metrics_limits(&m, 65536, 248, (size_t)1 << 30);
	srv_metrics_queue_rows(&m, 7);
	srv_metrics_connections_open(&m, 3, 4096);
	t = srv_metrics_render(&m, NULL);
	ck_assert_ptr_nonnull(strstr(t, "# TYPE semid_queue_rows_limit gauge\n"
					"semid_queue_rows_limit 65536\n"));
	ck_assert_ptr_nonnull(strstr(t, "# TYPE semid_connections_limit gauge\n"
					"semid_connections_limit 248\n"));
	ck_assert_ptr_nonnull(strstr(t, "# TYPE semid_request_body_limit_bytes gauge\n"
					"semid_request_body_limit_bytes 1073741824\n"));
	ck_assert_ptr_nonnull(strstr(t, "\nsemid_queue_rows 7\n"));
	ck_assert_ptr_nonnull(strstr(t, "\nsemid_connections_open 3\n"));
	ck_assert_ptr_nonnull(strstr(t, "\nsemid_request_body_bytes 4096\n"));
	free(t);
	srv_metrics_release(&m);
}
END_TEST

/* The entropy window holds the codes of the model served: a swap to another
 * file hides the old codes, a batch the replaced model finishes late is
 * counted but leaves the window alone, and the new model's codes start it
 * afresh; a reload of the same file keeps it. */
START_TEST(test_entropy_follows_the_served_model)
{
	struct srv_metrics m;
	int32_t a[4] = {0, 1, 2, 3}, b[2] = {5, 5};
	char *t;

	ck_assert_int_eq(srv_metrics_init(&m, 10), 0);
	srv_metrics_reload(&m, "aaaa");
	srv_metrics_batch(&m, SID_TOWER_ITEM, 4, "aaaa", a, 4, 1, NULL, 0);
	srv_metrics_reload(&m, "aaaa"); /* the same file again */
	t = srv_metrics_render(&m, NULL);
	ck_assert_ptr_nonnull(
	    strstr(t, "semid_code_entropy_bits{tower=\"item\",level=\"0\"} 2.000000\n"));
	free(t);
	srv_metrics_reload(&m, "bbbb");
	srv_metrics_batch(&m, SID_TOWER_ITEM, 4, "aaaa", a, 4, 1, NULL, 0); /* late */
	t = srv_metrics_render(&m, NULL);
	ck_assert_ptr_null(strstr(t, "semid_code_entropy_bits{"));
	ck_assert_ptr_nonnull(strstr(t, "semid_encoded_total{tower=\"item\"} 8\n"));
	free(t);
	srv_metrics_batch(&m, SID_TOWER_ITEM, 2, "bbbb", b, 2, 1, NULL, 0);
	t = srv_metrics_render(&m, NULL);
	ck_assert_ptr_nonnull(
	    strstr(t, "semid_code_entropy_bits{tower=\"item\",level=\"0\"} 0.000000\n"));
	ck_assert_int_eq(count_lines_with(t, "semid_code_entropy_bits{"), 1);
	free(t);
	srv_metrics_release(&m);
}
END_TEST

/* semid_registry_up as rendered (-1: absent), which is what
 * srv_metrics_registry_is_up (GET /v1/model's registry status) says. */
static double registry_up(struct srv_metrics *m)
{
	char *t = srv_metrics_render(m, NULL), *p = strstr(t, "\nsemid_registry_up ");
	double v = p ? strtod(p + 19, NULL) : -1;
	free(t);
	ck_assert_int_eq(srv_metrics_registry_is_up(m), (int)v);
	return v;
}

/* semid_registry_up: a failed assign holds it at 0 against lookups that go
 * through (a store that reads but cannot write) until an assign goes
 * through, or for reg_hold_s when none is tried (a blip, then lookups
 * only: no alert for a store that is back); the same the other way. */
START_TEST(test_registry_up)
{
	struct srv_metrics m;
	struct timespec pause = {0, 60 * 1000 * 1000};

	ck_assert_int_eq(srv_metrics_init(&m, 4), 0);
	ck_assert(registry_up(&m) == -1); /* disabled: absent */
	srv_metrics_registry_up(&m, 1);
	ck_assert(registry_up(&m) == 1);
	m.reg_hold_s = 0.05;
	srv_metrics_registry_call(&m, SRV_REG_OP_ASSIGN, 0.01, 0);
	ck_assert(registry_up(&m) == 0);
	srv_metrics_registry_call(&m, SRV_REG_OP_LOOKUP, 0.01, 1);
	ck_assert(registry_up(&m) == 0); /* a read says nothing of writes */
	/* nor does an assign whose ids were all known (a full disk takes
	 * those), though its time is an assign's */
	srv_metrics_registry_call_read(&m, SRV_REG_OP_ASSIGN, 0.01);
	ck_assert(registry_up(&m) == 0);
	{
		char *t = srv_metrics_render(&m, NULL);
		ck_assert_ptr_nonnull(
		    strstr(t, "\nsemid_registry_duration_seconds_count{op=\"assign\"} 2\n"));
		ck_assert_ptr_nonnull(
		    strstr(t, "\nsemid_registry_errors_total{op=\"assign\"} 1\n"));
		free(t);
	}
	srv_metrics_registry_call(&m, SRV_REG_OP_ASSIGN, 0.01, 1);
	ck_assert(registry_up(&m) == 1);
	srv_metrics_registry_call(&m, SRV_REG_OP_ASSIGN, 0.01, 0);
	nanosleep(&pause, NULL);
	ck_assert(registry_up(&m) == 0);
	srv_metrics_registry_call(&m, SRV_REG_OP_LOOKUP, 0.01, 1);
	ck_assert(registry_up(&m) == 1); /* no assign failed for reg_hold_s */
	srv_metrics_registry_call(&m, SRV_REG_OP_LOOKUP, 0.01, 0);
	srv_metrics_registry_call(&m, SRV_REG_OP_ASSIGN, 0.01, 1);
	ck_assert(registry_up(&m) == 0);
	nanosleep(&pause, NULL);
	srv_metrics_registry_call(&m, SRV_REG_OP_ASSIGN, 0.01, 1);
	ck_assert(registry_up(&m) == 1);
	srv_metrics_registry_up(&m, 0); /* down at start-up, then back */
	nanosleep(&pause, NULL);
	srv_metrics_registry_call(&m, SRV_REG_OP_LOOKUP, 0.01, 1);
	ck_assert(registry_up(&m) == 1);
	srv_metrics_release(&m);
}
END_TEST

/* semid_registry_timeouts_total: each kind of wait that ran out, taken from
 * the store's events, under its own reason; a SQLite reader's wait for its
 * writer to rebuild the -shm had none and was counted nowhere. */
START_TEST(test_registry_timeouts)
{
	struct srv_metrics m;
	struct sid_reg_events ev = {0};
	char *t;

	ck_assert_int_eq(srv_metrics_init(&m, 4), 0);
	srv_metrics_registry_up(&m, 1);
	ev.busy_timeouts = 1;
	ev.rebuild_timeouts = 2;
	ev.statement_timeouts = 3;
	ev.answer_timeouts = 4;
	srv_metrics_registry_events(&m, &ev);
	srv_metrics_registry_events(&m, &ev);
	t = srv_metrics_render(&m, NULL);
	ck_assert_ptr_nonnull(strstr(t, "\nsemid_registry_timeouts_total{reason=\"busy\"} 2\n"));
	ck_assert_ptr_nonnull(
	    strstr(t, "\nsemid_registry_timeouts_total{reason=\"index_rebuild\"} 4\n"));
	ck_assert_ptr_nonnull(
	    strstr(t, "\nsemid_registry_timeouts_total{reason=\"statement_timeout\"} 6\n"));
	ck_assert_ptr_nonnull(
	    strstr(t, "\nsemid_registry_timeouts_total{reason=\"no_answer\"} 8\n"));
	free(t);
	srv_metrics_release(&m);
}
END_TEST

/* semid_batch_size has a bucket at every power of two up to 65536, the
 * largest max_batch (config.c), so a batch of each size is told apart from
 * one of twice the size.  8192 was missing and the last bound was 16384, so
 * with max_batch over 16384 full batches all fell in +Inf. */
START_TEST(test_batch_size_buckets)
{
	struct srv_metrics m;
	int32_t code = 0;
	char *t;

	ck_assert_int_eq(srv_metrics_init(&m, 4), 0);
	for (size_t B = 1; B <= 65536; B *= 2)
		srv_metrics_batch(&m, SID_TOWER_ITEM, B, "m1", &code, 1, 1, NULL, 0);
	t = srv_metrics_render(&m, NULL);
	ck_assert_ptr_nonnull(t);
	for (int k = 0; k <= 16; k++) {
		char want[80];
		snprintf(want, sizeof(want), "semid_batch_size_bucket{le=\"%d\"} %d\n", 1 << k,
			 k + 1);
		ck_assert_msg(strstr(t, want), "no line %s", want);
	}
	ck_assert_ptr_nonnull(strstr(t, "semid_batch_size_bucket{le=\"+Inf\"} 17\n"));
	ck_assert_int_eq(count_lines_with(t, "semid_batch_size_bucket{"), 18);
	free(t);
	srv_metrics_release(&m);
}
END_TEST

static char *capture_log(void (*fn)(void))
{
	static char buf[4096];
	int fds[2];
	ssize_t n;
	ck_assert_int_eq(pipe(fds), 0);
	srv_log_set_fd(fds[1]);
	fn();
	srv_log_set_fd(2);
	close(fds[1]);
	n = read(fds[0], buf, sizeof(buf) - 1);
	close(fds[0]);
	buf[n > 0 ? n : 0] = '\0';
	return buf;
}

/*
 * A log whose reader stopped reading (its pipe full): every write waited,
 * the threads that answer requests and the event loop too.  Lines that
 * cannot be written now are dropped and counted, the count said before the
 * next line written; a regular file is written as ever.
 */
START_TEST(test_log_full_pipe_drops)
{
	static char big[1 << 16];
	char buf[8192], *nl;
	unsigned long before = srv_log_dropped_total();
	int fds[2], fl;
	ssize_t n;

	/* the pipe's write end by the number a file's had, which the log was
	 * told of first (whether a write can wait was asked of the file) */
	fl = open("/tmp", O_TMPFILE | O_RDWR, 0600);
	ck_assert_int_ge(fl, 0);
	srv_log_set_fd(fl);
	srv_log(SRV_LOG_INFO, "t", "to a file");
	ck_assert_int_eq(pipe(fds), 0);
	ck_assert_int_eq(dup2(fds[1], fl), fl);
	close(fds[1]);
	fds[1] = fl;
	fl = fcntl(fds[1], F_GETFL);
	ck_assert_int_eq(fcntl(fds[1], F_SETFL, fl | O_NONBLOCK), 0);
	while (write(fds[1], big, sizeof(big)) > 0 || write(fds[1], big, 1) > 0)
		;					 /* full */
	ck_assert_int_eq(fcntl(fds[1], F_SETFL, fl), 0); /* blocking again, as stderr is */
	srv_log_set_fd(fds[1]);
	for (int i = 0; i < 3; i++)
		srv_log(SRV_LOG_INFO, "t", "lost %d", i);	/* would wait for ever */
	ck_assert_uint_eq(srv_log_dropped_total() - before, 3); /* semid_log_lines_dropped_total */
	fl = fcntl(fds[0], F_GETFL);
	ck_assert_int_eq(fcntl(fds[0], F_SETFL, fl | O_NONBLOCK), 0);
	while (read(fds[0], big, sizeof(big)) > 0)
		; /* the reader reads again */
	srv_log(SRV_LOG_INFO, "t", "after");
	srv_log_set_fd(2);
	n = read(fds[0], buf, sizeof(buf) - 1);
	ck_assert_int_gt(n, 0);
	buf[n] = '\0';
	nl = strchr(buf, '\n');
	ck_assert_ptr_nonnull(nl);
	ck_assert_ptr_nonnull(strstr(buf,
				     " level=warn event=log dropped=3 msg=\"lines dropped: the "
				     "log's reader was not reading (serving does not wait for "
				     "it)\"\n"));
	ck_assert_ptr_nonnull(strstr(nl + 1, " level=info event=t msg=after\n"));
	ck_assert_ptr_null(strstr(buf, "lost"));
	close(fds[0]);
	close(fds[1]);
}
END_TEST

/*
 * A log that is a regular file on a full disk (here: past RLIMIT_FSIZE, a
 * write cut short and then EFBIG, as ENOSPC does on a full file system):
 * the lines lost were not counted, the one cut short was left unended and
 * the next line written joined it.  Now each is counted, the count is said
 * with the error once the file takes lines again, and the cut line is ended
 * before it.
 */
START_TEST(test_log_full_file_drops)
{
	unsigned long before = srv_log_dropped_total(), lost;
	struct rlimit old, rl;
	char buf[8192], *p, *nl;
	int fd = open("/tmp", O_TMPFILE | O_RDWR, 0600), lines = 0, limited;
	ssize_t n;
	off_t end;

	ck_assert_int_ge(fd, 0);
	signal(SIGXFSZ, SIG_IGN); /* a write past the limit fails with EFBIG */
	ck_assert_int_eq(getrlimit(RLIMIT_FSIZE, &old), 0);
	srv_log_set_fd(fd);
	srv_log(SRV_LOG_INFO, "t", "first");
	end = lseek(fd, 0, SEEK_END);
	ck_assert_int_gt(end, 0);
	rl = old;
	rl.rlim_cur = (rlim_t)end + 50; /* the next line is cut after 50 bytes */
	/* no ck_assert until the limit is lifted: Check's own files obey it */
	limited = setrlimit(RLIMIT_FSIZE, &rl);
	for (int i = 0; i < 3 && !limited; i++)
		srv_log(SRV_LOG_INFO, "t", "lost %d", i);
	lost = srv_log_dropped_total() - before;
	ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &old), 0); /* room again */
	ck_assert_int_eq(limited, 0);
	ck_assert_uint_eq(lost, 3); /* semid_log_lines_dropped_total */
	srv_log(SRV_LOG_INFO, "t", "after");
	srv_log_set_fd(2);
	signal(SIGXFSZ, SIG_DFL);
	n = pread(fd, buf, sizeof(buf) - 1, 0);
	close(fd);
	ck_assert_int_gt(n, 0);
	buf[n] = '\0';
	/* whole lines, each one event; the cut one ended before the next */
	for (p = buf; (nl = strchr(p, '\n')); p = nl + 1, lines++) {
		*nl = '\0';
		ck_assert_msg(!strncmp(p, "ts=", 3) && !strstr(p + 3, "ts="), "line %d: %s", lines,
			      p);
		if (lines == 1)
			ck_assert_msg(strstr(p, "event=t") && strlen(p) == 50, "the cut line: %s",
				      p);
		*nl = '\n';
	}
	ck_assert_msg(*p == '\0', "unended: %s", p);
	ck_assert_int_eq(lines, 4);
	ck_assert_ptr_nonnull(strstr(buf, " level=info event=t msg=first\n"));
	ck_assert_ptr_nonnull(strstr(buf, " level=warn event=log dropped=3 msg=\"lines dropped: "
					  "writing the log failed\" error=\"File too large\"\n"));
	ck_assert_ptr_nonnull(
	    strstr(strstr(buf, "event=log dropped=3"), " level=info event=t msg=after\n"));
	ck_assert_ptr_null(strstr(buf, "lost 1"));
}
END_TEST

/* A full pipe as the log, blocking as stderr is: its read end in fds[0]. */
static void full_pipe_log(int fds[2])
{
	static char big[1 << 16];
	int fl;

	ck_assert_int_eq(pipe(fds), 0);
	fl = fcntl(fds[1], F_GETFL);
	ck_assert_int_eq(fcntl(fds[1], F_SETFL, fl | O_NONBLOCK), 0);
	while (write(fds[1], big, sizeof(big)) > 0 || write(fds[1], big, 1) > 0)
		;
	ck_assert_int_eq(fcntl(fds[1], F_SETFL, fl), 0);
	srv_log_set_fd(fds[1]);
}

/* A reader that comes back after 100 ms and keeps what it reads. */
struct late_reader {
	int fd;
	size_t len;
	char text[1 << 18];
};

static void *read_later(void *arg)
{
	struct late_reader *r = arg;
	struct timespec pause = {0, 100 * 1000 * 1000};
	ssize_t n;

	nanosleep(&pause, NULL);
	while (r->len < sizeof(r->text) &&
	       (n = read(r->fd, r->text + r->len, sizeof(r->text) - r->len)) > 0)
		r->len += (size_t)n; /* until the writer closes */
	return NULL;
}

/* The last lines of a process (srv_log_exiting) wait for a reader that is
 * slow instead of being dropped at once, as lines are while serving: the
 * line saying why the server exits 1 was lost whenever the pipe was full. */
START_TEST(test_log_exiting_waits)
{
	static struct late_reader r;
	unsigned long before;
	int fds[2];
	pthread_t th;
	const char *count;

	/* no reader at all: dropped once the wait is over, and counted */
	full_pipe_log(fds);
	before = srv_log_dropped_total();
	srv_log_exiting(50);
	srv_log(SRV_LOG_ERROR, "t", "nobody reads");
	ck_assert_uint_eq(srv_log_dropped_total() - before, 1);
	srv_log_set_fd(2);
	close(fds[0]);
	close(fds[1]);

	/* a reader that comes back within the wait gets the count and the line */
	full_pipe_log(fds);
	srv_log(SRV_LOG_INFO, "t", "while serving"); /* not exiting: dropped at once */
	srv_log_exiting(20000);
	r.fd = fds[0];
	ck_assert_int_eq(pthread_create(&th, NULL, read_later, &r), 0);
	before = srv_log_dropped_total();
	srv_log(SRV_LOG_ERROR, "t", "last words");
	ck_assert_uint_eq(srv_log_dropped_total(), before); /* written, not dropped */
	srv_log_set_fd(2);
	close(fds[1]); /* the reader then sees the end */
	ck_assert_int_eq(pthread_join(th, NULL), 0);
	close(fds[0]);
	count = memmem(r.text, r.len,
		       " level=warn event=log dropped=", strlen(" level=warn event=log dropped="));
	ck_assert_ptr_nonnull(count);
	ck_assert_ptr_nonnull(memmem(count, r.len - (size_t)(count - r.text),
				     " level=error event=t msg=\"last words\"\n",
				     strlen(" level=error event=t msg=\"last words\"\n")));
	ck_assert_ptr_null(memmem(r.text, r.len, "while serving", strlen("while serving")));
}
END_TEST

static void log_fields(void)
{
	struct srv_logline l;
	srv_log_set_level(SRV_LOG_INFO);
	srv_logline_begin(&l, SRV_LOG_INFO, "request");
	srv_logline_str(&l, "route", "/v1/items:encode");
	srv_logline_int(&l, "status", 400);
	srv_logline_str(&l, "error", "inputs[0] has \"x\"\tand=y\\z");
	srv_logline_str(&l, "empty", "");
	srv_logline_end(&l);
	srv_logline_begin(&l, SRV_LOG_DEBUG, "hidden"); /* below the level */
	srv_logline_str(&l, "k", "v");
	srv_logline_end(&l);
}

static void log_always(void)
{
	struct srv_logline l;
	srv_log_set_level(SRV_LOG_ERROR);
	srv_logline_begin(&l, SRV_LOG_WARN, "hidden"); /* below the level */
	srv_logline_end(&l);
	srv_logline_begin(&l, SRV_LOG_ALWAYS, "listening");
	srv_logline_int(&l, "port", 8080);
	srv_logline_end(&l);
	srv_log_set_level(SRV_LOG_INFO);
}

/* Where the server listens is said at log_level error too, as info. */
START_TEST(test_log_always)
{
	char *out = capture_log(log_always);
	char *rest = strchr(out, ' ');
	ck_assert_msg(strncmp(out, "ts=", 3) == 0, "%s", out);
	ck_assert_ptr_nonnull(rest);
	ck_assert_str_eq(rest, " level=info event=listening port=8080\n");
	ck_assert_str_eq(srv_log_level_name(SRV_LOG_ALWAYS), "info");
	ck_assert_int_eq(srv_log_level_parse("always"), -1);
}
END_TEST

START_TEST(test_logfmt)
{
	char *out = capture_log(log_fields);
	char *rest;
	ck_assert_msg(strncmp(out, "ts=", 3) == 0, "%s", out);
	rest = strstr(out, " level=info event=request ");
	ck_assert_ptr_nonnull(rest);
	ck_assert_str_eq(rest, " level=info event=request route=/v1/items:encode status=400 "
			       "error=\"inputs[0] has \\\"x\\\"\\tand=y\\\\z\" empty=\"\"\n");
	ck_assert_int_eq(srv_log_level_parse("warn"), SRV_LOG_WARN);
	ck_assert_int_eq(srv_log_level_parse("verbose"), -1);
}
END_TEST

static void log_long(void)
{
	struct srv_logline l;
	char big[5000];
	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	srv_logline_begin(&l, SRV_LOG_ERROR, "x");
	srv_logline_str(&l, "v", big);
	srv_logline_str(&l, "after", "dropped");
	srv_logline_end(&l);
}

static void log_bytes(void)
{
	struct srv_logline l;
	srv_logline_begin(&l, SRV_LOG_ERROR, "x");
	/* a client's path: UTF-8 kept, bytes that are not UTF-8 escaped */
	srv_logline_str(&l, "ok", "/v1/items/caf\xc3\xa9-\xe2\x82\xac-\xf0\x9f\x98\x80");
	srv_logline_str(&l, "bad", "/x\xffy\xc3(\xe0\x80\xaf\xed\xa0\x80\xf4\x90\x80\x80z\xc3");
	srv_logline_end(&l);
}

START_TEST(test_log_not_utf8)
{
	char *out = capture_log(log_bytes);
	char *rest = strstr(out, " event=x ");
	ck_assert_ptr_nonnull(rest);
	/* overlong, surrogate and past U+10FFFF forms are escaped byte by byte */
	ck_assert_str_eq(rest, " event=x ok=/v1/items/caf\xc3\xa9-\xe2\x82\xac-\xf0\x9f\x98\x80 "
			       "bad=\"/x\\xffy\\xc3(\\xe0\\x80\\xaf\\xed\\xa0\\x80"
			       "\\xf4\\x90\\x80\\x80z\\xc3\"\n");
}
END_TEST

static const char *utf8_pad; /* shifts where the cut falls */

static void log_long_utf8(void)
{
	struct srv_logline l;
	char big[5001]; /* 2500 x U+00E9 */
	for (size_t i = 0; i < sizeof(big) - 1; i += 2)
		memcpy(big + i, "\xc3\xa9", 2);
	big[sizeof(big) - 1] = '\0';
	srv_logline_begin(&l, SRV_LOG_ERROR, "x");
	srv_logline_str(&l, "a", utf8_pad);
	srv_logline_str(&l, "v", big);
	srv_logline_end(&l);
}

/* A line cut at its size never ends in half a UTF-8 sequence, wherever the
 * cut falls. */
START_TEST(test_log_truncation_utf8)
{
	const char *pads[] = {"b", "bb"};
	for (int i = 0; i < 2; i++) {
		char *out, *v;
		size_t n;
		utf8_pad = pads[i];
		out = capture_log(log_long_utf8);
		v = strstr(out, " v=");
		n = strlen(out);
		ck_assert_ptr_nonnull(v);
		ck_assert_str_eq(out + n - 4, "...\n");
		ck_assert_int_ge(n, SRV_LOG_LINE_MAX - 2);
		for (char *p = v + 3; p < out + n - 4; p += 2)
			ck_assert_msg(!memcmp(p, "\xc3\xa9", 2), "at %td", p - out);
	}
}
END_TEST

static int srv_log_len; /* the length of log_msg's message */

static void log_msg(void)
{
	char m[3 * SRV_LOG_LINE_MAX];

	memset(m, 'm', sizeof(m));
	m[srv_log_len - 4] = '\0';
	srv_log(SRV_LOG_ERROR, "x", "%s end", m);
}

/* srv_log's message (a path, a store's error) is cut where the line is,
 * with "...": it was formatted into 1024 bytes first, so one of 1500 was
 * cut short in a line of 1560 with nothing to say so, its end ("(retrying)",
 * "not logged again") lost. */
START_TEST(test_log_msg_cut_by_the_line)
{
	char *out;
	size_t n;

	srv_log_len = 1500;
	out = capture_log(log_msg);
	n = strlen(out);
	ck_assert_msg(n > 1500 && n < SRV_LOG_LINE_MAX, "%zu bytes", n);
	ck_assert_str_eq(out + n - 6, " end\"\n");
	srv_log_len = 2 * SRV_LOG_LINE_MAX;
	out = capture_log(log_msg);
	n = strlen(out);
	ck_assert_int_eq(n, SRV_LOG_LINE_MAX - 1);
	ck_assert_str_eq(out + n - 4, "...\n");
}
END_TEST

START_TEST(test_log_truncation)
{
	char *out = capture_log(log_long);
	size_t n = strlen(out);
	ck_assert_int_eq(n, SRV_LOG_LINE_MAX - 1);
	ck_assert_str_eq(out + n - 4, "...\n");
	ck_assert_ptr_null(strstr(out, "after="));
}
END_TEST

/* Does @line (one log line, '\n' included) parse as logfmt: space-separated
 * key=value pairs whose values are bare (no space, '"' or '\\') or quoted
 * with the escapes log.h lists and a closing quote? */
static int logfmt_ok(const char *line)
{
	const char *p = line;
	while (*p && *p != '\n') {
		if (p != line && *p++ != ' ')
			return 0;
		if (*p == '=' || *p == ' ' || *p == '"')
			return 0;
		while (*p && *p != '=' && *p != ' ' && *p != '\n')
			if (*p++ == '"')
				return 0;
		if (*p != '=')
			continue; /* a bare key */
		if (*++p != '"') {
			while (*p && *p != ' ' && *p != '\n')
				if (*p == '"' || *p++ == '\\')
					return 0;
			continue;
		}
		for (p++; *p != '"'; p++) {
			if (!*p || *p == '\n')
				return 0; /* never closed */
			if (*p == '\\' && !strchr("\"\\ntux", *++p))
				return 0; /* half an escape */
		}
		p++;
	}
	return *p == '\n' && !p[1];
}

static const char *cut_pad, *cut_value; /* where the cut falls, in what */

static void log_long_quoted(void)
{
	struct srv_logline l;
	char big[3000];
	for (size_t i = 0; i + 1 < sizeof(big); i += strlen(cut_value))
		snprintf(big + i, sizeof(big) - i, "%s", cut_value);
	srv_logline_begin(&l, SRV_LOG_ERROR, "x");
	srv_logline_str(&l, "pad", cut_pad);
	srv_logline_str(&l, "error", big);
	srv_logline_str(&l, "after", "dropped");
	srv_logline_end(&l);
}

/* A line cut inside a quoted value still parses: the quote is closed and no
 * escape is cut in half, wherever the cut falls (a client's id or field
 * name full of quotes or control characters makes such a line).  The cut
 * left the quote open, so a logfmt reader lost the line. */
START_TEST(test_log_truncation_quoted)
{
	static const char *const values[] = {"\"", "\x01", "a\"\x02 ", "\xff", "\\\t"};
	static const char *const pads[] = {"", "b", "bb", "bbb", "bbbb", "bbbbb"};
	for (size_t v = 0; v < sizeof(values) / sizeof(*values); v++)
		for (size_t i = 0; i < sizeof(pads) / sizeof(*pads); i++) {
			char *out, *e;
			cut_value = values[v];
			cut_pad = pads[i];
			out = capture_log(log_long_quoted);
			e = strstr(out, " error=\"");
			ck_assert_ptr_nonnull(e);
			ck_assert_int_le(strlen(out), SRV_LOG_LINE_MAX);
			ck_assert_msg(logfmt_ok(out), "value %zu pad %zu: ...%s", v, i,
				      out + strlen(out) - 20);
			ck_assert_str_eq(out + strlen(out) - 5, "...\"\n");
			ck_assert_ptr_null(strstr(out, "after="));
		}
	/* the lines of the other tests parse too */
	ck_assert(logfmt_ok(capture_log(log_fields)));
	ck_assert(logfmt_ok(capture_log(log_bytes)));
	ck_assert(logfmt_ok(capture_log(log_long)));
}
END_TEST

/* srv_log_format_ts (plain arithmetic, for signal handlers) against glibc's
 * gmtime_r and strftime: the epoch, leap days of 2000 (divisible by 400) and
 * 2024, the day after 2100-02-28 (not a leap year), the ends of years and of
 * 9999, and a sweep of random seconds; milliseconds 0, 7, 999. */
START_TEST(test_log_ts)
{
	static const long long fixed[] = {
	    0,		1,	    86399,	86400,	    951782400,	951868799,     951868800,
	    1709164800, 1735689599, 4107456000, 4107542399, 4107542400, 253402300799LL};
	uint64_t seed = 0x9e3779b97f4a7c15ULL;

	for (int i = 0; i < 13 + 20000; i++) {
		long long sec = i < 13 ? fixed[i] : 0;
		int ms = (i % 3 == 0) ? 0 : (i % 3 == 1) ? 7 : 999;
		char got[SRV_LOG_TS_LEN + 1], want[64];
		struct tm tm;
		time_t t;

		if (i >= 13) {
			seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
			sec = (long long)((seed >> 11) % 253402300800ULL);
		}
		t = (time_t)sec;
		ck_assert_ptr_nonnull(gmtime_r(&t, &tm));
		strftime(want, sizeof(want), "%Y-%m-%dT%H:%M:%S", &tm);
		snprintf(want + strlen(want), sizeof(want) - strlen(want), ".%03dZ", ms);
		ck_assert_uint_eq(srv_log_format_ts(got, sec, ms), SRV_LOG_TS_LEN);
		if (strcmp(got, want) != 0)
			ck_abort_msg("%lld s %d ms: %s, want %s", sec, ms, got, want);
	}
}
END_TEST

/* A control character is written as \u00XX, lower-case hex. */
static void log_control(void)
{
	struct srv_logline l;
	srv_log_set_level(SRV_LOG_INFO);
	srv_logline_begin(&l, SRV_LOG_WARN, "x");
	srv_logline_str(&l, "v",
			"a\x01"
			"b\x1f\x7f");
	srv_logline_end(&l);
}

START_TEST(test_log_control_chars)
{
	char *out = capture_log(log_control);
	char *rest = strstr(out, " level=warn event=x ");
	ck_assert_ptr_nonnull(rest);
	ck_assert_str_eq(rest, " level=warn event=x v=\"a\\u0001b\\u001f\\u007f\"\n");
}
END_TEST

/* A /proc/<pid>/stat line as the kernel writes it, with a comm holding
 * spaces and parentheses (a thread may name itself so): utime 2, stime 5,
 * num_threads 11, starttime 4092130, vsize 547852288, rss 3240, and a
 * negative priority and nice before them. */
static const char stat_line[] =
    "1887 (se) (x) y) S 1885 1884 30268 0 -1 4194304 965 0 7 0 2 5 0 0 -21 -5 11 0 4092130 "
    "547852288 3240 18446744073709551615 94145675624448 94145675953485 0 0 0 17 1 0 0\n";

/* This process's own /proc/self/stat, parsed. */
static void own_stat(struct srv_proc_stat *st)
{
	char own[2048];
	FILE *f = fopen("/proc/self/stat", "r");
	size_t n;

	ck_assert_ptr_nonnull(f);
	n = fread(own, 1, sizeof(own), f);
	fclose(f);
	ck_assert_int_eq(srv_proc_parse_stat(own, n, st), 0);
}

START_TEST(test_proc_parse_stat)
{
	struct srv_proc_stat st;

	ck_assert_int_eq(srv_proc_parse_stat(stat_line, strlen(stat_line), &st), 0);
	ck_assert_uint_eq(st.utime, 2);
	ck_assert_uint_eq(st.stime, 5);
	ck_assert_uint_eq(st.threads, 11);
	ck_assert_uint_eq(st.starttime, 4092130);
	ck_assert_uint_eq(st.vsize, 547852288);
	ck_assert_uint_eq(st.rss, 3240);
	/* this process's own line */
	own_stat(&st);
	ck_assert_uint_ge(st.threads, 1);
	ck_assert_uint_gt(st.vsize, 0);
	ck_assert_uint_gt(st.rss, 0);
}
END_TEST

/* Anything else is refused, so that no wrong value is reported: every cut
 * of the line up to and including rss (a half-read line would give a
 * shorter rss), a missing head, a used field not a number, negative or
 * past 64 bits, no thread. */
START_TEST(test_proc_parse_stat_malformed)
{
	static const struct {
		const char *from, *to;
	} edits[] = {
	    {"1887 (", "(se"},			     /* no pid */
	    {"1887 (", "1887 "},		     /* no '(' */
	    {"(se) (x) y) S", "(se (x y S"},	     /* no ')' */
	    {") S ", ") 7 "},			     /* no state */
	    {") S ", ")S "},			     /* no space */
	    {" 2 5 ", " 2x 5 "},		     /* a trailing letter in utime */
	    {" 2 5 ", " -2 5 "},		     /* a negative utime */
	    {" 2 5 ", " 2  5 "},		     /* an empty field */
	    {" 4092130 ", " 99999999999999999999 "}, /* past 64 bits */
	    {" 547852288 ", " 0x20 "},		     /* not decimal */
	    {" -5 11 ", " -5 0 "},		     /* no thread */
	    {" 3240 ", " 3240x"},		     /* garbage after rss */
	};
	struct srv_proc_stat st;
	const char *rss_end = strstr(stat_line, " 3240 ") + 5;

	for (size_t n = 0; n <= (size_t)(rss_end - stat_line); n++)
		ck_assert_msg(srv_proc_parse_stat(stat_line, n, &st) == -1, "cut at %zu", n);
	ck_assert_int_eq(srv_proc_parse_stat(stat_line, (size_t)(rss_end - stat_line) + 1, &st), 0);
	for (size_t i = 0; i < sizeof(edits) / sizeof(edits[0]); i++) {
		char line[512];
		const char *at = strstr(stat_line, edits[i].from);
		ck_assert_ptr_nonnull(at);
		snprintf(line, sizeof(line), "%.*s%s%s", (int)(at - stat_line), stat_line,
			 edits[i].to, at + strlen(edits[i].from));
		ck_assert_msg(srv_proc_parse_stat(line, strlen(line), &st) == -1, "accepted %s",
			      line);
	}
}
END_TEST

/* Feed @text in pieces of @chunk bytes: the btime or -1. */
static long long btime_of(const char *text, size_t chunk)
{
	struct srv_btime_scan s;
	size_t n = strlen(text);
	long long v;

	srv_btime_scan_init(&s);
	for (size_t i = 0; i < n; i += chunk)
		srv_btime_scan_feed(&s, text + i, n - i < chunk ? n - i : chunk);
	return srv_btime_scan_result(&s, &v) == 0 ? v : -1;
}

START_TEST(test_btime_scan)
{
	static char big[20000];
	static const struct {
		const char *text;
		long long want;
	} cases[] = {
	    {"cpu  1 2 3\ncpu0 1 2 3\nintr 5 0 0\nctxt 9\nbtime 1795887464\nprocesses 7\n",
	     1795887464},
	    {"btime 42\n", 42},
	    {"cpu 1\nbtime 42", 42},		 /* no newline at the end */
	    {"cpu 1\nbtime 42\nbtime 43\n", 42}, /* the first */
	    {"\n\nbtime 7\n", 7},
	    {"cpu 1\nxbtime 5\n", -1}, /* not at a line's start */
	    {"btimes 5\nbtime 6\n", 6},
	    {"cpu btime 5\n", -1},
	    {"btime  5\n", -1}, /* two spaces */
	    {"btime 5x\n", -1},
	    {"btime -5\n", -1},
	    {"btime \n", -1},
	    {"btime 0\n", -1},
	    {"btime 99999999999999999999\n", -1},
	    {"", -1},
	    {"cpu 1 2 3\n", -1},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		for (size_t chunk = 1; chunk <= 8; chunk++)
			ck_assert_msg(btime_of(cases[i].text, chunk) == cases[i].want,
				      "%s in pieces of %zu: %lld", cases[i].text, chunk,
				      btime_of(cases[i].text, chunk));
	/* an intr line longer than the reader's chunk before it */
	memcpy(big, "intr", 4);
	memset(big + 4, '7', sizeof(big) - 64);
	strcpy(big + sizeof(big) - 60, "\nbtime 1700000000\nprocesses 3\n");
	ck_assert(btime_of(big, 4096) == 1700000000);
	ck_assert(btime_of(big, 3) == 1700000000);
}
END_TEST

/* A /proc tree of the test's own under a temp directory. */
static char proc_root[64];

static void write_file(const char *rel, const char *text)
{
	char path[256];
	FILE *f;
	snprintf(path, sizeof(path), "%s/%s", proc_root, rel);
	f = fopen(path, "w");
	ck_assert_ptr_nonnull(f);
	fputs(text, f);
	fclose(f);
}

static void make_proc_tree(void)
{
	char path[256];
	strcpy(proc_root, "/tmp/semid-check-proc-XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(proc_root));
	snprintf(path, sizeof(path), "%s/self", proc_root);
	ck_assert_int_eq(mkdir(path, 0700), 0);
	snprintf(path, sizeof(path), "%s/self/fd", proc_root);
	ck_assert_int_eq(mkdir(path, 0700), 0);
	/* names no descriptor of this process has */
	write_file("self/fd/90001", "");
	write_file("self/fd/90002", "");
	write_file("self/fd/90003", "");
	write_file("self/stat", stat_line);
	write_file("stat", "cpu  1 2 3\nintr 1 2\nbtime 1795000000\nprocesses 9\n");
}

static void remove_proc_tree(void)
{
	static const char *const rel[] = {"self/fd/90001", "self/fd/90002", "self/fd/90003",
					  "self/stat",	   "stat",	    "self/fd",
					  "self"};
	char path[256];
	for (size_t i = 0; i < sizeof(rel) / sizeof(rel[0]); i++) {
		snprintf(path, sizeof(path), "%s/%s", proc_root, rel[i]);
		remove(path);
	}
	rmdir(proc_root);
}

static char *proc_text(struct srv_proc *p)
{
	struct srv_buf b = SRV_BUF_INIT;
	srv_proc_render(p, &b);
	ck_assert(!b.oom);
	return srv_buf_detach(&b, NULL);
}

/* The sample line of @name in @text ("" when it has none), its HELP and
 * TYPE there in any case. */
static const char *sample(const char *text, const char *name)
{
	static char line[128];
	char want[128];
	const char *p;

	snprintf(want, sizeof(want), "# TYPE %s ", name);
	ck_assert_msg(strstr(text, want), "no TYPE of %s", name);
	snprintf(want, sizeof(want), "\n%s ", name);
	p = strstr(text, want);
	if (!p)
		return "";
	snprintf(line, sizeof(line), "%.*s", (int)strcspn(p + 1, "\n"), p + 1);
	return line;
}

/* Every value from the tree: CPU seconds and start time in clock ticks over
 * sysconf(_SC_CLK_TCK), RSS in pages times the page size, the listed
 * descriptors (the tree's three: none is the lister's own), the limits
 * this process has. */
START_TEST(test_proc_render)
{
	struct srv_proc p;
	struct rlimit rl;
	long tck = sysconf(_SC_CLK_TCK), page = sysconf(_SC_PAGESIZE);
	char want[128], *t;

	make_proc_tree();
	srv_proc_init(&p, proc_root);
	t = proc_text(&p);
	snprintf(want, sizeof(want), "process_cpu_seconds_total %.3f", 7.0 / (double)tck);
	ck_assert_str_eq(sample(t, "process_cpu_seconds_total"), want);
	snprintf(want, sizeof(want), "process_resident_memory_bytes %ld", 3240 * page);
	ck_assert_str_eq(sample(t, "process_resident_memory_bytes"), want);
	ck_assert_str_eq(sample(t, "process_virtual_memory_bytes"),
			 "process_virtual_memory_bytes 547852288");
	ck_assert_str_eq(sample(t, "process_open_fds"), "process_open_fds 3");
	ck_assert_str_eq(sample(t, "process_threads"), "process_threads 11");
	snprintf(want, sizeof(want), "process_start_time_seconds %.3f",
		 1795000000.0 + 4092130.0 / (double)tck);
	ck_assert_str_eq(sample(t, "process_start_time_seconds"), want);
	ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &rl), 0);
	{
		char max[64];
		snprintf(max, sizeof(max), "process_max_fds %llu", (unsigned long long)rl.rlim_cur);
		ck_assert_str_eq(sample(t, "process_max_fds"), max);
	}
	ck_assert_ptr_nonnull(strstr(t, "# HELP process_cpu_seconds_total Total user and system "
					"CPU time spent in seconds.\n# TYPE "
					"process_cpu_seconds_total counter\n"));
	free(t);
	/* btime is read once: a changed /proc/stat leaves the start time be */
	write_file("stat", "btime 1\n");
	t = proc_text(&p);
	ck_assert_str_eq(sample(t, "process_start_time_seconds"), want);
	free(t);
	remove_proc_tree();
}
END_TEST

/* srv_proc_rss (memory_trim_s's reading): the tree's rss pages times the
 * page size; -1 without the file or with a line cut short. */
START_TEST(test_proc_rss)
{
	struct srv_proc p;

	make_proc_tree();
	srv_proc_init(&p, proc_root);
	ck_assert_int_eq(srv_proc_rss(&p), 3240LL * sysconf(_SC_PAGESIZE));
	write_file("self/stat", "1887 (semid-server) S 1885 1884\n");
	ck_assert_int_eq(srv_proc_rss(&p), -1);
	remove_proc_tree();
	srv_proc_init(&p, proc_root); /* gone */
	ck_assert_int_eq(srv_proc_rss(&p), -1);
	srv_proc_init(&p, NULL); /* this process */
	ck_assert_int_gt(srv_proc_rss(&p), 0);
}
END_TEST

/* RLIMIT_AS: its soft limit, no sample when unlimited. */
START_TEST(test_proc_render_address_space)
{
	struct srv_proc p;
	struct rlimit rl, old;
	char *t;

	ck_assert_int_eq(getrlimit(RLIMIT_AS, &old), 0);
	srv_proc_init(&p, NULL);
	rl = old;
	rl.rlim_cur = RLIM_INFINITY;
	if (setrlimit(RLIMIT_AS, &rl) == 0) {
		t = proc_text(&p);
		ck_assert_str_eq(sample(t, "process_virtual_memory_max_bytes"), "");
		free(t);
	}
	/* far above what this process maps (a sanitizer's shadow maps terabytes) */
	{
		struct srv_proc_stat st;
		own_stat(&st);
		rl.rlim_cur = (rlim_t)1 << 44;
		if (rl.rlim_cur < 4 * st.vsize)
			rl.rlim_cur = 4 * st.vsize;
	}
	if (old.rlim_max != RLIM_INFINITY && old.rlim_max < rl.rlim_cur)
		rl.rlim_cur = old.rlim_max;
	ck_assert_int_eq(setrlimit(RLIMIT_AS, &rl), 0);
	t = proc_text(&p);
	{
		char want[80];
		snprintf(want, sizeof(want), "process_virtual_memory_max_bytes %llu",
			 (unsigned long long)rl.rlim_cur);
		ck_assert_str_eq(sample(t, "process_virtual_memory_max_bytes"), want);
	}
	free(t);
	ck_assert_int_eq(setrlimit(RLIMIT_AS, &old), 0);
}
END_TEST

static struct srv_proc *log_proc;

static void render_twice(void)
{
	srv_log_set_level(SRV_LOG_INFO);
	free(proc_text(log_proc));
	free(proc_text(log_proc));
}

/* @rel of the tree holds @text: two scrapes log @why once, @gone has no
 * sample and @kept is a sample line still there. */
static void one_bad_source(struct srv_proc *p, const char *rel, const char *text, const char *why,
			   const char *gone, const char *kept)
{
	char *log, *t, name[64];

	write_file(rel, text);
	log_proc = p;
	log = capture_log(render_twice);
	ck_assert_int_eq(count_lines_with(log, "event=metrics "), 1);
	ck_assert_msg(count_lines_with(log, why) == 1, "%s", log);
	t = proc_text(p);
	ck_assert_str_eq(sample(t, gone), "");
	snprintf(name, sizeof(name), "%.*s", (int)strcspn(kept, " "), kept);
	ck_assert_str_eq(sample(t, name), kept);
	free(t);
}

/* No /proc (an empty tree), then a malformed stat and btime: those values
 * have no sample (HELP and TYPE stay), the limits still do, and each
 * source's failure is logged once however many scrapes follow. */
START_TEST(test_proc_render_without_proc)
{
	static const char *const from_proc[] = {
	    "process_cpu_seconds_total",    "process_resident_memory_bytes",
	    "process_virtual_memory_bytes", "process_open_fds",
	    "process_start_time_seconds",   "process_threads"};
	struct srv_proc p;
	char *log, *t;

	strcpy(proc_root, "/tmp/semid-check-proc-XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(proc_root));
	srv_proc_init(&p, proc_root);
	log_proc = &p;
	log = capture_log(render_twice);
	ck_assert_int_eq(count_lines_with(log, "level=warn event=metrics "), 2); /* stat, fd */
	ck_assert_int_eq(count_lines_with(log, "/self/stat: No such file or directory"), 1);
	ck_assert_int_eq(count_lines_with(log, "/self/fd: No such file or directory"), 1);
	t = proc_text(&p);
	for (size_t i = 0; i < sizeof(from_proc) / sizeof(from_proc[0]); i++)
		ck_assert_msg(!*sample(t, from_proc[i]), "%s", sample(t, from_proc[i]));
	ck_assert(*sample(t, "process_max_fds"));
	free(t);
	rmdir(proc_root);

	/* a stat line cut short, then a good one beside a bad btime */
	make_proc_tree();
	srv_proc_init(&p, proc_root);
	one_bad_source(&p, "self/stat", "1887 (semid-server) S 1885 1884\n",
		       "/self/stat: not a stat line", "process_threads", "process_open_fds 3");
	write_file("self/stat", stat_line);
	one_bad_source(&p, "stat", "cpu 1\nbtime 12x\n", "/stat: no valid btime line",
		       "process_start_time_seconds", "process_threads 11");
	/* mended: read at the next scrape */
	write_file("stat", "btime 1795000000\n");
	t = proc_text(&p);
	ck_assert(*sample(t, "process_start_time_seconds"));
	free(t);
	remove_proc_tree();
}
END_TEST

static void add_tests(TCase *tc)
{
	tcase_add_test(tc, test_hist_render);
	tcase_add_test(tc, test_hist_sum_exact);
	tcase_add_test(tc, test_entropy);
	tcase_add_test(tc, test_entropy_counts_follow_the_window);
	tcase_add_test(tc, test_render);
	tcase_add_test(tc, test_render_limits);
	tcase_add_test(tc, test_batch_size_buckets);
	tcase_add_test(tc, test_registry_up);
	tcase_add_test(tc, test_registry_timeouts);
	tcase_add_test(tc, test_entropy_follows_the_served_model);
	tcase_add_test(tc, test_logfmt);
	tcase_add_test(tc, test_log_always);
	tcase_add_test(tc, test_log_full_pipe_drops);
	tcase_add_test(tc, test_log_full_file_drops);
	tcase_add_test(tc, test_log_exiting_waits);
	tcase_add_test(tc, test_log_truncation);
	tcase_add_test(tc, test_log_msg_cut_by_the_line);
	tcase_add_test(tc, test_log_truncation_utf8);
	tcase_add_test(tc, test_log_truncation_quoted);
	tcase_add_test(tc, test_log_not_utf8);
	tcase_add_test(tc, test_log_ts);
	tcase_add_test(tc, test_log_control_chars);
	tcase_add_test(tc, test_proc_parse_stat);
	tcase_add_test(tc, test_proc_parse_stat_malformed);
	tcase_add_test(tc, test_btime_scan);
	tcase_add_test(tc, test_proc_render);
	tcase_add_test(tc, test_proc_render_address_space);
	tcase_add_test(tc, test_proc_rss);
	tcase_add_test(tc, test_proc_render_without_proc);
}

int main(void)
{
	return srv_check_run("metrics", add_tests);
}
