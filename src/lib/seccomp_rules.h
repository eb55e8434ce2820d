/* Internal: the default seccomp profile's rules, shared by the library and the build-time generator. */
#ifndef KAGO_SECCOMP_RULES_H
#define KAGO_SECCOMP_RULES_H

#include <seccomp.h>

/* Adds the default deny rules to ctx. Returns 0 or libseccomp's negative errno. */
int kago__seccomp_default_rules(scmp_filter_ctx ctx) __attribute__((visibility("hidden")));
/* The filter attributes every kago filter has. */
void kago__seccomp_attrs(scmp_filter_ctx ctx) __attribute__((visibility("hidden")));

#endif
