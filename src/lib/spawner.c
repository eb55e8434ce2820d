/* The spawner (spawner.h): kago serve's small process that clones its containers. The request is one
 * SOCK_SEQPACKET message: a fixed header, the descriptors the child needs (SCM_RIGHTS, in slot order), then
 * the spec as JSON; the answer is the pid (or the error) with the pidfd. */
#include <fcntl.h>
#include <limits.h>
#include <linux/sched.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <string.h>
#include <linux/mount.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "container_int.h"
#include "spawner.h"

#define MAGIC      0x6b53504eu /* "kSPN" */
#define MAX_MSG    (1u << 20)
#define SOCK_FD    3
#define REPLY_MS   10000
#define SYSNET_MS  5000 /* the spawner's first message (its shared sysfs made) */
#define SLOT_SYNC  0
#define SLOT_STDIO 1 /* 3 of them */
#define SLOT_FIFO  4
#define SLOT_CG    5
#define SLOT_JOIN  6                           /* KAGO_NS_COUNT of them */
#define SLOT_REPLY (SLOT_JOIN + KAGO_NS_COUNT) /* where to answer, when not on the spawner's socket */
#define NSLOTS     (SLOT_REPLY + 1)

enum op {
    OP_SPAWN, /* clone a container (the same request, sent to a warm sandbox, starts it there) */
    OP_WARM,  /* make the warm sandbox warm with these clone flags; answered with its pid, pidfd and socket */
    OP_SYSNET, /* (answers only, the spawner's first) the network namespace of its shared sysfs, for serve to
                  hold */
};

struct req {
    uint32_t magic;
    uint32_t present; /* bit per slot: a descriptor came for it (in slot order) */
    uint64_t flags;   /* clone flags */
    uint8_t die_with_parent;
    uint8_t op;
    uint32_t warm; /* a warm sandbox's id (0: none) */
};

struct reply {
    int32_t pid;  /* < 0: failed, code and msg say why */
    int32_t code; /* errno */
    uint8_t into_cgroup;
    uint8_t op;    /* OP_WARM: the answer to a make (warm says which), OP_SYSNET, else OP_SPAWN */
    uint32_t warm; /* OP_WARM: the sandbox's id */
    char msg[1024];
};

union fds_ctl {
    struct cmsghdr h;
    char space[CMSG_SPACE(sizeof(int) * NSLOTS)];
};

/* --- the spec on the wire: the state file's JSON plus what it does not carry (as copy_spec copies) ---- */

static json_object *strv(char *const *v)
{
    json_object *a = json_object_new_array();
    for (size_t i = 0; v && v[i]; i++)
        json_object_array_add(a, json_object_new_string(v[i]));
    return a;
}

static json_object *idmaps(const struct kago_idmap *m, size_t n)
{
    json_object *a = json_object_new_array();
    for (size_t i = 0; i < n; i++) {
        json_object_array_add(a, json_object_new_int64(m[i].inside));
        json_object_array_add(a, json_object_new_int64(m[i].outside));
        json_object_array_add(a, json_object_new_int64(m[i].count));
    }
    return a;
}

json_object *kago__spec_to_json_full(const struct kago_spec *s, const char *scratch)
{
    json_object *o = kago__spec_to_json(s), *x = json_object_new_object();
    json_object *mounts = json_object_new_array(), *rl = json_object_new_array();
    for (size_t i = 0; i < s->nmounts; i++) {
        const struct kago_mount *m = &s->mounts[i];
        json_object *j = json_object_new_array();
        json_object_array_add(j, json_object_new_int(m->kind));
        json_object_array_add(j, m->src ? json_object_new_string(m->src) : NULL);
        json_object_array_add(j, json_object_new_string(m->dst));
        json_object_array_add(
            j, json_object_new_int(m->readonly | m->noexec << 1 | m->nosuid << 2 | m->copyup << 3));
        json_object_array_add(j, json_object_new_uint64(m->size));
        json_object_array_add(j, json_object_new_int64(m->mode));
        json_object_array_add(mounts, j);
    }
    for (size_t i = 0; i < s->nrlimits; i++) {
        json_object_array_add(rl, json_object_new_int(s->rlimits[i].resource));
        json_object_array_add(rl, json_object_new_uint64(s->rlimits[i].soft));
        json_object_array_add(rl, json_object_new_uint64(s->rlimits[i].hard));
    }
    json_object_object_add(x, "mounts", mounts);
    json_object_object_add(x, "rlimits", rl);
    json_object_object_add(x, "uidmap", idmaps(s->uidmap, s->nuidmap));
    json_object_object_add(x, "gidmap", idmaps(s->gidmap, s->ngidmap));
    json_object_object_add(x, "masked", strv(s->masked_paths));
    json_object_object_add(x, "readonly", strv(s->readonly_paths));
    json_object_object_add(x, "listen_port", json_object_new_int(s->listen_port));
    json_object_object_add(x, "overlay_size", json_object_new_uint64(s->overlay_size));
    json_object_object_add(x, "scratch", json_object_new_string(scratch ? scratch : ""));
    json_object_object_add(o, "spawn", x);
    return o;
}

static json_object *at(json_object *a, size_t i)
{
    return json_object_array_get_idx(a, i);
}

static size_t len(json_object *a)
{
    return a && json_object_is_type(a, json_type_array) ? json_object_array_length(a) : 0;
}

static char **parse_strv(json_object *a)
{
    char **v = xcalloc(len(a) + 1, sizeof *v);
    for (size_t i = 0; i < len(a); i++)
        v[i] = xstrdup(json_object_get_string(at(a, i)));
    return v;
}

static size_t parse_idmaps(json_object *a, struct kago_idmap **out)
{
    size_t n = len(a) / 3;
    *out = n ? xcalloc(n, sizeof **out) : NULL;
    for (size_t i = 0; i < n; i++)
        (*out)[i] = (struct kago_idmap){(uint32_t)json_object_get_int64(at(a, 3 * i)),
                                        (uint32_t)json_object_get_int64(at(a, 3 * i + 1)),
                                        (uint32_t)json_object_get_int64(at(a, 3 * i + 2))};
    return n;
}

int kago__spec_from_json_full(json_object *o, struct kago_spec *s, char **scratch, struct kago_error **err)
{
    json_object *x = NULL, *v = NULL;
    if (kago__spec_from_json(o, s, err) < 0)
        return -1;
    if (!json_object_object_get_ex(o, "spawn", &x))
        return kago_error_set(err, EBADMSG, "spawner: a request without its spec");
    json_object_object_get_ex(x, "mounts", &v);
    for (size_t i = 0; i < len(v); i++) {
        json_object *j = at(v, i);
        int fl = json_object_get_int(at(j, 3));
        struct kago_mount m = {.kind = (enum kago_mount_kind)json_object_get_int(at(j, 0)),
                               .src = (char *)json_object_get_string(at(j, 1)),
                               .dst = (char *)json_object_get_string(at(j, 2)),
                               .readonly = fl & 1,
                               .noexec = fl & 2,
                               .nosuid = fl & 4,
                               .copyup = fl & 8,
                               .size = json_object_get_uint64(at(j, 4)),
                               .mode = (unsigned)json_object_get_int64(at(j, 5))};
        if (!m.dst)
            return kago_error_set(err, EBADMSG, "spawner: a mount without its destination");
        kago_spec_add_mount(s, &m);
    }
    json_object_object_get_ex(x, "rlimits", &v);
    for (size_t i = 0; i + 2 < len(v); i += 3) {
        struct kago_rlimit rl = {json_object_get_int(at(v, i)), json_object_get_uint64(at(v, i + 1)),
                                 json_object_get_uint64(at(v, i + 2))};
        kago_spec_add_rlimit(s, &rl);
    }
    free(s->uidmap);
    free(s->gidmap);
    json_object_object_get_ex(x, "uidmap", &v);
    s->nuidmap = parse_idmaps(v, &s->uidmap);
    json_object_object_get_ex(x, "gidmap", &v);
    s->ngidmap = parse_idmaps(v, &s->gidmap);
    json_object_object_get_ex(x, "masked", &v);
    kago_spec_set_paths(&s->masked_paths, parse_strv(v));
    json_object_object_get_ex(x, "readonly", &v);
    kago_spec_set_paths(&s->readonly_paths, parse_strv(v));
    json_object_object_get_ex(x, "listen_port", &v);
    s->listen_port = (uint16_t)json_object_get_int(v);
    json_object_object_get_ex(x, "overlay_size", &v);
    s->overlay_size = json_object_get_uint64(v);
    json_object_object_get_ex(x, "scratch", &v);
    *scratch = xstrdup(json_object_get_string(v));
    return 0;
}

/* Attaches fds (n of them, none when 0) to mh as SCM_RIGHTS, in ctl (room for them, zeroed). */
static void put_rights(struct msghdr *mh, void *ctl, const int *fds, int n)
{
    if (n <= 0)
        return;
    mh->msg_control = ctl;
    mh->msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)n);
    struct cmsghdr *cm = CMSG_FIRSTHDR(mh);
    *cm = (struct cmsghdr){
        .cmsg_level = SOL_SOCKET, .cmsg_type = SCM_RIGHTS, .cmsg_len = CMSG_LEN(sizeof(int) * (size_t)n)};
    memcpy(CMSG_DATA(cm), fds, sizeof(int) * (size_t)n);
}

/* --- the spawner process ------------------------------------------------------------------------- */

/* Room for the two descriptors an answer carries: a pidfd, and a warm sandbox's socket. */
union answer_ctl {
    struct cmsghdr h;
    char space[CMSG_SPACE(sizeof(int) * 2)];
};

static void answer_op(int sock, pid_t pid, const int *fds, int nfds, bool into_cgroup,
                      const struct kago_error *e, uint8_t op, uint32_t warm)
{
    struct reply r = {.pid = pid, .into_cgroup = into_cgroup, .op = op, .warm = warm};
    if (pid < 0) {
        r.code = e ? e->code : 0;
        snprintf(r.msg, sizeof r.msg, "%s", e && e->msg ? e->msg : "clone failed");
    }
    union answer_ctl ctl;
    memset(&ctl, 0, sizeof ctl);
    struct iovec iov = {.iov_base = &r, .iov_len = offsetof(struct reply, msg) + strlen(r.msg) + 1};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
    put_rights(&mh, &ctl, fds, nfds);
    if (sendmsg(sock, &mh, MSG_NOSIGNAL) < 0 && sock == SOCK_FD)
        _exit(1); /* serve is gone (a start's own reply socket closed: that start was abandoned) */
}

static void answer(int sock, pid_t pid, int pidfd, bool into_cgroup, const struct kago_error *e)
{
    answer_op(sock, pid, &pidfd, pidfd >= 0, into_cgroup, e, OP_SPAWN, 0);
}

/* A request's descriptors by slot, from the message's SCM_RIGHTS; false when the message is malformed (the
 * descriptors that came are closed then). */
static bool take_fds(struct msghdr *mh, ssize_t n, const char *buf, struct req *h, int *fds)
{
    int got[NSLOTS], ngot = 0;
    struct cmsghdr *cm = CMSG_FIRSTHDR(mh);
    if (cm && cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS) {
        ngot = (int)((cm->cmsg_len - CMSG_LEN(0)) / sizeof(int));
        memcpy(got, CMSG_DATA(cm), (size_t)ngot * sizeof(int));
    }
    *h = (struct req){0};
    if ((size_t)n >= sizeof *h)
        memcpy(h, buf, sizeof *h);
    for (int i = 0, k = 0; i < NSLOTS; i++)
        fds[i] = (h->present & (1u << i)) && k < ngot ? got[k++] : -1;
    if (h->magic == MAGIC && !(mh->msg_flags & (MSG_TRUNC | MSG_CTRUNC)) &&
        __builtin_popcount(h->present) == ngot)
        return true;
    for (int i = 0; i < ngot; i++)
        close(got[i]);
    return false;
}

/* The sysfs that loopback-only containers share (sys_template_make): the mount namespace where it sits at
 * sys_at, and the spawner's own to come back to (or -1). */
static int sys_ns = -1, host_ns = -1, home_dir = -1, sys_net = -1;
static const char *sys_at;

/* A clone of the shared sysfs, detached, for a child to attach at its /sys (as a warm sandbox's own), or -1
 * (the child mounts one). open_tree clones only a mount of the caller's namespace, hence the two setns. */
static int sys_clone(void)
{
    if (sys_ns < 0 || setns(sys_ns, CLONE_NEWNS) < 0)
        return -1;
    int fd = (int)syscall(SYS_open_tree, AT_FDCWD, sys_at, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
    if (setns(host_ns, CLONE_NEWNS) < 0 || fchdir(home_dir) < 0)
        _exit(1); /* (cannot happen; serve would start another spawner) */
    return fd;
}

/* Whether a child cloned with flags for spec shows the shared sysfs: a network namespace of its own, which
 * kago makes holding only loopback (its sysfs would show what the shared one does). */
static bool sys_shares(uint64_t flags, const struct kago_spec *spec, const int *join_fds)
{
    return (flags & CLONE_NEWNET) && (flags & CLONE_NEWNS) && !spec->no_sysfs && join_fds[KAGO_NS_NET] < 0;
}

/* The request's spec, and the child that runs it with the descriptors that came. */
static int parse_child(const char *buf, size_t n, int *fds, struct kago__bpf *bpf, struct kago_spec *spec,
                       struct kago__cgroup *cg, char **scratch, int *stdio, struct kago__child *ch,
                       struct kago_error **err)
{
    struct req h;
    memcpy(&h, buf, sizeof h);
    json_tokener *tok = json_tokener_new();
    json_object *o = json_tokener_parse_ex(tok, buf + sizeof h, (int)(n - sizeof h));
    json_tokener_free(tok);
    if (!o)
        return kago_error_set(err, EBADMSG, "spawner: the request's spec is not JSON");
    int r = kago__spec_from_json_full(o, spec, scratch, err);
    json_object_put(o);
    if (r < 0 || kago__cgroup_init(cg, NULL, spec->name, spec->cgroup_path, err) < 0)
        return -1;
    *ch = (struct kago__child){.spec = spec,
                               .scratch = *scratch,
                               .sync_fd = fds[SLOT_SYNC],
                               .parent_fd = -1,
                               .fifo_fd = fds[SLOT_FIFO],
                               .stdio = stdio,
                               .bpf = bpf,
                               .die_with_parent = h.die_with_parent,
                               .scratch_fd = -1,
                               .warm_proc = -1,
                               .warm_sys = -1};
    for (int i = 0; i < 3; i++)
        stdio[i] = fds[SLOT_STDIO + i];
    for (int i = 0; i < KAGO_NS_COUNT; i++)
        ch->join_fds[i] = fds[SLOT_JOIN + i];
    return 0;
}

/* One request: the child is cloned from here, with the descriptors that came. */
static void spawn_one(int sock, const char *buf, size_t n, int *fds, struct kago__bpf *bpf)
{
    struct req h;
    struct kago_error *err = NULL;
    struct kago_spec spec = {0};
    struct kago__cgroup cg = {0};
    struct kago__child ch;
    cleanup_free char *scratch = NULL;
    int pidfd = -1, stdio[3] = {-1, -1, -1};
    pid_t pid = -1;
    memcpy(&h, buf, sizeof h);
    kago__trace("spawner: request");
    if (kago__fault("spawner-die"))
        _exit(1); /* (tests: a spawner that dies before it answers) */
    if (parse_child(buf, n, fds, bpf, &spec, &cg, &scratch, stdio, &ch, &err) == 0) {
        kago__trace("spawner: parsed");
        if (sys_shares(h.flags, &spec, ch.join_fds))
            ch.warm_sys = sys_clone();
        pid = kago__clone_child(&ch, &cg, h.flags | CLONE_PARENT, &fds[SLOT_CG], &pidfd, &err);
        kago__trace("spawner: cloned");
        if (ch.warm_sys >= 0)
            close(ch.warm_sys);
    }
    /* a start that does not wait for the answer gets it on a socket of its own */
    answer(fds[SLOT_REPLY] >= 0 ? fds[SLOT_REPLY] : sock, pid, pidfd, fds[SLOT_CG] >= 0, err);
    if (pidfd >= 0)
        close(pidfd);
    kago_error_free(err);
    kago__cgroup_fini(&cg);
    kago_spec_free(&spec);
}

/* --- warm sandboxes (docs/serve.md, "Warm sandboxes") ----------------------------------------------
 * A sandbox is cloned ahead of need with an app's namespace flags (CLONE_PARENT: serve's child, as its
 * containers are), does the app-independent part of a container's setup (its session, / private in its
 * mount namespace, loopback up), and waits on its own socket, whose other end goes to serve with the
 * answer, beside its pidfd. A start of a spec with the same flags is handed to it there by serve itself (the
 * request as the spawner would get it: header, descriptors, spec), and it runs the rest of kago__child_main
 * as a freshly cloned child would: the parent's half (cgroup, id maps, idmapped mounts, filter, "G") is
 * serve's as before. It serves one start, then is the container; serve closing its end unused ends it. */

/* In the sandbox: a detached mount of a new fs of type (proc, sysfs) of its namespaces, or -1 (the start then
 * mounts one as usual). */
static int detached_mount(const char *type, unsigned attrs)
{
    int fs = (int)syscall(SYS_fsopen, type, FSOPEN_CLOEXEC), mnt = -1;
    if (fs < 0)
        return -1;
    /* (as mount(2) would have it: its name as the source, a read-only mount of a read-only superblock) */
    syscall(SYS_fsconfig, fs, FSCONFIG_SET_STRING, "source", type, 0);
    if (attrs & MOUNT_ATTR_RDONLY)
        syscall(SYS_fsconfig, fs, FSCONFIG_SET_FLAG, "ro", NULL, 0);
    if (syscall(SYS_fsconfig, fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0) == 0)
        mnt = (int)syscall(SYS_fsmount, fs, FSMOUNT_CLOEXEC, attrs);
    close(fs);
    return mnt;
}

static int warm_proc = -1, warm_sys = -1;

/* In the sandbox: a start has come (buf, n, fds): become its container's init. */
static _Noreturn void sandbox_start(const char *buf, size_t n, int *fds, struct kago__bpf *bpf)
{
    struct kago_error *err = NULL;
    static struct kago_spec spec;
    static struct kago__cgroup cg;
    static struct kago__child ch;
    static int stdio[3];
    char *scratch = NULL;
    kago__trace("sandbox: request");
    if (parse_child(buf, n, fds, bpf, &spec, &cg, &scratch, stdio, &ch, &err) < 0) {
        kago__child_report(fds[SLOT_SYNC], err);
        _exit(127);
    }
    kago__trace("sandbox: parsed");
    if (fds[SLOT_CG] >= 0) /* it exists, but this process was cloned before: it enters it by path */
        close(fds[SLOT_CG]);
    prctl(PR_SET_NAME, "kago-spawner", 0, 0, 0); /* as a child the spawner cloned now (until exec) */
    ch.warm = true;
    ch.warm_proc = warm_proc;
    ch.warm_sys = warm_sys;
    ch.cg = &cg;
    ch.enter_cg = NULL; /* it was cloned into its cgroup (warm_clone) */
    if (!ch.die_with_parent && prctl(PR_SET_PDEATHSIG, 0, 0, 0, 0) < 0)
        _exit(127);
    kago__child_main(&ch);
}

/* In the sandbox: what a start's first steps do (the spec to JSON and back, json-c, malloc), on a spec of its
 * own, so that the copy-on-write faults of the spawner's memory they touch are taken now: in a start they
 * were 1 ms of its critical path. */
static void rehearse(void)
{
    struct kago_spec spec, back = {0};
    struct kago__cgroup cg = {0};
    kago_spec_init(&spec);
    spec.name = xstrdup("kago-warm");
    json_object *o = kago__spec_to_json_full(&spec, "/");
    size_t jlen;
    const char *json = json_object_to_json_string_length(o, JSON_C_TO_STRING_PLAIN, &jlen);
    json_tokener *tok = json_tokener_new();
    json_object *p = json_tokener_parse_ex(tok, json, (int)jlen);
    json_tokener_free(tok);
    char *scratch = NULL;
    struct kago_error *err = NULL;
    if (p && kago__spec_from_json_full(p, &back, &scratch, &err) == 0)
        kago__cgroup_init(&cg, NULL, back.name, NULL, &err);
    kago_error_free(err);
    kago__cgroup_fini(&cg);
    free(scratch);
    json_object_put(p);
    json_object_put(o);
    kago_spec_free(&back);
    kago_spec_free(&spec);
}

/* In the sandbox, cloned with flags: its setup, then it waits for a start (or EOF: it ends). */
static _Noreturn void sandbox_main(int ctl, uint64_t flags, char *buf, struct kago__bpf *bpf)
{
    /* nothing of the spawner's: serve's socket (its EOF tells the spawner serve is gone), other sandboxes'
     * (but the clone of the shared sysfs it got, warm_sys) */
    kago__close_all_but(3, ctl, warm_sys >= 0 ? warm_sys : ctl);
    prctl(PR_SET_NAME, "kago-warm", 0, 0, 0);
    /* (getppid() is 0 in a new pid namespace: a serve gone before this line leaves the spawner gone too,
     * and its end of ctl closed) */
    if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0)
        _exit(1);
    if ((flags & CLONE_NEWPID) && setsid() < 0) /* as kago__child_main does for its own pid namespace */
        _exit(1);
    if ((flags & CLONE_NEWNS) && mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
        _exit(1);
    if ((flags & CLONE_NEWNET) && kago__loopback_up(NULL) < 0)
        _exit(1);
    /* the /proc of its pid namespace and the sysfs of its network namespace: a start attaches them (a
     * sysfs mount tests every sysfs superblock of the machine, docs/serve.md) */
    if ((flags & CLONE_NEWPID) && (flags & CLONE_NEWNS))
        warm_proc = detached_mount("proc", MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC);
    if ((flags & CLONE_NEWNET) && (flags & CLONE_NEWNS) && warm_sys < 0)
        warm_sys = detached_mount("sysfs", MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC |
                                               MOUNT_ATTR_RDONLY);
    rehearse();
    for (;;) {
        union fds_ctl c;
        struct iovec iov = {.iov_base = buf, .iov_len = MAX_MSG};
        struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = &c, .msg_controllen = sizeof c};
        ssize_t n = recvmsg(ctl, &mh, MSG_CMSG_CLOEXEC);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            _exit(0);
        int fds[NSLOTS];
        struct req h;
        if (!take_fds(&mh, n, buf, &h, fds) || h.op != OP_SPAWN || (size_t)n <= sizeof h)
            _exit(127); /* the spawner checked it: cannot happen */
        close(ctl);
        sandbox_start(buf, (size_t)n, fds, bpf);
    }
}

/* The sandboxes this spawner made, each in a cgroup of its own: when serve is gone (or stopping), the
 * cgroups of those never handed a start are removed once they have exited (serve removes them itself
 * while it runs). A sandbox handed a start is an instance, whose cgroup is the instance's. */
struct made {
    int pidfd;
    pid_t pid;
    char *path;
};
static struct made *made;
static size_t nmade, capmade;

static bool made_exited(const struct made *m)
{
    struct pollfd p = {.fd = m->pidfd, .events = POLLIN};
    return poll(&p, 1, 0) != 0; /* (or the pidfd is unusable) */
}

/* What sandbox m is now: still waiting for a start (its name is still the spawner's, which it is cloned
 * with, or kago-warm), the app a start exec'd, or gone. Its name is read before its pidfd is asked: one
 * that exits between the two is gone, not an app (whose cgroup is serve's: never removed here). */
enum made_is { MADE_WAITING, MADE_APP, MADE_GONE };
static enum made_is made_is(const struct made *m)
{
    char path[32], comm[32] = "";
    snprintf(path, sizeof path, "/proc/%d/comm", (int)m->pid);
    cleanup_close int fd = open(path, O_RDONLY | O_CLOEXEC);
    ssize_t n = fd >= 0 ? read(fd, comm, sizeof comm - 1) : -1;
    if (n <= 0 || made_exited(m))
        return MADE_GONE;
    comm[n] = '\0';
    return !strcmp(comm, "kago-warm\n") || !strcmp(comm, "kago-spawner\n") ? MADE_WAITING : MADE_APP;
}

static void made_drop(size_t i, bool remove)
{
    if (remove)
        kago__cgroup_remove(made[i].path);
    close(made[i].pidfd);
    free(made[i].path);
    made[i] = made[--nmade];
}

/* Forgets the sandboxes that exited (serve removed their cgroups) or became an app. */
static void made_prune(void)
{
    for (size_t i = nmade; i-- > 0;)
        if (made_is(&made[i]) != MADE_WAITING)
            made_drop(i, false);
}

/* At the spawner's end: each sandbox that may never have got a start is awaited (one that did not ends with
 * serve, or serve killed it), up to 5 s in all, and the cgroup of each that ended is removed. (A serve that
 * stops closes their sockets first, and they end at once; after a SIGKILL of serve on a loaded machine,
 * sandboxes were seen to take over the 1 s this was, and their cgroups stayed.) */
static void made_end(void)
{
    uint64_t until = kago__now_us() + 5000000;
    while (nmade) {
        for (size_t i = nmade; i-- > 0;) {
            enum made_is is = made_is(&made[i]);
            if (is != MADE_WAITING)
                made_drop(i, is == MADE_GONE);
        }
        if (!nmade || kago__now_us() >= until)
            break;
        usleep(5000);
    }
    while (nmade)
        made_drop(nmade - 1, false);
    free(made);
}

static int home[8], nhome = -1; /* v1: the spawner's own cgroups (kago__cg_v1_home_open) */

/* v1: whether the spawner knows its own cgroups (opened at the first need, while it is in them). */
static bool home_open(void)
{
    if (nhome < 0 && (nhome = kago__cg_v1_home_open(home, 8, NULL)) < 0)
        nhome = -1;
    return nhome >= 0;
}

/* Back to its own cgroups after a clone inside a container's; a spawner that cannot ends (serve starts
 * another one): it never stays in a container's cgroup. */
static void go_home(void)
{
    if (kago__cg_v1_home_return(home, (size_t)nhome, NULL) < 0)
        _exit(1);
}

/* Makes the sandbox's cgroup (path, chosen by serve) and clones it there: on v2 with CLONE_INTO_CGROUP;
 * on v1 the spawner enters it itself (through `tasks`: no global lock, as enter(cg, 0)), clones, and
 * returns to its own. A cgroup entered by pid would cost a start an RCU grace period (~1.5 ms here). */
static pid_t warm_clone(uint64_t flags, const char *path, int *pidfd, int ctl, char *buf,
                        struct kago__bpf *bpf, struct kago_error **err)
{
    struct kago__cgroup cg;
    if (kago__cgroup_init(&cg, NULL, "kago-warm", path, err) < 0)
        return -1;
    /* the hierarchies of the limits serve gives every start (its start weight, a pids limit) */
    struct kago_limits lim = KAGO_LIMITS_UNSET;
    lim.cpu_weight = 1;
    lim.pids = 1;
    pid_t pid = -1;
    bool v1 = !strcmp(cg.ops->name, "v1");
    int cgfd = -1;
    if (v1 && !home_open()) {
        kago_error_set(err, EIO, "spawner: its own cgroups could not be read (/proc/self/cgroup)");
        goto out;
    }
    if (cg.ops->create(&cg, &lim, err) < 0)
        goto out;
    if (!v1 && (cgfd = cg.ops->open_dir(&cg, err)) < 0)
        goto fail;
    if (v1 && cg.ops->enter(&cg, 0, err) < 0) {
        go_home();
        goto fail;
    }
    struct clone_args args = {.flags = flags | CLONE_PARENT | CLONE_PIDFD,
                              .pidfd = (uint64_t)(uintptr_t)pidfd};
    if (cgfd >= 0) {
        args.flags |= CLONE_INTO_CGROUP;
        args.cgroup = (uint64_t)cgfd;
    }
    pid = (pid_t)syscall(SYS_clone3, &args, sizeof args);
    if (pid == 0)
        sandbox_main(ctl, flags, buf, bpf);
    int e = errno;
    if (v1)
        go_home();
    if (pid < 0) {
        kago_error_set(err, e, "spawner: clone a warm sandbox into cgroup %s", path);
        goto fail;
    }
    if (nmade == capmade) {
        capmade = capmade ? 2 * capmade : 16;
        made = xrealloc(made, capmade * sizeof *made);
    }
    made[nmade++] =
        (struct made){.pidfd = fcntl(*pidfd, F_DUPFD_CLOEXEC, 3), .pid = pid, .path = xstrdup(path)};
    if (made[nmade - 1].pidfd < 0)
        made_drop(nmade - 1, false);
    goto out;
fail:
    cg.ops->destroy(&cg, NULL);
out:
    if (cgfd >= 0)
        close(cgfd);
    kago__cgroup_fini(&cg);
    return pid;
}

static void warm_make(int sock, const struct req *h, char *buf, size_t n, struct kago__bpf *bpf)
{
    struct kago_error *err = NULL;
    int sv[2] = {-1, -1}, pidfd = -1;
    pid_t pid = -1;
    char path[256];
    size_t plen = n - sizeof *h;
    made_prune();
    if (h->flags & ~(uint64_t)(CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWNET |
                               CLONE_NEWUSER)) {
        kago_error_set(&err, EINVAL, "spawner: a warm sandbox with clone flags %#llx",
                       (unsigned long long)h->flags);
    } else if (!plen || plen >= sizeof path) {
        kago_error_set(&err, EINVAL, "spawner: a warm sandbox without a cgroup path");
    } else if (kago__fault("warm-make")) {
        kago_error_set(&err, EAGAIN, "spawner: warm sandbox: injected fault");
    } else if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
        kago_error_set(&err, errno, "spawner: warm sandbox: socketpair");
    } else {
        memcpy(path, buf + sizeof *h, plen);
        path[plen] = '\0';
        int big = MAX_MSG;
        setsockopt(sv[0], SOL_SOCKET, SO_SNDBUFFORCE, &big, sizeof big);
        setsockopt(sv[1], SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof big);
        if ((h->flags & CLONE_NEWNET) && (h->flags & CLONE_NEWNS))
            warm_sys = sys_clone(); /* (the sandbox's, inherited: warm_sys is -1 again here) */
        pid = warm_clone(h->flags, path, &pidfd, sv[1], buf, bpf, &err);
        close(sv[1]);
        if (warm_sys >= 0)
            close(warm_sys);
        warm_sys = -1;
    }
    int fds[2] = {pidfd, sv[0]};
    answer_op(sock, pid, fds, pid > 0 ? 2 : 0, false, err, OP_WARM, h->warm);
    for (int i = 0; i < 2; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    kago_error_free(err);
}

/* serve died (the parent-death signal): the spawner removes what it made, then ends */
static volatile sig_atomic_t terminated;

static void on_term(int sig)
{
    (void)sig;
    terminated = 1;
}

/* In the mount namespace made for the shared sysfs (a private copy of the host's): a tmpfs at dir becomes its
 * root, the sysfs m at its /sys, and the copies of the host's mounts go (kept, they would keep busy a
 * filesystem the host unmounts later). */
static int sys_ns_root(const char *dir, int m)
{
    char sub[PATH_MAX];
    snprintf(sub, sizeof sub, "%s/sys", dir);
    if (mount("tmpfs", dir, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=16k,mode=755") < 0 ||
        mkdir(sub, 0755) < 0 || syscall(SYS_move_mount, m, "", AT_FDCWD, sub, MOVE_MOUNT_F_EMPTY_PATH) < 0 ||
        chdir(dir) < 0 || syscall(SYS_pivot_root, ".", ".") < 0 || umount2(".", MNT_DETACH) < 0 ||
        chdir("/") < 0)
        return -1;
    sys_at = "/sys";
    return 0;
}

/* The sysfs that every container of a new network namespace holding only loopback (kago serve's) shows is
 * the same but for lo's counters: one sysfs, of a namespace made here with only loopback up, serves them all,
 * each a clone of its mount (sys_clone). A sysfs of its own made the kernel test every sysfs superblock on
 * the machine, one per running container, under the global sb_lock (kernfs_test_super): at thousands of
 * instances, the largest part of a start's kernel work. The mount sits in a mount namespace made for it
 * alone, whose root is a tmpfs mounted at dir when it was made (the spawner stays in its own, which its
 * children copy). Nothing is shared, and each container mounts its own, when any step fails. */
static void sys_template_make(const char *dir)
{
    int sv[2];
    /* (dir is the caller's to make, and to remove) */
    if (!dir || socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
        return;
    /* the network namespace is made in a child: this process keeps its own */
    pid_t pid = fork();
    if (pid == 0) {
        close(sv[0]);
        int m = unshare(CLONE_NEWNET) == 0 && kago__loopback_up(NULL) == 0
                    ? detached_mount("sysfs", MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC |
                                                  MOUNT_ATTR_RDONLY)
                    : -1;
        /* the namespace too: a sysfs holds it only passively, and with no one in it its lo would go */
        int net = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
        _exit(m < 0 || net < 0 || kago__send_fd(sv[1], 'S', m) != 1 || kago__send_fd(sv[1], 'N', net) != 1);
    }
    close(sv[1]);
    int got[2] = {-1, -1}; /* the mount, and its namespace (kept: it lives as long as the spawner) */
    for (int i = 0; pid > 0 && i < 2; i++) {
        char kind = 0;
        union kago__fd_ctl ctl;
        struct iovec iov = {.iov_base = &kind, .iov_len = 1};
        struct msghdr mh = {
            .msg_iov = &iov, .msg_iovlen = 1, .msg_control = &ctl, .msg_controllen = sizeof ctl};
        if (recvmsg(sv[0], &mh, MSG_CMSG_CLOEXEC) == 1 && kind == "SN"[i])
            got[i] = kago__msg_fd(&mh);
    }
    while (pid > 0 && waitpid(pid, NULL, 0) < 0 && errno == EINTR)
        ;
    int m = got[0];
    sys_net = got[1];
    if (sys_net < 0 && m >= 0) {
        close(m);
        m = -1;
    }
    close(sv[0]);
    host_ns = open("/proc/self/ns/mnt", O_RDONLY | O_CLOEXEC);
    home_dir = open(".", O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (m < 0 || host_ns < 0 || home_dir < 0 || unshare(CLONE_NEWNS) < 0)
        goto out;
    sys_ns = open("/proc/self/ns/mnt", O_RDONLY | O_CLOEXEC);
    /* private first: until then the copy's mounts are peers of the host's, and a mount would reach them */
    if (sys_ns >= 0 && (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 || sys_ns_root(dir, m) < 0)) {
        close(sys_ns);
        sys_ns = -1;
    }
    if (setns(host_ns, CLONE_NEWNS) < 0 || fchdir(home_dir) < 0)
        _exit(1);
out:
    if (m >= 0)
        close(m);
    if (sys_ns < 0) {
        int *fds[] = {&host_ns, &home_dir, &sys_net};
        for (size_t i = 0; i < sizeof fds / sizeof fds[0]; i++)
            if (*fds[i] >= 0) {
                close(*fds[i]);
                *fds[i] = -1;
            }
    }
}

int kago__spawner_main(int argc, char **argv)
{
    pid_t ppid = argc > 2 ? (pid_t)atoi(argv[2]) : 0;
    prctl(PR_SET_NAME, "kago-spawner", 0, 0, 0);
    /* serve's end of the socket closes with serve; the signal is for a serve stopped by SIGKILL */
    struct sigaction sa = {.sa_handler = on_term}; /* (no SA_RESTART: recvmsg returns) */
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGTERM, &sa, NULL) < 0 || prctl(PR_SET_PDEATHSIG, SIGTERM, 0, 0, 0) < 0 ||
        getppid() != ppid || fcntl(SOCK_FD, F_SETFD, FD_CLOEXEC) < 0)
        return 1;
    syscall(SYS_close_range, SOCK_FD + 1, ~0U, 0); /* anything serve left open without close-on-exec */
    sys_template_make(argc > 3 ? argv[3] : NULL);
    /* a sysfs holds its network namespace only passively: serve holds it too, so that the instances' /sys
     * keeps its lo when this process dies */
    answer_op(SOCK_FD, getpid(), &sys_net, sys_net >= 0, false, NULL, OP_SYSNET, 0); /* (always: its first) */
    static struct kago__bpf bpf; /* the child's copy receives the filter with "G" */
    char *buf = xmalloc(MAX_MSG);
    for (;;) {
        union fds_ctl ctl;
        struct iovec iov = {.iov_base = buf, .iov_len = MAX_MSG};
        struct msghdr mh = {
            .msg_iov = &iov, .msg_iovlen = 1, .msg_control = &ctl, .msg_controllen = sizeof ctl};
        ssize_t n = terminated ? 0 : recvmsg(SOCK_FD, &mh, MSG_CMSG_CLOEXEC);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) { /* serve closed its end (it is stopping: its sandboxes see EOF), or died */
            free(buf);
            made_end();
            return n == 0 ? 0 : 1;
        }
        int fds[NSLOTS];
        struct req h;
        if (!take_fds(&mh, n, buf, &h, fds) || h.op > OP_WARM) {
            struct kago_error e = {.code = EBADMSG, .msg = (char *)"spawner: a malformed request"};
            answer(SOCK_FD, -1, -1, false, &e);
            continue;
        }
        if (h.op == OP_WARM) {
            warm_make(SOCK_FD, &h, buf, (size_t)n, &bpf);
        } else if ((size_t)n <= sizeof h) {
            struct kago_error e = {.code = EBADMSG, .msg = (char *)"spawner: a request without its spec"};
            answer(SOCK_FD, -1, -1, false, &e);
        } else {
            spawn_one(SOCK_FD, buf, (size_t)n, fds, &bpf);
        }
        for (int i = 0; i < NSLOTS; i++) /* (the clone closed the cgroup's when the kernel refused it) */
            if (fds[i] >= 0)
                close(fds[i]);
    }
}

/* --- serve's side -------------------------------------------------------------------------------- */

static struct {
    int fd;
    pid_t pid;
    pid_t owner; /* the process that started it: a fork of it (a detached container's shim) clones itself */
    void (*log)(void *arg, const char *msg);
    void *arg;
    char *sys_dir;          /* (kago__spawner_start's) */
    bool on, ran;           /* it runs; it ran once */
    const char *required;   /* kago__spawner_require's why: no direct path once one ran */
    kago__warm_cb *warm_cb; /* told each warm sandbox made (or not) */
    void *warm_arg;
    struct warm_sb *sbs; /* the warm sandboxes asked for and not yet used or dropped */
    size_t nsbs, capsbs;
    int *nets; /* the network namespaces of the spawners' shared sysfs (OP_SYSNET), held while serve runs */
    size_t nnets;
} sp = {.fd = -1, .pid = -1};

/* A warm sandbox: asked for with these flags (ctl -1 until its answer came), then waiting on ctl. */
struct warm_sb {
    uint32_t id;
    uint64_t flags;
    pid_t pid;
    int ctl;
};

static struct warm_sb *sb_find(uint32_t id)
{
    for (size_t i = 0; id && i < sp.nsbs; i++)
        if (sp.sbs[i].id == id)
            return &sp.sbs[i];
    return NULL;
}

/* Forgets sb; closing its socket ends a sandbox that has not been handed a start. */
static void sb_forget(struct warm_sb *sb)
{
    if (sb->ctl >= 0)
        close(sb->ctl);
    *sb = sp.sbs[--sp.nsbs];
}

static void sp_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void sp_log(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    cleanup_free char *msg = xvasprintf(fmt, ap);
    va_end(ap);
    if (sp.log)
        sp.log(sp.arg, msg);
}

extern char **environ;

static int recv_reply_on(int sock, struct reply *r, int *fd, int ms);

static int spawn_spawner(struct kago_error **err)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
        return kago_error_set(err, errno, "spawner: socketpair");
    int big = MAX_MSG;
    setsockopt(sv[0], SOL_SOCKET, SO_SNDBUFFORCE, &big, sizeof big);
    setsockopt(sv[1], SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof big);
    kago__trace("spawner: start"); /* (its clock is ours from here: KAGO_TRACE_T0) */
    /* posix_spawn: a vfork, so that a restart from a large serve does not copy it either */
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, sv[1], SOCK_FD);
    char ppid[16];
    snprintf(ppid, sizeof ppid, "%d", (int)getpid());
    char *argv[] = {"kago", "__spawner", ppid, (char *)sp.sys_dir, NULL};
    pid_t pid;
    int r = posix_spawn(&pid, "/proc/self/exe", &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(sv[1]);
    if (r != 0) {
        close(sv[0]);
        return kago_error_set(err, r, "spawner: start /proc/self/exe");
    }
    sp.fd = sv[0];
    sp.pid = pid;
    /* its first message, before any answer: read now, so that the namespace is held whether or not serve
     * reads this socket again (starts answered on their own sockets, no warm sandboxes) before the spawner
     * may die and the socket with its queue is closed; one that does not come in time is read later */
    struct reply first;
    int fd = -1;
    if (recv_reply_on(sp.fd, &first, &fd, SYSNET_MS) == 0 && fd >= 0)
        close(fd); /* (an answer first: cannot happen) */
    return 0;
}

int kago__spawner_start(void (*log)(void *arg, const char *msg), void *arg, const char *sys_dir,
                        struct kago_error **err)
{
    sp.log = log;
    sp.arg = arg;
    free(sp.sys_dir);
    sp.sys_dir = sys_dir ? xstrdup(sys_dir) : NULL;
    sp.owner = getpid();
    if (spawn_spawner(err) < 0)
        return -1;
    sp.on = sp.ran = true;
    return 0;
}

static void sp_reap(bool kill_it)
{
    for (size_t i = sp.nsbs; i-- > 0;) /* answers on their way are lost with it; made sandboxes are ours */
        if (sp.sbs[i].ctl < 0)
            sb_forget(&sp.sbs[i]);
    if (sp.fd >= 0)
        close(sp.fd);
    sp.fd = -1;
    if (sp.pid > 0) {
        if (kill_it)
            kill(sp.pid, SIGKILL);
        while (waitpid(sp.pid, NULL, 0) < 0 && errno == EINTR)
            ;
    }
    sp.pid = -1;
}

void kago__spawner_stop(void)
{
    if (getpid() != sp.owner)
        return;
    sp.on = false;
    sp_reap(false);
    while (sp.nsbs)
        sb_forget(&sp.sbs[0]);
    free(sp.sbs);
    sp.sbs = NULL;
    sp.capsbs = 0;
    free(sp.sys_dir);
    sp.sys_dir = NULL;
    for (size_t i = 0; i < sp.nnets; i++)
        close(sp.nets[i]);
    free(sp.nets);
    sp.nets = NULL;
    sp.nnets = 0;
}

void kago__spawner_require(const char *why)
{
    sp.required = why;
}

/* A start the spawner did not take: the caller clones it (-2), unless that is not safe here. */
static pid_t direct(struct kago_error **err)
{
    if (!sp.required || !sp.ran) /* (serve said at its start that it clones containers itself) */
        return -2;
    kago_error_set(err, ESRCH,
                   "no spawner runs (see serve's log), and %s: containers are not cloned "
                   "by serve itself",
                   sp.required);
    return -1;
}

pid_t kago__spawner_pid(void)
{
    return sp.pid;
}

/* The spawner is gone (EOF, EPIPE) or stuck: reap it and start another one, or take the direct path. */
static void sp_restart(const char *why)
{
    pid_t old = sp.pid;
    sp_reap(true);
    struct kago_error *e = NULL;
    int r = kago__fault("spawner-restart") ? kago_error_set(&e, EAGAIN, "injected fault") : spawn_spawner(&e);
    if (r < 0) {
        sp.on = false;
        if (sp.required)
            sp_log("the spawner (pid %d) %s, and another could not start (%s): since %s, containers cannot "
                   "start until serve is restarted",
                   (int)old, why, e->msg, sp.required);
        else
            sp_log(
                "the spawner (pid %d) %s, and another could not start (%s): containers are cloned by serve "
                "itself from now on",
                (int)old, why, e->msg);
        kago_error_free(e);
        return;
    }
    sp_log("the spawner (pid %d) %s: restarted as pid %d", (int)old, why, (int)sp.pid);
}

pid_t kago__spawner_check(void)
{
    /* (not its socket's hang-up: the warm sandboxes it cloned hold copies of its end) */
    siginfo_t si = {0};
    if (sp.on && getpid() == sp.owner && sp.pid > 0 &&
        waitid(P_PID, (id_t)sp.pid, &si, WEXITED | WNOHANG | WNOWAIT) == 0 && si.si_pid == sp.pid)
        sp_restart("has exited");
    return sp.pid;
}

/* Sends the request on sock (the spawner's, or a warm sandbox's); 0 sent, 1 the peer is gone (nothing reached
 * it), -1 another failure. */
static int send_req(int sock, const struct req *h, const char *json, size_t jlen, const int *fds, int nfds)
{
    union fds_ctl ctl;
    memset(&ctl, 0, sizeof ctl);
    struct iovec iov[2] = {{.iov_base = (void *)h, .iov_len = sizeof *h},
                           {.iov_base = (void *)json, .iov_len = jlen}};
    struct msghdr mh = {.msg_iov = iov, .msg_iovlen = 2};
    put_rights(&mh, &ctl, fds, nfds);
    ssize_t n;
    while ((n = sendmsg(sock, &mh, MSG_NOSIGNAL)) < 0 && errno == EINTR)
        ;
    if (n >= 0)
        return 0;
    return errno == EPIPE || errno == ECONNRESET ? 1 : -1;
}

/* Receives one answer (waiting up to ms); answers to OP_WARM go to the warm callback, OP_SYSNET's namespace
 * is kept, and 1 is returned for them. 0: *r and *fd (-1 or its pidfd) are a start's answer; -1: none came
 * (errno: ETIMEDOUT, EAGAIN, or EPIPE when the spawner is gone). */
static int recv_reply_on(int sock, struct reply *r, int *fd, int ms)
{
    union answer_ctl ctl;
    struct iovec iov = {.iov_base = r, .iov_len = sizeof *r};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = &ctl, .msg_controllen = sizeof ctl};
    struct pollfd p = {.fd = sock, .events = POLLIN};
    int pr;
    while ((pr = poll(&p, 1, ms)) < 0 && errno == EINTR)
        ;
    if (pr == 0) {
        errno = ms ? ETIMEDOUT : EAGAIN;
        return -1;
    }
    ssize_t n = -1;
    if (pr == 1)
        while ((n = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC)) < 0 && errno == EINTR)
            ;
    if (n < (ssize_t)offsetof(struct reply, msg)) {
        errno = EPIPE;
        return -1;
    }
    r->msg[sizeof r->msg - 1] = '\0';
    int got[2] = {-1, -1};
    struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
    if (cm && cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS)
        memcpy(got, CMSG_DATA(cm),
               cm->cmsg_len - CMSG_LEN(0) < sizeof got ? cm->cmsg_len - CMSG_LEN(0) : sizeof got);
    *fd = got[0];
    if (r->op == OP_SYSNET) { /* (an instance of this spawner may run as long as serve does) */
        if (got[1] >= 0)
            close(got[1]);
        if (*fd >= 0) {
            sp.nets = xrealloc(sp.nets, (sp.nnets + 1) * sizeof *sp.nets);
            sp.nets[sp.nnets++] = *fd;
            *fd = -1;
        }
        return 1;
    }
    if (r->op != OP_WARM) {
        if (got[1] >= 0)
            close(got[1]);
        return 0;
    }
    struct warm_sb *sb = sb_find(r->warm);
    if (sb && r->pid > 0 && got[1] >= 0 && sb->ctl < 0) {
        sb->pid = r->pid;
        sb->ctl = got[1];
    } else {
        if (got[1] >= 0)
            close(got[1]); /* (its EOF ends it) */
        if (sb)
            sb_forget(sb);
    }
    if (sp.warm_cb)
        sp.warm_cb(sp.warm_arg, r->warm, r->pid, *fd, r->code, r->msg);
    else if (*fd >= 0)
        close(*fd);
    return 1;
}

static int recv_reply(struct reply *r, int *fd, int ms)
{
    return recv_reply_on(sp.fd, r, fd, ms);
}

/* A clone's answer r (with its pidfd fd): the pid, *pidfd set. */
static pid_t take_reply(const struct reply *r, int fd, int *cgroup_fd, int *pidfd, struct kago_error **err)
{
    if (r->pid < 0) {
        if (fd >= 0)
            close(fd);
        kago_error_set(err, r->code, "%s", r->msg);
        return -1; /* (not -errno: -2 says the spawner did not take the child) */
    }
    if (fd < 0) {
        kago_error_set(err, EBADMSG, "clone: the spawner sent no pidfd");
        return -1;
    }
    *pidfd = fd;
    if (!r->into_cgroup && *cgroup_fd >= 0) {
        close(*cgroup_fd);
        *cgroup_fd = -1;
    }
    return r->pid;
}

pid_t kago__spawner_reply(int reply_fd, int *cgroup_fd, int *pidfd, struct kago_error **err)
{
    struct reply r;
    int fd = -1;
    /* EOF: it died during the clone (the next start restarts it) */
    if (recv_reply_on(reply_fd, &r, &fd, REPLY_MS) < 0) {
        if (errno == ETIMEDOUT) /* (a child it clones after this finds its sync socket closed, and exits) */
            kago_error_set(err, ETIMEDOUT, "clone: the spawner did not answer within 10 s");
        else
            kago_error_set(err, EPIPE, "clone: the spawner died before it answered");
        return -1;
    }
    return take_reply(&r, fd, cgroup_fd, pidfd, err);
}

pid_t kago__spawner_reply_pid(int reply_fd)
{
    struct reply r;
    ssize_t n = recv(reply_fd, &r, sizeof r, MSG_PEEK | MSG_DONTWAIT);
    return n >= (ssize_t)offsetof(struct reply, msg) && r.pid > 0 ? r.pid : -1;
}

static pid_t read_reply(int *cgroup_fd, int *pidfd, struct kago_error **err)
{
    struct reply r;
    int fd = -1, got;
    unsigned long long t0 = kago__now_us();
    for (;;) { /* answers to warm sandboxes' makes may come first */
        long left = REPLY_MS - (long)((kago__now_us() - t0) / 1000);
        got = recv_reply(&r, &fd, left > 0 ? (int)left : 0);
        if (got != 1)
            break;
    }
    if (got < 0) {
        bool timeout = errno == ETIMEDOUT || errno == EAGAIN;
        /* whatever it may have cloned finds the sync socket closed by the create's failure, and exits */
        sp_restart(timeout ? "did not answer within 10 s" : "died during a clone");
        kago_error_set(err, EPIPE, "clone: the spawner %s", timeout ? "did not answer" : "died");
        return -1;
    }
    return take_reply(&r, fd, cgroup_fd, pidfd, err);
}

void kago__spawner_on_warm(kago__warm_cb *cb, void *arg)
{
    sp.warm_cb = cb;
    sp.warm_arg = arg;
}

static int send_op(uint8_t op, uint64_t flags, uint32_t id, const char *data)
{
    if (!sp.on || getpid() != sp.owner)
        return -1;
    struct req h = {.magic = MAGIC, .op = op, .flags = flags, .warm = id};
    int r = send_req(sp.fd, &h, data, strlen(data), NULL, 0);
    if (r == 1) { /* it is gone: another one gets it */
        sp_restart("has exited");
        r = sp.on ? send_req(sp.fd, &h, data, strlen(data), NULL, 0) : -1;
    }
    return r == 0 ? 0 : -1;
}

int kago__spawner_warm(uint64_t flags, uint32_t id, const char *cgroup_path)
{
    if (!id || sb_find(id) || send_op(OP_WARM, flags, id, cgroup_path) < 0)
        return -1;
    if (sp.nsbs == sp.capsbs) {
        sp.capsbs = sp.capsbs ? 2 * sp.capsbs : 16;
        sp.sbs = xrealloc(sp.sbs, sp.capsbs * sizeof *sp.sbs);
    }
    sp.sbs[sp.nsbs++] = (struct warm_sb){.id = id, .flags = flags, .pid = -1, .ctl = -1};
    return 0;
}

void kago__spawner_warm_drop(uint32_t id)
{
    struct warm_sb *sb = sb_find(id);
    if (sb)
        sb_forget(sb);
}

/* Hands the start (h, json, fds) to warm sandbox sb, which is forgotten either way: its pid with *pidfd set,
 * or -1 when it could not take it (it has died: the spawner clones this one). */
static pid_t warm_hand(struct warm_sb *sb, struct req *h, const char *json, size_t jlen, const int *fds,
                       int nfds, int *pidfd)
{
    pid_t pid = sb->pid;
    /* a sandbox is serve's child, reaped only by serve: its pid names it until then */
    int pfd = (int)syscall(SYS_pidfd_open, pid, 0);
    bool sent = pfd >= 0 && send_req(sb->ctl, h, json, jlen, fds, nfds) == 0;
    sb_forget(sb);
    if (!sent) {
        if (pfd >= 0)
            close(pfd);
        return -1;
    }
    *pidfd = pfd;
    kago__trace("warm: handed");
    return pid;
}

void kago__spawner_collect(void)
{
    struct reply r;
    int fd;
    while (sp.on && getpid() == sp.owner && sp.fd >= 0) {
        int got = recv_reply(&r, &fd, 0);
        if (got == 0 && fd >= 0) /* a start's answer with nobody waiting for it: cannot happen */
            close(fd);
        if (got < 0)
            return;
    }
}

pid_t kago__spawner_clone(struct kago__child *ch, struct kago__cgroup *cg, uint64_t flags, int *cgroup_fd,
                          int *pidfd, void (*meanwhile)(void *arg), void *arg, int *reply_fd,
                          struct kago_error **err)
{
    /* what only the caller's own process can give the child stays on the direct path: the CPU it is pinned
     * to, the terminal, the creator's own fds 3..N */
    if (getpid() != sp.owner || ch->spin || ch->net_later || ch->tty || ch->spec->preserve_fds)
        return -2;
    if (!sp.on)
        return direct(err);
    struct req h = {.magic = MAGIC, .flags = flags, .die_with_parent = ch->die_with_parent};
    int slot[NSLOTS], fds[NSLOTS], nfds = 0;
    for (int i = 0; i < NSLOTS; i++)
        slot[i] = -1;
    slot[SLOT_SYNC] = ch->sync_fd;
    for (int i = 0; i < 3; i++)
        slot[SLOT_STDIO + i] = ch->stdio[i];
    slot[SLOT_FIFO] = ch->fifo_fd;
    slot[SLOT_CG] = *cgroup_fd;
    for (int i = 0; i < KAGO_NS_COUNT; i++)
        slot[SLOT_JOIN + i] = ch->join_fds[i];
    for (int i = 0; i < NSLOTS; i++)
        if (slot[i] >= 0) {
            h.present |= 1u << i;
            fds[nfds++] = slot[i];
        }
    kago__trace("spawner: build");
    json_object *o = kago__spec_to_json_full(ch->spec, ch->scratch);
    size_t jlen;
    const char *json = json_object_to_json_string_length(o, JSON_C_TO_STRING_PLAIN, &jlen);
    int r = sizeof h + jlen > MAX_MSG ? -1 : 1;
    /* a warm sandbox of these flags takes the request itself: no clone, and no answer to wait for */
    struct warm_sb *sb = sb_find(ch->warm_id);
    if (r == 1 && sb && sb->ctl >= 0 && sb->flags == flags && slot[SLOT_JOIN + KAGO_NS_PID] < 0) {
        pid_t pid = warm_hand(sb, &h, json, jlen, fds, nfds, pidfd);
        if (pid > 0) {
            json_object_put(o);
            ch->warm = true;
            if (*cgroup_fd >= 0) { /* cloned before: it is moved into its cgroup by path */
                close(*cgroup_fd);
                *cgroup_fd = -1;
            }
            return pid; /* (meanwhile: the caller runs it, after what the sandbox waits for) */
        }
    }
    int rs[2] = {-1, -1}; /* a caller that does not wait: the answer's own socket */
    if (reply_fd && r == 1) {
        if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, rs) < 0) { /* (out of descriptors) */
            json_object_put(o);
            return kago_error_set(err, errno, "spawner: a socket for the start's answer"), -1;
        }
        h.present |= 1u << SLOT_REPLY;
        fds[nfds++] = rs[1];
    }
    for (int attempt = 0; r == 1 && attempt < 2 && sp.on; attempt++)
        if ((r = send_req(sp.fd, &h, json, jlen, fds, nfds)) == 1)
            sp_restart("has exited"); /* it never saw this request: send it again */
    json_object_put(o);
    kago__trace("spawner: sent");
    if (rs[1] >= 0)
        close(rs[1]);
    if (r != 0) {
        if (rs[0] >= 0)
            close(rs[0]);
        return direct(err); /* too large, or no spawner: the direct path */
    }
    if (meanwhile)
        meanwhile(arg);
    if (rs[0] >= 0) {
        *reply_fd = rs[0];
        return 0;
    }
    return read_reply(cgroup_fd, pidfd, err);
}
