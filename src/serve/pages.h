/* kago serve — page-aligned buffers for what an idle connection gives back (pages.c).
 *
 * A connection's large buffers (its 8 KiB read buffer, nghttp2's 16 KiB output frame) live here, not in
 * malloc's heap: freed or idle, their pages go back to the kernel whole, and they leave no hole between
 * the small objects of live connections (which kept a freed buffer's partial pages resident). For the
 * first event loop only: not thread-safe. */
#ifndef KAGO_SERVE_PAGES_H
#define KAGO_SERVE_PAGES_H

#include <stddef.h>

/* A buffer of at least n bytes (n > 0), page-aligned; aborts on out-of-memory like xmalloc. Give it back
 * with kago__pages_put and the same n. */
void *kago__pages_get(size_t n);

/* kago__pages_get's, reading as zeros (as calloc's); a buffer whose pages were given back is not touched, so
 * it costs nothing until written. */
void *kago__pages_get_zero(size_t n);

/* Gives back a buffer of kago__pages_get(n); NULL is ignored. */
void kago__pages_put(void *p, size_t n);

/* The buffer stays the caller's, its pages go back to the kernel: it reads as zeros until written. */
void kago__pages_idle(void *p, size_t n);

/* Of a buffer of kago__pages_get(n), the pages that read as zeros go back to the kernel: they read as zeros
 * still, so the buffer's content is unchanged (an empty table, say), and they cost nothing until written. */
void kago__pages_idle_zero(void *p, size_t n);

/* Bytes of the free buffers still resident, and of those given back (for the tests). */
void kago__pages_stats(size_t *resident, size_t *released);

#endif
