/* kago serve — the instances of one app and every decision about them: which instance serves a
 * request, when to start, hold, scale out, freeze, thaw, drain, stop and kill. A pure state machine: it never
 * reads a clock or touches a container; the caller passes `now` (ms) to every event and carries
 * out the actions through pool_ops. Unit tests drive it with a fake clock. */
#ifndef KAGO_SERVE_POOL_H
#define KAGO_SERVE_POOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* FROZEN: idle, its cgroup frozen (idle :freeze); a request thaws it back to READY without a start. */
enum pool_state { POOL_STARTING, POOL_READY, POOL_DRAINING, POOL_STOPPING, POOL_FROZEN, POOL_NSTATES };

/* How an instance was started: booted from its spec, or restored from the app's CRIU image. */
enum pool_tier { POOL_TIER_COLD, POOL_TIER_RESTORE, POOL_NTIERS };

struct pool_cfg {
    uint64_t lifetime_ms, idle_ms, start_timeout_ms, stop_grace_ms;
    unsigned min, max, concurrency, max_pending;
    bool freeze;             /* idle instances are frozen instead of drained */
    uint64_t freeze_ms;      /* then stopped after this long frozen; 0 = only by lifetime or memory budget */
    uint64_t backoff_max_ms; /* cap of the delay after failed starts (0: POOL_BACKOFF_MAX_MS) */
};

/* Crash-loop backoff: after the n-th failed start in a row the app is not started again for
 * min(POOL_BACKOFF_MIN_MS << (n - 1), backoff_max_ms); the count is reset once an instance stayed
 * ready for POOL_BACKOFF_RESET_MS with no failure meanwhile, or when the app's container changes (a
 * reload). An instance that exits by itself within POOL_BACKOFF_RESET_MS of becoming ready (it listened,
 * then died) is a failure too, started again at once the first time, backed off from the second in a row
 * (a crash loop, as Kubernetes counts it); one that exits later is not. */
#define POOL_BACKOFF_MIN_MS   1000
#define POOL_BACKOFF_MAX_MS   (5 * 60 * 1000)
#define POOL_BACKOFF_RESET_MS (10 * 1000)
#define POOL_RECENT_MS        (60 * 1000) /* used this recently at its lifetime: replaced before it goes */
#define POOL_DUE_MAX_MS       250 /* (what a caller changes without a pool call is seen this late at most) */

/* Why a start failed, for pool_ops.start_failed. */
enum pool_fail { POOL_FAIL_EXITED, POOL_FAIL_TIMEOUT, POOL_FAIL_CRASHED };

struct pool_inst {
    struct pool_inst *next;
    enum pool_state state;
    uint64_t created, ready_at, last_active, drain_at, term_at, frozen_at;
    uint64_t frozen_bytes; /* memory held while frozen (set by the freeze action), for the budget */
    unsigned inflight;     /* requests and open streams routed to it and not finished */
    uint64_t served;
    bool killed;   /* SIGKILL sent */
    bool failed;   /* never became ready: counted as a start failure */
    bool busy;     /* being checkpointed: READY, but routed nothing and never stopped for idleness */
    bool queued;   /* STARTING, but waiting for its turn in the caller's start queue: no start timeout yet */
    bool pinned;   /* FROZEN by the operator (kago__pool_freeze_inst): the idle policy does not end it */
    bool outgoing; /* READY past its lifetime, serving until the replacement started for it is ready */
    enum pool_tier tier;
    int thaw_us; /* >= 0: thawed for the request being routed, in this many microseconds (reset by it) */
    unsigned generation; /* the pool's generation when it was started */
    void *data;          /* the caller's instance */
};

/* A held request. The caller embeds it; the pool links it while it waits. */
struct pool_waiter {
    struct pool_waiter *next, *prev;
    uint64_t since;
    bool queued;
    void *data;
};

struct pool;
struct pool_ops {
    /* Begin starting the container of i; report pool_ready/pool_exited later. */
    void (*start)(struct pool *p, struct pool_inst *i);
    /* A held request now has instance i (its in-flight count already includes it). */
    void (*dispatch)(struct pool *p, struct pool_waiter *w, struct pool_inst *i);
    /* A held request gets status (503) and leaves the queue. */
    void (*reject)(struct pool *p, struct pool_waiter *w, int status);
    /* i takes no new requests any more (close its idle upstream connections). */
    void (*drain)(struct pool *p, struct pool_inst *i);
    void (*signal)(struct pool *p, struct pool_inst *i, int sig);
    /* i is gone from the pool (its process exited): remove every trace. The pool frees i after. */
    void (*remove)(struct pool *p, struct pool_inst *i);
    /* Freeze i's cgroup and set i->frozen_bytes; < 0 when it could not (then i is drained). */
    int (*freeze)(struct pool *p, struct pool_inst *i);
    /* Thaw i's cgroup. Returns the microseconds the thaw took (>= 0), or < 0 when it could not (then
     * i is killed). */
    int (*thaw)(struct pool *p, struct pool_inst *i);
    /* Optional: the start of i failed (i is still linked when why is POOL_FAIL_TIMEOUT, being killed);
     * the app backs off for delay_ms (p->fail_streak counts this failure). Called before held
     * requests are rejected, so the caller can record the reason they are told. */
    void (*start_failed)(struct pool *p, struct pool_inst *i, enum pool_fail why, uint64_t delay_ms);
    /* Optional: the pool had neither instances nor held requests and now has one of them: from now on
     * kago__pool_tick has work to time (until kago__pool_empty again). */
    void (*woken)(struct pool *p);
    /* Optional: the pool changed, so something in it may be due now (p->due is 0). */
    void (*touched)(struct pool *p);
    /* Optional: i became ready (after its state changed, before held requests are dispatched). */
    void (*ready)(struct pool *p, struct pool_inst *i);
    /* Optional: whether the app may start another instance for its load now (scale up first: its instances
     * are not at the top of their range yet); min_instances and the first instance are started anyway. */
    bool (*may_scale_out)(struct pool *p);
};

#define POOL_HIST_BUCKETS 12
extern const double kago__pool_hist_bounds_ms[POOL_HIST_BUCKETS]; /* upper bounds; last is +Inf */
extern const double kago__pool_thaw_bounds_ms[POOL_HIST_BUCKETS]; /* finer: a thaw takes microseconds */

/* Durations, by bucket (cumulated only when printed). Allocated on an app's first observation. */
struct pool_hists {
    uint64_t cold[POOL_HIST_BUCKETS];    /* cold start → ready */
    uint64_t restore[POOL_HIST_BUCKETS]; /* restore → ready */
    uint64_t thaw[POOL_HIST_BUCKETS];    /* thaws that served a request */
    double cold_sum_ms, restore_sum_ms, thaw_sum_ms;
};

struct pool {
    struct pool_cfg cfg;
    const struct pool_ops *ops;
    void *data;
    struct pool_inst *insts;
    struct pool_waiter queue; /* sentinel of the FIFO of held requests */
    unsigned npending;
    bool stopping;        /* pool_stop was called: drain everything, start nothing */
    unsigned generation;  /* bumped when the app's container changes: older instances are retired */
    uint64_t retry_at;    /* no start before this (backoff after a failed start) */
    unsigned fail_streak; /* failed starts in a row (see POOL_BACKOFF_MIN_MS) */
    /* Nothing in the pool is due before this (ms): kago__pool_tick sets it, at most POOL_DUE_MAX_MS ahead,
     * and every call that changes the pool clears it (0: due now). A tick may skip the pool until then. */
    uint64_t due;
    /* counters for metrics */
    uint64_t cold_starts, start_failures, rejected;
    uint64_t freezes, thaws, thaw_failures, frozen_expired, budget_stops;
    uint64_t stops_at_once; /* stop signals an instance could not act on: SIGKILL instead (instance.c) */
    /* the CRIU tier: the pool counts restores (by tier at pool_ready); the caller counts the rest */
    uint64_t restores, restore_failures, checkpoints, checkpoint_failures;
    struct pool_hists *hist; /* NULL until the first start, restore or thaw: an idle app has none */
};

void kago__pool_init(struct pool *p, const struct pool_cfg *cfg, const struct pool_ops *ops, void *data);
/* Frees the instance records (only for tests and after every instance was removed). */
void kago__pool_free(struct pool *p);

/* The app's container changed (a reload): instances of older generations are retired as if their
 * lifetime had ended (drained, frozen ones stopped; starting ones once they have served what waited
 * for them); new requests start instances of the new one. */
void kago__pool_new_generation(struct pool *p, uint64_t now);

/* The held requests leave the pool unanswered: ops->reject with status 0 (their app left in a reload:
 * they are routed again). */
void kago__pool_give_back(struct pool *p);

/* A request arrives. Returns the ready instance with the fewest in flight when it is below
 * concurrency (its in-flight count then includes the request), or NULL: then *held says whether
 * w was queued (dispatch or reject follows later) or refused outright (answer 503). */
struct pool_inst *kago__pool_request(struct pool *p, struct pool_waiter *w, uint64_t now, bool *held);
/* A held request went away (client closed). */
void kago__pool_cancel(struct pool *p, struct pool_waiter *w);
/* A request (or stream) routed to i finished. */
void kago__pool_done(struct pool *p, struct pool_inst *i, uint64_t now);
/* i accepts connections now. */
void kago__pool_ready(struct pool *p, struct pool_inst *i, uint64_t now);
/* i's process exited (or it could not be created): remove it. */
void kago__pool_exited(struct pool *p, struct pool_inst *i, uint64_t now);
/* Timers: held requests past start_timeout, starts past start_timeout, lifetime, idle, drain
 * grace, kill grace, min_instances. Call at least every 100 ms. */
void kago__pool_tick(struct pool *p, uint64_t now);
/* i stopped working (its listener refuses connections): route nothing more to it, drain it. */
void kago__pool_retire(struct pool *p, struct pool_inst *i, uint64_t now);
/* i is being checkpointed (busy) or no longer: a busy instance takes no requests (they wait for it
 * rather than start another instance) and is not stopped for idleness. */
void kago__pool_set_busy(struct pool *p, struct pool_inst *i, bool busy, uint64_t now);
/* Drain everything and start nothing more (shutdown, app removed); held requests get 503. */
void kago__pool_stop(struct pool *p, uint64_t now);
/* Shutdown's deadline: every instance not yet killed is stopped with SIGKILL now (requests still in
 * flight on it are cut). */
void kago__pool_kill_all(struct pool *p, uint64_t now);
/* An instance a previous serve made, taken over at start (see adopt.c): linked as READY or FROZEN
 * with its clocks as recorded (monotonic ms), counted as no start. Returns it (the caller sets data). */
struct pool_inst *kago__pool_adopt(struct pool *p, enum pool_state state, uint64_t created, uint64_t ready_at,
                                   uint64_t last_active, uint64_t frozen_at);
/* Changes the policy (reload). */
void kago__pool_configure(struct pool *p, const struct pool_cfg *cfg, uint64_t now);

/* The host-wide memory budget for frozen instances, over the pools of every app: while their
 * frozen_bytes sum exceeds budget, the instance frozen longest ago is thawed and drained.
 * Returns how many were stopped. */
unsigned kago__pool_enforce_budget(struct pool *const *pools, size_t n, uint64_t budget, uint64_t now);
uint64_t kago__pool_frozen_bytes(const struct pool *p);

/* Milliseconds until the app may be started again after failed starts, while no instance is ready or
 * starting (then requests are refused with 503 at once); 0 when it is not backing off. */
uint64_t kago__pool_backoff_left(const struct pool *p, uint64_t now);

/* The operator's hand (the admin API, the dashboard). Each returns 0, or -EBUSY / -EINVAL when i is not
 * in a state for it (stop: already draining or stopping; freeze: not READY, or serving, or busy; thaw: not
 * FROZEN). stop drains a READY one, stops a FROZEN one, kills a STARTING one. freeze pins i frozen: it stays
 * so until a request or thaw needs it, its lifetime ends or the app's container changes (or the frozen
 * memory budget stops it), even when the app's idle action is not :freeze. */
int kago__pool_stop_inst(struct pool *p, struct pool_inst *i, uint64_t now);
int kago__pool_freeze_inst(struct pool *p, struct pool_inst *i, uint64_t now);
int kago__pool_thaw_inst(struct pool *p, struct pool_inst *i, uint64_t now);
/* Drains the app: every READY instance drains, every FROZEN one stops (STARTING ones serve what waits for
 * them, then idle out). The next request starts a new instance. Returns how many were asked to stop. */
unsigned kago__pool_drain_all(struct pool *p, uint64_t now);

unsigned kago__pool_count(const struct pool *p, enum pool_state s);
bool kago__pool_empty(const struct pool *p);
const char *kago__pool_state_name(enum pool_state s);

#endif
