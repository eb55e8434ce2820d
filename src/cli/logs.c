/* kago logs APP [-f] [--instance NAME] [--since DURATION] [--tail N] [--json]: the output of a served
 * app's instances, as kago serve records it under <root>/logs/APP (current.log and its rotated
 * predecessors current.log.1 .. .N, oldest first). -f then follows current.log (across rotations) until
 * interrupted. */
#include <dirent.h>
#include <errno.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../serve/logfmt.h"
#include "cli.h"

#define FOLLOW_POLL_US 200000

struct logs_opts {
    const char *app, *instance;
    int64_t since_us; /* records before this are skipped (0: none) */
    long tail;        /* only the last tail records (-1: all) */
    bool follow, json;
};

/* The last `tail` records kept, oldest first once complete. */
struct ring {
    char **lines;
    long n, next;
};

static void print_record(const struct logs_opts *o, const char *s, size_t n, const struct logfmt_rec *r)
{
    if (!o->json) {
        fwrite(s, 1, n, stdout);
        putchar('\n');
        return;
    }
    json_object *j = json_object_new_object();
    json_object_object_add(j, "time", json_object_new_string_len(r->time, (int)r->time_len));
    json_object_object_add(j, "app", json_object_new_string(o->app));
    json_object_object_add(j, "instance", json_object_new_string_len(r->inst, (int)r->inst_len));
    json_object_object_add(j, "stream", json_object_new_string_len(r->stream, (int)r->stream_len));
    json_object_object_add(j, "line", json_object_new_string_len(r->text, (int)r->text_len));
    puts(json_object_to_json_string_ext(j, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
    json_object_put(j);
}

static bool wanted(const struct logs_opts *o, const char *s, size_t n, struct logfmt_rec *r)
{
    if (kago__logfmt_parse(s, n, r) < 0)
        return false;
    if (o->instance && (strlen(o->instance) != r->inst_len || memcmp(o->instance, r->inst, r->inst_len)))
        return false;
    return r->us >= o->since_us;
}

/* One record line (without '\n'): printed, or kept in the ring for --tail. */
static void take(const struct logs_opts *o, struct ring *ring, char *s, size_t n)
{
    struct logfmt_rec r;
    if (!wanted(o, s, n, &r))
        return;
    if (!ring) {
        print_record(o, s, n, &r);
        return;
    }
    if (ring->n == 0)
        return;
    free(ring->lines[ring->next % ring->n]);
    ring->lines[ring->next % ring->n] = strndup(s, n);
    ring->next++;
}

/* Reads the complete lines of f from where it is; a last line without '\n' (being written) is left for
 * the next read. */
static void read_lines(const struct logs_opts *o, struct ring *ring, FILE *f)
{
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    while ((n = getline(&line, &cap, f)) > 0) {
        if (line[n - 1] != '\n') {
            fseeko(f, -(off_t)n, SEEK_CUR);
            break;
        }
        take(o, ring, line, (size_t)n - 1);
    }
    clearerr(f);
    free(line);
}

static int cmp_desc(const void *a, const void *b)
{
    unsigned x = *(const unsigned *)a, y = *(const unsigned *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

/* The rotated files' numbers, highest (oldest) first; *n of them (caller frees). */
static unsigned *rotated(const char *dir, size_t *n)
{
    unsigned *v = NULL;
    *n = 0;
    DIR *d = opendir(dir);
    struct dirent *de;
    while (d && (de = readdir(d))) {
        char *end;
        if (strncmp(de->d_name, "current.log.", 12) || !de->d_name[12])
            continue;
        unsigned long k = strtoul(de->d_name + 12, &end, 10);
        if (*end || !k || k > 1000)
            continue;
        v = realloc(v, (*n + 1) * sizeof(*v));
        if (!v)
            abort();
        v[(*n)++] = (unsigned)k;
    }
    if (d)
        closedir(d);
    if (*n)
        qsort(v, *n, sizeof(*v), cmp_desc);
    return v;
}

/* Follows dir/current.log from f (NULL: not there yet) until killed. */
_Noreturn static void follow(const struct logs_opts *o, const char *dir, FILE *f)
{
    char path[4096 + 32];
    snprintf(path, sizeof(path), "%s/current.log", dir);
    for (;;) {
        if (f)
            read_lines(o, NULL, f);
        fflush(stdout);
        usleep(FOLLOW_POLL_US);
        struct stat now, cur;
        if (stat(path, &now) < 0)
            continue; /* rotated with keep: 1 and not written yet */
        if (f && fstat(fileno(f), &cur) == 0 && cur.st_ino == now.st_ino && cur.st_dev == now.st_dev)
            continue;
        if (f) { /* rotated: the rest of the old file, then the new one from its start */
            read_lines(o, NULL, f);
            fclose(f);
        }
        f = fopen(path, "re");
    }
}

static int logs_run(const struct logs_opts *o, const char *dir)
{
    struct ring ring = {0}, *rp = NULL;
    if (o->tail >= 0) {
        ring.n = o->tail;
        ring.lines = calloc(o->tail ? (size_t)o->tail : 1, sizeof(char *));
        rp = &ring;
    }
    size_t nrot;
    unsigned *rot = rotated(dir, &nrot);
    char path[4096 + 32];
    for (size_t i = 0; i < nrot; i++) {
        snprintf(path, sizeof(path), "%s/current.log.%u", dir, rot[i]);
        FILE *f = fopen(path, "re");
        if (f) {
            read_lines(o, rp, f);
            fclose(f);
        }
    }
    free(rot);
    snprintf(path, sizeof(path), "%s/current.log", dir);
    FILE *cur = fopen(path, "re");
    if (cur)
        read_lines(o, rp, cur);
    if (rp) {
        long first = ring.next > ring.n ? ring.next - ring.n : 0;
        for (long i = first; i < ring.next; i++) {
            char *s = ring.lines[i % ring.n];
            struct logfmt_rec r;
            if (kago__logfmt_parse(s, strlen(s), &r) == 0)
                print_record(o, s, strlen(s), &r);
        }
        for (long i = 0; i < ring.n; i++)
            free(ring.lines[i]);
        free(ring.lines);
    }
    if (o->follow)
        follow(o, dir, cur);
    if (cur)
        fclose(cur);
    return 0;
}

static int usage(void)
{
    return cli_usage("logs",
                     "expected: kago logs APP [-f] [--instance NAME] [--since DURATION] [--tail N] [--json]");
}

CLI_VERB(logs)
{
    static const struct option longopts[] = {
        {"follow", no_argument, NULL, 'f'},      {"instance", required_argument, NULL, 'i'},
        {"since", required_argument, NULL, 's'}, {"tail", required_argument, NULL, 'n'},
        {"json", no_argument, NULL, 'j'},        {NULL, 0, NULL, 0},
    };
    struct logs_opts o = {.tail = -1};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "fn:", longopts, NULL)) != -1) {
        char *end;
        uint64_t ms;
        struct kago_error *err = NULL;
        switch (c) {
        case 'f':
            o.follow = true;
            break;
        case 'i':
            o.instance = optarg;
            break;
        case 's':
            if (kago_parse_duration(optarg, &ms, &err) < 0) {
                kago_error_prefix(&err, "logs: --since");
                return cli_fail(err);
            }
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            o.since_us = (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000 - (int64_t)ms * 1000;
            break;
        case 'n':
            o.tail = strtol(optarg, &end, 10);
            if (*end || end == optarg || o.tail < 0)
                return cli_usage("logs", "--tail: \"%s\" is not a number of lines", optarg);
            if (o.tail > 10000000) /* kept in memory: more is all of any sane log */
                o.tail = 10000000;
            break;
        case 'j':
            o.json = true;
            break;
        default:
            return usage();
        }
    }
    if (optind + 1 != argc)
        return usage();
    o.app = argv[optind];
    if (!*o.app || strchr(o.app, '/') || o.app[0] == '.')
        return cli_errorf("logs: \"%s\" is not an app name", o.app);
    char dir[4096];
    snprintf(dir, sizeof(dir), "%s/logs/%s", g->root, o.app);
    struct stat st;
    if (stat(dir, &st) < 0 || !S_ISDIR(st.st_mode))
        return cli_errorf(
            "logs: unknown app \"%s\": no logs under %s/logs (no instance of an app of that name "
            "has run under this --root)",
            o.app, g->root);
    return logs_run(&o, dir);
}
