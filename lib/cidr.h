/* CIDR sets (cidr.c): private to match.c and cidr.c. */
#ifndef EGRESS_CIDR_H
#define EGRESS_CIDR_H

#include "egress_private.h"

typedef struct egress__cidrset egress__cidrset_t;

egress_status_t egress__cidrset_new(egress__cidrset_t **out);
egress_status_t egress__cidrset_add(egress__cidrset_t *set, const egress__rule_t *rule);
void egress__cidrset_free(egress__cidrset_t *set);
/* After the last add: build the per-level filters that let lookups skip
 * levels holding no prefix for an address. */
egress_status_t egress__cidrset_seal(egress__cidrset_t *set);
/* Fold every rule containing ip (prefix length >= min_len) into res, keeping
 * the lowest-index rule for "any" and for "allowing" (port in range). */
void egress__cidrset_match(const egress__cidrset_t *set, const egress__ip_t *ip, uint16_t port,
                           uint8_t min_len, egress__match_t *res);

#endif
