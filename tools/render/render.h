/*
 * Rendering a compiled policy as Kubernetes network policy (render.c), and
 * the lint findings that share its analysis.  A helper library of the tools
 * (egressctl, the tests, the benchmark), linked with the library's internal
 * archive; never part of libegress nor installed.
 */
#ifndef EGRESS_RENDER_H
#define EGRESS_RENDER_H

#include "egress_private.h"

typedef enum egress__render_format {
  EGRESS__RENDER_NETWORKPOLICY = 0, /* networking.k8s.io/v1 NetworkPolicy */
  EGRESS__RENDER_CILIUM = 1,        /* cilium.io/v2 CiliumNetworkPolicy */
  EGRESS__RENDER_GATEWAY = 2        /* egressd and the NetworkPolicy around it */
} egress__render_format_t;

/* --replicas: at most this many gateway pods. */
#define EGRESS__RENDER_MAX_REPLICAS 100u

/* egressd's image when egress__render_opts_t.gateway_image is NULL. */
extern const char egress__render_default_gateway_image[];

typedef enum egress__render_component {
  EGRESS__COMPONENT_EXECUTION_PLANE = 0,
  EGRESS__COMPONENT_AGENT = 1
} egress__render_component_t;

/* The baseline: platform services every component may reach, whatever the
 * policy says (a parsed JSON document, see egress__render_baseline_load). */
typedef struct egress__render_baseline egress__render_baseline_t;

typedef struct egress__render_opts {
  egress__render_format_t format;
  egress__render_component_t component;
  const char *name_space;                    /* NULL: "portarium" */
  const char *name;                          /* NULL: "egress-<component>" */
  bool skip_unrenderable;                    /* leave out what cannot be expressed (fail
                               closed) instead of failing */
  const egress__render_baseline_t *baseline; /* NULL: the default */
  bool yaml;                                 /* YAML instead of JSON: the same document */
  /* EGRESS__RENDER_GATEWAY only.  component names the gateway's clients
   * (the agents); name (default "egress-gateway") must be an RFC 1035
   * label, as it names the Service. */
  const char *gateway_image; /* NULL: egress__render_default_gateway_image */
  unsigned replicas;         /* 0: 2; at most EGRESS__RENDER_MAX_REPLICAS */
  const char *policy_text;   /* the policy file's bytes (Borrowed, need not */
  size_t policy_len;         /* end in NUL): the ConfigMap holds them as they
                                are (UTF-8 without NUL, at most 1 MB) */
} egress__render_opts_t;

/* One finding about one entry: @p list / @p index / @p entry name it, @p what
 * says what (a full sentence fragment, no trailing period).  All Borrowed
 * for the duration of the call. */
typedef void (*egress__render_note_cb)(egress_list_t list, size_t index, const char *entry, const char *what,
                                       void *user_data);

/* Parse "execution-plane" / "agent" and "networkpolicy" / "cilium" / "gateway". */
bool egress__render_component_parse(const char *s, egress__render_component_t *out);
bool egress__render_format_parse(const char *s, egress__render_format_t *out);
const char *egress__render_component_name(egress__render_component_t c);

/*
 * Reads a baseline file:
 *   {"services": [{"namespace": "vault", "podLabels": {"k": "v"},
 *                  "ports": [8200], "protocols": ["TCP"],
 *                  "components": ["execution-plane", "agent"]}, ...]}
 * Each service is one egress rule of the baseline NetworkPolicy: to pods
 * matching podLabels (any pod when absent) in the namespace named (the
 * policy's own namespace when absent; at least one of the two is
 * required), on each port for each protocol (default ["TCP"]), for the
 * components listed (default both).  Unknown keys are refused.
 * @param out Caller owns: egress__render_baseline_free().
 * @return EGRESS_OK, EGRESS_EIO (unreadable), EGRESS_EPOLICY (errbuf says
 *         what is wrong), EGRESS_ENOMEM.
 */
egress_status_t egress__render_baseline_load(const char *path, egress__render_baseline_t **out, char *errbuf,
                                             size_t errlen);
void egress__render_baseline_free(egress__render_baseline_t *b);

/*
 * Render @p policy as a Kubernetes "List" (JSON text, indented, ending with a
 * newline; YAML with opts->yaml).  The List holds a namespace-wide default
 * deny of egress (a NetworkPolicy selecting every pod, in every format),
 * the baseline NetworkPolicy, and the policy itself.  For
 * EGRESS__RENDER_GATEWAY it holds instead the gateway (ConfigMap with the
 * policy text, Deployment of egressd, Service) and the NetworkPolicies
 * that make it the agents' only way out: agents to the gateway and DNS
 * only, the gateway to what the allowlist can reach (as NetworkPolicy
 * renders it) and DNS, the gateway from the agents only; then the default
 * deny.  Every entry the format cannot express is reported through
 * @p note (may be NULL).  Without skip_unrenderable such an entry makes the
 * call fail with EGRESS_EPOLICY and errbuf naming the first one; with it the
 * entry (or the part of it that cannot be expressed) is left out, so the
 * network layer denies that traffic.
 * @param out Caller owns: egress__free().
 * @return EGRESS_OK, EGRESS_EPOLICY (also: policy text a ConfigMap cannot
 *         hold), EGRESS_EINVAL (bad name, namespace, image, replicas:
 *         errbuf says which, quoting the value), EGRESS_ENOMEM.
 */
egress_status_t egress__render(const egress_policy_t *policy, const egress__render_opts_t *opts,
                               egress__render_note_cb note, void *user_data, char **out, char *errbuf,
                               size_t errlen);

/* For render.c: @p doc as YAML text (yaml.c says how), ending with a
 * newline; caller frees with egress__free().  NULL when out of memory. */
struct cJSON;
char *egress__render_yaml(const struct cJSON *doc);

/* A lint finding is a warning (most likely a mistake: lint --strict fails
 * on it) or a note (well-defined behaviour that may surprise: worth
 * knowing, never a failure). */
typedef enum egress__lint_level { EGRESS__LINT_WARNING = 0, EGRESS__LINT_NOTE = 1 } egress__lint_level_t;

typedef void (*egress__lint_cb)(egress__lint_level_t level, egress_list_t list, size_t index,
                                const char *entry, const char *what, void *user_data);

/*
 * Lint findings beyond validity.  Warnings: shadowed rules, duplicates,
 * allow entries the deny list takes away whole, rules that match
 * everything, URL entries whose scheme and port look swapped
 * ("https://h:80", "http://h:443"), URL entries whose path reads like a
 * prefix length ("http://10.0.0.0/8") or holds a glob star, bare
 * IPv6 addresses that read like address:port.  Notes: "*.x" / "**.x" whose
 * apex x is not allowed, entries that render cannot express (for Cilium,
 * the stricter format).  Each is reported through @p warn: entry findings
 * in list then index order, then what render cannot express.  Time grows with
 * the entry count times its log and with the findings, plus what is still
 * compared pairwise: each exact name with each "re:" entry of its list, and
 * entries of one name and path that differ in port ranges (not in single
 * ports).
 * @return the number of findings (warnings and notes), or -1 when memory
 *         ran out (findings already reported stand).
 */
long egress__render_lint(const egress_policy_t *policy, egress__lint_cb warn, void *user_data);

#endif
