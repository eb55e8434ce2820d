/* kago serve — page-aligned buffers (pages.h).
 *
 * Buffers of 1 to PAGES_MAX_CLASS pages come from per-size free lists, refilled a chunk of PAGES_CHUNK
 * buffers at a time from mmap (untouched pages cost nothing until written). A freed buffer stays
 * resident while few are free (the next connection reuses it without a fault); beyond PAGES_HOT per size
 * its pages are released with MADV_DONTNEED. Larger buffers are mapped and unmapped one by one. Chunks
 * are never unmapped: after a peak they are address space, not memory. */
#include <pthread.h>
#include <stdbool.h>
#include <sys/mman.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
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
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER; /* (--threads: every request loop's buffers) */
static size_t page_size_;

static size_t psize(void)
{
    size_t ps = __atomic_load_n(&page_size_, __ATOMIC_RELAXED);
    if (!ps) /* (every thread finds the same) */
        __atomic_store_n(&page_size_, ps = (size_t)sysconf(_SC_PAGESIZE), __ATOMIC_RELAXED);
    return ps;
}

static size_t pages_of(size_t n)
{
    return (n + psize() - 1) / psize();
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

static void *get(size_t n, bool zero)
{
    size_t k = pages_of(n);
    if (k > PAGES_MAX_CLASS)
        return map(k * psize());
    struct pages_class *c = &classes[k - 1];
    pthread_mutex_lock(&mu);
    void *p;
    if (c->nhot) {
        p = c->hot[--c->nhot];
        pthread_mutex_unlock(&mu);
        return zero ? memset(p, 0, n) : p;
    }
    if (!c->ncold) { /* a new chunk: its buffers are free (and not resident) until used */
        size_t len = k * psize();
        char *chunk = map(PAGES_CHUNK * len);
        grow_cold(c, PAGES_CHUNK);
        for (size_t i = PAGES_CHUNK; i-- > 0;)
            c->cold[c->ncold++] = chunk + i * len;
    }
    p = c->cold[--c->ncold]; /* (a cold buffer reads as zeros: new, or its pages given back) */
    pthread_mutex_unlock(&mu);
    return p;
}

void *kago__pages_get(size_t n)
{
    return get(n, false);
}

void *kago__pages_get_zero(size_t n)
{
    return get(n, true);
}

void kago__pages_put(void *p, size_t n)
{
    if (!p)
        return;
    size_t k = pages_of(n);
    if (k > PAGES_MAX_CLASS) {
        munmap(p, k * psize());
        return;
    }
    struct pages_class *c = &classes[k - 1];
    pthread_mutex_lock(&mu);
    if (c->nhot < PAGES_HOT) {
        c->hot[c->nhot++] = p;
        pthread_mutex_unlock(&mu);
        return;
    }
    pthread_mutex_unlock(&mu);
    madvise(p, k * psize(), MADV_DONTNEED);
    pthread_mutex_lock(&mu);
    grow_cold(c, c->ncold + 1);
    c->cold[c->ncold++] = p;
    pthread_mutex_unlock(&mu);
}

void kago__pages_idle(void *p, size_t n)
{
    if (p)
        madvise(p, pages_of(n) * psize(), MADV_DONTNEED);
}

void kago__pages_idle_zero(void *p, size_t n)
{
    size_t ps = psize();
    for (char *pg = p, *end = (char *)p + n; p && pg < end; pg += ps) {
        size_t len = (size_t)(end - pg) < ps ? (size_t)(end - pg) : ps; /* (past n: not the caller's) */
        if (!pg[0] && !memcmp(pg, pg + 1, len - 1))
            madvise(pg, ps, MADV_DONTNEED);
    }
}

void kago__pages_stats(size_t *resident, size_t *released)
{
    size_t page = pages_of(1) * psize();
    *resident = *released = 0;
    pthread_mutex_lock(&mu);
    for (size_t i = 0; i < PAGES_MAX_CLASS; i++) {
        *resident += classes[i].nhot * (i + 1) * page;
        *released += classes[i].ncold * (i + 1) * page;
    }
    pthread_mutex_unlock(&mu);
}
