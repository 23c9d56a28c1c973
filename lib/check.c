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

/* Replace the message; short ones live in the decision itself.  NULL when
 * out of memory (readers then fall back to the reason's message). */
static void set_message(egress_decision_t *d, const char *text, size_t n) {
  egress__decision_drop_message(d);
  if (n < sizeof d->inline_message) {
    memcpy(d->inline_message, text, n);
    d->inline_message[n] = '\0';
    d->message = d->inline_message;
  } else {
    d->message = egress__strndup(text, n);
  }
}

/* Set the result.  When the message cannot be allocated the decision still
 * says what it should, without text. */
static void decide(egress_decision_t *d, egress_outcome_t outcome, egress_reason_t reason,
                   const egress__rule_t *rule, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static void decide(egress_decision_t *d, egress_outcome_t outcome, egress_reason_t reason,
                   const egress__rule_t *rule, const char *fmt, ...) {
  d->outcome = outcome;
  d->reason = reason;
  if (rule) {
    d->has_rule = true;
    d->rule_list = rule->list;
    d->rule_index = rule->index;
  }
  if (d->lean) return;
  if (rule) {
    if (d->borrowed) {
      d->rule_text = (char *)rule->text;   /* the policy outlives the decision's use */
    } else {
      egress__free(d->rule_text);
      d->rule_text = egress__strdup(rule->text);
    }
  }
  if (d->borrow) return;   /* event only: no message */
  egress__decision_drop_message(d);
  if (fmt) {
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    set_message(d, buf, n < 0 ? 0 : (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1);
  }
}

static bool add_address(egress_decision_t *d, const egress__ip_t *ip, int32_t ttl, size_t cap) {
  if (!d->addrs) {
    if (cap <= sizeof d->inline_addrs / sizeof d->inline_addrs[0])
      d->addrs = d->inline_addrs;
    else if (!(d->addrs = egress__calloc(cap, sizeof(*d->addrs))))
      return false;
  }
  egress__addr_verdict_t *a = &d->addrs[d->naddrs++];
  a->ip = *ip;
  a->ttl = ttl;
  a->verdict = EGRESS_VERDICT_DENY;
  a->reason = EGRESS_REASON_INTERNAL_ERROR;
  if (d->lean) return true;
  egress__ip_format(ip, a->text, sizeof a->text);
  uint16_t port = (uint16_t)(d->port > 0 && d->port < 65536 ? d->port : 0);
  a->sa_len = egress__ip_sockaddr(ip, port, &a->sa);
  return true;
}

static const char *scheme_name(egress__scheme_t scheme) {
  return scheme == EGRESS__SCHEME_HTTPS ? "https" : "http";
}

/* The rule that takes this check: the matcher's for host:port checks, the
 * URL walk's for URL checks. */
static const egress__rule_t *rule_for(const egress_policy_t *p, const egress__host_t *h,
                                      uint16_t port, uint8_t min_len, const egress__rule_t *found,
                                      const egress__url_ctx_t *u, bool *scheme_only) {
  *scheme_only = false;
  return u ? egress__url_rule(p, h, port, min_len, found, u, scheme_only) : found;
}

/* Denied because no entry for this host and port takes the URL. */
static void deny_url(egress_decision_t *d, const egress__rule_t *found, const egress__url_ctx_t *u,
                     uint16_t port, bool scheme_only) {
  if (scheme_only)
    decide(d, EGRESS_OUTCOME_DENIED, EGRESS_REASON_NOT_IN_ALLOWLIST, found,
           "%s:%u is allowed only for URLs of another scheme, not %s", d->host.text, port,
           scheme_name(u->scheme));
  else
    decide(d, EGRESS_OUTCOME_DENIED, EGRESS_REASON_NOT_IN_ALLOWLIST, found,
           "path %.200s is outside every allowlist entry for %s", u->path, d->host.text);
}

static char *put_text(char *p, const char *s, size_t n) {
  memcpy(p, s, n);
  return p + n;
}

/* The allowed message, "allowed by egressAllowlist[N]", built by hand: it
 * is the message of nearly every check. */
static void allowed_message(egress_decision_t *d, const egress__rule_t *rule, bool filtered) {
  static const char head[] = "allowed by ";
  static const char tail[] = " (forbidden addresses filtered out)";
  const char *key = egress__list_keys[EGRESS_LIST_ALLOW];
  if (d->lean || d->borrow) return;
  char buf[sizeof head + EGRESS__LIST_KEY_MAX + sizeof tail + 24];
  char *p = put_text(buf, head, sizeof head - 1);
  p = put_text(p, key, strlen(key));
  *p++ = '[';
  p = egress__put_uint(p, rule->index, 1);
  *p++ = ']';
  if (filtered) p = put_text(p, tail, sizeof tail - 1);
  *p = '\0';
  set_message(d, buf, (size_t)(p - buf));
}

static void check_literal(const egress_policy_t *p, const egress_options_t *o,
                          egress_decision_t *d, uint16_t port, const egress__url_ctx_t *url) {
  const egress__ip_t *ip = &d->host.ip;
  egress__match_t m;
  egress__vet_t v;
  if (!add_address(d, ip, -1, 1)) {
    decide(d, EGRESS_OUTCOME_ENFORCEMENT_UNAVAILABLE, EGRESS_REASON_INTERNAL_ERROR, NULL, NULL);
    return;
  }
  egress__addr_verdict_t *a = &d->addrs[0];
  egress__vet_address(p, o->pref64, o->n_pref64, ip, port, &v);
  if (v.reason == EGRESS_REASON_EXPLICIT_DENY) {
    a->reason = v.reason;
    decide(d, EGRESS_OUTCOME_DENIED, v.reason, v.rule, "%s is in the deny list%s%s", d->host.text,
           v.detail[0] ? ": " : "", v.detail);
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
    if (elsewhere)
      decide(d, EGRESS_OUTCOME_DENIED, EGRESS_REASON_PORT_NOT_ALLOWED, elsewhere,
             "%s is allowed only on other ports, not %u", d->host.text, port);
    else
      decide(d, EGRESS_OUTCOME_DENIED, v.reason, NULL,
             "%s is a special-purpose address (%s) not opened on port %u by a CIDR rule inside its "
             "range",
             d->host.text, v.detail, port);
    a->reason = d->reason;
    return;
  }
  if (!m.any) {
    a->reason = EGRESS_REASON_NOT_IN_ALLOWLIST;
    decide(d, EGRESS_OUTCOME_DENIED, EGRESS_REASON_NOT_IN_ALLOWLIST, NULL,
           "IP address %s is not inside any allowlist CIDR rule", d->host.text);
    return;
  }
  if (!m.allowing) {
    a->reason = EGRESS_REASON_PORT_NOT_ALLOWED;
    decide(d, EGRESS_OUTCOME_DENIED, EGRESS_REASON_PORT_NOT_ALLOWED, m.any,
           "%s is allowed only on other ports, not %u", d->host.text, port);
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
    deny_url(d, m.allowing, url, port, scheme_only);
    return;
  }
  m.allowing = by_url;
  a->verdict = EGRESS_VERDICT_ALLOW;
  a->reason = EGRESS_REASON_NONE;
  decide(d, EGRESS_OUTCOME_ALLOWED, EGRESS_REASON_NONE, m.allowing, NULL);
  allowed_message(d, m.allowing, false);
}

/* "host:port:addr,[v6addr]" for CURLOPT_RESOLVE: the vetted addresses only. */
static bool build_curl_resolve(egress_decision_t *d, uint16_t port) {
  size_t cap = d->host.len + 8 + d->naddrs * (EGRESS__IPSTR_MAX + 3);
  char *s = cap <= sizeof d->inline_curl ? d->inline_curl : egress__malloc(cap);
  if (!s) return false;
  char *p = put_text(s, d->host.text, d->host.len);
  *p++ = ':';
  p = egress__put_uint(p, port, 1);
  *p++ = ':';
  bool first = true;
  for (size_t i = 0; i < d->naddrs; i++) {
    const egress__addr_verdict_t *a = &d->addrs[i];
    if (a->verdict != EGRESS_VERDICT_ALLOW) continue;
    if (!first) *p++ = ',';
    if (a->ip.family == 6) *p++ = '[';
    p = put_text(p, a->text, strlen(a->text));
    if (a->ip.family == 6) *p++ = ']';
    first = false;
  }
  *p = '\0';
  d->curl_resolve = s;
  return true;
}


static void check_name(egress_checker_t *c, const egress_policy_t *p, egress_decision_t *d,
                       uint16_t port, const egress__url_ctx_t *url) {
  egress__match_t m;
  egress__match_name(p->matcher[EGRESS_LIST_ALLOW], d->host.text, d->host.len, port, &m);
  if (!m.any) {
    decide(d, EGRESS_OUTCOME_DENIED, EGRESS_REASON_NOT_IN_ALLOWLIST, NULL,
           "%s matches no allowlist entry", d->host.text);
    return;
  }
  if (!m.allowing) {
    decide(d, EGRESS_OUTCOME_DENIED, EGRESS_REASON_PORT_NOT_ALLOWED, m.any,
           "%s is allowed only on other ports, not %u", d->host.text, port);
    return;
  }
  bool scheme_only;
  const egress__rule_t *rule = rule_for(p, &d->host, port, 0, m.allowing, url, &scheme_only);
  if (!rule) {
    deny_url(d, m.allowing, url, port, scheme_only);
    return;
  }

  egress__answer_t ans;
  egress__cache_stats_t cs = {0, 0, 0};
  egress_status_t st = egress__cache_resolve(c->cache, c->resolver, d->host.text, d->host.len, m.name_hash,
                                             &ans, &cs);
  egress__count_add(c, EGRESS_COUNTER_CACHE_HITS, cs.hits);
  egress__count_add(c, EGRESS_COUNTER_CACHE_MISSES, cs.misses);
  egress__count_add(c, EGRESS_COUNTER_DNS_QUERIES, cs.queries);
  d->dns_ms = ans.cached ? 0 : ans.ms;
  if (st != EGRESS_OK || ans.result == EGRESS__DNS_NOMEM) {
    egress__count(c, EGRESS_COUNTER_DNS_FAILURES);
    decide(d, EGRESS_OUTCOME_ENFORCEMENT_UNAVAILABLE, EGRESS_REASON_INTERNAL_ERROR, rule,
           "out of memory while resolving %s", d->host.text);
    goto done;
  }
  if (ans.result == EGRESS__DNS_NO_SUCH_HOST) {
    decide(d, EGRESS_OUTCOME_DENIED, EGRESS_REASON_NO_SUCH_HOST, rule, "%s: %s", d->host.text,
           ans.detail ? ans.detail : "no address");
    goto done;
  }
  if (ans.result != EGRESS__DNS_OK) {
    egress__count(c, EGRESS_COUNTER_DNS_FAILURES);
    decide(d, EGRESS_OUTCOME_ENFORCEMENT_UNAVAILABLE, EGRESS_REASON_DNS_UNAVAILABLE, rule,
           "resolving %s failed: %s", d->host.text, ans.detail ? ans.detail : "DNS error");
    goto done;
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
          decide(d, EGRESS_OUTCOME_ENFORCEMENT_UNAVAILABLE, EGRESS_REASON_INTERNAL_ERROR, rule, NULL);
          goto done;
        }
        d->addrs[d->naddrs - 1].reason = EGRESS_REASON_EXPLICIT_DENY;
      }
      decide(d, EGRESS_OUTCOME_DENIED, EGRESS_REASON_EXPLICIT_DENY, dm.allowing,
             "%s is an alias of %.253s (CNAME), which matches deny-list entry %zu", d->host.text, alias,
             dm.allowing->index);
      goto done;
    }
    off += alen + 1;
  }

  size_t passed = 0;
  const egress__addr_verdict_t *first_bad = NULL;
  egress__vet_t first_bad_v;
  for (size_t i = 0; i < ans.n; i++) {
    egress__ip_t ip = ans.ips[i];
    egress__ip_unmap(&ip);
    if (!add_address(d, &ip, ans.ttls[i], ans.n)) {
      decide(d, EGRESS_OUTCOME_ENFORCEMENT_UNAVAILABLE, EGRESS_REASON_INTERNAL_ERROR, rule, NULL);
      goto done;
    }
    egress__addr_verdict_t *a = &d->addrs[d->naddrs - 1];
    egress__vet_t v;
    egress__vet_address(p, c->opts.pref64, c->opts.n_pref64, &ip, port, &v);
    a->reason = v.reason;
    if (v.reason == EGRESS_REASON_NONE) {
      a->verdict = EGRESS_VERDICT_ALLOW;
      passed++;
    } else if (!first_bad) {
      first_bad = a;
      first_bad_v = v;
    }
  }
  if (first_bad && (c->opts.mixed == EGRESS_MIXED_DENY || passed == 0)) {
    /* Deny-if-any: no address of this answer may be used. */
    for (size_t i = 0; i < d->naddrs; i++)
      if (d->addrs[i].verdict == EGRESS_VERDICT_ALLOW) d->addrs[i].verdict = EGRESS_VERDICT_DENY;
    decide(d, EGRESS_OUTCOME_DENIED, EGRESS_REASON_RESOLVED_ADDRESS_FORBIDDEN,
           first_bad_v.reason == EGRESS_REASON_EXPLICIT_DENY ? first_bad_v.rule : rule,
           "%s resolved to forbidden address %s (%s%s%s)", d->host.text, first_bad->text,
           egress_reason_name(first_bad_v.reason), first_bad_v.detail[0] ? ": " : "",
           first_bad_v.detail);
    goto done;
  }
  if (!d->lean && !d->borrow && !build_curl_resolve(d, port)) {
    decide(d, EGRESS_OUTCOME_ENFORCEMENT_UNAVAILABLE, EGRESS_REASON_INTERNAL_ERROR, rule, NULL);
    goto done;
  }
  decide(d, EGRESS_OUTCOME_ALLOWED, EGRESS_REASON_NONE, rule, NULL);
  allowed_message(d, rule, first_bad != NULL);
done:
  egress__answer_clear(&ans);
}

/* Denied as invalid_host, naming the host as given: cut like the event's
 * destination when longer than any host can be, and with every byte that
 * is not printable ASCII written \xHH, so that a hostile host can neither
 * bloat nor garble a message that ends up in logs and terminals. */
static void deny_invalid_host(egress_decision_t *d, const char *host, const char *why) {
  static const char hex[] = "0123456789abcdef";
  static const char head[] = "invalid host \"";
  decide(d, EGRESS_OUTCOME_DENIED, EGRESS_REASON_INVALID_HOST, NULL, NULL);
  if (d->lean || d->borrow) return;
  char buf[sizeof head + EGRESS__REPORT_HOST_MAX * 4 + EGRESS__REPORT_MARK_MAX + 256];
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
  set_message(d, buf, (size_t)(p - buf));
}

/* Everything up to the verdict; never allocates the decision itself. */
static void check_into(egress_checker_t *c, const egress_policy_t *p, egress_decision_t *d,
                       const char *host, int32_t port, const egress__url_ctx_t *url) {
  const char *why = NULL;
  egress__match_t m;
  if (url && url->nomem) {
    decide(d, EGRESS_OUTCOME_ENFORCEMENT_UNAVAILABLE, EGRESS_REASON_INTERNAL_ERROR, NULL, NULL);
    return;
  }
  if (url && url->invalid) {
    decide(d, EGRESS_OUTCOME_DENIED, EGRESS_REASON_INVALID_HOST, NULL, "invalid URL: %s", url->invalid);
    return;
  }
  if (port < 1 || port > 65535) {
    decide(d, EGRESS_OUTCOME_DENIED, EGRESS_REASON_INVALID_PORT, NULL, "port %ld is outside 1-65535",
           (long)port);
    return;
  }
  if (!host) {
    decide(d, EGRESS_OUTCOME_DENIED, EGRESS_REASON_INVALID_HOST, NULL, "host is NULL");
    return;
  }
  egress_status_t st = egress__canon_host(host, strlen(host), &d->host, &why);
  if (st == EGRESS_ENOMEM) {
    decide(d, EGRESS_OUTCOME_ENFORCEMENT_UNAVAILABLE, EGRESS_REASON_INTERNAL_ERROR, NULL, NULL);
    return;
  }
  if (st != EGRESS_OK) {
    deny_invalid_host(d, host, why);
    return;
  }
  d->has_host = true;
  uint16_t p16 = (uint16_t)port;
  if (d->host.kind == EGRESS__HOST_NAME) {
    egress__match_name(p->matcher[EGRESS_LIST_DENY], d->host.text, d->host.len, p16, &m);
    if (m.allowing) {
      decide(d, EGRESS_OUTCOME_DENIED, EGRESS_REASON_EXPLICIT_DENY, m.allowing,
             "%s matches deny-list entry %zu", d->host.text, m.allowing->index);
      return;
    }
  }
  /* IP literals meet the deny list inside check_literal's vetting. */
  if (p->nrules[EGRESS_LIST_ALLOW] == 0) {
    /* The deny list still wins for literals: report it when it applies. */
    if (d->host.kind != EGRESS__HOST_NAME) {
      egress__match_ip(p->matcher[EGRESS_LIST_DENY], &d->host.ip, p16, 0, &m);
      if (m.allowing) {
        decide(d, EGRESS_OUTCOME_DENIED, EGRESS_REASON_EXPLICIT_DENY, m.allowing,
               "%s matches deny-list entry %zu", d->host.text, m.allowing->index);
        return;
      }
    }
    decide(d, EGRESS_OUTCOME_DENIED, EGRESS_REASON_EMPTY_ALLOWLIST, NULL,
           "the allowlist is empty: every destination is denied");
    return;
  }
  if (d->host.kind == EGRESS__HOST_NAME)
    check_name(c, p, d, p16, url);
  else
    check_literal(p, &c->opts, d, p16, url);
}

static bool copy_context(egress_decision_t *d, const char *host, const egress_request_t *req) {
  if (d->borrowed) {
    /* The caller's strings, valid for as long as the decision is used. */
    d->destination = (char *)host;
    if (req)
      for (int i = 0; i < EGRESS__FIELD_COUNT; i++) d->field[i] = req->field[i];
    return true;
  }
  if (host && !(d->destination = egress__strdup(host))) return false;
  if (req)
    for (int i = 0; i < EGRESS__FIELD_COUNT; i++)
      if (req->field[i] && !(d->field[i] = egress__strdup(req->field[i]))) return false;
  return true;
}

/* Verdict from outcome and mode (README "The check"), then the event. */
static void finish(egress_checker_t *c, egress_decision_t *d, const egress_policy_t *p,
                   double start, bool want_json) {
  d->mode = c->opts.mode;
  d->special_version = egress__special_version;
  if (p)
    memcpy(d->policy_digest, p->digest, sizeof d->policy_digest);
  else
    d->policy_digest[0] = '\0';
  d->would_deny = d->outcome != EGRESS_OUTCOME_ALLOWED;
  bool input_error = d->reason == EGRESS_REASON_INVALID_HOST || d->reason == EGRESS_REASON_INVALID_PORT ||
                     d->reason == EGRESS_REASON_INTERNAL_ERROR;
  if (d->outcome == EGRESS_OUTCOME_ALLOWED)
    d->verdict = EGRESS_VERDICT_ALLOW;
  else if (d->mode == EGRESS_MODE_MONITOR && !input_error)
    d->verdict = EGRESS_VERDICT_ALLOW;
  else
    d->verdict = EGRESS_VERDICT_DENY;

  if (!d->lean) d->latency_ms = mono_ms() - start;
  bool sink = egress__sink_active(c->sink);
  if (sink || want_json) {
    int delivered = -1;
    if (egress__event_stamp(d) == EGRESS_OK) {
      /* egress_check keeps no decision: deliver straight from the
       * per-thread print buffer, no copy of the text.  Not to a callback,
       * whose code may check again on this thread and reuse the buffer. */
      size_t len = 0;
      const char *text = d->borrow && !c->opts.event_cb ? egress__event_print(d, c->opts.event_source, &len)
                                                         : NULL;
      if (text) {
        delivered = egress__sink_deliver(c->sink, text, len, d);
      } else {
        d->event_json = egress__event_build(d, c->opts.event_source);
        if (d->event_json)
          delivered = egress__sink_deliver(c->sink, d->event_json, strlen(d->event_json), d);
      }
    }
    if (sink) {
      if (delivered == 0) {
        egress__count(c, EGRESS_COUNTER_EVENTS_EMITTED);
      } else {
        egress__count(c, EGRESS_COUNTER_EVENTS_FAILED);
        if (c->opts.audit_required) {
          /* No audit record, no connection: whatever the policy said. */
          d->verdict = EGRESS_VERDICT_DENY;
          d->outcome = EGRESS_OUTCOME_ENFORCEMENT_UNAVAILABLE;
          d->reason = EGRESS_REASON_AUDIT_UNAVAILABLE;
          d->would_deny = true;
          static const char audit_msg[] = "the decision event could not be delivered and audit is required";
          set_message(d, audit_msg, sizeof audit_msg - 1);
          for (size_t i = 0; i < d->naddrs; i++) {
            d->addrs[i].verdict = EGRESS_VERDICT_DENY;
            if (d->addrs[i].reason == EGRESS_REASON_NONE) d->addrs[i].reason = EGRESS_REASON_AUDIT_UNAVAILABLE;
          }
          /* The decision's own event text must say what was decided. */
          egress__free(d->event_json);
          d->event_json = egress__event_build(d, c->opts.event_source);
        }
      }
    }
  }
  egress__count(c, EGRESS_COUNTER_CHECKS);
  egress__count_check(c, d->outcome, d->reason);
}

/* What a check makes beyond the verdict: the event text is only built when a
 * sink or the caller wants it; egress_check with no sink makes no text. */
enum { RUN_LEAN = 0, RUN_FULL = 1, RUN_TEXT = 2 };

static egress_status_t run_check(egress_checker_t *c, const char *host, int32_t port,
                                 const egress__url_ctx_t *url, const egress_request_t *req,
                                 egress_decision_t *d, int want) {
  bool want_json = want == RUN_FULL;
  d->lean = want == RUN_LEAN && !egress__sink_active(c->sink);
  d->borrow = want == RUN_LEAN && !d->lean;
  double start = d->lean ? 0 : mono_ms();
  d->port = port;
  d->verdict = EGRESS_VERDICT_DENY;
  /* A callback sink runs user code, which may check again on this thread
   * and replace the thread's slot: hold a reference of our own then. */
  bool own = c->opts.event_cb != NULL;
  egress_policy_t *p = own ? egress__policy_acquire(c) : egress__policy_borrow(c);
  /* Borrow strings only while something else keeps them alive past the
   * check: the thread's policy slot (not our own, dropped below) and the
   * caller of egress_check, which reads nothing of the decision after. */
  d->borrowed = d->borrow;
  egress_status_t st = EGRESS_OK;
  if (!d->lean && !copy_context(d, host, req)) {
    decide(d, EGRESS_OUTCOME_ENFORCEMENT_UNAVAILABLE, EGRESS_REASON_INTERNAL_ERROR, NULL, NULL);
    st = EGRESS_ENOMEM;
  } else if (req && req->refusal) {
    /* Refused by the caller: recorded, never resolved or matched. */
    decide(d, EGRESS_OUTCOME_DENIED, req->refusal_reason, NULL, "%s", req->refusal);
  } else {
    check_into(c, p, d, host, port, url);
    if (d->reason == EGRESS_REASON_INTERNAL_ERROR) st = EGRESS_ENOMEM;
  }
  finish(c, d, p, start, want_json);
  if (own) egress_policy_unref(p);
  if (st != EGRESS_OK) d->verdict = EGRESS_VERDICT_DENY;
  return st;
}

egress_verdict_t egress_check(egress_checker_t *checker, const char *host, uint16_t port) {
  egress_decision_t d;
  if (!checker) return EGRESS_VERDICT_DENY;
  memset(&d, 0, EGRESS__DECISION_ZERO_SIZE);
  egress_status_t st = run_check(checker, host, port, NULL, NULL, &d, RUN_LEAN);
  egress_verdict_t verdict = st == EGRESS_OK ? d.verdict : EGRESS_VERDICT_DENY;
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
  if (!checker) {
    d->port = port;
    decide(d, EGRESS_OUTCOME_ENFORCEMENT_UNAVAILABLE, EGRESS_REASON_INTERNAL_ERROR, NULL, "checker is NULL");
    return EGRESS_EINVAL;
  }
  return run_check(checker, host, port, NULL, req, d, RUN_FULL);
}

egress_status_t egress_decision_new(egress_decision_t **out) {
  if (!out) return EGRESS_EINVAL;
  *out = egress__calloc(1, sizeof(**out));
  if (!*out) return EGRESS_ENOMEM;
  /* An unused decision reads as a deny: it was never checked. */
  (*out)->outcome = EGRESS_OUTCOME_ENFORCEMENT_UNAVAILABLE;
  (*out)->reason = EGRESS_REASON_INTERNAL_ERROR;
  return EGRESS_OK;
}

egress_status_t egress_check_into(egress_checker_t *checker, const char *host, int32_t port,
                                  const egress_request_t *req, egress_decision_t *d) {
  if (!d) return EGRESS_EINVAL;
  /* Nothing of the previous check survives into this one. */
  egress__decision_release(d);
  memset(d, 0, EGRESS__DECISION_ZERO_SIZE);
  if (!checker) {
    d->port = port;
    decide(d, EGRESS_OUTCOME_ENFORCEMENT_UNAVAILABLE, EGRESS_REASON_INTERNAL_ERROR, NULL, "checker is NULL");
    return EGRESS_EINVAL;
  }
  return run_check(checker, host, port, NULL, req, d, RUN_TEXT);
}

egress_status_t egress__check_url_parts(egress_checker_t *c, const char *host, int32_t port,
                                        const egress__url_ctx_t *url, const egress_request_t *req,
                                        egress_decision_t *d) {
  if (!c) {
    decide(d, EGRESS_OUTCOME_ENFORCEMENT_UNAVAILABLE, EGRESS_REASON_INTERNAL_ERROR, NULL, "checker is NULL");
    return EGRESS_EINVAL;
  }
  return run_check(c, host, port, url, req, d, RUN_FULL);
}
