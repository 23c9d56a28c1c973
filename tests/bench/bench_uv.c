/*
 * egress-bench-uv: checks on a libuv loop through the adapter
 * (include/egress_uv.h), each figure against its baseline in the same run.
 *
 *   egress-bench-uv [--reps N] [--quick]
 *
 * The in-process loopback responder answers every query after 2 ms.
 *  - N = 1 000 and 10 000 cold checks (distinct names, never asked before)
 *    started at once on one thread, until the last callback; against
 *    (a) N bare ares_getaddrinfo(AF_UNSPEC) on one c-ares channel with the
 *        library's channel settings, driven by libuv the same way (a poll
 *        per socket, a timer armed once per iteration from ares_timeout);
 *    (b) N egress_check_ex() on a pool of 4 threads.
 *  - the fast path: egress_check_start() on a cached name (completes
 *    inline) against egress_check_ex() on the same name.
 * Every figure is the median of the reps of its ratio.  Checks that ended
 * in dns_unavailable (lost answers) are counted and printed.
 */
#include "egress_uv.h"
#include "responder.h"

#include <ares.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define DELAY_MS 2
#define THREADS  4
#define MAXREPS  15

static egress_dns_responder_t *dns;
static char csv[64];
static int reps = 5;
static unsigned name_serial;

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void die(const char *what) {
  fprintf(stderr, "egress-bench-uv: %s\n", what);
  exit(1);
}

/* @p n fresh names, each answered after DELAY_MS. */
static char **names_new(size_t n) {
  char **v = calloc(n, sizeof *v);
  if (!v) die("out of memory");
  for (size_t i = 0; i < n; i++) {
    char buf[64];
    snprintf(buf, sizeof buf, "n%u.bench.test", name_serial++);
    if (!(v[i] = strdup(buf))) die("out of memory");
    if (egress_dns_add_a(dns, buf, "93.184.216.34", 300) != 0 ||
        egress_dns_set_delay_ms(dns, buf, DELAY_MS) != 0)
      die("responder scripting failed");
  }
  return v;
}

static void names_free(char **v, size_t n) {
  for (size_t i = 0; i < n; i++) free(v[i]);
  free(v);
}

static egress_checker_t *checker_new(void) {
  const char *allow[] = { "**.bench.test" };
  egress_policy_t *p = NULL;
  egress_options_t *o = NULL;
  egress_checker_t *c = NULL;
  char err[256];
  if (egress_policy_from_entries(allow, 1, NULL, 0, &p, err, sizeof err) != EGRESS_OK) die(err);
  if (egress_options_new(&o) != EGRESS_OK || egress_options_set_dns_servers(o, csv) != EGRESS_OK ||
      egress_options_set_cache(o, 1u << 16, 5, 300, 5) != EGRESS_OK ||
      egress_checker_new(p, o, &c, err, sizeof err) != EGRESS_OK)
    die("checker");
  egress_options_free(o);
  egress_policy_unref(p);
  return c;
}

/* ---- the adapter ---- */

typedef struct tally {
  size_t done, unavailable;
} tally_t;

static void on_done(egress_status_t st, egress_decision_t *d, void *user) {
  tally_t *t = user;
  (void)st;
  t->done++;
  if (egress_decision_reason(d) == EGRESS_REASON_DNS_UNAVAILABLE) t->unavailable++;
  egress_decision_free(d);
}

static double run_async(egress_checker_t *c, char **names, size_t n, size_t *lost) {
  uv_loop_t loop;
  egress_uv_t *uv;
  if (uv_loop_init(&loop) != 0 || egress_uv_new(&loop, c, &uv) != EGRESS_OK) die("adapter");
  tally_t t = { 0, 0 };
  double t0 = now_ms();
  for (size_t i = 0; i < n; i++)
    if (egress_uv_check(uv, names[i], 443, NULL, on_done, &t, NULL) != EGRESS_OK) die("start");
  uv_run(&loop, UV_RUN_DEFAULT);
  double ms = now_ms() - t0;
  if (t.done != n) die("not every callback ran");
  egress_uv_close(uv, NULL, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  if (uv_loop_close(&loop) != 0) die("loop left open");
  *lost += t.unavailable;
  return ms;
}

/* ---- bare c-ares on libuv, driven as the adapter drives its driver ---- */

typedef struct bare {
  uv_loop_t loop;
  ares_channel ch;
  uv_poll_t *polls[64];
  int fds[64];
  int npolls;
  uv_timer_t timer;
  uv_prepare_t prepare;
  size_t done, failed, n;
  char **names;
  size_t next, window;
  struct ares_addrinfo_hints hints;
} bare_t;

/* The bound lib/loop.c puts on lookups in flight: 4 KiB of the socket's
 * receive buffer (twice net.core.rmem_max at most) each, 64 to 4096.  Bare
 * c-ares gets the same, or it loses answers to the kernel and waits for its
 * retry, which would flatter the library. */
static size_t lookup_window(void) {
  long rmem = 212992;
  FILE *f = fopen("/proc/sys/net/core/rmem_max", "r");
  if (f) {
    if (fscanf(f, "%ld", &rmem) != 1) rmem = 212992;
    fclose(f);
  }
  long want = 8L << 20;
  size_t room = (size_t)(2 * (rmem < want ? rmem : want)) / 4096;
  return room < 64 ? 64 : room > 4096 ? 4096 : room;
}

static void bare_poll_cb(uv_poll_t *h, int status, int events) {
  bare_t *b = h->loop->data;
  int fd = *(int *)h->data;
  bool fail = status < 0;
  ares_process_fd(b->ch, fail || (events & UV_READABLE) ? fd : ARES_SOCKET_BAD,
                  fail || (events & UV_WRITABLE) ? fd : ARES_SOCKET_BAD);
}

static void bare_close_cb(uv_handle_t *h) { free(h); }

static void bare_sock_state(void *arg, ares_socket_t fd, int readable, int writable) {
  bare_t *b = arg;
  int i = 0;
  while (i < b->npolls && b->fds[i] != fd) i++;
  int events = (readable ? UV_READABLE : 0) | (writable ? UV_WRITABLE : 0);
  if (!events) {
    if (i < b->npolls) {
      uv_close((uv_handle_t *)b->polls[i], bare_close_cb);
      b->polls[i] = b->polls[--b->npolls];
      b->fds[i] = b->fds[b->npolls];
    }
    return;
  }
  if (i == b->npolls) {
    if (b->npolls == 64) die("too many sockets");
    uv_poll_t *p = malloc(sizeof *p);
    if (!p || uv_poll_init(&b->loop, p, fd) != 0) die("poll");
    b->polls[i] = p;
    b->fds[i] = fd;
    p->data = &b->fds[i];
    b->npolls++;
  }
  b->polls[i]->data = &b->fds[i];
  uv_poll_start(b->polls[i], events, bare_poll_cb);
}

static void bare_timer_cb(uv_timer_t *t) {
  bare_t *b = t->loop->data;
  ares_process_fd(b->ch, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
}

static void bare_prepare_cb(uv_prepare_t *p) {
  bare_t *b = p->loop->data;
  struct timeval tv, *tvp = ares_timeout(b->ch, NULL, &tv);
  if (!tvp || b->done == b->n) {
    uv_timer_stop(&b->timer);
    uv_prepare_stop(&b->prepare);
  } else {
    uv_timer_start(&b->timer, bare_timer_cb, (uint64_t)tv.tv_sec * 1000 + (uint64_t)tv.tv_usec / 1000, 0);
  }
}

static void bare_cb(void *arg, int status, int timeouts, struct ares_addrinfo *res);

static void bare_send(bare_t *b) {
  while (b->next < b->n && b->next - b->done < b->window)
    ares_getaddrinfo(b->ch, b->names[b->next++], NULL, &b->hints, bare_cb, b);
}

static void bare_cb(void *arg, int status, int timeouts, struct ares_addrinfo *res) {
  bare_t *b = arg;
  (void)timeouts;
  b->done++;
  if (status != ARES_SUCCESS) b->failed++;
  if (res) ares_freeaddrinfo(res);
  if (status != ARES_EDESTRUCTION) bare_send(b);
}

static double run_bare(char **names, size_t n, size_t *lost) {
  bare_t *b = calloc(1, sizeof *b);
  if (!b || uv_loop_init(&b->loop) != 0) die("loop");
  b->loop.data = b;
  b->n = n;
  /* The library's loop channel settings (lib/resolve.c): 2 tries in 2 s, 8 MiB receive buffer. */
  struct ares_options o;
  memset(&o, 0, sizeof o);
  o.flags = ARES_FLAG_NOSEARCH | ARES_FLAG_NOALIASES;
  o.timeout = 1000;
  o.tries = 2;
  o.ndots = 1;
  o.sock_state_cb = bare_sock_state;
  o.sock_state_cb_data = b;
  o.socket_receive_buffer_size = 8 << 20;
  int mask = ARES_OPT_FLAGS | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES | ARES_OPT_NDOTS | ARES_OPT_DOMAINS |
             ARES_OPT_SOCK_STATE_CB | ARES_OPT_SOCK_RCVBUF;
  if (ares_init_options(&b->ch, &o, mask) != ARES_SUCCESS ||
      ares_set_servers_ports_csv(b->ch, csv) != ARES_SUCCESS)
    die("c-ares channel");
  uv_timer_init(&b->loop, &b->timer);
  uv_prepare_init(&b->loop, &b->prepare);
  uv_unref((uv_handle_t *)&b->prepare);
  b->hints.ai_family = AF_UNSPEC;
  b->names = names;
  b->window = lookup_window();
  double t0 = now_ms();
  bare_send(b);
  uv_prepare_start(&b->prepare, bare_prepare_cb);
  while (b->done < n) uv_run(&b->loop, UV_RUN_ONCE);
  double ms = now_ms() - t0;
  ares_destroy(b->ch);
  uv_close((uv_handle_t *)&b->timer, NULL);
  uv_close((uv_handle_t *)&b->prepare, NULL);
  uv_run(&b->loop, UV_RUN_DEFAULT);
  if (uv_loop_close(&b->loop) != 0) die("bare loop left open");
  *lost += b->failed;
  free(b);
  return ms;
}

/* ---- blocking checks on a pool of threads ---- */

typedef struct pool {
  egress_checker_t *c;
  char **names;
  size_t n;
  atomic_size_t next;
  atomic_size_t unavailable;
} pool_t;

static void *pool_worker(void *arg) {
  pool_t *p = arg;
  for (size_t i; (i = atomic_fetch_add(&p->next, 1)) < p->n;) {
    egress_decision_t *d = NULL;
    if (egress_check_ex(p->c, p->names[i], 443, NULL, &d) != EGRESS_OK) atomic_fetch_add(&p->unavailable, 1);
    if (egress_decision_reason(d) == EGRESS_REASON_DNS_UNAVAILABLE) atomic_fetch_add(&p->unavailable, 1);
    egress_decision_free(d);
  }
  return NULL;
}

static double run_pool(egress_checker_t *c, char **names, size_t n, size_t *lost) {
  pool_t p = { .c = c, .names = names, .n = n };
  atomic_init(&p.next, 0);
  atomic_init(&p.unavailable, 0);
  pthread_t th[THREADS];
  double t0 = now_ms();
  for (int i = 0; i < THREADS; i++)
    if (pthread_create(&th[i], NULL, pool_worker, &p) != 0) die("thread");
  for (int i = 0; i < THREADS; i++) pthread_join(th[i], NULL);
  *lost += atomic_load(&p.unavailable);
  return now_ms() - t0;
}

/* ---- the fast path ---- */

static void on_inline(egress_status_t st, egress_decision_t *d, void *user) {
  (void)st;
  ++*(size_t *)user;
  egress_decision_free(d);
}

static double fast_async(egress_uv_t *uv, const char *name, size_t iters) {
  size_t done = 0;
  double t0 = now_ms();
  for (size_t i = 0; i < iters; i++)
    if (egress_uv_check(uv, name, 443, NULL, on_inline, &done, NULL) != EGRESS_OK) die("start");
  double ms = now_ms() - t0;
  if (done != iters) die("a cached check did not complete inline");
  return ms;
}

static double fast_blocking(egress_checker_t *c, const char *name, size_t iters) {
  double t0 = now_ms();
  for (size_t i = 0; i < iters; i++) {
    egress_decision_t *d = NULL;
    if (egress_check_ex(c, name, 443, NULL, &d) != EGRESS_OK) die("cached check");
    egress_decision_free(d);
  }
  return now_ms() - t0;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof *v, cmp_double);
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

int main(int argc, char **argv) {
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--reps") && i + 1 < argc) {
      reps = atoi(argv[++i]);
      if (reps < 1 || reps > MAXREPS) die("--reps must be 1..15");
    } else if (!strcmp(argv[i], "--quick")) {
      reps = 1;
    } else {
      fprintf(stderr, "usage: %s [--reps N] [--quick]\n", argv[0]);
      return 64;
    }
  }
  dns = egress_dns_start("127.0.0.1");
  if (!dns) die("responder");
  egress_dns_server_csv(dns, csv, sizeof csv);
  if (ares_library_init(ARES_LIB_INIT_ALL) != ARES_SUCCESS) die("c-ares");

  printf("cold checks, responder answers after %d ms; median of %d reps\n", DELAY_MS, reps);
  const size_t sizes[] = { 1000, 10000 };
  for (size_t s = 0; s < 2; s++) {
    size_t n = sizes[s];
    double r_bare[MAXREPS], r_pool[MAXREPS], a_ms[MAXREPS], b_ms[MAXREPS], p_ms[MAXREPS];
    size_t lost_a = 0, lost_b = 0, lost_p = 0;
    for (int r = 0; r < reps; r++) {
      egress_dns_reset(dns); /* the responder holds at most 65 536 names */
      char **na = names_new(n), **nb = names_new(n), **np = names_new(n);
      egress_checker_t *c = checker_new();
      b_ms[r] = run_bare(nb, n, &lost_b);
      a_ms[r] = run_async(c, na, n, &lost_a);
      p_ms[r] = run_pool(c, np, n, &lost_p);
      r_bare[r] = a_ms[r] / b_ms[r];
      r_pool[r] = p_ms[r] / a_ms[r];
      egress_checker_free(c);
      names_free(na, n);
      names_free(nb, n);
      names_free(np, n);
    }
    printf("  %5zu at once: async %.1f ms, bare c-ares %.1f ms, 4-thread blocking %.1f ms\n", n,
           median(a_ms, reps), median(b_ms, reps), median(p_ms, reps));
    printf("  %5zu at once: async / bare c-ares = %.2fx (target <= 1.2x); blocking pool / async = %.1fx\n", n,
           median(r_bare, reps), median(r_pool, reps));
    printf("  %5zu at once: lost answers (dns_unavailable / failed): async %zu, bare %zu, pool %zu\n", n,
           lost_a, lost_b, lost_p);
  }

  /* The fast path: one cached name, interleaved blocks. */
  egress_dns_reset(dns);
  egress_checker_t *c = checker_new();
  char **one = names_new(1);
  egress_decision_t *d = NULL;
  if (egress_check_ex(c, one[0], 443, NULL, &d) != EGRESS_OK ||
      egress_decision_verdict(d) != EGRESS_VERDICT_ALLOW)
    die("warm-up check");
  egress_decision_free(d);
  uv_loop_t loop;
  egress_uv_t *uv;
  if (uv_loop_init(&loop) != 0 || egress_uv_new(&loop, c, &uv) != EGRESS_OK) die("adapter");
  const size_t iters = 200000;
  double ratio[MAXREPS], ns_a[MAXREPS], ns_b[MAXREPS];
  for (int r = 0; r < reps; r++) {
    double b = fast_blocking(c, one[0], iters);
    double a = fast_async(uv, one[0], iters);
    ratio[r] = a / b;
    ns_a[r] = a * 1e6 / (double)iters;
    ns_b[r] = b * 1e6 / (double)iters;
  }
  printf("cached name: egress_check_start %.0f ns, egress_check_ex %.0f ns: %.2fx (target <= 1.1x)\n",
         median(ns_a, reps), median(ns_b, reps), median(ratio, reps));
  egress_uv_close(uv, NULL, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
  egress_checker_free(c);
  names_free(one, 1);
  ares_library_cleanup();
  egress_dns_stop(dns);
  return 0;
}
