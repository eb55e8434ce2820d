/* Checkpoint and restore of whole containers with CRIU.
 *
 * kago runs Debian's `criu` binary (fork + exec) rather than libcriu or `criu swrk`: the RPC of both needs
 * protobuf-c and CRIU's rpc.proto compiled into kago, and libcriu is a separate package that hosts with
 * only `criu` lack; the command line is stable across CRIU 3.x and its log gives a readable reason.
 *
 * What a kago container needs from CRIU (see linux.c for how it was built):
 * - mount namespace: the root is an overlay (or a bind of the rootfs); CRIU does not dump the root mount,
 *   it takes --root on restore. kago records the overlay's writable layer itself (upper/ in the image)
 *   and restores over a fresh tmpfs, with upper/ as a read-only middle layer. The container's own tmpfs
 *   mounts (/dev, /dev/shm, the masked directories) are kago's too: their files go to tmpfs/KEY/ in the
 *   image and each restore mounts a fresh tmpfs with the same options, handed to CRIU as an external
 *   mount (CRIU would tar and gzip each, two exec()s apiece on every restore). /proc, /sys, devpts and
 *   mqueue are CRIU's; bind mounts of host files (/dev nodes, user binds, masked files bound to /dev/null)
 *   are declared --external on dump and mapped to the same host paths on restore.
 * - pid, uts, ipc and network namespaces belong to the container's tree: CRIU dumps and recreates them
 *   (the listening socket included). Network locking uses nftables (Debian 12's criu links libnftables;
 *   its iptables lock needs iptables-restore, which minimal hosts lack).
 * - cgroup: the restore runs inside a fresh kago/<new> cgroup made with the recorded limits, and CRIU is
 *   told to leave cgroups alone (--manage-cgroups=ignore) so the tree stays where it is restored.
 * - the restored init is reparented to kago (a child subreaper), which reaps it as it reaps a created one. */
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <time.h>

#include <kago/checkpoint.h>

#include "container_int.h"
#include "image_int.h"

#define IMAGE_META "kago.json"
/* The network namespace is external to the image: CRIU neither dumps nor locks it (its nftables lock
 * would be dumped with the ruleset and restored, still dropping every packet), and each restore gets a
 * fresh namespace holding only loopback, which is all a kago container has; criu recreates the listening
 * sockets in it. It is handed to criu as this fd. */
#define NETNS_KEY "kago-netns"
#define NETNS_FD  3

/* ---- running criu ---------------------------------------------------------------------------------- */

static char *find_criu(struct kago_error **err)
{
    const char *env = getenv("KAGO_CRIU");
    if (env && *env)
        return xstrdup(env);
    static const char *const dirs[] = {"/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin",
                                       "/sbin",           "/bin",           NULL};
    for (int i = 0; dirs[i]; i++) {
        char *p = xasprintf("%s/criu", dirs[i]);
        if (access(p, X_OK) == 0)
            return p;
        free(p);
    }
    kago_error_set(err, 0, "criu: not found (install Debian's criu package)");
    return NULL;
}

typedef int (*criu_prep)(void *arg, struct kago_error **err);

/* Runs argv (argv[0] is criu's path) with stdout and stderr on outfd (-1: /dev/null); prep runs in the
 * child before exec. Returns the wait status, or < 0 when criu could not be started. */
static int run_criu(char **argv, int outfd, criu_prep prep, void *arg, struct kago_error **err)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0)
        return kago_error_set(err, errno, "pipe");
    pid_t pid = fork();
    if (pid < 0) {
        close(p[0]);
        close(p[1]);
        return kago_error_set(err, errno, "fork criu");
    }
    if (pid == 0) {
        struct kago_error *e = NULL;
        close(p[0]);
        /* out of the way of the low fds prep hands to criu (NETNS_FD) */
        int hi = fcntl(p[1], F_DUPFD_CLOEXEC, 64);
        if (hi < 0)
            _exit(126);
        close(p[1]);
        p[1] = hi;
        int null = open("/dev/null", O_RDWR | O_CLOEXEC);
        int out = outfd >= 0 ? outfd : null;
        if (null < 0 || dup2(null, 0) < 0 || dup2(out, 1) < 0 || dup2(out, 2) < 0)
            _exit(126);
        if (prep && prep(arg, &e) < 0) {
            kago__child_report(p[1], e);
            _exit(126);
        }
        execv(argv[0], argv);
        kago_error_set(&e, errno, "exec %s", argv[0]);
        kago__child_report(p[1], e);
        _exit(127);
    }
    close(p[1]);
    char buf[4096];
    ssize_t n;
    do
        n = read(p[0], buf, sizeof buf - 1);
    while (n < 0 && errno == EINTR);
    close(p[0]);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (n > 0 && buf[0] == 'E') {
        buf[n] = '\0';
        char *msg = strchr(buf, ' ');
        return kago_error_set(err, 0, "%s", msg ? msg + 1 : "criu: setup failed");
    }
    return status;
}

/* CRIU's reason for a failure, in one line: the first "Error (file:line): MSG" of its log that is not a
 * helper's exit status. The caller frees it. */
static char *criu_reason(const char *text, int status)
{
    const char *fallback = NULL;
    for (const char *line = text; line && *line;) {
        const char *end = strchrnul(line, '\n');
        const char *e = memmem(line, (size_t)(end - line), "Error (", 7);
        const char *m = e ? memmem(e, (size_t)(end - e), "): ", 3) : NULL;
        if (m) {
            m += 3;
            bool helper = !strncmp(m, "exited, status", 14) || !strncmp(m, "execvp(", 7);
            if (!helper)
                return xasprintf("%.*s", (int)(end - m), m);
            if (!fallback)
                fallback = m;
        }
        line = *end ? end + 1 : NULL;
    }
    if (fallback)
        return xasprintf("%.*s", (int)(strchrnul(fallback, '\n') - fallback), fallback);
    if (WIFSIGNALED(status))
        return xasprintf("criu killed by signal %d", WTERMSIG(status));
    return xasprintf("criu exited with status %d (no error in its log)", WEXITSTATUS(status));
}

static char *criu_log_reason(const char *log, int status)
{
    cleanup_free char *text = kago__read_file(log, NULL, NULL);
    return criu_reason(text, status);
}

int kago_checkpoint_supported(struct kago_error **err)
{
    cleanup_free char *criu = find_criu(err);
    if (!criu)
        return -1;
    cleanup_close int out = memfd_create("kago-criu-check", MFD_CLOEXEC);
    if (out < 0)
        return kago_error_set(err, errno, "memfd_create");
    char *argv[] = {criu, "check", NULL};
    int st = run_criu(argv, out, NULL, NULL, err);
    if (st < 0)
        return -1;
    if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
        return 0;
    char buf[65536];
    ssize_t n = pread(out, buf, sizeof buf - 1, 0);
    buf[n > 0 ? n : 0] = '\0';
    cleanup_free char *why = criu_reason(buf, st);
    return kago_error_set(err, 0, "criu check: %s", why);
}

/* ---- the container's mounts -------------------------------------------------------------------------- */

struct mnt {
    char *mp, *root, *fstype;
    char *opts, *super; /* the mount's options, the superblock's */
    dev_t dev;
};

static void unescape(char *s)
{
    char *o = s;
    for (; *s; s++) {
        if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] && s[3]) {
            *o++ = (char)((s[1] - '0') * 64 + (s[2] - '0') * 8 + (s[3] - '0'));
            s += 3;
        } else {
            *o++ = *s;
        }
    }
    *o = '\0';
}

static void mounts_free(struct mnt *m, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(m[i].mp);
        free(m[i].root);
        free(m[i].fstype);
        free(m[i].opts);
        free(m[i].super);
    }
    free(m);
}

/* Parses a mountinfo file (paths relative to that process's root). */
static int read_mounts(const char *path, struct mnt **out, size_t *nout, struct kago_error **err)
{
    cleanup_fclose FILE *f = fopen(path, "re");
    if (!f)
        return kago_error_set(err, errno, "open %s", path);
    struct mnt *v = NULL;
    size_t n = 0;
    cleanup_free char *line = NULL;
    size_t cap = 0;
    while (getline(&line, &cap, f) > 0) {
        unsigned maj, min;
        char root[4096], mp[4096], fstype[256], opts[1024], super[1024] = "";
        char *sep = strstr(line, " - ");
        if (!sep || sscanf(line, "%*d %*d %u:%u %4095s %4095s %1023s", &maj, &min, root, mp, opts) != 5 ||
            sscanf(sep + 3, "%255s %*s %1023s", fstype, super) < 1)
            continue;
        unescape(root);
        unescape(mp);
        v = xrealloc(v, (n + 1) * sizeof *v);
        v[n++] = (struct mnt){xstrdup(mp),   xstrdup(root),  xstrdup(fstype),
                              xstrdup(opts), xstrdup(super), makedev(maj, min)};
    }
    *out = v;
    *nout = n;
    return 0;
}

/* Filesystems CRIU mounts afresh (and dumps the contents of, for tmpfs) by itself. */
static bool criu_mountable(const char *fstype)
{
    static const char *const fs[] = {"proc", "sysfs", "tmpfs", "devpts", "mqueue", "cgroup", "cgroup2", NULL};
    for (int i = 0; fs[i]; i++)
        if (!strcmp(fs[i], fstype))
            return true;
    return false;
}

/* The host path of the bind source (dev, root): a host mount of the same filesystem whose root holds it. */
static char *host_source(const struct mnt *host, size_t nhost, dev_t dev, const char *root)
{
    const struct mnt *best = NULL;
    size_t best_len = 0;
    for (size_t i = 0; i < nhost; i++) {
        size_t len = strlen(host[i].root);
        if (host[i].dev != dev || strncmp(host[i].root, root, len) != 0)
            continue;
        if (len > 1 && root[len] != '/' && root[len] != '\0')
            continue;
        if (!best || len > best_len)
            best = &host[i], best_len = len;
    }
    if (!best)
        return NULL;
    const char *rest = root + (best_len == 1 ? 0 : best_len);
    if (!*rest)
        return xstrdup(best->mp);
    return xasprintf("%s%s", strcmp(best->mp, "/") ? best->mp : "", rest);
}

/* A tmpfs of the container's own, mounted once (no bind of it elsewhere): kago saves and restores it
 * itself, as an external mount. CRIU would run tar and gzip for each (a dozen exec()s per restore, the
 * costliest part of a small container's restore under emulation); kago copies a few files in-process. */
static bool kago_tmpfs(const struct mnt *m, size_t n, size_t i)
{
    if (strcmp(m[i].fstype, "tmpfs") || strcmp(m[i].root, "/") || !strcmp(m[i].mp, "/"))
        return false;
    for (size_t j = 0; j < n; j++)
        if (j != i && m[j].dev == m[i].dev)
            return false;
    return true;
}

static void add_external(json_object *ext, const char *mp, const char *key_prefix, json_object *what,
                         const char *member)
{
    json_object *e = json_object_new_object();
    char key[32];
    snprintf(key, sizeof key, "%s%zu", key_prefix, json_object_array_length(ext));
    json_object_object_add(e, "key", json_object_new_string(key));
    json_object_object_add(e, "mountpoint", json_object_new_string(mp));
    json_object_object_add(e, member, what);
    json_object_array_add(ext, e);
}

/* Every mount of the container that is a bind of a host file: CRIU must be told it is external. So are
 * the container's own tmpfs mounts (see kago_tmpfs) when it has no user namespace to map their owners. */
static int find_externals(const struct mnt *m, size_t n, bool userns, json_object *ext,
                          struct kago_error **err)
{
    struct mnt *host = NULL;
    size_t nhost = 0;
    if (read_mounts("/proc/self/mountinfo", &host, &nhost, err) < 0)
        return -1;
    int ret = 0;
    for (size_t i = 0; i < n && ret == 0; i++) {
        if (!strcmp(m[i].mp, "/"))
            continue; /* the root: CRIU takes it from --root */
        if (!userns && kago_tmpfs(m, n, i)) {
            json_object *t = json_object_new_object();
            json_object_object_add(t, "flags", json_object_new_string(m[i].opts));
            json_object_object_add(t, "options", json_object_new_string(m[i].super));
            add_external(ext, m[i].mp, "kago-tmpfs", t, "tmpfs");
            continue;
        }
        bool own = false;
        for (size_t j = 0; j < n && criu_mountable(m[i].fstype) && !own; j++)
            own = m[j].dev == m[i].dev && !strcmp(m[j].root, "/");
        if (own)
            continue;
        char *src = host_source(host, nhost, m[i].dev, m[i].root);
        if (!src) {
            ret = kago_error_set(err, 0, "mount %s (%s %s): its source is not visible on the host", m[i].mp,
                                 m[i].fstype, m[i].root);
            break;
        }
        add_external(ext, m[i].mp, "kago-ext", json_object_new_string(src), "source");
        json_object_object_add(json_object_array_get_idx(ext, json_object_array_length(ext) - 1), "flags",
                               json_object_new_string(m[i].opts));
        free(src);
    }
    mounts_free(host, nhost);
    return ret;
}

/* ---- the overlay's writable layer ------------------------------------------------------------------ */

/* The upper layer is out of reach (its tmpfs was mounted before pivot_root and detached with the old
 * root), so it is rebuilt from what differs between the merged root (/proc/PID/root) and the rootfs:
 * new or changed entries are copied, entries gone from the lower get an overlay whiteout (char 0:0). */
struct walk {
    const char *upper; /* image/upper */
    const char *base;  /* where the walk's root is in the container: "" for its root */
    const struct mnt *m;
    size_t nm;
};

struct level {
    struct level *up;
    int mdir;        /* the merged directory */
    const char *rel; /* "" for the root, else "/a/b" */
    bool made;       /* exists in upper/ */
};

static bool is_mountpoint(const struct walk *w, const char *rel)
{
    size_t nb = strlen(w->base);
    for (size_t i = 0; i < w->nm; i++)
        if (!strncmp(w->m[i].mp, w->base, nb) && !strcmp(w->m[i].mp + nb, rel))
            return true;
    return false;
}

/* Creates the level's directory in upper/ (and its parents) with the merged directory's mode and owner:
 * an upper directory hides the lower one's attributes. */
static int ensure(const struct walk *w, struct level *lv, struct kago_error **err)
{
    if (lv->made)
        return 0;
    if (lv->up && ensure(w, lv->up, err) < 0)
        return -1;
    cleanup_free char *path = xasprintf("%s%s", w->upper, lv->rel);
    struct stat st;
    if (fstat(lv->mdir, &st) < 0)
        return kago_error_set(err, errno, "stat %s", lv->rel);
    if (mkdir(path, 0700) < 0 && errno != EEXIST)
        return kago_error_set(err, errno, "mkdir %s", path);
    if (chmod(path, st.st_mode & 07777) < 0 || lchown(path, st.st_uid, st.st_gid) < 0)
        return kago_error_set(err, errno, "chmod %s", path);
    lv->made = true;
    return 0;
}

static int copy_data(int in, int out, const char *what, struct kago_error **err)
{
    for (;;) {
        ssize_t n = copy_file_range(in, NULL, out, NULL, 1 << 30, 0);
        if (n == 0)
            return 0;
        if (n > 0)
            continue;
        if (errno != EXDEV && errno != EINVAL && errno != EOPNOTSUPP && errno != ENOSYS)
            return kago_error_set(err, errno, "copy %s", what);
        break;
    }
    char buf[65536];
    for (;;) {
        ssize_t n = read(in, buf, sizeof buf);
        if (n == 0)
            return 0;
        if (n < 0 || write(out, buf, (size_t)n) != n)
            return kago_error_set(err, errno ? errno : EIO, "copy %s", what);
    }
}

/* Copies one non-directory entry of the merged directory mdir to dst with its attributes. */
static int copy_entry(int mdir, const char *name, const struct stat *st, const char *dst,
                      struct kago_error **err)
{
    if (S_ISREG(st->st_mode)) {
        cleanup_close int in = openat(mdir, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
        cleanup_close int out = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (in < 0 || out < 0)
            return kago_error_set(err, errno, "copy %s", dst);
        if (copy_data(in, out, dst, err) < 0)
            return -1;
        struct timespec t[2] = {st->st_atim, st->st_mtim};
        if (fchown(out, st->st_uid, st->st_gid) < 0 || fchmod(out, st->st_mode & 07777) < 0 ||
            futimens(out, t) < 0)
            return kago_error_set(err, errno, "attributes of %s", dst);
        return 0;
    }
    if (S_ISLNK(st->st_mode)) {
        char target[4096];
        ssize_t n = readlinkat(mdir, name, target, sizeof target - 1);
        if (n < 0)
            return kago_error_set(err, errno, "readlink %s", dst);
        target[n] = '\0';
        if (symlink(target, dst) < 0)
            return kago_error_set(err, errno, "symlink %s", dst);
    } else if (S_ISSOCK(st->st_mode)) {
        return 0; /* a socket file is recreated by whoever binds it */
    } else if (mknod(dst, st->st_mode, st->st_rdev) < 0) {
        return kago_error_set(err, errno, "mknod %s", dst);
    }
    struct timespec t[2] = {st->st_atim, st->st_mtim};
    if (lchown(dst, st->st_uid, st->st_gid) < 0 || utimensat(AT_FDCWD, dst, t, AT_SYMLINK_NOFOLLOW) < 0)
        return kago_error_set(err, errno, "attributes of %s", dst);
    return 0;
}

static bool same_file(const struct stat *a, const struct stat *b)
{
    return a->st_ino == b->st_ino && a->st_size == b->st_size && a->st_mode == b->st_mode &&
           a->st_uid == b->st_uid && a->st_gid == b->st_gid && a->st_mtim.tv_sec == b->st_mtim.tv_sec &&
           a->st_mtim.tv_nsec == b->st_mtim.tv_nsec && a->st_ctim.tv_sec == b->st_ctim.tv_sec &&
           a->st_ctim.tv_nsec == b->st_ctim.tv_nsec;
}

static int diff_dir(const struct walk *w, struct level *lv, int ldir, struct kago_error **err);

static int diff_entry(const struct walk *w, struct level *lv, int ldir, const char *name,
                      struct kago_error **err)
{
    cleanup_free char *rel = xasprintf("%s/%s", lv->rel, name);
    cleanup_free char *dst = xasprintf("%s%s", w->upper, rel);
    struct stat ms, ls;
    if (fstatat(lv->mdir, name, &ms, AT_SYMLINK_NOFOLLOW) < 0)
        return errno == ENOENT ? 0 : kago_error_set(err, errno, "stat %s", rel);
    bool have_l = ldir >= 0 && fstatat(ldir, name, &ls, AT_SYMLINK_NOFOLLOW) == 0;
    if (is_mountpoint(w,
                      rel)) { /* CRIU mounts over it: the mount point must exist, its contents are not ours */
        if (have_l && (S_ISDIR(ls.st_mode) == S_ISDIR(ms.st_mode)))
            return 0;
        if (ensure(w, lv, err) < 0)
            return -1;
        int r = S_ISDIR(ms.st_mode) ? mkdir(dst, 0755) : mknod(dst, S_IFREG | 0644, 0);
        return r < 0 && errno != EEXIST ? kago_error_set(err, errno, "mount point %s", dst) : 0;
    }
    if (!S_ISDIR(ms.st_mode)) {
        if (have_l && same_file(&ms, &ls))
            return 0;
        if (ensure(w, lv, err) < 0)
            return -1;
        return copy_entry(lv->mdir, name, &ms, dst, err);
    }
    cleanup_close int sub = openat(lv->mdir, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (sub < 0)
        return kago_error_set(err, errno, "open %s", rel);
    struct level child = {.up = lv, .mdir = sub, .rel = rel};
    cleanup_close int lsub = -1;
    if (have_l && S_ISDIR(ls.st_mode))
        lsub = openat(ldir, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    else if (ensure(w, &child, err) < 0) /* new (or replacing a file): all of it goes to upper/ */
        return -1;
    return diff_dir(w, &child, lsub, err);
}

static int diff_dir(const struct walk *w, struct level *lv, int ldir, struct kago_error **err)
{
    int fd = dup(lv->mdir);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (!d) {
        if (fd >= 0)
            close(fd);
        return kago_error_set(err, errno, "read %s/", lv->rel);
    }
    int ret = 0;
    struct dirent *de;
    while (ret == 0 && (de = readdir(d)))
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
            ret = diff_entry(w, lv, ldir, de->d_name, err);
    closedir(d);
    if (ret < 0 || ldir < 0)
        return ret;
    /* what the lower has and the merged view lacks was deleted: a whiteout hides it */
    fd = dup(ldir);
    d = fd >= 0 ? fdopendir(fd) : NULL;
    if (!d) {
        if (fd >= 0)
            close(fd);
        return kago_error_set(err, errno, "read rootfs %s/", lv->rel);
    }
    while (ret == 0 && (de = readdir(d))) {
        struct stat st;
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..") ||
            fstatat(lv->mdir, de->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 || errno != ENOENT)
            continue;
        cleanup_free char *dst = xasprintf("%s%s/%s", w->upper, lv->rel, de->d_name);
        if (ensure(w, lv, err) < 0 || (mknod(dst, S_IFCHR | 0000, makedev(0, 0)) < 0 &&
                                       kago_error_set(err, errno, "whiteout %s", dst) < 0))
            ret = -1;
    }
    closedir(d);
    return ret;
}

static int save_upper(pid_t pid, const char *rootfs, const char *upper, const struct mnt *m, size_t n,
                      struct kago_error **err)
{
    cleanup_free char *merged = xasprintf("/proc/%d/root", (int)pid);
    cleanup_close int mfd = open(merged, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    cleanup_close int lfd = open(rootfs, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (mfd < 0 || lfd < 0)
        return kago_error_set(err, errno, "open %s", mfd < 0 ? merged : rootfs);
    struct walk w = {.upper = upper, .base = "", .m = m, .nm = n};
    struct level root = {.mdir = mfd, .rel = ""};
    if (ensure(&w, &root, err) < 0 || diff_dir(&w, &root, lfd, err) < 0)
        return kago_error_prefix(err, "writable layer"), -1;
    return 0;
}

/* Copies the tree at from (in the container, at base: its mounts there become empty mount points) to
 * to, owners and modes included. */
static int copy_tree(const char *from, const char *to, const char *base, const struct mnt *m, size_t n,
                     struct kago_error **err)
{
    cleanup_close int fd = open(from, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return kago_error_set(err, errno, "open %s", from);
    struct walk w = {.upper = to, .base = base, .m = m, .nm = n};
    struct level root = {.mdir = fd, .rel = ""};
    return ensure(&w, &root, err) < 0 || diff_dir(&w, &root, -1, err) < 0 ? -1 : 0;
}

/* The tmpfs mounts kago restores itself (see kago_tmpfs): their files go to image/tmpfs/KEY/. */
static int save_tmpfs(pid_t pid, const char *image, json_object *ext, const struct mnt *m, size_t n,
                      struct kago_error **err)
{
    cleanup_free char *dir = xasprintf("%s/tmpfs", image);
    for (size_t i = 0; i < json_object_array_length(ext); i++) {
        json_object *e = json_object_array_get_idx(ext, i), *key, *mp;
        if (!json_object_object_get_ex(e, "tmpfs", NULL))
            continue;
        json_object_object_get_ex(e, "key", &key);
        json_object_object_get_ex(e, "mountpoint", &mp);
        cleanup_free char *from = xasprintf("/proc/%d/root%s", (int)pid, json_object_get_string(mp));
        cleanup_free char *to = xasprintf("%s/%s", dir, json_object_get_string(key));
        if (mkdir(dir, 0700) < 0 && errno != EEXIST)
            return kago_error_set(err, errno, "mkdir %s", dir);
        if (copy_tree(from, to, json_object_get_string(mp), m, n, err) < 0)
            return kago_error_prefix(err, "tmpfs %s", json_object_get_string(mp)), -1;
    }
    return 0;
}

/* ---- checkpoint -------------------------------------------------------------------------------------- */

/* Waits until 127.0.0.1:port accepts connections inside the container's network namespace. */
static int wait_ready(struct kago_container *c, uint16_t port, uint64_t timeout_ms, struct kago_error **err)
{
    cleanup_close int ns = kago_container_open_ns(c, KAGO_NS_NET, err);
    cleanup_close int self = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    if (ns < 0)
        return -1;
    if (self < 0)
        return kago_error_set(err, errno, "open own network namespace");
    unsigned long long deadline = kago__now_us() + (timeout_ms ? timeout_ms : 30000) * 1000ULL;
    struct sockaddr_in a = {
        .sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    for (;;) {
        /* the socket belongs to the namespace it was made in: make it there, connect from anywhere */
        if (setns(ns, CLONE_NEWNET) < 0)
            return kago_error_set(err, errno, "enter the container's network namespace");
        int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (setns(self, CLONE_NEWNET) < 0)
            abort(); /* our own namespace: cannot fail; continuing in the container's would be wrong */
        if (s < 0)
            return kago_error_set(err, errno, "socket");
        int r = connect(s, (struct sockaddr *)&a, sizeof a);
        close(s);
        if (r == 0)
            return 0;
        if (kago__now_us() > deadline)
            return kago_error_set(err, ETIMEDOUT, "waiting for 127.0.0.1:%u to listen", port);
        if (kago_container_status(c) == KAGO_STOPPED)
            return kago_error_set(err, 0, "exited before 127.0.0.1:%u listened", port);
        usleep(10000);
    }
}

/* The empty directories from dir up to top (a path prefix of dir) are removed. */
static void rmdir_up_to(const char *dir, const char *top)
{
    cleanup_free char *p = xstrdup(dir);
    size_t n = strlen(top);
    for (char *s; strlen(p) > n && (rmdir(p) == 0 || errno == ENOENT) && (s = strrchr(p, '/'));)
        *s = '\0';
    if (!strcmp(p, top))
        rmdir(p);
}

/* Empties dir; made (the first directory of its path that we created): removes dir and its empty parents up
 * to that one instead. */
static void discard_image(const char *dir, const char *made)
{
    if (made) {
        kago__rm_rf(dir);
        rmdir_up_to(dir, made);
        return;
    }
    DIR *d = opendir(dir);
    struct dirent *de;
    while (d && (de = readdir(d))) {
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) {
            cleanup_free char *p = xasprintf("%s/%s", dir, de->d_name);
            kago__rm_rf(p);
        }
    }
    if (d)
        closedir(d);
}

/* *made: the first directory of dir's path that did not exist (made with the rest, as runc makes them), or
 * NULL when dir did */
static int prepare_image_dir(const char *dir, char **made, struct kago_error **err)
{
    *made = NULL;
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *de;
        bool empty = true;
        while (empty && (de = readdir(d)))
            empty = !strcmp(de->d_name, ".") || !strcmp(de->d_name, "..");
        closedir(d);
        return empty ? 0 : kago_error_set(err, 0, "image %s: exists and is not empty", dir);
    }
    if (errno != ENOENT)
        return kago_error_set(err, errno, "image %s", dir);
    char *top = xstrdup(dir);
    for (char *s = top + 1; (s = strchr(s, '/')); s++) { /* (the first prefix that is missing) */
        *s = '\0';
        bool there = access(top, F_OK) == 0;
        *s = '/';
        if (!there) {
            *s = '\0';
            break;
        }
    }
    if (kago__mkdir_p(dir, 0700, err) < 0) {
        rmdir_up_to(dir, top); /* (what it made before it failed) */
        free(top);
        return -1;
    }
    *made = top;
    return 0;
}

static const char *network_lock(void)
{
    const char *m = getenv("KAGO_CRIU_NETWORK_LOCK");
    return m && *m ? m : "nftables";
}

static int dump(struct kago_container *c, const char *image, json_object *ext, bool leave_running,
                struct kago_error **err)
{
    cleanup_free char *criu = find_criu(err);
    if (!criu)
        return -1;
    size_t next = json_object_array_length(ext);
    char **argv = xcalloc(16 + next * 2, sizeof *argv);
    size_t n = 0;
    char pid[16];
    snprintf(pid, sizeof pid, "%d", (int)c->pid);
    const char *fixed[] = {criu,
                           "dump",
                           "-t",
                           pid,
                           "-D",
                           image,
                           "-o",
                           "dump.log",
                           "--network-lock",
                           network_lock(),
                           "--manage-cgroups=ignore",
                           "--file-locks"};
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++)
        argv[n++] = (char *)fixed[i];
    if (leave_running)
        argv[n++] = "--leave-running";
    cleanup_free char *nspath = xasprintf("/proc/%d/ns/net", (int)c->pid);
    struct stat ns;
    if (stat(nspath, &ns) < 0) {
        free(argv);
        return kago_error_set(err, errno, "stat %s", nspath);
    }
    cleanup_free char *netext = xasprintf("net[%llu]:" NETNS_KEY, (unsigned long long)ns.st_ino);
    argv[n++] = "--external";
    argv[n++] = netext;
    for (size_t i = 0; i < next; i++) {
        json_object *e = json_object_array_get_idx(ext, i), *mp, *key;
        json_object_object_get_ex(e, "mountpoint", &mp);
        json_object_object_get_ex(e, "key", &key);
        argv[n++] = "--external";
        argv[n++] = xasprintf("mnt[%s]:%s", json_object_get_string(mp), json_object_get_string(key));
    }
    int st = run_criu(argv, -1, NULL, NULL, err);
    for (size_t i = 0; i < next; i++)
        free(argv[n - 2 * next + 2 * i + 1]);
    free(argv);
    if (st < 0)
        return -1;
    if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
        return 0;
    cleanup_free char *log = xasprintf("%s/dump.log", image);
    cleanup_free char *why = criu_log_reason(log, st);
    return kago_error_set(err, 0, "criu dump: %s", why);
}

/* An image container's lower tree is its layers merged: a read-only overlay of them, made in a child's
 * private mount namespace (nothing is mounted on the host), for save_upper to compare the root with. */
static int save_upper_layers(struct kago_container *c, const char *upper, const struct mnt *m, size_t nm,
                             struct kago_error **err)
{
    const char *const *layers = (const char *const *)c->spec.layers;
    if (!layers[1])
        return save_upper(c->pid, layers[0], upper, m, nm, err);
    cleanup_free char *lower = xasprintf("%s/lower", c->dir);
    if (mkdir(lower, 0700) < 0 && errno != EEXIST)
        return kago_error_set(err, errno, "mkdir %s", lower);
    int fd;
    pid_t pid = kago__fork_reporting(&fd, "checkpoint", err);
    if (pid < 0) {
        rmdir(lower);
        return -1;
    }
    if (pid == 0) {
        struct kago_error *e = NULL;
        if (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
            kago_error_set(&e, errno, "private mount namespace");
        else if (kago__overlay_mount(lower, layers, NULL, NULL, &e) == 0 &&
                 save_upper(c->pid, lower, upper, m, nm, &e) == 0 && write(fd, "O", 1) == 1)
            _exit(0);
        kago__child_report(fd, e);
        _exit(1);
    }
    char kind = 0;
    int rc = kago__read_child(fd, &kind, NULL, err);
    close(fd);
    waitpid(pid, NULL, 0);
    rmdir(lower);
    if (rc == 0 && kind != 'O')
        rc = kago_error_set(err, 0, "checkpoint: the writable layer's copy ended without a report");
    return rc;
}

static int checkpoint(struct kago_container *c, const char *image, const struct kago_checkpoint_opts *o,
                      struct kago_error **err)
{
    if (kago_container_status(c) != KAGO_RUNNING)
        return kago_error_set(err, 0, "is %s (only a running container can be checkpointed)",
                              kago_status_name(kago_container_status(c)));
    if (!(c->spec.ns & (1u << KAGO_NS_MOUNT)) || !(c->spec.ns & (1u << KAGO_NS_PID)))
        return kago_error_set(err, 0, "needs its own mount and pid namespaces to be checkpointed");
    if (o->wait_port && wait_ready(c, o->wait_port, o->wait_timeout_ms, err) < 0)
        return -1;
    cleanup_free char *mi = xasprintf("/proc/%d/mountinfo", (int)c->pid);
    struct mnt *m = NULL;
    size_t nm = 0;
    if (read_mounts(mi, &m, &nm, err) < 0)
        return -1;
    json_object *meta = json_object_new_object(), *ext = json_object_new_array();
    json_object_object_add(meta, "version", json_object_new_int(1));
    json_object_object_add(meta, "source", json_object_new_string(c->spec.name));
    json_object_object_add(meta, "cgroup", json_object_new_string(c->cg.path));
    json_object_object_add(meta, "spec", kago__spec_to_json(&c->spec));
    json_object_object_add(meta, "externals", ext);
    cleanup_free char *upper = xasprintf("%s/upper", image);
    int ret = find_externals(m, nm, c->spec.ns & (1u << KAGO_NS_USER), ext, err);
    if (ret == 0)
        ret = save_tmpfs(c->pid, image, ext, m, nm, err);
    if (ret == 0 && c->spec.overlay)
        ret = c->spec.layers ? save_upper_layers(c, upper, m, nm, err)
                             : save_upper(c->pid, c->spec.rootfs, upper, m, nm, err);
    mounts_free(m, nm);
    cleanup_free char *metafile = xasprintf("%s/" IMAGE_META, image);
    if (ret == 0 && json_object_to_file_ext(metafile, meta, JSON_C_TO_STRING_PRETTY) < 0)
        ret = kago_error_set(err, errno, "write %s", metafile);
    if (ret == 0)
        ret = dump(c, image, ext, o->leave_running, err);
    json_object_put(meta);
    return ret;
}

int kago_container_checkpoint(struct kago_container *c, const char *image_dir,
                              const struct kago_checkpoint_opts *opts, struct kago_error **err)
{
    struct kago_checkpoint_opts none = {0};
    cleanup_free char *made = NULL;
    if (!opts)
        opts = &none;
    /* CRIU would restore its rootfs and binds as plain mounts, without their idmapping (docs/userns.md) */
    if (c->spec.userns == KAGO_USERNS_AUTO)
        return kago_error_set(err, ENOTSUP,
                              "container %s: checkpoint of a container in a user namespace of kago's pool is "
                              "not supported (start it with --userns host)",
                              c->spec.name);
    if (strpbrk(image_dir, ",:")) {
        kago_error_set(err, 0, "image %s: a ',' or ':' in its path cannot be an overlay layer", image_dir);
    } else if (prepare_image_dir(image_dir, &made, err) == 0) {
        cleanup_free char *abs = realpath(image_dir, NULL);
        if (checkpoint(c, abs ? abs : image_dir, opts, err) == 0)
            return 0;
        discard_image(image_dir, made);
    }
    kago_error_prefix(err, "checkpoint %s", c->spec.name);
    return -1;
}

/* ---- restore ---------------------------------------------------------------------------------------- */

struct image {
    const char *dir; /* absolute */
    json_object *meta;
    json_object *ext;   /* [{key, mountpoint, source | tmpfs}] (owned by meta) */
    bool lazy_pages;    /* restore memory on first touch (see start_lazy_pages) */
    const char *cgroup; /* the checkpointed container's cgroup path ("kago/NAME"; owned by meta), or NULL */
};

/* A bind source in the checkpointed container's own cgroup (its read-only /sys/fs/cgroup): the restored
 * container binds its new cgroup there instead. Returns where in src the old path begins, or NULL. */
static const char *in_old_cgroup(const char *src, const char *old)
{
    if (!old || !*old || strncmp(src, "/sys/fs/cgroup/", 15) != 0)
        return NULL;
    size_t n = strlen(old);
    for (const char *p = strstr(src, old); p; p = strstr(p + 1, old))
        if (p[-1] == '/' && (p[n] == '\0' || p[n] == '/'))
            return p;
    return NULL;
}

static int image_open(const char *dir, struct image *im, struct kago_spec *spec, struct kago_error **err)
{
    cleanup_free char *meta = xasprintf("%s/" IMAGE_META, dir);
    cleanup_free char *pstree = xasprintf("%s/pstree.img", dir);
    if (access(dir, F_OK) < 0)
        return kago_error_set(err, errno, "image %s", dir);
    im->meta = json_object_from_file(meta);
    json_object *s = NULL;
    if (!im->meta || !json_object_object_get_ex(im->meta, "spec", &s) ||
        !json_object_object_get_ex(im->meta, "externals", &im->ext) ||
        !json_object_is_type(im->ext, json_type_array))
        return kago_error_set(err, 0, "image %s: not a kago checkpoint (%s missing or unreadable)", dir,
                              IMAGE_META);
    if (access(pstree, R_OK) < 0)
        return kago_error_set(err, errno, "image %s: not a CRIU image (pstree.img)", dir);
    if (kago__spec_from_json(s, spec, err) < 0)
        return kago_error_prefix(err, "image %s", dir), -1;
    json_object *cg = NULL;
    if (json_object_object_get_ex(im->meta, "cgroup", &cg))
        im->cgroup = json_object_get_string(cg);
    for (size_t i = 0; i < json_object_array_length(im->ext); i++) {
        json_object *e = json_object_array_get_idx(im->ext, i), *src = NULL, *key = NULL;
        if (json_object_object_get_ex(e, "tmpfs", NULL) && json_object_object_get_ex(e, "key", &key)) {
            cleanup_free char *saved = xasprintf("%s/tmpfs/%s", dir, json_object_get_string(key));
            if (access(saved, F_OK) < 0)
                return kago_error_set(err, errno, "image %s: tmpfs %s", dir, saved);
            continue;
        }
        json_object_object_get_ex(e, "source", &src);
        if (src && in_old_cgroup(json_object_get_string(src), im->cgroup))
            continue; /* (remapped to the new cgroup: restore_argv) */
        if (!src || access(json_object_get_string(src), F_OK) < 0)
            return kago_error_set(err, src ? errno : 0, "image %s: bind source %s", dir,
                                  src ? json_object_get_string(src) : "(none)");
    }
    im->dir = dir;
    return 0;
}

/* Puts the network namespace for the restored tree on NETNS_FD: a fresh one with loopback up when the
 * container had its own, else ours. criu itself stays in ours. */
static int restore_netns(const struct kago_spec *spec, struct kago_error **err)
{
    cleanup_close int self = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
    if (self < 0)
        return kago_error_set(err, errno, "open own network namespace");
    cleanup_close int fd = -1;
    if (spec->ns & (1u << KAGO_NS_NET)) {
        if (unshare(CLONE_NEWNET) < 0)
            return kago_error_set(err, errno, "new network namespace");
        if (kago__loopback_up(err) < 0)
            return -1;
        fd = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
        if (fd < 0 || setns(self, CLONE_NEWNET) < 0)
            return kago_error_set(err, errno, "network namespace");
    } else {
        fd = steal_fd(&self);
    }
    if (fd == NETNS_FD) { /* criu must inherit it */
        if (fcntl(steal_fd(&fd), F_SETFD, 0) < 0)
            return kago_error_set(err, errno, "network namespace fd");
    } else if (dup2(fd, NETNS_FD) < 0) { /* dup2 clears close-on-exec */
        return kago_error_set(err, errno, "dup2 network namespace");
    }
    return 0;
}

/* The mount flags of a mountinfo option list ("rw,nosuid,relatime"). */
static unsigned long mount_flags(const char *opts)
{
    static const struct {
        const char *name;
        unsigned long flag;
    } known[] = {{"ro", MS_RDONLY},         {"nosuid", MS_NOSUID},          {"nodev", MS_NODEV},
                 {"noexec", MS_NOEXEC},     {"noatime", MS_NOATIME},        {"nodiratime", MS_NODIRATIME},
                 {"relatime", MS_RELATIME}, {"strictatime", MS_STRICTATIME}};
    unsigned long flags = 0;
    cleanup_free char *copy = xstrdup(opts);
    char *save = NULL;
    for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save))
        for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
            if (!strcmp(t, known[i].name))
                flags |= known[i].flag;
    return flags;
}

/* The superblock's options without ro/rw (the flags say that). */
static char *tmpfs_options(const char *super)
{
    cleanup_free char *copy = xstrdup(super);
    char *out = xstrdup(""), *save = NULL;
    for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (!strcmp(t, "ro") || !strcmp(t, "rw"))
            continue;
        char *next = xasprintf("%s%s%s", out, *out ? "," : "", t);
        free(out);
        out = next;
    }
    return out;
}

/* A fresh tmpfs for each one kago saved (scratch/KEY), filled from image/tmpfs/KEY and mounted with the
 * dumped flags; criu binds it in place as an external mount (a bind keeps the flags). */
static int restore_tmpfs(const struct image *im, const char *scratch, struct kago_error **err)
{
    for (size_t i = 0; i < json_object_array_length(im->ext); i++) {
        json_object *e = json_object_array_get_idx(im->ext, i), *t, *key, *fl, *op;
        if (!json_object_object_get_ex(e, "tmpfs", &t))
            continue;
        json_object_object_get_ex(e, "key", &key);
        json_object_object_get_ex(t, "flags", &fl);
        json_object_object_get_ex(t, "options", &op);
        const char *k = json_object_get_string(key);
        unsigned long flags = mount_flags(json_object_get_string(fl));
        cleanup_free char *opts = tmpfs_options(json_object_get_string(op));
        cleanup_free char *dir = xasprintf("%s/%s", scratch, k);
        cleanup_free char *saved = xasprintf("%s/tmpfs/%s", im->dir, k);
        if (mkdir(dir, 0755) < 0)
            return kago_error_set(err, errno, "mkdir %s", dir);
        if (mount("tmpfs", dir, "tmpfs", flags & ~MS_RDONLY, opts) < 0)
            return kago_error_set(err, errno, "mount tmpfs (%s) on %s", opts, dir);
        if (copy_tree(saved, dir, "", NULL, 0, err) < 0)
            return -1;
        if ((flags & MS_RDONLY) && mount(NULL, dir, NULL, MS_REMOUNT | flags, opts) < 0)
            return kago_error_set(err, errno, "remount %s read-only", dir);
    }
    return 0;
}

/* A read-only bind of a host device (/dev's nodes, the masks over /proc files: linux.c binds them
 * read-only, so that a container cannot chmod the host's nodes): criu binds the source in place without
 * the flags, so it gets scratch/KEY instead, a bind of the source made read-only here (a bind keeps the
 * flags). */
static bool ro_device(json_object *e)
{
    json_object *src, *fl;
    struct stat st;
    return json_object_object_get_ex(e, "source", &src) && json_object_object_get_ex(e, "flags", &fl) &&
           (mount_flags(json_object_get_string(fl)) & MS_RDONLY) &&
           stat(json_object_get_string(src), &st) == 0 && S_ISCHR(st.st_mode);
}

static int restore_ro_devices(const struct image *im, const char *scratch, struct kago_error **err)
{
    for (size_t i = 0; i < json_object_array_length(im->ext); i++) {
        json_object *e = json_object_array_get_idx(im->ext, i), *key, *src, *fl;
        if (!ro_device(e))
            continue;
        json_object_object_get_ex(e, "key", &key);
        json_object_object_get_ex(e, "source", &src);
        json_object_object_get_ex(e, "flags", &fl);
        cleanup_free char *at = xasprintf("%s/%s", scratch, json_object_get_string(key));
        const char *from = json_object_get_string(src);
        int fd = open(at, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600);
        if (fd < 0)
            return kago_error_set(err, errno, "create %s", at);
        close(fd);
        if (mount(from, at, NULL, MS_BIND, NULL) < 0 ||
            mount(NULL, at, NULL, MS_REMOUNT | MS_BIND | mount_flags(json_object_get_string(fl)), NULL) < 0)
            return kago_error_set(err, errno, "bind %s read-only on %s", from, at);
    }
    return 0;
}

struct restore_prep {
    struct kago_container *c;
    const struct image *im;
    const char *scratch; /* dir/ovl */
    int lazy_ready;      /* the lazy-pages daemon's status pipe, or -1 */
};

/* --lazy-pages: criu restore maps the memory but leaves the pages to a `criu lazy-pages` daemon, which
 * copies each on its first touch (userfaultfd) and the rest in the background, then exits. The restored
 * app runs before its memory is back: restore time stops growing with the app's memory. The daemon is
 * started first (its start-up overlaps ours) in its own session, orphaned at once so that whoever reaps
 * orphans reaps it; criu restore must not start before it listens (it connects once, early), so the
 * restore's child waits for its status byte. The daemon must outlive the transfer: killed early, the
 * pages it had not copied yet would read as zeros. */
static int start_lazy_pages(const char *criu, const struct image *im, const char *dir, int *ready, int *pidfd,
                            struct kago_error **err)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0)
        return kago_error_set(err, errno, "pipe");
    pid_t mid = fork();
    if (mid == 0) {
        pid_t d = fork();
        if (d == 0) {
            int null = open("/dev/null", O_RDWR | O_CLOEXEC);
            if (setsid() < 0 || null < 0 || dup2(null, 0) < 0 || dup2(null, 1) < 0 || dup2(null, 2) < 0 ||
                (p[1] == 3 ? fcntl(3, F_SETFD, 0) : dup2(p[1], 3)) < 0) /* dup2 clears close-on-exec */
                _exit(126);
            char *argv[] = {(char *)criu,  "lazy-pages", "-D", (char *)im->dir,
                            "-W",          (char *)dir,  "-o", "lazy-pages.log",
                            "--status-fd", "3",          NULL};
            execv(criu, argv);
            _exit(127);
        }
        _exit(d < 0 || write(p[1], &d, sizeof d) != sizeof d ? 1 : 0);
    }
    close(p[1]);
    int st = 0;
    pid_t d = 0;
    while (mid > 0 && waitpid(mid, &st, 0) < 0 && errno == EINTR)
        ;
    if (mid < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0 || read(p[0], &d, sizeof d) != sizeof d) {
        close(p[0]);
        return kago_error_set(err, mid < 0 ? errno : 0, "start criu lazy-pages");
    }
    *pidfd = (int)syscall(SYS_pidfd_open, d, 0); /* < 0: it has already ended, which the pipe tells */
    *ready = p[0];
    return 0;
}

static void stop_lazy_pages(int pidfd)
{
    if (pidfd >= 0) /* it would wait for a criu restore that is not coming */
        syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, NULL, 0);
}

/* In criu restore's child: waits until the lazy-pages daemon listens (at most a minute). */
static int wait_lazy_pages(int ready, const char *dir, struct kago_error **err)
{
    struct pollfd pfd = {.fd = ready, .events = POLLIN};
    int n;
    while ((n = poll(&pfd, 1, 60000)) < 0 && errno == EINTR)
        ;
    char b;
    if (n > 0 && read(ready, &b, 1) == 1)
        return 0;
    cleanup_free char *log = xasprintf("%s/lazy-pages.log", dir);
    cleanup_free char *why = n == 0 ? xstrdup("not ready after 60 s") : criu_log_reason(log, 0);
    return kago_error_set(err, 0, "criu lazy-pages: %s", why);
}

/* In criu's process, before exec: a private mount namespace holding the fresh writable layer (tmpfs, as
 * linux.c makes it) over the image's upper/ and the rootfs, then into the new cgroup, so the restored tree
 * starts out there. Nothing of this is visible on the host; the container's own namespace keeps it. */
static int restore_prep_fn(void *arg, struct kago_error **err)
{
    struct restore_prep *p = arg;
    const struct kago_spec *spec = &p->c->spec;
    if (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
        return kago_error_set(err, errno, "private mount namespace for criu");
    if (p->lazy_ready >= 0 && wait_lazy_pages(p->lazy_ready, p->c->dir, err) < 0)
        return -1;
    if (mount("kago-upper", p->scratch, "tmpfs", MS_NODEV | MS_NOSUID, "mode=755") < 0)
        return kago_error_set(err, errno, "mount tmpfs on %s", p->scratch);
    if (restore_tmpfs(p->im, p->scratch, err) < 0 || restore_ro_devices(p->im, p->scratch, err) < 0)
        return -1;
    if (spec->overlay) {
        cleanup_free char *upper = xasprintf("%s/upper", p->scratch);
        cleanup_free char *work = xasprintf("%s/work", p->scratch);
        cleanup_free char *merged = xasprintf("%s/merged", p->scratch);
        if (mkdir(upper, 0755) < 0 || mkdir(work, 0755) < 0 || mkdir(merged, 0755) < 0)
            return kago_error_set(err, errno, "overlay: mkdir in %s", p->scratch);
        /* the saved writable layer read-only, over the image's layers (or the rootfs) */
        size_t n = 0;
        while (spec->layers && spec->layers[n])
            n++;
        cleanup_free const char **lowers = xcalloc(n + 3, sizeof *lowers);
        cleanup_free char *saved = xasprintf("%s/upper", p->im->dir);
        lowers[0] = saved;
        for (size_t i = 0; i < n; i++)
            lowers[1 + i] = spec->layers[i];
        if (!n)
            lowers[1] = spec->rootfs;
        if (kago__overlay_mount(merged, lowers, upper, work, err) < 0)
            return -1;
    }
    if (restore_netns(spec, err) < 0)
        return -1;
    return p->c->cg.ops->enter(&p->c->cg, 0, err);
}

static char **restore_argv(const char *criu, const struct image *im, const char *dir, const char *scratch,
                           const char *root, const char *cgroup)
{
    size_t next = json_object_array_length(im->ext), n = 0;
    char **argv = xcalloc(24 + 2 * next, sizeof *argv);
    const char *fixed[] = {criu,
                           "restore",
                           "-D",
                           im->dir,
                           "-W",
                           dir,
                           "-o",
                           "restore.log",
                           "--root",
                           root,
                           "--restore-detached",
                           "--network-lock",
                           network_lock(),
                           "--manage-cgroups=ignore",
                           "--file-locks"};
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++)
        argv[n++] = xstrdup(fixed[i]);
    argv[n++] = xstrdup("--inherit-fd");
    argv[n++] = xasprintf("fd[%d]:" NETNS_KEY, NETNS_FD);
    argv[n++] = xstrdup("--pidfile");
    argv[n++] = xasprintf("%s/restore.pid", dir);
    if (im->lazy_pages)
        argv[n++] = xstrdup("--lazy-pages");
    for (size_t i = 0; i < next; i++) {
        json_object *e = json_object_array_get_idx(im->ext, i), *key = NULL, *src = NULL;
        json_object_object_get_ex(e, "key", &key);
        argv[n++] = xstrdup("--external");
        if (json_object_object_get_ex(e, "tmpfs", NULL) || ro_device(e)) {
            argv[n++] =
                xasprintf("mnt[%s]:%s/%s", json_object_get_string(key), scratch, json_object_get_string(key));
            continue;
        }
        json_object_object_get_ex(e, "source", &src);
        const char *from = json_object_get_string(src), *old = in_old_cgroup(from, im->cgroup);
        if (old) /* the new container's cgroup in place of the old one's */
            argv[n++] = xasprintf("mnt[%s]:%.*s%s%s", json_object_get_string(key), (int)(old - from), from,
                                  cgroup, old + strlen(im->cgroup));
        else
            argv[n++] = xasprintf("mnt[%s]:%s", json_object_get_string(key), from);
    }
    return argv;
}

/* The restored init (criu's pid file) becomes the container's process, recorded in its state file. */
static int record_restored(struct kago_container *c, struct kago_error **err)
{
    cleanup_free char *pidfile = xasprintf("%s/restore.pid", c->dir);
    cleanup_free char *pid = kago__read_file(pidfile, NULL, err);
    if (!pid)
        return -1;
    if ((c->pid = atoi(pid)) <= 0)
        return kago_error_set(err, 0, "criu restore: bad pid file %s", pidfile);
    c->starttime = kago__proc_starttime(c->pid, NULL);
    c->created = (long long)time(NULL);
    c->pidfd = (int)syscall(SYS_pidfd_open, c->pid, 0);
    if (c->pidfd < 0)
        return kago_error_set(err, errno, "pidfd of the restored init %d", (int)c->pid);
    return kago__state_write(c, err);
}

/* criu restore, then the container's record. The caller is (or becomes) the subreaper that adopts it. */
static int restore_here(struct kago_container *c, const struct image *im, struct kago_error **err)
{
    cleanup_free char *criu = find_criu(err);
    if (!criu)
        return -1;
    /* an image's layers stay in its store while the restored container is made and recorded */
    cleanup_close int pin = c->spec.layers ? kago__image_pin(&c->spec, c->root, err) : -1;
    if (c->spec.layers && pin < 0)
        return -1;
    /* before we are a subreaper: the orphaned daemon is not ours to reap */
    cleanup_close int lazy_ready = -1, lazy_pidfd = -1;
    if (im->lazy_pages && start_lazy_pages(criu, im, c->dir, &lazy_ready, &lazy_pidfd, err) < 0)
        return -1;
    cleanup_free char *scratch = xasprintf("%s/ovl", c->dir);
    cleanup_free char *merged = xasprintf("%s/merged", scratch);
    if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) < 0)
        return stop_lazy_pages(lazy_pidfd), kago_error_set(err, errno, "become a child subreaper");
    if (mkdir(scratch, 0700) < 0)
        return stop_lazy_pages(lazy_pidfd), kago_error_set(err, errno, "mkdir %s", scratch);
    kago__trace("restore: begin");
    if (c->cg.ops->create(&c->cg, &c->spec.limits, err) < 0)
        return stop_lazy_pages(lazy_pidfd), -1;
    int ret = -1;
    if (c->cg.ops->apply(&c->cg, &c->spec.limits, err) < 0 ||
        c->cg.ops->devices(&c->cg, c->spec.mknod_any, err) < 0)
        goto out;
    kago__trace("restore: cgroup made");
    struct restore_prep prep = {.c = c, .im = im, .scratch = scratch, .lazy_ready = lazy_ready};
    char **argv =
        restore_argv(criu, im, c->dir, scratch, c->spec.overlay ? merged : c->spec.rootfs, c->cg.path);
    kago__trace("restore: criu");
    int st = run_criu(argv, -1, restore_prep_fn, &prep, err);
    kago__strv_free(argv);
    kago__trace("restore: criu done");
    if (st < 0)
        goto out;
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        cleanup_free char *log = xasprintf("%s/restore.log", c->dir);
        cleanup_free char *why = criu_log_reason(log, st);
        kago_error_set(err, 0, "criu restore: %s", why);
        goto out;
    }
    ret = record_restored(c, err);
    kago__trace("restore: recorded");
out:
    if (ret < 0) {
        stop_lazy_pages(lazy_pidfd);
        c->cg.ops->kill_all(&c->cg, SIGKILL, NULL);
        if (c->pid > 0)
            waitpid(c->pid, NULL, 0);
        c->cg.ops->destroy(&c->cg, NULL);
        if (c->pidfd >= 0)
            close(c->pidfd);
        c->pidfd = -1;
    }
    return ret;
}

/* --detach: a shim (its own session, a subreaper) runs the restore, adopts the restored init and records
 * its exit status, as kago run --detach does for a created container. */
static int make_restored(struct kago_container *c, void *arg, struct kago_error **err)
{
    int null = open("/dev/null", O_RDWR | O_CLOEXEC);
    for (int i = 0; i < 3; i++)
        dup2(null, i);
    if (null > 2)
        close(null);
    return restore_here(c, arg, err);
}

static int restore_detached(struct kago_container *c, const struct image *im, struct kago_error **err)
{
    return kago__detach(c, make_restored, (void *)im, err);
}

static char *new_name(void)
{
    unsigned char b[4];
    if (getentropy(b, sizeof b) < 0)
        abort();
    return xasprintf("k%02x%02x%02x%02x", b[0], b[1], b[2], b[3]);
}

int kago_container_restore(const char *root, const char *image_dir, const struct kago_restore_opts *opts,
                           struct kago_container **out, struct kago_error **err)
{
    struct kago_restore_opts none = {0};
    if (!opts)
        opts = &none;
    cleanup_free char *name = opts->name ? xstrdup(opts->name) : new_name();
    if (!*name || strchr(name, '/') || name[0] == '.')
        return kago_error_set(err, 0, "restore: bad container name \"%s\"", name);
    root = root ? root : KAGO_DEFAULT_ROOT;
    kago__trace("kago_container_restore");
    struct kago_container *c = kago__container_new(root, name);
    cleanup_free char *abs = realpath(image_dir, NULL);
    struct image im = {0};
    int ret = abs ? image_open(abs, &im, &c->spec, err) : kago_error_set(err, errno, "image %s", image_dir);
    im.lazy_pages = opts->lazy_pages;
    if (ret == 0) {
        free(c->spec.name);
        c->spec.name = xstrdup(name);
        ret = kago__cgroup_init(&c->cg, NULL, name, c->spec.cgroup_path, err);
    }
    if (ret == 0 && mkdir(root, 0711) < 0 && errno != EEXIST)
        ret = kago__mkdir_p(root, 0711, err);
    if (ret == 0 && mkdir(c->dir, 0700) < 0)
        ret = errno == EEXIST ? kago_error_set(err, 0, "name already in use")
                              : kago_error_set(err, errno, "mkdir %s", c->dir);
    else if (ret == 0) {
        ret = opts->detach ? restore_detached(c, &im, err) : restore_here(c, &im, err);
        if (ret < 0)
            kago__rm_rf(c->dir);
    }
    json_object_put(im.meta);
    if (ret < 0)
        kago_error_prefix(err, "restore %s", name);
    return kago__container_hand_out(c, ret, opts->detach, out, err);
}
