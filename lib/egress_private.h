/*
 * Internal interfaces shared between the files of lib/.  Included first by
 * every file of the library and by the unit tests, never installed.
 *
 * Naming: functions and types shared across files are egress__*; anything
 * used by one file only is static there.
 */
#ifndef EGRESS_PRIVATE_H
#define EGRESS_PRIVATE_H

#define _GNU_SOURCE 1

#include "egress.h"

#include <netinet/in.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/*
 * Sizes of the public X-macro lists, for arrays indexed by their values.
 * names.c asserts at compile time that each list's values are exactly
 * 0 .. count-1, so an entry added to a list is counted and indexed without
 * another edit.
 */
#define EGRESS__COUNT_ONE_(...) +1
#define EGRESS__STATUS_COUNT    (0 EGRESS_STATUS_MAP(EGRESS__COUNT_ONE_))
#define EGRESS__OUTCOME_COUNT   (0 EGRESS_OUTCOME_MAP(EGRESS__COUNT_ONE_))
#define EGRESS__REASON_COUNT    (0 EGRESS_REASON_MAP(EGRESS__COUNT_ONE_))
#define EGRESS__LIST_COUNT      (0 EGRESS_LIST_MAP(EGRESS__COUNT_ONE_))
#define EGRESS__FIELD_COUNT     (0 EGRESS_FIELD_MAP(EGRESS__COUNT_ONE_))
#define EGRESS__COUNTER_COUNT   (0 EGRESS_COUNTER_MAP(EGRESS__COUNT_ONE_))

/* names.c: a list's document key ("egressAllowlist"), indexed by
 * egress_list_t; at most EGRESS__LIST_KEY_MAX - 1 characters. */
#define EGRESS__LIST_KEY_MAX 16
extern const char egress__list_keys[EGRESS__LIST_COUNT][EGRESS__LIST_KEY_MAX];

#define EGRESS__NAME_MAX  253 /* RFC 1035 name length, without trailing dot */
#define EGRESS__LABEL_MAX 63
#define EGRESS__IPSTR_MAX 46 /* INET6_ADDRSTRLEN */

/* ------------------------------------------------------------------------ */
/* alloc.c: every allocation of the library goes through these so that the  */
/* tests can fail the Nth one and prove each failure path fails closed.      */
/* ------------------------------------------------------------------------ */
void *egress__malloc(size_t size);
void *egress__calloc(size_t nmemb, size_t size);
void *egress__realloc(void *ptr, size_t size);
/* Zeroed memory aligned to @p alignment (a power of two), released with
 * egress__free. */
void *egress__aligned_calloc(size_t alignment, size_t size);
void egress__free(void *ptr);
char *egress__strndup(const char *s, size_t len);
char *egress__strdup(const char *s);
/* Test hook: make the @p nth allocation from now on fail (1 = the next one);
 * 0 disables injection.  Process-wide. */
void egress__alloc_fail_at(long nth);
/* Allocations attempted since the last egress__alloc_fail_at() call. */
long egress__alloc_count(void);

/* Formats into errbuf (may be NULL) and returns @p status; truncation is
 * harmless because callers size errbuf with EGRESS_ERRBUF_SIZE. */
egress_status_t egress__errf(char *errbuf, size_t errlen, egress_status_t status, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* alloc.c: strerror() for functions documented thread-safe (strerror may
 * share one buffer between threads).  Returns @p buf or a static string. */
const char *egress__strerror(int err, char *buf, size_t len);

/* names.c: one unsigned decimal number filling s[0..len): digits only (no
 * sign, no white space), at most @p max.  With @p leading_zeros false a
 * number of more than one digit must not start with '0'.  Problems are
 * reported in this order, so callers can name the first. */
typedef enum egress__dec {
  EGRESS__DEC_OK = 0,
  EGRESS__DEC_EMPTY,
  EGRESS__DEC_NOT_DIGITS,
  EGRESS__DEC_LEADING_ZERO,
  EGRESS__DEC_TOO_BIG
} egress__dec_t;
egress__dec_t egress__parse_decimal(const char *s, size_t len, bool leading_zeros, uint32_t max,
                                    uint32_t *out);

/* names.c: milliseconds of CLOCK_MONOTONIC, or of CLOCK_MONOTONIC_COARSE
 * when @p coarse (a few ms of error, a fraction of the cost: enough for
 * whole-second TTLs). */
double egress__mono_ms(bool coarse);

/* names.c: decimal digits of @p v at @p p, at least @p width of them (zero
 * padded); returns the end.  For strings built on the check path, where
 * snprintf costs more than everything around it. */
char *egress__put_uint(char *p, unsigned long long v, int width);

/* names.c: what events and messages report of text a caller gave.  A host
 * longer than any valid one (or a URL longer than EGRESS__REPORT_URL_MAX)
 * is reported as its first bytes and a marker naming its full length,
 * "…(truncated, 200000 bytes)": an audit line stays one reasonable line
 * whatever the caller passed, and still says what was refused. */
#define EGRESS__REPORT_HOST_MAX 253
#define EGRESS__REPORT_URL_MAX  4096
#define EGRESS__REPORT_MARK_MAX 48 /* bytes of the marker, at most */
/* How many leading bytes of s[0..len) a report keeps: all when len <= max,
 * else at most max, cut before a UTF-8 continuation byte (so a well-formed
 * text stays well-formed). */
size_t egress__report_keep(const char *s, size_t len, size_t max);
/* Writes the marker for a cut text of @p len bytes at @p p (no NUL);
 * returns the end. */
char *egress__report_mark(char *p, size_t len);

/* names.c: the library's one UTF-8 decoder, shared by host
 * canonicalization and the JSON writer so that both agree on what is
 * well-formed.  Returns the length of the well-formed sequence at s[0..len)
 * (len >= 1; Unicode Table 3-7: no overlong forms, no surrogates, nothing
 * above U+10FFFF), or 0 when it is ill-formed; *bad is then the length of
 * the maximal subpart that one U+FFFD replaces (Unicode 3.9, "U+FFFD
 * Substitution of Maximal Subparts"), at least 1. */
size_t egress__utf8_seq(const unsigned char *s, size_t len, size_t *bad);

/* ------------------------------------------------------------------------ */
/* ip.c: addresses.                                                          */
/* ------------------------------------------------------------------------ */
typedef struct egress__ip {
  uint8_t family;    /* 4 or 6 */
  uint8_t bytes[16]; /* IPv4 in bytes[0..3], rest zero */
} egress__ip_t;

typedef struct egress__prefix {
  egress__ip_t addr; /* host bits zero */
  uint8_t len;       /* 0..32 or 0..128 */
} egress__prefix_t;

/* Strict IPv4: canonical dotted quad only ("a.b.c.d", decimal, 0..255, no
 * leading zeros, no other characters).  @p len bytes, need not be
 * NUL-terminated. */
bool egress__ip4_parse(const char *s, size_t len, egress__ip_t *out);
/* IPv6 in any RFC 4291 text form, no brackets, no zone id. */
bool egress__ip6_parse(const char *s, size_t len, egress__ip_t *out);
/* Canonical text (RFC 5952 for IPv6) into buf (>= EGRESS__IPSTR_MAX). */
void egress__ip_format(const egress__ip_t *ip, char *buf, size_t buflen);
/* Whether @p ip lies in @p prefix (families must agree). */
bool egress__prefix_contains(const egress__prefix_t *prefix, const egress__ip_t *ip);
/* ::ffff:a.b.c.d becomes a.b.c.d (in place); returns whether it did. */
bool egress__ip_unmap(egress__ip_t *ip);
/* Room for either address family, and no more: decisions carry one per
 * address, and sockaddr_storage would be four times the size. */
typedef union egress__sockaddr {
  struct sockaddr sa;
  struct sockaddr_in sin;
  struct sockaddr_in6 sin6;
} egress__sockaddr_t;

/* Fill a sockaddr_in/sockaddr_in6 for ip:port; returns its length. */
socklen_t egress__ip_sockaddr(const egress__ip_t *ip, uint16_t port, egress__sockaddr_t *ss);

/* ------------------------------------------------------------------------ */
/* canon.c: host canonicalization (docs/check.md#canonical-hosts).          */
/* ------------------------------------------------------------------------ */
typedef enum egress__host_kind {
  EGRESS__HOST_NAME = 0,
  EGRESS__HOST_IPV4 = 4,
  EGRESS__HOST_IPV6 = 6
} egress__host_kind_t;

typedef struct egress__host {
  egress__host_kind_t kind;
  size_t len;                      /* strlen(text) */
  char text[EGRESS__NAME_MAX + 1]; /* canonical: lower-case A-label name,
                                          dotted quad, or RFC 5952 IPv6 */
  egress__ip_t ip;                 /* for IP kinds; IPv4-mapped IPv6 is
                                          reported as the IPv4 it carries */
} egress__host_t;

/* Canonicalize a host to check.  @p in has @p len bytes (embedded NUL is
 * invalid).  Accepts "[v6]".  Returns EGRESS_OK, EGRESS_EINVAL with *why set
 * to a static message naming the problem, or EGRESS_ENOMEM. */
egress_status_t egress__canon_host(const char *in, size_t len, egress__host_t *out, const char **why);
/* Canonicalize a host *name* (no IP literal, no brackets): as
 * egress__canon_host but an IP literal or numeric-looking name is invalid.
 * Used by the entry grammar for the name part of host rules. */
egress_status_t egress__canon_name(const char *in, size_t len, egress__host_t *out, const char **why);

/* ------------------------------------------------------------------------ */
/* special.c + special_table.c (generated): special-purpose addresses.      */
/* ------------------------------------------------------------------------ */
typedef struct egress__special_block {
  egress__prefix_t prefix;
  const char *name; /* registry name, e.g. "Private-Use" */
  const char *rfc;  /* e.g. "[RFC1918]" */
  bool global;      /* globally reachable per registry / rule */
  bool by_rule;     /* added by rule, not a registry row */
  bool synthetic;   /* part of "outside 2000::/3" coverage */
} egress__special_block_t;

extern const egress__special_block_t egress__special_blocks[];
extern const size_t egress__special_block_count;
extern const char egress__special_version[];

typedef struct egress__special_info {
  bool global;                          /* true: not special-purpose */
  const egress__special_block_t *block; /* most specific block containing
                                            the address, NULL when none */
  uint8_t open_len;                     /* a CIDR rule opens this address
                                            only if its prefix length is at
                                            least this (it then lies inside
                                            the special range) */
} egress__special_info_t;

/* Classify one address (IPv4-mapped must already be unmapped). */
void egress__special_classify(const egress__ip_t *ip, egress__special_info_t *info);
/* The same without the first-octet shortcut (tests compare the two). */
void egress__special_classify_slow(const egress__ip_t *ip, egress__special_info_t *info);
/* IPv4 addresses embedded in an IPv6 address: NAT64 (64:ff9b::/96,
 * 64:ff9b:1::/48 and @p pref64, RFC 6052 layouts), 6to4 (2002::/16), Teredo
 * (2001::/32: server and client).  Returns how many were written to out[]. */
size_t egress__embedded_ipv4(const egress__ip_t *ip6, const egress__prefix_t *pref64, size_t n_pref64,
                             egress__ip_t out[2]);

/* ------------------------------------------------------------------------ */
/* entry.c: the entry grammar (docs/policy.md#entries).                     */
/* ------------------------------------------------------------------------ */
typedef enum egress__rule_kind {
  EGRESS__RULE_EXACT = 0, /* api.example.com */
  EGRESS__RULE_WILD1 = 1, /* *.example.com: one label in front */
  EGRESS__RULE_WILDN = 2, /* **.example.com: one or more labels in front */
  EGRESS__RULE_ANY = 3,   /* *: any name, never an IP literal */
  EGRESS__RULE_REGEX = 4, /* re:PATTERN */
  EGRESS__RULE_CIDR = 5   /* IPv4 / IPv6 prefix */
} egress__rule_kind_t;

/* URL schemes a URL entry or a URL check names. */
typedef enum egress__scheme {
  EGRESS__SCHEME_NONE = 0, /* not a URL entry: any scheme */
  EGRESS__SCHEME_HTTP = 1,
  EGRESS__SCHEME_HTTPS = 2
} egress__scheme_t;

typedef struct egress__rule {
  egress__rule_kind_t kind;
  egress_list_t list;
  size_t index; /* position in its list */
  char *text;   /* entry exactly as written (owned) */
  char *name;   /* EXACT: the name; WILD1/WILDN: the suffix after
                              "*." / "**."; canonical (owned); else NULL */
  size_t name_len;
  void *regex;               /* REGEX: pcre2_code_8 * (owned) */
  egress__prefix_t cidr;     /* CIDR */
  uint16_t port_lo, port_hi; /* inclusive; 1..65535 means any port */
  char *path;                /* URL entries: path prefix without trailing '/',
                              NULL when none or "/" (owned) */
  egress__scheme_t scheme;   /* URL entries: the only scheme they allow in
                              URL checks; NONE for every other entry */
} egress__rule_t;

/* Parse one entry of @p list.  @p text has @p len bytes.  On error returns
 * EGRESS_EPOLICY with *why a static message, or EGRESS_ENOMEM; the rule is
 * then left cleared.  list and index are set by the caller. */
egress_status_t egress__entry_parse(const char *text, size_t len, egress_list_t list, egress__rule_t *rule,
                                    const char **why);
void egress__rule_clear(egress__rule_t *rule);
/* Does a regex rule match @p name (canonical)?  Bounded by a match limit;
 * a limit hit counts as no match for the allowlist and as a match for the
 * deny list (fail closed). */
bool egress__regex_match(const egress__rule_t *rule, const char *name, size_t len);

/* ------------------------------------------------------------------------ */
/* match.c / cidr.c: compiled matchers.                                      */
/* ------------------------------------------------------------------------ */
typedef struct egress__matcher egress__matcher_t;

typedef struct egress__match {
  const egress__rule_t *allowing; /* first rule matching host AND port */
  const egress__rule_t *any;      /* first rule matching the host at all */
  uint64_t name_hash;             /* egress__name_hash of the name, when
                                      egress__match_name computed it; else 0 */
} egress__match_t;

/* Hash of a canonical name, shared by the matchers and the DNS cache so a
 * check hashes its name once. */
uint64_t egress__name_hash(const char *name, size_t len);

egress_status_t egress__matcher_build(const egress__rule_t *rules, size_t n, egress__matcher_t **out);
void egress__matcher_free(egress__matcher_t *m);
/* Host-name rules (exact, wildcards, any, regex) against a canonical name. */
void egress__match_name(const egress__matcher_t *m, const char *name, size_t len, uint16_t port,
                        egress__match_t *res);
/* CIDR rules against an address; only rules with prefix length >= min_len
 * count (used to open special-purpose ranges only by naming them). */
void egress__match_ip(const egress__matcher_t *m, const egress__ip_t *ip, uint16_t port, uint8_t min_len,
                      egress__match_t *res);

/* The relations the hash tables answer, one name and one rule at a time,
 * for code that walks rules itself (URL checks, egressctl render and lint).
 * Names and suffixes are canonical.  @p n is in "*.suffix" when it is one
 * label and ".suffix"; in "**.suffix" when it is one or more labels and
 * ".suffix".  Neither takes the suffix itself (the apex). */
bool egress__name_in_wild1(const char *n, size_t len, const char *suffix, size_t sl);
bool egress__name_in_wildn(const char *n, size_t len, const char *suffix, size_t sl);
/* Whether host-name rule @p r (exact, wildcards, "*", regex) takes the name,
 * ports aside; false for CIDR rules. */
bool egress__rule_matches_name(const egress__rule_t *r, const char *name, size_t len);

/* ------------------------------------------------------------------------ */
/* policy.c                                                                  */
/* ------------------------------------------------------------------------ */
struct egress_policy {
  atomic_long refs;
  egress__rule_t *rules[2]; /* [EGRESS_LIST_ALLOW], [EGRESS_LIST_DENY] */
  size_t nrules[2];
  egress__matcher_t *matcher[2];
  char digest[65];
};

/* egress_policy_from_file() for lint: each invalid entry (and each entry
 * that is not a string) is passed to @p report as the message the loader
 * would fail with, and counted; the load then fails with EGRESS_EPOLICY
 * (errbuf: the count).  Errors of the document itself (not JSON, a list
 * missing) still end the load at once, with errs->count 0. */
typedef struct egress__entry_errors {
  void (*report)(void *user, const char *message);
  void *user;
  size_t count;
} egress__entry_errors_t;
egress_status_t egress__policy_from_file_all(const char *path, egress__entry_errors_t *errs,
                                             egress_policy_t **out, char *errbuf, size_t errlen);

/* ------------------------------------------------------------------------ */
/* vet.c: may this address be reached at all (README "The check").          */
/* ------------------------------------------------------------------------ */
typedef struct egress__vet {
  egress_reason_t reason;          /* NONE when the address passes */
  const egress__rule_t *rule;      /* the deny rule that forbids */
  const egress__rule_t *opener;    /* the allow rule that opened a
                                           special-purpose address */
  const egress__rule_t *elsewhere; /* a rule inside the special range of
                                           the forbidden address (or of the
                                           IPv4 it embeds) that opens it on
                                           other ports only */
  uint8_t open_len;                /* the address's own open_len: a CIDR
                                           rule shorter than this cannot stand
                                           for it */
  char detail[160];                /* what forbids it ("Private-Use",
                                           "embedded IPv4 10.0.0.1: ..."), or
                                           empty */
} egress__vet_t;

/* Vet @p ip for @p port against policy @p p: a deny-list CIDR rule forbids
 * it (EXPLICIT_DENY); a special-purpose address is forbidden
 * (SPECIAL_PURPOSE_ADDRESS) unless an allow CIDR rule inside its range
 * (prefix length >= its open_len) takes this port; an IPv6 address carrying
 * an IPv4 one (NAT64 through the well-known prefixes and @p pref64, 6to4,
 * Teredo) is vetted as that IPv4 address too.  Host-name rules play no part.
 * @p pref64 may be NULL when @p n_pref64 is 0.  Rule ports are uniform over a
 * port segment, so vetting at one port of it stands for all of it. */
void egress__vet_address(const egress_policy_t *p, const egress__prefix_t *pref64, size_t n_pref64,
                         const egress__ip_t *ip, uint16_t port, egress__vet_t *out);

/* ------------------------------------------------------------------------ */
/* options (options.c) and request (decision.c)                             */
/* ------------------------------------------------------------------------ */
#define EGRESS__MAX_PREF64 8

struct egress_options {
  egress_mode_t mode;
  egress_mixed_t mixed;
  char *dns_servers; /* "ip[:port],..." or NULL for system */
  char *hosts_file;  /* NULL: DNS only */
  char *resolv_conf; /* tests: c-ares ARES_OPT_RESOLVCONF path */
  uint32_t timeout_ms;
  uint32_t cache_max, cache_min_ttl, cache_max_ttl, cache_neg_ttl;
  egress__prefix_t pref64[EGRESS__MAX_PREF64];
  size_t n_pref64;
  char *event_source;
  egress_event_cb event_cb;
  void *event_cb_data;
  int event_fd;     /* -1: none */
  char *event_path; /* NULL: none */
  bool audit_required;
};

/* Tests: point c-ares at another resolv.conf (search list, ndots). */
egress_status_t egress__options_set_resolv_conf(egress_options_t *opts, const char *path);
/* options.c: the documented defaults (the whole struct is written); a deep
 * copy (EGRESS_ENOMEM leaves @p dst owning nothing); freeing what options
 * own, leaving the struct itself as garbage. */
void egress__options_defaults(egress_options_t *o);
egress_status_t egress__options_copy(const egress_options_t *src, egress_options_t *dst);
void egress__options_clear(egress_options_t *o);

struct egress_request {
  char *field[EGRESS__FIELD_COUNT]; /* indexed by egress_field_t */
  char *refusal;                    /* egress_request_refuse(): message */
  egress_reason_t refusal_reason;
};

/* ------------------------------------------------------------------------ */
/* decision.c                                                                */
/* ------------------------------------------------------------------------ */
typedef struct egress__addr_verdict {
  egress__ip_t ip;
  char text[EGRESS__IPSTR_MAX];
  egress_verdict_t verdict;
  egress_reason_t reason;
  int32_t ttl; /* -1 for literals */
  egress__sockaddr_t sa;
  socklen_t sa_len;
} egress__addr_verdict_t;

/* What a decision's message says, recorded by the check and written by
 * add_text (check.c) only when someone reads text: the hot path formats
 * nothing. */
typedef enum egress__msg {
  EGRESS__MSG_NONE, /* the reason's own message */
  EGRESS__MSG_CHECKER_NULL,
  EGRESS__MSG_REFUSED, /* the request's refusal, as given */
  EGRESS__MSG_INVALID_URL,
  EGRESS__MSG_INVALID_PORT,
  EGRESS__MSG_HOST_NULL,
  EGRESS__MSG_INVALID_HOST, /* detail_static: why, or NULL */
  EGRESS__MSG_DENY_ENTRY,
  EGRESS__MSG_EMPTY_ALLOWLIST,
  EGRESS__MSG_NO_ALLOW_ENTRY,
  EGRESS__MSG_OTHER_PORTS,
  EGRESS__MSG_OTHER_SCHEME,
  EGRESS__MSG_PATH_OUTSIDE,
  EGRESS__MSG_DNS_NOMEM,
  EGRESS__MSG_NO_SUCH_HOST,       /* detail_static: the resolver's, or NULL */
  EGRESS__MSG_DNS_FAILED,         /* likewise */
  EGRESS__MSG_ALIAS_DENIED,       /* detail: the alias */
  EGRESS__MSG_RESOLVED_FORBIDDEN, /* bad_addr, bad_reason, detail */
  EGRESS__MSG_LITERAL_DENIED,     /* detail */
  EGRESS__MSG_SPECIAL_PURPOSE,    /* detail */
  EGRESS__MSG_LITERAL_OUTSIDE,
  EGRESS__MSG_ALLOWED,
  EGRESS__MSG_ALLOWED_FILTERED,
  EGRESS__MSG_AUDIT,
  EGRESS__MSG_CANCELLED
} egress__msg_t;

/* What a check decides.  Zeroed whole before every check; no text. */
typedef struct egress__verdict_part {
  egress_verdict_t verdict;
  egress_outcome_t outcome; /* what enforce mode would do */
  egress_reason_t reason;
  egress_mode_t mode;
  bool would_deny; /* monitor mode: outcome is not allowed */
  bool has_host;
  bool has_rule;
  bool stamped; /* event_id and time_rfc3339 hold this check's */
  int32_t port;
  egress_list_t rule_list;
  size_t rule_index;
  const egress__rule_t *rule;    /* the rule; valid only during the check,
                                       while the check holds the policy */
  egress__addr_verdict_t *addrs; /* owned, unless it is inline_addrs */
  size_t naddrs;
  double dns_ms, latency_ms;
  const char *special_version; /* egress__special_version */
  egress__msg_t msg;
  const char *detail_static;  /* a static string the message names */
  size_t bad_addr;            /* RESOLVED_FORBIDDEN: which address */
  egress_reason_t bad_reason; /* RESOLVED_FORBIDDEN: why */
} egress__verdict_part_t;

/* What is said about it, made after the check by add_text (check.c).
 * The strings point into `owned`, at static text, or, for an egress_check
 * that keeps no decision, at the caller's strings and the policy's rule
 * text for the length of the check.  Zeroed whole before every check. */
typedef struct egress__text_part {
  const char *message;     /* NULL: the reason's message */
  const char *destination; /* host exactly as given (NULL if NULL given) */
  const char *rule_text;
  const char *field[EGRESS__FIELD_COUNT]; /* request context */
  const char *curl_resolve;               /* allow + name only */
  char *owned;                            /* one allocation holding the copies */
  char *url;                              /* egress_check_url: the URL as given (owned) */
  char *event_json;                       /* owned; built once per check */
} egress__text_part_t;

struct egress_decision {
  egress__verdict_part_t v;
  egress__text_part_t t;
  /* Buffers, never zeroed: each is written before it is read. */
  char policy_digest[65];                 /* set by every check ("" when none) */
  char time_rfc3339[32];                  /* event time, set with the event */
  char event_id[37];                      /* UUID v4, set with the event */
  char detail[256];                       /* what the message names, per v.msg */
  egress__host_t host;                    /* canonical, when v.has_host */
  egress__addr_verdict_t inline_addrs[4]; /* small answers: no allocation */
};

/* Ready a decision for a check: nothing of a previous one survives. */
static inline void egress__decision_reset(egress_decision_t *d) {
  d->v = (egress__verdict_part_t){ 0 };
  d->t = (egress__text_part_t){ 0 };
}

/* Free what a decision owns, leaving the struct itself as garbage. */
void egress__decision_release(egress_decision_t *d);
/* A copy of @p req (NULL for NULL) for a check that outlives its caller's
 * call. */
egress_status_t egress__request_copy(const egress_request_t *req, egress_request_t **out);

/* ------------------------------------------------------------------------ */
/* event.c: CloudEvents JSON for a decision (built with cJSON).             */
/* sink.c:  where events go.                                                 */
/* ------------------------------------------------------------------------ */
#define EGRESS__DEFAULT_SOURCE "/enforcement/libegress"
#define EGRESS__EVENT_TYPE     "io.portarium.egress.attempt"

/* Fill d->event_id (UUID v4 from getrandom) and d->time_rfc3339 (UTC, ms). */
egress_status_t egress__event_stamp(egress_decision_t *d);
/* Build the event JSON text of @p d (compact, one line, no newline).
 * Returns a string the caller frees with egress__free, NULL on ENOMEM. */
char *egress__event_build(const egress_decision_t *d, const char *source);
/* The same, printed into a per-thread buffer that stays valid until the
 * thread's next event: no allocation for the text.  NULL when it does not
 * fit (the caller then uses egress__event_build) or on ENOMEM. */
const char *egress__event_print(const egress_decision_t *d, const char *source, size_t *len);
/* egressctl's per-decision output object (see egress_decision_to_json). */
char *egress__decision_json(const egress_decision_t *d);

typedef struct egress__sink egress__sink_t;
/* Build the sink the options ask for (callback, fd, path, or none). */
egress_status_t egress__sink_new(const egress_options_t *opts, egress__sink_t **out, char *errbuf,
                                 size_t errlen);
void egress__sink_free(egress__sink_t *sink);
/* Deliver one event: returns 0 when delivered (or when there is no sink),
 * -1 when delivery failed.  Safe from many threads at once; a line is
 * written with one write() so concurrent writers never interleave. */
int egress__sink_deliver(egress__sink_t *sink, const char *json, size_t len, const egress_decision_t *d);
bool egress__sink_active(const egress__sink_t *sink);

#endif /* EGRESS_PRIVATE_H */
