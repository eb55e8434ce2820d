/* kago ps [--admin IP:PORT|unix:PATH] [--admin-token FILE] [--root DIR] [--json]: the apps and instances
 * of a running `kago serve`, from its admin listener (GET /ps, with serve's bearer token over TCP).
 * With a container ID, the OCI runtime's form: kago ps [--format json|table] ID
 * [PS-ARGS...], the container's processes. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli.h"

static void human(char *out, size_t n, long long bytes)
{
    if (bytes < 0)
        snprintf(out, n, "-");
    else if (bytes >= 1 << 20)
        snprintf(out, n, "%.1fM", bytes / 1048576.0);
    else
        snprintf(out, n, "%.1fK", bytes / 1024.0);
}

/* ps(1) on the host (default -ef), its header and the lines whose PID column is one of pids (as runc). */
static int ps_table(const pid_t *pids, int n, int argc, char **argv)
{
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) < 0)
        return cli_errorf("ps: pipe: %s", strerror(errno));
    pid_t child = fork();
    if (child < 0)
        return cli_errorf("ps: fork: %s", strerror(errno));
    if (child == 0) {
        dup2(fds[1], 1);
        char *def[] = {"ps", "-ef", NULL}, **args = def;
        if (argc > 0) {
            args = calloc((size_t)argc + 2, sizeof *args);
            if (!args)
                _exit(127);
            args[0] = "ps";
            memcpy(args + 1, argv, (size_t)argc * sizeof *args);
        }
        execvp("ps", args);
        fprintf(stderr, "kago: ps: exec ps: %s\n", strerror(errno));
        _exit(127);
    }
    close(fds[1]);
    FILE *f = fdopen(fds[0], "r");
    char *line = NULL;
    size_t cap = 0;
    int col = -1;
    for (bool header = true; f && getline(&line, &cap, f) > 0; header = false) {
        char *copy = strdup(line), *save = NULL, *tok = strtok_r(copy, " \t\n", &save);
        int i = 0;
        for (; tok && header && strcmp(tok, "PID"); tok = strtok_r(NULL, " \t\n", &save))
            i++;
        for (; tok && !header && i < col; tok = strtok_r(NULL, " \t\n", &save))
            i++;
        if (header)
            col = tok ? i : -1;
        bool ours = false;
        for (int k = 0; !header && tok && k < n; k++)
            ours |= atoi(tok) == pids[k];
        free(copy);
        if (header && col < 0)
            break;
        if (header || ours)
            fputs(line, stdout);
    }
    free(line);
    if (f)
        fclose(f);
    int status;
    waitpid(child, &status, 0);
    if (col < 0)
        return cli_errorf("ps: the output of ps has no PID column");
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : cli_errorf("ps: ps failed");
}

static int oci_ps(struct cli *g, int argc, char **argv)
{
    const char *format = "table";
    int i = 1;
    for (; i < argc && argv[i][0] == '-' && strcmp(argv[i], "--"); i++) {
        if (!strcmp(argv[i], "--format") || !strcmp(argv[i], "-f")) {
            if (++i == argc)
                return cli_usage("ps", "--format needs a value (json or table)");
            format = argv[i];
        } else if (!strncmp(argv[i], "--format=", 9)) {
            format = argv[i] + 9;
        } else {
            return cli_usage("ps", "unknown option %s", argv[i]);
        }
    }
    if (i < argc && !strcmp(argv[i], "--"))
        i++;
    if (strcmp(format, "json") && strcmp(format, "table"))
        return cli_usage("ps", "--format %s: expected json or table", format);
    if (i == argc)
        return cli_usage("ps", "expected: kago ps [--format json|table] ID [PS-ARGS...]");
    struct kago_error *err = NULL;
    struct kago_container *c = NULL;
    if (kago_container_load(g->root, argv[i], &c, &err) < 0)
        return cli_fail(err);
    pid_t *pids = NULL;
    int n = kago_container_pids(c, &pids, &err);
    kago_container_free(c);
    if (n < 0)
        return cli_fail(err);
    int ret = 0;
    if (!strcmp(format, "json")) {
        printf("[");
        for (int k = 0; k < n; k++)
            printf("%s%d", k ? "," : "", (int)pids[k]);
        printf("]\n");
    } else {
        fflush(stdout);
        ret = ps_table(pids, n, argc - i - 1, argv + i + 1);
    }
    free(pids);
    return ret;
}

/* kago ps --hosts: each app and its hosts as configured; the default app says so. */
static void print_hosts(json_object *apps)
{
    printf("%-16s %s\n", "APP", "HOSTS");
    for (size_t i = 0; i < json_object_array_length(apps); i++) {
        json_object *a = json_object_array_get_idx(apps, i), *v, *hs;
        if (json_object_object_get_ex(a, "removed", &v) && json_object_get_boolean(v))
            continue;
        printf("%-16s ", json_object_object_get_ex(a, "name", &v) ? json_object_get_string(v) : "?");
        size_t n = json_object_object_get_ex(a, "hosts", &hs) ? json_object_array_length(hs) : 0;
        for (size_t k = 0; k < n; k++)
            printf("%s%s", k ? ", " : "", json_object_get_string(json_object_array_get_idx(hs, k)));
        if (json_object_object_get_ex(a, "default", &v) && json_object_get_boolean(v))
            printf("%s(default: unmatched hosts)", n ? " " : "");
        printf("\n");
    }
}

CLI_VERB(ps)
{
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--cluster") || !strncmp(argv[i], "--cluster=", 10))
            return kago__cli_ps_cluster(argc, argv); /* every node's, from etcd (ps_cluster.c) */
    /* the OCI form names a container (or asks for --format); serve's takes only options */
    for (int i = 1; i < argc; i++)
        if (argv[i][0] != '-' || !strncmp(argv[i], "--format", 8) || !strcmp(argv[i], "-f")) {
            if (i > 1 && (!strcmp(argv[i - 1], "--admin") || !strcmp(argv[i - 1], "--admin-token") ||
                          !strcmp(argv[i - 1], "--root")))
                continue;
            return oci_ps(g, argc, argv);
        }
    struct cli_admin adm;
    cli_admin_init(&adm, g);
    bool json = false, hosts = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json"))
            json = true;
        else if (!strcmp(argv[i], "--hosts"))
            hosts = true;
        else if (cli_admin_option(&adm, argc, argv, &i) != 1)
            return cli_usage("ps", "expected: kago ps [--admin IP:PORT|unix:PATH] [--admin-token FILE] "
                                   "[--root DIR] [--json|--hosts]");
    }
    char *body = cli_admin_call(&adm, "ps", "GET", "/ps");
    if (!body)
        return 1;
    const char *admin = adm.addr; /* (the one the call found) */
    if (json) {
        fputs(body, stdout);
        free(body);
        return 0;
    }
    json_object *root = json_tokener_parse(body);
    free(body);
    json_object *apps;
    if (!root || !json_object_object_get_ex(root, "apps", &apps)) {
        json_object_put(root);
        return cli_errorf("ps: cannot parse the answer of %s", admin);
    }
    if (hosts) {
        print_hosts(apps);
        json_object_put(root);
        return 0;
    }
    printf("%-16s %-28s %-9s %8s %9s %9s %9s %9s %7s %8s\n", "APP", "INSTANCE", "STATE", "AGE", "INFLIGHT",
           "SERVED", "CPU", "MEMORY", "CPU-LIM", "MEM-LIM");
    for (size_t i = 0; i < json_object_array_length(apps); i++) {
        json_object *a = json_object_array_get_idx(apps, i), *v, *insts;
        const char *name = json_object_object_get_ex(a, "name", &v) ? json_object_get_string(v) : "?";
        int pending = json_object_object_get_ex(a, "pending", &v) ? json_object_get_int(v) : 0;
        json_object_object_get_ex(a, "instances", &insts);
        size_t n = insts ? json_object_array_length(insts) : 0;
        const char *app_state = json_object_object_get_ex(a, "state", &v) ? json_object_get_string(v) : "";
        bool backoff = app_state && !strcmp(app_state, "backoff");
        if (n == 0)
            printf("%-16s %-28s %-9s %8s %9s %9s %9s %9s %7s %8s\n", name, "-",
                   backoff   ? "backoff"
                   : pending ? "held"
                             : "stopped",
                   "-", "-", "-", "-", "-", "-", "-");
        for (size_t k = 0; k < n; k++) {
            json_object *in = json_object_array_get_idx(insts, k);
            char mem[32], age[32], cpu[32], cpu_lim[32] = "-", mem_lim[32] = "-";
            /* the limits now (a.scale_up changes them live) */
            if (json_object_object_get_ex(in, "cpu_limit", &v) && json_object_get_double(v) > 0)
                snprintf(cpu_lim, sizeof(cpu_lim), "%.0f%%", json_object_get_double(v) * 100);
            if (json_object_object_get_ex(in, "memory_limit", &v))
                human(mem_lim, sizeof(mem_lim), json_object_get_int64(v));
            json_object_object_get_ex(in, "memory", &v);
            human(mem, sizeof(mem), json_object_get_int64(v));
            json_object_object_get_ex(in, "age_s", &v);
            snprintf(age, sizeof(age), "%.0fs", json_object_get_double(v));
            json_object_object_get_ex(in, "cpu_s", &v);
            snprintf(cpu, sizeof(cpu), "%.2fs", json_object_get_double(v));
            json_object *nm, *st, *inf, *sv;
            json_object_object_get_ex(in, "name", &nm);
            json_object_object_get_ex(in, "state", &st);
            json_object_object_get_ex(in, "in_flight", &inf);
            json_object_object_get_ex(in, "served", &sv);
            printf("%-16s %-28s %-9s %8s %9d %9lld %9s %9s %7s %8s\n", name, json_object_get_string(nm),
                   json_object_get_string(st), age, json_object_get_int(inf),
                   (long long)json_object_get_int64(sv), cpu, mem, cpu_lim, mem_lim);
        }
        if (pending)
            printf("%-16s %d request(s) held for a starting instance\n", name, pending);
        if (backoff) {
            json_object *f, *r, *e;
            json_object_object_get_ex(a, "failures_in_a_row", &f);
            json_object_object_get_ex(a, "retry_in_s", &r);
            json_object_object_get_ex(a, "last_error", &e);
            printf("%-16s %d failed start(s) in a row, next in %.0fs (503 until then): %s\n", name,
                   json_object_get_int(f), json_object_get_double(r), e ? json_object_get_string(e) : "?");
        }
    }
    json_object_put(root);
    return 0;
}
