/* kago state NAME: name, pid, status, created, rootfs, limits as JSON. */
#include <stdio.h>
#include <stdlib.h>

#include "cli.h"

CLI_VERB(state)
{
    if (argc != 2)
        return cli_usage("state", "expected: kago state NAME");
    struct kago_container *c = cli_load(g, argv[1]);
    if (!c)
        return 1;
    char *s = cli_oci_state(g, c);
    if (!s)
        s = kago_container_state_json(c);
    puts(s);
    free(s);
    kago_container_free(c);
    return 0;
}
