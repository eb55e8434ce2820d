/* kago — what libkago's engine and the image code share about images (internal). */
#ifndef KAGO_IMAGE_INT_H
#define KAGO_IMAGE_INT_H

#include <sys/types.h>

#include <kago/error.h>
#include <kago/spec.h>

#include "util.h"

/* Resolves an image config's User ("name", "uid", "name:group", "uid:gid") through the /etc/passwd and
 * /etc/group of the image's layers (top first: the first layer that has the file wins). Returns 0 or
 * < 0 with *err set. */
int kago__image_user(const char *const *layers, const char *user, uid_t *uid, gid_t *gid,
                     struct kago_error **err) KAGO_INTERNAL;

/* Pins spec's image while its container is made: takes the store's lock shared (rm and prune wait) and
 * records root in the store (so they find the container's state file). Returns the lock's fd, to be
 * closed once the state file is written, or < 0 with *err set. */
int kago__image_pin(const struct kago_spec *spec, const char *root, struct kago_error **err) KAGO_INTERNAL;

#endif
