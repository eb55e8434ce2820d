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
#include "dash.h"
#include "serve_int.h"
#include "util.h"

#define ADMIN_MAX_REQ 4096

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

struct metrics_ctx {
    struct server *srv;
    struct app_rt *only;   /* ?app=NAME: that app, every series of it */
    bool full;             /* zeros and histograms too (only) */
    bool app_hists;        /* histograms per app (full, or --metrics-app-histograms), not their sum */
    struct pool_hists sum; /* without app_hists: every app's histograms summed once, at the scrape's start */
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
    /* GET /metrics and /ps, written in slices (slice_more) */
    struct metrics_ctx m;
    size_t fam;         /* the family being written (NFAMILIES: done) */
    bool in_fam;        /* its header is written */
    struct app_rt *cur; /* the next app of it (or of /ps); NULL: its apps are done */
    /* a body written in slices (/metrics, /ps): fills the next one into body; true when it was the last */
    bool (*fill)(struct admin_conn *ac);
    bool cur_ref; /* cur is held (a ref) while the slice waits */
    bool chunked; /* HTTP/1.1: Transfer-Encoding: chunked (1.0: the end of the body is the close) */
    bool last;    /* the slice being written is the last */
    char chunk_head[24];
    struct sbuf body;
    /* GET /dash/events: the dashboard's event stream (dash.c) */
    struct dash_sub sub;
    bool sse, sse_writing;
    struct reload_waiter reload;      /* POST /reload: answered once the reload is applied or failed */
    struct admin_conn *next, **pprev; /* the server's admin connections (kago__admin_sweep) */
    uint64_t since_ms;                /* accepted: its request must be whole within ADMIN_REQ_MS */
};

#define ADMIN_REQ_MS    10000 /* as --header-timeout: a request head must arrive within this */
#define ADMIN_MAX_CONNS 256   /* admin connections at once; more are closed as they come */

static void printf_buf(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void printf_buf(struct sbuf *b, const char *fmt, ...)
{
    va_list ap;
    sbuf_reserve(b, 128);
    va_start(ap, fmt);
    int n = vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    if (n >= 0 && (size_t)n >= b->cap - b->len) {
        char *p = sbuf_reserve(b, n + 1);
        va_start(ap, fmt);
        vsnprintf(p, n + 1, fmt, ap);
        va_end(ap);
    }
    if (n > 0)
        b->len += n;
}

static void refresh_stats(struct instance *inst)
{
    struct kago_error *err = NULL;
    if (inst->c && kago_container_usage(inst->c, &inst->stats, &err) < 0)
        kago_error_free(err);
}

/* --- /metrics ----------------------------------------------------------------------------------
 * Prometheus text, one family after the other. Per app there are counters and gauges only, and in
 * the whole scrape an app's series whose value is 0 are left out (but kago_instances{state="ready"} and
 * kago_cold_starts_total): an idle app costs two lines. The histograms are summed over all apps, per
 * app only with --metrics-app-histograms. /metrics?app=NAME gives every series of that app, zeros and
 * histograms included, and nothing else. The body is written in slices of at most METRICS_SLICE bytes
 * or METRICS_SLICE_US of work, one per loop iteration, so other requests are served in between. */

#define METRICS_SLICE    (128 * 1024)
#define METRICS_SLICE_US 2000

/* lab: the labels before le="" (e.g. app="x",tier="cold"), or "" */
static void histogram_lab(struct sbuf *b, const char *name, const char *lab, const uint64_t *hist,
                          const double *bounds_ms, double sum_ms)
{
    const char *sep = *lab ? "," : "";
    uint64_t cum = 0;
    for (int i = 0; i < POOL_HIST_BUCKETS; i++) {
        cum += hist[i];
        if (i == POOL_HIST_BUCKETS - 1)
            printf_buf(b, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, lab, sep, (unsigned long long)cum);
        else
            printf_buf(b, "%s_bucket{%s%sle=\"%g\"} %llu\n", name, lab, sep, bounds_ms[i] / 1000.0,
                       (unsigned long long)cum);
    }
    if (*lab) {
        printf_buf(b, "%s_sum{%s} %g\n", name, lab, sum_ms / 1000.0);
        printf_buf(b, "%s_count{%s} %llu\n", name, lab, (unsigned long long)cum);
    } else {
        printf_buf(b, "%s_sum %g\n%s_count %llu\n", name, sum_ms / 1000.0, name, (unsigned long long)cum);
    }
}

struct family {
    const char *name, *type, *help;
    size_t off;  /* with app == NULL and all == NULL: a uint64_t counter of struct pool */
    bool always; /* printed for every app even when 0 */
    void (*app)(const struct metrics_ctx *m, struct sbuf *b, const struct family *f, struct app_rt *a);
    void (*all)(const struct metrics_ctx *m, struct sbuf *b, const struct family *f); /* after the apps */
};

static void app_u64(const struct metrics_ctx *m, struct sbuf *b, const struct family *f, const char *app,
                    uint64_t v)
{
    if (v || f->always || m->full)
        printf_buf(b, "%s{app=\"%s\"} %llu\n", f->name, app, (unsigned long long)v);
}

static void f_pool_counter(const struct metrics_ctx *m, struct sbuf *b, const struct family *f,
                           struct app_rt *a)
{
    app_u64(m, b, f, a->app.name, *(const uint64_t *)((const char *)&a->pool + f->off));
}

static void f_requests(const struct metrics_ctx *m, struct sbuf *b, const struct family *f, struct app_rt *a)
{
    for (int i = 0; i < STATUS_SLOTS; i++)
        if (a->m.by_status[i]) {
            if (status_codes[i])
                printf_buf(b, "%s{app=\"%s\",code=\"%d\"} %llu\n", f->name, a->app.name, status_codes[i],
                           (unsigned long long)a->m.by_status[i]);
            else
                printf_buf(b, "%s{app=\"%s\",code=\"other\"} %llu\n", f->name, a->app.name,
                           (unsigned long long)a->m.by_status[i]);
        }
}

static void f_inflight(const struct metrics_ctx *m, struct sbuf *b, const struct family *f, struct app_rt *a)
{
    app_u64(m, b, f, a->app.name, a->m.inflight);
}

static void f_upstream_errors(const struct metrics_ctx *m, struct sbuf *b, const struct family *f,
                              struct app_rt *a)
{
    app_u64(m, b, f, a->app.name, a->m.upstream_errors);
}

static void f_queue(const struct metrics_ctx *m, struct sbuf *b, const struct family *f, struct app_rt *a)
{
    app_u64(m, b, f, a->app.name, a->pool.npending);
}

static void f_fail_streak(const struct metrics_ctx *m, struct sbuf *b, const struct family *f,
                          struct app_rt *a)
{
    app_u64(m, b, f, a->app.name, a->pool.fail_streak);
}

static void f_backoff(const struct metrics_ctx *m, struct sbuf *b, const struct family *f, struct app_rt *a)
{
    uint64_t left = kago__pool_backoff_left(&a->pool, kago__serve_now_ms());
    if (left || m->full)
        printf_buf(b, "%s{app=\"%s\"} %.3f\n", f->name, a->app.name, left / 1000.0);
}

static void f_instances(const struct metrics_ctx *m, struct sbuf *b, const struct family *f, struct app_rt *a)
{
    for (int s = 0; s < POOL_NSTATES; s++) {
        unsigned n = kago__pool_count(&a->pool, s);
        if (n || s == POOL_READY || m->full)
            printf_buf(b, "%s{app=\"%s\",state=\"%s\"} %u\n", f->name, a->app.name, kago__pool_state_name(s),
                       n);
    }
}

static const uint64_t zero_hist[POOL_HIST_BUCKETS];

static void f_cold_hist(const struct metrics_ctx *m, struct sbuf *b, const struct family *f, struct app_rt *a)
{
    const struct pool_hists *h = a->pool.hist;
    if (!m->app_hists || (!h && !m->full)) /* (an app never started has none but with ?app=) */
        return;
    char lab[160];
    snprintf(lab, sizeof(lab), "app=\"%s\",tier=\"cold\"", a->app.name);
    histogram_lab(b, f->name, lab, h ? h->cold : zero_hist, kago__pool_hist_bounds_ms,
                  h ? h->cold_sum_ms : 0);
    snprintf(lab, sizeof(lab), "app=\"%s\",tier=\"restore\"", a->app.name);
    histogram_lab(b, f->name, lab, h ? h->restore : zero_hist, kago__pool_hist_bounds_ms,
                  h ? h->restore_sum_ms : 0);
}

static void f_thaw_hist(const struct metrics_ctx *m, struct sbuf *b, const struct family *f, struct app_rt *a)
{
    const struct pool_hists *h = a->pool.hist;
    if (!m->app_hists || (!h && !m->full))
        return;
    char lab[160];
    snprintf(lab, sizeof(lab), "app=\"%s\"", a->app.name);
    histogram_lab(b, f->name, lab, h ? h->thaw : zero_hist, kago__pool_thaw_bounds_ms,
                  h ? h->thaw_sum_ms : 0);
}

/* The histograms' sums over every app (the whole scrape without --metrics-app-histograms). */
static void sum_hists(struct server *srv, struct pool_hists *sum)
{
    memset(sum, 0, sizeof(*sum));
    for (struct app_rt *a = srv->apps; a; a = a->next) {
        const struct pool_hists *h = a->pool.hist;
        if (!h)
            continue;
        for (int i = 0; i < POOL_HIST_BUCKETS; i++) {
            sum->cold[i] += h->cold[i];
            sum->restore[i] += h->restore[i];
            sum->thaw[i] += h->thaw[i];
        }
        sum->cold_sum_ms += h->cold_sum_ms;
        sum->restore_sum_ms += h->restore_sum_ms;
        sum->thaw_sum_ms += h->thaw_sum_ms;
    }
}

static void all_cold_hist(const struct metrics_ctx *m, struct sbuf *b, const struct family *f)
{
    if (m->app_hists)
        return;
    const struct pool_hists *sum = &m->sum;
    histogram_lab(b, f->name, "tier=\"cold\"", sum->cold, kago__pool_hist_bounds_ms, sum->cold_sum_ms);
    histogram_lab(b, f->name, "tier=\"restore\"", sum->restore, kago__pool_hist_bounds_ms,
                  sum->restore_sum_ms);
}

static void all_thaw_hist(const struct metrics_ctx *m, struct sbuf *b, const struct family *f)
{
    if (m->app_hists)
        return;
    histogram_lab(b, f->name, "", m->sum.thaw, kago__pool_thaw_bounds_ms, m->sum.thaw_sum_ms);
}

static void f_inst_cpu(const struct metrics_ctx *m, struct sbuf *b, const struct family *f, struct app_rt *a)
{
    for (struct pool_inst *pi = a->pool.insts; pi; pi = pi->next) {
        struct instance *inst = pi->data;
        refresh_stats(inst); /* (kago_instance_memory_bytes, printed a moment later, uses it too) */
        printf_buf(b, "%s{app=\"%s\",instance=\"%s\"} %.6f\n", f->name, a->app.name, inst->name,
                   inst->stats.cpu_usage_us / 1e6);
    }
}

static void f_inst_mem(const struct metrics_ctx *m, struct sbuf *b, const struct family *f, struct app_rt *a)
{
    for (struct pool_inst *pi = a->pool.insts; pi; pi = pi->next) {
        struct instance *inst = pi->data;
        printf_buf(b, "%s{app=\"%s\",instance=\"%s\"} %lld\n", f->name, a->app.name, inst->name,
                   (long long)inst->stats.memory_current);
    }
}

/* a.scale_up (scaler.c): each instance's limits now (apps with scale_up only), and the steps taken */
static void f_inst_limit(const struct metrics_ctx *m, struct sbuf *b, const struct family *f,
                         struct app_rt *a)
{
    bool cpu = !strcmp(f->name, "kago_instance_cpu_limit_cores");
    for (struct pool_inst *pi = kago__scaleup_on(&a->app.scale_up) ? a->pool.insts : NULL; pi;
         pi = pi->next) {
        int64_t c, mem;
        kago__scaler_limits(pi->data, &c, &mem);
        if (cpu ? c > 0 : mem > 0)
            printf_buf(
                b, cpu ? "%s{app=\"%s\",instance=\"%s\"} %.2f\n" : "%s{app=\"%s\",instance=\"%s\"} %.0f\n",
                f->name, a->app.name, ((struct instance *)pi->data)->name, cpu ? c / 100000.0 : (double)mem);
    }
}

static void f_scale_steps(const struct metrics_ctx *m, struct sbuf *b, const struct family *f,
                          struct app_rt *a)
{
    app_u64(m, b, f, a->app.name, *(const uint64_t *)((const char *)a + f->off));
}

static void all_scale_up(const struct metrics_ctx *m, struct sbuf *b, const struct family *f)
{
    int64_t cpu, mem;
    kago__scaler_totals(m->srv, &cpu, &mem);
    bool is_cpu = strstr(f->name, "cpu") != NULL;
    printf_buf(b, is_cpu ? "%s %.2f\n" : "%s %.0f\n", f->name, is_cpu ? cpu / 100000.0 : (double)mem);
}

static void all_u64(struct sbuf *b, const struct family *f, uint64_t v)
{
    printf_buf(b, "%s %llu\n", f->name, (unsigned long long)v);
}

static void all_reaped(const struct metrics_ctx *m, struct sbuf *b, const struct family *f)
{
    all_u64(b, f, m->srv->reaped);
}

static void all_frozen(const struct metrics_ctx *m, struct sbuf *b, const struct family *f)
{
    uint64_t frozen = 0;
    for (struct app_rt *a = m->srv->apps; a; a = a->next)
        frozen += kago__pool_frozen_bytes(&a->pool);
    all_u64(b, f, frozen);
}

static void all_budget(const struct metrics_ctx *m, struct sbuf *b, const struct family *f)
{
    all_u64(b, f, m->srv->opts.frozen_memory_budget);
}

static void all_connections(const struct metrics_ctx *m, struct sbuf *b, const struct family *f)
{
    all_u64(b, f, m->srv->nclients);
}

static void all_tls_handshakes(const struct metrics_ctx *m, struct sbuf *b, const struct family *f)
{
    const struct tls_stats *st = kago__tls_stats(m->srv->tls);
    printf_buf(b, "%s{result=\"ok\"} %llu\n%s{result=\"failed\"} %llu\n", f->name,
               (unsigned long long)st->handshakes_ok, f->name,
               (unsigned long long)__atomic_load_n(&st->handshakes_failed, __ATOMIC_RELAXED));
}

static void all_tls_resumed(const struct metrics_ctx *m, struct sbuf *b, const struct family *f)
{
    all_u64(b, f, kago__tls_stats(m->srv->tls)->resumed);
}

static void all_h2_conns(const struct metrics_ctx *m, struct sbuf *b, const struct family *f)
{
    all_u64(b, f, m->srv->h2.conns);
}

static void all_h2_streams(const struct metrics_ctx *m, struct sbuf *b, const struct family *f)
{
    all_u64(b, f, m->srv->h2.streams);
}

static void all_send_timeouts(const struct metrics_ctx *m, struct sbuf *b, const struct family *f)
{
    all_u64(b, f, __atomic_load_n(&m->srv->send_timeouts, __ATOMIC_RELAXED));
}

static void all_read_timeouts(const struct metrics_ctx *m, struct sbuf *b, const struct family *f)
{
    all_u64(b, f, __atomic_load_n(&m->srv->read_timeouts, __ATOMIC_RELAXED));
}

static void all_h2_calm(const struct metrics_ctx *m, struct sbuf *b, const struct family *f)
{
    all_u64(b, f, m->srv->h2.goaways_calm);
}

static void all_tls_reloads(const struct metrics_ctx *m, struct sbuf *b, const struct family *f)
{
    const struct tls_stats *st = kago__tls_stats(m->srv->tls);
    printf_buf(b, "%s{result=\"ok\"} %llu\n%s{result=\"failed\"} %llu\n", f->name,
               (unsigned long long)st->reloads, f->name, (unsigned long long)st->reload_failures);
}

static void all_tls_loops(const struct metrics_ctx *m, struct sbuf *b, const struct family *f)
{
    unsigned loops;
    uint64_t handed;
    kago__hs_stats(m->srv, &loops, &handed);
    all_u64(b, f, loops);
}

static void all_request_loops(const struct metrics_ctx *m, struct sbuf *b, const struct family *f)
{
    all_u64(b, f, m->srv->nshards > 1 ? m->srv->nshards - 1 : 1);
}

static void all_tls_handed(const struct metrics_ctx *m, struct sbuf *b, const struct family *f)
{
    unsigned loops;
    uint64_t handed;
    kago__hs_stats(m->srv, &loops, &handed);
    all_u64(b, f, handed);
}

static void all_tls_certs(const struct metrics_ctx *m, struct sbuf *b, const struct family *f)
{
    all_u64(b, f, kago__tls_store_count(m->srv->tls_store));
}

static void all_warm_starts(const struct metrics_ctx *m, struct sbuf *b, const struct family *f)
{
    uint64_t hits, misses;
    unsigned ready;
    kago__warm_stats(m->srv, &hits, &misses, &ready);
    printf_buf(b, "%s{result=\"hit\"} %llu\n%s{result=\"miss\"} %llu\n", f->name, (unsigned long long)hits,
               f->name, (unsigned long long)misses);
}

static void all_warm_ready(const struct metrics_ctx *m, struct sbuf *b, const struct family *f)
{
    uint64_t hits, misses;
    unsigned ready;
    kago__warm_stats(m->srv, &hits, &misses, &ready);
    all_u64(b, f, ready);
}

static void all_started(const struct metrics_ctx *m, struct sbuf *b, const struct family *f)
{
    all_u64(b, f, m->srv->total_instances);
}

static void all_starts_now(const struct metrics_ctx *m, struct sbuf *b, const struct family *f)
{
    all_u64(b, f, !strcmp(f->name, "kago_starts_waiting") ? m->srv->startq_len : m->srv->starting);
}

static void all_deleting(const struct metrics_ctx *m, struct sbuf *b, const struct family *f)
{
    all_u64(b, f, m->srv->ndeleting + m->srv->del_busy);
}

static void all_loops_raised(const struct metrics_ctx *m, struct sbuf *b, const struct family *f)
{
    all_u64(b, f, m->srv->loops_raised);
}

/* --acme-directory only (acme.c) */
static void all_acme_orders(const struct metrics_ctx *m, struct sbuf *b, const struct family *f)
{
    const struct acme_stats *st = kago__acme_stats(m->srv->acme);
    const char *kinds[] = {"new", "new", "renew", "renew"}, *results[] = {"ok", "failed", "ok", "failed"};
    uint64_t v[] = {st->orders_ok, st->orders_failed, st->renewals_ok, st->renewals_failed};
    for (int i = 0; i < 4; i++)
        printf_buf(b, "%s{kind=\"%s\",result=\"%s\"} %llu\n", f->name, kinds[i], results[i],
                   (unsigned long long)v[i]);
}

static void all_acme_refused(const struct metrics_ctx *m, struct sbuf *b, const struct family *f)
{
    const struct acme_stats *st = kago__acme_stats(m->srv->acme);
    printf_buf(b,
               "%s{reason=\"not_routed\"} %llu\n%s{reason=\"ask\"} %llu\n%s{reason=\"backoff\"} %llu\n"
               "%s{reason=\"bad_name\"} %llu\n",
               f->name, (unsigned long long)st->refused_unrouted, f->name,
               (unsigned long long)st->refused_ask, f->name, (unsigned long long)st->backoff_skipped, f->name,
               (unsigned long long)st->refused_bad_name);
}

static void all_acme_rate_limited(const struct metrics_ctx *m, struct sbuf *b, const struct family *f)
{
    all_u64(b, f, kago__acme_stats(m->srv->acme)->rate_limited);
}

static void all_acme_held(const struct metrics_ctx *m, struct sbuf *b, const struct family *f)
{
    all_u64(b, f, kago__acme_stats(m->srv->acme)->held);
}

static void all_acme_challenges(const struct metrics_ctx *m, struct sbuf *b, const struct family *f)
{
    all_u64(b, f, kago__acme_stats(m->srv->acme)->challenges_served);
}

static void all_acme_certs(const struct metrics_ctx *m, struct sbuf *b, const struct family *f)
{
    all_u64(b, f, kago__acme_stats(m->srv->acme)->certificates);
}

static void all_acme_pending(const struct metrics_ctx *m, struct sbuf *b, const struct family *f)
{
    all_u64(b, f, kago__acme_stats(m->srv->acme)->pending);
}

static void all_cluster_nodes(const struct metrics_ctx *m, struct sbuf *b, const struct family *f)
{
    struct cluster_stats st;
    kago__cluster_stats(m->srv, &st);
    all_u64(b, f, st.nodes);
}

static void all_cluster_up(const struct metrics_ctx *m, struct sbuf *b, const struct family *f)
{
    struct cluster_stats st;
    kago__cluster_stats(m->srv, &st);
    all_u64(b, f, st.etcd_up);
}

static void all_cluster_rev(const struct metrics_ctx *m, struct sbuf *b, const struct family *f)
{
    struct cluster_stats st;
    kago__cluster_stats(m->srv, &st);
    all_u64(b, f, (uint64_t)st.revision);
}

static void all_cluster_more(const struct metrics_ctx *m, struct sbuf *b, const struct family *f)
{
    struct cluster_stats st;
    kago__cluster_stats(m->srv, &st);
    if (!strcmp(f->name, "kago_cluster_etcd_rtt_seconds"))
        printf_buf(b, "%s %.6f\n", f->name, st.rtt_us / 1e6);
    else if (!strcmp(f->name, "kago_cluster_watch_lag_revisions"))
        all_u64(b, f, (uint64_t)st.lag);
    else if (!strcmp(f->name, "kago_cluster_forwarded_total"))
        all_u64(b, f, st.forwarded);
    else
        all_u64(b, f, st.writes);
}

static void all_apps(const struct metrics_ctx *m, struct sbuf *b, const struct family *f)
{
    uint64_t n = 0;
    for (struct app_rt *a = m->srv->apps; a; a = a->next)
        n += !a->removed;
    all_u64(b, f, n);
}

#define POOL_COUNTER(n, h, field)                                                                            \
    {                                                                                                        \
        n, "counter", h, offsetof(struct pool, field), false, f_pool_counter, NULL                           \
    }
#define SERVER_WIDE(n, t, h, fn)                                                                             \
    {                                                                                                        \
        n, t, h, 0, false, NULL, fn                                                                          \
    }

static const struct family families[] = {
    {"kago_requests_total", "counter", "Requests answered, by app and status.", 0, false, f_requests, NULL},
    {"kago_requests_in_flight", "gauge", "Requests being answered.", 0, false, f_inflight, NULL},
    {"kago_queue_depth", "gauge", "Requests held waiting for an instance to become ready.", 0, false, f_queue,
     NULL},
    {"kago_instances", "gauge", "Instances by state.", 0, false, f_instances, NULL},
    {"kago_cold_starts_total", "counter", "Instances started (cold or restored) for the app.",
     offsetof(struct pool, cold_starts), true, f_pool_counter, NULL},
    {"kago_cold_start_seconds", "histogram",
     "Time from starting an instance to its readiness, by tier (cold: booted; restore: from the app's CRIU "
     "image); summed over all apps unless per app.",
     0, false, f_cold_hist, all_cold_hist},
    POOL_COUNTER("kago_checkpoints_total", "Instances imaged with CRIU (checkpoint :after_ready).",
                 checkpoints),
    POOL_COUNTER("kago_checkpoint_failures_total", "Checkpoints that failed (the app stays on cold starts).",
                 checkpoint_failures),
    POOL_COUNTER("kago_restores_total", "Instances started by restoring the app's CRIU image.", restores),
    POOL_COUNTER("kago_restore_failures_total", "Restores that failed (a cold start was made instead).",
                 restore_failures),
    SERVER_WIDE("kago_adopted_reaped_total", "counter", "Adopted processes reaped as a child subreaper.",
                all_reaped),
    POOL_COUNTER(
        "kago_stops_at_once_total",
        "Instances ended with SIGKILL at their stop signal, with no stop grace: the init of their pid "
        "namespace neither catches nor ignores it (the kernel discards it) and no other process runs.",
        stops_at_once),
    POOL_COUNTER("kago_freezes_total", "Idle instances frozen.", freezes),
    POOL_COUNTER("kago_thaws_total", "Frozen instances thawed to serve requests (no start).", thaws),
    POOL_COUNTER("kago_thaw_failures_total", "Thaws that failed (the instance was killed).", thaw_failures),
    POOL_COUNTER("kago_frozen_expired_total", "Frozen instances stopped after idle for: or lifetime.",
                 frozen_expired),
    POOL_COUNTER("kago_frozen_budget_stops_total",
                 "Frozen instances stopped to keep within --frozen-memory-budget.", budget_stops),
    {"kago_thaw_seconds", "histogram",
     "Time to thaw a frozen instance for a request; summed over all apps unless per app.", 0, false,
     f_thaw_hist, all_thaw_hist},
    SERVER_WIDE("kago_frozen_memory_bytes", "gauge", "Memory held by frozen instances (all apps).",
                all_frozen),
    SERVER_WIDE("kago_frozen_memory_budget_bytes", "gauge", "--frozen-memory-budget.", all_budget),
    POOL_COUNTER("kago_start_failures_total",
                 "Instances that never became ready (exec failure, exit before ready, readiness timeout).",
                 start_failures),
    {"kago_start_failures_in_a_row", "gauge", "Failed starts since the app last served a while.", 0, false,
     f_fail_streak, NULL},
    {"kago_backoff_seconds", "gauge",
     "Time left before the app may be started again (its requests get 503 meanwhile).", 0, false, f_backoff,
     NULL},
    {"kago_upstream_errors_total", "counter", "Requests that failed on the way to or from an instance.", 0,
     false, f_upstream_errors, NULL},
    POOL_COUNTER("kago_rejected_total", "Requests refused with 503 (queue full, backoff, start failed).",
                 rejected),
    {"kago_instance_cpu_seconds_total", "counter", "CPU time used by an instance.", 0, false, f_inst_cpu,
     NULL},
    {"kago_instance_memory_bytes", "gauge", "Memory used by an instance.", 0, false, f_inst_mem, NULL},
    {"kago_instance_cpu_limit_cores", "gauge", "An instance's CPU limit now (apps with a.scale_up).", 0,
     false, f_inst_limit, NULL},
    {"kago_instance_memory_limit_bytes", "gauge", "An instance's memory limit now (apps with a.scale_up).", 0,
     false, f_inst_limit, NULL},
    {"kago_scale_up_raises_total", "counter", "Steps up of an instance's limits (a.scale_up).",
     offsetof(struct app_rt, su_raises), false, f_scale_steps, NULL},
    {"kago_scale_up_lowers_total", "counter",
     "Steps down of an instance's limits (idle, or for a busier app).", offsetof(struct app_rt, su_lowers),
     false, f_scale_steps, NULL},
    {"kago_scale_up_refused_total", "counter",
     "Raises refused (or cut short) by --budget-cpu/--budget-memory.", offsetof(struct app_rt, su_denied),
     false, f_scale_steps, NULL},
    SERVER_WIDE("kago_scale_up_cpu_cores", "gauge", "CPU limits of all instances of apps with a.scale_up.",
                all_scale_up),
    SERVER_WIDE("kago_scale_up_memory_bytes", "gauge",
                "Memory limits of all instances of apps with a.scale_up.", all_scale_up),
    SERVER_WIDE("kago_apps", "gauge", "Apps configured.", all_apps),
    SERVER_WIDE("kago_connections", "gauge", "Client connections open.", all_connections),
    SERVER_WIDE("kago_send_timeouts_total", "counter",
                "Responses cut because their client took nothing for --send-timeout.", all_send_timeouts),
    SERVER_WIDE("kago_read_timeouts_total", "counter",
                "Responses cut because their app sent nothing more for --response-timeout.",
                all_read_timeouts),
    SERVER_WIDE("kago_instances_started_total", "counter", "Instances started since serve began.",
                all_started),
    SERVER_WIDE("kago_starts_in_flight", "gauge",
                "Instances between their start and readiness (at most --max-starting).", all_starts_now),
    SERVER_WIDE("kago_starts_waiting", "gauge",
                "Starts waiting in the start queue for a --max-starting place.", all_starts_now),
    SERVER_WIDE("kago_instances_deleting", "gauge",
                "Instances ended whose containers wait to be deleted (in the thread pool, one at a time).",
                all_deleting),
    SERVER_WIDE(
        "kago_event_loops_raised", "gauge",
        "1 while serve's event loops run above its own priority (--loop-priority: a storm of starts).",
        all_loops_raised),
    SERVER_WIDE("kago_warm_starts_total", "counter",
                "Cold starts that could use a warm sandbox (--warm), by whether one was ready (hit) or not.",
                all_warm_starts),
    SERVER_WIDE("kago_warm_sandboxes", "gauge", "Warm sandboxes ready for a start (--warm).", all_warm_ready),
    SERVER_WIDE("kago_tls_handshakes_total", "counter",
                "TLS handshakes on the --listen-tls listeners, by result (failed: an error, an alert or the "
                "handshake timeout).",
                all_tls_handshakes),
    SERVER_WIDE("kago_tls_resumed_total", "counter", "TLS handshakes that resumed a session (a ticket).",
                all_tls_resumed),
    SERVER_WIDE(
        "kago_request_loops", "gauge",
        "Event loops that serve requests, each app on one of them (--threads N: N; 1: the first loop).",
        all_request_loops),
    SERVER_WIDE("kago_tls_handshake_loops", "gauge",
                "Event loops that take TLS handshakes (--threads N: N; 0 with one loop).", all_tls_loops),
    SERVER_WIDE(
        "kago_tls_handshakes_handed_total", "counter",
        "Connections a handshake loop handed over (its handshake done: to its app's request loop; held "
        "for a certificate on demand: to the first loop).",
        all_tls_handed),
    SERVER_WIDE("kago_tls_certificates", "gauge", "Certificates loaded (the apps' a.tls and the default).",
                all_tls_certs),
    SERVER_WIDE("kago_tls_reloads_total", "counter",
                "Certificates loaded again because their files changed, by result.", all_tls_reloads),
    /* --acme-directory only (left out without it) */
    SERVER_WIDE("kago_acme_orders_total", "counter",
                "ACME orders finished, by kind (new: a first certificate, renew) and result.",
                all_acme_orders),
    SERVER_WIDE(
        "kago_acme_refused_total", "counter",
        "Handshakes for a host without a certificate that started no order: not routed to an app (and no "
        "--acme-ask), refused by --acme-ask, or in the backoff after a failed order.",
        all_acme_refused),
    SERVER_WIDE("kago_acme_rate_limited_total", "counter", "Orders not started: over --acme-rate.",
                all_acme_rate_limited),
    SERVER_WIDE("kago_acme_handshakes_held_total", "counter",
                "TLS handshakes held while their host's certificate was being obtained.", all_acme_held),
    SERVER_WIDE("kago_acme_challenges_served_total", "counter",
                "HTTP-01 challenge requests answered on the plain listeners.", all_acme_challenges),
    SERVER_WIDE("kago_acme_certificates", "gauge", "Certificates obtained by ACME and in use.",
                all_acme_certs),
    SERVER_WIDE("kago_acme_orders_pending", "gauge", "ACME orders queued or running.", all_acme_pending),
    SERVER_WIDE("kago_h2_connections_total", "counter", "HTTP/2 connections (ALPN h2, or h2c).",
                all_h2_conns),
    SERVER_WIDE("kago_h2_streams_total", "counter", "HTTP/2 streams opened by clients.", all_h2_streams),
    SERVER_WIDE("kago_h2_flood_goaways_total", "counter",
                "HTTP/2 connections ended with GOAWAY for flooding (resets, control frames, HPACK bombs, "
                "unread acknowledgements).",
                all_h2_calm),
    /* --cluster only (left out without it) */
    SERVER_WIDE("kago_cluster_nodes", "gauge", "Nodes registered in etcd (/kago/nodes/).", all_cluster_nodes),
    SERVER_WIDE("kago_cluster_etcd_up", "gauge", "1 while etcd answers and the watch runs, else 0.",
                all_cluster_up),
    SERVER_WIDE("kago_cluster_watch_revision", "gauge", "The etcd revision this node has applied.",
                all_cluster_rev),
    SERVER_WIDE("kago_cluster_etcd_rtt_seconds", "gauge", "Round trip of the last lease keepalive to etcd.",
                all_cluster_more),
    SERVER_WIDE("kago_cluster_watch_lag_revisions", "gauge",
                "Revisions etcd reported (in its last answer) that the watch has not applied yet.",
                all_cluster_more),
    SERVER_WIDE("kago_cluster_forwarded_total", "counter", "Connections opened to other nodes' instances.",
                all_cluster_more),
    SERVER_WIDE("kago_cluster_etcd_writes_total", "counter", "Puts, deletes and txns this node sent to etcd.",
                all_cluster_more),
};
#define NFAMILIES (sizeof families / sizeof families[0])

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

static void ps_app(struct app_rt *a, struct sbuf *b, uint64_t now)
{
    sbuf_adds(b, "{\"name\":");
    json_str(b, a->app.name);
    sbuf_adds(b, ",\"hosts\":[");
    for (char **h = a->app.hosts; h && *h; h++) {
        json_str(b, *h);
        if (h[1])
            sbuf_add(b, ",", 1);
    }
    static const char *const ckpt[] = {"off", "wanted", "checkpointing", "ready", "failed"};
    printf_buf(b,
               "],\"default\":%s,\"removed\":%s,\"loop\":%u,\"pending\":%u,\"in_flight\":%llu,"
               "\"image\":\"%s\",",
               a->app.default_app ? "true" : "false", a->removed ? "true" : "false", a->shard->id,
               a->pool.npending, (unsigned long long)a->m.inflight, ckpt[a->ckpt]);
    ps_app_state(a, b, now);
    kago__scaler_app_json(b, a);
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
                   inst->c ? (int)kago_container_pid(inst->c) : 0, (now - pi->created) / 1000.0, pi->inflight,
                   (unsigned long long)pi->served, inst->stats.cpu_usage_us / 1e6,
                   (long long)inst->stats.memory_current);
        kago__scaler_ps_json(b, inst);
        if (pi->state == POOL_FROZEN)
            printf_buf(b, ",\"frozen_s\":%.1f,\"frozen_memory\":%llu", (now - pi->frozen_at) / 1000.0,
                       (unsigned long long)pi->frozen_bytes);
        sbuf_adds(b, pi->next ? "}," : "}");
    }
    sbuf_adds(b, "]}");
}

/* GET /ps's next slice: apps (each with its instances' CPU and memory read from their cgroups) until the
 * slice is full, then the end. At 10,000 apps and 5,000 instances the whole is megabytes and ten thousand
 * file reads: written in one go it held the loop for hundreds of milliseconds. */
static bool ps_fill(struct admin_conn *ac)
{
    struct sbuf *b = &ac->body;
    uint64_t now = kago__serve_now_ms(), t0 = kago__serve_now_us();
    for (size_t apps = 0;
         ac->cur && (!apps || (b->len < METRICS_SLICE && kago__serve_now_us() - t0 < METRICS_SLICE_US));
         apps++) {
        ps_app(ac->cur, b, now);
        ac->cur = ac->cur->next;
        if (ac->cur)
            sbuf_add(b, ",", 1);
    }
    if (ac->cur)
        return false;
    sbuf_adds(b, "]");
    kago__scaler_server_json(b, ac->srv);
    sbuf_adds(b, "}\n");
    return true;
}

static void on_admin_closed(uv_handle_t *h)
{
    struct admin_conn *ac = h->data;
    if (ac->pprev) {
        *ac->pprev = ac->next;
        if (ac->next)
            ac->next->pprev = ac->pprev;
        ac->srv->nadmin_conns--;
    }
    if (ac->sse)
        kago__dash_sse_remove(ac->srv, &ac->sub);
    if (ac->cur_ref)
        kago__app_unref(ac->cur);
    if (ac->m.only)
        kago__app_unref(ac->m.only);
    kago__server_reload_forget(ac->srv, &ac->reload);
    sbuf_free(&ac->out);
    sbuf_free(&ac->body);
    free(ac);
}

static void slice_more(struct admin_conn *ac);
static void respond(struct admin_conn *ac, int status, const char *ctype, struct sbuf *body);
static void log_safe(char *path);

/* A write's callback (with UV_ECANCELED) also comes while the connection closes: serve stopping in the
 * turn that wrote a reload's answer closed it first (a second uv_close aborted serve). */
static void close_conn(struct admin_conn *ac)
{
    if (!uv_is_closing(&ac->h.handle))
        uv_close(&ac->h.handle, on_admin_closed);
}

static void on_slice_written(uv_write_t *w, int status)
{
    struct admin_conn *ac = w->data;
    if (status < 0 || ac->last)
        close_conn(ac);
    else
        slice_more(ac);
}

/* The next apps of the family being written, then its other lines, then the next family... */
static bool metrics_fill(struct admin_conn *ac)
{
    struct server *srv = ac->srv;
    struct sbuf *b = &ac->body;
    uint64_t t0 = kago__serve_now_us();
    while (ac->fam < NFAMILIES && b->len < METRICS_SLICE &&
           (!b->len || kago__serve_now_us() - t0 < METRICS_SLICE_US)) {
        const struct family *f = &families[ac->fam];
        if (!ac->in_fam) {
            if ((ac->m.only && !f->app) || /* (?app=NAME: that app's series only) */
                (!srv->cluster && !strncmp(f->name, "kago_cluster_", 13)) ||
                (!srv->acme && !strncmp(f->name, "kago_acme_", 10))) {
                ac->fam++;
                continue;
            }
            printf_buf(b, "# HELP %s %s\n# TYPE %s %s\n", f->name, f->help, f->name, f->type);
            ac->in_fam = true;
            ac->cur = !f->app ? NULL : ac->m.only ? ac->m.only : srv->apps;
        }
        if (ac->cur) {
            struct app_rt *a = ac->cur;
            f->app(&ac->m, b, f, a);
            ac->cur = ac->m.only ? NULL : a->next;
            continue;
        }
        if (f->all)
            f->all(&ac->m, b, f);
        ac->fam++;
        ac->in_fam = false;
    }
    return ac->fam == NFAMILIES;
}

/* Writes the next slice of a sliced body (after the response head, the first time): one per loop
 * iteration, so that other requests are served in between. */
static void slice_more(struct admin_conn *ac)
{
    struct sbuf *b = &ac->body;
    b->len = 0;
    if (ac->cur_ref) {
        kago__app_unref(ac->cur);
        ac->cur_ref = false;
    }
    bool last = ac->last = ac->fill(ac);
    if (ac->cur) { /* kept from being freed (a reload removed it) until the next slice */
        ac->cur->refs++;
        ac->cur_ref = true;
    }
    uv_buf_t bufs[4];
    unsigned n = 0;
    if (ac->out.len) { /* the response head */
        bufs[n++] = uv_buf_init(ac->out.data, ac->out.len);
        ac->out.len = 0;
    }
    if (ac->chunked && b->len) {
        int k = snprintf(ac->chunk_head, sizeof(ac->chunk_head), "%zx\r\n", b->len);
        bufs[n++] = uv_buf_init(ac->chunk_head, k);
    }
    if (b->len)
        bufs[n++] = uv_buf_init(b->data, b->len);
    if (ac->chunked && (b->len || last))
        bufs[n++] = uv_buf_init((char *)(b->len && last ? "\r\n0\r\n\r\n"
                                         : last         ? "0\r\n\r\n"
                                                        : "\r\n"),
                                b->len && last ? 7
                                : last         ? 5
                                               : 2);
    ac->wreq.data = ac;
    if (!n || uv_write(&ac->wreq, &ac->h.stream, bufs, n, on_slice_written) < 0)
        close_conn(ac);
}

/* GET /ps: the head now, the body in slices, its end the connection's close (as `kago ps` reads it). */
static void ps_begin(struct admin_conn *ac)
{
    printf_buf(&ac->out,
               "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n{\"apps\":[");
    ac->cur = ac->srv->apps;
    ac->fill = ps_fill;
    ac->done = true;
    uv_read_stop(&ac->h.stream);
    slice_more(ac);
}

/* GET /metrics[?app=NAME]: the head now, the body in slices. */
static void metrics_begin(struct admin_conn *ac, const char *path, bool http10)
{
    struct server *srv = ac->srv;
    char name[256];
    if (kago__dash_param(path, "app", NULL, 0)) {
        if (!kago__dash_param(path, "app", name, sizeof(name)))
            name[0] = 0;
        ac->m.only = kago__server_app(srv, name);
        if (!ac->m.only) {
            struct sbuf body = {0};
            log_safe(name);
            printf_buf(&body, "no app named \"%s\"\n", name);
            respond(ac, 404, "text/plain", &body);
            return;
        }
        ac->m.only->refs++;
    }
    ac->m.srv = srv;
    ac->m.full = ac->m.only != NULL;
    ac->m.app_hists = ac->m.full || srv->opts.metrics_app_histograms;
    if (!ac->m.app_hists)
        sum_hists(srv, &ac->m.sum);
    ac->chunked = !http10;
    printf_buf(&ac->out,
               "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n%sConnection: close\r\n\r\n",
               ac->chunked ? "Transfer-Encoding: chunked\r\n" : "");
    ac->fill = metrics_fill;
    ac->done = true;
    uv_read_stop(&ac->h.stream);
    slice_more(ac);
}

static void on_admin_written(uv_write_t *w, int status)
{
    close_conn(w->data);
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
        close_conn(ac);
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

/* path as it may be logged: printable ASCII only, any token= value starred. */
static void log_safe(char *path)
{
    for (char *p = path; *p; p++)
        if ((unsigned char)*p < 0x20 || (unsigned char)*p >= 0x7f)
            *p = '?';
    for (char *t = strstr(path, "token="); t; t = strstr(t, "token="))
        for (t += 6; *t && *t != '&'; t++)
            *t = '*';
}

/* Over TCP, a request other than /healthz needs the token: true when it may go on, else it was answered
 * 401 (no token or a wrong one: logged, counted) or 429 (its client failed too often lately). */
static bool authorized(struct admin_conn *ac, const char *method, char *path, enum dash_auth *how)
{
    struct admin_auth *au = ac->srv->admin_auth;
    *how = DASH_AUTH_LOCAL;
    if (!au || !au->token || !strcmp(path, "/healthz"))
        return true;
    *how = DASH_AUTH_PUBLIC;
    if (kago__dash_public(method, path))
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
        *how = DASH_AUTH_BEARER;
        return true;
    }
    /* the dashboard: a browser's session cookie (with its CSRF header on a POST), or GET /?token= */
    int c = given ? 0 : kago__dash_cookie_auth(ac->srv, ac->req, ac->len, method);
    if (c > 0) {
        *how = DASH_AUTH_COOKIE;
        return true;
    }
    if (c == -1) {
        sbuf_adds(&body, "forbidden: a POST from the dashboard needs its " DASH_CSRF_HEADER " header\n");
        respond(ac, 403, "text/plain", &body);
        return false;
    }
    char qtok[256];
    if (!given && !strcmp(method, "GET") && kago__dash_param(path, "token", qtok, sizeof(qtok))) {
        given = true;
        bool ok = kago__auth_token_eq(au->token, qtok, strlen(qtok));
        explicit_bzero(qtok, sizeof(qtok));
        char *t = strstr(path, "token="); /* (never logged) */
        for (t = t ? t + 6 : NULL; t && *t && *t != '&'; t++)
            *t = '*';
        if (ok) {
            kago__auth_ok(&au->limit, ip);
            *how = DASH_AUTH_QUERY;
            return true;
        }
    }
    if (c == -2 && !given) { /* (a page left open across a restart retries its stream: no lockout) */
        sbuf_adds(&body, "the dashboard session ended: log in again\n");
        respond(ac, 401, "text/plain", &body);
        return false;
    }
    if (!given && !strcmp(path, "/dash/session")) { /* the page asking if it is logged in: not an attempt */
        sbuf_adds(&body, "log in\n");
        respond(ac, 401, "text/plain", &body);
        return false;
    }
    log_safe(path);
    kago__slog(ac->srv, SLOG_WARN, NULL, NULL, "admin: 401 for %s %s from %s: %s", method, path, ip,
               given ? "wrong token" : "no bearer token nor dashboard session");
    /* only a credential given and wrong counts: a request with none (any web page can make the operator's
     * browser send one to 127.0.0.1) would otherwise lock the operator, Prometheus and kago ps out */
    if (given && kago__auth_failed(&au->limit, ip, now))
        kago__slog(ac->srv, SLOG_WARN, NULL, NULL,
                   "admin: %d failed attempts from %s within %d s: it gets 429 for %d s", AUTH_MAX_FAILS, ip,
                   AUTH_WINDOW_MS / 1000, AUTH_BLOCK_MS / 1000);
    sbuf_adds(&body,
              "unauthorized: send Authorization: Bearer TOKEN (the token file is given by --admin-token)\n");
    respond_h(ac, 401, "text/plain", "WWW-Authenticate: Bearer realm=\"kago\"\r\n", &body);
    return false;
}

static void on_sse_written(uv_write_t *w, int status)
{
    struct admin_conn *ac = w->data;
    ac->sse_writing = false;
    if (status < 0)
        close_conn(ac);
}

static bool sse_send(struct dash_sub *s, const char *data, size_t n)
{
    struct admin_conn *ac = container_of(s, struct admin_conn, sub);
    if (ac->sse_writing || uv_is_closing(&ac->h.handle))
        return false; /* (a slow reader skips seconds rather than queueing them) */
    ac->body.len = 0;
    if (ac->out.len) { /* the response head */
        sbuf_add(&ac->body, ac->out.data, ac->out.len);
        ac->out.len = 0;
    }
    sbuf_add(&ac->body, data, n);
    uv_buf_t b = uv_buf_init(ac->body.data, ac->body.len);
    ac->wreq.data = ac;
    if (uv_write(&ac->wreq, &ac->h.stream, &b, 1, on_sse_written) < 0) {
        close_conn(ac);
        return false;
    }
    ac->sse_writing = true;
    return true;
}

static void sse_close(struct dash_sub *s)
{
    struct admin_conn *ac = container_of(s, struct admin_conn, sub);
    ac->sse = false; /* (unlinked by the caller) */
    close_conn(ac);
}

/* The dashboard's pages, events and actions (dash_http.c), or 404. */
static void dash(struct admin_conn *ac, const char *method, char *path, enum dash_auth how)
{
    struct dash_reply r = {0};
    char ip[64] = "unix socket";
    if (ac->h.handle.type == UV_TCP)
        peer_ip(ac, ip, sizeof(ip));
    kago__dash_handle(ac->srv, method, path, ac->req, ac->len, how, ip, &r);
    if (!r.status) {
        sbuf_free(&r.body);
        sbuf_adds(&r.body, "not found (try /metrics, /ps, POST /reload, or / in a browser)\n");
        respond(ac, 404, "text/plain", &r.body);
    } else if (r.sse) {
        sbuf_free(&r.body);
        printf_buf(&ac->out, "HTTP/1.1 200 OK\r\nContent-Type: %s\r\n%sConnection: close\r\n\r\n", r.ctype,
                   r.extra);
        ac->done = true;
        ac->sse = true;
        kago__dash_sub_init(&ac->sub, path);
        ac->sub.send = sse_send;
        ac->sub.close = sse_close;
        kago__dash_sse_add(ac->srv, &ac->sub); /* (its first event goes with the head) */
    } else {
        respond_h(ac, r.status, r.ctype, r.extra, &r.body);
    }
}

static void reload_answer(struct reload_waiter *w, const struct kago_error *err)
{
    struct admin_conn *ac = container_of(w, struct admin_conn, reload);
    struct sbuf body = {0};
    if (err) {
        printf_buf(&body, "reload failed: %s\n", err->msg);
        respond(ac, 500, "text/plain", &body);
    } else {
        sbuf_adds(&body, "reloaded\n");
        respond(ac, 200, "text/plain", &body);
    }
}

/* On the unix socket (no token: its file mode is the check) a request must name a host no web page can
 * rebind to this machine: localhost, kago (kago ps and kago reload say it), any one-label name, or an IP
 * address. A browser reaching an `ssh -L` forward of the socket through a DNS-rebound name
 * (attacker.example resolving to 127.0.0.1) is thus refused, before it can read /ps or act. */
static bool local_host_ok(const char *head, size_t n)
{
    const char *v;
    size_t len;
    if (!kago__dash_header(head, n, "Host", &v, &len))
        return true; /* (HTTP/1.0) */
    if (len && v[0] == '[')
        return true;
    bool digits_and_dots = true;
    size_t end = 0;
    while (end < len && v[end] != ':')
        end++;
    size_t dots = 0;
    for (size_t i = 0; i < end; i++) {
        dots += v[i] == '.';
        digits_and_dots &= (v[i] >= '0' && v[i] <= '9') || v[i] == '.';
    }
    return dots == 0 || digits_and_dots;
}

static void handle(struct admin_conn *ac)
{
    struct server *srv = ac->srv;
    struct sbuf body = {0};
    char method[8] = "", path[256] = "", version[16] = "";
    if (sscanf(ac->req, "%7s %255s %15s", method, path, version) < 2) {
        sbuf_adds(&body, "bad request\n");
        respond(ac, 400, "text/plain", &body);
        return;
    }
    enum dash_auth how;
    if (!authorized(ac, method, path, &how))
        return;
    const char *v;
    size_t vn;
    if (how == DASH_AUTH_LOCAL && ac->h.handle.type != UV_TCP && !local_host_ok(ac->req, ac->len)) {
        sbuf_adds(&body, "forbidden: on the unix socket the Host must be localhost or an address (a browser "
                         "may reach a forward of it through a rebound name)\n");
        respond(ac, 403, "text/plain", &body);
        return;
    }
    if (how == DASH_AUTH_LOCAL && !strcmp(method, "POST") && !strcmp(path, "/reload") &&
        !kago__dash_header(ac->req, ac->len, DASH_CSRF_HEADER, &v, &vn)) {
        sbuf_adds(&body,
                  "forbidden: POST /reload: send the header " DASH_CSRF_HEADER ": 1 (no web page can)\n");
        respond(ac, 403, "text/plain", &body);
        return;
    }
    if (how == DASH_AUTH_PUBLIC || how == DASH_AUTH_QUERY || !strncmp(path, "/dash/", 6) ||
        (!strcmp(method, "POST") && strcmp(path, "/reload") != 0)) {
        dash(ac, method, path, how);
    } else if (!strcmp(method, "GET") && !strncmp(path, "/metrics", 8) && (!path[8] || path[8] == '?')) {
        metrics_begin(ac, path, !strcmp(version, "HTTP/1.0"));
    } else if (!strcmp(method, "GET") && !strncmp(path, "/ps", 3)) {
        ps_begin(ac);
    } else if (!strcmp(method, "POST") && !strcmp(path, "/reload")) {
        char ip[64] = "the unix socket";
        if (ac->h.handle.type == UV_TCP)
            peer_ip(ac, ip, sizeof(ip));
        kago__slog(srv, SLOG_INFO, NULL, NULL, "admin: reload from %s", ip);
        ac->done = true; /* (the answer waits for the reload) */
        ac->reload.done = reload_answer;
        kago__server_reload(srv, &ac->reload);
    } else if (!strcmp(method, "GET") && !strcmp(path, "/healthz")) {
        /* draining after SIGTERM: a load balancer's check takes this serve out before its listeners are gone
         * (an upgrade's old serve is not stopping: its listeners are the new serve's) */
        sbuf_adds(&body, srv->stopping ? "stopping\n" : "ok\n");
        respond(ac, srv->stopping ? 503 : 200, "text/plain", &body);
    } else {
        dash(ac, method, path, how);
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
    if (ac->sse && n < 0 && !uv_is_closing(&ac->h.handle)) { /* the page went away */
        uv_close(&ac->h.handle, on_admin_closed);
        return;
    }
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
    /* over the limit: closed unread, so that no client holds the descriptors serve needs for the proxy */
    if (uv_accept(listener, &ac->h.stream) < 0 || srv->nadmin_conns >= ADMIN_MAX_CONNS) {
        uv_close(&ac->h.handle, on_admin_closed);
        return;
    }
    ac->since_ms = kago__serve_now_ms();
    ac->next = srv->admin_conns;
    if (ac->next)
        ac->next->pprev = &ac->next;
    srv->admin_conns = ac;
    ac->pprev = &srv->admin_conns;
    srv->nadmin_conns++;
    uv_read_start(&ac->h.stream, on_admin_alloc, on_admin_read);
}

void kago__admin_sweep(struct server *srv, uint64_t now)
{
    for (struct admin_conn *ac = srv->admin_conns; ac; ac = ac->next)
        if (!ac->done && !ac->sse && now - ac->since_ms >= ADMIN_REQ_MS)
            close_conn(ac); /* a request that never came whole */
}

void kago__admin_close_all(struct server *srv)
{
    for (struct admin_conn *ac = srv->admin_conns; ac; ac = ac->next)
        close_conn(ac);
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

void kago__admin_publish(struct server *srv, const char *tcp_addr)
{
    const char *unix_path = kago__admin_unix_path(srv);
    cleanup_free char *path = xasprintf("%s/" KAGO_SERVE_ADMIN_ADDR, srv->opts.root);
    char cwd[4096] = "";
    if (unix_path && unix_path[0] != '/' && !getcwd(cwd, sizeof cwd)) {
        unlink(path); /* (not published: a relative path means nothing to another directory) */
        return;
    }
    /* "off": serve runs without an admin API (--admin off), which kago ps then says */
    cleanup_free char *addr = tcp_addr    ? xstrdup(tcp_addr)
                              : unix_path ? xasprintf("unix:%s%s%s", cwd, *cwd ? "/" : "", unix_path)
                                          : xstrdup("off");
    cleanup_free char *tmp = xasprintf("%s.tmp", path);
    FILE *f = fopen(tmp, "we");
    /* serve's pid too: the CLI sends the token only to an address whose serve still runs */
    bool ok = f && fprintf(f, "%s\n%d\n", addr, (int)getpid()) > 0;
    if (f && fclose(f) != 0)
        ok = false;
    if (!ok || rename(tmp, path) < 0) {
        kago__slog(srv, SLOG_WARN, NULL, NULL,
                   "admin API: cannot write its address to %s (kago ps finds serve by it): %s", path,
                   strerror(errno));
        unlink(tmp);
    }
}

/* The address file, at exit: removed when it is still this serve's (an upgrade's new serve wrote its own). */
static void admin_unpublish(struct server *srv)
{
    cleanup_free char *path = xasprintf("%s/" KAGO_SERVE_ADMIN_ADDR, srv->opts.root);
    FILE *f = fopen(path, "re");
    char line[4096];
    int pid = 0;
    if (f && fgets(line, sizeof line, f) && fscanf(f, "%d", &pid) == 1 && pid == (int)getpid())
        unlink(path);
    if (f)
        fclose(f);
}

void kago__admin_cleanup(struct server *srv)
{
    admin_unpublish(srv);
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
