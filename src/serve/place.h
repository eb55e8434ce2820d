/* kago serve --cluster: placement's decisions, pure (no I/O, no clock, no libuv): which instance a pool
 * takes and whether a node starts one, unit-tested in tests/unit/test_place.c. placement.c feeds them what
 * the watch and the pool say and carries out the answer (docs/cluster.md, Placement). */
#ifndef KAGO_SERVE_PLACE_H
#define KAGO_SERVE_PLACE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Another node's instance, as this node knows it. */
struct place_cand {
    const char *app;
    int64_t node_load; /* its node's published load (0 when unknown) */
    bool bad;          /* a connect to it failed: not used until it is published again */
    bool bound;        /* this node's pool of app uses it already */
};

/* The instance to use for app: among those of app neither bad nor bound, the one of the least loaded node
 * (the first of equals); -1 when none. */
long kago__place_pick(const struct place_cand *c, size_t n, const char *app);

enum place_step {
    PLACE_BIND,  /* take another node's instance (kago__place_pick's) */
    PLACE_LOCAL, /* start one here */
    PLACE_CLAIM, /* run the try-once claim of the app */
};
/* The pool wants an instance: another node's when there is one to take; else a start here when this node
 * runs the app already (a scale-out) or holds its claim; else the claim decides. */
enum place_step kago__place_start(bool have_cand, bool has_local, bool holds_claim);

/* After the claim: true to start here (this node won, or the claim was already its own on this lease, or
 * the pool has another instance: a scale-out, which the claim does not decide); false to wait for the
 * holder's instance. */
bool kago__place_start_after_claim(bool won, bool holder_is_me, bool pool_has_other);

#endif
