/*
 * check.h - what semid-server checks before it starts, shared by a start
 * (main.c) and semid-server --check-config, which makes the same checks by
 * the same code and starts nothing.
 */
#ifndef SRV_CHECK_H
#define SRV_CHECK_H

struct srv_config;
struct srv_sockact;

/*
 * Every connection is a file descriptor, and so are the model file, the
 * registry and the watcher.  With the usual soft limit of 1024 and the
 * default connection_limit of 1024, a flood of connections would leave no
 * descriptor for a reload or the registry; raise the soft limit to the hard
 * one (as nginx's worker_rlimit_nofile or Go's runtime do).  When even that
 * is short, connection_limit comes down to what it leaves: it used to stay,
 * and a flood ran the process out of descriptors before the limit was
 * reached, so no client got the 503 and both ports stopped answering until
 * the connections timed out.  Returns 0, or -1 (a message said on stderr)
 * when too few connections would be left.
 */
int srv_check_fd_limit(struct srv_config *cfg);

/*
 * The threads a running server starts beside its worker pool (which
 * srv_batcher_new tries before libuv, which abort()s, starts it): the HTTP
 * ports' (http_threads for the API, one for the operations port, a
 * connection sweeper each, an acceptor each for a passed socket), a model
 * reload's and the drain's watch.  Under a limit on threads (ulimit -u,
 * LimitNPROC=, a cgroup's pids.max) with room for the pool but not for
 * them, the start was refused as "cannot listen on ...: Failed to create a
 * new pool thread", or, with room for libmicrohttpd's alone, the server
 * served with no request deadline, then could neither reload nor bound its
 * drain.  They are tried here all at once (sid_threads_try, cpus.h) after
 * the pool started (@pool threads): returns 0, or -1, the refusal said on
 * stderr, when they could not all start.
 */
int srv_check_threads(const struct srv_config *cfg, const struct srv_sockact *sa, int pool);

/* The start's warnings about the admin token: a short one, and one that
 * other users of the host can read (logged, level warn, event=startup). */
void srv_check_admin_token(const struct srv_config *cfg);

/*
 * semid-server --check-config: the checks a start makes, by the same code
 * in the same order, and nothing started: the flags and --config files
 * (parsed by now), the sockets passed (read by now), listen and ops_listen
 * resolved and their hosts bound with port 0 (the running server holds the
 * ports), the open files limit, the model loaded and smoke-encoded, the
 * watched directory, the registry read without a write (srv_store_check),
 * and the threads a start runs (the pool's, the model watch's, a SQLite
 * store's checkpointer and srv_check_threads's), tried at once under the
 * limit on threads and ended.  No pool, listener, watcher or signal
 * handler kept; nothing written.  A summary
 * on stdout, a refusal on stderr in the start's words.  Returns the exit
 * status a start would have: 0, or 2 when it would be refused; 1 when it
 * would succeed but the summary could not be written to stdout (said on
 * stderr; a pipe whose reader went away is no failure).  It may
 * lower @cfg's connection_limit, as srv_check_fd_limit does for a start.
 */
int srv_check_config(struct srv_config *cfg, const struct srv_sockact *sa);

#endif
