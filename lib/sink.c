/*
 * Event sinks (docs/events.md#sinks): a callback, a JSON Lines writer to a file
 * descriptor or a path, or none.
 *
 * Thread safety: a sink is immutable once built, and a line goes out in one
 * write()/send() of the whole "json\n" buffer, so no lock is taken.  With
 * O_APPEND, Linux writes each write() to a regular file at the end of file
 * as one unit, even for writers in other processes sharing the path, so
 * lines never interleave.  A pipe gives the same guarantee only for lines of
 * at most PIPE_BUF (4096) bytes; longer lines to a pipe shared by several
 * writers may interleave, which is the pipe's limit, not ours.
 *
 * A short write is a failed delivery: writing the rest in a second call
 * could put another writer's line in the middle of ours, so we stop and
 * report instead (the checker counts it, and denies when audit is required),
 * after ending the fragment with a lone newline so the next line survives.
 * A non-blocking descriptor that would block (EAGAIN) is a failure too:
 * blocking a security check on a slow log reader is the caller's choice to
 * make with a blocking descriptor.  A descriptor given in the options is
 * checked with fstat() when the sink is built (EGRESS_EIO when it is not
 * open); one closed later fails each delivery with EBADF.
 *
 * SIGPIPE: a library must not change the process's signal dispositions.
 * Sockets are written with send(MSG_NOSIGNAL).  For pipes and FIFOs,
 * SIGPIPE is blocked on the calling thread around the write() and, when
 * the write raised it, the pending signal is consumed with sigtimedwait()
 * before the old mask is restored (the technique libcurl and OpenSSL use):
 * a closed reader becomes an EPIPE delivery failure, never a process kill.
 */
#include "egress_private.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <sys/uio.h>
#include <unistd.h>

typedef enum sink_kind { SINK_NONE = 0, SINK_CALLBACK, SINK_FD } sink_kind_t;

struct egress__sink {
  sink_kind_t kind;
  egress_event_cb cb;
  void *cb_data;
  int fd;
  bool own_fd;      /* opened from a path: closed by egress__sink_free */
  bool is_socket;   /* use send(MSG_NOSIGNAL) */
  bool may_sigpipe; /* pipe, FIFO or other non-regular file: guard SIGPIPE */
};

/* Classifies the descriptor once, so that the hot path does not fstat. */
static int classify_fd(egress__sink_t *s) {
  struct stat st;
  if (fstat(s->fd, &st) != 0) return -1;
  s->is_socket = S_ISSOCK(st.st_mode);
  /* Only pipes and sockets raise SIGPIPE, but a character device or
   * anything unusual costs nothing much to guard. */
  s->may_sigpipe = !s->is_socket && !S_ISREG(st.st_mode);
  return 0;
}

egress_status_t egress__sink_new(const egress_options_t *opts, egress__sink_t **out, char *errbuf,
                                 size_t errlen) {
  egress_status_t st = EGRESS_OK;
  char ebuf[128];
  egress__sink_t *s = NULL;

  if (!out) return egress__errf(errbuf, errlen, EGRESS_EINVAL, "no sink out-pointer");
  *out = NULL;
  s = egress__calloc(1, sizeof *s);
  if (!s) return egress__errf(errbuf, errlen, EGRESS_ENOMEM, "out of memory");
  s->kind = SINK_NONE;
  s->fd = -1;

  if (!opts) goto done;
  if (opts->event_cb) {
    s->kind = SINK_CALLBACK;
    s->cb = opts->event_cb;
    s->cb_data = opts->event_cb_data;
  } else if (opts->event_fd >= 0) {
    s->kind = SINK_FD;
    s->fd = opts->event_fd;
    if (classify_fd(s) != 0) {
      st = egress__errf(errbuf, errlen, EGRESS_EIO, "event file descriptor %d: %s", opts->event_fd,
                        strerror_r(errno, ebuf, sizeof ebuf));
      goto fail;
    }
  } else if (opts->event_path) {
    /* O_NONBLOCK only for the open itself: a FIFO without a reader must
     * fail now (ENXIO) instead of hanging checker creation forever. */
    int fd = open(opts->event_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY | O_NONBLOCK, 0640);
    if (fd < 0) {
      st = egress__errf(errbuf, errlen, EGRESS_EIO, "cannot open event file '%s': %s", opts->event_path,
                        strerror_r(errno, ebuf, sizeof ebuf));
      goto fail;
    }
    s->kind = SINK_FD;
    s->fd = fd;
    s->own_fd = true;
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) != 0 || classify_fd(s) != 0) {
      st = egress__errf(errbuf, errlen, EGRESS_EIO, "cannot set up event file '%s': %s", opts->event_path,
                        strerror_r(errno, ebuf, sizeof ebuf));
      goto fail;
    }
  }

done:
  *out = s;
  return EGRESS_OK;

fail:
  egress__sink_free(s);
  return st;
}

void egress__sink_free(egress__sink_t *sink) {
  if (!sink) return;
  if (sink->own_fd && sink->fd >= 0) close(sink->fd);
  egress__free(sink);
}

bool egress__sink_active(const egress__sink_t *sink) { return sink && sink->kind != SINK_NONE; }

/* write() with SIGPIPE blocked on this thread; a SIGPIPE the write raised
 * is consumed before the old mask is restored.  A SIGPIPE that was already
 * pending before the write is left alone: it is not ours (ours merges into
 * it), and the application will see it when it unblocks. */
static ssize_t write_nosigpipe(int fd, const struct iovec *iov, int iovcnt) {
  sigset_t pipe_set, pending, old;
  ssize_t n;
  int saved;

  sigemptyset(&pipe_set);
  sigaddset(&pipe_set, SIGPIPE);
  /* Without the mask in place the write could kill the process: refuse. */
  if (pthread_sigmask(SIG_BLOCK, &pipe_set, &old) != 0) return -1;
  sigemptyset(&pending);
  bool was_pending = sigpending(&pending) != 0 || sigismember(&pending, SIGPIPE) == 1;

  do {
    n = writev(fd, iov, iovcnt);
  } while (n < 0 && errno == EINTR);
  saved = errno;

  if (n < 0 && saved == EPIPE && !was_pending) {
    const struct timespec zero = { 0, 0 };
    while (sigtimedwait(&pipe_set, NULL, &zero) < 0 && errno == EINTR) {}
  }
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  errno = saved;
  return n;
}

/* One gathered write by the means the descriptor needs; EINTR before
 * anything was written is retried.  writev() of a line and its newline is
 * one write as far as O_APPEND atomicity goes, and spares a copy. */
static ssize_t write_once(const egress__sink_t *s, const struct iovec *iov, int iovcnt) {
  ssize_t n;
  if (s->may_sigpipe) return write_nosigpipe(s->fd, iov, iovcnt);
  do {
    if (s->is_socket) {
      struct msghdr msg;
      memset(&msg, 0, sizeof msg);
      msg.msg_iov = (struct iovec *)iov;
      msg.msg_iovlen = (size_t)iovcnt;
      n = sendmsg(s->fd, &msg, MSG_NOSIGNAL);
    } else {
      n = writev(s->fd, iov, iovcnt);
    }
  } while (n < 0 && errno == EINTR);
  return n;
}

static int deliver_fd(const egress__sink_t *s, const char *json, size_t len) {
  int rc = -1;
  if (len == SIZE_MAX) return -1;
  struct iovec iov[2] = { { (void *)json, len }, { (void *)"\n", 1 } };

  ssize_t n = write_once(s, iov, 2);
  if (n >= 0 && (size_t)n == len + 1) {
    rc = 0;
  } else if (n > 0) {
    /* Part of the line is out.  Ending the fragment with its own newline
     * (one byte, so one atomic write) keeps the next writer's line intact:
     * a reader then skips one broken line instead of losing two.  Best
     * effort; the delivery is a failure either way. */
    struct iovec nl = { (void *)"\n", 1 };
    (void)write_once(s, &nl, 1);
  }
  return rc;
}

int egress__sink_deliver(egress__sink_t *sink, const char *json, size_t len, const egress_decision_t *d) {
  if (!sink || sink->kind == SINK_NONE) return 0;
  if (!json) return -1;
  switch (sink->kind) {
    case SINK_CALLBACK: return sink->cb(json, len, d, sink->cb_data) == 0 ? 0 : -1;
    case SINK_FD: return deliver_fd(sink, json, len);
    case SINK_NONE: break;
  }
  return 0;
}
