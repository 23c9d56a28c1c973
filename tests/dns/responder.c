/*
 * Loopback DNS responder for tests: see responder.h.
 *
 * One thread owns the sockets, the TCP connections and the queue of delayed
 * replies; the scripted data and the counters live behind one mutex so that
 * tests may change them while queries are in flight.  Queries are untrusted
 * bytes (the self-test throws garbage at it), so everything is parsed with
 * explicit lengths and compression pointers may only point backwards.
 */
#ifndef _GNU_SOURCE
#  define _GNU_SOURCE /* accept4, pipe2 when built outside meson */
#endif
#include "responder.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define NBUCKETS    1024
#define MAX_ENTRIES 65536
#define MAX_CONNS   64
#define MAX_CHAIN   16
#define MAX_TEXT    1024 /* presentation form of a 255-byte wire name, escaped */
#define TCP_MAX     65535
#define T_A         1
#define T_CNAME     5
#define T_AAAA      28
#define T_OPT       41
#define T_ANY       255
#define WRONG_OWNER "wrong-owner.invalid"

typedef struct rec {
  uint16_t type;
  uint32_t ttl;
  uint8_t addr[16];
  char *target; /* CNAME only */
} rec_t;

typedef struct aset {
  rec_t *recs;
  size_t nrecs, cap;
  int rcode; /* -1: none scripted */
  unsigned delay_ms;
  bool drop, truncate, wrong_id, wrong_name;
  bool drop_a, drop_aaaa; /* one family's queries unanswered */
  int malformed;
} aset_t;

typedef struct entry {
  struct entry *next;
  char *name;
  bool configured; /* false: only seen in a query, answered with the default rcode */
  bool sticky;
  aset_t *sets;
  size_t nsets;
  unsigned count, count_a, count_aaaa, count_other;
} entry_t;

typedef struct pending {
  uint64_t due_ms;
  uint64_t conn_id; /* 0: UDP */
  struct sockaddr_storage peer;
  socklen_t peerlen;
  uint8_t *buf;
  size_t len;
} pending_t;

typedef struct conn {
  int fd;
  uint64_t id;
  uint8_t *in; /* 2 + TCP_MAX */
  size_t inlen;
  uint8_t *out;
  size_t outlen, outcap;
} conn_t;

struct egress_dns_responder {
  int family;
  char ip[INET6_ADDRSTRLEN];
  uint16_t port;
  int udp_fd, tcp_fd;
  int wake[2];
  pthread_t thread;

  pthread_mutex_t mu;
  pthread_cond_t cv;
  /* Under mu. */
  bool stop;
  entry_t *buckets[NBUCKETS];
  size_t nentries;
  int default_rcode;
  egress_dns_tcp_mode_t tcp_mode;
  unsigned cfg_gen, ack_gen;
  bool tcp_rebind_failed;
  unsigned total, tcp_total, bad;
  char last_qname[MAX_TEXT];

  /* Owned by the thread. */
  conn_t *conns[MAX_CONNS];
  size_t nconns;
  uint64_t next_conn_id;
  pending_t *pend;
  size_t npend, pendcap;
};

/* ---------- small helpers ---------- */

static uint64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void wake_thread(egress_dns_responder_t *r) {
  char c = 1;
  ssize_t n = write(r->wake[1], &c, 1);
  (void)n; /* a full pipe already means a pending wake-up */
}

typedef struct wbuf {
  uint8_t *p;
  size_t len, cap;
  bool fail;
} wbuf_t;

static void wb_put(wbuf_t *b, const void *d, size_t n) {
  if (b->fail) return;
  if (b->len + n > b->cap) {
    size_t nc = b->cap ? b->cap : 512;
    while (nc < b->len + n) nc *= 2;
    uint8_t *np = realloc(b->p, nc);
    if (!np) {
      b->fail = true;
      return;
    }
    b->p = np;
    b->cap = nc;
  }
  memcpy(b->p + b->len, d, n);
  b->len += n;
}

static void wb_u8(wbuf_t *b, unsigned v) {
  uint8_t x = (uint8_t)v;
  wb_put(b, &x, 1);
}

static void wb_u16(wbuf_t *b, unsigned v) {
  uint8_t x[2] = { (uint8_t)(v >> 8), (uint8_t)v };
  wb_put(b, x, 2);
}

static void wb_u32(wbuf_t *b, uint32_t v) {
  uint8_t x[4] = { (uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v };
  wb_put(b, x, 4);
}

static void set_u16(uint8_t *p, unsigned v) {
  p[0] = (uint8_t)(v >> 8);
  p[1] = (uint8_t)v;
}

static unsigned get_u16(const uint8_t *p) { return ((unsigned)p[0] << 8) | p[1]; }

/* Canonical form of a scripted name: lower case, no trailing dot, labels of
 * 1..63 bytes, at most 253 bytes.  "" is the root. */
static int normalize(const char *in, char *out, size_t outlen) {
  if (!in) return -1;
  size_t n = strlen(in);
  if (n > 0 && in[n - 1] == '.') n--;
  if (n > 253 || n + 1 > outlen) return -1;
  size_t lab = 0;
  for (size_t i = 0; i < n; i++) {
    char c = in[i];
    if (c == '.') {
      if (lab == 0) return -1;
      lab = 0;
    } else if (++lab > 63) {
      return -1;
    }
    out[i] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
  }
  if (n > 0 && lab == 0) return -1;
  out[n] = '\0';
  return 0;
}

/* Encode a normalized name as uncompressed wire labels. */
static void wb_name(wbuf_t *b, const char *name) {
  const char *p = name;
  while (*p) {
    const char *dot = strchr(p, '.');
    size_t l = dot ? (size_t)(dot - p) : strlen(p);
    wb_u8(b, (unsigned)l);
    wb_put(b, p, l);
    p += l;
    if (*p == '.') p++;
  }
  wb_u8(b, 0);
}

static uint32_t hash_name(const char *s) {
  uint32_t h = 2166136261u;
  for (; *s; s++) h = (h ^ (uint8_t)*s) * 16777619u;
  return h;
}

/* ---------- scripted data (all under r->mu) ---------- */

static entry_t *lookup(egress_dns_responder_t *r, const char *norm) {
  for (entry_t *e = r->buckets[hash_name(norm) % NBUCKETS]; e; e = e->next)
    if (!strcmp(e->name, norm)) return e;
  return NULL;
}

static entry_t *lookup_create(egress_dns_responder_t *r, const char *norm) {
  entry_t *e = lookup(r, norm);
  if (e) return e;
  if (r->nentries >= MAX_ENTRIES) return NULL;
  e = calloc(1, sizeof(*e));
  if (!e) return NULL;
  e->name = strdup(norm);
  e->sets = calloc(1, sizeof(aset_t));
  if (!e->name || !e->sets) {
    free(e->name);
    free(e->sets);
    free(e);
    return NULL;
  }
  e->sets[0].rcode = -1;
  e->nsets = 1;
  uint32_t h = hash_name(norm) % NBUCKETS;
  e->next = r->buckets[h];
  r->buckets[h] = e;
  r->nentries++;
  return e;
}

static void free_set(aset_t *s) {
  for (size_t i = 0; i < s->nrecs; i++) free(s->recs[i].target);
  free(s->recs);
}

static void free_entries(egress_dns_responder_t *r) {
  for (size_t b = 0; b < NBUCKETS; b++) {
    entry_t *e = r->buckets[b];
    while (e) {
      entry_t *next = e->next;
      for (size_t i = 0; i < e->nsets; i++) free_set(&e->sets[i]);
      free(e->sets);
      free(e->name);
      free(e);
      e = next;
    }
    r->buckets[b] = NULL;
  }
  r->nentries = 0;
}

/* Lock and return the current set of a scripted name (marking it scripted);
 * NULL (and unlocked) on a bad name or no memory. */
static aset_t *script_begin(egress_dns_responder_t *r, const char *name) {
  char norm[256];
  if (!r || normalize(name, norm, sizeof(norm)) != 0) return NULL;
  pthread_mutex_lock(&r->mu);
  entry_t *e = lookup_create(r, norm);
  if (!e) {
    pthread_mutex_unlock(&r->mu);
    return NULL;
  }
  e->configured = true;
  return &e->sets[e->nsets - 1];
}

static int add_rec(egress_dns_responder_t *r, const char *name, uint16_t type, const void *addr, size_t alen,
                   const char *target, uint32_t ttl) {
  char tnorm[256];
  if (target && normalize(target, tnorm, sizeof(tnorm)) != 0) return -1;
  aset_t *s = script_begin(r, name);
  if (!s) return -1;
  int rc = -1;
  if (s->nrecs == s->cap) {
    size_t nc = s->cap ? s->cap * 2 : 4;
    rec_t *nr = realloc(s->recs, nc * sizeof(*nr));
    if (!nr) goto done;
    s->recs = nr;
    s->cap = nc;
  }
  rec_t *rec = &s->recs[s->nrecs];
  memset(rec, 0, sizeof(*rec));
  rec->type = type;
  rec->ttl = ttl;
  if (addr) memcpy(rec->addr, addr, alen);
  if (target && !(rec->target = strdup(tnorm))) goto done;
  s->nrecs++;
  rc = 0;
done:
  pthread_mutex_unlock(&r->mu);
  return rc;
}

int egress_dns_add_a(egress_dns_responder_t *r, const char *name, const char *ipv4, uint32_t ttl) {
  uint8_t a[4];
  if (!ipv4 || inet_pton(AF_INET, ipv4, a) != 1) return -1;
  return add_rec(r, name, T_A, a, 4, NULL, ttl);
}

int egress_dns_add_aaaa(egress_dns_responder_t *r, const char *name, const char *ipv6, uint32_t ttl) {
  uint8_t a[16];
  if (!ipv6 || inet_pton(AF_INET6, ipv6, a) != 1) return -1;
  return add_rec(r, name, T_AAAA, a, 16, NULL, ttl);
}

int egress_dns_add_cname(egress_dns_responder_t *r, const char *name, const char *target, uint32_t ttl) {
  if (!target) return -1;
  return add_rec(r, name, T_CNAME, NULL, 0, target, ttl);
}

#define SETTER(fn, type, field, expr)                           \
  int fn(egress_dns_responder_t *r, const char *name, type v) { \
    aset_t *s = script_begin(r, name);                          \
    if (!s) return -1;                                          \
    s->field = (expr);                                          \
    pthread_mutex_unlock(&r->mu);                               \
    return 0;                                                   \
  }

SETTER(egress_dns_set_delay_ms, unsigned, delay_ms, v)
SETTER(egress_dns_set_drop, bool, drop, v)
SETTER(egress_dns_set_truncate, bool, truncate, v)
SETTER(egress_dns_set_wrong_id, bool, wrong_id, v)
SETTER(egress_dns_set_wrong_name, bool, wrong_name, v)

int egress_dns_set_drop_type(egress_dns_responder_t *r, const char *name, uint16_t qtype, bool drop) {
  if (qtype != T_A && qtype != T_AAAA) return -1;
  aset_t *s = script_begin(r, name);
  if (!s) return -1;
  if (qtype == T_A)
    s->drop_a = drop;
  else
    s->drop_aaaa = drop;
  pthread_mutex_unlock(&r->mu);
  return 0;
}

int egress_dns_set_rcode(egress_dns_responder_t *r, const char *name, int rcode) {
  if (rcode < -1 || rcode > 15) return -1;
  aset_t *s = script_begin(r, name);
  if (!s) return -1;
  s->rcode = rcode;
  pthread_mutex_unlock(&r->mu);
  return 0;
}

int egress_dns_set_malformed(egress_dns_responder_t *r, const char *name, int kind) {
  if (kind < EGRESS_DNS_MALFORMED_NONE || kind > EGRESS_DNS_MALFORMED_BAD_LABEL) return -1;
  aset_t *s = script_begin(r, name);
  if (!s) return -1;
  s->malformed = kind;
  pthread_mutex_unlock(&r->mu);
  return 0;
}

int egress_dns_next_set(egress_dns_responder_t *r, const char *name) {
  char norm[256];
  if (!r || normalize(name, norm, sizeof(norm)) != 0) return -1;
  int rc = -1;
  pthread_mutex_lock(&r->mu);
  entry_t *e = lookup_create(r, norm);
  if (!e) goto done;
  e->configured = true;
  aset_t *ns = realloc(e->sets, (e->nsets + 1) * sizeof(*ns));
  if (!ns) goto done;
  e->sets = ns;
  memset(&ns[e->nsets], 0, sizeof(*ns));
  ns[e->nsets].rcode = -1;
  rc = (int)e->nsets++;
done:
  pthread_mutex_unlock(&r->mu);
  return rc;
}

int egress_dns_set_sticky(egress_dns_responder_t *r, const char *name, bool sticky) {
  char norm[256];
  if (!r || normalize(name, norm, sizeof(norm)) != 0) return -1;
  pthread_mutex_lock(&r->mu);
  entry_t *e = lookup_create(r, norm);
  if (e) {
    e->configured = true;
    e->sticky = sticky;
  }
  pthread_mutex_unlock(&r->mu);
  return e ? 0 : -1;
}

void egress_dns_set_default_rcode(egress_dns_responder_t *r, int rcode) {
  if (!r || rcode < 0 || rcode > 15) return;
  pthread_mutex_lock(&r->mu);
  r->default_rcode = rcode;
  pthread_mutex_unlock(&r->mu);
}

/* The TCP listener belongs to the server thread; wait until it has applied
 * the new mode so that the caller's next query sees it. */
int egress_dns_set_tcp_mode(egress_dns_responder_t *r, egress_dns_tcp_mode_t mode) {
  if (!r || mode < EGRESS_DNS_TCP_SERVE || mode > EGRESS_DNS_TCP_SILENT) return -1;
  pthread_mutex_lock(&r->mu);
  r->tcp_mode = mode;
  unsigned gen = ++r->cfg_gen;
  wake_thread(r);
  while (r->ack_gen < gen && !r->stop) pthread_cond_wait(&r->cv, &r->mu);
  int rc = (mode != EGRESS_DNS_TCP_REFUSE && r->tcp_rebind_failed) ? -1 : 0;
  pthread_mutex_unlock(&r->mu);
  return rc;
}

static unsigned count_of(const entry_t *e, uint16_t qtype) {
  return qtype == T_A ? e->count_a : qtype == T_AAAA ? e->count_aaaa : e->count_other;
}

unsigned egress_dns_query_count(egress_dns_responder_t *r, const char *name) {
  char norm[256];
  if (!r || normalize(name, norm, sizeof(norm)) != 0) return 0;
  pthread_mutex_lock(&r->mu);
  entry_t *e = lookup(r, norm);
  unsigned n = e ? e->count : 0;
  pthread_mutex_unlock(&r->mu);
  return n;
}

unsigned egress_dns_query_count_type(egress_dns_responder_t *r, const char *name, uint16_t qtype) {
  char norm[256];
  if (!r || normalize(name, norm, sizeof(norm)) != 0) return 0;
  pthread_mutex_lock(&r->mu);
  entry_t *e = lookup(r, norm);
  unsigned n = e ? count_of(e, qtype) : 0;
  pthread_mutex_unlock(&r->mu);
  return n;
}

#define GLOBAL_COUNTER(fn, field)          \
  unsigned fn(egress_dns_responder_t *r) { \
    if (!r) return 0;                      \
    pthread_mutex_lock(&r->mu);            \
    unsigned n = r->field;                 \
    pthread_mutex_unlock(&r->mu);          \
    return n;                              \
  }

GLOBAL_COUNTER(egress_dns_total_queries, total)
GLOBAL_COUNTER(egress_dns_tcp_queries, tcp_total)
GLOBAL_COUNTER(egress_dns_bad_packets, bad)

const char *egress_dns_last_qname(egress_dns_responder_t *r, char *buf, size_t buflen) {
  if (!buf || buflen == 0) return buf;
  buf[0] = '\0';
  if (!r) return buf;
  pthread_mutex_lock(&r->mu);
  snprintf(buf, buflen, "%s", r->last_qname);
  pthread_mutex_unlock(&r->mu);
  return buf;
}

void egress_dns_reset(egress_dns_responder_t *r) {
  if (!r) return;
  pthread_mutex_lock(&r->mu);
  free_entries(r);
  r->default_rcode = EGRESS_DNS_NXDOMAIN;
  r->total = r->tcp_total = r->bad = 0;
  r->last_qname[0] = '\0';
  pthread_mutex_unlock(&r->mu);
  egress_dns_set_tcp_mode(r, EGRESS_DNS_TCP_SERVE);
}

void egress_dns_dump_counts(egress_dns_responder_t *r, void *stream) {
  FILE *f = stream;
  if (!r || !f) return;
  pthread_mutex_lock(&r->mu);
  fprintf(f, "total %u tcp %u bad %u\n", r->total, r->tcp_total, r->bad);
  for (size_t b = 0; b < NBUCKETS; b++)
    for (entry_t *e = r->buckets[b]; e; e = e->next)
      if (e->count)
        fprintf(f, "%s %u A %u AAAA %u\n", e->name[0] ? e->name : ".", e->count, e->count_a, e->count_aaaa);
  pthread_mutex_unlock(&r->mu);
}

/* ---------- parsing queries ---------- */

typedef struct query {
  unsigned id, flags;
  uint8_t qwire[256]; /* the question name, uncompressed, original case */
  size_t qwire_len;
  char qtext[MAX_TEXT]; /* lower case, escaped, no trailing dot */
  unsigned qtype, qclass;
  unsigned edns_size; /* 0: no OPT */
} query_t;

/* Read a possibly compressed name at *off.  Pointers must point strictly
 * before the label that holds them, so a chain of them always ends; wire and
 * text may be NULL when only skipping.  Returns 0, or -1 on any malformation. */
static int read_name(const uint8_t *msg, size_t len, size_t *off, uint8_t *wire, size_t *wire_len, char *text,
                     size_t textlen) {
  size_t pos = *off, wl = 0, tl = 0;
  bool jumped = false;
  for (int hops = 0;; hops++) {
    if (pos >= len || hops > 255) return -1;
    unsigned l = msg[pos];
    if ((l & 0xC0) == 0xC0) {
      if (pos + 1 >= len) return -1;
      size_t ptr = ((l & 0x3Fu) << 8) | msg[pos + 1];
      if (ptr >= pos) return -1;
      if (!jumped) *off = pos + 2;
      jumped = true;
      pos = ptr;
      continue;
    }
    if (l & 0xC0) return -1; /* 0x40 and 0x80 label types are obsolete/unknown */
    if (wl + 1 + l > 255) return -1;
    if (wire) wire[wl] = (uint8_t)l;
    wl++;
    if (l == 0) {
      if (!jumped) *off = pos + 1;
      break;
    }
    if (pos + 1 + l > len) return -1;
    if (text && tl > 0) {
      if (tl + 1 >= textlen) return -1;
      text[tl++] = '.';
    }
    for (unsigned i = 0; i < l; i++) {
      uint8_t c = msg[pos + 1 + i];
      if (wire) wire[wl] = c;
      wl++;
      if (!text) continue;
      if (c == '.' || c == '\\' || c <= 0x20 || c >= 0x7F) {
        if (tl + 4 >= textlen) return -1;
        snprintf(text + tl, 5, "\\%03u", c);
        tl += 4;
      } else {
        if (tl + 1 >= textlen) return -1;
        text[tl++] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : (char)c;
      }
    }
    pos += 1 + l;
  }
  if (wire_len) *wire_len = wl;
  if (text) text[tl] = '\0';
  return 0;
}

/* Skip one resource record; returns its type and class through the pointers. */
static int skip_rr(const uint8_t *msg, size_t len, size_t *off, unsigned *type, unsigned *klass) {
  if (read_name(msg, len, off, NULL, NULL, NULL, 0) != 0) return -1;
  if (*off + 10 > len) return -1;
  *type = get_u16(msg + *off);
  *klass = get_u16(msg + *off + 2);
  size_t rdlen = get_u16(msg + *off + 8);
  if (*off + 10 + rdlen > len) return -1;
  *off += 10 + rdlen;
  return 0;
}

/* 0: a query; -1: ignore silently; -2: answer FORMERR (header only). */
static int parse_query(const uint8_t *msg, size_t len, query_t *q) {
  if (len < 12) return -1;
  q->id = get_u16(msg);
  q->flags = get_u16(msg + 2);
  if (q->flags & 0x8000) return -1; /* a response: answering it could loop */
  unsigned qd = get_u16(msg + 4), an = get_u16(msg + 6), ns = get_u16(msg + 8), ar = get_u16(msg + 10);
  if (qd != 1) return -2;
  size_t off = 12;
  if (read_name(msg, len, &off, q->qwire, &q->qwire_len, q->qtext, sizeof(q->qtext)) != 0) return -2;
  if (off + 4 > len) return -2;
  q->qtype = get_u16(msg + off);
  q->qclass = get_u16(msg + off + 2);
  off += 4;
  q->edns_size = 0;
  /* A broken additional section only costs the client its EDNS size. */
  for (unsigned i = 0; i < (unsigned)an + ns + ar; i++) {
    unsigned type, klass;
    if (skip_rr(msg, len, &off, &type, &klass) != 0) break;
    if (i >= (unsigned)an + ns && type == T_OPT) q->edns_size = klass < 512 ? 512 : klass;
  }
  return 0;
}

/* ---------- building replies (under r->mu) ---------- */

typedef struct answer {
  const char *owner; /* NULL: the question name */
  const rec_t *rec;
} answer_t;

static aset_t *pick_set(entry_t *e, unsigned n) {
  size_t i = e->sticky ? (n >= e->nsets ? e->nsets - 1 : n) : n % e->nsets;
  return &e->sets[i];
}

static void put_header(wbuf_t *b, unsigned id, unsigned flags, unsigned an) {
  wb_u16(b, id);
  wb_u16(b, flags);
  wb_u16(b, 1);
  wb_u16(b, an);
  wb_u16(b, 0);
  wb_u16(b, 0);
}

static void put_malformed(wbuf_t *b, const query_t *q, unsigned flags, int kind) {
  uint16_t t = q->qtype == T_AAAA ? T_AAAA : T_A;
  if (kind == EGRESS_DNS_MALFORMED_SHORT) {
    wb_u16(b, q->id);
    wb_u16(b, flags);
    wb_u16(b, 1);
    wb_u16(b, 1);
    return;
  }
  put_header(b, q->id, flags, 1);
  wb_put(b, q->qwire, q->qwire_len);
  wb_u16(b, q->qtype);
  wb_u16(b, q->qclass);
  switch (kind) {
    case EGRESS_DNS_MALFORMED_LOOP: {
      size_t here = b->len;
      wb_u16(b, 0xC000u | (unsigned)here);
      wb_u16(b, t);
      wb_u16(b, 1);
      wb_u32(b, 60);
      wb_u16(b, 4);
      wb_u32(b, 0x7f000001u);
      break;
    }
    case EGRESS_DNS_MALFORMED_BAD_RDLEN:
      wb_u16(b, 0xC00C);
      wb_u16(b, t);
      wb_u16(b, 1);
      wb_u32(b, 60);
      wb_u16(b, 3);
      wb_put(b, "\x7f\x00\x00", 3);
      break;
    case EGRESS_DNS_MALFORMED_BAD_LABEL:
      wb_put(b,
             "\x3f"
             "abcde",
             6);
      break;
    default: /* TRUNCATED_RR: stop in the middle of the fixed part */
      wb_u16(b, 0xC00C);
      wb_u16(b, t);
      wb_u16(b, 1);
      wb_u16(b, 0);
      break;
  }
}

static bool type_matches(uint16_t rtype, unsigned qtype) {
  if (qtype == T_ANY) return true;
  return rtype == qtype;
}

/* Decide the reply for q.  Returns false to send nothing (drop). */
static bool build_reply(egress_dns_responder_t *r, const query_t *q, bool tcp, wbuf_t *b,
                        unsigned *delay_ms) {
  *delay_ms = 0;
  r->total++;
  if (tcp) r->tcp_total++;
  snprintf(r->last_qname, sizeof(r->last_qname), "%s", q->qtext);

  unsigned opcode = (q->flags >> 11) & 0xF;
  unsigned flags = 0x8000u | (opcode << 11) | 0x0400u | (q->flags & 0x0100u) | 0x0080u;
  entry_t *e = lookup_create(r, q->qtext);
  aset_t *s = NULL;
  if (e) {
    unsigned *ctr = q->qtype == T_A ? &e->count_a : q->qtype == T_AAAA ? &e->count_aaaa : &e->count_other;
    s = pick_set(e, *ctr);
    (*ctr)++;
    e->count++;
    if (!e->configured) s = NULL;
  }

  if (opcode != 0) {
    put_header(b, q->id, flags | EGRESS_DNS_NOTIMP, 0);
    wb_put(b, q->qwire, q->qwire_len);
    wb_u16(b, q->qtype);
    wb_u16(b, q->qclass);
    return true;
  }
  if (s) {
    if (s->drop || (q->qtype == T_A && s->drop_a) || (q->qtype == T_AAAA && s->drop_aaaa)) return false;
    *delay_ms = s->delay_ms;
    if (s->malformed) {
      put_malformed(b, q, flags, s->malformed);
      return true;
    }
  }

  unsigned id = (s && s->wrong_id) ? (q->id ^ 0x8421u) : q->id;
  int rcode = s ? (s->rcode >= 0 ? s->rcode : EGRESS_DNS_NOERROR) : r->default_rcode;
  answer_t ans[1024];
  size_t nans = 0;
  if (s && rcode == EGRESS_DNS_NOERROR) {
    const char *owner = NULL;
    const aset_t *cur = s;
    for (int hop = 0;; hop++) {
      const rec_t *cname = NULL;
      for (size_t i = 0; i < cur->nrecs && !cname; i++)
        if (cur->recs[i].type == T_CNAME) cname = &cur->recs[i];
      if (cname && q->qtype != T_CNAME) {
        if (hop >= MAX_CHAIN) break; /* a loop: give what there is */
        if (nans < sizeof(ans) / sizeof(ans[0])) ans[nans++] = (answer_t){ owner, cname };
        entry_t *t = lookup(r, cname->target);
        if (!t || !t->configured) {
          rcode = r->default_rcode;
          break;
        }
        cur = pick_set(t, count_of(t, (uint16_t)q->qtype));
        owner = t->name;
        if (cur->rcode > 0) {
          rcode = cur->rcode;
          break;
        }
        continue;
      }
      for (size_t i = 0; i < cur->nrecs; i++)
        if (type_matches(cur->recs[i].type, q->qtype) && nans < sizeof(ans) / sizeof(ans[0]))
          ans[nans++] = (answer_t){ owner, &cur->recs[i] };
      break;
    }
  }

  bool trunc = !tcp && s && s->truncate;
  size_t limit = tcp ? TCP_MAX : (q->edns_size ? q->edns_size : 512);
  put_header(b, id, flags | (unsigned)rcode, trunc ? 0 : (unsigned)nans);
  wb_put(b, q->qwire, q->qwire_len);
  wb_u16(b, q->qtype);
  wb_u16(b, q->qclass);
  size_t qend = b->len;
  if (!trunc) {
    for (size_t i = 0; i < nans; i++) {
      const rec_t *rec = ans[i].rec;
      if (s->wrong_name)
        wb_name(b, WRONG_OWNER);
      else if (ans[i].owner)
        wb_name(b, ans[i].owner);
      else
        wb_u16(b, 0xC00C);
      wb_u16(b, rec->type);
      wb_u16(b, 1);
      wb_u32(b, rec->ttl);
      if (rec->type == T_CNAME) {
        size_t lenpos = b->len;
        wb_u16(b, 0);
        wb_name(b, rec->target);
        if (!b->fail) set_u16(b->p + lenpos, (unsigned)(b->len - lenpos - 2));
      } else {
        size_t alen = rec->type == T_A ? 4 : 16;
        wb_u16(b, (unsigned)alen);
        wb_put(b, rec->addr, alen);
      }
    }
  }
  if (!b->fail && (trunc || b->len > limit)) {
    b->len = qend;
    set_u16(b->p + 2, flags | (unsigned)rcode | 0x0200u);
    set_u16(b->p + 6, 0);
  }
  return true;
}

/* ---------- I/O (server thread only) ---------- */

static conn_t *find_conn(egress_dns_responder_t *r, uint64_t id) {
  for (size_t i = 0; i < r->nconns; i++)
    if (r->conns[i]->id == id) return r->conns[i];
  return NULL;
}

static void conn_flush(conn_t *c) {
  while (c->outlen > 0) {
    ssize_t n = send(c->fd, c->out, c->outlen, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n <= 0) return; /* EAGAIN: POLLOUT later; errors show up as POLLERR/HUP */
    memmove(c->out, c->out + n, c->outlen - (size_t)n);
    c->outlen -= (size_t)n;
  }
}

static void send_reply(egress_dns_responder_t *r, uint64_t conn_id, const struct sockaddr_storage *peer,
                       socklen_t peerlen, const uint8_t *buf, size_t len) {
  if (conn_id == 0) {
    ssize_t n =
        sendto(r->udp_fd, buf, len, MSG_DONTWAIT | MSG_NOSIGNAL, (const struct sockaddr *)peer, peerlen);
    (void)n; /* UDP: a lost reply is just a lost reply */
    return;
  }
  conn_t *c = find_conn(r, conn_id);
  if (!c || len > TCP_MAX) return;
  size_t need = c->outlen + 2 + len;
  if (need > c->outcap) {
    size_t nc = c->outcap ? c->outcap : 1024;
    while (nc < need) nc *= 2;
    uint8_t *np = realloc(c->out, nc);
    if (!np) return;
    c->out = np;
    c->outcap = nc;
  }
  set_u16(c->out + c->outlen, (unsigned)len);
  memcpy(c->out + c->outlen + 2, buf, len);
  c->outlen = need;
  conn_flush(c);
}

static void handle_message(egress_dns_responder_t *r, const uint8_t *msg, size_t len, uint64_t conn_id,
                           const struct sockaddr_storage *peer, socklen_t peerlen, bool silent) {
  query_t q;
  wbuf_t b = { 0 };
  unsigned delay = 0;
  int pr = parse_query(msg, len, &q);
  pthread_mutex_lock(&r->mu);
  bool send_it = false;
  if (pr != 0) {
    r->bad++;
    if (pr == -2) {
      unsigned flags = get_u16(msg + 2);
      wb_u16(&b, get_u16(msg));
      wb_u16(&b, 0x8000u | (flags & 0x7900u) | 0x0080u | EGRESS_DNS_FORMERR);
      wb_put(&b, "\0\0\0\0\0\0\0\0", 8);
      send_it = true;
    }
  } else {
    send_it = build_reply(r, &q, conn_id != 0, &b, &delay);
  }
  pthread_mutex_unlock(&r->mu);
  if (!send_it || silent || b.fail) goto done;
  if (delay == 0) {
    send_reply(r, conn_id, peer, peerlen, b.p, b.len);
    goto done;
  }
  if (r->npend == r->pendcap) {
    size_t nc = r->pendcap ? r->pendcap * 2 : 16;
    pending_t *np = realloc(r->pend, nc * sizeof(*np));
    if (!np) goto done;
    r->pend = np;
    r->pendcap = nc;
  }
  pending_t *p = &r->pend[r->npend++];
  memset(p, 0, sizeof(*p));
  p->due_ms = now_ms() + delay;
  p->conn_id = conn_id;
  if (peer) memcpy(&p->peer, peer, sizeof(*peer));
  p->peerlen = peerlen;
  p->buf = b.p; /* ownership moves to the queue */
  p->len = b.len;
  b.p = NULL;
done:
  free(b.p);
}

static void close_conn(egress_dns_responder_t *r, size_t i) {
  conn_t *c = r->conns[i];
  close(c->fd);
  free(c->in);
  free(c->out);
  free(c);
  r->conns[i] = r->conns[--r->nconns];
}

/* Returns false when the connection should be closed. */
static bool conn_read(egress_dns_responder_t *r, conn_t *c, bool silent) {
  for (;;) {
    if (c->inlen == 2 + TCP_MAX) return false; /* cannot happen: a message fits */
    ssize_t n = recv(c->fd, c->in + c->inlen, 2 + TCP_MAX - c->inlen, MSG_DONTWAIT);
    if (n == 0) return false;
    if (n < 0) return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
    c->inlen += (size_t)n;
    size_t off = 0;
    while (c->inlen - off >= 2) {
      size_t mlen = get_u16(c->in + off);
      if (c->inlen - off - 2 < mlen) break;
      handle_message(r, c->in + off + 2, mlen, c->id, NULL, 0, silent);
      off += 2 + mlen;
    }
    memmove(c->in, c->in + off, c->inlen - off);
    c->inlen -= off;
  }
}

static int open_socket(int family, int type, const struct sockaddr *sa, socklen_t salen, bool listener) {
  int fd = socket(family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  int one = 1;
  if (listener) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
  if (type == SOCK_DGRAM) {
    /* Tests send thousands of queries at once; the kernel caps this at
     * net.core.{r,w}mem_max, which is enough when the default is not. */
    int big = 8 << 20;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &big, sizeof(big));
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &big, sizeof(big));
  }
  if (bind(fd, sa, salen) != 0 || (listener && listen(fd, 64) != 0)) {
    int saved = errno;
    close(fd);
    errno = saved;
    return -1;
  }
  return fd;
}

static socklen_t make_addr(const egress_dns_responder_t *r, uint16_t port, struct sockaddr_storage *ss) {
  memset(ss, 0, sizeof(*ss));
  if (r->family == AF_INET) {
    struct sockaddr_in *sin = (struct sockaddr_in *)ss;
    sin->sin_family = AF_INET;
    sin->sin_port = htons(port);
    inet_pton(AF_INET, r->ip, &sin->sin_addr);
    return sizeof(*sin);
  }
  struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
  sin6->sin6_family = AF_INET6;
  sin6->sin6_port = htons(port);
  inet_pton(AF_INET6, r->ip, &sin6->sin6_addr);
  return sizeof(*sin6);
}

/* Apply a TCP mode change (under r->mu). */
static void apply_tcp_mode(egress_dns_responder_t *r) {
  if (r->tcp_mode == EGRESS_DNS_TCP_REFUSE && r->tcp_fd >= 0) {
    close(r->tcp_fd);
    r->tcp_fd = -1;
    while (r->nconns) close_conn(r, r->nconns - 1);
  } else if (r->tcp_mode != EGRESS_DNS_TCP_REFUSE && r->tcp_fd < 0) {
    struct sockaddr_storage ss;
    socklen_t sl = make_addr(r, r->port, &ss);
    r->tcp_fd = open_socket(r->family, SOCK_STREAM, (struct sockaddr *)&ss, sl, true);
  }
  r->tcp_rebind_failed = r->tcp_mode != EGRESS_DNS_TCP_REFUSE && r->tcp_fd < 0;
  r->ack_gen = r->cfg_gen;
  pthread_cond_broadcast(&r->cv);
}

static void *serve(void *arg) {
  egress_dns_responder_t *r = arg;
  uint8_t *ubuf = malloc(TCP_MAX);
  struct pollfd pfd[3 + MAX_CONNS];
  for (;;) {
    pthread_mutex_lock(&r->mu);
    if (r->stop || !ubuf) {
      pthread_mutex_unlock(&r->mu);
      break;
    }
    if (r->ack_gen != r->cfg_gen) apply_tcp_mode(r);
    egress_dns_tcp_mode_t mode = r->tcp_mode;
    pthread_mutex_unlock(&r->mu);

    nfds_t n = 0;
    pfd[n++] = (struct pollfd){ .fd = r->wake[0], .events = POLLIN };
    pfd[n++] = (struct pollfd){ .fd = r->udp_fd, .events = POLLIN };
    pfd[n++] = (struct pollfd){ .fd = r->tcp_fd, .events = POLLIN }; /* -1 is ignored by poll */
    size_t nc = r->nconns;
    for (size_t i = 0; i < nc; i++)
      pfd[n++] = (struct pollfd){ .fd = r->conns[i]->fd,
                                  .events = (short)(POLLIN | (r->conns[i]->outlen ? POLLOUT : 0)) };
    int timeout = -1;
    uint64_t now = now_ms();
    for (size_t i = 0; i < r->npend; i++) {
      int t = r->pend[i].due_ms <= now ? 0 : (int)(r->pend[i].due_ms - now);
      if (timeout < 0 || t < timeout) timeout = t;
    }
    if (poll(pfd, n, timeout) < 0 && errno != EINTR) break;

    if (pfd[0].revents) {
      char drain[64];
      while (read(r->wake[0], drain, sizeof(drain)) > 0) {}
    }
    if (pfd[1].revents & POLLIN) {
      /* Drain deep: tests fire tens of thousands of queries at once and the
       * receive buffer holds only a fraction of them. */
      for (int k = 0; k < 4096; k++) {
        struct sockaddr_storage peer;
        socklen_t pl = sizeof(peer);
        ssize_t got = recvfrom(r->udp_fd, ubuf, TCP_MAX, MSG_DONTWAIT, (struct sockaddr *)&peer, &pl);
        if (got < 0) break;
        handle_message(r, ubuf, (size_t)got, 0, &peer, pl, false);
      }
    }
    /* Connections first: accepting may reorder r->conns. */
    for (size_t i = nc; i-- > 0;) {
      short ev = pfd[3 + i].revents;
      conn_t *c = r->conns[i];
      bool keep = true;
      if (ev & POLLIN)
        keep = conn_read(r, c, mode == EGRESS_DNS_TCP_SILENT);
      else if (ev & (POLLHUP | POLLERR | POLLNVAL))
        keep = false;
      if (keep && (ev & POLLOUT)) conn_flush(c);
      if (!keep) close_conn(r, i);
    }
    if (r->tcp_fd >= 0 && (pfd[2].revents & POLLIN)) {
      for (;;) {
        int fd = accept4(r->tcp_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) break;
        conn_t *c = NULL;
        if (mode == EGRESS_DNS_TCP_CLOSE || r->nconns == MAX_CONNS || !(c = calloc(1, sizeof(*c))) ||
            !(c->in = malloc(2 + TCP_MAX))) {
          if (c) free(c);
          close(fd);
          continue;
        }
        c->fd = fd;
        c->id = ++r->next_conn_id;
        r->conns[r->nconns++] = c;
      }
    }
    now = now_ms();
    for (size_t i = 0; i < r->npend;) {
      pending_t *p = &r->pend[i];
      if (p->due_ms > now) {
        i++;
        continue;
      }
      send_reply(r, p->conn_id, &p->peer, p->peerlen, p->buf, p->len);
      free(p->buf);
      r->pend[i] = r->pend[--r->npend];
    }
  }
  free(ubuf);
  /* Whatever ended the loop, nobody may wait for this thread's ack any more. */
  pthread_mutex_lock(&r->mu);
  r->stop = true;
  pthread_cond_broadcast(&r->cv);
  pthread_mutex_unlock(&r->mu);
  return NULL;
}

/* ---------- lifecycle ---------- */

static void destroy(egress_dns_responder_t *r) {
  while (r->nconns) close_conn(r, r->nconns - 1);
  for (size_t i = 0; i < r->npend; i++) free(r->pend[i].buf);
  free(r->pend);
  if (r->udp_fd >= 0) close(r->udp_fd);
  if (r->tcp_fd >= 0) close(r->tcp_fd);
  if (r->wake[0] >= 0) close(r->wake[0]);
  if (r->wake[1] >= 0) close(r->wake[1]);
  free_entries(r);
  pthread_cond_destroy(&r->cv);
  pthread_mutex_destroy(&r->mu);
  free(r);
}

egress_dns_responder_t *egress_dns_start_port(const char *bind_ip, uint16_t port) {
  if (!bind_ip) bind_ip = "127.0.0.1";
  egress_dns_responder_t *r = calloc(1, sizeof(*r));
  if (!r) return NULL;
  r->udp_fd = r->tcp_fd = r->wake[0] = r->wake[1] = -1;
  r->default_rcode = EGRESS_DNS_NXDOMAIN;
  pthread_mutex_init(&r->mu, NULL);
  pthread_cond_init(&r->cv, NULL);
  uint8_t tmp[16];
  if (strlen(bind_ip) >= sizeof(r->ip)) goto fail_inval;
  if (inet_pton(AF_INET, bind_ip, tmp) == 1)
    r->family = AF_INET;
  else if (inet_pton(AF_INET6, bind_ip, tmp) == 1)
    r->family = AF_INET6;
  else
    goto fail_inval;
  snprintf(r->ip, sizeof(r->ip), "%s", bind_ip);
  if (pipe2(r->wake, O_NONBLOCK | O_CLOEXEC) != 0) goto fail;

  /* The kernel picks a free UDP port; the same TCP port may be taken, so try again. */
  for (int attempt = 0; attempt < 100; attempt++) {
    struct sockaddr_storage ss;
    socklen_t sl = make_addr(r, port, &ss);
    r->udp_fd = open_socket(r->family, SOCK_DGRAM, (struct sockaddr *)&ss, sl, false);
    if (r->udp_fd < 0) goto fail;
    sl = sizeof(ss);
    if (getsockname(r->udp_fd, (struct sockaddr *)&ss, &sl) != 0) goto fail;
    r->port = ntohs(r->family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
                                         : ((struct sockaddr_in6 *)&ss)->sin6_port);
    r->tcp_fd = open_socket(r->family, SOCK_STREAM, (struct sockaddr *)&ss, sl, true);
    if (r->tcp_fd >= 0) break;
    close(r->udp_fd);
    r->udp_fd = -1;
    if (port != 0) goto fail;
  }
  if (r->tcp_fd < 0) goto fail;
  if (pthread_create(&r->thread, NULL, serve, r) != 0) goto fail;
  return r;

fail_inval:
  errno = EINVAL;
fail : {
  int saved = errno;
  destroy(r);
  errno = saved;
  return NULL;
}
}

egress_dns_responder_t *egress_dns_start(const char *bind_ip) { return egress_dns_start_port(bind_ip, 0); }

void egress_dns_stop(egress_dns_responder_t *r) {
  if (!r) return;
  pthread_mutex_lock(&r->mu);
  r->stop = true;
  pthread_cond_broadcast(&r->cv);
  pthread_mutex_unlock(&r->mu);
  wake_thread(r);
  pthread_join(r->thread, NULL);
  destroy(r);
}

uint16_t egress_dns_port(const egress_dns_responder_t *r) { return r ? r->port : 0; }

const char *egress_dns_server_csv(const egress_dns_responder_t *r, char *buf, size_t buflen) {
  if (!buf || buflen == 0) return buf;
  if (!r)
    buf[0] = '\0';
  else if (r->family == AF_INET6)
    snprintf(buf, buflen, "[%s]:%u", r->ip, (unsigned)r->port);
  else
    snprintf(buf, buflen, "%s:%u", r->ip, (unsigned)r->port);
  return buf;
}
