/* Isolation probe, run inside a container: tries each thing a contained app must not be able to do and
 * prints one line per attempt, "NAME blocked|ALLOWED text". Every attempt runs in a child of its own (so
 * an unshare, chroot or fork bomb leaves the next one alone); nothing is written where it would change the
 * host even when allowed: files are only opened for writing, calls get arguments the kernel rejects after
 * its permission check (an EINVAL or ENOENT then means the check passed: ALLOWED).
 * Built static (gcc -static) so it runs in any rootfs: tests/integration/test_isolation.py, bench/isolation.
 *
 * usage: kago-probe [other=PID:PATH] [marker=PATH] [pids=N] [memory=BYTES] [only=NAME]
 *   other   a process outside the container and a file only its root has (another container's)
 *   marker  a path that exists on the host but not in the container (chroot escape)
 *   pids    forks to try (default 2100, above kago's 2048)
 *   memory  the container's memory limit: the probe tries to touch twice it (default: read from cgroup) */
#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <linux/perf_event.h>
#include <linux/reboot.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/klog.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/swap.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>
#include <linux/if_ether.h>
#include <sys/io.h>

struct res {
    int allowed; /* 1 ALLOWED, 0 blocked */
    char text[200];
};

static pid_t other_pid;
static const char *other_path, *marker;
static long npids = 2100;
static long long memory;

static void say(struct res *r, int allowed, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void say(struct res *r, int allowed, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    r->allowed = allowed;
    vsnprintf(r->text, sizeof r->text, fmt, ap);
    va_end(ap);
}

/* A call that succeeded (rc >= 0) is allowed; else blocked with its errno, unless that errno is one of
 * "passed" (the kernel got past its permission check: ALLOWED). */
static void judge(struct res *r, long rc, int passed1, int passed2)
{
    int e = errno;
    if (rc >= 0)
        say(r, 1, "succeeded");
    else if (e == passed1 || e == passed2)
        say(r, 1, "%s (past the permission check)", strerror(e));
    else
        say(r, 0, "%s", strerror(e));
}

static void open_write(struct res *r, const char *path)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd >= 0)
        say(r, 1, "%s opened for writing", path); /* nothing written */
    else
        say(r, 0, "%s: %s", path, strerror(errno));
}

static void read_some(struct res *r, const char *path)
{
    char buf[64];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        say(r, 0, "%s: %s", path, strerror(errno));
        return;
    }
    ssize_t n = read(fd, buf, sizeof buf);
    int e = errno;
    close(fd);
    if (n > 0)
        say(r, 1, "%s: read %zd bytes", path, n);
    else
        say(r, 0, "%s: %s", path, n == 0 ? "empty (masked)" : strerror(e));
}

static void a_mount(struct res *r)
{
    judge(r, mount("kago", "/tmp", "tmpfs", 0, NULL), -1, -1);
}
static void a_umount(struct res *r)
{
    judge(r, umount2("/proc", MNT_DETACH), -1, -1);
}
static void a_fsopen(struct res *r)
{
    judge(r, syscall(SYS_fsopen, "tmpfs", 0), -1, -1);
}
static void a_unshare_mnt(struct res *r)
{
    judge(r, unshare(CLONE_NEWNS), -1, -1);
}
static void a_unshare_user(struct res *r)
{
    judge(r, unshare(CLONE_NEWUSER), -1, -1);
}
static void a_clone_user(struct res *r)
{
    long rc = syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, NULL, NULL, NULL, NULL);
    if (rc == 0)
        _exit(0);
    if (rc > 0)
        waitpid((pid_t)rc, NULL, 0);
    judge(r, rc, -1, -1);
}
static void a_setns(struct res *r)
{
    int fd = open("/proc/self/ns/mnt", O_RDONLY | O_CLOEXEC);
    judge(r, fd < 0 ? fd : setns(fd, CLONE_NEWNS), -1, -1);
}
static void a_keyctl(struct res *r)
{
    judge(r, syscall(SYS_keyctl, 0 /* GET_KEYRING_ID */, -3, 0), -1, -1);
}
static void a_add_key(struct res *r)
{
    judge(r, syscall(SYS_add_key, "user", "kago", "x", 1, -3), -1, -1);
}
static void a_raw(struct res *r)
{
    judge(r, socket(AF_INET, SOCK_RAW, IPPROTO_ICMP), -1, -1);
}
static void a_packet(struct res *r)
{
    judge(r, socket(AF_PACKET, SOCK_RAW, htons(ETH_P_ALL)), -1, -1);
}
/* AF_VSOCK (40): to the hypervisor, past any network namespace (where the host has vsock) */
static void a_vsock(struct res *r)
{
    judge(r, socket(40, SOCK_STREAM, 0), -1, -1);
}
/* PTRACE_SEIZE: ATTACH's permission checks without stopping the tracee */
static void try_ptrace(struct res *r, pid_t pid)
{
    long rc = ptrace(PTRACE_SEIZE, pid, NULL, NULL);
    int e = errno;
    if (rc == 0)
        kill(pid, SIGCONT);
    errno = e;
    judge(r, rc, -1, -1);
}
static void a_ptrace_init(struct res *r)
{
    try_ptrace(r, 1);
}
static void vm_readv(struct res *r, pid_t pid)
{
    char buf[8];
    struct iovec l = {buf, sizeof buf}, rem = {(void *)0x400000, sizeof buf};
    /* EFAULT: the address is not mapped there, but the access was granted */
    judge(r, process_vm_readv(pid, &l, 1, &rem, 1, 0), EFAULT, -1);
}
static void a_vm_init(struct res *r)
{
    vm_readv(r, 1);
}
static void a_ptrace_other(struct res *r)
{
    if (!other_pid)
        return say(r, 0, "skipped: no other=PID:PATH given");
    try_ptrace(r, other_pid);
}
static void a_vm_other(struct res *r)
{
    if (!other_pid)
        return say(r, 0, "skipped: no other=PID:PATH given");
    vm_readv(r, other_pid);
}
static void a_kill_other(struct res *r)
{
    if (!other_pid)
        return say(r, 0, "skipped: no other=PID:PATH given");
    judge(r, kill(other_pid, 0), -1, -1);
}
static void a_proc_other(struct res *r)
{
    if (!other_pid)
        return say(r, 0, "skipped: no other=PID:PATH given");
    char p[512];
    snprintf(p, sizeof p, "/proc/%d/root%s", (int)other_pid, other_path);
    read_some(r, p);
}
static void a_sysrq(struct res *r)
{
    open_write(r, "/proc/sysrq-trigger");
}
static void a_core_pattern(struct res *r)
{
    open_write(r, "/proc/sys/kernel/core_pattern");
}
static void a_sysctl(struct res *r)
{
    open_write(r, "/proc/sys/vm/drop_caches");
}
static void a_sys(struct res *r)
{
    open_write(r, "/sys/kernel/uevent_helper");
}
static void a_kcore(struct res *r)
{
    read_some(r, "/proc/kcore");
}
static void a_kmsg(struct res *r)
{
    read_some(r, "/proc/kmsg");
}
static void a_timer_list(struct res *r)
{
    read_some(r, "/proc/timer_list");
}
static void a_dmesg(struct res *r)
{
    char buf[64];
    judge(r, klogctl(3 /* SYSLOG_ACTION_READ_ALL */, buf, sizeof buf), -1, -1);
}
static void try_node(struct res *r, const char *path, mode_t type, dev_t dev)
{
    unlink(path);
    if (mknod(path, type | 0600, dev) < 0)
        return say(r, 0, "mknod %u:%u: %s", major(dev), minor(dev), strerror(errno));
    char buf[16];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    int e = errno;
    ssize_t n = fd >= 0 ? read(fd, buf, sizeof buf) : -1;
    e = fd >= 0 ? errno : e;
    if (fd >= 0)
        close(fd);
    unlink(path);
    if (n > 0)
        say(r, 1, "made %u:%u and read it", major(dev), minor(dev));
    else
        say(r, 0, "made %u:%u, but open/read: %s", major(dev), minor(dev), strerror(e));
}
static void a_mknod_mem(struct res *r)
{
    try_node(r, "/tmp/.kago-probe-mem", S_IFCHR, makedev(1, 1));
}
static void a_mknod_disk(struct res *r)
{
    /* the device of the filesystem the container's root is on, as mountinfo names it */
    unsigned maj = 8, min = 0;
    FILE *f = fopen("/proc/self/mountinfo", "r");
    char line[1024];
    while (f && fgets(line, sizeof line, f)) {
        unsigned a, b;
        char mp[512];
        if (sscanf(line, "%*d %*d %u:%u %*s %511s", &a, &b, mp) == 3 && !strcmp(mp, "/") && a) {
            maj = a, min = b;
            break;
        }
    }
    if (f)
        fclose(f);
    try_node(r, "/tmp/.kago-probe-disk", S_IFBLK, makedev(maj, min));
}
static void a_init_module(struct res *r)
{
    judge(r, syscall(SYS_init_module, NULL, 0, ""), EFAULT, ENOEXEC);
}
static void a_delete_module(struct res *r)
{
    judge(r, syscall(SYS_delete_module, "kago_none", 0), ENOENT, -1);
}
static void a_bpf(struct res *r)
{
    union bpf_attr a;
    memset(&a, 0, sizeof a);
    a.map_type = BPF_MAP_TYPE_ARRAY, a.key_size = 4, a.value_size = 4, a.max_entries = 1;
    judge(r, syscall(SYS_bpf, BPF_MAP_CREATE, &a, sizeof a), -1, -1);
}
static void a_perf(struct res *r)
{
    struct perf_event_attr a;
    memset(&a, 0, sizeof a);
    a.type = PERF_TYPE_SOFTWARE, a.size = sizeof a, a.config = PERF_COUNT_SW_CPU_CLOCK, a.exclude_kernel = 1;
    a.exclude_hv = 1;
    judge(r, syscall(SYS_perf_event_open, &a, 0, -1, -1, 0), -1, -1);
}
static void a_open_by_handle(struct res *r)
{
    struct {
        struct file_handle h;
        unsigned char b[128];
    } fh;
    int mnt;
    fh.h.handle_bytes = sizeof fh.b;
    if (name_to_handle_at(AT_FDCWD, "/", &fh.h, &mnt, 0) < 0)
        return say(r, 0, "name_to_handle_at: %s", strerror(errno));
    int root = open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    judge(r, open_by_handle_at(root, &fh.h, O_RDONLY), -1, -1);
}
static void a_kexec(struct res *r)
{
    judge(r, syscall(SYS_kexec_load, 0, 0, NULL, 0xffff0000ul), EINVAL, -1);
}
static void a_reboot(struct res *r)
{
    judge(r, syscall(SYS_reboot, LINUX_REBOOT_MAGIC1, LINUX_REBOOT_MAGIC2, 0x12345678, NULL), EINVAL, -1);
}
static void a_swapon(struct res *r)
{
    judge(r, swapon("/.kago-probe-no-such-file", 0), ENOENT, -1);
}
static void a_ioperm(struct res *r)
{
    judge(r, ioperm(0x80, 1, 1), -1, -1);
}
static void a_uid0(struct res *r)
{
    unsigned in = 1, out = 1, n = 0;
    FILE *f = fopen("/proc/self/uid_map", "r");
    int k = f ? fscanf(f, "%u %u %u", &in, &out, &n) : 0;
    if (f)
        fclose(f);
    if (k != 3)
        return say(r, 0, "uid_map unreadable");
    if (in == 0 && out == 0)
        return say(r, 1, "uid 0 is host uid 0 (uid_map 0 0 %u)", n);
    say(r, 0, "uid 0 is host uid %u", out - in);
}
static void a_chroot(struct res *r)
{
    if (!marker)
        return say(r, 0, "skipped: no marker=PATH given");
    struct stat st;
    if (stat(marker, &st) == 0)
        return say(r, 1, "%s visible before any escape", marker);
    mkdir("/tmp/.kago-probe-jail", 0700);
    if (chroot("/tmp/.kago-probe-jail") < 0)
        return say(r, 0, "chroot: %s", strerror(errno));
    for (int i = 0; i < 64; i++)
        if (chdir("..") < 0)
            break;
    if (chroot(".") < 0)
        return say(r, 0, "chroot .: %s", strerror(errno));
    if (stat(marker, &st) == 0)
        return say(r, 1, "%s reached through chroot + ..", marker);
    say(r, 0, "chroot + .. stays in the container's root");
}
static void a_hostname(struct res *r)
{
    judge(r, sethostname("kago-probe", 10), -1, -1);
}

/* The container's own memory limit file under /sys/fs/cgroup (v2, then v1). */
static const char *limit_file(void)
{
    static const char *const files[] = {"/sys/fs/cgroup/memory.max",
                                        "/sys/fs/cgroup/memory/memory.limit_in_bytes"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++)
        if (access(files[i], F_OK) == 0)
            return files[i];
    return NULL;
}
static void a_cgroup_write(struct res *r)
{
    const char *f = limit_file();
    if (!f)
        return say(r, 0, "no memory limit file under /sys/fs/cgroup");
    open_write(r, f);
}
static void a_memory(struct res *r)
{
    long long lim = memory;
    const char *f = limit_file();
    FILE *fp = !lim && f ? fopen(f, "r") : NULL;
    if (fp && fscanf(fp, "%lld", &lim) != 1)
        lim = 0;
    if (fp)
        fclose(fp);
    if (lim <= 0 || lim > (4ll << 30))
        return say(r, 1, "no memory limit to escape (%lld)", lim);
    long long want = 2 * lim, got = 0;
    pid_t pid = fork();
    if (pid == 0) {
        for (; got < want; got += 1 << 20) {
            char *p = mmap(NULL, 1 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (p == MAP_FAILED)
                _exit(3);
            memset(p, 1, 1 << 20);
        }
        _exit(0);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
        return say(r, 1, "touched %lld MiB, twice the %lld MiB limit", want >> 20, lim >> 20);
    say(r, 0, "limit %lld MiB: %s", lim >> 20, WIFSIGNALED(st) ? strsignal(WTERMSIG(st)) : "mmap failed");
}
static void a_pids(struct res *r)
{
    pid_t *kids = calloc((size_t)npids, sizeof *kids);
    long n = 0;
    int e = 0;
    for (; n < npids; n++) {
        pid_t p = fork();
        if (p == 0) {
            pause();
            _exit(0);
        }
        if (p < 0) {
            e = errno;
            break;
        }
        kids[n] = p;
    }
    for (long i = 0; i < n; i++)
        kill(kids[i], SIGKILL);
    for (long i = 0; i < n; i++)
        waitpid(kids[i], NULL, 0);
    if (n == npids)
        say(r, 1, "%ld processes forked", n);
    else
        say(r, 0, "fork %ld: %s", n + 1, strerror(e));
}

static const struct {
    const char *name;
    void (*fn)(struct res *);
} attempts[] = {
    {"mount", a_mount},
    {"umount", a_umount},
    {"fsopen", a_fsopen},
    {"unshare-mnt", a_unshare_mnt},
    {"unshare-user", a_unshare_user},
    {"clone-newuser", a_clone_user},
    {"setns", a_setns},
    {"keyctl", a_keyctl},
    {"add_key", a_add_key},
    {"raw-socket", a_raw},
    {"packet-socket", a_packet},
    {"vsock-socket", a_vsock},
    {"ptrace-init", a_ptrace_init},
    {"ptrace-other", a_ptrace_other},
    {"vm-readv-init", a_vm_init},
    {"vm-readv-other", a_vm_other},
    {"kill-other", a_kill_other},
    {"proc-other-root", a_proc_other},
    {"proc-sysrq", a_sysrq},
    {"proc-core-pattern", a_core_pattern},
    {"sysctl-write", a_sysctl},
    {"sys-write", a_sys},
    {"proc-kcore", a_kcore},
    {"proc-kmsg", a_kmsg},
    {"proc-timer-list", a_timer_list},
    {"dmesg", a_dmesg},
    {"mknod-mem", a_mknod_mem},
    {"mknod-disk", a_mknod_disk},
    {"init-module", a_init_module},
    {"delete-module", a_delete_module},
    {"bpf", a_bpf},
    {"perf-event", a_perf},
    {"open-by-handle", a_open_by_handle},
    {"kexec", a_kexec},
    {"reboot", a_reboot},
    {"swapon", a_swapon},
    {"ioperm", a_ioperm},
    {"uid0-host", a_uid0},
    {"chroot-escape", a_chroot},
    {"hostname", a_hostname},
    {"cgroup-write", a_cgroup_write},
    {"pids-limit", a_pids},
    {"memory-limit", a_memory}, /* last: an OOM kill may take more than the attempt */
};

int main(int argc, char **argv)
{
    const char *only = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strncmp(argv[i], "other=", 6)) {
            other_pid = (pid_t)atoi(argv[i] + 6);
            const char *c = strchr(argv[i], ':');
            other_path = c ? c + 1 : "/";
        } else if (!strncmp(argv[i], "marker=", 7)) {
            marker = argv[i] + 7;
        } else if (!strncmp(argv[i], "pids=", 5)) {
            npids = atol(argv[i] + 5);
        } else if (!strncmp(argv[i], "memory=", 7)) {
            memory = atoll(argv[i] + 7);
        } else if (!strncmp(argv[i], "only=", 5)) {
            only = argv[i] + 5;
        } else {
            fprintf(stderr, "kago-probe: unknown argument %s\n", argv[i]);
            return 2;
        }
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    for (size_t i = 0; i < sizeof attempts / sizeof attempts[0]; i++) {
        if (only && strcmp(only, attempts[i].name))
            continue;
        int p[2];
        if (pipe(p) < 0)
            return perror("pipe"), 1;
        struct res r = {0, "no answer"};
        pid_t pid = fork();
        if (pid == 0) {
            close(p[0]);
            attempts[i].fn(&r);
            if (write(p[1], &r, sizeof r) != sizeof r)
                _exit(1);
            _exit(0);
        }
        close(p[1]);
        int st = 0;
        ssize_t n = pid > 0 ? read(p[0], &r, sizeof r) : -1;
        if (pid > 0)
            waitpid(pid, &st, 0);
        close(p[0]);
        if (n != sizeof r)
            snprintf(r.text, sizeof r.text, "the attempt died: %s",
                     pid < 0           ? strerror(errno)
                     : WIFSIGNALED(st) ? strsignal(WTERMSIG(st))
                                       : "no answer");
        printf("%s %s %s\n", attempts[i].name, r.allowed ? "ALLOWED" : "blocked", r.text);
    }
    kill(getppid(), SIGCONT); /* the shell that ran us, should an allowed attempt have left it stopped */
    return 0;
}
