/* egressd: the events file; see egressd.h and docs/egressd.md#events.
 *
 * The library hands each attempt event to egressd (a callback sink), which
 * writes it at once: a decision is acted on only after its line is
 * written.  Close lines have no such rule: they wait, in order, and go out
 * with the next attempt line in the same writev, or when the loop turn
 * ends (before egressd waits for I/O again).  Under keep-alive load that is
 * one write a request instead of two. */
#include <sys/uio.h>

#include "egressd.h"

enum { PENDING_FLUSH = 64 * 1024 };

static char *pending;
static size_t pending_len, pending_cap;
static uv_prepare_t turn_end;

/* Writes the whole of IOV; 0, or -1 (nothing more can be written). */
static int write_all(struct iovec *iov, int n) {
  while (n > 0) {
    ssize_t w = writev(events_fd, iov, n);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) return -1;
    while (n > 0 && (size_t)w >= iov->iov_len) {
      w -= (ssize_t)iov->iov_len;
      iov++;
      n--;
    }
    if (n > 0) {
      iov->iov_base = (char *)iov->iov_base + w;
      iov->iov_len -= (size_t)w;
    }
  }
  return 0;
}

static void events_flush(void) {
  if (!pending_len) return;
  struct iovec iov = { pending, pending_len };
  /* A failed write loses these lines; the next ones are tried anew. */
  (void)write_all(&iov, 1);
  pending_len = 0;
}

static void on_turn_end(uv_prepare_t *p) {
  (void)p;
  events_flush();
}

int events_attempt(const char *json, size_t len, const egress_decision_t *d, void *user) {
  (void)d;
  (void)user;
  struct iovec iov[3] = { { pending, pending_len }, { (char *)json, len }, { "\n", 1 } };
  int first = pending_len ? 0 : 1;
  int rc = write_all(iov + first, 3 - first);
  pending_len = 0;
  /* Not written: the library counts it, and denies when audit is required. */
  return rc;
}

void events_close_line(const char *line, size_t len) {
  if (pending_len + len + 1 > pending_cap) {
    size_t cap = pending_cap ? pending_cap * 2 : 4096;
    while (cap < pending_len + len + 1) cap *= 2;
    char *p = realloc(pending, cap);
    if (!p) {
      events_flush();
      struct iovec iov[2] = { { (char *)line, len }, { "\n", 1 } };
      (void)write_all(iov, 2);
      return;
    }
    pending = p;
    pending_cap = cap;
  }
  memcpy(pending + pending_len, line, len);
  pending[pending_len + len] = '\n';
  pending_len += len + 1;
  if (pending_len >= PENDING_FLUSH) events_flush();
}

int events_init(void) {
  if (uv_prepare_init(loop, &turn_end) != 0 || uv_prepare_start(&turn_end, on_turn_end) != 0) return -1;
  /* It flushes; it does not keep the loop running. */
  uv_unref((uv_handle_t *)&turn_end);
  return 0;
}

void events_end(void) {
  events_flush();
  free(pending);
  pending = NULL;
  pending_len = pending_cap = 0;
}
