/* Small helpers the verbs share. */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cli.h"

struct kago_container *cli_load(struct cli *g, const char *name)
{
    struct kago_container *c = NULL;
    struct kago_error *err = NULL;
    if (kago_container_load(g->root, name, &c, &err) < 0) {
        cli_fail(err);
        return NULL;
    }
    return c;
}
