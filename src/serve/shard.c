/* kago serve — --threads N: N request loops ("shards"), each on a thread of its own.
 *
 * Each app is owned by one request loop (by a hash of its name): that loop reads its requests, holds them,
 * talks to its instances' upstream connections and keeps its pool's counts, so a pool is still seen by one
 * thread at a time and the request path takes no lock. A connection goes to the owner of the app its
 * request names (conn.c: kago__client_move); an HTTP/2 connection to the owner of its TLS name.
 *
 * The first loop (server.c) keeps what spans apps: the listeners and admin API, signals, the tick, reloads,
 * the start queue and every instance's own handles (its creation, readiness probe, exit, logs), ACME,
 * the cluster, the dashboard. It runs only while every request loop is stopped: it holds each one's mutex
 * while it runs, and a request loop holds its own while it runs and lets it go only to wait for events
 * (libuv's embedding interface: uv_backend_fd and uv_backend_timeout). So the first loop may touch
 * anything, a request loop's handles included, exactly as when there was one loop; request loops run in
 * parallel with each other and touch only their own connections and apps. What a request loop needs from
 * the first loop (a start, the tick's attention for an app) goes through kago__shard_defer. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>

#include "serve_int.h"
#include "spawner.h"
#include "util.h"

_Thread_local struct shard *kago__shard_self;

struct deferred {
    struct deferred *next;
    void (*fn)(void *a, void *b);
    void *a, *b;
};

static void wait_world(struct server *srv)
{
    if (!__atomic_load_n(&srv->world_want, __ATOMIC_ACQUIRE))
        return;
    uv_mutex_lock(&srv->world_mu);
    while (__atomic_load_n(&srv->world_want, __ATOMIC_ACQUIRE))
        uv_cond_wait(&srv->world_cv, &srv->world_mu);
    uv_mutex_unlock(&srv->world_mu);
}

static void world_stop(struct server *srv)
{
    __atomic_store_n(&srv->world_want, 1, __ATOMIC_RELEASE);
    for (unsigned i = 1; i < srv->nshards; i++) {
        uv_mutex_lock(&srv->shards[i].mu);
        /* (its clock was read when it last woke: a timer the first loop starts there counts from now) */
        uv_update_time(srv->shards[i].loop);
    }
}

/* Under the world lock, after the first loop's turn: whether it gave request loop s something to do now
 * (a callback due, a handle closing, a watcher to arm, a timer earlier than it sleeps until). In a storm of
 * starts the first loop takes hundreds of turns a second: waking every loop after each cost a quarter more
 * CPU. (libuv's watcher queue is a private field of uv_loop_t; empty, it points to itself.) */
static bool needs_wake(struct shard *s)
{
    uv_loop_t *l = s->loop;
    int t = uv_backend_timeout(l);
    if (t == 0 || l->watcher_queue[0] != (void *)&l->watcher_queue)
        return true;
    return t > 0 && uv_now(l) + (uint64_t)t < s->sleep_until;
}

static void world_start(struct server *srv)
{
    bool wake[KAGO_SERVE_MAX_THREADS + 1];
    for (unsigned i = 1; i < srv->nshards; i++) {
        wake[i] = !srv->shards[i].ended && needs_wake(&srv->shards[i]);
        uv_mutex_unlock(&srv->shards[i].mu);
    }
    uv_mutex_lock(&srv->world_mu);
    __atomic_store_n(&srv->world_want, 0, __ATOMIC_RELEASE);
    uv_cond_broadcast(&srv->world_cv);
    uv_mutex_unlock(&srv->world_mu);
    for (unsigned i = 1; i < srv->nshards; i++)
        if (wake[i])
            uv_async_send(&srv->shards[i].wake);
}

/* Under the world lock (or on the first loop alone): what the request loops deferred. */
static void run_deferred(struct server *srv)
{
    uv_mutex_lock(&srv->shard_mu);
    struct deferred *d = srv->deferred;
    srv->deferred = NULL;
    srv->deferred_tail = &srv->deferred;
    uv_mutex_unlock(&srv->shard_mu);
    while (d) {
        struct deferred *next = d->next;
        d->fn(d->a, d->b);
        free(d);
        d = next;
    }
}

void kago__shard_defer(struct server *srv, void (*fn)(void *a, void *b), void *a, void *b)
{
    if (!kago__shard_self) {
        fn(a, b);
        return;
    }
    struct deferred *d = xcalloc(1, sizeof(*d));
    *d = (struct deferred){.fn = fn, .a = a, .b = b};
    uv_mutex_lock(&srv->shard_mu);
    *srv->deferred_tail = d;
    srv->deferred_tail = &d->next;
    uv_mutex_unlock(&srv->shard_mu);
    uv_async_send(&srv->shards[0].wake);
}

void kago__shard_give(struct shard *to, struct client *c)
{
    struct server *srv = to->srv;
    uv_mutex_lock(&srv->shard_mu);
    c->next = NULL;
    *to->inbox_tail = c;
    to->inbox_tail = &c->next;
    uv_mutex_unlock(&srv->shard_mu);
    uv_async_send(&to->wake);
}

/* --- accepting on the plain listeners ------------------------------------------------------------ */

#define ACCEPT_BURST 16 /* accepts per wake-up: the other loops get their share of a burst */
#define PAUSE_MS     100

static void on_accept(uv_poll_t *p, int status, int events);

static void on_pause_end(uv_timer_t *t)
{
    struct shard *s = t->data;
    uv_poll_start(&s->accept, UV_READABLE, on_accept);
}

static void on_accept(uv_poll_t *p, int status, int events)
{
    struct shard *s = p->data;
    (void)events;
    if (status < 0)
        return;
    struct epoll_event ev[KAGO_SERVE_MAX_LISTEN];
    int n = epoll_wait(s->efd, ev, KAGO_SERVE_MAX_LISTEN, 0);
    for (int i = 0; i < n; i++)
        for (int k = 0; k < ACCEPT_BURST; k++) {
            int fd = accept4(ev[i].data.fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
            if (fd >= 0) {
                kago__client_take(s, fd);
                continue;
            }
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                uv_poll_stop(&s->accept); /* (the kernel keeps the connection queued meanwhile) */
                uv_timer_start(&s->pause, on_pause_end, PAUSE_MS, 0);
                return;
            }
            break;
        }
}

static void unlisten(struct shard *s)
{
    for (unsigned i = 0; i < s->nlfd; i++) {
        epoll_ctl(s->efd, EPOLL_CTL_DEL, s->lfd[i], NULL);
        close(s->lfd[i]);
    }
    s->nlfd = 0;
    uv_timer_stop(&s->pause);
    uv_poll_stop(&s->accept);
}

void kago__shards_listen(struct server *srv)
{
    for (unsigned k = 1; k < srv->nshards; k++) {
        struct shard *s = &srv->shards[k];
        if (s->ended)
            continue;
        unlisten(s);
        for (unsigned i = 0; i < srv->nls && !srv->stopping && !srv->handover; i++) {
            struct listener *l = &srv->ls[i];
            uv_os_fd_t fd;
            if (l->tls || !l->tcp.data || uv_is_closing((uv_handle_t *)&l->tcp) ||
                uv_fileno((uv_handle_t *)&l->tcp, &fd) != 0)
                continue;
            int d = fcntl(fd, F_DUPFD_CLOEXEC, 3);
            struct epoll_event ev = {.events = EPOLLIN | EPOLLEXCLUSIVE, .data.fd = d};
            if (d < 0 || epoll_ctl(s->efd, EPOLL_CTL_ADD, d, &ev) < 0) {
                kago__slog(srv, SLOG_ERR, NULL, NULL, "request loop %u cannot accept on %s: %s", k, l->addr,
                           strerror(errno));
                if (d >= 0)
                    close(d);
                continue;
            }
            s->lfd[s->nlfd++] = d;
        }
        if (s->nlfd)
            uv_poll_start(&s->accept, UV_READABLE, on_accept);
    }
}

static void on_wake(uv_async_t *h)
{
    struct shard *s = h->data;
    struct server *srv = s->srv;
    uv_mutex_lock(&srv->shard_mu);
    struct client *c = s->inbox;
    s->inbox = NULL;
    s->inbox_tail = &s->inbox;
    bool stop = s->stop;
    uv_mutex_unlock(&srv->shard_mu);
    while (c) {
        struct client *next = c->next;
        kago__client_arrive(s, c);
        c = next;
    }
    if (stop && !s->ended && s->id > 0) {
        s->ended = true;
        kago__client_close_shard(s);
        unlisten(s);
        uv_close((uv_handle_t *)&s->wake, NULL);
        uv_close((uv_handle_t *)&s->accept, NULL);
        uv_close((uv_handle_t *)&s->pause, NULL);
        uv_close((uv_handle_t *)&s->h2_cork, NULL);
    }
}

static void shard_main(void *arg)
{
    struct shard *s = arg;
    struct server *srv = s->srv;
    kago__shard_self = s;
    kago__tls_offload_thread();
    kago__loop_priority(srv);
    uv_mutex_lock(&s->mu);
    while (uv_run(s->loop, UV_RUN_NOWAIT)) {
        struct pollfd p = {.fd = uv_backend_fd(s->loop), .events = POLLIN};
        int timeout = uv_backend_timeout(s->loop);
        s->sleep_until = timeout < 0 ? UINT64_MAX : uv_now(s->loop) + (uint64_t)timeout;
        uv_mutex_unlock(&s->mu);
        wait_world(srv);
        poll(&p, 1, timeout);
        uv_mutex_lock(&s->mu);
    }
    uv_mutex_unlock(&s->mu);
    kago__loop_priority_end(srv);
}

unsigned kago__shards_wanted(struct server *srv)
{
    unsigned threads = srv->opts.threads ? srv->opts.threads : kago__hs_default_threads();
    /* (--cluster: a pool's placement, publishing and remote instances are etcd's, on the first loop) */
    return threads < 2 || kago__spawner_pid() < 0 || srv->opts.cluster ? 1 : threads + 1;
}

void kago__shards_init(struct server *srv, unsigned n)
{
    srv->nshards = n;
    srv->shards = xcalloc(n, sizeof(*srv->shards));
    uv_mutex_init(&srv->shard_mu);
    uv_mutex_init(&srv->world_mu);
    uv_cond_init(&srv->world_cv);
    srv->deferred_tail = &srv->deferred;
    for (unsigned i = 0; i < n; i++) {
        struct shard *s = &srv->shards[i];
        s->srv = srv;
        s->id = i;
        s->loop = i ? &s->own : srv->loop;
        s->inbox_tail = &s->inbox;
        if (i) {
            uv_loop_init(&s->own);
            s->efd = epoll_create1(EPOLL_CLOEXEC);
            if (s->efd < 0) /* (out of descriptors at start: serve could not run anyway) */
                abort();
            uv_poll_init(s->loop, &s->accept, s->efd);
            s->accept.data = s;
            uv_timer_init(s->loop, &s->pause);
            s->pause.data = s;
        }
        uv_mutex_init(&s->mu);
        uv_async_init(s->loop, &s->wake, on_wake);
        s->wake.data = s;
        TAILQ_INIT(&s->h2_corked);
        uv_idle_init(s->loop, &s->h2_cork);
    }
    uv_unref((uv_handle_t *)&srv->shards[0].wake);
}

int kago__shards_start(struct server *srv, struct kago_error **err)
{
    if (srv->nshards > 1)
        kago__spawner_require("serve runs request loops (--threads)");
    kago__shards_listen(srv);
    for (unsigned i = 1; i < srv->nshards; i++) {
        int r = uv_thread_create(&srv->shards[i].tid, shard_main, &srv->shards[i]);
        if (r < 0) {
            srv->nstarted = i;
            return kago_error_set(err, -r, "serve: --threads: starting request loop %u", i);
        }
    }
    srv->nstarted = srv->nshards;
    return 0;
}

struct shard *kago__shard_of(struct server *srv, const char *app)
{
    if (srv->nshards < 2)
        return &srv->shards[0];
    uint32_t h = 2166136261u; /* FNV-1a: the same app has the same owner after a reload or restart */
    for (const char *p = app; *p; p++)
        h = (h ^ (unsigned char)*p) * 16777619u;
    return &srv->shards[1 + h % (srv->nshards - 1)];
}

struct shard *kago__shard_next(struct server *srv)
{
    if (srv->nshards < 2)
        return &srv->shards[0];
    unsigned n = __atomic_fetch_add(&srv->shard_rr, 1, __ATOMIC_RELAXED); /* (handshake loops too) */
    return &srv->shards[1 + n % (srv->nshards - 1)];
}

void kago__shards_run(struct server *srv)
{
    if (srv->nshards < 2) {
        uv_run(srv->loop, UV_RUN_DEFAULT);
        return;
    }
    for (;;) {
        world_stop(srv);
        run_deferred(srv);
        int alive = uv_run(srv->loop, UV_RUN_NOWAIT);
        world_start(srv);
        if (!alive || srv->loop_stopped)
            break;
        struct pollfd p = {.fd = uv_backend_fd(srv->loop), .events = POLLIN};
        poll(&p, 1, uv_backend_timeout(srv->loop));
    }
}

void kago__shards_join(struct server *srv)
{
    kago__hs_join(srv); /* (first: a handshake loop gives its connections to the request loops) */
    for (unsigned i = 1; i < srv->nstarted; i++) {
        struct shard *s = &srv->shards[i];
        uv_mutex_lock(&srv->shard_mu);
        s->stop = true;
        uv_mutex_unlock(&srv->shard_mu);
        uv_async_send(&s->wake);
        uv_thread_join(&s->tid);
    }
    srv->nstarted = 0;
    run_deferred(srv); /* (a start deferred as serve ended: its pool is stopping, it kills what it makes) */
}

void kago__shards_free(struct server *srv)
{
    for (unsigned i = 0; i < srv->nshards; i++) {
        struct shard *s = &srv->shards[i];
        for (struct client *c = s->inbox, *next; c; c = next) { /* moved as serve ended */
            next = c->next;
            kago__client_discard(c);
        }
        if (i) {
            if (!s->ended) { /* never started */
                unlisten(s);
                uv_close((uv_handle_t *)&s->wake, NULL);
                uv_close((uv_handle_t *)&s->accept, NULL);
                uv_close((uv_handle_t *)&s->pause, NULL);
                uv_close((uv_handle_t *)&s->h2_cork, NULL);
                uv_run(&s->own, UV_RUN_DEFAULT);
            }
            uv_loop_close(&s->own);
            close(s->efd);
        }
        uv_mutex_destroy(&s->mu);
    }
    uv_mutex_destroy(&srv->shard_mu);
    uv_mutex_destroy(&srv->world_mu);
    uv_cond_destroy(&srv->world_cv);
    free(srv->shards);
    srv->shards = NULL;
    srv->nshards = 0;
}
