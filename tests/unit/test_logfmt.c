/* kago serve's per-app logs, the pure part: lines cut from arbitrary reads (partial, long, CRLF), the
 * record format and its parser. */
#include <stdlib.h>
#include <string.h>

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
    return tap_done();
}
