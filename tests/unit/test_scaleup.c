/* kago serve: scale up's policy (scaleup.c) fed made-up cgroup samples on a fake clock. */
#include <string.h>

#include "scaleup.h"
#include "tap.h"

static struct kago_scale_up cfg(void)
{
    return (struct kago_scale_up){.cpu_min = 50000,
                                  .cpu_max = 200000,
                                  .cpu_step = 50000,
                                  .memory_min = 128ll << 20,
                                  .memory_max = 512ll << 20,
                                  .memory_step = 128ll << 20,
                                  .window_ms = 1000,
                                  .idle_ms = 3000,
                                  .throttled_pct = 20,
                                  .memory_pct = 90,
                                  .scale_out_at_top = true};
}

/* A sample: counters so far (periods at 10 per second, throttled ones, usage) and memory in use. */
static struct kago_pressure at(int64_t periods, int64_t throttled, int64_t usage_us, int64_t mem,
                               int64_t events)
{
    return (struct kago_pressure){.cpu_usage_us = usage_us,
                                  .nr_periods = periods,
                                  .nr_throttled = throttled,
                                  .throttled_us = 0,
                                  .memory_current = mem,
                                  .memory_events = events,
                                  .memory_stall_us = -1};
}

static void test_cpu_steps(void)
{
    struct kago_scale_up c = cfg();
    struct scaleup_inst s = {.cpu = 50000, .memory = 128ll << 20};
    struct scaleup_want w;
    struct kago_pressure p = at(0, 0, 0, 10 << 20, 0);
    ok(!kago__scaleup_sample(&s, &c, &p, 1000, &w), "the first sample is a baseline");
    p = at(5, 4, 250000, 10 << 20, 0);
    ok(!kago__scaleup_sample(&s, &c, &p, 1500, &w), "half a window: no decision yet");
    p = at(10, 9, 500000, 10 << 20, 0);
    ok(kago__scaleup_sample(&s, &c, &p, 2000, &w) && w.raise_cpu && w.cpu == 100000,
       "throttled in 90%% of a window's periods: one step up (%lld)", (long long)w.cpu);
    ok(!w.raise_memory && !w.lower_memory, "memory unchanged (%s)", w.why);
    kago__scaleup_applied(&s, w.cpu, w.memory, 2000);
    for (uint64_t t = 3000; t <= 5000; t += 1000) {
        p = at(10 + (int64_t)(t - 2000) / 100, 9 + (int64_t)(t - 2000) / 100,
               500000 + (int64_t)(t - 2000) * 2000, 10 << 20, 0);
        if (kago__scaleup_sample(&s, &c, &p, t, &w))
            kago__scaleup_applied(&s, w.cpu, w.memory, t);
    }
    ok(s.cpu == 200000 && kago__scaleup_at_top(&s, &c),
       "step by step to the top of the range, no further (%lld)", (long long)s.cpu);
    ok(s.raises == 3, "three steps up counted (%llu)", (unsigned long long)s.raises);
    /* idle: no throttling, almost no CPU used, for idle_ms: one step down per idle period */
    int64_t base_p = 40, base_t = 39, base_u = 500000 + 3000 * 2000;
    unsigned downs = 0;
    for (uint64_t t = 6000; t <= 20000; t += 1000) {
        p = at(base_p + (int64_t)(t - 5000) / 100, base_t, base_u + (int64_t)(t - 5000), 10 << 20, 0);
        if (kago__scaleup_sample(&s, &c, &p, t, &w) && w.lower_cpu) {
            downs++;
            kago__scaleup_applied(&s, w.cpu, w.memory, t);
        }
    }
    ok(s.cpu == 50000 && downs == 3,
       "idle: lowered a step per idle period back to the bottom (%lld, %u steps)", (long long)s.cpu, downs);
    ok(!kago__scaleup_at_top(&s, &c), "at the bottom: not at the top (no scale out yet)");
}

static void test_memory(void)
{
    struct kago_scale_up c = cfg();
    c.cpu_max = 0;
    struct scaleup_inst s = {.memory = 128ll << 20};
    struct scaleup_want w;
    struct kago_pressure p = at(-1, -1, -1, 50ll << 20, 0);
    kago__scaleup_sample(&s, &c, &p, 0, &w);
    p = at(-1, -1, -1, 100ll << 20, 0);
    ok(!kago__scaleup_sample(&s, &c, &p, 250, &w), "78%% of the limit: nothing");
    p = at(-1, -1, -1, 120ll << 20, 0);
    ok(kago__scaleup_sample(&s, &c, &p, 500, &w) && w.raise_memory && w.memory == 256ll << 20,
       "94%% of the limit: a step up at once, without waiting for a window (%s)", w.why);
    kago__scaleup_applied(&s, w.cpu, w.memory, 500);
    p = at(-1, -1, -1, 120ll << 20, 3);
    ok(kago__scaleup_sample(&s, &c, &p, 750, &w) && w.raise_memory && w.memory == 384ll << 20,
       "the limit hit again (failcnt rose): a step up (%s)", w.why);
    kago__scaleup_applied(&s, w.cpu, w.memory, 750);
    p = at(-1, -1, -1, 120ll << 20, 3);
    ok(!kago__scaleup_sample(&s, &c, &p, 1000, &w), "below 90%% and no new event: nothing");
    p = at(-1, -1, -1, 120ll << 20, 3);
    ok(kago__scaleup_sample(&s, &c, &p, 3750, &w) && w.lower_memory && w.memory == 256ll << 20,
       "idle_ms with use below 60%% of a step down: lowered (%s)", w.why);
    kago__scaleup_applied(&s, w.cpu, w.memory, 3750);
    p = at(-1, -1, -1, 120ll << 20, 3);
    ok(!kago__scaleup_sample(&s, &c, &p, 8000, &w),
       "not lowered below what 120 MiB in use needs (128 MiB would be 94%%)");
    ok(kago__scaleup_at_top(&s, &c),
       "memory only: scale out is not held back (memory serves no more requests)");
}

static void test_period(void)
{
    struct kago_scale_up c = cfg();
    ok(kago__scaleup_period_ms(&c) == 250, "sampled four times a window (%llu ms)",
       (unsigned long long)kago__scaleup_period_ms(&c));
    c.window_ms = c.idle_ms = 60000;
    ok(kago__scaleup_period_ms(&c) == 1000, "at most every second when memory is scaled");
    c.memory_max = 0;
    ok(kago__scaleup_period_ms(&c) == 2500, "at most every 2.5 s for CPU alone");
}

int main(void)
{
    test_cpu_steps();
    test_memory();
    test_period();
    return tap_done();
}
