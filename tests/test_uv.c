/*
 * The libuv adapter (include/egress_uv.h) against the loopback responder:
 * where callbacks run, when uv_run returns, closing with checks in flight
 * (also from inside a callback), starting from a callback, DNS time-outs.
 *
 * Every test ends with uv_loop_close() returning 0: the adapter closed every
 * handle it opened.  A watchdog timer that does not hold the loop stops a
 * uv_run that would otherwise hang, and fails the test.
 */
#include "egress_uv.h"
#include "responder.h"
#include "testutil.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MANY 1000

static egress_dns_responder_t *dns;
static char dns_csv[64];

typedef struct slot {
  struct run *run;
  int calls;
  egress_status_t status;
  egress_verdict_t verdict;
  egress_reason_t reason;
  bool off_thread;
  bool after_close; /* ran after egress_uv_close returned */
} slot_t;

typedef struct run {
  uv_loop_t loop;
  egress_checker_t *checker;
  egress_uv_t *uv;
  pthread_t thread;
  int done;
  bool closed_returned; /* egress_uv_close has returned */
  int closed_calls;
  bool watchdog_fired;
  uv_timer_t watchdog;
  /* what a callback does next (see the tests) */
  void (*then)(struct run *, slot_t *);
  slot_t chained;
} run_t;

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int init_suite(void) {
  dns = egress_dns_start("127.0.0.1");
  if (!dns) return -1;
  egress_dns_server_csv(dns, dns_csv, sizeof dns_csv);
  return 0;
}

static int clean_suite(void) {
  egress_dns_stop(dns);
  return 0;
}

static egress_checker_t *checker_new(uint32_t timeout_ms, uint32_t cache_entries) {
  const char *allow[] = { "**.ok.test" };
  egress_policy_t *p = NULL;
  egress_options_t *o = NULL;
  egress_checker_t *c = NULL;
  char err[256];
  if (egress_policy_from_entries(allow, 1, NULL, 0, &p, err, sizeof err) != EGRESS_OK) return NULL;
  if (egress_options_new(&o) == EGRESS_OK && egress_options_set_dns_servers(o, dns_csv) == EGRESS_OK &&
      egress_options_set_timeout_ms(o, timeout_ms) == EGRESS_OK &&
      egress_options_set_cache(o, cache_entries, 5, 300, 5) == EGRESS_OK) {
    if (egress_checker_new(p, o, &c, err, sizeof err) != EGRESS_OK) c = NULL;
  }
  egress_options_free(o);
  egress_policy_unref(p);
  return c;
}

static void on_watchdog(uv_timer_t *t) {
  run_t *r = t->data;
  r->watchdog_fired = true;
  uv_stop(&r->loop);
}

static void run_open(run_t *r, uint32_t timeout_ms) {
  memset(r, 0, sizeof *r);
  r->thread = pthread_self();
  CU_ASSERT_FATAL(uv_loop_init(&r->loop) == 0);
  r->checker = checker_new(timeout_ms, 4096);
  CU_ASSERT_FATAL(r->checker != NULL);
  CU_ASSERT_FATAL(egress_uv_new(&r->loop, r->checker, &r->uv) == EGRESS_OK);
  uv_timer_init(&r->loop, &r->watchdog);
  r->watchdog.data = r;
  uv_timer_start(&r->watchdog, on_watchdog, 20000, 0);
  uv_unref((uv_handle_t *)&r->watchdog);
}

static void on_closed(void *user) {
  run_t *r = user;
  r->closed_calls++;
}

/* Close the adapter if still open, let the loop finish the closes, and
 * prove nothing of the adapter is left on the loop. */
static void run_close(run_t *r) {
  if (r->uv) {
    egress_uv_close(r->uv, on_closed, r);
    r->closed_returned = true;
    r->uv = NULL;
  }
  uv_close((uv_handle_t *)&r->watchdog, NULL);
  CU_ASSERT(uv_run(&r->loop, UV_RUN_DEFAULT) == 0);
  CU_ASSERT_EQUAL(r->closed_calls, 1);
  CU_ASSERT_FALSE(r->watchdog_fired);
  CU_ASSERT_EQUAL(uv_loop_close(&r->loop), 0);
  egress_checker_free(r->checker);
}

static void on_done(egress_status_t st, egress_decision_t *d, void *user) {
  slot_t *s = user;
  run_t *r = s->run;
  s->calls++;
  s->status = st;
  s->verdict = egress_decision_verdict(d);
  s->reason = egress_decision_reason(d);
  s->off_thread = !pthread_equal(pthread_self(), r->thread);
  s->after_close = r->closed_returned;
  egress_decision_free(d);
  r->done++;
  if (r->then) r->then(r, s);
}

static slot_t *slots_new(run_t *r, size_t n) {
  slot_t *s = calloc(n, sizeof *s);
  CU_ASSERT_FATAL(s != NULL);
  for (size_t i = 0; i < n; i++) s[i].run = r;
  return s;
}

static void name_of(char *buf, size_t len, const char *tag, size_t i) {
  snprintf(buf, len, "n%zu.%s.ok.test", i, tag);
}

static void add_names(const char *tag, size_t n, unsigned delay_ms, bool drop) {
  char name[96];
  for (size_t i = 0; i < n; i++) {
    name_of(name, sizeof name, tag, i);
    CU_ASSERT_FATAL(egress_dns_add_a(dns, name, "93.184.216.34", 60) == 0);
    if (delay_ms) CU_ASSERT_FATAL(egress_dns_set_delay_ms(dns, name, delay_ms) == 0);
    if (drop) CU_ASSERT_FATAL(egress_dns_set_drop(dns, name, true) == 0);
  }
}

/* Checks complete on the loop's thread, after uv_run has been entered, and
 * uv_run returns once they are all done although the driver's c-ares
 * channel still has timers it would like to run. */
static void test_complete_on_loop_thread(void) {
  enum { N = 200 };
  add_names("thread", N, 20, false);
  run_t r;
  run_open(&r, 2000);
  slot_t *s = slots_new(&r, N);
  char name[96];
  for (size_t i = 0; i < N; i++) {
    name_of(name, sizeof name, "thread", i);
    CU_ASSERT_EQUAL(egress_uv_check(r.uv, name, 443, NULL, on_done, &s[i], NULL), EGRESS_OK);
  }
  CU_ASSERT_EQUAL(r.done, 0); /* DNS needed: nothing completes inside the start */
  CU_ASSERT_EQUAL(egress_loop_pending(egress_uv_driver(r.uv)), (size_t)N);
  double t0 = now_ms();
  CU_ASSERT_EQUAL(uv_run(&r.loop, UV_RUN_DEFAULT), 0);
  double took = now_ms() - t0;
  CU_ASSERT_EQUAL(r.done, N);
  CU_ASSERT(took < 1500); /* returned when done, not at the DNS time-out */
  for (size_t i = 0; i < N; i++) {
    CU_ASSERT_EQUAL(s[i].calls, 1);
    CU_ASSERT_EQUAL(s[i].status, EGRESS_OK);
    CU_ASSERT_EQUAL(s[i].verdict, EGRESS_VERDICT_ALLOW);
    CU_ASSERT_FALSE(s[i].off_thread);
  }
  CU_ASSERT_EQUAL(egress_loop_pending(egress_uv_driver(r.uv)), 0);
  /* An adapter with nothing in flight does not hold the loop. */
  t0 = now_ms();
  CU_ASSERT_EQUAL(uv_run(&r.loop, UV_RUN_DEFAULT), 0);
  CU_ASSERT(now_ms() - t0 < 100);
  free(s);
  run_close(&r);
}

/* Decisions that need no DNS complete inside the start call. */
static void test_inline_completion(void) {
  run_t r;
  run_open(&r, 2000);
  slot_t s[3];
  memset(s, 0, sizeof s);
  for (int i = 0; i < 3; i++) s[i].run = &r;
  egress_pending_t *p = (egress_pending_t *)&r; /* must be overwritten */
  CU_ASSERT_EQUAL(egress_uv_check(r.uv, "93.184.216.34", 443, NULL, on_done, &s[0], &p), EGRESS_OK);
  CU_ASSERT_PTR_NULL(p);
  CU_ASSERT_EQUAL(egress_uv_check(r.uv, "evil.example", 443, NULL, on_done, &s[1], NULL), EGRESS_OK);
  CU_ASSERT_EQUAL(egress_uv_check_url(r.uv, "https://evil.example/", NULL, on_done, &s[2], NULL), EGRESS_OK);
  CU_ASSERT_EQUAL(r.done, 3);
  CU_ASSERT_EQUAL(s[0].verdict, EGRESS_VERDICT_DENY); /* not in the allowlist */
  CU_ASSERT_EQUAL(s[1].reason, EGRESS_REASON_NOT_IN_ALLOWLIST);
  CU_ASSERT_EQUAL(s[2].calls, 1);
  CU_ASSERT_EQUAL(egress_uv_check(NULL, "a.ok.test", 443, NULL, on_done, &s[0], NULL), EGRESS_EINVAL);
  CU_ASSERT_EQUAL(egress_uv_check(r.uv, "a.ok.test", 443, NULL, NULL, NULL, NULL), EGRESS_EINVAL);
  CU_ASSERT_EQUAL(uv_run(&r.loop, UV_RUN_DEFAULT), 0);
  CU_ASSERT_EQUAL(r.done, 3);
  run_close(&r);
}

static void close_in_timer(uv_timer_t *t) {
  run_t *r = t->data;
  egress_uv_close(r->uv, on_closed, r);
  r->closed_returned = true;
  r->uv = NULL;
  uv_close((uv_handle_t *)t, NULL);
}

/* Closing with MANY checks in flight: each callback runs exactly once,
 * inside egress_uv_close, with EGRESS_ECANCELLED; none afterwards, though
 * the delayed answers do arrive. */
static void test_close_many_in_flight(void) {
  add_names("close", MANY, 400, false);
  run_t r;
  run_open(&r, 2000);
  slot_t *s = slots_new(&r, MANY);
  char name[96];
  for (size_t i = 0; i < MANY; i++) {
    name_of(name, sizeof name, "close", i);
    CU_ASSERT_EQUAL(egress_uv_check(r.uv, name, 443, NULL, on_done, &s[i], NULL), EGRESS_OK);
  }
  uv_timer_t t;
  uv_timer_init(&r.loop, &t);
  t.data = &r;
  uv_timer_start(&t, close_in_timer, 50, 0);
  CU_ASSERT_EQUAL(uv_run(&r.loop, UV_RUN_DEFAULT), 0);
  CU_ASSERT_EQUAL(r.done, MANY);
  CU_ASSERT_EQUAL(r.closed_calls, 1);
  for (size_t i = 0; i < MANY; i++) {
    CU_ASSERT_EQUAL(s[i].calls, 1);
    CU_ASSERT_EQUAL(s[i].status, EGRESS_ECANCELLED);
    CU_ASSERT_EQUAL(s[i].verdict, EGRESS_VERDICT_DENY);
    CU_ASSERT_FALSE(s[i].after_close);
  }
  /* Let the answers arrive: nobody listens any more. */
  uv_sleep(500);
  CU_ASSERT_EQUAL(uv_run(&r.loop, UV_RUN_NOWAIT), 0);
  CU_ASSERT_EQUAL(r.done, MANY);
  free(s);
  run_close(&r);
}

static void close_from_callback(run_t *r, slot_t *s) {
  (void)s;
  if (!r->uv) return;
  egress_uv_t *uv = r->uv;
  r->uv = NULL;
  egress_uv_close(uv, on_closed, r);
  r->closed_returned = true;
}

/* The first answer's callback closes the adapter: the checks still in
 * flight are cancelled inside that call, the loop then lets go. */
static void test_close_from_callback(void) {
  add_names("cbclose", 5, 0, false);
  char name[96];
  for (size_t i = 1; i < 5; i++) {
    name_of(name, sizeof name, "cbclose", i);
    CU_ASSERT_FATAL(egress_dns_set_delay_ms(dns, name, 1000) == 0);
  }
  run_t r;
  run_open(&r, 3000);
  r.then = close_from_callback;
  slot_t *s = slots_new(&r, 5);
  for (size_t i = 0; i < 5; i++) {
    name_of(name, sizeof name, "cbclose", i);
    CU_ASSERT_EQUAL(egress_uv_check(r.uv, name, 443, NULL, on_done, &s[i], NULL), EGRESS_OK);
  }
  double t0 = now_ms();
  CU_ASSERT_EQUAL(uv_run(&r.loop, UV_RUN_DEFAULT), 0);
  CU_ASSERT(now_ms() - t0 < 900);
  CU_ASSERT_EQUAL(r.done, 5);
  CU_ASSERT_EQUAL(r.closed_calls, 1);
  CU_ASSERT_EQUAL(s[0].status, EGRESS_OK);
  CU_ASSERT_EQUAL(s[0].verdict, EGRESS_VERDICT_ALLOW);
  for (size_t i = 1; i < 5; i++) {
    CU_ASSERT_EQUAL(s[i].calls, 1);
    CU_ASSERT_EQUAL(s[i].status, EGRESS_ECANCELLED);
    CU_ASSERT_FALSE(s[i].after_close);
  }
  free(s);
  run_close(&r);
}

/* Closed from a callback that runs inside egress_uv_check (no DNS needed). */
static void test_close_from_inline_callback(void) {
  run_t r;
  run_open(&r, 2000);
  r.then = close_from_callback;
  slot_t s = { .run = &r };
  egress_uv_t *uv = r.uv;
  CU_ASSERT_EQUAL(egress_uv_check(uv, "not-allowed.example", 443, NULL, on_done, &s, NULL), EGRESS_OK);
  CU_ASSERT_EQUAL(r.done, 1);
  CU_ASSERT_PTR_NULL(r.uv);
  CU_ASSERT_PTR_NULL(egress_uv_driver(uv)); /* closing, not yet freed */
  CU_ASSERT_EQUAL(egress_uv_check(uv, "a.ok.test", 443, NULL, on_done, &s, NULL), EGRESS_EINVAL);
  CU_ASSERT_EQUAL(r.closed_calls, 0); /* libuv closes handles on the loop */
  CU_ASSERT_EQUAL(uv_run(&r.loop, UV_RUN_DEFAULT), 0);
  CU_ASSERT_EQUAL(r.closed_calls, 1);
  run_close(&r);
}

static void start_another(run_t *r, slot_t *s) {
  if (s == &r->chained) return;
  r->chained.run = r;
  CU_ASSERT_EQUAL(egress_uv_check(r->uv, "n0.chain2.ok.test", 443, NULL, on_done, &r->chained, NULL),
                  EGRESS_OK);
}

/* A callback starts a check that needs DNS: uv_run goes on until it is done. */
static void test_start_from_callback(void) {
  add_names("chain1", 1, 30, false);
  add_names("chain2", 1, 30, false);
  run_t r;
  run_open(&r, 2000);
  r.then = start_another;
  slot_t s = { .run = &r };
  CU_ASSERT_EQUAL(egress_uv_check(r.uv, "n0.chain1.ok.test", 443, NULL, on_done, &s, NULL), EGRESS_OK);
  CU_ASSERT_EQUAL(uv_run(&r.loop, UV_RUN_DEFAULT), 0);
  CU_ASSERT_EQUAL(r.done, 2);
  CU_ASSERT_EQUAL(s.verdict, EGRESS_VERDICT_ALLOW);
  CU_ASSERT_EQUAL(r.chained.calls, 1);
  CU_ASSERT_EQUAL(r.chained.status, EGRESS_OK);
  CU_ASSERT_EQUAL(r.chained.verdict, EGRESS_VERDICT_ALLOW);
  run_close(&r);
}

/* A silent server: the check ends, through the adapter's timer, in a deny
 * dns_unavailable within the configured budget. */
static void test_dns_timeout(void) {
  add_names("silent", 1, 0, true);
  run_t r;
  run_open(&r, 300);
  slot_t s = { .run = &r };
  double t0 = now_ms();
  CU_ASSERT_EQUAL(egress_uv_check(r.uv, "n0.silent.ok.test", 443, NULL, on_done, &s, NULL), EGRESS_OK);
  CU_ASSERT_EQUAL(uv_run(&r.loop, UV_RUN_DEFAULT), 0);
  double took = now_ms() - t0;
  CU_ASSERT_EQUAL(s.calls, 1);
  CU_ASSERT_EQUAL(s.status, EGRESS_OK);
  CU_ASSERT_EQUAL(s.verdict, EGRESS_VERDICT_DENY);
  CU_ASSERT_EQUAL(s.reason, EGRESS_REASON_DNS_UNAVAILABLE);
  CU_ASSERT(took >= 250);
  CU_ASSERT(took < 300 + 250);
  run_close(&r);
}

static void cancel_in_timer(uv_timer_t *t) {
  egress_pending_t *p = t->data;
  CU_ASSERT_EQUAL(egress_check_cancel(p), EGRESS_OK);
  uv_close((uv_handle_t *)t, NULL);
}

/* A check cancelled on the driver directly (the adapter does not see the
 * call): uv_run still returns at once, not when the lookup would end. */
static void test_cancel_on_driver(void) {
  add_names("cancel", 1, 1500, false);
  run_t r;
  run_open(&r, 3000);
  slot_t s = { .run = &r };
  egress_pending_t *p = NULL;
  CU_ASSERT_EQUAL(egress_uv_check(r.uv, "n0.cancel.ok.test", 443, NULL, on_done, &s, &p), EGRESS_OK);
  CU_ASSERT_PTR_NOT_NULL_FATAL(p);
  uv_timer_t t;
  uv_timer_init(&r.loop, &t);
  t.data = p;
  uv_timer_start(&t, cancel_in_timer, 30, 0);
  double t0 = now_ms();
  CU_ASSERT_EQUAL(uv_run(&r.loop, UV_RUN_DEFAULT), 0);
  CU_ASSERT(now_ms() - t0 < 700);
  CU_ASSERT_EQUAL(s.calls, 1);
  CU_ASSERT_EQUAL(s.status, EGRESS_ECANCELLED);
  run_close(&r);
}

typedef struct blocking {
  egress_checker_t *checker;
  egress_verdict_t verdict;
} blocking_t;

static void *blocking_check(void *arg) {
  blocking_t *b = arg;
  egress_decision_t *d = NULL;
  if (egress_check_ex(b->checker, "n0.shared.ok.test", 443, NULL, &d) == EGRESS_OK)
    b->verdict = egress_decision_verdict(d);
  egress_decision_free(d);
  return NULL;
}

/* A check that joins a lookup a blocking thread leads has no socket and no
 * deadline on this loop: the wake-up poll must hold the loop until the
 * answer is handed over. */
static void test_joins_blocking_lookup(void) {
  add_names("shared", 1, 400, false);
  run_t r;
  run_open(&r, 3000);
  blocking_t b = { .checker = r.checker, .verdict = EGRESS_VERDICT_DENY };
  pthread_t th;
  CU_ASSERT_FATAL(pthread_create(&th, NULL, blocking_check, &b) == 0);
  while (egress_dns_query_count(dns, "n0.shared.ok.test") == 0) uv_sleep(1);
  slot_t s = { .run = &r };
  CU_ASSERT_EQUAL(egress_uv_check(r.uv, "n0.shared.ok.test", 443, NULL, on_done, &s, NULL), EGRESS_OK);
  CU_ASSERT_EQUAL(uv_run(&r.loop, UV_RUN_DEFAULT), 0);
  CU_ASSERT_EQUAL(s.calls, 1);
  CU_ASSERT_EQUAL(s.verdict, EGRESS_VERDICT_ALLOW);
  pthread_join(th, NULL);
  CU_ASSERT_EQUAL(b.verdict, EGRESS_VERDICT_ALLOW);
  /* One flight: A and AAAA asked once each. */
  CU_ASSERT_EQUAL(egress_dns_query_count(dns, "n0.shared.ok.test"), 2);
  run_close(&r);
}

static void test_bad_arguments(void) {
  uv_loop_t loop;
  egress_uv_t *uv = (egress_uv_t *)&loop;
  CU_ASSERT_FATAL(uv_loop_init(&loop) == 0);
  CU_ASSERT_EQUAL(egress_uv_new(&loop, NULL, &uv), EGRESS_EINVAL);
  CU_ASSERT_PTR_NULL(uv);
  CU_ASSERT_EQUAL(egress_uv_new(&loop, NULL, NULL), EGRESS_EINVAL);
  CU_ASSERT_PTR_NULL(egress_uv_driver(NULL));
  egress_uv_close(NULL, NULL, NULL);
  CU_ASSERT_EQUAL(uv_loop_close(&loop), 0);
}

static CU_TestInfo tests[] = {
  { "checks complete on the loop thread; uv_run returns", test_complete_on_loop_thread },
  { "decisions without DNS complete inside the start", test_inline_completion },
  { "close with 1000 checks in flight", test_close_many_in_flight },
  { "close from inside a check callback", test_close_from_callback },
  { "close from inside a callback run by egress_uv_check", test_close_from_inline_callback },
  { "a check started from a callback", test_start_from_callback },
  { "DNS time-out through the adapter's timer", test_dns_timeout },
  { "cancel on the driver lets uv_run return", test_cancel_on_driver },
  { "a check joining a blocking thread's lookup holds the loop", test_joins_blocking_lookup },
  { "bad arguments", test_bad_arguments },
  CU_TEST_INFO_NULL,
};

int main(int argc, char **argv) {
  static const egress_test_suite_t suites[] = {
    { "uv", init_suite, clean_suite, tests },
    { NULL, NULL, NULL, NULL },
  };
  return egress_test_main(argc, argv, suites);
}
