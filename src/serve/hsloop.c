/* kago serve — --threads N: N more event loops (N - 1 when the first serves every request), on threads of
 * their own, that take TLS handshakes.
 *
 * A handshake loop accepts on the TLS listeners too (a copy of each listening socket: whichever loop waits in
 * epoll takes the next connection, so an idle loop takes more), runs the handshake (the asymmetric crypto:
 * what a TLS front door spends its CPU on per new connection), then hands the connection, its socket and its
 * OpenSSL state, over: to a request loop (shard.c), which sends it on to the loop of the app its name routes
 * to, where it goes on as if it had been accepted there (with one request loop, the first loop takes it:
 * on_intake). What the threads share is
 * the TLS front (tls.c: its certificate store under a read-write lock, its ticket keys under a mutex) and
 * the hand-off queue here. A handshake that would wait for a certificate on demand (acme.c) is handed over
 * before it asks for one, and held on the first loop. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "serve_int.h"
#include "spawner.h"
#include "util.h"

#define HS_RBUF         (16 * 1024)
#define HS_ACCEPT_BURST 8 /* accepts per wake-up: the other loops get their share of a burst */
#define HS_PAUSE_MS     100

struct hs_loop;

struct hs_conn {
    uv_poll_t poll;
    uv_timer_t timer;
    struct hs_loop *l;
    struct hs_conn *prev, *next;
    int fd;
    struct tls_conn *tls;
    struct sbuf out; /* ciphertext not written yet */
    size_t out_pos;
    unsigned handles;
    bool got_bytes;
};

struct hs_loop {
    struct hsloops *hs;
    unsigned id;
    uv_thread_t tid;
    uv_loop_t loop;
    uv_async_t wake;
    /* Its copies of the listening sockets are in an epoll of its own (efd, polled by the loop), each with
     * EPOLLEXCLUSIVE: a new connection wakes one handshake loop, not all of them (the first loop's libuv
     * listener is woken as before). */
    int efd;
    uv_poll_t accept;
    uv_timer_t pause; /* accepting again after EMFILE and the like */
    int lfd[KAGO_SERVE_MAX_LISTEN];
    unsigned nlfd, gen;
    struct hs_conn *conns;
    char *rbuf;
    bool ended;
};

/* A connection for the first loop. */
struct hs_handoff {
    struct hs_handoff *next;
    int fd;
    struct tls_conn *tls;
    struct sbuf out;
};

struct hsloops {
    struct server *srv;
    unsigned n;
    struct hs_loop *loops;
    uv_mutex_t mu;
    uv_cond_t cond;
    /* what the loops listen on (under mu), generation gen: loop i's copies of the listening sockets at
     * lfds[i * KAGO_SERVE_MAX_LISTEN...], nfds of them */
    int *lfds;
    unsigned nfds, gen, acked;
    bool stop, joined;
    struct hs_handoff *head, **tail;
    uv_async_t intake; /* on the first loop */
    uint64_t handed;
};

/* --- a handshake loop ---------------------------------------------------------------------------- */

static void on_conn_closed(uv_handle_t *h)
{
    struct hs_conn *c = h->data;
    if (--c->handles)
        return;
    if (c->fd >= 0)
        close(c->fd);
    kago__tls_conn_free(c->tls);
    sbuf_free(&c->out);
    free(c);
}

static void conn_unlink(struct hs_conn *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        c->l->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
}

static void conn_end(struct hs_conn *c, bool failed)
{
    if (failed)
        __atomic_add_fetch(&kago__tls_stats(c->l->hs->srv->tls)->handshakes_failed, 1, __ATOMIC_RELAXED);
    conn_unlink(c);
    c->handles = 2;
    uv_close((uv_handle_t *)&c->poll, on_conn_closed);
    uv_close((uv_handle_t *)&c->timer, on_conn_closed);
}

/* The connection goes to the first loop, with what is left to send: its socket is no longer polled here
 * (uv_poll_stop removes it from this loop's epoll at once). */
static void conn_give(struct hs_conn *c, bool done)
{
    struct hsloops *hs = c->l->hs;
    uv_poll_stop(&c->poll);
    if (done && hs->srv->nshards > 1) { /* to a request loop, which sends it on to its name's app's loop */
        struct sbuf pre = {0};
        if (c->out.len > c->out_pos)
            sbuf_add(&pre, c->out.data + c->out_pos, c->out.len - c->out_pos);
        kago__shard_give(kago__shard_next(hs->srv), kago__client_handed(hs->srv, c->fd, c->tls, &pre));
        c->fd = -1;
        c->tls = NULL;
        uv_mutex_lock(&hs->mu);
        hs->handed++;
        uv_mutex_unlock(&hs->mu);
        conn_end(c, false);
        return;
    }
    struct hs_handoff *h = xcalloc(1, sizeof(*h));
    h->fd = c->fd;
    h->tls = c->tls;
    if (c->out.len > c->out_pos)
        sbuf_add(&h->out, c->out.data + c->out_pos, c->out.len - c->out_pos);
    c->fd = -1;
    c->tls = NULL;
    uv_mutex_lock(&hs->mu);
    *hs->tail = h;
    hs->tail = &h->next;
    hs->handed++;
    uv_mutex_unlock(&hs->mu);
    uv_async_send(&hs->intake);
    conn_end(c, false);
}

/* Writes what the handshake queued; false when the socket is broken. */
static bool conn_write(struct hs_conn *c)
{
    while (c->out.len > c->out_pos) {
        ssize_t n = write(c->fd, c->out.data + c->out_pos, c->out.len - c->out_pos);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return errno == EAGAIN;
        c->out_pos += (size_t)n;
    }
    sbuf_reset(&c->out, 4096);
    c->out_pos = 0;
    return true;
}

static void on_conn_io(uv_poll_t *p, int status, int events);

static void conn_poll(struct hs_conn *c)
{
    bool pending = c->out.len > c->out_pos;
    uv_poll_start(&c->poll, UV_READABLE | (pending ? UV_WRITABLE : 0), on_conn_io);
}

static void on_conn_io(uv_poll_t *p, int status, int events)
{
    struct hs_conn *c = p->data;
    if (status < 0) {
        conn_end(c, c->got_bytes);
        return;
    }
    if ((events & UV_WRITABLE) && !conn_write(c)) {
        conn_end(c, true);
        return;
    }
    if (!(events & UV_READABLE)) {
        conn_poll(c);
        return;
    }
    ssize_t n = read(c->fd, c->l->rbuf, HS_RBUF);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) { /* the peer went away mid-handshake (a port probe when it sent nothing) */
        conn_end(c, c->got_bytes);
        return;
    }
    c->got_bytes = true;
    kago__tls_input(c->tls, c->l->rbuf, (size_t)n);
    int r = kago__tls_handshake(c->tls);
    kago__tls_keep(c->tls); /* what followed the handshake (the first request) goes along */
    bool ok = conn_write(c);
    if (r == 1 || r == TLS_HS_WAIT) { /* done, or held for a certificate (the first loop goes on) */
        conn_give(c, r == 1);
        return;
    }
    if (r < 0 || !ok) { /* its alert was written if it could be */
        conn_end(c, true);
        return;
    }
    conn_poll(c);
}

static void on_conn_timeout(uv_timer_t *t)
{
    conn_end(t->data, true); /* a stalled handshake */
}

static void on_accept(uv_poll_t *p, int status, int events);

static void on_pause_end(uv_timer_t *t)
{
    struct hs_loop *l = t->data;
    uv_poll_start(&l->accept, UV_READABLE, on_accept);
}

/* A new connection on the listening socket fd: its handshake begins. false: none left, or out of
 * descriptors (accepting pauses a while then: the first loop keeps accepting, and refusing, meanwhile). */
static bool accept_one(struct hs_loop *l, int lfd)
{
    int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
            uv_poll_stop(&l->accept);
            uv_timer_start(&l->pause, on_pause_end, HS_PAUSE_MS, 0);
        }
        return false;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    struct hs_conn *c = xcalloc(1, sizeof(*c));
    c->l = l;
    c->fd = fd;
    c->tls = kago__tls_conn_new(l->hs->srv->tls, &c->out);
    uv_poll_init(&l->loop, &c->poll, fd);
    uv_timer_init(&l->loop, &c->timer);
    c->poll.data = c->timer.data = c;
    c->next = l->conns;
    if (l->conns)
        l->conns->prev = c;
    l->conns = c;
    uv_timer_start(&c->timer, on_conn_timeout, l->hs->srv->opts.tls_handshake_timeout_ms, 0);
    conn_poll(c);
    return true;
}

static void on_accept(uv_poll_t *p, int status, int events)
{
    struct hs_loop *l = p->data;
    (void)events;
    if (status < 0)
        return;
    struct epoll_event ev[KAGO_SERVE_MAX_LISTEN];
    int n = epoll_wait(l->efd, ev, KAGO_SERVE_MAX_LISTEN, 0);
    for (int i = 0; i < n; i++)
        for (int k = 0; k < HS_ACCEPT_BURST && accept_one(l, ev[i].data.fd); k++)
            ; /* (a few per wake-up: the other loops get their share of a burst) */
}

/* Under hs->mu: the loop's listeners become those of generation hs->gen. */
static void apply_listeners(struct hs_loop *l)
{
    struct hsloops *hs = l->hs;
    for (unsigned i = 0; i < l->nlfd; i++) {
        epoll_ctl(l->efd, EPOLL_CTL_DEL, l->lfd[i], NULL);
        close(l->lfd[i]);
    }
    l->nlfd = 0;
    uv_timer_stop(&l->pause);
    for (unsigned i = 0; i < hs->nfds && !hs->stop; i++) {
        int *fd = &hs->lfds[l->id * KAGO_SERVE_MAX_LISTEN + i];
        struct epoll_event ev = {.events = EPOLLIN | EPOLLEXCLUSIVE, .data.fd = *fd};
        if (*fd < 0 || epoll_ctl(l->efd, EPOLL_CTL_ADD, *fd, &ev) < 0)
            continue; /* (the first loop still accepts on it) */
        l->lfd[l->nlfd++] = *fd;
        *fd = -1; /* the loop's now */
    }
    if (l->nlfd)
        uv_poll_start(&l->accept, UV_READABLE, on_accept);
    else
        uv_poll_stop(&l->accept);
    l->gen = hs->gen;
}

static void on_wake(uv_async_t *a)
{
    struct hs_loop *l = a->data;
    struct hsloops *hs = l->hs;
    uv_mutex_lock(&hs->mu);
    if (l->gen != hs->gen) {
        apply_listeners(l);
        hs->acked++;
        uv_cond_broadcast(&hs->cond);
    }
    bool stop = hs->stop;
    uv_mutex_unlock(&hs->mu);
    if (stop &&
        !l->ended) { /* shutdown: handshakes in progress end as the first loop's idle connections do */
        l->ended = true;
        while (l->conns)
            conn_end(l->conns, false);
        uv_close((uv_handle_t *)&l->wake, NULL);
        uv_close((uv_handle_t *)&l->pause, NULL);
        uv_close((uv_handle_t *)&l->accept, NULL);
    }
}

static void loop_main(void *arg)
{
    struct hs_loop *l = arg;
    kago__tls_offload_thread();
    kago__loop_priority(l->hs->srv);
    uv_run(&l->loop, UV_RUN_DEFAULT);
    kago__loop_priority_end(l->hs->srv);
}

/* --- the first loop ------------------------------------------------------------------------------ */

static void on_intake(uv_async_t *a)
{
    struct hsloops *hs = a->data;
    uv_mutex_lock(&hs->mu);
    struct hs_handoff *h = hs->head;
    hs->head = NULL;
    hs->tail = &hs->head;
    uv_mutex_unlock(&hs->mu);
    while (h) {
        struct hs_handoff *next = h->next;
        kago__client_take_tls(hs->srv, h->fd, h->tls, &h->out);
        sbuf_free(&h->out);
        free(h);
        h = next;
    }
}

unsigned kago__hs_default_threads(void)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof(set), &set) < 0)
        return 1;
    int n = CPU_COUNT(&set);
    return n < 1 ? 1 : n > KAGO_SERVE_MAX_THREADS ? KAGO_SERVE_MAX_THREADS : (unsigned)n;
}

int kago__hs_start(struct server *srv, struct kago_error **err)
{
    unsigned threads = srv->opts.threads ? srv->opts.threads : kago__hs_default_threads();
    bool any_tls = false;
    for (unsigned i = 0; i < srv->nls; i++)
        any_tls |= srv->ls[i].tls;
    if (threads < 2 || !any_tls)
        return 0;
    if (kago__spawner_pid() < 0) { /* a raw clone of a threaded process may find a lock another thread held */
        kago__slog(srv, SLOG_WARN, NULL, NULL,
                   "--threads %u: one event loop, since serve clones its containers itself (no spawner)",
                   threads);
        return 0;
    }
    kago__spawner_require("serve runs handshake loops (--threads)");
    struct hsloops *hs = xcalloc(1, sizeof(*hs));
    hs->srv = srv;
    hs->n = srv->nshards > 1 ? threads : threads - 1; /* (with request loops, the first takes no handshake) */
    hs->loops = xcalloc(hs->n, sizeof(*hs->loops));
    hs->lfds = xmalloc(sizeof(int) * hs->n * KAGO_SERVE_MAX_LISTEN);
    for (unsigned i = 0; i < hs->n * KAGO_SERVE_MAX_LISTEN; i++)
        hs->lfds[i] = -1;
    hs->tail = &hs->head;
    uv_mutex_init(&hs->mu);
    uv_cond_init(&hs->cond);
    uv_async_init(srv->loop, &hs->intake, on_intake);
    hs->intake.data = hs;
    uv_unref((uv_handle_t *)&hs->intake); /* (the loop ends without waiting for handshakes) */
    srv->hs = hs;
    for (unsigned i = 0; i < hs->n; i++) {
        struct hs_loop *l = &hs->loops[i];
        l->hs = hs;
        l->id = i;
        l->rbuf = xmalloc(HS_RBUF);
        uv_loop_init(&l->loop);
        l->loop.data = l;
        uv_async_init(&l->loop, &l->wake, on_wake);
        l->wake.data = l;
        uv_timer_init(&l->loop, &l->pause);
        l->pause.data = l;
        int r = (l->efd = epoll_create1(EPOLL_CLOEXEC)) < 0 ? -errno : 0;
        if (r == 0) {
            uv_poll_init(&l->loop, &l->accept, l->efd);
            l->accept.data = l;
            r = uv_thread_create(&l->tid, loop_main, l);
        }
        if (r < 0) {
            kago_error_set(err, -r, "serve: --threads: starting handshake loop %u", i + 2);
            uv_close((uv_handle_t *)&l->wake, NULL);
            uv_close((uv_handle_t *)&l->pause, NULL);
            if (l->efd >= 0) {
                uv_close((uv_handle_t *)&l->accept, NULL);
                close(l->efd);
            }
            uv_run(&l->loop, UV_RUN_DEFAULT);
            uv_loop_close(&l->loop);
            free(l->rbuf);
            hs->n = i; /* the loops started so far end with the rest (kago__hs_join at exit) */
            kago__hs_stop(srv);
            return -1;
        }
    }
    return kago__hs_listen(srv, err);
}

int kago__hs_listen(struct server *srv, struct kago_error **err)
{
    struct hsloops *hs = srv->hs;
    if (!hs || hs->stop)
        return 0;
    int fds[KAGO_SERVE_MAX_LISTEN];
    unsigned n = 0;
    if (!srv->stopping && !srv->handover)
        for (unsigned i = 0; i < srv->nls; i++) {
            struct listener *l = &srv->ls[i];
            uv_os_fd_t fd;
            if (l->tls && l->tcp.data && !uv_is_closing((uv_handle_t *)&l->tcp) &&
                uv_fileno((uv_handle_t *)&l->tcp, &fd) == 0)
                fds[n++] = fd;
        }
    uv_mutex_lock(&hs->mu);
    int ret = 0;
    for (unsigned k = 0; k < hs->n; k++)
        for (unsigned i = 0; i < KAGO_SERVE_MAX_LISTEN; i++) {
            int *d = &hs->lfds[k * KAGO_SERVE_MAX_LISTEN + i];
            if (*d >= 0)
                close(*d);
            *d = i < n ? fcntl(fds[i], F_DUPFD_CLOEXEC, 3) : -1;
            if (i < n && *d < 0 && !ret)
                ret = kago_error_set(err, errno, "serve: --threads: a copy of listening socket %d", fds[i]);
        }
    hs->nfds = n;
    hs->gen++;
    hs->acked = 0;
    for (unsigned k = 0; k < hs->n; k++)
        uv_async_send(&hs->loops[k].wake);
    while (hs->acked < hs->n) /* (so that a loop no longer accepts once this returns: hand-over, stop) */
        uv_cond_wait(&hs->cond, &hs->mu);
    uv_mutex_unlock(&hs->mu);
    return ret;
}

void kago__hs_stop(struct server *srv)
{
    struct hsloops *hs = srv->hs;
    if (!hs || hs->stop) /* (once: a loop that ended has no wake-up handle left) */
        return;
    uv_mutex_lock(&hs->mu);
    hs->stop = true;
    hs->nfds = 0;
    hs->gen++;
    hs->acked = 0;
    for (unsigned k = 0; k < hs->n; k++)
        uv_async_send(&hs->loops[k].wake);
    uv_mutex_unlock(&hs->mu);
}

void kago__hs_join(struct server *srv)
{
    struct hsloops *hs = srv->hs;
    if (!hs || hs->joined)
        return;
    kago__hs_stop(srv);
    for (unsigned k = 0; k < hs->n; k++) {
        struct hs_loop *l = &hs->loops[k];
        uv_thread_join(&l->tid);
        uv_loop_close(&l->loop);
        for (unsigned i = 0; i < l->nlfd; i++)
            close(l->lfd[i]);
        close(l->efd);
        free(l->rbuf);
    }
    hs->joined = true;
    for (struct hs_handoff *h = hs->head, *next; h; h = next) { /* handed over as serve ended */
        next = h->next;
        close(h->fd);
        kago__tls_conn_free(h->tls);
        sbuf_free(&h->out);
        free(h);
    }
    hs->head = NULL;
    hs->tail = &hs->head;
}

void kago__hs_free(struct server *srv)
{
    struct hsloops *hs = srv->hs;
    if (!hs)
        return;
    kago__hs_join(srv);
    for (unsigned i = 0; i < hs->n * KAGO_SERVE_MAX_LISTEN; i++)
        if (hs->lfds[i] >= 0)
            close(hs->lfds[i]);
    uv_mutex_destroy(&hs->mu);
    uv_cond_destroy(&hs->cond);
    free(hs->lfds);
    free(hs->loops);
    free(hs);
    srv->hs = NULL;
}

void kago__hs_stats(const struct server *srv, unsigned *loops, uint64_t *handed)
{
    struct hsloops *hs = srv->hs;
    *loops = hs ? hs->n : 0;
    *handed = 0;
    if (hs) {
        uv_mutex_lock(&hs->mu);
        *handed = hs->handed;
        uv_mutex_unlock(&hs->mu);
    }
}
