/* The default seccomp profile, a deny list like Docker's, as libseccomp rules. seccomp.c builds filters
 * with it; at build time seccomp_gen.c compiles it into seccomp_default.h, the filter kago ships. */
#include <errno.h>
#include <sched.h>
#include <stddef.h>
#include <sys/socket.h>

#include "seccomp_rules.h"

/* Denied with EPERM by default: what lets a process escape or reconfigure the host. */
static const char *const default_deny[] = {
    "acct",
    "add_key",
    "bpf",
    "clock_adjtime",
    "clock_settime",
    "create_module",
    "delete_module",
    "finit_module",
    "fsconfig",
    "fsmount",
    "fsopen",
    "fspick",
    "get_kernel_syms",
    "init_module",
    "ioperm",
    "io_uring_enter",    /* io_uring: a second syscall interface the filter cannot see into, and a steady */
    "io_uring_register", /* source of kernel holes; Docker's default profile refuses it too */
    "io_uring_setup",
    "iopl",
    "kcmp",
    "kexec_file_load",
    "kexec_load",
    "keyctl",
    "lookup_dcookie",
    "mount",
    "mount_setattr",
    "move_mount",
    "name_to_handle_at",
    "nfsservctl",
    "open_by_handle_at",
    "open_tree",
    "perf_event_open",
    "pivot_root",
    "process_vm_readv",
    "process_vm_writev",
    "ptrace",
    "query_module",
    "quotactl",
    "reboot",
    "request_key",
    "setns",
    "settimeofday",
    "stime",
    "swapoff",
    "swapon",
    "sysfs",
    "_sysctl",
    "umount",
    "umount2",
    "unshare",
    "uselib",
    "userfaultfd",
    "ustat",
    "vm86",
    "vm86old",
    NULL,
};

static const unsigned long ns_clone_flags[] = {
    CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET, CLONE_NEWCGROUP,
};

int kago__seccomp_default_rules(scmp_filter_ctx ctx)
{
    for (size_t i = 0; default_deny[i]; i++) {
        int nr = seccomp_syscall_resolve_name(default_deny[i]);
        if (nr == __NR_SCMP_ERROR)
            continue; /* the list names syscalls some architectures lack */
        int rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), nr, 0);
        if (rc < 0 && rc != -EEXIST && rc != -EACCES)
            return rc;
    }
    /* clone() may not make namespaces; clone3 hides its flags in memory, so it reports ENOSYS and libc
     * falls back to clone(). */
    for (size_t i = 0; i < sizeof ns_clone_flags / sizeof ns_clone_flags[0]; i++) {
        int rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(clone), 1,
                                  SCMP_A0(SCMP_CMP_MASKED_EQ, ns_clone_flags[i], ns_clone_flags[i]));
        if (rc < 0)
            return rc;
    }
    /* AF_VSOCK: a channel to the hypervisor (a VM's host) that no network namespace closes: a container
     * in a loopback-only one still reached it. Refused as Docker's profile does, as if not built in. */
    int rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EAFNOSUPPORT), SCMP_SYS(socket), 1,
                              SCMP_A0(SCMP_CMP_EQ, AF_VSOCK, 0));
    if (rc < 0)
        return rc;
    return seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0);
}

void kago__seccomp_attrs(scmp_filter_ctx ctx)
{
    /* the filter is loaded before capabilities are dropped; no_new_privs is set by the caller if asked */
    seccomp_attr_set(ctx, SCMP_FLTATR_CTL_NNP, 0);
    /* A binary tree of syscall numbers, not a list: on load the kernel runs the filter for every syscall
     * (to cache which ones it allows), and a list made that 0.1-0.3 ms of each start. */
    seccomp_attr_set(ctx, SCMP_FLTATR_CTL_OPTIMIZE, 2);
}
