/*
 * The checker: the policy in force, the resolver, the event sink, counters,
 * and the check itself (DESIGN §4).
 */
#include "resolve.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/* ------------------------------------------------------------------------ */
/* Options                                                                   */
/* ------------------------------------------------------------------------ */

egress_status_t egress_options_new(egress_options_t **out) {
  if (!out) return EGRESS_EINVAL;
  egress_options_t *o = egress__calloc(1, sizeof(*o));
  *out = o;
  if (!o) return EGRESS_ENOMEM;
  o->mode = EGRESS_MODE_ENFORCE;
  o->mixed = EGRESS_MIXED_DENY;
  o->timeout_ms = 2000;
  o->cache_max = 4096;
  o->cache_min_ttl = 5;
  o->cache_max_ttl = 300;
  o->cache_neg_ttl = 5;
  o->event_fd = -1;
  return EGRESS_OK;
}

static void options_clear(egress_options_t *o) {
  egress__free(o->dns_servers);
  egress__free(o->hosts_file);
  egress__free(o->resolv_conf);
  egress__free(o->event_source);
  egress__free(o->event_path);
}

void egress_options_free(egress_options_t *opts) {
  if (!opts) return;
  options_clear(opts);
  egress__free(opts);
}

static egress_status_t replace_string(char **slot, const char *value) {
  char *copy = NULL;
  if (value && !(copy = egress__strdup(value))) return EGRESS_ENOMEM;
  egress__free(*slot);
  *slot = copy;
  return EGRESS_OK;
}

egress_status_t egress_options_set_mode(egress_options_t *opts, egress_mode_t mode) {
  if (!opts || (mode != EGRESS_MODE_ENFORCE && mode != EGRESS_MODE_MONITOR)) return EGRESS_EINVAL;
  opts->mode = mode;
  return EGRESS_OK;
}

egress_status_t egress_options_set_mixed(egress_options_t *opts, egress_mixed_t mixed) {
  if (!opts || (mixed != EGRESS_MIXED_DENY && mixed != EGRESS_MIXED_FILTER)) return EGRESS_EINVAL;
  opts->mixed = mixed;
  return EGRESS_OK;
}

egress_status_t egress_options_set_dns_servers(egress_options_t *opts, const char *servers) {
  if (!opts) return EGRESS_EINVAL;
  return replace_string(&opts->dns_servers, servers && *servers ? servers : NULL);
}

egress_status_t egress_options_set_hosts_file(egress_options_t *opts, const char *path) {
  if (!opts) return EGRESS_EINVAL;
  return replace_string(&opts->hosts_file, path);
}

egress_status_t egress__options_set_resolv_conf(egress_options_t *opts, const char *path) {
  if (!opts) return EGRESS_EINVAL;
  return replace_string(&opts->resolv_conf, path);
}

egress_status_t egress_options_set_timeout_ms(egress_options_t *opts, uint32_t timeout_ms) {
  if (!opts || timeout_ms < 1 || timeout_ms > 600000) return EGRESS_EINVAL;
  opts->timeout_ms = timeout_ms;
  return EGRESS_OK;
}

egress_status_t egress_options_set_cache(egress_options_t *opts, uint32_t max_entries,
                                         uint32_t min_ttl_s, uint32_t max_ttl_s,
                                         uint32_t negative_ttl_s) {
  if (!opts || min_ttl_s > max_ttl_s) return EGRESS_EINVAL;
  opts->cache_max = max_entries;
  opts->cache_min_ttl = min_ttl_s;
  opts->cache_max_ttl = max_ttl_s;
  opts->cache_neg_ttl = negative_ttl_s;
  return EGRESS_OK;
}

egress_status_t egress_options_add_pref64(egress_options_t *opts, const char *prefix) {
  if (!opts || !prefix) return EGRESS_EINVAL;
  if (opts->n_pref64 >= EGRESS__MAX_PREF64) return EGRESS_ERANGE;
  const char *slash = strchr(prefix, '/');
  if (!slash || slash == prefix) return EGRESS_EINVAL;
  egress__prefix_t p;
  memset(&p, 0, sizeof p);
  if (!egress__ip6_parse(prefix, (size_t)(slash - prefix), &p.addr)) return EGRESS_EINVAL;
  const char *len = slash + 1;
  int bits = 0;
  if (!*len || strlen(len) > 3) return EGRESS_EINVAL;
  for (const char *c = len; *c; c++) {
    if (*c < '0' || *c > '9') return EGRESS_EINVAL;
    bits = bits * 10 + (*c - '0');
  }
  if (bits != 32 && bits != 40 && bits != 48 && bits != 56 && bits != 64 && bits != 96)
    return EGRESS_EINVAL;
  if (len[0] == '0') return EGRESS_EINVAL;
  p.len = (uint8_t)bits;
  for (int b = bits; b < 128; b++)
    if (p.addr.bytes[b / 8] & (0x80 >> (b % 8))) return EGRESS_EINVAL;
  opts->pref64[opts->n_pref64++] = p;
  return EGRESS_OK;
}

egress_status_t egress_options_set_event_source(egress_options_t *opts, const char *source) {
  if (!opts) return EGRESS_EINVAL;
  return replace_string(&opts->event_source, source);
}

static void clear_sinks(egress_options_t *opts) {
  opts->event_cb = NULL;
  opts->event_cb_data = NULL;
  opts->event_fd = -1;
  egress__free(opts->event_path);
  opts->event_path = NULL;
}

egress_status_t egress_options_set_event_callback(egress_options_t *opts, egress_event_cb cb,
                                                  void *user_data) {
  if (!opts) return EGRESS_EINVAL;
  clear_sinks(opts);
  opts->event_cb = cb;
  opts->event_cb_data = cb ? user_data : NULL;
  return EGRESS_OK;
}

egress_status_t egress_options_set_event_fd(egress_options_t *opts, int fd) {
  if (!opts || fd < -1) return EGRESS_EINVAL;
  clear_sinks(opts);
  opts->event_fd = fd;
  return EGRESS_OK;
}

egress_status_t egress_options_set_event_path(egress_options_t *opts, const char *path) {
  if (!opts) return EGRESS_EINVAL;
  char *copy = NULL;
  if (path && !(copy = egress__strdup(path))) return EGRESS_ENOMEM;
  clear_sinks(opts);
  opts->event_path = copy;
  return EGRESS_OK;
}

egress_status_t egress_options_set_audit_required(egress_options_t *opts, bool required) {
  if (!opts) return EGRESS_EINVAL;
  opts->audit_required = required;
  return EGRESS_OK;
}

static egress_status_t options_copy(const egress_options_t *src, egress_options_t *dst) {
  *dst = *src;
  dst->dns_servers = dst->hosts_file = dst->resolv_conf = dst->event_source = dst->event_path = NULL;
  if ((src->dns_servers && !(dst->dns_servers = egress__strdup(src->dns_servers))) ||
      (src->hosts_file && !(dst->hosts_file = egress__strdup(src->hosts_file))) ||
      (src->resolv_conf && !(dst->resolv_conf = egress__strdup(src->resolv_conf))) ||
      (src->event_source && !(dst->event_source = egress__strdup(src->event_source))) ||
      (src->event_path && !(dst->event_path = egress__strdup(src->event_path)))) {
    options_clear(dst);
    return EGRESS_ENOMEM;
  }
  return EGRESS_OK;
}

/* ------------------------------------------------------------------------ */
/* Checker                                                                   */
/* ------------------------------------------------------------------------ */

#define N_OUTCOMES 3
#define N_REASONS 13
#define N_COUNTERS 9

#define COUNTER_STRIPES 16

typedef struct counter_stripe {
  _Alignas(64) atomic_ullong counters[N_COUNTERS];
  atomic_ullong by_outcome_reason[N_OUTCOMES][N_REASONS];
} counter_stripe_t;

static atomic_uint next_stripe;
static _Thread_local unsigned my_stripe = UINT_MAX;

static unsigned stripe_index(void) {
  if (my_stripe == UINT_MAX)
    my_stripe = atomic_fetch_add_explicit(&next_stripe, 1, memory_order_relaxed) % COUNTER_STRIPES;
  return my_stripe;
}

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
  egress__cache_t *cache;          /* NULL when caching is disabled */
  egress__sink_t *sink;

  /* Identity for the per-thread policy slot (a freed checker's address may
   * be reused; its id never is) and the policy generation it caches. */
  uint64_t id;
  atomic_ullong generation;

  /* Counters are striped so that threads do not fight over cache lines;
   * a read sums the stripes. */
  counter_stripe_t stripes[COUNTER_STRIPES];
};

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
  egress_policy_t *policy;     /* the slot's own reference */
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

static egress_policy_t *policy_acquire(egress_checker_t *c);

/* Borrowed policy for one check on this thread.  The caller must not let
 * user code run (callbacks) between this and its last use of the policy
 * unless it holds its own reference: use policy_acquire() then. */
static egress_policy_t *policy_borrow(egress_checker_t *c) {
  uint64_t gen = atomic_load_explicit(&c->generation, memory_order_acquire);
  if (tls_slot.checker_id == c->id && tls_slot.generation == gen && tls_slot.policy) return tls_slot.policy;
  egress_policy_t *p = policy_acquire(c);
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

static egress_policy_t *policy_acquire(egress_checker_t *c) {
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

static void add(egress_checker_t *c, egress_counter_t which, uint64_t n) {
  if (n) atomic_fetch_add_explicit(&c->stripes[stripe_index()].counters[which], n, memory_order_relaxed);
}

static void count(egress_checker_t *c, egress_counter_t which) { add(c, which, 1); }

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
    memset(&defaults, 0, sizeof defaults);
    defaults.timeout_ms = 2000;
    defaults.cache_max = 4096;
    defaults.cache_min_ttl = 5;
    defaults.cache_max_ttl = 300;
    defaults.cache_neg_ttl = 5;
    defaults.event_fd = -1;
    opts = &defaults;
  }
  c = egress__calloc(1, sizeof(*c));
  if (!c) goto fail;
  if ((st = options_copy(opts, &c->opts)) != EGRESS_OK) goto fail;
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
    if (opts_copied) options_clear(&c->opts);
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
  options_clear(&checker->opts);
  egress__free(checker);
}

egress_status_t egress_checker_set_policy(egress_checker_t *checker, egress_policy_t *policy) {
  if (!checker || !policy) return EGRESS_EINVAL;
  policy_swap(checker, egress_policy_ref(policy));
  count(checker, EGRESS_COUNTER_POLICY_SWAPS);
  return EGRESS_OK;
}

egress_policy_t *egress_checker_policy(egress_checker_t *checker) {
  return checker ? policy_acquire(checker) : NULL;
}

egress_status_t egress_checker_reload_file(egress_checker_t *checker, const char *path,
                                           bool *changed, char *errbuf, size_t errlen) {
  egress_policy_t *next = NULL, *current = NULL;
  if (changed) *changed = false;
  if (!checker || !path) return egress__errf(errbuf, errlen, EGRESS_EINVAL, "checker and path are required");
  egress_status_t st = egress_policy_from_file(path, &next, errbuf, errlen);
  if (st != EGRESS_OK) {
    count(checker, EGRESS_COUNTER_POLICY_RELOAD_FAILURES);
    return st;
  }
  current = policy_acquire(checker);
  bool same = current && !strcmp(current->digest, next->digest);
  egress_policy_unref(current);
  if (!same) {
    policy_swap(checker, next);
    count(checker, EGRESS_COUNTER_POLICY_SWAPS);
    if (changed) *changed = true;
  } else {
    egress_policy_unref(next);
  }
  return EGRESS_OK;
}

uint64_t egress_checker_counter(const egress_checker_t *checker, egress_counter_t counter) {
  if (!checker || (int)counter < 0 || (int)counter >= N_COUNTERS) return 0;
  uint64_t sum = 0;
  for (size_t i = 0; i < COUNTER_STRIPES; i++)
    sum += atomic_load_explicit(&((egress_checker_t *)checker)->stripes[i].counters[counter],
                                memory_order_relaxed);
  return sum;
}

uint64_t egress_checker_checks_by(const egress_checker_t *checker, egress_outcome_t outcome,
                                  egress_reason_t reason) {
  if (!checker || (int)outcome < 0 || (int)outcome >= N_OUTCOMES || (int)reason < 0 ||
      (int)reason >= N_REASONS)
    return 0;
  uint64_t sum = 0;
  for (size_t i = 0; i < COUNTER_STRIPES; i++)
    sum += atomic_load_explicit(&((egress_checker_t *)checker)->stripes[i].by_outcome_reason[outcome][reason],
                                memory_order_relaxed);
  return sum;
}

/* ------------------------------------------------------------------------ */
/* The check                                                                 */
/* ------------------------------------------------------------------------ */

static double mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

/* Replace the message; short ones live in the decision itself.  NULL when
 * out of memory (readers then fall back to the reason's message). */
static void set_message(egress_decision_t *d, const char *text, size_t n) {
  egress__decision_drop_message(d);
  if (n < sizeof d->inline_message) {
    memcpy(d->inline_message, text, n);
    d->inline_message[n] = '\0';
    d->message = d->inline_message;
  } else {
    d->message = egress__strndup(text, n);
  }
}

/* Set the result.  When the message cannot be allocated the decision still
 * says what it should, without text. */
static void decide(egress_decision_t *d, egress_outcome_t outcome, egress_reason_t reason,
                   const egress__rule_t *rule, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static void decide(egress_decision_t *d, egress_outcome_t outcome, egress_reason_t reason,
                   const egress__rule_t *rule, const char *fmt, ...) {
  d->outcome = outcome;
  d->reason = reason;
  if (rule) {
    d->has_rule = true;
    d->rule_list = rule->list;
    d->rule_index = rule->index;
  }
  if (d->lean) return;
  if (rule) {
    if (d->borrowed) {
      d->rule_text = (char *)rule->text;   /* the policy outlives the decision's use */
    } else {
      egress__free(d->rule_text);
      d->rule_text = egress__strdup(rule->text);
    }
  }
  if (d->borrow) return;   /* event only: no message */
  egress__decision_drop_message(d);
  if (fmt) {
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    set_message(d, buf, n < 0 ? 0 : (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1);
  }
}

static bool add_address(egress_decision_t *d, const egress__ip_t *ip, int32_t ttl, size_t cap) {
  if (!d->addrs) {
    if (cap <= sizeof d->inline_addrs / sizeof d->inline_addrs[0])
      d->addrs = d->inline_addrs;
    else if (!(d->addrs = egress__calloc(cap, sizeof(*d->addrs))))
      return false;
  }
  egress__addr_verdict_t *a = &d->addrs[d->naddrs++];
  a->ip = *ip;
  a->ttl = ttl;
  a->verdict = EGRESS_VERDICT_DENY;
  a->reason = EGRESS_REASON_INTERNAL_ERROR;
  if (d->lean) return true;
  egress__ip_format(ip, a->text, sizeof a->text);
  uint16_t port = (uint16_t)(d->port > 0 && d->port < 65536 ? d->port : 0);
  a->sa_len = egress__ip_sockaddr(ip, port, &a->sa);
  return true;
}

/* ------------------------------------------------------------------------ */
/* URL paths (egress_check_url)                                              */
/* ------------------------------------------------------------------------ */

/* What a URL check adds to host and port; NULL for host:port checks. */
typedef struct url_ctx {
  const char *path;          /* normalized, starts with '/' */
  egress__scheme_t scheme;
} url_ctx_t;

static const char *scheme_name(egress__scheme_t scheme) {
  return scheme == EGRESS__SCHEME_HTTPS ? "https" : "http";
}

/* A rule path "/v1" allows "/v1" and "/v1/..." but not "/v10". */
static bool path_allows(const char *rule_path, const char *path) {
  if (!rule_path) return true;
  size_t n = strlen(rule_path);
  return !strncmp(rule_path, path, n) && (path[n] == '\0' || path[n] == '/');
}

/* @p min_len: how long a CIDR rule must be to stand for this literal (the
 * open_len of a special-purpose address; 0 for a global one). */
static bool rule_matches_host(const egress__rule_t *r, const egress__host_t *h, uint16_t port,
                              uint8_t min_len) {
  if (port < r->port_lo || port > r->port_hi) return false;
  if (h->kind != EGRESS__HOST_NAME)
    return r->kind == EGRESS__RULE_CIDR && r->cidr.addr.family == h->ip.family &&
           r->cidr.len >= min_len && egress__prefix_contains(&r->cidr, &h->ip);
  return egress__rule_matches_name(r, h->text, h->len);
}

/* A URL entry allows only its own scheme: "https://h" must never let plain
 * http reach port 443.  Entries without a scheme take any. */
static bool rule_takes_url(const egress__rule_t *r, const url_ctx_t *u) {
  return (r->scheme == EGRESS__SCHEME_NONE || r->scheme == u->scheme) && path_allows(r->path, u->path);
}

/* The compiled matchers know neither paths nor schemes; when the rule they
 * found does not take this URL, look for the first rule that does.  Only
 * URL checks come here.  *scheme_only tells whether some rule for this host
 * and port would have taken the path under another scheme. */
static const egress__rule_t *url_rule(const egress_policy_t *p, const egress__host_t *h,
                                      uint16_t port, uint8_t min_len, const egress__rule_t *found,
                                      const url_ctx_t *u, bool *scheme_only) {
  *scheme_only = false;
  if (!u || rule_takes_url(found, u)) return found;
  for (size_t i = 0; i < p->nrules[EGRESS_LIST_ALLOW]; i++) {
    const egress__rule_t *r = &p->rules[EGRESS_LIST_ALLOW][i];
    if (!rule_matches_host(r, h, port, min_len)) continue;
    if (rule_takes_url(r, u)) return r;
    if (path_allows(r->path, u->path)) *scheme_only = true;
  }
  return NULL;
}

/* Denied because no entry for this host and port takes the URL. */
static void deny_url(egress_decision_t *d, const egress__rule_t *found, const url_ctx_t *u,
                     uint16_t port, bool scheme_only) {
  if (scheme_only)
    decide(d, EGRESS_OUTCOME_DENIED, EGRESS_REASON_NOT_IN_ALLOWLIST, found,
           "%s:%u is allowed only for URLs of another scheme, not %s", d->host.text, port,
           scheme_name(u->scheme));
  else
    decide(d, EGRESS_OUTCOME_DENIED, EGRESS_REASON_NOT_IN_ALLOWLIST, found,
           "path %.200s is outside every allowlist entry for %s", u->path, d->host.text);
}

static char *put_text(char *p, const char *s, size_t n) {
  memcpy(p, s, n);
  return p + n;
}

/* The allowed message, "allowed by egressAllowlist[N]", built by hand: it
 * is the message of nearly every check. */
static void allowed_message(egress_decision_t *d, const egress__rule_t *rule, bool filtered) {
  static const char head[] = "allowed by egressAllowlist[";
  static const char tail[] = " (forbidden addresses filtered out)";
  if (d->lean || d->borrow) return;
  char buf[sizeof head + sizeof tail + 24];
  char *p = put_text(buf, head, sizeof head - 1);
  p = egress__put_uint(p, rule->index, 1);
  *p++ = ']';
  if (filtered) p = put_text(p, tail, sizeof tail - 1);
  *p = '\0';
  set_message(d, buf, (size_t)(p - buf));
}

static void check_literal(const egress_policy_t *p, const egress_options_t *o,
                          egress_decision_t *d, uint16_t port, const url_ctx_t *url) {
  const egress__ip_t *ip = &d->host.ip;
  egress__match_t m;
  egress__vet_t v;
  if (!add_address(d, ip, -1, 1)) {
    decide(d, EGRESS_OUTCOME_ENFORCEMENT_UNAVAILABLE, EGRESS_REASON_INTERNAL_ERROR, NULL, NULL);
    return;
  }
  egress__addr_verdict_t *a = &d->addrs[0];
  egress__vet_address(p, o->pref64, o->n_pref64, ip, port, &v);
  if (v.reason == EGRESS_REASON_EXPLICIT_DENY) {
    a->reason = v.reason;
    decide(d, EGRESS_OUTCOME_DENIED, v.reason, v.rule, "%s is in the deny list%s%s", d->host.text,
           v.detail[0] ? ": " : "", v.detail);
    return;
  }
  egress__match_ip(p->matcher[EGRESS_LIST_ALLOW], ip, port, 0, &m);
  if (v.reason == EGRESS_REASON_SPECIAL_PURPOSE_ADDRESS) {
    /* The port alone is to blame only when no CIDR rule holds this port
     * for the address and a rule inside its special range opens it on
     * another port, where it would pass.  A wider rule (0.0.0.0/0:8443)
     * never opens special space, on its own ports or any other, so it
     * never makes this a port question. */
    const egress__rule_t *elsewhere = NULL;
    if (!m.allowing && v.elsewhere) {
      egress__vet_t there;
      egress__match_t mt;
      egress__vet_address(p, o->pref64, o->n_pref64, ip, v.elsewhere->port_lo, &there);
      egress__match_ip(p->matcher[EGRESS_LIST_ALLOW], ip, v.elsewhere->port_lo, there.open_len, &mt);
      if (there.reason == EGRESS_REASON_NONE && mt.allowing)
        elsewhere = there.opener ? there.opener : mt.allowing;
    }
    if (elsewhere)
      decide(d, EGRESS_OUTCOME_DENIED, EGRESS_REASON_PORT_NOT_ALLOWED, elsewhere,
             "%s is allowed only on other ports, not %u", d->host.text, port);
    else
      decide(d, EGRESS_OUTCOME_DENIED, v.reason, NULL,
             "%s is a special-purpose address (%s) not opened on port %u by a CIDR rule inside its "
             "range",
             d->host.text, v.detail, port);
    a->reason = d->reason;
    return;
  }
  if (!m.any) {
    a->reason = EGRESS_REASON_NOT_IN_ALLOWLIST;
    decide(d, EGRESS_OUTCOME_DENIED, EGRESS_REASON_NOT_IN_ALLOWLIST, NULL,
           "IP address %s is not inside any allowlist CIDR rule", d->host.text);
    return;
  }
  if (!m.allowing) {
    a->reason = EGRESS_REASON_PORT_NOT_ALLOWED;
    decide(d, EGRESS_OUTCOME_DENIED, EGRESS_REASON_PORT_NOT_ALLOWED, m.any,
           "%s is allowed only on other ports, not %u", d->host.text, port);
    return;
  }
  /* A special-purpose address was let through by the rule that names its
   * range, which is the rule that won even if a wider one comes first. */
  if (v.opener) m.allowing = v.opener;
  /* Only a rule that could open the address may stand in for the one
   * found: 0.0.0.0/0 never stands in for a private address's own rule. */
  bool scheme_only;
  const egress__rule_t *by_url = url_rule(p, &d->host, port, v.open_len, m.allowing, url, &scheme_only);
  if (!by_url) {
    a->reason = EGRESS_REASON_NOT_IN_ALLOWLIST;
    deny_url(d, m.allowing, url, port, scheme_only);
    return;
  }
  m.allowing = by_url;
  a->verdict = EGRESS_VERDICT_ALLOW;
  a->reason = EGRESS_REASON_NONE;
  decide(d, EGRESS_OUTCOME_ALLOWED, EGRESS_REASON_NONE, m.allowing, NULL);
  allowed_message(d, m.allowing, false);
}

/* "host:port:addr,[v6addr]" for CURLOPT_RESOLVE: the vetted addresses only. */
static bool build_curl_resolve(egress_decision_t *d, uint16_t port) {
  size_t cap = d->host.len + 8 + d->naddrs * (EGRESS__IPSTR_MAX + 3);
  char *s = cap <= sizeof d->inline_curl ? d->inline_curl : egress__malloc(cap);
  if (!s) return false;
  char *p = put_text(s, d->host.text, d->host.len);
  *p++ = ':';
  p = egress__put_uint(p, port, 1);
  *p++ = ':';
  bool first = true;
  for (size_t i = 0; i < d->naddrs; i++) {
    const egress__addr_verdict_t *a = &d->addrs[i];
    if (a->verdict != EGRESS_VERDICT_ALLOW) continue;
    if (!first) *p++ = ',';
    if (a->ip.family == 6) *p++ = '[';
    p = put_text(p, a->text, strlen(a->text));
    if (a->ip.family == 6) *p++ = ']';
    first = false;
  }
  *p = '\0';
  d->curl_resolve = s;
  return true;
}


static void check_name(egress_checker_t *c, const egress_policy_t *p, egress_decision_t *d,
                       uint16_t port, const url_ctx_t *url) {
  egress__match_t m;
  egress__match_name(p->matcher[EGRESS_LIST_ALLOW], d->host.text, d->host.len, port, &m);
  if (!m.any) {
    decide(d, EGRESS_OUTCOME_DENIED, EGRESS_REASON_NOT_IN_ALLOWLIST, NULL,
           "%s matches no allowlist entry", d->host.text);
    return;
  }
  if (!m.allowing) {
    decide(d, EGRESS_OUTCOME_DENIED, EGRESS_REASON_PORT_NOT_ALLOWED, m.any,
           "%s is allowed only on other ports, not %u", d->host.text, port);
    return;
  }
  bool scheme_only;
  const egress__rule_t *rule = url_rule(p, &d->host, port, 0, m.allowing, url, &scheme_only);
  if (!rule) {
    deny_url(d, m.allowing, url, port, scheme_only);
    return;
  }

  egress__answer_t ans;
  egress__cache_stats_t cs = {0, 0, 0};
  egress_status_t st = egress__cache_resolve(c->cache, c->resolver, d->host.text, d->host.len, m.name_hash,
                                             &ans, &cs);
  add(c, EGRESS_COUNTER_CACHE_HITS, cs.hits);
  add(c, EGRESS_COUNTER_CACHE_MISSES, cs.misses);
  add(c, EGRESS_COUNTER_DNS_QUERIES, cs.queries);
  d->dns_ms = ans.cached ? 0 : ans.ms;
  if (st != EGRESS_OK || ans.result == EGRESS__DNS_NOMEM) {
    count(c, EGRESS_COUNTER_DNS_FAILURES);
    decide(d, EGRESS_OUTCOME_ENFORCEMENT_UNAVAILABLE, EGRESS_REASON_INTERNAL_ERROR, rule,
           "out of memory while resolving %s", d->host.text);
    goto done;
  }
  if (ans.result == EGRESS__DNS_NO_SUCH_HOST) {
    decide(d, EGRESS_OUTCOME_DENIED, EGRESS_REASON_NO_SUCH_HOST, rule, "%s: %s", d->host.text,
           ans.detail ? ans.detail : "no address");
    goto done;
  }
  if (ans.result != EGRESS__DNS_OK) {
    count(c, EGRESS_COUNTER_DNS_FAILURES);
    decide(d, EGRESS_OUTCOME_ENFORCEMENT_UNAVAILABLE, EGRESS_REASON_DNS_UNAVAILABLE, rule,
           "resolving %s failed: %s", d->host.text, ans.detail ? ans.detail : "DNS error");
    goto done;
  }

  /* Deny list first, also for the names the answer came through: an
   * allowed name that is an alias of a denied one reaches the denied
   * name's servers.  This is the deny list winning, so it is explicit_deny
   * naming the deny rule, whatever the addresses are; and no address of
   * the answer is usable (filter mode included), since c-ares does not say
   * which addresses came through which alias. */
  for (size_t off = 0; off < ans.chain_len;) {
    const char *alias = ans.chain + off;
    size_t alen = strlen(alias);
    egress__match_t dm;
    egress__match_name(p->matcher[EGRESS_LIST_DENY], alias, alen, port, &dm);
    if (dm.allowing) {
      for (size_t i = 0; i < ans.n; i++) {
        egress__ip_t ip = ans.ips[i];
        egress__ip_unmap(&ip);
        if (!add_address(d, &ip, ans.ttls[i], ans.n)) {
          decide(d, EGRESS_OUTCOME_ENFORCEMENT_UNAVAILABLE, EGRESS_REASON_INTERNAL_ERROR, rule, NULL);
          goto done;
        }
        d->addrs[d->naddrs - 1].reason = EGRESS_REASON_EXPLICIT_DENY;
      }
      decide(d, EGRESS_OUTCOME_DENIED, EGRESS_REASON_EXPLICIT_DENY, dm.allowing,
             "%s is an alias of %.253s (CNAME), which matches deny-list entry %zu", d->host.text, alias,
             dm.allowing->index);
      goto done;
    }
    off += alen + 1;
  }

  size_t passed = 0;
  const egress__addr_verdict_t *first_bad = NULL;
  egress__vet_t first_bad_v;
  for (size_t i = 0; i < ans.n; i++) {
    egress__ip_t ip = ans.ips[i];
    egress__ip_unmap(&ip);
    if (!add_address(d, &ip, ans.ttls[i], ans.n)) {
      decide(d, EGRESS_OUTCOME_ENFORCEMENT_UNAVAILABLE, EGRESS_REASON_INTERNAL_ERROR, rule, NULL);
      goto done;
    }
    egress__addr_verdict_t *a = &d->addrs[d->naddrs - 1];
    egress__vet_t v;
    egress__vet_address(p, c->opts.pref64, c->opts.n_pref64, &ip, port, &v);
    a->reason = v.reason;
    if (v.reason == EGRESS_REASON_NONE) {
      a->verdict = EGRESS_VERDICT_ALLOW;
      passed++;
    } else if (!first_bad) {
      first_bad = a;
      first_bad_v = v;
    }
  }
  if (first_bad && (c->opts.mixed == EGRESS_MIXED_DENY || passed == 0)) {
    /* Deny-if-any: no address of this answer may be used. */
    for (size_t i = 0; i < d->naddrs; i++)
      if (d->addrs[i].verdict == EGRESS_VERDICT_ALLOW) d->addrs[i].verdict = EGRESS_VERDICT_DENY;
    decide(d, EGRESS_OUTCOME_DENIED, EGRESS_REASON_RESOLVED_ADDRESS_FORBIDDEN,
           first_bad_v.reason == EGRESS_REASON_EXPLICIT_DENY ? first_bad_v.rule : rule,
           "%s resolved to forbidden address %s (%s%s%s)", d->host.text, first_bad->text,
           egress_reason_name(first_bad_v.reason), first_bad_v.detail[0] ? ": " : "",
           first_bad_v.detail);
    goto done;
  }
  if (!d->lean && !d->borrow && !build_curl_resolve(d, port)) {
    decide(d, EGRESS_OUTCOME_ENFORCEMENT_UNAVAILABLE, EGRESS_REASON_INTERNAL_ERROR, rule, NULL);
    goto done;
  }
  decide(d, EGRESS_OUTCOME_ALLOWED, EGRESS_REASON_NONE, rule, NULL);
  allowed_message(d, rule, first_bad != NULL);
done:
  egress__answer_clear(&ans);
}

/* Denied as invalid_host, naming the host as given: cut like the event's
 * destination when longer than any host can be, and with every byte that
 * is not printable ASCII written \xHH, so that a hostile host can neither
 * bloat nor garble a message that ends up in logs and terminals. */
static void deny_invalid_host(egress_decision_t *d, const char *host, const char *why) {
  static const char hex[] = "0123456789abcdef";
  static const char head[] = "invalid host \"";
  decide(d, EGRESS_OUTCOME_DENIED, EGRESS_REASON_INVALID_HOST, NULL, NULL);
  if (d->lean || d->borrow) return;
  char buf[sizeof head + EGRESS__REPORT_HOST_MAX * 4 + EGRESS__REPORT_MARK_MAX + 256];
  size_t len = strlen(host), keep = egress__report_keep(host, len, EGRESS__REPORT_HOST_MAX);
  char *p = put_text(buf, head, sizeof head - 1);
  for (size_t i = 0; i < keep; i++) {
    unsigned char ch = (unsigned char)host[i];
    if (ch >= 0x20 && ch < 0x7f && ch != '"' && ch != '\\') {
      *p++ = (char)ch;
    } else {
      *p++ = '\\';
      *p++ = 'x';
      *p++ = hex[ch >> 4];
      *p++ = hex[ch & 15];
    }
  }
  if (keep < len) p = egress__report_mark(p, len);
  p = put_text(p, "\": ", 3);
  if (!why) why = "not a bare host name or IP address";
  p = put_text(p, why, strnlen(why, 200));
  set_message(d, buf, (size_t)(p - buf));
}

/* Everything up to the verdict; never allocates the decision itself. */
static void check_into(egress_checker_t *c, const egress_policy_t *p, egress_decision_t *d,
                       const char *host, int32_t port, const url_ctx_t *url) {
  const char *why = NULL;
  egress__match_t m;
  if (port < 1 || port > 65535) {
    decide(d, EGRESS_OUTCOME_DENIED, EGRESS_REASON_INVALID_PORT, NULL, "port %ld is outside 1-65535",
           (long)port);
    return;
  }
  if (!host) {
    decide(d, EGRESS_OUTCOME_DENIED, EGRESS_REASON_INVALID_HOST, NULL, "host is NULL");
    return;
  }
  egress_status_t st = egress__canon_host(host, strlen(host), &d->host, &why);
  if (st == EGRESS_ENOMEM) {
    decide(d, EGRESS_OUTCOME_ENFORCEMENT_UNAVAILABLE, EGRESS_REASON_INTERNAL_ERROR, NULL, NULL);
    return;
  }
  if (st != EGRESS_OK) {
    deny_invalid_host(d, host, why);
    return;
  }
  d->has_host = true;
  uint16_t p16 = (uint16_t)port;
  if (d->host.kind == EGRESS__HOST_NAME) {
    egress__match_name(p->matcher[EGRESS_LIST_DENY], d->host.text, d->host.len, p16, &m);
    if (m.allowing) {
      decide(d, EGRESS_OUTCOME_DENIED, EGRESS_REASON_EXPLICIT_DENY, m.allowing,
             "%s matches deny-list entry %zu", d->host.text, m.allowing->index);
      return;
    }
  }
  /* IP literals meet the deny list inside check_literal's vetting. */
  if (p->nrules[EGRESS_LIST_ALLOW] == 0) {
    /* The deny list still wins for literals: report it when it applies. */
    if (d->host.kind != EGRESS__HOST_NAME) {
      egress__match_ip(p->matcher[EGRESS_LIST_DENY], &d->host.ip, p16, 0, &m);
      if (m.allowing) {
        decide(d, EGRESS_OUTCOME_DENIED, EGRESS_REASON_EXPLICIT_DENY, m.allowing,
               "%s matches deny-list entry %zu", d->host.text, m.allowing->index);
        return;
      }
    }
    decide(d, EGRESS_OUTCOME_DENIED, EGRESS_REASON_EMPTY_ALLOWLIST, NULL,
           "the allowlist is empty: every destination is denied");
    return;
  }
  if (d->host.kind == EGRESS__HOST_NAME)
    check_name(c, p, d, p16, url);
  else
    check_literal(p, &c->opts, d, p16, url);
}

static bool copy_context(egress_decision_t *d, const char *host, const egress_request_t *req) {
  if (d->borrowed) {
    /* The caller's strings, valid for as long as the decision is used. */
    d->destination = (char *)host;
    if (req)
      for (int i = 0; i < EGRESS__FIELD_COUNT; i++) d->field[i] = req->field[i];
    return true;
  }
  if (host && !(d->destination = egress__strdup(host))) return false;
  if (req)
    for (int i = 0; i < EGRESS__FIELD_COUNT; i++)
      if (req->field[i] && !(d->field[i] = egress__strdup(req->field[i]))) return false;
  return true;
}

/* Verdict from outcome and mode (DESIGN §5), then the event. */
static void finish(egress_checker_t *c, egress_decision_t *d, const egress_policy_t *p,
                   double start, bool want_json) {
  d->mode = c->opts.mode;
  d->special_version = egress__special_version;
  if (p)
    memcpy(d->policy_digest, p->digest, sizeof d->policy_digest);
  else
    d->policy_digest[0] = '\0';
  d->would_deny = d->outcome != EGRESS_OUTCOME_ALLOWED;
  bool input_error = d->reason == EGRESS_REASON_INVALID_HOST || d->reason == EGRESS_REASON_INVALID_PORT ||
                     d->reason == EGRESS_REASON_INTERNAL_ERROR;
  if (d->outcome == EGRESS_OUTCOME_ALLOWED)
    d->verdict = EGRESS_VERDICT_ALLOW;
  else if (d->mode == EGRESS_MODE_MONITOR && !input_error)
    d->verdict = EGRESS_VERDICT_ALLOW;
  else
    d->verdict = EGRESS_VERDICT_DENY;

  if (!d->lean) d->latency_ms = mono_ms() - start;
  bool sink = egress__sink_active(c->sink);
  if (sink || want_json) {
    int delivered = -1;
    if (egress__event_stamp(d) == EGRESS_OK) {
      /* egress_check keeps no decision: deliver straight from the
       * per-thread print buffer, no copy of the text.  Not to a callback,
       * whose code may check again on this thread and reuse the buffer. */
      size_t len = 0;
      const char *text = d->borrow && !c->opts.event_cb ? egress__event_print(d, c->opts.event_source, &len)
                                                         : NULL;
      if (text) {
        delivered = egress__sink_deliver(c->sink, text, len, d);
      } else {
        d->event_json = egress__event_build(d, c->opts.event_source);
        if (d->event_json)
          delivered = egress__sink_deliver(c->sink, d->event_json, strlen(d->event_json), d);
      }
    }
    if (sink) {
      if (delivered == 0) {
        count(c, EGRESS_COUNTER_EVENTS_EMITTED);
      } else {
        count(c, EGRESS_COUNTER_EVENTS_FAILED);
        if (c->opts.audit_required) {
          /* No audit record, no connection: whatever the policy said. */
          d->verdict = EGRESS_VERDICT_DENY;
          d->outcome = EGRESS_OUTCOME_ENFORCEMENT_UNAVAILABLE;
          d->reason = EGRESS_REASON_AUDIT_UNAVAILABLE;
          d->would_deny = true;
          static const char audit_msg[] = "the decision event could not be delivered and audit is required";
          set_message(d, audit_msg, sizeof audit_msg - 1);
          for (size_t i = 0; i < d->naddrs; i++) {
            d->addrs[i].verdict = EGRESS_VERDICT_DENY;
            if (d->addrs[i].reason == EGRESS_REASON_NONE) d->addrs[i].reason = EGRESS_REASON_AUDIT_UNAVAILABLE;
          }
          /* The decision's own event text must say what was decided. */
          egress__free(d->event_json);
          d->event_json = egress__event_build(d, c->opts.event_source);
        }
      }
    }
  }
  count(c, EGRESS_COUNTER_CHECKS);
  if ((int)d->outcome < N_OUTCOMES && (int)d->reason < N_REASONS)
    atomic_fetch_add_explicit(&c->stripes[stripe_index()].by_outcome_reason[d->outcome][d->reason], 1,
                              memory_order_relaxed);
}

/* What a check makes beyond the verdict: the event text is only built when a
 * sink or the caller wants it; egress_check with no sink makes no text. */
enum { RUN_LEAN = 0, RUN_FULL = 1, RUN_TEXT = 2 };

static egress_status_t run_check(egress_checker_t *c, const char *host, int32_t port,
                                 const url_ctx_t *url, const egress_request_t *req,
                                 egress_decision_t *d, int want) {
  bool want_json = want == RUN_FULL;
  d->lean = want == RUN_LEAN && !egress__sink_active(c->sink);
  d->borrow = want == RUN_LEAN && !d->lean;
  double start = d->lean ? 0 : mono_ms();
  d->port = port;
  d->verdict = EGRESS_VERDICT_DENY;
  /* A callback sink runs user code, which may check again on this thread
   * and replace the thread's slot: hold a reference of our own then. */
  bool own = c->opts.event_cb != NULL;
  egress_policy_t *p = own ? policy_acquire(c) : policy_borrow(c);
  /* Borrow strings only while something else keeps them alive past the
   * check: the thread's policy slot (not our own, dropped below) and the
   * caller of egress_check, which reads nothing of the decision after. */
  d->borrowed = d->borrow;
  egress_status_t st = EGRESS_OK;
  if (!d->lean && !copy_context(d, host, req)) {
    decide(d, EGRESS_OUTCOME_ENFORCEMENT_UNAVAILABLE, EGRESS_REASON_INTERNAL_ERROR, NULL, NULL);
    st = EGRESS_ENOMEM;
  } else {
    check_into(c, p, d, host, port, url);
    if (d->reason == EGRESS_REASON_INTERNAL_ERROR) st = EGRESS_ENOMEM;
  }
  finish(c, d, p, start, want_json);
  if (own) egress_policy_unref(p);
  if (st != EGRESS_OK) d->verdict = EGRESS_VERDICT_DENY;
  return st;
}

egress_verdict_t egress_check(egress_checker_t *checker, const char *host, uint16_t port) {
  egress_decision_t d;
  if (!checker) return EGRESS_VERDICT_DENY;
  memset(&d, 0, EGRESS__DECISION_ZERO_SIZE);
  egress_status_t st = run_check(checker, host, port, NULL, NULL, &d, RUN_LEAN);
  egress_verdict_t verdict = st == EGRESS_OK ? d.verdict : EGRESS_VERDICT_DENY;
  egress__decision_release(&d);
  return verdict;
}

egress_status_t egress_check_ex(egress_checker_t *checker, const char *host, int32_t port,
                                const egress_request_t *req, egress_decision_t **out) {
  if (!out) return EGRESS_EINVAL;
  *out = NULL;
  egress_decision_t *d = egress__calloc(1, sizeof(*d));
  if (!d) {
    if (checker) count(checker, EGRESS_COUNTER_EVENTS_FAILED);
    return EGRESS_ENOMEM;
  }
  *out = d;
  if (!checker) {
    d->port = port;
    decide(d, EGRESS_OUTCOME_ENFORCEMENT_UNAVAILABLE, EGRESS_REASON_INTERNAL_ERROR, NULL, "checker is NULL");
    return EGRESS_EINVAL;
  }
  return run_check(checker, host, port, NULL, req, d, RUN_FULL);
}

egress_status_t egress_decision_new(egress_decision_t **out) {
  if (!out) return EGRESS_EINVAL;
  *out = egress__calloc(1, sizeof(**out));
  if (!*out) return EGRESS_ENOMEM;
  /* An unused decision reads as a deny: it was never checked. */
  (*out)->outcome = EGRESS_OUTCOME_ENFORCEMENT_UNAVAILABLE;
  (*out)->reason = EGRESS_REASON_INTERNAL_ERROR;
  return EGRESS_OK;
}

egress_status_t egress_check_into(egress_checker_t *checker, const char *host, int32_t port,
                                  const egress_request_t *req, egress_decision_t *d) {
  if (!d) return EGRESS_EINVAL;
  /* Nothing of the previous check survives into this one. */
  egress__decision_release(d);
  memset(d, 0, EGRESS__DECISION_ZERO_SIZE);
  if (!checker) {
    d->port = port;
    decide(d, EGRESS_OUTCOME_ENFORCEMENT_UNAVAILABLE, EGRESS_REASON_INTERNAL_ERROR, NULL, "checker is NULL");
    return EGRESS_EINVAL;
  }
  return run_check(checker, host, port, NULL, req, d, RUN_TEXT);
}

/*
 * Split an http(s) URL into host, port and a normalized path.  Userinfo is
 * refused outright: "https://allowed.example@evil.example/" is the classic
 * way to make a reader see the wrong host.  Dot segments (also spelled
 * %2e) are resolved as RFC 3986 §5.2.4 does, so "/v1/../admin" is checked
 * as "/admin", which is what an HTTP client sends.
 */
typedef struct url_parts {
  char *host;      /* owned, brackets kept for IPv6 */
  int32_t port;
  char *path;      /* owned, starts with '/' */
  egress__scheme_t scheme;
} url_parts_t;

static bool is_dot_segment(const char *s, size_t n, int dots) {
  /* Matches "." (dots == 1) or ".." (dots == 2), each dot possibly "%2e". */
  int seen = 0;
  size_t i = 0;
  while (i < n) {
    if (s[i] == '.') i++;
    else if (i + 2 < n + 0 && s[i] == '%' && s[i + 1] == '2' && (s[i + 2] == 'e' || s[i + 2] == 'E')) i += 3;
    else return false;
    seen++;
  }
  return seen == dots;
}

static char *normalize_path(const char *in, size_t len) {
  /* Output is never longer than the input plus a leading '/'. */
  char *out = egress__malloc(len + 2);
  if (!out) return NULL;
  size_t o = 0;
  size_t i = 0;
  if (len == 0 || in[0] != '/') out[o++] = '/';
  while (i < len) {
    if (in[i] == '/') i++;
    size_t start = i;
    while (i < len && in[i] != '/') i++;
    size_t seg = i - start;
    bool trailing = i >= len;
    if (is_dot_segment(in + start, seg, 1)) {
      if (trailing && (o == 0 || out[o - 1] != '/')) out[o++] = '/';
      continue;
    }
    if (is_dot_segment(in + start, seg, 2)) {
      /* Drop the last segment and the slash in front of it: "/a/b" -> "/a". */
      while (o > 0 && out[o - 1] != '/') o--;
      if (o > 0) o--;
      if (trailing || o == 0) out[o++] = '/';
      continue;
    }
    if (o == 0 || out[o - 1] != '/') out[o++] = '/';
    memcpy(out + o, in + start, seg);
    o += seg;
  }
  if (o == 0) out[o++] = '/';
  out[o] = '\0';
  return out;
}

static bool is_hex_digit(char ch) {
  return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f') || (ch >= 'A' && ch <= 'F');
}

/*
 * Paths that servers read differently are refused rather than guessed at:
 * an empty segment ("//": merged by nginx, kept by others), an encoded
 * slash or backslash ("%2F", "%5C": decoded before ".." by some servers),
 * a dot segment with parameters ("..;": ".." to Tomcat), and a '%' that is
 * not followed by two hex digits ("%u002e" is '.' to IIS, "%zz" and a
 * trailing '%' are kept, rejected or mangled depending on the server), which
 * is no percent-encoding at all (RFC 3986 section 2.1) and so cannot be
 * compared as a path.
 */
static const char *path_ambiguity(const char *p, size_t len) {
  for (size_t i = 0; i < len; i++) {
    if (p[i] == '%' && (i + 2 >= len || !is_hex_digit(p[i + 1]) || !is_hex_digit(p[i + 2])))
      return "URL path has a malformed percent-encoding (not %HH)";
    if (p[i] == '/' && i + 1 < len && p[i + 1] == '/') return "URL path has an empty segment (//)";
    if (p[i] == '%' && i + 2 < len &&
        ((p[i + 1] == '2' && (p[i + 2] == 'f' || p[i + 2] == 'F')) ||
         (p[i + 1] == '5' && (p[i + 2] == 'c' || p[i + 2] == 'C'))))
      return "URL path has an encoded slash or backslash";
    if (p[i] == ';') {
      /* Is the segment before the ';' a dot segment? */
      size_t start = i;
      while (start > 0 && p[start - 1] != '/') start--;
      if (is_dot_segment(p + start, i - start, 1) || is_dot_segment(p + start, i - start, 2))
        return "URL path has a dot segment with parameters";
    }
  }
  return NULL;
}

static const char *parse_url(const char *url, url_parts_t *u, bool *nomem) {
  size_t len = strlen(url);
  size_t i = 0;
  *nomem = false;
  memset(u, 0, sizeof *u);
  for (size_t k = 0; k < len; k++)
    if ((unsigned char)url[k] <= 0x20 || url[k] == 0x7f || url[k] == '\\')
      return "URL contains white space, a control character or a backslash";
  int default_port;
  if (len >= 8 && !strncasecmp(url, "https://", 8)) {
    default_port = 443;
    u->scheme = EGRESS__SCHEME_HTTPS;
    i = 8;
  } else if (len >= 7 && !strncasecmp(url, "http://", 7)) {
    default_port = 80;
    u->scheme = EGRESS__SCHEME_HTTP;
    i = 7;
  } else {
    return "URL scheme must be http or https";
  }
  size_t auth_start = i;
  while (i < len && url[i] != '/' && url[i] != '?' && url[i] != '#') i++;
  size_t auth_end = i;
  if (memchr(url + auth_start, '@', auth_end - auth_start)) return "URL must not contain userinfo";
  if (auth_end == auth_start) return "URL has no host";
  size_t host_end = auth_end;
  const char *port_text = NULL;
  size_t port_len = 0;
  if (url[auth_start] == '[') {
    const char *close = memchr(url + auth_start, ']', auth_end - auth_start);
    if (!close) return "URL has an unbalanced '['";
    host_end = (size_t)(close - url) + 1;
    if (host_end < auth_end) {
      if (url[host_end] != ':') return "junk after ']' in URL host";
      port_text = url + host_end + 1;
      port_len = auth_end - host_end - 1;
    }
  } else {
    const char *colon = memchr(url + auth_start, ':', auth_end - auth_start);
    if (colon) {
      host_end = (size_t)(colon - url);
      port_text = colon + 1;
      port_len = auth_end - host_end - 1;
    }
  }
  u->port = default_port;
  if (port_text) {
    if (port_len == 0 || port_len > 5) return "URL port must be 1-65535";
    int32_t v = 0;
    for (size_t k = 0; k < port_len; k++) {
      if (port_text[k] < '0' || port_text[k] > '9') return "URL port must be decimal digits";
      v = v * 10 + (port_text[k] - '0');
    }
    u->port = v;   /* range is judged by the check as invalid_port */
  }
  size_t path_end = auth_end;
  while (path_end < len && url[path_end] != '?' && url[path_end] != '#') path_end++;
  u->host = egress__strndup(url + auth_start, host_end - auth_start);
  const char *ambiguous = path_ambiguity(url + auth_end, path_end - auth_end);
  if (ambiguous) return ambiguous;
  u->path = normalize_path(url + auth_end, path_end - auth_end);
  if (!u->host || !u->path) {
    *nomem = true;
    return "out of memory";
  }
  return NULL;
}

egress_status_t egress_check_url(egress_checker_t *checker, const char *url,
                                 const egress_request_t *req, egress_decision_t **out) {
  url_parts_t u;
  bool nomem = false;
  if (!out) return EGRESS_EINVAL;
  *out = NULL;
  egress_decision_t *d = egress__calloc(1, sizeof(*d));
  if (!d) return EGRESS_ENOMEM;
  *out = d;
  if (!checker) {
    decide(d, EGRESS_OUTCOME_ENFORCEMENT_UNAVAILABLE, EGRESS_REASON_INTERNAL_ERROR, NULL, "checker is NULL");
    return EGRESS_EINVAL;
  }
  const char *why = url ? parse_url(url, &u, &nomem) : "URL is NULL";
  if (url && !(d->url = egress__strdup(url))) nomem = true;
  if (why || nomem) {
    double start = mono_ms();
    egress_policy_t *p = policy_acquire(checker);
    if (!nomem) copy_context(d, url, req);
    if (nomem)
      decide(d, EGRESS_OUTCOME_ENFORCEMENT_UNAVAILABLE, EGRESS_REASON_INTERNAL_ERROR, NULL, NULL);
    else
      decide(d, EGRESS_OUTCOME_DENIED, EGRESS_REASON_INVALID_HOST, NULL, "invalid URL: %s", why);
    d->port = 0;
    finish(checker, d, p, start, true);
    egress_policy_unref(p);
    if (url) {
      egress__free(u.host);
      egress__free(u.path);
    }
    d->verdict = nomem ? EGRESS_VERDICT_DENY : d->verdict;
    return nomem ? EGRESS_ENOMEM : EGRESS_OK;
  }
  /* The checked host is the URL's host without IPv6 brackets. */
  url_ctx_t ctx = {.path = u.path, .scheme = u.scheme};
  egress_status_t st = run_check(checker, u.host, u.port, &ctx, req, d, RUN_FULL);
  egress__free(u.host);
  egress__free(u.path);
  return st;
}

/* ------------------------------------------------------------------------ */
/* Prometheus text                                                           */
/* ------------------------------------------------------------------------ */

static const char *const counter_names[N_COUNTERS] = {
    "egress_checks_total",         "egress_dns_queries_total",
    "egress_dns_failures_total",   "egress_dns_cache_hits_total",
    "egress_dns_cache_misses_total", "egress_events_emitted_total",
    "egress_events_failed_total",  "egress_policy_swaps_total",
    "egress_policy_reload_failures_total"};

char *egress_checker_metrics(const egress_checker_t *checker) {
  if (!checker) return NULL;
  size_t cap = 4096 + (size_t)N_OUTCOMES * N_REASONS * 128;
  char *buf = egress__malloc(cap);
  if (!buf) return NULL;
  size_t o = 0;
  o += (size_t)snprintf(buf + o, cap - o,
                        "# HELP egress_checks_by_outcome_total Egress checks by outcome and reason.\n"
                        "# TYPE egress_checks_by_outcome_total counter\n");
  for (int oc = 0; oc < N_OUTCOMES; oc++)
    for (int r = 0; r < N_REASONS; r++) {
      uint64_t v = egress_checker_checks_by(checker, (egress_outcome_t)oc, (egress_reason_t)r);
      if (!v) continue;
      o += (size_t)snprintf(buf + o, cap - o,
                            "egress_checks_by_outcome_total{outcome=\"%s\",reason=\"%s\"} %llu\n",
                            egress_outcome_name((egress_outcome_t)oc),
                            r == EGRESS_REASON_NONE ? "" : egress_reason_name((egress_reason_t)r),
                            (unsigned long long)v);
    }
  for (int i = 0; i < N_COUNTERS; i++)
    o += (size_t)snprintf(buf + o, cap - o, "# TYPE %s counter\n%s %llu\n", counter_names[i],
                          counter_names[i],
                          (unsigned long long)egress_checker_counter(checker, (egress_counter_t)i));
  return buf;
}
