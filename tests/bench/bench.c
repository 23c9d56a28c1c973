/*
 * libegress benchmarks.  Run with tests/bench/run.sh.
 *
 * The machine this runs on is shared and noisy, so every figure is measured
 * next to its baseline in the same run, the two interleaved rep by rep, and
 * reported as the median of the reps with the min-max spread.  A figure is
 * never compared with a number from another run.
 *
 * Baselines:
 *  - a naive linear-scan matcher over the same parsed rules (what a
 *    hand-written allowlist does: strcasecmp / suffix compare / regex /
 *    CIDR contains, rule after rule);
 *  - bare c-ares (one channel, ares_getaddrinfo AF_UNSPEC, ares_process
 *    loop) against the same in-process loopback responder, same names;
 *  - one c-ares channel shared by threads under a mutex, against the
 *    library's channel pool;
 *  - the same checker without an event sink, with one thread, at 10 rules;
 *  - compiling the policy file that lint reads, for lint.
 *
 * Usage: egress-bench [--json PATH] [--reps N] [--quick] [--only FIGURE]
 * FIGURE is one of scaling, threads, sink, cold, channels, compile, regex,
 * lint, or profile-literal / profile-cached / profile-sink (the library alone,
 * 10 000 rules, cached names for the sink, for `perf record`; add -2t for
 * two threads).
 */
#include "egress_private.h"
#include "render.h"
#include "responder.h"

#include <ares.h>
#include <arpa/inet.h>
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/select.h>
#include <time.h>
#include <fcntl.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#define NTARGETS 64
#define MAXREPS  15
#define PORT     443

static int reps = 7;
static double rep_secs = 0.2;      /* one throughput rep */
static size_t lat_samples = 40000; /* per latency rep */
static size_t cold_samples = 300;  /* per cold block */

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what) {
  fprintf(stderr, "egress-bench: %s\n", what);
  exit(1);
}

/* ------------------------------------------------------------------------ */
/* Series of repeated measurements                                           */
/* ------------------------------------------------------------------------ */

typedef struct series {
  double v[MAXREPS];
  int n;
} series_t;

static void series_add(series_t *s, double v) {
  if (s->n < MAXREPS) s->v[s->n++] = v;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double series_median(const series_t *s) {
  double t[MAXREPS];
  if (!s->n) return 0;
  memcpy(t, s->v, (size_t)s->n * sizeof t[0]);
  qsort(t, (size_t)s->n, sizeof t[0], cmp_double);
  return s->n % 2 ? t[s->n / 2] : (t[s->n / 2 - 1] + t[s->n / 2]) / 2;
}

static double series_min(const series_t *s) {
  double m = s->n ? s->v[0] : 0;
  for (int i = 1; i < s->n; i++) m = s->v[i] < m ? s->v[i] : m;
  return m;
}

static double series_max(const series_t *s) {
  double m = s->n ? s->v[0] : 0;
  for (int i = 1; i < s->n; i++) m = s->v[i] > m ? s->v[i] : m;
  return m;
}

static double pct(double *v, size_t n, double q) {
  if (!n) return 0;
  qsort(v, n, sizeof v[0], cmp_double);
  size_t i = (size_t)(q * (double)(n - 1) + 0.5);
  return v[i < n ? i : n - 1];
}

/* ------------------------------------------------------------------------ */
/* Results table and JSON                                                    */
/* ------------------------------------------------------------------------ */

typedef enum { U_RATE, U_US, U_MS, U_BYTES, U_CPUS } unit_t;
typedef enum { T_NONE, T_VALUE_GE, T_VALUE_LE, T_RATIO_GE, T_RATIO_LE } tkind_t;

typedef struct row {
  const char *key;    /* JSON key */
  const char *figure; /* table label */
  unit_t unit;
  series_t value, base; /* raw reps */
  const char *base_label;
  tkind_t tkind;
  double target;
  const char *target_text;
} row_t;

#define MAXROWS 48
static row_t rows[MAXROWS];
static int nrows;

static row_t *row_new(const char *key, const char *figure, unit_t unit, const char *base_label) {
  if (nrows >= MAXROWS) die("too many rows");
  row_t *r = &rows[nrows++];
  memset(r, 0, sizeof *r);
  r->key = key;
  r->figure = figure;
  r->unit = unit;
  r->base_label = base_label;
  r->target_text = "-";
  return r;
}

static void row_target(row_t *r, tkind_t k, double t, const char *text) {
  r->tkind = k;
  r->target = t;
  r->target_text = text;
}

static void fmt_value(char *buf, size_t len, unit_t u, double v) {
  switch (u) {
    case U_RATE:
      if (v >= 1e6)
        snprintf(buf, len, "%.2fM/s", v / 1e6);
      else if (v >= 1e3)
        snprintf(buf, len, "%.1fk/s", v / 1e3);
      else
        snprintf(buf, len, "%.0f/s", v);
      break;
    case U_US: snprintf(buf, len, "%.2f us", v); break;
    case U_MS: snprintf(buf, len, "%.1f ms", v); break;
    case U_BYTES: snprintf(buf, len, "%.0f B", v); break;
    case U_CPUS: snprintf(buf, len, "%.2f CPUs", v); break;
  }
}

static double row_ratio(const row_t *r) {
  double b = series_median(&r->base);
  return b > 0 ? series_median(&r->value) / b : 0;
}

static const char *row_status(const row_t *r) {
  double v = series_median(&r->value), q = row_ratio(r);
  switch (r->tkind) {
    case T_VALUE_GE: return v >= r->target ? "PASS" : "MISS";
    case T_VALUE_LE: return v <= r->target ? "PASS" : "MISS";
    case T_RATIO_GE: return q >= r->target ? "PASS" : "MISS";
    case T_RATIO_LE: return q <= r->target ? "PASS" : "MISS";
    default: return "";
  }
}

static double spread_pct(const series_t *s) {
  double m = series_median(s);
  return m > 0 ? 100.0 * (series_max(s) - series_min(s)) / m : 0;
}

static void print_table(void) {
  printf("\n%-48s | %-11s %-6s | %-34s %-6s | %-7s | %-16s | %s\n", "figure", "value", "spread", "baseline",
         "spread", "ratio", "target", "");
  for (int i = 0; i < 154; i++) putchar('-');
  putchar('\n');
  for (int i = 0; i < nrows; i++) {
    const row_t *r = &rows[i];
    char v[32], b[32], bl[64], sv[16], sb[16], q[16];
    fmt_value(v, sizeof v, r->unit, series_median(&r->value));
    snprintf(sv, sizeof sv, "±%.0f%%", spread_pct(&r->value) / 2);
    if (r->base.n) {
      fmt_value(b, sizeof b, r->unit, series_median(&r->base));
      snprintf(bl, sizeof bl, "%s %s", b, r->base_label);
      snprintf(sb, sizeof sb, "±%.0f%%", spread_pct(&r->base) / 2);
      snprintf(q, sizeof q, "%.2fx", row_ratio(r));
    } else {
      snprintf(bl, sizeof bl, "-");
      sb[0] = '\0';
      snprintf(q, sizeof q, "-");
    }
    printf("%-48s | %-11s %-6s | %-34.34s %-6s | %-7s | %-16s | %s\n", r->figure, v, sv, bl, sb, q,
           r->target_text, row_status(r));
  }
  printf(
      "(value and baseline: median of the reps; spread: half the min-max range of the reps;\n"
      " ratio = value / baseline, both from this run)\n");
}

static void json_series(FILE *f, const series_t *s) {
  fputc('[', f);
  for (int i = 0; i < s->n; i++) fprintf(f, "%s%.6g", i ? ", " : "", s->v[i]);
  fputc(']', f);
}

static void json_string(FILE *f, const char *s) {
  fputc('"', f);
  for (; *s; s++) {
    if (*s == '"' || *s == '\\') fputc('\\', f);
    if ((unsigned char)*s >= 0x20) fputc(*s, f);
  }
  fputc('"', f);
}

static const char *unit_name(unit_t u) {
  switch (u) {
    case U_RATE: return "per_second";
    case U_US: return "microseconds";
    case U_MS: return "milliseconds";
    case U_CPUS: return "cpus";
    default: return "bytes";
  }
}

static int write_json(const char *path, double total_s) {
  FILE *f = fopen(path, "w");
  if (!f) return -1;
  fprintf(f, "{\n  \"library_version\": ");
  json_string(f, egress_version());
  fprintf(f, ",\n  \"c_ares_version\": ");
  json_string(f, ares_version(NULL));
  fprintf(f, ",\n  \"cpus\": %ld,\n  \"reps\": %d,\n  \"rep_seconds\": %g,\n  \"total_seconds\": %.2f,\n",
          sysconf(_SC_NPROCESSORS_ONLN), reps, rep_secs, total_s);
  fprintf(f, "  \"figures\": {\n");
  for (int i = 0; i < nrows; i++) {
    const row_t *r = &rows[i];
    fprintf(f, "    ");
    json_string(f, r->key);
    fprintf(f, ": {\"figure\": ");
    json_string(f, r->figure);
    fprintf(f, ", \"unit\": \"%s\", \"value_median\": %.6g, \"value_reps\": ", unit_name(r->unit),
            series_median(&r->value));
    json_series(f, &r->value);
    if (r->base.n) {
      fprintf(f, ", \"baseline\": ");
      json_string(f, r->base_label);
      fprintf(f, ", \"baseline_median\": %.6g, \"baseline_reps\": ", series_median(&r->base));
      json_series(f, &r->base);
      fprintf(f, ", \"ratio\": %.4f", row_ratio(r));
    }
    fprintf(f, ", \"target\": ");
    json_string(f, r->target_text);
    fprintf(f, ", \"status\": ");
    json_string(f, row_status(r)[0] ? row_status(r) : "info");
    fprintf(f, "}%s\n", i + 1 < nrows ? "," : "");
  }
  fprintf(f, "  }\n}\n");
  return fclose(f) == 0 ? 0 : -1;
}

/* ------------------------------------------------------------------------ */
/* Rule sets                                                                 */
/* ------------------------------------------------------------------------ */

/*
 * The mix, by position modulo 8: exact, CIDR, *., exact, **., CIDR, exact,
 * *. - so even 10 rules hold every kind.  CIDRs are /24, /32 and /28 blocks
 * of 11.0.0.0/8 and 12.0.0.0/8 (globally reachable, so the special-purpose
 * check lets them through), one distinct block per rule.
 */
static const char kind_pattern[8] = { 'e', 'c', '1', 'e', 'n', 'c', 'e', '1' };

typedef struct ruleset {
  size_t n;
  char **entries;
  size_t raw_bytes;      /* sum of strlen + 1 */
  char *names[NTARGETS]; /* hosts that rules allow, spread over the list */
  char *ips[NTARGETS];
} ruleset_t;

static char *xstrdup(const char *s) {
  char *c = strdup(s);
  if (!c) die("out of memory");
  return c;
}

static void cidr_parts(size_t i, unsigned *a, unsigned *b, unsigned *c) {
  *a = 11 + (unsigned)(i >> 16);
  *b = (unsigned)(i >> 8) & 255;
  *c = (unsigned)i & 255;
}

static void ruleset_gen(ruleset_t *rs, size_t n) {
  char buf[128];
  size_t *name_idx = calloc(n, sizeof(size_t)), *cidr_idx = calloc(n, sizeof(size_t));
  size_t nn = 0, nc = 0;
  memset(rs, 0, sizeof *rs);
  rs->n = n;
  rs->entries = calloc(n, sizeof(char *));
  if (!rs->entries || !name_idx || !cidr_idx) die("out of memory");
  for (size_t i = 0; i < n; i++) {
    unsigned a, b, c;
    switch (kind_pattern[i % 8]) {
      case 'e': snprintf(buf, sizeof buf, "api%zu.svc%zu.example.com", i, i % 113); break;
      case '1': snprintf(buf, sizeof buf, "*.w%zu.example.net", i); break;
      case 'n': snprintf(buf, sizeof buf, "**.d%zu.example.org", i); break;
      default:
        cidr_parts(i, &a, &b, &c);
        switch ((i / 8) % 3) {
          case 0: snprintf(buf, sizeof buf, "%u.%u.%u.0/24", a, b, c); break;
          case 1: snprintf(buf, sizeof buf, "%u.%u.%u.17", a, b, c); break;
          default: snprintf(buf, sizeof buf, "%u.%u.%u.16/28", a, b, c); break;
        }
        break;
    }
    rs->entries[i] = xstrdup(buf);
    rs->raw_bytes += strlen(buf) + 1;
    if (kind_pattern[i % 8] == 'c')
      cidr_idx[nc++] = i;
    else
      name_idx[nn++] = i;
  }
  for (size_t k = 0; k < NTARGETS; k++) {
    size_t i = name_idx[((2 * k + 1) * nn) / (2 * NTARGETS)];
    switch (kind_pattern[i % 8]) {
      case 'e': snprintf(buf, sizeof buf, "api%zu.svc%zu.example.com", i, i % 113); break;
      case '1': snprintf(buf, sizeof buf, "x.w%zu.example.net", i); break;
      default: snprintf(buf, sizeof buf, "a.b.d%zu.example.org", i); break;
    }
    rs->names[k] = xstrdup(buf);
    i = cidr_idx[((2 * k + 1) * nc) / (2 * NTARGETS)];
    unsigned a, b, c;
    cidr_parts(i, &a, &b, &c);
    static const unsigned host_octet[3] = { 77, 17, 20 };
    snprintf(buf, sizeof buf, "%u.%u.%u.%u", a, b, c, host_octet[(i / 8) % 3]);
    rs->ips[k] = xstrdup(buf);
  }
  free(name_idx);
  free(cidr_idx);
}

static void ruleset_free(ruleset_t *rs) {
  for (size_t i = 0; i < rs->n; i++) free(rs->entries[i]);
  free(rs->entries);
  for (size_t k = 0; k < NTARGETS; k++) {
    free(rs->names[k]);
    free(rs->ips[k]);
  }
}

static egress_policy_t *compile(char *const *entries, size_t n) {
  egress_policy_t *p = NULL;
  char err[EGRESS_ERRBUF_SIZE];
  if (egress_policy_from_entries((const char *const *)entries, n, NULL, 0, &p, err, sizeof err) !=
      EGRESS_OK) {
    fprintf(stderr, "egress-bench: policy: %s\n", err);
    exit(1);
  }
  return p;
}

/* ------------------------------------------------------------------------ */
/* The naive baseline: a hand-written allowlist scan                         */
/* ------------------------------------------------------------------------ */

static bool naive_contains(const egress__prefix_t *pf, const uint8_t *bytes) {
  size_t full = pf->len / 8;
  if (memcmp(pf->addr.bytes, bytes, full)) return false;
  if (pf->len % 8) {
    uint8_t mask = (uint8_t)(0xff << (8 - pf->len % 8));
    return (bytes[full] & mask) == pf->addr.bytes[full];
  }
  return true;
}

/* First allow rule that lets host:port through, scanning rule after rule. */
static const egress__rule_t *naive_match(const egress_policy_t *p, const char *host, uint16_t port) {
  const egress__rule_t *rules = p->rules[EGRESS_LIST_ALLOW];
  size_t n = p->nrules[EGRESS_LIST_ALLOW];
  uint8_t bytes[16];
  int fam = 0;
  if (inet_pton(AF_INET, host, bytes) == 1)
    fam = 4;
  else if (inet_pton(AF_INET6, host, bytes) == 1)
    fam = 6;
  size_t hlen = strlen(host);
  const char *dot = strchr(host, '.');
  for (size_t i = 0; i < n; i++) {
    const egress__rule_t *r = &rules[i];
    if (port < r->port_lo || port > r->port_hi) continue;
    switch (r->kind) {
      case EGRESS__RULE_CIDR:
        if (fam == r->cidr.addr.family && naive_contains(&r->cidr, bytes)) return r;
        break;
      case EGRESS__RULE_EXACT:
        if (!fam && !strcasecmp(host, r->name)) return r;
        break;
      case EGRESS__RULE_WILD1:
        if (!fam && dot && !strcasecmp(dot + 1, r->name)) return r;
        break;
      case EGRESS__RULE_WILDN:
        if (!fam && hlen > r->name_len + 1 && host[hlen - r->name_len - 1] == '.' &&
            !strcasecmp(host + hlen - r->name_len, r->name))
          return r;
        break;
      case EGRESS__RULE_ANY:
        if (!fam) return r;
        break;
      case EGRESS__RULE_REGEX:
        if (!fam && egress__regex_match(r, host, hlen)) return r;
        break;
    }
  }
  return NULL;
}

/* ------------------------------------------------------------------------ */
/* Throughput loops                                                          */
/* ------------------------------------------------------------------------ */

typedef struct workload {
  egress_checker_t *checker; /* library */
  egress_policy_t *policy;   /* naive */
  char **hosts;              /* NTARGETS */
  bool naive;
} workload_t;

static volatile uint64_t sink_u64;

/* Runs for about @p secs; returns checks per second.  Every check must be
 * allowed: a benchmark of denials would measure the wrong path. */
static double run_rate(const workload_t *w, double secs, uint64_t *count_out) {
  uint64_t allowed = 0, count = 0;
  double start = now_s(), end = start + secs, t;
  size_t k = 0;
  do {
    for (int b = 0; b < 64; b++, k++) {
      const char *h = w->hosts[k % NTARGETS];
      if (w->naive)
        allowed += naive_match(w->policy, h, PORT) != NULL;
      else
        allowed += egress_check(w->checker, h, PORT) == EGRESS_VERDICT_ALLOW;
    }
    count += 64;
  } while ((t = now_s()) < end);
  if (allowed != count) {
    fprintf(stderr, "egress-bench: %s denied %llu of %llu checks (first host %s)\n",
            w->naive ? "naive matcher" : "library", (unsigned long long)(count - allowed),
            (unsigned long long)count, w->hosts[0]);
    exit(1);
  }
  sink_u64 += allowed;
  if (count_out) *count_out = count;
  return (double)count / (t - start);
}

typedef struct thread_arg {
  const workload_t *w;
  pthread_barrier_t *barrier;
  double secs;
  double rate;
  double elapsed;
  double cpu; /* CPU seconds the thread got */
  uint64_t count;
} thread_arg_t;

static double thread_cpu_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void *rate_thread(void *p) {
  thread_arg_t *a = p;
  pthread_barrier_wait(a->barrier);
  double t0 = now_s(), c0 = thread_cpu_s();
  a->rate = run_rate(a->w, a->secs, &a->count);
  a->elapsed = now_s() - t0;
  a->cpu = thread_cpu_s() - c0;
  return NULL;
}

/* Aggregate checks/s of @p nthreads threads running @p w at once; *cpus
 * (optional) receives the CPUs the threads actually got (CPU time / wall
 * time): on a shared machine two threads do not always get two cores. */
static double run_rate_threads(const workload_t *w, int nthreads, double secs, double *cpus) {
  pthread_t th[2];
  thread_arg_t args[2];
  pthread_barrier_t barrier;
  pthread_barrier_init(&barrier, NULL, (unsigned)nthreads);
  for (int i = 0; i < nthreads; i++) {
    args[i] = (thread_arg_t){ .w = w, .barrier = &barrier, .secs = secs };
    if (pthread_create(&th[i], NULL, rate_thread, &args[i])) die("pthread_create");
  }
  uint64_t total = 0;
  double longest = 0, cpu = 0;
  for (int i = 0; i < nthreads; i++) {
    pthread_join(th[i], NULL);
    total += args[i].count;
    cpu += args[i].cpu;
    if (args[i].elapsed > longest) longest = args[i].elapsed;
  }
  pthread_barrier_destroy(&barrier);
  if (cpus) *cpus = cpu / longest;
  return (double)total / longest;
}

/* ------------------------------------------------------------------------ */
/* Checkers                                                                  */
/* ------------------------------------------------------------------------ */

static char dns_csv[64];

static egress_checker_t *checker_new(egress_policy_t *p, bool cache, const char *event_path) {
  egress_options_t *o = NULL;
  egress_checker_t *c = NULL;
  char err[EGRESS_ERRBUF_SIZE];
  if (egress_options_new(&o) != EGRESS_OK) die("options");
  if (egress_options_set_dns_servers(o, dns_csv) != EGRESS_OK) die("dns servers");
  if (egress_options_set_timeout_ms(o, 2000) != EGRESS_OK) die("timeout");
  /* Cache on: answers live longer than the whole run. */
  if (egress_options_set_cache(o, cache ? 65536 : 0, 3600, 3600, 5) != EGRESS_OK) die("cache");
  if (event_path && egress_options_set_event_path(o, event_path) != EGRESS_OK) die("event path");
  if (egress_checker_new(p, o, &c, err, sizeof err) != EGRESS_OK) {
    fprintf(stderr, "egress-bench: checker: %s\n", err);
    exit(1);
  }
  egress_options_free(o);
  return c;
}

static void warm(egress_checker_t *c, char **hosts) {
  for (size_t k = 0; k < NTARGETS; k++)
    if (egress_check(c, hosts[k], PORT) != EGRESS_VERDICT_ALLOW) {
      fprintf(stderr, "egress-bench: warm-up check of %s was denied\n", hosts[k]);
      exit(1);
    }
}

/* ------------------------------------------------------------------------ */
/* Bare c-ares baseline                                                      */
/* ------------------------------------------------------------------------ */

static ares_channel bare_channel(void) {
  ares_channel ch;
  struct ares_options o;
  memset(&o, 0, sizeof o);
  /* Same channel settings as the library's, so that only the library's
   * own work differs. */
  o.flags = ARES_FLAG_NOSEARCH | ARES_FLAG_NOALIASES;
  o.timeout = 1000;
  o.tries = 2;
  o.ndots = 1;
  int mask = ARES_OPT_FLAGS | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES | ARES_OPT_NDOTS | ARES_OPT_DOMAINS;
  if (ares_init_options(&ch, &o, mask) != ARES_SUCCESS) die("ares_init_options");
  if (ares_set_servers_ports_csv(ch, dns_csv) != ARES_SUCCESS) die("ares_set_servers_ports_csv");
  return ch;
}

typedef struct bare_state {
  int status;
  int naddrs;
} bare_state_t;

static void bare_cb(void *arg, int status, int timeouts, struct ares_addrinfo *res) {
  bare_state_t *s = arg;
  (void)timeouts;
  s->status = status;
  if (res)
    for (struct ares_addrinfo_node *n = res->nodes; n; n = n->ai_next) s->naddrs++;
  if (res) ares_freeaddrinfo(res);
}

/* One lookup, driven with ares_fds/select/ares_process until it ends. */
static int bare_lookup(ares_channel ch, const char *name) {
  bare_state_t s = { .status = -1 };
  struct ares_addrinfo_hints hints;
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_flags = ARES_AI_NOSORT;
  ares_getaddrinfo(ch, name, NULL, &hints, bare_cb, &s);
  while (s.status == -1) {
    fd_set r, w;
    struct timeval tv, *tvp;
    FD_ZERO(&r);
    FD_ZERO(&w);
    int nfds = ares_fds(ch, &r, &w);
    if (nfds == 0) break;
    tvp = ares_timeout(ch, NULL, &tv);
    if (select(nfds, &r, &w, NULL, tvp) < 0 && errno != EINTR) break;
    ares_process(ch, &r, &w);
  }
  return s.status == ARES_SUCCESS && s.naddrs > 0 ? 0 : -1;
}

/* ------------------------------------------------------------------------ */
/* Figures                                                                   */
/* ------------------------------------------------------------------------ */

static egress_dns_responder_t *dns;
static const size_t sizes[4] = { 10, 1000, 10000, 100000 };
static ruleset_t sets[4];
static egress_policy_t *policies[4];
static egress_checker_t *checkers[4];
static series_t lib_name[4], lib_ip[4];

static void add_names(char **names) {
  for (size_t k = 0; k < NTARGETS; k++)
    if (egress_dns_add_a(dns, names[k], "93.184.216.34", 3600) ||
        egress_dns_add_aaaa(dns, names[k], "2606:2800:220:1:248:1893:25c8:1946", 3600))
      die("responder records");
}

static void fig_scaling(void) {
  static char key[4][2][32], label[4][2][64];
  for (int s = 0; s < 4; s++) {
    workload_t ln = { .checker = checkers[s], .hosts = sets[s].names };
    workload_t nn = { .policy = policies[s], .hosts = sets[s].names, .naive = true };
    workload_t li = { .checker = checkers[s], .hosts = sets[s].ips };
    workload_t ni = { .policy = policies[s], .hosts = sets[s].ips, .naive = true };
    snprintf(key[s][0], sizeof key[s][0], "literal_checks_%zu", sizes[s]);
    snprintf(label[s][0], sizeof label[s][0], "IP literal checks/s, %zu rules, 1 thread", sizes[s]);
    snprintf(key[s][1], sizeof key[s][1], "cached_checks_%zu", sizes[s]);
    snprintf(label[s][1], sizeof label[s][1], "cached name checks/s, %zu rules, 1 thread", sizes[s]);
    row_t *ri = row_new(key[s][0], label[s][0], U_RATE, "naive scan");
    row_t *rn = row_new(key[s][1], label[s][1], U_RATE, "naive scan");
    if (sizes[s] == 10000) {
      row_target(ri, T_VALUE_GE, 5e6, ">= 5M/s");
      row_target(rn, T_VALUE_GE, 5e6, ">= 5M/s");
    }
    for (int r = 0; r < reps; r++) {
      series_add(&ri->value, run_rate(&li, rep_secs, NULL));
      series_add(&ri->base, run_rate(&ni, rep_secs, NULL));
      series_add(&rn->value, run_rate(&ln, rep_secs, NULL));
      series_add(&rn->base, run_rate(&nn, rep_secs, NULL));
    }
    lib_ip[s] = ri->value;
    lib_name[s] = rn->value;
    fprintf(stderr, "  scaling %zu rules done\n", sizes[s]);
  }
  row_t *r = row_new("literal_100k_vs_10", "IP literal checks/s, 100000 vs 10 rules", U_RATE, "at 10 rules");
  r->value = lib_ip[3];
  r->base = lib_ip[0];
  row_target(r, T_RATIO_GE, 0.7, "ratio >= 0.7");
  r = row_new("cached_100k_vs_10", "cached name checks/s, 100000 vs 10 rules", U_RATE, "at 10 rules");
  r->value = lib_name[3];
  r->base = lib_name[0];
  row_target(r, T_RATIO_GE, 0.7, "ratio >= 0.7");
}

/* Per-check latency of cached checks, in microseconds; p50 and p99 into the
 * series. */
static void latency_rep(egress_checker_t *c, char **hosts, series_t *p50, series_t *p99, double *buf) {
  for (size_t i = 0; i < lat_samples; i++) {
    double t0 = now_s();
    egress_verdict_t v = egress_check(c, hosts[i % NTARGETS], PORT);
    buf[i] = (now_s() - t0) * 1e6;
    if (v != EGRESS_VERDICT_ALLOW) die("cached latency check denied");
  }
  series_add(p50, pct(buf, lat_samples, 0.50));
  series_add(p99, pct(buf, lat_samples, 0.99));
}

static void naive_latency_rep(egress_policy_t *p, char **hosts, series_t *p50, double *buf) {
  for (size_t i = 0; i < lat_samples; i++) {
    double t0 = now_s();
    const egress__rule_t *r = naive_match(p, hosts[i % NTARGETS], PORT);
    buf[i] = (now_s() - t0) * 1e6;
    if (!r) die("naive latency check denied");
  }
  series_add(p50, pct(buf, lat_samples, 0.50));
}

static void fig_sink(void) {
  /* The 1000-rule policy: the latency of the matcher itself is covered by
   * the scaling figures. */
  const int s = 1;
  char path[64];
  snprintf(path, sizeof path, "/tmp/egress-bench-%ld.jsonl", (long)getpid());
  egress_checker_t *with = checker_new(policies[s], true, path);
  egress_checker_t *without = checker_new(policies[s], true, NULL);
  warm(with, sets[s].names);
  warm(without, sets[s].names);
  double *buf = malloc(lat_samples * sizeof(double));
  if (!buf) die("out of memory");
  row_t *p50 = row_new("cached_p50_nosink", "cached check p50, no sink", U_US, "naive scan p50");
  row_t *p99 = row_new("cached_p99_nosink", "cached check p99, no sink", U_US, "p50, no sink");
  row_t *sp50 = row_new("cached_p50_sink", "cached check p50, JSONL sink", U_US, "p50, no sink");
  row_t *sp99 = row_new("cached_p99_sink", "cached check p99, JSONL sink", U_US, "p99, no sink");
  row_t *rate = row_new("sink_checks_1t", "cached name checks/s, JSONL sink, 1 thread", U_RATE, "no sink");
  row_target(rate, T_VALUE_GE, 3e5, ">= 300k/s");
  row_t *wr = row_new("sink_vs_bare_write", "cached name checks/s, JSONL sink, 1 thread", U_RATE,
                      "bare writev of a 700-byte line");
  row_t *ev = row_new("event_print_rate", "events stamped, filled and printed/s (no check, no write)", U_RATE,
                      "cached checks/s, no sink");
  row_t *ceil_row = row_new("sink_vs_ceiling", "cached name checks/s, JSONL sink, 1 thread", U_RATE,
                            "sum of its parts: check + event + bare write");
  row_t *sc = row_new("bare_syscall", "bare system calls/s (getppid), 1 thread", U_RATE,
                      "bare writev of a 700-byte line");
  egress_decision_t *sample = NULL;
  if (egress_check_ex(without, sets[s].names[0], PORT, NULL, &sample) != EGRESS_OK || !sample)
    die("sample decision");
  workload_t ww = { .checker = with, .hosts = sets[s].names };
  workload_t wo = { .checker = without, .hosts = sets[s].names };
  for (int r = 0; r < reps; r++) {
    if (truncate(path, 0) != 0) die("truncate event file");
    latency_rep(without, sets[s].names, &p50->value, &p99->value, buf);
    naive_latency_rep(policies[s], sets[s].names, &p50->base, buf);
    latency_rep(with, sets[s].names, &sp50->value, &sp99->value, buf);
    if (truncate(path, 0) != 0) die("truncate event file");
    double with_sink = run_rate(&ww, rep_secs, NULL);
    series_add(&rate->value, with_sink);
    series_add(&rate->base, run_rate(&wo, rep_secs, NULL));
    /* What the one write(2) per event the design asks for costs alone,
     * on the same file system: the ceiling for any event sink. */
    if (truncate(path, 0) != 0) die("truncate event file");
    int fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC);
    if (fd < 0) die("open event file");
    static char line[700];
    memset(line, 'x', sizeof line);
    struct iovec iov[2] = { { line, sizeof line }, { (void *)"\n", 1 } };
    double t0 = now_s(), t1;
    unsigned long nwrites = 0;
    do {
      for (int k = 0; k < 1000; k++)
        if (writev(fd, iov, 2) < 0) die("writev");
      nwrites += 1000;
      t1 = now_s();
    } while (t1 - t0 < rep_secs);
    close(fd);
    double bare_write = (double)nwrites / (t1 - t0);
    series_add(&wr->value, with_sink);
    series_add(&wr->base, bare_write);
    /* The event alone, as the sink path makes it: stamp, fill, print. */
    unsigned long nevents = 0;
    t0 = now_s();
    do {
      for (int k = 0; k < 1000; k++) {
        size_t len = 0;
        if (egress__event_stamp(sample) != EGRESS_OK || !egress__event_print(sample, NULL, &len) || len < 100)
          die("event print");
      }
      nevents += 1000;
      t1 = now_s();
    } while (t1 - t0 < rep_secs);
    double event_rate = (double)nevents / (t1 - t0);
    /* The floor under any write: what entering the kernel costs here. */
    unsigned long ncalls = 0;
    t0 = now_s();
    do {
      for (int k = 0; k < 1000; k++) sink_u64 += (uint64_t)syscall(SYS_getppid);
      ncalls += 1000;
      t1 = now_s();
    } while (t1 - t0 < rep_secs);
    series_add(&sc->value, (double)ncalls / (t1 - t0));
    series_add(&sc->base, bare_write);
    double no_sink = rate->base.v[rate->base.n - 1];
    series_add(&ev->value, event_rate);
    series_add(&ev->base, no_sink);
    /* What a sink check could reach if its parts cost no more together
     * than apart: the ceiling this machine puts on the figure. */
    series_add(&ceil_row->value, with_sink);
    series_add(&ceil_row->base, 1.0 / (1.0 / no_sink + 1.0 / event_rate + 1.0 / bare_write));
  }
  egress_decision_free(sample);
  p99->base = p50->value;
  sp50->base = p50->value;
  sp99->base = p99->value;
  if (egress_checker_counter(with, EGRESS_COUNTER_EVENTS_FAILED) != 0) die("events failed to deliver");
  free(buf);
  egress_checker_free(with);
  egress_checker_free(without);
  unlink(path);
  fprintf(stderr, "  sink done\n");
}

static void fig_threads(void) {
  const int s = 2; /* 10 000 rules */
  workload_t ln = { .checker = checkers[s], .hosts = sets[s].names };
  workload_t li = { .checker = checkers[s], .hosts = sets[s].ips };
  workload_t ni = { .policy = policies[1], .hosts = sets[1].ips, .naive = true };
  row_t *rn = row_new("cached_2t_vs_1t", "cached name checks/s, 2 threads, 10000 rules", U_RATE, "1 thread");
  row_t *ri = row_new("literal_2t_vs_1t", "IP literal checks/s, 2 threads, 10000 rules", U_RATE, "1 thread");
  row_t *rm = row_new("machine_2t_vs_1t", "machine ceiling: naive scan, 2 threads", U_RATE, "1 thread");
  row_t *cn = row_new("cached_2t_per_cpu", "cached name checks per CPU-s, 2 threads", U_RATE, "1 thread");
  row_t *ci = row_new("literal_2t_per_cpu", "IP literal checks per CPU-s, 2 threads", U_RATE, "1 thread");
  row_t *cpu = row_new("cpus_during_2t_cached", "CPUs the 2 threads got (cached names)", U_CPUS, "");
  row_t *cpul = row_new("cpus_during_2t_literal", "CPUs the 2 threads got (IP literals)", U_CPUS, "");
  row_target(rn, T_RATIO_GE, 1.7, "ratio >= 1.7");
  row_target(ri, T_RATIO_GE, 1.7, "ratio >= 1.7");
  for (int r = 0; r < reps; r++) {
    double c1, c2;
    double one = run_rate_threads(&ln, 1, rep_secs, &c1), two = run_rate_threads(&ln, 2, rep_secs, &c2);
    series_add(&rn->base, one);
    series_add(&rn->value, two);
    series_add(&cn->base, one / c1);
    series_add(&cn->value, two / c2);
    series_add(&cpu->value, c2);
    one = run_rate_threads(&li, 1, rep_secs, &c1);
    two = run_rate_threads(&li, 2, rep_secs, &c2);
    series_add(&ri->base, one);
    series_add(&ri->value, two);
    series_add(&ci->base, one / c1);
    series_add(&ci->value, two / c2);
    series_add(&cpul->value, c2);
    series_add(&rm->base, run_rate_threads(&ni, 1, rep_secs, NULL));
    series_add(&rm->value, run_rate_threads(&ni, 2, rep_secs, NULL));
  }
  fprintf(stderr, "  threads done\n");
}

static void fig_cold(void) {
  char *names[NTARGETS];
  char buf[64];
  const char *entries[1] = { "**.cold.bench.test" };
  egress_policy_t *p = compile((char *const *)entries, 1);
  for (size_t k = 0; k < NTARGETS; k++) {
    snprintf(buf, sizeof buf, "n%zu.cold.bench.test", k);
    names[k] = xstrdup(buf);
  }
  add_names(names);
  egress_checker_t *c = checker_new(p, false, NULL);
  ares_channel ch = bare_channel();
  size_t total = cold_samples * (size_t)reps;
  double *lib = malloc(total * sizeof(double)), *bare = malloc(total * sizeof(double));
  double *blk = malloc(cold_samples * sizeof(double));
  if (!lib || !bare || !blk) die("out of memory");
  row_t *p50 = row_new("cold_p50", "cold check p50 (cache off, loopback DNS)", U_US, "bare c-ares p50");
  row_t *p99 = row_new("cold_p99", "cold check p99 (cache off, loopback DNS)", U_US, "bare c-ares p99");
  row_target(p50, T_RATIO_LE, 1.10, "ratio <= 1.10");
  /* Warm both paths (first channel, first sockets). */
  for (size_t k = 0; k < 8; k++) {
    if (egress_check(c, names[k], PORT) != EGRESS_VERDICT_ALLOW) die("cold warm-up check denied");
    if (bare_lookup(ch, names[k])) die("bare c-ares warm-up failed");
  }
  for (int r = 0; r < reps; r++) {
    /* Alternate in small chunks so that both sides meet the same noise. */
    for (size_t i = 0; i < cold_samples; i++) {
      size_t at = (size_t)r * cold_samples + i;
      const char *name = names[at % NTARGETS];
      double t0 = now_s();
      if (egress_check(c, name, PORT) != EGRESS_VERDICT_ALLOW) die("cold check denied");
      double t1 = now_s();
      if (bare_lookup(ch, name)) die("bare c-ares lookup failed");
      double t2 = now_s();
      lib[at] = (t1 - t0) * 1e6;
      bare[at] = (t2 - t1) * 1e6;
    }
    memcpy(blk, lib + (size_t)r * cold_samples, cold_samples * sizeof(double));
    series_add(&p50->value, pct(blk, cold_samples, 0.5));
    series_add(&p99->value, pct(blk, cold_samples, 0.99));
    memcpy(blk, bare + (size_t)r * cold_samples, cold_samples * sizeof(double));
    series_add(&p50->base, pct(blk, cold_samples, 0.5));
    series_add(&p99->base, pct(blk, cold_samples, 0.99));
  }
  uint64_t queries = egress_checker_counter(c, EGRESS_COUNTER_DNS_QUERIES);
  if (queries < total) die("cold checks were answered from a cache");
  free(lib);
  free(bare);
  free(blk);
  ares_destroy(ch);
  egress_checker_free(c);
  egress_policy_unref(p);
  for (size_t k = 0; k < NTARGETS; k++) free(names[k]);
  fprintf(stderr, "  cold done\n");
}

/* Channel strategy: the library's pool against one channel behind a mutex. */
typedef struct chan_arg {
  pthread_barrier_t *barrier;
  egress_checker_t *checker; /* pool */
  ares_channel *shared;      /* mutex baseline */
  pthread_mutex_t *lock;
  char **names;
  double secs;
  uint64_t count;
  double elapsed;
} chan_arg_t;

static void *chan_thread(void *p) {
  chan_arg_t *a = p;
  pthread_barrier_wait(a->barrier);
  double t0 = now_s(), end = t0 + a->secs, t;
  size_t k = 0;
  do {
    const char *name = a->names[k++ % 8];
    if (a->checker) {
      if (egress_check(a->checker, name, PORT) != EGRESS_VERDICT_ALLOW) die("slow check denied");
    } else {
      pthread_mutex_lock(a->lock);
      int rc = bare_lookup(*a->shared, name);
      pthread_mutex_unlock(a->lock);
      if (rc) die("shared-channel lookup failed");
    }
    a->count++;
  } while ((t = now_s()) < end);
  a->elapsed = t - t0;
  return NULL;
}

static double chan_rate(egress_checker_t *c, ares_channel *shared, pthread_mutex_t *lock, char **names,
                        double secs) {
  pthread_t th[2];
  chan_arg_t args[2];
  pthread_barrier_t barrier;
  pthread_barrier_init(&barrier, NULL, 2);
  for (int i = 0; i < 2; i++) {
    args[i] = (chan_arg_t){
      .barrier = &barrier, .checker = c, .shared = shared, .lock = lock, .names = names + 8 * i, .secs = secs
    };
    if (pthread_create(&th[i], NULL, chan_thread, &args[i])) die("pthread_create");
  }
  uint64_t total = 0;
  double longest = 0;
  for (int i = 0; i < 2; i++) {
    pthread_join(th[i], NULL);
    total += args[i].count;
    if (args[i].elapsed > longest) longest = args[i].elapsed;
  }
  pthread_barrier_destroy(&barrier);
  return (double)total / longest;
}

static void fig_channels(void) {
  char *names[16];
  char buf[64];
  const char *entries[1] = { "**.slow.bench.test" };
  egress_policy_t *p = compile((char *const *)entries, 1);
  for (size_t k = 0; k < 16; k++) {
    snprintf(buf, sizeof buf, "s%zu.slow.bench.test", k);
    names[k] = xstrdup(buf);
    if (egress_dns_add_a(dns, names[k], "93.184.216.34", 3600) || egress_dns_set_delay_ms(dns, names[k], 2))
      die("responder records");
  }
  egress_checker_t *c = checker_new(p, false, NULL);
  ares_channel ch = bare_channel();
  pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
  row_t *r =
      row_new("channel_pool_2t", "cold lookups/s, 2 threads, 2 ms DNS: pool", U_RATE, "1 channel + mutex");
  double secs = rep_secs * 2;
  for (int i = 0; i < reps; i++) {
    series_add(&r->value, chan_rate(c, NULL, NULL, names, secs));
    series_add(&r->base, chan_rate(NULL, &ch, &lock, names, secs));
  }
  ares_destroy(ch);
  egress_checker_free(c);
  egress_policy_unref(p);
  for (size_t k = 0; k < 16; k++) free(names[k]);
  fprintf(stderr, "  channels done\n");
}

static size_t heap_in_use(void) {
  struct mallinfo2 mi = mallinfo2();
  return mi.uordblks + mi.hblkhd;
}

static void fig_compile(void) {
  const ruleset_t *rs = &sets[3];
  row_t *t = row_new("compile_100k_ms", "policy compile, 100000 rules", U_MS, "strdup of entries");
  row_t *m = row_new("compile_100k_bytes_per_rule", "policy memory per rule, 100000 rules", U_BYTES,
                     "raw entry bytes");
  row_t *first = row_new("compile_100k_first_ms", "policy compile, 100000 rules, first (cold heap)", U_MS,
                         "strdup, first");
  row_target(t, T_VALUE_LE, 250, "<= 250 ms");
  row_target(first, T_VALUE_LE, 250, "<= 250 ms");
  row_target(m, T_VALUE_LE, 300, "<= 300 B/rule");
  char **copy = malloc(rs->n * sizeof(char *));
  if (!copy) die("out of memory");
  for (int r = 0; r < reps; r++) {
    /* Baseline: the least a hand-written allowlist does to load its rules. */
    double t0 = now_s();
    for (size_t i = 0; i < rs->n; i++) copy[i] = xstrdup(rs->entries[i]);
    double t1 = now_s();
    for (size_t i = 0; i < rs->n; i++) free(copy[i]);
    size_t before = heap_in_use();
    double t2 = now_s();
    egress_policy_t *p = compile(rs->entries, rs->n);
    double t3 = now_s();
    size_t after = heap_in_use();
    egress_policy_unref(p);
    series_add(&t->value, (t3 - t2) * 1e3);
    series_add(&t->base, (t1 - t0) * 1e3);
    series_add(&m->value, (double)(after - before) / (double)rs->n);
    series_add(&m->base, (double)rs->raw_bytes / (double)rs->n);
    if (r == 0) {
      /* A worker compiles its policy once at start, on a heap that has not
       * grown yet: the first rep pays the page faults the later ones reuse. */
      series_add(&first->value, t->value.v[0]);
      series_add(&first->base, t->base.v[0]);
    }
  }
  free(copy);
  fprintf(stderr, "  compile done\n");
}

/* Regex rules cost apart from the scaling figures: 100 regex rules, the
 * matching one last, against the naive scan running the same regexes. */
static void fig_regex(void) {
  char *entries[100], *hosts[NTARGETS];
  char buf[96];
  for (int i = 0; i < 100; i++) {
    snprintf(buf, sizeof buf, "re:^api-[0-9]+\\.r%d\\.example\\.com$", i);
    entries[i] = xstrdup(buf);
  }
  for (size_t k = 0; k < NTARGETS; k++) {
    snprintf(buf, sizeof buf, "api-%zu.r%zu.example.com", k, 36 + k);
    hosts[k] = xstrdup(buf);
  }
  add_names(hosts);
  egress_policy_t *p = compile(entries, 100);
  egress_checker_t *c = checker_new(p, true, NULL);
  warm(c, hosts);
  workload_t lw = { .checker = c, .hosts = hosts };
  workload_t nw = { .policy = p, .hosts = hosts, .naive = true };
  row_t *r = row_new("regex_checks_100", "cached name checks/s, 100 regex rules", U_RATE, "naive scan");
  for (int i = 0; i < reps; i++) {
    series_add(&r->value, run_rate(&lw, rep_secs, NULL));
    series_add(&r->base, run_rate(&nw, rep_secs, NULL));
  }
  egress_checker_free(c);
  egress_policy_unref(p);
  for (int i = 0; i < 100; i++) free(entries[i]);
  for (size_t k = 0; k < NTARGETS; k++) free(hosts[k]);
  fprintf(stderr, "  regex done\n");
}

/* ------------------------------------------------------------------------ */
/* Lint                                                                      */
/* ------------------------------------------------------------------------ */

/*
 * A policy file of @p n entries with something to say about many of them:
 * nine tenths allow entries in the scaling mix (every wildcard lacks its
 * apex), one in 50 of them another spelling of an earlier entry, and one
 * tenth deny entries: exact names that take a whole allow entry or part of
 * a wildcard, and CIDRs inside allow CIDRs.
 */
static void lint_policy_write(const char *path, size_t n) {
  size_t nd = n / 10, na = n - nd;
  char buf[128];
  FILE *f = fopen(path, "w");
  if (!f) die("cannot write the lint policy file");
  fputs("{\"egressAllowlist\": [", f);
  for (size_t i = 0; i < na; i++) {
    unsigned a, b, c;
    size_t k = i % 50 == 49 ? i - 8 * (1 + i % 5) : i; /* same kind, earlier */
    switch (kind_pattern[k % 8]) {
      case 'e':
        if (k == i)
          snprintf(buf, sizeof buf, "api%zu.svc%zu.example.com", k, k % 113);
        else
          snprintf(buf, sizeof buf, "https://API%zu.svc%zu.example.com", k, k % 113);
        break;
      case '1': snprintf(buf, sizeof buf, "*.w%zu.example.net", k); break;
      case 'n': snprintf(buf, sizeof buf, "**.d%zu.example.org", k); break;
      default:
        cidr_parts(k, &a, &b, &c);
        snprintf(buf, sizeof buf, "%u.%u.%u.0/24", a, b, c);
        break;
    }
    fprintf(f, "%s\"%s\"", i ? ", " : "", buf);
  }
  fputs("], \"egressDenylist\": [", f);
  for (size_t i = 0; i < nd; i++) {
    size_t k = (i * 8) % na;
    unsigned a, b, c;
    switch (i % 4) {
      case 0: snprintf(buf, sizeof buf, "api%zu.svc%zu.example.com", k, k % 113); break; /* whole */
      case 1: snprintf(buf, sizeof buf, "x.w%zu.example.net", k + 2); break;             /* part */
      case 2: snprintf(buf, sizeof buf, "bad%zu.example.com", i); break;                 /* apart */
      default:
        cidr_parts(k + 1, &a, &b, &c);
        snprintf(buf, sizeof buf, "%u.%u.%u.128/25", a, b, c);
        break;
    }
    fprintf(f, "%s\"%s\"", i ? ", " : "", buf);
  }
  fputs("]}\n", f);
  if (fclose(f) != 0) die("cannot write the lint policy file");
}

static egress_policy_t *policy_file(const char *path) {
  egress_policy_t *p = NULL;
  char err[EGRESS_ERRBUF_SIZE];
  if (egress_policy_from_file(path, &p, err, sizeof err) != EGRESS_OK) {
    fprintf(stderr, "egress-bench: %s: %s\n", path, err);
    exit(1);
  }
  return p;
}

typedef struct lint_sink {
  size_t n, bytes;
  char line[1024];
} lint_sink_t;

/* What egressctl does with a warning, short of writing it. */
static void lint_count(egress__lint_level_t level, egress_list_t list, size_t index, const char *entry,
                       const char *what, void *ud) {
  lint_sink_t *s = ud;
  int len = snprintf(s->line, sizeof s->line, "policy.json: %s: %s[%zu] \"%s\": %s\n",
                     level == EGRESS__LINT_NOTE ? "note" : "warning",
                     list == EGRESS_LIST_ALLOW ? "egressAllowlist" : "egressDenylist", index, entry, what);
  s->n++;
  s->bytes += len > 0 ? (size_t)len : 0;
}

/*
 * egressctl lint (load the file, then the analysis, warnings formatted)
 * against compiling the same file, rep by rep.  A second row shows the
 * analysis alone against the same compile.
 */
static void fig_lint(void) {
  static const size_t lint_sizes[2] = { 100000, 300000 };
  static char key[2][2][40], label[2][2][72];
  char path[64];
  snprintf(path, sizeof path, "/tmp/egress-bench-lint-%ld.json", (long)getpid());
  for (int s = 0; s < 2; s++) {
    size_t n = lint_sizes[s];
    lint_policy_write(path, n);
    snprintf(key[s][0], sizeof key[s][0], "lint_%zuk_ms", n / 1000);
    snprintf(label[s][0], sizeof label[s][0], "egressctl lint work, %zu entries", n);
    snprintf(key[s][1], sizeof key[s][1], "lint_analysis_%zuk_ms", n / 1000);
    snprintf(label[s][1], sizeof label[s][1], "lint analysis alone, %zu entries", n);
    row_t *all = row_new(key[s][0], label[s][0], U_MS, "compile of the same file");
    row_t *ana = row_new(key[s][1], label[s][1], U_MS, "compile of the same file");
    row_target(all, T_RATIO_LE, 3.0, "<= 3x compile");
    size_t warnings = 0;
    for (int r = 0; r < reps; r++) {
      double t0 = now_s();
      egress_policy_t *p = policy_file(path);
      double t1 = now_s();
      egress_policy_unref(p);
      lint_sink_t sink = { 0, 0, "" };
      double t2 = now_s();
      p = policy_file(path);
      double t3 = now_s();
      long got = egress__render_lint(p, lint_count, &sink);
      double t4 = now_s();
      egress_policy_unref(p);
      if (got < 0 || (size_t)got != sink.n) die("lint failed");
      warnings = sink.n;
      series_add(&all->value, (t4 - t2) * 1e3);
      series_add(&all->base, (t1 - t0) * 1e3);
      series_add(&ana->value, (t4 - t3) * 1e3);
      series_add(&ana->base, (t1 - t0) * 1e3);
    }
    fprintf(stderr, "  lint %zu entries: %zu warnings\n", n, warnings);
  }
  unlink(path);
  fprintf(stderr, "  lint done\n");
}

static const char *only;

static bool want(const char *figure) { return !only || !strcmp(only, figure); }

int main(int argc, char **argv) {
  const char *json_path = NULL;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--json") && i + 1 < argc) {
      json_path = argv[++i];
    } else if (!strcmp(argv[i], "--reps") && i + 1 < argc) {
      reps = atoi(argv[++i]);
      if (reps < 1 || reps > MAXREPS) die("--reps must be 1-15");
    } else if (!strcmp(argv[i], "--only") && i + 1 < argc) {
      only = argv[++i];
    } else if (!strcmp(argv[i], "--quick")) {
      reps = 3;
      rep_secs = 0.03;
      lat_samples = 5000;
      cold_samples = 60;
    } else {
      fprintf(stderr, "usage: %s [--json PATH] [--reps N] [--quick] [--only FIGURE]\n", argv[0]);
      return 64;
    }
  }
  double t_start = now_s();
  if (only && !strcmp(only, "lint")) {
    /* Lint needs no checker, rule sets or DNS. */
    fprintf(stderr, "egress-bench: libegress %s, %ld CPUs, %d reps\n", egress_version(),
            sysconf(_SC_NPROCESSORS_ONLN), reps);
    fig_lint();
    goto report;
  }
  ares_library_init(ARES_LIB_INIT_ALL);
  dns = egress_dns_start("127.0.0.1");
  if (!dns) die("cannot start the loopback DNS responder");
  egress_dns_server_csv(dns, dns_csv, sizeof dns_csv);

  fprintf(stderr, "egress-bench: libegress %s, c-ares %s, %ld CPUs, %d reps of %.2f s\n", egress_version(),
          ares_version(NULL), sysconf(_SC_NPROCESSORS_ONLN), reps, rep_secs);
  for (int s = 0; s < 4; s++) {
    ruleset_gen(&sets[s], sizes[s]);
    policies[s] = compile(sets[s].entries, sets[s].n);
    add_names(sets[s].names);
    checkers[s] = checker_new(policies[s], true, NULL);
    warm(checkers[s], sets[s].names);
    /* The naive matcher must agree on every target. */
    for (size_t k = 0; k < NTARGETS; k++)
      if (!naive_match(policies[s], sets[s].names[k], PORT) ||
          !naive_match(policies[s], sets[s].ips[k], PORT) ||
          egress_check(checkers[s], sets[s].ips[k], PORT) != EGRESS_VERDICT_ALLOW)
        die("a target is not allowed by its rule set");
  }

  if (only && !strncmp(only, "profile-", 8)) {
    workload_t w = { .checker = checkers[2],
                     .hosts = strncmp(only, "profile-literal", 15) ? sets[2].names : sets[2].ips };
    int nthreads = strstr(only, "-2t") ? 2 : 1;
    char path[64];
    snprintf(path, sizeof path, "/tmp/egress-bench-%ld.jsonl", (long)getpid());
    if (!strncmp(only, "profile-sink", 12)) {
      w.checker = checker_new(policies[2], true, path);
      warm(w.checker, sets[2].names);
    }
    printf("%s: %.0f checks/s\n", only, run_rate_threads(&w, nthreads, 3.0, NULL));
    if (w.checker != checkers[2]) {
      egress_checker_free(w.checker);
      unlink(path);
    }
  }
  if (want("scaling")) fig_scaling();
  if (want("threads")) fig_threads();
  if (want("sink")) fig_sink();
  if (want("cold")) fig_cold();
  if (want("channels")) fig_channels();
  if (want("compile")) fig_compile();
  if (want("regex")) fig_regex();
  if (want("lint")) fig_lint();

  for (int s = 0; s < 4; s++) {
    if (egress_checker_counter(checkers[s], EGRESS_COUNTER_DNS_QUERIES) > 2 * NTARGETS)
      die("cached checks went to DNS");
    egress_checker_free(checkers[s]);
    egress_policy_unref(policies[s]);
    ruleset_free(&sets[s]);
  }
  egress_dns_stop(dns);
  ares_library_cleanup();

report:;
  double total = now_s() - t_start;
  print_table();
  printf("total run time %.1f s\n", total);
  if (json_path) {
    if (write_json(json_path, total) != 0) die("cannot write the JSON file");
    printf("raw numbers: %s\n", json_path);
  }
  return 0;
}
