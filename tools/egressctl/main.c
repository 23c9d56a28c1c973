/*
 * egressctl - command line front end of libegress.
 *
 *   check   (check.c)  decisions, through the shared library and egress.h
 *   lint    (lint.c)   policy problems and warnings
 *   render  (render.c) the policy as Kubernetes network policy
 *
 * lint and render analyse a policy's compiled rules, which egress.h does
 * not show; they are linked with a private copy of the library's internals
 * whose symbols are all local to them (see tools/meson.build), so nothing
 * of that copy is ever handed to the shared library or back.
 *
 * Exit status (sysexits-style where one applies):
 *   0   allowed (single check / --url), or --batch decided every line
 *   1   denied
 *   2   enforcement unavailable (DNS failure: fail closed)
 *   64  usage error (unknown option, missing or extra argument, bad PORT text)
 *   65  invalid policy (every invalid entry is named on stderr); render: an
 *       entry the format cannot express (without --skip-unrenderable);
 *       lint --strict: the policy has warnings
 *   66  an input file (policy, hosts file, baseline) cannot be read
 *   70  internal error (out of memory, library failure)
 *   73  the --events file cannot be opened for appending
 *   74  writing the output (or reading --batch input) failed
 *
 * PORT: argument *syntax* is checked here (decimal digits only, no sign, no
 * leading zero); anything else is a usage error.  A syntactically numeric
 * port outside 1..65535 (0, 65536, 4294967739) is a check input: decided as
 * invalid_port, the decision is printed and the exit status is 1.
 *
 * Exit status of a check follows the verdict, i.e. what the caller must do:
 * in monitor mode a policy denial has verdict allow and exits 0, while the
 * printed decision still carries the outcome enforce mode would produce.
 */
#include "egressctl.h"
#include "egress_version.h"

#include <stdio.h>
#include <string.h>

int main(int argc, char **argv) {
  const char *cmd;

  if (argc < 2 || argv[1] == NULL) return usage_error("missing command");
  cmd = argv[1];
  if (strcmp(cmd, "help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "--help") == 0) {
    if (argc > 2) return usage_error("unexpected argument '%s'", argv[2]);
    fputs(egressctl_usage, stdout);
    return fflush(stdout) == EOF ? CLI_IOERR : 0;
  }
  if (strcmp(cmd, "--version") == 0) {
    if (argc > 2) return usage_error("unexpected argument '%s'", argv[2]);
    printf("egressctl %s (libegress %s, special ranges %s)\n", EGRESS_VERSION_STRING, egress_version(),
           egress_special_ranges_version());
    return fflush(stdout) == EOF ? CLI_IOERR : 0;
  }
  if (strcmp(cmd, "check") == 0) return egressctl_check(argc - 1, argv + 1);
  if (strcmp(cmd, "lint") == 0) return egressctl_lint(argc - 1, argv + 1);
  if (strcmp(cmd, "render") == 0) return egressctl_render(argc - 1, argv + 1);
  return usage_error("unknown command '%s'", cmd);
}
