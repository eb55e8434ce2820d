/* kago serve — a write queue with backpressure: bytes are appended to `pend` while `busy` is on
 * the wire; the owner stops reading its source while the queue is above OUTQ_HIGH, so a 100 MB
 * body never occupies more than about OUTQ_HIGH + one read per direction. */
#ifndef KAGO_SERVE_OUTQ_H
#define KAGO_SERVE_OUTQ_H

#include <stdbool.h>

#include <uv.h>

#include "buf.h"

#define OUTQ_HIGH (256 * 1024)
#define OUTQ_KEEP (64 * 1024) /* buffer memory an idle queue keeps */

struct outq;
struct tls_conn;
/* Called when a write finished (status < 0: the stream failed) and the queue shrank. */
typedef void (*outq_cb)(struct outq *q, int status);

struct outq {
    struct sbuf pend, busy;
    struct sbuf enc; /* TLS: ciphertext not yet handed to libuv (pend holds plaintext, busy ciphertext) */
    struct tls_conn *tls; /* NULL: plain */
    uv_write_t *req;      /* while writing: most writes complete at once and need none (184 bytes) */
    uv_stream_t *stream;
    outq_cb cb;
    void *owner;
    bool writing;
    uint64_t written; /* bytes handed to the kernel (TLS: plaintext bytes encrypted) */
    /* An HTTP/2 stream's queue (h2.c): kago__outq_flush calls this instead of writing; nghttp2 takes the
     * bytes from pend, off of them taken so far. */
    int (*flush_hook)(struct outq *q);
    size_t off;
};

void kago__outq_init(struct outq *q, uv_stream_t *stream, outq_cb cb, void *owner);
/* Starts writing what is pending. Returns 0 or a libuv error (the stream is broken). */
int kago__outq_flush(struct outq *q);
static inline size_t kago__outq_size(const struct outq *q)
{
    return q->pend.len - q->off + q->busy.len + q->enc.len;
}
/* The bytes queued so far (plaintext for TLS), to count a response's bytes between two marks. */
static inline uint64_t kago__outq_mark(const struct outq *q)
{
    return q->written + q->pend.len - q->off + (q->tls ? 0 : q->busy.len);
}
static inline bool kago__outq_full(const struct outq *q)
{
    return kago__outq_size(q) > OUTQ_HIGH;
}
/* Bytes the kernel has still to take of the write in flight: it shrinks as a large write goes out bit by bit
 * (written grows only once a whole write is done). */
static inline size_t kago__outq_unsent(const struct outq *q)
{
    return q->stream ? uv_stream_get_write_queue_size(q->stream) : 0;
}
/* The empty buffers go (an idle connection keeps no capacity). */
void kago__outq_trim(struct outq *q);
void kago__outq_free(struct outq *q);

#endif
