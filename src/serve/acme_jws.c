/* kago serve — ACME's cryptography (OpenSSL 3): base64url, P-256 keys on disk, the JWK and its
 * thumbprint, ES256 JWS, the CSR, a certificate's validity. No I/O but the key and certificate files. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <json-c/json.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#include <openssl/x509v3.h>

#include "acme_int.h"
#include "util.h"

static const char *ossl_why(char *buf, size_t n)
{
    unsigned long e = ERR_get_error();
    if (e)
        ERR_error_string_n(e, buf, n);
    else
        snprintf(buf, n, "unknown OpenSSL error");
    ERR_clear_error();
    return buf;
}

char *kago__b64url(const unsigned char *p, size_t n)
{
    char *out = xmalloc(4 * ((n + 2) / 3) + 1);
    int len = n ? EVP_EncodeBlock((unsigned char *)out, p, (int)n) : 0;
    out[len] = 0;
    while (len > 0 && out[len - 1] == '=')
        out[--len] = 0;
    for (int i = 0; i < len; i++)
        out[i] = out[i] == '+' ? '-' : out[i] == '/' ? '_' : out[i];
    return out;
}

int kago__acme_key_save(EVP_PKEY *key, const char *path, struct kago_error **err)
{
    char why[256];
    cleanup_free char *tmp = xasprintf("%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return kago_error_set(err, errno, "acme key %s", tmp);
    FILE *f = fdopen(fd, "w");
    if (!f) {
        close(fd);
        return kago_error_set(err, errno, "acme key %s", tmp);
    }
    bool ok = PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL) == 1;
    ok = fflush(f) == 0 && fsync(fileno(f)) == 0 && ok;
    int e = errno;
    fclose(f);
    if (!ok || rename(tmp, path) < 0) {
        e = ok ? errno : e;
        unlink(tmp);
        if (!ok && ERR_peek_error())
            return kago_error_set(err, 0, "acme key %s: %s", path, ossl_why(why, sizeof(why)));
        return kago_error_set(err, e, "acme key %s", path);
    }
    return 0;
}

EVP_PKEY *kago__acme_key_load(const char *path, bool create, struct kago_error **err)
{
    char why[256];
    FILE *f = path ? fopen(path, "re") : NULL;
    if (f) {
        EVP_PKEY *k = PEM_read_PrivateKey(f, NULL, NULL, NULL);
        fclose(f);
        if (!k)
            kago_error_set(err, 0, "acme key %s: %s", path, ossl_why(why, sizeof(why)));
        return k;
    }
    if (path && (errno != ENOENT || !create)) {
        kago_error_set(err, errno, "acme key %s", path);
        return NULL;
    }
    EVP_PKEY *k = EVP_EC_gen("P-256");
    if (!k) {
        kago_error_set(err, 0, "acme: a P-256 key: %s", ossl_why(why, sizeof(why)));
        return NULL;
    }
    if (path && kago__acme_key_save(k, path, err) < 0) {
        EVP_PKEY_free(k);
        return NULL;
    }
    return k;
}

int kago__acme_jwk(EVP_PKEY *key, char **jwk, char **thumbprint, struct kago_error **err)
{
    char why[256];
    unsigned char pub[65];
    size_t len = 0;
    if (!EVP_PKEY_get_octet_string_param(key, OSSL_PKEY_PARAM_PUB_KEY, pub, sizeof(pub), &len) || len != 65 ||
        pub[0] != 4)
        return kago_error_set(err, 0, "acme: the account key's public point: %s", ossl_why(why, sizeof(why)));
    cleanup_free char *x = kago__b64url(pub + 1, 32);
    cleanup_free char *y = kago__b64url(pub + 33, 32);
    *jwk = xasprintf("{\"crv\":\"P-256\",\"kty\":\"EC\",\"x\":\"%s\",\"y\":\"%s\"}", x, y);
    unsigned char d[32];
    unsigned dl = 0;
    EVP_Digest(*jwk, strlen(*jwk), d, &dl, EVP_sha256(), NULL);
    *thumbprint = kago__b64url(d, dl);
    return 0;
}

/* ES256: the DER ECDSA signature as r || s, 32 bytes each (RFC 7518 3.4). */
static char *es256(EVP_PKEY *key, const char *in)
{
    unsigned char der[80], rs[64];
    size_t dl = sizeof(der);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    char *out = NULL;
    if (md && EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, key) == 1 &&
        EVP_DigestSign(md, der, &dl, (const unsigned char *)in, strlen(in)) == 1) {
        const unsigned char *p = der;
        ECDSA_SIG *sig = d2i_ECDSA_SIG(NULL, &p, (long)dl);
        if (sig && BN_bn2binpad(ECDSA_SIG_get0_r(sig), rs, 32) == 32 &&
            BN_bn2binpad(ECDSA_SIG_get0_s(sig), rs + 32, 32) == 32)
            out = kago__b64url(rs, 64);
        ECDSA_SIG_free(sig);
    }
    EVP_MD_CTX_free(md);
    ERR_clear_error();
    return out;
}

char *kago__acme_jws(EVP_PKEY *key, const char *jwk, const char *kid, const char *nonce, const char *url,
                     const char *payload)
{
    json_object *h = json_object_new_object();
    json_object_object_add(h, "alg", json_object_new_string("ES256"));
    if (kid)
        json_object_object_add(h, "kid", json_object_new_string(kid));
    else
        json_object_object_add(h, "jwk", json_tokener_parse(jwk));
    json_object_object_add(h, "nonce", json_object_new_string(nonce));
    json_object_object_add(h, "url", json_object_new_string(url));
    const char *hs =
        json_object_to_json_string_ext(h, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
    cleanup_free char *ph = kago__b64url((const unsigned char *)hs, strlen(hs));
    json_object_put(h);
    cleanup_free char *pp = kago__b64url((const unsigned char *)payload, strlen(payload));
    cleanup_free char *in = xasprintf("%s.%s", ph, pp);
    cleanup_free char *sig = es256(key, in);
    if (!sig)
        return NULL;
    return xasprintf("{\"protected\":\"%s\",\"payload\":\"%s\",\"signature\":\"%s\"}", ph, pp, sig);
}

char *kago__acme_csr(EVP_PKEY *key, const char *host, struct kago_error **err)
{
    char why[256];
    X509_REQ *req = X509_REQ_new();
    X509_NAME *name = X509_NAME_new();
    STACK_OF(X509_EXTENSION) *exts = sk_X509_EXTENSION_new_null();
    cleanup_free char *san = xasprintf("DNS:%s", host);
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, NULL, NID_subject_alt_name, san);
    char *out = NULL;
    unsigned char *der = NULL;
    int dl;
    if (req && name && exts && ext && X509_REQ_set_version(req, 0) == 1 &&
        X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)host, -1, -1, 0) == 1 &&
        X509_REQ_set_subject_name(req, name) == 1 && sk_X509_EXTENSION_push(exts, ext) > 0 &&
        X509_REQ_add_extensions(req, exts) == 1 && X509_REQ_set_pubkey(req, key) == 1 &&
        X509_REQ_sign(req, key, EVP_sha256()) > 0 && (dl = i2d_X509_REQ(req, &der)) > 0)
        out = kago__b64url(der, (size_t)dl);
    else
        kago_error_set(err, 0, "acme: a CSR for %s: %s", host, ossl_why(why, sizeof(why)));
    OPENSSL_free(der);
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    if (exts == NULL)
        X509_EXTENSION_free(ext);
    X509_NAME_free(name);
    X509_REQ_free(req);
    return out;
}

int kago__acme_cert_times(const char *path, const char *text, time_t *not_before, time_t *not_after,
                          char *issuer, size_t issuer_len)
{
    BIO *b = path ? BIO_new_file(path, "r") : BIO_new_mem_buf(text, -1);
    X509 *x = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
    BIO_free(b);
    struct tm nb, na;
    int r = -1;
    if (x && ASN1_TIME_to_tm(X509_get0_notBefore(x), &nb) == 1 &&
        ASN1_TIME_to_tm(X509_get0_notAfter(x), &na) == 1) {
        *not_before = timegm(&nb);
        *not_after = timegm(&na);
        if (issuer && issuer_len) {
            issuer[0] = 0;
            X509_NAME_get_text_by_NID(X509_get_issuer_name(x), NID_commonName, issuer, (int)issuer_len);
        }
        r = 0;
    }
    X509_free(x);
    ERR_clear_error();
    return r;
}

/* RFC 8737's id-pe-acmeIdentifier */
#define ACME_IDENTIFIER_OID "1.3.6.1.5.5.7.1.31"

X509 *kago__acme_alpn_cert(const char *host, const char *key_auth, EVP_PKEY **key, struct kago_error **err)
{
    char why[256];
    unsigned char der[2 + SHA256_DIGEST_LENGTH] = {V_ASN1_OCTET_STRING, SHA256_DIGEST_LENGTH};
    SHA256((const unsigned char *)key_auth, strlen(key_auth), der + 2);
    cleanup_free char *san = xasprintf("DNS:%s", host);
    *key = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    X509_NAME *name = X509_NAME_new();
    X509_EXTENSION *sanx = X509V3_EXT_conf_nid(NULL, NULL, NID_subject_alt_name, san), *idx = NULL;
    ASN1_OBJECT *oid = OBJ_txt2obj(ACME_IDENTIFIER_OID, 1);
    ASN1_OCTET_STRING *val = ASN1_OCTET_STRING_new();
    bool ok =
        *key && x && name && sanx && oid && val && ASN1_OCTET_STRING_set(val, der, sizeof(der)) == 1 &&
        (idx = X509_EXTENSION_create_by_OBJ(NULL, oid, 1, val)) && X509_set_version(x, 2) == 1 &&
        ASN1_INTEGER_set(X509_get_serialNumber(x), 1) == 1 &&
        X509_gmtime_adj(X509_getm_notBefore(x), -3600) && X509_gmtime_adj(X509_getm_notAfter(x), 7 * 86400) &&
        X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)host, -1, -1, 0) == 1 &&
        X509_set_subject_name(x, name) == 1 && X509_set_issuer_name(x, name) == 1 &&
        X509_set_pubkey(x, *key) == 1 && X509_add_ext(x, sanx, -1) == 1 && X509_add_ext(x, idx, -1) == 1 &&
        X509_sign(x, *key, EVP_sha256()) > 0;
    if (!ok) {
        kago_error_set(err, 0, "acme: the tls-alpn-01 certificate for %s: %s", host,
                       ossl_why(why, sizeof(why)));
        X509_free(x);
        x = NULL;
        EVP_PKEY_free(*key);
        *key = NULL;
    }
    X509_EXTENSION_free(idx);
    X509_EXTENSION_free(sanx);
    ASN1_OCTET_STRING_free(val);
    ASN1_OBJECT_free(oid);
    X509_NAME_free(name);
    return x;
}
