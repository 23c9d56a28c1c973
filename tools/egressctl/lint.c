/*
 * egressctl lint: every invalid entry of a policy, then the warnings of the
 * analysis render shares (tools/render/render.c).
 *
 * Every invalid entry is reported, one line each (the file named once per
 * line, as egressctl names it: the loader's own messages leave it out).
 * A policy with warnings still lints "ok" (exit 0) unless --strict is
 * given; notes (behaviour that is well defined but may surprise) never
 * fail.  The stdout summary line is the same either way, the counts go to
 * stderr.
 */
#include "egressctl.h"
#include "render.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct lint_ctx {
  const char *path;
  long warnings, notes;
} lint_ctx_t;

static const char *list_name(egress_list_t list) {
  return list == EGRESS_LIST_ALLOW ? "egressAllowlist" : "egressDenylist";
}

static void lint_warn(egress__lint_level_t level, egress_list_t list, size_t index, const char *entry,
                      const char *what, void *user_data) {
  lint_ctx_t *ctx = user_data;
  char *clean = NULL;
  if (level == EGRESS__LINT_NOTE)
    ctx->notes++;
  else
    ctx->warnings++;
  /* Entries are validated, so this is belt and braces for the terminal. */
  if (sanitize_text(entry, strlen(entry), &clean) != 0) clean = NULL;
  fprintf(stderr, "%s: %s: %s[%zu] \"%s\": %s\n", ctx->path, level == EGRESS__LINT_NOTE ? "note" : "warning",
          list_name(list), index, clean ? clean : entry, what);
  free(clean);
}

/* One line per invalid entry, as the loader would fail with it. */
static void lint_error(void *user_data, const char *message) {
  const lint_ctx_t *ctx = user_data;
  errmsg("%s: invalid policy: %s", ctx->path, message);
}

int egressctl_lint(int argc, char **argv) {
  cli_opts_t a;
  egress_policy_t *policy = NULL;
  char errbuf[EGRESS_ERRBUF_SIZE];
  lint_ctx_t ctx;
  egress__entry_errors_t errs;
  egress_status_t st;
  size_t n_allow, n_deny;
  long warnings;
  int rc;

  rc = cli_parse(CMD_LINT, argc, argv, &a);
  if (rc != 0) goto done;
  if (a.first_arg < argc) {
    rc = usage_error("unexpected argument '%s'", argv[a.first_arg]);
    goto done;
  }
  if (a.policy == NULL) {
    rc = usage_error("lint needs --policy FILE");
    goto done;
  }

  /* One write per finding would cost more than the analysis on a large
   * policy: stderr is block-buffered, flushed before the summary.  The file
   * is named once, each finding below it. */
  setvbuf(stderr, NULL, _IOFBF, 1 << 16);
  ctx.path = a.policy;
  errs.report = lint_error;
  errs.user = &ctx;
  errs.count = 0;
  errbuf[0] = '\0';
  st = egress__policy_from_file_all(a.policy, &errs, &policy, errbuf, sizeof errbuf);
  if (st == EGRESS_EPOLICY && errs.count > 0) {
    if (errs.count > 1) errmsg("%s: %zu invalid entries", a.policy, errs.count);
    rc = CLI_DATAERR;
    goto done;
  }
  if (st != EGRESS_OK) {
    /* The document itself: the loader's one message, with the file's
     * exit status. */
    rc = policy_error(a.policy, st, errbuf);
    goto done;
  }
  ctx.warnings = ctx.notes = 0;
  if (egress__render_lint(policy, lint_warn, &ctx) < 0) {
    errmsg("out of memory while linting");
    rc = CLI_SOFTWARE;
    goto done;
  }
  warnings = ctx.warnings;
  if (warnings > 0 && ctx.notes > 0)
    fprintf(stderr, "%s: %ld warning%s, %ld note%s%s\n", a.policy, warnings, warnings == 1 ? "" : "s",
            ctx.notes, ctx.notes == 1 ? "" : "s", a.strict ? " (--strict: failing)" : "");
  else if (warnings > 0)
    fprintf(stderr, "%s: %ld warning%s%s\n", a.policy, warnings, warnings == 1 ? "" : "s",
            a.strict ? " (--strict: failing)" : "");
  else if (ctx.notes > 0)
    fprintf(stderr, "%s: %ld note%s\n", a.policy, ctx.notes, ctx.notes == 1 ? "" : "s");
  if (a.strict && warnings > 0) {
    rc = CLI_DATAERR;
    goto done;
  }
  n_allow = egress_policy_rule_count(policy, EGRESS_LIST_ALLOW);
  n_deny = egress_policy_rule_count(policy, EGRESS_LIST_DENY);
  printf("ok: %zu allow entr%s, %zu deny entr%s, digest %s\n", n_allow, n_allow == 1 ? "y" : "ies", n_deny,
         n_deny == 1 ? "y" : "ies", egress_policy_digest(policy));
  if (fflush(stdout) == EOF || ferror(stdout)) {
    errmsg("cannot write output: %s", strerror(errno));
    rc = CLI_IOERR;
  }
done:
  fflush(stderr);
  egress_policy_unref(policy);
  cli_opts_free(&a);
  return rc < 0 ? 0 : rc;
}
