/* kago serve — a growable byte buffer, the unit of per-connection memory. */
#ifndef KAGO_SERVE_BUF_H
#define KAGO_SERVE_BUF_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct sbuf {
    char *data;
    size_t len, cap;
};

/* Makes room for n more bytes; aborts on out-of-memory like xmalloc. Returns the write position. */
static inline char *sbuf_reserve(struct sbuf *b, size_t n)
{
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n)
            cap *= 2;
        char *p = realloc(b->data, cap);
        if (!p)
            abort();
        b->data = p;
        b->cap = cap;
    }
    return b->data + b->len;
}

static inline void sbuf_add(struct sbuf *b, const void *p, size_t n)
{
    if (n == 0)
        return;
    memcpy(sbuf_reserve(b, n), p, n);
    b->len += n;
}

static inline void sbuf_adds(struct sbuf *b, const char *s)
{
    sbuf_add(b, s, strlen(s));
}

/* Appends a decimal or hex number without printf (hot path). */
static inline void sbuf_addu(struct sbuf *b, uint64_t v, unsigned base)
{
    char tmp[24];
    int i = sizeof(tmp);
    do {
        tmp[--i] = "0123456789abcdef"[v % base];
        v /= base;
    } while (v);
    sbuf_add(b, tmp + i, sizeof(tmp) - i);
}

/* Drops the contents; frees the memory when it grew past keep bytes, so an idle connection
 * holds no more than keep bytes whatever it once relayed. */
static inline void sbuf_reset(struct sbuf *b, size_t keep)
{
    b->len = 0;
    if (b->cap > keep) {
        free(b->data);
        b->data = NULL;
        b->cap = 0;
    }
}

static inline void sbuf_free(struct sbuf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

#endif
