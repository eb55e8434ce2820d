/* kago kill [--all|-a] NAME [SIGNAL]: default SIGTERM; --all signals every process of the container. */
#include <signal.h>
#include <string.h>

#include "cli.h"

CLI_VERB(kill)
{
    bool all = false;
    int i = 1;
    if (i < argc && (!strcmp(argv[i], "--all") || !strcmp(argv[i], "-a"))) { /* (runc's short form too) */
        all = true;
        i++;
    }
    if (argc - i < 1 || argc - i > 2)
        return cli_usage("kill", "expected: kago kill [--all|-a] NAME [SIGNAL]");
    int sig = argc - i == 2 ? kago_signal_from_name(argv[i + 1]) : SIGTERM;
    if (sig < 0)
        return cli_errorf("signal \"%s\": unknown", argv[i + 1]);
    struct kago_container *c = cli_load(g, argv[i]);
    if (!c)
        return 1;
    struct kago_error *err = NULL;
    int rc = kago_container_kill(c, sig, all, &err);
    kago_container_free(c);
    return rc < 0 ? cli_fail(err) : 0;
}
