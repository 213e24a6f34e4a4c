/*
 * budget.h - body_memory_bytes: one count, shared by every connection, of
 * the memory requests hold outside the model and the encoder's batches
 * (config/README.md says what is counted, and from when to when).  It is
 * what semid_request_body_bytes shows.
 *
 * Each request keeps its parts (its body, its decoded form, its answer) in
 * one struct srv_hold, so that it is never refused for its own sake: a
 * charge that would take the total past the bound is refused while other
 * requests hold some of it, and taken when all that is held is the
 * request's own (one larger than the bound on its own still runs, alone).
 *
 * Thread-safety: the count is atomic; a hold belongs to one thread at a
 * time (it follows its request from the HTTP thread to the loop thread).
 */
#ifndef SRV_BUDGET_H
#define SRV_BUDGET_H

#include <stddef.h>

/* The message of a 503 for a part of a request that does not fit: the
 * part ("the answer"), its bytes, the bound. */
#define SRV_MSG_BUDGET                                                                             \
	"%s (%zu bytes) would take the request bodies, decoded requests and answers held past "    \
	"body_memory_bytes (%zu); retry later"

struct srv_budget {
	size_t held; /* atomic: bytes charged by every request together */
	size_t max;  /* body_memory_bytes */
};

struct srv_hold {
	struct srv_budget *b; /* NULL: nothing is counted (tests, tools) */
	size_t n;	      /* of b->held: this request's parts together */
};

/* Charge @n more bytes to @h: 0, or -1 (nothing charged) when the total
 * would pass the bound while other requests hold part of it. */
static inline int srv_hold_take(struct srv_hold *h, size_t n)
{
	size_t held;

	if (!h || !h->b || !n)
		return 0;
	held = __atomic_add_fetch(&h->b->held, n, __ATOMIC_RELAXED);
	if (held > h->b->max && held != h->n + n) {
		__atomic_sub_fetch(&h->b->held, n, __ATOMIC_RELAXED);
		return -1;
	}
	h->n += n;
	return 0;
}

/* Give back @n bytes of @h's charge. */
static inline void srv_hold_give(struct srv_hold *h, size_t n)
{
	if (!h || !h->b || !n)
		return;
	__atomic_sub_fetch(&h->b->held, n, __ATOMIC_RELAXED);
	h->n -= n;
}

#endif
