/* Container lifecycle, parent side: create (clone into namespaces and cgroup), start, load, kill, delete,
 * update, pause, stats, exec. The child side is in linux.c. */
#include <dirent.h>
#include <fcntl.h>
#include <linux/sched.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>

#include "container_int.h"
#include "image_int.h"
#include "linux.h"
#include "spawner.h"

#ifndef CLONE_INTO_CGROUP
#define CLONE_INTO_CGROUP 0x200000000ULL
#endif

static int pidfd_open_(pid_t pid)
{
    return (int)syscall(SYS_pidfd_open, pid, 0);
}

static void close_fd(int *fd)
{
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
}

static char *generate_name(void)
{
    unsigned char b[4];
    if (getentropy(b, sizeof b) < 0)
        abort();
    return xasprintf("k%02x%02x%02x%02x", b[0], b[1], b[2], b[3]);
}

struct kago_container *kago__container_new(const char *root, const char *name)
{
    struct kago_container *c = xcalloc(1, sizeof *c);
    c->root = xstrdup(root ? root : KAGO_DEFAULT_ROOT);
    c->dir = xasprintf("%s/%s", c->root, name);
    c->pidfd = -1;
    c->tty_master = -1;
    c->exit_status = -1;
    return c;
}

void kago_container_free(struct kago_container *c)
{
    if (!c)
        return;
    close_fd(&c->pidfd);
    close_fd(&c->tty_master);
    kago__cgroup_fini(&c->cg);
    kago_spec_free(&c->spec);
    free(c->root);
    free(c->dir);
    free(c);
}

/* Reads the child's report: 'R' (waiting for start), 'O' (ok), "E<code> <msg>" (failed), or EOF (exec'd).
 * A terminal's master, which comes first ("T" with the fd), goes to *fd (-1 when none came; fd NULL:
 * closed). */
int kago__read_child(int sync_fd, char *kind, int *fd, struct kago_error **err)
{
    char buf[4097];
    ssize_t n;
    int resets = 0;
    union kago__fd_ctl ctl;
    struct iovec iov = {.iov_base = buf, .iov_len = sizeof buf - 1};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = &ctl};
    if (fd)
        *fd = -1;
    do {
        mh.msg_controllen = sizeof ctl;
        /* A child that failed before reading our "G" closed its end with it unread: the kernel then
         * reports ECONNRESET once, ahead of the error message still queued for us. */
        do
            n = recvmsg(sync_fd, &mh, MSG_CMSG_CLOEXEC);
        while (n < 0 && (errno == EINTR || (errno == ECONNRESET && resets++ == 0)));
        if (n < 0)
            return kago_error_set(err, errno, "read from container init");
        int got = kago__msg_fd(&mh);
        if (got >= 0 && fd)
            *fd = got;
        else if (got >= 0)
            close(got);
        buf[n] = '\0';
        *kind = n == 0 ? 'X' : buf[0];
    } while (*kind == 'T');
    if (*kind == 'E') {
        char *msg = strchr(buf, ' ');
        struct kago_error *e = xcalloc(1, sizeof *e);
        e->code = atoi(buf + 1);
        e->msg = xstrdup(msg ? msg + 1 : "container setup failed");
        kago_error_free(*err);
        *err = e;
        return -1;
    }
    return 0;
}

static int write_idmap(pid_t pid, const char *file, const struct kago_idmap *m, size_t n,
                       struct kago_error **err)
{
    char buf[1024];
    size_t len = 0;
    for (size_t i = 0; i < n && len < sizeof buf - 64; i++)
        len += (size_t)snprintf(buf + len, sizeof buf - len, "%u %u %u\n", m[i].inside, m[i].outside,
                                m[i].count);
    cleanup_free char *path = xasprintf("/proc/%d/%s", (int)pid, file);
    if (kago__write_file(path, buf, NULL) == 0)
        return 0;
    int e = errno;
    char one[2048]; /* (one line: "0 0 1, 0 5 1") */
    size_t o = 0;
    for (const char *p = buf; *p && o + 3 < sizeof one; p++)
        if (*p != '\n')
            one[o++] = *p;
        else if (p[1])
            one[o++] = ',', one[o++] = ' ';
    one[o] = '\0';
    return kago_error_set(err, e, "write %s \"%s\" (each: inside outside count)", path, one);
}

static int setup_userns(pid_t pid, const struct kago_spec *spec, struct kago_error **err)
{
    if (write_idmap(pid, "uid_map", spec->uidmap, spec->nuidmap, err) < 0)
        return -1;
    cleanup_free char *sg = xasprintf("/proc/%d/setgroups", (int)pid);
    if (kago__write_file(sg, "deny", err) < 0)
        return -1;
    if (spec->ngidmap)
        return write_idmap(pid, "gid_map", spec->gidmap, spec->ngidmap, err);
    return write_idmap(pid, "gid_map", spec->uidmap, spec->nuidmap, err);
}

struct before_pid {
    struct kago_container *c;
    const struct kago_spec *spec;
    struct kago__bpf *bpf;
    bool *cg_made, clone_into, ran;
    bool premade; /* a warm sandbox's: the cgroup exists, the child is in it */
    int ret;
    struct kago_error *err;
};

struct launch {
    struct kago__child ch;
    struct kago__cgroup *cg;
    int cgroup_fd;
    int pidfd;
    pid_t pid;
    bool pin;       /* the caller waits for the start: pin_here, and the parent makes the netns */
    bool pinned;    /* this process runs away from it until unpin */
    cpu_set_t cpus; /* its CPUs before */
    int sync;       /* the parent's end of the sync socket */
    int reply_fd;   /* the spawner's answer to come (a caller that does not wait for it), or -1 */
    bool offload;   /* the parent's half is left to kago_create_work (opts->offload) */
    bool later;     /* launch left the rest to kago_create_step (or kago_create_work) */
    struct before_pid b;
};

/* A child cloned onto another CPU waits for it to wake, and on a VM an idle vCPU takes 0.1-1 ms: the
 * child, the critical path of a start, should rather run on this CPU, while this process does its half
 * (cgroup, state file) on another. Only for a caller that waits anyway: a serving event loop would lose
 * that wake-up instead. The child gets this process's CPUs back at once. */
static void pin_here(struct launch *l)
{
    int cpu = sched_getcpu();
    cpu_set_t one;
    CPU_ZERO(&one);
    if (cpu >= 0)
        CPU_SET(cpu, &one);
    l->pinned = l->pin && cpu >= 0 && sched_getaffinity(0, sizeof l->cpus, &l->cpus) == 0 &&
                CPU_ISSET(cpu, &l->cpus) && CPU_COUNT(&l->cpus) > 1 &&
                sched_setaffinity(0, sizeof one, &one) == 0;
}

static void pin_child(struct launch *l)
{
    if (!l->pinned)
        return;
    cpu_set_t others = l->cpus;
    CPU_CLR(sched_getcpu(), &others);
    if (l->pid > 0)
        sched_setaffinity(l->pid, sizeof l->cpus, &l->cpus);
    sched_setaffinity(0, sizeof others, &others);
}

static void unpin(struct launch *l)
{
    if (l->pinned)
        sched_setaffinity(0, sizeof l->cpus, &l->cpus);
    l->pinned = false;
}

static pid_t do_clone(struct kago__child *ch, struct kago__cgroup *cg, uint64_t flags, int *cgroup_fd,
                      int *pidfd)
{
    /* CLONE_PARENT (the spawner): the child signals its new parent as the caller does its own */
    struct clone_args args = {.flags = flags | CLONE_PIDFD,
                              .pidfd = (uint64_t)(uintptr_t)pidfd,
                              .exit_signal = (flags & CLONE_PARENT) ? 0 : SIGCHLD};
    if (*cgroup_fd >= 0) {
        args.flags |= CLONE_INTO_CGROUP;
        args.cgroup = (uint64_t)*cgroup_fd;
    }
    /* a child in a new user namespace is not root on the host and cannot write the cgroup files itself */
    bool self_enter = *cgroup_fd < 0 && !(ch->spec->ns & (1u << KAGO_NS_USER));
    ch->enter_cg = self_enter ? cg : NULL;
    ch->cg = cg;
    pid_t pid = (pid_t)syscall(SYS_clone3, &args, sizeof args);
    if (pid < 0 && *cgroup_fd >= 0 && (errno == EINVAL || errno == E2BIG)) {
        close(*cgroup_fd);
        *cgroup_fd = -1; /* an older kernel: enter the cgroup after clone instead */
        return do_clone(ch, cg, flags, cgroup_fd, pidfd);
    }
    return pid;
}

/* Opens the namespaces to join; the pid namespace is entered by the parent (for its next child). */
static int open_joins(const struct kago_spec *spec, int *fds, struct kago_error **err)
{
    for (int i = 0; i < KAGO_NS_COUNT; i++) {
        fds[i] = -1;
        if (spec->join_ns[i] && (fds[i] = open(spec->join_ns[i], O_RDONLY | O_CLOEXEC)) < 0)
            return kago_error_set(err, errno, "%s namespace %s", kago_ns_name(i), spec->join_ns[i]);
    }
    return 0;
}

pid_t kago__clone_child(struct kago__child *ch, struct kago__cgroup *cg, uint64_t flags, int *cgroup_fd,
                        int *pidfd, struct kago_error **err)
{
    const struct kago_spec *spec = ch->spec;
    int self_pidns = -1;
    if (ch->join_fds[KAGO_NS_PID] >= 0) {
        self_pidns = open("/proc/self/ns/pid", O_RDONLY | O_CLOEXEC);
        if (self_pidns < 0 || setns(ch->join_fds[KAGO_NS_PID], CLONE_NEWPID) < 0) {
            kago_error_set(err, errno, "join pid namespace %s", spec->join_ns[KAGO_NS_PID]);
            close_fd(&self_pidns);
            return -1;
        }
    }
    pid_t pid = do_clone(ch, cg, flags, cgroup_fd, pidfd);
    if (pid == 0)
        kago__child_main(ch);
    int saved = errno;
    if (self_pidns >= 0) {
        if (setns(self_pidns, CLONE_NEWPID) < 0) {
            /* cannot happen for our own namespace; without it later children would land in the joined one */
            abort();
        }
        close(self_pidns);
    }
    if (pid < 0)
        kago_error_set(err, saved, "clone");
    return pid;
}

static uint64_t clone_flags(const struct kago_spec *spec, bool net_later)
{
    uint64_t flags = 0;
    for (int i = 0; i < KAGO_NS_COUNT; i++)
        if ((spec->ns & (1u << i)) && i != KAGO_NS_CGROUP && !(i == KAGO_NS_NET && net_later))
            flags |= (uint64_t)kago__ns_clone_flag(i); /* cgroup ns: made by the child once inside */
    return flags;
}

uint64_t kago__clone_flags(const struct kago_spec *spec)
{
    return clone_flags(spec, false);
}

/* The parent's work that needs no pid (after the clone here; through the spawner, while it clones). */
static int setup_cgroup(struct kago_container *c, const struct kago_spec *spec, struct kago_error **err);

/* v1: the cgroup (v2 clones into it: made before); the device rules (v2: loading and attaching a BPF
 * program), in place before "G", so before the child execs or opens a device; the seccomp filter. */
static void before_pid(void *arg)
{
    struct before_pid *b = arg;
    b->ran = true;
    if (!b->clone_into) {
        *b->cg_made = true;
        if ((b->ret = b->premade ? b->c->cg.ops->apply(&b->c->cg, &b->spec->limits, &b->err)
                                 : setup_cgroup(b->c, b->spec, &b->err)) < 0)
            return;
    }
    if ((b->ret = b->c->cg.ops->devices(&b->c->cg, b->spec->mknod_any, &b->err)) < 0)
        return;
    b->ret = kago__seccomp_compile(b->spec, b->bpf, &b->err);
}

/* Clones the child here, or through the spawner (kago serve's, spawner.c) when one runs. */
static pid_t clone_child(struct launch *l, const struct kago_spec *spec, struct before_pid *b,
                         struct kago_error **err)
{
    uint64_t flags = clone_flags(spec, l->ch.net_later);
    pid_t pid =
        kago__spawner_clone(&l->ch, l->cg, flags, &l->cgroup_fd, &l->pidfd, l->offload ? NULL : before_pid, b,
                            l->reply_fd == -2 ? &l->reply_fd : NULL, err);
    if (l->reply_fd == -2)
        l->reply_fd = -1; /* (answered already, or not through the spawner) */
    if (pid != -2)
        return pid;
    return kago__clone_child(&l->ch, l->cg, flags, &l->cgroup_fd, &l->pidfd, err);
}

static void reap(pid_t pid)
{
    kill(pid, SIGKILL);
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
        ;
}

/* Makes the child's network namespace and sends it with "N"; this thread returns to its own. */
static int send_netns(int sync_fd, struct kago_error **err)
{
    cleanup_close int self = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    if (self < 0)
        return kago_error_set(err, errno, "open /proc/thread-self/ns/net");
    if (unshare(CLONE_NEWNET) < 0)
        return kago_error_set(err, errno, "new network namespace");
    cleanup_close int ns = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    int saved = errno;
    if (setns(self, CLONE_NEWNET) < 0)
        abort(); /* our own namespace cannot refuse us; staying in the container's would be worse */
    if (ns < 0)
        return kago_error_set(err, saved, "open the new network namespace");
    kago__trace("netns made");
    if (kago__fault("netns"))
        return kago_error_set(err, EIO, "injected fault after the network namespace");
    /* a child that already failed has closed its end: its report is queued for us */
    if (kago__send_fd(sync_fd, 'N', ns) < 0 && errno != EPIPE && errno != ECONNRESET)
        return kago_error_set(err, errno, "send the network namespace");
    return 0;
}

/* Everything up to a running (or start-waiting) child, in this process. */
static int setup_cgroup(struct kago_container *c, const struct kago_spec *spec, struct kago_error **err)
{
    if (c->cg.ops->create(&c->cg, &spec->limits, err) < 0)
        return -1;
    kago__trace("cgroup created");
    if (kago__fault("cgroup"))
        return kago_error_set(err, EIO, "injected fault after cgroup create");
    if (c->cg.ops->apply(&c->cg, &spec->limits, err) < 0)
        return -1;
    kago__trace("cgroup limits applied");
    return 0;
}

static int launch_rest(struct kago_container *c, const struct kago_spec *spec, struct launch *l,
                       struct kago_error **err);

/* The parent's half of a start. While the child builds its mounts the parent makes its network namespace
 * (a caller that waits, see net_later) and, on cgroup v1, its cgroup; on v2 the child is cloned into its
 * cgroup. "G" then carries the seccomp filter. Returns 0 with l->sync the sync socket, or with
 * l->reply_fd >= 0 when the spawner's answer is still to come (l->reply_fd -2 asks for that: launch_rest
 * then does the rest), or -1. */
static int launch(struct kago_container *c, const struct kago_spec *spec, struct launch *l, bool *cg_made,
                  struct kago_error **err)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
        return kago_error_set(err, errno, "socketpair");
    l->sync = sv[0];
    /* (a warm sandbox was cloned into a cgroup of its own, the spec's cgroup_path: see spawner.h; with
     * offload the cgroup is made by kago_create_work, and the child enters it as on v1) */
    bool clone_into = strcmp(c->cg.ops->name, "v1") != 0 && !l->ch.warm_id && !l->offload;
    if (clone_into) {
        *cg_made = true; /* from here on a failure removes whatever part of the cgroup was made */
        if (setup_cgroup(c, spec, err) < 0) {
            close_fd(&sv[1]);
            close_fd(&l->sync);
            return -1;
        }
        l->cgroup_fd = c->cg.ops->open_dir(&c->cg, NULL);
    }
    l->ch.sync_fd = sv[1];
    l->ch.parent_fd = sv[0];
    l->cg = &c->cg;
    pin_here(l);
    /* A new network namespace is most of a clone's cost (each protocol's per-namespace setup, 0.7 ms
     * here): a caller that waits makes it while the child mounts. Not under a user namespace, which must
     * own it. */
    l->ch.net_later = l->pin && (spec->ns & (1u << KAGO_NS_NET)) && !(spec->ns & (1u << KAGO_NS_USER)) &&
                      !spec->join_ns[KAGO_NS_USER];
    l->ch.spin = l->pinned;
    l->b = (struct before_pid){
        .c = c, .spec = spec, .bpf = l->ch.bpf, .cg_made = cg_made, .clone_into = clone_into};
    l->pid = clone_child(l, spec, &l->b, err);
    close_fd(&sv[1]);
    /* the spawner answers later, or (offload) the rest is another thread's: launch_rest then */
    l->later = l->reply_fd >= 0 || (l->offload && l->pid > 0);
    if (l->later)
        return 0;
    return launch_rest(c, spec, l, err);
}

/* What follows the clone: the child's pid is l->pid (or < 0: the clone failed, *err says why). Returns 0, or
 * -1 with l->sync closed. */
static int launch_rest(struct kago_container *c, const struct kago_spec *spec, struct launch *l,
                       struct kago_error **err)
{
    struct before_pid *b = &l->b;
    pin_child(l);
    kago__trace("cloned");
    if (l->pid < 0) {
        kago_error_free(b->err);
        goto fail;
    }
    if (l->ch.net_later && send_netns(l->sync, err) < 0)
        goto fail_b;
    /* In a user namespace the child's mounts wait for its maps (and its idmapped mounts): they go first,
     * "M" says they are there, and the cgroup is made and entered while the child mounts. */
    bool userns = spec->ns & (1u << KAGO_NS_USER);
    if (userns && (setup_userns(l->pid, spec, err) < 0 ||
                   (spec->userns == KAGO_USERNS_AUTO && kago__idmap_send(spec, l->pid, l->sync, err) < 0)))
        goto fail_b;
    if (userns && send(l->sync, "M", 1, MSG_NOSIGNAL) < 0 && errno != EPIPE && errno != ECONNRESET) {
        kago_error_set(err, errno, "tell container init its maps are written");
        goto fail_b;
    }
    if (!b->ran) { /* cloned here (or by a warm sandbox): made while the child mounts */
        b->premade = l->ch.warm;
        before_pid(b);
    }
    if (b->ret < 0) {
        if (err)
            *err = b->err;
        else
            kago_error_free(b->err);
        b->err = NULL;
        goto fail;
    }
    unpin(l);
    if (userns && l->cgroup_fd < 0 && !l->ch.warm && c->cg.ops->enter(&c->cg, l->pid, err) < 0)
        goto fail;
    kago__trace("seccomp compiled");
    /* "G" carries the filter: the child has its own copy of the buffer (it is not shared memory, whose
     * setup costs a start more than this copy). The child may already have failed and closed its end: its
     * report is still queued to read. */
    struct iovec iov[2] = {
        {.iov_base = "G", .iov_len = 1},
        {.iov_base = l->ch.bpf->insns, .iov_len = l->ch.bpf->len * sizeof l->ch.bpf->insns[0]}};
    struct msghdr mh = {.msg_iov = iov, .msg_iovlen = 2};
    if (sendmsg(l->sync, &mh, MSG_NOSIGNAL) < 0 && errno != EPIPE && errno != ECONNRESET) {
        kago_error_set(err, errno, "start container init");
        goto fail;
    }
    return 0;
fail_b:
    kago_error_free(b->err); /* (the work before the pid failed too, or it did not run) */
    b->err = NULL;
fail:
    unpin(l);
    close_fd(&l->sync);
    return -1;
}

/* A create between its halves: the child is setting itself up in its namespaces. Its sync socket turns
 * readable when the child has exec'd (EOF), waits for start ('R') or has failed (its error). */
struct kago_create {
    struct kago_container *c;
    int sync_fd, pidfd;
    pid_t pid;
    bool cg_made, wait_start, detach, pin;
    int done; /* detached: the shim made it (or failed, -1) before begin returned */
    /* kago_create_work ran: its result, for kago_create_step */
    bool worked;
    int work_ret;
    struct kago_error *work_err;
    struct kago__bpf *bpf;
    /* begin's end, while the spawner's answer is awaited (opts->async): kago_create_step */
    struct launch *pending;
    int image_pin; /* (see begin_here) */
};

static void pending_free(struct kago_create *cr)
{
    struct launch *l = cr->pending;
    if (!l)
        return;
    close_fd(&l->reply_fd);
    close_fd(&l->sync);
    close_fd(&l->cgroup_fd);
    close_fd(&l->pidfd);
    kago_error_free(l->b.err);
    free(l);
    cr->pending = NULL;
}

/* Undoes a create that failed: the child, its cgroup, the exec fifo. Releases what the parent holds. */
static void create_release(struct kago_create *cr, bool failed)
{
    if (failed && cr->pending && cr->pid <= 0) /* an answer that came: that child goes as any */
        cr->pid = kago__spawner_reply_pid(cr->pending->reply_fd);
    pending_free(cr); /* (a child the spawner clones after this finds its parent's end closed, and exits) */
    close_fd(&cr->image_pin);
    if (failed && cr->pid > 0)
        reap(cr->pid);
    if (failed && cr->cg_made)
        cr->c->cg.ops->destroy(&cr->c->cg, NULL);
    if (failed) {
        cleanup_free char *fifo = xasprintf("%s/exec.fifo", cr->c->dir);
        unlink(fifo);
    }
    close_fd(&cr->sync_fd);
    close_fd(&cr->pidfd);
    free(cr->bpf);
    cr->bpf = NULL;
    cr->pid = -1;
    kago_error_free(cr->work_err);
    cr->work_err = NULL;
}

/* begin's last step, once the child's pid is known: the state file, written while the child finishes its
 * setup (a failure removes it with the dir). */
static int begin_tail(struct kago_create *cr, const struct launch *l, struct kago_error **err)
{
    struct kago_container *c = cr->c;
    cr->pid = l->pid;
    c->pid = l->pid;
    c->starttime = kago__proc_starttime(l->pid, NULL);
    c->created = (long long)time(NULL);
    if (kago__state_write(c, err) < 0)
        return -1;
    kago__trace("state written");
    return 0;
}

int kago__rootfs_errno(const struct kago_spec *spec)
{
    struct stat st;
    if (spec->layers || !spec->rootfs)
        return 0;
    return stat(spec->rootfs, &st) < 0 ? errno : S_ISDIR(st.st_mode) ? 0 : ENOTDIR;
}

/* The first half, in this process: everything up to a child setting itself up. On failure everything it
 * made is undone. */
static int begin_here(struct kago_create *cr, const struct kago_spec *spec,
                      const struct kago_spawn_opts *opts, struct kago_error **err)
{
    struct kago_container *c = cr->c;
    cr->sync_fd = cr->pidfd = cr->pid = -1;
    /* an image is pinned in its store until the state file names it (rm and prune then see it) */
    cleanup_close int pin = spec->layers ? kago__image_pin(spec, c->root, err) : -1;
    if (spec->layers && pin < 0)
        return -1;
    int why = kago__rootfs_errno(spec);
    if (why)
        return kago_error_set(err, why, "rootfs %s", spec->rootfs);
    kago__trace("rootfs checked");
    if (kago__cgroup_init(&c->cg, NULL, spec->name, spec->cgroup_path, err) < 0)
        return -1;
    /* A cgroup path of the caller's: kept beside the state, so that a create killed before the state file
     * can still be undone (kago_container_remove_partial). */
    if (spec->cgroup_path) {
        cleanup_free char *cgfile = xasprintf("%s/cgroup", c->dir);
        cleanup_close int fd = open(cgfile, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0 || write(fd, spec->cgroup_path, strlen(spec->cgroup_path)) < 0)
            return kago_error_set(err, errno, "write %s", cgfile);
    }
    kago__trace("create: begin");
    int ret = -1;
    /* (reply_fd -2: a caller that does not wait for the spawner's answer; see launch) */
    struct launch l = {.cgroup_fd = -1,
                       .pidfd = -1,
                       .pid = -1,
                       .pin = cr->pin,
                       .sync = -1,
                       .offload = opts && opts->offload && !cr->pin,
                       .reply_fd = opts && (opts->async || opts->offload) && !cr->pin ? -2 : -1};
    int nostdio[3] = {-1, -1, -1};
    cr->wait_start = opts && opts->wait_start;
    cleanup_free char *scratch = xasprintf("%s/ovl", c->dir);
    cleanup_free char *fifo = xasprintf("%s/exec.fifo", c->dir);
    l.ch = (struct kago__child){.spec = spec,
                                .scratch = scratch,
                                .sync_fd = -1,
                                .parent_fd = -1,
                                .fifo_fd = -1,
                                .stdio = opts ? opts->stdio : nostdio,
                                .die_with_parent = !(opts && (opts->detach || opts->orphan)),
                                .tty = opts && opts->tty,
                                .warm_id = opts ? opts->warm : 0};
    for (int i = 0; i < KAGO_NS_COUNT; i++)
        l.ch.join_fds[i] = -1;
    /* the filter, compiled here while the child sets up (sent with "G") */
    cr->bpf = xmalloc(sizeof *cr->bpf);
    l.ch.bpf = cr->bpf;
    l.ch.scratch_fd = -1;
    l.ch.warm_proc = l.ch.warm_sys = -1;
    if ((spec->overlay || spec->userns == KAGO_USERNS_AUTO) && mkdir(scratch, 0700) < 0) {
        kago_error_set(err, errno, "mkdir %s", scratch);
        goto out;
    }
    if (cr->wait_start && (mkfifo(fifo, 0600) < 0 || (l.ch.fifo_fd = open(fifo, O_PATH | O_CLOEXEC)) < 0)) {
        kago_error_set(err, errno, "exec fifo %s", fifo);
        goto out;
    }
    /* the fifo is opened by the container's root, which in a user namespace is not the host's */
    if (cr->wait_start && spec->userns == KAGO_USERNS_AUTO &&
        chown(fifo, spec->uidmap[0].outside, spec->gidmap[0].outside) < 0) {
        kago_error_set(err, errno, "exec fifo %s", fifo);
        goto out;
    }
    if (open_joins(spec, l.ch.join_fds, err) < 0)
        goto out;
    if (launch(c, spec, &l, &cr->cg_made, err) < 0)
        goto out;
    if (l.later) { /* the rest once the spawner has answered: kago_create_step (or kago_create_work) */
        l.ch.scratch = NULL;
        l.ch.stdio = NULL; /* (the caller's; the spawner has its copies) */
        cr->pending = xmalloc(sizeof l);
        *cr->pending = l;
        l.cgroup_fd = -1;
        cr->image_pin = steal_fd(&pin);
        ret = 0;
        goto out;
    }
    cr->sync_fd = l.sync;
    ret = begin_tail(cr, &l, err);
out:
    if (ret < 0 && cr->pid <= 0 && l.pid > 0 && l.pidfd >= 0) { /* the clone made it, what followed failed */
        syscall(SYS_pidfd_send_signal, l.pidfd, SIGKILL, NULL, 0);
        siginfo_t si;
        while (waitid(P_PIDFD, (id_t)l.pidfd, &si, WEXITED) < 0 && errno == EINTR)
            ;
    }
    cr->pidfd = steal_fd(&l.pidfd);
    close_fd(&l.cgroup_fd);
    close_fd(&l.ch.fifo_fd);
    for (int i = 0; i < KAGO_NS_COUNT; i++)
        close_fd(&l.ch.join_fds[i]);
    if (ret < 0)
        create_release(cr, true);
    return ret;
}

/* The second half: takes the child's report (waits for it unless the sync socket is readable). */
static int end_here(struct kago_create *cr, struct kago_error **err)
{
    char kind;
    int ret = -1;
    if (kago__read_child(cr->sync_fd, &kind, &cr->c->tty_master, err) < 0)
        goto out;
    kago__trace("child exec'd");
    if (cr->wait_start != (kind == 'R')) {
        kago_error_set(err, 0, "container init ended during setup");
        goto out;
    }
    if (kago__fault("state")) {
        kago_error_set(err, EIO, "injected fault after the state file");
        goto out;
    }
    cr->c->pidfd = steal_fd(&cr->pidfd);
    ret = 0;
out:
    create_release(cr, ret < 0);
    return ret;
}

/* Everything up to a running (or start-waiting) child, in this process. */
static int create_here(struct kago_container *c, const struct kago_spec *spec,
                       const struct kago_spawn_opts *opts, struct kago_error **err)
{
    /* The shim of a detached container (kago create, run --detach, kago serve's instances) takes the plain
     * path: no pinning, the network namespace made by the clone. */
    struct kago_create cr = {.c = c, .pin = false};
    return begin_here(&cr, spec, opts, err) < 0 ? -1 : end_here(&cr, err);
}

static int copy_spec(struct kago_spec *dst, const struct kago_spec *src, struct kago_error **err)
{
    json_object *o = kago__spec_to_json_full(src, NULL);
    cleanup_free char *scratch = NULL;
    int ret = kago__spec_from_json_full(o, dst, &scratch, err);
    json_object_put(o);
    dst->preserve_fds = src->preserve_fds;
    return ret;
}

static int make_dirs(struct kago_container *c, struct kago_error **err)
{
    if (mkdir(c->root, 0711) < 0 && errno != EEXIST && kago__mkdir_p(c->root, 0711, err) < 0)
        return -1;
    if (mkdir(c->dir, 0700) < 0) {
        if (errno == EEXIST)
            return kago_error_set(err, 0, "name already in use");
        return kago_error_set(err, errno, "mkdir %s", c->dir);
    }
    return 0;
}

/* Writes "PID STARTTIME" of the calling shim to dir/shim, so delete can wait for it to finish. */
static void write_shim_id(const struct kago_container *c)
{
    char id[64];
    snprintf(id, sizeof id, "%d %llu\n", (int)getpid(), kago__proc_starttime(getpid(), NULL));
    cleanup_free char *path = xasprintf("%s/shim", c->dir);
    cleanup_close int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd >= 0 && write(fd, id, strlen(id)) < 0) {
        /* delete then only waits less for this shim */
    }
}

int kago__detach(struct kago_container *c,
                 int (*make)(struct kago_container *c, void *arg, struct kago_error **err), void *arg,
                 struct kago_error **err)
{
    int fd;
    pid_t shim = kago__fork_reporting(&fd, "shim", err);
    if (shim < 0)
        return -1;
    if (shim == 0) {
        setsid();
        write_shim_id(c);
        struct kago_error *e = NULL;
        if (make(c, arg, &e) < 0) {
            kago__child_report(fd, e);
            _exit(1);
        }
        if (kago__fault("shim")) /* tests: a shim that dies between making the container and saying so */
            _exit(1);
        /* say so explicitly: a container waiting for start may still hold a copy of this socket */
        if (write(fd, "O", 1) != 1)
            _exit(1);
        /* from here it only waits: it must not hold the caller's descriptors (a pipe whose reader waits
         * for EOF, a listening socket) for as long as the container lives */
        syscall(SYS_close_range, 3, ~0U, 0);
        int dirfd = open(c->dir, O_PATH | O_DIRECTORY | O_CLOEXEC), status = 0;
        while (waitpid(c->pid, &status, 0) < 0 && errno == EINTR)
            ;
        char buf[32];
        snprintf(buf, sizeof buf, "%d\n", status);
        int ex = openat(dirfd, "exit", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (ex >= 0 && write(ex, buf, strlen(buf)) < 0) {
            /* the container was deleted meanwhile */
        }
        _exit(0);
    }
    char kind = 0;
    int ret = kago__read_child(fd, &kind, NULL, err);
    close(fd);
    if (ret == 0 && kind != 'O')
        ret = kago_error_set(err, 0, "the shim ended without saying whether the container was made");
    if (ret < 0 && kind != 'E') {
        /* The shim may have made the container before it died: undo that too. A child it cloned but that
         * has not entered the cgroup yet exits when it finds the shim's end of its sync socket closed. */
        kill(shim, SIGKILL);
        waitpid(shim, NULL, 0);
        struct kago__cgroup cg;
        if (kago__cgroup_init(&cg, NULL, c->spec.name, c->spec.cgroup_path, NULL) == 0) {
            cg.ops->kill_all(&cg, SIGKILL, NULL);
            cg.ops->destroy(&cg, NULL);
            kago__cgroup_fini(&cg);
        }
    } else if (ret < 0) {
        waitpid(shim, NULL, 0);
    }
    return ret;
}

struct create_args {
    const struct kago_spec *spec;
    const struct kago_spawn_opts *opts;
};

/* In the shim: it must not hold the caller's terminal or pipes (whoever reads them would wait for it). */
static int make_created(struct kago_container *c, void *arg, struct kago_error **err)
{
    const struct create_args *a = arg;
    int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
    struct kago_spawn_opts o = *a->opts;
    o.async = o.offload = false; /* (the shim waits for its container itself) */
    for (int i = 0; i < 3; i++) {
        if (o.stdio[i] < 0 || o.stdio[i] == i) {
            o.stdio[i] = -1;
            dup2(devnull, i);
        }
    }
    if (devnull > 2)
        close(devnull);
    return create_here(c, a->spec, &o, err);
}

/* --userns auto: a range of the pool (kept per key, the container's name by default), unless the spec maps
 * or joins namespaces itself: a namespace joined is owned by another user namespace, which a new one could
 * not enter. */
static int userns_auto(struct kago_spec *s, struct kago_error **err)
{
    bool joins = false;
    for (int i = 0; i < KAGO_NS_COUNT; i++)
        joins |= s->join_ns[i] != NULL;
    if (s->userns != KAGO_USERNS_AUTO || (s->nuidmap && !s->userns_key) || joins) {
        s->userns = KAGO_USERNS_HOST;
        return 0;
    }
    if (s->nuidmap) { /* userns_key's range, taken by the caller (serve, at load) */
        s->ns |= 1u << KAGO_NS_USER;
        return 0;
    }
    struct kago_idmap u, g;
    if (kago__userns_alloc(s->userns_key ? s->userns_key : s->name, &u, &g, err) < 0)
        return -1;
    s->uidmap = xmalloc(sizeof u);
    s->uidmap[0] = u;
    s->nuidmap = 1;
    free(s->gidmap);
    s->gidmap = xmalloc(sizeof g);
    s->gidmap[0] = g;
    s->ngidmap = 1;
    s->ns |= 1u << KAGO_NS_USER;
    return 0;
}

/* A range held by the container's name goes with it (a key of its own, a serve app's, stays). */
static void userns_release(const struct kago_spec *s)
{
    if (s->userns == KAGO_USERNS_AUTO && !s->userns_key && s->name)
        kago__userns_release(s->name, NULL);
}

/* pin: the caller waits for the start (see pin_here). */
static int create_begin(const char *root, const struct kago_spec *spec, const struct kago_spawn_opts *opts,
                        bool pin, struct kago_create **out, struct kago_error **err)
{
    kago__trace("kago_container_create");
    cleanup_free char *name = spec->name ? xstrdup(spec->name) : generate_name();
    struct kago_spawn_opts defaults = {.stdio = {-1, -1, -1}};
    if (!opts)
        opts = &defaults;
    if (kago_spec_validate(spec, err) < 0) {
        kago_error_prefix(err, "container %s", name);
        return -1;
    }
    if (opts->tty && opts->detach)
        return kago_error_set(
            err, 0, "container %s: a terminal needs its caller in the foreground (no detach)", name);
    struct kago_create *cr = xcalloc(1, sizeof(*cr));
    cr->c = kago__container_new(root, name);
    cr->detach = opts->detach;
    cr->pin = pin;
    cr->sync_fd = cr->pidfd = cr->pid = cr->image_pin = -1;
    struct kago_container *c = cr->c;
    int ret = copy_spec(&c->spec, spec, err);
    kago__trace("spec copied");
    if (ret == 0) {
        free(c->spec.name);
        c->spec.name = xstrdup(name);
        if ((c->spec.ns & (1u << KAGO_NS_UTS)) && !c->spec.hostname)
            c->spec.hostname = xstrdup(name); /* as Docker does: the container's own name */
        ret = make_dirs(c, err);
        kago__trace("state dir made");
        if (ret == 0 && (ret = userns_auto(&c->spec, err)) < 0)
            kago__rm_rf(c->dir);
        if (ret == 0) {
            if (opts->detach) {
                ret = kago__detach(c, make_created, &(struct create_args){&c->spec, opts}, err);
                cr->done = ret < 0 ? -1 : 1;
            } else {
                ret = begin_here(cr, &c->spec, opts, err);
            }
            if (ret < 0) {
                userns_release(&c->spec);
                kago__rm_rf(c->dir);
            }
        }
    }
    if (ret < 0) {
        kago_error_prefix(err, "container %s", name);
        kago_container_free(c);
        free(cr);
        return -1;
    }
    *out = cr;
    return 0;
}

int kago_container_create_begin(const char *root, const struct kago_spec *spec,
                                const struct kago_spawn_opts *opts, struct kago_create **out,
                                struct kago_error **err)
{
    return create_begin(root, spec, opts, false, out, err);
}

int kago_create_fd(const struct kago_create *cr)
{
    return cr->done ? -1 : cr->pending ? cr->pending->reply_fd : cr->sync_fd;
}

pid_t kago_create_pid(const struct kago_create *cr)
{
    if (cr->done)
        return -1;
    if (cr->pending) /* (a warm sandbox's is known at once) */
        return cr->pending->pid > 0 ? cr->pending->pid : kago__spawner_reply_pid(cr->pending->reply_fd);
    return cr->pid;
}

bool kago_create_cloning(const struct kago_create *cr)
{
    return cr->pending != NULL;
}

/* The rest of begin, once launch left it: the parent's work before the pid (offload), the spawner's answer
 * (awaited up to 10 s), the work after it and the state file. Touches only cr: any thread may run it. */
static int step_work(struct kago_create *cr, struct kago_error **err)
{
    struct kago_container *c = cr->c;
    struct launch *l = cr->pending;
    if (!l->b.ran) { /* (offload; a warm sandbox's cgroup is made: its limits only) */
        l->b.premade = l->ch.warm;
        before_pid(&l->b);
    }
    if (l->reply_fd >= 0) {
        l->pid = kago__spawner_reply(l->reply_fd, &l->cgroup_fd, &l->pidfd, err);
        close_fd(&l->reply_fd);
    }
    if (launch_rest(c, &c->spec, l, err) < 0)
        return -1;
    cr->sync_fd = steal_fd(&l->sync);
    return begin_tail(cr, l, err);
}

void kago_create_work(struct kago_create *cr)
{
    if (kago__fault("slow-work")) /* tests: what serve does while a start's work runs in its thread pool */
        usleep(1500 * 1000);
    cr->work_ret = step_work(cr, &cr->work_err);
    cr->worked = true;
}

int kago_create_step(struct kago_create *cr, struct kago_error **err)
{
    struct kago_container *c = cr->c;
    struct launch *l = cr->pending;
    int ret;
    if (cr->worked) {
        ret = cr->work_ret;
        if (err)
            *err = cr->work_err;
        else
            kago_error_free(cr->work_err);
        cr->work_err = NULL;
    } else {
        ret = step_work(cr, err);
    }
    cr->pidfd = steal_fd(&l->pidfd);
    if (ret == 0) {
        pending_free(cr);
        close_fd(&cr->image_pin);
        return 0;
    }
    cr->pid = l->pid; /* (what the clone made goes, as any create's) */
    kago_error_prefix(err, "container %s", c->spec.name);
    kago_create_abort(cr);
    return -1;
}

int kago_container_create_finish(struct kago_create *cr, struct kago_container **out, struct kago_error **err)
{
    struct kago_container *c = cr->c;
    int ret = 0;
    if (cr->pending) { /* (kago_create_step first) */
        cleanup_free char *name = xstrdup(c->spec.name);
        kago_create_abort(cr);
        return kago_error_set(err, EINVAL, "container %s: finished before its clone was", name);
    }
    if (!cr->done && (ret = end_here(cr, err)) < 0) {
        userns_release(&c->spec);
        kago__rm_rf(c->dir);
        kago_error_prefix(err, "container %s", c->spec.name);
    }
    bool detach = cr->detach;
    free(cr);
    return kago__container_hand_out(c, ret, detach, out, err);
}

void kago_create_abort(struct kago_create *cr)
{
    if (!cr)
        return;
    if (!cr->done) {
        create_release(cr, true);
        userns_release(&cr->c->spec);
        kago__rm_rf(cr->c->dir);
        kago_container_free(cr->c);
        free(cr);
        return;
    }
    /* made by a shim: delete it as any container */
    struct kago_container *c = NULL;
    if (kago_container_create_finish(cr, &c, NULL) == 0) {
        kago_container_delete(c, true, NULL);
        kago_container_free(c);
    }
}

int kago_container_create(const char *root, const struct kago_spec *spec, const struct kago_spawn_opts *opts,
                          struct kago_container **out, struct kago_error **err)
{
    struct kago_create *cr;
    if (create_begin(root, spec, opts, true, &cr, err) < 0)
        return -1;
    return kago_container_create_finish(cr, out, err);
}

int kago__container_hand_out(struct kago_container *c, int ret, bool detach, struct kago_container **out,
                             struct kago_error **err)
{
    if (ret < 0 || detach) {
        cleanup_free char *root = ret < 0 ? NULL : xstrdup(c->root);
        cleanup_free char *name = ret < 0 ? NULL : xstrdup(c->spec.name);
        kago_container_free(c);
        /* detached: the shim made it, so take its record */
        return ret < 0 ? -1 : kago_container_load(root, name, out, err);
    }
    *out = c;
    return 0;
}

static void wait_shim(struct kago_container *c);

int kago_container_remove_partial(const char *root, const char *name, struct kago_error **err)
{
    struct kago_container *c = kago__container_new(root, name);
    cleanup_free char *state = xasprintf("%s/state.json", c->dir);
    cleanup_free char *cgfile = xasprintf("%s/cgroup", c->dir);
    cleanup_free char *cgpath = kago__read_file(cgfile, NULL, NULL);
    int ret = 0;
    bool dir = access(c->dir, F_OK) == 0;
    int missing = !dir && errno == ENOENT ? ENOENT : 0; /* nothing at all: delete --force succeeds on it */
    /* a state file that does not read (empty or cut short: a crash between its write and the disk) is no
     * container to load either: what it names is found as for a partial one */
    bool state_reads = false;
    if (dir && access(state, F_OK) == 0) {
        struct kago_container *probe = kago__container_new(root, name);
        state_reads = kago__state_read(probe, NULL) == 0;
        kago_container_free(probe);
    }
    if (!*name || strchr(name, '/') || name[0] == '.' || !dir || state_reads) {
        ret = kago_error_set(err, missing, "no such container");
    } else if (kago__cgroup_init(&c->cg, NULL, name, cgpath, err) < 0) {
        ret = -1;
    } else {
        /* what a kago killed mid-setup left: its cgroup (and any process in it) and the state dir */
        c->cg.ops->kill_all(&c->cg, SIGKILL, NULL);
        wait_shim(c); /* (a detached container's: it writes the exit status beside the state when it ends) */
        if (c->cg.ops->destroy(&c->cg, err) < 0)
            ret = -1;
        else if (kago__rm_rf(c->dir) < 0)
            ret = kago_error_set(err, errno, "remove %s", c->dir);
    }
    if (ret < 0)
        kago_error_prefix(err, "container %s", name);
    kago_container_free(c);
    return ret;
}

int kago_container_load(const char *root, const char *name, struct kago_container **out,
                        struct kago_error **err)
{
    if (!name || !*name || strchr(name, '/') || name[0] == '.')
        return kago_error_set(err, 0, "container %s: bad name", name ? name : "");
    struct kago_container *c = kago__container_new(root, name);
    if (kago__state_read(c, err) < 0) {
        if (*err && (*err)->code == ENOENT) {
            kago_error_clear(err);
            kago_error_set(err, 0, "container %s does not exist", name);
        } else {
            kago_error_prefix(err, "container %s", name);
        }
        kago_container_free(c);
        return -1;
    }
    if (kago__cgroup_init(&c->cg, NULL, name, c->spec.cgroup_path, err) < 0) {
        kago_error_prefix(err, "container %s", name);
        kago_container_free(c);
        return -1;
    }
    char st = 0;
    if (c->pid > 0 && kago__proc_starttime(c->pid, &st) == c->starttime && st != 'Z') {
        c->pidfd = pidfd_open_(c->pid);
        /* the process may have ended between the two looks */
        if (c->pidfd >= 0 && kago__proc_starttime(c->pid, NULL) != c->starttime)
            close_fd(&c->pidfd);
    }
    *out = c;
    return 0;
}

const char *kago_container_name(const struct kago_container *c)
{
    return c->spec.name;
}

int kago_container_take_tty(struct kago_container *c)
{
    return steal_fd(&c->tty_master);
}

pid_t kago_container_pid(const struct kago_container *c)
{
    return c->pid;
}

int kago_container_pidfd(const struct kago_container *c)
{
    return c->pidfd;
}

long long kago_container_created(const struct kago_container *c)
{
    return c->created;
}

const struct kago_spec *kago_container_spec(const struct kago_container *c)
{
    return &c->spec;
}

static bool alive(struct kago_container *c)
{
    if (c->pidfd < 0)
        return false;
    struct pollfd p = {.fd = c->pidfd, .events = POLLIN};
    if (poll(&p, 1, 0) == 1) /* readable: the process has exited */
        return false;
    char st = 0;
    kago__proc_starttime(c->pid, &st);
    return st != 'Z' && st != 0;
}

enum kago_status kago_container_status(struct kago_container *c)
{
    if (!alive(c))
        return KAGO_STOPPED;
    cleanup_free char *fifo = xasprintf("%s/exec.fifo", c->dir);
    if (access(fifo, F_OK) == 0)
        return KAGO_CREATED;
    if (c->cg.ops->frozen(&c->cg, NULL) == 1)
        return KAGO_PAUSED;
    return KAGO_RUNNING;
}

const char *kago_status_name(enum kago_status s)
{
    static const char *const names[] = {"created", "running", "paused", "stopped"};
    return (unsigned)s < 4 ? names[s] : "unknown";
}

int kago_container_start(struct kago_container *c, struct kago_error **err)
{
    cleanup_free char *fifo = xasprintf("%s/exec.fifo", c->dir);
    if (!alive(c))
        return kago_error_set(err, 0, "container %s: not running (its init has exited)", c->spec.name);
    cleanup_close int fd = open(fifo, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT)
            return kago_error_set(err, 0, "container %s: already started", c->spec.name);
        return kago_error_set(err, errno, "container %s: open %s", c->spec.name, fifo);
    }
    struct pollfd p[2] = {{.fd = fd, .events = POLLIN}, {.fd = c->pidfd, .events = POLLIN}};
    for (;;) {
        int n = poll(p, 2, 10000);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return kago_error_set(err, n < 0 ? errno : ETIMEDOUT, "container %s: start", c->spec.name);
        char b;
        if ((p[0].revents & POLLIN) && read(fd, &b, 1) == 1)
            break;
        if (p[1].revents)
            return kago_error_set(err, 0, "container %s: init exited before start", c->spec.name);
    }
    unlink(fifo);
    return 0;
}

int kago_container_kill(struct kago_container *c, int sig, bool all, struct kago_error **err)
{
    if (all) {
        if (c->cg.ops->kill_all(&c->cg, sig, err) < 0)
            return kago_error_prefix(err, "container %s", c->spec.name), -1;
        return 0;
    }
    if (!alive(c))
        return kago_error_set(err, 0, "container %s: not running", c->spec.name);
    if (syscall(SYS_pidfd_send_signal, c->pidfd, sig, NULL, 0) < 0)
        return kago_error_set(err, errno, "container %s: signal %d", c->spec.name, sig);
    return 0;
}

/* A detached container's shim records the exit status once the container is gone: let it finish first. */
static void wait_shim(struct kago_container *c)
{
    cleanup_free char *path = xasprintf("%s/shim", c->dir);
    cleanup_free char *s = kago__read_file(path, NULL, NULL);
    int pid = 0;
    unsigned long long start = 0;
    if (!s || sscanf(s, "%d %llu", &pid, &start) != 2 || pid <= 0 || kago__proc_starttime(pid, NULL) != start)
        return;
    cleanup_close int fd = pidfd_open_(pid);
    if (fd < 0)
        return;
    struct pollfd p = {.fd = fd, .events = POLLIN};
    for (int i = 0; i < 100; i++) { /* a zombie shim (a host init that does not reap) counts as done */
        char st = 0;
        kago__proc_starttime(pid, &st);
        if (st == 'Z' || st == 0 || poll(&p, 1, 10) != 0)
            return;
    }
}

static void wait_gone(struct kago_container *c, int timeout_ms)
{
    if (c->pidfd < 0)
        return;
    struct pollfd p = {.fd = c->pidfd, .events = POLLIN};
    while (poll(&p, 1, timeout_ms) < 0 && errno == EINTR)
        ;
    /* our own child (kago run, serve, supervisors): reap it here */
    siginfo_t si;
    waitid(P_PIDFD, (id_t)c->pidfd, &si, WEXITED | WNOHANG);
}

int kago_container_delete(struct kago_container *c, bool force, struct kago_error **err)
{
    enum kago_status st = kago_container_status(c);
    if (st != KAGO_STOPPED && !force)
        return kago_error_set(err, 0, "container %s: is %s (stop it first, or delete --force)", c->spec.name,
                              kago_status_name(st));
    /* every process of the container, not just its init; frozen ones die too. (When the init of the
     * container's own pid namespace is gone, the kernel has killed the rest already.) */
    bool own_pidns = (c->spec.ns & (1u << KAGO_NS_PID)) && !c->spec.join_ns[KAGO_NS_PID];
    if (st != KAGO_STOPPED || !own_pidns)
        c->cg.ops->kill_all(&c->cg, SIGKILL, NULL);
    if (st == KAGO_PAUSED)
        c->cg.ops->freeze(&c->cg, false, NULL);
    kago__trace("delete: begin");
    wait_gone(c, 5000);
    wait_shim(c);
    if (c->cg.ops->destroy(&c->cg, err) < 0)
        return kago_error_prefix(err, "container %s", c->spec.name), -1;
    kago__trace("cgroup removed");
    /* the usual state dir holds the state file alone: two calls rather than a walk */
    cleanup_free char *state = xasprintf("%s/state.json", c->dir);
    unlink(state);
    if (rmdir(c->dir) < 0 && errno != ENOENT && kago__rm_rf(c->dir) < 0)
        return kago_error_set(err, errno, "container %s: remove %s", c->spec.name, c->dir);
    userns_release(&c->spec);
    close_fd(&c->pidfd);
    return 0;
}

int kago_container_update(struct kago_container *c, const struct kago_limits *l, struct kago_error **err)
{
    if (!alive(c))
        return kago_error_set(err, 0, "container %s: not running", c->spec.name);
    if (kago__limits_check(l, err) < 0 || (l->cpuset && kago__cg_check_cpuset(l->cpuset, err) < 0))
        return kago_error_prefix(err, "container %s", c->spec.name), -1;
    /* all or nothing: what a failed write leaves behind is written back (a hierarchy the update had the
     * container join, v1's cpuset or pids, stays, with its parent's values) */
    struct kago__cg_undo undo = {0};
    c->cg.undo = &undo;
    int r = c->cg.ops->apply(&c->cg, l, err);
    c->cg.undo = NULL;
    kago__cg_undo_replay(&undo, r < 0);
    if (r < 0)
        return kago_error_prefix(err, "container %s (its limits are as they were)", c->spec.name), -1;
    struct kago_limits *s = &c->spec.limits;
    if (l->cpu_quota_us != KAGO_UNSET)
        s->cpu_quota_us = l->cpu_quota_us;
    if (l->cpu_period_us != KAGO_UNSET)
        s->cpu_period_us = l->cpu_period_us;
    if (l->cpu_weight != KAGO_UNSET) {
        s->cpu_weight = l->cpu_weight;
        s->cpu_shares = l->cpu_shares > 0 ? l->cpu_shares : 0;
    }
    if (l->memory != KAGO_UNSET) {
        s->memory = l->memory;
        s->memory_swap = l->memory_swap;
    }
    if (l->pids != KAGO_UNSET)
        s->pids = l->pids;
    if (l->cpuset) {
        free(s->cpuset);
        s->cpuset = xstrdup(l->cpuset);
    }
    for (size_t i = 0; i < l->nraw; i++)
        kago_spec_add_raw(&c->spec, l->raw[i].key, l->raw[i].value);
    return kago__state_write(c, err);
}

static int cmp_pid(const void *a, const void *b)
{
    pid_t x = *(const pid_t *)a, y = *(const pid_t *)b;
    return (x > y) - (x < y);
}

int kago_container_pids(struct kago_container *c, pid_t **pids, struct kago_error **err)
{
    char dir[PATH_MAX], path[PATH_MAX + 16];
    *pids = NULL;
    if (c->cg.ops->members(&c->cg, dir, err) < 0)
        return kago_error_prefix(err, "container %s", c->spec.name), -1;
    snprintf(path, sizeof path, "%s/cgroup.procs", dir);
    cleanup_free char *text = kago__read_file(path, NULL, err);
    if (!text)
        return kago_error_prefix(err, "container %s", c->spec.name), -1;
    int n = 0;
    for (char *p = text, *end; *p; p = end + (*end == '\n')) {
        long v = strtol(p, &end, 10);
        if (end == p)
            break;
        *pids = xrealloc(*pids, (size_t)(n + 1) * sizeof **pids);
        (*pids)[n++] = (pid_t)v;
    }
    qsort(*pids, (size_t)n, sizeof **pids, cmp_pid);
    return n;
}

bool kago_container_stop_futile(struct kago_container *c, int sig)
{
    if (sig <= 0 || sig > 64 || sig == SIGKILL || !(c->spec.ns & (1u << KAGO_NS_PID)) ||
        c->spec.join_ns[KAGO_NS_PID] || !alive(c))
        return false;
    char path[48];
    snprintf(path, sizeof path, "/proc/%d/status", (int)c->pid);
    cleanup_free char *st = kago__read_file(path, NULL, NULL);
    const char *ign = st ? strstr(st, "\nSigIgn:") : NULL, *cgt = st ? strstr(st, "\nSigCgt:") : NULL;
    if (!ign || !cgt)
        return false;
    unsigned long long mask = strtoull(ign + 8, NULL, 16) | strtoull(cgt + 8, NULL, 16);
    if (mask & (1ULL << (sig - 1)))
        return false;
    pid_t *pids = NULL;
    int n = kago_container_pids(c, &pids, NULL);
    free(pids);
    return n == 1;
}

int kago_container_pause(struct kago_container *c, bool pause, struct kago_error **err)
{
    if (!alive(c))
        return kago_error_set(err, 0, "container %s: not running", c->spec.name);
    if (c->cg.ops->freeze(&c->cg, pause, err) < 0)
        return kago_error_prefix(err, "container %s", c->spec.name), -1;
    return 0;
}

int kago_container_stats(struct kago_container *c, struct kago_stats *st, struct kago_error **err)
{
    memset(st, 0, sizeof *st);
    if (c->cg.ops->stats(&c->cg, st, err) < 0)
        return kago_error_prefix(err, "container %s", c->spec.name), -1;
    return 0;
}

int kago_container_usage(struct kago_container *c, struct kago_stats *st, struct kago_error **err)
{
    *st = (struct kago_stats){.memory_peak = -1, .pids_current = -1, .oom_kills = -1};
    if (c->cg.ops->usage(&c->cg, st, err) < 0)
        return kago_error_prefix(err, "container %s", c->spec.name), -1;
    return 0;
}

int kago_container_pressure(struct kago_container *c, unsigned what, struct kago_pressure *p,
                            struct kago_error **err)
{
    *p = (struct kago_pressure){-1, -1, -1, -1, -1, -1, -1};
    if (c->cg.ops->pressure(&c->cg, what, p, err) < 0)
        return kago_error_prefix(err, "container %s", c->spec.name), -1;
    return 0;
}

int kago_container_oom_fd(struct kago_container *c, struct kago_error **err)
{
    int fd = c->cg.ops->oom_fd(&c->cg, err);
    if (fd < 0)
        kago_error_prefix(err, "container %s", c->spec.name);
    return fd;
}

int kago_container_open_ns(struct kago_container *c, enum kago_ns ns, struct kago_error **err)
{
    static const char *const files[KAGO_NS_COUNT] = {"pid", "mnt", "uts", "ipc", "net", "cgroup", "user"};
    if (!alive(c))
        return kago_error_set(err, 0, "container %s: not running", c->spec.name);
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/ns/%s", (int)c->pid, files[ns]);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return kago_error_set(err, errno, "container %s: open %s", c->spec.name, path);
    return fd;
}

int kago_container_list(const char *root, char ***names, struct kago_error **err)
{
    size_t n = 0;
    char **v = xcalloc(1, sizeof *v);
    DIR *d = opendir(root ? root : KAGO_DEFAULT_ROOT);
    if (!d) {
        *names = v;
        return errno == ENOENT ? 0 : kago_error_set(err, errno, "open %s", root);
    }
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.' || de->d_type != DT_DIR)
            continue;
        cleanup_free char *st = xasprintf("%s/%s/state.json", root ? root : KAGO_DEFAULT_ROOT, de->d_name);
        if (access(st, F_OK) < 0)
            continue;
        v = xrealloc(v, (n + 2) * sizeof *v);
        v[n++] = xstrdup(de->d_name);
        v[n] = NULL;
    }
    closedir(d);
    *names = v;
    return 0;
}
