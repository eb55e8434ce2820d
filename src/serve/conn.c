/* kago serve — the client side of the proxy: accept, read and parse requests, route, hold,
 * relay bodies with backpressure, answer in order, keep-alive, timeouts, errors.
 * One request at a time per connection: a pipelined request waits in the read buffer (the
 * parser is paused) until the previous response is complete, so answers keep their order. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "h2peek.h"
#include "pages.h"
#include "serve_int.h"
#include "util.h"

static void client_parse(struct client *c);
static void update_reading(struct client *c);
static void give_or_close_later(struct client *c);
static void client_close(struct client *c);
static void arm_timer(struct client *c);
static void h2_head_timer(struct client *c);
static void finish_exchange(struct client *c, bool reusable);
static void tls_pump(struct client *c);
static void client_move(struct client *c, struct shard *to);
static bool move_if_written(struct client *c);
static void h2_begin_tls(struct client *c);
static struct shard *owner_of_name(struct server *srv, const char *name);

/* The read buffer, taken when bytes are about to arrive: a connection idle between two requests gives it
 * back (idle_trim, from kago__client_trim_idle), as nginx frees its header buffer on a keep-alive
 * connection: 8 KiB less per idle client. A page buffer (pages.h): freed, its pages go back whole. */
static char *rbuf(struct client *c)
{
    if (!c->rbuf)
        c->rbuf = kago__pages_get(CLIENT_RBUF);
    return c->rbuf;
}

static void rbuf_free(struct client *c)
{
    if (c->h2s)
        free(c->rbuf); /* an HTTP/2 stream's request head (kago__client_stream_input) */
    else if (c->rbuf != c->shard->h2_rbuf)
        kago__pages_put(c->rbuf, CLIENT_RBUF);
    c->rbuf = NULL;
}

static const struct http_msg_cbs req_cbs;

/* The request being parsed: made when its first byte is, gone between requests (200 bytes less per idle
 * connection). */
static struct http_msg *req(struct client *c)
{
    if (!c->req) {
        c->req = xcalloc(1, sizeof(*c->req));
        kago__http_msg_init(c->req, HTTP_REQUEST, &req_cbs, c);
    }
    return c->req;
}

static void req_free(struct client *c)
{
    if (!c->req)
        return;
    kago__http_msg_free(c->req);
    free(c->req);
    c->req = NULL;
}

static bool between_requests(const struct client *c)
{
    return c->state == C_HEAD && !c->req_begun && c->rpos == c->rlen && !c->h2s &&
           c->rbuf != c->shard->h2_rbuf;
}

/* A response sent, or a handshake done, with nothing read ahead: the write buffers that are empty and the
 * request's parse state go at once, as nginx frees a request's pool when it ends. Kept until a second of
 * idleness, they sat between the objects of the connections accepted meanwhile: holes in malloc's heap
 * that stayed resident (docs/serve.md, "Idle connections"). */
static void trim_between(struct client *c)
{
    if (!between_requests(c))
        return;
    kago__outq_trim(&c->out);
    req_free(c);
}

/* Idle for a second: the read buffer goes too (its pages go back to the kernel), and OpenSSL's. */
static bool idle_trim(struct client *c)
{
    if (!between_requests(c))
        return false;
    trim_between(c);
    rbuf_free(c);
    c->rpos = c->rlen = 0;
    if (c->tls && !c->tls_pumping)
        kago__tls_idle(c->tls);
    return true;
}

static void h2_begin(struct client *c)
{
    size_t n = c->rlen - c->rpos;
    if (n)
        memcpy(c->shard->h2_rbuf, c->rbuf + c->rpos, n); /* the preface read so far (h2c) */
    rbuf_free(c);
    c->rbuf = c->shard->h2_rbuf;
    c->rpos = 0;
    c->rlen = n;
    kago__h2_start(c);
}

/* The TLS session a request came over: its connection's for an HTTP/2 stream. */
static struct tls_conn *client_tls(const struct client *c)
{
    return c->conn ? c->conn->tls : c->tls;
}

uint64_t kago__serve_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + ts.tv_nsec / 1000;
}

/* --- parser callbacks ------------------------------------------------------------------------ */

static int on_req_head(struct http_msg *m)
{
    struct client *c = m->owner;
    c->state = C_ROUTE;
    return HPE_PAUSED; /* route outside the parser */
}

static void add_chunk(struct sbuf *b, const char *at, size_t n)
{
    sbuf_addu(b, n, 16);
    sbuf_add(b, "\r\n", 2);
    sbuf_add(b, at, n);
    sbuf_add(b, "\r\n", 2);
}

static int on_req_body(struct http_msg *m, const char *at, size_t n)
{
    struct client *c = m->owner;
    c->body_in += n;
    if (c->app && c->app->app.max_body && c->body_in > c->app->app.max_body) {
        m->error = 413;
        return HPE_USER;
    }
    if (!c->up)
        return HPE_USER;
    if (c->info.chunked)
        add_chunk(&c->up->out.pend, at, n);
    else
        sbuf_add(&c->up->out.pend, at, n);
    return 0;
}

static int on_req_done(struct http_msg *m)
{
    struct client *c = m->owner;
    if (c->info.chunked && c->up)
        sbuf_add(&c->up->out.pend, "0\r\n\r\n", 5);
    c->req_done = true;
    /* An upgrade request ends in HPE_PAUSED_UPGRADE; what follows it is tunnel data. */
    return c->info.upgrade ? 0 : HPE_PAUSED;
}

static const struct http_msg_cbs req_cbs = {.head = on_req_head, .body = on_req_body, .done = on_req_done};

/* --- writing to the client ------------------------------------------------------------------ */

static void on_client_written(struct outq *q, int status)
{
    struct client *c = q->owner;
    if (status < 0) {
        client_close(c);
        return;
    }
    if (c->state == C_CLOSING) {
        if (kago__outq_size(&c->out) == 0)
            client_close(c);
        return;
    }
    if (c->state == C_H2) {
        kago__h2_output(c);
        if (!c->closed)
            update_reading(c);
        return;
    }
    if (c->up && !kago__outq_full(&c->out))
        kago__upconn_resume(c->up);
    if (!move_if_written(c) && c->srv->handover)
        give_or_close_later(c);
}

static void flush_client(struct client *c)
{
    if (c->h2s) { /* an HTTP/2 stream: nghttp2 takes it from there (h2.c), the stream's end closes it */
        kago__outq_flush(&c->out);
        return;
    }
    if (c->tls && c->state == C_CLOSING && kago__outq_flush(&c->out) == 0)
        kago__tls_shutdown(c->tls); /* close_notify after what is queued, encrypted just now (once) */
    if (kago__outq_flush(&c->out) < 0) {
        client_close(c);
        return;
    }
    if (c->state == C_CLOSING && kago__outq_size(&c->out) == 0)
        client_close(c);
}

/* The request's access log line in JSON (--log-format json). */
static void log_access_json(struct client *c, uint64_t bytes, double ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    const struct http_msg *m = req(c);
    struct logfmt_access r = {
        .unix_us = (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000,
        .ip = c->ip,
        .method = llhttp_method_name(m->parser.method),
        .host = c->info.host,
        .host_len = c->info.host_len > 200 ? 200 : c->info.host_len,
        .path = m->raw.data ? m->raw.data + m->url : "",
        .path_len = m->url_len > 512 ? 512 : m->url_len,
        .status = c->status,
        .bytes = bytes,
        .duration_ms = ms,
        .app = c->app ? c->app->app.name : NULL,
        .instance = c->inst ? c->inst->name : NULL,
        .tier = c->cold_us < 0 ? "none"
                : c->cold_kind ? c->cold_kind
                               : "start",
        .cold_ms = c->cold_us < 0 ? 0 : c->cold_us / 1000.0,
        .tls = client_tls(c) ? kago__tls_version(client_tls(c)) : NULL,
    };
    cleanup_free char *line = kago__logfmt_json_access(&r);
    fputs(line, c->srv->access_log);
    fflush(c->srv->access_log);
}

static void log_access(struct client *c)
{
    struct server *srv = c->srv;
    if (!srv->access_log)
        return;
    if (kago__slog_format(srv) == KAGO_LOG_JSON) {
        log_access_json(c, kago__outq_mark(&c->out) - c->out_mark,
                        (kago__serve_now_us() - c->t_begin) / 1000.0);
        return;
    }
    char when[32];
    time_t t = time(NULL);
    struct tm tm;
    strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", localtime_r(&t, &tm));
    const struct http_msg *m = req(c);
    const char *method = llhttp_method_name(m->parser.method);
    int hl = c->info.host_len > 200 ? 200 : (int)c->info.host_len;
    int ul = m->url_len > 512 ? 512 : (int)m->url_len;
    double ms = (kago__serve_now_us() - c->t_begin) / 1000.0;
    char cold[32] = "-";
    if (c->cold_us >= 0)
        snprintf(cold, sizeof(cold), "%.1fms%s%s", c->cold_us / 1000.0, c->cold_kind ? ":" : "",
                 c->cold_kind ? c->cold_kind : "");
    struct tls_conn *tls = client_tls(c);
    fprintf(srv->access_log, "%s %s %.*s \"%s %.*s\" %d %llu %.1fms %s cold=%s%s%s%s\n", when, c->ip, hl,
            c->info.host ? c->info.host : "-", method, ul, m->raw.data ? m->raw.data + m->url : "", c->status,
            (unsigned long long)(kago__outq_mark(&c->out) - c->out_mark), ms, c->inst ? c->inst->name : "-",
            cold, tls ? " tls=" : "", tls ? kago__tls_version(tls) : "", c->h2s ? " h2" : "");
    fflush(srv->access_log);
}

/* Accounts for the request that just ended (once). */
static void count_request(struct client *c)
{
    if (c->counted || !c->req_begun)
        return;
    c->counted = true;
    if (c->app) {
        kago__metrics_count(c->app, c->status);
        kago__dash_request(c->app, c->status, kago__serve_now_us() - c->t_begin);
    }
    log_access(c);
}

/* Answers with a small error (body: NULL for "NNN Reason") and closes the connection once it is
 * written. */
static void client_error_body(struct client *c, int status, unsigned retry_after, const char *body,
                              size_t len)
{
    if (c->state == C_CLOSING)
        return;
    if (c->resp_started) { /* too late for a status: cut the connection */
        count_request(c);
        client_close(c);
        return;
    }
    c->status = status;
    c->resp_started = true;
    if (c->h2s)
        kago__h2_stream_respond(c, status, retry_after, NULL, 0, body, len);
    else
        kago__http_error_body(&c->out.pend, status, true, retry_after, body, len);
    count_request(c);
    if (c->state == C_HELD && c->app && c->app->m.inflight) /* refused or timed out: not in flight */
        c->app->m.inflight--;
    c->state = C_CLOSING;
    update_reading(c);
    flush_client(c);
}

static void client_error(struct client *c, int status, unsigned retry_after)
{
    client_error_body(c, status, retry_after, NULL, 0);
}

/* 503. While the app backs off after failed starts, the answer says so (app, reason, when it is tried
 * again, also as Retry-After) instead of the bare status. */
static void client_unavailable(struct client *c)
{
    struct app_rt *a = c->app;
    uint64_t left = a ? kago__pool_backoff_left(&a->pool, kago__serve_now_ms()) : 0;
    if (!left) {
        client_error(c, 503, 1);
        return;
    }
    unsigned secs = (unsigned)((left + 999) / 1000);
    char body[768];
    int n = snprintf(body, sizeof(body),
                     "app %s is not started: %u failed start%s in a row, next try in %u s: %s\n", a->app.name,
                     a->pool.fail_streak, a->pool.fail_streak == 1 ? "" : "s", secs,
                     a->start_error ? a->start_error : "unknown error");
    if (n < 0)
        n = 0;
    if ((size_t)n >= sizeof(body)) { /* cut a long reason, keep the newline */
        n = sizeof(body) - 1;
        body[n - 1] = '\n';
    }
    client_error_body(c, 503, secs, body, (size_t)n);
}

void kago__client_reject(struct client *c, int status)
{
    if (status == 503)
        client_unavailable(c);
    else
        client_error(c, status, 1);
}

/* --- reading --------------------------------------------------------------------------------- */

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    struct client *c = h->data;
    if (c->rpos && c->rpos == c->rlen)
        c->rpos = c->rlen = 0;
    buf->base = rbuf(c) + c->rlen;
    buf->len = CLIENT_RBUF - c->rlen;
}

/* TLS: ciphertext goes to one scratch buffer of the server, decrypted from there into rbuf in the same
 * turn (what does not fit is kept by the connection). */
static void on_alloc_tls(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    static _Thread_local char tls_rbuf[TLS_RBUF];
    (void)h;
    buf->base = tls_rbuf;
    buf->len = TLS_RBUF;
}

/* The peer closed its side (or the TLS session ended). */
static void client_eof(struct client *c)
{
    c->eof = true;
    if (c->state == C_TUNNEL && c->up) {
        /* let the upstream side finish writing, then end both */
        c->close_after = true;
        client_close(c);
    } else {
        /* a client gone while its request is with the app (or before its answer ended) aborts it, as
         * nginx's default (proxy_ignore_client_abort off): else the app's slot waited for an answer nobody
         * reads, held for good by an app that answers slowly or never ends (long polling, events) */
        client_close(c);
    }
}

/* --h2c: a plain connection whose first bytes are HTTP/2's preface turns to HTTP/2 (1), or may (0: wait
 * for more), or is HTTP/1.1 (-1). */
static int h2c_preface(const struct client *c)
{
    static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    size_t n = c->rlen < sizeof(preface) - 1 ? c->rlen : sizeof(preface) - 1;
    if (memcmp(c->rbuf, preface, n) != 0)
        return -1;
    return n == sizeof(preface) - 1 ? 1 : 0;
}

/* h2c with --threads (and h2 over TLS whose name routes to no app): the connection goes to the loop of its
 * first stream's app (later streams for an app of another loop get 421). True: it stays here; false: it
 * waits for more of its first HEADERS, or moved. */
static bool h2c_place(struct client *c)
{
    if (c->srv->nshards < 2 || c->h2_placed)
        return true;
    char host[256];
    int r = kago__h2_first_authority(c->rbuf + 24, c->rlen - 24, host, sizeof(host));
    if (r == 0 && c->rlen < CLIENT_RBUF)
        return false;
    c->h2_placed = true;
    struct app_rt *a = r == 1 ? kago__router_find(c->srv->router, host, strlen(host)) : NULL;
    if (!a || a->removed || a->shard == c->shard)
        return true;
    client_move(c, a->shard);
    return false;
}

/* n more bytes of the client's stream are at rbuf + rlen. */
static void got_bytes(struct client *c, size_t n)
{
    c->rlen += n;
    c->active = true;
    if (c->state == C_HEAD && !c->req_begun && !c->h2s && c->rpos == 0 &&
        (c->h2_wait || (!c->tls && c->srv->opts.h2c))) {
        int p = h2c_preface(c);
        bool first = n && n == c->rlen && !c->h2_wait; /* (h2_begin_tls armed h2_wait's) */
        if (p == 0) {
            if (first)
                h2_head_timer(c);
            return;
        }
        if (p == 1 && !h2c_place(c)) {
            if (first && !c->h2_placed)
                h2_head_timer(c);
            return; /* (its first stream's head is not all there yet, or it moved to another loop) */
        }
        if (p == 1 || c->h2_wait) { /* (ALPN h2 without the preface: nghttp2 says what is wrong) */
            c->h2_wait = false;
            h2_begin(c);
        }
    }
    if (c->state == C_H2) {
        size_t k = c->rlen - c->rpos;
        c->rpos = c->rlen = 0;
        kago__h2_input(c, c->rbuf, k);
        if (!c->closed && !c->tls)
            update_reading(c);
        return;
    }
    if (c->state == C_TUNNEL) {
        if (c->up) {
            sbuf_add(&c->up->out.pend, c->rbuf + c->rpos, c->rlen - c->rpos);
            c->rpos = c->rlen = 0;
            if (kago__outq_flush(&c->up->out) < 0)
                client_close(c);
            else
                update_reading(c);
        }
        return;
    }
    bool begun = c->state == C_HEAD && !c->req_begun;
    if (begun) {
        c->req_begun = true;
        c->t_begin = kago__serve_now_us();
    }
    client_parse(c);
    /* The header timeout matters only while the head is incomplete: a head that arrived whole (the
     * common case) moved on and armed its own timer, which saves a timer-heap update per request. */
    if (begun && c->state == C_HEAD && !c->closed)
        arm_timer(c);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    struct client *c = s->data;
    if (n == 0)
        return;
    if (n < 0)
        client_eof(c);
    else
        got_bytes(c, (size_t)n);
}

static void on_read_tls(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    struct client *c = s->data;
    if (n == 0)
        return;
    if (n < 0) {
        c->tls_failed |= !kago__tls_done(c->tls) && c->tls_got_bytes; /* (a port probe is no failure) */
        client_eof(c);
        return;
    }
    c->tls_got_bytes = true;
    kago__tls_input(c->tls, buf->base, (size_t)n);
    tls_pump(c);
    if (c->tls)                 /* (NULL: it moved to another loop) */
        kago__tls_keep(c->tls); /* what was not decrypted yet (rbuf full): the scratch buffer is reused */
    if (!c->closed)
        update_reading(c);
}

/* Reads when there is room to put what arrives: while reading a head, while a request body goes
 * upstream without a backlog, after the request (into the fixed buffer), and in a tunnel. Never
 * while held (the body waits in the kernel). */
static bool want_read(const struct client *c)
{
    bool want = false;
    switch (c->state) {
    case C_HEAD:
        want = c->rlen < CLIENT_RBUF;
        break;
    case C_PROXY:
        /* After the request, reading ahead only fills the fixed buffer (the next pipelined
         * request); it saves an epoll_ctl pair per request. */
        want = c->rlen < CLIENT_RBUF && (c->req_done || (c->up && !kago__outq_full(&c->up->out)));
        break;
    case C_TUNNEL:
        want = c->up && !kago__outq_full(&c->up->out) && !c->eof;
        break;
    case C_H2: /* a peer that does not read its answers (PING floods and the like) is not read either */
        want = !kago__outq_full(&c->out);
        break;
    default:
        break;
    }
    return want && !c->eof && !c->closed && !c->move_to && !c->to_give;
}

static void update_reading(struct client *c)
{
    if (c->h2s)
        return; /* a stream: its connection reads */
    bool want = want_read(c);
    /* TLS: what was decrypted but did not fit, or arrived but was not decrypted, goes first */
    if (want && c->tls && !c->tls_pumping && kago__tls_has_input(c->tls)) {
        tls_pump(c);
        want = want_read(c);
    }
    if (c->closed)
        return;
    if (want && !c->reading) {
        if (uv_read_start((uv_stream_t *)&c->tcp, c->tls ? on_alloc_tls : on_alloc,
                          c->tls ? on_read_tls : on_read) == 0)
            c->reading = true;
    } else if (!want && c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = false;
    }
}

/* --- TLS ------------------------------------------------------------------------------------------- */

static void tls_handshake_done(struct client *c)
{
    struct tls_stats *st = kago__tls_stats(c->srv->tls);
    __atomic_add_fetch(&st->handshakes_ok, 1, __ATOMIC_RELAXED); /* (request loops count theirs too) */
    __atomic_add_fetch(&st->resumed, kago__tls_resumed(c->tls), __ATOMIC_RELAXED);
    arm_timer(c);                 /* from the handshake's timeout to the keep-alive one */
    if (kago__tls_acme(c->tls)) { /* TLS-ALPN-01: the ACME server saw the challenge certificate, done */
        c->state = C_CLOSING;
        update_reading(c);
    } else if (c->shard->id == 0 && c->srv->nshards > 1) { /* to the loop of the app its name routes to */
        struct shard *to = owner_of_name(c->srv, kago__tls_name(c->tls));
        c->h2_placed = to != NULL;
        client_move(c, to ? to : kago__shard_next(c->srv));
    } else if (kago__tls_h2(c->tls)) {
        h2_begin_tls(c);
    }
}

static void tls_resume(void *arg)
{
    tls_pump(arg);
}

/* Advances the handshake, then decrypts into rbuf while there is room and the state reads, handled as a
 * plain read would be. Called for each read, and when reading resumes with input left. */
static void tls_pump(struct client *c)
{
    if (c->tls_pumping)
        return;
    c->tls_pumping = true;
    while (!c->closed) {
        if (!kago__tls_done(c->tls)) {
            int r = kago__tls_handshake(c->tls);
            if (r == TLS_HS_WAIT) { /* its certificate is being obtained (acme.c) */
                kago__tls_conn_on_resume(c->tls, tls_resume, c);
                break;
            }
            if (r < 0) { /* its alert goes out, then the connection closes */
                c->tls_failed = true;
                c->state = C_CLOSING;
                update_reading(c);
            }
            if (r <= 0)
                break;
            tls_handshake_done(c);
        }
        if (!want_read(c))
            break;
        if (c->rpos && c->rpos == c->rlen)
            c->rpos = c->rlen = 0;
        ssize_t n = kago__tls_read(c->tls, rbuf(c) + c->rlen, CLIENT_RBUF - c->rlen);
        if (n == TLS_AGAIN)
            break;
        if (n < 0) {
            client_eof(c);
            break;
        }
        got_bytes(c, (size_t)n);
    }
    if (!c->closed) {
        flush_client(c); /* the handshake's messages, tickets, alerts */
        trim_between(c);
    }
    c->tls_pumping = false;
    if (!c->closed)
        move_if_written(c); /* (its last flight may have been written at once) */
}

void kago__client_upstream_drained(struct client *c)
{
    if (c->h2s) {
        kago__h2_stream_pump(c);
        return;
    }
    if (c->state == C_PROXY && c->rpos < c->rlen && !c->req_done)
        client_parse(c);
    update_reading(c);
}

/* --- routing --------------------------------------------------------------------------------- */

static void client_dispatch(struct client *c)
{
    struct app_rt *a = c->app;
    c->state = C_HELD;
    c->t_held = kago__serve_now_us();
    bool held;
    struct pool_inst *pi = kago__pool_request(&a->pool, &c->waiter, kago__serve_now_ms(), &held);
    if (pi && pi->thaw_us >= 0) { /* thawed for this request: a start avoided, shown as one */
        c->cold_us = pi->thaw_us;
        c->cold_kind = "thaw";
        pi->thaw_us = -1;
    }
    if (pi)
        kago__client_attach(c, pi);
    else if (!held && c->state == C_HELD)
        client_unavailable(c);
    update_reading(c);
}

/* a.https_redirect: 308 to https://HOST[:PORT]/PATH (the first TLS listener's port unless 443), then the
 * connection closes, as after an error. */
static void client_redirect_https(struct client *c)
{
    char loc[1024];
    unsigned port = c->srv->https_port;
    int n = snprintf(loc, sizeof(loc), "https://%.*s", (int)c->info.host_name_len, c->info.host);
    if (port && port != 443 && n > 0 && (size_t)n < sizeof(loc))
        n += snprintf(loc + n, sizeof(loc) - (size_t)n, ":%u", port);
    const struct http_msg *m = req(c);
    if (n < 0 || (size_t)n + 1 + c->info.target_len >= sizeof(loc)) {
        client_error(c, 414, 0);
        return;
    }
    if (c->info.slash)
        loc[n++] = '/';
    memcpy(loc + n, m->raw.data + c->info.target, c->info.target_len);
    n += (int)c->info.target_len;
    c->status = 308;
    c->resp_started = true;
    if (c->h2s)
        kago__h2_stream_respond(c, 308, 0, loc, (size_t)n, NULL, 0);
    else
        kago__http_redirect(&c->out.pend, 308, loc, (size_t)n);
    count_request(c);
    c->state = C_CLOSING;
    update_reading(c);
    flush_client(c);
}

static void client_route(struct client *c)
{
    struct server *srv = c->srv;
    struct http_msg *m = req(c);
    int st = kago__http_req_check(m, 0, &c->info);
    if (st) {
        client_error(c, st, 0);
        return;
    }
    char ka[512]; /* HTTP-01 (acme.c), before routing: the host's app may not exist yet */
    size_t kn = !c->tls && srv->acme
                    ? kago__acme_http01(srv->acme, m->raw.data + m->url, m->url_len, ka, sizeof(ka))
                    : 0;
    if (kn) {
        client_error_body(c, 200, 0, ka, kn);
        return;
    }
    struct app_rt *a = kago__router_find(srv->router, c->info.host, c->info.host_len);
    if (!a || a->removed) {
        client_error(c, 404, 0);
        return;
    }
    if (a->shard != c->shard) { /* another loop serves the app: the connection goes there */
        if (c->h2s)             /* (not an HTTP/2 connection's: the client asks again on another) */
            client_error(c, 421, 0);
        else
            client_move(c, a->shard);
        return;
    }
    c->app = a;
    a->refs++;
    c->info.https = client_tls(c) != NULL;
    if (a->app.https_redirect && !c->info.https) {
        client_redirect_https(c);
        return;
    }
    if (a->app.max_body && c->info.content_length > a->app.max_body) {
        client_error(c, 413, 0);
        return;
    }
    a->m.inflight++;
    client_dispatch(c);
}

void kago__client_reroute(struct client *c)
{
    struct app_rt *a = c->app;
    if (a->m.inflight)
        a->m.inflight--;
    c->app = NULL;
    kago__app_unref(a);
    c->state = C_ROUTE; /* (what a move to another loop's app routes again there) */
    client_route(c);
}

/* The pool chose pi for this request (at once, or after holding it: then cold_us is set). */
static void drop_inst(struct client *c)
{
    struct instance *inst = c->inst;
    if (!inst)
        return;
    c->inst = NULL;
    inst->refs--;
    kago__instance_unref(inst);
}

void kago__client_attach(struct client *c, struct pool_inst *pi)
{
    drop_inst(c);
    c->pi = pi;
    c->inst = pi->data;
    c->inst->refs++;
    c->state = C_CONNECT;
    if (c->inst->remote && c->info.hops >= KAGO_HOPS_MAX) { /* --cluster: nodes forward in a loop */
        finish_exchange(c, false);
        client_error(c, 508, 0);
        return;
    }
    struct upconn *u = kago__upconn_get(c->inst);
    if (u) {
        u->client = c;
        c->up = u;
        kago__client_upstream_ready(c);
        return;
    }
    /* (sets c->up; a failure may already have retried c elsewhere, or closed it: c is not touched then) */
    if (kago__upconn_open(c->inst, c))
        arm_timer(c);
}

void kago__client_upstream_ready(struct client *c)
{
    struct upconn *u = c->up;
    c->state = C_PROXY;
    c->info.forward = c->inst->remote != NULL; /* to another node: Kago-Hops + 1 */
    c->info.trusted = c->info.hops && kago__cluster_trusts(c->srv, c->ip);
    kago__http_upstream_head(&u->out.pend, req(c), &c->info, c->ip);
    arm_timer(c);
    client_parse(c); /* the body that already arrived, and message completion */
    if (c->h2s) {
        kago__h2_stream_pump(c);
        return;
    }
    if (c->state == C_PROXY && c->up && kago__outq_flush(&c->up->out) < 0)
        kago__client_upstream_failed(c, UV_EPIPE);
}

/* Gives the request back to the pool and asks again: used when nothing reached the instance. */
static void redispatch(struct client *c)
{
    struct pool_inst *pi = c->pi;
    struct instance *inst = c->inst;
    c->pi = NULL;
    c->up = NULL;
    if (pi && inst && inst->pi == pi) {
        pi->served--; /* not served: done() counts it */
        kago__pool_done(&c->app->pool, pi, kago__serve_now_ms());
        kago__instance_check_exit(inst);
    }
    drop_inst(c);
    c->retries++;
    client_dispatch(c);
}

/* A connection reset before any response byte means the app had not read the whole request: it was
 * still in the backlog of a listener that went away (an instance being killed), or it reached a
 * keep-alive connection the app had just closed. A connection that idled a while may also just end (EOF):
 * the app's idle timeout crossing the request (Node's, uvicorn's, gunicorn's are shorter than kago's 10 s).
 * A request without a body and with an idempotent method may then be sent again (RFC 9110 9.2.2), as nginx
 * does; a reset fresh connection also means the instance is going away, so it takes no more requests. (An
 * EOF on a connection in steady use is an app that died with the request: not sent again, to kill more.) */
static bool resend_safe(const struct client *c, const struct upconn *u, int err)
{
    if ((err != UV_ECONNRESET && err != UV_EPIPE && !(err == UV_EOF && u->idled)) || u->got_bytes)
        return false;
    if (c->body_in || c->info.content_length || c->info.chunked || c->info.upgrade)
        return false;
    uint8_t m = c->req ? c->req->parser.method : HTTP_POST;
    return m == HTTP_GET || m == HTTP_HEAD || m == HTTP_OPTIONS;
}

/* The upstream connection failed before any response byte. A request that never reached the
 * instance (connect failed, the instance was gone) is tried again, elsewhere if the instance died;
 * one that was sent gets 502 (kago cannot know what the app did with it) unless resend_safe. */
void kago__client_upstream_failed(struct client *c, int err)
{
    struct upconn *u = c->up;
    bool resend = u && resend_safe(c, u, err);
    bool sent = u && (u->out.written > 0 || c->body_in > 0) && !resend;
    bool fresh_reset = resend && !u->reused;
    if (u) {
        u->client = NULL;
        kago__upconn_close(u);
    }
    c->up = NULL;
    if (c->app)
        c->app->m.upstream_errors++;
    if (!sent && c->retries < 3 && c->state != C_CLOSING && !c->resp_started) {
        if ((err == UV_ECONNREFUSED || fresh_reset) && c->pi && c->inst && c->inst->pi == c->pi)
            kago__pool_retire(&c->app->pool, c->pi, kago__serve_now_ms());
        redispatch(c);
        return;
    }
    if (c->inst)
        kago__instance_check_exit(c->inst);
    finish_exchange(c, false);
    client_error(c, 502, 0);
}

/* --- response relay -------------------------------------------------------------------------- */

int kago__client_resp_head(struct client *c, struct http_msg *resp)
{
    struct upconn *u = c->up;
    llhttp_t *p = &resp->parser;
    int status = p->status_code;
    bool head_req = req(c)->parser.method == HTTP_HEAD;
    if (status == 101 && (!c->info.upgrade || c->h2s))
        return HPE_USER; /* switching protocols unasked: what follows is no response to forward (502) */
    /* what cannot be forwarded as it is (502, as nginx): a status below 100, a body coded in a way the
     * client was not offered (the coding goes with Transfer-Encoding, which is hop-by-hop), controls in a
     * value (the parser is lenient for apps' bare LFs) */
    if (status < 100 || !kago__http_resp_forwardable(resp))
        return HPE_USER;
    if (status >= 100 && status < 200 && status != 101) {
        /* 100 Continue and friends pass through (not to HTTP/1.0 clients, nor as HTTP/2 streams: the final
         * response is what counts); the real response follows. A 1xx has no body whatever its framing says
         * (RFC 9110 15.2): 1 tells llhttp so, else its "body" would reach the client as a second response */
        if (++c->interim > 32)
            return HPE_USER;
        if (c->h2s || c->info.http10)
            return 1;
        struct http_resp_opts o = {.cold_start_us = -1};
        kago__http_client_head(&c->out.pend, resp, &o);
        flush_client(c);
        return 1;
    }
    c->status = status;
    c->resp_started = true;
    c->stall_armed = false;
    uv_timer_stop(&c->timer); /* the response timeout is over; --send-timeout is armed if the client stalls */
    struct http_resp_opts o = {.cold_start_us = c->srv->opts.cold_start_header ? c->cold_us : -1,
                               .cold_kind = c->cold_kind,
                               .hsts = client_tls(c) && c->app ? c->app->app.hsts : NULL};
    bool has_body = !(head_req || status == 204 || status == 304 || status == 101);
    if (c->h2s) {
        u->resp_chunked_out = false;
        c->out_mark = kago__outq_mark(&c->out);
        kago__h2_stream_head(c, resp, &o, has_body);
        return has_body ? 0 : 1;
    }
    bool framed = (p->flags & (F_CONTENT_LENGTH | F_CHUNKED)) != 0;
    u->resp_chunked_out = false;
    if (status == 101 && c->info.upgrade) {
        o.upgrade = true;
    } else if (has_body && (p->flags & F_CHUNKED || !framed)) {
        if (c->info.http10)
            c->close_after = true; /* an HTTP/1.0 client gets the body delimited by close */
        else
            u->resp_chunked_out = o.chunked = true;
    }
    if (!c->info.keep_alive || c->srv->stopping || (c->info.upgrade && status != 101))
        c->close_after = true;
    o.close = c->close_after;
    c->out_mark = kago__outq_mark(&c->out);
    kago__http_client_head(&c->out.pend, resp, &o);
    /* No flush here: the body that came in the same read joins the head in one write (the
     * upstream read handler flushes after parsing). */
    /* llhttp 8 cannot know that the answer to HEAD has no body, nor does it know 204 and 304 have none
     * whatever their Content-Length says (RFC 9112 6.3): tell it. Bytes after such a head are then no
     * part of the response, and the connection is not reused. */
    return has_body || status == 101 ? 0 : 1;
}

int kago__client_resp_body(struct client *c, const char *at, size_t n)
{
    if (c->up && c->up->resp_chunked_out)
        add_chunk(&c->out.pend, at, n);
    else
        sbuf_add(&c->out.pend, at, n);
    return 0;
}

void kago__client_tunnel_data(struct client *c, const char *at, size_t n)
{
    sbuf_add(&c->out.pend, at, n);
    flush_client(c);
}

static void start_tunnel(struct client *c)
{
    c->state = C_TUNNEL;
    uv_timer_stop(&c->timer);
    /* Bytes the client sent after the upgrade request belong to the new protocol. */
    if (c->rpos < c->rlen && c->up) {
        sbuf_add(&c->up->out.pend, c->rbuf + c->rpos, c->rlen - c->rpos);
        kago__outq_flush(&c->up->out);
    }
    c->rpos = c->rlen = 0;
    update_reading(c);
}

/* Ends the request/response pair on the pool's side. */
static void finish_exchange(struct client *c, bool reusable)
{
    if (c->pi && c->inst && c->inst->pi == c->pi)
        kago__pool_done(&c->app->pool, c->pi, kago__serve_now_ms());
    c->pi = NULL;
    if (c->up) {
        struct upconn *u = c->up;
        c->up = NULL;
        u->client = NULL;
        kago__upconn_release(u, reusable);
    }
    if (c->app && c->app->m.inflight)
        c->app->m.inflight--;
}

void kago__client_resp_done(struct client *c)
{
    struct upconn *u = c->up;
    if (u->resp_chunked_out)
        sbuf_add(&c->out.pend, "0\r\n\r\n", 5);
    if (c->state == C_PROXY && c->status == 101 && c->info.upgrade) {
        flush_client(c);
        start_tunnel(c);
        return;
    }
    bool reusable = c->req_done && llhttp_should_keep_alive(&u->resp.parser);
    if (!c->req_done)
        c->close_after = true; /* answered before the body ended: the rest cannot be resynchronised */
    count_request(c);
    finish_exchange(c, reusable);
    struct app_rt *a = c->app;
    c->app = NULL;
    if (a)
        kago__app_unref(a);
    if (c->close_after || c->srv->stopping || c->h2s) {
        c->state = C_CLOSING;
        update_reading(c);
        flush_client(c);
        return;
    }
    /* Next request on this connection (maybe already pipelined in rbuf). */
    c->state = C_HEAD;
    drop_inst(c);
    c->req_done = c->resp_started = c->counted = false;
    c->body_in = 0;
    c->status = 0;
    c->interim = 0;
    c->retries = 0;
    c->cold_us = -1;
    c->cold_kind = NULL;
    c->t_held = 0;
    c->req_begun = c->rpos < c->rlen;
    if (c->req_begun)
        c->t_begin = kago__serve_now_us();
    if (c->req) {
        kago__http_msg_clear(c->req);
        sbuf_reset(&c->req->raw, 4096);
    }
    flush_client(c);
    trim_between(c);
    arm_timer(c);
    client_parse(c);
    if (c->srv->handover)
        give_or_close_later(c);
}

/* The upstream ended mid-response: the client cannot get a complete answer. */
void kago__client_resp_truncated(struct client *c)
{
    if (c->app)
        c->app->m.upstream_errors++;
    finish_exchange(c, false);
    client_error(c, 502, 0);
}

/* --- the parse loop ---------------------------------------------------------------------------- */

static void client_parse(struct client *c)
{
    if (c->parsing)
        return;
    c->parsing = true;
    for (;;) {
        if (!(c->state == C_HEAD || (c->state == C_PROXY && !c->req_done)))
            break;
        if (c->rpos == c->rlen && !c->need_exec)
            break;
        c->need_exec = false;
        size_t used;
        llhttp_errno_t e = kago__http_execute(req(c), c->rbuf + c->rpos, c->rlen - c->rpos, &used);
        c->rpos += used;
        if (e == HPE_OK)
            continue;
        if (e == HPE_PAUSED) {
            llhttp_resume(&req(c)->parser);
            if (c->state == C_ROUTE) {
                c->need_exec = true; /* lets a bodiless message complete on the next round */
                client_route(c);
            }
            continue;
        }
        if (e == HPE_PAUSED_UPGRADE) {
            c->req_done = true;
            break;
        }
        int st = req(c)->error ? req(c)->error : 400;
        if (c->up || c->pi)
            finish_exchange(c, false);
        client_error(c, st, 0);
        break;
    }
    c->parsing = false;
    if (c->rpos == c->rlen) {
        c->rpos = c->rlen = 0;
    } else if (c->rpos > 0 && c->state != C_TUNNEL) {
        memmove(c->rbuf, c->rbuf + c->rpos, c->rlen - c->rpos);
        c->rlen -= c->rpos;
        c->rpos = 0;
    }
    if (c->state == C_PROXY && c->up && kago__outq_flush(&c->up->out) < 0) {
        kago__client_upstream_failed(c, UV_EPIPE);
        return;
    }
    update_reading(c);
}

/* --- timers ------------------------------------------------------------------------------------ */

static void on_timer(uv_timer_t *t)
{
    struct client *c = t->data;
    switch (c->state) {
    case C_HEAD:
        if (c->tls && !kago__tls_done(c->tls)) {
            c->tls_failed = true; /* a stalled handshake */
            client_close(c);
        } else if (c->req_begun)
            client_error(c, 408, 0);
        else
            client_close(c); /* keep-alive idle */
        break;
    case C_CONNECT:
    case C_PROXY:
        if (c->state == C_PROXY && c->resp_started) {
            c->stall_armed = false;
            if (!kago__outq_full(&c->out))
                break; /* taking it again: the next stall arms the timer anew */
            if (c->out.written != c->stall_written || kago__outq_unsent(&c->out) != c->stall_unsent) {
                kago__client_stalled(c); /* slow, not stopped */
                break;
            }
            __atomic_add_fetch(&c->srv->send_timeouts, 1, __ATOMIC_RELAXED);
            client_close(c); /* its response cannot end: the app's slot goes back */
            break;
        }
        if (c->app)
            c->app->m.upstream_errors++;
        finish_exchange(c, false);
        client_error(c, 504, 0);
        break;
    default:
        break;
    }
}

void kago__client_stalled(struct client *c)
{
    if (c->state != C_PROXY || !c->resp_started || c->closed)
        return;
    if (c->stall_armed && c->out.written == c->stall_written && kago__outq_unsent(&c->out) == c->stall_unsent)
        return; /* (armed at this very point already) */
    c->stall_armed = true;
    c->stall_written = c->out.written;
    c->stall_unsent = kago__outq_unsent(&c->out);
    uv_timer_start(&c->timer, on_timer, c->srv->opts.send_timeout_ms, 0);
}

static void arm_timer(struct client *c)
{
    const struct kago_serve_opts *o = &c->srv->opts;
    uint64_t ms = 0;
    c->stall_armed = false;
    switch (c->state) {
    case C_HEAD:
        ms = c->tls && !kago__tls_done(c->tls) ? o->tls_handshake_timeout_ms
             : c->req_begun                    ? o->header_timeout_ms
             : c->srv->handover                ? HANDOVER_IDLE_MS /* idle while handing over: closed soon */
                                               : o->keepalive_timeout_ms;
        break;
    case C_CONNECT:
        ms = o->connect_timeout_ms;
        break;
    case C_PROXY:
        ms = c->resp_started ? 0 : o->response_timeout_ms;
        break;
    default:
        break;
    }
    if (ms)
        uv_timer_start(&c->timer, on_timer, ms, 0);
    else
        uv_timer_stop(&c->timer);
}

/* An HTTP/2 connection whose first stream has not begun (its preface, or the head of the stream that places
 * it, still coming) has --header-timeout, as an HTTP/1.1 head does, not the keep-alive one: else idle
 * connections that sent a byte or nothing after the handshake held a descriptor each for 75 s. Once the
 * session began, h2.c's idle timer keeps it so until its first stream. */
static void h2_head_timer(struct client *c)
{
    uv_timer_start(&c->timer, on_timer, c->srv->opts.header_timeout_ms, 0);
}

/* --- lifecycle --------------------------------------------------------------------------------- */

static void on_client_closed(uv_handle_t *h)
{
    struct client *c = h->data;
    if (--c->handles)
        return;
    kago__outq_free(&c->out);
    kago__tls_conn_free(c->tls);
    kago__h2_conn_free(c->h2);
    kago__h2_stream_free(c->h2s);
    req_free(c);
    rbuf_free(c);
    struct server *srv = c->srv;
    free(c);
    if (!kago__shard_self) /* (the first loop's tick looks for the others') */
        kago__server_maybe_exit(srv);
}

static void client_close(struct client *c)
{
    if (c->closed)
        return;
    c->closed = true;
    if (c->h2)
        kago__h2_conn_close(c); /* its streams first */
    if (c->tls_failed)
        __atomic_add_fetch(&kago__tls_stats(c->srv->tls)->handshakes_failed, 1, __ATOMIC_RELAXED);
    count_request(c);
    if (c->state == C_HELD && c->app)
        kago__pool_cancel(&c->app->pool, &c->waiter);
    if (c->state == C_HELD && c->app && c->app->m.inflight)
        c->app->m.inflight--;
    else if (c->pi || c->up)
        finish_exchange(c, false);
    c->state = C_CLOSING;
    if (c->app) {
        struct app_rt *a = c->app;
        c->app = NULL;
        kago__app_unref(a);
    }
    drop_inst(c);
    if (c->h2s) { /* a stream: not in the server's list, no socket of its own */
        kago__h2_stream_detach(c);
        c->handles = 1;
        uv_close((uv_handle_t *)&c->timer, on_client_closed);
        return;
    }
    if (c->prev)
        c->prev->next = c->next;
    else
        c->shard->clients = c->next;
    if (c->next)
        c->next->prev = c->prev;
    __atomic_sub_fetch(&c->srv->nclients, 1, __ATOMIC_RELAXED);
    c->handles = 2;
    uv_close((uv_handle_t *)&c->timer, on_client_closed);
    uv_close((uv_handle_t *)&c->tcp, on_client_closed);
}

static void client_setup(struct server *srv, struct client *c, const struct sbuf *pre);
static void on_closed_free_tcp(uv_handle_t *h);

/* c->ip: the client's address, for the access log and X-Forwarded-For ("-" when it cannot be told). */
static void peer_name(struct client *c)
{
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    strcpy(c->ip, "-");
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) == 0) {
        if (ss.ss_family == AF_INET)
            uv_ip4_name((struct sockaddr_in *)&ss, c->ip, sizeof(c->ip));
        else if (ss.ss_family == AF_INET6)
            uv_ip6_name((struct sockaddr_in6 *)&ss, c->ip, sizeof(c->ip));
    }
}

static void client_link(struct client *c)
{
    struct shard *s = c->shard;
    c->prev = NULL;
    c->next = s->clients;
    if (s->clients)
        s->clients->prev = c;
    s->clients = c;
}

static struct client *client_new(struct server *srv, struct shard *s)
{
    struct client *c = xcalloc(1, sizeof(*c));
    c->srv = srv;
    c->shard = s;
    if (s->id && kago__shard_self != s) /* (made from the first loop: its timers count from now) */
        uv_update_time(s->loop);
    uv_tcp_init(s->loop, &c->tcp);
    c->tcp.data = c;
    return c;
}

/* The loop of the app a TLS name routes to, or NULL. */
static struct shard *owner_of_name(struct server *srv, const char *name)
{
    struct app_rt *a = name ? kago__router_find(srv->router, name, strlen(name)) : NULL;
    return a && !a->removed ? a->shard : NULL;
}

/* ALPN h2: the session begins now, or, when the connection's loop was not chosen by its TLS name (none, or
 * one no app has), once its first stream's head says which app it is for, as for h2c. */
static void h2_begin_tls(struct client *c)
{
    if (c->srv->nshards > 1 && !c->h2_placed) {
        c->h2_wait = true;
        h2_head_timer(c);
    } else
        h2_begin(c);
}

void kago__client_take(struct shard *s, int fd)
{
    struct client *c = client_new(s->srv, s);
    if (uv_tcp_open(&c->tcp, fd) < 0) {
        close(fd);
        uv_close((uv_handle_t *)&c->tcp, on_closed_free_tcp);
        return;
    }
    client_setup(s->srv, c, NULL);
}

void kago__client_accept(struct server *srv, uv_stream_t *listener, bool tls)
{
    struct client *c = client_new(srv, &srv->shards[0]); /* (one loop: with request loops, they accept) */
    if (uv_accept(listener, (uv_stream_t *)&c->tcp) < 0) {
        free(c);
        return; /* the handle was never active: nothing to close */
    }
    if (tls) { /* before the setup: its timer is the handshake's */
        c->tls = kago__tls_conn_new(srv->tls, &c->out.enc);
        c->out.tls = c->tls;
    }
    client_setup(srv, c, NULL);
}

void kago__client_take_tls(struct server *srv, int fd, struct tls_conn *tls, const struct sbuf *out)
{
    /* (the first loop's: with request loops, only a handshake held for a certificate on demand comes here,
     * and tls_handshake_done moves it on once done) */
    struct client *c = client_new(srv, &srv->shards[0]);
    int r = uv_tcp_open(&c->tcp, fd);
    if (r < 0 || srv->stopping) { /* (shutdown closes the connections between requests) */
        if (r < 0)
            kago__slog(srv, SLOG_WARN, NULL, NULL, "tls: a connection from a handshake loop (fd %d): %s", fd,
                       uv_strerror(r));
        close(fd);
        kago__tls_conn_free(tls);
        uv_close((uv_handle_t *)&c->tcp, on_closed_free_tcp);
        return;
    }
    c->tls = tls;
    c->out.tls = tls;
    c->tls_got_bytes = true;
    kago__tls_conn_set_out(tls, &c->out.enc);
    c->close_after = srv->handover; /* (one request, then it closes: the new serve takes the rest) */
    client_setup(srv, c, out);
}

static void on_closed_free_tcp(uv_handle_t *h)
{
    free(h->data);
}

/* A connection serve just got (accepted, given by the serve it took over from, or handed over by a
 * handshake loop with pre: the ciphertext to send first): reading its first request head. */
static void client_setup(struct server *srv, struct client *c, const struct sbuf *pre)
{
    uv_timer_init(c->shard->loop, &c->timer);
    c->timer.data = c;
    uv_tcp_nodelay(&c->tcp, 1);
    peer_name(c);
    c->cold_us = -1;
    c->cold_kind = NULL;
    struct tls_conn *tls = c->out.tls;
    kago__outq_init(&c->out, (uv_stream_t *)&c->tcp, on_client_written, c);
    c->out.tls = tls;
    if (pre && pre->len)
        sbuf_add(&c->out.enc, pre->data, pre->len);
    client_link(c);
    __atomic_add_fetch(&srv->nclients, 1, __ATOMIC_RELAXED);
    c->state = C_HEAD;
    arm_timer(c);
    if (tls && kago__tls_done(tls))
        tls_handshake_done(c); /* (a handshake loop's: HTTP/2 begins before its first bytes are read) */
    else if (tls && c->tls_got_bytes)
        tls_pump(c); /* held for a certificate on demand: asked for here */
    if (c->closed)
        return;
    update_reading(c);
    if (!c->closed && pre)
        flush_client(c);
}

void kago__client_trim_idle(struct server *srv)
{
    for (unsigned i = 0; i < srv->nshards; i++)
        for (struct client *c = srv->shards[i].clients; c; c = c->next) {
            if (c->active)
                c->trimmed = false;
            else if (!c->closed && !c->trimmed)
                c->trimmed = c->state == C_H2 ? kago__h2_idle(c) : idle_trim(c);
            c->active = false;
        }
}

/* Shutdown: close connections between requests now; the others close after their response. */
static void close_list(struct client *c, bool idle_only)
{
    for (struct client *next; c; c = next) {
        next = c->next;
        if (!idle_only || (c->state == C_HEAD && !c->req_begun))
            client_close(c);
        else if (c->state == C_H2)
            kago__h2_shutdown(c); /* GOAWAY: closes when its streams are done */
        else
            c->close_after = true;
    }
}

void kago__client_close_all(struct server *srv, bool idle_only)
{
    for (unsigned i = 0; i < srv->nshards; i++)
        close_list(srv->shards[i].clients, idle_only);
}

void kago__client_close_shard(struct shard *s)
{
    close_list(s->clients, false);
}

/* --- hand-over to a new serve (upgrade.c) ------------------------------------------------------- */

/* Between two requests, with nothing read ahead and nothing left to write: the connection can move to the
 * new serve as it is (the next request, if one is on its way, waits in the socket for it). */
static bool idle_between_requests(const struct client *c)
{
    return !c->closed && !c->tls && c->state == C_HEAD && !c->req_begun && c->rpos == c->rlen && !c->eof &&
           kago__outq_size(&c->out) == 0 && !c->out.writing;
}

/* Gives up to n idle connections of cs[] to the new serve and forgets them here. */
static void give(struct server *srv, struct client **cs, int n)
{
    int fds[UPGRADE_MAX_FDS] = {0};
    for (int i = 0; i < n; i++) {
        uv_os_fd_t fd = -1;
        uv_fileno((uv_handle_t *)&cs[i]->tcp, &fd);
        fds[i] = fd;
    }
    if (kago__upgrade_give(srv, fds, n) < 0) {
        for (int i = 0; i < n; i++) { /* no way over: closed after their next response, or idle */
            cs[i]->close_after = true;
            cs[i]->to_give = false;
            update_reading(cs[i]);
            uv_timer_start(&cs[i]->timer, on_timer, HANDOVER_IDLE_MS, 0);
        }
        return;
    }
    for (int i = 0; i < n; i++) {
        cs[i]->given = true;
        client_close(cs[i]); /* (our descriptor only: the socket lives on in the new serve) */
    }
}

static void give_or_close_later(struct client *c)
{
    if (c->given || c->closed || !idle_between_requests(c))
        return;
    if (!kago__shard_self) {
        give(c->srv, &c, 1);
        return;
    }
    /* a request loop's goes at the first loop's next tick (kago__upgrade_tick), which finds it idle only if
     * the client's next request is not read meanwhile: it waits in the socket for the new serve */
    c->to_give = true;
    update_reading(c);
}

/* A new serve took the listeners over: connections between two requests move to it now, the others
 * once their response is written (HTTP keep-alive goes on, no Connection: close, nothing to race with a
 * client's next request). If a connection cannot be given, it closes after its next response (saying
 * Connection: close) or after HANDOVER_IDLE_MS idle. */
void kago__client_handover(struct server *srv, bool idle_only)
{
    struct client *batch[UPGRADE_MAX_FDS];
    int n = 0;
    for (unsigned i = 0; i < srv->nshards; i++)
        for (struct client *c = srv->shards[i].clients, *next; c; c = next) {
            next = c->next;
            if (!idle_only &&
                c->state == C_H2) { /* GOAWAY: the client opens its next streams on the new serve */
                kago__h2_shutdown(c);
                continue;
            }
            if (c->tls && !c->closed) { /* its state is OpenSSL's: it stays, and ends after its response */
                if (!idle_only) {
                    c->close_after = true;
                    if (c->state == C_HEAD && !c->req_begun && kago__tls_done(c->tls))
                        arm_timer(c); /* idle: HANDOVER_IDLE_MS */
                }
                continue;
            }
            if (c->given || !idle_between_requests(c))
                continue;
            batch[n++] = c;
            if (n == UPGRADE_MAX_FDS) {
                give(srv, batch, n);
                n = 0;
            }
        }
    if (n)
        give(srv, batch, n);
}

/* The hand-over did not happen (the new serve went away): connections waiting to be given are read again. */
void kago__client_handover_undone(struct server *srv)
{
    for (unsigned i = 0; i < srv->nshards; i++)
        for (struct client *c = srv->shards[i].clients; c; c = c->next)
            if (c->to_give && !c->closed) {
                c->to_give = false;
                update_reading(c);
                arm_timer(c);
            }
}

/* The new serve's side: a connection the old serve gave, between two requests. */
void kago__client_adopt(struct server *srv, int fd)
{
    struct client *c = client_new(srv, kago__shard_next(srv));
    if (uv_tcp_open(&c->tcp, fd) < 0) {
        close(fd);
        uv_close((uv_handle_t *)&c->tcp, on_closed_free_tcp);
        return;
    }
    client_setup(srv, c, NULL);
}

/* --- moving between loops (--threads, shard.c) ------------------------------------------------------ */

/* c goes to loop to, which serves the app its request names (or, just after its TLS handshake, the app of
 * its TLS name): its socket (a copy: closing the handle here closes only this loop's descriptor), its TLS
 * state, what it read ahead and the request head it parsed; loop to routes that head again
 * (kago__client_arrive). Only between two exchanges: a response still being written is waited for. */
static void client_move(struct client *c, struct shard *to)
{
    if (kago__outq_size(&c->out) || c->out.writing) {
        c->move_to = to;
        update_reading(c);
        return;
    }
    c->move_to = NULL;
    uv_os_fd_t fd;
    int nfd = uv_fileno((uv_handle_t *)&c->tcp, &fd) == 0 ? fcntl(fd, F_DUPFD_CLOEXEC, 3) : -1;
    if (nfd < 0) {
        kago__slog(c->srv, SLOG_WARN, NULL, NULL, "a connection to event loop %u: %s", to->id,
                   strerror(errno));
        client_error(c, 503, 0);
        return;
    }
    struct client *m = xcalloc(1, sizeof(*m));
    m->srv = c->srv;
    m->shard = to;
    m->moved_fd = nfd;
    m->state = c->state;
    m->rbuf = c->rbuf;
    m->rlen = c->rlen;
    m->rpos = c->rpos;
    if ((m->req = c->req))
        m->req->owner = m;
    m->info = c->info;
    m->t_begin = c->t_begin;
    m->req_begun = c->req_begun;
    m->need_exec = c->need_exec;
    m->close_after = c->close_after;
    m->eof = c->eof;
    m->h2_placed = c->h2_placed;
    m->active = true;
    memcpy(m->ip, c->ip, sizeof(m->ip));
    if (c->tls) {
        kago__tls_keep(c->tls); /* (the ciphertext not decrypted yet is in this loop's scratch buffer) */
        m->tls = c->tls;
        m->tls_got_bytes = c->tls_got_bytes;
    }
    c->rbuf = NULL;
    c->rlen = c->rpos = 0;
    c->req = NULL;
    c->tls = c->out.tls = NULL;
    c->req_begun = false; /* (its request is counted where it is served) */
    __atomic_add_fetch(&c->srv->nclients, 1, __ATOMIC_RELAXED); /* m's, before c's goes */
    client_close(c);
    kago__shard_give(to, m);
}

/* A move that waited for c's writes: made now if they are done (true). */
static bool move_if_written(struct client *c)
{
    if (!c->move_to || kago__outq_size(&c->out) || c->out.writing)
        return false;
    client_move(c, c->move_to);
    return true;
}

struct client *kago__client_handed(struct server *srv, int fd, struct tls_conn *tls, struct sbuf *pre)
{
    struct client *c = xcalloc(1, sizeof(*c));
    c->srv = srv;
    c->moved_fd = fd;
    c->tls = tls;
    c->tls_got_bytes = true;
    c->state = C_HEAD;
    c->handed = true;
    c->pre = *pre;
    *pre = (struct sbuf){0};
    return c; /* (counted in srv->nclients when it arrives: a handshake loop is not under the world lock) */
}

void kago__client_arrive(struct shard *s, struct client *c)
{
    struct server *srv = s->srv;
    if (c->handed && !c->h2_placed) { /* a handshake loop's: on to the loop of its name's app */
        __atomic_add_fetch(&srv->nclients, 1, __ATOMIC_RELAXED);
        struct shard *to = owner_of_name(srv, kago__tls_name(c->tls));
        c->h2_placed = to != NULL;
        if (to && to != s) {
            kago__shard_give(to, c);
            return;
        }
    }
    c->shard = s;
    uv_tcp_init(s->loop, &c->tcp);
    c->tcp.data = c;
    int r = uv_tcp_open(&c->tcp, c->moved_fd);
    uv_timer_init(s->loop, &c->timer);
    c->timer.data = c;
    struct tls_conn *tls = c->tls;
    kago__outq_init(&c->out, (uv_stream_t *)&c->tcp, on_client_written, c);
    c->out.tls = tls;
    if (tls)
        kago__tls_conn_set_out(tls, &c->out.enc);
    if (c->pre.len)
        sbuf_add(&c->out.enc, c->pre.data, c->pre.len);
    sbuf_free(&c->pre);
    c->cold_us = -1;
    client_link(c);
    if (r < 0) {
        close(c->moved_fd);
        client_close(c);
        return;
    }
    c->close_after |= srv->handover;
    if (c->state == C_ROUTE) {
        client_route(c);
        client_parse(c);
        return;
    }
    if (srv->stopping) { /* (shutdown closes the connections between requests) */
        client_close(c);
        return;
    }
    if (c->handed) { /* (counted, and HTTP/2 begun, as a handshake done here) */
        c->handed = false;
        peer_name(c); /* (a moved one brought its own) */
        tls_handshake_done(c);
    } else {
        arm_timer(c);
        if (tls && kago__tls_h2(tls))
            h2_begin_tls(c);
        if (c->rlen && !c->closed) /* h2: the preface and the first stream's head */
            got_bytes(c, 0);
    }
    if (!c->closed)
        update_reading(c);
    if (!c->closed)
        flush_client(c); /* (what a handshake loop had not written) */
}

/* A moved client that never arrived (serve ended first). */
void kago__client_discard(struct client *c)
{
    close(c->moved_fd);
    kago__tls_conn_free(c->tls);
    req_free(c);
    sbuf_free(&c->pre);
    if (c->rbuf)
        kago__pages_put(c->rbuf, CLIENT_RBUF);
    if (!c->handed || c->h2_placed) /* (counted) */
        __atomic_sub_fetch(&c->srv->nclients, 1, __ATOMIC_RELAXED);
    free(c);
}

/* --- HTTP/2 streams (h2.c) ------------------------------------------------------------------------- */

struct client *kago__client_stream_new(struct client *conn, struct h2_stream *st)
{
    struct client *c = xcalloc(1, sizeof(*c));
    c->srv = conn->srv;
    c->shard = conn->shard;
    c->conn = conn;
    c->h2s = st;
    uv_timer_init(c->shard->loop, &c->timer);
    c->timer.data = c;
    memcpy(c->ip, conn->ip, sizeof(c->ip));
    c->cold_us = -1;
    kago__outq_init(&c->out, NULL, NULL, c);
    c->state = C_HEAD;
    return c;
}

void kago__client_stream_input(struct client *c, const char *head, size_t len)
{
    if (len > CLIENT_RBUF) {
        kago__client_stream_fail(c, 431);
        return;
    }
    c->rbuf = xmalloc(len);
    memcpy(c->rbuf, head, len);
    got_bytes(c, len);
}

void kago__client_stream_fail(struct client *c, int status)
{
    if (!c->req_begun) {
        c->req_begun = true;
        c->t_begin = kago__serve_now_us();
    }
    if (c->up || c->pi)
        finish_exchange(c, false);
    client_error(c, status, 0);
}

void kago__client_close(struct client *c)
{
    client_close(c);
}

void kago__client_finish(struct client *c)
{
    if (c->closed || c->state == C_CLOSING)
        return;
    c->state = C_CLOSING;
    update_reading(c);
    flush_client(c);
}
