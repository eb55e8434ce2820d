/* Capabilities: the default sets (podman's, Docker's), names, and dropping to the spec's set before exec. */
#include <linux/capability.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/capability.h>
#include <grp.h>

#include <kago/spec.h>

#include "linux.h"

#define CAP(x) (1ull << (x))

/* Podman's set: Docker's without NET_RAW (raw and packet sockets), MKNOD and AUDIT_WRITE. */
uint64_t kago_caps_default(void)
{
    return kago_caps_docker() & ~(CAP(CAP_NET_RAW) | CAP(CAP_MKNOD) | CAP(CAP_AUDIT_WRITE));
}

uint64_t kago_caps_docker(void)
{
    return CAP(CAP_CHOWN) | CAP(CAP_DAC_OVERRIDE) | CAP(CAP_FSETID) | CAP(CAP_FOWNER) | CAP(CAP_MKNOD) |
           CAP(CAP_NET_RAW) | CAP(CAP_SETGID) | CAP(CAP_SETUID) | CAP(CAP_SETFCAP) | CAP(CAP_SETPCAP) |
           CAP(CAP_NET_BIND_SERVICE) | CAP(CAP_SYS_CHROOT) | CAP(CAP_KILL) | CAP(CAP_AUDIT_WRITE);
}

int kago_cap_from_name(const char *name)
{
    if (!strcasecmp(name, "all"))
        return -1;
    cleanup_free char *full = strncasecmp(name, "cap_", 4) ? xasprintf("cap_%s", name) : xstrdup(name);
    for (char *p = full; *p; p++)
        *p = (char)(*p >= 'A' && *p <= 'Z' ? *p + 32 : *p);
    cap_value_t v;
    if (cap_from_name(full, &v) < 0 || v > CAP_LAST_CAP)
        return -1;
    return (int)v;
}

/* The kernel's highest capability: the bounding set answers EINVAL past it (cheaper than reading
 * /proc/sys/kernel/cap_last_cap in the child). */
static int last_cap(void)
{
    int last = CAP_LAST_CAP;
    while (last < 63 && prctl(PR_CAPBSET_READ, last + 1, 0, 0, 0) >= 0)
        last++;
    while (last > 0 && prctl(PR_CAPBSET_READ, last, 0, 0, 0) < 0)
        last--;
    return last;
}

static int set_ids(const struct kago_spec *spec, struct kago_error **err)
{
    if (setgroups(spec->ngroups, spec->groups) < 0 && (errno != EPERM || spec->ngroups))
        return kago_error_set(err, errno, "setgroups (%zu groups)", spec->ngroups);
    if (setresgid(spec->gid, spec->gid, spec->gid) < 0)
        return kago_error_set(err, errno, "setgid %u", (unsigned)spec->gid);
    if (setresuid(spec->uid, spec->uid, spec->uid) < 0)
        return kago_error_set(err, errno, "setuid %u", (unsigned)spec->uid);
    return 0;
}

int kago__caps_apply(const struct kago_spec *spec, struct kago_error **err)
{
    int last = last_cap();
    for (int c = 0; c <= last; c++)
        if (!(spec->caps & CAP(c)) && prctl(PR_CAPBSET_DROP, c, 0, 0, 0) < 0 && errno != EINVAL)
            return kago_error_set(err, errno, "drop capability %d from the bounding set", c);
    if (prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) < 0)
        return kago_error_set(err, errno, "prctl(PR_SET_KEEPCAPS)");
    if (set_ids(spec, err) < 0)
        return -1;
    /* One set (kago's own front ends): all of them. The five sets apart (OCI): as given. */
    uint64_t eff = spec->capsets ? spec->cap_effective : spec->caps;
    uint64_t perm = spec->capsets ? spec->cap_permitted : spec->caps;
    uint64_t inh = spec->capsets ? spec->cap_inheritable : spec->caps;
    /* A non-root user keeps its capabilities across exec only through the ambient set. */
    uint64_t amb = spec->capsets ? spec->cap_ambient : spec->uid != 0 ? spec->caps : 0;
    struct __user_cap_header_struct hdr = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
    struct __user_cap_data_struct data[2];
    memset(data, 0, sizeof data);
    for (int c = 0; c <= last; c++) {
        data[c / 32].effective |= eff & CAP(c) ? 1u << (c % 32) : 0;
        data[c / 32].permitted |= perm & CAP(c) ? 1u << (c % 32) : 0;
        data[c / 32].inheritable |= inh & CAP(c) ? 1u << (c % 32) : 0;
    }
    if (capset(&hdr, data) < 0)
        return kago_error_set(err, errno, "capset");
    for (int c = 0; c <= last; c++)
        if ((amb & CAP(c)) && prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, c, 0, 0) < 0)
            return kago_error_set(err, errno, "raise ambient capability %d", c);
    return 0;
}
