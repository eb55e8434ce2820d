/* libFuzzer driver for kago serve's request path: llhttp plus kago's own head checks (obs-fold,
 * field names, Host, limits), the Host routing key and the upstream head rewrite. The first byte
 * picks where the input is split across two reads, so spans that straddle reads are exercised. */
#include <stdint.h>
#include <stdlib.h>

#include "http.h"

static int on_head(struct http_msg *m)
{
    return 0;
}
static int on_body(struct http_msg *m, const char *at, size_t n)
{
    return 0;
}
static int on_done(struct http_msg *m)
{
    return 0;
}
static const struct http_msg_cbs cbs = {on_head, on_body, on_done};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t split = data[0] % (size);
    const char *p = (const char *)data + 1;
    size_t n = size - 1;
    if (split > n)
        split = n;
    static struct http_msg m;
    kago__http_msg_init(&m, HTTP_REQUEST, &cbs, NULL);
    size_t used;
    llhttp_errno_t e = kago__http_execute(&m, p, split, &used);
    if (e == HPE_OK)
        e = kago__http_execute(&m, p + split, n - split, &used);
    if (m.nhdr && m.parser.flags) {
        struct http_req_info info;
        if (kago__http_req_check(&m, 1 << 20, &info) == 0 && m.raw.len) {
            struct sbuf out = {0};
            kago__http_upstream_head(&out, &m, &info, "127.0.0.1");
            sbuf_free(&out);
        }
    }
    char key[256];
    kago__http_host_key(p, n, key, sizeof(key));
    kago__http_msg_free(&m);
    return 0;
}
