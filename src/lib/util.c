/* Allocation that aborts on exhaustion, and the small file helpers every module needs. */
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <stdarg.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>

#include <kago/spec.h>

#include "util.h"

void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        abort();
    return p;
}

void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p)
        abort();
    return p;
}

void *xrealloc(void *p, size_t n)
{
    p = realloc(p, n ? n : 1);
    if (!p)
        abort();
    return p;
}

char *xstrdup(const char *s)
{
    if (!s)
        return NULL;
    char *p = strdup(s);
    if (!p)
        abort();
    return p;
}

char *xvasprintf(const char *fmt, va_list ap)
{
    char *s = NULL;
    if (vasprintf(&s, fmt, ap) < 0)
        abort();
    return s;
}

char *xasprintf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = xvasprintf(fmt, ap);
    va_end(ap);
    return s;
}

static int write_all(int fd, const char *s, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, s, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        s += n;
        len -= (size_t)n;
    }
    return 0;
}

int kago__write_fileat(int dirfd, const char *name, const char *s, struct kago_error **err)
{
    cleanup_close int fd = openat(dirfd, name, O_WRONLY | O_TRUNC | O_CLOEXEC);
    if (fd < 0)
        return kago_error_set(err, errno, "open %s", name);
    if (write_all(fd, s, strlen(s)) < 0)
        return kago_error_set(err, errno, "write %s \"%s\"", name, s);
    return 0;
}

int kago__write_file(const char *path, const char *s, struct kago_error **err)
{
    return kago__write_fileat(AT_FDCWD, path, s, err);
}

char *kago__read_fileat(int dirfd, const char *name, struct kago_error **err)
{
    cleanup_close int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        kago_error_set(err, errno, "open %s", name);
        return NULL;
    }
    size_t cap = 4096, len = 0;
    char *buf = xmalloc(cap);
    for (;;) {
        if (len + 1 >= cap)
            buf = xrealloc(buf, cap *= 2);
        ssize_t n = read(fd, buf + len, cap - len - 1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            kago_error_set(err, errno, "read %s", name);
            free(buf);
            return NULL;
        }
        if (n == 0)
            break;
        len += (size_t)n;
    }
    buf[len] = '\0';
    return buf;
}

char *kago__read_file(const char *path, size_t *len, struct kago_error **err)
{
    char *s = kago__read_fileat(AT_FDCWD, path, err);
    if (s && len)
        *len = strlen(s);
    return s;
}

int kago__mkdir_p(const char *path, mode_t mode, struct kago_error **err)
{
    cleanup_free char *p = xstrdup(path);
    for (char *s = p + 1; *s; s++) {
        if (*s != '/')
            continue;
        *s = '\0';
        if (mkdir(p, mode) < 0 && errno != EEXIST)
            return kago_error_set(err, errno, "mkdir %s", p);
        *s = '/';
    }
    if (mkdir(p, mode) < 0 && errno != EEXIST)
        return kago_error_set(err, errno, "mkdir %s", p);
    return 0;
}

void kago__strv_free(char **v)
{
    for (size_t i = 0; v && v[i]; i++)
        free(v[i]);
    free(v);
}

/* One directory of rm_rf_at's walk: its name in its parent, its identity (to check that ".." leads back to
 * it), and the names of its subdirectories still to remove. */
struct rm_level {
    char *name;
    dev_t dev;
    ino_t ino;
    char **subdirs;
    size_t nsub, cap;
};

/* Unlinks what d holds that is not a directory and lists its subdirectories into lv. Returns 0, or -1 when
 * something could not be removed (a mount point is never entered). */
static int rm_list(DIR *d, dev_t dev, struct rm_level *lv)
{
    int ret = 0;
    struct dirent *de;
    struct stat st;
    while ((errno = 0, de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
            if (errno != ENOENT)
                ret = -1;
        } else if (!S_ISDIR(st.st_mode)) {
            if (unlinkat(dirfd(d), de->d_name, 0) < 0 && errno != ENOENT)
                ret = -1;
        } else if (st.st_dev != dev) { /* a mount point: never descend into someone else's filesystem */
            ret = -1;
        } else {
            if (lv->nsub == lv->cap)
                lv->subdirs = xrealloc(lv->subdirs, (lv->cap = lv->cap ? lv->cap * 2 : 8) * sizeof(char *));
            lv->subdirs[lv->nsub++] = xstrdup(de->d_name);
        }
    }
    return errno ? -1 : ret;
}

/* Opens the directory name below at as a new level of the walk (taking ownership of name). NULL if it
 * cannot be opened or is not on dev. */
static DIR *rm_enter(int at, char *name, dev_t dev, struct rm_level **levels, size_t *n, size_t *cap)
{
    struct stat st;
    int fd = openat(at, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    int e = fd < 0 || fstat(fd, &st) < 0 ? errno : st.st_dev != dev ? EXDEV : 0;
    DIR *d = e ? NULL : fdopendir(fd);
    if (!d) {
        e = e ? e : errno;
        if (fd >= 0)
            close(fd);
        free(name);
        errno = e;
        return NULL;
    }
    if (*n == *cap)
        *levels = xrealloc(*levels, (*cap = *cap ? *cap * 2 : 16) * sizeof(**levels));
    (*levels)[(*n)++] = (struct rm_level){.name = name, .dev = st.st_dev, .ino = st.st_ino};
    return d;
}

/* Goes up from d to the level below the last, checking that ".." is that directory (the tree was not moved
 * meanwhile), and removes the emptied directory. NULL if ".." is not where the walk came from. */
static DIR *rm_leave(DIR *d, struct rm_level *levels, size_t *n, int *ret)
{
    struct rm_level *lv = &levels[*n - 1], *up = &levels[*n - 2];
    struct stat st;
    int fd = openat(dirfd(d), "..", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    DIR *pd =
        fd >= 0 && fstat(fd, &st) == 0 && st.st_dev == up->dev && st.st_ino == up->ino ? fdopendir(fd) : NULL;
    if (!pd) {
        if (fd >= 0)
            close(fd);
        return NULL;
    }
    closedir(d);
    if (unlinkat(dirfd(pd), lv->name, AT_REMOVEDIR) < 0 && errno != ENOENT)
        *ret = -1;
    free(lv->name);
    free(lv->subdirs);
    (*n)--;
    return pd;
}

/* rm -rf of name below at with a bounded number of descriptors whatever the depth: the walk holds the
 * directory it empties, remembers the names on the way down, and goes up through "..". Returns 0, or -1
 * when something could not be removed (what could be is removed all the same). */
static int rm_rf_at(int at, const char *name, dev_t dev)
{
    struct stat st;
    if (fstatat(at, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
        return errno == ENOENT ? 0 : -1;
    if (!S_ISDIR(st.st_mode))
        return unlinkat(at, name, 0) < 0 && errno != ENOENT ? -1 : 0;
    if (st.st_dev != dev) /* a mount point: never descend into someone else's filesystem */
        return -1;
    struct rm_level *levels = NULL;
    size_t n = 0, cap = 0;
    DIR *d = rm_enter(at, xstrdup(name), dev, &levels, &n, &cap);
    if (!d)
        return -1;
    int ret = rm_list(d, dev, &levels[0]);
    bool lost = false;
    while (!lost) {
        struct rm_level *lv = &levels[n - 1];
        if (lv->nsub > 0) {
            DIR *cd = rm_enter(dirfd(d), lv->subdirs[--lv->nsub], dev, &levels, &n, &cap);
            if (!cd) {
                if (errno != ENOENT)
                    ret = -1;
                continue;
            }
            closedir(d);
            d = cd;
            if (rm_list(d, dev, &levels[n - 1]) < 0)
                ret = -1;
        } else if (n > 1) {
            DIR *pd = rm_leave(d, levels, &n, &ret);
            if (pd)
                d = pd;
            else
                lost = true;
        } else {
            break;
        }
    }
    closedir(d);
    for (size_t i = 0; i < n; i++) {
        for (size_t j = 0; j < levels[i].nsub; j++)
            free(levels[i].subdirs[j]);
        free(levels[i].subdirs);
        free(levels[i].name);
    }
    free(levels);
    if (lost)
        return -1;
    if (unlinkat(at, name, AT_REMOVEDIR) < 0 && errno != ENOENT)
        ret = -1;
    return ret;
}

int kago__open_regular(int dirfd, const char *path, int flags, uint64_t resolve, struct stat *st)
{
    struct open_how how = {.flags = (uint64_t)(O_PATH | O_CLOEXEC | flags), .resolve = resolve};
    *st = (struct stat){0};
    cleanup_close int fd = (int)syscall(SYS_openat2, dirfd, path, &how, sizeof how);
    if (fd < 0)
        return -1;
    if (fstat(fd, st) < 0) {
        *st = (struct stat){0};
        return -1;
    }
    if (!S_ISREG(st->st_mode))
        return errno = EINVAL, -1;
    char proc[40]; /* the same inode again, for reading: no other path can have been swapped in */
    snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
    return open(proc, O_RDONLY | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
}

/* The longest other bind source of spec that holds mount i's source (by the paths as configured), or -1. */
static ssize_t outer_source(const struct kago_spec *spec, size_t i)
{
    const char *src = spec->mounts[i].src;
    ssize_t best = -1;
    size_t best_len = 0;
    for (size_t j = 0; j < spec->nmounts; j++) {
        const char *o = spec->mounts[j].src;
        if (j == i || spec->mounts[j].kind != KAGO_MOUNT_BIND || !o)
            continue;
        size_t n = strlen(o);
        while (n > 1 && o[n - 1] == '/')
            n--;
        if (n > best_len && !strncmp(src, o, n) && src[n] == '/' && src[n + 1] && strcmp(src, o)) {
            best = (ssize_t)j;
            best_len = n;
        }
    }
    return best;
}

static int open_source(const struct kago_spec *spec, size_t i, unsigned depth, struct kago_error **err)
{
    const char *src = spec->mounts[i].src;
    ssize_t j = depth < spec->nmounts ? outer_source(spec, i) : -1;
    if (j < 0) {
        int fd = open(src, O_PATH | O_CLOEXEC);
        return fd < 0 ? kago_error_set(err, errno, "bind %s", src) : fd;
    }
    cleanup_close int outer = open_source(spec, (size_t)j, depth + 1, err);
    if (outer < 0)
        return -1;
    const char *rest = src + strlen(spec->mounts[j].src);
    while (*rest == '/')
        rest++;
    struct open_how how = {.flags = O_PATH | O_CLOEXEC,
                           .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS};
    int fd = (int)syscall(SYS_openat2, outer, rest, &how, sizeof how);
    if (fd < 0 && (errno == ELOOP || errno == EXDEV))
        return kago_error_set(
            err, 0,
            "bind %s: a symlink under %s, another bind's source: a container that can write "
            "there may have made it, so it is not followed",
            src, spec->mounts[j].src);
    return fd < 0 ? kago_error_set(err, errno, "bind %s", src) : fd;
}

int kago__open_bind_source(const struct kago_spec *spec, size_t i, struct kago_error **err)
{
    return open_source(spec, i, 0, err);
}

const char *kago__file_kind(mode_t mode)
{
    switch (mode & S_IFMT) {
    case S_IFREG:
        return "a regular file";
    case S_IFDIR:
        return "a directory";
    case S_IFLNK:
        return "a symlink";
    case S_IFIFO:
        return "a FIFO";
    case S_IFCHR:
        return "a character device";
    case S_IFBLK:
        return "a block device";
    case S_IFSOCK:
        return "a socket";
    default:
        return "not a file";
    }
}

int kago__rm_rf(const char *path)
{
    struct stat st;
    if (lstat(path, &st) < 0)
        return errno == ENOENT ? 0 : -1;
    return rm_rf_at(AT_FDCWD, path, st.st_dev);
}

unsigned long long kago__now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (unsigned long long)ts.tv_sec * 1000000ULL + (unsigned long long)ts.tv_nsec / 1000;
}

bool kago__fault(const char *step)
{
    static const char *fault = (const char *)1;
    if (fault == (const char *)1)
        fault = getenv("KAGO_FAULT");
    return fault && !strcmp(fault, step);
}

void kago__trace(const char *step)
{
    static int on = -1;
    static unsigned long long t0;
    if (on < 0) {
        on = getenv("KAGO_TRACE") != NULL;
        /* one clock for a process and those it starts (serve's spawner and its sandboxes) */
        const char *base = getenv("KAGO_TRACE_T0");
        t0 = base ? strtoull(base, NULL, 10) : kago__now_us();
        if (on && !base) {
            char b[32];
            snprintf(b, sizeof b, "%llu", t0);
            setenv("KAGO_TRACE_T0", b, 0);
        }
    }
    if (on)
        fprintf(stderr, "kago-trace: %6llu us %s\n", kago__now_us() - t0, step);
}

ssize_t kago__send_fd(int sock, char kind, int fd)
{
    union kago__fd_ctl ctl;
    memset(&ctl, 0, sizeof ctl);
    struct iovec iov = {.iov_base = &kind, .iov_len = 1};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = &ctl, .msg_controllen = sizeof ctl};
    struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(cm), &fd, sizeof fd);
    return sendmsg(sock, &mh, MSG_NOSIGNAL);
}

int kago__msg_fd(struct msghdr *mh)
{
    struct cmsghdr *cm = CMSG_FIRSTHDR(mh);
    int fd = -1;
    if (cm && cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS)
        memcpy(&fd, CMSG_DATA(cm), sizeof fd);
    return fd;
}

static int child_nice_ = INT_MIN;

void kago__set_child_nice(int nice)
{
    __atomic_store_n(&child_nice_, nice, __ATOMIC_RELAXED);
}

void kago__child_nice(void)
{
    int n = __atomic_load_n(&child_nice_, __ATOMIC_RELAXED);
    if (n != INT_MIN)
        setpriority(PRIO_PROCESS, 0, n); /* (a higher nice value: always allowed) */
}

pid_t kago__fork_reporting(int *fd, const char *what, struct kago_error **err)
{
    int p[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, p) < 0)
        return kago_error_set(err, errno, "socketpair for %s", what);
    pid_t pid = fork();
    if (pid < 0) {
        int e = errno;
        close(p[0]);
        close(p[1]);
        return kago_error_set(err, e, "fork %s", what);
    }
    close(p[pid == 0 ? 0 : 1]);
    *fd = p[pid == 0 ? 1 : 0];
    if (pid == 0)
        kago__child_nice();
    return pid;
}

char *kago__args;
size_t kago__args_len;
