/* The default seccomp filter kago ships (compiled at build time) is the one libseccomp builds here and
 * now from the same rules; a spec that adds rules is compiled at run time. */
#include <string.h>

#include <kago/kago.h>

#include "linux.h"
#include "tap.h"

static struct kago__bpf shipped, built;

int main(void)
{
    struct kago_error *err = NULL;
    struct kago_spec spec;
    kago_spec_init(&spec);
    ok(kago__seccomp_compile(&spec, &shipped, &err) == 0 && shipped.len > 0,
       "default filter: %u instructions", shipped.len);
    ok(kago__seccomp_build(&spec, &built, &err) == 0 && built.len == shipped.len &&
           !memcmp(built.insns, shipped.insns, shipped.len * sizeof shipped.insns[0]),
       "the shipped default filter equals a run-time build");
    struct kago_seccomp_rule r = {.syscall = "chown", .action = KAGO_SCMP_ERRNO, .errno_value = 1};
    kago_spec_add_seccomp_rule(&spec, &r);
    ok(kago__seccomp_compile(&spec, &built, &err) == 0 && built.len > 0 &&
           (built.len != shipped.len ||
            memcmp(built.insns, shipped.insns, shipped.len * sizeof built.insns[0])),
       "an added rule gives another filter");
    spec.seccomp.mode = KAGO_SECCOMP_UNCONFINED;
    ok(kago__seccomp_compile(&spec, &built, &err) == 0 && built.len == 0, "unconfined: no filter");
    kago_spec_free(&spec);
    kago_error_free(err);
    return tap_done();
}
