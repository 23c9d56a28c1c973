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
/* Resolve through the cache (c may be NULL): a fresh cached answer, the
 * answer of a lookup another thread has in flight for the same name, or a
 * lookup of our own.  @p hash is egress__name_hash(name) or 0 (computed
 * here).  The answer is the caller's copy.  Thread-safe. */
egress_status_t egress__cache_resolve(egress__cache_t *c, egress__resolver_t *r, const char *name, size_t len,
                                      uint64_t hash, egress__answer_t *ans, egress__cache_stats_t *stats);

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
