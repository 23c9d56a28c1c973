/*
 * Decision events and egressctl's per-decision output (docs/events.md).
 *
 * Both have one fixed shape, so they are written straight out with the
 * library's JSON writer (jsonw.h) rather than built as a cJSON tree and
 * printed: the tree cost dozens of allocations and most of the time of a
 * check with a sink.  The writer escapes every string and replaces
 * ill-formed UTF-8 with U+FFFD.  The destination of an invalid host is
 * reported as given, so it can hold anything a hostile caller chose, and
 * one stray byte would make the whole audit line invalid JSON for a strict
 * reader.
 *
 * Field choice: the event's "data" holds exactly the fields docs/events.md
 * lists, "url" only when the check was made with egress_check_url(): the
 * path is part of what was decided (URL path prefixes), so an audit record
 * without it could not be replayed.  The member is absent for host:port
 * checks, so consumers that know only the other fields are unaffected.
 */
#include "egress_private.h"
#include "jsonw.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

/* ------------------------------------------------------------------------ */
/* Values                                                                    */
/* ------------------------------------------------------------------------ */

/* A text the library made that needs no escape: a reason, outcome or mode
 * name, an event id or time, a digest in hex. */
static void token(egress__jsonw_t *w, const char *s) {
  EGRESS__JSONW_LIT(w, "\"");
  egress__jsonw_raw(w, s, strlen(s));
  EGRESS__JSONW_LIT(w, "\"");
}

static const char *verdict_name(egress_verdict_t v) { return v == EGRESS_VERDICT_ALLOW ? "allow" : "deny"; }

static const char *mode_name(egress_mode_t m) { return m == EGRESS_MODE_MONITOR ? "monitor" : "enforce"; }

/* Milliseconds rounded to microseconds: three decimals say all a timing can
 * mean, and keep a %g printer from writing 0.12300000000000001.  Non-finite
 * or negative timings (a clock step) become 0 rather than a JSON null that
 * would change the field's type.  Written as fixed point, in the shortest
 * form ("1.5", "2"), as %g would give. */
#define NUMBUF_MAX 32

static void write_ms(egress__jsonw_t *w, double ms) {
  char buf[NUMBUF_MAX];
  if (!isfinite(ms) || ms < 0) ms = 0;
  if (ms >= 1e12) {
    int n = snprintf(buf, sizeof buf, "%1.15g", ms);
    egress__jsonw_raw(w, buf, (size_t)n);
    return;
  }
  long long micros = (long long)(ms * 1000.0 + 0.5);
  char *e = egress__put_uint(buf, (unsigned long long)(micros / 1000), 1);
  *e++ = '.';
  e = egress__put_uint(e, (unsigned long long)(micros % 1000), 3);
  while (e[-1] == '0') e--;
  if (e[-1] == '.') e--;
  egress__jsonw_raw(w, buf, (size_t)(e - buf));
}

/* The reason of a decision as reported: null only for a clean allow, so a
 * malformed deny still says something. */
static void write_reason(egress__jsonw_t *w, const egress_decision_t *d) {
  if (d->v.outcome == EGRESS_OUTCOME_ALLOWED && d->v.reason == EGRESS_REASON_NONE)
    egress__jsonw_null(w);
  else
    token(w, egress_reason_name(d->v.reason));
}

static void write_rule(egress__jsonw_t *w, const egress_decision_t *d) {
  if (!d->v.has_rule) {
    egress__jsonw_null(w);
    return;
  }
  EGRESS__JSONW_LIT(w, "{\"index\":");
  egress__jsonw_uint(w, (unsigned long long)d->v.rule_index);
  if (d->v.rule_list == EGRESS_LIST_DENY)
    EGRESS__JSONW_LIT(w, ",\"list\":\"deny\",\"text\":");
  else
    EGRESS__JSONW_LIT(w, ",\"list\":\"allow\",\"text\":");
  egress__jsonw_string(w, d->t.rule_text);
  EGRESS__JSONW_LIT(w, "}");
}

static void write_addresses(egress__jsonw_t *w, const egress_decision_t *d) {
  EGRESS__JSONW_LIT(w, "[");
  for (size_t i = 0; d->v.addrs && i < d->v.naddrs; i++) {
    const egress__addr_verdict_t *a = &d->v.addrs[i];
    if (i) EGRESS__JSONW_LIT(w, ",");
    EGRESS__JSONW_LIT(w, "{\"address\":\"");
    /* a->text is a fixed array filled by our formatter; bound it in case it
     * was ever left unterminated. */
    egress__jsonw_escape(w, a->text, strnlen(a->text, sizeof a->text - 1));
    EGRESS__JSONW_LIT(w, "\",\"verdict\":");
    token(w, verdict_name(a->verdict));
    EGRESS__JSONW_LIT(w, ",\"reason\":");
    if (a->reason == EGRESS_REASON_NONE)
      egress__jsonw_null(w);
    else
      token(w, egress_reason_name(a->reason));
    EGRESS__JSONW_LIT(w, ",\"ttl\":");
    if (a->ttl < 0)
      egress__jsonw_null(w);
    else
      egress__jsonw_int(w, a->ttl);
    EGRESS__JSONW_LIT(w, "}");
  }
  EGRESS__JSONW_LIT(w, "]");
}

/* A URL that could not be parsed has no host or port to name: the
 * destination is the URL exactly as given. */
static bool dest_is_url(const egress_decision_t *d) {
  return d->t.url && d->v.port == 0 && d->t.destination && !strcmp(d->t.destination, d->t.url);
}

/* The most of the destination that an event or a decision line reports.  A
 * host that canonicalized is reported exactly as given (canonicalization
 * bounds its length); one that did not may be anything a caller passed. */
static size_t dest_max(const egress_decision_t *d) {
  if (d->v.has_host) return SIZE_MAX;
  return dest_is_url(d) ? EGRESS__REPORT_URL_MAX : EGRESS__REPORT_HOST_MAX;
}

/* The string body of s[0..len) cut as reported at @p keep bytes
 * (egress__report_keep) and, when cut, the marker naming its length.  The
 * pieces are escaped apart: the marker starts with a UTF-8 lead byte, so
 * the repair of a sequence left incomplete by the cut is the same as in
 * the whole text. */
static void write_cut_body(egress__jsonw_t *w, const char *s, size_t len, size_t keep) {
  egress__jsonw_escape(w, s, keep);
  if (keep < len) {
    char mark[EGRESS__REPORT_MARK_MAX];
    egress__jsonw_raw(w, mark, (size_t)(egress__report_mark(mark, len) - mark));
  }
}

/* @p s (may be NULL: null) cut at @p max as reported, quoted. */
static void write_cut(egress__jsonw_t *w, const char *s, size_t max) {
  if (!s) {
    egress__jsonw_null(w);
    return;
  }
  size_t len = strlen(s);
  EGRESS__JSONW_LIT(w, "\"");
  write_cut_body(w, s, len, egress__report_keep(s, len, max));
  EGRESS__JSONW_LIT(w, "\"");
}

/* "host:port" with the destination as given (an invalid one cut when
 * longer than any host can be); an IPv6 literal given without brackets is
 * bracketed so the port stays unambiguous.  Only a host that canonicalized
 * is known to be IPv6: an invalid destination is left as given. */
static void write_host_port(egress__jsonw_t *w, const egress_decision_t *d) {
  const char *dest = d->t.destination ? d->t.destination : "";
  size_t dl = strlen(dest);
  size_t keep = egress__report_keep(dest, dl, dest_max(d));
  EGRESS__JSONW_LIT(w, "\"");
  if (dest_is_url(d)) {
    write_cut_body(w, dest, dl, keep);
  } else {
    bool bracket = d->v.has_host && dest[0] != '[' && memchr(dest, ':', keep) != NULL;
    if (bracket) EGRESS__JSONW_LIT(w, "[");
    write_cut_body(w, dest, dl, keep);
    if (bracket) EGRESS__JSONW_LIT(w, "]");
    EGRESS__JSONW_LIT(w, ":");
    egress__jsonw_int(w, d->v.port);
  }
  EGRESS__JSONW_LIT(w, "\"");
}

/* ------------------------------------------------------------------------ */
/* Stamp                                                                     */
/* ------------------------------------------------------------------------ */

/*
 * Event ids come from the kernel's random source, fetched in blocks per
 * thread rather than one getrandom(2) per event: 256 ids a block, as a
 * system call costs more than the rest of a cached check.  A forked child
 * starts with an empty block, so parent and child never share ids.
 */
static _Thread_local unsigned char random_block[4096];
static _Thread_local size_t random_left;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void random_forget(void) { random_left = 0; }
static void atfork_register(void) { pthread_atfork(NULL, NULL, random_forget); }

/* pthread_once is a call into libc on every event; a thread asks it once. */
static _Thread_local bool atfork_seen;

static bool random_bytes(unsigned char *out, size_t len) {
  if (!atfork_seen) {
    pthread_once(&atfork_once, atfork_register);
    atfork_seen = true;
  }
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
  memset(src, 0, len); /* an id is never handed out twice */
  random_left -= len;
  return true;
}

/* The time up to its seconds, for the second it was last made in: gmtime_r
 * and its six numbers cost more than the rest of a stamp, and a thread
 * stamps many events a second. */
static _Thread_local bool stamp_valid;
static _Thread_local time_t stamp_second;
static _Thread_local char stamp_text[19];

/* A UUID v4 into id[37] and the time, RFC 3339 UTC with milliseconds, into
 * time[32]; both empty on failure. */
static egress_status_t stamp(char *id, char *time_text) {
  static const char hex[] = "0123456789abcdef";
  unsigned char r[16];
  struct timespec ts;
  struct tm tm;

  id[0] = '\0';
  time_text[0] = '\0';
  /* getrandom(2) never needs a file descriptor (works in chroots and after
   * fd exhaustion) and blocks only until the kernel pool is first seeded. */
  if (!random_bytes(r, sizeof r)) return EGRESS_EINTERNAL;
  r[6] = (unsigned char)((r[6] & 0x0F) | 0x40); /* version 4 (RFC 9562 §5.4) */
  r[8] = (unsigned char)((r[8] & 0x3F) | 0x80); /* variant 10 */
  char *p = id;
  for (size_t i = 0; i < sizeof r; i++) {
    if (i == 4 || i == 6 || i == 8 || i == 10) *p++ = '-';
    *p++ = hex[r[i] >> 4];
    *p++ = hex[r[i] & 0x0F];
  }
  *p = '\0';

  if (clock_gettime(CLOCK_REALTIME, &ts) != 0) goto fail;
  if (!stamp_valid || ts.tv_sec != stamp_second) {
    if (!gmtime_r(&ts.tv_sec, &tm)) goto fail;
    if (tm.tm_year + 1900 < 0 || tm.tm_year + 1900 > 9999) goto fail;
    char *s = stamp_text; /* YYYY-MM-DDTHH:MM:SS */
    s = egress__put_uint(s, (unsigned)(tm.tm_year + 1900), 4);
    *s++ = '-';
    s = egress__put_uint(s, (unsigned)(tm.tm_mon + 1), 2);
    *s++ = '-';
    s = egress__put_uint(s, (unsigned)tm.tm_mday, 2);
    *s++ = 'T';
    s = egress__put_uint(s, (unsigned)tm.tm_hour, 2);
    *s++ = ':';
    s = egress__put_uint(s, (unsigned)tm.tm_min, 2);
    *s++ = ':';
    egress__put_uint(s, (unsigned)tm.tm_sec, 2);
    stamp_second = ts.tv_sec;
    stamp_valid = true;
  }
  char *t = time_text; /* YYYY-MM-DDTHH:MM:SS.mmmZ, 24 characters */
  memcpy(t, stamp_text, sizeof stamp_text);
  t += sizeof stamp_text;
  *t++ = '.';
  t = egress__put_uint(t, (unsigned long long)(ts.tv_nsec / 1000000), 3);
  *t++ = 'Z';
  *t = '\0';
  return EGRESS_OK;

fail:
  id[0] = '\0';
  time_text[0] = '\0';
  return EGRESS_EINTERNAL;
}

egress_status_t egress__event_stamp(egress_decision_t *d) {
  if (!d) return EGRESS_EINVAL;
  egress_status_t st = stamp(d->event_id, d->time_rfc3339);
  d->v.stamped = st == EGRESS_OK;
  return st;
}

egress_status_t egress_event_stamp(char id[37], char time_text[32]) {
  if (!id || !time_text) return EGRESS_EINVAL;
  return stamp(id, time_text);
}

/* ------------------------------------------------------------------------ */
/* The CloudEvent                                                            */
/* ------------------------------------------------------------------------ */

/* The event of @p d, in docs/events.md's order. */
static void write_event(egress__jsonw_t *w, const egress_decision_t *d, const char *source) {
  EGRESS__JSONW_LIT(w, "{\"specversion\":\"1.0\",\"type\":\"" EGRESS__EVENT_TYPE "\",\"source\":");
  egress__jsonw_string(w, source ? source : EGRESS__DEFAULT_SOURCE);
  EGRESS__JSONW_LIT(w, ",\"id\":");
  token(w, d->event_id);
  EGRESS__JSONW_LIT(w, ",\"time\":");
  token(w, d->time_rfc3339);
  EGRESS__JSONW_LIT(w, ",\"datacontenttype\":\"application/json\",\"subject\":");
  /* The subject is also data.destination: written once, copied once. */
  size_t subject = w->len;
  write_host_port(w, d);
  size_t subject_len = w->len - subject;

  EGRESS__JSONW_LIT(w, ",\"data\":{\"workspaceId\":");
  egress__jsonw_string(w, d->t.field[EGRESS_FIELD_WORKSPACE_ID]);
  EGRESS__JSONW_LIT(w, ",\"agentId\":");
  egress__jsonw_string(w, d->t.field[EGRESS_FIELD_AGENT_ID]);
  EGRESS__JSONW_LIT(w, ",\"machineId\":");
  egress__jsonw_string(w, d->t.field[EGRESS_FIELD_MACHINE_ID]);
  EGRESS__JSONW_LIT(w, ",\"runId\":");
  egress__jsonw_string(w, d->t.field[EGRESS_FIELD_RUN_ID]);
  EGRESS__JSONW_LIT(w, ",\"correlationId\":");
  egress__jsonw_string(w, d->t.field[EGRESS_FIELD_CORRELATION_ID]);
  EGRESS__JSONW_LIT(w, ",\"method\":");
  egress__jsonw_string(w, d->t.field[EGRESS_FIELD_METHOD]);
  EGRESS__JSONW_LIT(w, ",\"destination\":");
  if (egress__jsonw_reserve(w, subject_len)) {
    memcpy(w->buf + w->len, w->buf + subject, subject_len);
    w->len += subject_len;
  }
  EGRESS__JSONW_LIT(w, ",\"host\":");
  egress__jsonw_string(w, d->v.has_host ? d->host.text : NULL);
  EGRESS__JSONW_LIT(w, ",\"port\":");
  egress__jsonw_int(w, d->v.port);
  EGRESS__JSONW_LIT(w, ",\"outcome\":");
  token(w, egress_outcome_name(d->v.outcome));
  EGRESS__JSONW_LIT(w, ",\"denyReason\":");
  write_reason(w, d);
  EGRESS__JSONW_LIT(w, ",\"enforcementMode\":");
  token(w, mode_name(d->v.mode));
  EGRESS__JSONW_LIT(w, ",\"wouldDeny\":");
  egress__jsonw_bool(w, d->v.outcome != EGRESS_OUTCOME_ALLOWED);
  EGRESS__JSONW_LIT(w, ",\"matchedRule\":");
  write_rule(w, d);
  EGRESS__JSONW_LIT(w, ",\"addresses\":");
  write_addresses(w, d);
  EGRESS__JSONW_LIT(w, ",\"dnsMs\":");
  write_ms(w, d->v.dns_ms);
  EGRESS__JSONW_LIT(w, ",\"latencyMs\":");
  write_ms(w, d->v.latency_ms);
  EGRESS__JSONW_LIT(w, ",\"policyDigest\":");
  if (d->policy_digest[0])
    token(w, d->policy_digest);
  else
    egress__jsonw_null(w);
  EGRESS__JSONW_LIT(w, ",\"specialRangesVersion\":");
  egress__jsonw_string(w, d->v.special_version ? d->v.special_version : egress__special_version);
  if (d->t.url) {
    EGRESS__JSONW_LIT(w, ",\"url\":");
    write_cut(w, d->t.url, EGRESS__REPORT_URL_MAX);
  }
  EGRESS__JSONW_LIT(w, "}}");
}

/* Room for a typical event in one allocation (they run 600 to 1000 bytes). */
#define EVENT_CAP_GUESS 1024

char *egress__event_build(const egress_decision_t *d, const char *source) {
  if (!d) return NULL;
  egress__jsonw_t w;
  egress__jsonw_heap(&w, EVENT_CAP_GUESS);
  write_event(&w, d, source);
  return egress__jsonw_finish(&w, NULL);
}

/* Events of the sink path are printed here: no allocation for the text.
 * Nothing runs user code between printing and writing, so a callback that
 * checks again on the same thread cannot find it in use (the checker gives
 * callbacks an egress__event_build() copy). */
static _Thread_local char print_buf[8192];

const char *egress__event_print(const egress_decision_t *d, const char *source, size_t *len) {
  if (!d || !len) return NULL;
  egress__jsonw_t w;
  egress__jsonw_fixed(&w, print_buf, sizeof print_buf);
  write_event(&w, d, source);
  return egress__jsonw_finish(&w, len);
}

/* ------------------------------------------------------------------------ */
/* egressctl output                                                          */
/* ------------------------------------------------------------------------ */

char *egress__decision_json(const egress_decision_t *d) {
  if (!d) return NULL;
  egress__jsonw_t w;
  egress__jsonw_heap(&w, EVENT_CAP_GUESS);
  EGRESS__JSONW_LIT(&w, "{\"host\":");
  if (d->v.has_host || !d->t.destination)
    egress__jsonw_string(&w, d->v.has_host ? d->host.text : NULL);
  else
    write_cut(&w, d->t.destination, dest_max(d));
  EGRESS__JSONW_LIT(&w, ",\"port\":");
  egress__jsonw_int(&w, d->v.port);
  EGRESS__JSONW_LIT(&w, ",\"verdict\":");
  token(&w, verdict_name(d->v.verdict));
  EGRESS__JSONW_LIT(&w, ",\"outcome\":");
  token(&w, egress_outcome_name(d->v.outcome));
  EGRESS__JSONW_LIT(&w, ",\"reason\":");
  write_reason(&w, d);
  EGRESS__JSONW_LIT(&w, ",\"matchedRule\":");
  write_rule(&w, d);
  EGRESS__JSONW_LIT(&w, ",\"addresses\":");
  write_addresses(&w, d);
  EGRESS__JSONW_LIT(&w, ",\"message\":");
  egress__jsonw_string(&w, d->t.message ? d->t.message : egress_reason_message(d->v.reason));
  EGRESS__JSONW_LIT(&w, ",\"mode\":");
  token(&w, mode_name(d->v.mode));
  EGRESS__JSONW_LIT(&w, ",\"wouldDeny\":");
  egress__jsonw_bool(&w, d->v.outcome != EGRESS_OUTCOME_ALLOWED);
  if (d->t.curl_resolve) {
    EGRESS__JSONW_LIT(&w, ",\"curlResolve\":");
    egress__jsonw_string(&w, d->t.curl_resolve);
  }
  if (d->t.url) {
    EGRESS__JSONW_LIT(&w, ",\"url\":");
    write_cut(&w, d->t.url, EGRESS__REPORT_URL_MAX);
  }
  EGRESS__JSONW_LIT(&w, "}");
  return egress__jsonw_finish(&w, NULL);
}
