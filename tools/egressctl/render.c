/*
 * egressctl render: the policy as Kubernetes network policy, or the egress
 * gateway fenced by it (tools/render/render.c builds the document).
 */
#include "egressctl.h"
#include "render.h"

#include <errno.h>
#include <stdlib.h>
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

/* @p s for a message, each byte that is not printable ASCII (or is a quote
 * or backslash) escaped: a hostile value cannot forge lines of its own. */
static const char *printable(const char *s, char *buf, size_t len) {
  size_t o = 0;
  for (size_t i = 0; s[i] && i < 80 && o + 5 < len; i++) {
    unsigned char ch = (unsigned char)s[i];
    if (ch == '\'' || ch == '\\')
      o += (size_t)snprintf(buf + o, len - o, "\\%c", ch);
    else if (ch < 0x20 || ch >= 0x7f)
      o += (size_t)snprintf(buf + o, len - o, "\\x%02x", ch);
    else
      buf[o++] = (char)ch;
  }
  buf[o] = '\0';
  return buf;
}

/*
 * The policy file's bytes (the gateway's ConfigMap holds them as they are)
 * and the policy compiled from those same bytes, so that the two cannot
 * differ even when the file changes while egressctl runs.  Reads one byte
 * more than a ConfigMap can hold, to tell a file that is too big.
 */
static int load_policy_text(const char *path, char **text, size_t *len, egress_policy_t **out) {
  enum { MAX = 1000000 + 1 };
  char errbuf[EGRESS_ERRBUF_SIZE];
  FILE *f = fopen(path, "rb");
  if (!f) {
    errmsg("%s: cannot read policy: %s", path, strerror(errno));
    return CLI_NOINPUT;
  }
  char *buf = malloc(MAX + 1);
  if (!buf) {
    fclose(f);
    errmsg("out of memory");
    return CLI_SOFTWARE;
  }
  size_t n = fread(buf, 1, MAX, f);
  bool bad = ferror(f);
  fclose(f);
  if (bad) {
    free(buf);
    errmsg("%s: cannot read policy", path);
    return CLI_NOINPUT;
  }
  if (n == MAX) {
    free(buf);
    errmsg("%s: the policy file is larger than a ConfigMap holds (1 MB)", path);
    return CLI_DATAERR;
  }
  buf[n] = '\0';
  errbuf[0] = '\0';
  int rc = policy_error(path, egress_policy_from_json(buf, n, out, errbuf, sizeof errbuf), errbuf);
  if (rc != 0) {
    free(buf);
    return rc;
  }
  *text = buf;
  *len = n;
  return 0;
}

int egressctl_render(int argc, char **argv) {
  cli_opts_t a;
  egress__render_opts_t o;
  egress__render_baseline_t *baseline = NULL;
  render_note_ctx_t nctx;
  egress_policy_t *policy = NULL;
  char errbuf[EGRESS_ERRBUF_SIZE];
  char *out = NULL, *text = NULL;
  egress_status_t st;
  bool gateway = false;
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
    rc = usage_error("render needs --format networkpolicy|cilium|gateway");
    goto done;
  }
  if (!egress__render_format_parse(a.format, &o.format)) {
    rc = usage_error("--format must be 'networkpolicy', 'cilium' or 'gateway'");
    goto done;
  }
  gateway = o.format == EGRESS__RENDER_GATEWAY;
  /* The gateway's clients are the agents unless --component says otherwise. */
  if (gateway) o.component = EGRESS__COMPONENT_AGENT;
  if (a.component != NULL && !egress__render_component_parse(a.component, &o.component)) {
    rc = usage_error("--component must be 'execution-plane' or 'agent'");
    goto done;
  }
  if (!gateway && (a.gateway_image != NULL || a.replicas != NULL)) {
    rc = usage_error("--%s applies to --format gateway only", a.replicas ? "replicas" : "gateway-image");
    goto done;
  }
  if (gateway && a.baseline != NULL) {
    rc = usage_error(
        "--baseline does not apply to --format gateway (the agents reach only the gateway and DNS)");
    goto done;
  }
  if (a.replicas != NULL) {
    char *end = NULL;
    unsigned long n = 0;
    errno = 0;
    if (a.replicas[0] >= '0' && a.replicas[0] <= '9') n = strtoul(a.replicas, &end, 10);
    if (end == NULL || *end != '\0' || errno != 0 || n < 1 || n > EGRESS__RENDER_MAX_REPLICAS) {
      char q[400];
      rc = usage_error("--replicas '%s' is not a whole number from 1 to %u",
                       printable(a.replicas, q, sizeof q), EGRESS__RENDER_MAX_REPLICAS);
      goto done;
    }
    o.replicas = (unsigned)n;
  }
  o.gateway_image = a.gateway_image;
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
  if (gateway) {
    if ((rc = load_policy_text(a.policy, &text, &o.policy_len, &policy)) != 0) goto done;
    o.policy_text = text;
  } else if ((rc = load_policy(a.policy, &policy)) != 0) {
    goto done;
  }
  nctx.path = a.policy;
  nctx.skip = o.skip_unrenderable;
  nctx.notes = 0;
  errbuf[0] = '\0';
  st = egress__render(policy, &o, render_note, &nctx, &out, errbuf, sizeof errbuf);
  switch (st) {
    case EGRESS_OK: break;
    case EGRESS_EPOLICY:
      if (nctx.notes == 0) { /* not an entry: the policy file as a whole */
        errmsg("%s: %s", a.policy, errbuf[0] ? errbuf : egress_strerror(st));
        rc = CLI_DATAERR;
        goto done;
      }
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
  free(text);
  egress__free(out);
  egress__render_baseline_free(baseline);
  egress_policy_unref(policy);
  cli_opts_free(&a);
  return rc < 0 ? 0 : rc;
}
