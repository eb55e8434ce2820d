/* Internal helpers shared by libkago's files: allocation, cleanup attributes, small file I/O. */
#ifndef KAGO_UTIL_H
#define KAGO_UTIL_H

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <kago/error.h>

#define KAGO_INTERNAL __attribute__((visibility("hidden")))

void *xmalloc(size_t n) KAGO_INTERNAL;
void *xcalloc(size_t n, size_t size) KAGO_INTERNAL;
void *xrealloc(void *p, size_t n) KAGO_INTERNAL;
char *xstrdup(const char *s) KAGO_INTERNAL;
char *xasprintf(const char *fmt, ...) KAGO_INTERNAL __attribute__((format(printf, 1, 2)));
char *xvasprintf(const char *fmt, va_list ap) KAGO_INTERNAL __attribute__((format(printf, 1, 0)));

static inline void cleanup_freep(void *p)
{
    int saved = errno;
    free(*(void **)p);
    errno = saved;
}
static inline void cleanup_closep(int *fd)
{
    int saved = errno;
    if (*fd >= 0)
        close(*fd);
    errno = saved;
}
static inline void cleanup_fclosep(FILE **f)
{
    int saved = errno;
    if (*f)
        fclose(*f);
    errno = saved;
}
static inline void cleanup_errorp(struct kago_error **e)
{
    kago_error_free(*e);
}
#define cleanup_free   __attribute__((cleanup(cleanup_freep)))
#define cleanup_close  __attribute__((cleanup(cleanup_closep)))
#define cleanup_fclose __attribute__((cleanup(cleanup_fclosep)))
#define cleanup_error  __attribute__((cleanup(cleanup_errorp)))

static inline void *steal_ptr_(void **p)
{
    void *r = *p;
    *p = NULL;
    return r;
}
#define steal_ptr(p) steal_ptr_((void **)&(p))
static inline int steal_fd(int *fd)
{
    int r = *fd;
    *fd = -1;
    return r;
}

/* Writes s to path (O_WRONLY|O_TRUNC unless append). Returns 0 or < 0 with *err naming the file. */
int kago__write_file(const char *path, const char *s, struct kago_error **err) KAGO_INTERNAL;
/* Same, relative to a directory fd. */
int kago__write_fileat(int dirfd, const char *name, const char *s, struct kago_error **err) KAGO_INTERNAL;
/* Reads a whole (small) file into a NUL-terminated buffer the caller frees. NULL on failure. */
char *kago__read_file(const char *path, size_t *len, struct kago_error **err) KAGO_INTERNAL;
char *kago__read_fileat(int dirfd, const char *name, struct kago_error **err) KAGO_INTERNAL;
/* The lower-case name of an RLIMIT_* resource ("nofile"), "?" if unknown. */
const char *kago__rlimit_name(int resource) KAGO_INTERNAL;
/* Frees a NULL-terminated vector of strings and the vector (NULL is fine). */
void kago__strv_free(char **v) KAGO_INTERNAL;
/* mkdir -p with mode. */
int kago__mkdir_p(const char *path, mode_t mode, struct kago_error **err) KAGO_INTERNAL;
/* Opens path below dirfd for reading (openat2 with O_PATH | flags and resolve), only if it is a regular
 * file: it is checked through an O_PATH descriptor, then reopened through /proc/self/fd, so a FIFO (whose
 * open or read would block) or a device (whose open acts on the host's device) is never opened. Returns the
 * descriptor (the caller closes it), or -1 with errno set; *st is the file's stat when it could be taken
 * (st_mode 0 otherwise): a file that is not a regular file gives -1, EINVAL and its st_mode. */
/* Bind mount i's source as an O_PATH descriptor. A source inside another bind's source (the paths as
 * configured: /srv/a/uploads inside /srv/a) is resolved beneath that one's through no symlink, as
 * Kubernetes resolves a subPath: the container that has the outer one writable could have put a symlink
 * there, to anywhere on the host, for the next start to mount. Other paths are followed as named. */
struct kago_spec;
int kago__open_bind_source(const struct kago_spec *spec, size_t i, struct kago_error **err);
int kago__open_regular(int dirfd, const char *path, int flags, uint64_t resolve,
                       struct stat *st) KAGO_INTERNAL;
/* "a FIFO", "a directory", "a character device"...: what a file of mode is, for messages. */
const char *kago__file_kind(mode_t mode) KAGO_INTERNAL;
/* rm -rf of a directory tree that kago made (does not cross mounts), with a bounded number of descriptors
 * whatever its depth. Returns 0, or -1 when something could not be removed. */
int kago__rm_rf(const char *path) KAGO_INTERNAL;
/* fork() with a close-on-exec unix socket (SOCK_SEQPACKET: one report a message, and a descriptor may
 * come along) for the child to report on: returns 0 in the child (*fd = its end), the pid in the parent
 * (*fd = the parent's end), or < 0 with *err set (what names the child). */
pid_t kago__fork_reporting(int *fd, const char *what, struct kago_error **err) KAGO_INTERNAL;
/* The nice value of what kago forks or clones from here on: kago serve runs its event loops at a higher
 * priority than the processes it starts, which take this one back (kago__child_nice in the child; the
 * children of kago__fork_reporting and containers' do). Unset (never called): they keep their parent's. */
void kago__set_child_nice(int nice) KAGO_INTERNAL;
/* In a child of a thread that may run at another priority: takes kago__set_child_nice's value. */
void kago__child_nice(void) KAGO_INTERNAL;
/* Room for the one descriptor a sync message carries (SCM_RIGHTS). */
union kago__fd_ctl {
    struct cmsghdr h;
    char space[CMSG_SPACE(sizeof(int))];
};
/* Sends the byte kind with fd attached over a unix socket. Returns what sendmsg returned. */
ssize_t kago__send_fd(int sock, char kind, int fd) KAGO_INTERNAL;
/* The descriptor a received message carried, or -1; the caller owns it. */
int kago__msg_fd(struct msghdr *mh) KAGO_INTERNAL;
/* Test-only fault injection: true when $KAGO_FAULT names this setup step, so the integration tests can
 * check that a failure at each step leaves nothing behind. */
bool kago__fault(const char *step) KAGO_INTERNAL;
/* The process's command line (argv's strings, as exec laid them out), set by main: a container's init,
 * a clone of kago never exec'd, blanks it (its /proc/1/cmdline showed the host's kago command line). */
extern char *kago__args;
extern size_t kago__args_len;

/* $KAGO_TRACE=1: prints "kago-trace: +USEC STEP" to stderr at each step of a container's start and end. */
void kago__trace(const char *step) KAGO_INTERNAL;
/* Monotonic time in microseconds. */
unsigned long long kago__now_us(void) KAGO_INTERNAL;

#endif
