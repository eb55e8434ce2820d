/* mruby's own memory, kept apart from the C heap (internal.h). Evaluating a Kagofile allocates and frees
 * far more in mruby (parser nodes, bytecode, objects) than the apps it defines keep (their strings, copied
 * out with malloc). Were both in one heap, the kept strings would end up scattered among mruby's freed
 * memory, each holding a page resident: at 10,000 apps serve's RSS grew by some 20 MB on every reload.
 * Here mruby gets size-classed free lists carved from blocks of their own, all unmapped at mrb_close. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "internal.h"

#define BLOCK     (256u << 10)
#define HDR       16u /* before each allocation: its class, or its mapping's length (keeps 16-byte alignment) */
#define LARGE_BIT ((size_t)1 << 63)

/* (up to 64 KiB: the parser's node pages, 16,000 bytes, come and go for every file) */
static const size_t caps[] = {16,   32,   48,   64,   96,   128,  192,   256,   384,   512,   768,   1024,
                              1536, 2048, 3072, 4096, 6144, 8192, 12288, 16384, 24576, 32768, 49152, 65536};
#define NCLASS (sizeof(caps) / sizeof(caps[0]))

struct kf_heap {
    void *free[NCLASS]; /* free allocations of each class, linked through their first word */
    void *blocks;       /* the blocks, linked through their first word */
    char *bump, *end;   /* the unused rest of the newest block */
};

struct kf_heap *kf_heap_new(void)
{
    struct kf_heap *h = calloc(1, sizeof(*h));
    if (!h)
        abort();
    return h;
}

void kf_heap_free(struct kf_heap *h)
{
    if (!h)
        return;
    while (h->blocks) {
        void *next = *(void **)h->blocks;
        munmap(h->blocks, BLOCK);
        h->blocks = next;
    }
    free(h);
}

static size_t *hdr(void *p)
{
    return (size_t *)((char *)p - HDR);
}

static void *large(size_t size)
{
    size_t len = (size + HDR + 4095) & ~(size_t)4095;
    char *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED)
        return NULL;
    *(size_t *)m = len | LARGE_BIT;
    return m + HDR;
}

static void *small(struct kf_heap *h, unsigned c)
{
    void *p = h->free[c];
    if (p) {
        h->free[c] = *(void **)p;
        return p;
    }
    size_t need = HDR + caps[c];
    if (!h->bump || (size_t)(h->end - h->bump) < need) {
        char *b = mmap(NULL, BLOCK, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (b == MAP_FAILED)
            return NULL;
        *(void **)b = h->blocks;
        h->blocks = b;
        h->bump = b + HDR; /* (the link) */
        h->end = b + BLOCK;
    }
    p = h->bump + HDR;
    *hdr(p) = c;
    h->bump += need;
    return p;
}

static void release(struct kf_heap *h, void *p)
{
    size_t v = *hdr(p);
    if (v & LARGE_BIT) {
        munmap(hdr(p), v & ~LARGE_BIT);
        return;
    }
    *(void **)p = h->free[v];
    h->free[v] = p;
}

static size_t capacity(void *p)
{
    size_t v = *hdr(p);
    return v & LARGE_BIT ? (v & ~LARGE_BIT) - HDR : caps[v];
}

void *kf_heap_allocf(mrb_state *mrb, void *p, size_t size, void *ud)
{
    (void)mrb;
    struct kf_heap *h = ud;
    if (size == 0) {
        if (p)
            release(h, p);
        return NULL;
    }
    if (p && size <= capacity(p))
        return p;
    if (p && (*hdr(p) & LARGE_BIT) && size > caps[NCLASS - 1]) { /* (the parser's growing buffers) */
        size_t old = *hdr(p) & ~LARGE_BIT, len = (size + HDR + 4095) & ~(size_t)4095;
        char *m = mremap(hdr(p), old, len, MREMAP_MAYMOVE);
        if (m == MAP_FAILED)
            return NULL;
        *(size_t *)m = len | LARGE_BIT;
        return m + HDR;
    }
    void *n = NULL;
    if (size > caps[NCLASS - 1]) {
        n = large(size);
    } else {
        unsigned c = 0;
        while (caps[c] < size)
            c++;
        n = small(h, c);
    }
    if (n && p) {
        memcpy(n, p, capacity(p));
        release(h, p);
    }
    return n;
}
