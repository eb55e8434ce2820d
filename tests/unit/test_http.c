/* kago serve: request heads, limits, smuggling shapes, head rewriting, Host routing keys. */
#include <stdlib.h>

#include <kago/app.h>

#include "http.h"
#include "router.h"
#include "tap.h"

static int heads, dones;
static int on_head(struct http_msg *m)
{
    heads++;
    return 0;
}
static int on_done(struct http_msg *m)
{
    dones++;
    return 0;
}
static const struct http_msg_cbs cbs = {.head = on_head, .done = on_done};

/* Parses one request; returns 0 when it parsed and passed the checks, else the HTTP status. */
static int parse(const char *req, struct http_req_info *info, struct http_msg *m)
{
    kago__http_msg_init(m, HTTP_REQUEST, &cbs, NULL);
    size_t used;
    llhttp_errno_t e = kago__http_execute(m, req, strlen(req), &used);
    if (e != HPE_OK && e != HPE_PAUSED_UPGRADE)
        return m->error;
    return kago__http_req_check(m, 1000, info);
}

static int status_of(const char *req)
{
    struct http_msg *m = calloc(1, sizeof(*m));
    struct http_req_info info;
    int st = parse(req, &info, m);
    kago__http_msg_free(m);
    free(m);
    return st;
}

static void test_smuggling(void)
{
    static const struct {
        const char *req, *what;
        int status;
    } cases[] = {
        {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
         "Content-Length with Transfer-Encoding", 400},
        {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
         "duplicate Content-Length", 400},
        {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabc",
         "conflicting Content-Length", 400},
        {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3x\r\n\r\nabc", "bad Content-Length", 400},
        {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", "negative Content-Length", 400},
        {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1 2\r\n\r\nabc", "Content-Length list", 400},
        {"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n", "obs-fold", 400},
        {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n 3\r\n\r\nabc", "obs-fold of an empty first line",
         400},
        {"GET / HTTP/1.1\r\nHost:\r\n\ta\r\n\r\n", "Host folded after an empty first line", 400},
        {"GET / HTTP/1.1\r\nHost: a.test:@evil.example/x\r\n\r\n", "Host with a port that is not digits",
         400},
        {"GET / HTTP/1.1\r\nHost: a.test:8080x\r\n\r\n", "Host port with a letter", 400},
        {"GET / HTTP/1.1\r\nHost: a.test:123456\r\n\r\n", "Host port of six digits", 400},
        {"GET / HTTP/1.1\r\nHost: a\"b.test\r\n\r\n", "quote in Host", 400},
        {"GET / HTTP/1.1\r\nHost: [::1]x\r\n\r\n", "junk after an IP literal", 400},
        {"GET / HTTP/1.1\r\nHost: a.test:\r\n\r\n", "Host with an empty port (RFC 3986)", 0},
        {"GET /a\tb HTTP/1.1\r\nHost: a\r\n\r\n", "tab in the target", 400},
        {"GET /a\fb HTTP/1.1\r\nHost: a\r\n\r\n", "form feed in the target", 400},
        {"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n", "UTF-8 in the target (as nginx takes it)", 0},
        {"GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n", "Host as an IPv6 literal and port", 0},
        {"GET / HTTP/1.1\r\nHost: a_b-c.test.\r\n\r\n", "Host with underscore, dash, final dot", 0},
        {"GET / HTTP/1.1\r\nHost : a\r\n\r\n", "whitespace before colon", 400},
        {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
         "bad chunk size", 400},
        {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3 \r\nabc\r\n0\r\n\r\n",
         "chunk size with space", 400},
        {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n", "unknown Transfer-Encoding",
         400},
        {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n", "chunked not last",
         400},
        {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
         "TE twice", 400},
        {"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", "two Host headers", 400},
        {"GET / HTTP/1.1\r\n\r\n", "HTTP/1.1 without Host", 400},
        {"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", "space in Host", 400},
        {"GET / HTTP/1.1\nHost: a\n\n", "bare LF", 400},
        {"CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n", "CONNECT", 405},
        {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1001\r\n\r\n", "body over max_body", 413},
        {"GET / HTTP/1.1\r\nHost: a\r\n\r\n", "a plain GET", 0},
        {"GET / HTTP/1.0\r\n\r\n", "HTTP/1.0 without Host", 0},
        {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3;x=1\r\nabc\r\n0\r\n\r\n",
         "chunked with extension", 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int st = status_of(cases[i].req);
        ok(st == cases[i].status, "%s -> %d (got %d)", cases[i].what, cases[i].status, st);
    }
    /* NUL inside the value needs an explicit length. */
    static const char nul[] = "GET / HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n";
    struct http_msg *m = calloc(1, sizeof(*m));
    kago__http_msg_init(m, HTTP_REQUEST, &cbs, NULL);
    size_t used;
    ok(kago__http_execute(m, nul, sizeof(nul) - 1, &used) != HPE_OK && m->error == 400,
       "NUL byte in a value -> 400");
    kago__http_msg_free(m);
    free(m);
}

/* Feeds a request one byte per llhttp_execute call. */
static int status_bytewise(const char *req)
{
    struct http_msg *m = calloc(1, sizeof(*m));
    struct http_req_info info;
    kago__http_msg_init(m, HTTP_REQUEST, &cbs, NULL);
    int st = 0;
    for (size_t i = 0; req[i]; i++) {
        size_t used;
        llhttp_errno_t e = kago__http_execute(m, req + i, 1, &used);
        if (e != HPE_OK) {
            st = m->error;
            break;
        }
    }
    if (!st)
        st = kago__http_req_check(m, 0, &info);
    kago__http_msg_free(m);
    free(m);
    return st;
}

static void test_split(void)
{
    ok(status_bytewise("GET / HTTP/1.1\r\nHost: a\r\nX-Long: some value here\r\n\r\n") == 0,
       "a head fed byte by byte parses (values split across reads are no fold)");
    ok(status_bytewise("GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n") == 400,
       "obs-fold fed byte by byte -> 400");
    ok(status_bytewise("GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n\tb\r\n\r\n") == 400, "tab fold -> 400");
    ok(status_bytewise("GET / HTTP/1.1\r\nHost:\r\n a\r\n\r\n") == 400,
       "fold of an empty first line fed byte by byte -> 400");
    ok(status_bytewise("GET / HTTP/1.1\r\nHost:    a\r\n\r\n") == 0,
       "spaces before a value fed byte by byte are no fold");
}

/* A head padded with whitespace, which raw does not keep, is as limited as a long one. */
static void test_padding(void)
{
    struct http_msg *m = calloc(1, sizeof(*m));
    kago__http_msg_init(m, HTTP_REQUEST, &cbs, NULL);
    static char spaces[4096];
    memset(spaces, ' ', sizeof(spaces));
    size_t used;
    llhttp_errno_t e = kago__http_execute(m, "GET", 3, &used);
    for (int i = 0; i < 8 && e == HPE_OK; i++)
        e = kago__http_execute(m, spaces, sizeof(spaces), &used);
    ok(e != HPE_OK && m->error == 431, "32 KiB of spaces after the method, over reads -> 431 (got %d)",
       m->error);
    kago__http_msg_free(m);
    free(m);
}

/* Trailers of a chunked request are not kept: the head's values (the Host the request is routed and
 * logged by) stay where they were. */
static void test_trailers(void)
{
    struct http_msg *m = calloc(1, sizeof(*m));
    struct http_req_info info;
    kago__http_msg_init(m, HTTP_REQUEST, &cbs, NULL);
    const char *head = "POST /t HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n";
    size_t used;
    ok(kago__http_execute(m, head, strlen(head), &used) == HPE_OK && kago__http_req_check(m, 0, &info) == 0,
       "chunked head parses");
    char body[4096] = "3\r\nabc\r\n0\r\n";
    for (int i = 0; i < 30; i++)
        sprintf(body + strlen(body), "X-T%d: %040d\r\n", i, i);
    strcat(body, "\r\n");
    int d0 = dones;
    ok(kago__http_execute(m, body, strlen(body), &used) == HPE_OK && dones == d0 + 1,
       "body and trailers parse");
    ok(info.host_len == 6 && memcmp(info.host, "a.test", 6) == 0 && m->nhdr == 2,
       "Host still reads a.test, no trailer among the headers");
    kago__http_msg_free(m);
    free(m);
}

static void test_limits(void)
{
    char *big = malloc(20000);
    strcpy(big, "GET / HTTP/1.1\r\nHost: a\r\nX-Big: ");
    memset(big + strlen(big), 'x', 9000);
    strcpy(big + 33 + 9000, "\r\n\r\n");
    ok(status_of(big) == 431, "9000-byte header -> 431");
    strcpy(big, "GET / HTTP/1.1\r\nHost: a\r\n");
    for (int i = 0; i < 120; i++)
        sprintf(big + strlen(big), "X-%d: y\r\n", i);
    strcat(big, "\r\n");
    ok(status_of(big) == 431, "120 header fields -> 431");
    free(big);
}

static void test_rewrite(void)
{
    struct http_msg *m = calloc(1, sizeof(*m));
    struct http_req_info info;
    const char *req =
        "POST /p?q=1 HTTP/1.1\r\nHost: Blog.Example:8080\r\nConnection: keep-alive, X-Secret\r\n"
        "X-Secret: s\r\nKeep-Alive: 5\r\nTE: trailers\r\nX-Forwarded-For: 10.0.0.1\r\n"
        "X-Forwarded-Host: evil\r\nTransfer-Encoding: chunked\r\nAccept: */*\r\n\r\n";
    ok(parse(req, &info, m) == 0, "request parses");
    ok(info.chunked && info.keep_alive && !info.upgrade, "chunked, keep-alive");
    ok(info.host_name_len == 12, "routing host without port");
    struct sbuf out = {0};
    kago__http_upstream_head(&out, m, &info, "127.0.0.9");
    sbuf_add(&out, "", 1);
    ok(strncmp(out.data, "POST /p?q=1 HTTP/1.1\r\n", 22) == 0, "request line kept");
    ok(!strstr(out.data, "X-Secret") && !strstr(out.data, "Keep-Alive") && !strstr(out.data, "TE:") &&
           !strstr(out.data, "Connection"),
       "hop-by-hop headers and those named in Connection removed");
    ok(strstr(out.data, "Transfer-Encoding: chunked\r\n") != NULL, "chunked framing re-stated");
    ok(strstr(out.data, "X-Forwarded-For: 10.0.0.1, 127.0.0.9\r\n") != NULL, "X-Forwarded-For chained");
    ok(strstr(out.data, "X-Forwarded-Host: Blog.Example:8080\r\n") && !strstr(out.data, "evil"),
       "X-Forwarded-Host set by kago, client's dropped");
    ok(strstr(out.data, "X-Forwarded-Proto: http\r\n") != NULL, "X-Forwarded-Proto");
    ok(strstr(out.data, "Accept: */*\r\n") != NULL, "end-to-end header kept");
    sbuf_free(&out);
    kago__http_msg_free(m);

    /* absolute-form: routed by its authority, sent on in origin-form with that Host */
    ok(parse("GET http://B.test/abs?x=1 HTTP/1.1\r\nHost: a.test\r\n\r\n", &info, m) == 0 &&
           info.host_len == 6 && memcmp(info.host, "B.test", 6) == 0 && info.host_name_len == 6,
       "absolute-form: the target's authority is the host");
    kago__http_upstream_head(&out, m, &info, "127.0.0.9");
    sbuf_add(&out, "", 1);
    ok(strncmp(out.data, "GET /abs?x=1 HTTP/1.1\r\n", 23) == 0 && strstr(out.data, "\r\nHost: B.test\r\n") &&
           !strstr(out.data, "a.test"),
       "absolute-form: origin-form and Host: its authority upstream");
    sbuf_free(&out);
    kago__http_msg_free(m);
    ok(parse("GET https://b.test?q HTTP/1.1\r\nHost: b.test\r\n\r\n", &info, m) == 0,
       "absolute-form, no path");
    kago__http_upstream_head(&out, m, &info, "127.0.0.9");
    sbuf_add(&out, "", 1);
    ok(strncmp(out.data, "GET /?q HTTP/1.1\r\n", 18) == 0, "its path becomes /");
    sbuf_free(&out);
    kago__http_msg_free(m);
    ok(parse("GET http://u@b.test/ HTTP/1.1\r\nHost: b.test\r\n\r\n", &info, m) == 400, "userinfo -> 400");
    kago__http_msg_free(m);
    ok(parse("GET http://b.test:x/ HTTP/1.1\r\nHost: b.test\r\n\r\n", &info, m) == 400,
       "bad port in the target -> 400");
    kago__http_msg_free(m);

    /* Connection cannot take away the framing or Host; the client's claims of who it is do not pass. */
    const char *cl = "POST /front HTTP/1.1\r\nHost: a.test\r\nContent-Length: 3\r\n"
                     "Connection: Content-Length, Host, X-Gone\r\nX-Gone: 1\r\nForwarded: for=6.6.6.6\r\n"
                     "X-Real-IP: 6.6.6.6\r\nX_Forwarded_For: 6.6.6.6\r\nX-Kept: 1\r\n\r\nabc";
    ok(parse(cl, &info, m) == 0, "request naming Content-Length in Connection parses");
    kago__http_upstream_head(&out, m, &info, "127.0.0.9");
    sbuf_add(&out, "", 1);
    ok(strstr(out.data, "Content-Length: 3\r\n") && strstr(out.data, "Host: a.test\r\n"),
       "Content-Length and Host forwarded although Connection names them");
    ok(!strstr(out.data, "X-Gone"), "another header named in Connection still removed");
    ok(!strstr(out.data, "Forwarded: for") && !strstr(out.data, "X-Real-IP") &&
           !strstr(out.data, "X_Forwarded") && strstr(out.data, "X-Kept: 1\r\n"),
       "Forwarded, X-Real-IP and underscore names dropped, others kept");
    sbuf_free(&out);
    kago__http_msg_free(m);

    /* Upgrade keeps Upgrade + Connection: upgrade. */
    const char *ws = "GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: k\r\n\r\n";
    ok(parse(ws, &info, m) == 0 && info.upgrade, "WebSocket upgrade recognised");
    kago__http_upstream_head(&out, m, &info, "127.0.0.1");
    sbuf_add(&out, "", 1);
    ok(strstr(out.data, "Upgrade: websocket\r\nConnection: upgrade\r\n") != NULL, "upgrade passed upstream");
    sbuf_free(&out);
    kago__http_msg_free(m);

    /* --cluster: Kago-Hops read and counted up when forwarding; a peer's X-Forwarded-Proto/-Host kept only
     * when trusted; Kago-Hops never reaches an app. */
    const char *fw = "GET /f HTTP/1.1\r\nHost: a.test\r\nKago-Hops: 2\r\nX-Forwarded-Proto: https\r\n"
                     "X-Forwarded-Host: orig.test\r\nX-Forwarded-For: 10.0.0.7\r\n\r\n";
    ok(parse(fw, &info, m) == 0 && info.hops == 2, "Kago-Hops read");
    info.forward = true;
    kago__http_upstream_head(&out, m, &info, "10.0.0.8");
    sbuf_add(&out, "", 1);
    ok(strstr(out.data, "Kago-Hops: 3\r\n") && !strstr(out.data, "Kago-Hops: 2"), "forwarded: Kago-Hops + 1");
    ok(strstr(out.data, "X-Forwarded-Proto: http\r\n") && strstr(out.data, "X-Forwarded-Host: a.test\r\n"),
       "untrusted: the client's X-Forwarded-Proto/-Host replaced");
    ok(strstr(out.data, "X-Forwarded-For: 10.0.0.7, 10.0.0.8\r\n") != NULL, "X-Forwarded-For chained");
    sbuf_free(&out);
    info.forward = false;
    info.trusted = true;
    kago__http_upstream_head(&out, m, &info, "10.0.0.8");
    sbuf_add(&out, "", 1);
    ok(strstr(out.data, "X-Forwarded-Proto: https\r\n") &&
           strstr(out.data, "X-Forwarded-Host: orig.test\r\n"),
       "trusted peer: its X-Forwarded-Proto/-Host kept");
    ok(!strstr(out.data, "Kago-Hops"), "to the app: no Kago-Hops");
    sbuf_free(&out);
    kago__http_msg_free(m);
    ok(parse("GET / HTTP/1.1\r\nHost: a\r\nKago-Hops: x\r\n\r\n", &info, m) == 0 && info.hops >= 1000,
       "a Kago-Hops that is not a number counts as past the limit");
    kago__http_msg_free(m);

    /* Response head: hop-by-hop out, cold-start header in. */
    kago__http_msg_init(m, HTTP_RESPONSE, &cbs, NULL);
    const char *resp = "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\nX-App: 1\r\n\r\nhi";
    size_t used;
    ok(kago__http_execute(m, resp, strlen(resp), &used) == HPE_OK, "response parses");
    struct http_resp_opts o = {.cold_start_us = 3140};
    kago__http_client_head(&out, m, &o);
    sbuf_add(&out, "", 1);
    ok(strstr(out.data, "X-Kago-Cold-Start: 3.1ms\r\n") != NULL, "X-Kago-Cold-Start: 3.1ms");
    ok(!strstr(out.data, "Connection: close") && strstr(out.data, "Content-Length: 2\r\n"),
       "upstream's Connection dropped, Content-Length kept");
    sbuf_free(&out);
    kago__http_msg_free(m);
    kago__http_msg_init(m, HTTP_RESPONSE, &cbs, NULL);
    resp = "HTTP/1.1 200 OK\r\nConnection: Content-Length\r\nContent-Length: 2\r\n\r\nhi";
    ok(kago__http_execute(m, resp, strlen(resp), &used) == HPE_OK,
       "response naming its length in Connection");
    kago__http_client_head(&out, m, &o);
    sbuf_add(&out, "", 1);
    ok(strstr(out.data, "Content-Length: 2\r\n") != NULL, "its Content-Length still reaches the client");
    sbuf_free(&out);
    kago__http_msg_free(m);
    free(m);

    kago__http_error(&out, 503, true, 1);
    sbuf_add(&out, "", 1);
    ok(strstr(out.data, "HTTP/1.1 503 Service Unavailable\r\n") && strstr(out.data, "Retry-After: 1\r\n") &&
           strstr(out.data, "Content-Length: 24\r\n") &&
           strstr(out.data, "\r\n\r\n503 Service Unavailable\n"),
       "503 with Retry-After and a short body");
    sbuf_free(&out);
}

static void test_router(void)
{
    struct router *r = kago__router_new(0);
    int a, b;
    void *other = NULL;
    ok(kago__router_add(r, "blog.example", &a, NULL) == 0, "add blog.example");
    ok(kago__router_add(r, "WWW.Blog.Example", &a, NULL) == 0, "add www (mixed case)");
    ok(kago__router_add(r, "cgi.example", &b, NULL) == 0, "add cgi.example");
    ok(kago__router_add(r, "Blog.example", &b, &other) < 0 && other == &a, "duplicate host refused");
    ok(kago__router_find(r, "BLOG.EXAMPLE:8080", 17) == &a, "case-insensitive, port stripped");
    ok(kago__router_find(r, "www.blog.example.", 17) == &a, "trailing dot");
    ok(kago__router_find(r, "cgi.example", 11) == &b, "second app");
    ok(kago__router_find(r, "other.example", 13) == NULL, "unknown host");
    for (int i = 0; i < 2000; i++) {
        char h[64];
        snprintf(h, sizeof(h), "site%d.example", i);
        kago__router_add(r, h, &b, NULL);
    }
    ok(kago__router_find(r, "site1999.example", 16) == &b && kago__router_find(r, "blog.example", 12) == &a,
       "2000 hosts after growth");
    kago__router_free(r);
}

static void *find(const struct router *r, const char *host)
{
    return kago__router_find(r, host, host ? strlen(host) : 0);
}

static void test_router_wildcards(void)
{
    struct router *r = kago__router_new(0);
    int exact, wide, narrow, dflt, other_app;
    void *other = NULL;
    ok(kago__router_add(r, "*.sites.example", &wide, NULL) == 0, "add *.sites.example");
    ok(kago__router_add(r, "*.A.Sites.Example", &narrow, NULL) == 0, "add *.a.sites.example (mixed case)");
    ok(kago__router_add(r, "shop.a.sites.example", &exact, NULL) == 0, "add an exact host under both");
    ok(kago__router_add(r, "*.sites.example", &other_app, &other) < 0 && other == &wide,
       "a wildcard in two apps refused, naming the first");
    ok(find(r, "blog.sites.example") == &wide, "one label under the wildcard");
    ok(find(r, "x.y.z.sites.example:8080") == &wide, "several labels, port ignored");
    ok(find(r, "BLOG.Sites.Example.") == &wide, "case and trailing dot ignored");
    ok(find(r, "b.a.sites.example") == &narrow, "the longer wildcard beats the shorter");
    ok(find(r, "c.b.a.sites.example") == &narrow, "... several labels deep too");
    ok(find(r, "shop.a.sites.example") == &exact, "an exact host beats every wildcard");
    ok(find(r, "sites.example") == NULL, "the wildcard's domain itself is not under it");
    ok(find(r, "a.sites.example") == &wide, "*.a.sites.example does not match a.sites.example");
    ok(find(r, "sites.example.org") == NULL && find(r, "xsites.example") == NULL, "label boundaries only");
    ok(find(r, "a..sites.example") == &wide, "an empty label does not confuse the walk");
    char host[] = "b.a.sites.example";
    find(r, host);
    ok(strcmp(host, "b.a.sites.example") == 0, "the caller's host is not touched");
    ok(find(r, NULL) == NULL, "no Host, no default: nothing");
    ok(kago__router_set_default(r, &dflt, NULL) == 0, "set a default");
    ok(kago__router_set_default(r, &other_app, &other) < 0 && other == &dflt, "a second default refused");
    ok(find(r, "unknown.example") == &dflt && find(r, "sites.example") == &dflt, "unmatched: the default");
    ok(find(r, NULL) == &dflt, "no Host (HTTP/1.0): the default");
    ok(find(r, "z.sites.example") == &wide, "the default does not beat a wildcard");
    static const char *const bad[] = {"*",          "*.",          "a.*.b",     "*x.example",
                                      "x*.example", "*.*.example", "*..example"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ok(kago_app_host_invalid(bad[i]) != NULL && kago__router_add(r, bad[i], &exact, &other) < 0 && !other,
           "pattern %s refused", bad[i]);
    }
    ok(kago_app_host_invalid("*.example") == NULL && kago_app_host_invalid("plain.example") == NULL,
       "good patterns pass");
    kago__router_free(r);
}

int main(void)
{
    test_smuggling();
    test_split();
    test_padding();
    test_trailers();
    test_limits();
    test_rewrite();
    test_router();
    test_router_wildcards();
    return tap_done();
}
