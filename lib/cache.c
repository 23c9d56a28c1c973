/*
 * DNS cache (docs/runtime.md#dns-cache).
 *
 * Answers are cached per canonical name for their TTL clamped to
 * [min_ttl, max_ttl]; NXDOMAIN / no-address answers for the negative TTL;
 * failures never.  The cache holds raw answers only: every check vets the
 * addresses again against the policy in force, so a policy swap can never
 * let a cached address through that the new policy forbids.
 *
 * Concurrent misses on one name share one lookup ("single flight"): the
 * first thread resolves, the others wait for its answer.
 *
 * The table is split into shards, each with its own lock and LRU list, so
 * that threads checking different names rarely meet on a lock.
 */
#include "resolve.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SHARDS_MAX 16

typedef struct centry {
  char *name;
  size_t len;
  uint64_t hash;
  struct centry *hnext;
  struct centry *prev, *next;  /* LRU: head is most recent */
  egress__dns_result_t result; /* OK or NO_SUCH_HOST */
  const char *detail;
  egress__ip_t *ips;
  int32_t *ttls;
  size_t n;
  char *chain; /* the answer's CNAME chain (owned) */
  size_t chain_len;
  double expires_ms;
} centry_t;

/* One lookup in progress and everyone who waits for its answer: blocking
 * threads on the condition variable, loops' checks in the waiter list. */
struct egress__flight {
  char *name;
  size_t len;
  uint64_t hash;
  struct egress__flight *next;
  struct shard *shard; /* NULL: a flight of one loop's own, in no table */
  pthread_cond_t done_cond;
  bool done;
  unsigned refs;           /* the lookup + every waiter */
  egress__answer_t answer; /* the lookup's answer, for the waiters */
  egress_status_t status;
  egress__waiter_t *waiters; /* loops' checks, until the answer is in */
};
typedef struct egress__flight flight_t;

typedef struct shard {
  pthread_mutex_t lock;
  centry_t **buckets;
  size_t nbuckets; /* power of two */
  size_t count, max;
  centry_t *head, *tail;
  flight_t *flights;
  /* Bumped whenever an entry leaves the shard (eviction, replacement,
   * expiry): per-thread copies made under an older epoch are stale.  Kept
   * off the lock's cache line: every front-cache hit reads it. */
  _Alignas(64) atomic_ullong epoch;
  char pad[64 - sizeof(atomic_ullong)];
} shard_t;

struct egress__cache {
  uint64_t id; /* tags per-thread copies; never reused */
  shard_t shards[SHARDS_MAX];
  size_t nshards;
  uint32_t min_ttl, max_ttl, neg_ttl;
};

static atomic_ullong next_cache_id = 1;

/* TTLs are whole seconds: the coarse clock is precise enough and costs a
 * fraction of the fine one on the hot path. */
static double now_ms(void) { return egress__mono_ms(true); }

egress_status_t egress__cache_new(const egress_options_t *o, egress__cache_t **out) {
  *out = NULL;
  if (!o || o->cache_max == 0) return EGRESS_OK; /* caching disabled */
  egress__cache_t *c = egress__calloc(1, sizeof(*c));
  if (!c) return EGRESS_ENOMEM;
  c->id = atomic_fetch_add(&next_cache_id, 1);
  c->min_ttl = o->cache_min_ttl;
  c->max_ttl = o->cache_max_ttl;
  c->neg_ttl = o->cache_neg_ttl;
  /* Small caches keep one shard so that the LRU bound is exact. */
  c->nshards = o->cache_max >= 1024 ? SHARDS_MAX : 1;
  for (size_t i = 0; i < c->nshards; i++) {
    shard_t *s = &c->shards[i];
    s->max = (o->cache_max + c->nshards - 1) / c->nshards;
    s->nbuckets = 64;
    while (s->nbuckets < s->max && s->nbuckets < (1u << 20)) s->nbuckets <<= 1;
    s->buckets = egress__calloc(s->nbuckets, sizeof(*s->buckets));
    if (!s->buckets) {
      c->nshards = i;
      egress__cache_free(c);
      return EGRESS_ENOMEM;
    }
    pthread_mutex_init(&s->lock, NULL);
  }
  *out = c;
  return EGRESS_OK;
}

static void entry_free(centry_t *e) {
  egress__free(e->name);
  egress__free(e->ips);
  egress__free(e->ttls);
  egress__free(e->chain);
  egress__free(e);
}

void egress__cache_free(egress__cache_t *c) {
  if (!c) return;
  for (size_t i = 0; i < c->nshards; i++) {
    shard_t *s = &c->shards[i];
    for (centry_t *e = s->head, *next; e; e = next) {
      next = e->next;
      entry_free(e);
    }
    egress__free(s->buckets);
    pthread_mutex_destroy(&s->lock);
  }
  egress__free(c);
}

static void lru_unlink(shard_t *s, centry_t *e) {
  if (e->prev)
    e->prev->next = e->next;
  else
    s->head = e->next;
  if (e->next)
    e->next->prev = e->prev;
  else
    s->tail = e->prev;
  e->prev = e->next = NULL;
}

static void lru_push_front(shard_t *s, centry_t *e) {
  e->prev = NULL;
  e->next = s->head;
  if (s->head) s->head->prev = e;
  s->head = e;
  if (!s->tail) s->tail = e;
}

static centry_t **bucket_of(shard_t *s, uint64_t hash) { return &s->buckets[hash & (s->nbuckets - 1)]; }

static void remove_entry(shard_t *s, centry_t *e) {
  for (centry_t **pp = bucket_of(s, e->hash); *pp; pp = &(*pp)->hnext) {
    if (*pp == e) {
      *pp = e->hnext;
      break;
    }
  }
  lru_unlink(s, e);
  s->count--;
  entry_free(e);
  atomic_fetch_add_explicit(&s->epoch, 1, memory_order_release);
}

static centry_t *find_entry(shard_t *s, const char *name, size_t len, uint64_t hash) {
  for (centry_t *e = *bucket_of(s, hash); e; e = e->hnext)
    if (e->hash == hash && e->len == len && !memcmp(e->name, name, len)) return e;
  return NULL;
}

/* What a copy of an answer is made from: an answer, a cache entry or a
 * front-cache entry. */
typedef struct answer_src {
  egress__dns_result_t result;
  const char *detail;
  const egress__ip_t *ips;
  const int32_t *ttls;
  size_t n;
  const char *chain;
  size_t chain_len;
} answer_src_t;

/* Copy an answer; small ones into dst's inline storage unless it must live
 * on the heap (cache entries).  The chain goes with the addresses: a hit
 * must decide as the lookup did. */
static egress_status_t copy_answer_to(egress__answer_t *dst, const answer_src_t *src, bool heap) {
  const egress__ip_t *ips = src->ips;
  const int32_t *ttls = src->ttls;
  size_t n = src->n;
  egress__answer_reset(dst);
  dst->result = src->result;
  dst->detail = src->detail;
  if (src->chain_len) {
    dst->chain = src->chain_len <= sizeof dst->inline_chain && !heap ? dst->inline_chain
                                                                     : egress__malloc(src->chain_len);
    if (!dst->chain) {
      dst->result = EGRESS__DNS_NOMEM;
      return EGRESS_ENOMEM;
    }
    memcpy(dst->chain, src->chain, src->chain_len);
    dst->chain_len = src->chain_len;
  }
  if (n && n <= EGRESS__ANSWER_INLINE && !heap) {
    dst->ips = dst->inline_ips;
    dst->ttls = dst->inline_ttls;
    memcpy(dst->ips, ips, n * sizeof(*ips));
    memcpy(dst->ttls, ttls, n * sizeof(*ttls));
    dst->n = n;
  } else if (n) {
    dst->ips = egress__malloc(n * sizeof(*ips));
    dst->ttls = egress__malloc(n * sizeof(*ttls));
    if (!dst->ips || !dst->ttls) {
      egress__answer_clear(dst);
      dst->result = EGRESS__DNS_NOMEM;
      return EGRESS_ENOMEM;
    }
    memcpy(dst->ips, ips, n * sizeof(*ips));
    memcpy(dst->ttls, ttls, n * sizeof(*ttls));
    dst->n = n;
  }
  return EGRESS_OK;
}

static egress_status_t copy_answer(egress__answer_t *dst, const answer_src_t *src) {
  return copy_answer_to(dst, src, false);
}

static answer_src_t src_of_answer(const egress__answer_t *a) {
  return (answer_src_t){ a->result, a->detail, a->ips, a->ttls, a->n, a->chain, a->chain_len };
}

static answer_src_t src_of_entry(const centry_t *e) {
  return (answer_src_t){ e->result, e->detail, e->ips, e->ttls, e->n, e->chain, e->chain_len };
}

/* Remaining TTL of a cached answer, so callers and events see what is left. */
static void age_ttls(egress__answer_t *a, double expires_ms, double now) {
  int32_t left = (int32_t)((expires_ms - now) / 1000.0);
  for (size_t i = 0; i < a->n; i++)
    if (a->ttls[i] > left) a->ttls[i] = left < 0 ? 0 : left;
}

static void insert_answer(egress__cache_t *c, shard_t *s, const char *name, size_t len, uint64_t hash,
                          const egress__answer_t *a, double now) {
  uint32_t ttl;
  if (a->result == EGRESS__DNS_NO_SUCH_HOST) {
    ttl = c->neg_ttl;
  } else {
    int64_t min = INT32_MAX;
    for (size_t i = 0; i < a->n; i++)
      if (a->ttls[i] < min) min = a->ttls[i] < 0 ? 0 : a->ttls[i];
    ttl = (uint32_t)min;
    if (ttl < c->min_ttl) ttl = c->min_ttl;
    if (ttl > c->max_ttl) ttl = c->max_ttl;
  }
  if (ttl == 0 || s->max == 0) return;
  centry_t *old = find_entry(s, name, len, hash);
  if (old) remove_entry(s, old);
  centry_t *e = egress__calloc(1, sizeof(*e));
  if (!e) return; /* not caching is always safe */
  e->name = egress__strndup(name, len);
  egress__answer_t copy;
  answer_src_t src = src_of_answer(a);
  egress__answer_reset(&copy);
  if (!e->name || copy_answer_to(&copy, &src, true) != EGRESS_OK) {
    egress__answer_clear(&copy);
    entry_free(e);
    return;
  }
  e->len = len;
  e->hash = hash;
  e->result = copy.result;
  e->detail = copy.detail;
  e->ips = copy.ips;
  e->ttls = copy.ttls;
  e->n = copy.n;
  e->chain = copy.chain;
  e->chain_len = copy.chain_len;
  e->expires_ms = now + (double)ttl * 1000.0;
  centry_t **b = bucket_of(s, hash);
  e->hnext = *b;
  *b = e;
  lru_push_front(s, e);
  s->count++;
  while (s->count > s->max && s->tail) remove_entry(s, s->tail);
}

static void flight_release(flight_t *f) {
  /* Called with the shard lock held (if the flight is in one). */
  if (--f->refs) return;
  egress__answer_clear(&f->answer);
  pthread_cond_destroy(&f->done_cond);
  egress__free(f->name);
  egress__free(f);
}

static void flight_lock(flight_t *f) {
  if (f->shard) pthread_mutex_lock(&f->shard->lock);
}

static void flight_unlock(flight_t *f) {
  if (f->shard) pthread_mutex_unlock(&f->shard->lock);
}

/* Drop a reference and the lock flight_lock() took: the flight may be gone
 * after the release, so its shard is read first. */
static void flight_release_unlock(flight_t *f) {
  shard_t *s = f->shard;
  flight_release(f);
  if (s) pthread_mutex_unlock(&s->lock);
}

/* A new flight for @p name with one reference (its lookup's), in @p s's
 * list when @p s is given (its lock held).  NULL when out of memory. */
static flight_t *flight_new(shard_t *s, const char *name, size_t len, uint64_t hash) {
  flight_t *f = egress__calloc(1, sizeof(*f));
  char *fname = f ? egress__strndup(name, len) : NULL;
  if (!f || !fname) {
    egress__free(f);
    return NULL;
  }
  f->name = fname;
  f->len = len;
  f->hash = hash;
  f->refs = 1;
  f->shard = s;
  /* Blocking joiners wait against the monotonic clock (their deadline is
   * a time-out, not a time of day). */
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&f->done_cond, &ca);
  pthread_condattr_destroy(&ca);
  if (s) {
    f->next = s->flights;
    s->flights = f;
  }
  return f;
}

static flight_t *find_flight(shard_t *s, const char *name, size_t len, uint64_t hash) {
  for (flight_t *f = s->flights; f; f = f->next)
    if (f->hash == hash && f->len == len && !memcmp(f->name, name, len)) return f;
  return NULL;
}

/*
 * Per-thread front cache.  A hit in the shared cache takes the shard lock
 * and relinks the LRU list: two threads checking the same name would pass
 * that cache line back and forth on every check.  Each thread therefore
 * keeps a small copy of the answers it used last, valid while the answer's
 * TTL lasts and the shard's epoch says the shared entry is still there (so
 * the LRU bound and replacements keep their meaning).
 *
 * Four-way set associative: with two ways, three busy names landing in one
 * pair kept evicting each other, and every such check went back to the
 * shard lock (measured: one check in twenty with 64 names; that lock
 * traffic alone cost two threads a tenth of their scaling).  The tags of a
 * set share one cache line, so a lookup reads one line before the entry.
 */
#define FRONT_WAYS 4
#define FRONT_SETS 64

/* Line-aligned, what a hit reads first (the header, then the name) first. */
typedef struct front_entry {
  _Alignas(64) uint64_t cache_id; /* 0: empty; the hash is the set's tag */
  uint64_t epoch;
  double expires_ms;
  size_t len;
  egress__dns_result_t result;
  const char *detail;
  size_t n;
  char name[EGRESS__NAME_MAX + 1];
  egress__ip_t ips[EGRESS__ANSWER_INLINE];
  int32_t ttls[EGRESS__ANSWER_INLINE];
  size_t chain_len;
  char chain[EGRESS__CHAIN_INLINE];
} front_entry_t;

typedef struct front_table {
  uint64_t tags[FRONT_SETS][FRONT_WAYS]; /* the entry's hash, 0: empty */
  uint8_t victim[FRONT_SETS];            /* next way to replace (round robin) */
  front_entry_t entries[FRONT_SETS][FRONT_WAYS];
} front_table_t;

static _Thread_local front_table_t *front;
static _Thread_local unsigned long front_hits;

unsigned long egress__cache_front_hits(void) { return front_hits; }
static pthread_key_t front_key;
static pthread_once_t front_once = PTHREAD_ONCE_INIT;

static void front_free(void *p) { egress__free(p); }
static void front_key_init(void) { pthread_key_create(&front_key, front_free); }

static front_table_t *front_table(void) {
  if (front) return front;
  /* This memory belongs to the thread, not to any checker, and is released
   * by the key's destructor at thread exit.  Without it a check goes to the
   * shared cache, which is slower but still correct. */
  pthread_once(&front_once, front_key_init);
  front = egress__aligned_calloc(64, sizeof(*front));
  if (front) pthread_setspecific(front_key, front);
  return front;
}

/* A hash of 0 marks an empty way; such a name simply is not kept here. */
static const front_entry_t *front_get(const egress__cache_t *c, const shard_t *s, const char *name,
                                      size_t len, uint64_t hash, double now) {
  if (!front || !hash) return NULL;
  size_t set = (size_t)(hash % FRONT_SETS);
  for (int way = 0; way < FRONT_WAYS; way++) {
    if (front->tags[set][way] != hash) continue;
    const front_entry_t *f = &front->entries[set][way];
    if (f->cache_id != c->id || f->len != len || f->expires_ms <= now || memcmp(f->name, name, len)) continue;
    if (f->epoch != atomic_load_explicit(&s->epoch, memory_order_acquire)) return NULL;
    return f;
  }
  return NULL;
}

/* Called with the shard lock held, right after a hit or an insert. */
static void front_put(const egress__cache_t *c, const shard_t *s, const centry_t *e) {
  /* Answers too big for a front entry stay behind the shard lock; a chain
   * is never dropped to make one fit. */
  if (e->n > EGRESS__ANSWER_INLINE || e->chain_len > EGRESS__CHAIN_INLINE || !e->hash || !front_table())
    return;
  size_t set = (size_t)(e->hash % FRONT_SETS);
  int way = -1;
  /* The same name of the same cache first, then an empty way, then the
   * set's next victim. */
  for (int w = 0; w < FRONT_WAYS && way < 0; w++)
    if (front->tags[set][w] == e->hash && front->entries[set][w].cache_id == c->id &&
        front->entries[set][w].len == e->len && !memcmp(front->entries[set][w].name, e->name, e->len))
      way = w;
  for (int w = 0; w < FRONT_WAYS && way < 0; w++)
    if (!front->tags[set][w]) way = w;
  if (way < 0) way = front->victim[set]++ % FRONT_WAYS;
  front_entry_t *f = &front->entries[set][way];
  front->tags[set][way] = e->hash;
  f->cache_id = c->id;
  f->epoch = atomic_load_explicit(&s->epoch, memory_order_relaxed);
  f->expires_ms = e->expires_ms;
  f->len = e->len;
  f->result = e->result;
  f->detail = e->detail;
  f->n = e->n;
  if (e->n) { /* a negative answer has no arrays: memcpy from NULL is UB */
    memcpy(f->ips, e->ips, e->n * sizeof(*e->ips));
    memcpy(f->ttls, e->ttls, e->n * sizeof(*e->ttls));
  }
  f->chain_len = e->chain_len;
  if (e->chain_len) memcpy(f->chain, e->chain, e->chain_len);
  memcpy(f->name, e->name, e->len);
}

static shard_t *shard_of(egress__cache_t *c, uint64_t hash) { return &c->shards[(hash >> 40) % c->nshards]; }

bool egress__cache_peek(egress__cache_t *c, const char *name, size_t len, uint64_t hash,
                        egress__answer_t *ans, egress__cache_stats_t *stats, egress_status_t *st) {
  if (!c) return false;
  if (!hash) hash = egress__name_hash(name, len);
  shard_t *s = shard_of(c, hash);
  double now = now_ms();
  const front_entry_t *fe = front_get(c, s, name, len, hash, now);
  if (!fe) return false;
  front_hits++;
  egress__answer_reset(ans);
  answer_src_t src = { fe->result, fe->detail, fe->ips, fe->ttls, fe->n, fe->chain, fe->chain_len };
  *st = copy_answer(ans, &src);
  if (*st == EGRESS_OK) age_ttls(ans, fe->expires_ms, now);
  ans->cached = true;
  stats->hits++;
  return true;
}

/* The shared table's fresh answer for @p name into @p ans (a hit), or false
 * (a miss: a stale entry is dropped).  Shard lock held. */
static bool shard_hit(egress__cache_t *c, shard_t *s, const char *name, size_t len, uint64_t hash,
                      egress__answer_t *ans, egress__cache_stats_t *stats, egress_status_t *st) {
  double now = now_ms();
  centry_t *e = find_entry(s, name, len, hash);
  if (e && e->expires_ms > now) {
    lru_unlink(s, e);
    lru_push_front(s, e);
    front_put(c, s, e);
    answer_src_t src = src_of_entry(e);
    *st = copy_answer(ans, &src);
    if (*st == EGRESS_OK) age_ttls(ans, e->expires_ms, now);
    ans->cached = true;
    stats->hits++;
    return true;
  }
  if (e) remove_entry(s, e);
  stats->misses++;
  return false;
}

void egress__cache_publish(egress__cache_t *c, egress__flight_t *f, egress_status_t st,
                           const egress__answer_t *ans) {
  shard_t *s = f->shard;
  flight_lock(f);
  if (s) {
    for (flight_t **pp = &s->flights; *pp; pp = &(*pp)->next) {
      if (*pp == f) {
        *pp = f->next;
        break;
      }
    }
  }
  f->status = st;
  if (st == EGRESS_OK) {
    answer_src_t src = src_of_answer(ans);
    if (copy_answer(&f->answer, &src) != EGRESS_OK) f->status = EGRESS_ENOMEM;
    f->answer.ms = ans->ms;
    if (s && (ans->result == EGRESS__DNS_OK || ans->result == EGRESS__DNS_NO_SUCH_HOST))
      insert_answer(c, s, f->name, f->len, f->hash, ans, now_ms());
  }
  f->done = true;
  pthread_cond_broadcast(&f->done_cond);
  egress__waiter_t *w = f->waiters;
  f->waiters = NULL;
  while (w) {
    egress__waiter_t *next = w->next;
    w->next = NULL;
    w->ready(w);
    w = next;
  }
  flight_release_unlock(f);
}

egress_status_t egress__cache_fetch(egress__cache_t *c, egress__resolver_t *r, const char *name, size_t len,
                                    uint64_t hash, egress__answer_t *ans, egress__cache_stats_t *stats) {
  egress__answer_reset(ans);
  if (!c) {
    stats->misses++;
    stats->queries++;
    return egress__resolve(r, name, ans);
  }
  if (!hash) hash = egress__name_hash(name, len);
  shard_t *s = shard_of(c, hash);
  egress_status_t st;

  pthread_mutex_lock(&s->lock);
  if (shard_hit(c, s, name, len, hash, ans, stats, &st)) {
    pthread_mutex_unlock(&s->lock);
    return st;
  }
  flight_t *f = find_flight(s, name, len, hash);
  if (f) {
    /* Someone is already asking: wait for their answer, but no longer than
     * this check's own time-out.  The lookup may be a loop's, and that loop
     * may be stalled, or be driven by this very thread (a blocking check
     * made on a loop's thread): then the answer can never come in time, and
     * the check fails closed at its deadline, as its own lookup would. */
    struct timespec deadline;
    uint32_t budget = r ? egress__resolver_timeout_ms(r) : 2000u;
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_sec += (time_t)(budget / 1000u);
    deadline.tv_nsec += (long)(budget % 1000u) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
      deadline.tv_sec++;
      deadline.tv_nsec -= 1000000000L;
    }
    double start = now_ms();
    f->refs++;
    int rc = 0;
    while (!f->done && rc != ETIMEDOUT) rc = pthread_cond_timedwait(&f->done_cond, &s->lock, &deadline);
    if (f->done) {
      st = f->status;
      if (st == EGRESS_OK) {
        answer_src_t src = src_of_answer(&f->answer);
        st = copy_answer(ans, &src);
        ans->ms = f->answer.ms;
      }
      ans->cached = true; /* shared, not our own query */
    } else {
      st = EGRESS_OK;
      ans->result = EGRESS__DNS_UNAVAILABLE;
      ans->detail = "timed out waiting for the same name's lookup in progress";
      ans->ms = now_ms() - start;
    }
    flight_release(f);
    pthread_mutex_unlock(&s->lock);
    return st;
  }
  f = flight_new(s, name, len, hash);
  pthread_mutex_unlock(&s->lock);
  stats->queries++;
  if (!f) /* No single flight without memory: resolve alone, which is still correct. */
    return egress__resolve(r, name, ans);
  st = egress__resolve(r, name, ans);
  egress__cache_publish(c, f, st, ans);
  return st;
}

egress_status_t egress__cache_join(egress__cache_t *c, const char *name, size_t len, uint64_t hash,
                                   egress__waiter_t *w, egress__answer_t *ans, egress__cache_stats_t *stats,
                                   egress__flight_t **lead) {
  egress_status_t st = EGRESS_OK;
  shard_t *s = NULL;
  *lead = NULL;
  w->next = NULL;
  w->flight = NULL;
  w->leader = false;
  if (c) {
    if (!hash) hash = egress__name_hash(name, len);
    s = shard_of(c, hash);
    pthread_mutex_lock(&s->lock);
    if (shard_hit(c, s, name, len, hash, ans, stats, &st)) {
      pthread_mutex_unlock(&s->lock);
      return st; /* answered: w waits for nothing */
    }
    flight_t *f = find_flight(s, name, len, hash);
    if (f) {
      f->refs++;
      w->flight = f;
      w->next = f->waiters;
      f->waiters = w;
      pthread_mutex_unlock(&s->lock);
      return EGRESS_OK;
    }
  } else {
    stats->misses++;
  }
  flight_t *f = flight_new(s, name, len, hash);
  if (!f && s) f = flight_new(NULL, name, len, hash); /* alone, as the blocking path */
  if (f) {
    f->refs++; /* the waiter's, beside the lookup's */
    w->flight = f;
    w->leader = true;
    f->waiters = w;
    stats->queries++;
  }
  if (s) pthread_mutex_unlock(&s->lock);
  if (!f) return EGRESS_ENOMEM;
  *lead = f;
  return EGRESS_OK;
}

egress_status_t egress__cache_take(egress__waiter_t *w, egress__answer_t *ans) {
  flight_t *f = w->flight;
  egress__answer_reset(ans);
  flight_lock(f);
  egress_status_t st = f->status;
  if (st == EGRESS_OK) {
    answer_src_t src = src_of_answer(&f->answer);
    st = copy_answer(ans, &src);
    ans->ms = f->answer.ms;
  }
  ans->cached = !w->leader;
  flight_release_unlock(f);
  w->flight = NULL;
  return st;
}

bool egress__cache_leave(egress__waiter_t *w) {
  flight_t *f = w->flight;
  flight_lock(f);
  if (f->done) {
    flight_unlock(f);
    return false;
  }
  for (egress__waiter_t **pp = &f->waiters; *pp; pp = &(*pp)->next) {
    if (*pp == w) {
      *pp = w->next;
      break;
    }
  }
  flight_release_unlock(f);
  w->flight = NULL;
  return true;
}

void egress__cache_drop(egress__waiter_t *w) {
  flight_t *f = w->flight;
  flight_lock(f);
  flight_release_unlock(f);
  w->flight = NULL;
}
