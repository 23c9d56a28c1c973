/*
 * Compiled name matcher.  Exact names and wildcard suffixes live in hash
 * tables so that a check costs one lookup per label of the host, whatever
 * the number of rules; "*" rules are a short list; regex rules are tried only
 * when no cheaper rule allows the destination.
 */
#include "cidr.h"

#include <string.h>

typedef struct name_bucket {
  const char *key; /* borrowed from the rule */
  size_t klen;
  uint64_t hash;
  const egress__rule_t **rules; /* in policy order */
  size_t nrules;
} name_bucket_t;

typedef struct name_map {
  name_bucket_t *slots;
  size_t nslots; /* power of two, or 0 */
  size_t used;
  /* One bit per hash value class, set for every key: most probes of a
   * check are for suffixes no rule names, and this small bitmap answers
   * them without touching the (large) slot array. */
  uint64_t *filter;
  size_t filter_mask; /* bits - 1 */
} name_map_t;

struct egress__matcher {
  name_map_t exact, wild1, wildn;
  const egress__rule_t **any;
  size_t nany;
  const egress__rule_t **regex;
  size_t nregex;
  egress__cidrset_t *cidrs;
};

/*
 * Names hash label by label from the right: the hash of every suffix that
 * starts after a '.' falls out of one pass, which is what the wildcard
 * lookups need, and each label is read a word at a time.  Keys come from
 * the policy, so collisions cannot be chosen by whoever names the host.
 */
#define HASH_SEED 0x243f6a8885a308d3ULL

static uint64_t mix(uint64_t x) {
  x *= 0xff51afd7ed558ccdULL;
  return x ^ (x >> 32);
}

static uint64_t label_hash(const char *s, size_t n) {
  uint64_t h = n * 0x9e3779b97f4a7c15ULL;
  while (n >= 8) {
    uint64_t w;
    memcpy(&w, s, 8);
    h = mix(h ^ w);
    s += 8;
    n -= 8;
  }
  if (n) {
    /* A byte loop for the tail: a variable-length memcpy is a call. */
    uint64_t w = 0;
    for (size_t i = 0; i < n; i++) w |= (uint64_t)(unsigned char)s[i] << (8 * i);
    h = mix(h ^ w);
  }
  return h;
}

static uint64_t hash_combine(uint64_t suffix, uint64_t label) {
  return mix(suffix ^ (label + 0x632be59bd9b4e019ULL));
}

uint64_t egress__name_hash(const char *s, size_t len) {
  uint64_t h = HASH_SEED;
  size_t end = len;
  for (;;) {
    size_t start = end;
    while (start > 0 && s[start - 1] != '.') start--;
    h = hash_combine(h, label_hash(s + start, end - start));
    if (start == 0) return h;
    end = start - 1;
  }
}

static name_bucket_t *map_find(const name_map_t *map, const char *key, size_t klen, uint64_t hash) {
  size_t mask = map->nslots - 1;
  for (size_t i = (size_t)(hash ^ (hash >> 32)) & mask;; i = (i + 1) & mask) {
    name_bucket_t *b = &map->slots[i];
    if (!b->key) return b;
    if (b->hash == hash && b->klen == klen && !memcmp(b->key, key, klen)) return b;
  }
}

static size_t filter_bit(const name_map_t *map, uint64_t hash) {
  return (size_t)(hash >> 40) & map->filter_mask;
}

static const name_bucket_t *map_get(const name_map_t *map, const char *key, size_t klen, uint64_t hash) {
  if (!map->nslots) return NULL;
  if (map->filter) {
    size_t bit = filter_bit(map, hash);
    if (!(map->filter[bit / 64] & (1ULL << (bit % 64)))) return NULL;
  }
  const name_bucket_t *b = map_find(map, key, klen, hash);
  return b->key ? b : NULL;
}

static egress_status_t map_grow(name_map_t *map) {
  size_t nslots = map->nslots ? map->nslots * 2 : 16;
  name_bucket_t *slots = egress__calloc(nslots, sizeof(*slots));
  if (!slots) return EGRESS_ENOMEM;
  name_map_t grown = { .slots = slots, .nslots = nslots, .used = map->used };
  for (size_t i = 0; i < map->nslots; i++) {
    const name_bucket_t *b = &map->slots[i];
    if (b->key) *map_find(&grown, b->key, b->klen, b->hash) = *b;
  }
  egress__free(map->slots);
  *map = grown;
  return EGRESS_OK;
}

static egress_status_t map_add(name_map_t *map, const egress__rule_t *rule) {
  if ((map->used + 1) * 4 > map->nslots * 3 && map_grow(map) != EGRESS_OK) return EGRESS_ENOMEM;
  uint64_t hash = egress__name_hash(rule->name, rule->name_len);
  name_bucket_t *b = map_find(map, rule->name, rule->name_len, hash);
  const egress__rule_t **rules = egress__realloc(b->rules, (b->nrules + 1) * sizeof(*rules));
  if (!rules) return EGRESS_ENOMEM;
  if (!b->key) {
    b->key = rule->name;
    b->klen = rule->name_len;
    b->hash = hash;
    map->used++;
  }
  rules[b->nrules++] = rule;
  b->rules = rules;
  return EGRESS_OK;
}

static void map_free(name_map_t *map) {
  for (size_t i = 0; i < map->nslots; i++) egress__free(map->slots[i].rules);
  egress__free(map->slots);
  egress__free(map->filter);
}

/* Built once the map is complete: 16 bits per key keeps false positives
 * near 6% while the bitmap stays small enough for the L1/L2 cache. */
static egress_status_t map_seal(name_map_t *map) {
  if (!map->used) return EGRESS_OK;
  size_t bits = 1024;
  while (bits < map->used * 16 && bits < ((size_t)1 << 23)) bits <<= 1;
  map->filter = egress__calloc(bits / 64, sizeof(uint64_t));
  if (!map->filter) return EGRESS_ENOMEM;
  map->filter_mask = bits - 1;
  for (size_t i = 0; i < map->nslots; i++) {
    if (!map->slots[i].key) continue;
    size_t bit = filter_bit(map, map->slots[i].hash);
    map->filter[bit / 64] |= 1ULL << (bit % 64);
  }
  return EGRESS_OK;
}

static egress_status_t list_add(const egress__rule_t ***list, size_t *n, const egress__rule_t *rule) {
  const egress__rule_t **grown = egress__realloc(*list, (*n + 1) * sizeof(*grown));
  if (!grown) return EGRESS_ENOMEM;
  grown[(*n)++] = rule;
  *list = grown;
  return EGRESS_OK;
}

void egress__matcher_free(egress__matcher_t *m) {
  if (!m) return;
  map_free(&m->exact);
  map_free(&m->wild1);
  map_free(&m->wildn);
  egress__free(m->any);
  egress__free(m->regex);
  egress__cidrset_free(m->cidrs);
  egress__free(m);
}

egress_status_t egress__matcher_build(const egress__rule_t *rules, size_t n, egress__matcher_t **out) {
  egress_status_t st = EGRESS_ENOMEM;
  egress__matcher_t *m = egress__calloc(1, sizeof(*m));
  *out = NULL;
  if (!m) return EGRESS_ENOMEM;
  if ((st = egress__cidrset_new(&m->cidrs)) != EGRESS_OK) goto fail;
  for (size_t i = 0; i < n; i++) {
    const egress__rule_t *r = &rules[i];
    switch (r->kind) {
      case EGRESS__RULE_EXACT: st = map_add(&m->exact, r); break;
      case EGRESS__RULE_WILD1: st = map_add(&m->wild1, r); break;
      case EGRESS__RULE_WILDN: st = map_add(&m->wildn, r); break;
      case EGRESS__RULE_ANY: st = list_add(&m->any, &m->nany, r); break;
      case EGRESS__RULE_REGEX: st = list_add(&m->regex, &m->nregex, r); break;
      case EGRESS__RULE_CIDR: st = egress__cidrset_add(m->cidrs, r); break;
      default: st = EGRESS_EINTERNAL; break;
    }
    if (st != EGRESS_OK) goto fail;
  }
  if ((st = map_seal(&m->exact)) != EGRESS_OK || (st = map_seal(&m->wild1)) != EGRESS_OK ||
      (st = map_seal(&m->wildn)) != EGRESS_OK || (st = egress__cidrset_seal(m->cidrs)) != EGRESS_OK)
    goto fail;
  *out = m;
  return EGRESS_OK;
fail:
  egress__matcher_free(m);
  return st;
}

static bool port_in(const egress__rule_t *r, uint16_t port) {
  return port >= r->port_lo && port <= r->port_hi;
}

static void fold(egress__match_t *res, const egress__rule_t *r, uint16_t port) {
  if (!res->any || r->index < res->any->index) res->any = r;
  if (port_in(r, port) && (!res->allowing || r->index < res->allowing->index)) res->allowing = r;
}

static void fold_bucket(egress__match_t *res, const name_bucket_t *b, uint16_t port) {
  if (!b) return;
  for (size_t i = 0; i < b->nrules; i++) fold(res, b->rules[i], port);
}

void egress__match_name(const egress__matcher_t *m, const char *name, size_t len, uint16_t port,
                        egress__match_t *res) {
  res->allowing = res->any = NULL;
  res->name_hash = 0;
  if (!m || !len) return;

  if (!m->exact.used && !m->wild1.used && !m->wildn.used && !m->nany && !m->nregex) return;

  /* One right-to-left pass over the labels hashes every suffix: each
   * suffix after a '.' has at least one label in front (the **. lookups);
   * the longest one is the *. lookup; the whole name is the exact lookup. */
  uint64_t h = HASH_SEED, first_suffix_hash = 0;
  size_t first_dot = SIZE_MAX;
  bool wildn = m->wildn.used != 0;
  size_t end = len;
  for (;;) {
    size_t start = end;
    while (start > 0 && name[start - 1] != '.') start--;
    if (end < len) {
      if (wildn) fold_bucket(res, map_get(&m->wildn, name + end + 1, len - end - 1, h), port);
      first_dot = end;
      first_suffix_hash = h;
    }
    h = hash_combine(h, label_hash(name + start, end - start));
    if (start == 0) break;
    end = start - 1;
  }
  res->name_hash = h;
  fold_bucket(res, map_get(&m->exact, name, len, h), port);
  if (first_dot != SIZE_MAX && m->wild1.used)
    fold_bucket(res, map_get(&m->wild1, name + first_dot + 1, len - first_dot - 1, first_suffix_hash), port);

  for (size_t i = 0; i < m->nany; i++) fold(res, m->any[i], port);

  /* Regexes cost the most: only when nothing cheaper allowed this port. */
  if (res->allowing) return;
  for (size_t i = 0; i < m->nregex; i++) {
    const egress__rule_t *r = m->regex[i];
    if (res->any && !port_in(r, port) && r->index > res->any->index) continue;
    if (egress__regex_match(r, name, len)) fold(res, r, port);
    if (res->allowing) return;
  }
}

void egress__match_ip(const egress__matcher_t *m, const egress__ip_t *ip, uint16_t port, uint8_t min_len,
                      egress__match_t *res) {
  res->allowing = res->any = NULL;
  if (!m) return;
  egress__cidrset_match(m->cidrs, ip, port, min_len, res);
}

bool egress__name_in_wild1(const char *n, size_t len, const char *suffix, size_t sl) {
  const char *dot = memchr(n, '.', len);
  return dot && (size_t)(n + len - dot - 1) == sl && !memcmp(dot + 1, suffix, sl);
}

bool egress__name_in_wildn(const char *n, size_t len, const char *suffix, size_t sl) {
  return len > sl + 1 && n[len - sl - 1] == '.' && !memcmp(n + len - sl, suffix, sl);
}

bool egress__rule_matches_name(const egress__rule_t *r, const char *name, size_t len) {
  switch (r->kind) {
    case EGRESS__RULE_EXACT: return r->name_len == len && !memcmp(r->name, name, len);
    case EGRESS__RULE_WILD1: return egress__name_in_wild1(name, len, r->name, r->name_len);
    case EGRESS__RULE_WILDN: return egress__name_in_wildn(name, len, r->name, r->name_len);
    case EGRESS__RULE_ANY: return true;
    case EGRESS__RULE_REGEX: return egress__regex_match(r, name, len);
    default: return false;
  }
}
