/* kago serve — etcd's JSON gateway, the pure half: base64, request bodies, responses, watch messages.
 * No I/O (etcd.c does it); tests/unit/test_etcd.c and tests/fuzz/fuzz_etcd.c drive it directly. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "etcd.h"
#include "util.h"

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

char *kago__b64_encode(const void *p, size_t n)
{
    const unsigned char *s = p;
    char *out = xmalloc((n + 2) / 3 * 4 + 1), *o = out;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v =
            (uint32_t)s[i] << 16 | (i + 1 < n ? (uint32_t)s[i + 1] << 8 : 0) | (i + 2 < n ? s[i + 2] : 0);
        *o++ = b64[v >> 18 & 63];
        *o++ = b64[v >> 12 & 63];
        *o++ = i + 1 < n ? b64[v >> 6 & 63] : '=';
        *o++ = i + 2 < n ? b64[v & 63] : '=';
    }
    *o = 0;
    return out;
}

static int b64_val(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    return c == '+' ? 62 : c == '/' ? 63 : -1;
}

char *kago__b64_decode(const char *s, size_t n, size_t *len)
{
    while (n && s[n - 1] == '=')
        n--;
    if (n % 4 == 1)
        return NULL;
    char *out = xmalloc(n / 4 * 3 + 3), *o = out;
    uint32_t acc = 0;
    unsigned bits = 0;
    for (size_t i = 0; i < n; i++) {
        int v = b64_val((unsigned char)s[i]);
        if (v < 0) {
            free(out);
            return NULL;
        }
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            *o++ = (char)(acc >> bits & 0xff);
        }
    }
    *o = 0;
    *len = (size_t)(o - out);
    return out;
}

char *kago__etcd_prefix_end(const char *prefix)
{
    size_t n = strlen(prefix);
    while (n && (unsigned char)prefix[n - 1] == 0xff)
        n--;
    if (!n)
        return xcalloc(1, 1);
    char *e = xmalloc(n + 1);
    memcpy(e, prefix, n);
    e[n - 1]++;
    e[n] = 0;
    return e;
}

bool kago__etcd_int(struct json_object *o, const char *key, int64_t *v)
{
    struct json_object *f;
    *v = 0;
    if (!o || !json_object_object_get_ex(o, key, &f))
        return false;
    if (json_object_is_type(f, json_type_int)) {
        *v = json_object_get_int64(f);
        return true;
    }
    if (!json_object_is_type(f, json_type_string))
        return false;
    const char *s = json_object_get_string(f);
    char *end;
    errno = 0;
    long long x = strtoll(s, &end, 10);
    if (errno || end == s || *end)
        return false;
    *v = x;
    return true;
}

static bool get_bool(struct json_object *o, const char *key)
{
    struct json_object *f;
    return o && json_object_object_get_ex(o, key, &f) && json_object_get_boolean(f);
}

bool kago__etcd_url_tls(const char *url)
{
    return !strncmp(url, "etcds://", 8) || !strncmp(url, "https://", 8);
}

int kago__etcd_parse_url(const char *url, char ***endpoints, struct kago_error **err)
{
    const char *p = url;
    if (!strncmp(p, "etcd://", 7) || !strncmp(p, "http://", 7))
        p += 7;
    else if (!strncmp(p, "etcds://", 8) || !strncmp(p, "https://", 8))
        p += 8;
    else
        return kago_error_set(err, EINVAL,
                              "cluster \"%s\": want etcd://HOST:PORT[,HOST:PORT...] (etcds:// for TLS)", url);
    size_t n = 0;
    char **v = xcalloc(1, sizeof(*v));
    while (*p) {
        size_t len = strcspn(p, ",");
        char *ep = xmalloc(len + 1);
        memcpy(ep, p, len);
        ep[len] = 0;
        if (len && ep[len - 1] == '/') /* http://h:p/ */
            ep[len - 1] = 0;
        const char *colon = strrchr(ep, ':');
        char *end = NULL;
        long port = colon ? strtol(colon + 1, &end, 10) : 0;
        if (!colon || colon == ep || !end || *end || end == colon + 1 || port <= 0 || port > 65535) {
            kago_error_set(err, EINVAL, "cluster \"%s\": endpoint \"%s\" is not HOST:PORT", url, ep);
            free(ep);
            kago__strv_free(v);
            return -1;
        }
        v = xrealloc(v, (n + 2) * sizeof(*v));
        v[n++] = ep;
        v[n] = NULL;
        p += len;
        if (*p == ',')
            p++;
    }
    if (!n) {
        free(v);
        return kago_error_set(err, EINVAL, "cluster \"%s\": no endpoint", url);
    }
    *endpoints = v;
    return 0;
}

void kago__etcd_kv_free(struct etcd_kv *kv)
{
    free(kv->key);
    free(kv->value);
    memset(kv, 0, sizeof(*kv));
}

static int b64_field(struct json_object *o, const char *name, char **out, size_t *len,
                     struct kago_error **err)
{
    struct json_object *f;
    size_t n = 0;
    if (!json_object_object_get_ex(o, name, &f)) { /* proto3: an empty value is left out */
        *out = xcalloc(1, 1);
        if (len)
            *len = 0;
        return 0;
    }
    if (!json_object_is_type(f, json_type_string) ||
        !(*out = kago__b64_decode(json_object_get_string(f), (size_t)json_object_get_string_len(f), &n)))
        return kago_error_set(err, EINVAL, "etcd: \"%s\" is not base64", name);
    if (len)
        *len = n;
    return 0;
}

static int parse_kv(struct json_object *o, struct etcd_kv *kv, struct kago_error **err)
{
    memset(kv, 0, sizeof(*kv));
    if (!json_object_is_type(o, json_type_object))
        return kago_error_set(err, EINVAL, "etcd: a kv is not an object");
    if (b64_field(o, "key", &kv->key, NULL, err) < 0 ||
        b64_field(o, "value", &kv->value, &kv->value_len, err) < 0) {
        kago__etcd_kv_free(kv);
        return -1;
    }
    kago__etcd_int(o, "create_revision", &kv->create_rev);
    kago__etcd_int(o, "mod_revision", &kv->mod_rev);
    kago__etcd_int(o, "version", &kv->version);
    kago__etcd_int(o, "lease", &kv->lease);
    return 0;
}

static int parse_kvs(struct json_object *arr, struct etcd_kv **out, size_t *n, struct kago_error **err)
{
    *out = NULL;
    *n = 0;
    if (!arr)
        return 0;
    if (!json_object_is_type(arr, json_type_array))
        return kago_error_set(err, EINVAL, "etcd: \"kvs\" is not an array");
    size_t len = json_object_array_length(arr);
    struct etcd_kv *v = xcalloc(len + 1, sizeof(*v));
    for (size_t i = 0; i < len; i++)
        if (parse_kv(json_object_array_get_idx(arr, i), &v[i], err) < 0) {
            for (size_t j = 0; j < i; j++)
                kago__etcd_kv_free(&v[j]);
            free(v);
            return -1;
        }
    *out = v;
    *n = len;
    return 0;
}

int kago__etcd_parse_range(struct json_object *resp, struct etcd_range *out, struct kago_error **err)
{
    memset(out, 0, sizeof(*out));
    struct json_object *hdr = NULL, *kvs = NULL;
    if (!json_object_is_type(resp, json_type_object) || !json_object_object_get_ex(resp, "header", &hdr))
        return kago_error_set(err, EINVAL, "etcd: a range response without a header");
    kago__etcd_int(hdr, "revision", &out->revision);
    out->more = get_bool(resp, "more");
    json_object_object_get_ex(resp, "kvs", &kvs);
    return parse_kvs(kvs, &out->kvs, &out->n, err);
}

void kago__etcd_range_free(struct etcd_range *r)
{
    for (size_t i = 0; i < r->n; i++)
        kago__etcd_kv_free(&r->kvs[i]);
    free(r->kvs);
    memset(r, 0, sizeof(*r));
}

const char *kago__etcd_error_text(struct json_object *o)
{
    struct json_object *e;
    if (!o || !json_object_is_type(o, json_type_object))
        return NULL;
    if (json_object_object_get_ex(o, "message", &e) && json_object_is_type(e, json_type_string))
        return json_object_get_string(e);
    if (!json_object_object_get_ex(o, "error", &e))
        return NULL;
    if (json_object_is_type(e, json_type_string))
        return json_object_get_string(e);
    struct json_object *m;
    if (json_object_is_type(e, json_type_object) && json_object_object_get_ex(e, "message", &m) &&
        json_object_is_type(m, json_type_string))
        return json_object_get_string(m);
    return NULL;
}

static int parse_events(struct json_object *arr, struct etcd_watch_msg *m, struct kago_error **err)
{
    if (!arr)
        return 0;
    if (!json_object_is_type(arr, json_type_array))
        return kago_error_set(err, EINVAL, "etcd watch: \"events\" is not an array");
    size_t n = json_object_array_length(arr);
    m->ev = xcalloc(n + 1, sizeof(*m->ev));
    for (size_t i = 0; i < n; i++) {
        struct json_object *e = json_object_array_get_idx(arr, i), *t, *kv;
        if (!json_object_is_type(e, json_type_object) || !json_object_object_get_ex(e, "kv", &kv))
            return kago_error_set(err, EINVAL, "etcd watch: an event without a kv");
        /* proto3: PUT (0) has no "type" */
        m->ev[i].type = json_object_object_get_ex(e, "type", &t) &&
                                json_object_is_type(t, json_type_string) &&
                                !strcmp(json_object_get_string(t), "DELETE")
                            ? ETCD_EV_DELETE
                            : ETCD_EV_PUT;
        if (parse_kv(kv, &m->ev[i].kv, err) < 0)
            return -1;
        m->nev = i + 1;
    }
    return 0;
}

int kago__etcd_parse_watch(const char *line, size_t len, struct etcd_watch_msg *m, struct kago_error **err)
{
    memset(m, 0, sizeof(*m));
    struct json_tokener *tok = json_tokener_new();
    struct json_object *o = json_tokener_parse_ex(tok, line, (int)(len > INT32_MAX ? INT32_MAX : len));
    enum json_tokener_error je = json_tokener_get_error(tok);
    json_tokener_free(tok);
    if (!o || je != json_tokener_success) {
        json_object_put(o);
        return kago_error_set(err, EINVAL, "etcd watch: a message is not JSON (%s)",
                              je == json_tokener_continue ? "truncated" : json_tokener_error_desc(je));
    }
    int ret = 0;
    struct json_object *res = NULL, *hdr, *evs = NULL;
    if (!json_object_is_type(o, json_type_object)) {
        ret = kago_error_set(err, EINVAL, "etcd watch: a message is not an object");
    } else if (!json_object_object_get_ex(o, "result", &res)) {
        const char *e = kago__etcd_error_text(o); /* {"error":{"grpc_code":..,"message":..}} */
        if (!e)
            ret = kago_error_set(err, EINVAL, "etcd watch: a message without a result");
        else {
            m->canceled = true;
            m->cancel_reason = xstrdup(e);
        }
    } else if (!json_object_is_type(res, json_type_object)) {
        ret = kago_error_set(err, EINVAL, "etcd watch: its result is not an object");
    } else {
        if (json_object_object_get_ex(res, "header", &hdr))
            kago__etcd_int(hdr, "revision", &m->revision);
        kago__etcd_int(res, "compact_revision", &m->compact_revision);
        m->created = get_bool(res, "created");
        m->canceled = get_bool(res, "canceled");
        struct json_object *r;
        if (json_object_object_get_ex(res, "cancel_reason", &r) && json_object_is_type(r, json_type_string))
            m->cancel_reason = xstrdup(json_object_get_string(r));
        json_object_object_get_ex(res, "events", &evs);
        ret = parse_events(evs, m, err);
    }
    json_object_put(o);
    if (ret < 0)
        kago__etcd_watch_msg_free(m);
    return ret;
}

void kago__etcd_watch_msg_free(struct etcd_watch_msg *m)
{
    for (size_t i = 0; i < m->nev; i++)
        kago__etcd_kv_free(&m->ev[i].kv);
    free(m->ev);
    free(m->cancel_reason);
    memset(m, 0, sizeof(*m));
}

/* --- request bodies ----------------------------------------------------------------------------- */

static void add_b64(struct json_object *o, const char *name, const void *p, size_t n)
{
    char *s = kago__b64_encode(p, n);
    json_object_object_add(o, name, json_object_new_string(s));
    free(s);
}

static void add_i64(struct json_object *o, const char *name, int64_t v)
{
    char s[24];
    snprintf(s, sizeof(s), "%" PRId64, v);
    json_object_object_add(o, name, json_object_new_string(s));
}

struct json_object *kago__etcd_req_range(const char *key, const char *range_end, int64_t revision,
                                         int64_t limit)
{
    struct json_object *o = json_object_new_object();
    add_b64(o, "key", key, strlen(key));
    if (range_end) /* "\0" (every key from key on) is one zero byte */
        add_b64(o, "range_end", range_end, *range_end ? strlen(range_end) : 1);
    if (revision)
        add_i64(o, "revision", revision);
    if (limit)
        add_i64(o, "limit", limit);
    return o;
}

struct json_object *kago__etcd_req_put(const char *key, const void *value, size_t len, int64_t lease)
{
    struct json_object *o = json_object_new_object();
    add_b64(o, "key", key, strlen(key));
    add_b64(o, "value", value, len);
    if (lease)
        add_i64(o, "lease", lease);
    return o;
}

struct json_object *kago__etcd_req_delete(const char *key, const char *range_end)
{
    struct json_object *o = json_object_new_object();
    add_b64(o, "key", key, strlen(key));
    if (range_end)
        add_b64(o, "range_end", range_end, *range_end ? strlen(range_end) : 1);
    return o;
}

struct json_object *kago__etcd_req_claim(const char *key, const void *value, size_t len, int64_t lease)
{
    struct json_object *o = json_object_new_object(), *cmp = json_object_new_object(),
                       *put = json_object_new_object(), *rng = json_object_new_object();
    add_b64(cmp, "key", key, strlen(key));
    json_object_object_add(cmp, "target", json_object_new_string("CREATE"));
    json_object_object_add(cmp, "result", json_object_new_string("EQUAL"));
    add_i64(cmp, "create_revision", 0);
    json_object_object_add(o, "compare", json_object_new_array());
    json_object_array_add(json_object_object_get(o, "compare"), cmp);
    json_object_object_add(put, "request_put", kago__etcd_req_put(key, value, len, lease));
    json_object_object_add(o, "success", json_object_new_array());
    json_object_array_add(json_object_object_get(o, "success"), put);
    json_object_object_add(rng, "request_range", kago__etcd_req_range(key, NULL, 0, 0));
    json_object_object_add(o, "failure", json_object_new_array());
    json_object_array_add(json_object_object_get(o, "failure"), rng);
    return o;
}

struct json_object *kago__etcd_req_delete_keys(const char *const *keys, size_t n)
{
    struct json_object *o = json_object_new_object(), *ops = json_object_new_array();
    for (size_t i = 0; i < n; i++) {
        struct json_object *op = json_object_new_object();
        json_object_object_add(op, "request_delete_range", kago__etcd_req_delete(keys[i], NULL));
        json_object_array_add(ops, op);
    }
    json_object_object_add(o, "success", ops); /* no compare: always the success branch */
    return o;
}

int kago__etcd_txn_result(struct json_object *resp, bool *succeeded, struct etcd_kv *holder,
                          struct kago_error **err)
{
    memset(holder, 0, sizeof(*holder));
    if (!json_object_is_type(resp, json_type_object))
        return kago_error_set(err, EINVAL, "etcd: a txn response is not an object");
    *succeeded = get_bool(resp, "succeeded");
    if (*succeeded)
        return 0;
    struct json_object *rs, *r0, *rr, *kvs;
    if (!json_object_object_get_ex(resp, "responses", &rs) || !json_object_is_type(rs, json_type_array) ||
        json_object_array_length(rs) < 1)
        return 0;
    r0 = json_object_array_get_idx(rs, 0);
    if (!json_object_is_type(r0, json_type_object) || !json_object_object_get_ex(r0, "response_range", &rr) ||
        !json_object_is_type(rr, json_type_object) || !json_object_object_get_ex(rr, "kvs", &kvs) ||
        !json_object_is_type(kvs, json_type_array) || json_object_array_length(kvs) < 1)
        return 0;
    return parse_kv(json_object_array_get_idx(kvs, 0), holder, err);
}

struct json_object *kago__etcd_req_lease_grant(int64_t ttl_s)
{
    struct json_object *o = json_object_new_object();
    add_i64(o, "TTL", ttl_s);
    return o;
}

struct json_object *kago__etcd_req_lease_id(int64_t id)
{
    struct json_object *o = json_object_new_object();
    add_i64(o, "ID", id);
    return o;
}

struct json_object *kago__etcd_req_watch(const char *key, const char *range_end, int64_t start_revision)
{
    struct json_object *c = json_object_new_object(), *o = json_object_new_object();
    add_b64(c, "key", key, strlen(key));
    if (range_end)
        add_b64(c, "range_end", range_end, *range_end ? strlen(range_end) : 1);
    if (start_revision)
        add_i64(c, "start_revision", start_revision);
    json_object_object_add(c, "progress_notify", json_object_new_boolean(1));
    json_object_object_add(o, "create_request", c);
    return o;
}
