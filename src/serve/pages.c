/* kago serve — page-aligned buffers (pages.h).
 *
 * Buffers of 1 to PAGES_MAX_CLASS pages come from per-size free lists, refilled a chunk of PAGES_CHUNK
 * buffers at a time from mmap (untouched pages cost nothing until written). A freed buffer stays
 * resident while few are free (the next connection reuses it without a fault); beyond PAGES_HOT per size
 * its pages are released with MADV_DONTNEED. Larger buffers are mapped and unmapped one by one. Chunks
 * are never unmapped: after a peak they are address space, not memory. */
#include <sys/mman.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#include "pages.h"
#include "util.h"

#define PAGES_MAX_CLASS 8
#define PAGES_CHUNK     32
#define PAGES_HOT       16

struct pages_class {
    void *hot[PAGES_HOT]; /* free buffers still resident */
    void **cold;          /* free buffers whose pages were given back */
    size_t nhot, ncold, cap;
};

static struct pages_class classes[PAGES_MAX_CLASS];
static size_t page_size;

static size_t pages_of(size_t n)
{
    if (!page_size)
        page_size = (size_t)sysconf(_SC_PAGESIZE);
    return (n + page_size - 1) / page_size;
}

static void *map(size_t len)
{
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        abort(); /* out of memory, as xmalloc */
    return p;
}

static void grow_cold(struct pages_class *c, size_t need)
{
    if (need <= c->cap)
        return;
    c->cap = need * 2;
    c->cold = xrealloc(c->cold, c->cap * sizeof(*c->cold));
}

void *kago__pages_get(size_t n)
{
    size_t k = pages_of(n);
    if (k > PAGES_MAX_CLASS)
        return map(k * page_size);
    struct pages_class *c = &classes[k - 1];
    if (c->nhot)
        return c->hot[--c->nhot];
    if (!c->ncold) { /* a new chunk: its buffers are free (and not resident) until used */
        size_t len = k * page_size;
        char *chunk = map(PAGES_CHUNK * len);
        grow_cold(c, PAGES_CHUNK);
        for (size_t i = PAGES_CHUNK; i-- > 0;)
            c->cold[c->ncold++] = chunk + i * len;
    }
    return c->cold[--c->ncold];
}

void kago__pages_put(void *p, size_t n)
{
    if (!p)
        return;
    size_t k = pages_of(n);
    if (k > PAGES_MAX_CLASS) {
        munmap(p, k * page_size);
        return;
    }
    struct pages_class *c = &classes[k - 1];
    if (c->nhot < PAGES_HOT) {
        c->hot[c->nhot++] = p;
        return;
    }
    madvise(p, k * page_size, MADV_DONTNEED);
    grow_cold(c, c->ncold + 1);
    c->cold[c->ncold++] = p;
}

void kago__pages_idle(void *p, size_t n)
{
    if (p)
        madvise(p, pages_of(n) * page_size, MADV_DONTNEED);
}

void kago__pages_stats(size_t *resident, size_t *released)
{
    size_t page = pages_of(1) * page_size;
    *resident = *released = 0;
    for (size_t i = 0; i < PAGES_MAX_CLASS; i++) {
        *resident += classes[i].nhot * (i + 1) * page;
        *released += classes[i].ncold * (i + 1) * page;
    }
}
