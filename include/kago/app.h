/* kago — an app served by `kago serve`: the container part (a spec) plus the FastContainer policy. */
#ifndef KAGO_APP_H
#define KAGO_APP_H

#include <stdbool.h>
#include <stdint.h>

#include <kago/spec.h>

enum kago_idle_action { KAGO_IDLE_STOP, KAGO_IDLE_FREEZE };

/* a.scale_up (docs/kagofile.md): an instance's CPU and memory limits raised live within a range while it is
 * throttled or near its memory limit, lowered again when idle. A resource whose max is 0 is not scaled. */
struct kago_scale_up {
    int64_t cpu_min, cpu_max, cpu_step;          /* CFS quota in us per 100 ms period (50% = 50000) */
    int64_t memory_min, memory_max, memory_step; /* bytes */
    uint64_t window_ms;     /* throttled (or near the memory limit) over this long: one step up; 10 s */
    uint64_t idle_ms;       /* idle over this long: one step down; 60 s */
    unsigned throttled_pct; /* share of the CFS periods of a window throttled that counts as busy; 20 */
    unsigned memory_pct;    /* memory in use at this share of the limit counts as near it; 90 */
    bool scale_out_at_top;  /* a new instance only once the others are at the top of their range; true */
};

struct kago_app {
    char *name;
    char **hosts;              /* NULL-terminated; matched case-insensitively against Host (port stripped);
                                  "*.domain" matches any host under domain (the longest such wins) */
    bool default_app;          /* serve unmatched hosts (hosts may then be empty); at most one app */
    struct kago_spec spec;     /* the container of one instance; spec.name is a prefix for instance names */
    uint16_t port;             /* where the app listens inside its container (127.0.0.1) */
    uint64_t lifetime_ms;      /* max age of an instance; default 20 min */
    uint64_t idle_timeout_ms;  /* stop after no request for this long; default 5 min */
    uint64_t start_timeout_ms; /* default 10 s */
    uint64_t stop_grace_ms;    /* default 10 s */
    uint64_t max_backoff_ms;   /* cap of the delay after failed starts (1 s, 2 s, 4 s ...); default 5 min */
    unsigned min_instances;    /* default 0 */
    unsigned max_instances;    /* default 4 */
    unsigned concurrency;      /* in-flight per instance before scaling out; default 20 */
    unsigned max_pending;      /* held requests per app; default 1000 */
    uint64_t max_body;         /* request body limit in bytes; default 64 MiB; 0 = unlimited */
    bool socket_activation;    /* kago binds 127.0.0.1:port in the instance's netns, passes fd 3 */
    enum kago_idle_action idle_action; /* default KAGO_IDLE_STOP */
    uint64_t freeze_for_ms;            /* KAGO_IDLE_FREEZE: stay frozen this long, then stop */
    bool checkpoint_after_ready;       /* CRIU tier: image the first ready instance */
    bool checkpoint_at_listen;         /* CRIU tier: image it when its socket starts listening */
    uint64_t log_size;                 /* instances' output: rotate <root>/logs/<app>/current.log at this
                                          size (bytes); default 10 MiB */
    unsigned log_keep;                 /* files kept, current.log included (1-100); default 3 */
    char *tls_cert, *tls_key; /* a.tls cert:, key: PEM files (the cert file may hold its chain); NULL:
                                 none. Relative to the Kagofile's directory until serve resolves them */
    bool https_redirect;      /* plain HTTP requests get 308 to https:// */
    char *hsts;               /* Strict-Transport-Security value on responses over TLS; NULL: none */
    struct kago_scale_up scale_up;
};

/* A serve app's container limits unless it sets its own (docs/serve.md): 512 MiB of memory, one CPU. */
#define KAGO_APP_DEFAULT_MEMORY       (512ll << 20)
#define KAGO_APP_DEFAULT_CPU_QUOTA_US (100000ll)

/* Fills app with the documented defaults (and spec with kago_spec_init_front's, plus the limits above). */
KAGO_EXPORT void kago_app_init(struct kago_app *app);
KAGO_EXPORT void kago_app_free(struct kago_app *app);
/* Why host is not a valid host or wildcard pattern as to its "*" (nginx's "*.domain": "*" is the whole
 * first label), as a static string, or NULL. The Kagofile's a.hosts and serve's router both check it. */
KAGO_EXPORT const char *kago_app_host_invalid(const char *host);

#endif
