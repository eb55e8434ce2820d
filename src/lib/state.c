/* The state file: a container's spec and process identity as JSON, written atomically. */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "container_int.h"

static json_object *strv_json(char *const *v)
{
    json_object *a = json_object_new_array();
    for (size_t i = 0; v && v[i]; i++)
        json_object_array_add(a, json_object_new_string(v[i]));
    return a;
}

static char **json_strv(json_object *a)
{
    size_t n = a && json_object_is_type(a, json_type_array) ? json_object_array_length(a) : 0;
    char **v = xcalloc(n + 1, sizeof *v);
    for (size_t i = 0; i < n; i++)
        v[i] = xstrdup(json_object_get_string(json_object_array_get_idx(a, i)));
    return v;
}

static void add_str(json_object *o, const char *k, const char *v)
{
    if (v)
        json_object_object_add(o, k, json_object_new_string(v));
}

static void add_int(json_object *o, const char *k, int64_t v)
{
    json_object_object_add(o, k, json_object_new_int64(v));
}

static json_object *limits_json(const struct kago_limits *l)
{
    json_object *o = json_object_new_object();
    add_int(o, "cpu_quota_us", l->cpu_quota_us);
    add_int(o, "cpu_period_us", l->cpu_period_us);
    add_int(o, "cpu_weight", l->cpu_weight);
    if (l->cpu_shares > 0)
        add_int(o, "cpu_shares", l->cpu_shares);
    add_int(o, "memory", l->memory);
    if (l->memory_swap)
        add_int(o, "memory_swap", l->memory_swap);
    add_int(o, "pids", l->pids);
    add_str(o, "cpuset", l->cpuset);
    json_object *raw = json_object_new_object();
    for (size_t i = 0; i < l->nraw; i++)
        add_str(raw, l->raw[i].key, l->raw[i].value);
    json_object_object_add(o, "raw", raw);
    return o;
}

json_object *kago__spec_to_json(const struct kago_spec *s)
{
    json_object *o = json_object_new_object();
    add_str(o, "name", s->name);
    add_str(o, "rootfs", s->rootfs);
    json_object_object_add(o, "readonly", json_object_new_boolean(s->readonly));
    json_object_object_add(o, "overlay", json_object_new_boolean(s->overlay));
    if (s->overlay_dir)
        add_str(o, "overlay_dir", s->overlay_dir);
    if (s->layers) {
        add_str(o, "image", s->image);
        add_str(o, "image_id", s->image_id);
        add_str(o, "image_store", s->image_store);
        json_object_object_add(o, "layers", strv_json(s->layers));
    }
    if (s->stop_signal)
        add_int(o, "stop_signal", s->stop_signal);
    json_object_object_add(o, "argv", strv_json(s->argv));
    json_object_object_add(o, "env", strv_json(s->env));
    add_str(o, "cwd", s->cwd);
    add_str(o, "hostname", s->hostname);
    if (s->cgroup_path)
        add_str(o, "cgroup_path", s->cgroup_path);
    add_int(o, "uid", s->uid);
    add_int(o, "gid", s->gid);
    if (s->ngroups) {
        json_object *g = json_object_new_array();
        for (size_t i = 0; i < s->ngroups; i++)
            json_object_array_add(g, json_object_new_int64(s->groups[i]));
        json_object_object_add(o, "groups", g);
    }
    if (s->oom_score_adj_set)
        add_int(o, "oom_score_adj", s->oom_score_adj);
    if (s->nsysctls) {
        json_object *sc = json_object_new_object();
        for (size_t i = 0; i < s->nsysctls; i++)
            add_str(sc, s->sysctls[i].key, s->sysctls[i].value);
        json_object_object_add(o, "sysctl", sc);
    }
    json_object *ns = json_object_new_array(), *join = json_object_new_object();
    for (int i = 0; i < KAGO_NS_COUNT; i++) {
        if (s->ns & (1u << i))
            json_object_array_add(ns, json_object_new_string(kago_ns_name(i)));
        add_str(join, kago_ns_name(i), s->join_ns[i]);
    }
    json_object_object_add(o, "namespaces", ns);
    json_object_object_add(o, "join_namespaces", join);
    json_object_object_add(o, "limits", limits_json(&s->limits));
    add_int(o, "capabilities", (int64_t)s->caps);
    if (s->mknod_any)
        add_int(o, "mknod_any", s->mknod_any);
    if (s->capsets) {
        json_object *cs = json_object_new_object();
        add_int(cs, "effective", (int64_t)s->cap_effective);
        add_int(cs, "permitted", (int64_t)s->cap_permitted);
        add_int(cs, "inheritable", (int64_t)s->cap_inheritable);
        add_int(cs, "ambient", (int64_t)s->cap_ambient);
        json_object_object_add(o, "capability_sets", cs);
    }
    json_object_object_add(o, "no_new_privs", json_object_new_boolean(s->no_new_privs));
    json_object *sc = json_object_new_object();
    add_int(sc, "mode", s->seccomp.mode);
    add_int(sc, "default_action", s->seccomp.default_action);
    add_int(sc, "default_errno", s->seccomp.default_errno);
    json_object *rules = json_object_new_array();
    for (size_t i = 0; i < s->seccomp.nrules; i++) {
        json_object *r = json_object_new_object();
        add_str(r, "syscall", s->seccomp.rules[i].syscall);
        add_int(r, "action", s->seccomp.rules[i].action);
        add_int(r, "errno", s->seccomp.rules[i].errno_value);
        if (s->seccomp.rules[i].nargs) {
            json_object *args = json_object_new_array();
            for (unsigned a = 0; a < s->seccomp.rules[i].nargs; a++) {
                const struct kago_seccomp_arg *sa = &s->seccomp.rules[i].args[a];
                json_object *j = json_object_new_object();
                add_int(j, "index", sa->index);
                add_int(j, "op", sa->op);
                json_object_object_add(j, "value", json_object_new_uint64(sa->value));
                json_object_object_add(j, "value_two", json_object_new_uint64(sa->value_two));
                json_object_array_add(args, j);
            }
            json_object_object_add(r, "args", args);
        }
        json_object_array_add(rules, r);
    }
    json_object_object_add(sc, "rules", rules);
    json_object_object_add(o, "seccomp", sc);
    json_object_object_add(o, "init", json_object_new_boolean(s->init));
    if (s->no_sysfs) /* only when set: the hash of every other spec stays what it was (serve adoption) */
        json_object_object_add(o, "no_sysfs", json_object_new_boolean(true));
    json_object_object_add(o, "userns",
                           json_object_new_string(s->userns == KAGO_USERNS_AUTO ? "auto" : "host"));
    if (s->userns_key)
        add_str(o, "userns_key", s->userns_key);
    return o;
}

bool kago_spec_equal(const struct kago_spec *a, const struct kago_spec *b)
{
    json_object *ja = kago__spec_to_json(a), *jb = kago__spec_to_json(b);
    bool eq = json_object_equal(ja, jb);
    json_object_put(ja);
    json_object_put(jb);
    return eq;
}

static const char *get_str(json_object *o, const char *k)
{
    json_object *v;
    return json_object_object_get_ex(o, k, &v) && json_object_is_type(v, json_type_string)
               ? json_object_get_string(v)
               : NULL;
}

static int64_t get_int(json_object *o, const char *k, int64_t def)
{
    json_object *v;
    return json_object_object_get_ex(o, k, &v) ? json_object_get_int64(v) : def;
}

static bool get_bool(json_object *o, const char *k)
{
    json_object *v;
    return json_object_object_get_ex(o, k, &v) && json_object_get_boolean(v);
}

static json_object *get(json_object *o, const char *k)
{
    json_object *v = NULL;
    json_object_object_get_ex(o, k, &v);
    return v;
}

int kago__spec_from_json(json_object *o, struct kago_spec *s, struct kago_error **err)
{
    if (!o || !json_object_is_type(o, json_type_object))
        return kago_error_set(err, 0, "state: not a JSON object");
    kago_spec_init(s);
    free(s->rootfs);
    free(s->cwd);
    s->name = xstrdup(get_str(o, "name"));
    s->rootfs = xstrdup(get_str(o, "rootfs"));
    s->readonly = get_bool(o, "readonly");
    s->overlay = get_bool(o, "overlay");
    s->overlay_dir = xstrdup(get_str(o, "overlay_dir"));
    if (get(o, "layers")) {
        s->layers = json_strv(get(o, "layers"));
        s->image = xstrdup(get_str(o, "image"));
        s->image_id = xstrdup(get_str(o, "image_id"));
        s->image_store = xstrdup(get_str(o, "image_store"));
    }
    s->stop_signal = (int)get_int(o, "stop_signal", 0);
    for (size_t i = 0; s->env && s->env[i]; i++)
        free(s->env[i]);
    free(s->env);
    s->argv = json_strv(get(o, "argv"));
    s->env = json_strv(get(o, "env"));
    s->cwd = xstrdup(get_str(o, "cwd"));
    s->hostname = xstrdup(get_str(o, "hostname"));
    const char *userns = get_str(o, "userns");
    s->userns = userns && !strcmp(userns, "auto") ? KAGO_USERNS_AUTO : KAGO_USERNS_HOST;
    s->userns_key = xstrdup(get_str(o, "userns_key"));
    s->cgroup_path = xstrdup(get_str(o, "cgroup_path"));
    s->uid = (uid_t)get_int(o, "uid", 0);
    s->gid = (gid_t)get_int(o, "gid", 0);
    json_object *groups = get(o, "groups");
    for (size_t i = 0; groups && i < json_object_array_length(groups); i++) {
        s->groups = xrealloc(s->groups, (s->ngroups + 1) * sizeof *s->groups);
        s->groups[s->ngroups++] = (gid_t)json_object_get_int64(json_object_array_get_idx(groups, i));
    }
    s->oom_score_adj_set = get(o, "oom_score_adj") != NULL;
    s->oom_score_adj = (int)get_int(o, "oom_score_adj", 0);
    json_object *sysctls = get(o, "sysctl");
    if (sysctls) {
        json_object_object_foreach(sysctls, k, v) kago_spec_add_sysctl(s, k, json_object_get_string(v));
    }
    s->ns = 0;
    json_object *ns = get(o, "namespaces"), *join = get(o, "join_namespaces");
    for (size_t i = 0; ns && i < json_object_array_length(ns); i++) {
        int n = kago_ns_from_name(json_object_get_string(json_object_array_get_idx(ns, i)));
        if (n >= 0)
            s->ns |= 1u << n;
    }
    for (int i = 0; join && i < KAGO_NS_COUNT; i++)
        s->join_ns[i] = xstrdup(get_str(join, kago_ns_name(i)));
    json_object *l = get(o, "limits");
    if (l) {
        s->limits.cpu_quota_us = get_int(l, "cpu_quota_us", KAGO_UNSET);
        s->limits.cpu_period_us = get_int(l, "cpu_period_us", KAGO_UNSET);
        s->limits.cpu_weight = get_int(l, "cpu_weight", KAGO_UNSET);
        s->limits.cpu_shares = get_int(l, "cpu_shares", 0);
        s->limits.memory = get_int(l, "memory", KAGO_UNSET);
        s->limits.memory_swap = get_int(l, "memory_swap", 0);
        s->limits.pids = get_int(l, "pids", KAGO_UNSET);
        s->limits.cpuset = xstrdup(get_str(l, "cpuset"));
        json_object *raw = get(l, "raw");
        if (raw) {
            json_object_object_foreach(raw, k, v) kago_spec_add_raw(s, k, json_object_get_string(v));
        }
    }
    s->caps = (uint64_t)get_int(o, "capabilities", (int64_t)kago_caps_default());
    s->mknod_any = (unsigned)get_int(o, "mknod_any", 0);
    json_object *cs = get(o, "capability_sets");
    if (cs) {
        s->capsets = true;
        s->cap_effective = (uint64_t)get_int(cs, "effective", 0);
        s->cap_permitted = (uint64_t)get_int(cs, "permitted", 0);
        s->cap_inheritable = (uint64_t)get_int(cs, "inheritable", 0);
        s->cap_ambient = (uint64_t)get_int(cs, "ambient", 0);
    }
    s->no_new_privs = get_bool(o, "no_new_privs");
    json_object *sc = get(o, "seccomp");
    if (sc) {
        s->seccomp.mode = (enum kago_seccomp_mode)get_int(sc, "mode", KAGO_SECCOMP_DEFAULT);
        s->seccomp.default_action = (enum kago_seccomp_action)get_int(sc, "default_action", KAGO_SCMP_ALLOW);
        s->seccomp.default_errno = (int)get_int(sc, "default_errno", 0);
        json_object *rules = get(sc, "rules");
        for (size_t i = 0; rules && i < json_object_array_length(rules); i++) {
            json_object *r = json_object_array_get_idx(rules, i);
            struct kago_seccomp_rule rule = {.syscall = (char *)get_str(r, "syscall"),
                                             .action = (enum kago_seccomp_action)get_int(r, "action", 0),
                                             .errno_value = (int)get_int(r, "errno", 0)};
            json_object *args = get(r, "args");
            for (size_t a = 0; args && a < json_object_array_length(args) && a < 6; a++) {
                json_object *j = json_object_array_get_idx(args, a);
                rule.args[a] =
                    (struct kago_seccomp_arg){.index = (unsigned)get_int(j, "index", 0),
                                              .op = (int)get_int(j, "op", 0),
                                              .value = json_object_get_uint64(get(j, "value")),
                                              .value_two = json_object_get_uint64(get(j, "value_two"))};
                rule.nargs = (unsigned)a + 1;
            }
            if (rule.syscall)
                kago_spec_add_seccomp_rule(s, &rule);
        }
    }
    s->init = get_bool(o, "init");
    s->no_sysfs = get_bool(o, "no_sysfs");
    return 0;
}

int kago__state_write(struct kago_container *c, struct kago_error **err)
{
    json_object *o = json_object_new_object();
    add_int(o, "pid", c->pid);
    add_int(o, "starttime", (int64_t)c->starttime);
    add_int(o, "created", c->created);
    add_str(o, "cgroup", c->cg.ops ? c->cg.ops->name : NULL);
    json_object_object_add(o, "spec", kago__spec_to_json(&c->spec));
    const char *text = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
    cleanup_free char *tmp = xasprintf("%s/state.json.tmp", c->dir);
    cleanup_free char *path = xasprintf("%s/state.json", c->dir);
    int ret = 0;
    cleanup_close int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0 || write(fd, text, strlen(text)) != (ssize_t)strlen(text) || rename(tmp, path) < 0) {
        ret = kago_error_set(err, errno, "write state %s", path);
        unlink(tmp);
    }
    json_object_put(o);
    return ret;
}

int kago__state_read(struct kago_container *c, struct kago_error **err)
{
    cleanup_free char *path = xasprintf("%s/state.json", c->dir);
    cleanup_free char *text = kago__read_file(path, NULL, err);
    if (!text)
        return -1;
    json_object *o = json_tokener_parse(text);
    if (!o)
        return kago_error_set(err, 0, "state %s: not valid JSON", path);
    c->pid = (pid_t)get_int(o, "pid", 0);
    c->starttime = (unsigned long long)get_int(o, "starttime", 0);
    c->created = get_int(o, "created", 0);
    int ret = kago__spec_from_json(get(o, "spec"), &c->spec, err);
    json_object_put(o);
    cleanup_free char *exitp = xasprintf("%s/exit", c->dir);
    cleanup_free char *ex = kago__read_file(exitp, NULL, NULL);
    c->exit_status = ex ? atoi(ex) : -1;
    return ret;
}

/* Field 22 of /proc/PID/stat (start time in ticks) and the state letter; 0 if the process is gone. */
unsigned long long kago__proc_starttime(pid_t pid, char *state)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    cleanup_free char *s = kago__read_file(path, NULL, NULL);
    if (!s)
        return 0;
    char *p = strrchr(s, ')'); /* the command name may hold spaces and parentheses */
    if (!p)
        return 0;
    if (state)
        *state = p[2];
    unsigned long long v = 0;
    /* after ") " come fields 3..: skip to field 22 */
    int field = 3;
    for (p += 2; *p && field < 22; p++)
        if (*p == ' ')
            field++;
    sscanf(p, "%llu", &v);
    return v;
}
