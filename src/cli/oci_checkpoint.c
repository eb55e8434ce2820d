/* The OCI runtime forms of checkpoint and restore, as podman (through conmon) and containerd's shim call
 * runc, over kago's own CRIU support (include/kago/checkpoint.h):
 *   checkpoint --image-path P [--work-path W] [--leave-running] [--file-locks] ... ID
 *   restore --bundle B --image-path P [--work-path W] [--pid-file F] [--detach] ... ID
 * Each runc option maps to what kago's checkpoint does, or is refused naming it and why: kago's dump is
 * one pass with fixed CRIU settings (file locks, cgroups left alone, the network namespace external),
 * so an option that asks for something else must not pass silently. Restore then behaves as OCI create
 * does for its caller: the pid file, the init left to the caller's subreaper, the OCI record. See
 * docs/oci.md. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <kago/checkpoint.h>

#include "cli.h"
#include "oci.h"

static bool has_option(int argc, char **argv, const char *const *names)
{
    for (int i = 1; i < argc && strcmp(argv[i], "--"); i++)
        for (size_t n = 0; names[n]; n++) {
            size_t len = strlen(names[n]);
            if (!strncmp(argv[i], names[n], len) && (argv[i][len] == '\0' || argv[i][len] == '='))
                return true;
        }
    return false;
}

bool cli_oci_checkpoint_form(int argc, char **argv)
{
    static const char *const names[] = {"--image-path", "--work-path", NULL};
    return has_option(argc, argv, names);
}

bool cli_oci_restore_form(int argc, char **argv)
{
    static const char *const names[] = {"--bundle", "-b", "--image-path", "--work-path", NULL};
    return has_option(argc, argv, names);
}

/* runc's options kago's CRIU support does not cover, each with the reason it gives. */
enum {
    O_TCP = 2000,
    O_EXT_UNIX,
    O_SHELL_JOB,
    O_EMPTY_NS,
    O_PRE_DUMP,
    O_PAGE_SERVER,
    O_STATUS_FD,
    O_AUTO_DEDUP,
    O_PARENT_PATH,
    O_LSM_PROFILE,
    O_LSM_MOUNT,
    O_CONSOLE,
    O_LAZY_DUMP,
};

static const struct {
    int code;
    const char *name, *why;
} refused[] = {
    {O_TCP, "--tcp-established",
     "kago's checkpoint keeps listening sockets only, not established TCP connections"},
    {O_EXT_UNIX, "--ext-unix-sk", "kago does not dump unix sockets connected outside the container"},
    {O_SHELL_JOB, "--shell-job", "kago checkpoints containers without a terminal only"},
    {O_EMPTY_NS, "--empty-ns",
     "kago restores the container's network namespace afresh (loopback only) and joins no other"},
    {O_PRE_DUMP, "--pre-dump", "kago dumps a container in one pass (no iterative migration)"},
    {O_PAGE_SERVER, "--page-server", "kago writes the whole image locally"},
    {O_STATUS_FD, "--status-fd", "kago has no lazy migration to report the status of"},
    {O_AUTO_DEDUP, "--auto-dedup", "kago's restore reads the image again for each instance"},
    {O_PARENT_PATH, "--parent-path", "kago dumps a container in one pass (no pre-dump to build on)"},
    {O_LSM_PROFILE, "--lsm-profile", "kago applies no AppArmor or SELinux profile"},
    {O_LSM_MOUNT, "--lsm-mount-context", "kago applies no SELinux mount context"},
    {O_CONSOLE, "--console-socket", "kago restores containers without a terminal only"},
    {O_LAZY_DUMP, "--lazy-pages",
     "on checkpoint kago writes a complete image (restore --lazy-pages then copies it on demand)"},
};

static int refuse(const char *verb, int code)
{
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++)
        if (refused[i].code == code)
            return cli_errorf("%s %s: not supported: %s", verb, refused[i].name, refused[i].why);
    return cli_errorf("%s: option not supported", verb);
}

/* kago leaves cgroups alone in CRIU (the restore makes the container's cgroup itself): runc's "ignore". */
static int cgroups_mode(const char *verb, const char *mode)
{
    if (!strcmp(mode, "ignore"))
        return 0;
    return cli_errorf("%s --manage-cgroups-mode %s: not supported: kago only ignores cgroups in CRIU (it "
                      "restores into a cgroup it makes with the checkpointed limits): use ignore",
                      verb, mode);
}

/* The options both verbs take: the refused ones, --file-locks (always on), --manage-cgroups-mode. */
static const struct option common_opts[] = {
    {"image-path", required_argument, NULL, 'i'},    {"work-path", required_argument, NULL, 'w'},
    {"file-locks", no_argument, NULL, 'F'},          {"manage-cgroups-mode", required_argument, NULL, 'm'},
    {"tcp-established", no_argument, NULL, O_TCP},   {"ext-unix-sk", no_argument, NULL, O_EXT_UNIX},
    {"shell-job", no_argument, NULL, O_SHELL_JOB},   {"empty-ns", required_argument, NULL, O_EMPTY_NS},
    {"auto-dedup", no_argument, NULL, O_AUTO_DEDUP}, {"help", no_argument, NULL, 'h'},
};

#define MAX_OPTS 32

/* common_opts, then the verb's own (own ends with a zero entry), into out. */
static void make_opts(struct option *out, const struct option *own)
{
    size_t n = 0;
    for (size_t i = 0; i < sizeof common_opts / sizeof common_opts[0]; i++)
        out[n++] = common_opts[i];
    for (; own->name && n < MAX_OPTS - 1; own++)
        out[n++] = *own;
    out[n] = (struct option){0};
}

/* 1 when ch was one of the common options (handled), 0 when not, or the exit code negated. */
static int common_option(const char *verb, int ch, char **argv, const char **image, const char **work)
{
    switch (ch) {
    case 'i':
        *image = optarg;
        return 1;
    case 'w': /* CRIU's logs stay in the image (dump.log) and the state dir (restore.log) */
        *work = optarg;
        return 1;
    case 'F': /* kago always dumps and restores file locks */
        return 1;
    case 'm':
        return cgroups_mode(verb, optarg) ? -1 : 1;
    case '?':
    case ':':
        return -cli_usage(verb, "unknown option or missing value: %s", argv[optind - 1]);
    default:
        return ch >= O_TCP ? -refuse(verb, ch) : 0;
    }
}

static void checkpoint_usage(void)
{
    printf("usage: kago checkpoint --image-path DIR [--work-path DIR] [--leave-running] [--file-locks]\n"
           "                       [--manage-cgroups-mode ignore] ID\n"
           "runc's form (docs/oci.md); kago's own: kago checkpoint NAME --image DIR\n");
}

int cli_oci_checkpoint(struct cli *g, int argc, char **argv)
{
    static const struct option own[] = {
        {"leave-running", no_argument, NULL, 'l'},
        {"pre-dump", no_argument, NULL, O_PRE_DUMP},
        {"page-server", required_argument, NULL, O_PAGE_SERVER},
        {"status-fd", required_argument, NULL, O_STATUS_FD},
        {"parent-path", required_argument, NULL, O_PARENT_PATH},
        {"lazy-pages", no_argument, NULL, O_LAZY_DUMP},
        {NULL, 0, NULL, 0},
    };
    struct option opts[MAX_OPTS];
    make_opts(opts, own);
    struct kago_checkpoint_opts o = {0};
    const char *image = NULL, *work = NULL;
    int ch, r;
    opterr = 0;
    while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (ch == 'h') {
            checkpoint_usage();
            return 0;
        }
        if (ch == 'l') {
            o.leave_running = true;
        } else if ((r = common_option("checkpoint", ch, argv, &image, &work)) < 0) {
            return -r;
        } else if (r == 0) {
            return cli_usage("checkpoint", "unknown option %s", argv[optind - 1]);
        }
    }
    if (optind != argc - 1 || !image)
        return cli_usage("checkpoint", "expected: kago checkpoint --image-path DIR [OPTIONS] ID");
    struct kago_container *c = cli_load(g, argv[optind]);
    if (!c)
        return 1;
    struct kago_error *err = NULL;
    int rc = kago_container_checkpoint(c, image, &o, &err);
    kago_container_free(c);
    return rc < 0 ? cli_fail(err) : 0;
}

struct restore_args {
    const char *bundle, *image, *work, *pid_file, *id;
    bool detach, lazy_pages;
};

static void restore_usage(void)
{
    printf(
        "usage: kago restore --bundle DIR --image-path DIR [--work-path DIR] [--pid-file FILE] [--detach]\n"
        "                    [--lazy-pages] [--file-locks] [--manage-cgroups-mode ignore] ID\n"
        "runc's form (docs/oci.md); kago's own: kago restore --image DIR [--name NEW] [--detach]\n");
}

/* 0, -0x100 after --help, or the exit code negated. */
static int restore_parse(int argc, char **argv, struct restore_args *a)
{
    static const struct option own[] = {
        {"bundle", required_argument, NULL, 'b'},
        {"pid-file", required_argument, NULL, 'p'},
        {"detach", no_argument, NULL, 'd'},
        {"lazy-pages", no_argument, NULL, 'l'},
        {"no-subreaper", no_argument, NULL, 'S'},
        {"no-pivot", no_argument, NULL, 'P'},
        {"console-socket", required_argument, NULL, O_CONSOLE},
        {"lsm-profile", required_argument, NULL, O_LSM_PROFILE},
        {"lsm-mount-context", required_argument, NULL, O_LSM_MOUNT},
        {NULL, 0, NULL, 0},
    };
    struct option opts[MAX_OPTS];
    make_opts(opts, own);
    *a = (struct restore_args){.bundle = "."};
    int ch, r;
    opterr = 0;
    while ((ch = getopt_long(argc, argv, "b:d", opts, NULL)) != -1) {
        switch (ch) {
        case 'h':
            restore_usage();
            return -0x100;
        case 'b':
            a->bundle = optarg;
            break;
        case 'p':
            a->pid_file = optarg;
            break;
        case 'd':
            a->detach = true;
            break;
        case 'l':
            a->lazy_pages = true;
            break;
        case 'S': /* kago is no subreaper of the restored init beyond the restore itself */
        case 'P': /* CRIU takes the root as it is: there is no pivot to skip */
            break;
        default:
            if ((r = common_option("restore", ch, argv, &a->image, &a->work)) < 0)
                return r;
            if (r == 0)
                return -cli_usage("restore", "unknown option %s", argv[optind - 1]);
        }
    }
    if (optind != argc - 1 || !a->image)
        return -cli_usage("restore", "expected: kago restore --bundle DIR --image-path DIR [OPTIONS] ID");
    a->id = argv[optind];
    return 0;
}

/* The bundle's root must be the one the image was taken on: CRIU restores the processes onto the rootfs
 * the image recorded (their open files are paths in it), and kago does not move them to another. */
static int same_rootfs(const struct restore_args *a, const struct kago_spec *bundle, struct kago_container *c)
{
    const char *img = kago_container_spec(c)->rootfs;
    char rb[PATH_MAX], ri[PATH_MAX];
    if (bundle->rootfs && img && realpath(bundle->rootfs, rb) && realpath(img, ri) && !strcmp(rb, ri))
        return 0;
    return cli_errorf("restore %s: config.json: root.path %s is not the rootfs the image was taken on (%s)",
                      a->id, bundle->rootfs ? bundle->rootfs : "(none)", img ? img : "(none)");
}

/* After the restore: the checks against the bundle, the OCI record, the pid file. On failure the
 * restored container is removed. */
static int hand_over(struct cli *g, const struct restore_args *a, const struct kago_spec *spec,
                     const struct kago_oci *oci, struct kago_container *c)
{
    int rc = same_rootfs(a, spec, c);
    if (!rc)
        rc = cli_oci_write_record(g, a->id, oci);
    if (!rc && a->pid_file)
        rc = cli_write_pid_file(a->pid_file, kago_container_pid(c));
    if (rc)
        kago_container_delete(c, true, NULL);
    return rc;
}

int cli_oci_restore(struct cli *g, int argc, char **argv)
{
    struct restore_args a;
    int rc = restore_parse(argc, argv, &a);
    if (rc)
        return rc == -0x100 ? 0 : -rc;
    struct kago_spec spec;
    struct kago_oci oci = {0};
    struct kago_error *err = NULL;
    kago_spec_init(&spec);
    if (kago_oci_load(a.bundle, &spec, &oci, &err) < 0) {
        kago_error_prefix(&err, "restore %s", a.id);
        rc = cli_fail(err);
    } else if (oci.terminal) {
        rc = cli_errorf("restore %s: config.json: process.terminal: a container with a terminal cannot be "
                        "restored by kago",
                        a.id);
    }
    if (!a.detach)
        cli_hold_signals();
    /* Without kago's own --detach (a shim) the restored init is adopted by this process, a subreaper for
     * the restore: once it exits, the init passes to the caller's subreaper, as OCI create leaves it. */
    struct kago_restore_opts o = {.name = a.id, .lazy_pages = a.lazy_pages};
    struct kago_container *c = NULL;
    if (!rc && kago_container_restore(g->root, a.image, &o, &c, &err) < 0)
        rc = cli_fail(err);
    if (!rc)
        rc = hand_over(g, &a, &spec, &oci, c);
    if (!rc && !a.detach) {
        rc = cli_exit_code(c, cli_wait_forwarding(kago_container_pid(c)));
        if (kago_container_delete(c, true, &err) < 0)
            cli_fail(err);
    }
    kago_container_free(c);
    kago_spec_free(&spec);
    kago_oci_free(&oci);
    return rc;
}
