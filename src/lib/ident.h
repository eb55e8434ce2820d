/* What tells kago's objects apart across processes: a hash of a container's definition (a restarted
 * supervisor or serve adopts a container only when its definition is the one it would create now), a
 * short tag of a --root (two roots never share a cgroup name), and the lock that makes one process the
 * owner of what it records under a root. */
#ifndef KAGO_LIB_IDENT_H
#define KAGO_LIB_IDENT_H

#include <stddef.h>
#include <stdint.h>

#include <kago/kago.h>

#include "util.h"

#define KAGO__FNV_INIT 0xcbf29ce484222325ull

/* FNV-1a of n bytes at p, continuing from h. */
uint64_t kago__fnv(uint64_t h, const void *p, size_t n) KAGO_INTERNAL;
/* FNV-1a of s with its NUL (NULL hashes apart from ""), continuing from h. */
uint64_t kago__fnv_str(uint64_t h, const char *s) KAGO_INTERNAL;
/* A hash of everything spec makes a container of: the fields the state file holds plus those it does not
 * (mounts' flags, rlimits, id maps, masked and read-only paths). Equal specs hash equal across processes. */
uint64_t kago__spec_hash(const struct kago_spec *spec) KAGO_INTERNAL;
/* A 16-bit tag of root's real path (root itself when it does not resolve). */
unsigned kago__root_id(const char *root) KAGO_INTERNAL;
/* Opens (creating it, 0600) and locks path exclusively without waiting. Returns the fd, whose holder owns
 * what the lock guards until it closes it; or -1 with *err set (code EWOULDBLOCK: another process holds
 * it). */
int kago__lock_file(const char *path, struct kago_error **err) KAGO_INTERNAL;

#endif
