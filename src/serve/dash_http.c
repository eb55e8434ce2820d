/* kago serve — the dashboard's requests on the admin listener: its pages and static files, the browser's
 * login (a session cookie, HttpOnly and SameSite=Strict, with a CSRF token for its POSTs), the event
 * stream, and the operator's actions (drain an app, stop, freeze or thaw an instance, change an app's
 * limits live), each logged with the client's address. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dash.h"
#include "serve_int.h"
#include "util.h"

static const char *const auth_names[] = {"public", "unix socket", "bearer token", "dashboard session",
                                         "token in the URL"};

static bool is_page(const char *path)
{
    return (path[0] == '/' && (!path[1] || path[1] == '?')) || !strncmp(path, "/app/", 5);
}

bool kago__dash_public(const char *method, const char *path)
{
    return !strcmp(method, "GET") && !strstr(path, "token=") &&
           (is_page(path) || !strncmp(path, "/dash/static/", 13) || !strcmp(path, "/favicon.ico"));
}

static struct dash_session *cookie_session(struct server *srv, const char *head, size_t n)
{
    const char *v;
    size_t len;
    if (!srv->dash || !kago__dash_cookie(head, n, DASH_COOKIE, &v, &len))
        return NULL;
    return kago__dash_session_find(&srv->dash->sessions, v, len, kago__serve_now_ms());
}

int kago__dash_cookie_auth(struct server *srv, const char *head, size_t n, const char *method)
{
    struct dash_session *s = cookie_session(srv, head, n);
    const char *v;
    size_t len;
    if (!s) /* (a cookie of an ended session, or of a serve before a restart: 256 random bits, not a guess) */
        return srv->dash && kago__dash_cookie(head, n, DASH_COOKIE, &v, &len) ? -2 : 0;
    if (!strcmp(method, "GET") || !strcmp(method, "HEAD"))
        return 1;
    if (!kago__dash_header(head, n, DASH_CSRF_HEADER, &v, &len) || len != DASH_ID_HEX ||
        memcmp(v, s->csrf, DASH_ID_HEX) != 0) /* (not secret from its holder: no constant time needed) */
        return -1;
    return 1;
}

static void reply(struct dash_reply *r, int status, const char *ctype, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void reply(struct dash_reply *r, int status, const char *ctype, const char *fmt, ...)
{
    va_list ap;
    r->status = status;
    r->ctype = ctype;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    va_start(ap, fmt);
    vsnprintf(sbuf_reserve(&r->body, n + 1), n + 1, fmt, ap);
    va_end(ap);
    r->body.len += n;
}

static void set_cookie(struct dash_reply *r, const struct dash_session *s)
{
    size_t k = strlen(r->extra);
    if (s)
        snprintf(r->extra + k, sizeof(r->extra) - k,
                 "Set-Cookie: " DASH_COOKIE "=%s; Path=/; HttpOnly; SameSite=Strict; Max-Age=%llu\r\n", s->id,
                 (unsigned long long)DASH_SESSION_MS / 1000);
    else
        snprintf(r->extra + k, sizeof(r->extra) - k,
                 "Set-Cookie: " DASH_COOKIE "=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0\r\n");
}

static const struct dash_asset *asset(const char *path)
{
    size_t n = strcspn(path, "?");
    for (size_t i = 0; i < kago__dash_nassets; i++)
        if (strlen(kago__dash_assets[i].path) == n && !strncmp(kago__dash_assets[i].path, path, n))
            return &kago__dash_assets[i];
    return NULL;
}

static void serve_asset(struct dash_reply *r, const struct dash_asset *f)
{
    r->status = 200;
    r->ctype = f->ctype;
    sbuf_add(&r->body, f->data, f->len);
    snprintf(r->extra, sizeof(r->extra),
             "Cache-Control: no-cache\r\nX-Content-Type-Options: nosniff\r\nX-Frame-Options: DENY\r\n"
             "Content-Security-Policy: default-src 'self'; img-src 'self' data:; style-src 'self' "
             "'unsafe-inline'; frame-ancestors 'none'\r\n");
}

/* GET /?token=TOKEN (admin.c checked it): a session, and the page again without the token in its URL. */
static void login_by_query(struct server *srv, const char *path, const char *ip, struct dash_reply *r)
{
    struct dash_session *s = kago__dash_session_new(&srv->dash->sessions, kago__serve_now_ms());
    if (!s) {
        reply(r, 500, "text/plain", "no session: getrandom failed\n");
        return;
    }
    size_t n = strcspn(path, "?");
    char loc[300];
    snprintf(loc, sizeof(loc), "%.*s", (int)(n < 256 ? n : 256), path);
    for (char *c = loc; *c; c++)
        if ((unsigned char)*c < 0x21 || (unsigned char)*c >= 0x7f || *c == '\\')
            *c = '_';
    for (char *c = loc + 1; *loc == '/' && *c == '/'; c++) /* "//evil.example/x" would leave the site */
        *c = '_';
    snprintf(r->extra, sizeof(r->extra),
             "Location: %s\r\nCache-Control: no-store\r\nReferrer-Policy: no-referrer\r\n", loc);
    set_cookie(r, s);
    kago__slog(srv, SLOG_INFO, NULL, NULL, "admin: dashboard login from %s (token in the URL)", ip);
    reply(r, 303, "text/plain", "logged in\n");
}

static void login(struct server *srv, enum dash_auth how, const char *ip, struct dash_reply *r)
{
    if (how != DASH_AUTH_BEARER && how != DASH_AUTH_LOCAL) {
        reply(r, 400, "text/plain", "log in with Authorization: Bearer TOKEN\n");
        return;
    }
    struct dash_session *s = kago__dash_session_new(&srv->dash->sessions, kago__serve_now_ms());
    if (!s) {
        reply(r, 500, "text/plain", "no session: getrandom failed\n");
        return;
    }
    set_cookie(r, s);
    kago__slog(srv, SLOG_INFO, NULL, NULL, "admin: dashboard login from %s", ip);
    reply(r, 200, "application/json", "{\"auth\":\"cookie\",\"csrf\":\"%s\"}\n", s->csrf);
}

static void session_info(struct server *srv, const char *head, size_t n, enum dash_auth how,
                         struct dash_reply *r)
{
    struct dash_session *s = how == DASH_AUTH_COOKIE ? cookie_session(srv, head, n) : NULL;
    snprintf(r->extra, sizeof(r->extra), "Cache-Control: no-store\r\n");
    reply(r, 200, "application/json", "{\"auth\":\"%s\",\"csrf\":\"%s\"}\n",
          how == DASH_AUTH_COOKIE   ? "cookie"
          : how == DASH_AUTH_BEARER ? "bearer"
                                    : "local",
          s ? s->csrf : "-");
}

static void logout(struct server *srv, const char *head, size_t n, const char *ip, struct dash_reply *r)
{
    struct dash_session *s = cookie_session(srv, head, n);
    if (s)
        kago__dash_session_end(s);
    set_cookie(r, NULL);
    kago__slog(srv, SLOG_INFO, NULL, NULL, "admin: dashboard logout from %s", ip);
    reply(r, 200, "text/plain", "logged out\n");
}

/* --- actions ------------------------------------------------------------------------------------- */

struct action {
    struct server *srv;
    struct app_rt *app;
    struct pool_inst *pi; /* with ?instance= */
    char inst[128];
    const char *who; /* "IP (how)" for the log */
};

static const char *errmsg(int r)
{
    return r == -EBUSY ? "it is serving requests (or being checkpointed)" : "it is not in a state for it";
}

static void act_drain(struct action *x, struct dash_reply *r)
{
    unsigned n = kago__pool_drain_all(&x->app->pool, kago__serve_now_ms());
    kago__slog(x->srv, SLOG_INFO, x->app->app.name, NULL, "admin: drain from %s: %u instances stop", x->who,
               n);
    reply(r, 200, "text/plain", "app %s: %u instances draining\n", x->app->app.name, n);
}

static void act_inst(struct action *x, const char *verb, struct dash_reply *r)
{
    uint64_t now = kago__serve_now_ms();
    struct pool *p = &x->app->pool;
    const char *st = kago__pool_state_name(x->pi->state);
    int ret = !strcmp(verb, "stop")     ? kago__pool_stop_inst(p, x->pi, now)
              : !strcmp(verb, "freeze") ? kago__pool_freeze_inst(p, x->pi, now)
                                        : kago__pool_thaw_inst(p, x->pi, now);
    if (ret < 0) {
        kago__slog(x->srv, SLOG_WARN, NULL, x->inst, "admin: %s from %s refused: %s (%s)", verb, x->who,
                   errmsg(ret), st);
        reply(r, 409, "text/plain", "%s %s: %s (%s)\n", verb, x->inst, errmsg(ret), st);
        return;
    }
    kago__slog(x->srv, SLOG_INFO, NULL, x->inst, "admin: %s from %s (it was %s)", verb, x->who, st);
    reply(r, 200, "text/plain", "%s %s: done\n", verb, x->inst);
}

/* ?cpu=PCT&memory=SIZE: every running instance now (kago update's live update), and the app's container
 * for the next ones (until a reload applies the Kagofile's again). */
static void act_limits(struct action *x, const char *path, struct dash_reply *r)
{
    char cpu[32] = "", mem[32] = "";
    kago__dash_param(path, "cpu", cpu, sizeof(cpu));
    kago__dash_param(path, "memory", mem, sizeof(mem));
    struct kago_spec s;
    kago_spec_init(&s); /* only its limits are used: all unset */
    struct kago_error *err = NULL;
    if ((!cpu[0] && !mem[0]) || (cpu[0] && kago_parse_cpu(cpu, &s.limits.cpu_quota_us, &err) < 0) ||
        (mem[0] && kago_parse_size(mem, &s.limits.memory, &err) < 0) ||
        (mem[0] && s.limits.memory != KAGO_NOLIMIT && s.limits.memory < 256 * 1024 &&
         kago_error_set(&err, 0, "memory %s: must be at least 256K (a start would refuse it)", mem) < 0)) {
        reply(r, 400, "text/plain", "limits of %s: %s\n", x->app->app.name,
              err ? err->msg : "give cpu=PCT and/or memory=SIZE");
        kago_error_free(err);
        kago_spec_free(&s);
        return;
    }
    unsigned ok = 0, failed = 0;
    for (struct pool_inst *pi = x->app->pool.insts; pi; pi = pi->next) {
        struct instance *inst = pi->data;
        if (!inst->c || pi->state == POOL_STOPPING)
            continue;
        if (kago_container_update(inst->c, &s.limits, &err) < 0) {
            kago__ilog(inst, SLOG_WARN, "admin: limits from %s: %s", x->who, err->msg);
            kago_error_free(err);
            err = NULL;
            failed++;
        } else {
            ok++;
        }
    }
    struct kago_limits *l = &x->app->app.spec.limits;
    if (cpu[0]) {
        l->cpu_quota_us = s.limits.cpu_quota_us;
        if (l->cpu_period_us <= 0)
            l->cpu_period_us = 100000;
        if (s.limits.cpu_quota_us > 0 && s.limits.cpu_period_us > 0)
            l->cpu_period_us = s.limits.cpu_period_us;
    }
    if (mem[0])
        l->memory = s.limits.memory;
    kago_spec_free(&s);
    kago__slog(x->srv, SLOG_INFO, x->app->app.name, NULL,
               "admin: limits from %s:%s%s%s%s: %u instances updated, %u failed", x->who,
               cpu[0] ? " cpu " : "", cpu, mem[0] ? " memory " : "", mem, ok, failed);
    reply(r, failed ? 500 : 200, "text/plain", "limits of %s: %u instances updated, %u failed%s\n",
          x->app->app.name, ok, failed, failed ? " (see serve's log)" : "");
}

static bool action(struct server *srv, const char *verb, const char *path, const char *who,
                   struct dash_reply *r)
{
    char name[256];
    struct action x = {.srv = srv, .who = who};
    if (!kago__dash_param(path, "app", name, sizeof(name)) || !(x.app = kago__server_app(srv, name))) {
        reply(r, 404, "text/plain", "%s: no such app (give ?app=NAME)\n", verb);
        return true;
    }
    if (!strcmp(verb, "drain")) {
        act_drain(&x, r);
        return true;
    }
    if (!strcmp(verb, "limits")) {
        act_limits(&x, path, r);
        return true;
    }
    if (!kago__dash_param(path, "instance", x.inst, sizeof(x.inst))) {
        reply(r, 400, "text/plain", "%s: give ?app=NAME&instance=NAME\n", verb);
        return true;
    }
    for (struct pool_inst *pi = x.app->pool.insts; pi && !x.pi; pi = pi->next)
        if (!strcmp(((struct instance *)pi->data)->name, x.inst))
            x.pi = pi;
    if (!x.pi) {
        reply(r, 404, "text/plain", "%s: app %s has no instance %s\n", verb, name, x.inst);
        return true;
    }
    act_inst(&x, verb, r);
    return true;
}

static bool path_is(const char *path, const char *want)
{
    size_t n = strlen(want);
    return !strncmp(path, want, n) && (!path[n] || path[n] == '?');
}

void kago__dash_handle(struct server *srv, const char *method, const char *path, const char *head, size_t n,
                       enum dash_auth how, const char *ip, struct dash_reply *r)
{
    bool get = !strcmp(method, "GET"), post = !strcmp(method, "POST");
    if (!srv->dash)
        return;
    if (how == DASH_AUTH_QUERY) {
        login_by_query(srv, path, ip, r);
        return;
    }
    if (get && !strcmp(path, "/favicon.ico")) {
        reply(r, 204, "image/x-icon", "%s", "");
        return;
    }
    if (get && is_page(path)) {
        serve_asset(r, asset("/dash/static/index.html"));
        return;
    }
    if (get && !strncmp(path, "/dash/static/", 13)) {
        const struct dash_asset *f = asset(path);
        if (f)
            serve_asset(r, f);
        else
            reply(r, 404, "text/plain", "no such file\n");
        return;
    }
    if (get && path_is(path, "/dash/session")) {
        session_info(srv, head, n, how, r);
        return;
    }
    if (get && path_is(path, "/dash/events")) {
        if (srv->stopping) {
            reply(r, 503, "text/plain", "serve is stopping\n");
            return;
        }
        r->status = 200;
        r->ctype = "text/event-stream";
        r->sse = true;
        snprintf(r->extra, sizeof(r->extra), "Cache-Control: no-store\r\nX-Accel-Buffering: no\r\n");
        return;
    }
    if (!post)
        return;
    if (path_is(path, "/dash/login")) {
        login(srv, how, ip, r);
        return;
    }
    if (path_is(path, "/dash/logout")) {
        logout(srv, head, n, ip, r);
        return;
    }
    static const char *const verbs[] = {"drain", "stop", "freeze", "thaw", "limits"};
    for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++) {
        char p[16];
        snprintf(p, sizeof(p), "/%s", verbs[i]);
        if (!path_is(path, p))
            continue;
        const char *v;
        size_t len;
        if (how == DASH_AUTH_LOCAL && !kago__dash_header(head, n, DASH_CSRF_HEADER, &v, &len)) {
            /* (a browser reaching a forwarded unix socket cannot send it across origins) */
            reply(r, 403, "text/plain", "%s: send the header " DASH_CSRF_HEADER ": 1\n", verbs[i]);
            return;
        }
        char who[128];
        snprintf(who, sizeof(who), "%s (%s)", ip, auth_names[how]);
        action(srv, verbs[i], path, who, r);
        return;
    }
}
