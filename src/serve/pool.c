/* kago serve — the pool state machine. Every function here is O(instances) and allocation-free
 * except for starting an instance; nothing here blocks or reads a clock. */
#include "pool.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>

#include "util.h"

/* Cold-start histogram bucket bounds (ms); the last is +Inf. */
const double kago__pool_hist_bounds_ms[POOL_HIST_BUCKETS] = {2,   5,   10,  20,   30,   50,
                                                             100, 250, 500, 1000, 5000, 1e300};
const double kago__pool_thaw_bounds_ms[POOL_HIST_BUCKETS] = {0.05, 0.1, 0.25, 0.5, 1,    2,
                                                             5,    10,  25,   100, 1000, 1e300};

static void maybe_scale(struct pool *p, uint64_t now);
static void dispatch_waiters(struct pool *p, uint64_t now);

/* The pool changed: something in it may be due now (p->due, and the caller's copy through ops->touched). */
static void touch(struct pool *p)
{
    p->due = 0;
    if (p->ops && p->ops->touched)
        p->ops->touched(p);
}

void kago__pool_init(struct pool *p, const struct pool_cfg *cfg, const struct pool_ops *ops, void *data)
{
    *p = (struct pool){.ops = ops, .data = data};
    p->queue.next = p->queue.prev = &p->queue;
    kago__pool_configure(p, cfg, 0);
}

void kago__pool_configure(struct pool *p, const struct pool_cfg *cfg, uint64_t now)
{
    touch(p);
    p->cfg = *cfg;
    if (p->cfg.concurrency == 0)
        p->cfg.concurrency = 1;
    if (p->cfg.max == 0)
        p->cfg.max = 1;
    if (p->cfg.min > p->cfg.max)
        p->cfg.min = p->cfg.max;
    if (p->cfg.backoff_max_ms == 0)
        p->cfg.backoff_max_ms = POOL_BACKOFF_MAX_MS;
    if (now)
        maybe_scale(p, now);
}

void kago__pool_free(struct pool *p)
{
    while (p->insts) {
        struct pool_inst *i = p->insts;
        p->insts = i->next;
        free(i);
    }
    free(p->hist);
    p->hist = NULL;
}

const char *kago__pool_state_name(enum pool_state s)
{
    static const char *const names[] = {"starting", "ready", "draining", "stopping", "frozen"};
    return names[s];
}

unsigned kago__pool_count(const struct pool *p, enum pool_state s)
{
    unsigned n = 0;
    for (struct pool_inst *i = p->insts; i; i = i->next)
        n += i->state == s;
    return n;
}

bool kago__pool_empty(const struct pool *p)
{
    return !p->insts && p->npending == 0;
}

static void wake(struct pool *p)
{
    if (kago__pool_empty(p) && p->ops->woken)
        p->ops->woken(p);
}

static void enqueue(struct pool *p, struct pool_waiter *w, uint64_t now)
{
    wake(p);
    w->since = now;
    w->queued = true;
    w->prev = p->queue.prev;
    w->next = &p->queue;
    p->queue.prev->next = w;
    p->queue.prev = w;
    p->npending++;
}

static void unqueue(struct pool *p, struct pool_waiter *w)
{
    w->prev->next = w->next;
    w->next->prev = w->prev;
    w->next = w->prev = NULL;
    w->queued = false;
    p->npending--;
}

void kago__pool_cancel(struct pool *p, struct pool_waiter *w)
{
    touch(p);
    if (w->queued)
        unqueue(p, w);
}

/* The ready instance with the fewest in-flight requests; one past its lifetime only when no other is
 * ready (its replacement is starting). */
static struct pool_inst *pick(const struct pool *p)
{
    struct pool_inst *best = NULL;
    for (struct pool_inst *i = p->insts; i; i = i->next)
        if (i->state == POOL_READY && !i->busy &&
            (!best || i->outgoing < best->outgoing ||
             (i->outgoing == best->outgoing && i->inflight < best->inflight)))
            best = i;
    return best;
}

static void kill_inst(struct pool *p, struct pool_inst *i)
{
    i->killed = true;
    p->ops->signal(p, i, SIGKILL);
}

static struct pool_hists *hists(struct pool *p)
{
    if (!p->hist)
        p->hist = xcalloc(1, sizeof(*p->hist));
    return p->hist;
}

static void hist_add(uint64_t *hist, const double *bounds, double ms)
{
    for (int b = 0; b < POOL_HIST_BUCKETS; b++)
        if (ms <= bounds[b]) {
            hist[b]++;
            return;
        }
}

/* Thaws frozen i back to READY; returns the microseconds it took, or < 0 after killing i (an
 * instance that cannot be thawed serves nobody, and SIGKILL reaches frozen tasks). */
static int thaw(struct pool *p, struct pool_inst *i, uint64_t now)
{
    int us = p->ops->thaw(p, i);
    i->frozen_bytes = 0;
    i->pinned = false;
    if (us < 0) {
        p->thaw_failures++;
        i->state = POOL_STOPPING;
        i->term_at = now;
        kill_inst(p, i);
        return -1;
    }
    i->state = POOL_READY;
    i->last_active = now;
    i->thaw_us = us;
    return us;
}

/* Thaws the instance frozen most recently (its caches are the warmest; the older ones are the first
 * to expire) to serve requests. Returns it, or NULL when none is frozen (or none would thaw). */
static struct pool_inst *thaw_one(struct pool *p, uint64_t now)
{
    for (;;) {
        struct pool_inst *best = NULL;
        for (struct pool_inst *i = p->insts; i; i = i->next)
            if (i->state == POOL_FROZEN && (!best || i->frozen_at > best->frozen_at))
                best = i;
        if (!best)
            return NULL;
        int us = thaw(p, best, now);
        if (us >= 0) {
            p->thaws++;
            struct pool_hists *h = hists(p);
            h->thaw_sum_ms += us / 1000.0;
            hist_add(h->thaw, kago__pool_thaw_bounds_ms, us / 1000.0);
            return best;
        }
    }
}

static void terminate(struct pool *p, struct pool_inst *i, uint64_t now)
{
    i->state = POOL_STOPPING;
    i->term_at = now;
    p->ops->signal(p, i, SIGTERM);
}

static void drain(struct pool *p, struct pool_inst *i, uint64_t now)
{
    i->state = POOL_DRAINING;
    i->drain_at = now;
    p->ops->drain(p, i);
    if (i->inflight == 0)
        terminate(p, i, now);
}

/* Idle: freeze instead of drain. If the freezer fails, stop it as idle :stop would. */
static void freeze(struct pool *p, struct pool_inst *i, uint64_t now)
{
    i->frozen_bytes = 0;
    if (p->ops->freeze(p, i) < 0) {
        drain(p, i, now);
        return;
    }
    i->state = POOL_FROZEN;
    i->frozen_at = now;
    p->freezes++;
}

/* Ends a frozen instance: thawed first, so its in-kernel state unwinds and SIGTERM is delivered and
 * handled, then drained like any other (nothing is in flight, so SIGTERM follows at once). */
static void stop_frozen(struct pool *p, struct pool_inst *i, uint64_t now)
{
    if (thaw(p, i, now) >= 0)
        drain(p, i, now);
}

/* Starts instances while the app is below min_instances, or while the load (in flight on ready
 * instances plus held requests) exceeds concurrency × (ready + starting), up to max_instances. */
static void maybe_scale(struct pool *p, uint64_t now)
{
    while (!p->stopping) {
        /* (an instance past its lifetime is capacity leaving: each wants a replacement, max or not) */
        unsigned active = 0, outgoing = 0, starting = 0, load = p->npending;
        for (struct pool_inst *i = p->insts; i; i = i->next) {
            if (i->state == POOL_READY && i->outgoing)
                outgoing++;
            else if (i->state == POOL_READY || i->state == POOL_STARTING)
                active++;
            starting += i->state == POOL_STARTING;
            if (i->state == POOL_READY)
                load += i->inflight;
        }
        if (active >= p->cfg.max)
            return;
        if (!(active < p->cfg.min || outgoing > starting || load > active * p->cfg.concurrency))
            return;
        if (active >= p->cfg.min && active > 0 && p->ops->may_scale_out && !p->ops->may_scale_out(p))
            return;
        /* A frozen instance is capacity that needs no start. */
        if (thaw_one(p, now)) {
            dispatch_waiters(p, now);
            continue;
        }
        if (now < p->retry_at)
            return;
        wake(p);
        struct pool_inst *i = xcalloc(1, sizeof(*i));
        i->state = POOL_STARTING;
        i->thaw_us = -1;
        i->generation = p->generation;
        i->created = i->last_active = now;
        i->next = p->insts;
        p->insts = i;
        /* start may report ready or exited before it returns: do not touch i afterwards. */
        p->ops->start(p, i);
    }
}

/* An instance that is ready (or busy, or starting) will take held requests later. */
static bool has_capacity(const struct pool *p)
{
    for (const struct pool_inst *i = p->insts; i; i = i->next)
        if (i->state == POOL_READY || i->state == POOL_STARTING)
            return true;
    return false;
}

uint64_t kago__pool_backoff_left(const struct pool *p, uint64_t now)
{
    return p->fail_streak && now < p->retry_at && !has_capacity(p) ? p->retry_at - now : 0;
}

static uint64_t backoff_delay(const struct pool *p)
{
    unsigned shift = p->fail_streak > 1 ? p->fail_streak - 1 : 0;
    uint64_t d = shift >= 20 ? p->cfg.backoff_max_ms : (uint64_t)POOL_BACKOFF_MIN_MS << shift;
    return d < p->cfg.backoff_max_ms ? d : p->cfg.backoff_max_ms;
}

static void reject_all(struct pool *p)
{
    while (p->queue.next != &p->queue) {
        struct pool_waiter *w = p->queue.next;
        unqueue(p, w);
        p->rejected++;
        p->ops->reject(p, w, 503);
    }
}

/* i never became ready: count it, back off, and answer the held requests at once when no other
 * instance will take them (they would only wait for start_timeout). */
static void start_failed(struct pool *p, struct pool_inst *i, enum pool_fail why, uint64_t now)
{
    i->failed = true;
    p->start_failures++;
    p->fail_streak++;
    /* a first crash after it was ready is started again at once (as Kubernetes restarts a container the
     * first time): only a second one in a row, before 10 s of health, makes it a crash loop */
    uint64_t delay = why == POOL_FAIL_CRASHED && p->fail_streak == 1 ? 0 : backoff_delay(p);
    p->retry_at = now + delay;
    if (p->ops->start_failed)
        p->ops->start_failed(p, i, why, delay);
    if (delay && !has_capacity(p))
        reject_all(p);
}

/* Held requests go to ready instances with room below concurrency, oldest first. */
static void dispatch_waiters(struct pool *p, uint64_t now)
{
    while (p->queue.next != &p->queue) {
        struct pool_inst *i = pick(p);
        if (!i || i->inflight >= p->cfg.concurrency)
            return;
        struct pool_waiter *w = p->queue.next;
        unqueue(p, w);
        i->inflight++;
        i->last_active = now;
        p->ops->dispatch(p, w, i);
    }
}

struct pool_inst *kago__pool_request(struct pool *p, struct pool_waiter *w, uint64_t now, bool *held)
{
    touch(p);
    *held = false;
    if (p->stopping) {
        p->rejected++;
        return NULL;
    }
    /* concurrency is also a cap: an instance never has more in flight (a burst piled onto one
     * instance overflows its accept backlog); the excess waits in the bounded queue. */
    struct pool_inst *i = pick(p);
    if (i && i->inflight < p->cfg.concurrency && p->npending == 0) {
        i->inflight++;
        i->last_active = now;
        maybe_scale(p, now);
        return i;
    }
    /* No room on a ready instance: a frozen one serves it without a start. */
    if (p->npending == 0 && (i = thaw_one(p, now))) {
        i->inflight++;
        maybe_scale(p, now);
        return i;
    }
    /* Backing off with nothing that could take it: answer now rather than after start_timeout. */
    if (p->npending >= p->cfg.max_pending || kago__pool_backoff_left(p, now)) {
        p->rejected++;
        return NULL;
    }
    enqueue(p, w, now);
    *held = true;
    maybe_scale(p, now);
    return NULL;
}

void kago__pool_done(struct pool *p, struct pool_inst *i, uint64_t now)
{
    touch(p);
    if (i->inflight)
        i->inflight--;
    i->served++;
    i->last_active = now;
    if (i->state == POOL_DRAINING && i->inflight == 0)
        terminate(p, i, now);
    else if (i->state == POOL_READY)
        dispatch_waiters(p, now);
}

void kago__pool_ready(struct pool *p, struct pool_inst *i, uint64_t now)
{
    touch(p);
    if (i->state != POOL_STARTING)
        return;
    i->state = POOL_READY;
    i->ready_at = i->last_active = now;
    if (p->ops->ready)
        p->ops->ready(p, i);
    /* the oldest instance past its lifetime goes now that this one takes its place */
    struct pool_inst *old = NULL;
    for (struct pool_inst *o = p->insts; o; o = o->next)
        if (o->state == POOL_READY && o->outgoing && (!old || o->created < old->created))
            old = o;
    if (old)
        drain(p, old, now);
    /* (retry_at stays: no more starts until then; fail_streak until it has served a while) */
    double ms = (double)(now - i->created);
    if (i->tier == POOL_TIER_RESTORE) {
        p->restores++;
        hists(p)->restore_sum_ms += ms;
        hist_add(hists(p)->restore, kago__pool_hist_bounds_ms, ms);
    } else {
        p->cold_starts++;
        hists(p)->cold_sum_ms += ms;
        hist_add(hists(p)->cold, kago__pool_hist_bounds_ms, ms);
    }
    dispatch_waiters(p, now);
    maybe_scale(p, now);
}

/* Ready a while, and no start failed meanwhile: the crash loop is over. (ready_at is 0 for an instance
 * that never became ready.) */
static void healthy_check(struct pool *p, const struct pool_inst *i, uint64_t now)
{
    if (p->fail_streak && i->ready_at && now - i->ready_at >= POOL_BACKOFF_RESET_MS &&
        now >= p->retry_at + POOL_BACKOFF_RESET_MS)
        p->fail_streak = 0;
}

void kago__pool_exited(struct pool *p, struct pool_inst *i, uint64_t now)
{
    touch(p);
    /* an exit after a healthy lifetime ends the crash loop even between two ticks; an exit by itself
     * soon after it became ready continues it */
    healthy_check(p, i, now);
    if (i->state == POOL_READY && !i->killed && !p->stopping && i->ready_at &&
        now - i->ready_at < POOL_BACKOFF_RESET_MS)
        start_failed(p, i, POOL_FAIL_CRASHED, now);
    for (struct pool_inst **pp = &p->insts; *pp; pp = &(*pp)->next)
        if (*pp == i) {
            *pp = i->next;
            break;
        }
    if (i->state == POOL_STARTING && !i->failed && !p->stopping)
        start_failed(p, i, POOL_FAIL_EXITED, now);
    p->ops->remove(p, i);
    free(i);
    if (!p->stopping) {
        dispatch_waiters(p, now);
        maybe_scale(p, now);
    }
}

static void expire_waiters(struct pool *p, uint64_t now)
{
    while (p->queue.next != &p->queue && now - p->queue.next->since >= p->cfg.start_timeout_ms) {
        struct pool_waiter *w = p->queue.next;
        unqueue(p, w);
        p->rejected++;
        p->ops->reject(p, w, 503);
    }
}

static void due_at(uint64_t *due, uint64_t t)
{
    if (t < *due)
        *due = t;
}

/* The earliest time the next tick could find something to do (what kago__pool_tick tests, mirrored), at
 * most POOL_DUE_MAX_MS from now; now when in doubt. */
static uint64_t next_due(const struct pool *p, uint64_t now)
{
    uint64_t due = now + POOL_DUE_MAX_MS;
    const struct pool_cfg *c = &p->cfg;
    if (c->min || p->stopping) /* standbys to keep, a stop: every tick */
        return now;
    if (p->npending) { /* held requests: their timeout, and a start the backoff holds back */
        due_at(&due, p->queue.next->since + c->start_timeout_ms);
        if (p->retry_at > now)
            due_at(&due, p->retry_at);
    }
    for (const struct pool_inst *i = p->insts; i; i = i->next) {
        if (c->lifetime_ms && i->state != POOL_STARTING)
            due_at(&due, i->created + c->lifetime_ms + (i->outgoing ? c->start_timeout_ms : 0));
        switch (i->state) {
        case POOL_STARTING:
            if (!i->queued) /* (a queued one's clock starts when it leaves the queue: its app is touched) */
                due_at(&due, i->created + c->start_timeout_ms);
            break;
        case POOL_READY:
            if (p->fail_streak)
                due_at(&due, (i->ready_at > p->retry_at ? i->ready_at : p->retry_at) + POOL_BACKOFF_RESET_MS);
            if (i->generation != p->generation)
                return now;
            if (c->idle_ms && !i->busy && i->inflight == 0)
                due_at(&due, i->last_active + c->idle_ms);
            break;
        case POOL_FROZEN:
            if (i->generation != p->generation || (!i->pinned && !c->freeze))
                return now;
            if (!i->pinned && c->freeze_ms)
                due_at(&due, i->frozen_at + c->freeze_ms);
            break;
        case POOL_DRAINING:
            due_at(&due, i->drain_at + c->stop_grace_ms);
            break;
        case POOL_STOPPING:
            if (!i->killed)
                due_at(&due, i->term_at + c->stop_grace_ms);
            break;
        case POOL_NSTATES:
            break;
        }
    }
    return due;
}

void kago__pool_tick(struct pool *p, uint64_t now)
{
    unsigned active = kago__pool_count(p, POOL_READY) + kago__pool_count(p, POOL_STARTING);
    for (struct pool_inst *i = p->insts; i; i = i->next) {
        switch (i->state) {
        case POOL_STARTING:
            if (!i->queued && now - i->created >= p->cfg.start_timeout_ms) {
                i->state = POOL_STOPPING;
                i->term_at = now;
                active--;
                start_failed(p, i, POOL_FAIL_TIMEOUT, now);
                kill_inst(p, i);
            }
            break;
        case POOL_READY:
            healthy_check(p, i, now);
            if (i->busy)
                break;
            if (i->outgoing) {
                active--;
                if (now - i->created >= p->cfg.lifetime_ms + p->cfg.start_timeout_ms)
                    drain(p, i, now); /* its replacement did not come: it goes all the same */
            } else if (i->generation != p->generation) {
                active--;
                drain(p, i, now);
            } else if (p->cfg.lifetime_ms && now - i->created >= p->cfg.lifetime_ms) {
                /* An instance in use is replaced, not just drained: it serves on until the instance
                 * started for it is ready (else every request waited for a cold start, each lifetime) */
                active--;
                if (i->inflight || p->npending || now - i->last_active < POOL_RECENT_MS ||
                    active < p->cfg.min)
                    i->outgoing = true;
                else
                    drain(p, i, now);
            } else if (p->cfg.idle_ms && i->inflight == 0 && now - i->last_active >= p->cfg.idle_ms &&
                       active > p->cfg.min) {
                active--;
                if (p->cfg.freeze)
                    freeze(p, i, now);
                else
                    drain(p, i, now);
            }
            break;
        case POOL_FROZEN:
            /* Lifetime still applies; a reload that turned freezing off ends them too. */
            if ((!i->pinned &&
                 (!p->cfg.freeze || (p->cfg.freeze_ms && now - i->frozen_at >= p->cfg.freeze_ms))) ||
                i->generation != p->generation ||
                (p->cfg.lifetime_ms && now - i->created >= p->cfg.lifetime_ms)) {
                p->frozen_expired++;
                stop_frozen(p, i, now);
            }
            break;
        case POOL_NSTATES:
            break;
        case POOL_DRAINING:
            if (now - i->drain_at >= p->cfg.stop_grace_ms)
                terminate(p, i, now);
            break;
        case POOL_STOPPING:
            if (!i->killed && now - i->term_at >= p->cfg.stop_grace_ms)
                kill_inst(p, i);
            break;
        }
    }
    /* a max_instances a reload lowered: the ready instances past it drain, the least busy first (else only
     * their lifetimes ended them: a busy app never has an idle one) */
    while (active > p->cfg.max) {
        struct pool_inst *least = pick(p); /* (an outgoing one only when no other is ready) */
        if (!least || least->outgoing)
            break;
        active--;
        drain(p, least, now);
    }
    /* after the starts that timed out: their held requests are told why (see start_failed) */
    expire_waiters(p, now);
    maybe_scale(p, now);
    p->due = next_due(p, now);
}

void kago__pool_retire(struct pool *p, struct pool_inst *i, uint64_t now)
{
    touch(p);
    if (i->state == POOL_READY) {
        drain(p, i, now);
        maybe_scale(p, now);
    }
}

void kago__pool_new_generation(struct pool *p, uint64_t now)
{
    touch(p);
    p->generation++;
    p->fail_streak = 0; /* a new container (a deploy) is tried at once */
    p->retry_at = 0;
    /* a start of the old container is abandoned: what waits for it is served by a new one */
    for (struct pool_inst *i = p->insts; i; i = i->next)
        if (i->state == POOL_STARTING) {
            i->state = POOL_STOPPING;
            i->term_at = now;
            kill_inst(p, i);
        }
    kago__pool_tick(p, now); /* drains the ready ones, stops the frozen ones, starts anew */
}

void kago__pool_set_busy(struct pool *p, struct pool_inst *i, bool busy, uint64_t now)
{
    touch(p);
    i->busy = busy;
    if (!busy && i->state == POOL_READY) {
        i->last_active = now; /* its idle time starts now, not before the checkpoint */
        dispatch_waiters(p, now);
        maybe_scale(p, now);
    }
}

void kago__pool_give_back(struct pool *p)
{
    touch(p);
    while (p->queue.next != &p->queue) {
        struct pool_waiter *w = p->queue.next;
        unqueue(p, w);
        p->ops->reject(p, w, 0);
    }
}

void kago__pool_stop(struct pool *p, uint64_t now)
{
    touch(p);
    p->stopping = true;
    reject_all(p);
    for (struct pool_inst *i = p->insts; i; i = i->next) {
        if (i->state == POOL_STARTING) {
            i->state = POOL_STOPPING;
            i->term_at = now;
            kill_inst(p, i);
        } else if (i->state == POOL_READY) {
            drain(p, i, now);
        } else if (i->state == POOL_FROZEN) {
            stop_frozen(p, i, now);
        }
    }
}

void kago__pool_kill_all(struct pool *p, uint64_t now)
{
    touch(p);
    p->stopping = true;
    reject_all(p);
    for (struct pool_inst *i = p->insts; i; i = i->next)
        if (!i->killed) {
            if (i->state == POOL_FROZEN && thaw(p, i, now) < 0)
                continue; /* (killed by thaw) */
            if (i->state != POOL_STOPPING)
                i->term_at = now;
            i->state = POOL_STOPPING;
            kill_inst(p, i);
        }
}

struct pool_inst *kago__pool_adopt(struct pool *p, enum pool_state state, uint64_t created, uint64_t ready_at,
                                   uint64_t last_active, uint64_t frozen_at)
{
    touch(p);
    wake(p);
    struct pool_inst *i = xcalloc(1, sizeof(*i));
    i->state = state == POOL_FROZEN ? POOL_FROZEN : POOL_READY;
    i->thaw_us = -1;
    i->generation = p->generation;
    i->created = created;
    i->ready_at = ready_at;
    i->last_active = last_active;
    i->frozen_at = frozen_at;
    i->next = p->insts;
    p->insts = i;
    return i;
}

uint64_t kago__pool_frozen_bytes(const struct pool *p)
{
    uint64_t n = 0;
    for (const struct pool_inst *i = p->insts; i; i = i->next)
        if (i->state == POOL_FROZEN)
            n += i->frozen_bytes;
    return n;
}

unsigned kago__pool_enforce_budget(struct pool *const *pools, size_t n, uint64_t budget, uint64_t now)
{
    uint64_t total = 0;
    for (size_t k = 0; k < n; k++)
        total += kago__pool_frozen_bytes(pools[k]);
    unsigned stopped = 0;
    while (total > budget) {
        struct pool *owner = NULL;
        struct pool_inst *oldest = NULL;
        for (size_t k = 0; k < n; k++)
            for (struct pool_inst *i = pools[k]->insts; i; i = i->next)
                if (i->state == POOL_FROZEN && (!oldest || i->frozen_at < oldest->frozen_at)) {
                    oldest = i;
                    owner = pools[k];
                }
        if (!oldest)
            break;
        total -= oldest->frozen_bytes;
        owner->budget_stops++;
        touch(owner);
        stop_frozen(owner, oldest, now);
        stopped++;
    }
    return stopped;
}

int kago__pool_stop_inst(struct pool *p, struct pool_inst *i, uint64_t now)
{
    touch(p);
    switch (i->state) {
    case POOL_READY:
        drain(p, i, now);
        break;
    case POOL_FROZEN:
        stop_frozen(p, i, now);
        break;
    case POOL_STARTING:
        i->state = POOL_STOPPING;
        i->term_at = now;
        kill_inst(p, i);
        break;
    default:
        return -EINVAL;
    }
    maybe_scale(p, now);
    return 0;
}

int kago__pool_freeze_inst(struct pool *p, struct pool_inst *i, uint64_t now)
{
    touch(p);
    if (i->state != POOL_READY)
        return -EINVAL;
    if (i->inflight || i->busy)
        return -EBUSY;
    freeze(p, i, now);
    if (i->state == POOL_FROZEN)
        i->pinned = true;
    maybe_scale(p, now); /* (min_instances: a frozen one does not count) */
    return 0;
}

int kago__pool_thaw_inst(struct pool *p, struct pool_inst *i, uint64_t now)
{
    touch(p);
    if (i->state != POOL_FROZEN)
        return -EINVAL;
    if (thaw(p, i, now) >= 0) {
        p->thaws++;
        dispatch_waiters(p, now);
    }
    return 0;
}

unsigned kago__pool_drain_all(struct pool *p, uint64_t now)
{
    touch(p);
    unsigned n = 0;
    for (struct pool_inst *i = p->insts; i; i = i->next)
        if (i->state == POOL_READY || i->state == POOL_FROZEN) {
            kago__pool_stop_inst(p, i, now);
            n++;
        }
    return n;
}
