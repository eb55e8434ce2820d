/* The container's init before exec: namespaces, the root filesystem, /proc /sys /dev, masks, identity.
 * Runs in the cloned child; every failure is reported to the parent through the sync socket. */
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/close_range.h>
#include <linux/mount.h>
#include <linux/openat2.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <termios.h>

#include "container_int.h"
#include "linux.h"

/* kago's /dev: the character devices of kago__cg_devs (cgroup.c), which the device rules allow. */
static const char *const dev_nodes[] = {"null", "zero", "full", "random", "urandom", "tty", NULL};

static int xmount(const char *src, const char *dst, const char *type, unsigned long flags, const char *data,
                  struct kago_error **err)
{
    if (mount(src, dst, type, flags, data) < 0)
        return kago_error_set(err, errno, "mount %s on %s", type ? type : (src ? src : "none"), dst);
    return 0;
}

/* Opens path inside the new root without following symlinks out of it. */
static int open_in_root(int rootfd, const char *path, int flags, struct kago_error **err)
{
    struct open_how how = {.flags = (uint64_t)(flags | O_CLOEXEC),
                           .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS};
    while (*path == '/')
        path++;
    int fd = (int)syscall(SYS_openat2, rootfd, *path ? path : ".", &how, sizeof how);
    if (fd < 0)
        return kago_error_set(err, errno, "open %s in the rootfs", path);
    return fd;
}

/* Makes the mount point dst (a directory, or a file when file) inside the root; returns an O_PATH fd. */
static int mountpoint_in_root(int rootfd, const char *dst, bool file, struct kago_error **err)
{
    int fd = open_in_root(rootfd, dst, O_PATH, NULL);
    if (fd >= 0)
        return fd;
    /* create missing components, each resolved inside the root */
    cleanup_free char *p = xstrdup(dst);
    for (char *s = p + 1;; s++) {
        bool last = *s == '\0';
        if (*s != '/' && !last)
            continue;
        *s = '\0';
        cleanup_close int parent = -1;
        char *slash = strrchr(p, '/');
        *slash = '\0';
        parent = open_in_root(rootfd, *p ? p : "/", O_PATH | O_DIRECTORY, err);
        *slash = '/';
        if (parent < 0)
            return -1;
        if (last && file) {
            int f = openat(parent, slash + 1, O_CREAT | O_WRONLY | O_CLOEXEC | O_NOFOLLOW, 0644);
            if (f < 0 && errno != EEXIST)
                return kago_error_set(err, errno, "create mount point %s", dst);
            if (f >= 0)
                close(f);
        } else if (mkdirat(parent, slash + 1, 0755) < 0 && errno != EEXIST) {
            return kago_error_set(err, errno, "create mount point %s", dst);
        }
        if (last)
            break;
        *s = '/';
    }
    return open_in_root(rootfd, dst, O_PATH, err);
}

/* The mount point of /proc, /sys or /dev: a real directory at that very path, reached through no symlink.
 * What kago masks and makes read-only there it finds again by those paths after pivot_root: a procfs
 * mounted through "/proc -> /sys/x -> /mnt/p" would sit where no mask looks (a writable /proc/sys). */
static int kernel_mountpoint(int rootfd, const char *dst, struct kago_error **err)
{
    struct open_how how = {.flags = O_PATH | O_CLOEXEC,
                           .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS};
    int fd = (int)syscall(SYS_openat2, rootfd, dst + 1, &how, sizeof how);
    if (fd < 0 && errno == ENOENT) { /* made here: a directory, then checked as any other */
        int made = mountpoint_in_root(rootfd, dst, false, err);
        if (made < 0)
            return -1;
        close(made);
        fd = (int)syscall(SYS_openat2, rootfd, dst + 1, &how, sizeof how);
    }
    struct stat st;
    if (fd < 0)
        return kago_error_set(err, errno == ELOOP ? 0 : errno,
                              errno == ELOOP ? "rootfs: %s is a symlink (kago mounts %s on a directory only)"
                                             : "open %s in the rootfs",
                              dst, dst);
    if (fstat(fd, &st) < 0 || !S_ISDIR(st.st_mode)) {
        close(fd);
        return kago_error_set(err, 0, "rootfs: %s is not a directory (kago mounts %s on a directory only)",
                              dst, dst);
    }
    return fd;
}

static int mount_at_fd(const char *src, int fd, const char *type, unsigned long flags, const char *data,
                       const char *what, struct kago_error **err)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    if (mount(src, path, type, flags, data) < 0)
        return kago_error_set(err, errno, "mount %s", what);
    return 0;
}

/* Flags a bind remount must keep: in a user namespace the kernel locks them (a read-only host mount may
 * not become writable), and a remount that drops one fails with EPERM. statfs's ST_* equal the MS_* bits. */
static unsigned long kept_flags(int fd)
{
    struct statfs st;
    if (fstatfs(fd, &st) < 0)
        return 0;
    return (unsigned long)st.f_flags &
           (MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_NOATIME | MS_NODIRATIME | MS_RELATIME);
}

static int remount(int fd, unsigned long add, const char *what, struct kago_error **err)
{
    return mount_at_fd(NULL, fd, NULL, MS_REMOUNT | MS_BIND | kept_flags(fd) | add, NULL, what, err);
}

static int remount_ro(int fd, unsigned long extra, const char *what, struct kago_error **err)
{
    return remount(fd, MS_RDONLY | extra, what, err);
}

/* Makes the mount at fd and every mount under it nodev (a bind of a host directory may hold submounts). */
static int nodev_tree(int fd, const char *what, struct kago_error **err)
{
    struct mount_attr attr = {.attr_set = MOUNT_ATTR_NODEV};
    if (syscall(SYS_mount_setattr, fd, "", AT_EMPTY_PATH | AT_RECURSIVE, &attr, sizeof attr) == 0)
        return 0;
    if (errno != ENOSYS)
        return kago_error_set(err, errno, "%s: make nodev", what);
    return remount(fd, MS_NODEV, what, err); /* a kernel before 5.12: the top mount only */
}

/* The lower directories of an overlay, top first, as its "lowerdir=" value. Mount options must fit in a
 * page: when the absolute paths would not, and the lowers share one parent directory (an image store's
 * layers/), the names are given relative to it and *parent is set: the caller mounts from inside it. */
static char *lowerdir_opt(const char *const *lowers, char **parent)
{
    size_t len = 0, n = 0;
    for (; lowers[n]; n++)
        len += strlen(lowers[n]) + 1;
    *parent = NULL;
    const char *slash = strrchr(lowers[0], '/');
    bool shared = len > 3000 && slash && slash != lowers[0];
    for (size_t i = 1; shared && i < n; i++)
        shared = !strncmp(lowers[i], lowers[0], (size_t)(slash - lowers[0] + 1)) &&
                 !strchr(lowers[i] + (slash - lowers[0] + 1), '/');
    char *opt = xmalloc(len + 1), *at = opt;
    for (size_t i = 0; i < n; i++)
        at += sprintf(at, "%s%s", i ? ":" : "", shared ? lowers[i] + (slash - lowers[0] + 1) : lowers[i]);
    if (shared)
        *parent = xasprintf("%.*s", (int)(slash - lowers[0]), lowers[0]);
    return opt;
}

/* More lowers than one page of options can name: each given alone with fsconfig "lowerdir+" (Linux 6.8;
 * an older kernel refuses it with EINVAL). */
static int overlay_fsconfig(const char *target, const char *const *lowers, const char *upper,
                            const char *work, struct kago_error **err)
{
    cleanup_close int fs = (int)syscall(SYS_fsopen, "overlay", FSOPEN_CLOEXEC);
    if (fs < 0)
        return kago_error_set(err, errno, "overlay: fsopen");
    for (size_t i = 0; lowers[i]; i++)
        if (syscall(SYS_fsconfig, fs, FSCONFIG_SET_STRING, "lowerdir+", lowers[i], 0) < 0)
            return kago_error_set(err, errno, "overlay: lower layer %zu (%s)%s", i + 1, lowers[i],
                                  errno == EINVAL
                                      ? ": this kernel takes no more lower layers than one page of "
                                        "mount options can name (Linux 6.8 takes more)"
                                      : "");
    if (upper && (syscall(SYS_fsconfig, fs, FSCONFIG_SET_STRING, "upperdir", upper, 0) < 0 ||
                  syscall(SYS_fsconfig, fs, FSCONFIG_SET_STRING, "workdir", work, 0) < 0))
        return kago_error_set(err, errno, "overlay: upper %s", upper);
    if (syscall(SYS_fsconfig, fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0)
        return kago_error_set(err, errno, "overlay of %s and its lower layers", lowers[0]);
    cleanup_close int mnt =
        (int)syscall(SYS_fsmount, fs, FSMOUNT_CLOEXEC, MOUNT_ATTR_NODEV | (upper ? 0 : MOUNT_ATTR_RDONLY));
    if (mnt < 0 || syscall(SYS_move_mount, mnt, "", AT_FDCWD, target, MOVE_MOUNT_F_EMPTY_PATH) < 0)
        return kago_error_set(err, errno, "overlay: mount on %s", target);
    return 0;
}

int kago__overlay_mount(const char *target, const char *const *lowers, const char *upper, const char *work,
                        struct kago_error **err)
{
    cleanup_free char *parent = NULL;
    cleanup_free char *lower = lowerdir_opt(lowers, &parent);
    if (strlen(lower) + (upper ? strlen(upper) + strlen(work) : 0) > 4000)
        return overlay_fsconfig(target, lowers, upper, work, err);
    cleanup_free char *opts = upper ? xasprintf("lowerdir=%s,upperdir=%s,workdir=%s", lower, upper, work)
                                    : xasprintf("lowerdir=%s", lower);
    cleanup_close int here = parent ? open(".", O_PATH | O_DIRECTORY | O_CLOEXEC) : -1;
    if (parent && (here < 0 || chdir(parent) < 0))
        return kago_error_set(err, errno, "overlay: chdir %s", parent);
    int r = mount("overlay", target, "overlay", MS_NODEV | (upper ? 0 : MS_RDONLY), opts);
    int saved = errno;
    if (here >= 0 && fchdir(here) < 0 && r == 0)
        return kago_error_set(err, errno, "overlay: fchdir back");
    if (r < 0)
        return kago_error_set(err, saved, "overlay of %s%s", lowers[0],
                              lowers[1] ? " and its lower layers" : "");
    return 0;
}

/* The container's writable layer: a tmpfs at scratch holding upper/, work/ and merged/, where the overlay
 * of the read-only lowers (an image's layers, or the rootfs) goes. Returns an O_PATH fd of merged/. */
static int overlay_root(const struct kago__child *ch, const char *const *lowers, struct kago_error **err)
{
    const struct kago_spec *spec = ch->spec;
    cleanup_free char *sz = spec->overlay_size
                                ? xasprintf("size=%llu,mode=755", (unsigned long long)spec->overlay_size)
                                : xstrdup("mode=755");
    if (!spec->overlay_dir && xmount("kago-upper", ch->scratch, "tmpfs", MS_NODEV | MS_NOSUID, sz, err) < 0)
        return -1;
    /* a directory given for the writable layer keeps it across containers (upper/ and work/ in it) */
    const char *at = spec->overlay_dir ? spec->overlay_dir : ch->scratch;
    cleanup_free char *upper = xasprintf("%s/upper", at);
    cleanup_free char *work = xasprintf("%s/work", at);
    cleanup_free char *merged = xasprintf("%s/merged", ch->scratch);
    if ((mkdir(upper, 0755) < 0 && (errno != EEXIST || !spec->overlay_dir)) ||
        (mkdir(work, 0700) < 0 && (errno != EEXIST || !spec->overlay_dir)))
        return kago_error_set(err, errno, "overlay: mkdir in %s", at);
    if (mkdir(merged, 0755) < 0 && errno != EEXIST)
        return kago_error_set(err, errno, "overlay: mkdir %s", merged);
    if (kago__overlay_mount(merged, lowers, upper, work, err) < 0)
        return -1;
    return open(merged, O_PATH | O_DIRECTORY | O_CLOEXEC);
}

static int attach_tree(int tree, int at, const char *what, struct kago_error **err)
{
    if (syscall(SYS_move_mount, tree, "", at, "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH) < 0)
        return kago_error_set(err, errno, "mount %s", what);
    return 0;
}

/* Under --userns auto the root is the parent's (userns.c: the idmapped rootfs, or the overlay of the
 * idmapped layers), attached at the scratch dir. Returns an O_PATH fd of it. */
static int idmapped_root(const struct kago__child *ch, struct kago_error **err)
{
    if (attach_tree(ch->trees[0], ch->scratch_fd, "rootfs", err) < 0)
        return -1;
    int fd = fcntl(ch->trees[0], F_DUPFD_CLOEXEC, 3);
    if (fd < 0)
        return kago_error_set(err, errno, "rootfs");
    return fd;
}

static int setup_rootfs(const struct kago__child *ch, struct kago_error **err)
{
    const struct kago_spec *spec = ch->spec;
    const char *const *lowers = spec->layers && spec->layers[0] ? (const char *const *)spec->layers
                                                                : (const char *const[]){spec->rootfs, NULL};
    if (ch->ntrees)
        return idmapped_root(ch, err);
    if (spec->overlay)
        return overlay_root(ch, lowers, err);
    const char *dir = spec->rootfs;
    if (lowers[0] != spec->rootfs) {
        /* an image without a writable layer: its layers read-only (overlay wants two lowers without one) */
        if (mkdir(ch->scratch, 0700) < 0 && errno != EEXIST)
            return kago_error_set(err, errno, "mkdir %s", ch->scratch);
        dir = lowers[1] ? ch->scratch : lowers[0];
        if (lowers[1] && kago__overlay_mount(dir, lowers, NULL, NULL, err) < 0)
            return -1;
    }
    /* A bind of the rootfs onto itself makes it a mount point pivot_root accepts. nodev: device files made
     * in the container are inert; only kago's own /dev works (this is the device policy on cgroup v2). */
    if (mount(dir, dir, NULL, MS_BIND | MS_REC, NULL) < 0)
        return kago_error_set(err, errno, "bind rootfs %s", dir);
    int fd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return kago_error_set(err, errno, "open rootfs %s", dir);
    if (nodev_tree(fd, "rootfs", err) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static int setup_dev(int rootfd, bool userns, struct kago_error **err)
{
    cleanup_close int devfd = kernel_mountpoint(rootfd, "/dev", err);
    if (devfd < 0)
        return -1;
    if (mount_at_fd("tmpfs", devfd, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=755,size=65536k", "/dev",
                    err) < 0)
        return -1;
    close(devfd);
    devfd = open_in_root(rootfd, "/dev", O_PATH | O_DIRECTORY, err);
    if (devfd < 0)
        return -1;
    /* The nodes are the host's, bound one by one onto a nodev tmpfs: a node the container makes in /dev
     * itself (Docker's default capabilities include CAP_MKNOD) cannot be opened, also where no devices
     * cgroup checks it (cgroup v2 has none). Bound, not made with mknod: CRIU then finds the host's
     * devices (a /dev/null the container got as stdio from outside) among the container's mounts. */
    for (int i = 0; dev_nodes[i]; i++) {
        char host[32], at[64];
        snprintf(host, sizeof host, "/dev/%s", dev_nodes[i]);
        /* the target, an empty file in the tmpfs just made, is named through devfd */
        snprintf(at, sizeof at, "/proc/self/fd/%d/%s", devfd, dev_nodes[i]);
        if (mknodat(devfd, dev_nodes[i], S_IFREG | 0666, 0) < 0)
            return kago_error_set(err, errno, "create /dev/%s", dev_nodes[i]);
        if (mount(host, at, NULL, MS_BIND, NULL) < 0)
            return kago_error_set(err, errno, "mount %s", host);
        /* read-only: the device is still read and written, but the host's node is not chmod'ed or chown'ed
         * (a container's root without a user namespace made the host's /dev/null mode 000) */
        cleanup_close int node = openat(devfd, dev_nodes[i], O_PATH | O_NOFOLLOW | O_CLOEXEC);
        if (node < 0)
            return kago_error_set(err, errno, "open /dev/%s", dev_nodes[i]);
        if (remount_ro(node, MS_NOSUID | MS_NOEXEC, host, err) < 0)
            return -1;
    }
    static const char *const dirs[] = {"pts", "shm", "mqueue", NULL};
    for (int i = 0; dirs[i]; i++)
        if (mkdirat(devfd, dirs[i], 0755) < 0)
            return kago_error_set(err, errno, "mkdir /dev/%s", dirs[i]);
    cleanup_close int pts = openat(devfd, "pts", O_PATH | O_CLOEXEC);
    const char *ptsopt =
        userns ? "newinstance,ptmxmode=0666,mode=0620" : "newinstance,ptmxmode=0666,mode=0620,gid=5";
    if (mount_at_fd("devpts", pts, "devpts", MS_NOSUID | MS_NOEXEC, ptsopt, "/dev/pts", err) < 0)
        return -1;
    cleanup_close int shm = openat(devfd, "shm", O_PATH | O_CLOEXEC);
    if (mount_at_fd("shm", shm, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=1777,size=65536k",
                    "/dev/shm", err) < 0)
        return -1;
    static const char *const links[][2] = {
        {"pts/ptmx", "ptmx"},          {"/proc/self/fd", "fd"},       {"/proc/self/fd/0", "stdin"},
        {"/proc/self/fd/1", "stdout"}, {"/proc/self/fd/2", "stderr"},
    };
    for (size_t i = 0; i < sizeof links / sizeof links[0]; i++)
        if (symlinkat(links[i][0], devfd, links[i][1]) < 0)
            return kago_error_set(err, errno, "symlink /dev/%s", links[i][1]);
    return 0;
}

static int setup_mqueue(int rootfd, struct kago_error **err)
{
    cleanup_close int fd = open_in_root(rootfd, "/dev/mqueue", O_PATH | O_DIRECTORY, err);
    if (fd < 0)
        return -1;
    return mount_at_fd("mqueue", fd, "mqueue", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL, "/dev/mqueue", err);
}

static int setup_proc(const struct kago__child *ch, int rootfd, struct kago_error **err)
{
    cleanup_close int proc = kernel_mountpoint(rootfd, "/proc", err);
    if (proc < 0)
        return -1;
    if (ch->warm_proc >= 0) /* a warm sandbox's, of this pid namespace (spawner.c) */
        return attach_tree(ch->warm_proc, proc, "/proc", err);
    return mount_at_fd("proc", proc, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL, "/proc", err);
}

/* After setup_net: a sysfs shows the network devices of the namespace it is mounted in. */
static int setup_sys(const struct kago__child *ch, int rootfd, struct kago_error **err)
{
    const struct kago_spec *spec = ch->spec;
    cleanup_close int sys = kernel_mountpoint(rootfd, "/sys", err);
    if (sys < 0)
        return -1;
    if (spec->no_sysfs) /* made read-only once the mounts under it have their mount points: sys_readonly */
        return mount_at_fd("tmpfs", sys, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=755,size=16k",
                           "/sys", err);
    if (ch->warm_sys >= 0 && (spec->ns & (1u << KAGO_NS_NET)) && ch->join_fds[KAGO_NS_NET] < 0)
        return attach_tree(ch->warm_sys, sys, "/sys", err); /* a warm sandbox's, of this network namespace */
    if ((spec->ns & (1u << KAGO_NS_NET)) || ch->join_fds[KAGO_NS_NET] >= 0)
        return mount_at_fd("sysfs", sys, "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY, NULL, "/sys",
                           err);
    /* in the host's network namespace: show the host's /sys, read-only, and nothing mounted under it (the
     * host's cgroup hierarchies, tracing, debugfs, securityfs, bpf: a recursive bind kept them writable, as
     * a remount read-only applies to one mount; the container's cgroup view is mounted at /sys/fs/cgroup
     * later). In a user namespace they come along (locked to it: a bind without them is refused), all
     * read-only. */
    bool rec = mount_at_fd("/sys", sys, NULL, MS_BIND, NULL, "/sys", NULL) < 0;
    if (rec && mount_at_fd("/sys", sys, NULL, MS_BIND | MS_REC, NULL, "/sys", err) < 0)
        return -1;
    close(sys);
    sys = open_in_root(rootfd, "/sys", O_PATH, err); /* the new mount, not the directory under it */
    if (sys < 0)
        return -1;
    struct mount_attr attr = {.attr_set = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV |
                                          MOUNT_ATTR_NOEXEC};
    if (rec && syscall(SYS_mount_setattr, sys, "", AT_EMPTY_PATH | AT_RECURSIVE, &attr, sizeof attr) < 0)
        return kago_error_set(err, errno, "/sys and the mounts under it read-only");
    if (!rec && remount_ro(sys, MS_NOSUID | MS_NODEV | MS_NOEXEC, "/sys read-only", err) < 0)
        return -1;
    return 0;
}

/* no_sysfs: the tmpfs at /sys read-only, after the mounts under it made their mount points in it. */
static int sys_readonly(const struct kago_spec *spec, int rootfd, struct kago_error **err)
{
    if (!spec->no_sysfs)
        return 0;
    cleanup_close int sys = open_in_root(rootfd, "/sys", O_PATH, err);
    return sys < 0 ? -1 : remount_ro(sys, MS_NOSUID | MS_NODEV | MS_NOEXEC, "/sys read-only", err);
}

/* The container's own cgroup at m->dst (kago__cg_view). The parent made the cgroup before "G", which the
 * child awaits just before this mount (setup_user_mounts). */
static int setup_cgroup_mount(const struct kago__child *ch, int rootfd, const struct kago_mount *m,
                              struct kago_error **err)
{
    struct kago__cg_view v[8];
    size_t n = ch->cg ? ch->cg->ops->views(ch->cg, v, 8) : 0;
    unsigned long ro = m->readonly ? MS_RDONLY : 0, flags = MS_NOSUID | MS_NODEV | MS_NOEXEC;
    cleanup_close int fd = mountpoint_in_root(rootfd, m->dst, false, err);
    if (fd < 0)
        return -1;
    if (n == 1 && !v[0].name[0]) { /* v2: the one directory */
        if (mount_at_fd(v[0].dir, fd, NULL, MS_BIND, NULL, m->dst, err) < 0)
            return -1;
        close(fd);
        fd = open_in_root(rootfd, m->dst, O_PATH, err);
        return fd < 0 ? -1 : remount(fd, flags | ro, m->dst, err);
    }
    if (mount_at_fd("cgroup", fd, "tmpfs", flags, "mode=755", m->dst, err) < 0)
        return -1;
    close(fd);
    if ((fd = open_in_root(rootfd, m->dst, O_PATH | O_DIRECTORY, err)) < 0)
        return -1;
    cleanup_close int dir = open_in_root(rootfd, m->dst, O_RDONLY | O_DIRECTORY, err);
    if (dir < 0)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (mkdirat(dir, v[i].name, 0755) < 0)
            return kago_error_set(err, errno, "%s/%s: mkdir", m->dst, v[i].name);
        cleanup_close int sub = openat(dir, v[i].name, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (sub < 0 || mount_at_fd(v[i].dir, sub, NULL, MS_BIND, NULL, v[i].name, err) < 0)
            return sub < 0 ? kago_error_set(err, errno, "%s/%s", m->dst, v[i].name) : -1;
        /* co-mounted controllers: cpu -> cpu,cpuacct, as the host and runc name them */
        char names[sizeof v[i].name], *save = NULL;
        memcpy(names, v[i].name, sizeof names);
        for (char *link = strtok_r(names, ",", &save); strchr(v[i].name, ',') && link;
             link = strtok_r(NULL, ",", &save))
            if (symlinkat(v[i].name, dir, link) < 0 && errno != EEXIST)
                return kago_error_set(err, errno, "%s/%s: symlink", m->dst, link);
    }
    /* the binds' flags (a bind takes none of its own) and the tmpfs's read-only: one call for the tree */
    struct mount_attr attr = {.attr_set = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC |
                                          (ro ? MOUNT_ATTR_RDONLY : 0)};
    if (syscall(SYS_mount_setattr, fd, "", AT_EMPTY_PATH | AT_RECURSIVE, &attr, sizeof attr) == 0)
        return 0;
    if (errno != ENOSYS)
        return kago_error_set(err, errno, "%s: nosuid, nodev, noexec%s", m->dst, ro ? ", read-only" : "");
    for (size_t i = 0; i < n; i++) { /* a kernel before 5.12: a remount each */
        cleanup_close int sub = openat(dir, v[i].name, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (sub < 0 || remount(sub, flags | ro, v[i].name, err) < 0)
            return sub < 0 ? kago_error_set(err, errno, "%s/%s", m->dst, v[i].name) : -1;
    }
    return ro ? remount(fd, flags | ro, m->dst, err) : 0;
}

static int copy_tree(int from, int to, int depth);

/* One entry of a tmpcopyup: name (of type and owner st) from directory from into directory to. */
static int copy_entry(int from, int to, const char *name, const struct stat *st, int depth)
{
    mode_t mode = st->st_mode & 07777;
    if (S_ISLNK(st->st_mode)) {
        char target[PATH_MAX];
        ssize_t n = readlinkat(from, name, target, sizeof target - 1);
        if (n < 0)
            return -1;
        target[n] = '\0';
        return symlinkat(target, to, name) < 0
                   ? -1
                   : fchownat(to, name, st->st_uid, st->st_gid, AT_SYMLINK_NOFOLLOW);
    }
    if (!S_ISDIR(st->st_mode) && !S_ISREG(st->st_mode))
        return S_ISSOCK(st->st_mode) ? 0 /* a socket is nothing without its listener */
               : mknodat(to, name, st->st_mode, st->st_rdev) < 0
                   ? -1
                   : fchownat(to, name, st->st_uid, st->st_gid, AT_SYMLINK_NOFOLLOW);
    if (S_ISDIR(st->st_mode) && mkdirat(to, name, 0700) < 0)
        return -1;
    int flags = O_NOFOLLOW | O_CLOEXEC | (S_ISDIR(st->st_mode) ? O_RDONLY | O_DIRECTORY : O_RDONLY);
    cleanup_close int in = openat(from, name, flags);
    cleanup_close int out = S_ISDIR(st->st_mode)
                                ? openat(to, name, flags)
                                : openat(to, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (in < 0 || out < 0)
        return -1;
    int rc = 0;
    if (S_ISDIR(st->st_mode)) {
        if (depth > 64) /* (a descriptor pair a level) */
            return errno = ELOOP, -1;
        rc = copy_tree(in, out, depth + 1);
    } else {
        for (ssize_t n; rc == 0 && (n = sendfile(out, in, NULL, 1 << 30)) != 0;)
            rc = n < 0 ? -1 : 0;
    }
    struct timespec times[2] = {st->st_atim, st->st_mtim};
    return rc < 0 || fchown(out, st->st_uid, st->st_gid) < 0 || fchmod(out, mode) < 0 ||
                   futimens(out, times) < 0
               ? -1
               : 0;
}

/* Copies the tree under directory from into directory to: modes, owners, times, symlinks, nodes. -1 with
 * errno set. */
static int copy_tree(int from, int to, int depth)
{
    int fd = dup(from);
    DIR *d = fd < 0 ? NULL : fdopendir(fd);
    if (!d) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    int rc = 0;
    for (struct dirent *e; rc == 0 && (e = readdir(d));) {
        struct stat st;
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        rc = fstatat(from, e->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0
                 ? -1
                 : copy_entry(from, to, e->d_name, &st, depth);
    }
    int e = errno;
    closedir(d);
    errno = e;
    return rc;
}

/* A tmpfs at m->dst; with m->copyup it starts with a copy of what the rootfs had there (runc's tmpcopyup). */
static int mount_tmpfs(int rootfd, const struct kago_mount *m, struct kago_error **err)
{
    cleanup_close int fd = mountpoint_in_root(rootfd, m->dst, false, err);
    cleanup_close int below =
        fd >= 0 && m->copyup ? open_in_root(rootfd, m->dst, O_RDONLY | O_DIRECTORY, err) : -1;
    if (fd < 0 || (m->copyup && below < 0))
        return -1;
    unsigned mode = m->mode ? m->mode : 01777;
    cleanup_free char *opt = m->size ? xasprintf("mode=%o,size=%llu", mode, (unsigned long long)m->size)
                                     : xasprintf("mode=%o", mode);
    unsigned long flags = MS_NOSUID | MS_NODEV | (m->noexec ? MS_NOEXEC : 0);
    if (mount_at_fd("tmpfs", fd, "tmpfs", flags | (m->readonly && !m->copyup ? MS_RDONLY : 0), opt, m->dst,
                    err) < 0)
        return -1;
    if (!m->copyup)
        return 0;
    cleanup_close int top = open_in_root(rootfd, m->dst, O_RDONLY | O_DIRECTORY, err);
    if (top < 0)
        return -1;
    if (copy_tree(below, top, 0) < 0)
        return kago_error_set(err, errno, "tmpcopyup %s: copy what the rootfs has there", m->dst);
    return m->readonly ? remount_ro(top, 0, m->dst, err) : 0;
}

static int setup_user_mounts(struct kago__child *ch, int rootfd, struct kago_error **err)
{
    const struct kago_spec *spec = ch->spec;
    unsigned nbinds = 0, bind = 0;
    for (size_t i = 0; i < spec->nmounts; i++)
        nbinds += spec->mounts[i].kind == KAGO_MOUNT_BIND;
    for (size_t i = 0; i < spec->nmounts; i++) {
        const struct kago_mount *m = &spec->mounts[i];
        unsigned long extra = (m->noexec ? MS_NOEXEC : 0) | (m->nosuid ? MS_NOSUID : 0);
        if (m->kind == KAGO_MOUNT_CGROUP) {
            /* it shows the cgroup the parent makes meanwhile: await it here, as late as possible (the
             * rootfs, /proc, /dev and the network are set up by now) */
            if (kago__child_go(ch, err) < 0 || setup_cgroup_mount(ch, rootfd, m, err) < 0)
                return -1;
            continue;
        }
        if (m->kind == KAGO_MOUNT_TMPFS) {
            if (mount_tmpfs(rootfd, m, err) < 0)
                return -1;
            continue;
        }
        struct stat st;
        int tree = ch->ntrees ? ch->trees[ch->ntrees - nbinds + bind++] : -1; /* idmapped (userns.c) */
        cleanup_close int src = tree >= 0 ? -1 : kago__open_bind_source(spec, i, err);
        if (tree < 0 && src < 0)
            return -1;
        if (fstat(tree >= 0 ? tree : src, &st) < 0)
            return kago_error_set(err, errno, "bind %s", m->src);
        char srcpath[40]; /* the source opened above, not its path again */
        snprintf(srcpath, sizeof srcpath, "/proc/self/fd/%d", src);
        cleanup_close int fd = mountpoint_in_root(rootfd, m->dst, !S_ISDIR(st.st_mode), err);
        if (fd < 0 || (tree >= 0 ? attach_tree(tree, fd, m->dst, err)
                                 : mount_at_fd(srcpath, fd, NULL, MS_BIND | MS_REC, NULL, m->dst, err)) < 0)
            return -1;
        /* nodev, read-write binds too: where no devices cgroup checks it (v2), a node made in a bound host
         * directory could otherwise be opened */
        close(fd);
        fd = open_in_root(rootfd, m->dst, O_PATH, err);
        if (fd < 0 || nodev_tree(fd, m->dst, err) < 0)
            return -1;
        if ((m->readonly || extra) &&
            remount(fd, MS_NODEV | extra | (m->readonly ? MS_RDONLY : 0), m->dst, err) < 0)
            return -1;
    }
    return 0;
}

static int pivot(int rootfd, struct kago_error **err)
{
    if (fchdir(rootfd) < 0)
        return kago_error_set(err, errno, "chdir rootfs");
    if (syscall(SYS_pivot_root, ".", ".") < 0)
        return kago_error_set(err, errno, "pivot_root");
    /* the old root is stacked under the new one: detach it, never propagating anywhere */
    if (mount(NULL, ".", NULL, MS_SLAVE | MS_REC, NULL) < 0)
        return kago_error_set(err, errno, "make old root a slave");
    if (umount2(".", MNT_DETACH) < 0)
        return kago_error_set(err, errno, "unmount old root");
    if (chdir("/") < 0)
        return kago_error_set(err, errno, "chdir /");
    return 0;
}

static int mask_paths(const struct kago_spec *spec, struct kago_error **err)
{
    for (size_t i = 0; spec->masked_paths && spec->masked_paths[i]; i++) {
        const char *p = spec->masked_paths[i];
        struct stat st;
        if (stat(p, &st) < 0)
            continue; /* nothing to hide */
        int rc = S_ISDIR(st.st_mode) ? mount("tmpfs", p, "tmpfs", MS_RDONLY, "size=0")
                                     : mount("/dev/null", p, NULL, MS_BIND, NULL);
        if (rc < 0)
            return kago_error_set(err, errno, "mask %s", p);
        if (!S_ISDIR(st.st_mode)) { /* (/dev/null is the host's node: read-only, as in setup_dev) */
            cleanup_close int fd = open(p, O_PATH | O_NOFOLLOW | O_CLOEXEC);
            if (fd < 0)
                return kago_error_set(err, errno, "mask %s", p);
            if (remount_ro(fd, MS_NOSUID | MS_NOEXEC, p, err) < 0)
                return -1;
        }
    }
    for (size_t i = 0; spec->readonly_paths && spec->readonly_paths[i]; i++) {
        const char *p = spec->readonly_paths[i];
        /* a read-only copy of the tree, put in place: four calls, no /proc path */
        cleanup_close int tree =
            (int)syscall(SYS_open_tree, AT_FDCWD, p, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE);
        struct mount_attr attr = {.attr_set = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV |
                                              MOUNT_ATTR_NOEXEC};
        if (tree < 0 && errno == ENOENT)
            continue;
        if (tree >= 0 &&
            syscall(SYS_mount_setattr, tree, "", AT_EMPTY_PATH | AT_RECURSIVE, &attr, sizeof attr) == 0) {
            if (syscall(SYS_move_mount, tree, "", AT_FDCWD, p, MOVE_MOUNT_F_EMPTY_PATH) < 0)
                return kago_error_set(err, errno, "bind %s read-only", p);
            continue;
        }
        if (errno != ENOSYS)
            return kago_error_set(err, errno, "bind %s read-only", p);
        /* a kernel before 5.12 */
        if (mount(p, p, NULL, MS_BIND | MS_REC, NULL) < 0) {
            if (errno == ENOENT)
                continue;
            return kago_error_set(err, errno, "bind %s read-only", p);
        }
        cleanup_close int fd = open(p, O_PATH | O_CLOEXEC);
        if (fd < 0 || remount_ro(fd, MS_NOSUID | MS_NODEV | MS_NOEXEC, p, err) < 0)
            return fd < 0 ? kago_error_set(err, errno, "open %s", p) : -1;
    }
    return 0;
}

int kago__loopback_up(struct kago_error **err)
{
    cleanup_close int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0)
        return kago_error_set(err, errno, "socket");
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    strcpy(ifr.ifr_name, "lo");
    if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0)
        return kago_error_set(err, errno, "loopback flags");
    ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
    if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0)
        return kago_error_set(err, errno, "bring loopback up");
    return 0;
}

static int listen_socket(uint16_t port, struct kago_error **err)
{
    int s = socket(AF_INET, SOCK_STREAM, 0); /* inherited by the command: no CLOEXEC */
    if (s < 0)
        return kago_error_set(err, errno, "socket");
    int one = 1;
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {
        .sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(s, (struct sockaddr *)&a, sizeof a) < 0 || listen(s, 4096) < 0) {
        int e = errno;
        close(s);
        return kago_error_set(err, e, "listen on 127.0.0.1:%u", port);
    }
    return s;
}

/* Receives the parent's next message. When the parent works on another CPU, the child polls a while
 * first: a child that sleeps then waits for its own CPU to wake, and on a VM an idle vCPU takes 0.1-1 ms. */
static ssize_t recv_parent(const struct kago__child *ch, struct msghdr *mh)
{
    ssize_t n = -1;
    errno = EAGAIN;
    for (unsigned long long t0 = kago__now_us(); ch->spin && kago__now_us() - t0 < 1000; sched_yield())
        if ((n = recvmsg(ch->sync_fd, mh, MSG_CMSG_CLOEXEC | MSG_DONTWAIT)) >= 0 || errno != EAGAIN)
            return n;
    while ((n = recvmsg(ch->sync_fd, mh, MSG_CMSG_CLOEXEC)) < 0 && errno == EINTR)
        ;
    return n;
}

/* The network namespace the parent made meanwhile ("N" with its fd) is joined; then lo is brought up and
 * the socket activation socket made, in it. */
static int setup_net(const struct kago__child *ch, int *listen_fd, struct kago_error **err)
{
    const struct kago_spec *spec = ch->spec;
    if (ch->net_later) {
        char kind = 0;
        union kago__fd_ctl ctl;
        struct iovec iov = {.iov_base = &kind, .iov_len = 1};
        struct msghdr mh = {
            .msg_iov = &iov, .msg_iovlen = 1, .msg_control = &ctl, .msg_controllen = sizeof ctl};
        if (recv_parent(ch, &mh) != 1 || kind != 'N')
            _exit(127); /* the parent gave up */
        cleanup_close int ns = kago__msg_fd(&mh);
        if (ns < 0 || setns(ns, CLONE_NEWNET) < 0)
            return kago_error_set(err, ns < 0 ? EBADMSG : errno, "join the new network namespace");
    }
    if ((spec->ns & (1u << KAGO_NS_NET)) && !ch->warm && kago__loopback_up(err) < 0)
        return -1;
    if (spec->listen_port && (*listen_fd = listen_socket(spec->listen_port, err)) < 0)
        return -1;
    kago__trace("child: net");
    return 0;
}

/* Whether a mount of the spec's lands in /sys (and needs sysfs under it first). */
static bool mounts_under_sys(const struct kago_spec *spec)
{
    for (size_t i = 0; i < spec->nmounts; i++)
        if (!strncmp(spec->mounts[i].dst, "/sys", 4) &&
            (spec->mounts[i].dst[4] == '/' || spec->mounts[i].dst[4] == '\0'))
            return true;
    return false;
}

/* Past pivot_root, in the container's namespaces and before /proc/sys is made read-only. */
static int set_sysctls(const struct kago_spec *spec, struct kago_error **err)
{
    for (size_t i = 0; i < spec->nsysctls; i++) {
        char path[256];
        int n = snprintf(path, sizeof path, "/proc/sys/%s", spec->sysctls[i].key);
        for (char *p = path + 10; n > 0 && *p; p++)
            if (*p == '.')
                *p = '/';
        cleanup_close int fd = open(path, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
        size_t len = strlen(spec->sysctls[i].value);
        if (fd < 0 || write(fd, spec->sysctls[i].value, len) != (ssize_t)len)
            return kago_error_set(err, errno, "sysctl %s = %s", spec->sysctls[i].key, spec->sysctls[i].value);
    }
    return 0;
}

static int setup_mounts(struct kago__child *ch, int *listen_fd, struct kago_error **err)
{
    const struct kago_spec *spec = ch->spec;
    bool userns = (spec->ns & (1u << KAGO_NS_USER)) || ch->join_fds[KAGO_NS_USER] >= 0;
    /* The network namespace the parent makes meanwhile is awaited as late as sysfs allows: past pivot_root
     * (the host's /sys is bound before it, when the container has no network namespace of its own). */
    bool net_late = ch->net_later && !mounts_under_sys(spec);
    if (!ch->warm && mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
        return kago_error_set(err, errno, "make / private");
    kago__trace("child: / private");
    cleanup_close int rootfd = setup_rootfs(ch, err);
    if (rootfd < 0)
        return -1;
    kago__trace("child: rootfs");
    if (setup_proc(ch, rootfd, err) < 0 || setup_dev(rootfd, userns, err) < 0)
        return -1;
    kago__trace("child: proc dev");
    if ((spec->ns & (1u << KAGO_NS_IPC)) && setup_mqueue(rootfd, err) < 0)
        return -1;
    if (!net_late && (setup_net(ch, listen_fd, err) < 0 || setup_sys(ch, rootfd, err) < 0))
        return -1;
    if (setup_user_mounts(ch, rootfd, err) < 0)
        return -1;
    if (kago__fault("mounts"))
        return kago_error_set(err, EIO, "injected fault after the mounts");
    if ((spec->readonly || (spec->layers && !spec->overlay)) &&
        remount_ro(rootfd, MS_NODEV, "rootfs read-only", err) < 0)
        return -1;
    /* The cgroup (made by the parent meanwhile) is entered after pivot_root and the masks, through its
     * hierarchies held open: those steps need not wait for the parent's "G". */
    if (ch->enter_cg && !ch->went && ch->enter_cg->ops->hold &&
        ch->enter_cg->ops->hold(ch->enter_cg, err) < 0)
        return -1;
    if (pivot(rootfd, err) < 0)
        return -1;
    kago__trace("child: pivot_root");
    if (net_late && (setup_net(ch, listen_fd, err) < 0 || setup_sys(ch, rootfd, err) < 0))
        return -1;
    if (sys_readonly(spec, rootfd, err) < 0)
        return -1;
    if (set_sysctls(spec, err) < 0)
        return -1;
    int ret = mask_paths(spec, err);
    kago__trace("child: masks");
    return ret;
}

/* Through the container's own /proc (mounted by now): the kernel's badness bias for this process tree. */
static int set_oom_score_adj(int v, struct kago_error **err)
{
    char buf[16];
    int n = snprintf(buf, sizeof buf, "%d", v);
    cleanup_close int fd = open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);
    if (fd < 0 || write(fd, buf, (size_t)n) != n)
        return kago_error_set(err, errno, "write %d to /proc/self/oom_score_adj", v);
    return 0;
}

int kago__set_rlimits(const struct kago_spec *spec, struct kago_error **err)
{
    for (size_t i = 0; i < spec->nrlimits; i++) {
        struct rlimit rl = {.rlim_cur = spec->rlimits[i].soft, .rlim_max = spec->rlimits[i].hard};
        if (setrlimit(spec->rlimits[i].resource, &rl) < 0)
            return kago_error_set(err, errno, "setrlimit %s %llu:%llu",
                                  kago__rlimit_name(spec->rlimits[i].resource),
                                  (unsigned long long)rl.rlim_cur, (unsigned long long)rl.rlim_max);
    }
    return 0;
}

/* Finds argv[0] on the spec's PATH inside the (already pivoted) root. */
char *kago__find_command(const struct kago_spec *spec, struct kago_error **err)
{
    const char *cmd = spec->argv[0];
    if (strchr(cmd, '/')) {
        if (access(cmd, X_OK) < 0)
            return kago_error_set(err, errno, "command %s", cmd), NULL;
        return xstrdup(cmd);
    }
    const char *path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
    for (size_t i = 0; spec->env && spec->env[i]; i++)
        if (!strncmp(spec->env[i], "PATH=", 5))
            path = spec->env[i] + 5;
    cleanup_free char *copy = xstrdup(path);
    char *save = NULL;
    for (char *dir = strtok_r(copy, ":", &save); dir; dir = strtok_r(NULL, ":", &save)) {
        char *full = xasprintf("%s/%s", dir, cmd);
        struct stat st;
        if (stat(full, &st) == 0 && S_ISREG(st.st_mode) && access(full, X_OK) == 0)
            return full;
        free(full);
    }
    kago_error_set(err, 0, "command %s: not found in the rootfs (PATH=%s)", cmd, path);
    return NULL;
}

/* The tiny PID 1 of --init: forwards signals to the command, reaps every zombie, exits as the command did. */
static volatile sig_atomic_t init_child;
static void init_forward(int sig)
{
    if (init_child > 0)
        kill(init_child, sig);
}

void kago__init_loop(pid_t child)
{
    /* never exec'd, so nothing closed kago's descriptors (a server's sockets, the host's network
     * namespace): the init needs none of them */
    syscall(SYS_close_range, 3, ~0U, 0);
    /* nor renamed: ps shows the container's PID 1 as what it is, not as the kago or kago-spawner it was
     * cloned from (the spawner tells its sandboxes still in setup by that name) */
    prctl(PR_SET_NAME, "kago-init", 0, 0, 0);
    if (kago__args && kago__args_len > 9) { /* nor with the command line it was cloned with */
        memset(kago__args, 0, kago__args_len);
        memcpy(kago__args, "kago-init", 9);
    }
    init_child = child;
    struct sigaction sa = {.sa_handler = init_forward};
    sigemptyset(&sa.sa_mask);
    for (int s = 1; s < NSIG; s++)
        if (s != SIGCHLD && s != SIGKILL && s != SIGSTOP)
            sigaction(s, &sa, NULL);
    for (;;) {
        int status;
        pid_t p = waitpid(-1, &status, 0);
        if (p < 0 && errno == EINTR)
            continue;
        if (p < 0)
            _exit(1);
        if (p == child) {
            if (WIFSIGNALED(status)) {
                signal(WTERMSIG(status), SIG_DFL);
                kill(getpid(), WTERMSIG(status)); /* pid 1 ignores it: fall back to 128+N */
                _exit(128 + WTERMSIG(status));
            }
            _exit(WEXITSTATUS(status));
        }
    }
}

void kago__reset_signals(void)
{
    /* the command starts with default dispositions and nothing blocked, whatever the caller (an event
     * loop ignoring SIGPIPE, a CLI holding signals until it can forward them) had set */
    struct sigaction dfl = {.sa_handler = SIG_DFL};
    for (int sig = 1; sig < NSIG; sig++)
        if (sig != SIGKILL && sig != SIGSTOP)
            sigaction(sig, &dfl, NULL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
}

void kago__child_report(int sync_fd, struct kago_error *err)
{
    char buf[4096];
    int n = snprintf(buf, sizeof buf, "E%d %s", err ? err->code : 0,
                     err && err->msg ? err->msg : "unknown error");
    if (n > (int)sizeof buf - 1)
        n = (int)sizeof buf - 1;
    if (write(sync_fd, buf, (size_t)n) < 0) {
        /* the parent is gone; nothing left to tell */
    }
}

static const int join_order[] = {KAGO_NS_USER, KAGO_NS_IPC,    KAGO_NS_UTS,
                                 KAGO_NS_NET,  KAGO_NS_CGROUP, KAGO_NS_MOUNT};
static const int ns_clone_flag[KAGO_NS_COUNT] = {
    [KAGO_NS_PID] = CLONE_NEWPID,   [KAGO_NS_MOUNT] = CLONE_NEWNS, [KAGO_NS_UTS] = CLONE_NEWUTS,
    [KAGO_NS_IPC] = CLONE_NEWIPC,   [KAGO_NS_NET] = CLONE_NEWNET,  [KAGO_NS_CGROUP] = CLONE_NEWCGROUP,
    [KAGO_NS_USER] = CLONE_NEWUSER,
};

int kago__ns_clone_flag(enum kago_ns ns)
{
    return ns_clone_flag[ns];
}

static char **exec_env(const struct kago_spec *spec)
{
    size_t n = 0;
    while (spec->env && spec->env[n])
        n++;
    char **env = xcalloc(n + 3, sizeof *env);
    memcpy(env, spec->env, n * sizeof *env);
    if (spec->listen_port) {
        env[n++] = xstrdup("LISTEN_FDS=1");
        env[n++] = xasprintf("LISTEN_PID=%d", (int)getpid());
    }
    return env;
}

/* Steps before the command may run: namespaces, mounts, network, limits. */
static int child_prepare(struct kago__child *ch, int *listen_fd, char **cmd, struct kago_error **err)
{
    const struct kago_spec *spec = ch->spec;
    for (size_t i = 0; i < sizeof join_order / sizeof join_order[0]; i++) {
        int ns = join_order[i];
        if (ch->join_fds[ns] >= 0 && setns(ch->join_fds[ns], ns_clone_flag[ns]) < 0)
            return kago_error_set(err, errno, "join %s namespace %s", kago_ns_name(ns), spec->join_ns[ns]);
    }
    if (spec->hostname && sethostname(spec->hostname, strlen(spec->hostname)) < 0)
        return kago_error_set(err, errno, "hostname %s", spec->hostname);
    kago__trace("child: begin");
    if ((spec->ns & (1u << KAGO_NS_MOUNT)) ? setup_mounts(ch, listen_fd, err) < 0
                                           : setup_net(ch, listen_fd, err) < 0)
        return -1;
    if (!(*cmd = kago__find_command(spec, err)))
        return -1;
    if (kago__set_rlimits(spec, err) < 0)
        return -1;
    if (spec->oom_score_adj_set && set_oom_score_adj(spec->oom_score_adj, err) < 0)
        return -1;
    if (chdir(spec->cwd ? spec->cwd : "/") < 0)
        return kago_error_set(err, errno, "cwd %s", spec->cwd);
    return 0;
}

/* In a new user namespace, the maps are written: become its root (until now the host's root, unmapped). */
static int become_root(struct kago__child *ch, struct kago_error **err)
{
    ch->mapped = true;
    if (setresgid(0, 0, 0) < 0 || setresuid(0, 0, 0) < 0)
        return kago_error_set(err, errno, "become root of the user namespace");
    return 0;
}

/* Receives the parent's messages up to "G" (or "M" when until_mapped): "F" brings idmapped mounts, "M" says
 * the user namespace's maps are written. Returns the last one's kind; exits when the parent gave up. */
static char recv_until(struct kago__child *ch, bool until_mapped, ssize_t *len)
{
    char go = 0;
    struct iovec iov[2] = {{.iov_base = &go, .iov_len = 1},
                           {.iov_base = ch->bpf->insns, .iov_len = sizeof ch->bpf->insns}};
    union {
        struct cmsghdr h;
        char space[CMSG_SPACE(sizeof(int) * KAGO__TREES_PER_MSG)];
    } ctl;
    struct msghdr mh = {.msg_iov = iov, .msg_iovlen = 2};
    for (;;) {
        mh.msg_control = &ctl;
        mh.msg_controllen = sizeof ctl;
        ssize_t n = recv_parent(ch, &mh);
        if (n < 1 || (mh.msg_flags & MSG_TRUNC) || (go != 'G' && n != 1))
            _exit(127); /* the parent gave up */
        if (go == 'F') {
            struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
            size_t k = c && c->cmsg_type == SCM_RIGHTS ? (c->cmsg_len - CMSG_LEN(0)) / sizeof(int) : 0;
            if (ch->ntrees + k > KAGO__MAX_TREES)
                _exit(127);
            memcpy(ch->trees + ch->ntrees, CMSG_DATA(c), k * sizeof(int));
            ch->ntrees += (unsigned)k;
            continue;
        }
        if (go == 'M' && !until_mapped && !ch->mapped)
            continue; /* (become_root follows) */
        if (go != 'G' && go != 'M')
            _exit(127);
        *len = n;
        return go;
    }
}

/* In a new user namespace: waits for the parent's "M" (its maps written, the idmapped mounts sent), then
 * becomes its root. The mounts need no more; the cgroup and the filter ("G") are awaited later. */
static int child_mapped(struct kago__child *ch, struct kago_error **err)
{
    ssize_t n;
    if (ch->mapped || ch->went)
        return 0;
    if (recv_until(ch, true, &n) != 'M')
        _exit(127); /* "M" comes before "G" */
    kago__trace("child: mapped");
    return become_root(ch, err);
}

/* Waits (once) for the parent's "G": the cgroup exists, and the compiled filter comes with it. Then moves
 * into the cgroup: by path, or past pivot_root through the hierarchies setup_mounts held open. */
int kago__child_go(struct kago__child *ch, struct kago_error **err)
{
    ssize_t n;
    if (ch->went)
        return 0;
    if (recv_until(ch, false, &n) != 'G')
        _exit(127);
    ch->bpf->len = (unsigned short)((size_t)(n - 1) / sizeof ch->bpf->insns[0]);
    ch->went = true;
    if ((ch->spec->ns & (1u << KAGO_NS_USER)) && !ch->mapped && become_root(ch, err) < 0)
        return -1;
    if (ch->enter_cg && ch->enter_cg->ops->enter(ch->enter_cg, 0, err) < 0)
        return -1;
    kago__trace("child: in cgroup");
    return 0;
}

/* Steps that take privileges away, last before exec. */
static int child_secure(const struct kago__child *ch, struct kago_error **err)
{
    const struct kago_spec *spec = ch->spec;
    if (spec->no_new_privs && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        return kago_error_set(err, errno, "no_new_privs");
    if (kago__seccomp_load(ch->bpf, err) < 0)
        return -1;
    return kago__caps_apply(spec, err);
}

int kago__make_tty(int report_fd, struct kago_error **err)
{
    int unlock = 0;
    cleanup_close int master = open("/dev/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (master < 0)
        return kago_error_set(err, errno, "terminal: open /dev/ptmx");
    if (ioctl(master, TIOCSPTLCK, &unlock) < 0)
        return kago_error_set(err, errno, "terminal: unlock");
    cleanup_close int slave = ioctl(master, TIOCGPTPEER, O_RDWR | O_NOCTTY);
    if (slave < 0)
        return kago_error_set(err, errno, "terminal: open its peer");
    /* stdin is still the caller's (inherited) until the dup2s below: when it is a terminal, the command
     * starts at its size, not 0x0 until the caller's relay catches up (it follows resizes from then on) */
    struct winsize ws;
    if (ioctl(STDIN_FILENO, TIOCGWINSZ, &ws) == 0 && ioctl(slave, TIOCSWINSZ, &ws) < 0)
        return kago_error_set(err, errno, "terminal: set its size");
    if (getsid(0) != getpid() && setsid() < 0)
        return kago_error_set(err, errno, "terminal: new session");
    if (ioctl(slave, TIOCSCTTY, 0) < 0)
        return kago_error_set(err, errno, "terminal: make it the controlling terminal");
    for (int i = 0; i < 3; i++)
        if (dup2(slave, i) < 0)
            return kago_error_set(err, errno, "terminal: as fd %d", i);
    if (kago__send_fd(report_fd, 'T', master) != 1)
        return kago_error_set(err, errno, "terminal: hand its master to kago");
    return 0;
}

/* Closes every descriptor from `from` up but a and b (each >= from; a may equal b). */
void kago__close_all_but(int from, int a, int b)
{
    int lo = a < b ? a : b, hi = a < b ? b : a;
    syscall(SYS_close_range, from, lo - 1, 0); /* (nothing when lo is from) */
    syscall(SYS_close_range, lo + 1, hi - 1, 0);
    syscall(SYS_close_range, hi + 1, ~0U, 0);
}

/* A created container may wait long for its start: it must not hold its creator's descriptors meanwhile
 * (a pipe whose reader waits for EOF); only the fifo, the listening socket and the preserved fds stay. */
static void wait_for_start(struct kago__child *ch, int listen_fd)
{
    kago__close_all_but(3 + (int)ch->spec->preserve_fds, ch->fifo_fd,
                        listen_fd >= 3 ? listen_fd : ch->fifo_fd);
    ch->sync_fd = -1; /* closed: "R" was its last word */
    char path[64], c = 'S';
    snprintf(path, sizeof path, "/proc/self/fd/%d", ch->fifo_fd);
    int fd = open(path, O_WRONLY | O_CLOEXEC); /* blocks until `kago start` opens the other end */
    if (fd < 0 || write(fd, &c, 1) != 1)
        _exit(127);
    close(fd);
    close(ch->fifo_fd);
}

/* Past pivot_root: stdio that is a /dev/null opened outside (conmon's stdin, a shim's) is reopened from the
 * container's own /dev, as runc does: CRIU cannot dump a file whose mount is not the container's ("Can't
 * lookup mount"). Same device, same access mode: nothing else changes for the command. */
static void reopen_null_stdio(void)
{
    struct stat null, st;
    if (stat("/dev/null", &null) < 0 || !S_ISCHR(null.st_mode))
        return;
    for (int i = 0; i < 3; i++) {
        int fl = fcntl(i, F_GETFL);
        if (fl < 0 || fstat(i, &st) < 0 || !S_ISCHR(st.st_mode) || st.st_rdev != null.st_rdev)
            continue;
        int fd = open("/dev/null", (fl & O_ACCMODE) | O_CLOEXEC);
        if (fd >= 0 && fd != i) {
            dup2(fd, i); /* clears close-on-exec */
            close(fd);
        }
    }
}

void kago__child_main(struct kago__child *ch)
{
    struct kago_error *err = NULL;
    const struct kago_spec *spec = ch->spec;
    int listen_fd = -1;
    char *cmd = NULL;
    bool ready_sent = false;

    kago__child_nice();
    for (int i = 0; i < 3; i++)
        if (ch->stdio[i] >= 0 && ch->stdio[i] != i && dup2(ch->stdio[i], i) < 0)
            _exit(127);
    if (ch->parent_fd >= 0)
        close(ch->parent_fd);
    if (ch->die_with_parent && prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0)
        _exit(127);
    kago__reset_signals();
    /* The init of its own pid namespace leads a session of its own (as runc and crun do without a
     * terminal): CRIU refuses to checkpoint a tree whose session leader is outside its pid namespace
     * (checkpoint.c). Signals from a foreground kago are forwarded by pid, not by the terminal. */
    if ((spec->ns & (1u << KAGO_NS_PID)) && !spec->join_ns[KAGO_NS_PID] && !ch->warm && setsid() < 0)
        _exit(127);
    /* Without a user namespace the first half of the setup needs nothing from the parent: it runs while
     * the parent makes the cgroup and compiles the seccomp filter ("G" comes before pivot_root). */
    if (spec->userns == KAGO_USERNS_AUTO &&
        (ch->scratch_fd = open(ch->scratch, O_PATH | O_DIRECTORY | O_CLOEXEC)) < 0) {
        kago_error_set(&err, errno, "open %s", ch->scratch);
        goto fail;
    }
    if ((spec->ns & (1u << KAGO_NS_USER)) && child_mapped(ch, &err) < 0)
        goto fail;
    if (kago__fault("slow-setup")) /* tests: a setup long enough to watch what the parent does meanwhile */
        usleep(1500 * 1000);
    if (child_prepare(ch, &listen_fd, &cmd, &err) < 0 || kago__child_go(ch, &err) < 0)
        goto fail;
    reopen_null_stdio();
    if (ch->tty && kago__make_tty(ch->sync_fd, &err) < 0)
        goto fail;
    /* a cgroup namespace is rooted where the process is: make it only once inside its cgroup */
    if ((spec->ns & (1u << KAGO_NS_CGROUP)) && unshare(CLONE_NEWCGROUP) < 0) {
        kago_error_set(&err, errno, "new cgroup namespace");
        goto fail;
    }
    if (ch->fifo_fd >= 0) {
        if (write(ch->sync_fd, "R", 1) != 1)
            _exit(127);
        ready_sent = true;
        wait_for_start(ch, listen_fd);
    }
    kago__trace("child: prepared");
    if (child_secure(ch, &err) < 0)
        goto fail;
    kago__trace("child: secured");
    if (spec->init) {
        pid_t pid = fork();
        if (pid < 0) {
            kago_error_set(&err, errno, "fork the command under --init");
            goto fail;
        }
        if (pid > 0) {
            close(ch->sync_fd);
            if (listen_fd >= 0)
                close(listen_fd);
            kago__init_loop(pid);
        }
    }
    if (listen_fd >= 0 && listen_fd != 3) {
        if (dup2(listen_fd, 3) < 0) {
            kago_error_set(&err, errno, "pass the listening socket as fd 3");
            goto fail;
        }
        close(listen_fd);
    }
    /* nothing of kago's but fd 3 (socket activation) reaches the command, and the creator's preserved fds */
    syscall(SYS_close_range, 3 + (spec->listen_port ? 1 : 0) + spec->preserve_fds, ~0U, CLOSE_RANGE_CLOEXEC);
    char **env = exec_env(spec);
    if (kago__fault("exec")) {
        kago_error_set(&err, EIO, "injected fault at exec");
        goto fail;
    }
    execve(cmd, spec->argv, env);
    kago_error_set(&err, errno, "exec %s", cmd);
fail:
    if (ready_sent) /* after "R" nobody reads the sync socket: say it on the container's stderr */
        fprintf(stderr, "kago: %s\n", err ? err->msg : "container setup failed");
    else
        kago__child_report(ch->sync_fd, err);
    _exit(127);
}
