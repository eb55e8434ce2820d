/* kago serve — instances: the pool's actions carried out on real containers. An instance is a
 * container with its own network namespace holding only loopback; its exit is seen through its
 * pidfd on the event loop, and its traces are removed with kago_container_delete.
 *
 * The CRIU tier (a.checkpoint :after_ready): the app's first ready cold instance is imaged with
 * leave_running into <root>/images/<app>, in libuv's thread pool so the loop keeps serving; later
 * starts restore that image, and fall back to a cold start when the restore fails. */
#include <limits.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <kago/checkpoint.h>

#include "container_int.h"
#include "serve_int.h"
#include "util.h"

#define PROBE_MAX_MS 50
/* Readiness checks are PROBE_FINE_US apart for PROBE_FINE_MS, then 1 ms apart until PROBE_FAST_MS (most apps
 * listen within it), then grow with the time the start has taken (probe_delay), up to PROBE_MAX_MS. */
#define PROBE_FAST_MS 100
#define PROBE_FINE_MS 3
#define PROBE_FINE_US 200
/* Between closing the chosen instance's upstream sockets and imaging it: the app closes its ends
 * (an established TCP socket cannot be dumped without --tcp-established, which kago does not use). */
#define CKPT_SETTLE_MS 100
/* Consecutive restore failures after which the app's image is no longer tried. */
#define RESTORE_MAX_FAILS 3

struct pool_cfg kago__serve_pool_cfg(const struct kago_app *a)
{
    return (struct pool_cfg){
        .lifetime_ms = a->lifetime_ms,
        .idle_ms = a->idle_timeout_ms,
        .start_timeout_ms = a->start_timeout_ms,
        .stop_grace_ms = a->stop_grace_ms,
        .min = a->min_instances,
        .max = a->max_instances,
        .concurrency = a->concurrency,
        .max_pending = a->max_pending,
        .freeze = a->idle_action == KAGO_IDLE_FREEZE,
        .freeze_ms = a->freeze_for_ms,
        .backoff_max_ms = a->max_backoff_ms,
    };
}

static void on_handle_closed(uv_handle_t *h)
{
    struct instance *inst = h->data;
    inst->handles--;
    kago__instance_unref(inst);
}

/* Frees a removed instance once no connection, handle or client refers to it. */
void kago__instance_unref(struct instance *inst)
{
    if (!inst->removed || inst->nconns || inst->handles || inst->refs)
        return;
    free(inst->start_error);
    free(inst);
}

static void probe_now(struct instance *inst)
{
    if (inst->pi && inst->pi->state == POOL_STARTING)
        kago__upconn_open(inst, NULL);
}

static void on_probe_timer(uv_timer_t *t)
{
    probe_now(t->data);
}

static void probe_reset(struct instance *inst)
{
    inst->probe_t0_us = kago__serve_now_us();
}

/* The next probe: PROBE_FINE_US apart in the first PROBE_FINE_MS (a small static server listens a few
 * hundred microseconds after its exec; libuv's timers count whole milliseconds, and one of 1 ms fires 1 to
 * 2 ms later, which was half of such an app's cold start), then 1 ms apart, then a 32nd of the time the
 * start has taken so far (at most PROBE_MAX_MS), so a slow starter is seen ready at most ~3% after it is
 * (a doubling backoff cost a 130 ms Python app 30-50 ms), for one failed connect per interval. */
static unsigned probe_delay(struct instance *inst)
{
    uint64_t elapsed = (kago__serve_now_us() - inst->probe_t0_us) / 1000;
    if (elapsed < PROBE_FAST_MS)
        return 1;
    uint64_t d = elapsed / 32;
    return d < 1 ? 1 : d > PROBE_MAX_MS ? PROBE_MAX_MS : (unsigned)d;
}

static void on_fine(uv_poll_t *h, int status, int events)
{
    struct server *srv = h->data;
    uint64_t n;
    if (read(srv->fine_fd, &n, sizeof(n)) < 0 && errno != EAGAIN)
        return;
    struct instance *inst = srv->fine;
    srv->fine = NULL;
    if (inst)
        probe_now(inst);
}

/* The next probe of inst, after one failed. The timerfd times one instance's: a lone start's (in a storm
 * the probes' CPU would be the other starts', and their latency is the queue's). */
static void probe_later(struct instance *inst)
{
    struct server *srv = inst->app->srv;
    if (srv->fine_fd >= 0 && (!srv->fine || srv->fine == inst) && srv->starting <= 1 && !srv->startq_len &&
        kago__serve_now_us() - inst->probe_t0_us < PROBE_FINE_MS * 1000u) {
        struct itimerspec its = {.it_value.tv_nsec = PROBE_FINE_US * 1000};
        srv->fine = inst;
        timerfd_settime(srv->fine_fd, 0, &its, NULL);
        return;
    }
    uv_timer_start(&inst->probe, on_probe_timer, probe_delay(inst), 0);
}

/* Readiness without socket activation: connect attempts 1 ms apart, then at a growing interval. */
static void start_slot_release(struct instance *inst);

static void weight_ready(struct instance *inst);

void kago__instance_probe_result(struct instance *inst, int status)
{
    if (!inst->pi || inst->removed)
        return;
    if (status == 0) {
        inst->ready = true;
        start_slot_release(inst);
        kago__pool_ready(&inst->app->pool, inst->pi, kago__serve_now_ms());
        weight_ready(inst);             /* (after the held requests went: it writes the state file too) */
        kago__record_write(inst, NULL); /* at once: from now on a new serve adopts it */
        return;
    }
    if (inst->pi->state != POOL_STARTING)
        return;
    inst->probe_fails++;
    inst->probe_err = status;
    probe_later(inst);
}

static void on_exit_event(uv_poll_t *h, int status, int events)
{
    struct instance *inst = h->data;
    uv_poll_stop(h);
    if (inst->pi)
        kago__pool_exited(&inst->app->pool, inst->pi, kago__serve_now_ms());
}

/* The CPU weight of a socket-activated instance that was started for held requests, once its first
 * response was read and relayed: on a quiet machine its cgroup write and state file were 0.26 ms between
 * the connect and the write of its first request (and, moved after the write, they delayed the read of
 * the response as much). */
static void ready_tail(void *arg, void *unused)
{
    (void)unused;
    struct instance *inst = arg;
    inst->ready_tail = false;
    inst->refs--;
    if (!inst->removed && inst->c)
        weight_ready(inst);
    kago__instance_unref(inst);
}

void kago__instance_answered(struct instance *inst)
{
    if (inst->ready_tail && !__atomic_exchange_n(&inst->tail_sent, true, __ATOMIC_ACQ_REL))
        kago__shard_defer(inst->app->srv, ready_tail, inst, NULL);
}

/* An upstream connection failed: if the instance's process is gone, remove it now rather than at
 * the next loop turn, so a retried request does not land on the dead instance again. Returns true
 * when it was removed. */
static void check_exit_deferred(void *inst, void *unused)
{
    (void)unused;
    kago__instance_check_exit(inst);
}

bool kago__instance_check_exit(struct instance *inst)
{
    if (!inst->pi || !inst->c)
        return false;
    struct pollfd p = {.fd = kago_container_pidfd(inst->c), .events = POLLIN};
    if (p.fd < 0 || poll(&p, 1, 0) != 1)
        return false;
    if (kago__shard_self) { /* a request loop: no request goes to it any more, the first loop removes it */
        kago__pool_retire(&inst->app->pool, inst->pi, kago__serve_now_ms());
        kago__shard_defer(inst->app->srv, check_exit_deferred, inst, NULL);
        return true;
    }
    uv_poll_stop(&inst->pidpoll);
    kago__pool_exited(&inst->app->pool, inst->pi, kago__serve_now_ms());
    return true;
}

static bool delete_container(struct instance *inst);

static bool exit_reason(struct instance *inst, const uint64_t *ready_ms, char *buf, size_t n);

/* The container could not be made (or watched): the pool reports it (op_start_failed) with this reason,
 * or with how its process ended when it is gone already (its namespace could not be opened). */
static void start_failed(struct app_rt *a, struct instance *inst, struct kago_error *err)
{
    char why[256];
    free(inst->start_error);
    inst->start_error = xstrdup(exit_reason(inst, NULL, why, sizeof(why)) ? why : err ? err->msg : "failed");
    kago_error_free(err);
    kago__pool_exited(&a->pool, inst->pi, kago__serve_now_ms()); /* removes (and frees) inst */
}

static void ckpt_begin(struct app_rt *a, struct instance *inst);
static void ckpt_resume(struct app_rt *a, struct instance *inst);

/* checkpoint :at_listen. The image maker is not probed by connecting (the connection would be in the
 * image, and the app would have begun serving): kago reads its network namespace's /proc/PID/net/tcp{,6}
 * until the app's port is listening, 1 ms apart at first, and images it then. Nothing can connect to it
 * meanwhile: kago is the only way into the namespace. It is probed and made ready after the dump. */
static void on_listen_timer(uv_timer_t *t)
{
    struct instance *inst = t->data;
    struct app_rt *a = inst->app;
    if (!inst->pi || inst->pi->state != POOL_STARTING || !inst->c)
        return;
    char dir[64];
    snprintf(dir, sizeof(dir), "/proc/%d/net", (int)kago_container_pid(inst->c));
    int r = kago__serve_listening(dir, a->app.port);
    if (r > 0 && a->ckpt == CK_WANT && !a->pool.stopping && !a->removed) {
        ckpt_begin(a, inst);
        return;
    }
    if (r != 0) { /* listening but no image after all (stopping), or /proc unreadable: probe as usual */
        if (a->ckpt_inst == inst)
            a->ckpt_inst = NULL;
        probe_reset(inst);
        kago__upconn_open(inst, NULL);
        return;
    }
    uv_timer_start(&inst->probe, on_listen_timer, probe_delay(inst), 0);
}

void kago__instance_watch(struct instance *inst)
{
    struct server *srv = inst->app->srv;
    uv_poll_init(srv->loop, &inst->pidpoll, kago_container_pidfd(inst->c));
    inst->pidpoll.data = inst;
    uv_poll_start(&inst->pidpoll, UV_READABLE, on_exit_event);
    uv_timer_init(srv->loop, &inst->probe);
    inst->probe.data = inst;
    inst->handles += 2;
    inst->watching = true;
}

/* Ready: the instance gets the CPU weight of its app (the default, 100, when it sets none). */
static void weight_ready(struct instance *inst)
{
    if (!inst->c || inst->pi->tier != POOL_TIER_COLD)
        return;
    struct kago_limits lim = KAGO_LIMITS_UNSET;
    int64_t w = inst->app->app.spec.limits.cpu_weight;
    lim.cpu_weight = w == KAGO_UNSET ? 100 : w;
    struct kago_error *err = NULL;
    if (kago_container_update(inst->c, &lim, &err) < 0) {
        kago__ilog(inst, SLOG_WARN, "cpu weight %lld at ready: %s", (long long)lim.cpu_weight, err->msg);
        kago_error_free(err);
    }
}

/* inst->c runs: watch its exit through its pidfd and probe its readiness. */
static void start_finish(struct app_rt *a, struct instance *inst)
{
    struct server *srv = a->srv;
    struct pool_inst *pi = inst->pi;
    kago__instance_watch(inst);
    srv->total_instances++;
    if (a->app.socket_activation && pi->tier == POOL_TIER_COLD) {
        /* The socket is listening inside the namespace already: connections wait in its backlog. */
        inst->ready = true;
        start_slot_release(inst);
        kago__pool_ready(&a->pool, pi, kago__serve_now_ms());
        kago__record_write(inst, NULL); /* (at once, as every ready: from now on a new serve adopts it) */
        if (inst->conns) {              /* the held requests' connections: the CPU weight once one answered */
            inst->ready_tail = true;
            inst->refs++;
        } else {
            weight_ready(inst);
        }
    } else if (a->app.checkpoint_at_listen && a->ckpt == CK_WANT && !a->ckpt_inst &&
               pi->tier == POOL_TIER_COLD) {
        /* the image maker: watched, not probed, until it is imaged (see on_listen_timer) */
        a->ckpt_inst = inst;
        probe_reset(inst);
        uv_timer_start(&inst->probe, on_listen_timer, 0, 0);
    } else {
        probe_reset(inst);
        kago__upconn_open(inst, NULL);
    }
}

static void create_done(struct app_rt *a, struct instance *inst, struct kago_create *cr)
{
    struct kago_error *err = NULL;
    if (inst->kill_pending) { /* stopped or timed out meanwhile (op_signal killed its child) */
        kago_create_abort(cr);
        kago__pool_exited(&a->pool, inst->pi, kago__serve_now_ms());
    } else if (kago_container_create_finish(cr, &inst->c, &err) < 0) {
        start_failed(a, inst, err);
    } else {
        start_finish(a, inst);
    }
}

static void on_create_event(uv_poll_t *h, int status, int events);

/* Waits for inst->creating's next step: the spawner's answer to its clone, then the child's report. */
static void create_wait(struct instance *inst)
{
    struct kago_create *cr = inst->creating;
    inst->cloning = kago_create_cloning(cr);
    uv_poll_t *h = inst->cloning ? &inst->clonepoll : &inst->createpoll;
    uv_poll_init(inst->app->srv->loop, h, kago_create_fd(cr));
    h->data = inst;
    inst->handles++;
    uv_poll_start(h, UV_READABLE, on_create_event);
}

static void on_create_event(uv_poll_t *h, int status, int events)
{
    struct instance *inst = h->data;
    struct kago_create *cr = inst->creating;
    uv_close((uv_handle_t *)h, on_handle_closed);
    if (inst->cloning) { /* the clone is answered: the rest of begin, then the child's report */
        struct kago_error *err = NULL;
        inst->cloning = false;
        if (kago_create_step(cr, &err) < 0) {
            inst->creating = NULL;
            start_failed(inst->app, inst, err);
            return;
        }
        if (!inst->kill_pending) {
            create_wait(inst);
            return;
        }
    }
    inst->creating = NULL;
    create_done(inst->app, inst, cr);
}

/* A job of the thread pool on inst (a start's kernel half, a checkpoint, a restore) holds it, its app and
 * serve's reaping (srv->jobs: the job's pid may be the one reaped), counted off as soon as it is back;
 * released on the loop once its result is taken. */
static void job_hold(struct instance *inst)
{
    inst->refs++;
    inst->app->refs++;
    inst->app->srv->jobs++;
}

static void job_release(struct instance *inst)
{
    struct app_rt *a = inst->app;
    struct server *srv = a->srv; /* (before a's last unref) */
    inst->refs--;
    kago__instance_unref(inst);
    kago__app_unref(a);
    if (srv->reap_pending)
        kago__server_reap(srv);
    kago__server_maybe_exit(srv);
}

/* The kernel half of a start (its cgroup and limits, the seccomp filter, the user namespace's maps, the
 * state file: about 8 ms of system time at 5,000 instances, growing with them) runs in the thread pool:
 * on the first loop it held every request loop still (the world lock). */
static void create_work(uv_work_t *req)
{
    struct instance *inst = req->data;
    kago__pool_priority(inst->app->srv);
    kago_create_work(inst->creating);
}

static void create_worked(uv_work_t *req, int status);

static void work_next(struct server *srv)
{
    struct instance *inst = STAILQ_FIRST(&srv->workq);
    srv->work_busy = inst != NULL;
    if (!inst)
        return;
    STAILQ_REMOVE_HEAD(&srv->workq, work_link);
    srv->work_req.data = inst;
    uv_queue_work(srv->loop, &srv->work_req, create_work, create_worked);
}

static void create_worked(uv_work_t *req, int status)
{
    (void)status; /* (a queued work is never cancelled) */
    struct instance *inst = req->data;
    struct app_rt *a = inst->app;
    struct server *srv = a->srv;
    struct kago_create *cr = inst->creating;
    work_next(srv); /* (work_req is free again: the next start's) */
    srv->jobs--;
    inst->working = false;
    struct kago_error *err = NULL;
    if (inst->removed) { /* (op_remove left it to us) */
        inst->creating = NULL;
        kago_create_abort(cr);
        kago__record_remove(inst); /* (no container yet: nothing else keeps the record) */
    } else if (kago_create_step(cr, &err) < 0) {
        inst->creating = NULL;
        start_failed(a, inst, err);
    } else if (inst->kill_pending) {
        inst->creating = NULL;
        create_done(a, inst, cr);
    } else {
        create_wait(inst);
    }
    job_release(inst);
}

static void create_offload(struct instance *inst)
{
    struct app_rt *a = inst->app;
    struct server *srv = a->srv;
    inst->working = true;
    job_hold(inst);
    STAILQ_INSERT_TAIL(&srv->workq, inst, work_link);
    if (!srv->work_busy)
        work_next(srv);
}

static void range_key(char *key, size_t n, const struct app_rt *a)
{
    snprintf(key, n, "serve:%s/%s", a->srv->opts.root, a->app.name); /* kago__userns_alloc's form */
}

/* Whether a's instances get a range of the pool (their spec's own maps or joined namespaces: not). */
static bool wants_range(const struct app_rt *a)
{
    const struct kago_spec *s = &a->app.spec;
    bool joins = false;
    for (int i = 0; i < KAGO_NS_COUNT; i++)
        joins |= s->join_ns[i] != NULL;
    return s->userns == KAGO_USERNS_AUTO && !s->nuidmap && !joins && !s->userns_key &&
           !kago__app_criu(&a->app);
}

/* At load: a start then reads no record (with 10,000 apps it is ~0.5 MB, read and scanned per start). */
void kago__apps_take_ranges(struct server *srv)
{
    size_t n = 0;
    for (struct app_rt *a = srv->apps; a; a = a->next)
        n += !a->ranged && !a->removed && wants_range(a);
    if (!n)
        return;
    cleanup_free struct app_rt **apps = xcalloc(n, sizeof *apps);
    cleanup_free char **keys = xcalloc(n, sizeof *keys);
    cleanup_free struct kago_idmap *u = xcalloc(n, sizeof *u), *g = xcalloc(n, sizeof *g);
    n = 0;
    for (struct app_rt *a = srv->apps; a; a = a->next)
        if (!a->ranged && !a->removed && wants_range(a)) {
            char key[PATH_MAX + 300];
            range_key(key, sizeof key, a);
            apps[n] = a;
            keys[n++] = xstrdup(key);
        }
    struct kago_error *err = NULL;
    int left = kago__userns_alloc_many((const char *const *)keys, n, u, g, &err);
    for (size_t i = 0; left >= 0 && i < n; i++)
        if (u[i].count) {
            apps[i]->ranged = true;
            apps[i]->uid = u[i];
            apps[i]->gid = g[i];
        }
    if (left) { /* each start of the others tries again, and its failure says why */
        if (left > 0)
            kago__slog(srv, SLOG_WARN, NULL, NULL, "%d of %zu apps have no user namespace range yet: %s",
                       left, n, err->msg);
        else
            kago__slog(srv, SLOG_WARN, NULL, NULL, "%s", err->msg);
        kago_error_free(err);
    }
    for (size_t i = 0; i < n; i++)
        free(keys[i]);
}

#define START_CPU_WEIGHT 10 /* (v1: cpu.shares 102 against the default 1024) */

/* App a's spec as a cold start of it begins (shallow: create copies what it keeps): a network namespace of
 * its own always, and a user namespace when it has a range of its own (taken at load). */
static struct kago_spec cold_spec(const struct app_rt *a)
{
    struct kago_spec spec = a->app.spec;
    spec.ns |= 1u << KAGO_NS_NET | (a->ranged ? 1u << KAGO_NS_USER : 0);
    spec.join_ns[KAGO_NS_NET] = NULL;
    return spec;
}

/* Whether a cold start of app a is made by a shim, detached (one that may be imaged by CRIU). */
static bool cold_detached(const struct app_rt *a)
{
    return kago__app_criu(&a->app) && a->srv->criu_ok;
}

bool kago__app_warm_flags(const struct app_rt *a, uint64_t *flags)
{
    struct kago_spec spec = cold_spec(a);
    return !a->removed && !cold_detached(a) && kago__warm_key(&spec, flags);
}

static void start_cold(struct app_rt *a, struct instance *inst)
{
    struct server *srv = a->srv;
    inst->pi->tier = POOL_TIER_COLD;
    struct kago_spec spec = cold_spec(a);
    spec.name = inst->name;
    /* the app's user namespace range, the same for each of its instances and across serve restarts */
    char key[PATH_MAX + 300];
    range_key(key, sizeof key, a);
    if (a->ranged) { /* (taken at load) */
        spec.uidmap = &a->uid;
        spec.gidmap = &a->gid;
        spec.nuidmap = spec.ngidmap = 1;
    }
    if (!spec.userns_key && (a->ranged || !spec.nuidmap))
        spec.userns_key = key;
    struct kago_mount mounts[64];
    if (kago__app_criu(&a->app)) {
        spec.userns = KAGO_USERNS_HOST; /* a CRIU image keeps no idmapped mount (docs/userns.md) */
        /* nor the cgroup mount: a restored instance's cgroup is a new one, its image binds the old one */
        size_t n = 0;
        for (size_t i = 0; i < spec.nmounts && n < sizeof mounts / sizeof mounts[0]; i++)
            if (spec.mounts[i].kind != KAGO_MOUNT_CGROUP)
                mounts[n++] = spec.mounts[i];
        if (n < spec.nmounts && spec.nmounts <= sizeof mounts / sizeof mounts[0]) {
            spec.mounts = mounts;
            spec.nmounts = n;
        }
    }
    spec.listen_port = a->app.socket_activation ? a->app.port : 0;
    /* until it is ready, a start yields the CPU to the instances that serve (its weight is set at ready) */
    spec.limits.cpu_weight = START_CPU_WEIGHT;
    int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
    /* orphan: the instance outlives a serve that is killed (no parent-death signal), and the next serve
     * adopts or removes it (adopt.c) */
    /* async: the loop goes on while the spawner clones (it waited 1.6 ms per start for the answer) */
    /* offload: and, while other starts are in flight, the kernel half of the start in the thread pool
     * (create_work): a lone start does it here, sparing the thread hop (0.3-0.8 ms of its first byte) */
    struct kago_spawn_opts opts = {
        .stdio = {devnull, -1, -1}, .orphan = true, .async = true, .offload = srv->starting > 1};
    /* An instance that may be imaged: CRIU cannot dump an fd of a host file outside the container
     * (serve's log), /dev/null it can; and its init must not carry serve's parent-death signal, which
     * CRIU restores and which fires as soon as criu, the restored tree's first parent, exits. Detached,
     * a shim is its parent (reaped by kago__server_reap once it exits). */
    int logfds[3] = {-1, -1, -1};
    if (cold_detached(a)) {
        opts.stdio[1] = opts.stdio[2] = devnull;
        opts.detach = true;
    } else { /* its output recorded per app (logs.c); on failure it goes to serve's stderr as before */
        kago__logs_open(inst, logfds);
        for (int i = 1; i < 3; i++)
            if (logfds[i] >= 0)
                opts.stdio[i] = logfds[i];
    }
    struct kago_error *err = NULL;
    struct kago_create *cr = NULL;
    const char *warm_cg = NULL;
    if (!opts.detach && (opts.warm = kago__warm_take(srv, &spec, &warm_cg))) /* (warm.c) */
        spec.cgroup_path = (char *)warm_cg;
    int r = kago_container_create_begin(srv->opts.root, &spec, &opts, &cr, &err);
    if (opts.warm)
        kago__warm_settle(srv, opts.warm, r == 0, r < 0 ? -1 : kago_create_pid(cr));
    if (devnull >= 0)
        close(devnull);
    for (int i = 1; i < 3; i++) /* the child has its copies */
        if (logfds[i] >= 0)
            close(logfds[i]);
    if (r < 0) {
        start_failed(a, inst, err);
    } else if (kago_create_cloning(cr)) {
        inst->creating = cr;
        create_offload(inst);
    } else if (kago_create_fd(cr) < 0) { /* made by a shim: complete already */
        create_done(a, inst, cr);
    } else {
        inst->creating = cr;
        create_wait(inst);
    }
}

/* A restore runs criu (a second or more under emulation) in the thread pool, so the loop keeps serving
 * the other apps; the instance stays STARTING meanwhile. */
struct restore_job {
    uv_work_t req;
    struct instance *inst;
    const char *root;
    char *dir;
    struct kago_container *c;
    struct kago_error *err;
    uint64_t us;
};

static void restore_work(uv_work_t *req)
{
    struct restore_job *j = req->data;
    kago__pool_priority(j->inst->app->srv);
    struct kago_restore_opts ro = {.name = j->inst->name};
    uint64_t t0 = kago__serve_now_us();
    if (kago_container_restore(j->root, j->dir, &ro, &j->c, &j->err) < 0)
        j->c = NULL;
    j->us = kago__serve_now_us() - t0;
}

static void restore_done(uv_work_t *req, int status)
{
    struct restore_job *j = req->data;
    struct instance *inst = j->inst;
    struct app_rt *a = inst->app;
    struct server *srv = a->srv;
    srv->jobs--;
    inst->restoring = false;
    inst->c = j->c;
    if (inst->c) {
        a->restore_fail_streak = 0;
        kago__slog(srv, SLOG_INFO, a->app.name, inst->name, "restored %s from %s in %.1f ms", inst->name,
                   j->dir, j->us / 1000.0);
    } else {
        a->pool.restore_failures++;
        kago__slog(srv, SLOG_WARN, a->app.name, inst->name, "restore failed, cold start instead: %s",
                   j->err ? j->err->msg : uv_strerror(status));
        /* a broken image would cost every start a failed criu run: give up on it */
        if (++a->restore_fail_streak >= RESTORE_MAX_FAILS && a->ckpt == CK_READY) {
            a->ckpt = CK_FAILED;
            kago__slog(srv, SLOG_WARN, a->app.name, NULL,
                       "%u restores failed in a row: cold starts from now on", a->restore_fail_streak);
        }
    }
    kago_error_free(j->err);
    free(j->dir);
    free(j);
    if (!inst->pi) { /* removed meanwhile (shutdown) */
        if (delete_container(inst))
            kago__record_remove(inst);
    } else if (inst->kill_pending)
        kago__pool_exited(&a->pool, inst->pi, kago__serve_now_ms()); /* stopped or timed out meanwhile */
    else if (inst->c)
        start_finish(a, inst);
    else
        start_cold(a, inst); /* the held request is served all the same */
    job_release(inst);
}

/* A start of an app with an image restores it (or falls back to a cold start). */
static bool start_restore(struct app_rt *a, struct instance *inst)
{
    if (a->ckpt != CK_READY || !kago__app_criu(&a->app))
        return false;
    struct restore_job *j = xcalloc(1, sizeof(*j));
    j->inst = inst;
    j->root = a->srv->opts.root;
    j->dir = kago__app_image_dir(a, a->pool.generation);
    j->req.data = j;
    inst->pi->tier = POOL_TIER_RESTORE;
    inst->restoring = true;
    job_hold(inst);
    uv_queue_work(a->srv->loop, &j->req, restore_work, restore_done);
    return true;
}

static bool name_taken(struct server *srv, const char *name)
{
    cleanup_free char *dir = xasprintf("%s/%s", srv->opts.root, name);
    cleanup_free char *rec = xasprintf("%s/.serve/%s", srv->opts.root, name);
    return access(dir, F_OK) == 0 || access(rec, F_OK) == 0;
}

/* The start queue. A start is mostly CPU time of this machine (clone, namespaces, mounts, cgroup, then the
 * app's own boot): past a few at once every start only gets slower. So at most --max-starting instances
 * are between their create and ready (or their end), machine-wide; the others wait in the order they were
 * asked for and are started from startq_timer, outside the pool's calls into us. */
static void on_startq_timer(uv_timer_t *t);

static void start_now(struct app_rt *a, struct instance *inst)
{
    /* before the container exists: a serve killed during the create leaves it (not before: a storm of
     * queued starts would write thousands of records in one turn of the loop, for nothing made yet) */
    inst->start_slot = true;
    a->srv->starting++;
    struct kago_error *err = NULL;
    if (kago__record_write(inst, &err) <
        0) /* (untracked, a killed serve's instance would be left for good) */
        start_failed(a, inst, err);
    else if (!start_restore(a, inst))
        start_cold(a, inst);
}

static void startq_kick(struct server *srv)
{
    if (!STAILQ_EMPTY(&srv->startq) && (srv->starting < srv->opts.max_starting || srv->startq_killed))
        uv_timer_start(&srv->startq_timer, on_startq_timer, 0, 0);
}

static void startq_unlink(struct server *srv, struct instance *inst)
{
    STAILQ_REMOVE(&srv->startq, inst, instance, startq_link);
    inst->queued = false;
    if (inst->pi)
        inst->pi->queued = false;
    srv->startq_len--;
    if (inst->kill_pending)
        srv->startq_killed--;
}

/* Ready, or removed: its place goes to the next in the queue. */
static void start_slot_release(struct instance *inst)
{
    if (!inst->start_slot)
        return;
    inst->start_slot = false;
    inst->app->srv->starting--;
    startq_kick(inst->app->srv);
}

static void on_startq_timer(uv_timer_t *t)
{
    struct server *srv = t->data;
    /* stopped while waiting (timed out, shutdown, app removed): nothing was made, it just leaves */
    for (struct instance *i = STAILQ_FIRST(&srv->startq), *next; i && srv->startq_killed; i = next) {
        next = STAILQ_NEXT(i, startq_link);
        if (i->kill_pending) {
            startq_unlink(srv, i);
            if (i->pi)
                kago__pool_exited(&i->app->pool, i->pi, kago__serve_now_ms());
        }
    }
    while (!STAILQ_EMPTY(&srv->startq) && srv->starting < srv->opts.max_starting) {
        struct instance *i = STAILQ_FIRST(&srv->startq);
        startq_unlink(srv, i);
        i->pi->created = kago__serve_now_ms(); /* its start timeout counts from here, not from the wait */
        kago__app_touched(i->app);             /* (which the tick times) */
        start_now(i->app, i);
    }
    kago__server_maybe_exit(srv);
}

static void op_start(struct pool *p, struct pool_inst *pi);

/* (pi stays in the pool meanwhile: only the first loop removes an instance, and it takes this first) */
static void op_start_deferred(void *p, void *pi)
{
    op_start(p, pi);
}

static void op_start(struct pool *p, struct pool_inst *pi)
{
    struct app_rt *a = p->data;
    if (kago__shard_self) { /* a request loop's request: the start queue and the spawner are the first loop's
                             */
        kago__shard_defer(a->srv, op_start_deferred, p, pi);
        return;
    }
    struct instance *inst = xcalloc(1, sizeof(*inst));
    inst->app = a;
    inst->pi = pi;
    inst->created_ms = kago__serve_now_ms();
    pi->data = inst;
    /* <app>-<root tag>-<pid>-<n>: unique on the host while this serve runs, and never a name left in the
     * root by an earlier serve of the same pid (the cgroup is kago/<name>) */
    do
        snprintf(inst->name, sizeof(inst->name), "%s-%04x-%x-%llu",
                 a->app.spec.name ? a->app.spec.name : a->app.name, a->srv->root_tag, (unsigned)getpid(),
                 (unsigned long long)++a->seq);
    while (name_taken(a->srv, inst->name));
    inst->def_hash = a->def_hash;
    struct server *srv = a->srv;
    if (srv->starting < srv->opts.max_starting && STAILQ_EMPTY(&srv->startq)) {
        start_now(a, inst);
        return;
    }
    inst->queued = pi->queued = true;
    kago__loops_storm(srv, true); /* (at once: a storm shorter than a tick raises them too) */
    STAILQ_INSERT_TAIL(&srv->startq, inst, startq_link);
    srv->startq_len++;
}

static void op_dispatch(struct pool *p, struct pool_waiter *w, struct pool_inst *pi)
{
    struct client *c = container_of(w, struct client, waiter);
    c->cold_us = (int64_t)(kago__serve_now_us() - c->t_held);
    c->cold_kind = pi->thaw_us >= 0 ? "thaw" : pi->tier == POOL_TIER_RESTORE ? "restore" : NULL;
    pi->thaw_us = -1;
    kago__client_attach(c, pi);
}

static void op_reject(struct pool *p, struct pool_waiter *w, int status)
{
    struct client *c = container_of(w, struct client, waiter);
    if (status)
        kago__client_reject(c, status);
    else
        kago__client_reroute(c);
}

static void op_drain(struct pool *p, struct pool_inst *pi)
{
    struct instance *inst = pi->data;
    while (inst->idle) {
        struct upconn *u = kago__upconn_get(inst);
        kago__upconn_close(u);
    }
}

/* Signals in slices. Stopping thousands of instances at once (SIGTERM to serve, their stop graces ending in
 * one tick) signalled each in one turn of the first loop: 26 us apiece for a SIGTERM to every process of
 * its cgroup, and 145 us for a SIGKILL to its init, whose dying namespace then runs in serve's place (0.4 s
 * of one turn for 3,000). The loop signals for at most SIGNAL_INLINE_US a turn; the rest are sent in the
 * next turns (sig_idle), in order, at least one a turn. */
#define SIGNAL_INLINE_US 5000

static bool signal_inline(struct server *srv)
{
    uint64_t turn = uv_now(srv->loop);
    if (turn != srv->sig_turn) {
        srv->sig_turn = turn;
        srv->sig_spent_us = 0;
    }
    return STAILQ_EMPTY(&srv->sigq) && srv->sig_spent_us < srv->sig_inline_us;
}

/* Whether stop signal sig cannot end inst (kago_container_stop_futile); a frozen one acts on nothing yet. */
static bool stop_futile(struct instance *inst, int sig)
{
    return inst->pi && inst->pi->state != POOL_FROZEN && kago_container_stop_futile(inst->c, sig);
}

static void signal_send(struct instance *inst, int sig, bool all)
{
    struct server *srv = inst->app->srv;
    struct kago_error *err = NULL;
    uint64_t t0 = kago__serve_now_us();
    if (stop_futile(inst, sig)) { /* what sig's default action does to any other process: it ends now */
        sig = SIGKILL;
        all = false;
        inst->app->pool.stops_at_once++;
    }
    if (kago_container_kill(inst->c, sig, all, &err) < 0) {
        if (all || kago_container_status(inst->c) != KAGO_STOPPED) /* (init gone: its exit is on its way) */
            kago__ilog(inst, SLOG_ERR, "%s", err->msg);
        kago_error_free(err);
    }
    srv->sig_spent_us += kago__serve_now_us() - t0;
}

static struct instance *signal_next(struct server *srv)
{
    struct instance *inst = STAILQ_FIRST(&srv->sigq);
    STAILQ_REMOVE_HEAD(&srv->sigq, sig_link);
    inst->sig_queued = false;
    inst->refs--;
    return inst;
}

static void on_signal_idle(uv_idle_t *h)
{
    struct server *srv = h->data;
    srv->sig_turn = uv_now(srv->loop);
    srv->sig_spent_us = 0;
    do {
        struct instance *inst = signal_next(srv);
        if (!inst->removed && inst->c) /* (a removed one was killed with its delete) */
            signal_send(inst, inst->sig_pending, inst->sig_all);
        kago__instance_unref(inst);
    } while (!STAILQ_EMPTY(&srv->sigq) && srv->sig_spent_us < srv->sig_inline_us);
    if (STAILQ_EMPTY(&srv->sigq)) {
        uv_idle_stop(h);
        kago__server_maybe_exit(srv);
    }
}

static void op_signal(struct pool *p, struct pool_inst *pi, int sig)
{
    struct instance *inst = pi->data;
    if (inst->queued) { /* not begun: it leaves the queue from startq_timer */
        if (!inst->kill_pending) {
            inst->kill_pending = true;
            inst->app->srv->startq_killed++;
            startq_kick(inst->app->srv);
        }
        return;
    }
    if (inst->restoring || inst->creating) { /* ends it once made: see restore_done, create_done */
        inst->kill_pending = true;
        /* (working: create_worked sees kill_pending once the work is done, and the create goes) */
        pid_t pid = inst->creating && !inst->working ? kago_create_pid(inst->creating) : -1;
        if (pid > 0) /* no app runs yet to stop gracefully: cut the setup short */
            kill(pid, SIGKILL);
        return;
    }
    if (!inst->c)
        return;
    struct server *srv = inst->app->srv;
    const struct kago_spec *spec = kago_container_spec(inst->c);
    if (sig == SIGTERM && spec->stop_signal > 0) /* the app's own graceful stop (an image's StopSignal) */
        sig = spec->stop_signal;
    /* SIGKILL to an instance with a pid namespace of its own goes to its init alone (one pidfd call: the
     * kernel kills the rest as the namespace ends), not to each process of its cgroup (on v1 a read of
     * cgroup.procs and a freezer write, 0.24 ms: 0.7 s of one tick when 3,000 stop graces ended at once).
     * A frozen one, whose tasks act on SIGKILL only once thawed, goes through its cgroup. */
    bool own_pidns = (spec->ns & (1u << KAGO_NS_PID)) && !spec->join_ns[KAGO_NS_PID];
    bool all = !(sig == SIGKILL && own_pidns && pi->state != POOL_FROZEN);
    if (inst->sig_queued) { /* SIGKILL replaces what waits, nothing replaces SIGKILL */
        if (sig == SIGKILL || inst->sig_pending != SIGKILL) {
            inst->sig_pending = sig;
            inst->sig_all = all;
        }
        return;
    }
    if (signal_inline(srv)) {
        signal_send(inst, sig, all);
        return;
    }
    inst->sig_queued = true;
    inst->sig_pending = sig;
    inst->sig_all = all;
    inst->refs++;
    STAILQ_INSERT_TAIL(&srv->sigq, inst, sig_link);
    uv_idle_start(&srv->sig_idle, on_signal_idle);
}

/* Returns false when something of it may be left (then its record stays, for the next serve). */
static bool delete_reported(struct instance *inst, bool ok, struct kago_error *err)
{
    if (!ok) {
        kago__ilog(inst, SLOG_ERR, "%s", err->msg);
        kago_error_free(err);
    }
    kago_container_free(inst->c);
    inst->c = NULL;
    return ok;
}

static bool delete_container(struct instance *inst)
{
    if (!inst->c)
        return true;
    struct kago_error *err = NULL;
    return delete_reported(inst, kago_container_delete(inst->c, true, &err) == 0, err);
}

/* Removals off the loop. A container's delete is a few rmdirs (one per cgroup v1 hierarchy), each waiting
 * for the kernel's cgroup lock, which the kernel's own workers hold while they take down the cgroups removed
 * before (with thousands of instances, each such teardown walks every filesystem's shrinker): one rmdir then
 * sleeps for up to a second. When thousands of instances ended at once (SIGTERM, a storm's idle timeouts)
 * the first loop spent 12 s in one turn on them, and nothing else was answered, the admin API included; and
 * deleting on the loop only a few milliseconds' worth a turn still left single rmdirs asleep there for
 * 250 ms. So every delete is done in libuv's thread pool, one at a time in a FIFO (in parallel they would
 * only queue on that lock); its record is removed and its logs closed on the loop once it is done.
 * In the thread pool: the container alone (nothing else of the instance is touched there). */
static void delete_work(uv_work_t *w)
{
    struct server *srv = w->data;
    kago__pool_priority(srv); /* (a pool thread made by a raised loop would delete above the instances) */
    srv->del_ok = kago_container_delete(srv->del_inst->c, true, &srv->del_err) == 0;
}

/* On the loop, once the container is deleted (gone), or its delete failed: its record stays, for the next
 * serve. */
static void delete_done(struct instance *inst, bool gone)
{
    struct app_rt *a = inst->app;
    kago__logs_close(inst, false); /* (after the delete, as in op_remove) */
    if (gone)
        kago__record_remove(inst);
    inst->refs--;
    kago__app_unref(a);
    kago__instance_unref(inst);
}

static struct instance *delete_next(struct server *srv)
{
    struct instance *inst = STAILQ_FIRST(&srv->delq);
    STAILQ_REMOVE_HEAD(&srv->delq, del_link);
    srv->ndeleting--;
    return inst;
}

static void delete_worked(uv_work_t *w, int status);

static void delete_start(struct server *srv)
{
    if (srv->del_busy || STAILQ_EMPTY(&srv->delq))
        return;
    srv->del_inst = delete_next(srv);
    srv->del_busy = true;
    srv->del_req.data = srv;
    uv_queue_work(srv->loop, &srv->del_req, delete_work, delete_worked);
}

static void delete_worked(uv_work_t *w, int status)
{
    (void)status;
    struct server *srv = w->data;
    struct instance *inst = srv->del_inst;
    srv->del_busy = false;
    srv->del_inst = NULL;
    delete_done(inst, delete_reported(inst, srv->del_ok, srv->del_err));
    srv->del_err = NULL;
    delete_start(srv);
    if (!srv->del_busy)
        kago__server_maybe_exit(srv);
}

/* The loop has ended (a hand-over or a failure ends it without waiting for the queues): signals not sent
 * are dropped; the delete in the pool is awaited, the rest deleted here, and every removal from now on too.
 */
void kago__instance_queues_end(struct server *srv)
{
    while (!STAILQ_EMPTY(&srv->sigq)) /* (every instance is removed below, killed with its delete) */
        kago__instance_unref(signal_next(srv));
    srv->del_sync = true;
    while (srv->del_busy)
        uv_run(srv->loop, UV_RUN_ONCE);
    while (!STAILQ_EMPTY(&srv->delq)) {
        struct instance *inst = delete_next(srv);
        delete_done(inst, delete_container(inst));
    }
}

void kago__instance_queues_init(struct server *srv)
{
    const char *inl = getenv("KAGO_SERVE_SIGNAL_INLINE_US"); /* (tests: 0, one signal a turn) */
    srv->sig_inline_us = inl && *inl ? strtoull(inl, NULL, 10) : SIGNAL_INLINE_US;
    STAILQ_INIT(&srv->startq);
    STAILQ_INIT(&srv->workq);
    STAILQ_INIT(&srv->delq);
    STAILQ_INIT(&srv->sigq);
    uv_idle_init(srv->loop, &srv->sig_idle);
    srv->sig_idle.data = srv;
    /* (without it, probes are a millisecond apart at least) */
    srv->fine_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (srv->fine_fd >= 0) {
        uv_poll_init(srv->loop, &srv->fine_poll, srv->fine_fd);
        srv->fine_poll.data = srv;
        uv_poll_start(&srv->fine_poll, UV_READABLE, on_fine);
        uv_unref((uv_handle_t *)&srv->fine_poll);
    }
}

static void delete_later(struct instance *inst)
{
    struct server *srv = inst->app->srv;
    inst->refs++;
    inst->app->refs++; /* (an app removed by a reload is freed only after) */
    STAILQ_INSERT_TAIL(&srv->delq, inst, del_link);
    srv->ndeleting++;
    delete_start(srv);
}

static void op_remove(struct pool *p, struct pool_inst *pi)
{
    struct instance *inst = pi->data;
    struct app_rt *a = p->data;
    /* handed over to a new serve (upgrade.c): it runs on, recorded, for the new serve to adopt */
    bool leave = kago__upgrade_leaves(inst);
    if (leave)
        kago__record_write(inst, NULL);
    if (inst->queued)
        startq_unlink(a->srv, inst);
    start_slot_release(inst);
    inst->pi = NULL;
    inst->removed = true;
    /* Clients on it: a request not yet sent is tried elsewhere, a response begun is cut (502 if nothing of it
     * went out). A request sent and not answered yet is left to its connection's own end, which comes (the
     * instance's processes are gone): EOF, the app had it (502), or a reset of a request it never read (sent
     * again), as when its socket's end is seen before the exit (with request loops, the first loop may see
     * the exit first). */
    for (;;) {
        struct upconn *u = inst->conns;
        while (u && u->client && u->client->state == C_PROXY && !u->client->resp_started && !u->closing)
            u = u->next;
        if (!u)
            break;
        struct client *c = u->client;
        if (c && c->state == C_TUNNEL) {
            kago__client_resp_truncated(c);
        } else if (c && c->resp_started) {
            kago__client_resp_truncated(c);
        } else if (c) {
            kago__client_upstream_failed(c, UV_ECONNRESET);
        }
        kago__upconn_close(u);
    }
    if (a->ckpt_inst == inst && !inst->ckpt_busy)
        a->ckpt_inst = NULL; /* chosen, not begun: the next ready instance is imaged instead */
    bool gone = true, later = false;
    if (leave) {
        kago_container_free(inst->c);
        inst->c = NULL;
        gone = false;
    } else if (!inst->ckpt_busy) { /* else the checkpoint's end deletes it */
        later = inst->c && !inst->creating && !inst->restoring && !inst->working && !a->srv->del_sync;
        if (!later)
            gone = delete_container(inst);
    }
    if (inst->creating && !inst->working) { /* removed while its child sets up: kill it, remove its traces */
        kago_create_abort(inst->creating);
        inst->creating = NULL;
        uv_close((uv_handle_t *)(inst->cloning ? &inst->clonepoll : &inst->createpoll), on_handle_closed);
    }
    if (later) {
        delete_later(inst);
    } else {
        kago__logs_close(inst, leave); /* after the delete: what its processes wrote is all in the FIFOs */
        if (gone && !inst->ckpt_busy && !inst->restoring && !inst->working) /* (else when that ends) */
            kago__record_remove(inst);
    }
    if (inst->watching) {
        inst->watching = false;
        if (inst->app->srv->fine == inst) /* (its timerfd then fires for nothing) */
            inst->app->srv->fine = NULL;
        uv_close((uv_handle_t *)&inst->pidpoll, on_handle_closed);
        uv_close((uv_handle_t *)&inst->probe, on_handle_closed);
    }
    kago__instance_unref(inst);
}

/* Idle :freeze. The freezer waits until every task is stopped (ms on this host), so the memory read
 * after it is what the instance holds while frozen: it cannot change until the thaw. */
static int op_freeze(struct pool *p, struct pool_inst *pi)
{
    struct instance *inst = pi->data;
    struct kago_error *err = NULL;
    if (!inst->c || kago_container_pause(inst->c, true, &err) < 0) {
        kago__ilog(inst, SLOG_WARN, "freeze failed, stopping it instead: %s",
                   err ? err->msg : "no container");
        kago_error_free(err);
        return -1;
    }
    if (kago_container_stats(inst->c, &inst->stats, &err) < 0)
        kago_error_free(err);
    pi->frozen_bytes = inst->stats.memory_current > 0 ? (uint64_t)inst->stats.memory_current : 0;
    return 0;
}

/* On the request path: one write to the freezer; its tasks run again before it returns. */
static int op_thaw(struct pool *p, struct pool_inst *pi)
{
    struct instance *inst = pi->data;
    struct kago_error *err = NULL;
    uint64_t t0 = kago__serve_now_us();
    if (!inst->c || kago_container_pause(inst->c, false, &err) < 0) {
        kago__ilog(inst, SLOG_WARN, "thaw failed, killing it: %s", err ? err->msg : "no container");
        kago_error_free(err);
        return -1;
    }
    uint64_t us = kago__serve_now_us() - t0;
    return us > INT32_MAX ? INT32_MAX : (int)us;
}

/* "10 s", "1.5 s", "250 ms" */
static const char *fmt_ms(char *buf, size_t n, uint64_t ms)
{
    if (ms < 1000)
        snprintf(buf, n, "%llu ms", (unsigned long long)ms);
    else if (ms % 1000 == 0)
        snprintf(buf, n, "%llu s", (unsigned long long)(ms / 1000));
    else
        snprintf(buf, n, "%.1f s", ms / 1000.0);
    return buf;
}

/* Why inst, whose process exited, failed: how it ended, if it was kago's child, and when: before it was
 * ready, or (ready_ms: how long) after. Returns false when its process has not exited (or that cannot be
 * told). */
static bool exit_reason(struct instance *inst, const uint64_t *ready_ms, char *buf, size_t n)
{
    siginfo_t si = {0};
    int fd = inst->c ? kago_container_pidfd(inst->c) : -1;
    char when[64] = " before it became ready";
    if (ready_ms)
        snprintf(when, sizeof(when), " %.1f s after it became ready", (double)*ready_ms / 1000.0);
    snprintf(buf, n, "it exited%s", when);
    if (fd < 0 ||
        waitid((idtype_t)3 /* P_PIDFD, Linux 5.4 */, (id_t)fd, &si, WEXITED | WNOHANG | WNOWAIT) < 0 ||
        si.si_pid == 0)
        return false;
    if (si.si_code == CLD_EXITED)
        snprintf(buf, n, "it exited with status %d%s%s", si.si_status, when,
                 si.si_status == 127   ? " (command not found?)"
                 : si.si_status == 126 ? " (not executable?)"
                                       : "");
    else
        snprintf(buf, n, "it was killed by signal %d (%s)%s", si.si_status, strsignal(si.si_status), when);
    return true;
}

/* What was waited for when a start timed out: the setup, the restore, the port, or connects. */
static void timeout_reason(struct app_rt *a, struct instance *inst, char *buf, size_t n)
{
    char t[32];
    fmt_ms(t, sizeof(t), a->pool.cfg.start_timeout_ms);
    unsigned port = a->app.port;
    if (inst->creating)
        snprintf(buf, n, "never became ready in %s: its container was still being set up", t);
    else if (inst->restoring)
        snprintf(buf, n, "never became ready in %s: its restore from %s was still running", t, a->image_root);
    else if (a->ckpt_inst == inst && a->app.checkpoint_at_listen)
        snprintf(buf, n, "never became ready in %s: nothing listened on port %u inside its network namespace",
                 t, port);
    else if (inst->probe_fails)
        snprintf(
            buf, n,
            "never became ready in %s: no answer on 127.0.0.1:%u inside its network namespace (%s %u times)",
            t, port, uv_strerror(inst->probe_err), inst->probe_fails);
    else
        snprintf(buf, n, "never became ready in %s: no answer on 127.0.0.1:%u inside its network namespace",
                 t, port);
}

/* One line per failed start: the reason, and how long the app backs off; the reason is kept for the
 * 503s answered meanwhile and for /ps. */
static void op_start_failed(struct pool *p, struct pool_inst *pi, enum pool_fail why, uint64_t delay_ms)
{
    struct instance *inst = pi->data;
    struct app_rt *a = p->data;
    char reason[640 + LOGFMT_TAIL_MAX + 32], d[32];
    if (inst->start_error)
        snprintf(reason, sizeof(reason), "%s", inst->start_error);
    else if (why == POOL_FAIL_TIMEOUT)
        timeout_reason(a, inst, reason, sizeof(reason));
    else if (why == POOL_FAIL_CRASHED)
        exit_reason(inst, &(uint64_t){kago__serve_now_ms() - pi->ready_at}, reason, sizeof(reason));
    else
        exit_reason(inst, NULL, reason, sizeof(reason));
    const char *tail = kago__logs_tail(inst);
    if (*tail) {
        size_t n = strlen(reason);
        snprintf(reason + n, sizeof(reason) - n, "; it printed last: \"%s\"", tail);
    }
    free(a->start_error);
    a->start_error = xstrdup(reason);
    kago__slog(a->srv, SLOG_ERR, a->app.name, inst->name, "instance %s %s (%u in a row): %s; %s%s%s",
               inst->name, why == POOL_FAIL_CRASHED ? "crashed" : "failed to start", p->fail_streak, reason,
               delay_ms ? "next start in " : "started again at once",
               delay_ms ? fmt_ms(d, sizeof(d), delay_ms) : "", delay_ms ? " at the earliest" : "");
}

static void app_wake_deferred(void *a, void *unused)
{
    (void)unused;
    kago__app_wake(a);
}

static void op_woken(struct pool *p)
{
    struct app_rt *a = p->data;
    kago__shard_defer(a->srv, app_wake_deferred, a, NULL); /* (the tick's list is the first loop's) */
}

static void op_touched(struct pool *p)
{
    kago__app_touched(p->data);
}

const struct pool_ops kago__serve_pool_ops = {
    .start = op_start,
    .dispatch = op_dispatch,
    .reject = op_reject,
    .drain = op_drain,
    .signal = op_signal,
    .remove = op_remove,
    .freeze = op_freeze,
    .thaw = op_thaw,
    .start_failed = op_start_failed,
    .woken = op_woken,
    .touched = op_touched,
    .may_scale_out = kago__scaler_may_scale_out,
};

/* --- the CRIU tier ------------------------------------------------------------------------------- */

struct ckpt_job {
    uv_work_t req;
    unsigned generation; /* the app's container it images */
    struct instance *inst;
    struct kago_container *c;
    char *dir;
    int rc;
    uint64_t us;
    struct kago_error *err;
};

/* In a worker thread: the loop keeps serving the app's other instances meanwhile. */
static void ckpt_work(uv_work_t *req)
{
    struct ckpt_job *j = req->data;
    kago__pool_priority(j->inst->app->srv);
    struct kago_checkpoint_opts o = {.leave_running = true};
    uint64_t t0 = kago__serve_now_us();
    j->rc = kago_container_checkpoint(j->c, j->dir, &o, &j->err);
    j->us = kago__serve_now_us() - t0;
}

static void ckpt_done(uv_work_t *req, int status)
{
    struct ckpt_job *j = req->data;
    struct instance *inst = j->inst;
    struct app_rt *a = inst->app;
    struct server *srv = a->srv;
    srv->jobs--;
    inst->ckpt_busy = false;
    a->ckpt_inst = NULL;
    if (j->generation != a->pool.generation) { /* the container changed meanwhile: a stale image */
        kago__rm_rf(j->dir);
        if (a->ckpt == CK_BUSY)
            a->ckpt = CK_WANT;
        kago__slog(a->srv, SLOG_INFO, a->app.name, inst->name,
                   "checkpoint of %s dropped: the app's container changed", inst->name);
    } else if (j->rc == 0 && status == 0) {
        a->ckpt = CK_READY;
        a->pool.checkpoints++;
        kago__slog(a->srv, SLOG_INFO, a->app.name, inst->name,
                   "checkpointed %s%s into %s in %.1f ms: later starts restore it", inst->name,
                   a->app.checkpoint_at_listen ? " at listen" : "", j->dir, j->us / 1000.0);
    } else {
        a->ckpt = CK_FAILED;
        a->pool.checkpoint_failures++;
        kago__slog(a->srv, SLOG_WARN, a->app.name, inst->name,
                   "checkpoint failed, the app stays on cold starts: %s",
                   j->err ? j->err->msg : uv_strerror(status));
    }
    kago_error_free(j->err);
    free(j->dir);
    free(j);
    if (inst->removed) { /* it exited (or was stopped) while being imaged */
        if (delete_container(inst))
            kago__record_remove(inst);
    } else
        ckpt_resume(a, inst);
    job_release(inst);
}

/* After its checkpoint (or a failure to begin one) the instance goes on: routed again, or (imaged at
 * listen, still starting) probed for readiness now. */
static void ckpt_resume(struct app_rt *a, struct instance *inst)
{
    if (!inst->pi)
        return;
    if (inst->pi->state == POOL_STARTING) {
        probe_reset(inst);
        kago__upconn_open(inst, NULL);
    } else {
        kago__pool_set_busy(&a->pool, inst->pi, false, kago__serve_now_ms());
    }
}

static void ckpt_begin(struct app_rt *a, struct instance *inst)
{
    struct server *srv = a->srv;
    struct kago_error *err = NULL;
    if (kago__mkdir_p(a->image_root, 0700, &err) < 0) {
        a->ckpt = CK_FAILED;
        a->pool.checkpoint_failures++;
        kago__slog(a->srv, SLOG_WARN, a->app.name, NULL,
                   "checkpoint failed, the app stays on cold starts: %s", err->msg);
        kago_error_free(err);
        a->ckpt_inst = NULL;
        ckpt_resume(a, inst);
        return;
    }
    struct ckpt_job *j = xcalloc(1, sizeof(*j));
    j->inst = inst;
    j->c = inst->c;
    j->dir = kago__app_image_dir(a, a->pool.generation);
    j->generation = a->pool.generation;
    j->req.data = j;
    inst->ckpt_busy = true;
    a->ckpt = CK_BUSY;
    job_hold(inst);
    uv_queue_work(srv->loop, &j->req, ckpt_work, ckpt_done);
}

char *kago__app_image_dir(const struct app_rt *a, unsigned generation)
{
    return xasprintf("%s/%u", a->image_root, generation);
}

/* Images of containers a reload replaced go once no instance restored from one is left. */
static void prune_images(struct app_rt *a)
{
    if (a->images_pruned == a->pool.generation)
        return;
    for (struct pool_inst *pi = a->pool.insts; pi; pi = pi->next)
        if (pi->tier == POOL_TIER_RESTORE && pi->generation != a->pool.generation)
            return;
    for (unsigned g = a->images_pruned; g < a->pool.generation; g++) {
        cleanup_free char *dir = kago__app_image_dir(a, g);
        if (access(dir, F_OK) == 0 && kago__rm_rf(dir) == 0)
            kago__slog(a->srv, SLOG_INFO, a->app.name, NULL, "removed the image of its old container %s",
                       dir);
    }
    a->images_pruned = a->pool.generation;
}

/* Once a cold instance is ready and has nothing in flight, it is taken off routing (busy), its
 * upstream sockets are closed, and CKPT_SETTLE_MS later it is imaged. */
void kago__instance_checkpoint_tick(struct app_rt *a, uint64_t now)
{
    prune_images(a);
    /* (:at_listen apps choose their image maker when it starts: see on_listen_timer) */
    if (a->ckpt != CK_WANT || a->pool.stopping || a->removed || !a->app.checkpoint_after_ready)
        return;
    struct instance *inst = a->ckpt_inst;
    if (!inst) {
        for (struct pool_inst *pi = a->pool.insts; pi; pi = pi->next)
            if (pi->state == POOL_READY && !pi->busy && pi->inflight == 0 && pi->tier == POOL_TIER_COLD &&
                pi->generation == a->pool.generation) {
                inst = pi->data;
                break;
            }
        if (!inst || !inst->c)
            return;
        a->ckpt_inst = inst;
        inst->ckpt_at = now + CKPT_SETTLE_MS;
        kago__pool_set_busy(&a->pool, inst->pi, true, now);
        op_drain(&a->pool, inst->pi);
        return;
    }
    if (!inst->pi || inst->pi->state != POOL_READY) { /* stopped meanwhile: choose again */
        if (inst->pi)
            inst->pi->busy = false;
        a->ckpt_inst = NULL;
        return;
    }
    if (now < inst->ckpt_at || inst->conns)
        return;
    ckpt_begin(a, inst);
}
