#ifndef EGRESSD_ADMIN_H
#define EGRESSD_ADMIN_H
/*
 * admin.h: egressd's operation side, apart from the proxy's own path.
 *
 * admin.c: the admin listener (/healthz, /readyz, /metrics) and the
 * figures /metrics exposes; limits.c: the per-client connection limit and
 * the rate-limited log of refusals; reload.c: policy reloads on SIGHUP and
 * on a change in the policy file's directory; main.c: log_json_fields(),
 * the JSON log lines on stderr.
 *
 * Everything here runs on the loop's thread.
 */
#include <stdint.h>

#include <cjson/cJSON.h>
#include <uv.h>

struct conn;

/* Options of this side (main.c). */
typedef struct ops_config {
  const char *admin;               /* --admin ADDR:PORT, NULL: none */
  unsigned max_client_connections; /* 0: no per-client limit */
} ops_config_t;
extern ops_config_t ops_cfg;

/* ---- log lines (main.c) ---------------------------------------------------- */

/* Writes {"ts","level","msg", ...fields} as one line on stderr and takes
 * FIELDS (an object, or NULL). */
void log_json_fields(const char *level, const char *msg, cJSON *fields);

/* ---- figures (admin.c) ------------------------------------------------------ */

typedef enum limit_kind { LIMIT_CONNECTIONS, LIMIT_CLIENT, N_LIMITS } limit_kind_t;
typedef enum reload_trigger { RELOAD_SIGNAL, RELOAD_FILE, N_TRIGGERS } reload_trigger_t;

extern const char *const limit_names[N_LIMITS];
extern const char *const trigger_names[N_TRIGGERS];

/* A client connection accepted from the proxy listener. */
void stats_accepted(void);
/* A client connection refused by LIMIT. */
void stats_refused(limit_kind_t limit);
/* A reload that replaced the policy (changed) or failed (!ok). */
void stats_reload(reload_trigger_t trigger, int ok);
/* A tunnel or exchange has ended: its bytes, duration, status, ending. */
void stats_closed(const struct conn *c);

/* ---- admin listener (admin.c) ------------------------------------------------ */

/* Listens on ADDR; returns 0 or a libuv error. */
int admin_start(uv_loop_t *loop, const struct sockaddr *addr);
/* The bound port. */
int admin_port(void);
/* Closes the listener and every admin connection. */
void admin_stop(void);

/* ---- limits (limits.c) ------------------------------------------------------- */

/* Takes the client's address from its accepted connection and counts it
 * against --max-client-connections.  Returns 0 when admitted; otherwise
 * the client has been answered 503 and the connection is closing. */
int limits_admit(struct conn *c);
/* The connection is gone: its client holds one connection fewer. */
void limits_release(struct conn *c);
/* A connection refused by LIMIT (its client's TCP handle, for the log). */
void limits_refused(limit_kind_t limit, const uv_tcp_t *client);
/* Logs the refusals not yet logged (at exit: none goes unsaid). */
void limits_flush(void);

/* ---- reload (reload.c) ------------------------------------------------------- */

/* SIGHUP and the file watch; returns 0 or a libuv error (watching is best
 * effort: a directory that cannot be watched leaves SIGHUP). */
int reload_start(uv_loop_t *loop);
void reload_now(reload_trigger_t trigger);

#endif /* EGRESSD_ADMIN_H */
