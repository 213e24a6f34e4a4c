/*
 * http.c - routes, request intake and responses on libmicrohttpd (see
 * http.h for the flow: validate on the MHD thread, suspend, batch on the
 * loop thread, resume and answer).
 */
#include "http.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "api.h"
#include "env.h"
#include "json.h"
#include "log.h"
#include "sockact.h"

/* What a served connection is doing, for the sweeper's deadlines. */
enum conn_phase {
	CONN_RECEIVING, /* a request arriving, or awaited: connection_timeout_s */
	CONN_WORKING,	/* its request in full, its answer not yet queued */
	CONN_SENDING	/* its answer queued, not yet written out in full: connection_timeout_s */
};

/*
 * One open TCP connection (MHD's socket_context).  While it is on the
 * watch list, the sweeper thread closes it (shutdown(2); MHD then sees the
 * end of the stream and cleans up) when a request has been arriving for
 * longer than connection_timeout_s, or an answer has been waiting that long
 * for its client to take it: MHD's own timeout only fires on silence, so a
 * client sending a byte a second, or reading its answer just fast enough
 * for MHD to write a little of it now and then, would hold the connection
 * (and the answer's memory) for ever.  MHD notifies CLOSED before it
 * closes the socket, and the list lock is held across both removal and
 * shutdown, so the fd is never stale.
 */
struct conn {
	struct conn *prev, *next;
	int fd;
	long long since_us; /* atomic: when its phase began (refused: when it was) */
	int phase;	    /* atomic: enum conn_phase, stored after since_us */
	int cut;	    /* atomic: the sweeper closed it (or counted MHD's closing it) */
	int begun;	    /* atomic: a request's line is in, its answer not yet sent */
	int url_nul;	    /* the URL being parsed had a %00 (its MHD thread only) */
	/* the URL being parsed has a '%' without two hex digits: it and what
	 * follows it, shown (bad_escape), "" for none (its MHD thread only) */
	char bad_esc[12];
	int bad_esc_query; /* ... in its query */
	/* the URL being parsed has a byte no request target may hold raw:
	 * it (raw_byte_bad), 0 for none, and its offset (its MHD thread only) */
	int raw_byte;
	size_t raw_at;
	/* the URL being parsed: 1 + where its path's first %2F decodes to, 0
	 * for none (encoded_slash; its MHD thread only) */
	size_t enc_slash;
	/* taken by the acceptor (inherited socket) and no request begun on
	 * it yet: counted in srv_http.fresh (its MHD thread only) */
	int fresh;
	int refused; /* turned away with a 503, lingering (see refuse) */
	/* refused: its request's headers were seen; the bytes of its body read
	 * and dropped (its MHD thread only) */
	int heard;
	size_t drained;
};

struct srv_http {
	struct srv_http_deps d;
	struct MHD_Daemon *mhd;
	int port;
	char addr[300]; /* the address bound, in numbers */
	/* the main port, or the operations port (d.main_port set): the config
	 * key of its address and its connection limit */
	int ops;
	const char *key;
	int limit;
	long inflight; /* atomic */
	long begun;    /* requests begun, ever; atomic */
	int draining;  /* atomic */
	/*
	 * A listening socket passed by the service manager (socket activation,
	 * sockact.h), or -1 when MHD binds and accepts itself.  MHD never sees
	 * it (MHD_USE_NO_LISTEN_SOCKET): the acceptor thread takes its
	 * connections and hands them over (MHD_add_connection), and a drain
	 * stops that thread, so that connections arriving from then on wait in
	 * the socket's backlog for the next server.  Given to MHD, the socket
	 * would be lost to the next one: libmicrohttpd 0.9.75's
	 * MHD_stop_daemon, with a thread pool, shutdown(2)s its listening
	 * socket, which stops it listening in every process that shares it
	 * (systemd's copy too), and MHD_quiesce_daemon, which would leave it
	 * alone, races its own workers (srv_http_quiesce).
	 */
	int lfd;
	int wake; /* eventfd: the acceptor stops */
	pthread_t acceptor;
	int acceptor_on;
	int mhd_limit;		  /* MHD's connection limit: the acceptor waits at it */
	long fresh;		  /* atomic: accepted, no request begun yet (conn.fresh) */
	long long drain_since_us; /* when srv_http_quiesce ran */
	/* body_memory_bytes: request bodies, decoded requests, answers */
	struct srv_budget budget;
	/* connections: the watch list, the count, refusals over the limit */
	pthread_mutex_t conns_lock;
	struct conn *conns;
	struct conn over;	    /* the socket_context of refused ones not lingering */
	long open;		    /* atomic: connections MHD holds */
	long lingering;		    /* atomic: of them, refused ones lingering (see refuse) */
	long refused;		    /* atomic: refused since the sweeper last logged */
	long refused_draining;	    /* atomic: ... and turned away while draining */
	long long counts_logged_us; /* sweeper thread: when it last logged counts */
	/* sweeper thread: closed at the request and the send deadline since it
	 * last logged */
	long cut_unlogged[2];
	/* atomic: ... and those libmicrohttpd closed first (conn_timed_out) */
	long cut_by_mhd[2];
	/* libmicrohttpd's lines: the second being counted and its lines
	 * (under conns_lock), and those not logged since the sweeper last
	 * said how many (atomic) */
	long long mhd_window_us;
	int mhd_lines;
	long mhd_dropped;
	char *over_resp; /* the canned 503 written to a connection over the limit */
	size_t over_len;
	char *drain_resp; /* ... and to a connection opened while draining */
	size_t drain_len;
	pthread_t sweeper;
	int sweeper_on;
	/* MHD's first message while it starts (why it could not listen);
	 * under conns_lock */
	char start_msg[256];
	int started;
	pthread_mutex_t stop_lock;
	pthread_cond_t stop_cv;
	int stopping;
	/* request ids made for requests that bring none */
	uint64_t rid_key;
	uint64_t rid_next; /* atomic */
};

enum req_state {
	REQ_LINE,  /* its request line is in (on_uri), not yet its headers */
	REQ_BODY,  /* a POST: reading the body */
	REQ_GET,   /* a GET route: answered on the next call */
	REQ_READY, /* the response is decided; sent on the next call */
	REQ_WAIT,  /* suspended: the batcher or a reload will answer */
	REQ_DONE
};

struct req {
	struct srv_http *h;
	struct MHD_Connection *conn;
	enum srv_route route;
	enum req_state state;
	char method[16];
	char path[128];
	char request_id[SRV_REQUEST_ID_MAX + 1]; /* the caller's X-Request-Id, or one made */
	double t0;
	/* Server-Timing parts of an encode (seconds; queued < 0: not encoded) */
	double queued, encoded;
	/* body */
	struct srv_buf body;
	size_t seen;
	size_t length;		      /* its Content-Length, when given and accepted */
	struct srv_hold hold;	      /* its bodies, decoded form and answer in srv_http.budget */
	size_t charged;		      /* of hold: the body bytes its buffer can hold */
	struct MHD_Response *pending; /* an answer to queue at the next call (send_response) */
	int too_large;
	int no_room; /* body_memory_bytes were held by others: read, dropped, 503 */
	/* the response, once known */
	int status;
	char *resp;
	size_t resp_len;
	size_t resp_charged; /* of hold: an encode, assign or lookup answer */
	const char *ctype;
	const char *allow;
	int no_coding; /* a 415 for its Content-Encoding: say Accept-Encoding: identity */
	int del;       /* DELETE /v1/{items,users}/{id} (not POST .../{items,users}:delete) */
	int retry_after;
	/* for the log line */
	size_t items;
	char version[256];
	char errmsg[256];
	struct srv_reload_waiter waiter;
	char *arg;		   /* registry lookups: the URL-decoded {id} or {sid} */
	struct srv_encode_req ids; /* POST /v1/{items,users}:delete: its ids (id_str) */
	struct conn *c;		   /* its connection (NULL if MHD gave none) */
	int close;		   /* answer with Connection: close (bad framing) */
	int url_nul;		   /* its path or query had a %00 */
	char bad_esc[12];	   /* its URL's first malformed percent escape (conn.bad_esc) */
	int bad_esc_query;
	int raw_byte;	    /* its target's first byte invalid raw, 0 none (conn.raw_byte) */
	size_t raw_at;	    /* ... its offset in the target as sent */
	size_t enc_slash;   /* 1 + where its path's first %2F decodes to (conn.enc_slash) */
	int content_types;  /* its Content-Type headers (framing_bad counts them) */
	int authorizations; /* ... and its Authorization headers */
	int http11;	    /* an HTTP/1.1 request (expects_continue) */
};

static const char JSON_CT[] = "application/json";
/* Allow: the methods of each kind of route, OPTIONS included (RFC 9110
 * 10.2.1), on its 405s and its OPTIONS answer alike */
static const char ALLOW_POST[] = "POST, OPTIONS";
static const char ALLOW_GET[] = "GET, HEAD, OPTIONS";
static const char ALLOW_GET_DELETE[] = "GET, HEAD, DELETE, OPTIONS";
static const char REQUEST_ID_HEADER[] = "X-Request-Id";

/* The most a body's Content-Length reserves before its bytes arrive (a larger
 * body grows as it comes: a client's claim alone does not buy memory). */
#define BODY_RESERVE_MAX (16u << 20)

/* Let go of @q's body and of its share of body_memory_bytes. */
static void body_release(struct req *q)
{
	srv_buf_release(&q->body);
	srv_hold_give(&q->hold, q->charged);
	q->charged = 0;
}

/* Room in @q's body for @n more bytes, counted in srv_http.budget against
 * body_memory_bytes with what every other request holds; 0 when
 * there is none.  The buffer grows to the whole Content-Length at once when
 * that is known and at most BODY_RESERVE_MAX (growing by doubling copied a
 * 64-item request about twice), else by doubling, but never past the
 * Content-Length or max_body_bytes, so a body of the largest size accepted
 * needs just that much. */
static int body_room(struct req *q, size_t n)
{
	size_t need = q->body.len + n + 1, cap = q->body.cap, bound, more;

	if (need <= cap)
		return 1;
	bound = (q->length ? q->length : (size_t)q->h->d.cfg->max_body_bytes) + 1;
	if (!cap)
		cap = q->length ? (q->length < BODY_RESERVE_MAX ? q->length : BODY_RESERVE_MAX) + 1
				: 256;
	while (cap < need)
		cap *= 2;
	if (cap > bound)
		cap = bound > need ? bound : need;
	more = cap - 1 - q->charged; /* the body bytes it can hold: not the NUL */
	if (srv_hold_take(&q->hold, more))
		return 0;
	q->charged = cap - 1;
	srv_buf_reserve(&q->body, cap - 1 - q->body.len); /* failing, it sets oom: 503 */
	return 1;
}

static void set_error(struct req *q, enum srv_err kind, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/*
 * An encode, assign or lookup answer, held until it is sent, counted in
 * srv_http.budget against body_memory_bytes with what other requests hold:
 * an answer can be several times its request (top_k 16 and
 * return_quantized: 4 MB for a 0.5 MB request of 4096 rows of 16 floats),
 * and a client that does not read its answers would have held
 * connection_limit of them, past a pod's memory, until
 * connection_timeout_s.  One that would take the total over the bound is
 * replaced by a 503 (the work is lost, not the memory), unless nothing else
 * is held: an answer larger than the bound on its own still goes out.
 * Loop thread; let go of in on_completed.
 */
static void resp_charge(struct req *q)
{
	size_t n = q->resp ? q->resp_len : 0;

	if (srv_hold_take(&q->hold, n)) {
		set_error(q, SRV_ERR_UNAVAILABLE, SRV_MSG_BUDGET, "the answer", n,
			  q->h->budget.max);
		return;
	}
	q->resp_charged = n;
}

/* strlcpy: log fields are allowed to be cut. */
static void copy_str(char *dst, size_t n, const char *src)
{
	size_t len = strlen(src);
	if (len >= n)
		len = n - 1;
	memcpy(dst, src, len);
	dst[len] = '\0';
}

static long long now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Connection @c (may be NULL) enters @phase now. */
static void conn_phase_set(struct conn *c, enum conn_phase phase)
{
	if (!c)
		return;
	__atomic_store_n(&c->since_us, now_us(), __ATOMIC_RELAXED);
	__atomic_store_n(&c->phase, phase, __ATOMIC_RELEASE); /* the sweeper sees since_us */
}

/* The request is in full: its connection leaves the sweeper's deadline
 * until its answer is queued. */
static void req_received(struct req *q)
{
	conn_phase_set(q->c, CONN_WORKING);
}

/* Suspend the connection while the batcher, registry lane or reload works. */
static void req_suspend(struct req *q)
{
	req_received(q);
	q->state = REQ_WAIT;
	MHD_suspend_connection(q->conn);
}

/* How long, and how much of its request, a refused connection is read
 * before it is closed (see refuse; proto/api.md "Life cycle"). */
#define LINGER_US    (2 * 1000000LL)
#define LINGER_BYTES ((size_t)1 << 20)

/*
 * Set on an MHD thread just before the access handler says MHD_NO to close
 * a refused connection, or one whose client is gone (peer_gone): MHD then
 * logs "Application reported internal error", which it is not, and
 * mhd_logger drops that line.  Cleared on the next call of the handler or
 * the logger.
 */
static __thread int mhd_quiet;

static enum MHD_Result refused_close(void)
{
	mhd_quiet = 1;
	return MHD_NO;
}

/* Does the request carry a body (Content-Length > 0 or chunked)? */
static int has_body(struct MHD_Connection *conn)
{
	const char *cl =
	    MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
	if (MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_TRANSFER_ENCODING))
		return 1;
	return cl && strtoull(cl, NULL, 10) > 0;
}

/* Does the client wait for "100 Continue" (before a body, or none)?  Only
 * in HTTP/1.1 (@http11): RFC 9110 10.1.1 has a server ignore the
 * expectation in an HTTP/1.0 request, to which libmicrohttpd sends no "100
 * Continue", so its client sends its body without waiting for one. */
static int expects_continue(struct MHD_Connection *conn, int http11)
{
	const char *expect =
	    MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_EXPECT);
	return http11 && expect && !strcasecmp(expect, "100-continue");
}

/*
 * A call of the access handler for a refused connection (see refuse).  Its
 * request is read and dropped; once it is read in full (the final call),
 * or past LINGER_BYTES of body, or when the client waits for "100
 * Continue" before it sends its body, MHD is told to close it.  The 503 is
 * written already: the handler never queues an answer (MHD would call it
 * again and again for one).
 */
static enum MHD_Result refused_drain(struct MHD_Connection *conn, struct conn *c,
				     size_t *upload_size, int http11)
{
	if (*upload_size) {
		c->drained += *upload_size;
		*upload_size = 0;
		return c->drained <= LINGER_BYTES ? MHD_YES : refused_close();
	}
	if (c->heard)
		return refused_close();
	c->heard = 1;
	return expects_continue(conn, http11) ? refused_close() : MHD_YES;
}

/* ---- responses ---- */

static void set_response(struct req *q, int status, char *body, size_t len, const char *ctype)
{
	free(q->resp);
	q->status = status;
	q->resp = body;
	q->resp_len = len;
	q->ctype = ctype;
}

static void set_error(struct req *q, enum srv_err kind, const char *fmt, ...)
{
	char msg[600];
	size_t len = 0;
	char *body;
	int status;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	copy_str(q->errmsg, sizeof(q->errmsg), msg);
	body = srv_api_error_body(kind, msg, &len, &status);
	set_response(q, status, body, body ? len : 0, JSON_CT);
	if (kind == SRV_ERR_UNAVAILABLE)
		q->retry_after = 1;
}

/* "@name;dur=M.UUU" (@secs in milliseconds, 3 decimals) at @o; returns the
 * bytes written (at most 48).  Plain digits: no printf on every response. */
static size_t timing_part(char *o, const char *name, double secs)
{
	long long us = secs > 0 ? (long long)(secs * 1e6 + 0.5) : 0;
	char d[24];
	size_t n = strlen(name), k = 0;

	if (us > 999999999999LL)
		us = 999999999999LL; /* 11.6 days: 12 digits at most */
	/* a header value built with its length, not a string */
	/* NOLINTNEXTLINE(bugprone-not-null-terminated-result) */
	memcpy(o, name, n);
	/* a header value built with its length, not a string */
	/* NOLINTNEXTLINE(bugprone-not-null-terminated-result) */
	memcpy(o + n, ";dur=", 5);
	n += 5;
	do {
		d[k++] = (char)('0' + us % 10);
		us /= 10;
	} while (us || k < 4); /* at least "0.000" */
	while (k > 3)
		o[n++] = d[--k];
	o[n++] = '.';
	while (k)
		o[n++] = d[--k];
	return n;
}

/*
 * Server-Timing (W3C): the server's own time for this request in
 * milliseconds, from its headers to its answer ("total"), and for an encode
 * the part spent waiting for a worker ("queue") and its batch's encode
 * ("encode"), so that a caller can tell the network from the server.
 * @out holds at least 160 bytes.
 */
static void server_timing(const struct req *q, char *out)
{
	size_t n = 0;

	if (q->queued >= 0) {
		n += timing_part(out + n, "queue", q->queued);
		memcpy(out + n, ", ", 2);
		n += 2;
		n += timing_part(out + n, "encode", q->encoded);
		memcpy(out + n, ", ", 2);
		n += 2;
	}
	n += timing_part(out + n, "total", srv_now() - q->t0);
	out[n] = '\0';
}

/*
 * Queue @r, q's answer, and let it go.  "Expect: 100-continue" on a request
 * without a body, with another request's bytes already read behind it:
 * MHD 0.9.75 sends "100 Continue", then calls the handler once with nothing
 * before the request counts as complete, where it refuses an answer (and
 * MHD_NO would drop the connection, both requests unanswered).  The answer
 * is kept (q->pending) and queued again at the next call, the final one.
 */
static enum MHD_Result queue_answer(struct req *q, struct MHD_Response *r)
{
	enum MHD_Result ret = MHD_queue_response(q->conn, (unsigned)q->status, r);

	if (ret == MHD_NO && !q->pending && expects_continue(q->conn, q->http11) &&
	    !has_body(q->conn)) {
		q->pending = r;
		return MHD_YES;
	}
	MHD_destroy_response(r);
	q->pending = NULL;
	q->state = REQ_DONE;
	return ret;
}

static enum MHD_Result send_response(struct req *q)
{
	struct MHD_Response *r;
	char ra[16], st[160];

	if (!q->resp) {
		/* Out of memory building the body: a static one still works. */
		static const char oom[] =
		    "{\"error\": {\"code\": \"unavailable\", \"message\": \"out of memory\"}}\n";
		q->status = srv_err_status(SRV_ERR_UNAVAILABLE, NULL);
		q->retry_after = 1; /* as every 503 */
		q->ctype = JSON_CT;
		r = MHD_create_response_from_buffer(sizeof(oom) - 1, (void *)oom,
						    MHD_RESPMEM_PERSISTENT);
	} else {
		r = MHD_create_response_from_buffer(q->resp_len, q->resp, MHD_RESPMEM_MUST_FREE);
		if (r)
			q->resp = NULL; /* MHD owns it now */
	}
	if (!r)
		return MHD_NO;
	if (q->status != 204) /* (no content to type) */
		MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE,
					q->ctype ? q->ctype : JSON_CT);
	MHD_add_response_header(r, REQUEST_ID_HEADER, q->request_id);
	/* every answer is of the moment (health, the model, metrics, the
	 * registry): without it a cache may keep a GET's 200 or 404 on its own
	 * heuristic (RFC 9111 4.2.2) */
	MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
	server_timing(q, st);
	MHD_add_response_header(r, "Server-Timing", st);
	if (q->allow)
		MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, q->allow);
	if (q->no_coding)
		MHD_add_response_header(r, MHD_HTTP_HEADER_ACCEPT_ENCODING, "identity");
	if (q->retry_after) {
		snprintf(ra, sizeof(ra), "%d", q->h->d.cfg->retry_after_s);
		MHD_add_response_header(r, MHD_HTTP_HEADER_RETRY_AFTER, ra);
	}
	if (q->close || __atomic_load_n(&q->h->draining, __ATOMIC_RELAXED))
		MHD_add_response_header(r, MHD_HTTP_HEADER_CONNECTION, "close");
	/* from now until on_completed (MHD has written the last byte) */
	conn_phase_set(q->c, CONN_SENDING);
	return queue_answer(q, r);
}

/* @v (its reference taken) as the body of a JSON answer: reals as
 * `semid inspect` writes them (json.h), and a newline. */
static char *json_text(json_t *v, size_t *len)
{
	char *s = sid_json_dumps(v);
	char *t;
	json_decref(v);
	if (!s)
		return NULL;
	*len = strlen(s);
	t = realloc(s, *len + 2);
	if (!t) {
		free(s);
		return NULL;
	}
	t[(*len)++] = '\n';
	t[*len] = '\0';
	return t;
}

/* The answer to OPTIONS on a route, or on "*" (the server): 204, no
 * content, Allow @allow (RFC 9110 9.3.7).  No CORS headers: a browser's
 * preflight still fails, as a page must call through its own origin. */
static void set_options(struct req *q, const char *allow)
{
	set_response(q, 204, strdup(""), 0, JSON_CT);
	q->allow = allow;
}

static void set_json(struct req *q, int status, json_t *v)
{
	size_t len = 0;
	char *s = v ? json_text(v, &len) : NULL;
	set_response(q, status, s, len, JSON_CT);
}

/* ---- routes answered on the MHD thread ---- */

/*
 * @s as a JSON string, whatever its bytes: a message may hold a file name in
 * another encoding than UTF-8, or end inside a character where it was cut to
 * its buffer, and jansson refuses such text whole (json_pack then drops the
 * object holding it).  Each byte that starts no valid UTF-8 sequence becomes
 * U+FFFD, as srv_buf_json_str writes it.
 */
static json_t *json_str_any(const char *s)
{
	json_t *j = json_string(s);
	size_t n = strlen(s), o = 0;
	char *fixed;

	if (j || !(fixed = malloc(3 * n + 1)))
		return j;
	for (size_t i = 0; i < n;) {
		size_t u = (unsigned char)s[i] < 0x80
			       ? 1
			       : sid_utf8_len((const unsigned char *)s + i, n - i);
		if (u) {
			memcpy(fixed + o, s + i, u);
			o += u;
			i += u;
		} else {
			memcpy(fixed + o, "\xef\xbf\xbd", 3);
			o += 3;
			i++;
		}
	}
	fixed[o] = '\0';
	j = json_string(fixed);
	free(fixed);
	return j;
}

static json_t *last_reload_json(struct srv_reload *r)
{
	struct srv_reload_status st;
	srv_reload_status_get(r, &st);
	if (!st.attempted)
		return json_null();
	return json_pack("{s:f, s:s, s:s, s:o, s:o}", "time", st.time, "trigger", st.trigger,
			 "result", st.ok ? "success" : "error", "error",
			 st.ok ? json_null() : json_str_any(st.error), "model_version",
			 st.ok ? json_string(st.version) : json_null());
}

/* The main port: @h, or the one @h is the operations port of. */
static struct srv_http *main_port(struct srv_http *h)
{
	return h->d.main_port ? h->d.main_port : h;
}

static void route_readyz(struct req *q)
{
	struct sid_model *m = srv_reload_model(q->h->d.reload);
	if (__atomic_load_n(&q->h->draining, __ATOMIC_RELAXED) ||
	    __atomic_load_n(&main_port(q->h)->draining, __ATOMIC_RELAXED))
		set_error(q, SRV_ERR_UNAVAILABLE, SRV_MSG_SHUTTING_DOWN);
	else if (!m)
		set_error(q, SRV_ERR_UNAVAILABLE, "no model is loaded");
	else
		set_json(q, 200,
			 json_pack("{s:s, s:s}", "status", "ready", "model_version",
				   m->version ? m->version : ""));
	if (m)
		copy_str(q->version, sizeof(q->version), m->version ? m->version : "");
	sid_model_unref(m);
}

/* The registry's health for GET /v1/model: {"backend", "store", "status",
 * "error", "levels", "levels_mismatch"}; status "ok", "unavailable" or
 * "disabled", as semid_registry_up says it (@mx), with the last failure's
 * message while unavailable; levels the stored IDs' per kind (null: none
 * known), and the towers of @m (may be NULL) that give another number. */
static json_t *registry_json(struct srv_store *st, struct srv_metrics *mx,
			     const struct sid_model *m)
{
	const char *status = "disabled", *backend = NULL;
	char label[1024] = "", error[SID_ERROR_MSG_MAX] = "";
	json_t *levels = json_object(), *mismatch = json_array();
	int up;

	if (st)
		srv_store_health(st, &status, &backend, label, sizeof(label), error);
	/* the gauge's verdict: the store's own flag is the last call's, and a
	 * lookup that went through set it back while no new id could be
	 * written (a full disk) */
	up = st && !st->disabled ? srv_metrics_registry_is_up(mx) : -1;
	if (up >= 0)
		status = up ? "ok" : "unavailable";
	if (strcmp(status, "unavailable") != 0)
		error[0] = '\0';
	for (int k = 0; k < SID_TOWER_COUNT; k++) {
		int L = st && !st->disabled ? srv_store_levels(st, k) : 0;
		json_object_set_new(levels, sid_tower_name(k), L ? json_integer(L) : json_null());
		if (st && !st->disabled && srv_store_levels_mismatch(st, m, k))
			json_array_append_new(mismatch, json_string(sid_tower_name(k)));
	}
	return json_pack("{s:o, s:o, s:s, s:o, s:o, s:o}", "backend",
			 backend ? json_string(backend) : json_null(), "store",
			 label[0] ? json_str_any(label) : json_null(), "status", status, "error",
			 error[0] ? json_str_any(error) : json_null(), "levels", levels,
			 "levels_mismatch", mismatch);
}

static void route_model(struct req *q)
{
	struct sid_model *m = srv_reload_model(q->h->d.reload);
	json_t *v;
	char *desc;

	if (!m) {
		const char *code;
		int status = srv_err_status(SRV_ERR_UNAVAILABLE, &code);
		json_t *e =
		    json_pack("{s:{s:s, s:s}, s:o, s:o}", "error", "code", code, "message",
			      "no model is loaded", "last_reload", last_reload_json(q->h->d.reload),
			      "registry", registry_json(q->h->d.store, q->h->d.metrics, NULL));
		snprintf(q->errmsg, sizeof(q->errmsg), "no model is loaded");
		set_json(q, status, e);
		q->retry_after = 1;
		return;
	}
	copy_str(q->version, sizeof(q->version), m->version ? m->version : "");
	desc = sid_model_describe_json(m);
	v = desc ? json_loads(desc, 0, NULL) : NULL;
	free(desc);
	if (!json_is_object(v)) {
		json_decref(v);
		sid_model_unref(m);
		set_error(q, SRV_ERR_INTERNAL, "could not describe the model");
		return;
	}
	json_object_set_new(v, "last_reload", last_reload_json(q->h->d.reload));
	json_object_set_new(v, "registry", registry_json(q->h->d.store, q->h->d.metrics, m));
	sid_model_unref(m);
	set_json(q, 200, v);
}

static void route_metrics(struct req *q)
{
	struct sid_model *m = srv_reload_model(q->h->d.reload);
	struct srv_http *mp = main_port(q->h); /* the port connection_limit bounds */
	char *text;

	srv_metrics_connections_open(q->h->d.metrics, __atomic_load_n(&mp->open, __ATOMIC_RELAXED),
				     __atomic_load_n(&mp->budget.held, __ATOMIC_RELAXED));
	text = srv_metrics_render(q->h->d.metrics, m);
	sid_model_unref(m);
	set_response(q, 200, text, text ? strlen(text) : 0,
		     "text/plain; version=0.0.4; charset=utf-8");
}

/* ---- encode and reload: answered from the loop thread ---- */

static void job_done(struct srv_job *job)
{
	struct req *q = job->ctx;
	set_response(q, job->status, job->body, job->body_len, JSON_CT);
	job->body = NULL;
	if (job->encode_time >= 0) {
		q->queued = job->queue_wait;
		q->encoded = job->encode_time;
	}
	snprintf(q->version, sizeof(q->version), "%s",
		 job->model->version ? job->model->version : "");
	if (job->status != 200) {
		/* the message of the error body, for the log line */
		json_t *v = json_loadb(q->resp ? q->resp : "", q->resp_len, 0, NULL);
		const char *msg =
		    json_string_value(json_object_get(json_object_get(v, "error"), "message"));
		copy_str(q->errmsg, sizeof(q->errmsg), msg ? msg : "encoder error");
		json_decref(v);
		if (job->status == 503)
			q->retry_after = 1;
	}
	srv_job_free(job);
	resp_charge(q);
	MHD_resume_connection(q->conn);
}

static void reload_done(struct srv_reload_waiter *w)
{
	struct req *q = w->ctx;
	if (w->ok) {
		copy_str(q->version, sizeof(q->version), w->version);
		set_json(
		    q, 200,
		    json_pack("{s:s, s:s}", "status", "reloaded", "model_version", w->version));
	} else if (w->not_tried) { /* shutting down: another server may take it */
		set_error(q, SRV_ERR_UNAVAILABLE, "no reload was tried: %s", w->error);
	} else {
		/* with --allow-empty and nothing loaded yet there is no previous
		 * model: saying one keeps serving sent the caller to a /readyz
		 * that still answers 503 */
		struct sid_model *m = srv_reload_model(q->h->d.reload);
		set_error(q, SRV_ERR_RELOAD_FAILED, "%s (%s)", w->error,
			  m ? "the previous model keeps serving" : "no model is loaded");
		sid_model_unref(m);
		q->retry_after = 0;
	}
	MHD_resume_connection(q->conn);
}

static void lookup_done(struct srv_lookup *lk)
{
	struct req *q = lk->ctx;
	set_response(q, lk->status, lk->body, lk->body_len, JSON_CT);
	lk->body = NULL;
	if (lk->status != 200)
		copy_str(q->errmsg, sizeof(q->errmsg), lk->errmsg);
	if (lk->status == 503)
		q->retry_after = 1;
	srv_lookup_free(lk);
	srv_encode_req_release(&q->ids); /* (a delete's: done with) */
	resp_charge(q);
	MHD_resume_connection(q->conn);
}

/* The query of a lookup, checked against its route's parameters. */
struct query_check {
	struct req *q;
	const char *const *names; /* NULL-terminated, at most 4 */
	unsigned seen;		  /* bit i: names[i] was given */
	int bad;
	const char *values[4]; /* names[i]'s value: "" for "?name" alone, NULL if not given */
};

static enum MHD_Result query_arg(void *cls, enum MHD_ValueKind kind, const char *key,
				 const char *value)
{
	struct query_check *qc = cls;
	char expected[64] = "";
	size_t i, off = 0;

	(void)kind;
	/* an empty segment ("?&limit=5", "a=1&&b=2") names nothing: URL
	 * parsers (WHATWG's, Python's parse_qsl) skip it, as libmicrohttpd
	 * already skips a trailing "&"; it was refused as the unknown
	 * parameter "" */
	if (!*key && !value)
		return MHD_YES;
	for (i = 0; qc->names[i]; i++) {
		if (!strcmp(key, qc->names[i]))
			break;
		off += (size_t)snprintf(expected + off, sizeof(expected) - off, "%s%s",
					i ? ", " : "", qc->names[i]);
	}
	if (!qc->names[i]) {
		set_error(qc->q, SRV_ERR_INVALID_ARGUMENT,
			  "unknown query parameter \"%.64s\" (%s%s)", key,
			  expected[0] ? "expected " : "this route takes none",
			  expected[0] ? expected : "");
	} else if (qc->seen & (1u << i)) {
		set_error(qc->q, SRV_ERR_INVALID_ARGUMENT,
			  "query parameter %s is given more than once", key);
	} else {
		qc->seen |= 1u << i;
		qc->values[i] = value ? value : "";
		return MHD_YES;
	}
	qc->bad = 1;
	return MHD_NO;
}

/* Refuse an unknown or repeated query parameter, as unknown JSON fields
 * are: "?towr=user" must not quietly look in the item tower.  Returns 1
 * when the request is refused; else @qc holds the values, a parameter given
 * without "=" as "" ("?tower" is "?tower=", refused, not the default). */
static int query_bad(struct req *q, struct query_check *qc)
{
	static const char *const none[] = {NULL};
	static const char *const sid[] = {"tower", NULL};
	static const char *const list[] = {"prefix", "limit", "cursor", "tower", NULL};

	*qc = (struct query_check){q, none, 0, 0, {NULL}};
	if (q->route == SRV_ROUTE_SID_GET)
		qc->names = sid;
	else if (q->route == SRV_ROUTE_SID_LIST)
		qc->names = list;
	MHD_get_connection_values(q->conn, MHD_GET_ARGUMENT_KIND, query_arg, qc);
	return qc->bad;
}

/* query_bad, after a %00 anywhere in the path or query (which no id, sid
 * or parameter may hold).  The POST routes take no parameter: an option
 * there is in the body, and "?reassign=true" was taken and quietly
 * ignored. */
static int query_refused(struct req *q, struct query_check *qc)
{
	if (q->url_nul) {
		set_error(q, SRV_ERR_INVALID_ARGUMENT,
			  "the path or query has %%00 (a NUL byte), which no id, sid or "
			  "parameter may hold");
		return 1;
	}
	return query_bad(q, qc);
}

/* The value of query parameter @name of @qc's route (NULL: not given). */
static const char *query_value(const struct query_check *qc, const char *name)
{
	for (size_t i = 0; qc->names[i]; i++)
		if (!strcmp(qc->names[i], name))
			return qc->values[i];
	return NULL;
}

/* Hand @lk to the registry lane, which answers it (lookup_done). */
static void lookup_submit(struct req *q, struct srv_lookup *lk)
{
	lk->done = lookup_done;
	lk->ctx = q;
	req_suspend(q);
	if (srv_assigner_lookup(q->h->d.assigner, lk)) {
		srv_lookup_free(lk);
		set_error(q, SRV_ERR_UNAVAILABLE, SRV_MSG_SHUTTING_DOWN);
		MHD_resume_connection(q->conn);
	}
}

/* Refuse @lk's id, sid, prefix or cursor when it can never be valid, with
 * the store's own words (sid_reg_*): before the store is asked, as assign
 * and POST :delete refuse theirs, so that a store that is down or locked
 * answers such a request 400, not 503 with Retry-After (retried for ever),
 * and a DELETE's id is not named "input 0".  Returns 1 when refused. */
static int lookup_key_bad(struct req *q, const struct srv_lookup *lk)
{
	int32_t codes[SID_MAX_LEVELS];
	int64_t suffix;
	int L, rc;
	struct sid_error err;

	sid_error_clear(&err);
	if (lk->op == SRV_LOOKUP_LIST) {
		rc = sid_reg_prefix_parse(lk->key, codes, &L, &err);
		if (!rc && lk->cursor &&
		    (rc = sid_reg_sid_parse(lk->cursor, codes, &L, &suffix, &err)))
			sid_error_prefix(&err, "cursor");
	} else if (lk->op == SRV_LOOKUP_SID) {
		rc = sid_reg_sid_parse(lk->key, codes, &L, &suffix, &err);
	} else {
		rc = sid_reg_id_check_unnamed(lk->key, &err);
	}
	if (rc)
		set_error(q, SRV_ERR_INVALID_ARGUMENT, "%s", err.msg);
	return rc != 0;
}

/* GET /v1/{items,users}/{id}, /v1/sids/{sid}, /v1/sids?prefix=, and
 * DELETE /v1/{items,users}/{id}: validate
 * the query, then hand the lookup to the registry lane (it answers). */
static void start_lookup(struct req *q)
{
	struct srv_http *h = q->h;
	struct srv_lookup *lk;
	struct query_check qc;
	const char *v;
	enum sid_tower_kind kind = SID_TOWER_ITEM;

	if (query_refused(q, &qc))
		return;
	if (!h->d.assigner) {
		set_error(q, SRV_ERR_UNAVAILABLE, "the ID registry is not running");
		return;
	}
	lk = calloc(1, sizeof(*lk));
	if (!lk) {
		set_error(q, SRV_ERR_UNAVAILABLE, "out of memory");
		return;
	}
	/* a delete, as a lookup, is the store's alone: it needs no model nor
	 * the tower of its kind (a user's erasure after a retrain without a
	 * user tower; its 404 had to mean "not stored") */
	if (q->route == SRV_ROUTE_USER_GET)
		kind = SID_TOWER_USER;
	if (q->route == SRV_ROUTE_SID_GET || q->route == SRV_ROUTE_SID_LIST) {
		v = query_value(&qc, "tower");
		if (v && strcmp(v, "item") != 0 && strcmp(v, "user") != 0) {
			set_error(q, SRV_ERR_INVALID_ARGUMENT,
				  "tower must be \"item\" or \"user\", not \"%.64s\"", v);
			free(lk);
			return;
		}
		if (v && !strcmp(v, "user"))
			kind = SID_TOWER_USER;
	}
	lk->kind = kind;
	lk->limit = 100;
	if (q->route == SRV_ROUTE_SID_LIST) {
		lk->op = SRV_LOOKUP_LIST;
		v = query_value(&qc, "limit");
		if (v) {
			char *end;
			long n = strtol(v, &end, 10);
			/* digits only: strtol also takes " 5" and "+5" */
			if (!(*v >= '0' && *v <= '9') || *end || n < 1 || n > SID_REG_PAGE_MAX) {
				set_error(q, SRV_ERR_INVALID_ARGUMENT,
					  "limit must be an integer from 1 to %d, not \"%.32s\"",
					  SID_REG_PAGE_MAX, v);
				free(lk);
				return;
			}
			lk->limit = (size_t)n;
		}
		v = query_value(&qc, "prefix");
		lk->key = strdup(v ? v : "");
		v = query_value(&qc, "cursor");
		if (v && *v)
			lk->cursor = strdup(v);
		if (!lk->key || (v && *v && !lk->cursor)) {
			srv_lookup_free(lk);
			set_error(q, SRV_ERR_UNAVAILABLE, "out of memory");
			return;
		}
	} else {
		lk->op = q->del				 ? SRV_LOOKUP_DELETE
			 : q->route == SRV_ROUTE_SID_GET ? SRV_LOOKUP_SID
							 : SRV_LOOKUP_ID;
		lk->key = q->arg;
		q->arg = NULL;
	}
	if (lookup_key_bad(q, lk)) {
		srv_lookup_free(lk);
		return;
	}
	lookup_submit(q, lk);
}

/* POST /v1/{items,users}:delete (an admin route): the ids of the body,
 * deleted in one transaction on the registry lane (it answers). */
static void start_delete(struct req *q)
{
	struct srv_http *h = q->h;
	enum sid_tower_kind kind =
	    q->route == SRV_ROUTE_USERS_DELETE ? SID_TOWER_USER : SID_TOWER_ITEM;
	struct srv_api_error e;
	struct srv_lookup *lk;

	if (!h->d.assigner) {
		set_error(q, SRV_ERR_UNAVAILABLE, "the ID registry is not running");
		return;
	}
	if (srv_delete_req_decode(q->body.p ? q->body.p : "", q->body.len, kind,
				  h->d.cfg->max_inputs, &q->hold, &q->ids, &e)) {
		set_error(q, e.kind, "%s", e.msg);
		return;
	}
	body_release(q);
	q->items = q->ids.B;
	/* what the store call holds for each id, taken now: refused before it
	 * waits for the store */
	if (srv_encode_req_charge(&q->ids, q->ids.B * srv_delete_row_bytes(), &e)) {
		set_error(q, e.kind, "%s", e.msg);
		return;
	}
	lk = calloc(1, sizeof(*lk));
	if (!lk) {
		set_error(q, SRV_ERR_UNAVAILABLE, "out of memory");
		return;
	}
	lk->op = SRV_LOOKUP_DELETE;
	lk->kind = kind;
	lk->keys = q->ids.id_str;
	lk->n_keys = q->ids.B;
	lookup_submit(q, lk);
}

static void start_encode(struct req *q)
{
	struct srv_http *h = q->h;
	int assign = q->route == SRV_ROUTE_ITEMS_ASSIGN || q->route == SRV_ROUTE_USERS_ASSIGN;
	enum sid_tower_kind kind =
	    q->route == SRV_ROUTE_ITEMS_ENCODE || q->route == SRV_ROUTE_ITEMS_ASSIGN
		? SID_TOWER_ITEM
		: SID_TOWER_USER;
	struct sid_model *m = srv_reload_model(h->d.reload);
	const struct sid_tower *t;
	struct srv_encode_req req;
	struct srv_api_error e;
	struct srv_job *job;

	if (!m) {
		set_error(q, SRV_ERR_UNAVAILABLE, "no model is loaded");
		return;
	}
	copy_str(q->version, sizeof(q->version), m->version ? m->version : "");
	t = sid_model_tower(m, kind);
	if (!t) {
		set_error(q, SRV_ERR_NOT_FOUND, "model %s has no %s tower", q->version,
			  sid_tower_name(kind));
		sid_model_unref(m);
		return;
	}
	if ((assign ? srv_assign_req_decode
		    : srv_encode_req_decode)(q->body.p ? q->body.p : "", q->body.len, kind, t->D,
					     h->d.cfg->max_inputs, &q->hold, &req, &e)) {
		set_error(q, e.kind, "%s", e.msg);
		sid_model_unref(m);
		return;
	}
	body_release(q);
	q->items = req.B;
	/* what an assign will hold beside its decoded form until the store
	 * answers, taken now: it is refused before it is encoded */
	if (assign && srv_encode_req_charge(&req, req.B * srv_assign_row_bytes(t->L), &e)) {
		srv_encode_req_release(&req);
		sid_model_unref(m);
		set_error(q, e.kind, "%s", e.msg);
		return;
	}
	if (assign && h->d.assigner && srv_assigner_full(h->d.assigner, req.B)) {
		srv_encode_req_release(&req);
		sid_model_unref(m);
		set_error(q, SRV_ERR_UNAVAILABLE, SRV_MSG_REGISTRY_FULL);
		return;
	}
	job = srv_job_new(&req, m);
	sid_model_unref(m);
	if (!job) {
		srv_encode_req_release(&req);
		set_error(q, SRV_ERR_UNAVAILABLE, "out of memory");
		return;
	}
	job->done = job_done;
	job->ctx = q;
	job->assign = assign;
	/* Suspend before submitting: the job may finish before we return. */
	req_suspend(q);
	if (srv_batcher_submit(h->d.batcher, job)) {
		srv_job_free(job);
		if (__atomic_load_n(&h->draining, __ATOMIC_RELAXED))
			set_error(q, SRV_ERR_UNAVAILABLE, SRV_MSG_SHUTTING_DOWN);
		else
			set_error(q, SRV_ERR_UNAVAILABLE,
				  "the encode queue is full (%ld rows admitted); retry later",
				  srv_batcher_admitted(h->d.batcher));
		MHD_resume_connection(q->conn);
	}
}

/* ---- routing ---- */

/* The routes, with what each takes and where it is served.  @registry: a
 * route of the ID registry (assign, the lookups, the deletes), answered 501
 * with --registry none (registry_disabled); tests/server/test_assign.py
 * reads this flag from here and asks the server every route with it. */
static const struct {
	const char *path;
	enum srv_route route;
	int post;     /* 1: POST only; 0: GET and HEAD */
	int ops;      /* 1: served on the operations port too */
	int registry; /* 1: a route of the ID registry */
} routes[] = {
    {"/v1/items:encode", SRV_ROUTE_ITEMS_ENCODE, 1, 0, 0},
    {"/v1/users:encode", SRV_ROUTE_USERS_ENCODE, 1, 0, 0},
    {"/healthz", SRV_ROUTE_HEALTHZ, 0, 1, 0},
    {"/readyz", SRV_ROUTE_READYZ, 0, 1, 0},
    {"/v1/model", SRV_ROUTE_MODEL, 0, 1, 0},
    {"/v1/admin/reload", SRV_ROUTE_RELOAD, 1, 0, 0},
    {"/metrics", SRV_ROUTE_METRICS, 0, 1, 0},
    {"/v1/items:assign", SRV_ROUTE_ITEMS_ASSIGN, 1, 0, 1},
    {"/v1/users:assign", SRV_ROUTE_USERS_ASSIGN, 1, 0, 1},
    {"/v1/sids", SRV_ROUTE_SID_LIST, 0, 0, 1},
    {"/v1/items:delete", SRV_ROUTE_ITEMS_DELETE, 1, 0, 1},
    {"/v1/users:delete", SRV_ROUTE_USERS_DELETE, 1, 0, 1},
};

/* Routes with a trailing path parameter: "/v1/items/{id}" etc. (GET and
 * HEAD; the ids' DELETE too), with the same @registry flag. */
static const struct {
	const char *prefix;
	enum srv_route route;
	int registry;
} param_routes[] = {
    {"/v1/items/", SRV_ROUTE_ITEM_GET, 1},
    {"/v1/users/", SRV_ROUTE_USER_GET, 1},
    {"/v1/sids/", SRV_ROUTE_SID_GET, 1},
};

/* The routes entry whose path @url is, or the number of routes for none. */
static size_t route_index(const char *url)
{
	size_t i;

	for (i = 0; i < sizeof(routes) / sizeof(routes[0]); i++)
		if (!strcmp(url, routes[i].path))
			break;
	return i;
}

/* The param_routes entry @url is a path of (a non-empty parameter after
 * its prefix), or -1. */
static int param_route(const char *url)
{
	for (size_t k = 0; k < sizeof(param_routes) / sizeof(param_routes[0]); k++) {
		size_t n = strlen(param_routes[k].prefix);
		if (!strncmp(url, param_routes[k].prefix, n) && url[n])
			return (int)k;
	}
	return -1;
}

/*
 * The param_routes entry @url is a path of but for the case of its
 * letters, repeated slashes, a "/v1" left out or the singular ("/v1/Users/x",
 * "/v1//users/x", "/users/x", "/v1/user/x"), with a parameter after it; -1
 * when none.
 * *@plen is then the length of @url before its parameter.
 */
static int param_route_near(const char *url, size_t *plen)
{
	for (size_t k = 0; k < sizeof(param_routes) / sizeof(param_routes[0]); k++)
		for (int v1 = 0; v1 < 2; v1++) {
			/* "/v1/users/", then "/users/" */
			const char *pre = param_routes[k].prefix + (v1 ? strlen("/v1") : 0);
			const char *u = url;
			for (; *pre; pre++) {
				if (*pre == '/' && *u == '/') {
					while (*u == '/')
						u++;
				} else if (*pre != '/' && tolower((unsigned char)*u) == *pre) {
					u++;
				} else if (*pre == 's' && pre[1] == '/' && *u == '/') {
					continue; /* "/v1/user/x" */
				} else {
					break;
				}
			}
			if (!*pre && *u) {
				*plen = (size_t)(u - url);
				return (int)k;
			}
		}
	return -1;
}

/*
 * For a path no route has, the route its client most likely meant, into
 * @out (@n bytes) as " (did you mean /v1/model?)": a route's path but for
 * the case of its letters, repeated or trailing slashes, or "/v1" left out
 * ("/V1/Model", "/healthz/", "//v1//model", "/items:encode"), also before
 * a parameter ("/v1/Users/x": param_route_near).  A parameter
 * route's prefix alone ("/v1/items/", "/v1/items") names the route with its
 * parameter.  "" when none is near.  A bare 404 "no route GET /healthz/"
 * left the client to find the slash.
 */
static void route_hint(const char *url, char *out, size_t n)
{
	char norm[128];
	size_t len = 0, plen;
	const char *meant = NULL, *also = "";
	int near = param_route_near(url, &plen);

	out[0] = '\0';
	if (near >= 0) { /* "/v1/Users/x" (its id's case and slashes are its own) */
		snprintf(out, n, " (did you mean %s?)", srv_route_name(param_routes[near].route));
		return;
	}
	for (const char *p = url; *p; p++) {
		if (*p == '/' && len && norm[len - 1] == '/')
			continue;
		if (len + 1 >= sizeof(norm))
			return; /* longer than any route */
		norm[len++] = *p;
	}
	while (len > 1 && norm[len - 1] == '/')
		len--;
	norm[len] = '\0';
	for (int v1 = 0; v1 < 2 && !meant; v1++) {
		char want[160];
		/* "/items:encode" for "/v1/items:encode" */
		snprintf(want, sizeof(want), "%s%s", v1 ? "/v1" : "", norm);
		for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]) && !meant; i++)
			if (!strcasecmp(want, routes[i].path))
				meant = routes[i].path;
		for (size_t k = 0; k < sizeof(param_routes) / sizeof(param_routes[0]); k++) {
			const char *pre = param_routes[k].prefix;
			size_t pn = strlen(pre) - 1; /* without its '/' */
			if (strlen(want) != pn || strncasecmp(want, pre, pn) != 0)
				continue;
			if (meant) /* /v1/sids lists; /v1/sids/{sid} reads one */
				also = srv_route_name(param_routes[k].route);
			else
				meant = srv_route_name(param_routes[k].route);
		}
	}
	if (meant)
		snprintf(out, n, " (did you mean %s%s%s?)", meant, also[0] ? ", or " : "", also);
}

/* 1 when @seg (@len bytes) is, but for the case of its letters, the
 * segment after "/v1/" of @path, a route's. */
static int segment_is(const char *path, const char *seg, size_t len)
{
	size_t rl;

	if (strncmp(path, "/v1/", 4))
		return 0;
	path += 4;
	rl = strcspn(path, "/");
	return rl == len && !strncasecmp(path, seg, len);
}

/* 1 when @seg (@len bytes) is a segment a route has after its "/v1/"
 * ("items:encode", "model", "items"...), but for case: no id, whatever the
 * version before it. */
static int api_segment(const char *seg, size_t len)
{
	for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++)
		if (segment_is(routes[i].path, seg, len))
			return 1;
	for (size_t i = 0; i < sizeof(param_routes) / sizeof(param_routes[0]); i++)
		if (segment_is(param_routes[i].prefix, seg, len))
			return 1;
	return 0;
}

/* 1 when nothing but slashes, and maybe a query, follows @p: the segment
 * before @p is a path's last. */
static int segment_last(const char *p)
{
	p += strspn(p, "/");
	return !*p || *p == '?';
}

/*
 * A path no route has nor is near, as the log line and a 404 name it, into
 * @out (@n bytes): its first segment, or its first two when the first is an
 * API version and another follows them or the second is a route's
 * (api_segment) ("/v1/usr", "/v2/items"), then
 * "/{...}" for the rest when there is one ("?{...}" for a query: a request
 * line that libmicrohttpd refused itself); "{...}" after 64 bytes when those
 * are longer.  A typo before an id ("/v1/usr/ID", "/v1/itemz/ID") logged the
 * id, which no log line may hold; so would the last segment after a version
 * ("/v1/ID", "/v1//ID": a client's URL template with its tower left empty),
 * which is "{...}" too unless a route has it ("/v2/items" is shown).
 */
static void path_bounded(const char *url, char *out, size_t n)
{
	const char *p = url, *ver_end = NULL;
	size_t len;

	for (int s = 0, keep = 1; s < keep; s++) {
		const char *seg;
		while (*p == '/')
			p++;
		seg = p;
		while (*p && *p != '/' && *p != '?')
			p++;
		if (!s && p - seg > 1 && (*seg == 'v' || *seg == 'V') &&
		    strspn(seg + 1, "0123456789") == (size_t)(p - seg - 1)) {
			keep = 2; /* "v1" */
			ver_end = p;
		} else if (s && segment_last(p) && !api_segment(seg, (size_t)(p - seg))) {
			p = ver_end; /* the last segment after the version */
		}
	}
	len = (size_t)(p - url);
	if (len <= 64 && !p[strspn(p, "/")]) { /* nothing but slashes after it */
		copy_str(out, n, url);
		return;
	}
	if (len > 64) {
		for (len = 64; len && ((unsigned char)url[len] & 0xc0) == 0x80; len--)
			; /* (never half a UTF-8 sequence) */
		p = "";
	}
	snprintf(out, n, "%.*s%s{...}", (int)len, url, *p == '?' ? "?" : *p ? "/" : "");
}

/*
 * @url as the log line and a 404 name it, into @out (@n bytes): the
 * route, "/v1/users/{id}", for a path with an id or sid, the path as
 * sent up to its parameter, "/v1/Users/{id}", for one near such a route
 * (param_route_near), the path for one that is a route's but for what
 * route_hint forgives, and the bounded form of path_bounded for any other,
 * so that no id reaches the log from a request that was never routed: an
 * erasure sent to "/v1/Users/ID" or "/v1/usr/ID" logged every ID.
 */
static void path_named(const char *url, char *out, size_t n)
{
	int k = param_route(url);
	size_t plen;

	if (k >= 0) {
		copy_str(out, n, srv_route_name(param_routes[k].route));
	} else if (route_index(url) < sizeof(routes) / sizeof(routes[0])) {
		copy_str(out, n, url); /* every request's: no more work than that */
	} else if ((k = param_route_near(url, &plen)) >= 0) {
		const char *route = srv_route_name(param_routes[k].route);
		snprintf(out, n, "%.*s%s", (int)plen, url, strrchr(route, '/') + 1);
	} else {
		char hint[160];
		route_hint(url, hint, sizeof(hint));
		if (hint[0])
			copy_str(out, n, url);
		else
			path_bounded(url, out, n);
	}
}

/* @q's path for its log line until it is routed (and for a route it does
 * not have): @url, but the route, "/v1/users/{id}", for a path with an id
 * or sid, so that no id reaches the log from a request refused before it
 * is routed (its framing, libmicrohttpd's own 400 or 431, the operations
 * port). */
static void req_path_set(struct req *q, const char *url)
{
	path_named(url, q->path, sizeof(q->path));
}

/* @v's length without its trailing whitespace, which RFC 9110 5.5 says is
 * no part of a field value (MHD 0.9.75 strips only the leading). */
static size_t value_len(const char *v)
{
	size_t n = strlen(v);

	while (n && (v[n - 1] == ' ' || v[n - 1] == '\t'))
		n--;
	return n;
}

int srv_http_bearer_ok(const char *header, const char *token)
{
	static const char scheme[] = "Bearer";
	size_t tlen = strlen(token), hlen, i;
	volatile unsigned char diff = 0;

	/* RFC 9110 11.4: the scheme is case-insensitive, then 1*SP. */
	if (!header || !tlen || strncasecmp(header, scheme, sizeof(scheme) - 1) != 0 ||
	    header[sizeof(scheme) - 1] != ' ')
		return 0;
	header += sizeof(scheme) - 1;
	while (*header == ' ')
		header++;
	hlen = value_len(header);
	diff |= (unsigned char)(hlen != tlen);
	/* Always walk the whole token: time depends on its length only. */
	for (i = 0; i < tlen; i++)
		diff |= (unsigned char)((i < hlen ? (unsigned char)header[i] : 0) ^
					(unsigned char)token[i]);
	return diff == 0;
}

static int routes_post(enum srv_route r)
{
	return r == SRV_ROUTE_ITEMS_ENCODE || r == SRV_ROUTE_USERS_ENCODE ||
	       r == SRV_ROUTE_RELOAD || r == SRV_ROUTE_ITEMS_ASSIGN ||
	       r == SRV_ROUTE_USERS_ASSIGN || r == SRV_ROUTE_ITEMS_DELETE ||
	       r == SRV_ROUTE_USERS_DELETE;
}

/* What framing_bad needs of the header names: how many Content-Length,
 * Transfer-Encoding, Host, Content-Type and Authorization, and the first
 * name with whitespace in it. */
struct header_scan {
	int cl, te, host, ct, auth;
	const char *spaced;
};

static enum MHD_Result scan_header(void *cls, enum MHD_ValueKind kind, const char *key,
				   const char *value)
{
	struct header_scan *hs = cls;

	(void)kind;
	(void)value;
	if (!strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH))
		hs->cl++;
	else if (!strcasecmp(key, MHD_HTTP_HEADER_TRANSFER_ENCODING))
		hs->te++;
	else if (!strcasecmp(key, MHD_HTTP_HEADER_HOST))
		hs->host++;
	else if (!strcasecmp(key, MHD_HTTP_HEADER_CONTENT_TYPE))
		hs->ct++;
	else if (!strcasecmp(key, MHD_HTTP_HEADER_AUTHORIZATION))
		hs->auth++;
	if (!hs->spaced && strpbrk(key, " \t"))
		hs->spaced = key;
	return MHD_YES;
}

/* A Content-Encoding header whose value is not "identity" (or empty): the
 * first such value, in @cls. */
static enum MHD_Result scan_coding(void *cls, enum MHD_ValueKind kind, const char *key,
				   const char *value)
{
	const char **coded = cls;
	size_t n;

	(void)kind;
	if (*coded || strcasecmp(key, MHD_HTTP_HEADER_CONTENT_ENCODING) != 0)
		return MHD_YES;
	while (*value == ' ' || *value == '\t')
		value++;
	n = value_len(value);
	if (n && !(n == 8 && !strncasecmp(value, "identity", 8)))
		*coded = value;
	return MHD_YES;
}

/*
 * Message framing MHD 0.9.75 leaves to us (RFC 9112): a request line
 * without HTTP/1.0 or HTTP/1.1 at its end (MHD answers 505 itself for other
 * HTTP/x.y), a header name with whitespace (MHD keeps "Content-Length " as
 * a name of its own), a Transfer-Encoding other than chunked (MHD would
 * read until the client closes) or more than one (MHD reads the first),
 * Transfer-Encoding beside Content-Length or in an HTTP/1.0 request, more
 * than one Content-Length;
 * and an HTTP/1.1 request without a Host header, or any with more than one
 * (RFC 9112 3.2: a server MUST answer 400; a proxy and this server could
 * otherwise take one request for two different hosts).
 * Each is a 400 and the connection is closed: where the body ends cannot be
 * trusted.  Returns 1 when the request is refused.  (MHD reads header lines
 * and the URL as C strings: a NUL byte ends them there, and the request
 * goes on as if the line ended at the NUL.)
 */
static int framing_bad(struct req *q, const char *version)
{
	struct header_scan hs = {0, 0, 0, 0, 0, NULL};
	const char *te;

	if (!version || (strcmp(version, "HTTP/1.1") != 0 && strcmp(version, "HTTP/1.0") != 0)) {
		set_error(q, SRV_ERR_INVALID_ARGUMENT,
			  "the request line must end in HTTP/1.0 or HTTP/1.1");
		goto bad;
	}
	MHD_get_connection_values(q->conn, MHD_HEADER_KIND, scan_header, &hs);
	q->content_types = hs.ct;    /* (not framing: on_headers refuses two) */
	q->authorizations = hs.auth; /* (nor this: admin_refused does) */
	if (hs.spaced) {
		/* "Content-Length : 5" is no Content-Length here, but a proxy
		 * in front may have taken it for one (RFC 9112 5.1) */
		set_error(q, SRV_ERR_INVALID_ARGUMENT,
			  "the header name \"%.64s\" holds whitespace (none may come before "
			  "the colon)",
			  hs.spaced);
		goto bad;
	}
	if (hs.te > 1) {
		/* one list to a proxy ("chunked, identity": not chunked last),
		 * while MHD reads the first alone */
		set_error(q, SRV_ERR_INVALID_ARGUMENT, "more than one Transfer-Encoding header");
		goto bad;
	}
	te = MHD_lookup_connection_value(q->conn, MHD_HEADER_KIND,
					 MHD_HTTP_HEADER_TRANSFER_ENCODING);
	if (te && strcasecmp(te, "chunked") != 0) {
		/* "chunked " too: MHD would not read it as chunked */
		set_error(q, SRV_ERR_INVALID_ARGUMENT,
			  "Transfer-Encoding \"%.64s\" is not supported (only chunked)", te);
		goto bad;
	}
	if (te && hs.cl) {
		set_error(q, SRV_ERR_INVALID_ARGUMENT,
			  "a request may not carry both Transfer-Encoding and Content-Length");
		goto bad;
	}
	if (te && !strcmp(version, "HTTP/1.0")) {
		/* RFC 9112 6.1: HTTP/1.0 has no chunked coding; a proxy in
		 * front may read the body another way */
		set_error(q, SRV_ERR_INVALID_ARGUMENT,
			  "an HTTP/1.0 request may not carry Transfer-Encoding");
		goto bad;
	}
	if (hs.cl > 1) {
		set_error(q, SRV_ERR_INVALID_ARGUMENT, "more than one Content-Length header");
		goto bad;
	}
	if (hs.host > 1) {
		set_error(q, SRV_ERR_INVALID_ARGUMENT, "more than one Host header");
		goto bad;
	}
	if (!hs.host && !strcmp(version, "HTTP/1.1")) {
		set_error(q, SRV_ERR_INVALID_ARGUMENT,
			  "an HTTP/1.1 request must carry a Host header");
		goto bad;
	}
	return 0;
bad:
	q->route = SRV_ROUTE_OTHER;
	q->close = 1;
	return 1;
}

/* A Content-Length over max_body_bytes, on any route: 413 before the body
 * is read.  Returns 1 when the request is refused. */
static int cl_too_large(struct req *q)
{
	const char *v =
	    MHD_lookup_connection_value(q->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
	unsigned long long cl;
	char *end;

	if (!v)
		return 0;
	errno = 0;
	cl = strtoull(v, &end, 10);
	if (errno || end == v)
		return 0;
	if (cl <= (unsigned long long)q->h->d.cfg->max_body_bytes) {
		q->length = (size_t)cl;
		return 0;
	}
	set_error(q, SRV_ERR_TOO_LARGE, "the body is %llu bytes; at most %ld are accepted", cl,
		  q->h->d.cfg->max_body_bytes);
	return 1;
}

/* Count @n more body bytes.  Past max_body_bytes the body is dropped and
 * answered 413 once it ends; returns MHD_NO (give up on the connection) when
 * it goes on past twice that and 1 MiB: MHD 0.9.75 takes an answer only
 * before a body or after its end, so the connection is closed unanswered,
 * and the request's log line says why. */
static enum MHD_Result body_count(struct req *q, size_t n)
{
	size_t max = (size_t)q->h->d.cfg->max_body_bytes;

	q->seen += n;
	if (!q->too_large && q->seen <= max)
		return MHD_YES;
	q->too_large = 1;
	body_release(q);
	if (q->seen <= 2 * max + (1u << 20))
		return MHD_YES;
	snprintf(q->errmsg, sizeof(q->errmsg),
		 "the body went on past %zu bytes (max_body_bytes is %zu); the connection was "
		 "closed, as no answer can be sent before a body ends",
		 2 * max + (1u << 20), max);
	return MHD_NO;
}

/* The path of @url: RFC 9112 3.2.2 has servers accept the absolute-form
 * (http://host:port/path, which clients send through a proxy) as well. */
static const char *url_path(const char *url)
{
	const char *p;

	if (!strncasecmp(url, "http://", 7))
		p = url + 7;
	else if (!strncasecmp(url, "https://", 8))
		p = url + 8;
	else
		return url;
	p = strchr(p, '/');
	return p ? p : "/";
}

/*
 * A %2F where a route has a '/' ("/v1%2Fadmin%2Freload", "/v1/items%2Fx"):
 * 404.  An encoded '/' is data, never a separator (RFC 3986 2.2), and a
 * proxy in front that allows or refuses a route by its path sees none
 * there; routing reads the decoded path, so such a path was served as the
 * route (an id's %2F, after the route's part, is the id's).  @fixed: @url
 * is a route of routes[].  Returns 1 when the request is refused.
 */
static int path_slash_bad(struct req *q, const char *url, const char *method, int fixed)
{
	char shown[256];
	int k = param_route(url);

	if (!q->enc_slash ||
	    (!fixed && (k < 0 || q->enc_slash - 1 >= strlen(param_routes[k].prefix))))
		return 0;
	path_named(url, shown, sizeof(shown));
	q->route = SRV_ROUTE_OTHER;
	set_error(q, SRV_ERR_NOT_FOUND,
		  "no route %.100s %.200s: the path has %%2F where the route has a '/' (an "
		  "encoded '/' is data, never a separator: RFC 3986 2.2)",
		  method, shown);
	return 1;
}

/*
 * A registry route (@registry: its flag in routes[] or param_routes[]) on a
 * server started with --registry none: 501 unimplemented, without
 * Retry-After.  It was a 503 with Retry-After, which a client takes for an
 * outage and retries for ever; a feature left out on purpose is not back in
 * a second.  Returns 1 when the request is refused.
 */
static int registry_disabled(struct req *q, int registry)
{
	const struct srv_store *st = q->h->d.store;

	if (!registry || !st || !st->disabled)
		return 0;
	if (cl_too_large(q)) /* (413 is answered before the body, as on any route) */
		return 1;
	set_error(q, SRV_ERR_UNIMPLEMENTED,
		  "the ID registry is disabled on this server (semid-server --registry none): "
		  "it encodes, but assigns, looks up and deletes no ids; send this request to "
		  "a server started with a registry");
	return 1;
}

/* An admin route (reload, delete) without the admin token: 403 (400 for two
 * Authorization headers).  Returns 1 when the request is refused. */
static int admin_refused(struct req *q)
{
	const char *token = q->h->d.cfg->admin_token, *v;

	if (!token[0]) {
		set_error(q, SRV_ERR_FORBIDDEN,
			  "admin routes are disabled: no admin_token is configured");
		return 1;
	}
	if (q->authorizations > 1) {
		/* one value (RFC 9110): the first was taken, so "good token,
		 * then a bad one" passed and the other order was a 403 */
		set_error(q, SRV_ERR_INVALID_ARGUMENT, "more than one Authorization header");
		return 1;
	}
	v = MHD_lookup_connection_value(q->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
	if (!srv_http_bearer_ok(v, token)) {
		set_error(q, SRV_ERR_FORBIDDEN,
			  "admin routes need Authorization: Bearer <admin_token>");
		return 1;
	}
	return 0;
}

/*
 * A request target with a byte none may hold raw (raw_byte_bad): 400,
 * naming the byte and its offset in the target as sent, not the target,
 * which may hold an id; the percent-encoded form (%20, %23) is served.
 */
static void raw_byte_refuse(struct req *q)
{
	int b = q->raw_byte;

	q->route = SRV_ROUTE_OTHER;
	if (b == ' ')
		set_error(q, SRV_ERR_INVALID_ARGUMENT,
			  "the request target has a raw space at byte offset %zu: send it as %%20 "
			  "(RFC 3986 2: a URI holds no space, and a proxy in front may end the "
			  "target there)",
			  q->raw_at);
	else if (b == '#')
		set_error(q, SRV_ERR_INVALID_ARGUMENT,
			  "the request target has a raw '#' at byte offset %zu: send it as %%23 "
			  "(RFC 3986 3.5: a '#' begins a fragment, which a client keeps to itself "
			  "and a proxy in front drops)",
			  q->raw_at);
	else
		set_error(q, SRV_ERR_INVALID_ARGUMENT,
			  "the request target has control character 0x%02x at byte offset %zu "
			  "(RFC 3986 2: a URI holds none raw)",
			  b, q->raw_at);
}

/* First call for a request: framing, route, method, headers.  Returns 1
 * when a response is already decided. */
static int on_headers(struct req *q, const char *url, const char *method, const char *version)
{
	struct srv_http *h = q->h;
	const char *v;
	size_t i;
	int ids;

	url = url_path(url);
	req_path_set(q, url);
	if (framing_bad(q, version))
		return 1;
	if (q->bad_esc[0]) {
		/* a syntax error in the target, on any route (a %00 is valid
		 * syntax, refused where an id or parameter is read:
		 * query_refused) */
		q->route = SRV_ROUTE_OTHER;
		set_error(q, SRV_ERR_INVALID_ARGUMENT,
			  "the %s has \"%s\", a \"%%\" not followed by two hex digits (RFC 3986 "
			  "2.1); send a \"%%\" of an id or parameter as %%25",
			  q->bad_esc_query ? "query" : "path", q->bad_esc);
		return 1;
	}
	if (q->raw_byte) {
		raw_byte_refuse(q);
		return 1;
	}
	if (!strcmp(url, "*")) {
		/* the asterisk-form: the server as a whole, for OPTIONS alone
		 * (RFC 9112 3.2.4); it was a 404 "no route" */
		q->route = SRV_ROUTE_OTHER;
		if (!strcmp(method, "OPTIONS")) {
			set_options(q, h->ops ? ALLOW_GET : "GET, HEAD, POST, DELETE, OPTIONS");
			return 1;
		}
		set_error(q, SRV_ERR_INVALID_ARGUMENT,
			  "the request target \"*\" is for OPTIONS alone (RFC 9112 3.2.4), not "
			  "%.100s",
			  method);
		return 1;
	}
	i = route_index(url);
	if (path_slash_bad(q, url, method, i < sizeof(routes) / sizeof(routes[0])))
		return 1;
	if (h->ops && (i == sizeof(routes) / sizeof(routes[0]) || !routes[i].ops)) {
		/* the operations port has the read-only routes alone: an
		 * encode or a reload sent there is a client pointed at the
		 * wrong port.  A path with an id or sid is named by its route
		 * (req_path_set), in the answer too: an erasure pipeline sent
		 * to this port must not have its ids logged. */
		char shown[256];
		path_named(url, shown, sizeof(shown));
		q->route = SRV_ROUTE_OTHER;
		set_error(q, SRV_ERR_NOT_FOUND,
			  "no route %.100s %.200s on the operations port (%s): it serves GET "
			  "/healthz, /readyz, /metrics and /v1/model",
			  method, shown, h->key);
		return 1;
	}
	if (i == sizeof(routes) / sizeof(routes[0])) {
		int k = param_route(url);
		if (k < 0) {
			char hint[160], shown[256];
			route_hint(url, hint, sizeof(hint));
			path_named(url, shown, sizeof(shown));
			q->route = SRV_ROUTE_OTHER;
			set_error(q, SRV_ERR_NOT_FOUND, "no route %.100s %.200s%s", method, shown,
				  hint);
			return 1;
		}
		q->route = param_routes[k].route;
		/* /v1/{items,users}/{id} take DELETE too (an admin route) */
		ids = q->route == SRV_ROUTE_ITEM_GET || q->route == SRV_ROUTE_USER_GET;
		if (!strcmp(method, "OPTIONS")) {
			set_options(q, ids ? ALLOW_GET_DELETE : ALLOW_GET);
			return 1;
		}
		q->del = ids && !strcmp(method, "DELETE");
		if (q->del && admin_refused(q))
			return 1;
		if (!q->del && strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
			q->allow = ids ? ALLOW_GET_DELETE : ALLOW_GET;
			/* the message names what Allow does */
			set_error(q, SRV_ERR_METHOD, "%s takes %s, not %.100s",
				  srv_route_name(q->route), q->allow, method);
			return 1;
		}
		if (registry_disabled(q, param_routes[k].registry))
			return 1;
		q->arg = strdup(url + strlen(param_routes[k].prefix));
		if (!q->arg) {
			set_error(q, SRV_ERR_UNAVAILABLE, "out of memory");
			return 1;
		}
		return cl_too_large(q);
	}
	q->route = routes[i].route;
	if (!strcmp(method, "OPTIONS")) {
		set_options(q, routes[i].post ? ALLOW_POST : ALLOW_GET);
		return 1;
	}
	if (routes[i].post ? strcmp(method, "POST") != 0
			   : (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)) {
		q->allow = routes[i].post ? ALLOW_POST : ALLOW_GET;
		set_error(q, SRV_ERR_METHOD, "%s takes %s, not %.100s", url, q->allow, method);
		return 1;
	}
	if ((q->route == SRV_ROUTE_RELOAD || q->route == SRV_ROUTE_ITEMS_DELETE ||
	     q->route == SRV_ROUTE_USERS_DELETE) &&
	    admin_refused(q))
		return 1;
	if (registry_disabled(q, routes[i].registry))
		return 1;
	if (routes[i].post) {
		/* their options are in the body (query_refused) */
		struct query_check qc;
		if (query_refused(q, &qc))
			return 1;
	}
	if (routes[i].post && q->route != SRV_ROUTE_RELOAD) {
		if (q->content_types > 1) {
			/* one value (RFC 9110): the first was taken, so "json, then
			 * text/plain" passed and the other order was a 415 */
			set_error(q, SRV_ERR_INVALID_ARGUMENT, "more than one Content-Type header");
			return 1;
		}
		v = MHD_lookup_connection_value(q->conn, MHD_HEADER_KIND,
						MHD_HTTP_HEADER_CONTENT_TYPE);
		if (!srv_api_content_type_ok(v)) {
			/* an empty one named as such: "not " named nothing */
			set_error(q, SRV_ERR_MEDIA_TYPE,
				  "Content-Type must be application/json, not %.100s",
				  !v		 ? "(none)"
				  : value_len(v) ? v
						 : "(empty)");
			return 1;
		}
		/* the body is read as it comes: a gzip body would be malformed
		 * JSON at its first byte, and a plain one labelled gzip passed
		 * (RFC 9110 15.5.16) */
		v = NULL;
		MHD_get_connection_values(q->conn, MHD_HEADER_KIND, scan_coding, &v);
		if (v) {
			set_error(q, SRV_ERR_MEDIA_TYPE,
				  "Content-Encoding %.100s is not supported: send the body "
				  "uncompressed",
				  v);
			q->no_coding = 1;
			return 1;
		}
	}
	return cl_too_large(q);
}

size_t srv_http_request_id_len(const char *v)
{
	size_t n, i;

	if (!v || (n = value_len(v)) > SRV_REQUEST_ID_MAX)
		return 0;
	for (i = 0; i < n; i++)
		if ((unsigned char)v[i] < 0x21 || (unsigned char)v[i] > 0x7e)
			return 0;
	return n;
}

/*
 * The request's id: the caller's X-Request-Id when it is 1 to 128 visible
 * ASCII characters (echoed, so a caller's own id ties its log to ours);
 * otherwise one made here, 16 hex digits, unique in the process (a counter
 * through a bijective mixer keyed at start) and unlikely to repeat across
 * processes.  A bad id is replaced, not refused: it must never fail a call.
 */
static void request_id(struct srv_http *h, struct MHD_Connection *conn, char *out)
{
	const char *v = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, REQUEST_ID_HEADER);
	size_t n = srv_http_request_id_len(v);
	uint64_t x;

	if (n) {
		memcpy(out, v, n);
		out[n] = '\0';
		return;
	}
	x = __atomic_fetch_add(&h->rid_next, 1, __ATOMIC_RELAXED) ^ h->rid_key;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull; /* splitmix64's finaliser: a bijection */
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	x ^= x >> 31;
	for (int i = 15; i >= 0; i--, x >>= 4)
		out[i] = "0123456789abcdef"[x & 15];
	out[16] = '\0';
}

/*
 * Whether a request refused on its headers is answered before its body is
 * read: when the body is over max_body_bytes (413: reading it would cost
 * more than the answer saves), and when the client waits for "100
 * Continue" before sending it (it then sends nothing).  MHD closes the
 * connection after such an answer, and a client that sends the body anyway
 * may see the close as a reset.  Any other refused request is read in full
 * first (its body dropped) and then answered.
 */
static int refuse_before_body(struct req *q)
{
	return q->status == 413 || expects_continue(q->conn, q->http11);
}

/*
 * A request refused on its headers (an unknown route, a wrong method or
 * Content-Type, no admin token, OPTIONS, a bad target) whose Content-Length
 * is over max_body_bytes: 413, answered before the body as on any route (a
 * chunked one over the cap is 413 too, once it ends).  Its body was read and
 * dropped instead, and one past twice the cap and 1 MiB had its connection
 * closed unanswered: the client sent that much for no answer at all.  Framing
 * the server cannot trust (q->close) stays its 400.
 */
static void too_large_first(struct req *q)
{
	if (q->close || q->status == 413 || !cl_too_large(q))
		return;
	/* what belonged to the refusal the 413 replaces */
	q->allow = NULL;
	q->no_coding = 0;
	q->retry_after = 0;
}

/* A request's record, for @conn's request to @url; NULL without memory. */
static struct req *req_new(struct srv_http *h, struct MHD_Connection *conn, const char *url)
{
	const union MHD_ConnectionInfo *ci =
	    MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
	struct req *q = calloc(1, sizeof(*q));

	if (!q)
		return NULL;
	q->h = h;
	q->hold.b = &h->budget;
	q->conn = conn;
	q->c = ci ? ci->socket_context : NULL;
	if (q->c)
		__atomic_store_n(&q->c->begun, 1, __ATOMIC_RELAXED);
	q->route = SRV_ROUTE_OTHER;
	q->t0 = srv_now();
	q->queued = -1;
	req_path_set(q, url_path(url));
	return q;
}

static int hexval(char c);

/*
 * A '%' in @uri (a request target as sent) not followed by two hex digits
 * (RFC 3986 2.1): into @out (12 bytes), the '%' and the two bytes after it
 * that are there, a byte outside visible ASCII as \xNN ("%zz", "%4",
 * "%\x01"), and returns 1 when it is in the query (after '?'), else 0; @out
 * is "" when every '%' begins an escape.  libmicrohttpd decodes such a '%'
 * as itself, so "a%zz" was looked up as the id "a%zz", and "50%25off" sent
 * as "50%off" as an id its client never meant.
 */
static int bad_escape(const char *uri, char *out)
{
	const char *query = strchr(uri, '?');

	out[0] = '\0';
	for (const char *p = strchr(uri, '%'); p; p = strchr(p + 1, '%')) {
		size_t n = 1;
		if (hexval(p[1]) >= 0 && hexval(p[2]) >= 0)
			continue;
		out[0] = '%';
		for (int k = 1; k <= 2 && p[k]; k++) {
			unsigned char b = (unsigned char)p[k];
			if (b > 0x20 && b < 0x7f)
				out[n++] = (char)b;
			else
				n += (size_t)snprintf(out + n, 12 - n, "\\x%02x", b);
		}
		out[n] = '\0';
		return query && p > query;
	}
	return 0;
}

/*
 * The first byte of @uri (a request target as sent) that none may hold
 * raw (RFC 3986 2, RFC 9112 3.2): a space, a '#' or a control character,
 * its offset in *@at; 0 when there is none.  libmicrohttpd passes them on,
 * so "/v1/items/a b" looked up the id "a b" and "/v1/items/a#b" the id
 * "a#b", where a proxy in front ends the target at the space or drops the
 * fragment, and so allows or logs another request than the one served.
 * (A NUL ends the line in libmicrohttpd: never seen here.)
 */
static int raw_byte_bad(const char *uri, size_t *at)
{
	for (const char *p = uri; *p; p++) {
		unsigned char b = (unsigned char)*p;
		if (b <= 0x20 || b == 0x7f || b == '#') {
			*at = (size_t)(p - uri);
			return b;
		}
	}
	return 0;
}

/* 1 + the offset in @path (a request target's path, as sent) decoded of
 * its first %2F, or 0 when it has none: a '/' that routing, which reads
 * the decoded path, must not take for one of a route's (path_slash_bad). */
static size_t encoded_slash(const char *path)
{
	size_t at = 0;

	for (const char *p = path; *p && *p != '?'; at++) {
		if (p[0] == '%' && hexval(p[1]) >= 0 && hexval(p[2]) >= 0) {
			if (p[1] == '2' && (p[2] == 'F' || p[2] == 'f'))
				return at + 1;
			p += 3;
		} else {
			p++;
		}
	}
	return 0;
}

/*
 * MHD_OPTION_URI_LOG_CALLBACK: a request line is in.  Its record starts
 * here, before its headers, so that a request libmicrohttpd refuses itself
 * before on_request would see it (headers over its buffer: 431; a malformed
 * header line or Content-Length: 400) still reaches on_completed, to be
 * counted and logged with the status MHD sent.  A refused connection's
 * request gets none (refused_drain reads it).
 */
static void *on_uri(void *cls, const char *uri, struct MHD_Connection *conn)
{
	struct srv_http *h = cls;
	const union MHD_ConnectionInfo *ci =
	    MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
	struct conn *c = ci ? ci->socket_context : NULL;

	if (c == &h->over || (c && c->refused))
		return NULL;
	if (c) {
		c->bad_esc_query = bad_escape(uri, c->bad_esc);
		c->raw_byte = raw_byte_bad(uri, &c->raw_at);
		c->enc_slash = encoded_slash(url_path(uri));
	}
	return req_new(h, conn, uri); /* NULL: on_request tries again */
}

/*
 * A suspended connection is not read: a client that closed while its
 * request waited for the batcher, the registry or a reload was written its
 * answer on resuming (into the kernel's buffer, which takes it) and logged
 * and counted 200, where it never read it.  So the answer is given up,
 * 499, when the client's end has come (POLLRDHUP: closed, or its sending
 * side shut, which proto/api.md says is taken as giving up; as nginx
 * does), or the connection was reset.
 */
static int peer_gone(const struct conn *c)
{
	struct pollfd p = {.fd = c ? c->fd : -1, .events = POLLRDHUP};

	return c && poll(&p, 1, 0) == 1 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR));
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
				  const char *method, const char *version, const char *upload,
				  size_t *upload_size, void **con_cls)
{
	struct srv_http *h = cls;
	struct req *q = *con_cls;

	mhd_quiet = 0;
	if (q && q->pending) /* (queue_answer) */
		return queue_answer(q, q->pending);
	if (!q || q->state == REQ_LINE) {
		const union MHD_ConnectionInfo *ci =
		    MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
		struct conn *c = ci ? ci->socket_context : NULL;
		int http11 = version && !strcmp(version, MHD_HTTP_VERSION_1_1);
		if (c == &h->over)
			return refused_close(); /* shut already; MHD closes it */
		if (c && c->refused)
			return refused_drain(conn, c, upload_size, http11);
		if (!q && !(q = req_new(h, conn, url)))
			return MHD_NO;
		if (c) {
			q->url_nul = c->url_nul;
			c->url_nul = 0;
			memcpy(q->bad_esc, c->bad_esc, sizeof(q->bad_esc));
			q->bad_esc_query = c->bad_esc_query;
			c->bad_esc[0] = '\0';
			q->raw_byte = c->raw_byte;
			q->raw_at = c->raw_at;
			c->raw_byte = 0;
			q->enc_slash = c->enc_slash;
			c->enc_slash = 0;
		}
		copy_str(q->method, sizeof(q->method), method);
		q->http11 = http11;
		request_id(h, conn, q->request_id);
		q->t0 = srv_now(); /* its time counts from its headers */
		q->state = REQ_BODY;
		*con_cls = q;
		__atomic_add_fetch(&h->inflight, 1, __ATOMIC_RELAXED);
		__atomic_add_fetch(&h->begun, 1, __ATOMIC_RELAXED);
		if (c && c->fresh) { /* in flight now: the drain waits for it as such */
			c->fresh = 0;
			__atomic_sub_fetch(&h->fresh, 1, __ATOMIC_RELAXED);
		}
		if (on_headers(q, url, method, version)) {
			too_large_first(q);
			if (q->close || (has_body(conn) && refuse_before_body(q)))
				return send_response(q);
			/* Answered once the request is in full (a body is read
			 * and dropped, up to max_body_bytes): the answer then
			 * reaches a client still sending, and keep-alive
			 * survives. */
			q->state = REQ_READY;
			return MHD_YES;
		}
		if (!routes_post(q->route))
			q->state = REQ_GET;
		return MHD_YES;
	}
	if (q->state == REQ_READY || q->state == REQ_GET) {
		if (*upload_size) {
			/* A body nobody asked for: dropped, and capped as any. */
			size_t n = *upload_size;
			*upload_size = 0;
			return body_count(q, n);
		}
		if (q->too_large) /* over max_body_bytes: that first, as for any */
			set_error(q, SRV_ERR_TOO_LARGE, "the body is over %ld bytes",
				  h->d.cfg->max_body_bytes);
		if (q->state == REQ_READY || q->too_large)
			return send_response(q);
		switch (q->route) {
		case SRV_ROUTE_HEALTHZ:
			set_json(q, 200, json_pack("{s:s}", "status", "ok"));
			break;
		case SRV_ROUTE_READYZ:
			route_readyz(q);
			break;
		case SRV_ROUTE_MODEL:
			route_model(q);
			break;
		case SRV_ROUTE_ITEM_GET:
		case SRV_ROUTE_USER_GET:
		case SRV_ROUTE_SID_GET:
		case SRV_ROUTE_SID_LIST:
			start_lookup(q);
			if (q->state == REQ_WAIT)
				return MHD_YES;
			break;
		default:
			route_metrics(q);
			break;
		}
		return send_response(q);
	}
	switch (q->state) {
	case REQ_BODY:
		if (*upload_size) {
			size_t n = *upload_size;
			*upload_size = 0;
			if (body_count(q, n) == MHD_NO)
				return MHD_NO;
			if (!q->too_large && !q->no_room && q->route != SRV_ROUTE_RELOAD) {
				if (!body_room(q, n)) {
					/* the rest is read and dropped; 503 at its end */
					q->no_room = 1;
					body_release(q);
					return MHD_YES;
				}
				srv_buf_append(&q->body, upload, n);
			}
			return MHD_YES;
		}
		if (q->too_large) {
			set_error(q, SRV_ERR_TOO_LARGE, "the body is over %ld bytes",
				  h->d.cfg->max_body_bytes);
			return send_response(q);
		}
		if (q->no_room) {
			set_error(q, SRV_ERR_UNAVAILABLE,
				  "the server holds body_memory_bytes (%ld) of other requests' "
				  "bodies, decoded requests and answers; retry later",
				  h->d.cfg->body_memory_bytes);
			return send_response(q);
		}
		if (q->body.oom) {
			set_error(q, SRV_ERR_UNAVAILABLE, "out of memory for the body");
			return send_response(q);
		}
		if (q->route == SRV_ROUTE_RELOAD) {
			q->waiter.done = reload_done;
			q->waiter.ctx = q;
			req_suspend(q);
			if (srv_reload_request(h->d.reload, &q->waiter)) {
				set_error(q, SRV_ERR_UNAVAILABLE, "no reload was tried: %s",
					  SRV_MSG_SHUTTING_DOWN);
				MHD_resume_connection(q->conn);
			}
			return MHD_YES;
		}
		if (q->route == SRV_ROUTE_ITEMS_DELETE || q->route == SRV_ROUTE_USERS_DELETE)
			start_delete(q);
		else
			start_encode(q);
		if (q->state == REQ_WAIT)
			return MHD_YES;
		return send_response(q);
	case REQ_WAIT:
		/* Resumed: the response is ready, unless its client is gone. */
		if (peer_gone(q->c))
			return refused_close(); /* on_completed: 499, termination=aborted */
		return send_response(q);
	default:
		return MHD_NO;
	}
}

/*
 * A client that sends its request and then shuts its side (shutdown(SHUT_WR),
 * `printf ... | nc`, a load balancer's health check) was answered, and then
 * held until connection_timeout_s: with both in one burst, libmicrohttpd
 * 0.9.75 reads the request from the edge-triggered epoll event that the end
 * of the stream came with, and as its read was short it waits for the next
 * event, which never comes.  Whether a request met it was a race, on every
 * route and method (OPTIONS, GET, POST alike); a client whose end came
 * later was closed at once.  Once an answer is sent in full, a connection
 * whose client has shut its side (POLLRDHUP) has its reading half shut here
 * too: that changes nothing of what can be read (the client's end is
 * already in; requests pipelined before it are still read and answered),
 * but wakes libmicrohttpd, which then reads the end and closes.
 */
static void peer_done_wake(int fd)
{
	struct pollfd p = {.fd = fd, .events = POLLRDHUP};

	if (poll(&p, 1, 0) == 1 && (p.revents & POLLRDHUP))
		shutdown(fd, SHUT_RD);
}

/*
 * libmicrohttpd closed @c (may be NULL) at its own timeout, on silence,
 * which it keeps to connection_timeout_s as well: for a request that
 * stopped arriving, or an answer its client stopped taking, it mostly comes
 * first, the sweeper looking every 0.2 s.  Such a connection is counted
 * and logged as one the sweeper cut would be (the request or the send
 * deadline), once: semid_connections_closed_total missed most of them.
 */
static void conn_timed_out(struct srv_http *h, struct conn *c)
{
	int phase;

	if (!c)
		return;
	phase = __atomic_load_n(&c->phase, __ATOMIC_ACQUIRE);
	if (phase == CONN_WORKING)
		return;
	pthread_mutex_lock(&h->conns_lock);
	if (!__atomic_load_n(&c->cut, __ATOMIC_RELAXED)) {
		__atomic_store_n(&c->cut, 1, __ATOMIC_RELAXED);
		__atomic_sub_fetch(&h->open, 1, __ATOMIC_RELAXED);
		srv_metrics_connections_closed(
		    h->d.metrics,
		    phase == CONN_SENDING ? SRV_CONN_SEND_DEADLINE : SRV_CONN_DEADLINE, 1);
		__atomic_add_fetch(&h->cut_by_mhd[phase == CONN_SENDING], 1, __ATOMIC_RELAXED);
	}
	pthread_mutex_unlock(&h->conns_lock);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
			 enum MHD_RequestTerminationCode toe)
{
	struct srv_http *h = cls;
	struct req *q = *con_cls;
	const union MHD_ConnectionInfo *mhd;
	struct srv_logline l;
	double secs;
	int status, line_only, ours, by_mhd;

	if (!q)
		return;
	*con_cls = NULL;
	secs = srv_now() - q->t0;
	if (toe == MHD_REQUEST_TERMINATED_TIMEOUT_REACHED)
		conn_timed_out(h, q->c);
	mhd = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_HTTP_STATUS);
	line_only = q->state == REQ_LINE; /* on_request never saw it */
	if (line_only && !(mhd && mhd->http_status)) {
		/* its client went away, or was cut at the deadline, before its
		 * headers were in: no request anyone was answered */
		free(q);
		return;
	}
	if (line_only)
		request_id(h, conn, q->request_id);
	/* ours; or one libmicrohttpd answered itself, before on_request (a
	 * REQ_LINE one) or in its body (a bad chunk); else closed before an
	 * answer was queued (a refused request's status is known before its
	 * body is in) */
	ours = q->state == REQ_DONE && q->status;
	by_mhd = !ours && mhd && mhd->http_status;
	status = ours ? q->status : by_mhd ? (int)mhd->http_status : 499;
	if (by_mhd)
		copy_str(q->errmsg, sizeof(q->errmsg),
			 line_only ? "refused by libmicrohttpd before its headers were read "
				     "(its own answer, in HTML)"
				   : "refused by libmicrohttpd while its body was read (its own "
				     "answer, in HTML)");
	srv_metrics_request(h->d.metrics, q->route, status, secs);
	srv_logline_begin(&l, status >= 500 ? SRV_LOG_WARN : SRV_LOG_INFO, "request");
	srv_logline_str(&l, "method", q->method);
	srv_logline_str(&l, "route",
			q->route == SRV_ROUTE_OTHER ? q->path : srv_route_name(q->route));
	srv_logline_int(&l, "status", status);
	srv_logline_int(&l, "items", (long long)q->items);
	srv_logline_int(&l, "us", (long long)(secs * 1e6));
	if (q->version[0])
		srv_logline_str(&l, "model_version", q->version);
	srv_logline_str(&l, "request_id", q->request_id);
	if (h->ops)
		srv_logline_str(&l, "listener", "ops");
	if (q->errmsg[0])
		srv_logline_str(&l, "error", q->errmsg);
	if (toe != MHD_REQUEST_TERMINATED_COMPLETED_OK && !by_mhd) /* MHD closes after those */
		srv_logline_str(&l, "termination",
				toe == MHD_REQUEST_TERMINATED_TIMEOUT_REACHED ||
					(q->c && __atomic_load_n(&q->c->cut, __ATOMIC_RELAXED))
				    ? "timeout"
				    : "aborted");
	srv_logline_end(&l);
	/* The answer is sent in full (or the connection is closing): the next
	 * request on this connection starts its clock now. */
	conn_phase_set(q->c, CONN_RECEIVING);
	if (q->c)
		__atomic_store_n(&q->c->begun, 0, __ATOMIC_RELAXED);
	if (q->c && toe == MHD_REQUEST_TERMINATED_COMPLETED_OK)
		peer_done_wake(q->c->fd);
	body_release(q);
	srv_encode_req_release(&q->ids);
	srv_hold_give(&q->hold, q->resp_charged);
	if (q->pending) /* closed before its final call */
		MHD_destroy_response(q->pending);
	free(q->resp);
	free(q->arg);
	free(q);
	if (!line_only)
		__atomic_sub_fetch(&h->inflight, 1, __ATOMIC_RELAXED);
}

/*
 * Percent-decoding of the path and query arguments, as MHD's own but with
 * %00 decoded to 0x7f (DEL) instead of a NUL that would silently cut an id
 * short, and noted on the connection so that a lookup can say "%00" rather
 * than name the DEL it became (ids refuse both).
 */
static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static size_t unescape(void *cls, struct MHD_Connection *conn, char *s)
{
	struct srv_http *h = cls;
	char *w = s;
	const char *r = s;

	while (*r) {
		int hi, lo;
		if (r[0] == '%' && (hi = hexval(r[1])) >= 0 && (lo = hexval(r[2])) >= 0) {
			int c = hi * 16 + lo;
			*w++ = c ? (char)c : (char)0x7f;
			r += 3;
			if (!c) {
				const union MHD_ConnectionInfo *ci = MHD_get_connection_info(
				    conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
				struct conn *sc = ci ? ci->socket_context : NULL;
				if (sc && sc != &h->over)
					sc->url_nul = 1;
			}
		} else {
			*w++ = *r++;
		}
	}
	*w = '\0';
	return (size_t)(w - s);
}

/*
 * MHD's lines that say nothing: "Application reported internal error" just
 * after the handler closed a refused connection on purpose (mhd_quiet), and
 * "... closed when reading request due to the error: detected connection
 * closure", which MHD writes when a connection the server shut itself ends
 * in the middle of a request: one cut at the request deadline, or a refused
 * one (refuse) whose client closed, having read the 503, before MHD had read
 * all it sent.  The event=connection lines count both kinds.
 */
static int mhd_line_dropped(const char *msg)
{
	static const char app[] = "Application reported internal error";
	static const char closure[] = "due to the error: detected connection closure";
	size_t n = strlen(msg), k = sizeof(closure) - 1;
	int quiet = mhd_quiet;

	mhd_quiet = 0;
	if (quiet && !strncmp(msg, app, sizeof(app) - 1))
		return 1;
	return n >= k && !strcmp(msg + n - k, closure);
}

/* libmicrohttpd's lines logged in a second at most: it writes one or two
 * per malformed request, and a client can send thousands a second (the
 * sweeper says how many more came). */
#define MHD_LINES_PER_S 10

static void mhd_logger(void *cls, const char *fmt, va_list ap)
{
	struct srv_http *h = cls;
	char msg[512];
	size_t n;
	long long now = now_us();
	int keep;

	vsnprintf(msg, sizeof(msg), fmt, ap);
	n = strlen(msg);
	while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
		msg[--n] = '\0';
	if (mhd_line_dropped(msg))
		return;
	pthread_mutex_lock(&h->conns_lock);
	if (!h->started && !h->start_msg[0])
		copy_str(h->start_msg, sizeof(h->start_msg), msg);
	if (now - h->mhd_window_us >= 1000000) {
		h->mhd_window_us = now;
		h->mhd_lines = 0;
	}
	keep = ++h->mhd_lines <= MHD_LINES_PER_S;
	pthread_mutex_unlock(&h->conns_lock);
	if (keep)
		srv_log(SRV_LOG_WARN, "mhd", "%s", msg);
	else
		__atomic_add_fetch(&h->mhd_dropped, 1, __ATOMIC_RELAXED);
}

void srv_http_panic(void *cls, const char *file, unsigned int line, const char *reason)
{
	char msg[600];
	int n;

	(void)cls;
	n = snprintf(msg, sizeof(msg), "libmicrohttpd gave up at %s:%u: %s", file ? file : "?",
		     line, reason ? reason : "(no reason given)");
	if (n >= (int)sizeof(msg))
		n = (int)sizeof(msg) - 1;
	while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == ' '))
		msg[--n] = '\0'; /* MHD's reasons end in a newline */
	srv_log_exiting(SRV_LOG_EXIT_WAIT_MS);
	srv_log(SRV_LOG_ERROR, "panic", "%s; aborting", msg);
	abort();
}

/* ---- connections: the limit and the request deadline ---- */

/* Add @c to the sweeper's watch list. */
static void conn_watch(struct srv_http *h, struct conn *c)
{
	pthread_mutex_lock(&h->conns_lock);
	c->next = h->conns;
	if (h->conns)
		h->conns->prev = c;
	h->conns = c;
	pthread_mutex_unlock(&h->conns_lock);
}

/*
 * Turn connection @fd away (over connection_limit, or while @draining): the
 * canned 503 saying why goes straight to the fresh socket, whose send buffer
 * is empty.  Closing it then would lose the answer to a client still sending
 * its request: data arriving on a closed socket makes the kernel answer RST,
 * and the client sees "connection reset" instead of the 503.  So only the
 * sending half is shut (the client reads the 503 and the end of the stream),
 * and MHD goes on reading the request, which on_request drops
 * (refused_drain), until it is read in full or the client closes; at most
 * LINGER_BYTES of its body (refused_drain), for at most LINGER_US (the
 * sweeper shuts it both ways).  Then MHD closes it.  No thread waits on it
 * meanwhile.  Lingering connections do not count against connection_limit,
 * and at most 32 + connection_limit / 16 linger at once (each holds one of
 * the places MHD keeps above the limit, srv_http_start); beyond that, or
 * without memory, the socket is shut both ways at once (and a request
 * that still comes is answered RST).
 */
static void refuse(struct srv_http *h, int fd, int draining, void **socket_context)
{
	long max = 32 + h->limit / 16;
	struct conn *c = NULL;
	ssize_t w = send(fd, draining ? h->drain_resp : h->over_resp,
			 draining ? h->drain_len : h->over_len, MSG_DONTWAIT | MSG_NOSIGNAL);

	(void)w; /* a client that cannot take 150 bytes just sees the close */
	if (draining) {
		__atomic_add_fetch(&h->refused_draining, 1, __ATOMIC_RELAXED);
	} else {
		__atomic_add_fetch(&h->refused, 1, __ATOMIC_RELAXED);
		if (!h->ops) /* the metric is connection_limit's */
			srv_metrics_connections_closed(h->d.metrics, SRV_CONN_LIMIT, 1);
	}
	if (__atomic_add_fetch(&h->lingering, 1, __ATOMIC_RELAXED) <= max)
		c = calloc(1, sizeof(*c));
	if (!c) {
		__atomic_sub_fetch(&h->lingering, 1, __ATOMIC_RELAXED);
		shutdown(fd, SHUT_RDWR);
		*socket_context = &h->over;
		return;
	}
	shutdown(fd, SHUT_WR);
	c->fd = fd;
	c->refused = 1;
	c->since_us = now_us();
	conn_watch(h, c);
	*socket_context = c;
}

/*
 * Is @c, closing, one libmicrohttpd closed at its timeout with no request
 * begun: idle since it opened or its last answer was sent (that timeout
 * counts from the last byte either way, a little before since_us)?  A
 * client closing its own idle connection does so before then.
 */
static int idle_timed_out(const struct srv_http *h, const struct conn *c)
{
	long long limit = (long long)h->d.cfg->connection_timeout_s * 1000000;

	return limit > 0 && !c->refused && !__atomic_load_n(&c->cut, __ATOMIC_RELAXED) &&
	       __atomic_load_n(&c->phase, __ATOMIC_ACQUIRE) == CONN_RECEIVING &&
	       !__atomic_load_n(&c->begun, __ATOMIC_RELAXED) &&
	       now_us() - __atomic_load_n(&c->since_us, __ATOMIC_RELAXED) >= limit - 250000;
}

/*
 * A connection over connection_limit (counting served ones only) is turned
 * away at once with a canned 503 (refuse).  MHD's own limit sits above ours
 * so that it keeps accepting (at its own limit it stops reading the
 * listening socket and clients would wait unanswered in the kernel's queue).
 */
static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
			  enum MHD_ConnectionNotificationCode code)
{
	struct srv_http *h = cls;
	struct conn *c = *socket_context;
	const union MHD_ConnectionInfo *ci;
	long n;
	int draining;

	if (code == MHD_CONNECTION_NOTIFY_CLOSED) {
		if (!c)
			return;
		*socket_context = NULL;
		if (c == &h->over) {
			__atomic_sub_fetch(&h->open, 1, __ATOMIC_RELAXED);
			return;
		}
		if (c->fresh)
			__atomic_sub_fetch(&h->fresh, 1, __ATOMIC_RELAXED);
		pthread_mutex_lock(&h->conns_lock);
		if (c->refused)
			__atomic_sub_fetch(&h->lingering, 1, __ATOMIC_RELAXED);
		/* a cut served connection left the count when it was cut */
		if (c->refused || !c->cut)
			__atomic_sub_fetch(&h->open, 1, __ATOMIC_RELAXED);
		if (idle_timed_out(h, c))
			srv_metrics_connections_closed(h->d.metrics, SRV_CONN_IDLE, 1);
		if (c->prev)
			c->prev->next = c->next;
		else
			h->conns = c->next;
		if (c->next)
			c->next->prev = c->prev;
		pthread_mutex_unlock(&h->conns_lock);
		free(c);
		return;
	}
	ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
	if (!ci) {
		if (h->lfd >= 0) /* not watched: nor waited for by a drain */
			__atomic_sub_fetch(&h->fresh, 1, __ATOMIC_RELAXED);
		return; /* not watched; MHD's idle timeout still applies */
	}
	n = __atomic_add_fetch(&h->open, 1, __ATOMIC_RELAXED) -
	    __atomic_load_n(&h->lingering, __ATOMIC_RELAXED);
	/* On an inherited socket the acceptor stops before a drain begins,
	 * so a connection that reaches MHD during one was accepted before:
	 * it is served, not refused. */
	draining = h->lfd < 0 && __atomic_load_n(&h->draining, __ATOMIC_RELAXED);
	c = draining || n > h->limit ? NULL : calloc(1, sizeof(*c));
	if (!c) {
		if (h->lfd >= 0)
			__atomic_sub_fetch(&h->fresh, 1, __ATOMIC_RELAXED);
		refuse(h, ci->connect_fd, draining, socket_context);
		return;
	}
	c->fd = ci->connect_fd;
	c->fresh = h->lfd >= 0; /* counted by the acceptor */
	c->since_us = now_us();
	c->phase = CONN_RECEIVING;
	conn_watch(h, c);
	*socket_context = c;
}

/* Close every connection whose request has been arriving, or whose answer
 * has been waiting to be taken, for longer than connection_timeout_s; log
 * what was closed and refused since last time. */
static void log_counts(struct srv_http *h, long long now);

/*
 * A connection with no request begun (no request line in) is idle: that
 * libmicrohttpd closes at connection_timeout_s of silence, uncounted.  The
 * sweeper leaves it that much longer, so that it closes only one that
 * outlived that timeout, which is no idle one: a request line arriving a
 * byte at a time.
 */
#define IDLE_GRACE_US (1000000LL)

static void sweep(struct srv_http *h)
{
	long long now = now_us(), limit = (long long)h->d.cfg->connection_timeout_s * 1000000;
	long cut[2] = {0, 0}; /* at the request deadline, at the send deadline */
	struct conn *c;
	int phase, idle;

	if (limit > 0 || __atomic_load_n(&h->lingering, __ATOMIC_RELAXED)) {
		pthread_mutex_lock(&h->conns_lock);
		for (c = h->conns; c; c = c->next) {
			if (c->refused) {
				/* MHD sees the end of the stream and closes it */
				if (!__atomic_load_n(&c->cut, __ATOMIC_RELAXED) &&
				    now - c->since_us >= LINGER_US) {
					__atomic_store_n(&c->cut, 1, __ATOMIC_RELAXED);
					shutdown(c->fd, SHUT_RDWR);
				}
				continue;
			}
			phase = __atomic_load_n(&c->phase, __ATOMIC_ACQUIRE);
			idle = phase == CONN_RECEIVING &&
			       !__atomic_load_n(&c->begun, __ATOMIC_RELAXED);
			if (limit <= 0 || phase == CONN_WORKING ||
			    __atomic_load_n(&c->cut, __ATOMIC_RELAXED) ||
			    now - __atomic_load_n(&c->since_us, __ATOMIC_RELAXED) <
				limit + (idle ? IDLE_GRACE_US : 0))
				continue;
			if (phase == CONN_SENDING) {
				/* what the kernel holds of the answer goes too: MHD's
				 * close resets the connection rather than leave the
				 * client to read it at its pace */
				struct linger lg = {.l_onoff = 1, .l_linger = 0};
				setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
			}
			/* Its client sees the end of the stream now: free its place at
			 * once rather than when MHD next cleans up. */
			__atomic_store_n(&c->cut, 1, __ATOMIC_RELAXED);
			shutdown(c->fd, SHUT_RDWR);
			__atomic_sub_fetch(&h->open, 1, __ATOMIC_RELAXED);
			cut[phase == CONN_SENDING]++;
		}
		pthread_mutex_unlock(&h->conns_lock);
	}
	if (cut[0])
		srv_metrics_connections_closed(h->d.metrics, SRV_CONN_DEADLINE, (uint64_t)cut[0]);
	if (cut[1])
		srv_metrics_connections_closed(h->d.metrics, SRV_CONN_SEND_DEADLINE,
					       (uint64_t)cut[1]);
	h->cut_unlogged[0] += cut[0];
	h->cut_unlogged[1] += cut[1];
	/* at most a line a second of each (config/README.md), however many
	 * come */
	if (now - h->counts_logged_us >= 1000000)
		log_counts(h, now);
}

/* Log the connections closed at a deadline, the refusals and
 * libmicrohttpd's lines not logged since the last time (sweeper thread, or
 * after it stopped). */
static void log_counts(struct srv_http *h, long long now)
{
	long refused, drained, dropped, cut, cut_send;
	int timeout_s = h->d.cfg->connection_timeout_s;

	cut = h->cut_unlogged[0] + __atomic_exchange_n(&h->cut_by_mhd[0], 0, __ATOMIC_RELAXED);
	cut_send = h->cut_unlogged[1] + __atomic_exchange_n(&h->cut_by_mhd[1], 0, __ATOMIC_RELAXED);
	refused = __atomic_exchange_n(&h->refused, 0, __ATOMIC_RELAXED);
	drained = __atomic_exchange_n(&h->refused_draining, 0, __ATOMIC_RELAXED);
	dropped = __atomic_exchange_n(&h->mhd_dropped, 0, __ATOMIC_RELAXED);
	h->cut_unlogged[0] = h->cut_unlogged[1] = 0;
	if (refused || drained || dropped || cut || cut_send)
		h->counts_logged_us = now;
	if (cut)
		srv_log(SRV_LOG_INFO, "connection",
			"closed %ld connection%s that took over connection_timeout_s %d s to send "
			"a request",
			cut, cut == 1 ? "" : "s", timeout_s);
	if (cut_send)
		srv_log(SRV_LOG_INFO, "connection",
			"closed %ld %s not taken in full connection_timeout_s %d s after it was "
			"ready",
			cut_send,
			cut_send == 1 ? "connection whose answer was"
				      : "connections whose answers were",
			timeout_s);
	if (refused && h->ops)
		srv_log(SRV_LOG_WARN, "connection",
			"refused %ld connection%s to the operations port (%s) over its limit of "
			"%d (503)",
			refused, refused == 1 ? "" : "s", h->addr, h->limit);
	else if (refused)
		srv_log(SRV_LOG_WARN, "connection",
			"refused %ld connection%s over connection_limit %d (503)", refused,
			refused == 1 ? "" : "s", h->limit);
	/* clients still sent here after SIGTERM: a load balancer that had not
	 * taken the instance out of rotation (proto/api.md, Headers) */
	if (drained)
		srv_log(SRV_LOG_WARN, "shutdown",
			"refused %ld connection%s %s while draining (503)", drained,
			drained == 1 ? "" : "s",
			h->ops ? "to the operations port" : "to the main port");
	if (dropped)
		srv_log(SRV_LOG_WARN, "mhd",
			"%ld more libmicrohttpd line%s not logged (at most %d a second)", dropped,
			dropped == 1 ? "" : "s", MHD_LINES_PER_S);
}

static void *sweeper_main(void *arg)
{
	struct srv_http *h = arg;
	struct timespec ts;

	pthread_mutex_lock(&h->stop_lock);
	while (!h->stopping) {
		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_nsec += 200 * 1000000L; /* a deadline is kept to within 0.2 s */
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&h->stop_cv, &h->stop_lock, &ts);
		if (h->stopping)
			break;
		pthread_mutex_unlock(&h->stop_lock);
		sweep(h);
		pthread_mutex_lock(&h->stop_lock);
	}
	pthread_mutex_unlock(&h->stop_lock);
	return NULL;
}

/* A whole 503 response (Retry-After, Connection: close) saying @msg, into
 * *@out, *@len: written straight to a fresh socket and closed. */
static int canned_503(const struct srv_http *h, const char *msg, char **out, size_t *len)
{
	size_t blen = 0, cap;
	char *body = srv_api_error_body(SRV_ERR_UNAVAILABLE, msg, &blen, NULL), *r;
	int n;

	if (!body)
		return -1;
	cap = strlen("HTTP/1.1 503 Service Unavailable\r\n") + blen + 200;
	r = malloc(cap);
	if (!r) {
		free(body);
		return -1;
	}
	n = snprintf(r, cap,
		     "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
		     "Retry-After: %d\r\nConnection: close\r\nContent-Length: %zu\r\n\r\n%s",
		     h->d.cfg->retry_after_s, blen, body);
	free(body);
	if (n < 0 || (size_t)n >= cap) {
		free(r);
		return -1;
	}
	*out = r;
	*len = (size_t)n;
	return 0;
}

static int canned_responses(struct srv_http *h)
{
	char msg[160];

	if (h->ops)
		snprintf(msg, sizeof(msg),
			 "too many open connections to the operations port (%d at most); retry "
			 "later",
			 h->limit);
	else
		snprintf(msg, sizeof(msg),
			 "too many open connections (connection_limit %d); retry later", h->limit);
	return canned_503(h, msg, &h->over_resp, &h->over_len) ||
	       canned_503(h, SRV_MSG_SHUTTING_DOWN, &h->drain_resp, &h->drain_len);
}

static void http_free(struct srv_http *h)
{
	if (h->sweeper_on) {
		pthread_mutex_lock(&h->stop_lock);
		h->stopping = 1;
		pthread_cond_signal(&h->stop_cv);
		pthread_mutex_unlock(&h->stop_lock);
		pthread_join(h->sweeper, NULL);
	}
	log_counts(h, now_us()); /* what came in the last second */
	pthread_cond_destroy(&h->stop_cv);
	pthread_mutex_destroy(&h->stop_lock);
	pthread_mutex_destroy(&h->conns_lock);
	if (h->wake >= 0)
		close(h->wake);
	free(h->over_resp);
	free(h->drain_resp);
	free(h);
}

/* @addr ("host:port", "[v6]:port"), the value of config key @key, as its
 * first address; @host gets the host part without brackets, *@port the
 * port (the config took "0000000000000018080": copied as text it was cut
 * to 15 digits, another port).  The port is read as the config checked it
 * (sid_whole_parse, 0..65535), and refused again here should it not be. */
static int listen_resolve(const char *key, const char *addr, char *host, size_t hostlen, int *port,
			  struct addrinfo **ai, struct sid_error *err)
{
	const char *colon = strrchr(addr, ':');
	struct addrinfo hints;
	char service[8];
	size_t hl;
	long pn;
	int rc;

	*ai = NULL;
	if (!colon)
		return sid_error_set(err, SID_EINVAL, "%s \"%s\" must be HOST:PORT", key, addr);
	if (sid_whole_parse(colon + 1, 0, 65535, &pn))
		return sid_error_set(err, SID_EINVAL,
				     "%s \"%s\": bad port (digits 0..65535 after the last ':')",
				     key, addr);
	*port = (int)pn;
	hl = (size_t)(colon - addr);
	if (hl >= hostlen)
		return sid_error_set(err, SID_EINVAL, "%s \"%s\": host too long", key, addr);
	memcpy(host, addr, hl);
	host[hl] = '\0';
	if (hl >= 2 && host[0] == '[' && host[hl - 1] == ']') {
		memmove(host, host + 1, hl - 2);
		host[hl - 2] = '\0';
	}
	snprintf(service, sizeof(service), "%d", *port);
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
	rc = getaddrinfo(host[0] ? host : NULL, service, &hints, ai);
	if (rc)
		return sid_error_set(err, SID_EINVAL, "%s \"%s\": %s", key, addr, gai_strerror(rc));
	return 0;
}

/* "cannot listen on ADDR: ..." names ops_listen's address as that key's:
 * the operator must tell it from listen's. */
static const char *listen_what(const char *key)
{
	return strcmp(key, "listen") != 0 ? "ops_listen: " : "";
}

/* Bind a socket to @addr (config key @key) once and close it; with
 * @any_port to its host and port 0 (any free one): whether the host has the
 * address, not whether the port is free (a running server holds it), and
 * only a failure that is the address's is said. */
static int bind_check(const char *key, const char *addr, int any_port, struct sid_error *err)
{
	char host[256];
	struct addrinfo *ai;
	int fd, on = 1, rc = 0, port;

	if (listen_resolve(key, addr, host, sizeof(host), &port, &ai, err))
		return SID_EINVAL;
	if (any_port && ai->ai_family == AF_INET6)
		((struct sockaddr_in6 *)ai->ai_addr)->sin6_port = 0;
	else if (any_port)
		((struct sockaddr_in *)ai->ai_addr)->sin_port = 0;
	fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
	if (fd >= 0) {
		/* as MHD sets up its own socket: an address in TIME_WAIT from
		 * the last run is free, and IPv6 is not dual-stack */
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
		if (ai->ai_family == AF_INET6)
			setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof(on));
		/* in MHD's words, so both tries fail alike */
		if (bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 &&
		    !(any_port && errno == EADDRINUSE))
			rc = sid_error_set(err, SID_EIO,
					   "%scannot listen on %s: Failed to bind to port %d: %s",
					   listen_what(key), addr, port, strerror(errno));
		close(fd);
	}
	/* no socket at all (descriptors, memory): MHD will say so itself */
	freeaddrinfo(ai);
	return rc;
}

/* The port of @sa and whether its address is the wildcard (0.0.0.0, ::). */
static int sock_port(const struct sockaddr *sa, int *any)
{
	if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
		*any = IN6_IS_ADDR_UNSPECIFIED(&s6->sin6_addr);
		return ntohs(s6->sin6_port);
	}
	*any = ((const struct sockaddr_in *)sa)->sin_addr.s_addr == htonl(INADDR_ANY);
	return ntohs(((const struct sockaddr_in *)sa)->sin_port);
}

/*
 * ops_listen on listen's port: the same address, or either a wildcard of
 * the other's family (IPv6 sockets are IPv6 only here).  Two sockets with
 * SO_REUSEADDR bind one address alike until one listens, so bind_check
 * alone would let it through and the start fail after the model loaded.
 * Port 0 on both picks two ports.
 */
static int ops_overlap_check(const struct srv_config *cfg, struct sid_error *err)
{
	char host[256];
	struct addrinfo *a = NULL, *b = NULL;
	int rc = 0, pa, pb, any_a, any_b, port;

	if (listen_resolve("listen", cfg->listen, host, sizeof(host), &port, &a, err) ||
	    listen_resolve("ops_listen", cfg->ops_listen, host, sizeof(host), &port, &b, err)) {
		rc = SID_EINVAL;
		goto fail;
	}
	pa = sock_port(a->ai_addr, &any_a);
	pb = sock_port(b->ai_addr, &any_b);
	if (pa && pa == pb && a->ai_family == b->ai_family &&
	    (any_a || any_b ||
	     (a->ai_addrlen == b->ai_addrlen && !memcmp(a->ai_addr, b->ai_addr, a->ai_addrlen))))
		rc = sid_error_set(err, SID_EINVAL,
				   "ops_listen \"%s\" is on listen's port (listen \"%s\"): the "
				   "operations port needs a port of its own",
				   cfg->ops_listen, cfg->listen);
fail:
	if (b)
		freeaddrinfo(b);
	if (a)
		freeaddrinfo(a);
	return rc;
}

int srv_http_listen_check(const struct srv_config *cfg, const struct srv_sockact *sa, int any_port,
			  struct sid_error *err)
{
	int rc = sa->main_fd >= 0 ? 0 : bind_check("listen", cfg->listen, any_port, err);

	if (rc || !cfg->ops_listen[0] || sa->ops_fd >= 0)
		return rc;
	/* beside an inherited API socket, ops_listen's bind finds a port it
	 * holds in use (it listens already) */
	rc = sa->main_fd >= 0 ? 0 : ops_overlap_check(cfg, err);
	return rc ? rc : bind_check("ops_listen", cfg->ops_listen, any_port, err);
}

/*
 * The acceptor of an inherited socket (srv_http.lfd): takes each connection
 * off it and hands it to MHD, which serves it as one it accepted itself
 * (on_connection, the limits, the sweeper).  At MHD's own limit it leaves
 * new ones in the backlog, as MHD does, and looks again every 10 ms.
 * srv_http_quiesce wakes it through h->wake and it ends, leaving the socket
 * as it is.
 */
static void *acceptor_main(void *arg)
{
	struct srv_http *h = arg;
	int warned = 0;

	for (;;) {
		struct pollfd p[2] = {{h->wake, POLLIN, 0}, {h->lfd, POLLIN, 0}};
		int full = __atomic_load_n(&h->open, __ATOMIC_RELAXED) >= h->mhd_limit;
		struct sockaddr_storage ss;
		socklen_t len = sizeof(ss);
		int fd;

		if (poll(p, full ? 1 : 2, full ? 10 : -1) < 0 && errno != EINTR)
			poll(p, 0, 10); /* cannot happen; no busy loop if it does */
		if (p[0].revents)
			break;
		if (full || !p[1].revents)
			continue;
		fd = accept4(h->lfd, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			/* gone before we took it, or taken by another process
			 * sharing the socket */
			if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ||
			    errno == ECONNABORTED || errno == EPROTO)
				continue;
			/* out of descriptors or memory, or a broken socket:
			 * said once, tried again every 100 ms */
			if (!warned++)
				srv_log(SRV_LOG_WARN, "connection",
					"cannot accept a connection on %s: %s; trying again",
					h->addr, strerror(errno));
			if (poll(p, 1, 100) > 0)
				break;
			continue;
		}
		warned = 0;
		__atomic_add_fetch(&h->fresh, 1, __ATOMIC_RELAXED);
		/* MHD closes it if it cannot take it (and says why) */
		if (MHD_add_connection(h->mhd, fd, (struct sockaddr *)&ss, len) != MHD_YES)
			__atomic_sub_fetch(&h->fresh, 1, __ATOMIC_RELAXED);
	}
	return NULL;
}

/* An inherited socket: non-blocking, as every server on one makes it (the
 * acceptor must never sleep in accept(2) when another process took the
 * connection it was woken for), its address in h->addr, and the acceptor
 * running. */
static int inherited_start(struct srv_http *h, struct sid_error *err)
{
	int fl = fcntl(h->lfd, F_GETFL);

	if (fl < 0 || fcntl(h->lfd, F_SETFL, fl | O_NONBLOCK) != 0)
		return sid_error_set(err, SID_EIO, "%s: cannot make fd %d non-blocking: %s", h->key,
				     h->lfd, strerror(errno));
	if (srv_sockact_addr(h->lfd, h->addr, sizeof(h->addr), &h->port))
		return sid_error_set(err, SID_EIO, "%s: fd %d has no TCP address: %s", h->key,
				     h->lfd, strerror(errno));
	if (pthread_create(&h->acceptor, NULL, acceptor_main, h) != 0)
		return sid_error_set(err, SID_EIO, "%s: cannot start the acceptor thread", h->key);
	h->acceptor_on = 1;
	return 0;
}

int srv_http_start(const struct srv_http_deps *deps, struct srv_http **out, struct sid_error *err)
{
	const struct srv_config *cfg = deps->cfg;
	struct addrinfo *ai = NULL;
	char host[256] = "";
	const union MHD_DaemonInfo *info;
	unsigned int flags;
	struct srv_http *h;
	int ops = deps->main_port != NULL, inherited = deps->listen_fd >= 0, port = 0;
	int threads = ops ? 1 : cfg->http_threads; /* probes and scrapes are few */
	const char *key = ops ? "ops_listen" : "listen";
	const char *listen = ops ? cfg->ops_listen : cfg->listen;

	*out = NULL;
	if (!inherited && listen_resolve(key, listen, host, sizeof(host), &port, &ai, err))
		return SID_EINVAL;
	h = calloc(1, sizeof(*h));
	if (!h) {
		if (ai)
			freeaddrinfo(ai);
		return sid_error_set(err, SID_ENOMEM, "http: out of memory");
	}
	h->d = *deps;
	h->ops = ops;
	h->key = key;
	h->lfd = deps->listen_fd;
	h->wake = -1;
	h->limit = ops ? SRV_HTTP_OPS_CONNECTIONS : cfg->connection_limit;
	h->budget.max = (size_t)deps->cfg->body_memory_bytes;
	/* a key for made request ids: different in every process */
	if (getrandom(&h->rid_key, sizeof(h->rid_key), GRND_NONBLOCK) !=
	    (ssize_t)sizeof(h->rid_key)) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		h->rid_key = (uint64_t)ts.tv_nsec * 0x9e3779b97f4a7c15ull ^ (uint64_t)ts.tv_sec ^
			     ((uint64_t)getpid() << 32);
	}
	pthread_mutex_init(&h->conns_lock, NULL);
	pthread_mutex_init(&h->stop_lock, NULL);
	{
		pthread_condattr_t ca;
		pthread_condattr_init(&ca);
		pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
		pthread_cond_init(&h->stop_cv, &ca);
		pthread_condattr_destroy(&ca);
	}
	if (canned_responses(h) ||
	    (inherited && (h->wake = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0)) {
		if (ai)
			freeaddrinfo(ai);
		http_free(h);
		return sid_error_set(err, SID_ENOMEM, "http: out of memory");
	}
	h->mhd_limit = srv_http_mhd_limit(h->limit);
	flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME |
		MHD_USE_ERROR_LOG;
	/* an inherited socket is the acceptor's, never MHD's (srv_http.lfd);
	 * MHD_ALLOW_SUSPEND_RESUME brings the MHD_USE_ITC that
	 * MHD_add_connection needs to wake a worker */
	if (inherited)
		flags |= MHD_USE_NO_LISTEN_SOCKET;
	else if (ai->ai_family == AF_INET6)
		flags |= MHD_USE_IPv6;
	{
		/* The logger goes first so MHD's own start-up messages use it. */
		struct MHD_OptionItem opts[12];
		int k = 0;
		opts[k++] =
		    (struct MHD_OptionItem){MHD_OPTION_EXTERNAL_LOGGER, (intptr_t)mhd_logger, h};
		if (!inherited)
			opts[k++] = (struct MHD_OptionItem){MHD_OPTION_SOCK_ADDR, 0, ai->ai_addr};
		opts[k++] =
		    (struct MHD_OptionItem){MHD_OPTION_NOTIFY_COMPLETED, (intptr_t)on_completed, h};
		opts[k++] =
		    (struct MHD_OptionItem){MHD_OPTION_URI_LOG_CALLBACK, (intptr_t)on_uri, h};
		opts[k++] = (struct MHD_OptionItem){MHD_OPTION_NOTIFY_CONNECTION,
						    (intptr_t)on_connection, h};
		opts[k++] =
		    (struct MHD_OptionItem){MHD_OPTION_UNESCAPE_CALLBACK, (intptr_t)unescape, h};
		opts[k++] = (struct MHD_OptionItem){MHD_OPTION_CONNECTION_TIMEOUT,
						    cfg->connection_timeout_s, NULL};
		opts[k++] =
		    (struct MHD_OptionItem){MHD_OPTION_CONNECTION_LIMIT, h->mhd_limit, NULL};
		if (threads > 1)
			opts[k++] =
			    (struct MHD_OptionItem){MHD_OPTION_THREAD_POOL_SIZE, threads, NULL};
		opts[k++] = (struct MHD_OptionItem){MHD_OPTION_END, 0, NULL};
		MHD_set_panic_func(srv_http_panic, NULL);
		h->mhd = MHD_start_daemon(flags, (uint16_t)port, NULL, NULL, on_request, h,
					  MHD_OPTION_ARRAY, opts, MHD_OPTION_END);
	}
	/* the listening line gives the address bound, not the name: a name
	 * binds its first address only (localhost: ::1 or 127.0.0.1) */
	if (ai) {
		char num[sizeof(host)];
		if (getnameinfo(ai->ai_addr, ai->ai_addrlen, num, sizeof(num), NULL, 0,
				NI_NUMERICHOST) == 0)
			snprintf(host, sizeof(host), "%s", num);
		freeaddrinfo(ai);
	}
	pthread_mutex_lock(&h->conns_lock);
	h->started = 1;
	pthread_mutex_unlock(&h->conns_lock);
	if (!h->mhd) {
		/* MHD's own words say why (bind: address in use, not local, ...) */
		if (inherited)
			sid_error_set(
			    err, SID_EIO, "%s: cannot serve the inherited socket, fd %d: %s", key,
			    h->lfd,
			    h->start_msg[0] ? h->start_msg : "libmicrohttpd could not start");
		else
			sid_error_set(
			    err, SID_EIO, "%scannot listen on %s: %s", listen_what(key), listen,
			    h->start_msg[0] ? h->start_msg : "libmicrohttpd could not start");
		h->lfd = -1; /* not closed here: the process exits 2 */
		http_free(h);
		return SID_EIO;
	}
	if (pthread_create(&h->sweeper, NULL, sweeper_main, h) == 0)
		h->sweeper_on = 1;
	else
		srv_log(SRV_LOG_WARN, "startup",
			"cannot start the connection sweeper: requests have no deadline, only "
			"the idle timeout");
	if (inherited) {
		if (inherited_start(h, err)) {
			srv_http_stop(h);
			return SID_EIO;
		}
		*out = h;
		return 0;
	}
	info = MHD_get_daemon_info(h->mhd, MHD_DAEMON_INFO_BIND_PORT);
	h->port = info ? info->port : port;
	snprintf(h->addr, sizeof(h->addr), "%s%s%s:%d", strchr(host, ':') ? "[" : "", host,
		 strchr(host, ':') ? "]" : "", h->port);
	*out = h;
	return 0;
}

int srv_http_port(const struct srv_http *h)
{
	return h->port;
}

const char *srv_http_addr(const struct srv_http *h)
{
	return h->addr;
}

/* Stop the acceptor (an inherited socket's) and wait for it to end. */
static void acceptor_stop(struct srv_http *h)
{
	uint64_t one = 1;

	if (!h->acceptor_on)
		return;
	if (write(h->wake, &one, sizeof(one)) != (ssize_t)sizeof(one))
		srv_log(SRV_LOG_WARN, "shutdown", "cannot wake the acceptor: %s", strerror(errno));
	pthread_join(h->acceptor, NULL);
	h->acceptor_on = 0;
}

/*
 * Not MHD_quiesce_daemon: with epoll and MHD's own threads (libmicrohttpd
 * 0.9.75), it removes the listening socket from a worker's epoll set while
 * that worker may be removing it too; the loser's epoll_ctl fails and MHD
 * aborts the process.  A SIGTERM under load then ended in SIGABRT.  A bound
 * socket stays with MHD; on_connection answers what still arrives.  An
 * inherited one is no longer accepted on at all (the acceptor ends first,
 * so on_connection serves whatever it handed over before): the next server
 * takes what arrives.
 */
void srv_http_quiesce(struct srv_http *h)
{
	acceptor_stop(h);
	h->drain_since_us = now_us();
	__atomic_store_n(&h->draining, 1, __ATOMIC_RELEASE); /* after drain_since_us */
}

long srv_http_inflight(struct srv_http *h)
{
	return __atomic_load_n(&h->inflight, __ATOMIC_RELAXED);
}

long srv_http_begun(struct srv_http *h)
{
	return __atomic_load_n(&h->begun, __ATOMIC_RELAXED);
}

long srv_http_fresh(struct srv_http *h)
{
	/* stopping without them would close a connection its client is about
	 * to use, while no other server can take it any more */
	if (h->lfd >= 0 && __atomic_load_n(&h->draining, __ATOMIC_ACQUIRE) &&
	    now_us() - h->drain_since_us < SRV_HTTP_FRESH_WAIT_MS * 1000LL)
		return __atomic_load_n(&h->fresh, __ATOMIC_RELAXED);
	return 0;
}

void srv_http_stop(struct srv_http *h)
{
	if (!h)
		return;
	acceptor_stop(h);
	MHD_stop_daemon(h->mhd);
	/* our copy of an inherited socket: the manager's stays open and
	 * listening (never shutdown(2): that would end it for all) */
	if (h->lfd >= 0)
		close(h->lfd);
	http_free(h);
}
