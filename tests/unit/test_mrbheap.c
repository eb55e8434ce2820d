/* The Kagofile loader's heap for mruby (src/config/mrbheap.c): realloc's contract, large blocks, and mruby
 * itself running on it. */
#include <mruby.h>
#include <mruby/compile.h>
#include <mruby/string.h>
#include <stdint.h>
#include <string.h>

#include "internal.h"
#include "tap.h"

int main(void)
{
    struct kf_heap *h = kf_heap_new();
    char *p = kf_heap_allocf(NULL, NULL, 10, h);
    ok(p && (uintptr_t)p % 16 == 0, "an allocation is 16-byte aligned");
    memcpy(p, "0123456789", 10);
    char *q = kf_heap_allocf(NULL, p, 12, h);
    ok(q == p, "growing within its size class keeps the block");
    q = kf_heap_allocf(NULL, p, 1000, h);
    ok(q && memcmp(q, "0123456789", 10) == 0, "growing past it moves the contents");
    char *r = kf_heap_allocf(NULL, NULL, 16, h);
    ok(r == p, "a freed block is reused for its size class");
    char *big = kf_heap_allocf(NULL, NULL, 100000, h);
    memset(big, 'x', 100000);
    big = kf_heap_allocf(NULL, big, 3000000, h);
    int same = big != NULL;
    for (int i = 0; same && i < 100000; i++)
        same = big[i] == 'x';
    ok(same, "a large block grows (mremap) and keeps its contents");
    big = kf_heap_allocf(NULL, big, 5000, h);
    ok(big && big[4999] == 'x', "a large block asked to shrink stays as it is");
    ok(kf_heap_allocf(NULL, big, 0, h) == NULL && kf_heap_allocf(NULL, q, 0, h) == NULL,
       "size 0 frees (and returns NULL)");
    kf_heap_free(h);

    h = kf_heap_new();
    mrb_state *mrb = mrb_open_allocf(kf_heap_allocf, h);
    ok(mrb != NULL, "mruby starts on it");
    mrb_value v = mrb_load_string(mrb, "a = []; 20000.times { |i| a << \"app#{i}\" * 3 }; "
                                       "h = {}; a.each { |s| h[s] = s.size }; "
                                       "GC.start; a.size.to_s + ':' + h['app19999app19999app19999'].to_s");
    ok(!mrb->exc && mrb_string_p(v) && !strcmp(RSTRING_CSTR(mrb, v), "20000:24"),
       "20,000 strings, a hash and a GC: mruby computes right");
    mrb_close(mrb);
    kf_heap_free(h);
    return tap_done();
}
