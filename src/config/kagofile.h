/* kago — the Kagofile: containers and apps written in mruby, and the supervisor that runs them.
 *
 * A Kagofile is trusted operator code (it can read files and run any Ruby). Loading one evaluates it in
 * its own mruby state; the result holds one struct kago_spec per `Kago.container` (plus its hooks and
 * timers, which stay Ruby procs in that state) and one struct kago_app per `Kago.app`.
 * See docs/kagofile.md for the DSL. */
#ifndef KAGO_KAGOFILE_H
#define KAGO_KAGOFILE_H

#include <stdbool.h>
#include <stddef.h>

#include <kago/app.h>
#include <kago/error.h>
#include <kago/spec.h>

struct kago_kagofile; /* opaque: an evaluated Kagofile (owns its mruby state, specs and apps) */

/* Evaluates the Kagofile at path. sets: NULL or a NULL-terminated list of "key=value" strings that
 * the file reads with Kago.set("key") / Kago.params (`kago run --set`). On success *out is the
 * loaded file (free with kago_kagofile_free). On failure returns < 0 with *err set to one line,
 * "FILE:LINE: message" for errors in the file (syntax, unknown method, bad argument or value). */
int kago_kagofile_load(const char *path, char *const *sets, struct kago_kagofile **out,
                       struct kago_error **err);
/* Same from memory; name is used in messages ("FILE:LINE: ..."). src need not be NUL-terminated. */
int kago_kagofile_load_string(const char *name, const char *src, size_t len, char *const *sets,
                              struct kago_kagofile **out, struct kago_error **err);
/* Evaluates the files in order in one mruby state (each must define something; messages name the file):
 * a directory of Kagofiles, one per site, costs one interpreter instead of one per file. A method or
 * constant one file defines is seen by those after it, as within one file. */
int kago_kagofile_load_files(const char *const *paths, size_t n, char *const *sets,
                             struct kago_kagofile **out, struct kago_error **err);
/* The file that defined app i (its own path for a file loaded alone). */
const char *kago_kagofile_app_path(const struct kago_kagofile *kf, size_t i);
void kago_kagofile_free(struct kago_kagofile *kf);
const char *kago_kagofile_path(const struct kago_kagofile *kf);

/* The containers in definition order (index < kago_kagofile_ncontainers). Owned by kf. */
size_t kago_kagofile_ncontainers(const struct kago_kagofile *kf);
const struct kago_spec *kago_kagofile_container(const struct kago_kagofile *kf, size_t i);
/* The container named name, or NULL. */
const struct kago_spec *kago_kagofile_find(const struct kago_kagofile *kf, const char *name);
/* Number of hooks of a kind ("before_start", "after_start", "on_exit", "on_oom", "on_failure",
 * "after", "every", "on_signal", "ready") defined for container i; for tools and tests. */
size_t kago_kagofile_nhooks(const struct kago_kagofile *kf, size_t i, const char *kind);

/* The apps (for `kago serve`) in definition order. Owned by kf; app->spec.name is the app's name. */
size_t kago_kagofile_napps(const struct kago_kagofile *kf);
const struct kago_app *kago_kagofile_app(const struct kago_kagofile *kf, size_t i);
/* Moves app i into *out (the caller then owns it: kago_app_free); kf keeps an empty app in its place.
 * Lets `kago serve` keep apps after freeing the file. */
void kago_kagofile_take_app(struct kago_kagofile *kf, size_t i, struct kago_app *out);

/* `kago run Kagofile`: the supervisor. */
struct kago_supervise_opts {
    const char *path;   /* the Kagofile */
    char *const *sets;  /* "key=value" list or NULL */
    const char *root;   /* state dir (--root) */
    char *const *names; /* NULL-terminated subset of containers to run, or NULL for all */
    bool detach;        /* daemonise once every container has started */
};
/* Loads the file, starts its containers and supervises them (hooks, timers, signals, reload) from
 * one event loop until every container has ended, then deletes them. Returns the process exit code:
 * 0 when every container exited 0 or was stopped by the supervisor, 1 otherwise; on a start failure
 * returns 1 with *err set and nothing left behind. With detach, the calling process returns 0 once
 * the (daemonised) supervisor reports that everything started. */
int kago_kagofile_supervise(const struct kago_supervise_opts *opts, struct kago_error **err);

/* `kago reload NAME`: asks the supervisor of container name (under root) to re-evaluate its Kagofile
 * and apply the changes. *report (caller frees) is the supervisor's account: what changed live and
 * what cannot change without a restart. Returns 0, or < 0 with *err set (no supervisor, reload failed). */
int kago_kagofile_reload(const char *root, const char *name, char **report, struct kago_error **err);

/* Where a supervisor records itself: <root>/supervisors/<name>.pid holds its pid for each container
 * it runs, and <root>/supervisors/<pid>.sock is its control socket. */
#define KAGO_SUPERVISORS_DIR "supervisors"

#endif
