/*
 * egressctl render: the policy as Kubernetes network policy
 * (tools/render/render.c builds the document).
 */
#include "egressctl.h"
#include "render.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

typedef struct render_note_ctx {
  const char *path;
  bool skip;
  size_t notes;
} render_note_ctx_t;

static void render_note(egress_list_t list, size_t index, const char *entry, const char *what,
                        void *user_data) {
  render_note_ctx_t *ctx = user_data;
  ctx->notes++;
  fprintf(stderr, "%s: %s: %s[%zu] \"%s\": %s\n", ctx->path, ctx->skip ? "left out" : "cannot render",
          list == EGRESS_LIST_ALLOW ? "egressAllowlist" : "egressDenylist", index, entry, what);
}

int egressctl_render(int argc, char **argv) {
  cli_opts_t a;
  egress__render_opts_t o;
  egress__render_baseline_t *baseline = NULL;
  render_note_ctx_t nctx;
  egress_policy_t *policy = NULL;
  char errbuf[EGRESS_ERRBUF_SIZE];
  char *out = NULL;
  egress_status_t st;
  int rc;

  memset(&o, 0, sizeof o);
  rc = cli_parse(CMD_RENDER, argc, argv, &a);
  if (rc != 0) goto done;
  if (a.first_arg < argc) {
    rc = usage_error("unexpected argument '%s'", argv[a.first_arg]);
    goto done;
  }
  if (a.policy == NULL) {
    rc = usage_error("render needs --policy FILE");
    goto done;
  }
  if (a.format == NULL) {
    rc = usage_error("render needs --format networkpolicy|cilium");
    goto done;
  }
  if (!egress__render_format_parse(a.format, &o.format)) {
    rc = usage_error("--format must be 'networkpolicy' or 'cilium'");
    goto done;
  }
  if (a.component != NULL && !egress__render_component_parse(a.component, &o.component)) {
    rc = usage_error("--component must be 'execution-plane' or 'agent'");
    goto done;
  }
  if (a.output != NULL && strcmp(a.output, "json") != 0 && strcmp(a.output, "yaml") != 0) {
    rc = usage_error("--output must be 'json' or 'yaml'");
    goto done;
  }
  o.yaml = a.output != NULL && strcmp(a.output, "yaml") == 0;
  o.name_space = a.name_space;
  o.name = a.name;
  o.skip_unrenderable = a.skip_unrenderable;
  if (a.baseline != NULL) {
    errbuf[0] = '\0';
    st = egress__render_baseline_load(a.baseline, &baseline, errbuf, sizeof errbuf);
    if (st != EGRESS_OK) {
      errmsg("%s: %s", a.baseline, errbuf[0] ? errbuf : egress_strerror(st));
      rc = st == EGRESS_EIO ? CLI_NOINPUT : st == EGRESS_ENOMEM ? CLI_SOFTWARE : CLI_DATAERR;
      goto done;
    }
  }

  o.baseline = baseline;
  if ((rc = load_policy(a.policy, &policy)) != 0) goto done;
  nctx.path = a.policy;
  nctx.skip = o.skip_unrenderable;
  nctx.notes = 0;
  errbuf[0] = '\0';
  st = egress__render(policy, &o, render_note, &nctx, &out, errbuf, sizeof errbuf);
  switch (st) {
    case EGRESS_OK: break;
    case EGRESS_EPOLICY:
      errmsg(
          "%s: %zu entr%s cannot be rendered as %s; --skip-unrenderable leaves "
          "them out (the network layer then denies that traffic)",
          a.policy, nctx.notes, nctx.notes == 1 ? "y" : "ies", a.format);
      rc = CLI_DATAERR;
      goto done;
    case EGRESS_EINVAL: rc = usage_error("%s", errbuf[0] ? errbuf : egress_strerror(st)); goto done;
    default:
      errmsg("%s", errbuf[0] ? errbuf : egress_strerror(st));
      rc = CLI_SOFTWARE;
      goto done;
  }
  if (fputs(out, stdout) == EOF || fflush(stdout) == EOF || ferror(stdout)) {
    errmsg("cannot write output: %s", strerror(errno));
    rc = CLI_IOERR;
  }
done:
  egress__free(out);
  egress__render_baseline_free(baseline);
  egress_policy_unref(policy);
  cli_opts_free(&a);
  return rc < 0 ? 0 : rc;
}
