/*
 * egressctl: what the subcommands share (exit codes, the option table,
 * output and policy loading).  See main.c for the command as a whole.
 *
 * check.c links the shared library; lint.c and render.c are linked with a
 * private copy of the library's internals (see tools/meson.build).  This
 * header and common.c are compiled into both, so they use only egress.h.
 */
#ifndef EGRESSCTL_H
#define EGRESSCTL_H

#include "egress.h"

#include <stdbool.h>
#include <stddef.h>

/* Exit status: sysexits-style where one applies (listed in the usage). */
enum {
  CLI_ALLOWED = 0,
  CLI_DENIED = 1,
  CLI_UNAVAILABLE = 2,
  CLI_USAGE = 64,
  CLI_DATAERR = 65,
  CLI_NOINPUT = 66,
  CLI_SOFTWARE = 70,
  CLI_CANTCREAT = 73,
  CLI_IOERR = 74,
};

/* The subcommands, as a set (an option names the ones that take it). */
enum { CMD_CHECK = 1, CMD_LINT = 2, CMD_RENDER = 4 };

/* Every option of every subcommand; cli_parse() fills what was given. */
typedef struct cli_opts {
  const char *policy;
  /* check */
  char *dns_servers; /* joined with ',' (owned) */
  const char *hosts;
  const char *mode;
  const char *events;
  const char *timeout_ms;
  const char *url;
  bool url_given;      /* an empty --url is a check input */
  const char **pref64; /* argv pointers (array owned) */
  size_t n_pref64;
  bool filter, metrics, batch;
  /* lint */
  bool strict;
  /* render */
  const char *format, *name_space, *name, *component, *baseline, *output, *gateway_image, *replicas;
  bool skip_unrenderable;
  /* positional arguments: argv[first_arg .. argc) */
  int first_arg;
} cli_opts_t;

extern const char egressctl_usage[];

/*
 * Parses the options of subcommand @p cmd (argv[0] is the subcommand).
 * @return 0, CLI_USAGE (said on stderr), CLI_SOFTWARE, or -1 when --help was
 *         asked for and printed (exit 0).  cli_opts_free() in every case.
 */
int cli_parse(unsigned cmd, int argc, char **argv, cli_opts_t *o);
void cli_opts_free(cli_opts_t *o);

void errmsg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* One line naming the problem, one pointing to --help; returns CLI_USAGE. */
int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Writes @p json and a newline as one flushed line; 0 or CLI_IOERR. */
int emit_line(const char *json);

/* Strict decimal: digits only, no sign, white space or leading zero. */
bool parse_decimal(const char *s, unsigned long long max, unsigned long long *out);
bool utf8_valid(const char *s, size_t len);
/* Valid UTF-8 unchanged, any other byte "\xNN": *out NULL when s needs no
 * change, else malloc'ed.  0, or -1 when out of memory. */
int sanitize_text(const char *s, size_t len, char **out);

/* egress_policy_from_file() with the exit status for each failure. */
int load_policy(const char *path, egress_policy_t **out);
/* The message and exit status of a failed policy load (0 for EGRESS_OK). */
int policy_error(const char *path, egress_status_t st, const char *errbuf);

int egressctl_check(int argc, char **argv);
int egressctl_lint(int argc, char **argv);
int egressctl_render(int argc, char **argv);

#endif
