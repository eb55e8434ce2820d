/* kago CLI: one file per verb, each a thin layer over libkago. */
#ifndef KAGO_CLI_H
#define KAGO_CLI_H

#include <errno.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdlib.h>

#include <kago/kago.h>

struct cli {
    const char *root;   /* state dir (--root), default KAGO_DEFAULT_ROOT */
    const char *images; /* image store (--images, $KAGO_IMAGES), default KAGO_DEFAULT_IMAGES */
    const char *prog;   /* "kago" */
    char **argv;        /* the whole command line (serve restarts itself with it on SIGUSR2) */
};

/* Prints "kago: MSG" (the error's text) to stderr once and frees it. Returns the exit code 1. */
int cli_fail(struct kago_error *err);
/* Prints "kago: FMT" to stderr. Returns 1 (or 2 for usage errors via cli_usage). */
int cli_errorf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int cli_usage(const char *verb, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prints "kago: warning: FMT" to stderr (and to --log at level warning). */
void cli_warnf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* The admin API of a running `kago serve` (src/cli/serve_admin.c), for ps and reload. */
struct cli_admin {
    const char *addr;       /* "IP:PORT" or "unix:PATH": --admin, else (at the call) the address the serve of
                             * root wrote, else 127.0.0.1:9090 */
    const char *token_file; /* --admin-token; NULL: ROOT/.serve/.admin-token (TCP only) */
    const char *root;       /* serve's --root (default: kago's --root) */
    char *addr_from;        /* the file addr was read from, or NULL (freed by cli_admin_call) */
    char addr_buf[160];
};
void cli_admin_init(struct cli_admin *a, struct cli *g);
/* argv[*i] is --admin, --admin-token or --root (with its value, *i then past it): 1; another: 0; a missing
 * value: -1. */
int cli_admin_option(struct cli_admin *a, int argc, char **argv, int *i);
/* METHOD path on the admin API: the body of a 2xx answer (caller frees), or NULL with the error printed
 * (401 says which token file was tried). */
char *cli_admin_call(struct cli_admin *a, const char *verb, const char *method, const char *path);

/* Each verb gets argv with argv[0] = the verb name; returns the process exit code. */
#define CLI_VERB(v) int cli_##v(struct cli *g, int argc, char **argv)
CLI_VERB(run);
CLI_VERB(app);
CLI_VERB(create);
CLI_VERB(start);
CLI_VERB(exec);
CLI_VERB(kill);
CLI_VERB(delete);
CLI_VERB(list);
CLI_VERB(state);
CLI_VERB(update);
CLI_VERB(pause);
CLI_VERB(resume);
CLI_VERB(stats);
CLI_VERB(serve);
CLI_VERB(ps);
/* kago ps --cluster [URL] [--json]: every node's instances, read from etcd (ps_cluster.c). */
int kago__cli_ps_cluster(int argc, char **argv);
CLI_VERB(logs);
/* `kago run Kagofile [NAME...]`: run.c hands over when its first argument is a file. */
CLI_VERB(run_kagofile);
CLI_VERB(check);
CLI_VERB(reload);
CLI_VERB(checkpoint);
CLI_VERB(restore);
CLI_VERB(image);
CLI_VERB(spec);
CLI_VERB(features);
/* The OCI runtime forms (docs/oci.md): true when create/run were given --bundle. */
bool cli_oci_form(int argc, char **argv);
int cli_oci_create(struct cli *g, int argc, char **argv);
int cli_oci_run(struct cli *g, int argc, char **argv);
/* The OCI state JSON of a container made from a bundle (the caller frees), or NULL for kago's own. */
char *cli_oci_state(struct cli *g, struct kago_container *c);
/* STATE_DIR/ID/oci.json, the record that makes `state` answer in OCI form (src/cli/oci.c). 0 or an exit
 * code (message printed). */
struct kago_oci;
int cli_oci_write_record(struct cli *g, const char *id, const struct kago_oci *oci);
/* checkpoint --image-path, restore --bundle / --image-path: runc's forms (src/cli/oci_checkpoint.c). */
bool cli_oci_checkpoint_form(int argc, char **argv);
bool cli_oci_restore_form(int argc, char **argv);
int cli_oci_checkpoint(struct cli *g, int argc, char **argv);
int cli_oci_restore(struct cli *g, int argc, char **argv);
/* OCI hooks (src/cli/oci_hooks.c, docs/oci.md): they run in kago's namespaces, each with the container's
 * OCI state JSON on its stdin and its own env alone. */
/* prestart then createRuntime, of a created container not yet started (its oci.json written): 0, or the
 * exit code after printing which hook failed (the caller removes the container). */
int cli_oci_hooks_create(struct cli *g, struct kago_container *c, const struct kago_oci *oci);
/* true when oci has prestart or createRuntime hooks (the container must wait for them before it runs). */
bool cli_oci_hooks_before_start(const struct kago_oci *oci);
/* poststart, from the hooks stored with the container (none for kago's own); failures are warnings. */
void cli_oci_hooks_poststart(struct cli *g, struct kago_container *c);
/* poststop: prepare reads the stored hooks and the state they get (status "stopped") before the container
 * is deleted (NULL when it has none); finish runs them when run is true (failures are warnings) and frees
 * p. */
struct cli_oci_poststop;
struct cli_oci_poststop *cli_oci_poststop_prepare(struct cli *g, struct kago_container *c);
void cli_oci_poststop_finish(struct cli_oci_poststop *p, bool run);
/* exec --process, update --resources: the OCI forms. */
bool cli_oci_exec_form(int argc, char **argv);
bool cli_oci_update_form(int argc, char **argv);
int cli_oci_exec(struct cli *g, int argc, char **argv);
int cli_oci_update(struct cli *g, int argc, char **argv);
/* runc's pid file (decimal, no newline, renamed into place) and console-socket message. 0 or an exit code. */
int cli_write_pid_file(const char *path, pid_t pid);
int cli_send_console(const char *path, int master);
/* A foreground container's exit code from its wait status (128+N for signal N; an OOM kill is told). */
int cli_exit_code(struct kago_container *c, int status);

/* Options shared by run and create: fills spec from one option. Returns 1 if the option was
 * consumed, 0 if it is not a spec option, < 0 on a bad value (message printed). */
int cli_spec_option(struct kago_spec *spec, int opt, const char *arg);
/* getopt codes of the spec options */
enum {
    O_ROOTFS = 1000,
    O_NAME,
    O_HOSTNAME,
    O_ENV,
    O_CWD,
    O_USER,
    O_BIND,
    O_TMPFS,
    O_READONLY,
    O_OVERLAY,
    O_NS,
    O_JOIN_NS,
    O_UIDMAP,
    O_USERNS,
    O_GIDMAP,
    O_CPU,
    O_CPU_WEIGHT,
    O_MEMORY,
    O_PIDS,
    O_CPUSET,
    O_RLIMIT,
    O_CAP_ADD,
    O_CAP_DROP,
    O_SECCOMP,
    O_NO_NEW_PRIVS,
    O_INIT,
    O_NO_SYSFS,
    O_CGROUP_SET,
    O_OVERLAY_SIZE,
    O_OVERLAY_DIR,
    O_CGROUP_MOUNT,
};
extern const struct option cli_spec_longopts[];
/* Limit options (--cpu --cpu-weight --memory --pids --cpuset), shared with `kago update`. */
int cli_limit_option(struct kago_limits *l, int opt, const char *arg);
/* --image and what run/create were given explicitly, which wins over the image's config. */
struct cli_image_args {
    const char *image;      /* --image REF, or NULL */
    const char *entrypoint; /* --entrypoint CMD ("" = none), or NULL */
    bool user_set, cwd_set;
    char **env; /* --env values, NULL-terminated */
    size_t nenv;
};
/* Parses run/create options into spec (and ia); returns the index of the command in argv (argc when an
 * image gives it), -0x100 after --help, or minus the exit code on bad input (message printed). detach and
 * tty may be NULL (no --detach, no --tty). */
int cli_parse_spec(const char *verb, struct kago_spec *spec, bool *detach, bool *tty,
                   struct cli_image_args *ia, int argc, char **argv);
/* Makes the spec's root the image ia->image and applies its config under what was given. Returns 0 or
 * the exit code (message printed). */
int cli_apply_image(struct cli *g, struct kago_spec *spec, const struct cli_image_args *ia, char **cmd);
/* Parses run/create options and creates the container. Returns 0 with *c set, or the exit code with *c
 * NULL (0 after --help). detach may be NULL (no --detach option); it also sets opts->detach. */
int cli_create_from_args(struct cli *g, const char *verb, int argc, char **argv, bool *detach,
                         struct kago_spawn_opts *opts, struct kago_container **c);
/* Blocks the signals cli_wait_forwarding forwards, until it runs. */
void cli_hold_signals(void);
/* Waits for child pid, forwarding the usual signals to it; returns its wait status. */
int cli_wait_forwarding(pid_t pid);
/* Forwards the usual signals to pid from now on (all but SIGWINCH when resize is given: it runs then). */
void cli_forward_signals(pid_t pid, void (*resize)(int));
/* kago run --tty: relays this process's stdin/stdout and the container's terminal (master), the local
 * terminal in raw mode and its size followed, until child pid exits; returns its wait status. */
int cli_wait_tty(pid_t pid, int master);
/* Loads container NAME or prints why not. */
struct kago_container *cli_load(struct cli *g, const char *name);

#endif
