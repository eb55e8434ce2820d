/* Internal: what the container's init does to itself before exec, and namespace plumbing. */
#ifndef KAGO_LINUX_H
#define KAGO_LINUX_H

#include <kago/spec.h>

#include "util.h"

/* Drops the bounding set to spec->caps, switches to spec->uid/gid keeping spec->caps (ambient for
 * non-root users). */
int kago__caps_apply(const struct kago_spec *spec, struct kago_error **err) KAGO_INTERNAL;
/* Loads the seccomp filter the spec asks for (nothing for unconfined). */
int kago__seccomp_apply(const struct kago_spec *spec, struct kago_error **err) KAGO_INTERNAL;

#endif
