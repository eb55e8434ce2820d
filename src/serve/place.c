/* kago serve --cluster: placement's pure decisions (place.h). */
#include "place.h"

#include <string.h>

long kago__place_pick(const struct place_cand *c, size_t n, const char *app)
{
    long best = -1;
    for (size_t i = 0; i < n; i++) {
        if (c[i].bad || c[i].bound || strcmp(c[i].app, app))
            continue;
        if (best < 0 || c[i].node_load < c[best].node_load)
            best = (long)i;
    }
    return best;
}

enum place_step kago__place_start(bool have_cand, bool has_local, bool holds_claim)
{
    if (have_cand)
        return PLACE_BIND;
    return has_local || holds_claim ? PLACE_LOCAL : PLACE_CLAIM;
}

bool kago__place_start_after_claim(bool won, bool holder_is_me, bool pool_has_other)
{
    return won || holder_is_me || pool_has_other;
}
