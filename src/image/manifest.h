/* kago — the JSON documents of an image (OCI index, manifest, config; docker-archive's manifest.json),
 * read into plain structs. Pure: no I/O. Every document is untrusted input and bounded by its caller. */
#ifndef KAGO_IMAGE_MANIFEST_H
#define KAGO_IMAGE_MANIFEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <kago/error.h>

#include "util.h"

/* A content descriptor: what a blob is, its sha256 (hex) and size. */
struct kago__desc {
    char *media_type;
    char hex[65];
    int64_t size;
};

struct kago__manifest {
    struct kago__desc config;
    struct kago__desc *layers;
    size_t nlayers;
};

/* docker-archive's manifest.json (its first image). */
struct kago__docker_manifest {
    char *config;  /* path in the archive */
    char **layers; /* paths, NULL-terminated */
    size_t nlayers;
    char **repo_tags; /* NULL-terminated */
};

/* What an image config gives a container. */
struct kago__image_config {
    char **diff_ids; /* hex, NULL-terminated */
    size_t ndiff_ids;
    char **env, **entrypoint, **cmd; /* NULL when absent */
    char *working_dir, *user, *stop_signal;
    uint16_t port; /* first tcp ExposedPorts, 0 if none */
    long long created;
};

/* index.json or an image index: the manifest to import. A tag picks the entry whose
 * org.opencontainers.image.ref.name is it; without one the only entry is taken, else the linux/amd64 one.
 * *is_index is set when the pick is itself an index (the caller reads it and picks again). *ref_name gets
 * the picked entry's ref.name (or NULL). Returns 0 or < 0 with *err set. */
int kago__index_pick(const char *json, size_t len, const char *tag, struct kago__desc *out, bool *is_index,
                     char **ref_name, struct kago_error **err) KAGO_INTERNAL;
/* An image manifest (OCI or docker v2). */
int kago__manifest_parse(const char *json, size_t len, struct kago__manifest *m,
                         struct kago_error **err) KAGO_INTERNAL;
int kago__docker_manifest_parse(const char *json, size_t len, struct kago__docker_manifest *m,
                                struct kago_error **err) KAGO_INTERNAL;
int kago__config_parse(const char *json, size_t len, struct kago__image_config *c,
                       struct kago_error **err) KAGO_INTERNAL;
/* True for the layer media types kago unpacks (tar, gzip, zstd; OCI and docker). */
bool kago__layer_media_type_ok(const char *mt) KAGO_INTERNAL;

void kago__desc_free(struct kago__desc *d) KAGO_INTERNAL;
void kago__manifest_free(struct kago__manifest *m) KAGO_INTERNAL;
void kago__docker_manifest_free(struct kago__docker_manifest *m) KAGO_INTERNAL;
void kago__image_config_free(struct kago__image_config *c) KAGO_INTERNAL;

#endif
