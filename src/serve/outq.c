/* kago serve — double-buffered writes: try the write at once (the common case on loopback leaves
 * nothing queued), hand the rest to libuv, and keep appending to the other buffer meanwhile. */
#include "outq.h"
#include "tls.h"
#include "util.h"

void kago__outq_init(struct outq *q, uv_stream_t *stream, outq_cb cb, void *owner)
{
    *q = (struct outq){.stream = stream, .cb = cb, .owner = owner};
}

static void on_written(uv_write_t *req, int status)
{
    struct outq *q = req->data;
    free(req);
    q->req = NULL;
    q->writing = false;
    if (!q->tls)
        q->written += q->busy.len;
    sbuf_reset(&q->busy, OUTQ_KEEP);
    if (status == 0 && (q->pend.len || q->enc.len))
        status = kago__outq_flush(q);
    q->cb(q, status);
}

/* TLS: the plaintext queued is encrypted at once (into enc, after what the handshake wrote there). */
static int encrypt_pending(struct outq *q)
{
    if (!q->pend.len)
        return 0;
    if (kago__tls_write(q->tls, q->pend.data, q->pend.len) < 0)
        return UV_EPROTO;
    q->written += q->pend.len;
    sbuf_reset(&q->pend, OUTQ_KEEP);
    return 0;
}

int kago__outq_flush(struct outq *q)
{
    if (q->flush_hook)
        return q->flush_hook(q);
    struct sbuf *src = &q->pend;
    if (q->tls) {
        int r = encrypt_pending(q);
        if (r < 0)
            return r;
        src = &q->enc;
    }
    if (q->writing || src->len == 0)
        return 0;
    uv_buf_t b = uv_buf_init(src->data, src->len);
    int n = uv_try_write(q->stream, &b, 1);
    if (n == (int)src->len) {
        if (!q->tls)
            q->written += n;
        sbuf_reset(src, OUTQ_KEEP);
        return 0;
    }
    if (n < 0 && n != UV_EAGAIN)
        return n;
    if (n < 0)
        n = 0;
    if (!q->tls)
        q->written += n;
    struct sbuf t = q->busy;
    q->busy = *src;
    *src = t;
    src->len = 0;
    /* Keep the unwritten tail at the start of busy so on_written can account for it simply. */
    memmove(q->busy.data, q->busy.data + n, q->busy.len - n);
    q->busy.len -= n;
    b = uv_buf_init(q->busy.data, q->busy.len);
    q->req = xmalloc(sizeof(*q->req));
    q->req->data = q;
    int r = uv_write(q->req, q->stream, &b, 1, on_written);
    if (r < 0) {
        free(q->req);
        q->req = NULL;
        return r;
    }
    q->writing = true;
    return 0;
}

void kago__outq_trim(struct outq *q)
{
    if (!q->pend.len)
        sbuf_free(&q->pend);
    if (!q->busy.len && !q->writing)
        sbuf_free(&q->busy);
    if (!q->enc.len)
        sbuf_free(&q->enc);
}

void kago__outq_free(struct outq *q)
{
    sbuf_free(&q->pend);
    sbuf_free(&q->busy);
    sbuf_free(&q->enc);
}
