/* kago serve — TLS on the front door (OpenSSL 3).
 *
 * A tls_front is the server's TLS side: one front SSL_CTX every connection starts with (protocols,
 * ciphers, the SNI callback, the session ticket keys), and the current tls_store. A store holds every
 * certificate of a config (the apps' a.tls files and the default), each in its own SSL_CTX, and the
 * names they serve: exact names (the app's hosts, the certificate's DNS SANs), wildcard SANs
 * (*.x.example) and the default. The SNI callback switches the connection to the chosen SSL_CTX. A
 * reload builds a new store (unchanged files keep their SSL_CTX); a changed file gets a new SSL_CTX in
 * place. Connections already running keep theirs: OpenSSL counts the references.
 *
 * A tls_conn is one connection's TLS state. It never touches a socket: ciphertext that arrived is
 * handed in (kago__tls_input), ciphertext to send is appended to an sbuf (the client's out queue),
 * through a BIO of our own, so the event loop does the I/O and the handshake never blocks it. */
#ifndef KAGO_SERVE_TLS_H
#define KAGO_SERVE_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <openssl/types.h>

#include <kago/app.h>
#include <kago/error.h>

#include "buf.h"

struct tls_front;
struct tls_store;
struct tls_conn;

struct tls_stats {
    uint64_t handshakes_ok, handshakes_failed, resumed;
    uint64_t reloads, reload_failures; /* certificates reloaded because their files changed */
};

/* The front: protocols TLS 1.2 and 1.3, Mozilla's "intermediate" ciphers, tickets whose key rotates
 * every rotate_s seconds (the previous key still decrypts). Returns NULL with *err. */
struct tls_front *kago__tls_front_new(unsigned rotate_s, struct kago_error **err);
void kago__tls_front_free(struct tls_front *f);
struct tls_stats *kago__tls_stats(struct tls_front *f);
/* ALPN offers h2 before http/1.1 (on) or http/1.1 only. */
void kago__tls_front_h2(struct tls_front *f, bool on);
/* The connection's handshake chose h2. */
bool kago__tls_h2(const struct tls_conn *t);
/* The store the SNI callback uses from now on (the front does not own it). */
void kago__tls_front_use(struct tls_front *f, struct tls_store *s);

/* A new store for a config. Certificates whose files are unchanged since old loaded them are shared
 * with old (old may be NULL). unknown_default: names nothing covers get the default certificate (if
 * there is one) instead of the unrecognized_name alert. */
struct tls_store *kago__tls_store_new(struct tls_front *f, struct tls_store *old, bool unknown_default);
/* Adds the default certificate (cert, key: PEM files). 0, or < 0 with *err naming the file and OpenSSL's
 * reason. */
int kago__tls_store_default(struct tls_store *s, const char *cert, const char *key, struct kago_error **err);
/* Adds app's certificate (a->tls_cert, a->tls_key, resolved paths) for its hosts. 0, or < 0 with *err. */
int kago__tls_store_app(struct tls_store *s, const struct kago_app *a, struct kago_error **err);
void kago__tls_store_free(struct tls_store *s);
/* Checks every certificate's files (stat: inode, size, mtime) and loads the changed ones anew (a pair
 * that does not load, say half written, is retried when the files change again; the old one stays).
 * Returns how many were reloaded; log is called for each reload and failure. */
unsigned kago__tls_store_check(struct tls_store *s, void (*log)(void *arg, bool ok, const char *msg),
                               void *arg);
size_t kago__tls_store_count(const struct tls_store *s);

/* The name's certificate index in s as the SNI callback would choose it: 0 exact, 1 wildcard, 2 default,
 * -1 none (alert). For tests; *subject gets the chosen certificate's file. */
int kago__tls_store_lookup(struct tls_store *s, const char *name, const char **cert_file);

/* Certificates on demand (acme.c): a handshake whose name no certificate of the store covers exactly or
 * by a wildcard asks missing(arg, name) (a lower-case host name): 1 holds the handshake (it returns
 * TLS_HS_WAIT) until kago__tls_front_resume(f, name); 0 goes on (the default certificate or the alert). */
void kago__tls_front_on_missing(struct tls_front *f, int (*missing)(void *arg, const char *name), void *arg);
/* TLS-ALPN-01 (RFC 8737, acme.c): a handshake that offers ALPN acme-tls/1 gets challenge(arg, name)'s
 * context (a reference for the caller; called on any handshake thread), negotiates acme-tls/1 and is
 * closed once done (kago__tls_acme); no challenge for the name: a no_application_protocol alert. */
void kago__tls_front_on_challenge(struct tls_front *f, SSL_CTX *(*challenge)(void *arg, const char *name),
                                  void *arg);
/* A context that answers a validation with cert (kago__acme_alpn_cert's) and key. NULL with *err. */
SSL_CTX *kago__tls_challenge_ctx(X509 *cert, EVP_PKEY *key, struct kago_error **err);
/* The connection is a TLS-ALPN-01 validation: nothing but its handshake. */
bool kago__tls_acme(const struct tls_conn *t);
/* Resumes the handshakes held for name: each connection's resume callback runs (it calls
 * kago__tls_handshake again). */
void kago__tls_front_resume(struct tls_front *f, const char *name);
/* Adds a certificate (cert, key: PEM files) for one host name. 0, or < 0 with *err. */
int kago__tls_store_host(struct tls_store *s, const char *host, const char *cert, const char *key,
                         struct kago_error **err);

/* One connection. Ciphertext to send is appended to *out. */
struct tls_conn *kago__tls_conn_new(struct tls_front *f, struct sbuf *out);
void kago__tls_conn_free(struct tls_conn *t);
/* The connection moves (hsloop.c): ciphertext to send goes to out from now on. */
void kago__tls_conn_set_out(struct tls_conn *t, struct sbuf *out);
/* The calling thread is a handshake loop's: a handshake for a name that would wait for a certificate on
 * demand returns TLS_HS_WAIT before asking for it (the first loop asks when it takes the connection). */
void kago__tls_offload_thread(void);
/* Ciphertext that arrived: valid during the calls that follow, until kago__tls_keep, which copies what
 * was not consumed. */
void kago__tls_input(struct tls_conn *t, const char *data, size_t n);
void kago__tls_keep(struct tls_conn *t);
/* Something is left to decrypt without reading the socket. */
bool kago__tls_has_input(const struct tls_conn *t);
/* Advances the handshake: 1 done, 0 needs more input, TLS_HS_WAIT held for a certificate on demand
 * (resume(arg) is called when it may go on), < 0 failed (the alert is in out). */
#define TLS_HS_WAIT 2
int kago__tls_handshake(struct tls_conn *t);
void kago__tls_conn_on_resume(struct tls_conn *t, void (*resume)(void *arg), void *arg);
/* Plaintext: > 0 bytes, TLS_AGAIN (needs more input), TLS_EOF (close_notify) or TLS_ERROR. */
#define TLS_AGAIN 0
#define TLS_EOF   (-1)
#define TLS_ERROR (-2)
ssize_t kago__tls_read(struct tls_conn *t, char *buf, size_t n);
/* Encrypts n bytes into out. 0, or < 0 when the connection is broken. */
int kago__tls_write(struct tls_conn *t, const char *p, size_t n);
/* close_notify into out (once). */
void kago__tls_shutdown(struct tls_conn *t);
bool kago__tls_done(const struct tls_conn *t);
/* The connection waits for its next request: OpenSSL's record buffers go (taken again when needed). */
void kago__tls_idle(struct tls_conn *t);
bool kago__tls_resumed(const struct tls_conn *t);
const char *kago__tls_version(const struct tls_conn *t); /* "TLSv1.3" */
const char *kago__tls_name(const struct tls_conn *t);    /* the SNI the client sent, or NULL */

#endif
