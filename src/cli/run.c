/* kago run [OPTIONS] -- CMD [ARG...]: create, start, wait, clean up; exits as the container did. */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "cli.h"

static bool looks_like_kagofile(const char *arg)
{
    struct stat st;
    const char *base = strrchr(arg, '/');
    base = base ? base + 1 : arg;
    size_t n = strlen(arg);
    bool named = !strncmp(base, "Kagofile", 8) || (n > 3 && !strcmp(arg + n - 3, ".rb"));
    return named && stat(arg, &st) == 0 && S_ISREG(st.st_mode);
}

static void run_usage(const char *verb)
{
    printf(
        "usage: kago %s [OPTIONS] -- CMD [ARG...]\n"
        "       kago %s --image REF [--entrypoint CMD] [OPTIONS] [-- CMD [ARG...]]\n"
        "       kago run Kagofile [NAME...] [--set KEY=VALUE] [--detach]\n"
        "options: --rootfs DIR --name NAME --hostname H --env K=V --cwd DIR --user UID[:GID]\n"
        "         --bind SRC:DST[:ro] --tmpfs DST[:SIZE] --readonly --overlay --overlay-size SIZE\n"
        "         --overlay-dir DIR --image REF --entrypoint CMD\n"
        "         --ns pid,mount,uts,ipc,net,cgroup,user --join-ns TYPE:PATH --uidmap C:H:N --gidmap C:H:N\n"
        "         --userns auto|host\n"
        "         --cpu PCT --cpu-weight N --memory SIZE --pids N --cpuset LIST --rlimit NAME=SOFT[:HARD]\n"
        "         --cgroup-set KEY=VALUE --cgroup-mount ro|rw|none --cap-add CAP --cap-drop CAP\n"
        "         --seccomp default|unconfined|FILE\n"
        "         --no-new-privs true|false --init --no-sysfs --detach --tty\n",
        verb, verb);
}

/* Parses the spec options of run/create. Returns the index of the command, or < 0 (exit code negated). */
int cli_parse_spec(const char *verb, struct kago_spec *spec, bool *detach, bool *tty,
                   struct cli_image_args *ia, int argc, char **argv)
{
    static struct option opts[64];
    size_t n = 0;
    for (; cli_spec_longopts[n].name; n++)
        opts[n] = cli_spec_longopts[n];
    opts[n++] = (struct option){"detach", no_argument, NULL, 'd'};
    opts[n++] = (struct option){"tty", no_argument, NULL, 't'};
    opts[n++] = (struct option){"help", no_argument, NULL, 'h'};
    opts[n++] = (struct option){"image", required_argument, NULL, 'I'};
    opts[n++] = (struct option){"entrypoint", required_argument, NULL, 'E'};
    opts[n] = (struct option){0};
    int c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "+dht", opts, NULL)) != -1) {
        if (c == 'h') {
            run_usage(verb);
            return -0x100;
        }
        if (c == 'd' && detach) {
            *detach = true;
            continue;
        }
        if (c == 't' && tty) {
            *tty = true;
            continue;
        }
        if ((c == 'I' || c == 'E') && ia) {
            *(c == 'I' ? &ia->image : &ia->entrypoint) = optarg;
            continue;
        }
        if (c == '?' || c == ':' || c == 'd' || c == 't' || c == 'I' || c == 'E')
            return -cli_usage(verb, "unknown option or missing value: %s", argv[optind - 1]);
        if (cli_spec_option(spec, c, optarg) < 0)
            return -1;
        if (ia && c == O_ENV) {
            ia->env = realloc(ia->env, (ia->nenv + 2) * sizeof *ia->env);
            if (!ia->env)
                abort();
            ia->env[ia->nenv++] = optarg;
            ia->env[ia->nenv] = NULL;
        }
        if (ia && (c == O_USER || c == O_CWD))
            *(c == O_USER ? &ia->user_set : &ia->cwd_set) = true;
    }
    if (ia && ia->entrypoint && !ia->image)
        return -cli_usage(verb, "--entrypoint needs --image");
    if (optind >= argc && !(ia && ia->image))
        return -cli_usage(verb, "no command given (kago %s [OPTIONS] -- CMD [ARG...])", verb);
    return optind;
}

int cli_exit_code(struct kago_container *c, int status)
{
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    int sig = WTERMSIG(status);
    struct kago_stats st;
    if (sig == SIGKILL && kago_container_stats(c, &st, NULL) == 0 && st.oom_kills > 0)
        fprintf(stderr, "kago: container %s: killed by the OOM killer (memory limit %lld bytes)\n",
                kago_container_name(c), (long long)kago_container_spec(c)->limits.memory);
    return 128 + sig;
}

int cli_create_from_args(struct cli *g, const char *verb, int argc, char **argv, bool *detach,
                         struct kago_spawn_opts *opts, struct kago_container **c)
{
    struct kago_spec spec;
    kago_spec_init_front(&spec);
    *c = NULL;
    struct cli_image_args ia = {0};
    int i = cli_parse_spec(verb, &spec, detach, detach ? &opts->tty : NULL, &ia, argc, argv);
    int rc = i < 0 ? (i == -0x100 ? 0 : -i) : 0;
    if (i >= 0 && ia.image)
        rc = cli_apply_image(g, &spec, &ia, i < argc ? argv + i : NULL);
    else if (i >= 0)
        kago_spec_set_argv(&spec, argv + i);
    free(ia.env);
    if (i < 0 || rc) {
        kago_spec_free(&spec);
        return rc;
    }
    if (detach)
        opts->detach = *detach;
    struct kago_error *err = NULL;
    rc = kago_container_create(g->root, &spec, opts, c, &err);
    kago_spec_free(&spec);
    return rc < 0 ? cli_fail(err) : 0;
}

static volatile sig_atomic_t target_pid;

static void forward(int sig)
{
    if (target_pid > 0)
        kill(target_pid, sig);
}

static const int forwarded[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH, SIGCONT};

void cli_hold_signals(void)
{
    sigset_t set;
    sigemptyset(&set);
    for (size_t s = 0; s < sizeof forwarded / sizeof forwarded[0]; s++)
        sigaddset(&set, forwarded[s]);
    sigprocmask(SIG_BLOCK, &set, NULL);
}

void cli_forward_signals(pid_t pid, void (*resize)(int))
{
    target_pid = pid;
    sigset_t set;
    sigemptyset(&set);
    for (size_t s = 0; s < sizeof forwarded / sizeof forwarded[0]; s++) {
        struct sigaction sa = {.sa_handler = forwarded[s] == SIGWINCH && resize ? resize : forward};
        sigemptyset(&sa.sa_mask);
        sigaction(forwarded[s], &sa, NULL);
        sigaddset(&set, forwarded[s]);
    }
    sigprocmask(SIG_UNBLOCK, &set, NULL); /* what arrived while the container was made goes to it now */
}

int cli_wait_forwarding(pid_t pid)
{
    cli_forward_signals(pid, NULL);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR)
            return 127 << 8;
    }
    return status;
}

CLI_VERB(run)
{
    if (argc > 1 && looks_like_kagofile(argv[1]))
        return cli_run_kagofile(g, argc, argv);
    if (cli_oci_form(argc, argv))
        return cli_oci_run(g, argc, argv);
    bool detach = false;
    struct kago_spawn_opts opts = {.stdio = {-1, -1, -1}};
    struct kago_container *c = NULL;
    cli_hold_signals(); /* a signal that comes while the container is made is forwarded, not lost */
    int rc = cli_create_from_args(g, "run", argc, argv, &detach, &opts, &c);
    if (!c)
        return rc;
    if (detach) {
        puts(kago_container_name(c));
        kago_container_free(c);
        return 0;
    }
    int master = kago_container_take_tty(c);
    int status = master >= 0 ? cli_wait_tty(kago_container_pid(c), master)
                             : cli_wait_forwarding(kago_container_pid(c));
    int code = cli_exit_code(c, status);
    struct kago_error *err = NULL;
    if (kago_container_delete(c, true, &err) < 0)
        cli_fail(err);
    kago_container_free(c);
    return code;
}
