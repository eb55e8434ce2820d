/* kago — the command line: a table of verbs, each in its own file. */
#include <getopt.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "cli.h"
#include "spawner.h"

struct verb {
    const char *name;
    int (*fn)(struct cli *, int, char **);
    const char *help;
    const char *usage; /* printed for "kago VERB --help" (NULL: the verb prints its own) */
};

#define OCI_FORM "\n(the OCI runtime's form of this verb, as podman and containerd call it: docs/oci.md)\n"

static const struct verb verbs[] = {
    {"run", cli_run, "run a container (or a Kagofile) in the foreground", NULL},
    {"create", cli_create, "create a container that waits for start", NULL},
    {"start", cli_start, "start a created container", "usage: kago start NAME\n"},
    {"exec", cli_exec, "run a command inside a running container",
     "usage: kago exec NAME [--env K=V]... [--cwd DIR] [--user UID[:GID]] [--tty] -- CMD [ARG...]\n"
     "       kago exec --process FILE [--detach] [--tty] [--pid-file FILE] [--console-socket PATH]\n"
     "                 [--preserve-fds N] ID" OCI_FORM},
    {"kill", cli_kill, "send a signal to a container",
     "usage: kago kill [--all|-a] NAME [SIGNAL]   (default TERM; --all: every process of the container)\n"},
    {"delete", cli_delete, "remove a container and every trace of it",
     "usage: kago delete [--force] NAME...   (--force: kill it first if it runs)\n"},
    {"list", cli_list, "list containers", "usage: kago list [--json | --format json|table]\n"},
    {"state", cli_state, "print a container's state as JSON", "usage: kago state NAME\n"},
    {"update", cli_update, "change a running container's limits, live",
     "usage: kago update NAME [--cpu PCT] [--cpu-weight 1-10000] [--memory SIZE] [--pids N] [--cpuset LIST]\n"
     "                        [--cgroup-set KEY=VALUE]...\n"
     "       kago update --resources FILE ID" OCI_FORM},
    {"pause", cli_pause, "freeze every process of a container", "usage: kago pause NAME\n"},
    {"resume", cli_resume, "thaw a paused container", "usage: kago resume NAME\n"},
    {"stats", cli_stats, "cpu, memory, pids and OOM kills of a container",
     "usage: kago stats NAME [--json]\n"},
    {"check", cli_check, "validate a Kagofile without starting anything",
     "usage: kago check Kagofile [--set KEY=VALUE]...\n"},
    {"reload", cli_reload, "re-apply a container's Kagofile: limits and hooks, live",
     "usage: kago reload NAME   (a container started from a Kagofile: its limits and hooks, live)\n"
     "       kago reload [--admin IP:PORT|unix:PATH] [--admin-token FILE] [--root DIR]\n"
     "                  (a running kago serve reloads its apps, as on SIGHUP)\n"},
    {"serve", cli_serve, "the FastContainer proxy: start app containers on request (docs/serve.md)", NULL},
    {"app", cli_app, "publish apps to a cluster of kago serve nodes (etcd; docs/cluster.md)", NULL},
    {"ps", cli_ps, "apps and instances of the running kago serve",
     "usage: kago ps [--admin IP:PORT|unix:PATH] [--admin-token FILE] [--root DIR] [--json|--hosts]\n"
     "                (the serve of --root, default " KAGO_DEFAULT_ROOT ", found by its admin address)\n"
     "       kago ps --cluster etcd://HOST:PORT[,...] [--json]   (every node's, from etcd)\n"
     "       kago ps [--format json|table] ID [PS-ARGS...]" OCI_FORM},
    {"logs", cli_logs, "the output of a served app's instances (kago serve's per-app logs)",
     "usage: kago logs APP [-f|--follow] [--instance NAME] [--since DURATION] [--tail N] [--json]\n"},
    {"checkpoint", cli_checkpoint, "write a CRIU image of a running container", NULL},
    {"restore", cli_restore, "start a container from a checkpoint image", NULL},
    {"image", cli_image, "OCI images: import, list, inspect, rm, prune (docs/images.md)", NULL},
    {"spec", cli_spec, "write a default OCI config.json (kago as an OCI runtime: docs/oci.md)",
     "usage: kago spec [--bundle DIR]   (writes DIR/config.json, default the current directory)\n"},
    {"features", cli_features, "the OCI runtime features kago supports, as JSON", "usage: kago features\n"},
};

/* --log FILE [--log-format json]: errors also go there, one line each, as runc writes them: containerd
 * reports the last {"level":"error"} line's msg, conmon reads msg. */
static const char *log_path;
static bool log_json;

static void log_line(const char *level, const char *msg)
{
    if (!log_path)
        return;
    FILE *f = fopen(log_path, "ae");
    if (!f)
        return;
    char now[40];
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    strftime(now, sizeof now, "%Y-%m-%dT%H:%M:%SZ", gmtime(&ts.tv_sec));
    if (log_json) {
        json_object *o = json_object_new_object();
        json_object_object_add(o, "level", json_object_new_string(level));
        json_object_object_add(o, "msg", json_object_new_string(msg));
        json_object_object_add(o, "time", json_object_new_string(now));
        fprintf(f, "%s\n",
                json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
        json_object_put(o);
    } else {
        fprintf(f, "time=\"%s\" level=%s msg=\"%s\"\n", now, level, msg);
    }
    fclose(f);
}

int cli_fail(struct kago_error *err)
{
    const char *msg = err && err->msg ? err->msg : "failed";
    fprintf(stderr, "kago: %s\n", msg);
    log_line("error", msg);
    kago_error_free(err);
    return 1;
}

/* "kago: [warning: ]MSG" on stderr, and a line of that level in the --log file. */
static void report(const char *level, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
static void report(const char *level, const char *fmt, va_list ap)
{
    char *msg = NULL;
    if (vasprintf(&msg, fmt, ap) < 0)
        msg = NULL;
    fprintf(stderr, "kago: %s%s\n", strcmp(level, "warning") ? "" : "warning: ", msg ? msg : fmt);
    log_line(level, msg ? msg : fmt);
    free(msg);
}

int cli_errorf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    report("error", fmt, ap);
    va_end(ap);
    return 1;
}

void cli_warnf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    report("warning", fmt, ap);
    va_end(ap);
}

int cli_usage(const char *verb, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "kago %s: ", verb);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, " (see kago %s --help)\n", verb);
    va_end(ap);
    return 2;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: kago [--root DIR] VERB [OPTIONS] [ARGS]\n\nverbs:\n");
    for (size_t i = 0; i < sizeof verbs / sizeof verbs[0]; i++)
        fprintf(f, "  %-10s %s\n", verbs[i].name, verbs[i].help);
    fprintf(f, "\n--root DIR    state directory (default %s)\n", KAGO_DEFAULT_ROOT);
    fprintf(f, "--log FILE, --log-format text|json, --systemd-cgroup, --debug: as runc's (docs/oci.md)\n");
    fprintf(f, "--images DIR  image store (default $KAGO_IMAGES or %s)\n", KAGO_DEFAULT_IMAGES);
}

/* A global option "--NAME VALUE" or "--NAME=VALUE" at argv[*i]: sets *val (and moves *i past it). */
static bool opt_value(int argc, char **argv, int *i, const char *name, const char **val)
{
    size_t n = strlen(name);
    if (strncmp(argv[*i], name, n))
        return false;
    if (argv[*i][n] == '=') {
        *val = argv[*i] + n + 1;
        return true;
    }
    if (argv[*i][n] || *i + 1 >= argc)
        return false;
    *val = argv[++*i];
    return true;
}

int main(int argc, char **argv)
{
    kago__args = argv[0];
    kago__args_len = (size_t)(argv[argc - 1] + strlen(argv[argc - 1]) + 1 - argv[0]);
    /* kago serve's spawner (spawner.h): not a verb, exec'd by serve */
    if ((argc == 3 || argc == 4) && !strcmp(argv[1], "__spawner"))
        return kago__spawner_main(argc, argv);
    struct cli g = {.root = KAGO_DEFAULT_ROOT, .prog = "kago", .argv = argv};
    /* a reader that went away (kago ... | head) must not kill kago halfway through a cleanup */
    signal(SIGPIPE, SIG_IGN);
    int i = 1;
    bool systemd_cgroup = false;
    const char *format = "text", *ignored;
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (opt_value(argc, argv, &i, "--root", &g.root) ||
            opt_value(argc, argv, &i, "--images", &g.images) ||
            opt_value(argc, argv, &i, "--log", &log_path) ||
            opt_value(argc, argv, &i, "--log-format", &format)) {
            continue;
        } else if (!strcmp(argv[i], "--systemd-cgroup")) {
            systemd_cgroup = true;
        } else if (!strcmp(argv[i], "--debug") || opt_value(argc, argv, &i, "--rootless", &ignored) ||
                   !strcmp(argv[i], "--rootless")) {
            continue; /* what runc's callers may send: nothing to do (kago runs as root) */
        } else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--version") || !strcmp(argv[i], "-v")) {
            puts("kago version 0.1.0\nspec: 1.1.0");
            return 0;
        } else {
            fprintf(stderr, "kago: unknown option %s\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (strcmp(format, "text") && strcmp(format, "json"))
        return cli_errorf("--log-format %s: expected text or json", format);
    log_json = !strcmp(format, "json");
    /* the Kagofile loader and serve find the store the same way the CLI does */
    if (g.images)
        setenv("KAGO_IMAGES", g.images, 1);
    g.images = kago_image_store_dir(g.images);
    if (i >= argc) {
        usage(stderr);
        return 2;
    }
    if (systemd_cgroup && access("/run/systemd/system", F_OK) < 0)
        return cli_errorf("systemd not running on this host, cannot use the systemd cgroup manager "
                          "(--systemd-cgroup)");
    if (systemd_cgroup)
        return cli_errorf(
            "--systemd-cgroup: not supported (kago manages its cgroups itself: drop the option)");
    for (size_t v = 0; v < sizeof verbs / sizeof verbs[0]; v++) {
        if (!strcmp(argv[i], verbs[v].name)) {
            bool help = i + 1 < argc && (!strcmp(argv[i + 1], "--help") || !strcmp(argv[i + 1], "-h"));
            if (help && verbs[v].usage) {
                fputs(verbs[v].usage, stdout);
                return 0;
            }
            if (help)
                argv[i + 1] = (char *)"--help"; /* (the verbs that print their own know only that one) */
            optind = 1;
            return verbs[v].fn(&g, argc - i, argv + i);
        }
    }
    fprintf(stderr, "kago: unknown verb \"%s\"\n", argv[i]);
    usage(stderr);
    return 2;
}
