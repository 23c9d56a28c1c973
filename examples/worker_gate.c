/*
 * worker-gate: a demo execution-plane worker that gates a scripted series of
 * adapter calls against a machine's egress policy, offline.
 *
 *   worker-gate --policy FILE --hosts FILE --calls FILE
 *               [--events FILE|-] [--mode enforce|monitor] [--pretty]
 *               [--workspace-id ID] [--machine-id ID] [--agent-id ID]
 *
 * Before each adapter call a real worker would ask the checker whether the
 * call may proceed; this program does exactly that for every line of the
 * calls file and prints the answer with its decision event.  Names resolve
 * from the hosts file (no DNS server, no network), so the demo shows DNS
 * rebinding being caught without needing a hostile resolver.
 *
 * Calls file: JSON Lines, one adapter call per line, either
 *   {"adapter":"crm.listContacts","method":"GET",
 *    "url":"https://api.crm.example.com/v1/contacts",
 *    "runId":"run-42","correlationId":"corr-0001"}
 * or the host/port form {"adapter":..., "host":"10.20.3.15", "port":5432, ...}.
 * Optional keys: "agentId", "note" (printed), "expect" (ignored here; the
 * demo's test reads it).
 *
 * workspaceId and machineId come from the policy file when it is a
 * MachineRegistrationV1 record; --workspace-id / --machine-id override them.
 *
 * This file uses only the public API of <egress.h> and links the shared
 * library, as an application would.  cJSON is used to read the demo's own
 * input files and to pretty-print events.
 *
 * Exit status: 0 when every call was checked (denials are the point of the
 * demo), 64 usage error, 65 invalid policy or calls file, 66 an input file
 * cannot be read, 70 internal error, 73 the events file cannot be created.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "egress.h"

enum { EXIT_USAGE = 64, EXIT_DATAERR = 65, EXIT_NOINPUT = 66, EXIT_SOFTWARE = 70, EXIT_CANTCREAT = 73 };

/* Largest input file the demo reads whole; policies and call scripts are
 * small, and a bound keeps a wrong path (a device, a huge log) harmless. */
#define MAX_INPUT_BYTES (4u * 1024u * 1024u)

typedef struct args {
  const char *policy_path;
  const char *hosts_path;
  const char *calls_path;
  const char *events;
  const char *mode;
  const char *workspace_id;
  const char *machine_id;
  const char *agent_id;
  bool pretty;
} args_t;

typedef struct tally {
  unsigned long calls;
  unsigned long allowed;
  unsigned long denied;
  unsigned long unavailable; /* denied because enforcement was unavailable */
  unsigned long would_deny;  /* monitor mode: allowed, but enforce would deny */
} tally_t;

static void errmsg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void errmsg(const char *fmt, ...) {
  va_list ap;

  fputs("worker-gate: ", stderr);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
}

static void usage(FILE *to) {
  fputs(
      "usage: worker-gate --policy FILE --hosts FILE --calls FILE\n"
      "                   [--events FILE|-] [--mode enforce|monitor] [--pretty]\n"
      "                   [--workspace-id ID] [--machine-id ID] [--agent-id ID]\n"
      "\n"
      "Gate each scripted adapter call in the calls file (JSON Lines) against\n"
      "the egress policy, resolving names from the hosts file only, and print\n"
      "every decision with its event, a summary and the checker's counters.\n"
      "\n"
      "  --policy FILE        egress policy or MachineRegistrationV1 record (JSON)\n"
      "  --hosts FILE         hosts file to resolve from (no DNS server is used)\n"
      "  --calls FILE         scripted adapter calls, one JSON object per line\n"
      "  --events FILE|-      also write decision events as JSON Lines to FILE\n"
      "                       (appended) or to standard output; delivery is then\n"
      "                       required: a call whose event is lost is denied\n"
      "  --mode MODE          enforce (default) or monitor\n"
      "  --pretty             print events as indented JSON\n"
      "  --workspace-id ID    override the policy record's workspaceId\n"
      "  --machine-id ID      override the policy record's machineId\n"
      "  --agent-id ID        agentId for calls that do not name one\n",
      to);
}

/* Reads the whole file at @p path, NUL-terminated for cJSON; *len excludes
 * the NUL.  Returns 0 or an exit status after printing why. */
static int read_whole_file(const char *path, char **out, size_t *len) {
  FILE *f = NULL;
  char *buf = NULL;
  size_t have = 0, cap = 0;
  int rc = EXIT_NOINPUT;

  *out = NULL;
  *len = 0;
  f = fopen(path, "rb");
  if (f == NULL) {
    errmsg("%s: cannot read: %s", path, strerror(errno));
    goto done;
  }
  for (;;) {
    size_t n;
    if (cap - have < 4096) {
      char *p;
      if (cap >= MAX_INPUT_BYTES) {
        errmsg("%s: larger than %u bytes", path, MAX_INPUT_BYTES);
        rc = EXIT_DATAERR;
        goto done;
      }
      cap = cap ? cap * 2 : 8192;
      p = realloc(buf, cap + 1);
      if (p == NULL) {
        errmsg("out of memory");
        rc = EXIT_SOFTWARE;
        goto done;
      }
      buf = p;
    }
    n = fread(buf + have, 1, cap - have, f);
    have += n;
    if (n == 0) {
      if (ferror(f)) {
        errmsg("%s: read error: %s", path, strerror(errno));
        goto done;
      }
      break;
    }
  }
  if (buf == NULL && (buf = malloc(1)) == NULL) {
    errmsg("out of memory");
    rc = EXIT_SOFTWARE;
    goto done;
  }
  buf[have] = '\0';
  *out = buf;
  *len = have;
  buf = NULL;
  rc = 0;

done:
  free(buf);
  if (f != NULL) fclose(f);
  return rc;
}

/* A string member of @p obj, or NULL when absent or not a string. */
static const char *json_str(const cJSON *obj, const char *key) {
  const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, key);
  return cJSON_IsString(item) ? item->valuestring : NULL;
}

/*
 * The registration record names the machine and workspace the policy belongs
 * to; events carry them so that an auditor can tell which worker tried what.
 * A bare allowlist document has neither, and that is fine: they are then
 * null in events unless given as flags.  The returned strings are copies.
 */
static int identity_from_policy(const char *json, size_t len, char **workspace, char **machine) {
  cJSON *doc = cJSON_ParseWithLength(json, len);
  const char *w, *m;
  int rc = 0;

  *workspace = NULL;
  *machine = NULL;
  if (doc == NULL) return 0; /* egress_policy_from_json reports the syntax error */
  w = json_str(doc, "workspaceId");
  m = json_str(doc, "machineId");
  if ((w != NULL && (*workspace = strdup(w)) == NULL) || (m != NULL && (*machine = strdup(m)) == NULL)) {
    errmsg("out of memory");
    rc = EXIT_SOFTWARE;
  }
  cJSON_Delete(doc);
  return rc;
}

static int load_policy(const args_t *a, egress_policy_t **policy, char **workspace, char **machine) {
  char errbuf[EGRESS_ERRBUF_SIZE];
  char *json = NULL;
  size_t len;
  egress_status_t st;
  int rc;

  *policy = NULL;
  *workspace = NULL;
  *machine = NULL;
  rc = read_whole_file(a->policy_path, &json, &len);
  if (rc != 0) goto done;
  errbuf[0] = '\0';
  st = egress_policy_from_json(json, len, policy, errbuf, sizeof errbuf);
  if (st != EGRESS_OK) {
    errmsg("%s: %s", a->policy_path, errbuf[0] ? errbuf : egress_strerror(st));
    rc = st == EGRESS_EPOLICY ? EXIT_DATAERR : EXIT_SOFTWARE;
    goto done;
  }
  rc = identity_from_policy(json, len, workspace, machine);

done:
  free(json);
  return rc;
}

static int build_checker(const args_t *a, egress_policy_t *policy, egress_checker_t **out) {
  egress_options_t *opts = NULL;
  char errbuf[EGRESS_ERRBUF_SIZE];
  egress_status_t st;
  int fd, rc = EXIT_SOFTWARE;

  *out = NULL;
  /* c-ares reads an unreadable hosts file as an empty one and every name
   * would come back no_such_host; a demo should say what is wrong instead. */
  fd = open(a->hosts_path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    errmsg("%s: cannot read hosts file: %s", a->hosts_path, strerror(errno));
    return EXIT_NOINPUT;
  }
  close(fd);

  if (egress_options_new(&opts) != EGRESS_OK) goto oom;
  if (a->mode == NULL || strcmp(a->mode, "enforce") == 0) {
    st = egress_options_set_mode(opts, EGRESS_MODE_ENFORCE);
  } else if (strcmp(a->mode, "monitor") == 0) {
    st = egress_options_set_mode(opts, EGRESS_MODE_MONITOR);
  } else {
    errmsg("--mode must be 'enforce' or 'monitor', not '%s'", a->mode);
    rc = EXIT_USAGE;
    goto done;
  }
  if (st != EGRESS_OK) goto oom;
  /* Hosts file only, no DNS servers: the demo never touches the network. */
  if (egress_options_set_hosts_file(opts, a->hosts_path) != EGRESS_OK) goto oom;
  if (a->events != NULL) {
    if (strcmp(a->events, "-") == 0)
      st = egress_options_set_event_fd(opts, STDOUT_FILENO);
    else
      st = egress_options_set_event_path(opts, a->events);
    if (st != EGRESS_OK) goto oom;
    /* A worker that keeps an audit trail must not make calls it cannot
     * account for: with a sink configured, a lost event denies the call. */
    if (egress_options_set_audit_required(opts, true) != EGRESS_OK) goto oom;
  }

  errbuf[0] = '\0';
  st = egress_checker_new(policy, opts, out, errbuf, sizeof errbuf);
  if (st == EGRESS_OK) {
    rc = 0;
  } else if (st == EGRESS_EIO) {
    if (errbuf[0] != '\0')
      errmsg("%s", errbuf); /* names the file and the system error */
    else
      errmsg("cannot open events file '%s'", a->events ? a->events : "");
    rc = EXIT_CANTCREAT;
  } else {
    errmsg("cannot create checker: %s", errbuf[0] ? errbuf : egress_strerror(st));
  }
  goto done;

oom:
  errmsg("out of memory while setting up the checker");
done:
  egress_options_free(opts);
  return rc;
}

static const char *list_name(egress_list_t list) {
  return list == EGRESS_LIST_DENY ? "egressDenylist" : "egressAllowlist";
}

static void print_rule(const egress_decision_t *d) {
  if (!egress_decision_has_rule(d)) return;
  printf(" (rule %s[%zu] %s)", list_name(egress_decision_rule_list(d)), egress_decision_rule_index(d),
         egress_decision_rule_text(d));
}

/* "ALLOW  GET https://...  -> 93.184.216.34 (rule egressAllowlist[0] ...)"
 * "DENY   GET https://...  special_purpose_address: message"
 * One line per call so that the decisions can be read at a glance and
 * checked by a script; the event follows, indented. */
static void print_decision_line(const egress_decision_t *d, const char *method, const char *target) {
  egress_verdict_t verdict = egress_decision_verdict(d);
  egress_outcome_t outcome = egress_decision_outcome(d);

  printf("%-5s  %s %s  ", verdict == EGRESS_VERDICT_ALLOW ? "ALLOW" : "DENY", method, target);
  if (outcome == EGRESS_OUTCOME_ALLOWED) {
    size_t i, n = egress_decision_address_count(d);
    bool first = true;

    for (i = 0; i < n; i++) {
      if (egress_decision_address_verdict(d, i) != EGRESS_VERDICT_ALLOW) continue;
      printf("%s%s", first ? "-> " : ", ", egress_decision_address(d, i));
      first = false;
    }
    if (first) fputs("->", stdout);
  } else {
    /* In monitor mode the call proceeds; say what enforce mode would do. */
    if (verdict == EGRESS_VERDICT_ALLOW) fputs("monitor, would deny: ", stdout);
    egress_reason_t reason = egress_decision_reason(d);
    const char *message = egress_decision_message(d);

    printf("%s: %s", egress_reason_name(reason), message ? message : egress_reason_message(reason));
  }
  print_rule(d);
  putchar('\n');
}

/* Prints cJSON's formatted text under @p indent.  cJSON escapes tabs inside
 * strings, so every literal tab is layout: leading ones become two spaces,
 * the one after a key's colon a single space. */
static void print_indented(const char *text, const char *indent) {
  const char *p = text;

  while (*p != '\0') {
    fputs(indent, stdout);
    while (*p == '\t') {
      fputs("  ", stdout);
      p++;
    }
    for (; *p != '\0' && *p != '\n'; p++) putchar(*p == '\t' ? ' ' : *p);
    putchar('\n');
    if (*p == '\n') p++;
  }
}

static void print_event(const egress_decision_t *d, bool pretty) {
  const char *json = egress_decision_event_json(d);

  if (json == NULL) {
    puts("    event: (could not be built)");
    return;
  }
  if (pretty) {
    cJSON *doc = cJSON_Parse(json);
    char *text = doc ? cJSON_Print(doc) : NULL;

    cJSON_Delete(doc);
    if (text != NULL) {
      puts("    event:");
      print_indented(text, "      ");
      cJSON_free(text);
      return;
    }
  }
  printf("    event: %s\n", json);
}

/* Sets request field @p field from @p value (which may be NULL). */
static bool request_set(egress_request_t *req, egress_field_t field, const char *value, const char *name,
                        unsigned long line, const char *calls_path) {
  egress_status_t st = egress_request_set(req, field, value);

  if (st == EGRESS_OK) return true;
  errmsg("%s:%lu: %s: %s", calls_path, line, name, egress_strerror(st));
  return false;
}

/* Checks one scripted call.  Returns 0, or an exit status after printing
 * why the call line itself is unusable. */
static int gate_call(egress_checker_t *ck, const args_t *a, const char *workspace, const char *machine,
                     const char *text, size_t len, unsigned long line, tally_t *t) {
  cJSON *call = cJSON_ParseWithLength(text, len);
  egress_request_t *req = NULL;
  egress_decision_t *d = NULL;
  const char *url, *host, *method, *adapter, *agent, *run, *corr, *note;
  const cJSON *port_item;
  char target[1100];
  egress_status_t st;
  int rc = EXIT_DATAERR;

  if (!cJSON_IsObject(call)) {
    errmsg("%s:%lu: not a JSON object", a->calls_path, line);
    goto done;
  }
  url = json_str(call, "url");
  host = json_str(call, "host");
  port_item = cJSON_GetObjectItemCaseSensitive(call, "port");
  method = json_str(call, "method");
  adapter = json_str(call, "adapter");
  agent = json_str(call, "agentId");
  run = json_str(call, "runId");
  corr = json_str(call, "correlationId");
  note = json_str(call, "note");
  if (agent == NULL) agent = a->agent_id;
  if ((url == NULL) == (host == NULL)) {
    errmsg("%s:%lu: give either \"url\" or \"host\" and \"port\"", a->calls_path, line);
    goto done;
  }
  if (host != NULL) {
    double v = cJSON_IsNumber(port_item) ? port_item->valuedouble : 0.5;
    /* Any integer is passed on, so that 0 or 70000 shows invalid_port; the
     * range test comes first because converting an out-of-range double to
     * an integer is undefined. */
    if (!(v >= -2147483648.0 && v <= 2147483647.0) || v != (double)(int32_t)v) {
      errmsg("%s:%lu: \"port\" must be an integer", a->calls_path, line);
      goto done;
    }
    snprintf(target, sizeof target, strchr(host, ':') ? "[%.1024s]:%d" : "%.1024s:%d", host, (int)(int32_t)v);
  } else {
    snprintf(target, sizeof target, "%.1024s", url);
  }

  if (egress_request_new(&req) != EGRESS_OK) {
    errmsg("out of memory");
    rc = EXIT_SOFTWARE;
    goto done;
  }
  if (!request_set(req, EGRESS_FIELD_METHOD, method, "method", line, a->calls_path) ||
      !request_set(req, EGRESS_FIELD_WORKSPACE_ID, workspace, "workspaceId", line, a->calls_path) ||
      !request_set(req, EGRESS_FIELD_MACHINE_ID, machine, "machineId", line, a->calls_path) ||
      !request_set(req, EGRESS_FIELD_AGENT_ID, agent, "agentId", line, a->calls_path) ||
      !request_set(req, EGRESS_FIELD_RUN_ID, run, "runId", line, a->calls_path) ||
      !request_set(req, EGRESS_FIELD_CORRELATION_ID, corr, "correlationId", line, a->calls_path))
    goto done;

  /* An event written to standard output must come after the lines printed
   * for the previous call, not in the middle of them. */
  fflush(stdout);
  if (url != NULL)
    st = egress_check_url(ck, url, req, &d);
  else
    st = egress_check_ex(ck, host, (int32_t)port_item->valuedouble, req, &d);
  /* Whatever the status, the decision (or its absence) reads as deny: the
   * worker would not make the call.  Report it like any other denial. */
  if (st != EGRESS_OK)
    errmsg("%s:%lu: check failed: %s (the call is denied)", a->calls_path, line, egress_strerror(st));

  print_decision_line(d, method ? method : "TCP", target);
  printf("    adapter %s  run %s  correlation %s\n", adapter ? adapter : "-", run ? run : "-",
         corr ? corr : "-");
  if (note != NULL) printf("    note: %s\n", note);
  print_event(d, a->pretty);
  putchar('\n');

  t->calls++;
  if (egress_decision_verdict(d) == EGRESS_VERDICT_ALLOW)
    t->allowed++;
  else
    t->denied++;
  if (egress_decision_outcome(d) == EGRESS_OUTCOME_ENFORCEMENT_UNAVAILABLE) t->unavailable++;
  if (egress_decision_verdict(d) == EGRESS_VERDICT_ALLOW &&
      egress_decision_outcome(d) != EGRESS_OUTCOME_ALLOWED)
    t->would_deny++;
  rc = 0;

done:
  egress_decision_free(d);
  egress_request_free(req);
  cJSON_Delete(call);
  return rc;
}

static bool blank(const char *s, size_t n) {
  size_t i;

  for (i = 0; i < n; i++)
    if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r' && s[i] != '\n') return false;
  return true;
}

static int run_calls(egress_checker_t *ck, const args_t *a, const char *workspace, const char *machine,
                     tally_t *t) {
  char *buf = NULL;
  size_t len, pos = 0;
  unsigned long line = 0;
  int rc;

  rc = read_whole_file(a->calls_path, &buf, &len);
  while (rc == 0 && pos < len) {
    const char *start = buf + pos;
    const char *nl = memchr(start, '\n', len - pos);
    size_t n = nl ? (size_t)(nl - start) : len - pos;

    line++;
    pos += n + (nl ? 1 : 0);
    if (blank(start, n)) continue;
    rc = gate_call(ck, a, workspace, machine, start, n, line, t);
  }
  free(buf);
  return rc;
}

static void print_summary(egress_checker_t *ck, const tally_t *t, bool monitor) {
  char *metrics;

  printf("summary: %lu calls, %lu allowed, %lu denied", t->calls, t->allowed, t->denied);
  if (t->unavailable > 0) printf(" (%lu of them because enforcement was unavailable)", t->unavailable);
  if (monitor) printf("; monitor mode: %lu allowed calls would be denied in enforce mode", t->would_deny);
  printf("\n\ncounters (Prometheus text format):\n");
  metrics = egress_checker_metrics(ck);
  if (metrics == NULL) {
    puts("(out of memory)");
    return;
  }
  fputs(metrics, stdout);
  egress_free(metrics);
}

static int set_once(const char **slot, const char *value, const char *name) {
  if (*slot != NULL) {
    errmsg("%s given twice", name);
    return EXIT_USAGE;
  }
  *slot = value;
  return 0;
}

int main(int argc, char **argv) {
  enum {
    OPT_POLICY = 256,
    OPT_HOSTS,
    OPT_CALLS,
    OPT_EVENTS,
    OPT_MODE,
    OPT_PRETTY,
    OPT_WORKSPACE,
    OPT_MACHINE,
    OPT_AGENT,
    OPT_HELP
  };
  static const struct option longopts[] = { { "policy", required_argument, NULL, OPT_POLICY },
                                            { "hosts", required_argument, NULL, OPT_HOSTS },
                                            { "calls", required_argument, NULL, OPT_CALLS },
                                            { "events", required_argument, NULL, OPT_EVENTS },
                                            { "mode", required_argument, NULL, OPT_MODE },
                                            { "pretty", no_argument, NULL, OPT_PRETTY },
                                            { "workspace-id", required_argument, NULL, OPT_WORKSPACE },
                                            { "machine-id", required_argument, NULL, OPT_MACHINE },
                                            { "agent-id", required_argument, NULL, OPT_AGENT },
                                            { "help", no_argument, NULL, OPT_HELP },
                                            { NULL, 0, NULL, 0 } };
  args_t a;
  tally_t t;
  egress_policy_t *policy = NULL;
  egress_checker_t *ck = NULL;
  char *workspace = NULL, *machine = NULL;
  const char *ws, *mach;
  int opt, rc = 0;

  memset(&a, 0, sizeof a);
  memset(&t, 0, sizeof t);
  while (rc == 0 && (opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
    switch (opt) {
      case OPT_POLICY: rc = set_once(&a.policy_path, optarg, "--policy"); break;
      case OPT_HOSTS: rc = set_once(&a.hosts_path, optarg, "--hosts"); break;
      case OPT_CALLS: rc = set_once(&a.calls_path, optarg, "--calls"); break;
      case OPT_EVENTS: rc = set_once(&a.events, optarg, "--events"); break;
      case OPT_MODE: rc = set_once(&a.mode, optarg, "--mode"); break;
      case OPT_PRETTY: a.pretty = true; break;
      case OPT_WORKSPACE: rc = set_once(&a.workspace_id, optarg, "--workspace-id"); break;
      case OPT_MACHINE: rc = set_once(&a.machine_id, optarg, "--machine-id"); break;
      case OPT_AGENT: rc = set_once(&a.agent_id, optarg, "--agent-id"); break;
      case 'h':
      case OPT_HELP: usage(stdout); return 0;
      default: rc = EXIT_USAGE; break;
    }
  }
  if (rc == 0 && optind < argc) {
    errmsg("unexpected argument '%s'", argv[optind]);
    rc = EXIT_USAGE;
  }
  if (rc == 0 && (a.policy_path == NULL || a.hosts_path == NULL || a.calls_path == NULL)) {
    errmsg("--policy, --hosts and --calls are required");
    rc = EXIT_USAGE;
  }
  if (rc != 0) {
    usage(stderr);
    goto done;
  }

  rc = load_policy(&a, &policy, &workspace, &machine);
  if (rc != 0) goto done;
  rc = build_checker(&a, policy, &ck);
  if (rc != 0) goto done;
  /* Flags win over the registration record. */
  ws = a.workspace_id ? a.workspace_id : workspace;
  mach = a.machine_id ? a.machine_id : machine;

  printf("libegress %s, special-purpose ranges %s\n", egress_version(), egress_special_ranges_version());
  printf("policy %s: %zu allow, %zu deny entries, digest %.16s...\n", a.policy_path,
         egress_policy_rule_count(policy, EGRESS_LIST_ALLOW),
         egress_policy_rule_count(policy, EGRESS_LIST_DENY), egress_policy_digest(policy));
  printf("workspace %s, machine %s, mode %s, resolving from %s\n\n", ws ? ws : "-", mach ? mach : "-",
         a.mode ? a.mode : "enforce", a.hosts_path);

  rc = run_calls(ck, &a, ws, mach, &t);
  if (rc != 0) goto done;
  print_summary(ck, &t, a.mode != NULL && strcmp(a.mode, "monitor") == 0);
  if (fflush(stdout) != 0) {
    errmsg("cannot write to standard output: %s", strerror(errno));
    rc = EXIT_SOFTWARE;
  }

done:
  egress_checker_free(ck);
  egress_policy_unref(policy);
  free(workspace);
  free(machine);
  return rc;
}
