/*
 * CIDR sets: one hash table per prefix length in use, keyed by the masked
 * address.  A lookup masks the address once per distinct prefix length, so
 * its cost is bounded by the number of distinct lengths (at most 33 or 129)
 * and does not grow with the number of rules.
 */
#include "cidr.h"

#include <string.h>

typedef struct cidr_bucket {
  uint8_t key[16];
  bool used;
  const egress__rule_t **rules; /* in policy order */
  size_t nrules;
} cidr_bucket_t;

typedef struct cidr_level {
  uint8_t len;
  cidr_bucket_t *slots;
  size_t nslots; /* power of two */
  size_t used;
  /* A bit per hash class, set for every prefix of the level (see
   * egress__cidrset_seal): most levels hold no prefix for a given address,
   * and the bitmap says so without touching the slots. */
  uint64_t *filter;
  size_t filter_mask;
} cidr_level_t;

struct egress__cidrset {
  cidr_level_t **levels[2]; /* [0] IPv4, [1] IPv6; sorted by len, longest first */
  size_t nlevels[2];
};

static void mask_bytes(const uint8_t *in, uint8_t len, uint8_t out[16]) {
  memset(out, 0, 16);
  size_t full = len / 8;
  memcpy(out, in, full);
  if (len % 8) out[full] = (uint8_t)(in[full] & (uint8_t)(0xff << (8 - len % 8)));
}

static uint64_t mix64(uint64_t x) {
  /* splitmix64's finalizer: every input bit reaches every output bit. */
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

/* The key is 16 bytes: hash it as two words, not byte by byte, since this
 * runs once per prefix length on every address check. */
static uint64_t hash_key(const uint8_t key[16], uint8_t len) {
  uint64_t a, b;
  memcpy(&a, key, 8);
  memcpy(&b, key + 8, 8);
  return mix64(a ^ mix64(b ^ len));
}

static cidr_bucket_t *level_find_h(const cidr_level_t *lv, const uint8_t key[16], uint64_t h) {
  size_t mask = lv->nslots - 1;
  for (size_t i = h & mask;; i = (i + 1) & mask) {
    cidr_bucket_t *b = &lv->slots[i];
    if (!b->used || !memcmp(b->key, key, 16)) return b;
  }
}

static cidr_bucket_t *level_find(const cidr_level_t *lv, const uint8_t key[16]) {
  return level_find_h(lv, key, hash_key(key, lv->len));
}

static size_t filter_bit(const cidr_level_t *lv, uint64_t h) { return (size_t)(h >> 40) & lv->filter_mask; }

egress_status_t egress__cidrset_seal(egress__cidrset_t *set) {
  for (int fam = 0; fam < 2; fam++) {
    for (size_t l = 0; l < set->nlevels[fam]; l++) {
      cidr_level_t *lv = set->levels[fam][l];
      size_t bits = 1024;
      while (bits < lv->used * 16 && bits < ((size_t)1 << 23)) bits <<= 1;
      lv->filter = egress__calloc(bits / 64, sizeof(uint64_t));
      if (!lv->filter) return EGRESS_ENOMEM;
      lv->filter_mask = bits - 1;
      for (size_t i = 0; i < lv->nslots; i++) {
        if (!lv->slots[i].used) continue;
        size_t bit = filter_bit(lv, hash_key(lv->slots[i].key, lv->len));
        lv->filter[bit / 64] |= 1ULL << (bit % 64);
      }
    }
  }
  return EGRESS_OK;
}

static egress_status_t level_grow(cidr_level_t *lv) {
  size_t nslots = lv->nslots ? lv->nslots * 2 : 8;
  cidr_bucket_t *slots = egress__calloc(nslots, sizeof(*slots));
  if (!slots) return EGRESS_ENOMEM;
  cidr_level_t grown = { .len = lv->len, .slots = slots, .nslots = nslots, .used = lv->used };
  for (size_t i = 0; i < lv->nslots; i++)
    if (lv->slots[i].used) *level_find(&grown, lv->slots[i].key) = lv->slots[i];
  egress__free(lv->slots);
  *lv = grown;
  return EGRESS_OK;
}

static cidr_level_t *get_level(egress__cidrset_t *set, int fam, uint8_t len) {
  for (size_t i = 0; i < set->nlevels[fam]; i++)
    if (set->levels[fam][i]->len == len) return set->levels[fam][i];
  cidr_level_t *lv = egress__calloc(1, sizeof(*lv));
  if (!lv) return NULL;
  cidr_level_t **grown = egress__realloc(set->levels[fam], (set->nlevels[fam] + 1) * sizeof(*grown));
  if (!grown) {
    egress__free(lv);
    return NULL;
  }
  set->levels[fam] = grown;
  lv->len = len;
  /* Keep levels sorted longest prefix first. */
  size_t pos = set->nlevels[fam];
  while (pos > 0 && grown[pos - 1]->len < len) {
    grown[pos] = grown[pos - 1];
    pos--;
  }
  grown[pos] = lv;
  set->nlevels[fam]++;
  return lv;
}

egress_status_t egress__cidrset_new(egress__cidrset_t **out) {
  *out = egress__calloc(1, sizeof(**out));
  return *out ? EGRESS_OK : EGRESS_ENOMEM;
}

egress_status_t egress__cidrset_add(egress__cidrset_t *set, const egress__rule_t *rule) {
  int fam = rule->cidr.addr.family == 6;
  cidr_level_t *lv = get_level(set, fam, rule->cidr.len);
  if (!lv) return EGRESS_ENOMEM;
  if ((lv->used + 1) * 4 > lv->nslots * 3 && level_grow(lv) != EGRESS_OK) return EGRESS_ENOMEM;
  uint8_t key[16];
  mask_bytes(rule->cidr.addr.bytes, rule->cidr.len, key);
  cidr_bucket_t *b = level_find(lv, key);
  const egress__rule_t **rules = egress__realloc(b->rules, (b->nrules + 1) * sizeof(*rules));
  if (!rules) return EGRESS_ENOMEM;
  if (!b->used) {
    memcpy(b->key, key, 16);
    b->used = true;
    lv->used++;
  }
  rules[b->nrules++] = rule;
  b->rules = rules;
  return EGRESS_OK;
}

void egress__cidrset_free(egress__cidrset_t *set) {
  if (!set) return;
  for (int fam = 0; fam < 2; fam++) {
    for (size_t l = 0; l < set->nlevels[fam]; l++) {
      cidr_level_t *lv = set->levels[fam][l];
      for (size_t i = 0; i < lv->nslots; i++) egress__free(lv->slots[i].rules);
      egress__free(lv->slots);
      egress__free(lv->filter);
      egress__free(lv);
    }
    egress__free(set->levels[fam]);
  }
  egress__free(set);
}

static bool port_in(const egress__rule_t *r, uint16_t port) {
  return port >= r->port_lo && port <= r->port_hi;
}

void egress__cidrset_match(const egress__cidrset_t *set, const egress__ip_t *ip, uint16_t port,
                           uint8_t min_len, egress__match_t *res) {
  int fam = ip->family == 6;
  for (size_t l = 0; l < set->nlevels[fam]; l++) {
    const cidr_level_t *lv = set->levels[fam][l];
    if (lv->len < min_len) break; /* levels are sorted longest first */
    uint8_t key[16];
    mask_bytes(ip->bytes, lv->len, key);
    uint64_t h = hash_key(key, lv->len);
    if (lv->filter) {
      size_t bit = filter_bit(lv, h);
      if (!(lv->filter[bit / 64] & (1ULL << (bit % 64)))) continue;
    }
    const cidr_bucket_t *b = level_find_h(lv, key, h);
    if (!b->used) continue;
    for (size_t i = 0; i < b->nrules; i++) {
      const egress__rule_t *r = b->rules[i];
      if (!res->any || r->index < res->any->index) res->any = r;
      if (port_in(r, port) && (!res->allowing || r->index < res->allowing->index)) res->allowing = r;
    }
  }
}
