/* kago restore --image DIR [--name NEW] [--detach] [--lazy-pages]: a new container from a checkpoint
 * image, in its own cgroup with a fresh writable layer. Without --detach it runs in the foreground as kago
 * run does: kago waits for it, forwards signals, removes it when it ends and exits as it did. */
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>

#include "cli.h"

static int wait_foreground(struct kago_container *c)
{
    int status = cli_wait_forwarding(kago_container_pid(c));
    struct kago_error *err = NULL;
    if (kago_container_delete(c, true, &err) < 0)
        cli_fail(err);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

CLI_VERB(restore)
{
    if (cli_oci_restore_form(argc, argv))
        return cli_oci_restore(g, argc, argv);
    static const struct option opts[] = {
        {"image", required_argument, NULL, 'i'}, {"name", required_argument, NULL, 'n'},
        {"detach", no_argument, NULL, 'd'},      {"lazy-pages", no_argument, NULL, 'l'},
        {"help", no_argument, NULL, 'h'},        {NULL, 0, NULL, 0},
    };
    struct kago_restore_opts o = {0};
    const char *image = NULL;
    int ch;
    opterr = 0;
    while ((ch = getopt_long(argc, argv, "+", opts, NULL)) != -1) {
        if (ch == 'i') {
            image = optarg;
        } else if (ch == 'n') {
            o.name = optarg;
        } else if (ch == 'd') {
            o.detach = true;
        } else if (ch == 'l') {
            o.lazy_pages = true;
        } else if (ch == 'h') {
            printf("usage: kago restore --image DIR [--name NEW] [--detach] [--lazy-pages]\n"
                   "  --lazy-pages  the app runs before its memory is back: a criu lazy-pages daemon copies\n"
                   "                each page on first touch, the rest in the background\n");
            return 0;
        } else {
            return cli_usage("restore", "unknown option %s", argv[optind - 1]);
        }
    }
    if (optind != argc || !image)
        return cli_usage("restore",
                         "expected: kago restore --image DIR [--name NEW] [--detach] [--lazy-pages]");
    struct kago_container *c = NULL;
    struct kago_error *err = NULL;
    if (kago_container_restore(g->root, image, &o, &c, &err) < 0)
        return cli_fail(err);
    int rc = 0;
    if (o.detach)
        puts(kago_container_name(c));
    else
        rc = wait_foreground(c);
    kago_container_free(c);
    return rc;
}
