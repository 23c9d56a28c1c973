/*
 * Address vetting: whether one address may be reached at all, apart from
 * which allow rule names it.  The check vets every literal and every
 * resolved address with it, and egressctl render asks the same question of
 * whole prefixes, so the rule lives here once (README "The check").
 */
#include "egress_private.h"

#include <stdio.h>

/* Only the header: the detail text is written before it is read, and
 * zeroing all of it costs more than the rest of a cached check. */
static void vet_clear(egress__vet_t *v) {
  v->reason = EGRESS_REASON_NONE;
  v->rule = NULL;
  v->opener = NULL;
  v->elsewhere = NULL;
  v->open_len = 0;
  v->detail[0] = '\0';
}

void egress__vet_address(const egress_policy_t *p, const egress__prefix_t *pref64, size_t n_pref64,
                         const egress__ip_t *ip, uint16_t port, egress__vet_t *v) {
  egress__match_t m;
  egress__special_info_t info;
  vet_clear(v);
  egress__match_ip(p->matcher[EGRESS_LIST_DENY], ip, port, 0, &m);
  if (m.allowing) {
    v->reason = EGRESS_REASON_EXPLICIT_DENY;
    v->rule = m.allowing;
    return;
  }
  egress__special_classify(ip, &info);
  if (!info.global) {
    v->open_len = info.open_len;
    egress__match_ip(p->matcher[EGRESS_LIST_ALLOW], ip, port, info.open_len, &m);
    if (!m.allowing) {
      v->reason = EGRESS_REASON_SPECIAL_PURPOSE_ADDRESS;
      v->elsewhere = m.any;
      snprintf(v->detail, sizeof v->detail, "%s", info.block ? info.block->name : "special-purpose");
      return;
    }
    v->opener = m.allowing;
  }
  if (ip->family != 6) return;
  /* An IPv6 address that carries an IPv4 one reaches that IPv4 address
   * through a translator, so it is vetted as that address too.  The
   * embedded addresses are IPv4: this recurses once at most. */
  egress__ip_t embedded[2];
  size_t n = egress__embedded_ipv4(ip, pref64, n_pref64, embedded);
  for (size_t i = 0; i < n; i++) {
    egress__vet_t inner;
    egress__vet_address(p, pref64, n_pref64, &embedded[i], port, &inner);
    if (inner.reason != EGRESS_REASON_NONE) {
      char text[EGRESS__IPSTR_MAX];
      egress__ip_format(&embedded[i], text, sizeof text);
      v->reason = inner.reason;
      v->rule = inner.rule;
      v->elsewhere = inner.elsewhere;
      snprintf(v->detail, sizeof v->detail, "embedded IPv4 %.46s: %.64s", text,
               inner.detail[0] ? inner.detail : egress_reason_name(inner.reason));
      return;
    }
  }
}
