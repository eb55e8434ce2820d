/* kago — the OCI runtime-spec front end: a bundle's config.json → struct kago_spec (docs/oci.md).
 * Strict: a field kago cannot honour is an error naming its JSON path, never ignored. */
#ifndef KAGO_CONFIG_OCI_H
#define KAGO_CONFIG_OCI_H

#include <stdbool.h>
#include <stddef.h>

#include <kago/kago.h>

/* The hooks kago runs (config.md, POSIX-platform hooks): those of the runtime namespace, in this order in
 * struct kago_oci. createContainer and startContainer are refused unless empty. */
enum kago_oci_hook_kind {
    KAGO_OCI_PRESTART,
    KAGO_OCI_CREATE_RUNTIME,
    KAGO_OCI_POSTSTART,
    KAGO_OCI_POSTSTOP,
    KAGO_OCI_HOOK_KINDS,
};

struct kago_oci_hook {
    char *path;  /* absolute */
    char **args; /* argv (args[0] is argv[0]), NULL-terminated; NULL when not given */
    char **env;  /* K=V, NULL-terminated; NULL when not given (an empty environment) */
    int timeout; /* seconds; 0 = none */
};

struct kago_oci_hooks {
    struct kago_oci_hook *v;
    size_t n;
};

/* What config.json says beyond the spec: the OCI front end's own. */
struct kago_oci {
    char *bundle;      /* the bundle directory, absolute */
    bool terminal;     /* process.terminal */
    char *annotations; /* the annotations object as JSON text ("{}" when none) */
    char *oci_version; /* ociVersion */
    struct kago_oci_hooks hooks[KAGO_OCI_HOOK_KINDS];
};

/* Reads BUNDLE/config.json into spec (which the caller initialised with kago_spec_init: every field the
 * file gives replaces kago's default; root.path is resolved against the bundle). Returns 0, or < 0 with
 * *err "config.json: PATH: why", or "FILE:LINE:COLUMN: ..." for malformed JSON. */
int kago_oci_load(const char *bundle, struct kago_spec *spec, struct kago_oci *oci, struct kago_error **err);
/* The same from text already read (path names the file in messages): for tests and the fuzzer. */
int kago_oci_load_string(const char *bundle, const char *path, const char *json, size_t len,
                         struct kago_spec *spec, struct kago_oci *oci, struct kago_error **err);
void kago_oci_free(struct kago_oci *oci);
/* The name of hook kind k in config.json ("createRuntime"); static. */
const char *kago_oci_hook_name(enum kago_oci_hook_kind k);
/* A hooks object (config.json's `hooks`, or what kago_oci_hooks_json wrote) into oci->hooks, which must be
 * empty; validated as config.json's. Returns 0 or < 0 with *err naming the JSON path (the lists read so far
 * stay in oci: kago_oci_free frees them). */
int kago_oci_load_hooks(const char *path, const char *json, size_t len, struct kago_oci *oci,
                        struct kago_error **err);
/* oci's hooks as a config.json `hooks` object (JSON text; only non-empty lists). The caller frees. */
char *kago_oci_hooks_json(const struct kago_oci *oci);
/* `exec --process FILE`: a process object (config.json's process) into proc (initialised by the caller).
 * *terminal gets process.terminal. Returns 0 or < 0 with *err naming the JSON path. */
int kago_oci_load_process(const char *path, const char *json, size_t len, struct kago_spec *proc,
                          bool *terminal, struct kago_error **err);
/* `update --resources FILE`: a LinuxResources object into spec->limits (fields absent stay unset; -1 for
 * memory.limit, cpu.quota, pids.limit: KAGO_NOLIMIT, as runc sets them unlimited). */
int kago_oci_load_resources(const char *path, const char *json, size_t len, struct kago_spec *spec,
                            struct kago_error **err);
/* `kago spec`: a default config.json (runc's layout, kago's defaults) that loads back. The caller frees. */
char *kago_oci_default_config(void);
/* `kago features`: the runtime-spec features document of what kago honours. The caller frees. */
char *kago_oci_features(void);

#endif
