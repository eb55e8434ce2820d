/* OCI hooks (runtime-spec config.md, "POSIX-platform Hooks") of the runtime namespace: prestart and
 * createRuntime before a created container's process runs, poststart after start, poststop after delete.
 * Each runs in kago's namespaces with exactly its env, the container's OCI state JSON on its stdin, its
 * stdout and stderr on kago's stderr, in a process group of its own that a timeout kills. The lists come
 * from config.json at create and are kept in the state dir's oci.json for start and delete. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "cli.h"
#include "oci.h"

struct cli_oci_poststop {
    struct kago_oci oci;
    char *id;
    char *state;
};

/* A pipe holding text, to be the hook's stdin: written whole before the hook starts (the pipe grown to fit,
 * the write never blocking), so a hook that never reads cannot hold kago up. Returns its read end, or -1
 * with *err set. */
static int stdin_pipe(const char *text, struct kago_error **err)
{
    int p[2];
    size_t len = strlen(text);
    if (pipe2(p, O_CLOEXEC) < 0)
        return kago_error_set(err, errno, "pipe");
    if (len > 65536 && len < INT_MAX)
        fcntl(p[1], F_SETPIPE_SZ, (int)len); /* else the write below tells */
    fcntl(p[1], F_SETFL, O_NONBLOCK);
    ssize_t n = write(p[1], text, len);
    int e = errno;
    close(p[1]);
    if (n != (ssize_t)len) {
        close(p[0]);
        return kago_error_set(err, n < 0 ? e : EMSGSIZE, "the state (%zu bytes) as its stdin", len);
    }
    return p[0];
}

/* Starts hook h with stdin in: its own process group, default signals, nothing of kago's beyond stdio. */
static int spawn_hook(const struct kago_oci_hook *h, int in, pid_t *pid, struct kago_error **err)
{
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t at;
    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all);
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, in, 0);
    posix_spawn_file_actions_adddup2(&fa, 2, 1);
    posix_spawn_file_actions_addclosefrom_np(&fa, 3);
    posix_spawnattr_init(&at);
    posix_spawnattr_setsigmask(&at, &none); /* run blocks the signals it forwards */
    posix_spawnattr_setsigdefault(&at, &all);
    posix_spawnattr_setpgroup(&at, 0);
    posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETPGROUP);
    char *argv0[] = {h->path, NULL}, *noenv[] = {NULL};
    int e =
        posix_spawn(pid, h->path, &fa, &at, h->args && h->args[0] ? h->args : argv0, h->env ? h->env : noenv);
    posix_spawnattr_destroy(&at);
    posix_spawn_file_actions_destroy(&fa);
    return e ? kago_error_set(err, e, "start") : 0;
}

static int64_t now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* Waits for pid, killing its process group once timeout seconds (0: no limit) have passed (*expired then).
 * Returns its wait status. */
static int wait_hook(pid_t pid, int timeout, bool *expired)
{
    int status = 0, fd = timeout > 0 ? (int)syscall(SYS_pidfd_open, pid, 0) : -1;
    *expired = false;
    if (fd >= 0) {
        int64_t end = now_ms() + (int64_t)timeout * 1000;
        struct pollfd p = {.fd = fd, .events = POLLIN};
        for (;;) {
            int64_t left = end - now_ms();
            if (left <= 0) {
                *expired = true;
                break;
            }
            int r = poll(&p, 1, left > INT_MAX ? INT_MAX : (int)left);
            if (r > 0 || (r < 0 && errno != EINTR))
                break;
        }
        close(fd);
    }
    if (*expired) {
        kill(-pid, SIGKILL);
        kill(pid, SIGKILL); /* in case it left its group */
    }
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    return status;
}

/* Runs one hook to its end. Returns 0 when it exited 0, else -1 with *err "hooks.KIND[I] PATH: why". */
static int run_hook(const struct kago_oci_hook *h, enum kago_oci_hook_kind kind, size_t i, const char *state,
                    struct kago_error **err)
{
    pid_t pid;
    bool expired = false;
    int in = stdin_pipe(state, err), r = in < 0 ? -1 : spawn_hook(h, in, &pid, err);
    if (in >= 0)
        close(in);
    int status = r < 0 ? 0 : wait_hook(pid, h->timeout, &expired);
    if (r == 0 && expired)
        r = kago_error_set(err, 0, "timed out after %d s", h->timeout);
    else if (r == 0 && WIFSIGNALED(status))
        r = kago_error_set(err, 0, "killed by signal %d (%s)", WTERMSIG(status), strsignal(WTERMSIG(status)));
    else if (r == 0 && WEXITSTATUS(status))
        r = kago_error_set(err, 0, "exit status %d", WEXITSTATUS(status));
    if (r < 0)
        kago_error_prefix(err, "hooks.%s[%zu] %s", kago_oci_hook_name(kind), i, h->path);
    return r < 0 ? -1 : 0;
}

/* Runs the hooks of kind in order. With warn, each failure is a warning and the rest still run (poststart,
 * poststop); without, the first failure stops them: -1 with *err set. */
static int run_kind(const struct kago_oci *oci, enum kago_oci_hook_kind kind, const char *id,
                    const char *state, bool warn, struct kago_error **err)
{
    for (size_t i = 0; i < oci->hooks[kind].n; i++) {
        struct kago_error *e = NULL;
        if (run_hook(&oci->hooks[kind].v[i], kind, i, state, &e) == 0)
            continue;
        if (!warn) {
            *err = e;
            return -1;
        }
        cli_warnf("container %s: %s", id, e->msg);
        kago_error_free(e);
    }
    return 0;
}

bool cli_oci_hooks_before_start(const struct kago_oci *oci)
{
    return oci->hooks[KAGO_OCI_PRESTART].n || oci->hooks[KAGO_OCI_CREATE_RUNTIME].n;
}

int cli_oci_hooks_create(struct cli *g, struct kago_container *c, const struct kago_oci *oci)
{
    if (!cli_oci_hooks_before_start(oci))
        return 0;
    const char *id = kago_container_name(c);
    char *state = cli_oci_state(g, c);
    if (!state)
        return cli_errorf("container %s: the OCI state for its hooks: no oci.json", id);
    struct kago_error *err = NULL;
    int r = run_kind(oci, KAGO_OCI_PRESTART, id, state, false, &err);
    if (r == 0)
        r = run_kind(oci, KAGO_OCI_CREATE_RUNTIME, id, state, false, &err);
    free(state);
    if (r < 0) {
        kago_error_prefix(&err, "container %s", id);
        return cli_fail(err);
    }
    return 0;
}

/* The hooks kept in ROOT/ID/oci.json into oci (left empty when there are none). 0, or -1 after a
 * warning. */
static int stored_hooks(struct cli *g, const char *id, struct kago_oci *oci)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s/oci.json", g->root, id);
    *oci = (struct kago_oci){0};
    json_object *rec = json_object_from_file(path), *h;
    if (!rec || !json_object_object_get_ex(rec, "hooks", &h)) {
        json_object_put(rec);
        return 0;
    }
    const char *text = json_object_to_json_string_ext(h, JSON_C_TO_STRING_PLAIN);
    struct kago_error *err = NULL;
    int r = kago_oci_load_hooks("oci.json", text, strlen(text), oci, &err);
    json_object_put(rec);
    if (r < 0) {
        cli_warnf("container %s: its hooks: %s", id, err->msg);
        kago_error_free(err);
        kago_oci_free(oci);
    }
    return r;
}

void cli_oci_hooks_poststart(struct cli *g, struct kago_container *c)
{
    struct kago_oci oci;
    const char *id = kago_container_name(c);
    if (stored_hooks(g, id, &oci) < 0 || !oci.hooks[KAGO_OCI_POSTSTART].n) {
        kago_oci_free(&oci);
        return;
    }
    char *state = cli_oci_state(g, c);
    if (state)
        run_kind(&oci, KAGO_OCI_POSTSTART, id, state, true, NULL);
    free(state);
    kago_oci_free(&oci);
}

/* state with status "stopped" and no pid, as a stopped container's state reads. */
static char *stopped(const char *state)
{
    json_object *o = json_tokener_parse(state);
    if (!o)
        return NULL;
    json_object_object_add(o, "status", json_object_new_string("stopped"));
    json_object_object_add(o, "pid", json_object_new_int(0));
    char *text =
        strdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
    json_object_put(o);
    if (!text)
        abort();
    return text;
}

struct cli_oci_poststop *cli_oci_poststop_prepare(struct cli *g, struct kago_container *c)
{
    struct cli_oci_poststop *p = calloc(1, sizeof *p);
    if (!p)
        abort();
    char *state = NULL;
    if (stored_hooks(g, kago_container_name(c), &p->oci) < 0 || !p->oci.hooks[KAGO_OCI_POSTSTOP].n ||
        !(state = cli_oci_state(g, c))) {
        cli_oci_poststop_finish(p, false);
        return NULL;
    }
    p->state = stopped(state);
    p->id = strdup(kago_container_name(c));
    free(state);
    if (!p->id || !p->state)
        abort();
    return p;
}

void cli_oci_poststop_finish(struct cli_oci_poststop *p, bool run)
{
    if (!p)
        return;
    if (run)
        run_kind(&p->oci, KAGO_OCI_POSTSTOP, p->id, p->state, true, NULL);
    kago_oci_free(&p->oci);
    free(p->id);
    free(p->state);
    free(p);
}
