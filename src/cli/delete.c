/* kago delete [--force] NAME...: removes every trace; --force kills a live container first. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

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
        struct kago_container *c = NULL;
        struct kago_error *err = NULL;
        if (kago_container_load(g->root, argv[i], &c, &err) < 0) {
            /* --force also removes a container whose kago was killed before it wrote the state file */
            struct kago_error *perr = NULL;
            int removed = force ? kago_container_remove_partial(g->root, argv[i], &perr) : -1;
            /* --force on a container that does not exist succeeds, as runc's and crun's do (podman and
             * containerd's shim rely on it after a failed create) */
            bool gone = removed == 0 || (perr && perr->code == ENOENT);
            kago_error_free(perr);
            if (gone) {
                kago_error_free(err);
                continue;
            }
            rc = cli_fail(err);
            continue;
        }
        struct cli_oci_poststop *ps = cli_oci_poststop_prepare(g, c); /* a bundle's, run once it is gone */
        bool deleted = kago_container_delete(c, force, &err) == 0;
        if (!deleted)
            rc = cli_fail(err);
        cli_oci_poststop_finish(ps, deleted);
        kago_container_free(c);
    }
    return rc;
}
