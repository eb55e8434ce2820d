/* kago serve — the etcd client's I/O: POST /v3/<op> over HTTP/1.1 on libuv TCP, the response parsed by
 * llhttp, all on the caller's event loop (serve's: nothing here blocks but the name lookup at creation).
 *
 * Why on the loop rather than a worker thread or curl: a call is a connect, one small write and a read
 * of a small response, exactly what the proxy already does for every upstream request, so it costs the
 * loop microseconds; the watch is one more long-lived socket among thousands. A thread would need its own
 * loop and a uv_async back with every event, and libcurl cannot be linked into kago's static executable
 * (etcd.h). Each call opens its own connection (Connection: close): on loopback or a LAN a connect is
 * ~0.1 ms, calls are rare (a keepalive per TTL/3, a list at start, a few per deploy), and a fresh socket
 * never meets a connection etcd closed while it was idle. A call that cannot connect (or times out
 * before the response head) tries the next endpoint; the client then stays on the one that answered. */
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "etcd.h"
#include "http.h"
#include "util.h"

struct etcd_endpoint {
    char *name; /* "HOST:PORT" */
    struct sockaddr_storage addr;
};

struct etcd_client {
    uv_loop_t *loop;
    struct etcd_endpoint *ep;
    size_t nep, cur;
    struct etcd_call *calls;
    bool freeing;
};

struct etcd_call {
    struct etcd_call *next, *prev;
    struct etcd_client *c;
    char op[48];
    struct sbuf req; /* the whole request, kept for a retry on the next endpoint */
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_connect_t conn;
    uv_write_t wr;
    unsigned handles; /* open: tcp, timer */
    struct http_msg resp;
    struct sbuf body, line;
    int status;
    bool streaming, got_head, complete, finished, canceled, retry;
    unsigned tries;
    size_t ep;
    unsigned timeout_ms;
    etcd_done_cb done;
    etcd_line_cb on_line;
    void *arg;
};

static void start_attempt(struct etcd_call *call);

/* --- client ------------------------------------------------------------------------------------- */

static int resolve(const char *name, struct sockaddr_storage *ss, struct kago_error **err)
{
    char host[256];
    const char *colon = strrchr(name, ':');
    size_t hl = (size_t)(colon - name);
    if (hl >= sizeof(host))
        return kago_error_set(err, EINVAL, "etcd endpoint %s: host too long", name);
    memcpy(host, name, hl);
    host[hl] = 0;
    if (host[0] == '[' && hl > 1 && host[hl - 1] == ']') {
        memmove(host, host + 1, hl - 2);
        host[hl - 2] = 0;
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai = NULL;
    int r = getaddrinfo(host, colon + 1, &hints, &ai);
    if (r != 0)
        return kago_error_set(err, 0, "etcd endpoint %s: %s", name,
                              r == EAI_SYSTEM ? strerror(errno) : gai_strerror(r));
    memcpy(ss, ai->ai_addr, ai->ai_addrlen);
    freeaddrinfo(ai);
    return 0;
}

struct etcd_client *kago__etcd_new(uv_loop_t *loop, const char *url, struct kago_error **err)
{
    char **names = NULL;
    if (kago__etcd_parse_url(url, &names, err) < 0)
        return NULL;
    struct etcd_client *c = xcalloc(1, sizeof(*c));
    c->loop = loop;
    for (char **n = names; *n; n++)
        c->nep++;
    c->ep = xcalloc(c->nep, sizeof(*c->ep));
    for (size_t i = 0; i < c->nep; i++) {
        c->ep[i].name = names[i];
        names[i] = NULL;
        if (resolve(c->ep[i].name, &c->ep[i].addr, err) < 0) {
            kago__strv_free(names);
            c->freeing = true;
            kago__etcd_free(c);
            return NULL;
        }
    }
    kago__strv_free(names);
    return c;
}

static void client_free(struct etcd_client *c)
{
    for (size_t i = 0; i < c->nep; i++)
        free(c->ep[i].name);
    free(c->ep);
    free(c);
}

void kago__etcd_free(struct etcd_client *c)
{
    if (!c)
        return;
    c->freeing = true;
    if (!c->calls) {
        client_free(c);
        return;
    }
    for (struct etcd_call *call = c->calls, *next; call; call = next) {
        next = call->next;
        kago__etcd_cancel(call);
    }
}

const char *kago__etcd_endpoint(const struct etcd_client *c)
{
    return c->ep[c->cur].name;
}

/* --- a call ------------------------------------------------------------------------------------- */

static void call_free(struct etcd_call *call)
{
    struct etcd_client *c = call->c;
    if (call->prev)
        call->prev->next = call->next;
    else
        c->calls = call->next;
    if (call->next)
        call->next->prev = call->prev;
    kago__http_msg_free(&call->resp);
    sbuf_free(&call->req);
    sbuf_free(&call->body);
    sbuf_free(&call->line);
    free(call);
    if (c->freeing && !c->calls)
        client_free(c);
}

static void on_closed(uv_handle_t *h)
{
    struct etcd_call *call = h->data;
    call->handles--;
    if (h == (uv_handle_t *)&call->tcp && call->retry && !call->finished) {
        call->retry = false;
        start_attempt(call);
        return;
    }
    if (call->handles == 0)
        call_free(call);
}

static void close_handles(struct etcd_call *call)
{
    if (!uv_is_closing((uv_handle_t *)&call->tcp))
        uv_close((uv_handle_t *)&call->tcp, on_closed);
    if (!uv_is_closing((uv_handle_t *)&call->timer))
        uv_close((uv_handle_t *)&call->timer, on_closed);
}

/* Ends the call once: its callback (unless cancelled), then its handles close and it is freed. */
static void finish(struct etcd_call *call, struct json_object *resp, const struct kago_error *err)
{
    if (call->finished)
        return;
    call->finished = true;
    if (!call->canceled && call->done)
        call->done(call->arg, resp, err);
    close_handles(call);
}

static void fail(struct etcd_call *call, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fail(struct etcd_call *call, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *msg = xvasprintf(fmt, ap);
    va_end(ap);
    struct kago_error *err = NULL;
    kago_error_set(&err, 0, "etcd %s %s: %s", call->c->ep[call->ep].name, call->op, msg);
    free(msg);
    finish(call, NULL, err);
    kago_error_free(err);
}

/* Nothing came back from this endpoint: the next one, if one is left untried; else the error. */
static void attempt_failed(struct etcd_call *call, const char *why)
{
    struct etcd_client *c = call->c;
    if (!call->got_head && call->tries < c->nep) {
        c->cur = (call->ep + 1) % c->nep;
        call->retry = true;
        uv_close((uv_handle_t *)&call->tcp, on_closed);
        return;
    }
    if (c->nep > 1)
        fail(call, "%s (%zu endpoints tried)", why, c->nep);
    else
        fail(call, "%s", why);
}

static void on_timeout(uv_timer_t *t)
{
    struct etcd_call *call = t->data;
    char why[64];
    snprintf(why, sizeof(why), "no answer within %u ms", call->timeout_ms);
    attempt_failed(call, why);
}

static int on_head(struct http_msg *m)
{
    struct etcd_call *call = m->owner;
    call->status = m->parser.status_code;
    call->got_head = true;
    call->c->cur = call->ep;
    if (call->streaming && call->status == 200)
        uv_timer_stop(&call->timer); /* a watch runs as long as etcd does */
    return 0;
}

static void feed_lines(struct etcd_call *call, const char *at, size_t n)
{
    sbuf_add(&call->line, at, n);
    size_t start = 0;
    for (;;) {
        char *nl = memchr(call->line.data + start, '\n', call->line.len - start);
        if (!nl)
            break;
        size_t len = (size_t)(nl - (call->line.data + start));
        if (len)
            call->on_line(call->arg, call->line.data + start, len);
        start += len + 1;
        if (call->canceled || call->finished)
            return;
    }
    memmove(call->line.data, call->line.data + start, call->line.len - start);
    call->line.len -= start;
}

static int on_body(struct http_msg *m, const char *at, size_t n)
{
    struct etcd_call *call = m->owner;
    if (call->streaming && call->status == 200)
        feed_lines(call, at, n);
    else
        sbuf_add(&call->body, at, n);
    return call->canceled || call->finished ? HPE_PAUSED : 0;
}

static int on_done(struct http_msg *m)
{
    struct etcd_call *call = m->owner;
    call->complete = true;
    return HPE_PAUSED;
}

static const struct http_msg_cbs cbs = {.head = on_head, .body = on_body, .done = on_done};

static void complete(struct etcd_call *call)
{
    struct json_tokener *tok = json_tokener_new();
    struct json_object *o =
        call->body.len ? json_tokener_parse_ex(tok, call->body.data, (int)call->body.len) : NULL;
    json_tokener_free(tok);
    if (call->status != 200) {
        const char *e = kago__etcd_error_text(o);
        fail(call, "HTTP %d: %s", call->status, e ? e : kago__http_reason(call->status));
    } else if (call->streaming) {
        fail(call, "the stream ended");
    } else if (!o) {
        fail(call, "the response is not JSON");
    } else {
        finish(call, o, NULL);
    }
    json_object_put(o);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    buf->base = xmalloc(65536);
    buf->len = 65536;
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    struct etcd_call *call = s->data;
    if (n < 0) {
        free(buf->base);
        if (call->finished)
            return;
        if (!call->got_head)
            attempt_failed(call, n == UV_EOF ? "connection closed" : uv_strerror((int)n));
        else
            fail(call, "%s", n == UV_EOF ? "connection closed" : uv_strerror((int)n));
        return;
    }
    size_t used;
    llhttp_errno_t e = n ? kago__http_execute(&call->resp, buf->base, (size_t)n, &used) : HPE_OK;
    free(buf->base);
    if (call->finished)
        return;
    if (call->complete)
        complete(call);
    else if (e != HPE_OK && e != HPE_PAUSED)
        fail(call, "bad HTTP response: %s", call->resp.error_reason ? call->resp.error_reason : "?");
}

static void on_written(uv_write_t *w, int status)
{
    struct etcd_call *call = w->data;
    if (status < 0 && status != UV_ECANCELED && !call->finished)
        attempt_failed(call, uv_strerror(status));
}

static void on_connect(uv_connect_t *req, int status)
{
    struct etcd_call *call = req->data;
    if (call->finished || call->retry)
        return;
    if (status < 0) {
        attempt_failed(call, uv_strerror(status));
        return;
    }
    uv_tcp_nodelay(&call->tcp, 1);
    if (call->streaming)
        uv_tcp_keepalive(&call->tcp, 1, 10); /* a silent etcd host is noticed */
    uv_buf_t b = uv_buf_init(call->req.data, (unsigned)call->req.len);
    call->wr.data = call;
    int r = uv_write(&call->wr, (uv_stream_t *)&call->tcp, &b, 1, on_written);
    if (r == 0)
        r = uv_read_start((uv_stream_t *)&call->tcp, on_alloc, on_read);
    if (r < 0)
        attempt_failed(call, uv_strerror(r));
}

static void start_attempt(struct etcd_call *call)
{
    struct etcd_client *c = call->c;
    call->ep = c->cur;
    call->tries++;
    kago__http_msg_init(&call->resp, HTTP_RESPONSE, &cbs, call);
    call->body.len = call->line.len = 0;
    call->status = 0;
    uv_tcp_init(c->loop, &call->tcp);
    call->tcp.data = call;
    call->handles++;
    uv_timer_start(&call->timer, on_timeout, call->timeout_ms, 0);
    call->conn.data = call;
    int r = uv_tcp_connect(&call->conn, &call->tcp, (struct sockaddr *)&c->ep[call->ep].addr, on_connect);
    if (r < 0)
        attempt_failed(call, uv_strerror(r));
}

static struct etcd_call *call_new(struct etcd_client *c, const char *op, struct json_object *body,
                                  unsigned timeout_ms, bool streaming)
{
    struct etcd_call *call = xcalloc(1, sizeof(*call));
    call->c = c;
    snprintf(call->op, sizeof(call->op), "%s", op);
    call->streaming = streaming;
    call->timeout_ms = timeout_ms ? timeout_ms : 2000;
    size_t blen;
    const char *js = json_object_to_json_string_length(body, JSON_C_TO_STRING_PLAIN, &blen);
    char head[512];
    int hl = snprintf(head, sizeof(head),
                      "POST /v3/%s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
                      "Content-Length: %zu\r\n%s\r\n",
                      op, c->ep[c->cur].name, blen, streaming ? "" : "Connection: close\r\n");
    sbuf_add(&call->req, head, (size_t)hl);
    sbuf_add(&call->req, js, blen);
    json_object_put(body);
    call->next = c->calls;
    if (c->calls)
        c->calls->prev = call;
    c->calls = call;
    uv_timer_init(c->loop, &call->timer);
    call->timer.data = call;
    call->handles++;
    return call;
}

struct etcd_call *kago__etcd_call(struct etcd_client *c, const char *op, struct json_object *body,
                                  unsigned timeout_ms, etcd_done_cb cb, void *arg)
{
    struct etcd_call *call = call_new(c, op, body, timeout_ms, false);
    call->done = cb;
    call->arg = arg;
    start_attempt(call);
    return call;
}

struct etcd_call *kago__etcd_stream(struct etcd_client *c, const char *op, struct json_object *body,
                                    unsigned connect_timeout_ms, etcd_line_cb on_line, etcd_done_cb on_end,
                                    void *arg)
{
    struct etcd_call *call = call_new(c, op, body, connect_timeout_ms, true);
    call->done = on_end;
    call->on_line = on_line;
    call->arg = arg;
    start_attempt(call);
    return call;
}

void kago__etcd_cancel(struct etcd_call *call)
{
    if (!call || call->canceled)
        return;
    call->canceled = true;
    if (!call->finished) {
        call->finished = true;
        call->retry = false;
        close_handles(call);
    }
}

/* --- synchronous, for the CLI ------------------------------------------------------------------ */

struct sync_result {
    struct json_object *resp;
    struct kago_error *err;
    bool done;
};

static void sync_done(void *arg, struct json_object *resp, const struct kago_error *err)
{
    struct sync_result *r = arg;
    r->done = true;
    if (resp)
        r->resp = json_object_get(resp);
    else
        kago_error_set(&r->err, err->code, "%s", err->msg);
}

int kago__etcd_call_sync(struct etcd_client *c, const char *op, struct json_object *body, unsigned timeout_ms,
                         struct json_object **resp, struct kago_error **err)
{
    struct sync_result r = {0};
    kago__etcd_call(c, op, body, timeout_ms, sync_done, &r);
    while (!r.done)
        uv_run(c->loop, UV_RUN_ONCE);
    uv_run(c->loop, UV_RUN_NOWAIT); /* the call's handles close */
    if (!r.resp) {
        *err = r.err;
        return -1;
    }
    *resp = r.resp;
    return 0;
}
