/* kago serve — the first stream's host of an h2c connection, before its session begins (h2peek.h). */
#include <stdbool.h>
#include <string.h>
#include <sys/types.h>

#include <nghttp2/nghttp2.h>

#include "h2peek.h"

int kago__h2_first_authority(const char *buf, size_t len, char *out, size_t outsz)
{
    const uint8_t *p = (const uint8_t *)buf, *end = p + len;
    while (end - p >= 9) {
        size_t n = (size_t)p[0] << 16 | (size_t)p[1] << 8 | p[2];
        uint8_t type = p[3], flags = p[4];
        const uint8_t *b = p + 9;
        bool whole = (size_t)(end - b) >= n;
        if (type != NGHTTP2_HEADERS) {
            if (!whole)
                return 0;
            p = b + n;
            continue;
        }
        if (!whole)
            n = (size_t)(end - b);
        size_t pad = 0;
        if (flags & NGHTTP2_FLAG_PADDED) {
            if (n < 1)
                return 0;
            pad = b[0];
            b++;
            n--;
        }
        if (flags & NGHTTP2_FLAG_PRIORITY) {
            if (n < 5)
                return 0;
            b += 5;
            n -= 5;
        }
        if (whole && pad > n)
            return -1;
        if (whole)
            n -= pad;
        nghttp2_hd_inflater *inf;
        if (nghttp2_hd_inflate_new(&inf) != 0)
            return -1;
        int found = 0;
        while (n > 0 && !found) {
            nghttp2_nv nv;
            int fl = 0;
            ssize_t used = nghttp2_hd_inflate_hd2(inf, &nv, &fl, (uint8_t *)b, n, 0);
            if (used < 0) {
                found = -1;
                break;
            }
            b += used;
            n -= (size_t)used;
            if (!(fl & NGHTTP2_HD_INFLATE_EMIT)) {
                if (used == 0)
                    break;
                continue;
            }
            if (nv.valuelen < outsz && ((nv.namelen == 10 && !memcmp(nv.name, ":authority", 10)) ||
                                        (nv.namelen == 4 && !memcmp(nv.name, "host", 4)))) {
                memcpy(out, nv.value, nv.valuelen);
                out[nv.valuelen] = 0;
                found = 1;
            }
        }
        nghttp2_hd_inflate_del(inf);
        return found ? found : whole && (flags & NGHTTP2_FLAG_END_HEADERS) ? -1 : 0;
    }
    return 0;
}
