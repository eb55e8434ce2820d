/* Internals of the Kagofile loader and supervisor, shared by src/config's files. */
#ifndef KAGO_CONFIG_INTERNAL_H
#define KAGO_CONFIG_INTERNAL_H

#include <mruby.h>

#include "kagofile.h"
#include "smap.h"

#define KF_INTERNAL __attribute__((visibility("hidden")))

enum kf_hook_kind {
    KF_BEFORE_START,
    KF_AFTER_START,
    KF_ON_EXIT,
    KF_ON_OOM,
    KF_ON_FAILURE,
    KF_AFTER,
    KF_EVERY,
    KF_SIGNAL,
    KF_READY,
    KF_NKINDS
};

struct kf_hook {
    enum kf_hook_kind kind;
    mrb_value proc; /* kept alive by the owning Kago::Spec object's @procs */
    uint64_t ms;    /* after/every: delay; ready: timeout */
    int sig;        /* on_signal */
    uint16_t port;  /* ready */
    char *desc;     /* "after(5s)", "on_signal(USR1)": for log lines */
};

/* One Kago.container (or the container of a Kago.app, then in_app and no hooks). */
struct kf_container {
    struct kago_spec own;   /* storage for a Kago.container */
    struct kago_spec *spec; /* &own, or &app.spec */
    bool in_app;
    uint64_t stop_grace_ms; /* default 10 s, as `kago kill` then delete */
    struct kf_hook *hooks;
    size_t nhooks;
    mrb_value obj; /* the Kago::Spec object given to the block (gc-registered) */
    /* c.image: applied when the block ends, under what the block set itself */
    char *image;
    char **entrypoint; /* c.entrypoint, NULL-terminated */
    bool entrypoint_set, argv_set, user_set, cwd_set, rootfs_set, readonly_set;
    char **env_set; /* c.env entries, NULL-terminated */
    size_t nenv_set;
};

struct kf_app {
    struct kago_app app;
    bool port_set; /* a.port given: the image's port does not replace it */
    size_t file;   /* kago_kagofile_load_files: which of the files defined it */
    struct kf_container ct;
    mrb_value obj;
};

struct kago_kagofile {
    char *path;   /* the file (being) evaluated */
    char **files; /* kago_kagofile_load_files: every file, in order */
    size_t nfiles;
    mrb_state *mrb;
    struct kf_container **cts;
    size_t ncts;
    struct kf_app **apps;
    size_t napps, capapps;
    struct smap app_names; /* name -> its kf_app, while the file is evaluated */
    struct kf_heap *heap;  /* mruby's memory (mrbheap.c); NULL: libc's (under ASan, which then sees it) */
    int refs;              /* the supervisor's containers that run hooks from this file */
    void *sup;             /* the supervisor running this file's hooks, or NULL */
};

#define KF_DEFAULT_STOP_GRACE_MS 10000

/* mrbheap.c: a heap for one mruby state, apart from the C heap: mrb_open_allocf(kf_heap_allocf, heap);
 * kf_heap_free after mrb_close unmaps it all. */
struct kf_heap;
struct kf_heap *kf_heap_new(void) KF_INTERNAL;
void kf_heap_free(struct kf_heap *h) KF_INTERNAL;
void *kf_heap_allocf(mrb_state *mrb, void *p, size_t size, void *ud) KF_INTERNAL;

/* Zeroed memory that lives and dies with kf (its heap when it has one): kept apart from what its apps keep.
 */
void *kf_zalloc(struct kago_kagofile *kf, size_t n) KF_INTERNAL;
void kf_zfree(struct kago_kagofile *kf, void *p) KF_INTERNAL;

/* dsl.c: defines Kago, Kago::Spec, Kago::AppSpec and their C primitives in mrb. */
void kf_dsl_define(mrb_state *mrb) KF_INTERNAL;
/* The prelude's source (generated from prelude.rb). */
extern const char kf_prelude_rb[] KF_INTERNAL;

/* Parses one cgroup setting (cpu, cpu_period, cpu_weight, memory, pids, cpuset, or a raw controller
 * key containing a '.') into limits. Returns 0 or < 0 with *err set. */
int kf_parse_limit(struct kago_limits *limits, const char *key, const char *value,
                   struct kago_error **err) KF_INTERNAL;
/* Sets every field of limits to unset. */
void kf_limits_init(struct kago_limits *l) KF_INTERNAL;
void kf_limits_free(struct kago_limits *l) KF_INTERNAL;
const char *kf_hook_kind_name(enum kf_hook_kind k) KF_INTERNAL;
/* Signal number from "USR1", "SIGUSR1", "usr1" or "10"; -1 if unknown. */
int kf_signal_from_name(const char *name) KF_INTERNAL;

/* "FILE:LINE: [method: ]message (Class)" for the pending exception mrb->exc (which is cleared).
 * Caller frees. */
char *kf_exc_string(mrb_state *mrb, const char *path) KF_INTERNAL;

struct kf_container *kf_find(struct kago_kagofile *kf, const char *name) KF_INTERNAL;

/* Raises a Ruby ArgumentError with "what: err's message", freeing err. Does not return. */
void kf_raise_error(mrb_state *mrb, const char *what, struct kago_error *err) KF_INTERNAL
    __attribute__((noreturn));

#endif
