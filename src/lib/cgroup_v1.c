/* cgroup v1 backend: one directory per hierarchy (<controller mount>/kago/<name>), hierarchies found at
 * /sys/fs/cgroup/<controller> or else in /proc/self/mountinfo (controllers may be co-mounted, e.g.
 * "cpu,cpuacct"), cached per process.
 *
 * Every container is in the hierarchies of cpuacct, memory, freezer and devices (usage, stats, pause and
 * membership, device access). The cpu, pids, cpuset and blkio hierarchies are made only for a container
 * whose limits use them: each v1 mkdir and rmdir costs a start tens of microseconds. kago update adds one to
 * a running container: mkdir, then every process moved in while the container is frozen. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/magic.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "cgroup.h"

enum { C_CPU, C_CPUACCT, C_MEMORY, C_PIDS, C_CPUSET, C_FREEZER, C_DEVICES, C_BLKIO, NCTRL };
static const char *const ctrl_names[NCTRL] = {"cpu",    "cpuacct", "memory",  "pids",
                                              "cpuset", "freezer", "devices", "blkio"};

struct layout {
    char *path[NCTRL];       /* mount of each controller's hierarchy, NULL when not mounted */
    const char *hier[NCTRL]; /* the distinct hierarchies (co-mounted controllers share one), in ctrl order */
    size_t nhier;
};

/* The controllers whose hierarchy is made only when a container's limits use it. */
static bool on_demand(int c)
{
    return c == C_CPU || c == C_PIDS || c == C_CPUSET || c == C_BLKIO;
}

/* Whether the limits (and raw keys) write to controller c. */
static bool uses(const struct kago_limits *lim, int c)
{
    bool used = c == C_CPU ? lim->cpu_quota_us != KAGO_UNSET || lim->cpu_period_us != KAGO_UNSET ||
                                 lim->cpu_weight != KAGO_UNSET
                : c == C_PIDS   ? lim->pids != KAGO_UNSET
                : c == C_CPUSET ? lim->cpuset != NULL
                                : false;
    for (size_t i = 0; i < lim->nraw && !used; i++) {
        size_t len = strcspn(lim->raw[i].key, ".");
        used = strlen(ctrl_names[c]) == len && !strncmp(lim->raw[i].key, ctrl_names[c], len);
    }
    return used;
}

static pthread_mutex_t layout_lock = PTHREAD_MUTEX_INITIALIZER;
static struct layout mounted, injected;
static bool mounted_loaded, use_injected;

static int ctrl_index(const char *name, size_t len)
{
    for (int c = 0; c < NCTRL; c++)
        if (strlen(ctrl_names[c]) == len && !strncmp(ctrl_names[c], name, len))
            return c;
    return -1;
}

static void layout_finish(struct layout *l)
{
    l->nhier = 0;
    for (int c = 0; c < NCTRL; c++) {
        if (!l->path[c])
            continue;
        bool dup = false;
        for (size_t i = 0; i < l->nhier; i++)
            dup = dup || !strcmp(l->hier[i], l->path[c]);
        if (!dup)
            l->hier[l->nhier++] = l->path[c];
    }
}

static void layout_clear(struct layout *l)
{
    for (int c = 0; c < NCTRL; c++)
        free(l->path[c]);
    *l = (struct layout){0};
}

/* mountinfo escapes blanks and backslashes in paths as \ooo. */
static void unescape(char *s)
{
    char *w = s;
    for (char *r = s; *r; r++) {
        if (r[0] == '\\' && r[1] >= '0' && r[1] <= '3' && r[2] >= '0' && r[2] <= '7' && r[3] >= '0' &&
            r[3] <= '7') {
            *w++ = (char)((r[1] - '0') * 64 + (r[2] - '0') * 8 + (r[3] - '0'));
            r += 3;
        } else {
            *w++ = *r;
        }
    }
    *w = '\0';
}

/* One mountinfo line: "id parent maj:min root mountpoint opts [optional...] - fstype source superopts". */
static void parse_mountinfo_line(struct layout *l, char *line)
{
    char *sep = strstr(line, " - ");
    if (!sep)
        return;
    *sep = '\0';
    char *save = NULL, *fstype = strtok_r(sep + 3, " \n", &save);
    char *source = strtok_r(NULL, " \n", &save);
    char *superopts = strtok_r(NULL, " \n", &save);
    if (!fstype || strcmp(fstype, "cgroup") != 0 || !source || !superopts)
        return;
    char *mnt = NULL;
    save = NULL;
    char *tok = strtok_r(line, " ", &save);
    for (int i = 0; tok && i < 4; i++)
        tok = mnt = strtok_r(NULL, " ", &save);
    if (!mnt)
        return;
    unescape(mnt);
    for (char *opt = superopts; *opt;) {
        size_t len = strcspn(opt, ",");
        int c = ctrl_index(opt, len);
        if (c >= 0 && !l->path[c]) /* a hierarchy mounted twice: the first mount will do */
            l->path[c] = xstrdup(mnt);
        opt += len + (opt[len] == ',');
    }
}

static void load_mountinfo(struct layout *l)
{
    cleanup_fclose FILE *f = fopen("/proc/self/mountinfo", "re");
    cleanup_free char *line = NULL;
    size_t cap = 0;
    while (f && getline(&line, &cap, f) > 0)
        parse_mountinfo_line(l, line);
    layout_finish(l);
}

/* The usual layout, /sys/fs/cgroup/<controller> (co-mounted ones: symlinks to one mount), found with a
 * statfs per controller: reading mountinfo costs a start ~0.1 ms. A hierarchy is told by its filesystem
 * id (kernfs gives each its own), or by its device where the kernel reports no id. False if any
 * controller is not there: mountinfo then has the last word. */
static bool probe_standard(struct layout *l)
{
    unsigned long long dev[NCTRL];
    for (int c = 0; c < NCTRL; c++) {
        char path[64];
        struct statfs sfs;
        struct stat st;
        snprintf(path, sizeof path, "/sys/fs/cgroup/%s", ctrl_names[c]);
        if (statfs(path, &sfs) < 0 || sfs.f_type != CGROUP_SUPER_MAGIC) {
            layout_clear(l);
            return false;
        }
        unsigned long long id;
        memcpy(&id, &sfs.f_fsid, sizeof id);
        if (id == 0) {
            if (stat(path, &st) < 0) {
                layout_clear(l);
                return false;
            }
            id = st.st_dev;
        }
        dev[c] = id;
        for (int d = 0; d < c && !l->path[c]; d++)
            if (dev[d] == dev[c]) /* one hierarchy: one path, so that layout_finish counts it once */
                l->path[c] = xstrdup(l->path[d]);
        if (!l->path[c])
            l->path[c] = xstrdup(path);
    }
    layout_finish(l);
    return true;
}

static const struct layout *layout(void)
{
    pthread_mutex_lock(&layout_lock);
    const struct layout *l = use_injected ? &injected : &mounted;
    if (!use_injected && !mounted_loaded) {
        if (!probe_standard(&mounted))
            load_mountinfo(&mounted);
        mounted_loaded = true;
    }
    pthread_mutex_unlock(&layout_lock);
    return l;
}

void kago__cgroup_v1_set_mounts(const struct kago__cgroup_v1_mount *m, size_t n)
{
    pthread_mutex_lock(&layout_lock);
    layout_clear(&injected);
    for (size_t i = 0; i < n; i++) {
        int c = ctrl_index(m[i].controller, strlen(m[i].controller));
        if (c >= 0) {
            free(injected.path[c]);
            injected.path[c] = xstrdup(m[i].path);
        }
    }
    layout_finish(&injected);
    use_injected = n > 0;
    pthread_mutex_unlock(&layout_lock);
}

bool kago__cgroup_v1_present(void)
{
    return layout()->nhier > 0;
}

/* The container's directory in controller c's hierarchy. */
static int ctrl_dir(const struct kago__cgroup *cg, const struct layout *l, int c, char *dir,
                    struct kago_error **err)
{
    if (!l->path[c])
        return kago_error_set(err, 0, "cgroup %s: the %s controller is not mounted", cg->path, ctrl_names[c]);
    return kago__cg_dir(dir, PATH_MAX, l->path[c], cg->path, err);
}

/* Whether controller c is mounted at hierarchy h (co-mounted controllers have equal paths). */
static bool at(const struct layout *l, int c, const char *h)
{
    return l->path[c] && !strcmp(l->path[c], h);
}

/* Whether every controller mounted at hierarchy h is made on demand only. */
static bool hier_on_demand(const struct layout *l, const char *h)
{
    for (int c = 0; c < NCTRL; c++)
        if (at(l, c, h) && !on_demand(c))
            return false;
    return true;
}

/* Whether a container with these limits gets a cgroup in hierarchy h. */
static bool hier_wanted(const struct layout *l, const char *h, const struct kago_limits *lim)
{
    for (int c = 0; c < NCTRL; c++)
        if (at(l, c, h) && (!on_demand(c) || uses(lim, c)))
            return true;
    return false;
}

/* The index in l->hier of the freezer's hierarchy (0 without one). Processes enter it first: kago
 * update, which adds a hierarchy, moves in whatever the frozen freezer cgroup holds, and a process that
 * enters the freezer after that finds the new hierarchy made. */
static size_t first_hier(const struct layout *l)
{
    for (size_t i = 0; i < l->nhier; i++)
        if (at(l, C_FREEZER, l->hier[i]))
            return i;
    return 0;
}

static bool blank(const char *s)
{
    return !s[strspn(s, " \n")];
}

/* A new cpuset cgroup starts with no CPUs and no memory nodes, and no process may enter it until both are
 * set. Each parent kago makes copies those of the one above it and sets clone_children, so the kernel seeds
 * each container's cgroup at mkdir. */
static int prepare_parent(const struct kago__cgroup *cg, const char *base, const char *above, const char *dir,
                          struct kago_error **err)
{
    const struct layout *l = layout();
    if (!l->path[C_CPUSET] || strcmp(base, l->path[C_CPUSET]) != 0)
        return 0;
    char v[4096];
    static const char *const files[] = {"cpuset.cpus", "cpuset.mems"};
    for (size_t i = 0; i < 2; i++) {
        ssize_t n = kago__cg_read(cg, above, files[i], v, sizeof v, err);
        if (n == -ENOENT) { /* a tree without cpuset files (the unit tests' fake cgroupfs) */
            kago_error_clear(err);
            return 0;
        }
        if (n < 0 || kago__cg_write(cg, dir, files[i], v, err) < 0)
            return -1;
    }
    return kago__cg_write(cg, dir, "cgroup.clone_children", "1", err);
}

/* The parent existed: its maker may still be preparing it, or an older kago made it without
 * clone_children. Seed the container's cpuset if the kernel did not. */
static int seed_cpuset(const struct kago__cgroup *cg, const char *base, struct kago_error **err)
{
    char dir[PATH_MAX], parent[PATH_MAX], v[4096];
    if (kago__cg_dir(dir, sizeof dir, base, cg->path, err) < 0 ||
        kago__cg_dir(parent, sizeof parent, base, cg->parent, err) < 0)
        return -1;
    ssize_t n = kago__cg_read(cg, dir, "cpuset.mems", v, sizeof v, err);
    if (n == -ENOENT) {
        kago_error_clear(err);
        return 0; /* no cpuset files: the unit tests' fake tree */
    }
    if (n < 0)
        return -1;
    if (!blank(v))
        return 0;
    static const char *const files[] = {"cpuset.cpus", "cpuset.mems"};
    for (size_t i = 0; i < 2; i++) {
        if (kago__cg_read(cg, parent, files[i], v, sizeof v, err) < 0)
            return -1;
        if (blank(v) && kago__cg_read(cg, base, files[i], v, sizeof v, err) < 0)
            return -1;
        if (kago__cg_write(cg, dir, files[i], v, err) < 0)
            return -1;
    }
    return 0;
}

/* mkdir the container's cgroup in hierarchy h (and its parent, prepared). */
static int make_in(struct kago__cgroup *cg, const struct layout *l, const char *h, struct kago_error **err)
{
    bool fresh_parent;
    if (kago__cg_mkdir(cg, h, prepare_parent, &fresh_parent, err) < 0)
        return -1;
    if (at(l, C_CPUSET, h) && !fresh_parent && seed_cpuset(cg, h, err) < 0) {
        kago__cg_rmdir(cg, h, NULL);
        return -1;
    }
    return 0;
}

static int v1_create(struct kago__cgroup *cg, const struct kago_limits *lim, struct kago_error **err)
{
    const struct layout *l = layout();
    if (!l->nhier)
        return kago_error_set(err, 0, "cgroup %s: no cgroup v1 controller is mounted", cg->path);
    size_t i;
    char dir[PATH_MAX];
    for (i = 0; i < l->nhier; i++) {
        if (hier_wanted(l, l->hier[i], lim)) {
            if (make_in(cg, l, l->hier[i], err) < 0)
                goto fail;
        } else if (kago__cg_dir(dir, sizeof dir, l->hier[i], cg->path, NULL) == 0 && rmdir(dir) == 0) {
            /* a dead container's of the same name: kago update must not take it for this one's */
        }
    }
    return 0;
fail:
    while (i-- > 0)
        kago__cg_rmdir(cg, l->hier[i], NULL);
    return -1;
}

/* The container's cgroup that lists all its processes: the freezer's (else the first hierarchy every
 * container has). */
static int members_dir(const struct kago__cgroup *cg, const struct layout *l, char *dir,
                       struct kago_error **err)
{
    const char *base = l->path[C_FREEZER];
    for (size_t i = 0; i < l->nhier && !base; i++)
        if (!hier_on_demand(l, l->hier[i]))
            base = l->hier[i];
    if (!base)
        return kago_error_set(err, 0, "cgroup %s: no cgroup v1 controller is mounted", cg->path);
    return kago__cg_dir(dir, PATH_MAX, base, cg->path, err);
}

static int v1_freeze(struct kago__cgroup *cg, bool frozen, struct kago_error **err);
static int v1_frozen(struct kago__cgroup *cg, struct kago_error **err);

/* Gives a running container a cgroup in controller c's hierarchy if it has none: mkdir, then moves every
 * process of its freezer cgroup in, frozen so that none forks past the move. */
static int ensure(struct kago__cgroup *cg, const struct layout *l, int c, struct kago_error **err)
{
    char dir[PATH_MAX], from[PATH_MAX];
    if (ctrl_dir(cg, l, c, dir, err) < 0)
        return -1;
    if (!on_demand(c) || access(dir, F_OK) == 0)
        return 0;
    if (members_dir(cg, l, from, err) < 0)
        return -1;
    if (access(from, F_OK) < 0)
        return kago_error_set(err, errno, "cgroup %s: %s", cg->path, from);
    if (make_in(cg, l, l->path[c], err) < 0)
        return -1;
    int frozen = l->path[C_FREEZER] ? v1_frozen(cg, err) : 1;
    if (frozen < 0 || (!frozen && v1_freeze(cg, true, err) < 0))
        goto fail;
    int ret = kago__cg_move_procs(cg, from, dir, err);
    /* none stays half moved: the new cgroup existing tells a later update that all are in it */
    if (ret < 0)
        kago__cg_move_procs(cg, dir, l->path[c], NULL);
    if (!frozen && v1_freeze(cg, false, ret < 0 ? NULL : err) < 0)
        ret = -1;
    if (ret == 0)
        return 0;
fail:
    kago__cg_rmdir(cg, l->path[c], NULL); /* busy (all moved, the thaw failed): delete removes it then */
    return -1;
}

static int v1_oom_fd(struct kago__cgroup *cg, struct kago_error **err)
{
    const struct layout *l = layout();
    char dir[PATH_MAX], path[PATH_MAX + 32], reg[64];
    if (ctrl_dir(cg, l, C_MEMORY, dir, err) < 0)
        return -1;
    int efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (efd < 0)
        return kago_error_set(err, errno, "cgroup %s: eventfd", cg->path);
    snprintf(path, sizeof path, "%s/memory.oom_control", dir);
    cleanup_close int ofd = open(path, O_RDONLY | O_CLOEXEC);
    if (ofd < 0) {
        kago_error_set(err, errno, "cgroup %s: open memory.oom_control", cg->path);
        close(efd);
        return -1;
    }
    /* the kernel keeps the registration until efd is closed */
    snprintf(reg, sizeof reg, "%d %d", efd, ofd);
    if (kago__cg_write(cg, dir, "cgroup.event_control", reg, err) < 0) {
        close(efd);
        return -1;
    }
    return efd;
}

static int v1_hold(struct kago__cgroup *cg, struct kago_error **err)
{
    const struct layout *l = layout();
    for (cg->nheld = 0; cg->nheld < l->nhier && cg->nheld < 8; cg->nheld++) {
        int fd = open(l->hier[cg->nheld], O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0) {
            kago_error_set(err, errno, "cgroup %s: open %s", cg->path, l->hier[cg->nheld]);
            kago__cg_unhold(cg);
            return -1;
        }
        cg->held[cg->nheld] = fd;
    }
    return 0;
}

/* Moves pid (0: the calling process, through `tasks`) into the cgroup of every hierarchy; through the
 * fds of held when it is not NULL. The freezer's first (see first_hier). A hierarchy made on demand that
 * has no cgroup for this container is skipped. */
static int enter_each(struct kago__cgroup *cg, const int *held, pid_t pid, struct kago_error **err)
{
    const struct layout *l = layout();
    char dir[PATH_MAX], path[PATH_MAX + 16], v[24];
    snprintf(v, sizeof v, "%d", (int)pid);
    /* A process moving itself ("0") through `tasks` skips the kernel's global threadgroup lock, whose
     * write side waits for an RCU grace period (milliseconds) on every cgroup.procs write. The caller is
     * single-threaded, so moving its one thread moves the process. */
    const char *file = pid == 0 ? "tasks" : "cgroup.procs";
    size_t first = first_hier(l);
    for (size_t k = 0; k < l->nhier; k++) {
        size_t i = k == 0 ? first : (k <= first ? k - 1 : k);
        if (kago__cg_dir(dir, sizeof dir, held ? "." : l->hier[i], cg->path, err) < 0)
            return -1;
        snprintf(path, sizeof path, "%s/%s", dir, file);
        cleanup_close int fd = openat(held ? held[i] : AT_FDCWD, path, O_WRONLY | O_CLOEXEC);
        if (fd < 0 && errno == ENOENT && hier_on_demand(l, l->hier[i]))
            continue;
        if (fd < 0 || write(fd, v, strlen(v)) < 0)
            return kago_error_set(err, errno, "cgroup %s: write %s \"%s\"", cg->path, file, v);
    }
    return 0;
}

/* The calling process's own cgroup in each hierarchy, from /proc/self/cgroup ("ID:controllers:path"). */
int kago__cg_v1_home_open(int *fds, size_t max, struct kago_error **err)
{
    const struct layout *l = layout();
    cleanup_fclose FILE *f = fopen("/proc/self/cgroup", "re");
    if (!f)
        return kago_error_set(err, errno, "open /proc/self/cgroup");
    char *lines[NCTRL] = {0}; /* each hierarchy's line's path, by controller */
    cleanup_free char *line = NULL;
    size_t cap = 0;
    while (getline(&line, &cap, f) > 0) {
        char *ctrls = strchr(line, ':'), *path = ctrls ? strchr(ctrls + 1, ':') : NULL;
        if (!path)
            continue;
        *path++ = '\0';
        path[strcspn(path, "\n")] = '\0';
        for (char *c = ctrls + 1; *c;) {
            size_t len = strcspn(c, ",");
            int k = ctrl_index(c, len);
            if (k >= 0 && !lines[k])
                lines[k] = xstrdup(path);
            c += len + (c[len] == ',');
        }
    }
    size_t n = 0;
    int ret = 0;
    for (size_t i = 0; i < l->nhier && ret == 0; i++) {
        const char *own = NULL;
        for (int c = 0; c < NCTRL && !own; c++)
            if (at(l, c, l->hier[i]))
                own = lines[c];
        char path[PATH_MAX];
        if (!own || n == max) {
            ret = kago_error_set(err, ENOENT, "cgroup: this process's own cgroup in %s", l->hier[i]);
        } else if (snprintf(path, sizeof path, "%s%s/tasks", l->hier[i], strcmp(own, "/") ? own : "") >=
                   (int)sizeof path) {
            ret = kago_error_set(err, ENAMETOOLONG, "cgroup: this process's own cgroup in %s", l->hier[i]);
        } else if ((fds[n] = open(path, O_WRONLY | O_CLOEXEC)) < 0) {
            ret = kago_error_set(err, errno, "cgroup: open %s", path);
        } else {
            n++;
        }
    }
    for (int c = 0; c < NCTRL; c++)
        free(lines[c]);
    if (ret < 0) {
        while (n)
            close(fds[--n]);
        return -1;
    }
    return (int)n;
}

int kago__cg_v1_home_return(const int *fds, size_t n, struct kago_error **err)
{
    for (size_t i = 0; i < n; i++)
        if (write(fds[i], "0", 1) < 0)
            return kago_error_set(err, errno, "cgroup: return to this process's own cgroup");
    return 0;
}

static int v1_enter(struct kago__cgroup *cg, pid_t pid, struct kago_error **err)
{
    if (pid != 0 || !cg->nheld)
        return enter_each(cg, NULL, pid, err);
    int ret = enter_each(cg, cg->held, 0, err);
    kago__cg_unhold(cg);
    return ret;
}

static int pass_error(struct kago_error **err, struct kago_error *e, int ret)
{
    if (err) {
        kago_error_free(*err);
        *err = e;
    } else {
        kago_error_free(e);
    }
    return ret;
}

/* memory.memsw.limit_in_bytes (memory + swap) must never be below memory.limit_in_bytes, and the kernel
 * checks each write on its own: lowering goes limit then memsw, raising memsw then limit. Try the limit
 * first; EINVAL means we are raising past memsw. memsw equal to the limit (no swap asked for) keeps the
 * container out of swap. */
static int v1_memory(const struct kago__cgroup *cg, const char *dir, int64_t bytes, int64_t swap,
                     struct kago_error **err)
{
    char v[24], sw[24];
    snprintf(v, sizeof v, "%" PRId64, bytes == KAGO_NOLIMIT ? (int64_t)-1 : bytes);
    if (swap)
        snprintf(sw, sizeof sw, "%" PRId64, swap == KAGO_NOLIMIT ? (int64_t)-1 : swap);
    else
        memcpy(sw, v, sizeof v);
    struct kago_error *e = NULL;
    int r = kago__cg_write(cg, dir, "memory.limit_in_bytes", v, &e);
    if (r == -EINVAL && kago__cg_write(cg, dir, "memory.memsw.limit_in_bytes", sw, NULL) == 0) {
        kago_error_free(e);
        return kago__cg_write(cg, dir, "memory.limit_in_bytes", v, err);
    }
    if (r < 0)
        return pass_error(err, e, r);
    r = kago__cg_write(cg, dir, "memory.memsw.limit_in_bytes", sw, &e);
    if (r == -ENOENT) { /* swap accounting is off: no memsw files */
        kago_error_free(e);
        return 0;
    }
    return r < 0 ? pass_error(err, e, r) : 0;
}

static int v1_cpu(struct kago__cgroup *cg, const struct layout *l, const struct kago_limits *lim,
                  struct kago_error **err)
{
    char dir[PATH_MAX], v[24];
    if (ensure(cg, l, C_CPU, err) < 0 || ctrl_dir(cg, l, C_CPU, dir, err) < 0)
        return -1;
    if (lim->cpu_quota_us != KAGO_UNSET || lim->cpu_period_us != KAGO_UNSET) {
        /* Like v2's cpu.max, a quota without a period means the default period. Each write of either file
         * makes the kernel check every CPU cgroup's quota (__cfs_schedulable: O(cgroups), ~3% of a storm of
         * 3,000 starts): a period already right (a new cgroup's is the default) is not written again. */
        int64_t period = lim->cpu_period_us == KAGO_UNSET ? (int64_t)100000 : lim->cpu_period_us, cur = -1;
        snprintf(v, sizeof v, "%" PRId64, period);
        if ((kago__cg_read_num(cg, dir, "cpu.cfs_period_us", NULL, &cur, NULL) < 0 || cur != period) &&
            kago__cg_write(cg, dir, "cpu.cfs_period_us", v, err) < 0)
            return -1;
    }
    if (lim->cpu_quota_us != KAGO_UNSET) {
        snprintf(v, sizeof v, "%" PRId64,
                 lim->cpu_quota_us == KAGO_NOLIMIT ? (int64_t)-1 : lim->cpu_quota_us);
        if (kago__cg_write(cg, dir, "cpu.cfs_quota_us", v, err) < 0)
            return -1;
    }
    if (lim->cpu_weight != KAGO_UNSET) {
        int64_t shares = lim->cpu_shares > 0 ? lim->cpu_shares : lim->cpu_weight * 1024 / 100;
        snprintf(v, sizeof v, "%" PRId64, shares < 2 ? (int64_t)2 : shares);
        if (kago__cg_write(cg, dir, "cpu.shares", v, err) < 0)
            return -1;
    }
    return 0;
}

static int v1_raw(struct kago__cgroup *cg, const struct layout *l, const struct kago_cgroup_kv *kv,
                  struct kago_error **err)
{
    if (kago__cg_check_key(cg, kv->key, err) < 0)
        return -1;
    char dir[PATH_MAX];
    int c = ctrl_index(kv->key, strcspn(kv->key, "."));
    if (c < 0)
        return kago_error_set(err, 0, "cgroup %s: unknown key \"%s\" (kago does not use the %.*s controller)",
                              cg->path, kv->key, (int)strcspn(kv->key, "."), kv->key);
    if (ensure(cg, l, c, err) < 0 || ctrl_dir(cg, l, c, dir, err) < 0)
        return -1;
    int r = kago__cg_write(cg, dir, kv->key, kv->value, err);
    if (r == -ENOENT)
        return kago_error_set(err, 0, "cgroup %s: unknown key \"%s\" (no such file in the %s hierarchy)",
                              cg->path, kv->key, ctrl_names[c]);
    return r;
}

static int v1_apply(struct kago__cgroup *cg, const struct kago_limits *lim, struct kago_error **err)
{
    const struct layout *l = layout();
    char dir[PATH_MAX], v[24];
    if ((lim->cpu_quota_us != KAGO_UNSET || lim->cpu_period_us != KAGO_UNSET ||
         lim->cpu_weight != KAGO_UNSET) &&
        v1_cpu(cg, l, lim, err) < 0)
        return -1;
    if (lim->memory != KAGO_UNSET && (ctrl_dir(cg, l, C_MEMORY, dir, err) < 0 ||
                                      v1_memory(cg, dir, lim->memory, lim->memory_swap, err) < 0))
        return -1;
    if (lim->pids != KAGO_UNSET) {
        if (lim->pids == KAGO_NOLIMIT)
            snprintf(v, sizeof v, "max");
        else
            snprintf(v, sizeof v, "%" PRId64, lim->pids);
        if (ensure(cg, l, C_PIDS, err) < 0 || ctrl_dir(cg, l, C_PIDS, dir, err) < 0 ||
            kago__cg_write(cg, dir, "pids.max", v, err) < 0)
            return -1;
    }
    if (lim->cpuset && (kago__cg_check_cpuset(lim->cpuset, err) < 0 || ensure(cg, l, C_CPUSET, err) < 0 ||
                        ctrl_dir(cg, l, C_CPUSET, dir, err) < 0 ||
                        kago__cg_write(cg, dir, "cpuset.cpus", lim->cpuset, err) < 0))
        return -1;
    for (size_t i = 0; i < lim->nraw; i++)
        if (v1_raw(cg, l, &lim->raw[i], err) < 0)
            return -1;
    return 0;
}

static int v1_devices(struct kago__cgroup *cg, unsigned mknod_any, struct kago_error **err)
{
    char dir[PATH_MAX];
    if (ctrl_dir(cg, layout(), C_DEVICES, dir, err) < 0 ||
        kago__cg_write(cg, dir, "devices.deny", "a", err) < 0)
        return -1;
    /* The devices controller takes one rule per write(), all through one open file. (At offset 0: a fake
     * tree's regular file then ends with the last rule, as the unit tests expect.) */
    char path[PATH_MAX + 16];
    snprintf(path, sizeof path, "%s/devices.allow", dir);
    cleanup_close int fd = open(path, O_WRONLY | O_CLOEXEC);
    for (size_t i = 0; i < kago__cg_ndevs; i++) {
        char rule[32];
        if (kago__cg_devs[i].minor < 0)
            snprintf(rule, sizeof rule, "c %u:* rwm", kago__cg_devs[i].major);
        else
            snprintf(rule, sizeof rule, "c %u:%d rwm", kago__cg_devs[i].major, kago__cg_devs[i].minor);
        if (fd < 0 || pwrite(fd, rule, strlen(rule), 0) != (ssize_t)strlen(rule))
            return kago_error_set(err, errno, "cgroup %s: write devices.allow \"%s\"", cg->path, rule);
    }
    static const char *const mknod[] = {"c *:* m", "b *:* m"};
    for (unsigned i = 0; i < 2; i++)
        if ((mknod_any & (1u << i)) && (fd < 0 || pwrite(fd, mknod[i], 7, 0) != 7))
            return kago_error_set(err, errno, "cgroup %s: write devices.allow \"%s\"", cg->path, mknod[i]);
    return 0;
}

static int v1_freeze(struct kago__cgroup *cg, bool frozen, struct kago_error **err)
{
    char dir[PATH_MAX], v[32];
    if (ctrl_dir(cg, layout(), C_FREEZER, dir, err) < 0 ||
        kago__cg_write(cg, dir, "freezer.state", frozen ? "FROZEN" : "THAWED", err) < 0)
        return -1;
    if (!frozen)
        return 0;
    /* FREEZING until every task has stopped; reading the state makes the kernel recheck. A fake tree
     * reads back what we wrote. */
    unsigned delay = 50;
    unsigned long long deadline = kago__now_us() + 2000000;
    do {
        if (kago__cg_read(cg, dir, "freezer.state", v, sizeof v, err) < 0)
            return -1;
        if (!strncmp(v, "FROZEN", 6))
            return 0;
    } while (kago__cg_backoff(&delay, deadline));
    kago__cg_write(cg, dir, "freezer.state", "THAWED", NULL); /* not left half-frozen */
    return kago_error_set(err, ETIMEDOUT, "cgroup %s: freeze: still %.*s after 2 s", cg->path,
                          (int)strcspn(v, "\n"), v);
}

static int v1_frozen(struct kago__cgroup *cg, struct kago_error **err)
{
    char dir[PATH_MAX], v[32];
    if (ctrl_dir(cg, layout(), C_FREEZER, dir, err) < 0 ||
        kago__cg_read(cg, dir, "freezer.state", v, sizeof v, err) < 0)
        return -1;
    return strncmp(v, "THAWED", 6) != 0; /* FREEZING counts as frozen: its tasks are being stopped */
}

/* A number from a controller file, or -1 when the controller or file is absent. */
static int read_num(struct kago__cgroup *cg, const struct layout *l, int c, const char *file, const char *key,
                    int64_t *out, struct kago_error **err)
{
    char dir[PATH_MAX];
    *out = -1;
    if (!l->path[c])
        return 0;
    if (kago__cg_dir(dir, sizeof dir, l->path[c], cg->path, err) < 0)
        return -1;
    return kago__cg_read_num(cg, dir, file, key, out, err);
}

static int v1_stats(struct kago__cgroup *cg, struct kago_stats *st, struct kago_error **err)
{
    const struct layout *l = layout();
    int64_t cpu_ns;
    if (read_num(cg, l, C_CPUACCT, "cpuacct.usage", NULL, &cpu_ns, err) < 0 ||
        read_num(cg, l, C_MEMORY, "memory.usage_in_bytes", NULL, &st->memory_current, err) < 0 ||
        read_num(cg, l, C_MEMORY, "memory.max_usage_in_bytes", NULL, &st->memory_peak, err) < 0 ||
        read_num(cg, l, C_PIDS, "pids.current", NULL, &st->pids_current, err) < 0 ||
        read_num(cg, l, C_MEMORY, "memory.oom_control", "oom_kill", &st->oom_kills, err) < 0)
        return -1;
    if (st->pids_current < 0) { /* no pids cgroup (no pids limit): count the tasks, as pids.current does */
        char dir[PATH_MAX];
        int n = members_dir(cg, l, dir, err) < 0 ? -1 : kago__cg_count_lines(cg, dir, "tasks", err);
        if (n < 0)
            return -1;
        st->pids_current = n;
    }
    st->cpu_usage_us = cpu_ns < 0 ? 0 : (uint64_t)cpu_ns / 1000;
    return 0;
}

static int v1_usage(struct kago__cgroup *cg, struct kago_stats *st, struct kago_error **err)
{
    const struct layout *l = layout();
    int64_t cpu_ns;
    if (read_num(cg, l, C_CPUACCT, "cpuacct.usage", NULL, &cpu_ns, err) < 0 ||
        read_num(cg, l, C_MEMORY, "memory.usage_in_bytes", NULL, &st->memory_current, err) < 0)
        return -1;
    st->cpu_usage_us = cpu_ns < 0 ? 0 : (uint64_t)cpu_ns / 1000;
    return 0;
}

/* v1: cpu.stat (throttled_time in ns) and cpuacct.usage; memory.usage_in_bytes and memory.failcnt
 * (v1 has no PSI per cgroup). */
static int v1_pressure(struct kago__cgroup *cg, unsigned what, struct kago_pressure *p,
                       struct kago_error **err)
{
    const struct layout *l = layout();
    if (what & KAGO_PRESSURE_CPU) {
        char dir[PATH_MAX], v[512];
        int64_t ns;
        if (read_num(cg, l, C_CPUACCT, "cpuacct.usage", NULL, &ns, err) < 0)
            return -1;
        p->cpu_usage_us = ns < 0 ? -1 : ns / 1000;
        if (l->path[C_CPU]) {
            if (kago__cg_dir(dir, sizeof dir, l->path[C_CPU], cg->path, err) < 0)
                return -1;
            ssize_t n = kago__cg_read(cg, dir, "cpu.stat", v, sizeof v, err);
            if (n == -ENOENT)
                kago_error_clear(err);
            else if (n < 0)
                return -1;
            else {
                kago__cg_key(v, "nr_periods", &p->nr_periods);
                kago__cg_key(v, "nr_throttled", &p->nr_throttled);
                if (kago__cg_key(v, "throttled_time", &ns))
                    p->throttled_us = ns / 1000;
            }
        }
    }
    if ((what & KAGO_PRESSURE_MEMORY) &&
        (read_num(cg, l, C_MEMORY, "memory.usage_in_bytes", NULL, &p->memory_current, err) < 0 ||
         read_num(cg, l, C_MEMORY, "memory.failcnt", NULL, &p->memory_events, err) < 0))
        return -1;
    return 0;
}

static int v1_kill_all(struct kago__cgroup *cg, int sig, struct kago_error **err)
{
    const struct layout *l = layout();
    char dir[PATH_MAX];
    if (!l->nhier)
        return kago_error_set(err, 0, "cgroup %s: no cgroup v1 controller is mounted", cg->path);
    if (members_dir(cg, l, dir, err) < 0)
        return -1;
    int n = kago__cg_kill_procs(cg, dir, sig, err);
    /* v1 frozen tasks do not act on SIGKILL until thawed. */
    if (n >= 0 && sig == SIGKILL && l->path[C_FREEZER] &&
        (ctrl_dir(cg, l, C_FREEZER, dir, err) < 0 ||
         kago__cg_write(cg, dir, "freezer.state", "THAWED", err) < 0))
        return -1;
    return n;
}

static int v1_destroy(struct kago__cgroup *cg, struct kago_error **err)
{
    const struct layout *l = layout();
    int ret = 0;
    /* Every hierarchy, even after a failure, so as little as possible is left behind. */
    for (size_t i = 0; i < l->nhier; i++) {
        if (kago__cg_rmdir(cg, l->hier[i], ret < 0 ? NULL : err) < 0)
            ret = -1;
    }
    return ret;
}

static int v1_open_dir(struct kago__cgroup *cg, struct kago_error **err)
{
    return -1; /* no single directory to clone into: enter() writes each hierarchy's cgroup.procs */
}

static int v1_members(const struct kago__cgroup *cg, char *dir, struct kago_error **err)
{
    return members_dir(cg, layout(), dir, err);
}

static size_t v1_views(const struct kago__cgroup *cg, struct kago__cg_view *out, size_t max)
{
    const struct layout *l = layout();
    size_t n = 0;
    for (size_t i = 0; i < l->nhier && n < max; i++) {
        const char *slash = strrchr(l->hier[i], '/');
        struct stat st;
        if (kago__cg_dir(out[n].dir, sizeof out[n].dir, l->hier[i], cg->path, NULL) < 0 ||
            stat(out[n].dir, &st) < 0) /* a hierarchy made on demand that this container does not use */
            continue;
        snprintf(out[n].name, sizeof out[n].name, "%s", slash ? slash + 1 : l->hier[i]);
        n++;
    }
    return n;
}

const struct kago__cgroup_ops kago__cgroup_v1 = {
    .views = v1_views,
    .members = v1_members,
    .name = "v1",
    .create = v1_create,
    .enter = v1_enter,
    .hold = v1_hold,
    .oom_fd = v1_oom_fd,
    .apply = v1_apply,
    .devices = v1_devices,
    .freeze = v1_freeze,
    .frozen = v1_frozen,
    .stats = v1_stats,
    .usage = v1_usage,
    .pressure = v1_pressure,
    .kill_all = v1_kill_all,
    .destroy = v1_destroy,
    .open_dir = v1_open_dir,
};
