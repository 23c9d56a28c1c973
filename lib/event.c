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

/* A cJSON string holding @p s (NUL-terminated) with ill-formed UTF-8
 * replaced; a JSON null when @p s is NULL.  NULL on allocation failure. */
static cJSON *json_str_as(const char *s, bool borrow) {
  if (!s) return cJSON_CreateNull();

  const unsigned char *u = (const unsigned char *)s;
  size_t len = strlen(s), i = 0, bad;
  while (i < len) {
    size_t n = utf8_seq(u + i, len - i, &bad);
    if (!n) break;
    i += n;
  }
  if (i == len) return borrow ? cJSON_CreateStringReference(s) : cJSON_CreateString(s);

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
 * would change the field's type. */
static cJSON *json_ms(double ms) {
  if (!isfinite(ms) || ms < 0) ms = 0;
  if (ms >= 1e12) return cJSON_CreateNumber(ms);
  /* Printed here as fixed point: cJSON prints doubles with "%1.15g" and
   * reads them back with sscanf, which dominates the cost of an event. */
  long long micros = (long long)(ms * 1000.0 + 0.5);
  char buf[32];
  char *e = egress__put_uint(buf, (unsigned long long)(micros / 1000), 1);
  *e++ = '.';
  e = egress__put_uint(e, (unsigned long long)(micros % 1000), 3);
  *e = '\0';
  int n = (int)(e - buf);
  /* "1.500" -> "1.5", "2.000" -> "2": the shortest form, as %g would give. */
  while (n > 0 && buf[n - 1] == '0') buf[--n] = '\0';
  if (n > 0 && buf[n - 1] == '.') buf[--n] = '\0';
  return cJSON_CreateRaw(buf);
}

/* Integers as raw JSON numbers, for the same reason. */
static cJSON *json_int(long long v) {
  char buf[24];
  char *p = buf;
  if (v < 0) *p++ = '-';
  p = egress__put_uint(p, v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v, 1);
  *p = '\0';
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

/* "host:port" with the destination as given; an IPv6 literal given without
 * brackets is bracketed so the port stays unambiguous.  Only a host that
 * canonicalized is known to be IPv6: an invalid destination is left exactly
 * as given.  Caller frees with egress__free(). */
static char *host_port(const egress_decision_t *d) {
  const char *dest = d->destination ? d->destination : "";
  /* A URL that could not be parsed has no host or port to name: the
   * destination is the URL exactly as given. */
  if (d->url && d->port == 0 && d->destination && !strcmp(d->destination, d->url))
    return egress__strdup(dest);
  size_t dl = strlen(dest);
  bool bracket = d->has_host && dest[0] != '[' && memchr(dest, ':', dl) != NULL;
  if (dl > SIZE_MAX - 32) return NULL;
  size_t cap = dl + 32;
  char *buf = egress__malloc(cap);
  if (!buf) return NULL;
  char *p = buf;
  if (bracket) *p++ = '[';
  memcpy(p, dest, dl);
  p += dl;
  if (bracket) *p++ = ']';
  *p++ = ':';
  if (d->port < 0) *p++ = '-';
  p = egress__put_uint(p, (unsigned long long)(d->port < 0 ? -(long long)d->port : d->port), 1);
  *p = '\0';
  return buf;
}

static cJSON *json_host_port(const egress_decision_t *d) {
  char *hp = host_port(d);
  if (!hp) return NULL;
  cJSON *item = json_str_as(hp, false);
  egress__free(hp);
  return item;
}

/* Prints @p root compactly into an egress__malloc() buffer and deletes it. */
/* Most events fit this per-thread buffer: cJSON prints straight into it,
 * sparing its growing buffer (and the large-block malloc that goes with it). */
static _Thread_local char print_buf[8192];

/* Print into print_buf; NULL when the tree does not fit (or on error). */
static const char *print_tls(cJSON *root, size_t *len) {
  if (!cJSON_PrintPreallocated(root, print_buf, (int)sizeof print_buf, false)) return NULL;
  *len = strlen(print_buf);
  return print_buf;
}

static char *print_and_delete(cJSON *root) {
  char *out = NULL;
  size_t len = 0;
  const char *tls = print_tls(root, &len);
  if (tls) {
    cJSON_Delete(root);
    return egress__strndup(tls, len);
  }
  char *text = cJSON_PrintUnformatted(root);
  cJSON_Delete(root);
  if (!text) return NULL;
  out = egress__strdup(text);
  cJSON_free(text);
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

static cJSON *event_tree(const egress_decision_t *d, const char *source) {
  cJSON *root = cJSON_CreateObject();
  if (!root) return NULL;
  cJSON *data = cJSON_CreateObject();
  if (!data) goto fail;
  if (!add(root, "specversion", json_const("1.0")) ||
      !add(root, "type", json_const(EGRESS__EVENT_TYPE)) ||
      !add(root, "source", json_str(source ? source : EGRESS__DEFAULT_SOURCE)) ||
      !add(root, "id", json_str(d->event_id)) ||
      !add(root, "time", json_str(d->time_rfc3339)) ||
      !add(root, "datacontenttype", json_const("application/json")) ||
      !add(root, "subject", json_host_port(d))) {
    cJSON_Delete(data);
    goto fail;
  }
  /* From here on root owns data (add() releases it if attaching fails). */
  if (!add(root, "data", data)) goto fail;

  const egress_outcome_t oc = d->outcome;
  if (!add(data, "workspaceId", json_str(d->field[EGRESS_FIELD_WORKSPACE_ID])) ||
      !add(data, "agentId", json_str(d->field[EGRESS_FIELD_AGENT_ID])) ||
      !add(data, "machineId", json_str(d->field[EGRESS_FIELD_MACHINE_ID])) ||
      !add(data, "runId", json_str(d->field[EGRESS_FIELD_RUN_ID])) ||
      !add(data, "correlationId", json_str(d->field[EGRESS_FIELD_CORRELATION_ID])) ||
      !add(data, "method", json_str(d->field[EGRESS_FIELD_METHOD])) ||
      !add(data, "destination", json_host_port(d)) ||
      !add(data, "host", d->has_host ? json_str(d->host.text) : cJSON_CreateNull()) ||
      !add(data, "port", json_int(d->port)) ||
      !add(data, "outcome", json_const(egress_outcome_name(oc))) ||
      !add(data, "denyReason", json_reason(d)) ||
      !add(data, "enforcementMode", json_const(mode_name(d->mode))) ||
      !add(data, "wouldDeny", cJSON_CreateBool(oc != EGRESS_OUTCOME_ALLOWED)) ||
      !add(data, "matchedRule", json_rule(d)) ||
      !add(data, "addresses", json_addresses(d)) ||
      !add(data, "dnsMs", json_ms(d->dns_ms)) ||
      !add(data, "latencyMs", json_ms(d->latency_ms)) ||
      !add(data, "policyDigest",
           json_str(d->policy_digest[0] ? d->policy_digest : NULL)) ||
      !add(data, "specialRangesVersion",
           json_str(d->special_version ? d->special_version : egress__special_version)))
    goto fail;
  if (d->url && !add(data, "url", json_str(d->url))) goto fail;
  return root;

fail:
  cJSON_Delete(root);
  return NULL;
}

char *egress__event_build(const egress_decision_t *d, const char *source) {
  if (!d) return NULL;
  cJSON *root = event_tree(d, source);
  return root ? print_and_delete(root) : NULL;
}

const char *egress__event_print(const egress_decision_t *d, const char *source, size_t *len) {
  if (!d || !len) return NULL;
  cJSON *root = event_tree(d, source);
  if (!root) return NULL;
  const char *text = print_tls(root, len);
  cJSON_Delete(root);
  return text;
}

/* ------------------------------------------------------------------------ */
/* egressctl output                                                          */
/* ------------------------------------------------------------------------ */

char *egress__decision_json(const egress_decision_t *d) {
  if (!d) return NULL;
  cJSON *root = cJSON_CreateObject();
  if (!root) return NULL;
  const char *host = d->has_host ? d->host.text : d->destination;
  const char *msg = d->message ? d->message : egress_reason_message(d->reason);
  if (!add(root, "host", json_str(host)) ||
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
  if (d->url && !add(root, "url", json_str(d->url))) goto fail;
  return print_and_delete(root);

fail:
  cJSON_Delete(root);
  return NULL;
}
