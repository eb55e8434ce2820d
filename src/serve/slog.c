/* kago serve — the server log: what serve says on stderr, one line each, as text ("kago serve: app web:
 * ..."), journal text (the same with a syslog priority prefix, "<6>kago serve: ...") or JSON lines
 * (logfmt.h). Every file of serve writes through kago__slog, so the format is chosen in one place. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "logfmt.h"
#include "serve_int.h"
#include "util.h"

/* The format, resolved on the first line written with a server (AUTO: JOURNAL_STREAM is looked at). */
static enum kago_log_format resolved = KAGO_LOG_AUTO;

/* stderr is the journal's stream when JOURNAL_STREAM ("DEV:INODE") names it (systemd's documented test). */
static bool stderr_is_journal(void)
{
    const char *js = getenv("JOURNAL_STREAM");
    unsigned long long dev, ino;
    struct stat st;
    return js && sscanf(js, "%llu:%llu", &dev, &ino) == 2 && fstat(STDERR_FILENO, &st) == 0 &&
           (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

enum kago_log_format kago__slog_format(const struct server *srv)
{
    if (resolved != KAGO_LOG_AUTO)
        return resolved;
    enum kago_log_format f = srv ? srv->opts.log_format : KAGO_LOG_AUTO;
    if (f == KAGO_LOG_AUTO)
        f = stderr_is_journal() ? KAGO_LOG_JOURNAL : KAGO_LOG_TEXT;
    if (srv)
        resolved = f;
    return f;
}

static int64_t unix_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* prefix: what text lines put before the message ("app web: ", "web-1a2b-99-1: " or ""). */
__attribute__((format(printf, 6, 0))) static void vlog(const struct server *srv, int level, const char *app,
                                                       const char *inst, const char *prefix, const char *fmt,
                                                       va_list ap)
{
    char msg[2048];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    enum kago_log_format f = kago__slog_format(srv);
    if (f == KAGO_LOG_JSON) {
        cleanup_free char *line = kago__logfmt_json_slog(unix_us(), level, app, inst, msg);
        fputs(line, stderr);
    } else if (f == KAGO_LOG_JOURNAL) {
        fprintf(stderr, "<%d>kago serve: %s%s\n", level, prefix, msg);
    } else {
        fprintf(stderr, "kago serve: %s%s\n", prefix, msg);
    }
}

void kago__slog(const struct server *srv, int level, const char *app, const char *inst, const char *fmt, ...)
{
    char prefix[160] = "";
    if (app)
        snprintf(prefix, sizeof(prefix), "app %.140s: ", app);
    else if (inst)
        snprintf(prefix, sizeof(prefix), "%.140s: ", inst);
    va_list ap;
    va_start(ap, fmt);
    vlog(srv, level, app, inst, prefix, fmt, ap);
    va_end(ap);
}

void kago__ilog(const struct instance *inst, int level, const char *fmt, ...)
{
    char prefix[160];
    snprintf(prefix, sizeof(prefix), "%.140s: ", inst->name);
    va_list ap;
    va_start(ap, fmt);
    vlog(inst->app->srv, level, inst->app->app.name, inst->name, prefix, fmt, ap);
    va_end(ap);
}
