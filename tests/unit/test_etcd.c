/* The etcd client's pure half (src/serve/etcd_json.c): base64, prefixes, URLs, request bodies, and the
 * responses and watch messages as etcd 3.4's JSON gateway sends them (int64 as strings, proto3 defaults
 * left out). */
#include <stdlib.h>
#include <string.h>

#include "etcd.h"
#include "tap.h"
#include "util.h"

static void test_b64(void)
{
    const char *in[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar", "/kago/apps/hello"};
    const char *out[] = {"",         "Zg==",     "Zm8=",     "Zm9v",
                         "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy", "L2thZ28vYXBwcy9oZWxsbw=="};
    for (size_t i = 0; i < sizeof(in) / sizeof(in[0]); i++) {
        char *e = kago__b64_encode(in[i], strlen(in[i]));
        is_str(e, out[i], "base64 of \"%s\"", in[i]);
        size_t n = 99;
        char *d = kago__b64_decode(e, strlen(e), &n);
        ok(d && n == strlen(in[i]) && !memcmp(d, in[i], n), "decodes back \"%s\"", in[i]);
        free(e);
        free(d);
    }
    size_t n;
    ok(!kago__b64_decode("Zm9v!", 5, &n), "a non-base64 character is refused");
    ok(!kago__b64_decode("Z", 1, &n), "one dangling character is refused");
    char bin[3] = {0, (char)0xff, 'x'};
    char *e = kago__b64_encode(bin, 3), *d = kago__b64_decode(e, strlen(e), &n);
    ok(d && n == 3 && !memcmp(d, bin, 3), "binary bytes round-trip");
    free(e);
    free(d);
}

static void test_prefix_url(void)
{
    char *e = kago__etcd_prefix_end("/kago/");
    is_str(e, "/kago0", "prefix end of /kago/");
    free(e);
    e = kago__etcd_prefix_end("a\xff\xff");
    is_str(e, "b", "trailing 0xff bytes are dropped");
    free(e);
    e = kago__etcd_prefix_end("");
    ok(e && !*e, "empty prefix: every key (\"\\0\")");
    free(e);
    char **v = NULL;
    struct kago_error *err = NULL;
    ok(kago__etcd_parse_url("etcd://127.0.0.1:2379,10.0.0.2:2379", &v, &err) == 0 && v &&
           !strcmp(v[0], "127.0.0.1:2379") && !strcmp(v[1], "10.0.0.2:2379") && !v[2],
       "two endpoints");
    kago__strv_free(v);
    ok(kago__etcd_parse_url("http://localhost:2379/", &v, &err) == 0 && !strcmp(v[0], "localhost:2379"),
       "http:// with a trailing slash");
    kago__strv_free(v);
    ok(kago__etcd_parse_url("etcds://etcd-1.example:2379,[::1]:2379", &v, &err) == 0 &&
           !strcmp(v[0], "etcd-1.example:2379") && !strcmp(v[1], "[::1]:2379") && !v[2],
       "etcds:// endpoints");
    kago__strv_free(v);
    ok(kago__etcd_url_tls("etcds://h:1") && kago__etcd_url_tls("https://h:1") &&
           !kago__etcd_url_tls("etcd://h:1") && !kago__etcd_url_tls("http://h:1"),
       "which URLs speak TLS");
    ok(kago__etcd_parse_url("etcd://host", &v, &err) < 0 && strstr(err->msg, "not HOST:PORT"), "no port: %s",
       err ? err->msg : "");
    kago_error_clear(&err);
    ok(kago__etcd_parse_url("redis://h:1", &v, &err) < 0 && strstr(err->msg, "want etcd://"), "other scheme");
    kago_error_clear(&err);
    ok(kago__etcd_parse_url("etcd://h:99999", &v, &err) < 0, "port out of range");
    kago_error_clear(&err);
}

static void test_range(void)
{
    struct json_object *o = json_tokener_parse(
        "{\"header\":{\"cluster_id\":\"2037\",\"revision\":\"3\"},\"kvs\":[{\"key\":\"L2thZ28vYXBwcy9oZWxsbw="
        "=\","
        "\"create_revision\":\"2\",\"mod_revision\":\"3\",\"version\":\"2\",\"value\":\"djI=\","
        "\"lease\":\"7668682468005099021\"},{\"key\":\"L2thZ28vYQ==\",\"mod_revision\":\"2\"}],\"more\":true,"
        "\"count\":\"2\"}");
    struct etcd_range r;
    struct kago_error *err = NULL;
    ok(o && kago__etcd_parse_range(o, &r, &err) == 0, "range response parses");
    ok(r.revision == 3 && r.more && r.n == 2, "revision, more, two kvs");
    is_str(r.kvs[0].key, "/kago/apps/hello", "key decoded");
    ok(r.kvs[0].value_len == 2 && !strcmp(r.kvs[0].value, "v2"), "value decoded");
    ok(r.kvs[0].lease == 7668682468005099021LL, "a lease ID above 2^53 is exact");
    ok(r.kvs[0].create_rev == 2 && r.kvs[0].mod_rev == 3 && r.kvs[0].version == 2, "revisions");
    ok(r.kvs[1].value && r.kvs[1].value_len == 0, "a kv without value (proto3 default) has an empty one");
    kago__etcd_range_free(&r);
    json_object_put(o);
    o = json_tokener_parse("{\"header\":{\"revision\":\"9\"}}");
    ok(kago__etcd_parse_range(o, &r, &err) == 0 && r.n == 0 && r.revision == 9, "no kvs: count left out");
    kago__etcd_range_free(&r);
    json_object_put(o);
    o = json_tokener_parse("{\"header\":{},\"kvs\":[{\"key\":\"***\"}]}");
    ok(kago__etcd_parse_range(o, &r, &err) < 0 && strstr(err->msg, "base64"), "a bad key is an error");
    kago_error_clear(&err);
    json_object_put(o);
}

static void test_watch(void)
{
    struct etcd_watch_msg m;
    struct kago_error *err = NULL;
    const char *created = "{\"result\":{\"header\":{\"revision\":\"7\"},\"created\":true}}";
    ok(kago__etcd_parse_watch(created, strlen(created), &m, &err) == 0 && m.created && m.revision == 7 &&
           !m.nev,
       "created");
    kago__etcd_watch_msg_free(&m);
    const char *evs =
        "{\"result\":{\"header\":{\"revision\":\"11\"},\"events\":[{\"kv\":{\"key\":\"L2thZ28vYQ==\","
        "\"mod_revision\":\"8\",\"value\":\"djI=\"}},{\"type\":\"DELETE\",\"kv\":{\"key\":\"L2thZ28vYg==\","
        "\"mod_revision\":\"11\"}}]}}";
    ok(kago__etcd_parse_watch(evs, strlen(evs), &m, &err) == 0 && m.nev == 2, "two events");
    ok(m.ev[0].type == ETCD_EV_PUT && !strcmp(m.ev[0].kv.key, "/kago/a") && !strcmp(m.ev[0].kv.value, "v2"),
       "a PUT has no type field");
    ok(m.ev[1].type == ETCD_EV_DELETE && m.ev[1].kv.mod_rev == 11, "DELETE");
    kago__etcd_watch_msg_free(&m);
    const char *comp =
        "{\"result\":{\"header\":{\"revision\":\"20\"},\"canceled\":true,\"compact_revision\":\"10\"}}";
    ok(kago__etcd_parse_watch(comp, strlen(comp), &m, &err) == 0 && m.canceled && m.compact_revision == 10,
       "compacted");
    kago__etcd_watch_msg_free(&m);
    const char *gerr =
        "{\"error\":{\"grpc_code\":14,\"http_code\":503,\"message\":\"etcdserver: no leader\"}}";
    ok(kago__etcd_parse_watch(gerr, strlen(gerr), &m, &err) == 0 && m.canceled &&
           !strcmp(m.cancel_reason, "etcdserver: no leader"),
       "a stream error cancels with its message");
    kago__etcd_watch_msg_free(&m);
    ok(kago__etcd_parse_watch("{\"result\":", 10, &m, &err) < 0 && strstr(err->msg, "not JSON"),
       "truncated: %s", err ? err->msg : "");
    kago_error_clear(&err);
    ok(kago__etcd_parse_watch("[1]", 3, &m, &err) < 0, "not an object");
    kago_error_clear(&err);
}

static void test_bodies(void)
{
    struct json_object *o = kago__etcd_req_range("/kago/", "/kago0", 5, 1000);
    is_str(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN),
           "{\"key\":\"L2thZ28v\",\"range_end\":\"L2thZ28w\",\"revision\":\"5\",\"limit\":\"1000\"}",
           "range body");
    json_object_put(o);
    o = kago__etcd_req_put("/k", "v", 1, 7668682468005099021LL);
    is_str(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN),
           "{\"key\":\"L2s=\",\"value\":\"dg==\",\"lease\":\"7668682468005099021\"}",
           "put body, lease as a string");
    json_object_put(o);
    o = kago__etcd_req_claim("/kago/starting/x", "n1", 2, 9);
    const char *s = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
    ok(strstr(s, "\"target\":\"CREATE\"") && strstr(s, "\"create_revision\":\"0\"") &&
           strstr(s, "request_put") && strstr(s, "request_range"),
       "claim txn: %s", s);
    json_object_put(o);
    const char *keys[] = {"/kago/instances/x/n1/i1", "/kago/starting/x"};
    o = kago__etcd_req_delete_keys(keys, 2);
    s = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
    ok(!strstr(s, "compare") && strstr(s, "\"success\":[{\"request_delete_range\":{\"key\":\"") &&
           strstr(s, "L2thZ28vc3RhcnRpbmcveA=="),
       "delete txn of two keys: %s", s);
    json_object_put(o);
    bool won;
    struct etcd_kv holder;
    struct kago_error *err = NULL;
    o = json_tokener_parse("{\"header\":{\"revision\":\"5\"},\"succeeded\":true,\"responses\":[]}");
    ok(kago__etcd_txn_result(o, &won, &holder, &err) == 0 && won && !holder.key, "the winner");
    json_object_put(o);
    o = json_tokener_parse(
        "{\"header\":{},\"responses\":[{\"response_range\":{\"kvs\":[{\"key\":\"L2s=\",\"value\":"
        "\"bjE=\",\"lease\":\"9\"}],\"count\":\"1\"}}]}");
    ok(kago__etcd_txn_result(o, &won, &holder, &err) == 0 && !won && holder.value &&
           !strcmp(holder.value, "n1") && holder.lease == 9,
       "a loser (no \"succeeded\") learns the holder");
    kago__etcd_kv_free(&holder);
    json_object_put(o);
    o = json_tokener_parse(
        "{\"error\":\"etcdserver: request timed out\",\"code\":14,\"message\":\"etcdserver: request "
        "timed out\"}");
    is_str(kago__etcd_error_text(o), "etcdserver: request timed out", "gateway error text");
    json_object_put(o);
    int64_t v;
    o = json_tokener_parse("{\"a\":\"12\",\"b\":13,\"c\":\"x\"}");
    ok(kago__etcd_int(o, "a", &v) && v == 12 && kago__etcd_int(o, "b", &v) && v == 13 &&
           !kago__etcd_int(o, "c", &v) && !kago__etcd_int(o, "d", &v) && v == 0,
       "int64 from strings and numbers");
    json_object_put(o);
}

int main(void)
{
    test_b64();
    test_prefix_url();
    test_range();
    test_watch();
    test_bodies();
    return tap_done();
}
