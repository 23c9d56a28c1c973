/*
 * The checker's lifecycle and the policy in force: creation from options,
 * policy swaps and reloads that never block a check, and the per-thread
 * policy slots that let a check read the policy without an atomic write
 * (README "At run time: compiled matchers, DNS cache, threads, policy
 * swap").  The check itself is check.c.
 */
#include "checker.h"

#include <sched.h>
#include <string.h>

/*
 * Per-thread policy slot: a thread keeps a reference to the policy it last
 * used with a checker, tagged with the checker's generation.  While the
 * generation is unchanged, a check reads the policy with one load and no
 * atomic write at all, so threads never bounce the policy's reference count
 * between cores.  A swap bumps the generation; the next check of each
 * thread then takes the slow path once.
 */
typedef struct policy_slot {
  uint64_t checker_id;
  uint64_t generation;
  egress_policy_t *policy; /* the slot's own reference */
} policy_slot_t;

static _Thread_local policy_slot_t tls_slot;
static pthread_key_t slot_key;
static pthread_once_t slot_once = PTHREAD_ONCE_INIT;
static atomic_ullong next_checker_id = 1;

static void slot_release(void *unused) {
  (void)unused;
  egress_policy_unref(tls_slot.policy);
  tls_slot.policy = NULL;
  tls_slot.checker_id = 0;
}

static void slot_key_init(void) { pthread_key_create(&slot_key, slot_release); }

egress_policy_t *egress__policy_borrow(egress_checker_t *c) {
  uint64_t gen = atomic_load_explicit(&c->generation, memory_order_acquire);
  if (tls_slot.checker_id == c->id && tls_slot.generation == gen && tls_slot.policy) return tls_slot.policy;
  egress_policy_t *p = egress__policy_acquire(c);
  egress_policy_unref(tls_slot.policy);
  if (!tls_slot.checker_id) {
    /* First slot use on this thread: arrange the release at thread exit. */
    pthread_once(&slot_once, slot_key_init);
    pthread_setspecific(slot_key, &tls_slot);
  }
  tls_slot.checker_id = c->id;
  tls_slot.generation = gen;
  tls_slot.policy = p;
  return p;
}

egress_policy_t *egress__policy_acquire(egress_checker_t *c) {
  unsigned e;
  for (;;) {
    e = atomic_load(&c->epoch);
    atomic_fetch_add(&c->readers[e & 1], 1);
    if (atomic_load(&c->epoch) == e) break;
    atomic_fetch_sub(&c->readers[e & 1], 1);
  }
  egress_policy_t *p = egress_policy_ref(atomic_load(&c->policy));
  atomic_fetch_sub(&c->readers[e & 1], 1);
  return p;
}

static void policy_swap(egress_checker_t *c, egress_policy_t *next) {
  pthread_mutex_lock(&c->swap_lock);
  egress_policy_t *old = atomic_exchange(&c->policy, next);
  atomic_fetch_add_explicit(&c->generation, 1, memory_order_release);
  unsigned e = atomic_fetch_add(&c->epoch, 1);
  /* The window a reader stays in its slot is a handful of instructions. */
  while (atomic_load(&c->readers[e & 1]) != 0) sched_yield();
  pthread_mutex_unlock(&c->swap_lock);
  egress_policy_unref(old);
}

egress_status_t egress_checker_new(egress_policy_t *policy, const egress_options_t *opts,
                                   egress_checker_t **out, char *errbuf, size_t errlen) {
  egress_status_t st = EGRESS_ENOMEM;
  egress_options_t defaults;
  egress_checker_t *c = NULL;
  bool opts_copied = false;
  if (!out) return egress__errf(errbuf, errlen, EGRESS_EINVAL, "out must not be NULL");
  *out = NULL;
  if (!policy) return egress__errf(errbuf, errlen, EGRESS_EINVAL, "policy must not be NULL");
  if (!opts) {
    egress__options_defaults(&defaults);
    opts = &defaults;
  }
  c = egress__calloc(1, sizeof(*c));
  if (!c) goto fail;
  if ((st = egress__options_copy(opts, &c->opts)) != EGRESS_OK) goto fail;
  opts_copied = true;
  if ((st = egress__resolver_new(&c->opts, &c->resolver, errbuf, errlen)) != EGRESS_OK) goto fail;
  if ((st = egress__cache_new(&c->opts, &c->cache)) != EGRESS_OK) goto fail;
  if ((st = egress__sink_new(&c->opts, &c->sink, errbuf, errlen)) != EGRESS_OK) goto fail;
  pthread_mutex_init(&c->swap_lock, NULL);
  atomic_init(&c->policy, egress_policy_ref(policy));
  c->id = atomic_fetch_add(&next_checker_id, 1);
  *out = c;
  return EGRESS_OK;
fail:
  if (c) {
    egress__cache_free(c->cache);
    egress__resolver_free(c->resolver);
    if (opts_copied) egress__options_clear(&c->opts);
    egress__free(c);
  }
  if (st == EGRESS_ENOMEM) egress__errf(errbuf, errlen, st, "out of memory creating the checker");
  return st;
}

void egress_checker_free(egress_checker_t *checker) {
  if (!checker) return;
  egress_policy_unref(atomic_load(&checker->policy));
  egress__sink_free(checker->sink);
  egress__cache_free(checker->cache);
  egress__resolver_free(checker->resolver);
  pthread_mutex_destroy(&checker->swap_lock);
  egress__options_clear(&checker->opts);
  egress__free(checker);
}

egress_status_t egress_checker_set_policy(egress_checker_t *checker, egress_policy_t *policy) {
  if (!checker || !policy) return EGRESS_EINVAL;
  policy_swap(checker, egress_policy_ref(policy));
  egress__count(checker, EGRESS_COUNTER_POLICY_SWAPS);
  return EGRESS_OK;
}

egress_policy_t *egress_checker_policy(egress_checker_t *checker) {
  return checker ? egress__policy_acquire(checker) : NULL;
}

egress_status_t egress_checker_reload_file(egress_checker_t *checker, const char *path, bool *changed,
                                           char *errbuf, size_t errlen) {
  egress_policy_t *next = NULL, *current = NULL;
  if (changed) *changed = false;
  if (!checker || !path) return egress__errf(errbuf, errlen, EGRESS_EINVAL, "checker and path are required");
  egress_status_t st = egress_policy_from_file(path, &next, errbuf, errlen);
  if (st != EGRESS_OK) {
    egress__count(checker, EGRESS_COUNTER_POLICY_RELOAD_FAILURES);
    return st;
  }
  current = egress__policy_acquire(checker);
  bool same = current && !strcmp(current->digest, next->digest);
  egress_policy_unref(current);
  if (!same) {
    policy_swap(checker, next);
    egress__count(checker, EGRESS_COUNTER_POLICY_SWAPS);
    if (changed) *changed = true;
  } else {
    egress_policy_unref(next);
  }
  return EGRESS_OK;
}
