/* The OCI forms of exec (`--process FILE`) and update (`--resources FILE|-`), as conmon and containerd's
 * shim call runc. See docs/oci.md. */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli.h"
#include "oci.h"

static bool has_option(int argc, char **argv, const char *lng, const char *shrt)
{
    size_t n = strlen(lng);
    for (int i = 1; i < argc && strcmp(argv[i], "--"); i++)
        if (!strcmp(argv[i], lng) || !strcmp(argv[i], shrt) ||
            (!strncmp(argv[i], lng, n) && argv[i][n] == '='))
            return true;
    return false;
}

bool cli_oci_exec_form(int argc, char **argv)
{
    return has_option(argc, argv, "--process", "-p");
}

bool cli_oci_update_form(int argc, char **argv)
{
    return has_option(argc, argv, "--resources", "-r");
}

/* A whole file ("-": standard input), bounded. NULL with a message printed. */
static char *slurp(const char *path, size_t *len)
{
    FILE *f = strcmp(path, "-") ? fopen(path, "re") : stdin;
    if (!f)
        return cli_errorf("%s: %s", path, strerror(errno)), NULL;
    size_t cap = 65536, n = 0;
    char *buf = malloc(cap + 1);
    for (size_t r; buf && (r = fread(buf + n, 1, cap - n, f)) > 0;) {
        n += r;
        if (n == cap && cap < (4u << 20))
            buf = realloc(buf, (cap *= 2) + 1);
        else if (n == cap)
            break;
    }
    if (f != stdin)
        fclose(f);
    if (!buf)
        abort();
    buf[n] = '\0';
    *len = n;
    return buf;
}

struct exec_args {
    const char *process, *pid_file, *console_socket, *id;
    bool detach, tty;
};

static int exec_parse(int argc, char **argv, struct exec_args *a)
{
    static const struct option opts[] = {
        {"process", required_argument, NULL, 'p'},
        {"pid-file", required_argument, NULL, 'P'},
        {"console-socket", required_argument, NULL, 'c'},
        {"detach", no_argument, NULL, 'd'},
        {"tty", no_argument, NULL, 't'},
        {"preserve-fds", required_argument, NULL, 'f'},
        {NULL, 0, NULL, 0},
    };
    *a = (struct exec_args){0};
    int c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "p:dt", opts, NULL)) != -1) {
        if (c == 'p')
            a->process = optarg;
        else if (c == 'P')
            a->pid_file = optarg;
        else if (c == 'c')
            a->console_socket = optarg;
        else if (c == 'd')
            a->detach = true;
        else if (c == 't')
            a->tty = true;
        else if (c == 'f' && !strcmp(optarg, "0"))
            continue;
        else
            return cli_usage("exec", "unknown or unsupported option %s", argv[optind - 1]);
    }
    if (optind != argc - 1)
        return cli_usage("exec", "expected: kago exec --process FILE [--detach] [--tty] [--pid-file F] ID");
    a->id = argv[optind];
    return 0;
}

/* The process as the container would run it: what the file does not set is the container's. */
static int exec_process(const struct exec_args *a, const struct kago_spec *cs, struct kago_spec *proc,
                        bool *tty)
{
    size_t len;
    char *text = slurp(a->process, &len);
    if (!text)
        return 1;
    struct kago_error *err = NULL;
    kago_spec_init(proc);
    int r = kago_oci_load_process(a->process, text, len, proc, tty, &err);
    free(text);
    if (r < 0)
        return kago_error_prefix(&err, "container %s: exec", a->id), cli_fail(err);
    if (proc->caps != cs->caps || proc->capsets != cs->capsets || proc->cap_effective != cs->cap_effective ||
        proc->cap_permitted != cs->cap_permitted || proc->cap_inheritable != cs->cap_inheritable ||
        proc->cap_ambient != cs->cap_ambient)
        return cli_errorf(
            "container %s: exec: %s: process.capabilities differ from the container's: not supported", a->id,
            a->process);
    *tty |= a->tty;
    return 0;
}

int cli_oci_exec(struct cli *g, int argc, char **argv)
{
    struct exec_args a;
    int rc = exec_parse(argc, argv, &a);
    if (rc)
        return rc;
    struct kago_container *c = cli_load(g, a.id);
    if (!c)
        return 1;
    struct kago_spec proc;
    bool tty = false;
    if ((rc = exec_process(&a, kago_container_spec(c), &proc, &tty))) {
        kago_container_free(c);
        return rc;
    }
    if (tty && a.detach && !a.console_socket)
        rc = cli_errorf("container %s: exec: a terminal needs --console-socket when detached", a.id);
    struct kago_error *err = NULL;
    int master = -1;
    cli_hold_signals();
    /* No kago process stays between the caller and the command, so the pid file names the command itself
     * (what a shim kills), as runc's does: detached, it passes to the caller's subreaper; in the
     * foreground, to this process, a subreaper until it has waited for it. */
    if (!rc && !a.detach && prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) < 0)
        rc = cli_errorf("container %s: exec: become a subreaper: %s", a.id, strerror(errno));
    pid_t pid = rc ? -1 : kago_container_exec_detached(c, &proc, tty ? &master : NULL, &err);
    kago_spec_free(&proc);
    kago_container_free(c);
    if (rc || pid < 0)
        return rc ? rc : cli_fail(err);
    if (a.detach) {
        if (master >= 0 && (rc = cli_send_console(a.console_socket, master)) == 0)
            close(master);
        if (!rc && a.pid_file)
            rc = cli_write_pid_file(a.pid_file, pid);
        if (rc)
            kill(pid, SIGKILL);
        return rc;
    }
    if (a.pid_file)
        cli_write_pid_file(a.pid_file, pid);
    int status = master >= 0 ? cli_wait_tty(pid, master) : cli_wait_forwarding(pid);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

int cli_oci_update(struct cli *g, int argc, char **argv)
{
    static const struct option opts[] = {{"resources", required_argument, NULL, 'r'}, {NULL, 0, NULL, 0}};
    const char *file = NULL;
    int c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "r:", opts, NULL)) != -1) {
        if (c != 'r')
            return cli_usage("update", "unknown option %s", argv[optind - 1]);
        file = optarg;
    }
    if (!file || optind != argc - 1)
        return cli_usage("update", "expected: kago update --resources FILE|- ID");
    size_t len;
    char *text = slurp(file, &len);
    if (!text)
        return 1;
    struct kago_spec s;
    kago_spec_init(&s); /* only its limits are used: all unset but what the file gives */
    struct kago_error *err = NULL;
    int rc = 0;
    if (kago_oci_load_resources(strcmp(file, "-") ? file : "resources", text, len, &s, &err) < 0)
        rc = cli_fail(err);
    free(text);
    struct kago_container *ct = rc ? NULL : cli_load(g, argv[optind]);
    if (!rc && !ct)
        rc = 1;
    if (ct && kago_container_update(ct, &s.limits, &err) < 0)
        rc = cli_fail(err);
    kago_container_free(ct);
    kago_spec_free(&s);
    return rc;
}
