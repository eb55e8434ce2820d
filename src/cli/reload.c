/* kago reload NAME: the container's Kagofile supervisor re-evaluates the file and applies changed
 * limits and hooks live; what cannot change without a restart is reported. */
#include <stdio.h>
#include <stdlib.h>

#include "../config/kagofile.h"
#include "cli.h"

CLI_VERB(reload)
{
    if (argc != 2 || argv[1][0] == '-')
        return cli_usage("reload", "expected: kago reload NAME");
    char *report = NULL;
    struct kago_error *err = NULL;
    if (kago_kagofile_reload(g->root, argv[1], &report, &err) < 0)
        return cli_fail(err);
    fputs(report, stdout);
    free(report);
    return 0;
}
