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

int cli_signal(const char *s)
{
    char *end;
    long n = strtol(s, &end, 10);
    if (end != s && !*end)
        return n > 0 && n < NSIG ? (int)n : -1;
    if (!strncasecmp(s, "SIG", 3))
        s += 3;
    for (int i = 1; i < NSIG; i++) {
        const char *abbrev = sigabbrev_np(i);
        if (abbrev && !strcasecmp(abbrev, s))
            return i;
    }
    return -1;
}
