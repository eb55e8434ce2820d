/* Reload: re-evaluate the Kagofile and apply it to running containers without restarting them.
 * Limits that changed in the file are applied live; hooks and timers are replaced; settings that can
 * only change with a restart are reported, never silently dropped. `kago reload NAME` reaches the
 * supervisor over its control socket (<root>/supervisors/<pid>.sock); SIGHUP reloads everything. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "supervisor.h"

static bool str_eq(const char *a, const char *b)
{
    return (!a && !b) || (a && b && !strcmp(a, b));
}

static bool strv_eq(char *const *a, char *const *b)
{
    size_t i = 0;
    for (; a && b && a[i] && b[i]; i++)
        if (strcmp(a[i], b[i]))
            return false;
    return (!a || !a[i]) && (!b || !b[i]);
}

static bool mem_eq(const void *a, const void *b, size_t n)
{
    return n == 0 || !memcmp(a, b, n);
}

static bool mounts_eq(const struct kago_spec *a, const struct kago_spec *b)
{
    if (a->nmounts != b->nmounts)
        return false;
    for (size_t i = 0; i < a->nmounts; i++) {
        const struct kago_mount *x = &a->mounts[i], *y = &b->mounts[i];
        if (x->kind != y->kind || !str_eq(x->src, y->src) || !str_eq(x->dst, y->dst) ||
            x->readonly != y->readonly || x->size != y->size)
            return false;
    }
    return true;
}

static bool seccomp_eq(const struct kago_seccomp *a, const struct kago_seccomp *b)
{
    if (a->mode != b->mode || a->default_action != b->default_action ||
        a->default_errno != b->default_errno || a->nrules != b->nrules)
        return false;
    for (size_t i = 0; i < a->nrules; i++)
        if (strcmp(a->rules[i].syscall, b->rules[i].syscall) || a->rules[i].action != b->rules[i].action ||
            a->rules[i].errno_value != b->rules[i].errno_value)
            return false;
    return true;
}

static bool joins_eq(const struct kago_spec *a, const struct kago_spec *b)
{
    for (int i = 0; i < KAGO_NS_COUNT; i++)
        if (!str_eq(a->join_ns[i], b->join_ns[i]))
            return false;
    return true;
}

/* Settings fixed at creation: each one that differs is named in the report. */
static void report_fixed(FILE *r, const char *name, const struct kago_spec *a, const struct kago_spec *b)
{
    struct {
        const char *what;
        bool same;
    } f[] = {
        {"rootfs", str_eq(a->rootfs, b->rootfs) && str_eq(a->image_id, b->image_id) &&
                       a->readonly == b->readonly && a->overlay == b->overlay &&
                       a->overlay_size == b->overlay_size},
        {"command", strv_eq(a->argv, b->argv)},
        {"env", strv_eq(a->env, b->env)},
        {"cwd", str_eq(a->cwd, b->cwd)},
        {"hostname", str_eq(a->hostname, b->hostname)},
        {"user", a->uid == b->uid && a->gid == b->gid},
        {"namespaces", a->ns == b->ns && joins_eq(a, b)},
        {"uid/gid maps", a->nuidmap == b->nuidmap && a->ngidmap == b->ngidmap &&
                             mem_eq(a->uidmap, b->uidmap, a->nuidmap * sizeof *a->uidmap) &&
                             mem_eq(a->gidmap, b->gidmap, a->ngidmap * sizeof *a->gidmap)},
        {"mounts", mounts_eq(a, b)},
        {"masked/readonly paths",
         strv_eq(a->masked_paths, b->masked_paths) && strv_eq(a->readonly_paths, b->readonly_paths)},
        {"rlimits",
         a->nrlimits == b->nrlimits && mem_eq(a->rlimits, b->rlimits, a->nrlimits * sizeof *a->rlimits)},
        {"capabilities", a->caps == b->caps},
        {"seccomp", seccomp_eq(&a->seccomp, &b->seccomp)},
        {"no_new_privs", a->no_new_privs == b->no_new_privs},
        {"init", a->init == b->init},
        {"sysfs", a->no_sysfs == b->no_sysfs},
        {"listen_port", a->listen_port == b->listen_port},
    };
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++)
        if (!f[i].same)
            fprintf(
                r,
                "%s: %s changed: cannot change while running (restart the container to apply); not applied\n",
                name, f[i].what);
}

static void fmt_limit(char *buf, size_t n, int64_t v)
{
    if (v == KAGO_UNSET)
        snprintf(buf, n, "unset");
    else if (v == KAGO_NOLIMIT)
        snprintf(buf, n, "max");
    else
        snprintf(buf, n, "%lld", (long long)v);
}

/* A limit set in the old file and gone from the new one goes back to the kernel's default. */
static void diff_num(FILE *r, const char *name, const char *what, int64_t old, int64_t new, int64_t reset,
                     int64_t *out, int *n)
{
    if (old == new)
        return;
    int64_t v = new == KAGO_UNSET ? reset : new;
    char a[32], b[32];
    fmt_limit(a, sizeof a, old);
    fmt_limit(b, sizeof b, v);
    fprintf(r, "%s: %s %s -> %s\n", name, what, a, b);
    *out = v;
    (*n)++;
}

static const char *raw_value(const struct kago_limits *l, const char *key)
{
    const char *v = NULL;
    for (size_t i = 0; i < l->nraw; i++) /* the last one wins, as when written in order */
        if (!strcmp(l->raw[i].key, key))
            v = l->raw[i].value;
    return v;
}

/* Fills out with the limits that changed between the old and new definition. Returns how many. */
static int diff_limits(FILE *r, const char *name, const struct kago_limits *o, const struct kago_limits *n,
                       struct kago_limits *out)
{
    int count = 0;
    diff_num(r, name, "cpu quota (us)", o->cpu_quota_us, n->cpu_quota_us, KAGO_NOLIMIT, &out->cpu_quota_us,
             &count);
    diff_num(r, name, "cpu period (us)", o->cpu_period_us, n->cpu_period_us, 100000, &out->cpu_period_us,
             &count);
    diff_num(r, name, "cpu weight", o->cpu_weight, n->cpu_weight, 100, &out->cpu_weight, &count);
    diff_num(r, name, "memory", o->memory, n->memory, KAGO_NOLIMIT, &out->memory, &count);
    diff_num(r, name, "pids", o->pids, n->pids, KAGO_NOLIMIT, &out->pids, &count);
    if (!str_eq(o->cpuset, n->cpuset)) {
        if (n->cpuset) {
            fprintf(r, "%s: cpuset %s -> %s\n", name, o->cpuset ? o->cpuset : "unset", n->cpuset);
            out->cpuset = strdup(n->cpuset);
            count++;
        } else {
            fprintf(r, "%s: cpuset removed from the file: left at %s (set it explicitly to change it)\n",
                    name, o->cpuset);
        }
    }
    for (size_t i = 0; i < n->nraw; i++) {
        const char *k = n->raw[i].key, *v = raw_value(n, k);
        if (v != n->raw[i].value) /* only the last occurrence */
            continue;
        if (!str_eq(raw_value(o, k), v)) {
            fprintf(r, "%s: %s %s -> %s\n", name, k, raw_value(o, k) ? raw_value(o, k) : "unset", v);
            struct kago_limits one;
            kf_limits_init(&one);
            kf_parse_limit(&one, k, v, NULL);
            struct kago_cgroup_kv *raw = realloc(out->raw, (out->nraw + 1) * sizeof *raw);
            if (!raw)
                abort();
            out->raw = raw;
            out->raw[out->nraw++] = one.raw[0];
            free(one.raw);
            count++;
        }
    }
    for (size_t i = 0; i < o->nraw; i++)
        if (!raw_value(n, o->raw[i].key) && raw_value(o, o->raw[i].key) == o->raw[i].value)
            fprintf(r, "%s: %s removed from the file: left at %s (raw keys have no default to go back to)\n",
                    name, o->raw[i].key, o->raw[i].value);
    return count;
}

static void apply_one(struct sup *s, struct sct *ct, struct kago_kagofile *nkf, FILE *r)
{
    struct kf_container *def = kf_find(nkf, ct->name);
    if (!def) {
        fprintf(r, "%s: no longer in the Kagofile: left running unchanged (stop it with kago kill)\n",
                ct->name);
        return;
    }
    report_fixed(r, ct->name, ct->def->spec, def->spec);
    struct kago_limits l;
    kf_limits_init(&l);
    int n = diff_limits(r, ct->name, &ct->def->spec->limits, &def->spec->limits, &l);
    struct kago_error *err = NULL;
    if (n > 0 && kago_container_update(ct->c, &l, &err) < 0) {
        fprintf(r, "%s: limits NOT applied: %s\n", ct->name, err->msg);
        kago_error_free(err);
    } else if (n > 0) {
        fprintf(r, "%s: %d limit%s applied live\n", ct->name, n, n == 1 ? "" : "s");
    }
    kf_limits_free(&l);
    /* Hooks and timers: the new file's from now on. */
    nkf->refs++;
    kf_unref(ct->kf);
    ct->kf = nkf;
    ct->def = def;
    sup_arm_timers(ct);
    size_t nh = def->nhooks;
    fprintf(r, "%s: %zu hook%s and timer%s loaded\n", ct->name, nh, nh == 1 ? "" : "s", nh == 1 ? "" : "s");
}

int sup_reload(struct sup *s, const char *name, char **report)
{
    size_t len = 0;
    FILE *r = open_memstream(report, &len);
    if (!r)
        abort();
    struct kago_kagofile *nkf = NULL;
    struct kago_error *err = NULL;
    int rc = 0;
    if (name && !sup_find(s, name)) {
        fprintf(r, "error: %s is not supervised here\n", name);
        rc = -1;
    } else if (kago_kagofile_load(s->opts->path, s->opts->sets, &nkf, &err) < 0) {
        fprintf(r, "error: %s (nothing changed)\n", err->msg);
        kago_error_free(err);
        rc = -1;
    } else {
        nkf->refs = 1;
        nkf->sup = s;
        fprintf(r, "ok: reloaded %s\n", s->opts->path);
        for (size_t i = 0; i < s->ncts; i++) {
            struct sct *ct = s->cts[i];
            if (ct->running && (!name || !strcmp(name, ct->name)))
                apply_one(s, ct, nkf, r);
        }
        kf_unref(nkf);
        sup_refresh_watchers(s);
    }
    fclose(r);
    sup_log(s, "reload%s%s: %s", name ? " " : "", name ? name : "", rc < 0 ? "failed" : "done");
    return rc;
}

/* --- control socket --------------------------------------------------------------------------- */

struct conn {
    uv_pipe_t pipe;
    struct sup *sup;
    char buf[512];
    size_t len;
    uv_write_t w;
    char *reply;
};

static void conn_closed(uv_handle_t *h)
{
    struct conn *c = h->data;
    free(c->reply);
    free(c);
}

static void conn_written(uv_write_t *w, int status)
{
    struct conn *c = w->data;
    uv_close((uv_handle_t *)&c->pipe, conn_closed);
}

static void conn_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    struct conn *c = h->data;
    *b = uv_buf_init(c->buf + c->len, (unsigned)(sizeof c->buf - 1 - c->len));
}

static void conn_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b)
{
    struct conn *c = st->data;
    if (n < 0 || (n == 0 && c->len >= sizeof c->buf - 1)) {
        uv_close((uv_handle_t *)&c->pipe, conn_closed);
        return;
    }
    c->len += (size_t)n;
    c->buf[c->len] = '\0';
    char *nl = strchr(c->buf, '\n');
    if (!nl)
        return;
    *nl = '\0';
    uv_read_stop(st);
    if (!strncmp(c->buf, "reload", 6) && (c->buf[6] == '\0' || c->buf[6] == ' ')) {
        sup_reload(c->sup, c->buf[6] ? c->buf + 7 : NULL, &c->reply);
    } else if (asprintf(&c->reply, "error: unknown request \"%s\"\n", c->buf) < 0) {
        abort();
    }
    uv_buf_t out = uv_buf_init(c->reply, (unsigned)strlen(c->reply));
    c->w.data = c;
    if (uv_write(&c->w, st, &out, 1, conn_written) < 0)
        uv_close((uv_handle_t *)&c->pipe, conn_closed);
}

static void on_connection(uv_stream_t *server, int status)
{
    struct sup *s = server->data;
    if (status < 0)
        return;
    struct conn *c = calloc(1, sizeof *c);
    if (!c)
        abort();
    c->sup = s;
    uv_pipe_init(&s->loop, &c->pipe, 0);
    c->pipe.data = c;
    if (uv_accept(server, (uv_stream_t *)&c->pipe) < 0 ||
        uv_read_start((uv_stream_t *)&c->pipe, conn_alloc, conn_read) < 0)
        uv_close((uv_handle_t *)&c->pipe, conn_closed);
}

int sup_control_start(struct sup *s, struct kago_error **err)
{
    if (asprintf(&s->sockpath, "%s/%d.sock", s->dir, (int)getpid()) < 0)
        abort();
    unlink(s->sockpath);
    uv_pipe_init(&s->loop, &s->control, 0);
    s->control.data = s;
    s->control_open = true;
    int r = uv_pipe_bind(&s->control, s->sockpath);
    if (r == 0)
        r = uv_listen((uv_stream_t *)&s->control, 16, on_connection);
    if (r < 0)
        return kago_error_set(err, -r, "control socket %s", s->sockpath);
    return 0;
}

void sup_control_stop(struct sup *s)
{
    if (!s->control_open)
        return;
    s->control_open = false;
    uv_close((uv_handle_t *)&s->control, NULL);
    if (s->sockpath)
        unlink(s->sockpath);
}

/* --- the client: kago reload NAME ------------------------------------------------------------- */

int kago_kagofile_reload(const char *root, const char *name, char **report, struct kago_error **err)
{
    char path[4096], buf[64];
    snprintf(path, sizeof path, "%s/%s/%s.pid", root, KAGO_SUPERVISORS_DIR, name);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return kago_error_set(err, errno, "container %s: no Kagofile supervisor (%s)", name, path);
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    int pid = n > 0 ? (buf[n] = '\0', atoi(buf)) : 0;
    if (pid <= 0)
        return kago_error_set(err, 0, "container %s: %s holds no pid", name, path);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    if ((size_t)snprintf(a.sun_path, sizeof a.sun_path, "%s/%s/%d.sock", root, KAGO_SUPERVISORS_DIR, pid) >=
        sizeof a.sun_path)
        return kago_error_set(err, ENAMETOOLONG, "container %s: control socket path", name);
    int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0)
        return kago_error_set(err, errno, "socket");
    if (connect(s, (struct sockaddr *)&a, sizeof a) < 0) {
        int e = errno;
        close(s);
        return kago_error_set(err, e, "container %s: supervisor %d: connect %s", name, pid, a.sun_path);
    }
    char req[512];
    int len = snprintf(req, sizeof req, "reload %s\n", name);
    if (write(s, req, (size_t)len) != len) {
        int e = errno;
        close(s);
        return kago_error_set(err, e, "container %s: supervisor %d: write", name, pid);
    }
    size_t cap = 4096, have = 0;
    char *out = malloc(cap);
    if (!out)
        abort();
    for (;;) {
        if (have + 1 >= cap && !(out = realloc(out, cap *= 2)))
            abort();
        ssize_t r = read(s, out + have, cap - have - 1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        have += (size_t)r;
    }
    close(s);
    out[have] = '\0';
    if (strncmp(out, "ok", 2)) {
        char *nl = strchr(out, '\n');
        if (nl)
            *nl = '\0';
        kago_error_set(err, 0, "container %s: reload: %s", name,
                       have ? out + (strncmp(out, "error: ", 7) ? 0 : 7)
                            : "the supervisor closed the connection");
        free(out);
        return -1;
    }
    *report = out;
    return 0;
}
