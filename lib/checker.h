/*
 * The checker's insides, shared by the files that make it up: checker.c
 * (lifecycle and the policy in force), check.c (the check), url.c (URL
 * checks) and metrics.c (counters).  Private to the library.
 */
#ifndef EGRESS_CHECKER_H
#define EGRESS_CHECKER_H

#include "resolve.h"

#include <limits.h>
#include <pthread.h>

#define N_OUTCOMES EGRESS__OUTCOME_COUNT
#define N_REASONS  EGRESS__REASON_COUNT
#define N_COUNTERS EGRESS__COUNTER_COUNT

#define COUNTER_STRIPES 16

typedef struct egress__counter_stripe {
  _Alignas(64) atomic_ullong counters[N_COUNTERS];
  atomic_ullong by_outcome_reason[N_OUTCOMES][N_REASONS];
} egress__counter_stripe_t;

struct egress_checker {
  /*
   * Policy in force, swapped without a lock on the read side.  Readers
   * announce themselves in the reader slot of the current epoch for the
   * few instructions it takes to load the pointer and take a reference; a
   * writer swaps the pointer, flips the epoch and waits for the old slot to
   * drain before dropping the checker's reference to the old policy.  Checks
   * in flight hold their own reference and finish on the policy they
   * started with.
   */
  _Atomic(egress_policy_t *) policy;
  atomic_uint epoch;
  atomic_long readers[2];
  pthread_mutex_t swap_lock;

  egress_options_t opts;
  egress__resolver_t *resolver;
  egress__cache_t *cache; /* NULL when caching is disabled */
  egress__sink_t *sink;

  /* Identity for the per-thread policy slot (a freed checker's address may
   * be reused; its id never is) and the policy generation it caches. */
  uint64_t id;
  atomic_ullong generation;

  /* Counters are striped so that threads do not fight over cache lines;
   * a read sums the stripes. */
  egress__counter_stripe_t stripes[COUNTER_STRIPES];
};

/* checker.c: the policy for one check.  Borrowed: valid until this thread's
 * next check with any checker, so the caller must not let user code run
 * (callbacks) between this and its last use of the policy; acquired: a
 * reference of the caller's own. */
egress_policy_t *egress__policy_borrow(egress_checker_t *c);
egress_policy_t *egress__policy_acquire(egress_checker_t *c);

/* metrics.c: the counters.  A thread adds to its own stripe, picked on its
 * first count. */
extern _Thread_local unsigned egress__my_stripe;
unsigned egress__stripe_assign(void);

static inline egress__counter_stripe_t *egress__stripe(egress_checker_t *c) {
  unsigned s = egress__my_stripe;
  return &c->stripes[s != UINT_MAX ? s : egress__stripe_assign()];
}

static inline void egress__count_add(egress_checker_t *c, egress_counter_t which, uint64_t n) {
  if (n) atomic_fetch_add_explicit(&egress__stripe(c)->counters[which], n, memory_order_relaxed);
}

static inline void egress__count(egress_checker_t *c, egress_counter_t which) {
  egress__count_add(c, which, 1);
}

/* One finished check, by outcome and reason. */
static inline void egress__count_check(egress_checker_t *c, egress_outcome_t outcome,
                                       egress_reason_t reason) {
  if ((int)outcome < N_OUTCOMES && (int)reason < N_REASONS)
    atomic_fetch_add_explicit(&egress__stripe(c)->by_outcome_reason[outcome][reason], 1,
                              memory_order_relaxed);
}

/* What a URL check adds to host and port (url.c); NULL for host:port
 * checks. */
typedef struct egress__url_ctx {
  const char *path; /* normalized, starts with '/' */
  egress__scheme_t scheme;
  const char *invalid; /* why the URL is refused before any check
                                (the decision is then invalid_host), or
                                NULL */
  bool nomem;          /* the URL could not be taken apart for lack
                                of memory (internal_error) */
} egress__url_ctx_t;

/* url.c: the compiled matchers know neither paths nor schemes; when the
 * rule they found (@p found) does not take this URL, the first allow rule
 * for this host and port that does, or NULL.  *scheme_only tells whether
 * some rule for this host and port would have taken the path under another
 * scheme.  @p min_len as for egress__match_ip. */
const egress__rule_t *egress__url_rule(const egress_policy_t *p, const egress__host_t *h, uint16_t port,
                                       uint8_t min_len, const egress__rule_t *found,
                                       const egress__url_ctx_t *u, bool *scheme_only);

/* url.c: a URL taken apart for its check into @p d (which records the URL
 * as given): the host and port to check, and what the URL adds. */
typedef struct egress__url_check {
  char *host_owned, *path_owned;
  egress__url_ctx_t ctx;
  const char *host; /* host_owned, or the URL itself when it is refused */
  int32_t port;
} egress__url_check_t;
void egress__url_prepare(const char *url, const egress_request_t *req, egress_decision_t *d,
                         egress__url_check_t *uc);
void egress__url_release(egress__url_check_t *uc);

/* check.c: the whole check of @p host:@p port for a URL into @p d, event
 * text built (as egress_check_ex); @p url says what the URL adds, or why it
 * was refused.  @p c NULL: decided as internal_error, EGRESS_EINVAL. */
egress_status_t egress__check_url_parts(egress_checker_t *c, const char *host, int32_t port,
                                        const egress__url_ctx_t *url, const egress_request_t *req,
                                        egress_decision_t *d);

/* check.c: one check in steps, shared by the blocking calls and the loop
 * driver (loop.c), which differ only in how they wait for DNS. */
typedef struct egress__check {
  egress_checker_t *c;
  egress_policy_t *p;
  bool own; /* p is a reference of the check's own */
  egress_decision_t *d;
  const char *host; /* as given: the event's destination */
  const egress__url_ctx_t *url;
  const egress_request_t *req;
  bool keep, want_json, text, refused;
  double start;
  /* A name waiting for its answer: */
  const egress__rule_t *rule;
  uint64_t name_hash;
  uint16_t port;
} egress__check_t;

bool egress__check_begin(egress__check_t *k, egress_checker_t *c, const char *host, int32_t port,
                         const egress__url_ctx_t *url, const egress_request_t *req, egress_decision_t *d,
                         bool keep, bool want_json);
/* The check outlives the caller's call: hold the policy (a reference). */
void egress__check_hold(egress__check_t *k);
void egress__check_count_cache(egress__check_t *k, const egress__cache_stats_t *cs);
void egress__check_answer(egress__check_t *k, egress_status_t st, const egress__answer_t *ans);
void egress__check_cancelled(egress__check_t *k);
egress_status_t egress__check_end(egress__check_t *k);

#endif /* EGRESS_CHECKER_H */
