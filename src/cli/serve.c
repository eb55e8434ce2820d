/* kago serve --config DIR [--listen ADDR] [--admin ADDR] [--access-log PATH|-|off]: the
 * FastContainer proxy. Containers of the apps in DIR start on their first request. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "serve.h"

static int parse_ms(const char *verb, const char *s, uint64_t *ms)
{
    struct kago_error *err = NULL;
    if (kago_parse_duration(s, ms, &err) < 0)
        return cli_fail(err);
    return 0;
}

CLI_VERB(serve)
{
    static const struct option longopts[] = {
        {"config", required_argument, NULL, 'c'},
        {"listen", required_argument, NULL, 'l'},
        {"admin", required_argument, NULL, 'a'},
        {"admin-token", required_argument, NULL, 'T'},
        {"access-log", required_argument, NULL, 'L'},
        {"root", required_argument, NULL, 'r'},
        {"header-timeout", required_argument, NULL, 'H'},
        {"keepalive-timeout", required_argument, NULL, 'K'},
        {"connect-timeout", required_argument, NULL, 'C'},
        {"response-timeout", required_argument, NULL, 'R'},
        {"send-timeout", required_argument, NULL, 1106},
        {"no-cold-start-header", no_argument, NULL, 'N'},
        {"frozen-memory-budget", required_argument, NULL, 'F'},
        {"drain-timeout", required_argument, NULL, 'D'},
        {"max-starting", required_argument, NULL, 'S'},
        {"warm", required_argument, NULL, 'w'},
        {"threads", required_argument, NULL, 1100},
        {"loop-priority", required_argument, NULL, 1104},
        {"metrics-app-histograms", no_argument, NULL, 'M'},
        {"log-format", required_argument, NULL, 'J'},
        {"upgrade", no_argument, NULL, 'U'},
        {"listen-tls", required_argument, NULL, 's'},
        {"tls-default-cert", required_argument, NULL, 'e'},
        {"tls-default-key", required_argument, NULL, 'k'},
        {"tls-unknown", required_argument, NULL, 'u'},
        {"tls-handshake-timeout", required_argument, NULL, 't'},
        {"cluster", required_argument, NULL, 'E'},
        {"node", required_argument, NULL, 'n'},
        {"advertise", required_argument, NULL, 'A'},
        {"node-ttl", required_argument, NULL, 'W'},
        {"etcd-ca", required_argument, NULL, 1101},
        {"etcd-cert", required_argument, NULL, 1102},
        {"etcd-key", required_argument, NULL, 1103},
        {"acme-directory", required_argument, NULL, 1000},
        {"acme-email", required_argument, NULL, 1001},
        {"acme-ca", required_argument, NULL, 1002},
        {"acme-ask", required_argument, NULL, 1003},
        {"acme-no-wait", no_argument, NULL, 1004},
        {"acme-rate", required_argument, NULL, 1005},
        {"acme-retry", required_argument, NULL, 1006},
        {"acme-dir", required_argument, NULL, 1007},
        {"acme-challenge", required_argument, NULL, 1008},
        {"no-h2", no_argument, NULL, '2'},
        {"h2c", no_argument, NULL, '3'},
        {"budget-cpu", required_argument, NULL, 'B'},
        {"budget-memory", required_argument, NULL, 'b'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    struct kago_serve_opts o;
    kago_serve_opts_init(&o);
    o.root = g->root;
    o.argv = g->argv;
    const char *challenge = NULL; /* --acme-challenge */
    int opt;
    while ((opt = getopt_long(argc, argv, "c:l:a:L:r:h", longopts, NULL)) != -1) {
        switch (opt) {
        case 'c':
            o.config_dir = optarg;
            break;
        case 'l':
        case 's':
            if (o.nlisten == KAGO_SERVE_MAX_LISTEN)
                return cli_usage("serve", "at most %d --listen and --listen-tls in all",
                                 KAGO_SERVE_MAX_LISTEN);
            o.listen[o.nlisten++] = (struct kago_serve_listen){.addr = optarg, .tls = opt == 's'};
            break;
        case 'e':
            o.tls_default_cert = optarg;
            break;
        case 'k':
            o.tls_default_key = optarg;
            break;
        case 'u':
            if (!strcmp(optarg, "default"))
                o.tls_unknown = KAGO_TLS_UNKNOWN_DEFAULT;
            else if (!strcmp(optarg, "alert"))
                o.tls_unknown = KAGO_TLS_UNKNOWN_ALERT;
            else
                return cli_usage("serve", "--tls-unknown: \"%s\" is not default or alert", optarg);
            break;
        case 't':
            if (parse_ms("serve", optarg, &o.tls_handshake_timeout_ms))
                return 1;
            break;
        case 'a':
            o.admin = optarg;
            break;
        case 1000:
        case 1001:
        case 1002:
        case 1003: {
            const char **dst[] = {&o.acme_directory, &o.acme_email, &o.acme_ca, &o.acme_ask};
            *dst[opt - 1000] = optarg;
            break;
        }
        case 1004:
            o.acme_no_wait = true;
            break;
        case 1007:
            o.acme_dir = optarg;
            break;
        case 1008:
            if (strcmp(optarg, "http-01") && strcmp(optarg, "tls-alpn-01"))
                return cli_usage("serve", "--acme-challenge: \"%s\" (want http-01 or tls-alpn-01)", optarg);
            challenge = optarg;
            break;
        case 1005: {
            char *end;
            errno = 0;
            unsigned long n = strtoul(optarg, &end, 10);
            if (errno || end == optarg || *end || n == 0 || n > 100000 || optarg[0] == '-')
                return cli_usage("serve", "--acme-rate: \"%s\" is not a number from 1 to 100000", optarg);
            o.acme_rate = (unsigned)n;
            break;
        }
        case 1006:
            if (parse_ms("serve", optarg, &o.acme_retry_ms))
                return 1;
            if (o.acme_retry_ms < 1000)
                return cli_usage("serve", "--acme-retry: \"%s\" is under 1s", optarg);
            break;
        case 'T':
            o.admin_token = optarg;
            break;
        case 'L':
            o.access_log = optarg;
            break;
        case 'r':
            o.root = optarg;
            break;
        case 'H':
            if (parse_ms("serve", optarg, &o.header_timeout_ms))
                return 1;
            break;
        case 'K':
            if (parse_ms("serve", optarg, &o.keepalive_timeout_ms))
                return 1;
            break;
        case 'C':
            if (parse_ms("serve", optarg, &o.connect_timeout_ms))
                return 1;
            break;
        case 'R':
            if (parse_ms("serve", optarg, &o.response_timeout_ms))
                return 1;
            break;
        case 1106:
            if (parse_ms("serve", optarg, &o.send_timeout_ms))
                return 1;
            if (!o.send_timeout_ms)
                return cli_usage("serve", "--send-timeout %s: expected a duration above 0", optarg);
            break;
        case 'U':
            o.upgrade = true;
            break;
        case '2':
            o.no_h2 = true;
            break;
        case '3':
            o.h2c = true;
            break;
        case 'E':
            o.cluster = optarg;
            break;
        case 'n':
            o.node = optarg;
            break;
        case 'A':
            o.advertise = optarg;
            break;
        case 'W': {
            uint64_t ms;
            if (parse_ms("serve", optarg, &ms))
                return 1;
            if (ms < 2000 || ms > 3600000)
                return cli_usage(
                    "serve", "--node-ttl: \"%s\" is not from 2s to 1h (etcd's minimum TTL is 2 s)", optarg);
            o.node_ttl_s = (unsigned)((ms + 999) / 1000);
            break;
        }
        case 'N':
            o.cold_start_header = false;
            break;
        case 'M':
            o.metrics_app_histograms = true;
            break;
        case 'D':
            if (parse_ms("serve", optarg, &o.drain_timeout_ms))
                return 1;
            break;
        case 'S': {
            char *end;
            errno = 0;
            unsigned long n = strtoul(optarg, &end, 10);
            if (errno || end == optarg || *end || n == 0 || n > 100000 || optarg[0] == '-')
                return cli_usage("serve", "--max-starting: \"%s\" is not a number from 1 to 100000", optarg);
            o.max_starting = (unsigned)n;
            break;
        }
        case 'w': {
            char *end;
            errno = 0;
            unsigned long n = strtoul(optarg, &end, 10);
            if (errno || end == optarg || *end || n > 32 || optarg[0] == '-')
                return cli_usage("serve", "--warm: \"%s\" is not a number from 0 to 32", optarg);
            o.warm = (unsigned)n;
            break;
        }
        case 1101:
            o.etcd_ca = optarg;
            break;
        case 1102:
            o.etcd_cert = optarg;
            break;
        case 1103:
            o.etcd_key = optarg;
            break;
        case 1104: {
            char *end;
            errno = 0;
            long n = strtol(optarg, &end, 10);
            if (errno || end == optarg || *end || n < 0 || n > 39)
                return cli_usage("serve", "--loop-priority: \"%s\" is not a number from 0 to 39", optarg);
            o.loop_priority = n ? (int)n : -1;
            break;
        }
        case 1100: {
            char *end;
            errno = 0;
            unsigned long n = strtoul(optarg, &end, 10);
            if (errno || end == optarg || *end || n < 1 || n > KAGO_SERVE_MAX_THREADS || optarg[0] == '-')
                return cli_usage("serve", "--threads: \"%s\" is not a number from 1 to %d", optarg,
                                 KAGO_SERVE_MAX_THREADS);
            o.threads = (unsigned)n;
            break;
        }
        case 'J':
            if (!strcmp(optarg, "text"))
                o.log_format = KAGO_LOG_TEXT;
            else if (!strcmp(optarg, "json"))
                o.log_format = KAGO_LOG_JSON;
            else if (!strcmp(optarg, "journal"))
                o.log_format = KAGO_LOG_JOURNAL;
            else
                return cli_usage("serve", "--log-format: \"%s\" is not text, json or journal", optarg);
            break;
        case 'F': {
            struct kago_error *err = NULL;
            int64_t bytes;
            if (kago_parse_size(optarg, &bytes, &err) < 0)
                return kago_error_prefix(&err, "serve: --frozen-memory-budget"), cli_fail(err);
            o.frozen_memory_budget = bytes == KAGO_NOLIMIT ? UINT64_MAX : (uint64_t)bytes;
            break;
        }
        case 'B': {
            struct kago_error *err = NULL;
            int64_t quota;
            if (kago_parse_cpu(optarg, &quota, &err) < 0)
                return kago_error_prefix(&err, "serve: --budget-cpu"), cli_fail(err);
            if (quota <= 0)
                return cli_usage("serve", "--budget-cpu: \"%s\": give a share of the CPUs like 180%%",
                                 optarg);
            o.budget_cpu_us = (uint64_t)quota;
            break;
        }
        case 'b': {
            struct kago_error *err = NULL;
            int64_t bytes;
            if (kago_parse_size(optarg, &bytes, &err) < 0)
                return kago_error_prefix(&err, "serve: --budget-memory"), cli_fail(err);
            if (bytes <= 0)
                return cli_usage("serve", "--budget-memory: \"%s\": give a size like 16G", optarg);
            o.budget_memory = (uint64_t)bytes;
            break;
        }
        case 'h':
            printf(
                "usage: kago serve --config DIR | --cluster etcd://HOST:PORT[,HOST:PORT...]\n"
                "                  [--node NAME] [--advertise IP:PORT] [--node-ttl 5s]   (docs/cluster.md)\n"
                "                  [--etcd-ca FILE] [--etcd-cert FILE --etcd-key FILE]   (etcds://: TLS)\n"
                "                  [--listen 127.0.0.1:8080]... [--listen-tls IP:PORT]...\n"
                "                  [--tls-default-cert FILE --tls-default-key FILE]\n"
                "                  [--tls-unknown default|alert] [--tls-handshake-timeout 10s]\n"
                "                  [--acme-directory URL [--acme-email ADDR] [--acme-ca FILE]\n"
                "                   [--acme-ask URL] [--acme-no-wait] [--acme-rate 10] [--acme-retry 60s]\n"
                "                   [--acme-dir ROOT/acme] [--acme-challenge http-01|tls-alpn-01]]\n"
                "                   (certificates on demand)\n"
                "                  [--no-h2]   (TLS: http/1.1 only)   [--h2c]   (plain: HTTP/2 prior "
                "knowledge too)\n"
                "                  [--admin 127.0.0.1:9090|unix:PATH|off] [--admin-token FILE]\n"
                "                  [--root DIR] [--access-log PATH|-|off] [--header-timeout 10s]\n"
                "                  [--keepalive-timeout 75s] [--connect-timeout 5s] [--response-timeout "
                "60s]\n"
                "                  [--send-timeout 60s]\n"
                "                  [--no-cold-start-header] [--frozen-memory-budget 1G] [--drain-timeout "
                "10s]\n"
                "                  [--max-starting N]   (container starts at once; default 2 per CPU)\n"
                "                  [--warm 4]   (warm sandboxes per namespace set, at most; 0: none)\n"
                "                  [--threads N]   (event loops; N - 1 take TLS handshakes; default: the "
                "CPUs)\n"
                "                  [--loop-priority 10]   (nice levels of the event loops above what serve "
                "starts, in a storm of starts; 0: none)\n"
                "                  [--budget-cpu 180%%] [--budget-memory 16G]   (a.scale_up's limit, all "
                "apps)\n"
                "                  [--metrics-app-histograms]   (/metrics: each app's histograms too)\n"
                "                  [--upgrade]   (take over from the serve running with this --root)\n"
                "                  [--log-format text|json|journal]\n"
                "See docs/serve.md.\n");
            return 0;
        default:
            return cli_usage("serve", "unknown option");
        }
    }
    if (optind < argc)
        return cli_usage("serve", "unexpected argument \"%s\"", argv[optind]);
    if (!o.cluster)
        o.cluster = getenv("KAGO_CLUSTER") && *getenv("KAGO_CLUSTER") && !o.config_dir
                        ? getenv("KAGO_CLUSTER")
                        : NULL;
    if (!o.config_dir && !o.cluster)
        return cli_usage("serve", "--config DIR or --cluster etcd://HOST:PORT is required");
    if (o.config_dir && o.cluster)
        return cli_usage("serve",
                         "--config and --cluster exclude each other: a node's apps come from one place");
    if (!o.cluster && (o.node || o.advertise || o.node_ttl_s || o.etcd_ca || o.etcd_cert || o.etcd_key))
        return cli_usage("serve", "--node, --advertise, --node-ttl and --etcd-* go with --cluster");
    if (!o.tls_default_cert != !o.tls_default_key)
        return cli_usage("serve", "--tls-default-cert and --tls-default-key go together");
    if (o.tls_unknown == KAGO_TLS_UNKNOWN_DEFAULT && !o.tls_default_cert)
        return cli_usage("serve", "--tls-unknown default needs --tls-default-cert and --tls-default-key");
    if (!o.acme_directory &&
        (o.acme_email || o.acme_ca || o.acme_ask || o.acme_no_wait || o.acme_dir || challenge))
        return cli_usage("serve", "--acme-email, --acme-ca, --acme-ask, --acme-dir, --acme-no-wait and "
                                  "--acme-challenge go with --acme-directory");
    if (o.acme_directory) {
        bool plain = !o.nlisten, tls = false;
        for (unsigned i = 0; i < o.nlisten; i++)
            o.listen[i].tls ? (tls = true) : (plain = true);
        if (!tls)
            return cli_usage("serve", "--acme-directory needs a --listen-tls (where certificates are used)");
        /* as Caddy: HTTP-01 where a plain listener answers it, else TLS-ALPN-01 on the TLS listeners */
        o.acme_tls_alpn = challenge ? !strcmp(challenge, "tls-alpn-01") : !plain;
        if (!o.acme_tls_alpn && !plain)
            return cli_usage("serve", "--acme-challenge http-01 needs a --listen (where the CA asks for "
                                      "/.well-known/acme-challenge/, on port 80)");
    }
    struct kago_error *err = NULL;
    if (kago_serve_run(&o, &err) < 0)
        return cli_fail(err);
    return 0;
}
