/* kago — container lifecycle: the mechanism. Policy (when, how many, how long) lives in the callers. */
#ifndef KAGO_CONTAINER_H
#define KAGO_CONTAINER_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <kago/error.h>
#include <kago/spec.h>

enum kago_status { KAGO_CREATED, KAGO_RUNNING, KAGO_PAUSED, KAGO_STOPPED };

struct kago_container; /* opaque; a loaded or created container */

struct kago_stats {
    uint64_t cpu_usage_us;
    int64_t memory_current, memory_peak; /* bytes; -1 when the backend cannot tell */
    int64_t pids_current;
    int64_t oom_kills;
};

/* What tells that a container is short of CPU or memory (kago serve's scale up reads it). Each field is
 * -1 when the backend cannot tell or it was not asked for. */
struct kago_pressure {
    int64_t cpu_usage_us;
    int64_t nr_periods, nr_throttled; /* CFS periods run, and those in which the quota ran out */
    int64_t throttled_us;             /* time the container's tasks waited for the next period */
    int64_t memory_current;           /* bytes charged */
    int64_t memory_events;   /* times the limit was hit (v1 memory.failcnt; v2 memory.events high+max) */
    int64_t memory_stall_us; /* v2 memory.pressure "some" total (PSI); -1 on v1 */
};
#define KAGO_PRESSURE_CPU    1u
#define KAGO_PRESSURE_MEMORY 2u

struct kago_spawn_opts {
    bool wait_start; /* stop before exec until kago_container_start() (kago create / start) */
    int stdio[3];    /* fds for the command's stdin/stdout/stderr; -1 = inherit */
    bool detach;     /* the caller will not wait: the container is reparented away from it */
    bool orphan;     /* no shim either: the init is the caller's child, and becomes its subreaper's when the
                        caller exits (an OCI runtime's create, under conmon or containerd's shim) */
    bool tty;        /* the command gets a terminal of the container's own devpts as stdin, stdout, stderr
                        and controlling terminal; its master goes to the caller (kago_container_take_tty).
                        Not with detach. */
    unsigned warm;   /* kago serve: a warm sandbox of its spawner to start in (0: none; see docs/serve.md) */
    bool async;      /* kago_container_create_begin returns before the spawner has answered (see there) */
    bool offload;    /* as async, and the parent's work too is left for kago_create_work (see there) */
};

/* Builds the container described by spec under state dir root: cgroup, namespaces, mounts,
 * security, then (unless opts->wait_start) execs the command. On success *out is the new container
 * (caller frees with kago_container_free) whose process is the caller's child. On failure nothing is
 * left behind: no process, cgroup, mount or state file. */
KAGO_EXPORT int kago_container_create(const char *root, const struct kago_spec *spec,
                                      const struct kago_spawn_opts *opts, struct kago_container **out,
                                      struct kago_error **err);
/* The same in two halves, for an event loop: begin does the parent's part (state dir, clone, cgroup,
 * filter, state file) and returns while the child sets itself up in its namespaces (mounts, security,
 * exec: a millisecond or two the caller may spend on other work). When kago_create_fd() is readable
 * (or is -1: already complete), finish takes the child's report and hands out the container as
 * kago_container_create does; finish always consumes cr. abort kills and removes a create in flight. */
struct kago_create; /* opaque */
KAGO_EXPORT int kago_container_create_begin(const char *root, const struct kago_spec *spec,
                                            const struct kago_spawn_opts *opts, struct kago_create **out,
                                            struct kago_error **err);
KAGO_EXPORT int kago_create_fd(const struct kago_create *cr);
/* With opts->async, begin returns once serve's spawner has the clone request (its own work meanwhile done):
 * kago_create_cloning() is true and kago_create_fd() is the spawner's answer's socket. When it is readable,
 * kago_create_step() does the rest of begin (0: kago_create_fd() is now the child's, wait for it as
 * above), or fails (-1: nothing is left, cr is consumed). abort and kago_create_pid work meanwhile too. */
KAGO_EXPORT bool kago_create_cloning(const struct kago_create *cr);
KAGO_EXPORT int kago_create_step(struct kago_create *cr, struct kago_error **err);
/* With opts->offload, begin returns as soon as the clone is asked for, and kago_create_cloning() is true
 * until kago_create_step: it leaves the parent's work of a start (the cgroup and its limits, the seccomp
 * filter, the user namespace's maps, the state file), mostly kernel time that grows with the number of
 * containers on the machine, to kago_create_work(). That may run on any thread, as long as no other call
 * on cr (abort and kago_create_pid included) runs meanwhile; it waits for the spawner's answer itself (up
 * to 10 s). kago_create_step() then takes its result on the caller's thread, as above. */
KAGO_EXPORT void kago_create_work(struct kago_create *cr);
/* The child setting itself up (-1 when complete already): a SIGKILL to it ends the create, and finish
 * then reports the failure. */
KAGO_EXPORT pid_t kago_create_pid(const struct kago_create *cr);
KAGO_EXPORT int kago_container_create_finish(struct kago_create *cr, struct kago_container **out,
                                             struct kago_error **err);
KAGO_EXPORT void kago_create_abort(struct kago_create *cr);
/* The master side of the terminal of a container made with tty (the caller's to close from now on), or
 * -1. */
KAGO_EXPORT int kago_container_take_tty(struct kago_container *c);
/* Lets a container made with wait_start run its command. */
KAGO_EXPORT int kago_container_start(struct kago_container *c, struct kago_error **err);
/* Loads a container from its state file. */
KAGO_EXPORT int kago_container_load(const char *root, const char *name, struct kago_container **out,
                                    struct kago_error **err);
KAGO_EXPORT void kago_container_free(struct kago_container *c);

KAGO_EXPORT const char *kago_container_name(const struct kago_container *c);
KAGO_EXPORT pid_t kago_container_pid(const struct kago_container *c);
/* A pidfd for the container's init (owned by c; -1 if the process is gone). */
KAGO_EXPORT int kago_container_pidfd(const struct kago_container *c);
KAGO_EXPORT enum kago_status kago_container_status(struct kago_container *c);
KAGO_EXPORT const char *kago_status_name(enum kago_status s);
/* When it was created, in seconds since the epoch. */
KAGO_EXPORT long long kago_container_created(const struct kago_container *c);
/* The container's spec as loaded or created (owned by c). */
KAGO_EXPORT const struct kago_spec *kago_container_spec(const struct kago_container *c);

KAGO_EXPORT int kago_container_kill(struct kago_container *c, int sig, bool all, struct kago_error **err);
/* Whether stop signal sig cannot end c: its command is the init of a pid namespace of its own, neither
 * catches nor ignores sig (the kernel discards it: an init only gets the signals it handles), and is c's only
 * process (none other to act on it). A stop grace would then only keep it alive: SIGKILL is what sig's
 * default action does to any other process. False when unsure (SIGKILL, no pid namespace, unreadable). */
KAGO_EXPORT bool kago_container_stop_futile(struct kago_container *c, int sig);
/* Removes every trace: cgroup, state dir. A running container is refused unless force (then killed). */
KAGO_EXPORT int kago_container_delete(struct kago_container *c, bool force, struct kago_error **err);
/* Applies the set fields of limits to the running container, live, and records them. */
KAGO_EXPORT int kago_container_update(struct kago_container *c, const struct kago_limits *limits,
                                      struct kago_error **err);
/* The host pids of every process in the container (its cgroup's members), sorted; *pids is the caller's
 * to free. Returns how many, or -1 with *err set. */
KAGO_EXPORT int kago_container_pids(struct kago_container *c, pid_t **pids, struct kago_error **err);
KAGO_EXPORT int kago_container_pause(struct kago_container *c, bool pause, struct kago_error **err);
KAGO_EXPORT int kago_container_stats(struct kago_container *c, struct kago_stats *st,
                                     struct kago_error **err);
/* Only cpu_usage_us and memory_current (the others -1): two cgroup files read instead of five. */
KAGO_EXPORT int kago_container_usage(struct kago_container *c, struct kago_stats *st,
                                     struct kago_error **err);
/* The pressure counters of what (KAGO_PRESSURE_CPU | KAGO_PRESSURE_MEMORY): two or three cgroup files
 * read per resource. The others stay -1. */
KAGO_EXPORT int kago_container_pressure(struct kago_container *c, unsigned what, struct kago_pressure *p,
                                        struct kago_error **err);
/* An fd (the caller's; CLOEXEC, non-blocking) that turns readable when the container's cgroup reports a
 * memory event, an OOM kill among them: read it empty, then compare kago_container_stats' oom_kills. */
KAGO_EXPORT int kago_container_oom_fd(struct kago_container *c, struct kago_error **err);
/* Opens the container's namespace of type ns (O_CLOEXEC fd, caller closes). */
KAGO_EXPORT int kago_container_open_ns(struct kago_container *c, enum kago_ns ns, struct kago_error **err);
/* Runs proc->argv inside the container's namespaces and cgroup, with proc's env/cwd/uid/gid.
 * Returns the pid (the caller's child) or < 0. */
KAGO_EXPORT pid_t kago_container_exec(struct kago_container *c, const struct kago_spec *proc,
                                      struct kago_error **err);
/* The same with a terminal of the container's devpts as the command's stdin, stdout, stderr and
 * controlling terminal; *tty_master is its master (the caller's to close). */
KAGO_EXPORT pid_t kago_container_exec_tty(struct kago_container *c, const struct kago_spec *proc,
                                          int *tty_master, struct kago_error **err);
/* As kago_container_exec_tty (tty_master NULL: no terminal), for an OCI process: proc is the whole
 * process, its supplementary groups, rlimits and no_new_privs replace the container's; and no kago process
 * stays between the caller and the command: the pid returned is the command's own, and it is not the
 * caller's child but its subreaper's (the caller's own when it set PR_SET_CHILD_SUBREAPER), as runc leaves
 * an exec. */
KAGO_EXPORT pid_t kago_container_exec_detached(struct kago_container *c, const struct kago_spec *proc,
                                               int *tty_master, struct kago_error **err);
/* Removes what a kago killed during setup left of container name: a state dir without a state file (or
 * with one that does not read: empty, cut short), and the container's cgroup (its own path, kept beside
 * the state when the spec named one, or kago/NAME) with every process in it. Fails with "no such container"
 * when there is no such partial container (with code ENOENT when not even its state dir exists). */
KAGO_EXPORT int kago_container_remove_partial(const char *root, const char *name, struct kago_error **err);
/* Names of the containers in root (NULL-terminated, caller frees each and the array). */
KAGO_EXPORT int kago_container_list(const char *root, char ***names, struct kago_error **err);
/* The state as a JSON text (caller frees). */
KAGO_EXPORT char *kago_container_state_json(struct kago_container *c);

#endif
