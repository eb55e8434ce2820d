/* The shared parsers every front end uses: sizes, CPU shares, durations, namespaces, mounts, rlimits. */
#include <sys/resource.h>

#include <kago/kago.h>

#include "tap.h"
#include "util.h"

int main(void)
{
    struct kago_error *err = NULL;
    int64_t v;
    ok(kago_parse_size("64M", &v, &err) == 0 && v == 64 << 20, "64M");
    ok(kago_parse_size("1.5G", &v, &err) == 0 && v == 1610612736LL, "1.5G");
    ok(kago_parse_size("512k", &v, &err) == 0 && v == 512 << 10, "512k");
    ok(kago_parse_size("max", &v, &err) == 0 && v == KAGO_NOLIMIT, "max");
    ok(kago_parse_size("12Q", &v, &err) < 0 && err && strstr(err->msg, "12Q"), "bad size names the value");
    kago_error_clear(&err);
    ok(kago_parse_size("-5M", &v, &err) < 0, "negative size rejected");
    kago_error_clear(&err);
    ok(kago_parse_size("8388608T", &v, &err) < 0, "2^63 bytes rejected (it wrapped to INT64_MIN)");
    kago_error_clear(&err);
    ok(kago_parse_size("9223372036854775807", &v, &err) < 0, "INT64_MAX as a double is 2^63: rejected");
    kago_error_clear(&err);
    ok(kago_parse_size("8388607T", &v, &err) == 0 && v == 8388607LL << 40, "just under 2^63 bytes");
    kago_error_clear(&err);
    ok(kago_parse_cpu("30%", &v, &err) == 0 && v == 30000, "30%% = 30000us per 100ms");
    ok(kago_parse_cpu("150%", &v, &err) == 0 && v == 150000, "150%% allowed (several cores)");
    ok(kago_parse_cpu("0.5", &v, &err) == 0 && v == 50000, "0.5 cores");
    ok(kago_parse_cpu("0%", &v, &err) < 0, "0%% rejected");
    kago_error_clear(&err);
    ok(kago_parse_cpu("abc", &v, &err) < 0 && strstr(err->msg, "abc"), "bad cpu names the value");
    kago_error_clear(&err);
    uint64_t ms;
    ok(kago_parse_duration("5s", &ms, &err) == 0 && ms == 5000, "5s");
    ok(kago_parse_duration("20m", &ms, &err) == 0 && ms == 1200000, "20m");
    ok(kago_parse_duration("150ms", &ms, &err) == 0 && ms == 150, "150ms");
    ok(kago_parse_duration("1m30s", &ms, &err) == 0 && ms == 90000, "1m30s");
    ok(kago_parse_duration("soon", &ms, &err) < 0, "bad duration");
    kago_error_clear(&err);
    unsigned ns;
    ok(kago_parse_ns_list("pid,net,mount", &ns, &err) == 0 &&
           ns == ((1u << KAGO_NS_PID) | (1u << KAGO_NS_NET) | (1u << KAGO_NS_MOUNT)),
       "namespace list");
    ok(kago_parse_ns_list("pid,bogus", &ns, &err) < 0 && strstr(err->msg, "bogus"),
       "unknown namespace named");
    kago_error_clear(&err);
    struct kago_idmap map;
    ok(kago_parse_idmap("0:100000:65536", &map, &err) == 0 && map.outside == 100000 && map.count == 65536,
       "idmap");
    ok(kago_parse_idmap("0:1", &map, &err) < 0, "short idmap rejected");
    kago_error_clear(&err);
    struct kago_mount m;
    ok(kago_parse_mount_bind("/srv/a:/data:ro", &m, &err) == 0 && m.readonly && !strcmp(m.dst, "/data"),
       "bind ro");
    free(m.src);
    free(m.dst);
    ok(kago_parse_mount_bind("/srv/a:data", &m, &err) < 0, "relative bind destination rejected");
    kago_error_clear(&err);
    ok(kago_parse_mount_tmpfs("/tmp:16M", &m, &err) == 0 && m.size == 16 << 20, "tmpfs with size");
    free(m.dst);
    struct kago_rlimit rl;
    ok(kago_parse_rlimit("nofile=1024:4096", &rl, &err) == 0 && rl.resource == RLIMIT_NOFILE &&
           rl.soft == 1024 && rl.hard == 4096,
       "rlimit");
    ok(kago_parse_rlimit("nofile=10:5", &rl, &err) < 0, "soft above hard rejected");
    kago_error_clear(&err);
    ok(kago_cap_from_name("net_admin") == 12 && kago_cap_from_name("CAP_SYS_ADMIN") == 21,
       "capability names");
    ok(kago_cap_from_name("nonsense") < 0, "unknown capability");
    uid_t u;
    gid_t gr;
    ok(kago_parse_user("1000:100", &u, &gr, &err) == 0 && u == 1000 && gr == 100, "user uid:gid");
    ok(kago_parse_user("nobody", &u, &gr, &err) < 0, "user names rejected (numbers only)");
    kago_error_clear(&err);

    struct kago_spec spec;
    kago_spec_init(&spec);
    ok(kago_spec_validate(&spec, &err) < 0 && strstr(err->msg, "no command"), "spec without command");
    kago_error_clear(&err);
    char *argv[] = {"/bin/true", NULL};
    kago_spec_set_argv(&spec, argv);
    ok(kago_spec_validate(&spec, &err) == 0, "default spec with a command is valid");
    spec.name = xstrdup("bad/name");
    ok(kago_spec_validate(&spec, &err) < 0 && strstr(err->msg, "bad/name"), "bad name rejected");
    kago_error_clear(&err);
    kago_spec_free(&spec);
    return tap_done();
}
