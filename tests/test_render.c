/*
 * egressctl render and lint analysis (lib/render.c).
 *
 *  - golden: the manifests committed under examples/kubernetes/ are what the
 *    renderer makes of the example policy today (EGRESS_UPDATE_GOLDEN=1
 *    rewrites them);
 *  - structure: a validator of NetworkPolicy v1 / CiliumNetworkPolicy v2
 *    fields and types, run on every rendering and shown to reject broken
 *    documents;
 *  - semantics: an evaluator of the rendered Cilium policy (Cilium's name
 *    matching, CIDR + except, ports, egressDeny wins) and of the rendered
 *    NetworkPolicy, compared with egress_check_ex decisions over names from a
 *    hosts file and over thousands of IP literals around every range edge;
 *  - unrenderable entries, options, lint findings, allocation failures.
 */
#include "egress_private.h"
#include "render.h"
#include "testutil.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

static char tmpdir[128];
static char hosts_path[256];

/* ------------------------------------------------------------------------ */
/* Helpers                                                                   */
/* ------------------------------------------------------------------------ */

static egress_policy_t *policy_of(const char *const *allow, size_t na, const char *const *deny, size_t nd) {
  egress_policy_t *p = NULL;
  char err[EGRESS_ERRBUF_SIZE] = "";
  egress_status_t st = egress_policy_from_entries(allow, na, deny, nd, &p, err, sizeof err);
  if (st != EGRESS_OK) fprintf(stderr, "policy: %s\n", err);
  CU_ASSERT_FATAL(st == EGRESS_OK);
  return p;
}

static char *render(const egress_policy_t *p, egress__render_format_t fmt, egress__render_component_t comp,
                    bool skip, egress_status_t *st_out) {
  egress__render_opts_t o;
  char *out = NULL, err[EGRESS_ERRBUF_SIZE] = "";
  memset(&o, 0, sizeof o);
  o.format = fmt;
  o.component = comp;
  o.skip_unrenderable = skip;
  egress_status_t st = egress__render(p, &o, NULL, NULL, &out, err, sizeof err);
  if (st_out)
    *st_out = st;
  else if (st != EGRESS_OK)
    fprintf(stderr, "render: %s\n", err);
  return out;
}

static char *read_text(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  char *buf = NULL;
  size_t len = 0, cap = 0;
  for (;;) {
    if (len + 4096 + 1 > cap) {
      cap = cap ? cap * 2 : 8192;
      char *n = realloc(buf, cap);
      if (!n) break;
      buf = n;
    }
    size_t r = fread(buf + len, 1, cap - len - 1, f);
    len += r;
    if (r == 0) break;
  }
  fclose(f);
  if (buf) buf[len] = '\0';
  return buf;
}

/* ------------------------------------------------------------------------ */
/* Structural validator                                                      */
/* ------------------------------------------------------------------------ */

static char verr[256];

#define VFAIL(...)                            \
  do {                                        \
    snprintf(verr, sizeof verr, __VA_ARGS__); \
    return false;                             \
  } while (0)

static bool parse_cidr(const char *s, egress__prefix_t *out) {
  const char *slash = strchr(s, '/');
  if (!slash || !slash[1]) return false;
  size_t alen = (size_t)(slash - s);
  memset(out, 0, sizeof *out);
  bool v4 = egress__ip4_parse(s, alen, &out->addr);
  if (!v4 && !egress__ip6_parse(s, alen, &out->addr)) return false;
  char *end;
  long len = strtol(slash + 1, &end, 10);
  if (*end || len < 0 || len > (v4 ? 32 : 128) || (slash[1] == '0' && slash[2])) return false;
  out->len = (uint8_t)len;
  egress__prefix_t masked = *out;
  /* Host bits must be zero: Kubernetes and Cilium both reject them. */
  for (unsigned i = (unsigned)len; i < (v4 ? 32u : 128u); i++)
    masked.addr.bytes[i / 8] = (uint8_t)(masked.addr.bytes[i / 8] & ~(1u << (7 - i % 8)));
  return !memcmp(&masked.addr, &out->addr, sizeof out->addr);
}

static bool within(const egress__prefix_t *outer, const egress__prefix_t *inner) {
  return outer->addr.family == inner->addr.family && outer->len <= inner->len &&
         egress__prefix_contains(outer, &inner->addr);
}

static bool v_string(const cJSON *o, const char *key, const char **out) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
  if (!cJSON_IsString(v) || !v->valuestring[0]) return false;
  if (out) *out = v->valuestring;
  return true;
}

static bool v_labels(const cJSON *sel) {
  const cJSON *ml = cJSON_GetObjectItemCaseSensitive(sel, "matchLabels"), *it;
  if (!cJSON_IsObject(sel) || !cJSON_IsObject(ml) || !ml->child) return false;
  cJSON_ArrayForEach(it, ml) if (!cJSON_IsString(it) || !it->valuestring[0]) return false;
  return true;
}

static bool v_cidr_obj(const cJSON *o) {
  const char *c;
  egress__prefix_t cidr, ex;
  if (!cJSON_IsObject(o) || !v_string(o, "cidr", &c) || !parse_cidr(c, &cidr)) VFAIL("bad cidr");
  const cJSON *e = cJSON_GetObjectItemCaseSensitive(o, "except"), *it;
  if (!e) return true;
  if (!cJSON_IsArray(e) || cJSON_GetArraySize(e) == 0) VFAIL("except not a non-empty array");
  cJSON_ArrayForEach(it, e) {
    if (!cJSON_IsString(it) || !parse_cidr(it->valuestring, &ex)) VFAIL("bad except");
    /* Kubernetes: an except must be a strict subset of its cidr. */
    if (!within(&cidr, &ex) || ex.len == cidr.len) VFAIL("except %s outside %s", it->valuestring, c);
  }
  return true;
}

static bool v_int_port(const cJSON *v) {
  return cJSON_IsNumber(v) && v->valuedouble == (double)(int)v->valuedouble && v->valueint >= 1 &&
         v->valueint <= 65535;
}

static bool v_np_ports(const cJSON *ports) {
  const cJSON *p;
  if (!cJSON_IsArray(ports) || cJSON_GetArraySize(ports) == 0) VFAIL("ports not a non-empty array");
  cJSON_ArrayForEach(p, ports) {
    const char *proto;
    const cJSON *port = cJSON_GetObjectItemCaseSensitive(p, "port");
    const cJSON *end = cJSON_GetObjectItemCaseSensitive(p, "endPort");
    if (!v_string(p, "protocol", &proto) ||
        (strcmp(proto, "TCP") && strcmp(proto, "UDP") && strcmp(proto, "SCTP")))
      VFAIL("bad protocol");
    if (!v_int_port(port)) VFAIL("bad port");
    if (end && (!v_int_port(end) || end->valueint < port->valueint)) VFAIL("bad endPort");
  }
  return true;
}

static bool v_networkpolicy(const cJSON *spec) {
  const cJSON *pt = cJSON_GetObjectItemCaseSensitive(spec, "policyTypes");
  const cJSON *eg = cJSON_GetObjectItemCaseSensitive(spec, "egress"), *r;
  const cJSON *sel = cJSON_GetObjectItemCaseSensitive(spec, "podSelector");
  /* Every pod of the namespace only for the default deny, which allows
   * nothing. */
  bool all_pods = cJSON_IsObject(sel) && !sel->child;
  if (!(all_pods ? cJSON_IsArray(eg) && !eg->child : v_labels(sel))) VFAIL("bad podSelector");
  if (!cJSON_IsArray(pt) || cJSON_GetArraySize(pt) != 1 || !cJSON_IsString(cJSON_GetArrayItem(pt, 0)) ||
      strcmp(cJSON_GetArrayItem(pt, 0)->valuestring, "Egress"))
    VFAIL("policyTypes must be [Egress]");
  if (!cJSON_IsArray(eg)) VFAIL("egress not an array");
  cJSON_ArrayForEach(r, eg) {
    const cJSON *to = cJSON_GetObjectItemCaseSensitive(r, "to"), *peer;
    if (!cJSON_IsArray(to) || cJSON_GetArraySize(to) == 0) VFAIL("to not a non-empty array");
    cJSON_ArrayForEach(peer, to) {
      const cJSON *ib = cJSON_GetObjectItemCaseSensitive(peer, "ipBlock");
      const cJSON *ns = cJSON_GetObjectItemCaseSensitive(peer, "namespaceSelector");
      const cJSON *ps = cJSON_GetObjectItemCaseSensitive(peer, "podSelector");
      if (ib && (ns || ps)) VFAIL("ipBlock mixed with selectors");
      if (ib && !v_cidr_obj(ib)) return false;
      if (!ib && !ns && !ps) VFAIL("empty peer");
      if ((ns && !v_labels(ns)) || (ps && !v_labels(ps))) VFAIL("bad selector");
    }
    if (!v_np_ports(cJSON_GetObjectItemCaseSensitive(r, "ports"))) return false;
  }
  return true;
}

static bool v_name_chars(const char *s, bool pattern) {
  if (!*s || strlen(s) > 255) return false;
  for (; *s; s++)
    if (!isalnum((unsigned char)*s) && *s != '-' && *s != '_' && *s != '.' && !(pattern && *s == '*'))
      return false;
  return true;
}

static bool v_cil_ports(const cJSON *tp, bool deny) {
  const cJSON *e, *p;
  if (!cJSON_IsArray(tp) || cJSON_GetArraySize(tp) == 0) VFAIL("toPorts not a non-empty array");
  cJSON_ArrayForEach(e, tp) {
    const cJSON *ports = cJSON_GetObjectItemCaseSensitive(e, "ports");
    const cJSON *rules = cJSON_GetObjectItemCaseSensitive(e, "rules");
    if (!cJSON_IsArray(ports) || cJSON_GetArraySize(ports) == 0) VFAIL("ports empty");
    if (rules && deny) VFAIL("L7 rules in a deny rule");
    cJSON_ArrayForEach(p, ports) {
      const char *port, *proto;
      const cJSON *end = cJSON_GetObjectItemCaseSensitive(p, "endPort");
      if (!v_string(p, "port", &port) || !v_string(p, "protocol", &proto)) VFAIL("port/protocol");
      char *x;
      long v = strtol(port, &x, 10);
      if (*x || v < 1 || v > 65535 || port[0] == '0') VFAIL("port '%s' not a string 1-65535", port);
      if (strcmp(proto, "TCP") && strcmp(proto, "UDP") && strcmp(proto, "SCTP") && strcmp(proto, "ANY"))
        VFAIL("bad protocol");
      if (end && (!v_int_port(end) || end->valueint < v)) VFAIL("bad endPort");
    }
    if (rules) {
      const cJSON *dns = cJSON_GetObjectItemCaseSensitive(rules, "dns"), *d;
      if (!cJSON_IsArray(dns) || cJSON_GetArraySize(dns) == 0) VFAIL("rules.dns");
      cJSON_ArrayForEach(d, dns) {
        const char *mp;
        if (!v_string(d, "matchPattern", &mp) || !v_name_chars(mp, true)) VFAIL("dns matchPattern");
      }
    }
  }
  return true;
}

static bool v_cil_rule(const cJSON *r, bool deny) {
  static const char *const l3[] = { "toEndpoints", "toCIDRSet", "toFQDNs", "toCIDR", "toEntities" };
  int n = 0;
  const cJSON *it;
  for (size_t i = 0; i < NELEM(l3); i++) n += cJSON_GetObjectItemCaseSensitive(r, l3[i]) != NULL;
  /* Cilium requires exactly one kind of L3 selector per rule. */
  if (n != 1) VFAIL("a rule needs exactly one L3 selector");
  const cJSON *fq = cJSON_GetObjectItemCaseSensitive(r, "toFQDNs");
  const cJSON *cs = cJSON_GetObjectItemCaseSensitive(r, "toCIDRSet");
  const cJSON *te = cJSON_GetObjectItemCaseSensitive(r, "toEndpoints");
  if (fq) {
    if (deny) VFAIL("egressDeny has no toFQDNs");
    if (!cJSON_IsArray(fq) || cJSON_GetArraySize(fq) == 0) VFAIL("toFQDNs empty");
    cJSON_ArrayForEach(it, fq) {
      const char *mn = NULL, *mp = NULL;
      bool hn = v_string(it, "matchName", &mn), hp = v_string(it, "matchPattern", &mp);
      if (hn == hp) VFAIL("toFQDNs element needs one of matchName/matchPattern");
      if (hn && !v_name_chars(mn, false)) VFAIL("bad matchName");
      if (hp && !v_name_chars(mp, true)) VFAIL("bad matchPattern");
    }
  }
  if (cs) {
    if (!cJSON_IsArray(cs) || cJSON_GetArraySize(cs) == 0) VFAIL("toCIDRSet empty");
    cJSON_ArrayForEach(it, cs) if (!v_cidr_obj(it)) return false;
  }
  if (te) {
    if (!cJSON_IsArray(te) || cJSON_GetArraySize(te) == 0) VFAIL("toEndpoints empty");
    cJSON_ArrayForEach(it, te) if (!v_labels(it)) VFAIL("toEndpoints selector");
  }
  const cJSON *tp = cJSON_GetObjectItemCaseSensitive(r, "toPorts");
  if (tp && !v_cil_ports(tp, deny)) return false;
  if (!tp && !deny) VFAIL("allow rule without toPorts");
  return true;
}

static bool v_cilium(const cJSON *spec) {
  const cJSON *eg = cJSON_GetObjectItemCaseSensitive(spec, "egress");
  const cJSON *ed = cJSON_GetObjectItemCaseSensitive(spec, "egressDeny"), *r;
  if (!v_labels(cJSON_GetObjectItemCaseSensitive(spec, "endpointSelector"))) VFAIL("endpointSelector");
  if (!cJSON_IsArray(eg) || cJSON_GetArraySize(eg) == 0) VFAIL("egress");
  cJSON_ArrayForEach(r, eg) if (!v_cil_rule(r, false)) return false;
  if (ed) {
    if (!cJSON_IsArray(ed) || cJSON_GetArraySize(ed) == 0) VFAIL("egressDeny");
    cJSON_ArrayForEach(r, ed) if (!v_cil_rule(r, true)) return false;
  }
  return true;
}

static bool v_k8s_name(const char *s, size_t max) {
  size_t n = strlen(s);
  if (n == 0 || n > max || !isalnum((unsigned char)s[0]) || !isalnum((unsigned char)s[n - 1])) return false;
  for (size_t i = 0; i < n; i++)
    if (!(islower((unsigned char)s[i]) || isdigit((unsigned char)s[i]) || s[i] == '-' || s[i] == '.'))
      return false;
  return true;
}

/* Whole document: a v1 List of NetworkPolicy / CiliumNetworkPolicy. */
static bool validate_doc(const cJSON *doc, bool want_cilium) {
  const char *s;
  const cJSON *items, *it;
  bool seen_np = false, seen_cnp = false;
  if (!cJSON_IsObject(doc) || !v_string(doc, "apiVersion", &s) || strcmp(s, "v1") ||
      !v_string(doc, "kind", &s) || strcmp(s, "List"))
    VFAIL("not a v1 List");
  items = cJSON_GetObjectItemCaseSensitive(doc, "items");
  if (!cJSON_IsArray(items) || cJSON_GetArraySize(items) < 2) VFAIL("items");
  cJSON_ArrayForEach(it, items) {
    const char *api, *kind, *name, *ns;
    const cJSON *md = cJSON_GetObjectItemCaseSensitive(it, "metadata");
    const cJSON *spec = cJSON_GetObjectItemCaseSensitive(it, "spec");
    if (!v_string(it, "apiVersion", &api) || !v_string(it, "kind", &kind)) VFAIL("apiVersion/kind");
    if (!cJSON_IsObject(md) || !v_string(md, "name", &name) || !v_k8s_name(name, 253)) VFAIL("metadata.name");
    if (!v_string(md, "namespace", &ns) || !v_k8s_name(ns, 63) || strchr(ns, '.'))
      VFAIL("metadata.namespace");
    if (!cJSON_IsObject(spec)) VFAIL("spec");
    if (!strcmp(kind, "NetworkPolicy") && !strcmp(api, "networking.k8s.io/v1")) {
      if (!v_networkpolicy(spec)) return false;
      seen_np = true;
    } else if (!strcmp(kind, "CiliumNetworkPolicy") && !strcmp(api, "cilium.io/v2")) {
      if (!v_cilium(spec)) return false;
      seen_cnp = true;
    } else {
      VFAIL("unexpected %s %s", api, kind);
    }
  }
  if (!seen_np || seen_cnp != want_cilium) VFAIL("wrong set of kinds");
  return true;
}

static bool validate_text(const char *text, bool want_cilium) {
  cJSON *doc = cJSON_Parse(text);
  bool ok = doc && validate_doc(doc, want_cilium);
  if (!ok) fprintf(stderr, "validator: %s\n", doc ? verr : "not JSON");
  cJSON_Delete(doc);
  return ok;
}

/* ------------------------------------------------------------------------ */
/* Evaluators of the rendered policy                                         */
/* ------------------------------------------------------------------------ */

static bool cidrset_has(const cJSON *set, const egress__ip_t *ip) {
  const cJSON *el;
  cJSON_ArrayForEach(el, set) {
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(el, "cidr");
    const cJSON *ex = cJSON_GetObjectItemCaseSensitive(el, "except"), *e;
    egress__prefix_t p;
    if (!cJSON_IsString(c) || !parse_cidr(c->valuestring, &p) || !egress__prefix_contains(&p, ip)) continue;
    bool out = false;
    cJSON_ArrayForEach(e, ex) {
      egress__prefix_t q;
      if (parse_cidr(e->valuestring, &q) && egress__prefix_contains(&q, ip)) out = true;
    }
    if (!out) return true;
  }
  return false;
}

/* Cilium's toPorts (string ports) or NetworkPolicy ports (numbers). */
static bool port_in(const cJSON *ports, unsigned port, bool tcp_only) {
  const cJSON *p;
  cJSON_ArrayForEach(p, ports) {
    const cJSON *pv = cJSON_GetObjectItemCaseSensitive(p, "port");
    const cJSON *ev = cJSON_GetObjectItemCaseSensitive(p, "endPort");
    const cJSON *pr = cJSON_GetObjectItemCaseSensitive(p, "protocol");
    long lo = cJSON_IsString(pv) ? strtol(pv->valuestring, NULL, 10) : (long)pv->valuedouble;
    long hi = ev ? (long)ev->valuedouble : lo;
    if (tcp_only && strcmp(pr->valuestring, "TCP") && strcmp(pr->valuestring, "ANY")) continue;
    if (lo == 0 || (port >= (unsigned long)lo && port <= (unsigned long)hi)) return true;
  }
  return false;
}

static bool toports_has(const cJSON *tp, unsigned port) {
  const cJSON *e;
  if (!tp) return true; /* no toPorts: every port */
  cJSON_ArrayForEach(e,
                     tp) if (port_in(cJSON_GetObjectItemCaseSensitive(e, "ports"), port, true)) return true;
  return false;
}

/* Cilium matchPattern semantics (pkg/fqdn/matchpattern): "*" alone (or only
 * stars) is every name; a leading "**." is one or more whole labels; any
 * other "*" is zero or more of [-a-zA-Z0-9_] inside one label. */
static bool glob_label(const char *pat, const char *name) {
  if (!*pat) return !*name;
  if (*pat == '*') {
    while (*pat == '*') pat++;
    for (const char *n = name;; n++) {
      if (glob_label(pat, n)) return true;
      if (!*n || !(isalnum((unsigned char)*n) || *n == '-' || *n == '_')) return false;
    }
  }
  return tolower((unsigned char)*pat) == tolower((unsigned char)*name) && glob_label(pat + 1, name + 1);
}

static bool cilium_name_match(const cJSON *sel, const char *name) {
  const cJSON *mn = cJSON_GetObjectItemCaseSensitive(sel, "matchName");
  const cJSON *mp = cJSON_GetObjectItemCaseSensitive(sel, "matchPattern");
  if (mn) return !strcasecmp(mn->valuestring, name);
  const char *p = mp->valuestring;
  size_t stars = strspn(p, "*");
  if (!p[stars]) return true;
  if (stars >= 2 && p[stars] == '.') {
    const char *suffix = p + stars; /* ".x" */
    size_t nl = strlen(name), sl = strlen(suffix);
    if (nl <= sl || strcasecmp(name + nl - sl, suffix)) return false;
    for (size_t i = 0; i < nl - sl; i++)
      if (!(isalnum((unsigned char)name[i]) || name[i] == '-' || name[i] == '_' ||
            (name[i] == '.' && i > 0 && name[i - 1] != '.' && i + 1 < nl - sl)))
        return false;
    return true;
  }
  return glob_label(p, name);
}

/* Would the rendered CiliumNetworkPolicy let a TCP connection to @p ip on
 * @p port through, @p name being what the pod looked up (NULL: a literal)? */
static bool cilium_allows(const cJSON *doc, const char *name, const egress__ip_t *ip, unsigned port) {
  const cJSON *items = cJSON_GetObjectItemCaseSensitive(doc, "items"), *it, *r;
  bool allow = false;
  cJSON_ArrayForEach(it, items) {
    if (strcmp(cJSON_GetObjectItemCaseSensitive(it, "kind")->valuestring, "CiliumNetworkPolicy")) continue;
    const cJSON *spec = cJSON_GetObjectItemCaseSensitive(it, "spec");
    cJSON_ArrayForEach(r, cJSON_GetObjectItemCaseSensitive(spec, "egressDeny")) {
      if (cidrset_has(cJSON_GetObjectItemCaseSensitive(r, "toCIDRSet"), ip) &&
          toports_has(cJSON_GetObjectItemCaseSensitive(r, "toPorts"), port))
        return false; /* deny wins */
    }
    cJSON_ArrayForEach(r, cJSON_GetObjectItemCaseSensitive(spec, "egress")) {
      const cJSON *fq = cJSON_GetObjectItemCaseSensitive(r, "toFQDNs"), *s;
      const cJSON *cs = cJSON_GetObjectItemCaseSensitive(r, "toCIDRSet");
      bool l3 = false;
      if (fq && name) cJSON_ArrayForEach(s, fq) l3 = l3 || cilium_name_match(s, name);
      if (cs) l3 = cidrset_has(cs, ip);
      if (l3 && toports_has(cJSON_GetObjectItemCaseSensitive(r, "toPorts"), port)) allow = true;
    }
  }
  return allow;
}

/* The system-of-record NetworkPolicy: ipBlock peers only. */
static bool netpol_allows(const cJSON *doc, const egress__ip_t *ip, unsigned port) {
  const cJSON *items = cJSON_GetObjectItemCaseSensitive(doc, "items"), *it, *r, *peer;
  cJSON_ArrayForEach(it, items) {
    const cJSON *md = cJSON_GetObjectItemCaseSensitive(it, "metadata");
    const cJSON *lab = cJSON_GetObjectItemCaseSensitive(md, "labels");
    const cJSON *layer = cJSON_GetObjectItemCaseSensitive(lab, "portarium.io/egress-layer");
    if (!layer || strcmp(layer->valuestring, "system-of-record")) continue;
    cJSON_ArrayForEach(
        r, cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(it, "spec"), "egress")) {
      if (!port_in(cJSON_GetObjectItemCaseSensitive(r, "ports"), port, true)) continue;
      cJSON_ArrayForEach(peer, cJSON_GetObjectItemCaseSensitive(r, "to")) {
        const cJSON *ib = cJSON_GetObjectItemCaseSensitive(peer, "ipBlock");
        cJSON *one = cJSON_CreateArray();
        cJSON_AddItemReferenceToArray(one, (cJSON *)ib);
        bool hit = ib && cidrset_has(one, ip);
        cJSON_Delete(one);
        if (hit) return true;
      }
    }
  }
  return false;
}

/* ------------------------------------------------------------------------ */
/* Destinations                                                              */
/* ------------------------------------------------------------------------ */

typedef struct dest {
  char host[128];
  char addr[64]; /* the name's address (hosts file); the literal itself */
  bool is_name;
} dest_t;

/* Addresses given to names: public ones the checker accepts and hostile
 * ones it must refuse (rebinding to loopback, metadata, private, NAT64 and
 * 6to4 forms of them, a private database range opened only on 5432). */
static const char *const name_addrs[] = {
  "93.184.216.34",  "151.101.1.69",   "2606:4700::6810:84e5",
  "104.16.132.229", "127.0.0.1",      "169.254.169.254",
  "10.0.0.7",       "10.20.3.15",     "::1",
  "fd00::1",        "64:ff9b::a00:7", "64:ff9b::5db8:d822",
  "2002:7f00:1::1", "192.0.0.9",      "192.0.0.170",
  "100.64.0.1",     "151.101.64.10",  "10.1.2.3",
  "10.1.200.3",     "2001:db8::5",    "203.0.113.5",
};

static dest_t *dests;
static size_t ndests, capdests;
static char *hosts_text;
static size_t hosts_len, hosts_cap;
static unsigned name_seq;

static void add_dest(const char *host, const char *addr, bool is_name) {
  if (ndests == capdests) {
    capdests = capdests ? capdests * 2 : 256;
    dests = realloc(dests, capdests * sizeof *dests);
    CU_ASSERT_FATAL(dests != NULL);
  }
  snprintf(dests[ndests].host, sizeof dests[ndests].host, "%s", host);
  snprintf(dests[ndests].addr, sizeof dests[ndests].addr, "%s", addr);
  dests[ndests].is_name = is_name;
  ndests++;
}

static void add_host_line(const char *addr, const char *name) {
  size_t need = strlen(addr) + strlen(name) + 3;
  if (hosts_len + need + 1 > hosts_cap) {
    hosts_cap = (hosts_cap + need + 1) * 2;
    hosts_text = realloc(hosts_text, hosts_cap);
    CU_ASSERT_FATAL(hosts_text != NULL);
  }
  hosts_len += (size_t)snprintf(hosts_text + hosts_len, hosts_cap - hosts_len, "%s %s\n", addr, name);
}

/* A fresh name (each name has one address in the hosts file) under @p base. */
static void add_name(const char *label, const char *base, const char *addr) {
  char host[300];
  if (base[0])
    snprintf(host, sizeof host, "%s%u.%s", label, name_seq++, base);
  else
    snprintf(host, sizeof host, "%s", label);
  add_host_line(addr, host);
  add_dest(host, addr, true);
}

/* Names for every host rule of @p p: the rule's own names and neighbours
 * (apex, deeper labels), each with public and hostile addresses. */
static void names_for_policy(const egress_policy_t *p) {
  for (int l = 0; l < 2; l++)
    for (size_t i = 0; i < p->nrules[l]; i++) {
      const egress__rule_t *r = &p->rules[l][i];
      if (r->kind == EGRESS__RULE_CIDR || r->kind == EGRESS__RULE_ANY) continue;
      for (size_t a = 0; a < NELEM(name_addrs); a += (r->kind == EGRESS__RULE_EXACT ? 1 : 3)) {
        if (r->kind == EGRESS__RULE_EXACT) {
          /* One name, one address: the rule's name takes the first (public)
           * one; siblings take the rest. */
          if (a == 0)
            add_name(r->name, "", name_addrs[0]);
          else
            add_name("sib", r->name, name_addrs[a]);
        } else if (r->kind == EGRESS__RULE_REGEX) {
          add_name("api-", "example.com", name_addrs[a]);
        } else {
          add_name("a", r->name, name_addrs[a]);
          char deeper[128];
          snprintf(deeper, sizeof deeper, "x.%s", r->name);
          add_name("b", deeper, name_addrs[(a + 1) % NELEM(name_addrs)]);
        }
      }
      if (r->kind == EGRESS__RULE_WILD1 || r->kind == EGRESS__RULE_WILDN) {
        /* The apex, public. */
        bool known = false;
        for (size_t d = 0; d < ndests; d++) known = known || !strcmp(dests[d].host, r->name);
        if (!known) add_name(r->name, "", name_addrs[1]);
      }
    }
  add_name("unlisted", "attacker.example", name_addrs[0]);
  add_name("unlisted", "attacker.example", name_addrs[4]);
}

/* IP literals at and around the edge of every range that matters. */
static void literals_for_policy(const egress_policy_t *p, unsigned seed) {
  egress__prefix_t *edges = NULL;
  size_t n = 0;
  edges = calloc(egress__special_block_count + p->nrules[0] + p->nrules[1] + 4, sizeof *edges);
  CU_ASSERT_FATAL(edges != NULL);
  for (size_t i = 0; i < egress__special_block_count; i++) edges[n++] = egress__special_blocks[i].prefix;
  for (int l = 0; l < 2; l++)
    for (size_t i = 0; i < p->nrules[l]; i++)
      if (p->rules[l][i].kind == EGRESS__RULE_CIDR) edges[n++] = p->rules[l][i].cidr;
  srand(seed);
  for (size_t i = 0; i < n; i++) {
    unsigned bits = edges[i].addr.family == 4 ? 32 : 128;
    for (int k = 0; k < 6; k++) {
      egress__ip_t ip = edges[i].addr;
      /* first, last, just outside on both sides, two random inside */
      for (unsigned b = edges[i].len; b < bits; b++) {
        unsigned v = k == 1 ? 1u : k >= 4 ? (unsigned)rand() & 1u : 0u;
        if (v) ip.bytes[b / 8] = (uint8_t)(ip.bytes[b / 8] | (1u << (7 - b % 8)));
      }
      if (k == 2 || k == 3) {
        /* step one address below the first / above the last */
        if (k == 3)
          for (unsigned b = edges[i].len; b < bits; b++)
            ip.bytes[b / 8] = (uint8_t)(ip.bytes[b / 8] | (1u << (7 - b % 8)));
        int carry_dir = k == 2 ? -1 : 1;
        for (int byte = (int)bits / 8 - 1; byte >= 0; byte--) {
          int v = ip.bytes[byte] + carry_dir;
          ip.bytes[byte] = (uint8_t)v;
          if (v >= 0 && v <= 255) break;
        }
      }
      char text[EGRESS__IPSTR_MAX];
      egress__ip_format(&ip, text, sizeof text);
      add_dest(text, text, false);
    }
  }
  free(edges);
}

static const unsigned probe_ports[] = { 22, 25, 80, 443, 5432, 7999, 8000, 8050, 8100, 8443, 9000, 65535 };

static egress_checker_t *checker_for(egress_policy_t *p) {
  egress_options_t *o = NULL;
  egress_checker_t *c = NULL;
  CU_ASSERT_FATAL(egress_options_new(&o) == EGRESS_OK);
  CU_ASSERT_FATAL(egress_options_set_hosts_file(o, hosts_path) == EGRESS_OK);
  CU_ASSERT_FATAL(egress_options_set_timeout_ms(o, 2000) == EGRESS_OK);
  CU_ASSERT_FATAL(egress_checker_new(p, o, &c, NULL, 0) == EGRESS_OK);
  egress_options_free(o);
  return c;
}

static void write_hosts(void) {
  FILE *f = fopen(hosts_path, "w");
  CU_ASSERT_FATAL(f != NULL);
  fputs(hosts_text ? hosts_text : "", f);
  CU_ASSERT_FATAL(fclose(f) == 0);
}

typedef struct tally {
  size_t checks, app_allow, mismatches, name_allow;
} tally_t;

/*
 * Compare the app-layer decision under @p app_policy with the rendered
 * Cilium policy @p cnp (NULL: skip) and the rendered NetworkPolicy @p np
 * (NULL: skip) for every destination and probe port.
 *
 * The network layer sees the address only: a connection to a name's
 * address is also a connection to that address as a literal.  So for a
 * name the rendered policy must allow exactly when the app allows the name
 * or the app allows the address as a literal; for a literal, exactly when
 * the app allows it.  NetworkPolicy cannot see names at all: for a name it
 * must at least let the vetted address through on that port.
 */
static void compare(egress_policy_t *app_policy, const cJSON *cnp, const cJSON *np, tally_t *t) {
  egress_checker_t *ck = checker_for(app_policy);
  for (size_t i = 0; i < ndests; i++)
    for (size_t k = 0; k < NELEM(probe_ports); k++) {
      const dest_t *d = &dests[i];
      unsigned port = probe_ports[k];
      egress_decision_t *dec = NULL, *lit = NULL;
      CU_ASSERT(egress_check_ex(ck, d->host, (int32_t)port, NULL, &dec) == EGRESS_OK);
      CU_ASSERT(egress_check_ex(ck, d->addr, (int32_t)port, NULL, &lit) == EGRESS_OK);
      bool app = egress_decision_verdict(dec) == EGRESS_VERDICT_ALLOW;
      bool app_lit = egress_decision_verdict(lit) == EGRESS_VERDICT_ALLOW;
      CU_ASSERT(egress_decision_outcome(dec) != EGRESS_OUTCOME_ENFORCEMENT_UNAVAILABLE);
      egress__host_t h;
      const char *why;
      CU_ASSERT_FATAL(egress__canon_host(d->addr, strlen(d->addr), &h, &why) == EGRESS_OK);
      t->checks++;
      t->app_allow += app;
      t->name_allow += app && d->is_name && !app_lit;
      if (cnp) {
        bool l3 = cilium_allows(cnp, d->is_name ? d->host : NULL, &h.ip, port);
        if ((app || app_lit) != l3) {
          t->mismatches++;
          if (t->mismatches <= 10)
            fprintf(stderr, "MISMATCH %s (%s) port %u: app %s (%s), literal %s, cilium %s\n", d->host,
                    d->addr, port, app ? "allow" : "deny", egress_reason_name(egress_decision_reason(dec)),
                    app_lit ? "allow" : "deny", l3 ? "allow" : "deny");
        }
      }
      if (np) {
        /* On a port some name entry uses, NetworkPolicy opens every vetted
         * address (it cannot see names), so there it must only contain what
         * the app allows; on any other port it must be exact. */
        bool name_port = false;
        for (size_t r = 0; r < app_policy->nrules[EGRESS_LIST_ALLOW]; r++) {
          const egress__rule_t *ru = &app_policy->rules[EGRESS_LIST_ALLOW][r];
          name_port =
              name_port || (ru->kind != EGRESS__RULE_CIDR && port >= ru->port_lo && port <= ru->port_hi);
        }
        bool npa = netpol_allows(np, &h.ip, port);
        if ((app || app_lit) ? !npa : (npa && !name_port)) {
          t->mismatches++;
          if (t->mismatches <= 10)
            fprintf(stderr, "NETPOL MISMATCH %s (%s) port %u: app %d netpol %d\n", d->host, d->addr, port,
                    app, npa);
        }
      }
      egress_decision_free(dec);
      egress_decision_free(lit);
    }
  egress_checker_free(ck);
}

/* ------------------------------------------------------------------------ */
/* Policies                                                                  */
/* ------------------------------------------------------------------------ */

static const char *const demo_allow[] = {
  "https://api.crm.example.com", "https://login.crm.example.com/oauth2",
  "*.files.crm.example.com",     "https://erp.acme.example:8443/api",
  "**.cdn.example.net",          "151.101.0.0/16:443",
  "10.20.0.0/16:5432",           "orders-db.acme.internal:5432"
};
static const char *const demo_deny[] = { "exports.files.crm.example.com" };

/* Everything Cilium can express exactly, and then some. */
static const char *const rich_allow[] = { "api.example.com",         "https://docs.example.com/v1",
                                          "*.svc.example.com:8443",  "**.cdn.example.net:443",
                                          "pub.example.org:*",       "*:9000",
                                          "151.101.0.0/16:443",      "10.1.0.0/16:5432",
                                          "0.0.0.0/0:8443",          "[2606:4700::]/32:443",
                                          "[2001:db8::]/32:443",     "[::]/0:8443",
                                          "[64:ff9b::]/96:443",      "192.0.0.0/24:443",
                                          "100.64.0.0/10:8000-8100", "[2002::]/16:80" };
static const char *const rich_deny[] = { "151.101.64.0/18:443",        "203.0.113.5",  "pub.example.org:22",
                                         "10.1.2.0/24:5432",           "0.0.0.0/0:25", "api.example.com:80",
                                         "*.svc.example.com:8443-8443" };

/* ------------------------------------------------------------------------ */
/* Tests                                                                     */
/* ------------------------------------------------------------------------ */

static int suite_init(void) {
  snprintf(tmpdir, sizeof tmpdir, "/tmp/egress-render-XXXXXX");
  if (!mkdtemp(tmpdir)) return -1;
  snprintf(hosts_path, sizeof hosts_path, "%s/hosts", tmpdir);
  return 0;
}

static int suite_cleanup(void) {
  unlink(hosts_path);
  rmdir(tmpdir);
  free(dests);
  free(hosts_text);
  dests = NULL;
  hosts_text = NULL;
  ndests = capdests = hosts_len = hosts_cap = 0;
  return 0;
}

static const char *const golden_names[2][2] = { { "networkpolicy-execution-plane.json",
                                                  "networkpolicy-agent.json" },
                                                { "cilium-execution-plane.json", "cilium-agent.json" } };

static void test_golden_examples(void) {
  char ppath[512], gpath[512], rel[256];
  egress_policy_t *p = NULL;
  CU_ASSERT_FATAL(egress_test_path("../examples/policies/demo-policy.json", ppath, sizeof ppath) != NULL);
  CU_ASSERT_FATAL(egress_policy_from_file(ppath, &p, NULL, 0) == EGRESS_OK);
  bool update = getenv("EGRESS_UPDATE_GOLDEN") && !strcmp(getenv("EGRESS_UPDATE_GOLDEN"), "1");
  for (int f = 0; f < 2; f++)
    for (int comp = 0; comp < 2; comp++) {
      char *out = render(p, (egress__render_format_t)f, (egress__render_component_t)comp, true, NULL);
      CU_ASSERT_FATAL(out != NULL);
      CU_ASSERT(validate_text(out, f == EGRESS__RENDER_CILIUM));
      snprintf(rel, sizeof rel, "../examples/kubernetes/%s", golden_names[f][comp]);
      CU_ASSERT_FATAL(egress_test_path(rel, gpath, sizeof gpath) != NULL);
      if (update) {
        FILE *g = fopen(gpath, "w");
        CU_ASSERT_FATAL(g != NULL);
        fputs(out, g);
        fclose(g);
      }
      char *want = read_text(gpath);
      CU_ASSERT(want != NULL);
      if (want && strcmp(want, out)) {
        fprintf(stderr,
                "%s differs from the rendering: run the test with EGRESS_UPDATE_GOLDEN=1 "
                "(or egressctl render) and review the diff\n",
                gpath);
        CU_FAIL("golden manifest out of date");
      }
      /* Deterministic: a second run is byte-identical. */
      char *again = render(p, (egress__render_format_t)f, (egress__render_component_t)comp, true, NULL);
      CU_ASSERT(again && !strcmp(again, out));
      free(want);
      egress__free(again);
      egress__free(out);
    }
  egress_policy_unref(p);
}

static void test_structure_all_policies(void) {
  const char *const empty[] = { NULL };
  struct {
    const char *const *a;
    size_t na;
    const char *const *d;
    size_t nd;
  } pols[] = { { demo_allow, NELEM(demo_allow), demo_deny, NELEM(demo_deny) },
               { rich_allow, NELEM(rich_allow), rich_deny, NELEM(rich_deny) },
               { empty, 0, empty, 0 } };
  for (size_t i = 0; i < NELEM(pols); i++) {
    egress_policy_t *p = policy_of(pols[i].a, pols[i].na, pols[i].d, pols[i].nd);
    for (int f = 0; f < 2; f++)
      for (int comp = 0; comp < 2; comp++) {
        char *out = render(p, (egress__render_format_t)f, (egress__render_component_t)comp, true, NULL);
        CU_ASSERT_FATAL(out != NULL);
        CU_ASSERT(validate_text(out, f == 1));
        cJSON *doc = cJSON_Parse(out);
        const cJSON *base = cJSON_GetArrayItem(cJSON_GetObjectItem(doc, "items"), 0);
        const cJSON *eg = cJSON_GetObjectItem(cJSON_GetObjectItem(base, "spec"), "egress");
        /* agent: control plane, vault, DNS; execution plane adds temporal
         * and the collector. */
        CU_ASSERT(cJSON_GetArraySize(eg) == (comp == 1 ? 3 : 5));
        CU_ASSERT(strstr(out, comp ? "\"temporal\"" : "\"agent\"") == NULL);
        cJSON_Delete(doc);
        egress__free(out);
      }
    egress_policy_unref(p);
  }
}

static const cJSON *jpath(const cJSON *o, const char *const *keys) {
  for (size_t i = 0; o && keys[i]; i++) o = cJSON_GetObjectItemCaseSensitive(o, keys[i]);
  return o;
}

/* --format gateway over every test policy: each egress NetworkPolicy passes
 * the validator; every selector names the Deployment's pods or the agents;
 * the agents reach the gateway pods and kube-dns only; the gateway's
 * egress is the networkpolicy rendering's plus DNS. */
static void test_gateway_structure(void) {
  const char *const empty[] = { NULL };
  static const char *const sel_keys[] = { "spec", "selector", "matchLabels", NULL };
  static const char *const pod_keys[] = { "spec", "podSelector", "matchLabels", NULL };
  static const char *const eg_keys[] = { "spec", "egress", NULL };
  struct {
    const char *const *a;
    size_t na;
    const char *const *d;
    size_t nd;
  } pols[] = { { demo_allow, NELEM(demo_allow), demo_deny, NELEM(demo_deny) },
               { rich_allow, NELEM(rich_allow), rich_deny, NELEM(rich_deny) },
               { empty, 0, empty, 0 } };
  for (size_t i = 0; i < NELEM(pols); i++) {
    egress_policy_t *p = policy_of(pols[i].a, pols[i].na, pols[i].d, pols[i].nd);
    egress__render_opts_t o;
    char *out = NULL, *np = NULL, err[EGRESS_ERRBUF_SIZE];
    memset(&o, 0, sizeof o);
    o.format = EGRESS__RENDER_GATEWAY;
    o.component = EGRESS__COMPONENT_AGENT;
    o.skip_unrenderable = true;
    o.policy_text = "{}";
    o.policy_len = 2;
    CU_ASSERT_FATAL(egress__render(p, &o, NULL, NULL, &out, err, sizeof err) == EGRESS_OK);
    np = render(p, EGRESS__RENDER_NETWORKPOLICY, EGRESS__COMPONENT_AGENT, true, NULL);
    CU_ASSERT_FATAL(np != NULL);
    cJSON *doc = cJSON_Parse(out), *npdoc = cJSON_Parse(np);
    const cJSON *items = cJSON_GetObjectItem(doc, "items");
    CU_ASSERT_FATAL(cJSON_GetArraySize(items) == 7);
    const cJSON *dep = cJSON_GetArrayItem(items, 1), *svc = cJSON_GetArrayItem(items, 2);
    const cJSON *gw = jpath(dep, sel_keys);
    CU_ASSERT_FATAL(cJSON_IsObject(gw) && gw->child != NULL);
    static const char *const tmpl_keys[] = { "spec", "template", "metadata", "labels", NULL };
    static const char *const svc_keys[] = { "spec", "selector", NULL };
    CU_ASSERT(cJSON_Compare(gw, jpath(dep, tmpl_keys), true));
    CU_ASSERT(cJSON_Compare(gw, jpath(svc, svc_keys), true));
    cJSON *agents = cJSON_Parse("{\"portarium.io/component\": \"agent\"}");
    for (int k = 3; k < 6; k++) {
      const cJSON *pol = cJSON_GetArrayItem(items, k);
      const cJSON *sel = jpath(pol, pod_keys);
      bool is_gw = cJSON_Compare(sel, gw, true);
      CU_ASSERT(is_gw == (k != 3));
      CU_ASSERT(is_gw || cJSON_Compare(sel, agents, true));
      if (k != 4) CU_ASSERT(v_networkpolicy(cJSON_GetObjectItem(pol, "spec")));
    }
    /* The agents: the gateway's pods (same namespace) on 3128, then DNS. */
    const cJSON *ceg = jpath(cJSON_GetArrayItem(items, 3), eg_keys);
    CU_ASSERT_FATAL(cJSON_GetArraySize(ceg) == 2);
    const cJSON *peer = cJSON_GetArrayItem(cJSON_GetObjectItem(cJSON_GetArrayItem(ceg, 0), "to"), 0);
    static const char *const peer_keys[] = { "podSelector", "matchLabels", NULL };
    CU_ASSERT(cJSON_GetArraySize(peer) == 1 && cJSON_Compare(jpath(peer, peer_keys), gw, true));
    /* The gateway: the networkpolicy rendering's rules, then DNS. */
    const cJSON *geg = jpath(cJSON_GetArrayItem(items, 5), eg_keys);
    const cJSON *sor = jpath(cJSON_GetArrayItem(cJSON_GetObjectItem(npdoc, "items"), 1), eg_keys);
    CU_ASSERT_FATAL(cJSON_GetArraySize(geg) == cJSON_GetArraySize(sor) + 1);
    CU_ASSERT(
        cJSON_Compare(cJSON_GetArrayItem(ceg, 1), cJSON_GetArrayItem(geg, cJSON_GetArraySize(sor)), true));
    for (int k = 0; k < cJSON_GetArraySize(sor); k++)
      CU_ASSERT(cJSON_Compare(cJSON_GetArrayItem(geg, k), cJSON_GetArrayItem(sor, k), true));
    cJSON_Delete(agents);
    cJSON_Delete(doc);
    cJSON_Delete(npdoc);
    egress__free(np);
    egress__free(out);
    egress_policy_unref(p);
  }
}

static void test_validator_rejects(void) {
  const char *const allow[] = { "api.example.com", "151.101.0.0/16:8000-8100" };
  egress_policy_t *p = policy_of(allow, 2, NULL, 0);
  static const struct {
    const char *from, *to;
  } breaks[] = {
    { "\"port\":8000", "\"port\":0" },
    { "\"endPort\":8100", "\"endPort\":7000" },
    { "\"cidr\":\"151.101.0.0/16\"", "\"cidr\":\"151.101.0.1/16\"" },
    { "\"cidr\":\"151.101.0.0/16\"", "\"cidr\":\"151.101.0.0/33\"" },
    { "\"cidr\":\"0.0.0.0/0\"", "\"cidr\":\"151.0.0.0/8\"" }, /* excepts now outside */
    { "\"Egress\"", "\"Ingress\"" },
    { "\"name\":\"egress-execution-plane\"", "\"name\":\"Egress_Plane\"" },
    { "\"protocol\":\"TCP\"", "\"protocol\":\"ICMP\"" },
    { "\"apiVersion\":\"networking.k8s.io/v1\"", "\"apiVersion\":\"v1\"" },
    { "\"port\":\"443\"", "\"port\":443" },
    { "\"matchName\":\"api.example.com\"", "\"matchName\":\"api example.com\"" },
    { "\"toFQDNs\"", "\"toFQDNz\"" },
    { "\"podSelector\":{\"matchLabels\":{\"portarium.io/component\":\"execution-plane\"}}",
      "\"podSelector\":{}" },
  };
  for (int f = 0; f < 2; f++) {
    char *pretty = render(p, (egress__render_format_t)f, EGRESS__COMPONENT_EXECUTION_PLANE, false, NULL);
    CU_ASSERT_FATAL(pretty != NULL);
    cJSON *doc = cJSON_Parse(pretty);
    char *out = cJSON_PrintUnformatted(doc);
    cJSON_Delete(doc);
    egress__free(pretty);
    CU_ASSERT_FATAL(out != NULL);
    CU_ASSERT(validate_text(out, f == 1));
    CU_ASSERT(!validate_text(out, f == 0)); /* wrong kinds */
    size_t broken = 0;
    for (size_t i = 0; i < NELEM(breaks); i++) {
      char *at = strstr(out, breaks[i].from);
      if (!at) continue;
      size_t fl = strlen(breaks[i].from), tl = strlen(breaks[i].to), n = strlen(out);
      char *m = malloc(n - fl + tl + 1);
      CU_ASSERT_FATAL(m != NULL);
      memcpy(m, out, (size_t)(at - out));
      memcpy(m + (at - out), breaks[i].to, tl);
      strcpy(m + (at - out) + tl, at + fl);
      if (validate_text(m, f == 1)) {
        fprintf(stderr, "validator accepted break %zu (%s)\n", i, breaks[i].to);
        CU_FAIL("validator accepted a broken document");
      }
      broken++;
      free(m);
    }
    CU_ASSERT(broken >= 6);
    cJSON_free(out);
  }
  egress_policy_unref(p);
}

static void test_semantic_rich(void) {
  egress_policy_t *p = policy_of(rich_allow, NELEM(rich_allow), rich_deny, NELEM(rich_deny));
  ndests = 0;
  hosts_len = 0;
  names_for_policy(p);
  size_t nnames = ndests;
  literals_for_policy(p, 7);
  write_hosts();
  egress_status_t st;
  char *c = render(p, EGRESS__RENDER_CILIUM, EGRESS__COMPONENT_EXECUTION_PLANE, false, &st);
  char *n = render(p, EGRESS__RENDER_NETWORKPOLICY, EGRESS__COMPONENT_EXECUTION_PLANE, false, NULL);
  CU_ASSERT_FATAL(st == EGRESS_OK && c && n); /* fully renderable */
  cJSON *cd = cJSON_Parse(c), *nd = cJSON_Parse(n);
  tally_t t = { 0, 0, 0, 0 };
  compare(p, cd, nd, &t);
  fprintf(stderr,
          "rich: %zu destinations (%zu names), %zu checks, %zu allowed (%zu by name), %zu mismatches\n",
          ndests, nnames, t.checks, t.app_allow, t.name_allow, t.mismatches);
  CU_ASSERT(nnames >= 100);
  CU_ASSERT(t.checks >= 5000);
  CU_ASSERT(t.app_allow >= 200 && t.name_allow >= 30); /* the comparison is not all-deny */
  CU_ASSERT(t.mismatches == 0);
  cJSON_Delete(cd);
  cJSON_Delete(nd);
  egress__free(c);
  egress__free(n);
  egress_policy_unref(p);
}

/* The example policy: its name deny entry cannot be expressed by Cilium, so
 * the rendering (with --skip-unrenderable) closes the wildcard it carves
 * into.  It must then agree exactly with the policy without that wildcard,
 * and never allow what the full policy denies. */
static void test_semantic_example(void) {
  egress_policy_t *p = policy_of(demo_allow, NELEM(demo_allow), demo_deny, NELEM(demo_deny));
  const char *reduced[NELEM(demo_allow) - 1];
  size_t nr = 0;
  for (size_t i = 0; i < NELEM(demo_allow); i++)
    if (i != 2) reduced[nr++] = demo_allow[i];
  egress_policy_t *pr = policy_of(reduced, nr, demo_deny, NELEM(demo_deny));
  ndests = 0;
  hosts_len = 0;
  names_for_policy(p);
  add_name("exports.files.crm.example.com", "", "93.184.216.35");
  literals_for_policy(p, 11);
  write_hosts();
  egress_status_t st;
  char *fail = render(p, EGRESS__RENDER_CILIUM, EGRESS__COMPONENT_AGENT, false, &st);
  CU_ASSERT(fail == NULL && st == EGRESS_EPOLICY);
  char *c = render(p, EGRESS__RENDER_CILIUM, EGRESS__COMPONENT_AGENT, true, NULL);
  char *n = render(p, EGRESS__RENDER_NETWORKPOLICY, EGRESS__COMPONENT_AGENT, false, NULL);
  CU_ASSERT_FATAL(c && n);
  CU_ASSERT(strstr(c, "files.crm.example.com") == NULL);
  cJSON *cd = cJSON_Parse(c), *nd = cJSON_Parse(n);
  tally_t t = { 0, 0, 0, 0 }, t2 = { 0, 0, 0, 0 };
  compare(pr, cd, NULL, &t);
  compare(p, NULL, nd, &t2); /* NetworkPolicy against the full policy */
  fprintf(stderr,
          "example: %zu destinations, %zu checks, %zu allowed, %zu mismatches; netpol %zu mismatches\n",
          ndests, t.checks, t.app_allow, t.mismatches, t2.mismatches);
  CU_ASSERT(ndests >= 100);
  CU_ASSERT(t.app_allow >= 10);
  CU_ASSERT(t.mismatches == 0);
  CU_ASSERT(t2.mismatches == 0);
  cJSON_Delete(cd);
  cJSON_Delete(nd);
  egress__free(c);
  egress__free(n);
  egress_policy_unref(pr);
  egress_policy_unref(p);
}

/* Every matchPattern form maps to our meaning exactly. */
static void test_fqdn_forms(void) {
  const char *const allow[] = { "api.example.com", "*.one.example", "**.many.example", "*:8443" };
  egress_policy_t *p = policy_of(allow, NELEM(allow), NULL, 0);
  char *c = render(p, EGRESS__RENDER_CILIUM, EGRESS__COMPONENT_AGENT, false, NULL);
  CU_ASSERT_FATAL(c != NULL);
  CU_ASSERT(strstr(c, "\"matchName\":\t\"api.example.com\"") != NULL);
  CU_ASSERT(strstr(c, "\"matchPattern\":\t\"*.one.example\"") != NULL);
  CU_ASSERT(strstr(c, "\"matchPattern\":\t\"**.many.example\"") != NULL);
  CU_ASSERT(strstr(c, "\"matchPattern\":\t\"*\"") != NULL);
  cJSON *d = cJSON_Parse(c);
  egress__ip_t ip;
  CU_ASSERT_FATAL(egress__ip4_parse("93.184.216.34", 13, &ip));
  static const struct {
    const char *name;
    unsigned port;
  } names[] = { { "api.example.com", 443 },    { "x.api.example.com", 443 }, { "a.one.example", 443 },
                { "a.b.one.example", 443 },    { "one.example", 443 },       { "a.many.example", 443 },
                { "a.b.c.many.example", 443 }, { "many.example", 443 },      { "xmany.example", 443 },
                { "anything.test", 8443 },     { "anything.test", 443 },     { "a_b.one.example", 443 } };
  for (size_t i = 0; i < NELEM(names); i++) {
    egress__host_t h;
    const char *why;
    CU_ASSERT_FATAL(egress__canon_host(names[i].name, strlen(names[i].name), &h, &why) == EGRESS_OK);
    egress__match_t m;
    egress__match_name(p->matcher[EGRESS_LIST_ALLOW], h.text, h.len, (uint16_t)names[i].port, &m);
    bool app = m.allowing != NULL;
    bool l3 = cilium_allows(d, names[i].name, &ip, names[i].port);
    if (app != l3)
      fprintf(stderr, "form mismatch %s:%u app %d cilium %d\n", names[i].name, names[i].port, app, l3);
    CU_ASSERT(app == l3);
  }
  cJSON_Delete(d);
  egress__free(c);
  egress_policy_unref(p);
}

typedef struct notes {
  size_t n;
  char text[8][600];
} notes_t;

static void collect(egress_list_t list, size_t index, const char *entry, const char *what, void *ud) {
  notes_t *ns = ud;
  if (ns->n < 8)
    snprintf(ns->text[ns->n], sizeof ns->text[0], "%s[%zu] %.200s: %.300s",
             list == EGRESS_LIST_ALLOW ? "allow" : "deny", index, entry, what);
  ns->n++;
}

/* Lint findings as collect() keeps them, notes marked "note: ". */
static void lint_collect(egress__lint_level_t level, egress_list_t list, size_t index, const char *entry,
                         const char *what, void *ud) {
  char buf[700];
  snprintf(buf, sizeof buf, "%s%s", level == EGRESS__LINT_NOTE ? "note: " : "", what);
  collect(list, index, entry, buf, ud);
}

static void test_unrenderable(void) {
  const char *const allow[] = { "api.example.com", "re:^api-[0-9]+\\.example\\.com$", "*.x.example" };
  const char *const deny[] = { "bad.x.example" };
  egress_policy_t *p = policy_of(allow, NELEM(allow), deny, NELEM(deny));
  egress__render_opts_t o;
  memset(&o, 0, sizeof o);
  o.format = EGRESS__RENDER_CILIUM;
  char *out = NULL, err[EGRESS_ERRBUF_SIZE] = "";
  notes_t ns;
  memset(&ns, 0, sizeof ns);
  CU_ASSERT(egress__render(p, &o, collect, &ns, &out, err, sizeof err) == EGRESS_EPOLICY);
  CU_ASSERT(out == NULL);
  CU_ASSERT(strstr(err, "re:^api-") != NULL); /* names the first entry */
  CU_ASSERT(ns.n == 2);
  CU_ASSERT(strstr(ns.text[0], "re:") && strstr(ns.text[1], "bad.x.example"));
  /* skipped: left out, closed */
  o.skip_unrenderable = true;
  memset(&ns, 0, sizeof ns);
  CU_ASSERT_FATAL(egress__render(p, &o, collect, &ns, &out, err, sizeof err) == EGRESS_OK);
  CU_ASSERT(ns.n == 2);
  CU_ASSERT(strstr(out, "re:") == NULL && strstr(out, "x.example") == NULL);
  CU_ASSERT(strstr(out, "api.example.com") != NULL);
  egress__free(out);
  /* NetworkPolicy expresses names only as ports, so nothing is lost. */
  o.format = EGRESS__RENDER_NETWORKPOLICY;
  o.skip_unrenderable = false;
  memset(&ns, 0, sizeof ns);
  CU_ASSERT(egress__render(p, &o, collect, &ns, &out, err, sizeof err) == EGRESS_OK);
  CU_ASSERT(ns.n == 0);
  egress__free(out);
  egress_policy_unref(p);

  /* A deny entry that takes a whole entry's names on some ports is exact:
   * the ports go, nothing is reported. */
  const char *const a2[] = { "pub.example.org:*", "*.svc.example:8443" };
  const char *const d2[] = { "pub.example.org:22", "**.example:8443" };
  p = policy_of(a2, 2, d2, 2);
  o.format = EGRESS__RENDER_CILIUM;
  memset(&ns, 0, sizeof ns);
  CU_ASSERT_FATAL(egress__render(p, &o, collect, &ns, &out, err, sizeof err) == EGRESS_OK);
  CU_ASSERT(ns.n == 0);
  CU_ASSERT(strstr(out, "\"port\":\t\"1\",\n") && strstr(out, "\"endPort\":\t21") &&
            strstr(out, "\"port\":\t\"23\""));
  CU_ASSERT(strstr(out, "svc.example") == NULL);
  egress__free(out);
  egress_policy_unref(p);

  /* Opening Teredo space: its embedded client addresses cannot be CIDRs. */
  const char *const a3[] = { "[2001::]/32:443" };
  p = policy_of(a3, 1, NULL, 0);
  o.skip_unrenderable = false;
  memset(&ns, 0, sizeof ns);
  CU_ASSERT(egress__render(p, &o, collect, &ns, &out, err, sizeof err) == EGRESS_EPOLICY);
  CU_ASSERT(ns.n == 1 && strstr(ns.text[0], "Teredo"));
  egress_policy_unref(p);
}

static void test_options(void) {
  const char *const allow[] = { "api.example.com" };
  egress_policy_t *p = policy_of(allow, 1, NULL, 0);
  egress__render_opts_t o;
  char *out = NULL, err[EGRESS_ERRBUF_SIZE];
  memset(&o, 0, sizeof o);
  o.name_space = "tenant-a";
  o.name = "sor-egress";
  o.component = EGRESS__COMPONENT_AGENT;
  CU_ASSERT_FATAL(egress__render(p, &o, NULL, NULL, &out, err, sizeof err) == EGRESS_OK);
  CU_ASSERT(strstr(out, "\"namespace\":\t\"tenant-a\"") && strstr(out, "\"sor-egress-baseline\"") &&
            strstr(out, "\"name\":\t\"sor-egress\"") &&
            strstr(out, "\"portarium.io/component\":\t\"agent\""));
  CU_ASSERT(strstr(out, egress_policy_digest(p)) != NULL);
  egress__free(out);
  static const char *const bad_ns[] = {
    "",    "Portarium", "-x",   "x-",
    "a.b", "a_b",       "ns\n", "0123456789012345678901234567890123456789012345678901234567890123"
  };
  for (size_t i = 0; i < NELEM(bad_ns); i++) {
    o.name_space = bad_ns[i];
    out = (char *)1;
    CU_ASSERT(egress__render(p, &o, NULL, NULL, &out, err, sizeof err) == EGRESS_EINVAL);
    CU_ASSERT(out == NULL);
  }
  o.name_space = NULL;
  static const char *const bad_name[] = { "", "Name", "a..b", ".a", "a b", "a/b", "x\"y" };
  for (size_t i = 0; i < NELEM(bad_name); i++) {
    o.name = bad_name[i];
    CU_ASSERT(egress__render(p, &o, NULL, NULL, &out, err, sizeof err) == EGRESS_EINVAL);
  }
  egress__render_format_t f;
  egress__render_component_t c;
  CU_ASSERT(egress__render_format_parse("cilium", &f) && f == EGRESS__RENDER_CILIUM);
  CU_ASSERT(!egress__render_format_parse("Cilium", &f) && !egress__render_format_parse("", &f));
  CU_ASSERT(egress__render_component_parse("agent", &c) && c == EGRESS__COMPONENT_AGENT);
  CU_ASSERT(!egress__render_component_parse("control-plane", &c));
  egress_policy_unref(p);
}

/* --format gateway: what the options may hold, and what a ConfigMap may
 * hold of the policy text (UTF-8 as Kubernetes decodes it). */
static void test_gateway_inputs(void) {
  const char *const allow[] = { "api.example.com" };
  egress_policy_t *p = policy_of(allow, 1, NULL, 0);
  egress__render_opts_t o;
  char *out = NULL, err[EGRESS_ERRBUF_SIZE];
  static const char text[] =
      "{\"egressAllowlist\": [\"api.example.com\"], \"n\": \"\xc3\xa9 \xe2\x80\xa8 "
      "\xef\xbf\xbf \xf0\x9f\x98\x80 \xf4\x8f\xbf\xbf\"}\n";
  memset(&o, 0, sizeof o);
  o.format = EGRESS__RENDER_GATEWAY;
  o.component = EGRESS__COMPONENT_AGENT;
  o.policy_text = text;
  o.policy_len = sizeof text - 1;
  CU_ASSERT_FATAL(egress__render(p, &o, NULL, NULL, &out, err, sizeof err) == EGRESS_OK);
  cJSON *doc = cJSON_Parse(out);
  CU_ASSERT_FATAL(doc != NULL);
  const cJSON *cm = cJSON_GetArrayItem(cJSON_GetObjectItem(doc, "items"), 0);
  const cJSON *data = cJSON_GetObjectItem(cJSON_GetObjectItem(cm, "data"), "policy.json");
  CU_ASSERT(cJSON_IsString(data) && strcmp(data->valuestring, text) == 0);
  CU_ASSERT(strstr(out, egress__render_default_gateway_image) != NULL);
  CU_ASSERT(strstr(out, "\"replicas\":\t2") != NULL);
  cJSON_Delete(doc);
  egress__free(out);
  o.replicas = EGRESS__RENDER_MAX_REPLICAS;
  o.gateway_image = "registry.local:5000/team/egressd@sha256:0123abcd";
  CU_ASSERT_FATAL(egress__render(p, &o, NULL, NULL, &out, err, sizeof err) == EGRESS_OK);
  CU_ASSERT(strstr(out, "\"replicas\":\t100") &&
            strstr(out, "\"registry.local:5000/team/egressd@sha256:0123abcd\""));
  egress__free(out);

  o.replicas = EGRESS__RENDER_MAX_REPLICAS + 1;
  out = (char *)1;
  CU_ASSERT(egress__render(p, &o, NULL, NULL, &out, err, sizeof err) == EGRESS_EINVAL && out == NULL);
  CU_ASSERT(strstr(err, "101") != NULL);
  o.replicas = 0;
  static const char *const bad_image[] = { "",         "egressd\n", "a\"b",     "egressd 1",
                                           "-x",       "egressd:",  "egressd/", "x@",
                                           "\xc3\xa9", "a\\b",      "a{{b}}",   "egressd:1\r\nx: y" };
  for (size_t i = 0; i < NELEM(bad_image); i++) {
    o.gateway_image = bad_image[i];
    CU_ASSERT(egress__render(p, &o, NULL, NULL, &out, err, sizeof err) == EGRESS_EINVAL);
    CU_ASSERT(strstr(err, "image") != NULL && strchr(err, '\n') == NULL && strchr(err, '\r') == NULL);
  }
  o.gateway_image = "egressd:1\nkind: Secret";
  CU_ASSERT(egress__render(p, &o, NULL, NULL, &out, err, sizeof err) == EGRESS_EINVAL);
  CU_ASSERT(strstr(err, "\"egressd:1\\x0akind: Secret\"") != NULL);
  o.gateway_image = NULL;
  o.name = "Gateway";
  CU_ASSERT(egress__render(p, &o, NULL, NULL, &out, err, sizeof err) == EGRESS_EINVAL);
  o.name = "9gateway";
  CU_ASSERT(egress__render(p, &o, NULL, NULL, &out, err, sizeof err) == EGRESS_EINVAL);
  o.name = NULL;

  static const char *const not_text[] = {
    "\xe9t\xe9",        /* Latin-1 */
    "\xc0\xaf",         /* overlong '/' */
    "\xe0\x80\xaf",     /* overlong, three bytes */
    "\xed\xa0\x80",     /* a surrogate */
    "\xf4\x90\x80\x80", /* above U+10FFFF */
    "\xf8\x88\x80\x80\x80",
    "\xe2\x82", /* cut short */
    "\x80",     /* a lone continuation byte */
  };
  for (size_t i = 0; i < NELEM(not_text); i++) {
    o.policy_text = not_text[i];
    o.policy_len = strlen(not_text[i]);
    out = (char *)1;
    CU_ASSERT(egress__render(p, &o, NULL, NULL, &out, err, sizeof err) == EGRESS_EPOLICY && out == NULL);
    CU_ASSERT(strstr(err, "not UTF-8") != NULL);
  }
  o.policy_text = "{}\0{}";
  o.policy_len = 5;
  CU_ASSERT(egress__render(p, &o, NULL, NULL, &out, err, sizeof err) == EGRESS_EPOLICY);
  CU_ASSERT(strstr(err, "NUL") != NULL);
  char *big = malloc(1000001);
  CU_ASSERT_FATAL(big != NULL);
  memset(big, ' ', 1000001);
  o.policy_text = big;
  o.policy_len = 1000001;
  CU_ASSERT(egress__render(p, &o, NULL, NULL, &out, err, sizeof err) == EGRESS_EPOLICY);
  o.policy_len = 1000000;
  CU_ASSERT(egress__render(p, &o, NULL, NULL, &out, err, sizeof err) == EGRESS_OK);
  egress__free(out);
  free(big);
  o.policy_text = NULL;
  CU_ASSERT(egress__render(p, &o, NULL, NULL, &out, err, sizeof err) == EGRESS_EINVAL);
  egress_policy_unref(p);
}

static size_t lint_of(const char *const *allow, size_t na, const char *const *deny, size_t nd, notes_t *ns) {
  egress_policy_t *p = policy_of(allow, na, deny, nd);
  memset(ns, 0, sizeof *ns);
  long n = egress__render_lint(p, lint_collect, ns);
  CU_ASSERT(n >= 0 && (size_t)n == ns->n);
  egress_policy_unref(p);
  return ns->n;
}

static bool has_note(const notes_t *ns, const char *a, const char *b) {
  for (size_t i = 0; i < ns->n && i < 8; i++)
    if (strstr(ns->text[i], a) && (!b || strstr(ns->text[i], b))) return true;
  return false;
}

static void test_lint(void) {
  notes_t ns;
  const char *const clean[] = { "api.example.com", "https://docs.example.com/v1", "*.svc.example.com",
                                "svc.example.com", "151.101.0.0/16:443" };
  CU_ASSERT(lint_of(clean, NELEM(clean), NULL, 0, &ns) == 0);

  const char *const dup[] = { "api.example.com", "API.example.com.", "https://api.example.com" };
  CU_ASSERT(lint_of(dup, 3, NULL, 0, &ns) == 2);
  CU_ASSERT(has_note(&ns, "allow[1]", "duplicate of egressAllowlist[0]"));
  CU_ASSERT(has_note(&ns, "allow[2]", "duplicate of egressAllowlist[0]"));

  const char *const shadow[] = {
    "**.example.com",   "a.b.example.com:443",      "*.x.example.com",
    "151.101.0.0/16",   "151.101.3.0/24:443",       "0.0.0.0/0:5432",
    "10.1.0.0/16:5432", "https://docs.example.org", "https://docs.example.org/v1"
  };
  lint_of(shadow, NELEM(shadow), NULL, 0, &ns);
  CU_ASSERT(has_note(&ns, "allow[1]", "shadowed by egressAllowlist[0]"));
  CU_ASSERT(has_note(&ns, "allow[2]", "shadowed by egressAllowlist[0]"));
  CU_ASSERT(has_note(&ns, "allow[4]", "shadowed by egressAllowlist[3]"));
  /* the private range is opened only by naming it: not shadowed by /0 */
  CU_ASSERT(!has_note(&ns, "allow[6]", "shadowed"));
  CU_ASSERT(has_note(&ns, "allow[8]", "shadowed by egressAllowlist[7]"));
  CU_ASSERT(!has_note(&ns, "allow[7]", "shadowed"));

  const char *const every[] = { "*", "0.0.0.0/0:443", "::/0" };
  lint_of(every, 3, NULL, 0, &ns);
  CU_ASSERT(has_note(&ns, "allow[0]", "every host name") && has_note(&ns, "allow[1]", "every IPv4") &&
            has_note(&ns, "allow[2]", "every IPv6"));

  const char *const apex[] = { "*.files.example.com", "**.cdn.example.net", "cdn.example.net:8443" };
  lint_of(apex, 3, NULL, 0, &ns);
  CU_ASSERT(has_note(&ns, "allow[0]", "note: does not match \"files.example.com\" itself"));
  CU_ASSERT(!has_note(&ns, "allow[1]", "itself")); /* its apex is listed (on another port) */

  /* An explicit port is a choice; the scheme's other port is a slip. */
  const char *const ports[] = { "https://a.example.com:8443", "http://b.example.com:8080/x",
                                "https://c.example.com:443",  "http://d.example.com",
                                "e.example.com:8443",         "https://f.example.com:80",
                                "http://g.example.com:443/x" };
  CU_ASSERT(lint_of(ports, NELEM(ports), NULL, 0, &ns) == 2);
  CU_ASSERT(has_note(&ns, "allow[5]", ": https on port 80, the http port: scheme and port look swapped"));
  CU_ASSERT(has_note(&ns, "allow[6]", ": http on port 443, the https port"));

  /* URL paths that read like a prefix length or a glob. */
  const char *const paths[] = { "http://10.0.0.0/8",      "https://example.com/*",
                                "http://[2001:db8::]/32", "https://example.org/api/v*/x",
                                "http://10.1.2.3/8",      "https://h.example/8",
                                "http://10.0.0.0/33",     "https://example.net/api" };
  const char *const pathd[] = { "http://192.168.0.0/16", "https://other.example/*" };
  CU_ASSERT(lint_of(paths, NELEM(paths), pathd, NELEM(pathd), &ns) == 5);
  CU_ASSERT(has_note(&ns, "allow[0]",
                     ": means host 10.0.0.0, port 80, path \"/8\": a URL names one "
                     "address; for the range write \"10.0.0.0/8\" (every port) or "
                     "\"10.0.0.0/8:80\""));
  CU_ASSERT(has_note(&ns, "allow[1]", ": the path \"/*\" is literal"));
  CU_ASSERT(has_note(&ns, "allow[1]", "so \"https://example.com/\" was likely meant"));
  CU_ASSERT(has_note(&ns, "allow[2]", "write \"2001:db8::/32\" (every port) or \"[2001:db8::]/32:80\""));
  CU_ASSERT(has_note(&ns, "allow[3]", "so \"https://example.org/api/\" was likely meant"));
  CU_ASSERT(has_note(&ns, "deny[0]",
                     "means host 192.168.0.0 on every port, path \"/16\" (which a deny "
                     "entry ignores): a URL names one address; for the range write "
                     "\"192.168.0.0/16\""));

  const char *const dead[] = { "api.example.com", "10.1.0.0/16:5432" };
  const char *const dd[] = { "*.example.com", "api.example.com", "10.0.0.0/8", "10.0.0.0/8" };
  lint_of(dead, 2, dd, 4, &ns);
  CU_ASSERT(has_note(&ns, "allow[0]", "never allows anything: egressDenylist[0]"));
  CU_ASSERT(has_note(&ns, "allow[1]", "never allows anything: egressDenylist[2]"));
  CU_ASSERT(has_note(&ns, "deny[3]", "duplicate of egressDenylist[2]"));

  const char *const unr[] = { "re:^x[0-9]+\\.example\\.com$", "*.y.example", "y.example" };
  const char *const unrd[] = { "z.y.example" };
  CU_ASSERT(lint_of(unr, 3, unrd, 1, &ns) == 2);
  CU_ASSERT(has_note(&ns, "allow[0]", "render: a \"re:\" entry has no Cilium equivalent"));
  CU_ASSERT(has_note(&ns, "deny[0]", "render: Cilium cannot deny by name"));
}

/* ------------------------------------------------------------------------ */
/* Lint against the pairwise scan it replaced                                */
/*                                                                          */
/* The oracle below is lint as it was before its entries were indexed:      */
/* every pair of entries compared, and render's notes taken from a Cilium   */
/* rendering.  It is kept here, copied whole with its helpers, so that the  */
/* indexed lint is checked against it on random policies rich in every     */
/* relation it reports (not against library code that might drift with it). */
/* ------------------------------------------------------------------------ */

enum { O_NONE = 0, O_PARTIAL = 1, O_COVERS = 2 };

static bool o_within(const egress__prefix_t *outer, const egress__prefix_t *inner) {
  return outer->addr.family == inner->addr.family && outer->len <= inner->len &&
         egress__prefix_contains(outer, &inner->addr);
}

static bool o_overlap(const egress__prefix_t *a, const egress__prefix_t *b) {
  return o_within(a, b) || o_within(b, a);
}

static bool o_wild1(const char *n, size_t len, const char *s, size_t sl) {
  const char *dot = memchr(n, '.', len);
  return dot && (size_t)(n + len - dot - 1) == sl && !memcmp(dot + 1, s, sl);
}

static bool o_wildn(const char *n, size_t len, const char *s, size_t sl) {
  return len > sl + 1 && n[len - sl - 1] == '.' && !memcmp(n + len - sl, s, sl);
}

static bool o_at_or_under(const char *s, size_t sl, const char *t, size_t tl) {
  return (sl == tl && !memcmp(s, t, sl)) || o_wildn(s, sl, t, tl);
}

static bool o_matches(const egress__rule_t *r, const char *n, size_t len) {
  switch (r->kind) {
    case EGRESS__RULE_EXACT: return r->name_len == len && !memcmp(r->name, n, len);
    case EGRESS__RULE_WILD1: return o_wild1(n, len, r->name, r->name_len);
    case EGRESS__RULE_WILDN: return o_wildn(n, len, r->name, r->name_len);
    case EGRESS__RULE_ANY: return true;
    case EGRESS__RULE_REGEX: return egress__regex_match(r, n, len);
    default: return false;
  }
}

static bool o_same_regex(const egress__rule_t *a, const egress__rule_t *b) {
  return a->kind == EGRESS__RULE_REGEX && b->kind == EGRESS__RULE_REGEX &&
         !strcmp(strchr(a->text, ':') ? strchr(a->text, ':') : a->text,
                 strchr(b->text, ':') ? strchr(b->text, ':') : b->text);
}

static int o_name_rel(const egress__rule_t *d, const egress__rule_t *a) {
  const char *s = d->name, *t = a->name;
  size_t sl = d->name_len, tl = a->name_len;
  if (d->kind == EGRESS__RULE_ANY) return O_COVERS;
  if (o_same_regex(d, a)) return O_COVERS;
  switch (a->kind) {
    case EGRESS__RULE_EXACT: return o_matches(d, t, tl) ? O_COVERS : O_NONE;
    case EGRESS__RULE_WILD1:
      switch (d->kind) {
        case EGRESS__RULE_EXACT: return o_wild1(s, sl, t, tl) ? O_PARTIAL : O_NONE;
        case EGRESS__RULE_WILD1: return sl == tl && !memcmp(s, t, sl) ? O_COVERS : O_NONE;
        case EGRESS__RULE_WILDN: return o_at_or_under(t, tl, s, sl) ? O_COVERS : O_NONE;
        default: return O_PARTIAL;
      }
    case EGRESS__RULE_WILDN:
      switch (d->kind) {
        case EGRESS__RULE_EXACT: return o_wildn(s, sl, t, tl) ? O_PARTIAL : O_NONE;
        case EGRESS__RULE_WILD1: return o_at_or_under(s, sl, t, tl) ? O_PARTIAL : O_NONE;
        case EGRESS__RULE_WILDN:
          if (o_at_or_under(t, tl, s, sl)) return O_COVERS;
          return o_wildn(s, sl, t, tl) ? O_PARTIAL : O_NONE;
        default: return O_PARTIAL;
      }
    default: return O_PARTIAL;
  }
}

static bool o_covers(const egress__rule_t *a, const egress__rule_t *b) {
  if (!(a->port_lo <= b->port_lo && b->port_hi <= a->port_hi)) return false;
  if (a->kind == EGRESS__RULE_CIDR || b->kind == EGRESS__RULE_CIDR) {
    if (a->kind != b->kind || !o_within(&a->cidr, &b->cidr)) return false;
    if (a->list == EGRESS_LIST_ALLOW && b->list == EGRESS_LIST_ALLOW) {
      for (size_t i = 0; i < egress__special_block_count; i++) {
        const egress__special_block_t *blk = &egress__special_blocks[i];
        if (!blk->global && blk->prefix.len > a->cidr.len && blk->prefix.len <= b->cidr.len &&
            o_overlap(&blk->prefix, &b->cidr))
          return false;
      }
    }
    return true;
  }
  if (o_name_rel(a, b) != O_COVERS) return false;
  if (a->list == EGRESS_LIST_ALLOW && b->list == EGRESS_LIST_ALLOW && a->path) {
    size_t n = strlen(a->path);
    if (!b->path || strncmp(a->path, b->path, n) || (b->path[n] && b->path[n] != '/')) return false;
  }
  return true;
}

/* Every note as one line of text, in the order given. */
typedef struct transcript {
  char *text;
  size_t len, cap, n;
  const char *prefix;
} transcript_t;

static void tr_add(egress_list_t list, size_t index, const char *entry, const char *what, void *ud) {
  transcript_t *t = ud;
  char line[1400];
  int n = snprintf(line, sizeof line, "%s[%zu] %s: %s%s\n", list == EGRESS_LIST_ALLOW ? "allow" : "deny",
                   index, entry, t->prefix ? t->prefix : "", what);
  CU_ASSERT_FATAL(n > 0 && (size_t)n < sizeof line);
  if (t->len + (size_t)n + 1 > t->cap) {
    t->cap = (t->len + (size_t)n + 1) * 2;
    t->text = realloc(t->text, t->cap);
    CU_ASSERT_FATAL(t->text != NULL);
  }
  memcpy(t->text + t->len, line, (size_t)n + 1);
  t->len += (size_t)n;
  t->n++;
}

/* A lint finding in the transcript, notes marked "note: ". */
static void tr_lint(egress__lint_level_t level, egress_list_t list, size_t index, const char *entry,
                    const char *what, void *ud) {
  transcript_t *t = ud;
  const char *saved = t->prefix;
  if (level == EGRESS__LINT_NOTE) t->prefix = "note: ";
  tr_add(list, index, entry, what, t);
  t->prefix = saved;
}

static long oracle_lint(const egress_policy_t *p, transcript_t *t) {
  static const char *const names[2] = { "egressAllowlist", "egressDenylist" };
  char what[600];
  for (int li = 0; li < 2; li++) {
    egress_list_t list = (egress_list_t)li;
    for (size_t jx = 0; jx < p->nrules[list]; jx++) {
      const egress__rule_t *b = &p->rules[list][jx];
      bool said = false;
      for (size_t ix = 0; ix < p->nrules[list] && !said; ix++) {
        const egress__rule_t *a = &p->rules[list][ix];
        if (ix == jx || !o_covers(a, b)) continue;
        if (o_covers(b, a)) {
          if (ix > jx) continue;
          snprintf(what, sizeof what, "duplicate of %s[%zu] \"%.200s\"", names[list], ix, a->text);
        } else {
          snprintf(what, sizeof what,
                   "shadowed by %s[%zu] \"%.200s\", which matches everything this entry does", names[list],
                   ix, a->text);
        }
        tr_add(list, jx, b->text, what, t);
        said = true;
      }
      for (size_t ix = 0; list == EGRESS_LIST_ALLOW && ix < p->nrules[EGRESS_LIST_DENY]; ix++) {
        const egress__rule_t *d = &p->rules[EGRESS_LIST_DENY][ix];
        if (!o_covers(d, b)) continue;
        snprintf(what, sizeof what, "never allows anything: egressDenylist[%zu] \"%.200s\" denies all of it",
                 ix, d->text);
        tr_add(list, jx, b->text, what, t);
        break;
      }
      if (b->kind == EGRESS__RULE_ANY) tr_add(list, jx, b->text, "matches every host name", t);
      if (b->kind == EGRESS__RULE_CIDR && b->cidr.len == 0)
        tr_add(list, jx, b->text,
               b->cidr.addr.family == 4 ? "matches every IPv4 address" : "matches every IPv6 address", t);
      if (list == EGRESS_LIST_ALLOW && (b->kind == EGRESS__RULE_WILD1 || b->kind == EGRESS__RULE_WILDN)) {
        bool apex = false;
        for (size_t ix = 0; ix < p->nrules[list] && !apex; ix++)
          apex = p->rules[list][ix].kind != EGRESS__RULE_CIDR &&
                 o_matches(&p->rules[list][ix], b->name, b->name_len);
        if (!apex) {
          snprintf(what, sizeof what,
                   "does not match \"%.200s\" itself, and no entry allows it (add it if the apex "
                   "is meant too)",
                   b->name);
          tr_lint(EGRESS__LINT_NOTE, list, jx, b->text, what, t);
        }
      }
      /* Only the scheme's other port: an explicit port is a choice.  (The
       * random policies draw no URL path that reads like a prefix length
       * or holds a star; test_lint covers those.) */
      bool https = !strncasecmp(b->text, "https://", 8), http = !strncasecmp(b->text, "http://", 7);
      if ((https || http) && b->port_lo == b->port_hi && b->port_lo == (https ? 80 : 443)) {
        snprintf(what, sizeof what,
                 "%s on port %u, the %s port: scheme and port look swapped (\"%s://\" with no port "
                 "means %u)",
                 https ? "https" : "http", b->port_lo, https ? "http" : "https", https ? "https" : "http",
                 https ? 443 : 80);
        tr_add(list, jx, b->text, what, t);
      }
    }
  }
  egress__render_opts_t o;
  char *out = NULL;
  memset(&o, 0, sizeof o);
  o.format = EGRESS__RENDER_CILIUM;
  o.skip_unrenderable = true;
  t->prefix = "note: render: ";
  egress_status_t st = egress__render(p, &o, tr_add, t, &out, NULL, 0);
  t->prefix = NULL;
  egress__free(out);
  return st == EGRESS_OK ? (long)t->n : -1;
}

/* Entries drawn so that most pairs relate: shared suffixes at several
 * depths, the same name on nested port sets, URL paths, nested CIDRs in
 * and out of special-purpose space (Teredo and local-use NAT64 included),
 * regexes, "*".  Every one is valid on its own. */
static uint64_t rng_state;
static bool draw_any; /* a "*" entry hides every missing apex: only some draws have one */

static unsigned rnd(unsigned n) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return (unsigned)(rng_state % n);
}

#define PICK(a) ((a)[rnd(NELEM(a))])

static void random_entry(char *buf, size_t len) {
  static const char *const labels[] = { "a", "b", "c", "api", "x", "svc" };
  static const char *const sfx[] = { "example.com", "svc.example.com", "a.example.com", "example.org",
                                     "b.a.example.com" };
  static const char *const ports[] = { "", "", ":443", ":80", ":8443", ":1-1000", ":*", ":400-500", ":22" };
  static const char *const cidrs[] = {
    "10.0.0.0/8",       "10.1.0.0/16",        "10.1.2.0/24",       "10.1.2.3",        "0.0.0.0/0",
    "192.168.0.0/16",   "192.168.1.0/24",     "203.0.113.0/24",    "203.0.113.7",     "151.101.0.0/16",
    "151.101.3.0/24",   "151.101.3.4",        "[2001::]/32",       "[2001:0:1::]/48", "[2000::]/3",
    "[64:ff9b:1::]/48", "[64:ff9b:1:2::]/64", "[2002::]/16",       "[2001:db8::]/32", "[2001:db8::1]",
    "[::]/0",           "[2606:4700::]/32",   "[2606:4700::1111]", "11.0.0.0/8",      "11.1.0.0/16",
    "11.1.1.0/24",      "11.1.1.1",           "[2a00::]/16",       "[2a00:1450::]/32"
  };
  static const char *const cidr_ports[] = { "", "", ":443", ":22", ":*", ":1-1000" };
  static const char *const regexes[] = { "re:^api[0-9]*\\.example\\.com$", "re:^x\\..*$", "re:.*\\.org$" };
  static const char *const bare6[] = { "2001:db8::1:443", "2606:4700::1111", "2001:db8::443" };
  char name[128] = "";
  unsigned depth = rnd(3);
  for (unsigned i = 0; i < depth; i++) {
    strcat(name, PICK(labels));
    strcat(name, ".");
  }
  strcat(name, PICK(sfx));
  if (rnd(4) == 0) snprintf(name, sizeof name, "w%u.example.net", rnd(40)); /* apex often missing */
  unsigned r = rnd(100);
  if (r < 25)
    snprintf(buf, len, "%s%s", name, PICK(ports));
  else if (r < 40)
    snprintf(buf, len, "*.%s%s", name, PICK(ports));
  else if (r < 50)
    snprintf(buf, len, "**.%s%s", name, PICK(ports));
  else if (r < 55)
    snprintf(buf, len, draw_any ? "*%s" : "api.%s", draw_any ? PICK(ports) : name);
  else if (r < 62)
    snprintf(buf, len, "%s", PICK(regexes));
  else if (r < 72)
    snprintf(buf, len, "%s%s%s%s", rnd(2) ? "https://" : "http://", name,
             (const char *[]){ "", ":8443", ":443", ":80" }[rnd(4)],
             (const char *[]){ "", "/v1", "/v1/x", "/v2" }[rnd(4)]);
  else if (r < 75)
    snprintf(buf, len, "%s", PICK(bare6));
  else {
    const char *c = PICK(cidrs), *pp = PICK(cidr_ports);
    if (c[0] == '[' && !strchr(c, '/') && pp[0] == '\0') {
      /* a bracketed bare address takes no port-less form: unbracket it */
      snprintf(buf, len, "%.*s", (int)(strlen(c) - 2), c + 1);
    } else if (c[0] == '[' && pp[0] == '\0') {
      const char *close = strchr(c, ']');
      snprintf(buf, len, "%.*s%s", (int)(close - c - 1), c + 1, close + 1);
    } else {
      snprintf(buf, len, "%s%s", c, pp);
    }
  }
}

/* Drops the notes the oracle does not know (added since). */
static void tr_drop_new_kinds(transcript_t *t) {
  char *w = t->text, *r = t->text;
  while (*r) {
    char *nl = strchr(r, '\n');
    size_t n = (size_t)(nl - r) + 1;
    const char *at = strstr(r, "reads like an address and a port");
    if (!at || at > nl) {
      memmove(w, r, n);
      w += n;
    } else {
      t->n--;
    }
    r += n;
  }
  *w = '\0';
  t->len = (size_t)(w - t->text);
}

static void test_lint_matches_pairwise(void) {
  char err[EGRESS_ERRBUF_SIZE];
  size_t policies = 0, notes = 0;
  for (unsigned seed = 1; seed <= 60; seed++) {
    rng_state = 0x9E3779B97F4A7C15ull * seed;
    draw_any = seed % 2;
    size_t na = 100 + rnd(200), nd = rnd(60);
    char(*text)[128] = calloc(na + nd, sizeof *text);
    const char **allow = calloc(na + 1, sizeof *allow), **deny = calloc(nd + 1, sizeof *deny);
    CU_ASSERT_FATAL(text && allow && deny);
    for (size_t i = 0; i < na + nd; i++) random_entry(text[i], sizeof text[i]);
    for (size_t i = 0; i < na; i++) allow[i] = text[i];
    for (size_t i = 0; i < nd; i++) deny[i] = text[na + i];
    egress_policy_t *p = NULL;
    egress_status_t st = egress_policy_from_entries(allow, na, deny, nd, &p, err, sizeof err);
    if (st != EGRESS_OK) fprintf(stderr, "seed %u: %s\n", seed, err);
    CU_ASSERT_FATAL(st == EGRESS_OK);
    transcript_t want = { NULL, 0, 0, 0, NULL }, got = { NULL, 0, 0, 0, NULL };
    long nw = oracle_lint(p, &want), ng = egress__render_lint(p, tr_lint, &got);
    CU_ASSERT(nw >= 0 && ng >= 0 && (size_t)ng == got.n);
    tr_drop_new_kinds(&got);
    bool same = want.n == got.n && want.len == got.len && (!want.len || !strcmp(want.text, got.text));
    CU_ASSERT(same);
    if (!same) {
      size_t i = 0;
      while (want.text && got.text && want.text[i] && want.text[i] == got.text[i]) i++;
      while (i > 0 && want.text[i - 1] != '\n') i--;
      fprintf(stderr,
              "seed %u: %zu notes from the pairwise scan, %zu now; first difference:\n"
              "  was: %.300s\n  now: %.300s\n",
              seed, want.n, got.n, want.text ? want.text + i : "", got.text ? got.text + i : "");
    }
    policies++;
    notes += want.n;
    free(want.text);
    free(got.text);
    egress_policy_unref(p);
    free(text);
    free(allow);
    free(deny);
  }
  /* The draw must give the comparison something to compare. */
  CU_ASSERT(notes > 50 * policies);
}

/* Each kind of finding must be drawn often enough for the comparison above
 * to mean something: count them on the same draws. */
static void test_lint_draws_every_finding(void) {
  static const char *const kinds[] = { "duplicate of",
                                       "shadowed by",
                                       "never allows anything",
                                       "itself",
                                       "every host name",
                                       "every IPv",
                                       "look swapped",
                                       "render: a \"re:\"",
                                       "render: Cilium cannot deny",
                                       "render: opens Teredo",
                                       "reads like an address" };
  size_t count[NELEM(kinds)] = { 0 };
  for (unsigned seed = 1; seed <= 60; seed++) {
    rng_state = 0x9E3779B97F4A7C15ull * seed;
    draw_any = seed % 2;
    size_t na = 100 + rnd(200), nd = rnd(60);
    char(*text)[128] = calloc(na + nd, sizeof *text);
    const char **allow = calloc(na + 1, sizeof *allow), **deny = calloc(nd + 1, sizeof *deny);
    CU_ASSERT_FATAL(text && allow && deny);
    for (size_t i = 0; i < na + nd; i++) random_entry(text[i], sizeof text[i]);
    for (size_t i = 0; i < na; i++) allow[i] = text[i];
    for (size_t i = 0; i < nd; i++) deny[i] = text[na + i];
    egress_policy_t *p = policy_of(allow, na, deny, nd);
    transcript_t got = { NULL, 0, 0, 0, NULL };
    CU_ASSERT(egress__render_lint(p, tr_lint, &got) >= 0);
    for (const char *line = got.text; line && *line;) {
      const char *nl = strchr(line, '\n');
      for (size_t k = 0; k < NELEM(kinds); k++) {
        const char *at = strstr(line, kinds[k]);
        if (at && at < nl) count[k]++;
      }
      line = nl + 1;
    }
    free(got.text);
    egress_policy_unref(p);
    free(text);
    free(allow);
    free(deny);
  }
  for (size_t k = 0; k < NELEM(kinds); k++) {
    if (count[k] < 20) fprintf(stderr, "only %zu \"%s\" findings drawn\n", count[k], kinds[k]);
    CU_ASSERT(count[k] >= 20);
  }
}

/* "2001:db8::1:443" is one address on every port, but reads like a host and
 * a port: lint says so, and only where both readings are possible. */
static void test_lint_ipv6_port_lookalike(void) {
  static const struct {
    const char *entry;
    bool warned;
  } cases[] = {
    { "2001:db8::1:443", true },
    { "2001:db8::1:8443", true },
    { "::1:22", true },
    { "2001:db8::1:443:443", true },
    { "2001:DB8::A:80", true },
    { "[2001:db8::1]:443", false },   /* the port form */
    { "2001:db8::1:443/128", false }, /* a prefix length: an address */
    { "[2001:db8::1:443]/128", false },
    { "2001:db8::443", false },          /* "2001:db8:" is no address */
    { "2001:db8:0:0:0:0:1:443", false }, /* seven groups and no "::" either */
    { "2001:db8::1:2", false },          /* single digit: a host number */
    { "2001:db8::1:0443", false },       /* leading zero: not how ports are written */
    { "2001:db8::1:abcd", false },
    { "2001:db8::1:1bb", false },
    { "::ffff:192.0.2.1", false },
    { "2001:db8::", false },
  };
  for (size_t i = 0; i < NELEM(cases); i++) {
    notes_t ns;
    const char *const allow[] = { cases[i].entry };
    lint_of(allow, 1, NULL, 0, &ns);
    bool warned = has_note(&ns, "allow[0]", "reads like an address and a port");
    if (warned != cases[i].warned) fprintf(stderr, "%s: warned %d\n", cases[i].entry, warned);
    CU_ASSERT(warned == cases[i].warned);
    lint_of(NULL, 0, allow, 1, &ns);
    CU_ASSERT(has_note(&ns, "deny[0]", "reads like an address and a port") == cases[i].warned);
  }
  notes_t ns;
  const char *const one[] = { "2001:db8::1:443" };
  CU_ASSERT(lint_of(one, 1, NULL, 0, &ns) == 1);
  CU_ASSERT(strstr(ns.text[0], "\"[2001:db8::1]:443\" for port 443 of 2001:db8::1") != NULL);
  CU_ASSERT(strstr(ns.text[0], "\"2001:db8::1:443/128\" to keep this meaning") != NULL);
}

/* Allocation failure at every step fails with ENOMEM and no output. */
static void test_alloc_failures(void) {
  egress_policy_t *p = policy_of(demo_allow, NELEM(demo_allow), demo_deny, NELEM(demo_deny));
  egress__render_opts_t o;
  memset(&o, 0, sizeof o);
  o.skip_unrenderable = true;
  o.policy_text = "{}";
  o.policy_len = 2;
  for (int f = 0; f < 3; f++) {
    o.format = (egress__render_format_t)f;
    long ok_at = 0;
    for (long nth = 1; nth < 100000; nth++) {
      char *out = (char *)1;
      egress__alloc_fail_at(nth);
      egress_status_t st = egress__render(p, &o, NULL, NULL, &out, NULL, 0);
      long used = egress__alloc_count();
      egress__alloc_fail_at(0);
      if (st == EGRESS_OK) {
        CU_ASSERT(out != NULL);
        egress__free(out);
        if (used < nth) {
          ok_at = nth;
          break;
        }
        continue;
      }
      CU_ASSERT(st == EGRESS_ENOMEM);
      CU_ASSERT(out == NULL);
    }
    CU_ASSERT(ok_at > 10);
  }
  egress_policy_unref(p);
}

/* Lint under allocation failure: -1 or the full count, never a partial one
 * claimed as complete (the sanitizers and valgrind watch for leaks). */
static void test_lint_alloc_failures(void) {
  const char *const allow[] = { "api.example.com",
                                "*.x.example",
                                "**.y.example",
                                "*",
                                "re:^a[0-9]+\\.example$",
                                "[2001::]/32:443",
                                "10.1.0.0/16",
                                "10.1.2.0/24",
                                "https://api.example.com/v1",
                                "2001:db8::1:443" };
  const char *const deny[] = { "b.x.example", "c.d.y.example", "10.1.2.0/24", "api.example.com" };
  egress_policy_t *p = policy_of(allow, NELEM(allow), deny, NELEM(deny));
  notes_t ns;
  memset(&ns, 0, sizeof ns);
  long want = egress__render_lint(p, lint_collect, &ns);
  CU_ASSERT_FATAL(want > 5);
  long ok_at = 0;
  for (long nth = 1; nth < 10000; nth++) {
    memset(&ns, 0, sizeof ns);
    egress__alloc_fail_at(nth);
    long got = egress__render_lint(p, lint_collect, &ns);
    long used = egress__alloc_count();
    egress__alloc_fail_at(0);
    CU_ASSERT(got == -1 || got == want);
    if (got == want && used < nth) {
      ok_at = nth;
      break;
    }
  }
  CU_ASSERT(ok_at > 10);
  egress_policy_unref(p);
}

static CU_TestInfo render_tests[] = {
  { "golden manifests of the example policy", test_golden_examples },
  { "structure of every rendering", test_structure_all_policies },
  { "the validator rejects broken documents", test_validator_rejects },
  { "toFQDNs forms mean what the entries mean", test_fqdn_forms },
  { "semantics: rich policy, Cilium and NetworkPolicy", test_semantic_rich },
  { "semantics: example policy, skipped entry fails closed", test_semantic_example },
  { "unrenderable entries", test_unrenderable },
  { "name, namespace, component, format", test_options },
  { "gateway: selectors, agents fenced, egress as networkpolicy", test_gateway_structure },
  { "gateway: image, replicas, name, policy text", test_gateway_inputs },
  { "lint findings", test_lint },
  { "lint reports what the pairwise scan did", test_lint_matches_pairwise },
  { "lint comparison draws every kind of finding", test_lint_draws_every_finding },
  { "lint: bare IPv6 that reads like address:port", test_lint_ipv6_port_lookalike },
  { "allocation failures", test_alloc_failures },
  { "lint under allocation failures", test_lint_alloc_failures },
  CU_TEST_INFO_NULL,
};

int main(int argc, char **argv) {
  static const egress_test_suite_t suites[] = {
    { "render", suite_init, suite_cleanup, render_tests },
    { NULL, NULL, NULL, NULL },
  };
  return egress_test_main(argc, argv, suites);
}
