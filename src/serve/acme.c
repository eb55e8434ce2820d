/* kago serve — certificates on demand: the loop's side (which host may get one, when, the store, the
 * held handshakes, renewals, counters) and the worker thread that runs the blocking ACME client. */
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "acme.h"
#include "acme_int.h"
#include "serve_int.h"
#include "spawner.h"
#include "util.h"

#define TIMER_MS       1000
#define REFUSED_LOG_MS 1000  /* refused hosts are logged at most this often (a flood of names) */
#define ASK_REFUSED_MS 60000 /* a host --acme-ask refused is not asked again for this long */
#define WORKERS        4 /* orders in flight at once (each blocks its thread for a fraction of a second) */

struct ahost {
    struct ahost *next;
    char *name;
    struct acme_host_state st;
    time_t not_before, not_after; /* wall clock */
    uint64_t t_start_us;
};

struct ajob {
    struct ajob *next;
    char host[256];
    bool renew, ask;
    int result; /* 1 certificate, 0 refused by --acme-ask, -1 failed */
    char *error;
    time_t not_before, not_after;
    char issuer[128];
};

struct challenge {
    char *token, *key_auth;
    char *host;   /* TLS-ALPN-01: the name validated, and */
    SSL_CTX *ctx; /* the context that shows its challenge certificate (else NULL) */
};

struct acme;

/* A worker thread with its own ACME client (nonce, account URL), sharing the account key. */
struct worker {
    struct acme *a;
    pthread_t thread;
    bool started;
    struct acme_client cl;
};

struct acme {
    struct server *srv;
    char *dir; /* <root>/acme */
    struct worker w[WORKERS];
    const char *ask_url;
    bool wait;     /* hold handshakes (else: on with the default certificate while the order runs) */
    bool tls_alpn; /* TLS-ALPN-01 (--acme-challenge), else HTTP-01 */
    struct ahost *hosts;
    struct acme_bucket bucket;  /* --acme-rate: first orders and --acme-ask questions */
    struct acme_bucket renewal; /* --acme-rate too, for renewals alone */
    uint64_t refused_logged_ms;
    long renew_after_s; /* KAGO_ACME_RENEW_AFTER (tests): renew this long after issue, not at 2/3 */
    struct acme_stats stats;
    /* the workers */
    atomic_bool stop;
    pthread_mutex_t mu; /* queue, done, challenges */
    pthread_cond_t cond;
    struct ajob *queue, **queue_tail, *done;
    struct challenge *chal;
    size_t nchal;
    uv_async_t async;
    uv_timer_t timer;
};

/* --- hosts ---------------------------------------------------------------------------------------- */

static struct ahost *host_get(struct acme *a, const char *name, bool create)
{
    for (struct ahost *h = a->hosts; h; h = h->next)
        if (!strcmp(h->name, name))
            return h;
    if (!create)
        return NULL;
    struct ahost *h = xcalloc(1, sizeof(*h));
    h->name = xstrdup(name);
    h->next = a->hosts;
    a->hosts = h;
    return h;
}

static char *cert_path(struct acme *a, const char *host, const char *file)
{
    return xasprintf("%s/certs/%s/%s", a->dir, host, file);
}

/* The validity of host's certificate on disk, and when it is renewed. 0, or -1 (no usable file). */
static int read_times(struct acme *a, struct ahost *h, char *issuer, size_t n)
{
    cleanup_free char *cp = cert_path(a, h->name, "cert.pem");
    if (kago__acme_cert_times(cp, NULL, &h->not_before, &h->not_after, issuer, n) < 0)
        return -1;
    struct stat st;
    h->st.renew_at = kago__acme_renew_at(h->not_before, h->not_after, stat(cp, &st) == 0 ? st.st_mtime : 0,
                                         a->renew_after_s);
    return 0;
}

static void fmt_time(time_t t, char *buf, size_t n)
{
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, n, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* Routed to an app: exactly or by a wildcard, not as the default app. */
static bool routed(struct acme *a, const char *name)
{
    struct app_rt *app = a->srv->router ? kago__router_find_host(a->srv->router, name, strlen(name)) : NULL;
    return app && !app->removed;
}

static void enqueue(struct acme *a, struct ahost *h, bool renew, bool ask)
{
    h->st.pending = true;
    struct ajob *j = xcalloc(1, sizeof(*j));
    snprintf(j->host, sizeof(j->host), "%s", h->name);
    j->renew = renew;
    j->ask = ask;
    h->t_start_us = kago__serve_now_us();
    a->stats.pending++;
    pthread_mutex_lock(&a->mu);
    *a->queue_tail = j;
    a->queue_tail = &j->next;
    pthread_cond_signal(&a->cond);
    pthread_mutex_unlock(&a->mu);
}

/* tls.c's question for a handshake whose name has no certificate: 1 holds it until the order ends. */
static int on_missing(void *arg, const char *name)
{
    struct acme *a = arg;
    struct ahost *h = host_get(a, name, false);
    uint64_t now = kago__serve_now_ms();
    enum acme_verdict v =
        kago__acme_decide(name, h ? &h->st : NULL, routed(a, name), a->ask_url != NULL, &a->bucket, now);
    bool log = now - a->refused_logged_ms >= REFUSED_LOG_MS; /* (refusals: at most one line a second) */
    switch (v) {
    case ACME_PENDING:
        a->stats.held += a->wait;
        return a->wait;
    case ACME_HAS_CERT:
    case ACME_ASK_REFUSED:
        return 0;
    case ACME_BACKOFF:
        a->stats.backoff_skipped++;
        return 0;
    case ACME_NOT_ROUTED:
        a->stats.refused_unrouted++;
        if (log)
            kago__slog(
                a->srv, SLOG_WARN, NULL, NULL,
                "acme: %s: no certificate: not routed to an app, and no --acme-ask (%llu refused so far)",
                name, (unsigned long long)a->stats.refused_unrouted);
        a->refused_logged_ms = log ? now : a->refused_logged_ms;
        return 0;
    case ACME_BAD_NAME:
        a->stats.refused_bad_name++;
        if (log)
            kago__slog(a->srv, SLOG_WARN, NULL, NULL, "acme: %s: no certificate: not a name a CA issues for",
                       name);
        a->refused_logged_ms = log ? now : a->refused_logged_ms;
        return 0;
    case ACME_RATE_LIMITED:
        a->stats.rate_limited++;
        if (log)
            kago__slog(a->srv, SLOG_WARN, NULL, NULL,
                       "acme: %s: no order now: over --acme-rate %u per minute", name,
                       a->srv->opts.acme_rate);
        a->refused_logged_ms = log ? now : a->refused_logged_ms;
        return 0;
    case ACME_ORDER:
    case ACME_ASK_ORDER:
        break;
    }
    h = host_get(a, name, true);
    enqueue(a, h, false, v == ACME_ASK_ORDER);
    kago__slog(a->srv, SLOG_INFO, NULL, NULL, "acme: %s: ordering a certificate%s", name,
               v == ACME_ORDER ? "" : " (if --acme-ask approves)");
    a->stats.held += a->wait;
    return a->wait;
}

/* --- the worker ----------------------------------------------------------------------------------- */

static void challenge_free(struct challenge *c)
{
    free(c->token);
    free(c->key_auth);
    free(c->host);
    SSL_CTX_free(c->ctx);
}

/* On the worker: HTTP-01's answer, or TLS-ALPN-01's certificate (made here, off the loop). */
static int publish(void *arg, const char *host, const char *token, const char *key_auth,
                   struct kago_error **err)
{
    struct acme *a = arg;
    struct challenge c = {xstrdup(token), xstrdup(key_auth), NULL, NULL};
    if (a->tls_alpn) {
        EVP_PKEY *key = NULL;
        X509 *x = kago__acme_alpn_cert(host, key_auth, &key, err);
        c.ctx = x ? kago__tls_challenge_ctx(x, key, err) : NULL;
        X509_free(x);
        EVP_PKEY_free(key);
        if (!c.ctx) {
            challenge_free(&c);
            return -1;
        }
        c.host = xstrdup(host);
    }
    pthread_mutex_lock(&a->mu);
    a->chal = xrealloc(a->chal, (a->nchal + 1) * sizeof(*a->chal));
    a->chal[a->nchal++] = c;
    pthread_mutex_unlock(&a->mu);
    return 0;
}

static void unpublish(void *arg, const char *token)
{
    struct acme *a = arg;
    pthread_mutex_lock(&a->mu);
    for (size_t i = 0; i < a->nchal; i++)
        if (!strcmp(a->chal[i].token, token)) {
            challenge_free(&a->chal[i]);
            a->chal[i] = a->chal[--a->nchal];
            break;
        }
    pthread_mutex_unlock(&a->mu);
}

/* The TLS front's question, on any handshake thread: the context of a TLS-ALPN-01 validation of name. */
static SSL_CTX *challenge_ctx(void *arg, const char *name)
{
    struct acme *a = arg;
    SSL_CTX *ctx = NULL;
    pthread_mutex_lock(&a->mu);
    for (size_t i = 0; i < a->nchal && !ctx; i++)
        if (a->chal[i].ctx && !strcmp(a->chal[i].host, name) && SSL_CTX_up_ref(a->chal[i].ctx) == 1)
            ctx = a->chal[i].ctx;
    pthread_mutex_unlock(&a->mu);
    a->stats.challenges_served += ctx != NULL;
    return ctx;
}

static void run_job(struct worker *w, struct ajob *j)
{
    struct acme *a = w->a;
    struct kago_error *err = NULL;
    if (j->ask) {
        int r = kago__acme_ask(&w->cl, a->ask_url, j->host, &err);
        if (r <= 0) {
            j->result = r < 0 ? -1 : 0;
            j->error = err ? xstrdup(err->msg) : NULL;
            kago_error_free(err);
            return;
        }
    }
    cleanup_free char *dir = xasprintf("%s/certs/%s", a->dir, j->host);
    cleanup_free char *cp = cert_path(a, j->host, "cert.pem");
    cleanup_free char *kp = cert_path(a, j->host, "key.pem");
    if (kago__mkdir_p(dir, 0700, &err) < 0 || kago__acme_obtain(&w->cl, j->host, cp, kp, &err) < 0) {
        j->result = -1;
        j->error = xstrdup(err->msg);
        kago_error_free(err);
        return;
    }
    j->result = 1;
}

static void *worker(void *arg)
{
    struct worker *w = arg;
    struct acme *a = w->a;
    pthread_mutex_lock(&a->mu);
    for (;;) {
        while (!a->queue && !atomic_load(&a->stop))
            pthread_cond_wait(&a->cond, &a->mu);
        if (atomic_load(&a->stop))
            break;
        struct ajob *j = a->queue;
        if (!(a->queue = j->next))
            a->queue_tail = &a->queue;
        pthread_mutex_unlock(&a->mu);
        run_job(w, j);
        pthread_mutex_lock(&a->mu);
        j->next = a->done;
        a->done = j;
        uv_async_send(&a->async);
    }
    pthread_mutex_unlock(&a->mu);
    return NULL;
}

/* --- results on the loop -------------------------------------------------------------------------- */

static void log_reload(void *arg, bool ok, const char *msg)
{
    kago__slog(arg, ok ? SLOG_INFO : SLOG_ERR, NULL, NULL, "acme: %s", msg);
}

static void job_ok(struct acme *a, struct ahost *h, struct ajob *j, double took_s)
{
    char issuer[128] = "", until[32], renew[32];
    struct kago_error *err = NULL;
    if (read_times(a, h, issuer, sizeof(issuer)) < 0) {
        kago__slog(a->srv, SLOG_ERR, NULL, NULL, "acme: %s: the certificate written does not read back",
                   h->name);
        return;
    }
    bool had = h->st.has_cert;
    h->st.has_cert = true;
    h->st.failures = 0;
    h->st.next_try_ms = 0;
    j->renew ? a->stats.renewals_ok++ : a->stats.orders_ok++;
    if (!had)
        a->stats.certificates++;
    cleanup_free char *cp = cert_path(a, h->name, "cert.pem");
    cleanup_free char *kp = cert_path(a, h->name, "key.pem");
    if (had)
        kago__tls_store_check(a->srv->tls_store, log_reload, a->srv); /* the files changed: loaded again */
    else if (a->srv->tls_store && kago__tls_store_host(a->srv->tls_store, h->name, cp, kp, &err) < 0) {
        kago__slog(a->srv, SLOG_ERR, NULL, NULL, "acme: %s: %s", h->name, err->msg);
        kago_error_free(err);
    }
    fmt_time(h->not_after, until, sizeof(until));
    fmt_time(h->st.renew_at, renew, sizeof(renew));
    kago__slog(a->srv, SLOG_INFO, NULL, NULL,
               "acme: %s: certificate %s by \"%s\" in %.2f s, valid until %s, renewal at %s", h->name,
               j->renew ? "renewed" : "issued", issuer, took_s, until, renew);
}

static void job_failed(struct acme *a, struct ahost *h, struct ajob *j)
{
    uint64_t backoff = kago__acme_backoff_ms(a->srv->opts.acme_retry_ms, ++h->st.failures);
    h->st.next_try_ms = kago__serve_now_ms() + backoff;
    j->renew ? a->stats.renewals_failed++ : a->stats.orders_failed++;
    kago__slog(a->srv, SLOG_ERR, NULL, NULL, "acme: %s: %s failed (attempt %u, next in %.0f s%s): %s",
               h->name, j->renew ? "renewal" : "order", h->st.failures, backoff / 1000.0,
               h->st.has_cert ? "; the current certificate stays" : "",
               j->error ? j->error : "unknown error");
}

static void on_done(uv_async_t *async)
{
    struct acme *a = async->data;
    pthread_mutex_lock(&a->mu);
    struct ajob *list = a->done;
    a->done = NULL;
    pthread_mutex_unlock(&a->mu);
    while (list) {
        struct ajob *j = list;
        list = j->next;
        struct ahost *h = host_get(a, j->host, true);
        double took = (kago__serve_now_us() - h->t_start_us) / 1e6;
        h->st.pending = false;
        a->stats.pending--;
        if (j->result > 0)
            job_ok(a, h, j, took);
        else if (j->result == 0) {
            a->stats.refused_ask++;
            h->st.refused_til_ms = kago__serve_now_ms() + ASK_REFUSED_MS;
            kago__slog(a->srv, SLOG_WARN, NULL, NULL, "acme: %s: no certificate: --acme-ask refused it",
                       h->name);
        } else
            job_failed(a, h, j);
        kago__tls_front_resume(a->srv->tls, h->name); /* its held handshakes go on, with it or without */
        free(j->error);
        free(j);
    }
}

/* Renewals at their time, failed first orders again after their backoff. */
static void on_timer(uv_timer_t *t)
{
    struct acme *a = t->data;
    uint64_t now = kago__serve_now_ms();
    time_t wall = time(NULL);
    /* a host that has nothing to remember (no certificate, no order, no failure, its --acme-ask refusal
     * over) goes: made-up names refused by the ask stayed for good, each scanned by every uncovered
     * handshake */
    for (struct ahost **pp = &a->hosts; *pp;) {
        struct ahost *h = *pp;
        if (!h->st.pending && !h->st.has_cert && !h->st.failures && now >= h->st.refused_til_ms) {
            *pp = h->next;
            free(h->name);
            free(h);
        } else {
            pp = &h->next;
        }
    }
    for (struct ahost *h = a->hosts; h; h = h->next) {
        const struct acme_host_state *st = &h->st;
        if (st->pending ||
            (st->has_cert ? wall < st->renew_at : !st->failures)) /* (most: no router lookup) */
            continue;
        enum acme_verdict v = kago__acme_due(&h->st, routed(a, h->name), a->ask_url != NULL, &a->bucket,
                                             &a->renewal, now, wall);
        if (v != ACME_ORDER && v != ACME_ASK_ORDER)
            continue;
        bool renew = h->st.has_cert;
        kago__slog(a->srv, SLOG_INFO, NULL, NULL, "acme: %s: %s", h->name,
                   renew ? "renewing its certificate" : "ordering again");
        enqueue(a, h, renew, v == ACME_ASK_ORDER);
    }
}

/* --- setup ---------------------------------------------------------------------------------------- */

/* Certificates obtained before (a restart): <dir>/certs/HOST/cert.pem with its key.pem. */
static void load_existing(struct acme *a)
{
    cleanup_free char *certs = xasprintf("%s/certs", a->dir);
    DIR *d = opendir(certs);
    struct dirent *de;
    while (d && (de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue;
        struct ahost *h = host_get(a, de->d_name, true);
        char issuer[128];
        if (read_times(a, h, issuer, sizeof(issuer)) == 0) {
            h->st.has_cert = true;
            a->stats.certificates++;
        }
    }
    if (d)
        closedir(d);
}

/* Each worker's client; the account key is loaded (or made) once and shared. */
static int client_init(struct acme *a, struct kago_error **err)
{
    const struct kago_serve_opts *o = &a->srv->opts;
    for (int i = 0; i < WORKERS; i++) {
        struct acme_client *cl = &a->w[i].cl;
        a->w[i].a = a;
        cl->directory = xstrdup(o->acme_directory);
        cl->email = o->acme_email ? xstrdup(o->acme_email) : NULL;
        cl->timeout_ms = 15000;
        cl->stop = &a->stop;
        cl->tls_alpn = a->tls_alpn;
        cl->publish = publish;
        cl->unpublish = unpublish;
        cl->arg = a;
        if (!(cl->tls = kago__ahttp_tls(o->acme_ca, err)))
            return -1;
        if (i) {
            cl->account = a->w[0].cl.account;
            EVP_PKEY_up_ref(cl->account);
            cl->jwk = xstrdup(a->w[0].cl.jwk);
            cl->thumbprint = xstrdup(a->w[0].cl.thumbprint);
            continue;
        }
        cleanup_free char *kp = xasprintf("%s/account.key", a->dir);
        if (!(cl->account = kago__acme_key_load(kp, true, err)) ||
            kago__acme_jwk(cl->account, &cl->jwk, &cl->thumbprint, err) < 0)
            return -1;
    }
    return 0;
}

struct acme *kago__acme_new(struct server *srv, struct kago_error **err)
{
    struct acme *a = xcalloc(1, sizeof(*a));
    a->srv = srv;
    a->dir = srv->opts.acme_dir ? xstrdup(srv->opts.acme_dir) : xasprintf("%s/acme", srv->opts.root);
    a->ask_url = srv->opts.acme_ask;
    a->wait = !srv->opts.acme_no_wait;
    a->tls_alpn = srv->opts.acme_tls_alpn;
    kago__acme_bucket_init(&a->bucket, srv->opts.acme_rate, kago__serve_now_ms());
    kago__acme_bucket_init(&a->renewal, srv->opts.acme_rate, kago__serve_now_ms());
    a->queue_tail = &a->queue;
    const char *ra = getenv("KAGO_ACME_RENEW_AFTER");
    a->renew_after_s = ra ? strtol(ra, NULL, 10) : 0;
    pthread_mutex_init(&a->mu, NULL);
    pthread_cond_init(&a->cond, NULL);
    cleanup_free char *certs = xasprintf("%s/certs", a->dir);
    if (kago__mkdir_p(certs, 0700, err) < 0 || client_init(a, err) < 0) {
        kago_error_prefix(err, "acme");
        kago__acme_free(a);
        return NULL;
    }
    load_existing(a);
    uv_async_init(srv->loop, &a->async, on_done);
    a->async.data = a;
    uv_timer_init(srv->loop, &a->timer);
    a->timer.data = a;
    uv_timer_start(&a->timer, on_timer, TIMER_MS, TIMER_MS);
    kago__spawner_require("serve runs the ACME client's threads");
    for (int i = 0; i < WORKERS; i++) {
        int e = pthread_create(&a->w[i].thread, NULL, worker, &a->w[i]);
        if (e) {
            kago_error_set(err, e, "acme: start a worker thread");
            kago__acme_stop(a);
            return NULL; /* (the handles close with the loop's; the struct is leaked on this failed start) */
        }
        a->w[i].started = true;
    }
    kago__tls_front_on_missing(srv->tls, on_missing, a);
    if (a->tls_alpn)
        kago__tls_front_on_challenge(srv->tls, challenge_ctx, a);
    return a;
}

void kago__acme_stop(struct acme *a)
{
    if (!a)
        return;
    pthread_mutex_lock(&a->mu);
    atomic_store(&a->stop, true);
    pthread_cond_broadcast(&a->cond);
    pthread_mutex_unlock(&a->mu);
    for (int i = 0; i < WORKERS; i++)
        if (a->w[i].started) {
            pthread_join(a->w[i].thread, NULL);
            a->w[i].started = false;
        }
    kago__tls_front_on_missing(a->srv->tls, NULL, NULL);
    if (!uv_is_closing((uv_handle_t *)&a->async))
        uv_close((uv_handle_t *)&a->async, NULL);
    if (!uv_is_closing((uv_handle_t *)&a->timer))
        uv_close((uv_handle_t *)&a->timer, NULL);
}

void kago__acme_free(struct acme *a)
{
    if (!a)
        return;
    for (struct ajob *l[] = {a->queue, a->done}, **p = l; p < l + 2; p++)
        for (struct ajob *j = *p, *next; j; j = next) {
            next = j->next;
            free(j->error);
            free(j);
        }
    while (a->hosts) {
        struct ahost *h = a->hosts;
        a->hosts = h->next;
        free(h->name);
        free(h);
    }
    for (size_t i = 0; i < a->nchal; i++)
        challenge_free(&a->chal[i]);
    free(a->chal);
    for (int i = 0; i < WORKERS; i++)
        kago__acme_client_clear(&a->w[i].cl);
    pthread_mutex_destroy(&a->mu);
    pthread_cond_destroy(&a->cond);
    free(a->dir);
    free(a);
}

void kago__acme_fill_store(struct acme *a, struct tls_store *ts)
{
    for (struct ahost *h = a->hosts; h; h = h->next) {
        if (!h->st.has_cert)
            continue;
        cleanup_free char *cp = cert_path(a, h->name, "cert.pem");
        cleanup_free char *kp = cert_path(a, h->name, "key.pem");
        struct kago_error *err = NULL;
        if (kago__tls_store_host(ts, h->name, cp, kp, &err) < 0) {
            kago__slog(a->srv, SLOG_ERR, NULL, NULL, "acme: %s: %s", h->name, err->msg);
            kago_error_free(err);
        }
    }
}

size_t kago__acme_http01(struct acme *a, const char *path, size_t len, char *out, size_t outsz)
{
    static const char prefix[] = "/.well-known/acme-challenge/";
    size_t pl = sizeof(prefix) - 1;
    if (len <= pl || memcmp(path, prefix, pl) != 0)
        return 0;
    const char *tok = path + pl;
    size_t tl = 0;
    while (tl < len - pl && tok[tl] != '?' && tok[tl] != '#')
        tl++;
    size_t n = 0;
    pthread_mutex_lock(&a->mu);
    for (size_t i = 0; i < a->nchal && !n; i++)
        if (strlen(a->chal[i].token) == tl && !memcmp(a->chal[i].token, tok, tl)) {
            n = strlen(a->chal[i].key_auth);
            if (n >= outsz)
                n = 0;
            else
                memcpy(out, a->chal[i].key_auth, n);
        }
    pthread_mutex_unlock(&a->mu);
    a->stats.challenges_served += n > 0;
    return n;
}

const struct acme_stats *kago__acme_stats(const struct acme *a)
{
    return &a->stats;
}
