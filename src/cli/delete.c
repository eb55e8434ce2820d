/* kago delete [--force] NAME...: removes every trace; --force kills a live container first. */
#include <string.h>

#include "cli.h"

CLI_VERB(delete)
{
    bool force = false;
    int i = 1, rc = 0;
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (!strcmp(argv[i], "--force") || !strcmp(argv[i], "-f"))
            force = true;
        else
            return cli_usage("delete", "unknown option %s", argv[i]);
    }
    if (i >= argc)
        return cli_usage("delete", "expected: kago delete [--force] NAME...");
    for (; i < argc; i++) {
        struct kago_container *c = cli_load(g, argv[i]);
        if (!c) {
            rc = 1;
            continue;
        }
        struct kago_error *err = NULL;
        if (kago_container_delete(c, force, &err) < 0)
            rc = cli_fail(err);
        kago_container_free(c);
    }
    return rc;
}
