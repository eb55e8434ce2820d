/* Allocation that aborts on exhaustion, and the small file helpers every module needs. */
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>

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

static int rm_rf_at(int dirfd, const char *name, dev_t dev)
{
    struct stat st;
    if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
        return errno == ENOENT ? 0 : -1;
    if (!S_ISDIR(st.st_mode))
        return unlinkat(dirfd, name, 0) < 0 && errno != ENOENT ? -1 : 0;
    if (st.st_dev != dev) /* a mount point: never descend into someone else's filesystem */
        return -1;
    int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return -1;
    DIR *d = fdopendir(fd);
    if (!d) {
        close(fd);
        return -1;
    }
    int ret = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        if (rm_rf_at(fd, de->d_name, dev) < 0)
            ret = -1;
    }
    closedir(d);
    if (unlinkat(dirfd, name, AT_REMOVEDIR) < 0 && errno != ENOENT)
        ret = -1;
    return ret;
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
