/* The layer unpacker: the path check, every entry type and its metadata, compression and both digests,
 * OCI whiteouts, hostile archives, limits, truncated input and verify-only mode. Test layers are built in
 * memory with libarchive's writer and unpacked into directories under /tmp (as root: devices, owners). */
#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <limits.h>
#include <locale.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <zlib.h>
#include <zstd.h>

#include "layer.h"
#include "tap.h"
#include "util.h"

enum { PLAIN, GZIP, ZSTD };

/* libarchive 3.6's pax writer calls this helper of its own, which sits in the object file that also holds
 * the table of every write format (7zip, xar: liblzma, libbz2, libxml2, none of which the static link has).
 * The tests only write pax, so they bring their own copy and that object is never pulled in. */
void __archive_write_entry_filetype_unsupported(struct archive *a, struct archive_entry *e,
                                                const char *format);
void __archive_write_entry_filetype_unsupported(struct archive *a, struct archive_entry *e,
                                                const char *format)
{
    archive_set_error(a, EINVAL, "%s: unsupported file type", format);
}

struct buf {
    unsigned char *p;
    size_t len, cap;
};

static void buf_add(struct buf *b, const void *p, size_t n)
{
    if (b->len + n > b->cap) {
        b->cap = (b->len + n) * 2;
        b->p = xrealloc(b->p, b->cap);
    }
    memcpy(b->p + b->len, p, n);
    b->len += n;
}

/* ---- building layers ---- */

static la_ssize_t buf_write_cb(struct archive *a, void *data, const void *p, size_t n)
{
    buf_add(data, p, n);
    return (la_ssize_t)n;
}

static struct archive *tar_new(int filter, struct buf *out)
{
    struct archive *a = archive_write_new();
    archive_write_set_format_pax_restricted(a);
    if (filter == GZIP)
        archive_write_add_filter_gzip(a);
    else if (filter == ZSTD)
        archive_write_add_filter_zstd(a);
    else
        archive_write_add_filter_none(a);
    *out = (struct buf){0};
    archive_write_open2(a, out, NULL, buf_write_cb, NULL, NULL);
    return a;
}

static void tar_end(struct archive *a)
{
    archive_write_close(a);
    archive_write_free(a);
}

static struct archive_entry *ent(const char *name, mode_t type, mode_t perm)
{
    struct archive_entry *e = archive_entry_new();
    archive_entry_set_pathname(e, name);
    archive_entry_set_filetype(e, type);
    archive_entry_set_perm(e, perm);
    archive_entry_set_mtime(e, 1500000000, 0);
    return e;
}

/* Writes e (and len bytes of data) and frees it. */
static void put(struct archive *a, struct archive_entry *e, const void *data, size_t len)
{
    archive_entry_set_size(e, (la_int64_t)len);
    if (archive_write_header(a, e) != ARCHIVE_OK)
        printf("# write_header %s: %s\n", archive_entry_pathname(e), archive_error_string(a));
    if (len)
        archive_write_data(a, data, len);
    archive_entry_free(e);
}

static void add_file(struct archive *a, const char *name, const char *data)
{
    put(a, ent(name, AE_IFREG, 0644), data, strlen(data));
}
static void add_dir(struct archive *a, const char *name)
{
    put(a, ent(name, AE_IFDIR, 0755), NULL, 0);
}
static void add_symlink(struct archive *a, const char *name, const char *target)
{
    struct archive_entry *e = ent(name, AE_IFLNK, 0777);
    archive_entry_set_symlink(e, target);
    put(a, e, NULL, 0);
}
static void add_hardlink(struct archive *a, const char *name, const char *target)
{
    struct archive_entry *e = ent(name, AE_IFREG, 0644);
    archive_entry_set_hardlink(e, target);
    put(a, e, NULL, 0);
}

/* A tar of one entry list given as a builder function. The writer needs a UTF-8 locale for non-ASCII names;
 * the unpacker runs in the C locale, as kago does. */
static struct buf build(int filter, void (*fill)(struct archive *))
{
    struct buf b;
    setlocale(LC_CTYPE, "C.UTF-8");
    struct archive *a = tar_new(filter, &b);
    fill(a);
    tar_end(a);
    setlocale(LC_CTYPE, "C");
    return b;
}

/* ---- reading and checking ---- */

struct mem {
    const unsigned char *p;
    size_t len, pos, chunk; /* chunk: at most this much a read (0: as asked) */
};

static ssize_t mem_read(void *ctx, void *buf, size_t len, struct kago_error **err)
{
    struct mem *m = ctx;
    size_t n = m->len - m->pos;
    if (n > len)
        n = len;
    if (m->chunk && n > m->chunk)
        n = m->chunk;
    memcpy(buf, m->p + m->pos, n);
    m->pos += n;
    return (ssize_t)n;
}

static ssize_t failing_read(void *ctx, void *buf, size_t len, struct kago_error **err)
{
    return kago_error_set(err, EIO, "boom");
}

static int unpack_mem(const struct buf *b, size_t chunk, int dirfd, const struct kago__layer_limits *lim,
                      struct kago__layer_result *res, struct kago_error **err)
{
    struct mem m = {b->p, b->len, 0, chunk};
    return kago__layer_unpack(mem_read, &m, dirfd, lim, res, err);
}

static void sha256(const void *p, size_t n, unsigned char out[32])
{
    EVP_Digest(p, n, out, NULL, EVP_sha256(), NULL);
}

/* A scratch directory P with P/layer (the layer) and P/outside (with a file f = "orig") beside it. */
struct scratch {
    char dir[64];
    int fd; /* P/layer */
};

static void scratch_new(struct scratch *s)
{
    snprintf(s->dir, sizeof(s->dir), "/tmp/kago-test-layer.XXXXXX");
    if (!mkdtemp(s->dir))
        abort();
    cleanup_free char *layer = xasprintf("%s/layer", s->dir), *out = xasprintf("%s/outside", s->dir);
    cleanup_free char *f = xasprintf("%s/outside/f", s->dir);
    mkdir(layer, 0755);
    mkdir(out, 0755);
    int fd = open(f, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0 || write(fd, "orig", 4) != 4)
        abort();
    close(fd);
    s->fd = open(layer, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
}

static void scratch_end(struct scratch *s)
{
    close(s->fd);
    kago__rm_rf(s->dir);
}

/* Unpacks b into a fresh scratch directory; *err holds the failure, if any. */
static int unpack_new(struct scratch *s, const struct buf *b, struct kago_error **err)
{
    struct kago__layer_result res;
    scratch_new(s);
    kago_error_clear(err);
    return unpack_mem(b, 0, s->fd, NULL, &res, err);
}

static bool err_has(struct kago_error *err, const char *s)
{
    if (err && !strstr(err->msg, s))
        printf("# error: %s\n", err->msg);
    return err && strstr(err->msg, s);
}

static bool lstat_at(struct scratch *s, const char *name, struct stat *st)
{
    return fstatat(s->fd, name, st, AT_SYMLINK_NOFOLLOW) == 0;
}

static bool file_is(struct scratch *s, const char *name, const char *content)
{
    cleanup_free char *got = kago__read_fileat(s->fd, name, NULL);
    return got && !strcmp(got, content);
}

static bool exists_in(struct scratch *s, const char *rel)
{
    cleanup_free char *p = xasprintf("%s/%s", s->dir, rel);
    struct stat st;
    return lstat(p, &st) == 0;
}

static bool outside_intact(struct scratch *s)
{
    cleanup_free char *p = xasprintf("%s/outside/f", s->dir);
    cleanup_free char *got = kago__read_file(p, NULL, NULL);
    struct stat st;
    return got && !strcmp(got, "orig") && stat(p, &st) == 0 && st.st_nlink == 1;
}

/* ---- the path check ---- */

static void test_paths(void)
{
    static const struct {
        const char *in, *out;
    } good[] = {
        {"a", "a"},         {"a/b", "a/b"},   {"./a", "a"},     {"a//b", "a/b"},     {"a/b/", "a/b"},
        {"./", ""},         {".", ""},        {"a/./b", "a/b"}, {"...", "..."},      {"..a/a..", "..a/a.."},
        {".wh.x", ".wh.x"}, {"./././a", "a"}, {"a/.", "a"},     {"a//./b//", "a/b"},
    };
    static const char *const bad[] = {"",     "/",      "/a",     "..",          "../a",
                                      "a/..", "a/../b", "./../a", "a/b/../../.."};
    char out[PATH_MAX];
    const char *why;
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        ok(kago__layer_path(good[i].in, out, sizeof(out), &why) == 0 && !strcmp(out, good[i].out),
           "path '%s' -> '%s'", good[i].in, good[i].out);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        ok(kago__layer_path(bad[i], out, sizeof(out), &why) < 0, "path '%s' refused (%s)", bad[i], why);
    ok(kago__layer_path("../x", out, sizeof(out), &why) < 0 && strstr(why, ".."), "why names the ..");
    ok(kago__layer_path("/x", out, sizeof(out), &why) < 0 && strstr(why, "absolute"), "why says absolute");
    char longname[PATH_MAX + 10];
    memset(longname, 'a', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    for (size_t i = 100; i < sizeof(longname) - 1; i += 100)
        longname[i] = '/';
    ok(kago__layer_path(longname, out, sizeof(out), &why) < 0 && strstr(why, "long"), "longer than PATH_MAX");
    char comp[300];
    memset(comp, 'c', sizeof(comp) - 1);
    comp[sizeof(comp) - 1] = '\0';
    ok(kago__layer_path(comp, out, sizeof(out), &why) < 0, "component longer than NAME_MAX");
    ok(kago__layer_path("abcdef", out, 4, &why) < 0, "too long for out");
}

/* ---- entry types and metadata ---- */

static char big[3 << 20];

static void fill_types(struct archive *a)
{
    struct archive_entry *e = ent("etc/", AE_IFDIR, 0750);
    archive_entry_set_mtime(e, 1100000000, 0);
    archive_entry_xattr_add_entry(e, "user.dir", "d", 1);
    put(a, e, NULL, 0);
    e = ent("etc/passwd", AE_IFREG, 0640);
    archive_entry_set_uid(e, 1234);
    archive_entry_set_gid(e, 5678);
    archive_entry_set_mtime(e, 1000000000, 500);
    archive_entry_xattr_add_entry(e, "user.test", "hello", 5);
    put(a, e, "root:x:0:0\n", 11);
    add_dir(a, "bin/");
    e = ent("bin/su", AE_IFREG, 04755);
    put(a, e, "su", 2);
    e = ent("bin/sg", AE_IFREG, 02711);
    archive_entry_set_gid(e, 42);
    put(a, e, "sg", 2);
    put(a, ent("tmp/", AE_IFDIR, 01777), NULL, 0);
    add_symlink(a, "bin/sh", "/bin/busybox");
    e = ent("etc/rel", AE_IFLNK, 0777);
    archive_entry_set_symlink(e, "../../../../bin/su");
    archive_entry_set_uid(e, 1000);
    put(a, e, NULL, 0);
    add_hardlink(a, "bin/su2", "./bin/su");
    put(a, ent("run/fifo", AE_IFIFO, 0620), NULL, 0);
    e = ent("dev/null", AE_IFCHR, 0666);
    archive_entry_set_rdevmajor(e, 1);
    archive_entry_set_rdevminor(e, 3);
    put(a, e, NULL, 0);
    e = ent("dev/loop0", AE_IFBLK, 0660);
    archive_entry_set_rdevmajor(e, 7);
    archive_entry_set_rdevminor(e, 0);
    put(a, e, NULL, 0);
    add_file(a, "caf\xc3\xa9", "utf-8 name");
    add_file(a, "empty", "");
    put(a, ent("usr/share/big", AE_IFREG, 0644), big, sizeof(big));
    put(a, ent("./", AE_IFDIR, 0711), NULL, 0);
}

static void test_types(void)
{
    for (size_t i = 0; i < sizeof(big); i++)
        big[i] = (char)(i * 7 + i / 4096);
    struct buf b = build(PLAIN, fill_types);
    struct scratch s;
    struct kago_error *err = NULL;
    struct kago__layer_result res;
    scratch_new(&s);
    ok(unpack_mem(&b, 0, s.fd, NULL, &res, &err) == 0, "unpack every entry type: %s", err ? err->msg : "ok");
    struct stat st;
    ok(lstat_at(&s, "etc", &st) && S_ISDIR(st.st_mode) && (st.st_mode & 07777) == 0750, "directory and mode");
    ok(st.st_mtim.tv_sec == 1100000000, "directory mtime set after its entries were written");
    ok(lstat_at(&s, "etc/passwd", &st) && S_ISREG(st.st_mode) && st.st_uid == 1234 && st.st_gid == 5678 &&
           (st.st_mode & 07777) == 0640,
       "file owner and mode");
    ok(st.st_mtim.tv_sec == 1000000000 && st.st_mtim.tv_nsec == 500, "file mtime with nanoseconds");
    ok(file_is(&s, "etc/passwd", "root:x:0:0\n"), "file content");
    char v[16] = {0};
    cleanup_free char *passwd = xasprintf("%s/layer/etc/passwd", s.dir),
                      *etc = xasprintf("%s/layer/etc", s.dir);
    ok(getxattr(passwd, "user.test", v, sizeof(v)) == 5 && !memcmp(v, "hello", 5), "file xattr user.test");
    ok(getxattr(etc, "user.dir", v, sizeof(v)) == 1 && v[0] == 'd', "directory xattr user.dir");
    ok(lstat_at(&s, "bin/su", &st) && (st.st_mode & 07777) == 04755 && st.st_uid == 0, "setuid kept");
    ok(lstat_at(&s, "bin/sg", &st) && (st.st_mode & 07777) == 02711 && st.st_gid == 42,
       "setgid kept after chown");
    ok(lstat_at(&s, "tmp", &st) && (st.st_mode & 07777) == 01777, "sticky directory");
    char target[64] = {0};
    ok(readlinkat(s.fd, "bin/sh", target, sizeof(target)) == 12 && !strcmp(target, "/bin/busybox"),
       "absolute symlink target kept as text");
    memset(target, 0, sizeof(target));
    ok(readlinkat(s.fd, "etc/rel", target, sizeof(target)) > 0 && !strcmp(target, "../../../../bin/su") &&
           lstat_at(&s, "etc/rel", &st) && st.st_uid == 1000,
       "symlink with .. target kept, owner set on the link");
    struct stat st2;
    ok(lstat_at(&s, "bin/su2", &st) && lstat_at(&s, "bin/su", &st2) && st.st_ino == st2.st_ino &&
           st.st_nlink == 2,
       "hard link shares the inode");
    ok(lstat_at(&s, "run/fifo", &st) && S_ISFIFO(st.st_mode) && (st.st_mode & 07777) == 0620,
       "fifo (parent made)");
    ok(lstat_at(&s, "run", &st) && S_ISDIR(st.st_mode), "missing parent directory made");
    ok(lstat_at(&s, "dev/null", &st) && S_ISCHR(st.st_mode) && st.st_rdev == makedev(1, 3) &&
           (st.st_mode & 07777) == 0666,
       "char device 1:3");
    ok(lstat_at(&s, "dev/loop0", &st) && S_ISBLK(st.st_mode) && st.st_rdev == makedev(7, 0),
       "block device 7:0");
    ok(file_is(&s, "caf\xc3\xa9", "utf-8 name"), "UTF-8 name kept as bytes");
    ok(lstat_at(&s, "empty", &st) && st.st_size == 0, "empty file");
    cleanup_free char *got = NULL;
    cleanup_close int fd = openat(s.fd, "usr/share/big", O_RDONLY);
    got = xmalloc(sizeof(big));
    ok(fd >= 0 && read(fd, got, sizeof(big)) == (ssize_t)sizeof(big) && !memcmp(got, big, sizeof(big)),
       "3 MiB file content across buffers");
    ok(fstat(s.fd, &st) == 0 && (st.st_mode & 07777) == 0711, "./ entry sets the layer root's mode");
    ok(res.entries == 16 && res.file_bytes == 11 + 2 + 2 + 10 + sizeof(big), "entries %llu, file bytes %llu",
       (unsigned long long)res.entries, (unsigned long long)res.file_bytes);
    scratch_end(&s);
    free(b.p);
}

/* ---- compression and digests ---- */

static struct buf gzip_of(const struct buf *in)
{
    z_stream z = {0};
    struct buf out = {xmalloc(in->len + 1024), 0, in->len + 1024};
    deflateInit2(&z, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY);
    z.next_in = in->p;
    z.avail_in = (uInt)in->len;
    z.next_out = out.p;
    z.avail_out = (uInt)out.cap;
    deflate(&z, Z_FINISH);
    out.len = z.total_out;
    deflateEnd(&z);
    return out;
}

static struct buf gunzip(const struct buf *in)
{
    z_stream z = {0};
    struct buf out = {xmalloc(1 << 20), 0, 1 << 20};
    inflateInit2(&z, 15 + 16);
    z.next_in = in->p;
    z.avail_in = (uInt)in->len;
    z.next_out = out.p;
    z.avail_out = (uInt)out.cap;
    inflate(&z, Z_FINISH);
    out.len = z.total_out;
    inflateEnd(&z);
    return out;
}

static struct buf zstd_of(const struct buf *in)
{
    size_t cap = ZSTD_compressBound(in->len);
    struct buf out = {xmalloc(cap), 0, cap};
    out.len = ZSTD_compress(out.p, cap, in->p, in->len, 3);
    return out;
}

static void fill_small(struct archive *a)
{
    add_dir(a, "d/");
    add_file(a, "d/f", "data");
    put(a, ent("d/big", AE_IFREG, 0644), big, 100000);
    add_symlink(a, "d/l", "f");
}

static void test_digests(void)
{
    struct buf tar = build(PLAIN, fill_small);
    static const unsigned char zeros[4096];
    buf_add(&tar, zeros, sizeof(zeros)); /* more than the tar's own padding: drained and hashed too */
    unsigned char want_diff[32], want_blob[32];
    sha256(tar.p, tar.len, want_diff);
    struct buf blobs[3] = {tar, gzip_of(&tar), zstd_of(&tar)};
    static const char *const names[] = {"plain", "gzip", "zstd"};
    for (int i = 0; i < 3; i++) {
        for (size_t chunk = 0; chunk <= 777; chunk += 777) {
            struct scratch s;
            struct kago_error *err = NULL;
            struct kago__layer_result res;
            scratch_new(&s);
            sha256(blobs[i].p, blobs[i].len, want_blob);
            int r = unpack_mem(&blobs[i], chunk, s.fd, NULL, &res, &err);
            ok(r == 0, "%s (reads of %zu): unpacked: %s", names[i], chunk, err ? err->msg : "ok");
            ok(!memcmp(res.digest, want_blob, 32) && res.blob_size == blobs[i].len,
               "%s (reads of %zu): digest = sha256 of the blob", names[i], chunk);
            ok(!memcmp(res.diff_id, want_diff, 32) && res.tar_size == tar.len,
               "%s (reads of %zu): diff_id = sha256 of the tar, trailing blocks included", names[i], chunk);
            ok(res.entries == 4 && file_is(&s, "d/f", "data"), "%s: content", names[i]);
            kago_error_clear(&err);
            scratch_end(&s);
        }
    }
    /* libarchive's own gzip writer, as another producer (it does not pad the compressed tar) */
    struct buf gz = build(GZIP, fill_small), plain = gunzip(&gz);
    struct kago__layer_result res;
    struct kago_error *err = NULL;
    char hex[65];
    ok(unpack_mem(&gz, 0, -1, NULL, &res, &err) == 0, "libarchive gzip writer: verified");
    sha256(plain.p, plain.len, want_diff);
    sha256(gz.p, gz.len, want_blob);
    ok(!memcmp(res.diff_id, want_diff, 32) && !memcmp(res.digest, want_blob, 32), "libarchive gzip digests");
    kago__hex(want_blob, hex);
    ok(strlen(hex) == 64 && strspn(hex, "0123456789abcdef") == 64, "kago__hex");
    for (int i = 0; i < 3; i++)
        free(blobs[i].p);
    free(gz.p);
    free(plain.p);
}

/* ---- whiteouts ---- */

static void fill_whiteouts(struct archive *a)
{
    add_dir(a, "a/");
    add_file(a, "a/.wh.gone", "");
    add_file(a, ".wh.top", "");
    add_dir(a, "b/");
    add_file(a, "b/keep", "k");
    add_file(a, "b/.wh..wh..opq", "");
    add_file(a, "c/d/.wh..wh..opq", "");
    add_file(a, "a/.wh..wh.plnk", "");
    add_file(a, "x", "replaced by its whiteout");
    add_file(a, ".wh.x", "");
}

static bool is_whiteout(struct scratch *s, const char *name)
{
    struct stat st;
    return lstat_at(s, name, &st) && S_ISCHR(st.st_mode) && st.st_rdev == makedev(0, 0);
}

static bool is_opaque(struct scratch *s, const char *name)
{
    cleanup_free char *p = xasprintf("%s/layer/%s", s->dir, name);
    char v[4] = {0};
    return lgetxattr(p, "trusted.overlay.opaque", v, sizeof(v)) == 1 && v[0] == 'y';
}

static void fill_bad_whiteout(struct archive *a)
{
    add_file(a, "a/.wh...", "");
}

static void test_whiteouts(void)
{
    struct buf b = build(GZIP, fill_whiteouts);
    struct scratch s;
    struct kago_error *err = NULL;
    struct stat st;
    ok(unpack_new(&s, &b, &err) == 0, "layer with whiteouts: %s", err ? err->msg : "ok");
    ok(is_whiteout(&s, "a/gone") && is_whiteout(&s, "top"), ".wh.NAME -> char device 0/0 NAME");
    ok(!lstat_at(&s, "a/.wh.gone", &st) && !lstat_at(&s, ".wh.top", &st), "no .wh. file left");
    ok(is_opaque(&s, "b") && file_is(&s, "b/keep", "k"), "opaque directory keeps its own entries");
    ok(is_opaque(&s, "c/d"), "opaque marker makes its missing directory");
    ok(!is_opaque(&s, "a") && !lstat_at(&s, "a/.wh..wh.plnk", &st) && !lstat_at(&s, "a/plnk", &st),
       "other .wh..wh. names ignored");
    ok(is_whiteout(&s, "x"), "whiteout replaces an entry of the same layer");
    scratch_end(&s);
    free(b.p);
    b = build(PLAIN, fill_bad_whiteout);
    ok(unpack_new(&s, &b, &err) < 0 && err_has(err, "entry a/.wh...: bad whiteout name"),
       "whiteout of .. refused");
    ok(!exists_in(&s, "outside/f") || outside_intact(&s), "nothing outside touched");
    scratch_end(&s);
    kago_error_clear(&err);
    free(b.p);
}

/* ---- hostile layers ---- */

static char outside[128]; /* P/outside of the scratch directory the next hostile layer goes to */

static void fill_dotdot(struct archive *a)
{
    add_file(a, "ok", "fine");
    add_file(a, "../evil", "x");
}
static void fill_absolute(struct archive *a)
{
    add_file(a, "/evil", "x");
}
static void fill_symlink_dir(struct archive *a)
{
    add_symlink(a, "a", outside);
    add_file(a, "a/f", "pwned");
}
static void fill_symlink_rel(struct archive *a)
{
    add_dir(a, "d/");
    add_symlink(a, "d/up", "../../outside");
    add_file(a, "d/up/x", "pwned");
}
static void fill_symlink_deep(struct archive *a)
{
    add_symlink(a, "a", outside);
    add_dir(a, "a/sub/");
}
static void fill_replace_symlink(struct archive *a)
{
    cleanup_free char *f = xasprintf("%s/f", outside);
    add_symlink(a, "l", f);
    add_file(a, "l", "pwned");
    add_symlink(a, "m", outside);
    add_dir(a, "m/");
}
static void fill_link_dotdot(struct archive *a)
{
    add_hardlink(a, "h", "../outside/f");
}
static void fill_link_symlink(struct archive *a)
{
    add_symlink(a, "s", outside);
    add_hardlink(a, "h", "s/f");
}
static void fill_link_to_symlink(struct archive *a)
{
    cleanup_free char *f = xasprintf("%s/f", outside);
    add_symlink(a, "s", f);
    add_hardlink(a, "h", "s");
}
static void fill_link_missing(struct archive *a)
{
    add_hardlink(a, "h", "nope");
}
static void fill_overlay_xattr(struct archive *a)
{
    struct archive_entry *e = ent("d/", AE_IFDIR, 0755);
    archive_entry_xattr_add_entry(e, "trusted.overlay.opaque", "y", 1);
    put(a, e, NULL, 0);
}
static void fill_root_file(struct archive *a)
{
    add_file(a, ".", "x");
}
static void fill_long_name(struct archive *a)
{
    char name[PATH_MAX + 100];
    memset(name, 'a', sizeof(name) - 1);
    name[sizeof(name) - 1] = '\0';
    for (size_t i = 200; i < sizeof(name) - 1; i += 200)
        name[i] = '/';
    add_file(a, name, "x");
}

/* pure: a failure of the checks done without writing, so verify-only mode refuses the layer too. */
static void hostile(void (*fill)(struct archive *), const char *expect, bool pure, const char *what)
{
    struct scratch s;
    struct kago_error *err = NULL;
    scratch_new(&s);
    snprintf(outside, sizeof(outside), "%s/outside", s.dir);
    struct buf b = build(PLAIN, fill);
    struct kago__layer_result res;
    ok(unpack_mem(&b, 0, s.fd, NULL, &res, &err) < 0 && err_has(err, expect), "%s: refused (%s)", what,
       err ? err->msg : "no error");
    ok(outside_intact(&s) && !exists_in(&s, "evil") && !exists_in(&s, "outside/x") &&
           !exists_in(&s, "outside/sub"),
       "%s: nothing outside the layer touched", what);
    kago_error_clear(&err);
    if (pure)
        ok(unpack_mem(&b, 0, -1, NULL, &res, &err) < 0 && err_has(err, expect), "%s: verify-only refuses too",
           what);
    kago_error_clear(&err);
    scratch_end(&s);
    free(b.p);
}

static void test_hostile(void)
{
    hostile(fill_dotdot, "entry ../evil: path leaves the layer (.. component)", true, "../ escape");
    hostile(fill_absolute, "entry /evil: absolute path", true, "absolute path");
    hostile(fill_symlink_dir, "entry a/f: path goes through a symlink", false,
            "file through a planted symlink");
    hostile(fill_symlink_rel, "entry d/up/x: path goes through a symlink", false,
            "relative symlink to outside");
    hostile(fill_symlink_deep, "entry a/sub/: path goes through a symlink", false,
            "directory through a symlink");
    hostile(fill_link_dotdot, "entry h: hard link target ../outside/f: path leaves the layer", true,
            "hard link to ../outside");
    hostile(fill_link_symlink, "entry h: hard link target s/f: path goes through a symlink", false,
            "hard link through a symlink");
    hostile(fill_link_missing, "entry h: hard link to nope: No such file", false,
            "hard link to a missing target");
    hostile(fill_overlay_xattr, "xattr trusted.overlay.opaque refused", true,
            "trusted.overlay xattr forgery");
    hostile(fill_root_file, "entry .: the layer's root must be a directory", true, "root as a file");
    hostile(fill_long_name, "name too long", true, "name longer than PATH_MAX");

    /* entries that replace a planted symlink replace the link itself */
    struct scratch s;
    struct kago_error *err = NULL;
    struct stat st;
    scratch_new(&s);
    snprintf(outside, sizeof(outside), "%s/outside", s.dir);
    struct buf b = build(PLAIN, fill_replace_symlink);
    struct kago__layer_result res;
    ok(unpack_mem(&b, 0, s.fd, NULL, &res, &err) == 0, "file and directory over symlinks: %s",
       err ? err->msg : "ok");
    ok(file_is(&s, "l", "pwned") && lstat_at(&s, "l", &st) && S_ISREG(st.st_mode) && outside_intact(&s),
       "file replaced the symlink, its target untouched");
    ok(lstat_at(&s, "m", &st) && S_ISDIR(st.st_mode), "directory replaced the symlink");
    scratch_end(&s);
    free(b.p);

    scratch_new(&s);
    snprintf(outside, sizeof(outside), "%s/outside", s.dir);
    b = build(PLAIN, fill_link_to_symlink);
    ok(unpack_mem(&b, 0, s.fd, NULL, &res, &err) == 0 && lstat_at(&s, "h", &st) && S_ISLNK(st.st_mode) &&
           outside_intact(&s),
       "hard link to a symlink links the symlink, not its target");
    kago_error_clear(&err);
    scratch_end(&s);
    free(b.p);
}

/* ---- replacing entries ---- */

static void fill_replace(struct archive *a)
{
    add_file(a, "x", "first");
    add_file(a, "x", "second");
    add_dir(a, "d/");
    add_file(a, "d/in", "kept");
    put(a, ent("d/", AE_IFDIR, 0700), NULL, 0);
    add_file(a, "e", "file");
    add_dir(a, "e/");
    add_dir(a, "f/");
    add_file(a, "f", "file over empty dir");
    add_file(a, "g", "g");
    add_symlink(a, "g", "target");
}
static void fill_replace_full_dir(struct archive *a)
{
    add_file(a, "d/in", "x");
    add_file(a, "d", "file over a full directory");
}

static void test_replace(void)
{
    struct buf b = build(PLAIN, fill_replace);
    struct scratch s;
    struct kago_error *err = NULL;
    struct stat st;
    ok(unpack_new(&s, &b, &err) == 0, "replacing entries: %s", err ? err->msg : "ok");
    ok(file_is(&s, "x", "second"), "later file wins");
    ok(lstat_at(&s, "d", &st) && (st.st_mode & 07777) == 0700 && file_is(&s, "d/in", "kept"),
       "directory over a directory: new mode, contents kept");
    ok(lstat_at(&s, "e", &st) && S_ISDIR(st.st_mode), "directory over a file");
    ok(file_is(&s, "f", "file over empty dir"), "file over an empty directory");
    ok(lstat_at(&s, "g", &st) && S_ISLNK(st.st_mode), "symlink over a file");
    scratch_end(&s);
    free(b.p);
    b = build(PLAIN, fill_replace_full_dir);
    ok(unpack_new(&s, &b, &err) < 0 && err_has(err, "entry d: replace existing entry: Directory not empty"),
       "file over a non-empty directory refused");
    kago_error_clear(&err);
    scratch_end(&s);
    free(b.p);
}

/* ---- limits ---- */

static void fill_many(struct archive *a)
{
    char name[16];
    for (int i = 0; i < 10; i++) {
        snprintf(name, sizeof(name), "f%d", i);
        add_file(a, name, "x");
    }
}

static void test_limits(void)
{
    struct buf b = build(PLAIN, fill_many);
    struct scratch s;
    struct kago_error *err = NULL;
    struct kago__layer_result res;
    struct kago__layer_limits lim = {.max_entries = 5};
    struct stat st;
    scratch_new(&s);
    ok(unpack_mem(&b, 0, s.fd, &lim, &res, &err) < 0 && err_has(err, "layer has more than 5 entries (limit)"),
       "entry limit");
    ok(!lstat_at(&s, "f5", &st), "stopped at the limit");
    kago_error_clear(&err);
    lim.max_entries = 10;
    ok(unpack_mem(&b, 0, -1, &lim, &res, &err) == 0 && res.entries == 10, "exactly at the entry limit");
    scratch_end(&s);
    free(b.p);

    /* a gzip bomb: 256 MiB of zeros in a few hundred KiB */
    struct archive *a = tar_new(GZIP, &b);
    struct archive_entry *e = ent("zeros", AE_IFREG, 0644);
    static const char zero[1 << 16];
    archive_entry_set_size(e, 256 << 20);
    archive_write_header(a, e);
    archive_entry_free(e);
    for (int i = 0; i < (256 << 20) / (int)sizeof(zero); i++)
        archive_write_data(a, zero, sizeof(zero));
    tar_end(a);
    scratch_new(&s);
    lim = (struct kago__layer_limits){.max_bytes = 1 << 20};
    struct mem m = {b.p, b.len, 0, 4096};
    ok(kago__layer_unpack(mem_read, &m, s.fd, &lim, &res, &err) < 0 &&
           err_has(err, "layer exceeds 1 MiB uncompressed (limit)"),
       "gzip bomb stopped by the byte limit");
    ok(m.pos < b.len / 4 && lstat_at(&s, "zeros", &st) && st.st_size <= 1 << 20,
       "stopped early: read %zu of %zu blob bytes, wrote %lld", m.pos, b.len, (long long)st.st_size);
    kago_error_clear(&err);
    lim.max_bytes = 1000;
    ok(unpack_mem(&b, 0, -1, &lim, &res, &err) < 0 && err_has(err, "layer exceeds 1000 bytes uncompressed"),
       "byte limit in verify-only mode, odd size named in bytes");
    kago_error_clear(&err);
    scratch_end(&s);
    free(b.p);
}

/* ---- truncated and broken input ---- */

static void truncated(const struct buf *whole, size_t len, const char *expect, const char *what)
{
    struct buf b = {whole->p, len, len};
    struct kago_error *err = NULL;
    struct kago__layer_result res;
    struct scratch s;
    scratch_new(&s);
    ok(unpack_mem(&b, 0, s.fd, NULL, &res, &err) < 0 && err_has(err, expect), "%s: %s", what,
       err ? err->msg : "no error");
    kago_error_clear(&err);
    scratch_end(&s);
}

static void test_truncated(void)
{
    struct buf tar = build(PLAIN, fill_small), gz = gzip_of(&tar), zs = zstd_of(&tar);
    truncated(&tar, 4000, "truncated layer", "tar cut inside a file");
    truncated(&tar, 700, "truncated layer", "tar cut inside a header");
    truncated(&gz, gz.len / 2, "truncated layer", "gzip cut in half");
    truncated(&gz, gz.len - 4, "truncated layer", "gzip without its trailer");
    truncated(&zs, zs.len / 2, "truncated layer", "zstd cut in half");
    struct buf text = {(unsigned char *)"hello, this is not a tar archive at all", 39, 39};
    truncated(&text, text.len, "not a tar archive", "text");
    struct buf empty = {(unsigned char *)"", 0, 0};
    truncated(&empty, 0, "not a tar archive", "empty blob");
    unsigned char *junk = xmalloc(gz.len);
    memcpy(junk, gz.p, gz.len);
    for (size_t i = 20; i < gz.len - 20; i += 7)
        junk[i] ^= 0x5a;
    struct buf bad = {junk, gz.len, gz.len};
    truncated(&bad, bad.len, "corrupt", "corrupt gzip");

    struct kago_error *err = NULL;
    struct kago__layer_result res;
    ok(kago__layer_unpack(failing_read, NULL, -1, NULL, &res, &err) < 0 && err &&
           !strcmp(err->msg, "boom: "
                             "Input/output error"),
       "the read function's own error comes through unchanged");
    kago_error_clear(&err);
    free(junk);
    free(tar.p);
    free(gz.p);
    free(zs.p);
}

/* ---- verify only ---- */

static void test_verify(void)
{
    struct buf tar = build(PLAIN, fill_types), gz = gzip_of(&tar);
    char dir[] = "/tmp/kago-test-layer-verify.XXXXXX";
    struct kago_error *err = NULL;
    struct kago__layer_result res;
    unsigned char want[32];
    int cwd = open(".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    mkdtemp(dir);
    /* relative names would land in the working directory if anything were written */
    ok(chdir(dir) == 0 && unpack_mem(&gz, 0, -1, NULL, &res, &err) == 0, "verify only: %s",
       err ? err->msg : "ok");
    sha256(tar.p, tar.len, want);
    ok(!memcmp(res.diff_id, want, 32) && res.entries == 16 && res.file_bytes == 11 + 2 + 2 + 10 + sizeof(big),
       "verify only: diff_id, entries and file bytes");
    sha256(gz.p, gz.len, want);
    ok(!memcmp(res.digest, want, 32), "verify only: digest");
    ok(rmdir(dir) == 0, "verify only: nothing written");
    ok(fchdir(cwd) == 0, "back to the working directory");
    close(cwd);
    free(tar.p);
    free(gz.p);
}

int main(void)
{
    test_paths();
    test_types();
    test_digests();
    test_whiteouts();
    test_hostile();
    test_replace();
    test_limits();
    test_truncated();
    test_verify();
    return tap_done();
}
