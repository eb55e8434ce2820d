/* Internal: the spawner, a small process that clones containers for a large one (kago serve).
 *
 * A clone copies the caller's page tables and descriptor table, and the copy-on-write faults that follow
 * (with their TLB-flush IPIs) and the descriptors closed at exec grow with the caller: a serve with
 * thousands of instances starts each one slower. The spawner is started (exec'd afresh) while serve is
 * small, receives each start's spec and descriptors over a SOCK_SEQPACKET socket, and clones the container
 * with CLONE_PARENT, so that the container is serve's child as before; serve gets its pid and pidfd back and
 * does the parent's half of the handshake over the sync socket itself. */
#ifndef KAGO_SPAWNER_H
#define KAGO_SPAWNER_H

#include <stdint.h>
#include <sys/types.h>

#include "util.h"

struct kago__child;
struct kago__cgroup;

/* Starts the spawner for this process (kago serve): later creates that do not wait for their child (the
 * event loop's kago_container_create_begin) clone through it. log (may be NULL) is told when the spawner
 * died and was restarted, or could not be and the direct path is taken. sys_dir (may be NULL): an empty
 * directory of the caller's (made and removed by it) where the spawner, in a mount namespace made for it,
 * keeps the sysfs its loopback-only containers share (spawner.c). Returns 0 or < 0 with *err set. */
int kago__spawner_start(void (*log)(void *arg, const char *msg), void *arg, const char *sys_dir,
                        struct kago_error **err) KAGO_INTERNAL;
/* Ends the spawner (EOF on its socket) and reaps it. */
void kago__spawner_stop(void) KAGO_INTERNAL;
/* From now on a start the spawner cannot take fails (with why in its error) instead of being cloned by the
 * caller itself: a raw clone3 of a process with other threads (serve's handshake loops, its ACME client)
 * could copy a lock one of them holds (malloc's) into a child that then never runs. */
void kago__spawner_require(const char *why) KAGO_INTERNAL;
/* The spawner's pid, or -1 when none runs. */
pid_t kago__spawner_pid(void) KAGO_INTERNAL;
/* The spawner's pid, after it was started again if it has exited (found without reaping it: waitid). */
pid_t kago__spawner_check(void) KAGO_INTERNAL;
/* Clones ch through the spawner as kago__clone_child would here. Returns the child's pid (*pidfd set;
 * *cgroup_fd closed and -1 when the kernel could not clone into it), -1 with *err set, or -2 (nothing done,
 * *err untouched) when the spawner does not take this child: the caller clones it itself. meanwhile(arg)
 * (may be NULL) runs once the spawner has the request, before its answer is awaited: the caller's work that
 * needs no pid overlaps the clone (a start handed to a warm sandbox returns at once, meanwhile not run). */
pid_t kago__spawner_clone(struct kago__child *ch, struct kago__cgroup *cg, uint64_t flags, int *cgroup_fd,
                          int *pidfd, void (*meanwhile)(void *arg), void *arg, int *reply_fd,
                          struct kago_error **err) KAGO_INTERNAL;
/* With reply_fd (not NULL) kago__spawner_clone does not wait for the spawner's answer: it returns 0 once
 * the request is sent (and meanwhile has run), with *reply_fd the answer's own socket; when that turns
 * readable, kago__spawner_reply takes the answer as kago__spawner_clone would have (called before, it
 * waits for it, up to 10 s; it closes nothing: the caller closes reply_fd). kago__spawner_reply_pid peeks at
 * an answer that came: the child's pid, or -1 (none yet, or the clone failed). */
pid_t kago__spawner_reply(int reply_fd, int *cgroup_fd, int *pidfd, struct kago_error **err) KAGO_INTERNAL;
pid_t kago__spawner_reply_pid(int reply_fd) KAGO_INTERNAL;
/* Warm sandboxes (docs/serve.md): processes the spawner clones ahead of need with a spec's clone flags
 * (kago__clone_flags), that have done the app-independent part of a start and wait for one. */
typedef void kago__warm_cb(void *arg, uint32_t id, pid_t pid, int pidfd, int code, const char *msg);
/* cb is told of each sandbox made (pid > 0, pidfd then the caller's) or not (pid < 0, code and msg say
 * why), when the spawner's answer is read: by kago__spawner_collect or by a start meanwhile. */
void kago__spawner_on_warm(kago__warm_cb *cb, void *arg) KAGO_INTERNAL;
/* Asks for a sandbox of these flags named id (> 0), cloned into a new cgroup at cgroup_path (a start handed
 * to it keeps that cgroup: the spec's cgroup_path); does not wait for it. Returns 0, or -1 when no spawner
 * runs (or it could not be reached). A sandbox that was never handed a start leaves its cgroup to the
 * caller to remove once it has reaped it, unless the caller is gone: the spawner then removes it. */
int kago__spawner_warm(uint64_t flags, uint32_t id, const char *cgroup_path) KAGO_INTERNAL;
/* Ends sandbox id (not yet used): it exits, and its parent (the caller) reaps it. */
void kago__spawner_warm_drop(uint32_t id) KAGO_INTERNAL;
/* Reads the answers that came, without waiting (each goes to the callback). */
void kago__spawner_collect(void) KAGO_INTERNAL;

/* The spawner process: `kago __spawner PPID` with its socket as fd 3. Returns its exit code. */
int kago__spawner_main(int argc, char **argv) KAGO_INTERNAL;

/* container.c: clones ch's child with flags plus CLONE_PIDFD (*pidfd), into the cgroup *cgroup_fd when >= 0
 * (set to -1 when the kernel cannot), in ch's pid namespace when it joins one. The child runs
 * kago__child_main. Returns its pid, or -1 with *err set. */
pid_t kago__clone_child(struct kago__child *ch, struct kago__cgroup *cg, uint64_t flags, int *cgroup_fd,
                        int *pidfd, struct kago_error **err) KAGO_INTERNAL;

#endif
