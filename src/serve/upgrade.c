/* kago serve — restarts and upgrades that lose nothing.
 *
 * A new serve started with --upgrade (or by SIGUSR2 to the running one, which starts its own command line
 * again with --upgrade) asks the running serve for its listening sockets over <root>/.serve/.upgrade.sock
 * (a unix socket in a 0700 directory; the peer must be the same user), as HAProxy and Envoy hand theirs
 * over. The old serve sends them (SCM_RIGHTS), stops accepting and drains: every connection closes after
 * its current or next response, an idle one after HANDOVER_IDLE_MS; starts in progress finish. Meanwhile
 * connections wait in the kernel's accept queue of the very same sockets, so none is refused. Once the
 * old serve is idle (or its --drain-timeout passes) it records its ready and frozen instances, leaves them
 * running, and exits, which lets the root lock go; the new serve, waiting on that lock, adopts them
 * (adopt.c) and starts accepting. If the new serve goes away before that, the old one listens again.
 *
 * Under systemd the old serve names the new one MAINPID= before it exits, so the unit stays active. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "serve_int.h"
#include "util.h"

#define UPGRADE_SOCK  ".upgrade.sock"
#define UPGRADE_HELLO "KAGO-UPGRADE 1\n"
/* How long the new serve waits for an answer from the old one (not for its drain). */
#define UPGRADE_ANSWER_MS 10000
/* Every message from the old serve to the new one is this long (NUL-padded text), so that each read
 * takes exactly one message and the descriptors sent with it. */
#define UPGRADE_MSG 64

extern char **environ;

/* The socket's address, through a directory fd so that a long --root still fits in sun_path. The caller
 * closes *dirfd. */
static int sock_addr(struct server *srv, int *dirfd, struct sockaddr_un *sa, socklen_t *len,
                     struct kago_error **err)
{
    cleanup_free char *dir = xasprintf("%s/.serve", srv->opts.root);
    *dirfd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (*dirfd < 0)
        return kago_error_set(err, errno, "open %s", dir);
    memset(sa, 0, sizeof(*sa));
    sa->sun_family = AF_UNIX;
    snprintf(sa->sun_path, sizeof(sa->sun_path), "/proc/self/fd/%d/" UPGRADE_SOCK, *dirfd);
    *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(sa->sun_path) + 1);
    return 0;
}

static char *sock_path(struct server *srv)
{
    return xasprintf("%s/.serve/" UPGRADE_SOCK, srv->opts.root);
}

/* Sends text (NUL-padded to UPGRADE_MSG bytes) with n descriptors. Returns sendmsg's result. */
static ssize_t send_msg(int sock, const char *text, const int *fds, int n, int flags)
{
    char msg[UPGRADE_MSG] = {0};
    snprintf(msg, sizeof(msg), "%s", text);
    union {
        char buf[CMSG_SPACE(sizeof(int) * UPGRADE_MAX_FDS)];
        struct cmsghdr align;
    } u = {0};
    struct iovec iov = {.iov_base = msg, .iov_len = sizeof(msg)};
    struct msghdr mh = {.msg_iov = &iov,
                        .msg_iovlen = 1,
                        .msg_control = u.buf,
                        .msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)n)};
    struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)n);
    memcpy(CMSG_DATA(cm), fds, sizeof(int) * (size_t)n);
    return sendmsg(sock, &mh, flags | MSG_NOSIGNAL);
}

/* --- the running serve: giving its listeners away ---------------------------------------------- */

static void on_up_conn(uv_stream_t *s, int status);

static void on_closed_free(uv_handle_t *h)
{
    free(h);
}

static void on_peer_closed(uv_handle_t *h)
{
    struct server *srv = h->data;
    srv->up_peer_open = false;
}

static void peer_close(struct server *srv)
{
    if (srv->up_peer_open && !uv_is_closing((uv_handle_t *)&srv->up_peer))
        uv_close((uv_handle_t *)&srv->up_peer, on_peer_closed);
}

static void peer_say(struct server *srv, const char *msg)
{
    uv_os_fd_t fd;
    if (uv_fileno((uv_handle_t *)&srv->up_peer, &fd) == 0)
        (void)!send(fd, msg, strlen(msg), MSG_NOSIGNAL);
}

static void on_listener_closed(uv_handle_t *h)
{
    h->data = NULL; /* (struct listener: closed, may be listened on again) */
}

static void on_handover_deadline(uv_timer_t *t);

/* Every listener: the client ones in order, then the admin one. */
static unsigned all_listeners(struct server *srv, struct listener **ls)
{
    unsigned n = 0;
    for (unsigned i = 0; i < srv->nls; i++)
        ls[n++] = &srv->ls[i];
    ls[n++] = &srv->admin;
    return n;
}

static void handover(struct server *srv)
{
    uv_os_fd_t peer, fds[KAGO_SERVE_MAX_LISTEN + 1];
    int n = 0;
    struct listener *ls[KAGO_SERVE_MAX_LISTEN + 1];
    unsigned nl = all_listeners(srv, ls);
    /* what each descriptor is: h (HTTP), s (HTTPS), a (admin); a serve before TLS sent "OK pid ms n" with
     * the HTTP one and the admin one */
    char kinds[KAGO_SERVE_MAX_LISTEN + 2] = "";
    for (unsigned i = 0; i < nl; i++)
        if (ls[i]->tcp.data && uv_fileno((uv_handle_t *)&ls[i]->tcp, &fds[n]) == 0)
            kinds[n++] = ls[i]->admin ? 'a' : ls[i]->tls ? 's' : 'h';
    kinds[n] = 0;
    struct ucred cred = {0};
    socklen_t clen = sizeof(cred);
    if (uv_fileno((uv_handle_t *)&srv->up_peer, &peer) < 0 ||
        getsockopt(peer, SOL_SOCKET, SO_PEERCRED, &cred, &clen) < 0) {
        peer_close(srv);
        return;
    }
    char msg[UPGRADE_MSG];
    snprintf(msg, sizeof(msg), "OK %d %" PRIu64 " %d %s\n", (int)getpid(), srv->opts.drain_timeout_ms, n,
             kinds);
    if (send_msg(peer, msg, fds, n, 0) < 0) {
        kago__slog(srv, SLOG_ERR, NULL, NULL, "upgrade: sending the listeners to pid %d: %s; still serving",
                   (int)cred.pid, strerror(errno));
        peer_close(srv);
        return;
    }
    /* room for the connections given after this (the new serve reads them once this one is gone) */
    int sndbuf = 16 << 20;
    setsockopt(peer, SOL_SOCKET, SO_SNDBUFFORCE, &sndbuf, sizeof(sndbuf));
    /* From here the new serve holds the sockets too; this one keeps copies in case it goes away. */
    srv->handover = true;
    srv->handover_pid = cred.pid;
    for (unsigned i = 0; i < nl; i++) {
        ls[i]->keep_fd = -1;
        if (ls[i]->tcp.data) {
            uv_os_fd_t fd;
            if (uv_fileno((uv_handle_t *)&ls[i]->tcp, &fd) == 0)
                ls[i]->keep_fd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
            if (!uv_is_closing((uv_handle_t *)&ls[i]->tcp))
                uv_close((uv_handle_t *)&ls[i]->tcp, on_listener_closed);
        }
    }
    kago__hs_listen(srv, NULL); /* (the handshake loops stop accepting too; none is refused: no error) */
    kago__shards_listen(srv);   /* (and the request loops) */
    kago__upgrade_close(srv);   /* one hand-over at a time; the new serve makes its own socket */
    kago__slog(srv, SLOG_INFO, NULL, NULL,
               "handing over to the new serve (pid %d): not accepting, draining %u connections",
               (int)cred.pid, srv->nclients);
    kago__systemd_notify("STATUS=handing over to the new serve (pid %d)\n", (int)cred.pid);
    kago__client_handover(srv, false);
    uv_timer_start(&srv->handover_timer, on_handover_deadline, srv->opts.drain_timeout_ms, 0);
}

static void on_up_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    struct server *srv = h->data;
    buf->base = srv->up_rbuf + srv->up_rlen;
    buf->len = sizeof(srv->up_rbuf) - 1 - srv->up_rlen;
}

static void on_up_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    struct server *srv = s->data;
    if (n < 0) { /* EOF: the new serve went away (before or during the hand-over; the tick resumes) */
        uv_read_stop(s);
        peer_close(srv);
        return;
    }
    if (srv->handover)
        return; /* nothing more is said */
    srv->up_rlen += (size_t)n;
    srv->up_rbuf[srv->up_rlen] = 0;
    if (!strchr(srv->up_rbuf, '\n')) {
        if (srv->up_rlen + 1 >= sizeof(srv->up_rbuf))
            peer_close(srv);
        return;
    }
    if (strcmp(srv->up_rbuf, UPGRADE_HELLO) != 0) {
        peer_say(srv, "ERR unknown request\n");
        peer_close(srv);
    } else if (srv->stopping) {
        peer_say(srv, "ERR it is stopping\n");
        peer_close(srv);
    } else {
        handover(srv);
    }
}

static void on_up_conn(uv_stream_t *s, int status)
{
    struct server *srv = s->data;
    if (status < 0)
        return;
    if (srv->up_peer_open) { /* one asker at a time */
        uv_pipe_t *p = xcalloc(1, sizeof(*p));
        uv_pipe_init(srv->loop, p, 0);
        if (uv_accept(s, (uv_stream_t *)p) == 0) {
            uv_os_fd_t fd;
            if (uv_fileno((uv_handle_t *)p, &fd) == 0)
                (void)!send(fd, "ERR an upgrade is in progress\n", 30, MSG_NOSIGNAL);
        }
        uv_close((uv_handle_t *)p, on_closed_free);
        return;
    }
    uv_pipe_init(srv->loop, &srv->up_peer, 0);
    srv->up_peer.data = srv;
    srv->up_peer_open = true;
    srv->up_rlen = 0;
    if (uv_accept(s, (uv_stream_t *)&srv->up_peer) < 0) {
        peer_close(srv);
        return;
    }
    uv_os_fd_t fd;
    struct ucred cred = {0};
    socklen_t clen = sizeof(cred);
    if (uv_fileno((uv_handle_t *)&srv->up_peer, &fd) < 0 ||
        getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) < 0 || cred.uid != geteuid()) {
        peer_close(srv); /* (the directory is 0700: only the same user gets here) */
        return;
    }
    uv_read_start((uv_stream_t *)&srv->up_peer, on_up_alloc, on_up_read);
}

/* SIGUSR2: serve's own command line again, with --upgrade, from the executable it was started from (a
 * package upgrade replaced the file: the new binary takes over). */
static void on_child_exit(uv_process_t *p, int64_t status, int sig)
{
    struct server *srv = p->data;
    if (!srv->handed_over)
        kago__slog(srv, SLOG_WARN, NULL, NULL,
                   "the new serve (pid %d) %s %d before it took over; still serving", p->pid,
                   sig ? "was killed by signal" : "exited with status", sig ? sig : (int)status);
    uv_close((uv_handle_t *)p, NULL);
    srv->up_child_running = false;
}

static void on_sigusr2(uv_signal_t *h, int sig)
{
    struct server *srv = h->data;
    if (srv->handover || srv->stopping || srv->up_child_running || !srv->opts.argv) {
        kago__slog(srv, SLOG_WARN, NULL, NULL, "SIGUSR2: %s",
                   srv->up_child_running ? "a new serve is already starting"
                   : srv->handover       ? "already handing over"
                                         : "stopping, no upgrade");
        return;
    }
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (n <= 0) {
        kago__slog(srv, SLOG_ERR, NULL, NULL, "SIGUSR2: readlink /proc/self/exe: %s", strerror(errno));
        return;
    }
    exe[n] = 0;
    /* the file was replaced (a package upgrade): the name still leads to the new one */
    char *del = strstr(exe, " (deleted)");
    if (del && !del[10])
        *del = 0;
    size_t argc = 0;
    while (srv->opts.argv[argc])
        argc++;
    cleanup_free char **args = xcalloc(argc + 2, sizeof(*args));
    memcpy(args, srv->opts.argv, argc * sizeof(*args));
    args[argc] = "--upgrade";
    size_t nenv = 0;
    while (environ[nenv])
        nenv++;
    cleanup_free char **env = xcalloc(nenv + 2, sizeof(*env));
    memcpy(env, environ, nenv * sizeof(*env));
    if (kago__systemd_env())
        env[nenv] = (char *)kago__systemd_env();
    uv_stdio_container_t stdio[3] = {{.flags = UV_INHERIT_FD, .data.fd = 0},
                                     {.flags = UV_INHERIT_FD, .data.fd = 1},
                                     {.flags = UV_INHERIT_FD, .data.fd = 2}};
    uv_process_options_t po = {
        .exit_cb = on_child_exit, .file = exe, .args = args, .env = env, .stdio_count = 3, .stdio = stdio};
    srv->up_child.data = srv;
    setpriority(PRIO_PROCESS, 0, srv->base_nice); /* (the new serve starts at serve's own, not the loop's) */
    int r = uv_spawn(srv->loop, &srv->up_child, &po);
    kago__loop_priority(srv);
    if (r < 0) {
        kago__slog(srv, SLOG_ERR, NULL, NULL, "SIGUSR2: start %s: %s", exe, uv_strerror(r));
        uv_close((uv_handle_t *)&srv->up_child, NULL);
        return;
    }
    srv->up_child_running = true;
    kago__slog(srv, SLOG_INFO, NULL, NULL, "SIGUSR2: started a new serve (pid %d, %s) to take over",
               srv->up_child.pid, exe);
}

int kago__upgrade_listen(struct server *srv, struct kago_error **err)
{
    int dirfd = -1;
    struct sockaddr_un sa;
    socklen_t len;
    if (sock_addr(srv, &dirfd, &sa, &len, err) < 0)
        return -1;
    unlinkat(dirfd, UPGRADE_SOCK, 0); /* a dead serve's (the root lock is ours) */
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    int r = fd < 0 || bind(fd, (struct sockaddr *)&sa, len) < 0 || listen(fd, 8) < 0 ? -errno : 0;
    close(dirfd);
    if (r < 0) {
        if (fd >= 0)
            close(fd);
        cleanup_free char *path = sock_path(srv);
        return kago_error_set(err, -r, "upgrade socket %s", path);
    }
    uv_pipe_init(srv->loop, &srv->up_listen, 0);
    srv->up_listen.data = srv;
    if ((r = uv_pipe_open(&srv->up_listen, fd)) == 0)
        r = uv_listen((uv_stream_t *)&srv->up_listen, 8, on_up_conn);
    srv->up_listening = true;
    if (r < 0) {
        kago__upgrade_close(srv);
        cleanup_free char *path = sock_path(srv);
        return kago_error_set(err, -r, "upgrade socket %s", path);
    }
    if (!srv->sigusr2.data) {
        uv_signal_init(srv->loop, &srv->sigusr2);
        srv->sigusr2.data = srv;
        uv_signal_start(&srv->sigusr2, on_sigusr2, SIGUSR2);
    }
    return 0;
}

void kago__upgrade_close(struct server *srv)
{
    if (!srv->up_listening)
        return;
    srv->up_listening = false;
    if (!uv_is_closing((uv_handle_t *)&srv->up_listen))
        uv_close((uv_handle_t *)&srv->up_listen, NULL);
    cleanup_free char *path = sock_path(srv);
    unlink(path);
}

/* The new serve went away before taking over: listen again on the kept copies. */
static void resume(struct server *srv)
{
    struct listener *ls[KAGO_SERVE_MAX_LISTEN + 1];
    unsigned nl = all_listeners(srv, ls);
    for (unsigned i = 0; i < nl; i++)
        if (ls[i]->tcp.data)
            return; /* still closing: the next tick */
    uv_timer_stop(&srv->handover_timer);
    srv->handover = false;
    kago__client_handover_undone(srv);
    kago__slog(srv, SLOG_WARN, NULL, NULL,
               "the new serve (pid %d) went away before taking over: accepting again",
               (int)srv->handover_pid);
    for (unsigned i = 0; i < nl; i++) {
        struct kago_error *err = NULL;
        if (ls[i]->keep_fd >= 0 &&
            kago__server_listen(srv, ls[i], NULL, ls[i]->keep_fd, ls[i]->admin, &err) < 0) {
            kago__slog(srv, SLOG_ERR, NULL, NULL, "%s", err->msg);
            kago_error_free(err);
            close(ls[i]->keep_fd);
        }
        ls[i]->keep_fd = -1;
    }
    kago__shards_listen(srv);
    struct kago_error *err = NULL;
    if (kago__hs_listen(srv, &err) < 0 || kago__upgrade_listen(srv, &err) < 0) {
        kago__slog(srv, SLOG_ERR, NULL, NULL, "%s", err->msg);
        kago_error_free(err);
    }
    kago__systemd_notify("STATUS=accepting again: the upgrade did not happen\n");
}

static bool starting(struct server *srv)
{
    for (struct app_rt *a = srv->apps; a; a = a->next)
        for (struct pool_inst *pi = a->pool.insts; pi; pi = pi->next)
            if (pi->state == POOL_STARTING)
                return true;
    return false;
}

static void finish(struct server *srv, const char *how)
{
    srv->handed_over = true;
    uv_timer_stop(&srv->handover_timer);
    unsigned n = 0;
    for (struct app_rt *a = srv->apps; a; a = a->next)
        for (struct pool_inst *pi = a->pool.insts; pi; pi = pi->next)
            n += pi->data && kago__upgrade_leaves(pi->data);
    kago__slog(srv, SLOG_INFO, NULL, NULL,
               "handed over to pid %d (%s): leaving it %u running instances and %u connections",
               (int)srv->handover_pid, how, n, srv->given);
    kago__server_stop_loop(srv);
}

void kago__upgrade_cut(struct server *srv)
{
    if (srv->handed_over)
        return;
    kago__slog(srv, SLOG_WARN, NULL, NULL,
               "drain timeout or signal during the hand-over: closing %u connections", srv->nclients);
    kago__client_close_all(srv, false);
    finish(srv, "cut short");
}

static void on_handover_deadline(uv_timer_t *t)
{
    kago__upgrade_cut(t->data);
}

void kago__upgrade_tick(struct server *srv)
{
    if (!srv->handover || srv->handed_over)
        return;
    if (!srv->up_peer_open) {
        resume(srv);
        return;
    }
    if (srv->nshards > 1)
        kago__client_handover(srv, true);
    if (srv->nclients == 0 && srv->jobs == 0 && !starting(srv))
        finish(srv, "drained");
}

bool kago__upgrade_leaves(struct instance *inst)
{
    struct app_rt *a = inst->app;
    return a->srv->handed_over && inst->pi && inst->c && !a->removed && !inst->ckpt_busy &&
           !kago__app_criu(&a->app) && (inst->pi->state == POOL_READY || inst->pi->state == POOL_FROZEN);
}

/* --- the new serve: taking them --------------------------------------------------------------- */

/* fd is bound to addr ("IP:PORT"). */
static bool bound_to(int fd, const char *addr)
{
    struct sockaddr_storage want = {0}, got = {0};
    socklen_t len = sizeof(got);
    struct kago_error *err = NULL;
    if (kago__server_parse_addr(addr, &want, &err) < 0) {
        kago_error_free(err);
        return false;
    }
    if (getsockname(fd, (struct sockaddr *)&got, &len) < 0 || got.ss_family != want.ss_family)
        return false;
    if (got.ss_family == AF_INET) {
        struct sockaddr_in *a = (struct sockaddr_in *)&got, *b = (struct sockaddr_in *)&want;
        return a->sin_port == b->sin_port && a->sin_addr.s_addr == b->sin_addr.s_addr;
    }
    struct sockaddr_in6 *a = (struct sockaddr_in6 *)&got, *b = (struct sockaddr_in6 *)&want;
    return a->sin6_port == b->sin6_port && !memcmp(&a->sin6_addr, &b->sin6_addr, sizeof(a->sin6_addr));
}

/* The listeners received (kinds[i] for fds[i]) to this serve's: first those of the same kind and address,
 * then the rest of each kind in order; the admin one to *admin_fd. What is left is closed. */
static void match_listeners(struct server *srv, int *got, const char *kinds, int n, int *fds, int *admin_fd)
{
    for (unsigned i = 0; i < srv->nls; i++)
        fds[i] = -1;
    for (int pass = 0; pass < 2; pass++)
        for (unsigned i = 0; i < srv->nls; i++) {
            char kind = srv->ls[i].tls ? 's' : 'h';
            for (int k = 0; k < n && fds[i] < 0; k++)
                if (got[k] >= 0 && kinds[k] == kind && (pass == 1 || bound_to(got[k], srv->ls[i].addr))) {
                    fds[i] = got[k];
                    got[k] = -1;
                }
        }
    for (int k = 0; k < n; k++) {
        if (got[k] >= 0 && kinds[k] == 'a' && *admin_fd < 0) {
            *admin_fd = got[k];
        } else if (got[k] >= 0) {
            kago__slog(srv, SLOG_WARN, NULL, NULL,
                       "--upgrade: the running serve has a %s listener this one is not given: closed",
                       kinds[k] == 's'   ? "TLS"
                       : kinds[k] == 'a' ? "second admin"
                                         : "HTTP");
            close(got[k]);
        }
        got[k] = -1;
    }
}

int kago__upgrade_request(struct server *srv, int *lfds, int *admin_fd, struct kago_error **err)
{
    *admin_fd = -1;
    for (unsigned i = 0; i < srv->nls; i++)
        lfds[i] = -1;
    int dirfd = -1;
    struct sockaddr_un sa;
    socklen_t len;
    cleanup_free char *path = sock_path(srv);
    if (sock_addr(srv, &dirfd, &sa, &len, err) < 0)
        return kago_error_prefix(err, "--upgrade: no kago serve runs with root %s", srv->opts.root), -1;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, len) < 0) {
        int e = errno;
        close(dirfd);
        if (fd >= 0)
            close(fd);
        return kago_error_set(err, e, "--upgrade: no kago serve runs with root %s (%s)", srv->opts.root,
                              path);
    }
    close(dirfd);
    struct timeval tv = {.tv_sec = UPGRADE_ANSWER_MS / 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    char msg[UPGRADE_MSG + 1] = {0};
    union {
        char buf[CMSG_SPACE(sizeof(int) * (KAGO_SERVE_MAX_LISTEN + 1))];
        struct cmsghdr align;
    } u;
    struct iovec iov = {.iov_base = msg, .iov_len = UPGRADE_MSG};
    struct msghdr mh = {
        .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof(u.buf)};
    ssize_t n = -1;
    if (send(fd, UPGRADE_HELLO, strlen(UPGRADE_HELLO), MSG_NOSIGNAL) >= 0)
        n = recvmsg(fd, &mh, MSG_CMSG_CLOEXEC);
    if (n <= 0) {
        int e = n < 0 ? errno : 0;
        close(fd);
        return kago_error_set(err, e, "--upgrade: the serve on %s %s", path,
                              n == 0 ? "closed the connection without an answer" : "did not answer");
    }
#define MAXL (KAGO_SERVE_MAX_LISTEN + 1)
    int fds[MAXL], nfds = 0;
    for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm))
        if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS) {
            nfds = (int)((cm->cmsg_len - CMSG_LEN(0)) / sizeof(int));
            memcpy(fds, CMSG_DATA(cm), sizeof(int) * (size_t)(nfds > MAXL ? MAXL : nfds));
        }
    int pid = 0, want = 0;
    unsigned long long drain = 0;
    char kinds[MAXL + 1] = "";
    int ret = 0, fields = 0;
    if (strncmp(msg, "ERR ", 4) == 0) {
        msg[strcspn(msg, "\n")] = 0;
        ret = kago_error_set(err, 0, "--upgrade: the running serve refused: %s", msg + 4);
    } else if ((fields = sscanf(msg, "OK %d %llu %d %17s", &pid, &drain, &want, kinds)) < 3 || want != nfds ||
               nfds < 1 || nfds > MAXL || (mh.msg_flags & MSG_CTRUNC) ||
               (fields == 4 && strlen(kinds) != (size_t)nfds) || (fields == 3 && nfds > 2)) {
        ret = kago_error_set(err, 0, "--upgrade: unexpected answer from the serve on %s", path);
    } else {
        if (fields == 3) /* a serve before TLS: its HTTP listener, then its admin one */
            snprintf(kinds, sizeof(kinds), "%s", nfds == 2 ? "ha" : "h");
        for (int i = 0; i < nfds && ret == 0; i++)
            if (kago__check_listen_fd(fds[i], err) < 0) {
                kago_error_prefix(err, "--upgrade: a socket from the running serve");
                ret = -1;
            }
    }
    if (ret < 0) {
        for (int i = 0; i < nfds && i < MAXL; i++)
            close(fds[i]);
        close(fd);
        return -1;
    }
    match_listeners(srv, fds, kinds, nfds, lfds, admin_fd);
#undef MAXL
    srv->upgraded_from = pid;
    srv->up_conn = fd; /* open until the lock is ours: its end tells the old serve we went away */
    srv->lock_wait_ms = drain + UPGRADE_ANSWER_MS;
    kago__slog(srv, SLOG_INFO, NULL, NULL, "--upgrade: took the listeners of pid %d; waiting while it drains",
               pid);
    return 0;
}

/* --- connections between two requests --------------------------------------------------------- */

int kago__upgrade_give(struct server *srv, const int *fds, int n)
{
    uv_os_fd_t peer;
    if (!srv->up_peer_open || n < 1 || n > UPGRADE_MAX_FDS ||
        uv_fileno((uv_handle_t *)&srv->up_peer, &peer) < 0)
        return -1;
    char msg[UPGRADE_MSG];
    snprintf(msg, sizeof(msg), "C %d\n", n);
    ssize_t r = send_msg(peer, msg, fds, n, MSG_DONTWAIT);
    if (r == UPGRADE_MSG) {
        srv->given += (unsigned)n;
        return 0;
    }
    if (!srv->give_failed++)
        kago__slog(
            srv, SLOG_WARN, NULL, NULL,
            "upgrade: could not give a connection to the new serve (%s): closing such ones after their "
            "next response",
            r < 0 ? strerror(errno) : "short write");
    return -1;
}

void kago__upgrade_take_clients(struct server *srv)
{
    unsigned taken = 0;
    for (;;) {
        char msg[UPGRADE_MSG + 1] = {0};
        union {
            char buf[CMSG_SPACE(sizeof(int) * UPGRADE_MAX_FDS)];
            struct cmsghdr align;
        } u;
        struct iovec iov = {.iov_base = msg, .iov_len = UPGRADE_MSG};
        struct msghdr mh = {
            .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof(u.buf)};
        ssize_t r = recvmsg(srv->up_conn, &mh, MSG_CMSG_CLOEXEC);
        if (r <= 0)
            break; /* the old serve is gone: that was all */
        for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm))
            if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS) {
                int fds[UPGRADE_MAX_FDS];
                size_t k = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
                memcpy(fds, CMSG_DATA(cm), sizeof(int) * (k > UPGRADE_MAX_FDS ? UPGRADE_MAX_FDS : k));
                for (size_t i = 0; i < k && i < UPGRADE_MAX_FDS; i++) {
                    kago__client_adopt(srv, fds[i]);
                    taken++;
                }
            }
    }
    if (taken)
        kago__slog(srv, SLOG_INFO, NULL, NULL, "took over %u keep-alive connections from pid %d", taken,
                   (int)srv->upgraded_from);
}
