/* kago check Kagofile [--set KEY=VALUE]...: evaluate and validate the file; start nothing. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../config/kagofile.h"
#include "cli.h"
#include "container_int.h"

/* A rootfs directory that is not there (yet): valid, but a start would fail; said, and counted. */
static int rootfs_warn(const char *kind, const char *name, const struct kago_spec *s)
{
    /* (a container of an image keeps the default rootfs until the image is resolved) */
    int e = s->image ? 0 : kago__rootfs_errno(s);
    if (e)
        cli_warnf("%s %s: rootfs %s: %s (a start would fail)", kind, name, s->rootfs, strerror(e));
    return e != 0;
}

CLI_VERB(check)
{
    int warned = 0;
    const char *path = NULL;
    char **sets = calloc((size_t)argc + 1, sizeof *sets);
    size_t nsets = 0;
    if (!sets)
        abort();
    for (int i = 1; i < argc; i++) {
        if ((!strcmp(argv[i], "--set") || !strcmp(argv[i], "-s")) && i + 1 < argc) {
            sets[nsets++] = argv[++i];
        } else if (!strncmp(argv[i], "--set=", 6)) {
            sets[nsets++] = argv[i] + 6;
        } else if (argv[i][0] == '-' || path) {
            free(sets);
            return cli_usage("check", "expected: kago check Kagofile [--set KEY=VALUE]...");
        } else {
            path = argv[i];
        }
    }
    if (!path) {
        free(sets);
        return cli_usage("check", "expected: kago check Kagofile [--set KEY=VALUE]...");
    }
    struct kago_kagofile *kf = NULL;
    struct kago_error *err = NULL;
    int rc = kago_kagofile_load(path, sets, &kf, &err);
    free(sets);
    if (rc < 0)
        return cli_fail(err);
    for (size_t i = 0; i < kago_kagofile_ncontainers(kf); i++) {
        const struct kago_spec *s = kago_kagofile_container(kf, i);
        size_t hooks = 0;
        static const char *const kinds[] = {"before_start", "after_start", "on_exit",
                                            "on_oom",       "on_failure",  "after",
                                            "every",        "on_signal",   "ready"};
        for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++)
            hooks += kago_kagofile_nhooks(kf, i, kinds[k]);
        printf("container %s: %s, %s %s, %zu hook%s\n", s->name, s->argv[0], s->image ? "image" : "rootfs",
               s->image ? s->image : s->rootfs, hooks, hooks == 1 ? "" : "s");
        warned += rootfs_warn("container", s->name, s);
    }
    for (size_t i = 0; i < kago_kagofile_napps(kf); i++) {
        const struct kago_app *a = kago_kagofile_app(kf, i);
        printf("app %s: %s%s%s, port %u\n", a->name, a->hosts[0] ? a->hosts[0] : "",
               a->hosts[0] && a->hosts[1] ? ", ..." : "",
               a->default_app ? (a->hosts[0] ? " (default)" : "default") : "", (unsigned)a->port);
        warned += rootfs_warn("app", a->name, &a->spec);
    }
    if (warned)
        printf("%s: ok, %d warning%s\n", path, warned, warned == 1 ? "" : "s");
    else
        printf("%s: ok\n", path);
    kago_kagofile_free(kf);
    return 0;
}
