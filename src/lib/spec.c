/* The container spec: defaults, validation, ownership. */
#include <string.h>
#include <seccomp.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include <kago/app.h>
#include <kago/spec.h>

#include "cgroup.h"
#include "util.h"

static const char *const default_masked[] = {
    "/proc/acpi",        "/proc/kcore",       "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
    "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware",       NULL,
};
static const char *const default_readonly[] = {
    "/proc/asound", "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger", NULL,
};

static char **strv_dup(const char *const *v)
{
    size_t n = 0;
    while (v && v[n])
        n++;
    char **out = xcalloc(n + 1, sizeof *out);
    for (size_t i = 0; i < n; i++)
        out[i] = xstrdup(v[i]);
    return out;
}

static size_t strv_len(char *const *v)
{
    size_t n = 0;
    while (v && v[n])
        n++;
    return n;
}

void kago_spec_init(struct kago_spec *spec)
{
    memset(spec, 0, sizeof *spec);
    spec->rootfs = xstrdup(KAGO_DEFAULT_ROOTFS);
    spec->ns = (1u << KAGO_NS_PID) | (1u << KAGO_NS_MOUNT) | (1u << KAGO_NS_UTS) | (1u << KAGO_NS_IPC) |
               (1u << KAGO_NS_NET) | (1u << KAGO_NS_CGROUP);
    spec->env = strv_dup((const char *const[]){
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm", NULL});
    spec->cwd = xstrdup("/");
    /* shared: 10,000 apps would otherwise hold 10,000 copies of them (about 600 bytes each) */
    spec->masked_paths = (char **)default_masked;
    spec->readonly_paths = (char **)default_readonly;
    spec->limits = KAGO_LIMITS_UNSET;
    spec->caps = kago_caps_default();
    spec->seccomp.mode = KAGO_SECCOMP_DEFAULT;
    spec->seccomp.default_action = KAGO_SCMP_ALLOW;
    spec->no_new_privs = true;
}

static bool shared_paths(char **v)
{
    return v == (char **)default_masked || v == (char **)default_readonly;
}

void kago_spec_own_paths(char ***list)
{
    if (shared_paths(*list))
        *list = strv_dup((const char *const *)*list);
}

void kago_spec_set_paths(char ***list, char **v)
{
    if (!shared_paths(*list))
        kago__strv_free(*list);
    *list = v;
}

void kago_spec_init_front(struct kago_spec *spec)
{
    kago_spec_init(spec);
    spec->limits.pids = KAGO_DEFAULT_PIDS;
    spec->userns = KAGO_USERNS_AUTO; /* docs/userns.md */
    struct kago_mount cg = {.kind = KAGO_MOUNT_CGROUP, .dst = (char *)"/sys/fs/cgroup", .readonly = true};
    kago_spec_add_mount(spec, &cg);
}

void kago_spec_free(struct kago_spec *spec)
{
    if (!spec)
        return;
    free(spec->name);
    free(spec->rootfs);
    free(spec->overlay_dir);
    free(spec->groups);
    for (size_t i = 0; i < spec->nsysctls; i++) {
        free(spec->sysctls[i].key);
        free(spec->sysctls[i].value);
    }
    free(spec->sysctls);
    kago__strv_free(spec->layers);
    free(spec->image);
    free(spec->image_id);
    free(spec->image_store);
    kago__strv_free(spec->argv);
    kago__strv_free(spec->env);
    free(spec->cwd);
    free(spec->hostname);
    free(spec->userns_key);
    free(spec->cgroup_path);
    for (int i = 0; i < KAGO_NS_COUNT; i++)
        free(spec->join_ns[i]);
    free(spec->uidmap);
    free(spec->gidmap);
    for (size_t i = 0; i < spec->nmounts; i++) {
        free(spec->mounts[i].src);
        free(spec->mounts[i].dst);
    }
    free(spec->mounts);
    kago_spec_set_paths(&spec->masked_paths, NULL);
    kago_spec_set_paths(&spec->readonly_paths, NULL);
    free(spec->limits.cpuset);
    for (size_t i = 0; i < spec->limits.nraw; i++) {
        free(spec->limits.raw[i].key);
        free(spec->limits.raw[i].value);
    }
    free(spec->limits.raw);
    free(spec->rlimits);
    for (size_t i = 0; i < spec->seccomp.nrules; i++)
        free(spec->seccomp.rules[i].syscall);
    free(spec->seccomp.rules);
    memset(spec, 0, sizeof *spec);
}

/* Which namespace a sysctl belongs to (as runc checks it), or -1 for one the host shares. */
static int sysctl_ns(const char *k)
{
    if (!strncmp(k, "net.", 4))
        return KAGO_NS_NET;
    if (!strncmp(k, "fs.mqueue.", 10) || !strcmp(k, "kernel.msgmax") || !strcmp(k, "kernel.msgmnb") ||
        !strcmp(k, "kernel.msgmni") || !strcmp(k, "kernel.sem") || !strcmp(k, "kernel.shmall") ||
        !strcmp(k, "kernel.shmmax") || !strcmp(k, "kernel.shmmni") || !strcmp(k, "kernel.shm_rmid_forced"))
        return KAGO_NS_IPC;
    if (!strcmp(k, "kernel.hostname") || !strcmp(k, "kernel.domainname"))
        return KAGO_NS_UTS;
    return -1;
}

/* The limits' own values (kago_spec_validate, and kago_container_update before it writes anything). */
int kago__limits_check(const struct kago_limits *l, struct kago_error **err)
{
    if (l->cpu_weight != KAGO_UNSET && (l->cpu_weight < 1 || l->cpu_weight > 10000))
        return kago_error_set(err, 0, "cpu weight %lld: must be 1..10000", (long long)l->cpu_weight);
    if (l->pids != KAGO_UNSET && l->pids != KAGO_NOLIMIT && l->pids < 1)
        return kago_error_set(err, 0, "pids %lld: must be at least 1", (long long)l->pids);
    if (l->memory != KAGO_UNSET && l->memory != KAGO_NOLIMIT && l->memory < 4096 * 64)
        return kago_error_set(err, 0, "memory %lld: must be at least 256K", (long long)l->memory);
    int64_t mem = l->memory, swap = l->memory_swap;
    if (swap && (mem == KAGO_UNSET || mem == KAGO_NOLIMIT || (swap != KAGO_NOLIMIT && swap < mem)))
        return kago_error_set(err, 0, "memory+swap %lld: needs a memory limit, and at least it",
                              (long long)swap);
    return 0;
}

/* The spec joins a namespace of type ns other than kago's own (a pod's, by path): sysctls of that type
 * change it, not the host's. A path that does not open passes here: the join reports it. */
static bool joins_other_ns(const struct kago_spec *spec, int ns)
{
    struct stat theirs, ours;
    char self[32];
    snprintf(self, sizeof self, "/proc/self/ns/%s", kago_ns_name(ns));
    if (!spec->join_ns[ns])
        return false;
    return stat(spec->join_ns[ns], &theirs) < 0 || stat(self, &ours) < 0 || theirs.st_dev != ours.st_dev ||
           theirs.st_ino != ours.st_ino;
}

int kago_spec_validate(const struct kago_spec *spec, struct kago_error **err)
{
    if (!spec->argv || !spec->argv[0])
        return kago_error_set(err, 0, "no command given");
    if ((!spec->rootfs || !*spec->rootfs) && !(spec->layers && spec->layers[0]))
        return kago_error_set(err, 0, "no rootfs given");
    for (size_t i = 0; i < spec->nsysctls; i++) {
        const char *k = spec->sysctls[i].key;
        int ns = sysctl_ns(k);
        if (ns < 0 || strstr(k, "..") || strchr(k, '/'))
            return kago_error_set(err, 0, "sysctl %s: not namespaced (it would change the host)", k);
        if (!(spec->ns & (1u << ns)) && !joins_other_ns(spec, ns))
            return kago_error_set(
                err, 0, "sysctl %s: needs the container's own %s namespace (one made or joined, not kago's)",
                k, kago_ns_name(ns));
    }
    if (spec->oom_score_adj_set && (spec->oom_score_adj < -1000 || spec->oom_score_adj > 1000))
        return kago_error_set(err, 0, "oom_score_adj %d: expected -1000..1000", spec->oom_score_adj);
    if (spec->overlay_dir && spec->overlay_dir[0] != '/')
        return kago_error_set(err, 0, "overlay dir \"%s\": must be an absolute path", spec->overlay_dir);
    if (spec->layers && spec->layers[0] && !spec->image_store)
        return kago_error_set(err, 0, "image layers given without their store");
    if (spec->stop_signal < 0 || spec->stop_signal >= 65)
        return kago_error_set(err, 0, "stop signal %d: not a signal", spec->stop_signal);
    if (spec->name) {
        size_t n = strlen(spec->name);
        if (n == 0 || n > 64 ||
            strspn(spec->name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") != n ||
            spec->name[0] == '.' || spec->name[0] == '-')
            return kago_error_set(err, 0, "name \"%s\": use 1-64 letters, digits, '_', '.', '-'", spec->name);
    }
    if (spec->cwd && spec->cwd[0] != '/')
        return kago_error_set(err, 0, "cwd \"%s\": must be an absolute path", spec->cwd);
    if ((spec->nuidmap || spec->ngidmap) && !(spec->ns & (1u << KAGO_NS_USER)) &&
        !spec->join_ns[KAGO_NS_USER])
        return kago_error_set(err, 0, "uid/gid maps given without a user namespace (--ns ...,user)");
    if ((spec->ns & (1u << KAGO_NS_USER)) && !spec->nuidmap && spec->userns != KAGO_USERNS_AUTO)
        return kago_error_set(err, 0, "user namespace needs a uid map (--uidmap 0:HOSTUID:COUNT)");
    if (!(spec->ns & (1u << KAGO_NS_MOUNT)) && !spec->join_ns[KAGO_NS_MOUNT])
        return kago_error_set(err, 0, "a mount namespace is required (kago pivots into the rootfs)");
    if (spec->cgroup_path && kago_cgroup_path_check(spec->cgroup_path, err) < 0)
        return -1;
    if (spec->hostname && strlen(spec->hostname) > 64)
        return kago_error_set(err, 0, "hostname \"%.64s...\": longer than 64 characters (the kernel's limit)",
                              spec->hostname);
    for (size_t i = 0; i < spec->seccomp.nrules; i++)
        if (seccomp_syscall_resolve_name(spec->seccomp.rules[i].syscall) == __NR_SCMP_ERROR)
            return kago_error_set(err, 0, "seccomp: unknown syscall \"%s\"", spec->seccomp.rules[i].syscall);
    if (spec->hostname && !(spec->ns & (1u << KAGO_NS_UTS)))
        return kago_error_set(err, 0, "hostname set without a uts namespace");
    if (spec->listen_port && spec->preserve_fds)
        return kago_error_set(err, 0, "socket activation and preserved fds both want fd 3");
    if (spec->listen_port && !(spec->ns & (1u << KAGO_NS_NET)))
        return kago_error_set(err, 0, "socket activation needs a net namespace");
    for (int i = 0; i < KAGO_NS_COUNT; i++)
        if (spec->join_ns[i] && (spec->ns & (1u << i)))
            return kago_error_set(err, 0, "namespace %s: both created and joined", kago_ns_name(i));
    if (kago__limits_check(&spec->limits, err) < 0)
        return -1;
    return 0;
}

void kago_spec_set_argv(struct kago_spec *spec, char *const *argv)
{
    kago__strv_free(spec->argv);
    spec->argv = strv_dup((const char *const *)argv);
}

void kago_spec_add_sysctl(struct kago_spec *spec, const char *key, const char *value)
{
    spec->sysctls = xrealloc(spec->sysctls, (spec->nsysctls + 1) * sizeof *spec->sysctls);
    spec->sysctls[spec->nsysctls++] = (struct kago_cgroup_kv){.key = xstrdup(key), .value = xstrdup(value)};
}

void kago_spec_add_env(struct kago_spec *spec, const char *kv)
{
    size_t klen = strcspn(kv, "=");
    size_t n = strv_len(spec->env);
    for (size_t i = 0; i < n; i++) {
        if (!strncmp(spec->env[i], kv, klen) && (spec->env[i][klen] == '=' || spec->env[i][klen] == '\0')) {
            free(spec->env[i]);
            spec->env[i] = xstrdup(kv);
            return;
        }
    }
    spec->env = xrealloc(spec->env, (n + 2) * sizeof *spec->env);
    spec->env[n] = xstrdup(kv);
    spec->env[n + 1] = NULL;
}

void kago_spec_add_mount(struct kago_spec *spec, const struct kago_mount *m)
{
    spec->mounts = xrealloc(spec->mounts, (spec->nmounts + 1) * sizeof *spec->mounts);
    struct kago_mount *d = &spec->mounts[spec->nmounts++];
    *d = *m;
    d->src = xstrdup(m->src);
    d->dst = xstrdup(m->dst);
}

void kago_spec_add_rlimit(struct kago_spec *spec, const struct kago_rlimit *rl)
{
    for (size_t i = 0; i < spec->nrlimits; i++) {
        if (spec->rlimits[i].resource == rl->resource) {
            spec->rlimits[i] = *rl;
            return;
        }
    }
    spec->rlimits = xrealloc(spec->rlimits, (spec->nrlimits + 1) * sizeof *spec->rlimits);
    spec->rlimits[spec->nrlimits++] = *rl;
}

void kago_spec_add_raw(struct kago_spec *spec, const char *key, const char *value)
{
    struct kago_limits *l = &spec->limits;
    l->raw = xrealloc(l->raw, (l->nraw + 1) * sizeof *l->raw);
    l->raw[l->nraw].key = xstrdup(key);
    l->raw[l->nraw].value = xstrdup(value);
    l->nraw++;
}

void kago_spec_add_seccomp_rule(struct kago_spec *spec, const struct kago_seccomp_rule *r)
{
    struct kago_seccomp *s = &spec->seccomp;
    s->rules = xrealloc(s->rules, (s->nrules + 1) * sizeof *s->rules);
    s->rules[s->nrules] = *r;
    s->rules[s->nrules].syscall = xstrdup(r->syscall);
    s->nrules++;
}

void kago_app_init(struct kago_app *app)
{
    memset(app, 0, sizeof *app);
    kago_spec_init_front(&app->spec);
    app->spec.limits.memory = KAGO_APP_DEFAULT_MEMORY;
    app->spec.limits.cpu_quota_us = KAGO_APP_DEFAULT_CPU_QUOTA_US;
    app->port = 8080;
    app->lifetime_ms = 20 * 60 * 1000;
    app->idle_timeout_ms = 5 * 60 * 1000;
    app->start_timeout_ms = 10 * 1000;
    app->stop_grace_ms = 10 * 1000;
    app->max_backoff_ms = 5 * 60 * 1000;
    app->min_instances = 0;
    app->max_instances = 4;
    app->concurrency = 20;
    app->max_pending = 1000;
    app->max_body = 64ull << 20;
    app->idle_action = KAGO_IDLE_STOP;
    app->log_size = 10ull << 20;
    app->log_keep = 3;
    app->scale_up.window_ms = 10 * 1000;
    app->scale_up.idle_ms = 60 * 1000;
    app->scale_up.throttled_pct = 20;
    app->scale_up.memory_pct = 90;
    app->scale_up.scale_out_at_top = true;
}

const char *kago_app_host_invalid(const char *host)
{
    const char *star = strchr(host, '*');
    if (!star)
        return NULL;
    if (star == host && (host[1] == 0 || (host[1] == '.' && (host[2] == 0 || host[2] == '.'))))
        return "a wildcard needs a domain after \"*.\", as in \"*.example.org\"";
    if (star != host || host[1] != '.' || strchr(host + 1, '*'))
        return "\"*\" may only be the whole first label, as in \"*.example.org\"";
    return NULL;
}

void kago_app_free(struct kago_app *app)
{
    if (!app)
        return;
    free(app->name);
    kago__strv_free(app->hosts);
    free(app->tls_cert);
    free(app->tls_key);
    free(app->hsts);
    kago_spec_free(&app->spec);
    memset(app, 0, sizeof *app);
}
