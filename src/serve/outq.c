/* kago serve — double-buffered writes: try the write at once (the common case on loopback leaves
 * nothing queued), hand the rest to libuv, and keep appending to the other buffer meanwhile. */
#include "outq.h"

void kago__outq_init(struct outq *q, uv_stream_t *stream, outq_cb cb, void *owner)
{
    *q = (struct outq){.stream = stream, .cb = cb, .owner = owner};
    q->req.data = q;
}

static void on_written(uv_write_t *req, int status)
{
    struct outq *q = req->data;
    q->writing = false;
    q->written += q->busy.len;
    sbuf_reset(&q->busy, OUTQ_KEEP);
    if (status == 0 && q->pend.len)
        status = kago__outq_flush(q);
    q->cb(q, status);
}

int kago__outq_flush(struct outq *q)
{
    if (q->writing || q->pend.len == 0)
        return 0;
    uv_buf_t b = uv_buf_init(q->pend.data, q->pend.len);
    int n = uv_try_write(q->stream, &b, 1);
    if (n == (int)q->pend.len) {
        q->written += n;
        sbuf_reset(&q->pend, OUTQ_KEEP);
        return 0;
    }
    if (n < 0 && n != UV_EAGAIN)
        return n;
    if (n < 0)
        n = 0;
    q->written += n;
    struct sbuf t = q->busy;
    q->busy = q->pend;
    q->pend = t;
    q->pend.len = 0;
    /* Keep the unwritten tail at the start of busy so on_written can account for it simply. */
    memmove(q->busy.data, q->busy.data + n, q->busy.len - n);
    q->busy.len -= n;
    b = uv_buf_init(q->busy.data, q->busy.len);
    int r = uv_write(&q->req, q->stream, &b, 1, on_written);
    if (r < 0)
        return r;
    q->writing = true;
    return 0;
}

void kago__outq_free(struct outq *q)
{
    sbuf_free(&q->pend);
    sbuf_free(&q->busy);
}
