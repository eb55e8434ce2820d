/* kago serve — scale up's policy (scaleup.h): pure, fed samples by scaler.c. */
#include <stdio.h>
#include <string.h>

#include "scaleup.h"

uint64_t kago__scaleup_period_ms(const struct kago_scale_up *cfg)
{
    uint64_t w = cfg->window_ms < cfg->idle_ms ? cfg->window_ms : cfg->idle_ms,
             max = cfg->memory_max ? 1000 : 2500;
    w /= 4;
    return w < 100 ? 100 : w > max ? max : w;
}

static int64_t clamp(int64_t v, int64_t lo, int64_t hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

static void window_start(struct scaleup_inst *s, const struct kago_pressure *p, uint64_t now)
{
    s->win_at = now;
    s->win_periods = p->nr_periods;
    s->win_throttled = p->nr_throttled;
    s->win_usage_us = p->cpu_usage_us;
}

static void baseline(struct scaleup_inst *s, const struct kago_pressure *p, uint64_t now)
{
    s->started = true;
    window_start(s, p, now);
    s->mem_events = p->memory_events;
    s->mem_stall_us = p->memory_stall_us;
    s->cpu_calm_since = s->mem_calm_since = now;
    s->last_at = now;
}

/* CPU, once a window has passed: a step up when throttled, a step down after idle_ms calm. */
static void judge_cpu(struct scaleup_inst *s, const struct kago_scale_up *cfg, const struct kago_pressure *p,
                      uint64_t now, struct scaleup_want *w)
{
    if (now - s->win_at < cfg->window_ms || p->nr_periods < 0)
        return;
    int64_t periods = p->nr_periods - s->win_periods, throttled = p->nr_throttled - s->win_throttled;
    double used = (double)(p->cpu_usage_us - s->win_usage_us) / (double)((now - s->win_at) * 1000);
    s->busy = periods > 0 ? (double)throttled / (double)periods : 0;
    s->cpu_used = used < 0 ? 0 : used;
    window_start(s, p, now);
    bool busy = s->busy * 100 >= cfg->throttled_pct;
    int64_t down = clamp(s->cpu - cfg->cpu_step, cfg->cpu_min, cfg->cpu_max);
    if (busy || s->cpu_used * 100000 >= (double)down / 2) /* quota per 100 ms: 100000 us = one core */
        s->cpu_calm_since = now;
    if (busy && s->cpu < cfg->cpu_max) {
        w->cpu = clamp(s->cpu + cfg->cpu_step, cfg->cpu_min, cfg->cpu_max);
        w->raise_cpu = true;
        snprintf(w->why, sizeof w->why, "throttled in %.0f%% of its CPU periods over %.1f s", s->busy * 100,
                 cfg->window_ms / 1000.0);
    } else if (!busy && s->cpu > cfg->cpu_min && now - s->cpu_calm_since >= cfg->idle_ms) {
        w->cpu = down;
        w->lower_cpu = true;
        snprintf(w->why, sizeof w->why, "idle: %.2f cores used", s->cpu_used);
    }
}

static void judge_memory(struct scaleup_inst *s, const struct kago_scale_up *cfg,
                         const struct kago_pressure *p, uint64_t now, struct scaleup_want *w)
{
    if (p->memory_current < 0)
        return;
    bool hit = p->memory_events > s->mem_events && s->mem_events >= 0;
    double stall = p->memory_stall_us >= 0 && s->mem_stall_us >= 0 && now > s->last_at
                       ? (double)(p->memory_stall_us - s->mem_stall_us) / (double)((now - s->last_at) * 1000)
                       : 0;
    bool near = (double)p->memory_current * 100 >= (double)s->memory * cfg->memory_pct;
    s->mem_share = s->memory ? (double)p->memory_current / (double)s->memory : 0;
    s->mem_events = p->memory_events;
    s->mem_stall_us = p->memory_stall_us;
    int64_t down = clamp(s->memory - cfg->memory_step, cfg->memory_min, cfg->memory_max);
    bool pressed = near || hit || stall >= 0.1;
    if (pressed || (double)p->memory_current >= (double)down * 0.6)
        s->mem_calm_since = now;
    if (pressed && s->memory < cfg->memory_max) {
        w->memory = clamp(s->memory + cfg->memory_step, cfg->memory_min, cfg->memory_max);
        w->raise_memory = true;
        if (!w->raise_cpu)
            snprintf(w->why, sizeof w->why, "%s: %lld MiB in use of %lld MiB",
                     near  ? "near its memory limit"
                     : hit ? "hit its memory limit"
                           : "stalled on memory (PSI)",
                     (long long)(p->memory_current >> 20), (long long)(s->memory >> 20));
    } else if (!pressed && s->memory > cfg->memory_min && now - s->mem_calm_since >= cfg->idle_ms) {
        w->memory = down;
        w->lower_memory = true;
        if (!w->raise_cpu && !w->lower_cpu)
            snprintf(w->why, sizeof w->why, "idle: %lld MiB of memory in use",
                     (long long)(p->memory_current >> 20));
    }
}

bool kago__scaleup_sample(struct scaleup_inst *s, const struct kago_scale_up *cfg,
                          const struct kago_pressure *p, uint64_t now, struct scaleup_want *w)
{
    memset(w, 0, sizeof *w);
    w->cpu = s->cpu;
    w->memory = s->memory;
    if (!s->started) {
        baseline(s, p, now);
        return false;
    }
    if (cfg->cpu_max && s->cpu)
        judge_cpu(s, cfg, p, now, w);
    if (cfg->memory_max && s->memory)
        judge_memory(s, cfg, p, now, w);
    s->last_at = now;
    return w->raise_cpu || w->raise_memory || w->lower_cpu || w->lower_memory;
}

void kago__scaleup_applied(struct scaleup_inst *s, int64_t cpu, int64_t memory, uint64_t now)
{
    if (cpu > s->cpu || memory > s->memory)
        s->raises++;
    if (cpu < s->cpu || memory < s->memory)
        s->lowers++;
    if (cpu < s->cpu)
        s->cpu_calm_since = now; /* the next step down after another idle_ms */
    if (memory < s->memory)
        s->mem_calm_since = now;
    s->cpu = cpu;
    s->memory = memory;
}

bool kago__scaleup_at_top(const struct scaleup_inst *s, const struct kago_scale_up *cfg)
{
    /* requests wait for CPU: the CPU range decides; more memory serves no more requests at once */
    return !cfg->cpu_max || s->cpu >= cfg->cpu_max || s->cpu_top_denied;
}
