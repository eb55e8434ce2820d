/* kago — OCI images: a local store of verified, shared, read-only layers (docs/images.md). */
#ifndef KAGO_IMAGE_H
#define KAGO_IMAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <kago/error.h>
#include <kago/spec.h>

#define KAGO_DEFAULT_IMAGES "/var/lib/kago/images"

/* The store directory to use: dir when given, else $KAGO_IMAGES, else KAGO_DEFAULT_IMAGES. */
KAGO_EXPORT const char *kago_image_store_dir(const char *dir);

struct kago_import_opts {
    const char *name; /* NAME[:TAG] for the image, replacing what the source names; NULL: the source's */
    int stdin_fd;     /* where "-" reads from */
    bool progress;    /* progress lines on stderr (for a terminal) */
    uint64_t max_layer_bytes; /* uncompressed bytes of one layer; 0 = 64 GiB */
    uint64_t max_entries;     /* entries of one layer; 0 = 4,000,000 */
};

struct kago_import_result {
    char id[65];   /* sha256 of the image config, hex */
    char **names;  /* NULL-terminated */
    size_t layers; /* layers of the image */
    size_t new_layers;
    uint64_t size; /* bytes of file data in its layers */
};

/* Imports SOURCE (oci:DIR[:TAG], oci-archive:FILE[:TAG], docker-archive:FILE; FILE "-" is opts->stdin_fd)
 * into the store: every blob verified, each new layer unpacked once and renamed into place when complete.
 * Returns 0 with *res filled (free it with kago_import_result_free), or < 0 with *err naming the blob and
 * why; nothing of a failed import is left in the store. */
KAGO_EXPORT int kago_image_import(const char *store, const char *source, const struct kago_import_opts *opts,
                                  struct kago_import_result *res, struct kago_error **err);
KAGO_EXPORT void kago_import_result_free(struct kago_import_result *res);

/* One image of the store. kago_image_load resolves REF (NAME[:TAG], a short name, sha256:ID or an id
 * prefix of 4+ hex digits). Returns 0 with *out (free with kago_image_free) or < 0 with *err set. */
struct kago_image;
KAGO_EXPORT int kago_image_load(const char *store, const char *ref, struct kago_image **out,
                                struct kago_error **err);
KAGO_EXPORT void kago_image_free(struct kago_image *img);
KAGO_EXPORT const char *kago_image_id(const struct kago_image *img);
/* The first TCP port of the image's ExposedPorts, or 0. */
KAGO_EXPORT uint16_t kago_image_port(const struct kago_image *img);
/* `kago image inspect`: a JSON document the caller frees. */
KAGO_EXPORT char *kago_image_inspect(const struct kago_image *img);

/* What a front end was given explicitly: it wins over the image's config. */
struct kago_image_overrides {
    char *const *cmd;        /* the command given (replaces Cmd; Entrypoint is kept), or NULL */
    char *const *entrypoint; /* replaces Entrypoint when entrypoint_set ({NULL} or NULL: none) */
    bool entrypoint_set;
    bool user_set;        /* the image's User is not used */
    bool cwd_set;         /* the image's WorkingDir is not used */
    char *const *env_set; /* KEY=VALUE entries given explicitly (NULL-terminated, or NULL) */
};

/* Makes img the spec's root (its layers under one overlay with a writable upper; rootfs NULL) and fills
 * the spec's defaults from its config: Entrypoint + Cmd, Env, WorkingDir, User (a name resolved in the
 * image's /etc/passwd and /etc/group), StopSignal. Returns 0 or < 0 with *err set. */
KAGO_EXPORT int kago_image_apply(const struct kago_image *img, struct kago_spec *spec,
                                 const struct kago_image_overrides *ov, struct kago_error **err);

struct kago_image_info {
    char id[65];
    char *name;        /* "NAME:TAG", or NULL for a nameless image */
    long long created; /* seconds since the epoch, from the config; 0 if unknown */
    uint64_t size;
    size_t layers;
};
/* One entry per name (one for a nameless image), sorted by name. */
KAGO_EXPORT int kago_image_list(const char *store, struct kago_image_info **out, size_t *n,
                                struct kago_error **err);
KAGO_EXPORT void kago_image_list_free(struct kago_image_info *v, size_t n);

/* Removes REF: a name is untagged (the image goes with its last name), an id removes the image. Refused
 * while a container uses the image, unless force. Its layers no other image has are removed unless a
 * container uses them. Returns 0 or < 0 with *err set. */
KAGO_EXPORT int kago_image_rm(const char *store, const char *ref, bool force, struct kago_error **err);

struct kago_prune_result {
    size_t images, layers, partial; /* nameless images, layers, leftovers of interrupted imports */
    uint64_t bytes;
};
/* Removes nameless images and unreferenced layers that no container uses, and what killed imports left. */
KAGO_EXPORT int kago_image_prune(const char *store, struct kago_prune_result *res, struct kago_error **err);

#endif
