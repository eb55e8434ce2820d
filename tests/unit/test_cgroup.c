/* cgroup backends: v2 and v1 against fake cgroupfs trees (exact file contents written), then v1 for real
 * on this host under /sys/fs/cgroup/<controller>/kago/kago-unit-test-<pid>. */
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <linux/sched.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cgroup.h"
#include "tap.h"

static char tmp[256];

static const char *pathf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static const char *pathf(const char *fmt, ...)
{
    static char bufs[16][PATH_MAX];
    static int i;
    char *b = bufs[i++ % 16];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(b, PATH_MAX, fmt, ap);
    va_end(ap);
    return b;
}

static void put(const char *path, const char *s)
{
    FILE *f = fopen(path, "w");
    if (!f) {
        printf("# cannot write %s\n", path);
        return;
    }
    fputs(s, f);
    fclose(f);
}

/* File contents (static buffer), or "<missing>". */
static const char *get(const char *path)
{
    static char buf[4][4096];
    static int i;
    char *b = buf[i++ % 4];
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return "<missing>";
    ssize_t n = read(fd, b, 4095);
    close(fd);
    b[n < 0 ? 0 : n] = '\0';
    return b;
}

/* cgroupfs takes each write() as the whole value and kago writes without O_TRUNC; a fake file to be
 * written again must be emptied first, as the kernel would replace its value. */
static void empty(const char *dir, ...)
{
    va_list ap;
    va_start(ap, dir);
    for (const char *f; (f = va_arg(ap, const char *));)
        if (truncate(pathf("%s/%s", dir, f), 0) < 0)
            printf("# truncate %s/%s failed\n", dir, f);
    va_end(ap);
}

static bool exists(const char *path)
{
    return access(path, F_OK) == 0;
}

static struct kago_limits no_limits(void)
{
    return (struct kago_limits){.cpu_quota_us = KAGO_UNSET,
                                .cpu_period_us = KAGO_UNSET,
                                .cpu_weight = KAGO_UNSET,
                                .memory = KAGO_UNSET,
                                .pids = KAGO_UNSET};
}

/* A limit of every kind, and the raw keys given. */
static struct kago_limits all_limits(struct kago_cgroup_kv *raw, size_t nraw)
{
    struct kago_limits l = no_limits();
    l.cpu_quota_us = 30000;
    l.cpu_weight = 50;
    l.memory = 64 << 20;
    l.pids = 100;
    l.cpuset = "0";
    l.raw = raw;
    l.nraw = nraw;
    return l;
}

static bool err_is(struct kago_error **e, const char *msg)
{
    bool r = *e && !strcmp((*e)->msg, msg);
    if (!r)
        printf("#   error: %s\n#   want:  %s\n", *e ? (*e)->msg : "(none)", msg);
    kago_error_clear(e);
    return r;
}

static bool err_has(struct kago_error **e, const char *part)
{
    bool r = *e && strstr((*e)->msg, part);
    if (!r)
        printf("#   error: %s\n#   want it to contain: %s\n", *e ? (*e)->msg : "(none)", part);
    kago_error_clear(e);
    return r;
}

/* A child that sleeps until killed. */
static pid_t sleeper(void)
{
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        for (;;)
            pause();
    }
    return pid;
}

/* Reaps pid, killing it if the code under test did not (so a failure cannot hang the test). */
static int reap(pid_t pid)
{
    int st = 0;
    for (int i = 0; i < 1000; i++) {
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid)
            return WIFSIGNALED(st) ? WTERMSIG(st) : -1;
        if (r < 0)
            return -1;
        usleep(1000);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &st, 0);
    return -1;
}

/* Removes the files a fake test put in dir (the kernel does that for a real cgroup at rmdir). */
static void clear_files(const char *dir)
{
    char cmd[PATH_MAX + 64];
    snprintf(cmd, sizeof cmd, "find '%s' -maxdepth 1 -type f -delete", dir);
    if (system(cmd) != 0)
        printf("# %s failed\n", cmd);
}

static void test_v2_fake(void)
{
    struct kago_error *e = NULL;
    char root[300], d[PATH_MAX];
    snprintf(root, sizeof root, "%s/v2", tmp);
    snprintf(d, sizeof d, "%s/kago/web1", root);
    mkdir(root, 0755);
    put(pathf("%s/cgroup.controllers", root), "cpuset cpu io memory hugetlb pids rdma misc\n");
    put(pathf("%s/cgroup.subtree_control", root), "memory\n");
    struct kago__cgroup cg = {
        .ops = &kago__cgroup_v2, .mountpoint = root, .name = "web1", .path = "kago/web1", .parent = "kago"};

    struct kago_limits none = no_limits();
    ok(cg.ops->create(&cg, &none, &e) == 0 && !e, "v2 create");
    ok(exists(d), "v2 create made kago/web1");
    is_str(get(pathf("%s/cgroup.subtree_control", root)), "+cpu +pids +cpuset +io",
           "v2 create enabled the missing controllers in the root with one write");

    static const char *const files[] = {"cpu.max",      "cpu.weight",  "memory.max", "memory.swap.max",
                                        "pids.max",     "cpuset.cpus", "io.max",     "cgroup.freeze",
                                        "cgroup.procs", "cgroup.kill"};
    for (size_t i = 0; i < sizeof files / sizeof *files; i++)
        put(pathf("%s/%s", d, files[i]), "");
    put(pathf("%s/cgroup.events", d), "populated 0\nfrozen 0\n");
    put(pathf("%s/cpu.stat", d), "usage_usec 777\nuser_usec 700\nsystem_usec 77\n");
    put(pathf("%s/memory.current", d), "1234\n");
    put(pathf("%s/memory.peak", d), "4321\n");
    put(pathf("%s/pids.current", d), "3\n");
    put(pathf("%s/memory.events", d), "low 0\nhigh 0\nmax 5\noom 2\noom_kill 2\noom_group_kill 0\n");

    struct kago_cgroup_kv raw[] = {{"io.max", "8:0 rbps=1048576"}};
    struct kago_limits l = all_limits(raw, 1);
    ok(cg.ops->apply(&cg, &l, &e) == 0 && !e, "v2 apply");
    is_str(get(pathf("%s/cpu.max", d)), "30000 100000", "v2 cpu.max");
    is_str(get(pathf("%s/cpu.weight", d)), "50", "v2 cpu.weight");
    is_str(get(pathf("%s/memory.max", d)), "67108864", "v2 memory.max");
    is_str(get(pathf("%s/memory.swap.max", d)), "0", "v2 memory.swap.max");
    is_str(get(pathf("%s/pids.max", d)), "100", "v2 pids.max");
    is_str(get(pathf("%s/cpuset.cpus", d)), "0", "v2 cpuset.cpus");
    is_str(get(pathf("%s/io.max", d)), "8:0 rbps=1048576", "v2 raw key io.max");

    l = no_limits();
    l.cpu_quota_us = KAGO_NOLIMIT;
    l.memory = KAGO_NOLIMIT;
    l.pids = KAGO_NOLIMIT;
    empty(d, "cpu.max", "memory.max", "memory.swap.max", "pids.max", NULL);
    ok(cg.ops->apply(&cg, &l, &e) == 0, "v2 apply unlimited");
    is_str(get(pathf("%s/cpu.max", d)), "max 100000", "v2 cpu.max max");
    is_str(get(pathf("%s/memory.max", d)), "max", "v2 memory.max max");
    is_str(get(pathf("%s/memory.swap.max", d)), "max", "v2 memory.swap.max max");
    is_str(get(pathf("%s/pids.max", d)), "max", "v2 pids.max max");
    is_str(get(pathf("%s/cpu.weight", d)), "50", "v2 unset fields are left alone");

    l = no_limits();
    /* Reads the quota back (a value of the same length, as the fake file is not truncated). */
    l.cpu_period_us = 200000;
    ok(cg.ops->apply(&cg, &l, &e) == 0, "v2 apply a period alone");
    is_str(get(pathf("%s/cpu.max", d)), "max 200000", "v2 a period alone keeps the quota");

    l = no_limits();
    struct kago_cgroup_kv bad[] = {{"cpu.nonexistent", "1"}};
    l.raw = bad;
    l.nraw = 1;
    ok(cg.ops->apply(&cg, &l, &e) < 0 &&
           err_is(&e, "cgroup kago/web1: unknown key \"cpu.nonexistent\" (no such file)"),
       "v2 unknown raw key is named");
    bad[0].key = "../cgroup.procs";
    ok(cg.ops->apply(&cg, &l, &e) < 0 && err_has(&e, "invalid key \"../cgroup.procs\""),
       "v2 raw key with a slash");
    l = no_limits();
    l.cpuset = "100000";
    ok(cg.ops->apply(&cg, &l, &e) < 0 && err_is(&e, "cpuset 100000: no such CPU"),
       "v2 cpuset of a missing CPU");
    l.cpuset = "0,99999-100000";
    ok(cg.ops->apply(&cg, &l, &e) < 0 && err_is(&e, "cpuset 0,99999-100000: no such CPU 99999"),
       "v2 cpuset list");
    l.cpuset = "0-";
    ok(cg.ops->apply(&cg, &l, &e) < 0 && err_has(&e, "cpuset 0-: expected a CPU list"),
       "v2 cpuset malformed");
    unlink(pathf("%s/cpuset.cpus", d));
    mkdir(pathf("%s/cpuset.cpus", d), 0755);
    l.cpuset = "0";
    ok(cg.ops->apply(&cg, &l, &e) < 0 &&
           err_is(&e, "cgroup kago/web1: write cpuset.cpus \"0\": Is a directory"),
       "v2 write error names file, value and errno text");
    rmdir(pathf("%s/cpuset.cpus", d));

    ok(cg.ops->enter(&cg, 4242, &e) == 0, "v2 enter");
    is_str(get(pathf("%s/cgroup.procs", d)), "4242", "v2 enter wrote cgroup.procs");
    ok(cg.ops->freeze(&cg, true, &e) == 0, "v2 freeze on a fake tree does not wait");
    is_str(get(pathf("%s/cgroup.freeze", d)), "1", "v2 cgroup.freeze 1");
    ok(cg.ops->frozen(&cg, &e) == 1, "v2 frozen");
    ok(cg.ops->freeze(&cg, false, &e) == 0 && cg.ops->frozen(&cg, &e) == 0, "v2 thaw");
    is_str(get(pathf("%s/cgroup.freeze", d)), "0", "v2 cgroup.freeze 0");

    struct kago_stats st;
    ok(cg.ops->stats(&cg, &st, &e) == 0 && st.cpu_usage_us == 777 && st.memory_current == 1234 &&
           st.memory_peak == 4321 && st.pids_current == 3 && st.oom_kills == 2,
       "v2 stats");
    struct kago_stats us = {0};
    ok(cg.ops->usage(&cg, &us, &e) == 0 && us.cpu_usage_us == 777 && us.memory_current == 1234, "v2 usage");
    unlink(pathf("%s/memory.peak", d));
    ok(cg.ops->stats(&cg, &st, &e) == 0 && st.memory_peak == -1, "v2 stats without memory.peak");
    /* scale up's pressure: cpu.stat's throttling, memory.events high + max, memory.pressure (PSI) */
    put(pathf("%s/cpu.stat", d), "usage_usec 777\nuser_usec 700\nsystem_usec 77\nnr_periods 50\n"
                                 "nr_throttled 20\nthrottled_usec 9000\n");
    put(pathf("%s/memory.pressure", d), "some avg10=1.00 avg60=0.50 avg300=0.10 total=4242\n"
                                        "full avg10=0.00 avg60=0.00 avg300=0.00 total=100\n");
    struct kago_pressure pr = {-1, -1, -1, -1, -1, -1, -1};
    ok(cg.ops->pressure(&cg, KAGO_PRESSURE_CPU | KAGO_PRESSURE_MEMORY, &pr, &e) == 0 &&
           pr.cpu_usage_us == 777 && pr.nr_periods == 50 && pr.nr_throttled == 20 &&
           pr.throttled_us == 9000 && pr.memory_current == 1234 && pr.memory_events == 5 &&
           pr.memory_stall_us == 4242,
       "v2 pressure: throttling, memory.events high+max, PSI some total");
    unlink(pathf("%s/memory.pressure", d));
    pr = (struct kago_pressure){-1, -1, -1, -1, -1, -1, -1};
    ok(cg.ops->pressure(&cg, KAGO_PRESSURE_MEMORY, &pr, &e) == 0 && pr.memory_stall_us == -1 &&
           pr.nr_periods == -1 && pr.memory_current == 1234,
       "v2 pressure without PSI (no memory.pressure), memory only");

    pid_t child = sleeper();
    put(pathf("%s/cgroup.procs", d), pathf("%d\n", (int)child));
    ok(cg.ops->kill_all(&cg, SIGTERM, &e) == 1, "v2 kill_all SIGTERM signals the listed pid");
    ok(reap(child) == SIGTERM, "v2 the member died of SIGTERM");
    put(pathf("%s/cgroup.procs", d), "1000001\n1000002\n");
    ok(cg.ops->kill_all(&cg, SIGKILL, &e) == 2, "v2 kill_all SIGKILL counts the members");
    is_str(get(pathf("%s/cgroup.kill", d)), "1", "v2 SIGKILL goes through cgroup.kill");

    int fd = cg.ops->open_dir(&cg, &e);
    ok(fd >= 0, "v2 open_dir");
    if (fd >= 0)
        close(fd);

    clear_files(d);
    ok(cg.ops->destroy(&cg, &e) == 0 && !e, "v2 destroy");
    ok(!exists(d) && !exists(pathf("%s/kago", root)),
       "v2 destroy removed the cgroup and the empty kago parent");
    ok(cg.ops->destroy(&cg, &e) == 0, "v2 destroy twice is fine");

    /* A stale empty cgroup of a dead container is replaced; the parent of another container stays. */
    mkdir(pathf("%s/kago", root), 0755);
    mkdir(pathf("%s/kago/other", root), 0755);
    mkdir(d, 0755);
    ok(cg.ops->create(&cg, &none, &e) == 0 && exists(d), "v2 create over a stale empty cgroup");
    ok(cg.ops->destroy(&cg, &e) == 0 && !exists(d) && exists(pathf("%s/kago/other", root)),
       "v2 destroy leaves the parent while another container uses it");
    rmdir(pathf("%s/kago/other", root));
    rmdir(pathf("%s/kago", root));
}

static const char *const v1_dirs[] = {"cpu,cpuacct", "memory",  "pids", "cpuset",
                                      "freezer",     "devices", "blkio"};
#define NV1 (sizeof v1_dirs / sizeof *v1_dirs)

static void test_v1_fake(void)
{
    struct kago_error *e = NULL;
    char root[300];
    snprintf(root, sizeof root, "%s/v1", tmp);
    mkdir(root, 0755);
    for (size_t i = 0; i < NV1; i++)
        mkdir(pathf("%s/%s", root, v1_dirs[i]), 0755);
    char p[8][PATH_MAX];
    for (size_t i = 0; i < NV1; i++)
        snprintf(p[i], PATH_MAX, "%s/%s", root, v1_dirs[i]);
    const struct kago__cgroup_v1_mount m[] = {{"cpu", p[0]},     {"cpuacct", p[0]}, {"memory", p[1]},
                                              {"pids", p[2]},    {"cpuset", p[3]},  {"freezer", p[4]},
                                              {"devices", p[5]}, {"blkio", p[6]}};
    kago__cgroup_v1_set_mounts(m, sizeof m / sizeof *m);
    /* cpuset's kago parent exists (another container's), prepared as kago prepares it. */
    mkdir(pathf("%s/cpuset/kago", root), 0755);
    put(pathf("%s/cpuset/kago/cpuset.cpus", root), "0-1\n");
    put(pathf("%s/cpuset/kago/cpuset.mems", root), "0\n");

    struct kago_cgroup_kv raw[] = {{"blkio.weight", "500"}, {"memory.swappiness", "0"}};
    struct kago_limits l = all_limits(raw, 2);
    /* without limits: no cpuset or blkio cgroup (made on demand); cpu,cpuacct is made for cpuacct */
    struct kago__cgroup bare = {
        .ops = &kago__cgroup_v1, .mountpoint = root, .name = "bare", .path = "kago/bare", .parent = "kago"};
    struct kago_limits none = no_limits();
    ok(bare.ops->create(&bare, &none, &e) == 0 && !e, "v1 create without limits");
    bool all = true;
    for (size_t i = 0; i < NV1; i++) {
        bool want = strcmp(v1_dirs[i], "cpuset") && strcmp(v1_dirs[i], "blkio") && strcmp(v1_dirs[i], "pids");
        all = all && exists(pathf("%s/%s/kago/bare", root, v1_dirs[i])) == want;
    }
    ok(all, "v1 create without limits skips the pids, cpuset and blkio hierarchies");
    ok(bare.ops->destroy(&bare, &e) == 0 && !e && !exists(pathf("%s/memory/kago/bare", root)),
       "v1 destroy of a container without the on-demand hierarchies");

    struct kago__cgroup cg = {
        .ops = &kago__cgroup_v1, .mountpoint = root, .name = "web1", .path = "kago/web1", .parent = "kago"};
    ok(cg.ops->create(&cg, &l, &e) == 0 && !e, "v1 create");
    all = true;
    for (size_t i = 0; i < NV1; i++)
        all = all && exists(pathf("%s/%s/kago/web1", root, v1_dirs[i]));
    ok(all, "v1 create with cpu, cpuset and blkio limits made kago/web1 in every hierarchy (co-mounted "
            "cpu,cpuacct once)");

#define D(h) pathf("%s/%s/kago/web1", root, h)
    static const char *const files[][2] = {{"cpu,cpuacct", "cpu.cfs_period_us"},
                                           {"cpu,cpuacct", "cpu.cfs_quota_us"},
                                           {"cpu,cpuacct", "cpu.shares"},
                                           {"memory", "memory.limit_in_bytes"},
                                           {"memory", "memory.memsw.limit_in_bytes"},
                                           {"memory", "memory.swappiness"},
                                           {"pids", "pids.max"},
                                           {"cpuset", "cpuset.cpus"},
                                           {"devices", "devices.deny"},
                                           {"devices", "devices.allow"},
                                           {"blkio", "blkio.weight"}};
    for (size_t i = 0; i < sizeof files / sizeof *files; i++)
        put(pathf("%s/%s", D(files[i][0]), files[i][1]), "");
    for (size_t i = 0; i < NV1; i++)
        put(pathf("%s/cgroup.procs", D(v1_dirs[i])), "");
    put(pathf("%s/freezer.state", D("freezer")), "THAWED\n");
    put(pathf("%s/cpuacct.usage", D("cpu,cpuacct")), "5000000\n");
    put(pathf("%s/memory.usage_in_bytes", D("memory")), "1234\n");
    put(pathf("%s/memory.max_usage_in_bytes", D("memory")), "4321\n");
    put(pathf("%s/memory.oom_control", D("memory")), "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n");
    put(pathf("%s/pids.current", D("pids")), "2\n");

    ok(cg.ops->apply(&cg, &l, &e) == 0 && !e, "v1 apply");
    is_str(get(pathf("%s/cpu.cfs_period_us", D("cpu,cpuacct"))), "100000", "v1 cfs_period_us");
    is_str(get(pathf("%s/cpu.cfs_quota_us", D("cpu,cpuacct"))), "30000", "v1 cfs_quota_us");
    is_str(get(pathf("%s/cpu.shares", D("cpu,cpuacct"))), "512", "v1 cpu.shares = weight * 1024 / 100");
    is_str(get(pathf("%s/memory.limit_in_bytes", D("memory"))), "67108864", "v1 memory.limit_in_bytes");
    is_str(get(pathf("%s/memory.memsw.limit_in_bytes", D("memory"))), "67108864",
           "v1 memory.memsw.limit_in_bytes");
    is_str(get(pathf("%s/pids.max", D("pids"))), "100", "v1 pids.max");
    is_str(get(pathf("%s/cpuset.cpus", D("cpuset"))), "0", "v1 cpuset.cpus");
    is_str(get(pathf("%s/blkio.weight", D("blkio"))), "500", "v1 raw key in its controller's hierarchy");
    is_str(get(pathf("%s/memory.swappiness", D("memory"))), "0", "v1 raw key memory.swappiness");

    l = no_limits();
    l.cpu_quota_us = KAGO_NOLIMIT;
    l.memory = KAGO_NOLIMIT;
    l.pids = KAGO_NOLIMIT;
    unlink(pathf("%s/memory.memsw.limit_in_bytes", D("memory")));
    empty(D("cpu,cpuacct"), "cpu.cfs_period_us", "cpu.cfs_quota_us", NULL);
    empty(D("memory"), "memory.limit_in_bytes", NULL);
    empty(D("pids"), "pids.max", NULL);
    ok(cg.ops->apply(&cg, &l, &e) == 0 && !e, "v1 apply unlimited (and no memsw file: no swap accounting)");
    is_str(get(pathf("%s/cpu.cfs_quota_us", D("cpu,cpuacct"))), "-1", "v1 cfs_quota_us -1");
    is_str(get(pathf("%s/memory.limit_in_bytes", D("memory"))), "-1", "v1 memory.limit_in_bytes -1");
    is_str(get(pathf("%s/pids.max", D("pids"))), "max", "v1 pids.max max");
    l = no_limits();
    l.cpu_weight = 1;
    empty(D("cpu,cpuacct"), "cpu.shares", NULL);
    ok(cg.ops->apply(&cg, &l, &e) == 0, "v1 apply weight 1");
    is_str(get(pathf("%s/cpu.shares", D("cpu,cpuacct"))), "10", "v1 cpu.shares for weight 1");

    l = no_limits();
    struct kago_cgroup_kv bad[] = {{"net_cls.classid", "1"}};
    l.raw = bad;
    l.nraw = 1;
    ok(cg.ops->apply(&cg, &l, &e) < 0 && err_has(&e, "unknown key \"net_cls.classid\""),
       "v1 raw key of another controller");
    bad[0].key = "cpu.nonexistent";
    ok(cg.ops->apply(&cg, &l, &e) < 0 &&
           err_is(&e,
                  "cgroup kago/web1: unknown key \"cpu.nonexistent\" (no such file in the cpu hierarchy)"),
       "v1 unknown raw key is named");
    bad[0].key = "nodot";
    ok(cg.ops->apply(&cg, &l, &e) < 0 && err_has(&e, "invalid key \"nodot\""),
       "v1 raw key without a controller");

    ok(cg.ops->devices(&cg, 0, &e) == 0, "v1 devices");
    is_str(get(pathf("%s/devices.deny", D("devices"))), "a", "v1 devices.deny a");
    is_str(get(pathf("%s/devices.allow", D("devices"))), "c 136:* rwm", "v1 devices.allow, last rule pts");

    ok(cg.ops->enter(&cg, 4242, &e) == 0, "v1 enter");
    all = true;
    for (size_t i = 0; i < NV1; i++)
        all = all && !strcmp(get(pathf("%s/cgroup.procs", D(v1_dirs[i]))), "4242");
    ok(all, "v1 enter wrote cgroup.procs in every hierarchy");

    empty(D("freezer"), "freezer.state", NULL);
    ok(cg.ops->freeze(&cg, true, &e) == 0 && !e, "v1 freeze (a fake tree reads back FROZEN)");
    is_str(get(pathf("%s/freezer.state", D("freezer"))), "FROZEN", "v1 freezer.state FROZEN");
    ok(cg.ops->frozen(&cg, &e) == 1, "v1 frozen");
    ok(cg.ops->freeze(&cg, false, &e) == 0 && cg.ops->frozen(&cg, &e) == 0, "v1 thaw");

    struct kago_stats st;
    ok(cg.ops->stats(&cg, &st, &e) == 0 && st.cpu_usage_us == 5000 && st.memory_current == 1234 &&
           st.memory_peak == 4321 && st.pids_current == 2 && st.oom_kills == 3,
       "v1 stats");
    struct kago_stats us = {0};
    ok(cg.ops->usage(&cg, &us, &e) == 0 && us.cpu_usage_us == 5000 && us.memory_current == 1234, "v1 usage");
    put(pathf("%s/cpu.stat", D("cpu,cpuacct")), "nr_periods 40\nnr_throttled 10\nthrottled_time 7000000\n");
    put(pathf("%s/memory.failcnt", D("memory")), "6\n");
    struct kago_pressure pr = {-1, -1, -1, -1, -1, -1, -1};
    ok(cg.ops->pressure(&cg, KAGO_PRESSURE_CPU | KAGO_PRESSURE_MEMORY, &pr, &e) == 0 &&
           pr.cpu_usage_us == 5000 && pr.nr_periods == 40 && pr.nr_throttled == 10 &&
           pr.throttled_us == 7000 && pr.memory_current == 1234 && pr.memory_events == 6 &&
           pr.memory_stall_us == -1,
       "v1 pressure: cpu.stat (throttled_time in ns), memory.failcnt, no PSI");

    pid_t child = sleeper();
    put(pathf("%s/cgroup.procs", D("freezer")), pathf("%d\n", (int)child));
    put(pathf("%s/freezer.state", D("freezer")), "FROZEN");
    ok(cg.ops->kill_all(&cg, SIGKILL, &e) == 1, "v1 kill_all reads the freezer hierarchy");
    ok(reap(child) == SIGKILL, "v1 the member died of SIGKILL");
    is_str(get(pathf("%s/freezer.state", D("freezer"))), "THAWED", "v1 SIGKILL thaws the cgroup");

    for (size_t i = 0; i < NV1; i++)
        clear_files(D(v1_dirs[i]));
    ok(cg.ops->destroy(&cg, &e) == 0 && !e, "v1 destroy");
    all = true;
    for (size_t i = 0; i < NV1; i++)
        all = all && !exists(D(v1_dirs[i])) &&
              (!strcmp(v1_dirs[i], "cpuset") || !exists(pathf("%s/%s/kago", root, v1_dirs[i])));
    ok(all, "v1 destroy removed every cgroup and the empty kago parents");
#undef D
    kago__cgroup_v1_set_mounts(NULL, 0);
}

/* ---- the real thing, on this host's v1 hierarchies ---- */

static const char *const real_ctrls[] = {"cpu",    "cpuacct", "memory",  "pids",
                                         "cpuset", "freezer", "devices", "blkio"};
#define NREAL (sizeof real_ctrls / sizeof *real_ctrls)

static void skip(const char *why)
{
    printf("ok %d # SKIP %s\n", ++tap_n, why);
}

static unsigned long long median(unsigned long long *v, int n)
{
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && v[j - 1] > v[j]; j--) {
            unsigned long long t = v[j];
            v[j] = v[j - 1];
            v[j - 1] = t;
        }
    return v[n / 2];
}

/* create + enter + destroy, the container path (kill and reap not counted). */
static void bench_v1(struct kago__cgroup *cg, const char *label)
{
    enum { N = 31 };
    unsigned long long c[N], en[N], d[N], tot[N];
    struct kago_error *e = NULL;
    for (int i = 0; i < N; i++) {
        pid_t child = sleeper();
        unsigned long long t0 = kago__now_us();
        struct kago_limits none = no_limits();
        int r = cg->ops->create(cg, &none, &e);
        unsigned long long t1 = kago__now_us();
        r = r < 0 ? r : cg->ops->enter(cg, child, &e);
        unsigned long long t2 = kago__now_us();
        kill(child, SIGKILL);
        reap(child);
        unsigned long long t3 = kago__now_us();
        r = r < 0 ? r : cg->ops->destroy(cg, &e);
        unsigned long long t4 = kago__now_us();
        if (r < 0) {
            ok(0, "bench: %s", e ? e->msg : "?");
            kago_error_clear(&e);
            cg->ops->destroy(cg, NULL);
            return;
        }
        c[i] = t1 - t0, en[i] = t2 - t1, d[i] = t4 - t3, tot[i] = c[i] + en[i] + d[i];
    }
    printf("# v1 %s: create %llu us + enter %llu us + destroy %llu us; create+enter+destroy median %llu us\n",
           exists("/sys/fs/cgroup/memory/kago") ? label : "kago parent made and removed each time",
           median(c, N), median(en, N), median(d, N), median(tot, N));
}

static void test_v1_real(void)
{
    struct kago_error *e = NULL;
    if (geteuid() != 0) {
        skip("real v1 test: needs root");
        return;
    }
    const struct kago__cgroup_ops *ops = kago__cgroup_detect(NULL, &e);
    if (ops != &kago__cgroup_v1) {
        skip(ops ? "real v1 test: this host is cgroup v2" : "real v1 test: no cgroup hierarchy found");
        kago_error_clear(&e);
        return;
    }
    char name[64];
    snprintf(name, sizeof name, "kago-unit-test-%d", (int)getpid());
    bool parent_before[NREAL], mounted[NREAL];
    for (size_t i = 0; i < NREAL; i++) {
        mounted[i] = exists(pathf("/sys/fs/cgroup/%s/cgroup.procs", real_ctrls[i]));
        parent_before[i] = exists(pathf("/sys/fs/cgroup/%s/kago", real_ctrls[i]));
    }
    struct kago__cgroup cg;
    ok(kago__cgroup_init(&cg, NULL, name, NULL, &e) == 0 && cg.ops == &kago__cgroup_v1,
       "real: init picks v1 on this host");
    struct kago_limits none = no_limits();
    ok(cg.ops->create(&cg, &none, &e) == 0, "real: create %s", e ? e->msg : "");
    kago_error_clear(&e);
#define R(c, f) pathf("/sys/fs/cgroup/%s/kago/%s/%s", c, name, f)
    bool all = true;
    for (size_t i = 0; i < NREAL; i++) {
        bool on_demand = !strcmp(real_ctrls[i], "cpu") || !strcmp(real_ctrls[i], "cpuset") ||
                         !strcmp(real_ctrls[i], "blkio") || !strcmp(real_ctrls[i], "pids");
        all = all && (!mounted[i] || exists(R(real_ctrls[i], "cgroup.procs")) != on_demand);
    }
    ok(all, "real: without limits the cgroup exists in every mounted hierarchy but cpu, pids, cpuset, blkio");
    /* a member before the limits: kago update's case, the on-demand hierarchies made while it runs */
    pid_t child = sleeper();
    ok(cg.ops->enter(&cg, child, &e) == 0, "real: enter %s", e ? e->msg : "");
    kago_error_clear(&e);

    struct kago_limits l = no_limits();
    l.cpu_quota_us = 30000;
    l.memory = 64 << 20;
    l.pids = 50;
    l.cpu_weight = 200;
    l.cpuset = "0";
    ok(cg.ops->apply(&cg, &l, &e) == 0, "real: apply %s", e ? e->msg : "");
    kago_error_clear(&e);
    const char *in = get(pathf("/proc/%d/cgroup", (int)child));
    ok(strstr(in, pathf("cpu:/kago/%s\n", name)) && strstr(in, pathf("cpuset:/kago/%s\n", name)) &&
           strstr(in, pathf("pids:/kago/%s\n", name)),
       "real: apply made the cpu, pids and cpuset cgroups and moved the member in");
    ok(strcmp(get(R("cpuset", "cpuset.mems")), "\n") != 0,
       "real: the container's cpuset is seeded (mems %.*s)",
       (int)strcspn(get(R("cpuset", "cpuset.mems")), "\n"), get(R("cpuset", "cpuset.mems")));
    is_str(get(R("freezer", "freezer.state")), "THAWED\n", "real: thawed again after the move");
    is_str(get(R("cpu", "cpu.cfs_quota_us")), "30000\n", "real: cfs_quota_us reads back 30000");
    is_str(get(R("memory", "memory.limit_in_bytes")), "67108864\n", "real: memory.limit_in_bytes");
    if (exists(R("memory", "memory.memsw.limit_in_bytes")))
        is_str(get(R("memory", "memory.memsw.limit_in_bytes")), "67108864\n", "real: memsw limit");
    is_str(get(R("pids", "pids.max")), "50\n", "real: pids.max");
    is_str(get(R("cpu", "cpu.shares")), "2048\n", "real: cpu.shares");
    is_str(get(R("cpuset", "cpuset.cpus")), "0\n", "real: cpuset.cpus");
    l = no_limits();
    l.memory = 256 << 20; /* raising past memsw: needs memsw first */
    ok(cg.ops->apply(&cg, &l, &e) == 0, "real: raise the memory limit %s", e ? e->msg : "");
    kago_error_clear(&e);
    is_str(get(R("memory", "memory.limit_in_bytes")), "268435456\n", "real: raised limit");
    l.memory = KAGO_NOLIMIT;
    ok(cg.ops->apply(&cg, &l, &e) == 0, "real: unlimited memory %s", e ? e->msg : "");
    kago_error_clear(&e);
    l = no_limits();
    struct kago_cgroup_kv raw[] = {{"cpu.cfs_quota_us", "abc"}};
    l.raw = raw;
    l.nraw = 1;
    ok(cg.ops->apply(&cg, &l, &e) < 0 &&
           err_is(&e, pathf("cgroup kago/%s: write cpu.cfs_quota_us \"abc\": Invalid argument", name)),
       "real: the kernel's refusal names file, value and errno text");
    l = no_limits();
    l.cpuset = "100000";
    ok(cg.ops->apply(&cg, &l, &e) < 0 && err_is(&e, "cpuset 100000: no such CPU"),
       "real: cpuset of a missing CPU");

    ok(cg.ops->devices(&cg, 0, &e) == 0, "real: devices");
    is_str(get(R("devices", "devices.list")),
           "c 1:3 rwm\nc 1:5 rwm\nc 1:7 rwm\nc 1:8 rwm\nc 1:9 rwm\nc 5:0 rwm\nc 5:2 rwm\nc 136:* rwm\n",
           "real: devices.list is the minimal set");

    ok(cg.ops->enter(&cg, child, &e) == 0, "real: enter again (a member already in)");
    const char *self = get(pathf("/proc/%d/cgroup", (int)child));
    ok(strstr(self, pathf("cpu:/kago/%s\n", name)) && strstr(self, pathf("memory:/kago/%s\n", name)) &&
           strstr(self, pathf("freezer:/kago/%s\n", name)),
       "real: the child is in the container's cgroups");
    ok(cg.ops->freeze(&cg, true, &e) == 0 && cg.ops->frozen(&cg, &e) == 1, "real: freeze");
    is_str(get(R("freezer", "freezer.state")), "FROZEN\n", "real: freezer.state FROZEN");
    ok(cg.ops->freeze(&cg, false, &e) == 0 && cg.ops->frozen(&cg, &e) == 0, "real: thaw");
    struct kago_stats st;
    ok(cg.ops->stats(&cg, &st, &e) == 0 && st.pids_current == 1 && st.memory_current >= 0 &&
           st.memory_peak >= 0 && st.oom_kills == 0,
       "real: stats (pids %lld, memory %lld, peak %lld, cpu %llu us)", (long long)st.pids_current,
       (long long)st.memory_current, (long long)st.memory_peak, (unsigned long long)st.cpu_usage_us);
    ok(cg.ops->freeze(&cg, true, &e) == 0, "real: freeze again");
    ok(cg.ops->kill_all(&cg, SIGKILL, &e) == 1, "real: kill_all while frozen");
    ok(reap(child) == SIGKILL, "real: the frozen member died of SIGKILL");
    ok(cg.ops->destroy(&cg, &e) == 0, "real: destroy %s", e ? e->msg : "");
    kago_error_clear(&e);

    bench_v1(&cg, "kago parent kept by other containers (not ours)");
    /* With another container holding the parent, as in a busy server. */
    struct kago__cgroup other;
    char oname[80];
    snprintf(oname, sizeof oname, "%s-other", name);
    if (kago__cgroup_init(&other, NULL, oname, NULL, &e) == 0 && other.ops->create(&other, &none, &e) == 0) {
        bench_v1(&cg, "kago parent kept by another container");
        other.ops->destroy(&other, NULL);
    }
    kago_error_clear(&e);
    kago__cgroup_fini(&other);

    all = true;
    for (size_t i = 0; i < NREAL; i++) {
        if (exists(pathf("/sys/fs/cgroup/%s/kago/%s", real_ctrls[i], name)) ||
            (!parent_before[i] && exists(pathf("/sys/fs/cgroup/%s/kago", real_ctrls[i])))) {
            printf("#   left behind in %s\n", real_ctrls[i]);
            all = false;
        }
    }
    ok(all, "real: nothing is left behind");
#undef R
    kago__cgroup_fini(&cg);
}

/* ---- the real thing on a cgroup v2 host (the tests/vm guest: tests/vm/run -- build/tests/unit/test_cgroup)
 * ---- */

static pid_t clone_into(int cgfd)
{
    struct clone_args args = {.flags = CLONE_INTO_CGROUP, .exit_signal = SIGCHLD, .cgroup = (uint64_t)cgfd};
    fflush(stdout);
    pid_t pid = (pid_t)syscall(SYS_clone3, &args, sizeof args);
    if (pid == 0) {
        for (;;)
            pause();
    }
    return pid;
}

static void test_v2_real(void)
{
    struct kago_error *e = NULL;
    const struct kago__cgroup_ops *ops = kago__cgroup_detect(NULL, &e);
    kago_error_clear(&e);
    if (geteuid() != 0 || ops != &kago__cgroup_v2) {
        skip(geteuid() != 0 ? "real v2 test: needs root" : "real v2 test: this host is not cgroup v2");
        return;
    }
    char name[64];
    snprintf(name, sizeof name, "kago-unit-test-%d", (int)getpid());
    bool parent_before = exists("/sys/fs/cgroup/kago");
    struct kago__cgroup cg;
    ok(kago__cgroup_init(&cg, NULL, name, NULL, &e) == 0 && cg.ops == &kago__cgroup_v2, "real v2: init");
    struct kago_limits none = no_limits();
    ok(cg.ops->create(&cg, &none, &e) == 0, "real v2: create %s", e ? e->msg : "");
    kago_error_clear(&e);
#define R(f) pathf("/sys/fs/cgroup/kago/%s/%s", name, f)
    const char *sub = get("/sys/fs/cgroup/kago/cgroup.subtree_control");
    ok(strstr(sub, "cpu") && strstr(sub, "memory") && strstr(sub, "pids"),
       "real v2: kago enables cpu memory pids (%.*s)", (int)strcspn(sub, "\n"), sub);

    struct kago_limits l = no_limits();
    l.cpu_quota_us = 30000;
    l.memory = 64 << 20;
    l.pids = 50;
    l.cpu_weight = 200;
    l.cpuset = "0";
    ok(cg.ops->apply(&cg, &l, &e) == 0, "real v2: apply %s", e ? e->msg : "");
    kago_error_clear(&e);
    is_str(get(R("cpu.max")), "30000 100000\n", "real v2: cpu.max");
    is_str(get(R("memory.max")), "67108864\n", "real v2: memory.max");
    if (exists(R("memory.swap.max")))
        is_str(get(R("memory.swap.max")), "0\n", "real v2: memory.swap.max");
    is_str(get(R("pids.max")), "50\n", "real v2: pids.max");
    is_str(get(R("cpu.weight")), "200\n", "real v2: cpu.weight");
    if (exists(R("cpuset.cpus")))
        is_str(get(R("cpuset.cpus")), "0\n", "real v2: cpuset.cpus");
    l = no_limits();
    struct kago_cgroup_kv raw[] = {{"cpu.max", "abc"}};
    l.raw = raw;
    l.nraw = 1;
    ok(cg.ops->apply(&cg, &l, &e) < 0 &&
           err_is(&e, pathf("cgroup kago/%s: write cpu.max \"abc\": Invalid argument", name)),
       "real v2: the kernel's refusal names file, value and errno text");

    int fd = cg.ops->open_dir(&cg, &e);
    ok(fd >= 0, "real v2: open_dir");
    pid_t child = fd >= 0 ? clone_into(fd) : -1;
    if (fd >= 0)
        close(fd);
    ok(child > 0 && strstr(get(pathf("/proc/%d/cgroup", (int)child)), pathf("0::/kago/%s\n", name)),
       "real v2: clone3(CLONE_INTO_CGROUP) with open_dir's fd starts the child in the cgroup");
    pid_t child2 = sleeper();
    ok(cg.ops->enter(&cg, child2, &e) == 0 &&
           strstr(get(pathf("/proc/%d/cgroup", (int)child2)), pathf("0::/kago/%s\n", name)),
       "real v2: enter");
    ok(cg.ops->freeze(&cg, true, &e) == 0 && cg.ops->frozen(&cg, &e) == 1, "real v2: freeze");
    ok(strstr(get(R("cgroup.events")), "frozen 1\n") != NULL, "real v2: cgroup.events says frozen 1");
    ok(cg.ops->freeze(&cg, false, &e) == 0 && cg.ops->frozen(&cg, &e) == 0, "real v2: thaw");
    struct kago_stats st;
    ok(cg.ops->stats(&cg, &st, &e) == 0 && st.pids_current == 2 && st.memory_current >= 0 &&
           st.oom_kills == 0,
       "real v2: stats (pids %lld, memory %lld, peak %lld, cpu %llu us)", (long long)st.pids_current,
       (long long)st.memory_current, (long long)st.memory_peak, (unsigned long long)st.cpu_usage_us);
    ok(cg.ops->freeze(&cg, true, &e) == 0, "real v2: freeze again");
    ok(cg.ops->kill_all(&cg, SIGKILL, &e) == 2, "real v2: kill_all while frozen");
    ok(reap(child) == SIGKILL && reap(child2) == SIGKILL, "real v2: the frozen members died of SIGKILL");
    ok(cg.ops->destroy(&cg, &e) == 0, "real v2: destroy %s", e ? e->msg : "");
    kago_error_clear(&e);

    enum { N = 31 };
    unsigned long long t[N];
    for (int i = 0; i < N; i++) {
        unsigned long long t0 = kago__now_us();
        int r = cg.ops->create(&cg, &none, &e);
        fd = r < 0 ? -1 : cg.ops->open_dir(&cg, &e);
        unsigned long long t1 = kago__now_us();
        pid_t c = fd >= 0 ? clone_into(fd) : -1;
        unsigned long long t2 = kago__now_us();
        if (fd >= 0)
            close(fd);
        if (c > 0) {
            kill(c, SIGKILL);
            reap(c);
        }
        unsigned long long t3 = kago__now_us();
        r = cg.ops->destroy(&cg, &e);
        t[i] = (t1 - t0) + (kago__now_us() - t3);
        (void)t2;
        if (r < 0 || c < 0) {
            ok(0, "real v2 bench: %s", e ? e->msg : "clone3 failed");
            kago_error_clear(&e);
            break;
        }
    }
    printf("# v2 create+open_dir+destroy median %llu us (clone3 into the cgroup not counted)\n",
           median(t, N));
    ok(!exists(pathf("/sys/fs/cgroup/kago/%s", name)) && (parent_before || !exists("/sys/fs/cgroup/kago")),
       "real v2: nothing is left behind");
#undef R
    kago__cgroup_fini(&cg);
}

/* A cgroup path of the caller's (an OCI bundle's linux.cgroupsPath): its parents are made top down, its
 * removal leaves them, and bad paths are refused. */
static void test_path(void)
{
    struct kago_error *e = NULL;
    char root[512];
    snprintf(root, sizeof root, "%s/v2p", tmp);
    mkdir(root, 0755);
    put(pathf("%s/cgroup.controllers", root), "cpu memory pids\n");
    put(pathf("%s/cgroup.subtree_control", root), "\n");
    struct kago__cgroup cg = {
        .ops = &kago__cgroup_v2, .mountpoint = root, .name = "c1", .path = "a/b/c1", .parent = "a/b"};
    struct kago_limits none = no_limits();
    ok(cg.ops->create(&cg, &none, &e) == 0 && !e && exists(pathf("%s/a/b/c1", root)),
       "a nested cgroup path: parents made top down");
    const char *sc = get(pathf("%s/cgroup.subtree_control", root));
    ok(sc && strstr(sc, "+cpu") && strstr(sc, "+memory") && strstr(sc, "+pids"),
       "the root's controllers enabled for the new parents: %s", sc ? sc : "");
    ok(cg.ops->destroy(&cg, &e) == 0 && !e && !exists(pathf("%s/a/b/c1", root)) &&
           exists(pathf("%s/a/b", root)),
       "destroy removes the container's cgroup and leaves the parents it was given");
    static const char *const bad[] = {"", "/", "a//b", "a/../b", "./a", "a/", "/a/.", NULL};
    bool all = true;
    for (size_t i = 0; bad[i]; i++) {
        all = all && kago_cgroup_path_check(bad[i], &e) < 0 && e;
        kago_error_clear(&e);
    }
    ok(all, "empty, \".\" and \"..\" components refused");
    ok(kago_cgroup_path_check("/libpod_parent/libpod-1", &e) == 0 &&
           kago_cgroup_path_check("k8s/p/c", &e) == 0,
       "absolute and relative paths accepted");
}

int main(void)
{
    snprintf(tmp, sizeof tmp, "/tmp/kago-test-cgroup-XXXXXX");
    if (!mkdtemp(tmp)) {
        perror("mkdtemp");
        return 1;
    }
    test_v2_fake();
    test_path();
    test_v1_fake();
    test_v1_real();
    test_v2_real();
    kago__rm_rf(tmp);
    return tap_done();
}
