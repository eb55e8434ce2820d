/* An image of the store: loaded by reference, applied to a spec (its layers and its config's defaults),
 * listed, removed, pruned; and pinned by the containers made from it. */
#include <fcntl.h>
#include <linux/openat2.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <kago/image.h>

#include "image_int.h"
#include "manifest.h"
#include "store.h"

struct kago_image {
    char id[65];
    char *store;        /* the store's real path: what containers record */
    char *name;         /* the name it was loaded by, or NULL */
    json_object *names; /* every name of it */
    struct kago__image_config cfg;
    char *config_text;
    json_object *record;
};

int kago_image_load(const char *store, const char *ref, struct kago_image **out, struct kago_error **err)
{
    *out = NULL;
    struct kago__store st;
    if (kago__store_open(store, false, 0, &st, err) < 0)
        return -1;
    struct kago_image *img = xcalloc(1, sizeof *img);
    int ret = -1;
    cleanup_free char *cpath = NULL;
    if (kago__store_resolve(&st, ref, img->id, &img->name, err) < 0)
        goto out;
    img->store = realpath(store, NULL);
    img->names = json_object_new_array();
    json_object *refs = kago__refs_read(&st, NULL);
    json_object_object_foreach(refs, n, idv)
    {
        if (!strcmp(json_object_get_string(idv), img->id))
            json_object_array_add(img->names, json_object_new_string(n));
    }
    json_object_put(refs);
    img->record = kago__image_record(&st, img->id, err);
    cpath = xasprintf("images/%s/config.json", img->id);
    if (!img->store || !img->record || !(img->config_text = kago__read_fileat(st.dirfd, cpath, err)))
        goto out;
    if (kago__config_parse(img->config_text, strlen(img->config_text), &img->cfg, err) < 0)
        goto out;
    ret = 0;
out:
    kago__store_close(&st);
    if (ret < 0) {
        kago_error_prefix(err, "image %s", ref);
        kago_image_free(img);
        return -1;
    }
    *out = img;
    return 0;
}

void kago_image_free(struct kago_image *img)
{
    if (!img)
        return;
    free(img->store);
    free(img->name);
    json_object_put(img->names);
    kago__image_config_free(&img->cfg);
    free(img->config_text);
    json_object_put(img->record);
    free(img);
}

const char *kago_image_id(const struct kago_image *img)
{
    return img->id;
}

uint16_t kago_image_port(const struct kago_image *img)
{
    return img->cfg.port;
}

char *kago_image_inspect(const struct kago_image *img)
{
    json_object *o = json_object_new_object(), *cfg = json_tokener_parse(img->config_text), *v;
    json_object_object_add(o, "id", json_object_new_string(img->id));
    json_object_object_add(o, "name", img->name ? json_object_new_string(img->name) : NULL);
    json_object_object_add(o, "names", json_object_get(img->names));
    const char *keys[] = {"created", "architecture", "os", "config"};
    for (size_t i = 0; i < 4; i++)
        if (json_object_object_get_ex(cfg, keys[i], &v))
            json_object_object_add(o, keys[i], json_object_get(v));
    json_object *labels = NULL, *c;
    if (json_object_object_get_ex(cfg, "config", &c) && json_object_object_get_ex(c, "Labels", &labels))
        json_object_object_add(o, "labels", json_object_get(labels));
    else
        json_object_object_add(o, "labels", json_object_new_object());
    uint64_t size = 0;
    json_object *layers;
    if (json_object_object_get_ex(img->record, "layers", &layers)) {
        json_object_object_add(o, "layers", json_object_get(layers));
        for (size_t i = 0; i < json_object_array_length(layers); i++)
            if (json_object_object_get_ex(json_object_array_get_idx(layers, i), "size", &v))
                size += (uint64_t)json_object_get_int64(v);
    }
    json_object_object_add(o, "size", json_object_new_int64((int64_t)size));
    json_object_object_add(o, "store", json_object_new_string(img->store));
    char *text =
        xstrdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE));
    json_object_put(o);
    json_object_put(cfg);
    return text;
}

/* Sets KEY=VALUE in env, replacing the entry of the same key. */
static void env_put(char ***env, const char *kv)
{
    size_t klen = strcspn(kv, "="), n = 0;
    for (; *env && (*env)[n]; n++)
        if (!strncmp((*env)[n], kv, klen) && (*env)[n][klen] == '=') {
            free((*env)[n]);
            (*env)[n] = xstrdup(kv);
            return;
        }
    *env = xrealloc(*env, (n + 2) * sizeof **env);
    (*env)[n] = xstrdup(kv);
    (*env)[n + 1] = NULL;
}

static bool env_given(char *const *set, const char *kv)
{
    size_t klen = strcspn(kv, "=");
    for (size_t i = 0; set && set[i]; i++)
        if (!strncmp(set[i], kv, klen) && set[i][klen] == '=')
            return true;
    return false;
}

static char **argv_join(char *const *a, char *const *b)
{
    size_t na = 0, nb = 0;
    while (a && a[na])
        na++;
    while (b && b[nb])
        nb++;
    char **v = xcalloc(na + nb + 1, sizeof *v);
    for (size_t i = 0; i < na; i++)
        v[i] = xstrdup(a[i]);
    for (size_t i = 0; i < nb; i++)
        v[na + i] = xstrdup(b[i]);
    return v;
}

/* The image's layers, top first, as paths in the store. */
static char **layer_paths(const struct kago_image *img)
{
    size_t n = img->cfg.ndiff_ids;
    char **v = xcalloc(n + 1, sizeof *v);
    for (size_t i = 0; i < n; i++)
        v[i] = xasprintf("%s/layers/%s", img->store, img->cfg.diff_ids[n - 1 - i]);
    return v;
}

int kago_image_apply(const struct kago_image *img, struct kago_spec *spec,
                     const struct kago_image_overrides *ov, struct kago_error **err)
{
    static const struct kago_image_overrides none = {0};
    ov = ov ? ov : &none;
    const char *ref = img->name ? img->name : img->id;
    if (!img->cfg.ndiff_ids)
        return kago_error_set(err, 0, "image %s: no layers", ref);
    char *const *entry = ov->entrypoint_set ? ov->entrypoint : img->cfg.entrypoint;
    char *const *cmd = ov->cmd ? ov->cmd : ov->entrypoint_set ? NULL : img->cfg.cmd;
    char **argv = argv_join(entry, cmd);
    if (!argv[0]) {
        kago__strv_free(argv);
        return kago_error_set(err, 0, "image %s: no command (it has no Entrypoint or Cmd: give one after --)",
                              ref);
    }
    const char *stop = img->cfg.stop_signal;
    int sig = stop && *stop ? kago_signal_from_name(stop) : 0;
    if (sig < 0) {
        kago__strv_free(argv);
        return kago_error_set(err, 0, "image %s: StopSignal %s: not a signal", ref, img->cfg.stop_signal);
    }
    char **layers = layer_paths(img);
    if (!ov->user_set && img->cfg.user && *img->cfg.user &&
        kago__image_user((const char *const *)layers, img->cfg.user, &spec->uid, &spec->gid, err) < 0) {
        kago__strv_free(argv);
        kago__strv_free(layers);
        return kago_error_prefix(err, "image %s", ref), -1;
    }
    kago__strv_free(spec->argv);
    spec->argv = argv;
    for (size_t i = 0; img->cfg.env && img->cfg.env[i]; i++)
        if (strchr(img->cfg.env[i], '=') && !env_given(ov->env_set, img->cfg.env[i]))
            env_put(&spec->env, img->cfg.env[i]);
    if (!ov->cwd_set && img->cfg.working_dir && img->cfg.working_dir[0] == '/') {
        free(spec->cwd);
        spec->cwd = xstrdup(img->cfg.working_dir);
    }
    spec->stop_signal = sig;
    free(spec->rootfs);
    spec->rootfs = NULL;
    kago__strv_free(spec->layers);
    spec->layers = layers;
    free(spec->image);
    spec->image = xstrdup(ref);
    free(spec->image_id);
    spec->image_id = xstrdup(img->id);
    free(spec->image_store);
    spec->image_store = xstrdup(img->store);
    spec->overlay = true;
    return 0;
}

int kago__image_pin(const struct kago_spec *spec, const char *root, struct kago_error **err)
{
    cleanup_free char *lockp = xasprintf("%s/lock", spec->image_store);
    int fd = open(lockp, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || flock(fd, LOCK_SH) < 0) {
        kago_error_set(err, errno, "image %s: store %s", spec->image, spec->image_store);
        if (fd >= 0)
            close(fd);
        return -1;
    }
    for (size_t i = 0; spec->layers[i]; i++)
        if (access(spec->layers[i], F_OK) < 0) {
            close(fd);
            return kago_error_set(err, errno, "image %s: layer %s", spec->image, spec->layers[i]);
        }
    /* the root is named in the store, once, so that rm and prune find the containers using it */
    cleanup_free char *real = realpath(root, NULL);
    uint64_t h =
        0xcbf29ce484222325ULL; /* FNV-1a: a name for the root, not a secret (and no OpenSSL start-up) */
    for (const char *p = real ? real : root; *p; p++)
        h = (h ^ (unsigned char)*p) * 0x100000001b3ULL;
    cleanup_free char *link = xasprintf("%s/roots/%016llx", spec->image_store, (unsigned long long)h);
    if (real && symlink(real, link) < 0 && errno != EEXIST) {
        close(fd);
        return kago_error_set(err, errno, "image %s: %s", spec->image, link);
    }
    return fd;
}
