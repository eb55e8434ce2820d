/* kago exec NAME [--env K=V] [--cwd DIR] [--user UID[:GID]] [--tty] -- CMD [ARG...] */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>

#include "cli.h"

CLI_VERB(exec)
{
    static const struct option opts[] = {
        {"env", required_argument, NULL, O_ENV},
        {"cwd", required_argument, NULL, O_CWD},
        {"user", required_argument, NULL, O_USER},
        {"tty", no_argument, NULL, 't'},
        {NULL, 0, NULL, 0},
    };
    if (cli_oci_exec_form(argc, argv))
        return cli_oci_exec(g, argc, argv);
    struct kago_spec proc = {0};
    proc.cwd = NULL;
    int ch;
    opterr = 0;
    char **env = NULL;
    size_t nenv = 0;
    struct kago_error *err = NULL;
    bool tty = false;
    while ((ch = getopt_long(argc, argv, "+t", opts, NULL)) != -1) {
        if (ch == O_ENV) {
            if (!strchr(optarg, '=') || optarg[0] == '=') { /* (as run's) */
                free(env);
                return cli_usage("exec", "env \"%s\": expected KEY=VALUE", optarg);
            }
            env = realloc(env, (nenv + 2) * sizeof *env);
            env[nenv++] = optarg;
            env[nenv] = NULL;
        } else if (ch == 't') {
            tty = true;
        } else if (ch == O_CWD) {
            proc.cwd = optarg;
        } else if (ch == O_USER) {
            if (kago_parse_user(optarg, &proc.uid, &proc.gid, &err) < 0)
                return cli_fail(err);
        } else {
            return cli_usage("exec", "unknown option %s", argv[optind - 1]);
        }
    }
    int cmd = optind + 1; /* NAME [--] CMD... */
    if (cmd < argc && !strcmp(argv[cmd], "--"))
        cmd++;
    if (optind >= argc || cmd >= argc)
        return cli_usage("exec", "expected: kago exec NAME -- CMD [ARG...]");
    struct kago_container *c = cli_load(g, argv[optind]);
    if (!c) {
        free(env);
        return 1;
    }
    /* the container's environment, with --env on top */
    struct kago_spec merged = {0};
    const struct kago_spec *cs = kago_container_spec(c);
    for (size_t i = 0; cs->env && cs->env[i]; i++)
        kago_spec_add_env(&merged, cs->env[i]);
    for (size_t i = 0; i < nenv; i++)
        kago_spec_add_env(&merged, env[i]);
    free(env);
    proc.env = merged.env;
    proc.argv = argv + cmd;
    cli_hold_signals();
    int master = -1;
    pid_t pid = kago_container_exec_tty(c, &proc, tty ? &master : NULL, &err);
    kago_spec_free(&merged);
    kago_container_free(c);
    if (pid < 0)
        return cli_fail(err);
    int status = master >= 0 ? cli_wait_tty(pid, master) : cli_wait_forwarding(pid);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}
