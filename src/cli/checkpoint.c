/* kago checkpoint NAME --image DIR [--leave-running] [--wait-port PORT [--timeout DURATION]]:
 * writes a CRIU image of a running container (include/kago/checkpoint.h). --wait-port checkpoints once
 * the app is ready: when 127.0.0.1:PORT accepts connections inside the container. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static void usage(void)
{
    printf("usage: kago checkpoint NAME --image DIR [--leave-running] [--wait-port PORT [--timeout 30s]]\n");
}

CLI_VERB(checkpoint)
{
    if (cli_oci_checkpoint_form(argc, argv))
        return cli_oci_checkpoint(g, argc, argv);
    static const struct option opts[] = {
        {"image", required_argument, NULL, 'i'},
        {"leave-running", no_argument, NULL, 'l'},
        {"wait-port", required_argument, NULL, 'p'},
        {"timeout", required_argument, NULL, 't'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    struct kago_checkpoint_opts o = {0};
    const char *image = NULL;
    struct kago_error *err = NULL;
    int ch;
    opterr = 0;
    while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        char *end;
        long port;
        switch (ch) {
        case 'i':
            image = optarg;
            break;
        case 'l':
            o.leave_running = true;
            break;
        case 'p':
            port = strtol(optarg, &end, 10);
            if (*end || port < 1 || port > 65535)
                return cli_usage("checkpoint", "--wait-port \"%s\": not a port number", optarg);
            o.wait_port = (uint16_t)port;
            break;
        case 't':
            if (kago_parse_duration(optarg, &o.wait_timeout_ms, &err) < 0)
                return cli_fail(err);
            break;
        case 'h':
            usage();
            return 0;
        default:
            return cli_usage("checkpoint", "unknown option %s", argv[optind - 1]);
        }
    }
    if (optind != argc - 1 || !image)
        return cli_usage("checkpoint", "expected: kago checkpoint NAME --image DIR");
    struct kago_container *c = cli_load(g, argv[optind]);
    if (!c)
        return 1;
    int rc = kago_container_checkpoint(c, image, &o, &err);
    kago_container_free(c);
    return rc < 0 ? cli_fail(err) : 0;
}
