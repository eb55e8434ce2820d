/* An image's User resolved through the image's own /etc/passwd and /etc/group, as podman does. */
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "image_int.h"

/* Whether what this layer has on the way to path hides the layers below, as overlayfs reads it: a
 * non-directory (a whiteout, a 0/0 character device, among them) or an opaque directory (import makes
 * both of .wh. entries). */
static bool parent_hides(const char *layer, const char *path)
{
    for (const char *slash = strchr(path, '/'); slash; slash = strchr(slash + 1, '/')) {
        char dir[PATH_MAX];
        struct stat st;
        if (snprintf(dir, sizeof dir, "%s/%.*s", layer, (int)(slash - path), path) >= (int)sizeof dir ||
            lstat(dir, &st) < 0)
            return false;
        char v;
        if (!S_ISDIR(st.st_mode) || (lgetxattr(dir, "trusted.overlay.opaque", &v, 1) == 1 && v == 'y'))
            return true;
    }
    return false;
}

/* The file at path in the topmost layer that has it (a whiteout of it or of a directory on its way, or an
 * opaque directory on its way, hides it in the layers below). NULL if none has it, or if the one that has
 * it cannot be read: why then says so ("is a FIFO, not a regular file"), else it is "". A file that is not
 * a regular file is never opened (a FIFO would block the read, a device's open acts on the host's
 * device). */
static FILE *open_in_layers(const char *const *layers, const char *path, char why[80])
{
    *why = '\0';
    for (size_t i = 0; layers[i]; i++) {
        cleanup_close int root = open(layers[i], O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (root < 0)
            continue;
        struct stat st;
        int fd = kago__open_regular(root, path, O_NOFOLLOW,
                                    RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV, &st);
        if (fd >= 0) {
            FILE *f = fdopen(fd, "r");
            if (!f)
                close(fd);
            return f;
        }
        if (S_ISCHR(st.st_mode) && st.st_rdev == 0) /* a whiteout: a 0/0 character device */
            return NULL;
        if (S_ISREG(st.st_mode))
            return snprintf(why, 80, "could not be opened: %s", strerror(errno)), NULL;
        if (st.st_mode && !S_ISLNK(st.st_mode))
            return snprintf(why, 80, "is %s, not a regular file", kago__file_kind(st.st_mode)), NULL;
        if (parent_hides(layers[i], path))
            return NULL;
    }
    return NULL;
}

static bool numeric(const char *s, unsigned long *v)
{
    char *end;
    if (!*s || strspn(s, "0123456789") != strlen(s))
        return false;
    *v = strtoul(s, &end, 10);
    return *v < 0xffffffffUL;
}

/* Finds name (or, when byid, the numeric id) in a passwd/group file: fields 0 (name), 2 (id), 3 (gid). */
static bool lookup(FILE *f, const char *name, unsigned long id, bool byid, unsigned long *out_id,
                   unsigned long *out_gid)
{
    char line[4096];
    while (f && fgets(line, sizeof line, f)) {
        char *fields[4] = {0}, *p = line;
        size_t n = 0;
        for (char *t; n < 4 && (t = strsep(&p, ":\n")); n++)
            fields[n] = t;
        unsigned long i, g = 0;
        if (n < 3 || !numeric(fields[2], &i))
            continue;
        if (byid ? i != id : strcmp(fields[0], name))
            continue;
        *out_id = i;
        if (out_gid && n >= 4 && numeric(fields[3], &g))
            *out_gid = g;
        return true;
    }
    return false;
}

int kago__image_user(const char *const *layers, const char *user, uid_t *uid, gid_t *gid,
                     struct kago_error **err)
{
    cleanup_free char *u = xstrdup(user);
    char *group = strchr(u, ':');
    if (group)
        *group++ = '\0';
    unsigned long id = 0, g = 0, num = 0;
    char why[80];
    FILE *pw = open_in_layers(layers, "etc/passwd", why);
    bool byid = numeric(u, &num), found = lookup(pw, u, num, byid, &id, &g);
    if (pw)
        fclose(pw);
    if (!found && !byid && *why)
        return kago_error_set(err, 0, "user %s: the image's /etc/passwd %s", u, why);
    if (!found && !byid)
        return kago_error_set(err, 0, "user %s: not in the image's /etc/passwd", u);
    if (!found)
        id = num, g = 0;
    if (group && *group) {
        FILE *gr = open_in_layers(layers, "etc/group", why);
        bool gbyid = numeric(group, &num), gfound = lookup(gr, group, num, gbyid, &g, NULL);
        if (gr)
            fclose(gr);
        if (!gfound && !gbyid && *why)
            return kago_error_set(err, 0, "group %s: the image's /etc/group %s", group, why);
        if (!gfound && !gbyid)
            return kago_error_set(err, 0, "group %s: not in the image's /etc/group", group);
        if (!gfound)
            g = num;
    }
    *uid = (uid_t)id;
    *gid = (gid_t)g;
    return 0;
}
