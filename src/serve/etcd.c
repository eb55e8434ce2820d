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
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "buf.h"
#include "etcd.h"
#include "http.h"
#include "util.h"

struct etcd_endpoint {
    char *name; /* "HOST:PORT" */
    char host[256];
    struct sockaddr_storage addr;
    SSL_SESSION *sess; /* etcds://: the last ticket it gave, to resume the next call's handshake */
};

struct etcd_client {
    uv_loop_t *loop;
    struct etcd_endpoint *ep;
    size_t nep, cur;
    struct etcd_call *calls;
    SSL_CTX *tls; /* etcds://, else NULL */
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
    SSL *ssl; /* etcds://: the attempt's TLS, over memory BIOs (the loop does the I/O) */
    bool tls_up;
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

static int resolve(const char *name, char host[256], struct sockaddr_storage *ss, struct kago_error **err)
{
    const char *colon = strrchr(name, ':');
    size_t hl = (size_t)(colon - name);
    if (hl >= 256)
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

static const char *ssl_why(char *buf, size_t n)
{
    unsigned long e = ERR_get_error();
    snprintf(buf, n, "%s",
             e ? ERR_reason_error_string(e) ? ERR_reason_error_string(e) : "?" : "no reason given");
    ERR_clear_error();
    return buf;
}

/* A new session (TLS 1.3: a ticket, after the handshake) of the endpoint a call talks to: the next call
 * resumes it (a resumed handshake skips the certificate's signature and its check). */
static int on_new_session(SSL *ssl, SSL_SESSION *sess)
{
    struct etcd_call *call = SSL_get_app_data(ssl);
    struct etcd_endpoint *ep = &call->c->ep[call->ep];
    if (ep->sess)
        SSL_SESSION_free(ep->sess);
    ep->sess = sess;
    return 1; /* (the reference is ours) */
}

static const char *tls_file(const char *given, const char *env)
{
    const char *v = given ? given : getenv(env);
    return v && *v ? v : NULL;
}

static int tls_setup(struct etcd_client *c, const struct etcd_tls *t, struct kago_error **err)
{
    const char *ca = tls_file(t ? t->ca : NULL, "KAGO_ETCD_CA"),
               *cert = tls_file(t ? t->cert : NULL, "KAGO_ETCD_CERT"),
               *key = tls_file(t ? t->key : NULL, "KAGO_ETCD_KEY");
    char why[256];
    if (!cert != !key)
        return kago_error_set(err, EINVAL,
                              "etcd TLS: a client certificate needs its key (--etcd-cert and --etcd-key)");
    SSL_CTX *ctx = c->tls = SSL_CTX_new(TLS_client_method());
    if (!ctx)
        return kago_error_set(err, ENOMEM, "etcd TLS: SSL_CTX_new: %s", ssl_why(why, sizeof(why)));
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    if (ca ? SSL_CTX_load_verify_locations(ctx, ca, NULL) != 1 : SSL_CTX_set_default_verify_paths(ctx) != 1)
        return kago_error_set(err, 0, "etcd TLS: CA %s: %s", ca ? ca : "(the system's)",
                              ssl_why(why, sizeof(why)));
    if (cert && SSL_CTX_use_certificate_chain_file(ctx, cert) != 1)
        return kago_error_set(err, 0, "etcd TLS: certificate %s: %s", cert, ssl_why(why, sizeof(why)));
    if (key &&
        (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1 || SSL_CTX_check_private_key(ctx) != 1))
        return kago_error_set(err, 0, "etcd TLS: key %s: %s", key, ssl_why(why, sizeof(why)));
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(ctx, on_new_session);
    return 0;
}

struct etcd_client *kago__etcd_new(uv_loop_t *loop, const char *url, const struct etcd_tls *tls,
                                   struct kago_error **err)
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
        if (resolve(c->ep[i].name, c->ep[i].host, &c->ep[i].addr, err) < 0) {
            kago__strv_free(names);
            c->freeing = true;
            kago__etcd_free(c);
            return NULL;
        }
    }
    kago__strv_free(names);
    if (kago__etcd_url_tls(url) && tls_setup(c, tls, err) < 0) {
        c->freeing = true;
        kago__etcd_free(c);
        return NULL;
    }
    return c;
}

static void client_free(struct etcd_client *c)
{
    for (size_t i = 0; i < c->nep; i++) {
        free(c->ep[i].name);
        if (c->ep[i].sess)
            SSL_SESSION_free(c->ep[i].sess);
    }
    SSL_CTX_free(c->tls);
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
    SSL_free(call->ssl);
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
        SSL_free(call->ssl); /* (the next endpoint's handshake is its own) */
        call->ssl = NULL;
        call->tls_up = false;
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
    if (call->ssl && resp) /* a clean end: its session stays resumable (OpenSSL drops one cut short) */
        SSL_set_shutdown(call->ssl, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
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

/* Response bytes (plaintext): parsed; false once the call ended. */
static bool got_bytes(struct etcd_call *call, const char *p, size_t n)
{
    size_t used;
    llhttp_errno_t e = n ? kago__http_execute(&call->resp, p, n, &used) : HPE_OK;
    if (call->finished)
        return false;
    if (call->complete)
        complete(call);
    else if (e != HPE_OK && e != HPE_PAUSED)
        fail(call, "bad HTTP response: %s", call->resp.error_reason ? call->resp.error_reason : "?");
    return !call->finished;
}

static void got_eof(struct etcd_call *call, const char *why)
{
    if (call->finished)
        return;
    if (!call->got_head)
        attempt_failed(call, why);
    else
        fail(call, "%s", why);
}

static bool tls_pump(struct etcd_call *call, const char *in, size_t n);

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    struct etcd_call *call = s->data;
    if (n < 0) {
        free(buf->base);
        got_eof(call, n == UV_EOF ? "connection closed" : uv_strerror((int)n));
        return;
    }
    if (!call->finished) {
        if (call->ssl)
            tls_pump(call, buf->base, (size_t)n);
        else
            got_bytes(call, buf->base, (size_t)n);
    }
    free(buf->base);
}

/* --- TLS (etcds://) --------------------------------------------------------------------------------- */

struct tls_write {
    uv_write_t req; /* (first) */
    char data[];
};

static void on_tls_written(uv_write_t *w, int status)
{
    struct etcd_call *call = w->data;
    free(w);
    if (status < 0 && status != UV_ECANCELED && !call->finished)
        attempt_failed(call, uv_strerror(status));
}

/* Writes what TLS queued; false when the call ended. */
static bool tls_flush(struct etcd_call *call)
{
    BIO *wb = SSL_get_wbio(call->ssl);
    size_t n = BIO_ctrl_pending(wb);
    if (!n)
        return true;
    struct tls_write *w = xmalloc(sizeof(*w) + n);
    BIO_read(wb, w->data, (int)n);
    w->req.data = call;
    uv_buf_t b = uv_buf_init(w->data, (unsigned)n);
    int r = uv_write(&w->req, (uv_stream_t *)&call->tcp, &b, 1, on_tls_written);
    if (r < 0) {
        free(w);
        attempt_failed(call, uv_strerror(r));
        return false;
    }
    return true;
}

/* Feeds what arrived (n may be 0), advances the handshake, sends the request once it is done, parses what
 * is decrypted and writes what TLS queued. false once the call ended. */
static bool tls_pump(struct etcd_call *call, const char *in, size_t n)
{
    char why[512];
    if (n)
        BIO_write(SSL_get_rbio(call->ssl), in, (int)n);
    if (!call->tls_up) {
        int r = SSL_do_handshake(call->ssl);
        if (r != 1) {
            if (SSL_get_error(call->ssl, r) == SSL_ERROR_WANT_READ)
                return tls_flush(call);
            long v = SSL_get_verify_result(call->ssl);
            if (v != X509_V_OK) {
                snprintf(why, sizeof(why), "TLS handshake: certificate verify failed: %s",
                         X509_verify_cert_error_string(v));
                ERR_clear_error();
            } else {
                char r2[256];
                snprintf(why, sizeof(why), "TLS handshake: %s", ssl_why(r2, sizeof(r2)));
            }
            tls_flush(call); /* (its alert) */
            attempt_failed(call, why);
            return false;
        }
        call->tls_up = true;
        size_t w = 0;
        if (SSL_write_ex(call->ssl, call->req.data, call->req.len, &w) != 1) {
            char r2[256];
            snprintf(why, sizeof(why), "TLS: %s", ssl_why(r2, sizeof(r2)));
            attempt_failed(call, why);
            return false;
        }
    }
    char buf[16384];
    for (;;) {
        size_t got = 0;
        if (SSL_read_ex(call->ssl, buf, sizeof(buf), &got) != 1) {
            int e = SSL_get_error(call->ssl, 0);
            if (e == SSL_ERROR_WANT_READ)
                break;
            char r2[256];
            /* (TLS 1.3: etcd checks the client's certificate after the client's side of the handshake) */
            bool anon = !SSL_CTX_get0_certificate(call->c->tls) && !call->got_head;
            snprintf(
                why, sizeof(why), "TLS: %s%s",
                e == SSL_ERROR_ZERO_RETURN ? "connection closed" : ssl_why(r2, sizeof(r2)),
                anon ? " (no client certificate was given: --etcd-cert and --etcd-key, or $KAGO_ETCD_CERT "
                       "and $KAGO_ETCD_KEY)"
                     : "");
            got_eof(call, why);
            return false;
        }
        if (!got_bytes(call, buf, got))
            return false;
    }
    return tls_flush(call);
}

/* After the connect: the handshake begins, verifying etcd's certificate for the endpoint's name or IP. */
static void tls_begin(struct etcd_call *call)
{
    struct etcd_endpoint *ep = &call->c->ep[call->ep];
    call->ssl = SSL_new(call->c->tls);
    BIO *rb = BIO_new(BIO_s_mem()), *wb = BIO_new(BIO_s_mem());
    if (!call->ssl || !rb || !wb)
        abort(); /* out of memory */
    SSL_set_bio(call->ssl, rb, wb);
    SSL_set_connect_state(call->ssl);
    SSL_set_app_data(call->ssl, call);
    unsigned char ip[16];
    if (inet_pton(AF_INET, ep->host, ip) == 1 || inet_pton(AF_INET6, ep->host, ip) == 1) {
        X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(call->ssl), ep->host);
    } else {
        SSL_set_tlsext_host_name(call->ssl, ep->host);
        SSL_set1_host(call->ssl, ep->host);
    }
    if (ep->sess)
        SSL_set_session(call->ssl, ep->sess);
    tls_pump(call, NULL, 0);
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
    if (call->c->tls) {
        int r = uv_read_start((uv_stream_t *)&call->tcp, on_alloc, on_read);
        if (r < 0)
            attempt_failed(call, uv_strerror(r));
        else
            tls_begin(call);
        return;
    }
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
