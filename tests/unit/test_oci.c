/* Unit tests of the OCI front end: config.json → struct kago_spec, strict about what it cannot honour. */
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "oci.h"
#include "tap.h"

/* runc spec's output (runc 1.1), less its terminal and its cgroup mount (kago refuses that mount, tested
 * below). */
static const char *const runc_spec =
    "{\"ociVersion\":\"1.0.2-dev\",\"process\":{\"terminal\":false,\"user\":{\"uid\":0,\"gid\":0},\"args\":["
    "\"sh\"],"
    "\"env\":[\"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/"
    "bin\",\"TERM=xterm\"],\"cwd\":\"/\","
    "\"capabilities\":{\"bounding\":[\"CAP_AUDIT_WRITE\",\"CAP_KILL\",\"CAP_NET_BIND_SERVICE\"],"
    "\"effective\":[\"CAP_AUDIT_WRITE\",\"CAP_KILL\",\"CAP_NET_BIND_SERVICE\"],"
    "\"permitted\":[\"CAP_AUDIT_WRITE\",\"CAP_KILL\",\"CAP_NET_BIND_SERVICE\"],"
    "\"ambient\":[\"CAP_AUDIT_WRITE\",\"CAP_KILL\",\"CAP_NET_BIND_SERVICE\"]},"
    "\"rlimits\":[{\"type\":\"RLIMIT_NOFILE\",\"hard\":1024,\"soft\":1024}],\"noNewPrivileges\":true},"
    "\"root\":{\"path\":\"rootfs\",\"readonly\":true},\"hostname\":\"runc\",\"mounts\":["
    "{\"destination\":\"/proc\",\"type\":\"proc\",\"source\":\"proc\"},"
    "{\"destination\":\"/"
    "dev\",\"type\":\"tmpfs\",\"source\":\"tmpfs\",\"options\":[\"nosuid\",\"strictatime\","
    "\"mode=755\",\"size=65536k\"]},"
    "{\"destination\":\"/dev/"
    "pts\",\"type\":\"devpts\",\"source\":\"devpts\",\"options\":[\"nosuid\",\"noexec\","
    "\"newinstance\",\"ptmxmode=0666\",\"mode=0620\",\"gid=5\"]},"
    "{\"destination\":\"/dev/shm\",\"type\":\"tmpfs\",\"source\":\"shm\",\"options\":[\"nosuid\",\"noexec\","
    "\"nodev\",\"mode=1777\",\"size=65536k\"]},"
    "{\"destination\":\"/dev/mqueue\",\"type\":\"mqueue\",\"source\":\"mqueue\",\"options\":[\"nosuid\","
    "\"noexec\",\"nodev\"]},"
    "{\"destination\":\"/sys\",\"type\":\"sysfs\",\"source\":\"sysfs\",\"options\":[\"nosuid\",\"noexec\","
    "\"nodev\",\"ro\"]}],"
    "\"linux\":{\"resources\":{\"devices\":[{\"allow\":false,\"access\":\"rwm\"}]},\"namespaces\":[{\"type\":"
    "\"pid\"},"
    "{\"type\":\"network\"},{\"type\":\"ipc\"},{\"type\":\"uts\"},{\"type\":\"mount\"}],"
    "\"maskedPaths\":[\"/proc/kcore\"],\"readonlyPaths\":[\"/proc/sys\"]}}";

static int load(const char *json, struct kago_spec *s, struct kago_oci *o, char **why)
{
    struct kago_error *err = NULL;
    kago_spec_init(s);
    int r = kago_oci_load_string("/b", "/b/config.json", json, strlen(json), s, o, &err);
    *why = err ? strdup(err->msg) : NULL;
    kago_error_free(err);
    return r;
}

static void test_runc_spec(void)
{
    struct kago_spec s;
    struct kago_oci o;
    char *why;
    ok(load(runc_spec, &s, &o, &why) == 0, "runc spec's config loads: %s", why ? why : "ok");
    is_str(s.rootfs, "/b/rootfs", "root.path against the bundle");
    ok(s.readonly && s.no_new_privs && !o.terminal, "readonly, noNewPrivileges, terminal");
    is_str(s.argv[0], "sh", "args");
    ok(s.env[1] && !strcmp(s.env[1], "TERM=xterm") && !s.env[2], "env replaces kago's defaults");
    is_str(s.hostname, "runc", "hostname");
    ok(s.caps == ((1ULL << 29) | (1ULL << 5) | (1ULL << 10)), "the capability set: %llx",
       (unsigned long long)s.caps);
    ok(s.nrlimits == 1 && s.rlimits[0].resource == RLIMIT_NOFILE && s.rlimits[0].soft == 1024, "rlimits");
    ok(s.ns == ((1u << KAGO_NS_PID) | (1u << KAGO_NS_NET) | (1u << KAGO_NS_IPC) | (1u << KAGO_NS_UTS) |
                (1u << KAGO_NS_MOUNT)),
       "the namespaces listed, and only those");
    ok(s.nmounts == 0, "the standard mounts are kago's own");
    ok(s.masked_paths[0] && !strcmp(s.masked_paths[0], "/proc/kcore") && !s.masked_paths[1], "maskedPaths");
    ok(s.seccomp.mode == KAGO_SECCOMP_UNCONFINED, "no seccomp given: none");
    is_str(o.oci_version, "1.0.2-dev", "ociVersion");
    free(why);
    kago_oci_free(&o);
    kago_spec_free(&s);
}

/* runc_spec with one substring replaced. */
static char *patch(const char *from, const char *to)
{
    const char *at = strstr(runc_spec, from);
    if (!at)
        abort();
    size_t n = strlen(runc_spec) - strlen(from) + strlen(to) + 1;
    char *out = malloc(n);
    snprintf(out, n, "%.*s%s%s", (int)(at - runc_spec), runc_spec, to, at + strlen(from));
    return out;
}

static void test_fields(void)
{
    static const char *const res = "\"resources\":{\"devices\":[{\"allow\":false,\"access\":\"rwm\"}]}";
    char *j = patch(
        res,
        "\"resources\":{\"cpu\":{\"shares\":1024,\"quota\":30000,\"period\":100000,\"cpus\":\"0\"},"
        "\"memory\":{\"limit\":67108864},\"pids\":{\"limit\":50},\"devices\":[{\"allow\":false,"
        "\"access\":\"rwm\"},{\"allow\":true,\"type\":\"c\",\"major\":1,\"minor\":3,\"access\":\"rwm\"}]},"
        "\"uidMappings\":[{\"containerID\":0,\"hostID\":100000,\"size\":65536}],"
        "\"seccomp\":{\"defaultAction\":\"SCMP_ACT_ALLOW\",\"architectures\":[\"SCMP_ARCH_X86_64\"],"
        "\"syscalls\":[{\"names\":[\"mkdir\"],\"action\":\"SCMP_ACT_ERRNO\",\"errnoRet\":1}]}");
    struct kago_spec s;
    struct kago_oci o;
    char *why;
    ok(load(j, &s, &o, &why) == 0, "resources, idmaps, seccomp load: %s", why ? why : "ok");
    ok(s.limits.cpu_quota_us == 30000 && s.limits.cpu_period_us == 100000 && s.limits.cpu_weight == 39,
       "cpu quota, period, shares 1024 → weight 39 (%lld)", (long long)s.limits.cpu_weight);
    ok(s.limits.memory == 64 << 20 && s.limits.pids == 50 && s.limits.cpuset && !strcmp(s.limits.cpuset, "0"),
       "memory, pids, cpuset");
    ok(s.nuidmap == 1 && s.uidmap[0].outside == 100000, "uid map");
    ok(s.seccomp.mode == KAGO_SECCOMP_CUSTOM && s.seccomp.nrules == 1 &&
           !strcmp(s.seccomp.rules[0].syscall, "mkdir"),
       "the seccomp profile");
    free(why);
    free(j);
    kago_oci_free(&o);
    kago_spec_free(&s);
}

static void test_seccomp_args(void)
{
    char *j = patch("\"maskedPaths\"",
                    "\"seccomp\":{\"defaultAction\":\"SCMP_ACT_ALLOW\",\"syscalls\":[{\"names\":"
                    "[\"personality\"],\"action\":\"SCMP_ACT_ERRNO\",\"args\":[{\"index\":0,"
                    "\"value\":8,\"valueTwo\":0,\"op\":\"SCMP_CMP_NE\"}]}]},\"maskedPaths\""),
         *why;
    struct kago_spec s;
    struct kago_oci o;
    ok(load(j, &s, &o, &why) == 0 && s.seccomp.nrules == 1 && s.seccomp.rules[0].nargs == 1 &&
           s.seccomp.rules[0].args[0].op == 1 && s.seccomp.rules[0].args[0].value == 8,
       "a seccomp argument filter: %s", why ? why : "ok");
    free(why);
    free(j);
    kago_oci_free(&o);
    kago_spec_free(&s);
    j = patch("\"maskedPaths\"", "\"seccomp\":{\"defaultAction\":\"SCMP_ACT_ALLOW\",\"syscalls\":[{\"names\":"
                                 "[\"personality\"],\"action\":\"SCMP_ACT_ERRNO\",\"args\":[{\"index\":9,"
                                 "\"op\":\"SCMP_CMP_EQ\"}]}]},\"maskedPaths\"");
    ok(load(j, &s, &o, &why) < 0 && why && strstr(why, "linux.seccomp") && strstr(why, "args[0]"),
       "a bad argument index refused: %s", why ? why : "(loaded)");
    free(why);
    free(j);
    kago_oci_free(&o);
    kago_spec_free(&s);
}

static void test_groups_oom(void)
{
    char *j = patch("\"gid\":0}", "\"gid\":0,\"additionalGids\":[10,20]},\"oomScoreAdj\":300"), *why;
    struct kago_spec s;
    struct kago_oci o;
    ok(load(j, &s, &o, &why) == 0 && s.ngroups == 2 && s.groups[0] == 10 && s.groups[1] == 20,
       "additionalGids: %s", why ? why : "ok");
    ok(s.oom_score_adj_set && s.oom_score_adj == 300, "oomScoreAdj");
    free(why);
    free(j);
    kago_oci_free(&o);
    kago_spec_free(&s);
}

static void test_refused(void)
{
    static const char *const cases[][3] = {
        {"\"hostname\":\"runc\"", "\"hostname\":\"runc\",\"hooks\":{\"prestart\":[{\"path\":\"/x\"}]}",
         "hooks"},
        {"\"maskedPaths\"", "\"sysctl\":{\"a\":1},\"maskedPaths\"", "linux.sysctl"},
        {"\"maskedPaths\"", "\"intelRdt\":{\"closID\":\"x\"},\"maskedPaths\"", "linux.intelRdt"},
        {"\"maskedPaths\"", "\"cgroupsPath\":\"/x\",\"maskedPaths\"", "linux.cgroupsPath"},
        {"\"noNewPrivileges\":true", "\"noNewPrivileges\":true,\"apparmorProfile\":\"p\"",
         "process.apparmorProfile"},
        {"\"gid\":0}", "\"gid\":0,\"username\":\"root\"}", "process.user.username"},
        {"\"ambient\":[\"CAP_AUDIT_WRITE\",", "\"ambient\":[\"CAP_SYS_ADMIN\",", "process.capabilities"},
        {"\"bounding\":[\"CAP_AUDIT_WRITE\"", "\"bounding\":[\"CAP_BOGUS\"", "process.capabilities.bounding"},
        {"{\"destination\":\"/proc\"",
         "{\"destination\":\"/n\",\"type\":\"nfs\",\"source\":\"s\"},{\"destination\":\"/proc\"",
         "mounts[0]: type nfs"},
        {"{\"destination\":\"/proc\"",
         "{\"destination\":\"/sys/fs/cgroup\",\"type\":\"cgroup\",\"source\":\"cgroup\"},"
         "{\"destination\":\"/proc\"",
         "mounts[0]: type cgroup"},
        {"\"source\":\"proc\"}", "\"source\":\"proc\",\"options\":[\"weird\"]}", "option weird"},
        {"{\"type\":\"pid\"}", "{\"type\":\"time\"}", "linux.namespaces[0]: type time"},
        {"\"access\":\"rwm\"}]",
         "\"access\":\"rwm\"},{\"allow\":true,\"type\":\"b\",\"major\":8,\"minor\":0}]",
         "linux.resources.devices[1]"},
        {"\"devices\":[", "\"blockIO\":{\"weight\":10},\"devices\":[", "linux.resources.blockIO"},
        {"\"ociVersion\":\"1.0.2-dev\"", "\"ociVersion\":\"2.0.0\"", "ociVersion"},
        {"\"args\":[\"sh\"],", "", "process.args"},
        {"\"cwd\":\"/\"", "\"cwd\":\"rel\"", "process.cwd"},
        {"\"hostname\"", "\"frobnicate\":1,\"hostname\"", "frobnicate: not supported"},

    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *j = patch(cases[i][0], cases[i][1]), *why = NULL;
        struct kago_spec s;
        struct kago_oci o;
        ok(load(j, &s, &o, &why) < 0 && why && strstr(why, cases[i][2]) && !strncmp(why, "config.json: ", 13),
           "refused, naming %s: %s", cases[i][2], why ? why : "(loaded)");
        free(why);
        free(j);
        kago_oci_free(&o);
        kago_spec_free(&s);
    }
}

static void test_malformed(void)
{
    struct kago_spec s;
    struct kago_oci o;
    char *why;
    ok(load("{\n  \"ociVersion\": \"1.0.2\",\n  \"process\": {,\n}", &s, &o, &why) < 0 && why &&
           !strncmp(why, "/b/config.json:3:", 17),
       "malformed JSON: FILE:LINE:COLUMN: %s", why ? why : "");
    free(why);
    kago_oci_free(&o);
    kago_spec_free(&s);
    ok(load("{\"ociVersion\": \"1.0.2\"", &s, &o, &why) < 0 && why && strstr(why, "config.json:1:"),
       "truncated JSON: %s", why ? why : "");
    free(why);
    kago_oci_free(&o);
    kago_spec_free(&s);
}

static void test_default_round_trip(void)
{
    char *text = kago_oci_default_config(), *why;
    struct kago_spec s;
    struct kago_oci o;
    ok(load(text, &s, &o, &why) == 0, "kago spec's config loads back: %s", why ? why : "ok");
    ok(s.caps == kago_caps_default() && s.no_new_privs && s.nmounts == 0, "with kago's defaults");
    free(why);
    free(text);
    kago_oci_free(&o);
    kago_spec_free(&s);
    text = kago_oci_features();
    ok(strstr(text, "\"ociVersionMin\":\"1.0.0\"") && strstr(text, "\"ociVersionMax\":\"1.1.0\""),
       "features");
    free(text);
}

int main(void)
{
    test_runc_spec();
    test_fields();
    test_groups_oom();
    test_seccomp_args();
    test_refused();
    test_malformed();
    test_default_round_trip();
    return tap_done();
}
