/* kago serve: HTTP/2 request fields into the HTTP/1.1 head serve parses (h2head.c). */
#include <stdlib.h>
#include <string.h>

#include "h2head.h"
#include "tap.h"

static int add(struct h2_head *h, const char *name, const char *value)
{
    return kago__h2_head_field(h, (const uint8_t *)name, strlen(name), (const uint8_t *)value, strlen(value));
}

/* Builds a head from NULL-ended name, value pairs; returns the status (0: *out is the head, NUL-ended). */
static int build(int64_t body, char **out, const char *const *kv)
{
    struct h2_head h = {0};
    for (; kv[0]; kv += 2)
        add(&h, kv[0], kv[1]);
    struct sbuf b = {0};
    int st = kago__h2_head_build(&h, body, &b);
    sbuf_add(&b, "", 1);
    *out = b.data;
    return st;
}

#define REQ(...) ((const char *const[]){__VA_ARGS__, NULL})

int main(void)
{
    char *s;
    ok(build(H2_BODY_NONE, &s,
             REQ(":method", "GET", ":scheme", "https", ":path", "/a?b=1", ":authority", "x.test", "accept",
                 "*/*", "cookie", "a=1", "te", "trailers", "cookie", "b=2")) == 0,
       "a GET");
    is_str(s, "GET /a?b=1 HTTP/1.1\r\nhost: x.test\r\naccept: */*\r\ncookie: a=1; b=2\r\n\r\n",
           "Host from :authority, cookies on one line, no te");
    free(s);
    ok(build(H2_BODY_UNKNOWN, &s, REQ(":method", "POST", ":path", "/", ":authority", "x.test")) == 0,
       "a POST");
    is_str(s, "POST / HTTP/1.1\r\nhost: x.test\r\ntransfer-encoding: chunked\r\n\r\n",
           "a body without a length goes chunked");
    free(s);
    ok(build(12, &s, REQ(":method", "POST", ":path", "/", ":authority", "x.test")) == 0, "a whole body");
    is_str(s, "POST / HTTP/1.1\r\nhost: x.test\r\ncontent-length: 12\r\n\r\n",
           "a body that arrived whole gets its length");
    free(s);
    ok(build(H2_BODY_UNKNOWN, &s,
             REQ(":method", "POST", ":path", "/", ":authority", "x", "content-length", "3")) == 0 &&
           !strstr(s, "chunked"),
       "a body with a length keeps it");
    free(s);
    ok(build(H2_BODY_NONE, &s, REQ(":method", "GET", ":path", "/", "host", "h.test")) == 0 &&
           strstr(s, "host: h.test"),
       "host without :authority");
    free(s);
    ok(build(H2_BODY_NONE, &s,
             REQ(":method", "GET", ":path", "/", ":authority", "a.test", "host", "b.test")) == 0 &&
           strstr(s, "host: a.test") && !strstr(s, "b.test"),
       ":authority wins over host");
    free(s);
    ok(build(H2_BODY_NONE, &s, REQ(":method", "GET", ":path", "/", "x-a", "1\r\nx-injected: 1")) == 400,
       "CRLF in a value");
    free(s);
    ok(build(H2_BODY_NONE, &s, REQ(":method", "GET", ":path", "/ HTTP/1.1\r\nx: y")) == 400,
       "CRLF or space in :path");
    free(s);
    ok(build(H2_BODY_NONE, &s, REQ(":method", "GET", ":path", "/a b")) == 400, "a space in :path");
    free(s);
    ok(build(H2_BODY_NONE, &s, REQ(":method", "GE T", ":path", "/")) == 400, "a space in :method");
    free(s);
    ok(build(H2_BODY_NONE, &s, REQ(":method", "GET", ":path", "/", "x\nb", "1")) == 400, "LF in a name");
    free(s);
    ok(build(H2_BODY_NONE, &s, REQ(":path", "/")) == 400, "no :method");
    free(s);
    ok(build(H2_BODY_NONE, &s, REQ(":method", "CONNECT", ":authority", "x:443", ":path", "/")) == 405,
       "CONNECT");
    free(s);

    /* the header list limit: 431, then the bomb: -1 */
    struct h2_head h = {0};
    add(&h, ":method", "GET");
    add(&h, ":path", "/");
    char *big = malloc(H2_MAX_HEADER_LIST);
    memset(big, 'a', H2_MAX_HEADER_LIST - 1);
    big[H2_MAX_HEADER_LIST - 1] = 0;
    ok(add(&h, "x-big", big) == 0 && h.too_big, "past the header list size: too big, not an attack yet");
    int r = 0, n = 0;
    while (r == 0 && n < 10)
        r = add(&h, "x-big", big), n++;
    ok(r == -1 && n == 3, "4x the header list size in one block: a bomb (after %d more)", n);
    struct sbuf b = {0};
    ok(kago__h2_head_build(&h, H2_BODY_NONE, &b) == 431 && b.len == 0, "431");
    free(big);
    struct h2_head h2 = {0};
    r = 0;
    for (n = 0; r == 0 && n < 2000; n++)
        r = add(&h2, "a", "");
    ok(r == -1 && n == H2_BOMB_COUNT + 1, "1,000 empty fields in one block: a bomb");
    kago__h2_head_free(&h2);
    return tap_done();
}
