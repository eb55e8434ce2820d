/* kago serve — connections into an instance's network namespace. The socket is created inside
 * the instance's netns (setns there, socket(), setns back), then connected to 127.0.0.1:PORT:
 * no bridge, no routes, and a missing namespace fails instead of reaching another host. */
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "serve_int.h"
#include "util.h"

#define UP_RBUF (64 * 1024)
/* Connections kept open per instance for reuse. A connection is kept after its response while the
 * instance has at most this many in all (busy + idle), so the idle set follows the concurrency the
 * instance actually sees: closing and reopening one per request under load costs a connect,
 * two setns and an accept per request. */
#define MAX_UP_CONNS 1024

/* Upstream reads are consumed (copied to the client's queue) before the callback returns, so
 * one buffer serves every upstream connection. */
static _Thread_local char up_rbuf[UP_RBUF];

static void up_close(struct upconn *u);

int kago__serve_listening(const char *net_dir, unsigned port)
{
    static const char *const files[] = {"tcp", "tcp6"};
    int readable = 0, err = ENOENT;
    for (size_t i = 0; i < 2; i++) {
        char path[PATH_MAX], line[512];
        snprintf(path, sizeof(path), "%s/%s", net_dir, files[i]);
        FILE *f = fopen(path, "re");
        if (!f) {
            err = errno;
            continue;
        }
        readable++;
        bool found = false;
        /* "  sl  local_address rem_address   st ...": "0: 0100007F:1F90 00000000:0000 0A ..." (hex) */
        while (!found && fgets(line, sizeof(line), f)) {
            unsigned lport, st;
            if (sscanf(line, " %*u: %*[0-9A-Fa-f]:%x %*[0-9A-Fa-f]:%*x %x", &lport, &st) == 2)
                found = lport == port && st == 0x0A; /* TCP_LISTEN */
        }
        fclose(f);
        if (found)
            return 1;
    }
    return readable ? 0 : -err;
}

static int on_resp_head(struct http_msg *m)
{
    struct upconn *u = m->owner;
    if (!u->client)
        return HPE_USER;
    return kago__client_resp_head(u->client, m);
}

static int on_resp_body(struct http_msg *m, const char *at, size_t n)
{
    struct upconn *u = m->owner;
    return u->client ? kago__client_resp_body(u->client, at, n) : HPE_USER;
}

static int on_resp_done(struct http_msg *m)
{
    int st = m->parser.status_code;
    if (st >= 100 && st < 200)
        return 0; /* 1xx: the final response follows (101 ends in HPE_PAUSED_UPGRADE) */
    return HPE_PAUSED;
}

static const struct http_msg_cbs resp_cbs = {
    .head = on_resp_head, .body = on_resp_body, .done = on_resp_done};

/* Apps speak HTTP loosely (busybox httpd passes CGI headers through with bare LF); the response
 * parser tolerates that, and kago re-writes every header line it forwards with CRLF. Requests from
 * clients stay strict: that is where smuggling comes from. */
static void resp_init(struct upconn *u)
{
    kago__http_msg_init(&u->resp, HTTP_RESPONSE, &resp_cbs, u);
    llhttp_set_lenient_headers(&u->resp.parser, 1);
}

static void on_up_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    buf->base = up_rbuf;
    buf->len = sizeof(up_rbuf);
}

static void unlink_idle(struct upconn *u)
{
    for (struct upconn **pp = &u->inst->idle; *pp; pp = &(*pp)->next_idle)
        if (*pp == u) {
            *pp = u->next_idle;
            break;
        }
    u->next_idle = NULL;
}

/* The upstream went away under a client. */
static void abort_client(struct upconn *u, int err)
{
    struct client *c = u->client;
    if (!c)
        return;
    if (c->state == C_TUNNEL) {
        u->client = NULL;
        c->up = NULL;
        c->close_after = true;
        kago__client_resp_truncated(c);
    } else if (c->resp_started) {
        kago__client_resp_truncated(c);
    } else {
        kago__client_upstream_failed(c, err);
    }
}

static void handle_response(struct upconn *u, const char *data, size_t n)
{
    struct client *c = u->client;
    size_t used;
    llhttp_errno_t e = kago__http_execute(&u->resp, data, n, &used);
    if (e == HPE_OK) {
        if (u->client)
            kago__outq_flush(&u->client->out);
        return;
    }
    if (e == HPE_PAUSED || e == HPE_PAUSED_UPGRADE) {
        llhttp_resume(&u->resp.parser);
        bool extra = used < n;
        if (extra && e == HPE_PAUSED)
            u->resp.parser.flags |= F_CONNECTION_CLOSE; /* bytes after the response: do not reuse */
        kago__client_resp_done(c);
        if (e == HPE_PAUSED_UPGRADE && extra && c->state == C_TUNNEL)
            kago__client_tunnel_data(c, data + used, n - used);
        return;
    }
    abort_client(u, UV_EPROTO);
}

static void relay_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf);

static void on_up_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    struct upconn *u = s->data;
    struct instance *inst = u->inst; /* (alive: u counts in its nconns until u's handle is closed) */
    relay_read(s, n, buf);
    kago__instance_answered(inst);
}

static void relay_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    struct upconn *u = s->data;
    if (n == 0)
        return;
    struct client *c = u->client;
    if (n < 0) {
        if (c && c->state != C_TUNNEL && c->resp_started && llhttp_message_needs_eof(&u->resp.parser)) {
            u->resp.parser.flags |= F_CONNECTION_CLOSE;
            if (llhttp_finish(&u->resp.parser) == HPE_PAUSED) {
                kago__client_resp_done(c);
                return;
            }
        }
        if (c)
            abort_client(u, (int)n);
        up_close(u);
        return;
    }
    if (!c) {
        up_close(u); /* an idle keep-alive connection must stay silent */
        return;
    }
    u->got_bytes = true;
    u->read_ms = kago__serve_now_ms();
    if (c->state == C_TUNNEL) {
        kago__client_tunnel_data(c, buf->base, n);
    } else {
        handle_response(u, buf->base, n);
    }
    c = u->client;
    if (c && kago__outq_full(&c->out)) {
        kago__upconn_pause(u);
        kago__client_stalled(c);
    }
}

void kago__upconn_pause(struct upconn *u)
{
    if (u->reading)
        uv_read_stop((uv_stream_t *)&u->tcp);
    u->reading = false;
}

void kago__upconn_resume(struct upconn *u)
{
    if (u->connected && !u->closing && !u->reading) {
        u->reading = uv_read_start((uv_stream_t *)&u->tcp, on_up_alloc, on_up_read) == 0;
        u->read_ms = kago__serve_now_ms();
    }
}

static void on_up_written(struct outq *q, int status)
{
    struct upconn *u = q->owner;
    if (status < 0) {
        if (status != UV_ECANCELED) {
            abort_client(u, status);
            up_close(u);
        }
        return;
    }
    if (u->client && !kago__outq_full(q))
        kago__client_upstream_drained(u->client);
}

static void on_up_closed(uv_handle_t *h)
{
    struct upconn *u = h->data;
    struct instance *inst = u->inst;
    kago__outq_free(&u->out);
    kago__http_msg_free(&u->resp);
    free(u);
    kago__instance_answered(inst); /* (first: while nconns holds inst) */
    inst->nconns--;
    kago__instance_unref(inst);
}

static void up_close(struct upconn *u)
{
    if (u->closing)
        return;
    u->closing = true;
    if (u->client) {
        u->client->up = NULL;
        u->client = NULL;
    }
    unlink_idle(u);
    if (u->prev)
        u->prev->next = u->next;
    else
        u->inst->conns = u->next;
    if (u->next)
        u->next->prev = u->prev;
    uv_close((uv_handle_t *)&u->tcp, on_up_closed);
}

void kago__upconn_close(struct upconn *u)
{
    up_close(u);
}

/* A probe's result and a peer's failure are the first loop's (shard.c): an instance is never freed
 * while a request loop runs, so it is still there when the first loop takes the call. */
static void probe_result(void *inst, void *status)
{
    kago__instance_probe_result(inst, (int)(intptr_t)status);
}

static void peer_failed(void *inst, void *status)
{
    kago__cluster_peer_failed(inst, (int)(intptr_t)status);
}

static void on_connect(uv_connect_t *req, int status)
{
    struct upconn *u = req->data;
    if (u->closing)
        return;
    struct instance *inst = u->inst;
    struct server *srv = inst->app->srv;
    if (status < 0) {
        if (u->probe) {
            up_close(u);
            kago__shard_defer(srv, probe_result, inst, (void *)(intptr_t)status);
        } else {
            if (inst->remote)
                kago__shard_defer(srv, peer_failed, inst, (void *)(intptr_t)status);
            abort_client(u, status);
            up_close(u);
        }
        return;
    }
    u->connected = true;
    kago__upconn_resume(u);
    if (u->probe) {
        u->probe = false;
        kago__upconn_release(u, true); /* the probe's connection serves the first request */
        kago__shard_defer(srv, probe_result, inst, (void *)(intptr_t)0);
    } else if (u->client) {
        kago__client_upstream_ready(u->client);
    }
}

/* A TCP socket that belongs to inst's network namespace: entered through the init's pidfd (Linux 5.8), so
 * that a running instance holds no namespace descriptor of its own (at 5,000 instances, 5,000 fewer). */
static int netns_socket(struct instance *inst)
{
    int host = inst->app->srv->host_netns;
    if (setns(kago_container_pidfd(inst->c), CLONE_NEWNET) < 0)
        return errno == ESRCH ? -ECONNREFUSED : -errno; /* its init has exited: nothing listens there */
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int saved = errno;
    if (setns(host, CLONE_NEWNET) < 0) {
        /* Staying in a tenant's namespace would send every later connection there. */
        kago__slog(inst->app->srv, SLOG_ERR, NULL, NULL, "cannot return to the host network namespace: %s",
                   strerror(errno));
        abort();
    }
    return fd < 0 ? -saved : fd;
}

struct upconn *kago__upconn_open(struct instance *inst, struct client *c)
{
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons(inst->app->app.port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    /* another node's instance (--cluster): its node's --advertise address, from this namespace */
    int fd = inst->remote ? kago__cluster_socket(inst, &sa) : netns_socket(inst);
    if (fd < 0) {
        if (c) {
            c->up = NULL;
            kago__client_upstream_failed(c, uv_translate_sys_error(-fd));
        } else {
            kago__instance_probe_result(inst, uv_translate_sys_error(-fd));
        }
        return NULL;
    }
    struct upconn *u = xcalloc(1, sizeof(*u));
    u->inst = inst;
    u->client = c;
    u->probe = c == NULL;
    uv_tcp_init(inst->app->shard->loop, &u->tcp); /* (the probe's too: it serves the first request) */
    u->tcp.data = u;
    u->creq.data = u;
    kago__outq_init(&u->out, (uv_stream_t *)&u->tcp, on_up_written, u);
    resp_init(u);
    inst->nconns++;
    u->next = inst->conns;
    if (inst->conns)
        inst->conns->prev = u;
    inst->conns = u;
    int r = uv_tcp_open(&u->tcp, fd);
    if (r == 0) {
        uv_tcp_nodelay(&u->tcp, 1);
        r = uv_tcp_connect(&u->creq, &u->tcp, (struct sockaddr *)&sa, on_connect);
    } else {
        close(fd);
    }
    if (r < 0) {
        u->client = NULL;
        up_close(u);
        if (c) {
            c->up = NULL;
            kago__client_upstream_failed(c, r);
        } else {
            kago__instance_probe_result(inst, r);
        }
        return NULL;
    }
    if (c)
        c->up = u;
    return u;
}

struct upconn *kago__upconn_get(struct instance *inst)
{
    struct upconn *u = inst->idle;
    if (!u)
        return NULL;
    inst->idle = u->next_idle;
    u->next_idle = NULL;
    u->reused = true;
    u->idled = kago__serve_now_ms() - u->idle_since >= UPCONN_APP_IDLE_MS;
    u->got_bytes = false;
    return u;
}

void kago__upconn_sweep(struct instance *inst, uint64_t now)
{
    /* the idle list is last in, first out: what follows an expired connection has idled longer */
    struct upconn **pp = &inst->idle;
    while (*pp && now - (*pp)->idle_since < UPCONN_IDLE_MS)
        pp = &(*pp)->next_idle;
    while (*pp)
        up_close(*pp); /* (unlinks it: *pp becomes its successor) */
    /* A response the app has begun and then sends nothing of for --response-timeout, while the client
     * takes what comes (its reads not paused): cut, as nginx's proxy_read_timeout, and the app's slot
     * freed (an app that answers a head and goes silent held the slot until its instance's lifetime). */
    uint64_t limit = inst->app->srv->opts.response_timeout_ms;
    for (struct upconn *u = inst->conns, *next; u && limit; u = next) {
        next = u->next;
        struct client *c = u->client;
        if (c && u->reading && c->state == C_PROXY && c->resp_started && now - u->read_ms >= limit) {
            __atomic_add_fetch(&inst->app->srv->read_timeouts, 1, __ATOMIC_RELAXED);
            abort_client(u, UV_ETIMEDOUT);
            up_close(u);
        }
    }
}

void kago__upconn_release(struct upconn *u, bool reusable)
{
    struct instance *inst = u->inst;
    u->client = NULL;
    if (!reusable || u->closing || !inst->pi ||
        (inst->pi->state != POOL_READY && inst->pi->state != POOL_STARTING) || kago__outq_size(&u->out) ||
        inst->nconns > MAX_UP_CONNS) {
        up_close(u);
        return;
    }
    resp_init(u);
    sbuf_reset(&u->resp.raw, 4096);
    u->idle_since = kago__serve_now_ms();
    u->next_idle = inst->idle;
    inst->idle = u;
    kago__upconn_resume(u);
}
