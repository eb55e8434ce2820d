/* Kago::Container: what a hook receives. It names its container and looks it up in the supervisor on
 * every call, so a Ruby object kept past the container's end raises instead of touching freed memory. */
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include <mruby.h>
#include <mruby/array.h>
#include <mruby/class.h>
#include <mruby/data.h>
#include <mruby/error.h>
#include <mruby/hash.h>
#include <mruby/string.h>
#include <mruby/variable.h>

#include "supervisor.h"

struct ctref {
    struct sup *sup;
    char name[];
};

static void ctref_free(mrb_state *mrb, void *p)
{
    free(p);
}
static const struct mrb_data_type ctref_type = {"Kago::Container", ctref_free};

mrb_value kf_ctobj_new(mrb_state *mrb, struct sct *ct)
{
    struct ctref *r = malloc(sizeof *r + strlen(ct->name) + 1);
    if (!r)
        abort();
    r->sup = ct->sup;
    strcpy(r->name, ct->name);
    struct RClass *cls = mrb_class_get_under(mrb, mrb_module_get(mrb, "Kago"), "Container");
    return mrb_obj_value(mrb_data_object_alloc(mrb, cls, r, &ctref_type));
}

static struct sct *lookup(mrb_state *mrb, mrb_value self, bool must_run)
{
    struct ctref *r = mrb_data_get_ptr(mrb, self, &ctref_type);
    struct sct *ct = r ? sup_find(r->sup, r->name) : NULL;
    if (!ct || !ct->c)
        mrb_raisef(mrb, E_RUNTIME_ERROR, "container %s: not supervised here", r ? r->name : "?");
    if (must_run && !ct->running)
        mrb_raisef(mrb, E_RUNTIME_ERROR, "container %s: has ended", ct->name);
    return ct;
}

/* Raises a RuntimeError with err's message (freed first: a raise does not come back). */
static void raise_kago(mrb_state *mrb, struct kago_error *err)
{
    mrb_value msg = mrb_str_new_cstr(mrb, err && err->msg ? err->msg : "failed");
    kago_error_free(err);
    mrb_exc_raise(mrb, mrb_exc_new_str(mrb, E_RUNTIME_ERROR, msg));
}

static mrb_value ct_name(mrb_state *mrb, mrb_value self)
{
    struct ctref *r = mrb_data_get_ptr(mrb, self, &ctref_type);
    return mrb_str_new_cstr(mrb, r ? r->name : "");
}

static mrb_value ct_pid(mrb_state *mrb, mrb_value self)
{
    struct sct *ct = lookup(mrb, self, false);
    return mrb_int_value(mrb, kago_container_pid(ct->c));
}

static mrb_value ct_running(mrb_state *mrb, mrb_value self)
{
    struct ctref *r = mrb_data_get_ptr(mrb, self, &ctref_type);
    struct sct *ct = r ? sup_find(r->sup, r->name) : NULL;
    return mrb_bool_value(ct && ct->running);
}

static mrb_value ct_status(mrb_state *mrb, mrb_value self)
{
    struct sct *ct = lookup(mrb, self, false);
    return mrb_str_new_cstr(mrb, kago_status_name(kago_container_status(ct->c)));
}

#define HSET(h, k, v) mrb_hash_set(mrb, h, mrb_symbol_value(mrb_intern_lit(mrb, k)), v)

static mrb_value ct_stats(mrb_state *mrb, mrb_value self)
{
    struct sct *ct = lookup(mrb, self, false);
    struct kago_stats st;
    struct kago_error *err = NULL;
    if (kago_container_stats(ct->c, &st, &err) < 0)
        raise_kago(mrb, err);
    mrb_value h = mrb_hash_new(mrb);
    HSET(h, "cpu_usage_us", mrb_int_value(mrb, (mrb_int)st.cpu_usage_us));
    HSET(h, "memory_current", mrb_int_value(mrb, st.memory_current));
    HSET(h, "memory_peak", mrb_int_value(mrb, st.memory_peak));
    HSET(h, "pids_current", mrb_int_value(mrb, st.pids_current));
    HSET(h, "oom_kills", mrb_int_value(mrb, st.oom_kills));
    return h;
}

static mrb_value limit_value(mrb_state *mrb, int64_t v)
{
    if (v == KAGO_UNSET)
        return mrb_nil_value();
    if (v == KAGO_NOLIMIT)
        return mrb_str_new_lit(mrb, "max");
    return mrb_int_value(mrb, v);
}

/* The limits as last applied (the Kagofile's, then every update). */
static mrb_value ct_limits(mrb_state *mrb, mrb_value self)
{
    struct sct *ct = lookup(mrb, self, false);
    const struct kago_limits *l = &kago_container_spec(ct->c)->limits;
    mrb_value h = mrb_hash_new(mrb);
    HSET(h, "cpu_quota_us", limit_value(mrb, l->cpu_quota_us));
    HSET(h, "cpu_period_us", limit_value(mrb, l->cpu_period_us));
    HSET(h, "cpu_weight", limit_value(mrb, l->cpu_weight));
    HSET(h, "memory", limit_value(mrb, l->memory));
    HSET(h, "pids", limit_value(mrb, l->pids));
    HSET(h, "cpuset", l->cpuset ? mrb_str_new_cstr(mrb, l->cpuset) : mrb_nil_value());
    return h;
}

/* _update({"cpu" => "20%", "cpu.cfs_quota_us" => "30000"}): keys and values are Strings (prelude). */
static mrb_value ct_update(mrb_state *mrb, mrb_value self)
{
    mrb_value h;
    mrb_get_args(mrb, "H", &h);
    struct sct *ct = lookup(mrb, self, true);
    struct kago_limits l;
    kf_limits_init(&l);
    mrb_value keys = mrb_hash_keys(mrb, h);
    struct kago_error *err = NULL;
    char said[256] = ""; /* what changed, for the log: "cpu 20%, memory 128M" */
    size_t n = 0;
    for (mrb_int i = 0; i < RARRAY_LEN(keys); i++) {
        mrb_value k = mrb_ary_ref(mrb, keys, i), v = mrb_hash_get(mrb, h, k);
        if (!mrb_string_p(k) || !mrb_string_p(v))
            continue;
        if (kf_parse_limit(&l, RSTRING_CSTR(mrb, k), RSTRING_CSTR(mrb, v), &err) < 0) {
            kf_limits_free(&l);
            kf_raise_error(mrb, "update", err);
        }
        if (n < sizeof said)
            n += (size_t)snprintf(said + n, sizeof said - n, "%s%s %s", n ? ", " : "", RSTRING_CSTR(mrb, k),
                                  RSTRING_CSTR(mrb, v));
    }
    int r = kago_container_update(ct->c, &l, &err);
    kf_limits_free(&l);
    if (r < 0)
        raise_kago(mrb, err);
    sup_log(ct->sup, "%s: limits updated live: %s", ct->name, said);
    return mrb_true_value();
}

static mrb_value ct_kill(mrb_state *mrb, mrb_value self)
{
    const char *name;
    mrb_bool all = FALSE;
    mrb_get_args(mrb, "z|b", &name, &all);
    struct sct *ct = lookup(mrb, self, true);
    int sig = kf_signal_from_name(name);
    if (sig < 0)
        mrb_raisef(mrb, E_ARGUMENT_ERROR, "kill: unknown signal \"%s\"", name);
    struct kago_error *err = NULL;
    if (kago_container_kill(ct->c, sig, all, &err) < 0)
        raise_kago(mrb, err);
    if (sig == SIGKILL || sig == SIGTERM || sig == SIGINT || sig == SIGQUIT)
        ct->stopping = true; /* asked for: its end is not a failure */
    return mrb_true_value();
}

static mrb_value ct_stop(mrb_state *mrb, mrb_value self)
{
    mrb_int grace;
    mrb_get_args(mrb, "i", &grace);
    struct sct *ct = lookup(mrb, self, false);
    if (!ct->running)
        return mrb_false_value();
    struct kago_error *err = NULL;
    if (sup_stop(ct, grace, &err) < 0)
        raise_kago(mrb, err);
    return mrb_true_value();
}

static mrb_value do_pause(mrb_state *mrb, mrb_value self, bool pause)
{
    struct sct *ct = lookup(mrb, self, true);
    struct kago_error *err = NULL;
    if (kago_container_pause(ct->c, pause, &err) < 0)
        raise_kago(mrb, err);
    return mrb_true_value();
}

static mrb_value ct_pause(mrb_state *mrb, mrb_value self)
{
    return do_pause(mrb, self, true);
}

static mrb_value ct_resume(mrb_state *mrb, mrb_value self)
{
    return do_pause(mrb, self, false);
}

void kf_ctobj_define(mrb_state *mrb)
{
    struct RClass *kago = mrb_define_module(mrb, "Kago");
    struct RClass *cls = mrb_define_class_under(mrb, kago, "Container", mrb->object_class);
    MRB_SET_INSTANCE_TT(cls, MRB_TT_DATA);
    mrb_undef_class_method(mrb, cls, "new");
    mrb_define_method(mrb, cls, "name", ct_name, MRB_ARGS_NONE());
    mrb_define_method(mrb, cls, "pid", ct_pid, MRB_ARGS_NONE());
    mrb_define_method(mrb, cls, "running?", ct_running, MRB_ARGS_NONE());
    mrb_define_method(mrb, cls, "status", ct_status, MRB_ARGS_NONE());
    mrb_define_method(mrb, cls, "stats", ct_stats, MRB_ARGS_NONE());
    mrb_define_method(mrb, cls, "limits", ct_limits, MRB_ARGS_NONE());
    mrb_define_method(mrb, cls, "_update", ct_update, MRB_ARGS_REQ(1));
    mrb_define_method(mrb, cls, "_kill", ct_kill, MRB_ARGS_ARG(1, 1));
    mrb_define_method(mrb, cls, "_stop", ct_stop, MRB_ARGS_REQ(1));
    mrb_define_method(mrb, cls, "pause", ct_pause, MRB_ARGS_NONE());
    mrb_define_method(mrb, cls, "resume", ct_resume, MRB_ARGS_NONE());
}
