/* kago serve — the admin listener: GET /metrics (Prometheus text), GET /ps (JSON, or a table
 * with ?table), POST /reload, GET /healthz. One request per connection; small, and never on the hot path.
 * Over TCP every request but /healthz needs the bearer token (auth.c); on a unix socket (--admin
 * unix:PATH, mode 0600) the file's permissions are the check. */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "auth.h"
#include "serve_int.h"
#include "util.h"

#define ADMIN_MAX_REQ 4096

int kago__server_reload(struct server *srv, struct kago_error **err);

static const int status_codes[STATUS_SLOTS] = {200, 204, 206, 301, 302, 304, 400, 404,
                                               408, 413, 431, 500, 502, 503, 504, 0};

void kago__metrics_count(struct app_rt *a, int status)
{
    int slot = STATUS_SLOTS - 1;
    for (int i = 0; i < STATUS_SLOTS - 1; i++)
        if (status_codes[i] == status) {
            slot = i;
            break;
        }
    a->m.by_status[slot]++;
}

struct admin_auth {
    char *token;     /* NULL: none asked (a unix socket) */
    char *unix_path; /* --admin unix:PATH */
    dev_t dev;       /* of the socket bound there: removed at exit only if it is still ours */
    ino_t ino;
    uv_pipe_t pipe;
    struct auth_limit limit;
};

struct admin_conn {
    union {
        uv_handle_t handle;
        uv_stream_t stream;
        uv_tcp_t tcp;
        uv_pipe_t pipe;
    } h;
    uv_write_t wreq;
    struct server *srv;
    char req[ADMIN_MAX_REQ];
    size_t len;
    struct sbuf out;
    bool done;
};

static void printf_buf(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void printf_buf(struct sbuf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    char *p = sbuf_reserve(b, n + 1);
    va_start(ap, fmt);
    vsnprintf(p, n + 1, fmt, ap);
    va_end(ap);
    b->len += n;
}

static void refresh_stats(struct instance *inst)
{
    struct kago_error *err = NULL;
    if (inst->c && kago_container_stats(inst->c, &inst->stats, &err) < 0)
        kago_error_free(err);
}

/* tier: NULL, or a value of a tier="" label after app="" */
static void histogram_t(struct sbuf *b, const char *name, const char *app, const char *tier,
                        const uint64_t *hist, const double *bounds_ms, double sum_ms)
{
    char lab[160];
    if (tier)
        snprintf(lab, sizeof(lab), "app=\"%s\",tier=\"%s\"", app, tier);
    else
        snprintf(lab, sizeof(lab), "app=\"%s\"", app);
    uint64_t cum = 0;
    for (int i = 0; i < POOL_HIST_BUCKETS; i++) {
        cum += hist[i];
        if (i == POOL_HIST_BUCKETS - 1)
            printf_buf(b, "%s_bucket{%s,le=\"+Inf\"} %llu\n", name, lab, (unsigned long long)cum);
        else
            printf_buf(b, "%s_bucket{%s,le=\"%g\"} %llu\n", name, lab, bounds_ms[i] / 1000.0,
                       (unsigned long long)cum);
    }
    printf_buf(b, "%s_sum{%s} %g\n", name, lab, sum_ms / 1000.0);
    printf_buf(b, "%s_count{%s} %llu\n", name, lab, (unsigned long long)cum);
}

static void histogram(struct sbuf *b, const char *name, const char *app, const uint64_t *hist,
                      const double *bounds_ms, double sum_ms)
{
    histogram_t(b, name, app, NULL, hist, bounds_ms, sum_ms);
}

/* A per-app counter of struct pool: its metric name, help text and offset. */
struct pool_counter {
    const char *name, *help;
    size_t off;
};

static void pool_counters(struct server *srv, struct sbuf *b, const struct pool_counter *c, size_t n)
{
    for (size_t k = 0; k < n; k++) {
        printf_buf(b, "# HELP %s %s\n# TYPE %s counter\n", c[k].name, c[k].help, c[k].name);
        for (struct app_rt *a = srv->apps; a; a = a->next)
            printf_buf(b, "%s{app=\"%s\"} %llu\n", c[k].name, a->app.name,
                       (unsigned long long)*(const uint64_t *)((const char *)&a->pool + c[k].off));
    }
}

/* The CRIU tier: checkpoints and restores per app. */
static void criu_metrics(struct server *srv, struct sbuf *b)
{
    static const struct pool_counter counters[] = {
        {"kago_checkpoints_total", "Instances imaged with CRIU (checkpoint :after_ready).",
         offsetof(struct pool, checkpoints)},
        {"kago_checkpoint_failures_total", "Checkpoints that failed (the app stays on cold starts).",
         offsetof(struct pool, checkpoint_failures)},
        {"kago_restores_total", "Instances started by restoring the app's CRIU image.",
         offsetof(struct pool, restores)},
        {"kago_restore_failures_total", "Restores that failed (a cold start was made instead).",
         offsetof(struct pool, restore_failures)},
    };
    pool_counters(srv, b, counters, sizeof counters / sizeof counters[0]);
    printf_buf(b, "# TYPE kago_adopted_reaped_total counter\nkago_adopted_reaped_total %llu\n",
               (unsigned long long)srv->reaped);
}

/* The freeze tier: counters per app, the thaw histogram, and the host-wide frozen memory. */
static void freeze_metrics(struct server *srv, struct sbuf *b)
{
    static const struct pool_counter counters[] = {
        {"kago_freezes_total", "Idle instances frozen.", offsetof(struct pool, freezes)},
        {"kago_thaws_total", "Frozen instances thawed to serve requests (no start).",
         offsetof(struct pool, thaws)},
        {"kago_thaw_failures_total", "Thaws that failed (the instance was killed).",
         offsetof(struct pool, thaw_failures)},
        {"kago_frozen_expired_total", "Frozen instances stopped after idle for: or lifetime.",
         offsetof(struct pool, frozen_expired)},
        {"kago_frozen_budget_stops_total", "Frozen instances stopped to keep within --frozen-memory-budget.",
         offsetof(struct pool, budget_stops)},
    };
    pool_counters(srv, b, counters, sizeof counters / sizeof counters[0]);
    printf_buf(b, "# HELP kago_thaw_seconds Time to thaw a frozen instance for a request.\n"
                  "# TYPE kago_thaw_seconds histogram\n");
    for (struct app_rt *a = srv->apps; a; a = a->next)
        histogram(b, "kago_thaw_seconds", a->app.name, a->pool.thaw_hist, kago__pool_thaw_bounds_ms,
                  a->pool.thaw_sum_ms);
    uint64_t frozen = 0;
    for (struct app_rt *a = srv->apps; a; a = a->next)
        frozen += kago__pool_frozen_bytes(&a->pool);
    printf_buf(b,
               "# HELP kago_frozen_memory_bytes Memory held by frozen instances (all apps).\n"
               "# TYPE kago_frozen_memory_bytes gauge\nkago_frozen_memory_bytes %llu\n"
               "# TYPE kago_frozen_memory_budget_bytes gauge\nkago_frozen_memory_budget_bytes %llu\n",
               (unsigned long long)frozen, (unsigned long long)srv->opts.frozen_memory_budget);
}

/* Crash-loop backoff: failed starts (all, and in a row) and the time left before the next start. */
static void backoff_metrics(struct server *srv, struct sbuf *b)
{
    uint64_t now = kago__serve_now_ms();
    printf_buf(b, "# HELP kago_start_failures_total Instances that never became ready (exec failure, exit "
                  "before ready, readiness timeout).\n# TYPE kago_start_failures_total counter\n");
    for (struct app_rt *a = srv->apps; a; a = a->next)
        printf_buf(b, "kago_start_failures_total{app=\"%s\"} %llu\n", a->app.name,
                   (unsigned long long)a->pool.start_failures);
    printf_buf(b, "# HELP kago_start_failures_in_a_row Failed starts since the app last served a while.\n"
                  "# TYPE kago_start_failures_in_a_row gauge\n");
    for (struct app_rt *a = srv->apps; a; a = a->next)
        printf_buf(b, "kago_start_failures_in_a_row{app=\"%s\"} %u\n", a->app.name, a->pool.fail_streak);
    printf_buf(b, "# HELP kago_backoff_seconds Time left before the app may be started again (its requests "
                  "get 503 meanwhile).\n# TYPE kago_backoff_seconds gauge\n");
    for (struct app_rt *a = srv->apps; a; a = a->next)
        printf_buf(b, "kago_backoff_seconds{app=\"%s\"} %.3f\n", a->app.name,
                   kago__pool_backoff_left(&a->pool, now) / 1000.0);
}

static void metrics(struct server *srv, struct sbuf *b)
{
    printf_buf(b, "# HELP kago_requests_total Requests answered, by app and status.\n"
                  "# TYPE kago_requests_total counter\n");
    for (struct app_rt *a = srv->apps; a; a = a->next)
        for (int i = 0; i < STATUS_SLOTS; i++)
            if (a->m.by_status[i]) {
                if (status_codes[i])
                    printf_buf(b, "kago_requests_total{app=\"%s\",code=\"%d\"} %llu\n", a->app.name,
                               status_codes[i], (unsigned long long)a->m.by_status[i]);
                else
                    printf_buf(b, "kago_requests_total{app=\"%s\",code=\"other\"} %llu\n", a->app.name,
                               (unsigned long long)a->m.by_status[i]);
            }
    printf_buf(b, "# TYPE kago_requests_in_flight gauge\n");
    for (struct app_rt *a = srv->apps; a; a = a->next)
        printf_buf(b, "kago_requests_in_flight{app=\"%s\"} %llu\n", a->app.name,
                   (unsigned long long)a->m.inflight);
    printf_buf(b, "# HELP kago_queue_depth Requests held waiting for an instance to become ready.\n"
                  "# TYPE kago_queue_depth gauge\n");
    for (struct app_rt *a = srv->apps; a; a = a->next)
        printf_buf(b, "kago_queue_depth{app=\"%s\"} %u\n", a->app.name, a->pool.npending);
    printf_buf(b, "# TYPE kago_instances gauge\n");
    for (struct app_rt *a = srv->apps; a; a = a->next)
        for (int s = 0; s < POOL_NSTATES; s++)
            printf_buf(b, "kago_instances{app=\"%s\",state=\"%s\"} %u\n", a->app.name,
                       kago__pool_state_name(s), kago__pool_count(&a->pool, s));
    printf_buf(b, "# TYPE kago_cold_starts_total counter\n");
    for (struct app_rt *a = srv->apps; a; a = a->next)
        printf_buf(b, "kago_cold_starts_total{app=\"%s\"} %llu\n", a->app.name,
                   (unsigned long long)a->pool.cold_starts);
    printf_buf(b, "# HELP kago_cold_start_seconds Time from starting an instance to its readiness, by "
                  "tier (cold: booted; restore: from the app's CRIU image).\n"
                  "# TYPE kago_cold_start_seconds histogram\n");
    for (struct app_rt *a = srv->apps; a; a = a->next) {
        histogram_t(b, "kago_cold_start_seconds", a->app.name, "cold", a->pool.cold_hist,
                    kago__pool_hist_bounds_ms, a->pool.cold_sum_ms);
        histogram_t(b, "kago_cold_start_seconds", a->app.name, "restore", a->pool.restore_hist,
                    kago__pool_hist_bounds_ms, a->pool.restore_sum_ms);
    }
    criu_metrics(srv, b);
    freeze_metrics(srv, b);
    backoff_metrics(srv, b);
    printf_buf(b, "# TYPE kago_upstream_errors_total counter\n");
    for (struct app_rt *a = srv->apps; a; a = a->next)
        printf_buf(b, "kago_upstream_errors_total{app=\"%s\"} %llu\n", a->app.name,
                   (unsigned long long)a->m.upstream_errors);
    printf_buf(b, "# TYPE kago_rejected_total counter\n");
    for (struct app_rt *a = srv->apps; a; a = a->next)
        printf_buf(b, "kago_rejected_total{app=\"%s\"} %llu\n", a->app.name,
                   (unsigned long long)a->pool.rejected);
    printf_buf(b,
               "# TYPE kago_instance_cpu_seconds_total counter\n# TYPE kago_instance_memory_bytes gauge\n");
    for (struct app_rt *a = srv->apps; a; a = a->next)
        for (struct pool_inst *pi = a->pool.insts; pi; pi = pi->next) {
            struct instance *inst = pi->data;
            refresh_stats(inst);
            printf_buf(b, "kago_instance_cpu_seconds_total{app=\"%s\",instance=\"%s\"} %.6f\n", a->app.name,
                       inst->name, inst->stats.cpu_usage_us / 1e6);
            printf_buf(b, "kago_instance_memory_bytes{app=\"%s\",instance=\"%s\"} %lld\n", a->app.name,
                       inst->name, (long long)inst->stats.memory_current);
        }
    printf_buf(b, "# TYPE kago_connections gauge\nkago_connections %u\n", srv->nclients);
    printf_buf(b, "# TYPE kago_instances_started_total counter\nkago_instances_started_total %llu\n",
               (unsigned long long)srv->total_instances);
}

static void json_str(struct sbuf *b, const char *s)
{
    sbuf_add(b, "\"", 1);
    for (; s && *s; s++) {
        if (*s == '"' || *s == '\\')
            sbuf_add(b, "\\", 1);
        if ((unsigned char)*s < 0x20)
            printf_buf(b, "\\u%04x", *s);
        else
            sbuf_add(b, s, 1);
    }
    sbuf_add(b, "\"", 1);
}

/* "state": backoff (failed starts: requests get 503 until retry_in_s), ready (an instance serves),
 * starting, or idle (no instance); with the failed starts in a row and the last one's reason. */
static void ps_app_state(struct app_rt *a, struct sbuf *b, uint64_t now)
{
    uint64_t left = kago__pool_backoff_left(&a->pool, now);
    const char *st = left                                        ? "backoff"
                     : kago__pool_count(&a->pool, POOL_READY)    ? "ready"
                     : kago__pool_count(&a->pool, POOL_FROZEN)   ? "frozen"
                     : kago__pool_count(&a->pool, POOL_STARTING) ? "starting"
                                                                 : "idle";
    printf_buf(b,
               "\"state\":\"%s\",\"start_failures\":%llu,\"failures_in_a_row\":%u,\"retry_in_s\":%.1f,"
               "\"last_error\":",
               st, (unsigned long long)a->pool.start_failures, a->pool.fail_streak, left / 1000.0);
    if (a->start_error)
        json_str(b, a->start_error);
    else
        sbuf_adds(b, "null");
}

static void ps_json(struct server *srv, struct sbuf *b)
{
    uint64_t now = kago__serve_now_ms();
    sbuf_adds(b, "{\"apps\":[");
    for (struct app_rt *a = srv->apps; a; a = a->next) {
        sbuf_adds(b, "{\"name\":");
        json_str(b, a->app.name);
        sbuf_adds(b, ",\"hosts\":[");
        for (char **h = a->app.hosts; h && *h; h++) {
            json_str(b, *h);
            if (h[1])
                sbuf_add(b, ",", 1);
        }
        static const char *const ckpt[] = {"off", "wanted", "checkpointing", "ready", "failed"};
        printf_buf(b, "],\"removed\":%s,\"pending\":%u,\"in_flight\":%llu,\"image\":\"%s\",",
                   a->removed ? "true" : "false", a->pool.npending, (unsigned long long)a->m.inflight,
                   ckpt[a->ckpt]);
        ps_app_state(a, b, now);
        sbuf_adds(b, ",\"instances\":[");
        for (struct pool_inst *pi = a->pool.insts; pi; pi = pi->next) {
            struct instance *inst = pi->data;
            refresh_stats(inst);
            sbuf_adds(b, "{\"name\":");
            json_str(b, inst->name);
            printf_buf(b,
                       ",\"state\":\"%s\",\"tier\":\"%s\",\"pid\":%d,\"age_s\":%.1f,\"in_flight\":%u,"
                       "\"served\":%llu,"
                       "\"cpu_s\":%.3f,\"memory\":%lld",
                       kago__pool_state_name(pi->state), pi->tier == POOL_TIER_RESTORE ? "restore" : "cold",
                       inst->c ? (int)kago_container_pid(inst->c) : 0, (now - pi->created) / 1000.0,
                       pi->inflight, (unsigned long long)pi->served, inst->stats.cpu_usage_us / 1e6,
                       (long long)inst->stats.memory_current);
            if (pi->state == POOL_FROZEN)
                printf_buf(b, ",\"frozen_s\":%.1f,\"frozen_memory\":%llu", (now - pi->frozen_at) / 1000.0,
                           (unsigned long long)pi->frozen_bytes);
            sbuf_adds(b, pi->next ? "}," : "}");
        }
        sbuf_adds(b, a->next ? "]}," : "]}");
    }
    sbuf_adds(b, "]}\n");
}

static void on_admin_closed(uv_handle_t *h)
{
    struct admin_conn *ac = h->data;
    sbuf_free(&ac->out);
    free(ac);
}

static void on_admin_written(uv_write_t *w, int status)
{
    struct admin_conn *ac = w->data;
    uv_close(&ac->h.handle, on_admin_closed);
}

/* extra: more header lines, each ending in \r\n */
static void respond_h(struct admin_conn *ac, int status, const char *ctype, const char *extra,
                      struct sbuf *body)
{
    printf_buf(&ac->out,
               "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%sConnection: close\r\n\r\n",
               status, kago__http_reason(status), ctype, body->len, extra);
    sbuf_add(&ac->out, body->data, body->len);
    sbuf_free(body);
    uv_buf_t b = uv_buf_init(ac->out.data, ac->out.len);
    ac->wreq.data = ac;
    ac->done = true;
    uv_read_stop(&ac->h.stream);
    if (uv_write(&ac->wreq, &ac->h.stream, &b, 1, on_admin_written) < 0)
        uv_close(&ac->h.handle, on_admin_closed);
}

static void respond(struct admin_conn *ac, int status, const char *ctype, struct sbuf *body)
{
    respond_h(ac, status, ctype, "", body);
}

/* The client's address, for the rate limit and the log. */
static void peer_ip(struct admin_conn *ac, char *ip, size_t n)
{
    struct sockaddr_storage ss = {0};
    int len = sizeof(ss);
    snprintf(ip, n, "?");
    if (uv_tcp_getpeername(&ac->h.tcp, (struct sockaddr *)&ss, &len) < 0)
        return;
    if (ss.ss_family == AF_INET6)
        uv_ip6_name((struct sockaddr_in6 *)&ss, ip, n);
    else
        uv_ip4_name((struct sockaddr_in *)&ss, ip, n);
}

/* path as it may be logged: printable ASCII only. */
static void log_safe(char *path)
{
    for (char *p = path; *p; p++)
        if ((unsigned char)*p < 0x20 || (unsigned char)*p >= 0x7f)
            *p = '?';
}

/* Over TCP, a request other than /healthz needs the token: true when it may go on, else it was answered
 * 401 (no token or a wrong one: logged, counted) or 429 (its client failed too often lately). */
static bool authorized(struct admin_conn *ac, const char *method, char *path)
{
    struct admin_auth *au = ac->srv->admin_auth;
    if (!au || !au->token || !strcmp(path, "/healthz"))
        return true;
    char ip[64], hdr[96];
    peer_ip(ac, ip, sizeof(ip));
    uint64_t now = kago__serve_now_ms();
    struct sbuf body = {0};
    uint64_t left = kago__auth_blocked(&au->limit, ip, now);
    if (left) {
        snprintf(hdr, sizeof(hdr), "Retry-After: %llu\r\n", (unsigned long long)(left + 999) / 1000);
        sbuf_adds(&body, "too many failed attempts: try again later\n");
        respond_h(ac, 429, "text/plain", hdr, &body);
        return false;
    }
    const char *tok;
    size_t n;
    bool given = kago__auth_bearer(ac->req, ac->len, &tok, &n);
    if (given && kago__auth_token_eq(au->token, tok, n)) {
        kago__auth_ok(&au->limit, ip);
        return true;
    }
    log_safe(path);
    kago__slog(ac->srv, SLOG_WARN, NULL, NULL, "admin: 401 for %s %s from %s: %s", method, path, ip,
               given ? "wrong token" : "no bearer token");
    if (kago__auth_failed(&au->limit, ip, now))
        kago__slog(ac->srv, SLOG_WARN, NULL, NULL,
                   "admin: %d failed attempts from %s within %d s: it gets 429 for %d s", AUTH_MAX_FAILS, ip,
                   AUTH_WINDOW_MS / 1000, AUTH_BLOCK_MS / 1000);
    sbuf_adds(&body,
              "unauthorized: send Authorization: Bearer TOKEN (the token file is given by --admin-token)\n");
    respond_h(ac, 401, "text/plain", "WWW-Authenticate: Bearer realm=\"kago\"\r\n", &body);
    return false;
}

static void handle(struct admin_conn *ac)
{
    struct server *srv = ac->srv;
    struct sbuf body = {0};
    char method[8] = "", path[256] = "";
    if (sscanf(ac->req, "%7s %255s", method, path) != 2) {
        sbuf_adds(&body, "bad request\n");
        respond(ac, 400, "text/plain", &body);
        return;
    }
    if (!authorized(ac, method, path))
        return;
    if (!strcmp(method, "GET") && !strcmp(path, "/metrics")) {
        metrics(srv, &body);
        respond(ac, 200, "text/plain; version=0.0.4", &body);
    } else if (!strcmp(method, "GET") && !strncmp(path, "/ps", 3)) {
        ps_json(srv, &body);
        respond(ac, 200, "application/json", &body);
    } else if (!strcmp(method, "POST") && !strcmp(path, "/reload")) {
        struct kago_error *err = NULL;
        if (kago__server_reload(srv, &err) < 0) {
            printf_buf(&body, "reload failed: %s\n", err->msg);
            kago_error_free(err);
            respond(ac, 500, "text/plain", &body);
        } else {
            sbuf_adds(&body, "reloaded\n");
            respond(ac, 200, "text/plain", &body);
        }
    } else if (!strcmp(method, "GET") && !strcmp(path, "/healthz")) {
        sbuf_adds(&body, "ok\n");
        respond(ac, 200, "text/plain", &body);
    } else {
        sbuf_adds(&body, "not found (try /metrics, /ps, POST /reload)\n");
        respond(ac, 404, "text/plain", &body);
    }
}

static void on_admin_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    struct admin_conn *ac = h->data;
    buf->base = ac->req + ac->len;
    buf->len = ADMIN_MAX_REQ - 1 - ac->len;
}

static void on_admin_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    struct admin_conn *ac = s->data;
    if (ac->done || n == 0)
        return;
    if (n < 0) {
        uv_close(&ac->h.handle, on_admin_closed);
        return;
    }
    ac->len += n;
    ac->req[ac->len] = 0;
    if (strstr(ac->req, "\r\n\r\n") || strstr(ac->req, "\n\n") || ac->len >= ADMIN_MAX_REQ - 1)
        handle(ac);
}

void kago__admin_accept(struct server *srv, uv_stream_t *listener)
{
    struct admin_conn *ac = xcalloc(1, sizeof(*ac));
    ac->srv = srv;
    if (listener->type == UV_NAMED_PIPE)
        uv_pipe_init(srv->loop, &ac->h.pipe, 0);
    else
        uv_tcp_init(srv->loop, &ac->h.tcp);
    ac->h.handle.data = ac;
    if (uv_accept(listener, &ac->h.stream) < 0) {
        uv_close(&ac->h.handle, on_admin_closed);
        return;
    }
    uv_read_start(&ac->h.stream, on_admin_alloc, on_admin_read);
}

static void on_unix_conn(uv_stream_t *s, int status)
{
    if (status == 0)
        kago__admin_accept(s->data, s);
}

/* A socket file left at path: a serve killed before it could remove it (nobody answers: replaced), or a
 * running one's (an older serve during an upgrade: taken over, said). Anything else there is an error. */
static int clear_socket_path(const char *path, struct kago_error **err)
{
    struct stat st;
    if (lstat(path, &st) < 0)
        return errno == ENOENT ? 0 : kago_error_set(err, errno, "admin socket %s", path);
    if (!S_ISSOCK(st.st_mode))
        return kago_error_set(err, EEXIST, "admin socket %s: something else than a socket is there", path);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
        kago__slog(NULL, SLOG_WARN, NULL, NULL,
                   "admin socket %s is in use by a running process: taking it over", path);
    if (fd >= 0)
        close(fd);
    if (unlink(path) < 0 && errno != ENOENT)
        return kago_error_set(err, errno, "admin socket %s: remove the old one", path);
    return 0;
}

static int listen_unix(struct server *srv, struct admin_auth *au, struct kago_error **err)
{
    const char *path = au->unix_path;
    if (!*path || strlen(path) >= sizeof(((struct sockaddr_un *)0)->sun_path))
        return kago_error_set(err, EINVAL, "--admin unix:%s: want a path of 1 to %zu bytes", path,
                              sizeof(((struct sockaddr_un *)0)->sun_path) - 1);
    if (clear_socket_path(path, err) < 0)
        return -1;
    uv_pipe_init(srv->loop, &au->pipe, 0);
    au->pipe.data = srv;
    mode_t old = umask(077); /* no moment where others may connect */
    int r = uv_pipe_bind(&au->pipe, path);
    umask(old);
    struct stat st;
    if (r == 0 && (chmod(path, 0600) < 0 || lstat(path, &st) < 0))
        r = -errno;
    if (r == 0) {
        au->dev = st.st_dev;
        au->ino = st.st_ino;
        r = uv_listen((uv_stream_t *)&au->pipe, 128, on_unix_conn);
    }
    if (r < 0) {
        uv_close((uv_handle_t *)&au->pipe, NULL);
        return kago_error_set(err, -r, "admin socket %s", path);
    }
    return 0;
}

int kago__admin_setup(struct server *srv, bool tcp_passed, struct kago_error **err)
{
    const struct kago_serve_opts *o = &srv->opts;
    struct admin_auth *au = srv->admin_auth = xcalloc(1, sizeof(*au));
    if (!tcp_passed && !strncmp(o->admin, "unix:", 5)) {
        au->unix_path = xstrdup(o->admin + 5);
        if (listen_unix(srv, au, err) < 0) {
            free(au->unix_path);
            au->unix_path = NULL; /* (not ours to remove) */
            return -1;
        }
        return 0;
    }
    cleanup_free char *def = xasprintf("%s/" KAGO_SERVE_ADMIN_TOKEN, o->root);
    const char *path = o->admin_token ? o->admin_token : def;
    bool made;
    if (kago__auth_token_load(path, &au->token, &made, err) < 0)
        return -1;
    kago__slog(srv, SLOG_INFO, NULL, NULL, "admin API: bearer token %s %s", made ? "made in" : "read from",
               path);
    return 0;
}

const char *kago__admin_unix_path(const struct server *srv)
{
    return srv->admin_auth ? srv->admin_auth->unix_path : NULL;
}

void kago__admin_cleanup(struct server *srv)
{
    struct admin_auth *au = srv->admin_auth;
    if (!au)
        return;
    struct stat st;
    if (au->unix_path && lstat(au->unix_path, &st) == 0 && st.st_dev == au->dev && st.st_ino == au->ino)
        unlink(au->unix_path); /* (a newer serve's socket there is left alone) */
    free(au->unix_path);
    if (au->token)
        explicit_bzero(au->token, strlen(au->token));
    free(au->token);
    free(au);
    srv->admin_auth = NULL;
}
