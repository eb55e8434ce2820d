/* kago exec: a new process inside a running container's namespaces and cgroup; and the state as JSON. */
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "container_int.h"
#include "linux.h"

static volatile sig_atomic_t exec_child;
static void forward(int sig)
{
    if (exec_child > 0)
        kill(exec_child, sig);
}

/* In the forked helper: join, then fork once more so the command is inside the pid namespace too. With
 * pid_fd (>= 0: kago_container_exec_detached) the helper writes the command's pid there and exits, leaving
 * the command to its parent's subreaper, and proc is the whole process (its groups, rlimits, no_new_privs);
 * otherwise the helper stays, forwarding signals, and exits as the command did. */
static _Noreturn void exec_in(struct kago_container *c, const struct kago_spec *proc, int report_fd, bool tty,
                              int pid_fd)
{
    struct kago_error *err = NULL;
    const struct kago_spec *cs = &c->spec;
    int flags = 0;
    for (int i = 0; i < KAGO_NS_COUNT; i++)
        if ((cs->ns & (1u << i)) || cs->join_ns[i])
            flags |= kago__ns_clone_flag(i);
    if (c->cg.ops->enter(&c->cg, 0, &err) < 0)
        goto fail;
    if (setns(c->pidfd, flags) < 0) {
        kago_error_set(&err, errno, "join the namespaces of pid %d", (int)c->pid);
        goto fail;
    }
    pid_t pid = fork();
    if (pid < 0) {
        kago_error_set(&err, errno, "fork");
        goto fail;
    }
    if (pid > 0 && pid_fd >= 0)
        _exit(write(pid_fd, &pid, sizeof pid) != sizeof pid);
    if (pid > 0) {
        close(report_fd);
        exec_child = pid;
        struct sigaction sa = {.sa_handler = forward};
        for (int s = 1; s < NSIG; s++)
            if (s != SIGCHLD && s != SIGKILL && s != SIGSTOP)
                sigaction(s, &sa, NULL);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        int status;
        while (waitpid(pid, &status, 0) < 0)
            if (errno != EINTR)
                _exit(127);
        _exit(WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
    }
    kago__reset_signals();
    if (tty && kago__make_tty(report_fd, &err) < 0) /* /dev/ptmx: the container's, since the setns */
        goto fail;
    /* the command runs with the container's privileges, not kago's */
    struct kago_spec s = *cs;
    s.argv = proc->argv;
    s.env = proc->env ? proc->env : cs->env;
    s.uid = proc->uid;
    s.gid = proc->gid;
    if (pid_fd >= 0) {
        s.groups = proc->groups;
        s.ngroups = proc->ngroups;
        s.no_new_privs = proc->no_new_privs;
        if (kago__set_rlimits(proc, &err) < 0) /* (raising a hard one needs the capabilities still held) */
            goto fail;
    }
    char *cmd = kago__find_command(&s, &err);
    if (!cmd)
        goto fail;
    if (chdir(proc->cwd ? proc->cwd : (cs->cwd ? cs->cwd : "/")) < 0) {
        kago_error_set(&err, errno, "cwd %s", proc->cwd ? proc->cwd : cs->cwd);
        goto fail;
    }
    if ((s.no_new_privs && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) || kago__seccomp_apply(&s, &err) < 0 ||
        kago__caps_apply(&s, &err) < 0)
        goto fail;
    execve(cmd, s.argv, s.env);
    kago_error_set(&err, errno, "exec %s", cmd);
fail:
    kago__child_report(report_fd, err);
    _exit(127);
}

static pid_t exec_start(struct kago_container *c, const struct kago_spec *proc, int *tty_master, bool detach,
                        struct kago_error **err)
{
    if (kago_container_status(c) != KAGO_RUNNING)
        return kago_error_set(err, 0, "container %s: not running", c->spec.name);
    if (!proc->argv || !proc->argv[0])
        return kago_error_set(err, 0, "container %s: exec: no command given", c->spec.name);
    int fd, p[2] = {-1, -1};
    if (detach && pipe2(p, O_CLOEXEC) < 0)
        return kago_error_set(err, errno, "container %s: exec: pipe", c->spec.name);
    pid_t pid = kago__fork_reporting(&fd, "exec", err); /* the terminal's master comes back through fd */
    if (pid == 0)
        exec_in(c, proc, fd, tty_master != NULL, p[1]);
    if (detach)
        close(p[1]);
    if (pid < 0) {
        if (detach)
            close(p[0]);
        return -1;
    }
    char kind;
    int tty, rc = kago__read_child(fd, &kind, &tty, err); /* the terminal, if any, then the report */
    close(fd);
    pid_t cmd = -1;
    if (rc == 0 && detach && read(p[0], &cmd, sizeof cmd) != sizeof cmd) /* written before the report ended */
        rc = kago_error_set(err, EIO, "read the command's pid from the exec helper");
    if (detach)
        close(p[0]);
    if (rc < 0) {
        if (tty >= 0)
            close(tty);
        waitpid(pid, NULL, 0);
        if (cmd > 0)
            kill(cmd, SIGKILL);
        kago_error_prefix(err, "container %s: exec", c->spec.name);
        return -1;
    }
    if (detach) { /* the helper is gone (or going): reaped, the command passes to our subreaper */
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
            ;
        pid = cmd;
    }
    if (tty_master)
        *tty_master = tty;
    else if (tty >= 0)
        close(tty);
    return pid;
}

pid_t kago_container_exec_tty(struct kago_container *c, const struct kago_spec *proc, int *tty_master,
                              struct kago_error **err)
{
    return exec_start(c, proc, tty_master, false, err);
}

pid_t kago_container_exec_detached(struct kago_container *c, const struct kago_spec *proc, int *tty_master,
                                   struct kago_error **err)
{
    return exec_start(c, proc, tty_master, true, err);
}

pid_t kago_container_exec(struct kago_container *c, const struct kago_spec *proc, struct kago_error **err)
{
    return kago_container_exec_tty(c, proc, NULL, err);
}

char *kago_container_state_json(struct kago_container *c)
{
    json_object *o = json_object_new_object();
    enum kago_status st = kago_container_status(c);
    json_object_object_add(o, "name", json_object_new_string(c->spec.name));
    json_object_object_add(o, "pid", json_object_new_int(st == KAGO_STOPPED ? 0 : c->pid));
    json_object_object_add(o, "status", json_object_new_string(kago_status_name(st)));
    json_object_object_add(o, "created", json_object_new_int64(c->created));
    json_object_object_add(o, "rootfs", json_object_new_string(c->spec.rootfs ? c->spec.rootfs : ""));
    if (c->spec.image) {
        json_object_object_add(o, "image", json_object_new_string(c->spec.image));
        json_object_object_add(o, "image_id",
                               json_object_new_string(c->spec.image_id ? c->spec.image_id : ""));
    }
    if (st == KAGO_STOPPED && c->exit_status >= 0) {
        int s = c->exit_status;
        json_object_object_add(o, "exit_code",
                               json_object_new_int(WIFEXITED(s) ? WEXITSTATUS(s) : 128 + WTERMSIG(s)));
    }
    json_object_object_add(o, "cgroup", json_object_new_string(c->cg.ops ? c->cg.ops->name : "?"));
    json_object *spec = kago__spec_to_json(&c->spec), *limits = NULL;
    json_object_object_get_ex(spec, "limits", &limits);
    json_object_object_add(o, "limits", json_object_get(limits));
    json_object_object_add(o, "command", json_object_get(json_object_object_get(spec, "argv")));
    json_object_put(spec);
    char *s = xstrdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED));
    json_object_put(o);
    return s;
}
