/* egressd: policy reloads, on SIGHUP and when the policy file changes;
 * see admin.h.
 *
 * The file is watched through its directory, not itself: a ConfigMap
 * volume replaces its content by swapping the "..data" symlink the file
 * points through, and editors rename a new file into place; neither
 * touches the inode a watch on the file would hold.  Changes settle for
 * SETTLE_MS before the file is read, so a file written in several pieces
 * is read once, whole.  Every reload has the same rule: a file that does
 * not load keeps the previous policy (logged, counted), and a file whose
 * policy has the digest of the one in force changes nothing. */
#include "egressd.h"

#include <libgen.h>

enum { SETTLE_MS = 100 };

static uv_fs_event_t dir_watch;
static uv_timer_t settle;

void reload_now(reload_trigger_t trigger) {
  char err[512] = "";
  bool changed = false;
  egress_status_t s = egress_checker_reload_file(checker, cfg.policy_path, &changed, err, sizeof err);
  cJSON *f = cJSON_CreateObject();
  cJSON_AddStringToObject(f, "trigger", trigger_names[trigger]);
  cJSON_AddStringToObject(f, "policy", cfg.policy_path);
  if (s != EGRESS_OK) {
    stats_reload(trigger, 0);
    cJSON_AddStringToObject(f, "detail", err[0] ? err : egress_status_name(s));
    log_json_fields("error", "policy reload failed; the previous policy stays", f);
    return;
  }
  egress_policy_t *p = egress_checker_policy(checker);
  cJSON_AddStringToObject(f, "digest", p ? egress_policy_digest(p) : "");
  egress_policy_unref(p);
  if (changed) {
    stats_reload(trigger, 1);
    log_json_fields("info", "policy reloaded", f);
  } else if (trigger == RELOAD_SIGNAL) {
    /* Asked for explicitly: say that nothing changed. */
    log_json_fields("info", "policy unchanged", f);
  } else {
    cJSON_Delete(f);
  }
}

static void on_hup(uv_signal_t *s, int signum) {
  (void)s;
  (void)signum;
  reload_now(RELOAD_SIGNAL);
}

static void on_settled(uv_timer_t *t) {
  (void)t;
  reload_now(RELOAD_FILE);
}

/* The directory entries whose change may change what the policy path
 * reads: the file itself, and the first step of the symlink it is
 * (ConfigMap: policy.json -> ..data/policy.json, and "..data" is swapped).
 * Other files in the directory (an events file, an editor's swap file)
 * are not the policy's business, and cost a name comparison each.  The
 * link is read again only when the file's own entry changes, the one way
 * its target can change. */
static char own_name[NAME_MAX + 1], link_step[NAME_MAX + 1];

static void read_link_step(void) {
  char target[PATH_MAX];
  ssize_t n = readlink(cfg.policy_path, target, sizeof target - 1);
  link_step[0] = '\0';
  if (n <= 0 || target[0] == '/') return;
  target[n] = '\0';
  char *slash = strchr(target, '/');
  if (slash) *slash = '\0';
  if (strlen(target) < sizeof link_step) memcpy(link_step, target, strlen(target) + 1);
}

static int concerns_policy(const char *name) {
  if (!name) return 1; /* the platform did not say: assume it does */
  if (!strcmp(name, own_name)) {
    read_link_step();
    return 1;
  }
  return link_step[0] && !strcmp(name, link_step);
}

static void on_dir_event(uv_fs_event_t *h, const char *name, int events, int status) {
  (void)h;
  (void)events;
  /* Every change restarts the wait: the file is read once things settle. */
  if (status == 0 && concerns_policy(name)) uv_timer_start(&settle, on_settled, SETTLE_MS, 0);
}

int reload_start(uv_loop_t *l) {
  uv_signal_init(l, &sig_hup);
  uv_signal_start(&sig_hup, on_hup, SIGHUP);
  uv_timer_init(l, &settle);
  char copy[PATH_MAX];
  snprintf(copy, sizeof copy, "%s", cfg.policy_path);
  const char *base = basename(copy);
  if (strlen(base) < sizeof own_name) memcpy(own_name, base, strlen(base) + 1);
  read_link_step();
  snprintf(copy, sizeof copy, "%s", cfg.policy_path);
  int rc = uv_fs_event_init(l, &dir_watch);
  if (rc == 0) rc = uv_fs_event_start(&dir_watch, on_dir_event, dirname(copy), 0);
  return rc;
}
