/*
 * Shared CUnit runner for the unit suites.  CUnit's own run functions exit 0
 * even when assertions fail, so every suite goes through egress_test_main(),
 * which exits 1 on any failed assertion, test or suite, and 77 (meson's
 * "skipped") only when a suite asked to be skipped.
 */
#ifndef EGRESS_TESTUTIL_H
#define EGRESS_TESTUTIL_H

#include <CUnit/CUnit.h>
#include <stdbool.h>
#include <stddef.h>

typedef struct egress_test_suite {
  const char *name;
  CU_InitializeFunc init; /* may be NULL */
  CU_CleanupFunc cleanup; /* may be NULL */
  CU_TestInfo *tests;     /* CU_TEST_INFO_NULL-terminated */
} egress_test_suite_t;

/* Run the suites (array terminated by a {NULL} entry); returns the process
 * exit status: 0 all passed, 1 any failure, 77 skipped. */
int egress_test_main(int argc, char **argv, const egress_test_suite_t *suites);

/* Call from a suite init to skip the whole executable with a reason (for
 * example a missing dnsmasq binary); only honoured when the environment does
 * not set EGRESS_TEST_NO_SKIP=1, which CI sets so nothing is skipped there. */
void egress_test_skip(const char *why);

/* Path of a file in the source tree's tests/ folder (EGRESS_TEST_SRCDIR). */
const char *egress_test_path(const char *relative, char *buf, size_t buflen);

#endif
