/*
 * libegress - application-layer egress allowlist enforcement.
 *
 * The whole public API of libegress lives in this header.
 *
 * Threading model
 * ---------------
 *  - egress_policy_t is immutable once built and reference counted; it may be
 *    shared by any number of threads and checkers.
 *  - egress_checker_t is thread-safe: any number of threads may call
 *    egress_check(), egress_check_ex(), egress_check_url() and
 *    egress_checker_set_policy() on one checker at the same time.
 *  - egress_options_t, egress_request_t and egress_decision_t are plain
 *    single-thread objects: use one from one thread at a time.
 *
 * Ownership words used below
 * --------------------------
 *  - "Caller owns": the caller must release it with the named function.
 *  - "Borrowed": valid only for as long as stated; never free it.
 *  - "Copied": the library keeps its own copy; the argument may be freed
 *    right after the call.
 *
 * Fail closed
 * -----------
 * Every check produces a decision. When anything goes wrong (bad input,
 * resolver failure, allocation failure) the decision says deny; a non-OK
 * status never comes with an allow.
 */
#ifndef EGRESS_H
#define EGRESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "egress_version.h"

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__) && __GNUC__ >= 4
#  define EGRESS_API __attribute__((visibility("default")))
#  define EGRESS_WUR __attribute__((warn_unused_result))
#else
#  define EGRESS_API
#  define EGRESS_WUR
#endif

/* ------------------------------------------------------------------------ */
/* Status codes: whether a call succeeded, and if not, why.                  */
/* ------------------------------------------------------------------------ */

/*
 * X(NAME, value, "stable_token", "message").  Values are explicit and are
 * never renumbered.
 */
#define EGRESS_STATUS_MAP(X)                                            \
  X(OK, 0, "ok", "success")                                             \
  X(ENOMEM, 1, "out_of_memory", "out of memory")                        \
  X(EINVAL, 2, "invalid_argument", "invalid argument")                  \
  X(EPOLICY, 3, "invalid_policy", "invalid policy")                     \
  X(EIO, 4, "io_error", "could not read or write a file")               \
  X(ERESOLVER, 5, "resolver_error", "DNS resolver could not be set up") \
  X(ERANGE, 6, "out_of_range", "index or value out of range")           \
  X(EINTERNAL, 7, "internal_error", "internal error")                   \
  X(ECANCELLED, 8, "cancelled", "the check was cancelled before it was decided")

typedef enum egress_status {
#define EGRESS_STATUS_ENUM_(name, value, token, message) EGRESS_##name = value,
  EGRESS_STATUS_MAP(EGRESS_STATUS_ENUM_)
#undef EGRESS_STATUS_ENUM_
} egress_status_t;

/** Stable snake_case token of @p status ("ok", "invalid_policy", ...);
 *  "unknown" for a value outside the list.
 *  @return Borrowed static string. Thread-safety: safe.  @since 0.1 */
EGRESS_API const char *egress_status_name(egress_status_t status);

/** Human-readable message of @p status.
 *  @return Borrowed static string. Thread-safety: safe.  @since 0.1 */
EGRESS_API const char *egress_strerror(egress_status_t status);

/* ------------------------------------------------------------------------ */
/* Verdict, outcome, reason.                                                 */
/* ------------------------------------------------------------------------ */

/** What the caller must do. Deny is zero so zeroed memory means deny. */
typedef enum egress_verdict { EGRESS_VERDICT_DENY = 0, EGRESS_VERDICT_ALLOW = 1 } egress_verdict_t;

/** What the policy says. */
#define EGRESS_OUTCOME_MAP(X) \
  X(DENIED, 0, "denied")      \
  X(ALLOWED, 1, "allowed")    \
  X(ENFORCEMENT_UNAVAILABLE, 2, "enforcement_unavailable")

typedef enum egress_outcome {
#define EGRESS_OUTCOME_ENUM_(name, value, token) EGRESS_OUTCOME_##name = value,
  EGRESS_OUTCOME_MAP(EGRESS_OUTCOME_ENUM_)
#undef EGRESS_OUTCOME_ENUM_
} egress_outcome_t;

/*
 * Decision reasons: X(NAME, value, "stable_token", "message").
 * EGRESS_REASON_NONE is the reason of an allowed check (reported as null).
 */
#define EGRESS_REASON_MAP(X)                                                                                 \
  X(NONE, 0, "none", "allowed by policy")                                                                    \
  X(INVALID_HOST, 1, "invalid_host", "host is not a valid bare host name or IP address")                     \
  X(INVALID_PORT, 2, "invalid_port", "port must be between 1 and 65535")                                     \
  X(EMPTY_ALLOWLIST, 3, "empty_allowlist", "the allowlist is empty: everything is denied")                   \
  X(EXPLICIT_DENY, 4, "explicit_deny", "destination matches a deny-list entry")                              \
  X(NOT_IN_ALLOWLIST, 5, "not_in_allowlist", "destination matches no allowlist entry")                       \
  X(PORT_NOT_ALLOWED, 6, "port_not_allowed", "host is allowed but not on this port")                         \
  X(SPECIAL_PURPOSE_ADDRESS, 7, "special_purpose_address",                                                   \
    "special-purpose address not opened by a CIDR rule")                                                     \
  X(NO_SUCH_HOST, 8, "no_such_host", "the name does not exist or has no address")                            \
  X(RESOLVED_ADDRESS_FORBIDDEN, 9, "resolved_address_forbidden", "the name resolved to a forbidden address") \
  X(DNS_UNAVAILABLE, 10, "dns_unavailable", "DNS resolution failed: enforcement unavailable")                \
  X(AUDIT_UNAVAILABLE, 11, "audit_unavailable", "the decision event could not be delivered")                 \
  X(INTERNAL_ERROR, 12, "internal_error", "internal error while checking: failing closed")

typedef enum egress_reason {
#define EGRESS_REASON_ENUM_(name, value, token, message) EGRESS_REASON_##name = value,
  EGRESS_REASON_MAP(EGRESS_REASON_ENUM_)
#undef EGRESS_REASON_ENUM_
} egress_reason_t;

/** Number of reason codes (for loops over 0 .. count-1). Thread-safety: safe. */
EGRESS_API int egress_reason_count(void);
/** Stable token of @p reason ("not_in_allowlist"); "unknown" when out of range.
 *  @return Borrowed static string. Thread-safety: safe. */
EGRESS_API const char *egress_reason_name(egress_reason_t reason);
/** Default human message of @p reason.
 *  @return Borrowed static string. Thread-safety: safe. */
EGRESS_API const char *egress_reason_message(egress_reason_t reason);
/** Stable token of @p outcome ("allowed", "denied", "enforcement_unavailable").
 *  @return Borrowed static string. Thread-safety: safe. */
EGRESS_API const char *egress_outcome_name(egress_outcome_t outcome);

/** Enforcement mode of a checker. */
typedef enum egress_mode {
  EGRESS_MODE_ENFORCE = 0, /**< the verdict follows the outcome */
  EGRESS_MODE_MONITOR = 1  /**< the verdict is allow for policy denials; events
                                record what enforce mode would have done */
} egress_mode_t;

/** How a name whose answer mixes allowed and forbidden addresses is decided. */
typedef enum egress_mixed {
  EGRESS_MIXED_DENY = 0,  /**< one forbidden address denies the check (default) */
  EGRESS_MIXED_FILTER = 1 /**< drop forbidden addresses, allow with the rest */
} egress_mixed_t;

/*
 * Which list a rule belongs to: X(NAME, value, "documentKey"), the key
 * naming the list in a policy document and in messages ("allowed by
 * egressAllowlist[3]").
 */
#define EGRESS_LIST_MAP(X)       \
  X(ALLOW, 0, "egressAllowlist") \
  X(DENY, 1, "egressDenylist")

typedef enum egress_list {
#define EGRESS_LIST_ENUM_(name, value, key) EGRESS_LIST_##name = value,
  EGRESS_LIST_MAP(EGRESS_LIST_ENUM_)
#undef EGRESS_LIST_ENUM_
} egress_list_t;

/** Size that error buffers should have to hold any library message whole. */
#define EGRESS_ERRBUF_SIZE 512

/* ------------------------------------------------------------------------ */
/* Version.                                                                  */
/* ------------------------------------------------------------------------ */

/** Run-time library version string, e.g. "0.1.0".
 *  @return Borrowed static string. Thread-safety: safe.  @since 0.1 */
EGRESS_API const char *egress_version(void);

/** Version of the special-purpose address table compiled into the library
 *  (the IANA registry date it was generated from).
 *  @return Borrowed static string. Thread-safety: safe.  @since 0.1 */
EGRESS_API const char *egress_special_ranges_version(void);

/** Free memory the library handed to the caller as "Caller owns ... egress_free".
 *  NULL is accepted. Thread-safety: safe. */
EGRESS_API void egress_free(void *ptr);

/* ------------------------------------------------------------------------ */
/* Policy: a compiled, immutable, reference-counted allowlist.               */
/* ------------------------------------------------------------------------ */

typedef struct egress_policy egress_policy_t;

/**
 * Compile a policy from a JSON document.
 *
 * Accepted shapes: {"egressAllowlist": [...], "egressDenylist": [...]}, a
 * MachineExecutionPolicyV1 object, or a MachineRegistrationV1 record whose
 * "executionPolicy" holds one. Unknown keys are ignored.
 *
 * @param json    the document; need not be NUL-terminated. Copied.
 * @param len     its length in bytes.
 * @param out     on success receives the policy. Caller owns: release with
 *                egress_policy_unref(). Set to NULL on failure.
 * @param errbuf  optional buffer (may be NULL) that receives, on failure, a
 *                message naming the list, index, entry and problem.
 * @param errlen  size of @p errbuf; EGRESS_ERRBUF_SIZE is always enough.
 * @return EGRESS_OK; EGRESS_EPOLICY for any invalid document or entry (nothing
 *         is half-applied); EGRESS_EINVAL for NULL arguments; EGRESS_ENOMEM.
 * Thread-safety: safe.  @since 0.1
 */
EGRESS_API EGRESS_WUR egress_status_t egress_policy_from_json(const char *json, size_t len,
                                                              egress_policy_t **out, char *errbuf,
                                                              size_t errlen);

/**
 * Compile a policy from the JSON file at @p path (see egress_policy_from_json).
 * @return as egress_policy_from_json, plus EGRESS_EIO when the file cannot be
 *         read. Thread-safety: safe.  @since 0.1
 */
EGRESS_API EGRESS_WUR egress_status_t egress_policy_from_file(const char *path, egress_policy_t **out,
                                                              char *errbuf, size_t errlen);

/**
 * Compile a policy from arrays of entry strings.
 *
 * @param allow    @p n_allow entry strings (Copied); may be NULL when 0.
 * @param deny     @p n_deny deny-list entry strings (Copied); may be NULL when 0.
 * @param out      Caller owns the result: egress_policy_unref().
 * @return EGRESS_OK, EGRESS_EPOLICY (errbuf names the bad entry), EGRESS_EINVAL,
 *         EGRESS_ENOMEM. Thread-safety: safe.  @since 0.1
 */
EGRESS_API EGRESS_WUR egress_status_t egress_policy_from_entries(const char *const *allow, size_t n_allow,
                                                                 const char *const *deny, size_t n_deny,
                                                                 egress_policy_t **out, char *errbuf,
                                                                 size_t errlen);

/** Take a reference. @return @p policy. NULL is accepted and returned.
 *  Thread-safety: safe (atomic). */
EGRESS_API egress_policy_t *egress_policy_ref(egress_policy_t *policy);

/** Drop a reference; the last one frees the policy. NULL is accepted.
 *  Thread-safety: safe (atomic). */
EGRESS_API void egress_policy_unref(egress_policy_t *policy);

/** Number of entries in @p list. Thread-safety: safe. */
EGRESS_API size_t egress_policy_rule_count(const egress_policy_t *policy, egress_list_t list);

/** Entry text of rule @p index of @p list, exactly as written in the policy.
 *  @return Borrowed (valid while the policy is referenced), NULL when out of
 *  range. Thread-safety: safe. */
EGRESS_API const char *egress_policy_rule_text(const egress_policy_t *policy, egress_list_t list,
                                               size_t index);

/** Lower-case hex SHA-256 of the policy's canonical form (its entries in
 *  order, one list after the other); identifies the policy in events.
 *  @return Borrowed (valid while the policy is referenced). Thread-safety: safe. */
EGRESS_API const char *egress_policy_digest(const egress_policy_t *policy);

/* ------------------------------------------------------------------------ */
/* Options: how a checker enforces.                                          */
/* ------------------------------------------------------------------------ */

typedef struct egress_options egress_options_t;

/** Event callback.
 *  @param event_json  the CloudEvents JSON text of the event, NUL-terminated.
 *                     Borrowed: valid during the call only.
 *  @param json_len    its length.
 *  @param decision    the decision the event describes. Borrowed: valid during
 *                     the call only; read it with the egress_decision_*()
 *                     accessors.
 *  @param user_data   as given to egress_options_set_event_callback().
 *  @return 0 when the event was taken; any other value is a delivery failure
 *          (counted; denies the check when audit is required).
 *  Called on the thread that made the check; may be called from many threads
 *  at once. */
typedef struct egress_decision egress_decision_t;
typedef int (*egress_event_cb)(const char *event_json, size_t json_len, const egress_decision_t *decision,
                               void *user_data);

/** Create options with the defaults: enforce mode, deny-if-any, system DNS
 *  servers, 2000 ms timeout, cache of 4096 names with TTL clamped to
 *  [5 s, 300 s] and 5 s negative TTL, no event sink, audit not required.
 *  @param out Caller owns: egress_options_free().
 *  @return EGRESS_OK, EGRESS_EINVAL, EGRESS_ENOMEM. Thread-safety: safe. */
EGRESS_API EGRESS_WUR egress_status_t egress_options_new(egress_options_t **out);
/** Free options. NULL is accepted. Thread-safety: single-thread object. */
EGRESS_API void egress_options_free(egress_options_t *opts);

/** Enforcement mode. @return EGRESS_OK or EGRESS_EINVAL. */
EGRESS_API egress_status_t egress_options_set_mode(egress_options_t *opts, egress_mode_t mode);
/** Mixed-answer handling (deny-if-any or filter). @return EGRESS_OK or EGRESS_EINVAL. */
EGRESS_API egress_status_t egress_options_set_mixed(egress_options_t *opts, egress_mixed_t mixed);
/** DNS servers as a comma-separated list of IP[:PORT] ("127.0.0.1:5353",
 *  "[::1]:53"). Copied. NULL or "" restores the system servers.
 *  @return EGRESS_OK, EGRESS_EINVAL (a malformed list: the options keep
 *  their previous servers; egress_checker_new given such a list names the
 *  bad entry in its errbuf), EGRESS_ENOMEM. */
EGRESS_API egress_status_t egress_options_set_dns_servers(egress_options_t *opts, const char *servers);
/** Resolve from this hosts file instead of DNS (demo, tests, sidecars).
 *  Copied. c-ares 1.18 reads it through the process-wide CARES_HOSTS
 *  environment variable, so every checker of a process that sets one shares
 *  the last file set. When DNS servers are set too, names missing from the
 *  file are looked up in DNS. NULL clears. @return EGRESS_OK, EGRESS_ENOMEM. */
EGRESS_API egress_status_t egress_options_set_hosts_file(egress_options_t *opts, const char *path);
/** Total DNS time budget of one check in milliseconds (1..600000).
 *  @return EGRESS_OK or EGRESS_EINVAL. */
EGRESS_API egress_status_t egress_options_set_timeout_ms(egress_options_t *opts, uint32_t timeout_ms);
/** DNS cache: @p max_entries names (0 disables caching), TTL clamp in
 *  seconds, negative (NXDOMAIN) TTL in seconds.
 *  @return EGRESS_OK or EGRESS_EINVAL (min_ttl > max_ttl). */
EGRESS_API egress_status_t egress_options_set_cache(egress_options_t *opts, uint32_t max_entries,
                                                    uint32_t min_ttl_s, uint32_t max_ttl_s,
                                                    uint32_t negative_ttl_s);
/** Add an operator-configured NAT64 Pref64 prefix ("2001:db8:64::/96");
 *  lengths 32, 40, 48, 56, 64, 96 (RFC 6052). Addresses inside it have their
 *  embedded IPv4 address vetted too. At most 8 prefixes.
 *  @return EGRESS_OK, EGRESS_EINVAL (bad text or length), EGRESS_ERANGE (8
 *  prefixes already set). */
EGRESS_API egress_status_t egress_options_add_pref64(egress_options_t *opts, const char *prefix);
/** CloudEvents "source" attribute (default "/enforcement/libegress"). Copied. */
EGRESS_API egress_status_t egress_options_set_event_source(egress_options_t *opts, const char *source);
/** Deliver events to @p cb (replaces any other sink). NULL cb removes it. */
EGRESS_API egress_status_t egress_options_set_event_callback(egress_options_t *opts, egress_event_cb cb,
                                                             void *user_data);
/** Write events as JSON Lines to @p fd (not closed by the library; must stay
 *  open for the checker's lifetime). Each event is one write() of one whole
 *  line. Replaces any other sink. */
EGRESS_API egress_status_t egress_options_set_event_fd(egress_options_t *opts, int fd);
/** Write events as JSON Lines to the file at @p path, opened with O_APPEND
 *  by egress_checker_new() so that many processes may share it. Copied. */
EGRESS_API egress_status_t egress_options_set_event_path(egress_options_t *opts, const char *path);
/** When true, a check whose event cannot be delivered is denied with
 *  audit_unavailable. Default false (the failure is counted). */
EGRESS_API egress_status_t egress_options_set_audit_required(egress_options_t *opts, bool required);

/* ------------------------------------------------------------------------ */
/* Checker: what a worker holds.                                             */
/* ------------------------------------------------------------------------ */

typedef struct egress_checker egress_checker_t;

/**
 * Create a checker enforcing @p policy with @p opts.
 *
 * @param policy  the policy; the checker takes its own reference.
 * @param opts    options (Copied); NULL means defaults.
 * @param out     Caller owns: egress_checker_free().
 * @param errbuf  optional; receives why creation failed.
 * @return EGRESS_OK, EGRESS_EINVAL, EGRESS_ERESOLVER (bad DNS server list,
 *         c-ares failure), EGRESS_EIO (event file), EGRESS_ENOMEM.
 * Thread-safety: safe.  @since 0.1
 */
EGRESS_API EGRESS_WUR egress_status_t egress_checker_new(egress_policy_t *policy,
                                                         const egress_options_t *opts, egress_checker_t **out,
                                                         char *errbuf, size_t errlen);

/** Free a checker. Must not race with checks on the same checker.
 *  NULL is accepted. */
EGRESS_API void egress_checker_free(egress_checker_t *checker);

/** Replace the checker's policy atomically. Checks in flight finish on the
 *  policy they started with. The checker takes its own reference.
 *  @return EGRESS_OK or EGRESS_EINVAL. Thread-safety: safe. */
EGRESS_API egress_status_t egress_checker_set_policy(egress_checker_t *checker, egress_policy_t *policy);

/** Reload the policy from @p path. On any error the old policy stays in force
 *  and errbuf says why. When the file's content is unchanged this is a no-op.
 *  @param changed optional; set to whether the policy was replaced.
 *  @return as egress_policy_from_file. Thread-safety: safe. */
EGRESS_API egress_status_t egress_checker_reload_file(egress_checker_t *checker, const char *path,
                                                      bool *changed, char *errbuf, size_t errlen);

/** The policy currently in force. @return Caller owns a new reference:
 *  egress_policy_unref(). Thread-safety: safe. */
EGRESS_API egress_policy_t *egress_checker_policy(egress_checker_t *checker);

/* ------------------------------------------------------------------------ */
/* Requests: optional context attached to a check and its event.             */
/* ------------------------------------------------------------------------ */

typedef struct egress_request egress_request_t;

/*
 * Request context fields: X(NAME, value, "jsonKey").  The key is the one
 * events write the field under (in this order, the order of the list) and
 * egressctl reads it from; bindings take the same keys.  Values are
 * explicit, dense from 0 and never renumbered; list order is key order, not
 * value order.  To walk the fields:
 *
 *   #define SHOW(name, value, key) printf("%s = %d\n", key, EGRESS_FIELD_##name);
 *   EGRESS_FIELD_MAP(SHOW)
 */
#define EGRESS_FIELD_MAP(X)             \
  X(WORKSPACE_ID, 1, "workspaceId")     \
  X(AGENT_ID, 2, "agentId")             \
  X(MACHINE_ID, 3, "machineId")         \
  X(RUN_ID, 4, "runId")                 \
  X(CORRELATION_ID, 5, "correlationId") \
  X(METHOD, 0, "method")

/* Spelled out (bindings read these lines); the library asserts at compile
 * time that they agree with EGRESS_FIELD_MAP. */
typedef enum egress_field {
  EGRESS_FIELD_METHOD = 0,
  EGRESS_FIELD_WORKSPACE_ID = 1,
  EGRESS_FIELD_AGENT_ID = 2,
  EGRESS_FIELD_MACHINE_ID = 3,
  EGRESS_FIELD_RUN_ID = 4,
  EGRESS_FIELD_CORRELATION_ID = 5
} egress_field_t;

/** Create an empty request context. @param out Caller owns: egress_request_free().
 *  @return EGRESS_OK, EGRESS_EINVAL, EGRESS_ENOMEM. */
EGRESS_API EGRESS_WUR egress_status_t egress_request_new(egress_request_t **out);
/** Free a request. NULL is accepted. */
EGRESS_API void egress_request_free(egress_request_t *req);
/** Set a context field (Copied; NULL clears it). Values longer than 1024
 *  bytes or holding control characters are rejected with EGRESS_EINVAL.
 *  Setting the value a field already holds allocates nothing, so a request
 *  refilled for every check costs only what changes. */
EGRESS_API egress_status_t egress_request_set(egress_request_t *req, egress_field_t field, const char *value);
/**
 * Refuse the request before it is checked.  For a caller that has already
 * found it unacceptable (a context value it cannot pass on, a destination
 * it cannot spell as a C string, a port it cannot read) but must still
 * record it: a check made with @p req then neither resolves nor matches.
 * It is denied, outcome denied, with @p reason and @p message (in monitor
 * mode too, as every input error), and recorded like any other decision:
 * event (destination, port, URL and context fields as given to the check),
 * counters.  @p host of egress_check_ex() may then be NULL (no destination:
 * the event's destination and subject are then ":PORT", as for an empty
 * host, and its host null).
 * @param reason  EGRESS_REASON_INVALID_HOST or EGRESS_REASON_INVALID_PORT.
 * @param message the decision's message (Copied; at most 511 bytes are
 *                kept); NULL lifts the refusal.
 * @return EGRESS_OK, EGRESS_EINVAL (NULL @p req, another reason),
 *         EGRESS_ENOMEM.  Thread-safety: as the request.  @since 0.1
 */
EGRESS_API egress_status_t egress_request_refuse(egress_request_t *req, egress_reason_t reason,
                                                 const char *message);

/* ------------------------------------------------------------------------ */
/* Checks.                                                                   */
/* ------------------------------------------------------------------------ */

/**
 * May this process connect to @p host on @p port?  Emits one event.
 *
 * @param checker the worker's checker (NULL denies).
 * @param host    bare host name or IP literal ("[v6]" accepted). Copied.
 * @param port    destination port.
 * @return EGRESS_VERDICT_ALLOW only when the connection may proceed.
 * Thread-safety: safe.  @since 0.1
 */
EGRESS_API EGRESS_WUR egress_verdict_t egress_check(egress_checker_t *checker, const char *host,
                                                    uint16_t port);

/**
 * Check with request context and a full decision.
 *
 * @param host, port  as egress_check(); @p port is wider than uint16_t so
 *                    that an out-of-range port is reported as invalid_port.
 * @param req     optional context (Borrowed during the call); may be NULL.
 * @param out     receives the decision, always (even on error, unless the
 *                decision itself could not be allocated, when it is NULL and
 *                the answer is deny). Caller owns: egress_decision_free().
 * @return EGRESS_OK when the check ran to a decision (allow or deny);
 *         EGRESS_ENOMEM / EGRESS_EINTERNAL when it could not and the decision
 *         says deny. Thread-safety: safe.  @since 0.1
 */
EGRESS_API EGRESS_WUR egress_status_t egress_check_ex(egress_checker_t *checker, const char *host,
                                                      int32_t port, const egress_request_t *req,
                                                      egress_decision_t **out);

/**
 * Check a URL (http or https): host, port (explicit or the scheme's default),
 * scheme and path. A URL entry allows only URLs of its own scheme
 * ("https://h" never allows "http://h:443/"); entries without a scheme
 * (names, wildcards, CIDRs) allow either. A URL entry with a path allows
 * only URLs whose path starts with its path on a segment boundary. Dot
 * segments are resolved first; a path that servers read differently (an
 * empty segment, an encoded '/' or '\', "..;", a '%' not followed by two
 * hex digits) makes the URL invalid (invalid_host).
 * @return as egress_check_ex. Thread-safety: safe.  @since 0.1
 */
EGRESS_API EGRESS_WUR egress_status_t egress_check_url(egress_checker_t *checker, const char *url,
                                                       const egress_request_t *req, egress_decision_t **out);

/**
 * Create an empty decision for egress_check_into(). Until a check fills it,
 * it reads as a deny with reason internal_error.
 * @param out Caller owns: egress_decision_free().
 * @return EGRESS_OK, EGRESS_EINVAL (NULL @p out), EGRESS_ENOMEM.
 * Thread-safety: safe.  @since 0.1
 */
EGRESS_API EGRESS_WUR egress_status_t egress_decision_new(egress_decision_t **out);

/**
 * egress_check_ex() into a decision the caller keeps and reuses: the hot path
 * of a binding or a loop that checks many times. Everything the previous
 * check left in @p d is released first, so no field of it survives.
 *
 * Unlike egress_check_ex(), the event's JSON text is made only when the
 * checker has an event sink (which still gets its event as always);
 * otherwise egress_decision_event_json() returns NULL. Every other accessor
 * reads as after egress_check_ex(), and the strings they return stay valid
 * until the next check into @p d or egress_decision_free().
 *
 * @param d  from egress_decision_new() (Borrowed; caller keeps owning it).
 *           Not to be used by two threads at once.
 * @return as egress_check_ex(); EGRESS_EINVAL for a NULL @p d (nothing
 *         written) or a NULL @p checker (@p d says deny).
 * Thread-safety: safe for distinct decisions.  @since 0.1
 */
EGRESS_API EGRESS_WUR egress_status_t egress_check_into(egress_checker_t *checker, const char *host,
                                                        int32_t port, const egress_request_t *req,
                                                        egress_decision_t *d);

/* ------------------------------------------------------------------------ */
/* Checks on an event loop (docs/async.md).                                  */
/* ------------------------------------------------------------------------ */
/*
 * The same check as egress_check_ex() / egress_check_url(), without blocking
 * the thread while DNS answers, in the style of c-ares: the library tells the
 * caller's loop which file descriptors to watch (egress_watch_cb), the loop
 * reports readiness (egress_loop_process()) and wakes the library when
 * egress_loop_timeout() says.  Decisions and events are those of the
 * blocking calls for the same input; the checker's cache, single flight
 * (an asynchronous and a blocking miss on one name share one query), policy
 * in force, counters, mode and audit rule are shared with them.
 *
 * A check that needs no DNS (an IP literal, a cached name, any policy
 * denial) completes inside egress_check_start(): its callback runs before
 * the call returns.
 *
 * An egress_loop_t belongs to one thread: every function below taking it,
 * and every callback it makes, runs on that thread.  Any number of loops
 * (on any threads) and blocking callers may share one checker.
 */
typedef struct egress_loop egress_loop_t;
typedef struct egress_pending egress_pending_t;

/**
 * Watch @p fd: for readability when @p readable, writability when
 * @p writable; neither: stop watching it (the library is about to close it,
 * or no longer needs it).  Called from egress_loop_new(), the start calls,
 * egress_loop_process() and egress_loop_free().
 */
typedef void (*egress_watch_cb)(int fd, bool readable, bool writable, void *user);

/**
 * A check is decided (EGRESS_OK), cancelled (EGRESS_ECANCELLED: the
 * decision says deny, reason internal_error, and its event was emitted as
 * for any check), or could not run to a decision (EGRESS_ENOMEM /
 * EGRESS_EINTERNAL, decision says deny).  Runs exactly once per started
 * check.  @p decision is never NULL; Caller (the callback) owns it:
 * egress_decision_free().  The callback may start, cancel, or free the loop.
 */
typedef void (*egress_check_done_cb)(egress_status_t status, egress_decision_t *decision, void *user);

/**
 * Create a loop driver for @p checker.  @p watch is called at once for the
 * driver's wake-up descriptor (which lets blocking threads hand answers to
 * this loop) and later for each DNS socket.
 * @param checker Borrowed: must outlive the loop driver.
 * @param out     Caller owns: egress_loop_free().
 * @return EGRESS_OK, EGRESS_EINVAL (NULL argument), EGRESS_ERESOLVER,
 *         EGRESS_ENOMEM.  Thread-safety: the new loop is the calling
 *         thread's.  @since 0.2
 */
EGRESS_API EGRESS_WUR egress_status_t egress_loop_new(egress_checker_t *checker, egress_watch_cb watch,
                                                      void *user, egress_loop_t **out);

/**
 * Free a loop driver.  Every check still in flight is cancelled first: its
 * callback runs, inside this call, with EGRESS_ECANCELLED; no callback
 * runs after it returns, and every watched descriptor has been reported
 * unwatched.  Called from a callback of this loop, the driver is freed
 * when the outermost call into it returns.  NULL is accepted.
 */
EGRESS_API void egress_loop_free(egress_loop_t *loop);

/**
 * Tell the driver that @p fd is readable and/or writable (as the loop saw
 * it; errors and hang-ups count as both), or, with @p fd -1, that the time
 * egress_loop_timeout() gave has passed.  Runs the callbacks of every check
 * this decides.  An @p fd the driver does not watch is ignored.
 * @return EGRESS_OK, EGRESS_EINVAL (NULL loop).
 */
EGRESS_API egress_status_t egress_loop_process(egress_loop_t *loop, int fd, bool readable, bool writable);

/**
 * Milliseconds until egress_loop_process(loop, -1, false, false) is due
 * (0: now), or -1 when no check waits.  Call it after every call into the
 * driver.
 */
EGRESS_API int egress_loop_timeout(egress_loop_t *loop);

/** Checks started on @p loop whose callbacks have not run yet. */
EGRESS_API size_t egress_loop_pending(const egress_loop_t *loop);

/**
 * Start egress_check_ex(@p host, @p port, @p req) on @p loop.
 *
 * @param host, req  Copied (the caller may free them when this returns).
 * @param cb         runs exactly once when EGRESS_OK is returned: inside
 *                   this call when no DNS is needed, else from
 *                   egress_loop_process(), egress_check_cancel() or
 *                   egress_loop_free().
 * @param pending    optional; receives a handle for egress_check_cancel(),
 *                   valid until the callback starts, or NULL when the
 *                   callback already ran.  Borrowed: never free it.
 * @return EGRESS_OK (the callback runs or ran); EGRESS_EINVAL (NULL loop or
 *         cb) or EGRESS_ENOMEM (no decision could be made at all): the
 *         callback never runs.
 * @since 0.2
 */
EGRESS_API EGRESS_WUR egress_status_t egress_check_start(egress_loop_t *loop, const char *host, int32_t port,
                                                         const egress_request_t *req, egress_check_done_cb cb,
                                                         void *user, egress_pending_t **pending);

/** egress_check_url() on @p loop; as egress_check_start(). @since 0.2 */
EGRESS_API EGRESS_WUR egress_status_t egress_check_url_start(egress_loop_t *loop, const char *url,
                                                             const egress_request_t *req,
                                                             egress_check_done_cb cb, void *user,
                                                             egress_pending_t **pending);

/**
 * Cancel a check in flight: its callback runs inside this call with
 * EGRESS_ECANCELLED and a deny.  A query other checks share goes on for
 * them.  @return EGRESS_OK, EGRESS_EINVAL (NULL).  @since 0.2
 */
EGRESS_API egress_status_t egress_check_cancel(egress_pending_t *pending);

/**
 * Hand @p decision back to @p loop instead of egress_decision_free(): a
 * check started on @p loop later fills it again rather than allocating a
 * new one (a binding that copies each decision out in its callback checks
 * without an allocation for the decision).  What it held is released now:
 * strings read from it before are invalid, as after egress_decision_free().
 * The loop keeps a few and frees any more, and the ones it keeps when it is
 * freed.
 * @param loop      the loop's thread only, as every call taking it; NULL
 *                  (or a loop being freed) frees @p decision.
 * @param decision  any decision of this library; Caller gives up ownership
 *                  and must not use it again.  NULL is accepted.
 * Never fails.  @since 0.2
 */
EGRESS_API void egress_loop_recycle(egress_loop_t *loop, egress_decision_t *decision);

/* ------------------------------------------------------------------------ */
/* Decisions.                                                                */
/* ------------------------------------------------------------------------ */

/** Free a decision. NULL is accepted. */
EGRESS_API void egress_decision_free(egress_decision_t *d);

/* All accessors below take a decision that is Borrowed during the call; the
 * strings they return are Borrowed and valid until egress_decision_free()
 * (or the next egress_check_into() of the same decision).
 * A NULL decision reads as a deny with reason internal_error. */

EGRESS_API egress_verdict_t egress_decision_verdict(const egress_decision_t *d);
EGRESS_API egress_outcome_t egress_decision_outcome(const egress_decision_t *d);
EGRESS_API egress_reason_t egress_decision_reason(const egress_decision_t *d);
/** Human message saying why (names the bad input, rule or address). */
EGRESS_API const char *egress_decision_message(const egress_decision_t *d);
/** The destination exactly as given ("host:port" form is built by the caller).
 * Events and messages report an invalid one longer than 253 bytes cut short,
 * as its first bytes and "…(truncated, N bytes)"; this accessor never cuts. */
EGRESS_API const char *egress_decision_destination_host(const egress_decision_t *d);
/** The URL exactly as given to egress_check_url(); NULL for host checks. */
EGRESS_API const char *egress_decision_url(const egress_decision_t *d);
/** Canonical host (lower case, A-label, no brackets); NULL when invalid. */
EGRESS_API const char *egress_decision_host(const egress_decision_t *d);
/** Port as given (may be out of range when reason is invalid_port). */
EGRESS_API int32_t egress_decision_port(const egress_decision_t *d);
EGRESS_API egress_mode_t egress_decision_mode(const egress_decision_t *d);
/** Whether a rule applies; then its list, index and entry text. */
EGRESS_API bool egress_decision_has_rule(const egress_decision_t *d);
EGRESS_API egress_list_t egress_decision_rule_list(const egress_decision_t *d);
EGRESS_API size_t egress_decision_rule_index(const egress_decision_t *d);
EGRESS_API const char *egress_decision_rule_text(const egress_decision_t *d);

/** Number of addresses considered (literal or resolved), each with its verdict. */
EGRESS_API size_t egress_decision_address_count(const egress_decision_t *d);
/** Address @p i as text; NULL when out of range. */
EGRESS_API const char *egress_decision_address(const egress_decision_t *d, size_t i);
/** Whether address @p i is among those to connect to: ALLOW only when the
 *  outcome is allowed and the address passed vetting (so a monitor-mode
 *  denial, verdict allow, lists none).  Under deny-if-any an address that
 *  passed, in an answer denied for another, is DENY with reason NONE
 *  (docs/check.md, "Mixed answers"). */
EGRESS_API egress_verdict_t egress_decision_address_verdict(const egress_decision_t *d, size_t i);
/** Reason of address @p i: why it is forbidden; NONE when it passed vetting. */
EGRESS_API egress_reason_t egress_decision_address_reason(const egress_decision_t *d, size_t i);
/** DNS TTL of address @p i in seconds; -1 for IP literals and unknown. */
EGRESS_API int32_t egress_decision_address_ttl(const egress_decision_t *d, size_t i);
/** Address @p i as a struct sockaddr_in / sockaddr_in6 carrying the checked
 *  port, with its length in @p len. NULL when out of range. */
EGRESS_API const void *egress_decision_address_sockaddr(const egress_decision_t *d, size_t i, size_t *len);

/** "host:port:addr1,addr2" for CURLOPT_RESOLVE, listing only the vetted
 *  addresses (IPv6 in brackets); NULL unless the verdict is allow and the
 *  host is a name. */
EGRESS_API const char *egress_decision_curl_resolve(const egress_decision_t *d);
/** Milliseconds spent in DNS (0 for cached answers and literals). */
EGRESS_API double egress_decision_dns_ms(const egress_decision_t *d);
/** Milliseconds spent on the whole check. */
EGRESS_API double egress_decision_latency_ms(const egress_decision_t *d);
/** SHA-256 of the policy that decided; NULL when none. */
EGRESS_API const char *egress_decision_policy_digest(const egress_decision_t *d);
/** The decision event's JSON text; NULL when it could not be built. */
EGRESS_API const char *egress_decision_event_json(const egress_decision_t *d);
/** The decision event's CloudEvents "id" (a UUID v4, 36 characters), for
 *  events that refer to this attempt (egressd's connection events do);
 *  NULL when no event was made for the check (no sink and no JSON asked
 *  for, or the id could not be drawn).  Valid as long as the decision's
 *  strings (see egress_decision_event_json). */
EGRESS_API const char *egress_decision_event_id(const egress_decision_t *d);

/**
 * An id and a time for an event of the caller's own that stands beside the
 * library's (egressd's connection events do), made as the library makes
 * its events': a UUID v4 from getrandom(2) (36 characters) and the current
 * time in RFC 3339, UTC, with milliseconds (24 characters).
 * @param id         receives the id, NUL-terminated (Borrowed).
 * @param time_text  receives the time, NUL-terminated (Borrowed).
 * @return EGRESS_OK; EGRESS_EINVAL for a NULL buffer; EGRESS_EINTERNAL when
 *         no randomness or clock could be had (both buffers then empty).
 *         Thread-safety: safe from any thread.  @since 0.1
 */
EGRESS_API EGRESS_WUR egress_status_t egress_event_stamp(char id[37], char time_text[32]);
/** The decision as compact JSON in egressctl's output shape: host, port,
 *  verdict, outcome, reason, matchedRule, addresses, message.
 *  @return Caller owns: egress_free(). NULL on allocation failure. */
EGRESS_API char *egress_decision_to_json(const egress_decision_t *d);

/* ------------------------------------------------------------------------ */
/* Counters.                                                                 */
/* ------------------------------------------------------------------------ */

/*
 * Checker counters: X(NAME, value, "prometheus_name"), the name
 * egress_checker_metrics() exposes the counter under.  Values are explicit,
 * dense from 0 and never renumbered.
 */
#define EGRESS_COUNTER_MAP(X)                         \
  X(CHECKS, 0, "egress_checks_total")                 \
  X(DNS_QUERIES, 1, "egress_dns_queries_total")       \
  X(DNS_FAILURES, 2, "egress_dns_failures_total")     \
  X(CACHE_HITS, 3, "egress_dns_cache_hits_total")     \
  X(CACHE_MISSES, 4, "egress_dns_cache_misses_total") \
  X(EVENTS_EMITTED, 5, "egress_events_emitted_total") \
  X(EVENTS_FAILED, 6, "egress_events_failed_total")   \
  X(POLICY_SWAPS, 7, "egress_policy_swaps_total")     \
  X(POLICY_RELOAD_FAILURES, 8, "egress_policy_reload_failures_total")

typedef enum egress_counter {
#define EGRESS_COUNTER_ENUM_(name, value, prom) EGRESS_COUNTER_##name = value,
  EGRESS_COUNTER_MAP(EGRESS_COUNTER_ENUM_)
#undef EGRESS_COUNTER_ENUM_
} egress_counter_t;

/** Read a counter. Thread-safety: safe (relaxed atomic read). */
EGRESS_API uint64_t egress_checker_counter(const egress_checker_t *checker, egress_counter_t counter);
/** Checks that ended with @p outcome and @p reason. Thread-safety: safe. */
EGRESS_API uint64_t egress_checker_checks_by(const egress_checker_t *checker, egress_outcome_t outcome,
                                             egress_reason_t reason);
/** All counters in Prometheus text exposition format.
 *  @return Caller owns: egress_free(); NULL on allocation failure.
 *  Thread-safety: safe. */
EGRESS_API char *egress_checker_metrics(const egress_checker_t *checker);

#ifdef __cplusplus
}
#endif

#endif /* EGRESS_H */
