/* kago run Kagofile [NAME...] [--set KEY=VALUE]... [--detach] [--verbose]: start the file's containers
 * and supervise them (hooks, timers, signals, reload) until they end. run.c hands over here when its
 * first argument is a Kagofile. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../config/kagofile.h"
#include "cli.h"

static void usage(void)
{
    printf("usage: kago run Kagofile [NAME...] [--set KEY=VALUE]... [--detach] [--verbose]\n"
           "  NAME        run only these containers of the file (default: all)\n"
           "  --set K=V   a value the file reads with Kago.set(\"K\")\n"
           "  --detach    daemonise the supervisor once every container has started\n"
           "  --verbose   log every hook and timer with its timing\n");
}

CLI_VERB(run_kagofile)
{
    struct kago_supervise_opts o = {.path = argv[1], .root = g->root};
    char **sets = calloc((size_t)argc + 1, sizeof *sets), **names = calloc((size_t)argc + 1, sizeof *names);
    size_t nsets = 0, nnames = 0;
    int rc = 0;
    if (!sets || !names)
        abort();
    for (int i = 2; i < argc && rc == 0; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--set") || !strcmp(a, "-s")) {
            if (i + 1 >= argc)
                rc = cli_usage("run", "--set needs KEY=VALUE");
            else
                sets[nsets++] = argv[++i];
        } else if (!strncmp(a, "--set=", 6)) {
            sets[nsets++] = (char *)a + 6;
        } else if (!strcmp(a, "--detach") || !strcmp(a, "-d")) {
            o.detach = true;
        } else if (!strcmp(a, "--verbose") || !strcmp(a, "-v")) {
            setenv("KAGO_VERBOSE", "1", 1);
        } else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage();
            rc = -1;
        } else if (a[0] == '-') {
            rc = cli_usage("run", "unknown option %s for a Kagofile", a);
        } else {
            names[nnames++] = argv[i];
        }
    }
    if (rc == 0) {
        o.sets = sets;
        o.names = names;
        struct kago_error *err = NULL;
        rc = kago_kagofile_supervise(&o, &err);
        if (err)
            rc = cli_fail(err);
    }
    free(sets);
    free(names);
    return rc < 0 ? 0 : rc;
}
