/* Parsers shared by every front end: sizes, CPU shares of a period, durations, namespaces, mounts. */
#include <ctype.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>

#include <kago/spec.h>

#include "util.h"

int kago_parse_size(const char *s, int64_t *bytes, struct kago_error **err)
{
    if (!s || !*s)
        return kago_error_set(err, 0, "size: empty value");
    if (!strcasecmp(s, "max") || !strcasecmp(s, "unlimited")) {
        *bytes = KAGO_NOLIMIT;
        return 0;
    }
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || errno || v < 0 || !isfinite(v))
        return kago_error_set(err, 0, "size \"%s\": not a number of bytes (e.g. 512K, 64M, 1G, max)", s);
    double mul = 1;
    switch (tolower((unsigned char)*end)) {
    case 'k':
        mul = 1024.0;
        end++;
        break;
    case 'm':
        mul = 1024.0 * 1024;
        end++;
        break;
    case 'g':
        mul = 1024.0 * 1024 * 1024;
        end++;
        break;
    case 't':
        mul = 1024.0 * 1024 * 1024 * 1024;
        end++;
        break;
    default:
        break;
    }
    if ((*end == 'b' || *end == 'B') && mul > 1)
        end++;
    if (*end || v * mul >= 0x1p63 || v * mul < 1) /* ((double)INT64_MAX is 2^63: the first value too large) */
        return kago_error_set(err, 0, "size \"%s\": not a number of bytes (e.g. 512K, 64M, 1G, max)", s);
    *bytes = (int64_t)(v * mul);
    return 0;
}

int kago_parse_cpu(const char *s, int64_t *quota_us, struct kago_error **err)
{
    if (!s || !*s)
        return kago_error_set(err, 0, "cpu: empty value");
    if (!strcasecmp(s, "max") || !strcasecmp(s, "unlimited")) {
        *quota_us = KAGO_NOLIMIT;
        return 0;
    }
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    bool pct = *end == '%';
    if (pct)
        end++;
    if (end == s || *end || errno || !isfinite(v) || v <= 0)
        return kago_error_set(err, 0, "cpu \"%s\": expected a share of one core like 30%% or 1.5, or max", s);
    /* 30% of one core = 30 ms per 100 ms period; 1.5 = one and a half cores. */
    double cores = pct ? v / 100.0 : v;
    double q = cores * 100000.0;
    if (q < 1000 || q > 1e9)
        return kago_error_set(err, 0, "cpu \"%s\": out of range (1%% .. 10000 cores)", s);
    *quota_us = (int64_t)llround(q);
    return 0;
}

int kago_parse_duration(const char *s, uint64_t *ms, struct kago_error **err)
{
    if (!s || !*s)
        return kago_error_set(err, 0, "duration: empty value");
    uint64_t total = 0;
    const char *p = s;
    while (*p) {
        char *end;
        errno = 0;
        double v = strtod(p, &end);
        if (end == p || errno || v < 0 || !isfinite(v))
            return kago_error_set(err, 0, "duration \"%s\": expected e.g. 150ms, 5s, 20m, 24h", s);
        double mul;
        if (!strncmp(end, "ms", 2)) {
            mul = 1;
            end += 2;
        } else if (*end == 's') {
            mul = 1000;
            end++;
        } else if (*end == 'm') {
            mul = 60000;
            end++;
        } else if (*end == 'h') {
            mul = 3600000;
            end++;
        } else if (*end == 'd') {
            mul = 86400000;
            end++;
        } else if (*end == '\0' && p == s) {
            mul = 1000; /* a bare number is seconds */
        } else {
            return kago_error_set(err, 0, "duration \"%s\": expected e.g. 150ms, 5s, 20m, 24h", s);
        }
        total += (uint64_t)llround(v * mul);
        p = end;
    }
    *ms = total;
    return 0;
}

static const char *const ns_names[KAGO_NS_COUNT] = {"pid", "mount", "uts", "ipc", "net", "cgroup", "user"};

const char *kago_ns_name(enum kago_ns ns)
{
    return (unsigned)ns < KAGO_NS_COUNT ? ns_names[ns] : "?";
}

int kago_ns_from_name(const char *name)
{
    for (int i = 0; i < KAGO_NS_COUNT; i++)
        if (!strcmp(name, ns_names[i]))
            return i;
    if (!strcmp(name, "mnt"))
        return KAGO_NS_MOUNT;
    if (!strcmp(name, "network"))
        return KAGO_NS_NET;
    return -1;
}

int kago_parse_ns_list(const char *s, unsigned *ns, struct kago_error **err)
{
    cleanup_free char *copy = xstrdup(s);
    unsigned out = 0;
    char *save = NULL;
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        int n = kago_ns_from_name(tok);
        if (n < 0)
            return kago_error_set(err, 0,
                                  "namespace \"%s\": unknown (pid, mount, uts, ipc, net, cgroup, user)", tok);
        out |= 1u << n;
    }
    *ns = out;
    return 0;
}

static int parse_u32(const char *s, char **end, uint32_t *v)
{
    errno = 0;
    unsigned long long x = strtoull(s, end, 10);
    if (*end == s || errno || x > UINT32_MAX || *s == '-')
        return -1;
    *v = (uint32_t)x;
    return 0;
}

int kago_parse_idmap(const char *s, struct kago_idmap *map, struct kago_error **err)
{
    char *end;
    if (parse_u32(s, &end, &map->inside) < 0 || *end != ':' || parse_u32(end + 1, &end, &map->outside) < 0 ||
        *end != ':' || parse_u32(end + 1, &end, &map->count) < 0 || *end || map->count == 0)
        return kago_error_set(err, 0, "id map \"%s\": expected CONTAINER:HOST:COUNT", s);
    return 0;
}

int kago_parse_mount_bind(const char *s, struct kago_mount *m, struct kago_error **err)
{
    memset(m, 0, sizeof *m);
    cleanup_free char *copy = xstrdup(s);
    char *dst = strchr(copy, ':');
    if (!dst || dst == copy)
        return kago_error_set(err, 0, "bind \"%s\": expected SRC:DST[:ro]", s);
    *dst++ = '\0';
    char *opt = strchr(dst, ':');
    if (opt) {
        *opt++ = '\0';
        if (strcmp(opt, "ro") && strcmp(opt, "rw"))
            return kago_error_set(err, 0, "bind \"%s\": option \"%s\": expected ro or rw", s, opt);
        m->readonly = !strcmp(opt, "ro");
    }
    if (dst[0] != '/')
        return kago_error_set(err, 0, "bind \"%s\": destination must be an absolute path", s);
    m->kind = KAGO_MOUNT_BIND;
    m->src = xstrdup(copy);
    m->dst = xstrdup(dst);
    return 0;
}

int kago_parse_mount_tmpfs(const char *s, struct kago_mount *m, struct kago_error **err)
{
    memset(m, 0, sizeof *m);
    cleanup_free char *copy = xstrdup(s);
    char *size = strchr(copy, ':');
    if (size) {
        *size++ = '\0';
        int64_t b;
        if (kago_parse_size(size, &b, NULL) < 0 || b < 0)
            return kago_error_set(err, 0, "tmpfs \"%s\": bad size \"%s\" (e.g. 64M)", s, size);
        m->size = (uint64_t)b;
    }
    if (copy[0] != '/')
        return kago_error_set(err, 0, "tmpfs \"%s\": destination must be an absolute path", s);
    m->kind = KAGO_MOUNT_TMPFS;
    m->dst = xstrdup(copy);
    return 0;
}

static const struct {
    const char *name;
    int resource;
} rlimits[] = {
    {"as", RLIMIT_AS},           {"core", RLIMIT_CORE},         {"cpu", RLIMIT_CPU},
    {"data", RLIMIT_DATA},       {"fsize", RLIMIT_FSIZE},       {"locks", RLIMIT_LOCKS},
    {"memlock", RLIMIT_MEMLOCK}, {"msgqueue", RLIMIT_MSGQUEUE}, {"nice", RLIMIT_NICE},
    {"nofile", RLIMIT_NOFILE},   {"nproc", RLIMIT_NPROC},       {"rss", RLIMIT_RSS},
    {"rtprio", RLIMIT_RTPRIO},   {"rttime", RLIMIT_RTTIME},     {"sigpending", RLIMIT_SIGPENDING},
    {"stack", RLIMIT_STACK},
};

int kago_rlimit_from_name(const char *name)
{
    if (!strncasecmp(name, "RLIMIT_", 7))
        name += 7;
    for (size_t i = 0; i < sizeof rlimits / sizeof rlimits[0]; i++)
        if (!strcasecmp(name, rlimits[i].name))
            return rlimits[i].resource;
    return -1;
}

const char *kago__rlimit_name(int resource)
{
    for (size_t i = 0; i < sizeof rlimits / sizeof rlimits[0]; i++)
        if (rlimits[i].resource == resource)
            return rlimits[i].name;
    return "?";
}

static int parse_rlim_value(const char *s, uint64_t *v)
{
    if (!strcmp(s, "unlimited") || !strcmp(s, "max")) {
        *v = RLIM_INFINITY;
        return 0;
    }
    char *end;
    errno = 0;
    unsigned long long x = strtoull(s, &end, 10);
    if (end == s || *end || errno || *s == '-')
        return -1;
    *v = x;
    return 0;
}

int kago_parse_rlimit(const char *s, struct kago_rlimit *rl, struct kago_error **err)
{
    cleanup_free char *copy = xstrdup(s);
    char *val = strchr(copy, '=');
    if (!val)
        return kago_error_set(err, 0, "rlimit \"%s\": expected NAME=SOFT[:HARD]", s);
    *val++ = '\0';
    rl->resource = kago_rlimit_from_name(copy);
    if (rl->resource < 0)
        return kago_error_set(err, 0, "rlimit \"%s\": unknown resource \"%s\"", s, copy);
    char *hard = strchr(val, ':');
    if (hard)
        *hard++ = '\0';
    if (parse_rlim_value(val, &rl->soft) < 0 || (hard && parse_rlim_value(hard, &rl->hard) < 0))
        return kago_error_set(err, 0, "rlimit \"%s\": expected numbers or unlimited", s);
    if (!hard)
        rl->hard = rl->soft;
    if (rl->soft > rl->hard)
        return kago_error_set(err, 0, "rlimit \"%s\": soft limit above hard limit", s);
    return 0;
}

int kago_parse_user(const char *s, uid_t *uid, gid_t *gid, struct kago_error **err)
{
    char *end;
    uint32_t u, g;
    if (parse_u32(s, &end, &u) < 0 || (*end && *end != ':'))
        return kago_error_set(err, 0, "user \"%s\": expected UID[:GID] (numbers)", s);
    g = u;
    if (*end == ':' && (parse_u32(end + 1, &end, &g) < 0 || *end))
        return kago_error_set(err, 0, "user \"%s\": expected UID[:GID] (numbers)", s);
    *uid = u;
    *gid = g;
    return 0;
}

int kago_signal_from_name(const char *s)
{
    char *end;
    long n = strtol(s, &end, 10);
    if (end != s && !*end)
        return n > 0 && n < NSIG ? (int)n : -1;
    if (!strncasecmp(s, "SIG", 3))
        s += 3;
    for (int i = 1; i < NSIG; i++) {
        const char *abbrev = sigabbrev_np(i);
        if (abbrev && !strcasecmp(abbrev, s))
            return i;
    }
    return -1;
}
