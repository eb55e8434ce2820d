/* kago app put FILE | rm NAME | list  [--cluster etcd://HOST:PORT[,...]] (or $KAGO_CLUSTER): the apps a
 * cluster of `kago serve --cluster` nodes serves, kept in etcd under /kago/apps/NAME as Kagofile source
 * (docs/cluster.md). A file is evaluated here first: one that does not load is refused with FILE:LINE
 * and nothing is written. */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "etcd.h"
#include "serve_int.h"
#include "util.h"

#define APPS    "/kago/apps/"
#define CALL_MS 5000

static void app_usage(FILE *f)
{
    fprintf(f, "usage: kago app put FILE [--cluster etcd://HOST:PORT[,HOST:PORT...]]\n"
               "       kago app rm NAME [--cluster ...]\n"
               "       kago app list [--json] [--cluster ...]\n"
               "--cluster defaults to $KAGO_CLUSTER (etcds://: TLS, with $KAGO_ETCD_CA, $KAGO_ETCD_CERT and\n"
               "$KAGO_ETCD_KEY). See docs/cluster.md.\n");
}

struct app_cli {
    const char *cluster;
    bool json;
    char *arg;
    uv_loop_t loop;
    struct etcd_client *etcd;
};

/* Options and the one argument (want_arg) of a subcommand, then the etcd client. Returns 0 or the exit
 * code. */
static int app_setup(struct app_cli *a, const char *verb, int argc, char **argv, bool want_arg)
{
    static const struct option opts[] = {
        {"cluster", required_argument, NULL, 'c'},
        {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    a->cluster = getenv("KAGO_CLUSTER");
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            a->cluster = optarg;
            break;
        case 'j':
            a->json = true;
            break;
        case 'h':
            app_usage(stdout);
            return -1;
        default:
            return cli_usage(verb, "unknown option");
        }
    }
    if (want_arg && optind + 1 != argc)
        return cli_usage(verb, "%s", optind >= argc ? "one argument is required" : "one argument only");
    if (!want_arg && optind != argc)
        return cli_usage(verb, "unexpected argument \"%s\"", argv[optind]);
    a->arg = want_arg ? argv[optind] : NULL;
    if (!a->cluster || !*a->cluster)
        return cli_usage(verb, "--cluster etcd://HOST:PORT (or KAGO_CLUSTER) is required");
    struct kago_error *err = NULL;
    uv_loop_init(&a->loop);
    a->etcd = kago__etcd_new(&a->loop, a->cluster, NULL, &err);
    if (!a->etcd) {
        uv_loop_close(&a->loop);
        return cli_fail(err);
    }
    return 0;
}

static void app_done(struct app_cli *a)
{
    kago__etcd_free(a->etcd);
    uv_run(&a->loop, UV_RUN_DEFAULT);
    uv_loop_close(&a->loop);
}

static int app_put(struct cli *g, int argc, char **argv)
{
    struct app_cli a = {0};
    int rc = app_setup(&a, "app put", argc, argv, true);
    if (rc)
        return rc < 0 ? 0 : rc;
    struct kago_error *err = NULL;
    size_t len = 0;
    cleanup_free char *src = kago__read_file(a.arg, &len, &err);
    struct kago_app app = {0};
    struct json_object *resp = NULL;
    cleanup_free char *key = NULL;
    if (!src || kago__app_from_source(a.arg, src, len, NULL, &app, &err) < 0) {
        rc = cli_fail(err);
        goto out;
    }
    if (app.tls_cert && (app.tls_cert[0] != '/' || app.tls_key[0] != '/')) { /* (each node reads them) */
        kago_error_set(
            &err, 0,
            "%s: app %s: a.tls cert: \"%s\", key: \"%s\": give absolute paths (in a cluster each node "
            "reads the files from its own disk); nothing was written",
            a.arg, app.name, app.tls_cert, app.tls_key);
        rc = cli_fail(err);
        goto out;
    }
    key = xasprintf("%s%s", APPS, app.name);
    if (kago__etcd_call_sync(a.etcd, "kv/put", kago__etcd_req_put(key, src, len, 0), CALL_MS, &resp, &err) <
        0) {
        kago_error_prefix(&err, "app %s", app.name);
        rc = cli_fail(err);
        goto out;
    }
    struct json_object *hdr = NULL;
    int64_t rev = 0;
    json_object_object_get_ex(resp, "header", &hdr);
    kago__etcd_int(hdr, "revision", &rev);
    printf("app %s published (%s, revision %" PRId64 ")\n", app.name, key, rev);
out:
    json_object_put(resp);
    kago_app_free(&app);
    app_done(&a);
    return rc;
}

static int app_rm(struct cli *g, int argc, char **argv)
{
    struct app_cli a = {0};
    int rc = app_setup(&a, "app rm", argc, argv, true);
    if (rc)
        return rc < 0 ? 0 : rc;
    struct kago_error *err = NULL;
    struct json_object *resp = NULL;
    cleanup_free char *key = xasprintf("%s%s", APPS, a.arg);
    int64_t deleted = 0;
    if (!*a.arg || strchr(a.arg, '/')) {
        rc = cli_usage("app rm", "\"%s\" is not an app name", a.arg);
    } else if (kago__etcd_call_sync(a.etcd, "kv/deleterange", kago__etcd_req_delete(key, NULL), CALL_MS,
                                    &resp, &err) < 0) {
        kago_error_prefix(&err, "app %s", a.arg);
        rc = cli_fail(err);
    } else if (!kago__etcd_int(resp, "deleted", &deleted) || !deleted) {
        kago_error_set(&err, 0, "app %s: not in the cluster (no %s in etcd %s)", a.arg, key, a.cluster);
        rc = cli_fail(err);
    } else {
        printf("app %s removed\n", a.arg);
    }
    json_object_put(resp);
    app_done(&a);
    return rc;
}

/* One line (or JSON object) per app: name, hosts (evaluated from its source), mod_revision. */
static void list_one(struct app_cli *a, const struct etcd_kv *kv, struct json_object *arr)
{
    const char *name = kv->key + strlen(APPS);
    cleanup_free char *where = xasprintf("etcd:%s", kv->key);
    struct kago_app app = {0};
    struct kago_error *err = NULL;
    bool ok = kago__app_from_source(where, kv->value, kv->value_len, name, &app, &err) == 0;
    if (arr) {
        struct json_object *o = json_object_new_object(), *h = json_object_new_array();
        json_object_object_add(o, "name", json_object_new_string(name));
        for (char **p = ok ? app.hosts : NULL; p && *p; p++)
            json_object_array_add(h, json_object_new_string(*p));
        json_object_object_add(o, "hosts", h);
        json_object_object_add(o, "revision", json_object_new_int64(kv->mod_rev));
        json_object_object_add(o, "error", ok ? NULL : json_object_new_string(err->msg));
        json_object_array_add(arr, o);
    } else {
        printf("%-24s ", name);
        if (ok)
            for (char **p = app.hosts; *p; p++)
                printf("%s%s", *p, p[1] ? "," : "");
        else
            printf("(invalid: %s)", err->msg);
        printf(" %" PRId64 "\n", kv->mod_rev);
    }
    kago_error_free(err);
    kago_app_free(&app);
}

static int app_list(struct cli *g, int argc, char **argv)
{
    struct app_cli a = {0};
    int rc = app_setup(&a, "app list", argc, argv, false);
    if (rc)
        return rc < 0 ? 0 : rc;
    struct kago_error *err = NULL;
    struct json_object *resp = NULL, *arr = a.json ? json_object_new_array() : NULL;
    cleanup_free char *end = kago__etcd_prefix_end(APPS);
    struct etcd_range r = {0};
    if (kago__etcd_call_sync(a.etcd, "kv/range", kago__etcd_req_range(APPS, end, 0, 0), CALL_MS, &resp,
                             &err) < 0 ||
        kago__etcd_parse_range(resp, &r, &err) < 0) {
        rc = cli_fail(err);
        goto out;
    }
    if (!a.json)
        printf("%-24s %s %s\n", "NAME", "HOSTS", "REVISION");
    for (size_t i = 0; i < r.n; i++)
        list_one(&a, &r.kvs[i], arr);
    if (arr)
        printf("%s\n", json_object_to_json_string_ext(arr, JSON_C_TO_STRING_PLAIN));
out:
    kago__etcd_range_free(&r);
    json_object_put(arr);
    json_object_put(resp);
    app_done(&a);
    return rc;
}

CLI_VERB(app)
{
    static const struct {
        const char *name;
        int (*fn)(struct cli *, int, char **);
    } subs[] = {{"put", app_put}, {"rm", app_rm}, {"list", app_list}, {"ls", app_list}};
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        app_usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    for (size_t i = 0; i < sizeof subs / sizeof subs[0]; i++)
        if (!strcmp(argv[1], subs[i].name)) {
            optind = 1;
            return subs[i].fn(g, argc - 1, argv + 1);
        }
    return cli_usage("app", "unknown subcommand \"%s\"", argv[1]);
}
