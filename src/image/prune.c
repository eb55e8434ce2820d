/* kago image list, rm and prune: the store's images by name, and what is removed when nothing uses it. */
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include <kago/image.h>

#include "manifest.h"
#include "store.h"

/* Calls fn for each entry of the store's subdirectory sub (not "." entries). */
static void each_entry(struct kago__store *st, const char *sub, void (*fn)(const char *name, void *arg),
                       void *arg)
{
    int fd = openat(st->dirfd, sub, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (!d) {
        if (fd >= 0)
            close(fd);
        return;
    }
    struct dirent *de;
    while ((de = readdir(d)))
        if (de->d_name[0] != '.')
            fn(de->d_name, arg);
    closedir(d);
}

struct listing {
    struct kago__store *st;
    json_object *names_of; /* id → [names] */
    struct kago_image_info *v;
    size_t n;
};

static void list_one(const char *id, void *arg)
{
    struct listing *l = arg;
    if (strlen(id) != 64)
        return;
    json_object *rec = kago__image_record(l->st, id, NULL), *layers, *names = NULL, *v;
    if (!rec)
        return;
    struct kago_image_info info = {0};
    memcpy(info.id, id, 65);
    if (json_object_object_get_ex(rec, "layers", &layers)) {
        info.layers = json_object_array_length(layers);
        for (size_t i = 0; i < info.layers; i++)
            if (json_object_object_get_ex(json_object_array_get_idx(layers, i), "size", &v))
                info.size += (uint64_t)json_object_get_int64(v);
    }
    json_object_put(rec);
    cleanup_free char *cpath = xasprintf("images/%s/config.json", id);
    cleanup_free char *text = kago__read_fileat(l->st->dirfd, cpath, NULL);
    struct kago__image_config cfg;
    if (text && kago__config_parse(text, strlen(text), &cfg, NULL) == 0) {
        info.created = cfg.created;
        kago__image_config_free(&cfg);
    }
    json_object_object_get_ex(l->names_of, id, &names);
    size_t nn = names ? json_object_array_length(names) : 0;
    for (size_t i = 0; i < (nn ? nn : 1); i++) {
        l->v = xrealloc(l->v, (l->n + 1) * sizeof *l->v);
        l->v[l->n] = info;
        l->v[l->n++].name = nn ? xstrdup(json_object_get_string(json_object_array_get_idx(names, i))) : NULL;
    }
}

static json_object *names_by_id(json_object *refs)
{
    json_object *by = json_object_new_object();
    json_object_object_foreach(refs, name, idv)
    {
        json_object *a;
        const char *id = json_object_get_string(idv);
        if (!json_object_object_get_ex(by, id, &a)) {
            a = json_object_new_array();
            json_object_object_add(by, id, a);
        }
        json_object_array_add(a, json_object_new_string(name));
    }
    return by;
}

static int by_name(const void *a, const void *b)
{
    const struct kago_image_info *x = a, *y = b;
    if (!x->name || !y->name)
        return x->name ? -1 : y->name ? 1 : strcmp(x->id, y->id);
    return strcmp(x->name, y->name);
}

int kago_image_list(const char *store, struct kago_image_info **out, size_t *n, struct kago_error **err)
{
    *out = NULL;
    *n = 0;
    struct kago__store st;
    if (kago__store_open(store, false, 0, &st, NULL) < 0)
        return 0; /* no store yet: no images */
    json_object *refs = kago__refs_read(&st, err);
    if (!refs) {
        kago__store_close(&st);
        return -1;
    }
    struct listing l = {.st = &st, .names_of = names_by_id(refs)};
    each_entry(&st, "images", list_one, &l);
    json_object_put(l.names_of);
    json_object_put(refs);
    kago__store_close(&st);
    if (l.n)
        qsort(l.v, l.n, sizeof *l.v, by_name);
    *out = l.v;
    *n = l.n;
    return 0;
}

void kago_image_list_free(struct kago_image_info *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i].name);
    free(v);
}

/* Layers that some image of the store still has (a set). */
static void add_layers_of(const char *id, void *arg)
{
    struct {
        struct kago__store *st;
        json_object *set;
        const char *skip;
    } *a = arg;
    if (strlen(id) != 64 || (a->skip && !strcmp(id, a->skip)))
        return;
    json_object *rec = kago__image_record(a->st, id, NULL), *layers, *v;
    if (rec && json_object_object_get_ex(rec, "layers", &layers))
        for (size_t i = 0; i < json_object_array_length(layers); i++)
            if (json_object_object_get_ex(json_object_array_get_idx(layers, i), "diff_id", &v))
                json_object_object_add(a->set, json_object_get_string(v), json_object_new_boolean(1));
    json_object_put(rec);
}

static json_object *layers_referenced(struct kago__store *st, const char *skip)
{
    struct {
        struct kago__store *st;
        json_object *set;
        const char *skip;
    } a = {st, json_object_new_object(), skip};
    each_entry(st, "images", add_layers_of, &a);
    return a.set;
}

struct sweep {
    struct kago__store *st;
    json_object *keep, *in_use;
    size_t n;
    uint64_t bytes;
};

static void sweep_layer(const char *name, void *arg)
{
    struct sweep *s = arg;
    if (strlen(name) != 64 || json_object_object_get_ex(s->keep, name, NULL) ||
        json_object_object_get_ex(s->in_use, name, NULL))
        return;
    if (kago__store_remove_layer(s->st, name, &s->bytes) == 0)
        s->n++;
}

/* Removes the layers no image references and no container uses, and the records that point nowhere. */
static void sweep(struct kago__store *st, json_object *in_use, const char *gone, size_t *n, uint64_t *bytes)
{
    struct sweep s = {.st = st, .keep = layers_referenced(st, gone), .in_use = in_use};
    each_entry(st, "layers", sweep_layer, &s);
    json_object_put(s.keep);
    *n += s.n;
    *bytes += s.bytes;
}

static void sweep_link(const char *name, void *arg)
{
    struct kago__store *st = arg;
    char target[80];
    cleanup_free char *link = xasprintf("digests/%s", name);
    ssize_t len = readlinkat(st->dirfd, link, target, sizeof target - 1);
    if (len <= 0)
        return;
    target[len] = '\0';
    cleanup_free char *layer = xasprintf("layers/%s", target);
    if (faccessat(st->dirfd, layer, F_OK, AT_SYMLINK_NOFOLLOW) < 0)
        unlinkat(st->dirfd, link, 0);
}

static void sweep_lock(const char *name, void *arg)
{
    struct kago__store *st = arg; /* under the exclusive store lock no import holds one */
    cleanup_free char *p = xasprintf("locks/%s", name);
    unlinkat(st->dirfd, p, 0);
}

static int remove_image(struct kago__store *st, const char *id, struct kago_error **err)
{
    cleanup_free char *from = xasprintf("images/%s", id);
    cleanup_free char *to = xasprintf("tmp/rm-%s", id);
    if (renameat(st->dirfd, from, st->dirfd, to) < 0)
        return kago_error_set(err, errno, "image store %s: remove %s", st->dir, from);
    cleanup_free char *path = xasprintf("%s/%s", st->dir, to);
    kago__rm_rf(path);
    return 0;
}

/* The names (array) pointing at id. */
static char **names_of(json_object *refs, const char *id)
{
    size_t n = 0;
    char **v = xcalloc(1, sizeof *v);
    json_object_object_foreach(refs, name, idv)
    {
        if (strcmp(json_object_get_string(idv), id))
            continue;
        v = xrealloc(v, (n + 2) * sizeof *v);
        v[n++] = xstrdup(name);
        v[n] = NULL;
    }
    return v;
}

int kago_image_rm(const char *store, const char *ref, bool force, struct kago_error **err)
{
    struct kago__store st;
    if (kago__store_open(store, false, LOCK_EX, &st, err) < 0)
        return -1;
    char id[65];
    cleanup_free char *name = NULL;
    json_object *refs = NULL, *images = NULL, *layers = NULL, *user;
    char **names = NULL;
    int ret = -1;
    if (kago__store_resolve(&st, ref, id, &name, err) < 0) {
        kago_error_prefix(err, "image %s", ref);
        goto out;
    }
    if (!(refs = kago__refs_read(&st, err)))
        goto out;
    names = names_of(refs, id);
    if (name && names[0] && names[1]) { /* one name of several: untag it */
        ret = kago__refs_set(&st, id, (char *[]){name, NULL}, true, err);
        goto out;
    }
    if (kago__store_in_use(&st, &images, &layers, err) < 0)
        goto out;
    if (json_object_object_get_ex(images, id, &user) && !force) {
        kago_error_set(err, 0, "image %s is used by the container %s (delete it first, or rm --force)", ref,
                       json_object_get_string(user));
        goto out;
    }
    if (kago__refs_set(&st, id, names, true, err) < 0 || remove_image(&st, id, err) < 0)
        goto out;
    size_t n = 0;
    uint64_t bytes = 0;
    sweep(&st, layers, NULL, &n, &bytes);
    each_entry(&st, "digests", sweep_link, &st);
    ret = 0;
out:
    kago__strv_free(names);
    json_object_put(refs);
    json_object_put(images);
    json_object_put(layers);
    kago__store_close(&st);
    return ret;
}

struct prune_images {
    struct kago__store *st;
    json_object *named, *in_use;
    size_t n;
};

static void prune_image(const char *id, void *arg)
{
    struct prune_images *p = arg;
    if (strlen(id) != 64 || json_object_object_get_ex(p->named, id, NULL) ||
        json_object_object_get_ex(p->in_use, id, NULL))
        return;
    if (remove_image(p->st, id, NULL) == 0)
        p->n++;
}

int kago_image_prune(const char *store, struct kago_prune_result *res, struct kago_error **err)
{
    *res = (struct kago_prune_result){0};
    struct kago__store st;
    if (kago__store_open(store, false, LOCK_EX, &st, err) < 0)
        return -1;
    json_object *refs = NULL, *images = NULL, *layers = NULL;
    int ret = -1;
    res->partial = kago__store_clean_tmp(&st);
    if (!(refs = kago__refs_read(&st, err)) || kago__store_in_use(&st, &images, &layers, err) < 0)
        goto out;
    json_object *named = names_by_id(refs);
    struct prune_images p = {.st = &st, .named = named, .in_use = images};
    each_entry(&st, "images", prune_image, &p);
    json_object_put(named);
    res->images = p.n;
    sweep(&st, layers, NULL, &res->layers, &res->bytes);
    each_entry(&st, "digests", sweep_link, &st);
    each_entry(&st, "locks", sweep_lock, &st);
    kago__store_clean_tmp(&st); /* what rm renamed into tmp/ and could not finish */
    ret = 0;
out:
    json_object_put(refs);
    json_object_put(images);
    json_object_put(layers);
    kago__store_close(&st);
    return ret;
}
