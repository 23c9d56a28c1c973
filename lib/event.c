/*
 * Decision events (DESIGN §6) and egressctl's per-decision output (§7).
 *
 * Both are built with cJSON.  cJSON_InitHooks() is deliberately never
 * called: its hooks are process-wide and would take over the allocator of
 * a host application that uses cJSON itself.  cJSON therefore allocates
 * with whatever the application configured, and the printed text is
 * copied into an egress__malloc() buffer so that our callers free
 * everything they get from us with egress__free().
 *
 * Every string that reaches the JSON text goes through json_str(), which
 * replaces ill-formed UTF-8 with U+FFFD.  The destination of an invalid
 * host is reported as given, so it can hold anything a hostile caller
 * chose; cJSON escapes control characters but copies other bytes through,
 * and one stray byte would make the whole audit line invalid JSON for a
 * strict reader.
 *
 * Field choice: the event's "data" holds exactly the fields DESIGN §6
 * lists, plus "url" when the check was made with egress_check_url(): the
 * path is part of what was decided (URL path prefixes), so an audit record
 * without it could not be replayed.  The member is absent for host:port
 * checks, so consumers that know only the listed fields are unaffected.
 */
#include "egress_private.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <pthread.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

/* ------------------------------------------------------------------------ */
/* UTF-8                                                                     */
/* ------------------------------------------------------------------------ */

/*
 * Length of the well-formed UTF-8 sequence at s[0..len) (Unicode Table 3-7),
 * or 0 when ill-formed; *bad is then the length of the maximal subpart to
 * replace by one U+FFFD (Unicode §3.9 "U+FFFD Substitution of Maximal
 * Subparts", what browsers and Python do), always at least 1.
 */
static size_t utf8_seq(const unsigned char *s, size_t len, size_t *bad) {
  unsigned char c = s[0];
  size_t need;
  unsigned char lo = 0x80, hi = 0xBF; /* allowed range of the second byte */

  *bad = 1;
  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF) {
    need = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    need = 3;
    if (c == 0xE0) lo = 0xA0;      /* overlong */
    else if (c == 0xED) hi = 0x9F; /* surrogates */
  } else if (c >= 0xF0 && c <= 0xF4) {
    need = 4;
    if (c == 0xF0) lo = 0x90;      /* overlong */
    else if (c == 0xF4) hi = 0x8F; /* above U+10FFFF */
  } else {
    return 0; /* 80..C1, F5..FF never start a sequence */
  }
  for (size_t i = 1; i < need; i++) {
    unsigned char min = i == 1 ? lo : 0x80, max = i == 1 ? hi : 0xBF;
    if (i >= len || s[i] < min || s[i] > max) {
      *bad = i;
      return 0;
    }
  }
  return need;
}

/* How many leading bytes of s[0..len) are well-formed UTF-8. */
static size_t utf8_valid_prefix(const unsigned char *u, size_t len) {
  size_t i = 0, bad;
  while (i < len) {
    size_t n = utf8_seq(u + i, len - i, &bad);
    if (!n) break;
    i += n;
  }
  return i;
}

/* A copy of s[0..len) with ill-formed UTF-8 replaced by U+FFFD, the first
 * @p valid bytes known good; egress__malloc'd, NULL on ENOMEM. */
static char *utf8_cleaned(const char *s, size_t len, size_t valid) {
  const unsigned char *u = (const unsigned char *)s;
  size_t i = valid, bad;
  /* Each replaced byte run (>= 1 byte) becomes 3 bytes of U+FFFD. */
  if (len > (SIZE_MAX - 1) / 3) return NULL;
  char *clean = egress__malloc(len * 3 + 1);
  if (!clean) return NULL;
  memcpy(clean, s, i);
  size_t o = i;
  while (i < len) {
    size_t n = utf8_seq(u + i, len - i, &bad);
    if (n) {
      memcpy(clean + o, s + i, n);
      o += n;
      i += n;
    } else {
      memcpy(clean + o, "\xEF\xBF\xBD", 3);
      o += 3;
      i += bad;
    }
  }
  clean[o] = '\0';
  return clean;
}

/* A cJSON string holding @p s (NUL-terminated) with ill-formed UTF-8
 * replaced; a JSON null when @p s is NULL.  NULL on allocation failure. */
static cJSON *json_str_as(const char *s, bool borrow) {
  if (!s) return cJSON_CreateNull();
  size_t len = strlen(s);
  size_t valid = utf8_valid_prefix((const unsigned char *)s, len);
  if (valid == len) return borrow ? cJSON_CreateStringReference(s) : cJSON_CreateString(s);
  char *clean = utf8_cleaned(s, len, valid);
  if (!clean) return NULL;
  cJSON *item = cJSON_CreateString(clean);
  egress__free(clean);
  return item;
}

/* Strings that live as long as the decision (or forever) are referenced,
 * not copied: an event is printed before its decision changes. */
static cJSON *json_str(const char *s) { return json_str_as(s, true); }
static cJSON *json_const(const char *s) { return cJSON_CreateStringReference(s); }

/* ------------------------------------------------------------------------ */
/* Building blocks                                                           */
/* ------------------------------------------------------------------------ */

/* Adds @p item under the constant key @p key; takes ownership of the item
 * either way, so callers can write add(obj, "k", cJSON_Create...()). */
static bool add(cJSON *obj, const char *key, cJSON *item) {
  if (!item) return false;
  if (!cJSON_AddItemToObjectCS(obj, key, item)) {
    cJSON_Delete(item);
    return false;
  }
  return true;
}

static bool append(cJSON *arr, cJSON *item) {
  if (!item) return false;
  if (!cJSON_AddItemToArray(arr, item)) {
    cJSON_Delete(item);
    return false;
  }
  return true;
}

/* Milliseconds rounded to microseconds: three decimals say all a timing can
 * mean, and keep "%1.15g" from printing 0.12300000000000001.  Non-finite or
 * negative timings (a clock step) become 0 rather than a JSON null that
 * would change the field's type.  Printed here as fixed point: cJSON prints
 * doubles with "%1.15g" and reads them back with sscanf, which dominates
 * the cost of an event.  NUMBUF_MAX bytes are enough. */
#define NUMBUF_MAX 32

static void format_ms(double ms, char *buf) {
  if (!isfinite(ms) || ms < 0) ms = 0;
  if (ms >= 1e12) {
    snprintf(buf, NUMBUF_MAX, "%1.15g", ms);
    return;
  }
  long long micros = (long long)(ms * 1000.0 + 0.5);
  char *e = egress__put_uint(buf, (unsigned long long)(micros / 1000), 1);
  *e++ = '.';
  e = egress__put_uint(e, (unsigned long long)(micros % 1000), 3);
  *e = '\0';
  int n = (int)(e - buf);
  /* "1.500" -> "1.5", "2.000" -> "2": the shortest form, as %g would give. */
  while (n > 0 && buf[n - 1] == '0') buf[--n] = '\0';
  if (n > 0 && buf[n - 1] == '.') buf[--n] = '\0';
}

/* Integers as raw JSON numbers, for the same reason. */
static void format_int(long long v, char *buf) {
  char *p = buf;
  if (v < 0) *p++ = '-';
  p = egress__put_uint(p, v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v, 1);
  *p = '\0';
}

static cJSON *json_int(long long v) {
  char buf[NUMBUF_MAX];
  format_int(v, buf);
  return cJSON_CreateRaw(buf);
}

static const char *verdict_name(egress_verdict_t v) {
  return v == EGRESS_VERDICT_ALLOW ? "allow" : "deny";
}

static const char *mode_name(egress_mode_t m) {
  return m == EGRESS_MODE_MONITOR ? "monitor" : "enforce";
}

/* The reason of a decision as reported: null only for a clean allow, so a
 * malformed deny still says something. */
static cJSON *json_reason(const egress_decision_t *d) {
  if (d->outcome == EGRESS_OUTCOME_ALLOWED && d->reason == EGRESS_REASON_NONE)
    return cJSON_CreateNull();
  return json_const(egress_reason_name(d->reason));
}

static cJSON *json_rule(const egress_decision_t *d) {
  if (!d->has_rule) return cJSON_CreateNull();
  cJSON *r = cJSON_CreateObject();
  if (!r) return NULL;
  if (!add(r, "index", json_int((long long)d->rule_index)) ||
      !add(r, "list", json_const(d->rule_list == EGRESS_LIST_DENY ? "deny" : "allow")) ||
      !add(r, "text", json_str(d->rule_text))) {
    cJSON_Delete(r);
    return NULL;
  }
  return r;
}

static cJSON *json_addresses(const egress_decision_t *d) {
  cJSON *arr = cJSON_CreateArray();
  if (!arr) return NULL;
  for (size_t i = 0; d->addrs && i < d->naddrs; i++) {
    const egress__addr_verdict_t *a = &d->addrs[i];
    cJSON *o = cJSON_CreateObject();
    if (!append(arr, o)) goto fail;
    /* a->text is a fixed array filled by inet_ntop-like code; bound it in
     * case it was ever left unterminated. */
    char text[EGRESS__IPSTR_MAX];
    size_t tl = strnlen(a->text, sizeof text - 1);
    memcpy(text, a->text, tl);
    text[tl] = '\0';
    if (!add(o, "address", json_str_as(text, false)) ||
        !add(o, "verdict", json_const(verdict_name(a->verdict))) ||
        !add(o, "reason", a->reason == EGRESS_REASON_NONE
                              ? cJSON_CreateNull()
                              : json_const(egress_reason_name(a->reason))) ||
        !add(o, "ttl", a->ttl < 0 ? cJSON_CreateNull() : json_int(a->ttl)))
      goto fail;
  }
  return arr;

fail:
  cJSON_Delete(arr);
  return NULL;
}

/* A URL that could not be parsed has no host or port to name: the
 * destination is the URL exactly as given. */
static bool dest_is_url(const egress_decision_t *d) {
  return d->url && d->port == 0 && d->destination && !strcmp(d->destination, d->url);
}

/* The most of the destination that an event or a decision line reports.  A
 * host that canonicalized is reported exactly as given (canonicalization
 * bounds its length); one that did not may be anything a caller passed. */
static size_t dest_max(const egress_decision_t *d) {
  if (d->has_host) return SIZE_MAX;
  return dest_is_url(d) ? EGRESS__REPORT_URL_MAX : EGRESS__REPORT_HOST_MAX;
}

/* @p s cut as reported (egress__report_keep), in an egress__malloc() copy;
 * NULL on ENOMEM. */
static char *cut_copy(const char *s, size_t max) {
  size_t len = strlen(s), keep = egress__report_keep(s, len, max);
  char *out = egress__malloc(keep + EGRESS__REPORT_MARK_MAX + 1);
  if (!out) return NULL;
  memcpy(out, s, keep);
  char *p = out + keep;
  if (keep < len) p = egress__report_mark(p, len);
  *p = '\0';
  return out;
}

/* "host:port" with the destination as given (an invalid one cut when longer
 * than any host can be); an IPv6 literal given without brackets is bracketed so the port
 * stays unambiguous.  Only a host that canonicalized is known to be IPv6: an
 * invalid destination is left as given.  Written into @p buf of at least
 * host_port_cap(d) bytes. */
static size_t host_port_cap(const egress_decision_t *d) {
  const char *dest = d->destination ? d->destination : "";
  return egress__report_keep(dest, strlen(dest), dest_max(d)) + EGRESS__REPORT_MARK_MAX + 32;
}

static void host_port_write(const egress_decision_t *d, char *buf) {
  const char *dest = d->destination ? d->destination : "";
  size_t dl = strlen(dest);
  size_t keep = egress__report_keep(dest, dl, dest_max(d));
  char *p = buf;
  if (dest_is_url(d)) {
    memcpy(p, dest, keep);
    p += keep;
    if (keep < dl) p = egress__report_mark(p, dl);
    *p = '\0';
    return;
  }
  bool bracket = d->has_host && dest[0] != '[' && memchr(dest, ':', keep) != NULL;
  if (bracket) *p++ = '[';
  memcpy(p, dest, keep);
  p += keep;
  if (keep < dl) p = egress__report_mark(p, dl);
  if (bracket) *p++ = ']';
  *p++ = ':';
  if (d->port < 0) *p++ = '-';
  p = egress__put_uint(p, (unsigned long long)(d->port < 0 ? -(long long)d->port : d->port), 1);
  *p = '\0';
}

/* Most events fit this per-thread buffer: cJSON prints straight into it,
 * sparing its growing buffer (and the large-block malloc that goes with it). */
static _Thread_local char print_buf[8192];

/* Print into print_buf; NULL when the tree does not fit (or on error). */
static const char *print_tls(cJSON *root, size_t *len) {
  if (!cJSON_PrintPreallocated(root, print_buf, (int)sizeof print_buf, false)) return NULL;
  *len = strlen(print_buf);
  return print_buf;
}

/* @p root printed compactly into an egress__malloc() buffer. */
static char *print_copy(cJSON *root) {
  size_t len = 0;
  const char *tls = print_tls(root, &len);
  if (tls) return egress__strndup(tls, len);
  char *text = cJSON_PrintUnformatted(root);
  if (!text) return NULL;
  char *out = egress__strdup(text);
  cJSON_free(text);
  return out;
}

static char *print_and_delete(cJSON *root) {
  char *out = print_copy(root);
  cJSON_Delete(root);
  return out;
}

/* ------------------------------------------------------------------------ */
/* Stamp                                                                     */
/* ------------------------------------------------------------------------ */

/*
 * Event ids come from the kernel's random source, fetched in blocks per
 * thread rather than one getrandom(2) per event.  A forked child starts
 * with an empty block, so parent and child never share ids.
 */
static _Thread_local unsigned char random_block[512];
static _Thread_local size_t random_left;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void random_forget(void) { random_left = 0; }
static void atfork_register(void) { pthread_atfork(NULL, NULL, random_forget); }

static bool random_bytes(unsigned char *out, size_t len) {
  pthread_once(&atfork_once, atfork_register);
  if (random_left < len) {
    size_t got = 0;
    while (got < sizeof random_block) {
      ssize_t n = getrandom(random_block + got, sizeof random_block - got, 0);
      if (n < 0) {
        if (errno == EINTR) continue;
        random_left = 0;
        return false;
      }
      got += (size_t)n;
    }
    random_left = sizeof random_block;
  }
  unsigned char *src = random_block + sizeof random_block - random_left;
  memcpy(out, src, len);
  memset(src, 0, len);   /* an id is never handed out twice */
  random_left -= len;
  return true;
}

egress_status_t egress__event_stamp(egress_decision_t *d) {
  static const char hex[] = "0123456789abcdef";
  unsigned char r[16];
  size_t got = 0;
  struct timespec ts;
  struct tm tm;

  if (!d) return EGRESS_EINVAL;
  d->event_id[0] = '\0';
  d->time_rfc3339[0] = '\0';

  /* getrandom(2) never needs a file descriptor (works in chroots and after
   * fd exhaustion) and blocks only until the kernel pool is first seeded. */
  (void)got;
  if (!random_bytes(r, sizeof r)) return EGRESS_EINTERNAL;
  r[6] = (unsigned char)((r[6] & 0x0F) | 0x40); /* version 4 (RFC 9562 §5.4) */
  r[8] = (unsigned char)((r[8] & 0x3F) | 0x80); /* variant 10 */
  char *p = d->event_id;
  for (size_t i = 0; i < sizeof r; i++) {
    if (i == 4 || i == 6 || i == 8 || i == 10) *p++ = '-';
    *p++ = hex[r[i] >> 4];
    *p++ = hex[r[i] & 0x0F];
  }
  *p = '\0';

  if (clock_gettime(CLOCK_REALTIME, &ts) != 0 || !gmtime_r(&ts.tv_sec, &tm))
    goto fail;
  if (tm.tm_year + 1900 < 0 || tm.tm_year + 1900 > 9999) goto fail;
  char *t = d->time_rfc3339;   /* YYYY-MM-DDTHH:MM:SS.mmmZ, 24 characters */
  t = egress__put_uint(t, (unsigned)(tm.tm_year + 1900), 4);
  *t++ = '-';
  t = egress__put_uint(t, (unsigned)(tm.tm_mon + 1), 2);
  *t++ = '-';
  t = egress__put_uint(t, (unsigned)tm.tm_mday, 2);
  *t++ = 'T';
  t = egress__put_uint(t, (unsigned)tm.tm_hour, 2);
  *t++ = ':';
  t = egress__put_uint(t, (unsigned)tm.tm_min, 2);
  *t++ = ':';
  t = egress__put_uint(t, (unsigned)tm.tm_sec, 2);
  *t++ = '.';
  t = egress__put_uint(t, (unsigned long long)(ts.tv_nsec / 1000000), 3);
  *t++ = 'Z';
  *t = '\0';
  return EGRESS_OK;

fail:
  d->event_id[0] = '\0';
  d->time_rfc3339[0] = '\0';
  return EGRESS_EINTERNAL;
}

/* ------------------------------------------------------------------------ */
/* The CloudEvent                                                            */
/* ------------------------------------------------------------------------ */

/*
 * Each thread keeps one event tree and refills it for every event: building
 * a fresh tree took some 45 allocations per event and cost more than the
 * check and its write(2) together.  Leaves are re-typed in place (string,
 * null, raw number, bool) and point at strings that outlive the print: the
 * decision's own, constants, or the buffers below.  Every such leaf carries
 * cJSON_IsReference so that cJSON_Delete never frees what it points at.
 * Nothing runs user code between filling and printing, so a callback that
 * checks again on the same thread finds the tree free.
 */
typedef struct addr_node {
  cJSON *obj, *address, *verdict, *reason, *ttl;
  char ttl_buf[NUMBUF_MAX];
  char text[EGRESS__IPSTR_MAX];
} addr_node_t;

#define OWNED_MAX 24   /* cut or cleaned strings of one event, at most two per field */

typedef struct event_tree {
  cJSON *root, *data;
  cJSON *source, *id, *time, *subject;
  cJSON *ctx[EGRESS__FIELD_COUNT];
  cJSON *destination, *host, *port, *outcome, *deny_reason, *mode, *would_deny;
  cJSON *rule, *rule_index, *rule_list, *rule_text;
  cJSON *addresses, *dns_ms, *latency_ms, *digest, *special_version, *url;
  bool url_linked;
  char port_buf[NUMBUF_MAX], rule_index_buf[NUMBUF_MAX], dns_buf[NUMBUF_MAX], latency_buf[NUMBUF_MAX];
  char *host_port;                 /* subject and destination (the same text) */
  size_t host_port_cap;
  addr_node_t **nodes;             /* address objects, reused */
  size_t nnodes;
  char *owned[OWNED_MAX];          /* cut copies of over-long strings and
                                      cleaned copies of ill-formed ones */
  size_t nowned;
} event_tree_t;

static _Thread_local event_tree_t *tls_tree;
static pthread_key_t tree_key;
static pthread_once_t tree_once = PTHREAD_ONCE_INIT;

static void tree_drop_owned(event_tree_t *t) {
  for (size_t i = 0; i < t->nowned; i++) egress__free(t->owned[i]);
  t->nowned = 0;
}

static void tree_free(void *p) {
  event_tree_t *t = p;
  if (!t) return;
  if (t == tls_tree) tls_tree = NULL;
  if (t->addresses) t->addresses->child = NULL;   /* the nodes are deleted below */
  if (t->url && !t->url_linked) cJSON_Delete(t->url);
  cJSON_Delete(t->root);
  for (size_t i = 0; i < t->nnodes; i++) {
    /* cJSON_Delete follows next: delete one object, not the chain. */
    t->nodes[i]->obj->next = t->nodes[i]->obj->prev = NULL;
    cJSON_Delete(t->nodes[i]->obj);
    egress__free(t->nodes[i]);
  }
  egress__free(t->nodes);
  egress__free(t->host_port);
  tree_drop_owned(t);
  egress__free(t);
}

static void tree_key_init(void) { pthread_key_create(&tree_key, tree_free); }

/* A leaf under @p key of @p obj; NULL on allocation failure. */
static cJSON *leaf(cJSON *obj, const char *key) {
  cJSON *item = cJSON_CreateNull();
  return add(obj, key, item) ? item : NULL;
}

static event_tree_t *tree_new(void) {
  /* The tree belongs to the thread, like print_buf: freed by the key's
   * destructor at thread exit. */
  event_tree_t *t = egress__calloc(1, sizeof *t);
  if (!t) return NULL;
  static const char *const ctx_keys[EGRESS__FIELD_COUNT] = {"workspaceId", "agentId", "machineId",
                                                            "runId", "correlationId", "method"};
  static const egress_field_t ctx_fields[EGRESS__FIELD_COUNT] = {
      EGRESS_FIELD_WORKSPACE_ID, EGRESS_FIELD_AGENT_ID, EGRESS_FIELD_MACHINE_ID,
      EGRESS_FIELD_RUN_ID, EGRESS_FIELD_CORRELATION_ID, EGRESS_FIELD_METHOD};
  bool ok = (t->root = cJSON_CreateObject()) != NULL;
  ok = ok && add(t->root, "specversion", json_const("1.0")) &&
       add(t->root, "type", json_const(EGRESS__EVENT_TYPE)) &&
       (t->source = leaf(t->root, "source")) && (t->id = leaf(t->root, "id")) &&
       (t->time = leaf(t->root, "time")) &&
       add(t->root, "datacontenttype", json_const("application/json")) &&
       (t->subject = leaf(t->root, "subject")) && add(t->root, "data", cJSON_CreateObject());
  if (ok) t->data = cJSON_GetObjectItemCaseSensitive(t->root, "data");
  for (int i = 0; ok && i < EGRESS__FIELD_COUNT; i++)
    ok = (t->ctx[ctx_fields[i]] = leaf(t->data, ctx_keys[i])) != NULL;
  ok = ok && (t->destination = leaf(t->data, "destination")) && (t->host = leaf(t->data, "host")) &&
       (t->port = leaf(t->data, "port")) && (t->outcome = leaf(t->data, "outcome")) &&
       (t->deny_reason = leaf(t->data, "denyReason")) && (t->mode = leaf(t->data, "enforcementMode")) &&
       (t->would_deny = leaf(t->data, "wouldDeny")) && add(t->data, "matchedRule", cJSON_CreateObject());
  if (ok) t->rule = cJSON_GetObjectItemCaseSensitive(t->data, "matchedRule");
  ok = ok && (t->rule_index = leaf(t->rule, "index")) && (t->rule_list = leaf(t->rule, "list")) &&
       (t->rule_text = leaf(t->rule, "text")) && add(t->data, "addresses", cJSON_CreateArray());
  if (ok) t->addresses = cJSON_GetObjectItemCaseSensitive(t->data, "addresses");
  ok = ok && (t->dns_ms = leaf(t->data, "dnsMs")) && (t->latency_ms = leaf(t->data, "latencyMs")) &&
       (t->digest = leaf(t->data, "policyDigest")) &&
       (t->special_version = leaf(t->data, "specialRangesVersion")) && (t->url = leaf(t->data, "url"));
  t->url_linked = t->url != NULL;
  if (!ok) {
    tree_free(t);
    return NULL;
  }
  return t;
}

static event_tree_t *tree_get(void) {
  if (tls_tree) return tls_tree;
  pthread_once(&tree_once, tree_key_init);
  event_tree_t *t = tree_new();
  if (!t) return NULL;
  if (pthread_setspecific(tree_key, t) != 0) {
    tree_free(t);
    return NULL;
  }
  return tls_tree = t;
}

/* A new type for a member, keeping its constant-key flag (the key is ours
 * and must not be freed either). */
static void retype(cJSON *item, int type) { item->type = type | (item->type & cJSON_StringIsConst); }

static void set_null(cJSON *item) {
  retype(item, cJSON_NULL | cJSON_IsReference);
  item->valuestring = NULL;
}

static void set_bool(cJSON *item, bool v) {
  retype(item, (v ? cJSON_True : cJSON_False) | cJSON_IsReference);
  item->valuestring = NULL;
}

/* The cast is cJSON's own (cJSON_CreateStringReference): it never writes. */
static void set_ref(cJSON *item, int type, const char *s) {
  retype(item, type | cJSON_IsReference);
  union {
    const char *c;
    char *m;
  } u = {.c = s};
  item->valuestring = u.m;
}

static void set_const(cJSON *item, const char *s) { set_ref(item, cJSON_String, s); }
static void set_raw(cJSON *item, const char *s) { set_ref(item, cJSON_Raw, s); }

/* A string that may be ill-formed UTF-8 (see json_str); null when NULL. */
static bool set_text(event_tree_t *t, cJSON *item, const char *s) {
  if (!s) {
    set_null(item);
    return true;
  }
  size_t len = strlen(s);
  size_t valid = utf8_valid_prefix((const unsigned char *)s, len);
  if (valid < len) {
    if (t->nowned == OWNED_MAX || !(s = utf8_cleaned(s, len, valid))) return false;
    t->owned[t->nowned++] = (char *)s;
  }
  set_const(item, s);
  return true;
}

/* set_text for caller-given text that may be too long to report whole. */
static bool set_text_cut(event_tree_t *t, cJSON *item, const char *s, size_t max) {
  if (!s || strlen(s) <= max) return set_text(t, item, s);
  char *cut = cut_copy(s, max);
  if (!cut) return false;
  if (t->nowned == OWNED_MAX) {
    egress__free(cut);
    return false;
  }
  t->owned[t->nowned++] = cut;
  return set_text(t, item, cut);
}

/* Link the first @p n address objects into the array (cJSON keeps the
 * last element in child->prev). */
static bool tree_addresses(event_tree_t *t, const egress_decision_t *d) {
  size_t n = d->addrs ? d->naddrs : 0;
  if (n > t->nnodes) {
    addr_node_t **nodes = egress__realloc(t->nodes, n * sizeof *nodes);
    if (!nodes) return false;
    t->nodes = nodes;
    while (t->nnodes < n) {
      addr_node_t *a = egress__calloc(1, sizeof *a);
      if (!a) return false;
      bool ok = (a->obj = cJSON_CreateObject()) && (a->address = leaf(a->obj, "address")) &&
                (a->verdict = leaf(a->obj, "verdict")) && (a->reason = leaf(a->obj, "reason")) &&
                (a->ttl = leaf(a->obj, "ttl"));
      if (!ok) {
        cJSON_Delete(a->obj);
        egress__free(a);
        return false;
      }
      t->nodes[t->nnodes++] = a;
    }
  }
  for (size_t i = 0; i < n; i++) {
    const egress__addr_verdict_t *v = &d->addrs[i];
    addr_node_t *a = t->nodes[i];
    /* a->text is a fixed array filled by our formatter; bound it in case it
     * was ever left unterminated. */
    size_t tl = strnlen(v->text, sizeof a->text - 1);
    memcpy(a->text, v->text, tl);
    a->text[tl] = '\0';
    if (!set_text(t, a->address, a->text)) return false;
    set_const(a->verdict, verdict_name(v->verdict));
    if (v->reason == EGRESS_REASON_NONE)
      set_null(a->reason);
    else
      set_const(a->reason, egress_reason_name(v->reason));
    if (v->ttl < 0) {
      set_null(a->ttl);
    } else {
      format_int(v->ttl, a->ttl_buf);
      set_raw(a->ttl, a->ttl_buf);
    }
    a->obj->next = i + 1 < n ? t->nodes[i + 1]->obj : NULL;
    a->obj->prev = i ? t->nodes[i - 1]->obj : t->nodes[n - 1]->obj;
  }
  t->addresses->child = n ? t->nodes[0]->obj : NULL;
  return true;
}

/* Fill the thread's tree from @p d; NULL when out of memory. */
static cJSON *event_tree(const egress_decision_t *d, const char *source) {
  event_tree_t *t = tree_get();
  if (!t) return NULL;
  tree_drop_owned(t);
  size_t cap = host_port_cap(d);
  if (!cap) return NULL;
  if (cap > t->host_port_cap) {
    char *hp = egress__realloc(t->host_port, cap);
    if (!hp) return NULL;
    t->host_port = hp;
    t->host_port_cap = cap;
  }
  host_port_write(d, t->host_port);

  const egress_outcome_t oc = d->outcome;
  bool ok = set_text(t, t->source, source ? source : EGRESS__DEFAULT_SOURCE) &&
            set_text(t, t->id, d->event_id) && set_text(t, t->time, d->time_rfc3339) &&
            set_text(t, t->subject, t->host_port) && set_text(t, t->destination, t->host_port) &&
            set_text(t, t->host, d->has_host ? d->host.text : NULL) &&
            set_text(t, t->digest, d->policy_digest[0] ? d->policy_digest : NULL) &&
            set_text(t, t->special_version, d->special_version ? d->special_version : egress__special_version);
  for (int i = 0; ok && i < EGRESS__FIELD_COUNT; i++) ok = set_text(t, t->ctx[i], d->field[i]);
  if (!ok) return NULL;

  format_int(d->port, t->port_buf);
  set_raw(t->port, t->port_buf);
  set_const(t->outcome, egress_outcome_name(oc));
  if (oc == EGRESS_OUTCOME_ALLOWED && d->reason == EGRESS_REASON_NONE)
    set_null(t->deny_reason);
  else   /* a malformed deny still says something */
    set_const(t->deny_reason, egress_reason_name(d->reason));
  set_const(t->mode, mode_name(d->mode));
  set_bool(t->would_deny, oc != EGRESS_OUTCOME_ALLOWED);

  if (d->has_rule) {
    retype(t->rule, cJSON_Object);
    format_int((long long)d->rule_index, t->rule_index_buf);
    set_raw(t->rule_index, t->rule_index_buf);
    set_const(t->rule_list, d->rule_list == EGRESS_LIST_DENY ? "deny" : "allow");
    if (!set_text(t, t->rule_text, d->rule_text)) return NULL;
  } else {
    retype(t->rule, cJSON_NULL);   /* printed as null; its members stay for next time */
  }
  if (!tree_addresses(t, d)) return NULL;
  format_ms(d->dns_ms, t->dns_buf);
  set_raw(t->dns_ms, t->dns_buf);
  format_ms(d->latency_ms, t->latency_buf);
  set_raw(t->latency_ms, t->latency_buf);

  /* "url" only for URL checks: the member is linked in or left out. */
  if (d->url) {
    if (!set_text_cut(t, t->url, d->url, EGRESS__REPORT_URL_MAX)) return NULL;
    if (!t->url_linked) {
      t->special_version->next = t->url;
      t->url->prev = t->special_version;
      t->url->next = NULL;
      t->data->child->prev = t->url;
      t->url_linked = true;
    }
  } else if (t->url_linked) {
    t->special_version->next = NULL;
    t->url->prev = NULL;
    t->data->child->prev = t->special_version;
    t->url_linked = false;
  }
  return t->root;
}

char *egress__event_build(const egress_decision_t *d, const char *source) {
  if (!d) return NULL;
  cJSON *root = event_tree(d, source);
  return root ? print_copy(root) : NULL;
}

const char *egress__event_print(const egress_decision_t *d, const char *source, size_t *len) {
  if (!d || !len) return NULL;
  cJSON *root = event_tree(d, source);
  return root ? print_tls(root, len) : NULL;
}

/* ------------------------------------------------------------------------ */
/* egressctl output                                                          */
/* ------------------------------------------------------------------------ */

char *egress__decision_json(const egress_decision_t *d) {
  if (!d) return NULL;
  cJSON *root = cJSON_CreateObject();
  if (!root) return NULL;
  const char *msg = d->message ? d->message : egress_reason_message(d->reason);
  cJSON *host;
  if (d->has_host || !d->destination) {
    host = json_str(d->has_host ? d->host.text : NULL);
  } else {
    char *cut = cut_copy(d->destination, dest_max(d));
    host = cut ? json_str_as(cut, false) : NULL;
    egress__free(cut);
  }
  if (!add(root, "host", host) ||
      !add(root, "port", json_int(d->port)) ||
      !add(root, "verdict", json_const(verdict_name(d->verdict))) ||
      !add(root, "outcome", json_const(egress_outcome_name(d->outcome))) ||
      !add(root, "reason", json_reason(d)) ||
      !add(root, "matchedRule", json_rule(d)) ||
      !add(root, "addresses", json_addresses(d)) ||
      !add(root, "message", json_str(msg)) ||
      !add(root, "mode", json_const(mode_name(d->mode))) ||
      !add(root, "wouldDeny", cJSON_CreateBool(d->outcome != EGRESS_OUTCOME_ALLOWED)))
    goto fail;
  if (d->curl_resolve && !add(root, "curlResolve", json_str(d->curl_resolve))) goto fail;
  if (d->url) {
    char *cut = cut_copy(d->url, EGRESS__REPORT_URL_MAX);
    cJSON *url = cut ? json_str_as(cut, false) : NULL;
    egress__free(cut);
    if (!add(root, "url", url)) goto fail;
  }
  return print_and_delete(root);

fail:
  cJSON_Delete(root);
  return NULL;
}
