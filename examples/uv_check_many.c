/*
 * uv-check-many: check many names at once on one thread with the libuv
 * adapter (include/egress_uv.h), and print what was decided.
 *
 *   uv-check-many POLICY DNS_SERVER COUNT [DOMAIN [WINDOW]]
 *
 * Checks n0.DOMAIN .. n<COUNT-1>.DOMAIN (DOMAIN defaults to "example.test")
 * on port 443 against the policy file POLICY, resolving through DNS_SERVER
 * ("IP:PORT").  WINDOW checks (default: all) are started before the loop
 * runs; each callback then starts the next, so that at most WINDOW are in
 * flight.  Prints one line:
 *
 *   checks 10000 callbacks 10000 allowed 9000 denied 1000 cancelled 0 wall_ms 812.4
 *
 * and, under it, the count of each deny reason.  Exit status: 0 when every
 * callback ran, 1 otherwise, 64 usage error, 65 bad policy, 70 setup failed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "egress_uv.h"

enum { EXIT_USAGE = 64, EXIT_DATAERR = 65, EXIT_SOFTWARE = 70 };

#define REASONS 32

typedef struct tally {
  egress_uv_t *uv;
  const char *domain;
  unsigned long count, started;
  unsigned long callbacks, allowed, denied, cancelled, failed;
  unsigned long by_reason[REASONS];
} tally_t;

static void on_done(egress_status_t status, egress_decision_t *d, void *user);

static void start_next(tally_t *t) {
  char host[300];
  snprintf(host, sizeof host, "n%lu.%s", t->started++, t->domain);
  if (egress_uv_check(t->uv, host, 443, NULL, on_done, t, NULL) != EGRESS_OK) t->failed++;
}

static void on_done(egress_status_t status, egress_decision_t *d, void *user) {
  tally_t *t = user;
  if (t->started < t->count) start_next(t);
  t->callbacks++;
  if (status == EGRESS_ECANCELLED)
    t->cancelled++;
  else if (status != EGRESS_OK)
    t->failed++;
  if (egress_decision_verdict(d) == EGRESS_VERDICT_ALLOW) {
    t->allowed++;
  } else {
    t->denied++;
    unsigned r = (unsigned)egress_decision_reason(d);
    if (r < REASONS) t->by_reason[r]++;
  }
  egress_decision_free(d);
}

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void on_closed(void *user) { *(int *)user = 1; }

int main(int argc, char **argv) {
  if (argc < 4 || argc > 6) {
    fputs("usage: uv-check-many POLICY DNS_SERVER COUNT [DOMAIN [WINDOW]]\n", stderr);
    return EXIT_USAGE;
  }
  char *end;
  unsigned long count = strtoul(argv[3], &end, 10);
  if (!*argv[3] || *end || count == 0 || count > 1000000) {
    fprintf(stderr, "uv-check-many: COUNT must be 1..1000000, not '%s'\n", argv[3]);
    return EXIT_USAGE;
  }
  const char *domain = argc >= 5 ? argv[4] : "example.test";
  unsigned long window = argc == 6 ? strtoul(argv[5], &end, 10) : count;
  if (argc == 6 && (!*argv[5] || *end || window == 0)) {
    fprintf(stderr, "uv-check-many: WINDOW must be a positive number, not '%s'\n", argv[5]);
    return EXIT_USAGE;
  }

  char err[512];
  egress_policy_t *policy = NULL;
  if (egress_policy_from_file(argv[1], &policy, err, sizeof err) != EGRESS_OK) {
    fprintf(stderr, "uv-check-many: %s\n", err);
    return EXIT_DATAERR;
  }
  egress_options_t *opts = NULL;
  egress_checker_t *checker = NULL;
  egress_status_t st = egress_options_new(&opts);
  if (st == EGRESS_OK) st = egress_options_set_dns_servers(opts, argv[2]);
  if (st == EGRESS_OK) st = egress_checker_new(policy, opts, &checker, err, sizeof err);
  egress_options_free(opts);
  egress_policy_unref(policy);
  if (st != EGRESS_OK) {
    fprintf(stderr, "uv-check-many: checker: %s (%s)\n", egress_status_name(st), err);
    return EXIT_SOFTWARE;
  }

  uv_loop_t loop;
  egress_uv_t *uv = NULL;
  if (uv_loop_init(&loop) != 0 || egress_uv_new(&loop, checker, &uv) != EGRESS_OK) {
    fputs("uv-check-many: cannot attach to the loop\n", stderr);
    egress_checker_free(checker);
    return EXIT_SOFTWARE;
  }

  tally_t t;
  memset(&t, 0, sizeof t);
  t.uv = uv;
  t.domain = domain;
  t.count = count;
  double t0 = now_ms();
  while (t.started < count && t.started < window) start_next(&t);
  /* Returns when the last check is done: the adapter lets go of the loop. */
  uv_run(&loop, UV_RUN_DEFAULT);
  double wall = now_ms() - t0;

  int closed = 0;
  egress_uv_close(uv, on_closed, &closed);
  uv_run(&loop, UV_RUN_DEFAULT);
  int loop_rc = uv_loop_close(&loop);
  egress_checker_free(checker);

  printf("checks %lu callbacks %lu allowed %lu denied %lu cancelled %lu wall_ms %.1f\n", t.started,
         t.callbacks, t.allowed, t.denied, t.cancelled, wall);
  for (unsigned r = 0; r < REASONS; r++)
    if (t.by_reason[r]) printf("  %s %lu\n", egress_reason_name((egress_reason_t)r), t.by_reason[r]);
  return t.started == count && t.callbacks == count && t.failed == 0 && closed && loop_rc == 0 ? 0 : 1;
}
