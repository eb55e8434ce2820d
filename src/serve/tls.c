/* kago serve — TLS: the front SSL_CTX, certificate stores picked by SNI, rotating ticket keys, and each
 * connection's SSL over a BIO that reads from what the loop read and writes into the out queue. */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "tls.h"
#include "util.h"

/* Mozilla's "intermediate" configuration (TLS 1.2 ciphers; TLS 1.3's are OpenSSL's defaults). */
#define CIPHERS_TLS12                                                                                        \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"               \
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"                 \
    "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:DHE-RSA-CHACHA20-POLY1305"
#define GROUPS "X25519:P-256:P-384"

struct ticket_key {
    unsigned char name[16], aes[32], hmac[32];
    time_t made;
    bool valid;
};

/* --threads: handshakes run on several threads (hsloop.c). What they read of the front is guarded: the store
 * (slock: read by the SNI and ClientHello callbacks, written by the first loop when it changes what a name
 * finds) and the ticket keys (klock). Everything else of the front is set before the threads start. */
struct tls_front {
    SSL_CTX *ctx; /* every connection starts here; SNI switches it to a certificate's */
    struct tls_store *store;
    pthread_rwlock_t slock;
    pthread_mutex_t klock;
    struct ticket_key keys[2]; /* [0] encrypts, [0] and [1] decrypt */
    EVP_CIPHER *aes;           /* AES-256-CBC, fetched once (EVP_aes_256_cbc() is fetched at each use) */
    unsigned rotate_s;
    struct tls_stats stats;
    int (*missing)(void *arg, const char *name); /* certificates on demand (acme.c) */
    void *missing_arg;
    struct tls_conn *waiting; /* handshakes held for a certificate */
    bool h2;                  /* ALPN offers h2 */
    /* TLS-ALPN-01 (acme.c): the challenge context of a name being validated, or NULL; any thread */
    SSL_CTX *(*challenge)(void *arg, const char *name);
    void *challenge_arg;
};

struct file_id {
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtim;
    int err; /* stat's errno (0: the rest is valid) */
};

struct tls_cert {
    struct tls_cert *next;
    char *cert_path, *key_path;
    struct file_id cid, kid; /* the files when they were last loaded (or tried) */
    bool stale;              /* they changed and did not load: ctx is of the files before */
    SSL_CTX *ctx;            /* one reference */
};

/* name -> certificate, open addressing */
struct name_map {
    char **keys;
    struct tls_cert **vals;
    size_t cap, n;
};

struct tls_store {
    struct tls_front *f;
    struct tls_store *old; /* while it is built: certificates to share */
    struct tls_cert *certs, *def;
    struct name_map hosts; /* the apps' hosts (a "*.x" host as it is) */
    struct name_map sans;  /* the certificates' exact DNS names */
    struct name_map wsans; /* their wildcard DNS names ("*.x.example") */
    bool unknown_default;
};

struct tls_conn {
    SSL *ssl;
    struct sbuf *out;
    const char *in; /* the read being handled */
    size_t in_len;
    struct sbuf held; /* ciphertext left from earlier reads */
    size_t held_pos;
    bool done, shut;
    bool acme; /* a TLS-ALPN-01 validation: its handshake is all it gets */
    struct tls_front *f;
    struct tls_conn *wnext, **wprev; /* on f->waiting while held for a certificate on demand */
    char *wname;                     /* the name it waits for, while on f->waiting */
    void (*resume)(void *arg);
    void *resume_arg;
};

/* --- errors ------------------------------------------------------------------------------------- */

/* OpenSSL's first queued error as "reason (library)", and the queue cleared. */
static const char *ssl_reason(char *buf, size_t n)
{
    unsigned long e = ERR_peek_error();
    const char *r = e ? ERR_reason_error_string(e) : NULL;
    const char *l = e ? ERR_lib_error_string(e) : NULL;
    if (r)
        snprintf(buf, n, "%s (%s)", r, l ? l : "OpenSSL");
    else if (e)
        ERR_error_string_n(e, buf, n);
    else
        snprintf(buf, n, "unknown OpenSSL error");
    ERR_clear_error();
    return buf;
}

/* --- session tickets ----------------------------------------------------------------------------- */

static int new_key(struct ticket_key *k)
{
    if (RAND_bytes(k->name, sizeof(k->name)) <= 0 || RAND_bytes(k->aes, sizeof(k->aes)) <= 0 ||
        RAND_bytes(k->hmac, sizeof(k->hmac)) <= 0)
        return -1;
    k->made = time(NULL);
    k->valid = true;
    return 0;
}

static void rotate(struct tls_front *f)
{
    if (time(NULL) - f->keys[0].made < (time_t)f->rotate_s)
        return;
    struct ticket_key k;
    if (new_key(&k) < 0)
        return; /* keep the current key a while longer */
    f->keys[1] = f->keys[0];
    f->keys[0] = k;
    OPENSSL_cleanse(&k, sizeof(k));
}

/* Every SSL_CTX's ticket callback (OpenSSL uses the one of the context a connection started with):
 * 1 ticket ok, 2 ok but issue a new one (made with the previous key), 0 unknown key, -1 error. */
static int on_ticket(SSL *s, unsigned char name[16], unsigned char *iv, EVP_CIPHER_CTX *cctx,
                     EVP_MAC_CTX *hctx, int enc)
{
    struct tls_front *f = SSL_CTX_get_app_data(SSL_get_SSL_CTX(s));
    pthread_mutex_lock(&f->klock);
    rotate(f);
    int which = 0, r = -1;
    if (enc) {
        memcpy(name, f->keys[0].name, 16);
        if (RAND_bytes(iv, 16) <= 0 || !EVP_EncryptInit_ex(cctx, f->aes, NULL, f->keys[0].aes, iv))
            goto out;
    } else {
        while (which < 2 && !(f->keys[which].valid && !memcmp(name, f->keys[which].name, 16)))
            which++;
        if (which == 2) {
            r = 0;
            goto out;
        }
        if (!EVP_DecryptInit_ex(cctx, f->aes, NULL, f->keys[which].aes, iv))
            goto out;
    }
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, f->keys[which].hmac, 32),
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
        OSSL_PARAM_construct_end(),
    };
    if (EVP_MAC_CTX_set_params(hctx, params))
        r = which == 0 ? 1 : 2;
out:
    pthread_mutex_unlock(&f->klock);
    return r;
}

/* --- contexts ------------------------------------------------------------------------------------ */

/* ALPN: h2 when the client offers it (and serve does), else http/1.1; a client offering neither gets
 * no protocol (HTTP/1.1 then, as without ALPN). */
static int on_alpn(SSL *ssl, const unsigned char **out, unsigned char *outlen, const unsigned char *in,
                   unsigned int inlen, void *arg)
{
    static const unsigned char both[] = "\x02h2\x08http/1.1";
    struct tls_front *f = arg;
    const unsigned char *mine = f->h2 ? both : both + 3;
    unsigned len = f->h2 ? 12 : 9;
    if (SSL_select_next_proto((unsigned char **)out, outlen, mine, len, in, inlen) != OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_NOACK;
    return SSL_TLSEXT_ERR_OK;
}

static SSL_CTX *new_ctx(struct tls_front *f, struct kago_error **err)
{
    char why[256];
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        kago_error_set(err, 0, "TLS: SSL_CTX_new: %s", ssl_reason(why, sizeof(why)));
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF); /* resumption by tickets: nothing kept here */
    SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"kago", 4);
    SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, on_ticket);
    SSL_CTX_set_app_data(ctx, f);
    SSL_CTX_set_alpn_select_cb(ctx, on_alpn, f);
    SSL_CTX_set_dh_auto(ctx, 1);
    if (SSL_CTX_set_cipher_list(ctx, CIPHERS_TLS12) != 1 || SSL_CTX_set1_groups_list(ctx, GROUPS) != 1) {
        kago_error_set(err, 0, "TLS: ciphers: %s", ssl_reason(why, sizeof(why)));
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

static struct tls_cert *find_cert(struct tls_store *s, const char *name, int *kind);

static int conn_index(void);

static int on_sni(SSL *ssl, int *al, void *arg)
{
    struct tls_front *f = arg;
    struct tls_conn *t = SSL_get_ex_data(ssl, conn_index());
    if (t && t->acme) /* (on_hello gave it its challenge certificate) */
        return SSL_TLSEXT_ERR_OK;
    const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    int kind;
    pthread_rwlock_rdlock(&f->slock);
    struct tls_cert *c = f->store ? find_cert(f->store, name, &kind) : NULL;
    if (c)
        SSL_set_SSL_CTX(ssl, c->ctx); /* (a reference of its own: the store may drop c's after) */
    pthread_rwlock_unlock(&f->slock);
    if (!c) {
        *al = SSL_AD_UNRECOGNIZED_NAME;
        return SSL_TLSEXT_ERR_ALERT_FATAL;
    }
    return SSL_TLSEXT_ERR_OK;
}

/* This thread is a handshake loop's (hsloop.c): a handshake that would wait for a certificate on demand
 * stops before asking for it (TLS_HS_WAIT), and the first loop, where the connection goes, asks. */
static _Thread_local bool offload_thread;

void kago__tls_offload_thread(void)
{
    offload_thread = true;
}

/* The SSL's tls_conn: an ex_data index of its own (the app data slot stays free for others). */
static int conn_index(void)
{
    static int idx = -1;
    if (idx < 0 && (idx = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL)) < 0)
        abort();
    return idx;
}

/* The SNI of a ClientHello (lower case, no trailing dot) into name. false: none or not a host name. */
static bool hello_name(SSL *ssl, char *name, size_t n)
{
    const unsigned char *p;
    size_t len;
    if (!SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_server_name, &p, &len) || len < 5)
        return false;
    size_t list = (size_t)p[0] << 8 | p[1], nl = (size_t)p[3] << 8 | p[4];
    if (list + 2 != len || p[2] != TLSEXT_NAMETYPE_host_name || nl + 5 > len || !nl || nl >= n)
        return false;
    for (size_t i = 0; i < nl; i++) {
        char ch = (char)tolower(p[5 + i]);
        if (!isalnum((unsigned char)ch) && ch != '-' && ch != '.')
            return false;
        name[i] = ch;
    }
    name[nl] = 0;
    if (name[nl - 1] == '.')
        name[nl - 1] = 0;
    return name[0] != 0;
}

#define ACME_ALPN "acme-tls/1"

/* Whether the ClientHello's ALPN list names acme-tls/1 (an ACME server validating TLS-ALPN-01). */
static bool hello_acme(SSL *ssl)
{
    const unsigned char *p;
    size_t len;
    if (!SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_application_layer_protocol_negotiation, &p, &len) ||
        len < 2 || ((size_t)p[0] << 8 | p[1]) != len - 2)
        return false;
    for (size_t i = 2; i < len && i + 1 + p[i] <= len; i += 1 + p[i])
        if (p[i] == sizeof(ACME_ALPN) - 1 && !memcmp(p + i + 1, ACME_ALPN, sizeof(ACME_ALPN) - 1))
            return true;
    return false;
}

/* Before the SNI callback: a validation of TLS-ALPN-01 gets the name's challenge certificate; a name
 * without a certificate of its own may hold the handshake while one is obtained (SSL_CLIENT_HELLO_RETRY:
 * SSL_do_handshake calls this again when resumed). */
static int on_hello(SSL *ssl, int *al, void *arg)
{
    struct tls_front *f = arg;
    struct tls_conn *t = SSL_get_ex_data(ssl, conn_index());
    char name[256];
    int kind = 2;
    if (!t || !hello_name(ssl, name, sizeof(name)))
        return SSL_CLIENT_HELLO_SUCCESS;
    if (f->challenge && hello_acme(ssl)) {
        SSL_CTX *ctx = f->challenge(f->challenge_arg, name);
        if (!ctx) { /* no validation of this name runs */
            *al = SSL_AD_NO_APPLICATION_PROTOCOL;
            return SSL_CLIENT_HELLO_ERROR;
        }
        SSL_set_SSL_CTX(ssl, ctx);
        SSL_CTX_free(ctx);                      /* (the SSL holds its own reference) */
        SSL_set_options(ssl, SSL_OP_NO_TICKET); /* (its options are the front's: no ticket for a check) */
        SSL_set_num_tickets(ssl, 0);
        t->acme = true;
        return SSL_CLIENT_HELLO_SUCCESS;
    }
    if (!f->missing)
        return SSL_CLIENT_HELLO_SUCCESS;
    pthread_rwlock_rdlock(&f->slock);
    bool covered = !f->store || (find_cert(f->store, name, &kind) && kind < 2);
    pthread_rwlock_unlock(&f->slock);
    if (covered)
        return SSL_CLIENT_HELLO_SUCCESS;
    if (offload_thread)
        return SSL_CLIENT_HELLO_RETRY; /* asked again on the first loop */
    if (!f->missing(f->missing_arg, name))
        return SSL_CLIENT_HELLO_SUCCESS;
    if (!t->wprev) {
        t->wname = xstrdup(name);
        t->wnext = f->waiting;
        if (f->waiting)
            f->waiting->wprev = &t->wnext;
        t->wprev = &f->waiting;
        f->waiting = t;
    }
    return SSL_CLIENT_HELLO_RETRY;
}

static void unwait(struct tls_conn *t)
{
    if (!t->wprev)
        return;
    *t->wprev = t->wnext;
    if (t->wnext)
        t->wnext->wprev = t->wprev;
    t->wprev = NULL;
    t->wnext = NULL;
    free(t->wname);
    t->wname = NULL;
}

void kago__tls_front_on_missing(struct tls_front *f, int (*missing)(void *arg, const char *name), void *arg)
{
    f->missing = missing;
    f->missing_arg = arg;
}

void kago__tls_front_on_challenge(struct tls_front *f, SSL_CTX *(*challenge)(void *arg, const char *name),
                                  void *arg)
{
    f->challenge = challenge;
    f->challenge_arg = arg;
}

/* A challenge context negotiates acme-tls/1, or nothing. */
static int on_alpn_acme(SSL *ssl, const unsigned char **out, unsigned char *outlen, const unsigned char *in,
                        unsigned int inlen, void *arg)
{
    static const unsigned char mine[] = "\x0a" ACME_ALPN;
    if (SSL_select_next_proto((unsigned char **)out, outlen, mine, sizeof(mine) - 1, in, inlen) !=
        OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_ALERT_FATAL;
    return SSL_TLSEXT_ERR_OK;
}

SSL_CTX *kago__tls_challenge_ctx(X509 *cert, EVP_PKEY *key, struct kago_error **err)
{
    char why[256];
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx || SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1 ||
        SSL_CTX_use_certificate(ctx, cert) != 1 || SSL_CTX_use_PrivateKey(ctx, key) != 1) {
        kago_error_set(err, 0, "TLS: the tls-alpn-01 context: %s", ssl_reason(why, sizeof(why)));
        SSL_CTX_free(ctx);
        return NULL;
    }
    SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET | SSL_OP_NO_RENEGOTIATION);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_alpn_select_cb(ctx, on_alpn_acme, NULL);
    return ctx;
}

bool kago__tls_acme(const struct tls_conn *t)
{
    return t->acme;
}

void kago__tls_front_resume(struct tls_front *f, const char *name)
{
    for (;;) { /* from the head each time: a resumed connection may close others */
        struct tls_conn *t = f->waiting;
        while (t && strcmp(t->wname, name) != 0)
            t = t->wnext;
        if (!t)
            return;
        unwait(t);
        if (t->resume)
            t->resume(t->resume_arg);
    }
}

void kago__tls_conn_on_resume(struct tls_conn *t, void (*resume)(void *arg), void *arg)
{
    t->resume = resume;
    t->resume_arg = arg;
}

struct tls_front *kago__tls_front_new(unsigned rotate_s, struct kago_error **err)
{
    struct tls_front *f = xcalloc(1, sizeof(*f));
    f->rotate_s = rotate_s ? rotate_s : 12 * 3600;
    pthread_rwlock_init(&f->slock, NULL);
    pthread_mutex_init(&f->klock, NULL);
    (void)conn_index(); /* (made once, here, before any handshake thread) */
    if (!(f->aes = EVP_CIPHER_fetch(NULL, "AES-256-CBC", NULL))) {
        free(f);
        kago_error_set(err, 0, "TLS: no AES-256-CBC for session tickets");
        return NULL;
    }
    if (new_key(&f->keys[0]) < 0) {
        EVP_CIPHER_free(f->aes);
        free(f);
        kago_error_set(err, 0, "TLS: no random bytes for the ticket key");
        return NULL;
    }
    if (!(f->ctx = new_ctx(f, err))) {
        EVP_CIPHER_free(f->aes);
        free(f);
        return NULL;
    }
    SSL_CTX_set_tlsext_servername_callback(f->ctx, on_sni);
    SSL_CTX_set_tlsext_servername_arg(f->ctx, f);
    SSL_CTX_set_client_hello_cb(f->ctx, on_hello, f);
    return f;
}

void kago__tls_front_free(struct tls_front *f)
{
    if (!f)
        return;
    SSL_CTX_free(f->ctx);
    EVP_CIPHER_free(f->aes);
    OPENSSL_cleanse(f->keys, sizeof(f->keys));
    pthread_rwlock_destroy(&f->slock);
    pthread_mutex_destroy(&f->klock);
    free(f);
}

void kago__tls_front_h2(struct tls_front *f, bool on)
{
    f->h2 = on;
}

bool kago__tls_h2(const struct tls_conn *t)
{
    const unsigned char *p = NULL;
    unsigned n = 0;
    SSL_get0_alpn_selected(t->ssl, &p, &n);
    return n == 2 && p[0] == 'h' && p[1] == '2';
}

struct tls_stats *kago__tls_stats(struct tls_front *f)
{
    return &f->stats;
}

void kago__tls_front_use(struct tls_front *f, struct tls_store *s)
{
    pthread_rwlock_wrlock(&f->slock);
    f->store = s;
    if (s)
        s->old = NULL;
    pthread_rwlock_unlock(&f->slock);
}

/* --- name maps ----------------------------------------------------------------------------------- */

static uint64_t hash(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static size_t slot(const struct name_map *m, const char *key)
{
    size_t i = hash(key) & (m->cap - 1);
    while (m->keys[i] && strcmp(m->keys[i], key) != 0)
        i = (i + 1) & (m->cap - 1);
    return i;
}

static void map_put(struct name_map *m, const char *key, struct tls_cert *c, bool overwrite);

static void map_grow(struct name_map *m)
{
    struct name_map o = *m;
    m->cap = o.cap ? o.cap * 2 : 16;
    m->keys = xcalloc(m->cap, sizeof(*m->keys));
    m->vals = xcalloc(m->cap, sizeof(*m->vals));
    m->n = 0;
    for (size_t i = 0; i < o.cap; i++)
        if (o.keys[i]) {
            size_t j = slot(m, o.keys[i]);
            m->keys[j] = o.keys[i];
            m->vals[j] = o.vals[i];
            m->n++;
        }
    free(o.keys);
    free(o.vals);
}

static void map_put(struct name_map *m, const char *key, struct tls_cert *c, bool overwrite)
{
    if (2 * (m->n + 1) > m->cap)
        map_grow(m);
    size_t i = slot(m, key);
    if (m->keys[i]) {
        if (overwrite)
            m->vals[i] = c;
        return;
    }
    m->keys[i] = xstrdup(key);
    m->vals[i] = c;
    m->n++;
}

static struct tls_cert *map_get(const struct name_map *m, const char *key)
{
    if (!m->cap)
        return NULL;
    size_t i = slot(m, key);
    return m->keys[i] ? m->vals[i] : NULL;
}

static void map_free(struct name_map *m)
{
    for (size_t i = 0; i < m->cap; i++)
        free(m->keys[i]);
    free(m->keys);
    free(m->vals);
    *m = (struct name_map){0};
}

/* exact host, exact SAN, wildcard host, wildcard SAN, default */
static struct tls_cert *find_cert(struct tls_store *s, const char *name, int *kind)
{
    char key[256];
    size_t n = 0;
    for (; name && name[n] && n < sizeof(key) - 1; n++)
        key[n] = (char)tolower((unsigned char)name[n]);
    if (n && key[n - 1] == '.')
        n--;
    key[n] = 0;
    struct tls_cert *c = NULL;
    *kind = 0;
    if (n && ((c = map_get(&s->hosts, key)) || (c = map_get(&s->sans, key))))
        return c;
    char *dot = n ? strchr(key, '.') : NULL;
    if (dot && dot > key && dot[1]) {
        *kind = 1;
        dot[-1] = '*';
        if ((c = map_get(&s->hosts, dot - 1)) || (c = map_get(&s->wsans, dot - 1)))
            return c;
    }
    *kind = 2;
    return s->unknown_default ? s->def : NULL;
}

int kago__tls_store_lookup(struct tls_store *s, const char *name, const char **cert_file)
{
    int kind;
    struct tls_cert *c = find_cert(s, name, &kind);
    *cert_file = c ? c->cert_path : NULL;
    return c ? kind : -1;
}

/* --- certificates -------------------------------------------------------------------------------- */

static struct file_id file_id(const char *path)
{
    struct stat st;
    if (stat(path, &st) < 0)
        return (struct file_id){.err = errno ? errno : EIO};
    return (struct file_id){.dev = st.st_dev, .ino = st.st_ino, .size = st.st_size, .mtim = st.st_mtim};
}

static bool same_file(const struct file_id *a, const struct file_id *b)
{
    return a->err == b->err && a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
           a->mtim.tv_sec == b->mtim.tv_sec && a->mtim.tv_nsec == b->mtim.tv_nsec;
}

/* A regular file that can be read (opened without blocking: a FIFO put in a certificate's place held the
 * loop in open(2) for good, SIGTERM included). */
static int readable(const char *what, const char *path, struct kago_error **err)
{
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
    if (fd < 0)
        return kago_error_set(err, errno, "%s %s", what, path);
    struct stat st;
    int r = fstat(fd, &st) < 0     ? kago_error_set(err, errno, "%s %s", what, path)
            : !S_ISREG(st.st_mode) ? kago_error_set(err, 0, "%s %s: %s, not a regular file", what, path,
                                                    kago__file_kind(st.st_mode))
                                   : 0;
    close(fd);
    return r;
}

/* Why the key is not the certificate's: keys of two types (OpenSSL then only says that the key's type
 * has no certificate), or OpenSSL's reason. */
static const char *key_mismatch(SSL_CTX *ctx, X509 *x, char *buf, size_t n)
{
    EVP_PKEY *pub = x ? X509_get0_pubkey(x) : NULL, *priv = SSL_CTX_get0_privatekey(ctx);
    const char *pt = pub ? EVP_PKEY_get0_type_name(pub) : NULL,
               *kt = priv ? EVP_PKEY_get0_type_name(priv) : NULL;
    if (pt && kt && strcmp(pt, kt) != 0) {
        ERR_clear_error();
        snprintf(buf, n, "an %s key for an %s certificate", kt, pt);
        return buf;
    }
    return ssl_reason(buf, n);
}

/* A context with the certificate (chain) and key of these files. NULL with *err naming the file and
 * OpenSSL's reason. */
static SSL_CTX *load_pair(struct tls_front *f, const char *cert, const char *key, struct kago_error **err)
{
    char why[256];
    if (readable("tls cert", cert, err) < 0 || readable("tls key", key, err) < 0)
        return NULL;
    SSL_CTX *ctx = new_ctx(f, err);
    if (!ctx)
        return NULL;
    X509 *x = NULL; /* the leaf, before the key picks the slot of its type */
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1 || !(x = SSL_CTX_get0_certificate(ctx)))
        kago_error_set(err, 0, "tls cert %s: %s", cert, ssl_reason(why, sizeof(why)));
    else if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1)
        kago_error_set(err, 0, "tls key %s: %s", key, ssl_reason(why, sizeof(why)));
    else if (SSL_CTX_check_private_key(ctx) != 1)
        kago_error_set(err, 0, "tls key %s does not match the certificate in %s: %s", key, cert,
                       key_mismatch(ctx, x, why, sizeof(why)));
    else
        return ctx;
    SSL_CTX_free(ctx);
    return NULL;
}

/* The certificate's DNS names into the store's SAN maps. */
static void index_sans(struct tls_store *s, struct tls_cert *c)
{
    X509 *x = SSL_CTX_get0_certificate(c->ctx);
    GENERAL_NAMES *names = x ? X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL) : NULL;
    for (int i = 0; names && i < sk_GENERAL_NAME_num(names); i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(names, i);
        if (g->type != GEN_DNS)
            continue;
        const unsigned char *d = ASN1_STRING_get0_data(g->d.dNSName);
        int n = ASN1_STRING_length(g->d.dNSName);
        char name[256];
        if (n <= 0 || n >= (int)sizeof(name) || memchr(d, 0, (size_t)n))
            continue;
        for (int k = 0; k < n; k++)
            name[k] = (char)tolower(d[k]);
        name[n] = 0;
        bool wild = name[0] == '*' && name[1] == '.';
        map_put(wild ? &s->wsans : &s->sans, name, c, false);
    }
    GENERAL_NAMES_free(names);
}

static void reindex_sans(struct tls_store *s)
{
    map_free(&s->sans);
    map_free(&s->wsans);
    for (struct tls_cert *c = s->certs; c; c = c->next)
        index_sans(s, c);
}

/* The store's certificate of these files: one it has, old's when unchanged, else loaded now. */
static struct tls_cert *get_cert(struct tls_store *s, const char *cert, const char *key,
                                 struct kago_error **err)
{
    for (struct tls_cert *c = s->certs; c; c = c->next)
        if (!strcmp(c->cert_path, cert) && !strcmp(c->key_path, key))
            return c;
    struct file_id cid = file_id(cert), kid = file_id(key);
    SSL_CTX *ctx = NULL;
    for (struct tls_cert *o = s->old ? s->old->certs : NULL; o && !ctx; o = o->next)
        if (!strcmp(o->cert_path, cert) && !strcmp(o->key_path, key) && !o->stale &&
            same_file(&o->cid, &cid) && same_file(&o->kid, &kid) && !cid.err && !kid.err) {
            ctx = o->ctx;
            SSL_CTX_up_ref(ctx);
        }
    if (!ctx && !(ctx = load_pair(s->f, cert, key, err)))
        return NULL;
    struct tls_cert *c = xcalloc(1, sizeof(*c));
    c->cert_path = xstrdup(cert);
    c->key_path = xstrdup(key);
    c->cid = cid;
    c->kid = kid;
    c->ctx = ctx;
    c->next = s->certs;
    s->certs = c;
    index_sans(s, c);
    return c;
}

struct tls_store *kago__tls_store_new(struct tls_front *f, struct tls_store *old, bool unknown_default)
{
    struct tls_store *s = xcalloc(1, sizeof(*s));
    s->f = f;
    s->old = old;
    s->unknown_default = unknown_default;
    return s;
}

int kago__tls_store_default(struct tls_store *s, const char *cert, const char *key, struct kago_error **err)
{
    s->def = get_cert(s, cert, key, err);
    return s->def ? 0 : -1;
}

int kago__tls_store_host(struct tls_store *s, const char *host, const char *cert, const char *key,
                         struct kago_error **err)
{
    pthread_rwlock_wrlock(&s->f->slock); /* (the store may be the one handshakes read) */
    struct tls_cert *c = get_cert(s, cert, key, err);
    if (c)
        map_put(&s->hosts, host, c, true);
    pthread_rwlock_unlock(&s->f->slock);
    return c ? 0 : -1;
}

int kago__tls_store_app(struct tls_store *s, const struct kago_app *a, struct kago_error **err)
{
    pthread_rwlock_wrlock(&s->f->slock); /* (--cluster adds to the store handshakes read) */
    struct tls_cert *c = get_cert(s, a->tls_cert, a->tls_key, err);
    for (char **h = a->hosts; c && h && *h; h++)
        map_put(&s->hosts, *h, c, true);
    pthread_rwlock_unlock(&s->f->slock);
    return c ? 0 : -1;
}

void kago__tls_store_free(struct tls_store *s)
{
    if (!s)
        return;
    if (s->f && s->f->store == s)
        kago__tls_front_use(s->f, NULL);
    for (struct tls_cert *c = s->certs, *next; c; c = next) {
        next = c->next;
        SSL_CTX_free(c->ctx); /* connections using it hold their own reference */
        free(c->cert_path);
        free(c->key_path);
        free(c);
    }
    map_free(&s->hosts);
    map_free(&s->sans);
    map_free(&s->wsans);
    free(s);
}

size_t kago__tls_store_count(const struct tls_store *s)
{
    size_t n = 0;
    for (const struct tls_cert *c = s ? s->certs : NULL; c; c = c->next)
        n++;
    return n;
}

unsigned kago__tls_store_check(struct tls_store *s, void (*log)(void *arg, bool ok, const char *msg),
                               void *arg)
{
    unsigned reloaded = 0;
    /* the files are looked at and loaded outside the lock (handshake threads read the store meanwhile);
     * only a swap of a certificate's context and the SAN index take it */
    for (struct tls_cert *c = s ? s->certs : NULL; c; c = c->next) {
        struct file_id cid = file_id(c->cert_path), kid = file_id(c->key_path);
        if (same_file(&cid, &c->cid) && same_file(&kid, &c->kid))
            continue;
        c->cid = cid; /* tried once per change: a half-written pair waits for the next one */
        c->kid = kid;
        struct kago_error *err = NULL;
        SSL_CTX *ctx = load_pair(s->f, c->cert_path, c->key_path, &err);
        char msg[1024];
        c->stale = !ctx;
        if (!ctx) {
            s->f->stats.reload_failures++;
            snprintf(msg, sizeof(msg),
                     "%s changed but does not load, keeping the certificate loaded before: %s", c->cert_path,
                     err->msg);
            kago_error_free(err);
            log(arg, false, msg);
            continue;
        }
        pthread_rwlock_wrlock(&s->f->slock);
        SSL_CTX_free(c->ctx); /* handshakes from now on get the new one; running connections keep theirs */
        c->ctx = ctx;
        pthread_rwlock_unlock(&s->f->slock);
        reloaded++;
        s->f->stats.reloads++;
        snprintf(msg, sizeof(msg), "%s changed: reloaded for new handshakes", c->cert_path);
        log(arg, true, msg);
    }
    if (reloaded) {
        pthread_rwlock_wrlock(&s->f->slock);
        reindex_sans(s);
        pthread_rwlock_unlock(&s->f->slock);
    }
    return reloaded;
}

/* --- connections ------------------------------------------------------------------------------- */

static int bio_write(BIO *b, const char *p, int n)
{
    struct tls_conn *t = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    sbuf_add(t->out, p, (size_t)n);
    return n;
}

static int bio_read(BIO *b, char *p, int n)
{
    struct tls_conn *t = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    const char *src;
    size_t avail;
    if (t->held.len > t->held_pos) {
        src = t->held.data + t->held_pos;
        avail = t->held.len - t->held_pos;
    } else if (t->in_len) {
        src = t->in;
        avail = t->in_len;
    } else {
        BIO_set_retry_read(b);
        return -1;
    }
    size_t k = avail < (size_t)n ? avail : (size_t)n;
    memcpy(p, src, k);
    if (src == t->in) {
        t->in += k;
        t->in_len -= k;
    } else if ((t->held_pos += k) == t->held.len) {
        t->held_pos = 0;
        sbuf_reset(&t->held, 0);
    }
    return (int)k;
}

static long bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

static BIO_METHOD *bio_m;
static pthread_once_t bio_once = PTHREAD_ONCE_INIT; /* (handshake loops make their first ones at once) */

static void bio_method_init(void)
{
    bio_m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "kago serve");
    if (!bio_m)
        abort();
    BIO_meth_set_write(bio_m, bio_write);
    BIO_meth_set_read(bio_m, bio_read);
    BIO_meth_set_ctrl(bio_m, bio_ctrl);
}

static BIO_METHOD *bio_method(void)
{
    pthread_once(&bio_once, bio_method_init);
    return bio_m;
}

struct tls_conn *kago__tls_conn_new(struct tls_front *f, struct sbuf *out)
{
    struct tls_conn *t = xcalloc(1, sizeof(*t));
    t->out = out;
    t->ssl = SSL_new(f->ctx);
    BIO *b = BIO_new(bio_method());
    if (!t->ssl || !b)
        abort(); /* out of memory */
    BIO_set_data(b, t);
    BIO_set_init(b, 1);
    SSL_set_bio(t->ssl, b, b);
    SSL_set_accept_state(t->ssl);
    SSL_set_ex_data(t->ssl, conn_index(), t);
    t->f = f;
    return t;
}

void kago__tls_conn_set_out(struct tls_conn *t, struct sbuf *out)
{
    t->out = out;
}

void kago__tls_conn_free(struct tls_conn *t)
{
    if (!t)
        return;
    unwait(t);
    SSL_free(t->ssl);
    sbuf_free(&t->held);
    free(t);
}

void kago__tls_input(struct tls_conn *t, const char *data, size_t n)
{
    t->in = data;
    t->in_len = n;
}

void kago__tls_keep(struct tls_conn *t)
{
    if (t->in_len)
        sbuf_add(&t->held, t->in, t->in_len);
    t->in = NULL;
    t->in_len = 0;
}

bool kago__tls_has_input(const struct tls_conn *t)
{
    return t->held.len > t->held_pos || t->in_len || SSL_has_pending(t->ssl);
}

int kago__tls_handshake(struct tls_conn *t)
{
    if (t->done)
        return 1;
    int r = SSL_do_handshake(t->ssl);
    if (r == 1) {
        t->done = true;
        return 1;
    }
    int e = SSL_get_error(t->ssl, r);
    if (e == SSL_ERROR_WANT_READ)
        return 0;
    if (e == SSL_ERROR_WANT_CLIENT_HELLO_CB)
        return TLS_HS_WAIT;
    ERR_clear_error();
    return -1;
}

ssize_t kago__tls_read(struct tls_conn *t, char *buf, size_t n)
{
    size_t got = 0;
    int r = SSL_read_ex(t->ssl, buf, n, &got);
    if (r == 1)
        return (ssize_t)got;
    int e = SSL_get_error(t->ssl, r);
    if (e == SSL_ERROR_WANT_READ)
        return TLS_AGAIN;
    ERR_clear_error();
    return e == SSL_ERROR_ZERO_RETURN ? TLS_EOF : TLS_ERROR;
}

int kago__tls_write(struct tls_conn *t, const char *p, size_t n)
{
    size_t w = 0;
    if (t->shut || !t->done)
        return -1;
    if (SSL_write_ex(t->ssl, p, n, &w) != 1 || w != n) {
        ERR_clear_error();
        return -1;
    }
    return 0;
}

void kago__tls_shutdown(struct tls_conn *t)
{
    if (t->shut || !t->done)
        return;
    t->shut = true;
    SSL_shutdown(t->ssl);
    ERR_clear_error();
}

void kago__tls_idle(struct tls_conn *t)
{
    if (t->done && !SSL_has_pending(t->ssl) && t->held.len == t->held_pos)
        SSL_free_buffers(t->ssl); /* (as nginx does on a keep-alive connection) */
}

bool kago__tls_done(const struct tls_conn *t)
{
    return t->done;
}

bool kago__tls_resumed(const struct tls_conn *t)
{
    return SSL_session_reused(t->ssl);
}

const char *kago__tls_version(const struct tls_conn *t)
{
    return SSL_get_version(t->ssl);
}

const char *kago__tls_name(const struct tls_conn *t)
{
    return SSL_get_servername(t->ssl, TLSEXT_NAMETYPE_host_name);
}
