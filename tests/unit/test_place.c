/* Placement's pure decisions (src/serve/place.c). */
#include "place.h"
#include "tap.h"

static void test_pick(void)
{
    struct place_cand c[] = {
        {.app = "a", .node_load = 5},
        {.app = "b", .node_load = 0},
        {.app = "a", .node_load = 2},
        {.app = "a", .node_load = 1, .bad = true},
        {.app = "a", .node_load = 0, .bound = true},
        {.app = "a", .node_load = 2},
    };
    ok(kago__place_pick(c, 6, "a") == 2,
       "the least loaded node's, bad and bound ones skipped, first of equals");
    ok(kago__place_pick(c, 6, "b") == 1, "only the app's own");
    ok(kago__place_pick(c, 6, "zz") == -1 && kago__place_pick(c, 0, "a") == -1, "none");
    c[2].bound = c[5].bad = true;
    ok(kago__place_pick(c, 6, "a") == 0, "a loaded node's before none");
}

static void test_steps(void)
{
    ok(kago__place_start(true, true, true) == PLACE_BIND, "another node's instance first (even when local)");
    ok(kago__place_start(false, true, false) == PLACE_LOCAL, "scale-out: a local start");
    ok(kago__place_start(false, false, true) == PLACE_LOCAL, "this node's claim: a local start");
    ok(kago__place_start(false, false, false) == PLACE_CLAIM, "cold: the claim");
    ok(kago__place_start_after_claim(true, false, false), "won: start");
    ok(kago__place_start_after_claim(false, true, false), "the claim was this node's: start");
    ok(kago__place_start_after_claim(false, false, true), "lost a scale-out: start anyway");
    ok(!kago__place_start_after_claim(false, false, false), "lost a cold start: wait for the winner");
}

int main(void)
{
    test_pick();
    test_steps();
    return tap_done();
}
