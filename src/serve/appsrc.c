/* kago serve — the checks an app passes before serve takes it (from a config dir or from etcd), and an
 * app evaluated from Kagofile source (the form `kago app put` publishes: docs/cluster.md). */
#include <string.h>

#include "kagofile.h"
#include "serve_int.h"
#include "util.h"

int kago__app_check(const struct kago_app *a, const char *where, struct kago_error **err)
{
    if ((!a->hosts || !a->hosts[0]) && !a->default_app)
        return kago_error_set(err, 0, "%s: app %s has no hosts", where, a->name);
    if (a->port == 0)
        return kago_error_set(err, 0, "%s: app %s has no port", where, a->name);
    if (kago_spec_validate(&a->spec, err) < 0) {
        kago_error_prefix(err, "%s: app %s", where, a->name);
        return -1;
    }
    return 0;
}

int kago__app_from_source(const char *where, const char *src, size_t len, const char *want_name,
                          struct kago_app *out, struct kago_error **err)
{
    struct kago_kagofile *kf = NULL;
    if (kago_kagofile_load_string(where, src, len, NULL, &kf, err) < 0)
        return -1;
    int ret = 0;
    size_t n = kago_kagofile_napps(kf);
    if (n != 1)
        ret = kago_error_set(
            err, 0, "%s: defines %zu apps (Kago.app); a published Kagofile holds exactly one", where, n);
    else if (want_name && strcmp(kago_kagofile_app(kf, 0)->name, want_name) != 0)
        ret = kago_error_set(err, 0, "%s: defines app %s, not %s", where, kago_kagofile_app(kf, 0)->name,
                             want_name);
    else if (kago__app_check(kago_kagofile_app(kf, 0), where, err) == 0)
        kago_kagofile_take_app(kf, 0, out);
    else
        ret = -1;
    kago_kagofile_free(kf);
    return ret;
}
