/* kago serve under systemd: the two small protocols serve speaks with its service manager, without
 * libsystemd. kago is one static executable and Debian ships libsystemd only as a shared library, so
 * sd_notify(3) and sd_listen_fds(3) are done here: a datagram of "KEY=VALUE\n" lines sent to the
 * AF_UNIX socket named by NOTIFY_SOCKET ("/path", or "@name" for the abstract namespace), and listening
 * sockets inherited as fds 3.. with LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES. The variables are read
 * once and removed from the environment, so nothing serve starts inherits them. Without NOTIFY_SOCKET
 * every call is a no-op that costs a branch. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "serve_int.h"
#include "util.h"

#define SD_LISTEN_FDS_START 3

static struct {
    int fd; /* -1: no notify socket */
    struct sockaddr_un addr;
    socklen_t addrlen;
    uint64_t watchdog_usec;
    char *env; /* NOTIFY_SOCKET as it was given (for a new serve started by SIGUSR2) */
} nt = {.fd = -1};

/* Parses an unsigned decimal; false when s is not one. */
static bool parse_u64(const char *s, uint64_t *v)
{
    if (!s || !*s)
        return false;
    char *end;
    errno = 0;
    unsigned long long x = strtoull(s, &end, 10);
    if (errno || *end || s[0] == '-')
        return false;
    *v = x;
    return true;
}

/* The environment's pid variable names this process (or is absent, when absent_ok). */
static bool pid_is_us(const char *name, bool absent_ok)
{
    const char *e = getenv(name);
    uint64_t pid;
    if (!e)
        return absent_ok;
    return parse_u64(e, &pid) && pid == (uint64_t)getpid();
}

static int notify_addr(const char *s)
{
    size_t n = strlen(s);
    memset(&nt.addr, 0, sizeof(nt.addr));
    nt.addr.sun_family = AF_UNIX;
    if ((s[0] != '/' && s[0] != '@') || n < 2 || n > sizeof(nt.addr.sun_path))
        return -EINVAL;
    memcpy(nt.addr.sun_path, s, n);
    if (s[0] == '@') {
        nt.addr.sun_path[0] = 0; /* abstract: the length, not a NUL, ends the name */
        nt.addrlen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
    } else {
        if (n == sizeof(nt.addr.sun_path))
            return -ENAMETOOLONG; /* no room for the NUL */
        nt.addrlen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
    }
    return 0;
}

void kago__systemd_init(void)
{
    const char *s = getenv("NOTIFY_SOCKET");
    if (s) {
        int r = notify_addr(s);
        if (r == 0 && (nt.fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0)) < 0)
            r = -errno;
        if (r < 0)
            kago__slog(NULL, SLOG_WARN, NULL, NULL, "NOTIFY_SOCKET=%s unusable, not notifying: %s", s,
                       strerror(-r));
        else if (!nt.env)
            nt.env = xasprintf("NOTIFY_SOCKET=%s", s);
    }
    uint64_t wd = 0;
    if (nt.fd >= 0 && parse_u64(getenv("WATCHDOG_USEC"), &wd) && wd > 0 && pid_is_us("WATCHDOG_PID", true))
        nt.watchdog_usec = wd;
    unsetenv("NOTIFY_SOCKET");
    unsetenv("WATCHDOG_USEC");
    unsetenv("WATCHDOG_PID");
}

const char *kago__systemd_env(void)
{
    return nt.env;
}

bool kago__systemd_notifying(void)
{
    return nt.fd >= 0;
}

uint64_t kago__systemd_watchdog_usec(void)
{
    return nt.watchdog_usec;
}

int kago__systemd_notify(const char *fmt, ...)
{
    if (nt.fd < 0)
        return 0;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (n < 0)
        return -EINVAL;
    if ((size_t)n >= sizeof(msg))
        n = sizeof(msg) - 1; /* a cut STATUS= is still a status */
    /* Non-blocking: a manager that does not read must not stall the loop; a lost WATCHDOG=1 is resent. */
    if (sendto(nt.fd, msg, (size_t)n, MSG_NOSIGNAL, (struct sockaddr *)&nt.addr, nt.addrlen) < 0)
        return -errno;
    return 1;
}

uint64_t kago__systemd_monotonic_usec(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* An inherited fd serve can listen on: a listening TCP socket (IPv4 or IPv6). */
int kago__check_listen_fd(int fd, struct kago_error **err)
{
    int type = 0, acc = 0;
    socklen_t len = sizeof(type);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0 ||
        getsockname(fd, (struct sockaddr *)&ss, &sl) < 0)
        return kago_error_set(err, errno, "fd %d", fd);
    len = sizeof(acc);
    if (type != SOCK_STREAM || (ss.ss_family != AF_INET && ss.ss_family != AF_INET6))
        return kago_error_set(err, 0, "fd %d is not a TCP socket (ListenStream=[ADDR:]PORT wanted)", fd);
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &acc, &len) < 0 || !acc)
        return kago_error_set(err, 0, "fd %d is not listening", fd);
    return 0;
}

/* The i-th (0-based) colon-separated name of LISTEN_FDNAMES, or "" (caller frees). */
static char *fd_name(const char *names, int i)
{
    for (; names && i > 0; i--)
        if ((names = strchr(names, ':')))
            names++;
    if (!names)
        return xstrdup("");
    const char *end = strchrnul(names, ':');
    return xasprintf("%.*s", (int)(end - names), names);
}

int kago__systemd_listen_fds(int *main_fd, int *admin_fd, struct kago_error **err)
{
    *main_fd = *admin_fd = -1;
    uint64_t n = 0;
    bool ours = pid_is_us("LISTEN_PID", false) && parse_u64(getenv("LISTEN_FDS"), &n) && n > 0;
    cleanup_free char *names = ours && getenv("LISTEN_FDNAMES") ? xstrdup(getenv("LISTEN_FDNAMES")) : NULL;
    unsetenv("LISTEN_PID");
    unsetenv("LISTEN_FDS");
    unsetenv("LISTEN_FDNAMES");
    if (!ours)
        return 0;
    if (n > 2)
        return kago_error_set(err, 0,
                              "LISTEN_FDS=%llu: serve takes one HTTP socket and one named \"admin\" at most",
                              (unsigned long long)n);
    for (int i = 0; i < (int)n; i++) {
        int fd = SD_LISTEN_FDS_START + i;
        cleanup_free char *name = fd_name(names, i);
        fcntl(fd, F_SETFD, FD_CLOEXEC); /* instances must not inherit serve's listeners */
        if (kago__check_listen_fd(fd, err) < 0)
            return kago_error_prefix(err, "systemd socket %s", *name ? name : "(unnamed)"), -1;
        int *slot = !strcmp(name, "admin") ? admin_fd : main_fd;
        if (*slot >= 0)
            return kago_error_set(err, 0, "LISTEN_FDS: two %s sockets (fds %d and %d)",
                                  slot == admin_fd ? "admin" : "HTTP", *slot, fd);
        *slot = fd;
    }
    if (*main_fd < 0)
        return kago_error_set(err, 0, "LISTEN_FDS: only an admin socket, no HTTP one");
    return 0;
}

/* --- serve's notifications ---------------------------------------------------------------------- */

/* STATUS=: apps, instances and how many are ready; sent when it changed. */
static void send_status(struct server *srv, const char *extra)
{
    unsigned napps = 0, ninst = 0, ready = 0;
    for (struct app_rt *a = srv->apps; a; a = a->next) {
        napps += !a->removed;
        for (struct pool_inst *pi = a->pool.insts; pi; pi = pi->next) {
            ninst++;
            ready += pi->state == POOL_READY;
        }
    }
    char s[sizeof(srv->sd_status)];
    snprintf(s, sizeof(s), "%u apps, %u instances (%u ready)%s", napps, ninst, ready, extra);
    if (strcmp(s, srv->sd_status) != 0 && kago__systemd_notify("STATUS=%s\n", s) > 0)
        memcpy(srv->sd_status, s, sizeof(s));
}

static void on_watchdog(uv_timer_t *t)
{
    kago__systemd_notify("WATCHDOG=1\n");
}

void kago__systemd_ready(struct server *srv)
{
    if (nt.fd < 0)
        return;
    kago__systemd_notify("READY=1\n");
    send_status(srv, "");
    if (nt.watchdog_usec) {
        /* From the loop itself: a stuck loop stops the pings and systemd restarts serve. */
        uint64_t ms = nt.watchdog_usec / 2000;
        uv_timer_init(srv->loop, &srv->watchdog);
        srv->watchdog.data = srv;
        uv_timer_start(&srv->watchdog, on_watchdog, ms ? ms : 1, ms ? ms : 1);
        uv_unref((uv_handle_t *)&srv->watchdog);
    }
}

void kago__systemd_tick(struct server *srv)
{
    static unsigned n;
    if (nt.fd >= 0 && ++n % 40 == 0) /* about once a second at the 25 ms tick */
        send_status(srv, srv->stopping ? ", stopping" : "");
}

void kago__systemd_reloading(void)
{
    /* MONOTONIC_USEC: systemd >= 253 (Type=notify-reload) matches it against its own reload request. */
    kago__systemd_notify("RELOADING=1\nMONOTONIC_USEC=%llu\n",
                         (unsigned long long)kago__systemd_monotonic_usec());
}

void kago__systemd_reloaded(struct server *srv, const struct kago_error *err)
{
    if (nt.fd < 0)
        return;
    if (err)
        kago__systemd_notify("READY=1\nSTATUS=reload failed, running config kept: %.400s\n", err->msg);
    else
        kago__systemd_notify("READY=1\n");
    srv->sd_status[0] = 0; /* the next tick restores the summary */
    if (!err)
        send_status(srv, "");
}

void kago__systemd_stopping(struct server *srv)
{
    kago__systemd_notify("STOPPING=1\nSTATUS=stopping: draining requests and instances\n");
}
