/* kago image import|list|inspect|rm|prune, and --image for run and create. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "cli.h"

static void image_usage(FILE *f)
{
    fprintf(f, "usage: kago [--images DIR] image import SOURCE [--name NAME[:TAG]] [--json] [--quiet]\n"
               "                         [--max-layer-size SIZE] [--max-entries N]\n"
               "       kago image list [--json]\n"
               "       kago image inspect REF\n"
               "       kago image rm [--force] REF...\n"
               "       kago image prune [--json]\n"
               "SOURCE: oci:DIR[:TAG], oci-archive:FILE[:TAG], docker-archive:FILE (FILE - reads stdin)\n");
}

static json_object *strv_json(char *const *v)
{
    json_object *a = json_object_new_array();
    for (size_t i = 0; v && v[i]; i++)
        json_object_array_add(a, json_object_new_string(v[i]));
    return a;
}

static int image_import(struct cli *g, int argc, char **argv)
{
    static const struct option opts[] = {
        {"name", required_argument, NULL, 'n'},
        {"json", no_argument, NULL, 'j'},
        {"quiet", no_argument, NULL, 'q'},
        {"max-layer-size", required_argument, NULL, 'S'},
        {"max-entries", required_argument, NULL, 'N'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    struct kago_import_opts o = {.stdin_fd = 0};
    bool json = false, quiet = false;
    struct kago_error *err = NULL;
    int c;
    while ((c = getopt_long(argc, argv, "hq", opts, NULL)) != -1) {
        int64_t v;
        char *end;
        switch (c) {
        case 'n':
            o.name = optarg;
            break;
        case 'j':
            json = true;
            break;
        case 'q':
            quiet = true;
            break;
        case 'S':
            if (kago_parse_size(optarg, &v, &err) < 0)
                return cli_fail(err);
            o.max_layer_bytes = v < 0 ? UINT64_MAX : (uint64_t)v; /* (max: none; 0 is refused) */
            break;
        case 'N':
            o.max_entries = strtoull(optarg, &end, 10);
            if (*end || !*optarg || !o.max_entries)
                return cli_usage("image import", "--max-entries %s: expected a positive number", optarg);
            break;
        case 'h':
            image_usage(stdout);
            return 0;
        default:
            return cli_usage("image import", "unknown option or missing value: %s", argv[optind - 1]);
        }
    }
    if (optind != argc - 1)
        return cli_usage("image import", "expected one SOURCE");
    o.progress = !json && !quiet && isatty(2);
    struct kago_import_result r;
    if (kago_image_import(g->images, argv[optind], &o, &r, &err) < 0)
        return cli_fail(err);
    if (json) {
        json_object *j = json_object_new_object();
        json_object_object_add(j, "id", json_object_new_string(r.id));
        json_object_object_add(j, "names", strv_json(r.names));
        json_object_object_add(j, "layers", json_object_new_int64((int64_t)r.layers));
        json_object_object_add(j, "new_layers", json_object_new_int64((int64_t)r.new_layers));
        json_object_object_add(j, "size", json_object_new_int64((int64_t)r.size));
        puts(json_object_to_json_string_ext(j, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
        json_object_put(j);
    } else if (!quiet) {
        printf("imported %s (id %.12s, %zu layer%s, %zu new, %.1f MB)\n", r.names[0] ? r.names[0] : "<none>",
               r.id, r.layers, r.layers == 1 ? "" : "s", r.new_layers, (double)r.size / 1e6);
    }
    kago_import_result_free(&r);
    return 0;
}

static void split_name(const char *name, char **repo, const char **tag)
{
    const char *slash = name ? strrchr(name, '/') : NULL,
               *colon = name ? strrchr(slash ? slash : name, ':') : NULL;
    *repo = name ? strndup(name, colon ? (size_t)(colon - name) : strlen(name)) : strdup("<none>");
    *tag = colon ? colon + 1 : "<none>";
}

static int image_list(struct cli *g, int argc, char **argv)
{
    bool json = argc == 2 && !strcmp(argv[1], "--json");
    if (argc > 2 || (argc == 2 && !json))
        return cli_usage("image list", "expected no argument but --json");
    struct kago_image_info *v;
    size_t n;
    struct kago_error *err = NULL;
    if (kago_image_list(g->images, &v, &n, &err) < 0)
        return cli_fail(err);
    json_object *a = json_object_new_array();
    if (!json)
        printf("%-40s %-12s %-12s %10s %6s  %s\n", "NAME", "TAG", "ID", "SIZE", "LAYERS", "CREATED");
    for (size_t i = 0; i < n; i++) {
        char *repo, created[32] = "-";
        const char *tag;
        split_name(v[i].name, &repo, &tag);
        time_t t = (time_t)v[i].created;
        if (t)
            strftime(created, sizeof created, "%Y-%m-%d %H:%M", gmtime(&t));
        if (json) {
            json_object *o = json_object_new_object();
            json_object_object_add(o, "name", v[i].name ? json_object_new_string(repo) : NULL);
            json_object_object_add(o, "tag", v[i].name ? json_object_new_string(tag) : NULL);
            json_object_object_add(o, "id", json_object_new_string(v[i].id));
            json_object_object_add(o, "size", json_object_new_int64((int64_t)v[i].size));
            json_object_object_add(o, "layers", json_object_new_int64((int64_t)v[i].layers));
            json_object_object_add(o, "created", json_object_new_int64(v[i].created));
            json_object_array_add(a, o);
        } else {
            printf("%-40s %-12s %-12.12s %8.1fMB %6zu  %s\n", repo, tag, v[i].id, (double)v[i].size / 1e6,
                   v[i].layers, created);
        }
        free(repo);
    }
    if (json)
        puts(json_object_to_json_string_ext(a, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
    json_object_put(a);
    kago_image_list_free(v, n);
    return 0;
}

static int image_inspect(struct cli *g, int argc, char **argv)
{
    if (argc != 2)
        return cli_usage("image inspect", "expected one image");
    struct kago_image *img;
    struct kago_error *err = NULL;
    if (kago_image_load(g->images, argv[1], &img, &err) < 0)
        return cli_fail(err);
    char *text = kago_image_inspect(img);
    puts(text);
    free(text);
    kago_image_free(img);
    return 0;
}

static int image_rm(struct cli *g, int argc, char **argv)
{
    bool force = false;
    int i = 1, rc = 0;
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (strcmp(argv[i], "--force") && strcmp(argv[i], "-f"))
            return cli_usage("image rm", "unknown option %s", argv[i]);
        force = true;
    }
    if (i >= argc)
        return cli_usage("image rm", "expected an image");
    for (; i < argc; i++) {
        struct kago_error *err = NULL;
        if (kago_image_rm(g->images, argv[i], force, &err) < 0)
            rc = cli_fail(err);
    }
    return rc;
}

static int image_prune(struct cli *g, int argc, char **argv)
{
    bool json = argc == 2 && !strcmp(argv[1], "--json");
    if (argc > 2 || (argc == 2 && !json))
        return cli_usage("image prune", "expected no argument but --json");
    struct kago_prune_result r;
    struct kago_error *err = NULL;
    if (kago_image_prune(g->images, &r, &err) < 0)
        return cli_fail(err);
    if (json)
        printf("{\"images\": %zu, \"layers\": %zu, \"partial\": %zu, \"bytes\": %llu}\n", r.images, r.layers,
               r.partial, (unsigned long long)r.bytes);
    else
        printf("removed %zu image%s, %zu layer%s (%.1f MB), %zu interrupted import%s\n", r.images,
               r.images == 1 ? "" : "s", r.layers, r.layers == 1 ? "" : "s", (double)r.bytes / 1e6, r.partial,
               r.partial == 1 ? "" : "s");
    return 0;
}

CLI_VERB(image)
{
    static const struct {
        const char *name;
        int (*fn)(struct cli *, int, char **);
    } subs[] = {{"import", image_import},   {"list", image_list}, {"ls", image_list},
                {"inspect", image_inspect}, {"rm", image_rm},     {"prune", image_prune}};
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        image_usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    for (size_t i = 0; i < sizeof subs / sizeof subs[0]; i++)
        if (!strcmp(argv[1], subs[i].name)) {
            optind = 1;
            return subs[i].fn(g, argc - 1, argv + 1);
        }
    return cli_usage("image", "unknown subcommand \"%s\"", argv[1]);
}

int cli_apply_image(struct cli *g, struct kago_spec *spec, const struct cli_image_args *ia, char **cmd)
{
    struct kago_image *img;
    struct kago_error *err = NULL;
    if (kago_image_load(g->images, ia->image, &img, &err) < 0)
        return cli_fail(err);
    char *entry[2] = {ia->entrypoint && *ia->entrypoint ? (char *)ia->entrypoint : NULL, NULL};
    struct kago_image_overrides ov = {.cmd = cmd,
                                      .entrypoint = entry,
                                      .entrypoint_set = ia->entrypoint != NULL,
                                      .user_set = ia->user_set,
                                      .cwd_set = ia->cwd_set,
                                      .env_set = ia->env};
    int rc = kago_image_apply(img, spec, &ov, &err) < 0 ? cli_fail(err) : 0;
    kago_image_free(img);
    return rc;
}
