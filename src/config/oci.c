/* An OCI bundle's config.json read into struct kago_spec (runtime-spec 1.0-1.1), strictly: every key is
 * either honoured, accepted because kago already does what it asks (the standard /proc, /sys, /dev
 * mounts, the default device rules), or refused naming its JSON path. json-c reads the file. */
#include <errno.h>
#include <json-c/json.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/capability.h>

#include "oci.h"

struct ctx {
    const char *file; /* "config.json", for messages */
    struct kago_spec *spec;
    struct kago_oci *oci;
    struct kago_error **err;
};

__attribute__((format(printf, 3, 4))) static int bad(struct ctx *x, const char *path, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *msg = NULL;
    if (vasprintf(&msg, fmt, ap) < 0)
        abort();
    va_end(ap);
    kago_error_set(x->err, 0, "%s: %s: %s", x->file, path, msg);
    free(msg);
    return -1;
}

static json_object *get(json_object *o, const char *k)
{
    json_object *v = NULL;
    return o && json_object_object_get_ex(o, k, &v) ? v : NULL;
}

static bool is(json_object *v, json_type t)
{
    return v && json_object_is_type(v, t);
}

/* Every key of o must be in known; a key in refused is an error once it holds more than null, 0, false,
 * "" or an empty array or object. */
static int keys(struct ctx *x, json_object *o, const char *path, const char *const *known,
                const char *const *refused)
{
    if (!is(o, json_type_object))
        return bad(x, path, "expected an object");
    json_object_object_foreach(o, k, v)
    {
        bool ok = false, no = false;
        for (size_t i = 0; known[i] && !ok; i++)
            ok = !strcmp(k, known[i]);
        for (size_t i = 0; refused && refused[i] && !no; i++)
            no = !strcmp(k, refused[i]);
        bool empty = !v || (is(v, json_type_boolean) && !json_object_get_boolean(v)) ||
                     (is(v, json_type_int) && json_object_get_int64(v) == 0) ||
                     (is(v, json_type_string) && !*json_object_get_string(v)) ||
                     (is(v, json_type_array) && json_object_array_length(v) == 0) ||
                     (is(v, json_type_object) && json_object_object_length(v) == 0);
        if ((no && !empty) || (!ok && !no)) {
            char full[256];
            snprintf(full, sizeof full, "%s%s%s", strcmp(path, "(top)") ? path : "",
                     strcmp(path, "(top)") ? "." : "", k);
            return bad(x, full, "not supported");
        }
    }
    return 0;
}

static char **strv(struct ctx *x, json_object *a, const char *path)
{
    if (!is(a, json_type_array))
        return bad(x, path, "expected an array of strings"), NULL;
    size_t n = json_object_array_length(a);
    char **v = calloc(n + 1, sizeof *v);
    if (!v)
        abort();
    for (size_t i = 0; i < n; i++) {
        json_object *s = json_object_array_get_idx(a, i);
        if (!is(s, json_type_string)) {
            for (size_t j = 0; j < i; j++)
                free(v[j]);
            free(v);
            return bad(x, path, "[%zu]: expected a string", i), NULL;
        }
        v[i] = strdup(json_object_get_string(s));
    }
    return v;
}

static void strv_free(char **v)
{
    for (size_t i = 0; v && v[i]; i++)
        free(v[i]);
    free(v);
}

static void replace_strv(char ***dst, char **v)
{
    strv_free(*dst);
    *dst = v;
}

/* --- process ------------------------------------------------------------------------------------ */

static int caps_set(struct ctx *x, json_object *a, const char *path, uint64_t *mask)
{
    *mask = 0;
    for (size_t i = 0; a && i < json_object_array_length(a); i++) {
        const char *n = json_object_get_string(json_object_array_get_idx(a, i));
        int c = n ? kago_cap_from_name(n) : -1;
        if (c < 0)
            return bad(x, path, "[%zu]: unknown capability %s", i, n ? n : "(not a string)");
        *mask |= 1ULL << c;
    }
    return 0;
}

/* kago keeps one set: bounding = permitted = effective, inheritable and ambient empty or the same. */
static int load_caps(struct ctx *x, json_object *o)
{
    static const char *const sets[] = {"bounding", "effective", "permitted", "inheritable", "ambient", NULL};
    if (keys(x, o, "process.capabilities", sets, NULL) < 0)
        return -1;
    uint64_t m[5];
    bool have[5];
    for (int i = 0; i < 5; i++) {
        char path[64];
        snprintf(path, sizeof path, "process.capabilities.%s", sets[i]);
        have[i] = get(o, sets[i]) != NULL;
        if (caps_set(x, get(o, sets[i]), path, &m[i]) < 0)
            return -1;
    }
    uint64_t set = have[0] ? m[0] : have[2] ? m[2] : m[1];
    for (int i = 0; i < 5; i++)
        if (have[i] && m[i] != set && !(i >= 3 && m[i] == 0))
            return bad(x, "process.capabilities",
                       "the sets differ (kago keeps one set for all five): not supported");
    x->spec->caps = set;
    return 0;
}

static int load_rlimits(struct ctx *x, json_object *a)
{
    if (!is(a, json_type_array))
        return bad(x, "process.rlimits", "expected an array");
    for (size_t i = 0; i < json_object_array_length(a); i++) {
        json_object *r = json_object_array_get_idx(a, i);
        char path[64];
        snprintf(path, sizeof path, "process.rlimits[%zu]", i);
        static const char *const k[] = {"type", "soft", "hard", NULL};
        if (keys(x, r, path, k, NULL) < 0)
            return -1;
        const char *t = json_object_get_string(get(r, "type"));
        int res = t ? kago_rlimit_from_name(t) : -1;
        if (res < 0 || !is(get(r, "soft"), json_type_int) || !is(get(r, "hard"), json_type_int))
            return bad(x, path, "expected {type: RLIMIT_..., soft, hard}");
        struct kago_rlimit rl = {.resource = res,
                                 .soft = (uint64_t)json_object_get_uint64(get(r, "soft")),
                                 .hard = (uint64_t)json_object_get_uint64(get(r, "hard"))};
        kago_spec_add_rlimit(x->spec, &rl);
    }
    return 0;
}

static int load_user(struct ctx *x, json_object *u)
{
    static const char *const k[] = {"uid", "gid", "umask", "additionalGids", "username", NULL};
    static const char *const no[] = {"username", NULL};
    if (keys(x, u, "process.user", k, no) < 0)
        return -1;
    if (!is(get(u, "uid"), json_type_int) || !is(get(u, "gid"), json_type_int))
        return bad(x, "process.user", "uid and gid are required numbers");
    x->spec->uid = (uid_t)json_object_get_int64(get(u, "uid"));
    x->spec->gid = (gid_t)json_object_get_int64(get(u, "gid"));
    json_object *g = get(u, "additionalGids");
    if (g && !is(g, json_type_array))
        return bad(x, "process.user.additionalGids", "expected an array of numbers");
    for (size_t i = 0; g && i < json_object_array_length(g); i++) {
        x->spec->groups = realloc(x->spec->groups, (x->spec->ngroups + 1) * sizeof *x->spec->groups);
        if (!x->spec->groups)
            abort();
        x->spec->groups[x->spec->ngroups++] = (gid_t)json_object_get_int64(json_object_array_get_idx(g, i));
    }
    json_object *um = get(u, "umask");
    if (um && json_object_get_int(um) != 022)
        return bad(x, "process.user.umask", "%o: not supported (kago's containers start with 022)",
                   json_object_get_int(um));
    return 0;
}

static int load_process(struct ctx *x, json_object *p)
{
    static const char *const k[] = {"terminal",
                                    "consoleSize",
                                    "user",
                                    "args",
                                    "env",
                                    "cwd",
                                    "capabilities",
                                    "rlimits",
                                    "noNewPrivileges",
                                    "oomScoreAdj",
                                    "apparmorProfile",
                                    "selinuxLabel",
                                    "commandLine",
                                    "ioPriority",
                                    "scheduler",
                                    "execCPUAffinity",
                                    NULL};
    static const char *const no[] = {"apparmorProfile", "selinuxLabel",    "commandLine", "ioPriority",
                                     "scheduler",       "execCPUAffinity", NULL};
    if (keys(x, p, "process", k, no) < 0)
        return -1;
    char **argv = get(p, "args") ? strv(x, get(p, "args"), "process.args") : NULL;
    if (!argv || !argv[0]) {
        strv_free(argv);
        return get(p, "args") && !argv ? -1 : bad(x, "process.args", "required, with at least the program");
    }
    replace_strv(&x->spec->argv, argv);
    char **env = get(p, "env") ? strv(x, get(p, "env"), "process.env") : calloc(1, sizeof(char *));
    if (!env)
        return -1;
    replace_strv(&x->spec->env, env);
    json_object *cwd = get(p, "cwd");
    if (!is(cwd, json_type_string) || json_object_get_string(cwd)[0] != '/')
        return bad(x, "process.cwd", "required, an absolute path");
    free(x->spec->cwd);
    x->spec->cwd = strdup(json_object_get_string(cwd));
    x->oci->terminal = json_object_get_boolean(get(p, "terminal"));
    x->spec->no_new_privs = json_object_get_boolean(get(p, "noNewPrivileges"));
    x->spec->caps = 0;
    if (get(p, "oomScoreAdj")) {
        x->spec->oom_score_adj_set = true;
        x->spec->oom_score_adj = json_object_get_int(get(p, "oomScoreAdj"));
    }
    if (!get(p, "user") || load_user(x, get(p, "user")) < 0)
        return get(p, "user") ? -1 : bad(x, "process.user", "required");
    if (get(p, "capabilities") && load_caps(x, get(p, "capabilities")) < 0)
        return -1;
    return get(p, "rlimits") ? load_rlimits(x, get(p, "rlimits")) : 0;
}

/* --- mounts -------------------------------------------------------------------------------------- */

/* The mounts kago makes itself in every container (see linux.c). */
static bool standard_mount(const char *type, const char *dst)
{
    static const char *const std[][2] = {
        {"proc", "/proc"},     {"sysfs", "/sys"},   {"tmpfs", "/dev"},         {"devpts", "/dev/pts"},
        {"tmpfs", "/dev/shm"}, {"shm", "/dev/shm"}, {"mqueue", "/dev/mqueue"}, {NULL, NULL}};
    for (size_t i = 0; std[i][0]; i++)
        if (!strcmp(type, std[i][0]) && !strcmp(dst, std[i][1]))
            return true;
    return false;
}

static bool option_ok(const char *o)
{
    static const char *const ok[] = {
        "ro",       "rw",         "nosuid",      "suid",    "nodev", "dev",   "noexec",  "exec",
        "relatime", "norelatime", "strictatime", "noatime", "bind",  "rbind", "private", "rprivate",
        "slave",    "rslave",     "newinstance", "sync",    "async", NULL};
    static const char *const prefixes[] = {"mode=", "size=", "ptmxmode=", "gid=", "uid=", "nr_inodes=", NULL};
    for (size_t i = 0; ok[i]; i++)
        if (!strcmp(o, ok[i]))
            return true;
    for (size_t i = 0; prefixes[i]; i++)
        if (!strncmp(o, prefixes[i], strlen(prefixes[i])))
            return true;
    return false;
}

static int load_mount(struct ctx *x, json_object *m, size_t i)
{
    char path[64];
    snprintf(path, sizeof path, "mounts[%zu]", i);
    static const char *const k[] = {"destination", "type",        "source", "options",
                                    "uidMappings", "gidMappings", NULL};
    static const char *const no[] = {"uidMappings", "gidMappings", NULL};
    if (keys(x, m, path, k, no) < 0)
        return -1;
    const char *dst = json_object_get_string(get(m, "destination"));
    const char *type = get(m, "type") ? json_object_get_string(get(m, "type")) : "none";
    const char *src = json_object_get_string(get(m, "source"));
    if (!dst || dst[0] != '/')
        return bad(x, path, "destination: required, an absolute path");
    bool bind = !strcmp(type, "bind"), ro = false;
    uint64_t size = 0;
    json_object *opts = get(m, "options");
    for (size_t j = 0; opts && j < json_object_array_length(opts); j++) {
        const char *o = json_object_get_string(json_object_array_get_idx(opts, j));
        if (!o || !option_ok(o))
            return bad(x, path, "option %s: not supported", o ? o : "(not a string)");
        bind |= !strcmp(o, "bind") || !strcmp(o, "rbind");
        ro |= !strcmp(o, "ro");
        int64_t b;
        if (!strncmp(o, "size=", 5) && kago_parse_size(o + 5, &b, NULL) == 0)
            size = b < 0 ? 0 : (uint64_t)b;
    }
    if (!bind && standard_mount(type, dst))
        return 0; /* kago makes it itself, the same way */
    struct kago_mount km = {.dst = (char *)dst, .readonly = ro, .size = size};
    char abs[PATH_MAX];
    if (bind) {
        if (!src || !*src)
            return bad(x, path, "bind mount without a source");
        if (src[0] != '/')
            snprintf(abs, sizeof abs, "%s/%s", x->oci->bundle, src), src = abs;
        km.kind = KAGO_MOUNT_BIND;
        km.src = (char *)src;
    } else if (!strcmp(type, "tmpfs")) {
        km.kind = KAGO_MOUNT_TMPFS;
    } else {
        return bad(x, path, "type %s at %s: not supported", type, dst);
    }
    kago_spec_add_mount(x->spec, &km);
    return 0;
}

static int load_mounts(struct ctx *x, json_object *a)
{
    if (!is(a, json_type_array))
        return bad(x, "mounts", "expected an array");
    for (size_t i = 0; i < json_object_array_length(a); i++)
        if (load_mount(x, json_object_array_get_idx(a, i), i) < 0)
            return -1;
    return 0;
}

/* --- linux --------------------------------------------------------------------------------------- */

static int load_namespaces(struct ctx *x, json_object *a)
{
    static const char *const oci[] = {"pid", "network", "ipc", "uts", "mount", "cgroup", "user", NULL};
    static const enum kago_ns ns[] = {KAGO_NS_PID,   KAGO_NS_NET,    KAGO_NS_IPC, KAGO_NS_UTS,
                                      KAGO_NS_MOUNT, KAGO_NS_CGROUP, KAGO_NS_USER};
    if (!is(a, json_type_array))
        return bad(x, "linux.namespaces", "expected an array");
    x->spec->ns = 0;
    for (size_t i = 0; i < json_object_array_length(a); i++) {
        json_object *n = json_object_array_get_idx(a, i);
        char path[64];
        snprintf(path, sizeof path, "linux.namespaces[%zu]", i);
        static const char *const k[] = {"type", "path", NULL};
        if (keys(x, n, path, k, NULL) < 0)
            return -1;
        const char *t = json_object_get_string(get(n, "type")), *p = json_object_get_string(get(n, "path"));
        size_t j = 0;
        while (oci[j] && (!t || strcmp(t, oci[j])))
            j++;
        if (!oci[j])
            return bad(x, path, "type %s: not supported", t ? t : "(none)");
        if (p && *p) {
            free(x->spec->join_ns[ns[j]]);
            x->spec->join_ns[ns[j]] = strdup(p);
        } else {
            x->spec->ns |= 1u << ns[j];
        }
    }
    return 0;
}

static int load_idmap(struct ctx *x, json_object *a, const char *path, struct kago_idmap **v, size_t *n)
{
    if (!is(a, json_type_array))
        return bad(x, path, "expected an array");
    for (size_t i = 0; i < json_object_array_length(a); i++) {
        json_object *m = json_object_array_get_idx(a, i);
        static const char *const k[] = {"containerID", "hostID", "size", NULL};
        if (keys(x, m, path, k, NULL) < 0)
            return -1;
        *v = realloc(*v, (*n + 1) * sizeof **v);
        if (!*v)
            abort();
        (*v)[(*n)++] = (struct kago_idmap){.inside = (uint32_t)json_object_get_int64(get(m, "containerID")),
                                           .outside = (uint32_t)json_object_get_int64(get(m, "hostID")),
                                           .count = (uint32_t)json_object_get_int64(get(m, "size"))};
    }
    return 0;
}

/* The device rules kago's own /dev already follows: deny everything, allow its character nodes. */
static int load_device_rules(struct ctx *x, json_object *a)
{
    static const int allowed[][2] = {{1, 3}, {1, 5}, {1, 7}, {1, 8},   {1, 9},
                                     {5, 0}, {5, 1}, {5, 2}, {136, -1}};
    for (size_t i = 0; is(a, json_type_array) && i < json_object_array_length(a); i++) {
        json_object *d = json_object_array_get_idx(a, i);
        char path[64];
        snprintf(path, sizeof path, "linux.resources.devices[%zu]", i);
        static const char *const k[] = {"allow", "type", "major", "minor", "access", NULL};
        if (keys(x, d, path, k, NULL) < 0)
            return -1;
        if (!json_object_get_boolean(get(d, "allow")))
            continue; /* kago denies every device it does not list */
        const char *t = get(d, "type") ? json_object_get_string(get(d, "type")) : "a";
        int ma = get(d, "major") ? json_object_get_int(get(d, "major")) : -1;
        int mi = get(d, "minor") ? json_object_get_int(get(d, "minor")) : -1;
        bool ok = !strcmp(t, "c") && ma >= 0;
        for (size_t j = 0; ok && j < sizeof allowed / sizeof allowed[0]; j++)
            if (allowed[j][0] == ma && (allowed[j][1] == mi || allowed[j][1] == -1))
                goto next;
        return bad(x, path, "allow %s %d:%d: not supported (kago's device list is fixed)", t, ma, mi);
    next:;
    }
    return 0;
}

static int load_cpu(struct ctx *x, json_object *c)
{
    static const char *const k[] = {"shares",          "quota",          "period", "cpus", "mems",
                                    "realtimeRuntime", "realtimePeriod", "burst",  "idle", NULL};
    static const char *const no[] = {"mems", "realtimeRuntime", "realtimePeriod", "burst", "idle", NULL};
    if (keys(x, c, "linux.resources.cpu", k, no) < 0)
        return -1;
    struct kago_limits *l = &x->spec->limits;
    if (get(c, "shares") && json_object_get_int64(get(c, "shares")) > 0) {
        int64_t s = json_object_get_int64(get(c, "shares")), w = 1 + ((s - 2) * 9999) / 262142;
        l->cpu_weight = w < 1 ? 1 : w > 10000 ? 10000 : w;
    }
    int64_t q = get(c, "quota") ? json_object_get_int64(get(c, "quota")) : -1;
    if (q > 0)
        l->cpu_quota_us = q;
    if (get(c, "period") && json_object_get_int64(get(c, "period")) > 0)
        l->cpu_period_us = json_object_get_int64(get(c, "period"));
    const char *cpus = json_object_get_string(get(c, "cpus"));
    if (cpus && *cpus)
        l->cpuset = strdup(cpus);
    return 0;
}

static int load_memory(struct ctx *x, json_object *m)
{
    static const char *const k[] = {
        "limit",        "reservation",       "swap", "kernel", "kernelTCP", "swappiness", "disableOOMKiller",
        "useHierarchy", "checkBeforeUpdate", NULL};
    static const char *const no[] = {
        "reservation", "kernel", "kernelTCP", "swappiness", "disableOOMKiller", "checkBeforeUpdate", NULL};
    if (keys(x, m, "linux.resources.memory", k, no) < 0)
        return -1;
    int64_t lim = get(m, "limit") ? json_object_get_int64(get(m, "limit")) : -1;
    int64_t swap = get(m, "swap") ? json_object_get_int64(get(m, "swap")) : -1;
    if (lim > 0)
        x->spec->limits.memory = lim;
    if (swap != -1 && swap != lim && swap != 0)
        return bad(x, "linux.resources.memory.swap", "%lld: not supported (kago sets memory only)",
                   (long long)swap);
    return 0;
}

static int load_resources(struct ctx *x, json_object *r)
{
    static const char *const k[] = {"devices",        "cpu",     "memory", "pids",    "blockIO",
                                    "hugepageLimits", "network", "rdma",   "unified", NULL};
    static const char *const no[] = {"blockIO", "hugepageLimits", "network", "rdma", "unified", NULL};
    if (keys(x, r, "linux.resources", k, no) < 0 || load_device_rules(x, get(r, "devices")) < 0)
        return -1;
    if (get(r, "cpu") && load_cpu(x, get(r, "cpu")) < 0)
        return -1;
    if (get(r, "memory") && load_memory(x, get(r, "memory")) < 0)
        return -1;
    json_object *p = get(r, "pids");
    if (p) {
        static const char *const pk[] = {"limit", NULL};
        if (keys(x, p, "linux.resources.pids", pk, NULL) < 0)
            return -1;
        if (json_object_get_int64(get(p, "limit")) > 0)
            x->spec->limits.pids = json_object_get_int64(get(p, "limit"));
    }
    return 0;
}

/* linux.devices: the nodes to make. kago's /dev has its own (null, zero, full, random, urandom, tty). */
static int load_devices(struct ctx *x, json_object *a)
{
    static const struct {
        const char *path;
        int major, minor;
    } own[] = {{"/dev/null", 1, 3},   {"/dev/zero", 1, 5},    {"/dev/full", 1, 7},
               {"/dev/random", 1, 8}, {"/dev/urandom", 1, 9}, {"/dev/tty", 5, 0}};
    for (size_t i = 0; is(a, json_type_array) && i < json_object_array_length(a); i++) {
        json_object *d = json_object_array_get_idx(a, i);
        const char *p = json_object_get_string(get(d, "path"));
        int ma = json_object_get_int(get(d, "major")), mi = json_object_get_int(get(d, "minor"));
        size_t j = 0;
        while (j < sizeof own / sizeof own[0] &&
               !(p && !strcmp(p, own[j].path) && ma == own[j].major && mi == own[j].minor))
            j++;
        if (j == sizeof own / sizeof own[0]) {
            char path[64];
            snprintf(path, sizeof path, "linux.devices[%zu]", i);
            return bad(x, path, "%s %d:%d: not supported (kago's /dev is fixed)", p ? p : "(no path)", ma,
                       mi);
        }
    }
    return 0;
}

static int load_seccomp(struct ctx *x, json_object *s)
{
    static const char *const k[] = {"defaultAction", "defaultErrnoRet",  "architectures", "flags",
                                    "listenerPath",  "listenerMetadata", "syscalls",      NULL};
    static const char *const no[] = {"flags", "listenerPath", "listenerMetadata", NULL};
    if (keys(x, s, "linux.seccomp", k, no) < 0)
        return -1;
    if (kago_seccomp_from_json(x->spec, s, x->err) < 0) {
        kago_error_prefix(x->err, "%s: linux.seccomp", x->file);
        return -1;
    }
    return 0;
}

static int load_paths(struct ctx *x, json_object *a, const char *path, char ***dst)
{
    char **v = strv(x, a, path);
    if (!v)
        return -1;
    replace_strv(dst, v);
    return 0;
}

static int load_linux(struct ctx *x, json_object *l)
{
    static const char *const k[] = {
        "namespaces",  "uidMappings",   "gidMappings", "resources",    "devices",           "seccomp",
        "maskedPaths", "readonlyPaths", "sysctl",      "cgroupsPath",  "rootfsPropagation", "mountLabel",
        "intelRdt",    "personality",   "timeOffsets", "memoryPolicy", "netDevices",        NULL};
    static const char *const no[] = {"cgroupsPath", "mountLabel",   "intelRdt",   "personality",
                                     "timeOffsets", "memoryPolicy", "netDevices", NULL};
    if (keys(x, l, "linux", k, no) < 0)
        return -1;
    const char *prop = json_object_get_string(get(l, "rootfsPropagation"));
    if (prop && *prop && strcmp(prop, "private") && strcmp(prop, "rprivate") && strcmp(prop, "slave") &&
        strcmp(prop, "rslave"))
        return bad(x, "linux.rootfsPropagation", "%s: not supported", prop);
    struct kago_spec *s = x->spec;
    if ((get(l, "namespaces") && load_namespaces(x, get(l, "namespaces")) < 0) ||
        (get(l, "uidMappings") &&
         load_idmap(x, get(l, "uidMappings"), "linux.uidMappings", &s->uidmap, &s->nuidmap) < 0) ||
        (get(l, "gidMappings") &&
         load_idmap(x, get(l, "gidMappings"), "linux.gidMappings", &s->gidmap, &s->ngidmap) < 0) ||
        (get(l, "resources") && load_resources(x, get(l, "resources")) < 0) ||
        load_devices(x, get(l, "devices")) < 0 ||
        (get(l, "maskedPaths") &&
         load_paths(x, get(l, "maskedPaths"), "linux.maskedPaths", &s->masked_paths) < 0) ||
        (get(l, "readonlyPaths") &&
         load_paths(x, get(l, "readonlyPaths"), "linux.readonlyPaths", &s->readonly_paths) < 0))
        return -1;
    json_object *sc = get(l, "sysctl");
    if (sc && !is(sc, json_type_object))
        return bad(x, "linux.sysctl", "expected an object");
    if (sc) {
        json_object_object_foreach(sc, key, val)
        {
            if (!is(val, json_type_string))
                return bad(x, "linux.sysctl", "%s: expected a string", key);
            kago_spec_add_sysctl(s, key, json_object_get_string(val));
        }
    }
    /* no seccomp in config.json means none (runtime-spec), not kago's default filter */
    s->seccomp.mode = KAGO_SECCOMP_UNCONFINED;
    return get(l, "seccomp") ? load_seccomp(x, get(l, "seccomp")) : 0;
}

/* --- the document ---------------------------------------------------------------------------------- */

static int load_root(struct ctx *x, json_object *r)
{
    static const char *const k[] = {"path", "readonly", NULL};
    if (!r || keys(x, r, "root", k, NULL) < 0)
        return r ? -1 : bad(x, "root", "required");
    const char *p = json_object_get_string(get(r, "path"));
    if (!p || !*p)
        return bad(x, "root.path", "required");
    free(x->spec->rootfs);
    if (p[0] == '/')
        x->spec->rootfs = strdup(p);
    else if (asprintf(&x->spec->rootfs, "%s/%s", x->oci->bundle, p) < 0)
        abort();
    x->spec->readonly = json_object_get_boolean(get(r, "readonly"));
    return 0;
}

static int load_doc(struct ctx *x, json_object *o)
{
    static const char *const k[] = {"ociVersion", "process", "root",        "hostname", "domainname",
                                    "mounts",     "hooks",   "annotations", "linux",    "solaris",
                                    "windows",    "vm",      "zos",         NULL};
    static const char *const no[] = {"domainname", "hooks", "solaris", "windows", "vm", "zos", NULL};
    if (keys(x, o, "(top)", k, no) < 0)
        return -1;
    const char *v = json_object_get_string(get(o, "ociVersion"));
    if (!v || (strncmp(v, "1.0.", 4) && strncmp(v, "1.1.", 4) && strcmp(v, "1.0") && strcmp(v, "1.1")))
        return bad(x, "ociVersion", "%s: kago reads 1.0.x and 1.1.x", v ? v : "(none)");
    x->oci->oci_version = strdup(v);
    json_object *ann = get(o, "annotations");
    if (ann && !is(ann, json_type_object))
        return bad(x, "annotations", "expected an object");
    x->oci->annotations = strdup(ann ? json_object_to_json_string_ext(ann, JSON_C_TO_STRING_PLAIN) : "{}");
    const char *host = json_object_get_string(get(o, "hostname"));
    free(x->spec->hostname);
    x->spec->hostname = host && *host ? strdup(host) : NULL;
    if (!get(o, "process"))
        return bad(x, "process", "required (kago runs a process)");
    if (load_root(x, get(o, "root")) < 0 || load_process(x, get(o, "process")) < 0)
        return -1;
    if (get(o, "mounts") && load_mounts(x, get(o, "mounts")) < 0)
        return -1;
    if (get(o, "linux"))
        return load_linux(x, get(o, "linux"));
    x->spec->seccomp.mode = KAGO_SECCOMP_UNCONFINED; /* none given: none (runtime-spec) */
    return 0;
}

/* FILE:LINE:COLUMN of byte offset off in text. */
static void where(const char *text, size_t off, int *line, int *col)
{
    *line = 1, *col = 1;
    for (size_t i = 0; i < off && text[i]; i++) {
        if (text[i] == '\n')
            (*line)++, *col = 1;
        else
            (*col)++;
    }
}

/* The document, or NULL with *err "FILE:LINE:COLUMN: why". */
static json_object *parse(const char *path, const char *json, size_t len, struct kago_error **err)
{
    json_tokener *tok = json_tokener_new();
    json_object *o = json_tokener_parse_ex(tok, json, (int)len);
    enum json_tokener_error e = json_tokener_get_error(tok);
    size_t end = json_tokener_get_parse_end(tok);
    json_tokener_free(tok);
    if (!o || e != json_tokener_success || strspn(json + end, " \t\r\n") != len - end) {
        int line, col;
        where(json, e == json_tokener_continue ? len : end, &line, &col);
        json_object_put(o);
        return kago_error_set(err, 0, "%s:%d:%d: %s", path, line, col,
                              e == json_tokener_success    ? "text after the document"
                              : e == json_tokener_continue ? "unexpected end of file"
                                                           : json_tokener_error_desc(e)),
               NULL;
    }
    return o;
}

int kago_oci_load_string(const char *bundle, const char *path, const char *json, size_t len,
                         struct kago_spec *spec, struct kago_oci *oci, struct kago_error **err)
{
    *oci = (struct kago_oci){.bundle = strdup(bundle)};
    json_object *o = parse(path, json, len, err);
    if (!o)
        return -1;
    const char *base = strrchr(path, '/');
    struct ctx x = {.file = base ? base + 1 : path, .spec = spec, .oci = oci, .err = err};
    int r = load_doc(&x, o);
    json_object_put(o);
    return r;
}

int kago_oci_load_process(const char *path, const char *json, size_t len, struct kago_spec *proc,
                          bool *terminal, struct kago_error **err)
{
    json_object *o = parse(path, json, len, err);
    if (!o)
        return -1;
    struct kago_oci oci = {0};
    struct ctx x = {.file = path, .spec = proc, .oci = &oci, .err = err};
    int r = load_process(&x, o);
    *terminal = oci.terminal;
    json_object_put(o);
    return r;
}

int kago_oci_load_resources(const char *path, const char *json, size_t len, struct kago_spec *spec,
                            struct kago_error **err)
{
    json_object *o = parse(path, json, len, err);
    if (!o)
        return -1;
    struct kago_oci oci = {0};
    struct ctx x = {.file = path, .spec = spec, .oci = &oci, .err = err};
    int r = load_resources(&x, o);
    json_object_put(o);
    return r;
}

int kago_oci_load(const char *bundle, struct kago_spec *spec, struct kago_oci *oci, struct kago_error **err)
{
    char abs[PATH_MAX];
    if (!realpath(bundle, abs))
        return *oci = (struct kago_oci){0}, kago_error_set(err, errno, "bundle %s", bundle);
    char path[PATH_MAX + 16];
    snprintf(path, sizeof path, "%s/config.json", abs);
    FILE *f = fopen(path, "re");
    if (!f)
        return *oci = (struct kago_oci){0}, kago_error_set(err, errno, "bundle %s: config.json", abs);
    char *text = NULL;
    size_t cap = 0, n = 0;
    for (size_t r; (r = fread(text + n, 1, cap - n, f)) > 0 || n == cap;) {
        n += r;
        if (n == cap) {
            if (cap >= (16u << 20)) {
                fclose(f);
                free(text);
                return *oci = (struct kago_oci){0}, kago_error_set(err, EFBIG, "%s", path);
            }
            text = realloc(text, cap = cap ? cap * 2 : 65536);
            if (!text)
                abort();
        }
    }
    fclose(f);
    int r = kago_oci_load_string(abs, path, text ? text : "", n, spec, oci, err);
    free(text);
    return r;
}

void kago_oci_free(struct kago_oci *oci)
{
    free(oci->bundle);
    free(oci->annotations);
    free(oci->oci_version);
    *oci = (struct kago_oci){0};
}

static json_object *str_array(const char *const *v)
{
    json_object *a = json_object_new_array();
    for (size_t i = 0; v[i]; i++)
        json_object_array_add(a, json_object_new_string(v[i]));
    return a;
}

static json_object *mount_obj(const char *dst, const char *type, const char *src, const char *const *opts)
{
    json_object *m = json_object_new_object();
    json_object_object_add(m, "destination", json_object_new_string(dst));
    json_object_object_add(m, "type", json_object_new_string(type));
    json_object_object_add(m, "source", json_object_new_string(src));
    json_object_object_add(m, "options", str_array(opts));
    return m;
}

static json_object *default_caps(void)
{
    json_object *a = json_object_new_array();
    uint64_t caps = kago_caps_default();
    for (int i = 0; i < 64; i++) {
        if (!(caps & (1ULL << i)))
            continue;
        char *n = cap_to_name((cap_value_t)i);
        for (char *p = n; p && *p; p++)
            *p = (char)(*p >= 'a' && *p <= 'z' ? *p - 32 : *p);
        json_object_array_add(a, json_object_new_string(n ? n : "?"));
        cap_free(n);
    }
    return a;
}

char *kago_oci_default_config(void)
{
    struct kago_spec d;
    kago_spec_init(&d);
    json_object *o = json_object_new_object(), *p = json_object_new_object(), *u = json_object_new_object();
    json_object_object_add(o, "ociVersion", json_object_new_string("1.1.0"));
    json_object_object_add(p, "terminal", json_object_new_boolean(0));
    json_object_object_add(u, "uid", json_object_new_int(0));
    json_object_object_add(u, "gid", json_object_new_int(0));
    json_object_object_add(p, "user", u);
    json_object_object_add(p, "args", str_array((const char *const[]){"sh", NULL}));
    json_object_object_add(p, "env", str_array((const char *const *)d.env));
    json_object_object_add(p, "cwd", json_object_new_string("/"));
    json_object *caps = json_object_new_object();
    json_object_object_add(caps, "bounding", default_caps());
    json_object_object_add(caps, "effective", default_caps());
    json_object_object_add(caps, "permitted", default_caps());
    json_object_object_add(p, "capabilities", caps);
    json_object *rl = json_object_new_object();
    json_object_object_add(rl, "type", json_object_new_string("RLIMIT_NOFILE"));
    json_object_object_add(rl, "hard", json_object_new_int(1024));
    json_object_object_add(rl, "soft", json_object_new_int(1024));
    json_object *rls = json_object_new_array();
    json_object_array_add(rls, rl);
    json_object_object_add(p, "rlimits", rls);
    json_object_object_add(p, "noNewPrivileges", json_object_new_boolean(1));
    json_object_object_add(o, "process", p);
    json_object *root = json_object_new_object();
    json_object_object_add(root, "path", json_object_new_string("rootfs"));
    json_object_object_add(root, "readonly", json_object_new_boolean(1));
    json_object_object_add(o, "root", root);
    json_object_object_add(o, "hostname", json_object_new_string("kago"));
    json_object *ms = json_object_new_array();
    json_object_array_add(ms, mount_obj("/proc", "proc", "proc", (const char *const[]){NULL}));
    json_object_array_add(
        ms, mount_obj("/dev", "tmpfs", "tmpfs",
                      (const char *const[]){"nosuid", "strictatime", "mode=755", "size=65536k", NULL}));
    json_object_array_add(ms, mount_obj("/dev/pts", "devpts", "devpts",
                                        (const char *const[]){"nosuid", "noexec", "newinstance",
                                                              "ptmxmode=0666", "mode=0620", "gid=5", NULL}));
    json_object_array_add(
        ms, mount_obj("/dev/shm", "tmpfs", "shm",
                      (const char *const[]){"nosuid", "noexec", "nodev", "mode=1777", "size=65536k", NULL}));
    json_object_array_add(ms, mount_obj("/dev/mqueue", "mqueue", "mqueue",
                                        (const char *const[]){"nosuid", "noexec", "nodev", NULL}));
    json_object_array_add(ms, mount_obj("/sys", "sysfs", "sysfs",
                                        (const char *const[]){"nosuid", "noexec", "nodev", "ro", NULL}));
    json_object_object_add(o, "mounts", ms);
    json_object *l = json_object_new_object(), *res = json_object_new_object(),
                *dev = json_object_new_object();
    json_object_object_add(dev, "allow", json_object_new_boolean(0));
    json_object_object_add(dev, "access", json_object_new_string("rwm"));
    json_object *devs = json_object_new_array();
    json_object_array_add(devs, dev);
    json_object_object_add(res, "devices", devs);
    json_object_object_add(l, "resources", res);
    json_object *ns = json_object_new_array();
    for (const char *const *t =
             (const char *const[]){"pid", "network", "ipc", "uts", "mount", "cgroup", NULL};
         *t; t++) {
        json_object *n = json_object_new_object();
        json_object_object_add(n, "type", json_object_new_string(*t));
        json_object_array_add(ns, n);
    }
    json_object_object_add(l, "namespaces", ns);
    json_object_object_add(l, "maskedPaths", str_array((const char *const *)d.masked_paths));
    json_object_object_add(l, "readonlyPaths", str_array((const char *const *)d.readonly_paths));
    json_object_object_add(o, "linux", l);
    char *text =
        strdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE));
    json_object_put(o);
    kago_spec_free(&d);
    return text;
}

char *kago_oci_features(void)
{
    return strdup(
        "{\"ociVersionMin\":\"1.0.0\",\"ociVersionMax\":\"1.1.0\",\"hooks\":[],"
        "\"mountOptions\":[\"ro\",\"rw\",\"nosuid\",\"nodev\",\"noexec\",\"bind\",\"rbind\",\"relatime\","
        "\"strictatime\",\"noatime\",\"private\",\"rprivate\",\"slave\",\"rslave\"],"
        "\"linux\":{\"namespaces\":[\"pid\",\"network\",\"ipc\",\"uts\",\"mount\",\"cgroup\",\"user\"],"
        "\"cgroup\":{\"v1\":true,\"v2\":true,\"systemd\":false,\"systemdUser\":false},"
        "\"seccomp\":{\"enabled\":true,\"actions\":[\"SCMP_ACT_ALLOW\",\"SCMP_ACT_ERRNO\",\"SCMP_ACT_KILL\","
        "\"SCMP_ACT_LOG\"]},\"apparmor\":{\"enabled\":false},\"selinux\":{\"enabled\":false}},"
        "\"annotations\":{}}");
}
