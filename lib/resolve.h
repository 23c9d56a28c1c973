/* Resolver (resolve.c) and DNS cache (cache.c): private to the library. */
#ifndef EGRESS_RESOLVE_H
#define EGRESS_RESOLVE_H

#include "egress_private.h"

typedef enum egress__dns_result {
  EGRESS__DNS_OK = 0,
  EGRESS__DNS_NO_SUCH_HOST = 1, /* NXDOMAIN, no data, no address */
  EGRESS__DNS_UNAVAILABLE = 2,  /* timeout, SERVFAIL, REFUSED, unreachable, bad reply */
  EGRESS__DNS_NOMEM = 3
} egress__dns_result_t;

#define EGRESS__ANSWER_INLINE 8
/* Bytes of CNAME chain kept inside an answer (and a front-cache entry):
 * enough for the one or two CDN names most chains hold. */
#define EGRESS__CHAIN_INLINE 152

typedef struct egress__answer {
  egress__dns_result_t result;
  int ares_status;
  const char *detail; /* static text (ares_strerror) */
  egress__ip_t *ips;  /* owned */
  int32_t *ttls;      /* owned, parallel to ips */
  size_t n;
  double ms; /* time spent resolving */
  bool cached;
  /* The names of the CNAME records c-ares reported for the answer (owners
   * and targets, the queried name left out), lower case, no trailing dot,
   * each NUL-terminated, back to back, each once; the deny list's name
   * rules apply to every one.  Owned unless it is inline_chain. */
  char *chain;
  size_t chain_len; /* bytes of chain, NULs included; 0 when none */
  /* Small answers live here: no allocation for a cached check. */
  egress__ip_t inline_ips[EGRESS__ANSWER_INLINE];
  int32_t inline_ttls[EGRESS__ANSWER_INLINE];
  char inline_chain[EGRESS__CHAIN_INLINE];
} egress__answer_t;

typedef struct egress__resolver egress__resolver_t;

egress_status_t egress__resolver_new(const egress_options_t *opts, egress__resolver_t **out, char *errbuf,
                                     size_t errlen);
void egress__resolver_free(egress__resolver_t *r);
/* Resolve A and AAAA of @p name (canonical, no trailing dot), blocking for at
 * most the configured timeout.  Returns EGRESS_OK with ans->result set, or
 * EGRESS_ENOMEM.  Thread-safe. */
egress_status_t egress__resolve(egress__resolver_t *r, const char *name, egress__answer_t *ans);
void egress__answer_clear(egress__answer_t *ans);
/* "localhost" and names under it: answered by egress__resolve without DNS. */
bool egress__name_is_localhost(const char *name);

/* A c-ares channel configured as the resolver's blocking ones, whose
 * sockets a caller's loop watches: @p sock_cb hears of each socket opened
 * (and which readiness it needs) and closed (neither).  The channel is the
 * caller's (egress__channel_free); one thread uses it. */
typedef void (*egress__sock_cb)(void *arg, int fd, int readable, int writable);
egress_status_t egress__resolver_channel(const egress__resolver_t *r, egress__sock_cb sock_cb, void *sock_arg,
                                         void **channel);
/* Destroying a channel ends its lookups: their callbacks run inside. */
void egress__channel_free(void *channel);
/* Resolve @p name on @p channel; @p cb runs once (perhaps inside this call)
 * with the answer egress__resolve would give (ms: time from this call), and
 * may move it (the answer is cleared after).  The lookup's own deadline is
 * the caller's. */
typedef void (*egress__lookup_cb)(void *arg, egress_status_t st, egress__answer_t *ans);
void egress__resolve_start(const egress__resolver_t *r, void *channel, const char *name, egress__lookup_cb cb,
                           void *arg);
/* ms until the channel needs egress__channel_process(channel, -1, ...),
 * at most @p max_ms (-1: no bound); -1 when it waits for nothing. */
int egress__channel_timeout_ms(void *channel, int max_ms);
void egress__channel_process(void *channel, int fd, bool readable, bool writable);
uint32_t egress__resolver_timeout_ms(const egress__resolver_t *r);
/* The answer of a lookup whose deadline passed, as egress__resolve gives it. */
void egress__answer_timed_out(egress__answer_t *ans, double ms);
/* Reset an answer's header; the inline arrays are written before they are
 * read, so they are left alone (this runs on every cached check). */
static inline void egress__answer_reset(egress__answer_t *ans) {
  ans->result = EGRESS__DNS_OK;
  ans->ares_status = 0;
  ans->detail = NULL;
  ans->ips = NULL;
  ans->ttls = NULL;
  ans->n = 0;
  ans->ms = 0;
  ans->cached = false;
  ans->chain = NULL;
  ans->chain_len = 0;
}

/* cache.c */
typedef struct egress__cache egress__cache_t;
typedef struct egress__cache_stats {
  uint64_t hits, misses, queries;
} egress__cache_stats_t;

/* NULL cache (*out) when caching is disabled (cache_max == 0). */
egress_status_t egress__cache_new(const egress_options_t *o, egress__cache_t **out);
void egress__cache_free(egress__cache_t *c);
/* The thread's own copy of a fresh answer for @p name (no lock taken), or
 * false: then egress__cache_fetch or egress__cache_join, which look in the
 * shared table.  @p hash is egress__name_hash(name) or 0.  Thread-safe. */
bool egress__cache_peek(egress__cache_t *c, const char *name, size_t len, uint64_t hash,
                        egress__answer_t *ans, egress__cache_stats_t *stats, egress_status_t *st);
/* The blocking way (c may be NULL): a fresh cached answer, the answer of a
 * lookup already in flight for the same name (waited for), or a lookup of
 * our own.  The answer is the caller's copy.  Thread-safe. */
egress_status_t egress__cache_fetch(egress__cache_t *c, egress__resolver_t *r, const char *name, size_t len,
                                    uint64_t hash, egress__answer_t *ans, egress__cache_stats_t *stats);

/* The asynchronous way.  A loop's check waits for a flight (one lookup in
 * progress, shared by every blocking and asynchronous miss on its name)
 * as a waiter. */
typedef struct egress__flight egress__flight_t;
typedef struct egress__waiter egress__waiter_t;
struct egress__waiter {
  egress__waiter_t *next;
  egress__flight_t *flight; /* a reference, until take, leave or drop */
  bool leader;              /* the flight is its own query */
  /* The answer is in.  Runs once, with the flight's lock held, on the
   * thread that published (any thread): it must only hand the waiter to
   * its loop. */
  void (*ready)(egress__waiter_t *w);
};
/* A fresh cached answer into @p ans (w->flight stays NULL), or @p w joins
 * the flight for @p name, or a new one: then *lead is that flight, whose
 * lookup the caller starts and ends with egress__cache_publish.  c may be
 * NULL (a flight in no table).  EGRESS_ENOMEM: neither. */
egress_status_t egress__cache_join(egress__cache_t *c, const char *name, size_t len, uint64_t hash,
                                   egress__waiter_t *w, egress__answer_t *ans, egress__cache_stats_t *stats,
                                   egress__flight_t **lead);
/* A flight's lookup ended: cache the answer, wake every waiter, drop the
 * lookup's reference.  Any thread. */
void egress__cache_publish(egress__cache_t *c, egress__flight_t *f, egress_status_t st,
                           const egress__answer_t *ans);
/* After ready: the caller's copy of the answer; the reference is dropped. */
egress_status_t egress__cache_take(egress__waiter_t *w, egress__answer_t *ans);
/* Before the answer: stop waiting (true), or false when ready has run
 * (then the waiter's loop holds it: egress__cache_drop once it is out). */
bool egress__cache_leave(egress__waiter_t *w);
void egress__cache_drop(egress__waiter_t *w);

/* Answers this thread took from its own front copy (tests only). */
unsigned long egress__cache_front_hits(void);

/* Whether @p csv is a list the options promise to take: "IP[:PORT]" and
 * "[IPv6]:PORT" entries separated by single commas, every entry an address
 * in strict form, every port decimal 1-65535.  c-ares would otherwise
 * take forms we do not want to promise (" 53", "+53", empty entries).  On
 * false, *why is a static message and csv[*bad .. *bad + *bad_len) the
 * entry it is about. */
bool egress__dns_servers_valid(const char *csv, const char **why, size_t *bad, size_t *bad_len);

#endif
