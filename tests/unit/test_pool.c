/* kago serve: the pool's decisions (start, hold, dispatch, scale out, drain, expire, kill, freeze,
 * thaw, memory budget) driven by events and a fake clock. */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>

#include "pool.h"
#include "tap.h"

/* A recording driver: every action the pool asks for lands here. */
static struct {
    unsigned starts, dispatched, rejected, drains, terms, kills, removes, freezes, thaws, failed, woken;
    enum pool_fail last_fail;
    uint64_t last_delay;
    uint64_t freeze_bytes; /* what a freeze reports as the instance's memory */
    bool fail_thaw;
    struct pool_inst *last_start, *last_dispatch_inst;
    struct pool_waiter *last_dispatch;
    int last_reject;
    bool ready_on_start; /* socket activation: ready as soon as created */
    bool fail_on_start;
    bool hold_out; /* may_scale_out says no (scale up first) */
    uint64_t now;
} rec;

static void op_start(struct pool *p, struct pool_inst *i)
{
    rec.starts++;
    rec.last_start = i;
    if (rec.fail_on_start)
        kago__pool_exited(p, i, rec.now);
    else if (rec.ready_on_start)
        kago__pool_ready(p, i, rec.now);
}
static void op_dispatch(struct pool *p, struct pool_waiter *w, struct pool_inst *i)
{
    rec.dispatched++;
    rec.last_dispatch = w;
    rec.last_dispatch_inst = i;
    w->data = i;
}
static void op_reject(struct pool *p, struct pool_waiter *w, int status)
{
    rec.rejected++;
    rec.last_reject = status;
}
static void op_drain(struct pool *p, struct pool_inst *i)
{
    rec.drains++;
}
static void op_signal(struct pool *p, struct pool_inst *i, int sig)
{
    if (sig == SIGTERM)
        rec.terms++;
    else if (sig == SIGKILL)
        rec.kills++;
}
static void op_remove(struct pool *p, struct pool_inst *i)
{
    rec.removes++;
}
static int op_freeze(struct pool *p, struct pool_inst *i)
{
    rec.freezes++;
    i->frozen_bytes = rec.freeze_bytes;
    return 0;
}
static int op_thaw(struct pool *p, struct pool_inst *i)
{
    if (rec.fail_thaw)
        return -1;
    rec.thaws++;
    return 80; /* us */
}
static void op_start_failed(struct pool *p, struct pool_inst *i, enum pool_fail why, uint64_t delay_ms)
{
    rec.failed++;
    rec.last_fail = why;
    rec.last_delay = delay_ms;
}
static void op_woken(struct pool *p)
{
    rec.woken++;
}
static bool op_may_scale_out(struct pool *p)
{
    return !rec.hold_out;
}
static const struct pool_ops ops = {op_start,  op_dispatch, op_reject,       op_drain,        op_signal,
                                    op_remove, op_freeze,   op_thaw,         op_start_failed, op_woken,
                                    NULL,      NULL,        op_may_scale_out};

static const struct pool_cfg base = {
    .lifetime_ms = 60000,
    .idle_ms = 10000,
    .start_timeout_ms = 5000,
    .stop_grace_ms = 2000,
    .min = 0,
    .max = 4,
    .concurrency = 2,
    .max_pending = 10,
};

static void reset(struct pool *p, const struct pool_cfg *cfg)
{
    memset(&rec, 0, sizeof(rec));
    kago__pool_init(p, cfg, &ops, NULL);
}

static void test_cold_start_hold_dispatch(void)
{
    struct pool p;
    reset(&p, &base);
    struct pool_waiter w = {0};
    bool held;
    ok(kago__pool_request(&p, &w, 1000, &held) == NULL && held, "first request to a stopped app is held");
    ok(rec.starts == 1 && kago__pool_count(&p, POOL_STARTING) == 1, "and one instance starts");
    ok(rec.woken == 1, "the idle pool told it has work (woken once, not per request or instance)");
    ok(p.npending == 1, "queue depth 1");
    kago__pool_ready(&p, rec.last_start, 1003);
    ok(rec.dispatched == 1 && rec.last_dispatch == &w, "ready instance takes the held request");
    ok(p.npending == 0 && rec.last_start->inflight == 1, "in flight 1, queue empty");
    ok(p.cold_starts == 1 && p.hist && p.hist->cold[1] == 1, "cold start of 3 ms counted in the 5 ms bucket");
    struct pool_waiter w2 = {0};
    struct pool_inst *i = kago__pool_request(&p, &w2, 1004, &held);
    ok(i == rec.last_start && !held, "next request goes straight to the ready instance");
    kago__pool_done(&p, i, 1005);
    kago__pool_done(&p, i, 1005);
    ok(i->inflight == 0 && i->served == 2, "done twice: idle, 2 served");
    kago__pool_free(&p);
}

static void test_burst_bounded(void)
{
    struct pool p;
    reset(&p, &base);
    struct pool_waiter w[12] = {0};
    bool held;
    unsigned nheld = 0, refused = 0;
    for (int k = 0; k < 12; k++) {
        kago__pool_request(&p, &w[k], 100, &held);
        if (held)
            nheld++;
        else
            refused++;
    }
    ok(nheld == 10 && refused == 2, "max_pending 10: 10 held, 2 refused (503)");
    ok(rec.starts == 4, "load 10 at concurrency 2 starts max_instances (4), not more (%u)", rec.starts);
    /* First instance ready: takes concurrency (2) while others are still starting. */
    struct pool_inst *first = p.insts;
    kago__pool_ready(&p, first, 110);
    ok(rec.dispatched == 2 && first->inflight == 2, "first ready takes its share (2)");
    for (struct pool_inst *i = p.insts; i; i = i->next)
        kago__pool_ready(&p, i, 112);
    ok(p.npending == 2 && rec.dispatched == 8, "all ready: concurrency x instances (8) dispatched, 2 wait");
    kago__pool_done(&p, first, 113);
    ok(p.npending == 1 && rec.dispatched == 9, "a slot frees: the oldest waiting request takes it");
    unsigned maxin = 0;
    for (struct pool_inst *i = p.insts; i; i = i->next)
        maxin = i->inflight > maxin ? i->inflight : maxin;
    ok(maxin <= 3, "spread over instances (max in flight %u)", maxin);
    kago__pool_free(&p);
}

static void test_hold_timeout(void)
{
    struct pool p;
    reset(&p, &base);
    struct pool_waiter w = {0};
    bool held;
    kago__pool_request(&p, &w, 0, &held);
    kago__pool_tick(&p, 4999);
    ok(rec.rejected == 0, "still held before start_timeout");
    kago__pool_tick(&p, 5000);
    ok(rec.rejected == 1 && rec.last_reject == 503, "held request gets 503 at start_timeout");
    ok(p.start_failures == 1 && rec.kills == 1, "never-ready instance counted as failure and killed");
    ok(kago__pool_count(&p, POOL_STOPPING) == 1, "it is stopping, not routable");
    kago__pool_exited(&p, p.insts, 5001);
    ok(rec.removes == 1 && p.insts == NULL, "exit removes it");
    ok(p.start_failures == 1, "failure not counted twice");
    kago__pool_free(&p);
}

static void test_scale_out(void)
{
    struct pool p;
    reset(&p, &base);
    rec.ready_on_start = true;
    bool held;
    struct pool_waiter w[20] = {0};
    struct pool_inst *got[20];
    got[0] = kago__pool_request(&p, &w[0], 10, &held);
    ok(got[0] == NULL && held && rec.dispatched == 1, "socket activation: held then dispatched at once");
    got[1] = kago__pool_request(&p, &w[1], 10, &held);
    ok(got[1] != NULL, "below concurrency: routed directly");
    got[2] = kago__pool_request(&p, &w[2], 10, &held);
    ok(rec.starts == 2, "in flight 3 > concurrency 2 x 1 instance: scaled out to 2 (%u)", rec.starts);
    ok(p.npending == 0 && rec.dispatched == 2, "the third went to the new instance");
    unsigned direct = 0;
    for (int k = 3; k < 20; k++) {
        got[k] = kago__pool_request(&p, &w[k], 11, &held);
        direct += got[k] != NULL;
    }
    ok(rec.starts == 4 && kago__pool_count(&p, POOL_READY) == 4, "scale out stops at max_instances 4");
    ok(direct + rec.dispatched - 2 == 5, "the 5 free slots taken (%u directly, the rest from the queue)",
       direct);
    unsigned lo = 99, hi = 0;
    for (struct pool_inst *i = p.insts; i; i = i->next) {
        lo = i->inflight < lo ? i->inflight : lo;
        hi = i->inflight > hi ? i->inflight : hi;
    }
    ok(lo == 2 && hi == 2, "fewest-in-flight picking fills every instance to concurrency (%u..%u)", lo, hi);
    ok(p.npending == 10, "beyond concurrency x max_instances requests wait, up to max_pending (%u)",
       p.npending);
    kago__pool_done(&p, p.insts, 12);
    ok(p.npending == 9 && p.insts->inflight == 2, "a finished request lets the oldest held one in");
    kago__pool_free(&p);
}

/* a.scale_up with scale_out_at_top: no second instance until the first is at the top of its range. */
static void test_scale_out_at_top(void)
{
    struct pool p;
    struct pool_cfg cfg = base;
    cfg.min = 1;
    reset(&p, &cfg);
    rec.ready_on_start = true;
    rec.hold_out = true;
    kago__pool_tick(&p, 10);
    ok(rec.starts == 1, "min_instances is started even when scale out waits for scale up (%u)", rec.starts);
    bool held;
    struct pool_waiter w[6] = {0};
    for (int k = 0; k < 6; k++)
        kago__pool_request(&p, &w[k], 10, &held);
    ok(rec.starts == 1 && p.npending == 4, "load beyond concurrency waits for the one instance (%u held)",
       p.npending);
    rec.hold_out = false;
    kago__pool_tick(&p, 20);
    ok(rec.starts == 3 && p.npending == 0, "at the top of its range: scaled out (%u starts)", rec.starts);
    kago__pool_free(&p);
}

static void test_idle_and_lifetime(void)
{
    struct pool p;
    reset(&p, &base);
    rec.ready_on_start = true;
    bool held;
    struct pool_waiter w = {0};
    rec.now = 0;
    kago__pool_request(&p, &w, 0, &held);
    struct pool_inst *i = rec.last_start;
    kago__pool_done(&p, i, 100);
    kago__pool_tick(&p, 10099);
    ok(i->state == POOL_READY, "not idle before idle_timeout");
    kago__pool_tick(&p, 10100);
    ok(rec.drains == 1 && rec.terms == 1 && i->state == POOL_STOPPING, "idle: drained and SIGTERM at once");
    kago__pool_tick(&p, 12100);
    ok(rec.kills == 1, "SIGKILL after stop_grace");
    kago__pool_exited(&p, i, 12101);
    ok(p.insts == NULL && rec.removes == 1, "removed after exit: scaled to zero");
    ok(p.start_failures == 0, "a normal stop is no failure");

    /* Lifetime with a long request in flight (a stream): drain waits for it. */
    struct pool_waiter w2 = {0};
    rec.now = 20000;
    kago__pool_request(&p, &w2, 20000, &held);
    i = rec.last_start;
    ok(rec.starts == 2, "next request cold-starts again");
    ok(rec.woken == 2, "scaled to zero and woken again by the next request");
    kago__pool_tick(&p, 79999);
    ok(i->state == POOL_READY, "open stream: an idle timer never fires while in flight");
    rec.ready_on_start = false;
    kago__pool_tick(&p, 80000);
    ok(i->state == POOL_READY && i->outgoing && rec.starts == 3,
       "lifetime of an instance in use: a replacement starts first, it serves on meanwhile");
    struct pool_waiter w3 = {0};
    ok(kago__pool_request(&p, &w3, 80001, &held) == i && !held, "no request waits for the replacement");
    struct pool_inst *r = rec.last_start;
    kago__pool_ready(&p, r, 80500);
    ok(i->state == POOL_DRAINING && rec.terms == 1,
       "replacement ready: draining, no SIGTERM while in flight");
    struct pool_waiter w4 = {0};
    ok(kago__pool_request(&p, &w4, 80501, &held) == r, "the replacement takes the next request");
    kago__pool_done(&p, i, 81000);
    kago__pool_done(&p, i, 81000);
    ok(rec.terms == 2 && i->state == POOL_STOPPING, "streams finished: SIGTERM");

    /* a replacement that never becomes ready: the old one goes all the same, after start_timeout */
    kago__pool_exited(&p, i, 81001);
    kago__pool_done(&p, r, 81002);
    rec.ready_on_start = false;
    kago__pool_tick(&p, 80500 + 60000);
    ok(r->outgoing && rec.starts == 4, "lifetime: its replacement starting");
    kago__pool_tick(&p, 80500 + 60000 + base.start_timeout_ms);
    ok(r->state == POOL_DRAINING || r->state == POOL_STOPPING, "the replacement timed out: it drains");
    kago__pool_free(&p);
}

/* p->due: when the next tick could have something to do, at most POOL_DUE_MAX_MS ahead; 0 after a change. */
static void test_due(void)
{
    struct pool p;
    reset(&p, &base);
    rec.ready_on_start = true;
    bool held;
    struct pool_waiter w = {0};
    kago__pool_request(&p, &w, 0, &held);
    struct pool_inst *i = rec.last_start;
    ok(p.due == 0, "due now after a request");
    kago__pool_done(&p, i, 100);
    kago__pool_tick(&p, 200);
    ok(p.due == 200 + POOL_DUE_MAX_MS, "idle and lifetime far: due at the cap (%llu)",
       (unsigned long long)p.due);
    kago__pool_tick(&p, 10000);
    ok(p.due == 10100, "due when the idle timeout ends (%llu)", (unsigned long long)p.due);
    struct pool_waiter w2 = {0};
    ok(kago__pool_request(&p, &w2, 10050, &held) == i && p.due == 0, "a request: due now");
    kago__pool_tick(&p, 10060);
    ok(p.due == 10060 + POOL_DUE_MAX_MS || p.due == 10060, "in flight: no idle deadline (%llu)",
       (unsigned long long)p.due);
    kago__pool_done(&p, i, 10070);
    kago__pool_tick(&p, 20070);
    ok(i->state == POOL_STOPPING && p.due == 20070 + POOL_DUE_MAX_MS, "stopping: its grace is far (%llu)",
       (unsigned long long)p.due);
    kago__pool_tick(&p, 22000);
    ok(p.due == 22070, "due when its grace ends (%llu)", (unsigned long long)p.due);
    kago__pool_exited(&p, i, 22100);
    /* a held request and its start: due when either times out */
    rec.ready_on_start = false;
    struct pool_waiter w3 = {0};
    ok(kago__pool_request(&p, &w3, 30000, &held) == NULL && held, "held");
    kago__pool_tick(&p, 34000);
    ok(p.due == 34000 + POOL_DUE_MAX_MS, "held: its timeout is far (%llu)", (unsigned long long)p.due);
    kago__pool_tick(&p, 34900);
    ok(p.due == 35000, "due when the held request and the start time out (%llu)", (unsigned long long)p.due);
    kago__pool_tick(&p, 35000);
    ok(rec.rejected == 1, "held request timed out");
    kago__pool_free(&p);
}

static void test_drain_grace(void)
{
    struct pool p;
    reset(&p, &base);
    rec.ready_on_start = true;
    bool held;
    struct pool_waiter w = {0};
    kago__pool_request(&p, &w, 0, &held);
    struct pool_inst *i = rec.last_start;
    kago__pool_stop(&p, 10);
    ok(i->state == POOL_DRAINING && rec.terms == 0, "stop: drain, in-flight request keeps it alive");
    kago__pool_tick(&p, 2009);
    ok(rec.terms == 0, "within stop_grace");
    kago__pool_tick(&p, 2010);
    ok(rec.terms == 1, "stop_grace over: SIGTERM even with a request in flight");
    kago__pool_tick(&p, 4010);
    ok(rec.kills == 1, "then SIGKILL");
    struct pool_waiter w2 = {0};
    ok(kago__pool_request(&p, &w2, 4011, &held) == NULL && !held, "stopped pool refuses requests");
    kago__pool_free(&p);
}

static void test_min_warm_and_failures(void)
{
    struct pool p;
    struct pool_cfg cfg = base;
    cfg.min = 1;
    reset(&p, &cfg);
    rec.ready_on_start = true;
    kago__pool_tick(&p, 1);
    ok(rec.starts == 1 && kago__pool_count(&p, POOL_READY) == 1, "min_instances 1: standby started");
    kago__pool_tick(&p, 50000);
    ok(rec.drains == 0, "standby is not idled away below min");
    kago__pool_tick(&p, 60001);
    ok(rec.drains == 1 && rec.starts == 2, "lifetime recycles it and a new standby starts");

    /* A start that fails at once must not spin: back off, and answer the held request at once. */
    kago__pool_free(&p);
    reset(&p, &base);
    rec.fail_on_start = true;
    bool held;
    struct pool_waiter w = {0};
    rec.now = 100;
    kago__pool_request(&p, &w, 100, &held);
    ok(rec.starts == 1 && p.start_failures == 1, "failed start counted once");
    ok(rec.failed == 1 && rec.last_fail == POOL_FAIL_EXITED && rec.last_delay == 1000,
       "reported: backs off 1 s");
    ok(rec.rejected == 1 && rec.last_reject == 503 && !w.queued && p.npending == 0,
       "the held request is answered at once, not after start_timeout");
    kago__pool_tick(&p, 200);
    ok(rec.starts == 1, "no retry within the backoff");
    struct pool_waiter w2 = {0};
    ok(!kago__pool_request(&p, &w2, 200, &held) && !held && rec.starts == 1,
       "a request meanwhile is refused at once, without a start");
    kago__pool_tick(&p, 5000);
    ok(rec.starts == 1, "no start after the backoff without a request (nothing spins)");
    rec.fail_on_start = false;
    kago__pool_request(&p, &w2, 5000, &held);
    ok(held && rec.starts == 2, "after the backoff a request starts it again");
    kago__pool_cancel(&p, &w2);
    ok(p.npending == 0, "cancel removes a held request");
    kago__pool_free(&p);
}

static void test_death_redispatch(void)
{
    struct pool p;
    reset(&p, &base);
    rec.ready_on_start = true;
    bool held;
    struct pool_waiter w = {0};
    kago__pool_request(&p, &w, 0, &held);
    struct pool_inst *i = rec.last_start;
    kago__pool_exited(&p, i, 5);
    ok(rec.removes == 1 && p.insts == NULL, "an instance that dies is removed");
    struct pool_waiter w2 = {0};
    kago__pool_request(&p, &w2, 6, &held);
    ok(rec.starts == 2 && rec.dispatched == 2, "the next request starts a new one");
    kago__pool_free(&p);
}

static const struct pool_cfg freezing = {
    .lifetime_ms = 600000,
    .idle_ms = 10000,
    .start_timeout_ms = 5000,
    .stop_grace_ms = 2000,
    .min = 0,
    .max = 4,
    .concurrency = 2,
    .max_pending = 10,
    .freeze = true,
    .freeze_ms = 60000,
};

/* One request at now on a fresh instance that is then idle; returns the instance. */
static struct pool_inst *served_once(struct pool *p, uint64_t now)
{
    bool held;
    struct pool_waiter w = {0};
    rec.ready_on_start = true;
    kago__pool_request(p, &w, now, &held);
    struct pool_inst *i = rec.last_dispatch_inst;
    kago__pool_done(p, i, now);
    return i;
}

static void test_idle_freeze_thaw(void)
{
    struct pool p;
    reset(&p, &freezing);
    struct pool_inst *i = served_once(&p, 0);
    kago__pool_tick(&p, 9999);
    ok(i->state == POOL_READY && rec.freezes == 0, "not frozen before idle_timeout");
    kago__pool_tick(&p, 10000);
    ok(i->state == POOL_FROZEN && rec.freezes == 1, "idle :freeze: frozen at idle_timeout");
    ok(rec.drains == 0 && rec.terms == 0 && rec.removes == 0, "not drained, not stopped");
    ok(kago__pool_count(&p, POOL_FROZEN) == 1 && kago__pool_count(&p, POOL_READY) == 0, "counted as frozen");
    kago__pool_tick(&p, 30000);
    ok(i->state == POOL_FROZEN, "stays frozen within freeze_for");

    bool held;
    struct pool_waiter w = {0};
    struct pool_inst *got = kago__pool_request(&p, &w, 30001, &held);
    ok(got == i && !held, "a request thaws the frozen instance and goes straight to it");
    ok(rec.thaws == 1 && rec.starts == 1, "thawed, no start action (%u starts)", rec.starts);
    ok(i->state == POOL_READY && i->inflight == 1, "ready again with the request in flight");
    ok(p.thaws == 1 && p.cold_starts == 1 && p.hist && p.hist->thaw[1] == 1,
       "thaw counted (80 us: the 0.1 ms bucket)");
    kago__pool_done(&p, i, 30002);
    kago__pool_tick(&p, 40001);
    ok(i->state == POOL_READY, "idle counted from the last request");
    kago__pool_tick(&p, 40002);
    ok(i->state == POOL_FROZEN && rec.freezes == 2, "idle again: frozen again");
    kago__pool_free(&p);
}

/* Ready first, then frozen (thaw), then a cold start. */
static void test_thaw_order(void)
{
    struct pool p;
    reset(&p, &freezing);
    rec.ready_on_start = true;
    bool held;
    struct pool_waiter w[6] = {0};
    struct pool_inst *x = NULL, *y = NULL;
    for (int k = 0; k < 3; k++)
        kago__pool_request(&p, &w[k], 0, &held);
    x = w[0].data;
    y = w[2].data;
    ok(rec.starts == 2 && x && y && x != y, "load 3 at concurrency 2: two instances");
    kago__pool_done(&p, x, 0);
    kago__pool_done(&p, x, 0);
    kago__pool_done(&p, y, 1000);
    kago__pool_tick(&p, 10000);
    ok(x->state == POOL_FROZEN && y->state == POOL_READY, "x idle 10 s: frozen; y not yet");
    struct pool_inst *got = kago__pool_request(&p, &w[3], 10001, &held);
    ok(got == y && rec.thaws == 0, "a ready instance is preferred: no thaw");
    got = kago__pool_request(&p, &w[4], 10001, &held);
    ok(got == y && rec.thaws == 0, "still room on it (concurrency 2)");
    got = kago__pool_request(&p, &w[5], 10001, &held);
    ok(got == x && !held && rec.thaws == 1 && x->state == POOL_READY,
       "y full: x is thawed and takes it directly");
    ok(rec.starts == 2 && x->inflight == 1, "no start");
    struct pool_waiter w7 = {0}, w8 = {0};
    kago__pool_request(&p, &w7, 10002, &held);
    kago__pool_request(&p, &w8, 10002, &held);
    ok(rec.starts == 3, "nothing frozen left: the next scale out is a cold start");
    kago__pool_free(&p);
}

static void test_freeze_expiry_and_lifetime(void)
{
    struct pool p;
    reset(&p, &freezing);
    struct pool_inst *i = served_once(&p, 0);
    kago__pool_tick(&p, 10000);
    ok(i->state == POOL_FROZEN, "frozen");
    kago__pool_tick(&p, 69999);
    ok(i->state == POOL_FROZEN && rec.terms == 0, "freeze_for not over");
    kago__pool_tick(&p, 70000);
    ok(rec.thaws == 1 && rec.drains == 1 && rec.terms == 1,
       "freeze_for over: thawed first, drained, SIGTERM");
    ok(i->state == POOL_STOPPING && p.frozen_expired == 1 && p.thaws == 0, "stopping; not a serving thaw");
    kago__pool_exited(&p, i, 70010);
    ok(p.insts == NULL, "removed: the next request cold-starts");

    /* Lifetime applies to frozen instances too. */
    struct pool_cfg cfg = freezing;
    cfg.lifetime_ms = 20000;
    cfg.freeze_ms = 0; /* frozen until lifetime or budget */
    kago__pool_configure(&p, &cfg, 70011);
    i = served_once(&p, 100000);
    kago__pool_tick(&p, 110000);
    ok(i->state == POOL_FROZEN, "frozen (no freeze_for)");
    kago__pool_tick(&p, 119999);
    ok(i->state == POOL_FROZEN, "within lifetime");
    kago__pool_tick(&p, 120000);
    ok(i->state == POOL_STOPPING && rec.terms == 2, "lifetime over: frozen instance stopped");

    /* Shutdown thaws frozen instances so SIGTERM is handled. */
    kago__pool_free(&p);
    reset(&p, &freezing);
    i = served_once(&p, 0);
    kago__pool_tick(&p, 10000);
    kago__pool_stop(&p, 10001);
    ok(rec.thaws == 1 && rec.terms == 1 && i->state == POOL_STOPPING,
       "stop: frozen instance thawed, SIGTERM");
    kago__pool_free(&p);

    /* A thaw that fails kills the instance; the request cold-starts instead. */
    reset(&p, &freezing);
    i = served_once(&p, 0);
    kago__pool_tick(&p, 10000);
    rec.fail_thaw = true;
    rec.ready_on_start = false;
    bool held;
    struct pool_waiter w = {0};
    ok(kago__pool_request(&p, &w, 10001, &held) == NULL && held, "thaw failed: the request is held");
    ok(rec.kills == 1 && i->state == POOL_STOPPING && p.thaw_failures == 1,
       "the unthawable instance is killed");
    ok(rec.starts == 2, "and a cold start serves the request");
    kago__pool_free(&p);
}

static void test_frozen_budget(void)
{
    struct pool a, b;
    reset(&a, &freezing);
    kago__pool_init(&b, &freezing, &ops, NULL);
    rec.freeze_bytes = 100;
    rec.ready_on_start = true;
    bool held;
    struct pool_waiter w[3] = {0};
    for (int k = 0; k < 3; k++)
        kago__pool_request(&a, &w[k], 0, &held);
    struct pool_inst *a1 = w[0].data, *a2 = w[2].data;
    kago__pool_done(&a, a1, 0);
    kago__pool_done(&a, a1, 0);
    kago__pool_done(&a, a2, 2000);
    kago__pool_tick(&a, 10000); /* a1 frozen at 10000 */
    struct pool_inst *b1 = served_once(&b, 1000);
    kago__pool_tick(&b, 11000); /* b1 frozen at 11000 */
    rec.freeze_bytes = 150;
    kago__pool_tick(&a, 12000); /* a2 frozen at 12000 */
    ok(a1->state == POOL_FROZEN && b1->state == POOL_FROZEN && a2->state == POOL_FROZEN, "three frozen");
    struct pool *pools[] = {&a, &b};
    ok(kago__pool_frozen_bytes(&a) == 250 && kago__pool_frozen_bytes(&b) == 100, "frozen memory per app");
    ok(kago__pool_enforce_budget(pools, 2, 350, 12001) == 0, "350 bytes frozen, budget 350: nothing stopped");
    unsigned n = kago__pool_enforce_budget(pools, 2, 300, 12002);
    ok(n == 1 && a1->state == POOL_STOPPING && b1->state == POOL_FROZEN && a2->state == POOL_FROZEN,
       "budget 300 exceeded: the oldest frozen (a1) stopped, the others stay");
    ok(rec.terms == 1 && a.budget_stops == 1, "it was thawed and sent SIGTERM, counted");
    n = kago__pool_enforce_budget(pools, 2, 200, 12003);
    ok(n == 1 && b1->state == POOL_STOPPING && a2->state == POOL_FROZEN,
       "budget 200: the next oldest (the other app's b1) stopped, a2 (150) fits");
    ok(kago__pool_enforce_budget(pools, 2, 100, 12004) == 1 && a2->state == POOL_STOPPING,
       "budget 100: a2 alone exceeds it and is stopped too");
    ok(kago__pool_frozen_bytes(&a) + kago__pool_frozen_bytes(&b) == 0, "nothing frozen left");
    kago__pool_free(&a);
    kago__pool_free(&b);
}

/* A reload changed the app's container: old instances go (ready ones drain, a starting one is
 * abandoned, frozen ones stop), what waits is served by an instance of the new generation. */
static void test_new_generation(void)
{
    struct pool p;
    struct pool_cfg cfg = base;
    cfg.freeze = true;
    cfg.idle_ms = 100;
    reset(&p, &cfg);
    bool held;
    struct pool_waiter w = {0}, w2 = {0}, w3 = {0};
    kago__pool_request(&p, &w, 1000, &held);
    struct pool_inst *a = rec.last_start;
    kago__pool_ready(&p, a, 1001);
    kago__pool_done(&p, a, 1002);
    kago__pool_tick(&p, 1200); /* idle: frozen */
    ok(a->state == POOL_FROZEN, "one frozen instance");
    struct pool_inst *b = kago__pool_request(&p, &w2, 1300, &held);
    ok(b == a && a->state == POOL_READY, "thawed for a request (in flight)");
    kago__pool_request(&p, &w3, 1301, &held); /* concurrency 2: goes to a too */
    rec.starts = rec.drains = rec.kills = 0;
    kago__pool_new_generation(&p, 1400);
    ok(a->state == POOL_DRAINING && rec.drains == 1, "the ready instance of the old container drains");
    ok(rec.starts == 0, "nothing waits: no start yet");
    struct pool_waiter w4 = {0};
    ok(kago__pool_request(&p, &w4, 1401, &held) == NULL && held && rec.starts == 1,
       "the next request starts an instance of the new container (the draining one takes nothing)");
    struct pool_inst *c = rec.last_start;
    ok(c->generation == p.generation && a->generation != p.generation, "generations recorded");
    kago__pool_new_generation(&p, 1402); /* changed again before c was ready */
    ok(c->state == POOL_STOPPING && rec.kills == 1, "a start of the older container is abandoned");
    ok(rec.starts == 2 && p.npending == 1, "and the held request waits for a start of the newest");
    kago__pool_exited(&p, c, 1403);
    ok(p.start_failures == 0, "an abandoned start is no start failure");
    kago__pool_ready(&p, rec.last_start, 1404);
    ok(rec.last_dispatch == &w4 && rec.last_dispatch_inst == rec.last_start, "served by the newest");
    kago__pool_free(&p);
}

/* Crash-loop backoff: doubling from 1 s to the cap, refusals meanwhile, reset by serving a while or a
 * new container; a timeout with another instance up keeps the held requests. */
static void test_backoff(void)
{
    struct pool p;
    struct pool_cfg cfg = base;
    cfg.backoff_max_ms = 8000;
    cfg.idle_ms = 0;
    reset(&p, &cfg);
    rec.fail_on_start = true;
    bool held;
    struct pool_waiter w = {0};
    uint64_t now = 0, want[] = {1000, 2000, 4000, 8000, 8000};
    for (int k = 0; k < 5; k++) {
        now += 10000;
        rec.now = now;
        kago__pool_request(&p, &w, now, &held);
        ok(rec.starts == (unsigned)k + 1 && rec.last_delay == want[k] && p.fail_streak == (unsigned)k + 1,
           "failure %d backs off %llu ms", k + 1, (unsigned long long)rec.last_delay);
    }
    ok(kago__pool_backoff_left(&p, now + 7999) == 1 && kago__pool_backoff_left(&p, now + 8000) == 0,
       "backoff_left counts down to 0");
    /* it works again: ready resets retry_at, and the streak after 10 s of serving */
    rec.fail_on_start = false;
    now += 8000;
    kago__pool_request(&p, &w, now, &held);
    kago__pool_ready(&p, rec.last_start, now + 5);
    ok(rec.dispatched == 1 && kago__pool_backoff_left(&p, now + 5) == 0 && p.fail_streak == 5,
       "a ready instance ends the backoff; the streak stays for now");
    kago__pool_done(&p, rec.last_start, now + 6);
    kago__pool_tick(&p, now + 5 + POOL_BACKOFF_RESET_MS);
    ok(p.fail_streak == 0, "reset once it stayed ready for POOL_BACKOFF_RESET_MS");
    /* a second instance times out while the first serves: requests wait for the first */
    struct pool_inst *first = rec.last_start;
    struct pool_waiter ws[3] = {{0}};
    now += 20000;
    for (int k = 0; k < 3; k++)
        kago__pool_request(&p, &ws[k], now, &held);
    ok(rec.starts == 7 && p.npending == 1, "concurrency 2: the third waits, a second instance starts");
    unsigned rejected = rec.rejected;
    kago__pool_tick(&p, now + cfg.start_timeout_ms);
    ok(rec.last_fail == POOL_FAIL_TIMEOUT && p.fail_streak == 1 && rec.kills == 1,
       "a readiness timeout fails it");
    ok(!ws[2].queued && rec.rejected == rejected + 1, "the request held as long as start_timeout gets 503");
    struct pool_waiter w4 = {0};
    uint64_t t = now + cfg.start_timeout_ms + 1;
    ok(!kago__pool_request(&p, &w4, t, &held) && held && rec.starts == 7,
       "with a ready instance a request is held for it (no refusal, no start during the backoff)");
    kago__pool_done(&p, first, t);
    ok(rec.last_dispatch == &w4, "and gets it");
    /* a new container (reload) is tried at once */
    kago__pool_new_generation(&p, now + cfg.start_timeout_ms + 2);
    ok(p.fail_streak == 0 && kago__pool_backoff_left(&p, now + cfg.start_timeout_ms + 2) == 0,
       "a new generation resets the backoff");
    while (p.insts)
        kago__pool_exited(&p, p.insts, now + cfg.start_timeout_ms + 3);
    kago__pool_free(&p);
}

/* An instance that exits by itself soon after it was ready continues the crash loop (a failure like a
 * failed start); after a healthy lifetime its exit ends the crash loop even when no tick saw it ready
 * that long. */
static void test_backoff_exit_after_ready(void)
{
    struct pool p;
    struct pool_cfg cfg = base;
    cfg.idle_ms = 0;
    reset(&p, &cfg);
    bool held;
    struct pool_waiter w = {0}, w2 = {0};
    uint64_t now = 100000;
    rec.now = now;
    kago__pool_request(&p, &w, now, &held);
    kago__pool_ready(&p, rec.last_start, now + 5);
    kago__pool_done(&p, rec.last_start, now + 6);
    p.fail_streak = 3; /* as after three failed starts */
    p.retry_at = now;
    kago__pool_exited(&p, rec.last_start, now + 2000);
    ok(p.fail_streak == 4 && p.start_failures == 1 && kago__pool_backoff_left(&p, now + 2000) > 0,
       "an exit soon after ready in a crash loop: a failure, the streak grows and the app backs off");
    now += 20000;
    rec.now = now;
    kago__pool_request(&p, &w2, now, &held);
    kago__pool_ready(&p, rec.last_start, now + 5);
    kago__pool_done(&p, rec.last_start, now + 6);
    kago__pool_exited(&p, rec.last_start, now + 5 + POOL_BACKOFF_RESET_MS);
    ok(p.fail_streak == 0 && p.start_failures == 1,
       "an exit after a healthy lifetime (no tick meanwhile): no failure, the streak ends");
    kago__pool_free(&p);
}

/* Adoption at start: instances of a previous serve join with their clocks; no start is counted. The
 * shutdown deadline kills everything (a frozen instance thawed first). */
static void test_adopt_and_kill_all(void)
{
    struct pool p;
    reset(&p, &freezing); /* idle 10 s, then frozen for 60 s */
    struct pool_inst *r = kago__pool_adopt(&p, POOL_READY, 1000, 1500, 5000, 0);
    struct pool_inst *f = kago__pool_adopt(&p, POOL_FROZEN, 2000, 2500, 3000, 4000);
    ok(r->state == POOL_READY && f->state == POOL_FROZEN, "adopted as ready and frozen");
    ok(rec.starts == 0 && p.cold_starts == 0, "no start, none counted");
    bool held;
    struct pool_waiter w = {0};
    ok(kago__pool_request(&p, &w, 6000, &held) == r && !held, "the adopted ready instance serves at once");
    kago__pool_done(&p, r, 6000);
    kago__pool_tick(&p, 15999);
    ok(r->state == POOL_READY, "idle clock runs from its last request");
    kago__pool_tick(&p, 16000);
    ok(r->state == POOL_FROZEN && rec.freezes == 1, "idle 10 s: frozen");
    kago__pool_tick(&p, 63999);
    ok(f->state == POOL_FROZEN, "the adopted frozen one stays frozen");
    kago__pool_tick(&p, 64000);
    ok(f->state != POOL_FROZEN && p.frozen_expired == 1,
       "frozen for: runs from the recorded freeze (4 s + 60 s)");
    kago__pool_free(&p);

    reset(&p, &base);
    r = kago__pool_adopt(&p, POOL_READY, 0, 0, 0, 0);
    f = kago__pool_adopt(&p, POOL_FROZEN, 0, 0, 0, 0);
    r->inflight = 1;
    kago__pool_kill_all(&p, 100);
    ok(rec.kills == 2 && rec.thaws == 1, "deadline: both killed, the frozen one thawed first");
    ok(r->state == POOL_STOPPING && f->state == POOL_STOPPING && r->killed && f->killed, "both stopping");
    ok(p.stopping && kago__pool_request(&p, &w, 101, &held) == NULL && !held, "nothing more is served");
    while (p.insts)
        kago__pool_exited(&p, p.insts, 102);
    ok(rec.starts == 0, "and nothing started");
    kago__pool_free(&p);
}

/* The operator's hand (admin API): freeze pins an instance frozen even when the app stops idle ones,
 * thaw and stop, drain_all. */
static void test_operator_actions(void)
{
    struct pool p;
    reset(&p, &base); /* idle :stop */
    struct pool_waiter w = {0};
    bool held;
    kago__pool_request(&p, &w, 1000, &held);
    struct pool_inst *i = rec.last_start;
    kago__pool_ready(&p, i, 1001);
    ok(kago__pool_freeze_inst(&p, i, 1002) == -EBUSY, "freeze refused while it serves");
    kago__pool_done(&p, i, 1003);
    ok(kago__pool_freeze_inst(&p, i, 1004) == 0 && i->state == POOL_FROZEN && i->pinned, "frozen by hand");
    kago__pool_tick(&p, 1004 + 30000);
    ok(i->state == POOL_FROZEN, "stays frozen though the app's idle action is :stop");
    ok(kago__pool_freeze_inst(&p, i, 31005) == -EINVAL, "freeze of a frozen one refused");
    ok(kago__pool_thaw_inst(&p, i, 31006) == 0 && i->state == POOL_READY && !i->pinned && p.thaws == 1,
       "thawed by hand: ready again");
    ok(kago__pool_thaw_inst(&p, i, 31007) == -EINVAL, "thaw of a ready one refused");
    kago__pool_tick(&p, 31006 + POOL_RECENT_MS); /* (unused that long: drained, nothing started for it) */
    ok(i->state == POOL_DRAINING || i->state == POOL_STOPPING, "lifetime still applies after a thaw");
    ok(kago__pool_stop_inst(&p, i, 91007) == -EINVAL, "stop of a stopping one refused");
    kago__pool_exited(&p, i, 91008);

    struct pool_waiter w2 = {0};
    kago__pool_request(&p, &w2, 100000, &held);
    struct pool_inst *j = rec.last_start;
    kago__pool_ready(&p, j, 100001);
    kago__pool_done(&p, j, 100002);
    kago__pool_freeze_inst(&p, j, 100003);
    kago__pool_tick(&p, 100000 + 60000 + 1);
    ok(j->state != POOL_FROZEN && rec.terms >= 2, "a pinned one still ends at its lifetime");
    kago__pool_exited(&p, j, 160002);

    struct pool_waiter w3 = {0};
    kago__pool_request(&p, &w3, 170000, &held);
    struct pool_inst *k = rec.last_start;
    kago__pool_ready(&p, k, 170001);
    kago__pool_done(&p, k, 170002);
    unsigned terms = rec.terms;
    ok(kago__pool_drain_all(&p, 170003) == 1 && k->state == POOL_STOPPING && rec.terms == terms + 1,
       "drain_all: the idle ready one drains and gets SIGTERM at once");
    ok(rec.starts == 3, "and nothing new starts (no request, min 0)");
    kago__pool_exited(&p, k, 140004);
    kago__pool_free(&p);
}

/* A reload lowers max_instances while every instance is busy: the ones past it drain (none would idle). */
static void test_max_lowered(void)
{
    struct pool p;
    reset(&p, &base);
    rec.ready_on_start = true;
    bool held;
    struct pool_waiter w[8] = {0};
    for (int k = 0; k < 8; k++)
        kago__pool_request(&p, &w[k], 10, &held);
    ok(kago__pool_count(&p, POOL_READY) == 4, "4 busy instances");
    struct pool_inst *light = p.insts;
    kago__pool_done(&p, light, 20);
    struct pool_cfg cfg = base;
    cfg.max = 1;
    kago__pool_configure(&p, &cfg, 30);
    kago__pool_tick(&p, 30);
    ok(kago__pool_count(&p, POOL_READY) == 1 && kago__pool_count(&p, POOL_DRAINING) == 3,
       "max_instances 4 -> 1: three drain at once (%u ready)", kago__pool_count(&p, POOL_READY));
    ok(light->state == POOL_DRAINING, "the least busy first");
    kago__pool_free(&p);
}

int main(void)
{
    test_cold_start_hold_dispatch();
    test_burst_bounded();
    test_hold_timeout();
    test_scale_out();
    test_scale_out_at_top();
    test_idle_and_lifetime();
    test_due();
    test_drain_grace();
    test_min_warm_and_failures();
    test_death_redispatch();
    test_idle_freeze_thaw();
    test_thaw_order();
    test_freeze_expiry_and_lifetime();
    test_frozen_budget();
    test_new_generation();
    test_backoff();
    test_backoff_exit_after_ready();
    test_adopt_and_kill_all();
    test_operator_actions();
    test_max_lowered();
    return tap_done();
}
