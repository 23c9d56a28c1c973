/*
 * The check: one host (or URL host) and port against the policy in force,
 * from canonicalization through the deny list, the allow list, DNS and the
 * vetting of every address, to the verdict, the counters and the event
 * (README "The check").  Kept apart from the checker's lifecycle so that
 * the hot path reads as one piece.
 */
#include "checker.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static double mono_ms(void) { return egress__mono_ms(false); }

/* Set the result and what its message will say (add_text writes it). */
static void decide(egress_decision_t *d, egress_outcome_t outcome, egress_reason_t reason,
                   const egress__rule_t *rule, egress__msg_t msg) {
  d->v.outcome = outcome;
  d->v.reason = reason;
  d->v.msg = msg;
  if (rule) {
    d->v.has_rule = true;
    d->v.rule_list = rule->list;
    d->v.rule_index = rule->index;
    d->v.rule = rule;
  }
}

/* Keep a string the message names past the end of its owner's life (the
 * vetting's, the DNS answer's).  Cut to the buffer: the message cuts
 * sooner. */
static void keep_detail(egress_decision_t *d, const char *s) {
  size_t n = strnlen(s, sizeof d->detail - 1);
  memcpy(d->detail, s, n);
  d->detail[n] = '\0';
}

static bool add_address(egress_decision_t *d, const egress__ip_t *ip, int32_t ttl, size_t cap) {
  if (!d->v.addrs) {
    if (cap <= sizeof d->inline_addrs / sizeof d->inline_addrs[0])
      d->v.addrs = d->inline_addrs;
    else if (!(d->v.addrs = egress__calloc(cap, sizeof(*d->v.addrs))))
      return false;
  }
  egress__addr_verdict_t *a = &d->v.addrs[d->v.naddrs++];
  a->ip = *ip;
  a->ttl = ttl;
  a->verdict = EGRESS_VERDICT_DENY;
  a->reason = EGRESS_REASON_INTERNAL_ERROR;
  return true; /* text and sockaddr: add_text */
}

static const char *scheme_name(egress__scheme_t scheme) {
  return scheme == EGRESS__SCHEME_HTTPS ? "https" : "http";
}

/* The rule that takes this check: the matcher's for host:port checks, the
 * URL walk's for URL checks. */
static const egress__rule_t *rule_for(const egress_policy_t *p, const egress__host_t *h, uint16_t port,
                                      uint8_t min_len, const egress__rule_t *found,
                                      const egress__url_ctx_t *u, bool *scheme_only) {
  *scheme_only = false;
  return u ? egress__url_rule(p, h, port, min_len, found, u, scheme_only) : found;
}

/* Denied because no entry for this host and port takes the URL. */
static void deny_url(egress_decision_t *d, const egress__rule_t *found, bool scheme_only) {
  decide(d, EGRESS_OUTCOME_DENIED, EGRESS_REASON_NOT_IN_ALLOWLIST, found,
         scheme_only ? EGRESS__MSG_OTHER_SCHEME : EGRESS__MSG_PATH_OUTSIDE);
}

static char *put_text(char *p, const char *s, size_t n) {
  memcpy(p, s, n);
  return p + n;
}

static void check_literal(const egress_policy_t *p, const egress_options_t *o, egress_decision_t *d,
                          uint16_t port, const egress__url_ctx_t *url) {
  const egress__ip_t *ip = &d->host.ip;
  egress__match_t m;
  egress__vet_t v;
  if (!add_address(d, ip, -1, 1)) {
    decide(d, EGRESS_OUTCOME_ENFORCEMENT_UNAVAILABLE, EGRESS_REASON_INTERNAL_ERROR, NULL, EGRESS__MSG_NONE);
    return;
  }
  egress__addr_verdict_t *a = &d->v.addrs[0];
  egress__vet_address(p, o->pref64, o->n_pref64, ip, port, &v);
  if (v.reason == EGRESS_REASON_EXPLICIT_DENY) {
    a->reason = v.reason;
    keep_detail(d, v.detail);
    decide(d, EGRESS_OUTCOME_DENIED, v.reason, v.rule, EGRESS__MSG_LITERAL_DENIED);
    return;
  }
  egress__match_ip(p->matcher[EGRESS_LIST_ALLOW], ip, port, 0, &m);
  if (v.reason == EGRESS_REASON_SPECIAL_PURPOSE_ADDRESS) {
    /* The port alone is to blame only when no CIDR rule holds this port
     * for the address and a rule inside its special range opens it on
     * another port, where it would pass.  A wider rule (0.0.0.0/0:8443)
     * never opens special space, on its own ports or any other, so it
     * never makes this a port question. */
    const egress__rule_t *elsewhere = NULL;
    if (!m.allowing && v.elsewhere) {
      egress__vet_t there;
      egress__match_t mt;
      egress__vet_address(p, o->pref64, o->n_pref64, ip, v.elsewhere->port_lo, &there);
      egress__match_ip(p->matcher[EGRESS_LIST_ALLOW], ip, v.elsewhere->port_lo, there.open_len, &mt);
      if (there.reason == EGRESS_REASON_NONE && mt.allowing)
        elsewhere = there.opener ? there.opener : mt.allowing;
    }
    if (elsewhere) {
      decide(d, EGRESS_OUTCOME_DENIED, EGRESS_REASON_PORT_NOT_ALLOWED, elsewhere, EGRESS__MSG_OTHER_PORTS);
    } else {
      keep_detail(d, v.detail);
      decide(d, EGRESS_OUTCOME_DENIED, v.reason, NULL, EGRESS__MSG_SPECIAL_PURPOSE);
    }
    a->reason = d->v.reason;
    return;
  }
  if (!m.any) {
    a->reason = EGRESS_REASON_NOT_IN_ALLOWLIST;
    decide(d, EGRESS_OUTCOME_DENIED, EGRESS_REASON_NOT_IN_ALLOWLIST, NULL, EGRESS__MSG_LITERAL_OUTSIDE);
    return;
  }
  if (!m.allowing) {
    a->reason = EGRESS_REASON_PORT_NOT_ALLOWED;
    decide(d, EGRESS_OUTCOME_DENIED, EGRESS_REASON_PORT_NOT_ALLOWED, m.any, EGRESS__MSG_OTHER_PORTS);
    return;
  }
  /* A special-purpose address was let through by the rule that names its
   * range, which is the rule that won even if a wider one comes first. */
  if (v.opener) m.allowing = v.opener;
  /* Only a rule that could open the address may stand in for the one
   * found: 0.0.0.0/0 never stands in for a private address's own rule. */
  bool scheme_only;
  const egress__rule_t *by_url = rule_for(p, &d->host, port, v.open_len, m.allowing, url, &scheme_only);
  if (!by_url) {
    a->reason = EGRESS_REASON_NOT_IN_ALLOWLIST;
    deny_url(d, m.allowing, scheme_only);
    return;
  }
  a->verdict = EGRESS_VERDICT_ALLOW;
  a->reason = EGRESS_REASON_NONE;
  decide(d, EGRESS_OUTCOME_ALLOWED, EGRESS_REASON_NONE, by_url, EGRESS__MSG_ALLOWED);
}

/* The name's allow rule; false when the policy already decided. */
static bool name_rule(const egress_policy_t *p, egress_decision_t *d, uint16_t port,
                      const egress__url_ctx_t *url, const egress__rule_t **rule, uint64_t *name_hash) {
  egress__match_t m;
  egress__match_name(p->matcher[EGRESS_LIST_ALLOW], d->host.text, d->host.len, port, &m);
  if (!m.any) {
    decide(d, EGRESS_OUTCOME_DENIED, EGRESS_REASON_NOT_IN_ALLOWLIST, NULL, EGRESS__MSG_NO_ALLOW_ENTRY);
    return false;
  }
  if (!m.allowing) {
    decide(d, EGRESS_OUTCOME_DENIED, EGRESS_REASON_PORT_NOT_ALLOWED, m.any, EGRESS__MSG_OTHER_PORTS);
    return false;
  }
  bool scheme_only;
  *rule = rule_for(p, &d->host, port, 0, m.allowing, url, &scheme_only);
  if (!*rule) {
    deny_url(d, m.allowing, scheme_only);
    return false;
  }
  *name_hash = m.name_hash;
  return true;
}

static void count_cache(egress_checker_t *c, const egress__cache_stats_t *cs) {
  egress__count_add(c, EGRESS_COUNTER_CACHE_HITS, cs->hits);
  egress__count_add(c, EGRESS_COUNTER_CACHE_MISSES, cs->misses);
  egress__count_add(c, EGRESS_COUNTER_DNS_QUERIES, cs->queries);
}

/* The name's answer (@p st from the cache or the lookup), vetted. */
static void vet_answer(egress_checker_t *c, const egress_policy_t *p, egress_decision_t *d, uint16_t port,
                       const egress__rule_t *rule, egress_status_t st, const egress__answer_t *ans_in) {
  const egress__answer_t ans = *ans_in;
  d->v.dns_ms = ans.cached ? 0 : ans.ms;
  /* The resolver's details are static strings: they outlive the answer. */
  d->v.detail_static = ans.detail;
  if (st != EGRESS_OK || ans.result == EGRESS__DNS_NOMEM) {
    egress__count(c, EGRESS_COUNTER_DNS_FAILURES);
    decide(d, EGRESS_OUTCOME_ENFORCEMENT_UNAVAILABLE, EGRESS_REASON_INTERNAL_ERROR, rule,
           EGRESS__MSG_DNS_NOMEM);
    return;
  }
  if (ans.result == EGRESS__DNS_NO_SUCH_HOST) {
    decide(d, EGRESS_OUTCOME_DENIED, EGRESS_REASON_NO_SUCH_HOST, rule, EGRESS__MSG_NO_SUCH_HOST);
    return;
  }
  if (ans.result != EGRESS__DNS_OK) {
    egress__count(c, EGRESS_COUNTER_DNS_FAILURES);
    decide(d, EGRESS_OUTCOME_ENFORCEMENT_UNAVAILABLE, EGRESS_REASON_DNS_UNAVAILABLE, rule,
           EGRESS__MSG_DNS_FAILED);
    return;
  }

  /* Deny list first, also for the names the answer came through: an
   * allowed name that is an alias of a denied one reaches the denied
   * name's servers.  This is the deny list winning, so it is explicit_deny
   * naming the deny rule, whatever the addresses are; and no address of
   * the answer is usable (filter mode included), since c-ares does not say
   * which addresses came through which alias. */
  for (size_t off = 0; off < ans.chain_len;) {
    const char *alias = ans.chain + off;
    size_t alen = strlen(alias);
    egress__match_t dm;
    egress__match_name(p->matcher[EGRESS_LIST_DENY], alias, alen, port, &dm);
    if (dm.allowing) {
      for (size_t i = 0; i < ans.n; i++) {
        egress__ip_t ip = ans.ips[i];
        egress__ip_unmap(&ip);
        if (!add_address(d, &ip, ans.ttls[i], ans.n)) {
          decide(d, EGRESS_OUTCOME_ENFORCEMENT_UNAVAILABLE, EGRESS_REASON_INTERNAL_ERROR, rule,
                 EGRESS__MSG_NONE);
          return;
        }
        d->v.addrs[d->v.naddrs - 1].reason = EGRESS_REASON_EXPLICIT_DENY;
      }
      keep_detail(d, alias);
      decide(d, EGRESS_OUTCOME_DENIED, EGRESS_REASON_EXPLICIT_DENY, dm.allowing, EGRESS__MSG_ALIAS_DENIED);
      return;
    }
    off += alen + 1;
  }

  size_t passed = 0;
  bool filtered = false;
  const egress__rule_t *bad_rule = rule; /* the deny rule, when one forbids */
  for (size_t i = 0; i < ans.n; i++) {
    egress__ip_t ip = ans.ips[i];
    egress__ip_unmap(&ip);
    if (!add_address(d, &ip, ans.ttls[i], ans.n)) {
      decide(d, EGRESS_OUTCOME_ENFORCEMENT_UNAVAILABLE, EGRESS_REASON_INTERNAL_ERROR, rule, EGRESS__MSG_NONE);
      return;
    }
    egress__addr_verdict_t *a = &d->v.addrs[d->v.naddrs - 1];
    egress__vet_t v;
    egress__vet_address(p, c->opts.pref64, c->opts.n_pref64, &ip, port, &v);
    a->reason = v.reason;
    if (v.reason == EGRESS_REASON_NONE) {
      a->verdict = EGRESS_VERDICT_ALLOW;
      passed++;
    } else if (!filtered) {
      filtered = true;
      d->v.bad_addr = d->v.naddrs - 1;
      d->v.bad_reason = v.reason;
      keep_detail(d, v.detail);
      if (v.reason == EGRESS_REASON_EXPLICIT_DENY) bad_rule = v.rule;
    }
  }
  if (filtered && (c->opts.mixed == EGRESS_MIXED_DENY || passed == 0)) {
    /* Deny-if-any: no address of this answer may be used. */
    for (size_t i = 0; i < d->v.naddrs; i++)
      if (d->v.addrs[i].verdict == EGRESS_VERDICT_ALLOW) d->v.addrs[i].verdict = EGRESS_VERDICT_DENY;
    decide(d, EGRESS_OUTCOME_DENIED, EGRESS_REASON_RESOLVED_ADDRESS_FORBIDDEN, bad_rule,
           EGRESS__MSG_RESOLVED_FORBIDDEN);
    return;
  }
  decide(d, EGRESS_OUTCOME_ALLOWED, EGRESS_REASON_NONE, rule,
         filtered ? EGRESS__MSG_ALLOWED_FILTERED : EGRESS__MSG_ALLOWED);
}

/* Everything up to the verdict; never allocates the decision itself.  False
 * when the decision waits for the answer for d->host (a cache miss: k says
 * which rule and name). */
static bool check_into(egress__check_t *k, const char *host, int32_t port) {
  egress_checker_t *c = k->c;
  const egress_policy_t *p = k->p;
  egress_decision_t *d = k->d;
  const egress__url_ctx_t *url = k->url;
  const char *why = NULL;
  egress__match_t m;
  if (url && url->nomem) {
    decide(d, EGRESS_OUTCOME_ENFORCEMENT_UNAVAILABLE, EGRESS_REASON_INTERNAL_ERROR, NULL, EGRESS__MSG_NONE);
    return true;
  }
  if (url && url->invalid) {
    decide(d, EGRESS_OUTCOME_DENIED, EGRESS_REASON_INVALID_HOST, NULL, EGRESS__MSG_INVALID_URL);
    return true;
  }
  if (port < 1 || port > 65535) {
    decide(d, EGRESS_OUTCOME_DENIED, EGRESS_REASON_INVALID_PORT, NULL, EGRESS__MSG_INVALID_PORT);
    return true;
  }
  if (!host) {
    decide(d, EGRESS_OUTCOME_DENIED, EGRESS_REASON_INVALID_HOST, NULL, EGRESS__MSG_HOST_NULL);
    return true;
  }
  egress_status_t st = egress__canon_host(host, strlen(host), &d->host, &why);
  if (st == EGRESS_ENOMEM) {
    decide(d, EGRESS_OUTCOME_ENFORCEMENT_UNAVAILABLE, EGRESS_REASON_INTERNAL_ERROR, NULL, EGRESS__MSG_NONE);
    return true;
  }
  if (st != EGRESS_OK) {
    d->v.detail_static = why; /* canonicalization's reasons are static */
    decide(d, EGRESS_OUTCOME_DENIED, EGRESS_REASON_INVALID_HOST, NULL, EGRESS__MSG_INVALID_HOST);
    return true;
  }
  d->v.has_host = true;
  uint16_t p16 = (uint16_t)port;
  if (d->host.kind == EGRESS__HOST_NAME) {
    egress__match_name(p->matcher[EGRESS_LIST_DENY], d->host.text, d->host.len, p16, &m);
    if (m.allowing) {
      decide(d, EGRESS_OUTCOME_DENIED, EGRESS_REASON_EXPLICIT_DENY, m.allowing, EGRESS__MSG_DENY_ENTRY);
      return true;
    }
  }
  /* IP literals meet the deny list inside check_literal's vetting. */
  if (p->nrules[EGRESS_LIST_ALLOW] == 0) {
    /* The deny list still wins for literals: report it when it applies. */
    if (d->host.kind != EGRESS__HOST_NAME) {
      egress__match_ip(p->matcher[EGRESS_LIST_DENY], &d->host.ip, p16, 0, &m);
      if (m.allowing) {
        decide(d, EGRESS_OUTCOME_DENIED, EGRESS_REASON_EXPLICIT_DENY, m.allowing, EGRESS__MSG_DENY_ENTRY);
        return true;
      }
    }
    decide(d, EGRESS_OUTCOME_DENIED, EGRESS_REASON_EMPTY_ALLOWLIST, NULL, EGRESS__MSG_EMPTY_ALLOWLIST);
    return true;
  }
  if (d->host.kind != EGRESS__HOST_NAME) {
    check_literal(p, &c->opts, d, p16, url);
    return true;
  }
  if (!name_rule(p, d, p16, url, &k->rule, &k->name_hash)) return true;
  k->port = p16;
  egress__answer_t ans;
  egress__cache_stats_t cs = { 0, 0, 0 };
  egress_status_t got;
  if (!egress__cache_peek(c->cache, d->host.text, d->host.len, k->name_hash, &ans, &cs, &got)) return false;
  count_cache(c, &cs);
  vet_answer(c, p, d, p16, k->rule, got, &ans);
  egress__answer_clear(&ans);
  return true;
}

/* ------------------------------------------------------------------------ */
/* Text, made after the check and only for someone who reads it.             */
/* ------------------------------------------------------------------------ */

/* Messages are cut to what fits here, as they always were. */
#define MSG_PRINTF_MAX 512
/* The invalid-host message may be longer: the host is cut, then escaped. */
#define MSG_BUF_MAX (MSG_PRINTF_MAX + EGRESS__REPORT_HOST_MAX * 4 + EGRESS__REPORT_MARK_MAX)

static size_t print_message(char *buf, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static size_t print_message(char *buf, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(buf, MSG_PRINTF_MAX, fmt, ap);
  va_end(ap);
  return n < 0 ? 0 : (size_t)n < MSG_PRINTF_MAX ? (size_t)n : MSG_PRINTF_MAX - 1;
}

/* "allowed by egressAllowlist[N]", built by hand: it is the message of
 * nearly every check. */
static size_t allowed_message(char *buf, size_t index, bool filtered) {
  static const char head[] = "allowed by ";
  static const char tail[] = " (forbidden addresses filtered out)";
  const char *key = egress__list_keys[EGRESS_LIST_ALLOW];
  char *p = put_text(buf, head, sizeof head - 1);
  p = put_text(p, key, strlen(key));
  *p++ = '[';
  p = egress__put_uint(p, index, 1);
  *p++ = ']';
  if (filtered) p = put_text(p, tail, sizeof tail - 1);
  return (size_t)(p - buf);
}

/* Denied as invalid_host, naming the host as given: cut like the event's
 * destination when longer than any host can be, and with every byte that
 * is not printable ASCII written \xHH, so that a hostile host can neither
 * bloat nor garble a message that ends up in logs and terminals. */
static size_t invalid_host_message(char *buf, const char *host, const char *why) {
  static const char hex[] = "0123456789abcdef";
  static const char head[] = "invalid host \"";
  size_t len = strlen(host), keep = egress__report_keep(host, len, EGRESS__REPORT_HOST_MAX);
  char *p = put_text(buf, head, sizeof head - 1);
  for (size_t i = 0; i < keep; i++) {
    unsigned char ch = (unsigned char)host[i];
    if (ch >= 0x20 && ch < 0x7f && ch != '"' && ch != '\\') {
      *p++ = (char)ch;
    } else {
      *p++ = '\\';
      *p++ = 'x';
      *p++ = hex[ch >> 4];
      *p++ = hex[ch & 15];
    }
  }
  if (keep < len) p = egress__report_mark(p, len);
  p = put_text(p, "\": ", 3);
  if (!why) why = "not a bare host name or IP address";
  p = put_text(p, why, strnlen(why, 200));
  return (size_t)(p - buf);
}

/* The message d->v.msg stands for: static text, or written into @p buf
 * (MSG_BUF_MAX bytes, not terminated) with *len set; NULL for the reason's
 * own message.  Addresses must have their text by now. */
static const char *write_message(const egress_decision_t *d, const char *host, const egress_request_t *req,
                                 const egress__url_ctx_t *url, char *buf, size_t *len) {
  const char *h = d->host.text, *det = d->detail, *why = d->v.detail_static;
  unsigned port = (unsigned)d->v.port;
  size_t n;
  switch (d->v.msg) {
    case EGRESS__MSG_NONE: return NULL;
    case EGRESS__MSG_HOST_NULL: return "host is NULL";
    case EGRESS__MSG_CANCELLED: return "the check was cancelled before DNS answered";
    case EGRESS__MSG_EMPTY_ALLOWLIST: return "the allowlist is empty: every destination is denied";
    case EGRESS__MSG_REFUSED: n = print_message(buf, "%s", req->refusal); break;
    case EGRESS__MSG_INVALID_URL: n = print_message(buf, "invalid URL: %s", url->invalid); break;
    case EGRESS__MSG_INVALID_PORT:
      n = print_message(buf, "port %ld is outside 1-65535", (long)d->v.port);
      break;
    case EGRESS__MSG_INVALID_HOST: n = invalid_host_message(buf, host, why); break;
    case EGRESS__MSG_DENY_ENTRY:
      n = print_message(buf, "%s matches deny-list entry %zu", h, d->v.rule_index);
      break;
    case EGRESS__MSG_NO_ALLOW_ENTRY: n = print_message(buf, "%s matches no allowlist entry", h); break;
    case EGRESS__MSG_OTHER_PORTS:
      n = print_message(buf, "%s is allowed only on other ports, not %u", h, port);
      break;
    case EGRESS__MSG_OTHER_SCHEME:
      n = print_message(buf, "%s:%u is allowed only for URLs of another scheme, not %s", h, port,
                        scheme_name(url->scheme));
      break;
    case EGRESS__MSG_PATH_OUTSIDE:
      n = print_message(buf, "path %.200s is outside every allowlist entry for %s", url->path, h);
      break;
    case EGRESS__MSG_DNS_NOMEM: n = print_message(buf, "out of memory while resolving %s", h); break;
    case EGRESS__MSG_NO_SUCH_HOST: n = print_message(buf, "%s: %s", h, why ? why : "no address"); break;
    case EGRESS__MSG_DNS_FAILED:
      n = print_message(buf, "resolving %s failed: %s", h, why ? why : "DNS error");
      break;
    case EGRESS__MSG_ALIAS_DENIED:
      n = print_message(buf, "%s is an alias of %.253s (CNAME), which matches deny-list entry %zu", h, det,
                        d->v.rule_index);
      break;
    case EGRESS__MSG_RESOLVED_FORBIDDEN:
      n = print_message(buf, "%s resolved to forbidden address %s (%s%s%s)", h,
                        d->v.addrs[d->v.bad_addr].text, egress_reason_name(d->v.bad_reason),
                        det[0] ? ": " : "", det);
      break;
    case EGRESS__MSG_LITERAL_DENIED:
      n = print_message(buf, "%s is in the deny list%s%s", h, det[0] ? ": " : "", det);
      break;
    case EGRESS__MSG_SPECIAL_PURPOSE:
      n = print_message(buf,
                        "%s is a special-purpose address (%s) not opened on port %u by a CIDR rule "
                        "inside its range",
                        h, det, port);
      break;
    case EGRESS__MSG_LITERAL_OUTSIDE:
      n = print_message(buf, "IP address %s is not inside any allowlist CIDR rule", h);
      break;
    case EGRESS__MSG_ALLOWED:
    case EGRESS__MSG_ALLOWED_FILTERED:
      n = allowed_message(buf, d->v.rule_index, d->v.msg == EGRESS__MSG_ALLOWED_FILTERED);
      break;
    default: return NULL;
  }
  *len = n;
  return buf;
}

/* An upper bound of the curl resolve line, terminator included. */
static size_t curl_resolve_size(const egress_decision_t *d) {
  return d->host.len + 8 + d->v.naddrs * (EGRESS__IPSTR_MAX + 3);
}

/* "host:port:addr,[v6addr]" for CURLOPT_RESOLVE: the vetted addresses only.
 * Returns the end of what was written, terminator excluded. */
static char *put_curl_resolve(char *p, const egress_decision_t *d) {
  p = put_text(p, d->host.text, d->host.len);
  *p++ = ':';
  p = egress__put_uint(p, (size_t)d->v.port, 1);
  *p++ = ':';
  bool first = true;
  for (size_t i = 0; i < d->v.naddrs; i++) {
    const egress__addr_verdict_t *a = &d->v.addrs[i];
    if (a->verdict != EGRESS_VERDICT_ALLOW) continue;
    if (!first) *p++ = ',';
    if (a->ip.family == 6) *p++ = '[';
    p = put_text(p, a->text, strlen(a->text));
    if (a->ip.family == 6) *p++ = ']';
    first = false;
  }
  *p = '\0';
  return p;
}

static size_t text_size(const char *s) { return s ? strlen(s) + 1 : 0; }

/* Copy @p s to *p (moving it on), or NULL for NULL. */
static const char *put_copy(char **p, const char *s) {
  if (!s) return NULL;
  size_t n = strlen(s) + 1;
  const char *copy = memcpy(*p, s, n);
  *p += n;
  return copy;
}

/* What is said about the check, once it is decided: the addresses' text and
 * sockaddrs, then either, for a decision the caller keeps (@p keep), the
 * message, the curl resolve line and copies of the destination, the rule
 * text and the request context, in one allocation; or, for an egress_check
 * that keeps nothing and only sends its event, the caller's strings and the
 * policy's rule text as they are: both outlive the check.  False when out
 * of memory. */
static bool add_text(egress_decision_t *d, const char *host, const egress_request_t *req,
                     const egress__url_ctx_t *url, bool keep) {
  uint16_t port = (uint16_t)(d->v.port > 0 && d->v.port < 65536 ? d->v.port : 0);
  for (size_t i = 0; i < d->v.naddrs; i++) {
    egress__addr_verdict_t *a = &d->v.addrs[i];
    egress__ip_format(&a->ip, a->text, sizeof a->text);
    a->sa_len = egress__ip_sockaddr(&a->ip, port, &a->sa);
  }
  const char *rule_text = d->v.rule ? d->v.rule->text : NULL;
  const char *const *field = req ? (const char *const *)req->field : NULL;
  if (!keep) {
    d->t.destination = host;
    d->t.rule_text = rule_text;
    for (int i = 0; field && i < EGRESS__FIELD_COUNT; i++) d->t.field[i] = field[i];
    return true;
  }
  char buf[MSG_BUF_MAX];
  size_t msg_len = 0;
  const char *msg = write_message(d, host, req, url, buf, &msg_len);
  bool curl = d->v.outcome == EGRESS_OUTCOME_ALLOWED && d->v.has_host && d->host.kind == EGRESS__HOST_NAME;
  size_t need = text_size(host) + text_size(rule_text) + (msg == buf ? msg_len + 1 : 0) +
                (curl ? curl_resolve_size(d) : 0);
  for (int i = 0; field && i < EGRESS__FIELD_COUNT; i++) need += text_size(field[i]);
  d->t.message = msg;
  if (need == 0) return true;
  char *p = d->t.owned = egress__malloc(need);
  if (!p) {
    d->t.message = NULL;
    return false;
  }
  if (msg == buf) {
    d->t.message = memcpy(p, buf, msg_len);
    p += msg_len;
    *p++ = '\0';
  }
  d->t.destination = put_copy(&p, host);
  d->t.rule_text = put_copy(&p, rule_text);
  for (int i = 0; field && i < EGRESS__FIELD_COUNT; i++) d->t.field[i] = put_copy(&p, field[i]);
  if (curl) {
    d->t.curl_resolve = p;
    p = put_curl_resolve(p, d) + 1;
  }
  return true;
}

/* Verdict from outcome and mode (README "The check"), then the event.
 * @p keep: the caller keeps the decision (else the event text need not
 * outlive the delivery). */
static void finish(egress_checker_t *c, egress_decision_t *d, const egress_policy_t *p, bool want_json,
                   bool keep) {
  d->v.mode = c->opts.mode;
  d->v.special_version = egress__special_version;
  if (p)
    memcpy(d->policy_digest, p->digest, sizeof d->policy_digest);
  else
    d->policy_digest[0] = '\0';
  d->v.would_deny = d->v.outcome != EGRESS_OUTCOME_ALLOWED;
  bool input_error = d->v.reason == EGRESS_REASON_INVALID_HOST || d->v.reason == EGRESS_REASON_INVALID_PORT ||
                     d->v.reason == EGRESS_REASON_INTERNAL_ERROR;
  if (d->v.outcome == EGRESS_OUTCOME_ALLOWED)
    d->v.verdict = EGRESS_VERDICT_ALLOW;
  else if (d->v.mode == EGRESS_MODE_MONITOR && !input_error)
    d->v.verdict = EGRESS_VERDICT_ALLOW;
  else
    d->v.verdict = EGRESS_VERDICT_DENY;

  bool sink = egress__sink_active(c->sink);
  if (sink || want_json) {
    int delivered = -1;
    if (egress__event_stamp(d) == EGRESS_OK) {
      /* egress_check keeps no decision: deliver straight from the
       * per-thread print buffer, no copy of the text.  Not to a callback,
       * whose code may check again on this thread and reuse the buffer. */
      size_t len = 0;
      const char *text =
          !keep && !c->opts.event_cb ? egress__event_print(d, c->opts.event_source, &len) : NULL;
      if (text) {
        delivered = egress__sink_deliver(c->sink, text, len, d);
      } else {
        d->t.event_json = egress__event_build(d, c->opts.event_source);
        if (d->t.event_json)
          delivered = egress__sink_deliver(c->sink, d->t.event_json, strlen(d->t.event_json), d);
      }
    }
    if (sink) {
      if (delivered == 0) {
        egress__count(c, EGRESS_COUNTER_EVENTS_EMITTED);
      } else {
        egress__count(c, EGRESS_COUNTER_EVENTS_FAILED);
        if (c->opts.audit_required) {
          /* No audit record, no connection: whatever the policy said. */
          d->v.verdict = EGRESS_VERDICT_DENY;
          d->v.outcome = EGRESS_OUTCOME_ENFORCEMENT_UNAVAILABLE;
          d->v.reason = EGRESS_REASON_AUDIT_UNAVAILABLE;
          d->v.would_deny = true;
          d->t.message = "the decision event could not be delivered and audit is required";
          for (size_t i = 0; i < d->v.naddrs; i++) {
            d->v.addrs[i].verdict = EGRESS_VERDICT_DENY;
            if (d->v.addrs[i].reason == EGRESS_REASON_NONE)
              d->v.addrs[i].reason = EGRESS_REASON_AUDIT_UNAVAILABLE;
          }
          /* The decision's own event text must say what was decided. */
          egress__free(d->t.event_json);
          d->t.event_json = egress__event_build(d, c->opts.event_source);
        }
      }
    }
  }
  egress__count(c, EGRESS_COUNTER_CHECKS);
  egress__count_check(c, d->v.outcome, d->v.reason);
}

/* One check into a reset (or fresh) decision, up to the DNS answer it may
 * need (README "The check").  @p keep: the caller keeps the decision and
 * reads its text; @p want_json: and its event text.  egress_check keeps
 * nothing: with no sink it makes no text at all (the hot path), with one
 * only what the event needs.  True when decided: egress__check_end next;
 * false when it waits for d->host's answer: egress__check_answer, then
 * egress__check_end. */
bool egress__check_begin(egress__check_t *k, egress_checker_t *c, const char *host, int32_t port,
                         const egress__url_ctx_t *url, const egress_request_t *req, egress_decision_t *d,
                         bool keep, bool want_json) {
  k->c = c;
  k->d = d;
  k->host = host;
  k->url = url;
  k->req = req;
  k->keep = keep;
  k->want_json = want_json;
  k->rule = NULL;
  k->name_hash = 0;
  k->port = 0;
  k->text = keep || egress__sink_active(c->sink);
  k->start = k->text ? mono_ms() : 0;
  d->v.port = port;
  d->v.verdict = EGRESS_VERDICT_DENY;
  /* A callback sink runs user code, which may check again on this thread
   * and replace the thread's slot: hold a reference of our own then.  The
   * thread's slot keeps the policy (and its rule text, which an
   * egress_check's event reads in place) alive past the check otherwise. */
  k->own = c->opts.event_cb != NULL;
  k->p = k->own ? egress__policy_acquire(c) : egress__policy_borrow(c);
  k->refused = req && req->refusal;
  if (k->refused) {
    /* Refused by the caller: recorded, never resolved or matched. */
    decide(d, EGRESS_OUTCOME_DENIED, req->refusal_reason, NULL, EGRESS__MSG_REFUSED);
    return true;
  }
  return check_into(k, host, port);
}

void egress__check_hold(egress__check_t *k) {
  if (!k->own) egress_policy_ref(k->p);
  k->own = true;
}

void egress__check_count_cache(egress__check_t *k, const egress__cache_stats_t *cs) { count_cache(k->c, cs); }

void egress__check_answer(egress__check_t *k, egress_status_t st, const egress__answer_t *ans) {
  vet_answer(k->c, k->p, k->d, k->port, k->rule, st, ans);
}

void egress__check_cancelled(egress__check_t *k) {
  decide(k->d, EGRESS_OUTCOME_ENFORCEMENT_UNAVAILABLE, EGRESS_REASON_INTERNAL_ERROR, NULL,
         EGRESS__MSG_CANCELLED);
}

egress_status_t egress__check_end(egress__check_t *k) {
  egress_checker_t *c = k->c;
  egress_decision_t *d = k->d;
  egress_status_t st = EGRESS_OK;
  if (!k->refused && d->v.reason == EGRESS_REASON_INTERNAL_ERROR) st = EGRESS_ENOMEM;
  if (k->text && !add_text(d, k->host, k->req, k->url, k->keep)) {
    /* No text, no decision to stand behind: nothing found is reported. */
    d->v.has_rule = false;
    d->v.naddrs = 0;
    decide(d, EGRESS_OUTCOME_ENFORCEMENT_UNAVAILABLE, EGRESS_REASON_INTERNAL_ERROR, NULL, EGRESS__MSG_NONE);
    st = EGRESS_ENOMEM;
  }
  d->v.rule = NULL; /* the policy may go with the check */
  if (k->text) d->v.latency_ms = mono_ms() - k->start;
  finish(c, d, k->p, k->want_json, k->keep);
  if (k->own) egress_policy_unref(k->p);
  k->p = NULL;
  if (st != EGRESS_OK) d->v.verdict = EGRESS_VERDICT_DENY;
  return st;
}

/* The blocking check: the same steps, the wait in this thread. */
static egress_status_t run_check(egress_checker_t *c, const char *host, int32_t port,
                                 const egress__url_ctx_t *url, const egress_request_t *req,
                                 egress_decision_t *d, bool keep, bool want_json) {
  egress__check_t k;
  if (!egress__check_begin(&k, c, host, port, url, req, d, keep, want_json)) {
    egress__answer_t ans;
    egress__cache_stats_t cs = { 0, 0, 0 };
    egress_status_t st =
        egress__cache_fetch(c->cache, c->resolver, d->host.text, d->host.len, k.name_hash, &ans, &cs);
    egress__check_count_cache(&k, &cs);
    egress__check_answer(&k, st, &ans);
    egress__answer_clear(&ans);
  }
  return egress__check_end(&k);
}

/* A check with no checker: a deny that says why, at the port given. */
static egress_status_t no_checker(egress_decision_t *d, int32_t port) {
  d->v.port = port;
  decide(d, EGRESS_OUTCOME_ENFORCEMENT_UNAVAILABLE, EGRESS_REASON_INTERNAL_ERROR, NULL, EGRESS__MSG_NONE);
  d->t.message = "checker is NULL";
  return EGRESS_EINVAL;
}

egress_verdict_t egress_check(egress_checker_t *checker, const char *host, uint16_t port) {
  egress_decision_t d;
  if (!checker) return EGRESS_VERDICT_DENY;
  egress__decision_reset(&d);
  egress_status_t st = run_check(checker, host, port, NULL, NULL, &d, false, false);
  egress_verdict_t verdict = st == EGRESS_OK ? d.v.verdict : EGRESS_VERDICT_DENY;
  egress__decision_release(&d);
  return verdict;
}

egress_status_t egress_check_ex(egress_checker_t *checker, const char *host, int32_t port,
                                const egress_request_t *req, egress_decision_t **out) {
  if (!out) return EGRESS_EINVAL;
  *out = NULL;
  egress_decision_t *d = egress__calloc(1, sizeof(*d));
  if (!d) {
    if (checker) egress__count(checker, EGRESS_COUNTER_EVENTS_FAILED);
    return EGRESS_ENOMEM;
  }
  *out = d;
  if (!checker) return no_checker(d, port);
  return run_check(checker, host, port, NULL, req, d, true, true);
}

egress_status_t egress_decision_new(egress_decision_t **out) {
  if (!out) return EGRESS_EINVAL;
  *out = egress__calloc(1, sizeof(**out));
  if (!*out) return EGRESS_ENOMEM;
  /* An unused decision reads as a deny: it was never checked. */
  (*out)->v.outcome = EGRESS_OUTCOME_ENFORCEMENT_UNAVAILABLE;
  (*out)->v.reason = EGRESS_REASON_INTERNAL_ERROR;
  return EGRESS_OK;
}

egress_status_t egress_check_into(egress_checker_t *checker, const char *host, int32_t port,
                                  const egress_request_t *req, egress_decision_t *d) {
  if (!d) return EGRESS_EINVAL;
  /* Nothing of the previous check survives into this one. */
  egress__decision_release(d);
  egress__decision_reset(d);
  if (!checker) return no_checker(d, port);
  return run_check(checker, host, port, NULL, req, d, true, false);
}

egress_status_t egress__check_url_parts(egress_checker_t *c, const char *host, int32_t port,
                                        const egress__url_ctx_t *url, const egress_request_t *req,
                                        egress_decision_t *d) {
  if (!c) return no_checker(d, port);
  return run_check(c, host, port, url, req, d, true, true);
}
