/* Internals of the Kagofile supervisor: one libuv loop for every container of a file. */
#ifndef KAGO_CONFIG_SUPERVISOR_H
#define KAGO_CONFIG_SUPERVISOR_H

#include <uv.h>

#include <kago/kago.h>

#include "internal.h"

struct sup;

/* A timer hook armed for one container (after/every). */
struct sct_timer {
    uv_timer_t t;
    struct sct *ct;
    struct kf_hook *hook;
    uint64_t due_ms; /* uv_now when it should fire: to log lateness */
};

/* A supervised container. */
struct sct {
    struct sup *sup;
    char *name;
    struct kago_kagofile *kf; /* whose hooks it runs (a reference) */
    struct kf_container *def; /* its definition in kf */
    struct kago_container *c;
    uv_poll_t exit_poll;
    bool exit_poll_open;
    struct sct_timer **timers;
    size_t ntimers;
    uv_timer_t grace;
    bool grace_open;
    uv_timer_t ready;
    bool ready_open;
    int ready_fd;
    uint64_t started_ms; /* uv_now at start: after() timers count from here */
    int64_t oom_seen;
    uv_poll_t oom_poll; /* on oom_fd: the cgroup's memory events (containers with on_oom hooks) */
    bool oom_poll_open;
    int oom_fd;
    uv_timer_t oom_retry; /* after an event: the kill it announced may not be counted yet */
    bool oom_retry_open;
    unsigned oom_retries;
    bool stopping; /* the supervisor or a hook asked it to end: not a failure */
    bool running;
    bool adopted; /* a previous supervisor started it: not our child, its exit status is unknown */
    int rec_fd;   /* <dir>/<name>.rec, locked while this supervisor owns the container (sup_adopt.c) */
};

struct sup {
    uv_loop_t loop;
    const struct kago_supervise_opts *opts;
    struct sct **cts;
    size_t ncts;
    size_t nrunning;
    uv_signal_t sig_term, sig_int, sig_hup;
    uv_signal_t *user_sigs; /* one per signal some on_signal hook names */
    int *user_signums;
    size_t nuser_sigs;
    uv_timer_t oom_timer; /* checks once a second the on_oom containers no event reaches */
    uv_pipe_t control;
    bool control_open;
    char *dir;      /* <root>/supervisors */
    char *sockpath; /* <dir>/<pid>.sock */
    char *logpath;  /* --detach: <dir>/<first container>.log */
    int self_netns; /* to come back after making a socket in a container's netns */
    int exit_code;
    bool shutting_down;
    bool verbose;
};

/* supervisor.c */
void sup_log(struct sup *s, const char *fmt, ...) KF_INTERNAL __attribute__((format(printf, 2, 3)));
/* Runs the hooks of kind (all of them, in definition order) with (ct, extra...). */
void sup_run_hooks(struct sct *ct, enum kf_hook_kind kind, int nextra, const mrb_value *extra) KF_INTERNAL;
/* Arms ct's after/every timers from its current definition (after: relative to the start; those
 * already due are not run again). Cancels timers armed before. */
void sup_arm_timers(struct sct *ct) KF_INTERNAL;
/* Installs uv_signal handles for every signal that some running container's on_signal names, and
 * the OOM poll timer when some container has on_oom. */
void sup_refresh_watchers(struct sup *s) KF_INTERNAL;
struct sct *sup_find(struct sup *s, const char *name) KF_INTERNAL;
/* SIGTERM now, SIGKILL after grace_ms (stop_grace of its definition when grace_ms < 0). */
int sup_stop(struct sct *ct, int64_t grace_ms, struct kago_error **err) KF_INTERNAL;
void kf_unref(struct kago_kagofile *kf) KF_INTERNAL;
/* ct->c runs, started age_ms ago by a supervisor that is gone: watch it as if we had started it (its
 * pidfd, OOM events, timers; its ready hook is not run again). */
void sup_take(struct sct *ct, uint64_t age_ms) KF_INTERNAL;

/* sup_adopt.c: a restarted supervisor adopts its containers. */
/* Names spec's cgroup after the container and the root (unless the file names one): two roots never
 * share a cgroup. */
void sup_name_cgroup(struct sup *s, struct kago_spec *spec) KF_INTERNAL;
/* Locks every selected container's record; adopts those a killed supervisor left running with the
 * definition the file has now, removes every trace of the others (one log line each, with the reason),
 * and of the containers the file no longer defines. Returns 0, or < 0 when another supervisor runs one
 * of the containers. */
int sup_adopt(struct sup *s, struct kago_error **err) KF_INTERNAL;
/* Records ct (started now) in its locked record. */
void sup_record_write(struct sct *ct) KF_INTERNAL;
/* ct is gone: its record too. */
void sup_record_drop(struct sct *ct) KF_INTERNAL;

/* ctobj.c: Kago::Container, the object hooks receive. */
void kf_ctobj_define(mrb_state *mrb) KF_INTERNAL;
mrb_value kf_ctobj_new(mrb_state *mrb, struct sct *ct) KF_INTERNAL;

/* reload.c */
/* Re-evaluates the Kagofile and applies it to the container named name (NULL: all). Appends an
 * account to *report (caller frees). Returns 0, or < 0 when the file does not load (nothing changed). */
int sup_reload(struct sup *s, const char *name, char **report) KF_INTERNAL;
int sup_control_start(struct sup *s, struct kago_error **err) KF_INTERNAL;
void sup_control_stop(struct sup *s) KF_INTERNAL;

#endif
