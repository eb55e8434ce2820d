/* kago stats NAME [--json]: cpu usage, memory current and peak, pids, OOM kills. */
#include <stdio.h>
#include <string.h>

#include "cli.h"

CLI_VERB(stats)
{
    bool json = false;
    const char *name = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json"))
            json = true;
        else if (!name && argv[i][0] != '-')
            name = argv[i];
        else
            return cli_usage("stats", "expected: kago stats NAME [--json]");
    }
    if (!name)
        return cli_usage("stats", "expected: kago stats NAME [--json]");
    struct kago_container *c = cli_load(g, name);
    if (!c)
        return 1;
    struct kago_stats st;
    struct kago_error *err = NULL;
    int rc = kago_container_stats(c, &st, &err);
    kago_container_free(c);
    if (rc < 0)
        return cli_fail(err);
    if (json)
        printf("{\"name\": \"%s\", \"cpu_usage_us\": %llu, \"memory_current\": %lld, \"memory_peak\": %lld, "
               "\"pids_current\": %lld, \"oom_kills\": %lld}\n",
               name, (unsigned long long)st.cpu_usage_us, (long long)st.memory_current,
               (long long)st.memory_peak, (long long)st.pids_current, (long long)st.oom_kills);
    else
        printf("NAME %s\nCPU %.3f s\nMEMORY %lld bytes\nMEMORY PEAK %lld bytes\nPIDS %lld\nOOM KILLS %lld\n",
               name, (double)st.cpu_usage_us / 1e6, (long long)st.memory_current, (long long)st.memory_peak,
               (long long)st.pids_current, (long long)st.oom_kills);
    return 0;
}
