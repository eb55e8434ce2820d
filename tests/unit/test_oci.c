/* Unit tests of the OCI front end: config.json → struct kago_spec, strict about what it cannot honour. */
#include <stdlib.h>
#include <string.h>
#include <json-c/json.h>
#include <linux/capability.h>
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
        {"\"hostname\":\"runc\"", "\"hostname\":\"runc\",\"hooks\":{\"createContainer\":[{\"path\":\"/x\"}]}",
         "hooks.createContainer: not supported: kago runs runtime-namespace hooks only"},
        {"\"hostname\":\"runc\"", "\"hostname\":\"runc\",\"hooks\":{\"startContainer\":[{\"path\":\"/x\"}]}",
         "hooks.startContainer: not supported: kago runs runtime-namespace hooks only"},
        {"\"hostname\":\"runc\"", "\"hostname\":\"runc\",\"hooks\":{\"preStart\":[]}",
         "hooks.preStart: not supported"},
        {"\"hostname\":\"runc\"", "\"hostname\":\"runc\",\"hooks\":[]", "hooks: expected an object"},
        {"\"hostname\":\"runc\"", "\"hostname\":\"runc\",\"hooks\":{\"poststart\":{}}",
         "hooks.poststart: expected an array"},
        {"\"hostname\":\"runc\"", "\"hostname\":\"runc\",\"hooks\":{\"prestart\":[\"/x\"]}",
         "hooks.prestart[0]: expected an object"},
        {"\"hostname\":\"runc\"", "\"hostname\":\"runc\",\"hooks\":{\"createRuntime\":[{\"args\":[\"x\"]}]}",
         "hooks.createRuntime[0].path: required"},
        {"\"hostname\":\"runc\"", "\"hostname\":\"runc\",\"hooks\":{\"poststop\":[{\"path\":\"bin/x\"}]}",
         "hooks.poststop[0].path: bin/x: expected an absolute path"},
        {"\"hostname\":\"runc\"", "\"hostname\":\"runc\",\"hooks\":{\"poststop\":[{\"path\":7}]}",
         "hooks.poststop[0].path: expected a string"},
        {"\"hostname\":\"runc\"",
         "\"hostname\":\"runc\",\"hooks\":{\"poststart\":[{\"path\":\"/a\"},"
         "{\"path\":\"/b\",\"timeout\":0}]}",
         "hooks.poststart[1].timeout: 0: expected 1.."},
        {"\"hostname\":\"runc\"",
         "\"hostname\":\"runc\",\"hooks\":{\"poststart\":[{\"path\":\"/b\",\"timeout\":-3}]}",
         "hooks.poststart[0].timeout: -3: expected 1.."},
        {"\"hostname\":\"runc\"",
         "\"hostname\":\"runc\",\"hooks\":{\"poststart\":[{\"path\":\"/b\",\"timeout\":\"5\"}]}",
         "hooks.poststart[0].timeout: expected an integer"},
        {"\"hostname\":\"runc\"",
         "\"hostname\":\"runc\",\"hooks\":{\"prestart\":[{\"path\":\"/b\",\"args\":[\"b\",1]}]}",
         "hooks.prestart[0].args[1]: expected a string"},
        {"\"hostname\":\"runc\"",
         "\"hostname\":\"runc\",\"hooks\":{\"prestart\":[{\"path\":\"/b\",\"env\":\"A=1\"}]}",
         "hooks.prestart[0].env: expected an array of strings"},
        {"\"hostname\":\"runc\"",
         "\"hostname\":\"runc\",\"hooks\":{\"prestart\":[{\"path\":\"/b\",\"dir\":\"/\"}]}",
         "hooks.prestart[0].dir: not supported"},
        {"\"maskedPaths\"", "\"sysctl\":{\"a\":1},\"maskedPaths\"", "linux.sysctl"},
        {"\"maskedPaths\"", "\"intelRdt\":{\"closID\":\"x\"},\"maskedPaths\"", "linux.intelRdt"},
        {"\"maskedPaths\"", "\"cgroupsPath\":\"/x/../y\",\"maskedPaths\"", "linux.cgroupsPath"},
        {"\"maskedPaths\"", "\"cgroupsPath\":\"system.slice:kago:x\",\"maskedPaths\"", "linux.cgroupsPath"},
        {"\"noNewPrivileges\":true", "\"noNewPrivileges\":true,\"apparmorProfile\":\"p\"",
         "process.apparmorProfile"},
        {"\"gid\":0}", "\"gid\":0,\"username\":\"root\"}", "process.user.username"},
        {"\"effective\":[\"CAP_AUDIT_WRITE\",", "\"effective\":[\"CAP_SYS_ADMIN\",",
         "process.capabilities.effective: not within permitted"},
        {"\"bounding\":[\"CAP_AUDIT_WRITE\"", "\"bounding\":[\"CAP_BOGUS\"", "process.capabilities.bounding"},
        {"{\"destination\":\"/proc\"",
         "{\"destination\":\"/n\",\"type\":\"nfs\",\"source\":\"s\"},{\"destination\":\"/proc\"",
         "mounts[0]: type nfs"},
        {"\"source\":\"proc\"}", "\"source\":\"proc\",\"options\":[\"weird\"]}",
         "mounts[0].options[0]: weird: not supported"},
        {"{\"type\":\"pid\"}", "{\"type\":\"time\"}", "linux.namespaces[0]: type time"},
        {"\"access\":\"rwm\"}]",
         "\"access\":\"rwm\"},{\"allow\":true,\"type\":\"b\",\"major\":8,\"minor\":0}]",
         "linux.resources.devices[1]"},
        {"\"devices\":[", "\"blockIO\":{\"weight\":10},\"devices\":[", "linux.resources.blockIO"},
        {"\"ociVersion\":\"1.0.2-dev\"", "\"ociVersion\":\"2.0.0\"", "ociVersion"},
        {"\"args\":[\"sh\"],", "", "process.args"},
        {"\"cwd\":\"/\"", "\"cwd\":\"rel\"", "process.cwd"},
        {"\"hostname\"", "\"frobnicate\":1,\"hostname\"", "frobnicate: not supported"},
        {"\"hostname\":\"runc\"", "\"hostname\":\"runc\",\"domainname\":\"d\"", "domainname: not supported"},
        {"\"noNewPrivileges\":true", "\"noNewPrivileges\":true,\"selinuxLabel\":\"x\"",
         "process.selinuxLabel"},
        {"\"noNewPrivileges\":true",
         "\"noNewPrivileges\":true,\"ioPriority\":{\"class\":\"IOPRIO_CLASS_IDLE\"}", "process.ioPriority"},
        {"\"noNewPrivileges\":true", "\"noNewPrivileges\":true,\"scheduler\":{\"policy\":\"SCHED_FIFO\"}",
         "process.scheduler"},
        {"\"noNewPrivileges\":true", "\"noNewPrivileges\":true,\"execCPUAffinity\":{\"initial\":\"0\"}",
         "process.execCPUAffinity"},
        {"\"noNewPrivileges\":true", "\"noNewPrivileges\":true,\"oomScoreAdj\":5000",
         "process.oomScoreAdj: 5000"},
        {"\"terminal\":false", "\"terminal\":\"no\"", "process.terminal: expected true or false"},
        {"\"uid\":0", "\"uid\":-1", "process.user.uid: -1"},
        {"\"gid\":0}", "\"gid\":0,\"umask\":63}", "process.user.umask: 0077"},
        {"\"RLIMIT_NOFILE\"", "\"nofile\"", "process.rlimits[0]: type nofile"},
        {"\"maskedPaths\"", "\"mountLabel\":\"x\",\"maskedPaths\"", "linux.mountLabel"},
        {"\"maskedPaths\"", "\"personality\":{\"domain\":\"LINUX32\"},\"maskedPaths\"", "linux.personality"},
        {"\"maskedPaths\"", "\"timeOffsets\":{\"monotonic\":{\"secs\":1}},\"maskedPaths\"",
         "linux.timeOffsets"},
        {"\"maskedPaths\"", "\"memoryPolicy\":{\"mode\":\"MPOL_BIND\"},\"maskedPaths\"",
         "linux.memoryPolicy"},
        {"\"maskedPaths\"", "\"rootfsPropagation\":\"shared\",\"maskedPaths\"",
         "linux.rootfsPropagation: shared"},
        {"\"maskedPaths\"",
         "\"devices\":[{\"path\":\"/dev/sda\",\"type\":\"b\",\"major\":8,\"minor\":0}],\"maskedPaths\"",
         "linux.devices[0]"},
        {"\"maskedPaths\"", "\"uidMappings\":[{\"containerID\":0,\"hostID\":1000}],\"maskedPaths\"",
         "linux.uidMappings[0].size: required"},
        {"\"devices\":[", "\"hugepageLimits\":[{\"pageSize\":\"2MB\",\"limit\":1}],\"devices\":[",
         "linux.resources.hugepageLimits"},
        {"\"devices\":[", "\"rdma\":{\"mlx\":{\"hcaHandles\":1}},\"devices\":[", "linux.resources.rdma"},
        {"\"devices\":[", "\"unified\":{\"memory.high\":\"1\"},\"devices\":[", "linux.resources.unified"},
        {"\"devices\":[", "\"network\":{\"classID\":1},\"devices\":[", "linux.resources.network"},
        {"\"devices\":[", "\"cpu\":{\"mems\":\"0\"},\"devices\":[", "linux.resources.cpu.mems"},
        {"\"devices\":[", "\"cpu\":{\"realtimeRuntime\":100},\"devices\":[",
         "linux.resources.cpu.realtimeRuntime"},
        {"\"devices\":[", "\"memory\":{\"limit\":67108864,\"swap\":33554432},\"devices\":[",
         "linux.resources.memory.swap: 33554432: below the memory limit"},
        {"\"devices\":[", "\"memory\":{\"reservation\":1024},\"devices\":[",
         "linux.resources.memory.reservation"},
        {"\"devices\":[", "\"memory\":{\"disableOOMKiller\":true},\"devices\":[",
         "linux.resources.memory.disableOOMKiller"},
        {"\"access\":\"rwm\"}]",
         "\"access\":\"rwm\"},{\"allow\":false,\"type\":\"c\",\"major\":1,\"minor\":3,\"access\":\"w\"}]",
         "linux.resources.devices[1]: deny c 1:3 w"},
        {"\"access\":\"rwm\"}]",
         "\"access\":\"rwm\"},{\"allow\":true,\"type\":\"c\",\"major\":1,\"minor\":3},{\"allow\":false,"
         "\"access\":\"rwm\"}]",
         "linux.resources.devices[2]: deny all after an allow"},
        {"\"access\":\"rwm\"}]",
         "\"access\":\"rwm\"},{\"allow\":true,\"type\":\"c\",\"major\":1,\"minor\":3,\"access\":\"rwx\"}]",
         "linux.resources.devices[1]: allow c 1:3 rwx"},
        {"\"maskedPaths\"",
         "\"seccomp\":{\"defaultAction\":\"SCMP_ACT_ALLOW\",\"flags\":[\"SECCOMP_FILTER_FLAG_LOG\"]},"
         "\"maskedPaths\"",
         "linux.seccomp.flags"},
        {"\"maskedPaths\"",
         "\"seccomp\":{\"defaultAction\":\"SCMP_ACT_ALLOW\",\"listenerPath\":\"/run/"
         "l.sock\"},\"maskedPaths\"",
         "linux.seccomp.listenerPath"},
        {"\"maskedPaths\"",
         "\"seccomp\":{\"defaultAction\":\"SCMP_ACT_ALLOW\",\"syscalls\":[{\"names\":[\"mkdir\"],\"action\":"
         "\"SCMP_ACT_ERRNO\",\"comment\":\"x\"}]},\"maskedPaths\"",
         "linux.seccomp.syscalls[0].comment"},
        {"\"hostname\"", "\"solaris\":{\"milestone\":\"x\"},\"hostname\"", "solaris: not supported"},
        {"\"hostname\"", "\"annotations\":{\"x\":1},\"hostname\"", "annotations.x: expected a string"},
        {"\"source\":\"proc\"}", "\"source\":\"proc\",\"options\":[\"ro\"]}",
         "mounts[0]: proc at /proc read-only"},
        {"\"nodev\",\"ro\"]}]", "\"nodev\"]}]", "mounts[5]: sysfs at /sys read-write"},
        {"{\"destination\":\"/proc\"",
         "{\"destination\":\"/"
         "run\",\"type\":\"tmpfs\",\"source\":\"tmpfs\",\"options\":[\"mode=0\"]},{\"destination\":\"/"
         "proc\"",
         "mounts[0]: tmpfs at /run: mode=0"},
        {"{\"destination\":\"/proc\"",
         "{\"destination\":\"/d\",\"type\":\"bind\",\"source\":\"/"
         "d\",\"options\":[\"rbind\",\"tmpcopyup\"]},{\"destination\":\"/proc\"",
         "mounts[0].options[1]: tmpcopyup"},
        {"{\"destination\":\"/proc\"",
         "{\"destination\":\"/d\",\"type\":\"bind\"},{\"destination\":\"/proc\"",
         "mounts[0]: bind mount without a source"},
        {"{\"destination\":\"/proc\"",
         "{\"destination\":\"/d\",\"type\":\"bind\",\"source\":\"/"
         "d\",\"uidMappings\":[{\"containerID\":0,\"hostID\":1,\"size\":1}]},{\"destination\":\"/proc\"",
         "mounts[0].uidMappings"},
        {"{\"type\":\"pid\"}", "{\"type\":\"pid\"},{\"type\":\"pid\"}",
         "linux.namespaces[1]: type pid: given twice"},

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
    ok(s.caps == ((1ULL << CAP_AUDIT_WRITE) | (1ULL << CAP_KILL) | (1ULL << CAP_NET_BIND_SERVICE)) &&
           s.no_new_privs && s.nmounts == 0,
       "with runc's three capabilities and kago's defaults");
    free(why);
    free(text);
    kago_oci_free(&o);
    kago_spec_free(&s);
    text = kago_oci_features();
    ok(strstr(text, "\"ociVersionMin\":\"1.0.0\"") && strstr(text, "\"ociVersionMax\":\"1.1.0\""),
       "features");
    free(text);
}

/* Every other supported field, one assertion each. */
static const char *const many =
    "{\"ociVersion\":\"1.1.0\",\"domainname\":\"\",\"annotations\":{\"org.example\":\"x\"},"
    "\"hooks\":{\"prestart\":[],\"poststop\":[]},"
    "\"process\":{\"terminal\":true,\"consoleSize\":{\"height\":25,\"width\":80},"
    "\"user\":{\"uid\":1000,\"gid\":1000,\"umask\":18},\"args\":[\"sh\",\"-c\",\"true\"],\"cwd\":\"/srv\","
    "\"capabilities\":{\"bounding\":[\"CAP_KILL\"],\"effective\":[\"CAP_KILL\"],\"permitted\":[\"CAP_KILL\"],"
    "\"inheritable\":[\"CAP_KILL\"],\"ambient\":[\"CAP_KILL\"]},"
    "\"rlimits\":[{\"type\":\"RLIMIT_CORE\",\"soft\":0,\"hard\":18446744073709551615}]},"
    "\"root\":{\"path\":\"/abs/rootfs\"},"
    "\"mounts\":[{\"destination\":\"/"
    "data\",\"type\":\"none\",\"source\":\"data\",\"options\":[\"rbind\",\"ro\","
    "\"nosuid\",\"rprivate\"]},{\"destination\":\"/scratch\",\"type\":\"tmpfs\",\"source\":\"tmpfs\","
    "\"options\":[\"size=16m\",\"mode=1777\",\"nodev\"]},{\"destination\":\"/dev/shm\",\"type\":\"tmpfs\","
    "\"source\":\"shm\",\"options\":[\"nosuid\",\"noexec\",\"nodev\",\"mode=1777\",\"size=65536k\"]},"
    "{\"destination\":\"/run\",\"type\":\"tmpfs\",\"source\":\"tmpfs\",\"options\":[\"nosuid\",\"noexec\","
    "\"mode=755\"]},{\"destination\":\"/sys/fs/cgroup\",\"type\":\"cgroup\",\"source\":\"cgroup\","
    "\"options\":[\"nosuid\",\"noexec\",\"nodev\",\"relatime\",\"ro\"]}],"
    "\"linux\":{\"namespaces\":[{\"type\":\"pid\"},{\"type\":\"mount\"},{\"type\":\"user\"},"
    "{\"type\":\"network\",\"path\":\"/proc/1/ns/net\"}],"
    "\"uidMappings\":[{\"containerID\":0,\"hostID\":100000,\"size\":65536}],"
    "\"gidMappings\":[{\"containerID\":0,\"hostID\":200000,\"size\":65536}],"
    "\"rootfsPropagation\":\"rslave\",\"cgroupsPath\":\"/default/c1\",\"readonlyPaths\":[\"/proc/bus\",\"/"
    "proc/fs\"],\"maskedPaths\":[],"
    "\"devices\":[{\"path\":\"/dev/null\",\"type\":\"c\",\"major\":1,\"minor\":3,\"fileMode\":438,\"uid\":0,"
    "\"gid\":0}],"
    "\"resources\":{\"devices\":[{\"allow\":false,\"access\":\"rwm\"},{\"allow\":true,\"type\":\"c\","
    "\"major\":136,\"access\":\"rw\"},{\"allow\":true,\"type\":\"c\",\"major\":5,\"minor\":2},"
    "{\"allow\":true,\"type\":\"c\",\"access\":\"m\"},{\"allow\":true,\"type\":\"b\",\"major\":-1,"
    "\"minor\":-1,\"access\":\"m\"}],"
    "\"cpu\":{\"shares\":2,\"quota\":-1},\"memory\":{\"limit\":67108864,\"swap\":134217728},"
    "\"pids\":{\"limit\":-1}},\"sysctl\":{\"net.ipv4.ip_forward\":\"1\"}}}";

static void test_more_fields(void)
{
    struct kago_spec s;
    struct kago_oci o;
    char *why;
    ok(load(many, &s, &o, &why) == 0, "a config of many fields loads: %s", why ? why : "ok");
    ok(o.terminal, "process.terminal");
    ok(o.annotations && strstr(o.annotations, "\"org.example\":\"x\""), "annotations kept as text: %s",
       o.annotations ? o.annotations : "");
    is_str(o.oci_version, "1.1.0", "ociVersion 1.1");
    ok(!s.hostname, "no hostname: none");
    ok(s.uid == 1000 && s.gid == 1000, "process.user.uid/gid");
    ok(s.argv[2] && !strcmp(s.argv[2], "true") && !s.argv[3], "process.args");
    ok(s.env && !s.env[0], "no process.env: an empty environment (not kago's default)");
    is_str(s.cwd, "/srv", "process.cwd");
    ok(s.caps == (1ULL << 5) && s.capsets && s.cap_effective == s.caps && s.cap_ambient == s.caps,
       "capabilities: the five sets");
    ok(s.nrlimits == 1 && s.rlimits[0].resource == RLIMIT_CORE && s.rlimits[0].hard == UINT64_MAX,
       "an rlimit of RLIM_INFINITY");
    ok(!s.no_new_privs, "noNewPrivileges absent: false");
    ok(s.seccomp.mode == KAGO_SECCOMP_UNCONFINED, "linux.seccomp absent: no filter");
    is_str(s.rootfs, "/abs/rootfs", "an absolute root.path");
    ok(!s.readonly, "root.readonly absent: false");
    ok(s.nmounts == 4, "four mounts of the container's own (/dev/shm is kago's)");
    ok(s.nmounts > 0 && s.mounts[0].kind == KAGO_MOUNT_BIND && s.mounts[0].readonly && s.mounts[0].src &&
           !strcmp(s.mounts[0].src, "/b/data") && !strcmp(s.mounts[0].dst, "/data"),
       "a read-only bind, its source against the bundle");
    ok(s.nmounts > 1 && s.mounts[1].kind == KAGO_MOUNT_TMPFS && s.mounts[1].size == 16 << 20 &&
           !strcmp(s.mounts[1].dst, "/scratch"),
       "a tmpfs of size=16m");
    ok(s.mounts[0].nosuid && !s.mounts[0].noexec && !s.mounts[1].noexec, "nosuid and noexec as asked");
    ok(s.nmounts > 2 && s.mounts[2].kind == KAGO_MOUNT_TMPFS && s.mounts[2].mode == 0755 &&
           s.mounts[2].noexec,
       "a tmpfs of mode=755, noexec");
    ok(s.nmounts > 3 && s.mounts[3].kind == KAGO_MOUNT_CGROUP && s.mounts[3].readonly &&
           !strcmp(s.mounts[3].dst, "/sys/fs/cgroup"),
       "a read-only cgroup mount");
    is_str(s.cgroup_path, "/default/c1", "linux.cgroupsPath");
    ok(s.mknod_any == (KAGO_MKNOD_CHAR | KAGO_MKNOD_BLOCK), "c *:* m and b *:* m: mknod of any node");
    ok(s.ns == ((1u << KAGO_NS_PID) | (1u << KAGO_NS_MOUNT) | (1u << KAGO_NS_USER)), "namespaces made");
    is_str(s.join_ns[KAGO_NS_NET], "/proc/1/ns/net", "a namespace joined by path");
    ok(s.ngidmap == 1 && s.gidmap[0].outside == 200000 && s.gidmap[0].count == 65536, "gidMappings");
    ok(s.readonly_paths[1] && !strcmp(s.readonly_paths[1], "/proc/fs") && !s.readonly_paths[2],
       "readonlyPaths replace kago's");
    ok(s.masked_paths && !s.masked_paths[0], "maskedPaths: [] masks nothing");
    ok(s.limits.cpu_weight == 1 && s.limits.cpu_quota_us == KAGO_UNSET,
       "shares 2 → weight 1, quota -1 unset");
    ok(s.limits.memory == 64 << 20 && s.limits.memory_swap == 128 << 20,
       "memory.limit and swap (memory + swap)");
    ok(s.limits.pids == KAGO_UNSET, "pids.limit -1: unlimited");
    ok(s.nsysctls == 1, "linux.sysctl");
    free(why);
    kago_oci_free(&o);
    kago_spec_free(&s);
}

/* The loader reads only len bytes: a buffer with no NUL after it (ASan sees an overread), whitespace
 * after the document, and text after it. */
static void test_bounds(void)
{
    size_t n = strlen(runc_spec);
    char *buf = malloc(n + 2);
    memcpy(buf, runc_spec, n);
    memcpy(buf + n, "\n\n", 2);
    struct kago_spec s;
    struct kago_oci o;
    struct kago_error *err = NULL;
    kago_spec_init(&s);
    ok(kago_oci_load_string("/b", "config.json", buf, n + 2, &s, &o, &err) == 0, "no NUL after the text: %s",
       err ? err->msg : "ok");
    kago_error_free(err);
    err = NULL;
    kago_oci_free(&o);
    kago_spec_free(&s);
    buf[n + 1] = 'x';
    kago_spec_init(&s);
    ok(kago_oci_load_string("/b", "config.json", buf, n + 2, &s, &o, &err) < 0 && err &&
           strstr(err->msg, "config.json:2:1: text after the document"),
       "text after the document: %s", err ? err->msg : "(loaded)");
    kago_error_free(err);
    kago_oci_free(&o);
    kago_spec_free(&s);
    free(buf);
}

/* The runtime-namespace hooks: loaded, written for the state dir and read back from there. */
static const char *const with_hooks =
    "\"hostname\":\"runc\",\"hooks\":{\"prestart\":[{\"path\":\"/p\"}],"
    "\"createRuntime\":[{\"path\":\"/usr/bin/hook\",\"args\":[\"hook\",\"create\"],\"env\":[\"A=1\",\"B=2\"],"
    "\"timeout\":5},{\"path\":\"/c2\",\"args\":[]}],\"createContainer\":[],\"startContainer\":[],"
    "\"poststart\":[{\"path\":\"/s\",\"env\":[]}],\"poststop\":[{\"path\":\"/t\",\"timeout\":1}]}";

static bool same_hooks(const struct kago_oci *o)
{
    const struct kago_oci_hooks *h = o->hooks;
    const struct kago_oci_hook *c = h[KAGO_OCI_CREATE_RUNTIME].v;
    return h[KAGO_OCI_PRESTART].n == 1 && !strcmp(h[KAGO_OCI_PRESTART].v[0].path, "/p") &&
           !h[KAGO_OCI_PRESTART].v[0].args && !h[KAGO_OCI_PRESTART].v[0].env &&
           !h[KAGO_OCI_PRESTART].v[0].timeout && h[KAGO_OCI_CREATE_RUNTIME].n == 2 &&
           !strcmp(c[0].path, "/usr/bin/hook") && c[0].args && !strcmp(c[0].args[1], "create") &&
           !c[0].args[2] && c[0].env && !strcmp(c[0].env[1], "B=2") && !c[0].env[2] && c[0].timeout == 5 &&
           !strcmp(c[1].path, "/c2") && h[KAGO_OCI_POSTSTART].n == 1 && h[KAGO_OCI_POSTSTART].v[0].env &&
           !h[KAGO_OCI_POSTSTART].v[0].env[0] && h[KAGO_OCI_POSTSTOP].n == 1 &&
           h[KAGO_OCI_POSTSTOP].v[0].timeout == 1;
}

static void test_hooks(void)
{
    char *j = patch("\"hostname\":\"runc\"", with_hooks), *why = NULL;
    struct kago_spec s;
    struct kago_oci o, back = {0};
    ok(load(j, &s, &o, &why) == 0, "a config with hooks loads: %s", why ? why : "ok");
    ok(same_hooks(&o), "the hooks of each kind, with path, args, env and timeout");
    is_str(kago_oci_hook_name(KAGO_OCI_CREATE_RUNTIME), "createRuntime", "hook kind names");
    char *text = kago_oci_hooks_json(&o);
    ok(text && !strstr(text, "createContainer"), "written for the state dir: %s", text);
    struct kago_error *err = NULL;
    ok(kago_oci_load_hooks("oci.json", text, strlen(text), &back, &err) == 0 && same_hooks(&back),
       "read back the same: %s", err ? err->msg : "ok");
    kago_error_free(err);
    err = NULL;
    kago_oci_free(&back);
    const char *rel = "{\"poststop\":[{\"path\":\"x\"}]}";
    ok(kago_oci_load_hooks("oci.json", rel, strlen(rel), &back, &err) < 0 && err &&
           strstr(err->msg, "oci.json: hooks.poststop[0].path"),
       "read back strictly: %s", err ? err->msg : "(loaded)");
    kago_error_free(err);
    kago_oci_free(&back);
    free(text);
    kago_oci_free(&o);
    text = kago_oci_hooks_json(&o);
    is_str(text, "{}", "no hooks: an empty object");
    free(text);
    free(why);
    free(j);
    kago_spec_free(&s);
}

static void test_features(void)
{
    char *text = kago_oci_features();
    json_object *f = json_tokener_parse(text), *l = NULL, *v = NULL;
    ok(f && json_object_object_get_ex(f, "ociVersionMin", &v) &&
           !strcmp(json_object_get_string(v), "1.0.0") && json_object_object_get_ex(f, "ociVersionMax", &v) &&
           !strcmp(json_object_get_string(v), "1.1.0"),
       "features: valid JSON, ociVersionMin/Max");
    ok(f && json_object_object_get_ex(f, "linux", &l) && json_object_object_get_ex(l, "capabilities", &v) &&
           strstr(json_object_to_json_string(v), "CAP_SYS_ADMIN"),
       "features: linux.capabilities");
    ok(f && json_object_object_get_ex(f, "hooks", &v) &&
           !strcmp(json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN),
                   "[\"prestart\",\"createRuntime\",\"poststart\",\"poststop\"]"),
       "features: the hooks kago runs");
    json_object_put(f);
    free(text);
    text = kago_oci_default_config();
    ok(!strstr(text, "/sys/fs/cgroup"), "kago spec's config has no cgroup mount");
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
    test_more_fields();
    test_bounds();
    test_hooks();
    test_features();
    return tap_done();
}
