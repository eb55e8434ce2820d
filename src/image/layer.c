/* One image layer unpacked safely: see layer.h.
 *
 * Two libarchive readers in a chain give both digests in one pass over the data: the first (filters gzip,
 * zstd or none; format raw) pulls the blob from the caller and hashes it (the digest); the second (format
 * tar) pulls the decompressed bytes from the first and hashes them (the diff_id). Nothing else reads the
 * data, so the hashes cover exactly the bytes that were unpacked, and the rest of the stream after the tar's
 * end is drained through the same two functions.
 *
 * Entries are written with *at calls relative to their parent directory, which is opened with openat2
 * (RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | ...): a symlink planted by an earlier entry, a ".." or a mount
 * point on the way makes the open fail instead of leading outside the layer. The final component is never
 * followed (O_EXCL creation, O_NOFOLLOW, AT_SYMLINK_NOFOLLOW). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <archive.h>
#include <archive_entry.h>
#include <openssl/evp.h>

#include "layer.h"
#include "smap.h"
#include "util.h"

/* Between the caller and the decompressor, and between the decompressor and the tar reader: large, so
 * that a big file is written with few large writes and the callbacks run rarely. The fuzz driver makes them
 * small: headers and blocks then straddle the callbacks, and a run does not map megabytes under ASan. */
#ifndef KAGO_LAYER_BUF_SIZE
#define KAGO_LAYER_BUF_SIZE (1 << 20)
#endif
#define BUF_SIZE     KAGO_LAYER_BUF_SIZE
#define RESOLVE_SAFE (RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV)
/* OCI whiteouts (image-spec layer.md) */
#define WH_PREFIX ".wh."
#define WH_META   ".wh..wh."
#define WH_OPAQUE ".wh..wh..opq"
/* What the directory records may take: one per directory, whatever the number of its entries. */
#define DIR_TIMES_MAX (256u << 20)

enum kind { K_SKIP, K_DIR, K_REG, K_SYMLINK, K_HARDLINK, K_NODE, K_WHITEOUT, K_OPAQUE };

struct dir_time {
    char *path;
    struct timespec ts[2];
};

struct unpack {
    kago__layer_read_fn read;
    void *ctx;
    int dirfd; /* < 0: verify only */
    uint64_t max_bytes, max_entries;
    struct kago__layer_result *res;
    struct archive *raw, *tar;
    EVP_MD_CTX *blob_md, *tar_md;
    unsigned char *inbuf, *midbuf;
    bool blob_eof, tar_eof, header_seen;
    /* A failure inside a read callback (the caller's read, decompression, a limit): reported as it is
     * instead of the message libarchive makes of the callback's failure. */
    struct kago_error *cb_err;

    /* the current entry */
    struct archive_entry *ae;
    char shown[224];      /* its name as the tar has it, made printable, for errors */
    char shown_link[224]; /* and its hard-link target */
    char path[PATH_MAX];  /* normalised ("" = the layer's root) */
    size_t plen;          /* length of its parent's path in path (0: the root) */
    const char *base;     /* its last component ("." for the root) */
    const char *wh_name;  /* K_WHITEOUT: the name whited out */
    char link[PATH_MAX];  /* K_HARDLINK: normalised target */
    int link_at;          /* ... its parent directory and last component, once resolved */
    const char *link_base;

    /* The parent directory of the last entry, kept open: tars list a directory's entries together. Stale
     * after anything was removed, since the cached directory may be the one removed. */
    char pcache[PATH_MAX];
    size_t pcache_len;
    int pcache_fd;
    bool pcache_stale;

    /* Directory times are set at the end: creating entries inside a directory changes its mtime. One record
     * per directory, found by its path (dir_index: path -> index in dirs), whatever the number of its
     * entries: a later entry's times replace an earlier one's. */
    struct dir_time *dirs;
    size_t ndirs, dirs_cap, dirs_mem;
    struct smap dir_index;
};

void kago__hex(const unsigned char d[32], char out[65])
{
    for (int i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", d[i]);
}

int kago__layer_path(const char *name, char *out, size_t outlen, const char **why)
{
    size_t n = 0;
    if (!*name)
        return *why = "empty name", -1;
    if (*name == '/')
        return *why = "absolute path", -1;
    if (strnlen(name, PATH_MAX) >= PATH_MAX || outlen == 0)
        return *why = "name too long", -1;
    for (const char *p = name; *p;) {
        while (*p == '/')
            p++;
        const char *c = p;
        while (*p && *p != '/')
            p++;
        size_t len = (size_t)(p - c);
        if (len == 0 || (len == 1 && c[0] == '.'))
            continue;
        if (len == 2 && c[0] == '.' && c[1] == '.')
            return *why = "path leaves the layer (.. component)", -1;
        if (len > NAME_MAX || n + (n > 0) + len >= outlen)
            return *why = "name too long", -1;
        if (n)
            out[n++] = '/';
        memcpy(out + n, c, len);
        n += len;
    }
    out[n] = '\0';
    return 0;
}

/* ---- errors ---- */

/* Names come from an untrusted archive: keep control characters and megabytes of name out of messages. */
static void show_name(char *out, size_t outlen, const char *name)
{
    size_t max = outlen - 4, i = 0;
    if (!name)
        name = "(no name)";
    for (; name[i] && i < max; i++)
        out[i] = (unsigned char)name[i] < 0x20 || name[i] == 0x7f ? '?' : name[i];
    strcpy(out + i, name[i] ? "..." : "");
}

static int entry_err(struct unpack *u, struct kago_error **err, int code, const char *what)
{
    return kago_error_set(err, code, "entry %s: %s", u->shown, what);
}

/* A parent directory that openat2 refused: say why in words for the cases an archive can cause. link: it
 * was the hard-link target's. */
static int resolve_err(struct unpack *u, struct kago_error **err, int code, bool link)
{
    const char *why = code == ELOOP   ? "path goes through a symlink"
                      : code == EXDEV ? "path crosses a mount point"
                                      : NULL;
    char what[sizeof(u->shown_link) + 32] = "";
    if (link)
        snprintf(what, sizeof(what), "hard link target %s: ", u->shown_link);
    if (why)
        return kago_error_set(err, 0, "entry %s: %s%s", u->shown, what, why);
    return kago_error_set(err, code, "entry %s: %sopen parent directory", u->shown, what);
}

/* Hands over an error a read callback saved. Returns what kago_error_set would have. */
static int take_cb_err(struct unpack *u, struct kago_error **err)
{
    int code = u->cb_err->code;
    if (err) {
        kago_error_free(*err);
        *err = steal_ptr(u->cb_err);
    } else {
        kago_error_clear(&u->cb_err);
    }
    return code ? -code : -1;
}

/* A failure of the tar reader: a saved callback error first, else libarchive's message, classified. */
static int tar_err(struct unpack *u, struct kago_error **err)
{
    if (u->cb_err)
        return take_cb_err(u, err);
    const char *msg = archive_error_string(u->tar);
    if (!msg)
        msg = "unknown error";
    if (!u->header_seen && archive_format(u->tar) == 0)
        return kago_error_set(err, 0, "not a tar archive: %s", msg);
    if (u->tar_eof)
        return kago_error_set(err, 0, "truncated layer: %s", msg);
    return kago_error_set(err, 0, "corrupt layer: %s", msg);
}

static void size_text(uint64_t v, char *buf, size_t len)
{
    static const char *const units[] = {"bytes", "KiB", "MiB", "GiB", "TiB", "PiB"};
    int i = 0;
    while (i < 5 && v && v % 1024 == 0) {
        v /= 1024;
        i++;
    }
    snprintf(buf, len, "%llu %s", (unsigned long long)v, units[i]);
}

/* A failure of the decompressing reader, saved as the callback error. Input that ends early is truncated;
 * input that does not decompress is corrupt. */
static void raw_err(struct unpack *u)
{
    const char *msg = archive_error_string(u->raw);
    if (u->cb_err)
        return;
    if (!msg)
        msg = "decompression failed";
    if (u->res->blob_size == 0)
        kago_error_set(&u->cb_err, 0, "not a tar archive: empty layer");
    else
        kago_error_set(&u->cb_err, 0, "%s layer: %s", u->blob_eof ? "truncated" : "corrupt compressed", msg);
}

static int size_limit_err(struct unpack *u, struct kago_error **err)
{
    char lim[32];
    size_text(u->max_bytes, lim, sizeof(lim));
    return kago_error_set(err, 0, "layer exceeds %s uncompressed (limit)", lim);
}

/* ---- the two stages ---- */

/* The next bytes of the blob, hashed, in u->inbuf. Returns their count, 0 at the end, -1 with u->cb_err. */
static ssize_t pull_blob(struct unpack *u)
{
    if (u->blob_eof)
        return 0;
    ssize_t n = u->read(u->ctx, u->inbuf, BUF_SIZE, &u->cb_err);
    if (n < 0) {
        if (!u->cb_err)
            kago_error_set(&u->cb_err, 0, "reading the layer failed");
        return -1;
    }
    if (n > BUF_SIZE) {
        kago_error_set(&u->cb_err, 0, "reading the layer: read returned more than asked");
        return -1;
    }
    if (n == 0)
        u->blob_eof = true;
    EVP_DigestUpdate(u->blob_md, u->inbuf, (size_t)n);
    u->res->blob_size += (uint64_t)n;
    return n;
}

static la_ssize_t blob_cb(struct archive *a, void *data, const void **buf)
{
    struct unpack *u = data;
    ssize_t n = pull_blob(u);
    if (n < 0) {
        archive_set_error(a, EIO, "reading the layer failed");
        return -1;
    }
    *buf = u->inbuf;
    return n;
}

/* The next decompressed bytes, hashed and counted against the limit, in u->midbuf. Returns their count, 0
 * at the end, -1 with u->cb_err. */
static ssize_t pull_tar(struct unpack *u)
{
    if (u->tar_eof)
        return 0;
    la_ssize_t n = archive_read_data(u->raw, u->midbuf, BUF_SIZE);
    if (n < 0) {
        raw_err(u);
        return -1;
    }
    if (n == 0)
        u->tar_eof = true;
    if ((uint64_t)n > u->max_bytes - u->res->tar_size)
        return size_limit_err(u, &u->cb_err);
    EVP_DigestUpdate(u->tar_md, u->midbuf, (size_t)n);
    u->res->tar_size += (uint64_t)n;
    return n;
}

static la_ssize_t tar_cb(struct archive *a, void *data, const void **buf)
{
    struct unpack *u = data;
    ssize_t n = pull_tar(u);
    if (n < 0) {
        archive_set_error(a, EIO, "decompression failed");
        return -1;
    }
    *buf = u->midbuf;
    return n;
}

/* Opens both readers and reaches the decompressed stream (the raw format's one entry). */
static int open_stages(struct unpack *u, struct kago_error **err)
{
    struct archive_entry *e;
    u->raw = archive_read_new();
    u->tar = archive_read_new();
    if (!u->raw || !u->tar)
        return kago_error_set(err, ENOMEM, "libarchive");
    /* Only these: the *_all functions would link every format and filter libarchive has (and libxml2). */
    archive_read_support_filter_gzip(u->raw);
    archive_read_support_filter_zstd(u->raw);
    archive_read_support_filter_none(u->raw);
    archive_read_support_format_raw(u->raw);
    archive_read_support_filter_none(u->tar);
    archive_read_support_format_tar(u->tar);
    if (archive_read_open(u->raw, u, NULL, blob_cb, NULL) != ARCHIVE_OK ||
        archive_read_next_header(u->raw, &e) != ARCHIVE_OK) {
        raw_err(u);
        return take_cb_err(u, err);
    }
    if (archive_read_open(u->tar, u, NULL, tar_cb, NULL) != ARCHIVE_OK)
        return tar_err(u, err);
    return 0;
}

/* After the tar's end: the rest of both streams (tar padding, trailing blocks), so that both digests cover
 * every byte, as sha256sum of the blob and of its decompressed form would. */
static int drain(struct unpack *u, struct kago_error **err)
{
    ssize_t n;
    while ((n = pull_tar(u)) > 0)
        ;
    if (n == 0)
        while ((n = pull_blob(u)) > 0)
            ;
    return n < 0 ? take_cb_err(u, err) : 0;
}

/* ---- directories below the layer ---- */

static int openat2_dir(int at, const char *path, int flags)
{
    struct open_how how = {.flags = (uint64_t)(flags | O_DIRECTORY | O_CLOEXEC), .resolve = RESOLVE_SAFE};
    return (int)syscall(SYS_openat2, at, path, &how, sizeof(how));
}

/* Creates the missing directories of path (0755, as tar does for parents the archive does not list), one
 * component at a time so that none is followed if it is a symlink. Returns the last one opened with flags,
 * or -errno. */
static int make_dirs(struct unpack *u, const char *path, int flags)
{
    char buf[PATH_MAX];
    int cur = -1;
    snprintf(buf, sizeof(buf), "%s", path);
    for (char *p = buf;;) {
        char *slash = strchr(p, '/');
        if (slash)
            *slash = '\0';
        int at = cur >= 0 ? cur : u->dirfd, fd = -1;
        if (mkdirat(at, p, 0755) == 0 || errno == EEXIST)
            fd = openat2_dir(at, p, slash ? O_PATH : flags);
        int e = errno;
        if (cur >= 0)
            close(cur);
        if (fd < 0)
            return -e;
        if (!slash)
            return fd;
        cur = fd;
        p = slash + 1;
    }
}

/* Opens the directory path ("" = the layer's root) below the layer with flags (O_PATH or O_RDONLY),
 * refusing symlinks, magic links and mount points anywhere on the way. create: make it if it is missing.
 * Returns the fd or -errno. */
static int open_dir(struct unpack *u, const char *path, int flags, bool create)
{
    int fd = openat2_dir(u->dirfd, *path ? path : ".", flags);
    if (fd >= 0)
        return fd;
    if (errno != ENOENT || !create)
        return -errno;
    return make_dirs(u, path, flags);
}

/* The current entry's parent directory (made if missing) into *at. Returns 0 or -1 with *err set. */
static int parent_at(struct unpack *u, int *at, struct kago_error **err)
{
    if (u->plen == 0) {
        *at = u->dirfd;
        return 0;
    }
    if (u->pcache_fd >= 0 && !u->pcache_stale && u->pcache_len == u->plen &&
        !memcmp(u->pcache, u->path, u->plen)) {
        *at = u->pcache_fd;
        return 0;
    }
    if (u->pcache_fd >= 0)
        close(steal_fd(&u->pcache_fd));
    memcpy(u->pcache, u->path, u->plen);
    u->pcache[u->plen] = '\0';
    u->pcache_len = u->plen;
    int fd = open_dir(u, u->pcache, O_PATH, true);
    if (fd < 0)
        return resolve_err(u, err, -fd, false);
    u->pcache_fd = *at = fd;
    u->pcache_stale = false;
    return 0;
}

/* Removes what an earlier entry left under name, so that a later entry replaces it (tar semantics); a
 * directory only if it is empty. Returns 0 or -1 with errno. */
static int clear_name(struct unpack *u, int at, const char *name)
{
    u->pcache_stale = true;
    if (unlinkat(at, name, 0) == 0)
        return 0;
    if (errno == EISDIR && unlinkat(at, name, AT_REMOVEDIR) == 0)
        return 0;
    return -1;
}

/* mk(at, name), replacing an existing name once. Returns what mk returned, or -1 with *err set. */
static int create(struct unpack *u, int at, const char *name, int (*mk)(struct unpack *, int, const char *),
                  const char *what, struct kago_error **err)
{
    int r = mk(u, at, name);
    if (r < 0 && errno == EEXIST) {
        if (clear_name(u, at, name) < 0)
            return entry_err(u, err, errno, "replace existing entry");
        r = mk(u, at, name);
    }
    if (r < 0)
        return entry_err(u, err, errno, what);
    return r;
}

/* ---- metadata ---- */

static void entry_times(struct archive_entry *ae, struct timespec ts[2])
{
    long mns = archive_entry_mtime_nsec(ae), ans = archive_entry_atime_nsec(ae);
    ts[1] = (struct timespec){.tv_nsec = UTIME_OMIT};
    if (archive_entry_mtime_is_set(ae))
        ts[1] = (struct timespec){archive_entry_mtime(ae), mns >= 0 && mns < 1000000000 ? mns : 0};
    ts[0] = ts[1];
    if (archive_entry_atime_is_set(ae))
        ts[0] = (struct timespec){archive_entry_atime(ae), ans >= 0 && ans < 1000000000 ? ans : 0};
}

/* Owner first: chown clears setuid and setgid, which the mode then sets. */
static int set_owner_mode(struct unpack *u, int fd, struct kago_error **err)
{
    if (fchown(fd, (uid_t)archive_entry_uid(u->ae), (gid_t)archive_entry_gid(u->ae)) < 0)
        return entry_err(u, err, errno, "chown");
    if (fchmod(fd, archive_entry_perm(u->ae) & 07777) < 0)
        return entry_err(u, err, errno, "chmod");
    return 0;
}

/* After chown, which drops security.capability. A namespace the filesystem cannot store is skipped. */
static int set_xattrs(struct unpack *u, int fd, struct kago_error **err)
{
    const char *name;
    const void *value;
    size_t size;
    if (archive_entry_xattr_reset(u->ae) == 0)
        return 0;
    while (archive_entry_xattr_next(u->ae, &name, &value, &size) == ARCHIVE_OK) {
        if (fsetxattr(fd, name, value, size, 0) < 0 && errno != EOPNOTSUPP) {
            char shown[104];
            show_name(shown, sizeof(shown), name);
            return kago_error_set(err, errno, "entry %s: xattr %s", u->shown, shown);
        }
    }
    return 0;
}

/* For entries without an fd of their own (symlinks, devices): never follows the name. */
static int set_owner_times_at(struct unpack *u, int at, const char *name, struct kago_error **err)
{
    struct timespec ts[2];
    entry_times(u->ae, ts);
    if (fchownat(at, name, (uid_t)archive_entry_uid(u->ae), (gid_t)archive_entry_gid(u->ae),
                 AT_SYMLINK_NOFOLLOW) < 0)
        return entry_err(u, err, errno, "chown");
    if (utimensat(at, name, ts, AT_SYMLINK_NOFOLLOW) < 0)
        return entry_err(u, err, errno, "set times");
    return 0;
}

/* A directory listed again (the same path 100,000 times is a small gzip) takes no more memory: its record
 * gets the later entry's times, as extracting in archive order would leave them. */
static int remember_dir_time(struct unpack *u, struct kago_error **err)
{
    struct timespec ts[2];
    entry_times(u->ae, ts);
    if (ts[1].tv_nsec == UTIME_OMIT)
        return 0;
    size_t len = strlen(u->path);
    struct smap_slot *s = kago__smap_find(&u->dir_index, u->path, len);
    if (s) {
        memcpy(u->dirs[(uintptr_t)s->value].ts, ts, sizeof(ts));
        return 0;
    }
    u->dirs_mem += len + 1 + sizeof(*u->dirs) + 2 * sizeof(struct smap_slot);
    if (u->dirs_mem > DIR_TIMES_MAX) {
        char lim[32];
        size_text(DIR_TIMES_MAX, lim, sizeof(lim));
        return kago_error_set(err, 0, "entry %s: the layer's directories take more than %s of paths (limit)",
                              u->shown, lim);
    }
    if (u->ndirs == u->dirs_cap) {
        u->dirs_cap = u->dirs_cap ? u->dirs_cap * 2 : 64;
        u->dirs = xrealloc(u->dirs, u->dirs_cap * sizeof(*u->dirs));
    }
    struct dir_time *d = &u->dirs[u->ndirs];
    *d = (struct dir_time){xstrdup(u->path), {ts[0], ts[1]}};
    kago__smap_add(&u->dir_index, d->path, len, (void *)(uintptr_t)u->ndirs++);
    return 0;
}

/* Each directory's last times. One that a later entry replaced (or removed) is skipped. */
static int set_dir_times(struct unpack *u, struct kago_error **err)
{
    char parent[PATH_MAX];
    for (size_t i = 0; i < u->ndirs; i++) {
        const char *path = u->dirs[i].path, *slash = strrchr(path, '/');
        const char *base = slash ? slash + 1 : *path ? path : ".";
        cleanup_close int pfd = -1;
        if (slash) {
            snprintf(parent, sizeof(parent), "%.*s", (int)(slash - path), path);
            if ((pfd = open_dir(u, parent, O_PATH, false)) < 0)
                continue;
        }
        int at = slash ? pfd : u->dirfd;
        struct stat st;
        if (fstatat(at, base, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISDIR(st.st_mode))
            continue;
        if (utimensat(at, base, u->dirs[i].ts, AT_SYMLINK_NOFOLLOW) < 0)
            return kago_error_set(err, errno, "directory %s: set times", *path ? path : ".");
    }
    return 0;
}

/* ---- entries ---- */

/* A regular file counts its whole size against the uncompressed-size limit and in the layer's size, before
 * any of it is written: a sparse file's data in the tar can be a few bytes of a file of terabytes. */
static int charge_file(struct unpack *u, struct kago_error **err)
{
    la_int64_t size = archive_entry_size(u->ae);
    if (size <= 0)
        return 0;
    if ((uint64_t)size > u->max_bytes - u->res->file_bytes)
        return size_limit_err(u, err);
    u->res->file_bytes += (uint64_t)size;
    return 0;
}

/* Regular file data, holes of sparse files kept as holes. */
static int write_data(struct unpack *u, int fd, struct kago_error **err)
{
    const void *buf;
    size_t size;
    la_int64_t off;
    uint64_t pos = 0;
    if (charge_file(u, err) < 0)
        return -1;
    for (;;) {
        int r = archive_read_data_block(u->tar, &buf, &size, &off);
        if (r == ARCHIVE_EOF)
            break;
        if (r != ARCHIVE_OK && r != ARCHIVE_WARN)
            return tar_err(u, err);
        if ((uint64_t)off != pos && lseek(fd, off, SEEK_SET) < 0)
            return entry_err(u, err, errno, "seek");
        pos = (uint64_t)off;
        for (const char *p = buf; size > 0;) {
            ssize_t n = write(fd, p, size);
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0)
                return entry_err(u, err, errno, "write");
            p += n;
            size -= (size_t)n;
            pos += (uint64_t)n;
        }
    }
    la_int64_t end = archive_entry_size(u->ae);
    if (end > 0 && pos < (uint64_t)end && ftruncate(fd, end) < 0)
        return entry_err(u, err, errno, "truncate");
    return 0;
}

static int mk_file(struct unpack *u, int at, const char *name)
{
    return openat(at, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
}

static int make_file(struct unpack *u, int at, struct kago_error **err)
{
    struct timespec ts[2];
    cleanup_close int fd = create(u, at, u->base, mk_file, "open", err);
    if (fd < 0)
        return -1;
    if (write_data(u, fd, err) < 0 || set_owner_mode(u, fd, err) < 0 || set_xattrs(u, fd, err) < 0)
        return -1;
    entry_times(u->ae, ts);
    if (futimens(fd, ts) < 0)
        return entry_err(u, err, errno, "set times");
    return 0;
}

/* A directory over an existing directory keeps it (and what it holds) and takes the new metadata. */
static int make_dir(struct unpack *u, int at, struct kago_error **err)
{
    if (mkdirat(at, u->base, 0700) < 0) {
        struct stat st;
        if (errno != EEXIST)
            return entry_err(u, err, errno, "mkdir");
        if (fstatat(at, u->base, &st, AT_SYMLINK_NOFOLLOW) < 0)
            return entry_err(u, err, errno, "stat");
        if (!S_ISDIR(st.st_mode) && (clear_name(u, at, u->base) < 0 || mkdirat(at, u->base, 0700) < 0))
            return entry_err(u, err, errno, "replace existing entry");
    }
    cleanup_close int fd = openat(at, u->base, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return entry_err(u, err, errno, "open");
    if (set_owner_mode(u, fd, err) < 0 || set_xattrs(u, fd, err) < 0)
        return -1;
    return remember_dir_time(u, err);
}

static int mk_symlink(struct unpack *u, int at, const char *name)
{
    return symlinkat(archive_entry_symlink(u->ae), at, name);
}

/* Any target text: it only means something inside the container, and nothing here follows it. */
static int make_symlink(struct unpack *u, int at, struct kago_error **err)
{
    if (create(u, at, u->base, mk_symlink, "symlink", err) < 0)
        return -1;
    return set_owner_times_at(u, at, u->base, err);
}

static int mk_node(struct unpack *u, int at, const char *name)
{
    dev_t dev = makedev(archive_entry_rdevmajor(u->ae), archive_entry_rdevminor(u->ae));
    return mknodat(at, name, archive_entry_filetype(u->ae) | 0600, dev);
}

static int make_node(struct unpack *u, int at, struct kago_error **err)
{
    if (create(u, at, u->base, mk_node, "mknod", err) < 0 || set_owner_times_at(u, at, u->base, err) < 0)
        return -1;
    /* Follows a symlink in principle, but the name is the node made just above, and a device or FIFO
     * cannot be opened for fchmod without side effects. */
    if (fchmodat(at, u->base, archive_entry_perm(u->ae) & 07777, 0) < 0)
        return entry_err(u, err, errno, "chmod");
    return 0;
}

static int mk_link(struct unpack *u, int at, const char *name)
{
    return linkat(u->link_at, u->link_base, at, name, 0);
}

/* The target is resolved as safely as an entry's own name, and must exist in the layer already. linkat
 * without AT_SYMLINK_FOLLOW links a symlink itself, never what it points at. */
static int make_hardlink(struct unpack *u, int at, struct kago_error **err)
{
    const char *slash = strrchr(u->link, '/');
    cleanup_close int tfd = -1;
    if (!strcmp(u->link, u->path))
        return 0; /* a link to itself: replacing the name first would lose the target */
    u->link_at = u->dirfd;
    u->link_base = *u->link ? u->link : ".";
    if (slash) {
        char parent[PATH_MAX];
        snprintf(parent, sizeof(parent), "%.*s", (int)(slash - u->link), u->link);
        if ((tfd = open_dir(u, parent, O_PATH, false)) < 0)
            return resolve_err(u, err, -tfd, true);
        u->link_at = tfd;
        u->link_base = slash + 1;
    }
    char what[sizeof(u->shown_link) + 16];
    snprintf(what, sizeof(what), "hard link to %s", u->shown_link);
    return create(u, at, u->base, mk_link, what, err) < 0 ? -1 : 0;
}

static int mk_whiteout(struct unpack *u, int at, const char *name)
{
    return mknodat(at, name, S_IFCHR, makedev(0, 0));
}

/* .wh.NAME: overlayfs's whiteout is a character device 0/0 named NAME. */
static int make_whiteout(struct unpack *u, int at, struct kago_error **err)
{
    return create(u, at, u->wh_name, mk_whiteout, "whiteout", err) < 0 ? -1 : 0;
}

/* .wh..wh..opq: the directory holding it hides everything below it in lower layers. classify() made
 * u->path that directory. */
static int make_opaque(struct unpack *u, struct kago_error **err)
{
    cleanup_close int fd = open_dir(u, u->path, O_RDONLY, true);
    if (fd < 0)
        return resolve_err(u, err, -fd, false);
    if (fsetxattr(fd, "trusted.overlay.opaque", "y", 1, 0) < 0)
        return entry_err(u, err, errno, "set trusted.overlay.opaque");
    return 0;
}

/* The xattrs overlayfs interprets would let a layer forge whiteouts, opaque directories or redirects
 * outside the OCI whiteout files. */
static int check_xattrs(struct unpack *u, struct kago_error **err)
{
    const char *name;
    const void *value;
    size_t size;
    if (archive_entry_xattr_reset(u->ae) == 0)
        return 0;
    while (archive_entry_xattr_next(u->ae, &name, &value, &size) == ARCHIVE_OK) {
        if (!name || !strncmp(name, "trusted.overlay.", 16) || !strncmp(name, "user.overlay.", 13)) {
            char shown[104];
            show_name(shown, sizeof(shown), name);
            return kago_error_set(err, 0, "entry %s: xattr %s refused (overlayfs metadata)", u->shown, shown);
        }
    }
    return 0;
}

static int classify_whiteout(struct unpack *u, struct kago_error **err)
{
    if (!strcmp(u->base, WH_OPAQUE)) {
        u->path[u->plen] = '\0'; /* the directory made opaque */
        return K_OPAQUE;
    }
    if (!strncmp(u->base, WH_META, strlen(WH_META)))
        return K_SKIP; /* other .wh..wh. names are the image tool's own (image-spec: ignore them) */
    u->wh_name = u->base + strlen(WH_PREFIX);
    if (!*u->wh_name || !strcmp(u->wh_name, ".") || !strcmp(u->wh_name, ".."))
        return entry_err(u, err, 0, "bad whiteout name");
    return K_WHITEOUT;
}

static int classify_type(struct unpack *u, struct kago_error **err)
{
    switch (archive_entry_filetype(u->ae)) {
    case AE_IFDIR:
        return K_DIR;
    case AE_IFREG:
        return K_REG;
    case AE_IFLNK:
        return archive_entry_symlink(u->ae) ? K_SYMLINK : entry_err(u, err, 0, "symlink without a target");
    case AE_IFCHR:
    case AE_IFBLK:
    case AE_IFIFO:
        return K_NODE;
    case AE_IFSOCK:
        return K_SKIP; /* a socket is only meaningful while its server runs (tar skips them too) */
    default:
        return entry_err(u, err, 0, "unsupported entry type");
    }
}

/* The pure checks of one entry (also done when only verifying): name, hard-link target, owner, xattrs,
 * whiteout. Returns its kind, or -1 with *err set. */
static int classify(struct unpack *u, struct kago_error **err)
{
    const char *name = archive_entry_pathname(u->ae), *why, *hl;
    show_name(u->shown, sizeof(u->shown), name);
    if (!name || kago__layer_path(name, u->path, sizeof(u->path), &why) < 0)
        return entry_err(u, err, 0, name ? why : "no name");
    const char *slash = strrchr(u->path, '/');
    u->plen = slash ? (size_t)(slash - u->path) : 0;
    u->base = slash ? slash + 1 : *u->path ? u->path : ".";
    la_int64_t uid = archive_entry_uid(u->ae), gid = archive_entry_gid(u->ae);
    if (uid < 0 || gid < 0 || uid >= UINT32_MAX || gid >= UINT32_MAX)
        return entry_err(u, err, 0, "owner out of range");
    if (check_xattrs(u, err) < 0)
        return -1;
    if (!strncmp(u->base, WH_PREFIX, strlen(WH_PREFIX)))
        return classify_whiteout(u, err);
    hl = archive_entry_hardlink(u->ae);
    int kind = hl ? K_HARDLINK : classify_type(u, err);
    if (kind > K_DIR && !*u->path)
        return entry_err(u, err, 0, "the layer's root must be a directory");
    if (hl)
        show_name(u->shown_link, sizeof(u->shown_link), hl);
    if (hl && kago__layer_path(hl, u->link, sizeof(u->link), &why) < 0)
        return kago_error_set(err, 0, "entry %s: hard link target %s: %s", u->shown, u->shown_link, why);
    return kind;
}

static int apply(struct unpack *u, int kind, struct kago_error **err)
{
    int at = -1;
    if (kind == K_SKIP)
        return 0;
    if (kind == K_OPAQUE)
        return make_opaque(u, err);
    if (parent_at(u, &at, err) < 0)
        return -1;
    switch (kind) {
    case K_DIR:
        return make_dir(u, at, err);
    case K_REG:
        return make_file(u, at, err);
    case K_SYMLINK:
        return make_symlink(u, at, err);
    case K_HARDLINK:
        return make_hardlink(u, at, err);
    case K_NODE:
        return make_node(u, at, err);
    default:
        return make_whiteout(u, at, err);
    }
}

static int unpack_entries(struct unpack *u, struct kago_error **err)
{
    for (;;) {
        int r = archive_read_next_header(u->tar, &u->ae);
        if (r == ARCHIVE_EOF)
            return 0;
        /* A warning (e.g. a name not in the locale's charset) keeps the raw bytes: go on. */
        if (r != ARCHIVE_OK && r != ARCHIVE_WARN)
            return tar_err(u, err);
        u->header_seen = true;
        if (++u->res->entries > u->max_entries)
            return kago_error_set(err, 0, "layer has more than %llu entries (limit)",
                                  (unsigned long long)u->max_entries);
        int kind = classify(u, err);
        if (kind < 0)
            return -1;
        if (u->dirfd >= 0 && apply(u, kind, err) < 0)
            return -1;
        if (u->dirfd < 0 && kind == K_REG && charge_file(u, err) < 0)
            return -1;
    }
}

static void unpack_free(struct unpack *u)
{
    archive_read_free(u->tar);
    archive_read_free(u->raw);
    EVP_MD_CTX_free(u->blob_md);
    EVP_MD_CTX_free(u->tar_md);
    free(u->inbuf);
    free(u->midbuf);
    if (u->pcache_fd >= 0)
        close(u->pcache_fd);
    for (size_t i = 0; i < u->ndirs; i++)
        free(u->dirs[i].path);
    free(u->dirs);
    kago__smap_fini(&u->dir_index);
    kago_error_free(u->cb_err);
    free(u);
}

int kago__layer_unpack(kago__layer_read_fn read, void *ctx, int dirfd, const struct kago__layer_limits *lim,
                       struct kago__layer_result *res, struct kago_error **err)
{
    struct unpack *u = xcalloc(1, sizeof(*u));
    *res = (struct kago__layer_result){0};
    u->read = read;
    u->ctx = ctx;
    u->dirfd = dirfd;
    u->res = res;
    u->max_bytes = lim && lim->max_bytes ? lim->max_bytes : KAGO_LAYER_MAX_BYTES;
    u->max_entries = lim && lim->max_entries ? lim->max_entries : KAGO_LAYER_MAX_ENTRIES;
    u->pcache_fd = -1;
    u->inbuf = xmalloc(BUF_SIZE);
    u->midbuf = xmalloc(BUF_SIZE);
    u->blob_md = EVP_MD_CTX_new();
    u->tar_md = EVP_MD_CTX_new();
    int r = -1;
    if (!u->blob_md || !u->tar_md || !EVP_DigestInit_ex(u->blob_md, EVP_sha256(), NULL) ||
        !EVP_DigestInit_ex(u->tar_md, EVP_sha256(), NULL))
        r = kago_error_set(err, 0, "sha256: OpenSSL failed to initialise");
    else if (open_stages(u, err) == 0 && unpack_entries(u, err) == 0 && drain(u, err) == 0 &&
             (dirfd < 0 || set_dir_times(u, err) == 0))
        r = 0;
    if (r == 0 && (!EVP_DigestFinal_ex(u->blob_md, res->digest, NULL) ||
                   !EVP_DigestFinal_ex(u->tar_md, res->diff_id, NULL)))
        r = kago_error_set(err, 0, "sha256: OpenSSL failed");
    unpack_free(u);
    return r;
}
