/* kago serve — the server: one libuv loop, the listeners, the apps (loaded from Kagofiles,
 * reloaded on SIGHUP), the pool tick, and an orderly shutdown on SIGTERM that leaves nothing. */
#include <arpa/inet.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <kago/checkpoint.h>

#include "container_int.h"
#include "ident.h"
#include "kagofile.h"
#include "serve_int.h"
#include "spawner.h"
#include "util.h"

/* TICK_RECORDS: records a tick rewrites at most (~30 us each): SIGTERM with 3,000 instances changes every
 * one of them (87 ms in one turn, the admin API waiting), and 5,000 busy instances rewrite their idle
 * clocks every second; what is left waits for the next tick. */
#define TICK_MS        25
#define TICK_RECORDS   128
#define LOOP_CALM_MS   2000 /* --loop-priority: the loops stay raised this long after a storm */
#define TLS_CHECK_MS   2000 /* certificate files are looked at this often */
#define DEFAULT_LISTEN "127.0.0.1:8080"

void kago_serve_opts_init(struct kago_serve_opts *o)
{
    *o = (struct kago_serve_opts){
        .admin = "127.0.0.1:9090",
        .root = KAGO_DEFAULT_ROOT,
        .access_log = "-",
        .header_timeout_ms = 10000,
        .keepalive_timeout_ms = 75000,
        .connect_timeout_ms = 5000,
        .response_timeout_ms = 60000,
        .send_timeout_ms = 60000,
        .max_header_bytes = HTTP_MAX_HEAD,
        .cold_start_header = true,
        .frozen_memory_budget = 1ull << 30,
        .drain_timeout_ms = 10000,
        .tls_handshake_timeout_ms = 10000,
        .acme_rate = 10,
        .acme_retry_ms = 60000,
        .warm = 4, /* (one per namespace set made at load, kept through quiet spells; more as starts miss) */
    };
}

/* --- apps -------------------------------------------------------------------------------------- */

#define MISSING_SAID 10 /* apps whose rootfs is missing named at a load; the rest are counted */

struct app_list {
    struct kago_app *v;
    uint64_t *hash; /* kago__app_def_hash of each (made with the list, off the loop) */
    size_t n;
    char *missing[MISSING_SAID][2]; /* the first apps whose rootfs is not there: name, "rootfs PATH: why" */
    size_t nmissing;
};

static void app_list_free(struct app_list *l)
{
    for (size_t i = 0; i < l->n; i++)
        kago_app_free(&l->v[i]);
    free(l->v);
    free(l->hash);
    for (size_t i = 0; i < l->nmissing && i < MISSING_SAID; i++) {
        free(l->missing[i][0]);
        free(l->missing[i][1]);
    }
    *l = (struct app_list){0};
}

/* An app whose rootfs directory is not there is loaded (one site's mistake must not refuse the others'),
 * and said at the load, not only at its first start; checked off the loop, with the list. */
static void rootfs_check(struct app_list *l, const struct kago_app *a)
{
    int e = kago__rootfs_errno(&a->spec);
    if (e && l->nmissing++ < MISSING_SAID) {
        l->missing[l->nmissing - 1][0] = xstrdup(a->name);
        l->missing[l->nmissing - 1][1] =
            xasprintf("rootfs %s: %s: its starts fail until it is there", a->spec.rootfs, strerror(e));
    }
}

static int by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static bool is_kagofile(const char *name)
{
    size_t n = strlen(name);
    return name[0] != '.' &&
           (strncmp(name, "Kagofile", 8) == 0 || (n > 3 && strcmp(name + n - 3, ".rb") == 0));
}

/* a.tls: a relative file is the Kagofile's neighbour (dir's). */
static void abs_tls_paths(const char *dir, struct kago_app *a)
{
    char **files[] = {&a->tls_cert, &a->tls_key};
    for (int i = 0; i < 2 && a->tls_cert; i++)
        if ((*files[i])[0] != '/') {
            char *abs = xasprintf("%s/%s", dir, *files[i]);
            free(*files[i]);
            *files[i] = abs;
        }
}

/* Loads every app of every Kagofile in dir (Kagofile*, *.rb; sorted by name). Touches nothing of serve's: a
 * reload runs it in a worker thread (thousands of apps take mruby seconds). */
static int load_apps(const char *dir, struct app_list *out, struct kago_error **err)
{
    DIR *d = opendir(dir);
    if (!d)
        return kago_error_set(err, errno, "config %s", dir);
    char **names = NULL;
    size_t nn = 0;
    struct dirent *de;
    while ((de = readdir(d)))
        if (is_kagofile(de->d_name)) {
            names = xrealloc(names, (nn + 1) * sizeof(*names));
            names[nn++] = xstrdup(de->d_name);
        }
    closedir(d);
    if (nn)
        qsort(names, nn, sizeof(*names), by_name);
    int ret = 0;
    size_t cap = 0;
    char **paths = xcalloc(nn + 1, sizeof(*paths));
    for (size_t i = 0; i < nn; i++)
        paths[i] = xasprintf("%s/%s", dir, names[i]);
    struct kago_kagofile *kf = NULL;
    if (nn && kago_kagofile_load_files((const char *const *)paths, nn, NULL, &kf, err) < 0)
        ret = -1;
    for (size_t k = 0; kf && k < kago_kagofile_napps(kf); k++) {
        const char *path = kago_kagofile_app_path(kf, k);
        if (out->n == cap) {
            cap = cap ? cap * 2 : 64;
            out->v = xrealloc(out->v, cap * sizeof(*out->v));
            out->hash = xrealloc(out->hash, cap * sizeof(*out->hash));
        }
        kago_kagofile_take_app(kf, k, &out->v[out->n]);
        struct kago_app *a = &out->v[out->n];
        out->hash[out->n++] = kago__app_def_hash(a); /* (an app defined twice: refused by the loader) */
        if (ret == 0)
            ret = kago__app_check(a, path, err);
        abs_tls_paths(dir, a);
        rootfs_check(out, a);
    }
    kago_kagofile_free(kf);
    for (size_t i = 0; i < nn; i++)
        free(paths[i]);
    free(paths);
    for (size_t i = 0; i < nn; i++)
        free(names[i]);
    free(names);
    if (ret < 0)
        app_list_free(out);
    return ret;
}

static void setup_checkpoints(struct server *srv);

struct app_rt *kago__server_app(struct server *srv, const char *name)
{
    return kago__smap_get(&srv->names, name);
}

/* A reload (or etcd) removed app a: it drains away under no name. */
static void unname_app(struct server *srv, struct app_rt *a)
{
    a->removed = true;
    kago__smap_del(&srv->names, a->app.name, strlen(a->app.name));
}

/* A reload changed the app's container: its instances are replaced (see kago__pool_new_generation),
 * and its image, which holds the old container, is no longer restored; a new one is taken. */
static void new_generation(struct app_rt *a, uint64_t now)
{
    kago__slog(a->srv, SLOG_INFO, a->app.name, NULL,
               "its container changed: instances of the old one are replaced");
    kago__pool_new_generation(&a->pool, now); /* (the image dir follows the generation) */
    if (a->ckpt == CK_READY || a->ckpt == CK_FAILED)
        a->ckpt = CK_WANT; /* (a checkpoint in progress is discarded when it ends: ckpt_done) */
    a->restore_fail_streak = 0;
}

/* Adds app (taken: *app is left empty), or gives the running app of that name the new definition. hash is
 * the app's kago__app_def_hash: what an instance is made of (its spec, port, socket activation, checkpoint
 * points); when it changes, the app's instances are retired (and its image). */
static struct app_rt *install_app(struct server *srv, struct kago_app *app, uint64_t hash, uint64_t now)
{
    struct app_rt *a = kago__server_app(srv, app->name);
    if (!a) {
        a = xcalloc(1, sizeof(*a));
        a->srv = srv;
        a->app = *app;
        a->shard = kago__shard_of(srv, app->name);
        kago__smap_add(&srv->names, a->app.name, strlen(a->app.name), a);
        a->image_root = xasprintf("%s/images/%s", srv->opts.root, a->app.name);
        a->def_hash = hash;
        struct pool_cfg cfg = kago__serve_pool_cfg(&a->app);
        kago__pool_init(&a->pool, &cfg, srv->cluster ? &kago__cluster_pool_ops : &kago__serve_pool_ops, a);
        a->next = srv->apps;
        srv->apps = a;
    } else {
        bool changed = hash != a->def_hash;
        char *name = a->app.name; /* (the name's key in srv->names: the same string stays) */
        a->app.name = NULL;
        kago_app_free(&a->app);
        free(app->name);
        a->app = *app;
        a->app.name = name;
        a->def_hash = hash;
        struct pool_cfg cfg = kago__serve_pool_cfg(&a->app);
        kago__pool_configure(&a->pool, &cfg, now);
        if (changed)
            new_generation(a, now);
    }
    memset(app, 0, sizeof(*app));
    return a;
}

/* A router of the live apps' hosts, plus those of extra (not yet installed; mapped to extra_value) when
 * not NULL, skipping the live app named like extra. NULL with *err on a conflict or an invalid host. */
static struct router *build_router(struct server *srv, const struct kago_app *extra, void *extra_value,
                                   struct kago_error **err)
{
    size_t n = 0;
    for (struct app_rt *a = srv->apps; a; a = a->next)
        for (char **h = a->app.hosts; !a->removed && h && *h; h++)
            n++;
    struct router *r = kago__router_new(n + 8);
    for (struct app_rt *a = srv->apps; a; a = a->next) {
        if (a->removed || (extra && !strcmp(a->app.name, extra->name)))
            continue;
        if (a->app.default_app)
            kago__router_set_default(r, a, NULL);
        for (char **h = a->app.hosts; h && *h; h++)
            kago__router_add(r, *h, a, NULL);
    }
    void *other_default = NULL;
    if (extra && extra->default_app && kago__router_set_default(r, extra_value, &other_default) < 0) {
        kago__router_free(r);
        return kago_error_set(err, 0, "apps %s and %s both say a.default true (at most one default app)",
                              ((struct app_rt *)other_default)->app.name, extra->name),
               NULL;
    }
    for (char **h = extra ? extra->hosts : NULL; h && *h; h++) {
        void *other = NULL;
        if (kago__router_add(r, *h, extra_value, &other) < 0) {
            kago__router_free(r);
            if (other && other != extra_value)
                return kago_error_set(err, 0, "app %s: host %s belongs to app %s", extra->name, *h,
                                      ((struct app_rt *)other)->app.name),
                       NULL;
            return kago_error_set(err, 0, "app %s: invalid or repeated host \"%s\"", extra->name, *h), NULL;
        }
    }
    return r;
}

static struct tls_store *new_tls_store(struct server *srv, struct kago_error **err);

/* --cluster: a new certificate store with the a.tls of every app running (the default and ACME's too); NULL
 * with *err when one does not load. */
static struct tls_store *cluster_tls_store(struct server *srv, struct kago_error **err)
{
    struct tls_store *ts = new_tls_store(srv, err);
    if (!ts)
        return NULL;
    for (struct app_rt *a = srv->apps; a; a = a->next)
        if (!a->removed && a->app.tls_cert && kago__tls_store_app(ts, &a->app, err) < 0) {
            kago__tls_store_free(ts);
            return NULL;
        }
    return ts;
}

/* The store handshakes use from now on (the running connections keep their certificates). */
static void use_tls_store(struct server *srv, struct tls_store *ts)
{
    kago__tls_front_use(srv->tls, ts);
    kago__tls_store_free(srv->tls_store);
    srv->tls_store = ts;
    srv->tls_checked_ms = kago__serve_now_ms();
}

/* --cluster: app (a name) no longer has the certificate it had: the store is built again without it. When
 * another app's files went away meanwhile, the running store stays as it is and the log says why. */
static void cluster_drop_tls(struct server *srv, const char *app)
{
    struct kago_error *err = NULL;
    struct tls_store *ts = cluster_tls_store(srv, &err);
    if (ts) {
        use_tls_store(srv, ts);
        return;
    }
    kago__slog(srv, SLOG_WARN, app, NULL, "its old certificate stays loaded for now: %s", err->msg);
    kago_error_free(err);
}

static bool same_hosts(char *const *a, char *const *b)
{
    for (; *a && *b; a++, b++)
        if (strcmp(*a, *b) != 0)
            return false;
    return !*a && !*b;
}

/* --cluster: app's a.tls goes into the running store before app replaces the running app of its name (run,
 * NULL: none). An app from etcd names its files by absolute path: each node reads them from its own disk. A
 * certificate another app's hosts or a replaced pair leave behind goes with the next rebuilt store. */
static int cluster_app_tls(struct server *srv, const struct kago_app *app, const struct app_rt *run,
                           struct kago_error **err)
{
    if (!app->tls_cert)
        return 0;
    if (app->tls_cert[0] != '/' || app->tls_key[0] != '/')
        return kago_error_set(err, 0,
                              "a.tls cert: \"%s\", key: \"%s\": give absolute paths (in a cluster each node "
                              "reads the files from its own disk)",
                              app->tls_cert, app->tls_key);
    if (run && run->app.tls_cert && !strcmp(run->app.tls_cert, app->tls_cert) &&
        !strcmp(run->app.tls_key, app->tls_key) && same_hosts(run->app.hosts, app->hosts))
        return 0; /* loaded already (a relist, a changed container) */
    return kago__tls_store_app(srv->tls_store, app, err);
}

int kago__server_app_set(struct server *srv, struct kago_app *app, int64_t etcd_rev, struct kago_error **err)
{
    static char placeholder;
    struct router *r = build_router(srv, app, &placeholder, err);
    if (!r)
        return -1;
    kago__router_free(r);
    struct app_rt *run = kago__server_app(srv, app->name);
    if (cluster_app_tls(srv, app, run, err) < 0)
        return -1;
    bool dropped_tls = run && run->app.tls_cert && !app->tls_cert;
    struct app_rt *a = install_app(srv, app, kago__app_def_hash(app), kago__serve_now_ms());
    if (dropped_tls)
        cluster_drop_tls(srv, a->app.name);
    a->etcd_rev = etcd_rev;
    r = build_router(srv, NULL, NULL, err);
    kago__router_free(srv->router);
    srv->router = r;
    setup_checkpoints(srv);
    kago__app_wake(a);
    kago__apps_take_ranges(srv);
    kago__warm_expect(srv);
    kago__pool_tick(&a->pool, kago__serve_now_ms()); /* min_instances */
    malloc_trim(0);
    return 0;
}

bool kago__server_app_drop(struct server *srv, const char *name)
{
    struct app_rt *a = kago__server_app(srv, name);
    if (!a)
        return false;
    unname_app(srv, a);
    if (a->app.tls_cert)
        cluster_drop_tls(srv, name);
    struct router *r = build_router(srv, NULL, NULL, NULL);
    kago__router_free(srv->router);
    srv->router = r;
    kago__pool_give_back(&a->pool); /* (what it held: 404, or another app's now) */
    kago__pool_stop(&a->pool, kago__serve_now_ms());
    kago__app_wake(a); /* (the tick frees it once its instances are gone) */
    return true;
}

/* Swaps in a new set of apps: same-name apps keep their instances and get the new policy (those whose
 * container changed get new instances), new apps are added, missing ones drain away. Requests in
 * flight keep going. Nothing changes if the new set is invalid. */
static int apply_apps(struct server *srv, struct app_list *l, struct kago_error **err)
{
    size_t nhosts = 0;
    for (size_t i = 0; i < l->n; i++)
        for (char **h = l->v[i].hosts; *h; h++)
            nhosts++;
    struct router *r = kago__router_new(nhosts);
    struct app_rt **rt = xcalloc(l->n + 1, sizeof(*rt));
    for (size_t i = 0; i < l->n; i++) {
        void *other = NULL;
        if (l->v[i].default_app && kago__router_set_default(r, &rt[i], &other) < 0) {
            size_t j = (size_t)((struct app_rt **)other - rt);
            kago__router_free(r);
            free(rt);
            return kago_error_set(err, 0, "apps %s and %s both say a.default true (at most one default app)",
                                  l->v[j].name, l->v[i].name);
        }
        for (char **h = l->v[i].hosts; *h; h++) {
            if (kago__router_add(r, *h, &rt[i], &other) < 0) {
                size_t j = other ? (size_t)((struct app_rt **)other - rt) : 0;
                kago__router_free(r);
                free(rt);
                if (other)
                    return kago_error_set(err, 0, "host %s belongs to both %s and %s", *h, l->v[j].name,
                                          l->v[i].name);
                return kago_error_set(err, 0, "app %s: invalid host \"%s\"", l->v[i].name, *h);
            }
        }
    }
    kago__router_free(r);
    uint64_t now = kago__serve_now_ms();
    struct smap keep;
    kago__smap_init(&keep, l->n);
    for (size_t i = 0; i < l->n; i++)
        kago__smap_add(&keep, l->v[i].name, strlen(l->v[i].name), NULL);
    for (struct app_rt *a = srv->apps; a; a = a->next) /* (stopped once the new router is in, below) */
        if (!a->removed && !kago__smap_find(&keep, a->app.name, strlen(a->app.name)))
            unname_app(srv, a);
    kago__smap_fini(&keep);
    for (size_t i = 0; i < l->n; i++)
        rt[i] = install_app(srv, &l->v[i], l->hash[i], now);
    /* Build the live router with the final pointers. */
    r = kago__router_new(nhosts);
    for (size_t i = 0; i < l->n; i++) {
        if (rt[i]->app.default_app)
            kago__router_set_default(r, rt[i], NULL);
        for (char **h = rt[i]->app.hosts; *h; h++)
            kago__router_add(r, *h, rt[i], NULL);
    }
    kago__router_free(srv->router);
    srv->router = r;
    free(rt);
    /* the apps this reload removed stop; what they held is routed again (a renamed app's host is the new
     * app's, a removed one's a 404) */
    for (struct app_rt *a = srv->apps; a; a = a->next)
        if (a->removed && !a->pool.stopping) {
            kago__pool_give_back(&a->pool);
            kago__pool_stop(&a->pool, now);
        }
    /* new, changed and removed apps all have something for the tick; it lets go of the idle ones */
    for (struct app_rt *a = srv->apps; a; a = a->next)
        kago__app_wake(a);
    kago__apps_take_ranges(srv);
    free(l->v);
    l->v = NULL;
    l->n = 0;
    return 0;
}

static bool is_instance_pid(struct server *srv, pid_t pid)
{
    for (struct app_rt *a = srv->apps; a; a = a->next)
        for (struct pool_inst *pi = a->pool.insts; pi; pi = pi->next) {
            struct instance *inst = pi->data;
            if (inst->c && kago_container_pid(inst->c) == pid)
                return true;
            if (inst->creating && !inst->working && kago_create_pid(inst->creating) == pid)
                return true; /* its create reaps it (and must, to say why it failed) */
        }
    return false;
}

static bool is_zombie(pid_t pid)
{
    char path[64], buf[256];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return false;
    buf[n] = 0;
    const char *rp = strrchr(buf, ')'); /* comm may hold spaces and parentheses */
    return rp && rp[1] == ' ' && rp[2] == 'Z';
}

/* A restore made kago a child subreaper: whatever is orphaned below it becomes its child. Only
 * zombies that are not instances are reaped (an instance's status belongs to its container, which
 * reaps it at delete), found through /proc/self/task/x/children rather than waitpid(-1). */
void kago__server_reap(struct server *srv)
{
    if (srv->jobs) {
        srv->reap_pending = true;
        return;
    }
    srv->reap_pending = false;
    DIR *d = opendir("/proc/self/task");
    if (!d)
        return;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue;
        char path[300];
        snprintf(path, sizeof(path), "/proc/self/task/%s/children", de->d_name);
        FILE *f = fopen(path, "re");
        if (!f)
            continue;
        int pid;
        while (fscanf(f, "%d", &pid) == 1)
            if (!is_instance_pid(srv, pid) && is_zombie(pid) && waitpid(pid, NULL, WNOHANG) == pid)
                srv->reaped++;
        fclose(f);
    }
    closedir(d);
}

static void on_sigchld(uv_signal_t *h, int sig)
{
    kago__server_reap(h->data);
}

/* The CRIU tier: asks kago_checkpoint_supported once (it runs `criu check`, about a second), when an
 * app first wants a checkpoint, and says once why CRIU is off. */
static void setup_checkpoints(struct server *srv)
{
    bool want = false;
    for (struct app_rt *a = srv->apps; a; a = a->next)
        want |= !a->removed && kago__app_criu(&a->app);
    if (!want)
        return;
    if (!srv->criu_checked) {
        struct kago_error *err = NULL;
        srv->criu_checked = true;
        srv->criu_ok = kago_checkpoint_supported(&err) == 0;
        if (srv->criu_ok)
            fprintf(
                stderr,
                "kago serve: CRIU works here: apps with checkpoint :after_ready or :at_listen restore from "
                "images in %s/images\n",
                srv->opts.root);
        else
            fprintf(
                stderr,
                "kago serve: CRIU is unusable here, apps with checkpoint :after_ready or :at_listen use cold "
                "starts: %s\n",
                err ? err->msg : "unknown reason");
        kago_error_free(err);
        if (srv->criu_ok) {
            uv_signal_start(&srv->sigchld, on_sigchld, SIGCHLD);
            uv_unref((uv_handle_t *)&srv->sigchld);
        }
    }
    for (struct app_rt *a = srv->apps; a; a = a->next)
        if (srv->criu_ok && kago__app_criu(&a->app) && a->ckpt == CK_OFF) {
            /* an image left by a serve that died: it may not match the spec any more */
            if (access(a->image_root, F_OK) == 0 && kago__rm_rf(a->image_root) == 0)
                kago__slog(srv, SLOG_INFO, a->app.name, NULL, "removed a stale image %s", a->image_root);
            a->ckpt = CK_WANT;
        }
}

/* A new certificate store for the config being loaded, with the default certificate (the old store's
 * unchanged certificates are shared). */
static struct tls_store *new_tls_store(struct server *srv, struct kago_error **err)
{
    const struct kago_serve_opts *o = &srv->opts;
    struct tls_store *ts =
        kago__tls_store_new(srv->tls, srv->tls_store, o->tls_unknown != KAGO_TLS_UNKNOWN_ALERT);
    if (o->tls_default_cert &&
        kago__tls_store_default(ts, o->tls_default_cert, o->tls_default_key, err) < 0) {
        kago_error_prefix(err, "--tls-default-cert");
        kago__tls_store_free(ts);
        return NULL;
    }
    if (srv->acme) /* before the apps': an app's own certificate wins */
        kago__acme_fill_store(srv->acme, ts);
    return ts;
}

/* Applies apps loaded by load_apps (taken: l is left empty) with their certificates. 0, or < 0 with *err and
 * nothing changed. */
static int use_apps(struct server *srv, struct app_list *l, struct kago_error **err)
{
    struct tls_store *ts = new_tls_store(srv, err);
    if (!ts)
        return -1;
    for (size_t i = 0; i < l->nmissing && i < MISSING_SAID; i++)
        kago__slog(srv, SLOG_WARN, l->missing[i][0], NULL, "%s", l->missing[i][1]);
    if (l->nmissing > MISSING_SAID)
        kago__slog(srv, SLOG_WARN, NULL, NULL, "and %zu more apps whose rootfs is not there",
                   l->nmissing - MISSING_SAID);
    for (size_t i = 0; i < l->n; i++)
        if (l->v[i].tls_cert && kago__tls_store_app(ts, &l->v[i], err) < 0) {
            kago_error_prefix(err, "app %s", l->v[i].name);
            kago__tls_store_free(ts);
            return -1;
        }
    if (apply_apps(srv, l, err) < 0) {
        kago__tls_store_free(ts);
        return -1;
    }
    use_tls_store(srv, ts);
    setup_checkpoints(srv);
    kago__warm_expect(srv);
    return 0;
}

static int load_config(struct server *srv, struct kago_error **err)
{
    struct app_list l = {0};
    int r = load_apps(srv->opts.config_dir, &l, err);
    if (r == 0)
        r = use_apps(srv, &l, err);
    app_list_free(&l);
    malloc_trim(0); /* (what the apps replaced held: see reload_done) */
    return r;
}

static void log_tls_check(void *arg, bool ok, const char *msg)
{
    kago__slog(arg, ok ? SLOG_INFO : SLOG_ERR, NULL, NULL, "tls: %s", msg);
}

/* The image outlives the app's last instance only: restored instances use it as a layer. */
static void remove_image(struct server *srv, struct app_rt *a)
{
    if (a->image_root && access(a->image_root, F_OK) == 0) {
        if (kago__rm_rf(a->image_root) < 0)
            kago__slog(srv, SLOG_ERR, a->app.name, NULL, "remove %s: %s", a->image_root, strerror(errno));
        else
            kago__slog(srv, SLOG_INFO, a->app.name, NULL, "removed its image %s", a->image_root);
    }
    cleanup_free char *parent = xasprintf("%s/images", srv->opts.root);
    rmdir(parent); /* when the last app's image is gone */
}

static void free_app(struct app_rt *a)
{
    remove_image(a->srv, a);
    free(a->image_root);
    free(a->start_error);
    kago__logs_app_free(a);
    kago__dash_app_free(a);
    kago__pool_free(&a->pool);
    kago_app_free(&a->app);
    free(a);
}

void kago__app_unref(struct app_rt *a)
{
    if (a->refs)
        a->refs--;
}

/* Frees apps removed by a reload once their last instance and request are gone (the tick has let go
 * of them: see on_tick). */
static void reap_apps(struct server *srv)
{
    for (struct app_rt **pp = &srv->apps; *pp;) {
        struct app_rt *a = *pp;
        if (a->removed && !a->ticking && kago__pool_empty(&a->pool) && a->refs == 0) {
            *pp = a->next;
            free_app(a);
        } else {
            pp = &a->next;
        }
    }
}

/* --- loop -------------------------------------------------------------------------------------- */

static bool all_gone(struct server *srv)
{
    if (srv->jobs || srv->reload_job || !STAILQ_EMPTY(&srv->delq) || srv->del_busy ||
        !STAILQ_EMPTY(&srv->sigq) || kago__cluster_busy(srv))
        return false;
    for (struct app_rt *a = srv->apps; a; a = a->next)
        if (!kago__pool_empty(&a->pool))
            return false;
    return srv->nclients == 0;
}

void kago__server_stop_loop(struct server *srv)
{
    srv->loop_stopped = true;
    uv_stop(srv->loop);
}

void kago__server_maybe_exit(struct server *srv)
{
    if (srv->stopping && all_gone(srv))
        kago__server_stop_loop(srv);
}

/* Frozen instances of every app share one memory budget; the oldest are stopped beyond it. */
static void enforce_frozen_budget(struct server *srv, uint64_t now)
{
    uint64_t total = 0;
    size_t n = 0;
    for (struct app_rt *a = srv->ticking; a; a = a->tick_next, n++) /* (an app with instances ticks) */
        total += kago__pool_frozen_bytes(&a->pool);
    if (total <= srv->opts.frozen_memory_budget)
        return;
    cleanup_free struct pool **pools = xcalloc(n, sizeof(*pools));
    n = 0;
    for (struct app_rt *a = srv->ticking; a; a = a->tick_next)
        pools[n++] = &a->pool;
    unsigned stopped = kago__pool_enforce_budget(pools, n, srv->opts.frozen_memory_budget, now);
    kago__slog(srv, SLOG_WARN, NULL, NULL,
               "frozen instances hold %llu bytes, over the budget of %llu: stopped the %u oldest",
               (unsigned long long)total, (unsigned long long)srv->opts.frozen_memory_budget, stopped);
}

void kago__app_wake(struct app_rt *a)
{
    struct server *srv = a->srv;
    if (a->ticking)
        return;
    a->ticking = true;
    a->tick_next = srv->ticking;
    srv->ticking = a;
    if (srv->ntick_due == srv->cap_tick_due) {
        srv->cap_tick_due = srv->cap_tick_due ? 2 * srv->cap_tick_due : 64;
        srv->tick_due = xrealloc(srv->tick_due, srv->cap_tick_due * sizeof *srv->tick_due);
    }
    a->tick_idx = srv->ntick_due;
    srv->tick_due[srv->ntick_due++] = (struct tick_due){.due = 0, .a = a};
}

void kago__app_touched(struct app_rt *a)
{
    if (a->ticking)
        a->srv->tick_due[a->tick_idx].due = 0;
}

/* Whether the tick has anything to time for a: instances (starts, lifetimes, idle, grace), held requests,
 * standbys to keep, images of an old container to prune, or a removal to finish. */
static bool needs_tick(const struct app_rt *a)
{
    return !kago__pool_empty(&a->pool) || a->pool.cfg.min || a->removed ||
           a->images_pruned != a->pool.generation;
}

static void on_tick(uv_timer_t *t)
{
    struct server *srv = t->data;
    uint64_t now = kago__serve_now_ms();
    bool reap = false, left = false;
    size_t records = srv->tick_records;
    for (size_t k = 0; k < srv->ntick_due;) {
        if (srv->tick_due[k].due > now) { /* (its pool has nothing due before then) */
            k++;
            continue;
        }
        struct app_rt *a = srv->tick_due[k].a;
        kago__pool_tick(&a->pool, now);
        bool recorded = kago__records_app(a, &records);
        kago__instance_checkpoint_tick(a, now);
        if (kago__scaleup_on(&a->app.scale_up))
            kago__scaler_app(a, now);
        bool gone = a->removed && kago__pool_empty(&a->pool) && a->refs == 0;
        if (!gone && needs_tick(a)) {
            /* what the pool does not time (the CRIU tier, scale up, images, a removal) is looked at each tick
             */
            bool pool_only = recorded && !a->removed && !kago__app_criu(&a->app) &&
                             !kago__scaleup_on(&a->app.scale_up) && a->images_pruned == a->pool.generation;
            srv->tick_due[a->tick_idx].due = pool_only ? a->pool.due : 0;
            k++;
            continue;
        }
        /* (woken again by its pool when it has work: kago__serve_pool_ops.woken) */
        a->ticking = false;
        srv->tick_due[k] = srv->tick_due[--srv->ntick_due];
        if (k < srv->ntick_due)
            srv->tick_due[k].a->tick_idx = k;
        left = true;
        reap |= gone;
    }
    for (struct app_rt **pp = &srv->ticking; left && *pp;)
        if (!(*pp)->ticking)
            *pp = (*pp)->tick_next;
        else
            pp = &(*pp)->tick_next;
    if (now - srv->upconn_swept_ms >= 1000) {
        srv->upconn_swept_ms = now;
        /* (their read buffers are page buffers, and what a request held went when it ended: an idle
         * connection leaves no hole in malloc's heap, and no malloc_trim walks it here) */
        kago__client_trim_idle(srv);
        kago__admin_sweep(srv, now);
        for (struct app_rt *a = srv->ticking; a; a = a->tick_next) /* (an app with instances ticks) */
            for (struct pool_inst *pi = a->pool.insts; pi; pi = pi->next)
                kago__upconn_sweep(pi->data, now);
    }
    if (now - srv->frozen_checked_ms >= POOL_DUE_MAX_MS) {
        srv->frozen_checked_ms = now;
        enforce_frozen_budget(srv, now);
    }
    kago__logs_tick(now);
    kago__upgrade_tick(srv);
    kago__loops_storm(srv, !STAILQ_EMPTY(&srv->startq));
    if (reap)
        reap_apps(srv);
    kago__systemd_tick(srv);
    if (now - srv->tls_checked_ms >= TLS_CHECK_MS) { /* a certificate file replaced: new handshakes get it */
        srv->tls_checked_ms = now;
        kago__tls_store_check(srv->tls_store, log_tls_check, srv);
    }
    kago__server_maybe_exit(srv);
}

static void close_listener(struct listener *l)
{
    if (l->tcp.data && !uv_is_closing((uv_handle_t *)&l->tcp))
        uv_close((uv_handle_t *)&l->tcp, NULL);
}

/* --drain-timeout passed since SIGTERM: requests still in flight are cut, every instance is killed. */
static void on_drain_timeout(uv_timer_t *t)
{
    struct server *srv = t->data;
    uint64_t now = kago__serve_now_ms();
    unsigned n = srv->nclients;
    kago__slog(srv, SLOG_WARN, NULL, NULL, "drain timeout: closing %u connections, killing every instance",
               n);
    kago__client_close_all(srv, false);
    for (struct app_rt *a = srv->apps; a; a = a->next)
        kago__pool_kill_all(&a->pool, now);
    kago__server_maybe_exit(srv);
}

static void begin_shutdown(struct server *srv)
{
    kago__warm_stop(srv); /* its sandboxes hold nothing of a request: killed now */
    if (srv->handover) {  /* the instances are the new serve's now */
        kago__upgrade_cut(srv);
        return;
    }
    if (srv->stopping)
        return;
    srv->stopping = true;
    kago__dash_shutdown(srv); /* (its event streams would keep the drain waiting) */
    kago__slog(srv, SLOG_INFO, NULL, NULL, "stopping: draining requests and instances");
    kago__systemd_stopping(srv);
    for (unsigned i = 0; i < srv->nls; i++)
        close_listener(&srv->ls[i]);
    kago__shards_listen(srv); /* (none: stopping) */
    kago__hs_stop(srv);       /* (its handshakes end as the idle connections here do) */
    kago__cluster_stop(srv);
    uint64_t now = kago__serve_now_ms();
    for (struct app_rt *a = srv->apps; a; a = a->next)
        kago__pool_stop(&a->pool, now);
    kago__client_close_all(srv, true);
    uv_timer_start(&srv->drain_timer, on_drain_timeout, srv->opts.drain_timeout_ms, 0);
    kago__server_maybe_exit(srv);
}

/* --- reloads ----------------------------------------------------------------------------------- */

/* SIGHUP and POST /reload. The Kagofiles are read and evaluated in a worker thread while the loop goes on
 * serving with the running apps (10,000 apps are seconds of mruby); the loop then loads the certificates
 * and swaps the apps in. One reload runs at a time: one asked for while it runs (its files may have changed
 * after they were read) starts once it is done, for every caller that asked meanwhile. */
struct reload {
    uv_thread_t thread;
    bool joined;
    uv_async_t done;
    struct server *srv;
    struct app_list l;
    struct kago_error *err;
};

/* A thread of its own rather than libuv's pool: glibc gives a thread's arena to the next thread made after
 * it ends, so every reload allocates its apps in the same arena, where the apps it replaces are freed (the
 * pool's four threads would spread them over four arenas, each keeping its peak resident). */
static void reload_thread(void *arg)
{
    struct reload *job = arg;
    load_apps(job->srv->opts.config_dir, &job->l, &job->err);
    uv_async_send(&job->done);
}

static void reload_start(struct server *srv);

static void answer_waiters(struct reload_waiter **list, const struct kago_error *err)
{
    struct reload_waiter *ws = *list;
    *list = NULL;
    while (ws) {
        struct reload_waiter *n = ws->next;
        ws->next = NULL;
        ws->queued = false;
        ws->done(ws, err);
        ws = n;
    }
}

/* The loop ends (a hand-over) with a reload in flight: its result is dropped. */
static void reload_drop(struct server *srv)
{
    struct reload *job = srv->reload_job;
    app_list_free(&job->l);
    kago_error_free(job->err);
    free(job);
    srv->reload_job = NULL;
}

static void reload_done(uv_handle_t *h)
{
    struct reload *job = h->data;
    struct server *srv = job->srv;
    if (srv->ending) {
        reload_drop(srv);
        return;
    }
    struct kago_error *err = job->err;
    srv->reload_job = NULL;
    if (!err && srv->stopping)
        kago_error_set(&err, ECANCELED, "serve is stopping");
    if (!err)
        use_apps(srv, &job->l, &err);
    app_list_free(&job->l);
    free(job);
    /* The replaced apps' memory, and the list: back to the system. */
    malloc_trim(0);
    if (err)
        kago__slog(srv, SLOG_ERR, NULL, NULL, "reload failed, keeping the running config: %s", err->msg);
    else
        kago__slog(srv, SLOG_INFO, NULL, NULL, "reloaded %s", srv->opts.config_dir);
    kago__systemd_reloaded(srv, err);
    kago__dash_reloaded(srv, err ? err->msg : NULL);
    answer_waiters(&srv->reload_waiters, err);
    kago_error_free(err);
    if (srv->reload_again && !srv->stopping) {
        srv->reload_again = false;
        srv->reload_waiters = srv->reload_next;
        srv->reload_next = NULL;
        reload_start(srv);
    } else if (srv->reload_next) {
        struct kago_error *stop = NULL;
        kago_error_set(&stop, ECANCELED, "serve is stopping");
        answer_waiters(&srv->reload_next, stop);
        kago_error_free(stop);
    }
    kago__server_maybe_exit(srv);
}

static void on_reload_parsed(uv_async_t *a)
{
    struct reload *job = a->data;
    uv_thread_join(&job->thread);
    job->joined = true;
    uv_close((uv_handle_t *)&job->done, reload_done);
}

static void reload_start(struct server *srv)
{
    struct reload *job = xcalloc(1, sizeof(*job));
    job->srv = srv;
    job->done.data = job;
    srv->reload_job = job;
    kago__systemd_reloading();
    uv_async_init(srv->loop, &job->done, on_reload_parsed);
    int r = uv_thread_create(&job->thread, reload_thread, job);
    if (r < 0) { /* (no thread to be had): on the loop then */
        job->joined = true;
        load_apps(srv->opts.config_dir, &job->l, &job->err);
        uv_close((uv_handle_t *)&job->done, reload_done);
    }
}

void kago__server_reload(struct server *srv, struct reload_waiter *w)
{
    if (srv->cluster) { /* the apps are etcd's: list them again */
        kago__cluster_relist(srv);
        kago__slog(srv, SLOG_INFO, NULL, NULL, "reload: listing the apps in etcd again");
        if (w)
            w->done(w, NULL);
        return;
    }
    if (srv->stopping) {
        struct kago_error *err = NULL;
        kago_error_set(&err, ECANCELED, "serve is stopping");
        if (w)
            w->done(w, err);
        kago_error_free(err);
        return;
    }
    struct reload_waiter **list = srv->reload_job ? &srv->reload_next : &srv->reload_waiters;
    if (w) {
        w->next = *list;
        w->queued = true;
        *list = w;
    }
    if (srv->reload_job)
        srv->reload_again = true;
    else
        reload_start(srv);
}

/* Takes w out of list; false when it is not in it. */
static bool unlink_waiter(struct reload_waiter **list, struct reload_waiter *w)
{
    for (struct reload_waiter **l = list; *l; l = &(*l)->next)
        if (*l == w) {
            *l = w->next;
            w->queued = false;
            return true;
        }
    return false;
}

void kago__server_reload_forget(struct server *srv, struct reload_waiter *w)
{
    if (w->queued && !unlink_waiter(&srv->reload_waiters, w))
        unlink_waiter(&srv->reload_next, w);
}

static void on_signal(uv_signal_t *h, int sig)
{
    struct server *srv = h->data;
    if (sig == SIGHUP) {
        kago__server_reload(srv, NULL);
        return;
    }
    begin_shutdown(srv);
}

static void on_conn(uv_stream_t *s, int status)
{
    struct listener *l = s->data;
    if (status < 0)
        return;
    if (l->admin)
        kago__admin_accept(l->srv, s);
    else if (!l->srv->stopping)
        kago__client_accept(l->srv, s, l->tls);
}

int kago__server_parse_addr(const char *s, struct sockaddr_storage *ss, struct kago_error **err)
{
    char host[64];
    const char *colon = strrchr(s, ':');
    if (!colon || colon == s || (size_t)(colon - s) >= sizeof(host))
        return kago_error_set(err, EINVAL, "address \"%s\" (want IP:PORT)", s);
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (!isdigit((unsigned char)colon[1]) || *end || port <= 0 || port > 65535) /* (no sign, no space) */
        return kago_error_set(err, EINVAL, "address \"%s\": bad port", s);
    memcpy(host, s, colon - s);
    host[colon - s] = 0;
    if (host[0] == '[') {
        size_t n = strlen(host);
        if (host[n - 1] != ']')
            return kago_error_set(err, EINVAL, "address \"%s\"", s);
        host[n - 1] = 0;
        if (uv_ip6_addr(host + 1, (int)port, (struct sockaddr_in6 *)ss) == 0)
            return 0;
    } else if (uv_ip4_addr(host, (int)port, (struct sockaddr_in *)ss) == 0) {
        return 0;
    }
    return kago_error_set(err, EINVAL, "address \"%s\": not an IP address", s);
}

/* Listens on addr, or on fd (>= 0: a listening socket passed by systemd or by the serve this one takes
 * over from) when there is one. */
int kago__server_listen(struct server *srv, struct listener *l, const char *addr, int fd, bool admin,
                        struct kago_error **err)
{
    struct sockaddr_storage ss = {0};
    if (fd < 0 && kago__server_parse_addr(addr, &ss, err) < 0)
        return -1;
    l->srv = srv;
    l->admin = admin;
    uv_tcp_init(srv->loop, &l->tcp);
    l->tcp.data = l;
    int r = fd >= 0 ? uv_tcp_open(&l->tcp, fd) : uv_tcp_bind(&l->tcp, (struct sockaddr *)&ss, 0);
    uv_os_fd_t lfd;
    /* with request loops, they accept plain connections and the handshake loops TLS ones, not this one */
    if (r == 0 && !admin && srv->nshards > 1)
        r = uv_fileno((uv_handle_t *)&l->tcp, &lfd) == 0 && listen(lfd, 4096) < 0 ? -errno : 0;
    else if (r == 0)
        r = uv_listen((uv_stream_t *)&l->tcp, 4096, on_conn);
    if (r < 0) {
        uv_close((uv_handle_t *)&l->tcp, NULL);
        if (fd >= 0)
            return kago_error_set(err, -r, "listen on inherited socket fd %d", fd);
        return kago_error_set(err, -r, "listen %s", addr);
    }
    return 0;
}

/* "IP:PORT" the listener is bound to, with where it came from when it was passed in. */
static const char *listener_addr(struct listener *l, const char *passed, char *buf, size_t n)
{
    struct sockaddr_storage ss = {0};
    int len = sizeof(ss);
    char ip[INET6_ADDRSTRLEN] = "?";
    unsigned port = 0;
    if (uv_tcp_getsockname(&l->tcp, (struct sockaddr *)&ss, &len) == 0) {
        if (ss.ss_family == AF_INET6) {
            uv_ip6_name((struct sockaddr_in6 *)&ss, ip, sizeof(ip));
            port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
        } else {
            uv_ip4_name((struct sockaddr_in *)&ss, ip, sizeof(ip));
            port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
        }
    }
    snprintf(buf, n, ss.ss_family == AF_INET6 ? "[%s]:%u%s" : "%s:%u%s", ip, port, passed ? passed : "");
    return buf;
}

static void close_fds(int *fds, unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        if (fds[i] >= 0) {
            close(fds[i]);
            fds[i] = -1;
        }
}

/* The client listeners of the command line (none: DEFAULT_LISTEN); the one systemd passed replaces the
 * first --listen. */
static void plan_listeners(struct server *srv, int *fds, int sd_main)
{
    const struct kago_serve_opts *o = &srv->opts;
    srv->nls = o->nlisten ? o->nlisten : 1;
    int first_plain = -1;
    for (unsigned i = 0; i < srv->nls; i++) {
        srv->ls[i].addr = o->nlisten ? o->listen[i].addr : DEFAULT_LISTEN;
        srv->ls[i].tls = o->nlisten && o->listen[i].tls;
        srv->ls[i].keep_fd = -1;
        fds[i] = -1;
        if (first_plain < 0 && !srv->ls[i].tls)
            first_plain = (int)i;
    }
    if (sd_main >= 0)
        fds[first_plain >= 0 ? first_plain : 0] = sd_main;
}

static unsigned bound_port(struct listener *l)
{
    struct sockaddr_storage ss = {0};
    int len = sizeof(ss);
    if (uv_tcp_getsockname(&l->tcp, (struct sockaddr *)&ss, &len) < 0)
        return 0;
    return ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                          : ((struct sockaddr_in *)&ss)->sin_port);
}

/* Listens on every client listener (fds[i]: a socket passed in, or -1). */
static int listen_all(struct server *srv, int *fds, const char *passed, char *desc, size_t n,
                      struct kago_error **err)
{
    size_t used = 0;
    desc[0] = 0;
    for (unsigned i = 0; i < srv->nls; i++) {
        struct listener *l = &srv->ls[i];
        int fd = fds[i];
        fds[i] = -1;
        if (kago__server_listen(srv, l, l->addr, fd, false, err) < 0) {
            close_fds(fds, srv->nls);
            return -1;
        }
        if (l->tls && !srv->https_port)
            srv->https_port = bound_port(l);
        char buf[96];
        int k = snprintf(desc + used, n - used, "%s%s://%s", i ? ", " : "", l->tls ? "https" : "http",
                         listener_addr(l, fd >= 0 ? passed : NULL, buf, sizeof(buf)));
        if (k > 0 && used + (size_t)k < n)
            used += (size_t)k;
    }
    return 0;
}

/* Closing a signal handle gives its signal back its default action: a SIGTERM repeated in the last steps of a
 * shutdown (a supervisor's second try, a user's second ^C) would then kill serve before it has removed its
 * state. Shutdown has begun, so those signals are ignored from the moment libuv lets go of them. */
static void close_walk(uv_handle_t *h, void *arg)
{
    if (uv_is_closing(h))
        return;
    int sig = h->type == UV_SIGNAL ? ((uv_signal_t *)h)->signum : 0;
    uv_close(h, NULL);
    if (sig == SIGTERM || sig == SIGINT || sig == SIGHUP)
        signal(sig, SIG_IGN);
}

static void spawner_log(void *arg, const char *msg)
{
    kago__slog(arg, SLOG_WARN, NULL, NULL, "%s", msg);
}

/* Instances are cloned by a small process started now, while serve is small (spawner.h): a start then
 * does not slow down as instances accumulate. KAGO_SERVE_SPAWNER=off clones them from serve itself. */
/* Thousands of instances hold a few descriptors each (pidfd, network namespace, log FIFOs, upstream
 * sockets) beside the clients' connections: 5,000 of them passed a limit of 20,000. The soft limit is raised
 * to the hard one, and by root both to the kernel's fs.nr_open (at most 1M), as nginx's
 * worker_rlimit_nofile or systemd's LimitNOFILE would. Instances inherit it unless their spec sets
 * RLIMIT_NOFILE (podman gives containers 1,048,576 as well). */
static void raise_nofile(struct server *srv)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        return;
    rlim_t want = 1 << 20;
    FILE *f = fopen("/proc/sys/fs/nr_open", "re");
    unsigned long nr = 0;
    if (f && fscanf(f, "%lu", &nr) == 1 && nr < want)
        want = nr;
    if (f)
        fclose(f);
    struct rlimit up = {want > rl.rlim_max ? want : rl.rlim_max, want > rl.rlim_max ? want : rl.rlim_max};
    if (rl.rlim_cur >= up.rlim_cur || setrlimit(RLIMIT_NOFILE, &up) == 0)
        return;
    up = (struct rlimit){rl.rlim_max, rl.rlim_max}; /* (not root) */
    if (rl.rlim_cur < rl.rlim_max && setrlimit(RLIMIT_NOFILE, &up) < 0)
        kago__slog(srv, SLOG_WARN, NULL, NULL, "raise the open files limit to %llu: %s",
                   (unsigned long long)rl.rlim_max, strerror(errno));
}

/* serve's descriptor table made, now, as large as thousands of instances want (each holds a few, see
 * raise_nofile): the kernel grows a table by doubling, and in a process of several threads each growth waits
 * for an RCU grace period (expand_fdtable's synchronize_rcu; traced on this VM: 8-20 ms, on an event loop in
 * the middle of a start). While serve has one thread it does not wait. 32,768 slots cost the kernel 264 KB.
 */
#define FD_RESERVE 32768
static void fd_table_reserve(int any_fd)
{
    struct rlimit rl;
    rlim_t n = getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < FD_RESERVE ? rl.rlim_cur : FD_RESERVE;
    int fd = n > 64 ? fcntl(any_fd, F_DUPFD_CLOEXEC, (int)n - 1) : -1; /* (64: a process's first table) */
    if (fd >= 0)
        close(fd);
}

/* A warning when --root is not on a tmpfs: every start creates its state dir and files there and every stop
 * removes them; on ext4 each file cost 0.4-0.8 ms of serve's loop (measured on a root on ext4 in a storm). */
static void root_fs_check(struct server *srv)
{
    struct statfs st;
    if (statfs(srv->opts.root, &st) < 0 || st.f_type == TMPFS_MAGIC || st.f_type == RAMFS_MAGIC)
        return;
    static const struct {
        unsigned long magic;
        const char *name;
    } known[] = {{EXT4_SUPER_MAGIC, "ext4"},
                 {XFS_SUPER_MAGIC, "xfs"},
                 {BTRFS_SUPER_MAGIC, "btrfs"},
                 {OVERLAYFS_SUPER_MAGIC, "overlay"},
                 {NFS_SUPER_MAGIC, "nfs"}};
    char name[32];
    snprintf(name, sizeof name, "type %#lx", (unsigned long)st.f_type);
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if ((unsigned long)st.f_type == known[i].magic)
            snprintf(name, sizeof name, "%s", known[i].name);
    kago__slog(srv, SLOG_WARN, NULL, NULL,
               "--root %s is on %s, not on a tmpfs: each start and stop creates and removes its "
               "state files there, slowly on a disk (kago's default, /run/kago, is on a tmpfs on Debian)",
               srv->opts.root, name);
}

/* A warning when the host's per-user inotify limits are the kernel's defaults: every instance's user
 * namespace is the host root's, and so are its inotify instances (docs/serve.md, "Default limits"). */
static void inotify_check(struct server *srv)
{
    char *v = kago__read_file("/proc/sys/fs/inotify/max_user_instances", NULL, NULL);
    unsigned long n = v ? strtoul(v, NULL, 10) : 0;
    free(v);
    if (n && n < 1024)
        kago__slog(
            srv, SLOG_WARN, NULL, NULL,
            "fs.inotify.max_user_instances is %lu: the inotify instances of every app's instances count "
            "against the host's root, one app can take them all; raise it (sysctl "
            "fs.inotify.max_user_instances=8192 fs.inotify.max_user_watches=524288)",
            n);
}

static void start_spawner(struct server *srv)
{
    const char *env = getenv("KAGO_SERVE_SPAWNER");
    struct kago_error *err = NULL;
    if (env && !strcmp(env, "off"))
        return;
    /* (the spawner keeps the sysfs its containers share there; without the directory, each mounts its own) */
    cleanup_free char *records = xasprintf("%s/.serve", srv->opts.root);
    cleanup_free char *sys_dir = xasprintf("%s/.sys", records);
    if (kago__mkdir_p(records, 0700, NULL) < 0 || (mkdir(sys_dir, 0700) < 0 && errno != EEXIST))
        sys_dir[0] = '\0';
    if (kago__spawner_start(spawner_log, srv, *sys_dir ? sys_dir : NULL, &err) < 0) {
        kago__slog(srv, SLOG_WARN, NULL, NULL, "%s: containers are cloned by serve itself", err->msg);
        kago_error_free(err);
    }
}

/* --loop-priority: in a storm of starts, serve's event loops run above the processes it starts (10 nice
 * levels by default, as nginx's worker_priority), so that the storm does not keep them waiting for a CPU:
 * the first loop holds every request loop while it runs a turn, so its time in the run queue was theirs
 * too (at 10,000 / 5,000 on 2 CPUs, 84% of its turns' time over 15 ms; see docs/serve.md). A storm is
 * starts waiting in the start queue (the machine's starts at their limit); the loops go back to serve's
 * own once the queue has been empty for loop_calm_ms. Not always: raised, a loop preempts the app it
 * proxies to at each of its wakeups and batches less (h2 at one stream per connection, 1.02-1.10x
 * nginx's rate at serve's own, 0.89x raised). What serve starts, containers, the spawner, CRIU, an
 * upgrade's new serve, gets serve's own nice value (kago__set_child_nice), as does the work serve gives
 * libuv's pool (a start's kernel half, checkpoints, restores: kago__pool_priority; the pool's threads are
 * made by the loop that first queues work). */
static bool loop_nice_set(struct server *srv, pid_t tid, int nice)
{
    if (setpriority(PRIO_PROCESS, (id_t)tid, nice) == 0 || errno == ESRCH)
        return true;
    int e = errno;
    if (!__atomic_exchange_n(&srv->nice_warned, true, __ATOMIC_RELAXED))
        kago__slog(srv, SLOG_WARN, NULL, NULL,
                   "event loops stay at nice %d (--loop-priority): setpriority %d: %s", srv->base_nice, nice,
                   strerror(e));
    return false;
}

/* A loop's thread, as it starts (and the first loop again after an upgrade's spawn): known to the storm,
 * and at the nice value the loops have now. */
void kago__loop_priority(struct server *srv)
{
    static _Thread_local bool known;
    if (srv->loop_nice == srv->base_nice)
        return;
    pthread_mutex_lock(&srv->loops_mu);
    if (!known) {
        srv->loops = xrealloc(srv->loops, (srv->nloops + 1) * sizeof(*srv->loops));
        srv->loops[srv->nloops++] = gettid();
        known = true;
    }
    loop_nice_set(srv, 0, srv->loops_raised ? srv->loop_nice : srv->base_nice);
    pthread_mutex_unlock(&srv->loops_mu);
}

/* A loop's thread, as it ends: its id is no longer ours to renice. */
void kago__loop_priority_end(struct server *srv)
{
    pid_t self = gettid();
    pthread_mutex_lock(&srv->loops_mu);
    for (size_t i = 0; i < srv->nloops; i++)
        if (srv->loops[i] == self) {
            srv->loops[i] = srv->loops[--srv->nloops];
            break;
        }
    pthread_mutex_unlock(&srv->loops_mu);
}

/* The first loop, as a start is queued (storm) and each tick (are starts waiting in the start queue?). */
void kago__loops_storm(struct server *srv, bool storm)
{
    if (srv->loop_nice == srv->base_nice)
        return;
    uint64_t now = kago__serve_now_ms();
    if (storm)
        srv->storm_ms = now;
    bool up = storm || (srv->loops_raised && now - srv->storm_ms < srv->loop_calm_ms);
    if (up == srv->loops_raised)
        return;
    pthread_mutex_lock(&srv->loops_mu);
    srv->loops_raised = up;
    for (size_t i = 0; i < srv->nloops; i++)
        loop_nice_set(srv, srv->loops[i], up ? srv->loop_nice : srv->base_nice);
    pthread_mutex_unlock(&srv->loops_mu);
}

void kago__pool_priority(struct server *srv)
{
    static _Thread_local bool set;
    if (!set && srv->loop_nice != srv->base_nice)
        setpriority(PRIO_PROCESS, 0, srv->base_nice);
    set = true;
}

/* libuv makes its pool's threads at the first work queued, and a thread takes the nice value of the one
 * that made it: serve queues this at its start, so that they are made at serve's own and not by a loop
 * raised in a storm (a pool thread that never ran work would stay raised: kago__pool_priority). */
static void pool_made(uv_work_t *w)
{
    (void)w;
}

int kago_serve_run(const struct kago_serve_opts *o, struct kago_error **err)
{
    struct server srv_ = {.opts = *o,
                          .root_lock = -1,
                          .up_conn = -1,
                          .admin = {.keep_fd = -1},
                          .loops_mu = PTHREAD_MUTEX_INITIALIZER},
                  *srv = &srv_;
    if (!o->config_dir == !o->cluster)
        return kago_error_set(err, 0, "serve: --config DIR or --cluster etcd://... is required (not both)");
    signal(SIGPIPE, SIG_IGN);
    kago__slog_format(srv); /* latched before the first line, those logged without srv included */
    errno = 0;
    srv->base_nice = getpriority(PRIO_PROCESS, 0);
    if (errno)
        srv->base_nice = 0;
    srv->loop_nice = srv->base_nice;
    if (o->loop_priority >= 0) {
        int d = o->loop_priority ? o->loop_priority : 10;
        srv->loop_nice = srv->base_nice - d < -20 ? -20 : srv->base_nice - d;
        kago__set_child_nice(srv->base_nice);
        const char *calm = getenv("KAGO_SERVE_LOOP_CALM_MS");
        srv->loop_calm_ms = calm && *calm ? strtoull(calm, NULL, 10) : LOOP_CALM_MS;
        /* said now, not in the first storm: may the loops rise at all? */
        if (!loop_nice_set(srv, 0, srv->loop_nice))
            srv->loop_nice = srv->base_nice;
        setpriority(PRIO_PROCESS, 0, srv->base_nice);
    }
    kago__systemd_init();
    int sd_main, sd_admin;
    if (kago__systemd_listen_fds(&sd_main, &sd_admin, err) < 0)
        return -1;
    srv->host_netns = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
    if (srv->host_netns < 0)
        return kago_error_set(err, errno, "open /proc/self/ns/net");
    raise_nofile(srv);
    fd_table_reserve(srv->host_netns);
    /* glibc's own thresholds, fixed: by default they grow after a large block is freed (up to 32 MiB), and
     * then a reload's large lists come from the heaps and, freed, stay resident (a worker thread's heap is
     * only trimmed from its top on a free, malloc_trim does not shrink it). */
    mallopt(M_MMAP_THRESHOLD, 256 << 10);
    mallopt(M_TRIM_THRESHOLD, 1 << 20);
    srv->root_tag = kago__root_id(srv->opts.root); /* (instance and warm sandbox cgroup names) */
    start_spawner(srv);
    root_fs_check(srv); /* (it exists by now) */
    inotify_check(srv);
    uv_loop_t loop;
    uv_loop_init(&loop);
    srv->loop = &loop;
    static uv_work_t pool_first;
    uv_queue_work(&loop, &pool_first, pool_made, NULL);
    kago__shards_init(srv, kago__shards_wanted(srv));
    kago__warm_init(srv);
    srv->started_ms = kago__serve_now_ms();
    uv_signal_init(&loop, &srv->sigchld); /* started once a restore may happen */
    srv->sigchld.data = srv;
    srv->fine_fd = -1;
    int ret = -1;
    if (!strcmp(o->access_log, "-"))
        srv->access_log = stdout;
    else if (strcmp(o->access_log, "off") != 0 && !(srv->access_log = fopen(o->access_log, "ae"))) {
        kago_error_set(err, errno, "access log %s", o->access_log);
        goto out;
    }
    uv_timer_init(&loop, &srv->drain_timer);
    srv->drain_timer.data = srv;
    kago__instance_queues_init(srv);
    uv_timer_init(&loop, &srv->handover_timer);
    srv->handover_timer.data = srv;
    uv_timer_init(&loop, &srv->startq_timer);
    srv->startq_timer.data = srv;
    /* a start is mostly this machine's CPU time (kernel setup, the app's boot): 2 per CPU keep them busy */
    if (!srv->opts.max_starting) {
        long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
        srv->opts.max_starting = ncpu > 0 ? 2 * (unsigned)ncpu : 4;
    }
    int fds[KAGO_SERVE_MAX_LISTEN];
    plan_listeners(srv, fds, sd_main);
    if (!(srv->tls = kago__tls_front_new(0, err))) {
        close_fds(fds, srv->nls);
        close_fds(&sd_admin, 1);
        goto out;
    }
    kago__tls_front_h2(srv->tls, !o->no_h2);
    if (o->acme_directory && !(srv->acme = kago__acme_new(srv, err))) {
        close_fds(fds, srv->nls);
        close_fds(&sd_admin, 1);
        goto out;
    }
    if (o->config_dir && load_config(srv, err) < 0) {
        close_fds(fds, srv->nls);
        close_fds(&sd_admin, 1);
        goto out;
    }
    if (!srv->router) /* --cluster: no app until etcd answers */
        srv->router = kago__router_new(1);
    if (!srv->tls_store) { /* --cluster: the default certificate and those obtained by ACME */
        if (!(srv->tls_store = new_tls_store(srv, err))) {
            close_fds(fds, srv->nls);
            close_fds(&sd_admin, 1);
            goto out;
        }
        kago__tls_front_use(srv->tls, srv->tls_store);
    }
    const char *passed = " (systemd socket)";
    char frombuf[48];
    if (o->upgrade) { /* the running serve's sockets; it drains, then lets the root lock go */
        close_fds(fds, srv->nls);
        close_fds(&sd_admin, 1);
        if (kago__upgrade_request(srv, fds, &sd_admin, err) < 0)
            goto out;
        snprintf(frombuf, sizeof(frombuf), " (from pid %d)", (int)srv->upgraded_from);
        passed = frombuf;
    }
    /* before the listener and the first tick: no new instance beside one that can be adopted */
    uint64_t t_adopt = kago__serve_now_us();
    if (kago__serve_adopt(srv, err) < 0) {
        close_fds(fds, srv->nls);
        close_fds(&sd_admin, 1);
        goto out;
    }
    if (srv->up_conn >= 0) {
        kago__upgrade_take_clients(srv);
        close(srv->up_conn);
        srv->up_conn = -1;
        kago__slog(srv, SLOG_INFO, NULL, NULL, "took over from pid %d after %.1f ms of its drain",
                   (int)srv->upgraded_from, (kago__serve_now_us() - t_adopt) / 1000.0);
    }
    char mainbuf[1024], adminbuf[96];
    if (listen_all(srv, fds, passed, mainbuf, sizeof(mainbuf), err) < 0) {
        close_fds(&sd_admin, 1);
        goto out;
    }
    bool admin_on = sd_admin >= 0 || (o->admin && *o->admin && strcmp(o->admin, "off") != 0);
    if (admin_on && kago__admin_setup(srv, sd_admin >= 0, err) < 0) /* (auth.c: token or unix socket) */
        goto out;
    if (admin_on && !kago__admin_unix_path(srv) &&
        kago__server_listen(srv, &srv->admin, o->admin, sd_admin, true, err) < 0)
        goto out;
    if (kago__upgrade_listen(srv, err) < 0)
        goto out;
    if (kago__hs_start(srv, err) < 0)
        goto out;
    if (o->cluster && kago__cluster_start(srv, err) < 0) /* apps arrive from etcd on the loop */
        goto out;
    uv_timer_init(&loop, &srv->tick);
    srv->tick.data = srv;
    const char *recs = getenv("KAGO_SERVE_TICK_RECORDS"); /* (tests: 1) */
    srv->tick_records = recs && *recs && strtoull(recs, NULL, 10) ? strtoull(recs, NULL, 10) : TICK_RECORDS;
    uv_timer_start(&srv->tick, on_tick, TICK_MS, TICK_MS);
    kago__dash_init(srv);
    uv_signal_t *sigs[] = {&srv->sigterm, &srv->sigint, &srv->sighup};
    int signums[] = {SIGTERM, SIGINT, SIGHUP};
    for (int i = 0; i < 3; i++) {
        uv_signal_init(&loop, sigs[i]);
        sigs[i]->data = srv;
        uv_signal_start(sigs[i], on_signal, signums[i]);
    }
    size_t napps = 0;
    for (struct app_rt *a = srv->apps; a; a = a->next)
        napps++;
    /* (before the line that says serve listens: kago ps finds it by that file) */
    kago__admin_publish(
        srv, srv->admin.tcp.data ? listener_addr(&srv->admin, NULL, adminbuf, sizeof(adminbuf)) : NULL);
    if (srv->admin.tcp.data)
        kago__slog(srv, SLOG_INFO, NULL, NULL, "%zu apps from %s, listening on %s, admin on http://%s", napps,
                   o->config_dir ? o->config_dir : "etcd", mainbuf,
                   listener_addr(&srv->admin, sd_admin >= 0 ? passed : NULL, adminbuf, sizeof(adminbuf)));
    else if (kago__admin_unix_path(srv))
        kago__slog(srv, SLOG_INFO, NULL, NULL, "%zu apps from %s, listening on %s, admin on unix:%s", napps,
                   o->config_dir ? o->config_dir : "etcd", mainbuf, kago__admin_unix_path(srv));
    else
        kago__slog(srv, SLOG_INFO, NULL, NULL, "%zu apps from %s, listening on %s, admin listener off", napps,
                   o->config_dir ? o->config_dir : "etcd", mainbuf);
    if (kago__tls_store_count(srv->tls_store))
        kago__slog(srv, SLOG_INFO, NULL, NULL, "tls: %zu certificates loaded",
                   kago__tls_store_count(srv->tls_store));
    unsigned hs_loops;
    uint64_t hs_handed;
    kago__hs_stats(srv, &hs_loops, &hs_handed);
    if (srv->nshards > 1)
        kago__slog(srv, SLOG_INFO, NULL, NULL,
                   "%u event loops serve requests (each app on one of them), %u more take TLS handshakes",
                   srv->nshards - 1, hs_loops);
    else if (hs_loops)
        kago__slog(srv, SLOG_INFO, NULL, NULL,
                   "%u event loops: the first serves every request, %u more take TLS handshakes",
                   hs_loops + 1, hs_loops);
    /* min_instances: start the standbys now rather than at the first tick */
    for (struct app_rt *a = srv->apps; a; a = a->next)
        kago__pool_tick(&a->pool, kago__serve_now_ms());
    if (kago__shards_start(srv, err) < 0)
        goto out;
    kago__systemd_ready(srv); /* listeners up, Kagofiles loaded */
    kago__loop_priority(srv);
    kago__shards_run(srv);
    kago__shards_join(srv);
    if (!srv->handed_over)
        kago__slog(srv, SLOG_INFO, NULL, NULL, "stopped; every instance removed");
    ret = 0;
out:
    kago__shards_join(srv); /* (from here on the first loop is alone) */
    kago__instance_queues_end(srv);
    /* Anything left (startup failure): stop instances synchronously so nothing leaks; after a hand-over,
     * the ready and frozen ones are left running for the new serve (kago__upgrade_leaves). */
    for (struct app_rt *a = srv->apps; a; a = a->next) {
        a->pool.stopping = true;
        while (a->pool.insts)
            kago__pool_exited(&a->pool, a->pool.insts, kago__serve_now_ms());
    }
    kago__cluster_free(srv); /* its sockets and timers close with their own callbacks */
    kago__dash_shutdown(srv);
    kago__warm_stop(srv);
    kago__acme_stop(srv->acme);
    kago__hs_join(srv);
    srv->ending = true;
    if (srv->reload_job && !srv->reload_job->joined) /* (a hand-over ended the loop while a reload ran) */
        uv_thread_join(&srv->reload_job->thread);
    kago__admin_close_all(srv);
    uv_walk(&loop, close_walk, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    if (srv->fine_fd >= 0)
        close(srv->fine_fd);
    if (srv->reload_job)
        reload_drop(srv);
    kago__hs_free(srv);
    kago__acme_free(srv->acme);
    kago__admin_cleanup(srv);
    kago__dash_free(srv);
    while (srv->apps) {
        struct app_rt *a = srv->apps;
        srv->apps = a->next;
        free_app(a);
    }
    free(srv->loops);
    kago__router_free(srv->router);
    kago__smap_fini(&srv->names);
    kago__upgrade_close(srv);
    for (unsigned i = 0; i < srv->nls; i++)
        if (srv->ls[i].keep_fd >= 0)
            close(srv->ls[i].keep_fd);
    if (srv->admin.keep_fd >= 0)
        close(srv->admin.keep_fd);
    kago__tls_store_free(srv->tls_store);
    kago__tls_front_free(srv->tls);
    free(srv->tick_due);
    if (srv->up_conn >= 0)
        close(srv->up_conn);
    if (srv->root_lock >= 0) {
        cleanup_free char *records = xasprintf("%s/.serve", o->root);
        cleanup_free char *lock = xasprintf("%s/.lock", records);
        if (srv->handed_over) { /* the new serve waits on this very lock: its file stays */
            kago__systemd_notify("MAINPID=%d\nSTATUS=handed over to pid %d\n", (int)srv->handover_pid,
                                 (int)srv->handover_pid);
        } else {
            unlink(lock);
            cleanup_free char *sys_dir = xasprintf("%s/.sys", records); /* (the spawner's: spawner.c) */
            rmdir(sys_dir);
            rmdir(records); /* once every instance is removed, so is every record (else they stay) */
        }
        close(srv->root_lock);
    }
    kago__shards_free(srv);
    uv_loop_close(&loop);
    if (srv->access_log && srv->access_log != stdout)
        fclose(srv->access_log);
    close(srv->host_netns);
    kago__spawner_stop();
    return ret;
}
