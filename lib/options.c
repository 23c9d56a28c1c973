/*
 * Checker options: what a caller sets before egress_checker_new, kept apart
 * from the checker so that the defaults are written once and every setter
 * validates in one place (README "C API").
 */
#include "egress_private.h"
#include "resolve.h"

#include <stdlib.h>
#include <string.h>

/* The defaults README documents for egress_options_new and for a checker
 * made with no options at all. */
void egress__options_defaults(egress_options_t *o) {
  memset(o, 0, sizeof *o);
  o->mode = EGRESS_MODE_ENFORCE;
  o->mixed = EGRESS_MIXED_DENY;
  o->timeout_ms = 2000;
  o->cache_max = 4096;
  o->cache_min_ttl = 5;
  o->cache_max_ttl = 300;
  o->cache_neg_ttl = 5;
  o->event_fd = -1;
}

egress_status_t egress_options_new(egress_options_t **out) {
  if (!out) return EGRESS_EINVAL;
  egress_options_t *o = egress__calloc(1, sizeof(*o));
  *out = o;
  if (!o) return EGRESS_ENOMEM;
  egress__options_defaults(o);
  return EGRESS_OK;
}

void egress__options_clear(egress_options_t *o) {
  egress__free(o->dns_servers);
  egress__free(o->hosts_file);
  egress__free(o->resolv_conf);
  egress__free(o->event_source);
  egress__free(o->event_path);
}

void egress_options_free(egress_options_t *opts) {
  if (!opts) return;
  egress__options_clear(opts);
  egress__free(opts);
}

static egress_status_t replace_string(char **slot, const char *value) {
  char *copy = NULL;
  if (value && !(copy = egress__strdup(value))) return EGRESS_ENOMEM;
  egress__free(*slot);
  *slot = copy;
  return EGRESS_OK;
}

egress_status_t egress_options_set_mode(egress_options_t *opts, egress_mode_t mode) {
  if (!opts || (mode != EGRESS_MODE_ENFORCE && mode != EGRESS_MODE_MONITOR)) return EGRESS_EINVAL;
  opts->mode = mode;
  return EGRESS_OK;
}

egress_status_t egress_options_set_mixed(egress_options_t *opts, egress_mixed_t mixed) {
  if (!opts || (mixed != EGRESS_MIXED_DENY && mixed != EGRESS_MIXED_FILTER)) return EGRESS_EINVAL;
  opts->mixed = mixed;
  return EGRESS_OK;
}

egress_status_t egress_options_set_dns_servers(egress_options_t *opts, const char *servers) {
  if (!opts) return EGRESS_EINVAL;
  /* Refused here, the options unchanged; egress_checker_new checks again
   * and its errbuf names the bad entry. */
  const char *why;
  size_t bad, bad_len;
  if (servers && *servers && !egress__dns_servers_valid(servers, &why, &bad, &bad_len)) return EGRESS_EINVAL;
  return replace_string(&opts->dns_servers, servers && *servers ? servers : NULL);
}

egress_status_t egress_options_set_hosts_file(egress_options_t *opts, const char *path) {
  if (!opts) return EGRESS_EINVAL;
  return replace_string(&opts->hosts_file, path);
}

egress_status_t egress__options_set_resolv_conf(egress_options_t *opts, const char *path) {
  if (!opts) return EGRESS_EINVAL;
  return replace_string(&opts->resolv_conf, path);
}

egress_status_t egress_options_set_timeout_ms(egress_options_t *opts, uint32_t timeout_ms) {
  if (!opts || timeout_ms < 1 || timeout_ms > 600000) return EGRESS_EINVAL;
  opts->timeout_ms = timeout_ms;
  return EGRESS_OK;
}

egress_status_t egress_options_set_cache(egress_options_t *opts, uint32_t max_entries, uint32_t min_ttl_s,
                                         uint32_t max_ttl_s, uint32_t negative_ttl_s) {
  if (!opts || min_ttl_s > max_ttl_s) return EGRESS_EINVAL;
  opts->cache_max = max_entries;
  opts->cache_min_ttl = min_ttl_s;
  opts->cache_max_ttl = max_ttl_s;
  opts->cache_neg_ttl = negative_ttl_s;
  return EGRESS_OK;
}

egress_status_t egress_options_add_pref64(egress_options_t *opts, const char *prefix) {
  if (!opts || !prefix) return EGRESS_EINVAL;
  if (opts->n_pref64 >= EGRESS__MAX_PREF64) return EGRESS_ERANGE;
  const char *slash = strchr(prefix, '/');
  if (!slash || slash == prefix) return EGRESS_EINVAL;
  egress__prefix_t p;
  memset(&p, 0, sizeof p);
  if (!egress__ip6_parse(prefix, (size_t)(slash - prefix), &p.addr)) return EGRESS_EINVAL;
  const char *len = slash + 1;
  uint32_t bits = 0;
  if (egress__parse_decimal(len, strlen(len), false, 128, &bits) != EGRESS__DEC_OK) return EGRESS_EINVAL;
  /* The RFC 6052 prefix lengths. */
  if (bits != 32 && bits != 40 && bits != 48 && bits != 56 && bits != 64 && bits != 96) return EGRESS_EINVAL;
  p.len = (uint8_t)bits;
  for (uint32_t b = bits; b < 128; b++)
    if (p.addr.bytes[b / 8] & (0x80 >> (b % 8))) return EGRESS_EINVAL;
  opts->pref64[opts->n_pref64++] = p;
  return EGRESS_OK;
}

egress_status_t egress_options_set_event_source(egress_options_t *opts, const char *source) {
  if (!opts) return EGRESS_EINVAL;
  return replace_string(&opts->event_source, source);
}

static void clear_sinks(egress_options_t *opts) {
  opts->event_cb = NULL;
  opts->event_cb_data = NULL;
  opts->event_fd = -1;
  egress__free(opts->event_path);
  opts->event_path = NULL;
}

egress_status_t egress_options_set_event_callback(egress_options_t *opts, egress_event_cb cb,
                                                  void *user_data) {
  if (!opts) return EGRESS_EINVAL;
  clear_sinks(opts);
  opts->event_cb = cb;
  opts->event_cb_data = cb ? user_data : NULL;
  return EGRESS_OK;
}

egress_status_t egress_options_set_event_fd(egress_options_t *opts, int fd) {
  if (!opts || fd < -1) return EGRESS_EINVAL;
  clear_sinks(opts);
  opts->event_fd = fd;
  return EGRESS_OK;
}

egress_status_t egress_options_set_event_path(egress_options_t *opts, const char *path) {
  if (!opts) return EGRESS_EINVAL;
  char *copy = NULL;
  if (path && !(copy = egress__strdup(path))) return EGRESS_ENOMEM;
  clear_sinks(opts);
  opts->event_path = copy;
  return EGRESS_OK;
}

egress_status_t egress_options_set_audit_required(egress_options_t *opts, bool required) {
  if (!opts) return EGRESS_EINVAL;
  opts->audit_required = required;
  return EGRESS_OK;
}

egress_status_t egress__options_copy(const egress_options_t *src, egress_options_t *dst) {
  *dst = *src;
  dst->dns_servers = dst->hosts_file = dst->resolv_conf = dst->event_source = dst->event_path = NULL;
  if ((src->dns_servers && !(dst->dns_servers = egress__strdup(src->dns_servers))) ||
      (src->hosts_file && !(dst->hosts_file = egress__strdup(src->hosts_file))) ||
      (src->resolv_conf && !(dst->resolv_conf = egress__strdup(src->resolv_conf))) ||
      (src->event_source && !(dst->event_source = egress__strdup(src->event_source))) ||
      (src->event_path && !(dst->event_path = egress__strdup(src->event_path)))) {
    egress__options_clear(dst);
    return EGRESS_ENOMEM;
  }
  return EGRESS_OK;
}
