/* kago ps --cluster [etcd://HOST:PORT[,...]] [--json]: every node of a `kago serve --cluster` cluster and
 * every instance they published, read from etcd (/kago/nodes/, /kago/instances/, /kago/starting/, all at
 * one revision), not from the nodes: it answers while a node is down (its keys go with its lease). */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "etcd.h"
#include "util.h"

#define CALL_MS 5000

/* Every key under prefix at revision rev (0: the newest; then *rev is set). 0 or < 0 with *err. */
static int range_all(struct etcd_client *etcd, const char *prefix, int64_t *rev, struct etcd_range *r,
                     struct kago_error **err)
{
    cleanup_free char *end = kago__etcd_prefix_end(prefix);
    struct json_object *resp = NULL;
    int ret = kago__etcd_call_sync(etcd, "kv/range", kago__etcd_req_range(prefix, end, *rev, 0), CALL_MS,
                                   &resp, err);
    if (ret == 0)
        ret = kago__etcd_parse_range(resp, r, err);
    if (ret == 0 && !*rev)
        *rev = r->revision;
    json_object_put(resp);
    return ret;
}

static const char *field(struct json_object *o, const char *k)
{
    struct json_object *v = NULL;
    return o && json_object_object_get_ex(o, k, &v) ? json_object_get_string(v) : "?";
}

static void print(const struct etcd_range *nodes, const struct etcd_range *insts,
                  const struct etcd_range *starting, int64_t rev, bool json)
{
    struct json_object *out = json_object_new_object(), *jn = json_object_new_array(),
                       *ji = json_object_new_array(), *js = json_object_new_array();
    if (!json)
        printf("%-16s %-22s %s\n", "NODE", "ADDRESS", "LOAD");
    for (size_t i = 0; i < nodes->n; i++) {
        struct json_object *v = json_tokener_parse(nodes->kvs[i].value), *o = json_object_new_object();
        const char *name = nodes->kvs[i].key + strlen("/kago/nodes/");
        json_object_object_add(o, "name", json_object_new_string(name));
        json_object_object_add(o, "addr", json_object_new_string(field(v, "addr")));
        json_object_object_add(o, "load", json_object_new_string(field(v, "load")));
        json_object_object_add(o, "pid", json_object_new_string(field(v, "pid")));
        if (!json)
            printf("%-16s %-22s %s\n", name, field(v, "addr"), field(v, "load"));
        json_object_array_add(jn, o);
        json_object_put(v);
    }
    if (!json)
        printf("\n%-16s %-16s %-32s %s\n", "APP", "NODE", "INSTANCE", "ADDRESS");
    for (size_t i = 0; i < insts->n; i++) { /* /kago/instances/APP/NODE/INSTANCE */
        cleanup_free char *path = xstrdup(insts->kvs[i].key + strlen("/kago/instances/"));
        char *node = strchr(path, '/'), *inst = node ? strchr(node + 1, '/') : NULL;
        if (!inst)
            continue;
        *node++ = *inst++ = 0;
        struct json_object *v = json_tokener_parse(insts->kvs[i].value), *o = json_object_new_object();
        json_object_object_add(o, "app", json_object_new_string(path));
        json_object_object_add(o, "node", json_object_new_string(node));
        json_object_object_add(o, "name", json_object_new_string(inst));
        json_object_object_add(o, "addr", json_object_new_string(field(v, "addr")));
        if (!json)
            printf("%-16s %-16s %-32s %s\n", path, node, inst, field(v, "addr"));
        json_object_array_add(ji, o);
        json_object_put(v);
    }
    for (size_t i = 0; i < starting->n; i++) { /* /kago/starting/APP = NODE */
        struct json_object *o = json_object_new_object();
        const char *app = starting->kvs[i].key + strlen("/kago/starting/");
        json_object_object_add(o, "app", json_object_new_string(app));
        json_object_object_add(o, "node", json_object_new_string(starting->kvs[i].value));
        json_object_array_add(js, o);
    }
    json_object_object_add(out, "revision", json_object_new_int64(rev));
    json_object_object_add(out, "nodes", jn);
    json_object_object_add(out, "instances", ji);
    json_object_object_add(out, "placed", js);
    if (json)
        printf("%s\n", json_object_to_json_string_ext(out, JSON_C_TO_STRING_PLAIN));
    json_object_put(out);
}

int kago__cli_ps_cluster(int argc, char **argv)
{
    const char *url = getenv("KAGO_CLUSTER");
    bool json = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json"))
            json = true;
        else if (!strncmp(argv[i], "--cluster=", 10))
            url = argv[i] + 10;
        else if (!strcmp(argv[i], "--cluster") && i + 1 < argc && argv[i + 1][0] != '-')
            url = argv[++i];
        else if (strcmp(argv[i], "--cluster"))
            return cli_usage("ps", "expected: kago ps --cluster [etcd://HOST:PORT[,...]] [--json]");
    }
    if (!url || !*url)
        return cli_usage("ps", "--cluster etcd://HOST:PORT (or KAGO_CLUSTER) is required");
    struct kago_error *err = NULL;
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct etcd_client *etcd = kago__etcd_new(&loop, url, NULL, &err);
    if (!etcd) {
        uv_loop_close(&loop);
        return cli_fail(err);
    }
    struct etcd_range nodes = {0}, insts = {0}, starting = {0};
    int64_t rev = 0;
    int rc = 0;
    if (range_all(etcd, "/kago/nodes/", &rev, &nodes, &err) < 0 ||
        range_all(etcd, "/kago/instances/", &rev, &insts, &err) < 0 ||
        range_all(etcd, "/kago/starting/", &rev, &starting, &err) < 0)
        rc = cli_fail(err);
    else
        print(&nodes, &insts, &starting, rev, json);
    kago__etcd_range_free(&nodes);
    kago__etcd_range_free(&insts);
    kago__etcd_range_free(&starting);
    kago__etcd_free(etcd);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    return rc;
}
