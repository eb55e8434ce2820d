/* libFuzzer driver for the HTTP/2 request head (h2head.c): the input is fields "name\0value\0..." as
 * nghttp2 would hand them over (any bytes); the head built from them must parse as exactly one HTTP/1.1
 * request head, with no more header fields than were given (no field smuggled in by CR, LF or NUL). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "h2head.h"
#include "http.h"

static int on_head(struct http_msg *m)
{
    return HPE_PAUSED;
}
static const struct http_msg_cbs cbs = {.head = on_head};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct h2_head h = {0};
    unsigned given = 0;
    const uint8_t *p = data, *end = data + size;
    int64_t body = size ? (int64_t)(data[0] % 3) - 1 : 0; /* unknown, none, or 1 byte */
    while (p < end) {
        const uint8_t *n0 = memchr(p, 0, (size_t)(end - p));
        if (!n0)
            break;
        const uint8_t *v = n0 + 1, *v0 = memchr(v, 0, (size_t)(end - v));
        if (!v0)
            break;
        if (kago__h2_head_field(&h, p, (size_t)(n0 - p), v, (size_t)(v0 - v)) < 0)
            break;
        given++;
        p = v0 + 1;
    }
    struct sbuf out = {0};
    if (kago__h2_head_build(&h, body, &out) == 0) {
        static struct http_msg m;
        kago__http_msg_init(&m, HTTP_REQUEST, &cbs, NULL);
        size_t used;
        llhttp_errno_t e = kago__http_execute(&m, out.data, out.len, &used);
        if (e == HPE_PAUSED && m.nhdr > given + 2) /* + host, transfer-encoding or content-length */
            abort();
        if (e == HPE_PAUSED && used != out.len)
            abort(); /* the head ended early: what follows would be a second request */
        kago__http_msg_free(&m);
    }
    sbuf_free(&out);
    kago__h2_head_free(&h);
    return 0;
}
