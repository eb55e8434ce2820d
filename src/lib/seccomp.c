/* seccomp: a Docker-like default deny list, custom profiles (Docker/OCI JSON subset), via libseccomp. */
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <json-c/json.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <seccomp.h>
#include <string.h>
#include <strings.h>

#include <kago/spec.h>

#include "linux.h"
#include "seccomp_default.h"
#include "seccomp_rules.h"

int kago_seccomp_action_from_name(const char *name)
{
    if (!strncasecmp(name, "SCMP_ACT_", 9))
        name += 9;
    if (!strcasecmp(name, "allow"))
        return KAGO_SCMP_ALLOW;
    if (!strcasecmp(name, "errno"))
        return KAGO_SCMP_ERRNO;
    if (!strcasecmp(name, "kill") || !strcasecmp(name, "kill_process") || !strcasecmp(name, "kill_thread"))
        return KAGO_SCMP_KILL;
    if (!strcasecmp(name, "log"))
        return KAGO_SCMP_LOG;
    return -1;
}

static uint32_t to_scmp(enum kago_seccomp_action a, int err_value)
{
    switch (a) {
    case KAGO_SCMP_ALLOW:
        return SCMP_ACT_ALLOW;
    case KAGO_SCMP_ERRNO:
        return SCMP_ACT_ERRNO((uint16_t)(err_value ? err_value : EPERM));
    case KAGO_SCMP_KILL:
        return SCMP_ACT_KILL_PROCESS;
    case KAGO_SCMP_LOG:
        return SCMP_ACT_LOG;
    }
    return SCMP_ACT_KILL_PROCESS;
}

static int add_rule(scmp_filter_ctx ctx, uint32_t action, const struct kago_seccomp_rule *r,
                    struct kago_error **err)
{
    const char *name = r->syscall;
    int nr = seccomp_syscall_resolve_name(name);
    if (nr == __NR_SCMP_ERROR)
        return kago_error_set(err, 0, "seccomp: unknown syscall \"%s\"", name);
    struct scmp_arg_cmp cmp[6];
    for (unsigned i = 0; i < r->nargs && i < 6; i++)
        cmp[i] = (struct scmp_arg_cmp){.arg = r->args[i].index,
                                       .op = (enum scmp_compare)r->args[i].op,
                                       .datum_a = r->args[i].value,
                                       .datum_b = r->args[i].value_two};
    int rc = seccomp_rule_add_array(ctx, action, nr, r->nargs, cmp);
    if (rc < 0 && rc != -EEXIST)
        return kago_error_set(err, -rc, "seccomp: rule for %s", name);
    return 0;
}

/* Builds the spec's filter with libseccomp; *ctx is NULL for unconfined. */
static int build_filter(const struct kago_spec *spec, scmp_filter_ctx *out, struct kago_error **err)
{
    const struct kago_seccomp *s = &spec->seccomp;
    *out = NULL;
    if (s->mode == KAGO_SECCOMP_UNCONFINED)
        return 0;
    uint32_t def =
        s->mode == KAGO_SECCOMP_CUSTOM ? to_scmp(s->default_action, s->default_errno) : SCMP_ACT_ALLOW;
    scmp_filter_ctx ctx = seccomp_init(def);
    if (!ctx)
        return kago_error_set(err, ENOMEM, "seccomp_init");
    int rc = s->mode == KAGO_SECCOMP_DEFAULT ? kago__seccomp_default_rules(ctx) : 0;
    if (rc < 0) {
        kago_error_set(err, -rc, "seccomp: default rules");
        goto fail;
    }
    for (size_t i = 0; i < s->nrules; i++) {
        uint32_t act = to_scmp(s->rules[i].action, s->rules[i].errno_value);
        if (act != def && add_rule(ctx, act, &s->rules[i], err) < 0)
            goto fail;
    }
    kago__seccomp_attrs(ctx);
    *out = ctx;
    return 0;
fail:
    seccomp_release(ctx);
    return -1;
}

int kago__seccomp_apply(const struct kago_spec *spec, struct kago_error **err)
{
    scmp_filter_ctx ctx;
    if (build_filter(spec, &ctx, err) < 0)
        return -1;
    if (!ctx)
        return 0;
    int rc = seccomp_load(ctx);
    seccomp_release(ctx);
    return rc < 0 ? kago_error_set(err, -rc, "seccomp: load filter") : 0;
}

/* Compiled filters by profile, for a process that starts many containers (kago serve, the supervisor):
 * libseccomp builds the default filter in 0.3-1.5 ms, a copy of it takes microseconds. The filter
 * depends only on spec->seccomp (and this binary's libseccomp), which the key spells out in full. */
#define CACHE_SLOTS 8
static struct cached_filter {
    char *key;
    unsigned short len;
    uint64_t *insns;
} cache[CACHE_SLOTS];
static unsigned cache_next;
static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER;

static char *cache_key(const struct kago_seccomp *s)
{
    char *key = NULL;
    size_t size = 0;
    FILE *f = open_memstream(&key, &size);
    if (!f)
        return NULL;
    fprintf(f, "%d %d %d", (int)s->mode, (int)s->default_action, s->default_errno);
    for (size_t i = 0; i < s->nrules; i++) {
        fprintf(f, "\n%s %d %d", s->rules[i].syscall, (int)s->rules[i].action, s->rules[i].errno_value);
        for (unsigned a = 0; a < s->rules[i].nargs; a++)
            fprintf(f, " %u:%d:%llu:%llu", s->rules[i].args[a].index, s->rules[i].args[a].op,
                    (unsigned long long)s->rules[i].args[a].value,
                    (unsigned long long)s->rules[i].args[a].value_two);
    }
    if (fclose(f) != 0) {
        free(key);
        return NULL;
    }
    return key;
}

static bool cache_get(const char *key, struct kago__bpf *out)
{
    bool hit = false;
    pthread_mutex_lock(&cache_lock);
    for (size_t i = 0; i < CACHE_SLOTS && !hit; i++) {
        if (cache[i].key && !strcmp(cache[i].key, key)) {
            out->len = cache[i].len;
            memcpy(out->insns, cache[i].insns, cache[i].len * sizeof out->insns[0]);
            hit = true;
        }
    }
    pthread_mutex_unlock(&cache_lock);
    return hit;
}

static void cache_put(char *key, const struct kago__bpf *bpf)
{
    pthread_mutex_lock(&cache_lock);
    struct cached_filter *slot = &cache[cache_next++ % CACHE_SLOTS];
    free(slot->key);
    free(slot->insns);
    slot->key = key;
    slot->len = bpf->len;
    slot->insns = xmalloc(bpf->len * sizeof bpf->insns[0]);
    memcpy(slot->insns, bpf->insns, bpf->len * sizeof bpf->insns[0]);
    pthread_mutex_unlock(&cache_lock);
}

int kago__seccomp_compile(const struct kago_spec *spec, struct kago__bpf *out, struct kago_error **err)
{
    out->len = 0;
    if (spec->seccomp.mode == KAGO_SECCOMP_UNCONFINED)
        return 0;
    if (spec->seccomp.mode == KAGO_SECCOMP_DEFAULT && spec->seccomp.nrules == 0) {
        memcpy(out->insns, default_filter, sizeof default_filter); /* compiled at build time */
        out->len = sizeof default_filter / sizeof default_filter[0];
        return 0;
    }
    char *key = cache_key(&spec->seccomp);
    if (key && cache_get(key, out)) {
        free(key);
        return 0;
    }
    if (kago__seccomp_build(spec, out, err) < 0) {
        free(key);
        return -1;
    }
    if (key)
        cache_put(key, out);
    return 0;
}

int kago__seccomp_build(const struct kago_spec *spec, struct kago__bpf *out, struct kago_error **err)
{
    scmp_filter_ctx ctx;
    if (build_filter(spec, &ctx, err) < 0)
        return -1;
    if (!ctx)
        return 0;
    int ret = -1;
    int fd = memfd_create("kago-seccomp", MFD_CLOEXEC);
    if (fd < 0) {
        kago_error_set(err, errno, "seccomp: memfd");
        goto out;
    }
    int rc = seccomp_export_bpf(ctx, fd);
    if (rc < 0) {
        kago_error_set(err, -rc, "seccomp: export filter");
        goto out;
    }
    off_t size = lseek(fd, 0, SEEK_END);
    if (size <= 0 || (size_t)size > sizeof out->insns || size % sizeof out->insns[0]) {
        kago_error_set(err, E2BIG, "seccomp: filter of %lld bytes", (long long)size);
        goto out;
    }
    if (pread(fd, out->insns, (size_t)size, 0) != size) {
        kago_error_set(err, errno, "seccomp: read filter");
        goto out;
    }
    out->len = (unsigned short)(size / sizeof out->insns[0]);
    ret = 0;
out:
    if (fd >= 0)
        close(fd);
    seccomp_release(ctx);
    return ret;
}

int kago__seccomp_load(const struct kago__bpf *bpf, struct kago_error **err)
{
    if (bpf->len == 0)
        return 0;
    struct sock_fprog prog = {.len = bpf->len, .filter = (struct sock_filter *)bpf->insns};
    if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) < 0)
        return kago_error_set(err, errno, "seccomp: load filter");
    return 0;
}

static int action_of(json_object *o, const char *key, int *action, int *errno_value, struct kago_error **err)
{
    json_object *v;
    if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string))
        return kago_error_set(err, 0, "\"%s\" missing or not a string", key);
    int a = kago_seccomp_action_from_name(json_object_get_string(v));
    if (a < 0)
        return kago_error_set(err, 0, "%s \"%s\": unknown action", key, json_object_get_string(v));
    *action = a;
    if (json_object_object_get_ex(o, !strcmp(key, "defaultAction") ? "defaultErrnoRet" : "errnoRet", &v))
        *errno_value = json_object_get_int(v);
    return 0;
}

/* args: [{"index", "value", "valueTwo", "op": "SCMP_CMP_EQ"}], at most six. */
static int load_args(struct kago_seccomp_rule *r, json_object *args, size_t i, struct kago_error **err)
{
    static const char *const ops[] = {"SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE",        "SCMP_CMP_EQ",
                                      "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_MASKED_EQ", NULL};
    if (!json_object_is_type(args, json_type_array))
        return kago_error_set(err, 0, "syscalls[%zu].args: not an array", i);
    size_t n = json_object_array_length(args);
    if (n > 6)
        return kago_error_set(err, 0, "syscalls[%zu].args: %zu filters (a syscall has six arguments)", i, n);
    for (size_t j = 0; j < n; j++) {
        json_object *a = json_object_array_get_idx(args, j), *v;
        const char *op = json_object_object_get_ex(a, "op", &v) ? json_object_get_string(v) : NULL;
        int k = 0;
        while (ops[k] && (!op || strcmp(op, ops[k])))
            k++;
        int64_t idx = json_object_object_get_ex(a, "index", &v) ? json_object_get_int64(v) : -1;
        if (!ops[k] || idx < 0 || idx > 5)
            return kago_error_set(err, 0, "syscalls[%zu].args[%zu]: expected index 0-5 and an op SCMP_CMP_*",
                                  i, j);
        r->args[j] = (struct kago_seccomp_arg){
            .index = (unsigned)idx,
            .op = k + 1,
            .value = json_object_object_get_ex(a, "value", &v) ? json_object_get_uint64(v) : 0,
            .value_two = json_object_object_get_ex(a, "valueTwo", &v) ? json_object_get_uint64(v) : 0};
    }
    r->nargs = (unsigned)n;
    return 0;
}

static int load_rules(struct kago_spec *spec, json_object *root, struct kago_error **err)
{
    json_object *calls;
    if (!json_object_object_get_ex(root, "syscalls", &calls))
        return 0;
    if (!json_object_is_type(calls, json_type_array))
        return kago_error_set(err, 0, "\"syscalls\" is not an array");
    for (size_t i = 0; i < json_object_array_length(calls); i++) {
        json_object *c = json_object_array_get_idx(calls, i), *names, *args;
        int action = 0, ev = 0;
        if (action_of(c, "action", &action, &ev, err) < 0) {
            kago_error_prefix(err, "syscalls[%zu]", i);
            return -1;
        }
        struct kago_seccomp_rule r = {.action = action, .errno_value = ev};
        if (json_object_object_get_ex(c, "args", &args) && load_args(&r, args, i, err) < 0)
            return -1;
        if (!json_object_object_get_ex(c, "names", &names) || !json_object_is_type(names, json_type_array))
            return kago_error_set(err, 0, "syscalls[%zu]: \"names\" missing", i);
        for (size_t j = 0; j < json_object_array_length(names); j++) {
            const char *n = json_object_get_string(json_object_array_get_idx(names, j));
            if (!n || seccomp_syscall_resolve_name(n) == __NR_SCMP_ERROR)
                return kago_error_set(err, 0, "syscalls[%zu]: unknown syscall \"%s\"", i, n ? n : "(null)");
            r.syscall = (char *)n;
            kago_spec_add_seccomp_rule(spec, &r);
        }
    }
    return 0;
}

int kago_seccomp_from_json(struct kago_spec *spec, void *profile, struct kago_error **err)
{
    json_object *root = profile;
    int action = 0, ev = 0;
    if (action_of(root, "defaultAction", &action, &ev, err) < 0)
        return -1;
    spec->seccomp.mode = KAGO_SECCOMP_CUSTOM;
    spec->seccomp.default_action = action;
    spec->seccomp.default_errno = ev;
    return load_rules(spec, root, err);
}

int kago_seccomp_load_file(struct kago_spec *spec, const char *path, struct kago_error **err)
{
    cleanup_free char *text = kago__read_file(path, NULL, err);
    if (!text)
        return kago_error_prefix(err, "seccomp profile"), -1;
    json_tokener *tok = json_tokener_new();
    json_object *root = json_tokener_parse_ex(tok, text, (int)strlen(text));
    enum json_tokener_error jerr = json_tokener_get_error(tok);
    json_tokener_free(tok);
    if (!root || jerr != json_tokener_success) {
        json_object_put(root);
        return kago_error_set(err, 0, "seccomp profile %s: %s", path,
                              jerr == json_tokener_continue ? "the JSON ends early (truncated?)"
                                                            : json_tokener_error_desc(jerr));
    }
    int ret = kago_seccomp_from_json(spec, root, err);
    json_object_put(root);
    if (ret < 0)
        kago_error_prefix(err, "seccomp profile %s", path);
    return ret;
}
