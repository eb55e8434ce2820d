/* The OCI runtime forms of create and run (`--bundle`), as podman's conmon and containerd's shim call
 * runc: the bundle's config.json fills the spec (src/config/oci.c); create leaves the container's init
 * orphaned, to be adopted by the caller's subreaper, its pid in --pid-file and its terminal's master
 * sent to --console-socket before it returns. See docs/oci.md. */
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "cli.h"
#include "oci.h"

bool cli_oci_form(int argc, char **argv)
{
    for (int i = 1; i < argc && strcmp(argv[i], "--"); i++)
        if (!strcmp(argv[i], "--bundle") || !strcmp(argv[i], "-b") || !strncmp(argv[i], "--bundle=", 9))
            return true;
    return false;
}

struct oci_args {
    const char *bundle, *pid_file, *console_socket, *id;
    int preserve_fds;
    bool detach;
};

static int parse(const char *verb, int argc, char **argv, struct oci_args *a)
{
    static const struct option opts[] = {
        {"bundle", required_argument, NULL, 'b'},
        {"pid-file", required_argument, NULL, 'p'},
        {"console-socket", required_argument, NULL, 'c'},
        {"preserve-fds", required_argument, NULL, 'f'},
        {"detach", no_argument, NULL, 'd'},
        {"no-pivot", no_argument, NULL, 'P'},
        {"no-new-keyring", no_argument, NULL, 'K'},
        {"no-subreaper", no_argument, NULL, 'S'},
        {"keep", no_argument, NULL, 'k'},
        {NULL, 0, NULL, 0},
    };
    *a = (struct oci_args){.bundle = "."};
    int c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "b:d", opts, NULL)) != -1) {
        char *end;
        switch (c) {
        case 'b':
            a->bundle = optarg;
            break;
        case 'p':
            a->pid_file = optarg;
            break;
        case 'c':
            a->console_socket = optarg;
            break;
        case 'f':
            a->preserve_fds = (int)strtol(optarg, &end, 10);
            if (*end || a->preserve_fds < 0)
                return cli_usage(verb, "--preserve-fds %s: expected a number", optarg);
            break;
        case 'd':
            a->detach = true;
            break;
        case 'P': /* kago always pivots into the root and gives every container a new session keyring */
        case 'K': /* ... that it does not make: nothing to skip */
        case 'S':
        case 'k':
            break;
        default:
            return cli_usage(verb, "unknown option or missing value: %s", argv[optind - 1]);
        }
    }
    if (optind != argc - 1)
        return cli_usage(verb, "expected: kago %s --bundle DIR [OPTIONS] ID", verb);
    a->id = argv[optind];
    return 0;
}

/* The pid, as runc writes it: decimal, no newline, complete before create returns (conmon reads it then). */
int cli_write_pid_file(const char *path, pid_t pid)
{
    char tmp[PATH_MAX];
    snprintf(tmp, sizeof tmp, "%s.kago-tmp", path);
    FILE *f = fopen(tmp, "we");
    if (!f || fprintf(f, "%d", (int)pid) < 0 || fclose(f) != 0 || rename(tmp, path) < 0) {
        if (f)
            unlink(tmp);
        return cli_errorf("pid file %s: %s", path, strerror(errno));
    }
    return 0;
}

/* runc's console-socket protocol: one message naming the terminal, its master attached (SCM_RIGHTS). */
int cli_send_console(const char *path, int master)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof sa.sun_path)
        return cli_errorf("console socket %s: path too long", path);
    strcpy(sa.sun_path, path);
    int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0 || connect(s, (struct sockaddr *)&sa, sizeof sa) < 0) {
        int e = errno;
        if (s >= 0)
            close(s);
        return cli_errorf("console socket %s: connect: %s", path, strerror(e));
    }
    char name[] = "/dev/pts/0";
    struct iovec iov = {.iov_base = name, .iov_len = sizeof name};
    union {
        struct cmsghdr h;
        char space[CMSG_SPACE(sizeof(int))];
    } ctl = {0};
    struct msghdr mh = {
        .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.space, .msg_controllen = sizeof ctl.space};
    struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(cm), &master, sizeof(int));
    ssize_t n = sendmsg(s, &mh, MSG_NOSIGNAL);
    int e = errno;
    close(s);
    return n < 0 ? cli_errorf("console socket %s: send: %s", path, strerror(e)) : 0;
}

/* STATE_DIR/oci.json: what the OCI state reports beyond kago's own record. */
int cli_oci_write_record(struct cli *g, const char *id, const struct kago_oci *oci)
{
    json_object *o = json_object_new_object();
    json_object_object_add(o, "bundle", json_object_new_string(oci->bundle));
    json_object_object_add(o, "ociVersion",
                           json_object_new_string(oci->oci_version ? oci->oci_version : "1.1.0"));
    json_object *ann = json_tokener_parse(oci->annotations ? oci->annotations : "{}");
    json_object_object_add(o, "annotations", ann ? ann : json_object_new_object());
    char *hooks = kago_oci_hooks_json(oci); /* for start and delete (src/cli/oci_hooks.c) */
    json_object *h = json_tokener_parse(hooks);
    free(hooks);
    if (h && json_object_object_length(h))
        json_object_object_add(o, "hooks", h);
    else
        json_object_put(h);
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s/oci.json", g->root, id);
    int r = json_object_to_file_ext(path, o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
    json_object_put(o);
    return r < 0 ? cli_errorf("container %s: write %s: %s", id, path, strerror(errno)) : 0;
}

static int load(struct cli *g, const struct oci_args *a, struct kago_spec *spec, struct kago_oci *oci)
{
    struct kago_error *err = NULL;
    kago_spec_init(spec);
    if (kago_oci_load(a->bundle, spec, oci, &err) < 0) {
        kago_error_prefix(&err, "container %s", a->id);
        return cli_fail(err);
    }
    free(spec->name);
    spec->name = strdup(a->id);
    (void)g;
    /* systemd socket activation, as runc: the runtime's LISTEN_FDS sockets (fds 3..) come first, then the
     * --preserve-fds ones; the command is told of the sockets as their pid 1. Only when LISTEN_PID is
     * kago's own pid: otherwise they were meant for a process before it (runc ignores them too). */
    const char *lf = getenv("LISTEN_FDS"), *lp = getenv("LISTEN_PID");
    char self[24];
    snprintf(self, sizeof self, "%d", (int)getpid());
    int nlisten = lf && lp && !strcmp(lp, self) ? atoi(lf) : 0;
    if (nlisten > 0) {
        char kv[32];
        snprintf(kv, sizeof kv, "LISTEN_FDS=%d", nlisten);
        kago_spec_add_env(spec, kv);
        kago_spec_add_env(spec, "LISTEN_PID=1");
    }
    spec->preserve_fds = (unsigned)(nlisten > 0 ? nlisten : 0) + (unsigned)a->preserve_fds;
    for (unsigned i = 0; i < spec->preserve_fds; i++)
        if (fcntl(3 + (int)i, F_GETFD) < 0)
            return cli_errorf("container %s: preserved fd %u: %s", a->id, 3 + i, strerror(errno));
    return 0;
}

/* Removes a container, then runs its poststop hooks. Returns 0 or the exit code (message printed). */
static int remove_container(struct cli *g, struct kago_container *c, const struct kago_oci *oci)
{
    struct kago_error *err = NULL;
    struct cli_oci_poststop *ps = oci->hooks[KAGO_OCI_POSTSTOP].n ? cli_oci_poststop_prepare(g, c) : NULL;
    int rc = kago_container_delete(c, true, &err) < 0 ? cli_fail(err) : 0;
    cli_oci_poststop_finish(ps, rc == 0);
    return rc;
}

/* run: lets a container that waited for its prestart and createRuntime hooks (held) go, then runs its
 * poststart hooks. */
static int go(struct cli *g, struct kago_container *c, const struct kago_oci *oci, bool held)
{
    struct kago_error *err = NULL;
    if (held && kago_container_start(c, &err) < 0)
        return cli_fail(err);
    if (oci->hooks[KAGO_OCI_POSTSTART].n)
        cli_oci_hooks_poststart(g, c);
    return 0;
}

/* What create (and run --detach) do after the container is made: its terminal to the console socket, its
 * record, its prestart and createRuntime hooks, its pid file; run lets it go then. On failure the container
 * is removed. */
static int hand_over(struct cli *g, const struct oci_args *a, struct kago_container *c,
                     const struct kago_oci *oci, bool run, bool held)
{
    int master = kago_container_take_tty(c), rc = 0;
    if (master >= 0) {
        rc = cli_send_console(a->console_socket, master);
        close(master);
    }
    if (!rc)
        rc = cli_oci_write_record(g, a->id, oci);
    if (!rc)
        rc = cli_oci_hooks_create(g, c, oci);
    if (!rc && a->pid_file)
        rc = cli_write_pid_file(a->pid_file, kago_container_pid(c));
    if (!rc && run)
        rc = go(g, c, oci, held);
    if (rc)
        remove_container(g, c, oci);
    return rc;
}

/* run in the foreground: the same steps, then the container's exit code once it has ended and is
 * removed. */
static int run_foreground(struct cli *g, const struct oci_args *a, struct kago_container *c,
                          const struct kago_oci *oci, bool held)
{
    if (cli_oci_write_record(g, a->id, oci) == 0 && a->pid_file)
        cli_write_pid_file(a->pid_file, kago_container_pid(c));
    int rc = cli_oci_hooks_create(g, c, oci);
    if (!rc)
        rc = go(g, c, oci, held);
    if (!rc) {
        int master = kago_container_take_tty(c);
        int status = master >= 0 ? cli_wait_tty(kago_container_pid(c), master)
                                 : cli_wait_forwarding(kago_container_pid(c));
        rc = cli_exit_code(c, status);
    }
    remove_container(g, c, oci);
    return rc;
}

static int oci_create_or_run(struct cli *g, const char *verb, int argc, char **argv, bool run)
{
    struct oci_args a;
    int rc = parse(verb, argc, argv, &a);
    if (rc)
        return rc;
    struct kago_spec spec;
    struct kago_oci oci = {0};
    if ((rc = load(g, &a, &spec, &oci))) {
        kago_spec_free(&spec);
        kago_oci_free(&oci);
        return rc;
    }
    bool foreground = run && !a.detach, held = run && cli_oci_hooks_before_start(&oci);
    if (oci.terminal && !foreground && !a.console_socket)
        rc = cli_errorf("container %s: process.terminal is true: --console-socket is required", a.id);
    struct kago_spawn_opts o = {
        .stdio = {-1, -1, -1}, .wait_start = !run || held, .orphan = !foreground, .tty = oci.terminal};
    struct kago_container *c = NULL;
    struct kago_error *err = NULL;
    if (!rc && kago_container_create(g->root, &spec, &o, &c, &err) < 0)
        rc = cli_fail(err);
    kago_spec_free(&spec);
    if (!rc && !foreground)
        rc = hand_over(g, &a, c, &oci, run, held);
    else if (!rc)
        rc = run_foreground(g, &a, c, &oci, held);
    kago_container_free(c);
    kago_oci_free(&oci);
    return rc;
}

int cli_oci_create(struct cli *g, int argc, char **argv)
{
    return oci_create_or_run(g, "create", argc, argv, false);
}

int cli_oci_run(struct cli *g, int argc, char **argv)
{
    cli_hold_signals();
    return oci_create_or_run(g, "run", argc, argv, true);
}

/* The OCI state of a container made from a bundle, or NULL when it was not (kago's own record then). */
char *cli_oci_state(struct cli *g, struct kago_container *c)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s/oci.json", g->root, kago_container_name(c));
    json_object *rec = json_object_from_file(path), *v;
    if (!rec)
        return NULL;
    enum kago_status st = kago_container_status(c);
    json_object *o = json_object_new_object();
    json_object_object_add(o, "ociVersion",
                           json_object_object_get_ex(rec, "ociVersion", &v)
                               ? json_object_get(v)
                               : json_object_new_string("1.1.0"));
    json_object_object_add(o, "id", json_object_new_string(kago_container_name(c)));
    json_object_object_add(o, "pid", json_object_new_int(st == KAGO_STOPPED ? 0 : kago_container_pid(c)));
    json_object_object_add(o, "status", json_object_new_string(kago_status_name(st)));
    if (json_object_object_get_ex(rec, "bundle", &v)) {
        json_object_object_add(o, "bundle", json_object_get(v));
        const struct kago_spec *s = kago_container_spec(c);
        json_object_object_add(o, "rootfs", json_object_new_string(s->rootfs ? s->rootfs : ""));
    }
    char created[40] = "";
    time_t t = (time_t)kago_container_created(c);
    strftime(created, sizeof created, "%Y-%m-%dT%H:%M:%SZ", gmtime(&t));
    json_object_object_add(o, "created", json_object_new_string(created));
    json_object_object_add(o, "annotations",
                           json_object_object_get_ex(rec, "annotations", &v) ? json_object_get(v)
                                                                             : json_object_new_object());
    json_object_object_add(o, "owner", json_object_new_string(""));
    char *text =
        strdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
    json_object_put(o);
    json_object_put(rec);
    return text;
}
