/*
 * Decisions and request contexts: plain single-thread objects with
 * accessors.  Every accessor reads a NULL decision as "deny, internal
 * error", so a caller that lost its decision to an allocation failure still
 * reads a deny.
 */
#include "egress_private.h"

#include <string.h>

egress_status_t egress_request_new(egress_request_t **out) {
  if (!out) return EGRESS_EINVAL;
  *out = egress__calloc(1, sizeof(**out));
  return *out ? EGRESS_OK : EGRESS_ENOMEM;
}

void egress_request_free(egress_request_t *req) {
  if (!req) return;
  for (int i = 0; i < EGRESS__FIELD_COUNT; i++) egress__free(req->field[i]);
  egress__free(req->refusal);
  egress__free(req);
}

egress_status_t egress_request_refuse(egress_request_t *req, egress_reason_t reason, const char *message) {
  if (!req || (reason != EGRESS_REASON_INVALID_HOST && reason != EGRESS_REASON_INVALID_PORT))
    return EGRESS_EINVAL;
  char *copy = NULL;
  if (message && !(copy = egress__strdup(message))) return EGRESS_ENOMEM;
  egress__free(req->refusal);
  req->refusal = copy;
  req->refusal_reason = reason;
  return EGRESS_OK;
}

egress_status_t egress_request_set(egress_request_t *req, egress_field_t field, const char *value) {
  if (!req || (int)field < 0 || (int)field >= EGRESS__FIELD_COUNT) return EGRESS_EINVAL;
  char *copy = NULL;
  if (value) {
    size_t len = strnlen(value, 1025);
    if (len > 1024) return EGRESS_EINVAL;
    for (size_t i = 0; i < len; i++)
      if ((unsigned char)value[i] < 0x20 || value[i] == 0x7f) return EGRESS_EINVAL;
    /* A caller that fills one request for every check sets the same
     * values again and again (a gateway's method, a worker's ids). */
    if (req->field[field] && !strcmp(req->field[field], value)) return EGRESS_OK;
    if (!(copy = egress__strndup(value, len))) return EGRESS_ENOMEM;
  }
  egress__free(req->field[field]);
  req->field[field] = copy;
  return EGRESS_OK;
}

egress_status_t egress__request_copy(const egress_request_t *req, egress_request_t **out) {
  *out = NULL;
  if (!req) return EGRESS_OK;
  egress_request_t *copy = egress__calloc(1, sizeof(*copy));
  if (!copy) return EGRESS_ENOMEM;
  bool ok = true;
  for (int i = 0; i < EGRESS__FIELD_COUNT; i++)
    if (req->field[i] && !(copy->field[i] = egress__strdup(req->field[i]))) ok = false;
  if (req->refusal && !(copy->refusal = egress__strdup(req->refusal))) ok = false;
  copy->refusal_reason = req->refusal_reason;
  if (!ok) {
    egress_request_free(copy);
    return EGRESS_ENOMEM;
  }
  *out = copy;
  return EGRESS_OK;
}

void egress__decision_release(egress_decision_t *d) {
  egress__free(d->t.owned);
  egress__free(d->t.url);
  egress__free(d->t.event_json);
  if (d->v.addrs != d->inline_addrs) egress__free(d->v.addrs);
}

void egress_decision_free(egress_decision_t *d) {
  if (!d) return;
  egress__decision_release(d);
  egress__free(d);
}

egress_verdict_t egress_decision_verdict(const egress_decision_t *d) {
  return d && d->v.verdict == EGRESS_VERDICT_ALLOW ? EGRESS_VERDICT_ALLOW : EGRESS_VERDICT_DENY;
}
egress_outcome_t egress_decision_outcome(const egress_decision_t *d) {
  return d ? d->v.outcome : EGRESS_OUTCOME_ENFORCEMENT_UNAVAILABLE;
}
egress_reason_t egress_decision_reason(const egress_decision_t *d) {
  return d ? d->v.reason : EGRESS_REASON_INTERNAL_ERROR;
}
const char *egress_decision_message(const egress_decision_t *d) {
  if (!d) return egress_reason_message(EGRESS_REASON_INTERNAL_ERROR);
  return d->t.message ? d->t.message : egress_reason_message(d->v.reason);
}
const char *egress_decision_destination_host(const egress_decision_t *d) {
  return d ? d->t.destination : NULL;
}
const char *egress_decision_url(const egress_decision_t *d) { return d ? d->t.url : NULL; }
const char *egress_decision_host(const egress_decision_t *d) {
  return d && d->v.has_host ? d->host.text : NULL;
}
int32_t egress_decision_port(const egress_decision_t *d) { return d ? d->v.port : 0; }
egress_mode_t egress_decision_mode(const egress_decision_t *d) { return d ? d->v.mode : EGRESS_MODE_ENFORCE; }
bool egress_decision_has_rule(const egress_decision_t *d) { return d && d->v.has_rule; }
egress_list_t egress_decision_rule_list(const egress_decision_t *d) {
  return d ? d->v.rule_list : EGRESS_LIST_ALLOW;
}
size_t egress_decision_rule_index(const egress_decision_t *d) { return d ? d->v.rule_index : 0; }
const char *egress_decision_rule_text(const egress_decision_t *d) {
  return d && d->v.has_rule ? d->t.rule_text : NULL;
}
size_t egress_decision_address_count(const egress_decision_t *d) { return d ? d->v.naddrs : 0; }
const char *egress_decision_address(const egress_decision_t *d, size_t i) {
  return d && i < d->v.naddrs ? d->v.addrs[i].text : NULL;
}
egress_verdict_t egress_decision_address_verdict(const egress_decision_t *d, size_t i) {
  return d && i < d->v.naddrs ? d->v.addrs[i].verdict : EGRESS_VERDICT_DENY;
}
egress_reason_t egress_decision_address_reason(const egress_decision_t *d, size_t i) {
  return d && i < d->v.naddrs ? d->v.addrs[i].reason : EGRESS_REASON_INTERNAL_ERROR;
}
int32_t egress_decision_address_ttl(const egress_decision_t *d, size_t i) {
  return d && i < d->v.naddrs ? d->v.addrs[i].ttl : -1;
}
const void *egress_decision_address_sockaddr(const egress_decision_t *d, size_t i, size_t *len) {
  if (!d || i >= d->v.naddrs) {
    if (len) *len = 0;
    return NULL;
  }
  if (len) *len = d->v.addrs[i].sa_len;
  return &d->v.addrs[i].sa;
}
const char *egress_decision_curl_resolve(const egress_decision_t *d) {
  return d && d->v.verdict == EGRESS_VERDICT_ALLOW ? d->t.curl_resolve : NULL;
}
double egress_decision_dns_ms(const egress_decision_t *d) { return d ? d->v.dns_ms : 0; }
double egress_decision_latency_ms(const egress_decision_t *d) { return d ? d->v.latency_ms : 0; }
const char *egress_decision_policy_digest(const egress_decision_t *d) {
  return d && d->policy_digest[0] ? d->policy_digest : NULL;
}
const char *egress_decision_event_json(const egress_decision_t *d) { return d ? d->t.event_json : NULL; }

const char *egress_decision_event_id(const egress_decision_t *d) {
  return d && d->v.stamped ? d->event_id : NULL;
}
char *egress_decision_to_json(const egress_decision_t *d) { return d ? egress__decision_json(d) : NULL; }
