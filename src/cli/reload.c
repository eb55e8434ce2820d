/* kago reload NAME: the container's Kagofile supervisor re-evaluates the file and applies changed
 * limits and hooks live; what cannot change without a restart is reported.
 * kago reload [--admin IP:PORT|unix:PATH] [--admin-token FILE] [--root DIR] (no NAME): a running
 * `kago serve` reloads its Kagofiles (POST /reload on its admin API, as SIGHUP). */
#include <stdio.h>
#include <stdlib.h>

#include "../config/kagofile.h"
#include "cli.h"

static int serve_reload(struct cli *g, int argc, char **argv)
{
    struct cli_admin adm;
    cli_admin_init(&adm, g);
    for (int i = 1; i < argc; i++)
        if (cli_admin_option(&adm, argc, argv, &i) != 1)
            return cli_usage("reload",
                             "expected: kago reload NAME, or kago reload [--admin IP:PORT|unix:PATH] "
                             "[--admin-token FILE] [--root DIR] for kago serve");
    char *body = cli_admin_call(&adm, "reload", "POST", "/reload");
    if (!body)
        return 1;
    fputs(body, stdout);
    free(body);
    return 0;
}

CLI_VERB(reload)
{
    if (argc == 1 || argv[1][0] == '-')
        return serve_reload(g, argc, argv);
    if (argc != 2)
        return cli_usage("reload", "expected: kago reload NAME");
    char *report = NULL;
    struct kago_error *err = NULL;
    if (kago_kagofile_reload(g->root, argv[1], &report, &err) < 0)
        return cli_fail(err);
    fputs(report, stdout);
    free(report);
    return 0;
}
