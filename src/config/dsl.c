/* The Kagofile DSL's C primitives: they parse values with libkago's shared parsers and fill the spec
 * or app behind a Kago::Spec / Kago::AppSpec object. Argument shapes are checked by prelude.rb first.
 * Every error raises a Ruby exception (a longjmp): nothing here holds memory across a raise. */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <signal.h>
#include <string.h>
#include <strings.h>

#include <mruby.h>
#include <mruby/array.h>
#include <mruby/class.h>
#include <mruby/data.h>
#include <mruby/irep.h>
#include <mruby/debug.h>
#include <mruby/error.h>
#include <mruby/proc.h>
#include <mruby/hash.h>
#include <mruby/string.h>
#include <mruby/variable.h>

#include <kago/kago.h>

#include "internal.h"

#define CAP_MAX 40 /* CAP_CHECKPOINT_RESTORE, the last in Linux 6.x */

static void nofree(mrb_state *mrb, void *p) {}
static const struct mrb_data_type spec_type = {"Kago::Spec", nofree};
static const struct mrb_data_type app_type = {"Kago::AppSpec", nofree};

static struct kago_kagofile *kf_of(mrb_state *mrb)
{
    return mrb->ud;
}

void kf_raise_error(mrb_state *mrb, const char *what, struct kago_error *err)
{
    const char *m = err && err->msg ? err->msg : "invalid value";
    /* "rlimit: rlimit \"x\": ..." says it twice: the parsers already name what they parse. */
    size_t n = strcspn(what, " :");
    mrb_value msg = !strncmp(m, what, n) && (m[n] == ' ' || m[n] == ':') ? mrb_str_new_cstr(mrb, m)
                                                                         : mrb_format(mrb, "%s: %s", what, m);
    kago_error_free(err);
    mrb_exc_raise(mrb, mrb_obj_new(mrb, E_ARGUMENT_ERROR, 1, &msg));
}

static struct kf_container *spec_of(mrb_state *mrb, mrb_value self)
{
    return mrb_data_get_ptr(mrb, self, &spec_type);
}

static struct kf_app *app_of(mrb_state *mrb, mrb_value self)
{
    return mrb_data_get_ptr(mrb, self, &app_type);
}

static char *dup_or_raise(mrb_state *mrb, const char *s)
{
    char *p = strdup(s);
    if (!p)
        abort();
    return p;
}

static void replace_str(char **field, const char *v)
{
    free(*field);
    *field = v ? strdup(v) : NULL;
    if (v && !*field)
        abort();
}

static mrb_value new_spec_obj(mrb_state *mrb, struct kf_container *ct)
{
    struct RClass *kago = mrb_module_get(mrb, "Kago");
    struct RClass *cls = mrb_class_get_under(mrb, kago, "Spec");
    mrb_value obj = mrb_obj_value(mrb_data_object_alloc(mrb, cls, ct, &spec_type));
    mrb_iv_set(mrb, obj, mrb_intern_lit(mrb, "@procs"), mrb_ary_new(mrb));
    mrb_gc_register(mrb, obj);
    ct->obj = obj;
    return obj;
}

/* --- Kago module ------------------------------------------------------------------------------ */

static mrb_value kago_new_container(mrb_state *mrb, mrb_value self)
{
    const char *name;
    mrb_get_args(mrb, "z", &name);
    struct kago_kagofile *kf = kf_of(mrb);
    if (kf_find(kf, name))
        mrb_raisef(mrb, E_ARGUMENT_ERROR, "container \"%s\" is defined twice", name);
    for (size_t i = 0; i < kf->napps; i++)
        if (!strcmp(kf->apps[i]->app.name, name))
            mrb_raisef(mrb, E_ARGUMENT_ERROR, "container \"%s\": an app has the same name", name);
    struct kf_container *ct = calloc(1, sizeof *ct);
    if (!ct)
        abort();
    kago_spec_init_front(&ct->own);
    ct->spec = &ct->own;
    ct->spec->name = dup_or_raise(mrb, name);
    ct->stop_grace_ms = KF_DEFAULT_STOP_GRACE_MS;
    struct kf_container **v = realloc(kf->cts, (kf->ncts + 1) * sizeof *v);
    if (!v)
        abort();
    kf->cts = v;
    kf->cts[kf->ncts++] = ct;
    return new_spec_obj(mrb, ct);
}

/* Errors about a whole definition point at its first line (mruby reports a block call at its `end`). */
static void raise_at_block(mrb_state *mrb, mrb_value blk, const char *what, struct kago_error *err)
{
    mrb_value exc = mrb_nil_value();
    const char *m = err && err->msg ? err->msg : "invalid";
    exc = mrb_exc_new_str(mrb, E_ARGUMENT_ERROR, mrb_format(mrb, "%s: %s", what, m));
    kago_error_free(err);
    if (mrb_proc_p(blk) && !MRB_PROC_CFUNC_P(mrb_proc_ptr(blk))) {
        const mrb_irep *irep = mrb_proc_ptr(blk)->body.irep;
        int32_t line = -1;
        for (uint32_t pc = 0; pc < irep->ilen; pc++) {
            int32_t l = mrb_debug_get_line(mrb, irep, pc);
            if (l > 0 && (line < 0 || l < line))
                line = l;
        }
        if (line > 0)
            mrb_iv_set(mrb, exc, mrb_intern_lit(mrb, "@kago_line"), mrb_int_value(mrb, line));
    }
    mrb_exc_raise(mrb, exc);
}

static void apply_image(mrb_state *mrb, struct kf_container *ct, uint16_t *port, mrb_value blk,
                        const char *what);

static mrb_value kago_finish(mrb_state *mrb, mrb_value self)
{
    mrb_value obj, blk;
    mrb_get_args(mrb, "oo", &obj, &blk);
    struct kf_container *ct = spec_of(mrb, obj);
    struct kago_error *err = NULL;
    mrb_value what = mrb_format(mrb, "container \"%s\"", ct->spec->name);
    apply_image(mrb, ct, NULL, blk, RSTRING_CSTR(mrb, what));
    if (kago_spec_validate(ct->spec, &err) < 0)
        raise_at_block(mrb, blk, RSTRING_CSTR(mrb, what), err);
    return mrb_nil_value();
}

static mrb_value kago_new_app(mrb_state *mrb, mrb_value self)
{
    const char *name;
    mrb_get_args(mrb, "z", &name);
    struct kago_kagofile *kf = kf_of(mrb);
    if (kago__smap_get(&kf->app_names, name))
        mrb_raisef(mrb, E_ARGUMENT_ERROR, "app \"%s\" is defined twice", name);
    if (kf_find(kf, name))
        mrb_raisef(mrb, E_ARGUMENT_ERROR, "app \"%s\": a container has the same name", name);
    struct kf_app *a = kf_zalloc(kf, sizeof *a); /* (freed with the file: not among what it defines) */
    kago_app_init(&a->app);
    a->app.name = dup_or_raise(mrb, name);
    a->app.spec.name = dup_or_raise(mrb, name);
    a->ct.spec = &a->app.spec;
    a->ct.in_app = true;
    a->ct.stop_grace_ms = KF_DEFAULT_STOP_GRACE_MS;
    if (kf->napps == kf->capapps) {
        kf->capapps = kf->capapps ? kf->capapps * 2 : 8;
        struct kf_app **v = realloc(kf->apps, kf->capapps * sizeof *v);
        if (!v)
            abort();
        kf->apps = v;
    }
    kf->apps[kf->napps++] = a;
    kago__smap_add(&kf->app_names, a->app.name, strlen(a->app.name), a);
    struct RClass *cls = mrb_class_get_under(mrb, mrb_module_get(mrb, "Kago"), "AppSpec");
    a->obj = mrb_obj_value(mrb_data_object_alloc(mrb, cls, a, &app_type));
    mrb_gc_register(mrb, a->obj);
    new_spec_obj(mrb, &a->ct);
    return a->obj;
}

static mrb_value kago_finish_app(mrb_state *mrb, mrb_value self)
{
    mrb_value obj, blk;
    mrb_get_args(mrb, "oo", &obj, &blk);
    struct kf_app *a = app_of(mrb, obj);
    if ((!a->app.hosts || !a->app.hosts[0]) && !a->app.default_app)
        mrb_raisef(mrb, E_ARGUMENT_ERROR,
                   "app \"%s\": no hosts given (a.hosts \"example.com\", or a.default true)", a->app.name);
    struct kago_kagofile *kf = kf_of(mrb);
    for (size_t i = 0; a->app.default_app && i < kf->napps; i++)
        if (kf->apps[i] != a && kf->apps[i]->app.default_app)
            mrb_raisef(mrb, E_ARGUMENT_ERROR,
                       "app \"%s\": a.default true, but app \"%s\" is the default app already (at most one)",
                       a->app.name, kf->apps[i]->app.name);
    if (!a->app.hosts) { /* a default app with no hosts of its own: an empty list */
        a->app.hosts = calloc(1, sizeof(char *));
        if (!a->app.hosts)
            abort();
    }
    if (a->app.min_instances > a->app.max_instances)
        mrb_raisef(mrb, E_ARGUMENT_ERROR, "app \"%s\": min_instances %d above max_instances %d", a->app.name,
                   (int)a->app.min_instances, (int)a->app.max_instances);
    if (a->app.max_instances == 0)
        mrb_raisef(mrb, E_ARGUMENT_ERROR, "app \"%s\": max_instances must be at least 1", a->app.name);
    struct kago_error *err = NULL;
    mrb_value what = mrb_format(mrb, "app \"%s\"", a->app.name);
    apply_image(mrb, &a->ct, a->port_set ? NULL : &a->app.port, blk, RSTRING_CSTR(mrb, what));
    /* A directory root with no overlay is every instance's (and any other app's naming it): read-only
     * unless the app says readonly: false. Its instances are stateless (a.data keeps state), and what one
     * wrote there, as the host's root through the idmapping (a setuid-root file the host's users could
     * run), would stay for the next. overlay: gives each instance a writable layer of its own. */
    struct kago_spec *cs = &a->app.spec;
    if (!a->ct.readonly_set && !cs->overlay && !(cs->layers && cs->layers[0]))
        cs->readonly = true;
    if (a->app.socket_activation)
        a->app.spec.listen_port = a->app.port;
    /* scale_up: an instance starts at the bottom of its range */
    if (a->app.scale_up.cpu_max) {
        a->app.spec.limits.cpu_quota_us = a->app.scale_up.cpu_min;
        a->app.spec.limits.cpu_period_us = KAGO_UNSET;
    }
    if (a->app.scale_up.memory_max)
        a->app.spec.limits.memory = a->app.scale_up.memory_min;
    if (kago_spec_validate(&a->app.spec, &err) < 0)
        raise_at_block(mrb, blk, RSTRING_CSTR(mrb, what), err);
    return mrb_nil_value();
}

static mrb_value kago_duration(mrb_state *mrb, mrb_value self)
{
    const char *s, *what;
    mrb_get_args(mrb, "zz", &s, &what);
    uint64_t ms;
    struct kago_error *err = NULL;
    if (kago_parse_duration(s, &ms, &err) < 0)
        kf_raise_error(mrb, what, err);
    if (ms > (uint64_t)MRB_INT_MAX)
        mrb_raisef(mrb, E_ARGUMENT_ERROR, "%s: duration \"%s\" too long", what, s);
    return mrb_int_value(mrb, (mrb_int)ms);
}

/* --- Kago::Spec: what the container is -------------------------------------------------------- */

static mrb_value spec_name(mrb_state *mrb, mrb_value self)
{
    return mrb_str_new_cstr(mrb, spec_of(mrb, self)->spec->name);
}

static mrb_value spec_get_rootfs(mrb_state *mrb, mrb_value self)
{
    const char *r = spec_of(mrb, self)->spec->rootfs;
    return r ? mrb_str_new_cstr(mrb, r) : mrb_nil_value();
}

static mrb_value spec_str(mrb_state *mrb, mrb_value self)
{
    const char *field, *v;
    mrb_get_args(mrb, "zz", &field, &v);
    struct kago_spec *s = spec_of(mrb, self)->spec;
    if (!*v)
        mrb_raisef(mrb, E_ARGUMENT_ERROR, "%s: empty value", field);
    struct kf_container *ct = spec_of(mrb, self);
    if (!strcmp(field, "rootfs")) {
        if (ct->image)
            mrb_raisef(mrb, E_ARGUMENT_ERROR, "rootfs: the container's root is the image %s already",
                       ct->image);
        replace_str(&s->rootfs, v);
        ct->rootfs_set = true;
    } else if (!strcmp(field, "overlay_dir")) {
        if (v[0] != '/')
            mrb_raisef(mrb, E_ARGUMENT_ERROR, "overlay_dir: \"%s\" is not an absolute path", v);
        replace_str(&s->overlay_dir, v);
        s->overlay = true;
    } else if (!strcmp(field, "cwd")) {
        replace_str(&s->cwd, v);
        ct->cwd_set = true;
    } else if (!strcmp(field, "hostname")) {
        replace_str(&s->hostname, v);
    } else if (!strcmp(field, "userns")) {
        if (strcmp(v, "host") && strcmp(v, "auto"))
            mrb_raisef(mrb, E_ARGUMENT_ERROR,
                       "userns: \"%s\": expected :auto (a range of kago's pool) or :host", v);
        s->userns = !strcmp(v, "auto") ? KAGO_USERNS_AUTO : KAGO_USERNS_HOST;
    }
    return self;
}

static mrb_value spec_image(mrb_state *mrb, mrb_value self)
{
    const char *ref;
    mrb_get_args(mrb, "z", &ref);
    struct kf_container *ct = spec_of(mrb, self);
    if (!*ref)
        mrb_raise(mrb, E_ARGUMENT_ERROR, "image: empty reference");
    if (ct->rootfs_set)
        mrb_raisef(mrb, E_ARGUMENT_ERROR, "image: the container's root is the rootfs %s already",
                   ct->spec->rootfs);
    replace_str(&ct->image, ref);
    return self;
}

static mrb_value spec_entrypoint(mrb_state *mrb, mrb_value self)
{
    mrb_value ary;
    mrb_get_args(mrb, "A", &ary);
    struct kf_container *ct = spec_of(mrb, self);
    for (size_t i = 0; ct->entrypoint && ct->entrypoint[i]; i++)
        free(ct->entrypoint[i]);
    free(ct->entrypoint);
    mrb_int n = RARRAY_LEN(ary);
    ct->entrypoint = calloc((size_t)n + 1, sizeof *ct->entrypoint);
    if (!ct->entrypoint)
        abort();
    for (mrb_int i = 0; i < n; i++)
        if (!(ct->entrypoint[i] = strdup(RSTRING_CSTR(mrb, mrb_ary_ref(mrb, ary, i)))))
            abort();
    ct->entrypoint_set = true;
    return self;
}

/* The end of a container's block: its image (if any) becomes its root and gives the defaults the block
 * did not set. port (an app's, when a.port did not set it): the image's lowest exposed TCP port, if any. */
static void apply_image(mrb_state *mrb, struct kf_container *ct, uint16_t *port, mrb_value blk,
                        const char *what)
{
    if (!ct->image)
        return;
    struct kago_image *img = NULL;
    struct kago_error *err = NULL;
    if (kago_image_load(kago_image_store_dir(NULL), ct->image, &img, &err) == 0) {
        struct kago_image_overrides ov = {.cmd = ct->argv_set ? ct->spec->argv : NULL,
                                          .entrypoint = ct->entrypoint,
                                          .entrypoint_set = ct->entrypoint_set,
                                          .user_set = ct->user_set,
                                          .cwd_set = ct->cwd_set,
                                          .env_set = ct->env_set};
        char **cmd = NULL;
        if (ov.cmd) { /* apply replaces spec->argv: give it a copy */
            size_t n = 0;
            while (ov.cmd[n])
                n++;
            cmd = calloc(n + 1, sizeof *cmd);
            if (!cmd)
                abort();
            memcpy(cmd, ov.cmd, n * sizeof *cmd);
            ov.cmd = cmd;
        }
        int r = kago_image_apply(img, ct->spec, &ov, &err);
        free(cmd);
        if (r == 0 && port && kago_image_port(img))
            *port = kago_image_port(img);
        kago_image_free(img);
        if (r == 0)
            return;
    }
    raise_at_block(mrb, blk, what, err);
}

static mrb_value spec_bool(mrb_state *mrb, mrb_value self)
{
    const char *field;
    mrb_bool v;
    mrb_get_args(mrb, "zb", &field, &v);
    struct kago_spec *s = spec_of(mrb, self)->spec;
    if (!strcmp(field, "readonly")) {
        s->readonly = v;
        spec_of(mrb, self)->readonly_set = true;
    } else if (!strcmp(field, "overlay"))
        s->overlay = v;
    else if (!strcmp(field, "no_new_privs"))
        s->no_new_privs = v;
    else if (!strcmp(field, "init"))
        s->init = v;
    else if (!strcmp(field, "sysfs"))
        s->no_sysfs = !v;
    return self;
}

static mrb_value spec_overlay_size(mrb_state *mrb, mrb_value self)
{
    const char *v;
    mrb_get_args(mrb, "z", &v);
    int64_t b;
    struct kago_error *err = NULL;
    if (kago_parse_size(v, &b, &err) < 0)
        kf_raise_error(mrb, "rootfs overlay:", err);
    spec_of(mrb, self)->spec->overlay_size = b < 0 ? 0 : (uint64_t)b;
    return self;
}

static mrb_value spec_argv(mrb_state *mrb, mrb_value self)
{
    mrb_value ary;
    mrb_get_args(mrb, "A", &ary);
    mrb_int n = RARRAY_LEN(ary);
    char **argv = calloc((size_t)n + 1, sizeof *argv);
    if (!argv)
        abort();
    for (mrb_int i = 0; i < n; i++) {
        mrb_value s = mrb_ary_ref(mrb, ary, i);
        argv[i] = (char *)RSTRING_PTR(s); /* prelude made them Strings; set_argv copies */
        if (strlen(argv[i]) != (size_t)RSTRING_LEN(s)) {
            free(argv);
            mrb_raise(mrb, E_ARGUMENT_ERROR, "command: argument contains a NUL byte");
        }
    }
    kago_spec_set_argv(spec_of(mrb, self)->spec, argv);
    spec_of(mrb, self)->argv_set = true;
    free(argv);
    return self;
}

static mrb_value spec_env(mrb_state *mrb, mrb_value self)
{
    const char *kv;
    mrb_get_args(mrb, "z", &kv);
    if (kv[0] == '=')
        mrb_raisef(mrb, E_ARGUMENT_ERROR, "env: \"%s\": empty variable name", kv);
    struct kf_container *ct = spec_of(mrb, self);
    kago_spec_add_env(ct->spec, kv);
    char **v = realloc(ct->env_set, (ct->nenv_set + 2) * sizeof *v);
    if (!v || !(v[ct->nenv_set] = strdup(kv)))
        abort();
    v[++ct->nenv_set] = NULL;
    ct->env_set = v;
    return self;
}

static mrb_value spec_env_clear(mrb_state *mrb, mrb_value self)
{
    struct kago_spec *s = spec_of(mrb, self)->spec;
    for (size_t i = 0; s->env && s->env[i]; i++)
        free(s->env[i]);
    if (s->env)
        s->env[0] = NULL;
    return self;
}

static mrb_value spec_user(mrb_state *mrb, mrb_value self)
{
    const char *v;
    mrb_get_args(mrb, "z", &v);
    struct kago_spec *s = spec_of(mrb, self)->spec;
    struct kago_error *err = NULL;
    if (kago_parse_user(v, &s->uid, &s->gid, &err) < 0)
        kf_raise_error(mrb, "user", err);
    spec_of(mrb, self)->user_set = true;
    return self;
}

static mrb_value spec_uid_gid(mrb_state *mrb, mrb_value self)
{
    mrb_int u, g;
    mrb_get_args(mrb, "ii", &u, &g);
    if (u < 0 || g < 0 || u > UINT32_MAX - 1 || g > UINT32_MAX - 1)
        mrb_raisef(mrb, E_ARGUMENT_ERROR, "user: %d:%d out of range", (int)u, (int)g);
    struct kago_spec *s = spec_of(mrb, self)->spec;
    s->uid = (uid_t)u;
    s->gid = (gid_t)g;
    spec_of(mrb, self)->user_set = true;
    return self;
}

static mrb_value spec_ns(mrb_state *mrb, mrb_value self)
{
    mrb_value ary;
    mrb_get_args(mrb, "A", &ary);
    unsigned ns = 0;
    for (mrb_int i = 0; i < RARRAY_LEN(ary); i++) {
        const char *name = RSTRING_CSTR(mrb, mrb_ary_ref(mrb, ary, i));
        int n = kago_ns_from_name(name);
        if (n < 0)
            mrb_raisef(
                mrb, E_ARGUMENT_ERROR,
                "namespaces: unknown namespace \"%s\" (pid, mount, uts, ipc, net, cgroup, user, or :none)",
                name);
        ns |= 1u << n;
    }
    struct kago_spec *s = spec_of(mrb, self)->spec;
    s->ns = ns;
    for (int i = 0; i < KAGO_NS_COUNT; i++)
        if (s->join_ns[i])
            s->ns &= ~(1u << i);
    return self;
}

static mrb_value spec_join(mrb_state *mrb, mrb_value self)
{
    const char *name, *path;
    mrb_get_args(mrb, "zz", &name, &path);
    int n = kago_ns_from_name(name);
    if (n < 0)
        mrb_raisef(mrb, E_ARGUMENT_ERROR, "join_namespace: unknown namespace \"%s\"", name);
    if (path[0] != '/')
        mrb_raisef(mrb, E_ARGUMENT_ERROR,
                   "join_namespace: \"%s\": expected an absolute path like /proc/PID/ns/%s", path, name);
    struct kago_spec *s = spec_of(mrb, self)->spec;
    replace_str(&s->join_ns[n], path);
    s->ns &= ~(1u << n);
    return self;
}

static mrb_value spec_idmap(mrb_state *mrb, mrb_value self)
{
    const char *kind, *v;
    mrb_get_args(mrb, "zz", &kind, &v);
    struct kago_idmap m;
    struct kago_error *err = NULL;
    if (kago_parse_idmap(v, &m, &err) < 0)
        kf_raise_error(mrb, kind, err);
    struct kago_spec *s = spec_of(mrb, self)->spec;
    bool uid = !strcmp(kind, "uid_map");
    struct kago_idmap **maps = uid ? &s->uidmap : &s->gidmap;
    size_t *n = uid ? &s->nuidmap : &s->ngidmap;
    struct kago_idmap *nm = realloc(*maps, (*n + 1) * sizeof *nm);
    if (!nm)
        abort();
    nm[(*n)++] = m;
    *maps = nm;
    return self;
}

static mrb_value spec_bind(mrb_state *mrb, mrb_value self)
{
    const char *src, *dst;
    mrb_bool ro;
    mrb_get_args(mrb, "zzb", &src, &dst, &ro);
    if (dst[0] != '/')
        mrb_raisef(mrb, E_ARGUMENT_ERROR, "mount: destination \"%s\" must be an absolute path", dst);
    if (!*src)
        mrb_raise(mrb, E_ARGUMENT_ERROR, "mount: empty source path");
    struct kago_mount m = {.kind = KAGO_MOUNT_BIND, .src = (char *)src, .dst = (char *)dst, .readonly = ro};
    kago_spec_add_mount(spec_of(mrb, self)->spec, &m);
    return self;
}

static mrb_value spec_tmpfs(mrb_state *mrb, mrb_value self)
{
    const char *dst, *size;
    mrb_bool ro;
    mrb_get_args(mrb, "zz!b", &dst, &size, &ro);
    if (dst[0] != '/')
        mrb_raisef(mrb, E_ARGUMENT_ERROR, "tmpfs: destination \"%s\" must be an absolute path", dst);
    struct kago_mount m = {.kind = KAGO_MOUNT_TMPFS, .dst = (char *)dst, .readonly = ro};
    if (size) {
        int64_t b;
        struct kago_error *err = NULL;
        if (kago_parse_size(size, &b, &err) < 0)
            kf_raise_error(mrb, "tmpfs size:", err);
        m.size = b < 0 ? 0 : (uint64_t)b;
    }
    kago_spec_add_mount(spec_of(mrb, self)->spec, &m);
    return self;
}

static mrb_value spec_paths(mrb_state *mrb, mrb_value self)
{
    const char *kind;
    mrb_value ary;
    mrb_bool replace;
    mrb_get_args(mrb, "zAb", &kind, &ary, &replace);
    for (mrb_int i = 0; i < RARRAY_LEN(ary); i++) {
        const char *p = RSTRING_CSTR(mrb, mrb_ary_ref(mrb, ary, i));
        if (p[0] != '/')
            mrb_raisef(mrb, E_ARGUMENT_ERROR, "%s paths: \"%s\" must be an absolute path", kind, p);
    }
    struct kago_spec *s = spec_of(mrb, self)->spec;
    char ***list = !strcmp(kind, "masked") ? &s->masked_paths : &s->readonly_paths;
    kago_spec_own_paths(list);
    size_t n = 0;
    while (*list && (*list)[n])
        n++;
    if (replace) {
        for (size_t i = 0; i < n; i++)
            free((*list)[i]);
        n = 0;
    }
    char **nl = realloc(*list, (n + (size_t)RARRAY_LEN(ary) + 1) * sizeof *nl);
    if (!nl)
        abort();
    for (mrb_int i = 0; i < RARRAY_LEN(ary); i++)
        nl[n++] = dup_or_raise(mrb, RSTRING_CSTR(mrb, mrb_ary_ref(mrb, ary, i)));
    nl[n] = NULL;
    *list = nl;
    return self;
}

/* --- limits, shared with Kago::Container#update ----------------------------------------------- */

void kf_limits_init(struct kago_limits *l)
{
    *l = KAGO_LIMITS_UNSET;
}

void kf_limits_free(struct kago_limits *l)
{
    free(l->cpuset);
    for (size_t i = 0; i < l->nraw; i++) {
        free(l->raw[i].key);
        free(l->raw[i].value);
    }
    free(l->raw);
    kf_limits_init(l);
}

static int parse_int_or_max(const char *key, const char *v, int64_t min, int64_t max, int64_t *out,
                            struct kago_error **err)
{
    if (!strcasecmp(v, "max") || !strcasecmp(v, "unlimited")) {
        *out = KAGO_NOLIMIT;
        return 0;
    }
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (end == v || *end || errno || x < min || x > max)
        return kago_error_set(err, 0, "%s \"%s\": expected an integer %lld..%lld or max", key, v,
                              (long long)min, (long long)max);
    *out = x;
    return 0;
}

static int valid_raw_key(const char *key)
{
    /* "controller.file": a name inside the container's cgroup directory, never a path. */
    const char *dot = strchr(key, '.');
    return dot && dot != key && dot[1] && !strchr(key, '/') &&
           strspn(key, "abcdefghijklmnopqrstuvwxyz0123456789_.") == strlen(key);
}

int kf_parse_limit(struct kago_limits *l, const char *key, const char *v, struct kago_error **err)
{
    if (!strcmp(key, "cpu"))
        return kago_parse_cpu(v, &l->cpu_quota_us, err);
    if (!strcmp(key, "memory"))
        return kago_parse_size(v, &l->memory, err);
    if (!strcmp(key, "pids"))
        return parse_int_or_max(key, v, 1, INT32_MAX, &l->pids, err);
    if (!strcmp(key, "cpu_weight")) {
        int r = parse_int_or_max(key, v, 1, 10000, &l->cpu_weight, err);
        if (r == 0 && l->cpu_weight == KAGO_NOLIMIT)
            return kago_error_set(err, 0, "cpu_weight \"%s\": expected an integer 1..10000", v);
        return r;
    }
    if (!strcmp(key, "cpu_period")) {
        uint64_t ms;
        if (kago_parse_duration(v, &ms, err) < 0)
            return -1;
        if (ms < 1 || ms > 1000)
            return kago_error_set(err, 0, "cpu_period \"%s\": must be 1ms..1s", v);
        l->cpu_period_us = (int64_t)ms * 1000;
        return 0;
    }
    if (!strcmp(key, "cpuset")) {
        if (!*v || strspn(v, "0123456789,-") != strlen(v))
            return kago_error_set(err, 0, "cpuset \"%s\": expected CPU numbers like 0-1,3", v);
        replace_str(&l->cpuset, v);
        return 0;
    }
    if (strchr(key, '.')) {
        if (!valid_raw_key(key))
            return kago_error_set(err, 0, "\"%s\": not a cgroup controller key like \"cpu.cfs_quota_us\"",
                                  key);
        struct kago_cgroup_kv *raw = realloc(l->raw, (l->nraw + 1) * sizeof *raw);
        if (!raw)
            abort();
        l->raw = raw;
        l->raw[l->nraw].key = strdup(key);
        l->raw[l->nraw].value = strdup(v);
        if (!l->raw[l->nraw].key || !l->raw[l->nraw].value)
            abort();
        l->nraw++;
        return 0;
    }
    return kago_error_set(err, 0,
                          "unknown limit \"%s\" (cpu, cpu_period, cpu_weight, memory, pids, cpuset, or a raw "
                          "controller key like \"cpu.cfs_quota_us\")",
                          key);
}

static mrb_value spec_limit(mrb_state *mrb, mrb_value self)
{
    const char *key, *v;
    mrb_get_args(mrb, "zz", &key, &v);
    struct kago_spec *s = spec_of(mrb, self)->spec;
    struct kago_error *err = NULL;
    if (strchr(key, '.')) {
        /* Through a scratch struct so the spec's raw list gets kago_spec_add_raw's ownership. */
        struct kago_limits tmp;
        kf_limits_init(&tmp);
        if (kf_parse_limit(&tmp, key, v, &err) < 0)
            kf_raise_error(mrb, "cgroup", err);
        kago_spec_add_raw(s, tmp.raw[0].key, tmp.raw[0].value);
        kf_limits_free(&tmp);
        return self;
    }
    if (kf_parse_limit(&s->limits, key, v, &err) < 0)
        kf_raise_error(mrb, "cgroup", err);
    return self;
}

static mrb_value spec_rlimit(mrb_state *mrb, mrb_value self)
{
    const char *name, *soft, *hard;
    mrb_get_args(mrb, "zzz", &name, &soft, &hard);
    char buf[256];
    snprintf(buf, sizeof buf, "%s=%s:%s", name, soft, hard);
    struct kago_rlimit rl;
    struct kago_error *err = NULL;
    if (kago_parse_rlimit(buf, &rl, &err) < 0)
        kf_raise_error(mrb, "rlimit", err);
    kago_spec_add_rlimit(spec_of(mrb, self)->spec, &rl);
    return self;
}

static uint64_t caps_from_list(mrb_state *mrb, mrb_value ary, const char *mode)
{
    uint64_t caps = 0;
    for (mrb_int i = 0; i < RARRAY_LEN(ary); i++) {
        const char *name = RSTRING_CSTR(mrb, mrb_ary_ref(mrb, ary, i));
        if (!strcasecmp(name, "all")) {
            caps |= (2ull << CAP_MAX) - 1;
            continue;
        }
        int c = kago_cap_from_name(name);
        if (c < 0)
            mrb_raisef(mrb, E_ARGUMENT_ERROR, "capabilities %s unknown capability \"%s\"", mode, name);
        caps |= 1ull << c;
    }
    return caps;
}

static mrb_value spec_caps(mrb_state *mrb, mrb_value self)
{
    const char *mode;
    mrb_value ary;
    mrb_get_args(mrb, "zA", &mode, &ary);
    struct kago_spec *s = spec_of(mrb, self)->spec;
    if (!strcmp(mode, "all"))
        s->caps = (2ull << CAP_MAX) - 1;
    else if (!strcmp(mode, "none"))
        s->caps = 0;
    else if (!strcmp(mode, "default"))
        s->caps = kago_caps_default();
    else if (!strcmp(mode, "allow"))
        s->caps = caps_from_list(mrb, ary, "allow:");
    else if (!strcmp(mode, "add"))
        s->caps |= caps_from_list(mrb, ary, "add:");
    else if (!strcmp(mode, "drop"))
        s->caps &= ~caps_from_list(mrb, ary, "drop:");
    else
        mrb_raisef(mrb, E_ARGUMENT_ERROR,
                   "capabilities: unknown mode :%s (:all, :none, :default, or allow:/add:/drop:)", mode);
    return self;
}

static int seccomp_action(const char *name)
{
    static const char *const names[] = {[KAGO_SCMP_ALLOW] = "allow",
                                        [KAGO_SCMP_ERRNO] = "errno",
                                        [KAGO_SCMP_KILL] = "kill",
                                        [KAGO_SCMP_LOG] = "log"};
    for (int i = 0; i < 4; i++)
        if (!strcmp(name, names[i]))
            return i;
    return -1;
}

static mrb_value spec_seccomp(mrb_state *mrb, mrb_value self)
{
    const char *mode, *def;
    mrb_int eno;
    mrb_get_args(mrb, "zzi", &mode, &def, &eno);
    struct kago_seccomp *sc = &spec_of(mrb, self)->spec->seccomp;
    int a = seccomp_action(def);
    if (a < 0)
        mrb_raisef(mrb, E_ARGUMENT_ERROR, "seccomp default: unknown action :%s (:allow, :errno, :kill, :log)",
                   def);
    if (eno < 0 || eno > 4095)
        mrb_raisef(mrb, E_ARGUMENT_ERROR, "seccomp errno: %d out of range", (int)eno);
    if (!strcmp(mode, "default"))
        sc->mode = KAGO_SECCOMP_DEFAULT;
    else if (!strcmp(mode, "unconfined"))
        sc->mode = KAGO_SECCOMP_UNCONFINED;
    else if (!strcmp(mode, "custom"))
        sc->mode = KAGO_SECCOMP_CUSTOM;
    else
        mrb_raisef(mrb, E_ARGUMENT_ERROR,
                   "seccomp: unknown mode :%s (:default, :unconfined, or default: ACTION)", mode);
    sc->default_action = a;
    sc->default_errno = (int)eno;
    return self;
}

static mrb_value spec_scmp_rule(mrb_state *mrb, mrb_value self)
{
    const char *name, *action;
    mrb_int eno;
    mrb_get_args(mrb, "zzi", &name, &action, &eno);
    int a = seccomp_action(action);
    if (a < 0)
        mrb_raisef(mrb, E_ARGUMENT_ERROR, "seccomp: unknown action %s", action);
    if (!*name || strspn(name, "abcdefghijklmnopqrstuvwxyz0123456789_") != strlen(name))
        mrb_raisef(mrb, E_ARGUMENT_ERROR, "seccomp %s: \"%s\" is not a system call name", action, name);
    if (eno < 0 || eno > 4095)
        mrb_raisef(mrb, E_ARGUMENT_ERROR, "seccomp errno: %d out of range", (int)eno);
    struct kago_seccomp_rule r = {.syscall = (char *)name, .action = a, .errno_value = (int)eno};
    kago_spec_add_seccomp_rule(spec_of(mrb, self)->spec, &r);
    return self;
}

static mrb_value spec_listen_port(mrb_state *mrb, mrb_value self)
{
    mrb_int port;
    mrb_get_args(mrb, "i", &port);
    if (port < 1 || port > 65535)
        mrb_raisef(mrb, E_ARGUMENT_ERROR, "listen_port: %d is not a TCP port", (int)port);
    spec_of(mrb, self)->spec->listen_port = (uint16_t)port;
    return self;
}

static mrb_value spec_stop_grace(mrb_state *mrb, mrb_value self)
{
    mrb_int ms;
    mrb_get_args(mrb, "i", &ms);
    spec_of(mrb, self)->stop_grace_ms = (uint64_t)ms;
    return self;
}

/* --- hooks ------------------------------------------------------------------------------------ */

static const char *const hook_names[KF_NKINDS] = {
    [KF_BEFORE_START] = "before_start",
    [KF_AFTER_START] = "after_start",
    [KF_ON_EXIT] = "on_exit",
    [KF_ON_OOM] = "on_oom",
    [KF_ON_FAILURE] = "on_failure",
    [KF_AFTER] = "after",
    [KF_EVERY] = "every",
    [KF_SIGNAL] = "on_signal",
    [KF_READY] = "ready",
};

const char *kf_hook_kind_name(enum kf_hook_kind k)
{
    return (unsigned)k < KF_NKINDS ? hook_names[k] : "?";
}

static struct kf_hook *add_hook(mrb_state *mrb, mrb_value self, enum kf_hook_kind kind, mrb_value proc)
{
    struct kf_container *ct = spec_of(mrb, self);
    if (ct->in_app)
        mrb_raisef(mrb, E_ARGUMENT_ERROR,
                   "%s: hooks are not available in an app's container (kago serve manages its instances)",
                   hook_names[kind]);
    if (mrb_nil_p(proc))
        mrb_raisef(mrb, E_ARGUMENT_ERROR, "%s: a block is required", hook_names[kind]);
    mrb_ary_push(mrb, mrb_iv_get(mrb, self, mrb_intern_lit(mrb, "@procs")), proc);
    struct kf_hook *h = realloc(ct->hooks, (ct->nhooks + 1) * sizeof *h);
    if (!h)
        abort();
    ct->hooks = h;
    h = &ct->hooks[ct->nhooks++];
    memset(h, 0, sizeof *h);
    h->kind = kind;
    h->proc = proc;
    return h;
}

static mrb_value spec_hook(mrb_state *mrb, mrb_value self)
{
    const char *kind;
    mrb_value proc;
    mrb_get_args(mrb, "zo", &kind, &proc);
    for (int k = 0; k < KF_NKINDS; k++) {
        if (!strcmp(kind, hook_names[k])) {
            struct kf_hook *h = add_hook(mrb, self, k, proc);
            h->desc = dup_or_raise(mrb, kind);
            return self;
        }
    }
    mrb_raisef(mrb, E_ARGUMENT_ERROR, "unknown hook %s", kind);
    return self;
}

static mrb_value spec_timer(mrb_state *mrb, mrb_value self)
{
    const char *kind;
    mrb_int ms;
    mrb_value orig, proc;
    mrb_get_args(mrb, "zioo", &kind, &ms, &orig, &proc);
    mrb_value shown = mrb_string_p(orig) ? orig : mrb_inspect(mrb, orig);
    mrb_value desc = mrb_format(mrb, "%s(%s)", kind, RSTRING_CSTR(mrb, shown));
    struct kf_hook *h = add_hook(mrb, self, !strcmp(kind, "every") ? KF_EVERY : KF_AFTER, proc);
    h->ms = (uint64_t)ms;
    h->desc = dup_or_raise(mrb, RSTRING_CSTR(mrb, desc));
    return self;
}

int kf_signal_from_name(const char *name)
{
    if (isdigit((unsigned char)name[0])) {
        int n = atoi(name);
        return n > 0 && n < NSIG ? n : -1;
    }
    if (!strncasecmp(name, "SIG", 3))
        name += 3;
    for (int s = 1; s < SIGRTMIN; s++) {
        const char *abbrev = sigabbrev_np(s);
        if (abbrev && !strcasecmp(name, abbrev))
            return s;
    }
    return -1;
}

static mrb_value spec_signal(mrb_state *mrb, mrb_value self)
{
    const char *name;
    mrb_value proc;
    mrb_get_args(mrb, "zo", &name, &proc);
    int sig = kf_signal_from_name(name);
    if (sig < 0)
        mrb_raisef(mrb, E_ARGUMENT_ERROR, "on_signal: unknown signal \"%s\"", name);
    switch (sig) {
    case SIGTERM:
    case SIGINT:
    case SIGHUP:
    case SIGKILL:
    case SIGSTOP:
    case SIGCHLD:
    case SIGSEGV:
    case SIGBUS:
    case SIGFPE:
    case SIGILL:
    case SIGPIPE:
        mrb_raisef(mrb, E_ARGUMENT_ERROR,
                   "on_signal: SIG%s is the supervisor's own (TERM/INT stop, HUP reloads); use USR1, USR2, "
                   "WINCH, ...",
                   sigabbrev_np(sig));
    default:
        break;
    }
    struct kf_hook *h = add_hook(mrb, self, KF_SIGNAL, proc);
    h->sig = sig;
    mrb_value desc = mrb_format(mrb, "on_signal(%s)", sigabbrev_np(sig));
    h->desc = dup_or_raise(mrb, RSTRING_CSTR(mrb, desc));
    return self;
}

static mrb_value spec_ready(mrb_state *mrb, mrb_value self)
{
    mrb_int port, ms;
    mrb_value proc;
    mrb_get_args(mrb, "iio", &port, &ms, &proc);
    if (port < 1 || port > 65535)
        mrb_raisef(mrb, E_ARGUMENT_ERROR, "ready: port %d is not a TCP port", (int)port);
    struct kf_container *ct = spec_of(mrb, self);
    for (size_t i = 0; i < ct->nhooks; i++)
        if (ct->hooks[i].kind == KF_READY)
            mrb_raise(mrb, E_ARGUMENT_ERROR, "ready: given twice");
    struct kf_hook *h = add_hook(mrb, self, KF_READY, proc);
    h->port = (uint16_t)port;
    h->ms = (uint64_t)ms;
    mrb_value desc = mrb_format(mrb, "ready(port %d)", (int)port);
    h->desc = dup_or_raise(mrb, RSTRING_CSTR(mrb, desc));
    return self;
}

/* --- Kago::AppSpec ---------------------------------------------------------------------------- */

static mrb_value app_name(mrb_state *mrb, mrb_value self)
{
    return mrb_str_new_cstr(mrb, app_of(mrb, self)->app.name);
}

static mrb_value app_hosts(mrb_state *mrb, mrb_value self)
{
    mrb_value ary;
    mrb_get_args(mrb, "A", &ary);
    struct kago_app *a = &app_of(mrb, self)->app;
    size_t n = 0;
    while (a->hosts && a->hosts[n])
        n++;
    for (mrb_int i = 0; i < RARRAY_LEN(ary); i++) {
        const char *h = RSTRING_CSTR(mrb, mrb_ary_ref(mrb, ary, i));
        if (!*h || strpbrk(h, " /\t\r\n:"))
            mrb_raisef(mrb, E_ARGUMENT_ERROR, "hosts: \"%s\" is not a host name", h);
        const char *why = kago_app_host_invalid(h);
        if (why)
            mrb_raisef(mrb, E_ARGUMENT_ERROR, "hosts: \"%s\": %s", h, why);
    }
    char **nh = realloc(a->hosts, (n + (size_t)RARRAY_LEN(ary) + 1) * sizeof *nh);
    if (!nh)
        abort();
    for (mrb_int i = 0; i < RARRAY_LEN(ary); i++) {
        char *h = dup_or_raise(mrb, RSTRING_CSTR(mrb, mrb_ary_ref(mrb, ary, i)));
        for (char *p = h; *p; p++)
            *p = (char)tolower((unsigned char)*p);
        nh[n++] = h;
    }
    nh[n] = NULL;
    a->hosts = nh;
    return self;
}

static mrb_value app_spec(mrb_state *mrb, mrb_value self)
{
    return app_of(mrb, self)->ct.obj;
}

static mrb_value app_port(mrb_state *mrb, mrb_value self)
{
    mrb_int port;
    mrb_get_args(mrb, "i", &port);
    if (port < 1 || port > 65535)
        mrb_raisef(mrb, E_ARGUMENT_ERROR, "port: %d is not a TCP port", (int)port);
    app_of(mrb, self)->app.port = (uint16_t)port;
    app_of(mrb, self)->port_set = true;
    return self;
}

static mrb_value app_ms_field(mrb_state *mrb, mrb_value self)
{
    const char *f;
    mrb_int ms;
    mrb_get_args(mrb, "zi", &f, &ms);
    struct kago_app *a = &app_of(mrb, self)->app;
    if (!strcmp(f, "lifetime"))
        a->lifetime_ms = (uint64_t)ms;
    else if (!strcmp(f, "idle_timeout"))
        a->idle_timeout_ms = (uint64_t)ms;
    else if (!strcmp(f, "start_timeout"))
        a->start_timeout_ms = (uint64_t)ms;
    else if (!strcmp(f, "stop_grace"))
        a->stop_grace_ms = (uint64_t)ms;
    else if (!strcmp(f, "max_backoff") && ms < 100)
        mrb_raisef(mrb, E_ARGUMENT_ERROR,
                   "max_backoff: %d ms is too short (at least 100ms: it paces the starts of a crashing app)",
                   (int)ms);
    else if (!strcmp(f, "max_backoff"))
        a->max_backoff_ms = (uint64_t)ms;
    return self;
}

static mrb_value app_uint_field(mrb_state *mrb, mrb_value self)
{
    const char *f;
    mrb_int n;
    mrb_get_args(mrb, "zi", &f, &n);
    if (n > 1000000)
        mrb_raisef(mrb, E_ARGUMENT_ERROR, "%s: %d is too large", f, (int)(n > INT32_MAX ? INT32_MAX : n));
    struct kago_app *a = &app_of(mrb, self)->app;
    if (!strcmp(f, "min_instances"))
        a->min_instances = (unsigned)n;
    else if (!strcmp(f, "max_instances"))
        a->max_instances = (unsigned)n;
    else if (!strcmp(f, "concurrency"))
        a->concurrency = (unsigned)n;
    else if (!strcmp(f, "max_pending"))
        a->max_pending = (unsigned)n;
    if (!strcmp(f, "concurrency") && n == 0)
        mrb_raise(mrb, E_ARGUMENT_ERROR, "concurrency: must be at least 1");
    if (!strcmp(f, "max_pending") && n == 0) /* (the first request is held while its instance starts) */
        mrb_raise(mrb, E_ARGUMENT_ERROR,
                  "max_pending: must be at least 1 (0 refused every request: none started it)");
    return self;
}

static mrb_value app_max_body(mrb_state *mrb, mrb_value self)
{
    const char *v;
    mrb_get_args(mrb, "z", &v);
    int64_t b;
    struct kago_error *err = NULL;
    if (!strcmp(v, "0"))
        b = 0;
    else if (kago_parse_size(v, &b, &err) < 0)
        kf_raise_error(mrb, "max_body", err);
    app_of(mrb, self)->app.max_body = b < 0 ? 0 : (uint64_t)b;
    return self;
}

static mrb_value app_bool_field(mrb_state *mrb, mrb_value self)
{
    const char *f;
    mrb_bool v;
    mrb_get_args(mrb, "zb", &f, &v);
    struct kago_app *a = &app_of(mrb, self)->app;
    if (!strcmp(f, "socket_activation"))
        a->socket_activation = v;
    else if (!strcmp(f, "checkpoint_after_ready"))
        a->checkpoint_after_ready = v;
    else if (!strcmp(f, "checkpoint_at_listen"))
        a->checkpoint_at_listen = v;
    else if (!strcmp(f, "https_redirect"))
        a->https_redirect = v;
    else if (!strcmp(f, "default"))
        a->default_app = v;
    return self;
}

static mrb_value app_idle(mrb_state *mrb, mrb_value self)
{
    const char *action;
    mrb_int ms;
    mrb_get_args(mrb, "zi", &action, &ms);
    struct kago_app *a = &app_of(mrb, self)->app;
    if (!strcmp(action, "stop")) {
        if (ms)
            mrb_raise(mrb, E_ARGUMENT_ERROR, "idle: for: only applies to :freeze");
        a->idle_action = KAGO_IDLE_STOP;
    } else if (!strcmp(action, "freeze")) {
        a->idle_action = KAGO_IDLE_FREEZE;
        a->freeze_for_ms = (uint64_t)ms;
    } else {
        mrb_raisef(mrb, E_ARGUMENT_ERROR, "idle: unknown action :%s (:stop or :freeze)", action);
    }
    return self;
}

/* log size: "10M", keep: 3 (size NULL or keep -1: unchanged) */
static mrb_value app_log(mrb_state *mrb, mrb_value self)
{
    const char *size;
    mrb_int keep;
    mrb_get_args(mrb, "z!i", &size, &keep);
    struct kago_app *a = &app_of(mrb, self)->app;
    if (size) {
        int64_t b;
        struct kago_error *err = NULL;
        if (kago_parse_size(size, &b, &err) < 0)
            kf_raise_error(mrb, "log size", err);
        if (b < 0)
            mrb_raisef(mrb, E_ARGUMENT_ERROR, "log size: \"%s\": give a size like \"10M\"", size);
        if (b < 4096)
            mrb_raisef(mrb, E_ARGUMENT_ERROR, "log size: \"%s\" is too small (at least 4K)", size);
        a->log_size = (uint64_t)b;
    }
    if (keep > 100)
        mrb_raisef(mrb, E_ARGUMENT_ERROR, "log keep: %d is too many files (at most 100)", (int)keep);
    if (keep >= 1)
        a->log_keep = (unsigned)keep;
    return self;
}

/* tls cert: FILE, key: FILE (loaded and checked by serve, which knows the Kagofile's directory) */
static mrb_value app_tls(mrb_state *mrb, mrb_value self)
{
    const char *cert, *key;
    mrb_get_args(mrb, "zz", &cert, &key);
    if (!*cert || !*key)
        mrb_raise(mrb, E_ARGUMENT_ERROR, "tls: give both files: a.tls cert: \"site.pem\", key: \"site.key\"");
    struct kago_app *a = &app_of(mrb, self)->app;
    char *c = dup_or_raise(mrb, cert), *k = dup_or_raise(mrb, key);
    free(a->tls_cert);
    free(a->tls_key);
    a->tls_cert = c;
    a->tls_key = k;
    return self;
}

/* scale_up: _scale_up_range("cpu"|"memory", LO, HI, STEP|nil) */
static int64_t scale_value(mrb_state *mrb, const char *kind, const char *what, const char *v)
{
    int64_t n;
    struct kago_error *err = NULL;
    char label[48];
    snprintf(label, sizeof label, "scale_up %s%s", kind, what);
    if ((!strcmp(kind, "cpu") ? kago_parse_cpu(v, &n, &err) : kago_parse_size(v, &n, &err)) < 0)
        kf_raise_error(mrb, label, err);
    if (n <= 0)
        mrb_raisef(mrb, E_ARGUMENT_ERROR, "%s: \"%s\": give a bound like %s", label, v,
                   !strcmp(kind, "cpu") ? "\"200%\"" : "\"512M\"");
    return n;
}

static mrb_value app_scale_up_range(mrb_state *mrb, mrb_value self)
{
    const char *kind, *lo_s, *hi_s, *step_s;
    mrb_get_args(mrb, "zzzz!", &kind, &lo_s, &hi_s, &step_s);
    bool cpu = !strcmp(kind, "cpu");
    int64_t lo = scale_value(mrb, kind, " range", lo_s), hi = scale_value(mrb, kind, " range", hi_s);
    if (lo > hi)
        mrb_raisef(mrb, E_ARGUMENT_ERROR, "scale_up %s: \"%s\"..\"%s\": the range goes down (low..high)",
                   kind, lo_s, hi_s);
    if (!cpu && lo < (4ll << 20))
        mrb_raisef(mrb, E_ARGUMENT_ERROR, "scale_up memory: \"%s\" is too little (at least 4M)", lo_s);
    int64_t step = step_s ? scale_value(mrb, kind, "_step", step_s) : (hi - lo) / 4;
    if (!cpu)
        step = step / 4096 * 4096;
    if (step < (cpu ? 1000 : 4096))
        step = cpu ? 1000 : 4096; /* 1% or a page */
    struct kago_scale_up *su = &app_of(mrb, self)->app.scale_up;
    if (cpu) {
        su->cpu_min = lo, su->cpu_max = hi, su->cpu_step = step;
    } else {
        su->memory_min = lo, su->memory_max = hi, su->memory_step = step;
    }
    return self;
}

/* scale_up's policy knobs: _scale_up_knob(NAME, N) (durations in ms, shares in percent, a bool as 0/1) */
static mrb_value app_scale_up_knob(mrb_state *mrb, mrb_value self)
{
    const char *f;
    mrb_int n;
    mrb_get_args(mrb, "zi", &f, &n);
    struct kago_scale_up *su = &app_of(mrb, self)->app.scale_up;
    bool ms = !strcmp(f, "window") || !strcmp(f, "idle");
    if (ms && n < 100)
        mrb_raisef(mrb, E_ARGUMENT_ERROR, "scale_up %s: %d ms is too short (at least 100ms)", f, (int)n);
    if (!ms && strcmp(f, "scale_out_at_top") && (n < 1 || n > 100))
        mrb_raisef(mrb, E_ARGUMENT_ERROR, "scale_up %s: %d%% is not a share between 1%% and 100%%", f,
                   (int)n);
    if (!strcmp(f, "window"))
        su->window_ms = (uint64_t)n;
    else if (!strcmp(f, "idle"))
        su->idle_ms = (uint64_t)n;
    else if (!strcmp(f, "throttled"))
        su->throttled_pct = (unsigned)n;
    else if (!strcmp(f, "memory_high"))
        su->memory_pct = (unsigned)n;
    else if (!strcmp(f, "scale_out_at_top"))
        su->scale_out_at_top = n != 0;
    return self;
}

/* hsts "max-age=63072000; includeSubDomains": the header's value, sent as it is */
static mrb_value app_hsts(mrb_state *mrb, mrb_value self)
{
    const char *v;
    mrb_get_args(mrb, "z", &v);
    for (const char *p = v; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            mrb_raise(mrb, E_ARGUMENT_ERROR, "hsts: a control character in the header value");
    if (!*v)
        mrb_raise(mrb, E_ARGUMENT_ERROR, "hsts: give the header's value, e.g. \"max-age=63072000\"");
    struct kago_app *a = &app_of(mrb, self)->app;
    char *h = dup_or_raise(mrb, v);
    free(a->hsts);
    a->hsts = h;
    return self;
}

/* --- definitions ------------------------------------------------------------------------------ */

struct prim {
    const char *name;
    mrb_func_t fn;
    mrb_aspec args;
};

static void define_all(mrb_state *mrb, struct RClass *cls, const struct prim *p, bool module_fn)
{
    for (; p->name; p++) {
        if (module_fn)
            mrb_define_module_function(mrb, cls, p->name, p->fn, p->args);
        else
            mrb_define_method(mrb, cls, p->name, p->fn, p->args);
    }
}

static mrb_value kago_params(mrb_state *mrb, mrb_value self)
{
    return mrb_iv_get(mrb, self, mrb_intern_lit(mrb, "@params"));
}

void kf_dsl_define(mrb_state *mrb)
{
    struct RClass *kago = mrb_define_module(mrb, "Kago");
    static const struct prim kago_prims[] = {
        {"_new_container", kago_new_container, MRB_ARGS_REQ(1)},
        {"_finish", kago_finish, MRB_ARGS_REQ(2)},
        {"_new_app", kago_new_app, MRB_ARGS_REQ(1)},
        {"_finish_app", kago_finish_app, MRB_ARGS_REQ(2)},
        {"_duration", kago_duration, MRB_ARGS_REQ(2)},
        {"_params", kago_params, MRB_ARGS_NONE()},
        {NULL, NULL, 0},
    };
    define_all(mrb, kago, kago_prims, true);

    struct RClass *spec = mrb_define_class_under(mrb, kago, "Spec", mrb->object_class);
    MRB_SET_INSTANCE_TT(spec, MRB_TT_DATA);
    mrb_undef_class_method(mrb, spec, "new");
    static const struct prim spec_prims[] = {
        {"_name", spec_name, MRB_ARGS_NONE()},
        {"_get_rootfs", spec_get_rootfs, MRB_ARGS_NONE()},
        {"_str", spec_str, MRB_ARGS_REQ(2)},
        {"_bool", spec_bool, MRB_ARGS_REQ(2)},
        {"_image", spec_image, MRB_ARGS_REQ(1)},
        {"_entrypoint", spec_entrypoint, MRB_ARGS_REQ(1)},
        {"_overlay_size", spec_overlay_size, MRB_ARGS_REQ(1)},
        {"_argv", spec_argv, MRB_ARGS_REQ(1)},
        {"_env", spec_env, MRB_ARGS_REQ(1)},
        {"_env_clear", spec_env_clear, MRB_ARGS_NONE()},
        {"_user", spec_user, MRB_ARGS_REQ(1)},
        {"_uid_gid", spec_uid_gid, MRB_ARGS_REQ(2)},
        {"_ns", spec_ns, MRB_ARGS_REQ(1)},
        {"_join", spec_join, MRB_ARGS_REQ(2)},
        {"_idmap", spec_idmap, MRB_ARGS_REQ(2)},
        {"_bind", spec_bind, MRB_ARGS_REQ(3)},
        {"_tmpfs", spec_tmpfs, MRB_ARGS_REQ(3)},
        {"_paths", spec_paths, MRB_ARGS_REQ(3)},
        {"_limit", spec_limit, MRB_ARGS_REQ(2)},
        {"_rlimit", spec_rlimit, MRB_ARGS_REQ(3)},
        {"_caps", spec_caps, MRB_ARGS_REQ(2)},
        {"_seccomp", spec_seccomp, MRB_ARGS_REQ(3)},
        {"_scmp_rule", spec_scmp_rule, MRB_ARGS_REQ(3)},
        {"_listen_port", spec_listen_port, MRB_ARGS_REQ(1)},
        {"_stop_grace", spec_stop_grace, MRB_ARGS_REQ(1)},
        {"_hook", spec_hook, MRB_ARGS_REQ(2)},
        {"_timer", spec_timer, MRB_ARGS_REQ(4)},
        {"_signal", spec_signal, MRB_ARGS_REQ(2)},
        {"_ready", spec_ready, MRB_ARGS_REQ(3)},
        {NULL, NULL, 0},
    };
    define_all(mrb, spec, spec_prims, false);

    struct RClass *app = mrb_define_class_under(mrb, kago, "AppSpec", mrb->object_class);
    MRB_SET_INSTANCE_TT(app, MRB_TT_DATA);
    mrb_undef_class_method(mrb, app, "new");
    static const struct prim app_prims[] = {
        {"_name", app_name, MRB_ARGS_NONE()},
        {"_hosts", app_hosts, MRB_ARGS_REQ(1)},
        {"_spec", app_spec, MRB_ARGS_NONE()},
        {"_port", app_port, MRB_ARGS_REQ(1)},
        {"_ms_field", app_ms_field, MRB_ARGS_REQ(2)},
        {"_uint_field", app_uint_field, MRB_ARGS_REQ(2)},
        {"_max_body", app_max_body, MRB_ARGS_REQ(1)},
        {"_bool_field", app_bool_field, MRB_ARGS_REQ(2)},
        {"_idle", app_idle, MRB_ARGS_REQ(2)},
        {"_log", app_log, MRB_ARGS_REQ(2)},
        {"_tls", app_tls, MRB_ARGS_REQ(2)},
        {"_hsts", app_hsts, MRB_ARGS_REQ(1)},
        {"_scale_up_range", app_scale_up_range, MRB_ARGS_REQ(4)},
        {"_scale_up_knob", app_scale_up_knob, MRB_ARGS_REQ(2)},
        {NULL, NULL, 0},
    };
    define_all(mrb, app, app_prims, false);
}
