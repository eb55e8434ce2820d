/* An OCI bundle's config.json read into struct kago_spec
 * (runtime-spec 1.0-1.1), strictly: every key is either honoured, accepted
 * because kago already does what it asks (the standard /proc, /sys, /dev
 * mounts, the default device rules), or refused naming its JSON path. json-c
 * reads the file. */
#include <ctype.h>
#include <errno.h>
#include <json-c/json.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <seccomp.h>
#include <sys/capability.h>

#include "oci.h"

#define LIST(...)     ((const char *const[]){__VA_ARGS__, NULL})
#define MAX_ID        4294967294LL /* uid_t/gid_t, less (uid_t)-1 */
#define MAX_FILE_SIZE (16u << 20)

struct ctx {
    const char *file; /* "config.json", for messages */
    struct kago_spec *spec;
    struct kago_oci *oci;
    struct kago_error **err;
    bool update; /* update --resources: -1 is "unlimited" to write, not a new cgroup's default to skip */
};

static char *dup(const char *s)
{
    char *d = strdup(s);
    if (!d)
        abort();
    return d;
}

static void *grow(void *p, size_t n, size_t size)
{
    p = realloc(p, n * size);
    if (!p)
        abort();
    return p;
}

__attribute__((format(printf, 3, 4))) static int bad(struct ctx *x, const char *path, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *msg = NULL;
    if (vasprintf(&msg, fmt, ap) < 0)
        abort();
    va_end(ap);
    kago_error_set(x->err, 0, "%s: %s: %s", x->file, *path ? path : "(document)", msg);
    free(msg);
    return -1;
}

/* The member k of o; NULL when absent or null (a null member counts as absent).
 */
static json_object *get(json_object *o, const char *k)
{
    json_object *v = NULL;
    return o && json_object_is_type(o, json_type_object) && json_object_object_get_ex(o, k, &v) ? v : NULL;
}

static bool is(json_object *v, json_type t)
{
    return v && json_object_is_type(v, t);
}

/* buf = "PATH.KEY" ("KEY" at the top). */
static const char *sub(char *buf, size_t n, const char *path, const char *key)
{
    if (snprintf(buf, n, "%s%s%s", path, *path ? "." : "", key) < 0) /* a long path is cut: only a message */
        abort();
    return buf;
}

/* buf = "PATH[I]". */
static const char *idx(char *buf, size_t n, const char *path, size_t i)
{
    if (snprintf(buf, n, "%s[%zu]", path, i) < 0)
        abort();
    return buf;
}

static bool empty(json_object *v)
{
    return !v || (is(v, json_type_boolean) && !json_object_get_boolean(v)) ||
           (is(v, json_type_int) && json_object_get_int64(v) == 0) ||
           (is(v, json_type_string) && !*json_object_get_string(v)) ||
           (is(v, json_type_array) && json_object_array_length(v) == 0) ||
           (is(v, json_type_object) && json_object_object_length(v) == 0);
}

/* Every key of o must be in known; a key in refused is an error once it holds
 * more than null, 0, false,
 * "" or an empty array or object (the values that mean "not set"). */
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
        if ((no && !empty(v)) || !ok) {
            char full[256];
            return bad(x, sub(full, sizeof full, path, k), "not supported");
        }
    }
    return 0;
}

/* The typed getters: 0 when o has no member k (or a null one), 1 when it has
 * one of the right type (in *out), -1 with the error set when the type is
 * wrong. */
static int get_str(struct ctx *x, json_object *o, const char *path, const char *k, const char **out)
{
    json_object *v = get(o, k);
    char full[256];
    if (!v)
        return 0;
    if (!is(v, json_type_string))
        return bad(x, sub(full, sizeof full, path, k), "expected a string");
    *out = json_object_get_string(v);
    return 1;
}

static int get_bool(struct ctx *x, json_object *o, const char *path, const char *k, bool *out)
{
    json_object *v = get(o, k);
    char full[256];
    if (!v)
        return 0;
    if (!is(v, json_type_boolean))
        return bad(x, sub(full, sizeof full, path, k), "expected true or false");
    *out = json_object_get_boolean(v);
    return 1;
}

static int int_in(struct ctx *x, json_object *v, const char *path, int64_t min, int64_t max, int64_t *out)
{
    if (!is(v, json_type_int))
        return bad(x, path, "expected an integer");
    int64_t n = json_object_get_int64(v);
    if (n < min || n > max || (n == INT64_MAX && json_object_get_uint64(v) > INT64_MAX))
        return bad(x, path, "%s: expected %lld..%lld", json_object_to_json_string(v), (long long)min,
                   (long long)max);
    *out = n;
    return 1;
}

static int get_int(struct ctx *x, json_object *o, const char *path, const char *k, int64_t min, int64_t max,
                   int64_t *out)
{
    json_object *v = get(o, k);
    char full[256];
    return v ? int_in(x, v, sub(full, sizeof full, path, k), min, max, out) : 0;
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
            char p[256];
            return bad(x, idx(p, sizeof p, path, i), "expected a string"), NULL;
        }
        v[i] = dup(json_object_get_string(s));
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

/* got, a getter's answer for the member k: -1 when absent (error set) or wrong.
 */
static int need(struct ctx *x, int got, const char *path, const char *k)
{
    char full[256];
    return got < 0 ? -1 : got == 0 ? bad(x, sub(full, sizeof full, path, k), "required") : 0;
}

/* The array member k of o (NULL when absent); -1 when it is not an array. */
static int get_array(struct ctx *x, json_object *o, const char *path, const char *k, json_object **out)
{
    json_object *v = get(o, k);
    char full[256];
    *out = NULL;
    if (!v)
        return 0;
    if (!is(v, json_type_array))
        return bad(x, sub(full, sizeof full, path, k), "expected an array");
    *out = v;
    return 1;
}

/* --- process
 * ------------------------------------------------------------------------------------
 */

/* An absent set is an empty one (runtime-spec). */
static int caps_set(struct ctx *x, json_object *o, const char *set, uint64_t *mask)
{
    char path[256], p[256];
    json_object *a;
    *mask = 0;
    if (get_array(x, o, "process.capabilities", set, &a) < 0)
        return -1;
    sub(path, sizeof path, "process.capabilities", set);
    for (size_t i = 0; a && i < json_object_array_length(a); i++) {
        json_object *s = json_object_array_get_idx(a, i);
        int c = is(s, json_type_string) ? kago_cap_from_name(json_object_get_string(s)) : -1;
        if (c < 0)
            return bad(x, idx(p, sizeof p, path, i), "%s: unknown capability",
                       s ? json_object_to_json_string(s) : "null");
        *mask |= 1ULL << c;
    }
    return 0;
}

/* The five sets, as given (an absent one is empty). An effective capability outside permitted is refused
 * (capset would fail); an ambient one outside permitted and inheritable is not raised, as runc goes on
 * without it (runc spec's own config lists ambient capabilities without inheritable ones). */
static int load_caps(struct ctx *x, json_object *o)
{
    static const char *const sets[] = {"bounding", "effective", "permitted", "inheritable", "ambient", NULL};
    if (keys(x, o, "process.capabilities", sets, NULL) < 0)
        return -1;
    uint64_t m[5];
    for (int i = 0; i < 5; i++)
        if (caps_set(x, o, sets[i], &m[i]) < 0)
            return -1;
    if (m[1] & ~m[2])
        return bad(x, "process.capabilities.effective", "not within permitted (the kernel refuses it)");
    struct kago_spec *s = x->spec;
    s->caps = m[0];
    s->capsets = true;
    s->cap_effective = m[1];
    s->cap_permitted = m[2];
    s->cap_inheritable = m[3];
    s->cap_ambient = m[4] & m[2] & m[3];
    return 0;
}

static int load_rlimit(struct ctx *x, json_object *r, const char *path)
{
    if (keys(x, r, path, LIST("type", "soft", "hard"), NULL) < 0)
        return -1;
    const char *t = NULL;
    if (get_str(x, r, path, "type", &t) <= 0)
        return t ? -1 : bad(x, path, "type: required");
    struct kago_rlimit rl = {.resource = kago_rlimit_from_name(t)};
    if (rl.resource < 0 || strncmp(t, "RLIMIT_", 7))
        return bad(x, path, "type %s: unknown (expected RLIMIT_...)", t);
    const char *const lim[] = {"soft", "hard"};
    for (int i = 0; i < 2; i++) {
        json_object *v = get(r, lim[i]);
        char p[256];
        sub(p, sizeof p, path, lim[i]);
        /* up to 2^64-1, RLIM_INFINITY, which json-c keeps as an unsigned integer */
        if (!is(v, json_type_int) || (json_object_get_int64(v) < 0))
            return bad(x, p, "required, an integer from 0");
        *(i ? &rl.hard : &rl.soft) = json_object_get_uint64(v);
    }
    if (rl.soft > rl.hard)
        return bad(x, path, "soft %llu above hard %llu", (unsigned long long)rl.soft,
                   (unsigned long long)rl.hard);
    kago_spec_add_rlimit(x->spec, &rl);
    return 0;
}

static int load_user(struct ctx *x, json_object *u)
{
    if (keys(x, u, "process.user", LIST("uid", "gid", "umask", "additionalGids", "username"),
             LIST("username")) < 0)
        return -1;
    int64_t uid = 0, gid = 0, umask = 022;
    json_object *g;
    if (get_int(x, u, "process.user", "uid", 0, MAX_ID, &uid) < 0 ||
        get_int(x, u, "process.user", "gid", 0, MAX_ID, &gid) < 0 ||
        get_int(x, u, "process.user", "umask", 0, 0777, &umask) < 0 ||
        get_array(x, u, "process.user", "additionalGids", &g) < 0)
        return -1;
    if (!get(u, "uid") || !get(u, "gid"))
        return bad(x, "process.user", "uid and gid: required");
    if (umask != 022)
        return bad(x, "process.user.umask", "%04llo: not supported (kago's containers start with 0022)",
                   (unsigned long long)umask);
    x->spec->uid = (uid_t)uid;
    x->spec->gid = (gid_t)gid;
    size_t n = g ? json_object_array_length(g) : 0;
    free(x->spec->groups);
    x->spec->groups = n ? grow(NULL, n, sizeof *x->spec->groups) : NULL;
    x->spec->ngroups = 0;
    for (size_t i = 0; i < n; i++) {
        char p[256];
        int64_t v;
        if (int_in(x, json_object_array_get_idx(g, i), idx(p, sizeof p, "process.user.additionalGids", i), 0,
                   MAX_ID, &v) < 0)
            return -1;
        x->spec->groups[x->spec->ngroups++] = (gid_t)v;
    }
    return 0;
}

/* args (required), env (replaces kago's: exactly the list given), cwd
 * (required, absolute). */
static int load_command(struct ctx *x, json_object *p)
{
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
    const char *cwd = NULL;
    if (get_str(x, p, "process", "cwd", &cwd) < 0)
        return -1;
    if (!cwd || cwd[0] != '/')
        return bad(x, "process.cwd", "required, an absolute path");
    free(x->spec->cwd);
    x->spec->cwd = dup(cwd);
    return 0;
}

static int load_console_size(struct ctx *x, json_object *c)
{
    int64_t v;
    if (keys(x, c, "process.consoleSize", LIST("height", "width"), NULL) < 0 ||
        get_int(x, c, "process.consoleSize", "height", 0, UINT_MAX, &v) < 0 ||
        get_int(x, c, "process.consoleSize", "width", 0, UINT_MAX, &v) < 0)
        return -1;
    return 0; /* accepted: the console's size is the terminal's business (the
                 console socket's peer) */
}

static int load_process(struct ctx *x, json_object *p)
{
    static const char *const no[] = {"apparmorProfile", "selinuxLabel",    "commandLine", "ioPriority",
                                     "scheduler",       "execCPUAffinity", NULL};
    if (keys(x, p, "process",
             LIST("terminal", "consoleSize", "user", "args", "env", "cwd", "capabilities", "rlimits",
                  "noNewPrivileges", "oomScoreAdj", "apparmorProfile", "selinuxLabel", "commandLine",
                  "ioPriority", "scheduler", "execCPUAffinity"),
             no) < 0)
        return -1;
    if (load_command(x, p) < 0)
        return -1;
    bool nnp = false;
    int64_t oom;
    json_object *rl;
    int has_oom = get_int(x, p, "process", "oomScoreAdj", -1000, 1000, &oom);
    if (has_oom < 0 || get_bool(x, p, "process", "terminal", &x->oci->terminal) < 0 ||
        get_bool(x, p, "process", "noNewPrivileges", &nnp) < 0 ||
        get_array(x, p, "process", "rlimits", &rl) < 0)
        return -1;
    x->spec->no_new_privs = nnp; /* absent: false (runtime-spec) */
    x->spec->oom_score_adj_set = has_oom > 0;
    x->spec->oom_score_adj = has_oom > 0 ? (int)oom : 0;
    if (get(p, "consoleSize") && load_console_size(x, get(p, "consoleSize")) < 0)
        return -1;
    if (!get(p, "user"))
        return bad(x, "process.user", "required");
    if (load_user(x, get(p, "user")) < 0)
        return -1;
    x->spec->caps = 0; /* none given: none (runtime-spec) */
    if (get(p, "capabilities") && load_caps(x, get(p, "capabilities")) < 0)
        return -1;
    for (size_t i = 0; rl && i < json_object_array_length(rl); i++) {
        char path[256];
        if (load_rlimit(x, json_object_array_get_idx(rl, i), idx(path, sizeof path, "process.rlimits", i)) <
            0)
            return -1;
    }
    return 0;
}

/* --- mounts
 * --------------------------------------------------------------------------------------
 */

/* The mounts kago makes itself in every container (see linux.c): accepted as
 * done, with the options runc spec, crun spec, podman and Docker give them. */
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

enum mount_use { USE_ANY, USE_BIND, USE_TMPFS, USE_STANDARD };

struct mount_opts {
    bool bind, ro, noexec, nosuid, copyup;
    uint64_t size;
    const char *mode;
};

static bool in(const char *s, const char *const *list)
{
    for (size_t i = 0; list[i]; i++)
        if (!strcmp(s, list[i]))
            return true;
    return false;
}

static bool has_prefix(const char *s, const char *const *list)
{
    for (size_t i = 0; list[i]; i++)
        if (!strncmp(s, list[i], strlen(list[i])))
            return true;
    return false;
}

/* Options every kind accepts: flags kago's mounts already have (nosuid, nodev),
 * that only tune atime, or ask for the propagation kago gives every mount
 * (private). */
static const char *const common_options[] = {"ro",          "rw",      "nosuid",     "suid",     "nodev",
                                             "dev",         "noexec",  "exec",       "relatime", "norelatime",
                                             "strictatime", "noatime", "nodiratime", "async",    "private",
                                             "rprivate",    "slave",   "rslave",     NULL};

static bool option_ok(const char *o, enum mount_use use)
{
    if (in(o, common_options) || in(o, LIST("bind", "rbind")))
        return true;
    if (use == USE_TMPFS || use == USE_ANY)
        if (has_prefix(o, LIST("size=", "mode=")) || !strcmp(o, "tmpcopyup"))
            return true;
    if (use == USE_STANDARD || use == USE_ANY)
        return in(o, LIST("newinstance")) ||
               has_prefix(o, LIST("mode=", "size=", "ptmxmode=", "gid=", "uid="));
    return false;
}

static int mount_options(struct ctx *x, json_object *m, const char *path, enum mount_use use,
                         struct mount_opts *mo)
{
    json_object *opts;
    char p[256];
    if (get_array(x, m, path, "options", &opts) < 0)
        return -1;
    for (size_t j = 0; opts && j < json_object_array_length(opts); j++) {
        json_object *s = json_object_array_get_idx(opts, j);
        const char *o = is(s, json_type_string) ? json_object_get_string(s) : NULL;
        snprintf(p, sizeof p, "%s.options[%zu]", path, j);
        if (!o || !option_ok(o, use))
            return bad(x, p, "%s: not supported", o ? o : "(not a string)");
        mo->bind |= !strcmp(o, "bind") || !strcmp(o, "rbind");
        mo->ro = !strcmp(o, "ro") ? true : !strcmp(o, "rw") ? false : mo->ro;
        mo->noexec = !strcmp(o, "noexec") ? true : !strcmp(o, "exec") ? false : mo->noexec;
        mo->nosuid = !strcmp(o, "nosuid") ? true : !strcmp(o, "suid") ? false : mo->nosuid;
        mo->copyup |= !strcmp(o, "tmpcopyup");
        int64_t b = 0;
        if (use == USE_TMPFS && !strncmp(o, "size=", 5) && (kago_parse_size(o + 5, &b, NULL) < 0 || b < 0))
            return bad(x, p, "%s: not a size", o);
        if (!strncmp(o, "size=", 5))
            mo->size = (uint64_t)b;
        if (!strncmp(o, "mode=", 5))
            mo->mode = o + 5;
    }
    return 0;
}

/* One that kago makes itself: accepted as is, but for its read-only flag (only
 * /sys is read-only). */
static int standard(struct ctx *x, const char *path, const char *type, const char *dst, json_object *m)
{
    struct mount_opts mo = {0};
    if (mount_options(x, m, path, USE_STANDARD, &mo) < 0)
        return -1;
    bool sys = !strcmp(dst, "/sys");
    if (mo.ro != sys)
        return bad(x, path, "%s at %s %s: not supported (kago mounts it %s)", type, dst,
                   mo.ro ? "read-only" : "read-write", sys ? "read-only" : "read-write");
    return 0;
}

static int load_mount(struct ctx *x, json_object *m, const char *path)
{
    if (keys(x, m, path, LIST("destination", "type", "source", "options", "uidMappings", "gidMappings"),
             LIST("uidMappings", "gidMappings")) < 0)
        return -1;
    const char *dst = NULL, *type = "none", *src = NULL;
    if (get_str(x, m, path, "destination", &dst) < 0 || get_str(x, m, path, "type", &type) < 0 ||
        get_str(x, m, path, "source", &src) < 0)
        return -1;
    if (!dst || dst[0] != '/')
        return bad(x, path, "destination: required, an absolute path");
    struct mount_opts mo = {0};
    if (mount_options(x, m, path, USE_ANY, &mo) < 0) /* bind or not, first */
        return -1;
    bool bind = mo.bind || !strcmp(type, "bind");
    if (!bind && !strcmp(type, "cgroup")) { /* the container's own cgroup, as runc shows it */
        struct kago_mount km = {.kind = KAGO_MOUNT_CGROUP, .dst = (char *)dst, .readonly = mo.ro};
        kago_spec_add_mount(x->spec, &km);
        return 0;
    }
    if (!bind && standard_mount(type, dst))
        return standard(x, path, type, dst, m);
    mo = (struct mount_opts){0};
    if (!bind && strcmp(type, "tmpfs"))
        return bad(x, path, "type %s at %s: not supported", type, dst);
    if (mount_options(x, m, path, bind ? USE_BIND : USE_TMPFS, &mo) < 0)
        return -1;
    struct kago_mount km = {.kind = bind ? KAGO_MOUNT_BIND : KAGO_MOUNT_TMPFS,
                            .dst = (char *)dst,
                            .readonly = mo.ro,
                            .noexec = mo.noexec,
                            .nosuid = mo.nosuid,
                            .size = mo.size,
                            .copyup = mo.copyup};
    if (!bind && mo.mode) {
        char *end;
        unsigned long mode = strtoul(mo.mode, &end, 8);
        if (!*mo.mode || *end || !mode || mode > 07777)
            return bad(x, path, "tmpfs at %s: mode=%s: not supported (an octal mode, not 0)", dst, mo.mode);
        km.mode = (unsigned)mode;
    }
    char *abs = NULL;
    if (bind && (!src || !*src))
        return bad(x, path, "bind mount without a source");
    if (bind && src[0] != '/' && asprintf(&abs, "%s/%s", x->oci->bundle, src) < 0)
        abort();
    km.src = bind ? (abs ? abs : (char *)src) : NULL;
    kago_spec_add_mount(x->spec, &km);
    free(abs);
    return 0;
}

static int load_mounts(struct ctx *x, json_object *a)
{
    if (!is(a, json_type_array))
        return bad(x, "mounts", "expected an array");
    for (size_t i = 0; i < json_object_array_length(a); i++) {
        char path[256];
        if (load_mount(x, json_object_array_get_idx(a, i), idx(path, sizeof path, "mounts", i)) < 0)
            return -1;
    }
    return 0;
}

/* --- linux
 * ---------------------------------------------------------------------------------------
 */

/* The list replaces kago's default set; an entry with a path joins that
 * namespace instead. */
static int load_namespaces(struct ctx *x, json_object *a)
{
    static const char *const oci[] = {"pid", "network", "ipc", "uts", "mount", "cgroup", "user", NULL};
    static const enum kago_ns ns[] = {KAGO_NS_PID,   KAGO_NS_NET,    KAGO_NS_IPC, KAGO_NS_UTS,
                                      KAGO_NS_MOUNT, KAGO_NS_CGROUP, KAGO_NS_USER};
    x->spec->ns = 0;
    for (size_t i = 0; i < json_object_array_length(a); i++) {
        json_object *n = json_object_array_get_idx(a, i);
        char path[256];
        idx(path, sizeof path, "linux.namespaces", i);
        const char *t = NULL, *p = NULL;
        if (keys(x, n, path, LIST("type", "path"), NULL) < 0 || get_str(x, n, path, "type", &t) < 0 ||
            get_str(x, n, path, "path", &p) < 0)
            return -1;
        size_t j = 0;
        while (oci[j] && (!t || strcmp(t, oci[j])))
            j++;
        if (!oci[j])
            return bad(x, path, "type %s: not supported", t ? t : "(none)");
        if ((x->spec->ns & (1u << ns[j])) || x->spec->join_ns[ns[j]])
            return bad(x, path, "type %s: given twice", t);
        if (p && *p)
            x->spec->join_ns[ns[j]] = dup(p);
        else
            x->spec->ns |= 1u << ns[j];
    }
    return 0;
}

static int load_idmap(struct ctx *x, json_object *a, const char *name, struct kago_idmap **v, size_t *n)
{
    for (size_t i = 0; i < json_object_array_length(a); i++) {
        json_object *m = json_object_array_get_idx(a, i);
        char path[256];
        snprintf(path, sizeof path, "linux.%s[%zu]", name, i);
        int64_t in, out, count;
        if (keys(x, m, path, LIST("containerID", "hostID", "size"), NULL) < 0 ||
            need(x, get_int(x, m, path, "containerID", 0, UINT32_MAX, &in), path, "containerID") < 0 ||
            need(x, get_int(x, m, path, "hostID", 0, UINT32_MAX, &out), path, "hostID") < 0 ||
            need(x, get_int(x, m, path, "size", 1, UINT32_MAX, &count), path, "size") < 0)
            return -1;
        *v = grow(*v, *n + 1, sizeof **v);
        (*v)[(*n)++] =
            (struct kago_idmap){.inside = (uint32_t)in, .outside = (uint32_t)out, .count = (uint32_t)count};
    }
    return 0;
}

/* A deny rule must deny everything (kago denies what it does not list); it
 * comes before any allow. */
static int device_deny(struct ctx *x, json_object *d, const char *path, bool after_allow)
{
    const char *t = NULL, *acc = NULL;
    int64_t ma = -1, mi = -1;
    if (get_str(x, d, path, "type", &t) < 0 || get_str(x, d, path, "access", &acc) < 0 ||
        get_int(x, d, path, "major", -1, INT32_MAX, &ma) < 0 ||
        get_int(x, d, path, "minor", -1, INT32_MAX, &mi) < 0)
        return -1;
    if ((t && strcmp(t, "a")) || ma != -1 || mi != -1 || (acc && strcmp(acc, "rwm")))
        return bad(x, path,
                   "deny %s %lld:%lld %s: not supported (kago denies every device "
                   "but its own)",
                   t ? t : "a", (long long)ma, (long long)mi, acc ? acc : "rwm");
    if (after_allow)
        return bad(x, path,
                   "deny all after an allow rule: not supported (kago's device "
                   "list is fixed)");
    return 0;
}

/* linux.resources.devices: the rules kago's own device policy already follows
 * (cgroup.c: kago__cg_devs): deny everything, allow its character nodes, and
 * mknod (only) of any character or block device. 5:1
 * (/dev/console) is accepted too: kago's /dev has no such node, and every mount
 * kago makes is nodev, so the rule grants nothing runc's would and kago's does
 * not. */
static int load_device_rules(struct ctx *x, json_object *a)
{
    static const int allowed[][2] = {{1, 3}, {1, 5}, {1, 7}, {1, 8},   {1, 9},
                                     {5, 0}, {5, 1}, {5, 2}, {136, -1}};
    bool allow_seen = false;
    for (size_t i = 0; i < json_object_array_length(a); i++) {
        json_object *d = json_object_array_get_idx(a, i);
        char path[256];
        idx(path, sizeof path, "linux.resources.devices", i);
        bool allow = false;
        if (keys(x, d, path, LIST("allow", "type", "major", "minor", "access"), NULL) < 0 ||
            need(x, get_bool(x, d, path, "allow", &allow), path, "allow") < 0)
            return -1;
        if (!allow) {
            if (device_deny(x, d, path, allow_seen) < 0)
                return -1;
            continue;
        }
        allow_seen = true;
        const char *t = "a", *acc = "rwm";
        int64_t ma = -1, mi = -1;
        if (get_str(x, d, path, "type", &t) < 0 || get_str(x, d, path, "access", &acc) < 0 ||
            get_int(x, d, path, "major", -1, INT32_MAX, &ma) < 0 ||
            get_int(x, d, path, "minor", -1, INT32_MAX, &mi) < 0)
            return -1;
        /* "c *:* m", "b *:* m" (runc's and the CRI's defaults): any node may be made, none opened */
        if (ma < 0 && mi < 0 && !strcmp(acc, "m") &&
            (!strcmp(t, "c") || !strcmp(t, "b") || !strcmp(t, "a"))) {
            x->spec->mknod_any |= (t[0] != 'b' ? KAGO_MKNOD_CHAR : 0) | (t[0] != 'c' ? KAGO_MKNOD_BLOCK : 0);
            continue;
        }
        bool ok = !strcmp(t, "c") && ma >= 0 && *acc && strspn(acc, "rwm") == strlen(acc);
        for (size_t j = 0; ok && j < sizeof allowed / sizeof allowed[0]; j++)
            if (allowed[j][0] == ma && (allowed[j][1] == mi || allowed[j][1] == -1))
                goto next;
        char mas[24] = "*", mis[24] = "*";
        if (ma >= 0)
            snprintf(mas, sizeof mas, "%lld", (long long)ma);
        if (mi >= 0)
            snprintf(mis, sizeof mis, "%lld", (long long)mi);
        return bad(x, path, "allow %s %s:%s %s: not supported (kago's device list is fixed)", t, mas, mis,
                   acc);
    next:;
    }
    return 0;
}

static int load_cpu(struct ctx *x, json_object *c)
{
    static const char *const path = "linux.resources.cpu";
    if (keys(x, c, path,
             LIST("shares", "quota", "period", "cpus", "mems", "realtimeRuntime", "realtimePeriod", "burst",
                  "idle"),
             LIST("mems", "realtimeRuntime", "realtimePeriod", "burst", "idle")) < 0)
        return -1;
    struct kago_limits *l = &x->spec->limits;
    int64_t shares = 0, quota = -1, period = 0;
    const char *cpus = NULL;
    if (get_int(x, c, path, "shares", 0, UINT32_MAX, &shares) < 0 ||
        get_int(x, c, path, "quota", -1, INT64_MAX, &quota) < 0 ||
        get_int(x, c, path, "period", 0, 1000000, &period) < 0 || get_str(x, c, path, "cpus", &cpus) < 0)
        return -1;
    if (shares > 0) { /* v1 writes them as given; v2 the weight, as runc and crun convert it */
        int64_t w = shares < 2 ? 1 : 1 + ((shares - 2) * 9999) / 262142;
        l->cpu_weight = w < 1 ? 1 : w > 10000 ? 10000 : w;
        l->cpu_shares = shares < 2 ? 2 : shares > 262144 ? 262144 : shares;
    }
    if (quota > 0 || (quota == -1 && x->update && get(c, "quota"))) /* 0 or absent: unchanged */
        l->cpu_quota_us = quota > 0 ? quota : KAGO_NOLIMIT;
    if (period > 0)
        l->cpu_period_us = period;
    if (cpus && *cpus) {
        free(l->cpuset);
        l->cpuset = dup(cpus);
    }
    return 0;
}

/* swap is memory + swap, as runc reads it (v1's memsw; v2's swap.max is the
 * difference). Without it a limited container gets no swap (kago's default). */
static int load_memory(struct ctx *x, json_object *m)
{
    static const char *const path = "linux.resources.memory";
    if (keys(x, m, path,
             LIST("limit", "reservation", "swap", "kernel", "kernelTCP", "swappiness", "disableOOMKiller",
                  "useHierarchy", "checkBeforeUpdate"),
             LIST("reservation", "kernel", "kernelTCP", "swappiness", "disableOOMKiller",
                  "checkBeforeUpdate")) < 0)
        return -1;
    int64_t lim = -1, swap = -1;
    bool hier;
    int has_swap;
    if (get_int(x, m, path, "limit", -1, INT64_MAX, &lim) < 0 ||
        (has_swap = get_int(x, m, path, "swap", -1, INT64_MAX, &swap)) < 0 ||
        get_bool(x, m, path, "useHierarchy", &hier) < 0)
        return -1;
    if (lim > 0 || (lim == -1 && x->update && get(m, "limit"))) /* -1: unlimited; 0 or absent: unchanged */
        x->spec->limits.memory = lim > 0 ? lim : KAGO_NOLIMIT;
    /* swap is memory + swap (as v1's memsw): -1 unlimited, 0 or absent none beyond the limit */
    if (has_swap && swap > 0 && lim <= 0)
        return bad(x, "linux.resources.memory.swap", "%lld: needs a memory limit", (long long)swap);
    if (has_swap && swap > 0 && swap < lim)
        return bad(x, "linux.resources.memory.swap", "%lld: below the memory limit %lld", (long long)swap,
                   (long long)lim);
    if (has_swap && swap != 0 && lim > 0)
        x->spec->limits.memory_swap = swap < 0 ? KAGO_NOLIMIT : swap;
    return 0;
}

static int load_resources(struct ctx *x, json_object *r)
{
    json_object *devs;
    if (keys(x, r, "linux.resources",
             LIST("devices", "cpu", "memory", "pids", "blockIO", "hugepageLimits", "network", "rdma",
                  "unified"),
             LIST("blockIO", "hugepageLimits", "network", "rdma", "unified")) < 0 ||
        get_array(x, r, "linux.resources", "devices", &devs) < 0)
        return -1;
    if ((devs && load_device_rules(x, devs) < 0) || (get(r, "cpu") && load_cpu(x, get(r, "cpu")) < 0) ||
        (get(r, "memory") && load_memory(x, get(r, "memory")) < 0))
        return -1;
    json_object *p = get(r, "pids");
    int64_t limit = 0;
    if (p && (keys(x, p, "linux.resources.pids", LIST("limit"), NULL) < 0 ||
              get_int(x, p, "linux.resources.pids", "limit", INT64_MIN, INT64_MAX, &limit) < 0))
        return -1;
    if (limit > 0) /* < 0: unlimited (a new cgroup's default), 0: unchanged */
        x->spec->limits.pids = limit;
    else if (limit < 0 && x->update)
        x->spec->limits.pids = KAGO_NOLIMIT;
    return 0;
}

/* linux.devices: the nodes to make. kago's /dev has its own (null, zero, full,
 * random, urandom, tty: the host's, bound), and only those. */
static int load_devices(struct ctx *x, json_object *a)
{
    static const struct {
        const char *path;
        int major, minor;
    } own[] = {{"/dev/null", 1, 3},   {"/dev/zero", 1, 5},    {"/dev/full", 1, 7},
               {"/dev/random", 1, 8}, {"/dev/urandom", 1, 9}, {"/dev/tty", 5, 0}};
    for (size_t i = 0; i < json_object_array_length(a); i++) {
        json_object *d = json_object_array_get_idx(a, i);
        char path[256];
        idx(path, sizeof path, "linux.devices", i);
        const char *p = NULL, *t = NULL;
        int64_t ma = -1, mi = -1, mode = 0666, uid = 0, gid = 0;
        if (keys(x, d, path, LIST("path", "type", "major", "minor", "fileMode", "uid", "gid"), NULL) < 0 ||
            get_str(x, d, path, "path", &p) < 0 || get_str(x, d, path, "type", &t) < 0 ||
            get_int(x, d, path, "major", 0, INT32_MAX, &ma) < 0 ||
            get_int(x, d, path, "minor", 0, INT32_MAX, &mi) < 0 ||
            get_int(x, d, path, "fileMode", 0, 07777, &mode) < 0 ||
            get_int(x, d, path, "uid", 0, MAX_ID, &uid) < 0 ||
            get_int(x, d, path, "gid", 0, MAX_ID, &gid) < 0)
            return -1;
        size_t j = 0;
        while (j < sizeof own / sizeof own[0] &&
               !(p && !strcmp(p, own[j].path) && ma == own[j].major && mi == own[j].minor))
            j++;
        if (j == sizeof own / sizeof own[0] || !t || strcmp(t, "c") || (mode & 0777) != 0666 || uid || gid)
            return bad(x, path,
                       "%s %s %lld:%lld mode %04llo owner %lld:%lld: not supported "
                       "(kago's /dev is fixed)",
                       t ? t : "(no type)", p ? p : "(no path)", (long long)ma, (long long)mi,
                       (unsigned long long)mode, (long long)uid, (long long)gid);
    }
    return 0;
}

/* Checked here (strictly: unknown keys), then read by seccomp.c's loader (the
 * one kago_seccomp_load_file uses). */
static int load_seccomp(struct ctx *x, json_object *s)
{
    static const char *const path = "linux.seccomp";
    json_object *calls, *arch;
    if (keys(x, s, path,
             LIST("defaultAction", "defaultErrnoRet", "architectures", "flags", "listenerPath",
                  "listenerMetadata", "syscalls"),
             LIST("flags", "listenerPath", "listenerMetadata")) < 0 ||
        get_array(x, s, path, "syscalls", &calls) < 0 || get_array(x, s, path, "architectures", &arch) < 0)
        return -1;
    char **archs = arch ? strv(x, arch, "linux.seccomp.architectures") : NULL;
    if (arch && !archs)
        return -1;
    /* known ones are accepted (the filter is the native one's: a call from another is refused) */
    for (size_t i = 0; archs && archs[i]; i++) {
        char name[32];
        const char *a = strncmp(archs[i], "SCMP_ARCH_", 10) ? archs[i] : archs[i] + 10;
        size_t k = 0;
        for (; a[k] && k + 1 < sizeof name; k++)
            name[k] = (char)tolower((unsigned char)a[k]);
        name[k] = 0;
        if (a[k] || !seccomp_arch_resolve_name(name)) {
            int r = bad(x, "linux.seccomp.architectures", "unknown architecture \"%s\"", archs[i]);
            strv_free(archs);
            return r;
        }
    }
    strv_free(archs);
    int64_t v;
    if (get_int(x, s, path, "defaultErrnoRet", 0, 4095, &v) < 0)
        return -1;
    for (size_t i = 0; calls && i < json_object_array_length(calls); i++) {
        json_object *c = json_object_array_get_idx(calls, i), *args;
        char p[256], pa[256];
        idx(p, sizeof p, "linux.seccomp.syscalls", i);
        if (keys(x, c, p, LIST("names", "action", "errnoRet", "args"), NULL) < 0 ||
            get_array(x, c, p, "args", &args) < 0 || get_int(x, c, p, "errnoRet", 0, 4095, &v) < 0)
            return -1;
        for (size_t j = 0; args && j < json_object_array_length(args); j++) {
            char pn[256];
            if (keys(x, json_object_array_get_idx(args, j),
                     idx(pa, sizeof pa, sub(pn, sizeof pn, p, "args"), j),
                     LIST("index", "value", "valueTwo", "op"), NULL) < 0)
                return -1;
        }
    }
    /* names this libseccomp does not know are left out, as runc and crun do: profiles list newer
     * syscalls (moby's has listmount, statmount, mseal...) that an older libseccomp cannot name */
    json_object *known = NULL;
    if (json_object_deep_copy(s, &known, NULL) < 0)
        abort();
    json_object_object_get_ex(known, "syscalls", &calls);
    for (size_t i = 0; calls && i < json_object_array_length(calls); i++) {
        json_object *names = get(json_object_array_get_idx(calls, i), "names");
        for (size_t j = is(names, json_type_array) ? json_object_array_length(names) : 0; j-- > 0;) {
            json_object *n = json_object_array_get_idx(names, j);
            if (is(n, json_type_string) &&
                seccomp_syscall_resolve_name(json_object_get_string(n)) == __NR_SCMP_ERROR)
                json_object_array_del_idx(names, j, 1);
        }
    }
    int r = kago_seccomp_from_json(x->spec, known, x->err);
    json_object_put(known);
    if (r < 0)
        return kago_error_prefix(x->err, "%s: linux.seccomp", x->file), -1;
    return 0;
}

static int load_paths(struct ctx *x, json_object *l, const char *k, char ***dst)
{
    char path[256];
    if (!get(l, k))
        return 0;
    char **v = strv(x, get(l, k), sub(path, sizeof path, "linux", k));
    if (!v)
        return -1;
    for (size_t i = 0; v[i]; i++)
        if (v[i][0] != '/') {
            int r = bad(x, path, "\"%s\": not an absolute path", v[i]);
            strv_free(v);
            return r;
        }
    kago_spec_set_paths(dst, v);
    return 0;
}

/* Kept as given: which ones kago writes (the namespaced ones) is the spec's
 * check (kago_spec_validate). */
static int load_sysctl(struct ctx *x, json_object *sc)
{
    if (sc && !is(sc, json_type_object))
        return bad(x, "linux.sysctl", "expected an object");
    if (sc) {
        json_object_object_foreach(sc, key, val)
        {
            char path[256];
            if (!is(val, json_type_string))
                return bad(x, sub(path, sizeof path, "linux.sysctl", key), "expected a string");
            kago_spec_add_sysctl(x->spec, key, json_object_get_string(val));
        }
    }
    return 0;
}

static int load_linux(struct ctx *x, json_object *l)
{
    static const char *const no[] = {"mountLabel",   "intelRdt",   "personality", "timeOffsets",
                                     "memoryPolicy", "netDevices", NULL};
    if (keys(x, l, "linux",
             LIST("namespaces", "uidMappings", "gidMappings", "resources", "devices", "seccomp",
                  "maskedPaths", "readonlyPaths", "sysctl", "cgroupsPath", "rootfsPropagation", "mountLabel",
                  "intelRdt", "personality", "timeOffsets", "memoryPolicy", "netDevices"),
             no) < 0)
        return -1;
    const char *prop = NULL, *cgpath = NULL;
    if (get_str(x, l, "linux", "rootfsPropagation", &prop) < 0 ||
        get_str(x, l, "linux", "cgroupsPath", &cgpath) < 0)
        return -1;
    if (cgpath && *cgpath) {
        /* "slice:prefix:name" is the systemd form, which kago refuses with --systemd-cgroup */
        struct kago_error *e = NULL;
        if (kago_cgroup_path_check(cgpath, &e) < 0 || strchr(cgpath, ':')) {
            kago_error_free(e);
            return bad(x, "linux.cgroupsPath", "\"%s\": not a cgroup path (a/b or /a/b)", cgpath);
        }
        free(x->spec->cgroup_path);
        x->spec->cgroup_path = dup(cgpath);
    }
    if (prop && *prop && !in(prop, LIST("private", "rprivate", "slave", "rslave")))
        return bad(x, "linux.rootfsPropagation", "%s: not supported", prop);
    struct kago_spec *s = x->spec;
    json_object *ns, *um, *gm, *dev;
    if (get_array(x, l, "linux", "namespaces", &ns) < 0 || get_array(x, l, "linux", "uidMappings", &um) < 0 ||
        get_array(x, l, "linux", "gidMappings", &gm) < 0 || get_array(x, l, "linux", "devices", &dev) < 0)
        return -1;
    if ((ns && load_namespaces(x, ns) < 0) ||
        (um && load_idmap(x, um, "uidMappings", &s->uidmap, &s->nuidmap) < 0) ||
        (gm && load_idmap(x, gm, "gidMappings", &s->gidmap, &s->ngidmap) < 0) ||
        (get(l, "resources") && load_resources(x, get(l, "resources")) < 0) ||
        (dev && load_devices(x, dev) < 0) || load_paths(x, l, "maskedPaths", &s->masked_paths) < 0 ||
        load_paths(x, l, "readonlyPaths", &s->readonly_paths) < 0 || load_sysctl(x, get(l, "sysctl")) < 0)
        return -1;
    return get(l, "seccomp") ? load_seccomp(x, get(l, "seccomp")) : 0;
}

/* --- hooks
 * ---------------------------------------------------------------------------------------
 */

static const char *const hook_kinds[] = {"prestart", "createRuntime", "poststart", "poststop", NULL};

const char *kago_oci_hook_name(enum kago_oci_hook_kind k)
{
    return (unsigned)k < KAGO_OCI_HOOK_KINDS ? hook_kinds[k] : "unknown";
}

static void hook_free(struct kago_oci_hook *h)
{
    free(h->path);
    strv_free(h->args);
    strv_free(h->env);
}

/* hooks.KIND[i]: {path, args, env, timeout} into *h. */
static int load_hook(struct ctx *x, json_object *o, const char *path, struct kago_oci_hook *h)
{
    const char *p = NULL;
    int64_t timeout = 0;
    char full[256];
    if (keys(x, o, path, LIST("path", "args", "env", "timeout"), NULL) < 0 ||
        need(x, get_str(x, o, path, "path", &p), path, "path") < 0)
        return -1;
    if (p[0] != '/')
        return bad(x, sub(full, sizeof full, path, "path"), "%s: expected an absolute path", p);
    if (get_int(x, o, path, "timeout", 1, INT_MAX, &timeout) < 0)
        return -1;
    char **args = get(o, "args") ? strv(x, get(o, "args"), sub(full, sizeof full, path, "args")) : NULL;
    if (get(o, "args") && !args)
        return -1;
    char **env = get(o, "env") ? strv(x, get(o, "env"), sub(full, sizeof full, path, "env")) : NULL;
    if (get(o, "env") && !env) {
        strv_free(args);
        return -1;
    }
    *h = (struct kago_oci_hook){.path = dup(p), .args = args, .env = env, .timeout = (int)timeout};
    return 0;
}

/* The runtime namespace's hooks are run (src/cli/oci_hooks.c); createContainer and startContainer would
 * run in the container's namespaces, which kago does not do: refused unless empty. */
static int load_hooks(struct ctx *x, json_object *h)
{
    if (keys(x, h, "hooks",
             LIST("prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"),
             NULL) < 0)
        return -1;
    for (const char *const *k = LIST("createContainer", "startContainer"); *k; k++) {
        json_object *a;
        char path[256];
        if (get_array(x, h, "hooks", *k, &a) < 0)
            return -1;
        if (a && json_object_array_length(a))
            return bad(x, sub(path, sizeof path, "hooks", *k),
                       "not supported: kago runs runtime-namespace hooks only");
    }
    for (int k = 0; k < KAGO_OCI_HOOK_KINDS; k++) {
        json_object *a;
        char path[256], item[256];
        if (get_array(x, h, "hooks", hook_kinds[k], &a) < 0)
            return -1;
        struct kago_oci_hooks *l = &x->oci->hooks[k];
        size_t n = a ? json_object_array_length(a) : 0;
        sub(path, sizeof path, "hooks", hook_kinds[k]);
        for (size_t i = 0; i < n; i++) {
            struct kago_oci_hook one;
            if (load_hook(x, json_object_array_get_idx(a, i), idx(item, sizeof item, path, i), &one) < 0)
                return -1;
            l->v = grow(l->v, l->n + 1, sizeof *l->v);
            l->v[l->n++] = one;
        }
    }
    return 0;
}

/* --- the document
 * ----------------------------------------------------------------------------------
 */

static int load_root(struct ctx *x, json_object *r)
{
    const char *p = NULL;
    if (!r)
        return bad(x, "root", "required");
    if (keys(x, r, "root", LIST("path", "readonly"), NULL) < 0 ||
        get_bool(x, r, "root", "readonly", &x->spec->readonly) < 0 ||
        need(x, get_str(x, r, "root", "path", &p), "root", "path") < 0)
        return -1;
    if (!*p)
        return bad(x, "root.path", "required");
    free(x->spec->rootfs);
    if (p[0] == '/')
        x->spec->rootfs = dup(p);
    else if (asprintf(&x->spec->rootfs, "%s/%s", x->oci->bundle, p) < 0)
        abort();
    return 0;
}

static int load_version(struct ctx *x, json_object *o)
{
    const char *v = NULL;
    if (need(x, get_str(x, o, "", "ociVersion", &v), "", "ociVersion") < 0)
        return -1;
    if (strncmp(v, "1.0.", 4) && strncmp(v, "1.1.", 4) && strcmp(v, "1.0") && strcmp(v, "1.1"))
        return bad(x, "ociVersion", "%s: not supported (kago reads 1.0.x and 1.1.x)", v);
    x->oci->oci_version = dup(v);
    return 0;
}

static int load_doc(struct ctx *x, json_object *o)
{
    if (keys(x, o, "",
             LIST("ociVersion", "process", "root", "hostname", "domainname", "mounts", "hooks", "annotations",
                  "linux", "solaris", "windows", "vm", "zos"),
             LIST("domainname", "solaris", "windows", "vm", "zos")) < 0 ||
        load_version(x, o) < 0)
        return -1;
    json_object *ann = get(o, "annotations");
    if (ann && !is(ann, json_type_object))
        return bad(x, "annotations", "expected an object");
    if (ann) {
        json_object_object_foreach(ann, k, v)
        {
            char path[256];
            if (!is(v, json_type_string))
                return bad(x, sub(path, sizeof path, "annotations", k), "expected a string");
        }
    }
    x->oci->annotations = dup(ann ? json_object_to_json_string_ext(ann, JSON_C_TO_STRING_PLAIN) : "{}");
    const char *host = NULL;
    if (get_str(x, o, "", "hostname", &host) < 0)
        return -1;
    free(x->spec->hostname);
    x->spec->hostname = host && *host ? dup(host) : NULL;
    if (!get(o, "process"))
        return bad(x, "process", "required (kago runs a process)");
    if (load_root(x, get(o, "root")) < 0 || load_process(x, get(o, "process")) < 0 ||
        (get(o, "hooks") && load_hooks(x, get(o, "hooks")) < 0) ||
        (get(o, "mounts") && load_mounts(x, get(o, "mounts")) < 0))
        return -1;
    x->spec->seccomp.mode = KAGO_SECCOMP_UNCONFINED; /* none given: none (runtime-spec), not kago's
                                                        default */
    return get(o, "linux") ? load_linux(x, get(o, "linux")) : 0;
}

/* LINE and COLUMN (1-based, in bytes) of byte offset off in text. */
static void where(const char *text, size_t off, int *line, int *col)
{
    *line = 1, *col = 1;
    for (size_t i = 0; i < off; i++) {
        if (text[i] == '\n')
            (*line)++, *col = 1;
        else
            (*col)++;
    }
}

/* The document in json, or NULL with "PATH:LINE:COLUMN: why" in *err. */
static json_object *parse(const char *path, const char *json, size_t len, struct kago_error **err)
{
    if (len > MAX_FILE_SIZE)
        return kago_error_set(err, EFBIG, "%s", path), NULL;
    json_tokener *tok = json_tokener_new();
    if (!tok)
        abort();
    json_object *o = json_tokener_parse_ex(tok, json, (int)len);
    enum json_tokener_error e = json_tokener_get_error(tok);
    size_t end = json_tokener_get_parse_end(tok);
    json_tokener_free(tok);
    if (e == json_tokener_continue)
        end = len;
    size_t after = end; /* only white space may follow the document */
    while (o && e == json_tokener_success && after < len && json[after] && strchr(" \t\r\n", json[after]))
        after++;
    if (o && e == json_tokener_success && after == len)
        return o;
    int line, col;
    where(json, o && e == json_tokener_success ? after : end, &line, &col);
    json_object_put(o);
    kago_error_set(err, 0, "%s:%d:%d: %s", path, line, col,
                   e == json_tokener_success    ? "text after the document"
                   : e == json_tokener_continue ? "unexpected end of file"
                                                : json_tokener_error_desc(e));
    return NULL;
}

int kago_oci_load_string(const char *bundle, const char *path, const char *json, size_t len,
                         struct kago_spec *spec, struct kago_oci *oci, struct kago_error **err)
{
    *oci = (struct kago_oci){.bundle = dup(bundle)};
    spec->userns = KAGO_USERNS_HOST; /* config.json decides: a user namespace only where it asks for one */
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
    struct ctx x = {.file = path, .spec = spec, .oci = &oci, .err = err, .update = true};
    int r = load_resources(&x, o);
    json_object_put(o);
    return r;
}

int kago_oci_load_hooks(const char *path, const char *json, size_t len, struct kago_oci *oci,
                        struct kago_error **err)
{
    json_object *o = parse(path, json, len, err);
    if (!o)
        return -1;
    struct ctx x = {.file = path, .spec = NULL, .oci = oci, .err = err};
    int r = load_hooks(&x, o);
    json_object_put(o);
    return r;
}

static char *read_text(const char *path, size_t *len, struct kago_error **err)
{
    FILE *f = fopen(path, "re");
    if (!f)
        return kago_error_set(err, errno, "%s", path), NULL;
    char *text = NULL;
    size_t cap = 0, n = 0, r;
    do {
        if (n == cap && cap > MAX_FILE_SIZE) {
            fclose(f);
            free(text);
            return kago_error_set(err, EFBIG, "%s", path), NULL;
        }
        if (n == cap)
            text = grow(text, cap = cap ? cap * 2 : 65536, 1);
        n += r = fread(text + n, 1, cap - n, f);
    } while (r > 0);
    int bad_read = ferror(f);
    fclose(f);
    if (bad_read) {
        free(text);
        return kago_error_set(err, EIO, "read %s", path), NULL;
    }
    *len = n;
    return text;
}

int kago_oci_load(const char *bundle, struct kago_spec *spec, struct kago_oci *oci, struct kago_error **err)
{
    char abs[PATH_MAX], path[PATH_MAX + 16];
    *oci = (struct kago_oci){0};
    if (!realpath(bundle, abs))
        return kago_error_set(err, errno, "bundle %s", bundle);
    snprintf(path, sizeof path, "%s/config.json", abs);
    size_t n = 0;
    char *text = read_text(path, &n, err);
    if (!text)
        return -1;
    int r = kago_oci_load_string(abs, path, text, n, spec, oci, err);
    free(text);
    return r;
}

void kago_oci_free(struct kago_oci *oci)
{
    free(oci->bundle);
    free(oci->annotations);
    free(oci->oci_version);
    for (int k = 0; k < KAGO_OCI_HOOK_KINDS; k++) {
        for (size_t i = 0; i < oci->hooks[k].n; i++)
            hook_free(&oci->hooks[k].v[i]);
        free(oci->hooks[k].v);
    }
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

/* runc's and crun's `spec`: three capabilities (it gave Docker's fourteen: CAP_NET_RAW, CAP_MKNOD,
 * CAP_SETFCAP... a bundle made from it let more than the one every other runtime makes) */
static json_object *default_caps(void)
{
    return str_array((const char *const[]){"CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE", NULL});
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

static json_object *hook_obj(const struct kago_oci_hook *h)
{
    json_object *o = json_object_new_object();
    json_object_object_add(o, "path", json_object_new_string(h->path));
    if (h->args)
        json_object_object_add(o, "args", str_array((const char *const *)h->args));
    if (h->env)
        json_object_object_add(o, "env", str_array((const char *const *)h->env));
    if (h->timeout)
        json_object_object_add(o, "timeout", json_object_new_int(h->timeout));
    return o;
}

char *kago_oci_hooks_json(const struct kago_oci *oci)
{
    json_object *o = json_object_new_object();
    for (int k = 0; k < KAGO_OCI_HOOK_KINDS; k++) {
        if (!oci->hooks[k].n)
            continue;
        json_object *a = json_object_new_array();
        for (size_t i = 0; i < oci->hooks[k].n; i++)
            json_object_array_add(a, hook_obj(&oci->hooks[k].v[i]));
        json_object_object_add(o, hook_kinds[k], a);
    }
    char *text =
        dup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
    json_object_put(o);
    return text;
}

char *kago_oci_features(void)
{
    json_object *o = json_object_new_object(), *l = json_object_new_object(), *cg = json_object_new_object(),
                *sc = json_object_new_object(), *caps = json_object_new_array();
    json_object_object_add(o, "ociVersionMin", json_object_new_string("1.0.0"));
    json_object_object_add(o, "ociVersionMax", json_object_new_string("1.1.0"));
    json_object_object_add(o, "hooks", str_array(hook_kinds));
    json_object *opts = str_array(common_options);
    json_object_array_add(opts, json_object_new_string("bind"));
    json_object_array_add(opts, json_object_new_string("rbind"));
    json_object_object_add(o, "mountOptions", opts);
    json_object_object_add(l, "namespaces",
                           str_array(LIST("pid", "network", "ipc", "uts", "mount", "cgroup", "user")));
    for (int i = 0; i <= CAP_LAST_CAP; i++) {
        char *n = cap_to_name((cap_value_t)i);
        for (char *p = n; p && *p; p++)
            *p = (char)(*p >= 'a' && *p <= 'z' ? *p - 32 : *p);
        if (n && !strncmp(n, "CAP_", 4))
            json_object_array_add(caps, json_object_new_string(n));
        cap_free(n);
    }
    json_object_object_add(l, "capabilities", caps);
    json_object_object_add(cg, "v1", json_object_new_boolean(1));
    json_object_object_add(cg, "v2", json_object_new_boolean(1));
    json_object_object_add(cg, "systemd", json_object_new_boolean(0));
    json_object_object_add(cg, "systemdUser", json_object_new_boolean(0));
    json_object_object_add(l, "cgroup", cg);
    json_object_object_add(sc, "enabled", json_object_new_boolean(1));
    json_object_object_add(sc, "actions",
                           str_array(LIST("SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL",
                                          "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_LOG")));
    json_object_object_add(sc, "operators",
                           str_array(LIST("SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE", "SCMP_CMP_EQ",
                                          "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_MASKED_EQ")));
    /* the architectures load_seccomp accepts: those this libseccomp knows */
    json_object *archs = json_object_new_array();
    for (const char *const *a =
             LIST("x86", "x86_64", "x32", "arm", "aarch64", "loongarch64", "m68k", "mips", "mips64",
                  "mips64n32", "mipsel", "mipsel64", "mipsel64n32", "ppc", "ppc64", "ppc64le", "s390",
                  "s390x", "parisc", "parisc64", "riscv64", "sheb", "sh");
         *a; a++) {
        char name[32] = "SCMP_ARCH_";
        size_t k = 10;
        for (const char *c = *a; *c && k + 1 < sizeof name; c++)
            name[k++] = (char)toupper((unsigned char)*c);
        name[k] = '\0';
        if (seccomp_arch_resolve_name(*a))
            json_object_array_add(archs, json_object_new_string(name));
    }
    json_object_object_add(sc, "archs", archs);
    json_object_object_add(l, "seccomp", sc);
    for (const char *const *k = LIST("apparmor", "selinux", "intelRdt"); *k; k++) {
        json_object *e = json_object_new_object();
        json_object_object_add(e, "enabled", json_object_new_boolean(0));
        json_object_object_add(l, *k, e);
    }
    json_object_object_add(o, "linux", l);
    json_object_object_add(o, "annotations", json_object_new_object());
    char *text =
        dup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE));
    json_object_put(o);
    return text;
}
