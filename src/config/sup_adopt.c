/* A Kagofile supervisor that is killed (SIGKILL, a crash, OOM) leaves its containers running: the next
 * `kago run` of the same file with the same --root adopts those whose definition did not change and
 * removes every trace of the others.
 *
 * Each container the supervisor runs has a record, <root>/supervisors/<name>.rec, which it holds locked
 * (flock) for as long as it owns the container: a lock that can be taken means that its owner is gone,
 * one that cannot means that another supervisor runs the container (several supervisors share a root,
 * each with its own containers). The record holds the hash of the container's definition (its spec), the
 * CLOCK_MONOTONIC ms of its start (after() timers keep counting from it) and the Kagofile's path (a
 * container the file no longer defines is removed). The engine's own state file holds the rest. */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ident.h"
#include "supervisor.h"

struct sup_record {
    uint64_t def, started;
    char file[PATH_MAX];
};

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static char *record_path(struct sup *s, const char *name)
{
    char *p;
    if (asprintf(&p, "%s/%s.rec", s->dir, name) < 0)
        abort();
    return p;
}

static const char *file_path(struct sup *s, char *buf)
{
    return realpath(s->opts->path, buf) ? buf : s->opts->path;
}

void sup_name_cgroup(struct sup *s, struct kago_spec *spec)
{
    if (spec->cgroup_path || !spec->name)
        return;
    if (asprintf(&spec->cgroup_path, "kago/%s-%04x", spec->name, kago__root_id(s->opts->root)) < 0)
        abort();
}

/* Reads the record on fd; returns 0 when it holds one (a new, empty file does not). */
static int record_read(int fd, struct sup_record *r)
{
    char buf[PATH_MAX + 128];
    ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
    if (n <= 0)
        return -1;
    buf[n] = '\0';
    memset(r, 0, sizeof *r);
    char *file = strstr(buf, "\nfile ");
    if (sscanf(buf, "def %" SCNx64 "\nstarted %" SCNu64, &r->def, &r->started) != 2 || !file)
        return -1;
    snprintf(r->file, sizeof r->file, "%.*s", (int)strcspn(file + 6, "\n"), file + 6);
    return 0;
}

void sup_record_write(struct sct *ct)
{
    if (ct->rec_fd < 0)
        return;
    char buf[PATH_MAX + 128], file[PATH_MAX];
    int n = snprintf(buf, sizeof buf, "def %016" PRIx64 "\nstarted %" PRIu64 "\nfile %s\n",
                     kago__spec_hash(ct->def->spec), mono_ms(), file_path(ct->sup, file));
    if (ftruncate(ct->rec_fd, 0) < 0 || pwrite(ct->rec_fd, buf, (size_t)n, 0) != n)
        sup_log(ct->sup, "%s: record: %s", ct->name, strerror(errno));
}

void sup_record_drop(struct sct *ct)
{
    if (ct->rec_fd < 0)
        return;
    char *p = record_path(ct->sup, ct->name);
    unlink(p); /* before the lock goes: a new supervisor never finds a record of a container that is gone */
    free(p);
    close(ct->rec_fd);
    ct->rec_fd = -1;
}

/* The control socket of the supervisor that recorded name's pidfile, when that process is gone. */
static void remove_stale_socket(struct sup *s, const char *name)
{
    char path[4096], buf[32];
    snprintf(path, sizeof path, "%s/%s.pid", s->dir, name);
    FILE *f = fopen(path, "re");
    if (!f)
        return;
    int pid = fgets(buf, sizeof buf, f) ? atoi(buf) : 0;
    fclose(f);
    if (pid <= 0 || pid == getpid() || kill(pid, 0) == 0 || errno != ESRCH)
        return;
    snprintf(path, sizeof path, "%s/%d.sock", s->dir, pid);
    unlink(path);
}

/* Kills and deletes what is left of the container name (running, stopped or half made). */
static void remove_left(struct sup *s, const char *name, struct kago_container *c, const char *why)
{
    struct kago_error *err = NULL;
    int r;
    if (c) {
        if (kago_container_status(c) == KAGO_PAUSED && kago_container_pause(c, false, &err) < 0) {
            kago_error_free(err); /* delete kills frozen tasks all the same */
            err = NULL;
        }
        r = kago_container_delete(c, true, &err);
        kago_container_free(c);
    } else if ((r = kago_container_remove_partial(s->opts->root, name, &err)) < 0 && err &&
               err->code == ENOENT) {
        r = 0; /* nothing was left but the record */
    }
    if (r < 0)
        sup_log(s, "%s: could not remove the container of the previous supervisor (%s): %s", name, why,
                err ? err->msg : "unknown error");
    else
        sup_log(s, "%s: removed the container of the previous supervisor: %s", name, why);
    kago_error_free(err);
    char pf[4096];
    snprintf(pf, sizeof pf, "%s/%s.pid", s->dir, name);
    unlink(pf);
}

/* Why c (recorded as r) cannot be adopted as ct; NULL: it can. */
static const char *unadoptable(struct sct *ct, const struct sup_record *r, struct kago_container *c)
{
    enum kago_status st = kago_container_status(c);
    if (r->def != kago__spec_hash(ct->def->spec))
        return "its definition changed";
    if (st != KAGO_RUNNING && st != KAGO_PAUSED)
        return st == KAGO_CREATED ? "it had not started" : "its process is gone";
    if (kago_container_pidfd(c) < 0)
        return "its process is gone";
    return NULL;
}

/* ct's record is locked: adopt or remove what it names. */
static void adopt_one(struct sup *s, struct sct *ct)
{
    struct sup_record r;
    if (record_read(ct->rec_fd, &r) < 0)
        return; /* no record: nothing of a supervisor of ours (a container of that name fails to start) */
    remove_stale_socket(s, ct->name);
    struct kago_container *c = NULL;
    struct kago_error *err = NULL;
    if (kago_container_load(s->opts->root, ct->name, &c, &err) < 0) {
        kago_error_free(err);
        remove_left(s, ct->name, NULL, "it was half made");
    } else {
        const char *why = unadoptable(ct, &r, c);
        if (why) {
            remove_left(s, ct->name, c, why);
        } else {
            ct->c = c;
            uint64_t now = mono_ms();
            sup_take(ct, r.started <= now ? now - r.started : 0);
            sup_log(s, "%s: adopted from the previous supervisor, pid %d%s", ct->name,
                    (int)kago_container_pid(c), kago_container_status(c) == KAGO_PAUSED ? " (paused)" : "");
            return;
        }
    }
    if (ftruncate(ct->rec_fd, 0) < 0)
        sup_log(s, "%s: record: %s", ct->name, strerror(errno));
}

/* Records of this file's containers that it no longer defines (and no supervisor holds): removed. */
static void sweep_undefined(struct sup *s)
{
    DIR *d = opendir(s->dir);
    if (!d)
        return;
    char self[PATH_MAX];
    const char *file = file_path(s, self);
    struct dirent *de;
    while ((de = readdir(d))) {
        size_t len = strlen(de->d_name);
        if (len <= 4 || strcmp(de->d_name + len - 4, ".rec") != 0)
            continue;
        char name[256];
        snprintf(name, sizeof name, "%.*s", (int)(len - 4), de->d_name);
        if (kf_find(s->cts[0]->kf, name))
            continue; /* defined: adopt_one's (when selected), or a supervisor's of another subset */
        char *p = record_path(s, name);
        int fd = kago__lock_file(p, NULL);
        struct sup_record r;
        if (fd >= 0 && record_read(fd, &r) == 0 && !strcmp(r.file, file)) {
            remove_stale_socket(s, name);
            struct kago_container *c = NULL;
            if (kago_container_load(s->opts->root, name, &c, NULL) < 0)
                c = NULL;
            remove_left(s, name, c, "the Kagofile no longer defines it");
            unlink(p);
        }
        if (fd >= 0)
            close(fd);
        free(p);
    }
    closedir(d);
}

int sup_adopt(struct sup *s, struct kago_error **err)
{
    /* every lock first: a container another supervisor runs fails the run before anything changed */
    for (size_t i = 0; i < s->ncts; i++) {
        struct sct *ct = s->cts[i];
        char *p = record_path(s, ct->name);
        ct->rec_fd = kago__lock_file(p, err);
        free(p);
        if (ct->rec_fd < 0) {
            if ((*err)->code == EWOULDBLOCK) {
                kago_error_clear(err);
                kago_error_set(err, 0, "container %s: another Kagofile supervisor runs it", ct->name);
            }
            for (size_t j = 0; j < i; j++) {
                close(s->cts[j]->rec_fd);
                s->cts[j]->rec_fd = -1;
            }
            return -1;
        }
    }
    for (size_t i = 0; i < s->ncts; i++)
        adopt_one(s, s->cts[i]);
    sweep_undefined(s);
    return 0;
}
