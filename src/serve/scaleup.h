/* kago serve — scale up (a.scale_up): the policy that raises an instance's CPU and memory limits live while
 * it is short of them and lowers them when it is idle. A pure state machine like pool.c: it reads no clock
 * and no cgroup; the caller feeds it samples (struct kago_pressure) with `now` (ms) and applies what it
 * wants (scaler.c, within serve's --budget-cpu / --budget-memory). Unit tests drive it with made-up samples.
 */
#ifndef KAGO_SERVE_SCALEUP_H
#define KAGO_SERVE_SCALEUP_H

#include <stdbool.h>
#include <stdint.h>

#include <kago/app.h>
#include <kago/container.h>

/* One instance's scale-up state. Zeroed at start; the first sample only takes a baseline. */
struct scaleup_inst {
    int64_t cpu, memory; /* its limits now (quota us per 100 ms, bytes); set by the caller before sampling */
    bool started;
    uint64_t last_at; /* the previous sample */
    uint64_t win_at;  /* the CPU window began then, with these counters */
    int64_t win_periods, win_throttled, win_usage_us;
    int64_t mem_events, mem_stall_us;        /* at the previous sample */
    uint64_t cpu_calm_since, mem_calm_since; /* no pressure since (a step down after idle_ms) */
    double busy;                             /* throttled share of the last CPU window (0..1) */
    double cpu_used;                         /* cores used over the last CPU window */
    double mem_share;                        /* memory in use / its limit at the last sample */
    bool cpu_top_denied, mem_top_denied;     /* the budget refused its last raise (at the top for now) */
    uint64_t warned_at;                      /* a step that could not be applied was last logged then */
    uint64_t raises, lowers;                 /* steps taken, for /metrics */
};

/* What a sample asks for: new limits (equal to the current ones when unchanged) and why, for the log. */
struct scaleup_want {
    int64_t cpu, memory;
    bool raise_cpu, raise_memory, lower_cpu, lower_memory;
    char why[96];
};

/* How often the caller samples an instance of an app with this policy (ms): a quarter of the shorter of
 * window and idle, within 100 ms .. 2.5 s (1 s when memory is scaled); SCALEUP_HOT_MS while an instance
 * uses SCALEUP_HOT_SHARE of its memory limit or more (it may run out soon). */
#define SCALEUP_HOT_MS    100
#define SCALEUP_HOT_SHARE 0.6
uint64_t kago__scaleup_period_ms(const struct kago_scale_up *cfg);

/* Feeds a sample taken at now. Returns true when a change is wanted (*w filled). CPU is judged once a
 * window has passed (throttled in throttled_pct of its CFS periods: one step up); memory at every sample
 * (in use at memory_pct of the limit, the limit hit again (failcnt / memory.events), or stalled on memory
 * 10% of the time (PSI): one step up). A resource with no pressure for idle_ms (CPU used below half of
 * the next step down; memory in use below 60% of it) goes one step down. */
bool kago__scaleup_sample(struct scaleup_inst *s, const struct kago_scale_up *cfg,
                          const struct kago_pressure *p, uint64_t now, struct scaleup_want *w);

/* The caller applied w (or the part the budget allowed: cpu and memory as they are now). */
void kago__scaleup_applied(struct scaleup_inst *s, int64_t cpu, int64_t memory, uint64_t now);

/* The instance is at the top of its CPU range (or the budget refused it more; always for an app that
 * scales memory only): with scale_out_at_top, the app starts another instance only when each one is. */
bool kago__scaleup_at_top(const struct scaleup_inst *s, const struct kago_scale_up *cfg);

static inline bool kago__scaleup_on(const struct kago_scale_up *cfg)
{
    return cfg->cpu_max || cfg->memory_max;
}

#endif
