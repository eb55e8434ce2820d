/* cgroups behind one interface; v1 (per-controller hierarchies, hybrid hosts too) and v2 backends. */
#ifndef KAGO_CGROUP_H
#define KAGO_CGROUP_H

#include <limits.h>
#include <stdint.h>
#include <sys/types.h>

#include <kago/container.h>
#include <kago/spec.h>

#include "util.h"

struct kago__cgroup;

struct kago__cg_view {
    char name[64];      /* the directory under /sys/fs/cgroup ("" for the mount itself) */
    char dir[PATH_MAX]; /* the host's cgroup directory shown there */
};

struct kago__cgroup_ops {
    const char *name; /* "v1" or "v2" */
    /* mkdir the container's cgroup (and the "kago" parent, prepared as the controllers need). v1 skips
     * the hierarchies of controllers made on demand that lim does not use; apply adds them later. */
    int (*create)(struct kago__cgroup *cg, const struct kago_limits *lim, struct kago_error **err);
    /* Moves pid into the cgroup (every hierarchy it has on v1). pid 0: the calling single-threaded process
     * moves itself, the fast way (v1: through `tasks`, without the global threadgroup lock). */
    int (*enter)(struct kago__cgroup *cg, pid_t pid, struct kago_error **err);
    /* Keeps open what enter(cg, 0) needs, for a caller about to leave the host's mount tree (pivot_root);
     * enter then closes it. NULL where nothing is needed. */
    int (*hold)(struct kago__cgroup *cg, struct kago_error **err);
    /* Writes the set fields of limits (and raw keys) live. Unset fields are left as they are. */
    int (*apply)(struct kago__cgroup *cg, const struct kago_limits *limits, struct kago_error **err);
    /* Restricts device access to kago's minimal /dev (v1: the devices controller; v2: a BPF device program),
     * plus mknod (never open) of any character or block device as mknod_any asks (KAGO_MKNOD_*). */
    int (*devices)(struct kago__cgroup *cg, unsigned mknod_any, struct kago_error **err);
    int (*freeze)(struct kago__cgroup *cg, bool frozen, struct kago_error **err);
    /* 1 frozen, 0 thawed, < 0 error */
    int (*frozen)(struct kago__cgroup *cg, struct kago_error **err);
    int (*stats)(struct kago__cgroup *cg, struct kago_stats *st, struct kago_error **err);
    /* CPU time and memory in use only (two files, not stats' five): what /metrics reads per instance */
    int (*usage)(struct kago__cgroup *cg, struct kago_stats *st, struct kago_error **err);
    /* Throttling and memory pressure (struct kago_pressure, pre-filled with -1) of what (KAGO_PRESSURE_*) */
    int (*pressure)(struct kago__cgroup *cg, unsigned what, struct kago_pressure *p, struct kago_error **err);
    /* Sends sig to every process in the cgroup. Returns how many were signalled. */
    int (*kill_all)(struct kago__cgroup *cg, int sig, struct kago_error **err);
    /* rmdir the cgroup (and the "kago" parent when it is empty). Processes must be gone. */
    int (*destroy)(struct kago__cgroup *cg, struct kago_error **err);
    /* An fd (CLOEXEC, non-blocking; the caller closes it) that turns readable when the cgroup has a
     * memory event such as an OOM (v1: an eventfd on memory.oom_control; v2: inotify on memory.events).
     * Drain it, then read the stats. */
    int (*oom_fd)(struct kago__cgroup *cg, struct kago_error **err);
    /* Opens the directory used by clone3(CLONE_INTO_CGROUP), or -1 where the backend has none (v1). */
    int (*open_dir)(struct kago__cgroup *cg, struct kago_error **err);
    /* What a container's /sys/fs/cgroup shows: the container's own directory in each hierarchy (v1: one
     * view per hierarchy the container has a cgroup in, named as mounted, e.g. "cpu,cpuacct"; v2: one view
     * named ""). Returns how many (at most max). */
    size_t (*views)(const struct kago__cgroup *cg, struct kago__cg_view *out, size_t max);
    /* The directory whose cgroup.procs lists every process of the container into dir (PATH_MAX). */
    int (*members)(const struct kago__cgroup *cg, char *dir, struct kago_error **err);
};

struct kago__cgroup {
    const struct kago__cgroup_ops *ops;
    char *mountpoint; /* "/sys/fs/cgroup" (or a fake cgroupfs in unit tests) */
    char *name;       /* container name */
    /* The cgroup, relative to each hierarchy's root: <mountpoint>[/<controller>]/<path>. "kago/<name>" unless
     * the spec names one (an OCI bundle's linux.cgroupsPath). parent is its directory ("kago"; "" at the
     * root). */
    char *path, *parent;
    /* Opened by hold (v1: each hierarchy's mount) so that a container's child can enter its cgroup after
     * pivot_root; nheld 0 means enter goes by absolute path. */
    int held[8];
    unsigned nheld;
    struct kago__cg_undo *undo; /* while set, every write records the value it replaces */
};

/* What writes changed, in order: kago__cg_undo_replay puts the values back, last first (a failed live
 * update changes nothing), and frees them. (Each write goes from one state the kernel took to the next,
 * so going back passes the same states: v1's memory <= memory+swap holds all the way.) */
struct kago__cg_undo_w {
    char *path, *value;
};
struct kago__cg_undo {
    size_t n;
    struct kago__cg_undo_w *w;
};
void kago__cg_undo_replay(struct kago__cg_undo *u, bool put_back) KAGO_INTERNAL;

/* A limits' values in range (spec validation, and a live update before any write). */
int kago__limits_check(const struct kago_limits *l, struct kago_error **err) KAGO_INTERNAL;

/* Closes what hold opened. */
void kago__cg_unhold(struct kago__cgroup *cg) KAGO_INTERNAL;

extern const struct kago__cgroup_ops kago__cgroup_v1 KAGO_INTERNAL;
extern const struct kago__cgroup_ops kago__cgroup_v2 KAGO_INTERNAL;

/* Detects the host's cgroup layout: v2 when mountpoint is a cgroup2 filesystem, v1 when it holds
 * per-controller v1 hierarchies (hybrid hosts whose cgroup2 mount at unified/ holds no controller are v1).
 * $KAGO_CGROUP=v1|v2 forces a backend. Returns NULL with *err set if neither is usable. */
const struct kago__cgroup_ops *kago__cgroup_detect(const char *mountpoint,
                                                   struct kago_error **err) KAGO_INTERNAL;
/* Fills cg for container name with the detected backend (mountpoint NULL = /sys/fs/cgroup); path is the
 * spec's cgroup_path (NULL: kago/<name>). */
int kago__cgroup_init(struct kago__cgroup *cg, const char *mountpoint, const char *name, const char *path,
                      struct kago_error **err) KAGO_INTERNAL;
void kago__cgroup_fini(struct kago__cgroup *cg) KAGO_INTERNAL;
/* Removes the (empty) cgroup at path in every hierarchy, quietly: one that holds processes stays. */
void kago__cgroup_remove(const char *path) KAGO_INTERNAL;

/* Unit tests: replaces the v1 controller mounts read from /proc/self/mountinfo with n (controller, path)
 * pairs (co-mounted controllers share a path). n == 0 goes back to mountinfo. Not thread-safe. */
struct kago__cgroup_v1_mount {
    const char *controller, *path;
};
void kago__cgroup_v1_set_mounts(const struct kago__cgroup_v1_mount *m, size_t n) KAGO_INTERNAL;
/* v1: the calling process's own cgroup in each hierarchy, each one's `tasks` opened into fds (at most max);
 * returns how many, or -1 with *err set. kago__cg_v1_home_return moves the calling single-threaded process
 * back there through them, the fast way (as enter(cg, 0)): the spawner enters a warm sandbox's cgroup to
 * clone the sandbox into it, then returns. */
int kago__cg_v1_home_open(int *fds, size_t max, struct kago_error **err) KAGO_INTERNAL;
int kago__cg_v1_home_return(const int *fds, size_t n, struct kago_error **err) KAGO_INTERNAL;
/* True when at least one controller kago uses is mounted as a v1 hierarchy (cached per process). */
bool kago__cgroup_v1_present(void) KAGO_INTERNAL;

/* The devices a container may use (kago's /dev): character devices, minor -1 for any. v1 writes them
 * to devices.allow, v2 turns them into a BPF device program. */
struct kago__cg_dev {
    unsigned major;
    int minor;
};
extern const struct kago__cg_dev kago__cg_devs[] KAGO_INTERNAL;
extern const size_t kago__cg_ndevs KAGO_INTERNAL;

/* Shared by the two backends (cgroup.c). dir is a cgroup directory; messages name the cgroup as
 * "cgroup <path>" and the file and value. */
#define KAGO__CG_PARENT "kago"
/* base/rel (rel "": base) into buf; -ENAMETOOLONG with *err set when it does not fit. rel is cg->path or
 * cg->parent. */
int kago__cg_dir(char *buf, size_t size, const char *base, const char *rel,
                 struct kago_error **err) KAGO_INTERNAL;
/* Opens dir/file and writes value with one write(). */
int kago__cg_write(const struct kago__cgroup *cg, const char *dir, const char *file, const char *value,
                   struct kago_error **err) KAGO_INTERNAL;
/* The same with dir relative to dirfd (a cgroup mount held open: after pivot_root). */
int kago__cg_write_at(const struct kago__cgroup *cg, int dirfd, const char *dir, const char *file,
                      const char *value, struct kago_error **err) KAGO_INTERNAL;
/* Reads dir/file into buf (NUL-terminated, trailing newline kept). Returns the length or -errno. */
ssize_t kago__cg_read(const struct kago__cgroup *cg, const char *dir, const char *file, char *buf,
                      size_t size, struct kago_error **err) KAGO_INTERNAL;
/* Value of the line "key N" in a flat-keyed file's text; false if absent. */
bool kago__cg_key(const char *text, const char *key, int64_t *out) KAGO_INTERNAL;
/* A number from dir/file (or its "key N" line; "max" reads as -1), -1 when the file (controller) is absent.
 */
int kago__cg_read_num(const struct kago__cgroup *cg, const char *dir, const char *file, const char *key,
                      int64_t *out, struct kago_error **err) KAGO_INTERNAL;
/* A backend's preparation of a parent directory dir it has just made under above (in hierarchy base). */
typedef int kago__cg_prepare_fn(const struct kago__cgroup *cg, const char *base, const char *above,
                                const char *dir, struct kago_error **err);
/* mkdir base/path. On ENOENT (no parent yet, or another process just removed it) makes each missing
 * directory of the parent, top down, calls prepare on each, and retries, once more if the parent vanishes
 * again. *created tells whether the direct parent was made here. A stale empty cgroup of the same name is
 * replaced; a busy one is an error. */
int kago__cg_mkdir(const struct kago__cgroup *cg, const char *base, kago__cg_prepare_fn *prepare,
                   bool *created, struct kago_error **err) KAGO_INTERNAL;
/* rmdir base/path (retrying briefly while just-dead processes leave it busy), then base/kago when the
 * parent is kago's own and no other container uses it (a parent the caller named is left, as runc leaves
 * it). A cgroup already gone is not an error. */
int kago__cg_rmdir(const struct kago__cgroup *cg, const char *base, struct kago_error **err) KAGO_INTERNAL;
/* Checks that every CPU in the list "0-1,3" is online ("cpuset 7: no such CPU"). */
int kago__cg_check_cpuset(const char *cpus, struct kago_error **err) KAGO_INTERNAL;
/* Signals every pid listed in dir/cgroup.procs; for SIGKILL rereads until no new pid appears (forks
 * racing the kill). Returns how many were signalled. */
int kago__cg_kill_procs(const struct kago__cgroup *cg, const char *dir, int sig,
                        struct kago_error **err) KAGO_INTERNAL;
/* Moves every process listed in from/cgroup.procs into to (one that exits meanwhile is skipped). */
int kago__cg_move_procs(const struct kago__cgroup *cg, const char *from, const char *to,
                        struct kago_error **err) KAGO_INTERNAL;
/* Counts the lines (pids) of dir/file, e.g. cgroup.procs or (v1) tasks. */
int kago__cg_count_lines(const struct kago__cgroup *cg, const char *dir, const char *file,
                         struct kago_error **err) KAGO_INTERNAL;
/* False when dir is not on a cgroup filesystem (the unit tests' fake tree): nothing to wait for. */
bool kago__cg_is_cgroupfs(const char *dir) KAGO_INTERNAL;
/* Sleeps for a bounded poll: returns false once deadline_us (kago__now_us) has passed. */
bool kago__cg_backoff(unsigned *delay_us, unsigned long long deadline_us) KAGO_INTERNAL;
/* Checks a raw key: "controller.file", no '/'. */
int kago__cg_check_key(const struct kago__cgroup *cg, const char *key, struct kago_error **err) KAGO_INTERNAL;

#endif
