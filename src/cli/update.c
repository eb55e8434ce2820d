/* kago update NAME --cpu/--cpu-weight/--memory/--pids/--cpuset/--cgroup-set: live, on a running container. */
#include <stdlib.h>
#include <string.h>

#include "cli.h"

CLI_VERB(update)
{
    static const struct option opts[] = {
        {"cpu", required_argument, NULL, O_CPU},
        {"cpu-weight", required_argument, NULL, O_CPU_WEIGHT},
        {"memory", required_argument, NULL, O_MEMORY},
        {"pids", required_argument, NULL, O_PIDS},
        {"cpuset", required_argument, NULL, O_CPUSET},
        {"cgroup-set", required_argument, NULL, O_CGROUP_SET},
        {NULL, 0, NULL, 0},
    };
    if (cli_oci_update_form(argc, argv))
        return cli_oci_update(g, argc, argv);
    struct kago_spec s;
    kago_spec_init(&s); /* only its limits are used: all unset */
    int ch, n = 0, rc = 1;
    opterr = 0;
    while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        int r =
            ch == O_CGROUP_SET ? cli_spec_option(&s, ch, optarg) : cli_limit_option(&s.limits, ch, optarg);
        if (r <= 0) {
            if (r == 0)
                cli_usage("update", "unknown option %s", argv[optind - 1]);
            goto out;
        }
        n++;
    }
    if (optind != argc - 1 || n == 0) {
        rc = cli_usage("update",
                       "expected: kago update NAME --cpu PCT|--memory SIZE|--pids N|--cpuset LIST...");
        goto out;
    }
    struct kago_container *c = cli_load(g, argv[optind]);
    if (!c)
        goto out;
    struct kago_error *err = NULL;
    rc = kago_container_update(c, &s.limits, &err) < 0 ? cli_fail(err) : 0;
    kago_container_free(c);
out:
    kago_spec_free(&s);
    return rc;
}
