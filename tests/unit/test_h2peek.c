/* kago serve: an h2c connection's first stream's host, read before its session begins (h2peek.c). The
 * header blocks are made by nghttp2's own HPACK encoder, as a client's would be. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <nghttp2/nghttp2.h>

#include "h2peek.h"
#include "tap.h"

#define NV(n, v)                                                                                             \
    {                                                                                                        \
        (uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, strlen(v), NGHTTP2_NV_FLAG_NONE                       \
    }

/* A frame header (9 bytes) then its payload, at p; returns the bytes written. */
static size_t frame(uint8_t *p, uint8_t type, uint8_t flags, uint32_t sid, const uint8_t *pl, size_t n)
{
    p[0] = (uint8_t)(n >> 16), p[1] = (uint8_t)(n >> 8), p[2] = (uint8_t)n;
    p[3] = type, p[4] = flags;
    p[5] = (uint8_t)(sid >> 24), p[6] = (uint8_t)(sid >> 16), p[7] = (uint8_t)(sid >> 8), p[8] = (uint8_t)sid;
    memcpy(p + 9, pl, n);
    return 9 + n;
}

/* The header block of a request for host (with a large field after it when big). */
static size_t block(uint8_t *out, size_t cap, const char *host, const char *big)
{
    nghttp2_hd_deflater *d;
    nghttp2_hd_deflate_new(&d, 4096);
    nghttp2_nv nv[] = {NV(":method", "GET"), NV(":scheme", "http"), NV(":path", "/"), NV(":authority", host),
                       NV("x-big", big ? big : "")};
    ssize_t n = nghttp2_hd_deflate_hd(d, out, cap, nv, 5);
    nghttp2_hd_deflate_del(d);
    return n < 0 ? 0 : (size_t)n;
}

int main(void)
{
    static uint8_t buf[65536], hb[40000];
    char host[256], big[30001];
    uint8_t settings[6] = {0, 3, 0, 0, 0, 100};
    size_t n = frame(buf, NGHTTP2_SETTINGS, 0, 0, settings, 6);
    size_t k = block(hb, sizeof(hb), "blog.test", NULL);
    size_t all =
        n + frame(buf + n, NGHTTP2_HEADERS, NGHTTP2_FLAG_END_HEADERS | NGHTTP2_FLAG_END_STREAM, 1, hb, k);
    ok(kago__h2_first_authority((char *)buf, all, host, sizeof(host)) == 1 && !strcmp(host, "blog.test"),
       "SETTINGS then HEADERS: the host");
    ok(kago__h2_first_authority((char *)buf, n + 5, host, sizeof(host)) == 0,
       "a frame header cut short: wait");
    ok(kago__h2_first_authority((char *)buf, 3, host, sizeof(host)) == 0, "less than a frame header: wait");
    ok(kago__h2_first_authority((char *)buf, n, host, sizeof(host)) == 0, "no HEADERS yet: wait");
    ok(kago__h2_first_authority((char *)buf, all, host, 5) == -1, "a host longer than the room: not taken");

    /* a block larger than what arrived: its first fields are read from what is there */
    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = 0;
    k = block(hb, sizeof(hb), "big.test", big);
    all = n + frame(buf + n, NGHTTP2_HEADERS, NGHTTP2_FLAG_END_HEADERS, 1, hb, k);
    ok(kago__h2_first_authority((char *)buf, n + 9 + 40, host, sizeof(host)) == 1 &&
           !strcmp(host, "big.test"),
       "a large block, its start only: the host");

    /* padded and with a priority */
    uint8_t pl[600];
    k = block(hb, sizeof(hb), "pad.test", NULL);
    pl[0] = 4;            /* pad length */
    memset(pl + 1, 0, 5); /* stream dependency and weight */
    memcpy(pl + 6, hb, k);
    memset(pl + 6 + k, 0, 4);
    all = frame(buf, NGHTTP2_HEADERS, NGHTTP2_FLAG_END_HEADERS | NGHTTP2_FLAG_PADDED | NGHTTP2_FLAG_PRIORITY,
                1, pl, 6 + k + 4);
    ok(kago__h2_first_authority((char *)buf, all, host, sizeof(host)) == 1 && !strcmp(host, "pad.test"),
       "padding and priority skipped");
    buf[9] = 200; /* more padding than the frame holds */
    ok(kago__h2_first_authority((char *)buf, all, host, sizeof(host)) == -1, "padding past the frame: -1");

    /* a whole block without :authority or Host, and garbage */
    nghttp2_hd_deflater *d;
    nghttp2_hd_deflate_new(&d, 4096);
    nghttp2_nv nv[] = {NV(":method", "GET"), NV(":path", "/")};
    ssize_t m = nghttp2_hd_deflate_hd(d, hb, sizeof(hb), nv, 2);
    nghttp2_hd_deflate_del(d);
    all = frame(buf, NGHTTP2_HEADERS, NGHTTP2_FLAG_END_HEADERS, 1, hb, (size_t)m);
    ok(kago__h2_first_authority((char *)buf, all, host, sizeof(host)) == -1,
       "a whole block with no host: -1");
    uint8_t junk[16];
    memset(junk, 0xff, sizeof(junk));
    all = frame(buf, NGHTTP2_HEADERS, NGHTTP2_FLAG_END_HEADERS, 1, junk, sizeof(junk));
    ok(kago__h2_first_authority((char *)buf, all, host, sizeof(host)) == -1, "an undecodable block: -1");
    return tap_done();
}
