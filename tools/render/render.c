/*
 * Rendering a policy as Kubernetes network policy, and lint.
 *
 * The application-layer check stays the authoritative control: network
 * policy sees addresses and ports, never names.  What is rendered is the
 * network layer's best exact image of the policy:
 *
 *  - For every port, the set V(port) of addresses that pass vetting (deny
 *    list, special-purpose ranges opened only by a CIDR rule inside them,
 *    IPv4 embedded in NAT64 / 6to4 addresses) is computed as CIDR prefixes
 *    by splitting the address space along every range boundary that can
 *    change the answer and vetting each uniform piece with the check's own
 *    code (egress__vet_address).  So the rendered ranges cannot drift from
 *    the checker.
 *  - A CIDR entry allows its range on its ports, less what fails vetting
 *    ("except").  A name entry (NetworkPolicy) allows its ports to every
 *    address that passes vetting; Cilium instead matches the name itself
 *    (toFQDNs) and forbids what fails vetting with egressDeny, which also
 *    stops DNS rebinding to private and metadata addresses at layer 3.
 *
 * Ports are split into segments on which every CIDR rule either applies or
 * not, so V is one set per segment.  Rules are TCP: adapters speak HTTP.
 *
 * What a format cannot express (a "re:" entry in Cilium, a name deny entry
 * that carves into a wildcard, embedded IPv4 of Teredo and local-use NAT64
 * addresses) is reported; left out on request, always on the closed side.
 */
#include "egress_private.h"

#include "render.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char *const list_names[2] = { "egressAllowlist", "egressDenylist" };

/* ------------------------------------------------------------------------ */
/* Growable arrays: port ranges and prefixes.                                */
/* ------------------------------------------------------------------------ */

typedef struct prange {
  uint32_t lo, hi; /* inclusive; 1..65535 */
} prange_t;

typedef struct pset {
  prange_t *r;
  size_t n, cap;
} pset_t;

typedef struct plist {
  egress__prefix_t *v;
  size_t n, cap;
} plist_t;

static bool grow(void **v, size_t *cap, size_t need, size_t elem) {
  if (need <= *cap) return true;
  size_t ncap = *cap ? *cap * 2 : 8;
  while (ncap < need) ncap *= 2;
  if (ncap > SIZE_MAX / elem) return false;
  void *p = egress__realloc(*v, ncap * elem);
  if (!p) return false;
  *v = p;
  *cap = ncap;
  return true;
}

static bool pset_push(pset_t *s, uint32_t lo, uint32_t hi) {
  if (lo > hi) return true;
  /* Adjacent or overlapping with the last range: extend (callers push in
   * ascending order). */
  if (s->n > 0 && lo <= s->r[s->n - 1].hi + 1) {
    if (hi > s->r[s->n - 1].hi) s->r[s->n - 1].hi = hi;
    return true;
  }
  if (!grow((void **)&s->r, &s->cap, s->n + 1, sizeof *s->r)) return false;
  s->r[s->n].lo = lo;
  s->r[s->n].hi = hi;
  s->n++;
  return true;
}

/* s := s minus [lo, hi]. */
static bool pset_sub(pset_t *s, uint32_t lo, uint32_t hi) {
  pset_t t = { NULL, 0, 0 };
  for (size_t i = 0; i < s->n; i++) {
    prange_t r = s->r[i];
    if (hi < r.lo || lo > r.hi) {
      if (!pset_push(&t, r.lo, r.hi)) goto fail;
      continue;
    }
    if (lo > r.lo && !pset_push(&t, r.lo, lo - 1)) goto fail;
    if (hi < r.hi && !pset_push(&t, hi + 1, r.hi)) goto fail;
  }
  egress__free(s->r);
  *s = t;
  return true;
fail:
  egress__free(t.r);
  return false;
}

/* Union, keeping ascending order. */
static bool pset_add(pset_t *s, uint32_t lo, uint32_t hi) {
  pset_t t = { NULL, 0, 0 };
  bool placed = false;
  for (size_t i = 0; i < s->n; i++) {
    if (!placed && lo <= s->r[i].lo) {
      if (!pset_push(&t, lo, hi)) goto fail;
      placed = true;
    }
    if (!pset_push(&t, s->r[i].lo, s->r[i].hi)) goto fail;
  }
  if (!placed && !pset_push(&t, lo, hi)) goto fail;
  egress__free(s->r);
  *s = t;
  return true;
fail:
  egress__free(t.r);
  return false;
}

static bool plist_push(plist_t *l, const egress__prefix_t *p) {
  if (!grow((void **)&l->v, &l->cap, l->n + 1, sizeof *l->v)) return false;
  l->v[l->n++] = *p;
  return true;
}

/* ------------------------------------------------------------------------ */
/* Prefix helpers.                                                           */
/* ------------------------------------------------------------------------ */

static unsigned get_bit(const egress__ip_t *ip, unsigned i) { return (ip->bytes[i / 8] >> (7 - i % 8)) & 1u; }

static void set_bit(egress__ip_t *ip, unsigned i) {
  ip->bytes[i / 8] = (uint8_t)(ip->bytes[i / 8] | (1u << (7 - i % 8)));
}

/* Does a contain b (a.len <= b.len, same family)? */
static bool pfx_within(const egress__prefix_t *outer, const egress__prefix_t *inner) {
  return outer->addr.family == inner->addr.family && outer->len <= inner->len &&
         egress__prefix_contains(outer, &inner->addr);
}

static bool pfx_overlap(const egress__prefix_t *a, const egress__prefix_t *b) {
  return pfx_within(a, b) || pfx_within(b, a);
}

static int pfx_cmp(const void *x, const void *y) {
  const egress__prefix_t *a = x, *b = y;
  if (a->addr.family != b->addr.family) return a->addr.family < b->addr.family ? -1 : 1;
  int c = memcmp(a->addr.bytes, b->addr.bytes, sizeof a->addr.bytes);
  if (c) return c;
  return a->len < b->len ? -1 : a->len > b->len;
}

static void pfx_text(const egress__prefix_t *p, char *buf, size_t len) {
  char ip[EGRESS__IPSTR_MAX];
  egress__ip_format(&p->addr, ip, sizeof ip);
  snprintf(buf, len, "%s/%u", ip, p->len);
}

static egress__prefix_t pfx_make(uint8_t family, const uint8_t *bytes, size_t nbytes, uint8_t len) {
  egress__prefix_t p;
  memset(&p, 0, sizeof p);
  p.addr.family = family;
  memcpy(p.addr.bytes, bytes, nbytes);
  p.len = len;
  return p;
}

/* IPv6 ranges whose addresses carry IPv4 addresses, which the checker vets too. */
static const uint8_t teredo_b[] = { 0x20, 0x01, 0x00, 0x00 };                        /* 2001::/32 */
static const uint8_t sixtofour_b[] = { 0x20, 0x02 };                                 /* 2002::/16 */
static const uint8_t nat64_b[] = { 0x00, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0 }; /* 64:ff9b::/96 */
static const uint8_t nat64l_b[] = { 0x00, 0x64, 0xff, 0x9b, 0x00, 0x01 };            /* 64:ff9b:1::/48 */

/* ------------------------------------------------------------------------ */
/* Host-name relations (shared by render and lint).                          */
/* ------------------------------------------------------------------------ */

enum { REL_NONE = 0, REL_PARTIAL = 1, REL_COVERS = 2 };

static bool is_name_rule(const egress__rule_t *r) { return r->kind != EGRESS__RULE_CIDR; }

/* s equals t or lies under it ("a.b.t" under "t"). */
static bool at_or_under(const char *s, size_t sl, const char *t, size_t tl) {
  return (sl == tl && !memcmp(s, t, sl)) || egress__name_in_wildn(s, sl, t, tl);
}

static bool same_regex(const egress__rule_t *a, const egress__rule_t *b) {
  return a->kind == EGRESS__RULE_REGEX && b->kind == EGRESS__RULE_REGEX &&
         !strcmp(strchr(a->text, ':') ? strchr(a->text, ':') : a->text,
                 strchr(b->text, ':') ? strchr(b->text, ':') : b->text);
}

/* How the names rule @p d matches relate to those of rule @p a: d matches
 * all of them (COVERS), some or perhaps some (PARTIAL), or none (NONE).
 * Regexes are opaque, so anything uncertain is PARTIAL. */
static int name_rel(const egress__rule_t *d, const egress__rule_t *a) {
  const char *s = d->name, *t = a->name;
  size_t sl = d->name_len, tl = a->name_len;
  if (d->kind == EGRESS__RULE_ANY) return REL_COVERS;
  if (same_regex(d, a)) return REL_COVERS;
  switch (a->kind) {
    case EGRESS__RULE_EXACT: return egress__rule_matches_name(d, t, tl) ? REL_COVERS : REL_NONE;
    case EGRESS__RULE_WILD1: /* one label + t */
      switch (d->kind) {
        case EGRESS__RULE_EXACT: return egress__name_in_wild1(s, sl, t, tl) ? REL_PARTIAL : REL_NONE;
        case EGRESS__RULE_WILD1: return sl == tl && !memcmp(s, t, sl) ? REL_COVERS : REL_NONE;
        case EGRESS__RULE_WILDN: return at_or_under(t, tl, s, sl) ? REL_COVERS : REL_NONE;
        default: return REL_PARTIAL;
      }
    case EGRESS__RULE_WILDN: /* one or more labels + t */
      switch (d->kind) {
        case EGRESS__RULE_EXACT: return egress__name_in_wildn(s, sl, t, tl) ? REL_PARTIAL : REL_NONE;
        case EGRESS__RULE_WILD1: return at_or_under(s, sl, t, tl) ? REL_PARTIAL : REL_NONE;
        case EGRESS__RULE_WILDN:
          if (at_or_under(t, tl, s, sl)) return REL_COVERS;
          return egress__name_in_wildn(s, sl, t, tl) ? REL_PARTIAL : REL_NONE;
        default: return REL_PARTIAL;
      }
    default: /* ANY or REGEX allow rule */ return REL_PARTIAL;
  }
}

static bool ports_cover(const egress__rule_t *a, uint32_t lo, uint32_t hi) {
  return a->port_lo <= lo && hi <= a->port_hi;
}

static bool ports_meet(const egress__rule_t *a, const egress__rule_t *b) {
  return a->port_lo <= b->port_hi && b->port_lo <= a->port_hi;
}

/* ------------------------------------------------------------------------ */
/* Vetting as prefixes.                                                      */
/* ------------------------------------------------------------------------ */

typedef struct rctx {
  const egress_policy_t *p;
  const egress__render_opts_t *o;
  egress__render_note_cb note;
  void *ud;
  bool oom;
  size_t unrenderable;
  char first[768]; /* first unrenderable, for errbuf (cut to its size there) */
  prange_t *segs;
  size_t nsegs;
  plist_t *fset[2]; /* per segment: forbidden IPv4 [0], IPv6 [1] */
  plist_t bounds[2];
  bool *closed; /* per allow rule: embedded IPv4 of it left closed */
} rctx_t;

static void note_unrenderable(rctx_t *c, egress_list_t list, size_t index, const char *what) {
  const egress__rule_t *r = &c->p->rules[list][index];
  if (c->unrenderable++ == 0)
    snprintf(c->first, sizeof c->first, "%s[%zu] \"%.200s\": %s", list_names[list], index, r->text, what);
  if (c->note) c->note(list, index, r->text, what, c->ud);
}

static bool in_region(const egress__ip_t *ip, const uint8_t *b, uint8_t len) {
  egress__prefix_t p = pfx_make(6, b, (size_t)len / 8, len);
  return egress__prefix_contains(&p, ip);
}

/* Whether @p ip fails vetting on every port of [lo, hi]: the check's own
 * vetting (lib/vet.c) at port lo, since rule ports are uniform over a
 * segment.  Render knows no operator Pref64, so none is passed. */
static bool forbidden(rctx_t *c, const egress__ip_t *ip, uint32_t lo) {
  egress__vet_t v;
  egress__vet_address(c->p, NULL, 0, ip, (uint16_t)lo, &v);
  if (ip->family == 6 && (in_region(ip, teredo_b, 32) || in_region(ip, nat64l_b, 48))) {
    egress__ip_t emb[2];
    /* Teredo clients are stored bit-inverted and local-use NAT64 steps over
     * the "u" octet: neither maps IPv4 ranges onto IPv6 prefixes, so an
     * address there that carries IPv4 stays closed, whatever its IPv4
     * vets as.  Both ranges are special-purpose, so only a rule opened the
     * address itself (v.opener, kept when the embedded IPv4 is what
     * fails); that rule is left partly closed. */
    if (egress__embedded_ipv4(ip, NULL, 0, emb) > 0) {
      if (v.opener) c->closed[v.opener->index] = true;
      return true;
    }
  }
  return v.reason != EGRESS_REASON_NONE;
}

/* Forbidden part of @p P as maximal prefixes appended to @p out; @p b holds
 * the boundaries strictly inside P, sorted.  *full: all of P is forbidden. */
static void split(rctx_t *c, const egress__prefix_t *P, const egress__prefix_t *b, size_t nb, uint32_t lo,
                  plist_t *out, bool *full) {
  *full = false;
  if (c->oom) return;
  if (nb == 0) {
    *full = forbidden(c, &P->addr, lo);
    if (*full && !plist_push(out, P)) c->oom = true;
    return;
  }
  egress__prefix_t h0 = *P, h1 = *P;
  h0.len = h1.len = (uint8_t)(P->len + 1);
  set_bit(&h1.addr, P->len);
  /* Sorted by address then length: h0's boundaries come first, each half's
   * own copy (if present) first among them. */
  size_t k = 0, s0 = 0, s1;
  while (k < nb && !get_bit(&b[k].addr, P->len)) k++;
  while (s0 < k && b[s0].len == h0.len) s0++;
  s1 = k;
  while (s1 < nb && b[s1].len == h1.len) s1++;
  size_t mark = out->n;
  bool f0, f1;
  split(c, &h0, b + s0, k - s0, lo, out, &f0);
  split(c, &h1, b + s1, nb - s1, lo, out, &f1);
  if (f0 && f1 && !c->oom) {
    out->n = mark;
    if (!plist_push(out, P)) c->oom = true;
    *full = true;
  }
}

/* A set written as CIDR blocks with "except" lists (ipBlock / toCIDRSet):
 * blocks[i] excepts ex.v[off .. off + n). */
typedef struct rblock {
  egress__prefix_t cidr;
  size_t off, n;
} rblock_t;

typedef struct rep {
  rblock_t *b;
  size_t nb, cap;
  plist_t ex;   /* except prefixes of all blocks */
  plist_t comp; /* scratch: the complement's maximal prefixes */
} rep_t;

static void rep_free(rep_t *r) {
  egress__free(r->b);
  egress__free(r->ex.v);
  egress__free(r->comp.v);
  memset(r, 0, sizeof *r);
}

static bool rep_block(rep_t *r, const egress__prefix_t *cidr, const egress__prefix_t *ex, size_t n) {
  if (!grow((void **)&r->b, &r->cap, r->nb + 1, sizeof *r->b)) return false;
  r->b[r->nb].cidr = *cidr;
  r->b[r->nb].off = r->ex.n;
  r->b[r->nb].n = n;
  for (size_t i = 0; i < n; i++)
    if (!plist_push(&r->ex, &ex[i])) return false;
  r->nb++;
  return true;
}

/*
 * The target set (forbidden addresses when @p want_forbidden, else allowed
 * ones) inside @p P, written with as few strings as this split tree allows:
 * at each node either one block "P except <complement>" or the children's
 * blocks.  Without this an allowed /96 inside a forbidden /3 would take a
 * hundred prefixes.  *full_t / *full_c: all of P is target / complement.
 */
static void rep_split(rctx_t *c, const egress__prefix_t *P, const egress__prefix_t *b, size_t nb, uint32_t lo,
                      bool want_forbidden, rep_t *r, bool *full_t, bool *full_c) {
  *full_t = *full_c = false;
  if (c->oom) return;
  if (nb == 0) {
    bool t = forbidden(c, &P->addr, lo) == want_forbidden;
    if (t ? !rep_block(r, P, NULL, 0) : !plist_push(&r->comp, P)) c->oom = true;
    *full_t = t;
    *full_c = !t;
    return;
  }
  egress__prefix_t h0 = *P, h1 = *P;
  h0.len = h1.len = (uint8_t)(P->len + 1);
  set_bit(&h1.addr, P->len);
  size_t k = 0, s0 = 0, s1;
  while (k < nb && !get_bit(&b[k].addr, P->len)) k++;
  while (s0 < k && b[s0].len == h0.len) s0++;
  s1 = k;
  while (s1 < nb && b[s1].len == h1.len) s1++;
  size_t mb = r->nb, mex = r->ex.n, mc = r->comp.n;
  bool t0, c0, t1, c1;
  rep_split(c, &h0, b + s0, k - s0, lo, want_forbidden, r, &t0, &c0);
  rep_split(c, &h1, b + s1, nb - s1, lo, want_forbidden, r, &t1, &c1);
  if (c->oom) return;
  if (c0 && c1) {
    r->comp.n = mc;
    if (!plist_push(&r->comp, P)) c->oom = true;
    *full_c = true;
    return;
  }
  size_t split_cost = (r->nb - mb) + (r->ex.n - mex);
  size_t ncomp = r->comp.n - mc;
  if (t0 && t1) ncomp = 0;
  if (1 + ncomp <= split_cost) {
    r->nb = mb;
    r->ex.n = mex;
    if (!rep_block(r, P, r->comp.v + mc, ncomp)) c->oom = true;
  }
  *full_t = t0 && t1;
}

/* The target set inside @p R on segment @p s. */
static bool rep_of(rctx_t *c, size_t s, const egress__prefix_t *R, bool want_forbidden, rep_t *r) {
  const plist_t *bl = &c->bounds[R->addr.family == 6];
  size_t first = bl->n, last = 0;
  bool ft, fc;
  /* Boundaries strictly inside R are contiguous in the sorted list. */
  for (size_t i = 0; i < bl->n; i++)
    if (bl->v[i].len > R->len && pfx_within(R, &bl->v[i])) {
      if (first == bl->n) first = i;
      last = i + 1;
    }
  if (first == bl->n) first = last = 0;
  rep_split(c, R, bl->v + first, last - first, c->segs[s].lo, want_forbidden, r, &ft, &fc);
  return !c->oom;
}

static bool bound_add(plist_t *l, uint8_t family, const uint8_t *bytes, size_t n, uint8_t len) {
  egress__prefix_t p = pfx_make(family, bytes, n, len);
  return plist_push(l, &p);
}

/* Every prefix whose edge can change a vetting answer. */
static bool build_bounds(rctx_t *c) {
  const egress_policy_t *p = c->p;
  plist_t *b4 = &c->bounds[0], *b6 = &c->bounds[1];
  for (size_t i = 0; i < egress__special_block_count; i++) {
    const egress__prefix_t *q = &egress__special_blocks[i].prefix;
    if (!plist_push(q->addr.family == 4 ? b4 : b6, q)) return false;
  }
  for (int l = 0; l < 2; l++)
    for (size_t i = 0; i < p->nrules[l]; i++) {
      const egress__rule_t *r = &p->rules[l][i];
      if (r->kind == EGRESS__RULE_CIDR && !plist_push(r->cidr.addr.family == 4 ? b4 : b6, &r->cidr))
        return false;
    }
  if (!bound_add(b6, 6, teredo_b, sizeof teredo_b, 32) ||
      !bound_add(b6, 6, sixtofour_b, sizeof sixtofour_b, 16) ||
      !bound_add(b6, 6, nat64_b, sizeof nat64_b, 96) || !bound_add(b6, 6, nat64l_b, sizeof nat64l_b, 48))
    return false;
  /* IPv4 edges carried into the ranges that embed IPv4 as a prefix. */
  size_t n4 = b4->n;
  for (size_t i = 0; i < n4; i++) {
    egress__prefix_t v4 = b4->v[i], q;
    q = pfx_make(6, nat64_b, sizeof nat64_b, (uint8_t)(96 + v4.len));
    memcpy(q.addr.bytes + 12, v4.addr.bytes, 4);
    if (!plist_push(b6, &q)) return false;
    q = pfx_make(6, sixtofour_b, sizeof sixtofour_b, (uint8_t)(16 + v4.len));
    memcpy(q.addr.bytes + 2, v4.addr.bytes, 4);
    if (!plist_push(b6, &q)) return false;
  }
  for (int f = 0; f < 2; f++) {
    plist_t *l = &c->bounds[f];
    size_t o = 0;
    if (l->n) qsort(l->v, l->n, sizeof *l->v, pfx_cmp);
    for (size_t i = 0; i < l->n; i++) {
      if (l->v[i].len == 0) continue; /* never strictly inside the root */
      if (o > 0 && pfx_cmp(&l->v[o - 1], &l->v[i]) == 0) continue;
      l->v[o++] = l->v[i];
    }
    l->n = o;
  }
  return true;
}

static int u32_cmp(const void *x, const void *y) {
  uint32_t a = *(const uint32_t *)x, b = *(const uint32_t *)y;
  return a < b ? -1 : a > b;
}

static bool build_segments(rctx_t *c) {
  const egress_policy_t *p = c->p;
  uint32_t *pts = NULL;
  size_t n = 0, cap = 0;
  bool ok = false;

  if (!grow((void **)&pts, &cap, 2, sizeof *pts)) goto done;
  pts[n++] = 1;
  pts[n++] = 65536;
  for (int l = 0; l < 2; l++)
    for (size_t i = 0; i < p->nrules[l]; i++) {
      const egress__rule_t *r = &p->rules[l][i];
      if (r->kind != EGRESS__RULE_CIDR) continue;
      if (!grow((void **)&pts, &cap, n + 2, sizeof *pts)) goto done;
      pts[n++] = r->port_lo;
      pts[n++] = (uint32_t)r->port_hi + 1;
    }
  /* Two points per CIDR rule: a large policy has tens of thousands. */
  qsort(pts, n, sizeof *pts, u32_cmp);
  c->segs = egress__calloc(n, sizeof *c->segs);
  if (!c->segs) goto done;
  for (size_t i = 0; i + 1 < n; i++) {
    if (pts[i] == pts[i + 1] || pts[i] < 1) continue;
    c->segs[c->nsegs].lo = pts[i];
    c->segs[c->nsegs].hi = pts[i + 1] - 1;
    c->nsegs++;
  }
  c->fset[0] = egress__calloc(c->nsegs ? c->nsegs : 1, sizeof(plist_t));
  c->fset[1] = egress__calloc(c->nsegs ? c->nsegs : 1, sizeof(plist_t));
  if (!c->fset[0] || !c->fset[1]) goto done;
  for (size_t s = 0; s < c->nsegs && !c->oom; s++)
    for (int f = 0; f < 2; f++) {
      egress__prefix_t root;
      bool full;
      memset(&root, 0, sizeof root);
      root.addr.family = f ? 6 : 4;
      split(c, &root, c->bounds[f].v, c->bounds[f].n, c->segs[s].lo, &c->fset[f][s], &full);
    }
  ok = !c->oom;
done:
  egress__free(pts);
  return ok;
}

static void rctx_free(rctx_t *c) {
  for (int f = 0; f < 2; f++) {
    for (size_t s = 0; c->fset[f] && s < c->nsegs; s++) egress__free(c->fset[f][s].v);
    egress__free(c->fset[f]);
    egress__free(c->bounds[f].v);
  }
  egress__free(c->segs);
  egress__free(c->closed);
}

static egress_status_t rctx_init(rctx_t *c, const egress_policy_t *p) {
  memset(c, 0, sizeof *c);
  c->p = p;
  c->closed = egress__calloc(p->nrules[EGRESS_LIST_ALLOW] + 1, sizeof *c->closed);
  if (!c->closed || !build_bounds(c) || !build_segments(c)) return EGRESS_ENOMEM;
  return EGRESS_OK;
}

/* Allowed part of @p R on segment @p s: false when none of it is; else
 * @p exc (cleared first) receives the forbidden prefixes strictly inside. */
static bool peer_at(const rctx_t *c, size_t s, const egress__prefix_t *R, plist_t *exc, bool *oom) {
  const plist_t *F = &c->fset[R->addr.family == 6][s];
  exc->n = 0;
  for (size_t i = 0; i < F->n; i++) {
    if (pfx_within(&F->v[i], R)) return false;
    if (pfx_within(R, &F->v[i]) && !plist_push(exc, &F->v[i])) {
      *oom = true;
      return false;
    }
  }
  return true;
}

static bool same_peer(const rctx_t *c, size_t s1, size_t s2, const egress__prefix_t *R, bool *oom) {
  plist_t a = { NULL, 0, 0 }, b = { NULL, 0, 0 };
  bool la = peer_at(c, s1, R, &a, oom), lb = peer_at(c, s2, R, &b, oom);
  bool same = la == lb && a.n == b.n && (a.n == 0 || !memcmp(a.v, b.v, a.n * sizeof *a.v));
  egress__free(a.v);
  egress__free(b.v);
  return same;
}

/* ------------------------------------------------------------------------ */
/* Port sets of rules, cut by segments and grouped by equal peers.          */
/* ------------------------------------------------------------------------ */

typedef struct group {
  size_t seg; /* representative segment */
  pset_t ports;
} group_t;

typedef struct groups {
  group_t *g;
  size_t n, cap;
} groups_t;

static void groups_free(groups_t *gs) {
  for (size_t i = 0; i < gs->n; i++) egress__free(gs->g[i].ports.r);
  egress__free(gs->g);
  memset(gs, 0, sizeof *gs);
}

/* Cut @p ports by segments; pieces whose peers (for every prefix of
 * @p roots) are equal share a group.  Groups come in order of first port. */
static bool group_ports(const rctx_t *c, const pset_t *ports, const egress__prefix_t *roots, size_t nroots,
                        groups_t *gs) {
  bool oom = false;
  for (size_t i = 0; i < ports->n; i++)
    for (size_t s = 0; s < c->nsegs; s++) {
      uint32_t lo = ports->r[i].lo > c->segs[s].lo ? ports->r[i].lo : c->segs[s].lo;
      uint32_t hi = ports->r[i].hi < c->segs[s].hi ? ports->r[i].hi : c->segs[s].hi;
      if (lo > hi) continue;
      size_t g;
      for (g = 0; g < gs->n; g++) {
        bool same = true;
        for (size_t k = 0; k < nroots && same; k++) same = same_peer(c, gs->g[g].seg, s, &roots[k], &oom);
        if (oom) return false;
        if (same) break;
      }
      if (g == gs->n) {
        if (!grow((void **)&gs->g, &gs->cap, gs->n + 1, sizeof *gs->g)) return false;
        memset(&gs->g[gs->n], 0, sizeof *gs->g);
        gs->g[gs->n++].seg = s;
      }
      if (!pset_add(&gs->g[g].ports, lo, hi)) return false;
    }
  return true;
}

/* What is said about deny entry @p d, which takes only some of the names of
 * allow entry @p a on the ports they share (render and lint say the same). */
static void partial_deny_what(char *what, size_t len, const egress__rule_t *d, const egress__rule_t *a) {
  char ports[16];
  uint32_t plo = d->port_lo > a->port_lo ? d->port_lo : a->port_lo;
  uint32_t phi = d->port_hi < a->port_hi ? d->port_hi : a->port_hi;
  if (plo == phi)
    snprintf(ports, sizeof ports, "%u", (unsigned)plo);
  else
    snprintf(ports, sizeof ports, "%u-%u", (unsigned)plo, (unsigned)phi);
  snprintf(what, len,
           "Cilium cannot deny by name (egressDeny has no toFQDNs), and this entry takes "
           "only some of the names of egressAllowlist[%zu] \"%.200s\"; skipping it leaves "
           "that allow entry closed on port%s %s",
           a->index, a->text, plo == phi ? "" : "s", ports);
}

static const char regex_what[] =
    "a \"re:\" entry has no Cilium equivalent (toFQDNs takes names and \"*\" patterns only); "
    "skipping it leaves its traffic denied by the network layer";

static const char closed_what[] =
    "opens Teredo or local-use NAT64 addresses (2001::/32, 64:ff9b:1::/48), whose embedded IPv4 "
    "addresses cannot be vetted with CIDRs; skipping it leaves that part closed";

/* Ports of name rule @p a once the deny entries that match its names are
 * taken out.  A deny entry that matches only some of its names cannot be
 * expressed by Cilium; @p report says whether to report that. */
static bool name_ports(rctx_t *c, const egress__rule_t *a, bool report, pset_t *out) {
  const egress_policy_t *p = c->p;
  if (!pset_push(out, a->port_lo, a->port_hi)) return false;
  for (size_t i = 0; i < p->nrules[EGRESS_LIST_DENY]; i++) {
    const egress__rule_t *d = &p->rules[EGRESS_LIST_DENY][i];
    if (!is_name_rule(d) || !ports_meet(d, a)) continue;
    int rel = name_rel(d, a);
    /* NetworkPolicy cannot tell names apart at all, so a deny that takes
     * only some names of an entry leaves its ports open there. */
    if (rel == REL_NONE || (rel == REL_PARTIAL && !report)) continue;
    if (rel == REL_PARTIAL) {
      char what[400];
      partial_deny_what(what, sizeof what, d, a);
      note_unrenderable(c, EGRESS_LIST_DENY, i, what);
    }
    if (!pset_sub(out, d->port_lo, d->port_hi)) return false;
  }
  return true;
}

/* ------------------------------------------------------------------------ */
/* JSON.                                                                     */
/* ------------------------------------------------------------------------ */

typedef struct jb {
  bool fail;
} jb_t;

static cJSON *jchk(jb_t *j, cJSON *item) {
  if (!item) j->fail = true;
  return item;
}

static cJSON *jobj(jb_t *j, cJSON *parent, const char *key) {
  cJSON *o = cJSON_CreateObject();
  if (!o) {
    j->fail = true;
    return NULL;
  }
  if (!parent) return o;
  if (cJSON_IsArray(parent) ? !cJSON_AddItemToArray(parent, o) : !cJSON_AddItemToObject(parent, key, o)) {
    cJSON_Delete(o);
    j->fail = true;
    return NULL;
  }
  return o;
}

static cJSON *jarr(jb_t *j, cJSON *parent, const char *key) {
  if (!parent) {
    j->fail = true;
    return NULL;
  }
  return jchk(j, cJSON_AddArrayToObject(parent, key));
}

static void jstr(jb_t *j, cJSON *parent, const char *key, const char *v) {
  if (!parent) {
    j->fail = true;
    return;
  }
  if (cJSON_IsArray(parent)) {
    cJSON *s = cJSON_CreateString(v);
    if (!s || !cJSON_AddItemToArray(parent, s)) {
      cJSON_Delete(s);
      j->fail = true;
    }
    return;
  }
  jchk(j, cJSON_AddStringToObject(parent, key, v));
}

static void jnum(jb_t *j, cJSON *parent, const char *key, double v) {
  if (!parent) {
    j->fail = true;
    return;
  }
  jchk(j, cJSON_AddNumberToObject(parent, key, v));
}

static void jbool(jb_t *j, cJSON *parent, const char *key, bool v) {
  if (!parent) {
    j->fail = true;
    return;
  }
  jchk(j, cJSON_AddBoolToObject(parent, key, v));
}

/* {"k": "v", ...} under @p key of @p parent; pairs NULL-terminated. */
static cJSON *jlabels(jb_t *j, cJSON *parent, const char *key, const char *const *kv) {
  cJSON *o = jobj(j, parent, key);
  for (size_t i = 0; o && kv[i]; i += 2) jstr(j, o, kv[i], kv[i + 1]);
  return o;
}

static void jports(jb_t *j, cJSON *arr, const pset_t *ports, egress__render_format_t fmt, const char *proto) {
  for (size_t i = 0; arr && i < ports->n; i++) {
    cJSON *o = jobj(j, arr, NULL);
    if (fmt == EGRESS__RENDER_CILIUM) {
      char buf[8];
      snprintf(buf, sizeof buf, "%u", (unsigned)ports->r[i].lo);
      jstr(j, o, "port", buf);
      if (ports->r[i].hi != ports->r[i].lo) jnum(j, o, "endPort", ports->r[i].hi);
      jstr(j, o, "protocol", proto);
    } else {
      jstr(j, o, "protocol", proto);
      jnum(j, o, "port", ports->r[i].lo);
      if (ports->r[i].hi != ports->r[i].lo) jnum(j, o, "endPort", ports->r[i].hi);
    }
  }
}

/* {"cidr": R, "except": [...]}: the ipBlock object / toCIDRSet element. */
static void jcidr_fill(jb_t *j, cJSON *o, const egress__prefix_t *R, const plist_t *exc) {
  char buf[EGRESS__IPSTR_MAX + 8];
  pfx_text(R, buf, sizeof buf);
  jstr(j, o, "cidr", buf);
  if (exc->n == 0) return;
  cJSON *e = jarr(j, o, "except");
  for (size_t i = 0; e && i < exc->n; i++) {
    pfx_text(&exc->v[i], buf, sizeof buf);
    jstr(j, e, NULL, buf);
  }
}

/* The peers of one group: the allowed part of each root as ipBlock
 * elements (NetworkPolicy) or toCIDRSet elements.  Returns how many. */
static size_t jpeers(jb_t *j, rctx_t *c, cJSON *to, size_t seg, const egress__prefix_t *roots, size_t nroots,
                     bool netpol, bool want_forbidden) {
  size_t written = 0;
  for (size_t k = 0; k < nroots; k++) {
    rep_t r;
    memset(&r, 0, sizeof r);
    if (!rep_of(c, seg, &roots[k], want_forbidden, &r)) {
      j->fail = true;
      rep_free(&r);
      return written;
    }
    for (size_t i = 0; i < r.nb; i++) {
      plist_t ex = { r.ex.v + r.b[i].off, r.b[i].n, 0 };
      if (netpol)
        jcidr_fill(j, jobj(j, jobj(j, to, NULL), "ipBlock"), &r.b[i].cidr, &ex);
      else
        jcidr_fill(j, jobj(j, to, NULL), &r.b[i].cidr, &ex);
      written++;
    }
    rep_free(&r);
  }
  return written;
}

static const char *component_label(egress__render_component_t comp) {
  return comp == EGRESS__COMPONENT_AGENT ? "agent" : "execution-plane";
}

/* metadata of an object about @p comp's pods (its portarium.io/component). */
static cJSON *jmeta(jb_t *j, cJSON *item, const rctx_t *c, const char *name, const char *ns,
                    const char *layer, const char *comp) {
  cJSON *m = jobj(j, item, "metadata");
  jstr(j, m, "name", name);
  jstr(j, m, "namespace", ns);
  const char *labels[] = { "app.kubernetes.io/managed-by",
                           "egressctl",
                           "portarium.io/component",
                           comp,
                           "portarium.io/egress-layer",
                           layer,
                           NULL };
  jlabels(j, m, "labels", labels);
  const char *ann[] = { "portarium.io/egress-policy-digest", c->p->digest,
                        "portarium.io/special-ranges-version", egress__special_version, NULL };
  jlabels(j, m, "annotations", ann);
  return m;
}

/* A NetworkPolicy of one @p type ("Egress" or "Ingress") for the pods
 * matching @p sel (label pairs, NULL-terminated), about @p comp's pods;
 * returns its (empty) rule array. */
static cJSON *jnetpol_for(jb_t *j, cJSON *items, const rctx_t *c, const char *name, const char *ns,
                          const char *layer, const char *comp, const char *const *sel, bool ingress) {
  cJSON *np = jobj(j, items, NULL);
  jstr(j, np, "apiVersion", "networking.k8s.io/v1");
  jstr(j, np, "kind", "NetworkPolicy");
  jmeta(j, np, c, name, ns, layer, comp);
  cJSON *spec = jobj(j, np, "spec");
  jlabels(j, jobj(j, spec, "podSelector"), "matchLabels", sel);
  cJSON *pt = jarr(j, spec, "policyTypes");
  jstr(j, pt, NULL, ingress ? "Ingress" : "Egress");
  return jarr(j, spec, ingress ? "ingress" : "egress");
}

/* An egress NetworkPolicy for the pods of the component rendered. */
static cJSON *jnetpol(jb_t *j, cJSON *items, const rctx_t *c, const char *name, const char *ns,
                      const char *layer) {
  const char *comp = component_label(c->o->component);
  const char *sel[] = { "portarium.io/component", comp, NULL };
  return jnetpol_for(j, items, c, name, ns, layer, comp, sel, false);
}

struct egress__render_baseline {
  cJSON *doc; /* validated: {"services": [...]} */
};

/* Today's platform: what the baseline allows without --baseline. */
static const char default_baseline[] =
    "{\"services\": ["
    "{\"podLabels\": {\"portarium.io/component\": \"control-plane\"}, \"ports\": [8080]},"
    "{\"namespace\": \"vault\", \"ports\": [8200]},"
    "{\"namespace\": \"temporal\", \"ports\": [7233], \"components\": [\"execution-plane\"]},"
    "{\"podLabels\": {\"portarium.io/component\": \"otel-collector\"}, \"ports\": [4317, 4318],"
    " \"components\": [\"execution-plane\"]},"
    "{\"namespace\": \"kube-system\", \"podLabels\": {\"k8s-app\": \"kube-dns\"}, \"ports\": [53],"
    " \"protocols\": [\"UDP\", \"TCP\"]}]}";

static bool only_keys(const cJSON *o, const char *const *keys) {
  for (const cJSON *it = o->child; it; it = it->next) {
    size_t k = 0;
    while (keys[k] && strcmp(keys[k], it->string)) k++;
    if (!keys[k]) return false;
  }
  return true;
}

static bool str_array(const cJSON *a) {
  if (!cJSON_IsArray(a) || !a->child) return false;
  for (const cJSON *it = a->child; it; it = it->next)
    if (!cJSON_IsString(it)) return false;
  return true;
}

static bool k8s_label(const char *s, size_t n);

/* Checks a parsed baseline; errbuf names the first problem. */
static egress_status_t baseline_check(const cJSON *doc, char *errbuf, size_t errlen) {
  static const char *const top[] = { "services", NULL };
  static const char *const keys[] = { "namespace", "podLabels", "ports", "protocols", "components", NULL };
  const cJSON *svc = cJSON_GetObjectItemCaseSensitive(doc, "services");
  if (!cJSON_IsObject(doc) || !only_keys(doc, top) || !cJSON_IsArray(svc))
    return egress__errf(errbuf, errlen, EGRESS_EPOLICY, "must be an object {\"services\": [...]}");
  size_t i = 0;
  for (const cJSON *s = svc->child; s; s = s->next, i++) {
    const cJSON *ns = cJSON_GetObjectItemCaseSensitive(s, "namespace");
    const cJSON *pl = cJSON_GetObjectItemCaseSensitive(s, "podLabels");
    const cJSON *ports = cJSON_GetObjectItemCaseSensitive(s, "ports");
    const cJSON *protos = cJSON_GetObjectItemCaseSensitive(s, "protocols");
    const cJSON *comps = cJSON_GetObjectItemCaseSensitive(s, "components");
    const char *why = NULL;
    if (!cJSON_IsObject(s) || !only_keys(s, keys))
      why = "must be an object with namespace, podLabels, ports, protocols, components";
    else if (!ns && !pl)
      why = "needs a namespace or podLabels";
    else if (ns && (!cJSON_IsString(ns) || !k8s_label(ns->valuestring, strlen(ns->valuestring))))
      why = "namespace must be a Kubernetes name";
    else if (pl && (!cJSON_IsObject(pl) || !pl->child))
      why = "podLabels must be a non-empty object of strings";
    else if (!cJSON_IsArray(ports) || !ports->child)
      why = "ports must be a non-empty array of ports";
    else if (protos && !str_array(protos))
      why = "protocols must be a non-empty array of TCP, UDP, SCTP";
    else if (comps && !str_array(comps))
      why = "components must be a non-empty array of execution-plane, agent";
    for (const cJSON *it = pl ? pl->child : NULL; !why && it; it = it->next)
      if (!cJSON_IsString(it)) why = "podLabels must be a non-empty object of strings";
    for (const cJSON *it = ports ? ports->child : NULL; !why && it; it = it->next)
      if (!cJSON_IsNumber(it) || it->valuedouble < 1 || it->valuedouble > 65535 ||
          it->valuedouble != (double)(int)it->valuedouble)
        why = "ports must be integers from 1 to 65535";
    for (const cJSON *it = protos ? protos->child : NULL; !why && it; it = it->next)
      if (strcmp(it->valuestring, "TCP") && strcmp(it->valuestring, "UDP") && strcmp(it->valuestring, "SCTP"))
        why = "protocols must be TCP, UDP or SCTP";
    egress__render_component_t c;
    for (const cJSON *it = comps ? comps->child : NULL; !why && it; it = it->next)
      if (!egress__render_component_parse(it->valuestring, &c))
        why = "components must be execution-plane or agent";
    if (why) return egress__errf(errbuf, errlen, EGRESS_EPOLICY, "services[%zu]: %s", i, why);
  }
  return EGRESS_OK;
}

egress_status_t egress__render_baseline_load(const char *path, egress__render_baseline_t **out, char *errbuf,
                                             size_t errlen) {
  *out = NULL;
  FILE *f = fopen(path, "rb");
  if (!f) return egress__errf(errbuf, errlen, EGRESS_EIO, "cannot read: %s", strerror(errno));
  char buf[65536];
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  bool big = n == sizeof buf - 1 && fgetc(f) != EOF, bad = ferror(f);
  fclose(f);
  if (bad) return egress__errf(errbuf, errlen, EGRESS_EIO, "cannot read");
  if (big) return egress__errf(errbuf, errlen, EGRESS_EPOLICY, "larger than 64 KiB");
  buf[n] = '\0';
  egress__render_baseline_t *b = egress__calloc(1, sizeof *b);
  if (!b) return EGRESS_ENOMEM;
  if (strlen(buf) != n || !(b->doc = cJSON_ParseWithLength(buf, n))) {
    egress__free(b);
    return egress__errf(errbuf, errlen, EGRESS_EPOLICY, "not valid JSON");
  }
  egress_status_t st = baseline_check(b->doc, errbuf, errlen);
  if (st != EGRESS_OK) {
    egress__render_baseline_free(b);
    return st;
  }
  *out = b;
  return EGRESS_OK;
}

void egress__render_baseline_free(egress__render_baseline_t *b) {
  if (!b) return;
  cJSON_Delete(b->doc);
  egress__free(b);
}

static bool for_component(const cJSON *svc, egress__render_component_t comp) {
  const cJSON *comps = cJSON_GetObjectItemCaseSensitive(svc, "components");
  if (!comps) return true;
  for (const cJSON *it = comps->child; it; it = it->next)
    if (!strcmp(it->valuestring, component_label(comp))) return true;
  return false;
}

/* The platform's fixed allows; the NetworkPolicy alone denies the rest. */
static void jbaseline(jb_t *j, cJSON *items, const rctx_t *c, const cJSON *doc, const char *name,
                      const char *ns) {
  char bname[300];
  snprintf(bname, sizeof bname, "%s-baseline", name);
  cJSON *eg = jnetpol(j, items, c, bname, ns, "baseline");
  const cJSON *svc = cJSON_GetObjectItemCaseSensitive(doc, "services");
  for (const cJSON *s = svc->child; s; s = s->next) {
    if (!for_component(s, c->o->component)) continue;
    const cJSON *sns = cJSON_GetObjectItemCaseSensitive(s, "namespace");
    const cJSON *pl = cJSON_GetObjectItemCaseSensitive(s, "podLabels");
    const cJSON *protos = cJSON_GetObjectItemCaseSensitive(s, "protocols");
    cJSON *rule = jobj(j, eg, NULL);
    cJSON *peer = jobj(j, jarr(j, rule, "to"), NULL);
    if (sns) {
      const char *nsl[] = { "kubernetes.io/metadata.name", sns->valuestring, NULL };
      jlabels(j, jobj(j, peer, "namespaceSelector"), "matchLabels", nsl);
    }
    if (pl) {
      cJSON *ml = jobj(j, jobj(j, peer, "podSelector"), "matchLabels");
      for (const cJSON *it = pl->child; it; it = it->next) jstr(j, ml, it->string, it->valuestring);
    }
    cJSON *pa = jarr(j, rule, "ports");
    for (const cJSON *p = cJSON_GetObjectItemCaseSensitive(s, "ports")->child; p; p = p->next)
      for (const cJSON *pr = protos ? protos->child : NULL;; pr = pr->next) {
        cJSON *o = jobj(j, pa, NULL);
        jstr(j, o, "protocol", pr ? pr->valuestring : "TCP");
        jnum(j, o, "port", p->valuedouble);
        if (!pr || !pr->next) break;
      }
  }
}

/* Every pod of the namespace: egress denied unless a policy allows it.
 * The baseline and the system-of-record policies already deny by default
 * for the pods they select; this makes it explicit, and covers pods no
 * component label selects.  A plain NetworkPolicy in both formats: Cilium
 * enforces it as written, while a CiliumNetworkPolicy with an empty egress
 * list would not turn default deny on for the pods it selects.  Neither
 * the component nor the policy shows in it, so every rendering for the
 * namespace makes the same object. */
static void jdefault_deny(jb_t *j, cJSON *items, const char *ns) {
  cJSON *np = jobj(j, items, NULL);
  jstr(j, np, "apiVersion", "networking.k8s.io/v1");
  jstr(j, np, "kind", "NetworkPolicy");
  cJSON *m = jobj(j, np, "metadata");
  jstr(j, m, "name", "default-deny-egress");
  jstr(j, m, "namespace", ns);
  const char *labels[] = { "app.kubernetes.io/managed-by", "egressctl", "portarium.io/egress-layer",
                           "default-deny", NULL };
  jlabels(j, m, "labels", labels);
  cJSON *spec = jobj(j, np, "spec");
  jobj(j, spec, "podSelector");
  jstr(j, jarr(j, spec, "policyTypes"), NULL, "Egress");
  jarr(j, spec, "egress");
}

static const egress__prefix_t *all_roots(void) {
  static const egress__prefix_t roots[2] = { { .addr = { .family = 4 }, .len = 0 },
                                             { .addr = { .family = 6 }, .len = 0 } };
  return roots;
}

/* The egress rules of standard NetworkPolicy for the systems of record,
 * appended to @p eg: the pods it applies to (a component, or the gateway)
 * may reach what the allowlist can reach, as far as addresses and ports
 * can say it. */
static bool netpol_allow_rules(rctx_t *c, jb_t *j, cJSON *eg) {
  const egress_policy_t *p = c->p;
  pset_t np = { NULL, 0, 0 };
  groups_t gs = { NULL, 0, 0 };
  bool ok = false;

  /* Names: their ports, to every address that passes vetting. */
  for (size_t i = 0; i < p->nrules[EGRESS_LIST_ALLOW]; i++) {
    const egress__rule_t *a = &p->rules[EGRESS_LIST_ALLOW][i];
    pset_t one = { NULL, 0, 0 };
    if (!is_name_rule(a)) continue;
    bool fine = name_ports(c, a, false, &one);
    for (size_t k = 0; fine && k < one.n; k++) fine = pset_add(&np, one.r[k].lo, one.r[k].hi);
    egress__free(one.r);
    if (!fine) goto done;
  }
  if (!group_ports(c, &np, all_roots(), 2, &gs)) goto done;
  for (size_t g = 0; g < gs.n; g++) {
    cJSON *rule = jobj(j, NULL, NULL);
    cJSON *to = jarr(j, rule, "to");
    if (rule && jpeers(j, c, to, gs.g[g].seg, all_roots(), 2, true, false) > 0) {
      jports(j, jarr(j, rule, "ports"), &gs.g[g].ports, EGRESS__RENDER_NETWORKPOLICY, "TCP");
      if (!eg || !cJSON_AddItemToArray(eg, rule)) {
        cJSON_Delete(rule);
        j->fail = true;
      }
    } else {
      cJSON_Delete(rule);
    }
  }
  groups_free(&gs);

  /* CIDR entries: their range on their ports, less what fails vetting. */
  for (size_t i = 0; i < p->nrules[EGRESS_LIST_ALLOW]; i++) {
    const egress__rule_t *a = &p->rules[EGRESS_LIST_ALLOW][i];
    pset_t one = { NULL, 0, 0 };
    if (a->kind != EGRESS__RULE_CIDR) continue;
    bool fine = pset_push(&one, a->port_lo, a->port_hi) && group_ports(c, &one, &a->cidr, 1, &gs);
    egress__free(one.r);
    if (!fine) goto done;
    for (size_t g = 0; g < gs.n; g++) {
      cJSON *rule = jobj(j, NULL, NULL);
      cJSON *to = jarr(j, rule, "to");
      if (rule && jpeers(j, c, to, gs.g[g].seg, &a->cidr, 1, true, false) > 0) {
        jports(j, jarr(j, rule, "ports"), &gs.g[g].ports, EGRESS__RENDER_NETWORKPOLICY, "TCP");
        if (!eg || !cJSON_AddItemToArray(eg, rule)) {
          cJSON_Delete(rule);
          j->fail = true;
        }
      } else {
        cJSON_Delete(rule);
      }
    }
    groups_free(&gs);
  }
  ok = true;
done:
  groups_free(&gs);
  egress__free(np.r);
  return ok;
}

/* ------------------------------------------------------------------------ */
/* The egress gateway (--format gateway): README's "Pattern B", where the    */
/* agents reach the network only through egressd in pods of its own.       */
/* ------------------------------------------------------------------------ */

#define GATEWAY_PORT       3128
#define GATEWAY_ADMIN_PORT 9090
#define GATEWAY_COMPONENT  "egress-gateway"
#define GATEWAY_POLICY_DIR "/etc/egressd"

/* egressd's image when --gateway-image is not given. */
const char egress__render_default_gateway_image[] = "ghcr.io/portarium/egressd:" EGRESS_VERSION_STRING;

/* cluster DNS, as the default baseline names it: UDP and TCP 53. */
static void jdns_rule(jb_t *j, cJSON *eg) {
  cJSON *rule = jobj(j, eg, NULL);
  cJSON *peer = jobj(j, jarr(j, rule, "to"), NULL);
  const char *nsl[] = { "kubernetes.io/metadata.name", "kube-system", NULL };
  const char *pl[] = { "k8s-app", "kube-dns", NULL };
  jlabels(j, jobj(j, peer, "namespaceSelector"), "matchLabels", nsl);
  jlabels(j, jobj(j, peer, "podSelector"), "matchLabels", pl);
  cJSON *pa = jarr(j, rule, "ports");
  static const char *const protos[] = { "UDP", "TCP" };
  for (size_t i = 0; i < 2; i++) {
    cJSON *o = jobj(j, pa, NULL);
    jstr(j, o, "protocol", protos[i]);
    jnum(j, o, "port", 53);
  }
}

/* {"to"|"from": [{"podSelector": sel}], "ports": [TCP 3128]}: one peer. */
static void jpod_rule(jb_t *j, cJSON *arr, const char *dir, const char *const *sel) {
  cJSON *rule = jobj(j, arr, NULL);
  jlabels(j, jobj(j, jobj(j, jarr(j, rule, dir), NULL), "podSelector"), "matchLabels", sel);
  cJSON *port = jobj(j, jarr(j, rule, "ports"), NULL);
  jstr(j, port, "protocol", "TCP");
  jnum(j, port, "port", GATEWAY_PORT);
}

static void jgw_configmap(jb_t *j, cJSON *items, const rctx_t *c, const char *name, const char *ns) {
  char cname[320];
  snprintf(cname, sizeof cname, "%s-policy", name);
  cJSON *cm = jobj(j, items, NULL);
  jstr(j, cm, "apiVersion", "v1");
  jstr(j, cm, "kind", "ConfigMap");
  jmeta(j, cm, c, cname, ns, "gateway", GATEWAY_COMPONENT);
  cJSON *data = jobj(j, cm, "data");
  /* The file's own bytes, not a re-serialisation: egressd compiles exactly
   * what was rendered, and its digest is the one in the annotations. */
  char *text = egress__malloc(c->o->policy_len + 1); /* policy_text need not end in NUL */
  if (!text) {
    j->fail = true;
    return;
  }
  memcpy(text, c->o->policy_text, c->o->policy_len);
  text[c->o->policy_len] = '\0';
  jstr(j, data, "policy.json", text);
  egress__free(text);
}

/* Probes ask egressd's admin listener: /readyz turns 503 while egressd
 * drains, so the Service stops sending it clients before it stops. */
static void jprobe(jb_t *j, cJSON *ctr, const char *key, const char *path, double delay, double period) {
  cJSON *pr = jobj(j, ctr, key);
  cJSON *get = jobj(j, pr, "httpGet");
  jstr(j, get, "path", path);
  jstr(j, get, "port", "admin");
  jnum(j, pr, "initialDelaySeconds", delay);
  jnum(j, pr, "periodSeconds", period);
}

static void jgw_deployment(jb_t *j, cJSON *items, const rctx_t *c, const char *name, const char *ns,
                           const char *const *sel) {
  char cname[320], listen[32], admin[32];
  snprintf(cname, sizeof cname, "%s-policy", name);
  snprintf(listen, sizeof listen, "0.0.0.0:%d", GATEWAY_PORT);
  snprintf(admin, sizeof admin, "0.0.0.0:%d", GATEWAY_ADMIN_PORT);
  cJSON *d = jobj(j, items, NULL);
  jstr(j, d, "apiVersion", "apps/v1");
  jstr(j, d, "kind", "Deployment");
  jmeta(j, d, c, name, ns, "gateway", GATEWAY_COMPONENT);
  cJSON *spec = jobj(j, d, "spec");
  jnum(j, spec, "replicas", c->o->replicas ? c->o->replicas : 2);
  jlabels(j, jobj(j, spec, "selector"), "matchLabels", sel);
  cJSON *tmpl = jobj(j, spec, "template");
  cJSON *tm = jobj(j, tmpl, "metadata");
  jlabels(j, tm, "labels", sel);
  /* A new policy changes the pod template, so applying it rolls the pods
   * over even where the kubelet is slow to refresh the mounted file. */
  const char *ann[] = { "portarium.io/egress-policy-digest", c->p->digest, NULL };
  jlabels(j, tm, "annotations", ann);
  cJSON *ps = jobj(j, tmpl, "spec");
  jbool(j, ps, "automountServiceAccountToken", false);
  cJSON *psc = jobj(j, ps, "securityContext");
  jbool(j, psc, "runAsNonRoot", true);
  jnum(j, psc, "runAsUser", 65532);
  jnum(j, psc, "runAsGroup", 65532);
  jstr(j, jobj(j, psc, "seccompProfile"), "type", "RuntimeDefault");
  cJSON *ctr = jobj(j, jarr(j, ps, "containers"), NULL);
  jstr(j, ctr, "name", "egressd");
  jstr(j, ctr, "image", c->o->gateway_image ? c->o->gateway_image : egress__render_default_gateway_image);
  cJSON *cmd = jarr(j, ctr, "command");
  const char *argv[] = {
    "egressd", "--listen", listen, "--admin", admin, "--policy", GATEWAY_POLICY_DIR "/policy.json", NULL
  };
  for (size_t i = 0; argv[i]; i++) jstr(j, cmd, NULL, argv[i]);
  cJSON *ports = jarr(j, ctr, "ports");
  cJSON *port = jobj(j, ports, NULL);
  jstr(j, port, "name", "proxy");
  jnum(j, port, "containerPort", GATEWAY_PORT);
  jstr(j, port, "protocol", "TCP");
  cJSON *aport = jobj(j, ports, NULL);
  jstr(j, aport, "name", "admin");
  jnum(j, aport, "containerPort", GATEWAY_ADMIN_PORT);
  jstr(j, aport, "protocol", "TCP");
  jprobe(j, ctr, "readinessProbe", "/readyz", 1, 5);
  jprobe(j, ctr, "livenessProbe", "/healthz", 10, 10);
  cJSON *res = jobj(j, ctr, "resources");
  const char *req[] = { "cpu", "100m", "memory", "64Mi", NULL };
  const char *lim[] = { "cpu", "1", "memory", "256Mi", NULL };
  jlabels(j, res, "requests", req);
  jlabels(j, res, "limits", lim);
  cJSON *sc = jobj(j, ctr, "securityContext");
  jbool(j, sc, "allowPrivilegeEscalation", false);
  jbool(j, sc, "readOnlyRootFilesystem", true);
  jbool(j, sc, "runAsNonRoot", true);
  jstr(j, jarr(j, jobj(j, sc, "capabilities"), "drop"), NULL, "ALL");
  cJSON *vm = jobj(j, jarr(j, ctr, "volumeMounts"), NULL);
  jstr(j, vm, "name", "policy");
  jstr(j, vm, "mountPath", GATEWAY_POLICY_DIR);
  jbool(j, vm, "readOnly", true);
  cJSON *vol = jobj(j, jarr(j, ps, "volumes"), NULL);
  jstr(j, vol, "name", "policy");
  jstr(j, jobj(j, vol, "configMap"), "name", cname);
}

static void jgw_service(jb_t *j, cJSON *items, const rctx_t *c, const char *name, const char *ns,
                        const char *const *sel) {
  cJSON *svc = jobj(j, items, NULL);
  jstr(j, svc, "apiVersion", "v1");
  jstr(j, svc, "kind", "Service");
  jmeta(j, svc, c, name, ns, "gateway", GATEWAY_COMPONENT);
  cJSON *spec = jobj(j, svc, "spec");
  jstr(j, spec, "type", "ClusterIP");
  jlabels(j, spec, "selector", sel);
  cJSON *port = jobj(j, jarr(j, spec, "ports"), NULL);
  jstr(j, port, "name", "proxy");
  jstr(j, port, "protocol", "TCP");
  jnum(j, port, "port", GATEWAY_PORT);
  jnum(j, port, "targetPort", GATEWAY_PORT);
}

/*
 * The gateway and the fence around it.  The agents' own policy allows the
 * gateway and DNS and nothing else; the gateway's allows what the
 * allowlist can reach, rendered by the same rules as --format
 * networkpolicy (so a host name opens its ports to every address that
 * passes vetting), plus DNS; only the agents may connect to it.
 */
static bool render_gateway(rctx_t *c, jb_t *j, cJSON *items, const char *name, const char *ns) {
  char pname[320];
  const char *agent = component_label(c->o->component);
  const char *gw[] = { "portarium.io/component", GATEWAY_COMPONENT, "app.kubernetes.io/instance", name,
                       NULL };
  const char *agents[] = { "portarium.io/component", agent, NULL };

  jgw_configmap(j, items, c, name, ns);
  jgw_deployment(j, items, c, name, ns, gw);
  jgw_service(j, items, c, name, ns, gw);

  snprintf(pname, sizeof pname, "%s-clients", name);
  cJSON *eg = jnetpol_for(j, items, c, pname, ns, "gateway", agent, agents, false);
  jpod_rule(j, eg, "to", gw);
  jdns_rule(j, eg);

  snprintf(pname, sizeof pname, "%s-ingress", name);
  jpod_rule(j, jnetpol_for(j, items, c, pname, ns, "gateway", GATEWAY_COMPONENT, gw, true), "from", agents);

  snprintf(pname, sizeof pname, "%s-egress", name);
  eg = jnetpol_for(j, items, c, pname, ns, "system-of-record", GATEWAY_COMPONENT, gw, false);
  if (!netpol_allow_rules(c, j, eg)) return false;
  jdns_rule(j, eg);
  return true;
}

/* Standard NetworkPolicy for the systems of record. */
static bool render_netpol(rctx_t *c, jb_t *j, cJSON *items, const char *name, const char *ns) {
  return netpol_allow_rules(c, j, jnetpol(j, items, c, name, ns, "system-of-record"));
}

static void jfqdn(jb_t *j, cJSON *arr, const egress__rule_t *a) {
  char buf[EGRESS__NAME_MAX + 8];
  cJSON *o = jobj(j, arr, NULL);
  switch (a->kind) {
    case EGRESS__RULE_EXACT: jstr(j, o, "matchName", a->name); break;
    case EGRESS__RULE_WILD1:
      snprintf(buf, sizeof buf, "*.%s", a->name);
      jstr(j, o, "matchPattern", buf);
      break;
    case EGRESS__RULE_WILDN:
      snprintf(buf, sizeof buf, "**.%s", a->name);
      jstr(j, o, "matchPattern", buf);
      break;
    default: jstr(j, o, "matchPattern", "*"); break;
  }
}

static bool render_cilium(rctx_t *c, jb_t *j, cJSON *items, const char *name, const char *ns) {
  const egress_policy_t *p = c->p;
  groups_t gs = { NULL, 0, 0 };
  pset_t all = { NULL, 0, 0 };
  bool ok = false;

  cJSON *cnp = jobj(j, items, NULL);
  jstr(j, cnp, "apiVersion", "cilium.io/v2");
  jstr(j, cnp, "kind", "CiliumNetworkPolicy");
  jmeta(j, cnp, c, name, ns, "system-of-record", component_label(c->o->component));
  cJSON *spec = jobj(j, cnp, "spec");
  const char *sel[] = { "portarium.io/component", component_label(c->o->component), NULL };
  jlabels(j, jobj(j, spec, "endpointSelector"), "matchLabels", sel);
  cJSON *eg = jarr(j, spec, "egress");

  /* DNS through the proxy, so that Cilium learns what names resolve to. */
  {
    cJSON *rule = jobj(j, eg, NULL);
    const char *dnsl[] = { "k8s:io.kubernetes.pod.namespace", "kube-system", "k8s:k8s-app", "kube-dns",
                           NULL };
    jlabels(j, jobj(j, jarr(j, rule, "toEndpoints"), NULL), "matchLabels", dnsl);
    cJSON *tp = jobj(j, jarr(j, rule, "toPorts"), NULL);
    cJSON *po = jobj(j, jarr(j, tp, "ports"), NULL);
    jstr(j, po, "port", "53");
    jstr(j, po, "protocol", "ANY");
    jstr(j, jobj(j, jarr(j, jobj(j, tp, "rules"), "dns"), NULL), "matchPattern", "*");
  }

  for (size_t i = 0; i < p->nrules[EGRESS_LIST_ALLOW]; i++) {
    const egress__rule_t *a = &p->rules[EGRESS_LIST_ALLOW][i];
    if (a->kind == EGRESS__RULE_REGEX) {
      note_unrenderable(c, EGRESS_LIST_ALLOW, i, regex_what);
      continue;
    }
    if (a->kind == EGRESS__RULE_CIDR) {
      pset_t one = { NULL, 0, 0 };
      bool fine = pset_push(&one, a->port_lo, a->port_hi) && group_ports(c, &one, &a->cidr, 1, &gs);
      egress__free(one.r);
      if (!fine) goto done;
      for (size_t g = 0; g < gs.n; g++) {
        cJSON *rule = jobj(j, NULL, NULL);
        cJSON *to = jarr(j, rule, "toCIDRSet");
        if (rule && jpeers(j, c, to, gs.g[g].seg, &a->cidr, 1, false, false) > 0) {
          jports(j, jarr(j, jobj(j, jarr(j, rule, "toPorts"), NULL), "ports"), &gs.g[g].ports,
                 EGRESS__RENDER_CILIUM, "TCP");
          if (!eg || !cJSON_AddItemToArray(eg, rule)) {
            cJSON_Delete(rule);
            j->fail = true;
          }
        } else {
          cJSON_Delete(rule);
        }
      }
      groups_free(&gs);
      continue;
    }
    pset_t ports = { NULL, 0, 0 };
    if (!name_ports(c, a, true, &ports)) {
      egress__free(ports.r);
      goto done;
    }
    if (ports.n > 0) {
      cJSON *rule = jobj(j, eg, NULL);
      jfqdn(j, jarr(j, rule, "toFQDNs"), a);
      jports(j, jarr(j, jobj(j, jarr(j, rule, "toPorts"), NULL), "ports"), &ports, EGRESS__RENDER_CILIUM,
             "TCP");
    }
    egress__free(ports.r);
  }

  /* egressDeny: whatever fails vetting, per group of ports.  Deny wins over
   * every allow in Cilium, which is the checker's precedence too. */
  if (!pset_push(&all, 1, 65535) || !group_ports(c, &all, all_roots(), 2, &gs)) goto done;
  {
    cJSON *deny = NULL;
    for (size_t g = 0; g < gs.n; g++) {
      size_t s = gs.g[g].seg;
      if (c->fset[0][s].n + c->fset[1][s].n == 0) continue;
      if (!deny) deny = jarr(j, spec, "egressDeny");
      cJSON *rule = jobj(j, deny, NULL);
      cJSON *to = jarr(j, rule, "toCIDRSet");
      jpeers(j, c, to, s, all_roots(), 2, false, true);
      if (!(gs.g[g].ports.n == 1 && gs.g[g].ports.r[0].lo == 1 && gs.g[g].ports.r[0].hi == 65535))
        jports(j, jarr(j, jobj(j, jarr(j, rule, "toPorts"), NULL), "ports"), &gs.g[g].ports,
               EGRESS__RENDER_CILIUM, "ANY");
    }
  }
  ok = true;
done:
  groups_free(&gs);
  egress__free(all.r);
  return ok;
}

/* ------------------------------------------------------------------------ */
/* Entry points.                                                             */
/* ------------------------------------------------------------------------ */

bool egress__render_component_parse(const char *s, egress__render_component_t *out) {
  if (!s || !out) return false;
  if (!strcmp(s, "execution-plane"))
    *out = EGRESS__COMPONENT_EXECUTION_PLANE;
  else if (!strcmp(s, "agent"))
    *out = EGRESS__COMPONENT_AGENT;
  else
    return false;
  return true;
}

bool egress__render_format_parse(const char *s, egress__render_format_t *out) {
  if (!s || !out) return false;
  if (!strcmp(s, "networkpolicy"))
    *out = EGRESS__RENDER_NETWORKPOLICY;
  else if (!strcmp(s, "cilium"))
    *out = EGRESS__RENDER_CILIUM;
  else if (!strcmp(s, "gateway"))
    *out = EGRESS__RENDER_GATEWAY;
  else
    return false;
  return true;
}

const char *egress__render_component_name(egress__render_component_t c) { return component_label(c); }

/* RFC 1123 label as Kubernetes checks it: [a-z0-9]([-a-z0-9]*[a-z0-9])?. */
static bool k8s_label(const char *s, size_t n) {
  if (n == 0 || n > 63) return false;
  for (size_t i = 0; i < n; i++) {
    char ch = s[i];
    bool alnum = (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9');
    if (!alnum && !(ch == '-' && i > 0 && i + 1 < n)) return false;
  }
  return true;
}

/* Object names: RFC 1123 subdomain, leaving room for "-baseline". */
static bool k8s_name(const char *s) {
  size_t n = strlen(s), start = 0;
  if (n == 0 || n > 253 - 9) return false;
  for (size_t i = 0; i <= n; i++)
    if (i == n || s[i] == '.') {
      if (!k8s_label(s + start, i - start)) return false;
      start = i + 1;
    }
  return true;
}

/* @p s for a message: at most 80 bytes of it, each byte that is not
 * printable ASCII (or is a quote or backslash) written as an escape, so
 * that a hostile value cannot forge lines of its own. */
static void quoted(char *buf, size_t len, const char *s) {
  size_t o = 0;
  for (size_t i = 0; s[i] && i < 80 && o + 5 < len; i++) {
    unsigned char ch = (unsigned char)s[i];
    if (ch == '"' || ch == '\\') {
      buf[o++] = '\\';
      buf[o++] = (char)ch;
    } else if (ch < 0x20 || ch >= 0x7f) {
      o += (size_t)snprintf(buf + o, len - o, "\\x%02x", ch);
    } else {
      buf[o++] = (char)ch;
    }
  }
  buf[o] = '\0';
}

/* An image reference as the container runtime reads it,
 * [registry[:port]/]path[:tag][@algorithm:digest], checked for the
 * characters it may hold: the value goes into the manifest as it is. */
static bool image_ref(const char *s) {
  size_t n = strlen(s);
  if (n == 0 || n > 255 ||
      !((s[0] >= 'a' && s[0] <= 'z') || (s[0] >= 'A' && s[0] <= 'Z') || (s[0] >= '0' && s[0] <= '9')))
    return false;
  for (size_t i = 0; i < n; i++)
    if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-/:@", s[i])) return false;
  return s[n - 1] != '/' && s[n - 1] != ':' && s[n - 1] != '@';
}

/* What Kubernetes stores as ConfigMap "data": UTF-8 text (else it would
 * need binaryData), without NUL, at most 1 MiB for the whole object. */
static const char *configmap_text_problem(const char *s, size_t n) {
  if (n > 1000000) return "is larger than a ConfigMap holds (1 MB)";
  for (size_t i = 0; i < n;) {
    unsigned char b = (unsigned char)s[i];
    size_t k = b < 0x80 ? 0 : (b & 0xe0) == 0xc0 ? 1 : (b & 0xf0) == 0xe0 ? 2 : (b & 0xf8) == 0xf0 ? 3 : 4;
    if (b == 0) return "holds a NUL byte";
    if (k == 4 || (k == 1 && b < 0xc2) || (k == 3 && b > 0xf4) || k >= n - i) return "is not UTF-8";
    uint32_t cp = k == 0 ? b : b & (0x3f >> k);
    for (size_t m = 1; m <= k; m++) {
      unsigned char cb = (unsigned char)s[i + m];
      if ((cb & 0xc0) != 0x80) return "is not UTF-8";
      cp = cp << 6 | (cb & 0x3f);
    }
    if ((k == 2 && cp < 0x800) || (k == 3 && (cp < 0x10000 || cp > 0x10ffff)) ||
        (cp >= 0xd800 && cp <= 0xdfff))
      return "is not UTF-8";
    i += k + 1;
  }
  return NULL;
}

/* The options only --format gateway reads, checked before anything is
 * built.  The policy text is what the caller compiled @p policy from. */
static egress_status_t gateway_opts_check(const egress__render_opts_t *o, char *errbuf, size_t errlen) {
  char q[400];
  if (o->gateway_image && !image_ref(o->gateway_image)) {
    quoted(q, sizeof q, o->gateway_image);
    return egress__errf(errbuf, errlen, EGRESS_EINVAL,
                        "gateway image \"%s\" is not an image reference (letters, digits and ._-/:@, "
                        "at most 255)",
                        q);
  }
  if (o->replicas > EGRESS__RENDER_MAX_REPLICAS)
    return egress__errf(errbuf, errlen, EGRESS_EINVAL, "replicas %u is more than %u", o->replicas,
                        EGRESS__RENDER_MAX_REPLICAS);
  if (!o->policy_text)
    return egress__errf(errbuf, errlen, EGRESS_EINVAL, "the gateway needs the policy text");
  const char *why = configmap_text_problem(o->policy_text, o->policy_len);
  if (why) return egress__errf(errbuf, errlen, EGRESS_EPOLICY, "the policy file %s", why);
  return EGRESS_OK;
}

egress_status_t egress__render(const egress_policy_t *policy, const egress__render_opts_t *opts,
                               egress__render_note_cb note, void *user_data, char **out, char *errbuf,
                               size_t errlen) {
  rctx_t c;
  jb_t j = { false };
  cJSON *root = NULL;
  char *text = NULL, defname[64];
  egress_status_t st;

  if (out) *out = NULL;
  if (!policy || !opts || !out) return egress__errf(errbuf, errlen, EGRESS_EINVAL, "missing argument");
  const char *ns = opts->name_space ? opts->name_space : "portarium";
  bool gateway = opts->format == EGRESS__RENDER_GATEWAY;
  if (gateway)
    snprintf(defname, sizeof defname, "egress-gateway");
  else
    snprintf(defname, sizeof defname, "egress-%s", component_label(opts->component));
  const char *name = opts->name ? opts->name : defname;
  if (!k8s_label(ns, strlen(ns)))
    return egress__errf(errbuf, errlen, EGRESS_EINVAL,
                        "namespace \"%.80s\" is not a Kubernetes name (RFC 1123 label: "
                        "lower-case letters, digits and '-', at most 63)",
                        ns);
  if (!k8s_name(name))
    return egress__errf(errbuf, errlen, EGRESS_EINVAL,
                        "name \"%.80s\" is not a Kubernetes object name (RFC 1123 subdomain, "
                        "at most 244 so that \"-baseline\" fits)",
                        name);
  /* The gateway's name is its Service's, an RFC 1035 label. */
  if (gateway && (!k8s_label(name, strlen(name)) || name[0] < 'a' || name[0] > 'z'))
    return egress__errf(errbuf, errlen, EGRESS_EINVAL,
                        "name \"%.80s\" cannot name the gateway's Service (RFC 1035 label: lower-case "
                        "letters, digits and '-', starting with a letter, at most 63)",
                        name);
  if (gateway && (st = gateway_opts_check(opts, errbuf, errlen)) != EGRESS_OK) return st;

  st = rctx_init(&c, policy);
  if (st != EGRESS_OK) goto done;
  c.o = opts;
  c.note = note;
  c.ud = user_data;

  root = jobj(&j, NULL, NULL);
  jstr(&j, root, "apiVersion", "v1");
  jstr(&j, root, "kind", "List");
  jobj(&j, root, "metadata");
  cJSON *items = jarr(&j, root, "items");
  cJSON *def = NULL;
  const cJSON *base = opts->baseline ? opts->baseline->doc : NULL;
  if (!base && !(base = def = cJSON_Parse(default_baseline))) {
    st = EGRESS_ENOMEM;
    goto done;
  }
  if (!gateway) jbaseline(&j, items, &c, base, name, ns);
  cJSON_Delete(def);
  bool built = gateway                                 ? render_gateway(&c, &j, items, name, ns)
               : opts->format == EGRESS__RENDER_CILIUM ? render_cilium(&c, &j, items, name, ns)
                                                       : render_netpol(&c, &j, items, name, ns);
  jdefault_deny(&j, items, ns);
  if (!built || j.fail || c.oom) {
    st = EGRESS_ENOMEM;
    goto done;
  }
  for (size_t i = 0; i < policy->nrules[EGRESS_LIST_ALLOW]; i++)
    if (c.closed[i]) note_unrenderable(&c, EGRESS_LIST_ALLOW, i, closed_what);
  if (c.unrenderable > 0 && !opts->skip_unrenderable) {
    st = egress__errf(errbuf, errlen, EGRESS_EPOLICY, "cannot render %s%s: %s",
                      c.unrenderable > 1 ? "entries, first " : "",
                      opts->format == EGRESS__RENDER_CILIUM ? "for Cilium" : "as NetworkPolicy", c.first);
    goto done;
  }
  if (opts->yaml) {
    if (!(text = egress__render_yaml(root))) {
      st = EGRESS_ENOMEM;
      goto done;
    }
    *out = text;
    st = EGRESS_OK;
    goto done;
  }
  char *js = cJSON_Print(root);
  if (!js) {
    st = EGRESS_ENOMEM;
    goto done;
  }
  size_t len = strlen(js);
  text = egress__malloc(len + 2);
  if (text) {
    memcpy(text, js, len);
    text[len] = '\n';
    text[len + 1] = '\0';
  }
  cJSON_free(js);
  if (!text) {
    st = EGRESS_ENOMEM;
    goto done;
  }
  *out = text;
  st = EGRESS_OK;
done:
  if (st == EGRESS_ENOMEM) egress__errf(errbuf, errlen, st, "out of memory while rendering");
  cJSON_Delete(root);
  rctx_free(&c);
  return st;
}

/* ------------------------------------------------------------------------ */
/* Lint.                                                                     */
/* ------------------------------------------------------------------------ */

/* Does every destination rule @p b (list lb) matches also match rule @p a
 * (list la)?  For allow CIDRs a narrower rule can open special-purpose
 * space that a wider one cannot, so it is not shadowed then. */
static bool rule_covers(const egress__rule_t *a, const egress__rule_t *b) {
  if (!ports_cover(a, b->port_lo, b->port_hi)) return false;
  if (a->kind == EGRESS__RULE_CIDR || b->kind == EGRESS__RULE_CIDR) {
    if (a->kind != b->kind || !pfx_within(&a->cidr, &b->cidr)) return false;
    if (a->list == EGRESS_LIST_ALLOW && b->list == EGRESS_LIST_ALLOW) {
      for (size_t i = 0; i < egress__special_block_count; i++) {
        const egress__special_block_t *blk = &egress__special_blocks[i];
        if (!blk->global && blk->prefix.len > a->cidr.len && blk->prefix.len <= b->cidr.len &&
            pfx_overlap(&blk->prefix, &b->cidr))
          return false;
      }
    }
    return true;
  }
  if (name_rel(a, b) != REL_COVERS) return false;
  /* Paths only narrow allow entries; a deny entry is host:port wide. */
  if (a->list == EGRESS_LIST_ALLOW && b->list == EGRESS_LIST_ALLOW && a->path) {
    size_t n = strlen(a->path);
    if (!b->path || strncmp(a->path, b->path, n) || (b->path[n] && b->path[n] != '/')) return false;
  }
  return true;
}

typedef struct lint_ctx {
  egress__lint_cb warn;
  void *ud;
  long count;
  const char *prefix;
} lint_ctx_t;

static void lint_note(egress__lint_level_t level, egress_list_t list, size_t index, const char *entry,
                      const char *what, lint_ctx_t *l) {
  char buf[600];
  l->count++;
  if (!l->warn) return;
  if (!l->prefix) { /* most findings: no copy */
    l->warn(level, list, index, entry, what, l->ud);
    return;
  }
  snprintf(buf, sizeof buf, "%s%s", l->prefix, what);
  l->warn(level, list, index, entry, buf, l->ud);
}

/* ------------------------------------------------------------------------ */
/* Lint lookups.                                                             */
/*                                                                          */
/* Comparing every pair of entries made lint quadratic (a minute at 100 000  */
/* entries).  Instead the entries of each list are indexed by what a rule    */
/* that covers another must share with it: the exact name, the wildcard      */
/* suffix, the regex pattern or the CIDR prefix.  The rules that can cover   */
/* an entry are then found by looking up its name, its parent and each of    */
/* its label suffixes, or each prefix length that contains its range; only   */
/* "re:" entries are still tried one by one, against exact names.            */
/* ------------------------------------------------------------------------ */

/* A rule's lookup key: kind plus name, suffix, pattern, or family, length
 * and masked address bytes.  @p p points into the rule or into buf. */
typedef struct lkey {
  egress__rule_kind_t kind;
  const uint8_t *p;
  size_t len;
  uint8_t buf[18];
} lkey_t;

static void key_prefix(lkey_t *k, const egress__ip_t *ip, unsigned len) {
  memset(k->buf, 0, sizeof k->buf);
  k->kind = EGRESS__RULE_CIDR;
  k->buf[0] = ip->family;
  k->buf[1] = (uint8_t)len;
  for (unsigned i = 0; i < len / 8; i++) k->buf[2 + i] = ip->bytes[i];
  if (len % 8) k->buf[2 + len / 8] = (uint8_t)(ip->bytes[len / 8] & (0xFFu << (8 - len % 8)));
  k->p = k->buf;
  k->len = sizeof k->buf;
}

static void key_name(lkey_t *k, egress__rule_kind_t kind, const char *s, size_t len) {
  k->kind = kind;
  k->p = (const uint8_t *)s;
  k->len = len;
}

/* What same_regex compares: the text from the first ':' on. */
static const char *regex_pattern(const egress__rule_t *r) {
  const char *colon = strchr(r->text, ':');
  return colon ? colon : r->text;
}

static void key_rule(lkey_t *k, const egress__rule_t *r) {
  switch (r->kind) {
    case EGRESS__RULE_CIDR: key_prefix(k, &r->cidr.addr, r->cidr.len); break;
    case EGRESS__RULE_REGEX: {
      const char *pat = regex_pattern(r);
      key_name(k, r->kind, pat, strlen(pat));
      break;
    }
    case EGRESS__RULE_ANY: key_name(k, r->kind, "", 0); break;
    default: key_name(k, r->kind, r->name, r->name_len); break;
  }
}

static int key_cmp(const lkey_t *a, const lkey_t *b) {
  if (a->kind != b->kind) return a->kind < b->kind ? -1 : 1;
  int c = memcmp(a->p, b->p, a->len < b->len ? a->len : b->len);
  if (c) return c;
  return a->len < b->len ? -1 : a->len > b->len;
}

/* FNV-1a, then a final mix so that the low bits (the table slot) depend on
 * every byte: keys of one policy differ mostly in their last bytes. */
static uint64_t key_hash(const lkey_t *k) {
  uint64_t h = 1469598103934665603ull ^ (uint64_t)k->kind;
  for (size_t i = 0; i < k->len; i++) h = (h ^ k->p[i]) * 1099511628211ull;
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdull;
  h ^= h >> 33;
  return h;
}

/* Besides the key, rule_covers looks at the URL path (between allow
 * entries) and at the ports: rules equal in all of it cover and are covered
 * alike, and form a group.  Within a key, groups are ordered by path, then
 * port ranges before single ports, then ports: so the groups of one path
 * are neighbours, and among them the single ports can be searched. */
static const char *rule_path(const egress__rule_t *r) {
  return r->list == EGRESS_LIST_ALLOW ? r->path : NULL;
}

static int path_cmp(const char *a, size_t al, const char *b, size_t bl) {
  if (!a || !b) return a ? 1 : b ? -1 : 0;
  int c = memcmp(a, b, al < bl ? al : bl);
  if (c) return c;
  return al < bl ? -1 : al > bl;
}

static int sig_cmp(const egress__rule_t *a, const egress__rule_t *b) {
  const char *pa = rule_path(a), *pb = rule_path(b);
  int c = path_cmp(pa, pa ? strlen(pa) : 0, pb, pb ? strlen(pb) : 0);
  if (c) return c;
  bool sa = a->port_lo == a->port_hi, sb = b->port_lo == b->port_hi;
  if (sa != sb) return sa ? 1 : -1;
  if (a->port_lo != b->port_lo) return a->port_lo < b->port_lo ? -1 : 1;
  if (a->port_hi != b->port_hi) return a->port_hi < b->port_hi ? -1 : 1;
  return 0;
}

/* Rules in the order the index is built in: by key hash first (an integer
 * compare settles almost every step of the sort), then key, signature and
 * index, so that a bucket's rules, and a group's, are neighbours with the
 * lowest index first. */
typedef struct lrule {
  uint64_t hash;
  const egress__rule_t *r;
} lrule_t;

static int lrule_order(const void *x, const void *y) {
  const lrule_t *a = x, *b = y;
  if (a->hash != b->hash) return a->hash < b->hash ? -1 : 1;
  lkey_t ka, kb;
  key_rule(&ka, a->r);
  key_rule(&kb, b->r);
  int c = key_cmp(&ka, &kb);
  if (!c) c = sig_cmp(a->r, b->r);
  if (!c) c = a->r->index < b->r->index ? -1 : a->r->index > b->r->index;
  return c;
}

/* A group, represented by its lowest index (every other member is a
 * duplicate of it), with what its members share. */
typedef struct lgroup {
  size_t first;
  const char *path; /* NULL in the deny list, where paths do not count */
  size_t plen;
  uint16_t lo, hi;
} lgroup_t;

/* A bucket: the groups of one key. */
typedef struct lbucket {
  size_t rep;    /* a member: its key is the bucket's */
  size_t g0, ng; /* groups g[g0 .. g0 + ng) */
} lbucket_t;

/* A table slot keeps the key's hash, so that a probe past other keys
 * touches nothing else. */
typedef struct lslot {
  uint64_t hash;
  size_t bucket; /* bucket number + 1, 0 when free */
} lslot_t;

typedef struct lindex {
  const egress__rule_t *rules;
  egress_list_t list;
  lgroup_t *g;
  size_t *bucket_of; /* each rule's own bucket: the lookup every entry
                        makes of its own key, without hashing */
  lbucket_t *b;
  size_t nb;
  lslot_t *slot; /* open addressing */
  size_t mask;
  uint64_t *bloom; /* two bits per key hash: most lookups are of suffixes
                        that no entry has, and the table is too big for the
                        cache at 100 000 entries; this filter is not */
  size_t bloom_mask;
  bool kinds[EGRESS__RULE_CIDR + 1]; /* kinds present */
  size_t any;                        /* the "*" bucket, SIZE_MAX when none */
  size_t *regex;                     /* the "re:" buckets */
  size_t nregex;
  bool lens[2][129]; /* CIDR prefix lengths present, IPv4 [0] and IPv6 [1] */
} lindex_t;

static void lindex_free(lindex_t *ix) {
  egress__free(ix->g);
  egress__free(ix->bucket_of);
  egress__free(ix->b);
  egress__free(ix->slot);
  egress__free(ix->bloom);
  egress__free(ix->regex);
  memset(ix, 0, sizeof *ix);
}

static bool bloom_may(const lindex_t *ix, uint64_t hash) {
  size_t b1 = (size_t)(hash >> 20) & ix->bloom_mask, b2 = (size_t)(hash >> 42) & ix->bloom_mask;
  return (ix->bloom[b1 / 64] >> (b1 % 64) & 1) && (ix->bloom[b2 / 64] >> (b2 % 64) & 1);
}

static size_t bucket_find(const lindex_t *ix, const lkey_t *k) {
  if (!ix->slot || !ix->kinds[k->kind]) return SIZE_MAX;
  uint64_t hash = key_hash(k);
  if (!bloom_may(ix, hash)) return SIZE_MAX;
  for (size_t h = (size_t)hash & ix->mask;; h = (h + 1) & ix->mask) {
    size_t v = ix->slot[h].bucket;
    if (!v) return SIZE_MAX;
    if (ix->slot[h].hash != hash) continue;
    lkey_t kb;
    key_rule(&kb, &ix->rules[ix->b[v - 1].rep]);
    if (!key_cmp(k, &kb)) return v - 1;
  }
}

/* A bucket's run of rules in the sort, and its lowest index. */
typedef struct lrun {
  size_t min, start, end;
} lrun_t;

static bool lindex_build(lindex_t *ix, const egress_policy_t *p, egress_list_t list) {
  size_t n = p->nrules[list], nruns = 0, regex_cap = 0, ng = 0;
  lrule_t *ord = NULL;
  lrun_t *runs = NULL, *sorted = NULL;
  size_t *at = NULL;
  bool ok = false;

  memset(ix, 0, sizeof *ix);
  ix->rules = p->rules[list];
  ix->list = list;
  ix->any = SIZE_MAX;
  if (n == 0) return true;
  if (n > SIZE_MAX / 32 / sizeof *ix->slot) return false;
  ord = egress__malloc(n * sizeof *ord);
  runs = egress__malloc(n * sizeof *runs);
  sorted = egress__malloc(n * sizeof *sorted);
  at = egress__malloc(n * sizeof *at);
  ix->g = egress__malloc(n * sizeof *ix->g);
  ix->bucket_of = egress__malloc(n * sizeof *ix->bucket_of);
  ix->b = egress__malloc(n * sizeof *ix->b);
  if (!ord || !runs || !sorted || !at || !ix->g || !ix->bucket_of || !ix->b) goto done;
  for (size_t i = 0; i < n; i++) {
    lkey_t k;
    key_rule(&k, &ix->rules[i]);
    ord[i].hash = key_hash(&k);
    ord[i].r = &ix->rules[i];
  }
  qsort(ord, n, sizeof *ord, lrule_order);

  /* The runs of equal keys are the buckets.  They are numbered in the
   * order of their lowest index, so that the lookups of their own key,
   * which every entry makes in list order, walk the arrays in order. */
  for (size_t i = 0; i < n; i++) {
    bool new_bucket = true;
    if (i > 0 && ord[i - 1].hash == ord[i].hash) {
      lkey_t ka, kb;
      key_rule(&ka, ord[i - 1].r);
      key_rule(&kb, ord[i].r);
      new_bucket = key_cmp(&ka, &kb) != 0;
    }
    if (new_bucket) {
      runs[nruns].min = ord[i].r->index;
      runs[nruns].start = i;
      nruns++;
    } else if (ord[i].r->index < runs[nruns - 1].min) {
      runs[nruns - 1].min = ord[i].r->index;
    }
    runs[nruns - 1].end = i + 1;
  }
  /* Lowest indices are distinct: a counting pass orders the runs. */
  for (size_t i = 0; i < n; i++) at[i] = SIZE_MAX;
  for (size_t k = 0; k < nruns; k++) at[runs[k].min] = k;
  for (size_t i = 0, k = 0; i < n; i++)
    if (at[i] != SIZE_MAX) sorted[k++] = runs[at[i]];
  memcpy(runs, sorted, nruns * sizeof *runs);

  for (size_t k = 0; k < nruns; k++) {
    lbucket_t *bk = &ix->b[ix->nb++];
    const egress__rule_t *first = ord[runs[k].start].r;
    bk->rep = first->index;
    bk->g0 = ng;
    bk->ng = 0;
    if (first->kind == EGRESS__RULE_ANY) ix->any = k;
    if (first->kind == EGRESS__RULE_REGEX) {
      if (!grow((void **)&ix->regex, &regex_cap, ix->nregex + 1, sizeof *ix->regex)) goto done;
      ix->regex[ix->nregex++] = k;
    }
    for (size_t i = runs[k].start; i < runs[k].end; i++) {
      const egress__rule_t *r = ord[i].r;
      if (i == runs[k].start || sig_cmp(ord[i - 1].r, r) != 0) {
        lgroup_t *g = &ix->g[ng++];
        g->first = r->index;
        g->path = rule_path(r);
        g->plen = g->path ? strlen(g->path) : 0;
        g->lo = r->port_lo;
        g->hi = r->port_hi;
        bk->ng++;
      }
      ix->bucket_of[r->index] = k;
      ix->kinds[r->kind] = true;
      if (r->kind == EGRESS__RULE_CIDR) ix->lens[r->cidr.addr.family == 6][r->cidr.len] = true;
    }
  }

  size_t cap = 16, bits = 1024;
  while (cap < 2 * ix->nb) cap *= 2;
  while (bits < 16 * ix->nb) bits *= 2;
  ix->slot = egress__calloc(cap, sizeof *ix->slot);
  ix->bloom = egress__calloc(bits / 64, sizeof *ix->bloom);
  if (!ix->slot || !ix->bloom) goto done;
  ix->mask = cap - 1;
  ix->bloom_mask = bits - 1;
  for (size_t k = 0; k < nruns; k++) {
    uint64_t hash = ord[runs[k].start].hash;
    size_t b1 = (size_t)(hash >> 20) & ix->bloom_mask, b2 = (size_t)(hash >> 42) & ix->bloom_mask;
    ix->bloom[b1 / 64] |= (uint64_t)1 << (b1 % 64);
    ix->bloom[b2 / 64] |= (uint64_t)1 << (b2 % 64);
    size_t h = (size_t)hash & ix->mask;
    while (ix->slot[h].bucket) h = (h + 1) & ix->mask;
    ix->slot[h].hash = hash;
    ix->slot[h].bucket = k + 1;
  }
  ok = true;
done:
  egress__free(ord);
  egress__free(runs);
  egress__free(sorted);
  egress__free(at);
  if (!ok) lindex_free(ix);
  return ok;
}

/* The lowest index of a rule of an index that covers @p b.  Between two
 * entries of one list that cover each other, only the earlier one counts:
 * the later is its duplicate (the order the pairwise scan reported in). */
typedef struct lquery {
  const egress__rule_t *b;
  bool same_list;
  size_t best; /* SIZE_MAX while none */
} lquery_t;

static void query_group(const lindex_t *ix, const lgroup_t *g, lquery_t *q) {
  size_t i = g->first;
  if (i >= q->best) return;
  const egress__rule_t *a = &ix->rules[i];
  if (!rule_covers(a, q->b)) return;
  /* A group that covers b both ways holds b's duplicates: its lowest
   * index counts only when it comes before b. */
  if (q->same_list && rule_covers(q->b, a) && i >= q->b->index) return;
  q->best = i;
}

/* The groups of a bucket with path @p p (NULL: none) that can cover b:
 * every port range, and the single port that is b's own when b has one (a
 * single port covers no other). */
static void query_run(const lindex_t *ix, const lbucket_t *bk, const char *p, size_t plen, lquery_t *q) {
  const lgroup_t *g = ix->g + bk->g0;
  size_t lo = 0, hi = bk->ng, end;
  if (bk->ng == 1) { /* most buckets */
    if (!path_cmp(g->path, g->plen, p, plen)) query_group(ix, g, q);
    return;
  }
  while (lo < hi) { /* first group with this path */
    size_t m = lo + (hi - lo) / 2;
    if (path_cmp(g[m].path, g[m].plen, p, plen) < 0)
      lo = m + 1;
    else
      hi = m;
  }
  end = lo;
  hi = bk->ng;
  while (end < hi) { /* first group past this path */
    size_t m = end + (hi - end) / 2;
    if (path_cmp(g[m].path, g[m].plen, p, plen) <= 0)
      end = m + 1;
    else
      hi = m;
  }
  size_t k = lo;
  for (; k < end && g[k].lo != g[k].hi; k++) query_group(ix, &g[k], q);
  if (q->b->port_lo != q->b->port_hi) return;
  lo = k;
  hi = end;
  while (lo < hi) { /* the single port equal to b's */
    size_t m = lo + (hi - lo) / 2;
    if (g[m].lo < q->b->port_lo)
      lo = m + 1;
    else
      hi = m;
  }
  if (lo < end && g[lo].lo == q->b->port_lo) query_group(ix, &g[lo], q);
}

/* A rule covers b only if its path, when it has one, is b's path or a
 * segment prefix of it ("/v1" of "/v1/x"); in the deny list every path is
 * NULL. */
static void query_bucket(const lindex_t *ix, size_t bucket, lquery_t *q) {
  if (bucket == SIZE_MAX) return;
  const lbucket_t *bk = &ix->b[bucket];
  const char *bp = q->b->list == EGRESS_LIST_ALLOW ? q->b->path : NULL;
  query_run(ix, bk, NULL, 0, q);
  if (!bp || ix->list != EGRESS_LIST_ALLOW) return;
  size_t n = strlen(bp);
  for (size_t i = 1; i <= n; i++)
    if (i == n || bp[i] == '/') query_run(ix, bk, bp, i, q);
}

static void query_name(const lindex_t *ix, egress__rule_kind_t kind, const char *s, size_t len, lquery_t *q) {
  lkey_t k;
  key_name(&k, kind, s, len);
  query_bucket(ix, bucket_find(ix, &k), q);
}

/* Every proper label suffix of @p s ("b.c" and "c" of "a.b.c"). */
static void query_wildn_above(const lindex_t *ix, const char *s, size_t len, lquery_t *q) {
  for (size_t i = 0; i < len; i++)
    if (s[i] == '.') query_name(ix, EGRESS__RULE_WILDN, s + i + 1, len - i - 1, q);
}

/* b's own key, in b's own list: its bucket is known. */
static size_t own_bucket(const lindex_t *ix, const lquery_t *q, egress__rule_kind_t kind, const char *s,
                         size_t len) {
  lkey_t k;
  if (q->same_list) return ix->bucket_of[q->b->index];
  key_name(&k, kind, s, len);
  return bucket_find(ix, &k);
}

/* Candidates by the kinds name_rel can answer COVERS for (see there). */
static void query_covering(const lindex_t *ix, lquery_t *q) {
  const egress__rule_t *b = q->b;
  const char *dot;
  if (b->kind == EGRESS__RULE_CIDR) {
    int f = b->cidr.addr.family == 6;
    for (unsigned len = 0; len <= b->cidr.len; len++) {
      if (!ix->lens[f][len]) continue;
      if (len == b->cidr.len && q->same_list) {
        query_bucket(ix, ix->bucket_of[b->index], q);
        continue;
      }
      lkey_t k;
      key_prefix(&k, &b->cidr.addr, len);
      query_bucket(ix, bucket_find(ix, &k), q);
    }
    return;
  }
  query_bucket(ix, ix->any, q);
  switch (b->kind) {
    case EGRESS__RULE_EXACT:
      query_bucket(ix, own_bucket(ix, q, EGRESS__RULE_EXACT, b->name, b->name_len), q);
      dot = memchr(b->name, '.', b->name_len);
      if (dot) query_name(ix, EGRESS__RULE_WILD1, dot + 1, (size_t)(b->name + b->name_len - dot - 1), q);
      query_wildn_above(ix, b->name, b->name_len, q);
      /* Regexes last: the buckets above may already have found a lower
       * index, which spares running them. */
      for (size_t i = 0; i < ix->nregex; i++) query_bucket(ix, ix->regex[i], q);
      break;
    case EGRESS__RULE_WILD1:
      query_bucket(ix, own_bucket(ix, q, EGRESS__RULE_WILD1, b->name, b->name_len), q);
      query_name(ix, EGRESS__RULE_WILDN, b->name, b->name_len, q);
      query_wildn_above(ix, b->name, b->name_len, q);
      break;
    case EGRESS__RULE_WILDN:
      query_bucket(ix, own_bucket(ix, q, EGRESS__RULE_WILDN, b->name, b->name_len), q);
      query_wildn_above(ix, b->name, b->name_len, q);
      break;
    case EGRESS__RULE_REGEX:
      if (q->same_list) {
        query_bucket(ix, ix->bucket_of[b->index], q);
      } else {
        lkey_t k;
        key_rule(&k, b);
        query_bucket(ix, bucket_find(ix, &k), q);
      }
      break;
    default: break;
  }
}

/* Does any name rule of the index match name @p t, on any port? */
static bool name_listed(const lindex_t *ix, const char *t, size_t tl) {
  lkey_t k;
  if (ix->any != SIZE_MAX) return true;
  key_name(&k, EGRESS__RULE_EXACT, t, tl);
  if (bucket_find(ix, &k) != SIZE_MAX) return true;
  const char *dot = memchr(t, '.', tl);
  if (dot) {
    key_name(&k, EGRESS__RULE_WILD1, dot + 1, (size_t)(t + tl - dot - 1));
    if (bucket_find(ix, &k) != SIZE_MAX) return true;
  }
  for (size_t i = 0; i < tl; i++) {
    if (t[i] != '.') continue;
    key_name(&k, EGRESS__RULE_WILDN, t + i + 1, tl - i - 1);
    if (bucket_find(ix, &k) != SIZE_MAX) return true;
  }
  for (size_t i = 0; i < ix->nregex; i++)
    if (egress__rule_matches_name(&ix->rules[ix->b[ix->regex[i]].rep], t, tl)) return true;
  return false;
}

/* ------------------------------------------------------------------------ */
/* What render cannot express, without rendering.                           */
/*                                                                          */
/* Lint used to render the policy for Cilium and collect the notes, which   */
/* costs a vetting pass per address range and a deny scan per allow entry.  */
/* The same notes are made here from their three sources: "re:" allow        */
/* entries, deny names that take some names of an allow entry (found by      */
/* suffix lookups), and CIDR entries that open Teredo or local-use NAT64     */
/* space (the vetting pass run on the few rules that reach that space).     */
/* The test suite compares these notes with render's on random policies.    */
/* ------------------------------------------------------------------------ */

/* Deny names filed under the allow wildcards they can take part of:
 * tag 0, under "x" for an allow "*.x": exact names one label below x;
 * tag 1, under "x" for an allow "**.x": exact names, "*." suffixes and
 * "**." suffixes below x, and "*.x" itself (name_rel's PARTIAL cases). */
typedef struct dsfx {
  const char *s;
  size_t len, index;
  int tag;
} dsfx_t;

static int dsfx_cmp(const void *x, const void *y) {
  const dsfx_t *a = x, *b = y;
  if (a->tag != b->tag) return a->tag < b->tag ? -1 : 1;
  int c = memcmp(a->s, b->s, a->len < b->len ? a->len : b->len);
  if (c) return c;
  if (a->len != b->len) return a->len < b->len ? -1 : 1;
  return a->index < b->index ? -1 : a->index > b->index;
}

typedef struct dindex {
  dsfx_t *v;
  size_t n;
  size_t *regex; /* deny "re:" entries, in order */
  size_t nregex;
} dindex_t;

static bool dindex_push(dsfx_t *v, size_t *n, size_t cap, int tag, const char *s, size_t len, size_t index) {
  if (*n >= cap) return false;
  v[*n].s = s;
  v[*n].len = len;
  v[*n].index = index;
  v[*n].tag = tag;
  (*n)++;
  return true;
}

static bool dindex_build(dindex_t *dx, const egress_policy_t *p) {
  const egress__rule_t *rules = p->rules[EGRESS_LIST_DENY];
  size_t n = p->nrules[EGRESS_LIST_DENY], cap = 0;
  memset(dx, 0, sizeof *dx);
  for (size_t i = 0; i < n; i++) {
    const egress__rule_t *r = &rules[i];
    if (r->kind != EGRESS__RULE_EXACT && r->kind != EGRESS__RULE_WILD1 && r->kind != EGRESS__RULE_WILDN)
      continue;
    size_t dots = 0;
    for (size_t k = 0; k < r->name_len; k++) dots += r->name[k] == '.';
    cap += dots + 2;
  }
  if (cap > SIZE_MAX / sizeof *dx->v) return false;
  dx->v = egress__malloc((cap ? cap : 1) * sizeof *dx->v);
  dx->regex = egress__malloc((n ? n : 1) * sizeof *dx->regex);
  if (!dx->v || !dx->regex) return false;
  for (size_t i = 0; i < n; i++) {
    const egress__rule_t *r = &rules[i];
    if (r->kind == EGRESS__RULE_REGEX) dx->regex[dx->nregex++] = i;
    if (r->kind != EGRESS__RULE_EXACT && r->kind != EGRESS__RULE_WILD1 && r->kind != EGRESS__RULE_WILDN)
      continue;
    const char *s = r->name;
    size_t len = r->name_len;
    bool first = true;
    if (r->kind == EGRESS__RULE_WILD1 && !dindex_push(dx->v, &dx->n, cap, 1, s, len, i)) return false;
    for (size_t k = 0; k < len; k++) {
      if (s[k] != '.') continue;
      if (first && r->kind == EGRESS__RULE_EXACT &&
          !dindex_push(dx->v, &dx->n, cap, 0, s + k + 1, len - k - 1, i))
        return false;
      first = false;
      if (!dindex_push(dx->v, &dx->n, cap, 1, s + k + 1, len - k - 1, i)) return false;
    }
  }
  if (dx->n) qsort(dx->v, dx->n, sizeof *dx->v, dsfx_cmp);
  return true;
}

static void dindex_free(dindex_t *dx) {
  egress__free(dx->v);
  egress__free(dx->regex);
  memset(dx, 0, sizeof *dx);
}

/* The run of entries filed under (@p tag, @p s): [*lo, *hi). */
static void dindex_range(const dindex_t *dx, int tag, const char *s, size_t len, size_t *lo, size_t *hi) {
  dsfx_t key = { s, len, 0, tag };
  size_t a = 0, b = dx->n;
  while (a < b) {
    size_t m = a + (b - a) / 2;
    if (dsfx_cmp(&dx->v[m], &key) < 0)
      a = m + 1;
    else
      b = m;
  }
  *lo = a;
  while (a < dx->n && dx->v[a].tag == tag && dx->v[a].len == len && !memcmp(dx->v[a].s, s, len)) a++;
  *hi = a;
}

static void note_partial(const egress_policy_t *p, const egress__rule_t *a, size_t di, lint_ctx_t *l) {
  const egress__rule_t *d = &p->rules[EGRESS_LIST_DENY][di];
  char what[400];
  if (!is_name_rule(d) || !ports_meet(d, a) || name_rel(d, a) != REL_PARTIAL) return;
  partial_deny_what(what, sizeof what, d, a);
  lint_note(EGRESS__LINT_NOTE, EGRESS_LIST_DENY, di, d->text, what, l);
}

/* Allow CIDR entries whose range reaches Teredo or local-use NAT64 space
 * that stays closed in any rendering: render's vetting pass, run on the
 * IPv6 CIDR rules that meet that space (no other rule can change an answer
 * there), marks them in @p closed (one flag per allow entry). */
static bool lint_closed(const egress_policy_t *p, bool *closed) {
  static const egress__prefix_t regions[2] = {
    { .addr = { .family = 6, .bytes = { 0x20, 0x01, 0x00, 0x00 } }, .len = 32 },
    { .addr = { .family = 6, .bytes = { 0x00, 0x64, 0xff, 0x9b, 0x00, 0x01 } }, .len = 48 }
  };
  struct egress_policy view;
  egress__rule_t *sub[2] = { NULL, NULL };
  bool ok = false;
  rctx_t c;

  memset(&view, 0, sizeof view);
  for (int l = 0; l < 2; l++) {
    sub[l] = egress__malloc((p->nrules[l] ? p->nrules[l] : 1) * sizeof *sub[l]);
    if (!sub[l]) goto done;
    for (size_t i = 0; i < p->nrules[l]; i++) {
      const egress__rule_t *r = &p->rules[l][i];
      if (r->kind == EGRESS__RULE_CIDR &&
          (pfx_overlap(&r->cidr, &regions[0]) || pfx_overlap(&r->cidr, &regions[1])))
        sub[l][view.nrules[l]++] = *r; /* shallow: the view owns nothing */
    }
    view.rules[l] = sub[l];
    /* Vetting asks the whole policy's matchers: only rules that meet these
     * regions (all in the view, whose ports make the segments) can change
     * an answer inside them, and answers elsewhere are not used. */
    view.matcher[l] = p->matcher[l];
  }
  if (view.nrules[EGRESS_LIST_ALLOW] == 0) {
    ok = true;
    goto done;
  }
  memset(&c, 0, sizeof c);
  c.p = &view;
  c.closed = closed; /* indexed by the rules' own (full policy) index */
  ok = build_bounds(&c) && build_segments(&c);
  c.closed = NULL;
  rctx_free(&c);
done:
  egress__free(sub[0]);
  egress__free(sub[1]);
  return ok;
}

/* The notes egress__render makes for Cilium, in its order: per allow entry,
 * a "re:" entry or the deny names taking part of it (in deny order); then
 * the entries left partly closed.  Cilium is the stricter format: what it
 * cannot express is a superset of what NetworkPolicy cannot. */
static bool lint_render_notes(const egress_policy_t *p, lint_ctx_t *l) {
  size_t na = p->nrules[EGRESS_LIST_ALLOW], nd = p->nrules[EGRESS_LIST_DENY];
  dindex_t dx;
  bool *closed = NULL, ok = false;

  l->prefix = "render: ";
  if (!dindex_build(&dx, p)) goto done;
  for (size_t i = 0; i < na; i++) {
    const egress__rule_t *a = &p->rules[EGRESS_LIST_ALLOW][i];
    size_t lo = 0, hi = 0, r = 0;
    switch (a->kind) {
      case EGRESS__RULE_REGEX:
        lint_note(EGRESS__LINT_NOTE, EGRESS_LIST_ALLOW, i, a->text, regex_what, l);
        continue;
      case EGRESS__RULE_ANY:
        for (size_t di = 0; di < nd; di++) note_partial(p, a, di, l);
        continue;
      case EGRESS__RULE_WILD1: dindex_range(&dx, 0, a->name, a->name_len, &lo, &hi); break;
      case EGRESS__RULE_WILDN: dindex_range(&dx, 1, a->name, a->name_len, &lo, &hi); break;
      default: continue;
    }
    /* Merge the filed names with the deny regexes, in deny order. */
    while (lo < hi || r < dx.nregex) {
      if (r >= dx.nregex || (lo < hi && dx.v[lo].index < dx.regex[r]))
        note_partial(p, a, dx.v[lo++].index, l);
      else
        note_partial(p, a, dx.regex[r++], l);
    }
  }
  closed = egress__calloc(na + 1, sizeof *closed);
  if (!closed || !lint_closed(p, closed)) goto done;
  for (size_t i = 0; i < na; i++)
    if (closed[i])
      lint_note(EGRESS__LINT_NOTE, EGRESS_LIST_ALLOW, i, p->rules[EGRESS_LIST_ALLOW][i].text, closed_what, l);
  ok = true;
done:
  egress__free(closed);
  dindex_free(&dx);
  l->prefix = NULL;
  return ok;
}

/* "2001:db8::1:443" is the address 2001:db8::1:443, but reads like
 * 2001:db8::1 on port 443.  Only a bare entry can be read both ways, and
 * only when what comes before its last ':' is an address on its own (so
 * a "::" comes earlier) and the last group is a plausible port: decimal,
 * no leading zero, 10 or more (single digits name hosts far more often
 * than ports).  Returns the length of the address part, or 0. */
static size_t ipv6_port_ambiguity(const egress__rule_t *r) {
  egress__ip_t ip;
  const char *t = r->text;
  size_t len = strlen(t);
  if (r->kind != EGRESS__RULE_CIDR || r->cidr.addr.family != 6 || r->cidr.len != 128 ||
      strpbrk(t, "[]/") != NULL)
    return 0;
  const char *colon = strrchr(t, ':');
  if (!colon) return 0;
  size_t cut = (size_t)(colon - t), dl = len - cut - 1;
  if (dl < 2 || dl > 4 || colon[1] == '0') return 0;
  for (size_t i = 0; i < dl; i++)
    if (colon[1 + i] < '0' || colon[1 + i] > '9') return 0;
  if (cut == 0 || t[cut - 1] == ':' || !egress__ip6_parse(t, cut, &ip)) return 0;
  return cut;
}

/* URL entries.  An explicit port is a choice, not a finding; the scheme's
 * other well-known port is: TLS on 80 or plain HTTP on 443 is almost
 * always the two swapped, and the check would let the call through to a
 * port that the client then speaks the wrong protocol to. */
static bool url_swapped_port(const egress__rule_t *b, char *what, size_t len) {
  bool https = !strncasecmp(b->text, "https://", 8), http = !strncasecmp(b->text, "http://", 7);
  if (!(https || http) || b->port_lo != b->port_hi || b->port_lo != (https ? 80 : 443)) return false;
  snprintf(what, len,
           "%s on port %u, the %s port: scheme and port look swapped (\"%s://\" with no port "
           "means %u)",
           https ? "https" : "http", b->port_lo, https ? "http" : "https", https ? "https" : "http",
           https ? 443 : 80);
  return true;
}

/* The host of a URL entry as written, and where its path starts. */
static bool url_parts(const egress__rule_t *b, const char **host, size_t *host_len, const char **path) {
  const char *t = b->text, *sep = strstr(t, "://");
  if (!b->path || !sep) return false;
  *host = sep + 3;
  *path = strchr(*host, '/');
  if (!*path) return false;
  const char *end = *host;
  if (*end == '[') end = strchr(end, ']');
  end = end ? end + strcspn(end, ":/") : *path;
  *host_len = (size_t)(end - *host);
  return true;
}

/* "http://10.0.0.0/8" is host 10.0.0.0, port 80, path "/8": a URL names
 * one host, and what looks like a prefix length is a path (which a deny
 * entry ignores).  Said when the path is a prefix length the address is
 * the network address of, so that the range reading is the plausible one. */
static bool url_cidr_path(const egress__rule_t *b, char *what, size_t len) {
  const char *host, *path;
  size_t hl;
  if (b->kind != EGRESS__RULE_CIDR || !url_parts(b, &host, &hl, &path)) return false;
  size_t digits = strspn(path + 1, "0123456789");
  unsigned max = b->cidr.addr.family == 4 ? 32 : 128, n = 0;
  if (digits == 0 || digits > 3 || path[1 + digits] || (digits > 1 && path[1] == '0')) return false;
  for (size_t i = 0; i < digits; i++) n = n * 10 + (unsigned)(path[1 + i] - '0');
  if (n > max) return false;
  for (unsigned i = n; i < max; i++)
    if (get_bit(&b->cidr.addr, i)) return false;
  char ip[EGRESS__IPSTR_MAX], ports[16], means[48], other[EGRESS__IPSTR_MAX + 48];
  bool every = b->port_lo == 1 && b->port_hi == 65535;
  egress__ip_format(&b->cidr.addr, ip, sizeof ip);
  if (b->port_lo == b->port_hi)
    snprintf(ports, sizeof ports, "%u", b->port_lo);
  else
    snprintf(ports, sizeof ports, "%u-%u", b->port_lo, b->port_hi);
  if (every)
    snprintf(means, sizeof means, "on every port");
  else
    snprintf(means, sizeof means, ", port%s %s", b->port_lo == b->port_hi ? "" : "s", ports);
  other[0] = '\0';
  if (!every)
    snprintf(other, sizeof other, b->cidr.addr.family == 4 ? " or \"%s/%u:%s\"" : " or \"[%s]/%u:%s\"", ip, n,
             ports);
  snprintf(what, len,
           "means host %.*s%s%s, path \"%s\"%s: a URL names one address; for the range write "
           "\"%s/%u\"%s%s",
           (int)hl, host, every ? " " : "", means, path,
           b->list == EGRESS_LIST_DENY ? " (which a deny entry ignores)" : "", ip, n,
           every ? "" : " (every port)", other);
  return true;
}

/* "https://example.com/x*": '*' is an ordinary path character, so the entry
 * allows only paths that begin with it literally.  Paths match as
 * prefixes, so the part before the star's segment is what was meant.
 * (A deny entry takes every path of its host and port.) */
static bool url_glob_path(const egress__rule_t *b, char *what, size_t len) {
  const char *host, *path;
  size_t hl;
  if (b->list != EGRESS_LIST_ALLOW || !url_parts(b, &host, &hl, &path)) return false;
  const char *star = strchr(path, '*');
  if (!star) return false;
  const char *seg = star;
  while (*seg != '/') seg--;
  int keep = (int)(seg + 1 - b->text);
  snprintf(what, len,
           "the path \"%.200s\" is literal ('*' is no wildcard in a URL entry): this allows only "
           "paths beginning with it; a path prefix already covers every path under it, so "
           "\"%.*s\" was likely meant",
           path, keep, b->text);
  return true;
}

long egress__render_lint(const egress_policy_t *p, egress__lint_cb warn, void *user_data) {
  lint_ctx_t l = { warn, user_data, 0, NULL };
  lindex_t ix[2];
  char what[600];
  long ret = -1;

  if (!p) return -1;
  memset(ix, 0, sizeof ix);
  if (!lindex_build(&ix[EGRESS_LIST_ALLOW], p, EGRESS_LIST_ALLOW) ||
      !lindex_build(&ix[EGRESS_LIST_DENY], p, EGRESS_LIST_DENY))
    goto done;
  for (int li = 0; li < 2; li++) {
    egress_list_t list = (egress_list_t)li;
    for (size_t jx = 0; jx < p->nrules[list]; jx++) {
      const egress__rule_t *b = &p->rules[list][jx];
      /* Duplicates and shadowing within the list. */
      lquery_t q = { b, true, SIZE_MAX };
      query_covering(&ix[list], &q);
      if (q.best != SIZE_MAX) {
        const egress__rule_t *a = &p->rules[list][q.best];
        if (rule_covers(b, a))
          snprintf(what, sizeof what, "duplicate of %s[%zu] \"%.200s\"", list_names[list], q.best, a->text);
        else
          snprintf(what, sizeof what,
                   "shadowed by %s[%zu] \"%.200s\", which matches everything this entry does",
                   list_names[list], q.best, a->text);
        lint_note(EGRESS__LINT_WARNING, list, jx, b->text, what, &l);
      }
      /* An allow entry that the deny list takes away whole. */
      if (list == EGRESS_LIST_ALLOW) {
        lquery_t dq = { b, false, SIZE_MAX };
        query_covering(&ix[EGRESS_LIST_DENY], &dq);
        if (dq.best != SIZE_MAX) {
          snprintf(what, sizeof what,
                   "never allows anything: egressDenylist[%zu] \"%.200s\" denies all of it", dq.best,
                   p->rules[EGRESS_LIST_DENY][dq.best].text);
          lint_note(EGRESS__LINT_WARNING, list, jx, b->text, what, &l);
        }
      }
      if (b->kind == EGRESS__RULE_ANY)
        lint_note(EGRESS__LINT_WARNING, list, jx, b->text, "matches every host name", &l);
      if (b->kind == EGRESS__RULE_CIDR && b->cidr.len == 0)
        lint_note(EGRESS__LINT_WARNING, list, jx, b->text,
                  b->cidr.addr.family == 4 ? "matches every IPv4 address" : "matches every IPv6 address", &l);
      if (list == EGRESS_LIST_ALLOW && (b->kind == EGRESS__RULE_WILD1 || b->kind == EGRESS__RULE_WILDN) &&
          !name_listed(&ix[EGRESS_LIST_ALLOW], b->name, b->name_len)) {
        snprintf(what, sizeof what,
                 "does not match \"%.200s\" itself, and no entry allows it (add it if the apex "
                 "is meant too)",
                 b->name);
        lint_note(EGRESS__LINT_NOTE, list, jx, b->text, what, &l);
      }
      if (url_swapped_port(b, what, sizeof what) || url_cidr_path(b, what, sizeof what) ||
          url_glob_path(b, what, sizeof what))
        lint_note(EGRESS__LINT_WARNING, list, jx, b->text, what, &l);
      size_t cut = ipv6_port_ambiguity(b);
      if (cut) {
        snprintf(what, sizeof what,
                 "reads like an address and a port, but is the single address %s on every port: "
                 "write \"[%.*s]:%s\" for port %s of %.*s, or \"%s/128\" to keep this meaning",
                 b->text, (int)cut, b->text, b->text + cut + 1, b->text + cut + 1, (int)cut, b->text,
                 b->text);
        lint_note(EGRESS__LINT_WARNING, list, jx, b->text, what, &l);
      }
    }
  }
  if (!lint_render_notes(p, &l)) goto done;
  ret = l.count;
done:
  lindex_free(&ix[EGRESS_LIST_ALLOW]);
  lindex_free(&ix[EGRESS_LIST_DENY]);
  return ret;
}
