/* kago serve — per-app logs: every instance's stdout and stderr are read on the loop and recorded, one
 * line per record (logfmt.h), in <root>/logs/<app>/current.log, rotated at the app's log size into
 * current.log.1 .. current.log.<keep - 1>.
 *
 * Each stream is a FIFO, <root>/logs/<app>/<instance>.stdout (.stderr), rather than an anonymous pipe:
 * the instance holds it open read-write, so when serve is killed or restarted its writes never meet
 * EPIPE (SIGPIPE would kill most apps): they wait in the FIFO, and the next serve, which adopts the
 * instance, opens the FIFO again and records them. serve holds only the read ends (two fds per
 * instance), and an app's current.log is open only while one of its instances runs: an idle app holds
 * no fd and no buffer.
 *
 * The file is written with write(2) from the loop: a few KB into the page cache per read, like the
 * access log; a stream is read 16 KiB at a time (libuv: at most 32 reads a loop turn).
 *
 * A flood is read at a pace, as journald rate-limits a service: each app has a credit of LOG_RATE units a
 * second (a byte costs one, a record LOG_RECORD_COST: `yes` makes a record of every 2 bytes), all apps
 * together LOG_RATE_ALL. A stream whose app (or all of them) has spent it is not read until the tick
 * gives the credit back: its writes wait in the full FIFO, so the app pays for its flood itself, not the
 * loop that starts every app's instances and answers the admin API. Nothing is dropped. */
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "logfmt.h"
#include "serve_int.h"
#include "util.h"

/* What a removed instance's streams still hold is read at most this far (its processes are dead: the
 * FIFO holds at most its buffer; the cap only guards against a writer that somehow survives). */
#define DRAIN_MAX (1u << 20)
#define BATCH     (64u << 10)

#define LOG_RECORD_COST 64
#define LOG_RATE        (2 << 20) /* units a second, an app's; its burst too */
#define LOG_RATE_ALL    (8 << 20)
#define LOG_READ_MAX    (16u << 10) /* read at once: the most a read can overspend */

struct app_log {
    char *name;
    char *dir;     /* <root>/logs/<app> */
    unsigned refs; /* app_rts naming it and streams writing to it */
    unsigned streams;
    int fd; /* current.log while a stream is open, else -1 */
    uint64_t size, max;
    unsigned keep;
    bool failed; /* a write failed: said once */
    int64_t credit;
    uint64_t credit_ms; /* when last given */
};

struct log_stream {
    uv_pipe_t pipe;
    struct instance *inst;
    struct app_log *log;
    struct logfmt_line part;
    const char *stream;                             /* "stdout", "stderr" */
    int64_t now_us;                                 /* when the data being recorded was read */
    struct log_stream *next_paused, **pprev_paused; /* (in paused while its reads wait for credit) */
};

/* One app_log per app name (keys: their names): an app replaced by a reload shares its predecessor's. */
static struct smap app_logs;
/* The loop is one thread: a read is recorded before the next one starts. */
static char rbuf[BATCH];
static char obuf[BATCH + LOGFMT_RECORD_MAX];
static size_t olen;
static int64_t all_credit = LOG_RATE_ALL;
static uint64_t all_credit_ms;
static struct log_stream *paused;

/* credit back for the time since it was last given, up to a second's worth */
static void give_credit(int64_t *credit, uint64_t *when, int64_t rate, uint64_t now)
{
    if (now <= *when)
        return;
    int64_t ms = now - *when >= 1000 ? 1000 : (int64_t)(now - *when);
    *credit += rate * ms / 1000;
    if (*credit > rate)
        *credit = rate;
    *when = now;
}

static const char *const stream_names[2] = {"stdout", "stderr"};

static char *fifo_path(const char *dir, const char *name, int i)
{
    return xasprintf("%s/%s.%s", dir, name, stream_names[i]);
}

static void log_unref(struct app_log *l)
{
    if (--l->refs)
        return;
    kago__smap_del(&app_logs, l->name, strlen(l->name));
    if (!app_logs.n)
        kago__smap_fini(&app_logs);
    if (l->fd >= 0)
        close(l->fd);
    free(l->name);
    free(l->dir);
    free(l);
}

/* The app's log (made with its dir on first use), its size and keep taken from the app's definition. */
static struct app_log *app_log_get(struct app_rt *a)
{
    kago__slog_format(a->srv); /* (log_error writes without the server) */
    struct app_log *l = a->log ? a->log : kago__smap_get(&app_logs, a->app.name);
    if (!l) {
        cleanup_free char *dir = xasprintf("%s/logs/%s", a->srv->opts.root, a->app.name);
        struct kago_error *err = NULL;
        if (kago__mkdir_p(dir, 0700, &err) < 0) {
            kago__slog(a->srv, SLOG_ERR, a->app.name, NULL, "its output is not recorded: %s", err->msg);
            kago_error_free(err);
            return NULL;
        }
        l = xcalloc(1, sizeof(*l));
        l->name = xstrdup(a->app.name);
        l->dir = steal_ptr(dir);
        l->fd = -1;
        l->credit = LOG_RATE;
        l->credit_ms = kago__serve_now_ms();
        kago__smap_add(&app_logs, l->name, strlen(l->name), l);
    }
    if (!a->log) {
        a->log = l;
        l->refs++;
    }
    l->max = a->app.log_size ? a->app.log_size : 10u << 20;
    l->keep = a->app.log_keep ? a->app.log_keep : 3;
    return l;
}

static void log_error(struct app_log *l, const char *what, const char *path)
{
    if (!l->failed)
        kago__slog(NULL, SLOG_ERR, l->name, NULL, "%s %s: %s (its output is dropped until it works again)",
                   what, path, strerror(errno));
    l->failed = true;
}

static int log_fd(struct app_log *l)
{
    if (l->fd >= 0)
        return l->fd;
    cleanup_free char *path = xasprintf("%s/current.log", l->dir);
    l->fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    struct stat st;
    if (l->fd < 0)
        log_error(l, "open", path);
    else
        l->size = fstat(l->fd, &st) == 0 ? (uint64_t)st.st_size : 0;
    return l->fd;
}

/* current.log becomes current.log.1, .1 becomes .2 ..., and what is beyond keep files goes. */
static void rotate(struct app_log *l)
{
    if (l->fd >= 0)
        close(l->fd);
    l->fd = -1;
    char from[PATH_MAX], to[PATH_MAX];
    for (unsigned i = l->keep;; i++) { /* (keep may have been lowered by a reload) */
        snprintf(to, sizeof(to), "%s/current.log.%u", l->dir, i);
        if (unlink(to) < 0 && errno == ENOENT)
            break;
    }
    for (unsigned i = l->keep - 1; i >= 1; i--) {
        if (i == 1)
            snprintf(from, sizeof(from), "%s/current.log", l->dir);
        else
            snprintf(from, sizeof(from), "%s/current.log.%u", l->dir, i - 1);
        snprintf(to, sizeof(to), "%s/current.log.%u", l->dir, i);
        if (rename(from, to) < 0 && errno != ENOENT)
            log_error(l, "rotate", from);
    }
    if (l->keep == 1) {
        snprintf(from, sizeof(from), "%s/current.log", l->dir);
        unlink(from);
    }
    l->size = 0;
}

static void batch_write(struct app_log *l, size_t n)
{
    if (!n || log_fd(l) < 0)
        return;
    for (size_t off = 0; off < n;) {
        ssize_t w = write(l->fd, obuf + off, n - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            log_error(l, "write", "current.log");
            return;
        }
        off += (size_t)w;
        l->size += (uint64_t)w;
    }
    l->failed = false;
}

static void emit(void *ctx, const char *line, size_t n)
{
    struct log_stream *s = ctx;
    struct app_log *l = s->log;
    kago__logfmt_tail_add(&s->inst->out_tail, line, n);
    l->credit -= LOG_RECORD_COST;
    all_credit -= LOG_RECORD_COST;
    size_t rl = kago__logfmt_record(obuf + olen, s->now_us, s->inst->name, s->stream, line, n);
    if (l->size + olen + rl > l->max && l->size + olen > 0) {
        batch_write(l, olen);
        rotate(l);
        memmove(obuf, obuf + olen, rl);
        olen = 0;
    }
    olen += rl;
    if (olen >= BATCH) {
        batch_write(l, olen);
        olen = 0;
    }
}

static int64_t now_unix_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void record(struct log_stream *s, const char *data, size_t n, bool end)
{
    s->now_us = now_unix_us();
    if (s->log->fd < 0) /* its size, for rotation */
        log_fd(s->log);
    kago__logfmt_feed(&s->part, data, n, emit, s);
    if (end)
        kago__logfmt_flush(&s->part, emit, s);
    batch_write(s->log, olen);
    olen = 0;
}

static void on_alloc(uv_handle_t *h, size_t size, uv_buf_t *buf)
{
    buf->base = rbuf;
    buf->len = LOG_READ_MAX;
}

static void unpause(struct log_stream *s)
{
    if (!s->pprev_paused)
        return;
    *s->pprev_paused = s->next_paused;
    if (s->next_paused)
        s->next_paused->pprev_paused = s->pprev_paused;
    s->next_paused = NULL;
    s->pprev_paused = NULL;
}

static void on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf);

void kago__logs_tick(uint64_t now)
{
    if (!paused)
        return;
    give_credit(&all_credit, &all_credit_ms, LOG_RATE_ALL, now);
    for (struct log_stream *s = paused, *next; s && all_credit > 0; s = next) {
        next = s->next_paused;
        give_credit(&s->log->credit, &s->log->credit_ms, LOG_RATE, now);
        if (s->log->credit > 0) {
            unpause(s);
            uv_read_start((uv_stream_t *)&s->pipe, on_alloc, on_read);
        }
    }
}

static void on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
    struct log_stream *s = st->data;
    if (n > 0) {
        s->log->credit -= n;
        all_credit -= n;
        record(s, buf->base, (size_t)n, false);
        if (s->log->credit <= 0 || all_credit <= 0) {
            uint64_t now = kago__serve_now_ms();
            give_credit(&all_credit, &all_credit_ms, LOG_RATE_ALL, now);
            give_credit(&s->log->credit, &s->log->credit_ms, LOG_RATE, now);
        }
        if (s->log->credit <= 0 || all_credit <= 0) { /* (read again by kago__logs_tick) */
            uv_read_stop(st);
            s->next_paused = paused;
            s->pprev_paused = &paused;
            if (paused)
                paused->pprev_paused = &s->next_paused;
            paused = s;
        }
    } else if (n < 0) { /* every writer is gone: the instance ended */
        uv_read_stop(st);
        record(s, NULL, 0, true);
    }
}

static void on_stream_closed(uv_handle_t *h)
{
    struct log_stream *s = h->data;
    struct instance *inst = s->inst;
    struct app_log *l = s->log;
    free(s->part.buf);
    free(s);
    if (--l->streams == 0 && l->fd >= 0) { /* no instance of it runs: no fd held */
        close(l->fd);
        l->fd = -1;
    }
    log_unref(l);
    inst->handles--;
    kago__instance_unref(inst);
}

static void free_handle_data(uv_handle_t *h)
{
    free(h->data);
}

/* Reads rfd (its FIFO opened non-blocking) on the loop as inst's stream i. Takes rfd. */
static int stream_start(struct instance *inst, struct app_log *l, int i, int rfd)
{
    struct log_stream *s = xcalloc(1, sizeof(*s));
    int r = uv_pipe_init(inst->app->srv->loop, &s->pipe, 0);
    if (r == 0 && (r = uv_pipe_open(&s->pipe, rfd)) < 0) {
        close(rfd);
        s->pipe.data = s;
        uv_close((uv_handle_t *)&s->pipe, free_handle_data);
        return r;
    }
    if (r < 0) {
        close(rfd);
        free(s);
        return r;
    }
    s->inst = inst;
    s->log = l;
    s->stream = stream_names[i];
    s->pipe.data = s;
    l->refs++;
    l->streams++;
    inst->handles++;
    inst->out[i] = s;
    uv_read_start((uv_stream_t *)&s->pipe, on_alloc, on_read);
    return 0;
}

void kago__logs_open(struct instance *inst, int fds[3])
{
    fds[1] = fds[2] = -1;
    struct app_log *l = app_log_get(inst->app);
    for (int i = 0; l && i < 2; i++) {
        cleanup_free char *path = fifo_path(l->dir, inst->name, i);
        unlink(path); /* (a leftover of the same name) */
        int rfd = -1, wfd = -1;
        if (mkfifo(path, 0600) < 0 || (rfd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC)) < 0 ||
            (wfd = open(path, O_RDWR | O_CLOEXEC)) < 0 || stream_start(inst, l, i, steal_fd(&rfd)) < 0) {
            kago__ilog(inst, SLOG_ERR, "its %s is not recorded: FIFO %s: %s", stream_names[i], path,
                       strerror(errno));
            if (rfd >= 0)
                close(rfd);
            if (wfd >= 0)
                close(wfd);
            unlink(path);
            continue;
        }
        fds[i + 1] = wfd;
    }
}

void kago__logs_adopt(struct instance *inst)
{
    struct app_log *l = NULL;
    for (int i = 0; i < 2; i++) {
        cleanup_free char *path = xasprintf("%s/logs/%s/%s.%s", inst->app->srv->opts.root,
                                            inst->app->app.name, inst->name, stream_names[i]);
        struct stat st;
        if (stat(path, &st) < 0 || !S_ISFIFO(st.st_mode) || (!l && !(l = app_log_get(inst->app))))
            continue;
        int rfd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
        if (rfd >= 0)
            stream_start(inst, l, i, rfd);
    }
}

/* Reads what the stream still holds, without waiting. */
static void drain(struct log_stream *s)
{
    uv_os_fd_t fd;
    if (uv_fileno((uv_handle_t *)&s->pipe, &fd) < 0)
        return;
    size_t total = 0;
    ssize_t n;
    while (total < DRAIN_MAX && ((n = read(fd, rbuf, sizeof(rbuf))) > 0 || (n < 0 && errno == EINTR)))
        if (n > 0) {
            record(s, rbuf, (size_t)n, false);
            total += (size_t)n;
        }
}

void kago__logs_close(struct instance *inst, bool keep_fifos)
{
    for (int i = 0; i < 2; i++) {
        struct log_stream *s = inst->out[i];
        if (!s)
            continue;
        inst->out[i] = NULL;
        unpause(s);
        drain(s);
        record(s, NULL, 0, true);
        cleanup_free char *path = fifo_path(s->log->dir, inst->name, i);
        if (!keep_fifos) /* (kept: the instance runs on, a new serve reads them) */
            unlink(path);
        uv_close((uv_handle_t *)&s->pipe, on_stream_closed);
    }
}

const char *kago__logs_tail(struct instance *inst)
{
    static struct logfmt_tail t; /* (the loop is one thread) */
    for (int i = 0; i < 2; i++)
        if (inst->out[i])
            drain(inst->out[i]);
    t = inst->out_tail;
    for (int i = 0; i < 2; i++) /* a last line without its newline yet ("Error: ..." and exit) */
        if (inst->out[i] && inst->out[i]->part.len)
            kago__logfmt_tail_add(&t, inst->out[i]->part.buf, inst->out[i]->part.len);
    return t.buf;
}

void kago__logs_forget(struct server *srv, const char *app, const char *name)
{
    for (int i = 0; i < 2; i++) {
        cleanup_free char *path =
            xasprintf("%s/logs/%s/%s.%s", srv->opts.root, app ? app : "*", name, stream_names[i]);
        glob_t g; /* (no app: its record was damaged) */
        if (!app && glob(path, GLOB_NOSORT, NULL, &g) == 0) {
            for (size_t k = 0; k < g.gl_pathc; k++)
                unlink(g.gl_pathv[k]);
            globfree(&g);
        } else if (app) {
            unlink(path);
        }
    }
}

void kago__logs_app_free(struct app_rt *a)
{
    if (a->log)
        log_unref(a->log);
    a->log = NULL;
}
