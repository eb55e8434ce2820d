/* kago — the command line: a table of verbs, each in its own file. */
#include <getopt.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

struct verb {
    const char *name;
    int (*fn)(struct cli *, int, char **);
    const char *help;
};

static const struct verb verbs[] = {
    {"run", cli_run, "run a container (or a Kagofile) in the foreground"},
    {"create", cli_create, "create a container that waits for start"},
    {"start", cli_start, "start a created container"},
    {"exec", cli_exec, "run a command inside a running container"},
    {"kill", cli_kill, "send a signal to a container"},
    {"delete", cli_delete, "remove a container and every trace of it"},
    {"list", cli_list, "list containers"},
    {"state", cli_state, "print a container's state as JSON"},
    {"update", cli_update, "change a running container's limits, live"},
    {"pause", cli_pause, "freeze every process of a container"},
    {"resume", cli_resume, "thaw a paused container"},
    {"stats", cli_stats, "cpu, memory, pids and OOM kills of a container"},
    {"check", cli_check, "validate a Kagofile without starting anything"},
    {"reload", cli_reload, "re-apply a container's Kagofile: limits and hooks, live"},
    {"serve", cli_serve, "the FastContainer proxy: start app containers on request (docs/serve.md)"},
    {"ps", cli_ps, "apps and instances of the running kago serve"},
    {"checkpoint", cli_checkpoint, "write a CRIU image of a running container"},
    {"restore", cli_restore, "start a container from a checkpoint image"},
    {"image", cli_image, "OCI images: import, list, inspect, rm, prune (docs/images.md)"},
};

int cli_fail(struct kago_error *err)
{
    fprintf(stderr, "kago: %s\n", err && err->msg ? err->msg : "failed");
    kago_error_free(err);
    return 1;
}

int cli_errorf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("kago: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return 1;
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
    fprintf(f, "--images DIR  image store (default $KAGO_IMAGES or %s)\n", KAGO_DEFAULT_IMAGES);
}

int main(int argc, char **argv)
{
    struct cli g = {.root = KAGO_DEFAULT_ROOT, .prog = "kago"};
    /* a reader that went away (kago ... | head) must not kill kago halfway through a cleanup */
    signal(SIGPIPE, SIG_IGN);
    int i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (!strcmp(argv[i], "--root") && i + 1 < argc) {
            g.root = argv[++i];
        } else if (!strncmp(argv[i], "--root=", 7)) {
            g.root = argv[i] + 7;
        } else if (!strcmp(argv[i], "--images") && i + 1 < argc) {
            g.images = argv[++i];
        } else if (!strncmp(argv[i], "--images=", 9)) {
            g.images = argv[i] + 9;
        } else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--version")) {
            puts("kago 0.1.0");
            return 0;
        } else {
            fprintf(stderr, "kago: unknown option %s\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    /* the Kagofile loader and serve find the store the same way the CLI does */
    if (g.images)
        setenv("KAGO_IMAGES", g.images, 1);
    g.images = kago_image_store_dir(g.images);
    if (i >= argc) {
        usage(stderr);
        return 2;
    }
    for (size_t v = 0; v < sizeof verbs / sizeof verbs[0]; v++) {
        if (!strcmp(argv[i], verbs[v].name)) {
            optind = 1;
            return verbs[v].fn(&g, argc - i, argv + i);
        }
    }
    fprintf(stderr, "kago: unknown verb \"%s\"\n", argv[i]);
    usage(stderr);
    return 2;
}
