/* Test helper run inside containers: makes one system call by name and prints "ok" or the errno text.
 * Built static so it runs in any rootfs. */
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr,
                "usage: kago-sys keyctl|add_key|unshare|mount|bpf|ptrace|setns|io_uring|clone-newns\n");
        return 2;
    }
    const char *s = argv[1];
    long rc;
    if (!strcmp(s, "keyctl"))
        rc = syscall(SYS_keyctl, 0 /* KEYCTL_GET_KEYRING_ID */, -3, 0);
    else if (!strcmp(s, "add_key"))
        rc = syscall(SYS_add_key, "user", "kago", "x", 1, -3);
    else if (!strcmp(s, "unshare"))
        rc = unshare(CLONE_NEWUTS);
    else if (!strcmp(s, "mount"))
        rc = mount("none", "/tmp", "tmpfs", 0, NULL);
    else if (!strcmp(s, "bpf"))
        rc = syscall(SYS_bpf, 0, NULL, 0);
    else if (!strcmp(s, "ptrace"))
        rc = ptrace(PTRACE_ATTACH, 1, NULL, NULL);
    else if (!strcmp(s, "setns"))
        rc = syscall(SYS_setns, 0, 0);
    else if (!strcmp(s, "io_uring"))
        rc = syscall(SYS_io_uring_setup, 1, (char[120]){0});
    else if (!strcmp(s, "clone-newns"))
        rc = syscall(SYS_clone, CLONE_NEWNS | 17 /* SIGCHLD */, NULL, NULL, NULL, NULL);
    else
        return fprintf(stderr, "kago-sys: unknown call %s\n", s), 2;
    if (rc == 0 && !strcmp(s, "clone-newns"))
        _exit(0);
    if (rc < 0) {
        printf("%s\n", strerror(errno));
        return 1;
    }
    printf("ok\n");
    return 0;
}
