/* The options shared by `kago run` and `kago create`: each fills one field of the spec. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cli.h"

const struct option cli_spec_longopts[] = {
    {"rootfs", required_argument, NULL, O_ROOTFS},
    {"name", required_argument, NULL, O_NAME},
    {"hostname", required_argument, NULL, O_HOSTNAME},
    {"env", required_argument, NULL, O_ENV},
    {"cwd", required_argument, NULL, O_CWD},
    {"user", required_argument, NULL, O_USER},
    {"bind", required_argument, NULL, O_BIND},
    {"tmpfs", required_argument, NULL, O_TMPFS},
    {"readonly", no_argument, NULL, O_READONLY},
    {"overlay", no_argument, NULL, O_OVERLAY},
    {"overlay-size", required_argument, NULL, O_OVERLAY_SIZE},
    {"overlay-dir", required_argument, NULL, O_OVERLAY_DIR},
    {"ns", required_argument, NULL, O_NS},
    {"join-ns", required_argument, NULL, O_JOIN_NS},
    {"uidmap", required_argument, NULL, O_UIDMAP},
    {"userns", required_argument, NULL, O_USERNS},
    {"gidmap", required_argument, NULL, O_GIDMAP},
    {"cpu", required_argument, NULL, O_CPU},
    {"cpu-weight", required_argument, NULL, O_CPU_WEIGHT},
    {"memory", required_argument, NULL, O_MEMORY},
    {"pids", required_argument, NULL, O_PIDS},
    {"cpuset", required_argument, NULL, O_CPUSET},
    {"rlimit", required_argument, NULL, O_RLIMIT},
    {"cap-add", required_argument, NULL, O_CAP_ADD},
    {"cap-drop", required_argument, NULL, O_CAP_DROP},
    {"seccomp", required_argument, NULL, O_SECCOMP},
    {"no-new-privs", required_argument, NULL, O_NO_NEW_PRIVS},
    {"init", no_argument, NULL, O_INIT},
    {"no-sysfs", no_argument, NULL, O_NO_SYSFS},
    {"cgroup-set", required_argument, NULL, O_CGROUP_SET},
    {"cgroup-mount", required_argument, NULL, O_CGROUP_MOUNT},
    {NULL, 0, NULL, 0},
};

static int bad(struct kago_error *err)
{
    cli_fail(err);
    return -1;
}

static int parse_count(const char *what, const char *arg, int64_t *v)
{
    if (!strcmp(arg, "max") || !strcmp(arg, "unlimited") || !strcmp(arg, "-1")) {
        *v = KAGO_NOLIMIT;
        return 0;
    }
    char *end;
    long long x = strtoll(arg, &end, 10);
    if (end == arg || *end || x < 1)
        return cli_errorf("%s \"%s\": expected a positive number, or max (also unlimited, -1)", what, arg),
               -1;
    *v = x;
    return 0;
}

static int caps_option(struct kago_spec *spec, const char *arg, bool add)
{
    char *copy = strdup(arg), *save = NULL;
    int ret = 1;
    for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (!strcasecmp(t, "all")) {
            spec->caps = add ? ~0ull : 0;
            continue;
        }
        int c = kago_cap_from_name(t);
        if (c < 0) {
            cli_errorf("capability \"%s\": unknown", t);
            ret = -1;
            break;
        }
        spec->caps = add ? spec->caps | (1ull << c) : spec->caps & ~(1ull << c);
    }
    free(copy);
    return ret;
}

/* --cgroup-mount ro|rw|none: the container's own cgroup at /sys/fs/cgroup (kago_spec_init_front: ro). */
static int cgroup_mount_option(struct kago_spec *spec, const char *arg)
{
    if (strcmp(arg, "ro") && strcmp(arg, "rw") && strcmp(arg, "none"))
        return cli_errorf("cgroup-mount \"%s\": expected ro, rw or none", arg), -1;
    size_t n = 0;
    for (size_t i = 0; i < spec->nmounts; i++) {
        if (spec->mounts[i].kind == KAGO_MOUNT_CGROUP && !strcmp(spec->mounts[i].dst, "/sys/fs/cgroup")) {
            free(spec->mounts[i].src);
            free(spec->mounts[i].dst);
        } else {
            spec->mounts[n++] = spec->mounts[i];
        }
    }
    spec->nmounts = n;
    if (strcmp(arg, "none")) {
        struct kago_mount cg = {
            .kind = KAGO_MOUNT_CGROUP, .dst = (char *)"/sys/fs/cgroup", .readonly = !strcmp(arg, "ro")};
        kago_spec_add_mount(spec, &cg);
    }
    return 1;
}

/* Limit options shared with `kago update`. */
int cli_limit_option(struct kago_limits *l, int opt, const char *arg)
{
    struct kago_error *err = NULL;
    switch (opt) {
    case O_CPU:
        return kago_parse_cpu(arg, &l->cpu_quota_us, &err) < 0 ? bad(err) : 1;
    case O_CPU_WEIGHT:
        if (parse_count("cpu weight", arg, &l->cpu_weight) < 0)
            return -1;
        if (l->cpu_weight < 1 || l->cpu_weight > 10000)
            return cli_errorf("cpu weight \"%s\": must be 1..10000", arg), -1;
        return 1;
    case O_MEMORY:
        return kago_parse_size(arg, &l->memory, &err) < 0 ? bad(err) : 1;
    case O_PIDS:
        return parse_count("pids", arg, &l->pids) < 0 ? -1 : 1;
    case O_CPUSET:
        if (strspn(arg, "0123456789,-") != strlen(arg) || !*arg)
            return cli_errorf("cpuset \"%s\": expected a CPU list like 0-1,3", arg), -1;
        free(l->cpuset);
        l->cpuset = strdup(arg);
        return 1;
    }
    return 0;
}

int cli_spec_option(struct kago_spec *spec, int opt, const char *arg)
{
    struct kago_error *err = NULL;
    struct kago_mount m;
    int r = cli_limit_option(&spec->limits, opt, arg);
    if (r != 0)
        return r;
    switch (opt) {
    case O_ROOTFS:
        free(spec->rootfs);
        spec->rootfs = strdup(arg);
        return 1;
    case O_NAME:
        free(spec->name);
        spec->name = strdup(arg);
        return 1;
    case O_HOSTNAME:
        free(spec->hostname);
        spec->hostname = strdup(arg);
        return 1;
    case O_CWD:
        free(spec->cwd);
        spec->cwd = strdup(arg);
        return 1;
    case O_READONLY:
        spec->readonly = true;
        return 1;
    case O_OVERLAY:
        spec->overlay = true;
        return 1;
    case O_OVERLAY_DIR:
        if (arg[0] != '/')
            return cli_errorf("overlay-dir \"%s\": expected an absolute path", arg), -1;
        free(spec->overlay_dir);
        spec->overlay_dir = strdup(arg);
        spec->overlay = true;
        return 1;
    case O_OVERLAY_SIZE: {
        int64_t b;
        if (kago_parse_size(arg, &b, &err) < 0)
            return bad(err);
        spec->overlay = true;
        spec->overlay_size = b < 0 ? 0 : (uint64_t)b;
        return 1;
    }
    case O_INIT:
        spec->init = true;
        return 1;
    case O_NO_SYSFS:
        spec->no_sysfs = true;
        return 1;
    case O_ENV:
        if (!strchr(arg, '=') || arg[0] == '=')
            return cli_errorf("env \"%s\": expected KEY=VALUE", arg), -1;
        kago_spec_add_env(spec, arg);
        return 1;
    case O_USER:
        return kago_parse_user(arg, &spec->uid, &spec->gid, &err) < 0 ? bad(err) : 1;
    case O_BIND:
    case O_TMPFS:
        if ((opt == O_BIND ? kago_parse_mount_bind(arg, &m, &err) : kago_parse_mount_tmpfs(arg, &m, &err)) <
            0)
            return bad(err);
        kago_spec_add_mount(spec, &m);
        free(m.src);
        free(m.dst);
        return 1;
    case O_USERNS:
        if (strcmp(arg, "host") && strcmp(arg, "auto"))
            return cli_errorf("userns \"%s\": expected auto (a range of kago's pool) or host", arg), -1;
        spec->userns = !strcmp(arg, "auto") ? KAGO_USERNS_AUTO : KAGO_USERNS_HOST;
        return 1;
    case O_NS:
        return kago_parse_ns_list(arg, &spec->ns, &err) < 0 ? bad(err) : 1;
    case O_JOIN_NS: {
        const char *colon = strchr(arg, ':');
        char type[16];
        if (!colon || colon - arg >= (long)sizeof type || colon[1] != '/')
            return cli_errorf("join-ns \"%s\": expected TYPE:/PATH", arg), -1;
        memcpy(type, arg, (size_t)(colon - arg));
        type[colon - arg] = '\0';
        int ns = kago_ns_from_name(type);
        if (ns < 0)
            return cli_errorf("join-ns \"%s\": unknown namespace type \"%s\"", arg, type), -1;
        free(spec->join_ns[ns]);
        spec->join_ns[ns] = strdup(colon + 1);
        spec->ns &= ~(1u << ns);
        return 1;
    }
    case O_UIDMAP:
    case O_GIDMAP: {
        struct kago_idmap map;
        if (kago_parse_idmap(arg, &map, &err) < 0)
            return bad(err);
        struct kago_idmap **v = opt == O_UIDMAP ? &spec->uidmap : &spec->gidmap;
        size_t *n = opt == O_UIDMAP ? &spec->nuidmap : &spec->ngidmap;
        *v = realloc(*v, (*n + 1) * sizeof **v);
        if (!*v)
            abort();
        (*v)[(*n)++] = map;
        return 1;
    }
    case O_RLIMIT: {
        struct kago_rlimit rl;
        if (kago_parse_rlimit(arg, &rl, &err) < 0)
            return bad(err);
        kago_spec_add_rlimit(spec, &rl);
        return 1;
    }
    case O_CGROUP_MOUNT:
        return cgroup_mount_option(spec, arg);
    case O_CAP_ADD:
        return caps_option(spec, arg, true);
    case O_CAP_DROP:
        return caps_option(spec, arg, false);
    case O_SECCOMP:
        if (!strcmp(arg, "default")) {
            spec->seccomp.mode = KAGO_SECCOMP_DEFAULT;
            return 1;
        }
        if (!strcmp(arg, "unconfined")) {
            spec->seccomp.mode = KAGO_SECCOMP_UNCONFINED;
            return 1;
        }
        return kago_seccomp_load_file(spec, arg, &err) < 0 ? bad(err) : 1;
    case O_NO_NEW_PRIVS:
        if (strcmp(arg, "true") && strcmp(arg, "false"))
            return cli_errorf("no-new-privs \"%s\": expected true or false", arg), -1;
        spec->no_new_privs = !strcmp(arg, "true");
        return 1;
    case O_CGROUP_SET: {
        const char *eq = strchr(arg, '=');
        if (!eq || eq == arg)
            return cli_errorf("cgroup-set \"%s\": expected KEY=VALUE (e.g. cpu.cfs_quota_us=30000)", arg), -1;
        char *key = strndup(arg, (size_t)(eq - arg));
        kago_spec_add_raw(spec, key, eq + 1);
        free(key);
        return 1;
    }
    }
    return 0;
}
