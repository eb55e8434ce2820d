/* The image store: layout, locks, names (refs.json), records, and which images containers still use. */
#include <dirent.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <kago/image.h>

#include "store.h"

const char *kago_image_store_dir(const char *dir)
{
    if (dir && *dir)
        return dir;
    const char *env = getenv("KAGO_IMAGES");
    return env && *env ? env : KAGO_DEFAULT_IMAGES;
}

void kago__sha256_hex(const void *data, size_t len, char out[65])
{
    unsigned char md[32];
    unsigned n = 0;
    EVP_Digest(data, len, md, &n, EVP_sha256(), NULL);
    for (int i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
}

bool kago__digest_hex(const char *s, const char **hex)
{
    if (!s || strncmp(s, "sha256:", 7) || strlen(s + 7) != 64 || strspn(s + 7, "0123456789abcdef") != 64)
        return false;
    if (hex)
        *hex = s + 7;
    return true;
}

static const char *const subdirs[] = {"layers", "digests", "images", "roots", "locks", "tmp", NULL};

int kago__store_open(const char *dir, bool create, int lock, struct kago__store *st, struct kago_error **err)
{
    *st = (struct kago__store){.dirfd = -1, .lockfd = -1};
    if (create && kago__mkdir_p(dir, 0700, err) < 0)
        return kago_error_prefix(err, "image store"), -1;
    st->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (st->dirfd < 0)
        return kago_error_set(err, errno, "image store %s", dir);
    st->dir = xstrdup(dir);
    for (int i = 0; create && subdirs[i]; i++)
        if (mkdirat(st->dirfd, subdirs[i], 0700) < 0 && errno != EEXIST) {
            kago_error_set(err, errno, "image store %s: mkdir %s", dir, subdirs[i]);
            goto fail;
        }
    if (lock) {
        st->lockfd = openat(st->dirfd, "lock", O_RDWR | O_CREAT | O_CLOEXEC, 0600);
        if (st->lockfd < 0 && errno == ENOENT && !create) /* a store nothing was ever imported into */
            st->lockfd = openat(st->dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (st->lockfd < 0 || flock(st->lockfd, lock) < 0) {
            kago_error_set(err, errno, "image store %s: lock", dir);
            goto fail;
        }
    }
    return 0;
fail:
    kago__store_close(st);
    return -1;
}

void kago__store_close(struct kago__store *st)
{
    if (st->lockfd >= 0)
        close(st->lockfd);
    if (st->dirfd >= 0)
        close(st->dirfd);
    free(st->dir);
    *st = (struct kago__store){.dirfd = -1, .lockfd = -1};
}

static json_object *read_json_at(int dirfd, const char *name, bool missing_ok, struct kago_error **err)
{
    cleanup_free char *text = kago__read_fileat(dirfd, name, NULL);
    if (!text) {
        if (missing_ok && errno == ENOENT)
            return json_object_new_object();
        return kago_error_set(err, errno, "read %s", name), NULL;
    }
    json_object *o = json_tokener_parse(text);
    if (!o || !json_object_is_type(o, json_type_object)) {
        json_object_put(o);
        return kago_error_set(err, 0, "%s: not a JSON object", name), NULL;
    }
    return o;
}

/* Writes text to name atomically (a temporary file renamed over it). */
static int write_atomic(int dirfd, const char *name, const char *text, struct kago_error **err)
{
    cleanup_free char *tmp = xasprintf("%s.tmp.%d", name, (int)getpid());
    int fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    size_t len = strlen(text);
    if (fd < 0 || write(fd, text, len) != (ssize_t)len || close(fd) < 0 ||
        renameat(dirfd, tmp, dirfd, name) < 0) {
        int e = errno;
        if (fd >= 0)
            unlinkat(dirfd, tmp, 0);
        return kago_error_set(err, e, "write %s", name);
    }
    return 0;
}

json_object *kago__refs_read(struct kago__store *st, struct kago_error **err)
{
    return read_json_at(st->dirfd, "refs.json", true, err);
}

int kago__refs_set(struct kago__store *st, const char *id, char *const *names, bool drop,
                   struct kago_error **err)
{
    cleanup_close int lk = openat(st->dirfd, "refs.lock", O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (lk < 0 || flock(lk, LOCK_EX) < 0)
        return kago_error_set(err, errno, "image store %s: refs.lock", st->dir);
    json_object *refs = kago__refs_read(st, err);
    if (!refs)
        return -1;
    for (size_t i = 0; names && names[i]; i++) {
        if (drop)
            json_object_object_del(refs, names[i]);
        else
            json_object_object_add(refs, names[i], json_object_new_string(id));
    }
    int r = write_atomic(
        st->dirfd, "refs.json",
        json_object_to_json_string_ext(refs, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE), err);
    json_object_put(refs);
    return r;
}

char *kago__ref_normalize(const char *ref)
{
    const char *slash = strrchr(ref, '/');
    const char *colon = strrchr(slash ? slash : ref, ':');
    if (colon || strchr(ref, '@'))
        return xstrdup(ref);
    return xasprintf("%s:latest", ref);
}

static bool image_exists(struct kago__store *st, const char *id)
{
    char path[128];
    snprintf(path, sizeof path, "images/%s/image.json", id);
    return faccessat(st->dirfd, path, F_OK, 0) == 0;
}

/* An id prefix (4+ hex digits, or sha256:HEX) that names exactly one image. */
static int resolve_id(struct kago__store *st, const char *ref, char id[65], struct kago_error **err)
{
    const char *p = strncmp(ref, "sha256:", 7) ? ref : ref + 7;
    size_t n = strlen(p);
    if (n < 4 || n > 64 || strspn(p, "0123456789abcdef") != n)
        return kago_error_set(err, ENOENT, "image %s", ref);
    int fd = openat(st->dirfd, "images", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (!d) {
        if (fd >= 0)
            close(fd);
        return kago_error_set(err, ENOENT, "image %s", ref);
    }
    int found = 0;
    struct dirent *de;
    while ((de = readdir(d)))
        if (strlen(de->d_name) == 64 && !strncmp(de->d_name, p, n) && image_exists(st, de->d_name) &&
            found++ == 0)
            memcpy(id, de->d_name, 65);
    closedir(d);
    if (found > 1)
        return kago_error_set(err, 0, "image %s: the id prefix matches %d images", ref, found);
    return found ? 0 : kago_error_set(err, ENOENT, "image %s", ref);
}

int kago__store_resolve(struct kago__store *st, const char *ref, char id[65], char **name,
                        struct kago_error **err)
{
    if (name)
        *name = NULL;
    json_object *refs = kago__refs_read(st, err);
    if (!refs)
        return -1;
    cleanup_free char *full = kago__ref_normalize(ref);
    const char *tries[] = {full, NULL, NULL};
    cleanup_free char *local = NULL, *hub = NULL;
    if (!strchr(ref, '/')) { /* a short name, as podman's: localhost/ first, then docker.io/library/ */
        tries[1] = local = xasprintf("localhost/%s", full);
        tries[2] = hub = xasprintf("docker.io/library/%s", full);
    }
    json_object *v = NULL;
    for (size_t i = 0; i < 3 && tries[i] && !v; i++)
        if (json_object_object_get_ex(refs, tries[i], &v) && name)
            *name = xstrdup(tries[i]);
    if (v) {
        snprintf(id, 65, "%s", json_object_get_string(v));
        json_object_put(refs);
        return image_exists(st, id) ? 0 : kago_error_set(err, ENOENT, "id %.12s", id);
    }
    json_object_put(refs);
    if (resolve_id(st, ref, id, NULL) == 0)
        return 0;
    return kago_error_set(err, 0, "not in the store %s (kago image import it first)", st->dir);
}

json_object *kago__image_record(struct kago__store *st, const char *id, struct kago_error **err)
{
    char path[128];
    snprintf(path, sizeof path, "images/%s/image.json", id);
    json_object *o = read_json_at(st->dirfd, path, false, err);
    if (!o)
        kago_error_prefix(err, "image %.12s", id);
    return o;
}

uint64_t kago__layer_size(struct kago__store *st, const char *hex)
{
    char path[128];
    snprintf(path, sizeof path, "layers/%s.json", hex);
    json_object *o = read_json_at(st->dirfd, path, false, NULL), *v;
    uint64_t n = o && json_object_object_get_ex(o, "size", &v) ? (uint64_t)json_object_get_int64(v) : 0;
    json_object_put(o);
    return n;
}

/* One container's state file: marks its image and layers when they are of this store. */
static void mark_user(const char *real, const char *dir, const char *text, json_object *images,
                      json_object *layers)
{
    json_object *o = json_tokener_parse(text), *spec, *v;
    if (o && json_object_object_get_ex(o, "spec", &spec) &&
        json_object_object_get_ex(spec, "image_store", &v)) {
        cleanup_free char *their = realpath(json_object_get_string(v), NULL);
        if (their && !strcmp(their, real)) {
            if (json_object_object_get_ex(spec, "image_id", &v) &&
                !json_object_object_get_ex(images, json_object_get_string(v), NULL))
                json_object_object_add(images, json_object_get_string(v), json_object_new_string(dir));
            json_object *ls;
            if (json_object_object_get_ex(spec, "layers", &ls))
                for (size_t i = 0; i < json_object_array_length(ls); i++) {
                    const char *p = json_object_get_string(json_object_array_get_idx(ls, i));
                    const char *base = p ? strrchr(p, '/') : NULL;
                    if (base)
                        json_object_object_add(layers, base + 1, json_object_new_boolean(1));
                }
        }
    }
    json_object_put(o);
}

/* Every container of one root; a root that is gone loses its link. */
static void scan_root(int rootsfd, const char *link, const char *real, json_object *images,
                      json_object *layers)
{
    char target[4096];
    ssize_t n = readlinkat(rootsfd, link, target, sizeof target - 1);
    if (n <= 0)
        return;
    target[n] = '\0';
    int fd = open(target, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT)
            unlinkat(rootsfd, link, 0);
        return;
    }
    DIR *d = fdopendir(fd);
    if (!d) {
        close(fd);
        return;
    }
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue;
        cleanup_free char *state = xasprintf("%s/state.json", de->d_name);
        cleanup_free char *text = kago__read_fileat(dirfd(d), state, NULL);
        cleanup_free char *dir = xasprintf("%s/%s", target, de->d_name);
        if (text)
            mark_user(real, dir, text, images, layers);
    }
    closedir(d);
}

int kago__store_in_use(struct kago__store *st, json_object **images, json_object **layers,
                       struct kago_error **err)
{
    *images = json_object_new_object();
    *layers = json_object_new_object();
    cleanup_free char *real = realpath(st->dir, NULL);
    if (!real)
        return kago_error_set(err, errno, "image store %s", st->dir);
    int fd = openat(st->dirfd, "roots", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (!d) {
        if (fd >= 0)
            close(fd);
        return 0;
    }
    struct dirent *de;
    while ((de = readdir(d)))
        if (de->d_name[0] != '.')
            scan_root(dirfd(d), de->d_name, real, *images, *layers);
    closedir(d);
    return 0;
}

size_t kago__store_clean_tmp(struct kago__store *st)
{
    int fd = openat(st->dirfd, "tmp", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (!d) {
        if (fd >= 0)
            close(fd);
        return 0;
    }
    size_t n = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        size_t len = strlen(de->d_name);
        if (de->d_name[0] == '.' || (len > 5 && !strcmp(de->d_name + len - 5, ".lock")))
            continue;
        cleanup_free char *lock = xasprintf("%s.lock", de->d_name);
        cleanup_close int lk = openat(dirfd(d), lock, O_RDWR | O_CLOEXEC);
        if (lk >= 0 && flock(lk, LOCK_EX | LOCK_NB) < 0)
            continue; /* an import still working */
        cleanup_free char *path = xasprintf("%s/tmp/%s", st->dir, de->d_name);
        if (kago__rm_rf(path) == 0)
            n++;
        unlinkat(dirfd(d), lock, 0);
    }
    /* locks whose directory is gone */
    rewinddir(d);
    while ((de = readdir(d))) {
        size_t len = strlen(de->d_name);
        if (len <= 5 || strcmp(de->d_name + len - 5, ".lock"))
            continue;
        cleanup_free char *dir = strndup(de->d_name, len - 5);
        struct stat sb;
        cleanup_close int lk = openat(dirfd(d), de->d_name, O_RDWR | O_CLOEXEC);
        if (fstatat(dirfd(d), dir, &sb, AT_SYMLINK_NOFOLLOW) < 0 && lk >= 0 &&
            flock(lk, LOCK_EX | LOCK_NB) == 0)
            unlinkat(dirfd(d), de->d_name, 0);
    }
    closedir(d);
    return n;
}

char *kago__store_tmpdir(struct kago__store *st, const char *prefix, int *lockfd, struct kago_error **err)
{
    for (int tries = 0; tries < 100; tries++) {
        unsigned char r[6];
        char name[64];
        if (getentropy(r, sizeof r) < 0)
            return kago_error_set(err, errno, "getentropy"), NULL;
        snprintf(name, sizeof name, "%s-%02x%02x%02x%02x%02x%02x", prefix, r[0], r[1], r[2], r[3], r[4],
                 r[5]);
        cleanup_free char *lock = xasprintf("tmp/%s.lock", name);
        int lk = openat(st->dirfd, lock, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (lk < 0 && errno == EEXIST)
            continue;
        if (lk < 0 || flock(lk, LOCK_EX) < 0) {
            kago_error_set(err, errno, "image store %s: %s", st->dir, lock);
            if (lk >= 0)
                close(lk);
            return NULL;
        }
        struct stat a, b; /* a cleaner may have taken the lock first and removed it: then try again */
        if (fstat(lk, &a) < 0 || fstatat(st->dirfd, lock, &b, 0) < 0 || a.st_ino != b.st_ino) {
            close(lk);
            continue;
        }
        cleanup_free char *dir = xasprintf("tmp/%s", name);
        if (mkdirat(st->dirfd, dir, 0700) < 0) {
            kago_error_set(err, errno, "image store %s: mkdir %s", st->dir, dir);
            unlinkat(st->dirfd, lock, 0);
            close(lk);
            return NULL;
        }
        *lockfd = lk;
        return xstrdup(name);
    }
    return kago_error_set(err, EEXIST, "image store %s: temporary directory", st->dir), NULL;
}

int kago__store_remove_layer(struct kago__store *st, const char *hex, uint64_t *bytes)
{
    cleanup_free char *from = xasprintf("layers/%s", hex);
    cleanup_free char *to = xasprintf("tmp/rm-%s", hex);
    cleanup_free char *meta = xasprintf("layers/%s.json", hex);
    if (bytes)
        *bytes += kago__layer_size(st, hex);
    if (renameat(st->dirfd, from, st->dirfd, to) < 0)
        return errno == ENOENT ? 0 : -1;
    unlinkat(st->dirfd, meta, 0);
    cleanup_free char *path = xasprintf("%s/%s", st->dir, to);
    return kago__rm_rf(path);
}
