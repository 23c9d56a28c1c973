/*
 * egress-test-dns: the loopback test responder as a program, for the CLI
 * tests, the soak and the benchmarks.
 *
 *   egress-test-dns [--bind IP] [--port N] [--zone FILE] [--stdin-lifeline]
 *                   [--default-rcode NAME] [--tcp serve|refuse|close|silent]
 *
 * Prints "PORT <n>" as the first line of stdout once it serves, then serves
 * until SIGTERM or SIGINT (or, with --stdin-lifeline, until stdin reaches
 * EOF, so it dies with the test that started it), and prints its query
 * counts to stderr on the way out.
 *
 * Zone file: one directive a line, '#' starts a comment, fields split on
 * blanks; TTLs default to 60.
 *   NAME A 1.2.3.4 [TTL]          NAME AAAA ::1 [TTL]
 *   NAME CNAME TARGET [TTL]
 *   NAME RCODE NOERROR|FORMERR|SERVFAIL|NXDOMAIN|NOTIMP|REFUSED|NODATA|<number>
 *   NAME DROP | NAME DELAY MS | NAME TRUNCATE | NAME WRONGID | NAME WRONGNAME
 *   NAME MALFORMED [truncated-rr|short|loop|bad-rdlen|bad-label]
 *   NAME NEXT                     start the next answer set of NAME's sequence
 *   NAME STICKY                   the sequence stays on its last set
 *   NAME SEQUENCE D1 | D2 | ...   shorthand: D1 goes to the current set, each
 *                                 later Dk to a new set (NAME NEXT, then Dk); e.g.
 *                                 rebind.test SEQUENCE A 93.184.216.34 | A 127.0.0.1
 *   * DEFAULT RCODE               rcode for unknown names
 * A directive that does not parse is a fatal error (exit 2) naming the line.
 */
#include "responder.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define MAX_FIELDS 64

static volatile sig_atomic_t got_signal;

static void on_signal(int sig) { got_signal = sig; }

static int parse_rcode(const char *s) {
  static const char *const names[] = { "NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED" };
  for (int i = 0; i < 6; i++)
    if (!strcasecmp(s, names[i])) return i;
  if (!strcasecmp(s, "NODATA")) return 0;
  char *end;
  long v = strtol(s, &end, 10);
  if (*s && !*end && v >= 0 && v <= 15) return (int)v;
  return -1;
}

static int parse_u32(const char *s, unsigned long max, unsigned long *out) {
  char *end;
  errno = 0;
  unsigned long v = strtoul(s, &end, 10);
  if (!*s || *end || errno || v > max || s[0] == '-') return -1;
  *out = v;
  return 0;
}

/* Apply one directive (fields after the name) to the current set of name. */
static int apply(egress_dns_responder_t *r, const char *name, char **f, int n) {
  if (n < 1) return -1;
  const char *kw = f[0];
  unsigned long v = 60;
  if (!strcasecmp(kw, "A") || !strcasecmp(kw, "AAAA") || !strcasecmp(kw, "CNAME")) {
    if (n < 2 || n > 3 || (n == 3 && parse_u32(f[2], 0xFFFFFFFFul, &v) != 0)) return -1;
    if (!strcasecmp(kw, "A")) return egress_dns_add_a(r, name, f[1], (uint32_t)v);
    if (!strcasecmp(kw, "AAAA")) return egress_dns_add_aaaa(r, name, f[1], (uint32_t)v);
    return egress_dns_add_cname(r, name, f[1], (uint32_t)v);
  }
  if (!strcasecmp(kw, "RCODE")) {
    int rc = n == 2 ? parse_rcode(f[1]) : -1;
    return rc < 0 ? -1 : egress_dns_set_rcode(r, name, rc);
  }
  if (!strcasecmp(kw, "DELAY")) {
    if (n != 2 || parse_u32(f[1], 3600000ul, &v) != 0) return -1;
    return egress_dns_set_delay_ms(r, name, (unsigned)v);
  }
  if (!strcasecmp(kw, "MALFORMED")) {
    static const char *const kinds[] = { "", "truncated-rr", "short", "loop", "bad-rdlen", "bad-label" };
    if (n == 1) return egress_dns_set_malformed(r, name, EGRESS_DNS_MALFORMED_TRUNCATED_RR);
    for (int i = 1; n == 2 && i < 6; i++)
      if (!strcasecmp(f[1], kinds[i])) return egress_dns_set_malformed(r, name, i);
    return -1;
  }
  if (n != 1) return -1;
  if (!strcasecmp(kw, "DROP")) return egress_dns_set_drop(r, name, true);
  if (!strcasecmp(kw, "TRUNCATE")) return egress_dns_set_truncate(r, name, true);
  if (!strcasecmp(kw, "WRONGID")) return egress_dns_set_wrong_id(r, name, true);
  if (!strcasecmp(kw, "WRONGNAME")) return egress_dns_set_wrong_name(r, name, true);
  if (!strcasecmp(kw, "STICKY")) return egress_dns_set_sticky(r, name, true);
  if (!strcasecmp(kw, "NEXT")) return egress_dns_next_set(r, name) < 0 ? -1 : 0;
  return -1;
}

static int apply_line(egress_dns_responder_t *r, const char *raw) {
  /* '|' is a token of its own even without blanks round it. */
  char line[3 * 4096 + 1];
  size_t o = 0;
  for (const char *p = raw; *p && *p != '#' && o + 3 < sizeof(line); p++) {
    if (*p == '|') {
      memcpy(line + o, " | ", 3);
      o += 3;
    } else {
      line[o++] = *p;
    }
  }
  line[o] = '\0';
  char *f[MAX_FIELDS];
  int n = 0;
  for (char *save = NULL, *tok = strtok_r(line, " \t\r\n", &save); tok;
       tok = strtok_r(NULL, " \t\r\n", &save)) {
    if (n == MAX_FIELDS) return -1;
    f[n++] = tok;
  }
  if (n == 0) return 0;
  if (n < 2) return -1;
  if (!strcmp(f[0], "*")) {
    int rc = (n == 3 && !strcasecmp(f[1], "DEFAULT")) ? parse_rcode(f[2]) : -1;
    if (rc < 0) return -1;
    egress_dns_set_default_rcode(r, rc);
    return 0;
  }
  if (strcasecmp(f[1], "SEQUENCE") != 0) return apply(r, f[0], f + 1, n - 1);
  int start = 2;
  bool first = true;
  for (int i = 2; i <= n; i++) {
    if (i < n && strcmp(f[i], "|") != 0) continue;
    if (!first && egress_dns_next_set(r, f[0]) < 0) return -1;
    if (apply(r, f[0], f + start, i - start) != 0) return -1;
    first = false;
    start = i + 1;
  }
  return 0;
}

static int load_zone(egress_dns_responder_t *r, const char *path) {
  FILE *fp = fopen(path, "r");
  if (!fp) {
    fprintf(stderr, "egress-test-dns: %s: %s\n", path, strerror(errno));
    return -1;
  }
  char line[4096];
  int lineno = 0, rc = 0;
  while (fgets(line, sizeof(line), fp)) {
    lineno++;
    if (apply_line(r, line) != 0) {
      line[strcspn(line, "\r\n")] = '\0';
      fprintf(stderr, "egress-test-dns: %s:%d: bad directive: %s\n", path, lineno, line);
      rc = -1;
      break;
    }
  }
  fclose(fp);
  return rc;
}

static void usage(FILE *f) {
  fputs(
      "usage: egress-test-dns [--bind IP] [--port N] [--zone FILE] [--stdin-lifeline]\n"
      "                       [--default-rcode RCODE] [--tcp serve|refuse|close|silent]\n",
      f);
}

int main(int argc, char **argv) {
  const char *bind_ip = "127.0.0.1", *zone = NULL, *tcp = NULL;
  unsigned long port = 0;
  int default_rcode = -1;
  bool lifeline = false;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    bool has_val = i + 1 < argc;
    if (!strcmp(a, "--bind") && has_val) {
      bind_ip = argv[++i];
    } else if (!strcmp(a, "--port") && has_val) {
      if (parse_u32(argv[++i], 65535, &port) != 0) goto bad_usage;
    } else if (!strcmp(a, "--zone") && has_val) {
      zone = argv[++i];
    } else if (!strcmp(a, "--default-rcode") && has_val) {
      if ((default_rcode = parse_rcode(argv[++i])) < 0) goto bad_usage;
    } else if (!strcmp(a, "--tcp") && has_val) {
      tcp = argv[++i];
    } else if (!strcmp(a, "--stdin-lifeline")) {
      lifeline = true;
    } else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
      usage(stdout);
      return 0;
    } else {
      goto bad_usage;
    }
  }

  /* Block the signals before the server thread exists so that it inherits
   * the mask and only ppoll() below ever takes them. */
  sigset_t block, orig;
  sigemptyset(&block);
  sigaddset(&block, SIGTERM);
  sigaddset(&block, SIGINT);
  sigaddset(&block, SIGHUP);
  sigprocmask(SIG_BLOCK, &block, &orig);
  struct sigaction sa;
  memset(&sa, 0, sizeof(sa));
  sa.sa_handler = on_signal;
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGHUP, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);

  egress_dns_responder_t *r = egress_dns_start_port(bind_ip, (uint16_t)port);
  if (!r) {
    fprintf(stderr, "egress-test-dns: cannot serve on %s port %lu: %s\n", bind_ip, port, strerror(errno));
    return 1;
  }
  int status = 0;
  if (zone && load_zone(r, zone) != 0) {
    status = 2;
    goto done;
  }
  if (default_rcode >= 0) egress_dns_set_default_rcode(r, default_rcode);
  if (tcp) {
    egress_dns_tcp_mode_t m;
    if (!strcmp(tcp, "serve"))
      m = EGRESS_DNS_TCP_SERVE;
    else if (!strcmp(tcp, "refuse"))
      m = EGRESS_DNS_TCP_REFUSE;
    else if (!strcmp(tcp, "close"))
      m = EGRESS_DNS_TCP_CLOSE;
    else if (!strcmp(tcp, "silent"))
      m = EGRESS_DNS_TCP_SILENT;
    else {
      fprintf(stderr, "egress-test-dns: bad --tcp mode %s\n", tcp);
      status = 2;
      goto done;
    }
    egress_dns_set_tcp_mode(r, m);
  }

  printf("PORT %u\n", (unsigned)egress_dns_port(r));
  fflush(stdout);

  while (!got_signal) {
    struct pollfd pfd = { .fd = lifeline ? 0 : -1, .events = POLLIN };
    int n = ppoll(&pfd, 1, NULL, &orig);
    if (n < 0 && errno != EINTR) break;
    if (n > 0 && lifeline) {
      char buf[256];
      ssize_t got = read(0, buf, sizeof(buf));
      if (got == 0 || (got < 0 && errno != EINTR && errno != EAGAIN)) break;
    }
  }

done:
  egress_dns_dump_counts(r, stderr);
  egress_dns_stop(r);
  return status;

bad_usage:
  usage(stderr);
  return 2;
}
