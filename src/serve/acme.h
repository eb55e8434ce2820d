/* kago serve — certificates on demand (ACME, RFC 8555), as Caddy's "On-Demand TLS".
 *
 * A TLS handshake for a host that has no certificate of its own is held (tls.c) while a worker thread
 * obtains one from --acme-directory (acme_order.c: HTTP-01, answered by serve on its plain listener
 * through kago__acme_http01); the certificate goes into the running store and the held handshakes go on.
 * Certificates and the account key live under <root>/acme and are used again after a restart; a timer
 * renews each at 2/3 of its lifetime. The abuse guard: only hosts routed to an app (exactly or by a
 * wildcard), or approved by --acme-ask; one order per host at a time, a failed one retried with
 * exponential backoff, and --acme-rate orders per minute in all. Counters in /metrics (kago_acme_*). */
#ifndef KAGO_SERVE_ACME_H
#define KAGO_SERVE_ACME_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <kago/error.h>

struct server;
struct tls_store;
struct acme;

struct acme_stats {
    uint64_t orders_ok, orders_failed, renewals_ok, renewals_failed;
    uint64_t refused_unrouted, refused_ask, refused_bad_name, rate_limited, backoff_skipped, held;
    _Atomic uint64_t challenges_served; /* HTTP-01 answers and TLS-ALPN-01 handshakes (any thread) */
    unsigned certificates, pending;
};

/* Starts the ACME side of srv (srv->opts.acme_*): the state dir, the account key (made on first use),
 * the certificates already there, the worker thread, the renewal timer; and hooks the TLS front. Returns
 * NULL with *err. */
struct acme *kago__acme_new(struct server *srv, struct kago_error **err);
/* Stops the worker (an order in flight is abandoned within a fraction of a second) and closes the
 * handles; kago__acme_free once the loop has run their close callbacks. */
void kago__acme_stop(struct acme *a);
void kago__acme_free(struct acme *a);
/* Adds every certificate obtained so far to a new store (before the apps' own: theirs win). */
void kago__acme_fill_store(struct acme *a, struct tls_store *ts);
/* HTTP-01: for a request path "/.well-known/acme-challenge/TOKEN" of a challenge in progress, copies its
 * key authorization into out and returns its length; else 0 (the request is routed as any other). */
size_t kago__acme_http01(struct acme *a, const char *path, size_t len, char *out, size_t outsz);
const struct acme_stats *kago__acme_stats(const struct acme *a);

#endif
