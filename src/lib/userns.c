/* The user namespace pool: ranges of 65536 host ids, one per key (a container's name, or a serve app's),
 * taken from the `kago` entry of /etc/subuid and /etc/subgid and recorded under a lock, so that a key keeps
 * its range and no two keys hold the same one (docs/userns.md). */
#include <fcntl.h>
#include <linux/mount.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/utsname.h>

#include "container_int.h"
#include "ident.h"

/* Without a `kago` entry: ids 2^31 .. 2^31 + 2^30 (16384 ranges), unless an entry of another user
 * claims part of it. */
#define FALLBACK_START 2147483648u
#define FALLBACK_COUNT 1073741824u

struct pool {
    uint32_t start, count;
};

static const char *env_or(const char *name, const char *def)
{
    const char *v = getenv(name);
    return v && *v ? v : def;
}

static bool overlaps(uint64_t a, uint64_t an, uint64_t b, uint64_t bn)
{
    return a < b + bn && b < a + an;
}

/* Reads FILE's `kago` entry into *p (0), or the fallback when there is none and nothing else uses it. */
static int read_pool(const char *file, struct pool *p, struct kago_error **err)
{
    FILE *f = fopen(file, "re");
    if (!f && errno != ENOENT)
        return kago_error_set(err, errno, "user namespace pool: open %s", file);
    char line[512];
    bool found = false, clash = false;
    while (f && fgets(line, sizeof line, f)) {
        char name[256];
        unsigned long long start, count;
        if (sscanf(line, "%255[^:\n]:%llu:%llu", name, &start, &count) != 3)
            continue;
        if (!strcmp(name, "kago") && !found) {
            if (start + count > UINT32_MAX || count < 65536)
                return fclose(f),
                       kago_error_set(
                           err, 0,
                           "user namespace pool: %s: kago:%llu:%llu: needs at least 65536 ids below 2^32",
                           file, start, count);
            *p = (struct pool){(uint32_t)start, (uint32_t)count};
            found = true;
        }
        clash |= strcmp(name, "kago") && overlaps(start, count, FALLBACK_START, FALLBACK_COUNT);
    }
    if (f)
        fclose(f);
    if (found)
        return 0;
    if (clash)
        return kago_error_set(
            err, 0,
            "user namespace pool: %s has no kago entry, and another entry uses kago's default "
            "range (%u:%u): add one (e.g. kago:100000000:1000000000, the same in /etc/subuid and "
            "/etc/subgid), or run with --userns host",
            file, FALLBACK_START, FALLBACK_COUNT);
    *p = (struct pool){FALLBACK_START, FALLBACK_COUNT};
    return 0;
}

/* The record: one "SLOT KEY" line per range held. Returns its fd, locked; the lines go to *text. */
static int open_db(char **text, const char **path, struct kago_error **err)
{
    *path = env_or("KAGO_USERNS_DB", "/run/kago/userns");
    cleanup_free char *dir = xstrdup(*path);
    char *slash = strrchr(dir, '/');
    if (slash && slash != dir) {
        *slash = '\0';
        if (kago__mkdir_p(dir, 0755, err) < 0)
            return -1;
    }
    cleanup_close int fd = open(*path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0 || flock(fd, LOCK_EX) < 0)
        return kago_error_set(err, errno, "user namespace pool: %s", *path);
    struct stat st;
    if (fstat(fd, &st) < 0)
        return kago_error_set(err, errno, "user namespace pool: %s", *path);
    *text = xcalloc(1, (size_t)st.st_size + 2);
    if (st.st_size && pread(fd, *text, (size_t)st.st_size, 0) != st.st_size)
        return free(*text), kago_error_set(err, errno ? errno : EIO, "user namespace pool: read %s", *path);
    return steal_fd(&fd);
}

/* Lines of text in turn ('#' lines are released ranges, blanked in place). */
static const char *next_line(const char *l)
{
    const char *nl = strchr(l, '\n');
    return nl ? nl + 1 : l + strlen(l);
}

/* A held range's line, "SLOT KEY": its slot (-1 for a blank or malformed line) and key. */
static long parse_line(const char *l, const char **key, size_t *klen)
{
    char *end;
    long slot = strtol(l, &end, 10);
    if (*l == '#' || end == l || *end != ' ' || slot < 0)
        return -1;
    *key = end + 1;
    *klen = strcspn(end + 1, "\n");
    return slot;
}

/* The record's held lines by key (open addressing, no allocation per line) and the slots they use. */
struct index {
    const char **lines;
    size_t cap;
    bool *used; /* [slots] */
    size_t nlines, nblank;
};

static const char **index_find(const struct index *ix, const char *key, size_t klen)
{
    size_t i = kago__fnv(kago__fnv_str(0, ""), key, klen) & (ix->cap - 1);
    for (;; i = (i + 1) & (ix->cap - 1)) {
        const char *k;
        size_t kl;
        if (!ix->lines[i] || (parse_line(ix->lines[i], &k, &kl) >= 0 && kl == klen && !memcmp(k, key, klen)))
            return &ix->lines[i];
    }
}

static void index_free(struct index *ix)
{
    free(ix->lines);
    free(ix->used);
    *ix = (struct index){0};
}

static void index_build(struct index *ix, const char *text, long slots)
{
    index_free(ix);
    size_t n = 0;
    for (const char *l = text; *l; l = next_line(l))
        n++;
    for (ix->cap = 16; ix->cap < 2 * n + 2; ix->cap *= 2)
        ;
    ix->lines = xcalloc(ix->cap, sizeof *ix->lines);
    ix->used = xcalloc((size_t)slots + 1, sizeof *ix->used);
    for (const char *l = text; *l; l = next_line(l)) {
        const char *key;
        size_t klen;
        long slot = parse_line(l, &key, &klen);
        ix->nlines++;
        if (slot < 0) {
            ix->nblank++;
            continue;
        }
        const char **at = index_find(ix, key, klen);
        if (!*at)
            *at = l;
        if (slot < slots)
            ix->used[slot] = true;
    }
}

/* The record is only appended to and blanked in place: on ext4 a file truncated and rewritten is flushed
 * to disk at close (auto_da_alloc), which cost each start milliseconds. It is rewritten without its blank
 * lines when they are most of it. */
static int blank_line(int fd, const char *text, const char *line, const char *path, struct kago_error **err)
{
    size_t len = strcspn(line, "\n");
    cleanup_free char *blank = xmalloc(len + 1);
    memset(blank, ' ', len);
    blank[0] = '#';
    if (pwrite(fd, blank, len, line - text) != (ssize_t)len)
        return kago_error_set(err, errno, "user namespace pool: write %s", path);
    memcpy((char *)line, blank, len);
    return 0;
}

/* Writes text's held lines and then more (appended when the blank lines are few). */
static int write_db(int fd, const char *text, const struct index *ix, const char *more, const char *path,
                    struct kago_error **err)
{
    size_t n = strlen(text), m = strlen(more);
    if (n < 65536 || ix->nblank * 2 < ix->nlines) {
        if (m && pwrite(fd, more, m, (off_t)n) != (ssize_t)m)
            return kago_error_set(err, errno, "user namespace pool: write %s", path);
        return 0;
    }
    cleanup_free char *out = xmalloc(n + m + 1);
    size_t held = 0;
    for (const char *l = text; *l; l = next_line(l))
        if (*l != '#') {
            size_t len = (size_t)(next_line(l) - l);
            memcpy(out + held, l, len);
            held += len;
        }
    memcpy(out + held, more, m);
    held += m;
    if (ftruncate(fd, 0) < 0 || pwrite(fd, out, held, 0) != (ssize_t)held)
        return kago_error_set(err, errno, "user namespace pool: write %s", path);
    return 0;
}

/* A serve app's key is "serve:ROOT/APP": once ROOT is gone (a removed serve root, a test's), so is the
 * app, and its range is free again. Checked when a range is taken, not at each start; each root once. */
static int forget_gone_roots(int fd, const char *text, const char *path, struct kago_error **err)
{
    cleanup_free char *last = NULL;
    bool last_gone = false;
    for (const char *l = text; *l; l = next_line(l)) {
        const char *key;
        size_t klen;
        if (parse_line(l, &key, &klen) < 0 || klen < 7 || strncmp(key, "serve:/", 7))
            continue;
        const char *slash = memrchr(key, '/', klen);
        size_t rlen = (size_t)(slash - key) - 6;
        if (!last || strlen(last) != rlen || strncmp(last, key + 6, rlen)) {
            free(last);
            last = xasprintf("%.*s", (int)rlen, key + 6);
            struct stat st;
            last_gone = stat(last, &st) < 0 && errno == ENOENT;
        }
        if (last_gone && blank_line(fd, text, l, path, err) < 0)
            return -1;
    }
    return 0;
}

int kago__userns_alloc_many(const char *const *keys, size_t n, struct kago_idmap *uids,
                            struct kago_idmap *gids, struct kago_error **err)
{
    struct pool up, gp;
    if (read_pool(env_or("KAGO_SUBUID", "/etc/subuid"), &up, err) < 0 ||
        read_pool(env_or("KAGO_SUBGID", "/etc/subgid"), &gp, err) < 0)
        return -1;
    long slots = (long)((up.count < gp.count ? up.count : gp.count) / 65536);
    cleanup_free char *text = NULL;
    const char *path;
    cleanup_close int fd = open_db(&text, &path, err);
    if (fd < 0)
        return -1;
    struct index ix = {0};
    index_build(&ix, text, slots);
    cleanup_free long *slot = xcalloc(n + 1, sizeof *slot);
    bool missing = false;
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < n; i++) {
            const char *line = *index_find(&ix, keys[i], strlen(keys[i])), *k;
            size_t kl;
            slot[i] = line ? parse_line(line, &k, &kl) : -1;
            if (slot[i] >= slots && blank_line(fd, text, line, path, err) < 0) /* the pool shrank */
                return index_free(&ix), -1;
            missing |= slot[i] < 0 || slot[i] >= slots;
        }
        if (!missing || pass) /* (new keys: first free the ranges of serve roots that are gone) */
            break;
        if (forget_gone_roots(fd, text, path, err) < 0)
            return index_free(&ix), -1;
        index_build(&ix, text, slots);
        missing = false;
    }
    size_t len = strlen(text), cap = 64, used = 0, left = 0;
    cleanup_free char *more = xmalloc(cap);
    more[0] = '\0';
    long next = 0;
    for (size_t i = 0; i < n; i++) {
        if (slot[i] >= 0 && slot[i] < slots)
            continue;
        while (next < slots && ix.used[next])
            next++;
        if (next == slots) { /* (the keys before keep what they got) */
            slot[i] = -1;
            left++;
            continue;
        }
        ix.used[next] = true;
        slot[i] = next;
        for (size_t j = i + 1; j < n; j++) /* (the same key twice in one call gets one range) */
            if (!strcmp(keys[j], keys[i]))
                slot[j] = next;
        cleanup_free char *line =
            xasprintf("%s%ld %s\n", !used && len && text[len - 1] != '\n' ? "\n" : "", next, keys[i]);
        size_t ll = strlen(line);
        while (used + ll + 1 > cap)
            cap *= 2;
        more = xrealloc(more, cap);
        memcpy(more + used, line, ll + 1);
        used += ll;
    }
    int r = write_db(fd, text, &ix, more, path, err);
    index_free(&ix);
    if (r < 0)
        return -1;
    for (size_t i = 0; i < n; i++) {
        uint32_t count = slot[i] < 0 ? 0 : 65536u, at = slot[i] < 0 ? 0 : (uint32_t)slot[i] * 65536u;
        uids[i] = (struct kago_idmap){0, up.start + at, count};
        gids[i] = (struct kago_idmap){0, gp.start + at, count};
    }
    if (left)
        kago_error_set(err, ENOSPC, "user namespace pool: all %ld ranges of 65536 ids are taken (%s)", slots,
                       path);
    return (int)left;
}

int kago__userns_alloc(const char *key, struct kago_idmap *uid, struct kago_idmap *gid,
                       struct kago_error **err)
{
    return kago__userns_alloc_many(&key, 1, uid, gid, err) == 0 ? 0 : -1;
}

int kago__userns_release(const char *key, struct kago_error **err)
{
    cleanup_free char *text = NULL;
    const char *path;
    cleanup_close int fd = open_db(&text, &path, err);
    if (fd < 0)
        return -1;
    struct index ix = {0};
    index_build(&ix, text, 0);
    const char *line = *index_find(&ix, key, strlen(key));
    int r = 0;
    if (line && (r = blank_line(fd, text, line, path, err)) == 0) {
        ix.nblank++;
        r = write_db(fd, text, &ix, "", path, err);
    }
    index_free(&ix);
    return r;
}

/* A clone of path's mount tree, nodev, idmapped through the user namespace usernsfd (its root appears as
 * the host's root: files owned by root in an image are root's inside). Returns the detached tree's fd. */
static int idmapped_tree(int at, const char *path, int usernsfd, bool rdonly, bool recursive,
                         struct kago_error **err)
{
    cleanup_close int tree =
        (int)syscall(SYS_open_tree, at, at == AT_FDCWD ? path : "",
                     OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | (recursive ? AT_RECURSIVE : 0) |
                         (at == AT_FDCWD ? 0 : AT_EMPTY_PATH));
    if (tree < 0)
        return kago_error_set(err, errno, "open_tree %s", path);
    struct mount_attr attr = {.attr_set =
                                  MOUNT_ATTR_IDMAP | MOUNT_ATTR_NODEV | (rdonly ? MOUNT_ATTR_RDONLY : 0),
                              .userns_fd = (uint64_t)usernsfd};
    if (syscall(SYS_mount_setattr, tree, "", AT_EMPTY_PATH | (recursive ? AT_RECURSIVE : 0), &attr,
                sizeof attr) < 0)
        return kago_error_set(err, errno, "idmapped mount of %s", path);
    return steal_fd(&tree);
}

/* A bind whose filesystem takes no idmapped mount (tmpfs before Linux 6.3, NFS): bound as it is, its
 * files showing as the ids they have on the host (outside the range: nobody). */
static int plain_tree(int at, const char *path, struct kago_error **err)
{
    cleanup_close int tree = (int)syscall(SYS_open_tree, at, at == AT_FDCWD ? path : "",
                                          OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE |
                                              (at == AT_FDCWD ? 0 : AT_EMPTY_PATH));
    struct mount_attr attr = {.attr_set = MOUNT_ATTR_NODEV};
    if (tree < 0 ||
        syscall(SYS_mount_setattr, tree, "", AT_EMPTY_PATH | AT_RECURSIVE, &attr, sizeof attr) < 0)
        return kago_error_set(err, errno, "bind %s", path);
    return steal_fd(&tree);
}

static int fsconfig_str(int fs, const char *key, const char *value)
{
    return (int)syscall(SYS_fsconfig, fs, FSCONFIG_SET_STRING, key, value, 0);
}

/* The writable layer: upper/ and work/ on a tmpfs of the container's own (or in overlay_dir), upper/
 * owned by the container's root (it is the root directory the container sees). Returns 0 with the tmpfs's
 * fd in *tmp (-1 for overlay_dir) and the two paths, or -1 with *err set. */
static int upper_layer(const struct kago_spec *spec, uid_t uid, gid_t gid, int *tmp, char **upper,
                       char **work, struct kago_error **err)
{
    *tmp = -1;
    if (spec->overlay_dir) {
        *upper = xasprintf("%s/upper", spec->overlay_dir);
        *work = xasprintf("%s/work", spec->overlay_dir);
        if ((mkdir(*upper, 0755) == 0 && chown(*upper, uid, gid) < 0) ||
            (mkdir(*work, 0700) < 0 && errno != EEXIST))
            return kago_error_set(err, errno, "overlay: mkdir in %s", spec->overlay_dir), -1;
        return 0;
    }
    char opt[32];
    cleanup_close int fs = (int)syscall(SYS_fsopen, "tmpfs", FSOPEN_CLOEXEC);
    if (fs < 0 || fsconfig_str(fs, "mode", "755") < 0)
        return kago_error_set(err, errno, "overlay: tmpfs");
    snprintf(opt, sizeof opt, "%llu", (unsigned long long)spec->overlay_size);
    if (spec->overlay_size && fsconfig_str(fs, "size", opt) < 0)
        return kago_error_set(err, errno, "overlay: tmpfs size %s", opt);
    if (syscall(SYS_fsconfig, fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0)
        return kago_error_set(err, errno, "overlay: tmpfs");
    cleanup_close int mnt =
        (int)syscall(SYS_fsmount, fs, FSMOUNT_CLOEXEC, MOUNT_ATTR_NODEV | MOUNT_ATTR_NOSUID);
    if (mnt < 0 || mkdirat(mnt, "upper", 0755) < 0 || fchownat(mnt, "upper", uid, gid, 0) < 0 ||
        mkdirat(mnt, "work", 0700) < 0)
        return kago_error_set(err, errno, "overlay: tmpfs");
    *upper = xasprintf("/proc/self/fd/%d/upper", mnt);
    *work = xasprintf("/proc/self/fd/%d/work", mnt);
    *tmp = steal_fd(&mnt);
    return 0;
}

/* Each lower by its fd number, relative to /proc/self/fd (the caller's cwd), with "lowerdir+" one at a
 * time (Linux 6.8). Returns 0, -1 with *err, or 1 when the kernel does not know "lowerdir+" (the caller
 * stages the layers instead). */
static int lower_layers(int fs, const int *lowers, size_t nl, struct kago_error **err)
{
    /* (an older overlayfs parses its options the legacy way: an unknown key is only refused at create) */
    struct utsname u;
    int major = 0, minor = 0;
    if (uname(&u) == 0 && sscanf(u.release, "%d.%d", &major, &minor) == 2 &&
        (major < 6 || (major == 6 && minor < 8)))
        return 1;
    char one[16];
    for (size_t i = 0; i < nl; i++) {
        snprintf(one, sizeof one, "%d", lowers[i]);
        if (fsconfig_str(fs, "lowerdir+", one) == 0)
            continue;
        if (i == 0 && errno == EINVAL)
            return 1;
        return kago_error_set(err, errno, "lower layer %zu", i + 1), -1;
    }
    return 0;
}

/* Before Linux 6.8 overlayfs takes only layers mounted in the caller's mount namespace (it clones each one
 * privately), not detached trees: each lower and the upper tmpfs are attached under a staging directory
 * while the overlay is made, named relative to it, and detached again at once (the overlay keeps its own
 * clones). STAGE_BASE is a private mount of its own, made once under a lock, so that nothing attached
 * under it propagates to another mount namespace. */
#define STAGE_BASE "/run/kago/.stage"

static char *stage_begin(struct kago_error **err)
{
    if (kago__mkdir_p(STAGE_BASE, 0700, err) < 0)
        return NULL;
    cleanup_close int lock = open(STAGE_BASE ".lock", O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (lock < 0 || flock(lock, LOCK_EX) < 0)
        return kago_error_set(err, errno, "overlay: lock %s.lock", STAGE_BASE), NULL;
    struct statx stx;
    if (statx(AT_FDCWD, STAGE_BASE, AT_SYMLINK_NOFOLLOW, STATX_BASIC_STATS, &stx) < 0)
        return kago_error_set(err, errno, "overlay: %s", STAGE_BASE), NULL;
    if (!(stx.stx_attributes & STATX_ATTR_MOUNT_ROOT) &&
        mount(STAGE_BASE, STAGE_BASE, NULL, MS_BIND, NULL) < 0)
        return kago_error_set(err, errno, "overlay: bind %s", STAGE_BASE), NULL;
    if (mount(NULL, STAGE_BASE, NULL, MS_PRIVATE, NULL) < 0)
        return kago_error_set(err, errno, "overlay: make %s private", STAGE_BASE), NULL;
    char *dir = xstrdup(STAGE_BASE "/XXXXXX");
    if (!mkdtemp(dir)) {
        kago_error_set(err, errno, "overlay: mkdtemp in %s", STAGE_BASE);
        free(dir);
        return NULL;
    }
    return dir;
}

static int stage_one(const char *dir, const char *name, int fd, struct kago_error **err)
{
    cleanup_free char *p = xasprintf("%s/%s", dir, name);
    if (mkdir(p, 0700) < 0 || syscall(SYS_move_mount, fd, "", AT_FDCWD, p, MOVE_MOUNT_F_EMPTY_PATH) < 0)
        return kago_error_set(err, errno, "overlay: attach a layer at %s", p);
    return 0;
}

static void stage_end(char *dir, size_t nstaged, bool upper)
{
    for (size_t i = 0; i <= nstaged; i++) {
        char name[24];
        if (i == nstaged && !upper)
            break;
        if (i == nstaged)
            snprintf(name, sizeof name, "u");
        else
            snprintf(name, sizeof name, "%zu", i);
        cleanup_free char *p = xasprintf("%s/%s", dir, name);
        umount2(p, MNT_DETACH);
        rmdir(p);
    }
    rmdir(dir);
    free(dir);
}

/* The container's root over the idmapped lowers: an overlay mounted here, by the host's root, as without
 * a user namespace (overlayfs honours the layers' trusted.overlay.opaque marks only for a mounter in the
 * host's user namespace; one mounted in the container's would show what an opaque directory hides).
 * Returns the detached overlay's fd. */
static int overlay_tree(const struct kago_spec *spec, const int *lowers, size_t nl, struct kago_error **err)
{
    cleanup_free char *upper = NULL, *work = NULL;
    cleanup_close int tmp = -1;
    if (spec->overlay &&
        upper_layer(spec, spec->uidmap[0].outside, spec->gidmap[0].outside, &tmp, &upper, &work, err) < 0)
        return kago_error_prefix(err, "overlay of %s", spec->layers ? spec->layers[0] : spec->rootfs), -1;
    cleanup_close int fs = (int)syscall(SYS_fsopen, "overlay", FSOPEN_CLOEXEC);
    if (fs < 0)
        return kago_error_set(err, errno, "overlay: fsopen");
    /* the lowers are named relative to it; before Linux 6.5 overlayfs looks them up at FSCONFIG_CMD_CREATE */
    cleanup_close int here = open(".", O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (here < 0 || chdir("/proc/self/fd") < 0)
        return kago_error_set(err, errno, "overlay: chdir /proc/self/fd");
    int r = lower_layers(fs, lowers, nl, err);
    char *staged = NULL;
    size_t nstaged = 0;
    bool upper_staged = false;
    if (r == 1) { /* before Linux 6.8: the layers attached under a staging dir, named relative to it */
        r = (staged = stage_begin(err)) ? 0 : -1;
        char lower[257];
        size_t len = 0;
        for (size_t i = 0; r == 0 && i < nl; i++) {
            char name[24];
            snprintf(name, sizeof name, "%zu", i);
            if ((r = stage_one(staged, name, lowers[i], err)) == 0)
                nstaged++;
            len += (size_t)snprintf(lower + len, len < sizeof lower ? sizeof lower - len : 0, "%s%zu",
                                    i ? ":" : "", i);
        }
        if (r == 0 && len >= sizeof lower)
            r = kago_error_set(err, E2BIG,
                               "%zu lower layers: more than this kernel takes (Linux 6.8 takes more)", nl);
        if (r == 0 && tmp >= 0) {
            if ((r = stage_one(staged, "u", tmp, err)) == 0) {
                upper_staged = true;
                free(upper);
                free(work);
                upper = xstrdup("u/upper");
                work = xstrdup("u/work");
            }
        }
        if (r == 0 && chdir(staged) < 0)
            r = kago_error_set(err, errno, "overlay: chdir %s", staged);
        if (r == 0 && fsconfig_str(fs, "lowerdir", lower) < 0)
            r = kago_error_set(err, errno, "overlay: lower layers");
    }
    if (r == 0 && upper && (fsconfig_str(fs, "upperdir", upper) < 0 || fsconfig_str(fs, "workdir", work) < 0))
        r = kago_error_set(err, errno, "overlay: upper %s", upper);
    bool created = r == 0 && syscall(SYS_fsconfig, fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0) == 0;
    int saved = errno;
    if (fchdir(here) < 0)
        abort(); /* our own cwd, open a moment ago */
    if (staged)
        stage_end(staged, nstaged, upper_staged);
    if (r < 0)
        return kago_error_prefix(err, "overlay of %s", spec->layers ? spec->layers[0] : spec->rootfs), -1;
    errno = saved;
    if (!created)
        return kago_error_set(err, errno, "overlay of %s%s (idmapped layers under overlayfs need Linux 5.19)",
                              spec->layers ? spec->layers[0] : spec->rootfs,
                              nl > 1 ? " and its lower layers" : "");
    int mnt =
        (int)syscall(SYS_fsmount, fs, FSMOUNT_CLOEXEC, MOUNT_ATTR_NODEV | (upper ? 0 : MOUNT_ATTR_RDONLY));
    if (mnt < 0)
        return kago_error_set(err, errno, "overlay: fsmount");
    return mnt;
}

static int send_fds(int sock, const int *fds, size_t n, struct kago_error **err)
{
    for (size_t at = 0; at < n; at += KAGO__TREES_PER_MSG) {
        size_t k = n - at < KAGO__TREES_PER_MSG ? n - at : KAGO__TREES_PER_MSG;
        union {
            struct cmsghdr h;
            char space[CMSG_SPACE(sizeof(int) * KAGO__TREES_PER_MSG)];
        } ctl;
        memset(&ctl, 0, sizeof ctl);
        struct iovec iov = {.iov_base = "F", .iov_len = 1};
        struct msghdr mh = {.msg_iov = &iov,
                            .msg_iovlen = 1,
                            .msg_control = &ctl,
                            .msg_controllen = CMSG_SPACE(sizeof(int) * k)};
        struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * k);
        memcpy(CMSG_DATA(c), fds + at, sizeof(int) * k);
        if (sendmsg(sock, &mh, MSG_NOSIGNAL) < 0 && errno != EPIPE && errno != ECONNRESET)
            return kago_error_set(err, errno, "send the idmapped mounts");
    }
    return 0;
}

int kago__idmap_send(const struct kago_spec *spec, pid_t pid, int sock, struct kago_error **err)
{
    int fds[KAGO__MAX_TREES];
    size_t n = 0;
    int ret = -1;
    const char *const *lowers = spec->layers && spec->layers[0] ? (const char *const *)spec->layers
                                                                : (const char *const[]){spec->rootfs, NULL};
    size_t nl = 0, nb = 0;
    while (lowers[nl])
        nl++;
    for (size_t i = 0; i < spec->nmounts; i++)
        nb += spec->mounts[i].kind == KAGO_MOUNT_BIND;
    if (nl + nb > KAGO__MAX_TREES)
        return kago_error_set(err, E2BIG, "a user namespace takes at most %d layers and binds",
                              KAGO__MAX_TREES);
    cleanup_free char *ns = xasprintf("/proc/%d/ns/user", (int)pid);
    cleanup_close int usernsfd = open(ns, O_RDONLY | O_CLOEXEC);
    if (usernsfd < 0)
        return kago_error_set(err, errno, "open %s", ns);
    /* the rootfs, bound writable when no overlay takes the writes, with whatever is mounted under it */
    bool alone = !spec->overlay && nl == 1;
    for (size_t i = 0; i < nl; i++) {
        struct kago_error *e = NULL;
        fds[n] = idmapped_tree(AT_FDCWD, lowers[i], usernsfd, !alone, alone, &e);
        if (fds[n] < 0 && (e->code == EINVAL || e->code == EOPNOTSUPP)) {
            /* a filesystem that takes no idmapped mount (9p, NFS, tmpfs before 6.3): the layer as it is,
             * its files showing as nobody inside (readable and runnable as for anyone), as binds below */
            kago_error_free(e);
            e = NULL;
            fds[n] = plain_tree(AT_FDCWD, lowers[i], &e);
        }
        if (fds[n++] < 0) {
            if (err) {
                kago_error_free(*err);
                *err = e;
                kago_error_prefix(err, "%s", "user namespace (--userns host runs without one)");
            } else {
                kago_error_free(e);
            }
            goto out;
        }
    }
    if (!alone) { /* the lowers make one tree: the overlay */
        int root = overlay_tree(spec, fds, nl, err);
        for (size_t i = 0; i < nl; i++)
            close(fds[i]);
        n = 0;
        if (root < 0)
            goto out;
        fds[n++] = root;
    }
    for (size_t i = 0; i < spec->nmounts; i++) {
        if (spec->mounts[i].kind != KAGO_MOUNT_BIND)
            continue;
        struct kago_error *e = NULL;
        cleanup_close int src = kago__open_bind_source(spec, i, &e);
        fds[n] = src < 0 ? -1 : idmapped_tree(src, spec->mounts[i].src, usernsfd, false, true, &e);
        if (fds[n] < 0 && src >= 0 && (e->code == EINVAL || e->code == EOPNOTSUPP)) {
            kago_error_free(e);
            e = NULL;
            fds[n] = plain_tree(src, spec->mounts[i].src, &e);
        }
        if (fds[n++] < 0) {
            if (err) {
                kago_error_free(*err);
                *err = e;
            } else {
                kago_error_free(e);
            }
            goto out;
        }
    }
    kago__trace("idmapped mounts made");
    ret = send_fds(sock, fds, n, err);
out:
    for (size_t i = 0; i < n; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    return ret;
}
