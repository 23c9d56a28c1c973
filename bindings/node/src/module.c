/*
 * egress_node: the Node-API addon behind bindings/node/index.js.
 *
 * The JS side owns the API shape; the addon only moves values across.  This
 * file holds the functions the module exports, each reading its arguments
 * (convert.c), acting on a checker (lifetime.c) and handing back a decision
 * (packed.c) or a plain value, and the module's registration.
 */
#include "addon.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static napi_status set_str(napi_env env, napi_value arr, uint32_t i, const char *s) {
  napi_value v;
  napi_status st = s ? napi_create_string_utf8(env, s, NAPI_AUTO_LENGTH, &v) : napi_get_null(env, &v);
  return st == napi_ok ? napi_set_element(env, arr, i, v) : st;
}

/* setup(builder, numbers: Float64Array) */
static napi_value js_setup(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  napi_valuetype t;
  NAPI_CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 2 || napi_typeof(env, argv[0], &t) != napi_ok || t != napi_function)
    return throw_type(env, "setup(builder, numbers)");
  return instance_setup(env, argv[0], argv[1]);
}

/* layout() -> the packed layout and the context keys, by name (packed.c) */
static napi_value js_layout(napi_env env, napi_callback_info info) {
  (void)info;
  return packed_layout(env);
}

static egress_status_t apply_options(napi_env env, napi_value o, egress_options_t *opts, char *err,
                                     size_t errlen, bool *js_error) {
  bool ok, present, b;
  double num;
  char *s = NULL;
  egress_status_t st = EGRESS_OK;
  *js_error = true;
#define STR_OPT(key, setter)                                                      \
  do {                                                                            \
    s = get_opt_string(env, o, key, &ok);                                         \
    if (!ok) return EGRESS_EINVAL;                                                \
    if (s) {                                                                      \
      st = setter(opts, s);                                                       \
      if (st != EGRESS_OK) snprintf(err, errlen, "invalid %s: '%.200s'", key, s); \
      free(s);                                                                    \
      s = NULL;                                                                   \
      if (st != EGRESS_OK) {                                                      \
        *js_error = false;                                                        \
        return st;                                                                \
      }                                                                           \
    }                                                                             \
  } while (0)
  STR_OPT("dnsServers", egress_options_set_dns_servers);
  STR_OPT("hostsFile", egress_options_set_hosts_file);
  STR_OPT("eventSource", egress_options_set_event_source);
  STR_OPT("eventsPath", egress_options_set_event_path);
#undef STR_OPT
  if (!get_opt_bool(env, o, "monitor", &b)) return EGRESS_EINVAL;
  egress_options_set_mode(opts, b ? EGRESS_MODE_MONITOR : EGRESS_MODE_ENFORCE);
  if (!get_opt_bool(env, o, "filter", &b)) return EGRESS_EINVAL;
  egress_options_set_mixed(opts, b ? EGRESS_MIXED_FILTER : EGRESS_MIXED_DENY);
  if (!get_opt_bool(env, o, "auditRequired", &b)) return EGRESS_EINVAL;
  egress_options_set_audit_required(opts, b);
  if (!get_opt_number(env, o, "timeoutMs", &present, &num)) return EGRESS_EINVAL;
  if (present) {
    if (!(num >= 1 && num <= 600000)) {
      snprintf(err, errlen, "timeoutMs must be between 1 and 600000");
      *js_error = false;
      return EGRESS_EINVAL;
    }
    egress_options_set_timeout_ms(opts, (uint32_t)num);
  }
  /* cache: [maxEntries, minTtl, maxTtl, negativeTtl], validated by index.js */
  napi_value cache;
  bool is_arr = false;
  if (napi_get_named_property(env, o, "cache", &cache) != napi_ok) return EGRESS_EINVAL;
  if (!is_nullish(env, cache) && napi_is_array(env, cache, &is_arr) == napi_ok && is_arr) {
    uint32_t c[4];
    for (uint32_t i = 0; i < 4; i++) {
      napi_value v;
      if (napi_get_element(env, cache, i, &v) != napi_ok || napi_get_value_uint32(env, v, &c[i]) != napi_ok)
        return EGRESS_EINVAL;
    }
    if ((st = egress_options_set_cache(opts, c[0], c[1], c[2], c[3])) != EGRESS_OK) {
      snprintf(err, errlen, "invalid cache options: minTtl must not exceed maxTtl");
      *js_error = false;
      return st;
    }
  }
  napi_value pref;
  if (napi_get_named_property(env, o, "pref64", &pref) != napi_ok) return EGRESS_EINVAL;
  if (!is_nullish(env, pref) && napi_is_array(env, pref, &is_arr) == napi_ok && is_arr) {
    uint32_t n = 0;
    if (napi_get_array_length(env, pref, &n) != napi_ok) return EGRESS_EINVAL;
    for (uint32_t i = 0; i < n; i++) {
      napi_value v;
      if (napi_get_element(env, pref, i, &v) != napi_ok) return EGRESS_EINVAL;
      if (!(s = get_string(env, v, "pref64 entry", false))) return EGRESS_EINVAL;
      st = egress_options_add_pref64(opts, s);
      if (st != EGRESS_OK) {
        snprintf(err, errlen, "invalid pref64 prefix \"%.100s\"%s", s,
                 st == EGRESS_ERANGE ? ": at most 8 prefixes" : "");
        free(s);
        *js_error = false;
        return st;
      }
      free(s);
    }
  }
  *js_error = false;
  return EGRESS_OK;
}

/*
 * create({policyJson?, policyFile?, monitor, filter, dnsServers, hostsFile,
 *         timeoutMs, cache, pref64, auditRequired, eventSource, eventsPath,
 *         eventQueueSize}, onEvent?) -> handle
 */
static napi_value js_create(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2], handle = NULL;
  char err[EGRESS_ERRBUF_SIZE] = "";
  egress_policy_t *policy = NULL;
  egress_options_t *opts = NULL;
  egress_status_t st;
  bool ok, js_error = false;
  char *json = NULL, *file = NULL;
  size_t json_len = 0;
  NAPI_CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 1 || is_nullish(env, argv[0])) return throw_type(env, "options are required");

  napi_value pj;
  if (napi_get_named_property(env, argv[0], "policyJson", &pj) != napi_ok) goto done;
  if (!is_nullish(env, pj) && !(json = js_string(env, pj, "policy", false, MAX_POLICY, &json_len))) goto done;
  file = get_opt_string(env, argv[0], "policyFile", &ok);
  if (!ok) goto done;
  if (json)
    st = egress_policy_from_json(json, json_len, &policy, err, sizeof err);
  else if (file)
    st = egress_policy_from_file(file, &policy, err, sizeof err);
  else {
    throw_type(env, "a policy or a policyFile is required");
    goto done;
  }
  if (st != EGRESS_OK) {
    throw_status(env, st, err);
    goto done;
  }
  if ((st = egress_options_new(&opts)) != EGRESS_OK) {
    throw_status(env, st, NULL);
    goto done;
  }
  st = apply_options(env, argv[0], opts, err, sizeof err, &js_error);
  if (st != EGRESS_OK || js_error) {
    if (!js_error) throw_status(env, st, err);
    goto done;
  }
  napi_valuetype t = napi_undefined;
  if (argc >= 2) napi_typeof(env, argv[1], &t);
  napi_value listener = NULL;
  double qsize = 65536;
  if (t == napi_function) {
    bool present;
    if (!get_opt_number(env, argv[0], "eventQueueSize", &present, &qsize)) goto done;
    if (!present) qsize = 65536;
    listener = argv[1];
  }
  handle = checker_handle_new(env, policy, opts, listener, (size_t)qsize);
done:
  egress_options_free(opts);
  egress_policy_unref(policy);
  free(json);
  free(file);
  return handle;
}

/* checkSync(handle, host, port, ctx) -> packed string fields (numbers filled) */
static napi_value js_check_sync(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4], result = NULL;
  egress_request_t *req = NULL;
  char small[SMALL_BYTES];
  char *host = NULL;
  int32_t port;
  double wide = 0;
  NAPI_CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  instance_t *inst = instance(env);
  nchecker_t *nc = argc >= 3 ? get_checker(env, argv[0]) : NULL;
  if (!nc || !inst) goto done;
  if (!(host = js_string_small(env, argv[1], "host", true, small)) || !get_port(env, argv[2], &port, &wide))
    goto done;
  if ((argc >= 4 && !make_request(env, argv[3], &req)) || !refuse_wide_port(env, wide, &req)) goto done;
  sync_checking = true;
  egress_status_t st = egress_check_into(nc->checker, host, port, req, inst->sync_decision);
  sync_checking = false;
  sync_event_ref(env, nc);
  /* A check that failed still left a deny in the decision, which says why. */
  if (st != EGRESS_OK && egress_decision_verdict(inst->sync_decision) != EGRESS_VERDICT_DENY)
    throw_status(env, st, NULL);
  else
    result = emit_packed(env, inst, inst->sync_decision);
done:
  egress_request_free(req);
  if (host != small) free(host);
  return result;
}

/* lastPacked() -> the packed string fields of the last decision, for a
 * builder whose memo slot does not hold the tag the addon named. */
static napi_value js_last_packed(napi_env env, napi_callback_info info) {
  (void)info;
  return last_packed(env, instance(env));
}

/* checkUrlSync(handle, url, ctx) -> packed string fields (numbers filled) */
static napi_value js_check_url_sync(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3], result = NULL;
  egress_request_t *req = NULL;
  egress_decision_t *d = NULL;
  char *url = NULL;
  NAPI_CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  instance_t *inst = instance(env);
  nchecker_t *nc = argc >= 2 ? get_checker(env, argv[0]) : NULL;
  if (!nc || !inst) goto done;
  if (!(url = get_string(env, argv[1], "url", true))) goto done;
  if (argc >= 3 && !make_request(env, argv[2], &req)) goto done;
  sync_checking = true;
  egress_status_t st = egress_check_url(nc->checker, url, req, &d);
  sync_checking = false;
  sync_event_ref(env, nc);
  if (!d) {
    throw_status(env, st, "could not allocate the decision: denied");
    goto done;
  }
  result = emit_packed(env, inst, d);
done:
  egress_decision_free(d);
  egress_request_free(req);
  free(url);
  return result;
}

/* checkAsync(handle, host|null, port, ctx, url|undefined) -> Promise, on
 * this environment's event loop (lifetime.c) */
static napi_value js_check_async(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5], promise = NULL;
  egress_request_t *req = NULL;
  char small[SMALL_BYTES];
  char *host = NULL, *url = NULL;
  int32_t port = 0;
  double wide = 0;
  NAPI_CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 5) return throw_type(env, "checkAsync(handle, host, port, ctx, url)");
  nchecker_t *nc = get_checker(env, argv[0]);
  if (!nc) return NULL;
  if (!is_nullish(env, argv[4])) {
    if (!(url = get_string(env, argv[4], "url", true))) goto done;
  } else {
    if (!(host = js_string_small(env, argv[1], "host", true, small)) || !get_port(env, argv[2], &port, &wide))
      goto done;
  }
  if (!make_request(env, argv[3], &req) || !refuse_wide_port(env, wide, &req)) goto done;
  promise = check_start(env, nc, host, port, url, req);
done:
  egress_request_free(req);
  if (host != small) free(host);
  free(url);
  return promise;
}

/* setPolicy(handle, json) */
static napi_value js_set_policy(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  char err[EGRESS_ERRBUF_SIZE] = "";
  egress_policy_t *p = NULL;
  NAPI_CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  nchecker_t *nc = argc >= 2 ? get_checker(env, argv[0]) : NULL;
  if (!nc) return NULL;
  size_t json_len = 0;
  char *json = js_string(env, argv[1], "policy", false, MAX_POLICY, &json_len);
  if (!json) return NULL;
  egress_status_t st = egress_policy_from_json(json, json_len, &p, err, sizeof err);
  free(json);
  if (st != EGRESS_OK) return throw_status(env, st, err);
  st = egress_checker_set_policy(nc->checker, p);
  egress_policy_unref(p);
  if (st != EGRESS_OK) return throw_status(env, st, NULL);
  return NULL;
}

/* reloadFile(handle, path) -> changed */
static napi_value js_reload_file(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2], result;
  char err[EGRESS_ERRBUF_SIZE] = "";
  bool changed = false;
  NAPI_CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  nchecker_t *nc = argc >= 2 ? get_checker(env, argv[0]) : NULL;
  if (!nc) return NULL;
  char *path = get_string(env, argv[1], "path", false);
  if (!path) return NULL;
  egress_status_t st = egress_checker_reload_file(nc->checker, path, &changed, err, sizeof err);
  free(path);
  if (st != EGRESS_OK) return throw_status(env, st, err);
  NAPI_CHECK(env, napi_get_boolean(env, changed, &result));
  return result;
}

/* policyInfo(handle) -> [digest, allowRules[], denyRules[]] */
static napi_value js_policy_info(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], result = NULL, v, lists[2];
  NAPI_CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  nchecker_t *nc = argc >= 1 ? get_checker(env, argv[0]) : NULL;
  if (!nc) return NULL;
  egress_policy_t *p = egress_checker_policy(nc->checker);
  if (!p) return throw_status(env, EGRESS_EINTERNAL, NULL);
  if (napi_create_array_with_length(env, 3, &result) != napi_ok) goto fail;
  if (napi_create_string_utf8(env, egress_policy_digest(p), NAPI_AUTO_LENGTH, &v) != napi_ok ||
      napi_set_element(env, result, 0, v) != napi_ok)
    goto fail;
  for (int l = 0; l < 2; l++) {
    size_t n = egress_policy_rule_count(p, (egress_list_t)l);
    if (napi_create_array_with_length(env, n, &lists[l]) != napi_ok) goto fail;
    for (size_t i = 0; i < n; i++)
      if (set_str(env, lists[l], (uint32_t)i, egress_policy_rule_text(p, (egress_list_t)l, i)) != napi_ok)
        goto fail;
    if (napi_set_element(env, result, (uint32_t)(1 + l), lists[l]) != napi_ok) goto fail;
  }
  egress_policy_unref(p);
  return result;
fail:
  egress_policy_unref(p);
  return NULL;
}

/* counters(handle) -> [9 counters..., then outcome x reason counts] */
static napi_value js_counters(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], result, v;
  NAPI_CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  nchecker_t *nc = argc >= 1 ? get_checker(env, argv[0]) : NULL;
  if (!nc) return NULL;
  int nreasons = egress_reason_count();
  uint32_t k = 0;
  NAPI_CHECK(env, napi_create_array(env, &result));
  for (int c = 0; c <= EGRESS_COUNTER_POLICY_RELOAD_FAILURES; c++) {
    NAPI_CHECK(env,
               napi_create_double(env, (double)egress_checker_counter(nc->checker, (egress_counter_t)c), &v));
    NAPI_CHECK(env, napi_set_element(env, result, k++, v));
  }
  for (int o = 0; o <= EGRESS_OUTCOME_ENFORCEMENT_UNAVAILABLE; o++)
    for (int r = 0; r < nreasons; r++) {
      uint64_t n = egress_checker_checks_by(nc->checker, (egress_outcome_t)o, (egress_reason_t)r);
      NAPI_CHECK(env, napi_create_double(env, (double)n, &v));
      NAPI_CHECK(env, napi_set_element(env, result, k++, v));
    }
  return result;
}

static napi_value js_metrics(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], result;
  NAPI_CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  nchecker_t *nc = argc >= 1 ? get_checker(env, argv[0]) : NULL;
  if (!nc) return NULL;
  char *text = egress_checker_metrics(nc->checker);
  if (!text) return throw_status(env, EGRESS_ENOMEM, NULL);
  napi_status st = napi_create_string_utf8(env, text, NAPI_AUTO_LENGTH, &result);
  egress_free(text);
  NAPI_CHECK(env, st);
  return result;
}

/* close(handle): idempotent; checks in flight are cancelled and rejected. */
static napi_value js_close(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  NAPI_CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc >= 1) checker_close(env, argv[0]);
  return NULL;
}

/* tables() -> [reasons[], outcomes[], version, specialRangesVersion, statuses[]] */
static napi_value js_tables(napi_env env, napi_callback_info info) {
  napi_value result, reasons, outcomes;
  int n = egress_reason_count();
  NAPI_CHECK(env, napi_create_array(env, &result));
  NAPI_CHECK(env, napi_create_array(env, &reasons));
  NAPI_CHECK(env, napi_create_array(env, &outcomes));
  for (int i = 0; i < n; i++) {
    NAPI_CHECK(env, set_str(env, reasons, (uint32_t)i, egress_reason_name((egress_reason_t)i)));
  }
  for (int i = 0; i <= EGRESS_OUTCOME_ENFORCEMENT_UNAVAILABLE; i++)
    NAPI_CHECK(env, set_str(env, outcomes, (uint32_t)i, egress_outcome_name((egress_outcome_t)i)));
  NAPI_CHECK(env, napi_set_element(env, result, 0, reasons));
  NAPI_CHECK(env, napi_set_element(env, result, 1, outcomes));
  NAPI_CHECK(env, set_str(env, result, 2, egress_version()));
  NAPI_CHECK(env, set_str(env, result, 3, egress_special_ranges_version()));
  /* [code, name] of each status: EGRESS_EPOLICY -> "invalid_policy", ... */
  napi_value statuses;
  NAPI_CHECK(env, napi_create_array(env, &statuses));
  static const egress_status_t all[] = {
#define STATUS_VALUE_(name, value, token, message) EGRESS_##name,
    EGRESS_STATUS_MAP(STATUS_VALUE_)
#undef STATUS_VALUE_
  };
  for (uint32_t i = 0; i < sizeof all / sizeof all[0]; i++) {
    napi_value pair;
    NAPI_CHECK(env, napi_create_array(env, &pair));
    NAPI_CHECK(env, set_str(env, pair, 0, status_code(all[i])));
    NAPI_CHECK(env, set_str(env, pair, 1, egress_status_name(all[i])));
    NAPI_CHECK(env, napi_set_element(env, statuses, i, pair));
  }
  NAPI_CHECK(env, napi_set_element(env, result, 4, statuses));
  return result;
}

static napi_value init(napi_env env, napi_value exports) {
  static const struct {
    const char *name;
    napi_callback cb;
  } fns[] = {
    { "setup", js_setup },
    { "create", js_create },
    { "checkSync", js_check_sync },
    { "checkUrlSync", js_check_url_sync },
    { "checkAsync", js_check_async },
    { "setPolicy", js_set_policy },
    { "reloadFile", js_reload_file },
    { "policyInfo", js_policy_info },
    { "counters", js_counters },
    { "metrics", js_metrics },
    { "close", js_close },
    { "tables", js_tables },
    { "lastPacked", js_last_packed },
    { "layout", js_layout },
  };
  for (size_t i = 0; i < sizeof fns / sizeof fns[0]; i++) {
    napi_value fn;
    NAPI_CHECK(env, napi_create_function(env, fns[i].name, NAPI_AUTO_LENGTH, fns[i].cb, NULL, &fn));
    NAPI_CHECK(env, napi_set_named_property(env, exports, fns[i].name, fn));
  }
  return exports;
}

NAPI_MODULE_INIT() { return init(env, exports); }
