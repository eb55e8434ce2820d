/* kago serve — HTTP/2 request fields into an HTTP/1.1 head (h2head.h). */
#include <string.h>

#include "h2head.h"

static bool bad_byte(const uint8_t *p, size_t n, bool strict)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] == '\r' || p[i] == '\n' || p[i] == 0 || (strict && (p[i] <= ' ' || p[i] >= 0x7f)))
            return true;
    return false;
}

static bool is(const uint8_t *name, size_t nlen, const char *s)
{
    return nlen == strlen(s) && memcmp(name, s, nlen) == 0;
}

static void set(struct sbuf *b, const uint8_t *v, size_t n)
{
    b->len = 0;
    sbuf_add(b, v, n);
}

int kago__h2_head_field(struct h2_head *h, const uint8_t *name, size_t nlen, const uint8_t *value,
                        size_t vlen)
{
    h->bytes += nlen + vlen + 32;
    h->count++;
    if (h->bytes > H2_BOMB_BYTES || h->count > H2_BOMB_COUNT)
        return -1;
    if (h->bytes > H2_MAX_HEADER_LIST)
        h->too_big = true;
    if (h->too_big || h->bad)
        return 0; /* (decoded still, to keep HPACK's state, but not kept) */
    bool pseudo = nlen && name[0] == ':';
    if (!nlen || bad_byte(name + pseudo, nlen - pseudo, true) ||
        bad_byte(value, vlen, is(name, nlen, ":path") || is(name, nlen, ":method"))) {
        h->bad = true;
        return 0;
    }
    if (pseudo) {
        if (is(name, nlen, ":method"))
            set(&h->method, value, vlen);
        else if (is(name, nlen, ":path"))
            set(&h->path, value, vlen);
        else if (is(name, nlen, ":authority"))
            set(&h->authority, value, vlen);
        return 0; /* :scheme, :protocol: not for the upstream */
    }
    if (is(name, nlen, "cookie")) {
        if (h->cookie.len)
            sbuf_add(&h->cookie, "; ", 2);
        sbuf_add(&h->cookie, value, vlen);
        return 0;
    }
    if (is(name, nlen, "te"))
        return 0;
    if (is(name, nlen, "host")) { /* :authority wins; kept as the Host otherwise */
        if (!h->authority.len)
            set(&h->authority, value, vlen);
        return 0;
    }
    if (is(name, nlen, "content-length"))
        h->has_cl = true;
    sbuf_add(&h->hdrs, name, nlen);
    sbuf_add(&h->hdrs, ": ", 2);
    sbuf_add(&h->hdrs, value, vlen);
    sbuf_add(&h->hdrs, "\r\n", 2);
    return 0;
}

void kago__h2_head_free(struct h2_head *h)
{
    sbuf_free(&h->method);
    sbuf_free(&h->path);
    sbuf_free(&h->authority);
    sbuf_free(&h->hdrs);
    sbuf_free(&h->cookie);
}

bool kago__h2_head_connect(const struct h2_head *h)
{
    return h->method.len == 7 && !memcmp(h->method.data, "CONNECT", 7);
}

int kago__h2_head_build(struct h2_head *h, int64_t body, struct sbuf *out)
{
    int status = 0;
    if (h->too_big)
        status = 431;
    else if (kago__h2_head_connect(h))
        status = 405; /* (a CONNECT has no :path) */
    else if (h->bad || !h->method.len || !h->path.len)
        status = 400;
    if (status) {
        kago__h2_head_free(h);
        return status;
    }
    sbuf_add(out, h->method.data, h->method.len);
    sbuf_add(out, " ", 1);
    sbuf_add(out, h->path.data, h->path.len);
    sbuf_add(out, " HTTP/1.1\r\n", 11);
    if (h->authority.len) {
        sbuf_add(out, "host: ", 6);
        sbuf_add(out, h->authority.data, h->authority.len);
        sbuf_add(out, "\r\n", 2);
    }
    if (h->hdrs.len)
        sbuf_add(out, h->hdrs.data, h->hdrs.len);
    if (h->cookie.len) {
        sbuf_add(out, "cookie: ", 8);
        sbuf_add(out, h->cookie.data, h->cookie.len);
        sbuf_add(out, "\r\n", 2);
    }
    if (body == H2_BODY_UNKNOWN && !h->has_cl) {
        sbuf_adds(out, "transfer-encoding: chunked\r\n");
    } else if (body > 0 && !h->has_cl) {
        sbuf_adds(out, "content-length: ");
        sbuf_addu(out, (uint64_t)body, 10);
        sbuf_add(out, "\r\n", 2);
    }
    sbuf_add(out, "\r\n", 2);
    kago__h2_head_free(h);
    return 0;
}
