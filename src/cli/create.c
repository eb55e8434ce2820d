/* kago create [OPTIONS] -- CMD [ARG...]: everything but the exec; `kago start` lets it run. */
#include <stdio.h>

#include "cli.h"

CLI_VERB(create)
{
    struct kago_spec spec;
    kago_spec_init(&spec);
    int i = cli_parse_spec("create", &spec, NULL, argc, argv);
    if (i < 0) {
        kago_spec_free(&spec);
        return i == -0x100 ? 0 : -i;
    }
    kago_spec_set_argv(&spec, argv + i);
    struct kago_spawn_opts opts = {.stdio = {-1, -1, -1}, .detach = true, .wait_start = true};
    struct kago_container *c = NULL;
    struct kago_error *err = NULL;
    int rc = kago_container_create(g->root, &spec, &opts, &c, &err);
    kago_spec_free(&spec);
    if (rc < 0)
        return cli_fail(err);
    puts(kago_container_name(c));
    kago_container_free(c);
    return 0;
}
