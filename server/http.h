/*
 * http.h - the HTTP front of semid-server on libmicrohttpd.
 *
 * MHD runs its own polling thread(s) (MHD_USE_INTERNAL_POLLING_THREAD with
 * epoll, http_threads of them) and calls the access handler as headers and
 * body arrive.  The handler routes, checks method, content type, body size
 * (Content-Length up front, and counted while streaming: an oversized body
 * is never buffered) and the admin token (constant-time compare), then on
 * the last call decodes and validates the JSON (api.h).  An encode request
 * becomes a job: the connection is suspended, the job goes to the batcher,
 * and the batcher's done callback on the loop thread stores the response and
 * resumes the connection; MHD then calls the handler again and it queues the
 * response.  An assign request goes the same way (the batcher hands it on
 * to the registry lane, assign.h, after its encode); registry lookups are
 * suspended the same way and answered from the registry lane.  The other GET
 * routes answer directly on the MHD thread.
 *
 * One log line per request is written when MHD reports it complete (method,
 * route, status, items, us, model_version), and the request metrics are
 * counted there.  A request's record starts as soon as its request line is
 * in (MHD's URI log callback), so one MHD refuses itself before the
 * handler runs (431, a malformed header, a bad Content-Length) is counted
 * and logged too, with the status MHD sent.
 *
 * The operations port (cfg->ops_listen, optional) is a second, small daemon
 * of its own (one thread, SRV_HTTP_OPS_CONNECTIONS connections) serving the
 * read-only routes an operator's tools need: /healthz, /readyz, /metrics
 * and GET /v1/model, every other path 404.  The main port's clients, at
 * connection_limit, cannot take its places, so probes and scrapes still get
 * through when the main port answers 503.  Its requests count in the same
 * metrics, under the same routes.
 *
 * Socket activation (sockact.h): a port whose listening socket was passed
 * by the service manager (deps->listen_fd) is served on it instead of
 * binding: MHD is started without a listening socket of its own and an
 * acceptor thread hands it each connection (http.c, srv_http.lfd).  A drain
 * then stops accepting altogether, rather than answering 503, and leaves
 * the socket listening: what arrives waits in its backlog for the next
 * server.
 *
 * Thread-safety: srv_http_start/quiesce/stop belong to the thread that owns
 * the server (the loop thread); srv_http_inflight and srv_http_fresh are
 * thread-safe.
 */
#ifndef SRV_HTTP_H
#define SRV_HTTP_H

#include "assign.h"
#include "batcher.h"
#include "config.h"
#include "err.h"
#include "metrics.h"
#include "reload.h"
#include "sockact.h"

struct srv_http;

struct srv_http_deps {
	const struct srv_config *cfg;
	struct srv_metrics *metrics;
	struct srv_reload *reload;
	struct srv_batcher *batcher;
	struct srv_assigner *assigner; /* the registry lane */
	struct srv_store *store;       /* for its health in GET /v1/model */
	/* NULL: this is the main port (cfg->listen).  Else this is the
	 * operations port (cfg->ops_listen) of that main port, whose
	 * connections and held bodies /metrics reports and whose drain
	 * /readyz reports; it must outlive this one. */
	struct srv_http *main_port;
	/* A listening socket inherited from the service manager (sockact.h)
	 * to serve on, or -1: bind cfg->listen (or cfg->ops_listen).  The
	 * port owns it from srv_http_start on (closes it at srv_http_stop). */
	int listen_fd;
};

/* Draining an inherited socket, connections accepted before the drain
 * whose first request has not begun yet are waited for this long at most
 * (srv_http_fresh): their clients are sending it. */
#define SRV_HTTP_FRESH_WAIT_MS 1000

/* Connections the operations port serves at once (its connection_limit:
 * a probe or a scrape needs one each). */
#define SRV_HTTP_OPS_CONNECTIONS 16

/* libmicrohttpd's own connection limit for a listener of @limit: the room
 * above it takes a burst of connections refused with 503 (they close within
 * a poll).  Each is a descriptor: srv_check_fd_limit (check.h) fits
 * connection_limit to the open-files limit with it. */
static inline int srv_http_mhd_limit(int limit)
{
	return limit + 64 + limit / 8;
}

/* Before the slow parts of a start (loading the model, opening the
 * registry): resolve cfg->listen, and cfg->ops_listen when set (each
 * unless @sa passed a socket for it), and bind a
 * socket to each once, then close it, so that a host that does not
 * resolve, an address this host does not have or a port in use refuses the
 * start at once, with srv_http_start's message, and nothing opened or
 * created on the way; so does an ops_listen on listen's port.  (Another
 * process may still take a port before srv_http_start binds it.)  With
 * @any_port (--check-config, beside the server that holds the ports) each
 * host is bound with port 0 instead: the same checks but the port's. */
int srv_http_listen_check(const struct srv_config *cfg, const struct srv_sockact *sa, int any_port,
			  struct sid_error *err);

/* Bind cfg->listen (deps->main_port NULL) or cfg->ops_listen, or take
 * deps->listen_fd, and start serving. */
int srv_http_start(const struct srv_http_deps *deps, struct srv_http **out, struct sid_error *err);

/* The bound port (port 0 picked one), or the inherited socket's. */
int srv_http_port(const struct srv_http *h);

/* The address bound, in numbers (a host name binds its first address), or
 * the inherited socket's (getsockname): "127.0.0.1:8080", "[::1]:8080". */
const char *srv_http_addr(const struct srv_http *h);

/* Drain: a connection opened from now on is answered 503 ("the server is
 * shutting down", Retry-After) and closed, or on an inherited socket not
 * accepted at all (it waits for the next server); later responses carry
 * "Connection: close" and /readyz answers 503. */
void srv_http_quiesce(struct srv_http *h);

/* Requests started and not yet completed (any thread). */
long srv_http_inflight(struct srv_http *h);

/* Requests started since the daemon did (any thread). */
long srv_http_begun(struct srv_http *h);

/* Draining an inherited socket, for SRV_HTTP_FRESH_WAIT_MS from
 * srv_http_quiesce: the connections accepted before it whose first request
 * has not begun (a client connects, then sends: its bytes are on the way),
 * which the drain waits for too; else 0.  They are no requests: one that
 * begins counts in srv_http_inflight from then on. */
long srv_http_fresh(struct srv_http *h);

/* Stop the daemon (no request may be suspended) and free. */
void srv_http_stop(struct srv_http *h);

/* Constant-time check that @header is "Bearer <token>" (the scheme in any
 * case, one or more spaces before the token, trailing whitespace ignored);
 * exposed for tests. */
int srv_http_bearer_ok(const char *header, const char *token);

/* X-Request-Id: a caller's value is echoed (response header and the request's
 * log line) when it is 1 to SRV_REQUEST_ID_MAX visible ASCII characters
 * (0x21-0x7e), trailing whitespace left out; otherwise the server makes one.
 * srv_http_request_id_len gives the length of the id in @v, 0 when it does
 * not qualify; exposed for tests. */
#define SRV_REQUEST_ID_MAX 128
size_t srv_http_request_id_len(const char *v);

/* libmicrohttpd's panic callback (installed by srv_http_start): where MHD
 * would print to stderr and abort, log an event=panic line naming its file,
 * line and reason first, then abort.  Exposed for tests. */
void srv_http_panic(void *cls, const char *file, unsigned int line, const char *reason);

#endif
