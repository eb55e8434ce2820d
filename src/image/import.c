/* kago image import: the transports (oci:, oci-archive:, docker-archive:), one pass over an archive, every
 * blob verified, each new layer unpacked once into tmp/ and renamed into the store when all are good.
 *
 * An archive may come from a pipe and list its blobs in any order, so it is read once, front to back: a
 * blob that looks like a layer (tar, gzip or zstd bytes) is unpacked (or only hashed, when the store has
 * it) into a directory of the import's own as it streams by; anything else (index, manifests, config) is
 * kept in memory. Once the archive ends, the manifest says which blobs are the image's layers and what
 * their digests must be; the layers are renamed into place only when every check passed. */
#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <kago/image.h>

#include "layer.h"
#include "manifest.h"
#include "store.h"

#define SMALL_MAX   (16u << 20) /* a JSON document of an image: larger is refused */
#define KEPT_MAX    (64u << 20) /* all the documents one import keeps in memory (they are KBs) */
#define BUFFER_SIZE (1u << 20)

/* One file of the source: a layer unpacked (or hashed) as it was read, or a small document in memory. */
struct blob {
    char *path; /* in the archive or layout, normalised: "blobs/sha256/HEX", "HEX.tar", "manifest.json" */
    char digest[65];
    char diff_id[65]; /* layers */
    char *dir;        /* layers: the directory under the import's tmp dir, NULL if hashed only */
    uint64_t size, file_bytes;
    char *data; /* documents */
    size_t len;
};

struct import {
    struct kago__store st;
    const struct kago_import_opts *o;
    struct kago__layer_limits lim;
    char *tmp; /* tmp/NAME of this import */
    int tmpfd, tmplock;
    const char *dir;     /* oci: the layout directory */
    int dirfd;           /* ... open (O_PATH): its files are opened beneath it */
    struct blob **blobs; /* each its own allocation: the plan points at some */
    size_t nblobs, ndirs;
    size_t kept;    /* bytes of the documents in memory */
    uint64_t bytes; /* read so far, for progress */
    unsigned long long last_progress;
    size_t layer_no;
};

static void progress(struct import *im, bool done)
{
    if (!im->o->progress)
        return;
    unsigned long long now = kago__now_us();
    if (!done && now - im->last_progress < 100000)
        return;
    im->last_progress = now;
    fprintf(stderr, "\rimporting: %zu layer%s, %.1f MB%s", im->layer_no, im->layer_no == 1 ? "" : "s",
            (double)im->bytes / 1e6, done ? "\n" : "");
}

static struct blob *find_blob(struct import *im, const char *path)
{
    for (size_t i = 0; i < im->nblobs; i++)
        if (!strcmp(im->blobs[i]->path, path))
            return im->blobs[i];
    return NULL;
}

static struct blob *add_blob(struct import *im, const char *path)
{
    struct blob *b = find_blob(im, path);
    if (b) { /* a later entry of the same name wins, as tar extraction would have it */
        if (b->data)
            im->kept -= b->len;
        free(b->data);
        free(b->dir);
        free(b->path);
    } else {
        im->blobs = xrealloc(im->blobs, (im->nblobs + 1) * sizeof *im->blobs);
        b = im->blobs[im->nblobs++] = xmalloc(sizeof *b);
    }
    *b = (struct blob){.path = xstrdup(path)};
    return b;
}

/* Readers the layer unpacker pulls from. */
struct src {
    struct import *im;
    struct archive *a; /* an archive entry's data, or */
    int fd;            /* a file, or */
    const char *mem;   /* memory (and the peeked head of an archive entry) */
    size_t mem_len, mem_off;
    const char *what;
};

static ssize_t src_read(void *ctx, void *buf, size_t len, struct kago_error **err)
{
    struct src *s = ctx;
    ssize_t n;
    if (s->mem_off < s->mem_len) {
        n = (ssize_t)(len < s->mem_len - s->mem_off ? len : s->mem_len - s->mem_off);
        memcpy(buf, s->mem + s->mem_off, (size_t)n);
        s->mem_off += (size_t)n;
    } else if (s->a) {
        n = archive_read_data(s->a, buf, len);
        if (n < 0)
            return kago_error_set(err, 0, "%s: %s", s->what, archive_error_string(s->a));
    } else if (s->fd >= 0) {
        while ((n = read(s->fd, buf, len)) < 0 && errno == EINTR)
            ;
        if (n < 0)
            return kago_error_set(err, errno, "read %s", s->what);
    } else
        n = 0;
    s->im->bytes += (uint64_t)n;
    progress(s->im, false);
    return n;
}

/* A layer blob starts as a tar (ustar magic at 257), gzip or zstd stream. */
static bool looks_like_layer(const unsigned char *p, size_t n)
{
    return (n >= 2 && p[0] == 0x1f && p[1] == 0x8b) ||
           (n >= 4 && p[0] == 0x28 && p[1] == 0xb5 && p[2] == 0x2f && p[3] == 0xfd) ||
           (n >= 262 && !memcmp(p + 257, "ustar", 5));
}

/* The diff_id a blob would unpack to, when the store knows it already: a blob digest seen before
 * (digests/HEX), or a docker-archive "HEX.tar" / "HEX/layer.tar" whose HEX is a layer in the store. */
static bool known_layer(struct import *im, const char *path, char out[65])
{
    const char *hex = NULL;
    if (!strncmp(path, "blobs/sha256/", 13) && kago__digest_hex(path + 6, &hex)) {
        cleanup_free char *link = xasprintf("digests/%s", hex);
        ssize_t n = readlinkat(im->st.dirfd, link, out, 64);
        if (n != 64)
            return false;
        out[64] = '\0';
    } else {
        size_t n = strlen(path);
        if (n < 68 || strspn(path, "0123456789abcdef") != 64 ||
            (strcmp(path + 64, ".tar") && strcmp(path + 64, "/layer.tar")))
            return false;
        snprintf(out, 65, "%.64s", path);
    }
    cleanup_free char *dir = xasprintf("layers/%s", out);
    return faccessat(im->st.dirfd, dir, F_OK, AT_SYMLINK_NOFOLLOW) == 0;
}

/* Unpacks (or, when the store has it, hashes) one layer blob read through s into a new directory. */
static int unpack_blob(struct import *im, struct blob *b, struct src *s, bool known, struct kago_error **err)
{
    cleanup_close int dfd = -1;
    if (!known) {
        b->dir = xasprintf("b%zu", im->ndirs++);
        if (mkdirat(im->tmpfd, b->dir, 0755) < 0 ||
            (dfd = openat(im->tmpfd, b->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
            return kago_error_set(err, errno, "mkdir %s/tmp/%s/%s", im->st.dir, im->tmp, b->dir);
    }
    struct kago__layer_result r;
    im->layer_no++;
    if (kago__layer_unpack(src_read, s, dfd, &im->lim, &r, err) < 0)
        return kago_error_prefix(err, "blob %s", b->path), -1;
    kago__hex(r.digest, b->digest);
    kago__hex(r.diff_id, b->diff_id);
    b->size = r.blob_size;
    b->file_bytes = r.file_bytes;
    return 0;
}

/* Reads an archive entry's (or a file's) remaining data into memory: at most SMALL_MAX bytes, and KEPT_MAX
 * for all the documents of the import (an archive may hold 100,000 entries that are not layers). */
static int slurp(struct import *im, struct blob *b, struct src *s, struct kago_error **err)
{
    size_t cap = s->mem_len + 4096;
    b->data = xmalloc(cap);
    if (s->mem_len)
        memcpy(b->data, s->mem, s->mem_len);
    b->len = s->mem_len;
    s->mem_off = s->mem_len;
    for (;;) {
        if (b->len > SMALL_MAX)
            return kago_error_set(err, EFBIG, "blob %s: a document larger than %u MiB", b->path,
                                  SMALL_MAX >> 20);
        if (im->kept + b->len > KEPT_MAX)
            return kago_error_set(err, 0, "blob %s: more than %u MiB of documents (not layers) in all",
                                  b->path, KEPT_MAX >> 20);
        if (b->len == cap) /* one byte beyond SMALL_MAX tells a document too large */
            b->data = xrealloc(b->data, cap = cap * 2 < SMALL_MAX + 1 ? cap * 2 : SMALL_MAX + 1);
        ssize_t n = src_read(s, b->data + b->len, cap - b->len, err);
        if (n < 0)
            return -1;
        if (n == 0)
            break;
        b->len += (size_t)n;
    }
    im->kept += b->len;
    b->size = b->len;
    kago__sha256_hex(b->data, b->len, b->digest);
    return 0;
}

/* One regular file of an archive: peek at its head, then unpack it as a layer or keep it. */
static int archive_entry_take(struct import *im, struct archive *a, const char *path, struct kago_error **err)
{
    unsigned char head[512];
    size_t n = 0;
    while (n < sizeof head) {
        la_ssize_t r = archive_read_data(a, head + n, sizeof head - n);
        if (r < 0)
            return kago_error_set(err, 0, "archive entry %s: %s", path, archive_error_string(a));
        if (r == 0)
            break;
        n += (size_t)r;
    }
    struct blob *b = add_blob(im, path);
    struct src s = {.im = im, .a = a, .fd = -1, .mem = (const char *)head, .mem_len = n, .what = b->path};
    if (!looks_like_layer(head, n))
        return slurp(im, b, &s, err);
    char known[65];
    bool have = known_layer(im, path, known);
    return unpack_blob(im, b, &s, have, err);
}

static char *normalize_path(const char *p)
{
    while (!strncmp(p, "./", 2))
        p += 2;
    while (*p == '/')
        p++;
    return xstrdup(p);
}

/* Reads a whole archive (oci-archive or docker-archive) from fd, front to back. */
static int read_archive(struct import *im, int fd, const char *what, struct kago_error **err)
{
    struct archive *a = archive_read_new();
    archive_read_support_filter_none(a);
    archive_read_support_filter_gzip(a);
    archive_read_support_format_tar(a);
    int ret = -1;
    if (archive_read_open_fd(a, fd, BUFFER_SIZE) != ARCHIVE_OK) {
        struct stat st;
        if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size == 0)
            kago_error_set(err, 0, "%s: an empty file", what);
        else
            kago_error_set(err, 0, "%s: %s", what, archive_error_string(a));
        goto out;
    }
    struct archive_entry *e;
    size_t entries = 0;
    for (;;) {
        int r = archive_read_next_header(a, &e);
        if (r == ARCHIVE_EOF)
            break;
        if (r != ARCHIVE_OK && r != ARCHIVE_WARN) {
            kago_error_set(err, 0, "%s: %s", what, archive_error_string(a));
            goto out;
        }
        if (++entries > 100000) {
            kago_error_set(err, 0, "%s: more than 100000 entries", what);
            goto out;
        }
        if (archive_entry_filetype(e) != AE_IFREG)
            continue;
        cleanup_free char *path = normalize_path(archive_entry_pathname(e));
        if (archive_entry_take(im, a, path, err) < 0) {
            kago_error_prefix(err, "%s", what);
            goto out;
        }
    }
    ret = 0;
out:
    archive_read_free(a);
    return ret;
}

/* A file of the oci: layout, opened beneath it (a symlink may lead anywhere inside it, not out) and only if
 * it is a regular file: a FIFO would block the import, a device would be opened on the host. what names it
 * in errors ("blob", "layer blob"). Returns the descriptor or -1 with *err set. */
static int layout_open(struct import *im, const char *path, const char *what, struct kago_error **err)
{
    struct stat st;
    int fd = kago__open_regular(im->dirfd, path, 0, RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS, &st);
    if (fd >= 0)
        return fd;
    if (st.st_mode && !S_ISREG(st.st_mode))
        return kago_error_set(err, 0, "%s %s/%s: %s, not a regular file", what, im->dir, path,
                              kago__file_kind(st.st_mode));
    if (errno == EXDEV)
        return kago_error_set(err, 0, "%s %s/%s: leads outside the layout", what, im->dir, path);
    return kago_error_set(err, errno, "%s %s/%s", what, im->dir, path);
}

/* A document of the source by path: from memory (archives) or from the layout directory (oci:). */
static struct blob *document(struct import *im, const char *path, struct kago_error **err)
{
    struct blob *b = find_blob(im, path);
    if (b && b->data)
        return b;
    if (b || !im->dir)
        return kago_error_set(err, 0,
                              b ? "blob %s: not a JSON document" : "blob %s: missing from the archive", path),
               NULL;
    cleanup_free char *full = xasprintf("%s/%s", im->dir, path);
    cleanup_close int fd = layout_open(im, path, "blob", err);
    if (fd < 0)
        return NULL;
    b = add_blob(im, path);
    struct src s = {.im = im, .fd = fd, .what = full};
    return slurp(im, b, &s, err) < 0 ? NULL : b;
}

/* The blob of descriptor d, read and checked against its digest and size. */
static struct blob *document_desc(struct import *im, const struct kago__desc *d, const char *what,
                                  struct kago_error **err)
{
    cleanup_free char *path = xasprintf("blobs/sha256/%s", d->hex);
    struct blob *b = document(im, path, err);
    if (!b)
        return kago_error_prefix(err, "%s", what), NULL;
    if (strcmp(b->digest, d->hex))
        return kago_error_set(err, 0,
                              "%s blob sha256:%.12s: digest mismatch (its content hashes to sha256:%.12s)",
                              what, d->hex, b->digest),
               NULL;
    if ((int64_t)b->size != d->size)
        return kago_error_set(err, 0, "%s blob sha256:%.12s: size %llu, the manifest says %lld", what, d->hex,
                              (unsigned long long)b->size, (long long)d->size),
               NULL;
    return b;
}

/* What the manifest says the image is. */
struct plan {
    struct blob *config, *manifest;
    struct kago__image_config cfg;
    size_t nlayers;
    char **paths;       /* each layer's blob in the source */
    char **digests;     /* the digest each must have (hex), or NULL where the source gives none */
    int64_t *sizes;     /* -1 where unknown */
    uint64_t *bytes;    /* each layer's size in the store, once committed */
    char **media_types; /* NULL where the source gives none */
    char *ref_name;     /* oci: the index entry's ref.name */
    char **repo_tags;   /* docker-archive */
};

static void plan_free(struct plan *p)
{
    for (size_t i = 0; i < p->nlayers; i++) {
        free(p->paths[i]);
        free(p->digests[i]);
        free(p->media_types[i]);
    }
    free(p->paths);
    free(p->digests);
    free(p->sizes);
    free(p->bytes);
    free(p->media_types);
    free(p->ref_name);
    for (size_t i = 0; p->repo_tags && p->repo_tags[i]; i++)
        free(p->repo_tags[i]);
    free(p->repo_tags);
    kago__image_config_free(&p->cfg);
}

static void plan_layers(struct plan *p, size_t n)
{
    p->nlayers = n;
    p->paths = xcalloc(n, sizeof *p->paths);
    p->digests = xcalloc(n, sizeof *p->digests);
    p->sizes = xcalloc(n, sizeof *p->sizes);
    p->bytes = xcalloc(n, sizeof *p->bytes);
    p->media_types = xcalloc(n, sizeof *p->media_types);
}

static int plan_config(struct plan *p, struct kago_error **err)
{
    if (kago__config_parse(p->config->data, p->config->len, &p->cfg, err) < 0)
        return kago_error_prefix(err, "config blob sha256:%.12s", p->config->digest), -1;
    if (p->cfg.ndiff_ids != p->nlayers)
        return kago_error_set(err, 0, "config blob sha256:%.12s: %zu diff_ids for %zu layers",
                              p->config->digest, p->cfg.ndiff_ids, p->nlayers);
    return 0;
}

/* oci: and oci-archive: index.json → (nested indexes →) manifest → config. */
static int plan_oci(struct import *im, const char *tag, struct plan *p, struct kago_error **err)
{
    struct blob *b = document(im, "index.json", err);
    if (!b)
        return -1;
    struct kago__desc d = {0};
    bool is_index = false;
    if (kago__index_pick(b->data, b->len, tag, &d, &is_index, &p->ref_name, err) < 0)
        return kago_error_prefix(err, "index.json"), -1;
    for (int depth = 0; is_index; depth++) {
        b = depth < 4 ? document_desc(im, &d, "index", err) : NULL;
        kago__desc_free(&d);
        if (depth >= 4)
            return kago_error_set(err, 0, "index.json: indexes nested too deep");
        cleanup_free char *ignored = NULL;
        if (!b || kago__index_pick(b->data, b->len, NULL, &d, &is_index, &ignored, err) < 0)
            return kago_error_prefix(err, "index blob"), -1;
    }
    p->manifest = document_desc(im, &d, "manifest", err);
    kago__desc_free(&d);
    if (!p->manifest)
        return -1;
    struct kago__manifest m;
    if (kago__manifest_parse(p->manifest->data, p->manifest->len, &m, err) < 0)
        return kago_error_prefix(err, "manifest blob sha256:%.12s", p->manifest->digest), -1;
    plan_layers(p, m.nlayers);
    for (size_t i = 0; i < m.nlayers; i++) {
        p->paths[i] = xasprintf("blobs/sha256/%s", m.layers[i].hex);
        p->digests[i] = xstrdup(m.layers[i].hex);
        p->sizes[i] = m.layers[i].size;
        p->media_types[i] = xstrdup(m.layers[i].media_type ? m.layers[i].media_type : "(none)");
    }
    p->config = document_desc(im, &m.config, "config", err);
    kago__manifest_free(&m);
    return p->config ? plan_config(p, err) : -1;
}

/* The hex digest a docker-archive path names ("HEX.json", "HEX.tar", "blobs/sha256/HEX"), or NULL. */
static char *path_digest(const char *path)
{
    const char *base = strncmp(path, "blobs/sha256/", 13) ? path : path + 13;
    size_t n = strlen(base);
    if (n < 64 || strspn(base, "0123456789abcdef") != 64 ||
        (n != 64 && strcmp(base + 64, ".json") && strcmp(base + 64, ".tar")))
        return NULL;
    return xasprintf("%.64s", base);
}

static int plan_docker(struct import *im, struct plan *p, struct kago_error **err)
{
    struct blob *b = document(im, "manifest.json", err);
    if (!b)
        return -1;
    struct kago__docker_manifest m;
    if (kago__docker_manifest_parse(b->data, b->len, &m, err) < 0)
        return -1;
    plan_layers(p, m.nlayers);
    for (size_t i = 0; i < m.nlayers; i++) {
        p->paths[i] = normalize_path(m.layers[i]);
        p->digests[i] = !strncmp(p->paths[i], "blobs/", 6) ? path_digest(p->paths[i]) : NULL;
        p->sizes[i] = -1;
    }
    p->repo_tags = steal_ptr(m.repo_tags);
    cleanup_free char *cpath = normalize_path(m.config);
    kago__docker_manifest_free(&m);
    p->config = document(im, cpath, err);
    if (!p->config)
        return kago_error_prefix(err, "manifest.json: config"), -1;
    cleanup_free char *want = path_digest(cpath);
    if (want && strcmp(want, p->config->digest))
        return kago_error_set(err, 0, "config blob %s: digest mismatch (its content hashes to sha256:%.12s)",
                              cpath, p->config->digest);
    return plan_config(p, err);
}

static bool have_layer(struct import *im, const char *hex)
{
    cleanup_free char *dir = xasprintf("layers/%s", hex);
    return faccessat(im->st.dirfd, dir, F_OK, AT_SYMLINK_NOFOLLOW) == 0;
}

/* oci: a layer read from the layout, under its own lock so that two imports of images that share it do
 * not both unpack it. *lock keeps the lock until the layer is in place. */
static int layer_from_dir(struct import *im, const struct plan *p, size_t i, int *lock, struct blob **out,
                          struct kago_error **err)
{
    *out = NULL;
    cleanup_free char *lk = xasprintf("locks/%s", p->cfg.diff_ids[i]);
    *lock = openat(im->st.dirfd, lk, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (*lock < 0 || flock(*lock, LOCK_EX) < 0)
        return kago_error_set(err, errno, "image store %s: %s", im->st.dir, lk);
    if (have_layer(im, p->cfg.diff_ids[i]))
        return 0; /* another import put it there meanwhile */
    cleanup_free char *full = xasprintf("%s/%s", im->dir, p->paths[i]);
    cleanup_close int fd = layout_open(im, p->paths[i], "layer blob", err);
    if (fd < 0)
        return -1;
    *out = add_blob(im, p->paths[i]);
    struct src s = {.im = im, .fd = fd, .what = full};
    return unpack_blob(im, *out, &s, false, err);
}

static char *layer_name(const struct plan *p, size_t i)
{
    return p->digests[i] ? xasprintf("sha256:%.12s", p->digests[i]) : xstrdup(p->paths[i]);
}

/* A layer blob read against what the manifest says of it. */
static int check_layer_blob(const struct blob *b, const struct plan *p, size_t i, struct kago_error **err)
{
    cleanup_free char *name = layer_name(p, i);
    if (p->digests[i] && strcmp(b->digest, p->digests[i]))
        return kago_error_set(err, 0, "layer blob %s: digest mismatch (its content hashes to sha256:%.12s)",
                              name, b->digest);
    if (p->sizes[i] >= 0 && (int64_t)b->size != p->sizes[i])
        return kago_error_set(err, 0, "layer blob %s: size %llu, the manifest says %lld", name,
                              (unsigned long long)b->size, (long long)p->sizes[i]);
    return 0;
}

/* A layer blob read against what the manifest and the config say of it. */
static int check_layer(const struct blob *b, const struct plan *p, size_t i, struct kago_error **err)
{
    cleanup_free char *name = layer_name(p, i);
    if (check_layer_blob(b, p, i, err) < 0)
        return -1;
    if (strcmp(b->diff_id, p->cfg.diff_ids[i]))
        return kago_error_set(
            err, 0, "layer blob %s: uncompressed digest sha256:%.12s, the config's diff_id is sha256:%.12s",
            name, b->diff_id, p->cfg.diff_ids[i]);
    return 0;
}

/* The sha256 and size of what fd reads, into b. Returns 0 or -1 with *err set. */
static int hash_file(struct import *im, struct blob *b, int fd, const char *what, struct kago_error **err)
{
    struct src s = {.im = im, .fd = fd, .what = what};
    cleanup_free unsigned char *buf = xmalloc(BUFFER_SIZE);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    unsigned char d[32];
    ssize_t n = -1;
    if (!md || !EVP_DigestInit_ex(md, EVP_sha256(), NULL)) {
        EVP_MD_CTX_free(md);
        return kago_error_set(err, 0, "sha256: OpenSSL failed to initialise");
    }
    b->size = 0;
    while ((n = src_read(&s, buf, BUFFER_SIZE, err)) > 0) {
        EVP_DigestUpdate(md, buf, (size_t)n);
        b->size += (uint64_t)n;
    }
    bool ok = n == 0 && EVP_DigestFinal_ex(md, d, NULL);
    EVP_MD_CTX_free(md);
    if (n < 0)
        return -1;
    if (!ok)
        return kago_error_set(err, 0, "sha256: OpenSSL failed");
    kago__hex(d, b->digest);
    return 0;
}

/* oci: a layer the store has already. The store is shared: knowing a layer's diff_id must not be enough
 * to get it, so the layout must hold the blob the manifest names. The blob is hashed; one the store has
 * unpacked to this diff_id before (digests/HEX) is proven so, any other is decompressed and hashed
 * (nothing written) and must unpack to it. Returns 0 or -1 with *err set. */
static int prove_layer(struct import *im, const struct plan *p, size_t i, struct kago_error **err)
{
    cleanup_close int fd = layout_open(im, p->paths[i], "layer blob", err);
    if (fd < 0)
        return -1;
    struct blob *b = add_blob(im, p->paths[i]);
    cleanup_free char *full = xasprintf("%s/%s", im->dir, p->paths[i]);
    if (hash_file(im, b, fd, full, err) < 0)
        return -1;
    char known[65];
    if (p->digests[i] && !strcmp(b->digest, p->digests[i]) && known_layer(im, p->paths[i], known) &&
        !strcmp(known, p->cfg.diff_ids[i])) {
        memcpy(b->diff_id, known, sizeof known);
        return check_layer(b, p, i, err);
    }
    if (check_layer_blob(b, p, i, err) < 0)
        return -1;
    if (lseek(fd, 0, SEEK_SET) < 0)
        return kago_error_set(err, errno, "layer blob %s: seek", full);
    struct src s = {.im = im, .fd = fd, .what = full};
    return unpack_blob(im, b, &s, true, err) < 0 ? -1 : check_layer(b, p, i, err);
}

/* Each layer of the plan unpacked (or in the store already) and checked against the manifest and config. */
static int get_layers(struct import *im, const struct plan *p, int *locks, struct kago_error **err)
{
    for (size_t i = 0; i < p->nlayers; i++) {
        const char *diff = p->cfg.diff_ids[i], *mt = p->media_types[i];
        if (mt && !kago__layer_media_type_ok(mt))
            return kago_error_set(err, 0, "layer blob sha256:%.12s: unsupported media type %s", p->digests[i],
                                  mt);
        struct blob *b = find_blob(im, p->paths[i]);
        if (!b && im->dir) {
            if (!have_layer(im, diff) && layer_from_dir(im, p, i, &locks[i], &b, err) < 0)
                return -1;
            if (!b) { /* the store has it: the layout must have its blob all the same */
                if (prove_layer(im, p, i, err) < 0)
                    return -1;
                continue;
            }
        }
        if (!b)
            return kago_error_set(err, 0, "layer blob %s: missing from the archive", p->paths[i]);
        if (b->data) { /* a small layer kept in memory while it was unknown */
            struct src s = {.im = im, .fd = -1, .mem = b->data, .mem_len = b->len, .what = b->path};
            cleanup_free char *data __attribute__((unused)) = steal_ptr(b->data);
            if (unpack_blob(im, b, &s, have_layer(im, diff), err) < 0)
                return -1;
        }
        if (check_layer(b, p, i, err) < 0)
            return -1;
    }
    return 0;
}

static int write_at(int dirfd, const char *name, const char *data, size_t len, struct kago_error **err)
{
    cleanup_close int fd = openat(dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0 || write(fd, data, len) != (ssize_t)len)
        return kago_error_set(err, errno, "write %s", name);
    return 0;
}

/* Renames each new layer into place; records its size and the blob digest it came from. */
static int commit_layers(struct import *im, struct plan *p, struct kago_import_result *res,
                         struct kago_error **err)
{
    for (size_t i = 0; i < p->nlayers; i++) {
        const char *diff = p->cfg.diff_ids[i];
        struct blob *b = find_blob(im, p->paths[i]);
        cleanup_free char *dst = xasprintf("layers/%s", diff);
        if (b && b->dir && !have_layer(im, diff)) {
            cleanup_free char *meta = xasprintf("layers/%s.json", diff);
            cleanup_free char *size = xasprintf("{\"size\": %llu}\n", (unsigned long long)b->file_bytes);
            unlinkat(im->st.dirfd, meta, 0);
            if (write_at(im->st.dirfd, meta, size, strlen(size), err) < 0)
                return -1;
            if (renameat(im->tmpfd, b->dir, im->st.dirfd, dst) == 0)
                res->new_layers++;
            else if (errno != EEXIST && errno != ENOTEMPTY)
                return kago_error_set(err, errno, "image store %s: rename a layer into %s", im->st.dir, dst);
        }
        if (b && b->digest[0]) {
            cleanup_free char *link = xasprintf("digests/%s", b->digest);
            symlinkat(diff, im->st.dirfd, link); /* EEXIST: known already */
        }
        p->bytes[i] = kago__layer_size(&im->st, diff);
        res->size += p->bytes[i];
    }
    return 0;
}

/* images/ID/: config.json, manifest.json and image.json, made in tmp/ and renamed into place. */
static int commit_image(struct import *im, const struct plan *p, struct kago_error **err)
{
    const char *id = p->config->digest;
    if (mkdirat(im->tmpfd, "image", 0700) < 0)
        return kago_error_set(err, errno, "mkdir %s/tmp/%s/image", im->st.dir, im->tmp);
    json_object *rec = json_object_new_object(), *layers = json_object_new_array();
    for (size_t i = 0; i < p->nlayers; i++) {
        struct blob *b = find_blob(im, p->paths[i]);
        json_object *l = json_object_new_object();
        json_object_object_add(l, "diff_id", json_object_new_string(p->cfg.diff_ids[i]));
        if (b && b->digest[0])
            json_object_object_add(l, "digest", json_object_new_string(b->digest));
        if (p->media_types[i])
            json_object_object_add(l, "media_type", json_object_new_string(p->media_types[i]));
        json_object_object_add(l, "size", json_object_new_int64((int64_t)p->bytes[i]));
        json_object_array_add(layers, l);
    }
    json_object_object_add(rec, "layers", layers);
    const char *text =
        json_object_to_json_string_ext(rec, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE);
    int fd = openat(im->tmpfd, "image", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int r = fd < 0 ? kago_error_set(err, errno, "open image record") : 0;
    if (r == 0)
        r = write_at(fd, "config.json", p->config->data, p->config->len, err);
    if (r == 0 && p->manifest)
        r = write_at(fd, "manifest.json", p->manifest->data, p->manifest->len, err);
    if (r == 0)
        r = write_at(fd, "image.json", text, strlen(text), err);
    json_object_put(rec);
    if (fd >= 0)
        close(fd);
    cleanup_free char *dst = xasprintf("images/%s", id);
    if (r == 0 && renameat(im->tmpfd, "image", im->st.dirfd, dst) < 0 && errno != EEXIST &&
        errno != ENOTEMPTY)
        r = kago_error_set(err, errno, "image store %s: rename into %s", im->st.dir, dst);
    return r;
}

/* The names an import gives: --name, else the source's. */
static char **import_names(const struct kago_import_opts *o, const struct plan *p, const char *file,
                           const char *tag)
{
    char **v = xcalloc(2, sizeof *v);
    if (o->name) {
        v[0] = kago__ref_normalize(o->name);
        return v;
    }
    if (p->repo_tags) {
        size_t n = 0;
        while (p->repo_tags[n])
            n++;
        v = xrealloc(v, (n + 1) * sizeof *v);
        for (size_t i = 0; i < n; i++)
            v[i] = kago__ref_normalize(p->repo_tags[i]);
        v[n] = NULL;
        return v;
    }
    const char *t = tag ? tag : p->ref_name;
    if (t && (strchr(t, '/') || strchr(t, ':'))) { /* a ref.name that is a whole reference */
        v[0] = kago__ref_normalize(t);
        return v;
    }
    if (!file || !strcmp(file, "-"))
        return v; /* nameless: known by its id */
    cleanup_free char *f = xstrdup(file);
    size_t n = strlen(f);
    while (n > 1 && f[n - 1] == '/')
        f[--n] = '\0';
    const char *base = strrchr(f, '/') ? strrchr(f, '/') + 1 : f;
    static const char *const exts[] = {".tar.gz", ".tgz", ".tar", NULL};
    size_t len = strlen(base);
    for (size_t i = 0; exts[i]; i++) {
        size_t e = strlen(exts[i]);
        if (len > e && !strcmp(base + len - e, exts[i])) {
            len -= e;
            break;
        }
    }
    v[0] = xasprintf("%.*s:%s", (int)len, base, t ? t : "latest");
    return v;
}

/* SOURCE → transport, path and tag. */
enum transport { T_OCI, T_OCI_ARCHIVE, T_DOCKER_ARCHIVE };

static int parse_source(const char *source, enum transport *t, char **path, char **tag,
                        struct kago_error **err)
{
    static const struct {
        const char *prefix;
        enum transport t;
    } ts[] = {{"oci:", T_OCI}, {"oci-archive:", T_OCI_ARCHIVE}, {"docker-archive:", T_DOCKER_ARCHIVE}};
    for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) {
        size_t n = strlen(ts[i].prefix);
        if (strncmp(source, ts[i].prefix, n))
            continue;
        *t = ts[i].t;
        *path = xstrdup(source + n);
        *tag = NULL;
        char *slash = strrchr(*path, '/'), *colon = strrchr(slash ? slash : *path, ':');
        if (colon && *t != T_DOCKER_ARCHIVE) {
            *colon = '\0';
            *tag = xstrdup(colon + 1);
        }
        if (!**path || (*tag && !**tag)) {
            free(*path);
            free(*tag);
            return kago_error_set(err, 0, "source %s: no path or an empty tag", source);
        }
        return 0;
    }
    return kago_error_set(err, 0,
                          "source %s: unknown transport (use oci:DIR[:TAG], oci-archive:FILE[:TAG] or "
                          "docker-archive:FILE)",
                          source);
}

static int open_input(const char *path, const struct kago_import_opts *o, struct kago_error **err)
{
    if (!strcmp(path, "-"))
        return dup(o->stdin_fd);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return kago_error_set(err, errno, "%s", path);
    return fd;
}

static void import_free(struct import *im, int *locks, size_t nlocks)
{
    for (size_t i = 0; locks && i < nlocks; i++)
        if (locks[i] >= 0)
            close(locks[i]);
    free(locks);
    for (size_t i = 0; i < im->nblobs; i++) {
        free(im->blobs[i]->path);
        free(im->blobs[i]->dir);
        free(im->blobs[i]->data);
        free(im->blobs[i]);
    }
    free(im->blobs);
    if (im->tmp) {
        cleanup_free char *path = xasprintf("%s/tmp/%s", im->st.dir, im->tmp);
        cleanup_free char *lock = xasprintf("tmp/%s.lock", im->tmp);
        kago__rm_rf(path);
        unlinkat(im->st.dirfd, lock, 0);
        free(im->tmp);
    }
    if (im->tmpfd >= 0)
        close(im->tmpfd);
    if (im->tmplock >= 0)
        close(im->tmplock);
    if (im->dirfd >= 0)
        close(im->dirfd);
    kago__store_close(&im->st);
}

static int import_source(struct import *im, enum transport t, const char *path, const char *tag,
                         struct plan *p, struct kago_error **err)
{
    if (t == T_OCI) {
        im->dir = path;
        im->dirfd = open(path, O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (im->dirfd < 0)
            return kago_error_set(err, errno, "%s", path);
        return plan_oci(im, tag, p, err);
    }
    cleanup_close int fd = open_input(path, im->o, err);
    if (fd < 0)
        return -1;
    if (read_archive(im, fd, strcmp(path, "-") ? path : "standard input", err) < 0)
        return -1;
    return t == T_OCI_ARCHIVE ? plan_oci(im, tag, p, err) : plan_docker(im, p, err);
}

int kago_image_import(const char *store, const char *source, const struct kago_import_opts *opts,
                      struct kago_import_result *res, struct kago_error **err)
{
    *res = (struct kago_import_result){0};
    enum transport t = T_OCI;
    cleanup_free char *path = NULL, *tag = NULL, *tmpdir = NULL;
    if (parse_source(source, &t, &path, &tag, err) < 0)
        return -1;
    struct import im = {.o = opts,
                        .tmpfd = -1,
                        .tmplock = -1,
                        .dirfd = -1,
                        .lim = {.max_bytes = opts->max_layer_bytes, .max_entries = opts->max_entries}};
    struct plan p = {0};
    int *locks = NULL;
    int ret = -1;
    if (kago__store_open(store, true, LOCK_SH, &im.st, err) < 0)
        return -1;
    kago__store_clean_tmp(&im.st);
    im.tmp = kago__store_tmpdir(&im.st, "import", &im.tmplock, err);
    if (!im.tmp)
        goto out;
    tmpdir = xasprintf("tmp/%s", im.tmp);
    im.tmpfd = openat(im.st.dirfd, tmpdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (im.tmpfd < 0) {
        kago_error_set(err, errno, "open %s/%s", store, tmpdir);
        goto out;
    }
    if (import_source(&im, t, path, tag, &p, err) < 0)
        goto out;
    locks = xmalloc((p.nlayers + 1) * sizeof *locks);
    for (size_t i = 0; i < p.nlayers; i++)
        locks[i] = -1;
    if (get_layers(&im, &p, locks, err) < 0 || commit_layers(&im, &p, res, err) < 0 ||
        commit_image(&im, &p, err) < 0)
        goto out;
    res->names = import_names(opts, &p, path, tag);
    if (res->names[0] && kago__refs_set(&im.st, p.config->digest, res->names, false, err) < 0)
        goto out;
    memcpy(res->id, p.config->digest, 65);
    res->layers = p.nlayers;
    progress(&im, true);
    ret = 0;
out:
    if (ret < 0 && opts->progress && im.last_progress)
        fputc('\n', stderr);
    import_free(&im, locks, p.nlayers);
    plan_free(&p);
    if (ret < 0) {
        kago_import_result_free(res);
        kago_error_prefix(err, "import %s", source);
    }
    return ret;
}

void kago_import_result_free(struct kago_import_result *res)
{
    for (size_t i = 0; res->names && res->names[i]; i++)
        free(res->names[i]);
    free(res->names);
    res->names = NULL;
}
