/* kago serve — the ACME client's HTTP: one HTTP/1.0 request per connection (the server then sends no
 * chunked body and closes), over OpenSSL for https. Blocking calls on a non-blocking socket, polled in
 * short steps so that a stop (serve shutting down) or the deadline ends them soon. Runs on acme.c's
 * worker thread only. */
#include <ctype.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "acme_int.h"
#include "util.h"

#define MAX_RESPONSE (1 << 20)

struct url {
    bool https;
    char host[256], port[8];
    const char *path;
};

static int parse_url(const char *s, struct url *u, struct kago_error **err)
{
    const char *p;
    if (!strncmp(s, "https://", 8))
        u->https = true, p = s + 8;
    else if (!strncmp(s, "http://", 7))
        u->https = false, p = s + 7;
    else
        return kago_error_set(err, 0, "%s: not an http:// or https:// URL", s);
    const char *end = p + strcspn(p, "/?#");
    const char *hs = p, *he, *colon;
    if (*p == '[') {
        hs = p + 1;
        he = memchr(hs, ']', (size_t)(end - hs));
        if (!he)
            return kago_error_set(err, 0, "%s: a bad IPv6 address", s);
        colon = he[1] == ':' ? he + 1 : NULL;
    } else {
        colon = memchr(p, ':', (size_t)(end - p));
        he = colon ? colon : end;
    }
    size_t hl = (size_t)(he - hs), pl = colon ? (size_t)(end - colon - 1) : 0;
    if (!hl || hl >= sizeof(u->host) || pl >= sizeof(u->port) || (colon && !pl))
        return kago_error_set(err, 0, "%s: a bad host or port", s);
    memcpy(u->host, hs, hl);
    u->host[hl] = 0;
    if (colon)
        memcpy(u->port, colon + 1, pl), u->port[pl] = 0;
    else
        strcpy(u->port, u->https ? "443" : "80");
    u->path = *end == '/' || *end == '?' ? end : "/"; /* ("?q" is sent as "/?q") */
    return 0;
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

struct io {
    int fd;
    SSL *ssl;
    uint64_t deadline;
    atomic_bool *stop;
    const char *url;
};

/* Waits for fd to be ready for events. 0, or < 0 with *err (deadline, stop, poll's error). */
static int wait_fd(struct io *io, short events, struct kago_error **err)
{
    for (;;) {
        if (io->stop && atomic_load(io->stop))
            return kago_error_set(err, ECANCELED, "%s", io->url);
        uint64_t now = now_ms();
        if (now >= io->deadline)
            return kago_error_set(err, ETIMEDOUT, "%s", io->url);
        uint64_t left = io->deadline - now;
        struct pollfd pfd = {.fd = io->fd, .events = events};
        int r = poll(&pfd, 1, left < 200 ? (int)left : 200);
        if (r > 0)
            return 0;
        if (r < 0 && errno != EINTR)
            return kago_error_set(err, errno, "%s: poll", io->url);
    }
}

static int connect_to(struct io *io, const struct url *u, struct kago_error **err)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV}, *ai = NULL;
    int r = getaddrinfo(u->host, u->port, &hints, &ai);
    if (r)
        return kago_error_set(err, 0, "%s: resolve %s: %s", io->url, u->host, gai_strerror(r));
    int e = ECONNREFUSED;
    for (struct addrinfo *a = ai; a; a = a->ai_next) {
        io->fd = socket(a->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (io->fd < 0) {
            e = errno;
            continue;
        }
        int one = 1; /* the request is written after the handshake's last flight: no wait for its ACK */
        setsockopt(io->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        if (connect(io->fd, a->ai_addr, a->ai_addrlen) == 0)
            break;
        e = errno;
        if (e == EINPROGRESS) {
            struct kago_error *werr = NULL;
            int soerr = 0;
            socklen_t sl = sizeof(soerr);
            if (wait_fd(io, POLLOUT, &werr) == 0 &&
                getsockopt(io->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) == 0 && soerr == 0)
                break;
            e = werr ? werr->code : soerr;
            kago_error_free(werr);
        }
        close(io->fd);
        io->fd = -1;
    }
    freeaddrinfo(ai);
    if (io->fd < 0)
        return kago_error_set(err, e, "%s: connect to %s port %s", io->url, u->host, u->port);
    return 0;
}

static int tls_start(struct io *io, SSL_CTX *tls, const struct url *u, struct kago_error **err)
{
    char why[256];
    io->ssl = SSL_new(tls);
    if (!io->ssl)
        return kago_error_set(err, 0, "%s: SSL_new", io->url);
    SSL_set_fd(io->ssl, io->fd);
    SSL_set_connect_state(io->ssl);
    X509_VERIFY_PARAM *vp = SSL_get0_param(io->ssl);
    if (X509_VERIFY_PARAM_set1_ip_asc(vp, u->host) != 1) { /* a name, not an address */
        SSL_set_tlsext_host_name(io->ssl, u->host);
        SSL_set1_host(io->ssl, u->host);
    }
    ERR_clear_error();
    for (;;) {
        int r = SSL_do_handshake(io->ssl);
        if (r == 1)
            return 0;
        int e = SSL_get_error(io->ssl, r);
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
            if (wait_fd(io, e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, err) < 0)
                return -1;
            continue;
        }
        long v = SSL_get_verify_result(io->ssl);
        if (v != X509_V_OK)
            return kago_error_set(err, 0, "%s: TLS: the server's certificate: %s", io->url,
                                  X509_verify_cert_error_string(v));
        unsigned long q = ERR_get_error();
        if (q)
            ERR_error_string_n(q, why, sizeof(why));
        else
            snprintf(why, sizeof(why), "%s", e == SSL_ERROR_SYSCALL ? strerror(errno) : "handshake failed");
        ERR_clear_error();
        return kago_error_set(err, 0, "%s: TLS: %s", io->url, why);
    }
}

/* Writes or reads: > 0 bytes, 0 end of stream, < 0 with *err. */
static ssize_t io_rw(struct io *io, bool wr, char *p, size_t n, struct kago_error **err)
{
    for (;;) {
        ssize_t k;
        if (io->ssl) {
            size_t done = 0;
            int r = wr ? SSL_write_ex(io->ssl, p, n, &done) : SSL_read_ex(io->ssl, p, n, &done);
            if (r == 1)
                return (ssize_t)done;
            int e = SSL_get_error(io->ssl, r);
            ERR_clear_error();
            if (e == SSL_ERROR_ZERO_RETURN || (!wr && e == SSL_ERROR_SYSCALL && errno == 0))
                return 0;
            if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE)
                return kago_error_set(err, e == SSL_ERROR_SYSCALL ? errno : 0, "%s: TLS %s", io->url,
                                      wr ? "write" : "read");
            if (wait_fd(io, e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, err) < 0)
                return -1;
            continue;
        }
        k = wr ? send(io->fd, p, n, MSG_NOSIGNAL) : recv(io->fd, p, n, 0);
        if (k >= 0)
            return k;
        if (errno != EAGAIN && errno != EINTR)
            return kago_error_set(err, errno, "%s: %s", io->url, wr ? "send" : "recv");
        if (wait_fd(io, wr ? POLLOUT : POLLIN, err) < 0)
            return -1;
    }
}

static char *header(const char *head, const char *name)
{
    size_t nl = strlen(name);
    for (const char *l = strstr(head, "\r\n"); l && l[2]; l = strstr(l + 2, "\r\n")) {
        const char *h = l + 2;
        if (!strncasecmp(h, name, nl) && h[nl] == ':') {
            const char *v = h + nl + 1;
            v += strspn(v, " \t");
            size_t vl = strcspn(v, "\r\n");
            while (vl && isspace((unsigned char)v[vl - 1]))
                vl--;
            char *out = xmalloc(vl + 1);
            memcpy(out, v, vl);
            out[vl] = 0;
            return out;
        }
    }
    return NULL;
}

/* A chunked body decoded in place (a server may send one despite HTTP/1.0). */
static size_t unchunk(char *b, size_t n)
{
    size_t in = 0, out = 0;
    while (in < n) {
        char *end;
        unsigned long k = strtoul(b + in, &end, 16);
        char *nl = memmem(b + in, n - in, "\r\n", 2);
        if (!nl || end == b + in || k == 0)
            break;
        in = (size_t)(nl - b) + 2;
        if (k > n - in)
            k = n - in;
        memmove(b + out, b + in, k);
        out += k;
        in += k + 2;
    }
    b[out] = 0;
    return out;
}

int kago__ahttp_parse(char *buf, size_t n, struct ahttp_resp *r, const char *url, struct kago_error **err)
{
    char *sep = strstr(buf, "\r\n\r\n");
    int st;
    if (!sep || sscanf(buf, "HTTP/%*d.%*d %d", &st) != 1)
        return kago_error_set(err, EPROTO, "%s: not an HTTP response", url);
    *sep = 0;
    r->status = st;
    r->location = header(buf, "Location");
    r->nonce = header(buf, "Replay-Nonce");
    r->content_type = header(buf, "Content-Type");
    cleanup_free char *ra = header(buf, "Retry-After");
    r->retry_after_s = ra ? (unsigned)strtoul(ra, NULL, 10) : 0;
    cleanup_free char *te = header(buf, "Transfer-Encoding");
    size_t off = (size_t)(sep + 4 - buf);
    r->len = n - off;
    r->body = xmalloc(r->len + 1);
    memcpy(r->body, buf + off, r->len);
    r->body[r->len] = 0;
    if (te && !strcasecmp(te, "chunked"))
        r->len = unchunk(r->body, r->len);
    return 0;
}

void kago__ahttp_resp_free(struct ahttp_resp *r)
{
    free(r->body);
    free(r->location);
    free(r->nonce);
    free(r->content_type);
    *r = (struct ahttp_resp){0};
}

int kago__ahttp(SSL_CTX *tls, const char *method, const char *url, const char *ctype, const char *body,
                unsigned timeout_ms, atomic_bool *stop, struct ahttp_resp *r, struct kago_error **err)
{
    struct url u;
    *r = (struct ahttp_resp){0};
    if (parse_url(url, &u, err) < 0)
        return -1;
    struct io io = {.fd = -1, .deadline = now_ms() + timeout_ms, .stop = stop, .url = url};
    bool v6 = strchr(u.host, ':') != NULL, dport = !strcmp(u.port, u.https ? "443" : "80");
    cleanup_free char *req = xasprintf("%s %s%s HTTP/1.0\r\nHost: %s%s%s%s%s\r\nUser-Agent: kago-serve\r\n"
                                       "Accept: */*\r\nConnection: close\r\n",
                                       method, *u.path == '?' ? "/" : "", u.path, v6 ? "[" : "", u.host,
                                       v6 ? "]" : "", dport ? "" : ":", dport ? "" : u.port);
    if (body) {
        char *full =
            xasprintf("%sContent-Type: %s\r\nContent-Length: %zu\r\n\r\n%s", req, ctype, strlen(body), body);
        free(req);
        req = full;
    } else {
        char *full = xasprintf("%s\r\n", req);
        free(req);
        req = full;
    }
    char *buf = NULL;
    size_t len = 0, cap = 0;
    int ret = -1;
    if (connect_to(&io, &u, err) < 0 || (u.https && tls_start(&io, tls, &u, err) < 0))
        goto out;
    for (size_t off = 0, n = strlen(req); off < n;) {
        ssize_t k = io_rw(&io, true, req + off, n - off, err);
        if (k <= 0) {
            if (k == 0)
                kago_error_set(err, EPIPE, "%s: send", url);
            goto out;
        }
        off += (size_t)k;
    }
    for (;;) {
        if (cap - len < 4096) {
            cap = cap ? cap * 2 : 16384;
            buf = xrealloc(buf, cap + 1);
        }
        ssize_t k = io_rw(&io, false, buf + len, cap - len, err);
        if (k < 0)
            goto out;
        if (k == 0)
            break;
        if ((len += (size_t)k) > MAX_RESPONSE) {
            kago_error_set(err, EFBIG, "%s: a response over %d bytes", url, MAX_RESPONSE);
            goto out;
        }
    }
    if (!buf) {
        kago_error_set(err, EPROTO, "%s: the connection closed without a response", url);
        goto out;
    }
    buf[len] = 0;
    ret = kago__ahttp_parse(buf, len, r, url, err);
out:
    free(buf);
    if (io.ssl) {
        SSL_free(io.ssl);
        ERR_clear_error();
    }
    if (io.fd >= 0)
        close(io.fd);
    return ret;
}

SSL_CTX *kago__ahttp_tls(const char *ca_file, struct kago_error **err)
{
    char why[256];
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx) {
        kago_error_set(err, 0, "acme: SSL_CTX_new");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    int ok =
        ca_file ? SSL_CTX_load_verify_locations(ctx, ca_file, NULL) : SSL_CTX_set_default_verify_paths(ctx);
    if (ok != 1) {
        unsigned long e = ERR_get_error();
        ERR_error_string_n(e, why, sizeof(why));
        ERR_clear_error();
        kago_error_set(err, 0, "--acme-ca %s: %s", ca_file ? ca_file : "(system roots)", why);
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}
