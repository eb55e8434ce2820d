/* kago serve — the FastContainer proxy: entry point for the CLI. */
#ifndef KAGO_SERVE_H
#define KAGO_SERVE_H

#include <stdbool.h>
#include <stdint.h>

#include <kago/error.h>

/* --log-format: of the server log on stderr and of the access log. AUTO is text, or journal when stderr
 * is connected to journald (JOURNAL_STREAM, as systemd sets it). journal: text lines with a syslog
 * priority prefix ("<3>"), which journald turns into each entry's priority; the access log stays text. */
enum kago_log_format { KAGO_LOG_AUTO, KAGO_LOG_TEXT, KAGO_LOG_JSON, KAGO_LOG_JOURNAL };

/* The admin API's bearer token, under serve's --root (made on first start; a dot file: not a record). */
#define KAGO_SERVE_ADMIN_TOKEN ".serve/.admin-token"
/* Where the admin API listens ("IP:PORT", "unix:PATH" or "off"), then serve's pid: written at each start and
 * removed at exit; kago ps finds serve by it. */
#define KAGO_SERVE_ADMIN_ADDR ".serve/.admin-addr"

/* A client listener: --listen IP:PORT (HTTP) or --listen-tls IP:PORT (HTTPS). */
#define KAGO_SERVE_MAX_LISTEN  16
#define KAGO_SERVE_MAX_THREADS 64
struct kago_serve_listen {
    const char *addr;
    bool tls;
};

/* --tls-unknown: what a handshake for a name no certificate covers gets (AUTO: the default certificate
 * when there is one, else the alert). */
enum kago_tls_unknown { KAGO_TLS_UNKNOWN_AUTO, KAGO_TLS_UNKNOWN_DEFAULT, KAGO_TLS_UNKNOWN_ALERT };

struct kago_serve_opts {
    const char *config_dir; /* Kagofiles (*.rb, Kagofile*) defining apps (or cluster) */
    const char *cluster;    /* etcd://HOST:PORT[,...]: the apps are etcd's (docs/cluster.md) */
    const char *node;       /* --node NAME: this node's name in the cluster (default: the host name) */
    const char *advertise;  /* --advertise IP:PORT: where other nodes reach this one (default: --listen) */
    unsigned node_ttl_s;    /* the node key's lease (5 s) */
    /* etcds://: the CA of etcd's certificate, this node's client certificate and key (NULL: $KAGO_ETCD_CA,
     * $KAGO_ETCD_CERT, $KAGO_ETCD_KEY; no CA: the system's roots) */
    const char *etcd_ca, *etcd_cert, *etcd_key;
    /* the client listeners in command line order (none given: 127.0.0.1:8080, HTTP) */
    struct kago_serve_listen listen[KAGO_SERVE_MAX_LISTEN];
    unsigned nlisten;
    const char *tls_default_cert, *tls_default_key; /* the certificate for names no app's covers (NULL) */
    enum kago_tls_unknown tls_unknown;
    uint64_t tls_handshake_timeout_ms; /* a TLS handshake must be done within this (10 s) */
    const char *admin;                 /* "127.0.0.1:9090", "unix:PATH" or "off" */
    const char *admin_token; /* file of the admin API's bearer token (NULL: <root>/KAGO_SERVE_ADMIN_TOKEN) */
    const char *root;        /* container state dir */
    const char *access_log;  /* path, "-" = stdout (default), "off" */
    uint64_t header_timeout_ms, keepalive_timeout_ms, connect_timeout_ms, response_timeout_ms;
    uint64_t send_timeout_ms; /* a started response whose client takes nothing for this long is cut */
    unsigned max_header_bytes;
    bool cold_start_header;        /* X-Kago-Cold-Start on requests that waited (default on) */
    uint64_t frozen_memory_budget; /* bytes all frozen instances may hold; oldest stopped beyond (1G) */
    /* a.scale_up never raises the limits of all instances of such apps beyond these (0: no budget):
     * CPU in quota us per 100 ms period (--budget-cpu 180% = 180000), memory in bytes */
    uint64_t budget_cpu_us, budget_memory;
    uint64_t drain_timeout_ms;       /* SIGTERM: requests in flight may finish this long, then instances are
                                        killed (10 s) */
    enum kago_log_format log_format; /* (AUTO) */
    unsigned max_starting; /* container starts in flight at once, the rest wait in order (0: 2 per CPU) */
    unsigned warm;         /* --warm N: warm sandboxes kept per namespace set, at most (default 4; 0: none) */
    unsigned threads;      /* --threads N: event loops, N - 1 of them for TLS handshakes (0: one per CPU) */
    /* --loop-priority N: the event loops run N nice levels above serve's own, what it starts at serve's own
     * (0: 10; -1: off, everything at serve's own) */
    int loop_priority;
    bool metrics_app_histograms; /* /metrics: every app's histograms, not only their sum over all apps */
    bool no_h2;                  /* --no-h2: TLS listeners offer http/1.1 only (ALPN) */
    bool h2c;          /* --h2c: plain listeners take HTTP/2 with prior knowledge (the preface) too */
    bool upgrade;      /* take the listeners and instances over from the serve running with this root */
    char *const *argv; /* serve's whole command line (NULL-ended): SIGUSR2 starts it again with --upgrade */
    /* Certificates on demand (ACME; docs/serve.md), off without --acme-directory. acme_ca: the CA file
     * that verifies the ACME server's HTTPS (NULL: the system's); acme_ask: the URL that approves hosts
     * not routed to an app; acme_no_wait: a handshake goes on (default certificate or alert) while its
     * order runs, instead of waiting for it; acme_rate: orders per minute in all (10); acme_retry_ms:
     * the first backoff after a failed order (60 s), doubling up to 1 h. */
    const char *acme_directory, *acme_email, *acme_ca, *acme_ask;
    const char *acme_dir; /* the account key and certificates (NULL: <root>/acme) */
    bool acme_no_wait;
    bool acme_tls_alpn; /* --acme-challenge tls-alpn-01 (else http-01) */
    unsigned acme_rate;
    uint64_t acme_retry_ms;
};

void kago_serve_opts_init(struct kago_serve_opts *o);
/* Runs the server until SIGTERM/SIGINT, then drains, stops every instance and removes every
 * trace. Returns 0, or < 0 with *err set when it could not start (bad config, port in use). */
int kago_serve_run(const struct kago_serve_opts *o, struct kago_error **err);

#endif
