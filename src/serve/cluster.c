/* kago serve --cluster: the node's side of the etcd state (docs/cluster.md).
 *
 *   /kago/nodes/NODE   {"addr": "--advertise", "pid": ...} on the node's lease (TTL --node-ttl, kept
 *                      alive every TTL/3; a lost lease is granted again and the key put again)
 *   /kago/apps/APP     the app's Kagofile source (`kago app put`), no lease
 *
 * At start, and whenever the watch cannot resume: list /kago/ (pages of 1000 pinned to the first page's
 * revision R), apply the apps (each app evaluated once per mod_revision), then watch /kago/ from R+1.
 * A watch that ends (etcd gone) resumes from the last revision seen, with backoff; a watch cancelled
 * because that revision was compacted lists again. Meanwhile serve routes what it knows: etcd being away
 * never stops a running app. Everything runs on serve's loop through etcd.c's non-blocking calls. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cluster_int.h"
#include "util.h"

static void list_start(struct cluster *cl);
static void watch_start(struct cluster *cl);
static void reg_start(struct cluster *cl);

/* --- liveness and logging ----------------------------------------------------------------------- */

/* etcd did not answer: logged once per outage (the same error again is not repeated). */
static void etcd_down(struct cluster *cl, const char *what, const struct kago_error *err)
{
    if (!cl->down_logged || !cl->last_error || strcmp(cl->last_error, err->msg) != 0)
        kago__slog(cl->srv, SLOG_ERR, NULL, NULL, "cluster: %s: %s; serving the %s known apps meanwhile",
                   what, err->msg, cl->srv->apps ? "last" : "(no)");
    free(cl->last_error);
    cl->last_error = xstrdup(err->msg);
    cl->down_logged = true;
}

static void etcd_back(struct cluster *cl)
{
    if (cl->down_logged)
        kago__slog(cl->srv, SLOG_INFO, NULL, NULL, "cluster: etcd %s answers again",
                   kago__etcd_endpoint(cl->etcd));
    cl->down_logged = false;
}

static void on_retry(uv_timer_t *t)
{
    struct cluster *cl = t->data;
    if (cl->stopping || cl->list_call || cl->watch_call)
        return;
    if (cl->relist_wanted || !cl->rev)
        list_start(cl);
    else
        watch_start(cl);
}

/* The list (relist, or no revision yet) or the watch again, after 100 ms, 200 ms ... up to 5 s. */
static void schedule_retry(struct cluster *cl, bool relist)
{
    if (cl->stopping)
        return;
    cl->relist_wanted |= relist;
    cl->backoff_ms = cl->backoff_ms ? cl->backoff_ms * 2 : BACKOFF_MIN;
    if (cl->backoff_ms > BACKOFF_MAX)
        cl->backoff_ms = BACKOFF_MAX;
    uv_timer_start(&cl->retry_timer, on_retry, cl->backoff_ms, 0);
}

/* --- apps and nodes ----------------------------------------------------------------------------- */

static void app_put(struct cluster *cl, const char *name, const char *src, size_t len, int64_t mod_rev)
{
    struct server *srv = cl->srv;
    struct app_rt *run = kago__server_app(srv, name);
    if (run && run->etcd_rev == mod_rev)
        return; /* a list again: unchanged */
    if (!*name || strchr(name, '/')) {
        kago__slog(srv, SLOG_ERR, NULL, NULL, "cluster: %s%s: not an app name, ignored", APPS, name);
        return;
    }
    cleanup_free char *where = xasprintf("etcd:%s%s", APPS, name);
    struct kago_app app = {0};
    struct kago_error *err = NULL;
    bool had = run != NULL;
    if (kago__app_from_source(where, src, len, name, &app, &err) < 0 ||
        kago__server_app_set(srv, &app, mod_rev, &err) < 0) {
        kago__slog(srv, SLOG_ERR, name, NULL, "revision %" PRId64 " refused%s: %s", mod_rev,
                   had ? ", the running definition is kept" : "", err->msg);
        kago_error_free(err);
        kago_app_free(&app);
        return;
    }
    kago__slog(srv, SLOG_INFO, name, NULL, "%s from etcd (revision %" PRId64 ")", had ? "updated" : "added",
               mod_rev);
}

static void app_delete(struct cluster *cl, const char *name)
{
    if (kago__server_app_drop(cl->srv, name))
        kago__slog(cl->srv, SLOG_INFO, name, NULL, "deleted from etcd: draining");
}

static int by_name(const void *a, const void *b)
{
    return strcmp(((const struct cnode *)a)->name, ((const struct cnode *)b)->name);
}

static void cnode_free(struct cnode *n)
{
    free(n->name);
    free(n->addr);
}

/* A node's key put (value {"addr","pid","load"}) or deleted. */
static void node_seen(struct cluster *cl, const char *name, const struct etcd_kv *kv, bool present)
{
    size_t i = 0;
    while (i < cl->nnodes && strcmp(cl->nodes[i].name, name))
        i++;
    if (!present) {
        if (i < cl->nnodes) {
            cnode_free(&cl->nodes[i]);
            memmove(&cl->nodes[i], &cl->nodes[i + 1], (cl->nnodes - i - 1) * sizeof(*cl->nodes));
            cl->nnodes--;
        }
        return;
    }
    if (i == cl->nnodes) {
        cl->nodes = xrealloc(cl->nodes, (cl->nnodes + 1) * sizeof(*cl->nodes));
        cl->nodes[cl->nnodes++] = (struct cnode){.name = xstrdup(name)};
    }
    struct cnode *n = &cl->nodes[i];
    struct json_object *v = json_tokener_parse(kv->value), *o = NULL;
    free(n->addr);
    n->addr = v && json_object_object_get_ex(v, "addr", &o) ? xstrdup(json_object_get_string(o)) : NULL;
    n->load = 0;
    kago__etcd_int(v, "load", &n->load);
    json_object_put(v);
    qsort(cl->nodes, cl->nnodes, sizeof(*cl->nodes), by_name);
}

static void nodes_clear(struct cluster *cl)
{
    for (size_t i = 0; i < cl->nnodes; i++)
        cnode_free(&cl->nodes[i]);
    free(cl->nodes);
    cl->nodes = NULL;
    cl->nnodes = 0;
}

/* The "addr" of a node key's value ("" when it has none). */
static char *value_addr(const struct etcd_kv *kv)
{
    struct json_object *v = json_tokener_parse(kv->value), *a = NULL;
    char *addr = xstrdup(json_object_object_get_ex(v, "addr", &a) && json_object_is_type(a, json_type_string)
                             ? json_object_get_string(a)
                             : "");
    json_object_put(v);
    return addr;
}

/* One key's new state (a PUT with its value, or a DELETE) from the list or the watch. */
static void apply_kv(struct cluster *cl, const struct etcd_kv *kv, bool deleted)
{
    if (!strncmp(kv->key, APPS, strlen(APPS))) {
        const char *name = kv->key + strlen(APPS);
        if (deleted)
            app_delete(cl, name);
        else
            app_put(cl, name, kv->value, kv->value_len, kv->mod_rev);
    } else if (!strncmp(kv->key, INSTANCES, strlen(INSTANCES))) {
        kago__place_instance_key(cl, kv, deleted);
    } else if (!strncmp(kv->key, STARTING, strlen(STARTING))) {
        if (deleted)
            kago__place_starting_gone(cl, kv->key + strlen(STARTING));
    } else if (!strncmp(kv->key, NODES, strlen(NODES))) {
        const char *name = kv->key + strlen(NODES);
        if (!deleted && !strcmp(kv->key, cl->node_key) && cl->registered && kv->lease != cl->lease &&
            !cl->dup_logged) { /* (an upgrade's new serve; or a put by hand: registration is a txn) */
            cleanup_free char *addr = value_addr(kv);
            bool same = !strcmp(addr, cl->addr);
            kago__slog(
                cl->srv, same ? SLOG_INFO : SLOG_ERR, NULL, NULL,
                same ? "cluster: a serve of this node's address took over node %s (%.*s)"
                     : "cluster: another serve registered as node %s (%.*s): two serves with one --node "
                       "name take each other's instances for their own; give each its own --node",
                cl->node, (int)(kv->value_len < 200 ? kv->value_len : 200), kv->value);
            cl->dup_logged = true;
        }
        node_seen(cl, name, kv, !deleted);
        if (deleted && !strcmp(kv->key, cl->node_key) && cl->registered && !cl->stopping) {
            kago__slog(cl->srv, SLOG_WARN, NULL, NULL,
                       "cluster: this node's key %s was deleted: registering again", cl->node_key);
            cl->registered = false;
            reg_start(cl);
        }
    }
}

/* --- list ---------------------------------------------------------------------------------------- */

static void listed_free(struct cluster *cl)
{
    for (size_t i = 0; i < cl->nlisted; i++)
        kago__etcd_kv_free(&cl->listed[i]);
    free(cl->listed);
    cl->listed = NULL;
    cl->nlisted = 0;
}

/* The whole list is in: apps and nodes become what it says (apps not in it drain away). */
static void list_apply(struct cluster *cl)
{
    struct server *srv = cl->srv;
    nodes_clear(cl);
    kago__rkeys_clear(cl);
    for (size_t i = 0; i < cl->nlisted; i++)
        apply_kv(cl, &cl->listed[i], false);
    kago__place_relisted(cl);
    for (struct app_rt *a = srv->apps, *next; a; a = next) {
        next = a->next;
        if (a->removed)
            continue;
        bool found = false;
        for (size_t i = 0; i < cl->nlisted && !found; i++)
            found = !strncmp(cl->listed[i].key, APPS, strlen(APPS)) &&
                    !strcmp(cl->listed[i].key + strlen(APPS), a->app.name);
        if (!found)
            app_delete(cl, a->app.name);
    }
    size_t napps = 0;
    for (struct app_rt *a = srv->apps; a; a = a->next)
        napps += !a->removed;
    kago__slog(srv, SLOG_INFO, NULL, NULL,
               "cluster: %zu apps, %zu nodes at revision %" PRId64 " from etcd %s; watching from %" PRId64,
               napps, cl->nnodes, cl->list_rev, kago__etcd_endpoint(cl->etcd), cl->list_rev + 1);
    cl->rev = cl->list_rev;
    listed_free(cl);
}

static void on_list(void *arg, struct json_object *resp, const struct kago_error *err)
{
    struct cluster *cl = arg;
    cl->list_call = NULL;
    struct etcd_range r;
    struct kago_error *perr = NULL;
    if (!resp) {
        cl->unary_ok = false;
        listed_free(cl);
        etcd_down(cl, "listing the apps", err);
        schedule_retry(cl, true);
        return;
    }
    if (kago__etcd_parse_range(resp, &r, &perr) < 0) {
        listed_free(cl);
        kago_error_prefix(&perr, "etcd %s kv/range", kago__etcd_endpoint(cl->etcd));
        etcd_down(cl, "listing the apps", perr);
        kago_error_free(perr);
        schedule_retry(cl, true);
        return;
    }
    cl->unary_ok = true;
    etcd_back(cl);
    if (!cl->registered && !cl->reg_call && !cl->stopping)
        reg_start(cl); /* at once, not at the next keepalive tick: cold apps wait for the lease */
    if (!cl->list_rev)
        cl->list_rev = r.revision;
    /* a next page starts at the last key of this one, which it repeats */
    size_t skip = cl->nlisted && r.n && !strcmp(r.kvs[0].key, cl->listed[cl->nlisted - 1].key);
    cl->listed = xrealloc(cl->listed, (cl->nlisted + r.n) * sizeof(*cl->listed));
    for (size_t i = skip; i < r.n; i++) {
        cl->listed[cl->nlisted++] = r.kvs[i];
        memset(&r.kvs[i], 0, sizeof(r.kvs[i]));
    }
    bool more = r.more && r.n > skip;
    kago__etcd_range_free(&r);
    if (more) {
        cleanup_free char *end = kago__etcd_prefix_end(PREFIX);
        cl->list_call =
            kago__etcd_call(cl->etcd, "kv/range",
                            kago__etcd_req_range(cl->listed[cl->nlisted - 1].key, end, cl->list_rev, PAGE),
                            CALL_MS, on_list, cl);
        return;
    }
    cl->relist_wanted = false;
    list_apply(cl);
    watch_start(cl);
}

static void list_start(struct cluster *cl)
{
    if (cl->watch_call) {
        kago__etcd_cancel(cl->watch_call);
        cl->watch_call = NULL;
        cl->watching = false;
    }
    listed_free(cl);
    cl->list_rev = 0;
    cleanup_free char *end = kago__etcd_prefix_end(PREFIX);
    cl->list_call = kago__etcd_call(cl->etcd, "kv/range", kago__etcd_req_range(PREFIX, end, 0, PAGE), CALL_MS,
                                    on_list, cl);
}

/* --- watch --------------------------------------------------------------------------------------- */

static void on_watch_line(void *arg, const char *line, size_t len)
{
    struct cluster *cl = arg;
    struct etcd_watch_msg m;
    struct kago_error *err = NULL;
    if (kago__etcd_parse_watch(line, len, &m, &err) < 0) {
        kago_error_prefix(&err, "etcd %s watch", kago__etcd_endpoint(cl->etcd));
        etcd_down(cl, "watching", err);
        kago_error_free(err);
        kago__etcd_cancel(cl->watch_call);
        cl->watch_call = NULL;
        cl->watching = false;
        schedule_retry(cl, false);
        return;
    }
    if (m.canceled) {
        kago__etcd_cancel(cl->watch_call);
        cl->watch_call = NULL;
        cl->watching = false;
        if (m.compact_revision > 0) {
            kago__slog(cl->srv, SLOG_WARN, NULL, NULL,
                       "cluster: etcd compacted its history past revision %" PRId64 " (oldest kept: %" PRId64
                       "): listing the apps again",
                       cl->rev + 1, m.compact_revision);
            cl->backoff_ms = 0;
            list_start(cl);
        } else {
            struct kago_error e = {.msg = m.cancel_reason ? m.cancel_reason : "watch cancelled"};
            etcd_down(cl, "watching", &e);
            schedule_retry(cl, false);
        }
        kago__etcd_watch_msg_free(&m);
        return;
    }
    if (m.created && m.revision > 0 && m.revision < cl->rev) {
        /* etcd is behind what this node saw: restored from an older snapshot, or made anew. A watch from
         * the old revision would never see what is written there now: list again */
        kago__slog(cl->srv, SLOG_WARN, NULL, NULL,
                   "cluster: etcd's revision went back from %" PRId64 " to %" PRId64
                   " (restored or made anew): listing the apps again",
                   cl->rev, m.revision);
        kago__etcd_cancel(cl->watch_call);
        cl->watch_call = NULL;
        cl->watching = false;
        cl->etcd_rev = m.revision;
        cl->backoff_ms = 0;
        kago__etcd_watch_msg_free(&m);
        list_start(cl);
        if (cl->registered && !cl->reg_call && !cl->stopping) { /* (its leases are not there either) */
            cl->registered = false;
            reg_start(cl);
        }
        return;
    }
    if (m.created) {
        cl->watching = true;
        cl->backoff_ms = 0;
        etcd_back(cl);
    }
    for (size_t i = 0; i < m.nev; i++) {
        apply_kv(cl, &m.ev[i].kv, m.ev[i].type == ETCD_EV_DELETE);
        if (m.ev[i].kv.mod_rev > cl->rev)
            cl->rev = m.ev[i].kv.mod_rev;
    }
    /* a progress notification: every event up to its revision has been sent */
    if (!m.nev && !m.created && m.revision > cl->rev)
        cl->rev = m.revision;
    kago__etcd_watch_msg_free(&m);
}

static void on_watch_end(void *arg, struct json_object *resp, const struct kago_error *err)
{
    struct cluster *cl = arg;
    cl->watch_call = NULL;
    cl->watching = false;
    etcd_down(cl, "watching", err);
    schedule_retry(cl, false);
}

static void watch_start(struct cluster *cl)
{
    cleanup_free char *end = kago__etcd_prefix_end(PREFIX);
    cl->watch_call = kago__etcd_stream(cl->etcd, "watch", kago__etcd_req_watch(PREFIX, end, cl->rev + 1),
                                       CALL_MS, on_watch_line, on_watch_end, cl);
}

/* --- the node's key and lease ---------------------------------------------------------------- */

struct etcd_call *kago__cluster_write(struct cluster *cl, const char *op, struct json_object *body,
                                      etcd_done_cb cb, void *arg)
{
    cl->writes++;
    return kago__etcd_call(cl->etcd, op, body, CALL_MS, cb, arg);
}

/* {"addr":"--advertise","pid":N,"load":this node's instances}: other nodes forward to addr and spread
 * new instances by load. */
static void node_val_make(struct cluster *cl)
{
    cl->load_published = kago__place_local_load(cl);
    struct json_object *v = json_object_new_object();
    json_object_object_add(v, "addr", json_object_new_string(cl->addr));
    json_object_object_add(v, "pid", json_object_new_int(getpid()));
    json_object_object_add(v, "load", json_object_new_int64(cl->load_published));
    free(cl->node_val);
    cl->node_val = xstrdup(json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN));
    json_object_put(v);
}

static void on_load_put(void *arg, struct json_object *resp, const struct kago_error *err)
{
    struct cluster *cl = arg;
    cl->load_call = NULL;
    if (!resp)
        cl->load_published = -1; /* again at the next tick */
}

/* The header revision of a unary response: how far etcd is (the watch lag is measured against it). */
static void saw_revision(struct cluster *cl, struct json_object *resp)
{
    struct json_object *h = NULL;
    int64_t rev = 0;
    if (json_object_object_get_ex(resp, "header", &h) && kago__etcd_int(h, "revision", &rev) &&
        rev > cl->etcd_rev)
        cl->etcd_rev = rev;
}

static void on_reg_put(void *arg, struct json_object *resp, const struct kago_error *err)
{
    struct cluster *cl = arg;
    cl->reg_call = NULL;
    if (!resp) {
        cl->unary_ok = false;
        etcd_down(cl, "registering this node", err);
        return; /* the next keepalive tick tries again */
    }
    cl->unary_ok = true;
    etcd_back(cl);
    cl->registered = true;
    kago__slog(cl->srv, SLOG_INFO, NULL, NULL,
               "cluster: registered as %s (lease %" PRIx64 ", TTL %" PRId64 " s)", cl->node_key,
               (uint64_t)cl->lease, cl->ttl_s);
    kago__place_registered(cl);
}

/* The node key is put only where none is (a txn on its create_revision): a second serve given the same
 * --node name (cloned machines share a host name, the default) must not take the first one's instances for
 * its own. A key of this node's own address is its own earlier serve's (a restart within the TTL, an
 * upgrade's old serve): taken over. Another address's: refused, said once per lease, tried again at each
 * keepalive tick (the other serve may be gone, its lease running out). */
static void on_reg_txn(void *arg, struct json_object *resp, const struct kago_error *err)
{
    struct cluster *cl = arg;
    cl->reg_call = NULL;
    bool won = false;
    struct etcd_kv holder;
    struct kago_error *perr = NULL;
    if (resp && kago__etcd_txn_result(resp, &won, &holder, &perr) < 0) {
        etcd_down(cl, "registering this node", perr);
        kago_error_free(perr);
        return;
    }
    if (!resp || won) {
        on_reg_put(cl, resp, err);
        return;
    }
    cleanup_free char *addr = value_addr(&holder);
    if (!strcmp(addr, cl->addr)) {
        kago__slog(cl->srv, SLOG_INFO, NULL, NULL,
                   "cluster: node key %s was an earlier serve's of this address (lease %" PRIx64
                   "): taking it over",
                   cl->node_key, (uint64_t)holder.lease);
        kago__etcd_kv_free(&holder);
        cl->reg_call = kago__cluster_write(
            cl, "kv/put", kago__etcd_req_put(cl->node_key, cl->node_val, strlen(cl->node_val), cl->lease),
            on_reg_put, cl);
        return;
    }
    free(cl->last_error);
    cl->last_error =
        xasprintf("node name %s is another serve's (%s, lease %" PRIx64 "): give each serve its own "
                  "--node",
                  cl->node, holder.value, (uint64_t)holder.lease);
    if (cl->refused_lease != holder.lease)
        kago__slog(cl->srv, SLOG_ERR, NULL, NULL,
                   "cluster: not registering: %s; it starts no app meanwhile (tried again every %" PRId64
                   " ms: the other serve may be gone)",
                   cl->last_error, cl->ttl_s * 1000 / 3);
    cl->refused_lease = holder.lease;
    kago__etcd_kv_free(&holder);
    kago__etcd_call(cl->etcd, "lease/revoke", kago__etcd_req_lease_id(cl->lease), CALL_MS, NULL, NULL);
    cl->lease = 0;
}

static void on_grant(void *arg, struct json_object *resp, const struct kago_error *err)
{
    struct cluster *cl = arg;
    cl->reg_call = NULL;
    int64_t id = 0;
    if (!resp || !kago__etcd_int(resp, "ID", &id) || !id) {
        cl->unary_ok = false;
        struct kago_error e = {.msg = "lease/grant: no lease ID in the response"};
        etcd_down(cl, "registering this node", resp ? &e : err);
        return;
    }
    cl->lease = id;
    node_val_make(cl);
    cl->reg_call = kago__cluster_write(
        cl, "kv/txn", kago__etcd_req_claim(cl->node_key, cl->node_val, strlen(cl->node_val), cl->lease),
        on_reg_txn, cl);
}

static void reg_start(struct cluster *cl)
{
    if (cl->reg_call || cl->stopping)
        return;
    cl->lease = 0;
    cl->registered = false;
    cl->reg_call = kago__etcd_call(cl->etcd, "lease/grant", kago__etcd_req_lease_grant(cl->ttl_s), CALL_MS,
                                   on_grant, cl);
}

static uint64_t ka_sent_us;

static void on_keepalive(void *arg, struct json_object *resp, const struct kago_error *err)
{
    struct cluster *cl = arg;
    cl->ka_call = NULL;
    cl->rtt_us = kago__serve_now_us() - ka_sent_us;
    if (!resp) {
        cl->unary_ok = false;
        etcd_down(cl, "keeping this node's lease alive", err);
        return;
    }
    cl->unary_ok = true;
    etcd_back(cl);
    struct json_object *res = NULL;
    int64_t ttl = 0;
    json_object_object_get_ex(resp, "result", &res);
    saw_revision(cl, res);
    if (!kago__etcd_int(res, "TTL", &ttl) || ttl <= 0) { /* expired (etcd was away longer than the TTL) */
        kago__slog(cl->srv, SLOG_WARN, NULL, NULL,
                   "cluster: lease %" PRIx64 " of %s expired: registering again", (uint64_t)cl->lease,
                   cl->node_key);
        reg_start(cl);
    }
}

static void on_ka_tick(uv_timer_t *t)
{
    struct cluster *cl = t->data;
    if (cl->stopping || cl->reg_call || cl->ka_call)
        return;
    if (!cl->registered) {
        reg_start(cl);
        return;
    }
    ka_sent_us = kago__serve_now_us();
    cl->ka_call = kago__etcd_call(cl->etcd, "lease/keepalive", kago__etcd_req_lease_id(cl->lease), CALL_MS,
                                  on_keepalive, cl);
    kago__place_retry(cl);
    /* the load is published per node, at most once a tick, and only when it changed */
    if (!cl->load_call && kago__place_local_load(cl) != cl->load_published) {
        node_val_make(cl);
        cl->load_call = kago__cluster_write(
            cl, "kv/put", kago__etcd_req_put(cl->node_key, cl->node_val, strlen(cl->node_val), cl->lease),
            on_load_put, cl);
    }
}

/* --- the server's hooks -------------------------------------------------------------------------- */

/* Whether other nodes can reach addr: IPv4 IP:PORT, the IP not 0.0.0.0 (every node would forward to
 * itself), the port 1 to 65535. */
static bool advertisable(const char *addr)
{
    struct sockaddr_storage ss;
    return kago__server_parse_addr(addr, &ss, NULL) == 0 && ss.ss_family == AF_INET &&
           ((struct sockaddr_in *)&ss)->sin_addr.s_addr != htonl(INADDR_ANY);
}

int kago__cluster_start(struct server *srv, struct kago_error **err)
{
    const struct kago_serve_opts *o = &srv->opts;
    char host[256] = "";
    const char *node = o->node;
    if (!node) {
        gethostname(host, sizeof(host) - 1);
        node = host;
    }
    if (!*node || strchr(node, '/'))
        return kago_error_set(err, EINVAL, "serve: --node \"%s\": a node name is not empty and has no '/'",
                              node);
    /* (default: the first listener, as other nodes would reach it when it is not a loopback one) */
    const char *addr = o->advertise ? o->advertise : o->nlisten ? o->listen[0].addr : "127.0.0.1:8080";
    if (!advertisable(addr))
        return kago_error_set(
            err, EINVAL,
            "serve: %s %s: other nodes reach this one there: an IPv4 address (not 0.0.0.0) and "
            "port, IP:PORT%s",
            o->advertise ? "--advertise" : "the first --listen (the default --advertise)", addr,
            o->advertise ? "" : "; give --advertise");
    struct etcd_client *etcd =
        kago__etcd_new(srv->loop, o->cluster, &(struct etcd_tls){o->etcd_ca, o->etcd_cert, o->etcd_key}, err);
    if (!etcd)
        return -1;
    struct cluster *cl = xcalloc(1, sizeof(*cl));
    cl->srv = srv;
    cl->etcd = etcd;
    cl->ttl_s = o->node_ttl_s ? o->node_ttl_s : 5;
    cl->node = xstrdup(node);
    cl->node_key = xasprintf("%s%s", NODES, node);
    cl->addr = xstrdup(addr);
    uv_timer_init(srv->loop, &cl->ka_timer);
    uv_timer_init(srv->loop, &cl->retry_timer);
    uv_timer_init(srv->loop, &cl->reap_timer);
    cl->ka_timer.data = cl->retry_timer.data = cl->reap_timer.data = cl;
    cl->timers = 3;
    srv->cluster = cl;
    uint64_t every = (uint64_t)cl->ttl_s * 1000 / 3;
    uv_timer_start(&cl->ka_timer, on_ka_tick, every, every);
    kago__slog(srv, SLOG_INFO, NULL, NULL, "cluster: node %s (%s), etcd %s", node, addr, o->cluster);
    reg_start(cl);
    list_start(cl);
    return 0;
}

static void on_revoked(void *arg, struct json_object *resp, const struct kago_error *err)
{
    struct cluster *cl = arg;
    cl->revoke_call = NULL;
    if (resp)
        kago__slog(cl->srv, SLOG_INFO, NULL, NULL, "cluster: lease revoked: %s is gone", cl->node_key);
    else
        kago__slog(cl->srv, SLOG_WARN, NULL, NULL, "cluster: revoking the lease: %s; %s goes when it expires",
                   err->msg, cl->node_key);
    kago__server_maybe_exit(cl->srv);
}

void kago__cluster_stop(struct server *srv)
{
    struct cluster *cl = srv->cluster;
    if (!cl || cl->stopping)
        return;
    cl->stopping = true;
    uv_timer_stop(&cl->ka_timer);
    uv_timer_stop(&cl->retry_timer);
    struct etcd_call **calls[] = {&cl->ka_call, &cl->reg_call, &cl->list_call, &cl->watch_call,
                                  &cl->load_call};
    for (size_t i = 0; i < sizeof(calls) / sizeof(calls[0]); i++) {
        kago__etcd_cancel(*calls[i]);
        *calls[i] = NULL;
    }
    cl->watching = false;
    if (cl->lease)
        cl->revoke_call = kago__etcd_call(cl->etcd, "lease/revoke", kago__etcd_req_lease_id(cl->lease),
                                          REVOKE_MS, on_revoked, cl);
}

bool kago__cluster_busy(struct server *srv)
{
    return srv->cluster && srv->cluster->revoke_call;
}

void kago__cluster_relist(struct server *srv)
{
    struct cluster *cl = srv->cluster;
    if (!cl || cl->stopping || cl->list_call)
        return;
    uv_timer_stop(&cl->retry_timer);
    cl->backoff_ms = 0;
    list_start(cl);
}

static void on_timer_closed(uv_handle_t *h)
{
    struct cluster *cl = h->data;
    if (--cl->timers == 0) {
        free(cl->node);
        free(cl->addr);
        free(cl->node_key);
        free(cl->node_val);
        free(cl->last_error);
        free(cl);
    }
}

void kago__cluster_free(struct server *srv)
{
    struct cluster *cl = srv->cluster;
    if (!cl)
        return;
    kago__cluster_stop(srv);
    kago__etcd_cancel(cl->revoke_call);
    cl->revoke_call = NULL;
    kago__etcd_free(cl->etcd);
    listed_free(cl);
    nodes_clear(cl);
    kago__place_free(cl);
    srv->cluster = NULL;
    uv_close((uv_handle_t *)&cl->ka_timer, on_timer_closed);
    uv_close((uv_handle_t *)&cl->retry_timer, on_timer_closed);
    uv_close((uv_handle_t *)&cl->reap_timer, on_timer_closed);
}

void kago__cluster_stats(struct server *srv, struct cluster_stats *st)
{
    struct cluster *cl = srv->cluster;
    *st = (struct cluster_stats){0};
    if (!cl)
        return;
    st->nodes = cl->nnodes;
    st->etcd_up = cl->watching && cl->unary_ok;
    st->revision = cl->rev;
    st->rtt_us = cl->rtt_us;
    st->lag = cl->etcd_rev > cl->rev ? cl->etcd_rev - cl->rev : 0;
    st->forwarded = cl->forwarded;
    st->writes = cl->writes;
}
