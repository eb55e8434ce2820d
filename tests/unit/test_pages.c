/* kago serve: page-aligned buffers that give their pages back (pages.c), observed with mincore(2). */
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "pages.h"
#include "tap.h"

static size_t page;

/* Pages of [p, p + n) resident now; -1 when the range is not mapped. */
static long resident(void *p, size_t n)
{
    unsigned char vec[64];
    size_t k = (n + page - 1) / page;
    if (k > sizeof(vec) || mincore(p, k * page, vec) < 0)
        return -1;
    long r = 0;
    for (size_t i = 0; i < k; i++)
        r += vec[i] & 1;
    return r;
}

static int all_zero(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return 0;
    return 1;
}

int main(void)
{
    page = (size_t)sysconf(_SC_PAGESIZE);
    size_t resid, released;

    char *a = kago__pages_get(8192);
    ok(a && (uintptr_t)a % page == 0, "a buffer is page-aligned");
    ok(resident(a, 8192) == 0, "a new buffer costs no memory until written");
    memset(a, 'x', 8192);
    ok(resident(a, 8192) == 2, "written: its two pages are resident");

    kago__pages_idle(a, 8192);
    ok(resident(a, 8192) == 0, "idle: its pages went back to the kernel");
    a[100] = 'y';
    ok(resident(a, 8192) == 1, "written again: one page faulted back in");
    ok(all_zero(a, 100) && all_zero(a + 101, 8192 - 101), "the rest reads as zeros");

    kago__pages_put(a, 8192);
    char *b = kago__pages_get(8000);
    ok(b == a, "a freed buffer is reused first (same size class)");
    ok(b[100] == 'y', "a reused buffer is not cleared (the caller's, as malloc's)");
    kago__pages_put(b, 8000);
    kago__pages_stats(&resid, &released);
    ok(resid == 8192, "one free buffer kept resident (%zu bytes)", resid);

    /* more free buffers than are kept resident: the rest give their pages back as they are freed */
    enum { N = 40 };
    char *bufs[N];
    for (int i = 0; i < N; i++) {
        bufs[i] = kago__pages_get(8192);
        memset(bufs[i], i + 1, 8192);
    }
    int distinct = 1;
    for (int i = 0; i < N; i++)
        for (int j = i + 1; j < N; j++)
            distinct &= bufs[i] != bufs[j];
    ok(distinct, "%d buffers in use at once are distinct", N);
    for (int i = 0; i < N; i++)
        kago__pages_put(bufs[i], 8192);
    kago__pages_stats(&resid, &released);
    ok(resid == 16 * 8192, "16 free buffers stay resident (%zu bytes)", resid);
    ok(resident(bufs[N - 1], 8192) == 0, "the last one freed beyond them is not resident");
    ok(resident(bufs[0], 8192) == 2, "the first one freed still is");

    /* other sizes have classes of their own; beyond 8 pages a buffer is a mapping of its own */
    char *f = kago__pages_get(16394); /* nghttp2's output frame buffer */
    ok(f && (uintptr_t)f % page == 0 && f != bufs[0], "a 5-page buffer from its own class");
    memset(f, 1, 16394);
    kago__pages_idle(f, 16394);
    ok(resident(f, 16394) == 0, "all 5 pages of an idle frame buffer go back (no partial page kept)");
    kago__pages_put(f, 16394);
    char *big = kago__pages_get(100000);
    ok(big && (uintptr_t)big % page == 0, "a 25-page buffer");
    memset(big, 2, 100000);
    kago__pages_put(big, 100000);
    unsigned char v;
    ok(mincore(big, page, &v) < 0 && errno == ENOMEM, "freed, a large buffer is unmapped");
    /* idle_zero: only the pages that read as zeros go, so what the buffer holds is unchanged */
    char *t = kago__pages_get(3 * page + 100);
    memset(t, 0, 3 * page + 100);
    t[page + 7] = 'z'; /* page 1 holds something */
    /* page 3: zeros up to n; its tail past n is not the caller's */
    memset(t + 3 * page + 100, 'q', page - 100);
    ok(resident(t, 4 * page) == 4, "a 4-page buffer, written");
    kago__pages_idle_zero(t, 3 * page + 100);
    ok(resident(t, page) == 0 && resident(t + 2 * page, page) == 0 && resident(t + 3 * page, page) == 0,
       "the pages that read as zeros went back (the last one's tail past n not looked at)");
    ok(resident(t + page, page) == 1 && t[page + 7] == 'z',
       "the page that holds something stayed, as it was");
    ok(all_zero(t, page + 7) && all_zero(t + page + 8, 2 * page + 92), "the rest still reads as zeros");
    kago__pages_put(t, 3 * page + 100);

    /* get_zero: calloc's reading; a buffer whose pages went back is not touched to get it */
    char *z = kago__pages_get_zero(6 * page);
    ok(z && resident(z, 6 * page) == 0, "a new zeroed buffer is not resident");
    ok(all_zero(z, 6 * page), "and reads as zeros");
    memset(z, 'w', 6 * page);
    kago__pages_put(z, 6 * page);
    char *z2 = kago__pages_get_zero(6 * page - 10);
    ok(z2 == z && all_zero(z2, 6 * page - 10), "a reused (resident) one is cleared");
    kago__pages_put(z2, 6 * page - 10);

    kago__pages_put(NULL, 8192);
    kago__pages_idle(NULL, 8192);
    kago__pages_idle_zero(NULL, 8192);
    ok(1, "NULL is ignored");
    return tap_done();
}
