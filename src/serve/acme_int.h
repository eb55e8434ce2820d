/* kago serve — the ACME client's blocking side (RFC 8555), run on acme.c's worker thread, never on the
 * event loop: a small HTTP/1.0 client over OpenSSL, JWS ES256 requests, and one order from newOrder to
 * the certificate chain on disk. Errors are kago_errors naming the step, the URL and the ACME problem
 * ("newOrder https://...: 400 urn:ietf:params:acme:error:rejectedIdentifier: ..."). */
#ifndef KAGO_SERVE_ACME_INT_H
#define KAGO_SERVE_ACME_INT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <kago/error.h>

/* --- policy (acme_policy.c: pure, unit-tested) ---------------------------------------------------- */

#define ACME_BACKOFF_MAX_MS (3600 * 1000ull)
#define ACME_AUTO_RETRIES   10 /* a failed first order is retried on its own this often, then on demand */

/* The overall rate: a bucket of per_minute tokens, refilled evenly over a minute. */
struct acme_bucket {
    double tokens;
    uint64_t at_ms;
    unsigned per_minute;
};
void kago__acme_bucket_init(struct acme_bucket *b, unsigned per_minute, uint64_t now_ms);
/* Takes one token: true, or false when the bucket is empty. */
bool kago__acme_bucket_take(struct acme_bucket *b, uint64_t now_ms);
/* The wait after the failures-th failed order in a row (1: first_ms), doubling up to 1 h. */
uint64_t kago__acme_backoff_ms(uint64_t first_ms, unsigned failures);

/* What serve knows of a host. */
struct acme_host_state {
    bool has_cert, pending;
    time_t renew_at;         /* wall clock */
    unsigned failures;       /* failed orders in a row */
    uint64_t next_try_ms;    /* no order before this (the backoff) */
    uint64_t refused_til_ms; /* --acme-ask said no: not asked again before this */
};
enum acme_verdict {
    ACME_ORDER,        /* order a certificate (and take a token) */
    ACME_ASK_ORDER,    /* ask --acme-ask, then order if it says yes (a token taken) */
    ACME_PENDING,      /* an order runs already (or, for kago__acme_due, its backoff) */
    ACME_HAS_CERT,     /* nothing to do */
    ACME_ASK_REFUSED,  /* --acme-ask said no a short while ago */
    ACME_BACKOFF,      /* a failed order's backoff */
    ACME_NOT_ROUTED,   /* no app routes the host and there is no --acme-ask */
    ACME_RATE_LIMITED, /* over --acme-rate */
    ACME_BAD_NAME,     /* not a name a CA would issue for (no dot, an IP address, a bad label) */
};
/* A handshake for a host without a certificate (h NULL: a host never seen). */
enum acme_verdict kago__acme_decide(const char *name, const struct acme_host_state *h, bool routed,
                                    bool have_ask, struct acme_bucket *b, uint64_t now_ms);
/* A name a public CA could issue for: LDH labels of 1 to 63, at least two, the last not numeric (no IP
 * address), 253 at most. */
bool kago__acme_name_ok(const char *name);
/* The timer's question: ACME_ORDER or ACME_ASK_ORDER when h's renewal (wall >= renew_at) or the retry of
 * its failed first order is due. A retry takes a token of b, as first orders do; a renewal one of
 * renewals, a bucket of its own: strangers' handshakes (made-up names) spend b, and must never starve the
 * renewal of a certificate held (it expired while a flood of 15 names a second took every token). */
enum acme_verdict kago__acme_due(const struct acme_host_state *h, bool routed, bool have_ask,
                                 struct acme_bucket *b, struct acme_bucket *renewals, uint64_t now_ms,
                                 time_t wall);
/* When a certificate is renewed: at 2/3 of its lifetime, or renew_after_s after it was written if that
 * is sooner (renew_after_s > 0: KAGO_ACME_RENEW_AFTER, for tests). */
time_t kago__acme_renew_at(time_t not_before, time_t not_after, time_t written, long renew_after_s);

/* --- base64url, keys, JWS (acme_jws.c: pure, unit-tested) ---------------------------------------- */

/* base64url without padding of n bytes. Returns a malloc'd string. */
char *kago__b64url(const unsigned char *p, size_t n);
/* An ECDSA P-256 key: loaded from path when it exists, else made and written there (0600, atomically).
 * Returns the key, or NULL with *err. */
EVP_PKEY *kago__acme_key_load(const char *path, bool create, struct kago_error **err);
/* Writes key as PEM to path atomically (path.tmp, then rename). 0, or < 0 with *err. */
int kago__acme_key_save(EVP_PKEY *key, const char *path, struct kago_error **err);
/* The key's JWK, {"crv":"P-256","kty":"EC","x":...,"y":...} (members in the order RFC 7638 hashes), and
 * its thumbprint (base64url SHA-256 of that JWK). Both malloc'd; 0, or < 0 with *err. */
int kago__acme_jwk(EVP_PKEY *key, char **jwk, char **thumbprint, struct kago_error **err);
/* A flattened JWS (RFC 7515) of payload signed with ES256: the protected header carries url, nonce and
 * either kid or (kid NULL) the jwk. payload "" is a POST-as-GET. Returns a malloc'd JSON text or NULL. */
char *kago__acme_jws(EVP_PKEY *key, const char *jwk, const char *kid, const char *nonce, const char *url,
                     const char *payload);
/* A CSR for host (CN and DNS SAN) signed by key, DER, base64url. malloc'd, or NULL with *err. */
char *kago__acme_csr(EVP_PKEY *key, const char *host, struct kago_error **err);
/* TLS-ALPN-01 (RFC 8737): a self-signed certificate for host, with the critical acmeIdentifier extension
 * holding the SHA-256 of key_auth, and its new P-256 key (*key). NULL with *err. */
X509 *kago__acme_alpn_cert(const char *host, const char *key_auth, EVP_PKEY **key, struct kago_error **err);
/* The validity of the first certificate of a PEM file (or text when path is NULL). 0, or < 0. */
int kago__acme_cert_times(const char *path, const char *text, time_t *not_before, time_t *not_after,
                          char *issuer, size_t issuer_len);

/* --- HTTP (acme_http.c) ---------------------------------------------------------------------------- */

struct ahttp_resp {
    int status;
    char *body; /* NUL-terminated */
    size_t len;
    char *location, *nonce, *content_type;
    unsigned retry_after_s;
};

void kago__ahttp_resp_free(struct ahttp_resp *r);
/* One request (HTTP/1.0, the connection closed after it) to an http:// or https:// URL; https is verified
 * against tls (a client SSL_CTX). Gives up after timeout_ms, or soon after *stop becomes true. body may
 * be NULL (no body). 0 with *r filled (any status), or < 0 with *err. */
int kago__ahttp(SSL_CTX *tls, const char *method, const char *url, const char *ctype, const char *body,
                unsigned timeout_ms, atomic_bool *stop, struct ahttp_resp *r, struct kago_error **err);
/* Parses a whole response (buf: n bytes and a NUL after them; changed in place) into *r: the status,
 * the headers ACME uses, the body (a chunked one decoded). 0, or < 0 with *err (not HTTP). For tests and
 * the fuzz driver. */
int kago__ahttp_parse(char *buf, size_t n, struct ahttp_resp *r, const char *url, struct kago_error **err);
/* A client context trusting ca_file (PEM), or the system's roots when ca_file is NULL. NULL with *err. */
SSL_CTX *kago__ahttp_tls(const char *ca_file, struct kago_error **err);

/* --- the ACME client (acme_order.c) ---------------------------------------------------------------- */

struct acme_client {
    char *directory, *email;
    SSL_CTX *tls;
    EVP_PKEY *account;
    char *jwk, *thumbprint;
    char *kid;                                 /* the account's URL, once known */
    char *new_nonce, *new_account, *new_order; /* from the directory */
    char *nonce;                               /* the next Replay-Nonce to use */
    unsigned timeout_ms;                       /* of each request */
    atomic_bool *stop;
    /* the challenge answered: TLS-ALPN-01 (RFC 8737) when tls_alpn, else HTTP-01 */
    bool tls_alpn;
    /* the key authorization for token (of host) is answered until unpublished (called on the worker);
     * publish: 0, or < 0 with *err */
    int (*publish)(void *arg, const char *host, const char *token, const char *key_auth,
                   struct kago_error **err);
    void (*unpublish)(void *arg, const char *token);
    void *arg;
};

/* Obtains a certificate for host: an order, its HTTP-01 (or TLS-ALPN-01) challenge, a new P-256 key, the
 * chain. Writes key_path and cert_path (atomically, key first). 0, or < 0 with *err. */
int kago__acme_obtain(struct acme_client *cl, const char *host, const char *cert_path, const char *key_path,
                      struct kago_error **err);
/* GET ask?domain=host: 1 when it answers 200, 0 for any other status, < 0 with *err when it did not
 * answer. */
int kago__acme_ask(struct acme_client *cl, const char *ask_url, const char *host, struct kago_error **err);
void kago__acme_client_clear(struct acme_client *cl);
/* An error response's problem document (RFC 7807) as "STATUS TYPE: DETAIL" into buf. */
void kago__acme_problem(int status, const char *body, char *buf, size_t n);

#endif
