/* kago serve's dashboard, the pure part: latency buckets and quantiles, the sample ring, sessions (made,
 * found, expired, evicted), and the request's headers, cookies and query parameters. */
#include <stdio.h>
#include <string.h>

#include "dash.h"
#include "tap.h"

static void test_latency(void)
{
    ok(kago__dash_lat_bucket(0) == 0 && kago__dash_lat_bucket(0.05) == 0, "50 us and less: bucket 0");
    ok(kago__dash_lat_bucket(0.06) == 1 && kago__dash_lat_bucket(0.0707) == 1,
       "up to 50 us * 1.41: bucket 1");
    ok(kago__dash_lat_bucket(1e9) == DASH_LAT_BUCKETS - 1, "huge: the last bucket");
    for (unsigned b = 1; b < DASH_LAT_BUCKETS - 1; b++)
        if (kago__dash_lat_bucket(kago__dash_lat_bound(b)) != b ||
            kago__dash_lat_bucket(kago__dash_lat_bound(b) * 1.01) != b + 1) {
            ok(0, "bucket %u: its bound in it, just above in the next", b);
            return;
        }
    ok(1, "each bound falls in its bucket, just above it in the next");
    struct dash_lat h = {0};
    ok(kago__dash_lat_quantile(&h, 0.5) == 0, "empty: 0");
    for (int i = 0; i < 98; i++)
        h.n[kago__dash_lat_bucket(2.0)]++;
    h.n[kago__dash_lat_bucket(300.0)] += 2;
    double p50 = kago__dash_lat_quantile(&h, 0.5), p99 = kago__dash_lat_quantile(&h, 0.99);
    ok(p50 >= 2.0 && p50 < 2.9, "p50 of 98 x 2 ms and 2 x 300 ms: ~2 ms (%.2f)", p50);
    ok(p99 >= 300 && p99 < 430, "p99: ~300 ms (%.1f)", p99);
}

static void test_ring(void)
{
    struct dash_ring r = {0};
    bool order = true;
    for (uint32_t t = 1; t <= DASH_SLOTS + 7; t++) {
        struct dash_sample s = {.t = t, .requests = t * 2};
        kago__dash_ring_push(&r, &s);
        if (t == 12)
            ok(r.n == 12 && r.cap == 16, "12 samples take 16 slots (%u)", r.cap);
        for (unsigned k = 0; k < r.n; k++) /* oldest first at every size, across each growth */
            order &= kago__dash_ring_at(&r, k)->t == t - r.n + 1 + k;
    }
    ok(order, "oldest first while the ring grows and once it wraps");
    ok(r.n == DASH_SLOTS && r.cap == DASH_SLOTS, "full at %u samples", DASH_SLOTS);
    ok(kago__dash_ring_at(&r, 0)->t == 8 && kago__dash_ring_at(&r, DASH_SLOTS - 1)->t == DASH_SLOTS + 7 &&
           kago__dash_ring_at(&r, DASH_SLOTS - 1)->requests == (DASH_SLOTS + 7) * 2,
       "the 7 oldest overwritten");
    ok(r.cap * sizeof(*r.s) <= 8 * 1024, "a ring of 15 minutes is %zu bytes", r.cap * sizeof(*r.s));
    kago__dash_ring_free(&r);
    ok(!r.s && !r.n, "freed");
    /* docs/serve.md states the bytes per active app: say it again there when this changes */
    ok(sizeof(struct dash_app) == 544, "an active app's own state: %zu bytes (docs/serve.md: 544)",
       sizeof(struct dash_app));
}

static void test_sessions(void)
{
    static struct dash_sessions t;
    struct dash_session *s = kago__dash_session_new(&t, 1000);
    ok(s && strlen(s->id) == DASH_ID_HEX && strlen(s->csrf) == DASH_ID_HEX && strcmp(s->id, s->csrf),
       "a session: id and CSRF token, 64 hex each, different");
    char id[DASH_ID_HEX + 1];
    snprintf(id, sizeof(id), "%s", s->id);
    ok(kago__dash_session_find(&t, id, DASH_ID_HEX, 2000) == s, "found by its id");
    id[5] ^= 1;
    ok(!kago__dash_session_find(&t, id, DASH_ID_HEX, 2000), "one character off: not found");
    id[5] ^= 1;
    ok(!kago__dash_session_find(&t, id, 10, 2000), "a prefix: not found");
    ok(!kago__dash_session_find(&t, id, DASH_ID_HEX, 2000 + DASH_SESSION_MS), "12 h unused: expired");
    ok(!kago__dash_session_find(&t, id, DASH_ID_HEX, 2000), "and gone");
    struct dash_session *first = kago__dash_session_new(&t, 10);
    for (int i = 0; i < DASH_SESSIONS; i++)
        kago__dash_session_new(&t, 100 + i);
    ok(!first->id[0] || first->last_ms != 10, "full: the least recently used session is the one replaced");
}

static void test_parse(void)
{
    const char *head = "GET /dash/events?app=a%2Fb+c&x HTTP/1.1\r\nHost: h\r\n"
                       "Cookie: a=1; kago_session=abc; b=2\r\nx-kago-csrf:  tok \r\n\r\n";
    const char *v;
    size_t n;
    ok(kago__dash_cookie(head, strlen(head), "kago_session", &v, &n) && n == 3 && !strncmp(v, "abc", 3),
       "the cookie among others");
    ok(!kago__dash_cookie(head, strlen(head), "kago", &v, &n), "a prefix of a name is not it");
    ok(kago__dash_header(head, strlen(head), DASH_CSRF_HEADER, &v, &n) && n == 3 && !strncmp(v, "tok", 3),
       "a header in any case, blanks trimmed");
    ok(!kago__dash_header("GET / HTTP/1.1\r\n\r\nX-Kago-CSRF: 1\r\n", 33, DASH_CSRF_HEADER, &v, &n),
       "not after the empty line");
    char out[64];
    ok(kago__dash_param("/dash/events?app=a%2Fb+c&x", "app", out, sizeof(out)) && !strcmp(out, "a/b c"),
       "a parameter, decoded");
    ok(kago__dash_param("/x?app=1&x", "x", out, sizeof(out)) && !out[0],
       "one without a value: present, empty");
    ok(!kago__dash_param("/x?apps=1", "app", out, sizeof(out)), "a longer name is not it");
    ok(!kago__dash_param("/x?app=12345", "app", out, 4), "too long for out: false");
    ok(kago__dash_param("/x?a=%zz", "a", out, sizeof(out)) && !strcmp(out, "%zz"), "a bad escape is kept");
}

int main(void)
{
    test_latency();
    test_ring();
    test_sessions();
    test_parse();
    return tap_done();
}
