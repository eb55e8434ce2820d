/* kago — one image layer: a tar stream (plain, gzip or zstd) unpacked into a directory, safely.
 *
 * Layers are untrusted input. The unpacker hashes the bytes it reads (the blob digest) and the tar bytes
 * after decompression (the diff_id), writes every entry strictly below the layer directory, and turns
 * OCI whiteouts into overlayfs ones, so that the directory can be an overlay lower layer as it is. */
#ifndef KAGO_IMAGE_LAYER_H
#define KAGO_IMAGE_LAYER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <kago/error.h>

/* Bounds on one layer; 0 in a field means the default below. */
struct kago__layer_limits {
    uint64_t max_bytes;   /* uncompressed tar bytes, and the sum of its files' sizes; default 64 GiB */
    uint64_t max_entries; /* tar entries; default 4,000,000 */
};
#define KAGO_LAYER_MAX_BYTES   (64ULL << 30)
#define KAGO_LAYER_MAX_ENTRIES 4000000ULL

/* Reads up to len bytes of the (possibly compressed) layer blob into buf. Returns the number of bytes read,
 * 0 at the end of the blob, or < 0 on failure with *err set (the unpacker then fails with that error). */
typedef ssize_t (*kago__layer_read_fn)(void *ctx, void *buf, size_t len, struct kago_error **err);

struct kago__layer_result {
    unsigned char digest[32];  /* sha256 of the blob as read */
    unsigned char diff_id[32]; /* sha256 of the uncompressed tar */
    uint64_t blob_size;        /* bytes read */
    uint64_t tar_size;         /* uncompressed tar bytes */
    uint64_t entries;
    uint64_t file_bytes; /* its regular files' sizes, a sparse one's whole (the layer's size, roughly) */
};

/* Reads a whole layer blob through read(ctx) and unpacks it into the directory dirfd (which should be
 * empty). dirfd < 0: reads and hashes it only (the layer is in the store already), still checking that it
 * is a well-formed tar. Compression (none, gzip, zstd) is detected from the bytes. Returns 0 with *res
 * filled, or < 0 with *err naming the entry and why ("entry ../x: path leaves the layer"); on failure the
 * directory may hold a part of the layer: the caller removes it. */
int kago__layer_unpack(kago__layer_read_fn read, void *ctx, int dirfd, const struct kago__layer_limits *lim,
                       struct kago__layer_result *res, struct kago_error **err);

/* The pure path check every entry name and hard-link target goes through. Normalises name (drops "./"
 * components, repeated and trailing slashes) into out (size outlen). Returns 0, or -1 with *why set to a
 * static reason: empty name, absolute path, a ".." component, too long. "." alone (the layer's root) gives
 * out = "". */
int kago__layer_path(const char *name, char *out, size_t outlen, const char **why);

/* The hex form of a 32-byte digest into out (65 bytes). */
void kago__hex(const unsigned char d[32], char out[65]);

#endif
