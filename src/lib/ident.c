/* Definition hashes, root tags and owner locks (ident.h). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "container_int.h"
#include "ident.h"

uint64_t kago__fnv(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

uint64_t kago__fnv_str(uint64_t h, const char *s)
{
    return kago__fnv(h, s ? s : "\1", s ? strlen(s) + 1 : 1);
}

static uint64_t fnv_strv(uint64_t h, char **v)
{
    for (size_t i = 0; v && v[i]; i++)
        h = kago__fnv_str(h, v[i]);
    return kago__fnv(h, "\2", 1);
}

uint64_t kago__spec_hash(const struct kago_spec *s)
{
    json_object *o = kago__spec_to_json(s);
    uint64_t h = kago__fnv_str(KAGO__FNV_INIT, json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
    json_object_put(o);
    for (size_t i = 0; i < s->nmounts; i++) {
        const struct kago_mount *m = &s->mounts[i];
        h = kago__fnv_str(kago__fnv_str(h, m->src), m->dst);
        uint64_t v[] = {m->kind, m->readonly, m->noexec, m->nosuid, m->size, m->mode, m->copyup};
        h = kago__fnv(h, v, sizeof(v));
    }
    for (size_t i = 0; i < s->nrlimits; i++) {
        uint64_t v[] = {(uint64_t)s->rlimits[i].resource, s->rlimits[i].soft, s->rlimits[i].hard};
        h = kago__fnv(h, v, sizeof(v));
    }
    for (size_t i = 0; i < s->nuidmap; i++)
        h = kago__fnv(h, &s->uidmap[i], sizeof(s->uidmap[i]));
    for (size_t i = 0; i < s->ngidmap; i++)
        h = kago__fnv(h, &s->gidmap[i], sizeof(s->gidmap[i]));
    h = fnv_strv(fnv_strv(h, s->masked_paths), s->readonly_paths);
    uint64_t v[] = {s->listen_port, s->preserve_fds, s->overlay_size};
    return kago__fnv(h, v, sizeof(v));
}

unsigned kago__root_id(const char *root)
{
    char abs[PATH_MAX], dir[PATH_MAX];
    cleanup_free char *path = NULL;
    const char *base = strrchr(root, '/');
    if (realpath(root, abs)) {
        path = xstrdup(abs);
    } else if (base && base[1]) {
        /* a root not made yet: its parent's real path and its name, as realpath will say once it exists */
        snprintf(dir, sizeof dir, "%.*s", (int)(base - root), root);
        if (realpath(*dir ? dir : "/", abs))
            path = xasprintf("%s/%s", strcmp(abs, "/") ? abs : "", base + 1);
    }
    uint64_t h = kago__fnv_str(KAGO__FNV_INIT, path ? path : root);
    return (unsigned)((h ^ h >> 16 ^ h >> 32 ^ h >> 48) & 0xffff);
}

int kago__lock_file(const char *path, struct kago_error **err)
{
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0)
        return kago_error_set(err, errno, "open %s", path);
    if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
        int e = errno;
        close(fd);
        return kago_error_set(err, e, "lock %s", path);
    }
    return fd;
}
