/* kago serve — nothing lost across a restart: every instance is recorded under the root, and a new
 * serve with the same --root adopts the instances that still run and removes every trace of the others.
 *
 * The record is a small file per instance, <root>/.serve/<instance>, beside the engine's own state dir
 * <root>/<instance> rather than in it: it is written before the container exists (so a serve killed in
 * the middle of a create leaves a record naming what to remove), it outlives a failed delete (the next
 * serve tries again), and a name beginning with a dot can never be a container's. The engine's state
 * file already holds the pid (with its start time), the spec and the cgroup; the record adds what serve
 * alone knows: the app, the pool state (a starting or stopping instance is removed, not adopted), a hash
 * of the app's container definition (a changed Kagofile means new instances), and the lifetime and idle
 * clocks. The clocks are CLOCK_MONOTONIC ms, which run on across processes until the host reboots (and
 * then no container is left to adopt). Records are rewritten from the tick when the state changes and at
 * most once a second for the idle clock, so an adopted instance's idle time is at most that much short. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "container_int.h"
#include "ident.h"
#include "serve_int.h"
#include "util.h"

#define RECORD_DIR ".serve"
/* The idle clock is recorded at most this often. */
#define RECORD_ACTIVE_MS 1000

struct record {
    char app[256], state[16];
    uint64_t def, created, ready_at, last_active, frozen_at;
};

/* --- hashing the container definition ---------------------------------------------------------- */

/* What an instance is made of (the fields container_changed in server.c compares): the spec, plus what
 * serve adds to it. */
uint64_t kago__app_def_hash(const struct kago_app *a)
{
    uint64_t v[] = {a->port, a->socket_activation, a->checkpoint_after_ready, a->checkpoint_at_listen};
    return kago__fnv(kago__spec_hash(&a->spec), v, sizeof(v));
}

/* --- records ------------------------------------------------------------------------------------ */

static const char *state_word(enum pool_state s)
{
    return s == POOL_READY      ? "ready"
           : s == POOL_FROZEN   ? "frozen"
           : s == POOL_STARTING ? "starting"
                                : "stopping";
}

static char *record_path(const struct server *srv, const char *name)
{
    return xasprintf("%s/" RECORD_DIR "/%s", srv->opts.root, name);
}

/* Writes inst's record (a new file renamed over the old: a SIGKILL leaves the one or the other). */
int kago__record_write(struct instance *inst, struct kago_error **err)
{
    struct app_rt *a = inst->app;
    struct pool_inst *pi = inst->pi;
    if (!pi)
        return 0;
    cleanup_free char *path = record_path(a->srv, inst->name);
    cleanup_free char *tmp = xasprintf("%s/" RECORD_DIR "/.%s.tmp", a->srv->opts.root, inst->name);
    FILE *f = fopen(tmp, "we");
    if (!f) {
        kago__ilog(inst, SLOG_ERR, "record %s: %s", tmp, strerror(errno));
        return kago_error_set(err, errno, "record %s", tmp);
    }
    fprintf(f,
            "app %s\nstate %s\ndef %016" PRIx64 "\ncreated %" PRIu64 "\nready_at %" PRIu64
            "\nlast_active %" PRIu64 "\nfrozen_at %" PRIu64 "\n",
            a->app.name, state_word(pi->state), inst->def_hash, pi->created, pi->ready_at, pi->last_active,
            pi->frozen_at);
    if (fclose(f) != 0 || rename(tmp, path) < 0) {
        int e = errno;
        kago__ilog(inst, SLOG_ERR, "record %s: %s", path, strerror(e));
        unlink(tmp);
        return kago_error_set(err, e, "record %s", path);
    }
    inst->rec_state = pi->state;
    inst->rec_last_active = pi->last_active;
    inst->recorded = true;
    return 0;
}

/* Every trace of inst is gone: so is its record. */
void kago__record_remove(struct instance *inst)
{
    cleanup_free char *path = record_path(inst->app->srv, inst->name);
    if (unlink(path) < 0 && errno != ENOENT)
        kago__ilog(inst, SLOG_ERR, "remove %s: %s", path, strerror(errno));
    inst->recorded = false;
}

bool kago__records_app(struct app_rt *a, size_t *budget)
{
    for (struct pool_inst *pi = a->pool.insts; pi; pi = pi->next) {
        struct instance *inst = pi->data;
        if (!inst || !inst->recorded)
            continue;
        /* (state_word: the states it does not tell apart are one) */
        if (state_word(pi->state) != state_word(inst->rec_state) ||
            pi->last_active >= inst->rec_last_active + RECORD_ACTIVE_MS) {
            if (!*budget)
                return false;
            --*budget;
            kago__record_write(inst, NULL);
        }
    }
    return true;
}

/* 0, -1 when there is no record, -2 when it is damaged (a line missing or cut short: a crash while the
 * disk had it half written). */
static int record_read(const char *path, struct record *r)
{
    FILE *f = fopen(path, "re");
    if (!f)
        return -1;
    memset(r, 0, sizeof(*r));
    static const char *const keys[] = {"app",      "state",       "def",      "created",
                                       "ready_at", "last_active", "frozen_at"};
    uint64_t *nums[] = {NULL, NULL, &r->def, &r->created, &r->ready_at, &r->last_active, &r->frozen_at};
    unsigned seen = 0;
    bool whole = true;
    char line[512], key[32], val[256];
    while (fgets(line, sizeof(line), f)) {
        size_t n = strlen(line);
        if (!n || line[n - 1] != '\n' || sscanf(line, "%31s %255s", key, val) != 2) {
            whole = false;
            continue;
        }
        for (unsigned k = 0; k < sizeof keys / sizeof keys[0]; k++) {
            if (strcmp(key, keys[k]) != 0)
                continue;
            seen |= 1u << k;
            char *end = NULL;
            if (k == 0)
                snprintf(r->app, sizeof(r->app), "%s", val);
            else if (k == 1)
                snprintf(r->state, sizeof(r->state), "%.15s", val);
            else
                *nums[k] = strtoull(val, &end, k == 2 ? 16 : 10);
            if (end && *end)
                whole = false;
        }
    }
    fclose(f);
    return whole && seen == (1u << (sizeof keys / sizeof keys[0])) - 1 ? 0 : -2;
}

/* --- adoption ----------------------------------------------------------------------------------- */

/* Why the instance of record r, whose container c is in state st, cannot be adopted (NULL: it can). */
static const char *unadoptable(struct app_rt *a, const struct record *r, struct kago_container *c,
                               enum kago_status st)
{
    if (!a)
        return "its app is gone from the Kagofiles";
    if (strcmp(r->state, "ready") != 0 && strcmp(r->state, "frozen") != 0)
        return !strcmp(r->state, "starting") ? "it was starting" : "it was stopping";
    if (r->def != a->def_hash)
        return "its app's container changed";
    if (kago__app_criu(&a->app))
        return "its app uses the CRIU tier (its image is not trusted across serves)";
    if (st != KAGO_RUNNING && st != KAGO_PAUSED)
        return "its process is gone";
    if (kago_container_pidfd(c) < 0)
        return "its process is gone";
    return NULL;
}

/* c runs: it becomes an instance of a, READY or (its cgroup frozen) FROZEN, with the recorded clocks. */
static int adopt(struct app_rt *a, const char *name, const struct record *r, struct kago_container *c,
                 enum kago_status st, struct kago_error **err)
{
    uint64_t now = kago__serve_now_ms();
    struct instance *inst = xcalloc(1, sizeof(*inst));
    inst->app = a;
    inst->c = c;
    inst->ready = true;
    inst->created_ms = r->created;
    inst->def_hash = r->def;
    snprintf(inst->name, sizeof(inst->name), "%s", name);
    kago__instance_watch(inst);
    /* a clock from the future (a reboot: the monotonic clock began again) is taken as now */
    uint64_t created = r->created <= now ? r->created : now;
    uint64_t active = r->last_active <= now && r->last_active >= created ? r->last_active : now;
    uint64_t frozen = !strcmp(r->state, "frozen") && r->frozen_at <= now ? r->frozen_at : now;
    struct pool_inst *pi = kago__pool_adopt(&a->pool, st == KAGO_PAUSED ? POOL_FROZEN : POOL_READY, created,
                                            r->ready_at <= now ? r->ready_at : now, active, frozen);
    pi->data = inst;
    inst->pi = pi;
    kago__logs_adopt(inst); /* what it wrote meanwhile waits in its FIFOs */
    if (st == KAGO_PAUSED) {
        struct kago_error *e = NULL;
        if (kago_container_stats(c, &inst->stats, &e) < 0)
            kago_error_free(e);
        pi->frozen_bytes = inst->stats.memory_current > 0 ? (uint64_t)inst->stats.memory_current : 0;
    }
    a->srv->total_instances++;
    a->srv->adopted++;
    kago__record_write(inst, NULL);
    return 0;
}

/* Kills and deletes what is left of the instance named name (a container, a half-made one, or nothing). */
static void remove_leftover(struct server *srv, const char *name, const char *app, struct kago_container *c,
                            const char *why, const char *rec)
{
    struct kago_error *err = NULL;
    int r;
    if (c) {
        if (kago_container_status(c) == KAGO_PAUSED && kago_container_pause(c, false, &err) < 0) {
            kago_error_free(err); /* (delete kills frozen tasks all the same) */
            err = NULL;
        }
        r = kago_container_delete(c, true, &err);
        kago_container_free(c);
    } else if ((r = kago_container_remove_partial(srv->opts.root, name, &err)) < 0 && err &&
               err->code == ENOENT) {
        r = 0; /* nothing was left but the record */
    }
    if (r < 0) {
        kago__slog(srv, SLOG_ERR, app, NULL,
                   "could not remove the instance %s of the previous serve (%s): %s", name, why,
                   err ? err->msg : "unknown error");
        kago_error_free(err);
        return; /* its record stays: the next serve tries again */
    }
    kago_error_free(err);
    kago__slog(srv, SLOG_INFO, app, NULL, "removed the instance %s of the previous serve: %s", name, why);
    kago__logs_forget(srv, app, name);
    unlink(rec);
}

static void adopt_one(struct server *srv, const char *name)
{
    cleanup_free char *rec = record_path(srv, name);
    struct record r;
    int rr = record_read(rec, &r);
    if (rr == -1)
        return;
    struct app_rt *a = rr == 0 ? kago__server_app(srv, r.app) : NULL;
    struct kago_container *c = NULL;
    struct kago_error *err = NULL;
    if (kago_container_load(srv->opts.root, name, &c, &err) < 0) {
        cleanup_free char *state = xasprintf("%s/%s/state.json", srv->opts.root, name);
        cleanup_free char *why = access(state, F_OK) == 0 ? xasprintf("its state does not read: %s", err->msg)
                                                          : xstrdup("it was half made");
        kago_error_free(err);
        remove_leftover(srv, name, r.app[0] ? r.app : NULL, NULL, why, rec);
        return;
    }
    enum kago_status st = kago_container_status(c);
    const char *why = rr < 0 ? "its record is damaged" : unadoptable(a, &r, c, st);
    if (!why && adopt(a, name, &r, c, st, &err) == 0) {
        kago__slog(srv, SLOG_INFO, r.app, NULL, "adopted the %s instance %s (pid %d) of the previous serve",
                   st == KAGO_PAUSED ? "frozen" : "ready", name, (int)kago_container_pid(c));
        return;
    }
    if (!why)
        why = err ? err->msg : "it could not be watched";
    remove_leftover(srv, name, r.app[0] ? r.app : NULL, c, why, rec);
    kago_error_free(err);
}

int kago__serve_adopt(struct server *srv, struct kago_error **err)
{
    cleanup_free char *dir = xasprintf("%s/" RECORD_DIR, srv->opts.root);
    if (kago__mkdir_p(dir, 0700, err) < 0)
        return -1;
    /* one serve per root: a second one would adopt, and then remove, the first one's instances. An
     * upgrade waits here while the old serve drains (lock_wait_ms). */
    cleanup_free char *lock = xasprintf("%s/.lock", dir);
    uint64_t until = kago__serve_now_ms() + srv->lock_wait_ms;
    for (;;) {
        srv->root_lock = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
        if (srv->root_lock < 0)
            return kago_error_set(err, errno, "open %s", lock);
        int e = flock(srv->root_lock, LOCK_EX | LOCK_NB) < 0 ? errno : 0;
        struct stat a, b;
        if (e == 0 && fstat(srv->root_lock, &a) == 0 && stat(lock, &b) == 0 && a.st_ino == b.st_ino &&
            a.st_dev == b.st_dev)
            break;
        close(srv->root_lock); /* (locked, or unlinked by a serve that just stopped: open it again) */
        srv->root_lock = -1;
        if (e == 0 || (e == EWOULDBLOCK && kago__serve_now_ms() < until)) {
            usleep(2000);
            continue;
        }
        if (e != EWOULDBLOCK)
            return kago_error_set(err, e, "root %s: lock", srv->opts.root);
        if (srv->upgraded_from)
            return kago_error_set(
                err, 0, "root %s: the serve being upgraded (pid %d) did not let go within %llu s",
                srv->opts.root, (int)srv->upgraded_from, (unsigned long long)(srv->lock_wait_ms / 1000));
        return kago_error_set(err, 0, "root %s: another kago serve uses it", srv->opts.root);
    }
    uint64_t t0 = kago__serve_now_us();
    DIR *d = opendir(dir);
    if (!d)
        return kago_error_set(err, errno, "open %s", dir);
    char **names = NULL;
    size_t n = 0;
    struct dirent *de;
    while ((de = readdir(d)))
        if (de->d_name[0] != '.') {
            names = xrealloc(names, (n + 1) * sizeof(*names));
            names[n++] = xstrdup(de->d_name);
        } else if (strstr(de->d_name, ".tmp") && de->d_name[1]) {
            unlinkat(dirfd(d), de->d_name, 0); /* a record being written when serve was killed */
        }
    closedir(d);
    for (size_t i = 0; i < n; i++) {
        adopt_one(srv, names[i]);
        free(names[i]);
    }
    free(names);
    if (n)
        kago__slog(srv, SLOG_INFO, NULL, NULL,
                   "%zu instances of the previous serve: %llu adopted, %llu removed, in %.1f ms", n,
                   (unsigned long long)srv->adopted, (unsigned long long)(n - srv->adopted),
                   (kago__serve_now_us() - t0) / 1000.0);
    return 0;
}
