/* The supervisor of `kago run Kagofile`: starts the file's containers and runs their hooks, timers and
 * signal handlers from one libuv loop (no thread per container). A container's exit is seen on its
 * pidfd; its status is reaped with waitid(P_PIDFD); then on_oom / on_exit / on_failure run and the
 * container is deleted, so nothing is left behind. */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <mruby.h>
#include <mruby/proc.h>

#include "supervisor.h"

#define OOM_POLL_MS 1000

void sup_log(struct sup *s, const char *fmt, ...)
{
    char buf[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    localtime_r(&ts.tv_sec, &tm);
    fprintf(stderr, "%02d:%02d:%02d.%03ld kago: %s\n", tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000,
            buf);
}

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

void kf_unref(struct kago_kagofile *kf)
{
    if (kf && --kf->refs <= 0)
        kago_kagofile_free(kf);
}

struct sct *sup_find(struct sup *s, const char *name)
{
    for (size_t i = 0; i < s->ncts; i++)
        if (!strcmp(s->cts[i]->name, name))
            return s->cts[i];
    return NULL;
}

/* --- hooks ------------------------------------------------------------------------------------ */

static void call_hook(struct sct *ct, struct kf_hook *h, int nextra, const mrb_value *extra)
{
    mrb_state *mrb = ct->kf->mrb;
    int ai = mrb_gc_arena_save(mrb);
    mrb_value args[4];
    args[0] = kf_ctobj_new(mrb, ct);
    for (int i = 0; i < nextra && i < 3; i++)
        args[i + 1] = extra[i];
    uint64_t t0 = now_us();
    mrb_funcall_argv(mrb, h->proc, mrb_intern_lit(mrb, "call"), 1 + (nextra < 3 ? nextra : 3), args);
    uint64_t took = now_us() - t0;
    if (mrb->exc) {
        /* Operator code failed: say where, keep the container and the supervisor running. */
        char *msg = kf_exc_string(mrb, ct->kf->path);
        sup_log(ct->sup, "%s: %s hook failed: %s", ct->name, h->desc, msg);
        free(msg);
    } else if (ct->sup->verbose) {
        sup_log(ct->sup, "%s: %s hook ran in %.3f ms", ct->name, h->desc, (double)took / 1000.0);
    }
    mrb_gc_arena_restore(mrb, ai);
}

void sup_run_hooks(struct sct *ct, enum kf_hook_kind kind, int nextra, const mrb_value *extra)
{
    /* Hold the file: a hook cannot reload, but be safe against the definition changing under us. */
    struct kago_kagofile *kf = ct->kf;
    kf->refs++;
    struct kf_container *def = ct->def;
    for (size_t i = 0; i < def->nhooks; i++)
        if (def->hooks[i].kind == kind)
            call_hook(ct, &def->hooks[i], nextra, extra);
    kf_unref(kf);
}

/* --- timers ----------------------------------------------------------------------------------- */

static void free_timer(uv_handle_t *h)
{
    free(h->data);
}

static void cancel_timers(struct sct *ct)
{
    for (size_t i = 0; i < ct->ntimers; i++)
        uv_close((uv_handle_t *)&ct->timers[i]->t, free_timer);
    free(ct->timers);
    ct->timers = NULL;
    ct->ntimers = 0;
}

static void on_timer(uv_timer_t *t)
{
    struct sct_timer *tm = t->data;
    struct sct *ct = tm->ct;
    if (!ct->running)
        return;
    uint64_t late = uv_now(&ct->sup->loop) - tm->due_ms;
    if (ct->sup->verbose)
        sup_log(ct->sup, "%s: %s fired (%llu ms after its due time)", ct->name, tm->hook->desc,
                (unsigned long long)late);
    tm->due_ms = uv_now(&ct->sup->loop) + tm->hook->ms;
    struct kago_kagofile *kf = ct->kf;
    kf->refs++;
    call_hook(ct, tm->hook, 0, NULL);
    kf_unref(kf);
}

void sup_arm_timers(struct sct *ct)
{
    cancel_timers(ct);
    uint64_t now = uv_now(&ct->sup->loop);
    for (size_t i = 0; i < ct->def->nhooks; i++) {
        struct kf_hook *h = &ct->def->hooks[i];
        if (h->kind != KF_AFTER && h->kind != KF_EVERY)
            continue;
        uint64_t due = h->kind == KF_AFTER ? ct->started_ms + h->ms : now + h->ms;
        if (h->kind == KF_AFTER && due < now)
            continue; /* already fired (before a reload) */
        struct sct_timer *tm = calloc(1, sizeof *tm);
        if (!tm)
            abort();
        tm->ct = ct;
        tm->hook = h;
        tm->due_ms = due;
        uv_timer_init(&ct->sup->loop, &tm->t);
        tm->t.data = tm;
        uv_timer_start(&tm->t, on_timer, due - now, h->kind == KF_EVERY ? h->ms : 0);
        struct sct_timer **v = realloc(ct->timers, (ct->ntimers + 1) * sizeof *v);
        if (!v)
            abort();
        ct->timers = v;
        ct->timers[ct->ntimers++] = tm;
    }
}

/* --- stop ------------------------------------------------------------------------------------- */

static void on_grace(uv_timer_t *t)
{
    struct sct *ct = t->data;
    if (!ct->running)
        return;
    sup_log(ct->sup, "%s: still running after its stop grace: SIGKILL", ct->name);
    struct kago_error *err = NULL;
    if (kago_container_kill(ct->c, SIGKILL, true, &err) < 0) {
        sup_log(ct->sup, "%s", err->msg);
        kago_error_free(err);
    }
}

int sup_stop(struct sct *ct, int64_t grace_ms, struct kago_error **err)
{
    if (!ct->running)
        return kago_error_set(err, 0, "container %s: has ended", ct->name);
    uint64_t grace = grace_ms < 0 ? ct->def->stop_grace_ms : (uint64_t)grace_ms;
    ct->stopping = true;
    /* All processes get SIGTERM: a shell as PID 1 of a pid namespace ignores it, its children not. An init
     * that can act on it in no way and runs alone gets SIGKILL at once (kago_container_stop_futile). */
    int stop = kago_container_spec(ct->c)->stop_signal;
    int sig = stop > 0 ? stop : SIGTERM;
    bool futile = kago_container_stop_futile(ct->c, sig);
    if (futile)
        sup_log(ct->sup, "%s: its init neither catches nor ignores signal %d and runs alone: SIGKILL at once",
                ct->name, sig);
    if (kago_container_kill(ct->c, futile ? SIGKILL : sig, !futile, err) < 0)
        return -1;
    if (!ct->grace_open) {
        uv_timer_init(&ct->sup->loop, &ct->grace);
        ct->grace.data = ct;
        ct->grace_open = true;
    }
    uv_timer_start(&ct->grace, on_grace, grace, 0);
    return 0;
}

/* --- readiness: a TCP connect to 127.0.0.1:PORT from inside the container's netns -------------- */

#define READY_TICK_MS 20

static void ready_done(struct sct *ct, bool ok)
{
    uv_timer_stop(&ct->ready);
    if (ct->ready_fd >= 0)
        close(ct->ready_fd);
    ct->ready_fd = -1;
    uint64_t waited = uv_now(&ct->sup->loop) - ct->started_ms;
    sup_log(ct->sup, "%s: %s after %llu ms", ct->name, ok ? "ready" : "NOT ready (timeout)",
            (unsigned long long)waited);
    mrb_value arg = mrb_bool_value(ok);
    sup_run_hooks(ct, KF_READY, 1, &arg);
}

static int socket_in_netns(struct sct *ct, struct kago_error **err)
{
    int ns = kago_container_open_ns(ct->c, KAGO_NS_NET, err);
    if (ns < 0)
        return -1;
    if (setns(ns, CLONE_NEWNET) < 0) {
        close(ns);
        return kago_error_set(err, errno, "container %s: setns net", ct->name);
    }
    close(ns);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int e = errno;
    if (setns(ct->sup->self_netns, CLONE_NEWNET) < 0)
        abort(); /* going on in a container's netns would be far worse */
    if (fd < 0)
        return kago_error_set(err, e, "container %s: socket", ct->name);
    return fd;
}

#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

static void on_ready_tick(uv_timer_t *t)
{
    struct sct *ct = t->data;
    struct kf_hook *h = NULL;
    for (size_t i = 0; i < ct->def->nhooks; i++)
        if (ct->def->hooks[i].kind == KF_READY)
            h = &ct->def->hooks[i];
    if (!ct->running || !h) {
        uv_timer_stop(t);
        return;
    }
    if (ct->ready_fd >= 0) {
        struct pollfd p = {.fd = ct->ready_fd, .events = POLLOUT};
        if (poll(&p, 1, 0) == 1) {
            int soerr = 0;
            socklen_t len = sizeof soerr;
            getsockopt(ct->ready_fd, SOL_SOCKET, SO_ERROR, &soerr, &len);
            if (soerr == 0)
                return ready_done(ct, true);
            close(ct->ready_fd);
            ct->ready_fd = -1;
        }
    } else {
        struct kago_error *err = NULL;
        int fd = socket_in_netns(ct, &err);
        if (fd < 0) {
            kago_error_free(err);
        } else {
            struct sockaddr_in a = {
                .sin_family = AF_INET, .sin_port = htons(h->port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
            if (connect(fd, (struct sockaddr *)&a, sizeof a) == 0) {
                ct->ready_fd = fd;
                return ready_done(ct, true);
            }
            if (errno == EINPROGRESS)
                ct->ready_fd = fd;
            else
                close(fd);
        }
    }
    if (uv_now(&ct->sup->loop) - ct->started_ms >= h->ms)
        ready_done(ct, false);
}

static void arm_ready(struct sct *ct)
{
    for (size_t i = 0; i < ct->def->nhooks; i++) {
        if (ct->def->hooks[i].kind != KF_READY)
            continue;
        uv_timer_init(&ct->sup->loop, &ct->ready);
        ct->ready.data = ct;
        ct->ready_open = true;
        uv_timer_start(&ct->ready, on_ready_tick, 0, READY_TICK_MS);
        return;
    }
}

/* --- exits ------------------------------------------------------------------------------------ */

static void pidfile_path(struct sup *s, const char *name, char *buf, size_t len)
{
    snprintf(buf, len, "%s/%s.pid", s->dir, name);
}

static void close_handle(uv_handle_t *h, bool *open)
{
    if (*open && !uv_is_closing(h))
        uv_close(h, NULL);
    *open = false;
}

/* Runs the on_oom hooks if the cgroup counted a new OOM kill; returns whether it did. */
static bool check_oom(struct sct *ct)
{
    struct kago_stats st;
    if (kago_container_stats(ct->c, &st, NULL) < 0 || st.oom_kills <= ct->oom_seen)
        return false;
    ct->oom_seen = st.oom_kills;
    sup_log(ct->sup, "%s: out of memory (%lld OOM kills)", ct->name, (long long)st.oom_kills);
    sup_run_hooks(ct, KF_ON_OOM, 0, NULL);
    return true;
}

#define OOM_RETRY_MS 5
#define OOM_RETRIES  100

static void on_oom_retry(uv_timer_t *t)
{
    struct sct *ct = t->data;
    if (ct->running && !check_oom(ct) && ++ct->oom_retries < OOM_RETRIES)
        uv_timer_start(&ct->oom_retry, on_oom_retry, OOM_RETRY_MS, 0);
}

/* v1 signals the eventfd as the cgroup goes out of memory, before the kill is counted: what the event
 * announced is looked for again, 5 ms apart, for half a second. */
static void on_oom_event(uv_poll_t *h, int status, int events)
{
    struct sct *ct = h->data;
    char buf[256];
    while (read(ct->oom_fd, buf, sizeof buf) > 0)
        ;
    if (check_oom(ct))
        return;
    ct->oom_retries = 0;
    uv_timer_start(&ct->oom_retry, on_oom_retry, OOM_RETRY_MS, 0);
}

/* on_oom hooks run on the cgroup's own memory event, not on a poll (the fallback where the event cannot
 * be had: oom_timer). */
static void oom_watch(struct sct *ct, bool want)
{
    if (want && !ct->oom_poll_open && ct->running) {
        struct kago_error *err = NULL;
        int fd = kago_container_oom_fd(ct->c, &err);
        if (fd < 0) {
            sup_log(ct->sup, "%s: on_oom checked once a second: %s", ct->name, err ? err->msg : "no event");
            kago_error_free(err);
            return;
        }
        ct->oom_fd = fd;
        if (!ct->oom_retry_open) {
            uv_timer_init(&ct->sup->loop, &ct->oom_retry);
            ct->oom_retry.data = ct;
            ct->oom_retry_open = true;
        }
        uv_poll_init(&ct->sup->loop, &ct->oom_poll, fd);
        ct->oom_poll.data = ct;
        uv_poll_start(&ct->oom_poll, UV_READABLE, on_oom_event);
        ct->oom_poll_open = true;
    } else if (!want && ct->oom_poll_open) {
        close_handle((uv_handle_t *)&ct->oom_poll, &ct->oom_poll_open);
        close_handle((uv_handle_t *)&ct->oom_retry, &ct->oom_retry_open);
        close(ct->oom_fd); /* uv_close stopped watching it at once */
        ct->oom_fd = -1;
    }
}

static bool wants_oom(const struct sct *ct)
{
    for (size_t k = 0; k < ct->def->nhooks; k++)
        if (ct->def->hooks[k].kind == KF_ON_OOM)
            return true;
    return false;
}

static void shutdown_watchers(struct sup *s);

static void container_ended(struct sct *ct, int status)
{
    struct sup *s = ct->sup;
    close_handle((uv_handle_t *)&ct->exit_poll, &ct->exit_poll_open);
    oom_watch(ct, false);
    cancel_timers(ct);
    if (ct->grace_open)
        uv_timer_stop(&ct->grace);
    if (ct->ready_open)
        uv_timer_stop(&ct->ready);
    check_oom(ct);
    bool failed = status != 0 && !ct->stopping;
    sup_log(s, "%s: exited with status %d%s", ct->name, status,
            ct->stopping ? " (stopped)"
            : failed     ? " (failure)"
                         : "");
    mrb_value st = mrb_int_value(ct->kf->mrb, status);
    sup_run_hooks(ct, KF_ON_EXIT, 1, &st);
    if (failed) {
        sup_run_hooks(ct, KF_ON_FAILURE, 1, &st);
        s->exit_code = 1;
    }
    ct->running = false;
    struct kago_error *err = NULL;
    if (kago_container_delete(ct->c, true, &err) < 0) {
        sup_log(s, "%s", err->msg);
        kago_error_free(err);
        s->exit_code = 1;
    }
    char pf[4096];
    pidfile_path(s, ct->name, pf, sizeof pf);
    unlink(pf);
    sup_record_drop(ct);
    if (--s->nrunning == 0)
        shutdown_watchers(s);
}

static void on_exit_poll(uv_poll_t *p, int status, int events)
{
    struct sct *ct = p->data;
    siginfo_t si = {0};
    int code = -1;
    /* The container's init is our child: reap it through its pidfd for the status (an adopted one is
     * not: whoever adopted the orphan reaped it, and its status is unknown). */
    if (ct->adopted) {
        if (kago_container_status(ct->c) != KAGO_STOPPED)
            return;
    } else if (waitid(P_PIDFD, (id_t)kago_container_pidfd(ct->c), &si, WEXITED | WNOHANG) == 0 && si.si_pid) {
        if (si.si_code == CLD_EXITED)
            code = si.si_status;
        else
            code = 128 + si.si_status;
    } else if (kago_container_status(ct->c) != KAGO_STOPPED) {
        return; /* spurious wake-up */
    }
    container_ended(ct, code);
}

/* --- signals and watchers --------------------------------------------------------------------- */

static void stop_all(struct sup *s, bool now)
{
    for (size_t i = 0; i < s->ncts; i++) {
        struct sct *ct = s->cts[i];
        if (!ct->running)
            continue;
        struct kago_error *err = NULL;
        int r = now ? kago_container_kill(ct->c, SIGKILL, true, &err) : sup_stop(ct, -1, &err);
        ct->stopping = true;
        if (r < 0) {
            sup_log(s, "%s", err->msg);
            kago_error_free(err);
        }
    }
}

static void on_stop_signal(uv_signal_t *h, int sig)
{
    struct sup *s = h->data;
    sup_log(s, "SIG%s: %s every container", sigabbrev_np(sig), s->shutting_down ? "killing" : "stopping");
    stop_all(s, s->shutting_down);
    s->shutting_down = true;
}

static void on_hup(uv_signal_t *h, int sig)
{
    struct sup *s = h->data;
    char *report = NULL;
    sup_reload(s, NULL, &report);
    if (report)
        fputs(report, stderr);
    free(report);
}

static void on_user_signal(uv_signal_t *h, int sig)
{
    struct sup *s = h->data;
    for (size_t i = 0; i < s->ncts; i++) {
        struct sct *ct = s->cts[i];
        if (!ct->running)
            continue;
        for (size_t k = 0; k < ct->def->nhooks; k++) {
            struct kf_hook *hk = &ct->def->hooks[k];
            if (hk->kind == KF_SIGNAL && hk->sig == sig) {
                struct kago_kagofile *kf = ct->kf;
                kf->refs++;
                call_hook(ct, hk, 0, NULL);
                kf_unref(kf);
            }
        }
    }
}

static void on_oom_tick(uv_timer_t *t)
{
    struct sup *s = t->data;
    for (size_t i = 0; i < s->ncts; i++) {
        struct sct *ct = s->cts[i];
        if (ct->running && !ct->oom_poll_open && wants_oom(ct))
            check_oom(ct);
    }
}

void sup_refresh_watchers(struct sup *s)
{
    bool want_oom = false;
    for (size_t i = 0; i < s->ncts; i++) {
        struct sct *ct = s->cts[i];
        oom_watch(ct, ct->running && wants_oom(ct));
        want_oom |= ct->running && wants_oom(ct) && !ct->oom_poll_open;
        for (size_t k = 0; ct->running && k < ct->def->nhooks; k++) {
            struct kf_hook *h = &ct->def->hooks[k];
            if (h->kind != KF_SIGNAL)
                continue;
            bool have = false;
            for (size_t j = 0; j < s->nuser_sigs; j++)
                have |= s->user_signums[j] == h->sig;
            if (have || s->nuser_sigs >= 32)
                continue;
            if (!s->user_sigs) {
                s->user_sigs = calloc(32, sizeof *s->user_sigs);
                s->user_signums = calloc(32, sizeof *s->user_signums);
                if (!s->user_sigs || !s->user_signums)
                    abort();
            }
            uv_signal_t *u = &s->user_sigs[s->nuser_sigs];
            s->user_signums[s->nuser_sigs++] = h->sig;
            uv_signal_init(&s->loop, u);
            u->data = s;
            uv_signal_start(u, on_user_signal, h->sig);
        }
    }
    if (want_oom && !uv_is_active((uv_handle_t *)&s->oom_timer))
        uv_timer_start(&s->oom_timer, on_oom_tick, OOM_POLL_MS, OOM_POLL_MS);
    else if (!want_oom)
        uv_timer_stop(&s->oom_timer);
}

static void shutdown_watchers(struct sup *s)
{
    uv_close((uv_handle_t *)&s->sig_term, NULL);
    uv_close((uv_handle_t *)&s->sig_int, NULL);
    uv_close((uv_handle_t *)&s->sig_hup, NULL);
    uv_close((uv_handle_t *)&s->oom_timer, NULL);
    for (size_t i = 0; i < s->nuser_sigs; i++)
        uv_close((uv_handle_t *)&s->user_sigs[i], NULL);
    for (size_t i = 0; i < s->ncts; i++) {
        struct sct *ct = s->cts[i];
        close_handle((uv_handle_t *)&ct->grace, &ct->grace_open);
        close_handle((uv_handle_t *)&ct->ready, &ct->ready_open);
        close_handle((uv_handle_t *)&ct->exit_poll, &ct->exit_poll_open);
        oom_watch(ct, false);
        cancel_timers(ct);
    }
    sup_control_stop(s);
}

/* --- start ------------------------------------------------------------------------------------ */

static int write_pidfile(struct sup *s, const char *name, struct kago_error **err)
{
    char pf[4096], tmp[4200], buf[32];
    pidfile_path(s, name, pf, sizeof pf);
    snprintf(tmp, sizeof tmp, "%s.tmp", pf);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return kago_error_set(err, errno, "open %s", tmp);
    int n = snprintf(buf, sizeof buf, "%d\n", (int)getpid());
    bool ok = write(fd, buf, (size_t)n) == n;
    close(fd);
    if (!ok || rename(tmp, pf) < 0) {
        unlink(tmp);
        return kago_error_set(err, errno ? errno : EIO, "write %s", pf);
    }
    return 0;
}

/* ct's container runs: counted, its exit polled, its OOM events watched when a hook wants them. */
static void sup_watch(struct sct *ct)
{
    struct sup *s = ct->sup;
    s->nrunning++;
    uv_poll_init(&s->loop, &ct->exit_poll, kago_container_pidfd(ct->c));
    ct->exit_poll.data = ct;
    ct->exit_poll_open = true;
    oom_watch(ct, wants_oom(ct));
}

static int start_one(struct sup *s, struct sct *ct, struct kago_error **err)
{
    /* orphan: no parent-death signal, the container outlives a supervisor that is killed, and the next
     * one adopts it (sup_adopt.c) */
    struct kago_spawn_opts o = {.wait_start = true, .stdio = {-1, -1, -1}, .orphan = true};
    sup_record_write(ct); /* before the container exists: a supervisor killed in the create leaves it */
    if (kago_container_create(s->opts->root, ct->def->spec, &o, &ct->c, err) < 0)
        return -1;
    ct->running = true;
    sup_watch(ct);
    /* before_start: the cgroup and namespaces exist, the command has not run yet. */
    sup_run_hooks(ct, KF_BEFORE_START, 0, NULL);
    if (kago_container_start(ct->c, err) < 0 || write_pidfile(s, ct->name, err) < 0)
        return -1;
    uv_update_time(&s->loop);
    ct->started_ms = uv_now(&s->loop);
    uv_poll_start(&ct->exit_poll, UV_READABLE, on_exit_poll);
    sup_record_write(ct);
    sup_log(s, "%s: started, pid %d", ct->name, (int)kago_container_pid(ct->c));
    sup_run_hooks(ct, KF_AFTER_START, 0, NULL);
    if (ct->running) {
        sup_arm_timers(ct);
        arm_ready(ct);
    }
    return 0;
}

void sup_take(struct sct *ct, uint64_t age_ms)
{
    struct sup *s = ct->sup;
    struct kago_error *err = NULL;
    ct->adopted = true;
    ct->running = true;
    sup_watch(ct);
    if (write_pidfile(s, ct->name, &err) < 0) {
        sup_log(s, "%s: %s", ct->name, err->msg);
        kago_error_free(err);
    }
    uv_update_time(&s->loop);
    uint64_t now = uv_now(&s->loop);
    ct->started_ms = now > age_ms ? now - age_ms : 0;
    uv_poll_start(&ct->exit_poll, UV_READABLE, on_exit_poll);
    sup_arm_timers(ct); /* after() timers already due are not run again */
}

/* A start failed: remove what did start, so nothing is left behind. */
static void undo_starts(struct sup *s)
{
    for (size_t i = 0; i < s->ncts; i++) {
        struct sct *ct = s->cts[i];
        sup_record_drop(ct);
        if (!ct->c)
            continue;
        char pf[4096];
        pidfile_path(s, ct->name, pf, sizeof pf);
        unlink(pf);
        if (kago_container_delete(ct->c, true, NULL) == 0 && ct->running)
            s->nrunning--;
        ct->running = false;
    }
    shutdown_watchers(s);
}

static int select_containers(struct sup *s, struct kago_kagofile *kf, struct kago_error **err)
{
    char *const *names = s->opts->names;
    for (size_t i = 0; names && names[i]; i++)
        if (!kf_find(kf, names[i]))
            return kago_error_set(err, 0, "%s: no container named \"%s\"", kf->path, names[i]);
    for (size_t i = 0; i < kf->ncts; i++) {
        bool want = !names || !names[0];
        for (size_t j = 0; names && names[j]; j++)
            want |= !strcmp(names[j], kf->cts[i]->spec->name);
        if (!want)
            continue;
        struct sct *ct = calloc(1, sizeof *ct);
        struct sct **v = realloc(s->cts, (s->ncts + 1) * sizeof *v);
        if (!ct || !v)
            abort();
        ct->sup = s;
        ct->name = strdup(kf->cts[i]->spec->name);
        ct->kf = kf;
        kf->refs++;
        ct->def = kf->cts[i];
        ct->ready_fd = -1;
        ct->rec_fd = -1;
        sup_name_cgroup(s, ct->def->spec);
        s->cts = v;
        s->cts[s->ncts++] = ct;
    }
    if (!s->ncts)
        return kago_error_set(err, 0, "%s: defines no container to run (only apps: use kago serve)",
                              kf->path);
    return 0;
}

static int sup_init(struct sup *s, struct kago_error **err)
{
    uv_loop_init(&s->loop);
    s->self_netns = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    if (s->self_netns < 0)
        return kago_error_set(err, errno, "open /proc/thread-self/ns/net");
    if (asprintf(&s->dir, "%s/%s", s->opts->root, KAGO_SUPERVISORS_DIR) < 0)
        abort();
    mkdir(s->opts->root, 0711);
    if (mkdir(s->dir, 0700) < 0 && errno != EEXIST)
        return kago_error_set(err, errno, "mkdir %s", s->dir);
    uv_signal_init(&s->loop, &s->sig_term);
    uv_signal_init(&s->loop, &s->sig_int);
    uv_signal_init(&s->loop, &s->sig_hup);
    s->sig_term.data = s->sig_int.data = s->sig_hup.data = s;
    uv_signal_start(&s->sig_term, on_stop_signal, SIGTERM);
    uv_signal_start(&s->sig_int, on_stop_signal, SIGINT);
    uv_signal_start(&s->sig_hup, on_hup, SIGHUP);
    uv_timer_init(&s->loop, &s->oom_timer);
    s->oom_timer.data = s;
    signal(SIGPIPE, SIG_IGN);
    return 0;
}

static void sup_free(struct sup *s)
{
    uv_run(&s->loop, UV_RUN_DEFAULT); /* let the closes finish */
    uv_loop_close(&s->loop);
    for (size_t i = 0; i < s->ncts; i++) {
        struct sct *ct = s->cts[i];
        if (ct->c)
            kago_container_free(ct->c);
        if (ct->rec_fd >= 0)
            close(ct->rec_fd);
        kf_unref(ct->kf);
        free(ct->name);
        free(ct);
    }
    free(s->cts);
    free(s->user_sigs);
    free(s->user_signums);
    if (s->self_netns >= 0)
        close(s->self_netns);
    if (s->dir)
        rmdir(s->dir); /* only when no other supervisor uses it */
    free(s->dir);
    free(s->sockpath);
    free(s->logpath);
}

/* --detach: the caller waits on a pipe for "ok" (or an error line) from the daemonised supervisor. */
static int daemonize(struct sup *s, int *report_fd, struct kago_error **err)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0)
        return kago_error_set(err, errno, "pipe");
    pid_t pid = fork();
    if (pid < 0)
        return kago_error_set(err, errno, "fork");
    if (pid > 0) {
        close(p[1]);
        char buf[4096];
        size_t have = 0;
        ssize_t n;
        /* Up to the first newline: a container's process may hold the pipe's write end open. */
        buf[0] = '\0';
        while (have < sizeof buf - 1 && !memchr(buf, '\n', have)) {
            n = read(p[0], buf + have, sizeof buf - 1 - have);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0)
                break;
            have += (size_t)n;
        }
        buf[have] = '\0';
        close(p[0]);
        if (!strncmp(buf, "ok", 2))
            return 1;
        buf[strcspn(buf, "\n")] = '\0';
        return kago_error_set(err, 0, "%s", have ? buf : "the detached supervisor died while starting");
    }
    close(p[0]);
    setsid();
    if (asprintf(&s->logpath, "%s/%s.log", s->dir, s->cts[0]->name) < 0)
        abort();
    int fd = open(s->logpath, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    int null = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (fd >= 0 && null >= 0) {
        dup2(null, 0);
        dup2(fd, 1);
        dup2(fd, 2);
    }
    if (fd >= 0)
        close(fd);
    if (null >= 0)
        close(null);
    *report_fd = p[1];
    return 0;
}

static void report_start(int *fd, const char *msg)
{
    if (*fd < 0)
        return;
    ssize_t r = write(*fd, msg, strlen(msg));
    (void)r;
    close(*fd);
    *fd = -1;
}

int kago_kagofile_supervise(const struct kago_supervise_opts *opts, struct kago_error **err)
{
    struct kago_kagofile *kf = NULL;
    uint64_t t0 = now_us();
    setvbuf(stdout, NULL, _IOLBF, 0); /* hooks' puts interleave with the log lines in order */
    if (kago_kagofile_load(opts->path, opts->sets, &kf, err) < 0)
        return 1;
    kf->refs = 1;
    struct sup s = {.opts = opts, .self_netns = -1, .verbose = getenv("KAGO_VERBOSE") != NULL};
    if (s.verbose)
        sup_log(&s, "%s: evaluated in %.2f ms (%zu containers)", opts->path, (double)(now_us() - t0) / 1000.0,
                kf->ncts);
    int report_fd = -1, rc = 0;
    if (select_containers(&s, kf, err) < 0 || sup_init(&s, err) < 0) {
        rc = 1;
        goto out;
    }
    kf->sup = &s;
    if (opts->detach) {
        /* The loop has no fds yet besides libuv's own: re-init it in the child. */
        int d = daemonize(&s, &report_fd, err);
        if (d != 0) {
            rc = d > 0 ? 0 : 1;
            shutdown_watchers(&s);
            goto out;
        }
        uv_loop_fork(&s.loop);
    }
    if (sup_control_start(&s, err) < 0) {
        shutdown_watchers(&s);
        rc = 1;
        goto out;
    }
    if (sup_adopt(&s, err) < 0) {
        if (report_fd >= 0) {
            char line[4200];
            snprintf(line, sizeof line, "%s\n", (*err)->msg);
            report_start(&report_fd, line);
        }
        shutdown_watchers(&s);
        rc = 1;
        goto out;
    }
    for (size_t i = 0; i < s.ncts; i++) {
        if (s.cts[i]->running)
            continue; /* adopted */
        if (start_one(&s, s.cts[i], err) < 0) {
            kago_error_prefix(err, "%s", opts->path);
            undo_starts(&s);
            if (report_fd >= 0) {
                char line[4200];
                snprintf(line, sizeof line, "%s\n", (*err)->msg);
                report_start(&report_fd, line);
            }
            rc = 1;
            goto out;
        }
    }
    sup_refresh_watchers(&s);
    report_start(&report_fd, "ok\n");
    uv_run(&s.loop, UV_RUN_DEFAULT);
    rc = s.exit_code;
    if (rc == 0 && s.logpath)
        unlink(s.logpath); /* a detached run's log is kept only when something failed */
out:
    kf->refs--; /* the containers hold theirs */
    if (kf->refs <= 0)
        kago_kagofile_free(kf);
    sup_free(&s);
    return rc;
}
