/* cgroup v2 backend: one directory, <mountpoint>/kago/<name>, with the controllers kago needs enabled
 * in the root's and kago's cgroup.subtree_control. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <linux/bpf.h>
#include <pthread.h>
#include <sys/inotify.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "cgroup.h"

static const char *const wanted[] = {"cpu", "memory", "pids", "cpuset", "io"};

/* Whether the space-separated list holds word (a fake tree's subtree_control reads back "+cpu"). */
static bool has_word(const char *list, const char *word)
{
    size_t wlen = strlen(word);
    for (const char *p = list; *p;) {
        p += strspn(p, " \n+");
        size_t len = strcspn(p, " \n");
        if (len == wlen && !strncmp(p, word, len))
            return true;
        p += len;
    }
    return false;
}

/* Enables in dir's subtree_control the wanted controllers that dir has and has not enabled yet. */
static int enable_controllers(const struct kago__cgroup *cg, const char *dir, struct kago_error **err)
{
    char avail[512], enabled[512], req[64] = "";
    ssize_t n = kago__cg_read(cg, dir, "cgroup.controllers", avail, sizeof avail, err);
    if (n == -ENOENT) { /* not a cgroup directory: the unit tests' fake tree */
        kago_error_clear(err);
        return 0;
    }
    if (n < 0 || kago__cg_read(cg, dir, "cgroup.subtree_control", enabled, sizeof enabled, err) < 0)
        return -1;
    for (size_t i = 0; i < sizeof wanted / sizeof *wanted; i++) {
        if (has_word(avail, wanted[i]) && !has_word(enabled, wanted[i])) {
            strcat(req, *req ? " +" : "+");
            strcat(req, wanted[i]);
        }
    }
    /* One write: the kernel applies the whole list or nothing. */
    return *req ? kago__cg_write(cg, dir, "cgroup.subtree_control", req, err) : 0;
}

static int prepare_parent(const struct kago__cgroup *cg, const char *base, const char *above, const char *dir,
                          struct kago_error **err)
{
    (void)base;
    return enable_controllers(cg, above, err) < 0 || enable_controllers(cg, dir, err) < 0 ? -1 : 0;
}

/* Enables the controllers from the root down to the container's parent (a parent made by a racing or older
 * process may not have them yet). */
static int enable_chain(const struct kago__cgroup *cg, struct kago_error **err)
{
    char dir[PATH_MAX];
    if (kago__cg_dir(dir, sizeof dir, cg->mountpoint, cg->parent, err) < 0)
        return -1;
    for (char *p = dir + strlen(cg->mountpoint);; p += 1 + strcspn(p + 1, "/")) {
        char saved = *p;
        *p = '\0';
        int r = enable_controllers(cg, dir, err);
        *p = saved;
        if (r < 0)
            return -1;
        if (!saved)
            return 0;
    }
}

static int v2_create(struct kago__cgroup *cg, const struct kago_limits *lim, struct kago_error **err)
{
    (void)lim; /* one directory holds every controller */
    bool fresh_parent;
    return kago__cg_mkdir(cg, cg->mountpoint, prepare_parent, &fresh_parent, err);
}

/* A child that enters its cgroup itself (not cloned into it) does so after pivot_root: through the mount
 * held open before. */
static int v2_hold(struct kago__cgroup *cg, struct kago_error **err)
{
    if ((cg->held[0] = open(cg->mountpoint, O_PATH | O_DIRECTORY | O_CLOEXEC)) < 0)
        return kago_error_set(err, errno, "cgroup %s: open %s", cg->path, cg->mountpoint);
    cg->nheld = 1;
    return 0;
}

static int v2_enter(struct kago__cgroup *cg, pid_t pid, struct kago_error **err)
{
    char dir[PATH_MAX], v[24];
    snprintf(v, sizeof v, "%d", (int)pid);
    bool held = pid == 0 && cg->nheld;
    if (kago__cg_dir(dir, sizeof dir, held ? "." : cg->mountpoint, cg->path, err) < 0)
        return -1;
    int ret = kago__cg_write_at(cg, held ? cg->held[0] : AT_FDCWD, dir, "cgroup.procs", v, err);
    if (held)
        kago__cg_unhold(cg);
    return ret;
}

/* A controller file missing means the controller is not enabled for kago's cgroups: a "kago" parent
 * made by a racing or older process that had not enabled it yet. Enable, then retry once. */
static int write_ctrl(const struct kago__cgroup *cg, const char *dir, const char *file, const char *v,
                      struct kago_error **err)
{
    int r = kago__cg_write(cg, dir, file, v, err);
    if (r != -ENOENT)
        return r;
    kago_error_clear(err);
    if (enable_chain(cg, err) < 0)
        return -1;
    return kago__cg_write(cg, dir, file, v, err);
}

static int v2_cpu(const struct kago__cgroup *cg, const char *dir, const struct kago_limits *lim,
                  struct kago_error **err)
{
    char v[96], cur[32];
    if (lim->cpu_quota_us != KAGO_UNSET || lim->cpu_period_us != KAGO_UNSET) {
        int64_t period = lim->cpu_period_us == KAGO_UNSET ? 100000 : lim->cpu_period_us;
        if (lim->cpu_quota_us == KAGO_UNSET) { /* a new period alone keeps the quota */
            if (kago__cg_read(cg, dir, "cpu.max", cur, sizeof cur, err) < 0)
                return -1;
            cur[strcspn(cur, " \n")] = '\0';
            snprintf(v, sizeof v, "%s %" PRId64, cur, period);
        } else if (lim->cpu_quota_us == KAGO_NOLIMIT) {
            snprintf(v, sizeof v, "max %" PRId64, period);
        } else {
            snprintf(v, sizeof v, "%" PRId64 " %" PRId64, lim->cpu_quota_us, period);
        }
        if (write_ctrl(cg, dir, "cpu.max", v, err) < 0)
            return -1;
    }
    if (lim->cpu_weight != KAGO_UNSET) {
        snprintf(v, sizeof v, "%" PRId64, lim->cpu_weight);
        if (write_ctrl(cg, dir, "cpu.weight", v, err) < 0)
            return -1;
    }
    return 0;
}

static int max_or_num(char *v, size_t size, int64_t n)
{
    return n == KAGO_NOLIMIT ? snprintf(v, size, "max") : snprintf(v, size, "%" PRId64, n);
}

static int v2_apply(struct kago__cgroup *cg, const struct kago_limits *lim, struct kago_error **err)
{
    char dir[PATH_MAX], v[64];
    if (kago__cg_dir(dir, sizeof dir, cg->mountpoint, cg->path, err) < 0)
        return -1;
    if ((lim->cpu_quota_us != KAGO_UNSET || lim->cpu_period_us != KAGO_UNSET ||
         lim->cpu_weight != KAGO_UNSET) &&
        v2_cpu(cg, dir, lim, err) < 0)
        return -1;
    if (lim->memory != KAGO_UNSET) {
        max_or_num(v, sizeof v, lim->memory);
        if (write_ctrl(cg, dir, "memory.max", v, err) < 0)
            return -1;
        /* No swap under a limit unless asked for, as v1's memsw.limit == limit: a container at its limit is
         * OOM-killed (and counted in oom_kills) instead of slowly swapping. Absent without swap accounting.
         */
        if (lim->memory == KAGO_NOLIMIT || lim->memory_swap == KAGO_NOLIMIT)
            snprintf(v, sizeof v, "max");
        else
            snprintf(v, sizeof v, "%" PRId64, lim->memory_swap ? lim->memory_swap - lim->memory : 0);
        int r = kago__cg_write(cg, dir, "memory.swap.max", v, err);
        if (r == -ENOENT)
            kago_error_clear(err);
        else if (r < 0)
            return -1;
    }
    if (lim->pids != KAGO_UNSET) {
        max_or_num(v, sizeof v, lim->pids);
        if (write_ctrl(cg, dir, "pids.max", v, err) < 0)
            return -1;
    }
    if (lim->cpuset && (kago__cg_check_cpuset(lim->cpuset, err) < 0 ||
                        write_ctrl(cg, dir, "cpuset.cpus", lim->cpuset, err) < 0))
        return -1;
    for (size_t i = 0; i < lim->nraw; i++) {
        const struct kago_cgroup_kv *kv = &lim->raw[i];
        if (kago__cg_check_key(cg, kv->key, err) < 0)
            return -1;
        int r = write_ctrl(cg, dir, kv->key, kv->value, err);
        if (r == -ENOENT)
            return kago_error_set(err, 0, "cgroup %s: unknown key \"%s\" (no such file)", cg->path, kv->key);
        if (r < 0)
            return -1;
    }
    return 0;
}

/* One eBPF instruction. */
static struct bpf_insn insn(uint8_t code, uint8_t dst, uint8_t src, int16_t off, int32_t imm)
{
    return (struct bpf_insn){.code = code, .dst_reg = dst, .src_reg = src, .off = off, .imm = imm};
}

/* The device program: allows kago's devices (any access), and mknod alone of any character (block) device
 * when mknod_any has KAGO_MKNOD_CHAR (BLOCK); refuses everything else. Its context is struct
 * bpf_cgroup_dev_ctx: access_type (access << 16 | type), major, minor. */
static size_t device_program(struct bpf_insn *p, unsigned mknod_any)
{
    size_t n = 0;
    p[n++] = insn(BPF_LDX | BPF_MEM | BPF_W, BPF_REG_2, BPF_REG_1, 0, 0);   /* r2 = access_type */
    p[n++] = insn(BPF_ALU64 | BPF_MOV | BPF_X, BPF_REG_5, BPF_REG_2, 0, 0); /* r5 = access_type */
    p[n++] = insn(BPF_ALU64 | BPF_RSH | BPF_K, BPF_REG_5, 0, 0, 16);        /* r5 = access */
    p[n++] = insn(BPF_ALU64 | BPF_AND | BPF_K, BPF_REG_2, 0, 0, 0xffff);    /* r2 = type */
    p[n++] = insn(BPF_LDX | BPF_MEM | BPF_W, BPF_REG_3, BPF_REG_1, 4, 0);   /* r3 = major */
    p[n++] = insn(BPF_LDX | BPF_MEM | BPF_W, BPF_REG_4, BPF_REG_1, 8, 0);   /* r4 = minor */
    static const int types[] = {BPF_DEVCG_DEV_CHAR, BPF_DEVCG_DEV_BLOCK};
    for (unsigned i = 0; i < 2; i++) {
        if (!(mknod_any & (1u << i)))
            continue;
        p[n++] = insn(BPF_JMP | BPF_JNE | BPF_K, BPF_REG_2, 0, 3, types[i]);
        p[n++] = insn(BPF_JMP | BPF_JNE | BPF_K, BPF_REG_5, 0, 2, BPF_DEVCG_ACC_MKNOD);
        p[n++] = insn(BPF_ALU64 | BPF_MOV | BPF_K, BPF_REG_0, 0, 0, 1);
        p[n++] = insn(BPF_JMP | BPF_EXIT, 0, 0, 0, 0);
    }
    for (size_t i = 0; i < kago__cg_ndevs; i++) {
        bool any = kago__cg_devs[i].minor < 0;
        /* on a mismatch, jump past this rule's "return 1" */
        p[n++] = insn(BPF_JMP | BPF_JNE | BPF_K, BPF_REG_2, 0, any ? 3 : 4, BPF_DEVCG_DEV_CHAR);
        p[n++] = insn(BPF_JMP | BPF_JNE | BPF_K, BPF_REG_3, 0, any ? 2 : 3, (int32_t)kago__cg_devs[i].major);
        if (!any)
            p[n++] = insn(BPF_JMP | BPF_JNE | BPF_K, BPF_REG_4, 0, 2, kago__cg_devs[i].minor);
        p[n++] = insn(BPF_ALU64 | BPF_MOV | BPF_K, BPF_REG_0, 0, 0, 1);
        p[n++] = insn(BPF_JMP | BPF_EXIT, 0, 0, 0, 0);
    }
    p[n++] = insn(BPF_ALU64 | BPF_MOV | BPF_K, BPF_REG_0, 0, 0, 0);
    p[n++] = insn(BPF_JMP | BPF_EXIT, 0, 0, 0, 0);
    return n;
}

/* The loaded programs, once per process and mknod_any (kago serve attaches one to every container). */
static pthread_mutex_t prog_lock = PTHREAD_MUTEX_INITIALIZER;
static int prog_fd[4] = {-1, -1, -1, -1};

static int load_device_program(unsigned mknod_any, struct kago_error **err)
{
    mknod_any &= 3;
    pthread_mutex_lock(&prog_lock);
    if (prog_fd[mknod_any] < 0) {
        struct bpf_insn p[16 + 5 * 16];
        size_t n = device_program(p, mknod_any);
        union bpf_attr a = {.prog_type = BPF_PROG_TYPE_CGROUP_DEVICE,
                            .insns = (uint64_t)(uintptr_t)p,
                            .insn_cnt = (uint32_t)n,
                            .license = (uint64_t)(uintptr_t) "GPL"};
        prog_fd[mknod_any] = (int)syscall(SYS_bpf, BPF_PROG_LOAD, &a, sizeof a); /* close-on-exec */
        if (prog_fd[mknod_any] < 0)
            kago_error_set(err, errno, "cgroup: load the device program (BPF)");
    }
    int fd = prog_fd[mknod_any];
    pthread_mutex_unlock(&prog_lock);
    return fd;
}

static int v2_devices(struct kago__cgroup *cg, unsigned mknod_any, struct kago_error **err)
{
    /* v2 has no devices files: a BPF program attached to the container's cgroup does what v1's
     * devices.allow does (as crun and runc do). Every writable mount kago makes is nodev as well. */
    char dir[PATH_MAX];
    if (kago__cg_dir(dir, sizeof dir, cg->mountpoint, cg->path, err) < 0)
        return -1;
    if (!kago__cg_is_cgroupfs(dir))
        return 0; /* the unit tests' fake tree */
    int prog = load_device_program(mknod_any, err);
    if (prog < 0)
        return kago_error_prefix(err, "cgroup %s", cg->path), -1;
    cleanup_close int cgfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (cgfd < 0)
        return kago_error_set(err, errno, "cgroup %s: open %s", cg->path, dir);
    union bpf_attr a = {
        .target_fd = (uint32_t)cgfd, .attach_bpf_fd = (uint32_t)prog, .attach_type = BPF_CGROUP_DEVICE};
    if (syscall(SYS_bpf, BPF_PROG_ATTACH, &a, sizeof a) < 0)
        return kago_error_set(err, errno, "cgroup %s: attach the device program", cg->path);
    return 0;
}

/* Waits (bounded) until cgroup.events says "frozen 1"; the kernel wakes poll() on every change. */
static int wait_frozen(const struct kago__cgroup *cg, const char *dir, struct kago_error **err)
{
    char path[PATH_MAX + 16], v[256];
    snprintf(path, sizeof path, "%s/cgroup.events", dir);
    cleanup_close int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return kago_error_set(err, errno, "cgroup %s: open cgroup.events", cg->path);
    unsigned long long deadline = kago__now_us() + 2000000;
    for (;;) {
        ssize_t n = pread(fd, v, sizeof v - 1, 0);
        if (n < 0)
            return kago_error_set(err, errno, "cgroup %s: read cgroup.events", cg->path);
        v[n] = '\0';
        int64_t frozen = 0;
        if (kago__cg_key(v, "frozen", &frozen) && frozen == 1)
            return 0;
        unsigned long long now = kago__now_us();
        if (now >= deadline)
            break;
        struct pollfd p = {.fd = fd, .events = POLLPRI};
        if (poll(&p, 1, (int)((deadline - now) / 1000) + 1) < 0 && errno != EINTR)
            return kago_error_set(err, errno, "cgroup %s: poll cgroup.events", cg->path);
    }
    kago__cg_write(cg, dir, "cgroup.freeze", "0", NULL); /* not left half-frozen */
    return kago_error_set(err, ETIMEDOUT, "cgroup %s: freeze: not frozen after 2 s", cg->path);
}

static int v2_freeze(struct kago__cgroup *cg, bool frozen, struct kago_error **err)
{
    char dir[PATH_MAX];
    if (kago__cg_dir(dir, sizeof dir, cg->mountpoint, cg->path, err) < 0 ||
        kago__cg_write(cg, dir, "cgroup.freeze", frozen ? "1" : "0", err) < 0)
        return -1;
    /* A fake tree's cgroup.events never changes: nothing to wait for there. */
    if (!frozen || !kago__cg_is_cgroupfs(dir))
        return 0;
    return wait_frozen(cg, dir, err);
}

static int v2_frozen(struct kago__cgroup *cg, struct kago_error **err)
{
    char dir[PATH_MAX], v[16];
    if (kago__cg_dir(dir, sizeof dir, cg->mountpoint, cg->path, err) < 0 ||
        kago__cg_read(cg, dir, "cgroup.freeze", v, sizeof v, err) < 0)
        return -1;
    return v[0] == '1';
}

static int v2_oom_fd(struct kago__cgroup *cg, struct kago_error **err)
{
    char dir[PATH_MAX], path[PATH_MAX + 16];
    if (kago__cg_dir(dir, sizeof dir, cg->mountpoint, cg->path, err) < 0)
        return -1;
    int fd = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
    if (fd < 0)
        return kago_error_set(err, errno, "cgroup %s: inotify", cg->path);
    /* the kernel marks memory.events modified whenever one of its counters (oom_kill among them) moves */
    snprintf(path, sizeof path, "%s/memory.events", dir);
    if (inotify_add_watch(fd, path, IN_MODIFY) < 0) {
        kago_error_set(err, errno, "cgroup %s: watch memory.events", cg->path);
        close(fd);
        return -1;
    }
    return fd;
}

static int v2_stats(struct kago__cgroup *cg, struct kago_stats *st, struct kago_error **err)
{
    char dir[PATH_MAX];
    int64_t cpu_us;
    if (kago__cg_dir(dir, sizeof dir, cg->mountpoint, cg->path, err) < 0 ||
        kago__cg_read_num(cg, dir, "cpu.stat", "usage_usec", &cpu_us, err) < 0 ||
        kago__cg_read_num(cg, dir, "memory.current", NULL, &st->memory_current, err) < 0 ||
        kago__cg_read_num(cg, dir, "memory.peak", NULL, &st->memory_peak, err) < 0 ||
        kago__cg_read_num(cg, dir, "pids.current", NULL, &st->pids_current, err) < 0 ||
        kago__cg_read_num(cg, dir, "memory.events", "oom_kill", &st->oom_kills, err) < 0)
        return -1;
    st->cpu_usage_us = cpu_us < 0 ? 0 : (uint64_t)cpu_us;
    return 0;
}

static int v2_usage(struct kago__cgroup *cg, struct kago_stats *st, struct kago_error **err)
{
    char dir[PATH_MAX];
    int64_t cpu_us;
    if (kago__cg_dir(dir, sizeof dir, cg->mountpoint, cg->path, err) < 0 ||
        kago__cg_read_num(cg, dir, "cpu.stat", "usage_usec", &cpu_us, err) < 0 ||
        kago__cg_read_num(cg, dir, "memory.current", NULL, &st->memory_current, err) < 0)
        return -1;
    st->cpu_usage_us = cpu_us < 0 ? 0 : (uint64_t)cpu_us;
    return 0;
}

/* v2: cpu.stat (usage, periods, throttling); memory.current, memory.events (high + max: the limit was
 * reached) and memory.pressure's "some total=" (PSI, microseconds stalled; absent without CONFIG_PSI). */
static int v2_pressure(struct kago__cgroup *cg, unsigned what, struct kago_pressure *p,
                       struct kago_error **err)
{
    char dir[PATH_MAX], v[1024];
    if (kago__cg_dir(dir, sizeof dir, cg->mountpoint, cg->path, err) < 0)
        return -1;
    if (what & KAGO_PRESSURE_CPU) {
        ssize_t n = kago__cg_read(cg, dir, "cpu.stat", v, sizeof v, err);
        if (n < 0)
            return -1;
        kago__cg_key(v, "usage_usec", &p->cpu_usage_us);
        kago__cg_key(v, "nr_periods", &p->nr_periods);
        kago__cg_key(v, "nr_throttled", &p->nr_throttled);
        kago__cg_key(v, "throttled_usec", &p->throttled_us);
    }
    if (what & KAGO_PRESSURE_MEMORY) {
        if (kago__cg_read_num(cg, dir, "memory.current", NULL, &p->memory_current, err) < 0)
            return -1;
        ssize_t n = kago__cg_read(cg, dir, "memory.events", v, sizeof v, err);
        if (n < 0)
            return -1;
        int64_t high = 0, max = 0;
        kago__cg_key(v, "high", &high);
        kago__cg_key(v, "max", &max);
        p->memory_events = high + max;
        n = kago__cg_read(cg, dir, "memory.pressure", v, sizeof v, err);
        if (n == -ENOENT || n == -EOPNOTSUPP) {
            kago_error_clear(err);
        } else if (n < 0) {
            return -1;
        } else { /* "some avg10=0.00 avg60=0.00 avg300=0.00 total=123" */
            const char *t = strstr(v, "total=");
            if (!strncmp(v, "some", 4) && t)
                p->memory_stall_us = strtoll(t + 6, NULL, 10);
        }
    }
    return 0;
}

static int v2_kill_all(struct kago__cgroup *cg, int sig, struct kago_error **err)
{
    char dir[PATH_MAX];
    if (kago__cg_dir(dir, sizeof dir, cg->mountpoint, cg->path, err) < 0)
        return -1;
    if (sig == SIGKILL) {
        /* cgroup.kill (5.14+) kills every member atomically, forks included, frozen or not. */
        int n = kago__cg_count_lines(cg, dir, "cgroup.procs", err);
        if (n < 0)
            return -1;
        int r = kago__cg_write(cg, dir, "cgroup.kill", "1", err);
        if (r == 0)
            return n;
        if (r != -ENOENT)
            return -1;
        kago_error_clear(err);
    }
    return kago__cg_kill_procs(cg, dir, sig, err);
}

static int v2_destroy(struct kago__cgroup *cg, struct kago_error **err)
{
    return kago__cg_rmdir(cg, cg->mountpoint, err);
}

static int v2_open_dir(struct kago__cgroup *cg, struct kago_error **err)
{
    char dir[PATH_MAX];
    if (kago__cg_dir(dir, sizeof dir, cg->mountpoint, cg->path, err) < 0)
        return -1;
    int fd = open(dir, O_DIRECTORY | O_PATH | O_CLOEXEC);
    if (fd < 0)
        return kago_error_set(err, errno, "cgroup %s: open %s", cg->path, dir);
    return fd;
}

static int v2_members(const struct kago__cgroup *cg, char *dir, struct kago_error **err)
{
    return kago__cg_dir(dir, PATH_MAX, cg->mountpoint, cg->path, err);
}

static size_t v2_views(const struct kago__cgroup *cg, struct kago__cg_view *out, size_t max)
{
    if (!max || kago__cg_dir(out[0].dir, sizeof out[0].dir, cg->mountpoint, cg->path, NULL) < 0)
        return 0;
    out[0].name[0] = '\0';
    return 1;
}

const struct kago__cgroup_ops kago__cgroup_v2 = {
    .views = v2_views,
    .members = v2_members,
    .name = "v2",
    .create = v2_create,
    .enter = v2_enter,
    .hold = v2_hold,
    .apply = v2_apply,
    .devices = v2_devices,
    .freeze = v2_freeze,
    .frozen = v2_frozen,
    .stats = v2_stats,
    .usage = v2_usage,
    .pressure = v2_pressure,
    .oom_fd = v2_oom_fd,
    .kill_all = v2_kill_all,
    .destroy = v2_destroy,
    .open_dir = v2_open_dir,
};
