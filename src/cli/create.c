/* kago create [OPTIONS] -- CMD [ARG...]: everything but the exec; `kago start` lets it run. */
#include <stdio.h>

#include "cli.h"

CLI_VERB(create)
{
    if (cli_oci_form(argc, argv))
        return cli_oci_create(g, argc, argv);
    struct kago_spawn_opts opts = {.stdio = {-1, -1, -1}, .detach = true, .wait_start = true};
    struct kago_container *c = NULL;
    int rc = cli_create_from_args(g, "create", argc, argv, NULL, &opts, &c);
    if (!c)
        return rc;
    puts(kago_container_name(c));
    kago_container_free(c);
    return 0;
}
