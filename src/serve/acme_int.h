/* kago serve — the ACME client's blocking side (RFC 8555), run on acme.c's worker thread, never on the
 * event loop: a small HTTP/1.0 client over OpenSSL, JWS ES256 requests, and one order from newOrder to
 * the certificate chain on disk. Errors are kago_errors naming the step, the URL and the ACME problem
 * ("newOrder https://...: 400 urn:ietf:params:acme:error:rejectedIdentifier: ..."). */
#ifndef KAGO_SERVE_ACME_INT_H
#define KAGO_SERVE_ACME_INT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include <openssl/evp.h>
#include <openssl/ssl.h>

#include <kago/error.h>

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
    /* HTTP-01: the key authorization for token is served until unpublished (called on the worker) */
    void (*publish)(void *arg, const char *token, const char *key_auth);
    void (*unpublish)(void *arg, const char *token);
    void *arg;
};

/* Obtains a certificate for host: an order, its HTTP-01 challenge, a new P-256 key, the chain. Writes
 * key_path and cert_path (atomically, key first). 0, or < 0 with *err. */
int kago__acme_obtain(struct acme_client *cl, const char *host, const char *cert_path, const char *key_path,
                      struct kago_error **err);
/* GET ask?domain=host: 1 when it answers 200, 0 for any other status, < 0 with *err when it did not
 * answer. */
int kago__acme_ask(struct acme_client *cl, const char *ask_url, const char *host, struct kago_error **err);
void kago__acme_client_clear(struct acme_client *cl);
/* An error response's problem document (RFC 7807) as "STATUS TYPE: DETAIL" into buf. */
void kago__acme_problem(int status, const char *body, char *buf, size_t n);

#endif
