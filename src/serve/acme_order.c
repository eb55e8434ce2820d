/* kago serve — one ACME order (RFC 8555 section 7): the directory, a nonce, the account (newAccount
 * with the same key finds it again), newOrder, each authorization's HTTP-01 challenge, finalize with a
 * CSR of a new P-256 key, the certificate chain. Blocking; on acme.c's worker thread. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "acme_int.h"
#include "util.h"

#define POLL_MS       50 /* the first wait for a pending authorization or order, doubling to 1 s */
#define POLL_LIMIT_MS 60000
#define JOSE          "application/jose+json"

static void sleep_ms(struct acme_client *cl, unsigned ms)
{
    for (unsigned t = 0, k; t < ms && !atomic_load(cl->stop); t += k) {
        k = ms - t < 50 ? ms - t : 50;
        nanosleep(&(struct timespec){.tv_nsec = k * 1000000L}, NULL);
    }
}

static void set_str(char **dst, const char *s)
{
    free(*dst);
    *dst = s ? xstrdup(s) : NULL;
}

static const char *jstr(json_object *o, const char *key)
{
    json_object *v;
    return o && json_object_object_get_ex(o, key, &v) && json_object_is_type(v, json_type_string)
               ? json_object_get_string(v)
               : NULL;
}

void kago__acme_problem(int status, const char *body, char *buf, size_t n)
{
    json_object *o = body ? json_tokener_parse(body) : NULL;
    const char *type = jstr(o, "type"), *detail = jstr(o, "detail");
    if (type || detail)
        snprintf(buf, n, "%d %s: %s", status, type ? type : "(no type)", detail ? detail : "(no detail)");
    else
        snprintf(buf, n, "%d %.200s", status, body ? body : "");
    json_object_put(o);
}

static void problem(const struct ahttp_resp *r, char *buf, size_t n)
{
    kago__acme_problem(r->status, r->body, buf, n);
}

static int directory(struct acme_client *cl, struct kago_error **err)
{
    if (cl->new_order)
        return 0;
    struct ahttp_resp r;
    if (kago__ahttp(cl->tls, "GET", cl->directory, NULL, NULL, cl->timeout_ms, cl->stop, &r, err) < 0)
        return kago_error_prefix(err, "acme directory"), -1;
    json_object *o = r.status == 200 ? json_tokener_parse(r.body) : NULL;
    const char *nn = jstr(o, "newNonce"), *na = jstr(o, "newAccount"), *no = jstr(o, "newOrder");
    int ret = 0;
    if (!nn || !na || !no)
        ret = kago_error_set(err, EPROTO, "acme directory %s: %d and no newNonce, newAccount, newOrder",
                             cl->directory, r.status);
    else {
        set_str(&cl->new_nonce, nn);
        set_str(&cl->new_account, na);
        set_str(&cl->new_order, no);
    }
    json_object_put(o);
    kago__ahttp_resp_free(&r);
    return ret;
}

static int fresh_nonce(struct acme_client *cl, struct kago_error **err)
{
    struct ahttp_resp r;
    if (kago__ahttp(cl->tls, "HEAD", cl->new_nonce, NULL, NULL, cl->timeout_ms, cl->stop, &r, err) < 0)
        return kago_error_prefix(err, "acme newNonce"), -1;
    int ret = 0;
    if (!r.nonce)
        ret =
            kago_error_set(err, EPROTO, "acme newNonce %s: %d and no Replay-Nonce", cl->new_nonce, r.status);
    else
        set_str(&cl->nonce, r.nonce);
    kago__ahttp_resp_free(&r);
    return ret;
}

/* A signed POST (payload "" for POST-as-GET); a badNonce is retried with the nonce it came with. Any
 * status is returned in *r; < 0 with *err when no answer came. */
static int post(struct acme_client *cl, const char *what, const char *url, const char *payload, bool jwk,
                struct ahttp_resp *r, struct kago_error **err)
{
    for (int attempt = 0;; attempt++) {
        if (!cl->nonce && fresh_nonce(cl, err) < 0)
            return -1;
        cleanup_free char *body =
            kago__acme_jws(cl->account, cl->jwk, jwk ? NULL : cl->kid, cl->nonce, url, payload);
        set_str(&cl->nonce, NULL);
        if (!body)
            return kago_error_set(err, 0, "acme %s: signing the request failed", what);
        if (kago__ahttp(cl->tls, "POST", url, JOSE, body, cl->timeout_ms, cl->stop, r, err) < 0)
            return kago_error_prefix(err, "acme %s", what), -1;
        set_str(&cl->nonce, r->nonce);
        if (r->status != 400 || attempt == 3 || !strstr(r->body, "urn:ietf:params:acme:error:badNonce"))
            return 0;
        kago__ahttp_resp_free(r);
    }
}

/* post, and an error unless the status is one of ok1, ok2; *o the parsed body (NULL if not JSON). */
static int post_json(struct acme_client *cl, const char *what, const char *url, const char *payload, bool jwk,
                     int ok1, int ok2, struct ahttp_resp *r, json_object **o, struct kago_error **err)
{
    *o = NULL;
    if (post(cl, what, url, payload, jwk, r, err) < 0)
        return -1;
    if (r->status != ok1 && r->status != ok2) {
        char why[512];
        problem(r, why, sizeof(why));
        kago_error_set(err, 0, "acme %s %s: %s", what, url, why);
        kago__ahttp_resp_free(r);
        return -1;
    }
    *o = json_tokener_parse(r->body);
    return 0;
}

static int account(struct acme_client *cl, struct kago_error **err)
{
    if (cl->kid)
        return 0;
    json_object *p = json_object_new_object();
    json_object_object_add(p, "termsOfServiceAgreed", json_object_new_boolean(1));
    if (cl->email && *cl->email) {
        json_object *c = json_object_new_array();
        cleanup_free char *mailto = xasprintf("mailto:%s", cl->email);
        json_object_array_add(c, json_object_new_string(mailto));
        json_object_object_add(p, "contact", c);
    }
    struct ahttp_resp r;
    json_object *o;
    int ret = post_json(cl, "newAccount", cl->new_account, json_object_to_json_string(p), true, 200, 201, &r,
                        &o, err);
    json_object_put(p);
    if (ret < 0)
        return -1;
    if (!r.location)
        ret =
            kago_error_set(err, EPROTO, "acme newAccount %s: %d and no Location", cl->new_account, r.status);
    else
        set_str(&cl->kid, r.location);
    json_object_put(o);
    kago__ahttp_resp_free(&r);
    return ret;
}

/* Polls url (POST-as-GET) until its status is none of "pending", "processing". *o: its last body. */
static int poll_status(struct acme_client *cl, const char *what, const char *url, json_object **o,
                       struct kago_error **err)
{
    for (unsigned waited = 0, step = POLL_MS;; waited += step, step = step < 1000 ? step * 2 : 1000) {
        struct ahttp_resp r;
        if (post_json(cl, what, url, "", false, 200, 200, &r, o, err) < 0)
            return -1;
        unsigned ra = r.retry_after_s;
        kago__ahttp_resp_free(&r);
        const char *st = jstr(*o, "status");
        if (!st || (strcmp(st, "pending") && strcmp(st, "processing")))
            return 0;
        json_object_put(*o);
        *o = NULL;
        if (waited >= POLL_LIMIT_MS || atomic_load(cl->stop))
            return kago_error_set(err, ETIMEDOUT, "acme %s %s: still %s", what, url, st);
        sleep_ms(cl, ra && ra < 5 ? ra * 1000 : step);
    }
}

/* The error of an invalid authorization: its challenge's problem. */
static void authz_problem(json_object *a, char *buf, size_t n)
{
    json_object *chs, *e;
    snprintf(buf, n, "authorization %s", jstr(a, "status") ? jstr(a, "status") : "(no status)");
    if (!json_object_object_get_ex(a, "challenges", &chs))
        return;
    for (size_t i = 0; i < json_object_array_length(chs); i++)
        if (json_object_object_get_ex(json_object_array_get_idx(chs, i), "error", &e)) {
            snprintf(buf, n, "%s: %s", jstr(e, "type") ? jstr(e, "type") : "error",
                     jstr(e, "detail") ? jstr(e, "detail") : "");
            return;
        }
}

static int authorize(struct acme_client *cl, const char *host, const char *url, struct kago_error **err)
{
    const char *type = cl->tls_alpn ? "tls-alpn-01" : "http-01";
    struct ahttp_resp r;
    json_object *a = NULL, *chs, *ch = NULL;
    cleanup_free char *ka = NULL, *tok = NULL;
    if (post_json(cl, "authorization", url, "", false, 200, 200, &r, &a, err) < 0)
        return -1;
    kago__ahttp_resp_free(&r);
    int ret = 0;
    const char *st = jstr(a, "status");
    if (st && !strcmp(st, "valid"))
        goto out;
    for (size_t i = 0; json_object_object_get_ex(a, "challenges", &chs) && i < json_object_array_length(chs);
         i++)
        if (jstr(json_object_array_get_idx(chs, i), "type") &&
            !strcmp(jstr(json_object_array_get_idx(chs, i), "type"), type))
            ch = json_object_array_get_idx(chs, i);
    const char *token = jstr(ch, "token"), *curl = jstr(ch, "url");
    if (!token || !curl ||
        strspn(token, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") != strlen(token)) {
        ret = kago_error_set(err, EPROTO, "acme authorization %s: no %s challenge with a token", url, type);
        goto out;
    }
    ka = xasprintf("%s.%s", token, cl->thumbprint);
    tok = xstrdup(token);
    if (cl->publish(cl->arg, host, tok, ka, err) < 0) {
        ret = -1;
        goto out;
    }
    json_object *o = NULL;
    if (post_json(cl, "challenge", curl, "{}", false, 200, 200, &r, &o, err) == 0) {
        kago__ahttp_resp_free(&r);
        json_object_put(o);
        o = NULL;
        if (poll_status(cl, "authorization", url, &o, err) == 0 && strcmp(jstr(o, "status") ?: "", "valid")) {
            char why[512];
            authz_problem(o, why, sizeof(why));
            ret = kago_error_set(err, 0, "acme authorization %s: %s", url, why);
        } else if (!o)
            ret = -1;
    } else
        ret = -1;
    json_object_put(o);
    cl->unpublish(cl->arg, tok);
out:
    json_object_put(a);
    return ret;
}

static int write_file(const char *path, const char *data, size_t n, struct kago_error **err)
{
    cleanup_free char *tmp = xasprintf("%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return kago_error_set(err, errno, "acme: write %s", tmp);
    ssize_t w = write(fd, data, n);
    int e = errno;
    if (w != (ssize_t)n || fsync(fd) < 0 || close(fd) < 0) {
        if (w == (ssize_t)n)
            e = errno;
        unlink(tmp);
        return kago_error_set(err, e ? e : EIO, "acme: write %s", tmp);
    }
    if (rename(tmp, path) < 0) {
        e = errno;
        unlink(tmp);
        return kago_error_set(err, e, "acme: rename %s", tmp);
    }
    return 0;
}

/* finalize with a CSR of key, then the chain. */
static int finalize(struct acme_client *cl, json_object *order, const char *order_url, EVP_PKEY *key,
                    const char *host, char **pem, struct kago_error **err)
{
    const char *fin = jstr(order, "finalize");
    if (!fin)
        return kago_error_set(err, EPROTO, "acme order %s: no finalize URL", order_url);
    cleanup_free char *csr = kago__acme_csr(key, host, err);
    if (!csr)
        return -1;
    cleanup_free char *payload = xasprintf("{\"csr\":\"%s\"}", csr);
    struct ahttp_resp r;
    json_object *o = NULL;
    if (post_json(cl, "finalize", fin, payload, false, 200, 200, &r, &o, err) < 0)
        return -1;
    kago__ahttp_resp_free(&r);
    json_object_put(o);
    o = NULL;
    if (poll_status(cl, "order", order_url, &o, err) < 0)
        return -1;
    const char *st = jstr(o, "status"), *cert = jstr(o, "certificate");
    int ret = 0;
    if (!st || strcmp(st, "valid") || !cert)
        ret = kago_error_set(err, 0, "acme order %s: %s, no certificate", order_url, st ? st : "no status");
    else if (post(cl, "certificate", cert, "", false, &r, err) < 0)
        ret = -1;
    else if (r.status != 200 || !strstr(r.body, "-----BEGIN CERTIFICATE-----")) {
        char why[512];
        problem(&r, why, sizeof(why));
        ret = kago_error_set(err, 0, "acme certificate %s: %s", cert, why);
        kago__ahttp_resp_free(&r);
    } else {
        *pem = r.body;
        r.body = NULL;
        kago__ahttp_resp_free(&r);
    }
    json_object_put(o);
    return ret;
}

int kago__acme_obtain(struct acme_client *cl, const char *host, const char *cert_path, const char *key_path,
                      struct kago_error **err)
{
    if (directory(cl, err) < 0 || account(cl, err) < 0)
        return -1;
    json_object *ids = json_object_new_array(), *id = json_object_new_object(), *p = json_object_new_object();
    json_object_object_add(id, "type", json_object_new_string("dns"));
    json_object_object_add(id, "value", json_object_new_string(host));
    json_object_array_add(ids, id);
    json_object_object_add(p, "identifiers", ids);
    struct ahttp_resp r;
    json_object *order = NULL, *authzs;
    const char *pj = json_object_to_json_string(p);
    int ret = post_json(cl, "newOrder", cl->new_order, pj, false, 201, 200, &r, &order, err);
    if (ret < 0 && strstr((*err)->msg, "accountDoesNotExist")) { /* the server forgot it: register again */
        kago_error_free(*err);
        *err = NULL;
        set_str(&cl->kid, NULL);
        ret = account(cl, err) < 0
                  ? -1
                  : post_json(cl, "newOrder", cl->new_order, pj, false, 201, 200, &r, &order, err);
    }
    json_object_put(p);
    if (ret < 0)
        return -1;
    cleanup_free char *order_url = r.location ? xstrdup(r.location) : NULL;
    kago__ahttp_resp_free(&r);
    EVP_PKEY *key = NULL;
    char *pem = NULL;
    if (!order_url || !json_object_object_get_ex(order, "authorizations", &authzs))
        ret = kago_error_set(err, EPROTO, "acme newOrder %s: no Location or authorizations", cl->new_order);
    for (size_t i = 0; ret == 0 && i < json_object_array_length(authzs); i++)
        ret = authorize(cl, host, json_object_get_string(json_object_array_get_idx(authzs, i)), err);
    if (ret == 0 && !(key = kago__acme_key_load(NULL, true, err)))
        ret = -1;
    if (ret == 0)
        ret = finalize(cl, order, order_url, key, host, &pem, err);
    if (ret == 0) {
        /* the key first: a reload between the two renames sees a pair that does not match and waits */
        ret = kago__acme_key_save(key, key_path, err);
        if (ret == 0)
            ret = write_file(cert_path, pem, strlen(pem), err);
    }
    free(pem);
    EVP_PKEY_free(key);
    json_object_put(order);
    return ret;
}

int kago__acme_ask(struct acme_client *cl, const char *ask_url, const char *host, struct kago_error **err)
{
    cleanup_free char *url = xasprintf("%s%sdomain=%s", ask_url, strchr(ask_url, '?') ? "&" : "?", host);
    struct ahttp_resp r;
    if (kago__ahttp(cl->tls, "GET", url, NULL, NULL, cl->timeout_ms, cl->stop, &r, err) < 0)
        return kago_error_prefix(err, "--acme-ask"), -1;
    int ok = r.status == 200;
    kago__ahttp_resp_free(&r);
    return ok;
}

void kago__acme_client_clear(struct acme_client *cl)
{
    char **s[] = {&cl->directory, &cl->email,       &cl->jwk,       &cl->thumbprint, &cl->kid,
                  &cl->new_nonce, &cl->new_account, &cl->new_order, &cl->nonce};
    for (size_t i = 0; i < sizeof(s) / sizeof(s[0]); i++)
        set_str(s[i], NULL);
    SSL_CTX_free(cl->tls);
    EVP_PKEY_free(cl->account);
    cl->tls = NULL;
    cl->account = NULL;
}
