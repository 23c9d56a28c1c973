/*
 * libegress-uv - checks on a libuv loop (docs/async.md).
 *
 * A small adapter over the asynchronous API of egress.h: it watches the
 * descriptors the driver asks for with uv_poll_t handles and its timeout
 * with a uv_timer_t, so that checks run and complete on the loop's thread.
 * Built as its own library (libegress-uv, pkg-config egress-uv) when libuv
 * is found.  One source file, lib/uv/egress_uv.c, depends only on uv.h and
 * egress.h, so that a program with its own copy of libuv (Node) compiles it
 * against that copy: two copies of libuv must never touch one loop.
 *
 * Everything here runs on the loop's thread.
 */
#ifndef EGRESS_UV_H
#define EGRESS_UV_H

#include <uv.h>

#include "egress.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct egress_uv egress_uv_t;

/**
 * Attach @p checker to @p loop.  The adapter's handles keep the loop alive
 * only while a check is in flight.
 * @param loop, checker  Borrowed: must outlive the adapter.
 * @param out     Caller owns: egress_uv_close().
 * @return EGRESS_OK, EGRESS_EINVAL, EGRESS_ENOMEM, EGRESS_ERESOLVER,
 *         EGRESS_EINTERNAL (a libuv call failed).
 */
EGRESS_API EGRESS_WUR egress_status_t egress_uv_new(uv_loop_t *loop, egress_checker_t *checker,
                                                    egress_uv_t **out);

/** The driver underneath, for egress_check_cancel(), egress_loop_pending() and
 *  egress_loop_recycle(). Borrowed. */
EGRESS_API egress_loop_t *egress_uv_driver(egress_uv_t *uv);

/** egress_check_start() on the adapter's loop; the callback runs on the loop's thread. */
EGRESS_API EGRESS_WUR egress_status_t egress_uv_check(egress_uv_t *uv, const char *host, int32_t port,
                                                      const egress_request_t *req, egress_check_done_cb cb,
                                                      void *user, egress_pending_t **pending);

/** egress_check_url_start() on the adapter's loop. */
EGRESS_API EGRESS_WUR egress_status_t egress_uv_check_url(egress_uv_t *uv, const char *url,
                                                          const egress_request_t *req,
                                                          egress_check_done_cb cb, void *user,
                                                          egress_pending_t **pending);

/**
 * Cancel every check in flight (each callback runs inside this call with
 * EGRESS_ECANCELLED), free the driver and close the adapter's handles.
 * libuv closes handles on a later loop iteration: @p closed (optional) runs
 * on the loop when the last is closed and the adapter's memory is freed.
 * No check callback runs after this returns.  NULL is accepted.
 */
EGRESS_API void egress_uv_close(egress_uv_t *uv, void (*closed)(void *user), void *user);

#ifdef __cplusplus
}
#endif

#endif /* EGRESS_UV_H */
