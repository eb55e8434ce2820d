/* The ACME client's pure parts (src/serve/acme_jws.c, acme_http.c's parser): base64url, the JWK and its
 * thumbprint, an ES256 JWS that verifies with the key, a CSR for the host, the TLS-ALPN-01 certificate,
 * HTTP responses. */
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <openssl/x509v3.h>

#include "acme_int.h"
#include "tap.h"

/* base64url back to bytes (n: out's size); the length, or -1. */
static int unb64url(const char *s, unsigned char *out, size_t n)
{
    size_t l = strlen(s), pad = (4 - l % 4) % 4;
    char *t = malloc(l + pad + 1);
    for (size_t i = 0; i < l; i++)
        t[i] = s[i] == '-' ? '+' : s[i] == '_' ? '/' : s[i];
    memset(t + l, '=', pad);
    t[l + pad] = 0;
    unsigned char *tmp = malloc(l + pad);
    int k = EVP_DecodeBlock(tmp, (unsigned char *)t, (int)(l + pad));
    if (k >= 0)
        k -= (int)pad;
    if (k >= 0 && (size_t)k <= n)
        memcpy(out, tmp, (size_t)k);
    free(t);
    free(tmp);
    return k >= 0 && (size_t)k <= n ? k : -1;
}

static void test_b64url(void)
{
    char *a = kago__b64url((const unsigned char *)"", 0), *b = kago__b64url((const unsigned char *)"f", 1),
         *c = kago__b64url((const unsigned char *)"\xfb\xff", 2),
         *d = kago__b64url((const unsigned char *)"foobar", 6);
    is_str(a, "", "b64url of nothing");
    is_str(b, "Zg", "b64url without padding");
    is_str(c, "-_8", "b64url's alphabet (- and _)");
    is_str(d, "Zm9vYmFy", "b64url of foobar");
    free(a);
    free(b);
    free(c);
    free(d);
}

static void test_jws(EVP_PKEY *k)
{
    char *jwk = NULL, *thumb = NULL;
    ok(kago__acme_jwk(k, &jwk, &thumb, NULL) == 0, "the JWK of a P-256 key");
    json_object *j = json_tokener_parse(jwk);
    json_object *v = NULL;
    ok(j && json_object_object_get_ex(j, "crv", &v) && !strcmp(json_object_get_string(v), "P-256"),
       "crv P-256");
    ok(!strncmp(jwk, "{\"crv\":", 7) && strstr(jwk, "\"kty\":\"EC\",\"x\":"),
       "members in RFC 7638's order: %s", jwk);
    unsigned char x[64];
    ok(json_object_object_get_ex(j, "x", &v) && unb64url(json_object_get_string(v), x, sizeof(x)) == 32,
       "x is 32 bytes");
    unsigned char d[32];
    unsigned dl;
    EVP_Digest(jwk, strlen(jwk), d, &dl, EVP_sha256(), NULL);
    char *want = kago__b64url(d, dl);
    is_str(thumb, want, "the thumbprint is SHA-256 of the JWK");
    ok(strlen(thumb) == 43, "a thumbprint has 43 characters");

    char *jws = kago__acme_jws(k, jwk, NULL, "NONCE1", "https://ca.test/new-acct", "{\"a\":1}");
    json_object *o = json_tokener_parse(jws), *p = NULL, *pl = NULL, *sg = NULL;
    ok(o && json_object_object_get_ex(o, "protected", &p) && json_object_object_get_ex(o, "payload", &pl) &&
           json_object_object_get_ex(o, "signature", &sg),
       "a flattened JWS");
    unsigned char hdr[1024] = {0};
    int hl = unb64url(json_object_get_string(p), hdr, sizeof(hdr) - 1);
    json_object *h = hl > 0 ? json_tokener_parse((char *)hdr) : NULL, *hv = NULL;
    ok(h && json_object_object_get_ex(h, "alg", &hv) && !strcmp(json_object_get_string(hv), "ES256"),
       "alg ES256");
    ok(json_object_object_get_ex(h, "nonce", &hv) && !strcmp(json_object_get_string(hv), "NONCE1"),
       "the nonce");
    ok(json_object_object_get_ex(h, "url", &hv) &&
           !strcmp(json_object_get_string(hv), "https://ca.test/new-acct"),
       "the url, its slashes not escaped");
    ok(json_object_object_get_ex(h, "jwk", &hv) && !json_object_object_get_ex(h, "kid", NULL), "jwk, no kid");
    /* the signature verifies: r || s back to DER */
    unsigned char rs[64];
    ok(unb64url(json_object_get_string(sg), rs, sizeof(rs)) == 64, "an ES256 signature is 64 bytes");
    ECDSA_SIG *sig = ECDSA_SIG_new();
    ECDSA_SIG_set0(sig, BN_bin2bn(rs, 32, NULL), BN_bin2bn(rs + 32, 32, NULL));
    unsigned char *der = NULL;
    int derl = i2d_ECDSA_SIG(sig, &der);
    char *in = NULL;
    if (asprintf(&in, "%s.%s", json_object_get_string(p), json_object_get_string(pl)) < 0)
        abort();
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    ok(EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, k) == 1 &&
           EVP_DigestVerify(md, der, (size_t)derl, (unsigned char *)in, strlen(in)) == 1,
       "the signature verifies with the account key");
    char *kid = kago__acme_jws(k, jwk, "https://ca.test/acct/1", "N2", "https://ca.test/x", "");
    json_object *o2 = json_tokener_parse(kid);
    ok(o2 && json_object_object_get_ex(o2, "payload", &pl) && !strcmp(json_object_get_string(pl), ""),
       "POST-as-GET: an empty payload");
    json_object_object_get_ex(o2, "protected", &p);
    memset(hdr, 0, sizeof(hdr));
    unb64url(json_object_get_string(p), hdr, sizeof(hdr) - 1);
    ok(strstr((char *)hdr, "\"kid\":\"https://ca.test/acct/1\"") && !strstr((char *)hdr, "jwk"),
       "kid, no jwk: %s", hdr);
    json_object_put(o2);
    free(kid);
    EVP_MD_CTX_free(md);
    free(in);
    OPENSSL_free(der);
    ECDSA_SIG_free(sig);
    json_object_put(h);
    json_object_put(o);
    json_object_put(j);
    free(jws);
    free(want);
    free(jwk);
    free(thumb);
}

static void test_csr(EVP_PKEY *k)
{
    char *csr = kago__acme_csr(k, "site.example", NULL);
    unsigned char der[2048];
    int n = csr ? unb64url(csr, der, sizeof(der)) : -1;
    const unsigned char *p = der;
    X509_REQ *req = n > 0 ? d2i_X509_REQ(NULL, &p, n) : NULL;
    ok(req && X509_REQ_verify(req, k) == 1, "the CSR parses and is signed by the key");
    STACK_OF(X509_EXTENSION) *exts = req ? X509_REQ_get_extensions(req) : NULL;
    GENERAL_NAMES *names = NULL;
    for (int i = 0; exts && i < sk_X509_EXTENSION_num(exts); i++)
        if (OBJ_obj2nid(X509_EXTENSION_get_object(sk_X509_EXTENSION_value(exts, i))) == NID_subject_alt_name)
            names = X509V3_EXT_d2i(sk_X509_EXTENSION_value(exts, i));
    const GENERAL_NAME *g = names && sk_GENERAL_NAME_num(names) == 1 ? sk_GENERAL_NAME_value(names, 0) : NULL;
    ok(g && g->type == GEN_DNS && !strcmp((const char *)ASN1_STRING_get0_data(g->d.dNSName), "site.example"),
       "its one SAN is DNS:site.example");
    GENERAL_NAMES_free(names);
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    X509_REQ_free(req);
    free(csr);
}

/* RFC 8737 3: a self-signed certificate for the name, and a critical id-pe-acmeIdentifier extension whose
 * value is the DER OCTET STRING of SHA-256(key authorization). */
static void test_alpn_cert(void)
{
    EVP_PKEY *key = NULL;
    X509 *x = kago__acme_alpn_cert("site.example", "tok.thumb", &key, NULL);
    ok(x && key && X509_verify(x, key) == 1, "the tls-alpn-01 certificate is signed by its own key");
    GENERAL_NAMES *names = x ? X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL) : NULL;
    const GENERAL_NAME *g = names && sk_GENERAL_NAME_num(names) == 1 ? sk_GENERAL_NAME_value(names, 0) : NULL;
    ok(g && g->type == GEN_DNS && !strcmp((const char *)ASN1_STRING_get0_data(g->d.dNSName), "site.example"),
       "its one SAN is DNS:site.example");
    GENERAL_NAMES_free(names);
    ASN1_OBJECT *oid = OBJ_txt2obj("1.3.6.1.5.5.7.1.31", 1);
    int i = x ? X509_get_ext_by_OBJ(x, oid, -1) : -1;
    X509_EXTENSION *e = i >= 0 ? X509_get_ext(x, i) : NULL;
    unsigned char want[34] = {0x04, 0x20};
    SHA256((const unsigned char *)"tok.thumb", 9, want + 2);
    const ASN1_OCTET_STRING *v = e ? X509_EXTENSION_get_data(e) : NULL;
    ok(e && X509_EXTENSION_get_critical(e) == 1, "acmeIdentifier is there, critical");
    ok(v && ASN1_STRING_length(v) == 34 && !memcmp(ASN1_STRING_get0_data(v), want, 34),
       "its value is the OCTET STRING of the key authorization's SHA-256");
    ASN1_OBJECT_free(oid);
    X509_free(x);
    EVP_PKEY_free(key);
}

static int parse(const char *text, struct ahttp_resp *r)
{
    char *buf = strdup(text);
    int ret = kago__ahttp_parse(buf, strlen(buf), r, "https://ca.test/", NULL);
    free(buf);
    return ret;
}

static void test_http(void)
{
    struct ahttp_resp r;
    ok(parse("HTTP/1.1 201 Created\r\nReplay-Nonce:  abc-_1 \r\nlocation: https://ca.test/order/1\r\n"
             "Retry-After: 3\r\nContent-Type: application/json\r\n\r\n{\"status\":\"pending\"}",
             &r) == 0,
       "a response parses");
    ok(r.status == 201 && r.retry_after_s == 3, "status and Retry-After");
    is_str(r.nonce, "abc-_1", "Replay-Nonce, spaces trimmed");
    is_str(r.location, "https://ca.test/order/1", "Location, any case");
    is_str(r.body, "{\"status\":\"pending\"}", "the body");
    kago__ahttp_resp_free(&r);
    ok(parse("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
             &r) == 0 &&
           r.len == 11,
       "a chunked body");
    is_str(r.body, "hello world", "decoded");
    ok(!r.nonce && !r.location, "absent headers are NULL");
    kago__ahttp_resp_free(&r);
    struct kago_error *err = NULL;
    char bad[] = "SSH-2.0-OpenSSH\r\n\r\n";
    ok(kago__ahttp_parse(bad, strlen(bad), &r, "https://ca.test/", &err) < 0 && err &&
           strstr(err->msg, "https://ca.test/: not an HTTP response"),
       "not HTTP: an error naming the URL");
    kago_error_free(err);
    char why[256];
    kago__acme_problem(400,
                       "{\"type\":\"urn:ietf:params:acme:error:badNonce\",\"detail\":\"JWS has an invalid "
                       "anti-replay nonce\"}",
                       why, sizeof(why));
    ok(!strcmp(why, "400 urn:ietf:params:acme:error:badNonce: JWS has an invalid anti-replay nonce"),
       "a problem document");
    kago__acme_problem(502, "<html>bad gateway</html>", why, sizeof(why));
    ok(!strcmp(why, "502 <html>bad gateway</html>"), "not a problem document: the body's start");
}

static void test_policy(void)
{
    struct acme_bucket b;
    kago__acme_bucket_init(&b, 2, 1000);
    ok(kago__acme_bucket_take(&b, 1000) && kago__acme_bucket_take(&b, 1000) &&
           !kago__acme_bucket_take(&b, 1000),
       "a bucket of 2 per minute: 2 at once, not 3");
    ok(!kago__acme_bucket_take(&b, 1000 + 29000) && kago__acme_bucket_take(&b, 1000 + 30000),
       "one more 30 s later");
    ok(kago__acme_bucket_take(&b, 1000 + 30000 + 3600000) &&
           kago__acme_bucket_take(&b, 1000 + 30000 + 3600000) &&
           !kago__acme_bucket_take(&b, 1000 + 30000 + 3600000),
       "an hour idle refills it to 2, no more");
    ok(kago__acme_backoff_ms(60000, 1) == 60000 && kago__acme_backoff_ms(60000, 2) == 120000 &&
           kago__acme_backoff_ms(60000, 3) == 240000,
       "the backoff doubles");
    ok(kago__acme_backoff_ms(60000, 7) == ACME_BACKOFF_MAX_MS &&
           kago__acme_backoff_ms(60000, 1000) == ACME_BACKOFF_MAX_MS,
       "up to 1 h");

    kago__acme_bucket_init(&b, 10, 0);
    struct acme_host_state h = {0};
    ok(kago__acme_decide("a.example", NULL, true, false, &b, 5) == ACME_ORDER, "a new routed host: an order");
    ok(kago__acme_decide("a.example", NULL, false, false, &b, 5) == ACME_NOT_ROUTED,
       "not routed, no ask: refused");
    ok(kago__acme_decide("a.example", NULL, false, true, &b, 5) == ACME_ASK_ORDER,
       "not routed, --acme-ask: asked first");
    h.pending = true;
    ok(kago__acme_decide("a.example", &h, true, false, &b, 5) == ACME_PENDING,
       "one order per host at a time");
    h = (struct acme_host_state){.failures = 1, .next_try_ms = 1000};
    ok(kago__acme_decide("a.example", &h, true, false, &b, 999) == ACME_BACKOFF, "in its backoff: no order");
    ok(kago__acme_decide("a.example", &h, true, false, &b, 1000) == ACME_ORDER, "after it: an order");
    h = (struct acme_host_state){.refused_til_ms = 60000};
    ok(kago__acme_decide("a.example", &h, false, true, &b, 100) == ACME_ASK_REFUSED,
       "--acme-ask said no: not asked again soon");
    h = (struct acme_host_state){.has_cert = true};
    ok(kago__acme_decide("a.example", &h, true, false, &b, 100) == ACME_HAS_CERT, "a certificate on hand");
    struct acme_bucket empty;
    kago__acme_bucket_init(&empty, 1, 0);
    kago__acme_bucket_take(&empty, 0);
    ok(kago__acme_decide("a.example", NULL, true, false, &empty, 10) == ACME_RATE_LIMITED,
       "over the rate: no order");
    ok(kago__acme_decide("a.example", NULL, false, false, &empty, 10) == ACME_NOT_ROUTED,
       "a refusal takes no token");

    ok(kago__acme_decide("localhost", NULL, true, false, &b, 10) == ACME_BAD_NAME, "no dot: no order");
    ok(kago__acme_decide("10.0.0.1", NULL, true, false, &b, 10) == ACME_BAD_NAME, "an address: no order");
    ok(kago__acme_name_ok("a-b.c.example") && kago__acme_name_ok("xn--bcher-kva.example"), "good names");
    ok(!kago__acme_name_ok("-a.example") && !kago__acme_name_ok("a-.example") &&
           !kago__acme_name_ok("a..example") && !kago__acme_name_ok(".example") &&
           !kago__acme_name_ok("a.example.") && !kago__acme_name_ok("a_b.example"),
       "bad labels");
    struct acme_bucket r;
    kago__acme_bucket_init(&r, 1, 0);
    h = (struct acme_host_state){.has_cert = true, .renew_at = 2000};
    ok(kago__acme_due(&h, true, false, &b, &r, 100, 1999) == ACME_HAS_CERT, "not due before renew_at");
    struct acme_bucket drained;
    kago__acme_bucket_init(&drained, 1, 0);
    ok(kago__acme_bucket_take(&drained, 100) && !kago__acme_bucket_take(&drained, 100), "drained");
    ok(kago__acme_due(&h, true, false, &drained, &r, 100, 2000) == ACME_ORDER,
       "a renewal does not wait on the on-demand bucket strangers' handshakes spend");
    kago__acme_bucket_init(&r, 10, 0);
    ok(kago__acme_due(&h, true, false, &b, &r, 100, 2000) == ACME_ORDER, "a renewal at renew_at");
    ok(kago__acme_due(&h, false, false, &b, &r, 100, 2000) == ACME_NOT_ROUTED,
       "no renewal for a host no longer routed");
    h = (struct acme_host_state){.failures = 2, .next_try_ms = 500};
    ok(kago__acme_due(&h, true, false, &b, &r, 499, 0) == ACME_PENDING &&
           kago__acme_due(&h, true, false, &b, &r, 500, 0) == ACME_ORDER,
       "a failed first order again after its backoff");
    h.failures = ACME_AUTO_RETRIES;
    ok(kago__acme_due(&h, true, false, &b, &r, 500, 0) == ACME_HAS_CERT, "then only on demand");
    ok(kago__acme_renew_at(0, 90 * 86400, 0, 0) == 60 * 86400, "renewal at 2/3 of 90 days: day 60");
    ok(kago__acme_renew_at(1000, 1000 + 90 * 86400, 1000, 30) == 1030, "KAGO_ACME_RENEW_AFTER: sooner");
}

int main(void)
{
    test_policy();
    test_b64url();
    EVP_PKEY *k = kago__acme_key_load(NULL, true, NULL);
    ok(k != NULL, "a new P-256 key");
    test_jws(k);
    test_csr(k);
    EVP_PKEY_free(k);
    test_alpn_cert();
    test_http();
    return tap_done();
}
