/*
 * A reload with a bad policy keeps the old one (docs/policy.md#refusal-is-whole): every document
 * of tests/policies/bad/ is given to egress_checker_reload_file and to
 * egress_policy_from_file; each must fail with a message, leave the policy
 * in force (same digest, same verdicts) and count a reload failure.
 */
#include "egress_private.h"

#include "testutil.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const good_allow[] = { "93.184.216.0/24", "api.example.com" };

static egress_checker_t *new_checker(void) {
  egress_policy_t *p = NULL;
  egress_options_t *o = NULL;
  egress_checker_t *c = NULL;
  char err[EGRESS_ERRBUF_SIZE];
  CU_ASSERT_EQUAL_FATAL(egress_policy_from_entries(good_allow, 2, NULL, 0, &p, err, sizeof err), EGRESS_OK);
  CU_ASSERT_EQUAL_FATAL(egress_options_new(&o), EGRESS_OK);
  CU_ASSERT_EQUAL_FATAL(egress_checker_new(p, o, &c, err, sizeof err), EGRESS_OK);
  egress_options_free(o);
  egress_policy_unref(p);
  return c;
}

static int by_name(const struct dirent **a, const struct dirent **b) {
  return strcmp((*a)->d_name, (*b)->d_name);
}

static void test_bad_reload_keeps_policy(void) {
  char dir[1024];
  egress_test_path("policies/bad", dir, sizeof dir);
  struct dirent **names = NULL;
  int n = scandir(dir, &names, NULL, by_name);
  CU_ASSERT_FATAL(n > 0);
  egress_checker_t *c = new_checker();
  egress_policy_t *before = egress_checker_policy(c);
  char digest[65];
  snprintf(digest, sizeof digest, "%s", egress_policy_digest(before));
  egress_policy_unref(before);
  uint64_t failures = egress_checker_counter(c, EGRESS_COUNTER_POLICY_RELOAD_FAILURES);
  int files = 0;
  for (int i = 0; i < n; i++) {
    const char *f = names[i]->d_name;
    size_t fl = strlen(f);
    if (fl > 5 && !strcmp(f + fl - 5, ".json")) {
      char path[2048], err[EGRESS_ERRBUF_SIZE];
      bool changed = true;
      snprintf(path, sizeof path, "%s/%s", dir, f);
      err[0] = '\0';
      egress_status_t st = egress_checker_reload_file(c, path, &changed, err, sizeof err);
      if (st != EGRESS_EPOLICY) fprintf(stderr, "%s: reload status %d (%s)\n", f, (int)st, err);
      CU_ASSERT_EQUAL(st, EGRESS_EPOLICY);
      CU_ASSERT_FALSE(changed);
      CU_ASSERT(err[0] != '\0');
      egress_policy_t *now = egress_checker_policy(c);
      CU_ASSERT_STRING_EQUAL(egress_policy_digest(now), digest);
      egress_policy_unref(now);
      /* The old policy still decides: an address it allows stays allowed. */
      CU_ASSERT_EQUAL(egress_check(c, "93.184.216.34", 443), EGRESS_VERDICT_ALLOW);
      CU_ASSERT_EQUAL(egress_check(c, "10.0.0.1", 443), EGRESS_VERDICT_DENY);
      egress_policy_t *p = (egress_policy_t *)(uintptr_t)1;
      CU_ASSERT_EQUAL(egress_policy_from_file(path, &p, err, sizeof err), EGRESS_EPOLICY);
      CU_ASSERT_PTR_NULL(p);
      files++;
    }
    free(names[i]);
  }
  free(names);
  CU_ASSERT(files >= 50);
  CU_ASSERT_EQUAL(egress_checker_counter(c, EGRESS_COUNTER_POLICY_RELOAD_FAILURES),
                  failures + (uint64_t)files);
  egress_checker_free(c);
}

static CU_TestInfo tests[] = {
  { "bad policy on reload keeps the old one", test_bad_reload_keeps_policy },
  CU_TEST_INFO_NULL,
};

int main(int argc, char **argv) {
  static const egress_test_suite_t suites[] = { { "bad-reload", NULL, NULL, tests },
                                                { NULL, NULL, NULL, NULL } };
  return egress_test_main(argc, argv, suites);
}
