/*
 * Counters and their Prometheus text.  Counts are striped per thread so that
 * checking threads never share a written cache line; a read sums the
 * stripes (README "C API").
 */
#include "checker.h"

#include <stdarg.h>
#include <stdio.h>

static atomic_uint next_stripe;
_Thread_local unsigned egress__my_stripe = UINT_MAX;

unsigned egress__stripe_assign(void) {
  egress__my_stripe = atomic_fetch_add_explicit(&next_stripe, 1, memory_order_relaxed) % COUNTER_STRIPES;
  return egress__my_stripe;
}

uint64_t egress_checker_counter(const egress_checker_t *checker, egress_counter_t counter) {
  if (!checker || (int)counter < 0 || (int)counter >= N_COUNTERS) return 0;
  uint64_t sum = 0;
  for (size_t i = 0; i < COUNTER_STRIPES; i++)
    sum += atomic_load_explicit(&((egress_checker_t *)checker)->stripes[i].counters[counter],
                                memory_order_relaxed);
  return sum;
}

uint64_t egress_checker_checks_by(const egress_checker_t *checker, egress_outcome_t outcome,
                                  egress_reason_t reason) {
  if (!checker || (int)outcome < 0 || (int)outcome >= N_OUTCOMES || (int)reason < 0 ||
      (int)reason >= N_REASONS)
    return 0;
  uint64_t sum = 0;
  for (size_t i = 0; i < COUNTER_STRIPES; i++)
    sum += atomic_load_explicit(&((egress_checker_t *)checker)->stripes[i].by_outcome_reason[outcome][reason],
                                memory_order_relaxed);
  return sum;
}

static const char *const counter_names[N_COUNTERS] = {
#define EGRESS_COUNTER_NAME_(name, value, prom) [value] = prom,
  EGRESS_COUNTER_MAP(EGRESS_COUNTER_NAME_)
#undef EGRESS_COUNTER_NAME_
};

/* A growing text buffer: each piece is formatted, measured against the room
 * left, and only then kept, so that nothing is ever cut or counted past the
 * end.  A failed allocation frees the text and leaves it NULL. */
typedef struct text_buf {
  char *s;
  size_t len, cap;
} text_buf_t;

static void text_appendf(text_buf_t *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void text_appendf(text_buf_t *t, const char *fmt, ...) {
  for (;;) {
    if (!t->s) return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(t->s + t->len, t->cap - t->len, fmt, ap);
    va_end(ap);
    if (n < 0) {
      t->s[t->len] = '\0';
      return;
    }
    if ((size_t)n < t->cap - t->len) {
      t->len += (size_t)n;
      return;
    }
    /* Did not fit: the piece is dropped (the text still ends at len) and
     * formatted again into a buffer with room for it. */
    t->s[t->len] = '\0';
    size_t cap = t->cap * 2 > t->len + (size_t)n + 1 ? t->cap * 2 : t->len + (size_t)n + 1;
    char *grown = egress__realloc(t->s, cap);
    if (!grown) {
      egress__free(t->s);
      t->s = NULL;
      return;
    }
    t->s = grown;
    t->cap = cap;
  }
}

char *egress_checker_metrics(const egress_checker_t *checker) {
  if (!checker) return NULL;
  /* Small on purpose: growing once or twice costs less than a guess that
   * must stay right as counters are added, and every call grows. */
  text_buf_t t = { .cap = 256 };
  if (!(t.s = egress__malloc(t.cap))) return NULL;
  t.s[0] = '\0';
  text_appendf(&t,
               "# HELP egress_checks_by_outcome_total Egress checks by outcome and reason.\n"
               "# TYPE egress_checks_by_outcome_total counter\n");
  for (int oc = 0; oc < N_OUTCOMES; oc++)
    for (int r = 0; r < N_REASONS; r++) {
      uint64_t v = egress_checker_checks_by(checker, (egress_outcome_t)oc, (egress_reason_t)r);
      if (!v) continue;
      text_appendf(&t, "egress_checks_by_outcome_total{outcome=\"%s\",reason=\"%s\"} %llu\n",
                   egress_outcome_name((egress_outcome_t)oc),
                   r == EGRESS_REASON_NONE ? "" : egress_reason_name((egress_reason_t)r),
                   (unsigned long long)v);
    }
  for (int i = 0; i < N_COUNTERS; i++)
    text_appendf(&t, "# TYPE %s counter\n%s %llu\n", counter_names[i], counter_names[i],
                 (unsigned long long)egress_checker_counter(checker, (egress_counter_t)i));
  return t.s;
}
