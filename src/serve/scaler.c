/* kago serve — scale up's shell: samples the cgroups of the instances of apps with a.scale_up from the
 * tick (one app at a time, every kago__scaleup_period_ms), feeds the policy (scaleup.c), and applies its
 * steps live with kago_container_update within --budget-cpu / --budget-memory. When the budget is short
 * the busier instance wins: a CPU raise refused for the budget takes a step from the least busy instance
 * above the bottom of its range, if that one is clearly less busy. Every step and refusal is logged. */
#include <stdio.h>
#include <string.h>

#include "buf.h"
#include "scaleup.h"
#include "serve_int.h"
#include "util.h"

/* The CPU busy share by which a raise wins budget from another instance. */
#define STEAL_MARGIN 0.1

static const struct kago_scale_up *cfg_of(const struct instance *inst)
{
    return &inst->app->app.scale_up;
}

/* Limits the budget counts for inst: its own once sampled, else the bottom of its range. */
static void counted(const struct instance *inst, int64_t *cpu, int64_t *mem)
{
    const struct kago_scale_up *cfg = cfg_of(inst);
    *cpu = !cfg->cpu_max ? 0 : inst->su.started ? inst->su.cpu : cfg->cpu_min;
    *mem = !cfg->memory_max ? 0 : inst->su.started ? inst->su.memory : cfg->memory_min;
}

/* Sums of the limits of every instance of a scale-up app (only the ticking apps have instances). */
void kago__scaler_totals(const struct server *srv, int64_t *cpu, int64_t *mem)
{
    *cpu = *mem = 0;
    for (const struct app_rt *a = srv->ticking; a; a = a->tick_next) {
        if (!kago__scaleup_on(&a->app.scale_up))
            continue;
        for (const struct pool_inst *pi = a->pool.insts; pi; pi = pi->next) {
            const struct instance *inst = pi->data;
            if (!inst || !inst->c)
                continue;
            int64_t c, m;
            counted(inst, &c, &m);
            *cpu += c;
            *mem += m;
        }
    }
}

/* The sums, taken once per tick when a raise first asks, then kept up to date by apply for the rest of
 * that tick. */
static void budget_used(struct server *srv, uint64_t now, int64_t *cpu, int64_t *mem)
{
    if (srv->su_sum_at != now) {
        kago__scaler_totals(srv, &srv->su_cpu_sum, &srv->su_mem_sum);
        srv->su_sum_at = now;
    }
    *cpu = srv->su_cpu_sum;
    *mem = srv->su_mem_sum;
}

static int apply(struct instance *inst, int64_t cpu, int64_t mem, uint64_t now)
{
    struct kago_limits lim = KAGO_LIMITS_UNSET;
    if (cpu != inst->su.cpu)
        lim.cpu_quota_us = cpu;
    if (mem != inst->su.memory) {
        int64_t swap = kago_container_spec(inst->c)->limits.memory_swap;
        lim.memory = mem;
        lim.memory_swap = swap > 0 && swap < mem ? mem : swap;
    }
    struct kago_error *err = NULL;
    int r = kago_container_update(inst->c, &lim, &err);
    if (r < 0) { /* logged once a minute at most; a step down is tried again after another idle period */
        if (!inst->su.warned_at || now - inst->su.warned_at >= 60000) {
            kago__ilog(inst, SLOG_WARN, "scale up: could not set cpu %lld%%, memory %lld MiB: %s",
                       (long long)(cpu / 1000), (long long)(mem >> 20), err->msg);
            inst->su.warned_at = now;
        }
        kago_error_free(err);
        inst->su.cpu_calm_since = inst->su.mem_calm_since = now;
    } else {
        struct server *srv = inst->app->srv;
        if (srv->su_sum_at == now) { /* the tick's sums stay right */
            int64_t c0, m0;
            counted(inst, &c0, &m0);
            srv->su_cpu_sum += (cfg_of(inst)->cpu_max ? cpu : 0) - c0;
            srv->su_mem_sum += (cfg_of(inst)->memory_max ? mem : 0) - m0;
        }
        kago__scaleup_applied(&inst->su, cpu, mem, now);
    }
    return r;
}

/* The least busy instance (other than not) whose CPU can go a step down, clearly less busy than busy. */
static struct instance *cpu_victim(struct server *srv, const struct instance * not, double busy)
{
    struct instance *best = NULL;
    for (struct app_rt *a = srv->ticking; a; a = a->tick_next) {
        const struct kago_scale_up *cfg = &a->app.scale_up;
        if (!cfg->cpu_max)
            continue;
        for (struct pool_inst *pi = a->pool.insts; pi; pi = pi->next) {
            struct instance *inst = pi->data;
            if (!inst || inst == not || !inst->c || !inst->su.started || inst->su.cpu <= cfg->cpu_min ||
                inst->su.busy + STEAL_MARGIN > busy)
                continue;
            if (!best || inst->su.busy < best->su.busy)
                best = inst;
        }
    }
    return best;
}

/* The CPU raise w asks for, within the budget; returns the CPU limit granted. */
static int64_t grant_cpu(struct instance *inst, int64_t want, uint64_t now)
{
    struct server *srv = inst->app->srv;
    int64_t budget = (int64_t)srv->opts.budget_cpu_us, cpu, mem;
    if (!budget)
        return want;
    budget_used(srv, now, &cpu, &mem);
    int64_t room = budget - cpu;
    if (room < want - inst->su.cpu && srv->su_victimless_at != now) {
        struct instance *v = cpu_victim(srv, inst, inst->su.busy);
        if (!v) /* one fruitless walk over the instances per tick at most */
            srv->su_victimless_at = now;
        if (v) {
            int64_t vcpu = v->su.cpu - cfg_of(v)->cpu_step;
            if (vcpu < cfg_of(v)->cpu_min)
                vcpu = cfg_of(v)->cpu_min;
            int64_t before = v->su.cpu;
            if (apply(v, vcpu, v->su.memory, now) == 0) {
                room += before - vcpu;
                v->app->su_lowers++;
                kago__ilog(
                    v, SLOG_INFO,
                    "scale up: budget short (--budget-cpu %lld%%): cpu %lld%% -> %lld%% (busy %.0f%%) for "
                    "%s (busy %.0f%%)",
                    (long long)(budget / 1000), (long long)(before / 1000), (long long)(vcpu / 1000),
                    v->su.busy * 100, inst->name, inst->su.busy * 100);
            }
        }
    }
    int64_t got = inst->su.cpu + (room > 0 ? room : 0);
    got = got < want ? got : want;
    if (got < inst->su.cpu + 1000) { /* less than 1%: refused */
        if (!inst->su.cpu_top_denied)
            kago__ilog(inst, SLOG_INFO,
                       "scale up: cpu stays at %lld%%: --budget-cpu %lld%% is used up (%lld%% given out)",
                       (long long)(inst->su.cpu / 1000), (long long)(budget / 1000),
                       (long long)((budget - room) / 1000));
        inst->su.cpu_top_denied = true;
        inst->app->su_denied++;
        return inst->su.cpu;
    }
    inst->su.cpu_top_denied = got < want; /* partly: the budget is at its end */
    return got;
}

static int64_t grant_memory(struct instance *inst, int64_t want, uint64_t now)
{
    struct server *srv = inst->app->srv;
    int64_t budget = (int64_t)srv->opts.budget_memory, cpu, mem;
    if (!budget)
        return want;
    budget_used(srv, now, &cpu, &mem);
    int64_t room = budget - mem, got = inst->su.memory + (room > 0 ? room : 0);
    got = (got < want ? got : want) / 4096 * 4096;
    if (got < inst->su.memory + (1 << 20)) {
        if (!inst->su.mem_top_denied)
            kago__ilog(inst, SLOG_INFO,
                       "scale up: memory stays at %lld MiB: --budget-memory %lld MiB is used up",
                       (long long)(inst->su.memory >> 20), (long long)(budget >> 20));
        inst->su.mem_top_denied = true;
        inst->app->su_denied++;
        return inst->su.memory;
    }
    inst->su.mem_top_denied = got < want;
    return got;
}

static void begin(struct instance *inst)
{
    const struct kago_limits *l = &kago_container_spec(inst->c)->limits;
    const struct kago_scale_up *cfg = cfg_of(inst);
    inst->su.cpu = !cfg->cpu_max ? 0 : l->cpu_quota_us > 0 ? l->cpu_quota_us : cfg->cpu_max;
    inst->su.memory = !cfg->memory_max ? 0 : l->memory > 0 ? l->memory : cfg->memory_max;
}

static void sample(struct instance *inst, uint64_t now)
{
    const struct kago_scale_up *cfg = cfg_of(inst);
    struct kago_pressure p;
    struct kago_error *err = NULL;
    unsigned what = (cfg->cpu_max ? KAGO_PRESSURE_CPU : 0) | (cfg->memory_max ? KAGO_PRESSURE_MEMORY : 0);
    if (kago_container_pressure(inst->c, what, &p, &err) < 0) {
        kago_error_free(err); /* (exiting: its cgroup is going away) */
        return;
    }
    if (!inst->su.started)
        begin(inst);
    struct scaleup_want w;
    if (!kago__scaleup_sample(&inst->su, cfg, &p, now, &w))
        return;
    if (!w.raise_cpu)
        inst->su.cpu_top_denied = false;
    if (!w.raise_memory)
        inst->su.mem_top_denied = false;
    int64_t cpu = w.raise_cpu ? grant_cpu(inst, w.cpu, now) : w.cpu;
    int64_t mem = w.raise_memory ? grant_memory(inst, w.memory, now) : w.memory;
    int64_t cpu0 = inst->su.cpu, mem0 = inst->su.memory;
    if (cpu == cpu0 && mem == mem0)
        return;
    if (apply(inst, cpu, mem, now) < 0)
        return;
    struct app_rt *a = inst->app;
    if (cpu > cpu0 || mem > mem0)
        a->su_raises++;
    else
        a->su_lowers++;
    char what_s[96] = "";
    if (cpu != cpu0)
        snprintf(what_s, sizeof what_s, "cpu %lld%% -> %lld%%", (long long)(cpu0 / 1000),
                 (long long)(cpu / 1000));
    if (mem != mem0)
        snprintf(what_s + strlen(what_s), sizeof what_s - strlen(what_s), "%smemory %lld MiB -> %lld MiB",
                 *what_s ? ", " : "", (long long)(mem0 >> 20), (long long)(mem >> 20));
    kago__ilog(inst, SLOG_INFO, "scale %s: %s (%s)", cpu > cpu0 || mem > mem0 ? "up" : "down", what_s, w.why);
}

void kago__scaler_app(struct app_rt *a, uint64_t now)
{
    if (now < a->su_next)
        return;
    uint64_t period = kago__scaleup_period_ms(&a->app.scale_up);
    for (struct pool_inst *pi = a->pool.insts; pi; pi = pi->next) {
        struct instance *inst = pi->data;
        if (!inst || !inst->c || pi->state != POOL_READY || pi->busy)
            continue;
        sample(inst, now);
        if (a->app.scale_up.memory_max && inst->su.memory < a->app.scale_up.memory_max &&
            inst->su.mem_share >= SCALEUP_HOT_SHARE)
            period = SCALEUP_HOT_MS; /* close to its memory limit: looked at often until it has room */
    }
    a->su_next = now + period;
}

bool kago__scaler_may_scale_out(struct pool *p)
{
    struct app_rt *a = p->data;
    const struct kago_scale_up *cfg = &a->app.scale_up;
    if (!kago__scaleup_on(cfg) || !cfg->scale_out_at_top)
        return true;
    for (struct pool_inst *pi = p->insts; pi; pi = pi->next) {
        const struct instance *inst = pi->data;
        if (pi->state == POOL_STARTING)
            return false; /* it starts at the bottom of its range */
        if (pi->state == POOL_READY && inst && (!inst->su.started || !kago__scaleup_at_top(&inst->su, cfg)))
            return false;
    }
    return true;
}

void kago__scaler_limits(const struct instance *inst, int64_t *cpu, int64_t *mem)
{
    const struct kago_limits *l = inst->c ? &kago_container_spec(inst->c)->limits : NULL;
    *cpu = l && l->cpu_quota_us > 0 ? l->cpu_quota_us : -1;
    *mem = l && l->memory > 0 ? l->memory : -1;
}

void kago__scaler_ps_json(struct sbuf *b, const struct instance *inst)
{
    int64_t cpu, mem;
    kago__scaler_limits(inst, &cpu, &mem);
    char v[160];
    int n = snprintf(v, sizeof v, ",\"cpu_limit\":%.2f,\"memory_limit\":%lld,\"scale_steps\":%llu",
                     cpu < 0 ? -1.0 : cpu / 100000.0, (long long)mem,
                     (unsigned long long)(inst->su.raises + inst->su.lowers));
    sbuf_add(b, v, (size_t)n);
}

void kago__scaler_app_json(struct sbuf *b, const struct app_rt *a)
{
    const struct kago_scale_up *cfg = &a->app.scale_up;
    char v[320];
    int n;
    if (!kago__scaleup_on(cfg))
        n = snprintf(v, sizeof v, ",\"scale_up\":null");
    else
        n = snprintf(
            v, sizeof v,
            ",\"scale_up\":{\"cpu\":[%.2f,%.2f],\"memory\":[%lld,%lld],\"raises\":%llu,\"lowers\":%llu,"
            "\"refused\":%llu}",
            cfg->cpu_min / 100000.0, cfg->cpu_max / 100000.0, (long long)cfg->memory_min,
            (long long)cfg->memory_max, (unsigned long long)a->su_raises, (unsigned long long)a->su_lowers,
            (unsigned long long)a->su_denied);
    sbuf_add(b, v, (size_t)n);
}

void kago__scaler_server_json(struct sbuf *b, const struct server *srv)
{
    bool any = srv->opts.budget_cpu_us || srv->opts.budget_memory;
    for (const struct app_rt *a = srv->apps; a && !any; a = a->next)
        any = kago__scaleup_on(&a->app.scale_up);
    if (!any)
        return;
    int64_t cpu, mem;
    kago__scaler_totals(srv, &cpu, &mem);
    char v[200];
    int n = snprintf(v, sizeof v,
                     ",\"scale_up\":{\"cpu_given\":%.2f,\"memory_given\":%lld,\"budget_cpu\":%.2f,"
                     "\"budget_memory\":%llu}",
                     cpu / 100000.0, (long long)mem, srv->opts.budget_cpu_us / 100000.0,
                     (unsigned long long)srv->opts.budget_memory);
    sbuf_add(b, v, (size_t)n);
}
