/* kago serve's per-app logs, the pure part: lines cut from arbitrary reads (partial, long, CRLF), the
 * record format and its parser. */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "logfmt.h"
#include "tap.h"

static struct {
    char lines[16][LOGFMT_LINE_MAX + 1];
    size_t lens[16];
    unsigned n;
} got;

static void emit(void *ctx, const char *line, size_t n)
{
    if (got.n < 16) {
        memcpy(got.lines[got.n], line, n);
        got.lines[got.n][n] = 0;
        got.lens[got.n] = n;
    }
    got.n++;
}

static void feed(struct logfmt_line *p, const char *s)
{
    kago__logfmt_feed(p, s, strlen(s), emit, NULL);
}

static const char *jstr(struct json_object *o, const char *key)
{
    struct json_object *v;
    return json_object_object_get_ex(o, key, &v) && json_object_is_type(v, json_type_string)
               ? json_object_get_string(v)
               : NULL;
}

static double jnum(struct json_object *o, const char *key)
{
    struct json_object *v;
    return json_object_object_get_ex(o, key, &v) ? json_object_get_double(v) : -1;
}

static bool jnull(struct json_object *o, const char *key)
{
    struct json_object *v;
    return json_object_object_get_ex(o, key, &v) && v == NULL;
}

static void test_json(void)
{
    char ts[32];
    int64_t t = 1796377291123456; /* 2026-12-04T09:41:31.123456Z */
    kago__logfmt_time_ms(ts, t);
    ok(!strcmp(ts, "2026-12-04T09:41:31.123Z"), "RFC 3339 time to the millisecond");

    char *line = kago__logfmt_json_slog(t, SLOG_ERR, "web", "web-1a2b-99-1", "said \"hi\"\n\tto /tmp\x01");
    size_t n = strlen(line);
    ok(n && line[n - 1] == '\n' && !memchr(line, '\n', n - 1), "a server log line is one line");
    ok(!strstr(line, "\\/"), "slashes are not escaped");
    struct json_object *o = json_tokener_parse(line);
    is_str(jstr(o, "ts"), "2026-12-04T09:41:31.123Z", "ts");
    is_str(jstr(o, "level"), "error", "level");
    is_str(jstr(o, "msg"), "said \"hi\"\n\tto /tmp\x01", "msg round-trips with quotes and controls");
    ok(!strcmp(jstr(o, "app") ?: "", "web") && !strcmp(jstr(o, "instance") ?: "", "web-1a2b-99-1"),
       "app and instance");
    json_object_put(o);
    free(line);
    line = kago__logfmt_json_slog(t, SLOG_INFO, NULL, NULL, "listening");
    o = json_tokener_parse(line);
    ok(o && jnull(o, "app") && jnull(o, "instance") && !strcmp(jstr(o, "level") ?: "", "info"),
       "no app: null fields");
    json_object_put(o);
    free(line);

    struct logfmt_access r = {.unix_us = t,
                              .ip = "127.0.0.1",
                              .method = "GET",
                              .host = "web.test:80x",
                              .host_len = 11,
                              .path = "/a?b=\"c\" HTTP/1.1",
                              .path_len = 8,
                              .status = 200,
                              .bytes = 1234,
                              .duration_ms = 152.34,
                              .app = "web",
                              .instance = "web-1",
                              .tier = "start",
                              .cold_ms = 150.06};
    line = kago__logfmt_json_access(&r);
    o = json_tokener_parse(line);
    ok(o != NULL, "an access log line parses: %s", line);
    ok(!strcmp(jstr(o, "host") ?: "", "web.test:80") && !strcmp(jstr(o, "path") ?: "", "/a?b=\"c\""),
       "host and path cut at their lengths");
    ok(jnum(o, "status") == 200 && jnum(o, "bytes") == 1234, "status and bytes");
    ok(jnum(o, "duration_ms") > 152.29 && jnum(o, "duration_ms") < 152.31 &&
           strstr(line, "\"duration_ms\":152.3,"),
       "duration to 0.1 ms");
    ok(!strcmp(jstr(o, "cold") ?: "", "start") && strstr(line, "\"cold_ms\":150.1"), "cold tier and ms");
    ok(!strcmp(jstr(o, "ip") ?: "", "127.0.0.1") && !strcmp(jstr(o, "method") ?: "", "GET") &&
           !strcmp(jstr(o, "instance") ?: "", "web-1") && !strcmp(jstr(o, "ts") ?: "", ts),
       "ip, method, instance, ts");
    json_object_put(o);
    free(line);
    r = (struct logfmt_access){.unix_us = t, .ip = "::1", .method = "GET", .status = 404};
    line = kago__logfmt_json_access(&r);
    o = json_tokener_parse(line);
    ok(o && jnull(o, "app") && jnull(o, "instance") && jnull(o, "host") &&
           !strcmp(jstr(o, "cold") ?: "", "none") && jnum(o, "cold_ms") == 0,
       "no app, no host: null; not cold: none, 0");
    json_object_put(o);
    free(line);
}

static void tail_add(struct logfmt_tail *t, const char *s)
{
    kago__logfmt_tail_add(t, s, strlen(s));
}

static void test_tail(void)
{
    struct logfmt_tail t = {0};
    ok(t.buf[0] == 0, "empty tail");
    tail_add(&t, "starting");
    ok(!strcmp(t.buf, "starting"), "one line");
    tail_add(&t, "listening on the wrong port  ");
    ok(!strcmp(t.buf, "starting | listening on the wrong port"), "two lines fit: both, trailing blanks cut");
    tail_add(&t, "");
    tail_add(&t, "done");
    ok(!strcmp(t.buf, "listening on the wrong port | done"), "the last two; empty lines skipped");
    char big[300];
    memset(big, 'x', sizeof(big));
    kago__logfmt_tail_add(&t, big, sizeof(big));
    ok(t.len == LOGFMT_TAIL_MAX && strlen(t.buf) == LOGFMT_TAIL_MAX, "a long line is cut to the cap alone");
    tail_add(&t, "after");
    ok(!strcmp(t.buf, "after"), "a line that does not fit with the one before stands alone");
}

int main(void)
{
    struct logfmt_line p = {0};
    feed(&p, "one\ntw");
    ok(got.n == 1 && !strcmp(got.lines[0], "one"), "a complete line is emitted at once");
    ok(p.buf && p.len == 2, "the partial line waits");
    feed(&p, "o\r\nthree\n\n");
    ok(got.n == 4 && !strcmp(got.lines[1], "two") && !strcmp(got.lines[2], "three") && got.lens[3] == 0,
       "partial completed, CR stripped, empty line kept");
    ok(!p.buf, "no buffer is held between lines");
    feed(&p, "tail-without-newline");
    kago__logfmt_flush(&p, emit, NULL);
    ok(got.n == 5 && !strcmp(got.lines[4], "tail-without-newline") && !p.buf,
       "flush emits the last partial line");
    kago__logfmt_flush(&p, emit, NULL);
    ok(got.n == 5, "flush of nothing emits nothing");

    /* a line of 2.5 pieces, fed in two reads */
    got.n = 0;
    size_t big = LOGFMT_LINE_MAX * 2 + LOGFMT_LINE_MAX / 2;
    char *s = malloc(big + 2);
    memset(s, 'x', big);
    s[big] = '\n';
    s[big + 1] = 0;
    kago__logfmt_feed(&p, s, 100, emit, NULL);
    kago__logfmt_feed(&p, s + 100, big + 1 - 100, emit, NULL);
    ok(got.n == 3 && got.lens[0] == LOGFMT_LINE_MAX && got.lens[1] == LOGFMT_LINE_MAX &&
           got.lens[2] == LOGFMT_LINE_MAX / 2,
       "a long line is cut into LOGFMT_LINE_MAX pieces");
    got.n = 0;
    kago__logfmt_feed(&p, s + big - LOGFMT_LINE_MAX, LOGFMT_LINE_MAX + 1, emit, NULL);
    ok(got.n == 1 && got.lens[0] == LOGFMT_LINE_MAX && !p.buf, "a line of exactly the cap is one record");
    free(s);

    char rec[LOGFMT_RECORD_MAX];
    int64_t t = 1796377291123456LL; /* 2026-12-04T09:41:31.123456Z */
    size_t n = kago__logfmt_record(rec, t, "web-1a2b-99-1", "stderr", "hello world", 11);
    rec[n] = 0;
    ok(!strcmp(rec, "2026-12-04T09:41:31.123456Z web-1a2b-99-1 stderr hello world\n"), "record format");
    struct logfmt_rec r;
    ok(kago__logfmt_parse(rec, n - 1, &r) == 0 && r.us == t && r.inst_len == 13 &&
           !strncmp(r.inst, "web-1a2b-99-1", 13) && r.stream_len == 6 && r.text_len == 11 &&
           !strncmp(r.text, "hello world", 11),
       "record parsed back");
    n = kago__logfmt_record(rec, t, "i", "stdout", "", 0);
    ok(kago__logfmt_parse(rec, n - 1, &r) == 0 && r.text_len == 0, "empty line round-trips");
    ok(kago__logfmt_parse("garbage", 7, &r) < 0, "garbage is not a record");
    ok(kago__logfmt_parse("2026-13-04T09:41:31.123456Z a b c", 34, &r) < 0, "bad month rejected");
    int64_t us;
    ok(kago__logfmt_time("1970-01-01T00:00:01.000002Z", 27, &us) == 0 && us == 1000002, "epoch time");
    test_json();
    test_tail();
    return tap_done();
}
