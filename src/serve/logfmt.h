/* kago serve — per-app logs, the pure part: cutting an instance's output into lines, and the record
 * format of <root>/logs/<app>/current.log that serve writes and `kago logs` reads. No I/O here.
 *
 * A record is one line: "TIME INSTANCE STREAM TEXT\n", TIME in UTC to the microsecond
 * (2026-12-04T09:41:31.123456Z), STREAM "stdout" or "stderr", TEXT the app's line without its '\n'
 * (and without a '\r' before it). A line longer than LOGFMT_LINE_MAX is cut into records of that size;
 * a last line without '\n' is recorded when its stream ends. */
#ifndef KAGO_LOGFMT_H
#define KAGO_LOGFMT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define LOGFMT_LINE_MAX 16384
/* Room for a record's TIME, INSTANCE (< 128 bytes), STREAM and separators besides TEXT. */
#define LOGFMT_HEAD_MAX   192
#define LOGFMT_RECORD_MAX (LOGFMT_HEAD_MAX + LOGFMT_LINE_MAX + 1)

/* The unfinished last line of a stream: buf is NULL while there is none (an idle stream holds no
 * memory), else malloc'd with room for LOGFMT_LINE_MAX bytes. */
struct logfmt_line {
    char *buf;
    size_t len;
};

typedef void (*logfmt_emit_fn)(void *ctx, const char *line, size_t n);

/* Cuts data into lines: emit is called for each complete line (and for each LOGFMT_LINE_MAX piece of a
 * longer one); the rest waits in p for the next call. */
void kago__logfmt_feed(struct logfmt_line *p, const char *data, size_t n, logfmt_emit_fn emit, void *ctx);
/* The stream ended: emits the unfinished line, if any, and frees p's buffer. */
void kago__logfmt_flush(struct logfmt_line *p, logfmt_emit_fn emit, void *ctx);

/* Writes the record of one line into out (at least LOGFMT_RECORD_MAX bytes; n <= LOGFMT_LINE_MAX).
 * Returns its length, '\n' included. */
size_t kago__logfmt_record(char *out, int64_t unix_us, const char *inst, const char *stream, const char *line,
                           size_t n);

struct logfmt_rec {
    int64_t us; /* unix time */
    const char *time, *inst, *stream, *text;
    size_t time_len, inst_len, stream_len, text_len;
};
/* Splits one record (s, n bytes, without its '\n') into r (pointers into s). Returns 0, or -1 when s is
 * not a record. */
int kago__logfmt_parse(const char *s, size_t n, struct logfmt_rec *r);
/* Parses "2026-12-04T09:41:31.123456Z" (n bytes) into unix microseconds. Returns 0 or -1. */
int kago__logfmt_time(const char *s, size_t n, int64_t *us);

/* --- serve's own logs (--log-format json): one JSON object per line ------------------------------- */

/* Server log levels: syslog priorities, so that journald takes them as they are. */
enum { SLOG_ERR = 3, SLOG_WARN = 4, SLOG_INFO = 6 };
const char *kago__logfmt_level_name(int level); /* "error", "warning", "info" */

/* RFC 3339 UTC time to the millisecond ("2026-12-04T09:41:31.123Z") into out (>= 32 bytes). */
void kago__logfmt_time_ms(char *out, int64_t unix_us);

/* A server log line: {"ts","level","msg","app","instance"} and '\n' (app, instance: null when NULL).
 * Returns it malloc'd (the caller frees). */
char *kago__logfmt_json_slog(int64_t unix_us, int level, const char *app, const char *inst, const char *msg);

/* One request of the access log. tier: "none" (it did not wait), "start", "restore" or "thaw". */
struct logfmt_access {
    int64_t unix_us;
    const char *ip, *method, *host, *path; /* host and path: host_len and path_len bytes */
    size_t host_len, path_len;
    int status;
    uint64_t bytes;
    double duration_ms, cold_ms;
    const char *app, *instance, *tier; /* app, instance: NULL when none was chosen */
    const char *tls;                   /* the TLS version ("TLSv1.3"), NULL: plain HTTP */
};
/* The access log line of r as JSON and '\n': {"ts","ip","method","host","path","status","bytes",
 * "duration_ms","app","instance","cold","cold_ms","tls"}. Returns it malloc'd (the caller frees). */
char *kago__logfmt_json_access(const struct logfmt_access *r);

/* What an instance printed last, for a start failure's report: its last line, and the one before when
 * both fit in LOGFMT_TAIL_MAX bytes (joined by " | "). Empty lines are skipped. */
#define LOGFMT_TAIL_MAX 200
struct logfmt_tail {
    char buf[LOGFMT_TAIL_MAX + 1]; /* NUL-terminated */
    unsigned len, last;            /* the last line is buf[last, len) */
};
void kago__logfmt_tail_add(struct logfmt_tail *t, const char *line, size_t n);

#endif
