/* kago serve --cluster: where an app's instances run, and forwarding to other nodes (docs/cluster.md).
 *
 * A cluster app's pool uses kago__cluster_pool_ops: the local ops (instance.c) for instances of this
 * node, and "remote" instances for instances of other nodes. A remote instance is an instance without
 * a container whose connections go to the other node's --advertise address (upstream.c asks
 * kago__cluster_socket): the pool holds, counts and retires it like any other, so concurrency, held
 * requests, idle and retries need nothing new.
 *
 * When the pool wants an instance (c_start):
 *  1. another node's instance of the app that the pool does not use yet (from the watch of
 *     /kago/instances/), the least loaded node first: a remote instance, ready at once;
 *  2. else, when this node already runs the app or holds its claim: a local start (scale out);
 *  3. else the try-once txn on /kago/starting/APP with this node's lease. The winner starts the instance
 *     and publishes /kago/instances/APP/NODE/INSTANCE on its lease once it is ready; a loser's remote
 *     instance waits (STARTING) for that key, then is ready; when the starting key goes without an
 *     instance (the winner died), the waiting ones claim again. A loser of a scale-out (the pool has an
 *     instance already) starts locally: the txn only decides the first instance.
 * Without etcd (the claim cannot run) or without a lease, a cold app fails to start with that reason
 * (503 with it); what is bound or running keeps serving. */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <arpa/inet.h>

#include "cluster_int.h"
#include "place.h"
#include "util.h"

enum rstate { R_CLAIMING, R_WAITING, R_BOUND };

struct remote {
    struct instance inst; /* first: freed as the instance is (kago__instance_unref) */
    struct remote *next;  /* cl->remotes */
    struct cluster *cl;
    enum rstate state;
    char *key; /* R_BOUND: the instance key it forwards to */
    struct sockaddr_in sa;
    struct etcd_call *call; /* R_CLAIMING: the txn */
    bool exit_pending;
    bool want_lease; /* R_WAITING for this node's registration, then it claims */
};

/* A local instance's key, written once it is ready, deleted when it drains or goes. */
struct pub {
    struct pub *next;
    struct cluster *cl;
    struct instance *inst; /* NULL once it went: the key is deleted when the put in flight ends */
    char *key;
    struct etcd_call *call;
    bool written;
};

struct claim {
    struct claim *next;
    char *app;
};

static const struct pool_ops *const local = &kago__serve_pool_ops;

static void claim_start(struct remote *r);

static struct cluster *cl_of(struct pool *p)
{
    return ((struct app_rt *)p->data)->srv->cluster;
}

static struct remote *remote_of(struct pool_inst *pi)
{
    struct instance *inst = pi->data;
    return inst ? inst->remote : NULL;
}

/* An IPv4 IP:PORT (a node's --advertise). */
static int parse_addr(const char *addr, struct sockaddr_in *sa)
{
    struct sockaddr_storage ss;
    if (!addr || kago__server_parse_addr(addr, &ss, NULL) < 0 || ss.ss_family != AF_INET)
        return -1;
    memcpy(sa, &ss, sizeof *sa);
    return 0;
}

static const struct cnode *node_find(const struct cluster *cl, const char *name)
{
    for (size_t i = 0; i < cl->nnodes; i++)
        if (!strcmp(cl->nodes[i].name, name))
            return &cl->nodes[i];
    return NULL;
}

static void on_write(void *arg, struct json_object *resp, const struct kago_error *err)
{
    struct cluster *cl = arg;
    if (!resp)
        kago__slog(cl->srv, SLOG_WARN, NULL, NULL, "cluster: %s", err->msg);
}

/* --- claims ----------------------------------------------------------------------------------- */

static struct claim **claim_find(struct cluster *cl, const char *app)
{
    struct claim **pp = &cl->claims;
    while (*pp && strcmp((*pp)->app, app))
        pp = &(*pp)->next;
    return pp;
}

static void claim_add(struct cluster *cl, const char *app)
{
    struct claim **pp = claim_find(cl, app);
    if (*pp)
        return;
    *pp = xcalloc(1, sizeof(**pp));
    (*pp)->app = xstrdup(app);
}

/* The app has no local instance left: its starting key goes (the next cold request claims anew). */
static void claim_release(struct cluster *cl, const char *app)
{
    struct claim **pp = claim_find(cl, app), *c = *pp;
    if (!c)
        return;
    *pp = c->next;
    free(c->app);
    free(c);
    if (cl->stopping || !cl->registered)
        return;
    cleanup_free char *key = xasprintf("%s%s", STARTING, app);
    kago__cluster_write(cl, "kv/deleterange", kago__etcd_req_delete(key, NULL), on_write, cl);
}

/* --- this node's instances: published when ready ---------------------------------------------- */

static void pub_free(struct pub *pb)
{
    free(pb->key);
    free(pb);
}

static void pub_unlink(struct cluster *cl, struct pub *pb)
{
    for (struct pub **pp = &cl->pubs; *pp; pp = &(*pp)->next)
        if (*pp == pb) {
            *pp = pb->next;
            return;
        }
}

static void on_pub_done(void *arg, struct json_object *resp, const struct kago_error *err)
{
    struct pub *pb = arg;
    struct cluster *cl = pb->cl;
    pb->call = NULL;
    if (!resp)
        kago__slog(cl->srv, SLOG_WARN, NULL, NULL, "cluster: publishing %s: %s", pb->key, err->msg);
    else
        pb->written = true;
    if (!pb->inst) { /* it went while the put was in flight: delete after the put, never before */
        if (pb->written && !cl->stopping)
            kago__cluster_write(cl, "kv/deleterange", kago__etcd_req_delete(pb->key, NULL), on_write, cl);
        pub_unlink(cl, pb);
        pub_free(pb);
    }
}

static void pub_write(struct cluster *cl, struct pub *pb)
{
    if (pb->call || !cl->registered || cl->stopping)
        return;
    struct json_object *v = json_object_new_object();
    json_object_object_add(v, "addr", json_object_new_string(cl->addr));
    json_object_object_add(v, "node", json_object_new_string(cl->node));
    const char *s = json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN);
    pb->call = kago__cluster_write(cl, "kv/put", kago__etcd_req_put(pb->key, s, strlen(s), cl->lease),
                                   on_pub_done, pb);
    json_object_put(v);
}

static void publish(struct cluster *cl, struct instance *inst)
{
    for (struct pub *pb = cl->pubs; pb; pb = pb->next)
        if (pb->inst == inst)
            return;
    struct pub *pb = xcalloc(1, sizeof(*pb));
    pb->cl = cl;
    pb->inst = inst;
    pb->key = xasprintf("%s%s/%s/%s", INSTANCES, inst->app->app.name, cl->node, inst->name);
    pb->next = cl->pubs;
    cl->pubs = pb;
    pub_write(cl, pb);
}

static void unpublish(struct cluster *cl, struct instance *inst)
{
    for (struct pub *pb = cl->pubs; pb; pb = pb->next)
        if (pb->inst == inst) {
            pb->inst = NULL;
            if (pb->call)
                return; /* on_pub_done deletes it */
            if (pb->written && !cl->stopping)
                kago__cluster_write(cl, "kv/deleterange", kago__etcd_req_delete(pb->key, NULL), on_write, cl);
            pub_unlink(cl, pb);
            pub_free(pb);
            return;
        }
}

void kago__place_retry(struct cluster *cl)
{
    for (struct pub *pb = cl->pubs; pb; pb = pb->next)
        if (pb->inst && !pb->written)
            pub_write(cl, pb); /* (not while one is in flight, nor unregistered) */
}

void kago__place_registered(struct cluster *cl)
{
    for (struct pub *pb = cl->pubs; pb; pb = pb->next) {
        pb->written = false;
        if (pb->inst)
            pub_write(cl, pb);
    }
    /* and those never published: adopted from the serve this one replaced (their pool never saw them start)
     */
    for (struct app_rt *a = cl->srv->apps; a; a = a->next)
        for (struct pool_inst *pi = a->pool.insts; pi; pi = pi->next)
            if (pi->data && !remote_of(pi) && pi->state == POOL_READY)
                publish(cl, pi->data);
    /* the claims went with the old lease */
    while (cl->claims) {
        struct claim *c = cl->claims;
        cl->claims = c->next;
        free(c->app);
        free(c);
    }
    for (bool again = true; again;) { /* starts that waited for the lease */
        again = false;
        for (struct remote *r = cl->remotes; r && !again; r = r->next)
            if (r->want_lease && r->inst.pi) {
                claim_start(r);
                again = true;
            }
    }
}

int64_t kago__place_local_load(struct cluster *cl)
{
    int64_t n = 0;
    for (struct app_rt *a = cl->srv->apps; a; a = a->next)
        for (struct pool_inst *pi = a->pool.insts; pi; pi = pi->next)
            n += !remote_of(pi) && (pi->state == POOL_READY || pi->state == POOL_STARTING);
    return n;
}

static bool has_local(struct pool *p, const struct pool_inst *except)
{
    for (struct pool_inst *pi = p->insts; pi; pi = pi->next)
        if (pi != except && !remote_of(pi) && pi->state != POOL_STOPPING)
            return true;
    return false;
}

/* --- remote instances ------------------------------------------------------------------------- */

static struct rkey *rkey_find(struct cluster *cl, const char *key)
{
    for (size_t i = 0; i < cl->nrkeys; i++)
        if (!strcmp(cl->rkeys[i].key, key))
            return &cl->rkeys[i];
    return NULL;
}

static bool rkey_bound(struct cluster *cl, struct app_rt *a, const char *key)
{
    for (struct remote *r = cl->remotes; r; r = r->next)
        if (r->inst.app == a && r->state == R_BOUND && r->inst.pi && !strcmp(r->key, key))
            return true;
    return false;
}

/* Another node's instance of a the pool does not use yet, on the least loaded node; NULL: none. */
static struct rkey *rkey_pick(struct cluster *cl, struct app_rt *a)
{
    if (!cl->nrkeys)
        return NULL;
    cleanup_free struct place_cand *c = xcalloc(cl->nrkeys, sizeof(*c));
    for (size_t i = 0; i < cl->nrkeys; i++) {
        const struct rkey *k = &cl->rkeys[i];
        const struct cnode *n = node_find(cl, k->node);
        c[i] = (struct place_cand){.app = k->app, .node_load = n ? n->load : 0, .bad = k->bad};
        c[i].bound = !strcmp(k->app, a->app.name) && rkey_bound(cl, a, k->key);
    }
    long i = kago__place_pick(c, cl->nrkeys, a->app.name);
    return i < 0 ? NULL : &cl->rkeys[i];
}

static void remote_bind(struct remote *r, const struct rkey *k)
{
    free(r->key);
    r->key = xstrdup(k->key);
    r->sa = k->sa;
    r->state = R_BOUND;
    snprintf(r->inst.name, sizeof(r->inst.name), "%s@%s", strrchr(k->key, '/') + 1, k->node);
    if (r->inst.pi && r->inst.pi->state == POOL_STARTING)
        kago__pool_ready(&r->inst.app->pool, r->inst.pi, kago__serve_now_ms());
}

static struct remote *remote_new(struct cluster *cl, struct pool *p, struct pool_inst *pi)
{
    struct remote *r = xcalloc(1, sizeof(*r));
    r->cl = cl;
    r->inst.app = p->data;
    r->inst.pi = pi;
    r->inst.created_ms = kago__serve_now_ms();
    r->inst.remote = r;
    snprintf(r->inst.name, sizeof(r->inst.name), "%s@?", r->inst.app->app.name);
    pi->data = &r->inst;
    r->next = cl->remotes;
    cl->remotes = r;
    return r;
}

static void remote_unlink(struct remote *r)
{
    if (!r->cl) /* (the cluster state is gone: serve's last turns) */
        return;
    for (struct remote **pp = &r->cl->remotes; *pp; pp = &(*pp)->next)
        if (*pp == r) {
            *pp = r->next;
            return;
        }
}

/* The remote instance cannot be made: the pool counts a failed start with why. */
static void remote_fail(struct remote *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void remote_fail(struct remote *r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    free(r->inst.start_error);
    r->inst.start_error = xvasprintf(fmt, ap);
    va_end(ap);
    if (r->inst.pi)
        kago__pool_exited(&r->inst.app->pool, r->inst.pi, kago__serve_now_ms());
}

static void on_reap(uv_timer_t *t)
{
    struct cluster *cl = t->data;
    for (bool again = true; again;) {
        again = false;
        for (struct remote *r = cl->remotes; r; r = r->next)
            if (r->exit_pending && r->inst.pi) {
                r->exit_pending = false;
                kago__pool_exited(&r->inst.app->pool, r->inst.pi, kago__serve_now_ms());
                again = true; /* the list changed under us */
                break;
            }
    }
}

static void on_claim(void *arg, struct json_object *resp, const struct kago_error *err)
{
    struct remote *r = arg;
    struct cluster *cl = r->cl;
    struct app_rt *a = r->inst.app;
    r->call = NULL;
    bool won = false;
    struct etcd_kv holder = {0};
    struct kago_error *perr = NULL;
    if (!resp) {
        cl->unary_ok = false;
        remote_fail(r, "etcd cannot be reached to place it: %s", err->msg);
        return;
    }
    if (kago__etcd_txn_result(resp, &won, &holder, &perr) < 0) {
        remote_fail(r, "placing it: %s", perr->msg);
        kago_error_free(perr);
        return;
    }
    struct pool_inst *pi = r->inst.pi;
    bool mine = won || (holder.key && !strcmp(holder.value, cl->node) && holder.lease == cl->lease);
    bool scale_out = pi && has_local(&a->pool, pi);
    for (struct pool_inst *o = a->pool.insts; o && pi && !scale_out; o = o->next)
        scale_out = o != pi && (o->state == POOL_READY || o->state == POOL_STARTING);
    if (won)
        cl->claims_won++;
    else
        cl->claims_lost++;
    if (mine)
        claim_add(cl, a->app.name);
    if (!pi || pi->state != POOL_STARTING) { /* stopped meanwhile */
        kago__etcd_kv_free(&holder);
        if (mine && !has_local(&a->pool, NULL))
            claim_release(cl, a->app.name);
        return;
    }
    if (kago__place_start_after_claim(won, mine, scale_out)) {
        kago__slog(cl->srv, SLOG_INFO, a->app.name, NULL, "cluster: starting it on this node (%s)",
                   won    ? "claimed"
                   : mine ? "this node's claim"
                          : "scale-out");
        kago__etcd_kv_free(&holder);
        remote_unlink(r);
        pi->data = NULL;
        r->inst.removed = true;
        kago__instance_unref(&r->inst);
        local->start(&a->pool, pi);
        return;
    }
    kago__slog(cl->srv, SLOG_INFO, a->app.name, NULL, "cluster: node %s starts it: waiting for its instance",
               holder.key ? holder.value : "?");
    kago__etcd_kv_free(&holder);
    r->state = R_WAITING;
    struct rkey *k = rkey_pick(cl, a); /* it may be ready already */
    if (k)
        remote_bind(r, k);
}

static void claim_start(struct remote *r)
{
    struct cluster *cl = r->cl;
    const char *app = r->inst.app->app.name;
    r->want_lease = false;
    if ((!cl->registered || !cl->lease) && cl->unary_ok && cl->reg_call) { /* registering: claim after */
        r->state = R_WAITING;
        r->want_lease = true;
        return;
    }
    if (!cl->registered || !cl->lease) {
        remote_fail(r, "this node has no lease in etcd (%s): it starts no app another node could start too",
                    cl->last_error ? cl->last_error : "registering");
        return;
    }
    if (!cl->unary_ok) {
        remote_fail(r, "etcd cannot be reached to place it: %s",
                    cl->last_error ? cl->last_error : "no answer");
        return;
    }
    r->state = R_CLAIMING;
    cleanup_free char *key = xasprintf("%s%s", STARTING, app);
    r->call = kago__cluster_write(
        cl, "kv/txn", kago__etcd_req_claim(key, cl->node, strlen(cl->node), cl->lease), on_claim, r);
}

/* --- the pool's ops ----------------------------------------------------------------------------- */

static void c_start(struct pool *p, struct pool_inst *pi)
{
    struct cluster *cl = cl_of(p);
    struct app_rt *a = p->data;
    struct rkey *k = cl ? rkey_pick(cl, a) : NULL;
    enum place_step step =
        cl ? kago__place_start(k != NULL, has_local(p, pi), *claim_find(cl, a->app.name) != NULL)
           : PLACE_LOCAL;
    if (step == PLACE_LOCAL) {
        local->start(p, pi);
        return;
    }
    struct remote *r = remote_new(cl, p, pi);
    if (step == PLACE_BIND)
        remote_bind(r, k); /* ready at once (the pool allows it within start) */
    else
        claim_start(r);
}

static void c_ready(struct pool *p, struct pool_inst *pi)
{
    struct cluster *cl = cl_of(p);
    if (cl && !remote_of(pi))
        publish(cl, pi->data);
}

/* The app's last local instance drains and this node holds its claim: its key and the claim go in one
 * txn (one write instead of two). Returns false when that cannot be done (the put is in flight). */
static bool unpublish_last(struct cluster *cl, struct pool *p, struct pool_inst *pi)
{
    struct app_rt *a = p->data;
    struct claim **cp = claim_find(cl, a->app.name), *c = *cp;
    struct pub *pb = cl->pubs;
    while (pb && pb->inst != pi->data)
        pb = pb->next;
    if (!c || !pb || pb->call || !pb->written || has_local(p, pi) || cl->stopping || !cl->registered)
        return false;
    cleanup_free char *skey = xasprintf("%s%s", STARTING, a->app.name);
    const char *keys[] = {pb->key, skey};
    kago__cluster_write(cl, "kv/txn", kago__etcd_req_delete_keys(keys, 2), on_write, cl);
    pub_unlink(cl, pb);
    pub_free(pb);
    *cp = c->next;
    free(c->app);
    free(c);
    return true;
}

static void c_drain(struct pool *p, struct pool_inst *pi)
{
    struct cluster *cl = cl_of(p);
    if (cl && !remote_of(pi) && !unpublish_last(cl, p, pi))
        unpublish(cl, pi->data);
    local->drain(p, pi);
}

static void c_signal(struct pool *p, struct pool_inst *pi, int sig)
{
    struct remote *r = remote_of(pi);
    if (!r) {
        local->signal(p, pi, sig);
        return;
    }
    r->exit_pending = true; /* no process: it leaves the pool from the reap timer */
    if (r->cl)              /* (none after kago__cluster_free: serve removed every instance before) */
        uv_timer_start(&r->cl->reap_timer, on_reap, 0, 0);
}

static void remote_remove(struct remote *r)
{
    struct instance *inst = &r->inst;
    inst->pi = NULL;
    inst->removed = true;
    kago__etcd_cancel(r->call);
    r->call = NULL;
    remote_unlink(r);
    free(r->key);
    r->key = NULL;
    while (inst->conns) { /* as a local instance's (instance.c op_remove) */
        struct upconn *u = inst->conns;
        struct client *c = u->client;
        if (c && (c->state == C_TUNNEL || c->resp_started))
            kago__client_resp_truncated(c);
        else if (c)
            kago__client_upstream_failed(c, UV_ECONNRESET);
        kago__upconn_close(u);
    }
    kago__instance_unref(inst);
}

static void c_remove(struct pool *p, struct pool_inst *pi)
{
    struct cluster *cl = cl_of(p);
    struct remote *r = remote_of(pi);
    if (r) {
        remote_remove(r);
        return;
    }
    struct app_rt *a = p->data;
    if (cl)
        unpublish(cl, pi->data);
    local->remove(p, pi);
    if (cl && !has_local(p, pi))
        claim_release(cl, a->app.name);
}

static int c_freeze(struct pool *p, struct pool_inst *pi)
{
    return remote_of(pi) ? -1 : local->freeze(p, pi);
}

static int c_thaw(struct pool *p, struct pool_inst *pi)
{
    return remote_of(pi) ? -1 : local->thaw(p, pi);
}

static void c_dispatch(struct pool *p, struct pool_waiter *w, struct pool_inst *pi)
{
    local->dispatch(p, w, pi);
}

static void c_reject(struct pool *p, struct pool_waiter *w, int status)
{
    local->reject(p, w, status);
}

static void c_start_failed(struct pool *p, struct pool_inst *pi, enum pool_fail why, uint64_t delay_ms)
{
    local->start_failed(p, pi, why, delay_ms);
}

static void c_woken(struct pool *p)
{
    local->woken(p);
}

static void c_touched(struct pool *p)
{
    local->touched(p);
}

const struct pool_ops kago__cluster_pool_ops = {
    .start = c_start,
    .dispatch = c_dispatch,
    .reject = c_reject,
    .drain = c_drain,
    .signal = c_signal,
    .remove = c_remove,
    .freeze = c_freeze,
    .thaw = c_thaw,
    .start_failed = c_start_failed,
    .woken = c_woken,
    .touched = c_touched,
    .ready = c_ready,
    .may_scale_out = kago__scaler_may_scale_out, /* (scale up before out, on every node alike) */
};

/* --- events from etcd ----------------------------------------------------------------------------- */

static struct app_rt *app_find(struct cluster *cl, const char *name, size_t len)
{
    for (struct app_rt *a = cl->srv->apps; a; a = a->next)
        if (!a->removed && strlen(a->app.name) == len && !memcmp(a->app.name, name, len))
            return a;
    return NULL;
}

/* A bound remote instance whose key went: no new request goes there (the ones in flight finish). */
static void retire_key(struct cluster *cl, const char *key)
{
    for (bool again = true; again;) {
        again = false;
        for (struct remote *r = cl->remotes; r && !again; r = r->next)
            if (r->state == R_BOUND && r->inst.pi && r->key && (!key || !strcmp(r->key, key)) &&
                r->inst.pi->state == POOL_READY && (key || !rkey_find(cl, r->key))) {
                kago__pool_retire(&r->inst.app->pool, r->inst.pi, kago__serve_now_ms());
                again = true; /* the list may have changed under us */
            }
    }
}

static void rkey_del(struct cluster *cl, const char *key)
{
    struct rkey *k = rkey_find(cl, key);
    if (!k)
        return;
    free(k->key);
    free(k->app);
    free(k->node);
    size_t i = (size_t)(k - cl->rkeys);
    memmove(k, k + 1, (cl->nrkeys - i - 1) * sizeof(*k));
    cl->nrkeys--;
}

void kago__place_instance_key(struct cluster *cl, const struct etcd_kv *kv, bool deleted)
{
    /* APP/NODE/INSTANCE */
    const char *app = kv->key + strlen(INSTANCES), *s1 = strchr(app, '/'),
               *s2 = s1 ? strchr(s1 + 1, '/') : NULL;
    if (!s2)
        return;
    size_t nlen = (size_t)(s2 - s1 - 1);
    if (nlen == strlen(cl->node) && !memcmp(s1 + 1, cl->node, nlen)) { /* this node's own */
        for (struct pub *pb = cl->pubs; deleted && pb; pb = pb->next)
            if (pb->inst && !pb->call && !strcmp(pb->key, kv->key))
                pb->written =
                    false; /* deleted by someone else while it runs: put again (kago__place_retry) */
        return;
    }
    if (deleted) {
        rkey_del(cl, kv->key);
        retire_key(cl, kv->key);
        return;
    }
    struct json_object *v = json_tokener_parse(kv->value), *o = NULL;
    struct sockaddr_in sa;
    int bad = !v || !json_object_object_get_ex(v, "addr", &o) || parse_addr(json_object_get_string(o), &sa);
    json_object_put(v);
    if (bad) {
        kago__slog(cl->srv, SLOG_WARN, NULL, NULL, "cluster: %s: no IPv4 \"addr\" IP:PORT in it, ignored",
                   kv->key);
        return;
    }
    struct rkey *k = rkey_find(cl, kv->key);
    if (!k) {
        cl->rkeys = xrealloc(cl->rkeys, (cl->nrkeys + 1) * sizeof(*cl->rkeys));
        k = &cl->rkeys[cl->nrkeys++];
        *k = (struct rkey){.key = xstrdup(kv->key),
                           .app = xasprintf("%.*s", (int)(s1 - app), app),
                           .node = xasprintf("%.*s", (int)nlen, s1 + 1)};
    }
    k->sa = sa;
    k->bad = false;
    /* remote instances waiting for the winner's instance take it */
    struct app_rt *a = app_find(cl, app, (size_t)(s1 - app));
    for (struct remote *r = cl->remotes; r && a; r = r->next)
        if (r->inst.app == a && r->state == R_WAITING && r->inst.pi) {
            remote_bind(r, k);
            break; /* one per key (pool_ready may have changed the list) */
        }
}

void kago__place_starting_gone(struct cluster *cl, const char *app)
{
    /* the winner went without an instance (its lease expired, its start failed): claim again */
    for (struct remote *r = cl->remotes; r; r = r->next)
        if (r->state == R_WAITING && r->inst.pi && !strcmp(r->inst.app->app.name, app) && !r->call) {
            struct rkey *k = rkey_pick(cl, r->inst.app);
            if (k)
                remote_bind(r, k);
            else
                claim_start(r);
        }
}

void kago__place_relisted(struct cluster *cl)
{
    retire_key(cl, NULL); /* every bound one whose key is not listed */
}

void kago__rkeys_clear(struct cluster *cl)
{
    for (size_t i = 0; i < cl->nrkeys; i++) {
        free(cl->rkeys[i].key);
        free(cl->rkeys[i].app);
        free(cl->rkeys[i].node);
    }
    free(cl->rkeys);
    cl->rkeys = NULL;
    cl->nrkeys = 0;
}

void kago__place_free(struct cluster *cl)
{
    kago__rkeys_clear(cl);
    while (cl->pubs) {
        struct pub *pb = cl->pubs;
        cl->pubs = pb->next;
        pub_free(pb);
    }
    while (cl->claims) {
        struct claim *c = cl->claims;
        cl->claims = c->next;
        free(c->app);
        free(c);
    }
    for (struct remote *r = cl->remotes; r; r = r->next) {
        r->call = NULL; /* (cancelled with the client) */
        r->cl = NULL;
    }
}

/* --- hooks for upstream.c and conn.c ----------------------------------------------------------------- */

int kago__cluster_socket(struct instance *inst, struct sockaddr_in *sa)
{
    struct remote *r = inst->remote;
    if (r->state != R_BOUND)
        return -EHOSTUNREACH;
    *sa = r->sa;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd >= 0 && r->cl)
        r->cl->forwarded++;
    return fd < 0 ? -errno : fd;
}

void kago__cluster_peer_failed(struct instance *inst, int status)
{
    struct remote *r = inst->remote;
    struct cluster *cl = r->cl;
    if (!cl || r->state != R_BOUND || !r->key)
        return;
    struct rkey *k = rkey_find(cl, r->key);
    if (k && !k->bad) {
        k->bad = true;
        kago__slog(cl->srv, SLOG_WARN, inst->app->app.name, NULL,
                   "cluster: node %s does not answer at %s (%s): its instance %s is not used until it is "
                   "published again",
                   k->node, inet_ntoa(k->sa.sin_addr), uv_strerror(status), inst->name);
    }
}

bool kago__cluster_trusts(const struct server *srv, const char *ip)
{
    const struct cluster *cl = srv->cluster;
    if (!cl || !ip)
        return false;
    size_t n = strlen(ip);
    for (size_t i = 0; i < cl->nnodes; i++) {
        const char *addr = cl->nodes[i].addr;
        if (addr && !strncmp(addr, ip, n) && addr[n] == ':')
            return true;
    }
    return false;
}
