#include "testutil.h"

#include <CUnit/Basic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *skip_reason;

void egress_test_skip(const char *why) { skip_reason = why; }

const char *egress_test_path(const char *relative, char *buf, size_t buflen) {
  const char *dir = getenv("EGRESS_TEST_SRCDIR");
  snprintf(buf, buflen, "%s/%s", dir ? dir : "tests", relative);
  return buf;
}

int egress_test_main(int argc, char **argv, const egress_test_suite_t *suites) {
  (void)argc;
  if (CU_initialize_registry() != CUE_SUCCESS) {
    fprintf(stderr, "%s: CUnit registry: %s\n", argv[0], CU_get_error_msg());
    return 1;
  }
  for (const egress_test_suite_t *s = suites; s->name; s++) {
    CU_pSuite suite = CU_add_suite(s->name, s->init, s->cleanup);
    if (!suite) goto registry_error;
    for (CU_TestInfo *t = s->tests; t->pName; t++)
      if (!CU_add_test(suite, t->pName, t->pTestFunc)) goto registry_error;
  }
  CU_basic_set_mode(CU_BRM_VERBOSE);
  CU_basic_run_tests();
  unsigned tests_run = CU_get_number_of_tests_run();
  unsigned tests_failed = CU_get_number_of_tests_failed();
  unsigned asserts_failed = CU_get_number_of_failures();
  unsigned suites_failed = CU_get_number_of_suites_failed();
  CU_cleanup_registry();
  if (skip_reason && !(getenv("EGRESS_TEST_NO_SKIP") && !strcmp(getenv("EGRESS_TEST_NO_SKIP"), "1"))) {
    printf("SKIP: %s\n", skip_reason);
    return 77;
  }
  /* One machine-readable line per executable; the test command sums them. */
  printf("EGRESS-TESTS: %s passed=%u failed=%u\n", argv[0], tests_run - tests_failed,
         tests_failed + suites_failed);
  if (asserts_failed || tests_failed || suites_failed || skip_reason) return 1;
  return 0;

registry_error:
  fprintf(stderr, "%s: CUnit registry: %s\n", argv[0], CU_get_error_msg());
  CU_cleanup_registry();
  return 1;
}
