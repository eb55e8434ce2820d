/* kago — checkpoint and restore of whole containers with CRIU: the "slow starter" tier of kago serve.
 *
 * An image is a directory: CRIU's own images, kago.json (the container's spec, the host paths of its
 * external bind mounts) and, for --overlay containers, upper/ (what the container had written to its
 * writable layer, whiteouts included). Each restore builds a fresh writable layer over upper/ and the
 * rootfs, so one image gives any number of independent instances; the image directory must stay in
 * place while instances restored from it run (it is one of their read-only layers). */
#ifndef KAGO_CHECKPOINT_H
#define KAGO_CHECKPOINT_H

#include <stdbool.h>
#include <stdint.h>

#include <kago/container.h>
#include <kago/error.h>

struct kago_checkpoint_opts {
    bool leave_running; /* the container keeps running after the dump (default: it is stopped) */
    /* "Once the app is ready": when wait_port is set, first wait until something accepts connections on
     * 127.0.0.1:wait_port inside the container's network namespace (at most wait_timeout_ms; 0 = 30 s). */
    uint16_t wait_port;
    uint64_t wait_timeout_ms;
};

struct kago_restore_opts {
    const char *name; /* the new container's name; NULL = a generated one */
    bool detach;      /* a shim process stays the container's parent (as kago run --detach) */
    /* Restore memory on first touch: a `criu lazy-pages` daemon copies each page when the app first
     * touches it (userfaultfd), the rest in the background, and then exits. The app runs sooner, and
     * restore time no longer grows with its memory. The daemon must not be killed before it is done:
     * pages it had not copied would read as zeros. Needs `criu check --feature uffd-noncoop`. */
    bool lazy_pages;
};

/* 0 when CRIU can checkpoint and restore on this host, else < 0 with *err holding CRIU's own reason in
 * one line ("criu check: vdso: Unexpected rt vDSO area bounds"). Runs `criu check` each call (about a
 * second): kago serve asks once at start-up and uses cold starts when it fails. */
KAGO_EXPORT int kago_checkpoint_supported(struct kago_error **err);

/* Writes an image of the running container c to image_dir, which must not exist or be empty (it is
 * created; on failure it is removed again, or emptied when it existed). Returns 0 or < 0 with *err set to
 * one line that quotes CRIU's first error. */
KAGO_EXPORT int kago_container_checkpoint(struct kago_container *c, const char *image_dir,
                                          const struct kago_checkpoint_opts *opts, struct kago_error **err);

/* Restores image_dir as a new container under state dir root, in a fresh cgroup kago/<name> with the
 * limits the image recorded, a fresh writable layer and its own namespaces. On success *out is a normal
 * container (state, stats, kill, delete work on it; caller frees with kago_container_free), as
 * kago_container_create gives. Without opts->detach its init becomes the caller's child: the caller is
 * made a child subreaper (PR_SET_CHILD_SUBREAPER) for that, and must reap what it adopts. On failure
 * nothing is left: no process, cgroup, mount or state dir. */
KAGO_EXPORT int kago_container_restore(const char *root, const char *image_dir,
                                       const struct kago_restore_opts *opts, struct kago_container **out,
                                       struct kago_error **err);

#endif
