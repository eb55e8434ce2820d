/* Internal: the container object, the child's setup steps, the state file. */
#ifndef KAGO_CONTAINER_INT_H
#define KAGO_CONTAINER_INT_H

#include <json-c/json.h>

#include <kago/container.h>

#include "cgroup.h"
#include "linux.h"
#include "util.h"

struct kago_container {
    char *root, *dir; /* state dir and root/name */
    struct kago_spec spec;
    pid_t pid;
    unsigned long long starttime; /* /proc/PID/stat field 22: tells a reused pid apart */
    int pidfd;
    int tty_master;    /* made with tty: the terminal's master until taken, else -1 */
    long long created; /* unix seconds */
    int exit_status;   /* -1 unknown; else as waitpid() gave it (from a shim's record) */
    struct kago__cgroup cg;
};

#define KAGO__MAX_TREES     512
#define KAGO__TREES_PER_MSG 16

/* What the cloned child needs; everything is prepared by the parent before clone. */
struct kago__child {
    const struct kago_spec *spec;
    const char *scratch; /* overlay scratch directory (dir/ovl) */
    int sync_fd;
    int parent_fd; /* the parent's end of the sync socket: closed first, so a dead parent reads as EOF */
    int fifo_fd;   /* O_PATH of dir/exec.fifo when waiting for start, else -1 */
    int join_fds[KAGO_NS_COUNT];
    const int *stdio;
    struct kago__cgroup *enter_cg; /* the child moves itself here first (NULL: cloned into it) */
    const struct kago__cgroup *cg; /* the container's cgroup (what a cgroup mount shows) */
    struct kago__bpf *bpf;         /* the parent compiles the filter into its copy and sends it with "G" */
    bool went;                     /* "G" received */
    bool mapped;                   /* "M" received: in its new user namespace, its root */
    bool net_later;                /* the parent makes the network namespace meanwhile ("N" + its fd) */
    bool spin;                     /* the parent runs on another CPU: poll a while for its messages */
    bool die_with_parent;          /* foreground: no orphan container outlives a killed kago */
    bool tty;                      /* make a terminal, send its master to the parent ("T" + the fd) */
    bool warm;        /* a warm sandbox runs it (spawner.c): its session, / private and loopback are done */
    uint32_t warm_id; /* the parent asks the spawner for this warm sandbox (0: a clone) */
    int warm_proc, warm_sys; /* a warm sandbox's detached proc and sysfs mounts of its namespaces (or -1) */
    /* --userns auto: the parent's idmapped mounts ("F" messages before "G"): the lowers (image layers top
     * first, or the rootfs), then one per bind mount in spec order; scratch_fd: the scratch dir, opened by
     * the child while its fsuid is still the host's root, which owns the state dir */
    int trees[KAGO__MAX_TREES];
    unsigned ntrees;
    int scratch_fd;
};

_Noreturn void kago__child_main(struct kago__child *ch) KAGO_INTERNAL;
/* Closes every descriptor from `from` up but a and b (each >= from; a may equal b). */
void kago__close_all_but(int from, int a, int b) KAGO_INTERNAL;
int kago__child_go(struct kago__child *ch, struct kago_error **err) KAGO_INTERNAL;
int kago__loopback_up(struct kago_error **err) KAGO_INTERNAL;
int kago__set_rlimits(const struct kago_spec *spec, struct kago_error **err) KAGO_INTERNAL;
char *kago__find_command(const struct kago_spec *spec, struct kago_error **err) KAGO_INTERNAL;
int kago__ns_clone_flag(enum kago_ns ns) KAGO_INTERNAL;
/* The namespaces a create of spec clones (kago serve's: its warm sandboxes' key). */
uint64_t kago__clone_flags(const struct kago_spec *spec) KAGO_INTERNAL;
/* 0 when spec's rootfs is a directory (or it has none of its own: an image's layers), else why it cannot be
 * one (an errno: ENOENT, ENOTDIR...). */
int kago__rootfs_errno(const struct kago_spec *spec) KAGO_INTERNAL;
_Noreturn void kago__init_loop(pid_t child) KAGO_INTERNAL;
/* Reads a child's report: 'R' (waiting for start), 'O' (ok), "E<code> <msg>" (sets *err, returns -1), or
 * EOF ('X': the child exec'd). A terminal's master sent ahead of it ("T" with the fd) goes to *fd (-1 when
 * none came; fd NULL: it is closed). */
int kago__read_child(int sync_fd, char *kind, int *fd, struct kago_error **err) KAGO_INTERNAL;
/* A terminal of the devpts the caller sees at /dev/ptmx (a container's own, past pivot_root or setns)
 * becomes the caller's stdin, stdout, stderr and controlling terminal (in a new session); its master goes
 * through report_fd (a unix socket) with "T". */
int kago__make_tty(int report_fd, struct kago_error **err) KAGO_INTERNAL;
/* --detach: forks a shim that runs make(c, arg) (which leaves c->pid set), stays the container's parent,
 * and records its exit status in dir/exit. Returns once make succeeded or failed in the shim. */
int kago__detach(struct kago_container *c,
                 int (*make)(struct kago_container *c, void *arg, struct kago_error **err), void *arg,
                 struct kago_error **err) KAGO_INTERNAL;
/* A container object for root/name with nothing loaded yet (caller frees with kago_container_free). */
struct kago_container *kago__container_new(const char *root, const char *name) KAGO_INTERNAL;
/* The end of create and restore: on failure (ret < 0) frees c; detached, frees c and loads the record the
 * shim wrote; else hands c out. Returns 0 with *out set, or -1. */
int kago__container_hand_out(struct kago_container *c, int ret, bool detach, struct kago_container **out,
                             struct kago_error **err) KAGO_INTERNAL;
/* Default dispositions for every signal, none blocked: what a command should start with. */
void kago__reset_signals(void) KAGO_INTERNAL;
/* Sends an error to the parent over the sync socket ("E" code msg). */
void kago__child_report(int sync_fd, struct kago_error *err) KAGO_INTERNAL;

/* The user namespace pool (userns.c): the range of 65536 ids key holds (taken if it holds none), as maps
 * of the container's 0; and its release. Return 0 or < 0 with *err set. */
int kago__userns_alloc(const char *key, struct kago_idmap *uid, struct kago_idmap *gid,
                       struct kago_error **err) KAGO_INTERNAL;
/* The ranges of n keys in one pass over the record (serve takes its apps' ranges at load). When the pool
 * runs out, the keys it could not serve get maps of count 0 and *err says so (ENOSPC); the others keep what
 * they got. Returns how many keys got no range (0: all did), or < 0 with *err set (nothing taken). */
int kago__userns_alloc_many(const char *const *keys, size_t n, struct kago_idmap *uids,
                            struct kago_idmap *gids, struct kago_error **err) KAGO_INTERNAL;
int kago__userns_release(const char *key, struct kago_error **err) KAGO_INTERNAL;
/* Makes the idmapped mounts of the spec's lowers and binds through pid's user namespace (maps written) and
 * sends them to the child over sock ("F" messages). Returns 0 or < 0 with *err set. */
int kago__idmap_send(const struct kago_spec *spec, pid_t pid, int sock,
                     struct kago_error **err) KAGO_INTERNAL;

/* The state file (dir/state.json): the spec and the process identity. */
json_object *kago__spec_to_json(const struct kago_spec *spec) KAGO_INTERNAL;
int kago__spec_from_json(json_object *o, struct kago_spec *spec, struct kago_error **err) KAGO_INTERNAL;
/* The whole spec, the state file's form plus what it does not carry (mounts, rlimits, id maps, masked and
 * read-only paths, listen_port, overlay_size) and the setup's scratch dir (spawner.c): what a spec copied
 * for a create, or sent to the spawner, must hold. */
json_object *kago__spec_to_json_full(const struct kago_spec *spec, const char *scratch) KAGO_INTERNAL;
int kago__spec_from_json_full(json_object *o, struct kago_spec *spec, char **scratch,
                              struct kago_error **err) KAGO_INTERNAL;
int kago__state_write(struct kago_container *c, struct kago_error **err) KAGO_INTERNAL;
int kago__state_read(struct kago_container *c, struct kago_error **err) KAGO_INTERNAL;
unsigned long long kago__proc_starttime(pid_t pid, char *state) KAGO_INTERNAL;

#endif
