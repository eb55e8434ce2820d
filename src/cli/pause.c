/* kago pause NAME / kago resume NAME: the cgroup freezer. */
#include "cli.h"

static int freeze(struct cli *g, int argc, char **argv, bool pause)
{
    if (argc != 2)
        return cli_usage(argv[0], "expected: kago %s NAME", argv[0]);
    struct kago_container *c = cli_load(g, argv[1]);
    if (!c)
        return 1;
    struct kago_error *err = NULL;
    int rc = kago_container_pause(c, pause, &err);
    kago_container_free(c);
    return rc < 0 ? cli_fail(err) : 0;
}

CLI_VERB(pause)
{
    return freeze(g, argc, argv, true);
}

CLI_VERB(resume)
{
    return freeze(g, argc, argv, false);
}
