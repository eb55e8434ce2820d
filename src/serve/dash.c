/* kago serve — the dashboard on the admin listener: a sampler that runs once a second over the apps with
 * recent activity only (an idle app holds no sample and costs nothing), the Server-Sent Events the page
 * reads, the operator's actions (drain, stop, freeze, thaw, limits), the browser's login, and the page's
 * static files compiled into the binary. admin.c owns the connections; this file fills their answers. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dash.h"
#include "serve_int.h"
#include "util.h"

static void bprintf(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void bprintf(struct sbuf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(sbuf_reserve(b, 256), 256, fmt, ap);
    va_end(ap);
    if (n >= 256) {
        va_start(ap, fmt);
        vsnprintf(sbuf_reserve(b, n + 1), n + 1, fmt, ap);
        va_end(ap);
    }
    if (n > 0)
        b->len += n;
}

static void jstr(struct sbuf *b, const char *s)
{
    sbuf_add(b, "\"", 1);
    for (; s && *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            sbuf_add(b, "\\", 1);
        if (c < 0x20 || c == 0x7f)
            bprintf(b, "\\u%04x", c);
        else
            sbuf_add(b, s, 1);
    }
    sbuf_add(b, "\"", 1);
}

static void jstrn(struct sbuf *b, const char *s, size_t n)
{
    char tmp[512];
    if (n >= sizeof(tmp))
        n = sizeof(tmp) - 1;
    memcpy(tmp, s, n);
    tmp[n] = 0;
    jstr(b, tmp);
}

/* --- the sampler --------------------------------------------------------------------------------- */

static struct dash_app *activate(struct app_rt *a)
{
    struct dash *d = a->srv->dash;
    if (a->dash || !d)
        return a->dash;
    struct dash_app *da = xcalloc(1, sizeof(*da));
    da->app = a;
    da->starts_seen = a->pool.cold_starts;
    da->restores_seen = a->pool.restores;
    da->thaws_seen = a->pool.thaws;
    uv_mutex_lock(&a->srv->shard_mu); /* (--threads: the request loops of other apps add theirs too) */
    da->next = d->active;
    if (d->active)
        d->active->prev = da;
    d->active = da;
    d->nactive++;
    uv_mutex_unlock(&a->srv->shard_mu);
    a->dash = da;
    return da;
}

static void deactivate(struct dash *d, struct dash_app *da)
{
    if (da->prev)
        da->prev->next = da->next;
    else
        d->active = da->next;
    if (da->next)
        da->next->prev = da->prev;
    d->nactive--;
    d->ndue -= da->due;
    da->app->dash = NULL;
    d->ring_bytes -= da->ring.cap * sizeof(*da->ring.s);
    kago__dash_ring_free(&da->ring);
    free(da);
}

void kago__dash_request(struct app_rt *a, int status, uint64_t us)
{
    struct dash_app *da = activate(a);
    if (!da)
        return;
    da->lat_now.n[kago__dash_lat_bucket(us / 1000.0)]++;
    da->req_now++;
    da->err_now += status >= 500;
}

void kago__dash_app_free(struct app_rt *a)
{
    struct dash *d = a->srv->dash;
    if (a->dash)
        deactivate(d, a->dash);
    if (d)
        d->by_name_stale = true;
}

void kago__dash_reloaded(struct server *srv, const char *error)
{
    struct dash *d = srv->dash;
    if (!d)
        return;
    free(d->reload_error);
    d->reload_error = error ? xstrdup(error) : NULL;
    d->reload_ms = kago__serve_now_ms();
    d->reloads++;
}

static unsigned live_instances(const struct app_rt *a)
{
    unsigned n = 0;
    for (const struct pool_inst *pi = a->pool.insts; pi; pi = pi->next)
        n += pi->state != POOL_STOPPING;
    return n;
}

static uint16_t clamp16(uint64_t v)
{
    return v > 65535 ? 65535 : (uint16_t)v;
}

/* Instances whose usage one loop turn reads at most (two cgroup files each), and the time it spends on
 * them at most (in a storm of starts a cgroup file's read took up to 70 us: 32 instances, 1-4.6 ms), before
 * the loop goes on. */
#define DASH_SLICE    32
#define DASH_SLICE_NS 1000000

/* The step's usage: its instances' memory and CPU (read from their cgroups now) complete the step that
 * ended, which goes to the ring. Returns the instances read. */
static unsigned finish_step(struct dash *d, struct dash_app *da)
{
    struct dash_sample *st = &da->pend;
    uint64_t cpu = 0, mem = 0;
    unsigned n = 0;
    struct kago_error *err = NULL;
    for (struct pool_inst *pi = da->app->pool.insts; pi; pi = pi->next) {
        struct instance *inst = pi->data;
        if (!inst->c || pi->state == POOL_STOPPING)
            continue;
        n++;
        if (kago_container_usage(inst->c, &inst->stats, &err) < 0) {
            kago_error_free(err);
            err = NULL;
            continue;
        }
        cpu += inst->stats.cpu_usage_us;
        mem += inst->stats.memory_current > 0 ? (uint64_t)inst->stats.memory_current : 0;
    }
    st->memory_kib = (uint32_t)(mem >> 10);
    st->cpu_pct =
        da->cpu_prev_us && cpu >= da->cpu_prev_us ? (cpu - da->cpu_prev_us) / (DASH_STEP_S * 1e4) : 0;
    da->cpu_prev_us = cpu;
    unsigned cap = da->ring.cap;
    kago__dash_ring_push(&da->ring, st);
    d->ring_bytes += (da->ring.cap - cap) * sizeof(*da->ring.s);
    da->due = false;
    d->ndue--;
    return n;
}

static void on_slice(uv_idle_t *h)
{
    struct dash *d = h->data;
    unsigned budget = DASH_SLICE;
    uint64_t t0 = uv_hrtime();
    for (struct dash_app *da = d->active; da && d->ndue && budget; da = da->next)
        if (da->due) {
            unsigned n = finish_step(d, da);
            budget -= n < budget ? n : budget;
            if (uv_hrtime() - t0 >= DASH_SLICE_NS)
                break;
        }
    if (!d->ndue)
        uv_idle_stop(&d->slicer);
}

/* The step ends: what it counted is kept (pend) until on_slice reads its instances' usage. */
static void end_step(struct dash *d, struct dash_app *da, uint32_t t)
{
    if (da->due) /* (the last one's usage not read in 5 s: read now) */
        finish_step(d, da);
    struct dash_sample *st = &da->step;
    st->t = t;
    st->p50_ms = (float)kago__dash_lat_quantile(&da->lat_step, 0.5);
    st->p99_ms = (float)kago__dash_lat_quantile(&da->lat_step, 0.99);
    st->instances = da->sec.instances;
    da->pend = *st;
    da->due = true;
    d->ndue++;
    if (d->timer_on)
        uv_idle_start(&d->slicer, on_slice);
    memset(st, 0, sizeof(*st));
    memset(&da->lat_step, 0, sizeof(da->lat_step));
}

/* One second of da: the live sample, summed into the step. Returns false when the app is quiet long
 * enough to be let go. */
static bool sample_app(struct dash *d, struct dash_app *da, uint32_t t, bool step_end)
{
    struct app_rt *a = da->app;
    struct pool *p = &a->pool;
    struct dash_sample *s = &da->sec;
    uint64_t restores = p->restores, starts = p->cold_starts - (restores <= p->cold_starts ? restores : 0);
    *s = (struct dash_sample){
        .t = t,
        .requests = da->req_now,
        .errors = da->err_now,
        .p50_ms = (float)kago__dash_lat_quantile(&da->lat_now, 0.5),
        .p99_ms = (float)kago__dash_lat_quantile(&da->lat_now, 0.99),
        .starts = clamp16(starts - da->starts_seen),
        .restores = clamp16(restores - da->restores_seen),
        .thaws = clamp16(p->thaws - da->thaws_seen),
        .instances = clamp16(live_instances(a)),
    };
    da->starts_seen = starts;
    da->restores_seen = restores;
    da->thaws_seen = p->thaws;
    struct dash_sample *st = &da->step;
    st->requests += s->requests;
    st->errors += s->errors;
    st->starts += s->starts;
    st->restores += s->restores;
    st->thaws += s->thaws;
    for (unsigned i = 0; i < DASH_LAT_BUCKETS; i++)
        da->lat_step.n[i] += da->lat_now.n[i];
    memset(&da->lat_now, 0, sizeof(da->lat_now));
    d->sec.requests += da->req_now;
    d->sec.errors += da->err_now;
    d->sec.instances += s->instances;
    da->req_now = da->err_now = 0;
    da->quiet_s = s->requests || s->instances || p->npending ? 0 : da->quiet_s + 1;
    if (step_end)
        end_step(d, da, t);
    return da->quiet_s < DASH_SLOTS * DASH_STEP_S;
}

static uint32_t self_rss_kib(void)
{
    FILE *f = fopen("/proc/self/statm", "re");
    unsigned long size = 0, rss = 0;
    if (f) {
        if (fscanf(f, "%lu %lu", &size, &rss) != 2)
            rss = 0;
        fclose(f);
    }
    return (uint32_t)(rss * (unsigned long)sysconf(_SC_PAGESIZE) / 1024);
}

static void send_events(struct server *srv);

static void on_second(uv_timer_t *t)
{
    struct server *srv = t->data;
    struct dash *d = srv->dash;
    uint32_t now_s = (uint32_t)((kago__serve_now_ms() - srv->started_ms) / 1000);
    bool step_end = ++d->secs % DASH_STEP_S == 0;
    /* apps with instances or held requests are on the tick's list: they are active even without requests */
    for (struct app_rt *a = srv->ticking; a; a = a->tick_next)
        if (!a->dash && !kago__pool_empty(&a->pool))
            activate(a);
    memset(&d->sec, 0, sizeof(d->sec));
    for (struct dash_app *da = d->active, *next; da; da = next) {
        next = da->next;
        d->sec.held += da->app->pool.npending;
        if (!sample_app(d, da, now_s, step_end))
            deactivate(d, da);
    }
    d->sec.t = now_s;
    d->sec.connections = srv->nclients;
    d->sec.active_apps = d->nactive;
    d->sec.rss_kib = self_rss_kib();
    struct dash_srv_sample *st = &d->step;
    st->requests += d->sec.requests;
    st->errors += d->sec.errors;
    if (step_end) {
        st->t = now_s;
        st->connections = d->sec.connections;
        st->held = d->sec.held;
        st->active_apps = d->sec.active_apps;
        st->instances = d->sec.instances;
        st->rss_kib = d->sec.rss_kib;
        kago__dash_srv_ring_push(&d->ring, st);
        memset(st, 0, sizeof(*st));
    }
    send_events(srv);
}

int kago__dash_init(struct server *srv)
{
    struct dash *d = srv->dash = xcalloc(1, sizeof(*d));
    uv_timer_init(srv->loop, &d->timer);
    d->timer.data = srv;
    d->timer_on = true;
    uv_idle_init(srv->loop, &d->slicer);
    d->slicer.data = d;
    d->sec.rss_kib = self_rss_kib();
    uv_timer_start(&d->timer, on_second, 1000, 1000);
    return 0;
}

void kago__dash_shutdown(struct server *srv)
{
    struct dash *d = srv->dash;
    if (!d)
        return;
    while (d->subs) {
        struct dash_sub *s = d->subs;
        kago__dash_sse_remove(srv, s);
        s->close(s);
    }
    if (d->timer_on) {
        uv_timer_stop(&d->timer);
        uv_close((uv_handle_t *)&d->timer, NULL);
        uv_idle_stop(&d->slicer);
        uv_close((uv_handle_t *)&d->slicer, NULL);
        d->timer_on = false;
    }
}

void kago__dash_free(struct server *srv)
{
    struct dash *d = srv->dash;
    if (!d)
        return;
    while (d->active)
        deactivate(d, d->active);
    free(d->reload_error);
    free(d->by_name);
    explicit_bzero(&d->sessions, sizeof(d->sessions));
    free(d);
    srv->dash = NULL;
}

/* --- events -------------------------------------------------------------------------------------- */

static const char *app_state(struct app_rt *a, uint64_t now)
{
    return kago__pool_backoff_left(&a->pool, now)      ? "backoff"
           : a->removed                                ? "removed"
           : kago__pool_count(&a->pool, POOL_READY)    ? "ready"
           : kago__pool_count(&a->pool, POOL_FROZEN)   ? "frozen"
           : kago__pool_count(&a->pool, POOL_STARTING) ? "starting"
                                                       : "idle";
}

static void j_sample(struct sbuf *b, const struct dash_sample *s)
{
    bprintf(b,
            "{\"t\":%u,\"requests\":%u,\"errors\":%u,\"p50_ms\":%.3g,\"p99_ms\":%.3g,\"starts\":%u,"
            "\"restores\":%u,"
            "\"thaws\":%u,\"instances\":%u,\"memory\":%llu,\"cpu_pct\":%.1f}",
            s->t, s->requests, s->errors, s->p50_ms, s->p99_ms, s->starts, s->restores, s->thaws,
            s->instances, (unsigned long long)s->memory_kib << 10, s->cpu_pct);
}

static void j_srv_sample(struct sbuf *b, const struct dash_srv_sample *s)
{
    bprintf(b,
            "{\"t\":%u,\"requests\":%u,\"errors\":%u,\"connections\":%u,\"held\":%u,\"active_apps\":%u,"
            "\"instances\":%u,\"rss\":%llu}",
            s->t, s->requests, s->errors, s->connections, s->held, s->active_apps, s->instances,
            (unsigned long long)s->rss_kib << 10);
}

/* Requests refused (503: queue full, backoff, start failed) or failed upstream (502, 504). */
static uint64_t app_errors(const struct app_rt *a)
{
    return a->pool.rejected + a->m.upstream_errors;
}

static void j_server(struct server *srv, struct sbuf *b)
{
    struct dash *d = srv->dash;
    uint64_t now = kago__serve_now_ms();
    size_t napps = 0;
    for (struct app_rt *a = srv->apps; a; a = a->next)
        napps += !a->removed;
    bprintf(b,
            "\"server\":{\"uptime_s\":%llu,\"apps\":%zu,\"active_apps\":%u,\"connections\":%u,\"held\":%u,"
            "\"start_queue\":%u,\"starting\":%u,\"rss\":%llu,\"instances_started\":%llu,"
            "\"bytes_per_active_app\":%zu,\"reloads\":%u,\"reload_error\":",
            (unsigned long long)(now - srv->started_ms) / 1000, napps, d->nactive, srv->nclients, d->sec.held,
            srv->startq_len, srv->starting, (unsigned long long)d->sec.rss_kib << 10,
            (unsigned long long)srv->total_instances,
            sizeof(struct dash_app) + (d->nactive ? d->ring_bytes / d->nactive : 0), d->reloads);
    if (d->reload_error)
        jstr(b, d->reload_error);
    else
        sbuf_adds(b, "null");
    bprintf(b, ",\"reload_ago_s\":%lld}", d->reload_ms ? (long long)(now - d->reload_ms) / 1000 : -1ll);
}

static void j_app_row(struct sbuf *b, struct app_rt *a, uint64_t now)
{
    sbuf_adds(b, "{\"name\":");
    jstr(b, a->app.name);
    unsigned ready = kago__pool_count(&a->pool, POOL_READY);
    bprintf(b,
            ",\"state\":\"%s\",\"ready\":%u,\"frozen\":%u,\"instances\":%u,\"pending\":%u,\"starts\":%llu,"
            "\"restores\":%llu,\"thaws\":%llu,\"errors\":%llu",
            app_state(a, now), ready, kago__pool_count(&a->pool, POOL_FROZEN), live_instances(a),
            a->pool.npending, (unsigned long long)(a->pool.cold_starts - a->pool.restores),
            (unsigned long long)a->pool.restores, (unsigned long long)a->pool.thaws,
            (unsigned long long)app_errors(a));
    if (a->dash) {
        const struct dash_sample *s = &a->dash->sec;
        bprintf(b, ",\"rps\":%u,\"p50_ms\":%.3g,\"p99_ms\":%.3g", s->requests, s->p50_ms, s->p99_ms);
    } else {
        sbuf_adds(b, ",\"rps\":0,\"p50_ms\":0,\"p99_ms\":0");
    }
    sbuf_adds(b, "}");
}

static int by_name(const void *x, const void *y)
{
    return strcmp((*(struct app_rt *const *)x)->app.name, (*(struct app_rt *const *)y)->app.name);
}

/* d->by_name, sorted again when an app was freed or the number of apps changed (a reload, etcd). */
static void sort_apps(struct server *srv, struct dash *d)
{
    size_t n = 0;
    for (struct app_rt *a = srv->apps; a; a = a->next)
        n++;
    if (!d->by_name_stale && n == d->nby_name)
        return;
    d->by_name = xrealloc(d->by_name, (n + 1) * sizeof(*d->by_name));
    n = 0;
    for (struct app_rt *a = srv->apps; a; a = a->next)
        d->by_name[n++] = a;
    qsort(d->by_name, n, sizeof(*d->by_name), by_name);
    d->nby_name = n;
    d->by_name_stale = false;
}

static bool match(const struct dash_sub *s, const struct app_rt *a)
{
    return !a->removed && (!s->q[0] || strstr(a->app.name, s->q));
}

static int busier(const void *x, const void *y)
{
    const struct app_rt *a = *(struct app_rt *const *)x, *b = *(struct app_rt *const *)y;
    uint32_t ra = a->dash ? a->dash->sec.requests : 0, rb = b->dash ? b->dash->sec.requests : 0;
    return ra != rb ? (ra < rb ? 1 : -1) : strcmp(a->app.name, b->app.name);
}

/* The overview: the server, a page of the apps (all in config order, or the active ones busiest first). */
static void ev_overview(struct server *srv, struct dash_sub *s, struct sbuf *b)
{
    struct dash *d = srv->dash;
    uint64_t now = kago__serve_now_ms();
    j_server(srv, b);
    sbuf_adds(b, ",\"live\":");
    j_srv_sample(b, &d->sec);
    if (!s->started) {
        sbuf_adds(b, ",\"history\":[");
        for (unsigned k = 0; k < d->ring.n; k++) {
            j_srv_sample(b, kago__dash_srv_ring_at(&d->ring, k));
            if (k + 1 < d->ring.n)
                sbuf_add(b, ",", 1);
        }
        sbuf_adds(b, "]");
    }
    size_t total = 0, shown = 0;
    sbuf_adds(b, ",\"rows\":[");
    if (s->active_only) {
        struct app_rt **v = xcalloc(d->nactive + 1, sizeof(*v));
        size_t n = 0;
        for (struct dash_app *da = d->active; da; da = da->next)
            if (match(s, da->app))
                v[n++] = da->app;
        qsort(v, n, sizeof(*v), busier);
        for (size_t i = s->offset; i < n && shown < s->limit; i++, shown++) {
            if (shown)
                sbuf_add(b, ",", 1);
            j_app_row(b, v[i], now);
        }
        total = n;
        free(v);
    } else {
        sort_apps(srv, d);
        for (size_t i = 0; i < d->nby_name; i++) {
            struct app_rt *a = d->by_name[i];
            if (!match(s, a))
                continue;
            if (total++ < s->offset || shown >= s->limit)
                continue;
            if (shown++)
                sbuf_add(b, ",", 1);
            j_app_row(b, a, now);
        }
    }
    bprintf(b, "],\"total\":%zu,\"offset\":%u,\"limit\":%u", total, s->offset, s->limit);
}

static void j_hist(struct sbuf *b, const char *name, const uint64_t *h)
{
    bprintf(b, "\"%s\":[", name);
    for (int i = 0; i < POOL_HIST_BUCKETS; i++)
        bprintf(b, "%llu%s", (unsigned long long)(h ? h[i] : 0), i + 1 < POOL_HIST_BUCKETS ? "," : "]");
}

/* An instance's CPU use over the last second it was looked at (100: one CPU). */
static double inst_cpu_pct(struct instance *inst, uint64_t now)
{
    double pct = inst->dash_cpu_pct;
    if (inst->dash_cpu_ms && now > inst->dash_cpu_ms && inst->stats.cpu_usage_us >= inst->dash_cpu_us)
        pct = (inst->stats.cpu_usage_us - inst->dash_cpu_us) / (10.0 * (now - inst->dash_cpu_ms));
    inst->dash_cpu_us = inst->stats.cpu_usage_us;
    inst->dash_cpu_ms = now;
    inst->dash_cpu_pct = pct;
    return pct;
}

/* A CPU limit as a percentage of one core (0: none). */
static double cpu_limit_pct(const struct kago_limits *l)
{
    return l->cpu_quota_us > 0 ? 100.0 * l->cpu_quota_us / (l->cpu_period_us > 0 ? l->cpu_period_us : 100000)
                               : 0;
}

/* The instances, with their usage read now; *mem and *cpu get the sums (bytes, %). */
static void j_instances(struct app_rt *a, struct sbuf *b, uint64_t now, uint64_t *mem, double *cpu)
{
    sbuf_adds(b, ",\"instances\":[");
    for (struct pool_inst *pi = a->pool.insts; pi; pi = pi->next) {
        struct instance *inst = pi->data;
        struct kago_error *err = NULL;
        if (inst->c && pi->state != POOL_FROZEN && kago_container_usage(inst->c, &inst->stats, &err) < 0)
            kago_error_free(err);
        double pct = inst->c && pi->state != POOL_FROZEN ? inst_cpu_pct(inst, now) : 0.0;
        int64_t used = inst->c ? inst->stats.memory_current : 0;
        /* its limits now: a.scale_up's steps and live changes included (the app's, for another node's) */
        const struct kago_limits *l = inst->c ? &kago_container_spec(inst->c)->limits : &a->app.spec.limits;
        *cpu += pct;
        *mem += used > 0 ? (uint64_t)used : 0;
        sbuf_adds(b, "{\"name\":");
        jstr(b, inst->name);
        bprintf(
            b,
            ",\"state\":\"%s\",\"tier\":\"%s\",\"age_s\":%.1f,\"served\":%llu,\"in_flight\":%u,"
            "\"cpu_pct\":%.1f,\"cpu_limit_pct\":%.0f,\"memory\":%lld,\"memory_limit\":%lld,\"pinned\":%s}",
            kago__pool_state_name(pi->state), pi->tier == POOL_TIER_RESTORE ? "restore" : "cold",
            (now - pi->created) / 1000.0, (unsigned long long)pi->served, pi->inflight, pct, cpu_limit_pct(l),
            (long long)used, (long long)(l->memory > 0 ? l->memory : 0), pi->pinned ? "true" : "false");
        if (pi->next)
            sbuf_add(b, ",", 1);
    }
    sbuf_adds(b, "]");
}

/* The app's last log lines (<root>/logs/<app>/current.log), when the file changed since last sent. */
static void j_log(struct server *srv, struct app_rt *a, struct dash_sub *s, struct sbuf *b)
{
    cleanup_free char *path = xasprintf("%s/logs/%s/current.log", srv->opts.root, a->app.name);
    struct stat st;
    int64_t size = stat(path, &st) == 0 ? (int64_t)st.st_size : -1;
    if (size == s->log_size)
        return;
    s->log_size = size;
    sbuf_adds(b, ",\"log\":[");
    cleanup_close int fd = size > 0 ? open(path, O_RDONLY | O_CLOEXEC) : -1;
    char buf[8192];
    off_t off = size > (int64_t)sizeof(buf) - 1 ? size - (off_t)sizeof(buf) + 1 : 0;
    ssize_t n = fd >= 0 ? pread(fd, buf, sizeof(buf) - 1, off) : 0;
    if (n > 0) {
        const char *p = buf, *end = buf + n;
        if (off) { /* (a partial first line) */
            const char *nl = memchr(p, '\n', end - p);
            p = nl ? nl + 1 : end;
        }
        const char *lines[40];
        size_t lens[40], k = 0;
        while (p < end) {
            const char *nl = memchr(p, '\n', end - p);
            const char *e = nl ? nl : end;
            lines[k % 40] = p;
            lens[k % 40] = e - p;
            k++;
            p = nl ? nl + 1 : end;
        }
        size_t from = k > 40 ? k - 40 : 0;
        for (size_t i = from; i < k; i++) {
            jstrn(b, lines[i % 40], lens[i % 40]);
            if (i + 1 < k)
                sbuf_add(b, ",", 1);
        }
    }
    sbuf_adds(b, "]");
}

static void ev_app(struct server *srv, struct dash_sub *s, struct sbuf *b)
{
    uint64_t now = kago__serve_now_ms();
    struct app_rt *a = kago__server_app(srv, s->app);
    j_server(srv, b);
    if (!a) {
        sbuf_adds(b, ",\"app\":null");
        return;
    }
    sbuf_adds(b, ",\"app\":");
    j_app_row(b, a, now);
    b->len--; /* (the row's '}': more fields follow) */
    sbuf_adds(b, ",\"hosts\":[");
    for (char **h = a->app.hosts; h && *h; h++) {
        jstr(b, *h);
        if (h[1])
            sbuf_add(b, ",", 1);
    }
    const struct kago_limits *l = &a->app.spec.limits;
    bprintf(b, "],\"min\":%u,\"max\":%u,\"concurrency\":%u,\"cpu_limit_pct\":%.0f,\"memory_limit\":%lld,",
            a->pool.cfg.min, a->pool.cfg.max, a->pool.cfg.concurrency, cpu_limit_pct(l),
            (long long)(l->memory > 0 ? l->memory : 0));
    sbuf_adds(b, "\"last_error\":");
    if (a->start_error)
        jstr(b, a->start_error);
    else
        sbuf_adds(b, "null");
    sbuf_adds(b, ",\"cold_hist\":{\"bounds_ms\":[");
    for (int i = 0; i < POOL_HIST_BUCKETS - 1; i++)
        bprintf(b, "%g,", kago__pool_hist_bounds_ms[i]);
    sbuf_adds(b, "null],\"thaw_bounds_ms\":[");
    for (int i = 0; i < POOL_HIST_BUCKETS - 1; i++)
        bprintf(b, "%g,", kago__pool_thaw_bounds_ms[i]);
    sbuf_adds(b, "null],");
    const struct pool_hists *h = a->pool.hist;
    j_hist(b, "start", h ? h->cold : NULL);
    sbuf_add(b, ",", 1);
    j_hist(b, "restore", h ? h->restore : NULL);
    sbuf_add(b, ",", 1);
    j_hist(b, "thaw", h ? h->thaw : NULL);
    sbuf_adds(b, "}}");
    uint64_t mem = 0;
    double cpu = 0;
    j_instances(a, b, now, &mem, &cpu);
    sbuf_adds(b, ",\"live\":");
    if (a->dash) { /* (with the usage just read: the page plots it every second) */
        struct dash_sample live = a->dash->sec;
        live.memory_kib = (uint32_t)(mem >> 10);
        live.cpu_pct = (float)cpu;
        j_sample(b, &live);
    } else
        bprintf(
            b,
            "{\"t\":%llu,\"requests\":0,\"errors\":0,\"p50_ms\":0,\"p99_ms\":0,\"starts\":0,\"restores\":0,"
            "\"thaws\":0,\"instances\":0,\"memory\":0,\"cpu_pct\":0}",
            (unsigned long long)(now - srv->started_ms) / 1000);
    if (!s->started) {
        sbuf_adds(b, ",\"history\":[");
        for (unsigned k = 0; a->dash && k < a->dash->ring.n; k++) {
            j_sample(b, kago__dash_ring_at(&a->dash->ring, k));
            if (k + 1 < a->dash->ring.n)
                sbuf_add(b, ",", 1);
        }
        sbuf_adds(b, "]");
    }
    j_log(srv, a, s, b);
}

/* One event to s: its page's JSON (an app's, or the overview's), after prefix (SSE fields). */
static void send_event(struct server *srv, struct dash_sub *s, struct sbuf *b, const char *prefix)
{
    b->len = 0;
    sbuf_adds(b, prefix);
    sbuf_adds(b, "data: {");
    if (s->app[0])
        ev_app(srv, s, b);
    else
        ev_overview(srv, s, b);
    sbuf_adds(b, "}\n\n");
    if (s->send(s, b->data, b->len))
        s->started = true;
}

static void send_events(struct server *srv)
{
    struct dash *d = srv->dash;
    struct sbuf b = {0};
    for (struct dash_sub *s = d->subs, *next; s; s = next) {
        next = s->next;
        send_event(srv, s, &b, "");
    }
    sbuf_free(&b);
}

void kago__dash_sub_init(struct dash_sub *s, const char *path)
{
    char v[32];
    *s = (struct dash_sub){.limit = 50, .log_size = -2};
    kago__dash_param(path, "app", s->app, sizeof(s->app));
    kago__dash_param(path, "q", s->q, sizeof(s->q));
    if (kago__dash_param(path, "offset", v, sizeof(v)))
        s->offset = (unsigned)strtoul(v, NULL, 10);
    if (kago__dash_param(path, "limit", v, sizeof(v)))
        s->limit = (unsigned)strtoul(v, NULL, 10);
    if (!s->limit || s->limit > 500)
        s->limit = 50;
    s->active_only = kago__dash_param(path, "active", v, sizeof(v)) && strcmp(v, "0") != 0;
}

void kago__dash_sse_add(struct server *srv, struct dash_sub *s)
{
    struct dash *d = srv->dash;
    s->prev = NULL;
    s->next = d->subs;
    if (d->subs)
        d->subs->prev = s;
    d->subs = s;
    /* the first event at once (the history), not a second later */
    struct sbuf b = {0};
    send_event(srv, s, &b, "retry: 2000\n");
    sbuf_free(&b);
}

void kago__dash_sse_remove(struct server *srv, struct dash_sub *s)
{
    struct dash *d = srv->dash;
    if (!d || (!s->prev && d->subs != s))
        return; /* (not linked) */
    if (s->prev)
        s->prev->next = s->next;
    else
        d->subs = s->next;
    if (s->next)
        s->next->prev = s->prev;
    s->prev = s->next = NULL;
}
