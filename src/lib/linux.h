/* Internal: what the container's init does to itself before exec, and namespace plumbing. */
#ifndef KAGO_LINUX_H
#define KAGO_LINUX_H

#include <kago/spec.h>

#include "util.h"

/* Drops the bounding set to spec->caps, switches to spec->uid/gid keeping spec->caps (ambient for
 * non-root users). */
/* Mounts an overlay at target: lowers (NULL-terminated, top first) read-only, with upper and work when
 * upper is not NULL (else the overlay is read-only). Returns 0 or < 0 with *err set. */
int kago__overlay_mount(const char *target, const char *const *lowers, const char *upper, const char *work,
                        struct kago_error **err) KAGO_INTERNAL;
int kago__caps_apply(const struct kago_spec *spec, struct kago_error **err) KAGO_INTERNAL;
/* A compiled seccomp program (classic BPF), sent to the child with "G". */
struct kago__bpf {
    unsigned short len; /* instructions; 0 = no filter */
    uint64_t insns[4096];
};
/* Compiles the spec's filter (len 0 for unconfined) / loads a compiled one into the calling thread. */
int kago__seccomp_compile(const struct kago_spec *spec, struct kago__bpf *out,
                          struct kago_error **err) KAGO_INTERNAL;
int kago__seccomp_load(const struct kago__bpf *bpf, struct kago_error **err) KAGO_INTERNAL;
/* Compiles with libseccomp, never from a cache or the build-time default (tests compare the two). */
int kago__seccomp_build(const struct kago_spec *spec, struct kago__bpf *out,
                        struct kago_error **err) KAGO_INTERNAL;
/* Loads the seccomp filter the spec asks for (nothing for unconfined). */
int kago__seccomp_apply(const struct kago_spec *spec, struct kago_error **err) KAGO_INTERNAL;

/* Whether the spec mounts the container's cgroup (its child then waits for "G" before mounting). */

#endif
