/* kago — the container spec: the one model every front end fills and every backend reads. */
#ifndef KAGO_SPEC_H
#define KAGO_SPEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <kago/error.h>

/* Where kago looks for its default root filesystem (made by scripts/mkrootfs). */
#define KAGO_DEFAULT_ROOTFS "/var/lib/kago/rootfs/busybox"
#define KAGO_DEFAULT_ROOT   "/run/kago"

enum kago_ns {
    KAGO_NS_PID,
    KAGO_NS_MOUNT,
    KAGO_NS_UTS,
    KAGO_NS_IPC,
    KAGO_NS_NET,
    KAGO_NS_CGROUP,
    KAGO_NS_USER,
    KAGO_NS_COUNT
};

struct kago_idmap {
    uint32_t inside, outside, count;
};

/* CGROUP: the container's own cgroup (v1: each hierarchy's directory under a tmpfs, named as the host
 * mounts it, with a link per co-mounted controller; v2: the one directory), bound at dst. */
enum kago_mount_kind { KAGO_MOUNT_BIND, KAGO_MOUNT_TMPFS, KAGO_MOUNT_CGROUP };

struct kago_mount {
    enum kago_mount_kind kind;
    char *src; /* bind only */
    char *dst; /* absolute path inside the container */
    bool readonly;
    bool noexec, nosuid; /* every mount is nodev; tmpfs and cgroup ones are nosuid too */
    uint64_t size;       /* tmpfs only; 0 = kernel default */
    unsigned mode;       /* tmpfs only: its root's mode; 0 = 01777 */
    bool copyup;         /* tmpfs only: starts with a copy of what the rootfs has at dst (OCI tmpcopyup) */
};

struct kago_rlimit {
    int resource; /* RLIMIT_* */
    uint64_t soft, hard;
};

/* A raw controller key, e.g. "cpu.cfs_quota_us" (v1) or "cpu.max" (v2), written as is. */
struct kago_cgroup_kv {
    char *key, *value;
};

#define KAGO_MKNOD_CHAR  1u
#define KAGO_MKNOD_BLOCK 2u

/* Each limit is "unset" (KAGO_UNSET or NULL) unless asked for; unset limits are not written. */
#define KAGO_UNSET        (-1)
#define KAGO_NOLIMIT      (-2)   /* "max": explicitly unlimited */
#define KAGO_DEFAULT_PIDS (2048) /* kago_spec_init_front's pids limit (podman's) */

struct kago_limits {
    int64_t cpu_quota_us;  /* per period; KAGO_UNSET, KAGO_NOLIMIT or > 0 */
    int64_t cpu_period_us; /* KAGO_UNSET = 100000 */
    int64_t cpu_weight;    /* 1..10000 (v2 scale; v1 shares = weight * 1024 / 100) */
    int64_t memory;        /* bytes */
    int64_t memory_swap;   /* memory + swap, bytes (>= memory): 0 = as memory (no swap), KAGO_NOLIMIT = any */
    int64_t pids;
    char *cpuset; /* "0-1,3" */
    struct kago_cgroup_kv *raw;
    size_t nraw;
    /* > 0: cgroup v1's cpu.shares as given (an OCI bundle's, which cpu_weight is then converted from),
     * written there instead of cpu_weight's shares; v2 writes cpu_weight. 0 (or KAGO_UNSET): none. */
    int64_t cpu_shares;
};
/* Limits with every field unset: what kago_container_update changes nothing of. */
#define KAGO_LIMITS_UNSET                                                                                    \
    ((struct kago_limits){.cpu_quota_us = KAGO_UNSET,                                                        \
                          .cpu_period_us = KAGO_UNSET,                                                       \
                          .cpu_weight = KAGO_UNSET,                                                          \
                          .memory = KAGO_UNSET,                                                              \
                          .pids = KAGO_UNSET})

enum kago_seccomp_mode { KAGO_SECCOMP_DEFAULT, KAGO_SECCOMP_UNCONFINED, KAGO_SECCOMP_CUSTOM };
enum kago_seccomp_action { KAGO_SCMP_ALLOW, KAGO_SCMP_ERRNO, KAGO_SCMP_KILL, KAGO_SCMP_LOG };

/* An argument filter of a rule: argument index op value (MASKED_EQ: (arg & value) == value_two). The op
 * numbers are libseccomp's SCMP_CMP_*: NE 1, LT 2, LE 3, EQ 4, GE 5, GT 6, MASKED_EQ 7. */
struct kago_seccomp_arg {
    unsigned index;
    int op;
    uint64_t value, value_two;
};

struct kago_seccomp_rule {
    char *syscall;
    enum kago_seccomp_action action;
    int errno_value;                 /* for KAGO_SCMP_ERRNO */
    struct kago_seccomp_arg args[6]; /* all must match (a syscall has at most six arguments) */
    unsigned nargs;
};

struct kago_seccomp {
    enum kago_seccomp_mode mode;
    /* CUSTOM: the default action and the rules; DEFAULT: rules are added to the built-in deny list. */
    enum kago_seccomp_action default_action;
    int default_errno;
    struct kago_seccomp_rule *rules;
    size_t nrules;
};

struct kago_spec {
    char *name;
    char *rootfs;
    bool readonly;         /* rootfs mounted read-only */
    bool overlay;          /* rootfs as a read-only lower + a writable tmpfs upper, per container */
    uint64_t overlay_size; /* tmpfs size of the upper; 0 = kernel default */
    char *overlay_dir;     /* the upper in this host directory (its upper/ and work/) instead of a tmpfs */

    /* An image's root: its read-only layer directories, top first (NULL-terminated), mounted as the lower
     * directories of one overlay (with the writable upper when overlay is set). When set, rootfs is
     * NULL. image_store is the store the layers belong to: the
     * container pins the image there while it exists (kago image rm and prune leave it alone). */
    char **layers;
    char *image;       /* the reference it was made from, e.g. "guestbook:latest" */
    char *image_id;    /* the sha256 (hex) of the image's config */
    char *image_store; /* the store's directory */
    int stop_signal;   /* what stops the command gracefully (an image's StopSignal); 0 = SIGTERM */

    char **argv; /* NULL-terminated */
    char **env;  /* NULL-terminated; "K=V" */
    char *cwd;
    char *hostname;
    uid_t uid;
    gid_t gid;
    gid_t *groups; /* supplementary groups; none when ngroups is 0 */
    size_t ngroups;
    int oom_score_adj; /* written to /proc/self/oom_score_adj when oom_score_adj_set */
    bool oom_score_adj_set;

    unsigned ns;                        /* bit (1u << KAGO_NS_*) per namespace to create */
    char *join_ns[KAGO_NS_COUNT];       /* path of an existing namespace to enter, or NULL */
    struct kago_idmap *uidmap, *gidmap; /* user namespace maps */
    size_t nuidmap, ngidmap;
    /* KAGO_USERNS_AUTO: without maps or a user namespace to join, create gives the container a user
     * namespace of its own, root mapped to a range of 65536 ids from kago's pool (docs/userns.md), and
     * idmapped mounts of its rootfs, layers and binds. userns_key names the range (NULL: the container's
     * name, released when it is deleted; serve apps: kept per app). Maps given with a userns_key are that
     * key's range, taken from the pool beforehand (serve takes its apps' at load); maps given without one
     * are the caller's own (no idmapped mounts, as KAGO_USERNS_HOST). */
    enum kago_userns_mode { KAGO_USERNS_HOST, KAGO_USERNS_AUTO } userns;
    char *userns_key;

    struct kago_mount *mounts;
    size_t nmounts;
    /* NULL-terminated; kago_spec_init gives kago's defaults shared by every spec (read-only, not the
     * spec's to free): change them only through kago_spec_own_paths or kago_spec_set_paths */
    char **masked_paths;
    char **readonly_paths;

    struct kago_limits limits;
    /* The cgroup, relative to each hierarchy's root ("libpod_parent/libpod-ID"; a leading / is allowed);
     * NULL = kago/<name>. Its parents are made as needed and left in place. */
    char *cgroup_path;
    /* Namespaced kernel parameters, e.g. "net.ipv4.ping_group_range" = "0 0", written in /proc/sys of the
     * container: net.* needs its network namespace, kernel.{shm,msg,sem}* and fs.mqueue.* its ipc one. */
    struct kago_cgroup_kv *sysctls;
    size_t nsysctls;
    struct kago_rlimit *rlimits;
    size_t nrlimits;

    /* Device nodes the container may make (mknod) but not open, beyond kago's own: KAGO_MKNOD_CHAR for any
     * character device, KAGO_MKNOD_BLOCK any block device (an OCI "c *:* m" / "b *:* m" rule). */
    unsigned mknod_any;
    uint64_t caps; /* capabilities kept (bounding, permitted, effective, inheritable, ambient for uid != 0) */
    /* The five sets apart (an OCI bundle's process.capabilities), when capsets is set: caps is then the
     * bounding set, and these are taken as they are (no ambient raise beyond cap_ambient). */
    bool capsets;
    uint64_t cap_effective, cap_permitted, cap_inheritable, cap_ambient;
    struct kago_seccomp seccomp;
    bool no_new_privs;
    bool init; /* a tiny PID 1 that reaps zombies and forwards signals */
    /* /sys is an empty read-only tmpfs (mounts under it, as the cgroup at /sys/fs/cgroup, still made)
     * instead of a sysfs: every new sysfs superblock costs a walk over all the others in the kernel */
    bool no_sysfs;

    /* Socket activation: when listen_port is set, the container's init binds 127.0.0.1:listen_port
     * inside the container's network namespace before exec and passes it as fd 3 with LISTEN_FDS=1 and
     * LISTEN_PID, so connections queue in the kernel backlog from the first instant. */
    uint16_t listen_port;
    /* The creator's fds 3..3+preserve_fds-1 reach the command as they are (OCI --preserve-fds, systemd's
     * LISTEN_FDS); not with listen_port, which takes fd 3. */
    unsigned preserve_fds;
};

/* Fills spec with kago's documented defaults (all namespaces but user, Docker's default capabilities,
 * default seccomp, no_new_privs, masked and read-only paths, default rootfs). */
KAGO_EXPORT void kago_spec_init(struct kago_spec *spec);
/* kago_spec_init plus what kago's own front ends (kago run/create, Kagofile containers, serve apps) add, as
 * podman does: a pids limit of KAGO_DEFAULT_PIDS, the container's own cgroup read-only at /sys/fs/cgroup, and
 * a user namespace of its own (userns KAGO_USERNS_AUTO).
 * Not for an OCI bundle (its config.json says everything) nor for a spec that only carries limits. */
KAGO_EXPORT void kago_spec_init_front(struct kago_spec *spec);
KAGO_EXPORT void kago_spec_free(struct kago_spec *spec);
/* True when a and b describe the same container (every field, as the state file records them). */
KAGO_EXPORT bool kago_spec_equal(const struct kago_spec *a, const struct kago_spec *b);
/* Checks the spec for values that cannot work; returns 0 or < 0 with *err set. */
KAGO_EXPORT int kago_spec_validate(const struct kago_spec *spec, struct kago_error **err);

/* Parsers shared by every front end (CLI flags, Kagofile). Each returns 0 or < 0 with *err set. */
KAGO_EXPORT int kago_parse_size(const char *s, int64_t *bytes, struct kago_error **err);   /* 64M, 1G, max */
KAGO_EXPORT int kago_parse_cpu(const char *s, int64_t *quota_us, struct kago_error **err); /* 30%, 1.5, max */
KAGO_EXPORT int kago_parse_duration(const char *s, uint64_t *ms,
                                    struct kago_error **err);                             /* 5s, 20m, 150ms */
KAGO_EXPORT int kago_parse_ns_list(const char *s, unsigned *ns, struct kago_error **err); /* pid,net,... */
KAGO_EXPORT int kago_ns_from_name(const char *name);                                      /* -1 if unknown */
KAGO_EXPORT const char *kago_ns_name(enum kago_ns ns);
KAGO_EXPORT int kago_parse_idmap(const char *s, struct kago_idmap *map, struct kago_error **err);
KAGO_EXPORT int kago_parse_mount_bind(const char *s, struct kago_mount *m, struct kago_error **err);
KAGO_EXPORT int kago_parse_mount_tmpfs(const char *s, struct kago_mount *m, struct kago_error **err);
KAGO_EXPORT int kago_parse_rlimit(const char *s, struct kago_rlimit *rl, struct kago_error **err);
KAGO_EXPORT int kago_rlimit_from_name(const char *name); /* "nofile" or "RLIMIT_NOFILE"; -1 if unknown */
KAGO_EXPORT int kago_signal_from_name(const char *s);    /* "TERM", "sigterm" or "15"; -1 if unknown */
KAGO_EXPORT int kago_cap_from_name(const char *name);    /* "net_admin" or "CAP_NET_ADMIN"; -1 if unknown */
/* kago's own front ends' default set: podman's (Docker's without NET_RAW, MKNOD and AUDIT_WRITE). */
KAGO_EXPORT uint64_t kago_caps_default(void);
KAGO_EXPORT uint64_t kago_caps_docker(void); /* Docker's default set (`kago spec`'s config.json) */
/* Checks a cgroup path as a spec gives it ("/a/b" or "a/b": no empty, "." or ".." component). */
KAGO_EXPORT int kago_cgroup_path_check(const char *path, struct kago_error **err);
KAGO_EXPORT int kago_parse_user(const char *s, uid_t *uid, gid_t *gid, struct kago_error **err);

/* Appends to the spec's arrays (copies the strings). */
KAGO_EXPORT void kago_spec_add_env(struct kago_spec *spec, const char *kv);
KAGO_EXPORT void kago_spec_add_mount(struct kago_spec *spec, const struct kago_mount *m);
KAGO_EXPORT void kago_spec_add_rlimit(struct kago_spec *spec, const struct kago_rlimit *rl);
KAGO_EXPORT void kago_spec_add_raw(struct kago_spec *spec, const char *key, const char *value);
KAGO_EXPORT void kago_spec_add_sysctl(struct kago_spec *spec, const char *key, const char *value);
KAGO_EXPORT void kago_spec_add_seccomp_rule(struct kago_spec *spec, const struct kago_seccomp_rule *r);
KAGO_EXPORT void kago_spec_set_argv(struct kago_spec *spec, char *const *argv);
/* A spec's masked_paths or readonly_paths (list): made the spec's own copy, to be changed in place; or
 * replaced by v (taken; NULL frees). The shared defaults are never freed. */
KAGO_EXPORT void kago_spec_own_paths(char ***list);
KAGO_EXPORT void kago_spec_set_paths(char ***list, char **v);
/* Reads a seccomp profile in Docker/OCI JSON form (defaultAction, defaultErrnoRet, syscalls[].names/action/
 * errnoRet; argument filters are not supported and are reported) into spec->seccomp as CUSTOM. */
KAGO_EXPORT int kago_seccomp_load_file(struct kago_spec *spec, const char *path, struct kago_error **err);
/* The same from a parsed profile (a json-c object: the OCI config's linux.seccomp has this form). */
KAGO_EXPORT int kago_seccomp_from_json(struct kago_spec *spec, void *profile, struct kago_error **err);
/* Parses a seccomp action name: allow, errno, kill, log (or SCMP_ACT_*). -1 if unknown. */
KAGO_EXPORT int kago_seccomp_action_from_name(const char *name);

#endif
