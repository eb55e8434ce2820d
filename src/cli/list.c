/* kago list [--json | --format json|table]: every container in the state dir with its status (go-runc's
 * List calls `list --format=json`: containers made from a bundle are listed in their OCI state form). */
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

CLI_VERB(list)
{
    bool json = false, bad = false;
    for (int i = 1; i < argc; i++) {
        const char *f = !strncmp(argv[i], "--format=", 9) ? argv[i] + 9
                        : (!strcmp(argv[i], "--format") || !strcmp(argv[i], "-f")) && i + 1 < argc ? argv[++i]
                        : !strcmp(argv[i], "--json")                                               ? "json"
                                                                                                   : NULL;
        if (f && (!strcmp(f, "json") || !strcmp(f, "table")))
            json = !strcmp(f, "json");
        else
            bad = true;
    }
    if (bad)
        return cli_usage("list", "expected: kago list [--json | --format json|table]");
    char **names = NULL;
    struct kago_error *err = NULL;
    if (kago_container_list(g->root, &names, &err) < 0)
        return cli_fail(err);
    json_object *arr = json ? json_object_new_array() : NULL;
    if (!json)
        printf("%-20s %-8s %-8s %-20s %s\n", "NAME", "PID", "STATUS", "CREATED", "COMMAND");
    for (size_t i = 0; names[i]; i++) {
        struct kago_container *c = NULL;
        if (kago_container_load(g->root, names[i], &c, &err) < 0) {
            char *state = NULL;
            if (asprintf(&state, "%s/%s/state.json", g->root, names[i]) > 0 && access(state, F_OK) == 0)
                fprintf(stderr, "kago: warning: %s (kago delete --force %s removes it)\n", err->msg,
                        names[i]);
            free(state);
            kago_error_clear(&err); /* (else deleted meanwhile) */
            free(names[i]);
            continue;
        }
        char *st = json ? cli_oci_state(g, c) : NULL;
        if (!st)
            st = kago_container_state_json(c);
        json_object *o = json_tokener_parse(st);
        free(st);
        if (json) {
            json_object_array_add(arr, o);
        } else {
            time_t t = (time_t)json_object_get_int64(json_object_object_get(o, "created"));
            char when[32];
            strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", localtime(&t));
            json_object *cmd = json_object_object_get(o, "command");
            printf("%-20s %-8d %-8s %-20s %s\n", names[i],
                   json_object_get_int(json_object_object_get(o, "pid")),
                   json_object_get_string(json_object_object_get(o, "status")), when,
                   cmd && json_object_array_length(cmd)
                       ? json_object_get_string(json_object_array_get_idx(cmd, 0))
                       : "");
            json_object_put(o);
        }
        kago_container_free(c);
        free(names[i]);
    }
    free(names);
    if (json) {
        puts(json_object_to_json_string_ext(arr, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED));
        json_object_put(arr);
    }
    return 0;
}
