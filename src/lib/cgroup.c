/* cgroups: backend detection and the helpers both backends share (paths, single-write I/O, mkdir/rmdir
 * of the container's cgroup under the shared "kago" parent, cpuset checks, killing the members). */
#include <ctype.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/magic.h>
#include <signal.h>
#include <stdarg.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <time.h>

#include "cgroup.h"

#define DEFAULT_MOUNTPOINT "/sys/fs/cgroup"
#define CPU_ONLINE         "/sys/devices/system/cpu/online"

/* null, zero, full, random, urandom, tty, ptmx and the pts devices */
const struct kago__cg_dev kago__cg_devs[] = {{1, 3}, {1, 5}, {1, 7}, {1, 8},
                                             {1, 9}, {5, 0}, {5, 2}, {136, -1}};
const size_t kago__cg_ndevs = sizeof kago__cg_devs / sizeof *kago__cg_devs;

static bool fs_is(const char *path, long magic)
{
    struct statfs sfs;
    return statfs(path, &sfs) == 0 && (long)sfs.f_type == magic;
}

bool kago__cg_is_cgroupfs(const char *dir)
{
    struct statfs sfs;
    if (statfs(dir, &sfs) < 0)
        return true; /* cannot tell: keep waiting, bounded */
    return (long)sfs.f_type == CGROUP_SUPER_MAGIC || (long)sfs.f_type == CGROUP2_SUPER_MAGIC;
}

/* Picks the backend; *v2_mount is where the unified hierarchy is when it is not mountpoint itself
 * (a host mounting only cgroup2 under <mountpoint>/unified). */
static const struct kago__cgroup_ops *detect(const char *mp, char **v2_mount, struct kago_error **err)
{
    cleanup_free char *unified = xasprintf("%s/unified", mp);
    const char *force = getenv("KAGO_CGROUP");
    bool is_v2 = fs_is(mp, CGROUP2_SUPER_MAGIC);
    *v2_mount = NULL;

    if (force && *force) {
        if (!strcmp(force, "v1"))
            return &kago__cgroup_v1;
        if (strcmp(force, "v2") != 0) {
            kago_error_set(err, 0, "KAGO_CGROUP=%s: expected v1 or v2", force);
            return NULL;
        }
        if (!is_v2 && fs_is(unified, CGROUP2_SUPER_MAGIC))
            *v2_mount = steal_ptr(unified);
        return &kago__cgroup_v2;
    }
    if (is_v2)
        return &kago__cgroup_v2;
    struct statfs sfs;
    if (statfs(mp, &sfs) < 0) {
        kago_error_set(err, errno, "cgroup: statfs %s", mp);
        return NULL;
    }
    /* Hybrid hosts (this one) keep the controllers on v1 and an almost empty cgroup2 at unified/. */
    if (kago__cgroup_v1_present())
        return &kago__cgroup_v1;
    if (fs_is(unified, CGROUP2_SUPER_MAGIC)) {
        *v2_mount = steal_ptr(unified);
        return &kago__cgroup_v2;
    }
    kago_error_set(err, 0, "cgroup: %s is neither a cgroup2 mount nor holds cgroup v1 hierarchies", mp);
    return NULL;
}

const struct kago__cgroup_ops *kago__cgroup_detect(const char *mountpoint, struct kago_error **err)
{
    cleanup_free char *v2_mount = NULL;
    return detect(mountpoint ? mountpoint : DEFAULT_MOUNTPOINT, &v2_mount, err);
}

int kago_cgroup_path_check(const char *path, struct kago_error **err)
{
    const char *p = path + strspn(path, "/");
    if (!*p)
        return kago_error_set(err, 0, "cgroup path \"%s\": empty", path);
    for (const char *c = p; *c;) {
        size_t len = strcspn(c, "/");
        if (!len || (len == 1 && c[0] == '.') || (len == 2 && c[0] == '.' && c[1] == '.'))
            return kago_error_set(err, 0, "cgroup path \"%s\": empty, \".\" or \"..\" component", path);
        c += len;
        if (*c == '/' && !*++c)
            return kago_error_set(err, 0, "cgroup path \"%s\": ends with /", path);
    }
    return 0;
}

int kago__cgroup_init(struct kago__cgroup *cg, const char *mountpoint, const char *name, const char *path,
                      struct kago_error **err)
{
    *cg = (struct kago__cgroup){0};
    /* The name becomes a path component of every hierarchy. */
    if (!path && (!name || !*name || strchr(name, '/') || !strcmp(name, ".") || !strcmp(name, "..")))
        return kago_error_set(err, 0, "cgroup: invalid container name \"%s\"", name ? name : "");
    if (path && kago_cgroup_path_check(path, err) < 0)
        return -1;
    const char *mp = mountpoint ? mountpoint : DEFAULT_MOUNTPOINT;
    char *v2_mount = NULL;
    const struct kago__cgroup_ops *ops = detect(mp, &v2_mount, err);
    if (!ops)
        return -1;
    cg->ops = ops;
    cg->mountpoint = v2_mount ? v2_mount : xstrdup(mp);
    cg->name = xstrdup(name ? name : "");
    cg->path = path ? xstrdup(path + strspn(path, "/")) : xasprintf(KAGO__CG_PARENT "/%s", name);
    const char *slash = strrchr(cg->path, '/');
    cg->parent = slash ? xasprintf("%.*s", (int)(slash - cg->path), cg->path) : xstrdup("");
    return 0;
}

void kago__cgroup_remove(const char *path)
{
    struct kago__cgroup cg;
    if (kago__cgroup_init(&cg, NULL, NULL, path, NULL) < 0)
        return;
    cg.ops->destroy(&cg, NULL);
    kago__cgroup_fini(&cg);
}

void kago__cgroup_fini(struct kago__cgroup *cg)
{
    free(cg->mountpoint);
    free(cg->name);
    free(cg->path);
    free(cg->parent);
    *cg = (struct kago__cgroup){0};
}

void kago__cg_unhold(struct kago__cgroup *cg)
{
    while (cg->nheld)
        close(cg->held[--cg->nheld]);
}

int kago__cg_dir(char *buf, size_t size, const char *base, const char *rel, struct kago_error **err)
{
    int n = *rel ? snprintf(buf, size, "%s/%s", base, rel) : snprintf(buf, size, "%s", base);
    if (n < 0 || (size_t)n >= size)
        return kago_error_set(err, ENAMETOOLONG, "cgroup %s/%s", base, rel);
    return 0;
}

static int file_path(char *buf, size_t size, const char *dir, const char *file, struct kago_error **err)
{
    int n = snprintf(buf, size, "%s/%s", dir, file);
    if (n < 0 || (size_t)n >= size)
        return kago_error_set(err, ENAMETOOLONG, "cgroup %s/%s", dir, file);
    return 0;
}

int kago__cg_write(const struct kago__cgroup *cg, const char *dir, const char *file, const char *value,
                   struct kago_error **err)
{
    return kago__cg_write_at(cg, AT_FDCWD, dir, file, value, err);
}

int kago__cg_write_at(const struct kago__cgroup *cg, int dirfd, const char *dir, const char *file,
                      const char *value, struct kago_error **err)
{
    char path[PATH_MAX];
    if (file_path(path, sizeof path, dir, file, err) < 0)
        return -ENAMETOOLONG;
    /* No O_TRUNC: cgroupfs takes each write() as the whole value, and truncating costs ~3 us a write on
     * the v1 host. (The unit tests' fake tree empties a file before it expects a write to it.) */
    cleanup_close int fd = openat(dirfd, path, O_WRONLY | O_CLOEXEC);
    char old[256];
    ssize_t olen = -1;
    if (cg->undo && fd >= 0 && dirfd == AT_FDCWD) {
        olen = kago__cg_read(cg, dir, file, old, sizeof old, NULL);
        if (olen >= 0 && (size_t)olen < sizeof old - 1) { /* (a longer value is not put back) */
            old[strcspn(old, "\n")] = '\0';
            if (!old[0]) /* (an empty cpuset.cpus: a write of "" would not reach the kernel) */
                snprintf(old, sizeof old, "\n");
        } else {
            olen = -1;
        }
    }
    size_t len = strlen(value);
    /* cgroupfs parses each write() as one value: it must go in a single call. */
    ssize_t n = fd < 0 ? -1 : write(fd, value, len);
    if (n < 0 || (size_t)n != len) {
        int e = n < 0 ? errno : EIO;
        return kago_error_set(err, e, "cgroup %s: write %s \"%s\"", cg->path, file, value);
    }
    if (olen >= 0) {
        struct kago__cg_undo *u = cg->undo;
        u->w = xrealloc(u->w, (u->n + 1) * sizeof *u->w);
        u->w[u->n++] = (struct kago__cg_undo_w){.path = xstrdup(path), .value = xstrdup(old)};
    }
    return 0;
}

void kago__cg_undo_replay(struct kago__cg_undo *u, bool put_back)
{
    for (size_t i = u->n; i-- > 0;) {
        if (put_back) {
            cleanup_close int fd = open(u->w[i].path, O_WRONLY | O_CLOEXEC);
            if (fd >= 0 && write(fd, u->w[i].value, strlen(u->w[i].value)) < 0) {
                /* (best effort: a value the file shows in another form than it takes stays) */
            }
        }
        free(u->w[i].path);
        free(u->w[i].value);
    }
    free(u->w);
    *u = (struct kago__cg_undo){0};
}

ssize_t kago__cg_read(const struct kago__cgroup *cg, const char *dir, const char *file, char *buf,
                      size_t size, struct kago_error **err)
{
    char path[PATH_MAX];
    if (file_path(path, sizeof path, dir, file, err) < 0)
        return -ENAMETOOLONG;
    cleanup_close int fd = open(path, O_RDONLY | O_CLOEXEC);
    ssize_t n = fd < 0 ? -1 : read(fd, buf, size - 1);
    if (n < 0) {
        int e = errno;
        kago_error_set(err, e, "cgroup %s: read %s", cg->path, file);
        buf[0] = '\0';
        return -e;
    }
    buf[n] = '\0';
    return n;
}

bool kago__cg_key(const char *text, const char *key, int64_t *out)
{
    size_t klen = strlen(key);
    for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
        if (!strncmp(p, key, klen) && p[klen] == ' ') {
            *out = strtoll(p + klen + 1, NULL, 10);
            return true;
        }
    }
    return false;
}

bool kago__cg_backoff(unsigned *delay_us, unsigned long long deadline_us)
{
    if (kago__now_us() >= deadline_us)
        return false;
    struct timespec ts = {.tv_nsec = (long)*delay_us * 1000};
    nanosleep(&ts, NULL);
    if (*delay_us < 5000)
        *delay_us *= 2;
    return true;
}

/* Makes each missing directory of base/<parent>, top down, and lets the backend prepare it. EEXIST: made
 * (and prepared) by another container's maker. */
static int make_parent(const struct kago__cgroup *cg, const char *base, kago__cg_prepare_fn *prepare,
                       bool *created, struct kago_error **err)
{
    char dir[PATH_MAX], above[PATH_MAX];
    if (kago__cg_dir(dir, sizeof dir, base, cg->parent, err) < 0)
        return -1;
    size_t blen = strlen(base);
    for (char *p = dir + blen; *p;) {
        char *end = p + 1 + strcspn(p + 1, "/");
        char saved = *end;
        *end = '\0';
        snprintf(above, sizeof above, "%.*s", (int)(p - dir), dir);
        bool last = !saved;
        if (mkdir(dir, 0755) == 0) {
            *created = last;
            if (prepare && prepare(cg, base, above, dir, err) < 0) {
                rmdir(dir);
                return -1;
            }
        } else if (errno != EEXIST) {
            return kago_error_set(err, errno, "cgroup %s: mkdir %s", cg->path, dir);
        }
        *end = saved;
        p = end;
    }
    return 0;
}

int kago__cg_mkdir(const struct kago__cgroup *cg, const char *base, kago__cg_prepare_fn *prepare,
                   bool *created, struct kago_error **err)
{
    char dir[PATH_MAX];
    if (kago__cg_dir(dir, sizeof dir, base, cg->path, err) < 0)
        return -1;
    *created = false;
    /* The parent usually exists (another container, or left by the last one), so try the child first. */
    for (int attempt = 0;; attempt++) {
        if (mkdir(dir, 0755) == 0)
            return 0;
        int e = errno;
        if (e == EEXIST && attempt < 2) {
            /* A dead container's empty cgroup: start afresh so none of its limits survive. */
            if (rmdir(dir) == 0)
                continue;
            if (errno == EBUSY)
                return kago_error_set(err, 0,
                                      "cgroup %s: %s is in use by running processes "
                                      "(is a container of that name or cgroup path running under another "
                                      "--root?)",
                                      cg->path, dir);
            return kago_error_set(err, errno, "cgroup %s: rmdir stale %s", cg->path, dir);
        }
        /* ENOENT: no parent yet, or another process removed it between our mkdirs: retry once more. */
        if (e != ENOENT || attempt >= 2)
            return kago_error_set(err, e, "cgroup %s: mkdir %s", cg->path, dir);
        if (make_parent(cg, base, prepare, created, err) < 0)
            return -1;
    }
}

int kago__cg_rmdir(const struct kago__cgroup *cg, const char *base, struct kago_error **err)
{
    char dir[PATH_MAX];
    if (kago__cg_dir(dir, sizeof dir, base, cg->path, err) < 0)
        return -1;
    /* Processes that just died may keep the cgroup populated for a moment: a pid namespace whose init
     * was killed takes its other processes down after it, and a loaded machine may take a while. */
    unsigned delay = 50;
    unsigned long long deadline = kago__now_us() + 1000000;
    while (rmdir(dir) < 0) {
        if (errno == ENOENT)
            break;
        if (errno != EBUSY || !kago__cg_backoff(&delay, deadline))
            return kago_error_set(err, errno, "cgroup %s: rmdir %s", cg->path, dir);
    }
    /* Last one out removes kago's parent; EBUSY/ENOTEMPTY means other containers still use it. */
    if (!strcmp(cg->parent, KAGO__CG_PARENT) && kago__cg_dir(dir, sizeof dir, base, cg->parent, NULL) == 0)
        rmdir(dir);
    return 0;
}

/* Parses "a" or "a-b" at *s; advances past it. */
static bool parse_range(const char **s, unsigned long *lo, unsigned long *hi)
{
    char *end;
    if (!isdigit((unsigned char)**s))
        return false;
    *lo = *hi = strtoul(*s, &end, 10);
    if (*end == '-') {
        if (!isdigit((unsigned char)end[1]))
            return false;
        *hi = strtoul(end + 1, &end, 10);
    }
    *s = end;
    return *lo <= *hi;
}

static bool cpu_in_list(const char *list, unsigned long cpu)
{
    unsigned long lo, hi;
    for (const char *s = list; parse_range(&s, &lo, &hi); s++) {
        if (cpu >= lo && cpu <= hi)
            return true;
        if (*s != ',')
            break;
    }
    return false;
}

int kago__cg_check_cpuset(const char *cpus, struct kago_error **err)
{
    char online[1024];
    cleanup_close int fd = open(CPU_ONLINE, O_RDONLY | O_CLOEXEC);
    ssize_t n = fd < 0 ? -1 : read(fd, online, sizeof online - 1);
    if (n < 0)
        return kago_error_set(err, errno, "cpuset %s: read " CPU_ONLINE, cpus);
    online[n] = '\0';

    unsigned long lo, hi, max = 0, l2, h2;
    for (const char *s = online; parse_range(&s, &l2, &h2) && (max = h2, *s == ','); s++)
        ;
    for (const char *s = cpus;;) {
        const char *start = s;
        if (!parse_range(&s, &lo, &hi))
            return kago_error_set(err, 0, "cpuset %s: expected a CPU list like 0-1,3", cpus);
        for (unsigned long c = lo; c <= hi; c++) {
            if (c > max || !cpu_in_list(online, c)) {
                if (start == cpus && lo == hi && (!*s || !strcmp(s, "\n")))
                    return kago_error_set(err, 0, "cpuset %s: no such CPU", cpus);
                return kago_error_set(err, 0, "cpuset %s: no such CPU %lu", cpus, c);
            }
        }
        if (!*s || !strcmp(s, "\n"))
            return 0;
        if (*s++ != ',')
            return kago_error_set(err, 0, "cpuset %s: expected a CPU list like 0-1,3", cpus);
    }
}

int kago__cg_check_key(const struct kago__cgroup *cg, const char *key, struct kago_error **err)
{
    const char *dot = key ? strchr(key, '.') : NULL;
    if (!dot || dot == key || !dot[1] || strchr(key, '/'))
        return kago_error_set(err, 0, "cgroup %s: invalid key \"%s\" (expected controller.file)", cg->path,
                              key ? key : "");
    return 0;
}

/* Reads dir/cgroup.procs (any size) into a malloc'd buffer. */
static char *read_list(const struct kago__cgroup *cg, const char *dir, const char *file,
                       struct kago_error **err)
{
    char path[PATH_MAX];
    if (file_path(path, sizeof path, dir, file, err) < 0)
        return NULL;
    char *s = kago__read_file(path, NULL, NULL);
    if (!s)
        kago_error_set(err, errno, "cgroup %s: read %s", cg->path, file);
    return s;
}

static char *read_procs(const struct kago__cgroup *cg, const char *dir, struct kago_error **err)
{
    return read_list(cg, dir, "cgroup.procs", err);
}

int kago__cg_count_lines(const struct kago__cgroup *cg, const char *dir, const char *file,
                         struct kago_error **err)
{
    cleanup_free char *list = read_list(cg, dir, file, err);
    if (!list)
        return -1;
    int n = 0;
    for (const char *p = list; *p; p++)
        n += *p == '\n';
    return n;
}

int kago__cg_move_procs(const struct kago__cgroup *cg, const char *from, const char *to,
                        struct kago_error **err)
{
    cleanup_free char *procs = read_procs(cg, from, err);
    if (!procs)
        return -1;
    char *end;
    for (long pid = strtol(procs, &end, 10); end != procs && pid > 0; pid = strtol(end, &end, 10)) {
        char v[24];
        snprintf(v, sizeof v, "%ld", pid);
        int r = kago__cg_write(cg, to, "cgroup.procs", v, err);
        if (r == -ESRCH) /* it exited meanwhile */
            kago_error_clear(err);
        else if (r < 0)
            return -1;
    }
    return 0;
}

static bool seen(const pid_t *pids, size_t n, pid_t pid)
{
    for (size_t i = 0; i < n; i++)
        if (pids[i] == pid)
            return true;
    return false;
}

int kago__cg_kill_procs(const struct kago__cgroup *cg, const char *dir, int sig, struct kago_error **err)
{
    cleanup_free pid_t *done = NULL;
    size_t ndone = 0, cap = 0;
    /* A process may fork between our read and its kill; for SIGKILL, reread until no pid is new. */
    for (int round = 0; round < (sig == SIGKILL ? 16 : 1); round++) {
        cleanup_free char *procs = read_procs(cg, dir, err);
        if (!procs)
            return -1;
        bool fresh = false;
        for (char *p = procs, *end; *p; p = end) {
            pid_t pid = (pid_t)strtol(p, &end, 10);
            if (end == p)
                break;
            while (*end == '\n')
                end++;
            if (pid <= 0 || seen(done, ndone, pid))
                continue;
            if (kill(pid, sig) < 0) {
                if (errno == ESRCH)
                    continue;
                return kago_error_set(err, errno, "cgroup %s: kill %d", cg->path, (int)pid);
            }
            if (ndone == cap)
                done = xrealloc(done, (cap = cap ? cap * 2 : 16) * sizeof *done);
            done[ndone++] = pid;
            fresh = true;
        }
        if (!fresh)
            break;
    }
    return (int)ndone;
}

int kago__cg_read_num(const struct kago__cgroup *cg, const char *dir, const char *file, const char *key,
                      int64_t *out, struct kago_error **err)
{
    char v[4096];
    *out = -1;
    ssize_t n = kago__cg_read(cg, dir, file, v, sizeof v, err);
    if (n == -ENOENT) {
        kago_error_clear(err);
        return 0;
    }
    if (n < 0)
        return -1;
    if (!key)
        *out = strncmp(v, "max", 3) ? strtoll(v, NULL, 10) : -1;
    else if (!kago__cg_key(v, key, out))
        *out = -1;
    return 0;
}
