/*
 * egressctl - command line front end of libegress.
 *
 * Written against the public API in egress.h, so that it exercises the
 * library the way any other caller would, with two exceptions that reach
 * the library's internals: render and lint (lib/render.c), and the decision
 * events of requests refused before a check (see run_t).
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
    "--batch exits 0 when every line was decided (allowed or denied); a line\n"
    "that names a destination gets its event even when refused before the\n"
    "check (bad context field, URL that is not UTF-8).\n"
    "\n"
    "lint prints warnings (shadowed or duplicate entries, match-everything\n"
    "entries, wildcards without their apex, URL ports off the scheme default,\n"
    "bare IPv6 addresses that read like address:port, entries render cannot\n"
    "express) on stderr and exits 0; with --strict a warning exits 65.\n"
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
 * Text for the terminal (lint warnings): valid UTF-8 passes unchanged,
 * every other byte becomes "\xNN".  Returns 0, or -1 on allocation
 * failure; *out is NULL when no copy was needed, else a malloc'ed string.
 */
static int sanitize_text(const char *s, size_t len, char **out) {
  const unsigned char *u = (const unsigned char *)s;
  size_t i, need = 0;
  bool clean = true;
  char *buf, *p;

  *out = NULL;
  for (i = 0; i < len;) {
    size_t n = u[i] == 0 ? 0 : utf8_seq_len(u + i, len - i);
    if (n == 0) {
      clean = false;
      need += 4;
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
      static const char hex[] = "0123456789abcdef";
      p[0] = '\\';
      p[1] = 'x';
      p[2] = hex[u[i] >> 4];
      p[3] = hex[u[i] & 0xF];
      p += 4;
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

/* Whether s[0..len) is valid UTF-8 (NUL bytes count as invalid here). */
static bool utf8_valid(const char *s, size_t len) {
  const unsigned char *u = (const unsigned char *)s;
  size_t i = 0;
  while (i < len) {
    size_t n = u[i] == 0 ? 0 : utf8_seq_len(u + i, len - i);
    if (n == 0)
      return false;
    i += n;
  }
  return true;
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

/*
 * Refused requests in the audit trail.
 *
 * A request egressctl refuses before the library can check it (a --batch
 * line whose context field is not a string, too long or holds a NUL; a URL
 * that is not text) still names a destination and is denied, so it gets a
 * decision event like every request the library denies: --events holds one
 * event per decision line that names a destination.  The public API records
 * only the checks it runs, so such a decision is built here with the
 * library's internal decision, event writer and sink (the same event shape,
 * one write per line), on a sink of our own to the --events destination:
 * the O_APPEND file opened a second time, or the same descriptor.  The
 * checker's counters (--metrics) do not include these.
 */
typedef struct run {
  egress_checker_t *ck;
  egress__sink_t *sink; /* NULL without --events */
  egress_mode_t mode;
  char digest[65];
} run_t;

static int build_checker(const check_args_t *a, egress_policy_t *policy, run_t *run) {
  egress_options_t *opts = NULL;
  char errbuf[EGRESS_ERRBUF_SIZE];
  egress_status_t st;
  int rc = CLI_SOFTWARE;
  size_t i;

  run->ck = NULL;
  run->sink = NULL;
  run->mode = EGRESS_MODE_ENFORCE;
  snprintf(run->digest, sizeof run->digest, "%s", egress_policy_digest(policy));
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
    run->mode = m;
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
  st = egress_checker_new(policy, opts, &run->ck, errbuf, sizeof errbuf);
  if (st == EGRESS_OK && a->events != NULL)
    st = egress__sink_new(opts, &run->sink, errbuf, sizeof errbuf);
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

/* A deny decision for a request refused here (see run_t), with its
 * destination, URL, port and valid context fields as given. */
static egress_decision_t *refusal_new(const run_t *run, const char *dest, const char *url,
                                      int32_t port, const char *const *fields,
                                      const char *message) {
  egress_decision_t *d = egress__calloc(1, sizeof *d);
  int i;

  if (d == NULL)
    return NULL;
  d->verdict = EGRESS_VERDICT_DENY;
  d->outcome = EGRESS_OUTCOME_DENIED;
  d->reason = EGRESS_REASON_INVALID_HOST;
  d->mode = run->mode;
  d->would_deny = true;
  d->port = port;
  d->special_version = egress__special_version;
  memcpy(d->policy_digest, run->digest, sizeof d->policy_digest);
  if ((d->destination = egress__strdup(dest)) == NULL ||
      (url != NULL && (d->url = egress__strdup(url)) == NULL) ||
      (d->message = egress__strdup(message)) == NULL)
    goto fail;
  for (i = 0; fields != NULL && i < EGRESS__FIELD_COUNT; i++)
    if (fields[i] != NULL && (d->field[i] = egress__strdup(fields[i])) == NULL)
      goto fail;
  return d;
fail:
  egress_decision_free(d);
  return NULL;
}

static void refusal_event(const run_t *run, egress_decision_t *d) {
  char *json;

  if (run->sink == NULL)
    return;
  if (egress__event_stamp(d) != EGRESS_OK || (json = egress__event_build(d, NULL)) == NULL) {
    errmsg("cannot build the decision event of a refused request");
    return;
  }
  if (egress__sink_deliver(run->sink, json, strlen(json), d) != 0)
    errmsg("cannot write the decision event of a refused request");
  egress__free(json);
}

/* ------------------------------------------------------------------------ */
/* Single check and --url.                                                   */
/* ------------------------------------------------------------------------ */

static int run_single(const run_t *run, const char *host_arg, const char *port_arg,
                      const char *url) {
  egress_checker_t *ck = run->ck;
  egress_decision_t *d = NULL;
  egress_status_t st;
  int rc;

  if (url != NULL) {
    if (!utf8_valid(url, strlen(url))) {
      /* The library would check the host and pass the path's bytes on;
       * a URL that is not text is refused, as --batch refuses it. */
      d = refusal_new(run, url, url, 0, NULL, "invalid URL: URL is not valid UTF-8");
      if (d == NULL) {
        errmsg("out of memory");
        return CLI_SOFTWARE;
      }
      refusal_event(run, d);
      rc = print_decision(d);
      egress_decision_free(d);
      return rc == 0 ? CLI_DENIED : rc;
    }
    st = egress_check_url(ck, url, NULL, &d);
  } else {
    unsigned long long port;
    if (!parse_decimal(port_arg, INT32_MAX, &port))
      return usage_error("PORT must be a decimal number without sign or "
                         "leading zeros: '%s'", port_arg);
    /* Invalid UTF-8 goes to the library as given: it says so itself, and
     * its output replaces such bytes with U+FFFD. */
    st = egress_check_ex(ck, host_arg, (int32_t)port, NULL, &d);
  }

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
 * A line that names no destination (not JSON, no usable "host" or "url",
 * two of them) still gets a line of output in the decision shape: deny,
 * reason invalid_host, and a message naming the line.  It gets no event:
 * there is no destination to record.  @p port is copied when it is an
 * integral number, else null.
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
 * parsing, each such escape is replaced by a raw stand-in byte inside the
 * string, so the decoded value keeps its full length and the stand-in marks
 * where the NUL was.  The stand-in is a byte that never occurs in UTF-8 and
 * that the line does not hold raw, so it means a NUL and nothing else.
 * Escaped backslashes ("\\u0000") are left alone.
 * Returns a new buffer (length unchanged or smaller), or NULL when there is
 * nothing to replace (*standin 0) or on error (*oom, or *standin 0 with
 * *found: every stand-in byte occurs raw in the line).
 */
static char *neutralize_nul_escapes(const char *line, size_t len, size_t *newlen,
                                    bool *found, unsigned char *standin, bool *oom) {
  static const unsigned char candidates[] = {0xFF, 0xFE, 0xFD, 0xFC, 0xFB, 0xFA, 0xF9,
                                             0xF8, 0xF7, 0xF6, 0xF5, 0xC1, 0xC0};
  bool present[256];
  char *out = NULL;
  size_t i, o = 0;

  *found = false;
  *oom = false;
  *standin = 0;
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
  memset(present, 0, sizeof present);
  for (i = 0; i < len; i++)
    present[(unsigned char)line[i]] = true;
  for (i = 0; i < sizeof candidates && *standin == 0; i++)
    if (!present[candidates[i]])
      *standin = candidates[i];
  if (*standin == 0)
    return NULL;
  out = malloc(len + 1);
  if (out == NULL) {
    *oom = true;
    return NULL;
  }
  for (i = 0; i < len;) {
    if (line[i] == '\\' && i + 1 < len) {
      if (line[i + 1] == 'u' && i + 6 <= len && memcmp(line + i + 2, "0000", 4) == 0) {
        out[o++] = (char)*standin;
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

/*
 * The host to hand the library when the line gave NULs: each becomes the
 * text "\u0000", so the host still shows what was given (the event's
 * destination) and holds a backslash, which the library refuses in any
 * host (invalid_host): the stand-in can never turn a bad host into an
 * allowed one.  NULL when out of memory.
 */
static char *nul_as_text(const char *s, size_t len, unsigned char standin) {
  size_t i, n = 0;
  char *out, *p;
  for (i = 0; i < len; i++)
    n += (unsigned char)s[i] == standin ? 6 : 1;
  out = malloc(n + 1);
  if (out == NULL)
    return NULL;
  for (p = out, i = 0; i < len; i++) {
    if ((unsigned char)s[i] == standin) {
      memcpy(p, "\\u0000", 6);
      p += 6;
    } else {
      *p++ = s[i];
    }
  }
  *p = '\0';
  return out;
}

/*
 * The message for a host that held a NUL.  The library was given the
 * stand-in text and would blame its backslash; this says what the line
 * held, quoting the host as the library quotes hosts (printable ASCII as
 * is, every other byte \xHH, the NUL \x00, cut like the library's reports).
 */
static char *nul_host_message(const char *s, size_t len, unsigned char standin) {
  static const char hex[] = "0123456789abcdef";
  static const char head[] = "invalid host \"", tail[] = "\": host contains a NUL byte";
  size_t keep = egress__report_keep(s, len, EGRESS__REPORT_HOST_MAX), i;
  char *out = malloc(sizeof head + keep * 4 + EGRESS__REPORT_MARK_MAX + sizeof tail);
  char *p = out;
  if (out == NULL)
    return NULL;
  memcpy(p, head, sizeof head - 1);
  p += sizeof head - 1;
  for (i = 0; i < keep; i++) {
    unsigned char ch = (unsigned char)s[i] == standin ? 0 : (unsigned char)s[i];
    if (ch >= 0x20 && ch < 0x7f && ch != '"' && ch != '\\') {
      *p++ = (char)ch;
    } else {
      *p++ = '\\';
      *p++ = 'x';
      *p++ = hex[ch >> 4];
      *p++ = hex[ch & 15];
    }
  }
  if (keep < len)
    p = egress__report_mark(p, len);
  memcpy(p, tail, sizeof tail);
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
#define N_CTX_FIELDS (sizeof ctx_fields / sizeof ctx_fields[0])

static bool is_destination_key(const char *k) {
  return strcmp(k, "host") == 0 || strcmp(k, "port") == 0 || strcmp(k, "url") == 0;
}

static bool is_context_key(const char *k) {
  size_t i;
  for (i = 0; i < N_CTX_FIELDS; i++)
    if (strcmp(k, ctx_fields[i].key) == 0)
      return true;
  return false;
}

/* The first key of the object that is one of ours and occurs twice, among
 * destination keys (@p context false) or context keys; NULL when none. */
static const char *duplicate_key(const cJSON *root, bool context) {
  const cJSON *child, *other;
  for (child = root->child; child != NULL; child = child->next) {
    if (child->string == NULL ||
        !(context ? is_context_key(child->string) : is_destination_key(child->string)))
      continue;
    for (other = child->next; other != NULL; other = other->next)
      if (other->string != NULL && strcmp(other->string, child->string) == 0)
        return child->string;
  }
  return NULL;
}

/*
 * Prints decision @p d as a line of output, with what the line gave for a
 * port that the library could not be asked (@p patch_port: the library was
 * asked with -1; a whole number is echoed, anything else is null) and with
 * @p message (when not NULL) in place of the library's.
 */
static int emit_decision(const egress_decision_t *d, unsigned long long lineno, bool patch_port,
                         const cJSON *port, const char *message) {
  char *json = NULL, *text = NULL;
  cJSON *o = NULL, *item;
  int rc = LINE_INTERNAL;

  if (!patch_port && message == NULL)
    return print_decision(d) == 0 ? LINE_OK : LINE_IOERR;
  json = egress_decision_to_json(d);
  if (json == NULL)
    goto done;
  o = cJSON_Parse(json);
  if (o == NULL || !cJSON_IsObject(o))
    goto done;
  if (patch_port) {
    item = port_is_whole(port) ? cJSON_CreateNumber(port->valuedouble) : cJSON_CreateNull();
    if (item == NULL)
      goto done;
    if (cJSON_GetObjectItemCaseSensitive(o, "port") != NULL)
      cJSON_ReplaceItemInObjectCaseSensitive(o, "port", item);
    else
      cJSON_AddItemToObject(o, "port", item);
  }
  if (message != NULL) {
    item = cJSON_CreateString(message);
    if (item == NULL)
      goto done;
    if (cJSON_GetObjectItemCaseSensitive(o, "message") != NULL)
      cJSON_ReplaceItemInObjectCaseSensitive(o, "message", item);
    else
      cJSON_AddItemToObject(o, "message", item);
  }
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
  return rc;
}

/* A line refused here that names its destination: denied with an event
 * (see run_t) and printed in the library's decision shape. */
static int emit_refusal(const run_t *run, unsigned long long lineno, const char *dest,
                        const char *url, int32_t port, bool patch_port, const cJSON *port_json,
                        const char *const *fields, const char *fmt, ...)
    __attribute__((format(printf, 9, 10)));
static int emit_refusal(const run_t *run, unsigned long long lineno, const char *dest,
                        const char *url, int32_t port, bool patch_port, const cJSON *port_json,
                        const char *const *fields, const char *fmt, ...) {
  char msg[512];
  egress_decision_t *d;
  va_list ap;
  int n, rc;

  n = snprintf(msg, sizeof msg, "line %llu: ", lineno);
  va_start(ap, fmt);
  vsnprintf(msg + n, sizeof msg - (size_t)n, fmt, ap);
  va_end(ap);
  d = refusal_new(run, dest, url, url != NULL ? 0 : port, fields, msg);
  if (d == NULL) {
    errmsg("line %llu: out of memory", lineno);
    return LINE_INTERNAL;
  }
  refusal_event(run, d);
  rc = emit_decision(d, lineno, url == NULL && patch_port, port_json, NULL);
  egress_decision_free(d);
  return rc;
}

static int batch_line(const run_t *run, const char *raw, size_t rawlen,
                      unsigned long long lineno) {
  const char *buf = raw, *end = NULL, *dest = NULL, *urltext = NULL, *dup;
  const char *bad_key = NULL, *bad_why = NULL;
  const char *fields[EGRESS__FIELD_COUNT] = {NULL};
  char *fixed = NULL, *host_text = NULL, *override = NULL;
  size_t len = rawlen, i;
  bool had_nul = false, oom = false, host_nul = false;
  unsigned char standin = 0;
  cJSON *root = NULL;
  const cJSON *host, *port, *url;
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
  fixed = neutralize_nul_escapes(raw, rawlen, &len, &had_nul, &standin, &oom);
  if (oom) {
    errmsg("line %llu: out of memory", lineno);
    goto done;
  }
  if (had_nul && fixed == NULL) {
    rc = emit_line_deny(lineno, NULL, "line holds \"\\u0000\" and every byte that could stand "
                                      "for it: not a request that can be read safely");
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
  if ((dup = duplicate_key(root, false)) != NULL) {
    rc = emit_line_deny(lineno, NULL, "duplicate key \"%s\"", dup);
    goto done;
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
  if (url != NULL) {
    size_t ul = strlen(url->valuestring);
    bool nul = standin != 0 && memchr(url->valuestring, standin, ul) != NULL;
    if (nul && (host_text = nul_as_text(url->valuestring, ul, standin)) == NULL) {
      errmsg("line %llu: out of memory", lineno);
      goto done;
    }
    urltext = dest = nul ? host_text : url->valuestring;
    if (nul || !utf8_valid(url->valuestring, ul)) {
      /* The library would check the host and pass the path's bytes on:
       * a URL that is not text is refused here. */
      rc = emit_refusal(run, lineno, dest, urltext, 0, false, NULL, NULL,
                        nul ? "\"url\" holds a NUL byte" : "\"url\" is not valid UTF-8");
      goto done;
    }
  } else {
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
    /* Invalid UTF-8 goes to the library as given (it names it, and its
     * output replaces such bytes with U+FFFD); a NUL cannot. */
    dest = host->valuestring;
    if (standin != 0 && memchr(dest, standin, strlen(dest)) != NULL) {
      size_t hl = strlen(dest);
      host_nul = true;
      if ((host_text = nul_as_text(dest, hl, standin)) == NULL ||
          (override = nul_host_message(dest, hl, standin)) == NULL) {
        errmsg("line %llu: out of memory", lineno);
        goto done;
      }
      dest = host_text;
    }
  }

  /* Context fields: from here on the destination is known, so a line
   * refused for its context still gets its event. */
  if ((dup = duplicate_key(root, true)) != NULL) {
    rc = emit_refusal(run, lineno, dest, urltext, port_val, port_why != NULL, port, NULL,
                      "duplicate key \"%s\"", dup);
    goto done;
  }
  for (i = 0; i < N_CTX_FIELDS; i++) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, ctx_fields[i].key);
    const char *why = NULL;
    if (v == NULL || cJSON_IsNull(v))
      continue;
    if (!cJSON_IsString(v))
      why = "is not a string";
    else if (standin != 0 && strchr(v->valuestring, standin) != NULL)
      why = "holds a NUL byte";
    else if (!utf8_valid(v->valuestring, strlen(v->valuestring)))
      why = "is not valid UTF-8";
    if (why == NULL) {
      if (req == NULL && egress_request_new(&req) != EGRESS_OK) {
        errmsg("line %llu: out of memory", lineno);
        goto done;
      }
      st = egress_request_set(req, ctx_fields[i].field, v->valuestring);
      if (st == EGRESS_EINVAL) {
        why = "is refused (longer than 1024 bytes or holds control characters)";
      } else if (st != EGRESS_OK) {
        errmsg("line %llu: %s", lineno, egress_strerror(st));
        goto done;
      } else {
        fields[ctx_fields[i].field] = v->valuestring;
      }
    }
    /* The first bad field names the refusal; the event carries the usable
     * ones (the bad ones as null), so the rest of the loop still runs. */
    if (why != NULL && bad_key == NULL) {
      bad_key = ctx_fields[i].key;
      bad_why = why;
    }
  }
  if (bad_key != NULL) {
    rc = emit_refusal(run, lineno, dest, urltext, port_val, port_why != NULL, port, fields,
                      "\"%s\" %s", bad_key, bad_why);
    goto done;
  }

  if (url != NULL)
    st = egress_check_url(run->ck, url->valuestring, req, &d);
  else
    st = egress_check_ex(run->ck, dest, port_val, req, &d);
  if (d == NULL) {
    errmsg("line %llu: check failed: %s", lineno, egress_strerror(st));
    /* Still one output line per input line, and still a deny. */
    rc = emit_line_deny(lineno, NULL, "internal error: %s", egress_strerror(st));
    if (rc == LINE_OK)
      rc = LINE_INTERNAL;
    goto done;
  }
  if (host_nul && egress_decision_verdict(d) == EGRESS_VERDICT_ALLOW) {
    /* Cannot happen (the stand-in holds a backslash); never print it. */
    errmsg("line %llu: a host holding a NUL was not refused", lineno);
    rc = emit_line_deny(lineno, port, "internal error: a host holding a NUL was not refused");
    if (rc == LINE_OK)
      rc = LINE_INTERNAL;
    goto done;
  }
  if (port_why != NULL) {
    /* The library's message would quote the stand-in -1, so say it here.
     * If the library found something else wrong first (the host), keep its
     * message after ours. */
    const char *libmsg = override ? override : egress_decision_message(d);
    bool port_msg = egress_decision_reason(d) == EGRESS_REASON_INVALID_PORT;
    size_t mlen = (port_msg || !libmsg ? 0 : strlen(libmsg)) + strlen(port_why) + 96;
    char *msg = malloc(mlen);
    if (msg == NULL) {
      errmsg("line %llu: out of memory", lineno);
      goto done;
    }
    snprintf(msg, mlen, "line %llu: %s (must be an integer from 1 to 65535)%s%s", lineno,
             port_why, port_msg || !libmsg ? "" : "; ", port_msg || !libmsg ? "" : libmsg);
    rc = emit_decision(d, lineno, true, port, msg);
    free(msg);
  } else {
    rc = emit_decision(d, lineno, false, NULL, override);
  }
  if (rc == LINE_OK && st != EGRESS_OK) {
    errmsg("line %llu: check failed: %s (denied)", lineno, egress_strerror(st));
    rc = LINE_INTERNAL;
  }

done:
  egress_decision_free(d);
  egress_request_free(req);
  cJSON_Delete(root);
  free(host_text);
  free(override);
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

static int run_batch(const run_t *run, FILE *in) {
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
    r = batch_line(run, line, (size_t)n, lineno);
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
  run_t run;
  int rc = 0, c, npos;
  bool url_given = false;

  memset(&a, 0, sizeof a);
  memset(&run, 0, sizeof run);
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
  rc = build_checker(&a, policy, &run);
  if (rc != 0)
    goto done;

  if (a.batch)
    rc = run_batch(&run, stdin);
  else
    rc = run_single(&run, url_given ? NULL : argv[optind],
                    url_given ? NULL : argv[optind + 1], a.url);

  if (a.metrics) {
    char *m = egress_checker_metrics(run.ck);
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
  egress__sink_free(run.sink);
  egress_checker_free(run.ck);
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
  if (sanitize_text(entry, strlen(entry), &clean) != 0)
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

  /* One write per warning would cost more than the analysis on a large
   * policy: stderr is block-buffered for the warnings, flushed before the
   * summary. */
  setvbuf(stderr, NULL, _IOFBF, 1 << 16);
  rc = load_policy(path, &policy);
  if (rc != 0) {
    fflush(stderr);
    return rc;
  }
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
  fflush(stderr);
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
