/* kago serve — HTTP/2 connections and streams over nghttp2 (h2.h says how they map onto the HTTP/1.1
 * request path). */
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#include <nghttp2/nghttp2.h>

#include "h2.h"
#include "pages.h"
#include "serve_int.h"
#include "util.h"

#define H2_BIG     4096 /* a block this large is a page buffer (see "memory" below) */
#define H2_SCRATCH 8192 /* a page buffer this large is a frame buffer, whose content is dead while idle */
#define H2_RING    1024 /* an HPACK table's ring of entry pointers (128 of them) */
#define H2_NBIG    4

struct h2_conn {
    nghttp2_session *s;
    nghttp2_mem mem; /* nghttp2 allocates through these (h2_malloc...), to find its frame buffer */
    struct h2_big {  /* nghttp2's blocks of H2_BIG or more (its stream map, its frame buffer), in pages.h */
        void *p;
        size_t n;
    } big[H2_NBIG];
    bool making, ring_paged; /* in nghttp2_session_server_new3; the HPACK encoder's ring is a page buffer */
    struct client *c;
    struct h2_stream *streams; /* the open ones with a client */
    unsigned nstreams;
    bool in_recv, sending, dead, goaway, corked, streamed; /* streamed: a stream's head came whole */
    TAILQ_ENTRY(h2_conn) cork_link;                        /* its loop's h2_corked, while corked */
    double resets, ctrl;                                   /* tokens left (H2_RESET_*, H2_CTRL_*) */
    uint64_t refill_us;
    uint64_t first_by_us; /* its first stream must begin by then (--header-timeout from its start) */
};

struct h2_stream {
    struct h2_stream *prev, *next;
    struct h2_conn *conn; /* NULL once detached */
    struct client *c;
    int32_t id;
    struct h2_head head; /* as it arrives */
    struct sbuf body;    /* request body not yet upstream */
    size_t body_off;
    bool headers_done, in_eof, begun, submitted, deferred, closed;
};

static void conn_send(struct h2_conn *h);
static int stream_flush(struct outq *q);

/* --- token buckets ------------------------------------------------------------------------------ */

static void refill(struct h2_conn *h)
{
    uint64_t now = kago__serve_now_us();
    double dt = (now - h->refill_us) / 1e6;
    h->refill_us = now;
    h->resets += dt * H2_RESET_RATE;
    if (h->resets > H2_RESET_BURST)
        h->resets = H2_RESET_BURST;
    h->ctrl += dt * H2_CTRL_RATE;
    if (h->ctrl > H2_CTRL_BURST)
        h->ctrl = H2_CTRL_BURST;
}

/* A flood: GOAWAY with ENHANCE_YOUR_CALM, then the connection ends. */
static int calm_down(struct h2_conn *h)
{
    if (!h->goaway) {
        __atomic_add_fetch(&h->c->srv->h2.goaways_calm, 1, __ATOMIC_RELAXED);
        h->goaway = true;
        nghttp2_session_terminate_session(h->s, NGHTTP2_ENHANCE_YOUR_CALM);
    }
    return 0;
}

/* --- streams ------------------------------------------------------------------------------------ */

static struct h2_stream *stream_of(struct h2_conn *h, int32_t id)
{
    return nghttp2_session_get_stream_user_data(h->s, id);
}

/* --header-timeout: a stream whose request is not routed by then (its head, or the body it is gathered
 * with, still coming) gets 408. Routed, it has the request's own timers. */
static void on_head_timeout(uv_timer_t *t)
{
    struct client *c = t->data;
    struct h2_stream *st = c->h2s;
    if (st && st->conn && !st->begun) {
        st->begun = true;
        kago__client_stream_fail(c, 408);
    }
}

static int on_begin_headers(nghttp2_session *s, const nghttp2_frame *f, void *arg)
{
    struct h2_conn *h = arg;
    if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST || h->goaway)
        return 0;
    struct h2_stream *st = xcalloc(1, sizeof(*st));
    st->conn = h;
    st->id = f->hd.stream_id;
    st->c = kago__client_stream_new(h->c, st);
    st->c->out.flush_hook = stream_flush;
    uv_timer_start(&st->c->timer, on_head_timeout, h->c->srv->opts.header_timeout_ms, 0);
    st->next = h->streams;
    if (h->streams)
        h->streams->prev = st;
    h->streams = st;
    h->nstreams++;
    __atomic_add_fetch(&h->c->srv->h2.streams, 1, __ATOMIC_RELAXED);
    nghttp2_session_set_stream_user_data(s, st->id, st);
    uv_timer_stop(&h->c->timer); /* not idle */
    return 0;
}

static int on_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name, size_t nlen,
                     const uint8_t *value, size_t vlen, uint8_t flags, void *arg)
{
    struct h2_conn *h = arg;
    struct h2_stream *st = stream_of(h, f->hd.stream_id);
    if (!st || f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0; /* trailers (a HEADERS frame after the request's): dropped, never merged into its head */
    if (kago__h2_head_field(&st->head, name, nlen, value, vlen) < 0) /* an HPACK bomb */
        return calm_down(h), NGHTTP2_ERR_CALLBACK_FAILURE;
    return 0;
}

/* The request head is complete: as an HTTP/1.1 head into the stream client's read buffer, parsed and
 * routed there. */
static void stream_begin(struct h2_stream *st, int64_t body)
{
    st->begun = true;
    struct sbuf head = {0};
    int status = kago__h2_head_build(&st->head, body, &head);
    if (status)
        kago__client_stream_fail(st->c, status);
    else
        kago__client_stream_input(st->c, head.data, head.len);
    sbuf_free(&head);
}

/* A request with a body but no content-length is routed once its body is whole (then it gets a
 * content-length: apps that cannot read chunked bodies, busybox httpd for one, take it) or fills the
 * stream's window (then it goes chunked); others at once. */
static void maybe_begin(struct h2_stream *st)
{
    if (st->begun || !st->headers_done)
        return;
    size_t have = st->body.len - st->body_off;
    bool plain = st->head.has_cl || st->head.too_big || st->head.bad || kago__h2_head_connect(&st->head);
    if (!st->in_eof && !plain && have < H2_STREAM_WINDOW)
        return;
    stream_begin(st, !st->in_eof ? H2_BODY_UNKNOWN : have ? (int64_t)have : H2_BODY_NONE);
}

/* A frame paid for from a bucket (h->resets or h->ctrl): past its budget, a flood. */
static int spend(struct h2_conn *h, double *bucket)
{
    refill(h);
    if ((*bucket -= 1) < 0)
        return calm_down(h);
    return 0;
}

/* A stream still being served that ends early costs a reset (CVE-2023-44487), whether the client reset it
 * or made serve reset it (CVE-2025-8671, "MadeYouReset": a body longer than its content-length, a window
 * overflowed, a bad trailer), else a client that does the latter starts streams at the app unbounded. */
static bool serving(struct h2_conn *h, int32_t id)
{
    struct h2_stream *st = stream_of(h, id);
    return st && st->c && st->c->state != C_CLOSING;
}

/* Frames that carry nothing cost a control token: those serve ignores (unknown types: see options_init),
 * PINGs (ACKs too: serve sends none, so none is owed), SETTINGS, PRIORITY, WINDOW_UPDATE, resets of streams
 * no longer served, DATA without data (padding is none). */
static int on_begin_frame(nghttp2_session *s, const nghttp2_frame_hd *hd, void *arg)
{
    return hd->type > NGHTTP2_CONTINUATION ? spend(arg, &((struct h2_conn *)arg)->ctrl) : 0;
}

static int on_frame_recv(nghttp2_session *s, const nghttp2_frame *f, void *arg)
{
    struct h2_conn *h = arg;
    switch (f->hd.type) {
    case NGHTTP2_SETTINGS:
    case NGHTTP2_PING:
    case NGHTTP2_PRIORITY:
    case NGHTTP2_WINDOW_UPDATE:
        if (f->hd.type == NGHTTP2_SETTINGS && f->hd.flags & NGHTTP2_FLAG_ACK)
            break; /* (it answers serve's own; nghttp2 ends a connection that sends one unasked) */
        return spend(h, &h->ctrl);
    case NGHTTP2_RST_STREAM:
        return spend(h, serving(h, f->hd.stream_id) ? &h->resets : &h->ctrl);
    case NGHTTP2_DATA:
    case NGHTTP2_HEADERS: {
        if (f->hd.type == NGHTTP2_DATA && f->hd.length == f->data.padlen &&
            !(f->hd.flags & NGHTTP2_FLAG_END_STREAM))
            spend(h, &h->ctrl);
        struct h2_stream *st = stream_of(h, f->hd.stream_id);
        if (!st || !st->c)
            break;
        if (f->hd.flags & NGHTTP2_FLAG_END_STREAM)
            st->in_eof = true;
        if (f->hd.type == NGHTTP2_HEADERS && f->headers.cat == NGHTTP2_HCAT_REQUEST)
            st->headers_done = h->streamed = true;
        if (!st->begun)
            maybe_begin(st);
        else if (st->c && st->in_eof)
            kago__h2_stream_pump(st->c);
        break;
    }
    default:
        break;
    }
    return 0;
}

static int on_data(nghttp2_session *s, uint8_t flags, int32_t id, const uint8_t *data, size_t len, void *arg)
{
    struct h2_conn *h = arg;
    struct h2_stream *st = stream_of(h, id);
    struct client *c = st ? st->c : NULL;
    if (!c || c->state == C_CLOSING) { /* nobody wants it: the window goes back at once */
        nghttp2_session_consume(s, id, len);
        return 0;
    }
    if (st->body_off && st->body_off == st->body.len)
        st->body_off = st->body.len = 0;
    sbuf_add(&st->body, data, len);
    if (!st->begun)
        maybe_begin(st);
    else
        kago__h2_stream_pump(c);
    return 0;
}

static int on_stream_close(nghttp2_session *s, int32_t id, uint32_t code, void *arg)
{
    struct h2_conn *h = arg;
    struct h2_stream *st = stream_of(h, id);
    if (!st)
        return 0;
    st->closed = true;
    nghttp2_session_set_stream_user_data(s, id, NULL);
    if (st->c)
        kago__client_close(st->c); /* detaches it */
    return 0;
}

/* nghttp2 reset a stream for what its client sent: counted (serve's own resets, kago__h2_stream_detach's,
 * come after it let the stream go: no stream_of, not counted). A response ended before the client's
 * request did: RST_STREAM NO_ERROR tells it to stop sending. */
static int on_frame_send(nghttp2_session *s, const nghttp2_frame *f, void *arg)
{
    struct h2_conn *h = arg;
    if (f->hd.type == NGHTTP2_RST_STREAM && f->rst_stream.error_code != NGHTTP2_NO_ERROR &&
        serving(h, f->hd.stream_id))
        return spend(h, &h->resets);
    if ((f->hd.type == NGHTTP2_DATA || f->hd.type == NGHTTP2_HEADERS) &&
        f->hd.flags & NGHTTP2_FLAG_END_STREAM) {
        struct h2_stream *st = stream_of(h, f->hd.stream_id);
        if (st && !st->in_eof)
            nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, f->hd.stream_id, NGHTTP2_NO_ERROR);
    }
    return 0;
}

/* The response body: what the upstream put in the stream client's out queue. */
static ssize_t read_body(nghttp2_session *s, int32_t id, uint8_t *buf, size_t len, uint32_t *flags,
                         nghttp2_data_source *src, void *arg)
{
    struct h2_stream *st = src->ptr;
    struct client *c = st->c;
    if (!st->conn || !c)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    struct outq *q = &c->out;
    size_t avail = q->pend.len - q->off, n = avail < len ? avail : len;
    if (n)
        memcpy(buf, q->pend.data + q->off, n);
    q->off += n;
    q->written += n;
    if (q->off == q->pend.len) {
        q->off = 0;
        sbuf_reset(&q->pend, OUTQ_KEEP);
    } else if (q->off > OUTQ_KEEP) {
        memmove(q->pend.data, q->pend.data + q->off, q->pend.len - q->off);
        q->pend.len -= q->off;
        q->off = 0;
    }
    if (c->up && !kago__outq_full(q))
        kago__upconn_resume(c->up);
    if (q->pend.len == 0 && c->state == C_CLOSING) {
        *flags |= NGHTTP2_DATA_FLAG_EOF;
        return (ssize_t)n;
    }
    if (n == 0) {
        st->deferred = true;
        return NGHTTP2_ERR_DEFERRED;
    }
    return (ssize_t)n;
}

/* The stream client's out queue was "flushed": its body is there for nghttp2 to take. */
static int stream_flush(struct outq *q)
{
    struct client *c = q->owner;
    struct h2_stream *st = c->h2s;
    if (!st || !st->conn)
        return 0;
    if (st->deferred && (q->pend.len > q->off || c->state == C_CLOSING)) {
        st->deferred = false;
        nghttp2_session_resume_data(st->conn->s, st->id);
    }
    conn_send(st->conn);
    return 0;
}

static void submit(struct h2_stream *st, nghttp2_nv *nv, size_t n, bool has_body)
{
    nghttp2_data_provider dp = {.source.ptr = st, .read_callback = read_body};
    st->submitted = true;
    if (nghttp2_submit_response(st->conn->s, st->id, nv, n, has_body ? &dp : NULL) != 0)
        nghttp2_submit_rst_stream(st->conn->s, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_INTERNAL_ERROR);
}

#define NV(n, v, vl) ((nghttp2_nv){(uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, (vl), NGHTTP2_NV_FLAG_NONE})

void kago__h2_stream_head(struct client *c, const struct http_msg *resp, const struct http_resp_opts *o,
                          bool has_body)
{
    struct h2_stream *st = c->h2s;
    if (!st || !st->conn || st->submitted)
        return;
    struct {
        char data[HTTP_MAX_HEAD]; /* the names lower-cased, as HTTP/2 wants them (they are in raw) */
        size_t len;
    } names;
    names.len = 0;
    nghttp2_nv nv[HTTP_MAX_HEADERS + 4];
    size_t n = 0;
    char status[4];
    int sc = resp->parser.status_code;
    status[0] = (char)('0' + sc / 100 % 10);
    status[1] = (char)('0' + sc / 10 % 10);
    status[2] = (char)('0' + sc % 10);
    nv[n++] = NV(":status", status, 3);
    for (unsigned i = 0; i < resp->nhdr; i++) {
        const struct http_hdr *hd = &resp->hdr[i];
        if (kago__http_hop(resp, i))
            continue;
        char *lc = names.data + names.len;
        for (uint32_t k = 0; k < hd->name_len; k++) {
            char ch = resp->raw.data[hd->name + k];
            lc[k] = ch >= 'A' && ch <= 'Z' ? (char)(ch + 32) : ch;
        }
        names.len += hd->name_len;
        nv[n++] = (nghttp2_nv){(uint8_t *)lc, (uint8_t *)resp->raw.data + hd->value, hd->name_len,
                               hd->value_len, NGHTTP2_NV_FLAG_NONE};
    }
    char cold[32];
    if (o->cold_start_us >= 0) {
        int k = snprintf(cold, sizeof(cold), "%.1fms%s%s", o->cold_start_us / 1000.0, o->cold_kind ? " " : "",
                         o->cold_kind ? o->cold_kind : "");
        nv[n++] = NV("x-kago-cold-start", cold, (size_t)k);
    }
    if (o->hsts && !kago__http_find(resp, "strict-transport-security", NULL, NULL))
        nv[n++] = NV("strict-transport-security", o->hsts, strlen(o->hsts));
    submit(st, nv, n, has_body); /* sent by the flush that follows */
}

void kago__h2_stream_respond(struct client *c, int status, unsigned retry_after, const char *location,
                             size_t loc_len, const char *body, size_t len)
{
    struct h2_stream *st = c->h2s;
    if (!st || !st->conn || st->submitted)
        return;
    struct outq *q = &c->out;
    if (body) {
        sbuf_add(&q->pend, body, len);
    } else if (!location) {
        sbuf_addu(&q->pend, (uint64_t)status, 10);
        sbuf_add(&q->pend, " ", 1);
        sbuf_adds(&q->pend, kago__http_reason(status));
        sbuf_add(&q->pend, "\n", 1);
    }
    char st_s[3] = {(char)('0' + status / 100 % 10), (char)('0' + status / 10 % 10),
                    (char)('0' + status % 10)};
    char cl[24], ra[24];
    int cln = snprintf(cl, sizeof(cl), "%zu", q->pend.len - q->off);
    int ran = snprintf(ra, sizeof(ra), "%u", retry_after);
    nghttp2_nv nv[6];
    size_t n = 0;
    nv[n++] = NV(":status", st_s, 3);
    nv[n++] = NV("server", "kago", 4);
    nv[n++] = NV("content-length", cl, (size_t)cln);
    if (!location)
        nv[n++] = NV("content-type", "text/plain", 10);
    if (retry_after)
        nv[n++] = NV("retry-after", ra, (size_t)ran);
    if (location)
        nv[n++] = NV("location", location, loc_len);
    submit(st, nv, n, q->pend.len > q->off); /* sent by the flush that follows */
}

void kago__h2_stream_pump(struct client *c)
{
    struct h2_stream *st = c->h2s;
    if (!st || !st->conn || c->state != C_PROXY || !c->up)
        return;
    struct upconn *u = c->up;
    size_t n = st->body.len - st->body_off;
    if (n && !kago__outq_full(&u->out)) {
        c->body_in += n;
        if (c->app && c->app->app.max_body && c->body_in > c->app->app.max_body) {
            kago__client_stream_fail(c, 413);
            return;
        }
        const char *p = st->body.data + st->body_off;
        if (c->info.chunked) {
            sbuf_addu(&u->out.pend, n, 16);
            sbuf_add(&u->out.pend, "\r\n", 2);
            sbuf_add(&u->out.pend, p, n);
            sbuf_add(&u->out.pend, "\r\n", 2);
        } else {
            sbuf_add(&u->out.pend, p, n);
        }
        st->body_off = st->body.len = 0;
        sbuf_reset(&st->body, 16 * 1024);
        nghttp2_session_consume(st->conn->s, st->id, n);
        conn_send(st->conn);
    }
    if (st->in_eof && st->body.len == 0 && !c->req_done) {
        if (c->info.chunked)
            sbuf_add(&u->out.pend, "0\r\n\r\n", 5);
        c->req_done = true;
    }
    if (kago__outq_flush(&u->out) < 0)
        kago__client_upstream_failed(c, UV_EPIPE);
}

void kago__h2_stream_detach(struct client *c)
{
    struct h2_stream *st = c->h2s;
    struct h2_conn *h = st ? st->conn : NULL;
    if (!h)
        return;
    /* DATA kago took in but never sent on still counts against the connection's window: hand it back,
     * or each stream that ends with its body unread (an error answer, a reset upload) shrinks the window
     * for good, until uploads on the connection stall */
    if (!h->dead && st->body.len > st->body_off)
        nghttp2_session_consume(h->s, st->id, st->body.len - st->body_off);
    st->body_off = st->body.len = 0;
    if (!st->closed && !h->dead) {
        nghttp2_session_set_stream_user_data(h->s, st->id, NULL);
        nghttp2_submit_rst_stream(h->s, NGHTTP2_FLAG_NONE, st->id,
                                  st->submitted ? NGHTTP2_INTERNAL_ERROR : NGHTTP2_REFUSED_STREAM);
    }
    if (st->prev)
        st->prev->next = st->next;
    else
        h->streams = st->next;
    if (st->next)
        st->next->prev = st->prev;
    st->conn = NULL;
    h->nstreams--;
    if (!h->dead)
        conn_send(h);
}

void kago__h2_stream_free(struct h2_stream *st)
{
    if (!st)
        return;
    kago__h2_head_free(&st->head);
    sbuf_free(&st->body);
    free(st);
}

/* --- the connection ----------------------------------------------------------------------------- */

static void on_idle(uv_timer_t *t)
{
    struct client *c = t->data;
    struct h2_conn *h = c->h2;
    if (!h || h->dead)
        return;
    if (h->nstreams == 0) { /* idle: GOAWAY, then close once it is written */
        h->goaway = true;
        nghttp2_session_terminate_session(h->s, NGHTTP2_NO_ERROR);
        conn_send(h);
    }
}

static void arm_idle(struct h2_conn *h)
{
    if (h->nstreams || h->dead)
        return;
    struct outq *q = &h->c->out;
    /* before its first stream, the header timeout from the connection's start, which frames without a
     * stream (PINGs, SETTINGS) do not push back (see also conn.c's h2_head_timer) */
    uint64_t ms = h->c->srv->opts.keepalive_timeout_ms, now = kago__serve_now_us();
    if (!h->streamed)
        ms = h->first_by_us > now ? (h->first_by_us - now + 999) / 1000 : 1;
    uv_timer_start(&h->c->timer, on_idle, ms, 0);
    if (!q->writing && kago__outq_size(q) == 0) { /* idle: its buffers go */
        sbuf_free(&q->pend);
        sbuf_free(&q->busy);
        sbuf_free(&q->enc);
    }
}

/* A connection's frames are written at the end of its loop's turn, not as each is made: the responses of
 * its streams that arrive in one turn (at 10 streams per connection, about 5 per turn) then go out in one
 * TLS record and one write(2) instead of one each. The writes wait in an idle handle, which runs before
 * the loop polls again (and keeps it from blocking while any connection is corked), whichever phase of
 * the turn corked them. */
static void cork(struct h2_conn *h)
{
    if (h->corked)
        return;
    struct shard *s = h->c->shard;
    if (TAILQ_EMPTY(&s->h2_corked))
        uv_idle_start(&s->h2_cork, kago__h2_uncork);
    TAILQ_INSERT_TAIL(&s->h2_corked, h, cork_link);
    h->corked = true;
}

static void uncork(struct h2_conn *h)
{
    if (!h->corked)
        return;
    TAILQ_REMOVE(&h->c->shard->h2_corked, h, cork_link);
    h->corked = false;
}

/* (A queue that stopped conn_send by being full and was then written at once: nothing else would ask
 * nghttp2 for the rest, so this does, and corks the connection again.) */
static void conn_flush(struct h2_conn *h)
{
    if (kago__outq_flush(&h->c->out) < 0) {
        h->dead = true;
        kago__client_close(h->c);
        return;
    }
    if (!h->c->out.writing && nghttp2_session_want_write(h->s))
        conn_send(h);
    else
        arm_idle(h);
}

void kago__h2_uncork(uv_idle_t *idle)
{
    struct shard *s = container_of(idle, struct shard, h2_cork);
    struct h2_conn *h;
    while ((h = TAILQ_FIRST(&s->h2_corked))) {
        uncork(h);
        conn_flush(h);
    }
    uv_idle_stop(idle);
}

/* What nghttp2 has to send goes to the out queue while it has room (written at the end of the turn); the
 * connection ends when nghttp2 wants neither to read nor to write. */
static void conn_send(struct h2_conn *h)
{
    if (h->in_recv || h->sending || h->dead)
        return;
    struct client *c = h->c;
    h->sending = true;
    while (!kago__outq_full(&c->out)) {
        const uint8_t *d;
        ssize_t n = nghttp2_session_mem_send(h->s, &d);
        if (n < 0) {
            h->dead = true;
            break;
        }
        if (n == 0)
            break;
        sbuf_add(&c->out.pend, d, (size_t)n);
    }
    h->sending = false;
    if (h->dead || (!nghttp2_session_want_read(h->s) && !nghttp2_session_want_write(h->s))) {
        h->dead = true;
        uncork(h);
        kago__client_finish(c); /* closes once what is queued is written */
        return;
    }
    if (kago__outq_size(&c->out) && !c->out.writing)
        cork(h);
    else
        arm_idle(h);
}

static int on_error(nghttp2_session *s, int code, const char *msg, size_t len, void *arg)
{
    return 0; /* (nghttp2's own messages: the connection's end says enough) */
}

/* Frames of unknown types are dropped, unread (see options_init). */
static int on_extension_chunk(nghttp2_session *s, const nghttp2_frame_hd *hd, const uint8_t *data, size_t len,
                              void *arg)
{
    return 0;
}

static int unpack_extension(nghttp2_session *s, void **payload, const nghttp2_frame_hd *hd, void *arg)
{
    return NGHTTP2_ERR_CANCEL;
}

static nghttp2_session_callbacks *cbs;
static nghttp2_option *opt;
static pthread_once_t cbs_once = PTHREAD_ONCE_INIT,
                      opt_once = PTHREAD_ONCE_INIT; /* (any loop may be first) */

static void callbacks_init(void)
{
    if (nghttp2_session_callbacks_new(&cbs) != 0)
        abort();
    nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
    nghttp2_session_callbacks_set_on_begin_frame_callback(cbs, on_begin_frame);
    nghttp2_session_callbacks_set_on_extension_chunk_recv_callback(cbs, on_extension_chunk);
    nghttp2_session_callbacks_set_unpack_extension_callback(cbs, unpack_extension);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
    nghttp2_session_callbacks_set_on_frame_send_callback(cbs, on_frame_send);
    nghttp2_session_callbacks_set_error_callback2(cbs, on_error);
}

static nghttp2_session_callbacks *callbacks(void)
{
    pthread_once(&cbs_once, callbacks_init);
    return cbs;
}

static void options_init(void)
{
    if (nghttp2_option_new(&opt) != 0)
        abort();
    nghttp2_option_set_no_auto_window_update(opt, 1); /* the window follows what the upstream took */
    nghttp2_option_set_max_outbound_ack(opt, 1000);   /* (nghttp2's default) */
    nghttp2_option_set_max_settings(opt, 32);
    nghttp2_option_set_no_closed_streams(opt, 1); /* no priority tree to keep them for */
    nghttp2_option_set_max_continuations(opt, 8);
    /* response heads are encoded with the static table and literals, as nginx does: no dynamic table of
     * up to 4 KiB to keep per connection (the client's table, for request heads, is still honoured) */
    nghttp2_option_set_max_deflate_dynamic_table_size(opt, 0);
    nghttp2_option_set_stream_reset_rate_limit(opt, H2_RESET_BURST * 2, H2_RESET_RATE);
    /* nghttp2 skips frames of types it does not know without a callback: as extensions of the
     * application's, each begins with on_begin_frame, which counts them as floods */
    for (unsigned t = NGHTTP2_CONTINUATION + 1; t <= 0xff; t++)
        nghttp2_option_set_user_recv_extension_type(opt, (uint8_t)t);
}

static nghttp2_option *options(void)
{
    pthread_once(&opt_once, options_init);
    return opt;
}

/* --- memory -------------------------------------------------------------------------------------- */

/* An idle connection's memory is mostly nghttp2's output frame buffer (NGHTTP2_FRAMEBUF_CHUNKLEN: a frame
 * of 16 KiB and its header), allocated with the session and kept for its life; a frame is written into it
 * from its start each time. Blocks that large are page buffers (pages.h): while the connection has no
 * stream and nothing to send, all their pages go back to the kernel (they read as zeros, and are faulted
 * in again by the next frame), and none is a hole in malloc's heap. nginx's idle HTTP/2 connection holds no
 * such buffer either.
 *
 * Two more blocks made with the session are page buffers that start as zeros: the stream map's table
 * (4 KiB), all zeros again once no stream is open, and the HPACK encoder's ring (nghttp2_session_new makes
 * the encoder's before the decoder's), which an encoder without a dynamic table (options() above) never
 * writes. Idle, a page of theirs goes back only when it reads as zeros, so whatever nghttp2 keeps in them
 * stays: were the ring the decoder's after all, it would cost a page while in use, and be served right. */
static struct h2_big *big_slot(struct h2_conn *h, const void *p)
{
    for (size_t i = 0; i < H2_NBIG; i++)
        if (h->big[i].p == p)
            return &h->big[i];
    return NULL;
}

static void *h2_alloc(struct h2_conn *h, size_t n, bool zero)
{
    bool ring = h->making && !h->ring_paged && n == H2_RING;
    struct h2_big *b = n >= H2_BIG || ring ? big_slot(h, NULL) : NULL;
    if (!b)
        return zero ? calloc(1, n) : malloc(n);
    h->ring_paged |= ring;
    /* (a frame buffer's content is dead: any page buffer; the rest start as zeros, see "memory" above) */
    *b = (struct h2_big){zero || n < H2_SCRATCH ? kago__pages_get_zero(n) : kago__pages_get(n), n};
    return b->p;
}

static void *h2_malloc(size_t n, void *ud)
{
    return h2_alloc(ud, n, false);
}

static void h2_free(void *p, void *ud)
{
    struct h2_big *b = p ? big_slot(ud, p) : NULL;
    if (!b) {
        free(p);
        return;
    }
    kago__pages_put(b->p, b->n);
    *b = (struct h2_big){0};
}

static void *h2_calloc(size_t k, size_t n, void *ud)
{
    return n && k > SIZE_MAX / n ? NULL : h2_alloc(ud, k * n, true);
}

static void *h2_realloc(void *p, size_t n, void *ud)
{
    struct h2_big *b = p ? big_slot(ud, p) : NULL;
    if (!b && n < H2_BIG)
        return realloc(p, n);
    if (!n) {
        h2_free(p, ud);
        return NULL;
    }
    void *q = h2_malloc(n, ud);
    if (q && p) {
        memcpy(q, p, b ? (b->n < n ? b->n : n) : (malloc_usable_size(p) < n ? malloc_usable_size(p) : n));
        h2_free(p, ud);
    }
    return q;
}

bool kago__h2_idle(struct client *c)
{
    struct h2_conn *h = c->h2;
    if (!h || h->dead || h->corked || h->nstreams || nghttp2_session_want_write(h->s))
        return false;
    for (size_t i = 0; i < H2_NBIG; i++)
        if (h->big[i].n >= H2_SCRATCH)
            kago__pages_idle(h->big[i].p, h->big[i].n);
        else /* (its content stays: see "memory" above) */
            kago__pages_idle_zero(h->big[i].p, h->big[i].n);
    kago__outq_trim(&h->c->out);
    if (h->c->tls)
        kago__tls_idle(h->c->tls);
    return true;
}

void kago__h2_start(struct client *c)
{
    struct h2_conn *h = xcalloc(1, sizeof(*h));
    h->c = c;
    h->resets = H2_RESET_BURST;
    h->ctrl = H2_CTRL_BURST;
    h->refill_us = kago__serve_now_us();
    h->first_by_us = h->refill_us + c->srv->opts.header_timeout_ms * 1000;
    h->mem = (nghttp2_mem){h, h2_malloc, h2_free, h2_calloc, h2_realloc};
    h->making = true;
    if (nghttp2_session_server_new3(&h->s, callbacks(), h, options(), &h->mem) != 0)
        abort(); /* out of memory */
    h->making = false;
    c->h2 = h;
    c->state = C_H2;
    __atomic_add_fetch(&c->srv->h2.conns, 1, __ATOMIC_RELAXED);
    nghttp2_settings_entry set[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, H2_MAX_STREAMS},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, H2_STREAM_WINDOW},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, H2_MAX_HEADER_LIST},
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
    };
    nghttp2_submit_settings(h->s, NGHTTP2_FLAG_NONE, set, sizeof(set) / sizeof(set[0]));
    nghttp2_session_set_local_window_size(h->s, NGHTTP2_FLAG_NONE, 0, H2_CONN_WINDOW);
    conn_send(h);
}

void kago__h2_input(struct client *c, const char *data, size_t n)
{
    struct h2_conn *h = c->h2;
    if (h->dead)
        return;
    h->in_recv = true;
    ssize_t r = nghttp2_session_mem_recv(h->s, (const uint8_t *)data, n);
    h->in_recv = false;
    if (r < 0) { /* a fatal error (a flood, a bad preface, a callback's): what nghttp2 queued, then close */
        if (r == NGHTTP2_ERR_FLOODED && !h->goaway) {
            __atomic_add_fetch(&c->srv->h2.goaways_calm, 1, __ATOMIC_RELAXED);
            h->goaway = true;
        }
        if (!h->goaway)
            nghttp2_session_terminate_session(h->s, NGHTTP2_PROTOCOL_ERROR);
        const uint8_t *d;
        ssize_t k;
        while ((k = nghttp2_session_mem_send(h->s, &d)) > 0)
            sbuf_add(&c->out.pend, d, (size_t)k);
        uncork(h);
        kago__h2_conn_close(c);
        kago__client_finish(c);
        return;
    }
    conn_send(h);
}

void kago__h2_output(struct client *c)
{
    if (c->h2)
        conn_send(c->h2);
}

bool kago__h2_busy(const struct client *c)
{
    return c->h2 && c->h2->nstreams;
}

void kago__h2_shutdown(struct client *c)
{
    struct h2_conn *h = c->h2;
    if (!h || h->dead || h->goaway)
        return;
    h->goaway = true;
    nghttp2_submit_goaway(h->s, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(h->s),
                          NGHTTP2_NO_ERROR, NULL, 0);
    if (h->nstreams == 0)
        nghttp2_session_terminate_session(h->s, NGHTTP2_NO_ERROR);
    conn_send(h);
}

void kago__h2_conn_close(struct client *c)
{
    struct h2_conn *h = c->h2;
    if (!h)
        return;
    h->dead = true;
    uncork(h);
    while (h->streams)
        kago__client_close(h->streams->c); /* (detaches it) */
}

void kago__h2_conn_free(struct h2_conn *h)
{
    if (!h)
        return;
    uncork(h);
    nghttp2_session_del(h->s);
    free(h);
}
