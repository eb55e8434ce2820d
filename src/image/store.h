/* kago — the image store's layout, locks, names and records (internal to libkago).
 *
 *   DIR/lock            flock: shared by imports and container starts, exclusive by rm and prune
 *   DIR/layers/HEX/     one layer (HEX = its diff_id), unpacked once; DIR/layers/HEX.json its size
 *   DIR/digests/HEX     a symlink from a blob digest to the diff_id it unpacks to (skips known blobs)
 *   DIR/images/HEX/     one image (HEX = sha256 of its config): config.json, manifest.json, image.json
 *   DIR/refs.json       names ("NAME:TAG") → image ids, rewritten whole under DIR/refs.lock
 *   DIR/roots/HASH      a symlink to a container state root that has used this store (for "in use")
 *   DIR/locks/HEX       flock per layer while one import unpacks it
 *   DIR/tmp/NAME        an import in progress, flocked through DIR/tmp/NAME.lock */
#ifndef KAGO_IMAGE_STORE_H
#define KAGO_IMAGE_STORE_H

#include <json-c/json.h>
#include <stdbool.h>
#include <stdint.h>

#include <kago/error.h>

#include "util.h"

struct kago__store {
    char *dir;
    int dirfd;
    int lockfd; /* holds the store lock, or -1 */
};

/* Opens the store at dir (creating it when create) and takes its lock (LOCK_SH, LOCK_EX, or 0 for none).
 * Returns 0 or < 0 with *err set. */
int kago__store_open(const char *dir, bool create, int lock, struct kago__store *st,
                     struct kago_error **err) KAGO_INTERNAL;
void kago__store_close(struct kago__store *st) KAGO_INTERNAL;

/* refs.json as an object (name → id); a missing file is an empty object. NULL with *err on failure. */
json_object *kago__refs_read(struct kago__store *st, struct kago_error **err) KAGO_INTERNAL;
/* Points each of names at id (moving a name from another image), under the refs lock. When drop is set,
 * removes the names instead (id unused). Returns 0 or < 0 with *err set. */
int kago__refs_set(struct kago__store *st, const char *id, char *const *names, bool drop,
                   struct kago_error **err) KAGO_INTERNAL;
/* "busybox" → "busybox:latest"; a name with a tag or digest is kept. The caller frees. */
char *kago__ref_normalize(const char *ref) KAGO_INTERNAL;
/* Resolves a reference to an image id (65 bytes) and, when it was a name, *name (the caller frees). */
int kago__store_resolve(struct kago__store *st, const char *ref, char id[65], char **name,
                        struct kago_error **err) KAGO_INTERNAL;

/* images/ID/image.json: {"layers": [{"diff_id", "digest", "media_type", "size"}], "size": N}. */
json_object *kago__image_record(struct kago__store *st, const char *id,
                                struct kago_error **err) KAGO_INTERNAL;

/* The image ids and layer diff_ids (hex) that containers of every root using this store still have, as
 * JSON objects: image id → the state dir of one container using it; layer → true. */
int kago__store_in_use(struct kago__store *st, json_object **images, json_object **layers,
                       struct kago_error **err) KAGO_INTERNAL;

/* Removes what killed imports left under tmp/ (those whose lock is free). Returns how many. */
size_t kago__store_clean_tmp(struct kago__store *st) KAGO_INTERNAL;
/* Makes tmp/PREFIX-XXXXXX with its lock held (*lockfd). Returns its name (the caller frees) or NULL. */
char *kago__store_tmpdir(struct kago__store *st, const char *prefix, int *lockfd,
                         struct kago_error **err) KAGO_INTERNAL;
/* Removes layer hex (renamed into tmp/ first, so that a half-removed layer is never seen). */
int kago__store_remove_layer(struct kago__store *st, const char *hex, uint64_t *bytes) KAGO_INTERNAL;
/* The size recorded for layer hex, 0 if none. */
uint64_t kago__layer_size(struct kago__store *st, const char *hex) KAGO_INTERNAL;

/* sha256 of a buffer, hex. */
void kago__sha256_hex(const void *data, size_t len, char out[65]) KAGO_INTERNAL;
/* True when s is "sha256:" and 64 lowercase hex digits; *hex then points at the digits. */
bool kago__digest_hex(const char *s, const char **hex) KAGO_INTERNAL;

#endif
