/*
 * egressctl: the option table, usage, output and policy loading shared by
 * the subcommands.  Uses only egress.h: it is compiled into both halves of
 * the command (see tools/meson.build).
 */
#ifndef _GNU_SOURCE
#  define _GNU_SOURCE 1
#endif

#include "egressctl.h"

#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char egressctl_usage[] =
    "usage:\n"
    "  egressctl check --policy FILE [OPTIONS] HOST PORT\n"
    "  egressctl check --policy FILE [OPTIONS] --batch   < requests.jsonl\n"
    "  egressctl check --policy FILE [OPTIONS] --url URL\n"
    "  egressctl lint  --policy FILE [--strict]\n"
    "  egressctl render --policy FILE --format networkpolicy|cilium|gateway\n"
    "                  [--namespace NS] [--name NAME]\n"
    "                  [--component execution-plane|agent] [--skip-unrenderable]\n"
    "                  [--baseline FILE] [--output json|yaml]\n"
    "                  [--gateway-image IMAGE] [--replicas N]   (gateway)\n"
    "  egressctl --version | help | -h | --help\n"
    "\n"
    "check options:\n"
    "  --policy FILE          policy JSON (required)\n"
    "  --dns-server IP[:PORT] DNS server; repeat for several ([v6]:PORT for IPv6)\n"
    "  --hosts FILE           resolve from this hosts file\n"
    "  --mode enforce|monitor enforcement mode (default enforce)\n"
    "  --events FILE|-        append decision events as JSON Lines to FILE, or to\n"
    "                         stdout with '-' (each event line is written before\n"
    "                         the decision line of the same check)\n"
    "  --timeout-ms N         DNS time budget per check (1..600000)\n"
    "  --filter               drop forbidden addresses of a mixed answer instead\n"
    "                         of denying the whole check\n"
    "  --pref64 PREFIX        extra NAT64 prefix; may repeat\n"
    "  --metrics              print counters (Prometheus text) to stderr at the end\n"
    "  --batch                read {\"host\":..,\"port\":..} or {\"url\":..} JSON lines\n"
    "                         (plus optional method, workspaceId, agentId,\n"
    "                         machineId, runId, correlationId) from stdin\n"
    "  --url URL              check an http(s) URL, path prefixes included\n"
    "\n"
    "Each decision is printed as one JSON line on stdout.\n"
    "exit: 0 allowed, 1 denied, 2 enforcement unavailable, 64 usage,\n"
    "      65 invalid policy, 66 unreadable input, 70 internal error,\n"
    "      73 events file not writable, 74 output error.\n"
    "--batch exits 0 when every line was decided (allowed or denied); a line\n"
    "that names a destination gets its event even when refused before the\n"
    "check (bad context field, URL that is not UTF-8).\n"
    "\n"
    "lint reports every invalid entry (exit 65), then on stderr warnings\n"
    "(shadowed or duplicate entries, match-everything entries, an allow entry\n"
    "the deny list takes whole, URL entries whose path looks like a CIDR\n"
    "(http://10.0.0.0/8) or a glob (https://h/*), https on port 80 or http on\n"
    "443, bare IPv6 addresses that read like address:port) and notes\n"
    "(wildcards without their apex, entries render cannot express), and\n"
    "exits 0; with --strict a warning (never a note) exits 65.\n"
    "\n"
    "render prints a Kubernetes List on stdout, JSON or with --output yaml\n"
    "YAML (the same document): a namespace-wide default deny of egress\n"
    "(NetworkPolicy default-deny-egress, every pod), the baseline\n"
    "NetworkPolicy, and the policy as NetworkPolicy or CiliumNetworkPolicy\n"
    "(defaults: --namespace portarium, --name egress-<component>, --component\n"
    "execution-plane).  --baseline FILE reads the platform services the\n"
    "baseline allows from JSON (see README); without it: control plane :8080,\n"
    "vault :8200, temporal :7233, otel-collector :4317/:4318, kube-dns :53.\n"
    "An entry the format cannot express exits 65 naming it;\n"
    "--skip-unrenderable leaves it out (the network layer then denies that\n"
    "traffic) and says so on stderr.\n"
    "\n"
    "render --format gateway prints the egress gateway instead (README,\n"
    "Pattern B): a ConfigMap NAME-policy holding the policy file as it is,\n"
    "a Deployment and a ClusterIP Service NAME of egressd on port 3128\n"
    "(--gateway-image, default ghcr.io/portarium/egressd:<version>;\n"
    "--replicas 1..100, default 2), and NetworkPolicies: the --component pods\n"
    "(default agent) reach only the gateway and kube-dns (NAME-clients), the\n"
    "gateway reaches what the allowlist can reach, as --format networkpolicy\n"
    "renders it, and kube-dns (NAME-egress), only those pods reach the\n"
    "gateway (NAME-ingress); and default-deny-egress.  --name defaults to\n"
    "egress-gateway; --baseline does not apply.\n";

void errmsg(const char *fmt, ...) {
  va_list ap;
  fputs("egressctl: ", stderr);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
}

int usage_error(const char *fmt, ...) {
  va_list ap;
  fputs("egressctl: ", stderr);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputs("\nusage: see 'egressctl --help'\n", stderr);
  return CLI_USAGE;
}

/* Written whole and flushed at once, so that with --events - the library's
 * event lines (its own write(2) calls on fd 1) never land inside one of
 * ours. */
int emit_line(const char *json) {
  if (fputs(json, stdout) == EOF || fputc('\n', stdout) == EOF || fflush(stdout) == EOF) {
    errmsg("cannot write output: %s", strerror(errno));
    return CLI_IOERR;
  }
  return 0;
}

/* An ambiguous "0443" is refused rather than guessed. */
bool parse_decimal(const char *s, unsigned long long max, unsigned long long *out) {
  unsigned long long v = 0;
  size_t i, len = strlen(s);

  if (len == 0 || (len > 1 && s[0] == '0')) return false;
  for (i = 0; i < len; i++) {
    unsigned d;
    if (s[i] < '0' || s[i] > '9') return false;
    d = (unsigned)(s[i] - '0');
    if (v > (max - d) / 10) return false;
    v = v * 10 + d;
  }
  *out = v;
  return true;
}

/* Length of the valid UTF-8 sequence at s[0..len), 0 when invalid (overlong
 * forms, surrogates, code points above U+10FFFF and NUL are invalid). */
static size_t utf8_seq_len(const unsigned char *s, size_t len) {
  unsigned char c = s[0];
  size_t n, i;
  uint32_t cp;

  if (c == 0) return 0;
  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF) {
    n = 2;
    cp = c & 0x1Fu;
  } else if (c >= 0xE0 && c <= 0xEF) {
    n = 3;
    cp = c & 0x0Fu;
  } else if (c >= 0xF0 && c <= 0xF4) {
    n = 4;
    cp = c & 0x07u;
  } else {
    return 0;
  }
  if (len < n) return 0;
  for (i = 1; i < n; i++) {
    if ((s[i] & 0xC0u) != 0x80u) return 0;
    cp = (cp << 6) | (s[i] & 0x3Fu);
  }
  if ((n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
    return 0;
  return n;
}

bool utf8_valid(const char *s, size_t len) {
  const unsigned char *u = (const unsigned char *)s;
  size_t i = 0;
  while (i < len) {
    size_t n = utf8_seq_len(u + i, len - i);
    if (n == 0) return false;
    i += n;
  }
  return true;
}

int sanitize_text(const char *s, size_t len, char **out) {
  static const char hex[] = "0123456789abcdef";
  const unsigned char *u = (const unsigned char *)s;
  size_t i, need = 0;
  char *p;

  *out = NULL;
  if (utf8_valid(s, len)) return 0;
  for (i = 0; i < len;) {
    size_t n = utf8_seq_len(u + i, len - i);
    need += n ? n : 4;
    i += n ? n : 1;
  }
  if ((p = *out = malloc(need + 1)) == NULL) return -1;
  for (i = 0; i < len;) {
    size_t n = utf8_seq_len(u + i, len - i);
    if (n == 0) {
      *p++ = '\\';
      *p++ = 'x';
      *p++ = hex[u[i] >> 4];
      *p++ = hex[u[i] & 0xF];
      i++;
    } else {
      memcpy(p, s + i, n);
      p += n;
      i += n;
    }
  }
  *p = '\0';
  return 0;
}

int policy_error(const char *path, egress_status_t st, const char *errbuf) {
  const char *why = errbuf[0] ? errbuf : egress_strerror(st);
  size_t plen = strlen(path);
  /* The loader names the file too: name it once. */
  if (strncmp(why, path, plen) == 0 && why[plen] == ':' && why[plen + 1] == ' ') why += plen + 2;
  switch (st) {
    case EGRESS_OK: return 0;
    case EGRESS_EPOLICY: errmsg("%s: invalid policy: %s", path, why); return CLI_DATAERR;
    case EGRESS_EIO: errmsg("%s: cannot read policy: %s", path, why); return CLI_NOINPUT;
    case EGRESS_EINVAL: errmsg("%s: %s", path, why); return CLI_USAGE;
    default: errmsg("%s: %s", path, why); return CLI_SOFTWARE;
  }
}

int load_policy(const char *path, egress_policy_t **out) {
  char errbuf[EGRESS_ERRBUF_SIZE];
  errbuf[0] = '\0';
  return policy_error(path, egress_policy_from_file(path, out, errbuf, sizeof errbuf), errbuf);
}

/* ------------------------------------------------------------------------ */
/* The option table: one row per option, naming the subcommands that take  */
/* it and where its value goes.                                             */
/* ------------------------------------------------------------------------ */

typedef enum {
  SET_ONCE,   /* a string given at most once, never empty */
  SET_FLAG,   /* a flag */
  SET_DNS,    /* repeatable, joined with ',' */
  SET_PREF64, /* repeatable, kept as a list */
  SET_URL,    /* at most once, may be empty (a check input) */
} opt_kind_t;

typedef struct cli_option {
  const char *name;
  unsigned cmds;
  opt_kind_t kind;
  size_t offset; /* of the const char * or bool in cli_opts_t */
} cli_option_t;

#define SLOT(field) offsetof(cli_opts_t, field)

static const cli_option_t options[] = {
  { "policy", CMD_CHECK | CMD_LINT | CMD_RENDER, SET_ONCE, SLOT(policy) },
  { "dns-server", CMD_CHECK, SET_DNS, 0 },
  { "hosts", CMD_CHECK, SET_ONCE, SLOT(hosts) },
  { "mode", CMD_CHECK, SET_ONCE, SLOT(mode) },
  { "events", CMD_CHECK, SET_ONCE, SLOT(events) },
  { "timeout-ms", CMD_CHECK, SET_ONCE, SLOT(timeout_ms) },
  { "filter", CMD_CHECK, SET_FLAG, SLOT(filter) },
  { "pref64", CMD_CHECK, SET_PREF64, 0 },
  { "metrics", CMD_CHECK, SET_FLAG, SLOT(metrics) },
  { "batch", CMD_CHECK, SET_FLAG, SLOT(batch) },
  { "url", CMD_CHECK, SET_URL, SLOT(url) },
  { "strict", CMD_LINT, SET_FLAG, SLOT(strict) },
  { "format", CMD_RENDER, SET_ONCE, SLOT(format) },
  { "namespace", CMD_RENDER, SET_ONCE, SLOT(name_space) },
  { "name", CMD_RENDER, SET_ONCE, SLOT(name) },
  { "component", CMD_RENDER, SET_ONCE, SLOT(component) },
  { "baseline", CMD_RENDER, SET_ONCE, SLOT(baseline) },
  { "skip-unrenderable", CMD_RENDER, SET_FLAG, SLOT(skip_unrenderable) },
  { "output", CMD_RENDER, SET_ONCE, SLOT(output) },
  { "gateway-image", CMD_RENDER, SET_ONCE, SLOT(gateway_image) },
  { "replicas", CMD_RENDER, SET_ONCE, SLOT(replicas) },
};
#define N_OPTIONS (sizeof options / sizeof options[0])
#define OPT_HELP  ((int)N_OPTIONS)

static int append_dns_server(cli_opts_t *o, const char *server) {
  size_t have = o->dns_servers ? strlen(o->dns_servers) : 0;
  size_t add = strlen(server);
  char *p;

  if (add == 0) return usage_error("--dns-server needs an address");
  /* One server per option: a comma here would smuggle a list past the
   * per-option syntax the usage promises. */
  if (strchr(server, ',') != NULL)
    return usage_error(
        "--dns-server takes one IP[:PORT]; repeat the option "
        "for several servers: '%s'",
        server);
  if (add > SIZE_MAX - have - 2 || (p = realloc(o->dns_servers, have + add + 2)) == NULL) {
    errmsg("out of memory");
    return CLI_SOFTWARE;
  }
  if (have > 0) p[have++] = ',';
  memcpy(p + have, server, add + 1);
  o->dns_servers = p;
  return 0;
}

static int append_pref64(cli_opts_t *o, const char *prefix) {
  const char **p;
  if (o->n_pref64 >= SIZE_MAX / sizeof *p - 1 ||
      (p = realloc(o->pref64, (o->n_pref64 + 1) * sizeof *p)) == NULL) {
    errmsg("out of memory");
    return CLI_SOFTWARE;
  }
  p[o->n_pref64++] = prefix;
  o->pref64 = p;
  return 0;
}

static int take(const cli_option_t *opt, const char *arg, cli_opts_t *o) {
  char *slot = (char *)o + opt->offset;
  const char **str = (const char **)(void *)slot;

  switch (opt->kind) {
    case SET_FLAG: *(bool *)(void *)slot = true; return 0;
    case SET_DNS: return append_dns_server(o, arg);
    case SET_PREF64: return append_pref64(o, arg);
    case SET_URL:
      if (o->url_given) return usage_error("--%s given more than once", opt->name);
      o->url_given = true;
      *str = arg;
      return 0;
    case SET_ONCE:
      if (*str != NULL) return usage_error("--%s given more than once", opt->name);
      if (arg[0] == '\0') return usage_error("--%s needs a non-empty argument", opt->name);
      *str = arg;
      return 0;
  }
  return CLI_SOFTWARE;
}

int cli_parse(unsigned cmd, int argc, char **argv, cli_opts_t *o) {
  struct option longopts[N_OPTIONS + 2];
  size_t i, n = 0;
  int c, rc = 0;

  memset(o, 0, sizeof *o);
  for (i = 0; i < N_OPTIONS; i++) {
    if (!(options[i].cmds & cmd)) continue;
    longopts[n].name = options[i].name;
    longopts[n].has_arg = options[i].kind == SET_FLAG ? no_argument : required_argument;
    longopts[n].flag = NULL;
    longopts[n].val = (int)i;
    n++;
  }
  longopts[n++] = (struct option){ "help", no_argument, NULL, OPT_HELP };
  longopts[n] = (struct option){ NULL, 0, NULL, 0 };

  opterr = 0;
  optind = 1;
  while (rc == 0 && (c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
    const char *arg = optind > 0 ? argv[optind - 1] : "";
    if (c == OPT_HELP || c == 'h') {
      if (fputs(egressctl_usage, stdout) == EOF || fflush(stdout) == EOF) return CLI_IOERR;
      return -1;
    }
    if (c == ':')
      rc = usage_error("option '%s' needs an argument", arg);
    else if ((c < 0 || c >= OPT_HELP) && (cmd & CMD_CHECK) && arg[0] == '-' && arg[1] >= '0' && arg[1] <= '9')
      rc = usage_error(
          "unknown option '%s' (PORT is a number from 1 to 65535; a HOST or "
          "PORT that starts with '-' goes after '--')",
          arg);
    else if (c < 0 || c >= OPT_HELP)
      rc = usage_error("unknown option '%s' for %s", arg, argv[0]);
    else
      rc = take(&options[c], optarg, o);
  }
  o->first_arg = optind;
  return rc;
}

void cli_opts_free(cli_opts_t *o) {
  free(o->dns_servers);
  free(o->pref64);
  o->dns_servers = NULL;
  o->pref64 = NULL;
}
