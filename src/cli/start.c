/* kago start NAME: lets a created container run its command. */
#include "cli.h"

CLI_VERB(start)
{
    if (argc != 2)
        return cli_usage("start", "expected: kago start NAME");
    struct kago_container *c = cli_load(g, argv[1]);
    if (!c)
        return 1;
    struct kago_error *err = NULL;
    int rc = kago_container_start(c, &err);
    if (rc == 0)
        cli_oci_hooks_poststart(g, c); /* a bundle's: their failures are warnings, as runc's */
    kago_container_free(c);
    return rc < 0 ? cli_fail(err) : 0;
}
