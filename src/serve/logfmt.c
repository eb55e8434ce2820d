/* kago serve — per-app logs, the pure part (see logfmt.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <json-c/json.h>

#include "logfmt.h"
#include "util.h"

static void emit_line(const char *line, size_t n, logfmt_emit_fn emit, void *ctx)
{
    if (n && line[n - 1] == '\r')
        n--;
    emit(ctx, line, n);
}

/* Appends n bytes (no '\n' among them) to the unfinished line, emitting full LOGFMT_LINE_MAX pieces. */
static void append(struct logfmt_line *p, const char *data, size_t n, logfmt_emit_fn emit, void *ctx)
{
    while (n) {
        if (!p->buf && n >= LOGFMT_LINE_MAX) { /* a whole piece, without copying it */
            emit(ctx, data, LOGFMT_LINE_MAX);
            data += LOGFMT_LINE_MAX;
            n -= LOGFMT_LINE_MAX;
            continue;
        }
        if (!p->buf)
            p->buf = xmalloc(LOGFMT_LINE_MAX);
        size_t k = LOGFMT_LINE_MAX - p->len < n ? LOGFMT_LINE_MAX - p->len : n;
        memcpy(p->buf + p->len, data, k);
        p->len += k;
        data += k;
        n -= k;
        if (p->len == LOGFMT_LINE_MAX) {
            emit(ctx, p->buf, p->len);
            p->len = 0;
        }
    }
}

void kago__logfmt_feed(struct logfmt_line *p, const char *data, size_t n, logfmt_emit_fn emit, void *ctx)
{
    while (n) {
        const char *nl = memchr(data, '\n', n);
        if (!nl) {
            append(p, data, n, emit, ctx);
            return;
        }
        size_t k = (size_t)(nl - data);
        if (p->buf && p->len + k <= LOGFMT_LINE_MAX) { /* the end of the waiting line */
            memcpy(p->buf + p->len, data, k);
            emit_line(p->buf, p->len + k, emit, ctx);
            p->len = 0;
        } else if (p->buf || k > LOGFMT_LINE_MAX) { /* a long line: its pieces, then its end */
            append(p, data, k, emit, ctx);
            if (p->buf && p->len)
                emit_line(p->buf, p->len, emit, ctx);
            p->len = 0;
        } else {
            emit_line(data, k, emit, ctx);
        }
        data = nl + 1;
        n -= k + 1;
        /* a short line at a time: the buffer goes back once the stream is between lines */
        if (p->buf && !p->len) {
            free(p->buf);
            p->buf = NULL;
        }
    }
}

void kago__logfmt_flush(struct logfmt_line *p, logfmt_emit_fn emit, void *ctx)
{
    if (p->buf && p->len)
        emit_line(p->buf, p->len, emit, ctx);
    free(p->buf);
    p->buf = NULL;
    p->len = 0;
}

size_t kago__logfmt_record(char *out, int64_t unix_us, const char *inst, const char *stream, const char *line,
                           size_t n)
{
    time_t s = (time_t)(unix_us / 1000000);
    struct tm tm;
    gmtime_r(&s, &tm);
    int h = snprintf(out, LOGFMT_HEAD_MAX, "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ %.127s %.8s ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     (int)(unix_us % 1000000), inst, stream);
    size_t hl = h < 0 ? 0 : (size_t)h >= LOGFMT_HEAD_MAX ? LOGFMT_HEAD_MAX - 1 : (size_t)h;
    if (n > LOGFMT_LINE_MAX)
        n = LOGFMT_LINE_MAX;
    memcpy(out + hl, line, n);
    out[hl + n] = '\n';
    return hl + n + 1;
}

static int digits(const char *s, int n)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v;
}

int kago__logfmt_time(const char *s, size_t n, int64_t *us)
{
    /* 2026-12-04T09:41:31.123456Z */
    if (n != 27 || s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' || s[16] != ':' ||
        s[19] != '.' || s[26] != 'Z')
        return -1;
    struct tm tm = {0};
    int y = digits(s, 4), mo = digits(s + 5, 2), d = digits(s + 8, 2), h = digits(s + 11, 2),
        mi = digits(s + 14, 2), se = digits(s + 17, 2), frac = digits(s + 20, 6);
    if (y < 1970 || mo < 1 || mo > 12 || d < 1 || d > 31 || h < 0 || h > 23 || mi < 0 || mi > 59 || se < 0 ||
        se > 60 || frac < 0)
        return -1;
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = se;
    *us = (int64_t)timegm(&tm) * 1000000 + frac;
    return 0;
}

/* The next space-separated field of s[*i..n). */
static const char *field(const char *s, size_t n, size_t *i, size_t *len)
{
    const char *sp = memchr(s + *i, ' ', n - *i);
    if (!sp || sp == s + *i)
        return NULL;
    const char *f = s + *i;
    *len = (size_t)(sp - f);
    *i = (size_t)(sp - s) + 1;
    return f;
}

int kago__logfmt_parse(const char *s, size_t n, struct logfmt_rec *r)
{
    size_t i = 0;
    if (!(r->time = field(s, n, &i, &r->time_len)) || !(r->inst = field(s, n, &i, &r->inst_len)) ||
        !(r->stream = field(s, n, &i, &r->stream_len)))
        return -1;
    if (kago__logfmt_time(r->time, r->time_len, &r->us) < 0)
        return -1;
    r->text = s + i;
    r->text_len = n - i;
    return 0;
}

const char *kago__logfmt_level_name(int level)
{
    return level <= SLOG_ERR ? "error" : level == SLOG_WARN ? "warning" : "info";
}

void kago__logfmt_time_ms(char *out, int64_t unix_us)
{
    time_t s = (time_t)(unix_us / 1000000);
    struct tm tm;
    gmtime_r(&s, &tm);
    size_t n = strftime(out, 32, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, 32 - n, ".%03dZ", (int)(unix_us % 1000000 / 1000));
}

static void add_str(struct json_object *o, const char *key, const char *s, size_t n)
{
    json_object_object_add(o, key, s ? json_object_new_string_len(s, (int)n) : NULL);
}

static void add_cstr(struct json_object *o, const char *key, const char *s)
{
    add_str(o, key, s, s ? strlen(s) : 0);
}

/* o as one line (no '/' escaped), and o freed. */
static char *json_line(struct json_object *o)
{
    char *line = xasprintf(
        "%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
    json_object_put(o);
    return line;
}

char *kago__logfmt_json_slog(int64_t unix_us, int level, const char *app, const char *inst, const char *msg)
{
    char ts[32];
    kago__logfmt_time_ms(ts, unix_us);
    struct json_object *o = json_object_new_object();
    add_cstr(o, "ts", ts);
    add_cstr(o, "level", kago__logfmt_level_name(level));
    add_cstr(o, "msg", msg);
    add_cstr(o, "app", app);
    add_cstr(o, "instance", inst);
    return json_line(o);
}

/* ms to 0.1 ms, as the text access log has it. */
static struct json_object *ms_value(double ms)
{
    char s[32];
    snprintf(s, sizeof(s), "%.1f", ms);
    return json_object_new_double_s(ms, s);
}

char *kago__logfmt_json_access(const struct logfmt_access *r)
{
    char ts[32];
    kago__logfmt_time_ms(ts, r->unix_us);
    struct json_object *o = json_object_new_object();
    add_cstr(o, "ts", ts);
    add_cstr(o, "ip", r->ip);
    add_cstr(o, "method", r->method);
    add_str(o, "host", r->host, r->host_len);
    add_str(o, "path", r->path, r->path_len);
    json_object_object_add(o, "status", json_object_new_int(r->status));
    json_object_object_add(o, "bytes", json_object_new_int64((int64_t)r->bytes));
    json_object_object_add(o, "duration_ms", ms_value(r->duration_ms));
    add_cstr(o, "app", r->app);
    add_cstr(o, "instance", r->instance);
    add_cstr(o, "cold", r->tier ? r->tier : "none");
    json_object_object_add(o, "cold_ms", ms_value(r->cold_ms));
    add_cstr(o, "tls", r->tls);
    return json_line(o);
}

void kago__logfmt_tail_add(struct logfmt_tail *t, const char *line, size_t n)
{
    while (n && (line[n - 1] == ' ' || line[n - 1] == '\t'))
        n--;
    if (!n)
        return;
    if (n > LOGFMT_TAIL_MAX)
        n = LOGFMT_TAIL_MAX;
    unsigned prev = t->len - t->last;
    if (prev && prev + 3 + n <= LOGFMT_TAIL_MAX) { /* the line before stays */
        memmove(t->buf, t->buf + t->last, prev);
        memcpy(t->buf + prev, " | ", 3);
        t->last = prev + 3;
    } else {
        t->last = 0;
    }
    memcpy(t->buf + t->last, line, n);
    t->len = t->last + (unsigned)n;
    t->buf[t->len] = 0;
}
