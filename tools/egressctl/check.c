/*
 * egressctl check: one HOST PORT, one --url, or --batch JSON lines.
 *
 * Written against egress.h alone and linked with the shared library, so it
 * exercises libegress the way any other caller does.  Every decision line
 * is the library's own decision text, printed once.
 *
 * A request egressctl refuses before the library can check it (a --batch
 * line whose context field is not a string, too long or holds a NUL; a port
 * that is not a number; a URL that is not text) still names a destination
 * and is denied: it is checked with egress_request_refuse() set, so the
 * library records it like every other denial (one event per decision line
 * that names a destination, counted in --metrics).  A line that names no
 * destination at all (not JSON, no usable "host" or "url") is refused on a
 * second checker without events: there is nothing to record, but its line
 * is still a decision line of the same shape.
 */
#ifndef _GNU_SOURCE
#  define _GNU_SOURCE 1
#endif

#include "egressctl.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

typedef struct run {
  const cli_opts_t *args;
  egress_policy_t *policy;
  egress_checker_t *ck;    /* with --events */
  egress_checker_t *quiet; /* without: lines that name no destination */
} run_t;

/* Options for a checker of this run; @p events adds --events. */
static int make_options(const cli_opts_t *a, bool events, egress_options_t **out) {
  egress_options_t *opts = NULL;
  egress_status_t st;
  int rc = CLI_SOFTWARE;
  size_t i;

  if (egress_options_new(&opts) != EGRESS_OK) {
    errmsg("out of memory");
    return CLI_SOFTWARE;
  }
  if (a->mode != NULL) {
    egress_mode_t m;
    if (strcmp(a->mode, "enforce") == 0) {
      m = EGRESS_MODE_ENFORCE;
    } else if (strcmp(a->mode, "monitor") == 0) {
      m = EGRESS_MODE_MONITOR;
    } else {
      rc = usage_error("--mode must be 'enforce' or 'monitor'");
      goto fail;
    }
    if (egress_options_set_mode(opts, m) != EGRESS_OK) goto fail;
  }
  if (a->filter && egress_options_set_mixed(opts, EGRESS_MIXED_FILTER) != EGRESS_OK) goto fail;
  if (a->timeout_ms != NULL) {
    unsigned long long v;
    if (!parse_decimal(a->timeout_ms, 600000ull, &v) || v == 0 ||
        egress_options_set_timeout_ms(opts, (uint32_t)v) != EGRESS_OK) {
      rc = usage_error("--timeout-ms must be an integer from 1 to 600000: '%s'", a->timeout_ms);
      goto fail;
    }
  }
  if (a->dns_servers != NULL) {
    st = egress_options_set_dns_servers(opts, a->dns_servers);
    if (st == EGRESS_EINVAL) rc = usage_error("invalid --dns-server list '%s'", a->dns_servers);
    if (st != EGRESS_OK) goto fail;
  }
  if (a->hosts != NULL && egress_options_set_hosts_file(opts, a->hosts) != EGRESS_OK) goto fail;
  for (i = 0; i < a->n_pref64; i++) {
    st = egress_options_add_pref64(opts, a->pref64[i]);
    if (st == EGRESS_EINVAL) rc = usage_error("invalid --pref64 prefix '%s'", a->pref64[i]);
    if (st != EGRESS_OK) goto fail;
  }
  if (events && a->events != NULL) {
    if (strcmp(a->events, "-") == 0)
      st = egress_options_set_event_fd(opts, STDOUT_FILENO);
    else
      st = egress_options_set_event_path(opts, a->events);
    if (st != EGRESS_OK) goto fail;
  }
  *out = opts;
  return 0;
fail:
  egress_options_free(opts);
  return rc;
}

static int new_checker(const run_t *run, bool events, egress_checker_t **out) {
  const cli_opts_t *a = run->args;
  egress_options_t *opts = NULL;
  char errbuf[EGRESS_ERRBUF_SIZE];
  egress_status_t st;
  int rc = make_options(a, events, &opts);

  if (rc != 0) return rc;
  errbuf[0] = '\0';
  st = egress_checker_new(run->policy, opts, out, errbuf, sizeof errbuf);
  egress_options_free(opts);
  switch (st) {
    case EGRESS_OK: return 0;
    case EGRESS_EIO:
      errmsg("cannot open events file '%s': %s", a->events ? a->events : "",
             errbuf[0] ? errbuf : egress_strerror(st));
      return CLI_CANTCREAT;
    case EGRESS_ERESOLVER:
    case EGRESS_EINVAL:
      if (a->dns_servers != NULL)
        return usage_error("invalid --dns-server list '%s': %s", a->dns_servers,
                           errbuf[0] ? errbuf : egress_strerror(st));
      /* fall through */
    default:
      errmsg("cannot create checker: %s", errbuf[0] ? errbuf : egress_strerror(st));
      return CLI_SOFTWARE;
  }
}

static int exit_for_decision(const egress_decision_t *d) {
  if (egress_decision_verdict(d) == EGRESS_VERDICT_ALLOW) return CLI_ALLOWED;
  if (egress_decision_outcome(d) == EGRESS_OUTCOME_ENFORCEMENT_UNAVAILABLE) return CLI_UNAVAILABLE;
  return CLI_DENIED;
}

/* Whether a JSON port value is a whole number that prints as an integer
 * (|v| <= 2^53, where doubles still hold every integer). */
static bool port_is_whole(const cJSON *port) {
  return port != NULL && cJSON_IsNumber(port) && isfinite(port->valuedouble) &&
         floor(port->valuedouble) == port->valuedouble && fabs(port->valuedouble) <= 9007199254740992.0;
}

/*
 * Prints decision @p d.  With @p port_as_given, the library was asked with
 * the stand-in port -1 for a port it could not be given (not a number, not
 * an integer, beyond int32): the line then shows that port as the request
 * gave it (@p port: a whole number is echoed, anything else is null).  The
 * library's text starts {"host":<string or null>,"port":<integer>,... and
 * an unescaped quote cannot occur inside a JSON string, so the first
 * ,"port": is that member.
 */
static int print_decision(const egress_decision_t *d, bool port_as_given, const cJSON *port) {
  static const char key[] = ",\"port\":";
  char *json = egress_decision_to_json(d);
  char *at, *end;
  int rc;

  if (json == NULL) {
    errmsg("out of memory while formatting a decision");
    return CLI_SOFTWARE;
  }
  if (!port_as_given || (at = strstr(json, key)) == NULL ||
      (end = strchr(at + sizeof key - 1, ',')) == NULL) {
    rc = emit_line(json);
  } else {
    char val[32];
    if (port_is_whole(port))
      snprintf(val, sizeof val, "%.0f", port->valuedouble);
    else
      strcpy(val, "null");
    *at = '\0';
    if (fputs(json, stdout) == EOF || fputs(key, stdout) == EOF || fputs(val, stdout) == EOF) {
      errmsg("cannot write output: %s", strerror(errno));
      rc = CLI_IOERR;
    } else {
      rc = emit_line(end);
    }
  }
  egress_free(json);
  return rc;
}

/* ------------------------------------------------------------------------ */
/* Single check and --url.                                                   */
/* ------------------------------------------------------------------------ */

static int run_single(const run_t *run, const char *host_arg, const char *port_arg, const char *url) {
  egress_request_t *req = NULL;
  egress_decision_t *d = NULL;
  egress_status_t st;
  int rc;

  if (url != NULL) {
    /* The library would check the host and pass the path's bytes on; a
     * URL that is not text is refused, as --batch refuses it. */
    if (!utf8_valid(url, strlen(url)) &&
        (egress_request_new(&req) != EGRESS_OK ||
         egress_request_refuse(req, EGRESS_REASON_INVALID_HOST, "invalid URL: URL is not valid UTF-8") !=
             EGRESS_OK)) {
      egress_request_free(req);
      errmsg("out of memory");
      return CLI_SOFTWARE;
    }
    st = egress_check_url(run->ck, url, req, &d);
    egress_request_free(req);
  } else {
    unsigned long long port;
    bool digits = port_arg[0] != '\0' && strspn(port_arg, "0123456789") == strlen(port_arg) &&
                  (port_arg[0] != '0' || port_arg[1] == '\0');
    if (!digits)
      return usage_error(
          "PORT must be a decimal number without sign or "
          "leading zeros: '%s'",
          port_arg);
    if (!parse_decimal(port_arg, INT32_MAX, &port)) {
      /* A number too large for the library's port is still a number: it is
       * decided, invalid_port naming the value, with its event (port 0, the
       * library's "no port", stands in the event for what it cannot hold). */
      char msg[160];
      snprintf(msg, sizeof msg, "port %.40s%s is outside 1-65535", port_arg,
               strlen(port_arg) > 40 ? "..." : "");
      if (egress_request_new(&req) != EGRESS_OK ||
          egress_request_refuse(req, EGRESS_REASON_INVALID_PORT, msg) != EGRESS_OK) {
        egress_request_free(req);
        errmsg("out of memory");
        return CLI_SOFTWARE;
      }
      port = 0;
    }
    /* Invalid UTF-8 goes to the library as given: it says so itself, and
     * its output replaces such bytes with U+FFFD. */
    st = egress_check_ex(run->ck, host_arg, (int32_t)port, req, &d);
    egress_request_free(req);
  }
  if (d == NULL) {
    errmsg("check failed: %s", egress_strerror(st));
    return CLI_SOFTWARE;
  }
  rc = print_decision(d, false, NULL);
  if (rc == 0) rc = st == EGRESS_OK ? exit_for_decision(d) : CLI_SOFTWARE;
  if (st != EGRESS_OK) errmsg("check failed: %s (denied)", egress_strerror(st));
  egress_decision_free(d);
  return rc;
}

/* ------------------------------------------------------------------------ */
/* --batch                                                                   */
/* ------------------------------------------------------------------------ */

/* Result of one batch line beyond its printed decision. */
enum { LINE_OK = 0, LINE_INTERNAL = 1, LINE_IOERR = 2 };

/* What one line asks for, as far as it could be read. */
typedef struct line {
  unsigned long long lineno;
  cJSON *root;
  char *fixed;           /* the line with NUL escapes replaced (owned) */
  unsigned char standin; /* the byte standing for a NUL, 0 if none */
  const cJSON *port;     /* as given, may be NULL */
  const cJSON *url;
  const char *dest;     /* host or URL text for the check; NULL: none */
  char *dest_text;      /* owned storage behind dest when it held NULs */
  int32_t port_val;     /* -1 when port_why */
  const char *port_why; /* why the port cannot be given to the library */
  char *why;            /* why the line is refused (owned); NULL: checked */
  egress_reason_t why_reason;
  bool why_host_nul; /* why is a host's NUL, which a bad context field
                           overrides (the context is read first) */
  egress_request_t *req;
} line_t;

static void line_free(line_t *l) {
  cJSON_Delete(l->root);
  free(l->fixed);
  free(l->dest_text);
  free(l->why);
  egress_request_free(l->req);
}

/* Sets the refusal of @p l ("line N: " and the message); false when out of
 * memory. */
static bool refuse(line_t *l, egress_reason_t reason, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static bool refuse(line_t *l, egress_reason_t reason, const char *fmt, ...) {
  char msg[512];
  va_list ap;
  int n = snprintf(msg, sizeof msg, "line %llu: ", l->lineno);
  va_start(ap, fmt);
  vsnprintf(msg + n, sizeof msg - (size_t)n, fmt, ap);
  va_end(ap);
  l->why_reason = reason;
  return (l->why = strdup(msg)) != NULL;
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
static char *neutralize_nul_escapes(const char *line, size_t len, size_t *newlen, bool *found,
                                    unsigned char *standin, bool *oom) {
  static const unsigned char candidates[] = { 0xFF, 0xFE, 0xFD, 0xFC, 0xFB, 0xFA, 0xF9,
                                              0xF8, 0xF7, 0xF6, 0xF5, 0xC1, 0xC0 };
  bool present[256];
  char *out = NULL;
  size_t i, o = 0;

  *found = false;
  *oom = false;
  *standin = 0;
  for (i = 0; i + 1 < len; i++) {
    if (line[i] != '\\') continue;
    if (line[i + 1] == 'u' && i + 6 <= len && memcmp(line + i + 2, "0000", 4) == 0) {
      *found = true;
      break;
    }
    i++; /* skip the escaped character, whatever it is */
  }
  if (!*found) return NULL;
  memset(present, 0, sizeof present);
  for (i = 0; i < len; i++) present[(unsigned char)line[i]] = true;
  for (i = 0; i < sizeof candidates && *standin == 0; i++)
    if (!present[candidates[i]]) *standin = candidates[i];
  if (*standin == 0) return NULL;
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

/* The destination as recorded when it held NULs: each becomes the text
 * "\u0000", so the event shows what was given.  NULL when out of memory. */
static char *nul_as_text(const char *s, size_t len, unsigned char standin) {
  size_t i, n = 0;
  char *out, *p;
  for (i = 0; i < len; i++) n += (unsigned char)s[i] == standin ? 6 : 1;
  if ((out = malloc(n + 1)) == NULL) return NULL;
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
 * The refusal of a host that held a NUL, quoting the host as the library
 * quotes hosts: printable ASCII as is, every other byte \xHH (the NUL
 * \x00), at most 253 bytes kept (cut before a UTF-8 continuation byte) and
 * a cut marked "…(truncated, N bytes)".
 */
static bool refuse_nul_host(line_t *l, const char *s, size_t len) {
  static const char hex[] = "0123456789abcdef";
  size_t keep = len, i;
  char quoted[253 * 4 + 1], *p = quoted;

  if (keep > 253) {
    keep = 253;
    while (keep > 0 && ((unsigned char)s[keep] & 0xC0u) == 0x80u) keep--;
  }
  for (i = 0; i < keep; i++) {
    unsigned char ch = (unsigned char)s[i] == l->standin ? 0 : (unsigned char)s[i];
    if (ch >= 0x20 && ch < 0x7f && ch != '"' && ch != '\\') {
      *p++ = (char)ch;
    } else {
      *p++ = '\\';
      *p++ = 'x';
      *p++ = hex[ch >> 4];
      *p++ = hex[ch & 15];
    }
  }
  *p = '\0';
  if (keep < len)
    return refuse(l, EGRESS_REASON_INVALID_HOST,
                  "invalid host \"%s\xe2\x80\xa6(truncated, %zu bytes)\": host contains a NUL byte", quoted,
                  len);
  return refuse(l, EGRESS_REASON_INVALID_HOST, "invalid host \"%s\": host contains a NUL byte", quoted);
}

static const struct {
  const char *key;
  egress_field_t field;
} ctx_fields[] = {
  { "method", EGRESS_FIELD_METHOD },    { "workspaceId", EGRESS_FIELD_WORKSPACE_ID },
  { "agentId", EGRESS_FIELD_AGENT_ID }, { "machineId", EGRESS_FIELD_MACHINE_ID },
  { "runId", EGRESS_FIELD_RUN_ID },     { "correlationId", EGRESS_FIELD_CORRELATION_ID },
};
#define N_CTX_FIELDS (sizeof ctx_fields / sizeof ctx_fields[0])

static bool is_our_key(const char *k, bool context) {
  size_t i;
  if (!context) return strcmp(k, "host") == 0 || strcmp(k, "port") == 0 || strcmp(k, "url") == 0;
  for (i = 0; i < N_CTX_FIELDS; i++)
    if (strcmp(k, ctx_fields[i].key) == 0) return true;
  return false;
}

/* The first key of the object that is one of ours and occurs twice, among
 * destination keys (@p context false) or context keys; NULL when none. */
static const char *duplicate_key(const cJSON *root, bool context) {
  const cJSON *child, *other;
  for (child = root->child; child != NULL; child = child->next) {
    if (child->string == NULL || !is_our_key(child->string, context)) continue;
    for (other = child->next; other != NULL; other = other->next)
      if (other->string != NULL && strcmp(other->string, child->string) == 0) return child->string;
  }
  return NULL;
}

/*
 * Reads the JSON object and its destination.  Returns false only when out
 * of memory; otherwise either l->dest is set, or l->why says why the line
 * names no destination.
 */
static bool read_destination(line_t *l, const char *raw, size_t rawlen) {
  const char *buf = raw, *end = NULL, *dup;
  size_t len = rawlen;
  bool had_nul = false, oom = false;
  const cJSON *host;

  /* A raw NUL byte is not JSON, and cJSON would copy it into a string where
   * it truncates: refuse the line before parsing. */
  if (memchr(raw, '\0', rawlen) != NULL)
    return refuse(l, EGRESS_REASON_INVALID_HOST, "line holds a raw NUL byte: not a JSON request");
  l->fixed = neutralize_nul_escapes(raw, rawlen, &len, &had_nul, &l->standin, &oom);
  if (oom) return false;
  if (had_nul && l->fixed == NULL)
    return refuse(l, EGRESS_REASON_INVALID_HOST,
                  "line holds \"\\u0000\" and every byte that could stand for it: not a "
                  "request that can be read safely");
  if (l->fixed != NULL) buf = l->fixed;

  l->root = cJSON_ParseWithLengthOpts(buf, len, &end, 0);
  if (l->root == NULL) return refuse(l, EGRESS_REASON_INVALID_HOST, "not valid JSON");
  for (; end != NULL && end < buf + len; end++)
    if (*end != ' ' && *end != '\t' && *end != '\r' && *end != '\n')
      return refuse(l, EGRESS_REASON_INVALID_HOST, "trailing data after the JSON object");
  if (!cJSON_IsObject(l->root)) return refuse(l, EGRESS_REASON_INVALID_HOST, "not a JSON object");
  /* cJSON answers a lookup with the first of duplicate keys, other parsers
   * with the last: a request that means different things to different
   * readers is refused. */
  if ((dup = duplicate_key(l->root, false)) != NULL)
    return refuse(l, EGRESS_REASON_INVALID_HOST, "duplicate key \"%s\"", dup);

  host = cJSON_GetObjectItemCaseSensitive(l->root, "host");
  l->port = cJSON_GetObjectItemCaseSensitive(l->root, "port");
  l->url = cJSON_GetObjectItemCaseSensitive(l->root, "url");

  if (l->url != NULL) {
    if (host != NULL || l->port != NULL)
      return refuse(l, EGRESS_REASON_INVALID_HOST, "give either \"url\" or \"host\" and \"port\", not both");
    if (!cJSON_IsString(l->url)) {
      l->port = NULL;
      return refuse(l, EGRESS_REASON_INVALID_HOST, "\"url\" is not a string");
    }
    l->dest = l->url->valuestring;
    l->port_val = 0;
  } else {
    if (host == NULL) return refuse(l, EGRESS_REASON_INVALID_HOST, "\"host\" is missing");
    if (!cJSON_IsString(host)) return refuse(l, EGRESS_REASON_INVALID_HOST, "\"host\" is not a string");
    l->dest = host->valuestring;
    l->port_val = -1;
    if (l->port == NULL)
      l->port_why = "\"port\" is missing";
    else if (!cJSON_IsNumber(l->port))
      l->port_why = "\"port\" is not a number";
    else if (!isfinite(l->port->valuedouble) || floor(l->port->valuedouble) != l->port->valuedouble)
      l->port_why = "\"port\" is not an integer";
    else if (l->port->valuedouble < (double)INT32_MIN || l->port->valuedouble > (double)INT32_MAX)
      l->port_why = "\"port\" is out of range";
    else
      l->port_val = (int32_t)l->port->valuedouble;
  }
  if (l->standin != 0 && strchr(l->dest, l->standin) != NULL) {
    const char *given = l->dest;
    if ((l->dest_text = nul_as_text(given, strlen(given), l->standin)) == NULL) return false;
    l->dest = l->dest_text;
    /* The library would check the host and pass the path's bytes on, and
     * no host holds a NUL: refused here, recorded as given. */
    return l->url != NULL ? refuse(l, EGRESS_REASON_INVALID_HOST, "\"url\" holds a NUL byte")
                          : (l->why_host_nul = refuse_nul_host(l, given, strlen(given)));
  }
  if (l->url != NULL && !utf8_valid(l->dest, strlen(l->dest)))
    return refuse(l, EGRESS_REASON_INVALID_HOST, "\"url\" is not valid UTF-8");
  /* Invalid UTF-8 in a host goes to the library as given (it names it, and
   * its output replaces such bytes with U+FFFD). */
  return true;
}

/* Context fields into l->req; the first bad one refuses the line, the
 * event still carries the usable ones.  False only when out of memory. */
static bool read_context(line_t *l) {
  const char *dup, *bad_key = NULL, *bad_why = NULL;
  size_t i;

  if (l->why_host_nul) {
    free(l->why);
    l->why = NULL;
  }
  if ((dup = duplicate_key(l->root, true)) != NULL)
    return l->why != NULL || refuse(l, EGRESS_REASON_INVALID_HOST, "duplicate key \"%s\"", dup);
  for (i = 0; i < N_CTX_FIELDS; i++) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(l->root, ctx_fields[i].key);
    const char *why = NULL;
    egress_status_t st;
    if (v == NULL || cJSON_IsNull(v)) continue;
    if (!cJSON_IsString(v))
      why = "is not a string";
    else if (l->standin != 0 && strchr(v->valuestring, l->standin) != NULL)
      why = "holds a NUL byte";
    else if (!utf8_valid(v->valuestring, strlen(v->valuestring)))
      why = "is not valid UTF-8";
    if (why == NULL) {
      st = egress_request_set(l->req, ctx_fields[i].field, v->valuestring);
      if (st == EGRESS_EINVAL)
        why = "is refused (longer than 1024 bytes or holds control characters)";
      else if (st != EGRESS_OK)
        return false;
    }
    if (why != NULL && bad_key == NULL) {
      bad_key = ctx_fields[i].key;
      bad_why = why;
    }
  }
  if (bad_key != NULL && l->why == NULL)
    return refuse(l, EGRESS_REASON_INVALID_HOST, "\"%s\" %s", bad_key, bad_why);
  if (l->why_host_nul && l->why == NULL) {
    const char *given = cJSON_GetObjectItemCaseSensitive(l->root, "host")->valuestring;
    return refuse_nul_host(l, given, strlen(given));
  }
  return true;
}

static int batch_line(run_t *run, const char *raw, size_t rawlen, unsigned long long lineno) {
  line_t l;
  egress_checker_t *ck = run->ck;
  egress_decision_t *d = NULL;
  egress_status_t st;
  int rc;

  memset(&l, 0, sizeof l);
  l.lineno = lineno;
  if (egress_request_new(&l.req) != EGRESS_OK || !read_destination(&l, raw, rawlen) ||
      (l.dest != NULL && !read_context(&l)))
    goto oom;
  /* A context refusal comes first (it was found first before); then the
   * port the library cannot be given. */
  if (l.why == NULL && l.port_why != NULL &&
      !refuse(&l, EGRESS_REASON_INVALID_PORT, "%s (must be an integer from 1 to 65535)", l.port_why))
    goto oom;
  if (l.why != NULL && egress_request_refuse(l.req, l.why_reason, l.why) != EGRESS_OK) goto oom;
  if (l.dest == NULL) {
    /* Nothing to record: decided without events. */
    if (run->quiet == NULL && new_checker(run, false, &run->quiet) != 0) {
      line_free(&l);
      return LINE_INTERNAL;
    }
    ck = run->quiet;
  }
  if (l.url != NULL && l.dest != NULL)
    st = egress_check_url(ck, l.dest, l.req, &d);
  else
    st = egress_check_ex(ck, l.dest, l.port_val, l.req, &d);
  if (d == NULL) {
    errmsg("line %llu: check failed: %s", lineno, egress_strerror(st));
    line_free(&l);
    return LINE_INTERNAL;
  }
  rc = print_decision(d, l.dest == NULL || (l.url == NULL && l.port_why != NULL), l.port) == 0 ? LINE_OK
                                                                                               : LINE_IOERR;
  if (rc == LINE_OK && st != EGRESS_OK) {
    errmsg("line %llu: check failed: %s (denied)", lineno, egress_strerror(st));
    rc = LINE_INTERNAL;
  }
  egress_decision_free(d);
  line_free(&l);
  return rc;
oom:
  errmsg("line %llu: out of memory", lineno);
  line_free(&l);
  return LINE_INTERNAL;
}

static bool is_blank(const char *s, size_t len) {
  size_t i;
  for (i = 0; i < len; i++)
    if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r' && s[i] != '\n') return false;
  return true;
}

static int run_batch(run_t *run, FILE *in) {
  char *line = NULL;
  size_t cap = 0;
  ssize_t n;
  unsigned long long lineno = 0;
  int rc = 0;

  for (;;) {
    int r;
    errno = 0;
    n = getline(&line, &cap, in);
    if (n < 0) break;
    lineno++;
    if (is_blank(line, (size_t)n)) continue;
    r = batch_line(run, line, (size_t)n, lineno);
    if (r == LINE_IOERR) {
      rc = CLI_IOERR;
      goto done;
    }
    if (r == LINE_INTERNAL) rc = CLI_SOFTWARE;
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

int egressctl_check(int argc, char **argv) {
  cli_opts_t a;
  run_t run;
  int rc, npos;

  memset(&run, 0, sizeof run);
  rc = cli_parse(CMD_CHECK, argc, argv, &a);
  if (rc != 0) goto done;
  run.args = &a;
  npos = argc - a.first_arg;
  if (a.policy == NULL) {
    rc = usage_error("check needs --policy FILE");
    goto done;
  }
  if (a.batch && a.url_given) {
    rc = usage_error("--batch and --url cannot be combined");
    goto done;
  }
  if ((a.batch || a.url_given) && npos != 0) {
    rc = usage_error("unexpected argument '%s' with %s", argv[a.first_arg], a.batch ? "--batch" : "--url");
    goto done;
  }
  if (!a.batch && !a.url_given && npos != 2) {
    rc = npos < 2 ? usage_error("check needs HOST and PORT")
                  : usage_error("unexpected argument '%s'", argv[a.first_arg + 2]);
    goto done;
  }
  if ((rc = load_policy(a.policy, &run.policy)) != 0) goto done;
  if (a.hosts != NULL) {
    /* c-ares would silently resolve nothing from an unreadable file; say so
     * up front instead of reporting every name as no_such_host. */
    int fd = open(a.hosts, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      errmsg("%s: cannot read hosts file: %s", a.hosts, strerror(errno));
      rc = CLI_NOINPUT;
      goto done;
    }
    close(fd);
  }
  if ((rc = new_checker(&run, true, &run.ck)) != 0) goto done;

  if (a.batch)
    rc = run_batch(&run, stdin);
  else
    rc = run_single(&run, a.url_given ? NULL : argv[a.first_arg], a.url_given ? NULL : argv[a.first_arg + 1],
                    a.url);

  if (a.metrics) {
    char *m = egress_checker_metrics(run.ck);
    if (m == NULL) {
      errmsg("out of memory while formatting metrics");
      if (rc == 0) rc = CLI_SOFTWARE;
    } else {
      fputs(m, stderr);
      egress_free(m);
    }
  }
done:
  egress_checker_free(run.quiet);
  egress_checker_free(run.ck);
  egress_policy_unref(run.policy);
  cli_opts_free(&a);
  return rc < 0 ? 0 : rc;
}
