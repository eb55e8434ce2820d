/* The Kagofile loader: each DSL element lands in the expected spec/app field; each error names the
 * file, the line and what is wrong. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include <kago/kago.h>

#include "../../src/config/kagofile.h"
#include "tap.h"

static struct kago_kagofile *load(const char *src, char *const *sets)
{
    struct kago_kagofile *kf = NULL;
    struct kago_error *err = NULL;
    if (kago_kagofile_load_string("Kagofile", src, strlen(src), sets, &kf, &err) < 0) {
        printf("# unexpected error: %s\n", err->msg);
        kago_error_free(err);
        return NULL;
    }
    return kf;
}

/* Loads src expecting failure; returns the message (caller frees) or NULL if it loaded. */
static char *fails(const char *src)
{
    struct kago_kagofile *kf = NULL;
    struct kago_error *err = NULL;
    if (kago_kagofile_load_string("Kagofile", src, strlen(src), NULL, &kf, &err) == 0) {
        kago_kagofile_free(kf);
        return NULL;
    }
    char *m = strdup(err->msg);
    kago_error_free(err);
    return m;
}

static void expect_error(const char *src, const char *prefix, const char *needle)
{
    char *m = fails(src);
    ok(m && !strncmp(m, prefix, strlen(prefix)) && strstr(m, needle), "error \"%s\" starts %s, has \"%s\"",
       m ? m : "(loaded!)", prefix, needle);
    free(m);
}

static bool strv_has(char **v, const char *s)
{
    for (size_t i = 0; v && v[i]; i++)
        if (!strcmp(v[i], s))
            return true;
    return false;
}

static void test_seed_demo(void)
{
    struct kago_kagofile *kf = load("Kago.container \"cpu-demo\" do |c|\n"
                                    "  c.rootfs   \"/var/lib/kago/rootfs/busybox\", overlay: true\n"
                                    "  c.command  \"/bin/sh\", \"-c\", \"while :; do :; done\"\n"
                                    "  c.namespaces :pid, :mount, :uts, :ipc, :net\n"
                                    "  c.cgroup   cpu: \"30%\", memory: \"64M\", pids: 32\n"
                                    "  c.after(\"5s\")  { |ct| ct.update(cpu: \"20%\") }\n"
                                    "  c.after(\"10s\") { |ct| ct.update(cpu: \"50%\") }\n"
                                    "  c.after(\"15s\") { |ct| ct.stop }\n"
                                    "end\n",
                                    NULL);
    ok(kf != NULL, "seed demo loads");
    if (!kf)
        return;
    ok(kago_kagofile_ncontainers(kf) == 1, "one container");
    const struct kago_spec *s = kago_kagofile_container(kf, 0);
    is_str(s->name, "cpu-demo", "name");
    is_str(s->rootfs, "/var/lib/kago/rootfs/busybox", "rootfs");
    ok(s->overlay && !s->readonly, "overlay: true");
    ok(s->argv && !strcmp(s->argv[0], "/bin/sh") && !strcmp(s->argv[2], "while :; do :; done") && !s->argv[3],
       "command argv");
    ok(s->ns == ((1u << KAGO_NS_PID) | (1u << KAGO_NS_MOUNT) | (1u << KAGO_NS_UTS) | (1u << KAGO_NS_IPC) |
                 (1u << KAGO_NS_NET)),
       "namespaces replace the default set");
    ok(s->limits.cpu_quota_us == 30000, "cpu 30%% -> 30000us quota");
    ok(s->limits.memory == 64 << 20, "memory 64M");
    ok(s->limits.pids == 32, "pids 32");
    ok(kago_kagofile_nhooks(kf, 0, "after") == 3, "three after timers");
    ok(kago_kagofile_find(kf, "cpu-demo") == s && !kago_kagofile_find(kf, "nope"), "find by name");
    kago_kagofile_free(kf);
}

static void test_defaults(void)
{
    struct kago_kagofile *kf = load("Kago.container('d') { |c| c.command '/bin/true' }", NULL);
    ok(kf != NULL, "minimal container loads");
    if (!kf)
        return;
    struct kago_spec def;
    kago_spec_init(&def);
    const struct kago_spec *s = kago_kagofile_container(kf, 0);
    is_str(s->rootfs, KAGO_DEFAULT_ROOTFS, "default rootfs, as the CLI");
    ok(s->ns == def.ns && s->caps == def.caps && s->no_new_privs == def.no_new_privs &&
           s->seccomp.mode == KAGO_SECCOMP_DEFAULT && s->limits.memory == KAGO_UNSET &&
           s->limits.cpu_quota_us == KAGO_UNSET,
       "defaults are kago_spec_init's");
    ok(strv_has(s->masked_paths, "/proc/kcore") && strv_has(s->env, def.env[0]),
       "default masked paths and env");
    kago_spec_free(&def);
    kago_kagofile_free(kf);
}

static void test_every_element(void)
{
    struct kago_kagofile *kf =
        load("Kago.container 'all' do |c|\n"
             "  c.rootfs '/r', readonly: true, overlay: '32M'\n"
             "  c.command ['/bin/app', 1, :x]\n"
             "  c.env 'A=1', B: 2\n"
             "  c.env 'C', 'three'\n"
             "  c.cwd '/work'\n"
             "  c.user '1000:100'\n"
             "  c.hostname 'box'\n"
             "  c.namespaces :pid, :mount, :uts, :user, :net\n"
             "  c.join_namespace :ipc, '/proc/1/ns/ipc'\n"
             "  c.uid_map 0, 100000, 65536\n"
             "  c.gid_map '0:100000:65536'\n"
             "  c.mount '/srv/data', '/data', readonly: true\n"
             "  c.tmpfs '/tmp', size: '16M'\n"
             "  c.masked_paths '/proc/kcore'\n"
             "  c.mask '/proc/foo'\n"
             "  c.readonly_path '/proc/bar'\n"
             "  c.cgroup cpu: 1.5, cpu_weight: 200, cpuset: '0-1', cpu_period: '50ms'\n"
             "  c.cgroup 'cpu.cfs_quota_us' => '30000', 'memory.swappiness' => 0\n"
             "  c.rlimit :nofile, 1024, 4096\n"
             "  c.rlimits nproc: 64, core: [0, 'unlimited']\n"
             "  c.capabilities drop: [:net_raw, 'CAP_MKNOD'], add: :sys_ptrace\n"
             "  c.seccomp default: :errno, errno: 38 do |s|\n"
             "    s.allow :read, :write\n"
             "    s.kill :mount\n"
             "    s.errno :ptrace, errno: 1\n"
             "  end\n"
             "  c.no_new_privs false\n"
             "  c.init\n"
             "  c.listen_port 8080\n"
             "  c.stop_grace 2\n"
             "end\n",
             NULL);
    ok(kf != NULL, "a container using every element loads");
    if (!kf)
        return;
    const struct kago_spec *s = kago_kagofile_container(kf, 0);
    ok(s->readonly && s->overlay && s->overlay_size == 32u << 20, "rootfs readonly + overlay size");
    ok(!strcmp(s->argv[1], "1") && !strcmp(s->argv[2], "x"), "command array with numbers and symbols");
    ok(strv_has(s->env, "A=1") && strv_has(s->env, "B=2") && strv_has(s->env, "C=three"), "env forms");
    is_str(s->cwd, "/work", "cwd");
    ok(s->uid == 1000 && s->gid == 100, "user 1000:100");
    is_str(s->hostname, "box", "hostname");
    ok(s->ns & (1u << KAGO_NS_USER) && !(s->ns & (1u << KAGO_NS_IPC)) && !(s->ns & (1u << KAGO_NS_CGROUP)),
       "namespaces: user created, ipc joined, cgroup not");
    is_str(s->join_ns[KAGO_NS_IPC], "/proc/1/ns/ipc", "join_namespace path");
    ok(s->nuidmap == 1 && s->uidmap[0].inside == 0 && s->uidmap[0].outside == 100000 &&
           s->uidmap[0].count == 65536 && s->ngidmap == 1 && s->gidmap[0].outside == 100000,
       "uid/gid maps");
    /* mounts[0]: the default cgroup mount (kago_spec_init_front) */
    ok(s->nmounts == 3 && s->mounts[0].kind == KAGO_MOUNT_CGROUP &&
           !strcmp(s->mounts[0].dst, "/sys/fs/cgroup") && s->mounts[0].readonly &&
           s->limits.pids == KAGO_DEFAULT_PIDS,
       "the front end's defaults: the cgroup read-only at /sys/fs/cgroup, pids 2048");
    ok(s->nmounts == 3 && s->mounts[1].kind == KAGO_MOUNT_BIND && !strcmp(s->mounts[1].src, "/srv/data") &&
           !strcmp(s->mounts[1].dst, "/data") && s->mounts[1].readonly,
       "bind mount");
    ok(s->nmounts == 3 && s->mounts[2].kind == KAGO_MOUNT_TMPFS && s->mounts[2].size == 16u << 20, "tmpfs");
    ok(strv_has(s->masked_paths, "/proc/foo") && strv_has(s->masked_paths, "/proc/kcore") &&
           !strv_has(s->masked_paths, "/sys/firmware"),
       "masked_paths replaces, mask appends");
    ok(strv_has(s->readonly_paths, "/proc/bar") && strv_has(s->readonly_paths, "/proc/sys"),
       "readonly_path appends to the defaults");
    ok(s->limits.cpu_quota_us == 150000 && s->limits.cpu_weight == 200 && !strcmp(s->limits.cpuset, "0-1") &&
           s->limits.cpu_period_us == 50000,
       "cpu 1.5 cores, weight, cpuset, period");
    ok(s->limits.nraw == 2 && !strcmp(s->limits.raw[0].key, "cpu.cfs_quota_us") &&
           !strcmp(s->limits.raw[0].value, "30000") && !strcmp(s->limits.raw[1].value, "0"),
       "raw controller keys");
    bool nofile = false, nproc = false, core = false;
    for (size_t i = 0; i < s->nrlimits; i++) {
        nofile |= s->rlimits[i].resource == RLIMIT_NOFILE && s->rlimits[i].soft == 1024 &&
                  s->rlimits[i].hard == 4096;
        nproc |=
            s->rlimits[i].resource == RLIMIT_NPROC && s->rlimits[i].soft == 64 && s->rlimits[i].hard == 64;
        core |= s->rlimits[i].resource == RLIMIT_CORE && s->rlimits[i].soft == 0 &&
                s->rlimits[i].hard == RLIM_INFINITY;
    }
    ok(nofile && nproc && core, "rlimits");
    uint64_t def = kago_caps_default();
    ok(!(s->caps & (1ull << kago_cap_from_name("net_raw"))) &&
           !(s->caps & (1ull << kago_cap_from_name("mknod"))) &&
           (s->caps & (1ull << kago_cap_from_name("sys_ptrace"))) &&
           (s->caps & (1ull << kago_cap_from_name("chown"))) == (def & (1ull << kago_cap_from_name("chown"))),
       "capabilities drop/add on top of the default set");
    ok(s->seccomp.mode == KAGO_SECCOMP_CUSTOM && s->seccomp.default_action == KAGO_SCMP_ERRNO &&
           s->seccomp.default_errno == 38 && s->seccomp.nrules == 4,
       "seccomp default action and rules");
    ok(s->seccomp.nrules == 4 && !strcmp(s->seccomp.rules[2].syscall, "mount") &&
           s->seccomp.rules[2].action == KAGO_SCMP_KILL && s->seccomp.rules[3].action == KAGO_SCMP_ERRNO &&
           s->seccomp.rules[3].errno_value == 1,
       "seccomp per-syscall actions");
    ok(!s->no_new_privs && s->init && s->listen_port == 8080, "no_new_privs, init, listen_port");
    kago_kagofile_free(kf);
}

static void test_caps_modes(void)
{
    struct kago_kagofile *kf =
        load("Kago.container('a') { |c| c.command 'x'; c.capabilities :all }\n"
             "Kago.container('b') { |c| c.command 'x'; c.capabilities allow: [:chown, :kill] }\n"
             "Kago.container('n') { |c| c.command 'x'; c.capabilities :none; c.seccomp :unconfined }\n",
             NULL);
    ok(kf != NULL, "capability modes load");
    if (!kf)
        return;
    ok(kago_kagofile_container(kf, 0)->caps & (1ull << kago_cap_from_name("sys_admin")),
       ":all includes sys_admin");
    ok(kago_kagofile_container(kf, 1)->caps ==
           ((1ull << kago_cap_from_name("chown")) | (1ull << kago_cap_from_name("kill"))),
       "allow: is exactly the list");
    ok(kago_kagofile_container(kf, 2)->caps == 0 &&
           kago_kagofile_container(kf, 2)->seccomp.mode == KAGO_SECCOMP_UNCONFINED,
       ":none, seccomp :unconfined");
    kago_kagofile_free(kf);
}

static void test_ruby_and_params(void)
{
    char *sets[] = {"count=5", "mem=32M", NULL};
    struct kago_kagofile *kf = load(
        "def web(i, mem)\n"
        "  Kago.container \"web#{i}\" do |c|\n"
        "    c.command '/bin/sleep', 1000\n"
        "    c.cgroup memory: mem, cpu: \"#{10 + i}%\"\n"
        "    c.env HOME_DIR: ENV.fetch('KF_TEST_HOME', '/nowhere')\n"
        "  end\n"
        "end\n"
        "Kago.set('count').to_i.times { |i| web(i, Kago.set('mem', '64M')) }\n"
        "Kago.container('x') { |c| c.command Kago.read_file('/proc/sys/kernel/ostype').strip }\n"
        "raise 'params' unless Kago.params == {'count' => '5', 'mem' => '32M'} && Kago.set('nope', 7) == 7\n",
        sets);
    ok(kf != NULL, "methods, loops, --set values, ENV and read_file work");
    if (!kf)
        return;
    ok(kago_kagofile_ncontainers(kf) == 6, "a loop defines 5 containers (+1)");
    const struct kago_spec *s = kago_kagofile_find(kf, "web4");
    ok(s && s->limits.memory == 32 << 20 && s->limits.cpu_quota_us == 14000,
       "web4 got --set mem and its cpu");
    ok(s && strv_has(s->env, "HOME_DIR=/kagotest"), "ENV from the environment");
    is_str(kago_kagofile_find(kf, "x")->argv[0], "Linux", "Kago.read_file");
    kago_kagofile_free(kf);
}

static void test_hooks(void)
{
    struct kago_kagofile *kf = load("Kago.container 'h' do |c|\n"
                                    "  c.command 'x'\n"
                                    "  c.before_start { |ct| }\n"
                                    "  c.after_start { |ct| }\n"
                                    "  c.on_exit { |ct, status| }\n"
                                    "  c.on_exit { |ct, status| }\n"
                                    "  c.on_oom { |ct| }\n"
                                    "  c.on_failure { |ct, status| }\n"
                                    "  c.every('1s') { |ct| }\n"
                                    "  c.after(0.5) { |ct| }\n"
                                    "  c.on_signal(:USR1, 'SIGUSR2') { |ct| }\n"
                                    "  c.ready(port: 8080, timeout: '10s') { |ct, ok| }\n"
                                    "end\n",
                                    NULL);
    ok(kf != NULL, "every hook kind loads");
    if (!kf)
        return;
    ok(kago_kagofile_nhooks(kf, 0, "before_start") == 1 && kago_kagofile_nhooks(kf, 0, "after_start") == 1 &&
           kago_kagofile_nhooks(kf, 0, "on_exit") == 2 && kago_kagofile_nhooks(kf, 0, "on_oom") == 1 &&
           kago_kagofile_nhooks(kf, 0, "on_failure") == 1 && kago_kagofile_nhooks(kf, 0, "every") == 1 &&
           kago_kagofile_nhooks(kf, 0, "after") == 1 && kago_kagofile_nhooks(kf, 0, "on_signal") == 2 &&
           kago_kagofile_nhooks(kf, 0, "ready") == 1,
       "hooks counted per kind");
    kago_kagofile_free(kf);
}

static void test_app(void)
{
    struct kago_kagofile *kf =
        load("Kago.app 'blog' do |a|\n"
             "  a.hosts 'Blog.example', 'www.blog.example'\n"
             "  a.container do |c|\n"
             "    c.command '/bin/httpd', '-f', '-p', '8080'\n"
             "    c.cgroup memory: '128M'\n"
             "  end\n"
             "  a.port 8080\n"
             "  a.lifetime '20m'; a.idle_timeout '5m'; a.start_timeout '10s'; a.stop_grace 3\n"
             "  a.min_instances 1; a.max_instances 4; a.concurrency 20; a.max_pending 100\n"
             "  a.max_body '1M'; a.socket_activation true\n"
             "  a.data '/srv/sites/blog', to: '/data'\n"
             "  a.idle :freeze, for: '10m'\n"
             "  a.checkpoint :after_ready\n"
             "end\n",
             NULL);
    ok(kf != NULL, "an app loads");
    if (!kf)
        return;
    ok(kago_kagofile_napps(kf) == 1 && kago_kagofile_ncontainers(kf) == 0, "one app, no container");
    const struct kago_app *a = kago_kagofile_app(kf, 0);
    ok(!strcmp(a->name, "blog") && !strcmp(a->hosts[0], "blog.example") &&
           !strcmp(a->hosts[1], "www.blog.example") && !a->hosts[2],
       "name, hosts lower-cased");
    ok(a->port == 8080 && a->lifetime_ms == 1200000 && a->idle_timeout_ms == 300000 &&
           a->start_timeout_ms == 10000 && a->stop_grace_ms == 3000,
       "port and durations");
    ok(a->min_instances == 1 && a->max_instances == 4 && a->concurrency == 20 && a->max_pending == 100 &&
           a->max_body == 1u << 20,
       "counts and max_body");
    ok(a->socket_activation && a->spec.listen_port == 8080, "socket activation sets the spec's listen port");
    ok(a->idle_action == KAGO_IDLE_FREEZE && a->freeze_for_ms == 600000, "idle :freeze, for:");
    ok(a->checkpoint_after_ready, "checkpoint :after_ready");
    ok(a->spec.nmounts == 2 && a->spec.mounts[0].kind == KAGO_MOUNT_CGROUP &&
           !strcmp(a->spec.mounts[1].src, "/srv/sites/blog") && !strcmp(a->spec.mounts[1].dst, "/data"),
       "data becomes a bind mount (after the default cgroup mount)");
    ok(a->spec.limits.cpu_quota_us == KAGO_APP_DEFAULT_CPU_QUOTA_US &&
           a->spec.limits.pids == KAGO_DEFAULT_PIDS,
       "an app keeps the default cpu and pids limits it does not set");
    ok(a->spec.limits.memory == 128 << 20 && !strcmp(a->spec.argv[0], "/bin/httpd"),
       "the app's container spec");
    struct kago_app mine;
    kago_kagofile_take_app(kf, 0, &mine);
    kago_kagofile_free(kf);
    ok(!strcmp(mine.name, "blog") && mine.spec.limits.memory == 128 << 20, "take_app outlives the file");
    kago_app_free(&mine);

    struct kago_kagofile *d =
        load("Kago.app('a') { |a| a.hosts 'a.test'; a.container { |c| c.command 'x' } }", NULL);
    ok(d && kago_kagofile_app(d, 0)->lifetime_ms == 20 * 60 * 1000 &&
           kago_kagofile_app(d, 0)->max_instances == 4 && kago_kagofile_app(d, 0)->port == 8080,
       "app defaults are kago_app_init's");
    kago_kagofile_free(d);
}

static void test_scale_up(void)
{
    struct kago_kagofile *kf =
        load("Kago.app 'web' do |a|\n"
             "  a.hosts 'web.test'\n"
             "  a.container { |c| c.command 'x'; c.cgroup cpu: '100%', memory: '1G' }\n"
             "  a.scale_up cpu: '50%'..'200%', memory: '128M'..'512M', window: '2s',\n"
             "             idle: 30, throttled: 30, memory_high: 80, cpu_step: '25%',\n"
             "             scale_out_at_top: false\n"
             "end\n",
             NULL);
    ok(kf != NULL, "a.scale_up loads");
    if (!kf)
        return;
    const struct kago_app *a = kago_kagofile_app(kf, 0);
    const struct kago_scale_up *su = &a->scale_up;
    ok(su->cpu_min == 50000 && su->cpu_max == 200000 && su->cpu_step == 25000, "cpu range and step");
    ok(su->memory_min == 128ll << 20 && su->memory_max == 512ll << 20 && su->memory_step == 96ll << 20,
       "memory range, its step a quarter of it by default");
    ok(su->window_ms == 2000 && su->idle_ms == 30000 && su->throttled_pct == 30 && su->memory_pct == 80 &&
           !su->scale_out_at_top,
       "policy knobs");
    ok(a->spec.limits.cpu_quota_us == 50000 && a->spec.limits.memory == 128ll << 20,
       "an instance starts at the bottom of its ranges (the container's own limits replaced)");
    kago_kagofile_free(kf);
    kf = load("Kago.app('a') { |a| a.hosts 'a.test'; a.container { |c| c.command 'x' } }", NULL);
    ok(kf && !kago_kagofile_app(kf, 0)->scale_up.cpu_max &&
           kago_kagofile_app(kf, 0)->scale_up.window_ms == 10000 &&
           kago_kagofile_app(kf, 0)->scale_up.scale_out_at_top,
       "no scale up by default; its knobs' defaults");
    kago_kagofile_free(kf);
    const char *pre = "Kago.app 'w' do |a|\n  a.hosts 'w.test'\n  a.container { |c| c.command 'x' }\n";
    static const char *const bad[][2] = {
        {"  a.scale_up cpu: '200%'..'50%'\n", "the range goes down"},
        {"  a.scale_up cpu: '50%'\n", "scale_up cpu: expected a range like \"50%\"..\"200%\", got String"},
        {"  a.scale_up cpu: '50%'...'200%'\n", "not ..."},
        {"  a.scale_up memory: '1M'..'8M'\n", "too little (at least 4M)"},
        {"  a.scale_up memory: '64M'..'lots'\n", "scale_up memory range"},
        {"  a.scale_up cpus: '50%'..'100%'\n", "unknown keyword: cpus"},
        {"  a.scale_up window: '1s'\n", "give cpu:"},
        {"  a.scale_up cpu: '50%'..'100%', throttled: 0\n", "not a share between 1% and 100%"},
        {"  a.scale_up cpu: '50%'..'100%', window: '10ms'\n", "too short"},
        {"  a.scale_up cpu: '50%'..'max'\n", "give a bound"},
        {"  a.scale_up memory: '64M'..'128M', cpu_step: '10%'\n", "give cpu: a range too"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char src[512];
        snprintf(src, sizeof src, "%s%send\n", pre, bad[i][0]);
        expect_error(src, "Kagofile:4: ", bad[i][1]);
    }
}

static void test_errors(void)
{
    expect_error("x = 1\nKago.container 'a' do |c|\n  c.command 'x'\n", "Kagofile:4: ", "SyntaxError");
    expect_error("Kago.container 'a' do |c|\n  c.command 'x'\n  c.cgroupz cpu: 1\nend\n",
                 "Kagofile:3: ", "undefined method 'cgroupz'");
    expect_error("Kago.container 'a' do |c|\n  c.command 'x'\n  c.cgroup memory: 'lots'\nend\n",
                 "Kagofile:3: ", "cgroup: size \"lots\"");
    expect_error("Kago.container 'a' do |c|\n  c.command 'x'\n  c.cgroup cpu: '30 percent'\nend\n",
                 "Kagofile:3: ", "cpu \"30 percent\"");
    expect_error("Kago.container 'a' do |c|\n  c.command 'x'\n\n  c.cgroup bogus: 1\nend\n",
                 "Kagofile:4: ", "unknown limit \"bogus\"");
    expect_error("Kago.container 'a' do |c|\n  c.hostname 5\nend\n",
                 "Kagofile:2: ", "hostname: expected a String, got Integer");
    expect_error("Kago.container 'a' do |c|\n  c.rootfs '/r', overlays: true\nend\n",
                 "Kagofile:2: ", "rootfs: unknown keyword: overlays");
    expect_error("Kago.container 'a' do |c|\n  c.rootfs\nend\n",
                 "Kagofile:2: ", "rootfs: wrong number of arguments");
    expect_error("Kago.container 'a' do |c|\n  c.namespaces :pid, :mount, :time\nend\n",
                 "Kagofile:2: ", "unknown namespace \"time\"");
    expect_error("Kago.container 'a' do |c|\n  c.capabilities drop: [:net_rawx]\nend\n",
                 "Kagofile:2: ", "unknown capability \"net_rawx\"");
    expect_error("Kago.container 'a' do |c|\n  c.command 'x'\n  c.after('soon') { }\nend\n",
                 "Kagofile:3: ", "after: duration \"soon\"");
    expect_error("Kago.container 'a' do |c|\n  c.command 'x'\n  c.on_signal(:TERM) { }\nend\n",
                 "Kagofile:3: ", "SIGTERM is the supervisor's own");
    expect_error("Kago.container 'a' do |c|\n  c.command 'x'\n  c.on_exit\nend\n",
                 "Kagofile:3: ", "on_exit: a block is required");
    expect_error("Kago.container 'a' do |c|\n  c.rlimit :nofiles, 10\nend\n",
                 "Kagofile:2: ", "unknown resource \"nofiles\"");
    expect_error("Kago.container 'bad name' do |c|\n  c.command 'x'\nend\n",
                 "Kagofile:2: ", "name \"bad name\"");
    expect_error("Kago.container 'a' do |c|\n  c.env 'A=1'\nend\n",
                 "Kagofile:2: ", "container \"a\": no command given");
    expect_error("Kago.container('a') { |c| c.command 'x' }\nKago.container('a') { |c| c.command 'x' }\n",
                 "Kagofile:2: ", "container \"a\" is defined twice");
    expect_error("Kago.container 'a' do |c|\n  c.command 'x'\n  c.cgroup memory: '1K'\nend\n",
                 "Kagofile:2: ", "memory");
    expect_error("Kago.container 'a' do |c|\n  c.command 'x'\n  c.cgroup '../../etc.passwd' => 1\nend\n",
                 "Kagofile:3: ", "not a cgroup controller key");
    expect_error("Kago.app 'a' do |a|\n  a.container { |c| c.command 'x'; c.on_exit { } }\nend\n",
                 "Kagofile:2: ", "hooks are not available in an app's container");
    expect_error("Kago.app('a') { |a| a.container { |c| c.command 'x' } }\n",
                 "Kagofile:1: ", "no hosts given");
    expect_error("\n\nraise 'custom failure'\n", "Kagofile:3: ", "custom failure (RuntimeError)");
    expect_error("x = 1\n", "Kagofile: ", "defines no container");
    /* found by the fuzzer: a value with a newline must not split the one-line message */
    expect_error("Kago.container 'a' do |c|\n  c.stop_grace \"3s\\n\\nx\"\nend\n",
                 "Kagofile:2: ", "duration \"3s\\n\\nx\"");
    char *sets[] = {"novalue", NULL};
    struct kago_kagofile *kf = NULL;
    struct kago_error *err = NULL;
    ok(kago_kagofile_load_string("Kagofile", "Kago.container('a') { |c| c.command 'x' }", 42, sets, &kf,
                                 &err) < 0 &&
           strstr(err->msg, "--set \"novalue\": expected KEY=VALUE"),
       "bad --set is refused");
    kago_error_clear(&err);
    ok(kago_kagofile_load("/nonexistent/Kagofile", NULL, &kf, &err) < 0 &&
           strstr(err->msg, "/nonexistent/Kagofile: No such file or directory"),
       "missing file names the path and errno text");
    kago_error_clear(&err);
}

/* Writes src to dir/name; returns the path (freed by the caller). */
static char *put(const char *dir, const char *name, const char *src)
{
    char *path = NULL;
    if (asprintf(&path, "%s/%s", dir, name) < 0)
        abort();
    FILE *f = fopen(path, "w");
    if (f) {
        fputs(src, f);
        fclose(f);
    }
    return path;
}

#define APP(n)                                                                                               \
    "Kago.app \"" n "\" do |a|\n  a.hosts \"" n                                                              \
    ".test\"\n  a.container { |c| c.rootfs \"/r\"; c.command \"/x\" }\nend\n"

static void test_load_files(void)
{
    char dir[] = "/tmp/kago-test-kf-XXXXXX";
    if (!mkdtemp(dir))
        abort();
    char *p[4] = {
        put(dir, "a.rb", APP("one") APP("two") "def shared; 7; end\n"),
        put(dir, "b.rb",
            "Kago.app \"three\" do |a|\n  a.hosts \"t#{shared}.test\"\n  a.container { |c| c.rootfs \"/r\"; "
            "c.command \"/x\" }\nend\n"),
        put(dir, "c.rb", "x = 1\n"), put(dir, "d.rb", "Kago.app \"one\" do |a|\nend\n")};
    struct kago_kagofile *kf = NULL;
    struct kago_error *err = NULL;
    int r = kago_kagofile_load_files((const char *const *)p, 2, NULL, &kf, &err);
    ok(r == 0 && kago_kagofile_napps(kf) == 3, "two files, three apps, one mruby state");
    if (r == 0) {
        is_str(kago_kagofile_app_path(kf, 1), p[0], "an app knows its file (the first)");
        is_str(kago_kagofile_app_path(kf, 2), p[1], "an app knows its file (the second)");
        is_str(kago_kagofile_app(kf, 2)->hosts[0], "t7.test",
               "a method of an earlier file is seen by a later one");
        kago_kagofile_free(kf);
    }
    const char *nothing[] = {p[0], p[2]};
    r = kago_kagofile_load_files(nothing, 2, NULL, &kf, &err);
    ok(r < 0 && err && !strncmp(err->msg, p[2], strlen(p[2])) && strstr(err->msg, "defines no container"),
       "a file that defines nothing is named: %s", err ? err->msg : "(loaded)");
    kago_error_free(err);
    err = NULL;
    const char *twice[] = {p[0], p[3]};
    r = kago_kagofile_load_files(twice, 2, NULL, &kf, &err);
    ok(r < 0 && err && !strncmp(err->msg, p[3], strlen(p[3])) && strstr(err->msg, "defined twice"),
       "an app defined again in another file: %s", err ? err->msg : "(loaded)");
    kago_error_free(err);
    for (int i = 0; i < 4; i++) {
        unlink(p[i]);
        free(p[i]);
    }
    rmdir(dir);
}

int main(void)
{
    setenv("KF_TEST_HOME", "/kagotest", 1);
    test_seed_demo();
    test_defaults();
    test_every_element();
    test_caps_modes();
    test_ruby_and_params();
    test_hooks();
    test_app();
    test_scale_up();
    test_errors();
    test_load_files();
    return tap_done();
}
