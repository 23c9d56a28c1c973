/*
 * egressctl - command line front end of libegress (DESIGN.md section 7).
 *
 * Written against the public API in egress.h only, so that it exercises the
 * library the way any other caller would.
 *
 * Exit status (sysexits-style where one applies):
 *   0   allowed (single check / --url), or --batch decided every line
 *   1   denied
 *   2   enforcement unavailable (DNS failure: fail closed)
 *   64  usage error (unknown option, missing or extra argument, bad PORT text)
 *   65  invalid policy (the entry-level message is written to stderr); render:
 *       an entry the format cannot express (without --skip-unrenderable);
 *       lint --strict: the policy has warnings
 *   66  an input file (policy, hosts file) cannot be read
 *   70  internal error (out of memory, library failure)
 *   73  the --events file cannot be opened for appending
 *   74  writing the output (or reading --batch input) failed
 *
 * PORT: argument *syntax* is checked here (decimal digits only, no sign, no
 * leading zero, below 2^31); anything else is a usage error.  A syntactically
 * numeric port outside 1..65535 (0, 65536, 70000) is a check input: the
 * library decides it as invalid_port, the decision is printed and the exit
 * status is 1.
 *
 * Exit status of a check follows the verdict, i.e. what the caller must do:
 * in monitor mode a policy denial has verdict allow and exits 0, while the
 * printed decision still carries the outcome enforce mode would produce.
 */
#ifndef _GNU_SOURCE
#  define _GNU_SOURCE 1
#endif

#include "egress.h"
/* render and lint analysis live in the library as internal functions
 * (lib/render.c) so that the tests check exactly what is printed here. */
#include "render.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

enum {
  CLI_ALLOWED = 0,
  CLI_DENIED = 1,
  CLI_UNAVAILABLE = 2,
  CLI_USAGE = 64,
  CLI_DATAERR = 65,
  CLI_NOINPUT = 66,
  CLI_SOFTWARE = 70,
  CLI_CANTCREAT = 73,
  CLI_IOERR = 74,
};

static const char *const usage_text =
    "usage:\n"
    "  egressctl check --policy FILE [OPTIONS] HOST PORT\n"
    "  egressctl check --policy FILE [OPTIONS] --batch   < requests.jsonl\n"
    "  egressctl check --policy FILE [OPTIONS] --url URL\n"
    "  egressctl lint  --policy FILE [--strict]\n"
    "  egressctl render --policy FILE --format networkpolicy|cilium\n"
    "                  [--namespace NS] [--name NAME]\n"
    "                  [--component execution-plane|agent] [--skip-unrenderable]\n"
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
    "--batch exits 0 when every line was decided (allowed or denied).\n"
    "\n"
    "lint prints warnings (shadowed or duplicate entries, match-everything\n"
    "entries, wildcards without their apex, URL ports off the scheme default,\n"
    "entries render cannot express) on stderr and exits 0; with --strict a\n"
    "warning exits 65.\n"
    "\n"
    "render prints a Kubernetes List (JSON) on stdout: the baseline\n"
    "NetworkPolicy plus the policy as NetworkPolicy or CiliumNetworkPolicy\n"
    "(defaults: --namespace portarium, --name egress-<component>, --component\n"
    "execution-plane).  An entry the format cannot express exits 65 naming it;\n"
    "--skip-unrenderable leaves it out (the network layer then denies that\n"
    "traffic) and says so on stderr.\n";

/* ------------------------------------------------------------------------ */
/* Small helpers.                                                            */
/* ------------------------------------------------------------------------ */

static void errmsg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void errmsg(const char *fmt, ...) {
  va_list ap;
  fputs("egressctl: ", stderr);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
}

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage_error(const char *fmt, ...) {
  va_list ap;
  fputs("egressctl: ", stderr);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputs("\n", stderr);
  fputs(usage_text, stderr);
  return CLI_USAGE;
}

/* One decision line: written whole and flushed at once, so that with
 * --events - the library's event lines (its own write(2) calls on fd 1)
 * never land inside one of ours. */
static int emit_line(const char *json) {
  if (fputs(json, stdout) == EOF || fputc('\n', stdout) == EOF ||
      fflush(stdout) == EOF) {
    errmsg("cannot write output: %s", strerror(errno));
    return CLI_IOERR;
  }
  return 0;
}

/* Strict decimal: digits only, no sign, no white space, no leading zero
 * (an ambiguous "0443" is refused rather than guessed), value <= max. */
static bool parse_decimal(const char *s, unsigned long long max,
                          unsigned long long *out) {
  unsigned long long v = 0;
  size_t i, len = strlen(s);

  if (len == 0 || (len > 1 && s[0] == '0'))
    return false;
  for (i = 0; i < len; i++) {
    unsigned d;
    if (s[i] < '0' || s[i] > '9')
      return false;
    d = (unsigned)(s[i] - '0');
    if (v > (max - d) / 10)
      return false;
    v = v * 10 + d;
  }
  *out = v;
  return true;
}

/* Length of the valid UTF-8 sequence at s[0..len), 0 when invalid (overlong
 * forms, surrogates and code points above U+10FFFF are invalid). */
static size_t utf8_seq_len(const unsigned char *s, size_t len) {
  unsigned char c = s[0];
  size_t n, i;
  uint32_t cp;

  if (c < 0x80)
    return 1;
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
  if (len < n)
    return 0;
  for (i = 1; i < n; i++) {
    if ((s[i] & 0xC0u) != 0x80u)
      return 0;
    cp = (cp << 6) | (s[i] & 0x3Fu);
  }
  if ((n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) || cp > 0x10FFFF ||
      (cp >= 0xD800 && cp <= 0xDFFF))
    return 0;
  return n;
}

/*
 * Sentinel byte standing for a JSON "\u0000" escape in --batch input (see
 * neutralize_nul_escapes).  0xFF never occurs in valid UTF-8.
 */
#define NUL_SENTINEL 0xFFu

/*
 * A host (or URL) to hand to the library.  Valid UTF-8 without NUL passes
 * unchanged.  Otherwise each NUL becomes the text "\u0000" and each byte of
 * an invalid UTF-8 sequence "\xNN": the result still shows what was given,
 * is valid UTF-8 (so the JSON we print stays valid), and holds a backslash,
 * which DESIGN section 4 step 1 makes an invalid_host on its own - so the
 * rewrite can never turn a bad host into an allowed one.
 * @p sentinel_is_nul: whether 0xFF bytes stand for NUL escapes.
 * Returns 0, or -1 on allocation failure; *out is NULL when no copy was
 * needed, else a malloc'ed string.
 */
static int sanitize_text(const char *s, size_t len, bool sentinel_is_nul,
                         char **out) {
  const unsigned char *u = (const unsigned char *)s;
  size_t i, need = 0;
  bool clean = true;
  char *buf, *p;

  *out = NULL;
  for (i = 0; i < len;) {
    size_t n = u[i] == 0 ? 0 : utf8_seq_len(u + i, len - i);
    if (n == 0) {
      clean = false;
      need += 6; /* "\u0000" or "\xNN" (4) - size for the larger */
      i++;
    } else {
      need += n;
      i += n;
    }
  }
  if (clean)
    return 0;
  buf = malloc(need + 1);
  if (buf == NULL)
    return -1;
  p = buf;
  for (i = 0; i < len;) {
    size_t n = u[i] == 0 ? 0 : utf8_seq_len(u + i, len - i);
    if (n == 0) {
      if (u[i] == 0 || (sentinel_is_nul && u[i] == NUL_SENTINEL)) {
        memcpy(p, "\\u0000", 6);
        p += 6;
      } else {
        static const char hex[] = "0123456789abcdef";
        p[0] = '\\';
        p[1] = 'x';
        p[2] = hex[u[i] >> 4];
        p[3] = hex[u[i] & 0xF];
        p += 4;
      }
      i++;
    } else {
      memcpy(p, s + i, n);
      p += n;
      i += n;
    }
  }
  *p = '\0';
  *out = buf;
  return 0;
}

/* ------------------------------------------------------------------------ */
/* Policy and checker set-up.                                                */
/* ------------------------------------------------------------------------ */

static int load_policy(const char *path, egress_policy_t **out) {
  char errbuf[EGRESS_ERRBUF_SIZE];
  egress_status_t st;

  errbuf[0] = '\0';
  st = egress_policy_from_file(path, out, errbuf, sizeof errbuf);
  switch (st) {
  case EGRESS_OK:
    return 0;
  case EGRESS_EPOLICY:
    errmsg("%s: invalid policy: %s", path,
           errbuf[0] ? errbuf : egress_strerror(st));
    return CLI_DATAERR;
  case EGRESS_EIO:
    errmsg("%s: cannot read policy: %s", path,
           errbuf[0] ? errbuf : egress_strerror(st));
    return CLI_NOINPUT;
  case EGRESS_EINVAL:
    errmsg("%s: %s", path, errbuf[0] ? errbuf : egress_strerror(st));
    return CLI_USAGE;
  default:
    errmsg("%s: %s", path, errbuf[0] ? errbuf : egress_strerror(st));
    return CLI_SOFTWARE;
  }
}

typedef struct check_args {
  const char *policy_path;
  char *dns_servers; /* joined with ',' (owned) */
  const char *hosts_path;
  const char *mode;
  const char *events;
  const char *timeout_ms;
  const char *url;
  const char **pref64; /* argv pointers (array owned) */
  size_t n_pref64;
  bool filter;
  bool metrics;
  bool batch;
} check_args_t;

static int append_dns_server(check_args_t *a, const char *server) {
  size_t have = a->dns_servers ? strlen(a->dns_servers) : 0;
  size_t add = strlen(server);
  char *p;

  if (add == 0)
    return usage_error("--dns-server needs an address");
  /* One server per option: a comma here would smuggle a list past the
   * per-option syntax the usage promises. */
  if (strchr(server, ',') != NULL)
    return usage_error("--dns-server takes one IP[:PORT]; repeat the option "
                       "for several servers: '%s'", server);
  if (add > SIZE_MAX - have - 2)
    return CLI_SOFTWARE;
  p = realloc(a->dns_servers, have + add + 2);
  if (p == NULL) {
    errmsg("out of memory");
    return CLI_SOFTWARE;
  }
  if (have > 0)
    p[have++] = ',';
  memcpy(p + have, server, add + 1);
  a->dns_servers = p;
  return 0;
}

static int build_checker(const check_args_t *a, egress_policy_t *policy,
                         egress_checker_t **out) {
  egress_options_t *opts = NULL;
  char errbuf[EGRESS_ERRBUF_SIZE];
  egress_status_t st;
  int rc = CLI_SOFTWARE;
  size_t i;

  *out = NULL;
  if (egress_options_new(&opts) != EGRESS_OK) {
    errmsg("out of memory");
    goto done;
  }
  if (a->mode != NULL) {
    egress_mode_t m;
    if (strcmp(a->mode, "enforce") == 0) {
      m = EGRESS_MODE_ENFORCE;
    } else if (strcmp(a->mode, "monitor") == 0) {
      m = EGRESS_MODE_MONITOR;
    } else {
      rc = usage_error("--mode must be 'enforce' or 'monitor'");
      goto done;
    }
    if (egress_options_set_mode(opts, m) != EGRESS_OK)
      goto done;
  }
  if (a->filter && egress_options_set_mixed(opts, EGRESS_MIXED_FILTER) != EGRESS_OK)
    goto done;
  if (a->timeout_ms != NULL) {
    unsigned long long v;
    if (!parse_decimal(a->timeout_ms, 600000ull, &v) || v == 0 ||
        egress_options_set_timeout_ms(opts, (uint32_t)v) != EGRESS_OK) {
      rc = usage_error("--timeout-ms must be an integer from 1 to 600000: '%s'",
                       a->timeout_ms);
      goto done;
    }
  }
  if (a->dns_servers != NULL) {
    st = egress_options_set_dns_servers(opts, a->dns_servers);
    if (st == EGRESS_EINVAL) {
      rc = usage_error("invalid --dns-server list '%s'", a->dns_servers);
      goto done;
    }
    if (st != EGRESS_OK)
      goto done;
  }
  if (a->hosts_path != NULL) {
    /* c-ares would silently resolve nothing from an unreadable file; say so
     * up front instead of reporting every name as no_such_host. */
    int fd = open(a->hosts_path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      errmsg("%s: cannot read hosts file: %s", a->hosts_path, strerror(errno));
      rc = CLI_NOINPUT;
      goto done;
    }
    close(fd);
    if (egress_options_set_hosts_file(opts, a->hosts_path) != EGRESS_OK)
      goto done;
  }
  for (i = 0; i < a->n_pref64; i++) {
    st = egress_options_add_pref64(opts, a->pref64[i]);
    if (st == EGRESS_EINVAL) {
      rc = usage_error("invalid --pref64 prefix '%s'", a->pref64[i]);
      goto done;
    }
    if (st != EGRESS_OK)
      goto done;
  }
  if (a->events != NULL) {
    if (strcmp(a->events, "-") == 0)
      st = egress_options_set_event_fd(opts, STDOUT_FILENO);
    else
      st = egress_options_set_event_path(opts, a->events);
    if (st != EGRESS_OK)
      goto done;
  }

  errbuf[0] = '\0';
  st = egress_checker_new(policy, opts, out, errbuf, sizeof errbuf);
  switch (st) {
  case EGRESS_OK:
    rc = 0;
    break;
  case EGRESS_EIO:
    errmsg("cannot open events file '%s': %s", a->events ? a->events : "",
           errbuf[0] ? errbuf : egress_strerror(st));
    rc = CLI_CANTCREAT;
    break;
  case EGRESS_ERESOLVER:
  case EGRESS_EINVAL:
    if (a->dns_servers != NULL) {
      rc = usage_error("invalid --dns-server list '%s': %s", a->dns_servers,
                       errbuf[0] ? errbuf : egress_strerror(st));
      break;
    }
    /* fall through */
  default:
    errmsg("cannot create checker: %s", errbuf[0] ? errbuf : egress_strerror(st));
    rc = CLI_SOFTWARE;
    break;
  }

done:
  egress_options_free(opts);
  return rc;
}

static int exit_for_decision(const egress_decision_t *d) {
  if (egress_decision_verdict(d) == EGRESS_VERDICT_ALLOW)
    return CLI_ALLOWED;
  if (egress_decision_outcome(d) == EGRESS_OUTCOME_ENFORCEMENT_UNAVAILABLE)
    return CLI_UNAVAILABLE;
  return CLI_DENIED;
}

static int print_decision(const egress_decision_t *d) {
  char *json = egress_decision_to_json(d);
  int rc;

  if (json == NULL) {
    errmsg("out of memory while formatting a decision");
    return CLI_SOFTWARE;
  }
  rc = emit_line(json);
  egress_free(json);
  return rc;
}

/* ------------------------------------------------------------------------ */
/* Single check and --url.                                                   */
/* ------------------------------------------------------------------------ */

static int run_single(egress_checker_t *ck, const char *host_arg,
                      const char *port_arg, const char *url) {
  egress_decision_t *d = NULL;
  egress_status_t st;
  char *clean = NULL;
  int rc;

  if (url != NULL) {
    if (sanitize_text(url, strlen(url), false, &clean) != 0) {
      errmsg("out of memory");
      return CLI_SOFTWARE;
    }
    st = egress_check_url(ck, clean ? clean : url, NULL, &d);
  } else {
    unsigned long long port;
    if (!parse_decimal(port_arg, INT32_MAX, &port))
      return usage_error("PORT must be a decimal number without sign or "
                         "leading zeros: '%s'", port_arg);
    if (sanitize_text(host_arg, strlen(host_arg), false, &clean) != 0) {
      errmsg("out of memory");
      return CLI_SOFTWARE;
    }
    st = egress_check_ex(ck, clean ? clean : host_arg, (int32_t)port, NULL, &d);
  }
  free(clean);

  if (d == NULL) {
    errmsg("check failed: %s", egress_strerror(st));
    return CLI_SOFTWARE;
  }
  rc = print_decision(d);
  if (rc == 0)
    rc = st == EGRESS_OK ? exit_for_decision(d) : CLI_SOFTWARE;
  if (st != EGRESS_OK)
    errmsg("check failed: %s (denied)", egress_strerror(st));
  egress_decision_free(d);
  return rc;
}

/* ------------------------------------------------------------------------ */
/* --batch                                                                   */
/* ------------------------------------------------------------------------ */

/* Whether a JSON port value is a whole number that prints as an integer
 * (|v| <= 2^53, where doubles still hold every integer); such a value is
 * echoed in the output, anything else shows as null. */
static bool port_is_whole(const cJSON *port) {
  return port != NULL && cJSON_IsNumber(port) && isfinite(port->valuedouble) &&
         floor(port->valuedouble) == port->valuedouble &&
         fabs(port->valuedouble) <= 9007199254740992.0;
}

/* Result of one batch line beyond its printed decision. */
enum { LINE_OK = 0, LINE_INTERNAL = 1, LINE_IOERR = 2 };

/*
 * A line that is not a usable request still gets a line of output in the
 * decision shape: deny, reason invalid_host, and a message naming the line.
 * No event is emitted for it: it names no destination that could be checked.
 * @p port is copied when it is an integral number, else null.
 */
static int emit_line_deny(unsigned long long lineno, const cJSON *port,
                          const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int emit_line_deny(unsigned long long lineno, const cJSON *port,
                          const char *fmt, ...) {
  cJSON *o = NULL;
  char *text = NULL, *msg = NULL;
  int rc = LINE_INTERNAL, n;
  va_list ap;
  char prefix[48];

  va_start(ap, fmt);
  n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (n < 0)
    goto done;
  snprintf(prefix, sizeof prefix, "line %llu: ", lineno);
  msg = malloc(strlen(prefix) + (size_t)n + 1);
  if (msg == NULL)
    goto done;
  strcpy(msg, prefix);
  va_start(ap, fmt);
  vsnprintf(msg + strlen(prefix), (size_t)n + 1, fmt, ap);
  va_end(ap);

  o = cJSON_CreateObject();
  if (o == NULL || cJSON_AddNullToObject(o, "host") == NULL)
    goto done;
  if (port_is_whole(port)) {
    if (cJSON_AddNumberToObject(o, "port", port->valuedouble) == NULL)
      goto done;
  } else if (cJSON_AddNullToObject(o, "port") == NULL) {
    goto done;
  }
  if (cJSON_AddStringToObject(o, "verdict", "deny") == NULL ||
      cJSON_AddStringToObject(o, "outcome",
                              egress_outcome_name(EGRESS_OUTCOME_DENIED)) == NULL ||
      cJSON_AddStringToObject(o, "reason",
                              egress_reason_name(EGRESS_REASON_INVALID_HOST)) == NULL ||
      cJSON_AddNullToObject(o, "matchedRule") == NULL ||
      cJSON_AddArrayToObject(o, "addresses") == NULL ||
      cJSON_AddStringToObject(o, "message", msg) == NULL)
    goto done;
  text = cJSON_PrintUnformatted(o);
  if (text == NULL)
    goto done;
  rc = emit_line(text) == 0 ? LINE_OK : LINE_IOERR;

done:
  if (rc == LINE_INTERNAL)
    errmsg("line %llu: out of memory", lineno);
  cJSON_free(text);
  cJSON_Delete(o);
  free(msg);
  return rc;
}

/*
 * cJSON 1.7.15 decodes "\u0000" into a NUL inside its C string, which would
 * silently truncate "api.example.com\u0000.evil" to an allowed name.  Before
 * parsing, each such escape is replaced by a raw NUL_SENTINEL byte inside the
 * string, so the decoded value keeps its full length and the sentinel marks
 * where the NUL was.  Escaped backslashes ("\\u0000") are left alone.
 * Returns a new buffer (length unchanged or smaller) or NULL with *found
 * false when there is nothing to replace.
 */
static char *neutralize_nul_escapes(const char *line, size_t len, size_t *newlen,
                                    bool *found, bool *oom) {
  char *out = NULL;
  size_t i, o = 0;

  *found = false;
  *oom = false;
  for (i = 0; i + 1 < len; i++) {
    if (line[i] != '\\')
      continue;
    if (line[i + 1] == 'u' && i + 6 <= len && memcmp(line + i + 2, "0000", 4) == 0) {
      *found = true;
      break;
    }
    i++; /* skip the escaped character, whatever it is */
  }
  if (!*found)
    return NULL;
  out = malloc(len + 1);
  if (out == NULL) {
    *oom = true;
    return NULL;
  }
  for (i = 0; i < len;) {
    if (line[i] == '\\' && i + 1 < len) {
      if (line[i + 1] == 'u' && i + 6 <= len && memcmp(line + i + 2, "0000", 4) == 0) {
        out[o++] = (char)NUL_SENTINEL;
        i += 6;
      } else {
        out[o++] = line[i++];
        out[o++] = line[i++];
      }
    } else {
      out[o++] = line[i++];
    }
  }
  out[o] = '\0';
  *newlen = o;
  return out;
}

static const struct {
  const char *key;
  egress_field_t field;
} ctx_fields[] = {
    {"method", EGRESS_FIELD_METHOD},
    {"workspaceId", EGRESS_FIELD_WORKSPACE_ID},
    {"agentId", EGRESS_FIELD_AGENT_ID},
    {"machineId", EGRESS_FIELD_MACHINE_ID},
    {"runId", EGRESS_FIELD_RUN_ID},
    {"correlationId", EGRESS_FIELD_CORRELATION_ID},
};

static bool is_known_key(const char *k) {
  size_t i;
  if (strcmp(k, "host") == 0 || strcmp(k, "port") == 0 || strcmp(k, "url") == 0)
    return true;
  for (i = 0; i < sizeof ctx_fields / sizeof ctx_fields[0]; i++)
    if (strcmp(k, ctx_fields[i].key) == 0)
      return true;
  return false;
}

/* Whether a decoded string may be used as-is (no NUL, valid UTF-8). */
static bool text_is_clean(const char *s) {
  const unsigned char *u = (const unsigned char *)s;
  size_t i = 0, len = strlen(s);
  while (i < len) {
    size_t n = utf8_seq_len(u + i, len - i);
    if (n == 0)
      return false;
    i += n;
  }
  return true;
}

/*
 * Rewrites the library's decision line for a line whose port was not an
 * integer in int32 range (the library was asked with -1): the port shows what
 * was given when it was a whole number, else null, and the message says why.
 */
static int emit_patched(const egress_decision_t *d, unsigned long long lineno,
                        const cJSON *port, const char *why) {
  char *json = egress_decision_to_json(d);
  cJSON *o = NULL, *item;
  char *text = NULL, *msg = NULL;
  const char *libmsg;
  int rc = LINE_INTERNAL;
  size_t mlen;

  if (json == NULL)
    goto done;
  o = cJSON_Parse(json);
  if (o == NULL || !cJSON_IsObject(o))
    goto done;
  if (port_is_whole(port))
    item = cJSON_CreateNumber(port->valuedouble);
  else
    item = cJSON_CreateNull();
  if (item == NULL)
    goto done;
  if (cJSON_GetObjectItemCaseSensitive(o, "port") != NULL)
    cJSON_ReplaceItemInObjectCaseSensitive(o, "port", item);
  else
    cJSON_AddItemToObject(o, "port", item);
  /* The library's message would quote the stand-in -1, so say it here.  If
   * the library found something else wrong first (the host), keep its
   * message after ours. */
  item = cJSON_GetObjectItemCaseSensitive(o, "reason");
  libmsg = "";
  if (!cJSON_IsString(item) || strcmp(item->valuestring, "invalid_port") != 0) {
    item = cJSON_GetObjectItemCaseSensitive(o, "message");
    libmsg = cJSON_IsString(item) ? item->valuestring : "";
  }
  mlen = strlen(libmsg) + strlen(why) + 96;
  msg = malloc(mlen);
  if (msg == NULL)
    goto done;
  snprintf(msg, mlen, "line %llu: %s (must be an integer from 1 to 65535)%s%s",
           lineno, why, libmsg[0] ? "; " : "", libmsg);
  item = cJSON_CreateString(msg);
  if (item == NULL)
    goto done;
  if (cJSON_GetObjectItemCaseSensitive(o, "message") != NULL)
    cJSON_ReplaceItemInObjectCaseSensitive(o, "message", item);
  else
    cJSON_AddItemToObject(o, "message", item);
  text = cJSON_PrintUnformatted(o);
  if (text == NULL)
    goto done;
  rc = emit_line(text) == 0 ? LINE_OK : LINE_IOERR;

done:
  if (rc == LINE_INTERNAL)
    errmsg("line %llu: out of memory", lineno);
  cJSON_free(text);
  cJSON_Delete(o);
  egress_free(json);
  free(msg);
  return rc;
}

static int batch_line(egress_checker_t *ck, const char *raw, size_t rawlen,
                      unsigned long long lineno) {
  const char *buf = raw, *end = NULL;
  char *fixed = NULL, *host_clean = NULL;
  size_t len = rawlen, i;
  bool had_nul = false, oom = false;
  cJSON *root = NULL;
  const cJSON *host, *port, *url, *child;
  egress_request_t *req = NULL;
  egress_decision_t *d = NULL;
  egress_status_t st;
  int rc = LINE_INTERNAL;
  int32_t port_val = -1;
  const char *port_why = NULL;

  /* A raw NUL byte is not JSON, and cJSON would copy it into a string where
   * it truncates: refuse the line before parsing. */
  if (memchr(raw, '\0', rawlen) != NULL) {
    rc = emit_line_deny(lineno, NULL, "line holds a raw NUL byte: not a JSON request");
    goto done;
  }
  fixed = neutralize_nul_escapes(raw, rawlen, &len, &had_nul, &oom);
  if (oom) {
    errmsg("line %llu: out of memory", lineno);
    goto done;
  }
  if (fixed != NULL)
    buf = fixed;

  root = cJSON_ParseWithLengthOpts(buf, len, &end, 0);
  if (root == NULL) {
    rc = emit_line_deny(lineno, NULL, "not valid JSON");
    goto done;
  }
  for (; end != NULL && end < buf + len; end++) {
    if (*end != ' ' && *end != '\t' && *end != '\r' && *end != '\n') {
      rc = emit_line_deny(lineno, NULL, "trailing data after the JSON object");
      goto done;
    }
  }
  if (!cJSON_IsObject(root)) {
    rc = emit_line_deny(lineno, NULL, "not a JSON object");
    goto done;
  }
  /* cJSON answers a lookup with the first of duplicate keys, other parsers
   * with the last: a request that means different things to different
   * readers is refused. */
  for (child = root->child; child != NULL; child = child->next) {
    const cJSON *other;
    if (child->string == NULL || !is_known_key(child->string))
      continue;
    for (other = child->next; other != NULL; other = other->next) {
      if (other->string != NULL && strcmp(other->string, child->string) == 0) {
        rc = emit_line_deny(lineno, NULL, "duplicate key \"%s\"", child->string);
        goto done;
      }
    }
  }

  host = cJSON_GetObjectItemCaseSensitive(root, "host");
  port = cJSON_GetObjectItemCaseSensitive(root, "port");
  url = cJSON_GetObjectItemCaseSensitive(root, "url");

  if (url != NULL && (host != NULL || port != NULL)) {
    rc = emit_line_deny(lineno, port, "give either \"url\" or \"host\" and \"port\", not both");
    goto done;
  }
  if (url != NULL && !cJSON_IsString(url)) {
    rc = emit_line_deny(lineno, NULL, "\"url\" is not a string");
    goto done;
  }
  if (url != NULL && !text_is_clean(url->valuestring)) {
    /* A URL parser may read a backslash as a slash, so the rewrite used for
     * hosts is not safe here: refuse outright. */
    rc = emit_line_deny(lineno, NULL, "\"url\" holds a NUL or invalid UTF-8");
    goto done;
  }
  if (url == NULL) {
    if (host == NULL) {
      rc = emit_line_deny(lineno, port, "\"host\" is missing");
      goto done;
    }
    if (!cJSON_IsString(host)) {
      rc = emit_line_deny(lineno, port, "\"host\" is not a string");
      goto done;
    }
    if (port == NULL) {
      port_why = "\"port\" is missing";
    } else if (!cJSON_IsNumber(port)) {
      port_why = "\"port\" is not a number";
    } else if (!isfinite(port->valuedouble) ||
               floor(port->valuedouble) != port->valuedouble) {
      port_why = "\"port\" is not an integer";
    } else if (port->valuedouble < (double)INT32_MIN ||
               port->valuedouble > (double)INT32_MAX) {
      port_why = "\"port\" is out of range";
    } else {
      port_val = (int32_t)port->valuedouble;
    }
    if (sanitize_text(host->valuestring, strlen(host->valuestring), had_nul,
                      &host_clean) != 0) {
      errmsg("line %llu: out of memory", lineno);
      goto done;
    }
  }

  for (i = 0; i < sizeof ctx_fields / sizeof ctx_fields[0]; i++) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, ctx_fields[i].key);
    if (v == NULL || cJSON_IsNull(v))
      continue;
    if (!cJSON_IsString(v)) {
      rc = emit_line_deny(lineno, port, "\"%s\" is not a string", ctx_fields[i].key);
      goto done;
    }
    if (!text_is_clean(v->valuestring)) {
      rc = emit_line_deny(lineno, port, "\"%s\" holds a NUL or invalid UTF-8",
                          ctx_fields[i].key);
      goto done;
    }
    if (req == NULL && egress_request_new(&req) != EGRESS_OK) {
      errmsg("line %llu: out of memory", lineno);
      goto done;
    }
    st = egress_request_set(req, ctx_fields[i].field, v->valuestring);
    if (st == EGRESS_EINVAL) {
      rc = emit_line_deny(lineno, port,
                          "\"%s\" is refused (longer than 1024 bytes or holds "
                          "control characters)", ctx_fields[i].key);
      goto done;
    }
    if (st != EGRESS_OK) {
      errmsg("line %llu: %s", lineno, egress_strerror(st));
      goto done;
    }
  }

  if (url != NULL)
    st = egress_check_url(ck, url->valuestring, req, &d);
  else
    st = egress_check_ex(ck, host_clean ? host_clean : host->valuestring,
                         port_val, req, &d);
  if (d == NULL) {
    errmsg("line %llu: check failed: %s", lineno, egress_strerror(st));
    /* Still one output line per input line, and still a deny. */
    rc = emit_line_deny(lineno, NULL, "internal error: %s", egress_strerror(st));
    if (rc == LINE_OK)
      rc = LINE_INTERNAL;
    goto done;
  }
  if (port_why != NULL)
    rc = emit_patched(d, lineno, port, port_why);
  else
    rc = print_decision(d) == 0 ? LINE_OK : LINE_IOERR;
  if (rc == LINE_OK && st != EGRESS_OK) {
    errmsg("line %llu: check failed: %s (denied)", lineno, egress_strerror(st));
    rc = LINE_INTERNAL;
  }

done:
  egress_decision_free(d);
  egress_request_free(req);
  cJSON_Delete(root);
  free(host_clean);
  free(fixed);
  return rc;
}

static bool is_blank(const char *s, size_t len) {
  size_t i;
  for (i = 0; i < len; i++)
    if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r' && s[i] != '\n')
      return false;
  return true;
}

static int run_batch(egress_checker_t *ck, FILE *in) {
  char *line = NULL;
  size_t cap = 0;
  ssize_t n;
  unsigned long long lineno = 0;
  int rc = 0;

  for (;;) {
    int r;
    errno = 0;
    n = getline(&line, &cap, in);
    if (n < 0)
      break;
    lineno++;
    if (is_blank(line, (size_t)n))
      continue;
    r = batch_line(ck, line, (size_t)n, lineno);
    if (r == LINE_IOERR) {
      rc = CLI_IOERR;
      goto done;
    }
    if (r == LINE_INTERNAL)
      rc = CLI_SOFTWARE;
  }
  if (errno == ENOMEM) {
    errmsg("line %llu: out of memory reading input", lineno + 1);
    rc = CLI_SOFTWARE;
  } else if (ferror(in)) {
    errmsg("cannot read input: %s", strerror(errno));
    rc = CLI_IOERR;
  }

done:
  free(line);
  return rc;
}

/* ------------------------------------------------------------------------ */
/* Subcommands.                                                              */
/* ------------------------------------------------------------------------ */

enum {
  OPT_POLICY = 256,
  OPT_DNS,
  OPT_HOSTS,
  OPT_MODE,
  OPT_EVENTS,
  OPT_TIMEOUT,
  OPT_FILTER,
  OPT_PREF64,
  OPT_METRICS,
  OPT_BATCH,
  OPT_URL,
  OPT_HELP = 'h',
};

/* getopt_long over argv[1..] (the subcommand is argv[0] for getopt). */
static int bad_option(int c, char **argv) {
  const char *arg = optind > 0 ? argv[optind - 1] : "";
  if (c == ':')
    return usage_error("option '%s' needs an argument", arg);
  return usage_error("unknown option '%s'", arg);
}

static int set_once(const char **slot, const char *value, const char *name) {
  if (*slot != NULL)
    return usage_error("%s given more than once", name);
  if (value[0] == '\0')
    return usage_error("%s needs a non-empty argument", name);
  *slot = value;
  return 0;
}

static int cmd_check(int argc, char **argv) {
  static const struct option longopts[] = {
      {"policy", required_argument, NULL, OPT_POLICY},
      {"dns-server", required_argument, NULL, OPT_DNS},
      {"hosts", required_argument, NULL, OPT_HOSTS},
      {"mode", required_argument, NULL, OPT_MODE},
      {"events", required_argument, NULL, OPT_EVENTS},
      {"timeout-ms", required_argument, NULL, OPT_TIMEOUT},
      {"filter", no_argument, NULL, OPT_FILTER},
      {"pref64", required_argument, NULL, OPT_PREF64},
      {"metrics", no_argument, NULL, OPT_METRICS},
      {"batch", no_argument, NULL, OPT_BATCH},
      {"url", required_argument, NULL, OPT_URL},
      {"help", no_argument, NULL, OPT_HELP},
      {NULL, 0, NULL, 0},
  };
  check_args_t a;
  egress_policy_t *policy = NULL;
  egress_checker_t *ck = NULL;
  int rc = 0, c, npos;
  bool url_given = false;

  memset(&a, 0, sizeof a);
  opterr = 0;
  optind = 1;
  while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
    switch (c) {
    case OPT_POLICY:
      rc = set_once(&a.policy_path, optarg, "--policy");
      break;
    case OPT_DNS:
      rc = append_dns_server(&a, optarg);
      break;
    case OPT_HOSTS:
      rc = set_once(&a.hosts_path, optarg, "--hosts");
      break;
    case OPT_MODE:
      rc = set_once(&a.mode, optarg, "--mode");
      break;
    case OPT_EVENTS:
      rc = set_once(&a.events, optarg, "--events");
      break;
    case OPT_TIMEOUT:
      rc = set_once(&a.timeout_ms, optarg, "--timeout-ms");
      break;
    case OPT_FILTER:
      a.filter = true;
      break;
    case OPT_METRICS:
      a.metrics = true;
      break;
    case OPT_BATCH:
      a.batch = true;
      break;
    case OPT_URL:
      /* An empty URL is a check input (denied), not a usage error. */
      if (url_given) {
        rc = usage_error("--url given more than once");
      } else {
        url_given = true;
        a.url = optarg;
      }
      break;
    case OPT_PREF64: {
      const char **p;
      if (a.n_pref64 >= SIZE_MAX / sizeof *p - 1) {
        rc = CLI_SOFTWARE;
        break;
      }
      p = realloc(a.pref64, (a.n_pref64 + 1) * sizeof *p);
      if (p == NULL) {
        errmsg("out of memory");
        rc = CLI_SOFTWARE;
        break;
      }
      p[a.n_pref64++] = optarg;
      a.pref64 = p;
      break;
    }
    case OPT_HELP:
      fputs(usage_text, stdout);
      goto done;
    default:
      rc = bad_option(c, argv);
      break;
    }
    if (rc != 0)
      goto done;
  }

  npos = argc - optind;
  if (a.policy_path == NULL) {
    rc = usage_error("check needs --policy FILE");
    goto done;
  }
  if (a.batch && url_given) {
    rc = usage_error("--batch and --url cannot be combined");
    goto done;
  }
  if ((a.batch || url_given) && npos != 0) {
    rc = usage_error("unexpected argument '%s' with %s", argv[optind],
                     a.batch ? "--batch" : "--url");
    goto done;
  }
  if (!a.batch && !url_given && npos != 2) {
    rc = npos < 2 ? usage_error("check needs HOST and PORT")
                  : usage_error("unexpected argument '%s'", argv[optind + 2]);
    goto done;
  }

  rc = load_policy(a.policy_path, &policy);
  if (rc != 0)
    goto done;
  rc = build_checker(&a, policy, &ck);
  if (rc != 0)
    goto done;

  if (a.batch)
    rc = run_batch(ck, stdin);
  else
    rc = run_single(ck, url_given ? NULL : argv[optind],
                    url_given ? NULL : argv[optind + 1], a.url);

  if (a.metrics) {
    char *m = egress_checker_metrics(ck);
    if (m == NULL) {
      errmsg("out of memory while formatting metrics");
      if (rc == 0)
        rc = CLI_SOFTWARE;
    } else {
      fputs(m, stderr);
      egress_free(m);
    }
  }

done:
  egress_checker_free(ck);
  egress_policy_unref(policy);
  free(a.dns_servers);
  free(a.pref64);
  return rc;
}

/*
 * Lint findings beyond validity come from the library's analysis
 * (egress__render_lint): each is printed to stderr as it is found.  A policy
 * with warnings still lints "ok" (exit 0) unless --strict is given; the
 * stdout summary line is the same either way, the count goes to stderr.
 */
typedef struct lint_ctx {
  const char *path;
} lint_ctx_t;

static void lint_warn(egress_list_t list, size_t index, const char *entry, const char *what,
                      void *user_data) {
  const lint_ctx_t *ctx = user_data;
  char *clean = NULL;
  /* Entries are validated, so this is belt and braces for the terminal. */
  if (sanitize_text(entry, strlen(entry), false, &clean) != 0)
    clean = NULL;
  fprintf(stderr, "%s: warning: %s[%zu] \"%s\": %s\n", ctx->path,
          list == EGRESS_LIST_ALLOW ? "egressAllowlist" : "egressDenylist",
          index, clean ? clean : entry, what);
  free(clean);
}

enum {
  OPT_STRICT = 300,
  OPT_FORMAT,
  OPT_NAMESPACE,
  OPT_NAME,
  OPT_COMPONENT,
  OPT_SKIP,
};

static int cmd_lint(int argc, char **argv) {
  static const struct option longopts[] = {
      {"policy", required_argument, NULL, OPT_POLICY},
      {"strict", no_argument, NULL, OPT_STRICT},
      {"help", no_argument, NULL, OPT_HELP},
      {NULL, 0, NULL, 0},
  };
  const char *path = NULL;
  egress_policy_t *policy = NULL;
  lint_ctx_t ctx;
  int rc = 0, c;
  size_t n_allow, n_deny;
  long warnings;
  bool strict = false;

  opterr = 0;
  optind = 1;
  while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
    switch (c) {
    case OPT_POLICY:
      rc = set_once(&path, optarg, "--policy");
      break;
    case OPT_STRICT:
      strict = true;
      break;
    case OPT_HELP:
      fputs(usage_text, stdout);
      return 0;
    default:
      rc = bad_option(c, argv);
      break;
    }
    if (rc != 0)
      return rc;
  }
  if (optind < argc)
    return usage_error("unexpected argument '%s'", argv[optind]);
  if (path == NULL)
    return usage_error("lint needs --policy FILE");

  rc = load_policy(path, &policy);
  if (rc != 0)
    return rc;
  ctx.path = path;
  warnings = egress__render_lint(policy, lint_warn, &ctx);
  if (warnings < 0) {
    errmsg("out of memory while linting");
    egress_policy_unref(policy);
    return CLI_SOFTWARE;
  }
  if (warnings > 0)
    fprintf(stderr, "%s: %ld warning%s%s\n", path, warnings, warnings == 1 ? "" : "s",
            strict ? " (--strict: failing)" : "");
  if (strict && warnings > 0) {
    egress_policy_unref(policy);
    return CLI_DATAERR;
  }
  n_allow = egress_policy_rule_count(policy, EGRESS_LIST_ALLOW);
  n_deny = egress_policy_rule_count(policy, EGRESS_LIST_DENY);
  printf("ok: %zu allow entr%s, %zu deny entr%s, digest %s\n", n_allow,
         n_allow == 1 ? "y" : "ies", n_deny, n_deny == 1 ? "y" : "ies",
         egress_policy_digest(policy));
  if (fflush(stdout) == EOF || ferror(stdout)) {
    errmsg("cannot write output: %s", strerror(errno));
    rc = CLI_IOERR;
  }
  egress_policy_unref(policy);
  return rc;
}

typedef struct render_note_ctx {
  const char *path;
  bool skip;
  size_t notes;
} render_note_ctx_t;

static void render_note(egress_list_t list, size_t index, const char *entry, const char *what,
                        void *user_data) {
  render_note_ctx_t *ctx = user_data;
  ctx->notes++;
  fprintf(stderr, "%s: %s: %s[%zu] \"%s\": %s\n", ctx->path,
          ctx->skip ? "left out" : "cannot render",
          list == EGRESS_LIST_ALLOW ? "egressAllowlist" : "egressDenylist", index, entry, what);
}

static int cmd_render(int argc, char **argv) {
  static const struct option longopts[] = {
      {"policy", required_argument, NULL, OPT_POLICY},
      {"format", required_argument, NULL, OPT_FORMAT},
      {"namespace", required_argument, NULL, OPT_NAMESPACE},
      {"name", required_argument, NULL, OPT_NAME},
      {"component", required_argument, NULL, OPT_COMPONENT},
      {"skip-unrenderable", no_argument, NULL, OPT_SKIP},
      {"help", no_argument, NULL, OPT_HELP},
      {NULL, 0, NULL, 0},
  };
  const char *path = NULL, *format = NULL, *ns = NULL, *name = NULL, *component = NULL;
  egress__render_opts_t o;
  render_note_ctx_t nctx;
  egress_policy_t *policy = NULL;
  char errbuf[EGRESS_ERRBUF_SIZE];
  char *out = NULL;
  egress_status_t st;
  int rc = 0, c;

  memset(&o, 0, sizeof o);
  opterr = 0;
  optind = 1;
  while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
    switch (c) {
    case OPT_POLICY:
      rc = set_once(&path, optarg, "--policy");
      break;
    case OPT_FORMAT:
      rc = set_once(&format, optarg, "--format");
      break;
    case OPT_NAMESPACE:
      rc = set_once(&ns, optarg, "--namespace");
      break;
    case OPT_NAME:
      rc = set_once(&name, optarg, "--name");
      break;
    case OPT_COMPONENT:
      rc = set_once(&component, optarg, "--component");
      break;
    case OPT_SKIP:
      o.skip_unrenderable = true;
      break;
    case OPT_HELP:
      fputs(usage_text, stdout);
      return 0;
    default:
      rc = bad_option(c, argv);
      break;
    }
    if (rc != 0)
      return rc;
  }
  if (optind < argc)
    return usage_error("unexpected argument '%s'", argv[optind]);
  if (path == NULL)
    return usage_error("render needs --policy FILE");
  if (format == NULL)
    return usage_error("render needs --format networkpolicy|cilium");
  if (!egress__render_format_parse(format, &o.format))
    return usage_error("--format must be 'networkpolicy' or 'cilium'");
  if (component != NULL && !egress__render_component_parse(component, &o.component))
    return usage_error("--component must be 'execution-plane' or 'agent'");
  o.name_space = ns;
  o.name = name;

  rc = load_policy(path, &policy);
  if (rc != 0)
    return rc;
  nctx.path = path;
  nctx.skip = o.skip_unrenderable;
  nctx.notes = 0;
  errbuf[0] = '\0';
  st = egress__render(policy, &o, render_note, &nctx, &out, errbuf, sizeof errbuf);
  switch (st) {
  case EGRESS_OK:
    break;
  case EGRESS_EPOLICY:
    errmsg("%s: %zu entr%s cannot be rendered as %s; --skip-unrenderable leaves "
           "them out (the network layer then denies that traffic)", path, nctx.notes,
           nctx.notes == 1 ? "y" : "ies", format);
    rc = CLI_DATAERR;
    goto done;
  case EGRESS_EINVAL:
    rc = usage_error("%s", errbuf[0] ? errbuf : egress_strerror(st));
    goto done;
  default:
    errmsg("%s", errbuf[0] ? errbuf : egress_strerror(st));
    rc = CLI_SOFTWARE;
    goto done;
  }
  if (fputs(out, stdout) == EOF || fflush(stdout) == EOF || ferror(stdout)) {
    errmsg("cannot write output: %s", strerror(errno));
    rc = CLI_IOERR;
  }
done:
  egress_free(out);
  egress_policy_unref(policy);
  return rc;
}

int main(int argc, char **argv) {
  const char *cmd;

  if (argc < 2 || argv[1] == NULL)
    return usage_error("missing command");
  cmd = argv[1];
  if (strcmp(cmd, "help") == 0 || strcmp(cmd, "-h") == 0 ||
      strcmp(cmd, "--help") == 0) {
    if (argc > 2)
      return usage_error("unexpected argument '%s'", argv[2]);
    fputs(usage_text, stdout);
    return fflush(stdout) == EOF ? CLI_IOERR : 0;
  }
  if (strcmp(cmd, "--version") == 0) {
    if (argc > 2)
      return usage_error("unexpected argument '%s'", argv[2]);
    printf("egressctl %s (libegress %s, special ranges %s)\n", EGRESS_VERSION_STRING,
           egress_version(), egress_special_ranges_version());
    return fflush(stdout) == EOF ? CLI_IOERR : 0;
  }
  if (strcmp(cmd, "check") == 0)
    return cmd_check(argc - 1, argv + 1);
  if (strcmp(cmd, "lint") == 0)
    return cmd_lint(argc - 1, argv + 1);
  if (strcmp(cmd, "render") == 0)
    return cmd_render(argc - 1, argv + 1);
  return usage_error("unknown command '%s'", cmd);
}
